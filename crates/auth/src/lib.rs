//! Supabase Auth (GoTrue) compatible `/auth/v1`, and the project's JWT keys.
pub mod jwt;

pub use jwt::{api_key, JwtError, JwtKeys};
