//! Password hashing: argon2id with OWASP's parameters for new hashes; bcrypt (`$2a$`/`$2b$`,
//! GoTrue's format, and what imports bring) and argon2 hashes verified. Hashing runs on a
//! blocking thread so it never stalls the async workers, and at most [`max_concurrent`]
//! hashes or verifications run at once in the process (each argon2id takes 19 MiB and a core
//! for tens of milliseconds: a burst of sign-ins or password changes waits its turn instead
//! of exhausting memory or the blocking pool).
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordVerifier, Version};

use crate::error::AuthError;

/// OWASP password storage cheat sheet: argon2id, m = 19 MiB, t = 2, p = 1.
fn argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19_456, 2, 1, None).expect("valid argon2 parameters"),
    )
}

/// The hash formats we can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Argon2,
    Bcrypt,
    Unknown,
}

pub fn hash_kind(hash: &str) -> HashKind {
    if hash.starts_with("$argon2") {
        HashKind::Argon2
    } else if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        HashKind::Bcrypt
    } else {
        HashKind::Unknown
    }
}

/// Whether a verified hash should be replaced by a fresh argon2id one (bcrypt, or argon2
/// with other parameters).
pub fn needs_rehash(hash: &str) -> bool {
    match hash_kind(hash) {
        HashKind::Argon2 => !hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        _ => true,
    }
}

fn hash_sync(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_sync(password: &str, hash: &str) -> bool {
    match hash_kind(hash) {
        HashKind::Argon2 => match PasswordHash::new(hash) {
            // The parameters come from the hash itself, so older argon2 hashes verify too.
            Ok(parsed) => Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        },
        HashKind::Bcrypt => bcrypt::verify(password, hash).unwrap_or(false),
        HashKind::Unknown => false,
    }
}

/// A hash of a random password, verified against when the user does not exist, so a
/// sign-in attempt costs the same whether or not the email is registered.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_sync("agencyflow-dummy-password-never-matches").expect("argon2 hash"))
}

/// How many password hashes or verifications may run at once: the CPUs, at least 2.
pub fn max_concurrent() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// The one semaphore every password hash and verification of the process goes through.
fn permits() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| Arc::new(Semaphore::new(max_concurrent())))
}

/// Runs `work` on a blocking thread once a permit is free. The permit moves into the blocking
/// task and is released when the work ends, even when the request that asked for it was
/// dropped meanwhile (a client that hangs up does not free a slot its hash still uses).
pub(crate) async fn run_limited<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    let permit = permits()
        .clone()
        .acquire_owned()
        .await
        .map_err(AuthError::internal)?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(AuthError::internal)
}

/// Hashes a new password with argon2id (on a blocking thread, within the process's bound).
pub async fn hash(password: String) -> Result<String, AuthError> {
    run_limited(move || hash_sync(&password))
        .await?
        .map_err(AuthError::internal)
}

/// Verifies a password against a stored hash (on a blocking thread, within the process's
/// bound). Without a hash (unknown user, or a user with no password) a dummy argon2
/// verification still runs.
pub async fn verify(password: String, hash: Option<String>) -> Result<bool, AuthError> {
    run_limited(move || match hash.filter(|h| !h.is_empty()) {
        Some(h) => verify_sync(&password, &h),
        None => {
            let _ = verify_sync(&password, dummy_hash());
            false
        }
    })
    .await
}

/// Warms the dummy hash so the first unknown-email sign-in is not slower than the rest.
pub fn warm_up() {
    std::thread::spawn(|| {
        let _ = dummy_hash();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_roundtrip_with_owasp_parameters() {
        let h = hash_sync("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_sync("correct horse", &h));
        assert!(!verify_sync("wrong horse", &h));
        assert!(!needs_rehash(&h));
    }

    /// However many hashes are asked for at once, no more than `max_concurrent()` run
    /// together (and the bound is used: they do run in parallel).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hashing_concurrency_is_bounded_by_one_semaphore() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        static PEAK: AtomicUsize = AtomicUsize::new(0);
        let limit = max_concurrent();
        assert!(limit >= 2);
        let tasks: Vec<_> = (0..limit * 4)
            .map(|_| {
                tokio::spawn(run_limited(|| {
                    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                    PEAK.fetch_max(now, Ordering::SeqCst);
                    // Stands for a hash's CPU time (work that lasts), not a wait.
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    RUNNING.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        // Requests that give up while waiting (a client hanging up) free nothing early.
        let abandoned = tokio::spawn(run_limited(|| {
            std::thread::sleep(std::time::Duration::from_millis(30))
        }));
        abandoned.abort();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let peak = PEAK.load(Ordering::SeqCst);
        assert!(
            peak <= limit,
            "{peak} hashes ran at once, the bound is {limit}"
        );
        assert!(peak >= 2, "hashes should run in parallel up to the bound");
        assert_eq!(RUNNING.load(Ordering::SeqCst), 0);
        // The real hash and verify go through the same permits.
        let h = hash("a long enough password".into()).await.unwrap();
        assert!(verify("a long enough password".into(), Some(h))
            .await
            .unwrap());
        assert!(!verify("x".into(), None).await.unwrap());
        // Every permit comes back once the work (the abandoned request's too) is done: the
        // abandoned hash ends on its blocking thread on its own schedule (10 s at most).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while permits().available_permits() != limit {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {limit} permits back after 10 s",
                permits().available_permits()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn bcrypt_verifies_and_needs_rehash() {
        let h = bcrypt::hash("s3cret-pass", 4).unwrap();
        assert_eq!(hash_kind(&h), HashKind::Bcrypt);
        assert!(verify_sync("s3cret-pass", &h));
        assert!(!verify_sync("other", &h));
        assert!(needs_rehash(&h));
        assert!(!verify_sync("x", "plaintext"));
    }
}
