//! The error types: what a token or request can cause, with stable wire codes, and
//! what a bad setup causes.

/// Why the keys or the settings of an authority could not be set up: the operator's
/// mistakes, never caused by a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A secret is shorter than [`crate::MIN_SECRET_LEN`] bytes.
    #[error("secret is {len} bytes, at least 32 are required")]
    SecretTooShort {
        /// Length of the refused secret, in bytes.
        len: usize,
    },
    /// A key id is not 1–32 characters of `A-Z a-z 0-9 _ -`, or is already in the ring.
    #[error("invalid or duplicate key id")]
    InvalidKeyId,
    /// A default lifetime is zero (or below one millisecond) or exceeds the maximum.
    #[error("invalid token time-to-live")]
    InvalidTtl,
    /// The system random number generator failed while generating a key.
    #[error("random number generator failure")]
    Random,
}

/// Why a token was refused, or could not be issued or revoked.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is not structurally a token (segments, encoding, JSON, version or length).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token's signature does not match its content.
    #[error("bad token signature")]
    BadSignature,
    /// The token expired at `expired_at`; it is now `now` (Unix milliseconds).
    #[error("token expired at {expired_at}, now is {now}")]
    Expired {
        /// When the token stopped being valid.
        expired_at: u64,
        /// The time the check was made at.
        now: u64,
    },
    /// The token was issued after `now`, beyond the allowed clock skew.
    #[error("token issued at {issued_at} is not valid yet, now is {now}")]
    NotYetValid {
        /// When the token says it was issued.
        issued_at: u64,
        /// The time the check was made at.
        now: u64,
    },
    /// The token's lifetime (`exp - iat`) is longer than the longest the server grants.
    #[error("token lifetime of {lifetime_ms} ms exceeds the maximum of {max_ms} ms")]
    LifetimeTooLong {
        /// The lifetime the token claims, in milliseconds.
        lifetime_ms: u64,
        /// The longest lifetime accepted, in milliseconds.
        max_ms: u64,
    },
    /// The token expires at or before the time it was issued.
    #[error("token expires at {expires_at}, not after it was issued at {issued_at}")]
    InvertedLifetime {
        /// When the token says it was issued.
        issued_at: u64,
        /// When the token says it expires.
        expires_at: u64,
    },
    /// The token was issued to another user.
    #[error("token was issued to another user")]
    WrongUser,
    /// The token authorizes another room.
    #[error("token is for another room")]
    WrongRoom,
    /// The token was revoked.
    #[error("token was revoked")]
    Revoked,
    /// The token names a key id that is not in the key ring.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// A token was asked for with a time-to-live of zero (or below one millisecond).
    #[error("invalid token time-to-live")]
    InvalidTtl,
    /// The token to issue would be longer than [`crate::MAX_TOKEN_LEN`] bytes.
    #[error("token would be {len} bytes, longer than the maximum")]
    TokenTooLong {
        /// Length the token would have had, in bytes.
        len: usize,
    },
    /// The revocation list holds as many unexpired entries as it may.
    #[error("revocation list is full")]
    RevocationListFull,
    /// The system random number generator failed while issuing a token.
    #[error("random number generator failure")]
    Random,
}

impl AuthError {
    /// The stable, machine-readable code sent to clients for this error.
    ///
    /// Token problems have their own `token-*` code; configuration and
    /// server-side failures all map to `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "token-malformed",
            Self::BadSignature => "token-bad-signature",
            Self::Expired { .. } => "token-expired",
            Self::NotYetValid { .. } => "token-not-yet-valid",
            Self::LifetimeTooLong { .. } | Self::InvertedLifetime { .. } => "token-bad-lifetime",
            Self::WrongUser => "token-wrong-user",
            Self::WrongRoom => "token-wrong-room",
            Self::Revoked => "token-revoked",
            Self::UnknownKey => "token-unknown-key",
            Self::InvalidTtl
            | Self::TokenTooLong { .. }
            | Self::RevocationListFull
            | Self::Random => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let cases = [
            (AuthError::Malformed("x"), "token-malformed"),
            (AuthError::BadSignature, "token-bad-signature"),
            (
                AuthError::Expired {
                    expired_at: 1,
                    now: 2,
                },
                "token-expired",
            ),
            (
                AuthError::NotYetValid {
                    issued_at: 2,
                    now: 1,
                },
                "token-not-yet-valid",
            ),
            (
                AuthError::LifetimeTooLong {
                    lifetime_ms: 2,
                    max_ms: 1,
                },
                "token-bad-lifetime",
            ),
            (
                AuthError::InvertedLifetime {
                    issued_at: 2,
                    expires_at: 1,
                },
                "token-bad-lifetime",
            ),
            (AuthError::WrongUser, "token-wrong-user"),
            (AuthError::WrongRoom, "token-wrong-room"),
            (AuthError::Revoked, "token-revoked"),
            (AuthError::UnknownKey, "token-unknown-key"),
            (AuthError::InvalidTtl, "internal"),
            (AuthError::TokenTooLong { len: 5000 }, "internal"),
            (AuthError::RevocationListFull, "internal"),
            (AuthError::Random, "internal"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    #[test]
    fn messages_are_lowercase() {
        let errs = [
            AuthError::Malformed("x"),
            AuthError::BadSignature,
            AuthError::Expired {
                expired_at: 1,
                now: 2,
            },
            AuthError::WrongUser,
            AuthError::Random,
        ];
        let key_errs = [KeyError::SecretTooShort { len: 3 }, KeyError::InvalidKeyId];
        let messages = errs
            .iter()
            .map(ToString::to_string)
            .chain(key_errs.iter().map(ToString::to_string));
        for msg in messages {
            assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
        }
    }
}
