//! Signing keys for tests of `GOTRUE_JWT_KEYS`: two fixed RSA-2048 test keys (RSA keys take
//! long to generate, and ring cannot) and fresh ES256 keys, as GoTrue's JWKs with `kid`,
//! `alg` and `key_ops`.
use serde_json::{json, Value};

const RSA_FIXTURE: &str = include_str!("../../keys/testdata/rsa_test_keys.json");

fn fixture() -> Value {
    serde_json::from_str(RSA_FIXTURE).expect("RSA fixture is JSON")
}

/// RSA test key `i` (0 or 1, kid `test-rsa-1` / `test-rsa-2`) as a private JWK with `key_ops`.
pub fn rsa_jwk(i: usize, key_ops: &[&str]) -> Value {
    let mut k = fixture()["keys"][i]["private_jwk"].clone();
    k["key_ops"] = json!(key_ops);
    k
}

/// The PEM (SPKI) of RSA test key `i`'s public half, what an algorithm-confusion attacker
/// uses as an HMAC secret.
pub fn rsa_public_pem(i: usize) -> String {
    fixture()["keys"][i]["public_pem"]
        .as_str()
        .expect("pem")
        .to_string()
}

/// A fresh ES256 private JWK with `key_ops`.
pub fn es256_jwk(key_ops: &[&str]) -> Value {
    let mut k = agencyflow_auth::generate_es256_jwk();
    k["key_ops"] = json!(key_ops);
    k
}

/// `GOTRUE_JWT_KEYS` text for these JWKs.
pub fn jwt_keys(keys: &[&Value]) -> String {
    Value::Array(keys.iter().map(|k| (*k).clone()).collect()).to_string()
}
