//! The CLI's commands: where the database comes from, migrations, serving, shutdown.
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agencyflow_auth::{api_key, JwtKeys};
use agencyflow_db::{
    migrate, ClusterError, ClusterHealth, ClusterOptions, Db, EmbeddedCluster, RestartPolicy,
    SupervisedCluster,
};
use tokio::net::TcpListener;

use crate::app::{self, AppState, Settings};
use crate::config::{
    default_data_dir, rest_settings, Cli, Command, ConfigError, ConsoleAction, EmbedAction,
    GlobalArgs, LogFormat, ServeArgs,
};
use crate::keys;
use crate::schema_cache::ReadError;
use crate::surfaces::Availability;

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

fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"))
}

/// The log on standard error (text or JSON), and the same events into the console's log
/// tail (in memory, secrets redacted).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let writer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let tail = agencyflow_console::TailLayer(agencyflow_console::LogTail::global());
    let _ = tracing_subscriber::registry()
        .with(writer.with_filter(log_filter()))
        .with(tail.with_filter(log_filter()))
        .try_init();
}

/// Only the console's log tail, nothing written (a server in a test process): a no-op when
/// the process already has a subscriber.
pub fn init_log_tail() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let tail = agencyflow_console::TailLayer(agencyflow_console::LogTail::global());
    let _ = tracing_subscriber::registry()
        .with(tail.with_filter(log_filter()))
        .try_init();
}

/// Where the database is: an external one, or the embedded cluster we started.
pub struct Database {
    /// The API's login role (authenticator).
    pub api_url: String,
    /// The schema owner, for migrations and seeding.
    pub admin_url: String,
    /// The embedded cluster, under supervision (restarted when it dies, per `policy`).
    pub cluster: Option<SupervisedCluster>,
    /// Without `cluster`: the embedded cluster another agencyflow runs on this data
    /// directory (its socket directory and port), which this process only uses.
    pub shared: Option<(PathBuf, u16)>,
    /// Whether `serve` applies pending migrations (unless `--no-migrate`): with the embedded
    /// cluster, or when `MIGRATIONS_DATABASE_URL` names the schema owner. `DATABASE_URL`
    /// alone is served as it is, as PostgREST serves a database (the API's login role
    /// could not migrate anyway).
    pub migrate_on_serve: bool,
}

/// Resolves the database: `DATABASE_URL`, or the embedded cluster in the data directory,
/// started on its supervisor thread (which spawns and waits on every postmaster, so the
/// parent-death signal keeps them from outliving us: see `db::supervise`).
pub fn open_database(
    g: &GlobalArgs,
    data_dir: &std::path::Path,
    policy: RestartPolicy,
    settings: Vec<(String, String)>,
) -> Result<Database, RunError> {
    if let Some(url) = g.database_url.as_deref().filter(|u| !u.is_empty()) {
        tokio_postgres_config_check(url, "DATABASE_URL")?;
        let owner = g.migrations_database_url.clone().filter(|u| !u.is_empty());
        let migrate_on_serve = owner.is_some();
        let admin = owner.unwrap_or_else(|| url.to_string());
        tokio_postgres_config_check(&admin, "MIGRATIONS_DATABASE_URL")?;
        return Ok(Database {
            api_url: url.to_string(),
            admin_url: admin,
            migrate_on_serve,
            cluster: None,
            shared: None,
        });
    }
    let opts = ClusterOptions {
        data_dir: data_dir.to_path_buf(),
        bin_dir: None,
        port: None,
        ephemeral: false,
        settings,
    };
    match SupervisedCluster::start(&opts, policy) {
        Ok(cluster) => Ok(Database {
            api_url: cluster.url("authenticator", "postgres"),
            admin_url: cluster.url("postgres", "postgres"),
            migrate_on_serve: true,
            cluster: Some(cluster),
            shared: None,
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
                migrate_on_serve: true,
                cluster: None,
                shared: Some((socket, port)),
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
    let policy = match &cli.command {
        Command::Serve(a) => {
            rest_settings(a)?;
            a.restart_policy()
        }
        // Short-lived commands report a dead database as their error.
        _ => RestartPolicy::never(),
    };
    // Scheduled backups of the embedded cluster come with continuous WAL archiving.
    let settings = match &cli.command {
        Command::Serve(a) if cli.global.database_url.as_deref().is_none_or(str::is_empty) => {
            a.backup.wal_archiving(&dir)?
        }
        _ => Vec::new(),
    };
    let mut database = open_database(&cli.global, &dir, policy, settings)?;
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
                serve(&database, args, keys, &dir, global.jwt_secret.as_deref()).await
            }
            Command::Backup(args) => {
                crate::backup::backup_command(&database, &global, &args, &dir).await
            }
            Command::Migrate { dry_run } => run_migrations(&database.admin_url, dry_run).await,
            Command::Seed { .. } => seed_demo(&database.admin_url).await,
            Command::Console {
                action: ConsoleAction::AddAdmin { email, link, url },
            } => add_admin(&database.admin_url, &email, link, url.as_deref()).await,
            Command::Embed {
                action: EmbedAction::Backfill { functions },
            } => embed_backfill(&database, &functions, &dir).await,
            Command::Import(args) => {
                crate::import::import_command(&database, &global, &args, &dir).await
            }
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
/// model files `auto` falls back to the lexical `hash` provider: `true` then (see
/// [`warn_hash_embeddings`]).
fn prefer_local_embeddings(
    f: &mut agencyflow_functions::FunctionsArgs,
    dir: &std::path::Path,
) -> bool {
    use agencyflow_functions::config::{EmbedProviderKind, LOCAL_MODEL};
    f.ai_auto_local = true;
    if f.ai_local_model_dir.is_none() {
        let in_data_dir = dir.join("models").join(LOCAL_MODEL);
        if in_data_dir.join("model.safetensors").is_file() {
            f.ai_local_model_dir = Some(in_data_dir);
        }
    }
    f.resolved_embed() == EmbedProviderKind::Hash && f.ai_embed_provider == EmbedProviderKind::Auto
}

fn warn_hash_embeddings(f: &agencyflow_functions::FunctionsArgs) {
    tracing::warn!(
        model_dir = %f.local_model_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "no local embedding model files (run scripts/setup or set AI_LOCAL_MODEL_DIR): without an API key, embeddings use the lexical `hash` provider"
    );
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
    if prefer_local_embeddings(&mut functions, dir) {
        warn_hash_embeddings(&functions);
    }
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

/// `agencyflow console add-admin EMAIL [--link]`: the password from standard input, or a
/// one-time setup link printed on the terminal.
async fn add_admin(
    admin_url: &str,
    email: &str,
    link: bool,
    url: Option<&str>,
) -> Result<(), RunError> {
    use std::io::IsTerminal;
    let mut client = agencyflow_db::connect_one(admin_url)
        .await
        .map_err(failed)?;
    migrate::apply(&mut client, &migrate::embedded(), |_| {})
        .await
        .map_err(failed)?;
    let password = if link || std::io::stdin().is_terminal() {
        None
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(failed)?;
        let p = line.trim_end_matches(['\r', '\n']).to_string();
        if p.is_empty() {
            return Err(failed("no password on standard input (or use --link)"));
        }
        Some(p)
    };
    let token = agencyflow_console::session::add_admin(&client, email, password)
        .await
        .map_err(failed)?;
    match token {
        Some(t) => {
            let base = url
                .filter(|u| !u.trim().is_empty())
                .unwrap_or("http://127.0.0.1:54321")
                .trim_end_matches('/');
            println!("operator {email}: set the password within 24 hours at");
            println!("  {base}/console/#setup={t}");
        }
        None => println!("operator {email}: password set"),
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

/// Builds the state for a database: pool, the in-database configuration, role settings,
/// which surfaces the database can serve, the schema cache and its reloader.
pub async fn build_state(
    api_url: &str,
    args: ServeArgs,
    keys: JwtKeys,
    vault_key: Option<String>,
) -> Result<AppState, RunError> {
    build_state_with(api_url, args, keys, vault_key, None).await
}

/// [`build_state`] whose pools follow the embedded cluster's supervisor (`health`): they
/// fail fast while it restarts PostgreSQL.
pub async fn build_state_with(
    api_url: &str,
    args: ServeArgs,
    keys: JwtKeys,
    vault_key: Option<String>,
    health: Option<ClusterHealth>,
) -> Result<AppState, RunError> {
    rest_settings(&args)?;
    args.storage
        .check()
        .map_err(|e| ConfigError::new("STORAGE_BACKEND", e))?;
    args.auth
        .check()
        .map_err(|(setting, e)| ConfigError::new(setting, e))?;
    // Every surface verifies with the auth settings: the accepted `aud`, the ES256 keys.
    let keys = args
        .auth
        .configure_keys(keys)
        .map_err(|e| ConfigError::new("GOTRUE_JWT_KEYS", e.to_string()))?;
    let db = Db::connect_with(api_url, args.pool_options())
        .map_err(failed)?
        .with_vault_key(vault_key)
        .with_search_path(args.db_extra_search_path.clone())
        .with_cluster_health(health.clone());
    // PostgREST's order: the database's pgrst.* settings win over flags and environment;
    // at start a bad one stops us (later reloads keep the running configuration).
    let (rest, from_db) = read_rest_runtime(&db, &args).await?;
    if !from_db.is_empty() {
        tracing::info!(
            settings = %crate::config::describe_db_settings(&args, &from_db),
            "PostgREST settings read from the database (pgrst.* of the login role; they win over flags and environment, PGRST_DB_CONFIG=false ignores them)"
        );
    }
    db.load_role_settings().await.map_err(failed)?;
    let surfaces = Availability::detect(&db)
        .await
        .map_err(|e| failed(format!("reading the catalog: {e}")))?;
    if let Some(line) = surfaces.summary() {
        tracing::warn!("{line}");
    }
    let auth_url = args
        .auth_database_url
        .clone()
        .unwrap_or_else(|| crate::config::with_user(api_url, "supabase_auth_admin"));
    let auth_db = Db::connect_with(
        &auth_url,
        agencyflow_db::PoolOptions {
            max_size: args.db_pool.min(10),
            ..args.pool_options()
        },
    )
    .map_err(failed)?
    .with_cluster_health(health.clone());
    // The auth login is only tried when first used: say now, once, if it cannot log in (a
    // database that wants a password for supabase_auth_admin), instead of 503s later.
    if surfaces.auth.is_empty() {
        if let Err(e) = auth_db.client().await {
            tracing::warn!(
                error = %e,
                "/auth/v1 cannot log in as supabase_auth_admin and will answer 503: set GOTRUE_DB_DATABASE_URL to that role's connection"
            );
        }
    }
    let mut args = args;
    if surfaces.functions.is_empty() {
        args.functions.fill_keys_from_vault(&db).await;
    }
    let settings = Settings {
        anon_key: api_key(&keys, "anon").map_err(failed)?,
        service_role_key: api_key(&keys, "service_role").map_err(failed)?,
        serve: args,
        rest,
    };
    let mut state = AppState::new(db.clone(), keys, settings);
    state.auth_db = auth_db;
    state.surfaces.set(surfaces);
    // Start-up fails loudly if the catalog cannot be read; later reloads only log.
    let schemas = state.rest().config.schemas.clone();
    state
        .schema_cache
        .load(&db, &schemas)
        .await
        .map_err(|e| failed(format!("loading the schema cache: {e}")))?;
    let realtime = agencyflow_realtime::Realtime::new(
        state.db.clone(),
        api_url,
        state.keys.clone(),
        state.rest().api_roles.clone(),
        state.settings.serve.realtime.clone(),
    );
    realtime.start();
    state.realtime = Some(realtime);
    crate::schema_cache::spawn_reloader(state.clone(), api_url.to_string());
    Ok(state)
}

/// [`schema_cache::read_rest_runtime`] with start-up's errors: a bad value is a
/// configuration error (exit 2), an unreadable catalog a failure.
async fn read_rest_runtime(
    db: &Db,
    args: &ServeArgs,
) -> Result<(crate::config::RestRuntime, Vec<(String, String)>), RunError> {
    match crate::schema_cache::read_rest_runtime(db, args).await {
        Ok(r) => Ok(r),
        Err(ReadError::Db(e)) => Err(failed(e)),
        Err(ReadError::Config(e)) => Err(e.into()),
    }
}

async fn serve(
    database: &Database,
    args: ServeArgs,
    keys: JwtKeys,
    dir: &std::path::Path,
    jwt_secret: Option<&str>,
) -> Result<(), RunError> {
    let started = std::time::Instant::now();
    if !args.no_migrate && database.migrate_on_serve {
        run_migrations_quiet(&database.admin_url).await?;
    } else if !args.no_migrate {
        tracing::info!("serving DATABASE_URL as it is: no migrations without MIGRATIONS_DATABASE_URL (the schema owner)");
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
    let hash_embeddings = prefer_local_embeddings(&mut args.functions, dir);
    let health = database.cluster.as_ref().map(|c| c.health());
    let mut state =
        build_state_with(&database.api_url, args, keys, Some(vault_key), health).await?;
    if state.settings.serve.console.enabled {
        let embedded = database.cluster.is_some() || database.shared.is_some();
        let b = crate::backup::console_backups(
            &state.settings.serve,
            &database.admin_url,
            embedded,
            jwt_secret,
            dir,
        )?;
        state.backups = Some(std::sync::Arc::new(b));
    }
    let functions_on = state.surfaces.get().functions.is_empty();
    if hash_embeddings && functions_on {
        warn_hash_embeddings(&state.settings.serve.functions);
    }
    // Runs while the functions' tables exist (not at all on a database without them), and
    // ends after its current job when `stop_worker` says so (shutdown).
    let (stop_worker, worker_stop) = tokio::sync::watch::channel(false);
    let embedding_worker = state
        .settings
        .serve
        .functions
        .ai_embed_worker
        .then(|| crate::surfaces::spawn_embedding_worker(&state, worker_stop));
    let mut metrics_at = None;
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
        let at = ml.local_addr().map_err(failed)?;
        tracing::info!(addr = %at, "metrics listening (no key)");
        metrics_at = Some(at);
        let metrics_app = app::metrics_router(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(ml, metrics_app).await;
        });
    }
    let mut signals = ShutdownSignals::new().map_err(failed)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| failed(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(failed)?;
    tracing::info!(addr = %local, ready_ms = started.elapsed().as_millis() as u64, "agencyflow listening");
    print_summary(&state, local, metrics_at, database, dir);

    // The listener keeps accepting while draining, so late requests get a 503 rather than
    // a refused connection; it closes once the requests in flight are done.
    let (close_listener, listener_closed) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(
            listener,
            app::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = listener_closed.await;
        })
        .into_future(),
    );
    tokio::select! {
        r = &mut server => {
            return match r {
                Ok(r) => r.map_err(failed),
                Err(e) => Err(failed(e)),
            };
        }
        _ = signals.recv() => {}
    }
    let drain = Duration::from_secs(state.settings.serve.drain_timeout);
    let deadline = Instant::now() + drain;
    let lifecycle = state.lifecycle.clone();
    lifecycle.start_draining();
    let _ = stop_worker.send(true);
    tracing::info!(
        in_flight = lifecycle.in_flight(),
        drain_timeout_s = drain.as_secs(),
        "shutdown signal received; refusing new requests, draining the ones in flight"
    );
    // A second signal (an impatient Ctrl-C) ends the wait.
    let mut deadline = deadline;
    tokio::select! {
        idle = lifecycle.wait_idle(deadline) => if !idle {
            tracing::warn!(
                in_flight = lifecycle.in_flight(),
                "drain timeout reached; ending the requests still in flight"
            );
        },
        _ = signals.recv() => {
            tracing::warn!(
                in_flight = lifecycle.in_flight(),
                "second shutdown signal; ending the requests still in flight"
            );
            deadline = Instant::now();
        }
    }
    let _ = close_listener.send(());
    // Responses still streaming get what is left of the drain time (at least a second).
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    };
    if tokio::time::timeout(left(), &mut server).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
        server.abort();
    }
    if let Some(mut worker) = embedding_worker {
        if tokio::time::timeout(left(), &mut worker).await.is_err() {
            tracing::warn!("the embedding worker's job outlasted the drain timeout; stopping it");
            worker.abort();
        }
    }
    tracing::info!("requests drained; stopping");
    Ok(())
}

/// What `supabase start` prints once it is up: where the API is, the keys (unless
/// `--quiet`), where the data lives. On stdout, after the log line "agencyflow listening".
fn print_summary(
    state: &AppState,
    local: SocketAddr,
    metrics_at: Option<SocketAddr>,
    database: &Database,
    dir: &std::path::Path,
) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let serve = &state.settings.serve;
    let mut shown = local;
    if shown.ip().is_unspecified() {
        shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let api = format!("http://{shown}");
    let mut out = String::from("\nagencyflow is running.\n\n");
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{label:>18}: {value}");
    };
    line("API URL", &api);
    if local.ip().is_unspecified() {
        line(
            "Listening on",
            &format!("every interface, port {}", local.port()),
        );
    }
    line("REST URL", &format!("{api}/rest/v1"));
    line("Auth URL", &format!("{api}/auth/v1"));
    line("Storage URL", &format!("{api}/storage/v1"));
    line("Functions URL", &format!("{api}/functions/v1"));
    line("Health URL", &format!("{api}/health"));
    match metrics_at {
        Some(m) => line("Metrics URL", &format!("http://{m}/metrics")),
        None => line("Metrics URL", &format!("{api}/metrics (service_role key)")),
    }
    match &database.cluster {
        Some(c) => {
            line(
                "DB URL",
                &format!(
                    "postgresql://postgres@/postgres?host={}&port={}",
                    c.socket_dir().display(),
                    c.port()
                ),
            );
            line(
                "Database",
                &format!("embedded PostgreSQL in {}", c.pgdata().display()),
            );
        }
        None => match &database.shared {
            Some((socket, port)) => line(
                "Database",
                &format!(
                    "the embedded PostgreSQL another agencyflow runs here (socket {}, port {port}; not supervised by this process)",
                    socket.display()
                ),
            ),
            None => line("Database", "DATABASE_URL (external)"),
        },
    }
    line("Data directory", &dir.display().to_string());
    let storage = &serve.storage;
    if storage.storage_backend == "s3" {
        line(
            "Storage",
            &format!(
                "S3 bucket {} at {}",
                storage.storage_s3_bucket.as_deref().unwrap_or("?"),
                storage.storage_s3_endpoint.as_deref().unwrap_or("AWS")
            ),
        );
    } else if let Some(d) = &storage.storage_dir {
        line("Storage", &format!("files in {}", d.display()));
    }
    let b = &serve.backup;
    match b.backup_every {
        Some(every) => line(
            "Backups",
            &format!(
                "every {}, newest {} kept, in {}",
                humanize_secs(every.as_secs()),
                b.backup_keep,
                b.backup_dir
                    .clone()
                    .unwrap_or_else(|| dir.join("backups"))
                    .display()
            ),
        ),
        None => line(
            "Backups",
            "none scheduled (--backup-every 24h; `agencyflow backup FILE` takes one now)",
        ),
    }
    if serve.quiet {
        line(
            "API keys",
            "hidden (--quiet); `agencyflow keys` prints them",
        );
    } else {
        line("anon key", &state.settings.anon_key);
        line("service_role key", &state.settings.service_role_key);
    }
    out.push('\n');
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
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

/// SIGTERM and SIGINT, caught from the moment this is made (before the server says it
/// listens, so a signal sent right after the summary is never the default, fatal one).
pub struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    ShutdownSignals::new()
        .expect("installing SIGTERM/SIGINT handlers")
        .recv()
        .await
}

/// `86400` → `1d`, `3600` → `1h`, `90` → `90s`: the largest whole unit.
fn humanize_secs(secs: u64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod summary_tests {
    #[test]
    fn intervals_print_in_their_largest_whole_unit() {
        assert_eq!(super::humanize_secs(86_400), "1d");
        assert_eq!(super::humanize_secs(7_200), "2h");
        assert_eq!(super::humanize_secs(90), "90s");
        assert_eq!(super::humanize_secs(1_800), "30m");
    }
}
