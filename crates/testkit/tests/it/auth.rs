//! /auth/v1 over HTTP: sign-up, grants, rotation and reuse detection, user, logout, admin,
//! error shapes, forged tokens, rate limits, password hash import, ES256.
use agencyflow_testkit::{TestApp, TestDb, TEST_JWT_SECRET};
use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;
use uuid::Uuid;

pub(crate) struct Res {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

/// A request as supabase-js sends it: anon apikey, API version 2024-01-01.
pub(crate) async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Res {
    call_with(
        app,
        method,
        path,
        bearer,
        body,
        &[("x-supabase-api-version", "2024-01-01")],
    )
    .await
}

pub(crate) async fn call_with(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Res {
    let mut rb = app
        .http
        .request(method, app.url(&format!("/auth/v1{path}")))
        .header("apikey", &app.anon_key);
    if let Some(b) = bearer {
        rb = rb.bearer_auth(b);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("request");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Res {
        status,
        headers,
        body,
    }
}

pub(crate) fn email(tag: &str) -> String {
    format!("{tag}-{}@example.com", Uuid::new_v4().simple())
}

pub(crate) const PW: &str = "correct-horse-battery";

pub(crate) async fn signup(app: &TestApp, email: &str) -> Value {
    let r = call(
        app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": email, "password": PW, "data": {"full_name": "Ada Lovelace"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

pub(crate) async fn refresh(app: &TestApp, token: &str) -> Res {
    call(
        app,
        Method::POST,
        "/token?grant_type=refresh_token",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

pub(crate) fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn header(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .unwrap(),
    )
    .unwrap()
}

/// A 2024-01-01 error: `{"code":"<code>","error_code","msg","message"}` and the echoed header.
pub(crate) fn assert_error(r: &Res, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.body["code"], code, "{}", r.body);
    assert_eq!(r.body["error_code"], code, "{}", r.body);
    assert!(
        r.body["msg"].is_string() && r.body["message"] == r.body["msg"],
        "{}",
        r.body
    );
    assert_eq!(r.headers["x-supabase-api-version"], "2024-01-01");
}

fn sign(secret: &str, claims: Value) -> String {
    agencyflow_auth::JwtKeys::hs256(secret.as_bytes(), None)
        .sign(&claims)
        .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Most of these tests sign users up and expect a session at once: their app confirms
/// sign-ups without proof (GOTRUE_MAILER_AUTOCONFIRM=true; the server's default is off).
pub(crate) trait AutoconfirmApp {
    async fn spawn_autoconfirm_app(&self) -> TestApp;
    async fn spawn_autoconfirm_app_with(&self, extra: &[&str]) -> TestApp;
}

impl AutoconfirmApp for TestDb {
    async fn spawn_autoconfirm_app(&self) -> TestApp {
        self.spawn_autoconfirm_app_with(&[]).await
    }

    async fn spawn_autoconfirm_app_with(&self, extra: &[&str]) -> TestApp {
        let mut args = vec!["--mailer-autoconfirm", "true"];
        args.extend_from_slice(extra);
        self.spawn_app_with(&args).await
    }
}

#[tokio::test]
async fn auth_signup_session_user_and_claims_shape() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let e = email("shape");
    let s = signup(&app, &e).await;
    assert_eq!(s["token_type"], "bearer");
    assert_eq!(s["expires_in"], 3600);
    assert!(s["expires_at"].as_i64().unwrap() > now());
    let rt = s["refresh_token"].as_str().unwrap();
    assert!(rt.len() >= 40);
    let u = &s["user"];
    assert_eq!(u["email"], e);
    assert_eq!(u["phone"], "");
    assert_eq!(u["aud"], "authenticated");
    assert_eq!(u["role"], "authenticated");
    assert_eq!(u["is_anonymous"], false);
    assert_eq!(
        u["app_metadata"],
        json!({"provider": "email", "providers": ["email"]})
    );
    assert_eq!(u["user_metadata"]["full_name"], "Ada Lovelace");
    assert_eq!(u["user_metadata"]["email"], e);
    assert_eq!(u["user_metadata"]["sub"], u["id"]);
    assert!(u["email_confirmed_at"].as_str().unwrap().ends_with('Z'));
    assert!(u["created_at"].as_str().unwrap().ends_with('Z'));
    for absent in [
        "phone_confirmed_at",
        "new_email",
        "banned_until",
        "recovery_sent_at",
        "invited_at",
    ] {
        assert!(u.get(absent).is_none(), "{absent} should be omitted: {u}");
    }
    let ids = u["identities"].as_array().unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0]["provider"], "email");
    assert_eq!(ids[0]["id"], u["id"]);
    assert_eq!(ids[0]["user_id"], u["id"]);
    assert_eq!(ids[0]["identity_data"]["email"], e);
    assert!(ids[0]["identity_id"].is_string());
    // Access-token claims as Supabase Auth issues them.
    let at = s["access_token"].as_str().unwrap();
    let c = claims(at);
    assert_eq!(header(at)["alg"], "HS256");
    assert_eq!(c["sub"], u["id"]);
    assert_eq!(c["aud"], "authenticated");
    assert_eq!(c["role"], "authenticated");
    assert_eq!(c["email"], e);
    assert_eq!(c["phone"], "");
    assert_eq!(c["app_metadata"]["provider"], "email");
    assert_eq!(c["user_metadata"]["full_name"], "Ada Lovelace");
    assert_eq!(c["aal"], "aal1");
    assert_eq!(c["amr"][0]["method"], "password");
    assert!(c["amr"][0]["timestamp"].is_i64());
    assert!(c["session_id"].is_string());
    assert_eq!(c["is_anonymous"], false);
    assert_eq!(c["iss"], format!("{}/auth/v1", app.base));
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    // The token works on /user, and REST-side verification accepts it.
    let me = call(&app, Method::GET, "/user", Some(at), None).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["id"], u["id"]);
    assert!(app.keys.verify(at).is_ok());
    // Password grant; same user, a new session.
    let p = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e.to_uppercase(), "password": PW})),
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["user"]["id"], u["id"]);
    assert!(p.body["user"]["last_sign_in_at"].is_string());
    assert!(p.body.get("weak_password").is_none());
    assert_ne!(
        claims(p.body["access_token"].as_str().unwrap())["session_id"],
        c["session_id"]
    );
    // Signing up again with the same email.
    let again = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": e, "password": PW})),
    )
    .await;
    assert_error(&again, 422, "user_already_exists");
}

#[tokio::test]
async fn auth_error_shapes_and_validation() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let e = email("errors");
    signup(&app, &e).await;
    // Wrong password and unknown email look the same.
    for who in [e.as_str(), "nobody@example.com"] {
        let r = call(
            &app,
            Method::POST,
            "/token?grant_type=password",
            None,
            Some(json!({"email": who, "password": "wrong-password"})),
        )
        .await;
        assert_error(&r, 400, "invalid_credentials");
        assert_eq!(r.body["msg"], "Invalid login credentials");
    }
    // Without the version header: the legacy shape with x-sb-error-code.
    let legacy = call_with(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": "nope-nope"})),
        &[],
    )
    .await;
    assert_eq!(legacy.status, 400);
    assert_eq!(legacy.body["code"], 400);
    assert_eq!(legacy.body["error_code"], "invalid_credentials");
    assert_eq!(legacy.body["msg"], "Invalid login credentials");
    assert_eq!(legacy.headers["x-sb-error-code"], "invalid_credentials");
    assert!(legacy.headers.get("x-supabase-api-version").is_none());
    // Weak password.
    let weak = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": email("weak"), "password": "short"})),
    )
    .await;
    assert_error(&weak, 422, "weak_password");
    assert_eq!(
        weak.body["msg"],
        "Password should be at least 8 characters."
    );
    assert_eq!(weak.body["weak_password"]["reasons"], json!(["length"]));
    // Invalid email, missing password.
    let bad_email = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": "not-an-email", "password": PW})),
    )
    .await;
    assert_error(&bad_email, 400, "validation_failed");
    let no_pw = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": email("nopw")})),
    )
    .await;
    assert_error(&no_pw, 400, "validation_failed");
    // Malformed JSON is a 400, never a 500.
    for path in [
        "/signup",
        "/token?grant_type=password",
        "/token?grant_type=refresh_token",
    ] {
        let r = app
            .http
            .post(app.url(&format!("/auth/v1{path}")))
            .header("apikey", &app.anon_key)
            .header("x-supabase-api-version", "2024-01-01")
            .header("content-type", "application/json;charset=UTF-8")
            .body("{\"email\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["code"], "bad_json", "{path}: {b}");
    }
    // OAuth-style errors on /token.
    let missing = call(
        &app,
        Method::POST,
        "/token?grant_type=refresh_token",
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"], "invalid_request");
    assert!(missing.body["error_description"].is_string());
    let grant = call(
        &app,
        Method::POST,
        "/token?grant_type=magic",
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(grant.status, 400);
    assert_eq!(grant.body["error"], "unsupported_grant_type");
    // Unknown refresh token.
    let unknown = refresh(&app, "not-a-token-we-issued").await;
    assert_error(&unknown, 400, "refresh_token_not_found");
}

#[tokio::test]
async fn auth_refresh_rotation_reuse_window_and_parent_of_active() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let s = signup(&app, &email("rotate")).await;
    let r0 = s["refresh_token"].as_str().unwrap().to_string();
    let sid = claims(s["access_token"].as_str().unwrap())["session_id"].clone();
    // Stored hashed, never in clear.
    let db = t.superuser().await;
    let hash = hex::encode(sha2::Sha256::digest(r0.as_bytes()));
    let clear: i64 = db
        .query_one(
            "select count(*) from auth.refresh_tokens where token_hash = $1",
            &[&r0],
        )
        .await
        .unwrap()
        .get(0);
    let hashed: i64 = db
        .query_one(
            "select count(*) from auth.refresh_tokens where token_hash = $1",
            &[&hash],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((clear, hashed), (0, 1));
    // Rotation: a new token in the same session.
    let a = refresh(&app, &r0).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let r1 = a.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r0);
    assert_eq!(
        claims(a.body["access_token"].as_str().unwrap())["session_id"],
        sid
    );
    assert_eq!(
        claims(a.body["access_token"].as_str().unwrap())["amr"][0]["method"],
        "password"
    );
    // The parent of the active token again (a lost response): the active token comes back.
    let b = refresh(&app, &r0).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.body["refresh_token"], r1.as_str());
    // Rotate once more; r0 is now two generations old but inside the 10 s reuse interval.
    let c = refresh(&app, &r1).await;
    assert_eq!(c.status, 200);
    let r2 = c.body["refresh_token"].as_str().unwrap().to_string();
    let d = refresh(&app, &r0).await;
    assert_eq!(d.status, 200, "reuse interval: {}", d.body);
    assert_eq!(
        claims(d.body["access_token"].as_str().unwrap())["session_id"],
        sid
    );
    assert!(refresh(&app, &r2).await.status == 200);
}

#[tokio::test]
async fn auth_refresh_reuse_outside_interval_revokes_session() {
    let t = TestDb::new().await;
    let app = t
        .spawn_autoconfirm_app_with(&["--refresh-token-reuse-interval", "0"])
        .await;
    let s = signup(&app, &email("reuse")).await;
    let r0 = s["refresh_token"].as_str().unwrap().to_string();
    let r1 = refresh(&app, &r0).await.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let second = refresh(&app, &r1).await;
    let r2 = second.body["refresh_token"].as_str().unwrap().to_string();
    let at = second.body["access_token"].as_str().unwrap().to_string();
    // r0 is neither active nor the active token's parent: reuse, the session ends.
    let reused = refresh(&app, &r0).await;
    assert_error(&reused, 400, "refresh_token_already_used");
    assert_eq!(reused.body["msg"], "Invalid Refresh Token: Already Used");
    let after = refresh(&app, &r2).await;
    assert_error(&after, 400, "refresh_token_not_found");
    let me = call(&app, Method::GET, "/user", Some(&at), None).await;
    assert_error(&me, 403, "session_not_found");
}

#[tokio::test]
async fn auth_forged_expired_and_missing_tokens_are_refused() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let s = signup(&app, &email("forged")).await;
    let id = s["user"]["id"].as_str().unwrap().to_string();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let forge = |role: &str| {
        let base = json!({"sub": id, "role": role, "aud": "authenticated", "iat": now(), "exp": now() + 3600});
        let mut expired = base.clone();
        expired["exp"] = json!(now() - 3600);
        let mut wrong_aud = base.clone();
        wrong_aud["aud"] = json!("someone-else");
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&base)
        );
        vec![
            ("expired", sign(TEST_JWT_SECRET, expired)),
            (
                "other secret",
                sign("another-secret-another-secret-another-secret", base.clone()),
            ),
            ("alg none", none),
            ("wrong aud", sign(TEST_JWT_SECRET, wrong_aud)),
            ("garbage", "not.a.jwt".to_string()),
        ]
    };
    for (what, tok) in forge("authenticated") {
        let r = call(&app, Method::GET, "/user", Some(&tok), None).await;
        assert_error(&r, 403, "bad_jwt");
        assert!(
            app.keys.verify(&tok).is_err() || what == "wrong aud",
            "{what}"
        );
    }
    // The gateway (and so REST and functions) verifies with the same keys: a forged
    // service_role apikey gets nowhere.
    for (what, tok) in forge("service_role") {
        let g = app
            .http
            .get(app.url("/auth/v1/settings"))
            .header("apikey", &tok)
            .send()
            .await
            .unwrap();
        assert_eq!(g.status(), 401, "{what} as apikey");
    }
    let none_bearer = call(&app, Method::GET, "/user", None, None).await;
    assert_error(&none_bearer, 401, "no_authorization");
    // The anon key as bearer has no sub.
    let anon = call(
        &app,
        Method::GET,
        "/user",
        Some(&app.anon_key.clone()),
        None,
    )
    .await;
    assert_error(&anon, 403, "bad_jwt");
    // A well-signed token for a user that does not exist.
    let ghost = app.user_token(Uuid::new_v4());
    let r = call(&app, Method::GET, "/user", Some(&ghost), None).await;
    assert_error(&r, 403, "user_not_found");
    // A token whose session was logged out.
    let at = s["access_token"].as_str().unwrap();
    let out = call(&app, Method::POST, "/logout?scope=local", Some(at), None).await;
    assert_eq!(out.status, 204);
    let r = call(&app, Method::GET, "/user", Some(at), None).await;
    assert_error(&r, 403, "session_not_found");
}

#[tokio::test]
async fn auth_anonymous_user_becomes_permanent_keeping_id_org_and_data() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let r = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"data": {"theme": "dark"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let u = &r.body["user"];
    let id = u["id"].as_str().unwrap().to_string();
    assert_eq!(u["is_anonymous"], true);
    assert_eq!(u["app_metadata"], json!({}));
    assert_eq!(u["email"], "");
    assert_eq!(u["identities"], json!([]));
    let at = r.body["access_token"].as_str().unwrap().to_string();
    let c = claims(&at);
    assert_eq!(c["is_anonymous"], true);
    assert_eq!(c["amr"][0]["method"], "anonymous");
    let db = t.superuser().await;
    let uid = Uuid::parse_str(&id).unwrap();
    let org_of = |rows: Vec<agencyflow_testkit::agencyflow_db::tokio_postgres::Row>| -> Vec<Uuid> {
        rows.iter().map(|r| r.get(0)).collect()
    };
    let orgs_before = org_of(
        db.query(
            "select org_id from public.team_members where user_id = $1",
            &[&uid],
        )
        .await
        .unwrap(),
    );
    assert_eq!(orgs_before.len(), 1, "the anonymous user has a workspace");
    // Password without an email: refused for an anonymous user.
    let r0 = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at),
        Some(json!({"password": PW})),
    )
    .await;
    assert_error(&r0, 422, "validation_failed");
    // Email + password: permanent, same id, data kept.
    let e = email("convert");
    let conv = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at),
        Some(json!({"email": e, "password": PW})),
    )
    .await;
    assert_eq!(conv.status, 200, "{}", conv.body);
    assert_eq!(conv.body["id"], id.as_str());
    assert_eq!(conv.body["is_anonymous"], false);
    assert_eq!(conv.body["email"], e);
    assert_eq!(conv.body["user_metadata"]["theme"], "dark");
    assert_eq!(conv.body["app_metadata"]["provider"], "email");
    assert_eq!(conv.body["identities"][0]["provider"], "email");
    // The refreshed token says so, with the same sub.
    let rf = refresh(&app, r.body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(rf.status, 200);
    let c2 = claims(rf.body["access_token"].as_str().unwrap());
    assert_eq!(c2["sub"], id.as_str());
    assert_eq!(c2["is_anonymous"], false);
    assert_eq!(c2["email"], e);
    // Signs in with the new credentials.
    let p = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": PW})),
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["user"]["id"], id.as_str());
    let orgs_after = org_of(
        db.query(
            "select org_id from public.team_members where user_id = $1",
            &[&uid],
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        orgs_after, orgs_before,
        "the workspace survives the conversion"
    );
}

#[tokio::test]
async fn auth_update_user_and_logout_scopes() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let e = email("update");
    let s1 = signup(&app, &e).await;
    let at1 = s1["access_token"].as_str().unwrap().to_string();
    // Metadata merge: null removes a key.
    let r = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at1),
        Some(json!({"data": {"plan": "pro", "full_name": null}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user_metadata"]["plan"], "pro");
    assert!(r.body["user_metadata"].get("full_name").is_none());
    let same = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at1),
        Some(json!({"password": PW})),
    )
    .await;
    assert_error(&same, 422, "same_password");
    let weak = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at1),
        Some(json!({"password": "x"})),
    )
    .await;
    assert_error(&weak, 422, "weak_password");
    // Email change: taken emails are refused; a new address waits for its code (even with
    // autoconfirm, as in GoTrue), then /verify type=email_change makes it the user's.
    let other = email("other");
    signup(&app, &other).await;
    let taken = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at1),
        Some(json!({"email": other})),
    )
    .await;
    assert_error(&taken, 422, "email_exists");
    let e2 = email("renamed");
    let ch = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at1),
        Some(json!({"email": e2})),
    )
    .await;
    assert_eq!(ch.status, 200, "{}", ch.body);
    assert_eq!(ch.body["email"], e);
    assert_eq!(ch.body["new_email"], e2);
    // Secure email change (the default): the current address and the new one are both
    // proved; the first proof alone changes nothing.
    let current = generate_link(
        &app,
        json!({"type": "email_change_current", "email": e, "new_email": e2}),
    )
    .await;
    assert_eq!(current.status, 200, "{}", current.body);
    let link = generate_link(
        &app,
        json!({"type": "email_change_new", "email": e, "new_email": e2}),
    )
    .await;
    assert_eq!(link.status, 200, "{}", link.body);
    let first = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "email_change", "token_hash": link.body["hashed_token"]})),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body.get("access_token").is_none(), "{}", first.body);
    let me = call(&app, Method::GET, "/user", Some(&at1), None).await;
    assert_eq!(me.body["email"], e);
    let ch = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "email_change", "token_hash": current.body["hashed_token"]})),
    )
    .await;
    assert_eq!(ch.status, 200, "{}", ch.body);
    assert_eq!(ch.body["user"]["email"], e2);
    assert!(ch.body["user"].get("new_email").is_none(), "{}", ch.body);
    assert_eq!(
        ch.body["user"]["identities"][0]["identity_data"]["email"],
        e2
    );
    let bad_json = app
        .http
        .put(app.url("/auth/v1/user"))
        .header("apikey", &app.anon_key)
        .bearer_auth(&at1)
        .body("[1,")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    // Three sessions; `others` keeps only the caller's.
    let login = || async {
        call(
            &app,
            Method::POST,
            "/token?grant_type=password",
            None,
            Some(json!({"email": e2, "password": PW})),
        )
        .await
        .body
    };
    let s2 = login().await;
    let s3 = login().await;
    let out = call(
        &app,
        Method::POST,
        "/logout?scope=others",
        Some(s2["access_token"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(out.status, 204);
    assert_error(
        &refresh(&app, s1["refresh_token"].as_str().unwrap()).await,
        400,
        "refresh_token_not_found",
    );
    assert_error(
        &refresh(&app, s3["refresh_token"].as_str().unwrap()).await,
        400,
        "refresh_token_not_found",
    );
    let kept = refresh(&app, s2["refresh_token"].as_str().unwrap()).await;
    assert_eq!(kept.status, 200);
    // Password change ends the other sessions too; then global logout ends all.
    let s4 = login().await;
    let pw = call(
        &app,
        Method::PUT,
        "/user",
        Some(kept.body["access_token"].as_str().unwrap()),
        Some(json!({"password": "a-brand-new-password"})),
    )
    .await;
    assert_eq!(pw.status, 200, "{}", pw.body);
    assert_error(
        &refresh(&app, s4["refresh_token"].as_str().unwrap()).await,
        400,
        "refresh_token_not_found",
    );
    let bad_scope = call(
        &app,
        Method::POST,
        "/logout?scope=everything",
        Some(kept.body["access_token"].as_str().unwrap()),
        None,
    )
    .await;
    assert_error(&bad_scope, 400, "validation_failed");
    let g = call(
        &app,
        Method::POST,
        "/logout",
        Some(kept.body["access_token"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(g.status, 204);
    assert_error(
        &refresh(&app, kept.body["refresh_token"].as_str().unwrap()).await,
        400,
        "refresh_token_not_found",
    );
    let count: i64 = t
        .superuser()
        .await
        .query_one("select count(*) from auth.sessions", &[])
        .await
        .unwrap()
        .get(0);
    // Only the other user's sign-up session is left.
    assert_eq!(count, 1);
}

#[tokio::test]
async fn auth_admin_users_crud_paging_and_refusal() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let svc = app.service_role_key.clone();
    let s = signup(&app, &email("plain")).await;
    let user_at = s["access_token"].as_str().unwrap().to_string();
    // Refused to anon and users; no bearer is 401.
    for b in [app.anon_key.clone(), user_at.clone()] {
        let r = call(&app, Method::GET, "/admin/users", Some(&b), None).await;
        assert_error(&r, 403, "not_admin");
        let c = call(
            &app,
            Method::POST,
            "/admin/users",
            Some(&b),
            Some(json!({"email": email("x")})),
        )
        .await;
        assert_error(&c, 403, "not_admin");
    }
    let nob = call(&app, Method::GET, "/admin/users", None, None).await;
    assert_error(&nob, 401, "no_authorization");
    // Create.
    let e = email("admin-made");
    let c = call(
        &app,
        Method::POST,
        "/admin/users",
        Some(&svc),
        Some(json!({"email": e, "password": PW, "email_confirm": true, "user_metadata": {"a": 1}, "app_metadata": {"tier": "gold"}})),
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let id = c.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.body["app_metadata"],
        json!({"provider": "email", "providers": ["email"], "tier": "gold"})
    );
    assert!(c.body["email_confirmed_at"].is_string());
    let dup = call(
        &app,
        Method::POST,
        "/admin/users",
        Some(&svc),
        Some(json!({"email": e})),
    )
    .await;
    assert_error(&dup, 422, "email_exists");
    call(
        &app,
        Method::POST,
        "/admin/users",
        Some(&svc),
        Some(json!({"email": email("third")})),
    )
    .await;
    // List with paging: 3 users, 2 per page.
    let r = call(
        &app,
        Method::GET,
        "/admin/users?page=1&per_page=2",
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["aud"], "authenticated");
    assert_eq!(r.body["users"].as_array().unwrap().len(), 2);
    assert_eq!(r.headers["x-total-count"], "3");
    assert_eq!(
        r.headers["link"],
        "</admin/users?page=2&per_page=2>; rel=\"next\", </admin/users?page=2&per_page=2>; rel=\"last\""
    );
    let r2 = call(
        &app,
        Method::GET,
        "/admin/users?page=2&per_page=2",
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(r2.body["users"].as_array().unwrap().len(), 1);
    assert_eq!(
        r2.headers["link"],
        "</admin/users?page=2&per_page=2>; rel=\"last\""
    );
    // Get, update, ban, delete.
    let g = call(
        &app,
        Method::GET,
        &format!("/admin/users/{id}"),
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(g.body["email"], e);
    let u = call(
        &app,
        Method::PUT,
        &format!("/admin/users/{id}"),
        Some(&svc),
        Some(json!({"user_metadata": {"b": 2}, "ban_duration": "24h"})),
    )
    .await;
    assert_eq!(u.status, 200, "{}", u.body);
    assert_eq!(u.body["user_metadata"], json!({"a": 1, "b": 2}));
    assert!(u.body["banned_until"].is_string());
    let banned = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": PW})),
    )
    .await;
    assert_error(&banned, 400, "user_banned");
    call(
        &app,
        Method::PUT,
        &format!("/admin/users/{id}"),
        Some(&svc),
        Some(json!({"ban_duration": "none"})),
    )
    .await;
    let ok = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": PW})),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let d = call(
        &app,
        Method::DELETE,
        &format!("/admin/users/{id}"),
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body, json!({}));
    let gone = call(
        &app,
        Method::GET,
        &format!("/admin/users/{id}"),
        Some(&svc),
        None,
    )
    .await;
    assert_error(&gone, 404, "user_not_found");
    let bad = call(
        &app,
        Method::GET,
        "/admin/users/not-a-uuid",
        Some(&svc),
        None,
    )
    .await;
    assert_error(&bad, 400, "validation_failed");
}

#[tokio::test]
async fn auth_bcrypt_import_verifies_and_rehashes_to_argon2() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let e = email("bcrypt");
    let hash = bcrypt::hash("imported-secret", 4).unwrap();
    let c = call(
        &app,
        Method::POST,
        "/admin/users",
        Some(&app.service_role_key.clone()),
        Some(json!({"email": e, "password_hash": hash, "email_confirm": true})),
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let bad = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": "wrong-secret"})),
    )
    .await;
    assert_error(&bad, 400, "invalid_credentials");
    let ok = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": "imported-secret"})),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let stored: String = t
        .superuser()
        .await
        .query_one(
            "select encrypted_password::text from auth.users where email = $1",
            &[&e],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    let again = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": "imported-secret"})),
    )
    .await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn auth_rate_limits_per_ip_and_per_email() {
    let t = TestDb::new().await;
    let app = t
        .spawn_autoconfirm_app_with(&[
            "--db-pool",
            "16",
            "--rate-limit-sign-in-sign-ups",
            "3",
            "--rate-limit-email-sign-ins",
            "5",
            "--rate-limit-token-refresh",
            "2",
            "--rate-limit-header",
            "X-Forwarded-For",
        ])
        .await;
    let e = "victim@example.com";
    let attempt = |ip: &'static str| {
        let app = &app;
        async move {
            call_with(
                app,
                Method::POST,
                "/token?grant_type=password",
                None,
                Some(json!({"email": e, "password": "guess-guess"})),
                &[
                    ("x-supabase-api-version", "2024-01-01"),
                    ("x-forwarded-for", ip),
                ],
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_error(&attempt("10.0.0.1").await, 400, "invalid_credentials");
    }
    assert_error(&attempt("10.0.0.1").await, 429, "over_request_rate_limit");
    // Other IPs, same email: the per-email bucket (5) runs out.
    assert_error(
        &attempt("10.0.0.2, 172.16.0.1").await,
        400,
        "invalid_credentials",
    );
    assert_error(&attempt("10.0.0.3").await, 400, "invalid_credentials");
    assert_error(&attempt("10.0.0.4").await, 429, "over_request_rate_limit");
    // Refresh grants per IP.
    for i in 0..3 {
        let r = call_with(
            &app,
            Method::POST,
            "/token?grant_type=refresh_token",
            None,
            Some(json!({"refresh_token": "whatever"})),
            &[
                ("x-supabase-api-version", "2024-01-01"),
                ("x-forwarded-for", "10.9.9.9"),
            ],
        )
        .await;
        let want = if i < 2 { 400 } else { 429 };
        assert_eq!(r.status.as_u16(), want, "{}", r.body);
    }
}

/// Without a trusted header configured, a client cannot dodge the per-IP limit by sending
/// a different X-Forwarded-For each time: the limit keys on the TCP peer.
#[tokio::test]
async fn auth_rate_limit_ignores_client_forwarded_for_by_default() {
    let t = TestDb::new().await;
    let app = t
        .spawn_autoconfirm_app_with(&["--rate-limit-token-refresh", "2"])
        .await;
    for i in 0..4 {
        let ip = format!("10.7.7.{i}");
        let r = call_with(
            &app,
            Method::POST,
            "/token?grant_type=refresh_token",
            None,
            Some(json!({"refresh_token": "whatever"})),
            &[
                ("x-supabase-api-version", "2024-01-01"),
                ("x-forwarded-for", ip.as_str()),
            ],
        )
        .await;
        let want = if i < 2 { 400 } else { 429 };
        assert_eq!(r.status.as_u16(), want, "{}", r.body);
    }
}

#[tokio::test]
async fn auth_settings_health_jwks_and_disabled_signups() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let s = call(&app, Method::GET, "/settings", None, None).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.body["external"]["email"], true);
    assert_eq!(s.body["external"]["anonymous_users"], true);
    assert_eq!(s.body["disable_signup"], false);
    // Addresses are confirmed only by their link or code unless the operator says otherwise.
    assert_eq!(s.body["mailer_autoconfirm"], false);
    // Health and JWKS need no API key.
    let h = app
        .http
        .get(app.url("/auth/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    assert_eq!(h.json::<Value>().await.unwrap()["name"], "GoTrue");
    let j = app
        .http
        .get(app.url("/auth/v1/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(j.status(), 200);
    assert!(j.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age=600"));
    assert_eq!(j.json::<Value>().await.unwrap(), json!({"keys": []}));

    let t2 = TestDb::new().await;
    let closed = t2
        .spawn_app_with(&[
            "--disable-signup",
            "true",
            "--external-anonymous-users-enabled",
            "false",
        ])
        .await;
    let r = call(
        &closed,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": email("closed"), "password": PW})),
    )
    .await;
    assert_error(&r, 422, "signup_disabled");
    let t3 = TestDb::new().await;
    let no_anon = t3
        .spawn_app_with(&[
            "--external-anonymous-users-enabled",
            "false",
            "--password-min-length",
            "12",
        ])
        .await;
    let r = call(&no_anon, Method::POST, "/signup", None, Some(json!({}))).await;
    assert_error(&r, 422, "anonymous_provider_disabled");
    let r = call(
        &no_anon,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": email("len"), "password": "elevenchars"})),
    )
    .await;
    assert_error(&r, 422, "weak_password");
    assert_eq!(r.body["msg"], "Password should be at least 12 characters.");
}

#[tokio::test]
async fn auth_es256_signing_with_kid_and_jwks() {
    let t = TestDb::new().await;
    let jwk = agencyflow_auth::generate_es256_jwk();
    let keys = json!([jwk]).to_string();
    let app = t.spawn_autoconfirm_app_with(&["--jwt-keys", &keys]).await;
    let s = signup(&app, &email("es256")).await;
    let at = s["access_token"].as_str().unwrap();
    let h = header(at);
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["kid"], jwk["kid"]);
    let me = call(&app, Method::GET, "/user", Some(at), None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let j: Value = app
        .http
        .get(app.url("/auth/v1/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j["keys"][0]["kid"], jwk["kid"]);
    assert_eq!(j["keys"][0]["alg"], "ES256");
    assert!(
        j["keys"][0].get("d").is_none(),
        "private part must not be published"
    );
    // HS256 tokens (the API keys, old sessions) still verify; an ES256 token of another key does not.
    let id = Uuid::parse_str(s["user"]["id"].as_str().unwrap()).unwrap();
    assert_eq!(
        call(&app, Method::GET, "/user", Some(&app.user_token(id)), None)
            .await
            .status,
        200
    );
    let mut other = agencyflow_auth::generate_es256_jwk();
    other["kid"] = jwk["kid"].clone();
    let foreign = agencyflow_auth::JwtKeys::hs256(b"x", None)
        .with_jwks(&json!([other]).to_string())
        .unwrap()
        .sign(&claims(at))
        .unwrap();
    let r = call(&app, Method::GET, "/user", Some(&foreign), None).await;
    assert_error(&r, 403, "bad_jwt");
}

#[tokio::test]
async fn auth_supabase_js_e2e() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    app.run_node_test("auth.test.js").await;
}

/// Password-grant latency (argon2id m=19456 t=2 p=1) and refresh-token grants per second.
/// `cargo test --release -p agencyflow-testkit --test it auth_bench -- --ignored --nocapture`
/// (AUTH_BENCH_SECS, AUTH_BENCH_CONCURRENCY tune it).
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn auth_bench_password_and_refresh_grants() {
    use std::time::{Duration, Instant};
    let secs: u64 = std::env::var("AUTH_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let conc: usize = std::env::var("AUTH_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let t = TestDb::new().await;
    let app = t
        .spawn_autoconfirm_app_with(&[
            "--rate-limit-sign-in-sign-ups",
            "0",
            "--rate-limit-email-sign-ins",
            "0",
            "--rate-limit-token-refresh",
            "0",
        ])
        .await;
    let e = email("bench");
    signup(&app, &e).await;
    // Password grants, one at a time: the latency a user sees.
    let mut lat = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        let r = call(
            &app,
            Method::POST,
            "/token?grant_type=password",
            None,
            Some(json!({"email": e, "password": PW})),
        )
        .await;
        assert_eq!(r.status, 200);
        lat.push(s.elapsed());
    }
    lat.sort();
    println!(
        "password grant (argon2id m=19456,t=2,p=1): p50 {:?}, p90 {:?}, min {:?} over {} sequential sign-ins",
        lat[lat.len() / 2],
        lat[lat.len() * 9 / 10],
        lat[0],
        lat.len()
    );
    // Refresh grants: `conc` sessions, each rotating its own chain as fast as it can.
    let mut tokens = Vec::new();
    for _ in 0..conc {
        let r = call(
            &app,
            Method::POST,
            "/token?grant_type=password",
            None,
            Some(json!({"email": e, "password": PW})),
        )
        .await;
        tokens.push(r.body["refresh_token"].as_str().unwrap().to_string());
    }
    let url = app.url("/auth/v1/token?grant_type=refresh_token");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut tok in tokens {
        let http = app.http.clone();
        let url = url.clone();
        let key = app.anon_key.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut lats = Vec::new();
            while Instant::now() < deadline {
                let s = Instant::now();
                let r = http
                    .post(&url)
                    .header("apikey", &key)
                    .json(&json!({"refresh_token": tok}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let b: Value = r.json().await.unwrap();
                tok = b["refresh_token"].as_str().unwrap().to_string();
                lats.push(s.elapsed());
                n += 1;
            }
            (n, lats)
        }));
    }
    let mut total = 0;
    let mut lats = Vec::new();
    for t in tasks {
        let (n, l) = t.await.unwrap();
        total += n;
        lats.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    lats.sort();
    println!(
        "refresh_token grant: {total} in {elapsed:.1} s = {:.0}/s with {conc} concurrent sessions (p50 {:?}, p99 {:?})",
        total as f64 / elapsed,
        lats[lats.len() / 2],
        lats[lats.len() * 99 / 100]
    );
}

// ---- Email one-time tokens: magic links and codes, recovery, invites, generate_link. ----

pub(crate) async fn generate_link(app: &TestApp, body: Value) -> Res {
    call(
        app,
        Method::POST,
        "/admin/generate_link",
        Some(&app.service_role_key.clone()),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn auth_magic_links_and_codes_sign_in_once() {
    let t = TestDb::new().await;
    let app = t
        .spawn_autoconfirm_app_with(&[
            "--site-url",
            "http://app.test",
            "--uri-allow-list",
            "http://localhost:3000",
        ])
        .await;
    let e = email("otp");
    let user = signup(&app, &e).await;
    let user_id = user["user"]["id"].as_str().unwrap().to_string();
    // Unknown address: no link; the admin API is for admins only.
    let r = generate_link(&app, json!({"type": "magiclink", "email": email("nobody")})).await;
    assert_error(&r, 404, "user_not_found");
    let r = call(
        &app,
        Method::POST,
        "/admin/generate_link",
        Some(user["access_token"].as_str().unwrap()),
        Some(json!({"type": "magiclink", "email": e})),
    )
    .await;
    assert_error(&r, 403, "not_admin");
    // POST /otp: 200 {}; again at once: the email rate limit.
    let r = call(&app, Method::POST, "/otp", None, Some(json!({"email": e}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({}));
    let r = call(&app, Method::POST, "/otp", None, Some(json!({"email": e}))).await;
    assert_error(&r, 429, "over_email_send_rate_limit");

    // The link's token_hash signs in once.
    let link = generate_link(&app, json!({"type": "magiclink", "email": e})).await;
    assert_eq!(link.status, 200, "{}", link.body);
    assert_eq!(link.body["id"], user_id.as_str());
    assert_eq!(link.body["verification_type"], "magiclink");
    let hash = link.body["hashed_token"].as_str().unwrap().to_string();
    assert!(link.body["action_link"]
        .as_str()
        .unwrap()
        .contains(&format!("/auth/v1/verify?token={hash}&type=magiclink")));
    let s = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "magiclink", "token_hash": hash})),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.body["user"]["id"], user_id.as_str());
    assert!(s.body["access_token"].is_string() && s.body["refresh_token"].is_string());
    let claims = app
        .keys
        .verify(s.body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims["amr"][0]["method"], "magiclink");
    let again = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "magiclink", "token_hash": hash})),
    )
    .await;
    assert_error(&again, 403, "otp_expired");

    // The 6-digit code with the email; a wrong code fails.
    let link = generate_link(&app, json!({"type": "magiclink", "email": e})).await;
    let code = link.body["email_otp"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 6);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "email", "email": e, "token": wrong})),
    )
    .await;
    assert_error(&r, 403, "otp_expired");
    let s = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "email", "email": e.to_uppercase(), "token": code})),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let claims = app
        .keys
        .verify(s.body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims["amr"][0]["method"], "otp");

    // An expired token is refused.
    let link = generate_link(&app, json!({"type": "magiclink", "email": e})).await;
    t.superuser()
        .await
        .execute(
            "update auth.one_time_tokens set created_at = now() - interval '2 hours'",
            &[],
        )
        .await
        .unwrap();
    let r = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "magiclink", "token_hash": link.body["hashed_token"]})),
    )
    .await;
    assert_error(&r, 403, "otp_expired");

    // The email link: 303 to an allowed redirect with the session in the fragment; an
    // unknown redirect falls back to the site URL; a used link carries the error.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let link = generate_link(&app, json!({"type": "magiclink", "email": e})).await;
    let hash = link.body["hashed_token"].as_str().unwrap().to_string();
    let get = |target: &'static str| {
        let url = app.url(&format!(
            "/auth/v1/verify?token={hash}&type=magiclink&redirect_to={}",
            target
        ));
        let c = no_redirects.clone();
        async move { c.get(url).send().await.unwrap() }
    };
    let r = get("http%3A%2F%2Flocalhost%3A3000%2Fwelcome").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with("http://localhost:3000/welcome#access_token="),
        "{loc}"
    );
    assert!(
        loc.contains("&refresh_token=") && loc.contains("&type=magiclink"),
        "{loc}"
    );
    let r = get("https%3A%2F%2Fevil.test%2F").await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with("http://app.test#error=access_denied&error_code=otp_expired"),
        "{loc}"
    );
}

#[tokio::test]
async fn auth_otp_signup_recovery_and_invites() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    // A new address through /otp: refused without create_user, else an unconfirmed user.
    let e = email("new");
    let r = call(
        &app,
        Method::POST,
        "/otp",
        None,
        Some(json!({"email": e, "create_user": false})),
    )
    .await;
    assert_error(&r, 422, "otp_disabled");
    let r = call(
        &app,
        Method::POST,
        "/otp",
        None,
        Some(json!({"email": e, "data": {"full_name": "Grace"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let su = t.superuser().await;
    let confirmed: Option<chrono::DateTime<chrono::Utc>> = su
        .query_one(
            "select email_confirmed_at from auth.users where email = $1",
            &[&e],
        )
        .await
        .unwrap()
        .get(0);
    assert!(confirmed.is_none());
    let link = generate_link(&app, json!({"type": "magiclink", "email": e})).await;
    let s = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "magiclink", "token_hash": link.body["hashed_token"]})),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert!(
        s.body["user"]["email_confirmed_at"].is_string(),
        "{}",
        s.body
    );
    assert_eq!(s.body["user"]["user_metadata"]["full_name"], "Grace");
    // The new user got their organization like any other (handle_new_user).
    let orgs: i64 = su
        .query_one(
            "select count(*) from public.team_members tm join auth.users u on u.id = tm.user_id where u.email = $1",
            &[&e],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orgs, 1);

    // Recovery: 200 {} for any address; the link signs in; then a new password works.
    let r = call(
        &app,
        Method::POST,
        "/recover",
        None,
        Some(json!({"email": email("ghost")})),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.body.clone()), (200, json!({})));
    let known = email("forgot");
    signup(&app, &known).await;
    let r = call(
        &app,
        Method::POST,
        "/recover",
        None,
        Some(json!({"email": known})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let link = generate_link(&app, json!({"type": "recovery", "email": known})).await;
    let s = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "recovery", "email": known, "token": link.body["email_otp"]})),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let r = call(
        &app,
        Method::PUT,
        "/user",
        s.body["access_token"].as_str(),
        Some(json!({"password": "a-brand-new-password"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": known, "password": "a-brand-new-password"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A recovery token is not a magic link.
    let link = generate_link(&app, json!({"type": "recovery", "email": known})).await;
    let r = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "magiclink", "token_hash": link.body["hashed_token"]})),
    )
    .await;
    assert_error(&r, 403, "otp_expired");

    // Invites: a new user, confirmed by the link; a confirmed address cannot be invited.
    let invited = email("invited");
    let link = generate_link(
        &app,
        json!({"type": "invite", "email": invited, "data": {"role_hint": "pm"}}),
    )
    .await;
    assert_eq!(link.status, 200, "{}", link.body);
    assert!(link.body["invited_at"].is_string(), "{}", link.body);
    let s = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "invite", "token_hash": link.body["hashed_token"]})),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let r = generate_link(&app, json!({"type": "invite", "email": invited})).await;
    assert_error(&r, 422, "email_exists");
    let r = generate_link(
        &app,
        json!({"type": "signup", "email": known, "password": "whatever-long"}),
    )
    .await;
    assert_error(&r, 422, "email_exists");
    let r = generate_link(&app, json!({"type": "nonsense", "email": known})).await;
    assert_error(&r, 400, "validation_failed");
    // Malformed requests are 400s, never 500s.
    let r = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "magiclink"})),
    )
    .await;
    assert_error(&r, 400, "validation_failed");
    let r = call(
        &app,
        Method::POST,
        "/otp",
        None,
        Some(json!({"email": "not-an-email"})),
    )
    .await;
    assert_error(&r, 400, "validation_failed");
}

/// `POST /invite` (supabase-js `auth.admin.inviteUserByEmail`): admin only; the invitee
/// exists unconfirmed with its metadata and `invited_at`, an invite token waits for it (the
/// same one `verify` accepts), and a confirmed address is refused.
#[tokio::test]
async fn auth_admin_invite_creates_the_user_and_its_token() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let su = t.superuser().await;
    let service = app.service_role_key.clone();
    let invite = |bearer: Option<String>, body: Value| {
        let app = &app;
        async move {
            call(
                app,
                Method::POST,
                "/invite?redirect_to=http%3A%2F%2Fevil.test",
                bearer.as_deref(),
                Some(body),
            )
            .await
        }
    };
    let invited = email("invitee");
    let member = signup(&app, &email("member")).await;
    let r = invite(
        member["access_token"].as_str().map(String::from),
        json!({"email": invited}),
    )
    .await;
    assert_error(&r, 403, "not_admin");
    let r = invite(Some(service.clone()), json!({"data": {}})).await;
    assert_error(&r, 400, "validation_failed");
    let r = invite(Some(service.clone()), json!({"email": "nope"})).await;
    assert_error(&r, 400, "validation_failed");

    let data =
        json!({"invited_org_id": "b0000000-0000-4000-8000-000000000001", "invited_role": "member"});
    let r = invite(
        Some(service.clone()),
        json!({"email": invited, "data": data}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["email"], invited);
    assert!(r.body["invited_at"].is_string(), "{}", r.body);
    assert!(r.body.get("email_confirmed_at").is_none(), "{}", r.body);
    assert_eq!(r.body["user_metadata"]["invited_role"], "member");
    let id: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    let row = su
        .query_one(
            "select token_hash, relates_to from auth.one_time_tokens
             where user_id = $1 and token_type = 'invite'",
            &[&id],
        )
        .await
        .unwrap();
    let (hash, relates_to): (String, String) = (row.get(0), row.get(1));
    assert_eq!(relates_to, invited);
    // Inviting an unconfirmed address again sends a new link (the token is replaced).
    let again = invite(Some(service.clone()), json!({"email": invited})).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let replaced: String = su
        .query_one(
            "select token_hash from auth.one_time_tokens where user_id = $1 and token_type = 'invite'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(replaced, hash, "a new invite token");
    // The link's token_hash signs the invitee in, once; then the address is taken.
    let s = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "invite", "token_hash": replaced})),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.body["user"]["id"], id.to_string());
    let r = invite(Some(service), json!({"email": invited})).await;
    assert_error(&r, 422, "email_exists");
}

/// Makes the user's live reauthentication code `code`: what the user would read in the email
/// (stored as the server keys it, `agencyflow_auth::email_otp_hash`).
pub(crate) async fn set_reauthentication_code(
    app: &TestApp,
    su: &agencyflow_testkit::agencyflow_db::tokio_postgres::Client,
    id: Uuid,
    email: &str,
    code: &str,
) {
    let hash = agencyflow_auth::email_otp_hash(&app.keys, email, code);
    let n = su
        .execute(
            "update auth.one_time_tokens set token_hash = $2
             where user_id = $1 and token_type = 'reauthentication'",
            &[&id, &hash],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "a reauthentication code was issued");
}

/// Reauthentication (supabase-js `reauthenticate()`, then `updateUser({ password, nonce })`):
/// the code is issued to the signed-in user only, throttled, and a password change that
/// names one must name the live one, once, before it expires.
#[tokio::test]
async fn auth_reauthentication_code_guards_a_password_change() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let su = t.superuser().await;
    let addr = email("reauth");
    let session = signup(&app, &addr).await;
    let at = session["access_token"].as_str().unwrap().to_string();
    let id: Uuid = session["user"]["id"].as_str().unwrap().parse().unwrap();

    let r = call(&app, Method::GET, "/reauthenticate", None, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(&app, Method::GET, "/reauthenticate", Some(&at), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({}));
    let sent: bool = su
        .query_one(
            "select reauthentication_sent_at is not null from auth.users where id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(sent);
    let r = call(&app, Method::GET, "/reauthenticate", Some(&at), None).await;
    assert_error(&r, 429, "over_email_send_rate_limit");
    // The emailed code, as the user would read it: make it a known one.
    let known = "123456";
    set_reauthentication_code(&app, &su, id, &addr, known).await;
    let change = |nonce: &str| {
        let (app, at) = (&app, at.clone());
        let body = json!({"password": "a-brand-new-password", "nonce": nonce});
        async move { call(app, Method::PUT, "/user", Some(&at), Some(body)).await }
    };
    let sign_in = |password: &'static str| {
        let (app, addr) = (&app, addr.clone());
        async move {
            call(
                app,
                Method::POST,
                "/token?grant_type=password",
                None,
                Some(json!({"email": addr, "password": password})),
            )
            .await
            .status
        }
    };
    assert_error(&change("000000").await, 422, "reauthentication_not_valid");
    // Expired codes are refused too (and the password stays).
    su.execute(
        "update auth.one_time_tokens set created_at = now() - interval '2 hours' where user_id = $1",
        &[&id],
    )
    .await
    .unwrap();
    assert_error(&change(known).await, 422, "reauthentication_not_valid");
    assert_eq!(
        sign_in(PW).await,
        200,
        "the refused change left the password"
    );
    // A fresh code (the throttle counts from the last one): the change goes through, once.
    let r = call(&app, Method::GET, "/reauthenticate", Some(&at), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    set_reauthentication_code(&app, &su, id, &addr, known).await;
    let ok = change(known).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(sign_in("a-brand-new-password").await, 200);
    let reused = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at),
        Some(json!({"password": "yet-another-password", "nonce": known})),
    )
    .await;
    assert_error(&reused, 422, "reauthentication_not_valid");
}

/// `GOTRUE_SECURITY_UPDATE_PASSWORD_REQUIRE_REAUTHENTICATION`: a fresh session changes its
/// password freely; one older than 24 hours needs a reauthentication code.
#[tokio::test]
async fn auth_secure_password_change_needs_a_code_in_an_old_session() {
    let t = TestDb::new().await;
    let app = t
        .spawn_autoconfirm_app_with(&["--update-password-require-reauthentication", "true"])
        .await;
    let su = t.superuser().await;
    let addr = email("secure");
    let session = signup(&app, &addr).await;
    let at = session["access_token"].as_str().unwrap().to_string();
    let id: Uuid = session["user"]["id"].as_str().unwrap().parse().unwrap();
    let change = |password: &'static str, nonce: Option<&'static str>| {
        let (app, at) = (&app, at.clone());
        let mut body = json!({ "password": password });
        if let Some(n) = nonce {
            body["nonce"] = json!(n);
        }
        async move { call(app, Method::PUT, "/user", Some(&at), Some(body)).await }
    };
    let r = change("fresh-session-password", None).await;
    assert_eq!(
        r.status, 200,
        "a session of today needs no code: {}",
        r.body
    );
    su.execute(
        "update auth.sessions set created_at = now() - interval '25 hours' where user_id = $1",
        &[&id],
    )
    .await
    .unwrap();
    assert_error(
        &change("old-session-password", None).await,
        400,
        "reauthentication_needed",
    );
    // Metadata changes need no code.
    let r = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at),
        Some(json!({"data": {"theme": "dark"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(&app, Method::GET, "/reauthenticate", Some(&at), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    set_reauthentication_code(&app, &su, id, &addr, "654321").await;
    let r = change("old-session-password", Some("654321")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// PKCE (supabase-js `flowType: 'pkce'`): the challenge rides with /otp or /recover, the
/// email link redirects with `?code=`, the code and the verifier make the session, once.
#[tokio::test]
async fn auth_pkce_email_flows() {
    let t = TestDb::new().await;
    let app = t
        .spawn_autoconfirm_app_with(&["--site-url", "http://localhost:3000"])
        .await;
    let e = email("pkce");
    let user = signup(&app, &e).await;
    let user_id = user["user"]["id"].as_str().unwrap().to_string();
    let verifier = format!("v-{}-{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    // Malformed challenges are refused up front.
    for (c, m) in [("short", "s256"), (challenge.as_str(), "md5")] {
        let r = call(
            &app,
            Method::POST,
            "/otp",
            None,
            Some(json!({"email": e, "code_challenge": c, "code_challenge_method": m})),
        )
        .await;
        assert_error(&r, 400, "validation_failed");
    }
    let r = call(
        &app,
        Method::POST,
        "/otp",
        None,
        Some(json!({"email": e, "code_challenge": challenge, "code_challenge_method": "s256"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let su = t.superuser().await;
    let token_of = |kind: &'static str| {
        let su = &su;
        let e = e.clone();
        async move {
            su.query_one(
                "select t.token_hash from auth.one_time_tokens t join auth.users u on u.id = t.user_id
                 where u.email = $1 and t.token_type = $2",
                &[&e, &kind],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
        }
    };
    let hash = token_of("magiclink").await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(app.url(&format!(
            "/auth/v1/verify?token=pkce_{hash}&type=magiclink&redirect_to=http%3A%2F%2Flocalhost%3A3000%2Fauth%2Fcallback%3Fnext%3D%2Fhome"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let code = loc
        .strip_prefix("http://localhost:3000/auth/callback?next=/home&code=")
        .unwrap_or_else(|| panic!("{loc}"))
        .to_string();
    // The link is used: a second click carries the error, in the query.
    let again = no_redirects
        .get(app.url(&format!("/auth/v1/verify?token=pkce_{hash}&type=magiclink")))
        .send()
        .await
        .unwrap();
    let loc = again.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with("http://localhost:3000?error=access_denied&error_code=otp_expired"),
        "{loc}"
    );
    // A wrong verifier leaves the flow in place; the right one signs in, once.
    let exchange = |code: String, verifier: String| {
        let app = &app;
        async move {
            call(
                app,
                Method::POST,
                "/token?grant_type=pkce",
                None,
                Some(json!({"auth_code": code, "code_verifier": verifier})),
            )
            .await
        }
    };
    let r = exchange(code.clone(), format!("{verifier}x")).await;
    assert_error(&r, 400, "bad_code_verifier");
    let s = exchange(code.clone(), verifier.clone()).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.body["user"]["id"], user_id.as_str());
    let claims = app
        .keys
        .verify(s.body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims["amr"][0]["method"], "magiclink");
    let r = exchange(code, verifier.clone()).await;
    assert_error(&r, 404, "flow_state_not_found");
    let r = exchange(String::new(), verifier.clone()).await;
    assert_error(&r, 400, "validation_failed");

    // Recovery with the plain method; an auth code left waiting too long has expired.
    let plain = format!(
        "plain-{}-{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    );
    let r = call(
        &app,
        Method::POST,
        "/recover",
        None,
        Some(json!({"email": e, "code_challenge": plain, "code_challenge_method": "plain"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let hash = token_of("recovery").await;
    let r = no_redirects
        .get(app.url(&format!("/auth/v1/verify?token=pkce_{hash}&type=recovery")))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let code = loc
        .strip_prefix("http://localhost:3000?code=")
        .unwrap_or_else(|| panic!("{loc}"))
        .to_string();
    su.execute(
        "update auth.flow_state set created_at = now() - interval '10 minutes'",
        &[],
    )
    .await
    .unwrap();
    let r = exchange(code, plain).await;
    assert_error(&r, 422, "flow_state_expired");
}
