//! What a token says, and how it is laid out as a string.
//!
//! A token is `PAYLOAD.SIGNATURE`, both base64url without padding:
//!
//! * `PAYLOAD` encodes compact JSON with short field names, in this order:
//!   `v` (format version, always [`TOKEN_VERSION`]), `kid` (key id), `jti`
//!   (token id), `userId`, `roomId`, `iat` (issued at) and `exp` (expires
//!   at), the last two in Unix milliseconds. For example
//!   `{"v":1,"kid":"k1","jti":"…","userId":"u","roomId":"r","iat":1000,"exp":3601000}`.
//! * `SIGNATURE` encodes the 32-byte HMAC-SHA256 of the ASCII of `PAYLOAD`.
//!
//! This module only lays tokens out and takes them apart; it never checks a
//! signature, and what it parses must not be trusted until the caller has.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// The token format version this crate writes and accepts (the `v` field).
pub const TOKEN_VERSION: u8 = 1;

/// Longest token string accepted, in bytes; longer input is refused unread.
pub const MAX_TOKEN_LEN: usize = 2048;

/// Longest token id (`jti`) accepted, in bytes; ids issued here are 22.
///
/// Revoked ids are stored, so their size is bounded apart from the token's.
pub(crate) const MAX_TOKEN_ID_LEN: usize = 64;

/// Length of an HMAC-SHA256 tag, in bytes.
const TAG_LEN: usize = 32;

/// Length of a base64url-encoded (no padding) HMAC-SHA256 tag.
const TAG_B64_LEN: usize = 43;

/// The content of a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claims {
    /// Unique id of this token (`jti`): 16 random bytes, base64url; used for revocation.
    pub token_id: String,
    /// Id of the key that signed the token (`kid`).
    pub key_id: String,
    /// User the token was issued to (`userId`).
    pub user_id: String,
    /// Room the token lets its holder join (`roomId`).
    pub room_id: String,
    /// When the token was issued (`iat`), in Unix milliseconds.
    pub issued_at: u64,
    /// When the token stops being valid (`exp`), in Unix milliseconds; invalid from this instant on.
    pub expires_at: u64,
}

/// The JSON layout of the claims, as written.
#[derive(Serialize)]
struct WireOut<'a> {
    v: u8,
    kid: &'a str,
    jti: &'a str,
    #[serde(rename = "userId")]
    user_id: &'a str,
    #[serde(rename = "roomId")]
    room_id: &'a str,
    iat: u64,
    exp: u64,
}

/// The JSON layout of the claims, as read: every field required, nothing else allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIn {
    v: u8,
    kid: String,
    jti: String,
    #[serde(rename = "userId")]
    user_id: String,
    #[serde(rename = "roomId")]
    room_id: String,
    iat: u64,
    exp: u64,
}

/// A token taken apart but NOT verified: nothing in it may be trusted yet.
#[derive(Debug)]
pub(crate) struct Unverified<'a> {
    /// The first segment, exactly as received; the MAC covers its ASCII.
    pub(crate) signed_part: &'a str,
    /// The decoded signature.
    pub(crate) tag: [u8; TAG_LEN],
    /// The decoded claims, to be trusted only once `tag` checks out.
    pub(crate) claims: Claims,
}

/// Encodes the claims as the token's first segment (base64url of the JSON).
pub(crate) fn encode_payload(claims: &Claims) -> String {
    let wire = WireOut {
        v: TOKEN_VERSION,
        kid: &claims.key_id,
        jti: &claims.token_id,
        user_id: &claims.user_id,
        room_id: &claims.room_id,
        iat: claims.issued_at,
        exp: claims.expires_at,
    };
    // Invariant: a struct of strings and integers always serializes to JSON.
    let json = serde_json::to_vec(&wire).expect("invariant: claims always serialize to JSON");
    URL_SAFE_NO_PAD.encode(json)
}

/// Joins the signed first segment and the tag into a token string.
pub(crate) fn assemble(signed_part: &str, tag: &[u8]) -> String {
    let mut token = String::with_capacity(signed_part.len() + 1 + TAG_B64_LEN);
    token.push_str(signed_part);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut token);
    token
}

/// Takes a token apart, refusing anything structurally wrong with [`AuthError::Malformed`].
///
/// The work done is bounded by [`MAX_TOKEN_LEN`]. Decoding is strict:
/// base64url without padding, canonical trailing bits, JSON with exactly the
/// expected fields, and the current [`TOKEN_VERSION`].
pub(crate) fn parse(token: &str) -> Result<Unverified<'_>, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("token too long"));
    }
    let mut segments = token.split('.');
    let (Some(signed_part), Some(sig_part), None) =
        (segments.next(), segments.next(), segments.next())
    else {
        return Err(AuthError::Malformed("expected two dot-separated segments"));
    };
    if signed_part.is_empty() {
        return Err(AuthError::Malformed("empty claims segment"));
    }
    if sig_part.len() != TAG_B64_LEN {
        return Err(AuthError::Malformed("wrong signature length"));
    }
    let mut tag = [0u8; TAG_LEN];
    match URL_SAFE_NO_PAD.decode_slice(sig_part, &mut tag) {
        Ok(TAG_LEN) => {}
        _ => return Err(AuthError::Malformed("invalid signature encoding")),
    }
    let json = URL_SAFE_NO_PAD
        .decode(signed_part)
        .map_err(|_| AuthError::Malformed("invalid claims encoding"))?;
    let wire: WireIn =
        serde_json::from_slice(&json).map_err(|_| AuthError::Malformed("invalid claims json"))?;
    if wire.v != TOKEN_VERSION {
        return Err(AuthError::Malformed("unsupported token version"));
    }
    if wire.jti.len() > MAX_TOKEN_ID_LEN {
        return Err(AuthError::Malformed("token id too long"));
    }
    Ok(Unverified {
        signed_part,
        tag,
        claims: Claims {
            token_id: wire.jti,
            key_id: wire.kid,
            user_id: wire.user_id,
            room_id: wire.room_id,
            issued_at: wire.iat,
            expires_at: wire.exp,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Claims {
        Claims {
            token_id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            key_id: "k1".into(),
            user_id: "alice".into(),
            room_id: "room-1".into(),
            issued_at: 1_000,
            expires_at: 2_000,
        }
    }

    fn json_of(payload: &str) -> String {
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .expect("test payload is base64url");
        String::from_utf8(bytes).expect("test payload is UTF-8")
    }

    fn token_with_json(json: &str) -> String {
        assemble(&URL_SAFE_NO_PAD.encode(json), &[0u8; TAG_LEN])
    }

    #[test]
    fn payload_is_compact_json_with_short_names_in_order() {
        let json = json_of(&encode_payload(&sample()));
        assert_eq!(
            json,
            r#"{"v":1,"kid":"k1","jti":"AAAAAAAAAAAAAAAAAAAAAA","userId":"alice","roomId":"room-1","iat":1000,"exp":2000}"#
        );
    }

    #[test]
    fn parse_round_trips_claims() {
        let payload = encode_payload(&sample());
        let token = assemble(&payload, &[7u8; TAG_LEN]);
        let parsed = parse(&token).expect("well-formed token parses");
        assert_eq!(parsed.claims, sample());
        assert_eq!(parsed.signed_part, payload);
        assert_eq!(parsed.tag, [7u8; TAG_LEN]);
    }

    #[test]
    fn token_is_url_safe() {
        let mut claims = sample();
        claims.user_id = "ü/+?&=\u{0}\"".into();
        let token = assemble(&encode_payload(&claims), &[0xff; TAG_LEN]);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{token}"
        );
        assert_eq!(parse(&token).expect("parses").claims, claims);
    }

    #[test]
    fn structural_problems_are_malformed() {
        let good = assemble(&encode_payload(&sample()), &[1u8; TAG_LEN]);
        let (payload, sig) = good.split_once('.').expect("has a dot");
        let cases = [
            String::new(),
            ".".to_owned(),
            payload.to_owned(),
            format!("{good}.{sig}"),
            format!(".{sig}"),
            format!("{payload}."),
            format!("{payload}.{}", &sig[1..]),
            format!("{payload}.{sig}A"),
            format!("{payload}.{}=", &sig[1..]),
            format!("{payload}=.{sig}"),
            format!("{payload}.{}+", &sig[1..]),
            format!("!{payload}.{sig}"),
            token_with_json("not json"),
            token_with_json("[]"),
            token_with_json(r#"{"v":1}"#),
            token_with_json(
                r#"{"v":2,"kid":"k","jti":"j","userId":"u","roomId":"r","iat":1,"exp":2}"#,
            ),
            token_with_json(
                r#"{"v":1,"kid":"k","jti":"j","userId":"u","roomId":"r","iat":1,"exp":2,"x":0}"#,
            ),
            token_with_json(
                r#"{"v":1,"kid":"k","jti":"j","userId":"u","roomId":"r","iat":-1,"exp":2}"#,
            ),
            token_with_json(
                r#"{"v":1,"kid":"k","kid":"k","jti":"j","userId":"u","roomId":"r","iat":1,"exp":2}"#,
            ),
        ];
        for case in cases {
            assert!(
                matches!(parse(&case), Err(AuthError::Malformed(_))),
                "accepted {case:?}"
            );
        }
    }

    #[test]
    fn non_canonical_signature_encoding_is_refused() {
        // The last of 43 characters carries 4 unused bits; they must be zero.
        let good = assemble(&encode_payload(&sample()), &[0u8; TAG_LEN]);
        assert!(good.ends_with('A'));
        let bad = format!("{}B", &good[..good.len() - 1]);
        assert!(matches!(parse(&bad), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn oversize_is_refused_before_anything_else() {
        let mut claims = sample();
        claims.user_id = "u".repeat(MAX_TOKEN_LEN);
        let token = assemble(&encode_payload(&claims), &[0u8; TAG_LEN]);
        assert_eq!(
            parse(&token).err(),
            Some(AuthError::Malformed("token too long"))
        );
        let junk = "x".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            parse(&junk).err(),
            Some(AuthError::Malformed("token too long"))
        );
    }
}
