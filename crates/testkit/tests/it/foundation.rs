//! Foundation: the embedded cluster's lifecycle, the migrations runner, the claims
//! transaction and /health.
use std::path::Path;
use std::time::Duration;

use agencyflow_db::migrate::{self, MigrateError, Migration, State};
use agencyflow_db::{
    ClusterOptions, Db, DbState, EmbeddedCluster, RestartPolicy, SupervisedCluster, TxSettings,
};
use agencyflow_testkit::{cluster_admin_url, TestDb};
use uuid::Uuid;

fn opts(dir: &Path) -> ClusterOptions {
    ClusterOptions {
        data_dir: dir.to_path_buf(),
        bin_dir: None,
        port: None,
        ephemeral: true,
        settings: Vec::new(),
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes; only a running process counts.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.split_whitespace().nth(2).is_none_or(|st| st != "Z"),
        Err(_) => false,
    }
}

/// The processes whose parent is `pid` (a postmaster's backends and workers).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                // `pid (comm) state ppid ...`: the fields after the last ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

fn cluster_dir() -> tempfile::TempDir {
    // The cluster runs as `postgres` when we are root: it must reach the directory.
    let d = tempfile::Builder::new()
        .prefix("agencyflow-lifecycle-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    d
}

async fn select_one(c: &EmbeddedCluster) -> i32 {
    let client = agencyflow_db::connect_one(&c.url("postgres", "postgres"))
        .await
        .unwrap();
    client.query_one("select 1", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "current_thread")]
async fn cluster_first_start_restart_and_clean_stop() {
    let dir = cluster_dir();
    let mut c = EmbeddedCluster::start(&opts(dir.path())).unwrap();
    assert!(dir.path().join("pg/PG_VERSION").is_file(), "initdb ran");
    assert!(
        !dir.path().join("pg.initdb").exists(),
        "no half-made cluster left"
    );
    assert_eq!(select_one(&c).await, 1);
    let client = agencyflow_db::connect_one(&c.url("postgres", "postgres"))
        .await
        .unwrap();
    let preload: String = client
        .query_one("show shared_preload_libraries", &[])
        .await
        .unwrap()
        .get(0);
    assert!(preload.contains("pg_stat_statements"));
    let enc: String = client
        .query_one(
            "select pg_encoding_to_char(encoding) from pg_database where datname = 'postgres'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(enc, "UTF8");
    client
        .batch_execute("create table kept (x int); insert into kept values (42)")
        .await
        .unwrap();
    drop(client);
    let pid = c.pid().unwrap();
    c.stop();
    assert!(!alive(pid), "postmaster {pid} still running after stop");
    assert!(!dir.path().join("pg/postmaster.pid").exists());

    // Restart on the existing data directory: no initdb, data kept.
    let c2 = EmbeddedCluster::start(&opts(dir.path())).unwrap();
    let client = agencyflow_db::connect_one(&c2.url("postgres", "postgres"))
        .await
        .unwrap();
    let x: i32 = client
        .query_one("select x from kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 42);
}

#[tokio::test(flavor = "current_thread")]
async fn cluster_recovers_from_a_crash_and_a_stale_pid_file() {
    let dir = cluster_dir();
    let mut c = EmbeddedCluster::start(&opts(dir.path())).unwrap();
    let pid = c.pid().unwrap();
    let backends = children_of(pid);
    assert!(!backends.is_empty(), "the postmaster has its processes");
    // Crash: SIGKILL the postmaster, leaving postmaster.pid behind.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "the killed postmaster to die",
        Duration::from_secs(10),
        || !alive(pid),
    );
    c.stop(); // reaps the child
    assert!(
        dir.path().join("pg/postmaster.pid").exists(),
        "crash leaves the pid file"
    );
    // The orphaned processes end once they notice the postmaster is gone.
    wait_for(
        "the orphaned PostgreSQL processes to end",
        Duration::from_secs(30),
        || backends.iter().all(|p| !alive(*p)),
    );
    let mut c = EmbeddedCluster::start(&opts(dir.path())).unwrap();
    assert_eq!(select_one(&c).await, 1);
    c.stop();

    // A pid file naming a process that is not our postgres (pid reuse) is stale too.
    let pidfile = dir.path().join("pg/postmaster.pid");
    std::fs::write(
        &pidfile,
        format!(
            "{}\n{}\n",
            std::process::id(),
            dir.path().join("pg").display()
        ),
    )
    .unwrap();
    let c = EmbeddedCluster::start(&opts(dir.path())).unwrap();
    assert_eq!(select_one(&c).await, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_running_cluster_is_not_started_twice() {
    let dir = cluster_dir();
    let c = EmbeddedCluster::start(&opts(dir.path())).unwrap();
    let second = EmbeddedCluster::start(&opts(dir.path()));
    assert!(
        matches!(
            second,
            Err(agencyflow_db::ClusterError::AlreadyRunning { .. })
        ),
        "second start must refuse"
    );
    assert_eq!(select_one(&c).await, 1);
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Polls `cond` every 20 ms; fails after `within`.
fn wait_for(what: &str, within: Duration, cond: impl FnMut() -> bool) {
    agencyflow_testkit::wait::until_blocking(within, what, cond)
}

fn policy(delay_ms: u64) -> RestartPolicy {
    RestartPolicy {
        max_attempts: 3,
        initial_delay: Duration::from_millis(delay_ms),
        max_delay: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn supervised_cluster_restarts_a_killed_postmaster_and_keeps_committed_data() {
    let dir = cluster_dir();
    let mut c = SupervisedCluster::start(&opts(dir.path()), policy(100)).unwrap();
    let health = c.health();
    assert_eq!(health.state(), DbState::Up);
    let client = agencyflow_db::connect_one(&c.url("postgres", "postgres"))
        .await
        .unwrap();
    // The test cluster commits asynchronously; this commit waits for its WAL.
    client
        .batch_execute(
            "set synchronous_commit = on; create table kept (x int); insert into kept values (42)",
        )
        .await
        .unwrap();
    let first = c.pid().unwrap();
    sigkill(first);
    wait_for("the restart", Duration::from_secs(60), || {
        health.restarts() == 1 && health.is_up()
    });
    let second = c.pid().expect("a new postmaster");
    assert_ne!(second, first);
    assert!(!alive(first));
    // Crash recovery replayed the WAL; the connection string is unchanged.
    let client = agencyflow_db::connect_one(&c.url("postgres", "postgres"))
        .await
        .unwrap();
    let x: i32 = client
        .query_one("select x from kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 42);
    drop(client);
    c.stop();
    assert!(
        !alive(second),
        "postmaster {second} still running after stop"
    );
    assert_eq!(health.state(), DbState::Stopped);
    assert!(
        !dir.path().join("pg/postmaster.pid").exists(),
        "a clean stop"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn stopping_a_supervised_cluster_ends_a_restart_in_progress() {
    let dir = cluster_dir();
    // A restart that would wait a minute: stop must not.
    let mut c = SupervisedCluster::start(&opts(dir.path()), policy(60_000)).unwrap();
    let health = c.health();
    let pid = c.pid().unwrap();
    sigkill(pid);
    wait_for(
        "the restart to begin",
        Duration::from_secs(10),
        || matches!(health.state(), DbState::Restarting { ref cause } if cause.contains("SIGKILL")),
    );
    assert!(c.pid().is_none(), "no postmaster while restarting");
    let t = std::time::Instant::now();
    c.stop();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(health.state(), DbState::Stopped);
    assert_eq!(health.restarts(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn with_restarts_disabled_a_dead_postmaster_leaves_the_cluster_failed() {
    let dir = cluster_dir();
    let mut c = SupervisedCluster::start(&opts(dir.path()), RestartPolicy::never()).unwrap();
    let health = c.health();
    sigkill(c.pid().unwrap());
    wait_for(
        "the failure",
        Duration::from_secs(10),
        || matches!(health.state(), DbState::Failed { ref reason } if reason.contains("restarts are disabled")),
    );
    assert!(!health.is_up());
    // A pool on it fails fast, whatever its timeouts.
    let db = Db::connect(&c.url("postgres", "postgres"), 1)
        .unwrap()
        .with_cluster_health(Some(health.clone()));
    let t = std::time::Instant::now();
    assert!(matches!(
        db.ping().await,
        Err(agencyflow_db::DbError::Unavailable(_))
    ));
    assert!(t.elapsed() < Duration::from_secs(1));
    c.stop();
}

/// An empty database (no migrations) in the shared test cluster.
async fn empty_database() -> (String, impl Drop) {
    struct Dropper(String);
    impl Drop for Dropper {
        fn drop(&mut self) {
            let name = self.0.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(c) = agencyflow_db::connect_one(&cluster_admin_url()).await {
                        let _ = c
                            .batch_execute(&format!("drop database if exists {name} with (force)"))
                            .await;
                    }
                })
            })
            .join();
        }
    }
    let t = TestDb::new().await; // makes sure the cluster runs
    drop(t);
    let name = format!("m_{}", Uuid::new_v4().simple());
    let admin = agencyflow_db::connect_one(&cluster_admin_url())
        .await
        .unwrap();
    admin
        .batch_execute(&format!("create database {name}"))
        .await
        .unwrap();
    let url = cluster_admin_url().replace("dbname=postgres", &format!("dbname={name}"));
    (url, Dropper(name))
}

fn m(file: &str, sql: &str) -> Migration {
    Migration::new(file, sql.to_string()).unwrap()
}

#[tokio::test]
async fn migrations_apply_in_order_once_and_refuse_edits() {
    let (url, _guard) = empty_database().await;
    let mut c = agencyflow_db::connect_one(&url).await.unwrap();
    // Given out of order: the runner sorts by version through the ledger check, and the
    // second depends on the first.
    let list = vec![
        m(
            "20260101000001_a.sql",
            "create table a (id int primary key)",
        ),
        m(
            "20260101000002_b.sql",
            "create table b (a_id int references a)",
        ),
    ];
    let mut seen = Vec::new();
    let applied = migrate::apply(&mut c, &list, |m| seen.push(m.version.clone()))
        .await
        .unwrap();
    assert_eq!(applied.len(), 2);
    assert_eq!(seen, ["20260101000001", "20260101000002"]);
    let rows = c.query("select version, name, checksum, statements from supabase_migrations.schema_migrations order by version", &[]).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, String>(1), "a");
    assert_eq!(rows[0].get::<_, String>(2), list[0].checksum);
    assert_eq!(
        rows[0].get::<_, Vec<String>>(3),
        vec!["create table a (id int primary key)".to_string()]
    );

    // Idempotent: nothing pending, nothing applied again.
    assert!(migrate::apply(&mut c, &list, |_| {})
        .await
        .unwrap()
        .is_empty());
    assert!(migrate::status(&c, &list)
        .await
        .unwrap()
        .iter()
        .all(|(_, s)| *s == State::Applied));

    // A new file is pending (what `migrate --dry-run` lists).
    let mut more = list.clone();
    more.push(m("20260101000003_c.sql", "create table c (x int)"));
    let st = migrate::status(&c, &more).await.unwrap();
    assert_eq!(
        st.iter()
            .filter(|(_, s)| *s == State::Pending)
            .map(|(m, _)| m.file_name())
            .collect::<Vec<_>>(),
        ["20260101000003_c.sql"]
    );

    // An applied file that changed is refused, naming the file.
    let edited = vec![
        m(
            "20260101000001_a.sql",
            "create table a (id bigint primary key)",
        ),
        list[1].clone(),
    ];
    let err = migrate::apply(&mut c, &edited, |_| {}).await.unwrap_err();
    assert!(matches!(err, MigrateError::Changed { .. }));
    assert!(err.to_string().contains("20260101000001_a.sql"), "{err}");
}

#[tokio::test]
async fn a_failed_migration_is_rolled_back_and_not_recorded() {
    let (url, _guard) = empty_database().await;
    let mut c = agencyflow_db::connect_one(&url).await.unwrap();
    let list = vec![
        m("20260101000001_ok.sql", "create table ok (x int)"),
        m(
            "20260101000002_bad.sql",
            "create table half (x int); insert into half values (1); select no_such_function();",
        ),
        m("20260101000003_after.sql", "create table after_bad (x int)"),
    ];
    let err = migrate::apply(&mut c, &list, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("20260101000002_bad.sql"), "{err}");
    let exists = |t: &'static str| {
        let c = &c;
        async move {
            c.query_one("select to_regclass($1) is not null", &[&t])
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(exists("ok").await);
    assert!(
        !exists("half").await,
        "the failed migration's work must be rolled back"
    );
    assert!(!exists("after_bad").await, "nothing after a failure runs");
    let versions: Vec<String> = c
        .query(
            "select version from supabase_migrations.schema_migrations",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, ["20260101000001"]);
}

async fn ledger(c: &agencyflow_db::tokio_postgres::Client) -> Vec<(String, i64)> {
    c.query(
        "select version, count(*) from supabase_migrations.schema_migrations group by version order by version",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

async fn table_exists(c: &agencyflow_db::tokio_postgres::Client, t: &str) -> bool {
    c.query_one("select to_regclass($1) is not null", &[&t])
        .await
        .unwrap()
        .get(0)
}

/// Polls (with a deadline) until backend `pid` waits for a lock that `lock` (a `pg_locks`
/// condition) describes.
async fn wait_until_blocked(admin: &agencyflow_db::tokio_postgres::Client, pid: i32, lock: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let sql =
        format!("select exists (select 1 from pg_locks where pid = $1 and not granted and {lock})");
    loop {
        let waiting: bool = admin.query_one(&sql, &[&pid]).await.unwrap().get(0);
        if waiting {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runner never blocked on {lock}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `migrate::apply` on a connection of its own; returns its backend pid and the task.
async fn spawn_runner(
    url: &str,
    list: &[Migration],
) -> (
    i32,
    tokio::task::JoinHandle<Result<Vec<Migration>, MigrateError>>,
) {
    let mut runner = agencyflow_db::connect_one(url).await.unwrap();
    let pid: i32 = runner
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let list = list.to_vec();
    let task = tokio::spawn(async move { migrate::apply(&mut runner, &list, |_| {}).await });
    (pid, task)
}

/// Terminates backend `pid` (as when the process dies) and waits for its runner's error.
async fn kill_runner(
    admin: &agencyflow_db::tokio_postgres::Client,
    pid: i32,
    task: tokio::task::JoinHandle<Result<Vec<Migration>, MigrateError>>,
) -> MigrateError {
    let killed: bool = admin
        .query_one("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the killed runner returns")
        .unwrap()
        .unwrap_err()
}

/// A runner that dies in the middle of a migration (its backend terminated, as when the
/// process is killed or the connection drops) leaves the database at the last migration it
/// committed: the interrupted one left no object and no ledger row, whether it died inside
/// the file's SQL or after it, before its ledger row; the next run applies it and the rest,
/// once.
#[tokio::test]
async fn a_run_killed_mid_migration_keeps_what_committed_and_the_next_run_finishes() {
    let (url, _guard) = empty_database().await;
    let admin = agencyflow_db::connect_one(&url).await.unwrap();
    // The test holds advisory lock 4242; the second migration waits for it half-way through.
    admin
        .execute("select pg_advisory_lock(4242)", &[])
        .await
        .unwrap();
    let list = vec![
        m("20260101000001_first.sql", "create table first_t (x int)"),
        m(
            "20260101000002_blocks.sql",
            "create table partial_t (x int); insert into partial_t values (1); \
             select pg_advisory_xact_lock(4242); create table partial_after (x int);",
        ),
        m("20260101000003_third.sql", "create table third_t (x int)"),
    ];
    let only_first_applied = || async {
        assert_eq!(ledger(&admin).await, [("20260101000001".to_string(), 1)]);
        assert!(table_exists(&admin, "first_t").await);
        for partial in ["partial_t", "partial_after", "third_t"] {
            assert!(
                !table_exists(&admin, partial).await,
                "{partial} must not exist"
            );
        }
        let pending: Vec<String> = migrate::status(&admin, &list)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, s)| *s == State::Pending)
            .map(|(m, _)| m.version)
            .collect();
        assert_eq!(pending, ["20260101000002", "20260101000003"]);
    };

    // 1. Killed inside the second file's SQL.
    let (pid, run) = spawn_runner(&url, &list).await;
    wait_until_blocked(&admin, pid, "locktype = 'advisory' and objid = 4242").await;
    let err = kill_runner(&admin, pid, run).await;
    assert!(
        err.to_string().contains("20260101000002_blocks.sql"),
        "{err}"
    );
    only_first_applied().await;

    // 2. Killed after the second file's SQL ran in full, before its ledger row was written:
    // the test lets the SQL finish while holding the ledger in SHARE mode.
    let (pid, run) = spawn_runner(&url, &list).await;
    wait_until_blocked(&admin, pid, "locktype = 'advisory' and objid = 4242").await;
    admin
        .batch_execute(
            "begin; lock table supabase_migrations.schema_migrations in share mode; \
             select pg_advisory_unlock(4242);",
        )
        .await
        .unwrap();
    wait_until_blocked(
        &admin,
        pid,
        "relation = 'supabase_migrations.schema_migrations'::regclass",
    )
    .await;
    let err = kill_runner(&admin, pid, run).await;
    assert!(
        err.to_string().contains("20260101000002_blocks.sql"),
        "{err}"
    );
    admin.batch_execute("rollback").await.unwrap();
    only_first_applied().await;

    // 3. The next start finishes the job (the dead sessions' runner lock went with them).
    let mut again = agencyflow_db::connect_one(&url).await.unwrap();
    let applied = tokio::time::timeout(
        Duration::from_secs(60),
        migrate::apply(&mut again, &list, |_| {}),
    )
    .await
    .expect("the next run is not blocked by the dead ones")
    .unwrap();
    assert_eq!(
        applied
            .iter()
            .map(|m| m.version.as_str())
            .collect::<Vec<_>>(),
        ["20260101000002", "20260101000003"]
    );
    assert_eq!(
        ledger(&admin).await,
        list.iter()
            .map(|m| (m.version.clone(), 1))
            .collect::<Vec<_>>()
    );
    let rows: i64 = admin
        .query_one("select count(*) from partial_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "the interrupted migration ran once in full");
    assert!(table_exists(&admin, "partial_after").await);
    assert!(table_exists(&admin, "third_t").await);
}

/// Runners starting together on one empty database (several servers, or `migrate` next to
/// `serve`) apply each migration exactly once, and none of them fails: the advisory lock
/// serialises them and each re-reads the ledger once it holds it.
#[tokio::test]
async fn concurrent_runners_apply_each_migration_exactly_once() {
    let (url, _guard) = empty_database().await;
    // `create table` without `if not exists`: a second application would fail.
    let list: Vec<Migration> = (1..=4)
        .map(|i| {
            m(
                &format!("2026010100000{i}_m{i}.sql"),
                &format!(
                    "create table c{i} (x int); insert into c{i} values (1); select pg_sleep(0.05);"
                ),
            )
        })
        .collect();
    const RUNNERS: usize = 4;
    let mut clients = Vec::new();
    for _ in 0..RUNNERS {
        clients.push(agencyflow_db::connect_one(&url).await.unwrap());
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(RUNNERS));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let list = list.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                migrate::apply(&mut c, &list, |_| {}).await
            })
        })
        .collect();
    let mut applied = Vec::new();
    for t in tasks {
        let done = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a runner failed: {e}"));
        applied.extend(done.into_iter().map(|m| m.version));
    }
    applied.sort();
    let versions: Vec<String> = list.iter().map(|m| m.version.clone()).collect();
    assert_eq!(
        applied, versions,
        "each migration applied by exactly one runner"
    );
    let admin = agencyflow_db::connect_one(&url).await.unwrap();
    assert_eq!(
        ledger(&admin).await,
        versions.iter().map(|v| (v.clone(), 1)).collect::<Vec<_>>()
    );
    for i in 1..=4 {
        let n: i64 = admin
            .query_one(&format!("select count(*) from c{i}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "c{i}");
    }

    // The same with the real migrations: two servers starting on one new database.
    let (url, _guard2) = empty_database().await;
    let mut a = agencyflow_db::connect_one(&url).await.unwrap();
    let mut b = agencyflow_db::connect_one(&url).await.unwrap();
    let real = migrate::embedded();
    let (ra, rb) = tokio::join!(
        migrate::apply(&mut a, &real, |_| {}),
        migrate::apply(&mut b, &real, |_| {})
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.len() + rb.len(), real.len(), "each applied once");
    assert_eq!(
        ledger(&a).await,
        real.iter()
            .map(|m| (m.version.clone(), 1))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_real_migrations_are_all_recorded_with_checksums() {
    let t = TestDb::new().await;
    let c = t.superuser().await;
    let n: i64 = c
        .query_one(
            "select count(*) from supabase_migrations.schema_migrations where checksum is not null",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, migrate::embedded().len());
    for role in ["anon", "authenticated", "service_role", "authenticator"] {
        let r = c
            .query_one(
                "select rolbypassrls, rolcanlogin, rolinherit from pg_roles where rolname = $1",
                &[&role],
            )
            .await
            .unwrap();
        let (bypass, login, inherit): (bool, bool, bool) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(bypass, role == "service_role", "{role} bypassrls");
        assert_eq!(login, role == "authenticator", "{role} login");
        if role == "authenticator" {
            assert!(!inherit, "authenticator must be NOINHERIT");
        }
    }
    let ext: Vec<(String, String)> = c
        .query("select e.extname::text, n.nspname::text from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname <> 'plpgsql'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for want in ["vector", "pgcrypto", "uuid-ossp", "pg_stat_statements"] {
        assert!(
            ext.iter().any(|(e, s)| e == want && s == "extensions"),
            "{want} must be installed in schema extensions: {ext:?}"
        );
    }
}

#[tokio::test]
async fn claims_transaction_sets_role_and_claims_only_inside() {
    let t = TestDb::new().await;
    // One connection, so the check afterwards runs on the very connection the transaction used.
    let db = Db::connect(&t.api_url(), 1).unwrap();
    let user = Uuid::new_v4();
    let mut tx = t.as_user(&db, user).await;
    let row = tx
        .query_one(
            "select auth.uid(), auth.role(), current_user::text, auth.jwt() ->> 'aud'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), Some(user));
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("authenticated")
    );
    assert_eq!(row.get::<_, String>(2), "authenticated");
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("authenticated")
    );
    tx.commit().await.unwrap();

    // Outside a request transaction the same connection sees nothing.
    let client = db.client().await.unwrap();
    let who: String = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        who, "authenticator",
        "the role switch must not outlive the transaction"
    );
    client
        .batch_execute("set role authenticated")
        .await
        .unwrap();
    let uid: Option<Uuid> = client
        .query_one("select auth.uid()", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("reset role").await.unwrap();
    assert_eq!(uid, None, "claims must not outlive the transaction");
}

#[tokio::test]
async fn claims_transaction_keeps_the_sqlstate_and_rolls_back() {
    let t = TestDb::new().await;
    let db = t.db();
    let mut tx = db
        .begin(&TxSettings::new(
            "service_role",
            r#"{"role":"service_role"}"#,
        ))
        .await
        .unwrap();
    tx.execute("create temp table scratch (x int)", &[])
        .await
        .unwrap();
    let err = tx.query("select 1/0", &[]).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("22012"));
    drop(tx);
    // Read-only transactions refuse writes with 25006.
    let mut tx = db
        .begin(&TxSettings::new("service_role", "{}").read_only(true))
        .await
        .unwrap();
    let err = tx
        .execute("create temp table nope (x int)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("25006"));
}

#[tokio::test]
async fn health_is_200_with_a_database_and_503_without() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let r = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    // The same server over a database that is gone.
    let app = t.spawn_app().await;
    let down = Db::connect(
        "host=127.0.0.1 port=1 user=nobody dbname=none connect_timeout=1",
        1,
    )
    .unwrap();
    let state = agencyflow_testkit::agencyflow_server::AppState::new(
        down,
        app.keys.clone(),
        state_settings(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            agencyflow_testkit::agencyflow_server::router(state),
        )
        .await
    });
    let r = app
        .http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
}

fn state_settings() -> agencyflow_testkit::agencyflow_server::Settings {
    use agencyflow_testkit::agencyflow_server::config::{rest_runtime, Cli, Command};
    use clap::Parser;
    let cli = Cli::try_parse_from(["agencyflow", "serve"]).unwrap();
    let Command::Serve(serve) = cli.command else {
        unreachable!()
    };
    agencyflow_testkit::agencyflow_server::Settings {
        rest: rest_runtime(&serve).unwrap(),
        serve,
        anon_key: String::new(),
        service_role_key: String::new(),
    }
}

#[tokio::test]
async fn metrics_count_requests_per_surface_in_prometheus_format() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    for _ in 0..3 {
        assert_eq!(
            app.http
                .get(app.url("/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    // A gated request without a key: a 4xx on the rest surface.
    assert_eq!(
        app.http
            .get(app.url("/rest/v1/clients"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Without the service_role key /metrics is refused (and the anon key is not enough).
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .get(app.url("/metrics"))
        .header("apikey", &app.anon_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .get(app.url("/metrics"))
        .header("apikey", &app.service_role_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("agencyflow_http_requests_total{surface=\"health\",status=\"2xx\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("agencyflow_http_requests_total{surface=\"rest\",status=\"4xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("agencyflow_http_request_duration_seconds_count{surface=\"health\"} 3"),
        "{text}"
    );
    for pool in ["transactions", "reads"] {
        assert!(
            text.contains(&format!(
                "agencyflow_db_pool_connections{{pool=\"{pool}\",state=\"max\"}} 4"
            )),
            "{text}"
        );
        // A gauge of this moment: background work (the embedding worker, realtime) may be
        // waiting for a connection just then, so only its presence and form are checked.
        let waiting = format!("agencyflow_db_pool_waiting{{pool=\"{pool}\"}} ");
        assert!(
            text.lines().any(|l| l
                .strip_prefix(&waiting)
                .is_some_and(|n| n.parse::<u64>().is_ok())),
            "{text}"
        );
    }
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
}

#[tokio::test]
async fn query_cached_prepares_a_shape_once_per_connection() {
    let t = TestDb::new().await;
    // One connection, so both transactions run on it.
    let db = Db::connect(&t.api_url(), 1).unwrap();
    let sql = "select $1::int + 1 as n, auth.uid()::text as who";
    let user = Uuid::new_v4();
    for (i, expected) in [(1, 2), (41, 42)] {
        let tx = t.as_user(&db, user).await;
        let rows = tx
            .query_cached_and_commit(sql, &[Some(i.to_string())])
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, i32>(0), expected);
        assert_eq!(
            rows[0].get::<_, Option<String>>(1),
            Some(user.to_string()),
            "claims are set before the statement"
        );
    }
    let mut tx = t.as_role(&db, "service_role").await;
    let prepared: i64 = tx
        .query_one(
            "select count(*) from pg_prepared_statements where statement = $1",
            &[&sql],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(prepared, 1, "the statement is prepared once and reused");
    // A failing cached statement leaves nothing open: the pipelined COMMIT rolls back.
    drop(tx);
    let tx = t.as_user(&db, user).await;
    let err = tx
        .query_cached_and_commit("select 1 / $1::int", &[Some("0".into())])
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("22012"));
    let mut tx = t.as_role(&db, "service_role").await;
    let n: i64 = tx.query_one("select 1::bigint", &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "the connection is usable after the failure");
}

/// `Db::query_and_commit`: the settings and one statement under one Sync.
fn settings_for(user: Uuid) -> TxSettings {
    let claims = serde_json::json!({ "sub": user, "role": "authenticated" });
    TxSettings::new("authenticated", claims.to_string())
}

#[tokio::test]
async fn one_sync_requests_set_claims_first_prepare_once_and_leave_nothing_behind() {
    let t = TestDb::new().await;
    // One connection, so every request below runs on it.
    let db = Db::connect(&t.api_url(), 1).unwrap();
    let sql = "select $1::int + 1 as n, auth.uid()::text as who, current_user::text as role,
                      current_setting('request.method', true) as method,
                      current_setting('transaction_read_only') as ro,
                      (select count(*) from pg_prepared_statements) as prepared";
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let first = db
        .query_and_commit(
            &settings_for(a).guc("request.method", "GET").read_only(true),
            sql,
            &[Some("41".into())],
        )
        .await
        .unwrap();
    assert_eq!(
        &*first.columns,
        ["n", "who", "role", "method", "ro", "prepared"].map(String::from)
    );
    let row = &first.rows[0];
    assert_eq!(row[0].as_deref(), Some("42"));
    assert_eq!(
        row[1],
        Some(a.to_string()),
        "claims are set before the statement"
    );
    assert_eq!(row[2].as_deref(), Some("authenticated"));
    assert_eq!(row[3].as_deref(), Some("GET"));
    assert_eq!(
        row[4].as_deref(),
        Some("on"),
        "read-only requests run read only"
    );
    // Same connection, other settings: nothing of the first request's is left, and the
    // statement is not prepared again.
    let second = db
        .query_and_commit(&settings_for(b), sql, &[None])
        .await
        .unwrap();
    let row2 = &second.rows[0];
    assert_eq!(row2[0], None, "NULL parameters");
    assert_eq!(row2[1], Some(b.to_string()));
    // (A reverted custom setting reads as '' rather than NULL.)
    assert_eq!(
        row2[3].as_deref().unwrap_or(""),
        "",
        "request GUCs are local to their transaction"
    );
    assert_eq!(row2[4].as_deref(), Some("off"));
    assert_eq!(
        row2[5], row[5],
        "prepared once per connection: {row:?} / {row2:?}"
    );
}

#[tokio::test]
async fn one_sync_requests_commit_or_roll_back_as_one_and_recover() {
    let t = TestDb::new().await;
    let su = t.superuser().await;
    su.batch_execute(
        "create table public.pipe_t (v int primary key);
         grant select, insert on public.pipe_t to service_role;",
    )
    .await
    .unwrap();
    let db = Db::connect(&t.api_url(), 1).unwrap();
    let svc = || TxSettings::new("service_role", r#"{"role":"service_role"}"#);
    let insert = "insert into public.pipe_t values ($1::int) returning v";
    // A write that succeeds is committed at the Sync.
    let rows = db
        .query_and_commit(&svc(), insert, &[Some("1".into())])
        .await
        .unwrap();
    assert_eq!(rows.rows[0][0].as_deref(), Some("1"));
    // A failing statement: PostgreSQL's error, nothing written, connection still usable.
    let err = db
        .query_and_commit(&svc(), insert, &[Some("1".into())])
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("23505"));
    let err = db
        .query_and_commit(&svc().read_only(true), insert, &[Some("2".into())])
        .await
        .unwrap_err();
    assert_eq!(
        err.sqlstate(),
        Some("25006"),
        "read-only requests cannot write"
    );
    // A statement that fails to parse is not kept; the next one prepares fine.
    let err = db
        .query_and_commit(&svc(), "select nope from public.pipe_t", &[])
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("42703"));
    // A settings failure (a role the login role may not become) stops the statement.
    let err = db
        .query_and_commit(
            &TxSettings::new("postgres", "{}"),
            insert,
            &[Some("3".into())],
        )
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("42501"));
    // A request abandoned halfway (its future dropped) does not poison the pool.
    let settings = svc();
    let slow = db.query_and_commit(&settings, "select pg_sleep(2)", &[]);
    assert!(tokio::time::timeout(Duration::from_millis(200), slow)
        .await
        .is_err());
    let rows = db
        .query_and_commit(&svc(), "select count(*) from public.pipe_t", &[])
        .await
        .unwrap();
    assert_eq!(
        rows.rows[0][0].as_deref(),
        Some("1"),
        "only the committed row exists"
    );
}

#[tokio::test]
async fn one_sync_connections_closed_by_postgres_while_idle_are_not_reused() {
    let t = TestDb::new().await;
    let su = t.superuser().await;
    let db = Db::connect(&t.api_url(), 1).unwrap();
    let user = Uuid::new_v4();
    let pid = |rows: agencyflow_db::pipe::TextRows| rows.rows[0][0].clone().unwrap();
    let first = pid(db
        .query_and_commit(&settings_for(user), "select pg_backend_pid()::text", &[])
        .await
        .unwrap());
    su.execute("select pg_terminate_backend($1::text::int)", &[&first])
        .await
        .unwrap();
    // Until the backend has gone (its end of the idle connection closed).
    let (su_ref, first_ref) = (&su, &first);
    agencyflow_testkit::wait::until(
        Duration::from_secs(30),
        "the terminated backend to end",
        || async move {
            su_ref
                .query_one(
                    "select count(*) from pg_stat_activity where pid = $1::text::int",
                    &[first_ref],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 0
        },
    )
    .await;
    let second = pid(db
        .query_and_commit(&settings_for(user), "select pg_backend_pid()::text", &[])
        .await
        .expect("a fresh connection replaces the terminated one"));
    assert_ne!(first, second);
}

#[tokio::test]
async fn one_sync_connections_authenticate_with_scram_over_tcp() {
    let t = TestDb::new().await;
    let su = t.superuser().await;
    let role = format!("pipe_{}", Uuid::new_v4().simple());
    su.batch_execute(&format!(
        "create role {role} login password 'pipe-secret'; grant authenticated to {role};"
    ))
    .await
    .unwrap();
    let db = Db::connect(&t.tcp_url(&role, "pipe-secret"), 1).unwrap();
    let user = Uuid::new_v4();
    let rows = db
        .query_and_commit(&settings_for(user), "select auth.uid()::text", &[])
        .await
        .unwrap();
    assert_eq!(rows.rows[0][0], Some(user.to_string()));
    let wrong = Db::connect(&t.tcp_url(&role, "wrong"), 1).unwrap();
    let err = wrong
        .query_and_commit(&settings_for(user), "select 1", &[])
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("28P01"), "{err}");
    // TLS is not spoken: a URL that requires it is refused rather than silently downgraded.
    let tls = Db::connect(
        &format!("{} sslmode=require", t.tcp_url(&role, "pipe-secret")),
        1,
    )
    .unwrap();
    let err = tls
        .query_and_commit(&settings_for(user), "select 1", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sslmode=require"), "{err}");
    su.batch_execute(&format!(
        "select pg_terminate_backend(pid) from pg_stat_activity where usename = '{role}';
         drop role {role};"
    ))
    .await
    .unwrap();
}
