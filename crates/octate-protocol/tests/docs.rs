//! `docs/protocol.md` stays in step with the code: every code is documented and every
//! JSON example is a message the decoders accept.

#![allow(clippy::unwrap_used, missing_docs)]

use octate_protocol::{
    ClientMessage, CloseCode, DEFAULT_MAX_MESSAGE_BYTES, ErrorCode, PROTOCOL_VERSION, ServerMessage,
};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).unwrap()
}

fn json_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```json") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_error_code_is_documented() {
    let doc = doc();
    for code in ErrorCode::ALL {
        assert!(
            doc.contains(&format!("| `{code}`")),
            "{code} missing from the table"
        );
    }
}

#[test]
fn every_close_code_is_documented() {
    let doc = doc();
    let all = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::TryAgainLater,
        CloseCode::HeartbeatTimeout,
        CloseCode::AuthFailed,
        CloseCode::AuthTimeout,
        CloseCode::RoomClosed,
        CloseCode::Replaced,
        CloseCode::Kicked,
        CloseCode::SlowConsumer,
        CloseCode::MemoryPressure,
        CloseCode::RateLimited,
    ];
    for code in all {
        assert!(
            doc.contains(&format!("| **{}** |", code.code())),
            "{code:?} missing from the table"
        );
    }
}

#[test]
fn protocol_version_is_documented() {
    assert!(doc().contains(&format!("Protocol version **{PROTOCOL_VERSION}**")));
}

#[test]
fn json_examples_are_real_messages() {
    let blocks = json_blocks(&doc());
    assert!(blocks.len() > 20, "found {} blocks", blocks.len());
    let (mut client, mut server) = (0, 0);
    for block in blocks {
        let value: serde_json::Value =
            serde_json::from_str(&block).unwrap_or_else(|e| panic!("not JSON: {e}\n{block}"));
        if value.get("type").is_none() {
            let _: octate_protocol::http::InfoResponse = serde_json::from_value(value).unwrap();
            continue;
        }
        // Compact form, as it travels.
        let compact = value.to_string();
        let as_client = ClientMessage::decode(compact.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES);
        let as_server = ServerMessage::decode(compact.as_bytes());
        assert!(
            as_client.is_ok() || as_server.is_ok(),
            "neither a client nor a server message:\n{block}\n{as_client:?}\n{as_server:?}"
        );
        if let Ok(msg) = as_server {
            // Server examples are exactly what the encoder writes (modulo indentation).
            let encoded: serde_json::Value = serde_json::from_slice(&msg.encode()).unwrap();
            assert_eq!(encoded, value, "{block}");
            server += 1;
        } else {
            client += 1;
        }
    }
    assert!(
        client >= 8 && server >= 10,
        "client {client}, server {server}"
    );
}
