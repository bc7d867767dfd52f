//! A mock OpenID Connect provider on a local port, for the external sign-in tests: discovery,
//! an authorization endpoint that "signs in" the configured user and sends the browser back
//! with `code` and `state`, a token endpoint (client credentials checked, codes used once)
//! that returns an RS256 ID token, userinfo, and the JWKS. The same server answers
//! GitHub's paths (`/login/oauth/*`, `/api/v3/user`, `/api/v3/user/emails`), so
//! `GOTRUE_EXTERNAL_GITHUB_URL` can point at it too.
//!
//! Knobs make the ID token wrong in one way at a time: another `nonce`, expired, another
//! audience, an unverified address, or the user refusing at the provider.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

/// The user the provider signs in.
#[derive(Debug, Clone)]
pub struct MockUser {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

/// Ways to make the provider's answer wrong (all off by default).
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    /// The ID token carries another `nonce` than the one asked for.
    pub wrong_nonce: bool,
    /// The ID token expired an hour ago.
    pub expired: bool,
    /// The ID token is for another client (`aud`).
    pub wrong_audience: bool,
    /// The user refuses at the provider: the browser comes back with `error=access_denied`.
    pub deny: bool,
}

struct Grant {
    redirect_uri: String,
    nonce: Option<String>,
    user: MockUser,
}

struct Inner {
    base: String,
    client_id: String,
    client_secret: String,
    user: MockUser,
    knobs: Knobs,
    codes: HashMap<String, Grant>,
    access: HashMap<String, MockUser>,
    exchanges: usize,
}

/// The provider's RSA key: generated once per test process (2048-bit generation is slow in
/// debug builds), with its `kid`.
struct Key {
    encoding: EncodingKey,
    jwk: Value,
    kid: String,
}

fn key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let private =
            rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key generation");
        let der = private.to_pkcs1_der().expect("PKCS#1 DER");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let kid = format!("mock-{}", uuid::Uuid::new_v4().simple());
        Key {
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": b64.encode(private.n().to_bytes_be()),
                "e": b64.encode(private.e().to_bytes_be()),
            }),
            kid,
        }
    })
}

/// A running mock provider (stops when dropped).
pub struct MockOidc {
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockOidc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn random() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

type Shared = Arc<Mutex<Inner>>;

impl MockOidc {
    /// Starts the provider for one OAuth client.
    pub async fn start(client_id: &str, client_secret: &str) -> MockOidc {
        key();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner {
            base,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            user: MockUser {
                sub: random(),
                email: format!("{}@provider.test", random()),
                email_verified: true,
                name: "Mock User".into(),
            },
            knobs: Knobs::default(),
            codes: HashMap::new(),
            access: HashMap::new(),
            exchanges: 0,
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/login/oauth/authorize", get(authorize))
            .route("/token", post(token))
            .route("/login/oauth/access_token", post(token))
            .route("/userinfo", get(userinfo))
            .route("/api/v3/user", get(github_user))
            .route("/api/v3/user/emails", get(github_emails))
            .route("/jwks", get(jwks))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        MockOidc { inner, task }
    }

    /// The issuer (and base URL): `GOTRUE_EXTERNAL_<NAME>_URL`.
    pub fn issuer(&self) -> String {
        self.inner.lock().unwrap().base.clone()
    }

    /// Who signs in next.
    pub fn set_user(&self, user: MockUser) {
        self.inner.lock().unwrap().user = user;
    }

    pub fn user(&self) -> MockUser {
        self.inner.lock().unwrap().user.clone()
    }

    pub fn set_knobs(&self, knobs: Knobs) {
        self.inner.lock().unwrap().knobs = knobs;
    }

    /// How many codes were exchanged at the token endpoint.
    pub fn exchanges(&self) -> usize {
        self.inner.lock().unwrap().exchanges
    }

    /// An RS256 token signed by the provider's key (with its `kid`), with these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let k = key();
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(k.kid.clone());
        jsonwebtoken::encode(&h, claims, &k.encoding).unwrap()
    }

    /// The ID token the provider would issue for its user (knobs applied), with `nonce`.
    pub fn id_token(&self, nonce: Option<&str>) -> String {
        let i = self.inner.lock().unwrap();
        let claims = id_claims(&i, &i.user, nonce.map(str::to_string), None);
        drop(i);
        self.sign(&claims)
    }
}

fn id_claims(i: &Inner, u: &MockUser, nonce: Option<String>, access: Option<&str>) -> Value {
    let t = now();
    let mut c = json!({
        "iss": i.base,
        "sub": u.sub,
        "aud": if i.knobs.wrong_audience { "another-client".to_string() } else { i.client_id.clone() },
        "iat": t,
        "exp": if i.knobs.expired { t - 3600 } else { t + 600 },
        "email": u.email,
        "email_verified": u.email_verified,
        "name": u.name,
        "preferred_username": u.email.split('@').next().unwrap_or_default(),
    });
    if let Some(n) = nonce {
        c["nonce"] = json!(if i.knobs.wrong_nonce {
            "not-the-nonce".to_string()
        } else {
            n
        });
    }
    if let Some(a) = access {
        use sha2::Digest;
        let d = sha2::Sha256::digest(a.as_bytes());
        c["at_hash"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..16]));
    }
    c
}

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    let base = s.lock().unwrap().base.clone();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks() -> Json<Value> {
    Json(json!({ "keys": [key().jwk] }))
}

fn redirect(to: String) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut i = s.lock().unwrap();
    let (Some(redirect_uri), Some(state)) = (q.get("redirect_uri"), q.get("state")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri and state required").into_response();
    };
    if q.get("client_id") != Some(&i.client_id)
        || q.get("response_type").map(String::as_str) != Some("code")
    {
        return (StatusCode::BAD_REQUEST, "unknown client or response type").into_response();
    }
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let mut back = form_urlencoded::Serializer::new(String::new());
    if i.knobs.deny {
        back.append_pair("error", "access_denied")
            .append_pair("error_description", "The user denied access")
            .append_pair("state", state);
        return redirect(format!("{redirect_uri}{sep}{}", back.finish()));
    }
    let code = random();
    let user = i.user.clone();
    i.codes.insert(
        code.clone(),
        Grant {
            redirect_uri: redirect_uri.clone(),
            nonce: q.get("nonce").cloned(),
            user,
        },
    );
    back.append_pair("code", &code).append_pair("state", state);
    redirect(format!("{redirect_uri}{sep}{}", back.finish()))
}

async fn token(State(s): State<Shared>, Form(f): Form<HashMap<String, String>>) -> Response {
    let mut i = s.lock().unwrap();
    let bad = |e: &str| (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response();
    if f.get("client_id") != Some(&i.client_id) || f.get("client_secret") != Some(&i.client_secret)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_client" })),
        )
            .into_response();
    }
    if f.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return bad("unsupported_grant_type");
    }
    let Some(grant) = f.get("code").and_then(|c| i.codes.remove(c)) else {
        return bad("invalid_grant");
    };
    if f.get("redirect_uri") != Some(&grant.redirect_uri) {
        return bad("invalid_grant");
    }
    i.exchanges += 1;
    let access = random();
    i.access.insert(access.clone(), grant.user.clone());
    let claims = id_claims(&i, &grant.user, grant.nonce.clone(), Some(&access));
    drop(i);
    let k = key();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(k.kid.clone());
    let id_token = jsonwebtoken::encode(&h, &claims, &k.encoding).unwrap();
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": format!("refresh-{}", random()),
        "id_token": id_token,
        "scope": "openid email profile",
    }))
    .into_response()
}

fn bearer_user(s: &Shared, h: &HeaderMap) -> Option<MockUser> {
    let t = h
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    s.lock().unwrap().access.get(t).cloned()
}

async fn userinfo(State(s): State<Shared>, h: HeaderMap) -> Response {
    match bearer_user(&s, &h) {
        Some(u) => Json(json!({
            "sub": u.sub, "email": u.email, "email_verified": u.email_verified, "name": u.name,
        }))
        .into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// GitHub's `/user`: a numeric id (the subject's digits; GitHub ids are numbers).
async fn github_user(State(s): State<Shared>, h: HeaderMap) -> Response {
    match bearer_user(&s, &h) {
        Some(u) => {
            let id: u64 = u
                .sub
                .bytes()
                .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64))
                % 1_000_000_000;
            Json(json!({
                "id": id, "login": u.email.split('@').next().unwrap_or_default(),
                "name": u.name, "avatar_url": "https://avatars.example/u.png", "email": null,
            }))
            .into_response()
        }
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn github_emails(State(s): State<Shared>, h: HeaderMap) -> Response {
    match bearer_user(&s, &h) {
        Some(u) => Json(json!([
            { "email": u.email, "primary": true, "verified": u.email_verified, "visibility": "private" },
        ]))
        .into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}
