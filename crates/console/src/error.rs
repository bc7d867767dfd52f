//! The console API's one error type: `{"message", "hint", "details", "code"}` with a status.
//! Errors of the surfaces it calls keep their status and their words (PostgREST's message
//! and hint, GoTrue's `msg`, Storage's `message`).
use agencyflow_db::DbError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConsoleError {
    pub status: StatusCode,
    pub message: String,
    pub hint: Option<String>,
    pub details: Option<String>,
    pub code: Option<String>,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ConsoleError {
            status,
            message: message.into(),
            hint: None,
            details: None,
            code: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "console error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (see the server log)",
        )
    }
    pub fn with_hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }

    /// A surface's JSON error body, in its own words.
    pub fn from_surface(status: StatusCode, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let message = s("message")
            .or_else(|| s("msg"))
            .or_else(|| s("error_description"))
            .or_else(|| s("error"))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                if text.trim().is_empty() {
                    status.canonical_reason().unwrap_or("error").to_string()
                } else {
                    text.chars().take(500).collect()
                }
            });
        ConsoleError {
            status,
            message,
            hint: s("hint"),
            details: s("details"),
            code: s("code").or_else(|| s("error_code")).or_else(|| {
                v.get("code")
                    .filter(|c| c.is_number())
                    .map(|c| c.to_string())
            }),
        }
    }
}

impl From<DbError> for ConsoleError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Postgres(pg) => ConsoleError {
                status: StatusCode::BAD_REQUEST,
                message: pg.message.clone(),
                hint: pg.hint.clone(),
                details: pg.detail.clone(),
                code: Some(pg.code.clone()),
            },
            DbError::Unavailable(m) => {
                tracing::warn!(error = %m, "console: database unavailable");
                ConsoleError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable",
                )
            }
            other => ConsoleError::internal(other),
        }
    }
}

impl From<agencyflow_db::tokio_postgres::Error> for ConsoleError {
    fn from(e: agencyflow_db::tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({
                "message": self.message,
                "hint": self.hint,
                "details": self.details,
                "code": self.code,
            })),
        )
            .into_response()
    }
}

pub type Result<T, E = ConsoleError> = std::result::Result<T, E>;
