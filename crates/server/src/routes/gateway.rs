//! The API-key gate Supabase's gateway (Kong) puts in front of every surface: a request
//! needs an `apikey` header (or `?apikey=`) holding the project's anon or service_role key.
//! Except `/storage/v1`, which Supabase's gateway passes through without one: Storage
//! verifies the bearer JWT itself (server code builds a `StorageClient` with only
//! `Authorization`), so a storage request without `apikey` goes on to the storage crate, which
//! answers a request without any credential in Storage's own words. An `apikey` that is
//! present is still checked.
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::AppState;

/// Paths a browser reaches without a key (email links, OAuth callbacks, public keys).
const OPEN_PATHS: &[&str] = &[
    "/auth/v1/verify",
    "/auth/v1/callback",
    "/auth/v1/authorize",
    "/auth/v1/.well-known/jwks.json",
    "/auth/v1/health",
];

/// Storage URLs a browser follows without a key (`<img src>`, shared links): public objects
/// and signed URLs, whose token is the credential. Only for the listed methods.
const OPEN_STORAGE: &[(&str, &[&str])] = &[
    ("/storage/v1/object/public/", &["GET", "HEAD"]),
    ("/storage/v1/object/sign/", &["GET", "HEAD"]),
    ("/storage/v1/object/upload/sign/", &["PUT"]),
    ("/storage/v1/render/image/public/", &["GET", "HEAD"]),
    ("/storage/v1/render/image/sign/", &["GET", "HEAD"]),
];

fn open_storage(method: &axum::http::Method, path: &str) -> bool {
    OPEN_STORAGE
        .iter()
        .any(|(prefix, methods)| path.starts_with(prefix) && methods.contains(&method.as_str()))
}

/// `/storage/v1` and everything under it.
fn is_storage(path: &str) -> bool {
    path == "/storage/v1" || path.starts_with("/storage/v1/")
}

/// The role of the API key the request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyRole {
    Anon,
    ServiceRole,
}

fn deny(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "message": message })),
    )
        .into_response()
}

fn query_apikey(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "apikey").then(|| v.to_string())
    })
}

pub async fn require_apikey(
    State(state): State<AppState>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    if OPEN_PATHS.contains(&req.uri().path())
        || req.method() == axum::http::Method::OPTIONS
        || open_storage(req.method(), req.uri().path())
    {
        return next.run(req).await;
    }
    let key = req
        .headers()
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_apikey(req.uri().query()));
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        if is_storage(req.uri().path()) {
            return next.run(req).await;
        }
        return deny("No API key found in request");
    };
    let role = match state.keys.verify(&key) {
        Ok(claims) => match claims.get("role").and_then(|r| r.as_str()) {
            Some("anon") => ApiKeyRole::Anon,
            Some("service_role") => ApiKeyRole::ServiceRole,
            _ => return deny("Invalid authentication credentials"),
        },
        Err(_) => return deny("Invalid authentication credentials"),
    };
    req.extensions_mut().insert(role);
    next.run(req).await
}
