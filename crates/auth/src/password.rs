//! Password hashing: argon2id with OWASP's parameters for new hashes; bcrypt (`$2a$`/`$2b$`,
//! GoTrue's format, and what imports bring) and argon2 hashes verified. Hashing runs on a
//! blocking thread so it never stalls the async workers.
use std::sync::OnceLock;

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

/// Hashes a new password with argon2id (on a blocking thread).
pub async fn hash(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || hash_sync(&password))
        .await
        .map_err(AuthError::internal)?
        .map_err(AuthError::internal)
}

/// Verifies a password against a stored hash (on a blocking thread). Without a hash
/// (unknown user, or a user with no password) a dummy argon2 verification still runs.
pub async fn verify(password: String, hash: Option<String>) -> Result<bool, AuthError> {
    tokio::task::spawn_blocking(move || match hash.filter(|h| !h.is_empty()) {
        Some(h) => verify_sync(&password, &h),
        None => {
            let _ = verify_sync(&password, dummy_hash());
            false
        }
    })
    .await
    .map_err(AuthError::internal)
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
