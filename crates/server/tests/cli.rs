//! The real binary: configuration errors, keys, migrate, and serve's clean shutdown.
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agencyflow");

fn data_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("agencyflow-cli-")
        .tempdir()
        .unwrap();
    // The embedded cluster runs as `postgres` under root and must reach the directory.
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn agencyflow(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for k in [
        "DATABASE_URL",
        "MIGRATIONS_DATABASE_URL",
        "JWT_SECRET",
        "PORT",
        "PGRST_DB_MAX_ROWS",
        "PGRST_DB_SCHEMAS",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_config_error(o: &Output, setting: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "exit code 2 expected, stderr: {err}"
    );
    assert!(
        err.contains(setting),
        "the message must name {setting}: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "no panic: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn bad_configuration_is_one_line_and_exit_code_2() {
    let d = data_dir();
    let dir = d.path().to_str().unwrap();
    assert_config_error(
        &agencyflow(&["--data-dir", dir, "keys"], &[("JWT_SECRET", "short")]),
        "JWT_SECRET",
    );
    assert_config_error(
        &agencyflow(&["--data-dir", dir, "serve"], &[("PGRST_DB_MAX_ROWS", "0")]),
        "PGRST_DB_MAX_ROWS",
    );
    assert_config_error(
        &agencyflow(
            &["--data-dir", dir, "serve", "--db-tx-end", "sometimes"],
            &[],
        ),
        "PGRST_DB_TX_END",
    );
    assert_config_error(
        &agencyflow(
            &["--data-dir", dir, "migrate"],
            &[("DATABASE_URL", "postgres://x:y@host:notaport/db")],
        ),
        "DATABASE_URL",
    );
    assert_config_error(
        &agencyflow(
            &["--data-dir", dir, "serve"],
            &[("PGRST_DB_SCHEMAS", " , ")],
        ),
        "PGRST_DB_SCHEMAS",
    );
    // clap's own errors: also exit 2, never a panic.
    let o = agencyflow(&["serve", "--port", "eighty"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--port"));
}

#[test]
fn help_and_version() {
    let o = agencyflow(&["--help"], &[]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Examples:")
            && out.contains("serve")
            && out.contains("migrate")
            && out.contains("keys")
    );
    let o = agencyflow(&["--version"], &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn keys_are_generated_once_and_kept() {
    let d = data_dir();
    let dir = d.path().to_str().unwrap();
    let first = agencyflow(&["--data-dir", dir, "keys"], &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let secret_file = d.path().join("jwt_secret");
    assert_eq!(
        std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(secret.len() >= 43, "256 bits of secret");
    let second = agencyflow(&["--data-dir", dir, "keys"], &[]);
    assert_eq!(
        first.stdout, second.stdout,
        "the same secret gives the same keys"
    );
    let out = String::from_utf8_lossy(&first.stdout);
    let keys = agencyflow_auth::JwtKeys::hs256(secret.as_bytes(), None);
    for (label, role) in [("anon key:", "anon"), ("service_role key:", "service_role")] {
        let line = out.lines().find(|l| l.starts_with(label)).unwrap();
        let token = line.split_whitespace().last().unwrap();
        assert_eq!(keys.verify(token).unwrap()["role"], role);
    }
    // A configured secret wins over the stored one.
    let given = agencyflow(
        &["--data-dir", dir, "keys"],
        &[("JWT_SECRET", "another-secret-another-secret-another-secret")],
    );
    assert_ne!(given.stdout, first.stdout);
}

#[test]
fn migrate_dry_run_then_apply_on_the_embedded_cluster() {
    let d = data_dir();
    let dir = d.path().to_str().unwrap();
    let o = agencyflow(&["--data-dir", dir, "migrate", "--dry-run"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("pending migration(s)") && out.contains("_platform_roles_schemas.sql"),
        "{out}"
    );
    let o = agencyflow(&["--data-dir", dir, "migrate"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = agencyflow(&["--data-dir", dir, "migrate", "--dry-run"], &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("no pending migrations"));
    assert_no_postgres_for(d.path());
}

fn postgres_pids_for(dir: &std::path::Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("postgres -D {}", dir.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn assert_no_postgres_for(dir: &std::path::Path) {
    let canon = std::fs::canonicalize(dir).unwrap();
    assert!(
        postgres_pids_for(&canon.join("pg")).is_empty(),
        "a postmaster is left running for {}",
        canon.display()
    );
}

#[test]
fn serve_answers_health_and_stops_cleanly_on_sigterm() {
    let d = data_dir();
    let dir = d.path().to_str().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args(["--data-dir", dir, "serve", "--port", &port.to_string()])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut healthy = false;
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            if resp.starts_with("HTTP/1.1 200") {
                healthy = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(healthy, "server did not become healthy");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    assert_no_postgres_for(d.path());
}

#[test]
fn seed_demo_is_idempotent_and_backfill_embeds_its_documents() {
    let d = data_dir();
    let dir = d.path().to_str().unwrap();
    let o = agencyflow(&["--data-dir", dir, "seed", "--demo"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = agencyflow(&["--data-dir", dir, "seed", "--demo"], &[]);
    assert!(o.status.success(), "second seed: {}", stderr(&o));
    let o = agencyflow(&["--data-dir", dir, "embed", "backfill"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    let embedded: u64 = out
        .split("embedded ")
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .next()
        .unwrap_or_else(|| panic!("no count in: {out}"));
    assert!(
        embedded > 0,
        "the demo's documents and interactions need embeddings: {out}"
    );
    // Nothing left to do the second time.
    let o = agencyflow(&["--data-dir", dir, "embed", "backfill"], &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("embedded 0")
            || stderr(&o).contains("embedded 0"),
        "{}",
        stderr(&o)
    );
    assert_no_postgres_for(d.path());
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; the status line's code and the body.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Starts `agencyflow serve` with JSON logs into a file; returns it once `/health` is 200.
fn serve_until_healthy(
    dir: &std::path::Path,
    port: u16,
    env: &[(&str, &str)],
    log: &std::path::Path,
) -> std::process::Child {
    let mut c = Command::new(BIN);
    c.args([
        "--data-dir",
        dir.to_str().unwrap(),
        "--log-format",
        "json",
        "serve",
        "--port",
        &port.to_string(),
        "--ai-embed-provider",
        "hash",
    ]);
    for k in [
        "DATABASE_URL",
        "MIGRATIONS_DATABASE_URL",
        "PGRST_DB_SCHEMAS",
        "PGRST_DB_ANON_ROLE",
        "AI_EMBED_POLL_MS",
        "API_EXTERNAL_URL",
        "RUST_LOG",
    ] {
        c.env_remove(k);
    }
    let mut child = c
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/health", &[]).0 != 200 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "serve exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "serve did not become healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop(mut child: std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A database agencyflow did not create, served with PostgREST's settings alone: no
/// migration is attempted (`DATABASE_URL` without `MIGRATIONS_DATABASE_URL` is served as
/// it is), `/rest/v1` works, the surfaces that need the agency schema answer 503, one log
/// line says why, and nothing is logged every second (the embedding worker does not run).
/// With `MIGRATIONS_DATABASE_URL`, the same command migrates and every surface is on.
#[test]
fn serve_a_database_it_did_not_create() {
    use agencyflow_db::{ClusterOptions, EmbeddedCluster};
    let pg = data_dir();
    let cluster = EmbeddedCluster::start(&ClusterOptions {
        data_dir: pg.path().to_path_buf(),
        bin_dir: None,
        port: None,
        ephemeral: true,
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sql = |db: &str, sql: &str| {
        rt.block_on(async {
            let c = agencyflow_db::connect_one(&cluster.url("postgres", db))
                .await
                .unwrap();
            c.batch_execute(sql).await.unwrap();
        })
    };
    sql("postgres", "create database shop");
    sql("postgres", "create database agency");
    sql(
        "shop",
        "create role cli_anon nologin;
         create role cli_authenticator login noinherit;
         grant cli_anon to cli_authenticator;
         create schema api;
         grant usage on schema api to cli_anon;
         create table api.items (id int primary key, name text);
         insert into api.items values (1, 'one');
         grant select on api.items to cli_anon;",
    );
    let d = data_dir();
    let secret = "cli-test-secret-cli-test-secret-0123456789";
    let anon_key = {
        let o = agencyflow(
            &["--data-dir", d.path().to_str().unwrap(), "keys"],
            &[("JWT_SECRET", secret)],
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("anon key:"))
            .unwrap()
            .trim()
            .to_string()
    };
    let key = [("apikey", anon_key.as_str())];
    let log = d.path().join("serve.log");
    let port = free_port();
    let shop_url = cluster.url("cli_authenticator", "shop");
    let child = serve_until_healthy(
        d.path(),
        port,
        &[
            ("DATABASE_URL", &shop_url),
            ("PGRST_DB_SCHEMAS", "api"),
            ("PGRST_DB_ANON_ROLE", "cli_anon"),
            ("JWT_SECRET", secret),
            ("API_EXTERNAL_URL", "http://127.0.0.1"),
            // An idle worker on a database without its tables would fail 50 times a second.
            ("AI_EMBED_POLL_MS", "20"),
        ],
        &log,
    );
    let ready = Instant::now();
    let (code, body) = http(port, "GET", "/rest/v1/items?select=name", &key);
    assert_eq!((code, body.as_str()), (200, r#"[{"name":"one"}]"#));
    let (code, body) = http(port, "POST", "/functions/v1/search", &key);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("schema_missing"), "{body}");
    let (code, body) = http(port, "GET", "/storage/v1/bucket", &key);
    assert_eq!(code, 503, "{body}");
    // Long enough for a polling worker to have failed many times over.
    while ready.elapsed() < Duration::from_millis(600) {
        assert_eq!(http(port, "GET", "/rest/v1/items", &key).0, 200);
    }
    stop(child);
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = logged
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let about_schema: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap_or("")
                .contains("no agency schema")
        })
        .collect();
    assert_eq!(about_schema.len(), 1, "one line says why: {logged}");
    assert_eq!(about_schema[0]["level"], "WARN");
    // Besides that line, only our two 503 requests (the request log's "response failed").
    let (requests, others): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = lines
        .iter()
        .filter(|l| matches!(l["level"].as_str(), Some("WARN" | "ERROR")))
        .partition(|l| l["target"] == "tower_http::trace::on_failure");
    assert_eq!(others.len(), 1, "nothing else to warn about: {logged}");
    assert_eq!(requests.len(), 2, "{logged}");
    assert!(
        !logged.contains("embedding worker started") && !logged.contains("embedding worker:"),
        "the worker never ran: {logged}"
    );
    assert!(logged.contains("serving DATABASE_URL as it is"), "{logged}");
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let migrated: bool = rt2.block_on(async {
        let c = agencyflow_db::connect_one(&cluster.url("postgres", "shop"))
            .await
            .unwrap();
        c.query_one(
            "select exists (select 1 from pg_namespace where nspname = 'supabase_migrations')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    });
    assert!(!migrated, "nothing was migrated");

    // Asked to (MIGRATIONS_DATABASE_URL: the schema owner), serve migrates: every surface on.
    let port = free_port();
    let log = d.path().join("serve-migrated.log");
    let owner = cluster.url("postgres", "agency");
    let api = cluster.url("authenticator", "agency");
    let child = serve_until_healthy(
        d.path(),
        port,
        &[
            ("DATABASE_URL", &api),
            ("MIGRATIONS_DATABASE_URL", &owner),
            ("JWT_SECRET", secret),
        ],
        &log,
    );
    let (code, body) = http(port, "POST", "/functions/v1/search", &key);
    assert_eq!(code, 401, "the functions answer (no user JWT): {body}");
    let (code, body) = http(port, "GET", "/storage/v1/bucket", &key);
    assert_eq!(code, 200, "{body}");
    stop(child);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("migrations applied"), "{logged}");
    assert!(!logged.contains("no agency schema"), "{logged}");
    drop(cluster);
}
