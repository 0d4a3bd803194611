//! Hostile clients over real sockets, one attack per test: malformed input at the JSON,
//! WebSocket-frame and TCP levels, token abuse and impersonation, and floods of sockets,
//! half-sent requests and messages.
//!
//! While each attack runs, a control pair (two well-behaved peers in their own room) keeps
//! relaying numbered offers and answers. Every test then checks the answer promised by
//! `docs/security.md` and `docs/protocol.md`, that the control pair lost nothing, that
//! `/health` and `/stats` are sane with the connection count back to its baseline, and that
//! memory came back (see `attack::MEMORY_BOUND`).

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use octate_client::Client;
use octate_protocol::{LeaveReason, RoomCloseReason, ServerMessage, SignalKind, UpdateKind};
use octate_test::attack::{
    self, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, QUIET, RawWs, Upgrade, WAIT, Watch,
    auth_text, expect_end, expect_error, expect_silence, frame, next, next_text, raw_frame,
};
use octate_test::server::{TestServer, fast_config};
use octate_test::tokens::{HOUR, SECRET, mint_with, now_ms};
use octate_transport::TransportConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

// ---- Helpers ------------------------------------------------------------------------------

/// A server with fast timers, changed by `tweak`.
async fn start(tweak: impl FnOnce(&mut TransportConfig)) -> TestServer {
    let mut config = fast_config();
    tweak(&mut config);
    TestServer::start(config).await
}

/// A tungstenite client authenticated as `user` in `room`.
async fn join(server: &TestServer, user: &str, room: &str) -> Client {
    let token = attack::token(server.http, user, room, None).await;
    attack::join(server.signaling, &token, user).await
}

/// A bare-socket client authenticated as `user` in `room`.
async fn raw_join(server: &TestServer, user: &str, room: &str) -> RawWs {
    let token = attack::token(server.http, user, room, None).await;
    let mut ws = RawWs::connect(server.signaling).await;
    ws.auth(&token, user).await;
    ws
}

async fn expect_peer_joined(client: &mut Client, who: &str, user: &str) {
    match next(client, who).await {
        ServerMessage::PeerJoined { peer, .. } if peer.user_id.as_str() == user => {}
        other => panic!("{who}: expected peer-joined {user}, got {other:?}"),
    }
}

async fn expect_peer_left(client: &mut Client, who: &str, user: &str, reason: LeaveReason) {
    match next(client, who).await {
        ServerMessage::PeerLeft {
            peer, reason: got, ..
        } if peer.user_id.as_str() == user && got == reason => {}
        other => panic!("{who}: expected peer-left {user} ({reason:?}), got {other:?}"),
    }
}

/// Asserts the next message is an update of `kind` from `from`; returns its `data` text.
async fn expect_update(client: &mut Client, who: &str, kind: UpdateKind, from: &str) -> String {
    match next(client, who).await {
        ServerMessage::Update {
            kind: got,
            from: sender,
            data,
            ..
        } if got == kind && sender.as_str() == from => data.get().to_owned(),
        other => panic!("{who}: expected {kind:?} from {from}, got {other:?}"),
    }
}

/// Asserts the next message is a signal of `kind` from `from`; returns its `data` text.
async fn expect_signal(client: &mut Client, who: &str, kind: SignalKind, from: &str) -> String {
    match next(client, who).await {
        ServerMessage::Signal {
            kind: got,
            from: sender,
            data,
            ..
        } if got == kind && sender.as_str() == from => data.get().to_owned(),
        other => panic!("{who}: expected {kind:?} from {from}, got {other:?}"),
    }
}

/// A valid `presence` message.
const PRESENCE: &str = r#"{"type":"presence","data":{"status":"active"}}"#;

/// A `presence` message of exactly `len` bytes (padded with an extra `data` field).
fn presence_of_len(len: usize) -> String {
    let shell = r#"{"type":"presence","data":{"status":"active","pad":""}}"#;
    let text = format!(
        r#"{{"type":"presence","data":{{"status":"active","pad":"{}"}}}}"#,
        "p".repeat(len - shell.len())
    );
    assert_eq!(text.len(), len);
    text
}

/// A token for `user` in `room` signed with `key_id` / `secret`, issued at `issued_at`.
fn mint(key_id: &str, secret: &[u8], user: &str, room: &str, issued_at: u64) -> String {
    mint_with(key_id, secret, user, room, issued_at, HOUR)
}

/// Authenticates on a bare socket with `token`; asserts `error` `code` then close 4001.
async fn assert_token_refused(server: &TestServer, token: &str, code: &str) {
    let mut ws = RawWs::connect(server.signaling).await;
    ws.send_text(&auth_text(token)).await;
    let who = format!("token {:.40}…", token);
    ws.expect_error(&who, code).await;
    ws.expect_close(&who, 4001).await;
}

// ---- JSON-level attacks -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_gets_typed_errors_and_the_socket_stays_usable() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut mallory = join(&server, "mallory", "junk").await;
    let mut victim = join(&server, "victim", "junk").await;
    expect_peer_joined(&mut mallory, "mallory", "victim").await;

    // Exactly the 64 KiB limit of brackets: 32,768 levels, refused by depth, not size.
    let deep = format!("{}{}", "[".repeat(32_768), "]".repeat(32_768));
    assert_eq!(deep.len(), 64 * 1024);
    let cases: Vec<(String, &str)> = [
        (r#"{"type":"#, "invalid-json"),
        ("not json at all", "invalid-json"),
        ("", "invalid-json"),
        (
            r#"{"type":"presence","data":{"status":"active"}"#,
            "invalid-json",
        ),
        (
            r#"{"type":"presence","data":{"status":"active"}} trailing"#,
            "invalid-json",
        ),
        (r#"{"type":"presence"}{"type":"presence"}"#, "invalid-json"),
        ("\u{feff}{\"type\":\"heartbeat\"}", "invalid-json"),
        (
            r#"{"type":"cursor-update","data":{"line":NaN,"column":0}}"#,
            "invalid-json",
        ),
        (r#"{'type':'presence'}"#, "invalid-json"),
        (deep.as_str(), "invalid-json"),
        ("[1,2,3]", "invalid-message"),
        ("42", "invalid-message"),
        (r#""auth""#, "invalid-message"),
        ("null", "invalid-message"),
        ("true", "invalid-message"),
        (r#"{"type":5}"#, "invalid-message"),
        (r#"{"type":["auth"]}"#, "invalid-message"),
        (r#"{"type":{"nested":"auth"}}"#, "invalid-message"),
        (r#"{"type":"sdp-offer","data":[1]}"#, "invalid-message"),
        (r#"{"type":"sdp-offer","data":"bob"}"#, "invalid-message"),
        (r#"{"type":"presence","data":7}"#, "invalid-message"),
        (r#"{"type":"teleport"}"#, "unknown-type"),
        (r#"{"type":"SDP-OFFER"}"#, "unknown-type"),
        (r#"{"type":""}"#, "unknown-type"),
        ("{}", "missing-field"),
        (r#"{"data":{"status":"active"}}"#, "missing-field"),
        (r#"{"type":"sdp-offer"}"#, "missing-field"),
        (r#"{"type":"sdp-offer","data":null}"#, "missing-field"),
        (
            r#"{"type":"ice-candidate","data":{"candidate":{}}}"#,
            "missing-field",
        ),
        (r#"{"type":"presence"}"#, "missing-field"),
        (r#"{"type":"presence","data":{}}"#, "missing-field"),
        (
            r#"{"type":"cursor-update","data":{"line":1}}"#,
            "missing-field",
        ),
        (r#"{"type":"auth"}"#, "missing-field"),
        (
            r#"{"type":"sdp-offer","data":{"peer":"no spaces"}}"#,
            "invalid-field",
        ),
        (
            r#"{"type":"sdp-offer","data":{"peer":42}}"#,
            "invalid-field",
        ),
        (
            r#"{"type":"sdp-offer","data":{"peer":""}}"#,
            "invalid-field",
        ),
        (
            r#"{"type":"presence","data":{"status":"asleep"}}"#,
            "invalid-field",
        ),
        (
            r#"{"type":"presence","data":{"status":1}}"#,
            "invalid-field",
        ),
        (
            r#"{"type":"cursor-update","data":{"line":-1,"column":0}}"#,
            "invalid-field",
        ),
        (
            r#"{"type":"cursor-update","data":{"line":1.5,"column":0}}"#,
            "invalid-field",
        ),
        (
            r#"{"type":"cursor-update","data":{"line":18446744073709551616,"column":0}}"#,
            "invalid-field",
        ),
        (
            r#"{"type":"join-room","roomId":"bad room"}"#,
            "invalid-field",
        ),
        (
            r#"{"type":"join-room","roomId":"another-room"}"#,
            "forbidden",
        ),
        (
            r#"{"type":"create-room","roomId":"another-room"}"#,
            "forbidden",
        ),
        (
            r#"{"type":"sdp-offer","data":{"peer":"mallory"}}"#,
            "peer-not-found",
        ),
    ]
    .into_iter()
    .map(|(text, code)| (text.to_owned(), code))
    .collect();
    for (text, code) in &cases {
        mallory.send_text(text.clone()).await.unwrap();
        let got = next_text(&mut mallory, "mallory").await;
        let json: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(json["type"], "error", "{text:.80}: {got}");
        assert_eq!(json["data"]["code"], *code, "{text:.80}: {got}");
        assert!(json["data"]["message"].is_string(), "{got}");
    }

    // Nothing of that reached the room, and the socket still works.
    expect_silence(&mut victim, "victim").await;
    mallory.send_text(PRESENCE).await.unwrap();
    let data = expect_update(&mut victim, "victim", UpdateKind::Presence, "mallory").await;
    assert_eq!(data, r#"{"status":"active"}"#);
    mallory.close().await.unwrap();
    victim.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_without_recursing() {
    // A 200,000-deep array is 400 KB: the message limit is raised so that the depth
    // check, not the size check, is what refuses it.
    let server = start(|c| c.max_message_bytes = 1024 * 1024).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut mallory = join(&server, "mallory", "deep").await;
    let mut victim = join(&server, "victim", "deep").await;
    expect_peer_joined(&mut mallory, "mallory", "victim").await;

    let levels = 200_000;
    let arrays = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    let unclosed = "[".repeat(levels);
    let in_data = format!(
        r#"{{"type":"presence","data":{{"status":"active","x":{}{}}}}}"#,
        "[".repeat(levels),
        "]".repeat(levels)
    );
    let objects = format!("{}{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
    // `data` may nest 63 levels (the envelope counts as one): 62 arrays inside it pass.
    let at_limit = |arrays: usize| {
        format!(
            r#"{{"type":"presence","data":{{"status":"active","x":{}{}}}}}"#,
            "[".repeat(arrays),
            "]".repeat(arrays)
        )
    };
    for text in [&arrays, &unclosed, &in_data, &objects, &at_limit(63)] {
        mallory.send_text(text.clone()).await.unwrap();
        let message = expect_error(&mut mallory, "mallory", "invalid-json").await;
        assert!(
            message.len() < 1024,
            "a huge error message: {} bytes",
            message.len()
        );
    }
    expect_silence(&mut victim, "victim").await;

    // Brackets inside strings do not count, and 63 levels of `data` are fine.
    let in_string = format!(
        r#"{{"type":"presence","data":{{"status":"active","s":"{}"}}}}"#,
        "[".repeat(levels)
    );
    mallory.send_text(in_string.clone()).await.unwrap();
    let data = expect_update(&mut victim, "victim", UpdateKind::Presence, "mallory").await;
    assert_eq!(
        data,
        format!(r#"{{"status":"active","s":"{}"}}"#, "[".repeat(levels))
    );
    mallory.send_text(at_limit(62)).await.unwrap();
    expect_update(&mut victim, "victim", UpdateKind::Presence, "mallory").await;
    mallory.send_text(PRESENCE).await.unwrap();
    expect_update(&mut victim, "victim", UpdateKind::Presence, "mallory").await;
    mallory.close().await.unwrap();
    victim.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_strings_are_relayed_or_refused_with_typed_errors() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut mallory = join(&server, "mallory", "big").await;
    let mut victim = join(&server, "victim", "big").await;
    expect_peer_joined(&mut mallory, "mallory", "victim").await;
    let huge = "a".repeat(60 * 1024);

    // A 60 KiB SDP with escapes reaches its target byte for byte.
    let sdp = "v=0\\r\\na=candidate:1 1 udp 1 203.0.113.7 9 typ host\\r\\n".repeat(1130);
    let data = format!(r#"{{"peer":"victim","offer":{{"type":"offer","sdp":"{sdp}"}}}}"#);
    assert!(data.len() > 60 * 1024 && data.len() < 64 * 1024);
    mallory
        .send_text(format!(r#"{{"type":"sdp-offer","data":{data}}}"#))
        .await
        .unwrap();
    let got = next_text(&mut victim, "victim").await;
    assert_eq!(
        got,
        format!(r#"{{"type":"sdp-offer","userId":"mallory","roomId":"big","data":{data}}}"#)
    );
    // 10,000 escaped characters in a free field of a presence.
    let escapes = "\\u00e9".repeat(10_000);
    mallory
        .send_text(format!(
            r#"{{"type":"presence","data":{{"status":"away","note":"{escapes}"}}}}"#
        ))
        .await
        .unwrap();
    let data = expect_update(&mut victim, "victim", UpdateKind::Presence, "mallory").await;
    assert!(data.ends_with(&format!(r#""note":"{escapes}"}}"#)));

    // 60 KiB where the protocol expects short values: typed errors with short messages.
    let refused = [
        (format!(r#"{{"type":"{huge}"}}"#), "unknown-type"),
        (
            format!(r#"{{"type":"sdp-offer","data":{{"peer":"{huge}"}}}}"#),
            "invalid-field",
        ),
        (
            format!(r#"{{"type":"presence","data":{{"status":"{huge}"}}}}"#),
            "invalid-field",
        ),
        (
            format!(r#"{{"type":"join-room","roomId":"{huge}"}}"#),
            "invalid-field",
        ),
        (
            format!(r#"{{"type":"create-room","data":{{"fileId":"{huge}"}}}}"#),
            "invalid-field",
        ),
        (
            format!(
                r#"{{"type":"cursor-update","data":{{"line":{},"column":0}}}}"#,
                "9".repeat(60 * 1024)
            ),
            "invalid-field",
        ),
    ];
    for (text, code) in &refused {
        mallory.send_text(text.clone()).await.unwrap();
        let message = expect_error(&mut mallory, "mallory", code).await;
        assert!(
            message.len() < 1024,
            "{code}: error message of {} bytes",
            message.len()
        );
    }
    expect_silence(&mut victim, "victim").await;

    // A 60 KiB display name is cut to 64 characters.
    mallory.send_text(r#"{"type":"leave-room"}"#).await.unwrap();
    assert!(matches!(
        next(&mut mallory, "mallory").await,
        ServerMessage::RoomLeft { .. }
    ));
    expect_peer_left(&mut victim, "victim", "mallory", LeaveReason::Left).await;
    match next(&mut victim, "victim").await {
        ServerMessage::HostChanged { host_id, .. } => assert_eq!(host_id.as_str(), "victim"),
        other => panic!("victim: expected host-changed, got {other:?}"),
    }
    let long_name = "ü".repeat(30 * 1024);
    mallory
        .send_text(json!({"type": "join-room", "data": {"userName": long_name}}).to_string())
        .await
        .unwrap();
    match next(&mut mallory, "mallory").await {
        ServerMessage::RoomJoined { room, .. } => {
            let me = room.peers.iter().find(|p| p.user_id.as_str() == "mallory");
            assert_eq!(me.unwrap().user_name, "ü".repeat(64));
        }
        other => panic!("mallory: expected room-joined, got {other:?}"),
    }
    expect_peer_joined(&mut victim, "victim", "mallory").await;

    // A 60 KiB token is malformed: 4001.
    assert_token_refused(&server, &"A".repeat(60 * 1024), "token-malformed").await;

    mallory.send_text(PRESENCE).await.unwrap();
    expect_update(&mut victim, "victim", UpdateKind::Presence, "mallory").await;
    mallory.close().await.unwrap();
    victim.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

// ---- Frame-level attacks ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_are_refused_with_1003() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut victim = join(&server, "victim", "bin").await;

    let mut mallory = join(&server, "mallory", "bin").await;
    expect_peer_joined(&mut victim, "victim", "mallory").await;
    mallory
        .send_raw(Message::binary(
            br#"{"type":"presence","data":{"status":"active"}}"#.to_vec(),
        ))
        .await
        .unwrap();
    expect_error(&mut mallory, "mallory", "invalid-message").await;
    assert_eq!(expect_end(&mut mallory, "mallory").await, Some(1003));
    expect_peer_left(&mut victim, "victim", "mallory", LeaveReason::Disconnected).await;

    // Before auth, empty, and fragmented: the same answer.
    let attacks = [
        frame(true, OP_BINARY, b"\x00\x01\x02"),
        frame(true, OP_BINARY, b""),
        [
            frame(false, OP_BINARY, b"{\"ty"),
            frame(true, OP_CONT, b"pe\":1}"),
        ]
        .concat(),
    ];
    for bytes in attacks {
        let mut ws = RawWs::connect(server.signaling).await;
        ws.send(&bytes).await.unwrap();
        ws.expect_error("binary", "invalid-message").await;
        ws.expect_close("binary", 1003).await;
    }
    expect_silence(&mut victim, "victim").await;
    victim.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_refused_with_1007() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut victim = join(&server, "victim", "utf8").await;
    let attacks: [(&str, Vec<u8>); 5] = [
        ("bare bytes", frame(true, OP_TEXT, &[0xff, 0xfe])),
        (
            "overlong",
            frame(true, OP_TEXT, b"{\"type\":\"presence\",\"x\":\"\xc0\xaf\"}"),
        ),
        (
            "surrogate",
            frame(true, OP_TEXT, b"{\"x\":\"\xed\xa0\x80\"}"),
        ),
        ("truncated", frame(true, OP_TEXT, b"{\"x\":\"\xe2\x82")),
        (
            "fragmented",
            [
                frame(false, OP_TEXT, b"{\"type\":\"pres"),
                frame(true, OP_CONT, b"ence\xc3\x28\"}"),
            ]
            .concat(),
        ),
    ];
    let mut wrong = Vec::new();
    for (i, (what, bytes)) in attacks.into_iter().enumerate() {
        let user = format!("mallory-{i}");
        let mut ws = raw_join(&server, &user, "utf8").await;
        expect_peer_joined(&mut victim, "victim", &user).await;
        ws.send(&bytes).await.unwrap();
        let (texts, code) = ws.end(what).await;
        // protocol.md §8: `invalid-message` is sent before the 1007 close.
        let error_first = texts.len() == 1 && texts[0].contains(r#""code":"invalid-message""#);
        if code != Some(1007) || !error_first {
            wrong.push(format!("{what}: {texts:?} then close {code:?}"));
        }
        expect_peer_left(&mut victim, "victim", &user, LeaveReason::Disconnected).await;
    }
    victim.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
    assert!(
        wrong.is_empty(),
        "expected error invalid-message then close 1007; got {wrong:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_violations_close_1002() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;

    // Documented: bad fragmentation gets `invalid-message`, then 1002.
    let bad_fragments = [
        ("continuation first", frame(true, OP_CONT, b"{}")),
        (
            "text inside a text",
            [frame(false, OP_TEXT, b"{"), frame(true, OP_TEXT, b"{}")].concat(),
        ),
        (
            "binary inside a text",
            [frame(false, OP_TEXT, b"{"), frame(true, OP_BINARY, b"x")].concat(),
        ),
    ];
    for (what, bytes) in bad_fragments {
        let mut ws = RawWs::connect(server.signaling).await;
        ws.send(&bytes).await.unwrap();
        ws.expect_error(what, "invalid-message").await;
        ws.expect_close(what, 1002).await;
    }

    // Frames no client may send: closed with 1002.
    let violations = [
        ("unmasked text frame", vec![0x80 | OP_TEXT, 2, b'{', b'}']),
        ("unmasked close frame", vec![0x80 | OP_CLOSE, 0]),
        ("reserved data opcode 0x3", frame(true, 0x3, b"x")),
        ("reserved control opcode 0xB", frame(true, 0xB, b"")),
        (
            "RSV1 without an extension",
            raw_frame(0x80 | 0x40 | OP_TEXT, 2, b"{}"),
        ),
        (
            "RSV3 without an extension",
            raw_frame(0x80 | 0x10 | OP_TEXT, 2, b"{}"),
        ),
        ("fragmented ping", frame(false, OP_PING, b"")),
        ("ping over 125 bytes", frame(true, OP_PING, &[b'p'; 126])),
        ("one-byte close payload", frame(true, OP_CLOSE, &[3])),
        (
            "close code 999",
            frame(true, OP_CLOSE, &999u16.to_be_bytes()),
        ),
        (
            "close code 1005, which is never sent",
            frame(true, OP_CLOSE, &1005u16.to_be_bytes()),
        ),
    ];
    for (what, bytes) in violations {
        let mut ws = RawWs::connect(server.signaling).await;
        ws.send(&bytes).await.unwrap();
        let (texts, code) = ws.end(what).await;
        assert_eq!(code, Some(1002), "{what}: closed with {code:?}");
        for text in texts {
            assert!(
                text.contains(r#""code":"invalid-message""#),
                "{what}: {text}"
            );
        }
    }
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_that_never_finish_cannot_grow_past_the_limit() {
    let server = start(|c| c.auth_timeout = Duration::from_millis(500)).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut victim = join(&server, "victim", "frag").await;

    // Five 16 KiB fragments, none final: the fifth passes 64 KiB.
    let mut big = raw_join(&server, "big", "frag").await;
    expect_peer_joined(&mut victim, "victim", "big").await;
    let chunk = vec![b'a'; 16 * 1024];
    let mut bytes = frame(false, OP_TEXT, &chunk);
    for _ in 0..4 {
        bytes.extend(frame(false, OP_CONT, &chunk));
    }
    big.send(&bytes).await.unwrap();
    big.expect_error("big", "too-large").await;
    big.expect_close("big", 1009).await;
    expect_peer_left(&mut victim, "victim", "big", LeaveReason::Disconnected).await;

    // 65,537 one-byte fragments: the last one passes the limit.
    let mut tiny = raw_join(&server, "tiny", "frag").await;
    expect_peer_joined(&mut victim, "victim", "tiny").await;
    let mut bytes = frame(false, OP_TEXT, b"{");
    let one = frame(false, OP_CONT, b"a");
    for _ in 0..64 * 1024 {
        bytes.extend_from_slice(&one);
    }
    tiny.send(&bytes).await.unwrap();
    tiny.expect_error("tiny", "too-large").await;
    tiny.expect_close("tiny", 1009).await;
    expect_peer_left(&mut victim, "victim", "tiny", LeaveReason::Disconnected).await;

    // An unauthenticated socket with one unfinished fragment waits for the auth timeout.
    let opened = Instant::now();
    let mut idle = RawWs::connect(server.signaling).await;
    idle.send(&frame(false, OP_TEXT, br#"{"type":"au"#))
        .await
        .unwrap();
    idle.expect_error("idle", "not-authenticated").await;
    idle.expect_close("idle", 4002).await;
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(490) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    expect_silence(&mut victim, "victim").await;
    victim.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_1009_before_their_payload_arrives() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut victim = join(&server, "victim", "huge").await;
    let mut mallory = join(&server, "mallory", "huge").await;
    expect_peer_joined(&mut victim, "victim", "mallory").await;

    // Exactly 64 KiB passes; one byte more is too large.
    mallory.send_text(presence_of_len(64 * 1024)).await.unwrap();
    let data = expect_update(&mut victim, "victim", UpdateKind::Presence, "mallory").await;
    assert_eq!(
        data.len(),
        64 * 1024 - r#"{"type":"presence","data":}"#.len()
    );
    mallory
        .send_text(presence_of_len(64 * 1024 + 1))
        .await
        .unwrap();
    expect_error(&mut mallory, "mallory", "too-large").await;
    assert_eq!(expect_end(&mut mallory, "mallory").await, Some(1009));
    expect_peer_left(&mut victim, "victim", "mallory", LeaveReason::Disconnected).await;

    // Headers that announce 1 MiB and 2^63 bytes: refused at once, the payload never sent.
    let mut raw = raw_join(&server, "raw", "huge").await;
    expect_peer_joined(&mut victim, "victim", "raw").await;
    let announced = [
        raw_frame(0x80 | OP_TEXT, 1024 * 1024, b"{\"type\":"),
        raw_frame(0x80 | OP_TEXT, 1 << 63, b"{\"type\":"),
    ];
    let sent = Instant::now();
    raw.send(&announced[0]).await.unwrap();
    raw.expect_error("raw", "too-large").await;
    raw.expect_close("raw", 1009).await;
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    expect_peer_left(&mut victim, "victim", "raw", LeaveReason::Disconnected).await;
    let mut unauth = RawWs::connect(server.signaling).await;
    unauth.send(&announced[1]).await.unwrap();
    unauth.expect_error("unauth", "too-large").await;
    unauth.expect_close("unauth", 1009).await;

    expect_silence(&mut victim, "victim").await;
    victim.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_cut_off_by_a_tcp_reset_are_cleaned_up() {
    // Per-address cap: control pair 2 + observer 1 + 20 attackers = 23; after the resets
    // all 21 slots must be free again.
    let server = start(|c| c.max_connections_per_ip = 24).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut observer = join(&server, "observer", "reset").await;
    let baseline = attack::total_connections(server.http).await;

    let mut sockets = Vec::new();
    for i in 0..10 {
        let user = format!("cut-{i}");
        sockets.push(raw_join(&server, &user, "reset").await);
        expect_peer_joined(&mut observer, "observer", &user).await;
    }
    for _ in 0..10 {
        sockets.push(RawWs::connect(server.signaling).await);
    }
    attack::wait_for_connections(server.http, baseline + 20).await;
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let cut = match i % 3 {
            0 => vec![0x81],                                 // one header byte
            1 => raw_frame(0x81, 1000, &[b'x'; 500]),        // half the payload
            _ => raw_frame(0x81, 70_000, &[])[..6].to_vec(), // half the extended length
        };
        ws.send(&cut).await.unwrap();
        ws.reset();
    }
    let mut left = std::collections::HashSet::new();
    while left.len() < 10 {
        match next(&mut observer, "observer").await {
            ServerMessage::PeerLeft { peer, reason, .. } => {
                assert_eq!(reason, LeaveReason::Disconnected);
                assert!(left.insert(peer.user_id.to_string()));
            }
            other => panic!("observer: expected peer-left, got {other:?}"),
        }
    }
    attack::wait_for_connections(server.http, baseline).await;
    let stats = attack::stats(server.http).await;
    assert_eq!(stats["server"]["peers"], 3, "{stats}");

    // Every per-address slot came back: 21 more connections fit, the 22nd does not.
    let mut again = Vec::new();
    for _ in 0..21 {
        again.push(RawWs::connect(server.signaling).await);
    }
    let tcp = TcpStream::connect(server.signaling).await.unwrap();
    match RawWs::upgrade(tcp, server.signaling).await {
        Upgrade::Refused { status, .. } => assert_eq!(status, 429),
        Upgrade::Accepted(_) => panic!("the per-address cap of 24 let a 25th connection in"),
    }
    drop(again);
    observer.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

// ---- Authentication and authorization -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_auth_is_accepted_before_auth_and_auth_only_once() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut victim = join(&server, "victim", "gate").await;

    let mut mallory = RawWs::connect(server.signaling).await;
    let before = [
        PRESENCE,
        r#"{"type":"cursor-update","data":{"line":1,"column":1}}"#,
        r#"{"type":"sdp-offer","data":{"peer":"victim","offer":{}}}"#,
        r#"{"type":"join-room","roomId":"gate"}"#,
        r#"{"type":"create-room","roomId":"gate"}"#,
        r#"{"type":"leave-room"}"#,
        r#"{"type":"pong"}"#,
        r#"{"type":"heartbeat"}"#,
    ];
    for text in before {
        mallory.send_text(text).await;
        mallory.expect_error(text, "not-authenticated").await;
    }
    expect_silence(&mut victim, "victim").await;
    mallory.expect_silence("mallory").await;
    let token = attack::token(server.http, "mallory", "gate", None).await;
    mallory.auth(&token, "mallory").await;
    expect_peer_joined(&mut victim, "victim", "mallory").await;

    // A second auth, even with another user's token or a garbage one, changes nothing.
    let bob = attack::token(server.http, "bob", "gate", None).await;
    for token in [token.as_str(), bob.as_str(), "garbage"] {
        mallory.send_text(&auth_text(token)).await;
        mallory
            .expect_error("second auth", "already-authenticated")
            .await;
    }
    mallory.send_text(PRESENCE).await;
    expect_update(&mut victim, "victim", UpdateKind::Presence, "mallory").await;
    expect_silence(&mut victim, "victim").await;
    victim.close().await.unwrap();
    drop(mallory);
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_4001_and_never_reach_the_room() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut alice = join(&server, "alice", "vault").await;
    let now = now_ms();

    let good = attack::token(server.http, "mallory", "vault", None).await;
    let (payload, signature) = good.split_once('.').unwrap();
    let mut flipped = signature.as_bytes().to_vec();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let forged = format!("{payload}.{}", String::from_utf8(flipped).unwrap());
    let other_secret = mint(
        "k1",
        b"another-secret-0123456789abcdef-0123",
        "mallory",
        "vault",
        now,
    );
    let unknown_key = mint("k9", SECRET, "mallory", "vault", now);
    let expired = mint("k1", SECRET, "mallory", "vault", now - 2 * 3_600_000);
    let early = mint("k1", SECRET, "mallory", "vault", now + 3_600_000);
    let revoked = attack::token(server.http, "mallory", "vault", None).await;
    let resp = attack::post(
        server.http,
        "/api/auth/revoke",
        &json!({"token": revoked}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", attack::body(&resp));
    let cases = [
        (forged.as_str(), "token-bad-signature"),
        (other_secret.as_str(), "token-bad-signature"),
        (unknown_key.as_str(), "token-unknown-key"),
        (expired.as_str(), "token-expired"),
        (early.as_str(), "token-not-yet-valid"),
        (revoked.as_str(), "token-revoked"),
        ("", "token-malformed"),
        ("abc", "token-malformed"),
        ("a.b.c", "token-malformed"),
        (payload, "token-malformed"),
    ];
    for (token, code) in cases {
        assert_token_refused(&server, token, code).await;
    }

    // A valid token for another room enters that room only.
    let elsewhere = attack::token(server.http, "mallory", "elsewhere", None).await;
    let mut mallory = attack::join(server.signaling, &elsewhere, "mallory").await;
    for text in [
        r#"{"type":"join-room","roomId":"vault"}"#,
        r#"{"type":"create-room","roomId":"vault"}"#,
    ] {
        mallory.send_text(text).await.unwrap();
        expect_error(&mut mallory, "mallory", "forbidden").await;
    }
    let peers = attack::body(&attack::get(server.http, "/api/rooms/vault/peers").await);
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");
    expect_silence(&mut alice, "alice").await;

    // The validate endpoint names who the token is not for.
    for (user, room, answer) in [
        ("mallory", "vault", json!({"valid": true})),
        (
            "alice",
            "vault",
            json!({"valid": false, "error": "token-wrong-user"}),
        ),
        (
            "mallory",
            "other",
            json!({"valid": false, "error": "token-wrong-room"}),
        ),
    ] {
        let body = json!({"token": good, "userId": user, "roomId": room});
        let resp = attack::post(server.http, "/api/auth/validate", &body, None).await;
        assert_eq!(resp.status, 200);
        assert_eq!(attack::body(&resp), answer, "{user} {room}");
    }
    let stats = attack::stats(server.http).await;
    assert!(
        stats["operations"]["authFailures"].as_u64().unwrap() >= 10,
        "{stats}"
    );
    mallory.close().await.unwrap();
    alice.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_user_id_is_replaced_by_the_senders() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut mallory = join(&server, "mallory", "masks").await;
    let mut victim = join(&server, "victim", "masks").await;
    expect_peer_joined(&mut mallory, "mallory", "victim").await;
    let mut carol = join(&server, "carol", "masks").await;
    expect_peer_joined(&mut mallory, "mallory", "carol").await;
    expect_peer_joined(&mut victim, "victim", "carol").await;

    let forged = [
        r#"{"type":"sdp-offer","userId":"carol","roomId":"control-room","data":{"peer":"victim","offer":{"type":"offer","sdp":"v=0"}}}"#,
        r#"{"userId":"carol","type":"ice-candidate","data":{"peer":"victim","candidate":{"candidate":""}}}"#,
        r#"{"type":"presence","userId":{"not":"a string"},"data":{"status":"idle"}}"#,
        r#"{"type":"cursor-update","userId":"control-a","token":"x","data":{"line":1,"column":2}}"#,
    ];
    for text in forged {
        mallory.send_text(text).await.unwrap();
        let got = next_text(&mut victim, "victim").await;
        let json: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(json["userId"], "mallory", "{got}");
        assert_eq!(json["roomId"], "masks", "{got}");
        assert_eq!(got.matches(r#""userId""#).count(), 1, "{got}");
        assert!(
            !got.contains("control-a") && !got.contains(r#""token""#),
            "{got}"
        );
    }
    // Carol got the two updates, also from mallory, and none of the signals.
    for kind in [UpdateKind::Presence, UpdateKind::Cursor] {
        expect_update(&mut carol, "carol", kind, "mallory").await;
    }
    expect_silence(&mut carol, "carol").await;
    for client in [mallory, victim, carol] {
        client.close().await.unwrap();
    }
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_never_cross_rooms() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut alice = join(&server, "alice", "room-a").await;
    let mut bob = join(&server, "bob", "room-a").await;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    let mut carol = join(&server, "carol", "room-b").await;

    // Carol of another room, the control pair, nobody, and alice herself.
    for target in ["carol", "control-a", "control-b", "nobody", "alice"] {
        for kind in [
            SignalKind::Offer,
            SignalKind::Answer,
            SignalKind::IceCandidate,
        ] {
            alice
                .signal(kind, target, json!({"type": "offer", "sdp": "v=0"}))
                .await
                .unwrap();
            let message = expect_error(&mut alice, "alice", "peer-not-found").await;
            assert!(message.len() < 1024);
        }
    }
    // Updates go to alice's room only.
    alice.send_text(PRESENCE).await.unwrap();
    expect_update(&mut bob, "bob", UpdateKind::Presence, "alice").await;
    carol
        .send_text(r#"{"type":"cursor-update","data":{"line":3,"column":4}}"#)
        .await
        .unwrap();
    expect_silence(&mut carol, "carol").await;
    expect_silence(&mut alice, "alice").await;
    expect_silence(&mut bob, "bob").await;
    // Bob can still be reached.
    alice
        .signal(
            SignalKind::Offer,
            "bob",
            json!({"type": "offer", "sdp": "v=0"}),
        )
        .await
        .unwrap();
    expect_signal(&mut bob, "bob", SignalKind::Offer, "alice").await;
    for client in [alice, bob, carol] {
        client.close().await.unwrap();
    }
    watch.finish(0).await;
    server.stop().await;
}

const ADMIN_KEY: &str = "adversarial-admin-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_refuse_a_missing_or_wrong_admin_key() {
    let server = start(|c| c.admin_key = Some(ADMIN_KEY.to_owned())).await;
    let watch = Watch::start_with_key(server.http, server.signaling, Some(ADMIN_KEY)).await;
    let token = attack::token(server.http, "victim", "target", Some(ADMIN_KEY)).await;
    let mut victim = attack::join(server.signaling, &token, "victim").await;

    let wrong = format!("Bearer {ADMIN_KEY}x");
    let short = format!("Bearer {}", &ADMIN_KEY[..ADMIN_KEY.len() - 1]);
    let basic = format!("Basic {ADMIN_KEY}");
    let refusals = [
        (None, 401, "unauthorized"),
        (Some(basic.as_str()), 401, "unauthorized"),
        (Some("Bearer wrong"), 403, "forbidden"),
        (Some(wrong.as_str()), 403, "forbidden"),
        (Some(short.as_str()), 403, "forbidden"),
    ];
    for (authorization, status, code) in refusals {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| ("Authorization", value))
            .into_iter()
            .collect();
        for path in ["/api/rooms/target", "/api/rooms/control-room"] {
            let resp = attack::request(server.http, "DELETE", path, &headers, None).await;
            attack::assert_http_error(&resp, status, code);
        }
    }
    // The other admin routes too.
    let body = json!({"userId": "mallory", "roomId": "target"});
    let resp = attack::post(server.http, "/api/auth/token", &body, None).await;
    attack::assert_http_error(&resp, 401, "unauthorized");
    let resp = attack::post(server.http, "/api/auth/token", &body, Some("wrong")).await;
    attack::assert_http_error(&resp, 403, "forbidden");
    let resp = attack::post(
        server.http,
        "/api/auth/revoke",
        &json!({"token": token}),
        None,
    )
    .await;
    attack::assert_http_error(&resp, 401, "unauthorized");
    let room = json!({"roomId": "new", "roomName": "n", "hostId": "mallory", "hostName": "M"});
    let resp = attack::post(server.http, "/api/rooms", &room, None).await;
    attack::assert_http_error(&resp, 401, "unauthorized");

    // Nothing happened to the room.
    expect_silence(&mut victim, "victim").await;
    assert_eq!(
        attack::get(server.http, "/api/rooms/target").await.status,
        200
    );
    assert_eq!(attack::get(server.http, "/api/rooms/new").await.status, 404);

    // With the key, the room is deleted and its peer told.
    let right = format!("Bearer {ADMIN_KEY}");
    let resp = attack::request(
        server.http,
        "DELETE",
        "/api/rooms/target",
        &[("Authorization", right.as_str())],
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", attack::body(&resp));
    match next(&mut victim, "victim").await {
        ServerMessage::RoomClosed { reason, .. } => assert_eq!(reason, RoomCloseReason::Deleted),
        other => panic!("victim: expected room-closed, got {other:?}"),
    }
    assert_eq!(expect_end(&mut victim, "victim").await, Some(4003));
    watch.finish(0).await;
    server.stop().await;
}

// ---- Floods -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_authenticate_are_closed_4002() {
    let server = start(|c| {
        c.auth_timeout = Duration::from_millis(500);
        c.max_connections_per_ip = 0;
    })
    .await;
    let watch = Watch::start(server.http, server.signaling).await;
    let signaling = server.signaling;
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            tokio::spawn(async move {
                // Before the connect: the server's deadline can only be later.
                let opened = Instant::now();
                let mut ws = RawWs::connect(signaling).await;
                if i % 3 == 0 {
                    ws.send_text(PRESENCE).await;
                }
                let (texts, code) = ws.end("idle socket").await;
                (i, texts, code, opened.elapsed())
            })
        })
        .collect();
    for task in tasks {
        let (i, texts, code, waited) = task.await.unwrap();
        assert_eq!(code, Some(4002), "socket {i}: {texts:?}");
        let errors = if i % 3 == 0 { 2 } else { 1 };
        assert_eq!(texts.len(), errors, "socket {i}: {texts:?}");
        for text in &texts {
            assert!(
                text.contains(r#""code":"not-authenticated""#),
                "socket {i}: {text}"
            );
        }
        assert!(
            waited >= Duration::from_millis(490),
            "socket {i}: closed after {waited:?}"
        );
    }
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_requests_are_dropped_at_the_header_timeout() {
    let server = start(|c| c.header_read_timeout = Duration::from_millis(500)).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let signaling = server.signaling;
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {signaling}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut tasks = Vec::new();
    for i in 0..200 {
        let head = head.clone();
        // Before the connect: the server's header timer can only start later.
        let started = Instant::now();
        let tcp = TcpStream::connect(signaling).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let (mut read, mut write) = tcp.into_split();
            match i % 8 {
                // Nothing at all.
                0 => {}
                // One byte every 100 ms: it would take 16 s to finish.
                1 => {
                    let trickle = async {
                        for byte in head.bytes() {
                            if write.write_all(&[byte]).await.is_err() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    };
                    let mut sink = [0u8; 1024];
                    let ended = tokio::select! {
                        () = trickle => false,
                        read = tokio::time::timeout(WAIT, read.read(&mut sink)) => read.is_ok(),
                    };
                    return (i, started.elapsed(), ended);
                }
                // Most of the headers, then nothing.
                _ => write
                    .write_all(&head.as_bytes()[..head.len() - 30])
                    .await
                    .unwrap(),
            }
            let mut tcp = read.reunite(write).unwrap();
            let ended = attack::ends_within(&mut tcp, WAIT).await;
            (i, started.elapsed(), ended)
        }));
    }

    // While they hang: a fresh client connects and the API answers.
    let mut fresh = join(&server, "fresh", "fresh-room").await;
    fresh.send_text(PRESENCE).await.unwrap();
    assert_eq!(attack::get(server.http, "/health").await.status, 200);

    for task in tasks {
        let (i, took, ended) = task.await.unwrap();
        assert!(ended, "socket {i}: still open after {WAIT:?}");
        assert!(
            took >= Duration::from_millis(490),
            "socket {i}: dropped after {took:?}"
        );
        assert!(
            took < Duration::from_secs(3),
            "socket {i}: dropped after {took:?}"
        );
    }
    expect_silence(&mut fresh, "fresh").await;
    fresh.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_flood_is_rate_limited_then_closed_4029() {
    let (rate, burst) = (50u32, 100u32);
    let server = start(|c| {
        c.messages_per_second = rate;
        c.message_burst = burst;
        c.rate_limit_strikes = 50;
    })
    .await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut watcher = join(&server, "watcher", "flood").await;
    let flooder = raw_join(&server, "flooder", "flood").await;
    expect_peer_joined(&mut watcher, "watcher", "flooder").await;

    let started = Instant::now();
    let (tcp, mut buf) = flooder.into_parts();
    let (mut read, mut write) = tcp.into_split();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut sent = 0u32;
            for line in 0..5_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let text =
                    format!(r#"{{"type":"cursor-update","data":{{"line":{line},"column":0}}}}"#);
                if write
                    .write_all(&frame(true, OP_TEXT, text.as_bytes()))
                    .await
                    .is_err()
                {
                    break;
                }
                sent += 1;
            }
            sent
        }
    });
    // The flooder's side: `rate-limited` errors, then 4029.
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + WAIT;
    let mut errors = 0;
    let close = 'read: loop {
        let n = match tokio::time::timeout_at(deadline, read.read(&mut chunk)).await {
            Err(_) => panic!("flooder: not closed in {WAIT:?}; {errors} errors"),
            Ok(Ok(0) | Err(_)) => break None,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 2 {
            let len = usize::from(buf[1] & 0x7f);
            assert!(len < 126, "a long frame to the flooder");
            if buf.len() < 2 + len {
                break;
            }
            let payload = buf[2..2 + len].to_vec();
            let opcode = buf[0] & 0x0f;
            buf.drain(..2 + len);
            match opcode {
                OP_CLOSE => break 'read Some(u16::from_be_bytes([payload[0], payload[1]])),
                OP_TEXT => {
                    let text = String::from_utf8(payload).unwrap();
                    if text != r#"{"type":"heartbeat"}"# {
                        assert!(text.contains(r#""code":"rate-limited""#), "flooder: {text}");
                        errors += 1;
                    }
                }
                _ => {}
            }
        }
    };
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = writer.await.unwrap();
    assert_eq!(close, Some(4029), "flooder: {errors} errors");
    assert!(
        (1..=50).contains(&errors),
        "flooder: {errors} rate-limited errors"
    );

    // The watcher got at most the burst plus the rate over the flood's duration, in order.
    let mut relayed = 0u64;
    let mut last = None;
    loop {
        match next(&mut watcher, "watcher").await {
            ServerMessage::Update {
                kind: UpdateKind::Cursor,
                from,
                data,
                ..
            } if from.as_str() == "flooder" => {
                let line = serde_json::from_str::<Value>(data.get()).unwrap()["line"]
                    .as_u64()
                    .unwrap();
                assert!(
                    last.is_none_or(|l| line > l),
                    "out of order: {line} after {last:?}"
                );
                last = Some(line);
                relayed += 1;
            }
            ServerMessage::PeerLeft { peer, .. } if peer.user_id.as_str() == "flooder" => break,
            other => panic!("watcher: expected cursor updates, got {other:?}"),
        }
    }
    let allowed = u64::from(burst) + (f64::from(rate) * elapsed.as_secs_f64()).ceil() as u64 + 1;
    assert!(
        relayed <= allowed,
        "{relayed} of {sent} updates relayed in {elapsed:?}; at most {allowed} allowed"
    );
    // The flooder's `auth` took one message of the burst.
    assert!(
        relayed >= u64::from(burst) - 1,
        "only {relayed} relayed: the burst is {burst}"
    );
    watcher.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_closed_and_its_sender_carries_on() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut xavier = join(&server, "xavier", "slow").await;
    let mut carol = join(&server, "carol", "slow").await;
    expect_peer_joined(&mut xavier, "xavier", "carol").await;
    let token = attack::token(server.http, "sam", "slow", None).await;
    let mut sam = RawWs::connect_small_window(server.signaling).await;
    sam.send_text(&auth_text(&token)).await;
    expect_peer_joined(&mut xavier, "xavier", "sam").await;
    expect_peer_joined(&mut carol, "carol", "sam").await;

    // ~60 KiB offers to sam, who reads nothing; a small numbered one to carol every fifth.
    let sdp = "a=candidate ".repeat(60 * 1024 / 12);
    let mut seq = 0u64;
    let mut closed = false;
    let mut sam_left = false;
    for round in 0..200 {
        xavier
            .signal(
                SignalKind::Offer,
                "sam",
                json!({"type": "offer", "sdp": sdp}),
            )
            .await
            .unwrap();
        if round % 5 == 4 {
            xavier
                .signal(
                    SignalKind::Offer,
                    "carol",
                    json!({"type": "offer", "seq": seq}),
                )
                .await
                .unwrap();
            // Sam's departure may reach carol before the offer.
            let data = match next(&mut carol, "carol").await {
                ServerMessage::PeerLeft { peer, reason, .. } if peer.user_id.as_str() == "sam" => {
                    assert_eq!(reason, LeaveReason::Disconnected);
                    sam_left = true;
                    expect_signal(&mut carol, "carol", SignalKind::Offer, "xavier").await
                }
                ServerMessage::Signal {
                    kind: SignalKind::Offer,
                    from,
                    data,
                    ..
                } if from.as_str() == "xavier" => data.get().to_owned(),
                other => panic!("carol: expected xavier's offer {seq}, got {other:?}"),
            };
            let data: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(data["offer"]["seq"], seq, "carol: lost or reordered");
            seq += 1;
            let stats = attack::stats(server.http).await;
            if stats["operations"]["slowConsumersClosed"] != 0 {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "sam was never closed as a slow consumer");
    let (_, code) = sam.end("sam").await;
    assert!(
        matches!(code, None | Some(4008)),
        "sam: closed with {code:?}"
    );
    if !sam_left {
        expect_peer_left(&mut carol, "carol", "sam", LeaveReason::Disconnected).await;
    }

    // Xavier keeps relaying to carol, in order.
    for _ in 0..10 {
        xavier
            .signal(
                SignalKind::Offer,
                "carol",
                json!({"type": "offer", "seq": seq}),
            )
            .await
            .unwrap();
        let data = expect_signal(&mut carol, "carol", SignalKind::Offer, "xavier").await;
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["offer"]["seq"], seq);
        seq += 1;
    }
    // What xavier was told: sam left, and offers after that found nobody.
    loop {
        match next(&mut xavier, "xavier").await {
            ServerMessage::Error { code, .. } if code.as_str() == "peer-not-found" => continue,
            ServerMessage::PeerLeft { peer, reason, .. } if peer.user_id.as_str() == "sam" => {
                assert_eq!(reason, LeaveReason::Disconnected);
                break;
            }
            other => panic!("xavier: expected peer-left sam, got {other:?}"),
        }
    }
    let stats = attack::stats(server.http).await;
    assert!(
        stats["operations"]["slowConsumersClosed"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    xavier.close().await.unwrap();
    carol.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_hoard_rooms() {
    let server = start(|c| c.core.max_rooms_per_user = 3).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut rooms = Vec::new();
    for i in 1..=3 {
        rooms.push(join(&server, "hoarder", &format!("hoard-{i}")).await);
    }
    let token = attack::token(server.http, "hoarder", "hoard-4", None).await;
    let mut fourth = RawWs::connect(server.signaling).await;
    fourth.send_text(&auth_text(&token)).await;
    fourth
        .expect_error("fourth room", "too-many-rooms-for-user")
        .await;
    fourth.expect_close("fourth room", 1008).await;
    let room = json!({"roomId": "hoard-5", "roomName": "r", "hostId": "hoarder", "hostName": "H"});
    let resp = attack::post(server.http, "/api/rooms", &room, None).await;
    attack::assert_http_error(&resp, 429, "too-many-rooms-for-user");
    assert_eq!(
        attack::get(server.http, "/api/rooms/hoard-4").await.status,
        404
    );

    // Others are not affected; and once one of the rooms is gone, the hoarder may create one.
    let other = join(&server, "other", "hoard-4").await;
    rooms.remove(0).close().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while attack::get(server.http, "/api/rooms/hoard-1").await.status != 404 {
        assert!(Instant::now() < deadline, "hoard-1 was never removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rooms.push(join(&server, "hoarder", "hoard-6").await);
    let token = attack::token(server.http, "hoarder", "hoard-7", None).await;
    let mut again = RawWs::connect(server.signaling).await;
    again.send_text(&auth_text(&token)).await;
    again.expect_error("again", "too-many-rooms-for-user").await;
    again.expect_close("again", 1008).await;
    for client in rooms.into_iter().chain([other]) {
        client.close().await.unwrap();
    }
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_capped_with_429() {
    let cap = 8;
    let server = start(|c| c.max_connections_per_ip = cap).await;
    let watch = Watch::start(server.http, server.signaling).await;
    // The attacker comes from 127.0.0.2; the control pair (127.0.0.1) has its own count.
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let upgrade = |signaling: SocketAddr| async move {
        RawWs::upgrade(RawWs::tcp_from(attacker, signaling).await, signaling).await
    };
    let mut open = Vec::new();
    for _ in 0..cap {
        match upgrade(server.signaling).await {
            Upgrade::Accepted(ws) => open.push(ws),
            Upgrade::Refused { status, .. } => panic!("refused below the cap: {status}"),
        }
    }
    for _ in 0..3 {
        match upgrade(server.signaling).await {
            Upgrade::Refused { status, body } => {
                assert_eq!(status, 429);
                let body: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(body["error"]["code"], "too-many-connections", "{body}");
            }
            Upgrade::Accepted(_) => panic!("the cap of {cap} let another connection in"),
        }
    }
    // Another address is not affected.
    let mut fresh = join(&server, "fresh", "fresh-room").await;

    // Close three: three new ones succeed, then the cap holds again.
    for ws in open.drain(..3) {
        ws.reset();
    }
    let deadline = Instant::now() + WAIT;
    while open.len() < cap {
        match upgrade(server.signaling).await {
            Upgrade::Accepted(ws) => open.push(ws),
            Upgrade::Refused { .. } => {
                assert!(
                    Instant::now() < deadline,
                    "closed slots were never released"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(matches!(
        upgrade(server.signaling).await,
        Upgrade::Refused { status: 429, .. }
    ));
    expect_silence(&mut fresh, "fresh").await;
    drop(open);
    fresh.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

/// Simultaneous upgrade bursts run by `the_connection_limit_answers_503`.
const BURST_ROUNDS: usize = 30;

/// Connects `n` sockets, then sends all their upgrade requests at once; the accepted ones.
async fn upgrade_burst(signaling: SocketAddr, n: usize) -> Vec<RawWs> {
    let (go, ready) = tokio::sync::watch::channel(false);
    let mut burst = Vec::new();
    for _ in 0..n {
        let tcp = TcpStream::connect(signaling).await.unwrap();
        let mut ready = ready.clone();
        burst.push(tokio::spawn(async move {
            ready.wait_for(|go| *go).await.unwrap();
            RawWs::upgrade(tcp, signaling).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    go.send(true).unwrap();
    let mut accepted = Vec::new();
    for task in burst {
        match task.await.unwrap() {
            Upgrade::Accepted(ws) => accepted.push(ws),
            Upgrade::Refused { status, .. } => assert_eq!(status, 503),
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn the_connection_limit_answers_503() {
    let max = 8;
    let server = start(|c| {
        c.max_connections = max;
        c.max_connections_per_ip = 0;
        c.auth_timeout = Duration::from_secs(60);
    })
    .await;
    let watch = Watch::start(server.http, server.signaling).await;
    let base = watch.connections() as usize;
    let mut open = Vec::new();
    for _ in base..max {
        open.push(RawWs::connect(server.signaling).await);
    }
    let refused = |signaling: SocketAddr| async move {
        match RawWs::upgrade(TcpStream::connect(signaling).await.unwrap(), signaling).await {
            Upgrade::Refused { status, body } => {
                assert_eq!(status, 503);
                let body: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(body["error"]["code"], "too-many-connections", "{body}");
            }
            Upgrade::Accepted(_) => panic!("an upgrade went through at the limit"),
        }
    };
    refused(server.signaling).await;
    refused(server.signaling).await;
    // Plain HTTP is still served at the limit.
    assert_eq!(attack::get(server.http, "/health").await.status, 200);

    // Close two: two new ones fit, then the limit holds again.
    for ws in open.drain(..2) {
        drop(ws);
    }
    let deadline = Instant::now() + WAIT;
    while open.len() < max - base {
        let tcp = TcpStream::connect(server.signaling).await.unwrap();
        match RawWs::upgrade(tcp, server.signaling).await {
            Upgrade::Accepted(ws) => open.push(ws),
            Upgrade::Refused { status, .. } => {
                assert_eq!(status, 503);
                assert!(
                    Instant::now() < deadline,
                    "closed connections never freed their slots"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    refused(server.signaling).await;

    // Bursts of simultaneous upgrades must not overshoot the limit either. The race this
    // looks for is narrow, so the test runs several bursts on more worker threads.
    drop(open);
    let mut overshoots = Vec::new();
    for round in 0..BURST_ROUNDS {
        attack::wait_for_connections(server.http, base as u64).await;
        let accepted = upgrade_burst(server.signaling, 40).await;
        let total = attack::total_connections(server.http).await;
        if accepted.len() > max - base || total > max as u64 {
            overshoots.push(format!(
                "round {round}: {} of 40 accepted with room for {}, totalConnections {total}",
                accepted.len(),
                max - base
            ));
        }
    }
    attack::wait_for_connections(server.http, base as u64).await;
    assert!(
        overshoots.is_empty(),
        "simultaneous upgrades went past max_connections = {max}: {overshoots:#?}"
    );
    watch.finish(0).await;
    server.stop().await;
}

/// The answer written to a TCP socket refused before any parsing (`server.rs`).
const FIXED_REFUSAL: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 69\r\nconnection: close\r\n\r\n\
{\"error\":{\"code\":\"too-many-connections\",\"message\":\"server is full\"}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_past_the_headroom_get_the_fixed_503() {
    // TCP sockets are capped at max_connections + 256: here 4 + 256, of which the
    // control pair's two WebSockets use two, so 258 idle sockets fit.
    let max = 4;
    let server = start(|c| {
        c.max_connections = max;
        c.header_read_timeout = Duration::from_secs(30);
    })
    .await;
    let watch = Watch::start(server.http, server.signaling).await;
    let room = max + 256 - watch.connections() as usize;
    let mut idle = Vec::new();
    for _ in 0..room + 12 {
        idle.push(TcpStream::connect(server.http).await.unwrap());
        // Lets the server count the socket before the next one is accepted.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reads: Vec<_> = idle
        .into_iter()
        .map(|mut tcp| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let read = tokio::time::timeout(QUIET, tcp.read_to_end(&mut got)).await;
                (read.is_ok(), got, tcp)
            })
        })
        .collect();
    let mut refused = 0;
    let mut held = Vec::new();
    for task in reads {
        let (ended, got, tcp) = task.await.unwrap();
        if ended {
            assert_eq!(String::from_utf8_lossy(&got), FIXED_REFUSAL);
            refused += 1;
        } else {
            assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
            held.push(tcp);
        }
    }
    assert!(
        held.len() <= room + 2 && refused >= 10,
        "{} idle sockets held, {refused} refused; the cap leaves room for {room}",
        held.len()
    );
    // Once they go, the server answers again; the control pair never noticed.
    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        let call = octate_client::http_request(server.http, "GET", "/health", &[], None);
        if let Ok(Ok(resp)) = tokio::time::timeout(WAIT, call).await
            && resp.status == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the server never answered again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.finish(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_from_a_socket_that_never_reads_is_cut_off() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut victim = join(&server, "victim", "pings").await;
    let mut pinger = raw_join(&server, "pinger", "pings").await;
    expect_peer_joined(&mut victim, "victim", "pinger").await;

    // 125-byte pings owe 125-byte pongs; the pinger reads none of them.
    let ping = frame(true, OP_PING, &[b'p'; 125]);
    let mut sent = 0;
    for _ in 0..400 {
        let batch: Vec<u8> = ping.repeat(500);
        match tokio::time::timeout(Duration::from_secs(1), pinger.send(&batch)).await {
            Ok(Ok(())) => sent += 500,
            // The server stopped reading or closed the socket.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    assert!(
        sent < 200_000,
        "the server took {sent} pings without reading... or answering"
    );
    expect_peer_left(&mut victim, "victim", "pinger", LeaveReason::Disconnected).await;
    drop(pinger);
    victim.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}

/// A text frame split in two that the server must not mistake for two messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_fragmented_with_pings_in_between_is_reassembled() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let mut victim = join(&server, "victim", "pieces").await;
    let mut mallory = raw_join(&server, "mallory", "pieces").await;
    expect_peer_joined(&mut victim, "victim", "mallory").await;
    let text = r#"{"type":"presence","data":{"status":"idle"}}"#.as_bytes();
    let mut bytes = Vec::new();
    for (i, piece) in text.chunks(7).enumerate() {
        let opcode = if i == 0 { OP_TEXT } else { OP_CONT };
        bytes.extend(frame(false, opcode, piece));
        bytes.extend(frame(true, OP_PING, b"between"));
    }
    bytes.extend(frame(true, OP_CONT, b""));
    mallory.send(&bytes).await.unwrap();
    let data = expect_update(&mut victim, "victim", UpdateKind::Presence, "mallory").await;
    assert_eq!(data, r#"{"status":"idle"}"#);
    mallory.expect_silence("mallory").await;
    drop(mallory);
    expect_peer_left(&mut victim, "victim", "mallory", LeaveReason::Disconnected).await;
    victim.close().await.unwrap();
    watch.finish(0).await;
    server.stop().await;
}
