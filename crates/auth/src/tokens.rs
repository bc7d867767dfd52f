//! Refresh tokens: opaque random strings handed to the client once and stored only as
//! SHA-256 hashes. A rotated token's successor is derived from it (HMAC under a key from the
//! project secret), so a client that lost the answer to a refresh and presents the parent
//! again can be handed the same active token, as GoTrue does, without storing it in clear.
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// How the server turns refresh tokens into their stored hashes and successors.
#[derive(Clone)]
pub struct RefreshTokens {
    derive_key: [u8; 32],
}

impl RefreshTokens {
    pub fn new(project_secret_material: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"agencyflow refresh-token derivation v1\0");
        h.update(project_secret_material);
        RefreshTokens {
            derive_key: h.finalize().into(),
        }
    }

    /// A new random token (a session's first, or a second child within the reuse interval).
    pub fn random(&self) -> String {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        encode(&b)
    }

    /// The successor of `token` in its rotation chain.
    pub fn child_of(&self, token: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.derive_key).expect("any key length");
        mac.update(token.as_bytes());
        encode(&mac.finalize().into_bytes())
    }
}

fn encode(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The stored form of a token: hex SHA-256. Lookups compare hashes, never the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_keyed_and_stable() {
        let a = RefreshTokens::new(b"secret-a");
        let b = RefreshTokens::new(b"secret-b");
        let t = a.random();
        assert_eq!(t.len(), 43);
        assert_eq!(a.child_of(&t), a.child_of(&t));
        assert_ne!(a.child_of(&t), b.child_of(&t));
        assert_ne!(a.child_of(&t), t);
        assert_eq!(token_hash("x").len(), 64);
    }
}
