//! Writes the checked-in seed corpus under `tests/fuzz/corpus/<target>/`.
//!
//!     cd tests/fuzz && cargo run --example gen_corpus
//!
//! Decoders: every JSON example of `docs/protocol.md` (compact, as it travels) plus a few
//! edge cases. Tokens: fresh tokens from the fuzz authority's keys (their ids are random,
//! so a re-run rewrites those files) and the fixed revoked token. Core: a few scripted
//! event sequences in the `core_sequence` byte layout.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use octate_fuzz::{
    HOUR, NEW_SECRET, REVOKED_TOKEN, T0, authority, canonical_token, foreign_authority,
    old_authority,
};
use octate_protocol::{ClientMessage, ServerMessage};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("corpus dir");
    fs::write(dir.join(name), bytes).expect("corpus file");
}

fn json_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```json") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap_or_default()),
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn main() {
    if std::env::args().any(|a| a == "--new-revoked-token") {
        // For `REVOKED_TOKEN` in src/lib.rs, should it ever need replacing.
        let (token, _) = authority()
            .issue("mallory", "room-1", None, T0)
            .expect("issue");
        println!("{token}");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");
    let doc = fs::read_to_string(root.join("../../docs/protocol.md")).expect("docs/protocol.md");

    // ---- decoders: the protocol document's examples, compacted.
    let (client_dir, server_dir) = (corpus.join("decode_client"), corpus.join("decode_server"));
    for (i, block) in json_blocks(&doc).iter().enumerate() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(block) else {
            continue;
        };
        let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
            continue;
        };
        let compact = value.to_string();
        let name = format!("doc-{i:02}-{kind}");
        if ClientMessage::decode(compact.as_bytes(), usize::MAX).is_ok() {
            write(&client_dir, &name, compact.as_bytes());
        }
        if ServerMessage::decode(compact.as_bytes()).is_ok() {
            write(&server_dir, &name, compact.as_bytes());
        }
    }
    let client_edges: [(&str, &str); 6] = [
        (
            "edge-top-level-token",
            r#"{"type":"auth","token":"t","userId":42}"#,
        ),
        (
            "edge-name-cleaning",
            "{\"type\":\"join-room\",\"roomId\":\"r\",\"data\":{\"userName\":\"  \\u0007 Ann\\u00e9  \"}}",
        ),
        (
            "edge-raw-data",
            r#"{"type":"ice-candidate","data":{ "peer" : "b", "candidate" : {"c":[1,2,{"x":null}]} }}"#,
        ),
        (
            "edge-cursor",
            r#"{"type":"cursor-update","data":{"line":18446744073709551615,"column":0}}"#,
        ),
        (
            "edge-deep",
            r#"{"type":"presence","data":{"status":"idle","x":[[[[[[[[[[]]]]]]]]]]}}"#,
        ),
        (
            "edge-escapes",
            r#"{"type":"create-room","roomId":"r\u002d1","data":{"roomName":"\ud83d\ude00","fileId":"\/f"}}"#,
        ),
    ];
    for (name, text) in client_edges {
        write(&client_dir, name, text.as_bytes());
    }
    write(
        &server_dir,
        "edge-peer-left-no-reason",
        br#"{"type":"peer-left","roomId":"r","data":{"peer":{"userId":"u","userName":"U","isHost":false,"connectedAt":1,"lastHeartbeat":2}}}"#,
    );

    // ---- tokens: a `NOW_TABLE` index byte, then the token.
    let tokens = corpus.join("verify_token");
    let auth = authority();
    let seed = |name: &str, now_index: u8, token: &str| {
        let mut bytes = vec![now_index];
        bytes.extend_from_slice(token.as_bytes());
        write(&tokens, name, &bytes);
    };
    let (alice, claims) = auth.issue("alice", "room-1", None, T0).expect("issue");
    // The verify_token oracle rebuilds exactly what `issue` writes.
    assert_eq!(
        canonical_token(&claims, NEW_SECRET),
        alice,
        "oracle and issue disagree"
    );
    assert_eq!(auth.verify(&alice, T0), Ok(claims));
    assert!(
        auth.verify(REVOKED_TOKEN, T0).is_ok(),
        "REVOKED_TOKEN must be valid at T0"
    );
    seed("valid-new-key", 0, &alice);
    seed("valid-new-key-at-expiry", 4, &alice);
    seed("valid-new-key-before-skew", 7, &alice);
    let (bob, _) = old_authority()
        .issue("bob", "room-2", None, T0)
        .expect("issue");
    seed("valid-old-key", 2, &bob);
    let (short, _) = auth
        .issue("cat", "r", Some(Duration::from_millis(1)), T0)
        .expect("issue");
    seed("short-ttl-expired", 1, &short);
    let long = "x".repeat(128);
    let (long_ids, _) = auth
        .issue(&long, &long, Some(Duration::from_millis(HOUR)), T0)
        .expect("issue");
    seed("long-ids", 3, &long_ids);
    let (foreign, _) = foreign_authority()
        .issue("eve", "room-1", None, T0)
        .expect("issue");
    seed("foreign-key", 0, &foreign);
    seed("revoked", 0, REVOKED_TOKEN);
    seed("empty", 0, "");
    seed("two-dots", 0, &format!("{alice}.x"));
    seed(
        "junk",
        0,
        "not-a-token.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );

    // ---- core: 4 config bytes, then events (see the target's header for the layout).
    let core = corpus.join("core_sequence");
    let scripts: [(&str, &[u8]); 5] = [
        // Three users join r0; signals to a mate, to a stranger, updates; the host leaves.
        ("join-signal-leave", &[3, 3, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 2, 1, 0, 0, 0, 1, 0, 4, 3, 0, 0, 5, 1, 2, 1, 2, 0, 5, 0, 5, 0, 10, 3]),
        // Replacement: the same user twice, then a disconnect and time passing.
        ("replace-and-timeout", &[2, 2, 1, 5, 0, 0, 0, 0, 0, 1, 0, 0, 1, 9, 1, 10, 6, 10, 6, 10, 6]),
        // HTTP room, memory pressure, delete.
        ("http-room-memory", &[4, 4, 3, 2, 13, 1, 2, 0, 2, 1, 1, 0, 3, 2, 1, 12, 1, 12, 2, 14, 1, 10, 7]),
        // Leave then re-join, create on an existing room, late timers.
        ("leave-rejoin", &[3, 2, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 5, 0, 5, 0, 0, 4, 0, 0, 4, 0, 1, 11, 6, 3, 11, 5, 2]),
        // Raw message bytes through the decoder.
        ("raw-message", b"\x02\x02\x01\x00\x00\x00\x00\x00\x00\x01\x00\x00\x07\x80\x00\x07\x2d{\"type\":\"presence\",\"data\":{\"status\":\"idle\"}}"),
    ];
    for (name, bytes) in scripts {
        write(&core, name, bytes);
    }
    println!("corpus written under {}", corpus.display());
}
