//! TOTP verify throughput (issue #17's benchmark, `bench/auth.md`): `AUTH_BENCH_TOTP_FACTORS`
//! users, each with an enrolled TOTP factor, are verified by `AUTH_BENCH_CONCURRENCY` clients:
//! challenge, then verify with the code of the current step and then of the next one (each
//! code is accepted once per factor, and one step either side of now, so two fresh codes per
//! factor are valid whenever the run starts).
//! `cargo test --release -p agencyflow-testkit --test it auth_bench -- --ignored --nocapture --test-threads=1`
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use agencyflow_auth::mfa::{base32_decode, hotp, time_step};
use agencyflow_testkit::TestDb;
use reqwest::Method;
use serde_json::json;

use crate::auth::{call, email, signup, AutoconfirmApp};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn auth_bench_totp_verify() {
    let factors = env_or("AUTH_BENCH_TOTP_FACTORS", 300);
    let conc = env_or("AUTH_BENCH_CONCURRENCY", 16);
    let t = TestDb::new().await;
    let app = Arc::new(
        t.spawn_autoconfirm_app_with(&[
            "--rate-limit-sign-in-sign-ups",
            "0",
            "--rate-limit-email-sign-ins",
            "0",
            "--mfa-rate-limit-challenge-and-verify",
            "0",
        ])
        .await,
    );
    // Users with an enrolled (unverified) factor each; their first verify verifies it.
    let mut ready = Vec::new();
    for chunk in (0..factors).collect::<Vec<_>>().chunks(conc) {
        let mut set = Vec::new();
        for _ in chunk {
            let app = app.clone();
            set.push(tokio::spawn(async move {
                let s = signup(&app, &email("totpbench")).await;
                let at = s["access_token"].as_str().unwrap().to_string();
                let f = call(
                    &app,
                    Method::POST,
                    "/factors",
                    Some(&at),
                    Some(json!({"factor_type": "totp"})),
                )
                .await;
                assert_eq!(f.status, 200, "{}", f.body);
                let secret = base32_decode(f.body["totp"]["secret"].as_str().unwrap()).unwrap();
                (at, f.body["id"].as_str().unwrap().to_string(), secret)
            }));
        }
        for s in set {
            ready.push(s.await.unwrap());
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let step = time_step(now);
    let queue = Arc::new(Mutex::new(ready));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (queue, app) = (queue.clone(), app.clone());
        tasks.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            loop {
                let Some((at, factor, secret)) = queue.lock().unwrap().pop() else {
                    break;
                };
                for s in [step, step + 1] {
                    let c = call(
                        &app,
                        Method::POST,
                        &format!("/factors/{factor}/challenge"),
                        Some(&at),
                        None,
                    )
                    .await;
                    assert_eq!(c.status, 200, "{}", c.body);
                    let begun = Instant::now();
                    let v = call(
                        &app,
                        Method::POST,
                        &format!("/factors/{factor}/verify"),
                        Some(&at),
                        Some(
                            json!({"challenge_id": c.body["id"], "code": hotp(&secret, s as u64)}),
                        ),
                    )
                    .await;
                    assert_eq!(v.status, 200, "{}", v.body);
                    lats.push(begun.elapsed());
                }
            }
            lats
        }));
    }
    let mut lats = Vec::new();
    for t in tasks {
        lats.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    lats.sort();
    let n = lats.len();
    println!(
        "TOTP verify: {n} verifications in {elapsed:.2} s = {:.0}/s ({:.0} requests/s with their challenges) with {conc} concurrent clients over {factors} factors (verify p50 {:?}, p99 {:?})",
        n as f64 / elapsed,
        2.0 * n as f64 / elapsed,
        lats[n / 2],
        lats[n * 99 / 100]
    );
}
