//! Broadcast over HTTP: `POST /realtime/v1/api/broadcast` (`{messages: [...]}`) and
//! `POST /realtime/v1/api/broadcast/<topic>/events/<event>` (JSON or bytes), both 202.
//! The caller is the bearer token (or the API key); a private topic needs the caller's
//! insert right on `realtime.messages` as on the websocket.
use std::collections::HashMap;

use agencyflow_keys::{authenticate, caller_from_token, AuthnError, Caller};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::hub::topic_key;
use crate::limits::tenant_key;
use crate::metrics::Metrics;
use crate::protocol::BroadcastPayload;
use crate::Realtime;

/// The HTTP API's errors, in Realtime's `{"error": message}` shape.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("message too large")]
    TooLarge,
    #[error("Too many messages per second for this tenant")]
    TooMany,
    #[error("internal error")]
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooMany => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

fn caller(rt: &Realtime, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let mapped = |e: AuthnError| ApiError::Unauthorized(e.to_string());
    match agencyflow_keys::bearer(headers).map_err(mapped)? {
        Some(_) => authenticate(&rt.inner.keys, &rt.inner.roles, headers).map_err(mapped),
        None => {
            // Signed out: the API key is the caller, as realtime-js sends it.
            let key = headers
                .get("apikey")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            caller_from_token(&rt.inner.keys, &rt.inner.roles, key).map_err(mapped)
        }
    }
}

#[derive(Deserialize)]
pub struct BatchBody {
    messages: Vec<BatchMessage>,
}

#[derive(Deserialize)]
pub struct BatchMessage {
    topic: String,
    event: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    private: bool,
}

#[allow(clippy::too_many_arguments)]
async fn send(
    rt: &Realtime,
    caller: &Caller,
    ip: Option<std::net::IpAddr>,
    sub_topic: &str,
    event: &str,
    private: bool,
    payload: BroadcastPayload,
) -> Result<(), ApiError> {
    if sub_topic.is_empty() || event.is_empty() {
        return Err(ApiError::Invalid("topic and event are required".into()));
    }
    if private {
        let a = crate::socket::authorize_private(rt, caller, sub_topic)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "realtime: broadcast authorisation failed");
                ApiError::Internal
            })?;
        if !a.write_broadcast {
            return Err(ApiError::Forbidden(format!(
                "You do not have permissions to write to this Channel topic: {sub_topic}"
            )));
        }
    }
    if !rt.inner.tenants.take(&tenant_key(caller, ip)) {
        Metrics::inc(&rt.inner.metrics.rate_limited);
        Metrics::inc(&rt.inner.metrics.dropped);
        return Err(ApiError::TooMany);
    }
    Metrics::inc(&rt.inner.metrics.events_in);
    let key = topic_key(&format!("realtime:{sub_topic}"), private);
    rt.inner
        .hub
        .broadcast(&key, event, &payload, None, &rt.inner.metrics);
    rt.inner.fanout.publish(
        crate::fanout::broadcast_body(sub_topic, private, event, &payload),
        &rt.inner.metrics,
    );
    Ok(())
}

/// The client's address, when the server was started with connect info.
fn client_ip(ext: &http::Extensions) -> Option<std::net::IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Reads a body of at most `limit` bytes, after the caller was authenticated.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge)
}

pub async fn broadcast_batch(
    State(rt): State<Realtime>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    // The caller first: an unauthenticated request's body is never read.
    let caller = caller(&rt, &headers)?;
    let ip = client_ip(&ext);
    // A batch holds at most four messages' worth of the per-message limit.
    let body = read_body(body, rt.inner.args.max_message_bytes.saturating_mul(4)).await?;
    let batch: BatchBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Invalid(format!("invalid body: {e}")))?;
    for m in &batch.messages {
        if m.payload.to_string().len() > rt.inner.args.max_message_bytes {
            return Err(ApiError::TooLarge);
        }
    }
    for m in batch.messages {
        let topic = m.topic.strip_prefix("realtime:").unwrap_or(&m.topic);
        send(
            &rt,
            &caller,
            ip,
            topic,
            &m.event,
            m.private,
            BroadcastPayload::Json(m.payload),
        )
        .await?;
    }
    Ok(StatusCode::ACCEPTED)
}

pub async fn broadcast_one(
    State(rt): State<Realtime>,
    Path((topic, event)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    let caller = caller(&rt, &headers)?;
    let ip = client_ip(&ext);
    let body = read_body(body, rt.inner.args.max_message_bytes).await?;
    let private = q.get("private").is_some_and(|v| v == "true");
    let binary = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let payload = if binary {
        BroadcastPayload::Binary(body)
    } else {
        BroadcastPayload::Json(
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::Invalid(format!("invalid JSON payload: {e}")))?,
        )
    };
    send(&rt, &caller, ip, &topic, &event, private, payload).await?;
    Ok(StatusCode::ACCEPTED)
}
