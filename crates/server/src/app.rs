//! The application: shared state, the router of every surface, and the middleware stack
//! (request ids, tracing, CORS as Supabase has it, body limit).
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agencyflow_auth::JwtKeys;
use agencyflow_db::Db;
use axum::http::{HeaderName, Method};
use axum::routing::{any, get};
use axum::Router;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::{RestRuntime, ServeArgs};
use crate::routes;
use crate::schema_cache::SharedSchemaCache;
use crate::surfaces::{self, Surfaces};

/// Everything the handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// The auth surface's own login (`supabase_auth_admin`): the API login is not a member
    /// of the auth owner, so no request can switch to it.
    pub auth_db: Db,
    pub keys: Arc<JwtKeys>,
    pub settings: Arc<Settings>,
    pub schema_cache: SharedSchemaCache,
    /// `/graphql/v1`'s schema per role, reflected from `schema_cache`.
    pub graphql: Arc<agencyflow_graphql::SchemaStore>,
    /// What `/rest/v1` runs with now (settings, with the database's `pgrst.*` over them).
    rest: Arc<RwLock<Arc<RestRuntime>>>,
    /// Which surfaces the database can serve.
    pub surfaces: Surfaces,
    pub metrics: Arc<routes::metrics::Metrics>,
    /// Requests in flight and the drain on shutdown.
    pub lifecycle: Arc<routes::lifecycle::Lifecycle>,
    /// `/realtime/v1` (set by `run::build_state_with`, which knows the connection string).
    pub realtime: Option<agencyflow_realtime::Realtime>,
    /// The last API requests, for the console's Logs page.
    pub requests: Arc<agencyflow_console::RequestLog>,
    /// The console's "take a backup now" (set by `serve`, which knows the schema owner).
    pub backups: Option<Arc<dyn agencyflow_console::BackupTaker>>,
}

/// The server's resolved configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Flags and environment, as given (the database's `pgrst.*` are applied over them in
    /// [`AppState::rest`], again on every reload).
    pub serve: ServeArgs,
    /// The REST runtime at start.
    pub rest: RestRuntime,
    pub anon_key: String,
    pub service_role_key: String,
}

impl AppState {
    pub fn new(db: Db, keys: JwtKeys, settings: Settings) -> Self {
        AppState {
            auth_db: db.clone(),
            db,
            keys: Arc::new(keys),
            rest: Arc::new(RwLock::new(Arc::new(settings.rest.clone()))),
            settings: Arc::new(settings),
            schema_cache: SharedSchemaCache::default(),
            graphql: Arc::default(),
            surfaces: Surfaces::default(),
            metrics: Arc::default(),
            lifecycle: Arc::default(),
            realtime: None,
            requests: Arc::default(),
            backups: None,
        }
    }

    /// The REST runtime of this moment (a snapshot: a reload swaps it whole).
    pub fn rest(&self) -> Arc<RestRuntime> {
        self.rest.read().expect("rest runtime lock").clone()
    }

    pub(crate) fn set_rest(&self, rt: RestRuntime) {
        *self.rest.write().expect("rest runtime lock") = Arc::new(rt);
    }
}

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers browsers may read, as Supabase's gateway exposes them (and the TUS headers a
/// browser's tus-js-client or Uppy reads on `/storage/v1/upload/resumable`).
const EXPOSED: [&str; 18] = [
    "content-range",
    "content-location",
    "location",
    "preference-applied",
    "content-profile",
    "x-total-count",
    "link",
    "x-supabase-api-version",
    "x-request-id",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tus-complete",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "upload-metadata",
];

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
            Method::HEAD,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(EXPOSED.map(HeaderName::from_static))
        .max_age(Duration::from_secs(86400))
}

/// The key-less metrics listener (`--metrics-addr`): `/metrics` and nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::metrics::metrics_open))
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.serve.body_limit;
    // A surface whose tables the database lacks answers 503 (`surfaces`); auth's API
    // version layer goes around its gate so the 503 has the shape the client asked for.
    let auth = agencyflow_auth::router(agencyflow_auth::AuthState::new(
        state.auth_db.clone(),
        state.keys.clone(),
        Arc::new(state.settings.serve.auth.clone()),
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        surfaces::auth_gate,
    ))
    .layer(axum::middleware::from_fn(
        agencyflow_auth::error::api_version_layer,
    ));
    let rest = Router::new()
        .route("/", any(routes::rest::handle))
        .route("/{*path}", any(routes::rest::handle))
        .with_state(state.clone());
    let functions_state = agencyflow_functions::FunctionsState::new(
        state.db.clone(),
        state.keys.clone(),
        state.settings.serve.functions.clone(),
    );
    let functions = agencyflow_functions::router(functions_state.clone()).layer(
        axum::middleware::from_fn_with_state(state.clone(), surfaces::functions_gate),
    );
    let storage = agencyflow_storage::StorageState::from_args(
        state.db.clone(),
        state.keys.clone(),
        &state.settings.serve.storage,
        crate::config::default_data_dir,
    )
    .expect("storage settings are checked when the state is built");
    // Uploads (storage, the `documents` function) stream under the storage limits, not the
    // JSON body limit: merged after that layer. Outside the key gate, a body a handler (or the
    // gate) refused unread is drained within the route's limit, so the client reads its 4xx.
    let storage = Router::new()
        .nest(
            "/functions/v1",
            agencyflow_functions::documents::router(functions_state, storage.clone())
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    surfaces::storage_gate,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    surfaces::functions_gate,
                )),
        )
        .nest(
            "/storage/v1",
            agencyflow_storage::router(storage.clone()).layer(
                axum::middleware::from_fn_with_state(state.clone(), surfaces::storage_gate),
            ),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::gateway::require_apikey,
        ))
        .layer(axum::middleware::from_fn_with_state(
            storage,
            agencyflow_storage::drain_unread_bodies,
        ));
    let mut gated = Router::new();
    if let Some(rt) = &state.realtime {
        gated = gated.nest("/realtime/v1", agencyflow_realtime::router(rt.clone()));
    }
    let gated = gated
        .nest("/auth/v1", auth)
        .nest("/functions/v1", functions)
        .nest("/rest/v1", rest)
        .route(
            "/graphql/v1",
            any(routes::graphql::handle).with_state(state.clone()),
        )
        .route(
            "/graphql/v1/graphiql/{file}",
            get(routes::graphql::graphiql_asset),
        )
        // `GET /rest/v1/` (the OpenAPI document): nest's "/" only matches `/rest/v1`.
        .route(
            "/rest/v1/",
            any(routes::rest::handle).with_state(state.clone()),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::gateway::require_apikey,
        ));
    let health = Router::new()
        .route("/health", get(routes::health::health))
        .with_state(state.clone());
    let api = Router::new()
        .route("/metrics", get(routes::metrics::metrics))
        .with_state(state.clone())
        .merge(health.clone())
        .merge(gated.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::metrics::track,
        ))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .merge(storage.clone());
    // The console's Logs page reads the last requests; without the console nothing is kept.
    let api = if state.settings.serve.console.enabled {
        api.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::metrics::remember,
        ))
    } else {
        api
    };
    let mut router = api
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::lifecycle::gate,
        ))
        .layer(axum::middleware::from_fn(routes::panic::catch_panic))
        .layer(cors());
    if state.settings.serve.console.enabled {
        // The console calls the surfaces in-process, behind their own gates (keys, body
        // limits) but outside the metrics, drain and CORS layers; it is itself outside CORS
        // (a same-origin app) and inside the drain gate and the panic catcher.
        let internal = health
            .merge(gated)
            .layer(RequestBodyLimitLayer::new(body_limit))
            .merge(storage);
        let console = agencyflow_console::router(console_state(&state, internal))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                routes::lifecycle::gate,
            ))
            .layer(axum::middleware::from_fn(routes::panic::catch_panic));
        router = router.merge(console);
    }
    router
        // Outside the merge, so paths no router knows get a JSON 404 too.
        .layer(axum::middleware::from_fn(routes::panic::json_errors))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// What the console gets from the server: both logins' pools, the surfaces to call, the keys
/// (which stay on the server), and facts for its pages.
fn console_state(state: &AppState, internal: Router) -> agencyflow_console::ConsoleState {
    let serve = &state.settings.serve;
    let schema_state = state.clone();
    let f = &serve.functions;
    agencyflow_console::ConsoleState::new(agencyflow_console::ConsoleConfig {
        args: serve.console.clone(),
        db: state.db.clone(),
        admin_db: state.auth_db.clone(),
        api: internal,
        keys: state.keys.clone(),
        anon_key: state.settings.anon_key.clone(),
        service_role_key: state.settings.service_role_key.clone(),
        schemas: Arc::new(move || schema_state.rest().config.schemas.clone()),
        client_ip_header: serve.auth.rate_limit_header.clone(),
        external_url: serve.auth.api_external_url.clone(),
        requests: state.requests.clone(),
        log_tail: agencyflow_console::LogTail::global(),
        cluster: state.db.cluster_health().cloned(),
        backups: state.backups.clone(),
        realtime: state.realtime.clone().map(|rt| {
            Arc::new(move || realtime_counters(&rt)) as agencyflow_console::RealtimeSource
        }),
        settings: serde_json::json!({
            "auth": crate::config::auth_in_force(&serve.auth),
            "ai_providers": ai_providers(f),
        }),
        facts: serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "listen": format!("{}:{}", serve.host, serve.port),
            "db_pool": serve.db_pool,
            "schemas": serve.db_schemas,
            "max_rows": serve.db_max_rows,
            "request_timeout_s": serve.request_timeout,
            "ai_limits": {
                "runs_per_hour": f.ai_rate_limit_per_hour,
                "chat_tokens_per_day": f.ai_chat_token_budget_per_day,
                "embed_chars_per_day": f.ai_embed_budget_chars_per_day,
                "cache_ttl_secs": f.ai_cache_ttl_secs,
                "embed_worker": f.ai_embed_worker,
            },
        }),
    })
}

/// The realtime counters `/metrics` renders, for the console's Realtime page.
fn realtime_counters(rt: &agencyflow_realtime::Realtime) -> agencyflow_console::RealtimeCounters {
    use std::sync::atomic::Ordering::Relaxed;
    let m = rt.metrics();
    agencyflow_console::RealtimeCounters {
        connections: m.connections.load(Relaxed),
        channels: m.channels.load(Relaxed),
        connections_total: m.connections_total.load(Relaxed),
        events_in: m.events_in.load(Relaxed),
        events_out: m.events_out.load(Relaxed),
        changes_captured: m.changes_captured.load(Relaxed),
        changes_delivered: m.changes_delivered.load(Relaxed),
        dropped: m.dropped.load(Relaxed),
        rate_limited: m.rate_limited.load(Relaxed),
        joins_refused: m.joins_refused.load(Relaxed),
        slot_lag_bytes: m.slot_lag_bytes.load(Relaxed),
    }
}

/// The AI providers configured: names, models, endpoints, whether a key is set (never the
/// key).
fn ai_providers(f: &agencyflow_functions::FunctionsArgs) -> serde_json::Value {
    use agencyflow_functions::config::{ChatProviderKind, EmbedProviderKind};
    let key_set = |k: &Option<String>| k.as_deref().is_some_and(|k| !k.is_empty());
    let chat = match f.resolved_chat() {
        ChatProviderKind::Gemini => serde_json::json!({
            "use": "chat", "provider": "gemini", "model": f.chat_model(),
            "endpoint": f.gemini_base_url, "key": key_set(&f.gemini_api_key),
        }),
        ChatProviderKind::Openai => serde_json::json!({
            "use": "chat", "provider": "openai-compatible", "model": f.chat_model(),
            "endpoint": agencyflow_functions::provider::openai_base(f), "key": key_set(&f.openai_api_key),
        }),
        _ => serde_json::json!({
            "use": "chat", "provider": "none", "model": null, "endpoint": null, "key": false,
            "note": "no chat model: set GEMINI_API_KEY or OPENAI_API_KEY (or OPENAI_BASE_URL)",
        }),
    };
    let embed = match f.resolved_embed() {
        EmbedProviderKind::Gemini => serde_json::json!({
            "use": "embeddings", "provider": "gemini", "model": f.embed_model(),
            "endpoint": f.gemini_base_url, "key": key_set(&f.gemini_api_key),
        }),
        EmbedProviderKind::Openai => serde_json::json!({
            "use": "embeddings", "provider": "openai-compatible", "model": f.embed_model(),
            "endpoint": agencyflow_functions::provider::openai_base(f), "key": key_set(&f.openai_api_key),
        }),
        EmbedProviderKind::Local => serde_json::json!({
            "use": "embeddings", "provider": "local", "model": f.embed_model(),
            "endpoint": f.local_model_dir().map(|d| d.display().to_string()), "key": false,
        }),
        _ => serde_json::json!({
            "use": "embeddings", "provider": "hash", "model": f.embed_model(),
            "endpoint": null, "key": false,
            "note": "lexical feature hashing (offline): not semantic",
        }),
    };
    serde_json::json!([chat, embed])
}
