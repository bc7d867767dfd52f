//! The realtime counters `/metrics` renders (plain atomics, Prometheus text).
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::Realtime;

#[derive(Default)]
pub struct Metrics {
    pub connections: AtomicI64,
    pub channels: AtomicI64,
    pub connections_total: AtomicU64,
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    /// Messages not delivered: a full socket queue, a rate limit, a serializer that cannot
    /// carry them.
    pub dropped: AtomicU64,
    pub slow_disconnects: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    pub oversized: AtomicU64,
    pub rate_limited: AtomicU64,
    pub joins_refused: AtomicU64,
    pub changes_captured: AtomicU64,
    pub changes_delivered: AtomicU64,
    pub authorization_queries: AtomicU64,
    /// Bytes of WAL the slot holds, as last measured by the capture leader (-1: unknown).
    pub slot_lag_bytes: AtomicI64,
    pub slot_resets: AtomicU64,
    /// Replication streams the capture leader started (0 while it polls through SQL).
    pub stream_starts: AtomicU64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn inc_by(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, rt: &Realtime) -> String {
        let _ = rt;
        let mut out = String::with_capacity(2048);
        let mut line = |name: &str, kind: &str, help: &str, v: String| {
            out.push_str(&format!(
                "# HELP agencyflow_realtime_{name} {help}\n# TYPE agencyflow_realtime_{name} {kind}\nagencyflow_realtime_{name} {v}\n"
            ));
        };
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed).to_string();
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        line(
            "connections",
            "gauge",
            "Open realtime websockets.",
            g(&self.connections),
        );
        line("channels", "gauge", "Joined channels.", g(&self.channels));
        line(
            "connections_total",
            "counter",
            "Websockets accepted.",
            c(&self.connections_total),
        );
        line(
            "events_in_total",
            "counter",
            "Messages received from clients.",
            c(&self.events_in),
        );
        line(
            "events_out_total",
            "counter",
            "Messages queued to clients.",
            c(&self.events_out),
        );
        line(
            "dropped_total",
            "counter",
            "Messages not delivered (full queue, rate limit, serializer).",
            c(&self.dropped),
        );
        line(
            "slow_consumer_disconnects_total",
            "counter",
            "Sockets closed because their queue was full.",
            c(&self.slow_disconnects),
        );
        line(
            "heartbeat_timeouts_total",
            "counter",
            "Sockets closed after missed heartbeats.",
            c(&self.heartbeat_timeouts),
        );
        line(
            "oversized_messages_total",
            "counter",
            "Messages over the size limit (socket closed with 1009).",
            c(&self.oversized),
        );
        line(
            "rate_limited_total",
            "counter",
            "Events or joins refused by a rate limit.",
            c(&self.rate_limited),
        );
        line(
            "joins_refused_total",
            "counter",
            "Joins answered with an error.",
            c(&self.joins_refused),
        );
        line(
            "changes_captured_total",
            "counter",
            "Row changes read from the slot by this process.",
            c(&self.changes_captured),
        );
        line(
            "changes_delivered_total",
            "counter",
            "postgres_changes messages queued to clients.",
            c(&self.changes_delivered),
        );
        line(
            "authorization_queries_total",
            "counter",
            "RLS authorisation queries for postgres_changes.",
            c(&self.authorization_queries),
        );
        line(
            "slot_lag_bytes",
            "gauge",
            "WAL the logical slot holds (capture leader; -1 unknown).",
            g(&self.slot_lag_bytes),
        );
        line(
            "slot_resets_total",
            "counter",
            "Slots dropped and recreated past the lag limit.",
            c(&self.slot_resets),
        );
        line(
            "capture_streams_total",
            "counter",
            "Replication streams started by the capture leader (0: it polls the slot through SQL).",
            c(&self.stream_starts),
        );
        out
    }
}
