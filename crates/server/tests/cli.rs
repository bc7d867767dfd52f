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
