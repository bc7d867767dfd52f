//! agencyflow-rest: the PostgREST v12 dialect as used by supabase-js, as a
//! pipeline of pure stages: [`parse`] → [`plan`] → [`render`] → (server executes)
//! → [`response`]. Nothing here performs I/O.

pub mod error;
pub mod openapi;
pub mod parse;
pub mod plan;
pub mod render;
pub mod response;
pub mod schema;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testutil;

pub use error::{ErrorKind, RestError};
pub use openapi::openapi_document;
pub use parse::{parse_request, ApiRequest, RequestParts};
pub use plan::{plan, Action, CallShape, Plan};
pub use render::{render, Statement};
pub use response::{error_response, respond, RestResponse, ResultRow};
pub use schema::{SchemaCache, SCHEMA_CACHE_SQL};

/// The REST layer's settings (PostgREST names in comments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestConfig {
    /// `db-schemas`; the first one is the default profile.
    pub schemas: Vec<String>,
    /// `db-max-rows`: caps read and RPC rows, never mutations.
    pub max_rows: Option<i64>,
    /// `db-aggregates-enabled`.
    pub aggregates_enabled: bool,
    /// `db-tx-end = commit-allow-override`: honour `Prefer: tx=rollback`.
    pub tx_end_allow_override: bool,
    /// `db-anon-role`.
    pub anon_role: String,
    /// `db-plan-enabled`: `Accept: application/vnd.pgrst.plan` answers with the EXPLAIN.
    pub plan_enabled: bool,
    /// `db-pre-request` is set: that function may set `response.headers`/`response.status`
    /// on any request, so reads of tables read them too.
    pub pre_request: bool,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            schemas: vec!["public".to_string(), "graphql_public".to_string()],
            max_rows: Some(1000),
            aggregates_enabled: false,
            tx_end_allow_override: false,
            anon_role: "anon".to_string(),
            plan_enabled: false,
            pre_request: false,
        }
    }
}
