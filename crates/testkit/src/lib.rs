//! The test harness: one embedded PostgreSQL cluster per test process, a template database
//! migrated once, and a fresh `CREATE DATABASE ... TEMPLATE` copy for every test, so tests
//! run in parallel and never see each other's rows. `TestDb::spawn_app` runs the real
//! server on a random port against that database.
use std::path::PathBuf;
use std::sync::{mpsc, OnceLock};

use agencyflow_db::{migrate, ClaimsTxn, ClusterOptions, Db, EmbeddedCluster, TxSettings};
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use uuid::Uuid;

pub use agencyflow_db;
pub use agencyflow_server;

pub mod chaos;
pub mod keys;
pub mod oidc;
pub mod smtp;
pub mod tls;
pub mod wait;

/// A database shaped like the original hosted Supabase project (`agencyflow import`'s tests
/// and benchmark): see the file's header.
pub const IMPORT_FIXTURE_SQL: &str = include_str!("import_fixture.sql");

/// The JWT secret test servers sign with.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

struct Shared {
    socket_dir: PathBuf,
    port: u16,
    data_dir: PathBuf,
}

impl Shared {
    fn url(&self, user: &str, db: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={db}",
            self.socket_dir.display(),
            self.port
        )
    }
}

static CLUSTER: OnceLock<Shared> = OnceLock::new();
static TEMPLATE: OnceCell<()> = OnceCell::const_new();
const TEMPLATE_DB: &str = "agencyflow_template";

/// Removes data directories of earlier test processes that have ended.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("agencyflow-test-")
            .and_then(|p| p.parse::<i32>().ok())
        {
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Starts the process's cluster on a thread that lives as long as the process: the
/// postmaster is bound to it by PR_SET_PDEATHSIG, so it stops when the tests end.
fn cluster() -> &'static Shared {
    CLUSTER.get_or_init(|| {
        sweep_stale();
        let data_dir = std::env::temp_dir().join(format!("agencyflow-test-{}", std::process::id()));
        let (tx, rx) = mpsc::channel();
        let dir = data_dir.clone();
        std::thread::Builder::new()
            .name("test-postgres".into())
            .spawn(move || {
                let started = EmbeddedCluster::start(&ClusterOptions {
                    data_dir: dir,
                    bin_dir: None,
                    port: None,
                    ephemeral: true,
                    settings: Vec::new(),
                });
                match started {
                    Ok(c) => {
                        tx.send(Ok((c.socket_dir().to_path_buf(), c.port())))
                            .unwrap();
                        // Keep the cluster (and this thread) alive for the rest of the process.
                        let _keep = c;
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => tx.send(Err(e.to_string())).unwrap(),
                }
            })
            .expect("spawning the cluster thread");
        let (socket_dir, port) = rx
            .recv()
            .expect("cluster thread")
            .unwrap_or_else(|e| panic!("starting the test cluster: {e}"));
        Shared {
            socket_dir,
            port,
            data_dir,
        }
    })
}

/// The data directory of this process's test cluster.
pub fn cluster_data_dir() -> PathBuf {
    cluster().data_dir.clone()
}

/// A superuser URL to the cluster's `postgres` database.
pub fn cluster_admin_url() -> String {
    cluster().url("postgres", "postgres")
}

async fn ensure_template() {
    TEMPLATE
        .get_or_init(|| async {
            let c = cluster();
            let admin = agencyflow_db::connect_one(&c.url("postgres", "postgres")).await.expect("connect to test cluster");
            admin.batch_execute(&format!("drop database if exists {TEMPLATE_DB}")).await.expect("drop old template");
            admin.batch_execute(&format!("create database {TEMPLATE_DB}")).await.expect("create template");
            let mut client = agencyflow_db::connect_one(&c.url("postgres", TEMPLATE_DB)).await.expect("connect to template");
            migrate::apply(&mut client, &migrate::embedded(), |_| {}).await.unwrap_or_else(|e| panic!("migrating the template: {e}"));
            drop(client);
            // CREATE DATABASE ... TEMPLATE needs the template to have no connections.
            admin
                .execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()", &[&TEMPLATE_DB])
                .await
                .expect("closing template connections");
        })
        .await;
}

/// A fresh database for one test: a copy of the migrated template, dropped afterwards.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        ensure_template().await;
        let name = format!("t_{}", Uuid::new_v4().simple());
        let admin = agencyflow_db::connect_one(&cluster_admin_url())
            .await
            .expect("connect to test cluster");
        // Another test's clone may briefly hold the template: retry that, for a while.
        let (admin, sql) = (
            &admin,
            format!("create database {name} template {TEMPLATE_DB}"),
        );
        let sql = sql.as_str();
        wait::until(
            std::time::Duration::from_secs(60),
            "the template database to be free to clone",
            || async move {
                match admin.batch_execute(sql).await {
                    Ok(()) => true,
                    Err(e) if e.to_string().contains("being accessed") => false,
                    Err(e) => panic!("cloning the template: {e}"),
                }
            },
        )
        .await;
        TestDb { name }
    }

    /// An empty database (from `template0`: no agency schema, no roles' grants, nothing):
    /// a database agencyflow did not create, as a PostgREST user brings one. Dropped
    /// afterwards like any other. The cluster's roles (authenticator, anon, ...) exist, as on
    /// a PostgREST server: they are cluster-wide and made by the template's migrations, so the
    /// template is made first (alone in a process, as under nextest, nothing else had).
    pub async fn empty() -> TestDb {
        ensure_template().await;
        let name = format!("t_{}", Uuid::new_v4().simple());
        let admin = agencyflow_db::connect_one(&cluster_admin_url())
            .await
            .expect("connect to test cluster");
        admin
            .batch_execute(&format!("create database {name} template template0"))
            .await
            .unwrap_or_else(|e| panic!("creating an empty database: {e}"));
        TestDb { name }
    }

    /// A connection string to this database as `user` (Unix socket, trust).
    pub fn url_as(&self, user: &str) -> String {
        cluster().url(user, &self.name)
    }

    /// A superuser (postgres) connection string to this database.
    pub fn admin_url(&self) -> String {
        cluster().url("postgres", &self.name)
    }

    /// The API's login role (authenticator) connection string to this database.
    pub fn api_url(&self) -> String {
        cluster().url("authenticator", &self.name)
    }

    /// A TCP connection string to this database (password authentication: SCRAM-SHA-256).
    pub fn tcp_url(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={}",
            cluster().port,
            self.name
        )
    }

    /// The TCP address of the test cluster (what a [`chaos::ChaosProxy`] forwards to).
    pub fn tcp_addr() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], cluster().port))
    }

    /// As [`tcp_url`](Self::tcp_url), through `addr` (a [`chaos::ChaosProxy`]) instead of
    /// the cluster's own port.
    pub fn tcp_url_via(&self, addr: std::net::SocketAddr, user: &str, password: &str) -> String {
        format!(
            "host={} port={} user={user} password={password} dbname={}",
            addr.ip(),
            addr.port(),
            self.name
        )
    }

    /// A superuser client with `search_path = public, extensions`.
    pub async fn superuser(&self) -> agencyflow_db::tokio_postgres::Client {
        let c = agencyflow_db::connect_one(&self.admin_url())
            .await
            .expect("connect as superuser");
        c.batch_execute("set search_path = public, extensions")
            .await
            .expect("search_path");
        c
    }

    /// A pool connected as `authenticator`, the way the server connects.
    pub fn db(&self) -> Db {
        Db::connect(&self.api_url(), 4)
            .expect("pool")
            .with_vault_key(Some("test-vault-key-test-vault-key-0123456789".into()))
    }

    /// A transaction as an authenticated user (claims as Supabase Auth issues them).
    pub async fn as_user(&self, db: &Db, user_id: Uuid) -> ClaimsTxn {
        let claims = json!({ "sub": user_id, "role": "authenticated", "aud": "authenticated", "is_anonymous": false });
        self.as_claims(db, "authenticated", &claims).await
    }

    /// A transaction as a bare role (`anon`, `service_role`), claims `{"role": role}`.
    pub async fn as_role(&self, db: &Db, role: &str) -> ClaimsTxn {
        self.as_claims(db, role, &json!({ "role": role })).await
    }

    pub async fn as_claims(&self, db: &Db, role: &str, claims: &Value) -> ClaimsTxn {
        db.begin(&TxSettings::new(role, claims.to_string()))
            .await
            .expect("begin")
    }

    /// Starts the real server (router and state as `agencyflow serve` builds them) on a
    /// random port against this database.
    pub async fn spawn_app(&self) -> TestApp {
        self.spawn_app_with(&[]).await
    }

    /// As [`spawn_app`](Self::spawn_app), with extra `serve` flags.
    pub async fn spawn_app_with(&self, extra_args: &[&str]) -> TestApp {
        self.spawn_app_on(&self.api_url(), extra_args).await
    }

    /// As [`spawn_app_with`](Self::spawn_app_with), logging in as `api_url` (another login
    /// role than `authenticator`, as on a database of one's own).
    pub async fn spawn_app_on(&self, api_url: &str, extra_args: &[&str]) -> TestApp {
        spawn_app_at(api_url, extra_args).await
    }
}

/// The server on any database (`api_url`: its API login), as [`TestDb::spawn_app_with`]
/// does on a test database: for a cluster of a test's own.
pub async fn spawn_app_at(api_url: &str, extra_args: &[&str]) -> TestApp {
    use agencyflow_server::config::{Cli, Command};
    use clap::Parser;
    let mut args = vec![
        "agencyflow",
        "--jwt-secret",
        TEST_JWT_SECRET,
        "serve",
        "--port",
        "0",
    ];
    // A small pool keeps hundreds of parallel tests under max_connections; benches
    // pass their own `--db-pool`.
    if !extra_args.contains(&"--db-pool") {
        args.extend_from_slice(&["--db-pool", "4"]);
    }
    // Hundreds of tests share two cores: a request may wait long for one of its four
    // connections without anything being wrong.
    if !extra_args.contains(&"--db-pool-acquisition-timeout") {
        args.extend_from_slice(&["--db-pool-acquisition-timeout", "120"]);
    }
    // Likewise a request (an embedding on the local model, a big import) may take long
    // on loaded cores; outage tests pass their own short deadline.
    if !extra_args.contains(&"--request-timeout") {
        args.extend_from_slice(&["--request-timeout", "300"]);
    }
    args.extend_from_slice(extra_args);
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("test server flags: {e}"));
    let Command::Serve(serve) = cli.command else {
        unreachable!()
    };
    let keys = agencyflow_auth::JwtKeys::hs256(TEST_JWT_SECRET.as_bytes(), None);
    // The console's log tail sees this process's events (nothing is written anywhere).
    agencyflow_server::run::init_log_tail();
    let backup_dir = serve.backup.backup_dir.clone();
    let mut state = agencyflow_server::run::build_state(
        api_url,
        serve,
        keys.clone(),
        Some("test-vault-key-test-vault-key-0123456789".into()),
    )
    .await
    .unwrap_or_else(|e| panic!("building app state: {e}"));
    // With `--backup-dir`, the console's "take a backup now" backs this database up there
    // (as the schema owner, as `serve` does).
    if let Some(dir) = backup_dir {
        let admin = agencyflow_server::config::with_user(api_url, "postgres");
        let b = agencyflow_server::backup::console_backups(
            &state.settings.serve,
            &admin,
            false,
            Some(TEST_JWT_SECRET),
            &dir,
        )
        .unwrap_or_else(|e| panic!("console backups: {e}"));
        state.backups = Some(std::sync::Arc::new(b));
    }
    let anon_key = state.settings.anon_key.clone();
    let service_role_key = state.settings.service_role_key.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = agencyflow_server::router(state);
    tokio::spawn(async move {
        let _ = axum_serve(listener, app).await;
    });
    TestApp {
        base: format!("http://{addr}"),
        anon_key,
        service_role_key,
        keys,
        http: reqwest::Client::new(),
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let url = cluster_admin_url();
        // Drop on a thread of its own: Drop cannot await, and the test's runtime may be ending.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(c) = agencyflow_db::connect_one(&url).await {
                    // A database with a logical slot (realtime's postgres_changes) cannot be
                    // dropped: end its sessions, then drop its slots, then the database.
                    for _ in 0..40 {
                        let _ = c
                            .execute(
                                "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
                                &[&name],
                            )
                            .await;
                        let _ = c
                            .execute(
                                "select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = $1 and not active",
                                &[&name],
                            )
                            .await;
                        let left = c
                            .query_one(
                                "select count(*) from pg_replication_slots where database = $1",
                                &[&name],
                            )
                            .await
                            .map(|r| r.get::<_, i64>(0))
                            .unwrap_or(0);
                        if left == 0 {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    let _ = c
                        .batch_execute(&format!("drop database if exists {name} with (force)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A running server for HTTP tests.
pub struct TestApp {
    pub base: String,
    pub anon_key: String,
    pub service_role_key: String,
    pub keys: agencyflow_auth::JwtKeys,
    pub http: reqwest::Client,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A user access token as Supabase Auth would issue it, signed with the test secret.
    pub fn user_token(&self, user_id: Uuid) -> String {
        let now = chrono_now();
        self.keys
            .sign(&json!({ "sub": user_id, "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3600, "is_anonymous": false }))
            .expect("sign")
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl TestApp {
    /// Runs one file of the supabase-js end-to-end suite (`e2e/<file>`, Node's test runner)
    /// against this server and fails the test with Node's output when it fails.
    pub async fn run_node_test(&self, file: &str) {
        self.run_node_test_with_env(file, &[]).await
    }

    /// As [`run_node_test`](Self::run_node_test), with extra environment variables (user
    /// tokens, ids) for the test file.
    pub async fn run_node_test_with_env(&self, file: &str, env: &[(&str, &str)]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e");
        assert!(
            dir.join("node_modules/@supabase/supabase-js").is_dir(),
            "e2e/node_modules is missing: run `npm ci --prefix e2e` (./run test does it)"
        );
        let out = tokio::process::Command::new("node")
            .arg("--test")
            .arg("--test-reporter=spec")
            .arg(file)
            .current_dir(&dir)
            .env("SUPABASE_URL", &self.base)
            .env("SUPABASE_ANON_KEY", &self.anon_key)
            .env("SUPABASE_SERVICE_ROLE_KEY", &self.service_role_key)
            .env("NODE_NO_WARNINGS", "1")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output()
            .await
            .expect("running node (is Node.js installed?)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "node --test {file} failed:\n{stdout}\n{stderr}"
        );
    }
}
