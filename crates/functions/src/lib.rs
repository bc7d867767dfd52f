//! `/functions/v1`: the AI workflow endpoints (the seed's edge functions, made safe), the
//! model provider layer, the AI cache and run logs, the embeddings pipeline and hybrid search.
//!
//! Each function verifies the caller's JWT, validates its input (400 naming the field), reads
//! and writes **as the caller** (RLS decides), calls a model through [`provider`], validates
//! the structured answer against its schema (502, nothing written, when it does not fit),
//! writes all its results in one transaction, and logs the run. A model's answer is treated
//! like a request body from a stranger: bounded, deduplicated, refused when it does not fit.
//! AI spending is reserved per organization before each call ([`budget`]). See
//! `docs/functions.md`.
use std::sync::Arc;

use agencyflow_db::Db;
use agencyflow_keys::JwtKeys;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};

pub mod ai;
pub mod budget;
pub mod caller;
pub mod config;
pub mod documents;
pub mod embeddings;
pub mod error;
pub mod extract;
mod handlers;
pub mod provider;
pub mod schema;
pub mod search;

pub use config::{ChatProviderKind, EmbedProviderKind, FunctionsArgs};
pub use embeddings::{
    backfill, backfill_with_progress_bar, spawn_embedding_worker, spawn_embedding_worker_until,
    WorkerConfig,
};
pub use error::FnError;
/// Re-exported for implementing [`Provider`] outside this crate.
pub use futures;
pub use provider::{DynProvider, Provider};

/// The functions' shared state; cheap to clone.
#[derive(Clone)]
pub struct FunctionsState {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    keys: Arc<JwtKeys>,
    args: FunctionsArgs,
    chat: Option<DynProvider>,
    embedder: DynProvider,
}

impl FunctionsState {
    /// State with the providers the settings name.
    pub fn new(db: Db, keys: Arc<JwtKeys>, args: FunctionsArgs) -> Self {
        let chat = provider::chat_from_args(&args);
        let embedder = provider::embedder_from_args(&args);
        Self::with_providers(db, keys, args, chat, embedder)
    }

    /// State with explicit providers (tests, benches).
    pub fn with_providers(
        db: Db,
        keys: Arc<JwtKeys>,
        args: FunctionsArgs,
        chat: Option<DynProvider>,
        embedder: DynProvider,
    ) -> Self {
        if let Some(c) = &chat {
            tracing::info!(
                provider = c.name(),
                model = c.model(),
                "functions: chat model"
            );
        } else {
            tracing::info!("functions: no chat model configured (set GEMINI_API_KEY or OPENAI_API_KEY/OPENAI_BASE_URL)");
        }
        tracing::info!(
            provider = embedder.name(),
            model = embedder.model(),
            "functions: embedding model"
        );
        FunctionsState {
            inner: Arc::new(Inner {
                db,
                keys,
                args,
                chat,
                embedder,
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn keys(&self) -> &JwtKeys {
        &self.inner.keys
    }

    pub fn args(&self) -> &FunctionsArgs {
        &self.inner.args
    }

    pub fn chat(&self) -> Option<DynProvider> {
        self.inner.chat.clone()
    }

    pub fn embedder(&self) -> DynProvider {
        self.inner.embedder.clone()
    }

    /// Starts the embedding worker with these settings (what `serve` does unless
    /// `--ai-embed-worker false`).
    pub fn spawn_worker(&self) -> tokio::task::JoinHandle<()> {
        spawn_embedding_worker(
            self.db().clone(),
            self.embedder(),
            WorkerConfig::from(self.args()),
        )
    }
}

/// The function names, as `functions.invoke(name)` calls them.
pub const FUNCTIONS: &[&str] = &[
    "analyze-business",
    "generate-diagnostics",
    "recommend-systems",
    "assess-readiness",
    "generate-roadmap",
    "generate-tasks",
    "crm-intelligence",
    "project-monitor",
    "assistant",
    "intelligence-stream",
    "embed",
    "search",
];

/// The `/functions/v1` routes (mounted by the server under that prefix, behind its API-key gate).
pub fn router(state: FunctionsState) -> Router {
    Router::new()
        .route("/{name}", any(dispatch))
        .with_state(state)
}

async fn dispatch(
    State(st): State<FunctionsState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !FUNCTIONS.contains(&name.as_str()) {
        return FnError::NotFound(format!("function `{name}` not found")).into_response();
    }
    if method != Method::POST {
        return (
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            Json(serde_json::json!({"error": format!("{name} accepts POST"), "code": "method_not_allowed"})),
        )
            .into_response();
    }
    match handlers::call(&st, &name, &headers, &body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}
