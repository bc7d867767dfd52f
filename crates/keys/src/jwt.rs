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

/// One key of `GOTRUE_JWT_KEYS`: RS256 (RSA), ES256 (EC P-256) or HS256 (`oct`), named by
/// its `kid`. Every key verifies tokens whose header names its `kid` and its `alg`; the one
/// whose `key_ops` has `sign` also signs session tokens.
#[derive(Clone)]
struct ConfiguredKey {
    kid: String,
    alg: Algorithm,
    /// The private half, when the JWK has one (an `oct` key always does).
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// `key_ops` names `sign`.
    signs: bool,
    /// The public JWK, as `/.well-known/jwks.json` publishes it (`None` for `oct` keys, which
    /// are secrets).
    public_jwk: Option<Value>,
}
/// The secret and keys the project signs and verifies with: HS256 over the project secret
/// (the API keys, and session tokens unless `GOTRUE_JWT_KEYS` names a signing key), and the
/// RS256/ES256/HS256 keys of `GOTRUE_JWT_KEYS`, chosen by `kid` when verifying.
#[derive(Clone)]
pub struct JwtKeys {
    hs_secret: Vec<u8>,
    /// When set, a token's `aud` (if present) must match.
    audience: Option<String>,
    keys: Vec<ConfiguredKey>,
    /// Index into `keys` of the key that signs session tokens; none: HS256 over `hs_secret`.
    signing: Option<usize>,
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
            keys: Vec::new(),
            signing: None,
            verified: VerifiedCache::default(),
        }
    }

    /// The same keys, accepting only `aud` (when a token has one).
    pub fn with_audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self.verified = VerifiedCache::default();
        self
    }

    /// Adds the keys of a JWK set, GoTrue's `GOTRUE_JWT_KEYS`: a JSON array of JWKs (or
    /// `{"keys": [...]}`), each RSA (RS256), EC P-256 (ES256) or `oct` (HS256), with `kid`,
    /// `alg` and `key_ops`. The one key whose `key_ops` has `sign` (it needs its private part)
    /// signs session tokens; the others only verify, until they are removed. Two signing keys
    /// are refused; so is a set without one, except a set that names no `key_ops` at all and
    /// holds exactly one private key (which then signs). The HS256 project secret keeps
    /// verifying tokens without a `kid` (the API keys).
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
        let mut keys = std::mem::take(&mut self.keys);
        for jwk in &list {
            let key = key_from_jwk(jwk)?;
            if keys.iter().any(|k| k.kid == key.kid) {
                return Err(JwtError::Invalid(format!(
                    "JWK: two keys have the kid {:?}",
                    key.kid
                )));
            }
            keys.push(key);
        }
        let signers: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].signs).collect();
        let signing = match signers.as_slice() {
            [one] => *one,
            [] => {
                let declares_ops = list.iter().any(|j| j.get("key_ops").is_some());
                let private: Vec<usize> = (0..keys.len())
                    .filter(|&i| keys[i].encoding.is_some())
                    .collect();
                match (declares_ops, private.as_slice()) {
                    (false, [one]) => *one,
                    _ => {
                        return Err(JwtError::Invalid(
                            "no signing key detected: give exactly one key \"key_ops\": [\"sign\", \"verify\"] (and its private part)".into(),
                        ))
                    }
                }
            }
            _ => {
                return Err(JwtError::Invalid(
                    "multiple signing keys detected, only 1 signing key is supported".into(),
                ))
            }
        };
        // A signing key that cannot sign (an RSA key ring refuses, say) stops start-up rather
        // than the first sign-in.
        let probe = &keys[signing];
        let enc = probe
            .encoding
            .as_ref()
            .expect("signing keys have a private part");
        let mut header = Header::new(probe.alg);
        header.kid = Some(probe.kid.clone());
        let token = encode(&header, &serde_json::json!({"probe": true}), enc)
            .map_err(|e| JwtError::Invalid(format!("JWK {:?} cannot sign: {e}", probe.kid)))?;
        let mut val = Validation::new(probe.alg);
        val.validate_exp = false;
        val.required_spec_claims.clear();
        decode::<Value>(&token, &probe.decoding, &val).map_err(|e| {
            JwtError::Invalid(format!(
                "JWK {:?}: its public part does not verify its own signature: {e}",
                probe.kid
            ))
        })?;
        self.keys = keys;
        self.signing = Some(signing);
        self.verified = VerifiedCache::default();
        Ok(self)
    }

    /// The public keys, as `/.well-known/jwks.json` serves them: RSA and EC keys only, with
    /// `use: sig` and `key_ops: ["verify"]`; never a private part, an `oct` key or the HS256
    /// secret.
    pub fn public_jwks(&self) -> Value {
        serde_json::json!({ "keys": self.keys.iter().filter_map(|k| k.public_jwk.clone()).collect::<Vec<_>>() })
    }

    /// The `kid` session tokens are signed with, when `GOTRUE_JWT_KEYS` names a signing key.
    pub fn signing_kid(&self) -> Option<&str> {
        self.signing.map(|i| self.keys[i].kid.as_str())
    }

    /// The algorithm session tokens are signed with.
    pub fn signing_alg(&self) -> Algorithm {
        self.signing
            .map(|i| self.keys[i].alg)
            .unwrap_or(Algorithm::HS256)
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

    /// Signs claims: with the signing key of `GOTRUE_JWT_KEYS` (its `alg`, its `kid` in the
    /// header) when there is one, else HS256 over the project secret.
    pub fn sign(&self, claims: &Value) -> Result<String, JwtError> {
        if let Some(k) = self.signing.map(|i| &self.keys[i]) {
            let mut header = Header::new(k.alg);
            header.kid = Some(k.kid.clone());
            let enc = k
                .encoding
                .as_ref()
                .expect("signing keys have a private part");
            return encode(&header, claims, enc).map_err(|e| JwtError::Invalid(e.to_string()));
        }
        self.sign_hs256(claims)
    }

    /// Verifies signature, `exp`/`nbf` (with 30 s skew) and `aud`; returns the claims.
    /// HS256 over the project secret (no `kid`) and the configured keys by `kid` and `alg`
    /// are accepted; `alg: none` and algorithms or keys we do not hold are refused.
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

    /// The key a token's header names. With a `kid`: the configured key of that `kid`, and
    /// only for its own `alg` (an HS256 token naming an RSA or EC key's `kid` is the
    /// algorithm-confusion attack; an RS256 token naming an EC key is a forgery). Without a
    /// `kid`: HS256 over the project secret (the API keys), nothing else.
    fn key_for<'a>(
        &'a self,
        header: &Header,
        hs: &'a DecodingKey,
    ) -> Result<(Algorithm, &'a DecodingKey), JwtError> {
        if !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256
        ) {
            return Err(JwtError::Invalid(format!(
                "unsupported algorithm {:?}",
                header.alg
            )));
        }
        match header.kid.as_deref() {
            Some(kid) => {
                let k = self
                    .keys
                    .iter()
                    .find(|k| k.kid == kid)
                    .ok_or_else(|| JwtError::Invalid(format!("invalid kid: {kid}")))?;
                if k.alg != header.alg {
                    return Err(JwtError::Invalid(format!(
                        "kid {kid} is a {:?} key, not {:?}",
                        k.alg, header.alg
                    )));
                }
                Ok((k.alg, &k.decoding))
            }
            None if header.alg == Algorithm::HS256 => Ok((Algorithm::HS256, hs)),
            None => Err(JwtError::Invalid(format!(
                "missing kid: a {:?} token must name its key",
                header.alg
            ))),
        }
    }

    fn verify_uncached(&self, token: &str) -> Result<Value, JwtError> {
        let header = decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
        let hs = DecodingKey::from_secret(&self.hs_secret);
        let (alg, key) = self.key_for(&header, &hs)?;
        let mut v = Validation::new(alg);
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

fn b64url_decode(field: &str, s: &str) -> Result<Vec<u8>, JwtError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| JwtError::Invalid(format!("JWK: {field} is not base64url")))
}

/// A key of `GOTRUE_JWT_KEYS` from its JWK. `alg`, when given, must be the key type's one
/// algorithm (RS256 for RSA, ES256 for EC P-256, HS256 for `oct`); without it, that one.
/// Without `kid`, the RFC 7638 thumbprint names the key.
fn key_from_jwk(jwk: &Value) -> Result<ConfiguredKey, JwtError> {
    let bad = |m: &str| JwtError::Invalid(format!("JWK: {m}"));
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kty = field("kty").ok_or_else(|| bad("missing kty"))?;
    let alg = match (kty, field("alg")) {
        ("RSA", None | Some("RS256")) => Algorithm::RS256,
        ("EC", None | Some("ES256")) => Algorithm::ES256,
        ("oct", None | Some("HS256")) => Algorithm::HS256,
        (kty, Some(alg)) => {
            return Err(bad(&format!(
                "alg {alg} with kty {kty} is not supported (RS256 with RSA, ES256 with EC P-256, HS256 with oct)"
            )))
        }
        (kty, None) => return Err(bad(&format!("kty {kty} is not supported (RSA, EC, oct)"))),
    };
    let key_ops: Vec<&str> = match jwk.get("key_ops") {
        None => Vec::new(),
        Some(Value::Array(ops)) => ops
            .iter()
            .map(|o| o.as_str().ok_or_else(|| bad("key_ops must be strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("key_ops must be an array")),
    };
    let signs = key_ops.contains(&"sign");
    let (thumbprint_input, encoding, decoding, public_jwk) = match alg {
        Algorithm::RS256 => rsa_parts(jwk)?,
        Algorithm::ES256 => ec_parts(jwk)?,
        _ => {
            let k = b64url_decode("k", field("k").ok_or_else(|| bad("oct key without k"))?)?;
            if k.len() < 32 {
                return Err(bad("an oct (HS256) key needs at least 32 bytes"));
            }
            (
                String::new(),
                Some(EncodingKey::from_secret(&k)),
                DecodingKey::from_secret(&k),
                None,
            )
        }
    };
    let kid = match field("kid") {
        Some(k) if !k.is_empty() => k.to_string(),
        _ if alg == Algorithm::HS256 => return Err(bad("an oct (HS256) key needs a kid")),
        _ => {
            use sha2::Digest;
            b64url(&sha2::Sha256::digest(thumbprint_input.as_bytes()))
        }
    };
    if signs && encoding.is_none() {
        return Err(bad(&format!(
            "kid {kid}: key_ops has sign but the JWK has no private part"
        )));
    }
    let public_jwk = public_jwk.map(|mut p| {
        p["kid"] = Value::String(kid.clone());
        p["alg"] = Value::String(format!("{alg:?}"));
        p["use"] = Value::String("sig".into());
        p["key_ops"] = serde_json::json!(["verify"]);
        p
    });
    Ok(ConfiguredKey {
        kid,
        alg,
        encoding,
        decoding,
        signs,
        public_jwk,
    })
}

type KeyParts = (String, Option<EncodingKey>, DecodingKey, Option<Value>);

/// An RSA key: the public part from `n`/`e`; the private part (PKCS#1 DER for ring, through
/// the `pkcs1` crate) when `d` is given, which then needs the CRT parameters too.
fn rsa_parts(jwk: &Value) -> Result<KeyParts, JwtError> {
    let bad = |m: &str| JwtError::Invalid(format!("JWK: {m}"));
    let field = |name: &'static str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("RSA key without {name}")))
    };
    let (n, e) = (field("n")?, field("e")?);
    let n_bytes = b64url_decode("n", n)?;
    let modulus_bits = n_bytes.iter().skip_while(|b| **b == 0).count() * 8;
    if modulus_bits < 2048 {
        return Err(bad("RSA keys need at least 2048 bits"));
    }
    let decoding = DecodingKey::from_rsa_components(n, e).map_err(|e| bad(&e.to_string()))?;
    let encoding = match jwk.get("d").and_then(Value::as_str) {
        None => None,
        Some(d) => {
            let mut parts = Vec::new();
            for name in ["p", "q", "dp", "dq", "qi"] {
                parts.push(b64url_decode(name, field(name)?)?);
            }
            let (e_bytes, d_bytes) = (b64url_decode("e", e)?, b64url_decode("d", d)?);
            fn uint(b: &[u8]) -> Result<pkcs1::UintRef<'_>, JwtError> {
                pkcs1::UintRef::new(b)
                    .map_err(|e| JwtError::Invalid(format!("JWK: RSA integer: {e}")))
            }
            let key = pkcs1::RsaPrivateKey {
                modulus: uint(&n_bytes)?,
                public_exponent: uint(&e_bytes)?,
                private_exponent: uint(&d_bytes)?,
                prime1: uint(&parts[0])?,
                prime2: uint(&parts[1])?,
                exponent1: uint(&parts[2])?,
                exponent2: uint(&parts[3])?,
                coefficient: uint(&parts[4])?,
                other_prime_infos: None,
            };
            let der = pkcs1::der::Encode::to_der(&key)
                .map_err(|e| bad(&format!("encoding RSA private key: {e}")))?;
            Some(EncodingKey::from_rsa_der(&der))
        }
    };
    let public = serde_json::json!({"kty": "RSA", "n": n, "e": e});
    Ok((
        format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
        encoding,
        decoding,
        Some(public),
    ))
}

/// An EC P-256 key (with `d` when it may sign).
fn ec_parts(jwk: &Value) -> Result<KeyParts, JwtError> {
    use p256::pkcs8::EncodePrivateKey;
    let bad = |m: &str| JwtError::Invalid(format!("JWK: {m}"));
    if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
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
    let decoding = DecodingKey::from_ec_components(x, y).map_err(|e| bad(&e.to_string()))?;
    Ok((
        format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
        encoding,
        decoding,
        Some(serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y})),
    ))
}

/// A fresh ES256 private JWK (with `kid`, and `key_ops` naming it the signing key) for
/// `GOTRUE_JWT_KEYS`.
pub fn generate_es256_jwk() -> Value {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let mut jwk: Value = serde_json::from_str(&secret.to_jwk_string()).expect("JWK is JSON");
    let mut kid = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut kid);
    jwk["kid"] = Value::String(b64url(&kid));
    jwk["alg"] = Value::String("ES256".into());
    jwk["use"] = Value::String("sig".into());
    jwk["key_ops"] = serde_json::json!(["sign", "verify"]);
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
        // A set without a key that can sign is refused (GoTrue's "no signing key").
        assert!(keys().with_jwks(&pubs.to_string()).is_err());
    }

    const RSA_FIXTURE: &str = include_str!("../testdata/rsa_test_keys.json");

    fn rsa_jwk(i: usize) -> Value {
        let v: Value = serde_json::from_str(RSA_FIXTURE).unwrap();
        v["keys"][i]["private_jwk"].clone()
    }

    fn with_ops(mut jwk: Value, ops: &[&str]) -> Value {
        jwk["key_ops"] = json!(ops);
        jwk
    }

    fn public_only(jwk: &Value) -> Value {
        let mut p = jwk.clone();
        for f in ["d", "p", "q", "dp", "dq", "qi"] {
            p.as_object_mut().unwrap().remove(f);
        }
        p
    }

    #[test]
    fn rs256_signs_with_the_sign_key_and_verifies_by_kid_and_alg() {
        let rsa = with_ops(rsa_jwk(0), &["sign", "verify"]);
        let ec = with_ops(generate_es256_jwk(), &["verify"]);
        let k = keys()
            .with_jwks(&json!([ec.clone(), rsa.clone()]).to_string())
            .unwrap();
        assert_eq!(k.signing_kid(), Some("test-rsa-1"));
        assert_eq!(k.signing_alg(), Algorithm::RS256);
        let t = k.sign(&json!({"sub": "u", "exp": 4102444800u64})).unwrap();
        let h = decode_header(&t).unwrap();
        assert_eq!(
            (h.alg, h.kid.as_deref()),
            (Algorithm::RS256, Some("test-rsa-1"))
        );
        assert_eq!(k.verify(&t).unwrap()["sub"], "u");
        // The verify-only EC key still verifies its own tokens (an earlier signing key).
        let old = keys()
            .with_jwks(&json!([with_ops(ec.clone(), &["sign", "verify"])]).to_string())
            .unwrap();
        let old_token = old.sign(&json!({"sub": "old"})).unwrap();
        assert_eq!(k.verify(&old_token).unwrap()["sub"], "old");
        // ... until it is removed.
        let without = keys().with_jwks(&json!([rsa.clone()]).to_string()).unwrap();
        assert!(without.verify(&old_token).is_err());
        assert!(without.verify(&t).is_ok());
        // Published: both public keys, verify-only, never a private part.
        let pubs = k.public_jwks();
        let list = pubs["keys"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        for key in list {
            for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
                assert!(key.get(private).is_none(), "{private} published: {key}");
            }
            assert_eq!(key["key_ops"], json!(["verify"]));
            assert_eq!(key["use"], "sig");
        }
        assert_eq!(list[1]["alg"], "RS256");
        assert_eq!(list[1]["n"], rsa["n"]);
    }

    #[test]
    fn a_token_is_verified_only_by_the_key_and_alg_its_header_names() {
        let rsa = with_ops(rsa_jwk(0), &["sign", "verify"]);
        let ec = with_ops(generate_es256_jwk(), &["verify"]);
        let k = keys()
            .with_jwks(&json!([rsa.clone(), ec.clone()]).to_string())
            .unwrap();
        let good = k.sign(&json!({"sub": "u"})).unwrap();
        let (_, rest) = good.split_once('.').unwrap();
        let reheader = |header: Value| format!("{}.{rest}", base64_url(&header.to_string()));
        // The RS256 signature under another kid, another alg, or no kid.
        for header in [
            json!({"alg": "RS256", "typ": "JWT", "kid": ec["kid"]}),
            json!({"alg": "ES256", "typ": "JWT", "kid": "test-rsa-1"}),
            json!({"alg": "RS256", "typ": "JWT"}),
            json!({"alg": "RS512", "typ": "JWT", "kid": "test-rsa-1"}),
            json!({"alg": "PS256", "typ": "JWT", "kid": "test-rsa-1"}),
        ] {
            assert!(k.verify(&reheader(header.clone())).is_err(), "{header}");
        }
        // HS256 signed with the RSA public key (PEM, JWK, n) as the HMAC secret, with the RSA
        // kid or none.
        let v: Value = serde_json::from_str(RSA_FIXTURE).unwrap();
        let pem = v["keys"][0]["public_pem"].as_str().unwrap();
        for secret in [
            pem,
            &public_only(&rsa).to_string(),
            rsa["n"].as_str().unwrap(),
        ] {
            let forged = JwtKeys::hs256(secret.as_bytes(), None);
            let plain = forged.sign_hs256(&json!({"role": "service_role"})).unwrap();
            assert!(k.verify(&plain).is_err());
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("test-rsa-1".into());
            let with_kid = encode(
                &header,
                &json!({"role": "service_role"}),
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap();
            assert!(k.verify(&with_kid).is_err());
        }
        // Another RSA key under our kid.
        let mut other = with_ops(rsa_jwk(1), &["sign"]);
        other["kid"] = json!("test-rsa-1");
        let o = keys().with_jwks(&json!([other]).to_string()).unwrap();
        assert!(k.verify(&o.sign(&json!({"sub": "u"})).unwrap()).is_err());
    }

    #[test]
    fn key_sets_gotrue_refuses_are_refused() {
        let rsa = rsa_jwk(0);
        let ec = generate_es256_jwk();
        let err = |set: Value| {
            keys()
                .with_jwks(&set.to_string())
                .err()
                .map(|e| e.to_string())
        };
        // Two signing keys, none, sign without a private part, duplicate kid, weak RSA.
        assert!(err(json!([with_ops(rsa.clone(), &["sign"]), ec.clone()]))
            .unwrap()
            .contains("multiple signing keys"));
        assert!(err(json!([
            with_ops(rsa.clone(), &["verify"]),
            with_ops(ec.clone(), &["verify"])
        ]))
        .unwrap()
        .contains("no signing key"));
        assert!(err(json!([with_ops(public_only(&rsa), &["sign"])])).is_some());
        let mut dup = with_ops(generate_es256_jwk(), &["verify"]);
        dup["kid"] = ec["kid"].clone();
        assert!(err(json!([ec.clone(), dup])).unwrap().contains("two keys"));
        let mut short = rsa.clone();
        short["n"] = json!(base64_url("short modulus"));
        assert!(err(json!([short])).is_some());
        // A private RSA key whose parts do not belong together cannot sign.
        let mut mixed = with_ops(rsa.clone(), &["sign"]);
        mixed["dp"] = rsa_jwk(1)["dp"].clone();
        assert!(err(json!([mixed])).is_some());
        let mut wrong_alg = rsa.clone();
        wrong_alg["alg"] = json!("ES256");
        assert!(err(json!([wrong_alg])).is_some());
        // Without any key_ops, the one private key signs (and a public one only verifies).
        let legacy = keys()
            .with_jwks(&json!([rsa.clone(), public_only(&rsa_jwk(1))]).to_string())
            .unwrap();
        assert_eq!(legacy.signing_kid(), Some("test-rsa-1"));
        // An oct key signs HS256 with its kid and is never published.
        let oct = json!({"kty": "oct", "kid": "hs-1", "alg": "HS256",
                         "k": base64_url("0123456789abcdef0123456789abcdef"), "key_ops": ["sign", "verify"]});
        let o = keys()
            .with_jwks(&json!([oct, with_ops(rsa, &["verify"])]).to_string())
            .unwrap();
        let t = o.sign(&json!({"sub": "u"})).unwrap();
        assert_eq!(decode_header(&t).unwrap().kid.as_deref(), Some("hs-1"));
        assert!(o.verify(&t).is_ok());
        assert_eq!(o.public_jwks()["keys"].as_array().unwrap().len(), 1);
        assert!(o.public_jwks().to_string().find("\"k\"").is_none());
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}
