//! Between agencyflow processes on one database: broadcasts and presence travel as
//! `NOTIFY agencyflow_realtime` (a message larger than a NOTIFY payload goes through the
//! unlogged `realtime.fanout_spool`, the NOTIFY carrying its id). Every process LISTENs,
//! delivers what other processes sent, and announces itself (`hello`, then `alive` every
//! 10 s); a process not heard from for 35 s is forgotten with its presences. A process that
//! knows no peer sends nothing for broadcasts. `realtime.send()` notifies the same channel.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::hub::{topic_key, Owner};
use crate::metrics::Metrics;
use crate::protocol::BroadcastPayload;
use crate::Realtime;

pub const CHANNEL: &str = "agencyflow_realtime";
/// NOTIFY payloads must stay under 8000 bytes.
const INLINE_LIMIT: usize = 7000;
const ALIVE_EVERY: Duration = Duration::from_secs(10);
const PEER_TTL: Duration = Duration::from_secs(35);

#[derive(Default)]
pub struct Fanout {
    peers: Mutex<HashMap<String, Instant>>,
    tx: OnceLock<mpsc::Sender<Value>>,
    /// The LISTEN connection is up (messages of other processes arrive).
    pub listening: AtomicBool,
}

impl Fanout {
    pub fn has_peers(&self) -> bool {
        !self.peers.lock().expect("peers").is_empty()
    }

    /// Queues a message for the other processes (in order; dropped and counted when the
    /// queue is full).
    pub(crate) fn publish(&self, body: Value, metrics: &Metrics) {
        if let Some(tx) = self.tx.get() {
            if tx.try_send(body).is_err() {
                Metrics::inc(&metrics.dropped);
            }
        }
    }
}

/// A broadcast for the other processes (topic without `realtime:`).
pub(crate) fn broadcast_body(
    sub_topic: &str,
    private: bool,
    event: &str,
    payload: &BroadcastPayload,
) -> Value {
    match payload {
        BroadcastPayload::Json(v) => {
            json!({"k": "b", "t": sub_topic, "p": private, "e": event, "d": v})
        }
        BroadcastPayload::Binary(b) => json!({"k": "b", "t": sub_topic, "p": private, "e": event,
            "x": base64::engine::general_purpose::STANDARD.encode(b)}),
    }
}

pub(crate) fn spawn(rt: Realtime) {
    let (tx, rx) = mpsc::channel(10_000);
    if rt.inner.fanout.tx.set(tx).is_err() {
        return;
    }
    tokio::spawn(publisher(rt.clone(), rx));
    tokio::spawn(listener(rt));
}

async fn notify(rt: &Realtime, body: &Value) -> Result<(), agencyflow_db::DbError> {
    let text = body.to_string();
    let client = rt.inner.db.client().await?;
    if text.len() < INLINE_LIMIT {
        let msg = json!({"n": rt.inner.node, "m": body}).to_string();
        client
            .execute("select pg_notify($1, $2)", &[&CHANNEL, &msg])
            .await?;
    } else {
        client
            .execute(
                "with s as (insert into realtime.fanout_spool (body) values ($2) returning id)
                 select pg_notify($1, json_build_object('n', $3::text, 's', s.id)::text) from s",
                &[&CHANNEL, &text, &rt.inner.node],
            )
            .await?;
    }
    Ok(())
}

async fn publisher(rt: Realtime, mut rx: mpsc::Receiver<Value>) {
    let mut last_sweep = Instant::now();
    while let Some(body) = rx.recv().await {
        let kind = body["k"].as_str().unwrap_or("");
        // Nobody else to tell: broadcasts and presence stay local.
        if matches!(kind, "b" | "p") && !rt.inner.fanout.has_peers() {
            continue;
        }
        if let Err(e) = notify(&rt, &body).await {
            Metrics::inc(&rt.inner.metrics.dropped);
            tracing::warn!(error = %e, "realtime fan-out NOTIFY failed");
        }
        if last_sweep.elapsed() > Duration::from_secs(30) {
            last_sweep = Instant::now();
            if let Ok(c) = rt.inner.db.client().await {
                let _ = c
                    .execute(
                        "delete from realtime.fanout_spool where created_at < now() - interval '60 seconds'",
                        &[],
                    )
                    .await;
            }
        }
    }
}

async fn listener(rt: Realtime) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match agencyflow_db::listen::listen(&rt.inner.db_url, CHANNEL).await {
            Ok(mut l) => {
                backoff = Duration::from_millis(200);
                rt.inner.fanout.listening.store(true, Ordering::Release);
                rt.inner
                    .fanout
                    .publish(json!({"k": "hello"}), &rt.inner.metrics);
                let mut alive = tokio::time::interval(ALIVE_EVERY);
                alive.tick().await;
                loop {
                    tokio::select! {
                        m = l.rx.recv() => match m {
                            Some(payload) => {
                                // Changes that arrived together are authorised together.
                                let mut changes = Vec::new();
                                receive(&rt, &payload, &mut changes).await;
                                while changes.len() < MAX_CHANGE_BATCH {
                                    match l.rx.try_recv() {
                                        Ok(p) => receive(&rt, &p, &mut changes).await,
                                        Err(_) => break,
                                    }
                                }
                                if !changes.is_empty() {
                                    crate::changes::deliver_batch(&rt, changes).await;
                                }
                            }
                            None => break,
                        },
                        _ = alive.tick() => {
                            rt.inner.fanout.publish(json!({"k": "alive"}), &rt.inner.metrics);
                            expire_peers(&rt);
                        }
                    }
                }
                rt.inner.fanout.listening.store(false, Ordering::Release);
                tracing::warn!("realtime fan-out listener lost; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "realtime fan-out cannot LISTEN; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn expire_peers(rt: &Realtime) {
    let gone: Vec<String> = {
        let mut peers = rt.inner.fanout.peers.lock().expect("peers");
        let gone = peers
            .iter()
            .filter(|(_, t)| t.elapsed() > PEER_TTL)
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>();
        for n in &gone {
            peers.remove(n);
        }
        gone
    };
    for n in gone {
        tracing::info!(node = %n, "realtime peer gone; forgetting its presences");
        rt.inner.hub.drop_node(&n, &rt.inner.metrics);
    }
}

/// Changes delivered (and authorised) together at most.
const MAX_CHANGE_BATCH: usize = 2000;

/// Handles one NOTIFY: broadcasts and presence at once; captured changes are appended to
/// `changes` for the caller to deliver as a batch.
async fn receive(rt: &Realtime, payload: &str, changes: &mut Vec<Value>) {
    let Ok(env) = serde_json::from_str::<Value>(payload) else {
        return;
    };
    let node = env["n"].as_str().unwrap_or("").to_string();
    let mut body = if let Some(id) = env["s"].as_i64() {
        let Ok(c) = rt.inner.db.client().await else {
            return;
        };
        match c
            .query_opt(
                "select body from realtime.fanout_spool where id = $1",
                &[&id],
            )
            .await
        {
            Ok(Some(row)) => match serde_json::from_str::<Value>(row.get::<_, &str>(0)) {
                Ok(v) => v,
                Err(_) => return,
            },
            _ => return,
        }
    } else {
        env["m"].clone()
    };
    let kind = body["k"].as_str().unwrap_or("");
    match kind {
        "c" => return changes.push(body),
        "cs" => {
            if let Value::Array(items) = body["d"].take() {
                changes.extend(items.into_iter().map(|d| json!({"k": "c", "d": d})));
            }
            return;
        }
        _ => {}
    }
    if node == rt.inner.node {
        return;
    }
    if node != "db" && !node.is_empty() {
        let new = rt
            .inner
            .fanout
            .peers
            .lock()
            .expect("peers")
            .insert(node.clone(), Instant::now())
            .is_none();
        if new || kind == "hello" {
            // Tell the newcomer we exist and what we hold.
            rt.inner
                .fanout
                .publish(json!({"k": "alive"}), &rt.inner.metrics);
            for (key, topic, socket, diff) in rt.inner.hub.local_presences(&rt.inner.node) {
                let private = key.starts_with("p:");
                rt.inner.fanout.publish(
                    json!({"k": "p", "t": topic, "p": private, "o": socket, "j": diff.joins, "l": {}}),
                    &rt.inner.metrics,
                );
            }
        }
    }
    match kind {
        "b" => {
            let Some(t) = body["t"].as_str() else { return };
            let private = body["p"].as_bool().unwrap_or(false);
            let event = body["e"].as_str().unwrap_or("");
            let payload = match body["x"].as_str() {
                Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                    Ok(b) => BroadcastPayload::Binary(b.into()),
                    Err(_) => return,
                },
                None => BroadcastPayload::Json(body["d"].clone()),
            };
            let key = topic_key(&format!("realtime:{t}"), private);
            rt.inner
                .hub
                .broadcast(&key, event, &payload, None, &rt.inner.metrics);
        }
        "p" => {
            let Some(topic) = body["t"].as_str() else {
                return;
            };
            let private = body["p"].as_bool().unwrap_or(false);
            let owner = Owner {
                node,
                socket: body["o"].as_u64().unwrap_or(0),
            };
            let empty = serde_json::Map::new();
            rt.inner.hub.apply_remote(
                &topic_key(topic, private),
                topic,
                owner,
                body["j"].as_object().unwrap_or(&empty),
                body["l"].as_object().unwrap_or(&empty),
                &rt.inner.metrics,
            );
        }
        "bye" => {
            rt.inner.fanout.peers.lock().expect("peers").remove(&node);
            rt.inner.hub.drop_node(&node, &rt.inner.metrics);
        }
        _ => {}
    }
}
