//! The embedded PostgreSQL cluster: `agencyflow serve` without `DATABASE_URL` creates,
//! starts and stops its own PostgreSQL 15 in the data directory.
//!
//! Layout of the data directory:
//! - `pg/`      the cluster (PGDATA), created by initdb into `pg.initdb/` and renamed, so an
//!   interrupted first start never leaves a half-made cluster behind;
//! - `run/`     the Unix socket directory (mode 0700);
//! - `pg.log`   the server's log.
//!
//! The postmaster is our child in its own process group (a terminal's Ctrl-C reaches us, not
//! it, so we can drain requests first) and gets SIGINT if we die (`PR_SET_PDEATHSIG`), so no
//! postmaster is orphaned. When we run as root it runs as the `postgres` system user.
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("PostgreSQL server binaries not found (looked at `pg_config --bindir` and /usr/lib/postgresql/*/bin); install PostgreSQL 15 or run scripts/setup")]
    BinariesNotFound,
    #[error("{0}")]
    Io(String),
    #[error("initdb failed: {0}")]
    Initdb(String),
    #[error("PostgreSQL did not start: {0}")]
    Start(String),
    #[error("another PostgreSQL (pid {pid}) is already running on {data_dir}")]
    AlreadyRunning { pid: i32, data_dir: String },
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ClusterError {
    ClusterError::Io(format!("{what} {}: {e}", path.display()))
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub data_dir: PathBuf,
    /// Directory with `initdb`, `postgres`; found automatically when None.
    pub bin_dir: Option<PathBuf>,
    /// TCP port on 127.0.0.1; a free one is picked when None.
    pub port: Option<u16>,
    /// Durability off (fsync, full_page_writes): for throwaway test clusters only.
    pub ephemeral: bool,
    /// Further `-c name=value` settings for every postmaster of this cluster, restarted ones
    /// included (WAL archiving, a recovery target); not written into the cluster's files.
    pub settings: Vec<(String, String)>,
}

pub struct EmbeddedCluster {
    launch: Launch,
    child: Option<Child>,
}

/// How to start the postmaster, resolved once at first start and reused by every restart
/// (same binaries, user, directories and port, so connection strings stay valid).
#[derive(Clone)]
pub(crate) struct Launch {
    bins: PathBuf,
    who: Option<RunAs>,
    pub(crate) pgdata: PathBuf,
    pub(crate) socket_dir: PathBuf,
    pub(crate) log_path: PathBuf,
    pub(crate) port: u16,
    ephemeral: bool,
    settings: Vec<(String, String)>,
}

/// The system user the cluster runs as: ourselves, or `postgres` when we are root.
#[derive(Clone, Copy)]
struct RunAs {
    uid: Uid,
    gid: Gid,
}

fn run_as() -> Result<Option<RunAs>, ClusterError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")
        .map_err(|e| ClusterError::Io(format!("looking up user postgres: {e}")))?
        .ok_or_else(|| {
            ClusterError::Io("running as root needs a `postgres` system user to own the cluster (initdb refuses root)".into())
        })?;
    Ok(Some(RunAs {
        uid: user.uid,
        gid: user.gid,
    }))
}

/// Finds the PostgreSQL server binaries: `pg_config --bindir`, then the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    let has_server = |d: &Path| d.join("postgres").is_file() && d.join("initdb").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&d) {
                return Ok(d);
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_server(d))
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, d)| d)
        .ok_or(ClusterError::BinariesNotFound)
}

fn free_port() -> Result<u16, ClusterError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ClusterError::Io(format!("finding a free port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| ClusterError::Io(e.to_string()))?
        .port())
}

fn chown_tree(path: &Path, who: &RunAs) -> Result<(), ClusterError> {
    nix::unistd::chown(path, Some(who.uid), Some(who.gid))
        .map_err(|e| ClusterError::Io(format!("chown {}: {e}", path.display())))?;
    if path.is_dir() {
        for e in fs::read_dir(path).map_err(|e| io_err("reading", path, e))? {
            let e = e.map_err(|e| io_err("reading", path, e))?;
            chown_tree(&e.path(), who)?;
        }
    }
    Ok(())
}

/// A command for a PostgreSQL binary, as the cluster's user, optionally bound to our life.
/// Gives `path` (and everything under it) to the user the cluster runs as, when that is
/// not us (running as root, the cluster runs as `postgres`): for folders the postmaster
/// writes to, such as a WAL archive, and a cluster unpacked from a base backup.
pub fn chown_to_cluster_user(path: &Path) -> Result<(), ClusterError> {
    match run_as()? {
        Some(w) => chown_tree(path, &w),
        None => Ok(()),
    }
}

fn pg_command(bin: &Path, who: &Option<RunAs>, die_with_parent: bool) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_remove("PGDATA").env("LC_ALL", "C");
    let ids = who.as_ref().map(|w| (w.uid, w.gid));
    // SAFETY: only async-signal-safe calls (setgid, setuid, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = ids {
                nix::unistd::setgroups(&[gid]).map_err(std::io::Error::from)?;
                nix::unistd::setgid(gid).map_err(std::io::Error::from)?;
                nix::unistd::setuid(uid).map_err(std::io::Error::from)?;
            }
            if die_with_parent {
                // Set after setuid: a credential change clears the parent-death signal.
                nix::sys::prctl::set_pdeathsig(Some(Signal::SIGINT))
                    .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    cmd
}

impl Launch {
    /// Directories, the cluster itself on first use (initdb), the port.
    pub(crate) fn prepare(opts: &ClusterOptions) -> Result<Launch, ClusterError> {
        let bins = match &opts.bin_dir {
            Some(d) => d.clone(),
            None => find_bin_dir()?,
        };
        let who = run_as()?;
        let data_dir = &opts.data_dir;
        fs::create_dir_all(data_dir).map_err(|e| io_err("creating", data_dir, e))?;
        let data_dir = fs::canonicalize(data_dir).map_err(|e| io_err("resolving", data_dir, e))?;
        let pgdata = data_dir.join("pg");
        let socket_dir = data_dir.join("run");
        fs::create_dir_all(&socket_dir).map_err(|e| io_err("creating", &socket_dir, e))?;
        fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("chmod", &socket_dir, e))?;
        if let Some(w) = &who {
            // The cluster's user must be able to reach the data directory.
            fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| io_err("chmod", &data_dir, e))?;
            chown_tree(&socket_dir, w)?;
        }
        if !pgdata.join("PG_VERSION").is_file() {
            EmbeddedCluster::initdb(&bins, &data_dir, &pgdata, &who)?;
        }
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        Ok(Launch {
            bins,
            who,
            pgdata,
            socket_dir,
            log_path: data_dir.join("pg.log"),
            port,
            ephemeral: opts.ephemeral,
            settings: opts.settings.clone(),
        })
    }

    /// The postgres binary every postmaster of this cluster runs.
    pub(crate) fn postgres_bin(&self) -> PathBuf {
        self.bins.join("postgres")
    }

    /// Removes a stale `postmaster.pid` and starts the postmaster (not waiting for it): our
    /// child, in its own process group, bound to the calling thread's life.
    pub(crate) fn spawn(&self) -> Result<Child, ClusterError> {
        EmbeddedCluster::recover_stale_pid(&self.pgdata)?;
        let log_path = &self.log_path;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| io_err("opening", log_path, e))?;
        if let Some(w) = &self.who {
            chown_tree(log_path, w)?;
        }
        let mut cmd = pg_command(&self.postgres_bin(), &self.who, true);
        cmd.arg("-D")
            .arg(&self.pgdata)
            .arg("-k")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-h")
            .arg("127.0.0.1")
            .args(["-c", "shared_preload_libraries=pg_stat_statements"])
            .args(["-c", "logging_collector=off"])
            // /realtime/v1's postgres_changes read a logical slot (wal2json); PostgreSQL
            // itself invalidates the slot past max_slot_wal_keep_size, so WAL is never kept
            // without bound when no agencyflow reads it (docs/realtime.md).
            .args(["-c", "wal_level=logical"])
            .args(["-c", "max_replication_slots=64"])
            .args(["-c", "max_wal_senders=10"])
            .args(["-c", "max_slot_wal_keep_size=1GB"]);
        if supports_output_plugin_allowlist(&self.postgres_bin()) {
            // Builds that restrict logical decoding plugins (Debian's 15.20 and later) need
            // wal2json listed.
            cmd.args([
                "-c",
                "output_plugin_libraries=pgoutput,test_decoding,wal2json",
            ]);
        }
        if self.ephemeral {
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ]);
        }
        for (name, value) in &self.settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| io_err("opening", log_path, e))?,
            )
            .stderr(log)
            .process_group(0);
        cmd.spawn()
            .map_err(|e| ClusterError::Start(format!("spawning postgres: {e}")))
    }

    /// A libpq-style connection string for `user` and `dbname` over the Unix socket.
    pub(crate) fn url(&self, user: &str, dbname: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={dbname}",
            self.socket_dir.display(),
            self.port
        )
    }
}

/// Whether this PostgreSQL has the `output_plugin_libraries` setting (an allow-list of
/// logical decoding plugins some builds add); asked once per binary.
fn supports_output_plugin_allowlist(postgres: &Path) -> bool {
    static CACHE: std::sync::Mutex<Option<(PathBuf, bool)>> = std::sync::Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((p, v)) = cache.as_ref() {
        if p == postgres {
            return *v;
        }
    }
    let found = Command::new(postgres)
        .arg("--describe-config")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("output_plugin_libraries\t"))
        })
        .unwrap_or(false);
    *cache = Some((postgres.to_path_buf(), found));
    found
}

/// How long a first start may take to accept connections.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until the postmaster accepts connections (line 8 of `postmaster.pid` turns to
/// "ready"), or `exited` reports that it ended, or `timeout` passes. Errors carry the
/// log's tail.
pub(crate) fn wait_ready(
    launch: &Launch,
    log_from: u64,
    timeout: Duration,
    mut exited: impl FnMut() -> Option<std::process::ExitStatus>,
) -> Result<(), ClusterError> {
    let deadline = Instant::now() + timeout;
    let pidfile = launch.pgdata.join("postmaster.pid");
    loop {
        if let Some(status) = exited() {
            return Err(ClusterError::Start(format!(
                "postgres {}; last log lines:\n{}",
                describe_exit(status),
                tail(&launch.log_path, log_from, 15)
            )));
        }
        if let Ok(text) = fs::read_to_string(&pidfile) {
            if text.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(ClusterError::Start(format!(
                "not ready after {} s; last log lines:\n{}",
                timeout.as_secs(),
                tail(&launch.log_path, log_from, 15)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// "killed by signal 9 (SIGKILL)" or "exited with status 1".
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {sig} ({})", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => format!("ended ({status})"),
    }
}

/// The size of the log now: what a start writes comes after it.
pub(crate) fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Why a start failed, in one line: PostgreSQL's FATAL/PANIC messages written since
/// `from`, or else everything it wrote then (some messages, like a missing `pg_control`,
/// come without a severity), whitespace collapsed.
pub(crate) fn failure_reason(path: &Path, from: u64) -> String {
    let text = tail(path, from, 40);
    let severe: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            ["PANIC:", "FATAL:"]
                .iter()
                .find_map(|sev| l.find(sev).map(|i| &l[i..]))
        })
        .collect();
    let picked = if severe.is_empty() {
        text.lines().collect::<Vec<_>>().join(" ")
    } else {
        severe.join(" ")
    };
    let one: String = picked.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.is_empty() {
        "PostgreSQL wrote nothing to its log".into()
    } else {
        one
    }
}

impl EmbeddedCluster {
    /// Creates the cluster on first use, recovers from a crash's stale pid file, starts
    /// PostgreSQL and waits until it accepts connections.
    pub fn start(opts: &ClusterOptions) -> Result<Self, ClusterError> {
        let launch = Launch::prepare(opts)?;
        let log_from = log_len(&launch.log_path);
        let child = launch.spawn()?;
        let mut cluster = EmbeddedCluster {
            launch,
            child: Some(child),
        };
        let ready = wait_ready(&cluster.launch, log_from, START_TIMEOUT, || {
            cluster
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
        });
        if let Err(e) = ready {
            // Reaped already when it exited (std keeps the status); stopped when it hangs.
            if let Some(Ok(Some(_))) = cluster.child.as_mut().map(|c| c.try_wait()) {
                cluster.child = None;
            }
            cluster.stop();
            return Err(e);
        }
        tracing::info!(port = cluster.launch.port, socket = %cluster.launch.socket_dir.display(), "embedded PostgreSQL started");
        Ok(cluster)
    }

    /// Hands the running postmaster over (to the supervisor, which waits on it).
    pub(crate) fn into_parts(mut self) -> (Launch, Option<Child>) {
        let child = self.child.take();
        (self.launch.clone(), child)
    }

    fn initdb(
        bins: &Path,
        data_dir: &Path,
        pgdata: &Path,
        who: &Option<RunAs>,
    ) -> Result<(), ClusterError> {
        let tmp = data_dir.join("pg.initdb");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io_err("removing", &tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("chmod", &tmp, e))?;
        if let Some(w) = who {
            chown_tree(&tmp, w)?;
        }
        tracing::info!(dir = %pgdata.display(), "creating PostgreSQL cluster (initdb)");
        let out = pg_command(&bins.join("initdb"), who, false)
            .arg("-D")
            .arg(&tmp)
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-instructions",
            ])
            .output()
            .map_err(|e| ClusterError::Initdb(format!("spawning initdb: {e}")))?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(ClusterError::Initdb(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        // Settings live in the cluster so `pg_ctl` or a manual start behaves the same.
        let conf = tmp.join("postgresql.auto.conf");
        let mut extra = fs::read_to_string(&conf).unwrap_or_default();
        extra.push_str(
            "shared_preload_libraries = 'pg_stat_statements'\nlisten_addresses = '127.0.0.1'\n",
        );
        fs::write(&conf, extra).map_err(|e| io_err("writing", &conf, e))?;
        if let Some(w) = who {
            chown_tree(&conf, w)?;
        }
        fs::rename(&tmp, pgdata).map_err(|e| io_err("renaming", &tmp, e))?;
        Ok(())
    }

    /// A crash leaves `postmaster.pid` behind. If its process is gone, or is not a postgres
    /// serving this directory (pid reuse), the file is stale and removed; a live postgres
    /// on the same directory is refused, never shared.
    fn recover_stale_pid(pgdata: &Path) -> Result<(), ClusterError> {
        let pidfile = pgdata.join("postmaster.pid");
        let Ok(text) = fs::read_to_string(&pidfile) else {
            return Ok(());
        };
        let pid: i32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        if pid > 0 && kill(Pid::from_raw(pid), None).is_ok() {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("postgres") && cmdline.contains(&*pgdata.to_string_lossy()) {
                return Err(ClusterError::AlreadyRunning {
                    pid,
                    data_dir: pgdata.display().to_string(),
                });
            }
        }
        tracing::warn!(pid, "removing stale postmaster.pid left by a crash");
        fs::remove_file(&pidfile).map_err(|e| io_err("removing", &pidfile, e))
    }

    /// The socket directory and port of a cluster already running on `data_dir` (another
    /// agencyflow process serving it), read from its `postmaster.pid`.
    pub fn running_at(data_dir: &Path) -> Option<(PathBuf, u16)> {
        let text = fs::read_to_string(data_dir.join("pg/postmaster.pid")).ok()?;
        let mut lines = text.lines();
        let port = lines.nth(3)?.trim().parse().ok()?;
        let socket_dir = PathBuf::from(lines.next()?.trim());
        Some((socket_dir, port))
    }

    pub fn port(&self) -> u16 {
        self.launch.port
    }

    pub fn socket_dir(&self) -> &Path {
        &self.launch.socket_dir
    }

    pub fn pgdata(&self) -> &Path {
        &self.launch.pgdata
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A libpq-style connection string for `user` and `dbname` over the Unix socket.
    pub fn url(&self, user: &str, dbname: &str) -> String {
        self.launch.url(user, dbname)
    }

    /// Fast shutdown (SIGINT: abort transactions, checkpoint, exit), escalating to an
    /// immediate one if it takes more than 30 s. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    tracing::warn!("PostgreSQL did not stop in 30 s; sending SIGQUIT");
                    let _ = kill(pid, Signal::SIGQUIT);
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        tracing::info!("embedded PostgreSQL stopped");
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `n` lines the log got since byte `from`.
fn tail(path: &Path, from: u64, n: usize) -> String {
    use std::io::{Seek, SeekFrom};
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.read_to_end(&mut bytes);
        s = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
