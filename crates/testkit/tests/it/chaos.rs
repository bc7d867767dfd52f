//! External database outages: the server's connections (API and auth) go through a
//! fault-injecting proxy. In every fault, requests answer within the request deadline with a
//! 503/504 JSON error in their surface's shape, never hang; once the fault is gone the pools
//! recover without a restart.
use std::time::{Duration, Instant};

use agencyflow_testkit::chaos::{ChaosProxy, Mode};
use agencyflow_testkit::{TestApp, TestDb};
use serde_json::{json, Value};

const PASSWORD: &str = "chaos-secret";
/// `--request-timeout` of the servers under test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack on two shared cores on top of the deadline.
const MARGIN: Duration = Duration::from_secs(3);

struct Rig {
    t: TestDb,
    proxy: ChaosProxy,
    app: TestApp,
}

/// The login roles get a password (for TCP's SCRAM) once per process: roles are the
/// cluster's, and concurrent `ALTER ROLE`s of one role fail ("tuple concurrently updated").
/// Harmless to the other tests, which log in over the Unix socket without one.
static PASSWORDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

async fn rig() -> Rig {
    let t = TestDb::new().await;
    PASSWORDS
        .get_or_init(|| async {
            let admin = agencyflow_testkit::agencyflow_db::connect_one(
                &agencyflow_testkit::cluster_admin_url(),
            )
            .await
            .expect("connect to the test cluster");
            admin
                .batch_execute(&format!(
                    "alter role authenticator password '{PASSWORD}';
                     alter role supabase_auth_admin password '{PASSWORD}';"
                ))
                .await
                .expect("login passwords");
        })
        .await;
    let su = t.superuser().await;
    su.batch_execute(
        "create table public.chaos_items (id bigint generated always as identity primary key, note text);
         grant select, insert on public.chaos_items to anon;
         create function public.sleepy(s float8) returns int language sql as $$ select 1 from pg_sleep(s) $$;
         grant execute on function public.sleepy(float8) to anon;",
    )
    .await
    .expect("chaos fixtures");
    let proxy = ChaosProxy::start(TestDb::tcp_addr()).await;
    let api = t.tcp_url_via(proxy.addr(), "authenticator", PASSWORD);
    let auth = t.tcp_url_via(proxy.addr(), "supabase_auth_admin", PASSWORD);
    let timeout = REQUEST_TIMEOUT.as_secs().to_string();
    let app = t
        .spawn_app_on(
            &api,
            &[
                "--auth-database-url",
                &auth,
                "--request-timeout",
                &timeout,
                "--db-connect-timeout",
                "1",
                "--db-pool-acquisition-timeout",
                "2",
                "--db-pool",
                "2",
            ],
        )
        .await;
    Rig { t, proxy, app }
}

#[derive(Debug)]
struct Answer {
    what: &'static str,
    status: u16,
    body: Value,
    elapsed: Duration,
}

/// One read (the one-Sync pool), one write (the transaction pool) on /rest/v1, and one auth
/// call that reads the database.
async fn probe(app: &TestApp) -> Vec<Answer> {
    let mut out = Vec::new();
    let reqs: [(&'static str, reqwest::RequestBuilder); 3] = [
        (
            "rest read",
            app.http
                .get(app.url("/rest/v1/chaos_items?select=id&limit=1"))
                .header("apikey", &app.anon_key),
        ),
        (
            "rest write",
            app.http
                .post(app.url("/rest/v1/chaos_items"))
                .header("apikey", &app.anon_key)
                .header("Prefer", "return=minimal")
                .json(&json!({ "note": "x" })),
        ),
        (
            "auth sign-in",
            app.http
                .post(app.url("/auth/v1/token?grant_type=password"))
                .header("apikey", &app.anon_key)
                .json(&json!({ "email": "nobody@chaos.test", "password": "not-it-at-all" })),
        ),
    ];
    for (what, req) in reqs {
        let started = Instant::now();
        // The client's own bound only turns a hang into a clear failure.
        let r = req
            .timeout(REQUEST_TIMEOUT + MARGIN * 4)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        out.push(Answer {
            what,
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            elapsed: started.elapsed(),
        });
    }
    out
}

fn healthy(a: &Answer) -> bool {
    match a.what {
        "rest read" => a.status == 200,
        "rest write" => a.status == 201,
        // Unknown user: the database answered.
        _ => a.status == 400,
    }
}

async fn assert_recovers(app: &TestApp, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answers = probe(app).await;
        if answers.iter().all(healthy) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered 30 s after {after}: {answers:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every answer within the deadline, a 503/504 with a JSON error body.
fn assert_bounded_errors(answers: &[Answer], fault: &str) {
    for a in answers {
        assert!(
            a.elapsed < REQUEST_TIMEOUT + MARGIN,
            "{fault}: {} took {:?}: {a:?}",
            a.what,
            a.elapsed
        );
        assert!(
            a.status == 503 || a.status == 504,
            "{fault}: {} answered {}: {:?}",
            a.what,
            a.status,
            a.body
        );
        let code = match a.what {
            "auth sign-in" => &a.body["error_code"],
            _ => &a.body["code"],
        };
        assert!(
            code.is_string(),
            "{fault}: {}: error shape: {:?}",
            a.what,
            a.body
        );
    }
}

async fn terminate_app_connections(t: &TestDb) {
    let su = t.superuser().await;
    su.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()",
        &[],
    )
    .await
    .expect("terminating the app's connections");
}

async fn fault_then_recovery(mode: Mode, fresh_connections: bool) {
    let r = rig().await;
    assert_recovers(&r.app, "start").await;
    r.proxy.set_mode(mode);
    if fresh_connections {
        // The pools' open connections end: every request needs a new one.
        terminate_app_connections(&r.t).await;
    }
    let fault = format!("{mode:?}");
    // Twice: the second round finds the pools already holding the broken connections.
    for _ in 0..2 {
        assert_bounded_errors(&probe(&r.app).await, &fault);
    }
    r.proxy.set_mode(Mode::Pass);
    assert_recovers(&r.app, &fault).await;
}

#[tokio::test]
async fn chaos_new_connections_dropped() {
    fault_then_recovery(Mode::DropNew, true).await;
}

#[tokio::test]
async fn chaos_all_connections_reset() {
    fault_then_recovery(Mode::Reset, false).await;
}

#[tokio::test]
async fn chaos_blackholed_database() {
    fault_then_recovery(Mode::Blackhole, false).await;
}

#[tokio::test]
async fn chaos_connections_closed_midway() {
    fault_then_recovery(Mode::CloseAfter(64), false).await;
}

#[tokio::test]
async fn chaos_database_slower_than_the_deadline() {
    fault_then_recovery(
        Mode::Latency(REQUEST_TIMEOUT + Duration::from_millis(500)),
        false,
    )
    .await;
}

/// The open connections go silent for good while new ones work (a failover that moved the
/// database): after the requests stuck on the dead connections time out, the pools replace
/// them, with no change of the fault.
#[tokio::test]
async fn chaos_dead_connections_are_replaced() {
    let r = rig().await;
    assert_recovers(&r.app, "start").await;
    r.proxy.set_mode(Mode::Strand);
    let first = probe(&r.app).await;
    for a in &first {
        assert!(
            a.elapsed < REQUEST_TIMEOUT + MARGIN,
            "{} took {:?}: {a:?}",
            a.what,
            a.elapsed
        );
        assert!(healthy(a) || a.status == 503 || a.status == 504, "{a:?}");
    }
    assert_recovers(&r.app, "stranding the open connections").await;
    assert_eq!(
        r.proxy.mode(),
        Mode::Strand,
        "recovered with the fault still on"
    );
}

#[tokio::test]
async fn chaos_slow_database_within_the_deadline_still_serves() {
    let r = rig().await;
    assert_recovers(&r.app, "start").await;
    r.proxy.set_mode(Mode::Latency(Duration::from_millis(40)));
    for a in probe(&r.app).await {
        assert!(healthy(&a), "latency below the deadline: {a:?}");
        assert!(a.elapsed < REQUEST_TIMEOUT, "{a:?}");
    }
}

#[tokio::test]
async fn chaos_anon_statement_timeout_applies_over_an_external_url() {
    let r = rig().await;
    let started = Instant::now();
    let resp = r
        .app
        .http
        .post(r.app.url("/rest/v1/rpc/sleepy"))
        .header("apikey", &r.app.anon_key)
        .json(&json!({ "s": 1.5 }))
        .send()
        .await
        .expect("answer");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body, json!(1), "below anon's 3 s statement_timeout");
    assert!(started.elapsed() < REQUEST_TIMEOUT + MARGIN);
    // Over the statement_timeout (3 s) but the request deadline (2 s) answers first; with a
    // longer deadline the database cancels the statement itself.
    let app =
        r.t.spawn_app_on(
            &r.t.tcp_url_via(r.proxy.addr(), "authenticator", PASSWORD),
            &["--request-timeout", "20"],
        )
        .await;
    let started = Instant::now();
    let resp = app
        .http
        .post(app.url("/rest/v1/rpc/sleepy"))
        .header("apikey", &app.anon_key)
        .json(&json!({ "s": 10 }))
        .send()
        .await
        .expect("answer");
    let elapsed = started.elapsed();
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "57014", "anon's statement_timeout: {body}");
    assert!(
        elapsed >= Duration::from_millis(2900) && elapsed < Duration::from_secs(8),
        "cancelled at anon's 3 s: {elapsed:?}"
    );
    let started = Instant::now();
    let resp = r
        .app
        .http
        .post(r.app.url("/rest/v1/rpc/sleepy"))
        .header("apikey", &r.app.anon_key)
        .json(&json!({ "s": 10 }))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "PGRST003", "{body}");
    assert!(started.elapsed() < REQUEST_TIMEOUT + MARGIN);
}
