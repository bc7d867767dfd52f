//! The one registry of REST error codes (wire-compat §3).
//!
//! Every PGRST code the crate can emit is declared once in [`ErrorKind`], with its
//! HTTP status, so a code and its status cannot drift apart.

use http::StatusCode;
use serde_json::{json, Value};

macro_rules! error_kinds {
    ($($variant:ident => ($code:literal, $status:literal),)*) => {
        /// PostgREST error codes (v12) with their HTTP statuses.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorKind { $($variant,)* }

        impl ErrorKind {
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant,)*];

            pub fn code(self) -> &'static str {
                match self { $(ErrorKind::$variant => $code,)* }
            }

            pub fn status(self) -> StatusCode {
                let raw: u16 = match self { $(ErrorKind::$variant => $status,)* };
                StatusCode::from_u16(raw).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    };
}

error_kinds! {
    ConnectionError => ("PGRST000", 503),
    ClientError => ("PGRST001", 503),
    SchemaCacheLoading => ("PGRST002", 503),
    PoolTimeout => ("PGRST003", 504),
    ParseError => ("PGRST100", 400),
    RpcMethodNotAllowed => ("PGRST101", 405),
    InvalidBody => ("PGRST102", 400),
    RangeNotSatisfiable => ("PGRST103", 416),
    PutNotAllowed => ("PGRST105", 405),
    SchemaNotExposed => ("PGRST106", 406),
    MediaTypeNotAvailable => ("PGRST107", 406),
    FilterOnMissingEmbed => ("PGRST108", 400),
    LimitWithoutOrder => ("PGRST109", 400),
    TooManyRowsChanged => ("PGRST110", 400),
    InvalidResponseHeaders => ("PGRST111", 500),
    InvalidResponseStatus => ("PGRST112", 500),
    PutPrimaryKeyFilters => ("PGRST114", 400),
    PutPrimaryKeyMismatch => ("PGRST115", 400),
    SingularityError => ("PGRST116", 406),
    UnsupportedMethod => ("PGRST117", 405),
    RelatedOrderNotToOne => ("PGRST118", 400),
    SpreadNotToOne => ("PGRST119", 400),
    InvalidEmbedFilter => ("PGRST120", 400),
    InvalidRaisePayload => ("PGRST121", 500),
    InvalidPreferences => ("PGRST122", 400),
    AggregatesDisabled => ("PGRST123", 400),
    MaxAffectedViolation => ("PGRST124", 400),
    InvalidPath => ("PGRST125", 404),
    NotImplemented => ("PGRST127", 400),
    MaxAffectedNotSetReturning => ("PGRST128", 400),
    NoRelationship => ("PGRST200", 400),
    AmbiguousRelationship => ("PGRST201", 300),
    FunctionNotFound => ("PGRST202", 404),
    AmbiguousFunction => ("PGRST203", 300),
    ColumnNotFound => ("PGRST204", 400),
    NoJwtSecret => ("PGRST300", 500),
    JwtInvalid => ("PGRST301", 401),
    AnonDisabled => ("PGRST302", 401),
}

/// An error answered to the client as `{"code","message","details","hint"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RestError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Option<String>,
    pub hint: Option<String>,
    /// Response headers a `RAISE SQLSTATE 'PGRST'` asked for (boxed: errors stay small).
    pub headers: Option<Box<Vec<(String, String)>>>,
}

impl RestError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RestError {
            status: kind.status(),
            code: kind.code().to_string(),
            message: message.into(),
            details: None,
            hint: None,
            headers: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A PGRST100 query-string parse error, worded as PostgREST does.
    pub fn parse(message: impl Into<String>, details: impl Into<String>) -> Self {
        RestError::new(ErrorKind::ParseError, message).with_details(details)
    }

    /// An error shaped like one PostgreSQL would raise (planner-side checks that
    /// PostgREST leaves to the database, e.g. 42703 unknown column).
    pub fn postgres(sqlstate: &str, message: impl Into<String>) -> Self {
        RestError {
            status: sqlstate_status(sqlstate, false),
            code: sqlstate.to_string(),
            message: message.into(),
            details: None,
            hint: None,
            headers: None,
        }
    }

    /// Maps an error raised by PostgreSQL while executing the statement (§3.3).
    pub fn from_postgres(
        sqlstate: &str,
        message: &str,
        detail: Option<&str>,
        hint: Option<&str>,
        role_is_anon: bool,
    ) -> Self {
        if sqlstate == "PGRST" {
            return Self::from_raise(message, detail);
        }
        let mut status = sqlstate_status(sqlstate, role_is_anon);
        if sqlstate == "21000" && message.contains("requires a WHERE clause") {
            status = StatusCode::BAD_REQUEST;
        }
        RestError {
            status,
            code: sqlstate.to_string(),
            message: message.to_string(),
            details: detail.map(str::to_string),
            hint: hint.map(str::to_string),
            headers: None,
        }
    }

    /// `RAISE SQLSTATE 'PGRST' USING MESSAGE = '{"code","message","details","hint"}',
    /// DETAIL = '{"status": 402, "headers": {"X-Powered-By": "..."}}'`: the function chooses
    /// the response. Unparsable JSON is PGRST121.
    fn from_raise(message: &str, detail: Option<&str>) -> Self {
        let bad = || {
            RestError::new(
                ErrorKind::InvalidRaisePayload,
                "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
            )
            .with_details(format!("Invalid JSON value for MESSAGE: '{message}'"))
        };
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(message) else {
            return bad();
        };
        let Some(detail) = detail else {
            return bad();
        };
        let Ok(Value::Object(d)) = serde_json::from_str::<Value>(detail) else {
            return RestError::new(
                ErrorKind::InvalidRaisePayload,
                "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
            )
            .with_details(format!("Invalid JSON value for DETAIL: '{detail}'"));
        };
        let text = |k: &str| match m.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        let (Some(code), Some(msg)) = (text("code"), text("message")) else {
            return bad();
        };
        let status = d
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok());
        let Some(status) = status else {
            return bad();
        };
        let headers: Vec<(String, String)> = match d.get("headers") {
            Some(Value::Object(h)) => h
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        RestError {
            status,
            code,
            message: msg,
            details: text("details"),
            hint: text("hint"),
            headers: (!headers.is_empty()).then(|| Box::new(headers)),
        }
    }

    pub fn to_json(&self) -> Value {
        // PGRST201 (ambiguous embed) carries its candidate relationships as a JSON array.
        let details = match &self.details {
            Some(d) if self.code == "PGRST201" => {
                serde_json::from_str::<Value>(d).unwrap_or_else(|_| Value::String(d.clone()))
            }
            d => json!(d),
        };
        json!({
            "code": self.code,
            "message": self.message,
            "details": details,
            "hint": self.hint,
        })
    }
}

/// SQLSTATE → HTTP status, wire-compat §3.3. 21000 is 500 here; the
/// pg-safeupdate "requires a WHERE clause" case is special-cased by the caller.
pub fn sqlstate_status(sqlstate: &str, role_is_anon: bool) -> StatusCode {
    let s = sqlstate;
    let code = |n: u16| StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(n) = s.strip_prefix("PT") {
        return n
            .parse::<u16>()
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok())
            .unwrap_or(code(500));
    }
    match s {
        "23505" | "23503" => return code(409),
        "42501" => return code(if role_is_anon { 401 } else { 403 }),
        "P0001" => return code(400),
        "42P01" | "42883" => return code(404),
        "25006" => return code(405),
        "57P01" => return code(503),
        "53400" | "42P17" | "21000" => return code(500),
        _ => {}
    }
    let class = s.get(..2).unwrap_or("");
    match class {
        "08" | "53" => code(503),
        "0L" | "0P" | "28" => code(403),
        // 54: program limit exceeded ("too complex"), 413 as PostgREST answers it.
        "54" => code(413),
        "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "55" | "56" | "57" | "58" | "F0"
        | "HV" | "XX" | "P0" => code(500),
        _ => code(400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_pgrst_sets_status_body_and_headers() {
        let e = RestError::from_postgres(
            "PGRST",
            r#"{"code":"123","message":"Payment Required","details":"Quota exceeded","hint":null}"#,
            Some(r#"{"status":402,"headers":{"X-Powered-By":"Nerd Rage"}}"#),
            None,
            false,
        );
        assert_eq!(e.status.as_u16(), 402);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("123", "Payment Required")
        );
        assert_eq!(e.details.as_deref(), Some("Quota exceeded"));
        assert_eq!(e.hint, None);
        assert_eq!(
            e.headers.as_deref(),
            Some(&vec![("X-Powered-By".to_string(), "Nerd Rage".to_string())])
        );
        for (message, detail) in [
            ("not json", Some(r#"{"status":400}"#)),
            (r#"{"code":"1","message":"m"}"#, None),
            (r#"{"code":"1","message":"m"}"#, Some("nope")),
            (r#"{"code":"1","message":"m"}"#, Some(r#"{"status":"x"}"#)),
            (r#"{"message":"no code"}"#, Some(r#"{"status":400}"#)),
        ] {
            let e = RestError::from_postgres("PGRST", message, detail, None, false);
            assert_eq!(
                (e.code.as_str(), e.status.as_u16()),
                ("PGRST121", 500),
                "{message} {detail:?}"
            );
        }
    }

    #[test]
    fn sqlstate_table() {
        let cases: &[(&str, bool, u16)] = &[
            ("23505", false, 409),
            ("23503", true, 409),
            ("42501", true, 401),
            ("42501", false, 403),
            ("P0001", false, 400),
            ("42P01", false, 404),
            ("42883", false, 404),
            ("25006", false, 405),
            ("08006", false, 503),
            ("53300", false, 503),
            ("53400", false, 500),
            ("57P01", false, 503),
            ("57014", false, 500),
            ("0L000", false, 403),
            ("0P000", false, 403),
            ("28000", false, 403),
            ("PT402", false, 402),
            ("PT418", false, 418),
            ("PTxyz", false, 500),
            ("09000", false, 500),
            ("25001", false, 500),
            ("2D000", false, 500),
            ("38000", false, 500),
            ("39000", false, 500),
            ("3B000", false, 500),
            ("40001", false, 500),
            ("40P01", false, 500),
            ("42P17", false, 500),
            ("54000", false, 413),
            ("54001", false, 413),
            ("55P03", false, 500),
            ("58030", false, 500),
            ("F0000", false, 500),
            ("HV000", false, 500),
            ("XX000", false, 500),
            ("P0002", false, 500),
            ("22P02", false, 400),
            ("23502", false, 400),
            ("23514", false, 400),
            ("42703", false, 400),
            ("42P10", false, 400),
            ("22023", false, 400),
            ("21000", false, 500),
            ("", false, 400),
        ];
        for (state, anon, want) in cases {
            assert_eq!(sqlstate_status(state, *anon).as_u16(), *want, "{state}");
        }
    }

    #[test]
    fn safeupdate_is_400() {
        let e =
            RestError::from_postgres("21000", "DELETE requires a WHERE clause", None, None, false);
        assert_eq!(e.status.as_u16(), 400);
        let e = RestError::from_postgres(
            "21000",
            "more than one row returned by a subquery",
            None,
            None,
            false,
        );
        assert_eq!(e.status.as_u16(), 500);
    }

    #[test]
    fn json_shape_has_nullable_details_and_hint() {
        let e = RestError::new(ErrorKind::ParseError, "bad");
        assert_eq!(
            e.to_json(),
            json!({"code":"PGRST100","message":"bad","details":null,"hint":null})
        );
        let e = RestError::from_postgres(
            "23505",
            "dup",
            Some("Key (id)=(1) already exists."),
            Some("h"),
            false,
        );
        assert_eq!(e.to_json()["details"], "Key (id)=(1) already exists.");
        assert_eq!(e.to_json()["hint"], "h");
    }

    #[test]
    fn registry_codes_are_unique_and_statuses_valid() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(seen.insert(k.code()), "duplicate {}", k.code());
            assert!(k.code().starts_with("PGRST"));
        }
        assert_eq!(ErrorKind::AmbiguousRelationship.status().as_u16(), 300);
        assert_eq!(ErrorKind::SingularityError.status().as_u16(), 406);
    }
}
