//! Load generator for `bench/realtime.sh` (issue #19): websockets speaking Phoenix vsn 1.0.0
//! to a running agencyflow, as realtime-js does.
//!
//! - `changes`: N sockets (socket i signed in as the member of org i % orgs) subscribe to
//!   INSERTs on `public.clients`; writers insert R rows/s spread over the orgs, each row named
//!   with its send time; every delivery's latency (insert sent → message read) is recorded,
//!   and a delivery to a socket of another org counts as a leak. First a phase with the same
//!   writes and no subscriber, to measure PostgreSQL's CPU without realtime.
//! - `broadcast`: N sockets join one topic; 4 sender sockets broadcast R messages/s in all;
//!   latency per delivery, and how many were lost.
//! - `idle`: N sockets each join a channel and stay connected (heartbeats) for a while, so the
//!   script can read the server's RSS.
//!
//! Usage: `realtime_bench MODE WS_BASE APIKEY [options]`, see `--help`-free parsing below:
//! `--sockets N --rate R --secs S --tokens FILE --pg CONNSTR --hold S [--filter-org]`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agencyflow_db::tokio_postgres::{self, NoTls};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64
}

struct Opts {
    mode: String,
    base: String,
    apikey: String,
    sockets: usize,
    rate: u64,
    secs: u64,
    hold: u64,
    tokens: Option<String>,
    pg: Option<String>,
    /// `changes`: each socket subscribes with `filter: org_id=eq.<its org>` (a dashboard's
    /// usual subscription) instead of to every INSERT.
    filter_org: bool,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let num = |name: &str, d: u64| flag(name).map(|v| v.parse().expect(name)).unwrap_or(d);
    Opts {
        mode: args
            .first()
            .cloned()
            .expect("mode: changes | broadcast | idle"),
        base: args
            .get(1)
            .cloned()
            .expect("ws base, e.g. ws://127.0.0.1:8000"),
        apikey: args.get(2).cloned().expect("apikey"),
        sockets: num("--sockets", 1000) as usize,
        rate: num("--rate", 500),
        secs: num("--secs", 20),
        hold: num("--hold", 10),
        tokens: flag("--tokens"),
        pg: flag("--pg"),
        filter_org: args.iter().any(|a| a == "--filter-org"),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(o: &Opts) -> Ws {
    let url = format!(
        "{}/realtime/v1/websocket?apikey={}&vsn=1.0.0",
        o.base, o.apikey
    );
    for attempt in 0.. {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => return ws,
            Err(e) if attempt < 20 => {
                eprintln!("connect: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
    unreachable!()
}

fn msg(topic: &str, event: &str, r: u64, payload: Value) -> Message {
    Message::Text(
        json!({"join_ref": "1", "ref": r.to_string(), "topic": topic, "event": event, "payload": payload})
            .to_string()
            .into(),
    )
}

/// Joins `topic`; returns once the join's reply arrived (panics on an error reply).
async fn join(ws: &mut Ws, topic: &str, config: Value, token: Option<&str>) {
    let mut payload = json!({"config": config});
    if let Some(t) = token {
        payload["access_token"] = json!(t);
    }
    ws.send(msg(topic, "phx_join", 1, payload))
        .await
        .expect("join");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = tokio::time::timeout(deadline - Instant::now(), ws.next())
            .await
            .expect("join reply in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["event"] == "phx_reply" && v["ref"] == "1" {
                assert_eq!(v["payload"]["status"], "ok", "join refused: {v}");
                return;
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    received: u64,
    leaks: u64,
}

/// Reads a socket until `stop`, recording the latency of each message `extract` accepts.
fn reader(
    mut ws: Ws,
    mut stop: tokio::sync::watch::Receiver<bool>,
    extract: impl Fn(&Value) -> Option<(u64, bool)> + Send + 'static,
    done: mpsc::UnboundedSender<Tally>,
) {
    tokio::spawn(async move {
        let mut t = Tally::default();
        let mut beat = tokio::time::interval(Duration::from_secs(20));
        beat.tick().await;
        let mut r = 100;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = beat.tick() => {
                    r += 1;
                    if ws.send(msg("phoenix", "heartbeat", r, json!({}))).await.is_err() { break; }
                }
                m = ws.next() => {
                    let Some(Ok(m)) = m else { break };
                    let Message::Text(text) = m else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                    if let Some((sent, ok)) = extract(&v) {
                        let now = now_us();
                        t.received += 1;
                        if !ok { t.leaks += 1; }
                        t.latencies_us.push(now.saturating_sub(sent));
                    }
                }
            }
        }
        let _ = ws.close(None).await;
        let _ = done.send(t);
    });
}

fn report(name: &str, mut lat: Vec<u64>, expected: u64, received: u64, leaks: u64) {
    lat.sort_unstable();
    let p = |q: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0
    };
    println!(
        "{name}: delivered {received} of {expected} expected ({:.3}%), leaks {leaks}, latency ms p50 {:.1} p95 {:.1} p99 {:.1} max {:.1}",
        100.0 * received as f64 / expected.max(1) as f64,
        p(0.5),
        p(0.95),
        p(0.99),
        p(1.0)
    );
}

/// CPU seconds (user + system) so far of the bench's cluster: the postmaster `PG_PID`
/// (environment) and its children. (Backends that ended meanwhile are not counted: the
/// server's pool keeps its connections.)
fn postgres_cpu_secs() -> f64 {
    let postmaster: u64 = std::env::var("PG_PID")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("PG_PID: the bench cluster's postmaster pid");
    let mut ticks = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let p = e.path();
            let Ok(stat) = std::fs::read_to_string(p.join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let f: Vec<&str> = stat[close + 2..].split(' ').collect();
            let pid: u64 = stat[..open].trim().parse().unwrap_or(0);
            let ppid: u64 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            if pid != postmaster && ppid != postmaster {
                continue;
            }
            // After the name: state(0) ... utime(11) stime(12).
            let u: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
            let s: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
            ticks += u + s;
        }
    }
    ticks as f64 / 100.0
}

/// Inserts `rate` rows/s into public.clients for `secs`, over `orgs`, named `rt <org
/// index> <send time in µs>`; returns the number of rows per org index.
async fn write(pg: &str, orgs: &[String], rate: u64, secs: u64) -> Vec<u64> {
    const WRITERS: u64 = 4;
    let per = Arc::new(
        (0..orgs.len())
            .map(|_| AtomicU64::new(0))
            .collect::<Vec<_>>(),
    );
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, conn) = tokio_postgres::connect(pg, NoTls).await.expect("pg");
        tokio::spawn(conn);
        let orgs = orgs.to_vec();
        let per = per.clone();
        tasks.push(tokio::spawn(async move {
            let stmt = client
                .prepare("insert into public.clients (org_id, name) values ($1::text::uuid, $2)")
                .await
                .expect("prepare");
            let every = Duration::from_secs_f64(WRITERS as f64 / rate as f64);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let end = Instant::now() + Duration::from_secs(secs);
            let mut n = w as usize;
            while Instant::now() < end {
                tick.tick().await;
                let o = n % orgs.len();
                n += WRITERS as usize;
                let name = format!("rt {o} {}", now_us());
                client
                    .execute(&stmt, &[&orgs[o], &name])
                    .await
                    .expect("insert");
                per[o].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    per.iter().map(|a| a.load(Ordering::Relaxed)).collect()
}

async fn changes(o: Opts) {
    let pg = o.pg.clone().expect("--pg");
    let tokens: Vec<(String, String)> =
        std::fs::read_to_string(o.tokens.as_ref().expect("--tokens"))
            .expect("tokens file")
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.to_string()))
            })
            .collect();
    let orgs: Vec<String> = tokens.iter().map(|(o, _)| o.clone()).collect();
    let secs = o.secs;

    // Phase 1: the writes alone.
    let cpu0 = postgres_cpu_secs();
    let t0 = Instant::now();
    let base_rows: u64 = write(&pg, &orgs, o.rate, secs).await.iter().sum();
    let base_cpu = postgres_cpu_secs() - cpu0;
    let base_wall = t0.elapsed().as_secs_f64();
    println!(
        "writes alone: {base_rows} inserts in {base_wall:.1} s, PostgreSQL CPU {base_cpu:.2} s ({:.0} µs per insert)",
        base_cpu * 1e6 / base_rows as f64
    );

    // Phase 2: the same with subscribers.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let connected = Instant::now();
    let mut sockets_per_org = vec![0u64; orgs.len()];
    let o = Arc::new(o);
    let mut joins = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    for i in 0..o.sockets {
        let org = i % orgs.len();
        sockets_per_org[org] += 1;
        let token = tokens[org].1.clone();
        let mut binding = json!({"event": "INSERT", "schema": "public", "table": "clients"});
        if o.filter_org {
            binding["filter"] = json!(format!("org_id=eq.{}", tokens[org].0));
        }
        let (o, stop, done_tx, sem) = (o.clone(), stop.clone(), done_tx.clone(), sem.clone());
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("sem");
            let mut ws = connect(&o).await;
            join(
                &mut ws,
                &format!("realtime:bench-{i}"),
                json!({"broadcast": {"self": false}, "presence": {"key": ""},
                       "postgres_changes": [binding],
                       "private": false}),
                Some(&token),
            )
            .await;
            reader(
                ws,
                stop,
                move |v| {
                    if v["event"] != "postgres_changes" {
                        return None;
                    }
                    let name = v["payload"]["data"]["record"]["name"].as_str()?;
                    let mut it = name.split(' ').skip(1);
                    let o: usize = it.next()?.parse().ok()?;
                    let sent: u64 = it.next()?.parse().ok()?;
                    Some((sent, o == org))
                },
                done_tx,
            );
        }));
    }
    for j in joins {
        j.await.expect("join task");
    }
    println!(
        "{} sockets joined in {:.1} s",
        o.sockets,
        connected.elapsed().as_secs_f64()
    );
    // The subscriptions' system message and the capture leader settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu1 = postgres_cpu_secs();
    let t1 = Instant::now();
    let per = write(&pg, &orgs, o.rate, secs).await;
    let rows: u64 = per.iter().sum();
    let wall = t1.elapsed().as_secs_f64();
    // Stragglers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = postgres_cpu_secs() - cpu1;
    let _ = stop_tx.send(true);
    drop(done_tx);
    let mut lat = Vec::new();
    let (mut received, mut leaks) = (0, 0);
    let mut tallies = 0;
    while let Some(t) = done_rx.recv().await {
        lat.extend(t.latencies_us);
        received += t.received;
        leaks += t.leaks;
        tallies += 1;
    }
    let expected: u64 = per.iter().zip(&sockets_per_org).map(|(r, s)| r * s).sum();
    println!(
        "with {} subscribers ({tallies} reporting) over {} orgs: {rows} inserts in {wall:.1} s ({:.0}/s), PostgreSQL CPU {cpu:.2} s ({:.0} µs per insert; extra with realtime {:.0} µs per change)",
        o.sockets,
        orgs.len(),
        rows as f64 / wall,
        cpu * 1e6 / rows as f64,
        (cpu * 1e6 / rows as f64) - (base_cpu * 1e6 / base_rows as f64)
    );
    report("postgres_changes", lat, expected, received, leaks);
}

async fn broadcast(o: Opts) {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let o = Arc::new(o);
    let topic = "realtime:fanout";
    let config = json!({"broadcast": {"self": false, "ack": false}, "presence": {"key": ""}, "postgres_changes": [], "private": false});
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    let mut joins = Vec::new();
    for _ in 0..o.sockets {
        let (o, stop, done_tx, sem, config) = (
            o.clone(),
            stop.clone(),
            done_tx.clone(),
            sem.clone(),
            config.clone(),
        );
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("sem");
            let mut ws = connect(&o).await;
            join(&mut ws, topic, config, None).await;
            reader(
                ws,
                stop,
                |v| {
                    if v["event"] != "broadcast" {
                        return None;
                    }
                    Some((v["payload"]["payload"]["t"].as_u64()?, true))
                },
                done_tx,
            );
        }));
    }
    for j in joins {
        j.await.expect("join");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    const SENDERS: u64 = 4;
    let sent = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (o, config, sent) = (o.clone(), config.clone(), sent.clone());
        senders.push(tokio::spawn(async move {
            let mut ws = connect(&o).await;
            join(&mut ws, topic, config, None).await;
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(SENDERS as f64 / o.rate as f64));
            let end = Instant::now() + Duration::from_secs(o.secs);
            let mut r = 10;
            // Drain what the server says (replies) so its queue never fills.
            let (mut sink, mut stream) = ws.split();
            let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
            while Instant::now() < end {
                tick.tick().await;
                r += 1;
                let m = msg(
                    topic,
                    "broadcast",
                    r,
                    json!({"type": "broadcast", "event": "tick", "payload": {"t": now_us()}}),
                );
                sink.send(m).await.expect("send");
                sent.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            drain.abort();
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    let _ = stop_tx.send(true);
    drop(done_tx);
    let mut lat = Vec::new();
    let mut received = 0;
    while let Some(t) = done_rx.recv().await {
        lat.extend(t.latencies_us);
        received += t.received;
    }
    let sent = sent.load(Ordering::Relaxed);
    println!(
        "broadcast: {sent} messages at {}/s to {} sockets",
        o.rate, o.sockets
    );
    report("broadcast", lat, sent * o.sockets as u64, received, 0);
}

async fn idle(o: Opts) {
    let o = Arc::new(o);
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let t0 = Instant::now();
    let mut joins = Vec::new();
    for i in 0..o.sockets {
        let (o, sem, stop, done_tx) = (o.clone(), sem.clone(), stop.clone(), done_tx.clone());
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("sem");
            let mut ws = connect(&o).await;
            join(
                &mut ws,
                &format!("realtime:idle-{}", i % 1000),
                json!({"broadcast": {"self": false}, "presence": {"key": ""}, "postgres_changes": [], "private": false}),
                None,
            )
            .await;
            reader(ws, stop, |_| None, done_tx);
        }));
    }
    for j in joins {
        j.await.expect("join");
    }
    println!(
        "idle: {} sockets connected and joined in {:.1} s; holding {} s",
        o.sockets,
        t0.elapsed().as_secs_f64(),
        o.hold
    );
    // The script samples the server's RSS now.
    println!("READY");
    tokio::time::sleep(Duration::from_secs(o.hold)).await;
    let _ = stop_tx.send(true);
    drop(done_tx);
    let mut n = 0;
    while done_rx.recv().await.is_some() {
        n += 1;
    }
    println!("idle: {n} sockets still open at the end");
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        match o.mode.as_str() {
            "changes" => changes(o).await,
            "broadcast" => broadcast(o).await,
            "idle" => idle(o).await,
            m => panic!("unknown mode {m}"),
        }
    });
}
