//! WebAuthn second factors over HTTP, driven by a software authenticator written here (a P-256
//! key; clientDataJSON, authenticatorData and a `none` attestation object built by hand):
//! enroll → registration ceremony → aal2, authentication ceremonies, and what is refused (a
//! replayed challenge, a wrong origin, a wrong RP ID, a bad signature, a counter that goes
//! back, missing user presence, packed attestation, an expired challenge, another user's
//! factor or challenge, the feature switched off).
use agencyflow_testkit::{TestApp, TestDb};
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{assert_error, call, claims, email, refresh, signup, AutoconfirmApp, Res, PW};

const ORIGIN: &str = "http://localhost:3000";
const RP_ID: &str = "localhost";
const ON: &[&str] = &[
    "--mfa-web-authn-enroll-enabled",
    "true",
    "--mfa-web-authn-verify-enabled",
    "true",
    "--webauthn-rp-id",
    RP_ID,
    "--webauthn-rp-origins",
    ORIGIN,
    "--webauthn-rp-display-name",
    "Agency",
];

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

// CBOR (RFC 8949) encoding, what an authenticator writes.
fn head(major: u8, n: u64, out: &mut Vec<u8>) {
    match n {
        0..=23 => out.push(major << 5 | n as u8),
        24..=0xff => out.extend([major << 5 | 24, n as u8]),
        _ => {
            out.push(major << 5 | 25);
            out.extend((n as u16).to_be_bytes());
        }
    }
}
fn int(i: i64, out: &mut Vec<u8>) {
    if i >= 0 {
        head(0, i as u64, out)
    } else {
        head(1, (-1 - i) as u64, out)
    }
}
fn bytes(b: &[u8], out: &mut Vec<u8>) {
    head(2, b.len() as u64, out);
    out.extend(b);
}
fn text(s: &str, out: &mut Vec<u8>) {
    head(3, s.len() as u64, out);
    out.extend(s.as_bytes());
}

/// What a test changes about one ceremony (everything right by default).
#[derive(Clone)]
struct Tweak {
    origin: &'static str,
    rp_id: &'static str,
    flags: u8,
    fmt: &'static str,
    /// Sign with this key instead of the credential's.
    key: Option<SigningKey>,
    /// The counter to report instead of the next one.
    count: Option<u32>,
}

impl Default for Tweak {
    fn default() -> Self {
        Tweak {
            origin: ORIGIN,
            rp_id: RP_ID,
            flags: UP | UV,
            fmt: "none",
            key: None,
            count: None,
        }
    }
}

/// A software authenticator holding one ES256 credential.
struct Authenticator {
    key: SigningKey,
    id: Vec<u8>,
    count: u32,
}

fn random_key() -> SigningKey {
    SigningKey::from_slice(&Sha256::digest(Uuid::new_v4().as_bytes())).unwrap()
}

impl Authenticator {
    fn new() -> Self {
        Authenticator {
            key: random_key(),
            id: Uuid::new_v4().as_bytes().to_vec(),
            count: 0,
        }
    }

    fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false}),
        )
        .unwrap()
    }

    fn auth_data(&self, t: &Tweak, flags: u8, count: u32, attested: bool) -> Vec<u8> {
        let mut d = Sha256::digest(t.rp_id.as_bytes()).to_vec();
        d.push(flags);
        d.extend(count.to_be_bytes());
        if attested {
            let p = self.key.verifying_key().to_encoded_point(false);
            d.extend([0xAA; 16]);
            d.extend((self.id.len() as u16).to_be_bytes());
            d.extend(&self.id);
            head(5, 5, &mut d);
            int(1, &mut d);
            int(2, &mut d);
            int(3, &mut d);
            int(-7, &mut d);
            int(-1, &mut d);
            int(1, &mut d);
            int(-2, &mut d);
            bytes(p.x().unwrap(), &mut d);
            int(-3, &mut d);
            bytes(p.y().unwrap(), &mut d);
        }
        d
    }

    /// `navigator.credentials.create()` for the options of a `create` challenge, serialised
    /// as supabase-js sends it (`PublicKeyCredential.toJSON()`).
    fn create(&self, options: &Value, t: &Tweak) -> Value {
        let pk = &options["publicKey"];
        let ad = self.auth_data(t, t.flags | AT, 0, true);
        let mut att = Vec::new();
        head(5, 3, &mut att);
        text("fmt", &mut att);
        text(t.fmt, &mut att);
        text("attStmt", &mut att);
        if t.fmt == "packed" {
            head(5, 1, &mut att);
            text("alg", &mut att);
            int(-7, &mut att);
        } else {
            head(5, 0, &mut att);
        }
        text("authData", &mut att);
        bytes(&ad, &mut att);
        let cd = Self::client_data(
            "webauthn.create",
            pk["challenge"].as_str().unwrap(),
            t.origin,
        );
        json!({
            "id": b64(&self.id), "rawId": b64(&self.id), "type": "public-key",
            "response": {
                "clientDataJSON": b64(&cd),
                "attestationObject": b64(&att),
                "transports": ["usb"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "cross-platform",
        })
    }

    /// `navigator.credentials.get()` for the options of a `request` challenge.
    fn get(&mut self, options: &Value, user_handle: &[u8], t: &Tweak) -> Value {
        let pk = &options["publicKey"];
        let count = t.count.unwrap_or(self.count + 1);
        self.count = self.count.max(count);
        let ad = self.auth_data(t, t.flags, count, false);
        let cd = Self::client_data("webauthn.get", pk["challenge"].as_str().unwrap(), t.origin);
        let mut signed = ad.clone();
        signed.extend(Sha256::digest(&cd));
        let sig: Signature = t.key.as_ref().unwrap_or(&self.key).sign(&signed);
        json!({
            "id": b64(&self.id), "rawId": b64(&self.id), "type": "public-key",
            "response": {
                "clientDataJSON": b64(&cd),
                "authenticatorData": b64(&ad),
                "signature": b64(sig.to_der().as_bytes()),
                "userHandle": b64(user_handle),
            },
            "clientExtensionResults": {},
        })
    }
}

async fn enroll(app: &TestApp, at: &str, name: &str) -> Res {
    call(
        app,
        Method::POST,
        "/factors",
        Some(at),
        Some(json!({"factor_type": "webauthn", "friendly_name": name})),
    )
    .await
}

/// `mfa.challenge({factorId, webauthn: {rpId, rpOrigins}})`: the challenge's body.
async fn challenge(app: &TestApp, at: &str, factor: &str) -> Value {
    let r = call(
        app,
        Method::POST,
        &format!("/factors/{factor}/challenge"),
        Some(at),
        Some(json!({"factorId": factor, "webauthn": {"rpId": RP_ID, "rpOrigins": [ORIGIN]}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

async fn verify(app: &TestApp, at: &str, factor: &str, ch: &Value, credential: Value) -> Res {
    call(
        app,
        Method::POST,
        &format!("/factors/{factor}/verify"),
        Some(at),
        Some(json!({
            "challenge_id": ch["id"],
            "webauthn": {
                "type": ch["webauthn"]["type"],
                "rpId": RP_ID,
                "rpOrigins": [ORIGIN],
                "credential_response": credential,
            },
        })),
    )
    .await
}

async fn password_session(app: &TestApp, e: &str) -> String {
    let r = call(
        app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": e, "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_string()
}

fn options(ch: &Value) -> &Value {
    &ch["webauthn"]["credential_options"]
}

/// A user with a verified WebAuthn factor: `(email, user id, factor id, authenticator)`.
async fn enrolled(app: &TestApp) -> (String, Uuid, String, Authenticator) {
    let e = email("webauthn");
    let s = signup(app, &e).await;
    let at = s["access_token"].as_str().unwrap().to_string();
    let uid = Uuid::parse_str(s["user"]["id"].as_str().unwrap()).unwrap();
    let r = enroll(app, &at, "Key").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let factor = r.body["id"].as_str().unwrap().to_string();
    let auth = Authenticator::new();
    let ch = challenge(app, &at, &factor).await;
    let v = verify(
        app,
        &at,
        &factor,
        &ch,
        auth.create(options(&ch), &Tweak::default()),
    )
    .await;
    assert_eq!(v.status, 200, "{}", v.body);
    (e, uid, factor, auth)
}

#[tokio::test]
async fn auth_webauthn_enroll_register_authenticate_raises_to_aal2() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app_with(ON).await;
    let e = email("webauthn");
    let s = signup(&app, &e).await;
    let at = s["access_token"].as_str().unwrap().to_string();
    let uid = Uuid::parse_str(s["user"]["id"].as_str().unwrap()).unwrap();
    let r = enroll(&app, &at, "YubiKey").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["type"], "webauthn");
    assert_eq!(r.body["friendly_name"], "YubiKey");
    assert!(r.body.get("totp").is_none(), "{}", r.body);
    let factor = r.body["id"].as_str().unwrap().to_string();

    // An unverified factor's challenge is a registration ceremony.
    let ch = challenge(&app, &at, &factor).await;
    assert_eq!(ch["type"], "webauthn");
    assert_eq!(ch["webauthn"]["type"], "create");
    let pk = &options(&ch)["publicKey"];
    assert_eq!(pk["rp"], json!({"id": RP_ID, "name": "Agency"}));
    assert_eq!(pk["user"]["id"], b64(uid.to_string().as_bytes()));
    assert_eq!(pk["user"]["name"], e.as_str());
    assert_eq!(pk["attestation"], "none");
    assert_eq!(
        pk["pubKeyCredParams"],
        json!([{"type": "public-key", "alg": -7}])
    );
    assert_eq!(unb64(pk["challenge"].as_str().unwrap()).len(), 32);
    assert_eq!(pk["excludeCredentials"], json!([]));
    assert!(ch["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp() + 250);

    let mut auth = Authenticator::new();
    let v = verify(
        &app,
        &at,
        &factor,
        &ch,
        auth.create(options(&ch), &Tweak::default()),
    )
    .await;
    assert_eq!(v.status, 200, "{}", v.body);
    let c = claims(v.body["access_token"].as_str().unwrap());
    assert_eq!(c["aal"], "aal2");
    assert_eq!(c["amr"][0]["method"], "mfa/webauthn");
    assert_eq!(c["amr"][1]["method"], "password");
    assert_eq!(v.body["user"]["factors"][0]["factor_type"], "webauthn");
    assert_eq!(v.body["user"]["factors"][0]["status"], "verified");
    let rt = v.body["refresh_token"].as_str().unwrap().to_string();
    // The credential is stored as GoTrue's columns hold it.
    let db = t.superuser().await;
    let row = db
        .query_one(
            "select web_authn_credential, web_authn_aaguid::text from auth.mfa_factors where id = $1::text::uuid",
            &[&factor],
        )
        .await
        .unwrap();
    let (cred, aaguid): (Value, String) = (row.get(0), row.get(1));
    assert_eq!(cred["id"], b64(&auth.id));
    assert_eq!(cred["sign_count"], 0);
    assert_eq!(cred["transports"], json!(["usb"]));
    assert_eq!(aaguid, "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa");
    // The registration's challenge is spent.
    let r = verify(
        &app,
        &at,
        &factor,
        &ch,
        auth.create(options(&ch), &Tweak::default()),
    )
    .await;
    assert_error(&r, 422, "mfa_factor_not_found");

    // aal2 survives a refresh.
    let r = refresh(&app, &rt).await;
    assert_eq!(
        claims(r.body["access_token"].as_str().unwrap())["aal"],
        "aal2"
    );

    // A new password sign-in is aal1; the verified factor's challenge is an authentication.
    let weak = password_session(&app, &e).await;
    assert_eq!(claims(&weak)["aal"], "aal1");
    let ch = challenge(&app, &weak, &factor).await;
    assert_eq!(ch["webauthn"]["type"], "request");
    let pk = &options(&ch)["publicKey"];
    assert_eq!(pk["rpId"], RP_ID);
    assert_eq!(
        pk["allowCredentials"],
        json!([{"type": "public-key", "id": b64(&auth.id)}])
    );
    let assertion = auth.get(options(&ch), uid.to_string().as_bytes(), &Tweak::default());
    let v = verify(&app, &weak, &factor, &ch, assertion.clone()).await;
    assert_eq!(v.status, 200, "{}", v.body);
    let c = claims(v.body["access_token"].as_str().unwrap());
    assert_eq!(c["aal"], "aal2");
    assert_eq!(c["amr"][0]["method"], "mfa/webauthn");
    let strong = v.body["access_token"].as_str().unwrap().to_string();

    // Replays: the same response on the same (spent) challenge, and on a new one.
    assert_error(
        &verify(&app, &strong, &factor, &ch, assertion.clone()).await,
        422,
        "mfa_factor_not_found",
    );
    let ch2 = challenge(&app, &strong, &factor).await;
    let r = verify(&app, &strong, &factor, &ch2, assertion).await;
    assert_error(&r, 422, "mfa_verification_failed");
    assert!(
        r.body["msg"].as_str().unwrap().contains("challenge"),
        "{}",
        r.body
    );
    // A counter that does not grow is a cloned authenticator.
    let ch3 = challenge(&app, &strong, &factor).await;
    let r = verify(
        &app,
        &strong,
        &factor,
        &ch3,
        auth.get(
            options(&ch3),
            uid.to_string().as_bytes(),
            &Tweak {
                count: Some(1),
                ..Tweak::default()
            },
        ),
    )
    .await;
    assert_error(&r, 422, "mfa_verification_failed");
    assert!(
        r.body["msg"].as_str().unwrap().contains("cloned"),
        "{}",
        r.body
    );
    // The next count works, and is remembered.
    let ch4 = challenge(&app, &strong, &factor).await;
    let v = verify(
        &app,
        &strong,
        &factor,
        &ch4,
        auth.get(options(&ch4), uid.to_string().as_bytes(), &Tweak::default()),
    )
    .await;
    assert_eq!(v.status, 200, "{}", v.body);
    let count: i64 = db
        .query_one(
            "select (web_authn_credential->>'sign_count')::bigint from auth.mfa_factors where id = $1::text::uuid",
            &[&factor],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);

    // A second authenticator is excluded from registering twice: the challenge of a new
    // factor lists the first credential.
    let r = enroll(&app, &strong, "Second").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let second = r.body["id"].as_str().unwrap().to_string();
    let ch = challenge(&app, &strong, &second).await;
    assert_eq!(
        options(&ch)["publicKey"]["excludeCredentials"],
        json!([{"type": "public-key", "id": b64(&auth.id)}])
    );
    let r = verify(
        &app,
        &strong,
        &second,
        &ch,
        auth.create(options(&ch), &Tweak::default()),
    )
    .await;
    assert_error(&r, 422, "mfa_verification_failed");
    assert!(
        r.body["msg"]
            .as_str()
            .unwrap()
            .contains("already registered"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn auth_webauthn_refuses_wrong_origin_rp_id_attestation_signature_and_presence() {
    let t = TestDb::new().await;
    // Many verifications from one address: no MFA rate limit here.
    let mut args = ON.to_vec();
    args.extend(["--mfa-rate-limit-challenge-and-verify", "0"]);
    let app = t.spawn_autoconfirm_app_with(&args).await;
    let e = email("webauthn-bad");
    let s = signup(&app, &e).await;
    let at = s["access_token"].as_str().unwrap().to_string();
    let uid = Uuid::parse_str(s["user"]["id"].as_str().unwrap()).unwrap();
    let factor = enroll(&app, &at, "Key").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut auth = Authenticator::new();
    let refused = |r: &Res, what: &str| {
        assert_error(r, 422, "mfa_verification_failed");
        assert!(
            r.body["msg"].as_str().unwrap().contains(what),
            "{what}: {}",
            r.body
        );
    };
    for (tweak, what) in [
        (
            Tweak {
                origin: "http://localhost:4000",
                ..Tweak::default()
            },
            "origin",
        ),
        (
            Tweak {
                origin: "https://evil.example.com",
                ..Tweak::default()
            },
            "origin",
        ),
        (
            Tweak {
                rp_id: "evil.example.com",
                ..Tweak::default()
            },
            "RP ID",
        ),
        (
            Tweak {
                fmt: "packed",
                ..Tweak::default()
            },
            "attestation format",
        ),
        (
            Tweak {
                flags: UV,
                ..Tweak::default()
            },
            "present",
        ),
    ] {
        let ch = challenge(&app, &at, &factor).await;
        let r = verify(&app, &at, &factor, &ch, auth.create(options(&ch), &tweak)).await;
        refused(&r, what);
        // A refused response spends the challenge too.
        let r = verify(
            &app,
            &at,
            &factor,
            &ch,
            auth.create(options(&ch), &Tweak::default()),
        )
        .await;
        assert_error(&r, 422, "mfa_factor_not_found");
    }
    // A request-type response to a create challenge is refused.
    let ch = challenge(&app, &at, &factor).await;
    let mut wrong = ch.clone();
    wrong["webauthn"]["type"] = json!("request");
    let r = verify(
        &app,
        &at,
        &factor,
        &wrong,
        auth.get(options(&ch), uid.to_string().as_bytes(), &Tweak::default()),
    )
    .await;
    assert_error(&r, 400, "validation_failed");
    // Nothing above registered anything: the factor is still unverified, the session aal1.
    let me = call(&app, Method::GET, "/user", Some(&at), None).await;
    assert_eq!(me.body["factors"][0]["status"], "unverified");

    let ch = challenge(&app, &at, &factor).await;
    let v = verify(
        &app,
        &at,
        &factor,
        &ch,
        auth.create(options(&ch), &Tweak::default()),
    )
    .await;
    assert_eq!(v.status, 200, "{}", v.body);
    let strong = v.body["access_token"].as_str().unwrap().to_string();
    for (tweak, what) in [
        (
            Tweak {
                key: Some(random_key()),
                ..Tweak::default()
            },
            "signature",
        ),
        (
            Tweak {
                origin: "https://localhost.evil.com",
                ..Tweak::default()
            },
            "origin",
        ),
        (
            Tweak {
                rp_id: "example.com",
                ..Tweak::default()
            },
            "RP ID",
        ),
        (
            Tweak {
                flags: 0,
                ..Tweak::default()
            },
            "present",
        ),
    ] {
        let ch = challenge(&app, &strong, &factor).await;
        let r = verify(
            &app,
            &strong,
            &factor,
            &ch,
            auth.get(options(&ch), uid.to_string().as_bytes(), &tweak),
        )
        .await;
        refused(&r, what);
    }
    // Another user's handle.
    let ch = challenge(&app, &strong, &factor).await;
    let r = verify(
        &app,
        &strong,
        &factor,
        &ch,
        auth.get(
            options(&ch),
            Uuid::new_v4().to_string().as_bytes(),
            &Tweak::default(),
        ),
    )
    .await;
    refused(&r, "user handle");
    // Missing parts of the body.
    let ch = challenge(&app, &strong, &factor).await;
    for (body, msg) in [
        (
            json!({"challenge_id": ch["id"], "webauthn": {"credential_response": {}}}),
            "type",
        ),
        (
            json!({"challenge_id": ch["id"], "webauthn": {"type": "request"}}),
            "credential_response",
        ),
        (
            json!({"challenge_id": ch["id"], "code": "123456"}),
            "WebAuthn",
        ),
    ] {
        let r = call(
            &app,
            Method::POST,
            &format!("/factors/{factor}/verify"),
            Some(&strong),
            Some(body),
        )
        .await;
        assert_error(&r, 400, "validation_failed");
        assert!(r.body["msg"].as_str().unwrap().contains(msg), "{}", r.body);
    }
}

#[tokio::test]
async fn auth_webauthn_challenges_expire_and_belong_to_their_user() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app_with(ON).await;
    let (e, uid, factor, mut auth) = enrolled(&app).await;
    let at = password_session(&app, &e).await;
    // Expired: the challenge is older than GOTRUE_MFA_CHALLENGE_EXPIRY_DURATION.
    let ch = challenge(&app, &at, &factor).await;
    let db = t.superuser().await;
    db.execute(
        "update auth.mfa_challenges set created_at = now() - interval '301 seconds' where id = $1::text::uuid",
        &[&ch["id"].as_str().unwrap()],
    )
    .await
    .unwrap();
    let r = verify(
        &app,
        &at,
        &factor,
        &ch,
        auth.get(options(&ch), uid.to_string().as_bytes(), &Tweak::default()),
    )
    .await;
    assert_error(&r, 422, "mfa_challenge_expired");

    // Another user can neither challenge nor verify this factor, nor use its challenge for a
    // factor of their own.
    let (e2, _, factor2, _) = enrolled(&app).await;
    let other = password_session(&app, &e2).await;
    let r = call(
        &app,
        Method::POST,
        &format!("/factors/{factor}/challenge"),
        Some(&other),
        None,
    )
    .await;
    assert_error(&r, 404, "mfa_factor_not_found");
    let ch = challenge(&app, &at, &factor).await;
    let assertion = auth.get(options(&ch), uid.to_string().as_bytes(), &Tweak::default());
    assert_error(
        &verify(&app, &other, &factor, &ch, assertion.clone()).await,
        404,
        "mfa_factor_not_found",
    );
    assert_error(
        &verify(&app, &other, &factor2, &ch, assertion.clone()).await,
        422,
        "mfa_factor_not_found",
    );
    // The owner still can (nothing above spent the challenge).
    let v = verify(&app, &at, &factor, &ch, assertion).await;
    assert_eq!(v.status, 200, "{}", v.body);
}

#[tokio::test]
async fn auth_webauthn_is_off_unless_enabled() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app().await;
    let s = signup(&app, &email("webauthn-off")).await;
    let at = s["access_token"].as_str().unwrap().to_string();
    assert_error(
        &enroll(&app, &at, "Key").await,
        422,
        "mfa_web_authn_enroll_not_enabled",
    );
    // Enrolment on, verification off: the factor cannot be challenged.
    let app = t
        .spawn_autoconfirm_app_with(&[
            "--mfa-web-authn-enroll-enabled",
            "true",
            "--site-url",
            "http://localhost:3000",
        ])
        .await;
    let r = enroll(&app, &at, "Key").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let factor = r.body["id"].as_str().unwrap();
    let r = call(
        &app,
        Method::POST,
        &format!("/factors/{factor}/challenge"),
        Some(&at),
        None,
    )
    .await;
    assert_error(&r, 422, "mfa_web_authn_verify_not_enabled");
}

#[tokio::test]
async fn auth_webauthn_supabase_js_e2e() {
    let t = TestDb::new().await;
    let app = t.spawn_autoconfirm_app_with(ON).await;
    app.run_node_test("webauthn.test.js").await;
}
