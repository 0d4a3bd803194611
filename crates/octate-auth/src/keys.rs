//! The HMAC keys: one that signs new tokens, and older ones that still verify.

use std::fmt;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::KeyError;

/// Shortest secret accepted, in bytes (the HMAC-SHA256 output size).
pub const MIN_SECRET_LEN: usize = 32;

/// Longest key id accepted, in characters.
pub const MAX_KEY_ID_LEN: usize = 32;

/// Whether `id` is 1–32 characters of `A-Z a-z 0-9 _ -`.
fn is_valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Builds an HMAC-SHA256 key, refusing bad ids and short secrets.
fn make_key(id: String, secret: &[u8]) -> Result<(String, hmac::Key), KeyError> {
    if !is_valid_key_id(&id) {
        return Err(KeyError::InvalidKeyId);
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeyError::SecretTooShort { len: secret.len() });
    }
    Ok((id, hmac::Key::new(hmac::HMAC_SHA256, secret)))
}

/// The set of keys an authority signs and verifies with.
///
/// Exactly one key signs new tokens; it also verifies. Any number of other
/// keys only verify, so tokens signed before a rotation stay valid until
/// they expire or their key is removed. Key ids are unique within a ring:
/// one id always names one secret. Secrets are never printed by `Debug`.
#[derive(Clone)]
pub struct KeyRing {
    signing_id: String,
    signing: hmac::Key,
    /// Verify-only keys, oldest first; a ring rarely holds more than a few.
    verifying: Vec<(String, hmac::Key)>,
}

impl KeyRing {
    /// Creates a ring whose signing key is `secret` (at least 32 bytes) under `key_id`.
    pub fn new(key_id: impl Into<String>, secret: &[u8]) -> Result<Self, KeyError> {
        let (signing_id, signing) = make_key(key_id.into(), secret)?;
        Ok(Self {
            signing_id,
            signing,
            verifying: Vec::new(),
        })
    }

    /// Creates a ring with a random 32-byte secret under the id `ephemeral-<8 hex>`.
    ///
    /// For when no secret is configured: tokens then stop verifying when the
    /// process exits, and other instances cannot verify them.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let mut secret = [0u8; MIN_SECRET_LEN];
        rng.fill(&mut secret).map_err(|_| KeyError::Random)?;
        let mut suffix = [0u8; 4];
        rng.fill(&mut suffix).map_err(|_| KeyError::Random)?;
        let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        Self::new(format!("ephemeral-{hex}"), &secret)
    }

    /// Id of the key that signs new tokens.
    pub fn signing_key_id(&self) -> &str {
        &self.signing_id
    }

    /// Ids of the verify-only keys, oldest first.
    pub fn verifying_key_ids(&self) -> impl Iterator<Item = &str> {
        self.verifying.iter().map(|(id, _)| id.as_str())
    }

    /// Whether some key in the ring (signing or verify-only) has this id.
    pub fn contains(&self, key_id: &str) -> bool {
        self.key(key_id).is_some()
    }

    /// Adds a verify-only key, e.g. the key of another instance or a previous deployment.
    ///
    /// Fails with [`KeyError::InvalidKeyId`] if the id is malformed or already in the ring.
    pub fn add_verifying_key(
        &mut self,
        key_id: impl Into<String>,
        secret: &[u8],
    ) -> Result<(), KeyError> {
        let (id, key) = make_key(key_id.into(), secret)?;
        if self.contains(&id) {
            return Err(KeyError::InvalidKeyId);
        }
        self.verifying.push((id, key));
        Ok(())
    }

    /// Makes a new key the signer; the previous signer stays as a verify-only key.
    ///
    /// Fails with [`KeyError::InvalidKeyId`] if the id is malformed or already in the ring.
    pub fn rotate(
        &mut self,
        new_key_id: impl Into<String>,
        new_secret: &[u8],
    ) -> Result<(), KeyError> {
        let (id, key) = make_key(new_key_id.into(), new_secret)?;
        if self.contains(&id) {
            return Err(KeyError::InvalidKeyId);
        }
        let old_id = std::mem::replace(&mut self.signing_id, id);
        let old_key = std::mem::replace(&mut self.signing, key);
        self.verifying.push((old_id, old_key));
        Ok(())
    }

    /// Removes a verify-only key; tokens it signed then fail with [`crate::AuthError::UnknownKey`].
    ///
    /// Returns whether a key was removed. The signing key cannot be removed (rotate first).
    pub fn remove_verifying_key(&mut self, key_id: &str) -> bool {
        let before = self.verifying.len();
        self.verifying.retain(|(id, _)| id != key_id);
        self.verifying.len() != before
    }

    /// The HMAC-SHA256 tag of `msg` under the signing key.
    pub(crate) fn sign(&self, msg: &[u8]) -> hmac::Tag {
        hmac::sign(&self.signing, msg)
    }

    /// The key (signing or verify-only) with this id, if any.
    pub(crate) fn key(&self, key_id: &str) -> Option<&hmac::Key> {
        if self.signing_id == key_id {
            return Some(&self.signing);
        }
        self.verifying
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, key)| key)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_key_id", &self.signing_id)
            .field(
                "verifying_key_ids",
                &self.verifying_key_ids().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const SECRET_B: &[u8] = b"fedcba9876543210fedcba9876543210";

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            KeyRing::new("k", &SECRET_A[..31]).err(),
            Some(KeyError::SecretTooShort { len: 31 })
        );
        assert_eq!(
            KeyRing::new("k", b"").err(),
            Some(KeyError::SecretTooShort { len: 0 })
        );
        assert!(KeyRing::new("k", SECRET_A).is_ok());
        let mut ring = KeyRing::new("k", SECRET_A).expect("valid key");
        assert_eq!(
            ring.add_verifying_key("old", &SECRET_B[..10]),
            Err(KeyError::SecretTooShort { len: 10 })
        );
        assert_eq!(
            ring.rotate("new", &SECRET_B[..1]),
            Err(KeyError::SecretTooShort { len: 1 })
        );
        assert_eq!(ring.signing_key_id(), "k");
    }

    #[test]
    fn key_ids_are_validated() {
        for bad in ["", "has space", "dot.", "ü", &"a".repeat(33), "a/b"] {
            assert_eq!(
                KeyRing::new(bad, SECRET_A).err(),
                Some(KeyError::InvalidKeyId),
                "{bad:?}"
            );
        }
        for good in ["a", "key_2024-01", &"Z".repeat(32)] {
            assert!(KeyRing::new(good, SECRET_A).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn key_ids_are_unique_in_a_ring() {
        let mut ring = KeyRing::new("k1", SECRET_A).expect("valid key");
        assert_eq!(
            ring.add_verifying_key("k1", SECRET_B),
            Err(KeyError::InvalidKeyId)
        );
        ring.add_verifying_key("k0", SECRET_B).expect("new id");
        assert_eq!(
            ring.add_verifying_key("k0", SECRET_B),
            Err(KeyError::InvalidKeyId)
        );
        assert_eq!(ring.rotate("k0", SECRET_B), Err(KeyError::InvalidKeyId));
        assert_eq!(ring.rotate("k1", SECRET_B), Err(KeyError::InvalidKeyId));
        assert_eq!(ring.signing_key_id(), "k1");
    }

    #[test]
    fn rotate_keeps_old_key_as_verifier() {
        let mut ring = KeyRing::new("k1", SECRET_A).expect("valid key");
        let old_tag = ring.sign(b"msg");
        ring.rotate("k2", SECRET_B).expect("rotation");
        assert_eq!(ring.signing_key_id(), "k2");
        assert_eq!(ring.verifying_key_ids().collect::<Vec<_>>(), ["k1"]);
        let old = ring.key("k1").expect("old key kept");
        assert!(hmac::verify(old, b"msg", old_tag.as_ref()).is_ok());
        let new = ring.key("k2").expect("new key present");
        assert!(hmac::verify(new, b"msg", old_tag.as_ref()).is_err());
        assert!(hmac::verify(new, b"msg", ring.sign(b"msg").as_ref()).is_ok());
    }

    #[test]
    fn remove_only_touches_verifiers() {
        let mut ring = KeyRing::new("k1", SECRET_A).expect("valid key");
        ring.rotate("k2", SECRET_B).expect("rotation");
        assert!(!ring.remove_verifying_key("k2"));
        assert!(ring.contains("k2"));
        assert!(ring.remove_verifying_key("k1"));
        assert!(!ring.contains("k1"));
        assert!(!ring.remove_verifying_key("k1"));
    }

    #[test]
    fn generated_rings_differ_and_have_valid_ids() {
        let a = KeyRing::generate().expect("rng works");
        let b = KeyRing::generate().expect("rng works");
        for ring in [&a, &b] {
            let id = ring.signing_key_id();
            assert!(id.starts_with("ephemeral-") && id.len() == 18, "{id}");
            assert!(is_valid_key_id(id));
        }
        assert_ne!(a.sign(b"m").as_ref(), b.sign(b"m").as_ref());
    }

    #[test]
    fn debug_does_not_leak_secrets() {
        let mut ring = KeyRing::new("k1", SECRET_A).expect("valid key");
        ring.add_verifying_key("k0", SECRET_B).expect("new id");
        let shown = format!("{ring:?}");
        assert!(shown.contains("k1") && shown.contains("k0"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(!shown.contains("48, 49"), "{shown}");
    }
}
