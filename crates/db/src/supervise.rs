//! Supervision of the embedded cluster: when the postmaster dies under a running server
//! (`kill -9`, the OOM killer, a PANIC), start it again, so that PostgreSQL's crash recovery
//! replays the WAL and the API comes back by itself.
//!
//! One long-lived thread, `postgres-supervisor`, starts the postmaster, waits on it and
//! starts its successors: `PR_SET_PDEATHSIG` fires when the thread that forked a child
//! ends, so the thread that spawns every postmaster lives as long as the cluster is ours,
//! and no postmaster, first or restarted, outlives agencyflow.
//!
//! After an unexpected exit the supervisor:
//! 1. marks the cluster `Restarting` (the pools then fail fast, `/health` says so);
//! 2. waits out the restart delay: `initial_delay`, doubling for every further restart that
//!    follows a postmaster which ran less than a minute, capped at `max_delay`;
//! 3. waits for the dead postmaster's children to exit (they notice its death and quit in
//!    milliseconds; stragglers get SIGQUIT, then SIGKILL), since a new postmaster refuses to
//!    start while they hold the old shared memory;
//! 4. starts PostgreSQL on the same directories and port (connection strings stay valid)
//!    and waits (up to 10 minutes of crash recovery) until it accepts connections: `Up`
//!    again, one more restart counted.
//!
//! After `max_attempts` failed starts in a row the cluster is `Failed` with the reason in
//! one line (logged once, shown by `/health`); the supervisor then stops trying.
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cluster::{describe_exit, failure_reason, log_len, wait_ready, Launch};
use crate::{ClusterError, ClusterOptions, EmbeddedCluster};

/// How the supervisor restarts a postmaster that died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Failed starts in a row before giving up; 0 never restarts.
    pub max_attempts: u32,
    /// Pause before the first restart after a postmaster that ran a while.
    pub initial_delay: Duration,
    /// Cap of the doubling pause.
    pub max_delay: Duration,
}

impl RestartPolicy {
    /// No restarts: a dead postmaster leaves the cluster `Failed`.
    pub fn never() -> Self {
        RestartPolicy {
            max_attempts: 0,
            ..Default::default()
        }
    }

    /// The pause before restart number `streak` (0-based) of a crash streak.
    pub fn delay(&self, streak: u32) -> Duration {
        self.initial_delay
            .saturating_mul(1u32 << streak.min(20))
            .min(self.max_delay)
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// A postmaster that ran this long was healthy: the next restart pauses `initial_delay` again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// How long a restart may take to accept connections: crash recovery replays all the WAL
/// written since the last checkpoint, which can take minutes on a busy database.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(600);

/// What the embedded PostgreSQL is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbState {
    /// Accepting connections.
    Up,
    /// The postmaster died (`cause`: its exit status or signal); a restart is under way.
    Restarting { cause: String },
    /// It could not be started again; `reason` is PostgreSQL's own word, in one line.
    Failed { reason: String },
    /// Stopped by agencyflow (shutdown).
    Stopped,
}

/// One death of the postmaster and what the supervisor made of it (the console's Logs &
/// health page shows the last [`RESTART_HISTORY`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartEvent {
    /// When the postmaster was found dead.
    pub died_at: std::time::SystemTime,
    /// Its exit status or signal.
    pub cause: String,
    /// When a restart accepted connections again (None: under way, or it failed).
    pub back_at: Option<std::time::SystemTime>,
    /// Start attempts that failed before that.
    pub failed_attempts: u32,
}

/// How many [`RestartEvent`]s are kept.
pub const RESTART_HISTORY: usize = 50;

/// The cluster's state as the HTTP side sees it: cheap to clone, and `is_up` is one atomic
/// load, so every pool checkout can ask.
#[derive(Clone)]
pub struct ClusterHealth(Arc<HealthInner>);

struct HealthInner {
    up: AtomicBool,
    state: RwLock<DbState>,
    restarts: AtomicU64,
    failed_starts: AtomicU64,
    history: Mutex<std::collections::VecDeque<RestartEvent>>,
}

impl ClusterHealth {
    fn new() -> Self {
        ClusterHealth(Arc::new(HealthInner {
            up: AtomicBool::new(true),
            state: RwLock::new(DbState::Up),
            restarts: AtomicU64::new(0),
            failed_starts: AtomicU64::new(0),
            history: Mutex::default(),
        }))
    }

    /// The last deaths of the postmaster and their restarts, oldest first.
    pub fn restart_history(&self) -> Vec<RestartEvent> {
        let h = self.0.history.lock().unwrap_or_else(|p| p.into_inner());
        h.iter().cloned().collect()
    }

    fn died(&self, cause: &str) {
        let mut h = self.0.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == RESTART_HISTORY {
            h.pop_front();
        }
        h.push_back(RestartEvent {
            died_at: std::time::SystemTime::now(),
            cause: cause.to_string(),
            back_at: None,
            failed_attempts: 0,
        });
    }

    fn update_last(&self, f: impl FnOnce(&mut RestartEvent)) {
        let mut h = self.0.history.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = h.back_mut() {
            f(last);
        }
    }

    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Acquire)
    }

    pub fn state(&self) -> DbState {
        self.0.state.read().expect("cluster state lock").clone()
    }

    /// Restarts that brought PostgreSQL back.
    pub fn restarts(&self) -> u64 {
        self.0.restarts.load(Ordering::Relaxed)
    }

    /// Restart attempts that failed.
    pub fn failed_starts(&self) -> u64 {
        self.0.failed_starts.load(Ordering::Relaxed)
    }

    fn set(&self, s: DbState) {
        let up = s == DbState::Up;
        *self.0.state.write().expect("cluster state lock") = s;
        self.0.up.store(up, Ordering::Release);
    }
}

/// The supervisor's shared control block: the running postmaster's pid (only while it is
/// not yet reaped, so a signal never reaches a recycled pid) and the stop request.
#[derive(Default)]
struct Ctl {
    state: Mutex<CtlState>,
    cv: Condvar,
}

#[derive(Default)]
struct CtlState {
    pid: Option<Pid>,
    stopping: bool,
    finished: bool,
}

impl Ctl {
    fn lock(&self) -> MutexGuard<'_, CtlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The embedded cluster under supervision (see the module docs).
pub struct SupervisedCluster {
    launch: Launch,
    health: ClusterHealth,
    ctl: Arc<Ctl>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SupervisedCluster {
    /// Starts the cluster (as [`EmbeddedCluster::start`]) on the supervisor thread and
    /// returns once it accepts connections; errors of that first start are returned.
    pub fn start(opts: &ClusterOptions, policy: RestartPolicy) -> Result<Self, ClusterError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let ctl = Arc::new(Ctl::default());
        let health = ClusterHealth::new();
        let opts = opts.clone();
        let (sup_ctl, sup_health) = (ctl.clone(), health.clone());
        let thread = std::thread::Builder::new()
            .name("postgres-supervisor".into())
            .spawn(move || {
                let cluster = match EmbeddedCluster::start(&opts) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let (launch, child) = cluster.into_parts();
                let Some(child) = child else {
                    let _ = tx.send(Err(ClusterError::Start("no postmaster".into())));
                    return;
                };
                sup_ctl.lock().pid = Some(Pid::from_raw(child.id() as i32));
                let _ = tx.send(Ok(launch.clone()));
                Supervisor {
                    launch,
                    ctl: sup_ctl,
                    health: sup_health,
                    policy,
                }
                .run(child);
            })
            .map_err(|e| ClusterError::Io(format!("spawning the supervisor thread: {e}")))?;
        match rx.recv() {
            Ok(Ok(launch)) => Ok(SupervisedCluster {
                launch,
                health,
                ctl,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(ClusterError::Start("the supervisor thread ended".into()))
            }
        }
    }

    /// The state the pools and `/health` read.
    pub fn health(&self) -> ClusterHealth {
        self.health.clone()
    }

    /// The running postmaster's process id (None while it is down).
    pub fn pid(&self) -> Option<u32> {
        self.ctl.lock().pid.map(|p| p.as_raw() as u32)
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

    /// A libpq-style connection string for `user` and `dbname` over the Unix socket.
    pub fn url(&self, user: &str, dbname: &str) -> String {
        self.launch.url(user, dbname)
    }

    /// Fast shutdown (SIGINT: abort transactions, checkpoint, exit), escalating to an
    /// immediate one (SIGQUIT) after 30 s; ends any restart in progress. Idempotent.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        {
            let mut s = self.ctl.lock();
            s.stopping = true;
            if let Some(pid) = s.pid {
                let _ = kill(pid, Signal::SIGINT);
            }
            self.ctl.cv.notify_all();
            let (mut s, waited) = self
                .ctl
                .cv
                .wait_timeout_while(s, Duration::from_secs(30), |s| !s.finished)
                .unwrap_or_else(|p| p.into_inner());
            if waited.timed_out() {
                if let Some(pid) = s.pid {
                    tracing::warn!("PostgreSQL did not stop in 30 s; sending SIGQUIT");
                    let _ = kill(pid, Signal::SIGQUIT);
                }
                s = self
                    .ctl
                    .cv
                    .wait_while(s, |s| !s.finished)
                    .unwrap_or_else(|p| p.into_inner());
            }
            drop(s);
        }
        let _ = thread.join();
        tracing::info!("embedded PostgreSQL stopped");
    }
}

impl Drop for SupervisedCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Supervisor {
    launch: Launch,
    ctl: Arc<Ctl>,
    health: ClusterHealth,
    policy: RestartPolicy,
}

impl Supervisor {
    fn run(self, mut child: Child) {
        // Restarts since the last postmaster that ran at least STABLE_AFTER.
        let mut streak: u32 = 0;
        let mut started = Instant::now();
        loop {
            let status = self.wait_exit(&mut child);
            if self.stopping() {
                break;
            }
            let cause = describe_exit(status);
            let ran = started.elapsed();
            if ran >= STABLE_AFTER {
                streak = 0;
            }
            self.health.died(&cause);
            self.health.set(DbState::Restarting {
                cause: cause.clone(),
            });
            if self.policy.max_attempts == 0 {
                let reason = format!("PostgreSQL {cause} and restarts are disabled");
                tracing::error!(reason = %reason, "embedded PostgreSQL died and will not be restarted");
                self.health.set(DbState::Failed { reason });
                break;
            }
            tracing::warn!(
                cause = %cause,
                ran_secs = ran.as_secs(),
                delay_ms = self.policy.delay(streak).as_millis() as u64,
                "embedded PostgreSQL exited unexpectedly; restarting it (crash recovery replays the WAL)"
            );
            match self.restart(&mut streak) {
                Some(next) => {
                    child = next;
                    started = Instant::now();
                }
                None => break,
            }
        }
        let mut s = self.ctl.lock();
        if s.stopping {
            self.health.set(DbState::Stopped);
        }
        s.finished = true;
        self.ctl.cv.notify_all();
    }

    fn stopping(&self) -> bool {
        self.ctl.lock().stopping
    }

    /// Blocks until the postmaster exits; forgets its pid before reaping it.
    fn wait_exit(&self, child: &mut Child) -> ExitStatus {
        let pid = Pid::from_raw(child.id() as i32);
        // Retried when a signal interrupts the wait.
        while let Err(Errno::EINTR) =
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
        self.reap(child)
    }

    /// The postmaster's exit status if it has exited (then reaped), without blocking.
    fn try_exit(&self, child: &mut Child) -> Option<ExitStatus> {
        let pid = Pid::from_raw(child.id() as i32);
        match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => None,
            _ => Some(self.reap(child)),
        }
    }

    fn reap(&self, child: &mut Child) -> ExitStatus {
        self.ctl.lock().pid = None;
        child.wait().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the postmaster's exit status");
            std::os::unix::process::ExitStatusExt::from_raw(0)
        })
    }

    /// Waits `d` unless a stop comes first; true when stopping.
    fn pause(&self, d: Duration) -> bool {
        let s = self.ctl.lock();
        let (s, _) = self
            .ctl
            .cv
            .wait_timeout_while(s, d, |s| !s.stopping)
            .unwrap_or_else(|p| p.into_inner());
        s.stopping
    }

    /// Restart attempts with back-off until one is ready (its child returned), a stop is
    /// requested, or `max_attempts` failed (then `Failed`); None in the last two cases.
    fn restart(&self, streak: &mut u32) -> Option<Child> {
        let max = self.policy.max_attempts;
        for attempt in 1..=max {
            let delay = self.policy.delay(*streak);
            *streak = streak.saturating_add(1);
            if self.pause(delay) {
                return None;
            }
            self.clear_leftovers();
            match self.start_once() {
                Ok(Some(child)) => {
                    self.health.0.restarts.fetch_add(1, Ordering::Relaxed);
                    self.health
                        .update_last(|e| e.back_at = Some(std::time::SystemTime::now()));
                    self.health.set(DbState::Up);
                    tracing::info!(
                        attempt,
                        restarts = self.health.restarts(),
                        "embedded PostgreSQL restarted and accepts connections again"
                    );
                    return Some(child);
                }
                Ok(None) => return None,
                Err(reason) => {
                    self.health.0.failed_starts.fetch_add(1, Ordering::Relaxed);
                    self.health.update_last(|e| e.failed_attempts += 1);
                    if self.stopping() {
                        return None;
                    }
                    if attempt == max {
                        tracing::error!(
                            attempts = attempt,
                            reason = %reason,
                            "embedded PostgreSQL could not be restarted; answering 503 until agencyflow is restarted"
                        );
                        self.health.set(DbState::Failed { reason });
                        return None;
                    }
                    // The reason goes in the one line that gives up; each try points to the log.
                    tracing::debug!(attempt, reason = %reason, "restart attempt failed");
                    tracing::warn!(
                        attempt,
                        of = max,
                        log = %self.launch.log_path.display(),
                        "embedded PostgreSQL restart attempt failed; retrying"
                    );
                }
            }
        }
        None
    }

    /// One start: Ok(Some) when ready, Ok(None) when a stop interrupted it, Err(reason).
    fn start_once(&self) -> Result<Option<Child>, String> {
        let log_from = log_len(&self.launch.log_path);
        let mut child = {
            let mut s = self.ctl.lock();
            if s.stopping {
                return Ok(None);
            }
            let child = self.launch.spawn().map_err(|e| one_line(&e.to_string()))?;
            s.pid = Some(Pid::from_raw(child.id() as i32));
            child
        };
        let mut exit = None;
        let ready = wait_ready(&self.launch, log_from, RECOVERY_TIMEOUT, || {
            exit = self.try_exit(&mut child);
            exit
        });
        match (ready, exit) {
            (Ok(()), _) => Ok(Some(child)),
            (Err(_), _) if self.stopping() => {
                if exit.is_none() {
                    self.wait_exit(&mut child);
                }
                Ok(None)
            }
            (Err(_), Some(status)) => Err(format!(
                "postgres {}: {}",
                describe_exit(status),
                failure_reason(&self.launch.log_path, log_from)
            )),
            (Err(e), None) => {
                // Not ready in time: stop it before the next attempt.
                if let Some(pid) = self.ctl.lock().pid {
                    let _ = kill(pid, Signal::SIGQUIT);
                }
                self.wait_exit(&mut child);
                Err(one_line(&e.to_string()))
            }
        }
    }

    /// Waits for the dead postmaster's processes (anything running the postgres binary in
    /// the cluster's directory) to exit: they notice within milliseconds; stragglers get
    /// SIGQUIT after 5 s and SIGKILL after 10 s. A new postmaster refuses to start while
    /// they hold the old shared memory.
    fn clear_leftovers(&self) {
        let exe = std::fs::canonicalize(self.launch.postgres_bin())
            .unwrap_or_else(|_| self.launch.postgres_bin());
        let pgdata = std::fs::canonicalize(&self.launch.pgdata)
            .unwrap_or_else(|_| self.launch.pgdata.clone());
        let begun = Instant::now();
        let mut sent = None;
        loop {
            let left = cluster_processes(&pgdata, &exe);
            if left.is_empty() {
                return;
            }
            let waited = begun.elapsed();
            let signal = if waited >= Duration::from_secs(15) {
                tracing::warn!(
                    pids = ?left,
                    "processes of the dead PostgreSQL do not exit; trying to start anyway"
                );
                return;
            } else if waited >= Duration::from_secs(10) {
                Some(Signal::SIGKILL)
            } else if waited >= Duration::from_secs(5) {
                Some(Signal::SIGQUIT)
            } else {
                None
            };
            if let Some(sig) = signal.filter(|s| sent != Some(*s)) {
                tracing::warn!(pids = ?left, signal = sig.as_str(), "stopping processes left by the dead PostgreSQL");
                for p in &left {
                    let _ = kill(*p, sig);
                }
                sent = Some(sig);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Live processes running `exe` with `pgdata` as their working directory: a postmaster
/// and its children always run there.
fn cluster_processes(pgdata: &Path, exe: &Path) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let dir = e.path();
            let cwd: PathBuf = std::fs::read_link(dir.join("cwd")).ok()?;
            if cwd != pgdata || std::fs::read_link(dir.join("exe")).ok()? != exe {
                return None;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // The state follows the command name, which is in parentheses.
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            (state != "Z" && state != "X").then_some(Pid::from_raw(pid))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_and_is_capped() {
        let p = RestartPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(4),
        };
        let d: Vec<u64> = (0..6).map(|i| p.delay(i).as_millis() as u64).collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(4));
    }

    #[test]
    fn our_own_process_is_found_by_its_directory_and_binary() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let cwd = std::env::current_dir().unwrap();
        let found = cluster_processes(&cwd, &me);
        assert!(found.contains(&Pid::this()), "{found:?}");
        assert!(cluster_processes(Path::new("/nonexistent"), &me).is_empty());
    }
}
