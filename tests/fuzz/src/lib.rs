//! What the fuzz targets and the corpus generator share: the token authority's fixed
//! secrets and clock, and the canonical form of a token, used as the `verify_token` oracle.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use octate_auth::{Claims, KeyRing, TokenAuthority};

/// The time the seed tokens were issued at (Unix milliseconds).
pub const T0: u64 = 1_700_000_000_000;
/// One hour, the seed tokens' lifetime.
pub const HOUR: u64 = 60 * 60 * 1000;

/// The key that signed tokens before the rotation: still verifies.
pub const OLD_KID: &str = "fuzz-old";
/// Its secret.
pub const OLD_SECRET: &[u8] = b"octate fuzz old secret, 32+ bytes long";
/// The key that signs new tokens.
pub const NEW_KID: &str = "fuzz-new";
/// Its secret.
pub const NEW_SECRET: &[u8] = b"octate fuzz new secret, 32+ bytes long";
/// A key the authority does not know.
pub const FOREIGN_KID: &str = "fuzz-foreign";
/// Its secret.
pub const FOREIGN_SECRET: &[u8] = b"octate fuzz foreign secret, 32+ bytes";

/// A token issued by the seed generator at `T0` (key `fuzz-new`), revoked by the target at start.
pub const REVOKED_TOKEN: &str = "eyJ2IjoxLCJraWQiOiJmdXp6LW5ldyIsImp0aSI6IlJpWElHaGtnMHg1YTE4OFZRUm9ic0EiLCJ1c2VySWQiOiJtYWxsb3J5Iiwicm9vbUlkIjoicm9vbS0xIiwiaWF0IjoxNzAwMDAwMDAwMDAwLCJleHAiOjE3MDAwMDM2MDAwMDB9.IaNr2wM-Y5lyW0D_DeUxK60jTKTUngEQZYjSijG_bnM";

/// The instants a `verify_token` input may pick (its first byte, modulo the length).
pub const NOW_TABLE: [u64; 12] = [
    T0,
    T0 + 1,
    T0 + HOUR / 2,
    T0 + HOUR - 1,
    T0 + HOUR,
    T0 + 25 * HOUR,
    T0 - 30_000,
    T0 - 30_001,
    T0 - HOUR,
    0,
    u64::MAX,
    T0 + 7,
];

/// The authority under test: signs with `fuzz-new`, still verifies `fuzz-old`.
pub fn authority() -> TokenAuthority {
    let mut keys = KeyRing::new(OLD_KID, OLD_SECRET).expect("valid fuzz key");
    keys.rotate(NEW_KID, NEW_SECRET).expect("valid fuzz key");
    TokenAuthority::new(keys)
}

/// An authority that knows only the old key (issues seed tokens signed with it).
pub fn old_authority() -> TokenAuthority {
    TokenAuthority::new(KeyRing::new(OLD_KID, OLD_SECRET).expect("valid fuzz key"))
}

/// An authority with a key the one under test does not know.
pub fn foreign_authority() -> TokenAuthority {
    TokenAuthority::new(KeyRing::new(FOREIGN_KID, FOREIGN_SECRET).expect("valid fuzz key"))
}

/// An authority with the same key ids as [`authority`] but other secrets: must verify nothing.
pub fn impostor() -> TokenAuthority {
    let mut keys = KeyRing::new(OLD_KID, FOREIGN_SECRET).expect("valid fuzz key");
    keys.rotate(NEW_KID, b"an impostor's secret of 32+ bytes!!")
        .expect("valid fuzz key");
    TokenAuthority::new(keys)
}

/// The secret the authority under test holds for a key id.
pub fn secret_of(kid: &str) -> Option<&'static [u8]> {
    match kid {
        OLD_KID => Some(OLD_SECRET),
        NEW_KID => Some(NEW_SECRET),
        _ => None,
    }
}

/// The one token string `TokenAuthority::issue` writes for these claims with this secret,
/// written independently of the crate: base64url(JSON with the fields in order), a dot,
/// base64url(HMAC-SHA256 of the first segment).
pub fn canonical_token(claims: &Claims, secret: &[u8]) -> String {
    let s = |v: &str| serde_json::to_string(v).expect("strings serialize");
    let json = format!(
        r#"{{"v":1,"kid":{},"jti":{},"userId":{},"roomId":{},"iat":{},"exp":{}}}"#,
        s(&claims.key_id),
        s(&claims.token_id),
        s(&claims.user_id),
        s(&claims.room_id),
        claims.issued_at,
        claims.expires_at
    );
    let payload = URL_SAFE_NO_PAD.encode(json);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, payload.as_bytes());
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}
