//! One websocket: Phoenix channels on it (join, leave, heartbeat, broadcast, presence,
//! access_token), its bounded queue, its limits.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agencyflow_keys::{caller_from_token, AuthnError, Caller};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::changes::{self, ChangeSpec};
use crate::hub::{gauge, topic_key, Outbox, Owner, SocketId};
use crate::limits::{tenant_key, Bucket};
use crate::metrics::Metrics;
use crate::protocol::{self, BroadcastPayload, Incoming, Vsn};
use crate::Realtime;

/// `GET /realtime/v1/websocket?apikey=...&vsn=2.0.0`: the API-key gate has already refused
/// a missing or invalid key.
pub async fn websocket(
    State(rt): State<Realtime>,
    Query(q): Query<HashMap<String, String>>,
    ext: http::Extensions,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = ext
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let vsn = match Vsn::parse(q.get("vsn").map(String::as_str)) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"message": e}))).into_response(),
    };
    let apikey = q.get("apikey").cloned().unwrap_or_default();
    let limit = rt.inner.args.max_message_bytes;
    // The transport refuses far larger frames outright; up to twice the limit they are read
    // and answered with a 1009 close.
    // Buffers sized for the common message (a heartbeat, a change) rather than the
    // transport's 128 KiB default allocated per socket: 10,000 idle sockets would hold 1.3 GB
    // of read buffers. Larger messages still arrive whole; the buffer grows for them.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(limit.saturating_mul(2).max(64 * 1024))
        .max_frame_size(limit.saturating_mul(2).max(64 * 1024))
        .on_upgrade(move |socket| run(rt, socket, vsn, apikey, ip))
}

/// A joined channel.
pub(crate) struct Channel {
    join_ref: Option<String>,
    key: String,
    sub_topic: String,
    private: bool,
    ack: bool,
    presence_key: String,
    caller: Arc<RwLock<Caller>>,
    /// Private channels: what `realtime.messages` policies allow.
    can_write_broadcast: bool,
    can_write_presence: bool,
    change_ids: Vec<u64>,
}

struct Conn {
    rt: Realtime,
    id: SocketId,
    outbox: Outbox,
    apikey: String,
    channels: HashMap<String, Channel>,
    events: Bucket,
    joins: Bucket,
    /// The client's address: the tenant of events sent without a signed-in user.
    ip: Option<std::net::IpAddr>,
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }))
}

async fn run(
    rt: Realtime,
    socket: WebSocket,
    vsn: Vsn,
    apikey: String,
    ip: Option<std::net::IpAddr>,
) {
    let m = &rt.inner.metrics;
    gauge(&m.connections, 1);
    Metrics::inc(&m.connections_total);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(rt.inner.args.socket_queue.max(1));
    let slow = Arc::new(Notify::new());
    // Writes what is queued, flushing once per run of queued messages (up to 64) rather than
    // once per message: a fan-out of many messages costs a few writes, not one each.
    let writer = tokio::spawn(async move {
        'out: while let Some(msg) = rx.recv().await {
            let mut closing = matches!(msg, Message::Close(_));
            if sink.feed(msg).await.is_err() {
                break;
            }
            let mut n = 1;
            while !closing && n < 64 {
                let Ok(m) = rx.try_recv() else { break };
                closing = matches!(m, Message::Close(_));
                if sink.feed(m).await.is_err() {
                    break 'out;
                }
                n += 1;
            }
            if sink.flush().await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut conn = Conn {
        id: rt.next_id(),
        outbox: Outbox {
            tx: tx.clone(),
            vsn,
            slow: slow.clone(),
        },
        apikey,
        channels: HashMap::new(),
        events: Bucket::new(rt.inner.args.max_events_per_second),
        joins: Bucket::new(rt.inner.args.max_joins_per_second),
        ip,
        rt: rt.clone(),
    };
    let idle = rt.inner.args.heartbeat_timeout();
    let limit = rt.inner.args.max_message_bytes;
    let mut slow_close = false;
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(idle, stream.next()) => r,
            _ = slow.notified() => { slow_close = true; break; }
        };
        let msg = match next {
            Err(_) => {
                Metrics::inc(&m.heartbeat_timeouts);
                let _ = tx.try_send(close_frame(1000, "heartbeat timeout"));
                break;
            }
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(msg))) => msg,
        };
        let decoded = match msg {
            Message::Text(t) => {
                if t.len() > limit {
                    Metrics::inc(&m.oversized);
                    let _ = tx.try_send(close_frame(1009, "message too big"));
                    break;
                }
                protocol::decode_text(t.as_str())
            }
            Message::Binary(b) => {
                if b.len() > limit {
                    Metrics::inc(&m.oversized);
                    let _ = tx.try_send(close_frame(1009, "message too big"));
                    break;
                }
                protocol::decode_binary(&b)
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        Metrics::inc(&m.events_in);
        match decoded {
            Ok(inc) => conn.handle(inc).await,
            Err(e) => {
                // Nothing to answer to without a topic and ref: Phoenix ignores it too; say why.
                tracing::debug!(error = %e, "realtime: undecodable message");
                conn.send(protocol::encode(
                    vsn,
                    None,
                    None,
                    "phoenix",
                    "phx_error",
                    &json!({"reason": e.to_string()}),
                ));
            }
        }
    }
    if slow_close {
        Metrics::inc(&m.slow_disconnects);
        // The queue is full: the close frame cannot wait behind it.
        writer.abort();
    }
    let topics: Vec<String> = conn.channels.keys().cloned().collect();
    for t in topics {
        conn.leave(&t);
    }
    drop(conn);
    drop(tx);
    if !slow_close {
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }
    gauge(&m.connections, -1);
}

#[derive(Deserialize, Default)]
struct JoinPayload {
    #[serde(default)]
    config: JoinConfig,
    access_token: Option<String>,
}

#[derive(Deserialize, Default)]
struct JoinConfig {
    #[serde(default)]
    broadcast: BroadcastConfig,
    #[serde(default)]
    presence: PresenceConfig,
    #[serde(default)]
    postgres_changes: Vec<ChangeSpec>,
    #[serde(default)]
    private: bool,
}

#[derive(Deserialize, Default)]
struct BroadcastConfig {
    #[serde(default)]
    ack: bool,
    #[serde(default, rename = "self")]
    receive_own: bool,
}

#[derive(Deserialize, Default)]
struct PresenceConfig {
    #[serde(default)]
    key: Value,
    #[serde(default)]
    enabled: bool,
}

fn authn_reason(e: &AuthnError) -> String {
    match e {
        AuthnError::Expired => "Token has expired".into(),
        AuthnError::Invalid(m) => format!("Invalid token: {m}"),
        AuthnError::RoleNotAllowed(r) => format!("Invalid token: role \"{r}\" is not allowed"),
    }
}

impl Conn {
    fn send(&self, m: Message) -> bool {
        self.outbox.send(m, &self.rt.inner.metrics)
    }

    fn reply(&self, inc: &Incoming, status: &str, response: Value) {
        self.send(protocol::encode(
            self.outbox.vsn,
            inc.join_ref.as_deref(),
            inc.msg_ref.as_deref(),
            &inc.topic,
            "phx_reply",
            &json!({"status": status, "response": response}),
        ));
    }

    fn error(&self, inc: &Incoming, reason: impl Into<String>) {
        self.reply(inc, "error", json!({"reason": reason.into()}));
    }

    fn push(&self, join_ref: Option<&str>, topic: &str, event: &str, payload: &Value) {
        self.send(protocol::encode(
            self.outbox.vsn,
            join_ref,
            None,
            topic,
            event,
            payload,
        ));
    }

    async fn handle(&mut self, inc: Incoming) {
        if inc.topic == "phoenix" {
            if inc.event == "heartbeat" {
                self.reply(&inc, "ok", json!({}));
            } else {
                self.error(&inc, "unknown event");
            }
            return;
        }
        match inc.event.as_str() {
            "phx_join" => self.join(inc).await,
            "phx_leave" => {
                if self.channels.contains_key(&inc.topic) {
                    self.leave(&inc.topic);
                }
                self.reply(&inc, "ok", json!({}));
            }
            _ => {
                if !self.channels.contains_key(&inc.topic) {
                    // As Phoenix: a push to a topic this socket has not joined.
                    self.error(&inc, "unmatched topic");
                    return;
                }
                if !self.events.take() {
                    Metrics::inc(&self.rt.inner.metrics.rate_limited);
                    Metrics::inc(&self.rt.inner.metrics.dropped);
                    self.error(&inc, "Too many messages per second");
                    return;
                }
                if matches!(inc.event.as_str(), "broadcast" | "presence") {
                    let key = {
                        let ch = &self.channels[&inc.topic];
                        let caller = ch.caller.read().expect("caller");
                        tenant_key(&caller, self.ip)
                    };
                    if !self.rt.inner.tenants.take(&key) {
                        Metrics::inc(&self.rt.inner.metrics.rate_limited);
                        Metrics::inc(&self.rt.inner.metrics.dropped);
                        self.error(&inc, "Too many messages per second for this tenant");
                        return;
                    }
                }
                match inc.event.as_str() {
                    "broadcast" => self.broadcast(inc),
                    "presence" => self.presence(inc),
                    "access_token" => self.access_token(inc).await,
                    _ => self.error(&inc, format!("unknown event \"{}\"", inc.event)),
                }
            }
        }
    }

    fn refuse(&self, inc: &Incoming, reason: impl Into<String>) {
        Metrics::inc(&self.rt.inner.metrics.joins_refused);
        self.error(inc, reason);
    }

    async fn join(&mut self, inc: Incoming) {
        let Some(sub_topic) = inc.topic.strip_prefix("realtime:").map(str::to_string) else {
            return self.refuse(&inc, "unmatched topic");
        };
        if !self.joins.take() {
            Metrics::inc(&self.rt.inner.metrics.rate_limited);
            return self.refuse(&inc, "Too many joins per second");
        }
        let payload: JoinPayload = match &inc.payload {
            Value::Null => JoinPayload::default(),
            v => match serde_json::from_value(v.clone()) {
                Ok(p) => p,
                Err(e) => return self.refuse(&inc, format!("invalid join payload: {e}")),
            },
        };
        if !self.channels.contains_key(&inc.topic)
            && self.channels.len() >= self.rt.inner.args.max_channels
        {
            return self.refuse(
                &inc,
                format!(
                    "Too many channels: at most {} per connection",
                    self.rt.inner.args.max_channels
                ),
            );
        }
        let token = payload
            .access_token
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| self.apikey.clone());
        let caller = match caller_from_token(&self.rt.inner.keys, &self.rt.inner.roles, &token) {
            Ok(c) => c,
            Err(e) => return self.refuse(&inc, authn_reason(&e)),
        };
        let specs = payload.config.postgres_changes;
        for s in &specs {
            if let Err(e) = s.validate() {
                return self.refuse(&inc, e);
            }
        }
        let private = payload.config.private;
        let (mut can_write_broadcast, mut can_write_presence) = (true, true);
        if private {
            match authorize_private(&self.rt, &caller, &sub_topic).await {
                Ok(a) if a.read => {
                    can_write_broadcast = a.write_broadcast;
                    can_write_presence = a.write_presence;
                }
                Ok(_) => {
                    return self.refuse(
                        &inc,
                        format!("Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}"),
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "realtime: private channel authorisation failed");
                    return self.refuse(&inc, "Unable to authorize the channel");
                }
            }
        }
        // A second join of a joined topic replaces the first (as Phoenix does).
        if let Some(old) = self.channels.get(&inc.topic) {
            let old_ref = old.join_ref.clone();
            self.leave(&inc.topic);
            self.push(old_ref.as_deref(), &inc.topic, "phx_close", &json!({}));
        }
        let caller = Arc::new(RwLock::new(caller));
        let key = topic_key(&inc.topic, private);
        let presence_key = match &payload.config.presence.key {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let mut reply_changes = Vec::new();
        let mut change_ids = Vec::new();
        if !specs.is_empty() {
            if self.rt.inner.args.no_changes {
                return self.refuse(&inc, "postgres_changes are turned off on this server");
            }
            let subs = changes::subscribe(
                &self.rt,
                &specs,
                caller.clone(),
                self.outbox.clone(),
                self.id,
                &inc.topic,
            );
            for (id, spec) in subs {
                change_ids.push(id);
                reply_changes.push(spec.reply(id));
            }
        }
        self.rt.inner.hub.subscribe(
            &key,
            &inc.topic,
            self.id,
            self.outbox.clone(),
            payload.config.broadcast.receive_own,
        );
        gauge(&self.rt.inner.metrics.channels, 1);
        self.channels.insert(
            inc.topic.clone(),
            Channel {
                join_ref: inc.join_ref.clone(),
                key: key.clone(),
                sub_topic,
                private,
                ack: payload.config.broadcast.ack,
                presence_key,
                caller,
                can_write_broadcast,
                can_write_presence,
                change_ids: change_ids.clone(),
            },
        );
        self.reply(&inc, "ok", json!({"postgres_changes": reply_changes}));
        if payload.config.presence.enabled {
            let state = self.rt.inner.hub.presence_state(&key);
            self.push(
                inc.join_ref.as_deref(),
                &inc.topic,
                "presence_state",
                &state,
            );
        }
        if !change_ids.is_empty() {
            // "Subscribed to PostgreSQL" once capture covers the channel.
            let rt = self.rt.clone();
            let outbox = self.outbox.clone();
            let topic = inc.topic.clone();
            let join_ref = inc.join_ref.clone();
            tokio::spawn(async move {
                let (status, message) = match changes::ready(&rt).await {
                    Ok(()) => ("ok", "Subscribed to PostgreSQL".to_string()),
                    Err(e) => ("error", e),
                };
                outbox.send(
                    protocol::encode(
                        outbox.vsn,
                        join_ref.as_deref(),
                        None,
                        &topic,
                        "system",
                        &json!({"extension": "postgres_changes", "status": status, "message": message, "channel": topic.strip_prefix("realtime:").unwrap_or(&topic)}),
                    ),
                    &rt.inner.metrics,
                );
            });
        }
    }

    /// Leaves a channel: unsubscribes, removes its presence (the diff goes to the others).
    fn leave(&mut self, topic: &str) {
        let Some(ch) = self.channels.remove(topic) else {
            return;
        };
        gauge(&self.rt.inner.metrics.channels, -1);
        changes::unsubscribe(&self.rt, &ch.change_ids);
        let diff = self.rt.inner.hub.unsubscribe(
            &ch.key,
            self.id,
            &self.rt.inner.node,
            &self.rt.inner.metrics,
        );
        if !diff.leaves.is_empty() {
            self.rt.inner.fanout.publish(
                json!({"k": "p", "t": topic, "p": ch.private, "o": self.id, "j": {}, "l": diff.leaves}),
                &self.rt.inner.metrics,
            );
        }
    }

    fn broadcast(&mut self, inc: Incoming) {
        let ch = &self.channels[&inc.topic];
        if ch.private && !ch.can_write_broadcast {
            self.error(
                &inc,
                "Unauthorized: You do not have permissions to write to this Channel topic",
            );
            return;
        }
        let (event, payload) = match &inc.binary {
            Some((event, payload)) => (event.clone(), payload.clone()),
            None => {
                let Some(event) = inc.payload.get("event").and_then(Value::as_str) else {
                    self.error(&inc, "broadcast needs {type, event, payload}");
                    return;
                };
                (
                    event.to_string(),
                    BroadcastPayload::Json(
                        inc.payload.get("payload").cloned().unwrap_or(json!({})),
                    ),
                )
            }
        };
        let (key, private, sub_topic, ack) =
            (ch.key.clone(), ch.private, ch.sub_topic.clone(), ch.ack);
        self.rt.inner.hub.broadcast(
            &key,
            &event,
            &payload,
            Some(self.id),
            &self.rt.inner.metrics,
        );
        self.rt.inner.fanout.publish(
            crate::fanout::broadcast_body(&sub_topic, private, &event, &payload),
            &self.rt.inner.metrics,
        );
        if ack {
            self.reply(&inc, "ok", json!({}));
        }
    }

    fn presence(&mut self, inc: Incoming) {
        let ch = &self.channels[&inc.topic];
        if ch.private && !ch.can_write_presence {
            self.error(
                &inc,
                "Unauthorized: You do not have permissions to track presence on this Channel topic",
            );
            return;
        }
        let owner = Owner {
            node: self.rt.inner.node.clone(),
            socket: self.id,
        };
        let (key, private, pkey) = (ch.key.clone(), ch.private, ch.presence_key.clone());
        let diff = match inc.payload.get("event").and_then(Value::as_str) {
            Some("track") => {
                let mut meta = match inc.payload.get("payload") {
                    Some(Value::Object(o)) => Value::Object(o.clone()),
                    _ => json!({}),
                };
                meta["phx_ref"] = json!(format!("{:x}-{}", self.id, self.rt.next_id()));
                self.rt
                    .inner
                    .hub
                    .track(&key, owner, &pkey, meta, &self.rt.inner.metrics)
            }
            Some("untrack") => self
                .rt
                .inner
                .hub
                .untrack(&key, &owner, &self.rt.inner.metrics),
            _ => {
                self.error(&inc, "presence needs event \"track\" or \"untrack\"");
                return;
            }
        };
        if !diff.is_empty() {
            self.rt.inner.fanout.publish(
                json!({"k": "p", "t": inc.topic, "p": private, "o": self.id, "j": diff.joins, "l": diff.leaves}),
                &self.rt.inner.metrics,
            );
        }
        self.reply(&inc, "ok", json!({}));
    }

    /// `access_token`: the new token is verified and the channel re-authorised; on failure a
    /// `system` error and the channel is closed.
    async fn access_token(&mut self, inc: Incoming) {
        let token = inc
            .payload
            .get("access_token")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let result = match caller_from_token(&self.rt.inner.keys, &self.rt.inner.roles, &token) {
            Err(e) => Err(authn_reason(&e)),
            Ok(caller) => {
                let ch = &self.channels[&inc.topic];
                if ch.private {
                    match authorize_private(&self.rt, &caller, &ch.sub_topic).await {
                        Ok(a) if a.read => Ok((caller, Some(a))),
                        Ok(_) => Err(format!("Unauthorized: You do not have permissions to read from this Channel topic: {}", ch.sub_topic)),
                        Err(_) => Err("Unable to authorize the channel".to_string()),
                    }
                } else {
                    Ok((caller, None))
                }
            }
        };
        match result {
            Ok((caller, auth)) => {
                let ch = self.channels.get_mut(&inc.topic).expect("joined");
                *ch.caller.write().expect("caller") = caller;
                if let Some(a) = auth {
                    ch.can_write_broadcast = a.write_broadcast;
                    ch.can_write_presence = a.write_presence;
                }
            }
            Err(message) => {
                let join_ref = self.channels[&inc.topic].join_ref.clone();
                let sub = inc
                    .topic
                    .strip_prefix("realtime:")
                    .unwrap_or(&inc.topic)
                    .to_string();
                self.push(
                    join_ref.as_deref(),
                    &inc.topic,
                    "system",
                    &json!({"extension": "system", "status": "error", "message": message, "channel": sub}),
                );
                self.leave(&inc.topic);
                self.push(join_ref.as_deref(), &inc.topic, "phx_close", &json!({}));
            }
        }
    }
}

/// What RLS on `realtime.messages` allows a caller on a private topic.
pub(crate) struct PrivateAccess {
    pub read: bool,
    pub write_broadcast: bool,
    pub write_presence: bool,
}

/// Probes `realtime.messages` as the caller, in a transaction that is rolled back: the probe
/// rows are written as the API login, then, as the caller's role with its claims, `select`
/// decides reading and `insert` (in a savepoint each) writing, as Supabase's policies expect.
pub(crate) async fn authorize_private(
    rt: &Realtime,
    caller: &Caller,
    sub_topic: &str,
) -> Result<PrivateAccess, agencyflow_db::DbError> {
    let mut client = rt.inner.db.client().await?;
    let tx = client.transaction().await?;
    tx.execute("select realtime.authorization_probe($1)", &[&sub_topic])
        .await?;
    tx.execute(
        "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
        &[&caller.role, &caller.claims.json],
    )
    .await?;
    let read: bool = tx
        .query_one(
            "select exists (select 1 from realtime.messages where topic = realtime.topic() and extension in ('broadcast', 'presence'))",
            &[],
        )
        .await?
        .get(0);
    let mut write = [false, false];
    for (i, ext) in ["broadcast", "presence"].into_iter().enumerate() {
        tx.batch_execute("savepoint w").await?;
        let ok = tx
            .execute(
                "insert into realtime.messages (topic, extension, event) values (realtime.topic(), $1, 'probe')",
                &[&ext],
            )
            .await
            .is_ok();
        tx.batch_execute("rollback to savepoint w").await?;
        write[i] = ok;
    }
    tx.rollback().await?;
    Ok(PrivateAccess {
        read,
        write_broadcast: write[0],
        write_presence: write[1],
    })
}
