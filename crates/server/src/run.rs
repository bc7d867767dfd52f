//! The CLI's commands: where the database comes from, migrations, serving, shutdown.
use std::net::SocketAddr;
use std::path::PathBuf;

use agencyflow_auth::{api_key, JwtKeys};
use agencyflow_db::{migrate, ClusterError, ClusterOptions, Db, EmbeddedCluster};
use tokio::net::TcpListener;

use crate::app::{self, AppState, Settings};
use crate::config::{
    default_data_dir, rest_settings, Cli, Command, ConfigError, EmbedAction, GlobalArgs, LogFormat,
    ServeArgs,
};
use crate::keys;

/// A command's failure: configuration mistakes exit 2, everything else 1.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Failed(String),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_) => 2,
            RunError::Failed(_) => 1,
        }
    }
}

fn failed(e: impl std::fmt::Display) -> RunError {
    RunError::Failed(e.to_string())
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Where the database is: an external one, or the embedded cluster we started.
pub struct Database {
    /// The API's login role (authenticator).
    pub api_url: String,
    /// The schema owner, for migrations and seeding.
    pub admin_url: String,
    pub cluster: Option<EmbeddedCluster>,
}

/// Resolves the database: `DATABASE_URL`, or the embedded cluster in the data directory
/// (started here, on the calling thread, which must outlive it: see `cluster` docs).
pub fn open_database(g: &GlobalArgs, data_dir: &std::path::Path) -> Result<Database, RunError> {
    if let Some(url) = g.database_url.as_deref().filter(|u| !u.is_empty()) {
        tokio_postgres_config_check(url, "DATABASE_URL")?;
        let admin = g
            .migrations_database_url
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| url.to_string());
        tokio_postgres_config_check(&admin, "MIGRATIONS_DATABASE_URL")?;
        return Ok(Database {
            api_url: url.to_string(),
            admin_url: admin,
            cluster: None,
        });
    }
    let opts = ClusterOptions {
        data_dir: data_dir.to_path_buf(),
        bin_dir: None,
        port: None,
        ephemeral: false,
    };
    match EmbeddedCluster::start(&opts) {
        Ok(cluster) => Ok(Database {
            api_url: cluster.url("authenticator", "postgres"),
            admin_url: cluster.url("postgres", "postgres"),
            cluster: Some(cluster),
        }),
        // `agencyflow serve` already runs this data directory: use its cluster, manage nothing.
        Err(ClusterError::AlreadyRunning { pid, .. }) => {
            let (socket, port) = EmbeddedCluster::running_at(data_dir).ok_or_else(|| {
                failed(format!(
                    "PostgreSQL (pid {pid}) runs on {} but its postmaster.pid is unreadable",
                    data_dir.display()
                ))
            })?;
            let url = |user: &str| {
                format!(
                    "host={} port={port} user={user} dbname=postgres",
                    socket.display()
                )
            };
            tracing::info!(
                pid,
                "using the embedded PostgreSQL already running on this data directory"
            );
            Ok(Database {
                api_url: url("authenticator"),
                admin_url: url("postgres"),
                cluster: None,
            })
        }
        Err(e) => Err(failed(e)),
    }
}

fn tokio_postgres_config_check(url: &str, setting: &'static str) -> Result<(), ConfigError> {
    url.parse::<agencyflow_db::tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| {
            ConfigError::new(
                setting,
                format!("not a valid PostgreSQL connection string: {e}"),
            )
        })
}

pub fn data_dir(g: &GlobalArgs) -> PathBuf {
    g.data_dir.clone().unwrap_or_else(default_data_dir)
}

/// Runs a parsed command line to completion.
pub fn run(cli: Cli) -> Result<(), RunError> {
    let dir = data_dir(&cli.global);
    // Before anything creates files in the (new, empty) data directory.
    if let Command::Restore(a) = &cli.command {
        return crate::backup::restore_command(&cli.global, a, &dir);
    }
    if let Command::Backup(_) = &cli.command {
        crate::backup::check_source(&cli.global, &dir)?;
    }
    // Validate everything we can before starting anything.
    let secret = keys::jwt_secret(cli.global.jwt_secret.as_deref(), &dir)?;
    let keys = JwtKeys::hs256(secret.as_bytes(), None);
    if let Command::Keys = cli.command {
        println!(
            "anon key:         {}",
            api_key(&keys, "anon").map_err(failed)?
        );
        println!(
            "service_role key: {}",
            api_key(&keys, "service_role").map_err(failed)?
        );
        return Ok(());
    }
    if let Command::Serve(a) = &cli.command {
        rest_settings(a)?;
    }
    let mut database = open_database(&cli.global, &dir)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.global.runtime_threads(cpus))
        .enable_all()
        .build()
        .map_err(failed)?;
    let global = cli.global.clone();
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let _backups = crate::backup::spawn_schedule(&args, &database, &global, &dir)?;
                serve(&database, args, keys, &dir).await
            }
            Command::Backup(args) => {
                crate::backup::backup_command(&database, &global, &args, &dir).await
            }
            Command::Migrate { dry_run } => run_migrations(&database.admin_url, dry_run).await,
            Command::Seed { .. } => seed_demo(&database.admin_url).await,
            Command::Embed {
                action: EmbedAction::Backfill { functions },
            } => embed_backfill(&database, &functions, &dir).await,
            Command::Keys | Command::Restore(_) => Ok(()),
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    if let Some(c) = database.cluster.as_mut() {
        c.stop();
    }
    result
}

async fn run_migrations(admin_url: &str, dry_run: bool) -> Result<(), RunError> {
    let mut client = agencyflow_db::connect_one(admin_url)
        .await
        .map_err(failed)?;
    let all = migrate::embedded();
    if dry_run {
        let status = migrate::status(&client, &all).await.map_err(failed)?;
        let pending: Vec<_> = status
            .iter()
            .filter(|(_, s)| *s == migrate::State::Pending)
            .collect();
        if pending.is_empty() {
            println!("no pending migrations ({} applied)", all.len());
        } else {
            println!("{} pending migration(s):", pending.len());
            for (m, _) in pending {
                println!("  {}", m.file_name());
            }
        }
        return Ok(());
    }
    let total = all.len();
    let mut i = 0;
    let applied = migrate::apply(&mut client, &all, |m| {
        i += 1;
        eprintln!("[{i}] applying {}", m.file_name());
    })
    .await
    .map_err(failed)?;
    println!("{} migration(s) applied, {} total", applied.len(), total);
    Ok(())
}

/// `serve` and `embed backfill` embed with the `local` model by default (no API key set):
/// its folder defaults to `<data-dir>/models/all-MiniLM-L6-v2` when that exists. Without the
/// model files `auto` falls back to the lexical `hash` provider, with a warning.
fn prefer_local_embeddings(f: &mut agencyflow_functions::FunctionsArgs, dir: &std::path::Path) {
    use agencyflow_functions::config::{EmbedProviderKind, LOCAL_MODEL};
    f.ai_auto_local = true;
    if f.ai_local_model_dir.is_none() {
        let in_data_dir = dir.join("models").join(LOCAL_MODEL);
        if in_data_dir.join("model.safetensors").is_file() {
            f.ai_local_model_dir = Some(in_data_dir);
        }
    }
    if f.resolved_embed() == EmbedProviderKind::Hash
        && f.ai_embed_provider == EmbedProviderKind::Auto
    {
        tracing::warn!(
            model_dir = %f.local_model_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            "no local embedding model files (run scripts/setup or set AI_LOCAL_MODEL_DIR): without an API key, embeddings use the lexical `hash` provider"
        );
    }
}

async fn embed_backfill(
    database: &Database,
    functions: &agencyflow_functions::FunctionsArgs,
    dir: &std::path::Path,
) -> Result<(), RunError> {
    // The embeddings are written by the service role, which needs the vault key when
    // provider keys live in the vault.
    let vault_key = keys::persisted_secret(dir, "vault_key", "VAULT_ENC_KEY")?;
    let db = Db::connect(&database.api_url, 2)
        .map_err(failed)?
        .with_vault_key(Some(vault_key));
    let mut functions = functions.clone();
    functions.fill_keys_from_vault(&db).await;
    prefer_local_embeddings(&mut functions, dir);
    let provider = agencyflow_functions::provider::embedder_from_args(&functions);
    let report = agencyflow_functions::backfill_with_progress_bar(&db, provider)
        .await
        .map_err(failed)?;
    if report.failed > 0 {
        return Err(failed(format!(
            "{} row(s) could not be embedded; see private.embedding_jobs.last_error",
            report.failed
        )));
    }
    Ok(())
}

async fn seed_demo(admin_url: &str) -> Result<(), RunError> {
    let mut client = agencyflow_db::connect_one(admin_url)
        .await
        .map_err(failed)?;
    let all = migrate::embedded();
    migrate::apply(&mut client, &all, |_| {})
        .await
        .map_err(failed)?;
    let tx = client.transaction().await.map_err(failed)?;
    tx.batch_execute("set local search_path = public, extensions")
        .await
        .map_err(failed)?;
    tx.batch_execute(crate::SEED_DEMO_SQL).await.map_err(|e| {
        failed(format!(
            "seeding the demo agency failed (nothing was written): {}",
            agencyflow_db::DbError::from(e)
        ))
    })?;
    tx.commit().await.map_err(failed)?;
    println!("demo agency loaded");
    Ok(())
}

/// Builds the state for a database: pool, role settings, vault key.
pub async fn build_state(
    api_url: &str,
    args: ServeArgs,
    keys: JwtKeys,
    vault_key: Option<String>,
) -> Result<AppState, RunError> {
    let rest = rest_settings(&args)?;
    args.storage
        .check()
        .map_err(|e| ConfigError::new("STORAGE_BACKEND", e))?;
    // Every surface verifies with the auth settings: the accepted `aud`, the ES256 keys.
    let keys = args
        .auth
        .configure_keys(keys)
        .map_err(|e| ConfigError::new("GOTRUE_JWT_KEYS", e.to_string()))?;
    let db = Db::connect(api_url, args.db_pool)
        .map_err(failed)?
        .with_vault_key(vault_key)
        .with_search_path(args.db_extra_search_path.clone());
    db.load_role_settings().await.map_err(failed)?;
    let mut args = args;
    args.functions.fill_keys_from_vault(&db).await;
    let settings = Settings {
        api_roles: crate::config::api_roles(&args),
        anon_key: api_key(&keys, "anon").map_err(failed)?,
        service_role_key: api_key(&keys, "service_role").map_err(failed)?,
        serve: args,
        rest,
    };
    let schemas = settings.rest.schemas.clone();
    let state = AppState::new(db.clone(), keys, settings);
    // Start-up fails loudly if the catalog cannot be read; later reloads only log.
    state
        .schema_cache
        .load(&db, &schemas)
        .await
        .map_err(|e| failed(format!("loading the schema cache: {e}")))?;
    state
        .schema_cache
        .spawn_reloader(db, api_url.to_string(), schemas);
    Ok(state)
}

async fn serve(
    database: &Database,
    args: ServeArgs,
    keys: JwtKeys,
    dir: &std::path::Path,
) -> Result<(), RunError> {
    let started = std::time::Instant::now();
    if !args.no_migrate {
        run_migrations_quiet(&database.admin_url).await?;
    }
    let vault_key = match &args.vault_key {
        Some(k) if k.len() < 32 => {
            return Err(ConfigError::new("VAULT_ENC_KEY", "must be at least 32 characters").into())
        }
        Some(k) => k.clone(),
        None => keys::persisted_secret(dir, "vault_key", "VAULT_ENC_KEY")?,
    };
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| {
            ConfigError::new(
                "AGENCYFLOW_HOST",
                format!("`{}` is not an IP address: {e}", args.host),
            )
        })?;
    let mut args = args;
    args.storage
        .storage_dir
        .get_or_insert_with(|| dir.join("storage"));
    prefer_local_embeddings(&mut args.functions, dir);
    let state = build_state(&database.api_url, args, keys, Some(vault_key)).await?;
    let _embedding_worker = state.settings.serve.functions.ai_embed_worker.then(|| {
        let f = &state.settings.serve.functions;
        agencyflow_functions::spawn_embedding_worker(
            state.db.clone(),
            agencyflow_functions::provider::embedder_from_args(f),
            f.into(),
        )
    });
    if let Some(maddr) = &state.settings.serve.metrics_addr {
        let maddr: SocketAddr = maddr.parse().map_err(|e| {
            ConfigError::new(
                "AGENCYFLOW_METRICS_ADDR",
                format!("`{maddr}` is not a socket address: {e}"),
            )
        })?;
        let ml = TcpListener::bind(maddr)
            .await
            .map_err(|e| failed(format!("cannot listen on {maddr} for metrics: {e}")))?;
        tracing::info!(addr = %ml.local_addr().map_err(failed)?, "metrics listening (no key)");
        let metrics_app = app::metrics_router(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(ml, metrics_app).await;
        });
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| failed(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(failed)?;
    tracing::info!(addr = %local, ready_ms = started.elapsed().as_millis() as u64, "agencyflow listening");
    axum::serve(
        listener,
        app::router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(failed)?;
    tracing::info!("shut down");
    Ok(())
}

async fn run_migrations_quiet(admin_url: &str) -> Result<(), RunError> {
    let mut client = agencyflow_db::connect_one(admin_url)
        .await
        .map_err(failed)?;
    let applied = migrate::apply(
        &mut client,
        &migrate::embedded(),
        |m| tracing::info!(file = %m.file_name(), "applying migration"),
    )
    .await
    .map_err(failed)?;
    if !applied.is_empty() {
        tracing::info!(count = applied.len(), "migrations applied");
    }
    Ok(())
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutdown signal received; draining requests");
}
