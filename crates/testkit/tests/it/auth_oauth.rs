//! Sign-in with external providers over HTTP, against the mock OpenID provider
//! (`testkit::oidc`): the redirect flow (implicit and PKCE), the callback's refusals (wrong
//! state, wrong nonce, expired ID token, another audience, a user who says no), disabled
//! providers, linking by verified address, `grant_type=id_token`, and link/unlink.
use std::collections::HashMap;

use agencyflow_testkit::oidc::{Knobs, MockOidc, MockUser};
use agencyflow_testkit::{TestApp, TestDb};
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;
use uuid::Uuid;

use crate::auth::{assert_error, call, claims, email, signup, AutoconfirmApp, PW};

const CLIENT_ID: &str = "agencyflow-test-client";
const CLIENT_SECRET: &str = "mock-client-secret";
const SITE: &str = "http://app.test";
const WELCOME: &str = "http://app.test/welcome";

fn provider_flags(provider: &str, mock: &MockOidc) -> Vec<String> {
    vec![
        format!("--external-{provider}-enabled"),
        "true".into(),
        format!("--external-{provider}-client-id"),
        CLIENT_ID.into(),
        format!("--external-{provider}-secret"),
        CLIENT_SECRET.into(),
        format!("--external-{provider}-url"),
        mock.issuer(),
        "--site-url".into(),
        SITE.into(),
    ]
}

/// A server with `provider` pointed at a fresh mock (plus `extra` flags).
async fn setup(t: &TestDb, provider: &str, extra: &[&str]) -> (MockOidc, TestApp) {
    let mock = MockOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    let flags = provider_flags(provider, &mock);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    let app = t.spawn_app_with(&args).await;
    (mock, app)
}

/// A browser that does not follow redirects (each hop is looked at).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn hop(c: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let r = c.get(url).send().await.expect("request");
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status(), loc)
}

/// The provider's authorization URL and where the callback sends the browser, for a flow
/// started at `start` (a full URL).
struct Flow {
    provider_url: String,
    landing: String,
}

async fn follow(start: &str) -> Flow {
    let c = browser();
    let (s1, provider_url) = hop(&c, start).await;
    assert_eq!(s1, StatusCode::FOUND, "authorize: {provider_url}");
    let (s2, callback_url) = hop(&c, &provider_url).await;
    assert_eq!(s2, StatusCode::FOUND, "provider: {callback_url}");
    let (s3, landing) = hop(&c, &callback_url).await;
    assert!(s3.is_redirection(), "callback answered {s3}");
    Flow {
        provider_url,
        landing,
    }
}

async fn sign_in(app: &TestApp, query: &str) -> Flow {
    follow(&app.url(&format!("/auth/v1/authorize?{query}"))).await
}

fn pairs(s: &str) -> HashMap<String, String> {
    form_urlencoded::parse(s.as_bytes()).into_owned().collect()
}

fn fragment(url: &str) -> HashMap<String, String> {
    pairs(url.split_once('#').map(|x| x.1).unwrap_or(""))
}

fn query(url: &str) -> HashMap<String, String> {
    let no_frag = url.split('#').next().unwrap();
    pairs(no_frag.split_once('?').map(|x| x.1).unwrap_or(""))
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn user_of(app: &TestApp, access: &str) -> Value {
    let r = call(app, Method::GET, "/user", Some(access), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn providers_of(user: &Value) -> Vec<String> {
    let mut p: Vec<String> = user["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["provider"].as_str().unwrap().to_string())
        .collect();
    p.sort();
    p
}

async fn users_with_email(t: &TestDb, email: &str) -> i64 {
    t.superuser()
        .await
        .query_one(
            "select count(*) from auth.users where lower(email) = lower($1)",
            &[&email],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn auth_oauth_implicit_flow_signs_in_and_records_the_identity() {
    let t = TestDb::new().await;
    let (mock, app) = setup(&t, "keycloak", &[]).await;
    let flow = sign_in(
        &app,
        &format!("provider=keycloak&redirect_to={}", enc(WELCOME)),
    )
    .await;

    // To the provider: our client, our callback, a nonce and a state; OpenID scopes.
    assert!(flow
        .provider_url
        .starts_with(&format!("{}/authorize?", mock.issuer())));
    let asked = query(&flow.provider_url);
    assert_eq!(asked["client_id"], CLIENT_ID);
    assert_eq!(asked["redirect_uri"], app.url("/auth/v1/callback"));
    assert_eq!(asked["response_type"], "code");
    assert!(asked["scope"].split(' ').any(|s| s == "openid"));
    assert!(asked["nonce"].len() >= 32 && asked["state"].len() > 32);

    // Back at the app with the session in the fragment.
    assert!(
        flow.landing.starts_with(&format!("{WELCOME}#")),
        "{}",
        flow.landing
    );
    let f = fragment(&flow.landing);
    assert_eq!(f["token_type"], "bearer");
    assert!(f["provider_token"].len() > 10);
    assert!(f["provider_refresh_token"].starts_with("refresh-"));
    let access = &f["access_token"];
    let c = claims(access);
    assert_eq!(c["amr"][0]["method"], "oauth");
    assert_eq!(c["app_metadata"]["provider"], "keycloak");

    let u = user_of(&app, access).await;
    let who = mock.user();
    assert_eq!(u["email"], who.email.to_lowercase());
    assert!(
        u["email_confirmed_at"].is_string(),
        "a verified address is confirmed"
    );
    assert_eq!(providers_of(&u), ["keycloak"]);
    let id = &u["identities"][0];
    assert_eq!(id["id"], who.sub);
    assert_eq!(id["identity_data"]["sub"], who.sub);
    assert_eq!(id["identity_data"]["email_verified"], true);
    assert_eq!(id["identity_data"]["iss"], mock.issuer());
    assert_eq!(u["user_metadata"]["full_name"], "Mock User");
    assert_eq!(u["app_metadata"]["providers"], json!(["keycloak"]));

    // The refresh token works like any other.
    let r = crate::auth::refresh(&app, &f["refresh_token"]).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Signing in again finds the same user through the identity.
    let again = sign_in(
        &app,
        &format!("provider=keycloak&redirect_to={}", enc(WELCOME)),
    )
    .await;
    let u2 = user_of(&app, &fragment(&again.landing)["access_token"]).await;
    assert_eq!(u2["id"], u["id"]);
    assert_eq!(u2["identities"].as_array().unwrap().len(), 1);

    // /settings says which providers are on.
    let s = call(&app, Method::GET, "/settings", None, None).await;
    assert_eq!(s.body["external"]["keycloak"], true);
    assert_eq!(s.body["external"]["google"], false);
}

#[tokio::test]
async fn auth_oauth_pkce_flow_gives_a_code_for_the_verifier_only() {
    let t = TestDb::new().await;
    let (mock, app) = setup(&t, "keycloak", &[]).await;
    let verifier = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let flow = sign_in(
        &app,
        &format!(
            "provider=keycloak&redirect_to={}&code_challenge={challenge}&code_challenge_method=s256",
            enc(WELCOME)
        ),
    )
    .await;
    assert!(
        flow.landing.starts_with(&format!("{WELCOME}?code=")),
        "{}",
        flow.landing
    );
    assert!(!flow.landing.contains("access_token"));
    let code = query(&flow.landing)["code"].clone();

    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=pkce",
        None,
        Some(json!({ "auth_code": code, "code_verifier": "x".repeat(43) })),
    )
    .await;
    assert_error(&r, 400, "bad_code_verifier");

    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=pkce",
        None,
        Some(json!({ "auth_code": code, "code_verifier": verifier })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["provider_token"].as_str().unwrap().len() > 10);
    assert_eq!(r.body["user"]["email"], mock.user().email.to_lowercase());
    assert_eq!(r.body["user"]["identities"][0]["provider"], "keycloak");
    assert_eq!(
        claims(r.body["access_token"].as_str().unwrap())["amr"][0]["method"],
        "oauth"
    );

    // Used once.
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=pkce",
        None,
        Some(json!({ "auth_code": code, "code_verifier": verifier })),
    )
    .await;
    assert_error(&r, 404, "flow_state_not_found");
}

#[tokio::test]
async fn auth_oauth_callback_refuses_a_wrong_or_missing_state() {
    let t = TestDb::new().await;
    let (mock, app) = setup(&t, "keycloak", &[]).await;
    let c = browser();
    let (_, provider_url) = hop(
        &c,
        &app.url(&format!(
            "/auth/v1/authorize?provider=keycloak&redirect_to={}",
            enc(WELCOME)
        )),
    )
    .await;
    let (_, callback_url) = hop(&c, &provider_url).await;
    let back = query(&callback_url);
    let state = &back["state"];
    let (payload, sig) = state.split_once('.').unwrap();
    // Another payload under the same signature (e.g. a redirect elsewhere), a foreign
    // signature, garbage, and none at all.
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        json!({"provider":"keycloak","referrer":"http://evil.test/","exp": 4102444800u64})
            .to_string(),
    );
    for bad in [
        format!("{forged_payload}.{sig}"),
        format!("{payload}.{}", &sig[1..]),
        "not-a-state".to_string(),
    ] {
        let (status, loc) = hop(
            &c,
            &app.url(&format!(
                "/auth/v1/callback?code={}&state={}",
                back["code"],
                enc(&bad)
            )),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{bad}");
        assert!(loc.starts_with(&format!("{SITE}?")), "{loc}");
        let q = query(&loc);
        assert_eq!(q["error"], "invalid_request");
        assert_eq!(q["error_code"], "bad_oauth_state");
        assert_eq!(q["error_description"], "OAuth callback with invalid state");
    }
    let (status, loc) = hop(
        &c,
        &app.url(&format!("/auth/v1/callback?code={}", back["code"])),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(query(&loc)["error_code"], "bad_oauth_callback");
    // The code was never taken to the provider, and nobody signed up.
    assert_eq!(mock.exchanges(), 0);
    assert_eq!(users_with_email(&t, &mock.user().email).await, 0);

    // The genuine state still works.
    let (_, landing) = hop(&c, &callback_url).await;
    assert!(fragment(&landing).contains_key("access_token"), "{landing}");
}

/// A flow whose ID token the mock spoils with `knobs`: the browser lands at `redirect_to`
/// with the error; no user, no session.
async fn refused(knobs: Knobs, description_has: &str) {
    let t = TestDb::new().await;
    let (mock, app) = setup(&t, "keycloak", &[]).await;
    mock.set_knobs(knobs);
    let flow = sign_in(
        &app,
        &format!("provider=keycloak&redirect_to={}", enc(WELCOME)),
    )
    .await;
    assert!(
        flow.landing.starts_with(&format!("{WELCOME}?")),
        "{}",
        flow.landing
    );
    assert!(!flow.landing.contains("access_token"));
    let q = query(&flow.landing);
    assert_eq!(q["error"], "server_error");
    assert_eq!(q["error_code"], "unexpected_failure");
    assert!(
        q["error_description"].contains(description_has),
        "{}",
        q["error_description"]
    );
    // Also in the fragment, as GoTrue still sends it.
    assert_eq!(fragment(&flow.landing)["error"], "server_error");
    assert_eq!(mock.exchanges(), 1);
    assert_eq!(users_with_email(&t, &mock.user().email).await, 0);
}

#[tokio::test]
async fn auth_oauth_wrong_nonce_is_refused() {
    refused(
        Knobs {
            wrong_nonce: true,
            ..Knobs::default()
        },
        "nonce",
    )
    .await;
}

#[tokio::test]
async fn auth_oauth_expired_id_token_is_refused() {
    refused(
        Knobs {
            expired: true,
            ..Knobs::default()
        },
        "expired",
    )
    .await;
}

#[tokio::test]
async fn auth_oauth_id_token_for_another_client_is_refused() {
    refused(
        Knobs {
            wrong_audience: true,
            ..Knobs::default()
        },
        "audience",
    )
    .await;
}

#[tokio::test]
async fn auth_oauth_provider_refusal_reaches_the_app() {
    let t = TestDb::new().await;
    let (mock, app) = setup(&t, "keycloak", &[]).await;
    mock.set_knobs(Knobs {
        deny: true,
        ..Knobs::default()
    });
    let flow = sign_in(
        &app,
        &format!("provider=keycloak&redirect_to={}", enc(WELCOME)),
    )
    .await;
    let q = query(&flow.landing);
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["error_description"], "The user denied access");
    assert_eq!(mock.exchanges(), 0);
}

#[tokio::test]
async fn auth_oauth_disabled_or_unknown_provider_is_gotrues_400() {
    let t = TestDb::new().await;
    let (_mock, app) = setup(&t, "keycloak", &[]).await;
    let c = browser();
    for (provider, msg) in [
        ("github", "Unsupported provider: provider is not enabled"),
        ("google", "Unsupported provider: provider is not enabled"),
        (
            "myspace",
            "Unsupported provider: Provider myspace could not be found",
        ),
    ] {
        let r = c
            .get(app.url(&format!("/auth/v1/authorize?provider={provider}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error_code"], "validation_failed");
        assert_eq!(b["msg"], msg);
    }
    // signInWithIdToken with a disabled provider.
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=id_token",
        None,
        Some(json!({ "provider": "google", "id_token": "x.y.z" })),
    )
    .await;
    assert_error(&r, 400, "provider_disabled");
    assert_eq!(
        r.body["msg"],
        "Provider (issuer \"https://accounts.google.com\") is not enabled"
    );
    // A provider enabled without its secret is not usable either.
    let t2 = TestDb::new().await;
    let app2 = t2
        .spawn_app_with(&[
            "--external-github-enabled",
            "true",
            "--external-github-client-id",
            "x",
        ])
        .await;
    let r = c
        .get(app2.url("/auth/v1/authorize?provider=github"))
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["msg"], "Unsupported provider: missing OAuth secret");
}

#[tokio::test]
async fn auth_oauth_links_a_verified_address_to_the_existing_password_user() {
    let t = TestDb::new().await;
    let mock = MockOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    let flags = provider_flags("keycloak", &mock);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = t.spawn_autoconfirm_app_with(&args).await;
    let addr = email("linked");
    let s = signup(&app, &addr).await;
    let user_id = s["user"]["id"].clone();
    mock.set_user(MockUser {
        sub: "kc-linked".into(),
        email: addr.to_uppercase(),
        email_verified: true,
        name: "Linked".into(),
    });
    let flow = sign_in(&app, "provider=keycloak").await;
    // No redirect_to: the site URL.
    assert!(
        flow.landing.starts_with(&format!("{SITE}#")),
        "{}",
        flow.landing
    );
    let u = user_of(&app, &fragment(&flow.landing)["access_token"]).await;
    assert_eq!(u["id"], user_id, "the same account, not a new one");
    assert_eq!(providers_of(&u), ["email", "keycloak"]);
    assert_eq!(u["app_metadata"]["providers"], json!(["email", "keycloak"]));
    // A confirmed account keeps its password.
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({ "email": addr, "password": PW })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn auth_oauth_unverified_address_links_to_nobody() {
    let t = TestDb::new().await;
    let (mock, app) = setup(&t, "keycloak", &[]).await;
    let addr = email("unverified");
    let r = call(
        &app,
        Method::POST,
        "/admin/users",
        Some(&app.service_role_key),
        Some(json!({ "email": addr, "password": PW, "email_confirm": true })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    mock.set_user(MockUser {
        sub: "kc-unverified".into(),
        email: addr.clone(),
        email_verified: false,
        name: "Somebody".into(),
    });
    let flow = sign_in(&app, "provider=keycloak").await;
    let q = query(&flow.landing);
    assert_eq!(q["error"], "access_denied", "{}", flow.landing);
    assert_eq!(q["error_code"], "provider_email_needs_verification");
    assert!(!flow.landing.contains("access_token"));
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({ "email": addr, "password": PW })),
    )
    .await;
    let u = user_of(&app, r.body["access_token"].as_str().unwrap()).await;
    assert_eq!(providers_of(&u), ["email"], "unchanged");
    assert_eq!(users_with_email(&t, &addr).await, 1);
}

#[tokio::test]
async fn auth_oauth_verified_identity_closes_an_unconfirmed_accounts_password() {
    // Somebody signed up with the victim's address (never confirmed); the victim then signs
    // in with a provider that vouches for the address: the account becomes the victim's and
    // the squatter's password stops working.
    let t = TestDb::new().await;
    let (mock, app) = setup(&t, "keycloak", &[]).await;
    let addr = email("squatted");
    let r = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({ "email": addr, "password": PW })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let squatter_id = r.body["id"].clone();
    mock.set_user(MockUser {
        sub: "kc-victim".into(),
        email: addr.clone(),
        email_verified: true,
        name: "Victim".into(),
    });
    let flow = sign_in(&app, "provider=keycloak").await;
    let u = user_of(&app, &fragment(&flow.landing)["access_token"]).await;
    assert_eq!(u["id"], squatter_id);
    assert!(u["email_confirmed_at"].is_string());
    assert_eq!(providers_of(&u), ["keycloak"]);
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({ "email": addr, "password": PW })),
    )
    .await;
    assert_error(&r, 400, "invalid_credentials");
}

#[tokio::test]
async fn auth_oauth_github_flow_reads_the_api() {
    let t = TestDb::new().await;
    let (mock, app) = setup(&t, "github", &[]).await;
    let flow = sign_in(
        &app,
        &format!("provider=github&redirect_to={}", enc(WELCOME)),
    )
    .await;
    assert!(flow
        .provider_url
        .starts_with(&format!("{}/login/oauth/authorize?", mock.issuer())));
    assert!(!query(&flow.provider_url).contains_key("nonce"));
    let u = user_of(&app, &fragment(&flow.landing)["access_token"]).await;
    assert_eq!(providers_of(&u), ["github"]);
    assert_eq!(u["email"], mock.user().email.to_lowercase());
    assert!(u["identities"][0]["id"]
        .as_str()
        .unwrap()
        .bytes()
        .all(|b| b.is_ascii_digit()));
    assert_eq!(
        u["user_metadata"]["avatar_url"],
        "https://avatars.example/u.png"
    );
}

fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[tokio::test]
async fn auth_oauth_id_token_grant_verifies_the_providers_token() {
    let t = TestDb::new().await;
    let (mock, app) = setup(&t, "keycloak", &[]).await;
    let grant = |body: Value| {
        let app = &app;
        async move {
            call(
                app,
                Method::POST,
                "/token?grant_type=id_token",
                None,
                Some(body),
            )
            .await
        }
    };
    let raw = "raw-nonce-0123456789";
    let token = mock.id_token(Some(&sha256_hex(raw)));

    let r = grant(json!({ "provider": "keycloak", "id_token": token, "nonce": "another" })).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"error": "invalid nonce", "error_description": "Nonces mismatch"})
    );
    let r = grant(json!({ "provider": "keycloak", "id_token": token })).await;
    assert_eq!(
        r.body["error_description"],
        "Passed nonce and nonce in id_token should either both exist or not."
    );
    let r = grant(json!({ "provider": "keycloak" })).await;
    assert_eq!(r.body["error_description"], "id_token required");
    // A token whose payload was changed after signing.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"iss": mock.issuer(), "sub": "someone-else", "aud": CLIENT_ID, "exp": 4102444800u64}).to_string());
    let r = grant(json!({ "provider": "keycloak", "id_token": parts.join(".") })).await;
    assert_eq!(
        r.body,
        json!({"error": "invalid request", "error_description": "Bad ID token"})
    );
    // Another issuer's token signed by the same key.
    let foreign = mock.sign(&json!({"iss": "http://elsewhere.test", "sub": "x", "aud": CLIENT_ID, "exp": 4102444800u64}));
    let r = grant(json!({ "provider": "keycloak", "id_token": foreign })).await;
    assert_eq!(r.body["error_description"], "Bad ID token");

    let r = grant(json!({ "provider": "keycloak", "id_token": token, "nonce": raw })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["email"], mock.user().email.to_lowercase());
    assert_eq!(r.body["user"]["identities"][0]["provider"], "keycloak");
    let first_id = r.body["user"]["id"].clone();
    // The issuer instead of the provider's name finds the configured provider.
    let r = grant(
        json!({ "issuer": mock.issuer(), "client_id": CLIENT_ID, "id_token": token, "nonce": raw }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], first_id);

    mock.set_knobs(Knobs {
        expired: true,
        ..Knobs::default()
    });
    let r = grant(json!({ "provider": "keycloak", "id_token": mock.id_token(None) })).await;
    assert_eq!(r.body["error_description"], "Bad ID token");
    mock.set_knobs(Knobs {
        wrong_audience: true,
        ..Knobs::default()
    });
    let r = grant(json!({ "provider": "keycloak", "id_token": mock.id_token(None) })).await;
    assert_eq!(
        r.body["error_description"],
        "Unacceptable audience in id_token"
    );
}

#[tokio::test]
async fn auth_oauth_manual_linking_is_off_by_default() {
    let t = TestDb::new().await;
    let (_mock, app) = setup(&t, "keycloak", &["--mailer-autoconfirm", "true"]).await;
    let s = signup(&app, &email("nolink")).await;
    let at = s["access_token"].as_str().unwrap();
    let r = call(
        &app,
        Method::GET,
        "/user/identities/authorize?provider=keycloak&skip_http_redirect=true",
        Some(at),
        None,
    )
    .await;
    assert_error(&r, 404, "manual_linking_disabled");
    assert_eq!(r.body["msg"], "Manual linking is disabled");
    let id = s["user"]["identities"][0]["identity_id"].as_str().unwrap();
    let r = call(
        &app,
        Method::DELETE,
        &format!("/user/identities/{id}"),
        Some(at),
        None,
    )
    .await;
    assert_error(&r, 404, "manual_linking_disabled");
    // Without a session it is the session that is missing.
    let r = call(
        &app,
        Method::GET,
        "/user/identities/authorize?provider=keycloak",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn auth_oauth_link_and_unlink_identities() {
    let t = TestDb::new().await;
    let (mock, app) = setup(
        &t,
        "keycloak",
        &[
            "--mailer-autoconfirm",
            "true",
            "--security-manual-linking-enabled",
            "true",
        ],
    )
    .await;
    let addr = email("linker");
    let s = signup(&app, &addr).await;
    let at = s["access_token"].as_str().unwrap().to_string();
    let user_id = s["user"]["id"].clone();
    // The provider knows the user under another address.
    let other = email("elsewhere");
    mock.set_user(MockUser {
        sub: "kc-linker".into(),
        email: other.clone(),
        email_verified: true,
        name: "Linker".into(),
    });
    let r = call(
        &app,
        Method::GET,
        &format!(
            "/user/identities/authorize?provider=keycloak&redirect_to={}&skip_http_redirect=true",
            enc(WELCOME)
        ),
        Some(&at),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let url = r.body["url"].as_str().unwrap();
    assert!(url.starts_with(&mock.issuer()));
    let c = browser();
    let (_, callback_url) = hop(&c, url).await;
    let (_, landing) = hop(&c, &callback_url).await;
    let f = fragment(&landing);
    let u = user_of(&app, &f["access_token"]).await;
    assert_eq!(u["id"], user_id);
    assert_eq!(u["email"], addr, "the account keeps its address");
    assert_eq!(providers_of(&u), ["email", "keycloak"]);

    // The same identity cannot be linked twice.
    let r = call(
        &app,
        Method::GET,
        &format!(
            "/user/identities/authorize?provider=keycloak&redirect_to={}&skip_http_redirect=true",
            enc(WELCOME)
        ),
        Some(&at),
        None,
    )
    .await;
    let (_, callback_url) = hop(&c, r.body["url"].as_str().unwrap()).await;
    let (_, landing) = hop(&c, &callback_url).await;
    assert_eq!(query(&landing)["error_code"], "identity_already_exists");
    assert_eq!(
        query(&landing)["error_description"],
        "Identity is already linked"
    );

    // Unlink: a malformed id, an id that is not the user's, then the provider's identity.
    let r = call(
        &app,
        Method::DELETE,
        "/user/identities/not-a-uuid",
        Some(&at),
        None,
    )
    .await;
    assert_error(&r, 404, "validation_failed");
    let r = call(
        &app,
        Method::DELETE,
        &format!("/user/identities/{}", Uuid::new_v4()),
        Some(&at),
        None,
    )
    .await;
    assert_error(&r, 422, "identity_not_found");
    let kc = u["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["provider"] == "keycloak")
        .unwrap()["identity_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = call(
        &app,
        Method::DELETE,
        &format!("/user/identities/{kc}"),
        Some(&at),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({}));
    let u = user_of(&app, &at).await;
    assert_eq!(providers_of(&u), ["email"]);
    assert_eq!(u["app_metadata"]["providers"], json!(["email"]));
    // Never the last one.
    let last = u["identities"][0]["identity_id"].as_str().unwrap();
    let r = call(
        &app,
        Method::DELETE,
        &format!("/user/identities/{last}"),
        Some(&at),
        None,
    )
    .await;
    assert_error(&r, 422, "single_identity_not_deletable");
}

#[tokio::test]
async fn auth_oauth_supabase_js_e2e() {
    let t = TestDb::new().await;
    let (mock, app) = setup(&t, "keycloak", &["--uri-allow-list", WELCOME]).await;
    let raw = format!("nonce-{}", Uuid::new_v4().simple());
    // The ID token for signInWithIdToken is for another account of the provider than the
    // one the redirect flow signs in (each test starts from its own user).
    let redirect_user = mock.user();
    let id_user = MockUser {
        sub: "kc-id-token".into(),
        email: email("idtoken"),
        email_verified: true,
        name: "Id Token".into(),
    };
    mock.set_user(id_user.clone());
    let id_token = mock.id_token(Some(&sha256_hex(&raw)));
    mock.set_user(redirect_user.clone());
    let id_email = id_user.email.to_lowercase();
    app.run_node_test_with_env(
        "oauth.test.js",
        &[
            ("MOCK_EMAIL", &redirect_user.email.to_lowercase()),
            ("ID_EMAIL", &id_email),
            ("ID_TOKEN", &id_token),
            ("RAW_NONCE", &raw),
        ],
    )
    .await;
    assert_eq!(users_with_email(&t, &id_user.email).await, 1);
}

#[tokio::test]
async fn auth_oauth_pkce_starts_are_rate_limited_per_ip() {
    // Each PKCE start writes an auth.flow_state row for an anonymous caller: past the
    // sign-in limit (3 here) the next start is 429 and writes nothing.
    let t = TestDb::new().await;
    let (_mock, app) = setup(&t, "keycloak", &["--rate-limit-sign-in-sign-ups", "3"]).await;
    let c = browser();
    let url = app.url(
        "/auth/v1/authorize?provider=keycloak&code_challenge=\
         E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=s256",
    );
    for _ in 0..3 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 302);
    }
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let rows: i64 = t
        .superuser()
        .await
        .query_one("select count(*) from auth.flow_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3);
}

#[tokio::test]
async fn auth_oauth_abandoned_flow_states_are_swept_by_new_flows() {
    // Flow states of sign-ins never finished: a new flow removes those over 24 hours old,
    // and leaves recent ones (a sign-in in progress) alone.
    let t = TestDb::new().await;
    let (_mock, app) = setup(&t, "keycloak", &[]).await;
    let su = t.superuser().await;
    su.batch_execute(
        "insert into auth.flow_state (auth_code, code_challenge_method, code_challenge,
           authentication_method, provider_type, created_at)
         select gen_random_uuid()::text, 's256', 'x', 'oauth', 'keycloak', now() - interval '2 days'
           from generate_series(1, 5);
         insert into auth.flow_state (auth_code, code_challenge_method, code_challenge,
           authentication_method, provider_type, created_at)
         values (gen_random_uuid()::text, 's256', 'x', 'oauth', 'keycloak', now() - interval '1 hour');",
    )
    .await
    .unwrap();
    let r = browser()
        .get(app.url(
            "/auth/v1/authorize?provider=keycloak&code_challenge=\
             E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=s256",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let (old, recent): (i64, i64) = {
        let row = su
            .query_one(
                "select count(*) filter (where created_at < now() - interval '1 day'),
                        count(*) filter (where created_at >= now() - interval '1 day')
                   from auth.flow_state",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(old, 0, "abandoned flows swept");
    assert_eq!(recent, 2, "the hour-old flow and the new one kept");
}
