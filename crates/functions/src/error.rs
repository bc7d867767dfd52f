//! The functions' one error type. Every error is a JSON body (supabase-js apps read it with
//! `error.context.json()`): `{"error": message, "code": machine_name, ...}`; internals are
//! logged, never shown.
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::provider::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum FnError {
    /// No usable user JWT (missing, invalid, expired, or not role `authenticated`).
    #[error("Invalid JWT")]
    InvalidJwt,
    /// The request body or a field of it is wrong.
    #[error("{message}")]
    BadInput { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("rate limit reached: {limit} AI runs per hour for this organization")]
    RateLimited { limit: i64, retry_after_secs: u64 },
    /// The organization's AI budget for the period (chat tokens, embedded characters) is
    /// spent, counting the calls in flight; `setting` names the limit.
    #[error(
        "AI budget reached: this organization may use {limit} {unit} per {period} ({setting})"
    )]
    BudgetExceeded {
        setting: &'static str,
        unit: &'static str,
        period: &'static str,
        limit: i64,
        retry_after_secs: u64,
    },
    /// No chat model is configured; names the setting to add.
    #[error("no chat model is configured: set {0}")]
    NoChatProvider(&'static str),
    /// The model answered something that does not fit the function's schema.
    #[error("the model returned an invalid answer: {0}")]
    BadModelOutput(String),
    #[error("the model provider failed: {0}")]
    Provider(ProviderError),
    /// A file declared as a readable format (text, Markdown, PDF) that cannot be read.
    #[error("the document cannot be read: {0}")]
    Unreadable(String),
    /// Storage refused the upload (size, type, the bucket's policies); its status is kept.
    #[error("{message}")]
    Upload {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    #[error("database unavailable")]
    DbUnavailable,
    /// The database lacks the tables the functions need (a database agencyflow did not
    /// create); the message says what is missing and how to add it.
    #[error("{0}")]
    SchemaMissing(String),
    #[error("internal error")]
    Internal(String),
}

impl FnError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        FnError::BadInput {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            FnError::InvalidJwt => StatusCode::UNAUTHORIZED,
            FnError::BadInput { .. } => StatusCode::BAD_REQUEST,
            FnError::NotFound(_) => StatusCode::NOT_FOUND,
            FnError::Forbidden(_) => StatusCode::FORBIDDEN,
            FnError::Conflict(_) => StatusCode::CONFLICT,
            FnError::RateLimited { .. } | FnError::BudgetExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            FnError::NoChatProvider(_) | FnError::DbUnavailable | FnError::SchemaMissing(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            FnError::BadModelOutput(_) => StatusCode::BAD_GATEWAY,
            FnError::Provider(ProviderError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            FnError::Provider(_) => StatusCode::BAD_GATEWAY,
            FnError::Unreadable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            FnError::Upload { status, .. } => *status,
            FnError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            FnError::InvalidJwt => "invalid_jwt",
            FnError::BadInput { .. } => "invalid_input",
            FnError::NotFound(_) => "not_found",
            FnError::Forbidden(_) => "forbidden",
            FnError::Conflict(_) => "conflict",
            FnError::RateLimited { .. } => "rate_limited",
            FnError::BudgetExceeded { .. } => "ai_budget_exceeded",
            FnError::NoChatProvider(_) => "ai_not_configured",
            FnError::BadModelOutput(_) => "invalid_model_output",
            FnError::Provider(ProviderError::Timeout) => "provider_timeout",
            FnError::Provider(_) => "provider_error",
            FnError::DbUnavailable => "database_unavailable",
            FnError::SchemaMissing(_) => "schema_missing",
            FnError::Unreadable(_) => "unreadable_document",
            FnError::Upload { code, .. } => code,
            FnError::Internal(_) => "internal_error",
        }
    }

    pub fn body(&self) -> Value {
        let mut body = json!({ "error": self.to_string(), "code": self.code() });
        match self {
            // The self-hosted functions router's shape, kept alongside ours.
            FnError::InvalidJwt => body["msg"] = json!("Invalid JWT"),
            FnError::BadInput { field, .. } => body["field"] = json!(field),
            FnError::NoChatProvider(setting) => body["setting"] = json!(setting),
            FnError::RateLimited {
                retry_after_secs, ..
            } => body["retry_after"] = json!(retry_after_secs),
            FnError::BudgetExceeded {
                setting,
                retry_after_secs,
                ..
            } => {
                body["retry_after"] = json!(retry_after_secs);
                body["setting"] = json!(setting);
            }
            _ => {}
        }
        body
    }
}

/// The error of a write that stores a model's answer: what the database refuses about the
/// data itself (a value it cannot hold, a check, a row affected twice) is the model's fault,
/// 502 `invalid_model_output` (the transaction is rolled back: nothing is written), not a 400
/// about the caller's body nor a 500. Other errors map as usual.
pub(crate) fn model_write(e: agencyflow_db::DbError) -> FnError {
    if let agencyflow_db::DbError::Postgres(pg) = &e {
        let code = pg.code.as_str();
        if code == "21000" || code == "23502" || code == "23514" || code.starts_with("22") {
            tracing::warn!(error = %e, "the model's answer could not be stored");
            return FnError::BadModelOutput(format!(
                "the answer cannot be stored ({})",
                pg.message
            ));
        }
    }
    FnError::from(e)
}

impl From<agencyflow_db::DbError> for FnError {
    fn from(e: agencyflow_db::DbError) -> Self {
        use agencyflow_db::DbError;
        match &e {
            DbError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                FnError::DbUnavailable
            }
            DbError::Postgres(pg) => match pg.code.as_str() {
                // RLS refused the write (or a privilege is missing).
                "42501" => FnError::Forbidden(
                    "not allowed: your role in this organization cannot do this".into(),
                ),
                "23505" => FnError::Conflict(pg.message.clone()),
                "23503" | "23514" | "22P02" | "22023" | "23502" => FnError::BadInput {
                    field: "body".into(),
                    message: pg.message.clone(),
                },
                "P0002" => FnError::NotFound(pg.message.clone()),
                "57014" => FnError::DbUnavailable,
                _ => {
                    tracing::error!(error = %e, "database error");
                    FnError::Internal(e.to_string())
                }
            },
            DbError::Other(_) => {
                tracing::error!(error = %e, "database error");
                FnError::Internal(e.to_string())
            }
        }
    }
}

impl From<ProviderError> for FnError {
    fn from(e: ProviderError) -> Self {
        FnError::Provider(e)
    }
}

impl IntoResponse for FnError {
    fn into_response(self) -> Response {
        if let FnError::Internal(detail) = &self {
            tracing::error!(detail = %detail, "function failed");
        }
        let mut resp = (self.status(), Json(self.body())).into_response();
        if let FnError::RateLimited {
            retry_after_secs, ..
        }
        | FnError::BudgetExceeded {
            retry_after_secs, ..
        } = self
        {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        resp
    }
}
