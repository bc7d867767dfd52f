//! `/realtime/v1`, Supabase Realtime as supabase-js 2.109 speaks to it (docs/realtime.md):
//! Phoenix channels over a websocket (`socket`, `protocol`), broadcast and presence (`hub`),
//! postgres_changes captured once per database from a logical slot and delivered under RLS
//! (`changes`), and the fan-out between agencyflow processes on one database through
//! PostgreSQL `LISTEN/NOTIFY` (`fanout`).
pub mod changes;
pub mod fanout;
pub mod http_api;
pub mod hub;
pub(crate) mod limits;
pub mod metrics;
pub mod protocol;
pub mod socket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agencyflow_db::Db;
use agencyflow_keys::{ApiRoles, JwtKeys};
use axum::routing::{get, post};
use axum::Router;

pub use metrics::Metrics;

/// Limits and timings of the realtime surface (`serve` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct RealtimeArgs {
    /// Channels one websocket may join at once.
    #[arg(
        long = "realtime-max-channels",
        env = "REALTIME_MAX_CHANNELS_PER_CLIENT",
        default_value_t = 100
    )]
    pub max_channels: usize,
    /// Largest websocket message (and HTTP broadcast message) accepted, in bytes; a larger
    /// frame closes the socket with 1009.
    #[arg(long = "realtime-max-message-bytes", env = "REALTIME_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024)]
    pub max_message_bytes: usize,
    /// Events (broadcasts, presence, access_token) a socket may push per second; beyond it
    /// they are dropped (counted) and answered `error`.
    #[arg(
        long = "realtime-max-events-per-second",
        env = "REALTIME_MAX_EVENTS_PER_SECOND",
        default_value_t = 100
    )]
    pub max_events_per_second: u32,
    /// Events (broadcasts, presence) one tenant may send per second on this process, over
    /// all its sockets and HTTP broadcasts together: a tenant is a signed-in user (the JWT's
    /// `sub`), or, without one, the client's IP address. Beyond it: dropped (counted),
    /// answered `error` on the socket and 429 over HTTP.
    #[arg(
        long = "realtime-max-tenant-events-per-second",
        env = "REALTIME_MAX_TENANT_EVENTS_PER_SECOND",
        default_value_t = 500
    )]
    pub max_tenant_events_per_second: u32,
    /// Joins a socket may send per second.
    #[arg(
        long = "realtime-max-joins-per-second",
        env = "REALTIME_MAX_JOINS_PER_SECOND",
        default_value_t = 20
    )]
    pub max_joins_per_second: u32,
    /// A socket that sends nothing (no heartbeat) for this long is closed, in seconds
    /// (realtime-js sends a heartbeat every 25 s).
    #[arg(
        long = "realtime-heartbeat-timeout",
        env = "REALTIME_HEARTBEAT_TIMEOUT",
        default_value_t = 60.0
    )]
    pub heartbeat_timeout_secs: f64,
    /// Messages queued for one socket; a socket whose queue is full (a client that stopped
    /// reading) is disconnected instead of buffered without bound.
    #[arg(
        long = "realtime-socket-queue",
        env = "REALTIME_SOCKET_QUEUE",
        default_value_t = 1024
    )]
    pub socket_queue: usize,
    /// The replication login the capture leader streams the slot with (a role with
    /// REPLICATION). Default: the database URL with the user `supabase_replication_admin`
    /// (created by the migrations when they run as a superuser). When it cannot log in or
    /// replicate, the leader polls the slot through SQL instead (slower; logged once).
    #[arg(long = "realtime-replication-url", env = "REALTIME_REPLICATION_URL")]
    pub replication_url: Option<String>,
    /// How often the capture leader polls the logical slot when it found nothing, in ms
    /// (only when it polls through SQL, see `--realtime-replication-url`).
    #[arg(
        long = "realtime-poll-ms",
        env = "REALTIME_POLL_MS",
        default_value_t = 25
    )]
    pub poll_ms: u64,
    /// Connections a large batch of postgres_changes authorisation checks is split over (so
    /// PostgreSQL runs them on as many cores).
    #[arg(
        long = "realtime-check-connections",
        env = "REALTIME_CHECK_CONNECTIONS",
        default_value_t = 2
    )]
    pub check_connections: usize,
    /// WAL the slot may hold before it is dropped and recreated (with a log line), in MiB.
    #[arg(
        long = "realtime-max-slot-lag-mb",
        env = "REALTIME_MAX_SLOT_LAG_MB",
        default_value_t = 512
    )]
    pub max_slot_lag_mb: u64,
    /// Turns postgres_changes off (no slot is ever created); broadcast and presence remain.
    #[arg(long = "realtime-no-changes", env = "REALTIME_NO_CHANGES")]
    pub no_changes: bool,
}

impl Default for RealtimeArgs {
    fn default() -> Self {
        RealtimeArgs {
            max_channels: 100,
            max_message_bytes: 256 * 1024,
            max_events_per_second: 100,
            max_tenant_events_per_second: 500,
            max_joins_per_second: 20,
            heartbeat_timeout_secs: 60.0,
            socket_queue: 1024,
            replication_url: None,
            poll_ms: 25,
            check_connections: 2,
            max_slot_lag_mb: 512,
            no_changes: false,
        }
    }
}

impl RealtimeArgs {
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_timeout_secs.max(0.05))
    }
}

/// The realtime surface's shared state; cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub keys: Arc<JwtKeys>,
    pub roles: ApiRoles,
    pub db: Db,
    /// The API login's connection string (the LISTEN and capture connections).
    pub db_url: String,
    pub args: RealtimeArgs,
    pub hub: hub::Hub,
    pub changes: changes::Changes,
    pub fanout: fanout::Fanout,
    pub metrics: Metrics,
    pub tenants: limits::TenantLimits,
    /// This process's id among the agencyflow processes on the database.
    pub node: String,
    next_id: AtomicU64,
}

impl Realtime {
    /// The state; nothing runs until [`start`](Self::start).
    pub fn new(
        db: Db,
        db_url: &str,
        keys: Arc<JwtKeys>,
        roles: ApiRoles,
        args: RealtimeArgs,
    ) -> Self {
        let node = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let metrics = Metrics::default();
        metrics.slot_lag_bytes.store(-1, Ordering::Relaxed);
        Realtime {
            inner: Arc::new(Inner {
                keys,
                roles,
                db,
                db_url: db_url.to_string(),
                hub: hub::Hub::default(),
                changes: changes::Changes::default(),
                fanout: fanout::Fanout::default(),
                tenants: limits::TenantLimits::new(args.max_tenant_events_per_second),
                metrics,
                node,
                args,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Starts the background work: the LISTEN connection of the fan-out (and its peer
    /// heartbeats). Change capture starts with the first postgres_changes subscription.
    pub fn start(&self) {
        fanout::spawn(self.clone());
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Prometheus text of the realtime counters.
    pub fn render_metrics(&self) -> String {
        self.inner.metrics.render(self)
    }
}

/// The routes under `/realtime/v1` (the API-key gate goes around them).
pub fn router(rt: Realtime) -> Router {
    Router::new()
        .route("/websocket", get(socket::websocket))
        .route("/api/broadcast", post(http_api::broadcast_batch))
        .route(
            "/api/broadcast/{topic}/events/{event}",
            post(http_api::broadcast_one),
        )
        .with_state(rt)
}
