//! In-memory token buckets per client IP and per email (one process's view; several
//! instances each enforce their own).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a bucket limits; each kind has its own capacity and refill period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Sign-ups and password sign-ins per IP (GOTRUE_RATE_LIMIT_SIGN_IN_SIGN_UPS, per 5 min).
    SignInSignUpsPerIp,
    /// Sign-ups and password sign-ins per email (per 5 min).
    SignInPerEmail,
    /// Refresh-token grants per IP (GOTRUE_RATE_LIMIT_TOKEN_REFRESH, per 5 min).
    TokenRefreshPerIp,
    /// Anonymous sign-ins per IP (GOTRUE_RATE_LIMIT_ANONYMOUS_USERS, per hour).
    AnonymousPerIp,
    /// `/verify` requests (both verbs) per IP (GOTRUE_RATE_LIMIT_VERIFY, per 5 min).
    VerifyPerIp,
    /// `/verify` requests per target: the address a code is for, or the link's token.
    VerifyPerTarget,
    /// Password, email and reauthenticated changes (`PUT /user`) per user (per 5 min).
    UserUpdatesPerUser,
    /// The same per IP (per 5 min).
    UserUpdatesPerIp,
    /// One email of a kind per address per GOTRUE_SMTP_MAX_FREQUENCY, whether or not the
    /// address has an account (so the throttle does not tell which ones do).
    EmailSendPerAddress,
    /// MFA challenges per IP (GOTRUE_MFA_RATE_LIMIT_CHALLENGE_AND_VERIFY, per minute).
    MfaChallengePerIp,
    /// MFA verifications per IP (the same rate).
    MfaVerifyPerIp,
    /// MFA verifications per factor (the same rate, whatever IPs they come from).
    MfaVerifyPerFactor,
}

#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Requests allowed per period (also the burst).
    pub capacity: f64,
    pub period: Duration,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    rates: HashMap<Limit, Rate>,
    buckets: Mutex<HashMap<(Limit, String), Bucket>>,
}

/// Buckets kept before full ones are swept.
const SWEEP_AT: usize = 50_000;

impl RateLimiter {
    pub fn new(rates: impl IntoIterator<Item = (Limit, Rate)>) -> Self {
        RateLimiter {
            rates: rates.into_iter().collect(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from the `(limit, key)` bucket; `false` when it is empty.
    pub fn check(&self, limit: Limit, key: &str) -> bool {
        self.check_wait(limit, key).is_ok()
    }

    /// As [`check`](Self::check), with how long until the bucket has a token again when it
    /// is empty.
    pub fn check_wait(&self, limit: Limit, key: &str) -> Result<(), Duration> {
        let Some(rate) = self.rates.get(&limit).copied() else {
            return Ok(());
        };
        if rate.capacity <= 0.0 || rate.period.is_zero() {
            return Ok(());
        }
        let now = Instant::now();
        let per_sec = rate.capacity / rate.period.as_secs_f64();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|(l, _), b| {
                let r = self.rates.get(l).map_or(1.0, |r| r.capacity);
                let per = self
                    .rates
                    .get(l)
                    .map_or(1.0, |r| r.capacity / r.period.as_secs_f64());
                b.tokens + now.duration_since(b.last).as_secs_f64() * per < r
            });
        }
        let b = map
            .entry((limit, key.to_ascii_lowercase()))
            .or_insert(Bucket {
                tokens: rate.capacity,
                last: now,
            });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(rate.capacity);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_per_key() {
        let rl = RateLimiter::new([(
            Limit::SignInPerEmail,
            Rate {
                capacity: 2.0,
                period: Duration::from_secs(300),
            },
        )]);
        assert!(rl.check(Limit::SignInPerEmail, "a@x"));
        assert!(rl.check(Limit::SignInPerEmail, "A@x"));
        assert!(!rl.check(Limit::SignInPerEmail, "a@x"));
        assert!(rl.check(Limit::SignInPerEmail, "b@x"));
        // Unconfigured limits allow everything.
        assert!(rl.check(Limit::TokenRefreshPerIp, "1.2.3.4"));
    }

    #[test]
    fn empty_bucket_says_how_long_to_wait() {
        let rl = RateLimiter::new([(
            Limit::EmailSendPerAddress,
            Rate {
                capacity: 1.0,
                period: Duration::from_secs(60),
            },
        )]);
        assert!(rl.check_wait(Limit::EmailSendPerAddress, "a@x").is_ok());
        let wait = rl
            .check_wait(Limit::EmailSendPerAddress, "a@x")
            .unwrap_err();
        assert!(
            wait > Duration::from_secs(58) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
    }
}
