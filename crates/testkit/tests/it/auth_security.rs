//! /auth/v1 under attack (security issue #14): guessing emailed codes and reauthentication
//! nonces, flooding /verify, bursts of password hashing, taking addresses nobody proved,
//! PKCE links without their verifier, forged forwarding headers, absurd ban durations, and
//! telling registered addresses from unknown ones.
use agencyflow_testkit::agencyflow_db::tokio_postgres::Client;
use agencyflow_testkit::{TestApp, TestDb};
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;
use uuid::Uuid;

use crate::auth::{
    assert_error, call, call_with, claims, email, generate_link, set_reauthentication_code, signup,
    AutoconfirmApp, Res, PW,
};

/// A request from client `ip` (the apps below trust `X-Forwarded-For`, as behind a proxy).
async fn call_from(app: &TestApp, ip: &str, method: Method, path: &str, body: Value) -> Res {
    call_with(
        app,
        method,
        path,
        None,
        Some(body),
        &[
            ("x-supabase-api-version", "2024-01-01"),
            ("x-forwarded-for", ip),
        ],
    )
    .await
}

/// A code other than `code` (the `i`th of them).
fn wrong_code(code: &str, i: u32) -> String {
    let c: u32 = code.parse().unwrap();
    format!("{:06}", (c + 1 + i) % 1_000_000)
}

async fn admin_user(app: &TestApp, addr: &str) -> Uuid {
    let r = call(
        app,
        Method::POST,
        "/admin/users",
        Some(&app.service_role_key.clone()),
        Some(json!({"email": addr, "password": PW, "email_confirm": true})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["id"].as_str().unwrap().parse().unwrap()
}

async fn tokens_of(su: &Client, user: Uuid, kind: &str) -> i64 {
    su.query_one(
        "select count(*) from auth.one_time_tokens where user_id = $1 and token_type = $2",
        &[&user, &kind],
    )
    .await
    .unwrap()
    .get(0)
}

/// Makes the user's live `kind` token the code `code` sent to `to`: what they would read in
/// the email (there is no mailer to read it from).
async fn set_code(app: &TestApp, su: &Client, user: Uuid, kind: &str, to: &str, code: &str) {
    let hash = agencyflow_auth::email_otp_hash(&app.keys, to, code);
    let n = su
        .execute(
            "update auth.one_time_tokens set token_hash = $3 where user_id = $1 and token_type = $2",
            &[&user, &kind, &hash],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "a {kind} token was issued");
}

/// Every kind of emailed code dies after 5 wrong guesses, even when each guess comes from
/// another IP: the right code then fails too, and so does the token's link.
#[tokio::test]
async fn auth_attack_guessing_email_code_invalidates_token_after_5_failures() {
    let t = TestDb::new().await;
    let app = t
        .spawn_app_with(&["--rate-limit-header", "X-Forwarded-For"])
        .await;
    let su = t.superuser().await;
    let victim = email("victim");
    let victim_id = admin_user(&app, &victim).await;
    let mut ip = 0u32;
    let mut next_ip = || {
        ip += 1;
        format!("10.{}.{}.{}", ip / 65536, (ip / 256) % 256, ip % 256)
    };

    // Four wrong codes are forgiven: the right one still signs in.
    let link = generate_link(&app, json!({"type": "magiclink", "email": victim})).await;
    let code = link.body["email_otp"].as_str().unwrap().to_string();
    for i in 0..4 {
        let r = call_from(
            &app,
            &next_ip(),
            Method::POST,
            "/verify",
            json!({"type": "email", "email": victim, "token": wrong_code(&code, i)}),
        )
        .await;
        assert_error(&r, 403, "otp_expired");
    }
    let ok = call_from(
        &app,
        &next_ip(),
        Method::POST,
        "/verify",
        json!({"type": "email", "email": victim, "token": code}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    // Each kind of code: five wrong guesses from five IPs withdraw the token.
    let new_addr = email("takeover-target");
    let signup_addr = email("signup-target");
    let invite_addr = email("invite-target");
    let kinds: Vec<(&str, Value, String, &str)> = vec![
        (
            "email",
            json!({"type": "magiclink", "email": victim}),
            victim.clone(),
            "magiclink",
        ),
        (
            "recovery",
            json!({"type": "recovery", "email": victim}),
            victim.clone(),
            "recovery",
        ),
        (
            "signup",
            json!({"type": "signup", "email": signup_addr, "password": PW}),
            signup_addr.clone(),
            "signup",
        ),
        (
            "invite",
            json!({"type": "invite", "email": invite_addr}),
            invite_addr.clone(),
            "invite",
        ),
        (
            "email_change",
            json!({"type": "email_change_new", "email": victim, "new_email": new_addr}),
            new_addr.clone(),
            "email_change",
        ),
    ];
    for (verify_type, link_body, addr, token_type) in kinds {
        let link = generate_link(&app, link_body).await;
        assert_eq!(link.status, 200, "{verify_type}: {}", link.body);
        let owner: Uuid = link.body["id"].as_str().unwrap().parse().unwrap();
        let code = link.body["email_otp"].as_str().unwrap().to_string();
        let hashed = link.body["hashed_token"].as_str().unwrap().to_string();
        for i in 0..5 {
            let r = call_from(
                &app,
                &next_ip(),
                Method::POST,
                "/verify",
                json!({"type": verify_type, "email": addr, "token": wrong_code(&code, i)}),
            )
            .await;
            assert_error(&r, 403, "otp_expired");
        }
        assert_eq!(
            tokens_of(&su, owner, token_type).await,
            0,
            "{verify_type}: the token is withdrawn after 5 wrong codes"
        );
        let right = call_from(
            &app,
            &next_ip(),
            Method::POST,
            "/verify",
            json!({"type": verify_type, "email": addr, "token": code}),
        )
        .await;
        assert_error(&right, 403, "otp_expired");
        let by_link = call_from(
            &app,
            &next_ip(),
            Method::POST,
            "/verify",
            json!({"type": verify_type, "token_hash": hashed}),
        )
        .await;
        assert_error(&by_link, 403, "otp_expired");
    }
    // Nothing was taken over: the victim's address is theirs, the others unconfirmed.
    let row = su
        .query_one(
            "select email, email_change from auth.users where id = $1",
            &[&victim_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), Some(victim.clone()));
    let confirmed: i64 = su
        .query_one(
            "select count(*) from auth.users where email = any($1) and email_confirmed_at is not null",
            &[&vec![signup_addr, invite_addr]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(confirmed, 0);
}

/// GoTrue's link token is sha224(email + code): anyone can compute the million links of an
/// address and click through them. Here links are keyed by the project secret.
#[tokio::test]
async fn auth_attack_link_token_cannot_be_computed_from_address_and_code() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let victim = email("victim");
    admin_user(&app, &victim).await;
    let link = generate_link(&app, json!({"type": "magiclink", "email": victim})).await;
    let code = link.body["email_otp"].as_str().unwrap();
    let computed = hex::encode(sha2::Sha224::digest(format!("{victim}{code}").as_bytes()));
    assert_ne!(link.body["hashed_token"], computed.as_str());
    let get = app
        .http
        .get(app.url(&format!("/auth/v1/verify?type=magiclink&token={computed}")))
        .header("apikey", &app.anon_key)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 403);
    let post = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "magiclink", "token_hash": computed})),
    )
    .await;
    assert_error(&post, 403, "otp_expired");
    // The real link still works.
    let ok = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "magiclink", "token_hash": link.body["hashed_token"]})),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// Link clicks (GET) and codes (POST) share a per-IP limit; a code's address has its own,
/// whatever IP the guesses come from.
#[tokio::test]
async fn auth_attack_flooding_verify_gets_429_per_ip_and_per_target() {
    let t = TestDb::new().await;
    let app = t.spawn_app_with(&["--rate-limit-verify", "5"]).await;
    for i in 0..5 {
        let r = app
            .http
            .get(app.url(&format!("/auth/v1/verify?type=magiclink&token={:056x}", i)))
            .header("apikey", &app.anon_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "guess {i}");
    }
    let r = app
        .http
        .get(app.url("/auth/v1/verify?type=magiclink&token=00ff"))
        .header("apikey", &app.anon_key)
        .header("x-supabase-api-version", "2024-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "over_request_rate_limit", "{b}");
    let post = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "email", "email": email("x"), "token": "123456"})),
    )
    .await;
    assert_error(&post, 429, "over_request_rate_limit");

    // Per target: one address, a new IP for every guess.
    let t2 = TestDb::new().await;
    let app = t2
        .spawn_app_with(&[
            "--rate-limit-verify",
            "3",
            "--rate-limit-header",
            "X-Forwarded-For",
        ])
        .await;
    let victim = email("victim");
    for i in 0..4 {
        let r = call_from(
            &app,
            &format!("10.2.0.{i}"),
            Method::POST,
            "/verify",
            json!({"type": "email", "email": victim, "token": format!("{i:06}")}),
        )
        .await;
        if i < 3 {
            assert_error(&r, 403, "otp_expired");
        } else {
            assert_error(&r, 429, "over_request_rate_limit");
        }
    }
}

/// The reauthentication nonce of `PUT /user` is a 6-digit code too: 5 wrong ones withdraw it.
#[tokio::test]
async fn auth_attack_guessing_reauthentication_nonce_invalidates_it_after_5_failures() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let su = t.superuser().await;
    let addr = email("reauth");
    let s = signup(&app, &addr).await;
    let at = s["access_token"].as_str().unwrap().to_string();
    let id: Uuid = s["user"]["id"].as_str().unwrap().parse().unwrap();
    let r = call(&app, Method::GET, "/reauthenticate", Some(&at), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    set_reauthentication_code(&app, &su, id, &addr, "424242").await;
    for i in 0..5 {
        let r = call(
            &app,
            Method::PUT,
            "/user",
            Some(&at),
            Some(json!({"password": "stolen-session-password", "nonce": wrong_code("424242", i)})),
        )
        .await;
        assert_error(&r, 422, "reauthentication_not_valid");
    }
    assert_eq!(tokens_of(&su, id, "reauthentication").await, 0);
    let r = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at),
        Some(json!({"password": "stolen-session-password", "nonce": "424242"})),
    )
    .await;
    assert_error(&r, 422, "reauthentication_not_valid");
    // The password is unchanged.
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": addr, "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Every password change runs argon2id (19 MiB): a burst is refused per user and per IP.
#[tokio::test]
async fn auth_attack_password_change_burst_gets_429_per_user_and_per_ip() {
    let t = TestDb::new().await;
    let app = t
        .spawn_autoconfirm_app_with(&[
            "--rate-limit-user-updates",
            "3",
            "--rate-limit-user-updates-per-ip",
            "4",
        ])
        .await;
    let a = signup(&app, &email("burst-a")).await;
    let at_a = a["access_token"].as_str().unwrap().to_string();
    for i in 0..4 {
        let r = call(
            &app,
            Method::PUT,
            "/user",
            Some(&at_a),
            Some(json!({"password": format!("burst-password-{i}")})),
        )
        .await;
        if i < 3 {
            assert_eq!(r.status, 200, "change {i}: {}", r.body);
        } else {
            assert_error(&r, 429, "over_request_rate_limit");
        }
    }
    // Metadata alone hashes nothing and is not limited.
    let r = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at_a),
        Some(json!({"data": {"theme": "dark"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Another user from the same IP: the per-IP bucket (4) has one change left.
    let b = signup(&app, &email("burst-b")).await;
    let at_b = b["access_token"].as_str().unwrap().to_string();
    let r = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at_b),
        Some(json!({"password": "another-password-1"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at_b),
        Some(json!({"password": "another-password-2"})),
    )
    .await;
    assert_error(&r, 429, "over_request_rate_limit");
}

/// Without GOTRUE_MAILER_AUTOCONFIRM (the default), no address is confirmed until its code
/// comes back: not at sign-up, not when an anonymous or permanent user sets it, not via /otp.
#[tokio::test]
async fn auth_attack_claiming_an_unproved_address_never_confirms_it() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let su = t.superuser().await;
    let settings = call(&app, Method::GET, "/settings", None, None).await;
    assert_eq!(settings.body["mailer_autoconfirm"], false);

    // Sign-up: a user, no session, and no password sign-in until confirmed.
    let someone = email("someone-else");
    let r = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": someone, "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("access_token").is_none(), "{}", r.body);
    assert!(r.body.get("email_confirmed_at").is_none(), "{}", r.body);
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": someone, "password": PW})),
    )
    .await;
    assert_error(&r, 400, "email_not_confirmed");
    // Its confirmation token waits for the address's owner.
    let id: Uuid = su
        .query_one("select id from auth.users where email = $1", &[&someone])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tokens_of(&su, id, "signup").await, 1);

    // An anonymous user names somebody's address: pending, not theirs.
    let anon = call(&app, Method::POST, "/signup", None, Some(json!({}))).await;
    assert_eq!(anon.status, 200, "{}", anon.body);
    let at = anon.body["access_token"].as_str().unwrap().to_string();
    let anon_id: Uuid = anon.body["user"]["id"].as_str().unwrap().parse().unwrap();
    let victim = email("victim");
    let r = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at),
        Some(json!({"email": victim, "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["email"], "");
    assert_eq!(r.body["new_email"], victim);
    assert_eq!(r.body["is_anonymous"], true);
    assert!(r.body.get("email_confirmed_at").is_none(), "{}", r.body);
    let row = su
        .query_one(
            "select email, email_confirmed_at is null from auth.users where id = $1",
            &[&anon_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert!(row.get::<_, bool>(1));
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": victim, "password": PW})),
    )
    .await;
    assert_error(&r, 400, "invalid_credentials");
    let refreshed = call(
        &app,
        Method::POST,
        "/token?grant_type=refresh_token",
        None,
        Some(json!({"refresh_token": anon.body["refresh_token"]})),
    )
    .await;
    assert_eq!(
        claims(refreshed.body["access_token"].as_str().unwrap())["email"],
        ""
    );

    // A permanent user's new address waits too.
    let owner = email("owner");
    let owner_id = admin_user(&app, &owner).await;
    let s = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": owner, "password": PW})),
    )
    .await;
    let r = call(
        &app,
        Method::PUT,
        "/user",
        s.body["access_token"].as_str(),
        Some(json!({"email": email("victim-two")})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["email"], owner);
    assert_eq!(tokens_of(&su, owner_id, "email_change").await, 1);

    // /otp creates users only unconfirmed.
    let fresh = email("fresh");
    let r = call(
        &app,
        Method::POST,
        "/otp",
        None,
        Some(json!({"email": fresh})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let unconfirmed: bool = su
        .query_one(
            "select email_confirmed_at is null from auth.users where email = $1",
            &[&fresh],
        )
        .await
        .unwrap()
        .get(0);
    assert!(unconfirmed);

    // The owner of the address proves it with the code sent to it: now it is the user's.
    set_code(&app, &su, anon_id, "email_change", &victim, "135790").await;
    let v = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "email_change", "email": victim, "token": "135790"})),
    )
    .await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.body["user"]["id"], anon_id.to_string());
    assert_eq!(v.body["user"]["email"], victim);
    assert_eq!(v.body["user"]["is_anonymous"], false);
    assert!(
        v.body["user"]["email_confirmed_at"].is_string(),
        "{}",
        v.body
    );
    assert_eq!(v.body["user"]["app_metadata"]["provider"], "email");
    assert_eq!(
        claims(v.body["access_token"].as_str().unwrap())["email"],
        victim
    );
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": victim, "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A PKCE link's token (`pkce_…`) posted to /verify gives the auth code, never a session;
/// its bare hash gives nothing; only the code verifier turns the code into a session.
#[tokio::test]
async fn auth_attack_pkce_link_token_without_code_verifier_gets_no_session() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let su = t.superuser().await;
    let addr = email("pkce");
    let id = admin_user(&app, &addr).await;
    let verifier = format!("v-{}-{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let r = call(
        &app,
        Method::POST,
        "/otp",
        None,
        Some(json!({"email": addr, "code_challenge": challenge, "code_challenge_method": "s256"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let hash: String = su
        .query_one(
            "select token_hash from auth.one_time_tokens where user_id = $1 and token_type = 'magiclink'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    // The link's token without its prefix: no session.
    let bare = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "magiclink", "token_hash": hash})),
    )
    .await;
    assert_error(&bare, 403, "otp_expired");
    // With it: the auth code only.
    let r = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "magiclink", "token_hash": format!("pkce_{hash}")})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("access_token").is_none(), "{}", r.body);
    assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
    let code = r.body["code"].as_str().unwrap().to_string();
    let sessions: i64 = su
        .query_one(
            "select count(*) from auth.sessions where user_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 0);
    let exchange = |v: String| {
        let (app, code) = (&app, code.clone());
        async move {
            call(
                app,
                Method::POST,
                "/token?grant_type=pkce",
                None,
                Some(json!({"auth_code": code, "code_verifier": v})),
            )
            .await
        }
    };
    assert_error(
        &exchange(format!("{verifier}-wrong")).await,
        400,
        "bad_code_verifier",
    );
    let s = exchange(verifier).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.body["user"]["id"], id.to_string());
}

/// Without API_EXTERNAL_URL, a client's Host or X-Forwarded-Host must not become the `iss` of
/// tokens nor the base of emailed links (password-reset poisoning).
#[tokio::test]
async fn auth_attack_forged_forwarded_host_cannot_redirect_issuer_or_links() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let forged = [
        ("x-supabase-api-version", "2024-01-01"),
        ("x-forwarded-host", "evil.test"),
        ("x-forwarded-proto", "https"),
    ];
    let addr = email("iss");
    let s = call_with(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": addr, "password": PW})),
        &forged,
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let expected = format!("{}/auth/v1", app.base);
    assert_eq!(
        claims(s.body["access_token"].as_str().unwrap())["iss"],
        expected
    );
    let link = call_with(
        &app,
        Method::POST,
        "/admin/generate_link",
        Some(&app.service_role_key.clone()),
        Some(json!({"type": "magiclink", "email": addr})),
        &forged,
    )
    .await;
    assert_eq!(link.status, 200, "{}", link.body);
    let action = link.body["action_link"].as_str().unwrap();
    assert!(
        action.starts_with(&format!("{expected}/verify?")),
        "{action}"
    );
    // A forged Host is not a loopback address: the neutral default, not the attacker's.
    let s = call_with(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": addr, "password": PW})),
        &[
            ("x-supabase-api-version", "2024-01-01"),
            ("host", "evil.test"),
        ],
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(
        claims(s.body["access_token"].as_str().unwrap())["iss"],
        "http://localhost/auth/v1"
    );
    // A configured external URL is the only other source.
    let t2 = TestDb::new().await;
    let app = t2
        .spawn_autoconfirm_app_with(&["--api-external-url", "https://api.example.com/"])
        .await;
    let s = call_with(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": email("ext"), "password": PW})),
        &forged,
    )
    .await;
    assert_eq!(
        claims(s.body["access_token"].as_str().unwrap())["iss"],
        "https://api.example.com/auth/v1"
    );
}

/// A ban longer than Go's durations allow was a panic (overflow): now GoTrue's 400.
#[tokio::test]
async fn auth_attack_huge_ban_duration_is_a_400_not_a_panic() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let svc = app.service_role_key.clone();
    let id = admin_user(&app, &email("banned")).await;
    for huge in ["99999999999h", "9223372036854775808ns"] {
        let r = call(
            &app,
            Method::PUT,
            &format!("/admin/users/{id}"),
            Some(&svc),
            Some(json!({"ban_duration": huge})),
        )
        .await;
        assert_error(&r, 400, "validation_failed");
        assert_eq!(
            r.body["msg"],
            format!("invalid format for ban duration: time: invalid duration \"{huge}\"")
        );
        let c = call(
            &app,
            Method::POST,
            "/admin/users",
            Some(&svc),
            Some(json!({"email": email("c"), "ban_duration": huge})),
        )
        .await;
        assert_error(&c, 400, "validation_failed");
    }
    // The longest Go allows is fine, and the server is still answering.
    let r = call(
        &app,
        Method::PUT,
        &format!("/admin/users/{id}"),
        Some(&svc),
        Some(json!({"ban_duration": "2562047h"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["banned_until"].is_string());
    let h = call(&app, Method::GET, "/settings", None, None).await;
    assert_eq!(h.status, 200);
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// Sign-up, recovery and confirmation resends answer a registered address as they answer an
/// unknown one (the request and its repetition within the email throttle).
#[tokio::test]
async fn auth_attack_enumerating_registered_addresses_gets_identical_answers() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let known = email("known");
    admin_user(&app, &known).await;
    let unknown = email("unknown");

    // Sign-up: both 200 with a user object of one shape, no session.
    let a = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": known, "password": PW, "data": {"n": 1}})),
    )
    .await;
    let b = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": unknown, "password": PW, "data": {"n": 1}})),
    )
    .await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::OK, StatusCode::OK),
        "{} / {}",
        a.body,
        b.body
    );
    assert_eq!(keys(&a.body), keys(&b.body), "{} / {}", a.body, b.body);
    assert!(a.body.get("access_token").is_none() && b.body.get("access_token").is_none());
    assert_eq!(a.body["email"], known);
    assert_eq!(a.body["user_metadata"]["n"], 1);
    assert!(a.body.get("email_confirmed_at").is_none());

    // Recovery, then recovery again within the throttle: the same answers either way.
    let other_unknown = email("unknown-two");
    for (i, want) in [(0, 200u16), (1, 429)] {
        let r1 = call(
            &app,
            Method::POST,
            "/recover",
            None,
            Some(json!({"email": known})),
        )
        .await;
        let r2 = call(
            &app,
            Method::POST,
            "/recover",
            None,
            Some(json!({"email": other_unknown})),
        )
        .await;
        assert_eq!(r1.status.as_u16(), want, "known, request {i}: {}", r1.body);
        assert_eq!(
            r2.status.as_u16(),
            want,
            "unknown, request {i}: {}",
            r2.body
        );
        assert_eq!(r1.body["code"], r2.body["code"]);
        if want == 200 {
            assert_eq!((r1.body.clone(), r2.body.clone()), (json!({}), json!({})));
        }
    }
    // Resending a confirmation: a confirmed address and an unknown one look alike.
    let third = email("unknown-three");
    for want in [200u16, 429] {
        let r1 = call(
            &app,
            Method::POST,
            "/resend",
            None,
            Some(json!({"type": "signup", "email": known})),
        )
        .await;
        let r2 = call(
            &app,
            Method::POST,
            "/resend",
            None,
            Some(json!({"type": "signup", "email": third})),
        )
        .await;
        assert_eq!(r1.status.as_u16(), want, "{}", r1.body);
        assert_eq!(r2.status.as_u16(), want, "{}", r2.body);
        assert_eq!(r1.body["code"], r2.body["code"]);
    }
    // /otp (users may be created): both 200 {}. With create_user false, GoTrue answers an
    // unknown address 422 otp_disabled, "Signups not allowed for otp": kept as GoTrue has it.
    let r1 = call(
        &app,
        Method::POST,
        "/otp",
        None,
        Some(json!({"email": known})),
    )
    .await;
    let r2 = call(
        &app,
        Method::POST,
        "/otp",
        None,
        Some(json!({"email": email("new")})),
    )
    .await;
    assert_eq!((r1.status.as_u16(), r1.body), (200, json!({})));
    assert_eq!((r2.status.as_u16(), r2.body), (200, json!({})));
    let r = call(
        &app,
        Method::POST,
        "/otp",
        None,
        Some(json!({"email": email("nobody"), "create_user": false})),
    )
    .await;
    assert_error(&r, 422, "otp_disabled");
    assert_eq!(r.body["msg"], "Signups not allowed for otp");
}
