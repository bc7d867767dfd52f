//! The project's JWT keys: signing the API keys and session tokens, and verifying every
//! bearer token any surface receives (REST, functions, auth).
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Clock skew accepted on `exp`/`nbf`/`iat`, as PostgREST does.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("JWT expired")]
    Expired,
    #[error("JWT invalid: {0}")]
    Invalid(String),
}

/// An asymmetric (ES256, P-256) key: the private half signs, the public half is published.
#[derive(Clone)]
struct EcKey {
    kid: String,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// The public JWK, as `/.well-known/jwks.json` publishes it.
    public_jwk: Value,
}

/// The secret and keys the project signs and verifies with: HS256 over the project secret
/// (the API keys, and session tokens unless an asymmetric key is configured), and ES256
/// keys from `GOTRUE_JWT_KEYS`, chosen by `kid` when verifying.
#[derive(Clone)]
pub struct JwtKeys {
    hs_secret: Vec<u8>,
    /// When set, a token's `aud` (if present) must match.
    audience: Option<String>,
    ec: Vec<EcKey>,
    verified: VerifiedCache,
}

/// Tokens these keys have verified, by their exact text. The same bytes verify the same
/// way under the same keys, so a hit only redoes the time checks (`exp`, `nbf`): every
/// request carries the API key and most a session token seen moments before, and an ES256
/// verification costs tens of microseconds. Bounded (cleared when full); shared by clones;
/// a new one whenever the keys or the audience change.
#[derive(Clone, Default)]
struct VerifiedCache(Arc<Mutex<HashMap<Box<str>, Verified>>>);

struct Verified {
    claims: Arc<VerifiedClaims>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// A verified token's claims, with their JSON text (what `request.jwt.claims` is set to), so
/// a cached verification costs neither a copy of the claims nor their serialization.
#[derive(Debug)]
pub struct VerifiedClaims {
    pub claims: Value,
    pub json: String,
}

impl VerifiedClaims {
    pub fn new(claims: Value) -> Self {
        let json = claims.to_string();
        VerifiedClaims { claims, json }
    }
}

const VERIFIED_CACHE_ENTRIES: usize = 4096;
const VERIFIED_CACHE_TOKEN_LEN: usize = 4096;

impl VerifiedCache {
    fn get(&self, token: &str) -> Option<Result<Arc<VerifiedClaims>, JwtError>> {
        let map = self.0.lock().ok()?;
        let hit = map.get(token)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let leeway = LEEWAY_SECS as f64;
        if hit.exp.is_some_and(|exp| exp < now - leeway) {
            return Some(Err(JwtError::Expired));
        }
        if hit.nbf.is_some_and(|nbf| nbf > now + leeway) {
            return Some(Err(JwtError::Invalid("ImmatureSignature".into())));
        }
        Some(Ok(hit.claims.clone()))
    }

    fn put(&self, token: &str, verified: &Arc<VerifiedClaims>) {
        if token.len() > VERIFIED_CACHE_TOKEN_LEN {
            return;
        }
        let claims = &verified.claims;
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= VERIFIED_CACHE_ENTRIES {
                map.clear();
            }
            map.insert(
                token.into(),
                Verified {
                    claims: verified.clone(),
                    exp: claims.get("exp").and_then(Value::as_f64),
                    nbf: claims.get("nbf").and_then(Value::as_f64),
                },
            );
        }
    }
}

impl JwtKeys {
    pub fn hs256(secret: &[u8], audience: Option<String>) -> Self {
        JwtKeys {
            hs_secret: secret.to_vec(),
            audience,
            ec: Vec::new(),
            verified: VerifiedCache::default(),
        }
    }

    /// The same keys, accepting only `aud` (when a token has one).
    pub fn with_audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self.verified = VerifiedCache::default();
        self
    }

    /// Adds ES256 keys from a JWK set: a JSON array of JWKs or `{"keys": [...]}` (GoTrue's
    /// `GOTRUE_JWT_KEYS`). Keys with a private part (`d`) can sign; the first of them signs
    /// session tokens. Every key verifies tokens whose header names its `kid`.
    pub fn with_jwks(mut self, jwks: &str) -> Result<Self, JwtError> {
        let v: Value = serde_json::from_str(jwks)
            .map_err(|e| JwtError::Invalid(format!("not a JSON JWK set: {e}")))?;
        let list = match &v {
            Value::Array(a) => a.clone(),
            Value::Object(o) => match o.get("keys") {
                Some(Value::Array(a)) => a.clone(),
                _ => vec![v.clone()],
            },
            _ => return Err(JwtError::Invalid("expected a JSON array of JWKs".into())),
        };
        for jwk in list {
            self.ec.push(ec_key_from_jwk(&jwk)?);
        }
        self.verified = VerifiedCache::default();
        Ok(self)
    }

    /// The public keys, as `/.well-known/jwks.json` serves them (never the HS256 secret).
    pub fn public_jwks(&self) -> Value {
        serde_json::json!({ "keys": self.ec.iter().map(|k| k.public_jwk.clone()).collect::<Vec<_>>() })
    }

    /// The `kid` session tokens are signed with, when an asymmetric key is configured.
    pub fn signing_kid(&self) -> Option<&str> {
        self.ec
            .iter()
            .find(|k| k.encoding.is_some())
            .map(|k| k.kid.as_str())
    }

    /// Signs claims with HS256 over the project secret (the API keys always are).
    pub fn sign_hs256(&self, claims: &Value) -> Result<String, JwtError> {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.hs_secret),
        )
        .map_err(|e| JwtError::Invalid(e.to_string()))
    }

    /// Signs claims: ES256 with `kid` when an asymmetric signing key is configured, else HS256.
    pub fn sign(&self, claims: &Value) -> Result<String, JwtError> {
        if let Some(k) = self.ec.iter().find(|k| k.encoding.is_some()) {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(k.kid.clone());
            let enc = k.encoding.as_ref().expect("checked");
            return encode(&header, claims, enc).map_err(|e| JwtError::Invalid(e.to_string()));
        }
        self.sign_hs256(claims)
    }

    /// Verifies signature, `exp`/`nbf` (with 30 s skew) and `aud`; returns the claims.
    /// HS256 over the project secret and ES256 by `kid` are accepted; `alg: none` and
    /// algorithms or keys we do not hold are refused.
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        self.verify_shared(token).map(|v| v.claims.clone())
    }

    /// [`Self::verify`], sharing the cached claims and their JSON text.
    pub fn verify_shared(&self, token: &str) -> Result<Arc<VerifiedClaims>, JwtError> {
        if let Some(hit) = self.verified.get(token) {
            return hit;
        }
        let verified = Arc::new(VerifiedClaims::new(self.verify_uncached(token)?));
        self.verified.put(token, &verified);
        Ok(verified)
    }

    fn verify_uncached(&self, token: &str) -> Result<Value, JwtError> {
        let header = decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
        let hs;
        let key = match header.alg {
            Algorithm::HS256 => {
                // The shared secret has no kid: a kid names a key we would have to hold
                // (an HS256 token naming our ES256 key's kid is the algorithm-confusion
                // attack), so any kid on an HS256 token is refused.
                if let Some(kid) = header.kid.as_deref() {
                    return Err(JwtError::Invalid(format!("unknown kid {kid}")));
                }
                hs = DecodingKey::from_secret(&self.hs_secret);
                &hs
            }
            Algorithm::ES256 => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| JwtError::Invalid("ES256 token without kid".into()))?;
                &self
                    .ec
                    .iter()
                    .find(|k| k.kid == kid)
                    .ok_or_else(|| JwtError::Invalid(format!("unknown kid {kid}")))?
                    .decoding
            }
            other => {
                return Err(JwtError::Invalid(format!(
                    "unsupported algorithm {other:?}"
                )))
            }
        };
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_aud = false;
        v.validate_nbf = true;
        v.required_spec_claims.clear();
        let data = decode::<Value>(token, key, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => JwtError::Expired,
            _ => JwtError::Invalid(e.to_string()),
        })?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err(JwtError::Invalid("claims are not an object".into()));
        }
        if let (Some(want), Some(aud)) = (&self.audience, claims.get("aud")) {
            let ok = match aud {
                Value::String(s) => s == want,
                Value::Array(a) => a.iter().any(|x| x.as_str() == Some(want)),
                _ => false,
            };
            if !ok {
                return Err(JwtError::Invalid("JWT audience mismatch".into()));
            }
        }
        Ok(claims)
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An ES256 key from a P-256 JWK (with `d` when it may sign). Without `kid`, the RFC 7638
/// thumbprint names it.
fn ec_key_from_jwk(jwk: &Value) -> Result<EcKey, JwtError> {
    use p256::pkcs8::EncodePrivateKey;
    let bad = |m: &str| JwtError::Invalid(format!("JWK: {m}"));
    if jwk.get("kty").and_then(Value::as_str) != Some("EC")
        || jwk.get("crv").and_then(Value::as_str) != Some("P-256")
    {
        return Err(bad("only EC P-256 keys (ES256) are supported"));
    }
    let x = jwk
        .get("x")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing x"))?;
    let y = jwk
        .get("y")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing y"))?;
    let public = p256::PublicKey::from_jwk_str(
        &serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}).to_string(),
    )
    .map_err(|e| bad(&format!("invalid public key: {e}")))?;
    let encoding = match jwk.get("d").and_then(Value::as_str) {
        Some(d) => {
            let minimal = serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "d": d});
            let secret = p256::SecretKey::from_jwk_str(&minimal.to_string())
                .map_err(|e| bad(&format!("invalid private key: {e}")))?;
            if secret.public_key() != public {
                return Err(bad("d does not match x and y"));
            }
            let der = secret
                .to_pkcs8_der()
                .map_err(|e| bad(&format!("encoding private key: {e}")))?;
            Some(EncodingKey::from_ec_der(der.as_bytes()))
        }
        None => None,
    };
    let kid = match jwk.get("kid").and_then(Value::as_str) {
        Some(k) if !k.is_empty() => k.to_string(),
        _ => {
            use sha2::Digest;
            let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
            b64url(&sha2::Sha256::digest(canonical.as_bytes()))
        }
    };
    let decoding = DecodingKey::from_ec_components(x, y).map_err(|e| bad(&e.to_string()))?;
    let public_jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": x, "y": y,
        "kid": kid, "alg": "ES256", "use": "sig", "key_ops": ["verify"],
    });
    Ok(EcKey {
        kid,
        encoding,
        decoding,
        public_jwk,
    })
}

/// A fresh ES256 private JWK (with `kid`) for `GOTRUE_JWT_KEYS`.
pub fn generate_es256_jwk() -> Value {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let mut jwk: Value = serde_json::from_str(&secret.to_jwk_string()).expect("JWK is JSON");
    let mut kid = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut kid);
    jwk["kid"] = Value::String(b64url(&kid));
    jwk["alg"] = Value::String("ES256".into());
    jwk["use"] = Value::String("sig".into());
    jwk
}

/// The legacy API key for `role` (`anon` or `service_role`), as Supabase issues them:
/// deterministic for a given secret, valid for ten years from 2026-01-01.
pub fn api_key(keys: &JwtKeys, role: &str) -> Result<String, JwtError> {
    const IAT: i64 = 1_767_225_600;
    keys.sign_hs256(&serde_json::json!({ "role": role, "iss": "supabase", "iat": IAT, "exp": IAT + 10 * 365 * 24 * 3600 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys() -> JwtKeys {
        JwtKeys::hs256(
            b"a-very-long-test-secret-of-32-bytes!!",
            Some("authenticated".into()),
        )
    }

    #[test]
    fn verified_tokens_are_cached_but_still_expire() {
        let k = keys();
        // Expired 29 s ago: within the 30 s leeway now, past it in two seconds.
        let exp = chrono::Utc::now().timestamp() - 29;
        let t = k.sign(&json!({"role": "anon", "exp": exp})).unwrap();
        assert_eq!(k.verify(&t).unwrap()["role"], "anon");
        assert!(k.verified.0.lock().unwrap().contains_key(t.as_str()));
        assert_eq!(
            k.clone().verify(&t).unwrap()["exp"],
            exp,
            "clones share the cache"
        );
        // A hit shares the claims and their JSON text instead of copying them.
        let (a, b) = (k.verify_shared(&t).unwrap(), k.verify_shared(&t).unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.json, a.claims.to_string());
        // Letting the expiry pass is the thing under test here (not a wait for a condition).
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(k.verify(&t), Err(JwtError::Expired));
        // Refused tokens are not cached; other keys or audience start a new cache.
        let bad = format!("{}x", &t[..t.len() - 1]);
        assert!(k.verify(&bad).is_err());
        assert!(!k.verified.0.lock().unwrap().contains_key(bad.as_str()));
        let open = JwtKeys::hs256(b"a-very-long-test-secret-of-32-bytes!!", None);
        let to_other = open.sign(&json!({"role": "anon", "aud": "other"})).unwrap();
        assert!(open.verify(&to_other).is_ok());
        let strict = open.with_audience(Some("authenticated".into()));
        assert!(
            strict.verify(&to_other).is_err(),
            "a cached verification under another audience"
        );
    }

    #[test]
    fn roundtrip() {
        let t = keys()
            .sign(&json!({"sub": "u", "role": "authenticated", "aud": "authenticated"}))
            .unwrap();
        assert_eq!(keys().verify(&t).unwrap()["sub"], "u");
    }

    #[test]
    fn refuses_expired_other_key_wrong_aud_and_none() {
        let k = keys();
        let past = chrono::Utc::now().timestamp() - 120;
        assert_eq!(
            k.verify(&k.sign(&json!({"role": "anon", "exp": past})).unwrap()),
            Err(JwtError::Expired)
        );
        let other = JwtKeys::hs256(b"another-secret-another-secret-000000", None);
        assert!(k
            .verify(&other.sign(&json!({"role": "anon"})).unwrap())
            .is_err());
        assert!(k
            .verify(&k.sign(&json!({"role": "anon", "aud": "other"})).unwrap())
            .is_err());
        // alg: none
        let none = format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none","typ":"JWT"}"#),
            base64_url(r#"{"role":"service_role"}"#)
        );
        assert!(k.verify(&none).is_err());
        assert!(k.verify("garbage").is_err());
    }

    #[test]
    fn accepts_small_skew() {
        let k = keys();
        let just = chrono::Utc::now().timestamp() - 10;
        assert!(k
            .verify(&k.sign(&json!({"role": "anon", "exp": just})).unwrap())
            .is_ok());
    }

    #[test]
    fn es256_signs_with_kid_and_verifies_by_kid() {
        let jwk = generate_es256_jwk();
        let k = keys().with_jwks(&json!([jwk]).to_string()).unwrap();
        let t = k
            .sign(&json!({"sub": "u", "aud": "authenticated"}))
            .unwrap();
        let h = decode_header(&t).unwrap();
        assert_eq!(h.alg, Algorithm::ES256);
        assert_eq!(h.kid.as_deref(), k.signing_kid());
        assert_eq!(k.verify(&t).unwrap()["sub"], "u");
        // HS256 tokens still verify; the public JWKS has no private part.
        assert!(k
            .verify(&keys().sign(&json!({"role": "anon"})).unwrap())
            .is_ok());
        let pubs = k.public_jwks();
        assert_eq!(pubs["keys"][0]["kid"], jwk["kid"]);
        assert!(pubs["keys"][0].get("d").is_none());
        // A token from another EC key with the same kid is refused.
        let mut other = generate_es256_jwk();
        other["kid"] = jwk["kid"].clone();
        let o = keys().with_jwks(&json!([other]).to_string()).unwrap();
        assert!(k.verify(&o.sign(&json!({"sub": "u"})).unwrap()).is_err());
        // A key that only verifies (no d) cannot sign: HS256 then.
        let public_only = keys().with_jwks(&pubs.to_string()).unwrap();
        assert!(public_only.signing_kid().is_none());
        assert!(public_only.verify(&t).is_ok());
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}
