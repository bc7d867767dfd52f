//! `/health`: 200 when PostgreSQL answers, 503 otherwise, JSON either way.
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::app::AppState;

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let started = std::time::Instant::now();
    let db = tokio::time::timeout(std::time::Duration::from_secs(3), state.db.ping()).await;
    let ms = started.elapsed().as_millis() as u64;
    match db {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(
                json!({ "status": "ok", "database": "ok", "database_ms": ms, "version": env!("CARGO_PKG_VERSION") }),
            ),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({ "status": "unavailable", "database": "unreachable", "version": env!("CARGO_PKG_VERSION") }),
                ),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "unavailable", "database": "timeout", "version": env!("CARGO_PKG_VERSION") }),
            ),
        ),
    }
}
