//! Resumable sessions: what lets a peer whose connection dropped come back on a new one
//! without the others noticing.
//!
//! A session is one user's membership of its room, named by a session id and guarded by
//! a one-time resume token. The core never sees randomness or hashing: the driver
//! installs a [`ResumeIssuer`] that mints ids and tokens and digests presented tokens;
//! the core keeps only digests, and compares them in constant time.
//!
//! A session is either live (a connection holds it) or suspended (its connection
//! dropped without leaving, and the grace period runs). A suspended session ends in
//! exactly one of two ways: a `resume` takes it over, or the grace runs out and the room
//! is told the peer left with reason `timeout`.

use octate_protocol::{ResumeTicket, RoomId, UnixMillis, UserId};

use crate::ConnId;

/// The SHA-256 (or similar) digest of a resume token: all the core keeps of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// Whether two digests are equal, in time that does not depend on where they differ.
    pub fn matches(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// Mints session ids and resume tokens, and digests tokens; installed by the driver.
pub trait ResumeIssuer: Send + std::fmt::Debug {
    /// A new, unguessable session id.
    fn session_id(&mut self) -> String;
    /// A new resume token (at least 128 random bits) and its digest.
    fn token(&mut self) -> (String, TokenDigest);
    /// The digest of a token a client presented.
    fn digest(&self, token: &str) -> TokenDigest;
}

/// What the driver knows of the token that opened a session, kept so that a resumed
/// connection is held to the same token (expiry, revocation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRef {
    /// The token's id, when it has one (revocation is by id).
    pub token_id: Option<String>,
    /// When the token expires (Unix ms, wall clock), when it does.
    pub expires_at: Option<u64>,
}

/// A connection that proved who it is: the identity of its verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// Who the token says the connection is.
    pub identity: crate::Identity,
    /// Display name to show other peers (the user id when absent).
    pub user_name: Option<String>,
    /// The token, as resumed sessions must remember it.
    pub token: TokenRef,
}

/// Where a session's connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// A connection of this process holds it.
    Live(ConnId),
    /// Its connection dropped; it ends at `until` unless resumed.
    Suspended {
        /// End of the grace period (Unix ms).
        until: UnixMillis,
    },
}

/// One resumable membership.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) user_id: UserId,
    pub(crate) room_id: RoomId,
    pub(crate) user_name: String,
    pub(crate) digest: Option<TokenDigest>,
    pub(crate) token: TokenRef,
    pub(crate) state: SessionState,
}

impl Session {
    /// Whether `presented` is this session's current token.
    pub(crate) fn accepts(&self, presented: &TokenDigest) -> bool {
        self.digest.as_ref().is_some_and(|d| d.matches(presented))
    }
}

/// Why a `resume` was refused; the client is told only `resume-failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeRefusal {
    /// Resume is off (no grace period or no issuer).
    Disabled,
    /// No session has that id (never had, ended, or its grace ran out).
    UnknownSession,
    /// The token is not the session's current one (wrong, or already used).
    WrongToken,
}

/// A fresh ticket for `session_id`, with the digest the core keeps of it.
pub(crate) fn ticket(
    issuer: &mut dyn ResumeIssuer,
    session_id: &str,
) -> (ResumeTicket, TokenDigest) {
    let (resume_token, digest) = issuer.token();
    (
        ResumeTicket {
            session_id: session_id.to_owned(),
            resume_token,
        },
        digest,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_only_when_every_byte_is_equal() {
        let a = TokenDigest([7; 32]);
        let mut b = a;
        assert!(a.matches(&b));
        b.0[31] ^= 1;
        assert!(!a.matches(&b));
        b = a;
        b.0[0] ^= 0x80;
        assert!(!a.matches(&b));
    }
}
