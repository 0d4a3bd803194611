//! The seed's message envelope `{ type, userId?, roomId?, data? }`, both ways.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ProtocolError, RoomId, UserId};

/// Deepest nesting of arrays and objects accepted in a message, the envelope included.
///
/// serde_json limits recursion to 128 levels when it builds values, but not when it
/// captures raw JSON (`data` is captured raw and relayed as is), so the decoders check
/// nesting themselves before parsing.
pub const MAX_NESTING_DEPTH: usize = 64;

/// An incoming envelope whose `data` is left unparsed until its `type` is known.
///
/// `userId`, `roomId` and `token` are captured raw too: each message type parses only
/// the fields it uses, so a field that is ignored (such as a client's `userId`) can
/// never make a message fail.
#[derive(Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Cow<'a, str>,
    #[serde(rename = "roomId", default, borrow)]
    room_id: Option<&'a RawValue>,
    #[serde(rename = "userId", default, borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    token: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) data: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    /// Parses an envelope: UTF-8, bounded nesting, a JSON object with a string `type`.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, ProtocolError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            ProtocolError::InvalidJson(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
        })?;
        check_depth(text)?;
        if !text.trim_start_matches(JSON_WS).starts_with('{') {
            // Tell "not JSON" from "JSON but not an object"; `IgnoredAny` does not recurse.
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => ProtocolError::InvalidShape("a message must be a JSON object".into()),
                Err(e) => ProtocolError::from_serde(&e),
            });
        }
        serde_json::from_str(text).map_err(|e| ProtocolError::from_serde(&e))
    }

    /// The top-level `roomId`, validated, if present and not null.
    pub(crate) fn room_id(&self) -> Result<Option<RoomId>, ProtocolError> {
        string_field(self.room_id, "roomId")?
            .map(RoomId::new)
            .transpose()
    }

    /// The top-level `userId`, validated, if present and not null.
    pub(crate) fn user_id(&self) -> Result<Option<UserId>, ProtocolError> {
        string_field(self.user_id, "userId")?
            .map(UserId::new)
            .transpose()
    }

    /// The top-level `token`, if present and not null.
    pub(crate) fn token(&self) -> Result<Option<String>, ProtocolError> {
        string_field(self.token, "token")
    }
}

/// JSON's four whitespace characters.
const JSON_WS: [char; 4] = [' ', '\t', '\n', '\r'];

fn string_field(
    raw: Option<&RawValue>,
    field: &'static str,
) -> Result<Option<String>, ProtocolError> {
    raw.map(|raw| {
        serde_json::from_str::<String>(raw.get()).map_err(|_| ProtocolError::InvalidField {
            field,
            reason: "must be a string",
        })
    })
    .transpose()
}

/// Rejects text nesting arrays and objects deeper than [`MAX_NESTING_DEPTH`].
///
/// One pass over the bytes, skipping string contents (and escapes within them); it does
/// not validate JSON, which the parser does next.
pub(crate) fn check_depth(text: &str) -> Result<(), ProtocolError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => match string_end(bytes, i + 1) {
                Some(next) => {
                    i = next;
                    continue;
                }
                // An unterminated string: the parser reports it.
                None => return Ok(()),
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING_DEPTH {
                    return Err(ProtocolError::InvalidJson(format!(
                        "nesting deeper than {MAX_NESTING_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Index just past the closing quote of a string whose contents start at `from`.
///
/// Jumps from quote or backslash to the next with `memchr`: SDP payloads are mostly
/// string contents, so this is where the time goes.
fn string_end(bytes: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let rest = bytes.get(from..)?;
        let at = from + memchr::memchr2(b'"', b'\\', rest)?;
        if bytes[at] == b'"' {
            return Some(at + 1);
        }
        // A backslash escapes the next byte, whatever it is.
        from = at + 2;
    }
}

/// An outgoing envelope borrowing its parts; serializes in one pass.
#[derive(Serialize)]
pub(crate) struct OutEnvelope<'a, D: ?Sized + Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(rename = "roomId", skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

impl<'a, D: ?Sized + Serialize> OutEnvelope<'a, D> {
    pub(crate) fn new(kind: &'a str) -> Self {
        Self {
            kind,
            user_id: None,
            room_id: None,
            data: None,
        }
    }

    pub(crate) fn user(mut self, user: Option<&'a UserId>) -> Self {
        self.user_id = user.map(UserId::as_str);
        self
    }

    pub(crate) fn room(mut self, room: Option<&'a RoomId>) -> Self {
        self.room_id = room.map(RoomId::as_str);
        self
    }

    pub(crate) fn data(mut self, data: &'a D) -> Self {
        self.data = Some(data);
        self
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        // Invariant: every wire type serializes (string keys, no fallible impls).
        serde_json::to_vec(self).expect("wire types always serialize")
    }
}

impl<D: ?Sized + Serialize> std::fmt::Display for OutEnvelope<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Invariant: serde_json writes valid UTF-8.
        let bytes = self.to_vec();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| std::fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_scan_counts_brackets_outside_strings_only() {
        let deep_in_string = format!(r#"{{"type":"x","data":"{}"}}"#, "[".repeat(1000));
        assert!(check_depth(&deep_in_string).is_ok());
        let escaped_quote = format!(r#"{{"a":"\"{}"}}"#, "{".repeat(1000));
        assert!(check_depth(&escaped_quote).is_ok());
        let backslash_then_quote = format!(r#"{{"a":"\\","b":{}}}"#, "[".repeat(100));
        assert!(check_depth(&backslash_then_quote).is_err());
        // Input that ends inside a string or right after a backslash is left to the parser.
        for cut in ["\"", "\"abc\\", "{\"a\":\"\\\"", "\"\\"] {
            assert!(check_depth(cut).is_ok(), "{cut:?}");
        }
    }

    #[test]
    fn depth_scan_limit_is_exact() {
        let at_limit = format!(
            "{}{}",
            "[".repeat(MAX_NESTING_DEPTH),
            "]".repeat(MAX_NESTING_DEPTH)
        );
        assert!(check_depth(&at_limit).is_ok());
        let over = format!("[{at_limit}]");
        assert!(matches!(
            check_depth(&over),
            Err(ProtocolError::InvalidJson(_))
        ));
    }

    #[test]
    fn depth_scan_is_not_fooled_by_closing_first() {
        // Closing brackets never make the depth negative and hide later opens.
        let text = format!("{}{}", "]".repeat(100), "[".repeat(MAX_NESTING_DEPTH + 1));
        assert!(check_depth(&text).is_err());
    }

    #[test]
    fn envelope_must_be_an_object() {
        for text in [
            "[]",
            "[\"heartbeat\"]",
            "1",
            "\"heartbeat\"",
            "null",
            "true",
            " [1] ",
        ] {
            assert!(
                matches!(
                    Envelope::parse(text.as_bytes()),
                    Err(ProtocolError::InvalidShape(_))
                ),
                "{text}"
            );
        }
        for text in ["", " ", "[", "nul", "{", "{]", "x"] {
            assert!(
                matches!(
                    Envelope::parse(text.as_bytes()),
                    Err(ProtocolError::InvalidJson(_))
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn ignored_fields_of_any_type_do_not_fail_the_envelope() {
        let env = Envelope::parse(br#"{"type":"x","userId":42,"roomId":[1],"token":{}}"#)
            .expect("envelope");
        assert_eq!(env.kind, "x");
        assert!(env.user_id().is_err());
        assert!(env.room_id().is_err());
        assert!(env.token().is_err());
    }
}
