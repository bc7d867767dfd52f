//! Supabase Storage's error shape: `{"statusCode":"404","error":"not_found","message":"Object not found"}`.
use agencyflow_db::DbError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        StorageError {
            status,
            error,
            message: message.into(),
        }
    }
    pub fn object_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Object not found")
    }
    pub fn bucket_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Bucket not found",
            "Bucket not found",
        )
    }
    pub fn invalid_key(key: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidKey",
            format!("Invalid key: {key}"),
        )
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad Request", message)
    }
    pub fn invalid_jwt(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidJWT", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Unauthorized", message)
    }
    /// A request without any credential (no bearer token, no `apikey`) on a route that needs
    /// one: Supabase Storage's answer when its JWT check finds no token.
    pub fn jwt_required() -> Self {
        Self::unauthorized("jwt must be provided")
    }
    /// A parameter Storage's validation refuses (`Invalid Parameter continuation token`).
    pub fn invalid_parameter(parameter: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!("Invalid Parameter {parameter}"),
        )
    }
    /// A bucket `file_size_limit` that is not a number of bytes or `<number><unit>`.
    pub fn invalid_file_size() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B",
        )
    }
    /// Something past its limit, in Storage's words: `The {entity} exceeded the maximum
    /// allowed size`.
    pub fn entity_too_large(entity: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!("The {entity} exceeded the maximum allowed size"),
        )
    }
    /// A Supabase Storage feature this server does not implement (vector buckets, analytics
    /// buckets): the answer Storage gives a project where the feature is off.
    pub fn feature_not_enabled(what: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "FeatureNotEnabled",
            format!("feature not enabled for this tenant: {what} are not available on this server"),
        )
    }
    pub fn duplicate() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Duplicate",
            "The resource already exists",
        )
    }
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            "The object exceeded the maximum allowed size",
        )
    }
    /// A request body past a route's limit (JSON routes, multipart framing).
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            "Request body is too large",
        )
    }
    /// A non-file part of a multipart upload past its cap.
    pub fn field_too_large(name: &str, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!("The multipart field `{name}` exceeds {limit} bytes"),
        )
    }
    pub fn invalid_mime(mime: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_mime_type",
            format!("mime type {mime} is not supported"),
        )
    }
    /// The storage directory's file system is full (ENOSPC) or the quota is spent (EDQUOT):
    /// 507 Insufficient Storage, so a client (and an operator reading the log) can tell a
    /// full disk from a bug. The staged file is removed and no row is written.
    pub fn insufficient_storage() -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            "No space left on the storage device: the object was not stored",
        )
    }
    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!(error = %message, "storage error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal Server Error",
        )
    }
}

impl From<DbError> for StorageError {
    fn from(e: DbError) -> Self {
        match e.sqlstate() {
            // RLS refusal (WITH CHECK / USING on upsert) or a missing privilege.
            Some("42501") => {
                StorageError::unauthorized("new row violates row-level security policy")
            }
            Some("23505") => StorageError::duplicate(),
            Some("23503") => StorageError::bucket_not_found(),
            Some("22P02") | Some("23514") => StorageError::bad_request(e.to_string()),
            _ => match e {
                DbError::Unavailable(m) => {
                    StorageError::new(StatusCode::SERVICE_UNAVAILABLE, "DatabaseUnavailable", m)
                }
                other => StorageError::internal(other),
            },
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull
            || e.kind() == std::io::ErrorKind::QuotaExceeded
        {
            tracing::error!(error = %e, "storage directory full");
            return StorageError::insufficient_storage();
        }
        StorageError::internal(e)
    }
}

impl IntoResponse for StorageError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({
                "statusCode": self.status.as_u16().to_string(),
                "error": self.error,
                "message": self.message,
            })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_and_other_io_errors_500() {
        // ENOSPC (28) and EDQUOT (122 on Linux) as the OS reports them.
        for errno in [28, 122] {
            let e = StorageError::from(std::io::Error::from_raw_os_error(errno));
            assert_eq!(e.status, StatusCode::INSUFFICIENT_STORAGE, "errno {errno}");
            assert!(e.message.contains("No space left"), "{}", e.message);
        }
        let e = StorageError::from(std::io::Error::other("boom"));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
