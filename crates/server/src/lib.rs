//! agencyflow's server: configuration, the HTTP application and the CLI commands.
pub mod app;
pub mod backup;
pub mod config;
pub mod import;
pub mod keys;
pub mod routes;
pub mod run;
pub mod schema_cache;
pub mod surfaces;

pub use app::{router, AppState, Settings};

/// The demo agency (`agencyflow seed --demo`), idempotent SQL.
pub const SEED_DEMO_SQL: &str = include_str!("seed_demo.sql");
