//! Issuing and verifying tokens, with expiry, clock skew and revocation.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::claims::{self, Claims, MAX_TOKEN_LEN};
use crate::{AuthError, KeyError, KeyRing, RevocationList};

/// Random bytes in a token id.
const TOKEN_ID_BYTES: usize = 16;

/// A duration in whole milliseconds, saturating at `u64::MAX`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Issues, verifies and revokes tokens with the keys of a [`KeyRing`].
///
/// Time is always passed in as `now_ms`, Unix milliseconds. Verification
/// takes `&self`; revocation mutates and takes `&mut self`, so a shared
/// authority is wrapped in a lock by its owner.
#[derive(Debug)]
pub struct TokenAuthority {
    keys: KeyRing,
    default_ttl_ms: u64,
    max_ttl_ms: u64,
    skew_ms: u64,
    revoked: RevocationList,
    rng: SystemRandom,
}

impl TokenAuthority {
    /// Lifetime of a token when the caller asks for none: one hour.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);
    /// Longest lifetime granted by default: 24 hours; longer requests are shortened.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
    /// How far in the future `issued_at` may be by default: 30 seconds.
    pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);

    /// Creates an authority with the default TTLs, clock skew and revocation capacity.
    pub fn new(keys: KeyRing) -> Self {
        Self {
            keys,
            default_ttl_ms: millis(Self::DEFAULT_TTL),
            max_ttl_ms: millis(Self::DEFAULT_MAX_TTL),
            skew_ms: millis(Self::DEFAULT_CLOCK_SKEW),
            revoked: RevocationList::new(),
            rng: SystemRandom::new(),
        }
    }

    /// Sets the default and maximum token lifetimes; both at least 1 ms, default ≤ max.
    pub fn with_ttls(mut self, default_ttl: Duration, max_ttl: Duration) -> Result<Self, KeyError> {
        let (default_ms, max_ms) = (millis(default_ttl), millis(max_ttl));
        if default_ms == 0 || default_ms > max_ms {
            return Err(KeyError::InvalidTtl);
        }
        self.default_ttl_ms = default_ms;
        self.max_ttl_ms = max_ms;
        Ok(self)
    }

    /// Sets how far in the future a token's `issued_at` may be (clocks of issuers differ).
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.skew_ms = millis(skew);
        self
    }

    /// Replaces the revocation list with an empty one bounded to `capacity` entries.
    pub fn with_revocation_capacity(mut self, capacity: usize) -> Self {
        self.revoked = RevocationList::with_capacity(capacity);
        self
    }

    /// Lifetime of tokens issued without an explicit TTL.
    pub fn default_ttl(&self) -> Duration {
        Duration::from_millis(self.default_ttl_ms)
    }

    /// Longest lifetime a token is issued with.
    pub fn max_ttl(&self) -> Duration {
        Duration::from_millis(self.max_ttl_ms)
    }

    /// How far in the future a token's `issued_at` may be.
    pub fn clock_skew(&self) -> Duration {
        Duration::from_millis(self.skew_ms)
    }

    /// The keys tokens are signed and verified with.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The keys, for rotation ([`KeyRing::rotate`]) and retirement of old keys.
    pub fn keys_mut(&mut self) -> &mut KeyRing {
        &mut self.keys
    }

    /// The revoked token ids.
    pub fn revocations(&self) -> &RevocationList {
        &self.revoked
    }

    /// Issues a token for `user_id` in `room_id`, valid from `now_ms` for `ttl`.
    ///
    /// `None` means [`TokenAuthority::default_ttl`]; a longer TTL than
    /// [`TokenAuthority::max_ttl`] is shortened to it; a TTL under one
    /// millisecond is refused with [`AuthError::InvalidTtl`]. Returns the
    /// token string and the claims it carries.
    pub fn issue(
        &self,
        user_id: &str,
        room_id: &str,
        ttl: Option<Duration>,
        now_ms: u64,
    ) -> Result<(String, Claims), AuthError> {
        let ttl_ms = match ttl {
            None => self.default_ttl_ms,
            Some(ttl) => match millis(ttl) {
                0 => return Err(AuthError::InvalidTtl),
                ms => ms.min(self.max_ttl_ms),
            },
        };
        let mut id = [0u8; TOKEN_ID_BYTES];
        self.rng.fill(&mut id).map_err(|_| AuthError::Random)?;
        let claims = Claims {
            token_id: URL_SAFE_NO_PAD.encode(id),
            key_id: self.keys.signing_key_id().to_owned(),
            user_id: user_id.to_owned(),
            room_id: room_id.to_owned(),
            issued_at: now_ms,
            expires_at: now_ms.saturating_add(ttl_ms),
        };
        let payload = claims::encode_payload(&claims);
        let tag = self.keys.sign(payload.as_bytes());
        let token = claims::assemble(&payload, tag.as_ref());
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TokenTooLong { len: token.len() });
        }
        Ok((token, claims))
    }

    /// Verifies a token at `now_ms` and returns its claims.
    ///
    /// Checks, in order: structure ([`AuthError::Malformed`]), key id
    /// ([`AuthError::UnknownKey`]), signature in constant time
    /// ([`AuthError::BadSignature`]), and only then the claims: a lifetime
    /// that ends before it starts ([`AuthError::InvertedLifetime`]) or is
    /// longer than [`TokenAuthority::max_ttl`] ([`AuthError::LifetimeTooLong`]),
    /// issued beyond the clock skew ([`AuthError::NotYetValid`]), expired
    /// ([`AuthError::Expired`], from `expires_at` on) and revoked
    /// ([`AuthError::Revoked`]).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, AuthError> {
        let unverified = claims::parse(token)?;
        let key = self
            .keys
            .key(&unverified.claims.key_id)
            .ok_or(AuthError::UnknownKey)?;
        hmac::verify(key, unverified.signed_part.as_bytes(), &unverified.tag)
            .map_err(|_| AuthError::BadSignature)?;
        // The signature checks out: the claims can be trusted from here on.
        let claims = unverified.claims;
        // A verify-only key may belong to an issuer with other rules: the lifetime is
        // judged here too, so no token outlives what this server would grant.
        if claims.expires_at <= claims.issued_at {
            return Err(AuthError::InvertedLifetime {
                issued_at: claims.issued_at,
                expires_at: claims.expires_at,
            });
        }
        let lifetime_ms = claims.expires_at - claims.issued_at;
        if lifetime_ms > self.max_ttl_ms {
            return Err(AuthError::LifetimeTooLong {
                lifetime_ms,
                max_ms: self.max_ttl_ms,
            });
        }
        if claims.issued_at.saturating_sub(self.skew_ms) > now_ms {
            return Err(AuthError::NotYetValid {
                issued_at: claims.issued_at,
                now: now_ms,
            });
        }
        if claims.expires_at <= now_ms {
            return Err(AuthError::Expired {
                expired_at: claims.expires_at,
                now: now_ms,
            });
        }
        if self.revoked.is_revoked(&claims.token_id) {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }

    /// Verifies a token as [`TokenAuthority::verify`] does, and that it is for this user and room.
    pub fn verify_for(
        &self,
        token: &str,
        user_id: &str,
        room_id: &str,
        now_ms: u64,
    ) -> Result<Claims, AuthError> {
        let claims = self.verify(token, now_ms)?;
        if claims.user_id != user_id {
            return Err(AuthError::WrongUser);
        }
        if claims.room_id != room_id {
            return Err(AuthError::WrongRoom);
        }
        Ok(claims)
    }

    /// Revokes a valid token until it expires, and returns its claims.
    ///
    /// Since only tokens that verify are revoked, an entry is kept at most
    /// [`TokenAuthority::max_ttl`] plus the clock skew. A token that does not verify (including one already revoked) is an
    /// error. When the list is full, expired entries are purged first; if
    /// that frees nothing, fails with [`AuthError::RevocationListFull`].
    pub fn revoke(&mut self, token: &str, now_ms: u64) -> Result<Claims, AuthError> {
        let claims = self.verify(token, now_ms)?;
        if self
            .revoked
            .revoke(claims.token_id.as_str(), claims.expires_at)
            .is_err()
        {
            self.revoked.purge(now_ms);
            self.revoked
                .revoke(claims.token_id.as_str(), claims.expires_at)?;
        }
        Ok(claims)
    }

    /// Refuses the token with id `token_id` until `expires_at`, as learned from elsewhere
    /// (another node of a cluster); the token itself is not needed.
    pub fn revoke_id(
        &mut self,
        token_id: &str,
        expires_at: u64,
        now_ms: u64,
    ) -> Result<(), AuthError> {
        if self.revoked.revoke(token_id, expires_at).is_err() {
            self.revoked.purge(now_ms);
            self.revoked.revoke(token_id, expires_at)?;
        }
        Ok(())
    }

    /// Forgets revocations of tokens expired at `now_ms`; returns how many were dropped.
    pub fn purge_revoked(&mut self, now_ms: u64) -> usize {
        self.revoked.purge(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECRET_A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const SECRET_B: &[u8] = b"fedcba9876543210fedcba9876543210";
    const SECRET_C: &[u8] = b"a third secret, also 32+ bytes long";
    const NOW: u64 = 1_700_000_000_000;
    const HOUR_MS: u64 = 60 * 60 * 1000;
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    fn authority(kid: &str, secret: &[u8]) -> TokenAuthority {
        TokenAuthority::new(KeyRing::new(kid, secret).expect("valid test key"))
    }

    fn issue(auth: &TokenAuthority, ttl: Option<Duration>, now: u64) -> (String, Claims) {
        auth.issue("alice", "room-1", ttl, now)
            .expect("issue succeeds")
    }

    #[test]
    fn issue_then_verify_round_trips() {
        let auth = authority("k1", SECRET_A);
        let (token, claims) = issue(&auth, None, NOW);
        assert_eq!(claims.user_id, "alice");
        assert_eq!(claims.room_id, "room-1");
        assert_eq!(claims.key_id, "k1");
        assert_eq!(claims.issued_at, NOW);
        assert_eq!(claims.expires_at, NOW + HOUR_MS);
        assert_eq!(claims.token_id.len(), 22);
        assert_eq!(auth.verify(&token, NOW), Ok(claims.clone()));
        assert_eq!(
            auth.verify_for(&token, "alice", "room-1", NOW + 1),
            Ok(claims)
        );
        assert!(token.bytes().all(|b| B64URL.contains(&b) || b == b'.'));
    }

    #[test]
    fn token_ids_are_unique() {
        let auth = authority("k1", SECRET_A);
        let ids: std::collections::HashSet<String> = (0..200)
            .map(|_| issue(&auth, None, NOW).1.token_id)
            .collect();
        assert_eq!(ids.len(), 200);
    }

    #[test]
    fn flipping_any_single_byte_never_verifies() {
        let auth = authority("k1", SECRET_A);
        let (token, _) = issue(&auth, None, NOW);
        let bytes = token.as_bytes();
        let extras: [&[u8]; 7] = [b".", b"=", b"+", b"/", b" ", b"\0", "\u{e9}".as_bytes()];
        let mut tried = 0;
        for i in 0..bytes.len() {
            let replacements = B64URL
                .chunks(1)
                .chain(extras)
                .filter(|r| *r != &bytes[i..=i]);
            for replacement in replacements {
                let mut mutated = bytes[..i].to_vec();
                mutated.extend_from_slice(replacement);
                mutated.extend_from_slice(&bytes[i + 1..]);
                let mutated = String::from_utf8(mutated).expect("replacements keep UTF-8");
                let result = auth.verify(&mutated, NOW);
                assert!(
                    result.is_err(),
                    "position {i} -> {replacement:?} verified: {result:?}"
                );
                tried += 1;
            }
        }
        assert!(tried > 60 * bytes.len());
        // Truncation and extension are refused too.
        for end in 0..bytes.len() {
            assert!(
                auth.verify(&token[..end], NOW).is_err(),
                "prefix of length {end} verified"
            );
        }
        assert!(auth.verify(&format!("{token}A"), NOW).is_err());
    }

    #[test]
    fn tampered_claims_fail_the_signature_check() {
        let auth = authority("k1", SECRET_A);
        let (token, mut claims) = issue(&auth, None, NOW);
        let (_, sig) = token.split_once('.').expect("two segments");
        claims.user_id = "mallory".into();
        let forged = format!("{}.{sig}", claims::encode_payload(&claims));
        assert_eq!(auth.verify(&forged, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn signature_is_checked_before_time_claims() {
        // A forged token that is also expired reports the forgery, not the expiry.
        let auth = authority("k1", SECRET_A);
        let (token, mut claims) = issue(&auth, None, NOW);
        let (_, sig) = token.split_once('.').expect("two segments");
        claims.expires_at = 1;
        claims.issued_at = 0;
        let forged = format!("{}.{sig}", claims::encode_payload(&claims));
        assert_eq!(auth.verify(&forged, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn expiry_is_exclusive() {
        let auth = authority("k1", SECRET_A);
        let (token, claims) = issue(&auth, Some(Duration::from_secs(10)), NOW);
        assert_eq!(claims.expires_at, NOW + 10_000);
        assert!(auth.verify(&token, claims.expires_at - 1).is_ok());
        assert_eq!(
            auth.verify(&token, claims.expires_at),
            Err(AuthError::Expired {
                expired_at: claims.expires_at,
                now: claims.expires_at
            })
        );
        assert_eq!(
            auth.verify(&token, u64::MAX),
            Err(AuthError::Expired {
                expired_at: claims.expires_at,
                now: u64::MAX
            })
        );
    }

    #[test]
    fn issued_in_the_future_is_accepted_only_within_skew() {
        let auth = authority("k1", SECRET_A);
        let skew = millis(TokenAuthority::DEFAULT_CLOCK_SKEW);
        let (token, _) = issue(&auth, None, NOW);
        assert!(auth.verify(&token, NOW - skew).is_ok());
        assert_eq!(
            auth.verify(&token, NOW - skew - 1),
            Err(AuthError::NotYetValid {
                issued_at: NOW,
                now: NOW - skew - 1
            })
        );
        assert!(matches!(
            auth.verify(&token, 0),
            Err(AuthError::NotYetValid { .. })
        ));

        let strict = authority("k1", SECRET_A).with_clock_skew(Duration::ZERO);
        assert!(strict.verify(&token, NOW).is_ok());
        assert!(matches!(
            strict.verify(&token, NOW - 1),
            Err(AuthError::NotYetValid { .. })
        ));
    }

    #[test]
    fn wrong_user_and_wrong_room_are_refused() {
        let auth = authority("k1", SECRET_A);
        let (token, _) = issue(&auth, None, NOW);
        assert_eq!(
            auth.verify_for(&token, "bob", "room-1", NOW),
            Err(AuthError::WrongUser)
        );
        assert_eq!(
            auth.verify_for(&token, "alice", "room-2", NOW),
            Err(AuthError::WrongRoom)
        );
        assert_eq!(
            auth.verify_for(&token, "Alice", "room-1", NOW),
            Err(AuthError::WrongUser)
        );
        // Validity problems come before identity problems.
        assert!(matches!(
            auth.verify_for(&token, "bob", "room-2", NOW + HOUR_MS),
            Err(AuthError::Expired { .. })
        ));
    }

    #[test]
    fn ttl_defaults_clamps_and_refuses_zero() {
        let auth = authority("k1", SECRET_A);
        assert_eq!(
            auth.issue("u", "r", Some(Duration::ZERO), NOW),
            Err(AuthError::InvalidTtl)
        );
        assert_eq!(
            auth.issue("u", "r", Some(Duration::from_micros(999)), NOW),
            Err(AuthError::InvalidTtl)
        );
        let (_, long) = issue(&auth, Some(Duration::from_secs(7 * 24 * 3600)), NOW);
        assert_eq!(long.expires_at, NOW + 24 * HOUR_MS);
        let (_, huge) = issue(&auth, Some(Duration::MAX), NOW);
        assert_eq!(huge.expires_at, NOW + 24 * HOUR_MS);
        let (_, short) = issue(&auth, Some(Duration::from_millis(1)), NOW);
        assert_eq!(short.expires_at, NOW + 1);

        let custom = authority("k1", SECRET_A)
            .with_ttls(Duration::from_secs(60), Duration::from_secs(120))
            .expect("valid ttls");
        assert_eq!(custom.default_ttl(), Duration::from_secs(60));
        assert_eq!(custom.max_ttl(), Duration::from_secs(120));
        assert_eq!(issue(&custom, None, NOW).1.expires_at, NOW + 60_000);
        assert_eq!(
            issue(&custom, Some(Duration::from_secs(600)), NOW)
                .1
                .expires_at,
            NOW + 120_000
        );

        let bad = |d, m| authority("k1", SECRET_A).with_ttls(d, m).err();
        assert_eq!(
            bad(Duration::ZERO, Duration::from_secs(1)),
            Some(KeyError::InvalidTtl)
        );
        assert_eq!(
            bad(Duration::from_secs(2), Duration::from_secs(1)),
            Some(KeyError::InvalidTtl)
        );
    }

    #[test]
    fn expiry_saturates_instead_of_overflowing() {
        let auth = authority("k1", SECRET_A);
        let (token, claims) = issue(&auth, None, u64::MAX - 5);
        assert_eq!(claims.expires_at, u64::MAX);
        assert!(auth.verify(&token, u64::MAX - 1).is_ok());
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_new_key() {
        let mut auth = authority("k1", SECRET_A);
        let (old_token, old_claims) = issue(&auth, None, NOW);
        auth.keys_mut().rotate("k2", SECRET_B).expect("rotation");
        assert_eq!(auth.verify(&old_token, NOW), Ok(old_claims));
        let (new_token, new_claims) = issue(&auth, None, NOW);
        assert_eq!(new_claims.key_id, "k2");
        assert!(auth.verify(&new_token, NOW).is_ok());

        // An instance that only knows the old key cannot verify the new token.
        let old_only = authority("k1", SECRET_A);
        assert_eq!(old_only.verify(&new_token, NOW), Err(AuthError::UnknownKey));

        // Retiring the old key retires its tokens.
        assert!(auth.keys_mut().remove_verifying_key("k1"));
        assert_eq!(auth.verify(&old_token, NOW), Err(AuthError::UnknownKey));
        assert!(auth.verify(&new_token, NOW).is_ok());
    }

    #[test]
    fn added_verifying_keys_accept_other_issuers_tokens() {
        let other = authority("other", SECRET_C);
        let (token, _) = issue(&other, None, NOW);
        let mut auth = authority("k1", SECRET_A);
        assert_eq!(auth.verify(&token, NOW), Err(AuthError::UnknownKey));
        auth.keys_mut()
            .add_verifying_key("other", SECRET_C)
            .expect("new id");
        assert!(auth.verify(&token, NOW).is_ok());
        // New tokens are still signed with the signing key.
        assert_eq!(issue(&auth, None, NOW).1.key_id, "k1");
    }

    #[test]
    fn same_key_id_with_another_secret_is_a_bad_signature() {
        let a = authority("k1", SECRET_A);
        let b = authority("k1", SECRET_B);
        let (token, _) = issue(&a, None, NOW);
        assert_eq!(b.verify(&token, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn tokens_survive_a_restart_with_the_same_secret() {
        let before = authority("k1", SECRET_A);
        let after = authority("k1", SECRET_A);
        let (t1, c1) = issue(&before, None, NOW);
        let (t2, c2) = issue(&after, None, NOW);
        assert_eq!(after.verify(&t1, NOW), Ok(c1));
        assert_eq!(before.verify(&t2, NOW), Ok(c2));
    }

    #[test]
    fn generated_authorities_do_not_trust_each_other() {
        let a = TokenAuthority::new(KeyRing::generate().expect("rng"));
        let b = TokenAuthority::new(KeyRing::generate().expect("rng"));
        let (token, _) = issue(&a, None, NOW);
        assert!(a.verify(&token, NOW).is_ok());
        assert_eq!(b.verify(&token, NOW), Err(AuthError::UnknownKey));
    }

    #[test]
    fn revoked_tokens_are_refused() {
        let mut auth = authority("k1", SECRET_A);
        let (token, claims) = issue(&auth, None, NOW);
        let (other, _) = issue(&auth, None, NOW);
        assert_eq!(auth.revoke(&token, NOW), Ok(claims.clone()));
        assert!(auth.revocations().is_revoked(&claims.token_id));
        assert_eq!(auth.verify(&token, NOW), Err(AuthError::Revoked));
        assert_eq!(
            auth.verify_for(&token, "alice", "room-1", NOW),
            Err(AuthError::Revoked)
        );
        assert!(auth.verify(&other, NOW).is_ok());
        // Revoking again, or revoking an invalid token, is an error.
        assert_eq!(auth.revoke(&token, NOW), Err(AuthError::Revoked));
        assert!(matches!(
            auth.revoke("garbage", NOW),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            auth.revoke(&other, NOW + HOUR_MS),
            Err(AuthError::Expired { .. })
        ));
        assert_eq!(auth.revocations().len(), 1);
    }

    #[test]
    fn purge_drops_only_revocations_of_expired_tokens() {
        let mut auth = authority("k1", SECRET_A);
        let (short, _) = issue(&auth, Some(Duration::from_secs(10)), NOW);
        let (long, _) = issue(&auth, Some(Duration::from_secs(100)), NOW);
        auth.revoke(&short, NOW).expect("valid token");
        auth.revoke(&long, NOW).expect("valid token");
        assert_eq!(auth.purge_revoked(NOW + 9_999), 0);
        assert_eq!(auth.purge_revoked(NOW + 10_000), 1);
        assert_eq!(auth.revocations().len(), 1);
        assert_eq!(auth.verify(&long, NOW + 10_000), Err(AuthError::Revoked));
        // The purged token is still refused, because it has expired.
        assert!(matches!(
            auth.verify(&short, NOW + 10_000),
            Err(AuthError::Expired { .. })
        ));
    }

    #[test]
    fn revocation_list_is_bounded() {
        let mut auth = authority("k1", SECRET_A).with_revocation_capacity(2);
        let (t1, _) = issue(&auth, Some(Duration::from_secs(10)), NOW);
        let (t2, _) = issue(&auth, Some(Duration::from_secs(100)), NOW);
        let (t3, _) = issue(&auth, Some(Duration::from_secs(100)), NOW);
        auth.revoke(&t1, NOW).expect("room");
        auth.revoke(&t2, NOW).expect("room");
        assert_eq!(auth.revoke(&t3, NOW), Err(AuthError::RevocationListFull));
        assert!(auth.verify(&t3, NOW).is_ok());
        // Once t1 has expired, a full list purges it to make room.
        assert!(auth.revoke(&t3, NOW + 10_000).is_ok());
        assert_eq!(auth.verify(&t3, NOW + 10_000), Err(AuthError::Revoked));
        assert_eq!(auth.revocations().len(), 2);
    }

    #[test]
    fn oversize_tokens_are_malformed() {
        let auth = authority("k1", SECRET_A);
        let (token, _) = issue(&auth, None, NOW);
        let padded = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            auth.verify(&padded, NOW),
            Err(AuthError::Malformed("token too long"))
        );
        let huge = "a".repeat(1 << 20);
        assert_eq!(
            auth.verify(&huge, NOW),
            Err(AuthError::Malformed("token too long"))
        );
    }

    #[test]
    fn issuing_a_token_too_long_to_verify_is_refused() {
        let auth = authority("k1", SECRET_A);
        let long_id = "u".repeat(MAX_TOKEN_LEN);
        assert!(matches!(
            auth.issue(&long_id, "r", None, NOW),
            Err(AuthError::TokenTooLong { .. })
        ));
        // The longest ids the protocol allows (128 bytes) fit comfortably.
        let id = "x".repeat(128);
        let (token, _) = auth.issue(&id, &id, None, NOW).expect("fits");
        assert!(auth.verify_for(&token, &id, &id, NOW).is_ok());
    }

    #[test]
    fn unknown_key_ids_are_reported() {
        let auth = authority("k1", SECRET_A);
        let stranger = authority("k9", SECRET_A);
        let (token, _) = issue(&stranger, None, NOW);
        assert_eq!(auth.verify(&token, NOW), Err(AuthError::UnknownKey));
    }

    /// A token with these claims signed by `auth`'s signing key, as a holder of a
    /// verify-only key of another deployment could sign it.
    fn signed(auth: &TokenAuthority, claims: &Claims) -> String {
        let payload = claims::encode_payload(claims);
        claims::assemble(&payload, auth.keys.sign(payload.as_bytes()).as_ref())
    }

    fn claims_for(issued_at: u64, expires_at: u64) -> Claims {
        Claims {
            token_id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            key_id: "k1".into(),
            user_id: "alice".into(),
            room_id: "room-1".into(),
            issued_at,
            expires_at,
        }
    }

    #[test]
    fn lifetimes_beyond_the_maximum_or_inverted_are_refused() {
        let auth = authority("k1", SECRET_A)
            .with_ttls(Duration::from_secs(60), Duration::from_secs(600))
            .expect("valid ttls");
        let max = 600_000;
        assert!(
            auth.verify(&signed(&auth, &claims_for(NOW, NOW + max)), NOW)
                .is_ok()
        );
        assert_eq!(
            auth.verify(&signed(&auth, &claims_for(NOW, NOW + max + 1)), NOW),
            Err(AuthError::LifetimeTooLong {
                lifetime_ms: max + 1,
                max_ms: max
            })
        );
        assert_eq!(
            auth.verify(&signed(&auth, &claims_for(NOW, u64::MAX)), NOW),
            Err(AuthError::LifetimeTooLong {
                lifetime_ms: u64::MAX - NOW,
                max_ms: max
            })
        );
        for exp in [NOW, NOW - 1, 0] {
            assert_eq!(
                auth.verify(&signed(&auth, &claims_for(NOW, exp)), NOW - 10),
                Err(AuthError::InvertedLifetime {
                    issued_at: NOW,
                    expires_at: exp
                })
            );
        }
    }

    #[test]
    fn revocations_are_kept_no_longer_than_the_longest_lifetime() {
        let mut auth = authority("k1", SECRET_A)
            .with_ttls(Duration::from_secs(60), Duration::from_secs(600))
            .expect("valid ttls")
            .with_clock_skew(Duration::ZERO);
        let token = signed(&auth, &claims_for(NOW, NOW + 600_000));
        auth.revoke(&token, NOW + 1).expect("valid token");
        assert_eq!(auth.purge_revoked(NOW + 599_999), 0);
        assert_eq!(auth.purge_revoked(NOW + 600_000), 1);
        // A token that could outlive the maximum is never stored at all.
        let long = signed(&auth, &claims_for(NOW, u64::MAX));
        assert!(matches!(
            auth.revoke(&long, NOW),
            Err(AuthError::LifetimeTooLong { .. })
        ));
        assert!(auth.revocations().is_empty());
    }

    #[test]
    fn long_token_ids_are_malformed() {
        let auth = authority("k1", SECRET_A);
        let mut claims = claims_for(NOW, NOW + 1000);
        claims.token_id = "j".repeat(claims::MAX_TOKEN_ID_LEN + 1);
        assert_eq!(
            auth.verify(&signed(&auth, &claims), NOW),
            Err(AuthError::Malformed("token id too long"))
        );
        claims.token_id = "j".repeat(claims::MAX_TOKEN_ID_LEN);
        assert!(auth.verify(&signed(&auth, &claims), NOW).is_ok());
    }

    #[test]
    fn debug_does_not_leak_secrets() {
        let auth = authority("k1", SECRET_A);
        let shown = format!("{auth:?}");
        assert!(shown.contains("k1"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_strings_never_verify(input in ".{0,300}") {
            let auth = authority("k1", SECRET_A);
            prop_assert!(auth.verify(&input, NOW).is_err());
        }

        #[test]
        fn token_shaped_strings_never_verify(
            payload in "[A-Za-z0-9_-]{0,200}",
            sig in "[A-Za-z0-9_-]{40,46}",
        ) {
            let auth = authority("k1", SECRET_A);
            let token = format!("{payload}.{sig}");
            prop_assert!(auth.verify(&token, NOW).is_err());
        }

        #[test]
        fn forged_payloads_with_valid_json_never_verify(
            user in "[a-z]{1,20}",
            iat in any::<u64>(),
            exp in any::<u64>(),
            sig in proptest::array::uniform32(any::<u8>()),
        ) {
            let auth = authority("k1", SECRET_A);
            let claims = Claims {
                token_id: "t".into(),
                key_id: "k1".into(),
                user_id: user,
                room_id: "r".into(),
                issued_at: iat,
                expires_at: exp,
            };
            let forged = claims::assemble(&claims::encode_payload(&claims), &sig);
            prop_assert_eq!(auth.verify(&forged, NOW), Err(AuthError::BadSignature));
        }

        #[test]
        fn signed_lifetimes_are_judged_against_the_maximum(
            iat in NOW - HOUR_MS..NOW + HOUR_MS,
            exp in prop_oneof![any::<u64>(), NOW - 2 * HOUR_MS..NOW + 50 * HOUR_MS],
            max_hours in 1u64..48,
        ) {
            let auth = authority("k1", SECRET_A)
                .with_ttls(Duration::from_secs(1), Duration::from_secs(max_hours * 3600))
                .expect("valid ttls");
            let max = max_hours * HOUR_MS;
            let result = auth.verify(&signed(&auth, &claims_for(iat, exp)), NOW);
            if exp <= iat {
                prop_assert_eq!(result, Err(AuthError::InvertedLifetime { issued_at: iat, expires_at: exp }));
            } else if exp - iat > max {
                prop_assert_eq!(result, Err(AuthError::LifetimeTooLong { lifetime_ms: exp - iat, max_ms: max }));
            } else if exp <= NOW {
                prop_assert!(matches!(result, Err(AuthError::Expired { .. })), "{:?}", result);
            } else if iat > NOW + millis(TokenAuthority::DEFAULT_CLOCK_SKEW) {
                prop_assert!(matches!(result, Err(AuthError::NotYetValid { .. })), "{:?}", result);
            } else {
                prop_assert!(result.is_ok(), "{:?}", result);
            }
        }

        #[test]
        fn issued_tokens_verify_within_their_lifetime(
            ttl_ms in 1u64..=24 * HOUR_MS,
            offset in 0u64..=24 * HOUR_MS,
        ) {
            let auth = authority("k1", SECRET_A);
            let (token, claims) = issue(&auth, Some(Duration::from_millis(ttl_ms)), NOW);
            let at = NOW + offset;
            let result = auth.verify(&token, at);
            if offset < ttl_ms {
                prop_assert_eq!(result, Ok(claims));
            } else {
                prop_assert!(matches!(result, Err(AuthError::Expired { .. })), "{:?}", result);
            }
        }
    }
}
