//! Topics of this process: who is subscribed (broadcast fan-out) and who is present
//! (presence), local and, for presence, on the other processes (kept from their NOTIFYs).
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Message;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;
use crate::protocol::{self, BroadcastPayload, Vsn};

pub type SocketId = u64;

/// The queue of one socket. A full queue means the client stopped reading: the socket is
/// told to close (`slow`) rather than buffering without bound.
#[derive(Clone)]
pub struct Outbox {
    pub tx: mpsc::Sender<Message>,
    pub vsn: Vsn,
    pub slow: Arc<Notify>,
}

impl Outbox {
    /// Queues `m`; false (and the socket told to close) when the queue is full or gone.
    pub fn send(&self, m: Message, metrics: &Metrics) -> bool {
        match self.tx.try_send(m) {
            Ok(()) => {
                Metrics::inc(&metrics.events_out);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                Metrics::inc(&metrics.dropped);
                self.slow.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The hub's key of a channel: public and private channels of one name are distinct.
pub fn topic_key(topic: &str, private: bool) -> String {
    format!("{}{topic}", if private { "p:" } else { "o:" })
}

struct Sub {
    outbox: Outbox,
    receive_own: bool,
}

/// Who placed a presence: a process and one of its sockets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub node: String,
    pub socket: SocketId,
}

#[derive(Debug, Clone)]
struct Meta {
    owner: Owner,
    key: String,
    /// The tracked payload with its `phx_ref`.
    meta: Value,
}

#[derive(Default)]
struct Topic {
    /// The client-facing topic (`realtime:<name>`).
    name: String,
    subs: HashMap<SocketId, Sub>,
    presence: Vec<Meta>,
}

#[derive(Default)]
pub struct Hub {
    topics: Mutex<HashMap<String, Topic>>,
}

/// A presence change: what joined and what left, in Phoenix's `presence_diff` shape.
#[derive(Debug, Default, Clone)]
pub struct Diff {
    pub joins: Map<String, Value>,
    pub leaves: Map<String, Value>,
}

impl Diff {
    fn add(side: &mut Map<String, Value>, key: &str, meta: Value) {
        let e = side
            .entry(key.to_string())
            .or_insert_with(|| json!({"metas": []}));
        if let Some(a) = e["metas"].as_array_mut() {
            a.push(meta);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    pub fn to_json(&self) -> Value {
        json!({"joins": self.joins, "leaves": self.leaves})
    }
}

impl Hub {
    pub fn subscribe(
        &self,
        key: &str,
        topic: &str,
        socket: SocketId,
        outbox: Outbox,
        receive_own: bool,
    ) {
        let mut t = self.topics.lock().expect("hub");
        let e = t.entry(key.to_string()).or_default();
        e.name = topic.to_string();
        e.subs.insert(
            socket,
            Sub {
                outbox,
                receive_own,
            },
        );
    }

    /// Removes the socket's subscription and its presences; returns the presence diff
    /// (already sent to the remaining subscribers).
    pub fn unsubscribe(&self, key: &str, socket: SocketId, node: &str, metrics: &Metrics) -> Diff {
        let owner = Owner {
            node: node.to_string(),
            socket,
        };
        let mut topics = self.topics.lock().expect("hub");
        let Some(t) = topics.get_mut(key) else {
            return Diff::default();
        };
        t.subs.remove(&socket);
        let diff = Self::remove_owned(t, &owner);
        if !diff.is_empty() {
            Self::send_diff(t, &diff, metrics);
        }
        if t.subs.is_empty() && t.presence.is_empty() {
            topics.remove(key);
        }
        diff
    }

    fn remove_owned(t: &mut Topic, owner: &Owner) -> Diff {
        let mut diff = Diff::default();
        t.presence.retain(|m| {
            if &m.owner == owner {
                Diff::add(&mut diff.leaves, &m.key, m.meta.clone());
                false
            } else {
                true
            }
        });
        diff
    }

    fn send_diff(t: &Topic, diff: &Diff, metrics: &Metrics) {
        let payload = diff.to_json();
        let mut cache: [Option<Message>; 2] = [None, None];
        for s in t.subs.values() {
            let slot = &mut cache[s.outbox.vsn as usize];
            let m = slot
                .get_or_insert_with(|| {
                    protocol::encode(s.outbox.vsn, None, None, &t.name, "presence_diff", &payload)
                })
                .clone();
            s.outbox.send(m, metrics);
        }
    }

    /// Delivers a user broadcast to the topic's subscribers on this process (not to
    /// `sender` unless it asked for its own messages). Returns how many got it.
    pub fn broadcast(
        &self,
        key: &str,
        event: &str,
        payload: &BroadcastPayload,
        sender: Option<SocketId>,
        metrics: &Metrics,
    ) -> usize {
        let topics = self.topics.lock().expect("hub");
        let Some(t) = topics.get(key) else {
            return 0;
        };
        let mut cache: [Option<Option<Message>>; 2] = [None, None];
        let mut n = 0;
        for (id, s) in &t.subs {
            if Some(*id) == sender && !s.receive_own {
                continue;
            }
            let vsn = s.outbox.vsn;
            let m = cache[vsn as usize]
                .get_or_insert_with(|| protocol::encode_broadcast(vsn, &t.name, event, payload))
                .clone();
            match m {
                Some(m) => {
                    if s.outbox.send(m, metrics) {
                        n += 1;
                    }
                }
                None => Metrics::inc(&metrics.dropped),
            }
        }
        n
    }

    /// Tracks (or re-tracks) `owner`'s presence under `key` on a topic; returns the diff,
    /// sent to the local subscribers.
    pub fn track(
        &self,
        key: &str,
        owner: Owner,
        presence_key: &str,
        meta: Value,
        metrics: &Metrics,
    ) -> Diff {
        let mut topics = self.topics.lock().expect("hub");
        let t = topics.entry(key.to_string()).or_default();
        let mut diff = Self::remove_owned(t, &owner);
        Diff::add(&mut diff.joins, presence_key, meta.clone());
        t.presence.push(Meta {
            owner,
            key: presence_key.to_string(),
            meta,
        });
        Self::send_diff(t, &diff, metrics);
        diff
    }

    pub fn untrack(&self, key: &str, owner: &Owner, metrics: &Metrics) -> Diff {
        let mut topics = self.topics.lock().expect("hub");
        let Some(t) = topics.get_mut(key) else {
            return Diff::default();
        };
        let diff = Self::remove_owned(t, owner);
        if !diff.is_empty() {
            Self::send_diff(t, &diff, metrics);
        }
        diff
    }

    /// Applies another process's presence diff (its metas carry `owner`).
    pub fn apply_remote(
        &self,
        key: &str,
        topic: &str,
        owner: Owner,
        joins: &Map<String, Value>,
        leaves: &Map<String, Value>,
        metrics: &Metrics,
    ) {
        let mut topics = self.topics.lock().expect("hub");
        let t = topics.entry(key.to_string()).or_default();
        if t.name.is_empty() {
            t.name = topic.to_string();
        }
        let mut diff = Diff::default();
        for (k, v) in leaves {
            for m in v["metas"].as_array().into_iter().flatten() {
                let r = &m["phx_ref"];
                let before = t.presence.len();
                t.presence
                    .retain(|p| !(p.owner == owner && p.key == *k && &p.meta["phx_ref"] == r));
                if t.presence.len() < before {
                    Diff::add(&mut diff.leaves, k, m.clone());
                }
            }
        }
        for (k, v) in joins {
            for m in v["metas"].as_array().into_iter().flatten() {
                t.presence.push(Meta {
                    owner: owner.clone(),
                    key: k.clone(),
                    meta: m.clone(),
                });
                Diff::add(&mut diff.joins, k, m.clone());
            }
        }
        if !diff.is_empty() {
            Self::send_diff(t, &diff, metrics);
        }
    }

    /// Forgets every presence of a process that went away; the leaves are sent.
    pub fn drop_node(&self, node: &str, metrics: &Metrics) {
        let mut topics = self.topics.lock().expect("hub");
        for t in topics.values_mut() {
            let mut diff = Diff::default();
            t.presence.retain(|m| {
                if m.owner.node == node {
                    Diff::add(&mut diff.leaves, &m.key, m.meta.clone());
                    false
                } else {
                    true
                }
            });
            if !diff.is_empty() {
                Self::send_diff(t, &diff, metrics);
            }
        }
        topics.retain(|_, t| !(t.subs.is_empty() && t.presence.is_empty()));
    }

    /// `presence_state` of a topic: `{key: {metas: [...]}}`.
    pub fn presence_state(&self, key: &str) -> Value {
        let topics = self.topics.lock().expect("hub");
        let mut state = Map::new();
        if let Some(t) = topics.get(key) {
            for m in &t.presence {
                Diff::add(&mut state, &m.key, m.meta.clone());
            }
        }
        Value::Object(state)
    }

    /// Every presence this process owns, per topic key (for a peer that asks for a sync).
    pub fn local_presences(&self, node: &str) -> Vec<(String, String, SocketId, Diff)> {
        let topics = self.topics.lock().expect("hub");
        let mut out = Vec::new();
        for (key, t) in topics.iter() {
            let mut per: HashMap<SocketId, Diff> = HashMap::new();
            for m in t.presence.iter().filter(|m| m.owner.node == node) {
                Diff::add(
                    &mut per.entry(m.owner.socket).or_default().joins,
                    &m.key,
                    m.meta.clone(),
                );
            }
            for (s, d) in per {
                out.push((key.clone(), t.name.clone(), s, d));
            }
        }
        out
    }

    pub fn subscriber_count(&self) -> usize {
        let topics = self.topics.lock().expect("hub");
        topics.values().map(|t| t.subs.len()).sum()
    }
}

/// Marks a metric gauge up or down.
pub(crate) fn gauge(g: &std::sync::atomic::AtomicI64, d: i64) {
    g.fetch_add(d, Ordering::Relaxed);
}
