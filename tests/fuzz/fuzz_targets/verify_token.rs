//! Arbitrary strings into `TokenAuthority::verify`.
//!
//! Input: the first byte picks `now` from `NOW_TABLE`; the rest is the token (lossily
//! made UTF-8 when it is not). Invariants:
//! - `verify` never panics, and gives the same answer twice;
//! - it returns `Ok` only for the exact string `issue` writes for those claims with the
//!   target's own secret (checked against an independent re-encoding and HMAC): so a
//!   random, mutated, re-encoded or forged token never verifies;
//! - an `Ok` token is within its lifetime (30 s skew), not revoked, signed by a known key,
//!   and `verify_for` agrees on its user and room;
//! - an authority with the same key ids but other secrets verifies nothing.
#![no_main]

use std::borrow::Cow;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use octate_auth::{AuthError, TokenAuthority};
use octate_fuzz::{NOW_TABLE, REVOKED_TOKEN, T0, authority, canonical_token, impostor, secret_of};

struct Setup {
    authority: TokenAuthority,
    impostor: TokenAuthority,
    revoked_jti: String,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let mut authority = authority();
    let revoked = authority
        .revoke(REVOKED_TOKEN, T0)
        .expect("the revoked seed token is valid at T0");
    Setup {
        authority,
        impostor: impostor(),
        revoked_jti: revoked.token_id,
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let now = NOW_TABLE[usize::from(pick) % NOW_TABLE.len()];
    let token: Cow<'_, str> = String::from_utf8_lossy(rest);
    let setup = &*SETUP;

    let result = setup.authority.verify(&token, now);
    assert_eq!(
        result,
        setup.authority.verify(&token, now),
        "verify is not deterministic"
    );
    assert!(
        setup.impostor.verify(&token, now).is_err(),
        "an authority with other secrets verified {token:?}"
    );
    match result {
        Ok(claims) => {
            let secret = secret_of(&claims.key_id)
                .unwrap_or_else(|| panic!("verified under unknown key {:?}", claims.key_id));
            assert_eq!(
                token,
                canonical_token(&claims, secret),
                "a token that issue did not write verified"
            );
            assert!(
                claims.issued_at.saturating_sub(30_000) <= now,
                "{claims:?} at {now}"
            );
            assert!(now < claims.expires_at, "expired {claims:?} at {now}");
            assert_ne!(
                claims.token_id, setup.revoked_jti,
                "a revoked token verified"
            );
            assert_eq!(
                setup
                    .authority
                    .verify_for(&token, &claims.user_id, &claims.room_id, now),
                Ok(claims.clone())
            );
            let other_user = format!("{}x", claims.user_id);
            assert_eq!(
                setup
                    .authority
                    .verify_for(&token, &other_user, &claims.room_id, now),
                Err(AuthError::WrongUser)
            );
        }
        Err(e) => {
            assert!(e.to_string().len() <= 512, "unbounded error text: {e}");
        }
    }
});
