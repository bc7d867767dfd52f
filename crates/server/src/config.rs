//! Typed configuration from flags and environment. Supabase's (and PostgREST's, GoTrue's)
//! environment names are accepted where they exist.
use std::path::PathBuf;

use agencyflow_db::quote_ident;
use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  agencyflow serve                       # embedded PostgreSQL in the data directory, port 54321
  agencyflow serve --port 8000 --log-format json
  DATABASE_URL=postgres://authenticator:pw@db/postgres MIGRATIONS_DATABASE_URL=postgres://postgres:pw@db/postgres agencyflow serve
  DATABASE_URL=postgres://authenticator:pw@db/app PGRST_DB_SCHEMAS=api PGRST_DB_ANON_ROLE=web_anon agencyflow serve   # your own database, as PostgREST
  agencyflow migrate --dry-run           # list pending migrations
  agencyflow keys                        # print the anon and service_role API keys
  agencyflow seed --demo                 # load the demo agency
  agencyflow backup agencyflow.tar.gz    # database, storage files and secrets in one archive
  agencyflow --data-dir /srv/new restore agencyflow.tar.gz
  agencyflow serve --backup-every 24h --backup-keep 7 --backup-dir /srv/backups
  agencyflow import supabase --from old.dump --storage-from ./old-storage --dry-run --report import.json";

#[derive(Debug, Parser)]
#[command(name = "agencyflow", version, about = "A self-hosted, Supabase-compatible backend for AI-agency workflows, in one binary", after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Where the embedded cluster, the generated secrets and files live.
    #[arg(long, env = "AGENCYFLOW_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Use this PostgreSQL instead of the embedded one (the API's login role, e.g. authenticator).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Schema owner's connection for migrations and seeding (`migrate` and `seed` default to
    /// DATABASE_URL). With DATABASE_URL, `serve` applies migrations only when this is given:
    /// DATABASE_URL alone is served as it is, as PostgREST serves a database.
    #[arg(
        long,
        env = "MIGRATIONS_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub migrations_database_url: Option<String>,
    /// The project's JWT secret (HS256, at least 32 characters); generated and kept in the data directory when absent.
    #[arg(long, env = "JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "AGENCYFLOW_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,
    /// Threads of the async runtime. Default: every CPU with DATABASE_URL; half of them (at
    /// least one) with the embedded PostgreSQL, which runs on the same CPUs and needs them
    /// too (BENCHMARKS.md, REST: +20 % requests/s on 2 cores).
    #[arg(long, env = "AGENCYFLOW_WORKER_THREADS", global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

impl GlobalArgs {
    /// The runtime's thread count (see `worker_threads`), given the machine's CPUs.
    pub fn runtime_threads(&self, cpus: usize) -> usize {
        match self.worker_threads {
            Some(n) => n as usize,
            None if self.database_url.as_deref().is_some_and(|u| !u.is_empty()) => cpus.max(1),
            None => (cpus / 2).max(1),
        }
    }
}

// Parsed once at start: the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (starting the embedded PostgreSQL unless DATABASE_URL is set).
    Serve(ServeArgs),
    /// Apply pending migrations (or list them with --dry-run).
    Migrate {
        /// List pending migrations without applying them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the anon and service_role API keys for the configured secret.
    Keys,
    /// Load data into the database.
    Seed {
        /// The demo agency: two orgs, staff of each role, clients, projects, invoices, CRM, documents.
        #[arg(long, required = true)]
        demo: bool,
    },
    /// Embeddings of documents and CRM interactions.
    Embed {
        #[command(subcommand)]
        action: EmbedAction,
    },
    /// Write one archive of the database, the storage files and the secrets (works while
    /// `serve` runs).
    Backup(crate::backup::BackupArgs),
    /// Operator accounts of the console (/console/).
    Console {
        #[command(subcommand)]
        action: ConsoleAction,
    },
    /// Bring a new, empty data directory (or an empty DATABASE_URL database) to an archive's
    /// state; the archive is checked first.
    Restore(crate::backup::RestoreArgs),
    /// Move in from elsewhere: `import supabase --from <URL or pg_dump file>` brings a hosted
    /// Supabase project's rows, users (with their passwords) and files across, all or
    /// nothing (docs/import.md).
    Import(crate::import::ImportArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConsoleAction {
    /// Create an operator account (or reset its password). The password is read from
    /// standard input (one line); with --link, or when standard input is a terminal, a
    /// one-time setup link valid 24 hours is printed instead.
    AddAdmin {
        /// The operator's e-mail address (their sign-in name).
        email: String,
        /// Print a one-time link to set the password in the browser.
        #[arg(long)]
        link: bool,
        /// The console's public URL for the link (default: API_EXTERNAL_URL, else
        /// http://127.0.0.1:54321).
        #[arg(long, env = "API_EXTERNAL_URL")]
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EmbedAction {
    /// Queue and embed every row whose vector is missing or stale, with a progress bar.
    Backfill {
        #[command(flatten)]
        functions: agencyflow_functions::FunctionsArgs,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AGENCYFLOW_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 54321)]
    pub port: u16,
    /// Serve the database as it is: apply no migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "AGENCYFLOW_BODY_LIMIT", default_value_t = 10 * 1024 * 1024)]
    pub body_limit: usize,
    /// Connections in the API pool.
    #[arg(long, env = "PGRST_DB_POOL", default_value_t = 20)]
    pub db_pool: usize,
    /// Exposed schemas, comma-separated; the first is the default profile.
    #[arg(long, env = "PGRST_DB_SCHEMAS", default_value = "public")]
    pub db_schemas: String,
    /// Extra schemas on the search_path of every request.
    #[arg(
        long,
        env = "PGRST_DB_EXTRA_SEARCH_PATH",
        default_value = "public, extensions"
    )]
    pub db_extra_search_path: String,
    /// Cap on rows returned by reads and RPC.
    #[arg(long, env = "PGRST_DB_MAX_ROWS", default_value_t = 1000)]
    pub db_max_rows: i64,
    /// Role for requests without a user JWT.
    #[arg(long, env = "PGRST_DB_ANON_ROLE", default_value = "anon")]
    pub db_anon_role: String,
    /// Database roles a JWT's `role` claim may name besides the anonymous role,
    /// `authenticated` and `service_role` (comma-separated). Platform roles (`authenticator`,
    /// `supabase_auth_admin`, `postgres`, `pg_*`) are refused.
    #[arg(long, env = "AGENCYFLOW_API_ROLES", default_value = "")]
    pub api_roles: String,
    /// Allow aggregate functions in select=.
    #[arg(long, env = "PGRST_DB_AGGREGATES_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub db_aggregates_enabled: bool,
    /// Answer `Accept: application/vnd.pgrst.plan` with the request statement's EXPLAIN
    /// (development only: it shows the SQL's plan to any caller).
    #[arg(long, env = "PGRST_DB_PLAN_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub db_plan_enabled: bool,
    /// Transaction end: `commit` or `commit-allow-override` (honours Prefer: tx=rollback).
    #[arg(long, env = "PGRST_DB_TX_END", default_value = "commit")]
    pub db_tx_end: String,
    /// Function called at the start of every REST request's transaction, after its settings
    /// (e.g. `api.check_request`); raising an error there aborts the request with that error.
    #[arg(long, env = "PGRST_DB_PRE_REQUEST")]
    pub db_pre_request: Option<String>,
    /// Read PostgREST's settings from the database too (`ALTER ROLE <login role> SET
    /// pgrst.db_schemas = ...`); as in PostgREST, the database's values win over flags and
    /// environment, and are read again on `NOTIFY pgrst, 'reload config'` and schema reloads.
    #[arg(long, env = "PGRST_DB_CONFIG", default_value_t = true, action = clap::ArgAction::Set)]
    pub db_config: bool,
    /// Serve `/metrics` without a key on this separate address (e.g. `127.0.0.1:9100` for a
    /// Prometheus scraper). On the API address `/metrics` always needs the service_role key.
    #[arg(long, env = "AGENCYFLOW_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// The auth surface's own database login (GoTrue's `GOTRUE_DB_DATABASE_URL`), the owner
    /// of the `auth` schema. Default: the API's connection with the user `supabase_auth_admin`
    /// (right for the embedded cluster; set it when the database wants a password).
    #[arg(long, env = "GOTRUE_DB_DATABASE_URL", hide_env_values = true)]
    pub auth_database_url: Option<String>,
    /// The key the vault encrypts secrets with; generated and kept in the data directory when absent.
    #[arg(long, env = "VAULT_ENC_KEY", hide_env_values = true)]
    pub vault_key: Option<String>,
    /// When the embedded PostgreSQL dies, failed restart attempts in a row before giving up
    /// (then /health reports the reason and requests get 503); 0 never restarts it.
    #[arg(long, env = "AGENCYFLOW_DB_RESTART_ATTEMPTS", default_value_t = 5)]
    pub db_restart_attempts: u32,
    /// Pause before restarting the embedded PostgreSQL, in milliseconds; it doubles while
    /// PostgreSQL keeps dying within a minute of its start, up to 30 s.
    #[arg(long, env = "AGENCYFLOW_DB_RESTART_DELAY_MS", default_value_t = 500)]
    pub db_restart_delay_ms: u64,
    /// Bound on opening one database connection, in seconds: a request gets its 503 within it.
    #[arg(long, env = "AGENCYFLOW_DB_CONNECT_TIMEOUT", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub db_connect_timeout: u64,
    /// Bound on waiting for a free pooled connection when all are busy, in seconds.
    #[arg(long, env = "PGRST_DB_POOL_ACQUISITION_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub db_pool_acquisition_timeout: u64,
    /// Deadline of every request, in seconds: a request still unanswered then (a stuck or
    /// unreachable database) gets a 504 in its surface's error shape instead of a socket
    /// that never answers.
    #[arg(long, env = "AGENCYFLOW_REQUEST_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub request_timeout: u64,
    /// On SIGTERM/SIGINT, how long requests in flight (and the embedding worker's current
    /// job) may take to finish, in seconds; new requests get 503 meanwhile.
    #[arg(long, env = "AGENCYFLOW_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Leave the API keys out of the start-up summary (`agencyflow keys` prints them).
    #[arg(long, short = 'q', env = "AGENCYFLOW_QUIET")]
    pub quiet: bool,
    #[command(flatten)]
    pub auth: agencyflow_auth::AuthArgs,
    #[command(flatten)]
    pub functions: agencyflow_functions::FunctionsArgs,
    #[command(flatten)]
    pub storage: agencyflow_storage::StorageArgs,
    #[command(flatten)]
    pub realtime: agencyflow_realtime::RealtimeArgs,
    #[command(flatten)]
    pub backup: crate::backup::ScheduleArgs,
    #[command(flatten)]
    pub console: agencyflow_console::ConsoleArgs,
}

impl ServeArgs {
    /// How the embedded PostgreSQL is restarted when it dies.
    pub fn restart_policy(&self) -> agencyflow_db::RestartPolicy {
        let initial_delay = std::time::Duration::from_millis(self.db_restart_delay_ms);
        agencyflow_db::RestartPolicy {
            max_attempts: self.db_restart_attempts,
            initial_delay,
            max_delay: std::time::Duration::from_secs(30).max(initial_delay),
        }
    }

    /// The API pools' size and time limits.
    pub fn pool_options(&self) -> agencyflow_db::PoolOptions {
        agencyflow_db::PoolOptions {
            max_size: self.db_pool,
            connect_timeout: Some(std::time::Duration::from_secs(self.db_connect_timeout)),
            acquire_timeout: Some(std::time::Duration::from_secs(
                self.db_pool_acquisition_timeout,
            )),
        }
    }
}

/// A configuration mistake: one line naming the setting, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {setting}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            setting,
            reason: reason.into(),
        }
    }
}

/// The default data directory: `$XDG_DATA_HOME/agencyflow` (`~/.local/share/agencyflow`);
/// as root `/var/lib/agencyflow`, which the `postgres` user running the cluster can reach.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from("/var/lib/agencyflow");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("agencyflow");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/agencyflow"),
        None => PathBuf::from(".agencyflow"),
    }
}

/// Settings of the REST layer (PostgREST's names and defaults).
pub type RestSettings = agencyflow_rest::RestConfig;

/// Settings of the REST layer, checked.
pub fn rest_settings(a: &ServeArgs) -> Result<RestSettings, ConfigError> {
    let schemas: Vec<String> = a
        .db_schemas
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if schemas.is_empty() {
        return Err(ConfigError::new(
            "PGRST_DB_SCHEMAS",
            "at least one schema must be exposed",
        ));
    }
    if a.db_max_rows <= 0 {
        return Err(ConfigError::new(
            "PGRST_DB_MAX_ROWS",
            "must be a positive number",
        ));
    }
    let tx_end_allow_override = match a.db_tx_end.as_str() {
        "commit" | "rollback" => false,
        "commit-allow-override" | "rollback-allow-override" => true,
        other => return Err(ConfigError::new("PGRST_DB_TX_END", format!("`{other}` is not one of commit, commit-allow-override, rollback, rollback-allow-override"))),
    };
    if a.db_pool == 0 {
        return Err(ConfigError::new("PGRST_DB_POOL", "must be at least 1"));
    }
    for r in a
        .api_roles
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        if !agencyflow_keys::ApiRoles::configurable(r) {
            return Err(ConfigError::new(
                "AGENCYFLOW_API_ROLES",
                format!("`{r}` is a platform role and can never be an API role"),
            ));
        }
    }
    Ok(RestSettings {
        schemas,
        max_rows: Some(a.db_max_rows),
        aggregates_enabled: a.db_aggregates_enabled,
        tx_end_allow_override,
        anon_role: a.db_anon_role.clone(),
        plan_enabled: a.db_plan_enabled,
        pre_request: false,
    })
}

/// PostgREST settings that may come from the database (`pgrst.<name>` on the login role).
pub const IN_DB_SETTINGS: &[&str] = &[
    "db_schemas",
    "db_anon_role",
    "db_max_rows",
    "db_pre_request",
    "db_extra_search_path",
    "db_aggregates_enabled",
    "db_tx_end",
];

/// The settings with the database's `pgrst.*` values applied over them (PostgREST's order:
/// the database wins). Unknown names are ignored; a value that does not parse is an error
/// naming the database setting.
pub fn with_db_settings(a: &ServeArgs, db: &[(String, String)]) -> Result<ServeArgs, ConfigError> {
    let mut a = a.clone();
    for (k, v) in db {
        match k.as_str() {
            "db_schemas" => a.db_schemas = v.clone(),
            "db_anon_role" => a.db_anon_role = v.clone(),
            "db_max_rows" => {
                a.db_max_rows = v.trim().parse().map_err(|_| {
                    ConfigError::new("pgrst.db_max_rows", format!("`{v}` is not a number"))
                })?
            }
            "db_pre_request" => a.db_pre_request = Some(v.clone()).filter(|v| !v.trim().is_empty()),
            "db_extra_search_path" => a.db_extra_search_path = v.clone(),
            "db_aggregates_enabled" => {
                a.db_aggregates_enabled = match v.trim() {
                    "true" | "on" | "1" | "yes" => true,
                    "false" | "off" | "0" | "no" => false,
                    _ => {
                        return Err(ConfigError::new(
                            "pgrst.db_aggregates_enabled",
                            format!("`{v}` is not a boolean"),
                        ))
                    }
                }
            }
            "db_tx_end" => a.db_tx_end = v.clone(),
            _ => {}
        }
    }
    Ok(a)
}

/// The value a flag (or its environment variable, or its default) gives `pgrst.<name>`.
fn flag_value(a: &ServeArgs, name: &str) -> Option<String> {
    Some(match name {
        "db_schemas" => a.db_schemas.clone(),
        "db_anon_role" => a.db_anon_role.clone(),
        "db_max_rows" => a.db_max_rows.to_string(),
        "db_pre_request" => a.db_pre_request.clone().unwrap_or_default(),
        "db_extra_search_path" => a.db_extra_search_path.clone(),
        "db_aggregates_enabled" => a.db_aggregates_enabled.to_string(),
        "db_tx_end" => a.db_tx_end.clone(),
        _ => return None,
    })
}

/// `pgrst.db_schemas='api' (over PGRST_DB_SCHEMAS='public'), ...`: the database's settings
/// and the flag values they replace, for the start-up log.
pub fn describe_db_settings(a: &ServeArgs, db: &[(String, String)]) -> String {
    db.iter()
        .map(|(k, v)| match flag_value(a, k) {
            Some(f) if f != *v => {
                format!("pgrst.{k}='{v}' (over PGRST_{}='{f}')", k.to_uppercase())
            }
            _ => format!("pgrst.{k}='{v}'"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the REST surface runs with; swapped whole when the in-database configuration is
/// read again (`NOTIFY pgrst, 'reload config'`).
#[derive(Debug, Clone)]
pub struct RestRuntime {
    pub config: RestSettings,
    /// The roles a request may run as (`agencyflow_keys::ApiRoles`).
    pub api_roles: agencyflow_keys::ApiRoles,
    /// `select "schema"."function"()`: PostgREST's db-pre-request.
    pub pre_request: Option<std::sync::Arc<str>>,
    /// The search_path of a request per exposed schema: that schema, then the extra ones.
    search_paths: Vec<(String, String)>,
}

impl RestRuntime {
    /// The search_path of a request whose profile is `schema` (PostgREST: the schema, then
    /// db-extra-search-path).
    pub fn search_path(&self, schema: &str) -> Option<&str> {
        self.search_paths
            .iter()
            .find(|(s, _)| s == schema)
            .map(|(_, p)| p.as_str())
    }
}

/// `schema.function` (either part may be double-quoted) as `select "schema"."function"()`.
fn pre_request_sql(name: &str) -> Result<String, ConfigError> {
    let bad = || {
        ConfigError::new(
            "PGRST_DB_PRE_REQUEST",
            format!("`{name}` is not a function name (`schema.function` or `function`)"),
        )
    };
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = name.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    if quoted || parts.len() > 2 || parts.iter().any(|p| p.trim().is_empty()) {
        return Err(bad());
    }
    let quoted: Vec<String> = parts.iter().map(|p| quote_ident(p.trim())).collect();
    Ok(format!("select {}()", quoted.join(".")))
}

/// The REST runtime of these settings, checked.
pub fn rest_runtime(a: &ServeArgs) -> Result<RestRuntime, ConfigError> {
    let config = rest_settings(a)?;
    let pre_request = match a.db_pre_request.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => Some(pre_request_sql(name)?.into()),
        _ => None,
    };
    let extra: Vec<String> = a
        .db_extra_search_path
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(quote_ident)
        .collect();
    let search_paths = config
        .schemas
        .iter()
        .map(|schema| {
            let first = quote_ident(schema);
            let mut path = vec![first.clone()];
            path.extend(extra.iter().filter(|e| **e != first).cloned());
            (schema.clone(), path.join(", "))
        })
        .collect();
    let config = RestSettings {
        pre_request: pre_request.is_some(),
        ..config
    };
    Ok(RestRuntime {
        api_roles: api_roles(a),
        config,
        pre_request,
        search_paths,
    })
}

/// The roles API requests may run as, from the anon role and `AGENCYFLOW_API_ROLES`.
pub fn api_roles(a: &ServeArgs) -> agencyflow_keys::ApiRoles {
    let extra: Vec<String> = a
        .api_roles
        .split(',')
        .map(|r| r.trim().to_string())
        .collect();
    agencyflow_keys::ApiRoles::new(&a.db_anon_role, &extra)
}

/// `url` (a `key=value` conninfo or a `postgres://` URL) with its user replaced by `user`;
/// a URL's password is dropped, since it was the other user's.
pub fn with_user(url: &str, user: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = if url.starts_with("postgresql://") {
            "postgresql"
        } else {
            "postgres"
        };
        let (authority, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        return format!("{scheme}://{user}@{host}{tail}");
    }
    let mut out: Vec<String> = url
        .split_whitespace()
        .filter(|kv| !kv.starts_with("user=") && !kv.starts_with("password="))
        .map(str::to_string)
        .collect();
    out.push(format!("user={user}"));
    out.join(" ")
}

/// The auth settings in force, for the console: every setting by its GoTrue name, secrets
/// shown only as set or not (`"[set, hidden]"`), never their values.
pub fn auth_in_force(a: &agencyflow_auth::AuthArgs) -> serde_json::Value {
    use serde_json::json;
    let secret = |v: &Option<String>| match v.as_deref() {
        Some(s) if !s.is_empty() => json!("[set, hidden]"),
        _ => json!(null),
    };
    let ext = &a.external;
    let provider = |enabled: bool,
                    client_id: &Option<String>,
                    s: &Option<String>,
                    url: &Option<String>| {
        json!({ "enabled": enabled, "client_id": client_id, "secret": secret(s), "url": url })
    };
    json!({
        "GOTRUE_JWT_EXP": a.jwt_exp,
        "GOTRUE_JWT_AUD": a.jwt_aud,
        "GOTRUE_JWT_ADMIN_ROLES": a.jwt_admin_roles,
        "GOTRUE_JWT_KEYS": secret(&a.jwt_keys),
        "GOTRUE_JWT_ISSUER": a.jwt_issuer,
        "API_EXTERNAL_URL": a.api_external_url,
        "GOTRUE_SITE_URL": a.site_url,
        "GOTRUE_URI_ALLOW_LIST": a.uri_allow_list,
        "GOTRUE_DISABLE_SIGNUP": a.disable_signup,
        "GOTRUE_MAILER_AUTOCONFIRM": a.mailer_autoconfirm,
        "GOTRUE_MAILER_OTP_EXP": a.mailer_otp_exp,
        "GOTRUE_SMTP_MAX_FREQUENCY": a.smtp_max_frequency,
        "GOTRUE_EXTERNAL_ANONYMOUS_USERS_ENABLED": a.anonymous_users_enabled,
        "GOTRUE_SECURITY_UPDATE_PASSWORD_REQUIRE_REAUTHENTICATION": a.update_password_require_reauthentication,
        "GOTRUE_PASSWORD_MIN_LENGTH": a.password_min_length,
        "GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL": a.refresh_token_reuse_interval,
        "GOTRUE_RATE_LIMIT_HEADER": a.rate_limit_header,
        "rate_limits": {
            "sign_in_sign_ups": a.rate_limit_sign_in_sign_ups,
            "email_sign_ins": a.rate_limit_email_sign_ins,
            "token_refresh": a.rate_limit_token_refresh,
            "anonymous_users": a.rate_limit_anonymous_users,
            "verify": a.rate_limit_verify,
            "user_updates": a.rate_limit_user_updates,
        },
        "smtp": {
            "GOTRUE_SMTP_HOST": a.smtp.smtp_host,
            "GOTRUE_SMTP_PORT": a.smtp.smtp_port,
            "GOTRUE_SMTP_USER": a.smtp.smtp_user,
            "GOTRUE_SMTP_PASS": secret(&a.smtp.smtp_pass),
            "GOTRUE_SMTP_ADMIN_EMAIL": a.smtp.smtp_admin_email,
            "GOTRUE_SMTP_SENDER_NAME": a.smtp.smtp_sender_name,
        },
        "mfa": {
            "max_enrolled_factors": a.mfa.max_enrolled_factors,
            "totp_enroll_enabled": a.mfa.totp_enroll_enabled,
            "totp_verify_enabled": a.mfa.totp_verify_enabled,
        },
        "webauthn": {
            "enroll_enabled": a.webauthn.enroll_enabled,
            "rp_id": a.webauthn.rp_id,
            "rp_origins": a.webauthn.rp_origins,
        },
        "external": {
            "google": provider(ext.google.enabled, &ext.google.client_id, &ext.google.secret, &ext.google.url),
            "github": provider(ext.github.enabled, &ext.github.client_id, &ext.github.secret, &ext.github.url),
            "gitlab": provider(ext.gitlab.enabled, &ext.gitlab.client_id, &ext.gitlab.secret, &ext.gitlab.url),
            "azure": provider(ext.azure.enabled, &ext.azure.client_id, &ext.azure.secret, &ext.azure.url),
            "keycloak": provider(ext.keycloak.enabled, &ext.keycloak.client_id, &ext.keycloak.secret, &ext.keycloak.url),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let mut v = vec!["agencyflow", "serve"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Serve(s) => s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn pre_request_names_become_a_quoted_call() {
        assert_eq!(
            pre_request_sql("api.check").unwrap(),
            r#"select "api"."check"()"#
        );
        assert_eq!(pre_request_sql("check").unwrap(), r#"select "check"()"#);
        assert_eq!(
            pre_request_sql(r#""My Schema"."do.it""#).unwrap(),
            r#"select "My Schema"."do.it"()"#
        );
        assert_eq!(
            pre_request_sql(r#"a."x""y""#).unwrap(),
            r#"select "a"."x""y"()"#
        );
        // Whatever the name holds stays inside quoted identifiers.
        assert_eq!(
            pre_request_sql("x(); drop table t; --.f").unwrap(),
            r#"select "x(); drop table t; --"."f"()"#
        );
        for bad in ["", "a.b.c", "a.", r#""open"#] {
            assert!(pre_request_sql(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_settings_win_over_flags_and_environment() {
        let a = serve(&["--db-schemas", "public", "--db-max-rows", "1000"]);
        let db = vec![
            ("db_schemas".to_string(), "api, public".to_string()),
            ("db_max_rows".to_string(), "5".to_string()),
            ("db_anon_role".to_string(), "web_anon".to_string()),
            ("db_pre_request".to_string(), "api.check".to_string()),
            ("db_extra_search_path".to_string(), "util".to_string()),
            ("db_aggregates_enabled".to_string(), "true".to_string()),
        ];
        let rt = rest_runtime(&with_db_settings(&a, &db).unwrap()).unwrap();
        assert_eq!(rt.config.schemas, vec!["api", "public"]);
        assert_eq!(rt.config.max_rows, Some(5));
        assert_eq!(rt.config.anon_role, "web_anon");
        assert!(rt.config.aggregates_enabled);
        assert!(rt.api_roles.allows("web_anon"));
        assert_eq!(rt.pre_request.as_deref(), Some(r#"select "api"."check"()"#));
        assert_eq!(rt.search_path("api"), Some(r#""api", "util""#));
        assert_eq!(rt.search_path("public"), Some(r#""public", "util""#));
        assert_eq!(rt.search_path("other"), None);
        // Without database settings: the flags, and no pre-request.
        let rt = rest_runtime(&a).unwrap();
        assert_eq!(rt.config.max_rows, Some(1000));
        assert_eq!(rt.pre_request, None);
        // The request's schema first, not twice.
        assert_eq!(rt.search_path("public"), Some(r#""public", "extensions""#));
        assert_eq!(
            describe_db_settings(&a, &db[..2]),
            "pgrst.db_schemas='api, public' (over PGRST_DB_SCHEMAS='public'), pgrst.db_max_rows='5' (over PGRST_DB_MAX_ROWS='1000')"
        );
        assert_eq!(
            describe_db_settings(&a, &[("db_schemas".into(), "public".into())]),
            "pgrst.db_schemas='public'"
        );
        // A bad database value names the database setting.
        let e = with_db_settings(&a, &[("db_max_rows".into(), "many".into())]).unwrap_err();
        assert_eq!(e.setting, "pgrst.db_max_rows");
        // An empty pre-request in the database turns the flag's off.
        let a = serve(&["--db-pre-request", "api.check"]);
        let off = with_db_settings(&a, &[("db_pre_request".into(), "".into())]).unwrap();
        assert_eq!(rest_runtime(&off).unwrap().pre_request, None);
    }

    fn global(args: &[&str]) -> GlobalArgs {
        let mut v = vec!["agencyflow"];
        v.extend_from_slice(args);
        v.push("keys");
        Cli::try_parse_from(v).unwrap().global
    }

    #[test]
    fn runtime_threads_leave_cpus_to_the_embedded_database() {
        // Explicit flags win; with DATABASE_URL every CPU; embedded: half, at least one.
        assert_eq!(global(&["--worker-threads", "3"]).runtime_threads(8), 3);
        assert_eq!(
            global(&["--database-url", "postgres://x@h/db"]).runtime_threads(8),
            8
        );
        if std::env::var_os("DATABASE_URL").is_none()
            && std::env::var_os("AGENCYFLOW_WORKER_THREADS").is_none()
        {
            assert_eq!(global(&[]).runtime_threads(8), 4);
            assert_eq!(global(&[]).runtime_threads(2), 1);
            assert_eq!(global(&[]).runtime_threads(1), 1);
        }
        let mut v = vec!["agencyflow", "--worker-threads", "0", "keys"];
        assert!(Cli::try_parse_from(&v).is_err(), "0 threads is refused");
        v[2] = "many";
        assert!(Cli::try_parse_from(&v).is_err());
    }

    #[test]
    fn with_user_swaps_the_login_of_either_url_form() {
        assert_eq!(
            with_user(
                "host=/run/pg port=5 user=authenticator dbname=postgres",
                "supabase_auth_admin"
            ),
            "host=/run/pg port=5 dbname=postgres user=supabase_auth_admin"
        );
        assert_eq!(
            with_user(
                "postgres://authenticator:pw@db:5432/app?sslmode=disable",
                "supabase_auth_admin"
            ),
            "postgres://supabase_auth_admin@db:5432/app?sslmode=disable"
        );
    }
}
