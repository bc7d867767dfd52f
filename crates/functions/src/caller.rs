//! Who is calling, and what they sent: the user JWT (verified, role `authenticated`) and the
//! JSON body with typed, named-field accessors (a bad field is a 400 naming it).
use agencyflow_db::TxSettings;
use agencyflow_keys::JwtKeys;
use axum::http::HeaderMap;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::FnError;

/// A signed-in user, as their verified claims.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    /// The verified claims as JSON text (`request.jwt.claims` of the caller's transactions).
    pub claims: String,
}

impl Caller {
    /// The settings of a transaction as this user: RLS decides what it may read and write.
    pub fn tx(&self) -> TxSettings {
        TxSettings::new("authenticated", self.claims.clone())
    }
}

/// Verifies `Authorization: Bearer <user JWT>` through `agencyflow_keys`, the reading every
/// surface shares. The anon key (what supabase-js sends when signed out), a service key, or
/// any token without a user is refused: every function acts in a user's organization and
/// spends its AI budget.
pub fn authenticate(headers: &HeaderMap, keys: &JwtKeys) -> Result<Caller, FnError> {
    let token = agencyflow_keys::bearer(headers)
        .map_err(|_| FnError::InvalidJwt)?
        .filter(|t| !t.starts_with("sb_"))
        .ok_or(FnError::InvalidJwt)?;
    let caller =
        agencyflow_keys::caller_from_token(keys, &agencyflow_keys::ApiRoles::default(), token)
            .map_err(|_| FnError::InvalidJwt)?;
    if caller.role != "authenticated" {
        return Err(FnError::InvalidJwt);
    }
    let user_id = caller
        .user_id()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or(FnError::InvalidJwt)?;
    Ok(Caller {
        user_id,
        claims: caller.claims.json.clone(),
    })
}

/// Whether any string (or key) of `v` holds a NUL character.
pub(crate) fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// A request body: a JSON object.
#[derive(Debug, Clone)]
pub struct Input(pub Map<String, Value>);

impl Input {
    pub fn parse(body: &[u8]) -> Result<Input, FnError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Input(Map::new()));
        }
        match serde_json::from_slice::<Value>(body) {
            // PostgreSQL can store no NUL character (in text or jsonb): refused here, not
            // failed on at the write.
            Ok(v) if has_nul(&v) => Err(FnError::field(
                "body",
                "the request body must not contain NUL characters (\\u0000)",
            )),
            Ok(Value::Object(m)) => Ok(Input(m)),
            Ok(_) => Err(FnError::field(
                "body",
                "the request body must be a JSON object",
            )),
            Err(e) => Err(FnError::field(
                "body",
                format!("the request body is not valid JSON: {e}"),
            )),
        }
    }

    fn present(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    pub fn uuid(&self, field: &str) -> Result<Uuid, FnError> {
        self.opt_uuid(field)?
            .ok_or_else(|| FnError::field(field, format!("{field} is required (a UUID)")))
    }

    pub fn opt_uuid(&self, field: &str) -> Result<Option<Uuid>, FnError> {
        match self.present(field) {
            None => Ok(None),
            Some(Value::String(s)) => Uuid::parse_str(s)
                .map(Some)
                .map_err(|_| FnError::field(field, format!("{field} must be a UUID"))),
            Some(_) => Err(FnError::field(
                field,
                format!("{field} must be a UUID string"),
            )),
        }
    }

    /// A required, non-blank string of at most `max` characters.
    pub fn text(&self, field: &str, max: usize) -> Result<String, FnError> {
        self.opt_text(field, max)?.ok_or_else(|| {
            FnError::field(field, format!("{field} is required (a non-empty string)"))
        })
    }

    pub fn opt_text(&self, field: &str, max: usize) -> Result<Option<String>, FnError> {
        match self.present(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(FnError::field(field, format!("{field} must not be empty")))
            }
            Some(Value::String(s)) if s.chars().count() > max => Err(FnError::field(
                field,
                format!("{field} is longer than {max} characters"),
            )),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(FnError::field(field, format!("{field} must be a string"))),
        }
    }

    /// A required JSON object with at least one key.
    pub fn object(&self, field: &str) -> Result<Value, FnError> {
        match self.present(field) {
            Some(Value::Object(m)) if !m.is_empty() => Ok(Value::Object(m.clone())),
            Some(Value::Object(_)) => {
                Err(FnError::field(field, format!("{field} must not be empty")))
            }
            Some(_) => Err(FnError::field(
                field,
                format!("{field} must be a JSON object"),
            )),
            None => Err(FnError::field(
                field,
                format!("{field} is required (a JSON object)"),
            )),
        }
    }

    pub fn opt_object(&self, field: &str) -> Result<Option<Value>, FnError> {
        match self.present(field) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
            Some(_) => Err(FnError::field(
                field,
                format!("{field} must be a JSON object"),
            )),
        }
    }

    pub fn int(&self, field: &str, min: i64, max: i64, default: i64) -> Result<i64, FnError> {
        match self.present(field) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    FnError::field(
                        field,
                        format!("{field} must be an integer from {min} to {max}"),
                    )
                }),
        }
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.present(field)
    }
}
