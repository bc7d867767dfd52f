//! The one error type of the GraphQL layer: a message in pg_graphql's words, with the
//! location in the document when known. The server answers `{"data": null, "errors": [...]}`.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GqlError {
    pub message: String,
    /// (line, column), 1-based.
    pub location: Option<(usize, usize)>,
}

impl GqlError {
    pub fn new(message: impl Into<String>) -> Self {
        GqlError {
            message: message.into(),
            location: None,
        }
    }

    pub fn at(mut self, line: usize, column: usize) -> Self {
        if self.location.is_none() {
            self.location = Some((line, column));
        }
        self
    }

    /// `{"message", "locations"?}`.
    pub fn to_json(&self) -> Value {
        match self.location {
            Some((line, column)) => {
                json!({"message": self.message, "locations": [{"line": line, "column": column}]})
            }
            None => json!({"message": self.message}),
        }
    }
}

/// The response body for errors: `{"data": null, "errors": [...]}`.
pub fn error_body(errors: &[GqlError]) -> String {
    json!({"data": null, "errors": errors.iter().map(GqlError::to_json).collect::<Vec<_>>()})
        .to_string()
}
