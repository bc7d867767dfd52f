//! Typed configuration from flags and environment. Supabase's (and PostgREST's, GoTrue's)
//! environment names are accepted where they exist.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  agencyflow serve                       # embedded PostgreSQL in the data directory, port 54321
  agencyflow serve --port 8000 --log-format json
  DATABASE_URL=postgres://authenticator:pw@db/postgres MIGRATIONS_DATABASE_URL=postgres://postgres:pw@db/postgres agencyflow serve
  agencyflow migrate --dry-run           # list pending migrations
  agencyflow keys                        # print the anon and service_role API keys
  agencyflow seed --demo                 # load the demo agency
  agencyflow backup agencyflow.tar.gz    # database, storage files and secrets in one archive
  agencyflow --data-dir /srv/new restore agencyflow.tar.gz
  agencyflow serve --backup-every 24h --backup-keep 7 --backup-dir /srv/backups";

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
    /// Schema owner's connection for migrations and seeding (defaults to DATABASE_URL).
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
    /// Bring a new, empty data directory (or an empty DATABASE_URL database) to an archive's
    /// state; the archive is checked first.
    Restore(crate::backup::RestoreArgs),
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
    /// Transaction end: `commit` or `commit-allow-override` (honours Prefer: tx=rollback).
    #[arg(long, env = "PGRST_DB_TX_END", default_value = "commit")]
    pub db_tx_end: String,
    /// Serve `/metrics` without a key on this separate address (e.g. `127.0.0.1:9100` for a
    /// Prometheus scraper). On the API address `/metrics` always needs the service_role key.
    #[arg(long, env = "AGENCYFLOW_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// The key the vault encrypts secrets with; generated and kept in the data directory when absent.
    #[arg(long, env = "VAULT_ENC_KEY", hide_env_values = true)]
    pub vault_key: Option<String>,
    #[command(flatten)]
    pub auth: agencyflow_auth::AuthArgs,
    #[command(flatten)]
    pub functions: agencyflow_functions::FunctionsArgs,
    #[command(flatten)]
    pub storage: agencyflow_storage::StorageArgs,
    #[command(flatten)]
    pub backup: crate::backup::ScheduleArgs,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
