//! `/health`: 200 when PostgreSQL answers, 503 otherwise, JSON either way. With the
//! embedded cluster it says what the supervisor is doing ("restarting", or "failed" with
//! PostgreSQL's reason); while shutting down it answers "draining".
use agencyflow_db::DbState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::app::AppState;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn unavailable(body: Value) -> (StatusCode, Json<Value>) {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body))
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.lifecycle.draining() {
        return unavailable(json!({ "status": "draining", "version": VERSION }));
    }
    if let Some(h) = state.db.cluster_health() {
        match h.state() {
            DbState::Up => {}
            DbState::Restarting { cause } => {
                return unavailable(json!({
                    "status": "unavailable", "database": "restarting", "cause": cause,
                    "restarts": h.restarts(), "version": VERSION
                }))
            }
            DbState::Failed { reason } => {
                return unavailable(json!({
                    "status": "unavailable", "database": "failed", "reason": reason,
                    "restarts": h.restarts(), "version": VERSION
                }))
            }
            DbState::Stopped => {
                return unavailable(
                    json!({ "status": "unavailable", "database": "stopped", "version": VERSION }),
                )
            }
        }
    }
    let started = std::time::Instant::now();
    let db = tokio::time::timeout(std::time::Duration::from_secs(3), state.db.ping()).await;
    let ms = started.elapsed().as_millis() as u64;
    match db {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(
                json!({ "status": "ok", "database": "ok", "database_ms": ms, "version": VERSION }),
            ),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database check failed");
            unavailable(
                json!({ "status": "unavailable", "database": "unreachable", "version": VERSION }),
            )
        }
        Err(_) => unavailable(
            json!({ "status": "unavailable", "database": "timeout", "version": VERSION }),
        ),
    }
}
