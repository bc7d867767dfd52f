//! Supabase Auth (GoTrue) compatible `/auth/v1`, and the project's JWT keys.
pub mod jwt;

use std::sync::Arc;

use agencyflow_db::Db;
use axum::Router;

pub use jwt::{api_key, JwtError, JwtKeys};

/// Auth settings, under GoTrue's environment names.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Access-token lifetime in seconds.
    #[arg(long = "jwt-exp", env = "GOTRUE_JWT_EXP", default_value_t = 3600)]
    pub jwt_exp: i64,
    /// The `aud` claim of issued tokens (and the only one accepted when present).
    #[arg(long = "jwt-aud", env = "GOTRUE_JWT_AUD", default_value = "authenticated")]
    pub jwt_aud: String,
}

/// What the auth handlers share.
#[derive(Clone)]
pub struct AuthState {
    pub db: Db,
    pub keys: Arc<JwtKeys>,
    pub args: Arc<AuthArgs>,
}

/// The `/auth/v1` routes (mounted by the server under that prefix).
pub fn router(state: AuthState) -> Router {
    let _ = state;
    Router::new()
}
