//! /realtime/v1: the Phoenix protocol's edges, broadcast, presence, postgres_changes under
//! RLS, several processes on one database (docs/realtime.md). supabase-js end to end in
//! `e2e/realtime.test.js` (driven from `e2e_supabase_js`).
mod changes;
mod database;
mod protocol;

use std::time::{Duration, Instant};

use agencyflow_testkit::{TestApp, TestDb};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A websocket client speaking one serializer.
pub struct Client {
    pub ws: Ws,
    pub v2: bool,
    next_ref: u64,
}

pub fn ws_url(app: &TestApp, key: &str, vsn: &str) -> String {
    format!(
        "{}/realtime/v1/websocket?apikey={key}&vsn={vsn}",
        app.base.replace("http://", "ws://")
    )
}

impl Client {
    pub async fn connect(app: &TestApp, vsn: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url(app, &app.anon_key, vsn))
            .await
            .expect("connect");
        Client {
            ws,
            v2: vsn == "2.0.0",
            next_ref: 0,
        }
    }

    pub fn make_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Pushes a message; returns its ref.
    pub async fn push(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let r = self.make_ref();
        let text = if self.v2 {
            json!([join_ref, r, topic, event, payload]).to_string()
        } else {
            json!({"join_ref": join_ref, "ref": r, "topic": topic, "event": event, "payload": payload}).to_string()
        };
        self.send_raw(Message::Text(text.into())).await;
        r
    }

    /// The next decoded message: (join_ref, ref, topic, event, payload); binary kind-4
    /// broadcasts come back as event "broadcast" with `{type, event, payload}`.
    pub async fn recv(&mut self) -> Option<(Value, Value, String, String, Value)> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match m {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("json");
                    return Some(if let Value::Array(a) = v {
                        (
                            a[0].clone(),
                            a[1].clone(),
                            a[2].as_str().unwrap().into(),
                            a[3].as_str().unwrap().into(),
                            a[4].clone(),
                        )
                    } else {
                        (
                            v["join_ref"].clone(),
                            v["ref"].clone(),
                            v["topic"].as_str().unwrap().into(),
                            v["event"].as_str().unwrap().into(),
                            v["payload"].clone(),
                        )
                    });
                }
                Message::Binary(b) => {
                    assert_eq!(b[0], 4, "server binary frames are kind 4");
                    let (tl, el, ml, enc) = (b[1] as usize, b[2] as usize, b[3] as usize, b[4]);
                    let topic = String::from_utf8(b[5..5 + tl].to_vec()).unwrap();
                    let event = String::from_utf8(b[5 + tl..5 + tl + el].to_vec()).unwrap();
                    let body = &b[5 + tl + el + ml..];
                    let payload = if enc == 1 {
                        serde_json::from_slice(body).unwrap()
                    } else {
                        json!({"bytes": body.to_vec()})
                    };
                    return Some((
                        Value::Null,
                        Value::Null,
                        topic,
                        "broadcast".into(),
                        json!({"type": "broadcast", "event": event, "payload": payload}),
                    ));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Waits for a message whose event is `event` (others are skipped).
    pub async fn expect_event(&mut self, event: &str) -> (Value, Value, String, String, Value) {
        loop {
            let m = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("socket ended waiting for {event}"));
            if m.3 == event {
                return m;
            }
        }
    }

    /// Waits for the reply to `r`.
    pub async fn reply(&mut self, r: &str) -> Value {
        loop {
            let m = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("socket ended waiting for reply {r}"));
            if m.3 == "phx_reply" && m.1 == json!(r) {
                return m.4;
            }
        }
    }

    /// Joins `realtime:<name>` with `config` (and `access_token` when given); returns the
    /// join ref and the reply.
    pub async fn join(
        &mut self,
        name: &str,
        config: Value,
        token: Option<&str>,
    ) -> (String, Value) {
        let r = self.make_ref();
        let mut payload = json!({"config": config});
        if let Some(t) = token {
            payload["access_token"] = json!(t);
        }
        let topic = format!("realtime:{name}");
        let text = if self.v2 {
            json!([r, r, topic, "phx_join", payload]).to_string()
        } else {
            json!({"join_ref": r, "ref": r, "topic": topic, "event": "phx_join", "payload": payload}).to_string()
        };
        self.send_raw(Message::Text(text.into())).await;
        let reply = self.reply(&r).await;
        (r, reply)
    }
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The value of one realtime counter in `/metrics`.
pub async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app
        .http
        .get(app.url("/metrics"))
        .header("apikey", &app.service_role_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("agencyflow_realtime_{name} ")))
        .unwrap_or_else(|| panic!("metric {name} missing"))
        .trim()
        .parse()
        .unwrap()
}

pub async fn app() -> (TestDb, TestApp) {
    let db = TestDb::new().await;
    let app = db.spawn_app().await;
    (db, app)
}
