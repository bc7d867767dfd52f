//! Asymmetric signing keys (`GOTRUE_JWT_KEYS`, issue #17 item 5): session tokens signed RS256
//! or ES256 with the active key's `kid`, verified by every surface; the public keys at
//! `/.well-known/jwks.json` (never a private part); rotation without logging anybody out;
//! supabase-js `getClaims()` verifying locally through the JWKS.
use agencyflow_testkit::keys::{es256_jwk, jwt_keys, rsa_jwk};
use agencyflow_testkit::{TestApp, TestDb};
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::{assert_error, call, email, refresh, signup, AutoconfirmApp, PW};

fn header(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .unwrap(),
    )
    .unwrap()
}

/// Status of a REST and a storage read with `token` as the user's bearer.
async fn rest_and_storage(app: &TestApp, token: &str) -> (u16, u16) {
    let mut out = [0u16; 2];
    for (i, path) in ["/rest/v1/clients?select=id", "/storage/v1/bucket"]
        .into_iter()
        .enumerate()
    {
        let r = app
            .http
            .get(app.url(path))
            .header("apikey", &app.anon_key)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        out[i] = r.status().as_u16();
    }
    (out[0], out[1])
}

async fn jwks(app: &TestApp) -> Value {
    let r = app
        .http
        .get(app.url("/auth/v1/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn sign_in(app: &TestApp, addr: &str) -> Value {
    let r = call(
        app,
        Method::POST,
        "/token?grant_type=password",
        None,
        Some(json!({"email": addr, "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Every private member an RSA, EC or oct JWK can have.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

#[tokio::test]
async fn auth_keys_rs256_and_es256_sessions_are_verified_by_every_surface() {
    let rsa = rsa_jwk(0, &["sign", "verify"]);
    let ec = es256_jwk(&["verify"]);
    let ec_signing = {
        let mut k = ec.clone();
        k["key_ops"] = json!(["sign", "verify"]);
        k
    };
    let rsa_verify = rsa_jwk(0, &["verify"]);
    for (set, alg, kid) in [
        (jwt_keys(&[&rsa, &ec]), "RS256", rsa["kid"].clone()),
        (
            jwt_keys(&[&rsa_verify, &ec_signing]),
            "ES256",
            ec["kid"].clone(),
        ),
    ] {
        let t = TestDb::new().await;
        let app = t.spawn_autoconfirm_app_with(&["--jwt-keys", &set]).await;
        let addr = email("keys");
        let s = signup(&app, &addr).await;
        let at = s["access_token"].as_str().unwrap();
        let h = header(at);
        assert_eq!((h["alg"].as_str(), &h["kid"]), (Some(alg), &kid), "{h}");
        assert_eq!(rest_and_storage(&app, at).await, (200, 200), "{alg}");
        let me = call(&app, Method::GET, "/user", Some(at), None).await;
        assert_eq!(me.status, 200, "{}", me.body);
        // A password sign-in and a refresh are signed by the same key.
        let si = sign_in(&app, &addr).await;
        assert_eq!(header(si["access_token"].as_str().unwrap())["kid"], kid);
        let r = refresh(&app, si["refresh_token"].as_str().unwrap()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(header(r.body["access_token"].as_str().unwrap())["alg"], alg);
        // The API keys stay HS256 over the project secret and keep working.
        assert_eq!(header(&app.anon_key)["alg"], "HS256");
        assert!(header(&app.anon_key).get("kid").is_none());
        let anon = app
            .http
            .get(app.url("/rest/v1/clients?select=id"))
            .header("apikey", &app.anon_key)
            .send()
            .await
            .unwrap();
        assert_eq!(anon.status(), 200);
        // Published: both public keys, for verification only, without any private member.
        let j = jwks(&app).await;
        let keys = j["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2, "{j}");
        for k in keys {
            for m in PRIVATE_MEMBERS {
                assert!(k.get(*m).is_none(), "{m} published: {k}");
            }
            assert_eq!(k["use"], "sig");
            assert_eq!(k["key_ops"], json!(["verify"]));
        }
        assert_eq!(keys[0]["kid"], "test-rsa-1");
        assert_eq!(keys[0]["alg"], "RS256");
        assert_eq!(keys[0]["n"], rsa["n"]);
        assert_eq!(keys[1]["kid"], ec["kid"]);
        assert_eq!(keys[1]["alg"], "ES256");
        assert_eq!(keys[1]["x"], ec["x"]);
    }
}

#[tokio::test]
async fn auth_keys_jwks_never_publishes_secrets() {
    // An oct (HS256) key in the set is a secret: never published, nor the project secret.
    let oct = json!({"kty": "oct", "kid": "legacy-hs", "alg": "HS256", "key_ops": ["verify"],
                     "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("an-old-shared-secret-of-32-bytes!!")});
    let rsa = rsa_jwk(1, &["sign", "verify"]);
    let t = TestDb::new().await;
    let app = t
        .spawn_app_with(&["--jwt-keys", &jwt_keys(&[&oct, &rsa])])
        .await;
    let text = app
        .http
        .get(app.url("/auth/v1/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let j: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["keys"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["keys"][0]["kid"], "test-rsa-2");
    for secret in [
        rsa["d"].as_str().unwrap(),
        rsa["p"].as_str().unwrap(),
        oct["k"].as_str().unwrap(),
        agencyflow_testkit::TEST_JWT_SECRET,
        "legacy-hs",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test]
async fn auth_keys_rotation_keeps_sessions_until_the_old_key_is_removed() {
    let t = TestDb::new().await;
    let k1 = rsa_jwk(0, &["sign", "verify"]);
    let k1_verify = rsa_jwk(0, &["verify"]);
    let k2 = rsa_jwk(1, &["sign", "verify"]);
    // Before: key 1 signs.
    let before = t
        .spawn_autoconfirm_app_with(&["--jwt-keys", &jwt_keys(&[&k1])])
        .await;
    let addr = email("rotate");
    let s = signup(&before, &addr).await;
    let old = s["access_token"].as_str().unwrap().to_string();
    let old_refresh = s["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(header(&old)["kid"], "test-rsa-1");

    // Rotated: key 2 signs, key 1 only verifies. The old session keeps working.
    let rotated = t
        .spawn_autoconfirm_app_with(&["--jwt-keys", &jwt_keys(&[&k2, &k1_verify])])
        .await;
    assert_eq!(rest_and_storage(&rotated, &old).await, (200, 200));
    let me = call(&rotated, Method::GET, "/user", Some(&old), None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let fresh = sign_in(&rotated, &addr).await;
    let new = fresh["access_token"].as_str().unwrap().to_string();
    assert_eq!(header(&new)["kid"], "test-rsa-2");
    // The old session's refresh token gets a token of the new key: nobody is logged out.
    let r = refresh(&rotated, &old_refresh).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let refreshed = r.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(header(&refreshed)["kid"], "test-rsa-2");
    let kids: Vec<Value> = jwks(&rotated).await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(kids, vec![json!("test-rsa-2"), json!("test-rsa-1")]);

    // Key 1 removed: its tokens are refused everywhere, the new ones still work.
    let after = t
        .spawn_autoconfirm_app_with(&["--jwt-keys", &jwt_keys(&[&k2])])
        .await;
    assert_eq!(rest_and_storage(&after, &old).await.0, 401);
    assert!(matches!(
        rest_and_storage(&after, &old).await.1,
        400 | 401 | 403
    ));
    let me = call(&after, Method::GET, "/user", Some(&old), None).await;
    assert_error(&me, 403, "bad_jwt");
    for token in [&new, &refreshed] {
        assert_eq!(rest_and_storage(&after, token).await, (200, 200));
    }
    assert_eq!(jwks(&after).await["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn auth_keys_getclaims_verifies_rs256_and_es256_locally_e2e() {
    for (alg, set) in [
        ("RS256", jwt_keys(&[&rsa_jwk(0, &["sign", "verify"])])),
        (
            "ES256",
            jwt_keys(&[&es256_jwk(&["sign", "verify"]), &rsa_jwk(1, &["verify"])]),
        ),
    ] {
        let t = TestDb::new().await;
        let app = t.spawn_autoconfirm_app_with(&["--jwt-keys", &set]).await;
        app.run_node_test_with_env("keys.test.js", &[("EXPECTED_ALG", alg)])
            .await;
    }
}
