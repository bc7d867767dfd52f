//! The project's JWT keys: signing the API keys and session tokens, and verifying every
//! bearer token any surface receives (REST, functions, auth).
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
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

/// The secret and algorithms the project signs and verifies with.
#[derive(Clone)]
pub struct JwtKeys {
    hs_secret: Vec<u8>,
    /// When set, a token's `aud` (if present) must match.
    audience: Option<String>,
}

impl JwtKeys {
    pub fn hs256(secret: &[u8], audience: Option<String>) -> Self {
        JwtKeys {
            hs_secret: secret.to_vec(),
            audience,
        }
    }

    /// Signs claims with HS256.
    pub fn sign(&self, claims: &Value) -> Result<String, JwtError> {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.hs_secret),
        )
        .map_err(|e| JwtError::Invalid(e.to_string()))
    }

    /// Verifies signature, `exp`/`nbf` (with 30 s skew) and `aud`; returns the claims.
    /// `alg: none` and algorithms we do not hold a key for are refused.
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        let header = decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::HS256 {
            return Err(JwtError::Invalid(format!(
                "unsupported algorithm {:?}",
                header.alg
            )));
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = LEEWAY_SECS;
        v.validate_aud = false;
        v.validate_nbf = true;
        v.required_spec_claims.clear();
        let data = decode::<Value>(token, &DecodingKey::from_secret(&self.hs_secret), &v).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => JwtError::Expired,
                _ => JwtError::Invalid(e.to_string()),
            },
        )?;
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

/// The legacy API key for `role` (`anon` or `service_role`), as Supabase issues them:
/// deterministic for a given secret, valid for ten years from 2026-01-01.
pub fn api_key(keys: &JwtKeys, role: &str) -> Result<String, JwtError> {
    const IAT: i64 = 1_767_225_600;
    keys.sign(&serde_json::json!({ "role": role, "iss": "supabase", "iat": IAT, "exp": IAT + 10 * 365 * 24 * 3600 }))
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

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}
