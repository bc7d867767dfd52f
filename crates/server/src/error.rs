//! The server's one error type for its own endpoints, mapped to HTTP in one place.
//! Surfaces with a wire format of their own (REST's PGRST errors, Auth's error codes) render
//! their errors themselves; everything internal is logged and never shown to the caller.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("database unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl From<agencyflow_db::DbError> for ApiError {
    fn from(e: agencyflow_db::DbError) -> Self {
        match e {
            agencyflow_db::DbError::Unavailable(m) => ApiError::Unavailable(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        match &self {
            ApiError::Unavailable(m) | ApiError::Internal(m) => {
                tracing::error!(error = %m, "request failed")
            }
            _ => {}
        }
        (
            status,
            Json(json!({ "code": code, "message": self.to_string() })),
        )
            .into_response()
    }
}
