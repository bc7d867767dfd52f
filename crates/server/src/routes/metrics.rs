//! `/metrics`: Prometheus text exposition of request counts and latencies per surface, the
//! database pool and the process's memory. Counters are plain atomics: no registry crate.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;

const SURFACES: [&str; 8] = [
    "rest",
    "graphql",
    "auth",
    "functions",
    "storage",
    "realtime",
    "health",
    "other",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Request metrics, one slot per surface and status class.
pub struct Metrics {
    requests: [[AtomicU64; CLASSES.len()]; SURFACES.len()],
    /// Cumulative latency histogram per surface (+Inf last).
    latency: [[AtomicU64; BUCKETS.len() + 1]; SURFACES.len()],
    latency_sum_us: [AtomicU64; SURFACES.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency_sum_us: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn surface(path: &str) -> usize {
    let s = match path.split('/').nth(1).unwrap_or("") {
        "rest" => "rest",
        "graphql" => "graphql",
        "auth" => "auth",
        "functions" => "functions",
        "storage" => "storage",
        "realtime" => "realtime",
        "health" => "health",
        _ => "other",
    };
    SURFACES
        .iter()
        .position(|x| *x == s)
        .unwrap_or(SURFACES.len() - 1)
}

impl Metrics {
    fn record(&self, surface: usize, status: u16, seconds: f64) {
        let class = ((status / 100) as usize).clamp(1, 5) - 1;
        self.requests[surface][class].fetch_add(1, Ordering::Relaxed);
        let bucket = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency[surface][bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us[surface].fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, state: &AppState) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP agencyflow_http_requests_total HTTP requests by surface and status class.\n# TYPE agencyflow_http_requests_total counter\n");
        for (i, s) in SURFACES.iter().enumerate() {
            for (j, c) in CLASSES.iter().enumerate() {
                let n = self.requests[i][j].load(Ordering::Relaxed);
                if n > 0 {
                    out.push_str(&format!(
                        "agencyflow_http_requests_total{{surface=\"{s}\",status=\"{c}\"}} {n}\n"
                    ));
                }
            }
        }
        out.push_str("# HELP agencyflow_http_request_duration_seconds Request latency by surface.\n# TYPE agencyflow_http_request_duration_seconds histogram\n");
        for (i, s) in SURFACES.iter().enumerate() {
            let mut cumulative = 0;
            for (k, b) in BUCKETS.iter().enumerate() {
                cumulative += self.latency[i][k].load(Ordering::Relaxed);
                out.push_str(&format!("agencyflow_http_request_duration_seconds_bucket{{surface=\"{s}\",le=\"{b}\"}} {cumulative}\n"));
            }
            cumulative += self.latency[i][BUCKETS.len()].load(Ordering::Relaxed);
            out.push_str(&format!("agencyflow_http_request_duration_seconds_bucket{{surface=\"{s}\",le=\"+Inf\"}} {cumulative}\n"));
            let sum = self.latency_sum_us[i].load(Ordering::Relaxed) as f64 / 1e6;
            out.push_str(&format!(
                "agencyflow_http_request_duration_seconds_sum{{surface=\"{s}\"}} {sum}\n"
            ));
            out.push_str(&format!(
                "agencyflow_http_request_duration_seconds_count{{surface=\"{s}\"}} {cumulative}\n"
            ));
        }
        // Two pools: transactions (tokio-postgres) and the one-Sync REST reads.
        let pools = [
            ("transactions", state.db.pool().status()),
            ("reads", state.db.read_pool_status()),
        ];
        out.push_str("# HELP agencyflow_db_pool_connections Connections of the API pools.\n# TYPE agencyflow_db_pool_connections gauge\n");
        for (name, p) in &pools {
            out.push_str(&format!(
                "agencyflow_db_pool_connections{{pool=\"{name}\",state=\"open\"}} {}\nagencyflow_db_pool_connections{{pool=\"{name}\",state=\"idle\"}} {}\nagencyflow_db_pool_connections{{pool=\"{name}\",state=\"max\"}} {}\n",
                p.size, p.available, p.max_size
            ));
        }
        out.push_str("# HELP agencyflow_db_pool_waiting Requests waiting for a connection.\n# TYPE agencyflow_db_pool_waiting gauge\n");
        for (name, p) in &pools {
            out.push_str(&format!(
                "agencyflow_db_pool_waiting{{pool=\"{name}\"}} {}\n",
                p.waiting
            ));
        }
        out.push_str(&format!(
            "# HELP agencyflow_http_requests_in_flight Requests being served (a shutdown waits for them).\n# TYPE agencyflow_http_requests_in_flight gauge\nagencyflow_http_requests_in_flight {}\n",
            state.lifecycle.in_flight()
        ));
        // The embedded cluster's supervisor (absent with DATABASE_URL).
        if let Some(h) = state.db.cluster_health() {
            out.push_str(&format!(
                "# HELP agencyflow_db_up Whether the embedded PostgreSQL accepts connections.\n# TYPE agencyflow_db_up gauge\nagencyflow_db_up {}\n\
                 # HELP agencyflow_db_restarts_total Restarts of the embedded PostgreSQL after it died.\n# TYPE agencyflow_db_restarts_total counter\nagencyflow_db_restarts_total {}\n\
                 # HELP agencyflow_db_restart_failures_total Restart attempts of the embedded PostgreSQL that failed.\n# TYPE agencyflow_db_restart_failures_total counter\nagencyflow_db_restart_failures_total {}\n",
                u8::from(h.is_up()),
                h.restarts(),
                h.failed_starts()
            ));
        }
        if let Some(rt) = &state.realtime {
            out.push_str(&rt.render_metrics());
        }
        if let Some(rss) = rss_bytes() {
            out.push_str(&format!("# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}\n"));
        }
        out
    }
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

pub async fn track(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let s = surface(req.uri().path());
    let started = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .record(s, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

/// Keeps each API request (method, path, status, latency, role, request id) in the console's
/// in-memory ring buffer (the Logs page).
pub async fn remember(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let h = req.headers();
    let presented = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, t) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| t.trim().to_string())
        })
        .or_else(|| {
            h.get("apikey")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
    let role = presented.and_then(|t| {
        state.keys.verify_shared(&t).ok().and_then(|c| {
            c.claims
                .get("role")
                .and_then(|r| r.as_str())
                .map(str::to_string)
        })
    });
    let request_id = h
        .get(&crate::app::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let resp = next.run(req).await;
    state.requests.push(agencyflow_console::RequestRecord {
        at: chrono::Utc::now(),
        method,
        path,
        status: resp.status().as_u16(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        role,
        request_id,
    });
    resp
}

/// `/metrics` on the API address: the service_role key only (in `apikey` or as the bearer
/// token), since request counts, pool sizes and memory tell an attacker how the service
/// fares. The key-less form is served on `--metrics-addr` only.
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, t) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| t.trim())
        })
        .or_else(|| headers.get("apikey").and_then(|v| v.to_str().ok()));
    let is_service = presented
        .and_then(|t| state.keys.verify(t).ok())
        .is_some_and(|c| c.get("role").and_then(|r| r.as_str()) == Some("service_role"));
    if !is_service {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "message": "metrics need the service_role key (or --metrics-addr)"
            })),
        )
            .into_response();
    }
    metrics_open(State(state)).await.into_response()
}

/// `/metrics` without a key: only routed on the separate `--metrics-addr` listener.
pub async fn metrics_open(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&state),
    )
}
