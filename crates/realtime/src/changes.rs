//! postgres_changes: subscriptions, capture and delivery under RLS.
//!
//! **Capture, once per database.** Every process with a postgres_changes subscription runs
//! [`capture_loop`], which tries a session advisory lock on its own connection; the holder
//! (the leader) reads the logical slot (wal2json, through `realtime.peek_changes`), and for
//! each committed transaction after the recorded position NOTIFYs every change, updating
//! `realtime.capture_position` in the same transaction, then advances the slot. A crash
//! between the two repeats nothing (the position skips it); a crash before the commit loses
//! nothing (the slot was not advanced). Past `--realtime-max-slot-lag-mb`, or when PostgreSQL
//! invalidated the slot (`max_slot_wal_keep_size`), the slot is dropped and recreated with a
//! warning.
//!
//! **Delivery, on every process.** Each process receives the change NOTIFYs
//! ([`deliver_batch`], changes that arrived together): subscriptions of the table whose event and filters match are grouped by
//! (role, claims); one authorisation query per group runs as that role with those claims,
//! evaluating the table's SELECT privilege and SELECT policies (as PostgreSQL would for the
//! role) on the change's own values. DELETEs are authorised on the old row (replica identity
//! full) and carry only the primary key when the table has RLS.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use agencyflow_db::{quote_ident, quote_literal, tokio_postgres, TxSettings, Type};
use agencyflow_keys::Caller;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::hub::{Outbox, SocketId};
use crate::metrics::Metrics;
use crate::protocol;
use crate::Realtime;

/// One binding of a join's `config.postgres_changes`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangeSpec {
    pub event: String,
    pub schema: String,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
}

#[derive(Debug, Clone)]
struct Filter {
    column: String,
    op: Op,
    values: Vec<String>,
}

/// Splits on commas outside parentheses (`a=eq.1,b=in.(x,y)`).
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_filters(s: &str) -> Result<Vec<Filter>, String> {
    let mut out = Vec::new();
    for part in split_top(s) {
        let bad = || {
            format!("invalid filter \"{part}\": expected column=op.value with op one of eq, neq, lt, lte, gt, gte, in")
        };
        let (column, rest) = part.split_once('=').ok_or_else(bad)?;
        let (op, value) = rest.split_once('.').ok_or_else(bad)?;
        let op = match op {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" => Op::In,
            _ => return Err(bad()),
        };
        if column.trim().is_empty() {
            return Err(bad());
        }
        let values = if op == Op::In {
            let inner = value
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| format!("invalid filter \"{part}\": in needs a list: in.(a,b)"))?;
            let vals: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().trim_matches('"').to_string())
                .collect();
            if vals.len() > 100 {
                return Err(format!(
                    "invalid filter \"{part}\": in takes at most 100 values"
                ));
            }
            vals
        } else {
            vec![value.to_string()]
        };
        out.push(Filter {
            column: column.trim().to_string(),
            op,
            values,
        });
    }
    Ok(out)
}

impl ChangeSpec {
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.event.as_str(), "*" | "INSERT" | "UPDATE" | "DELETE") {
            return Err(format!(
                "invalid postgres_changes event \"{}\": one of *, INSERT, UPDATE, DELETE",
                self.event
            ));
        }
        if self.schema.is_empty() {
            return Err("postgres_changes needs a schema".into());
        }
        if let Some(f) = self.filter.as_deref().filter(|f| !f.is_empty()) {
            if self.table.as_deref().is_none_or(|t| t == "*") {
                return Err("a postgres_changes filter needs a table".into());
            }
            parse_filters(f)?;
        }
        Ok(())
    }

    /// The join reply's entry: the client's own binding with its id.
    pub fn reply(&self, id: u64) -> Value {
        let mut v = json!({"id": id, "event": self.event, "schema": self.schema});
        if let Some(t) = &self.table {
            v["table"] = json!(t);
        }
        if let Some(f) = &self.filter {
            v["filter"] = json!(f);
        }
        v
    }
}

struct Sub {
    id: u64,
    socket: SocketId,
    topic: String,
    outbox: Outbox,
    caller: Arc<RwLock<Caller>>,
    event: String,
    schema: String,
    table: Option<String>,
    filters: Vec<Filter>,
}

/// The SELECT check of one table: its SQL (cached a few seconds) and whether RLS is on.
struct TableCheck {
    sql: Arc<str>,
    rls: bool,
    /// The columns the SELECT policies read (from pg_depend); only these travel to the
    /// check. `None`: all of them (a policy reads the whole row).
    columns: Option<Vec<String>>,
    at: Instant,
}

#[derive(Default)]
pub struct Changes {
    subs: RwLock<HashMap<u64, Arc<Sub>>>,
    capture_started: AtomicBool,
    checks: Mutex<HashMap<String, Arc<TableCheck>>>,
    types: Mutex<HashMap<u32, String>>,
}

/// Registers a join's bindings; returns (id, binding) in the client's order.
pub(crate) fn subscribe(
    rt: &Realtime,
    specs: &[ChangeSpec],
    caller: Arc<RwLock<Caller>>,
    outbox: Outbox,
    socket: SocketId,
    topic: &str,
) -> Vec<(u64, ChangeSpec)> {
    let mut out = Vec::with_capacity(specs.len());
    let mut subs = rt.inner.changes.subs.write().expect("subs");
    for s in specs {
        let id = rt.next_id();
        subs.insert(
            id,
            Arc::new(Sub {
                id,
                socket,
                topic: topic.to_string(),
                outbox: outbox.clone(),
                caller: caller.clone(),
                event: s.event.clone(),
                schema: s.schema.clone(),
                table: s.table.clone().filter(|t| t != "*"),
                filters: s
                    .filter
                    .as_deref()
                    .filter(|f| !f.is_empty())
                    .map(|f| parse_filters(f).unwrap_or_default())
                    .unwrap_or_default(),
            }),
        );
        out.push((id, s.clone()));
    }
    drop(subs);
    if !rt
        .inner
        .changes
        .capture_started
        .swap(true, Ordering::AcqRel)
    {
        tokio::spawn(capture_loop(rt.clone()));
    }
    out
}

pub(crate) fn unsubscribe(rt: &Realtime, ids: &[u64]) {
    if ids.is_empty() {
        return;
    }
    let mut subs = rt.inner.changes.subs.write().expect("subs");
    for id in ids {
        subs.remove(id);
    }
}

/// Waits until changes committed from now on reach this process: its LISTEN is up and the
/// database's slot exists. The error says why capture is unavailable.
pub(crate) async fn ready(rt: &Realtime) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if rt.inner.fanout.listening.load(Ordering::Acquire) {
            if let Ok(c) = rt.inner.db.client().await {
                let r = c
                    .query_one(
                        "select current_setting('wal_level'), exists (select 1 from pg_catalog.pg_replication_slots where slot_name = realtime.slot_name())",
                        &[],
                    )
                    .await;
                match r {
                    Ok(row) => {
                        let level: String = row.get(0);
                        if level != "logical" {
                            return Err(format!("Unable to subscribe to changes: PostgreSQL's wal_level is {level}, postgres_changes need wal_level = logical"));
                        }
                        if row.get::<_, bool>(1) {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        return Err(format!("Unable to subscribe to changes: {e}"));
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err("Unable to subscribe to changes: change capture did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The advisory lock key of the capture leader (per database).
const LEADER_LOCK: i64 = 0x6167_666c_7274_0001;

fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

/// wal2json's `add-tables`: schema.table pairs, special characters escaped.
fn add_tables(tables: &[(String, String)]) -> String {
    let esc = |s: &str| {
        s.chars()
            .flat_map(|c| {
                if matches!(c, ',' | '.' | '*' | '\\' | ' ' | '\'') {
                    vec!['\\', c]
                } else {
                    vec![c]
                }
            })
            .collect::<String>()
    };
    if tables.is_empty() {
        // Nothing is published: name a table that cannot exist, so nothing is decoded.
        return "realtime.\\*none\\*".into();
    }
    tables
        .iter()
        .map(|(s, t)| format!("{}.{}", esc(s), esc(t)))
        .collect::<Vec<_>>()
        .join(",")
}

async fn capture_loop(rt: Realtime) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        match capture_session(&rt).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "realtime capture stopped; retrying"),
        }
        // A session that ran a while was healthy: the next failure starts the back-off anew.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// One connection's life: wait for leadership, then capture until an error.
async fn capture_session(rt: &Realtime) -> Result<(), agencyflow_db::DbError> {
    let client = agencyflow_db::connect_one(&rt.inner.db_url).await?;
    loop {
        let got: bool = client
            .query_one("select pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .await?
            .get(0);
        if got {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::info!("realtime: this process captures postgres_changes for the database");
    let m = &rt.inner.metrics;
    let state: String = client
        .query_one("select realtime.ensure_slot()", &[])
        .await?
        .get(0);
    if state == "lost" {
        reset_slot(
            &client,
            m,
            "PostgreSQL invalidated it (max_slot_wal_keep_size)",
        )
        .await?;
    }
    // The position is read once: while this session holds the leader lock, nobody else
    // writes it.
    let mut cursor = Cursor {
        position: client
            .query_opt("select lsn::text from realtime.capture_position", &[])
            .await?
            .map(|r| parse_lsn(r.get(0)))
            .unwrap_or(0),
        advance_to: None,
        peek: client
            .prepare("select lsn::text, data from realtime.peek_changes(1000, $1)")
            .await?,
        advance: client
            .prepare("select realtime.advance_slot($1::text::pg_lsn)")
            .await?,
        // One statement, one transaction: the notifications (delivered at its commit, in
        // order) and the new position. A crash before the commit sends nothing and leaves
        // the position, so the changes are read again; after it, the position skips them.
        publish: client
            .prepare(
                "with p as (
                   insert into realtime.capture_position (id, lsn) values (true, $3::text::pg_lsn)
                   on conflict (id) do update set lsn = excluded.lsn, updated_at = now())
                 select count(*) from (
                   select pg_notify($1, m.msg) from unnest($2::text[]) with ordinality as m(msg, i)
                   order by m.i) as sent",
            )
            .await?,
    };
    let mut watch = Watch::new(rt);
    let slot: String = client
        .query_one("select realtime.slot_name()", &[])
        .await?
        .get(0);
    // Streaming first; polling through SQL when the replication login is not available.
    loop {
        watch.tables(&client).await?;
        let tables = add_tables(&watch.tables);
        let config = match replication_config(rt) {
            Ok(c) => c,
            Err(e) => {
                STREAM_WARNED
                    .call_once(|| tracing::warn!(error = %e, "realtime: cannot stream the slot (bad --realtime-replication-url); polling it through SQL"));
                return poll_capture(rt, &client, &mut cursor, &mut watch).await;
            }
        };
        let options = [
            ("format-version", "2"),
            ("include-timestamp", "1"),
            ("include-type-oids", "1"),
            ("include-pk", "1"),
            ("add-tables", tables.as_str()),
        ];
        let mut stream = match agencyflow_db::replication::LogicalStream::start(
            &config, &slot, &options,
        )
        .await
        {
            Ok(s) => s,
            // Another walsender still holds the slot (a leader that just died), or the
            // database is away: tried again after the back-off.
            Err(e) if !cannot_replicate(&e) => return Err(e),
            Err(e) => {
                STREAM_WARNED.call_once(|| {
                        tracing::warn!(error = %e, user = ?config.get_user(), "realtime: cannot stream the slot over a replication connection (the role needs LOGIN and REPLICATION: see --realtime-replication-url); polling it through SQL, which adds latency")
                    });
                return poll_capture(rt, &client, &mut cursor, &mut watch).await;
            }
        };
        Metrics::inc(&m.stream_starts);
        match stream_capture(rt, &client, &mut cursor, &mut stream, &mut watch).await? {
            StreamEnd::TablesChanged => {
                // The new stream needs the slot the old walsender still holds for a moment.
                drop(stream);
                wait_slot_inactive(&client).await?;
            }
            StreamEnd::Reset(why) => {
                // The walsender must let go of the slot before it can be dropped.
                drop(stream);
                wait_slot_inactive(&client).await?;
                reset_slot(&client, m, &why).await?;
                cursor.position = 0;
            }
        }
    }
}

static STREAM_WARNED: std::sync::Once = std::sync::Once::new();

/// Whether a failed start of the stream means this login cannot replicate at all (no such
/// role, refused by authentication or `pg_hba.conf`, no REPLICATION attribute, a URL we
/// cannot use), as opposed to a passing condition.
fn cannot_replicate(e: &agencyflow_db::DbError) -> bool {
    match e {
        agencyflow_db::DbError::Postgres(_) => e
            .sqlstate()
            .is_some_and(|c| c.starts_with("28") || c == "42501"),
        agencyflow_db::DbError::Other(_) => true,
        agencyflow_db::DbError::Unavailable(_) => false,
    }
}

/// The replication login's configuration: `--realtime-replication-url`, else the API
/// login's URL with the user `supabase_replication_admin`.
fn replication_config(rt: &Realtime) -> Result<tokio_postgres::Config, String> {
    match &rt.inner.args.replication_url {
        Some(url) => url.parse().map_err(|e| format!("{e}")),
        None => {
            let mut c: tokio_postgres::Config =
                rt.inner.db_url.parse().map_err(|e| format!("{e}"))?;
            c.user("supabase_replication_admin");
            c.application_name("agencyflow realtime");
            Ok(c)
        }
    }
}

async fn wait_slot_inactive(client: &tokio_postgres::Client) -> Result<(), agencyflow_db::DbError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active: Option<bool> = client
            .query_opt(
                "select active from pg_catalog.pg_replication_slots where slot_name = realtime.slot_name()",
                &[],
            )
            .await?
            .map(|r| r.get(0));
        if active != Some(true) || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader's periodic checks: the published tables (every 5 s) and the slot's lag
/// (every 10 s).
struct Watch {
    tables: Vec<(String, String)>,
    tables_at: Instant,
    lag_at: Instant,
    max_lag: i64,
}

enum Lag {
    Ok,
    /// The slot vanished and was created again.
    Recreated,
    /// Over the limit, or invalidated: to be dropped and recreated (the reason).
    Reset(String),
}

impl Watch {
    fn new(rt: &Realtime) -> Watch {
        let long_ago = Instant::now() - Duration::from_secs(3600);
        Watch {
            tables: Vec::new(),
            tables_at: long_ago,
            lag_at: long_ago,
            max_lag: (rt.inner.args.max_slot_lag_mb as i64).saturating_mul(1024 * 1024),
        }
    }

    /// Re-reads the published tables when due; true when they changed.
    async fn tables(
        &mut self,
        client: &tokio_postgres::Client,
    ) -> Result<bool, agencyflow_db::DbError> {
        if self.tables_at.elapsed() < Duration::from_secs(5) {
            return Ok(false);
        }
        self.tables_at = Instant::now();
        let now: Vec<(String, String)> = client
            .query(
                "select schema_name, table_name from realtime.published_tables() order by 1, 2",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let changed = now != self.tables;
        self.tables = now;
        Ok(changed)
    }

    async fn lag(
        &mut self,
        client: &tokio_postgres::Client,
        m: &Metrics,
    ) -> Result<Lag, agencyflow_db::DbError> {
        if self.lag_at.elapsed() < Duration::from_secs(10) {
            return Ok(Lag::Ok);
        }
        self.lag_at = Instant::now();
        let lag: Option<i64> = client
            .query_one("select realtime.slot_lag()", &[])
            .await?
            .get(0);
        m.slot_lag_bytes.store(lag.unwrap_or(-1), Ordering::Relaxed);
        Ok(match lag {
            None => {
                client
                    .query_one("select realtime.ensure_slot()", &[])
                    .await?;
                Lag::Recreated
            }
            Some(l) if l > self.max_lag => Lag::Reset(format!(
                "it held {l} bytes of WAL, over the limit of {}",
                self.max_lag
            )),
            _ => Lag::Ok,
        })
    }
}

enum StreamEnd {
    /// The publication changed: the stream restarts with the new table list.
    TablesChanged,
    /// The slot is to be dropped and recreated (the reason).
    Reset(String),
}

/// Streams the slot: each flight of messages the walsender pushed is one batch; its whole
/// transactions after the position are published (as in [`poll_capture`]), then the slot is
/// confirmed up to the last of them. Keepalives confirm up to the server's WAL end once
/// everything before them is published, so the slot keeps no WAL while the published tables
/// are quiet.
async fn stream_capture(
    rt: &Realtime,
    client: &tokio_postgres::Client,
    cursor: &mut Cursor,
    stream: &mut agencyflow_db::replication::LogicalStream,
    watch: &mut Watch,
) -> Result<StreamEnd, agencyflow_db::DbError> {
    use agencyflow_db::replication::ReplMessage;
    let m = &rt.inner.metrics;
    let mut txns = Txns::default();
    let mut confirmed = 0u64;
    let mut confirmed_at = Instant::now();
    loop {
        let first = tokio::select! {
            r = stream.next() => Some(r?),
            _ = tokio::time::sleep(Duration::from_secs(1)) => None,
        };
        let mut reply = false;
        let mut server_end = 0u64;
        let mut handle = |msg: ReplMessage, txns: &mut Txns| match msg {
            ReplMessage::Data { start, data, .. } => {
                txns.absorb(start, &data, cursor.position);
            }
            ReplMessage::Keepalive { end, reply: r } => {
                reply |= r;
                server_end = server_end.max(end);
            }
        };
        let mut read = 0usize;
        if let Some(msg) = first {
            handle(msg, &mut txns);
            read += 1;
            // Everything already received joins the batch (bounded).
            while read < 5000 {
                match stream.next_buffered()? {
                    Some(msg) => {
                        handle(msg, &mut txns);
                        read += 1;
                    }
                    None => break,
                }
            }
        }
        let mut to_confirm = confirmed;
        if let Some(end) = txns.last_end {
            if !txns.out.is_empty() {
                let out = std::mem::take(&mut txns.out);
                publish(rt, client, cursor, out, end).await?;
            }
            to_confirm = to_confirm.max(end);
        }
        // A keepalive's WAL end: every commit before it reached us and is published now,
        // unless a transaction is still open (its changes wait in `pending`).
        if txns.pending.is_empty() && server_end > 0 {
            to_confirm = to_confirm.max(server_end);
        }
        let published = txns.last_end.is_some();
        let due = reply
            || (to_confirm > confirmed
                && (published || confirmed_at.elapsed() > Duration::from_secs(1)))
            || confirmed_at.elapsed() > Duration::from_secs(10);
        if due {
            confirmed = to_confirm;
            stream.confirm(confirmed).await?;
            confirmed_at = Instant::now();
        }
        txns.last_end = None;
        if watch.tables(client).await? {
            return Ok(StreamEnd::TablesChanged);
        }
        match watch.lag(client, m).await? {
            Lag::Ok => {}
            Lag::Recreated => {
                return Err(agencyflow_db::DbError::Other(
                    "the slot vanished while streaming".into(),
                ))
            }
            Lag::Reset(why) => return Ok(StreamEnd::Reset(why)),
        }
    }
}

/// Polls the slot through SQL (`realtime.peek_changes`, then advance): the fallback when no
/// replication login is available.
async fn poll_capture(
    rt: &Realtime,
    client: &tokio_postgres::Client,
    cursor: &mut Cursor,
    watch: &mut Watch,
) -> Result<(), agencyflow_db::DbError> {
    let m = &rt.inner.metrics;
    let poll = Duration::from_millis(rt.inner.args.poll_ms.max(1));
    loop {
        watch.tables(client).await?;
        match watch.lag(client, m).await? {
            Lag::Ok | Lag::Recreated => {}
            Lag::Reset(why) => {
                reset_slot(client, m, &why).await?;
                cursor.position = 0;
                cursor.advance_to = None;
            }
        }
        let n = capture_batch(rt, client, &add_tables(&watch.tables), cursor).await?;
        if n == 0 {
            tokio::time::sleep(poll).await;
        }
    }
}

async fn reset_slot(
    client: &tokio_postgres::Client,
    m: &Metrics,
    why: &str,
) -> Result<(), agencyflow_db::DbError> {
    tracing::warn!(reason = %why, "realtime: dropping and recreating the logical slot; changes in between are not delivered");
    Metrics::inc(&m.slot_resets);
    client.query_one("select realtime.drop_slot()", &[]).await?;
    client
        .query_one("select realtime.ensure_slot()", &[])
        .await?;
    Ok(())
}

/// The leader's place in the slot, kept between batches of one session.
struct Cursor {
    /// `realtime.capture_position`: the end of the last transaction handed to the fan-out.
    position: u64,
    /// Where the slot is to be advanced before the next read (the last batch's end; SQL
    /// polling only).
    advance_to: Option<String>,
    /// The session's statements, prepared once (each then costs one round trip, not two).
    peek: tokio_postgres::Statement,
    advance: tokio_postgres::Statement,
    publish: tokio_postgres::Statement,
}

/// wal2json (format 2) output assembled into whole transactions.
#[derive(Default)]
struct Txns {
    /// The changes of the transaction being read (since its `B`).
    pending: Vec<Value>,
    /// Changes of transactions committed after the position, in commit order.
    out: Vec<Value>,
    /// The end (commit record) of the last transaction read.
    last_end: Option<u64>,
}

impl Txns {
    /// One wal2json message at `lsn`.
    fn absorb(&mut self, lsn: u64, data: &[u8], position: u64) {
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match v["action"].as_str() {
            Some("B") => self.pending.clear(),
            Some("C") => {
                if lsn > position {
                    let ts = v["timestamp"].clone();
                    for mut c in self.pending.drain(..) {
                        c["commit_timestamp"] = ts.clone();
                        self.out.push(c);
                    }
                }
                self.pending.clear();
                self.last_end = Some(lsn);
            }
            Some("I" | "U" | "D") => self.pending.push(v),
            _ => {}
        }
    }
}

fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Reads up to ~1000 changes through SQL, hands the new ones to the fan-out, and records
/// the position. Two round trips a batch: (advance the slot past the previous batch; peek),
/// then [`publish`]. Returns the number of rows read.
async fn capture_batch(
    rt: &Realtime,
    client: &tokio_postgres::Client,
    tables: &str,
    cursor: &mut Cursor,
) -> Result<usize, agencyflow_db::DbError> {
    let peek_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tables];
    let peek = client.query(&cursor.peek, &peek_params);
    let rows = match cursor.advance_to.take() {
        // Pipelined: the advance goes first, the peek right behind it in the same flight.
        Some(upto) => {
            let advance_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&upto];
            let advance = client.execute(&cursor.advance, &advance_params);
            let (a, p) = futures::join!(advance, peek);
            a?;
            p?
        }
        None => peek.await?,
    };
    if rows.is_empty() {
        return Ok(0);
    }
    // Whole transactions: changes between B and C, C's lsn is the transaction's end.
    let mut txns = Txns::default();
    for r in &rows {
        let lsn: &str = r.get(0);
        let data: &str = r.get(1);
        txns.absorb(parse_lsn(lsn), data.as_bytes(), cursor.position);
    }
    let Some(end) = txns.last_end else {
        return Ok(rows.len());
    };
    if txns.out.is_empty() {
        // Nothing to send (transactions of other tables, or our own position writes):
        // only the slot moves, so publishing cannot feed itself.
        cursor.advance_to = Some(format_lsn(end));
        return Ok(rows.len());
    }
    publish(rt, client, cursor, txns.out, end).await?;
    cursor.advance_to = Some(format_lsn(end));
    Ok(rows.len())
}

/// Hands committed changes to every process's fan-out and records the position `end`, in one
/// transaction: the notifications are delivered at its commit, in order. A crash before the
/// commit sends nothing and leaves the position, so the changes are read again; after it,
/// the position skips them.
async fn publish(
    rt: &Realtime,
    client: &tokio_postgres::Client,
    cursor: &mut Cursor,
    out: Vec<Value>,
    end: u64,
) -> Result<(), agencyflow_db::DbError> {
    Metrics::inc_by(&rt.inner.metrics.changes_captured, out.len() as u64);
    // The notifications: changes packed several to one, up to ~6,500 bytes; a larger change
    // goes through the spool (its row written first; swept after a minute if unused).
    let mut messages: Vec<String> = Vec::new();
    let mut pack: Vec<String> = Vec::new();
    let mut pack_len = 0;
    for c in &out {
        let text = c.to_string();
        if text.len() < 6500 {
            if pack_len + text.len() > 6500 {
                messages.push(packed(rt, &pack));
                pack.clear();
                pack_len = 0;
            }
            pack_len += text.len() + 1;
            pack.push(text);
        } else {
            if !pack.is_empty() {
                messages.push(packed(rt, &pack));
                pack.clear();
                pack_len = 0;
            }
            let body = json!({"k": "c", "d": c}).to_string();
            let id: i64 = client
                .query_one(
                    "insert into realtime.fanout_spool (body) values ($1) returning id",
                    &[&body],
                )
                .await?
                .get(0);
            messages.push(json!({"n": rt.inner.node, "s": id}).to_string());
        }
    }
    if !pack.is_empty() {
        messages.push(packed(rt, &pack));
    }
    let end_text = format_lsn(end);
    client
        .query_one(
            &cursor.publish,
            &[&crate::fanout::CHANNEL, &messages, &end_text],
        )
        .await?;
    cursor.position = end;
    Ok(())
}

/// A NOTIFY payload carrying several changes (each already JSON text).
fn packed(rt: &Realtime, changes: &[String]) -> String {
    format!(
        "{{\"n\":{},\"m\":{{\"k\":\"cs\",\"d\":[{}]}}}}",
        Value::String(rt.inner.node.clone()),
        changes.join(",")
    )
}

/// Whether a record's value satisfies a filter (compared as numbers when both sides are
/// numbers, else as text).
fn matches(f: &Filter, record: &Map<String, Value>) -> bool {
    let Some(v) = record.get(&f.column) else {
        return false;
    };
    let text = match v {
        Value::Null => return false,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let cmp = |want: &str| -> Option<std::cmp::Ordering> {
        match (text.parse::<f64>(), want.parse::<f64>()) {
            (Ok(a), Ok(b)) if !matches!(v, Value::String(_)) => a.partial_cmp(&b),
            _ => Some(text.as_str().cmp(want)),
        }
    };
    use std::cmp::Ordering as O;
    match f.op {
        Op::Eq => cmp(&f.values[0]) == Some(O::Equal),
        Op::Neq => cmp(&f.values[0]) != Some(O::Equal),
        Op::Lt => cmp(&f.values[0]) == Some(O::Less),
        Op::Lte => matches!(cmp(&f.values[0]), Some(O::Less | O::Equal)),
        Op::Gt => cmp(&f.values[0]) == Some(O::Greater),
        Op::Gte => matches!(cmp(&f.values[0]), Some(O::Greater | O::Equal)),
        Op::In => f.values.iter().any(|w| cmp(w) == Some(O::Equal)),
    }
}

fn columns_to_record(cols: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    for c in cols.as_array().into_iter().flatten() {
        if let Some(n) = c["name"].as_str() {
            m.insert(n.to_string(), c["value"].clone());
        }
    }
    m
}

/// The SELECT check of `schema.table` for whichever role runs it: privilege, then (with
/// RLS) bypass or the applicable permissive policies and all applicable restrictive ones,
/// over `jsonb_populate_record` of the change's values aliased as the table.
async fn table_check(
    rt: &Realtime,
    schema: &str,
    table: &str,
) -> Result<Arc<TableCheck>, agencyflow_db::DbError> {
    let name = format!("{}.{}", quote_ident(schema), quote_ident(table));
    if let Some(c) = rt.inner.changes.checks.lock().expect("checks").get(&name) {
        if c.at.elapsed() < Duration::from_secs(5) {
            return Ok(c.clone());
        }
    }
    let mut client = rt.inner.db.client().await?;
    let tx = client.transaction().await?;
    // Deparse with only pg_catalog visible: every other name comes out schema-qualified.
    tx.batch_execute("set local search_path = pg_catalog")
        .await?;
    let row = tx
        .query_opt(
            "select c.relrowsecurity,
               coalesce((select json_agg(json_build_object(
                   'permissive', p.polpermissive,
                   'roles', (select coalesce(json_agg(r::int8), '[]') from unnest(p.polroles) r),
                   'qual', pg_get_expr(p.polqual, p.polrelid)))
                 from pg_policy p where p.polrelid = c.oid and p.polcmd in ('r', '*')), '[]')::text,
               (select case when bool_or(d.deptype = 'n' and d.refobjsubid = 0) then null
                       else coalesce(json_agg(distinct a.attname::text)
                                       filter (where a.attname is not null), '[]') end
                  from pg_policy p
                  join pg_depend d on d.classid = 'pg_policy'::regclass and d.objid = p.oid
                       and d.refclassid = 'pg_class'::regclass and d.refobjid = c.oid
                  left join pg_attribute a on a.attrelid = c.oid and a.attnum = d.refobjsubid
                                          and d.refobjsubid > 0
                 where p.polrelid = c.oid and p.polcmd in ('r', '*'))::text,
               (select coalesce(json_object_agg(a.attname, format_type(a.atttypid, a.atttypmod)), '{}')
                  from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped)::text
             from pg_class c where c.oid = to_regclass($1)",
            &[&name],
        )
        .await?;
    tx.rollback().await?;
    let Some(row) = row else {
        return Err(agencyflow_db::DbError::Other(format!("no table {name}")));
    };
    let rls: bool = row.get(0);
    let policies: Value = serde_json::from_str(row.get::<_, &str>(1)).unwrap_or(json!([]));
    let columns: Option<Vec<String>> = if rls {
        row.get::<_, Option<&str>>(2)
            .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
    } else {
        // Without RLS only the privilege is checked: no column is read.
        Some(Vec::new())
    };
    let applies = |p: &Value| -> String {
        let roles: Vec<i64> = p["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect();
        if roles.is_empty() || roles.contains(&0) {
            "true".into()
        } else {
            roles
                .iter()
                .map(|r| {
                    format!("(select pg_catalog.pg_has_role(current_user, {r}::oid, 'member'))")
                })
                .collect::<Vec<_>>()
                .join(" or ")
        }
    };
    let mut permissive = Vec::new();
    let mut restrictive = Vec::new();
    for p in policies.as_array().into_iter().flatten() {
        let qual = p["qual"].as_str().unwrap_or("false");
        let expr = format!("(({}) and coalesce(({qual}), false))", applies(p));
        if p["permissive"].as_bool().unwrap_or(true) {
            permissive.push(expr);
        } else {
            restrictive.push(format!(
                "(not ({}) or coalesce(({qual}), false))",
                applies(p)
            ));
        }
    }
    let rls_expr = if rls {
        let perm = if permissive.is_empty() {
            "false".to_string()
        } else {
            permissive.join(" or ")
        };
        let restr = if restrictive.is_empty() {
            "true".to_string()
        } else {
            restrictive.join(" and ")
        };
        format!("(select rolbypassrls from pg_catalog.pg_roles where rolname = current_user) or (({perm}) and ({restr}))")
    } else {
        "true".into()
    };
    // $1: a JSON array of rows; the answer: the 1-based positions of those the caller may
    // see. The array's own names are unlikely to clash with a column the policies name.
    // The row as the policies see it: only the columns they read, typed from the catalog
    // (`jsonb_to_record` converts just those; `jsonb_populate_record` would look up every
    // column of the table, per row and per group), or the whole row when a policy reads it
    // whole; no row at all when they read no column.
    let types: HashMap<String, String> =
        serde_json::from_str(row.get::<_, &str>(3)).unwrap_or_default();
    let alias = quote_ident(table);
    let record = match &columns {
        Some(cols) if cols.is_empty() => String::new(),
        Some(cols) if cols.iter().all(|c| types.contains_key(c)) => format!(
            ", lateral pg_catalog.jsonb_to_record(_af_rows._af_row) as {alias}({})",
            cols.iter()
                .map(|c| format!("{} {}", quote_ident(c), types[c]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => format!(
            ", lateral pg_catalog.jsonb_populate_record(null::{name}, _af_rows._af_row) as {alias}"
        ),
    };
    let sql = format!(
        "select _af_rows._af_pos from pg_catalog.jsonb_array_elements($1::text::jsonb) with ordinality as _af_rows(_af_row, _af_pos){record} \
         where (select pg_catalog.has_table_privilege({lit}, 'select')) and coalesce(({rls_expr}), false) order by 1",
        lit = quote_literal(&name),
    );
    let check = Arc::new(TableCheck {
        sql: sql.into(),
        rls,
        columns,
        at: Instant::now(),
    });
    rt.inner
        .changes
        .checks
        .lock()
        .expect("checks")
        .insert(name, check.clone());
    Ok(check)
}

/// The client's type names (`int4`, `timestamptz`, ...) of the change's columns.
async fn type_names(rt: &Realtime, oids: &[u32]) -> HashMap<u32, String> {
    let missing: Vec<u32> = {
        let t = rt.inner.changes.types.lock().expect("types");
        oids.iter()
            .filter(|o| !t.contains_key(o))
            .copied()
            .collect()
    };
    if !missing.is_empty() {
        if let Ok(c) = rt.inner.db.client().await {
            let ids: Vec<i64> = missing.iter().map(|o| *o as i64).collect();
            if let Ok(rows) = c
                .query(
                    "select oid::int8, typname::text from pg_catalog.pg_type where oid::int8 = any($1)",
                    &[&ids],
                )
                .await
            {
                let mut t = rt.inner.changes.types.lock().expect("types");
                for r in rows {
                    t.insert(r.get::<_, i64>(0) as u32, r.get(1));
                }
            }
        }
    }
    let t = rt.inner.changes.types.lock().expect("types");
    oids.iter()
        .filter_map(|o| t.get(o).map(|n| (*o, n.clone())))
        .collect()
}

/// `2026-12-06 10:00:00.123456+00` → `2026-12-06T10:00:00.123Z`.
fn commit_timestamp(ts: &Value) -> Value {
    let Some(s) = ts.as_str() else {
        return Value::Null;
    };
    let b = s.as_bytes();
    let norm = if b.len() >= 3 && matches!(b[b.len() - 3], b'+' | b'-') {
        format!("{s}:00")
    } else {
        s.to_string()
    };
    match chrono::DateTime::parse_from_str(&norm, "%Y-%m-%d %H:%M:%S%.f%:z") {
        Ok(t) => json!(t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()),
        Err(_) => json!(s),
    }
}

/// One captured change, parsed once.
struct Captured {
    kind: &'static str,
    schema: String,
    table: String,
    record: Map<String, Value>,
    old: Map<String, Value>,
    body: Value,
}

impl Captured {
    fn parse(body: Value) -> Option<Captured> {
        let c = &body["d"];
        let kind = match c["action"].as_str()? {
            "I" => "INSERT",
            "U" => "UPDATE",
            "D" => "DELETE",
            _ => return None,
        };
        Some(Captured {
            kind,
            schema: c["schema"].as_str()?.to_string(),
            table: c["table"].as_str()?.to_string(),
            record: columns_to_record(&c["columns"]),
            old: columns_to_record(&c["identity"]),
            body,
        })
    }

    /// The row RLS judges: the new one, or the old one of a DELETE.
    fn row(&self) -> &Map<String, Value> {
        if self.kind == "DELETE" {
            &self.old
        } else {
            &self.record
        }
    }
}

/// A (role, claims) group: its caller and, per change it may receive, the subscriptions.
struct Group {
    role: String,
    claims: String,
    per_change: HashMap<usize, Vec<Arc<Sub>>>,
}

/// Delivers captured changes to this process's subscribers (see the module doc), in order.
/// The whole batch is authorised in one read-only transaction, one pipelined round trip:
/// per (role, claims) group, the role switch and one query per table evaluating that
/// table's SELECT privilege and policies on all of the batch's rows the group would get.
pub(crate) async fn deliver_batch(rt: &Realtime, bodies: Vec<Value>) {
    let changes: Vec<Captured> = bodies.into_iter().filter_map(Captured::parse).collect();
    if changes.is_empty() {
        return;
    }
    // Matching subscriptions, grouped by (role, claims).
    let mut groups: HashMap<(String, String), Group> = HashMap::new();
    {
        let subs = rt.inner.changes.subs.read().expect("subs");
        for (i, ch) in changes.iter().enumerate() {
            for s in subs.values() {
                if s.schema != "*" && s.schema != ch.schema {
                    continue;
                }
                if s.table.as_deref().is_some_and(|t| t != ch.table) {
                    continue;
                }
                if s.event != "*" && s.event != ch.kind {
                    continue;
                }
                if !s.filters.iter().all(|f| matches(f, ch.row())) {
                    continue;
                }
                let caller = s.caller.read().expect("caller");
                groups
                    .entry((caller.role.clone(), caller.claims.json.clone()))
                    .or_insert_with(|| Group {
                        role: caller.role.clone(),
                        claims: caller.claims.json.clone(),
                        per_change: HashMap::new(),
                    })
                    .per_change
                    .entry(i)
                    .or_default()
                    .push(s.clone());
            }
        }
    }
    if groups.is_empty() {
        return;
    }
    // The checks of the tables involved.
    let mut checks: HashMap<(String, String), Arc<TableCheck>> = HashMap::new();
    for g in groups.values() {
        for &i in g.per_change.keys() {
            let key = (changes[i].schema.clone(), changes[i].table.clone());
            if checks.contains_key(&key) {
                continue;
            }
            match table_check(rt, &key.0, &key.1).await {
                Ok(c) => {
                    checks.insert(key, c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, schema = %key.0, table = %key.1, "realtime: cannot build the RLS check");
                }
            }
        }
    }
    let groups: Vec<Group> = groups.into_values().collect();
    // Per group, per table: the changes to judge, as a JSON array of rows.
    let mut work: Vec<(usize, Arc<TableCheck>, Vec<usize>, String)> = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        let mut per_table: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for &i in g.per_change.keys() {
            per_table
                .entry((&changes[i].schema, &changes[i].table))
                .or_default()
                .push(i);
        }
        for ((schema, table), mut idx) in per_table {
            let Some(check) = checks.get(&(schema.to_string(), table.to_string())) else {
                continue;
            };
            idx.sort_unstable();
            let rows = Value::Array(
                idx.iter()
                    .map(|&i| {
                        let row = changes[i].row();
                        Value::Object(match &check.columns {
                            None => row.clone(),
                            Some(cols) => cols
                                .iter()
                                .filter_map(|c| row.get(c).map(|v| (c.clone(), v.clone())))
                                .collect(),
                        })
                    })
                    .collect(),
            );
            work.push((gi, check.clone(), idx, rows.to_string()));
        }
    }
    let visible = authorize(rt, &groups, &work).await;
    // Messages, change by change, in commit order.
    let mut allowed: Vec<Vec<Arc<Sub>>> = vec![Vec::new(); changes.len()];
    for (gi, i) in visible {
        if let Some(subs) = groups[gi].per_change.get(&i) {
            allowed[i].extend(subs.iter().cloned());
        }
    }
    for (i, subs) in allowed.into_iter().enumerate() {
        if subs.is_empty() {
            continue;
        }
        let ch = &changes[i];
        let rls = checks
            .get(&(ch.schema.clone(), ch.table.clone()))
            .is_some_and(|c| c.rls);
        send_change(rt, ch, rls, subs).await;
    }
}

/// Runs the batch's checks; returns the (group, change) pairs that may be delivered.
async fn authorize(
    rt: &Realtime,
    groups: &[Group],
    work: &[(usize, Arc<TableCheck>, Vec<usize>, String)],
) -> Vec<(usize, usize)> {
    if work.is_empty() {
        return Vec::new();
    }
    let m = &rt.inner.metrics;
    Metrics::inc_by(&m.authorization_queries, work.len() as u64);
    // A large batch is split over several connections, so PostgreSQL checks the parts on
    // several cores at once (each part is one statement, as below).
    let parts = (work.len() / CHECKS_PER_PART).clamp(1, rt.inner.args.check_connections.max(1));
    if parts > 1 {
        let size = work.len().div_ceil(parts);
        let runs = work
            .chunks(size)
            .map(|part| authorize_part(rt, groups, part));
        return futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect();
    }
    authorize_part(rt, groups, work).await
}

/// Work items (group × table) below which a batch is not split over connections.
const CHECKS_PER_PART: usize = 16;

/// One part of a batch's checks: one statement, or group by group when it fails.
async fn authorize_part(
    rt: &Realtime,
    groups: &[Group],
    work: &[(usize, Arc<TableCheck>, Vec<usize>, String)],
) -> Vec<(usize, usize)> {
    match authorize_pipelined(rt, groups, work).await {
        Ok(v) => return v,
        Err(e) => {
            tracing::debug!(error = %e, "realtime: pipelined authorisation failed; checking group by group");
        }
    }
    // One group's failure (a policy raising on some row) must not hide the others' changes.
    let mut out = Vec::new();
    for (gi, check, idx, rows) in work {
        let g = &groups[*gi];
        let settings = TxSettings::new(g.role.clone(), g.claims.clone()).read_only(true);
        let got = match rt.inner.db.begin(&settings).await {
            Ok(mut tx) => tx
                .query_typed(&check.sql, &[(rows, Type::TEXT)])
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match got {
            Ok(rows) => out.extend(visible_indices(&rows, idx).map(|i| (*gi, i))),
            Err(e) => {
                tracing::debug!(error = %e, "realtime: authorisation query failed; not delivered")
            }
        }
    }
    out
}

/// All checks in one statement (`realtime.check_groups`, migration 20261207300300) in a
/// read-only transaction, one round trip: per (group, table) the function switches to the
/// group's role and claims and runs the table's check over the group's rows.
async fn authorize_pipelined(
    rt: &Realtime,
    groups: &[Group],
    work: &[(usize, Arc<TableCheck>, Vec<usize>, String)],
) -> Result<Vec<(usize, usize)>, agencyflow_db::DbError> {
    let client = rt.inner.db.client().await?;
    let roles: Vec<&str> = work
        .iter()
        .map(|(gi, ..)| groups[*gi].role.as_str())
        .collect();
    let claims: Vec<&str> = work
        .iter()
        .map(|(gi, ..)| groups[*gi].claims.as_str())
        .collect();
    let checks: Vec<&str> = work.iter().map(|(_, c, ..)| &*c.sql).collect();
    let batches: Vec<&str> = work.iter().map(|(.., rows)| rows.as_str()).collect();
    let stmt = client
        .prepare_cached("select item, pos from realtime.check_groups($1, $2, $3, $4)")
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&roles, &claims, &checks, &batches];
    let (b, q, r) = futures::join!(
        client.batch_execute("begin isolation level read committed read only"),
        client.query(&stmt, &params),
        client.batch_execute("rollback")
    );
    b?;
    r?;
    let mut out = Vec::new();
    for row in q? {
        let item: i32 = row.get(0);
        let pos: i64 = row.get(1);
        let Some((gi, _, idx, _)) = work.get((item - 1) as usize) else {
            continue;
        };
        if let Some(i) = idx.get((pos - 1) as usize) {
            out.push((*gi, *i));
        }
    }
    Ok(out)
}

/// The check returns the 1-based positions of the visible rows in the JSON array.
fn visible_indices<'a>(
    rows: &'a [tokio_postgres::Row],
    idx: &'a [usize],
) -> impl Iterator<Item = usize> + 'a {
    rows.iter().filter_map(move |r| {
        let pos: i64 = r.get(0);
        idx.get((pos - 1) as usize).copied()
    })
}

/// Sends one authorised change to its subscriptions: one message per channel, with the ids
/// of the channel's bindings that matched.
async fn send_change(rt: &Realtime, ch: &Captured, rls: bool, subs: Vec<Arc<Sub>>) {
    let c = &ch.body["d"];
    let kind = ch.kind;
    let cols = if kind == "DELETE" {
        &c["identity"]
    } else {
        &c["columns"]
    };
    let oids: Vec<u32> = cols
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["typeoid"].as_u64().map(|o| o as u32))
        .collect();
    let names = type_names(rt, &oids).await;
    let columns: Vec<Value> = cols
        .as_array()
        .into_iter()
        .flatten()
        .map(|col| {
            let oid = col["typeoid"].as_u64().unwrap_or(0) as u32;
            json!({"name": col["name"], "type": names.get(&oid).cloned().unwrap_or_else(|| col["type"].as_str().unwrap_or("").to_string())})
        })
        .collect();
    let pk: HashSet<&str> = c["pk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let mut data = json!({
        "schema": ch.schema,
        "table": ch.table,
        "type": kind,
        "commit_timestamp": commit_timestamp(&c["commit_timestamp"]),
        "columns": columns,
        "errors": null,
    });
    match kind {
        "INSERT" => data["record"] = Value::Object(ch.record.clone()),
        "UPDATE" => {
            data["record"] = Value::Object(ch.record.clone());
            data["old_record"] = Value::Object(ch.old.clone());
        }
        _ => {
            let old_out: Map<String, Value> = if rls {
                ch.old
                    .iter()
                    .filter(|(k, _)| pk.contains(k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            } else {
                ch.old.clone()
            };
            data["old_record"] = Value::Object(old_out);
        }
    }
    let mut per_channel: HashMap<(SocketId, String), (Outbox, Vec<u64>)> = HashMap::new();
    for s in &subs {
        per_channel
            .entry((s.socket, s.topic.clone()))
            .or_insert_with(|| (s.outbox.clone(), Vec::new()))
            .1
            .push(s.id);
    }
    for ((_, topic), (outbox, mut ids)) in per_channel {
        ids.sort_unstable();
        let payload = json!({"ids": ids, "data": data});
        let msg = protocol::encode(outbox.vsn, None, None, &topic, "postgres_changes", &payload);
        if outbox.send(msg, &rt.inner.metrics) {
            Metrics::inc(&rt.inner.metrics.changes_delivered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_match() {
        let f = parse_filters("status=eq.done,priority=in.(high,urgent)").unwrap();
        assert_eq!(f.len(), 2);
        let rec: Map<String, Value> =
            serde_json::from_value(json!({"status": "done", "priority": "high", "n": 5})).unwrap();
        assert!(f.iter().all(|x| matches(x, &rec)));
        let n = parse_filters("n=gt.4").unwrap();
        assert!(matches(&n[0], &rec));
        let n = parse_filters("n=lte.4").unwrap();
        assert!(!matches(&n[0], &rec));
        assert!(parse_filters("n=like.4").is_err());
        assert!(parse_filters("n").is_err());
        assert!(parse_filters("n=in.1").is_err());
    }

    #[test]
    fn lsn_and_timestamp() {
        assert!(parse_lsn("0/157A858") > parse_lsn("0/157A6F0"));
        assert!(parse_lsn("1/0") > parse_lsn("0/FFFFFFFF"));
        assert_eq!(
            commit_timestamp(&json!("2026-12-06 16:12:45.74471+00")),
            json!("2026-12-06T16:12:45.744Z")
        );
    }
}
