//! Arbitrary bytes into `ServerMessage::decode` (what a client library runs on server frames).
//!
//! Invariants: decoding never panics; an error's text stays bounded; a decoded message
//! re-encodes (`encode`) to bytes that decode to an equal message, and encoding that
//! again gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octate_protocol::ServerMessage;

const MAX_ERROR_TEXT: usize = 2048;

fuzz_target!(|data: &[u8]| {
    match ServerMessage::decode(data) {
        Ok(msg) => {
            let wire = msg.encode();
            let again = ServerMessage::decode(&wire).unwrap_or_else(|e| {
                panic!(
                    "re-encoded message does not decode: {e}\nmessage {msg:?}\nwire {}",
                    String::from_utf8_lossy(&wire)
                )
            });
            assert_eq!(again, msg, "round trip changed the message");
            assert_eq!(again.encode(), wire, "encode is not a fixed point");
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
});
