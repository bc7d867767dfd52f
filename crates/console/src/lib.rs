//! The operator console, served at `/console/` (docs/console.md).
//!
//! The browser side is hand-written HTML, CSS and one ES module (`assets/`), embedded in the
//! binary with `include_str!`: no bundler, no CDN, nothing fetched at run time. The server side
//! is a JSON API under `/console/api/` that acts for a signed-in operator:
//! - operators are `console.admins` (argon2id hashes), not app users; a session is a random
//!   cookie (httpOnly, SameSite=Strict, Secure behind TLS) whose SHA-256 is a
//!   `console.sessions` row, idle-expired; every state-changing call needs the session's CSRF
//!   token; sign-in is rate-limited; every action is a `console.audit_log` row;
//! - the console's own tables are read by the auth login (`supabase_auth_admin`), which no API
//!   request can become;
//! - data goes through the API's own surfaces, dispatched in-process ([`Inner::api`]): rows
//!   through `/rest/v1` as `service_role`, `anon` or a chosen user (a token minted for the
//!   call, so RLS decides exactly as for that user), users through `/auth/v1/admin`, files
//!   through `/storage/v1`. The service_role key never leaves the server.
use std::net::SocketAddr;
use std::sync::Arc;

use agencyflow_db::Db;
use agencyflow_keys::JwtKeys;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

mod api;
pub mod error;
mod lint;
pub mod logtail;
pub mod ops;
pub mod requests;
pub mod session;
mod sql;
mod tables;
mod users;

pub use error::ConsoleError;
pub use logtail::{LogTail, TailLayer};
pub use ops::{BackupDone, BackupFuture, BackupTaker, RealtimeCounters, RealtimeSource};
pub use requests::{RequestLog, RequestRecord};

/// The console's settings (flags and environment of `agencyflow serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// Serve the operator console at /console/ (and redirect / there).
    #[arg(long = "console", env = "AGENCYFLOW_CONSOLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// An operator account from the environment, as Supabase's Studio takes it (the user name
    /// need not be an e-mail address). Signing in with it creates or updates its account.
    #[arg(long, env = "DASHBOARD_USERNAME")]
    pub dashboard_username: Option<String>,
    /// The password of DASHBOARD_USERNAME.
    #[arg(long, env = "DASHBOARD_PASSWORD", hide_env_values = true)]
    pub dashboard_password: Option<String>,
    /// A console session ends after this many minutes without a request.
    #[arg(long, env = "AGENCYFLOW_CONSOLE_IDLE_MINUTES", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10080))]
    pub console_idle_minutes: u32,
    /// When the session cookie is `Secure`: `auto` (when the request came over TLS, i.e.
    /// `X-Forwarded-Proto: https` or an https API_EXTERNAL_URL), `always`, `never`.
    #[arg(long, env = "AGENCYFLOW_CONSOLE_SECURE_COOKIE", default_value = "auto")]
    pub console_secure_cookie: SecureCookie,
    /// Sign-in attempts allowed per client IP (and per account) per 5 minutes.
    #[arg(long, env = "AGENCYFLOW_CONSOLE_SIGN_IN_LIMIT", default_value_t = 10)]
    pub console_sign_in_limit: u32,
    /// Development only: serve the page's files from this folder (e.g.
    /// crates/console/assets) instead of the copies embedded in the binary.
    #[arg(long, env = "AGENCYFLOW_CONSOLE_ASSETS_DIR", hide = true)]
    pub console_assets_dir: Option<std::path::PathBuf>,
    /// Statement timeout of the SQL page, in seconds.
    #[arg(long, env = "AGENCYFLOW_CONSOLE_SQL_TIMEOUT", default_value_t = 15)]
    pub console_sql_timeout: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecureCookie {
    Auto,
    Always,
    Never,
}

/// What the server hands the console.
pub struct ConsoleConfig {
    pub args: ConsoleArgs,
    /// The API pool (the `authenticator` login): catalog reads and the SQL page.
    pub db: Db,
    /// The auth surface's login (`supabase_auth_admin`): the console schema, `auth.users`.
    pub admin_db: Db,
    /// The API surfaces, dispatched in-process (no network, no key in the browser).
    pub api: Router,
    pub keys: Arc<JwtKeys>,
    pub anon_key: String,
    pub service_role_key: String,
    /// The exposed schemas of this moment (they change on a configuration reload).
    pub schemas: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    /// GOTRUE_RATE_LIMIT_HEADER: the header holding the client's IP behind a proxy.
    pub client_ip_header: Option<String>,
    /// API_EXTERNAL_URL.
    pub external_url: Option<String>,
    /// Recent API requests (filled by the server's metrics layer).
    pub requests: Arc<RequestLog>,
    /// Server facts shown on the Logs & health page (version, data directory...).
    pub facts: serde_json::Value,
    /// The server's own last log events (see [`logtail`]).
    pub log_tail: Arc<LogTail>,
    /// The embedded cluster's supervisor (None with DATABASE_URL).
    pub cluster: Option<agencyflow_db::ClusterHealth>,
    /// "Take a backup now" (None when the console cannot: no schema owner connection).
    pub backups: Option<Arc<dyn BackupTaker>>,
    /// The realtime counters (None without `/realtime/v1`).
    pub realtime: Option<RealtimeSource>,
    /// What the server runs with, secrets redacted: `auth` (the auth settings in force) and
    /// `ai_providers` (names, models, endpoints; never keys).
    pub settings: serde_json::Value,
}

/// The console's shared state; cheap to clone.
#[derive(Clone)]
pub struct ConsoleState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub args: ConsoleArgs,
    pub db: Db,
    pub admin_db: Db,
    pub api: Router,
    pub keys: Arc<JwtKeys>,
    pub anon_key: String,
    pub service_role_key: String,
    pub schemas: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    pub client_ip_header: Option<String>,
    pub external_url: Option<String>,
    pub requests: Arc<RequestLog>,
    pub facts: serde_json::Value,
    pub limiter: session::SignInLimiter,
    pub log_tail: Arc<LogTail>,
    pub cluster: Option<agencyflow_db::ClusterHealth>,
    pub backups: Option<Arc<dyn BackupTaker>>,
    pub backup_jobs: ops::BackupJobs,
    pub realtime: Option<RealtimeSource>,
    pub realtime_samples: ops::RealtimeSamples,
    pub settings: serde_json::Value,
}

impl ConsoleState {
    pub fn new(c: ConsoleConfig) -> Self {
        let limiter = session::SignInLimiter::new(c.args.console_sign_in_limit);
        let inner = Arc::new(Inner {
            args: c.args,
            db: c.db,
            admin_db: c.admin_db,
            api: c.api,
            keys: c.keys,
            anon_key: c.anon_key,
            service_role_key: c.service_role_key,
            schemas: c.schemas,
            client_ip_header: c.client_ip_header,
            external_url: c.external_url,
            requests: c.requests,
            facts: c.facts,
            limiter,
            log_tail: c.log_tail,
            cluster: c.cluster,
            backups: c.backups,
            backup_jobs: Default::default(),
            realtime: c.realtime,
            realtime_samples: Default::default(),
            settings: c.settings,
        });
        if inner.realtime.is_some() {
            ops::spawn_sampler(Arc::downgrade(&inner));
        }
        ConsoleState(inner)
    }
}

/// The security headers of every console answer: a CSP without inline script or any other
/// origin, never framed, no sniffing, no referrer, nothing cached.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn security_headers(req: Request<Body>, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    // A stored file served to the console keeps its own (sandboxing) policy.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/console.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/ui.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/pages.js"),
    ),
];

/// The embedded file, or (development) its copy in `--console-assets-dir`.
fn asset_text(state: &ConsoleState, name: &str, embedded: &'static str) -> String {
    state
        .0
        .args
        .console_assets_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join(name)).ok())
        .unwrap_or_else(|| embedded.to_string())
}

async fn index(axum::extract::State(state): axum::extract::State<ConsoleState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        asset_text(&state, "index.html", INDEX_HTML),
    )
        .into_response()
}

async fn asset(
    axum::extract::State(state): axum::extract::State<ConsoleState>,
    Path(file): Path<String>,
) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((name, ctype, body)) => (
            [
                (header::CONTENT_TYPE, *ctype),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            asset_text(&state, name, body),
        )
            .into_response(),
        None => ConsoleError::not_found("no such console asset").into_response(),
    }
}

/// The console's routes, to be merged at the root of the server's router (`/console/...`,
/// and `/` redirecting to `/console/`).
pub fn router(state: ConsoleState) -> Router {
    let api = Router::new()
        .route("/sign-in", post(session::sign_in))
        .route("/setup", post(session::setup))
        .route("/session", get(session::current))
        .route("/sign-out", post(session::sign_out))
        .route("/audit", get(api::audit))
        .route("/tables", get(tables::list))
        .route("/tables/{schema}/{name}", get(tables::meta))
        .route(
            "/tables/{schema}/{name}/rows",
            get(tables::rows)
                .post(tables::insert)
                .patch(tables::update)
                .delete(tables::delete),
        )
        .route("/tables/{schema}/{name}/csv", get(tables::csv))
        .route("/sql", post(sql::run))
        .route("/snippets", get(sql::list_snippets).post(sql::save_snippet))
        .route("/snippets/{id}", axum::routing::delete(sql::delete_snippet))
        .route("/users", get(users::list).post(users::create))
        .route("/users/invite", post(users::invite))
        .route("/users/{id}", get(users::get).delete(users::delete))
        .route("/users/{id}/{action}", post(users::action))
        .route("/auth-settings", get(users::settings))
        .route(
            "/storage/buckets",
            get(api::buckets).post(api::create_bucket),
        )
        .route(
            "/storage/buckets/{id}",
            axum::routing::put(api::update_bucket),
        )
        .route("/storage/list", get(api::list_objects))
        .route(
            "/storage/object",
            get(api::download)
                .post(api::upload)
                .delete(api::delete_objects),
        )
        .route("/storage/sign", post(api::sign_object))
        .route("/database", get(api::database))
        .route("/ai", get(api::ai))
        .route("/health", get(api::health))
        .route("/requests", get(api::requests))
        .route("/logs", get(ops::logs))
        .route("/backups", get(ops::backups).post(ops::take_backup))
        .route("/realtime", get(ops::realtime))
        .route("/lint", get(lint::lint))
        .route("/api-info", get(api::api_info))
        .route("/keys", post(api::reveal_keys))
        .fallback(|| async { ConsoleError::not_found("no such console API route") })
        // Uploads come through here: 50 MiB, the storage surface judges the rest.
        .layer(axum::extract::DefaultBodyLimit::max(50 * 1024 * 1024));
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/console/") }))
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/assets/{file}", get(asset))
        .nest("/console/api", api)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Who is calling and from where, for sign-in limits and the audit log.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// The request came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

impl ClientInfo {
    pub(crate) fn from_parts(st: &Inner, parts: &http::request::Parts) -> Self {
        let h = &parts.headers;
        let forwarded = st
            .client_ip_header
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .and_then(|n| h.get(n.trim()))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let ip = forwarded
            .or_else(|| {
                parts
                    .extensions
                    .get::<axum::extract::ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let text = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        ClientInfo {
            ip,
            user_agent: text("user-agent").map(|u| u.chars().take(300).collect()),
            request_id: text("x-request-id"),
            tls: text("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https")),
        }
    }
}

pub(crate) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}
