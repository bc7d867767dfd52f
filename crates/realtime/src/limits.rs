//! Rate limits: a token bucket (per socket: events, joins) and the per-tenant buckets shared
//! by all of a tenant's sockets and HTTP broadcasts on this process.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agencyflow_keys::Caller;

/// A small token bucket: `rate` per second, bursts up to `rate`.
pub(crate) struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: u32) -> Self {
        Bucket {
            rate: rate.max(1) as f64,
            tokens: rate.max(1) as f64,
            at: Instant::now(),
        }
    }

    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Who an event is counted against: the signed-in user (the JWT's `sub`) whatever socket or
/// request it comes from, else (the anon key, a service key without `sub`) the client's IP
/// address, else the role.
pub(crate) fn tenant_key(caller: &Caller, ip: Option<IpAddr>) -> String {
    if let Some(sub) = caller.claims.claims["sub"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        return format!("user:{sub}");
    }
    match ip {
        Some(ip) => format!("ip:{ip}"),
        None => format!("role:{}", caller.role),
    }
}

/// The per-tenant buckets (`--realtime-max-tenant-events-per-second`).
pub(crate) struct TenantLimits {
    rate: u32,
    /// The buckets, and when idle ones were last forgotten.
    buckets: Mutex<(HashMap<String, Bucket>, Instant)>,
}

/// Past this many tenants, buckets idle long enough to be full again are forgotten.
const PRUNE_OVER: usize = 10_000;

impl TenantLimits {
    pub(crate) fn new(rate: u32) -> Self {
        TenantLimits {
            rate,
            buckets: Mutex::new((HashMap::new(), Instant::now())),
        }
    }

    /// Takes one event from `key`'s bucket; false when the tenant is over its rate.
    pub(crate) fn take(&self, key: &str) -> bool {
        let mut guard = self.buckets.lock().expect("tenant buckets");
        let (b, pruned) = &mut *guard;
        // At most once a second: with more active tenants than the threshold a sweep on
        // every event would scan them all each time.
        if b.len() > PRUNE_OVER && pruned.elapsed() > Duration::from_secs(1) {
            let idle = Duration::from_secs(2);
            b.retain(|_, v| v.at.elapsed() < idle);
            *pruned = Instant::now();
        }
        if let Some(bucket) = b.get_mut(key) {
            return bucket.take();
        }
        let mut bucket = Bucket::new(self.rate);
        let ok = bucket.take();
        b.insert(key.to_string(), bucket);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_limited_across_its_callers_and_others_are_not() {
        let t = TenantLimits::new(3);
        assert!((0..3).all(|_| t.take("user:a")));
        assert!(!t.take("user:a"));
        assert!(t.take("user:b"));
    }
}
