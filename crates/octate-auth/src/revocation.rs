//! Revoked token ids, kept only until the tokens would have expired anyway.

use std::collections::HashMap;

use crate::AuthError;

/// Default bound on the number of entries in a [`RevocationList`].
pub const DEFAULT_REVOCATION_CAPACITY: usize = 100_000;

/// A bounded set of revoked token ids, each remembered until its token's expiry.
///
/// Memory is bounded twice: by the capacity, and by expiry, since
/// [`RevocationList::purge`] drops entries whose tokens have expired (an
/// expired token is refused without looking here).
#[derive(Debug, Clone)]
pub struct RevocationList {
    /// Token id → the token's `expires_at`, in Unix milliseconds.
    entries: HashMap<String, u64>,
    capacity: usize,
}

impl Default for RevocationList {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_REVOCATION_CAPACITY)
    }
}

impl RevocationList {
    /// Creates an empty list holding at most [`DEFAULT_REVOCATION_CAPACITY`] entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty list holding at most `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// Revokes a token id until `expires_at` (its token's expiry, Unix milliseconds).
    ///
    /// Revoking an id again keeps the later expiry and needs no room. Fails
    /// with [`AuthError::RevocationListFull`] when a new entry does not fit;
    /// [`RevocationList::purge`] first may free room.
    pub fn revoke(
        &mut self,
        token_id: impl Into<String>,
        expires_at: u64,
    ) -> Result<(), AuthError> {
        let token_id = token_id.into();
        if let Some(existing) = self.entries.get_mut(&token_id) {
            *existing = (*existing).max(expires_at);
            return Ok(());
        }
        if self.entries.len() >= self.capacity {
            return Err(AuthError::RevocationListFull);
        }
        self.entries.insert(token_id, expires_at);
        Ok(())
    }

    /// Whether this token id is revoked.
    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.entries.contains_key(token_id)
    }

    /// Drops entries whose token has expired at `now_ms` (`expires_at <= now_ms`); returns how many.
    pub fn purge(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, expires_at| *expires_at > now_ms);
        before - self.entries.len()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Most entries the list holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_and_query() {
        let mut list = RevocationList::new();
        assert!(list.is_empty());
        assert_eq!(list.capacity(), DEFAULT_REVOCATION_CAPACITY);
        list.revoke("a", 100).expect("room");
        assert!(list.is_revoked("a"));
        assert!(!list.is_revoked("b"));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn purge_removes_only_expired_entries() {
        let mut list = RevocationList::new();
        list.revoke("early", 100).expect("room");
        list.revoke("edge", 200).expect("room");
        list.revoke("late", 201).expect("room");
        assert_eq!(list.purge(99), 0);
        assert_eq!(list.purge(200), 2);
        assert!(!list.is_revoked("early"));
        assert!(!list.is_revoked("edge"));
        assert!(list.is_revoked("late"));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn re_revoking_keeps_later_expiry() {
        let mut list = RevocationList::with_capacity(1);
        list.revoke("a", 500).expect("room");
        list.revoke("a", 100).expect("same id needs no room");
        assert_eq!(list.len(), 1);
        list.purge(400);
        assert!(list.is_revoked("a"));
    }

    #[test]
    fn list_is_bounded() {
        let mut list = RevocationList::with_capacity(3);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            list.revoke(id, 10 * (i as u64 + 1)).expect("room");
        }
        assert_eq!(list.revoke("d", 100), Err(AuthError::RevocationListFull));
        assert!(!list.is_revoked("d"));
        assert_eq!(list.len(), 3);
        assert_eq!(list.purge(10), 1);
        list.revoke("d", 100).expect("room after purge");
        assert!(list.is_revoked("d"));
    }
}
