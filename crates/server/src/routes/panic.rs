//! The last line of defence: a panic anywhere below (a handler, a parser, a dependency)
//! becomes a 500 JSON answer carrying the request id, logged with its message, instead of a
//! connection the client sees dropped.
use std::panic::AssertUnwindSafe;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::FutureExt;
use serde_json::json;

use crate::app::REQUEST_ID;

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

pub async fn catch_panic(req: Request<Body>, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(p) => {
            tracing::error!(request_id = %request_id, panic = %panic_message(p.as_ref()), "handler panicked");
            let mut resp = (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({
                    "code": "internal_error",
                    "message": "Internal server error",
                    "request_id": request_id,
                })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert(REQUEST_ID.clone(), v);
            }
            resp
        }
    }
}

/// Every error answer is JSON: responses the framework makes itself (an unknown route's 404,
/// a 405, a body-limit 413, an extractor's 400/415/422, all with a text or empty body) get a
/// JSON body `{"code", "message"}` naming what was wrong; bodies that are already JSON pass
/// through untouched.
pub async fn json_errors(req: Request<Body>, next: Next) -> Response {
    let head = req.method() == axum::http::Method::HEAD;
    let resp = next.run(req).await;
    let status = resp.status();
    if head || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/json") || ct.contains("+json")
        });
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // The framework's own messages are short; anything longer is not one of them.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("Error").to_string()
    } else {
        text
    };
    let code = match status.as_u16() {
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        s if s >= 500 => "internal_error",
        _ => "bad_request",
    };
    let mut out = (status, Json(json!({ "code": code, "message": message }))).into_response();
    for (k, v) in parts.headers.iter() {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json_with_the_request_id() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    let v: Vec<u8> = Vec::new();
                    #[allow(clippy::indexing_slicing)]
                    let _ = v[3];
                    "unreachable"
                }),
            )
            .layer(axum::middleware::from_fn(catch_panic));
        let resp = app
            .oneshot(
                Request::builder()
                    .uri("/boom")
                    .header("x-request-id", "req-123")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()["x-request-id"], "req-123");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["code"], "internal_error");
        assert_eq!(j["request_id"], "req-123");
    }

    #[tokio::test]
    async fn framework_errors_become_json() {
        let app = Router::new()
            .route("/only-get", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(json_errors));
        for (method, uri, status) in [("GET", "/missing", 404), ("POST", "/only-get", 405)] {
            let resp = app
                .clone()
                .oneshot(
                    Request::builder()
                        .method(method)
                        .uri(uri)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), status);
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(j["message"].is_string(), "{j}");
        }
    }
}
