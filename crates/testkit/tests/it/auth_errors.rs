//! Errors as GoTrue gives them (issue #17 item 6): for every request supabase-js can send
//! that this server refuses (an invalid address, a verifyOtp without its fields, a feature
//! that is off: SAML SSO, phone sign-in without an SMS provider, Web3 sign-in), the status,
//! `error_code` and message GoTrue answers with, in both wire shapes, never a bare 404.
use agencyflow_testkit::TestDb;
use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::{call_with, email, PW};

const INVALID_EMAIL: &str = "Unable to validate email address: invalid format";

struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    admin: bool,
    body: Option<Value>,
    status: u16,
    code: &'static str,
    msg: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: &'static str,
    body: Option<Value>,
    (status, code, msg): (u16, &'static str, &'static str),
) -> Case {
    Case {
        what,
        method,
        path,
        admin: path.starts_with("/admin") || path == "/invite",
        body,
        status,
        code,
        msg,
    }
}

fn cases() -> Vec<Case> {
    let phone = "+15550100123";
    let long = format!("{}@example.com", "a".repeat(250));
    let long: &'static str = Box::leak(long.into_boxed_str());
    let bad = (400, "validation_failed", INVALID_EMAIL);
    let v = |m| (400, "validation_failed", m);
    use Method as M;
    vec![
        // Invalid e-mail addresses.
        case(
            "signUp, malformed address",
            M::POST,
            "/signup",
            Some(json!({"email": "not-an-email", "password": PW})),
            bad,
        ),
        case(
            "signUp, address too long",
            M::POST,
            "/signup",
            Some(json!({"email": long, "password": PW})),
            v("An email address is too long"),
        ),
        case(
            "signUp without password",
            M::POST,
            "/signup",
            Some(json!({"email": email("nopw")})),
            v("Signup requires a valid password"),
        ),
        case(
            "signUp with email and phone",
            M::POST,
            "/signup",
            Some(json!({"email": email("both"), "phone": phone, "password": PW})),
            v("Only an email address or phone number should be provided on signup."),
        ),
        case(
            "admin.createUser, malformed address",
            M::POST,
            "/admin/users",
            Some(json!({"email": "ada at example.com", "password": PW})),
            bad,
        ),
        case(
            "admin.inviteUserByEmail, malformed address",
            M::POST,
            "/invite",
            Some(json!({"email": "ada@"})),
            bad,
        ),
        case(
            "admin.inviteUserByEmail, no address",
            M::POST,
            "/invite",
            Some(json!({})),
            v("An email address is required"),
        ),
        case(
            "admin.generateLink magiclink, malformed address",
            M::POST,
            "/admin/generate_link",
            Some(json!({"type": "magiclink", "email": "@example.com"})),
            bad,
        ),
        case(
            "admin.generateLink signup, malformed address",
            M::POST,
            "/admin/generate_link",
            Some(json!({"type": "signup", "email": "a b@example.com", "password": PW})),
            bad,
        ),
        case(
            "admin.generateLink invite, malformed address",
            M::POST,
            "/admin/generate_link",
            Some(json!({"type": "invite", "email": "nope"})),
            bad,
        ),
        case(
            "signInWithOtp, malformed address",
            M::POST,
            "/otp",
            Some(json!({"email": "nope", "create_user": true})),
            bad,
        ),
        case(
            "resetPasswordForEmail, malformed address",
            M::POST,
            "/recover",
            Some(json!({"email": "nope"})),
            bad,
        ),
        case(
            "resend signup, malformed address",
            M::POST,
            "/resend",
            Some(json!({"type": "signup", "email": "nope"})),
            bad,
        ),
        // verifyOtp with missing or conflicting fields.
        case(
            "verifyOtp without type",
            M::POST,
            "/verify",
            Some(json!({"token": "123456", "email": email("v")})),
            v("Verify requires a verification type"),
        ),
        case(
            "verifyOtp without token or token_hash",
            M::POST,
            "/verify",
            Some(json!({"type": "email", "email": email("v")})),
            v("Verify requires either a token or a token hash"),
        ),
        case(
            "verifyOtp with token and token_hash",
            M::POST,
            "/verify",
            Some(json!({"type": "email", "token": "123456", "token_hash": "abc"})),
            v("Verify requires either a token or a token hash"),
        ),
        case(
            "verifyOtp code without email or phone",
            M::POST,
            "/verify",
            Some(json!({"type": "email", "token": "123456"})),
            v("Only an email address or phone number should be provided on verify"),
        ),
        case(
            "verifyOtp code with email and phone",
            M::POST,
            "/verify",
            Some(json!({"type": "email", "token": "123456", "email": email("v"), "phone": phone})),
            v("Only an email address or phone number should be provided on verify"),
        ),
        case(
            "verifyOtp token_hash with email",
            M::POST,
            "/verify",
            Some(json!({"type": "magiclink", "token_hash": "abc", "email": email("v")})),
            v("Only the token_hash and type should be provided"),
        ),
        case(
            "verifyOtp code, malformed address",
            M::POST,
            "/verify",
            Some(json!({"type": "email", "token": "123456", "email": "nope"})),
            bad,
        ),
        case(
            "verifyOtp unknown type",
            M::POST,
            "/verify",
            Some(json!({"type": "bogus", "token_hash": "abc"})),
            v("Unsupported verification type"),
        ),
        case(
            "verify link without type",
            M::GET,
            "/verify?token=abc",
            None,
            v("Verify requires a verification type"),
        ),
        case(
            "verify link without token",
            M::GET,
            "/verify?type=signup",
            None,
            v("Verify requires a token or a token hash"),
        ),
        // Phone sign-in without an SMS provider.
        case(
            "signUp with phone",
            M::POST,
            "/signup",
            Some(json!({"phone": phone, "password": PW})),
            (400, "phone_provider_disabled", "Phone signups are disabled"),
        ),
        case(
            "signInWithOtp phone",
            M::POST,
            "/otp",
            Some(json!({"phone": phone, "create_user": true})),
            (400, "phone_provider_disabled", "Unsupported phone provider"),
        ),
        case(
            "signInWithOtp without email or phone",
            M::POST,
            "/otp",
            Some(json!({"create_user": true})),
            v("One of email or phone must be set"),
        ),
        case(
            "signInWithPassword phone",
            M::POST,
            "/token?grant_type=password",
            Some(json!({"phone": phone, "password": PW})),
            (422, "phone_provider_disabled", "Phone logins are disabled"),
        ),
        case(
            "resend sms",
            M::POST,
            "/resend",
            Some(json!({"type": "sms", "phone": phone})),
            (400, "phone_provider_disabled", "Phone logins are disabled"),
        ),
        case(
            "resend sms without phone",
            M::POST,
            "/resend",
            Some(json!({"type": "sms"})),
            v("Type provided requires a phone number"),
        ),
        case(
            "resend signup without email",
            M::POST,
            "/resend",
            Some(json!({"type": "signup"})),
            v("Type provided requires an email address"),
        ),
        case(
            "resend unknown type",
            M::POST,
            "/resend",
            Some(json!({"type": "bogus", "email": email("r")})),
            v("Missing one of these types: signup, email_change, sms, phone_change"),
        ),
        case(
            "verifyOtp sms (no code was ever sent)",
            M::POST,
            "/verify",
            Some(json!({"type": "sms", "phone": phone, "token": "123456"})),
            (403, "otp_expired", "Token has expired or is invalid"),
        ),
        case(
            "verifyOtp sms, malformed number",
            M::POST,
            "/verify",
            Some(json!({"type": "sms", "phone": "call me maybe", "token": "123456"})),
            v("Invalid phone number format (E.164 required)"),
        ),
        // SAML SSO is not configured: every /sso route.
        case(
            "signInWithSSO by domain",
            M::POST,
            "/sso",
            Some(json!({"domain": "example.com", "skip_http_redirect": true})),
            (404, "saml_provider_disabled", "SAML 2.0 is disabled"),
        ),
        case(
            "signInWithSSO by provider",
            M::POST,
            "/sso",
            Some(json!({"provider_id": "3c2b7e37-8b1b-4c2c-9b1a-2a1e5e0e3f44"})),
            (404, "saml_provider_disabled", "SAML 2.0 is disabled"),
        ),
        case(
            "SAML metadata",
            M::GET,
            "/sso/saml/metadata",
            None,
            (404, "saml_provider_disabled", "SAML 2.0 is disabled"),
        ),
        case(
            "SAML assertion consumer",
            M::POST,
            "/sso/saml/acs",
            None,
            (404, "saml_provider_disabled", "SAML 2.0 is disabled"),
        ),
        // Web3 sign-in is not enabled.
        case(
            "signInWithWeb3 solana",
            M::POST,
            "/token?grant_type=web3",
            Some(json!({"chain": "solana", "message": "x".repeat(80), "signature": "sig"})),
            (422, "web3_provider_disabled", "Web3 provider is disabled"),
        ),
        case(
            "signInWithWeb3 ethereum",
            M::POST,
            "/token?grant_type=web3",
            Some(json!({"chain": "ethereum", "message": "x", "signature": "0x00"})),
            (422, "web3_provider_disabled", "Web3 provider is disabled"),
        ),
    ]
}

#[tokio::test]
async fn auth_errors_are_gotrues_for_everything_supabase_js_can_send() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    for c in cases() {
        let bearer = c.admin.then_some(app.service_role_key.as_str());
        // The 2024-01-01 shape supabase-js asks for, and the legacy one.
        let r = call_with(
            &app,
            c.method.clone(),
            c.path,
            bearer,
            c.body.clone(),
            &[("x-supabase-api-version", "2024-01-01")],
        )
        .await;
        let what = c.what;
        assert_eq!(r.status.as_u16(), c.status, "{what}: {}", r.body);
        assert_eq!(r.body["code"], c.code, "{what}: {}", r.body);
        assert_eq!(r.body["error_code"], c.code, "{what}: {}", r.body);
        assert_eq!(r.body["msg"], c.msg, "{what}: {}", r.body);
        assert_eq!(r.body["message"], c.msg, "{what}: {}", r.body);
        let legacy = call_with(&app, c.method.clone(), c.path, bearer, c.body.clone(), &[]).await;
        assert_eq!(legacy.status.as_u16(), c.status, "{what}");
        assert_eq!(legacy.headers["x-sb-error-code"], c.code, "{what}");
        assert_eq!(
            legacy.body,
            json!({"code": c.status, "error_code": c.code, "msg": c.msg}),
            "{what} (no API version)"
        );
    }
    // Nothing above created a user.
    let users = call_with(
        &app,
        Method::GET,
        "/admin/users",
        Some(&app.service_role_key),
        None,
        &[],
    )
    .await;
    assert_eq!(users.body["users"], json!([]), "{}", users.body);
}
