//! Logs & health and Realtime: the server's log tail, the embedded PostgreSQL supervisor's
//! restarts, backups (list, "take a backup now" as a background job) and the realtime
//! counters with their rates.
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ConsoleError, Result};
use crate::session::Admin;
use crate::{ConsoleState, Inner};

// ---- log tail ----------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct LogQuery {
    /// The least severe level shown: error, warn, info, debug, trace (default: all kept).
    level: Option<String>,
    limit: Option<usize>,
}

/// `GET /console/api/logs?level=warn&limit=500`: the server's own last log events.
pub async fn logs(
    State(state): State<ConsoleState>,
    _admin: Admin,
    Query(q): Query<LogQuery>,
) -> Result<Json<Value>> {
    let level = match q.level.as_deref().filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => Some(l.parse::<tracing::Level>().map_err(|_| {
            ConsoleError::bad_request("level is one of error, warn, info, debug, trace")
        })?),
    };
    let events = state
        .0
        .log_tail
        .recent(level, q.limit.unwrap_or(500).min(2000));
    Ok(Json(json!({ "events": events })))
}

// ---- supervisor --------------------------------------------------------------------------

fn time(t: std::time::SystemTime) -> chrono::DateTime<chrono::Utc> {
    t.into()
}

/// The embedded cluster's supervisor: its state, restarts and their times (null with
/// DATABASE_URL, where nothing is supervised).
pub(crate) fn supervisor(st: &Inner) -> Value {
    let Some(h) = &st.cluster else {
        return Value::Null;
    };
    let (state, detail) = match h.state() {
        agencyflow_db::DbState::Up => ("up", None),
        agencyflow_db::DbState::Restarting { cause } => ("restarting", Some(cause)),
        agencyflow_db::DbState::Failed { reason } => ("failed", Some(reason)),
        agencyflow_db::DbState::Stopped => ("stopped", None),
    };
    let history: Vec<Value> = h
        .restart_history()
        .into_iter()
        .rev()
        .map(|e| {
            json!({
                "died_at": time(e.died_at),
                "cause": e.cause,
                "back_at": e.back_at.map(time),
                "down_ms": e.back_at.and_then(|b| b.duration_since(e.died_at).ok()).map(|d| d.as_millis() as u64),
                "failed_attempts": e.failed_attempts,
            })
        })
        .collect();
    json!({
        "state": state,
        "detail": detail,
        "restarts": h.restarts(),
        "failed_starts": h.failed_starts(),
        "history": history,
    })
}

// ---- backups -----------------------------------------------------------------------------

/// What a finished backup wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupDone {
    pub file: String,
    pub bytes: u64,
    pub objects: u64,
    /// Storage objects deleted while it ran (not in it).
    pub missing: usize,
}

/// Takes backups with the server's own code (`agencyflow backup`), into `dir`.
pub trait BackupTaker: Send + Sync {
    /// Where the archives are (the scheduled backups' folder).
    fn dir(&self) -> PathBuf;
    /// Writes one archive to `file`.
    fn take(&self, file: PathBuf) -> BackupFuture;
}

/// What [`BackupTaker::take`] returns.
pub type BackupFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<BackupDone, String>> + Send>,
>;

#[derive(Debug, Clone, Serialize)]
struct Job {
    id: u64,
    by: String,
    file: String,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `running`, `done` or `failed`.
    state: &'static str,
    result: Option<BackupDone>,
    error: Option<String>,
}

/// The console's backup jobs: one at a time, the last few remembered.
#[derive(Default)]
pub struct BackupJobs(Mutex<(u64, VecDeque<Job>)>);

impl BackupJobs {
    fn snapshot(&self) -> Vec<Job> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.1.iter().rev().cloned().collect()
    }
    fn update(&self, id: u64, f: impl FnOnce(&mut Job)) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = g.1.iter_mut().find(|j| j.id == id) {
            f(j);
        }
    }
}

fn list_archives(dir: &std::path::Path) -> Vec<Value> {
    let mut out: Vec<(std::time::SystemTime, Value)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !(name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
                return None;
            }
            let m = e.metadata().ok()?;
            let modified = m.modified().ok()?;
            Some((
                modified,
                json!({ "name": name, "bytes": m.len(), "modified": time(modified) }),
            ))
        })
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    out.into_iter().map(|(_, v)| v).collect()
}

/// `GET /console/api/backups`: the archives in the backup folder and the console's jobs.
pub async fn backups(State(state): State<ConsoleState>, _admin: Admin) -> Result<Json<Value>> {
    let st = &state.0;
    let Some(b) = &st.backups else {
        return Ok(Json(json!({
            "available": false,
            "reason": "backups are taken by `agencyflow backup` here (the console was started without the database owner's connection)",
            "archives": [], "jobs": [],
        })));
    };
    let dir = b.dir();
    let archives = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || list_archives(&dir)
    })
    .await
    .map_err(ConsoleError::internal)?;
    Ok(Json(json!({
        "available": true,
        "dir": dir.display().to_string(),
        "archives": archives,
        "jobs": st.backup_jobs.snapshot(),
    })))
}

/// `POST /console/api/backups`: starts a backup in the background (one at a time); audited
/// when asked for and when it ends.
pub async fn take_backup(State(state): State<ConsoleState>, admin: Admin) -> Result<Json<Value>> {
    let st = &state.0;
    let Some(b) = st.backups.clone() else {
        return Err(ConsoleError::bad_request(
            "backups are not available from this console (run `agencyflow backup FILE`)",
        ));
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let file = b.dir().join(format!("agencyflow-console-{stamp}.tar.gz"));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id = {
        let mut g = st.backup_jobs.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.1.iter().any(|j| j.state == "running") {
            return Err(ConsoleError::conflict("a backup is already running"));
        }
        g.0 += 1;
        let id = g.0;
        if g.1.len() == 20 {
            g.1.pop_front();
        }
        g.1.push_back(Job {
            id,
            by: admin.email.clone(),
            file: name.clone(),
            started_at: chrono::Utc::now(),
            finished_at: None,
            state: "running",
            result: None,
            error: None,
        });
        id
    };
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "backups.take",
        Some(&name),
        json!({"job": id}),
    )
    .await;
    let weak = Arc::downgrade(&state.0);
    let work = b.take(file);
    let target = name.clone();
    tokio::spawn(async move {
        let result = work.await;
        let Some(st) = weak.upgrade() else { return };
        let detail = match &result {
            Ok(d) => json!({"job": id, "bytes": d.bytes, "objects": d.objects}),
            Err(e) => json!({"job": id, "error": e}),
        };
        st.backup_jobs.update(id, |j| {
            j.finished_at = Some(chrono::Utc::now());
            match result {
                Ok(d) => {
                    j.state = "done";
                    j.result = Some(d);
                }
                Err(e) => {
                    j.state = "failed";
                    j.error = Some(e);
                }
            }
        });
        let action = if detail.get("error").is_some() {
            "backups.failed"
        } else {
            "backups.done"
        };
        st.audit(
            Some(&admin),
            &admin.client,
            None,
            action,
            Some(&target),
            detail,
        )
        .await;
    });
    Ok(Json(json!({ "job": id, "file": name, "state": "running" })))
}

// ---- realtime ------------------------------------------------------------------------------

/// The realtime counters (those `/metrics` renders), read by the server's closure.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RealtimeCounters {
    pub connections: i64,
    pub channels: i64,
    pub connections_total: u64,
    pub events_in: u64,
    pub events_out: u64,
    pub changes_captured: u64,
    pub changes_delivered: u64,
    pub dropped: u64,
    pub rate_limited: u64,
    pub joins_refused: u64,
    pub slot_lag_bytes: i64,
}

pub type RealtimeSource = Arc<dyn Fn() -> RealtimeCounters + Send + Sync>;

/// Samples of the counters, one a second, the last minute: the rates come from them.
#[derive(Default)]
pub struct RealtimeSamples(
    Mutex<VecDeque<(Instant, chrono::DateTime<chrono::Utc>, RealtimeCounters)>>,
);

const SAMPLES: usize = 61;

impl RealtimeSamples {
    fn push(&self, c: RealtimeCounters) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() == SAMPLES {
            g.pop_front();
        }
        g.push_back((Instant::now(), chrono::Utc::now(), c));
    }
}

/// Samples the realtime counters every second while the console's state lives.
pub(crate) fn spawn_sampler(state: Weak<Inner>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(st) = state.upgrade() else { return };
            let Some(src) = &st.realtime else { return };
            st.realtime_samples.push(src());
        }
    });
}

fn per_sec(a: u64, b: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    ((b.saturating_sub(a)) as f64 / secs * 10.0).round() / 10.0
}

/// `GET /console/api/realtime`: connections, channels, the counters, and events per second
/// over the last 10 seconds and second by second over the last minute.
pub async fn realtime(State(state): State<ConsoleState>, _admin: Admin) -> Result<Json<Value>> {
    let st = &state.0;
    let Some(src) = &st.realtime else {
        return Ok(Json(json!({ "enabled": false })));
    };
    let now = src();
    let samples: Vec<_> = st
        .realtime_samples
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .copied()
        .collect();
    let t_now = Instant::now();
    // The rate over the last ~10 s: from the oldest sample no older than that.
    let base = samples
        .iter()
        .find(|(t, _, _)| t_now.duration_since(*t) <= Duration::from_millis(10_500))
        .or(samples.first());
    let rates = match base {
        Some((t, _, c)) => {
            let secs = t_now.duration_since(*t).as_secs_f64();
            json!({
                "window_secs": (secs * 10.0).round() / 10.0,
                "events_in": per_sec(c.events_in, now.events_in, secs),
                "events_out": per_sec(c.events_out, now.events_out, secs),
                "changes_delivered": per_sec(c.changes_delivered, now.changes_delivered, secs),
            })
        }
        None => Value::Null,
    };
    let series: Vec<Value> = samples
        .windows(2)
        .map(|w| {
            let secs = w[1].0.duration_since(w[0].0).as_secs_f64();
            json!({
                "at": w[1].1,
                "connections": w[1].2.connections,
                "channels": w[1].2.channels,
                "events_in": per_sec(w[0].2.events_in, w[1].2.events_in, secs),
                "events_out": per_sec(w[0].2.events_out, w[1].2.events_out, secs),
            })
        })
        .collect();
    Ok(Json(json!({
        "enabled": true,
        "now": now,
        "per_second": rates,
        "last_minute": series,
    })))
}
