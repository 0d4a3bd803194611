//! Arbitrary bytes into `ClientMessage::decode`.
//!
//! Invariants: decoding never panics, whatever the bytes; an error's text stays bounded
//! (it is sent back to the client); a decoded message re-encodes (`encode`) to JSON that
//! decodes to an equal message, and encoding that again gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octate_protocol::{ClientMessage, DEFAULT_MAX_MESSAGE_BYTES};

/// Longest error text accepted: serde's messages quote input, the crate truncates them.
const MAX_ERROR_TEXT: usize = 2048;

fuzz_target!(|data: &[u8]| {
    match ClientMessage::decode(data, DEFAULT_MAX_MESSAGE_BYTES) {
        Ok(msg) => {
            let wire = msg.encode();
            // The re-encoded form may be longer than the input (a top-level `token` moves
            // into `data`), so the second decode is not bounded by the input's limit.
            let again = ClientMessage::decode(wire.as_bytes(), usize::MAX).unwrap_or_else(|e| {
                panic!("re-encoded message does not decode: {e}\nmessage {msg:?}\nwire {wire}")
            });
            assert_eq!(again, msg, "round trip changed the message; wire {wire}");
            assert_eq!(again.encode(), wire, "encode is not a fixed point");
            assert_eq!(msg.kind(), again.kind());
        }
        Err(e) => {
            let _ = e.code().as_str();
            let text = e.to_string();
            assert!(
                text.len() <= MAX_ERROR_TEXT,
                "error text of {} bytes",
                text.len()
            );
        }
    }
    // A tight limit refuses before parsing, and never panics either.
    let _ = ClientMessage::decode(data, data.len() / 2);
});
