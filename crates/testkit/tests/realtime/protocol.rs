//! The Phoenix protocol's edges, broadcast, presence, limits, several processes.
use std::time::Duration;

use agencyflow_testkit::TestDb;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{app, eventually, metric, ws_url, Client};

#[tokio::test]
async fn a_connection_with_an_invalid_key_is_refused() {
    let (_db, app) = app().await;
    for key in ["nonsense", ""] {
        let err = tokio_tungstenite::connect_async(ws_url(&app, key, "2.0.0"))
            .await
            .expect_err("refused");
        match err {
            tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
            other => panic!("expected a 401, got {other:?}"),
        }
    }
    // A token signed with another secret is no key either.
    let forged = agencyflow_auth::JwtKeys::hs256(b"another-secret-another-secret-0123456789", None)
        .sign(&json!({"role": "anon"}))
        .unwrap();
    assert!(
        tokio_tungstenite::connect_async(ws_url(&app, &forged, "2.0.0"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn heartbeat_join_and_leave_on_both_serializers() {
    let (_db, app) = app().await;
    for vsn in ["2.0.0", "1.0.0"] {
        let mut c = Client::connect(&app, vsn).await;
        let r = c.push(None, "phoenix", "heartbeat", json!({})).await;
        assert_eq!(
            c.reply(&r).await,
            json!({"status": "ok", "response": {}}),
            "{vsn}"
        );
        let (join_ref, reply) = c.join("room", json!({}), None).await;
        assert_eq!(reply["status"], "ok", "{vsn}: {reply}");
        assert_eq!(reply["response"]["postgres_changes"], json!([]));
        let r = c
            .push(Some(&join_ref), "realtime:room", "phx_leave", json!({}))
            .await;
        assert_eq!(c.reply(&r).await["status"], "ok");
        // Left: a push is now to an unjoined topic.
        let r = c
            .push(
                Some(&join_ref),
                "realtime:room",
                "broadcast",
                json!({"type": "broadcast", "event": "e", "payload": {}}),
            )
            .await;
        let reply = c.reply(&r).await;
        assert_eq!(reply["status"], "error");
        assert_eq!(reply["response"]["reason"], "unmatched topic");
    }
}

#[tokio::test]
async fn bad_joins_get_a_clear_error_reply() {
    let (_db, app) = app().await;
    let mut c = Client::connect(&app, "2.0.0").await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("room", json!({"config": "nope"}), "invalid join payload"),
        (
            "room",
            json!({"config": {"postgres_changes": [{"event": "TRUNCATE", "schema": "public"}]}}),
            "invalid postgres_changes event",
        ),
        (
            "room",
            json!({"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "tasks", "filter": "status=like.x"}]}}),
            "invalid filter",
        ),
        (
            "room",
            json!({"config": {"postgres_changes": [{"event": "*"}]}}),
            "invalid join payload",
        ),
        (
            "room",
            json!({"config": {}, "access_token": "not-a-jwt"}),
            "Invalid token",
        ),
    ];
    for (name, payload, want) in cases {
        let r = c.make_ref();
        let text = json!([r, r, format!("realtime:{name}"), "phx_join", payload]).to_string();
        c.send_raw(Message::Text(text.into())).await;
        let reply = c.reply(&r).await;
        assert_eq!(reply["status"], "error", "{payload}");
        let reason = reply["response"]["reason"].as_str().unwrap_or("");
        assert!(reason.contains(want), "{payload}: {reason}");
    }
    // An expired token.
    let expired = app
        .keys
        .sign(&json!({"role": "authenticated", "sub": uuid::Uuid::new_v4(), "exp": 1000}))
        .unwrap();
    let (_, reply) = c.join("room", json!({}), Some(&expired)).await;
    assert_eq!(reply["response"]["reason"], "Token has expired");
    // A topic outside realtime:.
    let r = c.push(None, "rooms:lobby", "phx_join", json!({})).await;
    assert_eq!(c.reply(&r).await["response"]["reason"], "unmatched topic");
    // Undecodable text is answered, and the socket stays usable.
    c.send_raw(Message::Text("{not json".into())).await;
    let (_, _, topic, event, _) = c.recv().await.unwrap();
    assert_eq!((topic.as_str(), event.as_str()), ("phoenix", "phx_error"));
    let r = c.push(None, "phoenix", "heartbeat", json!({})).await;
    assert_eq!(c.reply(&r).await["status"], "ok");
}

#[tokio::test]
async fn an_idle_socket_is_closed_after_its_heartbeat_timeout() {
    let db = TestDb::new().await;
    let app = db
        .spawn_app_with(&["--realtime-heartbeat-timeout", "0.5"])
        .await;
    let mut c = Client::connect(&app, "2.0.0").await;
    // Heartbeats keep it open past the timeout...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = c.push(None, "phoenix", "heartbeat", json!({})).await;
        assert_eq!(c.reply(&r).await["status"], "ok");
    }
    // ...silence closes it.
    let mut closed = None;
    while let Some(m) = futures::StreamExt::next(&mut c.ws).await {
        if let Ok(Message::Close(f)) = m {
            closed = f;
            break;
        }
    }
    let f = closed.expect("a close frame");
    assert_eq!(f.reason.as_str(), "heartbeat timeout");
    assert!(metric(&app, "heartbeat_timeouts_total").await >= 1.0);
}

#[tokio::test]
async fn an_oversized_message_closes_the_socket_with_1009() {
    let db = TestDb::new().await;
    let app = db
        .spawn_app_with(&["--realtime-max-message-bytes", "2000"])
        .await;
    let mut c = Client::connect(&app, "2.0.0").await;
    let (join_ref, _) = c.join("room", json!({}), None).await;
    // Under the limit: fine.
    c.push(
        Some(&join_ref),
        "realtime:room",
        "broadcast",
        json!({"type": "broadcast", "event": "e", "payload": {"x": "y".repeat(1000)}}),
    )
    .await;
    let r = c.push(None, "phoenix", "heartbeat", json!({})).await;
    assert_eq!(c.reply(&r).await["status"], "ok");
    c.push(
        Some(&join_ref),
        "realtime:room",
        "broadcast",
        json!({"type": "broadcast", "event": "e", "payload": {"x": "y".repeat(3000)}}),
    )
    .await;
    let mut code = None;
    while let Some(m) = futures::StreamExt::next(&mut c.ws).await {
        if let Ok(Message::Close(Some(f))) = m {
            code = Some(u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1009));
    assert!(metric(&app, "oversized_messages_total").await >= 1.0);
}

/// realtime-js's kind-3 binary push.
fn binary_push(
    join_ref: &str,
    r: &str,
    topic: &str,
    event: &str,
    enc: u8,
    payload: &[u8],
) -> Message {
    let mut f = vec![
        3u8,
        join_ref.len() as u8,
        r.len() as u8,
        topic.len() as u8,
        event.len() as u8,
        0,
        enc,
    ];
    for s in [join_ref, r, topic, event] {
        f.extend_from_slice(s.as_bytes());
    }
    f.extend_from_slice(payload);
    Message::Binary(f.into())
}

#[tokio::test]
async fn broadcast_self_ack_and_binary_frames_across_serializers() {
    let (_db, app) = app().await;
    let mut a = Client::connect(&app, "2.0.0").await;
    let mut b = Client::connect(&app, "1.0.0").await;
    let mut quiet = Client::connect(&app, "2.0.0").await;
    let (a_ref, _) = a
        .join(
            "room",
            json!({"broadcast": {"self": true, "ack": true}}),
            None,
        )
        .await;
    b.join("room", json!({}), None).await;
    let (q_ref, _) = quiet
        .join("room", json!({"broadcast": {"self": false}}), None)
        .await;

    // A JSON-encoded binary push from a (self + ack).
    a.send_raw(binary_push(
        &a_ref,
        "77",
        "realtime:room",
        "cursor",
        1,
        br#"{"x":1}"#,
    ))
    .await;
    let (_, _, topic, event, payload) = a.expect_event("broadcast").await;
    assert_eq!(
        (topic.as_str(), event.as_str()),
        ("realtime:room", "broadcast")
    );
    assert_eq!(
        payload,
        json!({"type": "broadcast", "event": "cursor", "payload": {"x": 1}})
    );
    assert_eq!(a.reply("77").await["status"], "ok", "ack");
    // b on 1.0.0 gets it as a JSON object.
    let (_, _, _, _, payload) = b.expect_event("broadcast").await;
    assert_eq!(
        payload,
        json!({"type": "broadcast", "event": "cursor", "payload": {"x": 1}})
    );
    // A JSON push from quiet (self: false): the others get it, quiet does not.
    quiet
        .push(
            Some(&q_ref),
            "realtime:room",
            "broadcast",
            json!({"type": "broadcast", "event": "hi", "payload": {"n": 2}}),
        )
        .await;
    let (_, _, _, _, payload) = b.expect_event("broadcast").await;
    assert_eq!(payload["event"], "hi");
    let (_, _, _, _, payload) = a.expect_event("broadcast").await;
    assert_eq!(payload["payload"], json!({"n": 2}));
    // Raw bytes: kind 4 with encoding 0 to 2.0.0 sockets; 1.0.0 cannot carry them.
    a.send_raw(binary_push(
        &a_ref,
        "78",
        "realtime:room",
        "blob",
        0,
        &[0, 1, 2, 255],
    ))
    .await;
    let (_, _, _, _, payload) = a.expect_event("broadcast").await;
    assert_eq!(payload["payload"], json!({"bytes": [0, 1, 2, 255]}));
    assert_eq!(a.reply("78").await["status"], "ok");
    // quiet got a's broadcasts but not its own.
    let r = quiet.push(None, "phoenix", "heartbeat", json!({})).await;
    let mut seen = Vec::new();
    loop {
        let (_, got_ref, _, event, payload) = quiet.recv().await.unwrap();
        if got_ref == json!(r) {
            break;
        }
        assert_eq!(event, "broadcast");
        seen.push(payload["event"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["cursor", "blob"]);
}

#[tokio::test]
async fn http_broadcast_batch_and_single_event_reach_subscribers() {
    let (_db, app) = app().await;
    let mut c = Client::connect(&app, "2.0.0").await;
    c.join("news", json!({}), None).await;
    let resp = app
        .http
        .post(app.url("/realtime/v1/api/broadcast"))
        .header("apikey", &app.anon_key)
        .json(&json!({"messages": [{"topic": "news", "event": "flash", "payload": {"n": 1}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let (_, _, _, _, p) = c.expect_event("broadcast").await;
    assert_eq!(
        p,
        json!({"type": "broadcast", "event": "flash", "payload": {"n": 1}})
    );
    let resp = app
        .http
        .post(app.url("/realtime/v1/api/broadcast/news/events/bytes"))
        .header("apikey", &app.anon_key)
        .header("content-type", "application/octet-stream")
        .body(vec![9u8, 8])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let (_, _, _, _, p) = c.expect_event("broadcast").await;
    assert_eq!(p["event"], "bytes");
    assert_eq!(p["payload"], json!({"bytes": [9, 8]}));
    // Without a key: the gateway refuses.
    let resp = app
        .http
        .post(app.url("/realtime/v1/api/broadcast"))
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A private topic without a policy allowing it: refused.
    let resp = app
        .http
        .post(app.url("/realtime/v1/api/broadcast"))
        .header("apikey", &app.anon_key)
        .json(
            &json!({"messages": [{"topic": "news", "event": "x", "payload": {}, "private": true}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn presence_state_diffs_and_cleanup_when_a_socket_drops() {
    let (_db, app) = app().await;
    let mut a = Client::connect(&app, "2.0.0").await;
    let (a_ref, _) = a
        .join(
            "lobby",
            json!({"presence": {"key": "alice", "enabled": true}}),
            None,
        )
        .await;
    let (_, _, _, _, state) = a.expect_event("presence_state").await;
    assert_eq!(state, json!({}));
    let r = a
        .push(
            Some(&a_ref),
            "realtime:lobby",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"status": "online"}}),
        )
        .await;
    let (_, _, _, _, diff) = a.expect_event("presence_diff").await;
    assert_eq!(diff["joins"]["alice"]["metas"][0]["status"], "online");
    assert_eq!(a.reply(&r).await["status"], "ok");

    let mut b = Client::connect(&app, "1.0.0").await;
    b.join(
        "lobby",
        json!({"presence": {"key": "bob", "enabled": true}}),
        None,
    )
    .await;
    let (_, _, _, _, state) = b.expect_event("presence_state").await;
    assert_eq!(state["alice"]["metas"][0]["status"], "online");
    assert!(state["alice"]["metas"][0]["phx_ref"].is_string());

    // Re-tracking replaces: one leave and one join.
    a.push(
        Some(&a_ref),
        "realtime:lobby",
        "presence",
        json!({"type": "presence", "event": "track", "payload": {"status": "away"}}),
    )
    .await;
    let (_, _, _, _, diff) = b.expect_event("presence_diff").await;
    assert_eq!(diff["leaves"]["alice"]["metas"][0]["status"], "online");
    assert_eq!(diff["joins"]["alice"]["metas"][0]["status"], "away");

    // a's socket drops: b sees alice leave.
    drop(a);
    let (_, _, _, _, diff) = b.expect_event("presence_diff").await;
    assert_eq!(diff["leaves"]["alice"]["metas"][0]["status"], "away");
    assert_eq!(diff["joins"], json!({}));
    eventually("the connection gauge to drop", || async {
        metric(&app, "connections").await == 1.0
    })
    .await;
}

#[tokio::test]
async fn access_token_refresh_with_a_bad_token_closes_the_channel() {
    let (_db, app) = app().await;
    let user = uuid::Uuid::new_v4();
    let mut c = Client::connect(&app, "2.0.0").await;
    let (join_ref, reply) = c.join("room", json!({}), Some(&app.user_token(user))).await;
    assert_eq!(reply["status"], "ok");
    // A good token is taken silently.
    c.push(
        Some(&join_ref),
        "realtime:room",
        "access_token",
        json!({"access_token": app.user_token(user)}),
    )
    .await;
    c.push(
        Some(&join_ref),
        "realtime:room",
        "access_token",
        json!({"access_token": "garbage"}),
    )
    .await;
    let (jr, _, _, _, p) = c.expect_event("system").await;
    assert_eq!(jr, json!(join_ref));
    assert_eq!(p["status"], "error");
    assert_eq!(p["extension"], "system");
    assert_eq!(p["channel"], "room");
    assert!(p["message"].as_str().unwrap().contains("Invalid token"));
    let (jr, _, topic, _, _) = c.expect_event("phx_close").await;
    assert_eq!((jr, topic.as_str()), (json!(join_ref), "realtime:room"));
    // The channel is gone.
    let r = c
        .push(
            Some(&join_ref),
            "realtime:room",
            "broadcast",
            json!({"type": "broadcast", "event": "e", "payload": {}}),
        )
        .await;
    assert_eq!(c.reply(&r).await["response"]["reason"], "unmatched topic");
}

#[tokio::test]
async fn channel_and_event_limits() {
    let db = TestDb::new().await;
    let app = db
        .spawn_app_with(&[
            "--realtime-max-channels",
            "2",
            "--realtime-max-events-per-second",
            "3",
        ])
        .await;
    let mut c = Client::connect(&app, "2.0.0").await;
    let (r1, _) = c.join("one", json!({}), None).await;
    c.join("two", json!({}), None).await;
    let (_, reply) = c.join("three", json!({}), None).await;
    assert!(
        reply["response"]["reason"]
            .as_str()
            .unwrap()
            .contains("Too many channels"),
        "{reply}"
    );
    let mut errors = 0;
    for _ in 0..10 {
        let r = c
            .push(
                Some(&r1),
                "realtime:one",
                "presence",
                json!({"type": "presence", "event": "untrack"}),
            )
            .await;
        if c.reply(&r).await["status"] == "error" {
            errors += 1;
        }
    }
    assert!(errors >= 5, "{errors} refused");
    assert!(metric(&app, "rate_limited_total").await >= 5.0);
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_disconnected() {
    let db = TestDb::new().await;
    let app = db
        .spawn_app_with(&[
            "--realtime-socket-queue",
            "8",
            "--realtime-max-events-per-second",
            "100000",
        ])
        .await;
    let mut sender = Client::connect(&app, "2.0.0").await;
    let (s_ref, _) = sender.join("firehose", json!({}), None).await;
    let mut stuck = Client::connect(&app, "2.0.0").await;
    stuck.join("firehose", json!({}), None).await;
    // `stuck` never reads again; the sender pushes far more than socket buffers hold.
    let big = "z".repeat(60_000);
    let mut sent = 0;
    while metric(&app, "slow_consumer_disconnects_total").await < 1.0 {
        for _ in 0..20 {
            sender
                .push(
                    Some(&s_ref),
                    "realtime:firehose",
                    "broadcast",
                    json!({"type": "broadcast", "event": "e", "payload": {"b": big}}),
                )
                .await;
        }
        sent += 20;
        assert!(sent < 4000, "the stuck subscriber was never disconnected");
    }
    assert!(metric(&app, "dropped_total").await >= 1.0);
    drop(stuck);
    // The sender is unaffected.
    let r = sender.push(None, "phoenix", "heartbeat", json!({})).await;
    assert_eq!(sender.reply(&r).await["status"], "ok");
}

#[tokio::test]
async fn broadcast_and_presence_reach_another_process_on_the_same_database() {
    let db = TestDb::new().await;
    let one = db.spawn_app().await;
    let two = db.spawn_app().await;
    let mut a = Client::connect(&one, "2.0.0").await;
    let mut b = Client::connect(&two, "2.0.0").await;
    let (a_ref, _) = a
        .join(
            "shared",
            json!({"presence": {"key": "a", "enabled": true}}),
            None,
        )
        .await;
    b.join(
        "shared",
        json!({"presence": {"key": "b", "enabled": true}}),
        None,
    )
    .await;
    // The processes learn of each other (hello/alive) before fan-out starts: retry until b hears.
    let mut got = None;
    for i in 0..100 {
        a.push(
            Some(&a_ref),
            "realtime:shared",
            "broadcast",
            json!({"type": "broadcast", "event": "ping", "payload": {"i": i}}),
        )
        .await;
        let hb = b.push(None, "phoenix", "heartbeat", json!({})).await;
        loop {
            let m = b.recv().await.expect("b open");
            if m.3 == "broadcast" {
                got = Some(m.4);
                break;
            }
            if m.3 == "phx_reply" && m.1 == json!(hb) {
                break;
            }
        }
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = got.expect("a broadcast from the other process");
    assert_eq!(got["event"], "ping");
    // Presence tracked on one process shows on the other, and leaves when the socket drops.
    a.push(
        Some(&a_ref),
        "realtime:shared",
        "presence",
        json!({"type": "presence", "event": "track", "payload": {"on": "one"}}),
    )
    .await;
    let (_, _, _, _, diff) = b.expect_event("presence_diff").await;
    assert_eq!(diff["joins"]["a"]["metas"][0]["on"], "one");
    let mut c = Client::connect(&two, "1.0.0").await;
    c.join(
        "shared",
        json!({"presence": {"key": "c", "enabled": true}}),
        None,
    )
    .await;
    let (_, _, _, _, state) = c.expect_event("presence_state").await;
    assert_eq!(state["a"]["metas"][0]["on"], "one");
    drop(a);
    loop {
        let (_, _, _, _, diff) = b.expect_event("presence_diff").await;
        if diff["leaves"]["a"].is_object() {
            break;
        }
    }
}

#[tokio::test]
async fn a_tenants_event_limit_spans_its_sockets_and_http() {
    let db = TestDb::new().await;
    let app = db
        .spawn_app_with(&["--realtime-max-tenant-events-per-second", "2"])
        .await;
    let (alice, bob) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let token = app.user_token(alice);
    // Alice on two sockets: each under its own per-socket limit (100/s), together over
    // the tenant's 2/s.
    let mut socks = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(&app, "1.0.0").await;
        let (jr, reply) = c
            .join("room", json!({"broadcast": {"ack": true}}), Some(&token))
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
        socks.push((c, jr));
    }
    let mut refs = Vec::new();
    for (c, jr) in socks.iter_mut() {
        for _ in 0..10 {
            let r = c
                .push(
                    Some(jr.as_str()),
                    "realtime:room",
                    "broadcast",
                    json!({"type": "broadcast", "event": "e", "payload": {}}),
                )
                .await;
            refs.push(r);
        }
    }
    let mut refused = 0;
    for (i, (c, _)) in socks.iter_mut().enumerate() {
        for r in &refs[i * 10..(i + 1) * 10] {
            let reply = c.reply(r).await;
            if reply["status"] == "error" {
                assert_eq!(
                    reply["response"]["reason"],
                    "Too many messages per second for this tenant"
                );
                refused += 1;
            }
        }
    }
    assert!(refused >= 10, "{refused} of 20 refused");
    // Over HTTP the same tenant is refused with 429; another user is not.
    let send = |bearer: String| {
        app.http
            .post(app.url("/realtime/v1/api/broadcast/room/events/e"))
            .header("apikey", &app.anon_key)
            .header("authorization", format!("Bearer {bearer}"))
            .json(&json!({}))
            .send()
    };
    let mut too_many = 0;
    for _ in 0..10 {
        let resp = send(token.clone()).await.unwrap();
        if resp.status() == 429 {
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(
                body["error"],
                "Too many messages per second for this tenant"
            );
            too_many += 1;
        }
    }
    assert!(too_many >= 5, "{too_many} of 10 refused");
    assert_eq!(send(app.user_token(bob)).await.unwrap().status(), 202);
}
