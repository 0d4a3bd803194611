//! RFC 6455 conformance of the server's own WebSocket framing, over real sockets: one table
//! of rows following the case groups of the Autobahn|Testsuite (1 framing, 2 pings and
//! pongs, 3 reserved bits, 4 reserved opcodes, 5 fragmentation, 6 UTF-8, 7 close
//! handling, 9 limits, and unmasked client frames).
//!
//! Each row opens a fresh connection to a server in this process, writes exactly the
//! bytes of the row from a bare socket (`octate_test::ws`), and checks every frame the
//! server answers, then how the connection ends: still usable (a probe message is
//! answered) or closed with a given close frame followed by the end of the TCP stream.
//!
//! Octate is not an echo server: a text message is answered as a signaling message
//! (the connections here never authenticate, so a JSON message gets `error`
//! `not-authenticated`, and text that is not JSON gets `error` `invalid-json`); a binary
//! message is refused with close 1003. Rows where the server deliberately differs from
//! what Autobahn expects say so in `differs`; `docs/protocol.md` ("WebSocket conformance")
//! lists the groups and every difference.

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::time::Duration;

use octate_test::peers::WAIT;
use octate_test::server::{TestServer, fast_config};
use octate_test::ws::{
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWs, ReadEnd, frame, raw_frame,
};
use serde_json::Value;
use tokio::time::Instant;

/// The server's message limit: the default, 64 KiB.
const MAX: usize = octate_protocol::DEFAULT_MAX_MESSAGE_BYTES;

/// What the server answers before the row's outcome, frame by frame.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// A pong carrying these bytes.
    Pong(Vec<u8>),
    /// An `error` text message with this code.
    Error(&'static str),
}

/// How the connection is after the row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// Still open and usable: the probe message is answered.
    Open,
    /// A close frame with this code (`None`: an empty close payload), then the TCP end.
    Closed(Option<u16>),
}

/// The bytes a row writes.
enum Send {
    /// In one write.
    Whole(Vec<u8>),
    /// In the same write as the upgrade request, before the server answers it.
    WithUpgrade(Vec<u8>),
    /// In several writes, a millisecond apart.
    Pieces(Vec<Vec<u8>>),
}

/// One conformance case.
struct Row {
    /// The Autobahn case (or group) it follows.
    case: &'static str,
    /// What is sent.
    what: String,
    send: Send,
    answers: Vec<Answer>,
    outcome: Outcome,
    /// Where and why the server deliberately differs from Autobahn's expectation.
    differs: Option<&'static str>,
}

impl Row {
    fn new(case: &'static str, what: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            case,
            what: what.into(),
            send: Send::Whole(bytes),
            answers: Vec::new(),
            outcome: Outcome::Open,
            differs: None,
        }
    }

    fn with_upgrade(mut self) -> Self {
        self.send = Send::WithUpgrade(self.bytes());
        self
    }

    fn in_pieces(mut self, pieces: Vec<Vec<u8>>) -> Self {
        self.send = Send::Pieces(pieces);
        self
    }

    fn answers(mut self, answers: impl IntoIterator<Item = Answer>) -> Self {
        self.answers.extend(answers);
        self
    }

    fn closes(mut self, code: u16) -> Self {
        self.outcome = Outcome::Closed(Some(code));
        self
    }

    fn closes_empty(mut self) -> Self {
        self.outcome = Outcome::Closed(None);
        self
    }

    fn differs(mut self, why: &'static str) -> Self {
        self.differs = Some(why);
        self
    }

    fn bytes(&self) -> Vec<u8> {
        match &self.send {
            Send::Whole(bytes) | Send::WithUpgrade(bytes) => bytes.clone(),
            Send::Pieces(pieces) => pieces.concat(),
        }
    }
}

// ---- Frames and messages ------------------------------------------------------------------

/// The probe that shows a connection is still usable, and its answer.
const PROBE: &str = r#"{"type":"pong"}"#;
const PROBE_ANSWER: Answer = Answer::Error("not-authenticated");

/// A JSON message (answered `not-authenticated` before `auth`) of exactly `len` bytes.
fn json_of_len(len: usize) -> Vec<u8> {
    let shell = r#"{"type":"pong","pad":""}"#;
    let text = format!(
        r#"{{"type":"pong","pad":"{}"}}"#,
        "p".repeat(len - shell.len())
    );
    assert_eq!(text.len(), len);
    text.into_bytes()
}

/// A whole masked text frame.
fn text(payload: &[u8]) -> Vec<u8> {
    frame(true, OP_TEXT, payload)
}

/// A masked close frame with `code` and `reason`.
fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(true, OP_CLOSE, &payload)
}

/// An unmasked frame, as only a server may send.
fn unmasked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first, u8::try_from(payload.len()).unwrap()];
    out.extend_from_slice(payload);
    out
}

/// `bytes` cut into pieces of `size`.
fn pieces(bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
    bytes.chunks(size).map(<[u8]>::to_vec).collect()
}

/// `parts` concatenated.
fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

use Answer::{Error, Pong};

const NOT_AUTH: Answer = Error("not-authenticated");
const INVALID_JSON: Answer = Error("invalid-json");
const INVALID_MESSAGE: Answer = Error("invalid-message");
const TOO_LARGE: Answer = Error("too-large");

const BINARY_REFUSED: &str = "binary messages are refused (error invalid-message, close 1003): \
     the protocol is JSON text; Autobahn expects an echo";
const NOT_ECHOED: &str = "text is answered as a signaling message, not echoed";
const UTF8_PER_MESSAGE: &str = "UTF-8 is checked once the message is complete, not frame by \
     frame: the close comes at the final fragment (Autobahn's non-strict pass)";
const ERROR_BEFORE_CLOSE: &str = "an error message names the reason before the close frame";

// ---- The table ----------------------------------------------------------------------------

fn framing() -> Vec<Row> {
    let mut rows = Vec::new();
    for len in [0, 125, 126, 127, 65_535, 65_536] {
        let payload = if len == 0 {
            Vec::new()
        } else {
            json_of_len(len)
        };
        let answer = if len == 0 { INVALID_JSON } else { NOT_AUTH };
        rows.push(
            Row::new("1.1", format!("text, {len} bytes"), text(&payload))
                .answers([answer])
                .differs(NOT_ECHOED),
        );
    }
    rows.push(
        Row::new("1.1", "text that is not JSON", text(b"Hello, world!"))
            .answers([INVALID_JSON])
            .differs(NOT_ECHOED),
    );
    rows.push(
        Row::new(
            "1.1",
            "text, 200 bytes, written 1 byte at a time",
            Vec::new(),
        )
        .in_pieces(pieces(&text(&json_of_len(200)), 1))
        .answers([NOT_AUTH])
        .differs(NOT_ECHOED),
    );
    let big = json_of_len(65_536);
    rows.push(
        Row::new(
            "1.1.8",
            "text, 65536 bytes, written 997 bytes at a time",
            Vec::new(),
        )
        .in_pieces(pieces(&text(&big), 997))
        .answers([NOT_AUTH])
        .differs(NOT_ECHOED),
    );
    for len in [0, 125, 126, 65_535, 65_536] {
        rows.push(
            Row::new(
                "1.2",
                format!("binary, {len} bytes"),
                frame(true, OP_BINARY, &vec![0xfe; len]),
            )
            .answers([INVALID_MESSAGE])
            .closes(1003)
            .differs(BINARY_REFUSED),
        );
    }
    rows
}

fn pings() -> Vec<Row> {
    let payload_125: Vec<u8> = (0..125u8).collect();
    let binary: Vec<u8> = vec![0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];
    let mut rows = vec![
        Row::new("2.1", "ping, empty", frame(true, OP_PING, b"")).answers([Pong(Vec::new())]),
        Row::new(
            "2.2",
            "ping, 14 bytes of text",
            frame(true, OP_PING, b"Hello, world!!"),
        )
        .answers([Pong(b"Hello, world!!".to_vec())]),
        Row::new("2.3", "ping, binary payload", frame(true, OP_PING, &binary))
            .answers([Pong(binary.clone())]),
        Row::new("2.4", "ping, 125 bytes", frame(true, OP_PING, &payload_125))
            .answers([Pong(payload_125.clone())]),
        Row::new("2.5", "ping, 126 bytes", frame(true, OP_PING, &[b'x'; 126])).closes(1002),
        Row::new(
            "2.6",
            "ping, 125 bytes, written 1 byte at a time",
            Vec::new(),
        )
        .in_pieces(pieces(&frame(true, OP_PING, &payload_125), 1))
        .answers([Pong(payload_125)]),
        Row::new("2.5", "pong, 126 bytes", frame(true, OP_PONG, &[b'x'; 126])).closes(1002),
        Row::new("2.7", "unsolicited pong, empty", frame(true, OP_PONG, b"")),
        Row::new(
            "2.8",
            "unsolicited pong, 24 bytes",
            frame(true, OP_PONG, b"unsolicited pong payload"),
        ),
        Row::new(
            "2.9",
            "unsolicited pong, then ping",
            cat(&[
                frame(true, OP_PONG, b"unsolicited pong payload"),
                frame(true, OP_PING, b"ping payload"),
            ]),
        )
        .answers([Pong(b"ping payload".to_vec())]),
    ];
    let ten: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("payload-{i}").into_bytes())
        .collect();
    rows.push(
        Row::new(
            "2.10",
            "10 pings in one write",
            ten.iter().flat_map(|p| frame(true, OP_PING, p)).collect(),
        )
        .answers(ten.iter().cloned().map(Pong)),
    );
    rows.push(
        Row::new("2.11", "10 pings, one write each", Vec::new())
            .in_pieces(ten.iter().map(|p| frame(true, OP_PING, p)).collect())
            .answers(ten.iter().cloned().map(Pong)),
    );
    rows
}

fn reserved_bits() -> Vec<Row> {
    let small = json_of_len(30);
    vec![
        Row::new("3.1", "text with RSV1", raw_frame(0xC1, 30, &small)).closes(1002),
        Row::new(
            "3.2",
            "text, then text with RSV2, then ping",
            cat(&[
                text(&small),
                raw_frame(0xA1, 30, &small),
                frame(true, OP_PING, b""),
            ]),
        )
        .answers([NOT_AUTH])
        .closes(1002),
        Row::new(
            "3.3",
            "text, then text with RSV1|RSV2, then ping, in three writes",
            Vec::new(),
        )
        .in_pieces(vec![
            text(&small),
            raw_frame(0xE1, 30, &small),
            frame(true, OP_PING, b""),
        ])
        .answers([NOT_AUTH])
        .closes(1002),
        Row::new("3.4", "text with RSV3", raw_frame(0x91, 30, &small)).closes(1002),
        Row::new(
            "3.5",
            "binary with RSV1|RSV3",
            raw_frame(0xD2, 8, &[0xff; 8]),
        )
        .closes(1002),
        Row::new("3.6", "ping with RSV2|RSV3", raw_frame(0xB9, 4, b"ping")).closes(1002),
        Row::new(
            "3.7",
            "close with all RSV bits",
            raw_frame(0xF8, 2, &1000u16.to_be_bytes()),
        )
        .closes(1002),
    ]
}

fn reserved_opcodes() -> Vec<Row> {
    let mut rows = Vec::new();
    for op in [0x3, 0x4, 0x5, 0x6, 0x7] {
        rows.push(
            Row::new(
                "4.1",
                format!("data opcode {op:#x}"),
                frame(true, op, b"reserved"),
            )
            .closes(1002),
        );
    }
    for op in [0xB, 0xC, 0xD, 0xE, 0xF] {
        rows.push(
            Row::new(
                "4.2",
                format!("control opcode {op:#x}"),
                frame(true, op, b"reserved"),
            )
            .closes(1002),
        );
    }
    rows.push(
        Row::new(
            "4.1.3",
            "text, then opcode 0x5, then ping",
            cat(&[
                text(&json_of_len(30)),
                frame(true, 0x5, b""),
                frame(true, OP_PING, b""),
            ]),
        )
        .answers([NOT_AUTH])
        .closes(1002),
    );
    rows.push(
        Row::new(
            "4.2.3",
            "text, then opcode 0xd, then ping",
            cat(&[
                text(&json_of_len(30)),
                frame(true, 0xD, b"x"),
                frame(true, OP_PING, b""),
            ]),
        )
        .answers([NOT_AUTH])
        .closes(1002),
    );
    rows
}

fn fragmentation() -> Vec<Row> {
    let msg = json_of_len(40);
    let (head, tail) = msg.split_at(17);
    let first = frame(false, OP_TEXT, head);
    let last = frame(true, OP_CONT, tail);
    vec![
        Row::new("5.1", "ping with FIN clear", frame(false, OP_PING, b"frag")).closes(1002),
        Row::new("5.2", "pong with FIN clear", frame(false, OP_PONG, b"frag")).closes(1002),
        Row::new(
            "5.3",
            "text in two fragments",
            cat(&[first.clone(), last.clone()]),
        )
        .answers([NOT_AUTH]),
        Row::new("5.5", "text in two fragments, two writes", Vec::new())
            .in_pieces(vec![first.clone(), last.clone()])
            .answers([NOT_AUTH]),
        Row::new(
            "5.6",
            "text fragment, ping, last fragment",
            cat(&[
                first.clone(),
                frame(true, OP_PING, b"between"),
                last.clone(),
            ]),
        )
        .answers([Pong(b"between".to_vec()), NOT_AUTH]),
        Row::new(
            "5.8",
            "text fragment, ping, last fragment, one byte at a time",
            Vec::new(),
        )
        .in_pieces(pieces(
            &cat(&[
                first.clone(),
                frame(true, OP_PING, b"between"),
                last.clone(),
            ]),
            1,
        ))
        .answers([Pong(b"between".to_vec()), NOT_AUTH]),
        Row::new(
            "5.19",
            "five fragments with pings between",
            cat(&[
                frame(false, OP_TEXT, &msg[..8]),
                frame(false, OP_CONT, &msg[8..16]),
                frame(true, OP_PING, b"one"),
                frame(false, OP_CONT, &msg[16..24]),
                frame(false, OP_CONT, &msg[24..32]),
                frame(true, OP_PING, b"two"),
                frame(true, OP_CONT, &msg[32..]),
            ]),
        )
        .answers([Pong(b"one".to_vec()), Pong(b"two".to_vec()), NOT_AUTH]),
        Row::new(
            "5.9",
            "continuation with FIN, no message started",
            frame(true, OP_CONT, b"orphan"),
        )
        .answers([INVALID_MESSAGE])
        .closes(1002)
        .differs(ERROR_BEFORE_CLOSE),
        Row::new(
            "5.10",
            "continuation without FIN, no message started",
            frame(false, OP_CONT, b"orphan"),
        )
        .answers([INVALID_MESSAGE])
        .closes(1002)
        .differs(ERROR_BEFORE_CLOSE),
        Row::new(
            "5.15",
            "a whole fragmented message, then a continuation",
            cat(&[first.clone(), last.clone(), frame(true, OP_CONT, b"extra")]),
        )
        .answers([NOT_AUTH, INVALID_MESSAGE])
        .closes(1002)
        .differs(ERROR_BEFORE_CLOSE),
        Row::new(
            "5.17",
            "text fragment, then a new text message before the last fragment",
            cat(&[first.clone(), text(&msg)]),
        )
        .answers([INVALID_MESSAGE])
        .closes(1002)
        .differs(ERROR_BEFORE_CLOSE),
        Row::new(
            "5.18",
            "text fragment, then a new text fragment",
            cat(&[first.clone(), first.clone(), last.clone()]),
        )
        .answers([INVALID_MESSAGE])
        .closes(1002)
        .differs(ERROR_BEFORE_CLOSE),
        Row::new(
            "5.x",
            "close with FIN clear",
            frame(false, OP_CLOSE, &1000u16.to_be_bytes()),
        )
        .closes(1002),
        Row::new(
            "5.x",
            "binary in two fragments",
            cat(&[
                frame(false, OP_BINARY, &[1; 10]),
                frame(true, OP_CONT, &[2; 10]),
            ]),
        )
        .answers([INVALID_MESSAGE])
        .closes(1003)
        .differs(BINARY_REFUSED),
        Row::new(
            "6.1",
            "empty text in three empty fragments",
            cat(&[
                frame(false, OP_TEXT, b""),
                frame(false, OP_CONT, b""),
                frame(true, OP_CONT, b""),
            ]),
        )
        .answers([INVALID_JSON])
        .differs(NOT_ECHOED),
    ]
}

fn utf8() -> Vec<Row> {
    /// A JSON message carrying `inner` (raw bytes) in a string.
    fn carrying(inner: &[u8]) -> Vec<u8> {
        cat(&[
            br#"{"type":"pong","pad":""#.to_vec(),
            inner.to_vec(),
            br#""}"#.to_vec(),
        ])
    }
    let kosme = "κόσμε".as_bytes();
    let valid = carrying(kosme);
    // Split inside the two bytes of "κ" (0xce 0xba).
    let at = br#"{"type":"pong","pad":""#.len() + 1;
    let mut rows = vec![
        Row::new("6.2.1", "valid multi-byte text (κόσμε)", text(&valid)).answers([NOT_AUTH]),
        Row::new(
            "6.2.2",
            "valid 4-byte characters",
            text(&carrying("𝄞 😀".as_bytes())),
        )
        .answers([NOT_AUTH]),
        Row::new(
            "6.2.3",
            "valid text split inside a character, two fragments",
            cat(&[
                frame(false, OP_TEXT, &valid[..at]),
                frame(true, OP_CONT, &valid[at..]),
            ]),
        )
        .answers([NOT_AUTH]),
        Row::new(
            "6.2.4",
            "valid text, one byte per fragment",
            valid
                .iter()
                .enumerate()
                .flat_map(|(i, b)| {
                    let fin = i + 1 == valid.len();
                    let op = if i == 0 { OP_TEXT } else { OP_CONT };
                    frame(fin, op, &[*b])
                })
                .collect(),
        )
        .answers([NOT_AUTH]),
    ];
    let invalid: [(&str, &[u8]); 7] = [
        (
            "a UTF-16 surrogate (ed a0 80)",
            b"\xce\xba\xe1\xbd\xb9\xed\xa0\x80edited",
        ),
        ("an overlong '/' (c0 af)", b"\xc0\xaf"),
        (
            "a code point over U+10FFFF (f4 90 80 80)",
            b"\xf4\x90\x80\x80",
        ),
        ("a lone continuation byte (80)", b"x\x80y"),
        ("a truncated sequence (ce)", b"\xce"),
        ("byte fe", b"\xfe"),
        ("byte ff", b"\xff"),
    ];
    for (name, bytes) in invalid {
        rows.push(
            Row::new("6.3", format!("text with {name}"), text(&carrying(bytes)))
                .answers([INVALID_MESSAGE])
                .closes(1007)
                .differs(ERROR_BEFORE_CLOSE),
        );
    }
    let bad = carrying(b"\xce\xba\xed\xa0\x80");
    rows.push(
        Row::new(
            "6.4.1",
            "invalid text in the first fragment, a ping, then the last fragment",
            cat(&[
                frame(false, OP_TEXT, &bad[..bad.len() - 4]),
                frame(true, OP_PING, b"still reading"),
                frame(true, OP_CONT, &bad[bad.len() - 4..]),
            ]),
        )
        .answers([Pong(b"still reading".to_vec()), INVALID_MESSAGE])
        .closes(1007)
        .differs(UTF8_PER_MESSAGE),
    );
    rows.push(
        Row::new(
            "6.4.2",
            "a character cut between fragments and never completed",
            cat(&[
                frame(false, OP_TEXT, &carrying(b"\xce")[..23]),
                frame(true, OP_CONT, br#"x"}"#),
            ]),
        )
        .answers([INVALID_MESSAGE])
        .closes(1007)
        .differs(UTF8_PER_MESSAGE),
    );
    rows.push(
        Row::new(
            "7.5.1",
            "close 1000 with a reason that is not UTF-8",
            close(1000, b"\xce\xba\xe1\xbd\xb9\xed\xa0\x80"),
        )
        .closes(1007),
    );
    rows
}

fn closing() -> Vec<Row> {
    let mut rows = vec![
        Row::new("7.1.1", "close 1000", close(1000, b"")).closes(1000),
        Row::new(
            "7.1.2",
            "close, then close",
            cat(&[close(1000, b""), close(1001, b"")]),
        )
        .closes(1000),
        Row::new(
            "7.1.3",
            "close, then ping",
            cat(&[close(1000, b""), frame(true, OP_PING, b"late")]),
        )
        .closes(1000),
        Row::new(
            "7.1.4",
            "close, then text",
            cat(&[close(1000, b""), text(&json_of_len(30))]),
        )
        .closes(1000),
        Row::new(
            "7.1.5",
            "text fragment, close, last fragment",
            cat(&[
                frame(false, OP_TEXT, b"{\"type\""),
                close(1000, b""),
                frame(true, OP_CONT, b":\"pong\"}"),
            ]),
        )
        .closes(1000),
        Row::new("7.3.1", "close, empty payload", frame(true, OP_CLOSE, b"")).closes_empty(),
        Row::new(
            "7.3.2",
            "close, 1-byte payload",
            frame(true, OP_CLOSE, b"\x03"),
        )
        .closes(1002),
        Row::new(
            "7.3.4",
            "close 1000 with a reason",
            close(1000, b"Hello World!"),
        )
        .closes(1000),
        Row::new(
            "7.3.5",
            "close 1000 with a 123-byte reason",
            close(1000, &[b'*'; 123]),
        )
        .closes(1000),
        Row::new(
            "7.3.6",
            "close, 126-byte payload",
            close(1000, &[b'*'; 124]),
        )
        .closes(1002),
    ];
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        rows.push(Row::new("7.7", format!("close {code}"), close(code, b"")).closes(code));
    }
    for code in [1012, 1013, 1014] {
        rows.push(
            Row::new("7.7", format!("close {code}"), close(code, b""))
                .closes(code)
                .differs(
                    "1012-1014 are registered with IANA and accepted; older Autobahn \
                     releases expect them refused",
                ),
        );
    }
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        rows.push(Row::new("7.9", format!("close {code}"), close(code, b"")).closes(1002));
    }
    rows
}

fn limits() -> Vec<Row> {
    let over = u64::try_from(MAX + 1).unwrap();
    let at_limit = json_of_len(MAX);
    vec![
        Row::new(
            "9.1",
            "text declaring one byte over the limit (header only)",
            raw_frame(0x81, over, b""),
        )
        .answers([TOO_LARGE])
        .closes(1009),
        Row::new(
            "9.2",
            "binary declaring one byte over the limit (header only)",
            raw_frame(0x82, over, b""),
        )
        .answers([TOO_LARGE])
        .closes(1009),
        Row::new(
            "9.1",
            "text declaring 2^63 bytes in the 64-bit length",
            raw_frame(0x81, 1 << 63, b""),
        )
        .answers([TOO_LARGE])
        .closes(1009)
        .differs(
            "a 64-bit length with its top bit set is refused as too large (1009), \
             not as a protocol error (1002)",
        ),
        Row::new(
            "9.1",
            "text declaring 2^64-1 bytes in the 64-bit length",
            raw_frame(0x81, u64::MAX, b""),
        )
        .answers([TOO_LARGE])
        .closes(1009),
        Row::new(
            "9.3",
            "a first fragment one byte over the limit (header only)",
            raw_frame(0x01, over, b""),
        )
        .answers([TOO_LARGE])
        .closes(1009),
        Row::new(
            "9.3",
            "fragmented text over the limit (40000 + 30000 bytes)",
            cat(&[
                frame(false, OP_TEXT, &[b' '; 40_000]),
                frame(true, OP_CONT, &[b' '; 30_000]),
            ]),
        )
        .answers([TOO_LARGE])
        .closes(1009),
        Row::new(
            "9.3",
            "fragmented text, 64 fragments of 1024 bytes: exactly the limit",
            (0..64)
                .flat_map(|i| {
                    let op = if i == 0 { OP_TEXT } else { OP_CONT };
                    frame(i == 63, op, &at_limit[i * 1024..(i + 1) * 1024])
                })
                .collect(),
        )
        .answers([NOT_AUTH]),
    ]
}

fn with_the_upgrade() -> Vec<Row> {
    let msg = json_of_len(40);
    vec![
        Row::new(
            "early",
            "ping in the upgrade request's write",
            frame(true, OP_PING, b"early"),
        )
        .with_upgrade()
        .answers([Pong(b"early".to_vec())]),
        Row::new(
            "early",
            "fragmented text and a ping in the upgrade request's write",
            cat(&[
                frame(false, OP_TEXT, &msg[..10]),
                frame(true, OP_PING, b"early"),
                frame(true, OP_CONT, &msg[10..]),
            ]),
        )
        .with_upgrade()
        .answers([Pong(b"early".to_vec()), NOT_AUTH]),
        Row::new(
            "early",
            "close in the upgrade request's write",
            close(1000, b""),
        )
        .with_upgrade()
        .closes(1000),
        Row::new(
            "early",
            "reserved bits in the upgrade request's write",
            raw_frame(0xC1, 2, b"{}"),
        )
        .with_upgrade()
        .closes(1002),
    ]
}

fn unmasked_frames() -> Vec<Row> {
    vec![
        Row::new(
            "unmasked",
            "unmasked text",
            unmasked(0x81, &json_of_len(30)),
        )
        .closes(1002),
        Row::new("unmasked", "unmasked ping", unmasked(0x89, b"ping")).closes(1002),
        Row::new(
            "unmasked",
            "unmasked close",
            unmasked(0x88, &1000u16.to_be_bytes()),
        )
        .closes(1002),
    ]
}

// ---- Running a row ------------------------------------------------------------------------

/// What the row's connection saw, as a readable line, when it is not what the row expects.
async fn run(server: &TestServer, row: &Row) -> Result<(), String> {
    let mut ws = match &row.send {
        Send::WithUpgrade(bytes) => RawWs::connect_with_frames(server.signaling, bytes).await,
        _ => RawWs::connect(server.signaling).await,
    };
    ws.tcp.set_nodelay(true).unwrap();
    match &row.send {
        Send::WithUpgrade(_) => {}
        Send::Whole(bytes) => {
            // The server may close before reading everything: a failed write is no error.
            let _ = ws.send(bytes).await;
        }
        Send::Pieces(pieces) => {
            for piece in pieces {
                if ws.send(piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    for want in &row.answers {
        let got = read_answer(&mut ws, deadline).await;
        seen.push(got.clone());
        if got != format!("{want:?}") {
            return Err(format!("answers: wanted {:?}, got {seen:?}", row.answers));
        }
    }
    match row.outcome {
        Outcome::Open => {
            ws.send(&frame(true, OP_TEXT, PROBE.as_bytes()))
                .await
                .map_err(|e| format!("the probe could not be sent: {e}"))?;
            let got = read_answer(&mut ws, deadline).await;
            if got != format!("{PROBE_ANSWER:?}") {
                return Err(format!(
                    "after {seen:?}: expected the connection open (probe answered), got {got}"
                ));
            }
        }
        Outcome::Closed(code) => {
            let got = match ws.read_frame(deadline).await {
                Ok(f) if f.opcode == OP_CLOSE && f.payload.is_empty() => None,
                Ok(f) if f.opcode == OP_CLOSE => f.close_code(),
                Ok(f) => return Err(format!("after {seen:?}: expected a close, got {f:?}")),
                Err(end) => return Err(format!("after {seen:?}: expected a close, got {end:?}")),
            };
            if got != code {
                return Err(format!("close code: wanted {code:?}, got {got:?}"));
            }
            match ws.read_frame(deadline).await {
                Err(ReadEnd::Eof | ReadEnd::Failed(_)) => {}
                Ok(f) => return Err(format!("a frame after the close: {f:?}")),
                Err(ReadEnd::Timeout) => return Err("the TCP connection stayed open".into()),
            }
        }
    }
    Ok(())
}

/// The next frame as an [`Answer`]'s Debug form, or a description of what came instead.
async fn read_answer(ws: &mut RawWs, deadline: Instant) -> String {
    match ws.read_frame(deadline).await {
        Ok(f) if f.opcode == OP_PONG && f.fin => format!("{:?}", Pong(f.payload)),
        Ok(f) if f.opcode == OP_TEXT && f.fin => {
            let json: Value = match serde_json::from_slice(&f.payload) {
                Ok(json) => json,
                Err(_) => return format!("text {:?}", String::from_utf8_lossy(&f.payload)),
            };
            match (json["type"].as_str(), json["data"]["code"].as_str()) {
                (Some("error"), Some(code)) => format!("Error({code:?})"),
                _ => format!("text {json}"),
            }
        }
        Ok(f) if f.opcode == OP_CLOSE => format!("close {:?}", f.close_code()),
        Ok(f) => format!("{f:?}"),
        Err(end) => format!("{end:?}"),
    }
}

/// The first bytes of a row, in hex, for a failure report.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for b in bytes.iter().take(48) {
        let _ = write!(out, "{b:02x} ");
    }
    if bytes.len() > 48 {
        let _ = write!(out, "… ({} bytes)", bytes.len());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_frames_websocket_as_rfc_6455_says() {
    let server = TestServer::start_tweaked(|c| {
        c.auth_timeout = Duration::from_secs(60);
    })
    .await;
    assert_eq!(fast_config().max_message_bytes, MAX, "the default limit");
    let table: Vec<Row> = [
        framing(),
        pings(),
        reserved_bits(),
        reserved_opcodes(),
        fragmentation(),
        utf8(),
        closing(),
        limits(),
        unmasked_frames(),
        with_the_upgrade(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut failures = Vec::new();
    for row in &table {
        if let Err(why) = run(&server, row).await {
            failures.push(format!(
                "{} {} ({}): {why}\n    sent: {}",
                row.case,
                row.what,
                row.differs.unwrap_or("as Autobahn expects"),
                hex(&row.bytes())
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
    server.stop().await;
}
