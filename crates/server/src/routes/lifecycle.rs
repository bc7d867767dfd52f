//! Shutdown without dropping work: requests in flight are counted; once draining starts
//! (SIGTERM/SIGINT) new requests get a 503 in their surface's error shape and
//! `Connection: close`, while the ones in flight finish (bounded by the drain timeout).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::app::AppState;

/// Draining flag and the count of requests in flight.
#[derive(Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// One request in flight; dropped when its handler has answered.
pub struct InFlight(Arc<Lifecycle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// From now on new requests are refused with 503 and `/health` answers "draining".
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Waits until no request is in flight or `deadline` passes; true when none is left.
    pub async fn wait_idle(&self, deadline: Instant) -> bool {
        loop {
            // Registered before the check, so a wake-up between the two is not lost.
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return true;
            }
            let at = tokio::time::Instant::from_std(deadline);
            if tokio::time::timeout_at(at, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }
}

/// Counts requests in flight, refuses new ones while draining, and answers 504 for a request
/// still running at its deadline (`AGENCYFLOW_REQUEST_TIMEOUT`). `/health` and `/metrics`
/// pass untouched: they report the drain.
pub async fn gate(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" || path == "/metrics" {
        return next.run(req).await;
    }
    if state.lifecycle.draining() {
        let mut resp = shutting_down(path);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    }
    let _in_flight = state.lifecycle.enter();
    // A file upload lasts as long as the client's link needs: its body is bounded by the
    // storage limits instead, and its database work by the pools' and roles' timeouts.
    if is_upload(req.method(), path, req.headers()) {
        return next.run(req).await;
    }
    let deadline = Duration::from_secs(state.settings.serve.request_timeout);
    let path = path.to_string();
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            // The handler (and whatever database work it was waiting on) is dropped here:
            // its connections roll back or are discarded by the pools.
            tracing::warn!(path = %path, timeout_s = deadline.as_secs(), "request timed out");
            timed_out(&path)
        }
    }
}

/// A request that streams a file: an object or resumable upload to `/storage/v1`, or the
/// `documents` function, sent as anything but JSON (the storage routes that take JSON —
/// move, copy, sign, list — keep the deadline).
fn is_upload(method: &axum::http::Method, path: &str, headers: &axum::http::HeaderMap) -> bool {
    use axum::http::Method;
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return false;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    !json
        && (path.starts_with("/storage/v1/object/")
            || path.starts_with("/storage/v1/upload/")
            || path == "/functions/v1/documents")
}

/// A 504 in the error shape of the surface `path` belongs to: the request outlived
/// `AGENCYFLOW_REQUEST_TIMEOUT`.
fn timed_out(path: &str) -> Response {
    const MSG: &str = "Processing this request timed out, please retry after a moment";
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    let body: Value = if under("/rest/v1") {
        // PostgREST's code for a request that timed out waiting on the database.
        json!({ "code": "PGRST003", "details": null, "hint": "Retry the request", "message": "Timed out waiting for the database" })
    } else if under("/auth/v1") {
        // GoTrue's request_timeout.
        json!({ "code": 504, "error_code": "request_timeout", "msg": MSG })
    } else if under("/storage/v1") {
        json!({ "statusCode": "504", "error": "GatewayTimeout", "message": MSG })
    } else if under("/functions/v1") {
        json!({ "error": MSG, "code": "request_timeout" })
    } else {
        json!({ "code": "request_timeout", "message": MSG })
    };
    (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response()
}

const MESSAGE: &str = "The server is shutting down; retry the request";

/// A 503 in the error shape of the surface `path` belongs to.
fn shutting_down(path: &str) -> Response {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    let body: Value = if under("/rest/v1") {
        // PostgREST's shape.
        json!({ "code": "PGRST000", "details": null, "hint": "Retry the request", "message": "The server is shutting down" })
    } else if under("/auth/v1") {
        // GoTrue's.
        json!({ "code": 503, "error_code": "unexpected_failure", "msg": MESSAGE })
    } else if under("/storage/v1") {
        // Supabase Storage's.
        json!({ "statusCode": "503", "error": "ServiceUnavailable", "message": MESSAGE })
    } else if under("/functions/v1") {
        json!({ "error": MESSAGE, "code": "shutting_down" })
    } else {
        json!({ "code": "shutting_down", "message": MESSAGE })
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_request_ends_or_at_the_deadline() {
        let l = Arc::new(Lifecycle::default());
        assert!(l.wait_idle(Instant::now()).await, "nothing in flight");
        let a = l.enter();
        let b = l.enter();
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(
            !l.wait_idle(soon).await,
            "two still in flight at the deadline"
        );
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.wait_idle(Instant::now() + Duration::from_secs(30)).await })
        };
        drop(a);
        drop(b);
        assert!(waiter.await.unwrap());
        assert_eq!(l.in_flight(), 0);
    }

    #[tokio::test]
    async fn each_surface_gets_its_own_504_shape() {
        for (path, key, value) in [
            ("/rest/v1/clients", "code", json!("PGRST003")),
            ("/auth/v1/token", "error_code", json!("request_timeout")),
            ("/storage/v1/object/b/k", "statusCode", json!("504")),
            ("/functions/v1/search", "code", json!("request_timeout")),
            ("/restful", "code", json!("request_timeout")),
        ] {
            let r = timed_out(path);
            assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
            let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let j: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(j[key], value, "{path}: {j}");
        }
    }

    #[tokio::test]
    async fn each_surface_gets_its_own_503_shape() {
        for (path, key, value) in [
            ("/rest/v1/clients", "code", json!("PGRST000")),
            ("/auth/v1/token", "error_code", json!("unexpected_failure")),
            ("/storage/v1/object/b/k", "statusCode", json!("503")),
            ("/functions/v1/search", "code", json!("shutting_down")),
            ("/restful", "code", json!("shutting_down")),
        ] {
            let r = shutting_down(path);
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let j: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(j[key], value, "{path}: {j}");
        }
    }

    #[test]
    fn uploads_stream_without_the_request_deadline() {
        use axum::http::{HeaderMap, HeaderValue, Method};
        let mut multipart = HeaderMap::new();
        multipart.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=x"),
        );
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(is_upload(
            &Method::POST,
            "/storage/v1/object/docs/a.bin",
            &multipart
        ));
        assert!(is_upload(
            &Method::PATCH,
            "/storage/v1/upload/resumable/abc",
            &HeaderMap::new()
        ));
        assert!(is_upload(
            &Method::POST,
            "/functions/v1/documents",
            &multipart
        ));
        assert!(!is_upload(&Method::POST, "/storage/v1/object/move", &json));
        assert!(!is_upload(
            &Method::GET,
            "/storage/v1/object/docs/a.bin",
            &multipart
        ));
        assert!(!is_upload(&Method::POST, "/rest/v1/clients", &multipart));
    }
}
