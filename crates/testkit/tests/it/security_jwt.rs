//! Attack: forged, tampered and misused JWTs on every surface (security issue #14). Each
//! token below is tried as the bearer token of a REST, storage, functions and auth request
//! (with a valid anon `apikey`, as an attacker holding the public key would) and must be
//! answered 401/403 with a JSON error, never executed.
use agencyflow_testkit::{TestApp, TestDb};
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// HS256 over `secret`, with any header fields.
fn hs256(header: Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!(
        "{signing_input}.{}",
        b64(&hmac_sha256(secret, signing_input.as_bytes()))
    )
}

/// HMAC-SHA256 (RFC 2104), written out so the test signs independently of the server's
/// JWT library.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for i in 0..64 {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn claims(role: &str, user: Uuid) -> Value {
    let t = now();
    json!({"sub": user, "role": role, "aud": "authenticated", "iat": t, "exp": t + 3600,
           "email": "mallory@evil.test"})
}

/// The surfaces, each with a request that needs a valid user token.
fn surfaces() -> Vec<(&'static str, Method, &'static str, Option<Value>)> {
    vec![
        ("rest", Method::GET, "/rest/v1/clients?select=id", None),
        ("storage", Method::GET, "/storage/v1/bucket", None),
        (
            "functions",
            Method::POST,
            "/functions/v1/recommend-systems",
            Some(json!({"project_id": Uuid::nil()})),
        ),
        ("auth", Method::GET, "/auth/v1/user", None),
    ]
}

/// Sends `token` to every surface; every answer must be 401 or 403 with a JSON object body.
async fn refused_everywhere(app: &TestApp, attack: &str, token: &str) {
    for (surface, method, path, body) in surfaces() {
        let mut rb = app
            .http
            .request(method.clone(), app.url(path))
            .header("apikey", &app.anon_key)
            .header("Authorization", format!("Bearer {token}"));
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(
            status == 401 || status == 403,
            "{attack} on {surface}: {status} {text}"
        );
        let j: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{attack} on {surface}: not JSON ({e}): {text}"));
        assert!(j.is_object(), "{attack} on {surface}: {text}");
    }
}

const SECRET: &[u8] = agencyflow_testkit::TEST_JWT_SECRET.as_bytes();

#[tokio::test]
async fn attack_jwt_alg_none_is_refused_on_every_surface() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let c = claims("service_role", Uuid::new_v4());
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
            b64(c.to_string().as_bytes())
        );
        refused_everywhere(&app, &format!("alg {alg}"), &token).await;
    }
}

#[tokio::test]
async fn attack_jwt_hs256_signed_with_the_es256_public_key_is_refused() {
    let t = TestDb::new().await;
    let jwk = agencyflow_auth::generate_es256_jwk();
    let keys = json!([jwk]).to_string();
    let app = t.spawn_app_with(&["--jwt-keys", &keys]).await;
    let jwks: Value = app
        .http
        .get(app.url("/auth/v1/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public = jwks["keys"][0].clone();
    let c = claims("service_role", Uuid::new_v4());
    // The classic algorithm confusion: the public key's bytes used as an HMAC secret, with
    // and without the key's kid.
    for secret in [public.to_string(), jwk["x"].as_str().unwrap().to_string()] {
        for header in [
            json!({"alg": "HS256", "typ": "JWT", "kid": public["kid"]}),
            json!({"alg": "HS256", "typ": "JWT"}),
        ] {
            let token = hs256(header, &c, secret.as_bytes());
            refused_everywhere(&app, "HS256 with the public key", &token).await;
        }
    }
}

#[tokio::test]
async fn attack_jwt_unknown_kid_wrong_aud_time_and_signature_are_refused() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let user = Uuid::new_v4();
    let base = claims("authenticated", user);
    let hdr = json!({"alg": "HS256", "typ": "JWT"});
    // Control: the same token shape with the real secret is accepted by REST.
    let good = hs256(hdr.clone(), &base, SECRET);
    let r = app
        .http
        .get(app.url("/rest/v1/clients?select=id"))
        .header("apikey", &app.anon_key)
        .header("Authorization", format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let unknown_kid = hs256(
        json!({"alg": "HS256", "typ": "JWT", "kid": "not-a-key-we-hold"}),
        &base,
        SECRET,
    );
    refused_everywhere(&app, "unknown kid", &unknown_kid).await;

    let mut wrong_aud = base.clone();
    wrong_aud["aud"] = json!("some-other-project");
    refused_everywhere(&app, "wrong aud", &hs256(hdr.clone(), &wrong_aud, SECRET)).await;

    let mut expired = base.clone();
    expired["exp"] = json!(now() - 31 - 5);
    refused_everywhere(&app, "expired", &hs256(hdr.clone(), &expired, SECRET)).await;

    let mut early = base.clone();
    early["nbf"] = json!(now() + 120);
    refused_everywhere(
        &app,
        "nbf in the future",
        &hs256(hdr.clone(), &early, SECRET),
    )
    .await;

    let other = hs256(
        hdr.clone(),
        &base,
        b"another-secret-another-secret-0123456789",
    );
    refused_everywhere(&app, "another secret", &other).await;

    // Truncated and garbled.
    for (name, token) in [
        ("truncated signature", good[..good.len() - 5].to_string()),
        ("two parts", good.rsplit_once('.').unwrap().0.to_string()),
        ("garbage", "a.b.c".to_string()),
        ("not base64", "%%%.%%%.%%%".to_string()),
        (
            "claims not an object",
            hs256(hdr.clone(), &json!([1, 2]), SECRET),
        ),
        ("flipped payload", {
            let mut p: Vec<&str> = good.split('.').collect();
            let forged = b64(claims("service_role", user).to_string().as_bytes());
            p[1] = &forged;
            p.join(".")
        }),
    ] {
        refused_everywhere(&app, name, &token).await;
    }
}

#[tokio::test]
async fn attack_jwt_role_claim_naming_a_non_api_database_role_is_never_executed() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    for role in [
        "authenticator",
        "supabase_auth_admin",
        "postgres",
        "pg_read_all_data",
        "pg_write_server_files",
    ] {
        let token = hs256(
            json!({"alg": "HS256", "typ": "JWT"}),
            &claims(role, Uuid::new_v4()),
            SECRET,
        );
        // REST, storage and functions refuse the role; the auth surface refuses a token
        // that is not a user's session.
        refused_everywhere(&app, &format!("role {role}"), &token).await;
        // ... also as the API key itself.
        let r = app
            .http
            .get(app.url("/rest/v1/clients?select=id"))
            .header("apikey", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "apikey with role {role}");
    }
}

/// The same attacks against RS256 signing (`GOTRUE_JWT_KEYS` with an RSA key that signs and an
/// EC key that only verifies): HS256 signed with the RSA public key as the HMAC secret,
/// `alg: none` naming the key, a `kid` pointing at another key, the wrong `alg` for a `kid`,
/// and an RS256 token without a `kid`. Each must be refused by every surface, while a real
/// token of the key is accepted.
#[tokio::test]
async fn attack_jwt_rs256_algorithm_confusion_and_kid_tricks_are_refused() {
    use agencyflow_testkit::keys::{es256_jwk, jwt_keys, rsa_jwk, rsa_public_pem};
    let rsa = rsa_jwk(0, &["sign", "verify"]);
    let ec = es256_jwk(&["verify"]);
    let set = jwt_keys(&[&rsa, &ec]);
    let t = TestDb::new().await;
    let app = t.spawn_app_with(&["--jwt-keys", &set]).await;
    let user = Uuid::new_v4();
    let c = claims("authenticated", user);
    let ours = agencyflow_auth::JwtKeys::hs256(SECRET, None)
        .with_jwks(&set)
        .unwrap();
    // Control: a token of the signing key is accepted.
    let good = ours.sign(&c).unwrap();
    let r = app
        .http
        .get(app.url("/rest/v1/clients?select=id"))
        .header("apikey", &app.anon_key)
        .header("Authorization", format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let admin = claims("service_role", user);
    let mut public = rsa.clone();
    for m in ["d", "p", "q", "dp", "dq", "qi"] {
        public.as_object_mut().unwrap().remove(m);
    }
    // HS256 with the public key (PEM, as the classic attack; the JWK; the modulus) as secret.
    for secret in [
        rsa_public_pem(0),
        public.to_string(),
        rsa["n"].as_str().unwrap().to_string(),
    ] {
        for header in [
            json!({"alg": "HS256", "typ": "JWT", "kid": "test-rsa-1"}),
            json!({"alg": "HS256", "typ": "JWT"}),
        ] {
            let token = hs256(header, &admin, secret.as_bytes());
            refused_everywhere(&app, "HS256 with the RSA public key", &token).await;
        }
    }
    // alg none naming the RSA key.
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": "test-rsa-1"})
            .to_string()
            .as_bytes()),
        b64(admin.to_string().as_bytes())
    );
    refused_everywhere(&app, "alg none with kid", &none).await;
    // Another RSA key's signature under our kid.
    let mut foreign = rsa_jwk(1, &["sign"]);
    foreign["kid"] = json!("test-rsa-1");
    let forged = agencyflow_auth::JwtKeys::hs256(b"unrelated-secret-unrelated-secret-00", None)
        .with_jwks(&jwt_keys(&[&foreign]))
        .unwrap()
        .sign(&admin)
        .unwrap();
    refused_everywhere(&app, "another RSA key under our kid", &forged).await;
    // Our real RS256 signature, its header changed: another kid, another alg, no kid.
    let rest = good.split_once('.').unwrap().1;
    for header in [
        json!({"alg": "RS256", "typ": "JWT", "kid": ec["kid"]}),
        json!({"alg": "ES256", "typ": "JWT", "kid": "test-rsa-1"}),
        json!({"alg": "RS256", "typ": "JWT", "kid": "not-a-key-we-hold"}),
        json!({"alg": "RS256", "typ": "JWT"}),
        json!({"alg": "PS256", "typ": "JWT", "kid": "test-rsa-1"}),
        json!({"alg": "RS512", "typ": "JWT", "kid": "test-rsa-1"}),
    ] {
        let token = format!("{}.{rest}", b64(header.to_string().as_bytes()));
        refused_everywhere(&app, &format!("header {header}"), &token).await;
    }
    // An ES256 token of the verify-only key is fine; the same under the RSA kid is not.
    let ec_signing = {
        let mut k = ec.clone();
        k["key_ops"] = json!(["sign"]);
        k
    };
    let ec_token = agencyflow_auth::JwtKeys::hs256(SECRET, None)
        .with_jwks(&jwt_keys(&[&ec_signing]))
        .unwrap()
        .sign(&c)
        .unwrap();
    let r = app
        .http
        .get(app.url("/rest/v1/clients?select=id"))
        .header("apikey", &app.anon_key)
        .header("Authorization", format!("Bearer {ec_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ec_rest = ec_token.split_once('.').unwrap().1;
    let swapped = format!(
        "{}.{ec_rest}",
        b64(json!({"alg": "ES256", "typ": "JWT", "kid": "test-rsa-1"})
            .to_string()
            .as_bytes())
    );
    refused_everywhere(&app, "ES256 signature under the RSA kid", &swapped).await;
}
