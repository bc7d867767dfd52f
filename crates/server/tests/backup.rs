//! Backup and restore on the real binary: a served data directory with the demo agency,
//! uploaded files, users with sessions and a vault secret → `backup` (while `serve` runs,
//! on its embedded cluster and through DATABASE_URL; and on a schedule) → `restore` into
//! fresh data directories → the same installation. And the refusals.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agencyflow");

fn tmp() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("agencyflow-backup-")
        .tempdir()
        .unwrap();
    // The embedded cluster runs as `postgres` under root and must reach the directories.
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    for k in [
        "DATABASE_URL",
        "MIGRATIONS_DATABASE_URL",
        "JWT_SECRET",
        "VAULT_ENC_KEY",
        "PORT",
        "AGENCYFLOW_DATA_DIR",
        "STORAGE_BACKEND",
        "FILE_STORAGE_BACKEND_PATH",
        "AGENCYFLOW_BACKUP_EVERY",
        "AGENCYFLOW_BACKUP_KEEP",
        "AGENCYFLOW_BACKUP_DIR",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn agencyflow(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A refusal: this exit code, one line on stderr containing `text`.
#[track_caller]
fn refused(o: &Output, code: i32, text: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code {code}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(text), "{text:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn keys(dir: &Path) -> (String, String) {
    let out = ok(agencyflow(&["--data-dir", s(dir), "keys"], &[]));
    let key = |label: &str| {
        out.lines()
            .find(|l| l.starts_with(label))
            .and_then(|l| l.split_whitespace().last())
            .unwrap()
            .to_string()
    };
    (key("anon key:"), key("service_role key:"))
}

/// The embedded cluster of a data directory, as the superuser (from its postmaster.pid).
fn pg_url(dir: &Path, user: &str) -> String {
    let pid = std::fs::read_to_string(dir.join("pg/postmaster.pid")).unwrap();
    let lines: Vec<&str> = pid.lines().collect();
    format!(
        "host={} port={} user={user} dbname=postgres",
        lines[4].trim(),
        lines[3].trim()
    )
}

fn postgres_running_on(dir: &Path) -> bool {
    let canon = std::fs::canonicalize(dir).unwrap();
    let out = Command::new("pgrep")
        .args(["-f", &format!("postgres -D {}", canon.join("pg").display())])
        .output()
        .unwrap();
    !out.stdout.is_empty()
}

struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, log: PathBuf, extra: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let mut args = vec![
            "--data-dir",
            s(dir),
            "serve",
            "--port",
            &port,
            "--ai-embed-worker",
            "false",
        ];
        args.extend_from_slice(extra);
        let child = command(&args, &[])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            port: port.parse().unwrap(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", server.port)) {
                s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                if resp.starts_with("HTTP/1.1 200") {
                    return server;
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("serve exited ({status}): {}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "serve not healthy in time: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "clean exit: {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Row count and an order-independent checksum of every table of our schemas.
async fn table_sums(url: &str) -> BTreeMap<String, (i64, String)> {
    let db = agencyflow_db::connect_one(url).await.unwrap();
    let tables = db
        .query(
            "select format('%I.%I', n.nspname, c.relname) from pg_class c
               join pg_namespace n on n.oid = c.relnamespace
              where c.relkind in ('r', 'p')
                and n.nspname in ('public', 'auth', 'storage', 'vault', 'private', 'supabase_migrations')
              order by 1",
            &[],
        )
        .await
        .unwrap();
    let mut sums = BTreeMap::new();
    for t in tables {
        let table: String = t.get(0);
        let row = db
            .query_one(
                &format!(
                    "select count(*), coalesce(md5(string_agg(t::text, ',' order by t::text)), '') from {table} t"
                ),
                &[],
            )
            .await
            .unwrap();
        sums.insert(table, (row.get(0), row.get(1)));
    }
    assert!(sums.len() > 40, "every table: {sums:?}");
    sums
}

/// Every file under a storage directory (temporary uploads aside), by relative path.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

struct Api {
    http: reqwest::Client,
    base: String,
    anon: String,
    service: String,
}

impl Api {
    async fn json(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("apikey", &self.anon)
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn sign_in(&self, email: &str, password: &str) -> (u16, Value) {
        self.json(
            "/auth/v1/token?grant_type=password",
            &self.anon,
            json!({ "email": email, "password": password }),
        )
        .await
    }

    async fn refresh(&self, token: &str) -> (u16, Value) {
        self.json(
            "/auth/v1/token?grant_type=refresh_token",
            &self.anon,
            json!({ "refresh_token": token }),
        )
        .await
    }

    async fn upload(&self, path: &str, bytes: Vec<u8>, upsert: bool) {
        let r = self
            .http
            .post(format!("{}/storage/v1/object/documents/{path}", self.base))
            .header("apikey", &self.service)
            .bearer_auth(&self.service)
            .header("content-type", "application/octet-stream")
            .header("x-upsert", if upsert { "true" } else { "false" })
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(
            status.is_success(),
            "upload {path}: {status} {}",
            r.text().await.unwrap()
        );
    }

    async fn download(&self, path: &str) -> Vec<u8> {
        let r = self
            .http
            .get(format!("{}/storage/v1/object/documents/{path}", self.base))
            .header("apikey", &self.service)
            .bearer_auth(&self.service)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "download {path}");
        r.bytes().await.unwrap().to_vec()
    }
}

fn api(base: String, dir: &Path) -> Api {
    let (anon, service) = keys(dir);
    Api {
        http: reqwest::Client::new(),
        base,
        anon,
        service,
    }
}

/// Deterministic bytes that do not compress.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const OWNER: &str = "owner@northwind.example";
const NEW_USER: &str = "backup.user@example.com";
const NEW_PASSWORD: &str = "a long backup password";

fn objects() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("backup-test/hello.txt", b"hello, second version".to_vec()),
        ("backup-test/nested/deeper/noise.bin", noise(300_000)),
        (
            "backup-test/a name with spaces and a rather long path that needs more than one hundred bytes in a tar header.md",
            b"# long\n".to_vec(),
        ),
    ]
}

fn scheduled(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| {
        let n = p.file_name().unwrap().to_string_lossy();
        n.starts_with("agencyflow-backup-") && n.ends_with(".tar.gz")
    });
    v.sort();
    v
}

fn manifest_of(archive: &Path) -> Value {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(archive).unwrap());
    let mut tar = tar::Archive::new(gz);
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return serde_json::from_str(&s).unwrap();
        }
    }
    panic!("no manifest in {}", archive.display());
}

#[test]
fn backup_and_restore_bring_back_the_same_installation() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = tmp();
    let src = root.path().join("src");
    ok(agencyflow(&["--data-dir", s(&src), "seed", "--demo"], &[]));
    let sched = root.path().join("scheduled");
    let server = Server::start(
        &src,
        root.path().join("src.log"),
        &[
            "--backup-every",
            "2s",
            "--backup-keep",
            "2",
            "--backup-dir",
            s(&sched),
        ],
    );
    let api_src = api(server.base(), &src);
    let vault_key = std::fs::read_to_string(src.join("vault_key")).unwrap();
    let (owner_refresh, user_refresh) = rt.block_on(async {
        let (status, body) = api_src
            .json(
                "/auth/v1/admin/users",
                &api_src.service,
                json!({ "email": NEW_USER, "password": NEW_PASSWORD, "email_confirm": true }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, owner) = api_src.sign_in(OWNER, "password123").await;
        assert_eq!(status, 200, "{owner}");
        let (status, user) = api_src.sign_in(NEW_USER, NEW_PASSWORD).await;
        assert_eq!(status, 200, "{user}");
        // A first version that an upsert replaces: only the second may come back.
        api_src
            .upload("backup-test/hello.txt", b"hello, first".to_vec(), false)
            .await;
        for (path, bytes) in objects() {
            api_src.upload(path, bytes, true).await;
        }
        let db = agencyflow_db::connect_one(&pg_url(&src, "postgres"))
            .await
            .unwrap();
        db.execute(
            "select set_config('agencyflow.vault_key', $1, false)",
            &[&vault_key.trim()],
        )
        .await
        .unwrap();
        db.execute(
            "select vault.create_secret('vault-value-42', 'backup-test-secret')",
            &[],
        )
        .await
        .unwrap();
        (
            owner["refresh_token"].as_str().unwrap().to_string(),
            user["refresh_token"].as_str().unwrap().to_string(),
        )
    });

    // While serving: on its embedded cluster, and through DATABASE_URL.
    let archive = root.path().join("backups/agencyflow.tar.gz");
    let out = ok(agencyflow(
        &["--data-dir", s(&src), "backup", s(&archive)],
        &[],
    ));
    assert!(out.contains("3 storage object(s)"), "{out}");
    assert_eq!(
        std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
        0o600,
        "the archive holds secrets"
    );
    let via_url = root.path().join("via-url.tar.gz");
    ok(agencyflow(
        &["--data-dir", s(&src), "backup", s(&via_url)],
        &[
            ("DATABASE_URL", &pg_url(&src, "authenticator")),
            ("MIGRATIONS_DATABASE_URL", &pg_url(&src, "postgres")),
        ],
    ));
    let manifest = manifest_of(&archive);
    assert_eq!(manifest["format"], "agencyflow-backup");
    assert_eq!(manifest["database"]["source"], "embedded");
    assert_eq!(manifest_of(&via_url)["database"]["source"], "external");
    assert_eq!(
        manifest["migrations"].as_array().unwrap().len(),
        agencyflow_db::migrate::embedded().len()
    );
    let members = manifest["members"].as_array().unwrap();
    for path in [
        "db/database.dump",
        "db/roles.sql",
        "secrets/jwt_secret",
        "secrets/vault_key",
    ] {
        assert!(members.iter().any(|m| m["path"] == path), "{path}");
    }
    assert_eq!(
        members
            .iter()
            .filter(|m| m["path"].as_str().unwrap().starts_with("storage/"))
            .count(),
        3
    );

    // The schedule: a backup every 2 s, the newest 2 kept.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = server.log_text();
        let written = log.matches("scheduled backup written").count();
        let removed = log.matches("old scheduled backup removed").count();
        // Each deletion is logged just after it happens: poll until the log has caught up.
        // Archived WAL goes with the backups that needed it (each base backup ends its
        // segment, so the third backup leaves segments no kept backup needs).
        let wal_pruned = log.contains("archived WAL older than the oldest kept backup removed");
        if written >= 3 && removed + 2 == written && scheduled(&sched).len() == 2 && wal_pruned {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scheduled backups: {written} written, {:?}; log: {}",
            scheduled(&sched),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let newest = scheduled(&sched).pop().unwrap();
    assert_eq!(manifest_of(&newest)["storage"]["objects"], 3);

    let src_sums = rt.block_on(table_sums(&pg_url(&src, "postgres")));
    let src_files = files(&src.join("storage"));
    assert_eq!(src_files.len(), 3, "{:?}", src_files.keys());
    let src_keys = keys(&src);
    server.stop();
    // ... but never a segment a kept backup needs.
    let oldest = scheduled(&sched).remove(0);
    let start = manifest_of(&oldest)["base_backup"]["start_wal"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        sched.join("wal").join(format!("{start}.gz")).is_file(),
        "{start} of {} pruned",
        oldest.display()
    );

    // Restore into a fresh data directory.
    let dst = root.path().join("dst");
    let out = ok(agencyflow(
        &["--data-dir", s(&dst), "restore", s(&archive)],
        &[],
    ));
    assert!(out.contains("3 storage object(s)"), "{out}");
    assert!(
        !postgres_running_on(&dst),
        "the restore's cluster is stopped"
    );
    assert!(!dst.join(".restore-tmp").exists());
    assert_eq!(keys(&dst), src_keys, "the same API keys");
    for secret in ["jwt_secret", "vault_key"] {
        assert_eq!(
            std::fs::read(dst.join(secret)).unwrap(),
            std::fs::read(src.join(secret)).unwrap()
        );
        assert_eq!(
            std::fs::metadata(dst.join(secret))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    assert_eq!(
        files(&dst.join("storage")),
        src_files,
        "the same file bytes"
    );

    let server = Server::start(&dst, root.path().join("dst.log"), &[]);
    // Before any request writes (sign-ins do).
    let dst_sums = rt.block_on(table_sums(&pg_url(&dst, "postgres")));
    assert_eq!(dst_sums, src_sums, "every table, row for row");
    let api_dst = api(server.base(), &dst);
    rt.block_on(async {
        let (status, body) = api_dst.sign_in(OWNER, "password123").await;
        assert_eq!(status, 200, "demo users sign in with their password: {body}");
        let (status, body) = api_dst.sign_in(NEW_USER, NEW_PASSWORD).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = api_dst.sign_in(NEW_USER, "not the password").await;
        assert_eq!(status, 400, "{body}");
        for token in [&owner_refresh, &user_refresh] {
            let (status, body) = api_dst.refresh(token).await;
            assert_eq!(status, 200, "old refresh tokens still work: {body}");
            assert!(body["access_token"].is_string());
        }
        for (path, bytes) in objects() {
            assert_eq!(api_dst.download(path).await, bytes, "{path}");
        }
        let db = agencyflow_db::connect_one(&pg_url(&dst, "postgres"))
            .await
            .unwrap();
        let key = std::fs::read_to_string(dst.join("vault_key")).unwrap();
        db.execute(
            "select set_config('agencyflow.vault_key', $1, false)",
            &[&key.trim()],
        )
        .await
        .unwrap();
        let secret: String = db
            .query_one(
                "select decrypted_secret from vault.decrypted_secrets where name = 'backup-test-secret'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(secret, "vault-value-42");
    });
    server.stop();
    assert!(!postgres_running_on(&dst));

    // The archive taken through DATABASE_URL restores to the same state.
    let dst2 = root.path().join("dst2");
    ok(agencyflow(
        &["--data-dir", s(&dst2), "restore", s(&via_url)],
        &[],
    ));
    let server = Server::start(&dst2, root.path().join("dst2.log"), &[]);
    assert_eq!(
        rt.block_on(table_sums(&pg_url(&dst2, "postgres"))),
        src_sums
    );
    assert_eq!(keys(&dst2), src_keys);
    server.stop();
}

#[test]
fn restore_refuses_corrupt_archives_and_non_empty_directories() {
    let root = tmp();
    let src = root.path().join("src");
    ok(agencyflow(&["--data-dir", s(&src), "migrate"], &[]));
    // Not serving: the backup starts the cluster for itself, and stops it.
    let archive = root.path().join("a.tar.gz");
    ok(agencyflow(
        &["--data-dir", s(&src), "backup", s(&archive)],
        &[],
    ));
    assert!(!postgres_running_on(&src));

    // A data directory with something in it.
    let busy = root.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), b"mine").unwrap();
    let o = agencyflow(&["--data-dir", s(&busy), "restore", s(&archive)], &[]);
    refused(&o, 2, "--force");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1, "untouched");

    let fresh = root.path().join("fresh");
    let bytes = std::fs::read(&archive).unwrap();
    let bad = root.path().join("bad.tar.gz");
    let restore_bad = |contents: &[u8]| {
        std::fs::write(&bad, contents).unwrap();
        let o = agencyflow(&["--data-dir", s(&fresh), "restore", s(&bad)], &[]);
        assert!(!fresh.exists(), "nothing is left behind");
        o
    };
    // A flipped byte: the compressed stream or the tar breaks.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    refused(&restore_bad(&flipped), 1, "corrupt");
    // Truncated.
    refused(&restore_bad(&bytes[..bytes.len() * 2 / 3]), 1, "corrupt");
    // A member changed inside an intact gzip stream: only its checksum tells.
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    let header = (0..tar.len())
        .step_by(512)
        .find(|&at| tar[at..].starts_with(b"db/database.dump\0"))
        .unwrap();
    tar[header + 512 + 4000] ^= 0x01;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    refused(
        &restore_bad(&gz.finish().unwrap()),
        1,
        "db/database.dump does not match its checksum",
    );
    refused(
        &restore_bad(b"not an archive at all"),
        1,
        "nothing was restored",
    );

    // --force replaces an installation's database and secrets, and keeps the rest.
    ok(agencyflow(&["--data-dir", s(&busy), "migrate"], &[]));
    assert_ne!(keys(&busy), keys(&src), "another installation");
    let out = ok(agencyflow(
        &["--data-dir", s(&busy), "restore", "--force", s(&archive)],
        &[],
    ));
    assert!(out.contains("restored"), "{out}");
    assert_eq!(std::fs::read(busy.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(keys(&busy), keys(&src));
    let mut left: Vec<String> = std::fs::read_dir(&busy)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "jwt_secret",
            "notes.txt",
            "pg",
            "pg.log",
            "run",
            "storage",
            "vault_key"
        ],
        "the replaced parts are gone, nothing is left aside"
    );
    let o = agencyflow(&["--data-dir", s(&busy), "migrate", "--dry-run"], &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no pending migrations"),
        "{}",
        stderr(&o)
    );
    assert!(!postgres_running_on(&busy));

    // Into an empty DATABASE_URL database (here: a new database of a served cluster, whose
    // roles exist already); a database with agencyflow's schemas is refused.
    let server = Server::start(&src, root.path().join("src.log"), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = pg_url(&src, "postgres");
    rt.block_on(async {
        let db = agencyflow_db::connect_one(&admin).await.unwrap();
        db.batch_execute("create database restored").await.unwrap();
    });
    let restored = |user: &str| pg_url(&src, user).replace("dbname=postgres", "dbname=restored");
    let ext = root.path().join("ext");
    let o = agencyflow(
        &["--data-dir", s(&ext), "restore", s(&archive)],
        &[
            ("DATABASE_URL", &pg_url(&src, "authenticator")),
            ("MIGRATIONS_DATABASE_URL", &admin),
        ],
    );
    refused(&o, 2, "DATABASE_URL");
    assert!(!ext.exists());
    let out = ok(agencyflow(
        &["--data-dir", s(&ext), "restore", s(&archive)],
        &[
            ("DATABASE_URL", &restored("authenticator")),
            ("MIGRATIONS_DATABASE_URL", &restored("postgres")),
        ],
    ));
    assert!(out.contains("into DATABASE_URL"), "{out}");
    assert_eq!(keys(&ext), keys(&src));
    assert!(
        !ext.join("pg").exists(),
        "no embedded cluster for an external database"
    );
    assert_eq!(
        rt.block_on(table_sums(&restored("postgres"))),
        rt.block_on(table_sums(&admin))
    );
    server.stop();

    // A schedule that is not one: clap's error, exit code 2, before anything starts.
    for every in ["0s", "24x", "soon"] {
        let o = agencyflow(
            &["--data-dir", s(&src), "serve", "--backup-every", every],
            &[],
        );
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("--backup-every"), "{}", stderr(&o));
    }

    // Nothing to back up.
    let o = agencyflow(
        &[
            "--data-dir",
            s(&root.path().join("nothing")),
            "backup",
            s(&root.path().join("x.tar.gz")),
        ],
        &[],
    );
    refused(&o, 1, "no database to back up");
}

/// Point-in-time recovery: with scheduled backups the embedded cluster archives its WAL into
/// `<backup-dir>/wal`; a backup taken then holds a base backup; `restore --until` replays the
/// archive on it and stops at that moment. Rows written at t1, t2, t3: recovered to a moment
/// between t2 and t3, the database holds exactly the first two.
#[test]
fn restore_until_a_moment_replays_the_wal_archive_to_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = tmp();
    let src = root.path().join("src");
    let backups = root.path().join("backups");
    let server = Server::start(
        &src,
        root.path().join("src.log"),
        &["--backup-every", "1d", "--backup-dir", s(&backups)],
    );
    let admin = pg_url(&src, "postgres");
    let sql = |q: &str| -> Vec<String> {
        rt.block_on(async {
            let db = agencyflow_db::connect_one(&admin).await.unwrap();
            db.simple_query(q)
                .await
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    agencyflow_db::tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap_or_default().to_string())
                    }
                    _ => None,
                })
                .collect()
        })
    };
    assert_eq!(sql("show archive_mode"), ["on"]);
    sql("create table public.pitr (id int primary key, at timestamptz not null default clock_timestamp())");

    // A base backup, taken while serving.
    let archive = backups.join("base.tar.gz");
    let started = sql("select to_char(now() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')");
    ok(agencyflow(
        &["--data-dir", s(&src), "backup", s(&archive)],
        &[],
    ));
    let m = manifest_of(&archive);
    let base = &m["base_backup"];
    assert_eq!(base["member"], "db/base.tar", "{m}");
    assert!(
        m["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["path"] == "db/base.tar"),
        "{m}"
    );

    // t1, t2, the moment, t3; each commit's WAL pushed into the archive.
    sql("insert into public.pitr (id) values (1)");
    sql("insert into public.pitr (id) values (2)");
    let moment =
        sql("select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')")
            .remove(0);
    sql("insert into public.pitr (id) values (3)");
    let last = sql("select pg_walfile_name(pg_switch_wal())").remove(0);
    let wal = backups.join("wal");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wal.join(format!("{last}.gz")).is_file() {
        assert!(
            Instant::now() < deadline,
            "{last} not archived: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Archived durably under its name, no temporary file left.
    let names: Vec<String> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    // Refusals, each before anything is written.
    let dst = root.path().join("dst");
    let o = agencyflow(
        &[
            "--data-dir",
            s(&dst),
            "restore",
            s(&archive),
            "--until",
            &started[0],
        ],
        &[],
    );
    refused(&o, 1, "before the end of this archive's base backup");
    assert!(!dst.exists());
    let empty = root.path().join("no-wal");
    std::fs::create_dir(&empty).unwrap();
    let o = agencyflow(
        &[
            "--data-dir",
            s(&dst),
            "restore",
            s(&archive),
            "--until",
            &moment,
            "--wal-dir",
            s(&empty),
        ],
        &[],
    );
    refused(&o, 1, "no WAL archive");
    assert!(!dst.exists());
    let o = agencyflow(
        &[
            "--data-dir",
            s(&dst),
            "restore",
            s(&archive),
            "--until",
            "yesterday",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!dst.exists());
    // An archive without a base backup (no WAL archiving when it was taken) cannot do it.
    let plain_src = root.path().join("plain");
    ok(agencyflow(&["--data-dir", s(&plain_src), "migrate"], &[]));
    let plain = root.path().join("plain.tar.gz");
    ok(agencyflow(
        &["--data-dir", s(&plain_src), "backup", s(&plain)],
        &[],
    ));
    let o = agencyflow(
        &[
            "--data-dir",
            s(&dst),
            "restore",
            s(&plain),
            "--until",
            &moment,
        ],
        &[],
    );
    refused(&o, 1, "has no base backup");
    assert!(!dst.exists());

    // Recovered to the moment: rows 1 and 2, not 3; then served as usual.
    let out = ok(agencyflow(
        &[
            "--data-dir",
            s(&dst),
            "restore",
            s(&archive),
            "--until",
            &moment,
        ],
        &[],
    ));
    assert!(out.contains("point-in-time recovery:"), "{out}");
    assert!(
        !dst.join("pg/recovery.signal").exists(),
        "promoted: {}",
        std::fs::read_to_string(dst.join("pg.log")).unwrap_or_default()
    );
    server.stop();
    let restored = Server::start(&dst, root.path().join("dst.log"), &[]);
    let url = pg_url(&dst, "postgres");
    let ids: Vec<i32> = rt.block_on(async {
        let db = agencyflow_db::connect_one(&url).await.unwrap();
        db.query("select id from public.pitr order by id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    assert_eq!(ids, [1, 2]);
    assert_eq!(keys(&dst), keys(&src));
    // The restored cluster takes writes (it was promoted).
    rt.block_on(async {
        let db = agencyflow_db::connect_one(&url).await.unwrap();
        db.execute("insert into public.pitr (id) values (4)", &[])
            .await
            .unwrap();
    });
    restored.stop();
}
