//! Which surfaces the database can serve. `/rest/v1` serves any database; `/auth/v1`,
//! `/functions/v1` (and its embedding worker) and `/storage/v1` need tables of the agency's
//! migrations. On a database agencyflow did not create (PostgREST's use: `DATABASE_URL`
//! of your own database) they are off: one log line at start, and each answers 503 in its
//! own error shape naming what is missing, instead of failing on every request (or every
//! second, for the worker). Read from the catalog at start and after every schema reload,
//! so applying the migrations later turns them on without a restart.
use std::sync::Arc;

use agencyflow_db::{Db, DbError};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::app::AppState;

/// Relations `/auth/v1` reads and writes.
const AUTH: &[&str] = &[
    "auth.users",
    "auth.identities",
    "auth.sessions",
    "auth.refresh_tokens",
    "auth.one_time_tokens",
    "auth.flow_state",
];

/// Relations `/storage/v1` reads and writes.
const STORAGE: &[&str] = &["storage.buckets", "storage.objects"];

/// Relations the functions and the embedding worker read and write.
const FUNCTIONS: &[&str] = &[
    "public.organizations",
    "public.team_members",
    "public.clients",
    "public.projects",
    "public.documents",
    "public.crm_interactions",
    "public.context_snapshots",
    "public.ai_cache",
    "public.ai_run_logs",
    "private.embedding_jobs",
];

/// What each surface lacks; an empty list means the surface is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    pub auth: Vec<String>,
    pub functions: Vec<String>,
    pub storage: Vec<String>,
}

impl Availability {
    fn from_existing(existing: &[String]) -> Self {
        let missing = |wanted: &[&str]| -> Vec<String> {
            wanted
                .iter()
                .filter(|w| !existing.iter().any(|e| e == *w))
                .map(|w| w.to_string())
                .collect()
        };
        Availability {
            auth: missing(AUTH),
            functions: missing(FUNCTIONS),
            storage: missing(STORAGE),
        }
    }

    /// Reads the catalog.
    pub async fn detect(db: &Db) -> Result<Self, DbError> {
        let all: Vec<&str> = AUTH
            .iter()
            .chain(FUNCTIONS)
            .chain(STORAGE)
            .copied()
            .collect();
        Ok(Self::from_existing(&db.existing_relations(&all).await?))
    }

    /// The surfaces that are off, as they are named in URLs.
    pub fn off(&self) -> Vec<&'static str> {
        let mut off = Vec::new();
        if !self.auth.is_empty() {
            off.push("/auth/v1");
        }
        if !self.functions.is_empty() {
            off.push("/functions/v1 (and the embedding worker)");
        }
        if !self.storage.is_empty() {
            off.push("/storage/v1");
        }
        off
    }

    /// The one line logged when surfaces are off (`None` when all are on).
    pub fn summary(&self) -> Option<String> {
        let off = self.off();
        if off.is_empty() {
            return None;
        }
        let mut missing: Vec<&str> = self
            .auth
            .iter()
            .chain(&self.functions)
            .chain(&self.storage)
            .map(String::as_str)
            .collect();
        missing.dedup();
        Some(format!(
            "this database has no agency schema: serving /rest/v1 only; {} answer 503 (missing {}); `agencyflow migrate` as the schema owner (MIGRATIONS_DATABASE_URL) adds it",
            off.join(", "),
            list(&missing)
        ))
    }
}

/// `a, b, c and 7 more`.
fn list(items: &[&str]) -> String {
    const SHOWN: usize = 3;
    if items.len() <= SHOWN {
        return items.join(", ");
    }
    format!(
        "{} and {} more",
        items[..SHOWN].join(", "),
        items.len() - SHOWN
    )
}

/// What a surface that is off answers with.
fn message(surface: &str, missing: &[String]) -> String {
    let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
    format!(
        "{surface} is not available: this database has no agency schema (missing {}). Apply it with `agencyflow migrate` as the schema owner (MIGRATIONS_DATABASE_URL).",
        list(&missing)
    )
}

/// The current [`Availability`], shared with the handlers and the embedding worker.
/// Every surface is on until the first detection says otherwise.
#[derive(Clone)]
pub struct Surfaces(Arc<watch::Sender<Availability>>);

impl Default for Surfaces {
    fn default() -> Self {
        Surfaces(Arc::new(watch::channel(Availability::default()).0))
    }
}

impl Surfaces {
    pub fn get(&self) -> Availability {
        self.0.borrow().clone()
    }

    /// Replaces the availability; `true` when it changed.
    pub fn set(&self, a: Availability) -> bool {
        self.0.send_if_modified(|cur| {
            if *cur == a {
                return false;
            }
            *cur = a;
            true
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Availability> {
        self.0.subscribe()
    }

    /// Detects again and logs one line when it changed (not at start: `build_state` does).
    pub async fn refresh(&self, db: &Db) {
        match Availability::detect(db).await {
            Ok(a) => {
                let summary = a.summary();
                if self.set(a) {
                    match summary {
                        Some(s) => tracing::warn!("{s}"),
                        None => tracing::info!(
                            "agency schema found: /auth/v1, /functions/v1 and /storage/v1 are on"
                        ),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading which surfaces the database can serve"),
        }
    }
}

/// `/functions/v1`: 503 in the functions' shape when their tables are missing.
pub async fn functions_gate(
    State(state): State<AppState>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let missing = state.surfaces.0.borrow().functions.clone();
    if missing.is_empty() {
        return next.run(req).await;
    }
    agencyflow_functions::FnError::SchemaMissing(message("/functions/v1", &missing)).into_response()
}

/// `/storage/v1`: 503 in Supabase Storage's shape when its tables are missing.
pub async fn storage_gate(
    State(state): State<AppState>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let missing = state.surfaces.0.borrow().storage.clone();
    if missing.is_empty() {
        return next.run(req).await;
    }
    agencyflow_storage::StorageError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "DatabaseSchemaMissing",
        message("/storage/v1", &missing),
    )
    .into_response()
}

/// `/auth/v1`: 503 in GoTrue's shape when its tables are missing; the routes that read no
/// table (health, settings, the public keys) still answer.
pub async fn auth_gate(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let path = req.uri().path();
    let open = matches!(
        path.strip_prefix("/auth/v1").unwrap_or(path),
        "/health" | "/settings" | "/.well-known/jwks.json"
    );
    let missing = state.surfaces.0.borrow().auth.clone();
    if missing.is_empty() || open {
        return next.run(req).await;
    }
    agencyflow_auth::error::AuthError::new(
        agencyflow_auth::error::ErrorCode::ServiceUnavailable,
        message("/auth/v1", &missing),
    )
    .into_response()
}

/// Runs the embedding worker while the functions' tables exist: not at all on a database
/// without them (nothing polls, nothing is logged), started when a migration adds them,
/// stopped if they go.
pub fn spawn_embedding_worker(
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut rx = state.surfaces.subscribe();
    let db = state.db.clone();
    let f = state.settings.serve.functions.clone();
    tokio::spawn(async move {
        let mut stop_rx = stop.clone();
        loop {
            tokio::select! {
                r = rx.wait_for(|a| a.functions.is_empty()) => if r.is_err() { return },
                _ = stop_rx.wait_for(|s| *s) => return,
            }
            let mut worker = agencyflow_functions::spawn_embedding_worker_until(
                db.clone(),
                agencyflow_functions::provider::embedder_from_args(&f),
                (&f).into(),
                stop.clone(),
            );
            tokio::select! {
                // Shutdown: the worker ends after its current job; wait for it.
                _ = &mut worker => return,
                r = rx.wait_for(|a| !a.functions.is_empty()) => {
                    worker.abort();
                    if r.is_err() {
                        return;
                    }
                    tracing::info!("embedding worker stopped: the functions' tables are gone");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_database_turns_the_agency_surfaces_off() {
        let none = Availability::from_existing(&[]);
        assert_eq!(none.off().len(), 3);
        let s = none.summary().unwrap();
        assert!(
            s.contains("/functions/v1") && s.contains("/storage/v1") && s.contains("/auth/v1"),
            "{s}"
        );
        assert!(
            s.contains("auth.users, auth.identities, auth.sessions and 15 more"),
            "{s}"
        );
        let all: Vec<String> = AUTH
            .iter()
            .chain(FUNCTIONS)
            .chain(STORAGE)
            .map(|s| s.to_string())
            .collect();
        let every = Availability::from_existing(&all);
        assert_eq!(every, Availability::default());
        assert_eq!(every.summary(), None);
        // A Supabase database has auth and storage, not the agency's tables.
        let supabase: Vec<String> = AUTH.iter().chain(STORAGE).map(|s| s.to_string()).collect();
        let a = Availability::from_existing(&supabase);
        assert_eq!(a.off(), vec!["/functions/v1 (and the embedding worker)"]);
        assert_eq!(
            message("/storage/v1", &["storage.objects".into()]),
            "/storage/v1 is not available: this database has no agency schema (missing storage.objects). Apply it with `agencyflow migrate` as the schema owner (MIGRATIONS_DATABASE_URL)."
        );
    }
}
