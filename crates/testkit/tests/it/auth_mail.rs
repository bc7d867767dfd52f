//! E-mail over SMTP, against the harness's SMTP sink: every kind of e-mail arrives with its
//! subject, recipient, link and code; the link or the code signs in once; e-mail changes need
//! both addresses; custom templates; a slow or failing SMTP server never holds a request and
//! the message is retried until it arrives.
use std::time::{Duration, Instant};

use agencyflow_testkit::smtp::{Mail, SinkOptions, SmtpSink};
use agencyflow_testkit::{TestApp, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::auth::{assert_error, call, claims, email, generate_link, PW};

const FROM: &str = "auth@agency.test";

/// A server mailing through `sink` (plain SMTP on localhost), site URL `http://app.test`.
async fn mail_app(t: &TestDb, sink: &SmtpSink, extra: &[&str]) -> TestApp {
    let port = sink.port.to_string();
    let mut args = vec![
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &port,
        "--smtp-tls",
        "none",
        "--smtp-admin-email",
        FROM,
        "--smtp-sender-name",
        "Agency",
        "--site-url",
        "http://app.test",
    ];
    args.extend_from_slice(extra);
    t.spawn_app_with(&args).await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Follows an e-mailed link without following the redirect: the `Location`.
async fn follow(link: &str) -> (StatusCode, String) {
    let r = no_redirects().get(link).send().await.unwrap();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status(), loc)
}

fn assert_link(m: &Mail, app: &TestApp, kind: &str) -> String {
    let link = m.link().unwrap_or_else(|| panic!("no link in {}", m.body));
    assert!(
        link.starts_with(&format!("{}/auth/v1/verify?token=", app.base)),
        "{link}"
    );
    assert!(link.contains(&format!("&type={kind}&")), "{link}");
    link
}

#[tokio::test]
async fn auth_mail_signup_confirmation_arrives_and_its_link_or_code_signs_in_once() {
    let sink = SmtpSink::start().await;
    let t = TestDb::new().await;
    let app = mail_app(
        &t,
        &sink,
        &["--smtp-user", "mailer", "--smtp-pass", "s3cret"],
    )
    .await;
    // Sign-up: no session until the address is proved.
    let e = email("confirm");
    let r = call(
        &app,
        Method::POST,
        "/signup?redirect_to=http%3A%2F%2Fapp.test%2Fwelcome",
        None,
        Some(json!({"email": e, "password": PW, "data": {"full_name": "Ada"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("access_token").is_none(), "{}", r.body);
    let m = sink
        .wait_for_mail_to(&e, "Confirm your email address")
        .await;
    assert_eq!(m.to, vec![e.clone()]);
    assert_eq!(m.from, FROM);
    assert_eq!(m.from_header, format!("Agency <{FROM}>"));
    assert_eq!(m.auth.as_deref(), Some("mailer:s3cret"));
    let link = assert_link(&m, &app, "signup");
    assert!(
        link.ends_with("&redirect_to=http%3A%2F%2Fapp.test%2Fwelcome"),
        "{link}"
    );
    assert!(m.code().is_some(), "{}", m.body);
    // Not signed in before the link is followed.
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": PW})),
    )
    .await;
    assert_error(&r, 400, "email_not_confirmed");
    // The link signs in once: a session in the fragment, then the error.
    let (status, loc) = follow(&link).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        loc.starts_with("http://app.test/welcome#access_token="),
        "{loc}"
    );
    let at = loc
        .split("access_token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert_eq!(claims(at)["email"], e);
    assert_eq!(claims(at)["amr"][0]["method"], "email/signup");
    let (_, again) = follow(&link).await;
    assert!(
        again.contains("#error=access_denied&error_code=otp_expired"),
        "{again}"
    );
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Another sign-up, proved by the code typed with the address; once.
    let e2 = email("code");
    let r = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": e2, "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = sink
        .wait_for_mail_to(&e2, "Confirm your email address")
        .await;
    let code = m.code().unwrap();
    let verify = || {
        call(
            &app,
            Method::POST,
            "/verify",
            None,
            Some(json!({"type": "signup", "email": e2, "token": code})),
        )
    };
    let s = verify().await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.body["user"]["email"], e2);
    assert!(s.body["user"]["email_confirmed_at"].is_string());
    assert_error(&verify().await, 403, "otp_expired");
    let settings = call(&app, Method::GET, "/settings", None, None).await;
    assert_eq!(settings.body["mailer_autoconfirm"], false);
}

#[tokio::test]
async fn auth_mail_magic_link_recovery_invite_and_reauthentication_arrive() {
    let sink = SmtpSink::start().await;
    let t = TestDb::new().await;
    let app = mail_app(&t, &sink, &[]).await;
    let e = email("magic");
    let r = call(
        &app,
        Method::POST,
        "/admin/users",
        Some(&app.service_role_key.clone()),
        Some(json!({"email": e, "password": PW, "email_confirm": true})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Magic link: the link signs in once.
    let r = call(&app, Method::POST, "/otp", None, Some(json!({"email": e}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = sink.wait_for_mail_to(&e, "Your sign-in link").await;
    let link = assert_link(&m, &app, "magiclink");
    let (status, loc) = follow(&link).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(loc.starts_with("http://app.test#access_token="), "{loc}");
    let (_, again) = follow(&link).await;
    assert!(again.contains("error_code=otp_expired"), "{again}");

    // Recovery: the code signs in once, then the password can be changed.
    let r = call(
        &app,
        Method::POST,
        "/recover",
        None,
        Some(json!({"email": e})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = sink.wait_for_mail_to(&e, "Reset your password").await;
    assert_link(&m, &app, "recovery");
    let code = m.code().unwrap();
    let s = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "recovery", "email": e, "token": code})),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let at = s.body["access_token"].as_str().unwrap().to_string();
    let r = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at),
        Some(json!({"password": "a-brand-new-password"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let again = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "recovery", "email": e, "token": code})),
    )
    .await;
    assert_error(&again, 403, "otp_expired");

    // Reauthentication: the code (also in the subject) guards a password change.
    let r = call(&app, Method::GET, "/reauthenticate", Some(&at), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = sink.wait_for_mail_to(&e, "is your verification code").await;
    let code = m.subject.split(' ').next().unwrap().to_string();
    assert_eq!(m.code().as_deref(), Some(code.as_str()));
    let r = call(
        &app,
        Method::PUT,
        "/user",
        Some(&at),
        Some(json!({"password": "yet-another-password", "nonce": code})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // An invite: the link signs the invitee in.
    let invited = email("invited");
    let r = call(
        &app,
        Method::POST,
        "/invite",
        Some(&app.service_role_key.clone()),
        Some(json!({"email": invited, "data": {"team": "delivery"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = sink.wait_for_mail_to(&invited, "You've been invited").await;
    assert!(m.body.contains("http://app.test"), "{}", m.body);
    let link = assert_link(&m, &app, "invite");
    let (status, loc) = follow(&link).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(loc.contains("#access_token="), "{loc}");
    assert!(loc.contains("&type=invite"), "{loc}");
}

#[tokio::test]
async fn auth_mail_email_change_needs_both_addresses() {
    let sink = SmtpSink::start().await;
    let t = TestDb::new().await;
    let app = mail_app(&t, &sink, &[]).await;
    let old = email("old");
    let r = call(
        &app,
        Method::POST,
        "/admin/users",
        Some(&app.service_role_key.clone()),
        Some(json!({"email": old, "password": PW, "email_confirm": true})),
    )
    .await;
    let user_id = r.body["id"].as_str().unwrap().to_string();
    let s = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": old, "password": PW})),
    )
    .await;
    let at = s.body["access_token"].as_str().unwrap().to_string();
    let new = email("new");
    let r = call(
        &app,
        Method::PUT,
        "/user?redirect_to=http%3A%2F%2Fapp.test%2Fsettings",
        Some(&at),
        Some(json!({"email": new})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["email"], old);
    assert_eq!(r.body["new_email"], new);
    // One e-mail to each address.
    let to_new = sink
        .wait_for_mail_to(&new, "Confirm your email change")
        .await;
    let to_old = sink
        .wait_for_mail_to(&old, "Confirm your email change")
        .await;
    for m in [&to_new, &to_old] {
        assert!(m.body.contains(&old) && m.body.contains(&new), "{}", m.body);
    }
    let new_link = assert_link(&to_new, &app, "email_change");
    assert_ne!(to_new.link(), to_old.link());
    // The new address's link alone changes nothing: GoTrue's message in the fragment.
    let (status, loc) = follow(&new_link).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        loc,
        "http://app.test/settings#message=Confirmation+link+accepted.+Please+proceed+to+confirm+link+sent+to+the+other+email"
    );
    let me = call(&app, Method::GET, "/user", Some(&at), None).await;
    assert_eq!(me.body["email"], old);
    // Used once: the same link again is refused.
    let (_, again) = follow(&new_link).await;
    assert!(again.contains("error_code=otp_expired"), "{again}");
    // The current address's code completes the change.
    let s = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "email_change", "email": old, "token": to_old.code().unwrap()})),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.body["user"]["email"], new);
    assert!(s.body["user"].get("new_email").is_none(), "{}", s.body);
    assert_eq!(
        claims(s.body["access_token"].as_str().unwrap())["email"],
        new
    );
    let r = call(
        &app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": new, "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // generate_link makes both links (nothing mailed); POST /verify answers the first with
    // GoTrue's message, the second with a session.
    let third = email("third");
    let cur = generate_link(
        &app,
        json!({"type": "email_change_current", "email": new, "new_email": third}),
    )
    .await;
    assert_eq!(cur.status, 200, "{}", cur.body);
    assert_eq!(cur.body["verification_type"], "email_change_current");
    assert!(cur.body["action_link"]
        .as_str()
        .unwrap()
        .contains("&type=email_change&"));
    let nw = generate_link(
        &app,
        json!({"type": "email_change_new", "email": new, "new_email": third}),
    )
    .await;
    assert_eq!(nw.status, 200, "{}", nw.body);
    let first = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "email_change", "token_hash": cur.body["hashed_token"]})),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.body,
        json!({"msg": "Confirmation link accepted. Please proceed to confirm link sent to the other email", "code": "200"})
    );
    let second = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "email_change", "token_hash": nw.body["hashed_token"]})),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["user"]["email"], third);
    assert_eq!(second.body["user"]["id"], user_id.as_str());
    // Nothing was mailed for generate_link.
    assert!(sink
        .messages()
        .iter()
        .all(|m| !m.to.iter().any(|t| t == &third)));
}

#[tokio::test]
async fn auth_mail_templates_and_subjects_from_files() {
    let sink = SmtpSink::start().await;
    let t = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("af-templates-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("confirmation.html");
    std::fs::write(
        &file,
        "<p>Hello {{ .Data.full_name }} ({{ .Email }}) from {{ .SiteURL }}</p>\n\
         <p><a href=\"{{ .ConfirmationURL }}\">confirm</a> code={{ .Token }} hash={{ .TokenHash }} back={{ .RedirectTo }}</p>",
    )
    .unwrap();
    let path = file.display().to_string();
    let app = mail_app(
        &t,
        &sink,
        &[
            "--mailer-templates-confirmation",
            &path,
            "--mailer-subjects-confirmation",
            "Welcome aboard, {{ .Email }}",
        ],
    )
    .await;
    let e = email("templated");
    let r = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": e, "password": PW, "data": {"full_name": "Grace <Hopper>"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = sink.wait_for_mail_to(&e, "Welcome aboard").await;
    assert_eq!(m.subject, format!("Welcome aboard, {e}"));
    assert!(
        m.body.contains(&format!(
            "Hello Grace &lt;Hopper&gt; ({e}) from http://app.test"
        )),
        "{}",
        m.body
    );
    let link = m.link().unwrap();
    let hash = m
        .body
        .split("hash=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(
        link.contains(&format!("token={hash}&type=signup")),
        "{link}"
    );
    assert!(m.body.contains("back=http://app.test"), "{}", m.body);
    // The code in the custom body confirms the address.
    let code = m.body.split("code=").nth(1).unwrap()[..6].to_string();
    let s = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "signup", "email": e, "token": code})),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn auth_mail_slow_smtp_server_never_holds_the_request() {
    let sink = SmtpSink::start_with(SinkOptions {
        greeting_delay: Duration::from_secs(3),
        ..SinkOptions::default()
    })
    .await;
    let t = TestDb::new().await;
    let app = mail_app(&t, &sink, &[]).await;
    let e = email("slow");
    let started = Instant::now();
    let r = call(
        &app,
        Method::POST,
        "/signup",
        None,
        Some(json!({"email": e, "password": PW})),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        took < Duration::from_millis(2500),
        "the sign-up waited for the SMTP server: {took:?}"
    );
    assert!(sink.messages().is_empty());
    let m = sink
        .wait_for_mail_to(&e, "Confirm your email address")
        .await;
    assert!(m.link().is_some());
}

#[tokio::test]
async fn auth_mail_failing_smtp_server_is_retried_until_the_message_arrives() {
    let sink = SmtpSink::start_with(SinkOptions {
        reject_first: 3,
        ..SinkOptions::default()
    })
    .await;
    let t = TestDb::new().await;
    let app = mail_app(&t, &sink, &["--smtp-retry-backoff-ms", "100"]).await;
    let e = email("retry");
    let started = Instant::now();
    let r = call(&app, Method::POST, "/otp", None, Some(json!({"email": e}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(2));
    let m = sink
        .wait_for_mail_to(&e, "Confirm your email address")
        .await;
    assert_eq!(sink.transactions(), 4, "three refusals, then the delivery");
    assert_eq!(sink.messages().len(), 1);
    // The delivered code works.
    let s = call(
        &app,
        Method::POST,
        "/verify",
        None,
        Some(json!({"type": "email", "email": e, "token": m.code().unwrap()})),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
}

/// supabase-js signs up, the e-mails arrive at the sink, and supabase-js confirms with what
/// they carry (the link's `token_hash`, and the code).
#[tokio::test]
async fn auth_mail_supabase_js_e2e() {
    let sink = SmtpSink::start().await;
    let t = TestDb::new().await;
    let app = mail_app(&t, &sink, &[]).await;
    let (by_link, by_code) = (email("js-link"), email("js-code"));
    app.run_node_test_with_env(
        "mail.test.js",
        &[
            ("MAIL_STEP", "signup"),
            ("MAIL_LINK_ADDR", &by_link),
            ("MAIL_CODE_ADDR", &by_code),
        ],
    )
    .await;
    let m = sink
        .wait_for_mail_to(&by_link, "Confirm your email address")
        .await;
    let link = assert_link(&m, &app, "signup");
    assert!(
        link.ends_with("&redirect_to=http%3A%2F%2Fapp.test%2Fwelcome"),
        "{link}"
    );
    let token_hash = link
        .split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let code = sink
        .wait_for_mail_to(&by_code, "Confirm your email address")
        .await
        .code()
        .unwrap();
    app.run_node_test_with_env(
        "mail.test.js",
        &[
            ("MAIL_STEP", "confirm"),
            ("MAIL_LINK_ADDR", &by_link),
            ("MAIL_CODE_ADDR", &by_code),
            ("MAIL_TOKEN_HASH", &token_hash),
            ("MAIL_CODE", &code),
        ],
    )
    .await;
}
