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
        Self::parse_str(utf8(bytes)?)
    }

    /// Parses an envelope from text: bounded nesting, a JSON object with a string `type`.
    pub(crate) fn parse_str(text: &'a str) -> Result<Self, ProtocolError> {
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
            .map(|id| RoomId::from_borrowed(&id))
            .transpose()
    }

    /// The top-level `userId`, validated, if present and not null.
    pub(crate) fn user_id(&self) -> Result<Option<UserId>, ProtocolError> {
        string_field(self.user_id, "userId")?
            .map(|id| UserId::from_borrowed(&id))
            .transpose()
    }

    /// The top-level `token`, if present and not null.
    pub(crate) fn token(&self) -> Result<Option<String>, ProtocolError> {
        Ok(string_field(self.token, "token")?.map(Cow::into_owned))
    }
}

/// The bytes as text, or the error for a message that is not UTF-8.
pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, ProtocolError> {
    std::str::from_utf8(bytes).map_err(|e| {
        ProtocolError::InvalidJson(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
    })
}

/// JSON's four whitespace characters.
const JSON_WS: [char; 4] = [' ', '\t', '\n', '\r'];

/// A string field's value, borrowed when written without escapes.
fn string_field<'t>(
    raw: Option<&'t RawValue>,
    field: &'static str,
) -> Result<Option<Cow<'t, str>>, ProtocolError> {
    raw.map(|raw| {
        json_str(raw.get()).ok_or(ProtocolError::InvalidField {
            field,
            reason: "must be a string",
        })
    })
    .transpose()
}

/// The string a raw JSON value holds, or `None` if it holds something else.
///
/// `raw` must be a JSON value the parser has already accepted. Strings without escapes
/// are borrowed from it; the rest go through the parser.
pub(crate) fn json_str(raw: &str) -> Option<Cow<'_, str>> {
    match plain_str(raw) {
        Some(text) => Some(Cow::Borrowed(text)),
        None => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
    }
}

/// Rejects text nesting arrays and objects deeper than [`MAX_NESTING_DEPTH`].
///
/// One pass over the bytes, skipping string contents (and escapes within them); it does
/// not validate JSON, which the parser does next.
pub(crate) fn check_depth(text: &str) -> Result<(), ProtocolError> {
    let bytes = text.as_bytes();
    // Each level of depth is an opening bracket outside strings, so text with few opening
    // brackets anywhere cannot be too deep: the common case, found with a few `memchr`
    // jumps instead of stopping at every string.
    if memchr::memchr2_iter(b'[', b'{', bytes)
        .nth(MAX_NESTING_DEPTH)
        .is_none()
    {
        return Ok(());
    }
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
/// Jumps from quote to quote with `memchr`: SDP payloads are mostly string contents
/// with an escaped line break every few dozen bytes and few quotes, so stopping at
/// quotes only is where the time is saved. A quote ends the string when the run of
/// backslashes right before it has even length, which is exactly when scanning forward
/// with "a backslash escapes the next byte, whatever it is" would end the string there.
/// Each backslash is counted once, because runs never reach back past the previous quote.
fn string_end(bytes: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let rest = bytes.get(from..)?;
        let at = from + memchr::memchr(b'"', rest)?;
        let before = bytes.get(from..at)?;
        let backslashes = before.iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(at + 1);
        }
        from = at + 1;
    }
}

/// The raw text of the named top-level fields of a JSON object, found by scanning.
///
/// `text` must be a JSON value the parser has already accepted, such as a captured
/// `data`; the scan relies on that and does not validate. Each found value is returned
/// as written, without surrounding whitespace, the way the parser captures a
/// [`RawValue`]; `null` is returned as the text `null`.
///
/// Returns `None` whenever the scan could answer differently from deriving
/// `Deserialize` on a struct with these fields: when `text` is not an object, when any
/// key contains an escape (it could spell a wanted name, such as `"pe\u0065r"`), when a
/// wanted name appears twice (the derived code fails with "duplicate field"), or on
/// anything unexpected. Callers then fall back to the parser, which gives the exact
/// answer, error included.
pub(crate) fn object_fields<'t, const N: usize>(
    text: &'t str,
    names: [&str; N],
) -> Option<[Option<&'t str>; N]> {
    let bytes = text.as_bytes();
    let mut found = [None; N];
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(bytes, i + 1);
    if bytes.get(i) == Some(&b'}') {
        return Some(found);
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(bytes, i + 1)?;
        let key = bytes.get(i + 1..key_end - 1)?;
        if memchr::memchr(b'\\', key).is_some() {
            return None;
        }
        i = skip_ws(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(bytes, i + 1);
        let value_end = value_end(bytes, i)?;
        if let Some(slot) = names
            .iter()
            .zip(found.iter_mut())
            .find_map(|(name, slot)| (name.as_bytes() == key).then_some(slot))
        {
            if slot.is_some() {
                return None;
            }
            *slot = Some(text.get(i..value_end)?);
        }
        i = skip_ws(bytes, value_end);
        match bytes.get(i) {
            Some(b',') => i = skip_ws(bytes, i + 1),
            Some(b'}') => return Some(found),
            _ => return None,
        }
    }
}

/// Index of the first non-whitespace byte at or after `i` (or the length).
fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(i) {
        i += 1;
    }
    i
}

/// Index just past the valid JSON value starting at `start`.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i + 1)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        // A number, `true`, `false` or `null`: runs to a delimiter or whitespace.
        _ => {
            let len = bytes
                .get(start..)?
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(bytes.len() - start);
            Some(start + len)
        }
    }
}

/// The contents of a JSON string written without escapes, borrowed from its text.
///
/// `raw` must be a JSON value the parser has already accepted. Returns `None` for other
/// values and for strings with escapes, which need the parser.
fn plain_str(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    memchr::memchr(b'\\', inner.as_bytes())
        .is_none()
        .then_some(inner)
}

/// Bytes of an outgoing envelope besides its type, ids and data: keys, quotes, braces.
const ENVELOPE_OVERHEAD: usize = 64;
/// Room made for the data of an envelope whose size is not known beforehand (a peer,
/// a reason, an error): most fit, and the rest grow once.
const SMALL_DATA: usize = 192;

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
        self.to_vec_sized(SMALL_DATA)
    }

    /// Serializes into a buffer sized for `payload` bytes of data plus the envelope,
    /// so a relayed SDP is written without growing the buffer on the way.
    pub(crate) fn to_vec_sized(&self, payload: usize) -> Vec<u8> {
        let ids = self.user_id.map_or(0, str::len) + self.room_id.map_or(0, str::len);
        let mut out = Vec::with_capacity(ENVELOPE_OVERHEAD + self.kind.len() + ids + payload);
        // Invariant: every wire type serializes (string keys, no fallible impls).
        serde_json::to_writer(&mut out, self).expect("wire types always serialize");
        out
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
    use proptest::prelude::*;

    use super::*;

    /// The string scan as first written: forward, a backslash escaping the next byte.
    fn string_end_forward(bytes: &[u8], mut from: usize) -> Option<usize> {
        loop {
            let rest = bytes.get(from..)?;
            let at = from + memchr::memchr2(b'"', b'\\', rest)?;
            if bytes[at] == b'"' {
                return Some(at + 1);
            }
            from = at + 2;
        }
    }

    /// What the parser makes of the fields `peer` and `status` (the reference).
    #[derive(Deserialize)]
    struct Wanted<'a> {
        #[serde(default, borrow)]
        peer: Option<&'a RawValue>,
        #[serde(default, borrow)]
        status: Option<&'a RawValue>,
    }

    fn wanted(text: &str) -> Option<[Option<&str>; 2]> {
        let parsed: Wanted<'_> = serde_json::from_str(text).ok()?;
        Some([parsed.peer, parsed.status].map(|v| v.map(RawValue::get)))
    }

    fn fields(text: &str) -> Option<[Option<&str>; 2]> {
        object_fields(text, ["peer", "status"])
            .map(|found| found.map(|v| v.filter(|v| *v != "null")))
    }

    #[test]
    fn object_fields_reads_top_level_values_as_written() {
        let text = " { \"a\" : [ {\"peer\":1} , \"]}\\\"\" ] ,\n\t\"peer\"\r: \"bob\" , \"status\":-1.5e3 }";
        assert_eq!(
            object_fields(text, ["peer", "status", "a", "z"]),
            Some([
                Some("\"bob\""),
                Some("-1.5e3"),
                Some("[ {\"peer\":1} , \"]}\\\"\" ]"),
                None
            ])
        );
        assert_eq!(object_fields("{}", ["peer"]), Some([None]));
        assert_eq!(object_fields("{ }", ["peer"]), Some([None]));
        assert_eq!(
            object_fields(r#"{"peer":null,"x":true}"#, ["peer"]),
            Some([Some("null")])
        );
    }

    #[test]
    fn object_fields_defers_to_the_parser_when_unsure() {
        // An escaped key may spell a wanted name.
        assert_eq!(object_fields(r#"{"pe\u0065r":"bob"}"#, ["peer"]), None);
        assert_eq!(object_fields(r#"{"x\n":1,"peer":"bob"}"#, ["peer"]), None);
        // A wanted name twice is the parser's duplicate-field error.
        assert_eq!(object_fields(r#"{"peer":"a","peer":"b"}"#, ["peer"]), None);
        assert_eq!(object_fields(r#"{"peer":null,"peer":"b"}"#, ["peer"]), None);
        // Other names may repeat.
        assert_eq!(
            object_fields(r#"{"x":1,"peer":"a","x":2}"#, ["peer"]),
            Some([Some("\"a\"")])
        );
        // Not an object.
        for text in ["[]", "\"peer\"", "1", "null"] {
            assert_eq!(object_fields(text, ["peer"]), None, "{text}");
        }
    }

    #[test]
    fn object_fields_survives_input_the_parser_would_reject() {
        for text in [
            "",
            "{",
            "{\"",
            "{\"peer\"",
            "{\"peer\":",
            "{\"peer\":\"b",
            "{\"peer\":[",
            "{\"peer\":1",
            "{\"peer\" 1}",
            "{\"peer\":1 2}",
            "{1:2}",
            "{\"a\":]}",
            "{\"a\":}}}",
        ] {
            let _ = object_fields(text, ["peer"]);
        }
    }

    #[test]
    fn plain_str_borrows_only_unescaped_strings() {
        assert_eq!(plain_str("\"bob\""), Some("bob"));
        assert_eq!(plain_str("\"\""), Some(""));
        assert_eq!(plain_str("\"b\\u006fb\""), None);
        assert_eq!(plain_str("1"), None);
        assert_eq!(plain_str("null"), None);
        assert_eq!(json_str("\"b\\u006fb\"").as_deref(), Some("bob"));
        assert_eq!(json_str("[\"bob\"]"), None);
    }

    #[test]
    fn depth_fast_path_counts_brackets_anywhere() {
        // Few brackets anywhere: accepted without the exact scan.
        let in_strings = format!(r#"{{"a":"{}"}}"#, "[".repeat(MAX_NESTING_DEPTH - 1));
        assert!(check_depth(&in_strings).is_ok());
        // Many brackets, all in strings: the exact scan accepts it.
        let in_strings = format!(r#"{{"a":"{}"}}"#, "{".repeat(10 * MAX_NESTING_DEPTH));
        assert!(check_depth(&in_strings).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn string_end_matches_a_forward_scan(text in r#"[a"\\\\]{0,24}"#, from in 0usize..26) {
            let bytes = text.as_bytes();
            prop_assert_eq!(string_end(bytes, from), string_end_forward(bytes, from));
        }

        #[test]
        fn object_fields_agrees_with_the_parser(
            members in prop::collection::vec(
                (
                    prop_oneof![
                        Just("peer"), Just("status"), Just("pe\\u0065r"), Just("x"),
                        Just("p\\\"eer"), Just(""),
                    ],
                    prop_oneof![
                        Just("\"bob\""), Just("null"), Just("-0.5E+2"), Just("true"),
                        Just("[]"), Just("{}"), Just("\"\\\"}\""), Just("\"a\\\\\""),
                        Just("{\"peer\":\"eve\",\"s\":[1,{\"b\":\"]\"}]}"), Just("[[\"peer\"],{}]"),
                    ],
                ),
                0..6,
            ),
            spaces in prop::collection::vec(prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\r")], 24),
        ) {
            let mut ws = spaces.iter().cycle();
            let mut text = format!("{}{{", ws.next().unwrap_or(&""));
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                for part in [ws.next(), Some(&"\""), Some(key), Some(&"\""), ws.next(), Some(&":"), ws.next(), Some(value), ws.next()] {
                    text.push_str(part.unwrap_or(&""));
                }
            }
            text.push('}');
            prop_assert!(serde_json::from_str::<&RawValue>(text.trim()).is_ok(), "{}", text);
            let text = text.trim();
            match fields(text) {
                // The scan answered: the parser must agree.
                Some(found) => prop_assert_eq!(Some(found), wanted(text), "{}", text),
                // The scan deferred: only for escaped keys or repeated wanted names.
                None => prop_assert!(
                    text.contains('\\')
                        || members.iter().filter(|(k, _)| *k == "peer").count() > 1
                        || members.iter().filter(|(k, _)| *k == "status").count() > 1,
                    "{}", text
                ),
            }
        }
    }

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
