//! TOTP multi-factor authentication over HTTP, with codes computed here from the secret the
//! server returns (RFC 6238, written in the test): enroll, challenge, verify (±1 step, each
//! code once, wrong codes refused), `aal2` and `amr` in the access token and after a refresh,
//! unenroll, the admin API, limits, and an RLS policy that requires `aal2`.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agencyflow_testkit::{TestApp, TestDb};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::{
    assert_error, call, call_with, claims, email, refresh, signup, AutoconfirmApp, Res, PW,
};

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// RFC 4648 base32 (no padding), as authenticator apps read the secret.
fn base32(s: &str) -> Vec<u8> {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buf, mut bits, mut out) = (0u64, 0, Vec::new());
    for c in s.chars().filter(|c| *c != '=') {
        buf = (buf << 5) | alphabet.find(c).expect("base32") as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

/// RFC 6238 TOTP (HMAC-SHA1, 30 s, 6 digits) of `secret` at time step `step`.
fn totp(secret: &str, step: i64) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&base32(secret)).unwrap();
    mac.update(&(step as u64).to_be_bytes());
    let h = mac.finalize().into_bytes();
    let o = (h[19] & 0x0f) as usize;
    let n = u32::from_be_bytes([h[o] & 0x7f, h[o + 1], h[o + 2], h[o + 3]]);
    format!("{:06}", n % 1_000_000)
}

/// The current time step, once at least `margin` seconds of it remain (so that a sequence of
/// requests stays within one step): waits for the clock, never for the server.
async fn fresh_step(margin: i64) -> i64 {
    loop {
        let now = unix_now();
        if 30 - now.rem_euclid(30) >= margin {
            return now.div_euclid(30);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn enroll(app: &TestApp, at: &str, name: &str) -> Res {
    call(
        app,
        Method::POST,
        "/factors",
        Some(at),
        Some(json!({"factor_type": "totp", "friendly_name": name, "issuer": "Agency"})),
    )
    .await
}

async fn challenge(app: &TestApp, at: &str, factor: &str) -> String {
    let r = call(
        app,
        Method::POST,
        &format!("/factors/{factor}/challenge"),
        Some(at),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn verify(app: &TestApp, at: &str, factor: &str, challenge_id: &str, code: &str) -> Res {
    call(
        app,
        Method::POST,
        &format!("/factors/{factor}/verify"),
        Some(at),
        Some(json!({"challenge_id": challenge_id, "code": code})),
    )
    .await
}

async fn password_session(app: &TestApp, e: &str) -> Value {
    let r = call(
        app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test]
async fn auth_mfa_totp_verify_raises_the_session_to_aal2_and_each_code_works_once() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let e = email("mfa");
    let s = signup(&app, &e).await;
    let at = s["access_token"].as_str().unwrap().to_string();
    let c = claims(&at);
    assert_eq!(c["aal"], "aal1");
    assert_eq!(c["amr"][0]["method"], "password");
    // Another session, signed in with the password only.
    let other = password_session(&app, &e).await;

    let r = enroll(&app, &at, "Phone app").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let factor = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["type"], "totp");
    assert_eq!(r.body["friendly_name"], "Phone app");
    let secret = r.body["totp"]["secret"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 32);
    let uri = r.body["totp"]["uri"].as_str().unwrap();
    assert!(
        uri.starts_with(&format!("otpauth://totp/Agency:{e}?")),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("issuer=Agency") && uri.contains("period=30") && uri.contains("digits=6"));
    let qr = r.body["totp"]["qr_code"].as_str().unwrap();
    assert!(qr.starts_with("<svg") && qr.ends_with("</svg>"), "{qr}");
    // The factor is in the user, unverified; the name is taken.
    let me = call(&app, Method::GET, "/user", Some(&at), None).await;
    assert_eq!(me.body["factors"][0]["id"], factor.as_str());
    assert_eq!(me.body["factors"][0]["status"], "unverified");
    assert_eq!(me.body["factors"][0]["factor_type"], "totp");
    assert_error(
        &enroll(&app, &at, "Phone app").await,
        422,
        "mfa_factor_name_conflict",
    );

    let step = fresh_step(15).await;
    let ch = call(
        &app,
        Method::POST,
        &format!("/factors/{factor}/challenge"),
        Some(&at),
        None,
    )
    .await;
    assert_eq!(ch.status, 200, "{}", ch.body);
    assert_eq!(ch.body["type"], "totp");
    let expires = ch.body["expires_at"].as_i64().unwrap();
    assert!((expires - unix_now() - 300).abs() <= 5, "{}", ch.body);
    let ch = ch.body["id"].as_str().unwrap().to_string();
    // Wrong codes, and codes two steps away, are refused.
    let wrong = if totp(&secret, step) == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_error(
        &verify(&app, &at, &factor, &ch, wrong).await,
        422,
        "mfa_verification_failed",
    );
    assert_error(
        &verify(&app, &at, &factor, &ch, &totp(&secret, step - 2)).await,
        422,
        "mfa_verification_failed",
    );
    assert_error(
        &verify(&app, &at, &factor, &ch, &totp(&secret, step + 2)).await,
        422,
        "mfa_verification_failed",
    );
    assert_error(
        &verify(&app, &at, &factor, &ch, "").await,
        400,
        "validation_failed",
    );
    // The previous step's code (one step of skew) verifies: same session, aal2.
    let v = verify(&app, &at, &factor, &ch, &totp(&secret, step - 1)).await;
    assert_eq!(v.status, 200, "{}", v.body);
    let at2 = v.body["access_token"].as_str().unwrap().to_string();
    let c2 = claims(&at2);
    assert_eq!(c2["aal"], "aal2");
    assert_eq!(c2["session_id"], c["session_id"]);
    assert_eq!(c2["amr"][0]["method"], "totp");
    assert_eq!(c2["amr"][1]["method"], "password");
    assert!(
        c2["amr"][0]["timestamp"].as_i64().unwrap() >= c["amr"][0]["timestamp"].as_i64().unwrap()
    );
    assert_eq!(v.body["user"]["factors"][0]["status"], "verified");
    let rt2 = v.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt2, s["refresh_token"].as_str().unwrap());
    // The challenge is used; the same code on a new challenge is a replay; so is an older one.
    assert_error(
        &verify(&app, &at2, &factor, &ch, &totp(&secret, step)).await,
        422,
        "mfa_ip_address_mismatch",
    );
    let ch2 = challenge(&app, &at2, &factor).await;
    assert_error(
        &verify(&app, &at2, &factor, &ch2, &totp(&secret, step - 1)).await,
        422,
        "mfa_verification_failed",
    );
    // The current and the next step's codes are each good once.
    let v2 = verify(&app, &at2, &factor, &ch2, &totp(&secret, step)).await;
    assert_eq!(v2.status, 200, "{}", v2.body);
    let ch3 = challenge(&app, &at2, &factor).await;
    assert_error(
        &verify(&app, &at2, &factor, &ch3, &totp(&secret, step)).await,
        422,
        "mfa_verification_failed",
    );
    let v3 = verify(&app, &at2, &factor, &ch3, &totp(&secret, step + 1)).await;
    assert_eq!(v3.status, 200, "{}", v3.body);
    let (at3, rt3) = (
        v3.body["access_token"].as_str().unwrap().to_string(),
        v3.body["refresh_token"].as_str().unwrap().to_string(),
    );
    assert_eq!(claims(&at3)["amr"].as_array().unwrap().len(), 2);

    // aal2 and amr survive a refresh; the refresh tokens from before the factor are gone.
    let r = refresh(&app, &rt3).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rc = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(rc["aal"], "aal2");
    assert_eq!(rc["amr"][0]["method"], "totp");
    assert_eq!(rc["amr"][1]["method"], "password");
    assert_eq!(r.body["user"]["factors"][0]["id"], factor.as_str());
    let at_refreshed = r.body["access_token"].as_str().unwrap().to_string();
    let rt_refreshed = r.body["refresh_token"].as_str().unwrap().to_string();
    assert_error(
        &refresh(&app, s["refresh_token"].as_str().unwrap()).await,
        400,
        "refresh_token_not_found",
    );
    // The other aal1 session ended (GoTrue), and a new password sign-in is aal1.
    assert_error(
        &refresh(&app, other["refresh_token"].as_str().unwrap()).await,
        400,
        "refresh_token_not_found",
    );
    let weak = password_session(&app, &e).await;
    let weak_at = weak["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims(&weak_at)["aal"], "aal1");
    // An aal1 session can neither add a factor nor remove a verified one.
    assert_error(
        &enroll(&app, &weak_at, "Second").await,
        403,
        "insufficient_aal",
    );
    let r = call(
        &app,
        Method::DELETE,
        &format!("/factors/{factor}"),
        Some(&weak_at),
        None,
    )
    .await;
    assert_error(&r, 422, "insufficient_aal");
    // A code already used in one session is refused in another.
    let chw = challenge(&app, &weak_at, &factor).await;
    let r = verify(&app, &weak_at, &factor, &chw, &totp(&secret, step + 1)).await;
    assert_error(&r, 422, "mfa_verification_failed");
    // The aal2 session unenrolls; its next token is aal1 again.
    let r = call(
        &app,
        Method::DELETE,
        &format!("/factors/{factor}"),
        Some(&at_refreshed),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"id": factor}));
    let r = refresh(&app, &rt_refreshed).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rc = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(rc["aal"], "aal1");
    assert_eq!(rc["amr"].as_array().unwrap().len(), 1, "{rc}");
    assert_eq!(rc["amr"][0]["method"], "password");
    assert!(r.body["user"].get("factors").is_none(), "{}", r.body);
}

#[tokio::test]
async fn auth_mfa_limits_errors_and_admin_factors() {
    let t = TestDb::new().await;
    let app = t
        .spawn_autoconfirm_app_with(&[
            "--mfa-max-enrolled-factors",
            "2",
            "--mfa-rate-limit-challenge-and-verify",
            "6",
            "--rate-limit-header",
            "X-Forwarded-For",
        ])
        .await;
    let e = email("mfa-limits");
    let s = signup(&app, &e).await;
    let at = s["access_token"].as_str().unwrap().to_string();
    let user_id = s["user"]["id"].as_str().unwrap().to_string();
    // Factor types and shapes.
    for (body, status, code) in [
        (
            json!({"factor_type": "phone", "phone": "+15550100"}),
            422,
            "mfa_phone_enroll_not_enabled",
        ),
        (
            json!({"factor_type": "webauthn"}),
            422,
            "mfa_web_authn_enroll_not_enabled",
        ),
        (json!({"factor_type": "sms"}), 400, "validation_failed"),
    ] {
        let r = call(&app, Method::POST, "/factors", Some(&at), Some(body)).await;
        assert_error(&r, status, code);
    }
    let r = call(
        &app,
        Method::POST,
        "/factors",
        None,
        Some(json!({"factor_type": "totp"})),
    )
    .await;
    assert_error(&r, 401, "no_authorization");
    // At most two factors.
    let f1 = enroll(&app, &at, "one").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let f2 = enroll(&app, &at, "two").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_error(
        &enroll(&app, &at, "three").await,
        422,
        "too_many_enrolled_mfa_factors",
    );
    // Another user's factor does not exist for this one.
    let stranger = signup(&app, &email("stranger")).await;
    let sat = stranger["access_token"].as_str().unwrap();
    let r = call(
        &app,
        Method::POST,
        &format!("/factors/{f1}/challenge"),
        Some(sat),
        None,
    )
    .await;
    assert_error(&r, 404, "mfa_factor_not_found");
    let r = call(
        &app,
        Method::POST,
        "/factors/not-a-uuid/challenge",
        Some(&at),
        None,
    )
    .await;
    assert_error(&r, 400, "validation_failed");
    // The code must come from where the challenge was asked.
    let from = |ip: &'static str| {
        [
            ("x-supabase-api-version", "2024-01-01"),
            ("x-forwarded-for", ip),
        ]
    };
    let ch = call_with(
        &app,
        Method::POST,
        &format!("/factors/{f1}/challenge"),
        Some(&at),
        None,
        &from("10.0.0.1"),
    )
    .await;
    assert_eq!(ch.status, 200, "{}", ch.body);
    let ch = ch.body["id"].as_str().unwrap().to_string();
    let r = call_with(
        &app,
        Method::POST,
        &format!("/factors/{f1}/verify"),
        Some(&at),
        Some(json!({"challenge_id": ch, "code": "123456"})),
        &from("10.0.0.2"),
    )
    .await;
    assert_error(&r, 422, "mfa_ip_address_mismatch");
    let r = call_with(
        &app,
        Method::POST,
        &format!("/factors/{f1}/verify"),
        Some(&at),
        Some(json!({"challenge_id": uuid::Uuid::new_v4(), "code": "123456"})),
        &from("10.0.0.1"),
    )
    .await;
    assert_error(&r, 422, "mfa_factor_not_found");
    // An expired challenge.
    t.superuser()
        .await
        .execute("update auth.mfa_challenges set created_at = now() - interval '10 minutes' where id = $1::text::uuid", &[&ch])
        .await
        .unwrap();
    let r = call_with(
        &app,
        Method::POST,
        &format!("/factors/{f1}/verify"),
        Some(&at),
        Some(json!({"challenge_id": ch, "code": "123456"})),
        &from("10.0.0.1"),
    )
    .await;
    assert_error(&r, 422, "mfa_challenge_expired");
    // Guessing is limited per factor, from any number of addresses: six verifications a
    // minute (three were made above), then 429.
    let ch = call_with(
        &app,
        Method::POST,
        &format!("/factors/{f1}/challenge"),
        Some(&at),
        None,
        &from("10.0.1.1"),
    )
    .await;
    let ch = ch.body["id"].as_str().unwrap().to_string();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let ip: &'static str = Box::leak(format!("10.0.2.{i}").into_boxed_str());
        let r = call_with(
            &app,
            Method::POST,
            &format!("/factors/{f1}/verify"),
            Some(&at),
            Some(json!({"challenge_id": ch, "code": "000000"})),
            &from(ip),
        )
        .await;
        statuses.push(r.status.as_u16());
        if r.status == 429 {
            assert_error(&r, 429, "over_request_rate_limit");
        }
    }
    assert_eq!(
        statuses,
        vec![422, 422, 422, 429, 429],
        "per-factor verify limit"
    );

    // Admin: list and delete factors.
    let admin = app.service_role_key.clone();
    let r = call(
        &app,
        Method::GET,
        &format!("/admin/users/{user_id}/factors"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ids: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![f1.as_str(), f2.as_str()]);
    assert_eq!(r.body[0]["friendly_name"], "one");
    assert_eq!(r.body[0]["factor_type"], "totp");
    assert!(r.body[0]["created_at"].is_string());
    let r = call(
        &app,
        Method::GET,
        &format!("/admin/users/{user_id}/factors"),
        Some(&at),
        None,
    )
    .await;
    assert_error(&r, 403, "not_admin");
    let r = call(
        &app,
        Method::DELETE,
        &format!("/admin/users/{user_id}/factors/{f2}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], f2.as_str());
    assert_eq!(r.body["friendly_name"], "two");
    let r = call(
        &app,
        Method::DELETE,
        &format!("/admin/users/{user_id}/factors/{f2}"),
        Some(&admin),
        None,
    )
    .await;
    assert_error(&r, 404, "mfa_factor_not_found");
    let r = call(
        &app,
        Method::GET,
        &format!("/admin/users/{}/factors", uuid::Uuid::new_v4()),
        Some(&admin),
        None,
    )
    .await;
    assert_error(&r, 404, "user_not_found");
    let r = call(
        &app,
        Method::GET,
        &format!("/admin/users/{user_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.body["factors"].as_array().unwrap().len(), 1, "{}", r.body);
    // An unverified factor can be unenrolled from an aal1 session.
    let r = call(
        &app,
        Method::DELETE,
        &format!("/factors/{f1}"),
        Some(&at),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The docs' example: a policy that lets only `aal2` sessions read a table.
#[tokio::test]
async fn auth_mfa_rls_policy_can_require_aal2() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    t.superuser()
        .await
        .batch_execute(
            "create table public.mfa_vault (id int primary key, note text not null);
             alter table public.mfa_vault enable row level security;
             create policy mfa_vault_aal2 on public.mfa_vault as restrictive for select
               to authenticated using ((select auth.jwt()->>'aal') = 'aal2');
             create policy mfa_vault_read on public.mfa_vault for select to authenticated using (true);
             grant select on public.mfa_vault to authenticated;
             insert into public.mfa_vault values (1, 'only with a second factor');
             notify pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    let e = email("rls-aal2");
    let s = signup(&app, &e).await;
    let at = s["access_token"].as_str().unwrap().to_string();
    let rest = |token: String| {
        let app = &app;
        async move {
            let r = app
                .http
                .get(app.url("/rest/v1/mfa_vault?select=note"))
                .header("apikey", &app.anon_key)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // Poll until the schema cache has the table.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut aal1 = rest(at.clone()).await;
    while aal1.0 == 404 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        aal1 = rest(at.clone()).await;
    }
    assert_eq!(aal1, (200, json!([])), "aal1 sees nothing");
    let r = enroll(&app, &at, "").await;
    let factor = r.body["id"].as_str().unwrap().to_string();
    let secret = r.body["totp"]["secret"].as_str().unwrap().to_string();
    assert!(r.body.get("friendly_name").is_none(), "{}", r.body);
    let step = fresh_step(5).await;
    let ch = challenge(&app, &at, &factor).await;
    let v = verify(&app, &at, &factor, &ch, &totp(&secret, step)).await;
    assert_eq!(v.status, 200, "{}", v.body);
    let aal2 = rest(v.body["access_token"].as_str().unwrap().to_string()).await;
    assert_eq!(aal2, (200, json!([{"note": "only with a second factor"}])));
}

#[tokio::test]
async fn auth_mfa_supabase_js_e2e() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    app.run_node_test("mfa.test.js").await;
}
