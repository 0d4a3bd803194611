//! The admin key, the `Authorization: Bearer` header, and token errors as wire codes.

use octate_auth::AuthError;
use octate_protocol::ErrorCode;

/// The admin key, kept so that comparisons take the same time whatever the guess.
pub(crate) struct AdminKey {
    key: ring::hmac::Key,
    tag: ring::hmac::Tag,
}

impl AdminKey {
    /// Keeps an HMAC of `secret` under a random per-process key.
    pub(crate) fn new(secret: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        // Invariant: the system RNG is available; without it no token could be signed either.
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .expect("system random number generator available");
        let tag = ring::hmac::sign(&key, secret.as_bytes());
        Self { key, tag }
    }

    /// Whether `given` is the admin key, compared in constant time.
    pub(crate) fn matches(&self, given: &str) -> bool {
        ring::hmac::verify(&self.key, given.as_bytes(), self.tag.as_ref()).is_ok()
    }
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

/// The credentials of an `Authorization: Bearer <credentials>` header value, if it is one.
///
/// The scheme matches in any case (RFC 9110 §11.1) and is followed by one or more spaces.
pub(crate) fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, credentials) = authorization.split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

/// The wire code for a token error.
pub(crate) fn auth_error_code(err: &AuthError) -> ErrorCode {
    match err {
        AuthError::Malformed(_) | AuthError::TokenTooLong { .. } => ErrorCode::TokenMalformed,
        AuthError::BadSignature => ErrorCode::TokenBadSignature,
        AuthError::Expired { .. } => ErrorCode::TokenExpired,
        AuthError::NotYetValid { .. } => ErrorCode::TokenNotYetValid,
        AuthError::LifetimeTooLong { .. } | AuthError::InvertedLifetime { .. } => {
            ErrorCode::TokenBadLifetime
        }
        AuthError::WrongUser => ErrorCode::TokenWrongUser,
        AuthError::WrongRoom => ErrorCode::TokenWrongRoom,
        AuthError::Revoked => ErrorCode::TokenRevoked,
        AuthError::UnknownKey => ErrorCode::TokenUnknownKey,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_key_matches_only_itself() {
        let key = AdminKey::new("s3cret-admin-key");
        assert!(key.matches("s3cret-admin-key"));
        assert!(!key.matches("s3cret-admin-kez"));
        assert!(!key.matches(""));
    }

    #[test]
    fn bearer_scheme_matches_in_any_case() {
        for header in [
            "Bearer k",
            "bearer k",
            "BEARER k",
            "bEaReR   k",
            "Bearer k ",
        ] {
            assert_eq!(bearer_token(header), Some("k"), "{header:?}");
        }
        for header in [
            "Basic k",
            "Bearerk",
            "Bearers k",
            "Bearer",
            "Bearer  ",
            "k",
            "",
        ] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn codes_match_the_auth_crate() {
        let cases = [
            AuthError::Malformed("x"),
            AuthError::BadSignature,
            AuthError::Expired {
                expired_at: 1,
                now: 2,
            },
            AuthError::NotYetValid {
                issued_at: 2,
                now: 1,
            },
            AuthError::LifetimeTooLong {
                lifetime_ms: 2,
                max_ms: 1,
            },
            AuthError::InvertedLifetime {
                issued_at: 2,
                expires_at: 1,
            },
            AuthError::WrongUser,
            AuthError::WrongRoom,
            AuthError::Revoked,
            AuthError::UnknownKey,
        ];
        for err in cases {
            assert_eq!(auth_error_code(&err).as_str(), err.code(), "{err:?}");
        }
    }
}
