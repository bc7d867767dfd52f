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

#[test]
fn console_add_admin_takes_a_password_on_stdin_or_prints_a_one_time_link() {
    let d = data_dir();
    let dir = d.path().to_str().unwrap();
    let add = |extra: &[&str], stdin: &str| {
        let mut c = Command::new(BIN);
        c.args(["--data-dir", dir, "console", "add-admin", "ops@agency.test"])
            .args(extra)
            .env_remove("DATABASE_URL")
            .env_remove("API_EXTERNAL_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = add(&[], "a long operator password\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("password set"));
    let o = add(&[], "short\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("at least 10 characters"),
        "{}",
        stderr(&o)
    );
    let o = add(&["--link", "--url", "https://ops.example/"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let link = out
        .split_whitespace()
        .find(|w| w.starts_with("https://ops.example/console/#setup="))
        .unwrap_or_else(|| panic!("no link in {out}"));
    assert!(
        link.len() > "https://ops.example/console/#setup=".len() + 40,
        "{link}"
    );
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

// ---------------------------------------------------------------------------------------
// `serve` as operators run it: the start-up summary, PostgreSQL dying under it, SIGTERM
// under load. HTTP is spoken over plain sockets (every read bounded by a timeout).

/// One HTTP answer.
struct Resp {
    status: u16,
    /// Header lines, lowercased.
    headers: String,
    /// Header lines as sent (cookie values keep their case).
    raw_headers: String,
    body: String,
}

impl Resp {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        raw = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A request with `Connection: close`; the answer is read to the end (30 s at most).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: no complete answer: {e}"));
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status line in {raw:?}"));
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        raw_headers: head.to_string(),
        body,
    }
}

/// Polls `f` until it gives a value; fails the test after `within`.
fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `agencyflow serve` on a data directory, its stdout and stderr (JSON log lines) in files.
struct Served {
    child: std::process::Child,
    addr: String,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
    _logs: tempfile::TempDir,
}

impl Served {
    fn start(dir: &std::path::Path, args: &[&str]) -> Served {
        let logs = tempfile::Builder::new()
            .prefix("agencyflow-serve-logs-")
            .tempdir()
            .unwrap();
        let stdout = logs.path().join("stdout");
        let stderr = logs.path().join("stderr");
        let mut c = Command::new(BIN);
        c.args(["--data-dir", dir.to_str().unwrap(), "--log-format", "json"])
            .args(["serve", "--port", "0"])
            .args(args);
        for k in [
            "DATABASE_URL",
            "JWT_SECRET",
            "PORT",
            "RUST_LOG",
            "GEMINI_API_KEY",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
        ] {
            c.env_remove(k);
        }
        // The lexical embedder: no model to load; the worker polls often.
        c.env("AI_EMBED_PROVIDER", "hash")
            .env("AI_EMBED_POLL_MS", "200")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let mut child = c.spawn().unwrap();
        let addr = wait_until("the start-up summary", Duration::from_secs(180), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "serve exited ({status}): {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            let out = std::fs::read_to_string(&stdout).unwrap_or_default();
            // The summary is written at once; its last line names the keys.
            if !out.contains("service_role key:") && !out.contains("API keys:") {
                return None;
            }
            summary_value(&out, "API URL").map(|u| u.trim_start_matches("http://").to_string())
        });
        Served {
            child,
            addr,
            stdout,
            stderr,
            _logs: logs,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap()
    }

    /// The JSON log lines so far.
    fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.stderr)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn log_lines_with(&self, text: &str) -> Vec<serde_json::Value> {
        self.log()
            .into_iter()
            .filter(|l| l.to_string().contains(text))
            .collect()
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        http(&self.addr, method, path, headers, body)
    }

    fn health(&self) -> Resp {
        self.req("GET", "/health", &[], "")
    }

    fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }

    /// Waits (bounded) for the process to end after a signal.
    fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_until("serve to exit", within, || child.try_wait().unwrap())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of a `Label: value` line of the start-up summary.
fn summary_value(out: &str, label: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(": ")?;
        (k == label).then(|| v.trim().to_string())
    })
}

/// The running postmaster's pid and port, from `<data-dir>/pg/postmaster.pid`.
fn postmaster(dir: &std::path::Path) -> (i32, u16) {
    let text = std::fs::read_to_string(dir.join("pg/postmaster.pid")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    (
        lines[0].trim().parse().unwrap(),
        lines[3].trim().parse().unwrap(),
    )
}

fn pg_bin(name: &str) -> std::path::PathBuf {
    agencyflow_db::cluster::find_bin_dir().unwrap().join(name)
}

/// Runs SQL as the cluster's superuser over its socket.
fn psql(dir: &std::path::Path, sql: &str) -> String {
    let (_, port) = postmaster(dir);
    let o = Command::new(pg_bin("psql"))
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .arg("-h")
        .arg(dir.join("run"))
        .args(["-p", &port.to_string(), "-c", sql])
        .output()
        .unwrap();
    assert!(o.status.success(), "psql: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_headers<'a>(apikey: &'a str, bearer: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("apikey", apikey),
        ("authorization", bearer),
        ("content-type", "application/json"),
    ]
}

#[test]
fn serve_prints_its_summary_and_comes_back_after_postgres_is_killed() {
    let d = data_dir();
    // A long first pause makes the outage long enough to look at.
    let mut s = Served::start(
        d.path(),
        &[
            "--db-restart-delay-ms",
            "4000",
            "--mailer-autoconfirm",
            "true",
            "--dashboard-username",
            "ops",
            "--dashboard-password",
            "a long console password",
        ],
    );

    // What operators see once it listens (`supabase start`'s summary).
    let out = s.stdout();
    let secret = std::fs::read_to_string(d.path().join("jwt_secret")).unwrap();
    let keys = agencyflow_auth::JwtKeys::hs256(secret.as_bytes(), None);
    let anon = summary_value(&out, "anon key").expect("anon key printed");
    let service = summary_value(&out, "service_role key").expect("service_role key printed");
    assert_eq!(keys.verify(&anon).unwrap()["role"], "anon");
    assert_eq!(keys.verify(&service).unwrap()["role"], "service_role");
    assert_eq!(
        summary_value(&out, "Data directory").as_deref(),
        Some(d.path().to_str().unwrap()),
        "{out}"
    );
    assert!(
        summary_value(&out, "DB URL").is_some_and(|u| u.starts_with("postgresql://postgres@/")),
        "{out}"
    );
    assert!(
        summary_value(&out, "Backups").is_some_and(|b| b.starts_with("none scheduled")),
        "{out}"
    );
    assert!(
        out.contains("/rest/v1") && out.contains("/storage/v1"),
        "{out}"
    );

    let bearer_anon = format!("Bearer {anon}");
    let bearer_service = format!("Bearer {service}");
    let as_service = json_headers(&service, &bearer_service);
    let signup = |email: &str| {
        let r = s.req(
            "POST",
            "/auth/v1/signup",
            &json_headers(&anon, &bearer_anon),
            &format!(r#"{{"email":"{email}","password":"correct-horse-battery-staple-1"}}"#),
        );
        assert_eq!(r.status, 200, "signup: {}", r.body);
        format!("Bearer {}", r.json()["access_token"].as_str().unwrap())
    };

    // Every surface works before.
    let user = signup("before@example.com");
    let as_user = json_headers(&anon, &user);
    let orgs = s.req("GET", "/rest/v1/organizations?select=id", &as_user, "");
    assert_eq!(orgs.status, 200, "{}", orgs.body);
    assert!(!orgs.json().as_array().unwrap().is_empty());
    let r = s.req(
        "POST",
        "/storage/v1/bucket",
        &as_service,
        r#"{"name":"kept"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let upload = |name: &str| {
        s.req(
            "POST",
            &format!("/storage/v1/object/kept/{name}"),
            &[
                ("apikey", service.as_str()),
                ("authorization", bearer_service.as_str()),
                ("content-type", "text/plain"),
            ],
            "hello",
        )
    };
    let r = upload("a.txt");
    assert_eq!(r.status, 200, "{}", r.body);
    let search = || {
        s.req(
            "POST",
            "/functions/v1/search",
            &as_user,
            r#"{"query":"hello"}"#,
        )
    };
    let r = search();
    assert_eq!(r.status, 200, "{}", r.body);

    // The postmaster dies.
    let (pid, _) = postmaster(d.path());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let h = wait_until(
        "/health to report the restart",
        Duration::from_secs(10),
        || {
            let r = s.health();
            (r.status == 503 && r.json()["database"] == "restarting").then(|| r.json())
        },
    );
    assert!(h["cause"].as_str().unwrap().contains("SIGKILL"), "{h}");

    // Meanwhile every surface answers 503 JSON in its own shape, at once.
    let timed = |name: &str, r: &dyn Fn() -> Resp| {
        let t = Instant::now();
        let resp = r();
        let took = t.elapsed();
        assert!(took < Duration::from_secs(3), "{name} took {took:?}");
        assert_eq!(resp.status, 503, "{name}: {}", resp.body);
        resp.json()
    };
    let j = timed("rest", &|| {
        s.req("GET", "/rest/v1/organizations?select=id", &as_user, "")
    });
    assert_eq!(j["code"], "PGRST000", "{j}");
    assert_eq!(j["details"], "the embedded PostgreSQL is restarting", "{j}");
    let j = timed("auth", &|| {
        s.req(
            "POST",
            "/auth/v1/signup",
            &json_headers(&anon, &bearer_anon),
            r#"{"email":"during@example.com","password":"correct-horse-battery-staple-1"}"#,
        )
    });
    assert!(j["error_code"].is_string() && j["msg"].is_string(), "{j}");
    let j = timed("storage", &|| {
        s.req("GET", "/storage/v1/object/kept/a.txt", &as_service, "")
    });
    assert_eq!(j["statusCode"], "503", "{j}");
    let j = timed("functions", &search);
    assert_eq!(j["code"], "database_unavailable", "{j}");
    assert_eq!(
        s.health().json()["database"],
        "restarting",
        "the outage lasted through the checks"
    );

    // PostgreSQL is back by itself, and so is every surface, from the first request.
    wait_until("/health to be ok again", Duration::from_secs(120), || {
        (s.health().status == 200).then_some(())
    });
    let r = s.req("GET", "/rest/v1/organizations?select=id", &as_user, "");
    assert_eq!(r.status, 200, "rest after the restart: {}", r.body);
    let second = signup("after@example.com");
    let r = s.req(
        "GET",
        "/rest/v1/organizations?select=id",
        &json_headers(&anon, &second),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.req("GET", "/storage/v1/object/kept/a.txt", &as_service, "");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "hello"),
        "storage after the restart"
    );
    let r = upload("b.txt");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = search();
    assert_eq!(r.status, 200, "functions after the restart: {}", r.body);

    // The schema cache's LISTEN connection is back: a function created now gets served.
    psql(
        d.path(),
        "create function public.after_restart() returns int language sql as 'select 42';
         grant execute on function public.after_restart() to anon;
         notify pgrst;",
    );
    wait_until(
        "the schema cache to reload",
        Duration::from_secs(60),
        || {
            let r = s.req(
                "POST",
                "/rest/v1/rpc/after_restart",
                &json_headers(&anon, &bearer_anon),
                "{}",
            );
            (r.status == 200).then(|| assert_eq!(r.body.trim(), "42"))
        },
    );
    // The embedding worker noticed the outage, and its end.
    wait_until(
        "the embedding worker to resume",
        Duration::from_secs(30),
        || {
            (!s.log_lines_with("embedding worker: database available again")
                .is_empty())
            .then_some(())
        },
    );

    // Counted, and logged once with its cause.
    let m = s.req("GET", "/metrics", &as_service, "");
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains("\nagencyflow_db_restarts_total 1\n"),
        "{}",
        m.body
    );
    assert!(m.body.contains("\nagencyflow_db_up 1\n"), "{}", m.body);
    let died = s.log_lines_with("exited unexpectedly");
    assert_eq!(died.len(), 1, "{died:?}");
    assert!(
        died[0]["cause"].as_str().unwrap().contains("SIGKILL"),
        "{:?}",
        died[0]
    );
    assert_eq!(
        s.log_lines_with("restarted and accepts connections again")
            .len(),
        1
    );

    // The console's Logs & health page: the supervisor's restart with its cause and times,
    // and the server's own log tail holding the warning.
    let signed = s.req(
        "POST",
        "/console/api/sign-in",
        &[("content-type", "application/json")],
        r#"{"email":"ops","password":"a long console password"}"#,
    );
    assert_eq!(signed.status, 200, "{}", signed.body);
    let cookie = signed
        .raw_headers
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
                .map(|(_, v)| v.trim())
        })
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let console = s.req("GET", "/console/api/health", &[("cookie", &cookie)], "");
    assert_eq!(console.status, 200, "{}", console.body);
    let sup = &console.json()["supervisor"];
    assert_eq!(sup["state"], "up", "{sup}");
    assert_eq!(sup["restarts"], 1, "{sup}");
    let restart = &sup["history"][0];
    assert!(
        restart["cause"].as_str().unwrap().contains("SIGKILL"),
        "{sup}"
    );
    assert!(
        restart["back_at"].as_str().unwrap() > restart["died_at"].as_str().unwrap(),
        "{sup}"
    );
    assert!(restart["down_ms"].as_u64().unwrap() >= 4000, "{sup}");
    let tail = s.req(
        "GET",
        "/console/api/logs?level=warn",
        &[("cookie", &cookie)],
        "",
    );
    assert_eq!(tail.status, 200, "{}", tail.body);
    assert!(
        tail.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"]
                .as_str()
                .unwrap()
                .contains("exited unexpectedly")),
        "{}",
        tail.body
    );

    // The restarted postmaster is bound to agencyflow's life too: killed outright, agencyflow
    // leaves no PostgreSQL behind (the parent-death signal stops it).
    let (restarted, _) = postmaster(d.path());
    assert_ne!(restarted, pid);
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let canon = std::fs::canonicalize(d.path()).unwrap().join("pg");
    wait_until(
        "the restarted postmaster to stop",
        Duration::from_secs(60),
        || postgres_pids_for(&canon).is_empty().then_some(()),
    );
}

#[test]
fn serve_says_once_why_postgres_cannot_be_restarted_and_keeps_answering_503() {
    let d = data_dir();
    let mut s = Served::start(
        d.path(),
        &[
            "--db-restart-delay-ms",
            "1000",
            "--db-restart-attempts",
            "2",
        ],
    );
    let anon = summary_value(&s.stdout(), "anon key").unwrap();
    let bearer = format!("Bearer {anon}");
    // Killed, and its control file lost: PostgreSQL cannot start on this directory.
    let (pid, _) = postmaster(d.path());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::fs::remove_file(d.path().join("pg/global/pg_control")).unwrap();

    let h = wait_until(
        "/health to report the failure",
        Duration::from_secs(60),
        || {
            let r = s.health();
            (r.status == 503 && r.json()["database"] == "failed").then(|| r.json())
        },
    );
    let reason = h["reason"].as_str().unwrap();
    assert!(reason.contains("pg_control"), "{h}");
    assert!(!reason.contains('\n'));

    // Requests keep getting their 503, at once.
    let t = Instant::now();
    let r = s.req(
        "GET",
        "/rest/v1/organizations",
        &json_headers(&anon, &bearer),
        "",
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["code"], "PGRST000");
    assert!(
        r.json()["details"]
            .as_str()
            .unwrap()
            .contains("restarting it failed"),
        "{}",
        r.body
    );
    assert_eq!(s.health().json()["reason"], h["reason"], "the reason stays");

    // One log line says why.
    let why = s.log_lines_with("pg_control");
    assert_eq!(why.len(), 1, "{why:?}");
    assert_eq!(why[0]["level"], "ERROR", "{:?}", why[0]);
    assert!(
        why[0].to_string().contains("could not be restarted"),
        "{:?}",
        why[0]
    );

    s.sigterm();
    assert!(s.exit_status(Duration::from_secs(60)).success());
    assert_no_postgres_for(d.path());
}

#[test]
fn sigterm_under_load_finishes_requests_refuses_new_ones_and_stops_postgres_cleanly() {
    let d = data_dir();
    let dir = d.path().to_str().unwrap();
    // With --quiet the summary holds no keys; `agencyflow keys` gives them.
    let o = agencyflow(&["--data-dir", dir, "keys"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let keys_out = String::from_utf8_lossy(&o.stdout).into_owned();
    let key = |label: &str| summary_value(&keys_out, label).unwrap();
    let (anon, service) = (key("anon key"), key("service_role key"));
    let mut s = Served::start(
        d.path(),
        &[
            "--quiet",
            "--drain-timeout",
            "60",
            "--db-pool-acquisition-timeout",
            "60",
        ],
    );
    let out = s.stdout();
    assert!(!out.contains("eyJ") && out.contains("hidden"), "{out}");
    assert!(summary_value(&out, "Data directory").is_some(), "{out}");

    psql(
        d.path(),
        "create function public.slow_echo(n int) returns int language sql volatile
           as 'select pg_sleep(2); select n';
         create function public.probe() returns int language sql as 'select 1';
         grant execute on function public.slow_echo(int), public.probe() to anon;
         notify pgrst;",
    );
    let bearer = format!("Bearer {anon}");
    let as_anon = json_headers(&anon, &bearer);
    wait_until(
        "the new functions to be served",
        Duration::from_secs(60),
        || (s.req("POST", "/rest/v1/rpc/probe", &as_anon, "{}").status == 200).then_some(()),
    );

    // 64 clients, each with a request of two seconds, on a pool of 20 connections.
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let (addr, anon, bearer) = (s.addr.clone(), anon.clone(), bearer.clone());
            std::thread::spawn(move || {
                let r = http(
                    &addr,
                    "POST",
                    "/rest/v1/rpc/slow_echo",
                    &json_headers(&anon, &bearer),
                    &format!(r#"{{"n":{i}}}"#),
                );
                (i, r.status, r.body)
            })
        })
        .collect();
    let bearer_service = format!("Bearer {service}");
    let as_service = json_headers(&service, &bearer_service);
    let in_flight = || {
        let m = s.req("GET", "/metrics", &as_service, "");
        m.body
            .lines()
            .find_map(|l| l.strip_prefix("agencyflow_http_requests_in_flight "))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    wait_until("64 requests in flight", Duration::from_secs(30), || {
        (in_flight() >= 64).then_some(())
    });

    s.sigterm();
    wait_until("/health to say draining", Duration::from_secs(10), || {
        let r = s.health();
        (r.status == 503 && r.json()["status"] == "draining").then_some(())
    });
    // A new request is refused at once, in PostgREST's shape, and its connection closed.
    let r = s.req("POST", "/rest/v1/rpc/probe", &as_anon, "{}");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["code"], "PGRST000");
    assert!(r.headers.contains("connection: close"), "{}", r.headers);

    // Every request that was in flight finished normally.
    for c in clients {
        let (i, status, body) = c.join().unwrap();
        assert_eq!(
            (status, body.trim()),
            (200, i.to_string().as_str()),
            "client {i}"
        );
    }
    assert!(s.exit_status(Duration::from_secs(90)).success());

    // The worker ended after its job, then PostgreSQL stopped cleanly: no crash recovery next time.
    let order: Vec<String> = s
        .log()
        .iter()
        .filter_map(|l| l["message"].as_str().map(str::to_string))
        .collect();
    let at = |m: &str| {
        order
            .iter()
            .position(|l| l.contains(m))
            .unwrap_or_else(|| panic!("no log line {m:?} in {order:?}"))
    };
    assert!(
        at("embedding worker stopped after its current job") < at("embedded PostgreSQL stopped")
    );
    assert!(at("requests drained") < at("embedded PostgreSQL stopped"));
    let control = Command::new(pg_bin("pg_controldata"))
        .arg(d.path().join("pg"))
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let control = String::from_utf8_lossy(&control.stdout).into_owned();
    let state = control
        .lines()
        .find_map(|l| l.strip_prefix("Database cluster state:"))
        .map(str::trim);
    assert_eq!(state, Some("shut down"), "{control}");
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
fn http_port(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
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
    while http_port(port, "GET", "/health", &[]).0 != 200 {
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
        settings: Vec::new(),
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
    let (code, body) = http_port(port, "GET", "/rest/v1/items?select=name", &key);
    assert_eq!((code, body.as_str()), (200, r#"[{"name":"one"}]"#));
    let (code, body) = http_port(port, "POST", "/functions/v1/search", &key);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("schema_missing"), "{body}");
    let (code, body) = http_port(port, "GET", "/storage/v1/bucket", &key);
    assert_eq!(code, 503, "{body}");
    // Long enough for a polling worker to have failed many times over.
    while ready.elapsed() < Duration::from_millis(600) {
        assert_eq!(http_port(port, "GET", "/rest/v1/items", &key).0, 200);
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
        // The auth settings' own start-up notice (no SMTP mailer) is about configuration.
        .filter(|l| {
            !(l["target"] == "agencyflow_auth"
                && l["message"].as_str().unwrap_or("").contains("SMTP"))
        })
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
    let (code, body) = http_port(port, "POST", "/functions/v1/search", &key);
    assert_eq!(code, 401, "the functions answer (no user JWT): {body}");
    let (code, body) = http_port(port, "GET", "/storage/v1/bucket", &key);
    assert_eq!(code, 200, "{body}");
    stop(child);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("migrations applied"), "{logged}");
    assert!(!logged.contains("no agency schema"), "{logged}");
    drop(cluster);
}

// ---------------------------------------------------------------------------------------
// Soak: concurrent writers through the HTTP API while the embedded postmaster is killed with
// -9 again and again. A short run here; `bench/soak.sh` runs the long one
// (`soak_long_run`, ignored) and reports its numbers.

/// How one write was answered: its status and whether the answer says the request never
/// reached PostgreSQL (the pool refused the checkout while it was restarting).
#[derive(Clone, Debug)]
struct Answer {
    seq: i64,
    status: u16,
    refused_at_checkout: bool,
}

impl Answer {
    fn of(seq: i64, r: &Resp) -> Answer {
        Answer {
            seq,
            status: r.status,
            refused_at_checkout: r.status == 503
                && r.body.contains("the embedded PostgreSQL is restarting"),
        }
    }

    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What the writers were answered, by kind of write.
#[derive(Default)]
struct SoakLog {
    /// REST insert of two rows in one request (`soak_rows`), by (writer, seq).
    inserts: Vec<(i64, Answer)>,
    /// REST update of the writer's counter to seq (`soak_counters`).
    updates: Vec<(i64, Answer)>,
    /// RPC `soak_transfer`: two ledger rows in one function.
    rpcs: Vec<(i64, Answer)>,
    /// Uploads of `soak/w<writer>/<seq>.txt`.
    uploads: Vec<(i64, Answer)>,
    /// Refresh-token grants; the 4xx answers among them are failures of the rotation.
    refreshes: Vec<(i64, Answer)>,
    /// The last refresh token each refreshing writer was handed.
    refresh_tokens: Vec<String>,
}

struct SoakReport {
    requests: usize,
    by_status: BTreeMap<u16, usize>,
    kills: usize,
    restarts: u64,
    /// (seconds since start, server RSS in KiB).
    rss: Vec<(u64, u64)>,
    /// Writes answered with an error that committed all the same (the answer was lost with
    /// the connection at COMMIT); each was checked to be whole.
    in_doubt_committed: usize,
}

use std::collections::BTreeMap;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn upload_body(writer: i64, seq: i64) -> String {
    format!("soak object w{writer} #{seq} ").repeat(64)
}

/// Runs writers for `duration`, killing the postmaster every `kill_every`, then checks that
/// every write answered 2xx is there exactly once and every write answered with an error
/// left nothing, or (an answer lost at COMMIT) all of itself, never a part.
fn soak(duration: Duration, kill_every: Duration, threads_per_kind: i64) -> SoakReport {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let d = data_dir();
    let s = Served::start(
        d.path(),
        &[
            "--db-restart-delay-ms",
            "200",
            "--mailer-autoconfirm",
            "true",
            "--rate-limit-token-refresh",
            "0",
            "--rate-limit-sign-in-sign-ups",
            "0",
            "--ai-embed-worker",
            "false",
        ],
    );
    let out = s.stdout();
    let anon = summary_value(&out, "anon key").unwrap();
    let service = summary_value(&out, "service_role key").unwrap();
    let bearer_anon = format!("Bearer {anon}");
    let bearer_service = format!("Bearer {service}");
    psql(
        d.path(),
        "create table public.soak_rows (id bigserial primary key, writer int not null,
           seq int not null, part int not null);
         create table public.soak_counters (writer int primary key, value int not null);
         create table public.soak_ledger (id bigserial primary key, writer int not null,
           seq int not null, amount int not null);
         create function public.soak_transfer(p_writer int, p_seq int) returns int
           language plpgsql as $$
           begin
             insert into public.soak_ledger (writer, seq, amount) values (p_writer, p_seq, -1);
             perform pg_sleep(0.002);
             insert into public.soak_ledger (writer, seq, amount) values (p_writer, p_seq, 1);
             return p_seq;
           end $$;
         grant all on public.soak_rows, public.soak_counters, public.soak_ledger to service_role;
         grant usage on all sequences in schema public to service_role;
         notify pgrst;",
    );
    let as_service = json_headers(&service, &bearer_service);
    wait_until(
        "the soak tables to be served",
        Duration::from_secs(60),
        || {
            (s.req("GET", "/rest/v1/soak_counters", &as_service, "")
                .status
                == 200)
                .then_some(())
        },
    );
    let r = s.req(
        "POST",
        "/storage/v1/bucket",
        &as_service,
        r#"{"name":"soak"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let log = Arc::new(Mutex::new(SoakLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let addr = s.addr.clone();
    let mut handles = Vec::new();
    let mut refresh_tokens = Vec::new();
    for t in 0..threads_per_kind {
        // Writers are numbered per kind; every kind's tables are its own.
        let w = t + 1;
        let r = s.req(
            "POST",
            "/rest/v1/soak_counters",
            &as_service,
            &format!(r#"{{"writer":{w},"value":0}}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let r = s.req(
            "POST",
            "/auth/v1/signup",
            &json_headers(&anon, &bearer_anon),
            &format!(
                r#"{{"email":"soak{w}@example.com","password":"correct-horse-battery-staple-1"}}"#
            ),
        );
        assert_eq!(r.status, 200, "signup: {}", r.body);
        refresh_tokens.push(r.json()["refresh_token"].as_str().unwrap().to_string());
    }
    type Write = fn(&str, &str, &str, i64, i64) -> Resp;
    let kinds: [(&str, Write); 4] = [
        ("insert", |addr, key, bearer, w, n| {
            http(
                addr,
                "POST",
                "/rest/v1/soak_rows",
                &[
                    ("apikey", key),
                    ("authorization", bearer),
                    ("content-type", "application/json"),
                    ("prefer", "return=minimal"),
                ],
                &format!(
                    r#"[{{"writer":{w},"seq":{n},"part":1}},{{"writer":{w},"seq":{n},"part":2}}]"#
                ),
            )
        }),
        ("update", |addr, key, bearer, w, n| {
            http(
                addr,
                "PATCH",
                &format!("/rest/v1/soak_counters?writer=eq.{w}"),
                &json_headers(key, bearer),
                &format!(r#"{{"value":{n}}}"#),
            )
        }),
        ("rpc", |addr, key, bearer, w, n| {
            http(
                addr,
                "POST",
                "/rest/v1/rpc/soak_transfer",
                &json_headers(key, bearer),
                &format!(r#"{{"p_writer":{w},"p_seq":{n}}}"#),
            )
        }),
        ("upload", |addr, key, bearer, w, n| {
            http(
                addr,
                "POST",
                &format!("/storage/v1/object/soak/w{w}/{n}.txt"),
                &[
                    ("apikey", key),
                    ("authorization", bearer),
                    ("content-type", "text/plain"),
                ],
                &upload_body(w, n),
            )
        }),
    ];
    for (kind, write) in kinds {
        for w in 1..=threads_per_kind {
            let (log, stop, addr) = (log.clone(), stop.clone(), addr.clone());
            let (key, bearer) = (service.clone(), bearer_service.clone());
            handles.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let r = write(&addr, &key, &bearer, w, n);
                    let a = Answer::of(n, &r);
                    let mut log = log.lock().unwrap();
                    match kind {
                        "insert" => log.inserts.push((w, a)),
                        "update" => log.updates.push((w, a)),
                        "rpc" => log.rpcs.push((w, a)),
                        _ => log.uploads.push((w, a)),
                    }
                }
            }));
        }
    }
    for (i, mut token) in refresh_tokens.into_iter().enumerate() {
        let (log, stop, addr) = (log.clone(), stop.clone(), addr.clone());
        let (key, bearer) = (anon.clone(), bearer_anon.clone());
        handles.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r = http(
                    &addr,
                    "POST",
                    "/auth/v1/token?grant_type=refresh_token",
                    &json_headers(&key, &bearer),
                    &format!(r#"{{"refresh_token":"{token}"}}"#),
                );
                // An error answer: the same token is presented again (a lost answer is
                // handed the same child again).
                if r.status == 200 {
                    token = r.json()["refresh_token"].as_str().unwrap().to_string();
                }
                log.lock()
                    .unwrap()
                    .refreshes
                    .push((i as i64 + 1, Answer::of(n, &r)));
            }
            log.lock().unwrap().refresh_tokens.push(token);
        }));
    }

    // The killer, and the server's memory over time.
    let pid = s.child.id();
    let started = Instant::now();
    let mut rss = vec![(0, rss_kib(pid))];
    let mut kills = 0;
    let mut next_kill = started + kill_every;
    let mut next_sample = started + Duration::from_secs(5);
    let sample_every = if duration > Duration::from_secs(300) {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    };
    while started.elapsed() < duration {
        let now = Instant::now();
        if now >= next_sample {
            rss.push((started.elapsed().as_secs(), rss_kib(pid)));
            next_sample += sample_every;
        }
        if now >= next_kill && started.elapsed() + Duration::from_secs(3) < duration {
            let (pm, _) = postmaster(d.path());
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pm),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            kills += 1;
            println!(
                "soak: t={}s kill #{kills} of postmaster {pm}",
                started.elapsed().as_secs()
            );
            // Back: a new postmaster, and /health says so (not the old one's last word).
            wait_until("PostgreSQL to be back", Duration::from_secs(120), || {
                let pid_file = std::fs::read_to_string(d.path().join("pg/postmaster.pid")).ok()?;
                let now: i32 = pid_file.lines().next()?.trim().parse().ok()?;
                (now != pm && s.health().status == 200).then_some(())
            });
            next_kill = Instant::now() + kill_every;
        }
        // The pace of the schedule above, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a writer panicked");
    }
    rss.push((started.elapsed().as_secs(), rss_kib(pid)));
    wait_until(
        "PostgreSQL to be up at the end",
        Duration::from_secs(120),
        || (s.health().status == 200).then_some(()),
    );
    let log = Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap();

    // Every postmaster death was followed by a restart, and counted.
    let m = s.req("GET", "/metrics", &as_service, "");
    let restarts: u64 = m
        .body
        .lines()
        .find_map(|l| l.strip_prefix("agencyflow_db_restarts_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no restart counter: {}", m.body));
    assert_eq!(restarts, kills as u64, "one restart per kill");

    let mut in_doubt = 0;
    // (writer, seq) -> count, from a `select writer, seq, count(*)` query.
    let counts = |sql: &str| -> BTreeMap<(i64, i64), i64> {
        psql(d.path(), sql)
            .lines()
            .map(|l| {
                let f: Vec<i64> = l.split('|').map(|x| x.parse().unwrap()).collect();
                ((f[0], f[1]), f[2])
            })
            .collect()
    };
    // Two rows per write, all or nothing.
    let mut check_pairs =
        |what: &str, writes: &[(i64, Answer)], found: BTreeMap<(i64, i64), i64>| {
            for (w, a) in writes {
                let n = found.get(&(*w, a.seq)).copied().unwrap_or(0);
                if a.ok() {
                    assert_eq!(
                        n, 2,
                        "{what} w{w} #{} answered {}: {n} rows",
                        a.seq, a.status
                    );
                } else if a.refused_at_checkout {
                    assert_eq!(
                        n, 0,
                        "{what} w{w} #{} refused before PostgreSQL: {n} rows",
                        a.seq
                    );
                } else {
                    assert!(
                        n == 0 || n == 2,
                        "{what} w{w} #{} answered {}: a half write ({n} rows)",
                        a.seq,
                        a.status
                    );
                    in_doubt += (n == 2) as usize;
                }
            }
            let attempted: std::collections::BTreeSet<(i64, i64)> =
                writes.iter().map(|(w, a)| (*w, a.seq)).collect();
            for key in found.keys() {
                assert!(
                    attempted.contains(key),
                    "{what}: rows of a write never sent: {key:?}"
                );
            }
        };
    check_pairs(
        "insert",
        &log.inserts,
        counts("select writer, seq, count(*) from public.soak_rows group by 1, 2"),
    );
    check_pairs(
        "rpc",
        &log.rpcs,
        counts("select writer, seq, count(*) from public.soak_ledger group by 1, 2"),
    );
    assert_eq!(
        psql(
            d.path(),
            "select coalesce(sum(amount), 0) from public.soak_ledger"
        )
        .trim(),
        "0",
        "every transfer whole"
    );
    // Counters: the last update answered 2xx, or a later one whose answer was lost.
    let values = counts("select writer, value, 0 from public.soak_counters");
    for w in 1..=threads_per_kind {
        let value = values.keys().find(|(k, _)| *k == w).unwrap().1;
        let mine: Vec<&Answer> = log
            .updates
            .iter()
            .filter(|(x, _)| *x == w)
            .map(|(_, a)| a)
            .collect();
        let last_ok = mine
            .iter()
            .filter(|a| a.ok())
            .map(|a| a.seq)
            .max()
            .unwrap_or(0);
        let later_failed: Vec<i64> = mine
            .iter()
            .filter(|a| !a.ok() && !a.refused_at_checkout && a.seq > last_ok)
            .map(|a| a.seq)
            .collect();
        assert!(
            value == last_ok || later_failed.contains(&value),
            "counter {w} is {value}; last update answered 2xx set {last_ok}"
        );
        in_doubt += (value != last_ok) as usize;
    }
    // Uploads: a row for every 2xx, each row's file holds its bytes, no file without a row,
    // nothing left in the staging folder.
    let rows: BTreeMap<String, String> = psql(
        d.path(),
        "select name, version from storage.objects where bucket_id = 'soak'",
    )
    .lines()
    .map(|l| {
        let (n, v) = l.split_once('|').unwrap();
        (n.to_string(), v.to_string())
    })
    .collect();
    let root = d.path().join("storage");
    for (w, a) in &log.uploads {
        let name = format!("w{w}/{}.txt", a.seq);
        let row = rows.get(&name);
        if a.ok() {
            assert!(row.is_some(), "upload {name} answered {}: no row", a.status);
        } else if a.refused_at_checkout {
            assert!(
                row.is_none(),
                "upload {name} refused before PostgreSQL has a row"
            );
        } else {
            in_doubt += row.is_some() as usize;
        }
        if let Some(version) = row {
            let bytes = std::fs::read_to_string(root.join("soak").join(&name).join(version))
                .unwrap_or_else(|e| {
                    panic!(
                        "upload {name} (answered {}): its row has no file: {e}",
                        a.status
                    )
                });
            assert_eq!(bytes, upload_body(*w, a.seq), "{name}");
        }
    }
    // Files without a row, and staging leftovers. An upload whose COMMIT answer was lost
    // keeps its file until the server has learnt (on a fresh connection) that no row names
    // it: allowed a few seconds.
    let strays = || {
        let mut found = Vec::new();
        for wdir in std::fs::read_dir(root.join("soak")).unwrap() {
            let wdir = wdir.unwrap();
            for obj in std::fs::read_dir(wdir.path()).unwrap() {
                let obj = obj.unwrap();
                let name = format!(
                    "{}/{}",
                    wdir.file_name().to_string_lossy(),
                    obj.file_name().to_string_lossy()
                );
                for v in std::fs::read_dir(obj.path()).unwrap() {
                    let v = v.unwrap().file_name().to_string_lossy().into_owned();
                    if rows.get(&name) != Some(&v) {
                        found.push(format!("{name}/{v}"));
                    }
                }
            }
        }
        for e in std::fs::read_dir(root.join(".tmp")).into_iter().flatten() {
            found.push(format!(".tmp/{}", e.unwrap().file_name().to_string_lossy()));
        }
        found
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left = strays();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = strays();
    }
    assert!(left.is_empty(), "files without a row: {left:?}");
    // Refresh tokens: never refused (a lost answer gets the same child again), and they
    // still rotate now.
    let refused: Vec<_> = log
        .refreshes
        .iter()
        .filter(|(_, a)| (400..500).contains(&a.status))
        .collect();
    assert!(refused.is_empty(), "refresh grants refused: {refused:?}");
    for token in &log.refresh_tokens {
        let r = s.req(
            "POST",
            "/auth/v1/token?grant_type=refresh_token",
            &json_headers(&anon, &bearer_anon),
            &format!(r#"{{"refresh_token":"{token}"}}"#),
        );
        assert_eq!(
            r.status, 200,
            "the last token handed out still rotates: {}",
            r.body
        );
        assert_ne!(r.json()["refresh_token"].as_str().unwrap(), token);
    }

    let all: Vec<&Answer> = [
        &log.inserts,
        &log.updates,
        &log.rpcs,
        &log.uploads,
        &log.refreshes,
    ]
    .into_iter()
    .flat_map(|v| v.iter().map(|(_, a)| a))
    .collect();
    let mut by_status = BTreeMap::new();
    for a in &all {
        *by_status.entry(a.status).or_insert(0) += 1;
    }
    for (kind, v) in [
        ("insert", &log.inserts),
        ("update", &log.updates),
        ("rpc", &log.rpcs),
        ("upload", &log.uploads),
        ("refresh", &log.refreshes),
    ] {
        let ok = v.iter().filter(|(_, a)| a.ok()).count();
        assert!(ok > 0, "no {kind} succeeded");
        println!("soak: {kind}: {} requests, {ok} 2xx", v.len());
    }
    let report = SoakReport {
        requests: all.len(),
        by_status,
        kills,
        restarts,
        rss,
        in_doubt_committed: in_doubt,
    };
    // Before the data directory is removed (minutes, with the files of a long run).
    print_soak(&report);
    report
}

fn print_soak(r: &SoakReport) {
    for (t, kib) in &r.rss {
        println!("soak: rss t={t}s {kib} KiB");
    }
    println!(
        "soak: summary requests={} by_status={:?} kills={} restarts={} in_doubt_committed={} rss_start_kib={} rss_end_kib={}",
        r.requests,
        r.by_status,
        r.kills,
        r.restarts,
        r.in_doubt_committed,
        r.rss.first().unwrap().1,
        r.rss.last().unwrap().1
    );
}

#[test]
fn soak_no_acknowledged_write_is_lost_while_postgres_is_killed() {
    // A kill 4 s after PostgreSQL is back each time (crash recovery itself takes seconds
    // on a busy machine).
    let r = soak(Duration::from_secs(55), Duration::from_secs(4), 2);
    assert!(r.kills >= 3, "{} kills", r.kills);
}

/// The long soak (`bench/soak.sh`): `AGENCYFLOW_SOAK_SECS` (1800) of writers,
/// a kill every `AGENCYFLOW_SOAK_KILL_EVERY_SECS` (90; past a minute, so the restart delay
/// does not grow), `AGENCYFLOW_SOAK_WRITERS` (2) threads per kind of write.
#[test]
#[ignore]
fn soak_long_run() {
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{k}: a number")))
            .unwrap_or(d)
    };
    soak(
        Duration::from_secs(var("AGENCYFLOW_SOAK_SECS", 1800)),
        Duration::from_secs(var("AGENCYFLOW_SOAK_KILL_EVERY_SECS", 90)),
        var("AGENCYFLOW_SOAK_WRITERS", 2) as i64,
    );
}
