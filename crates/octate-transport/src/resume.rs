//! Resume tickets for the core: random session ids and tokens, and their SHA-256 digests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use octate_core::{ResumeIssuer, TokenDigest};
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes in a session id: names a session, guards nothing.
const SESSION_ID_BYTES: usize = 16;
/// Random bytes in a resume token: the secret that proves a session is yours.
const TOKEN_BYTES: usize = 32;

/// Mints tickets from the system's secure random source.
#[derive(Debug)]
pub(crate) struct RandomIssuer {
    rng: SystemRandom,
}

impl RandomIssuer {
    /// An issuer on the system's random source.
    pub(crate) fn new() -> Self {
        Self {
            rng: SystemRandom::new(),
        }
    }

    fn random<const N: usize>(&self) -> String {
        let mut bytes = [0u8; N];
        // Invariant: the system RNG is available; without it no token could be signed either.
        self.rng
            .fill(&mut bytes)
            .expect("system random number generator available");
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

impl ResumeIssuer for RandomIssuer {
    fn session_id(&mut self) -> String {
        self.random::<SESSION_ID_BYTES>()
    }

    fn token(&mut self) -> (String, TokenDigest) {
        let token = self.random::<TOKEN_BYTES>();
        let digest = self.digest(&token);
        (token, digest)
    }

    fn digest(&self, token: &str) -> TokenDigest {
        let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(hash.as_ref());
        TokenDigest(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_distinct_and_digest_to_what_is_kept() {
        let mut issuer = RandomIssuer::new();
        let (a, da) = issuer.token();
        let (b, db) = issuer.token();
        assert_ne!(a, b);
        assert!(!da.matches(&db));
        // 32 random bytes: 256 bits, 43 base64url characters.
        assert_eq!(a.len(), 43);
        assert!(issuer.digest(&a).matches(&da));
        assert!(!issuer.digest(&b).matches(&da));
        assert_ne!(issuer.session_id(), issuer.session_id());
    }
}
