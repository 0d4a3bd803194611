//! Tokens minted outside a server: with the test servers' secret, or with any key at all
//! (a stranger's key id, another secret, a clock in the past or the future).

use std::time::Duration;

use octate_auth::{KeyRing, TokenAuthority};

/// The secret every in-process test server signs with (key id [`KEY_ID`]).
pub const SECRET: &[u8] = b"test-secret-0123456789abcdef-0123456789";

/// The key id of [`SECRET`].
pub const KEY_ID: &str = "k1";

/// How long a token from [`mint`] lives.
pub const HOUR: Duration = Duration::from_secs(3600);

/// The token authority of the test servers: key [`KEY_ID`] with [`SECRET`].
pub fn authority() -> TokenAuthority {
    authority_with(KEY_ID, SECRET)
}

/// A token authority with one key; panics if the key is invalid.
pub fn authority_with(key_id: &str, secret: &[u8]) -> TokenAuthority {
    TokenAuthority::new(KeyRing::new(key_id, secret).expect("a valid test key"))
}

/// A token for `user` in `room` signed with `key_id` / `secret`, issued at `issued_at`
/// (Unix milliseconds), valid for `ttl`.
pub fn mint_with(
    key_id: &str,
    secret: &[u8],
    user: &str,
    room: &str,
    issued_at: u64,
    ttl: Duration,
) -> String {
    authority_with(key_id, secret)
        .issue(user, room, Some(ttl), issued_at)
        .expect("test claims are valid")
        .0
}

/// A token of the test servers' key for `user` in `room`, issued at `issued_at`, valid an hour.
pub fn mint(user: &str, room: &str, issued_at: u64) -> String {
    mint_with(KEY_ID, SECRET, user, room, issued_at, HOUR)
}

/// The current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}
