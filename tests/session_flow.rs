//! The seed's whole signaling session over real sockets, and how the server answers
//! messages that break the protocol.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use octate_client::Client;
use octate_protocol::{
    DEFAULT_MAX_MESSAGE_BYTES, ErrorCode, LeaveReason, RoomState, ServerMessage, SignalKind,
    UpdateKind,
};
use octate_test::peers::{
    self, Joined, expect_close, expect_error, expect_host_changed, expect_peer_joined,
    expect_peer_left, expect_silence, next, next_text,
};
use octate_test::server::{TestServer, fast_config};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "flow-room";

/// JSON whitespace that a re-encoding server would not keep.
const ODD_WS: &str = "\t\r\n ";

/// A signal's `data` written the way no serializer writes it: odd whitespace, the
/// target in the middle, escapes and number spellings a re-encoder would normalize.
fn odd_signal_data(kind: SignalKind, to: &str, seq: u32) -> String {
    let (field, payload) = match kind {
        SignalKind::Offer => (
            "offer",
            format!(
                r#"{{"sdp":"v=0\r\no=- {seq} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n","type":"offer"}}"#
            ),
        ),
        SignalKind::Answer => (
            "answer",
            format!(r#"{{ "type" : "answer", "sdp":"v=0\r\no=- {seq} 1 IN IP4 127.0.0.1\r\n" }}"#),
        ),
        SignalKind::IceCandidate => (
            "candidate",
            format!(
                r#"{{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 {seq} typ srflx","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Xp3r"}}"#
            ),
        ),
    };
    format!(
        r#"{{ "z":[1 ,2.50e0,{ODD_WS}{{"n":null}}] ,{ODD_WS}"peer" : "{to}","{field}":{payload}, "esc":"caf\u00e9 \"q\" \/", "seq":{seq}{ODD_WS}}}"#
    )
}

/// Sends a signal as raw text with a forged `"userId":"mallory"` and checks that `to`
/// receives it stamped with the real sender and with `data` byte for byte.
async fn relay_signal(
    from: &mut Client,
    from_id: &str,
    to: &mut Client,
    to_id: &str,
    kind: SignalKind,
    seq: u32,
) {
    let data = odd_signal_data(kind, to_id, seq);
    let text = format!(
        r#"{{"userId":"mallory","type":"{}","roomId":"not-this-room","data":{data}}}"#,
        kind.as_str()
    );
    from.send_text(text).await.unwrap();
    let got = next_text(to, to_id).await;
    assert!(
        !got.contains("mallory"),
        "{to_id}: a client's userId was relayed: {got}"
    );
    match ServerMessage::decode(got.as_bytes()).unwrap() {
        ServerMessage::Signal {
            kind: got_kind,
            from,
            room_id,
            data: got_data,
        } => {
            assert_eq!(got_kind, kind, "{to_id}: {got}");
            assert_eq!(
                from.as_str(),
                from_id,
                "{to_id}: sender stamped from the token"
            );
            assert_eq!(room_id.as_str(), ROOM);
            assert_eq!(
                got_data.get(),
                data,
                "{to_id}: data must be relayed byte for byte"
            );
        }
        other => panic!(
            "{to_id}: expected {} from {from_id}, got {}",
            kind.as_str(),
            peers::brief(&other)
        ),
    }
}

/// Two distinct peers of `clients`, mutably.
fn pair(clients: &mut [Client], i: usize, j: usize) -> (&mut Client, &mut Client) {
    assert!(i < j);
    let (left, right) = clients.split_at_mut(j);
    (&mut left[i], &mut right[0])
}

/// Asserts the next message of `client` is an update of `kind` from `from` with `data` unchanged.
async fn expect_update(client: &mut Client, who: &str, kind: UpdateKind, from: &str, data: &str) {
    match next(client, who).await {
        ServerMessage::Update {
            kind: got,
            from: sender,
            data: got_data,
            ..
        } if got == kind && sender.as_str() == from => {
            assert_eq!(
                got_data.get(),
                data,
                "{who}: update data relayed byte for byte"
            );
        }
        other => panic!(
            "{who}: expected {} from {from}, got {}",
            kind.as_str(),
            peers::brief(&other)
        ),
    }
}

fn user_ids(room: &octate_protocol::RoomMetadata) -> Vec<&str> {
    room.peers.iter().map(|p| p.user_id.as_str()).collect()
}

async fn get_room(server: &TestServer) -> (u16, Value) {
    let resp = peers::get(server.http, &format!("/api/rooms/{ROOM}")).await;
    (resp.status, peers::body(&resp))
}

#[tokio::test]
async fn whole_session_of_three_peers() {
    let server = TestServer::start(fast_config()).await;
    let url = server.ws_url();

    // Tokens come from the HTTP API, valid one hour by default.
    let resp = peers::post(
        server.http,
        "/api/auth/token",
        &json!({"userId": "alice", "roomId": ROOM}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200);
    let issued = peers::body(&resp);
    assert_eq!(
        issued["expiresAt"].as_u64().unwrap() - issued["issuedAt"].as_u64().unwrap(),
        3_600_000
    );
    assert!(issued["tokenId"].is_string());
    let token_a = issued["token"].as_str().unwrap().to_owned();
    let token_b = server.token("bob", ROOM).await;
    let token_c = server.token("carol", ROOM).await;

    // The first peer creates the room and hosts it.
    let Joined {
        client: alice,
        room,
        others,
    } = peers::join(&url, &token_a, "alice", Some("Alice")).await;
    assert_eq!(room.room_id.as_str(), ROOM);
    assert_eq!(
        room.room_name, ROOM,
        "a room without a name is named after its id"
    );
    assert_eq!(room.host_id.as_str(), "alice");
    assert_eq!(room.host_name, "Alice");
    assert_eq!(room.state, RoomState::Active);
    assert_eq!((room.peer_count, user_ids(&room)), (1, vec!["alice"]));
    assert!(room.peers[0].is_host);
    assert_eq!(room.peers[0].user_name, "Alice");
    assert!(others.is_empty(), "nobody else to connect to: {others:?}");

    // Two more peers join; each gets auth-ok, the others get peer-joined.
    let Joined {
        client: mut bob,
        room,
        others,
    } = peers::join(&url, &token_b, "bob", Some("Bob")).await;
    let mut alice = alice;
    assert_eq!(
        (room.peer_count, user_ids(&room)),
        (2, vec!["alice", "bob"])
    );
    assert_eq!(room.host_id.as_str(), "alice");
    assert_eq!(others, ["alice"]);
    assert!(!room.peers[1].is_host);
    let peer = expect_peer_joined(&mut alice, "alice", "bob").await;
    assert_eq!((peer.user_name.as_str(), peer.is_host), ("Bob", false));

    let Joined {
        client: carol,
        room,
        others,
    } = peers::join(&url, &token_c, "carol", None).await;
    assert_eq!(
        (room.peer_count, user_ids(&room)),
        (3, vec!["alice", "bob", "carol"])
    );
    assert_eq!(others, ["alice", "bob"]);
    assert_eq!(
        room.peers[2].user_name, "carol",
        "a user without a name shows under its id"
    );
    for (client, who) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        expect_peer_joined(client, who, "carol").await;
    }
    let (status, meta) = get_room(&server).await;
    assert_eq!((status, meta["peerCount"].as_u64()), (200, Some(3)));

    // Full mesh: offer, answer and ICE both ways between every pair.
    let ids = ["alice", "bob", "carol"];
    let mut clients = [alice, bob, carol];
    let mut seq = 0;
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        let (x, y) = pair(&mut clients, i, j);
        let (xi, yi) = (ids[i], ids[j]);
        seq += 1;
        relay_signal(x, xi, y, yi, SignalKind::Offer, seq).await;
        relay_signal(y, yi, x, xi, SignalKind::Answer, seq).await;
        relay_signal(x, xi, y, yi, SignalKind::IceCandidate, seq).await;
        relay_signal(y, yi, x, xi, SignalKind::IceCandidate, seq).await;
    }

    // Updates reach the two others and not the sender. Each peer's next message is
    // checked, so a stray signal or an echo queued earlier would show up here.
    let [alice, bob, carol] = &mut clients;
    let presence = r#"{"status":"idle" ,"extra":{"k":[true, 1.0]}}"#;
    alice
        .send_text(format!(
            r#"{{"type":"presence","userId":"mallory","data":{presence}}}"#
        ))
        .await
        .unwrap();
    expect_update(bob, "bob", UpdateKind::Presence, "alice", presence).await;
    expect_update(carol, "carol", UpdateKind::Presence, "alice", presence).await;
    let cursor_b = r#"{"line":42,"column":7}"#;
    bob.send_text(format!(r#"{{"type":"cursor-update","data":{cursor_b}}}"#))
        .await
        .unwrap();
    expect_update(alice, "alice", UpdateKind::Cursor, "bob", cursor_b).await;
    expect_update(carol, "carol", UpdateKind::Cursor, "bob", cursor_b).await;
    let cursor_c = r#"{ "column" : 0, "line" : 1 }"#;
    carol
        .send_text(format!(r#"{{"type":"cursor-update","data":{cursor_c}}}"#))
        .await
        .unwrap();
    expect_update(alice, "alice", UpdateKind::Cursor, "carol", cursor_c).await;
    expect_update(bob, "bob", UpdateKind::Cursor, "carol", cursor_c).await;
    expect_silence(carol, "carol").await;

    // Leave the room and come back on the same connection.
    bob.send_text(r#"{"type":"leave-room"}"#).await.unwrap();
    match next(bob, "bob").await {
        ServerMessage::RoomLeft { room_id } => assert_eq!(room_id.as_str(), ROOM),
        other => panic!("bob: expected room-left, got {}", peers::brief(&other)),
    }
    expect_peer_left(alice, "alice", "bob", LeaveReason::Left).await;
    expect_peer_left(carol, "carol", "bob", LeaveReason::Left).await;
    bob.send_text(r#"{"type":"presence","data":{"status":"away"}}"#)
        .await
        .unwrap();
    expect_error(bob, "bob", ErrorCode::NotInRoom).await;
    bob.send_text(format!(
        r#"{{"type":"join-room","roomId":"{ROOM}","data":{{"userName":"Bobby"}}}}"#
    ))
    .await
    .unwrap();
    match next(bob, "bob").await {
        ServerMessage::RoomJoined { user_id, room, .. } => {
            assert_eq!(user_id.as_str(), "bob");
            assert_eq!(
                user_ids(&room),
                ["alice", "carol", "bob"],
                "bob is now the newest peer"
            );
            assert_eq!(room.host_id.as_str(), "alice");
        }
        other => panic!("bob: expected room-joined, got {}", peers::brief(&other)),
    }
    for (client, who) in [(&mut *alice, "alice"), (&mut *carol, "carol")] {
        let peer = expect_peer_joined(client, who, "bob").await;
        assert_eq!(peer.user_name, "Bobby");
    }

    // The host leaves: the longest-connected peer (carol, not the re-joined bob) hosts.
    alice.send_text(r#"{"type":"leave-room"}"#).await.unwrap();
    assert!(matches!(
        next(alice, "alice").await,
        ServerMessage::RoomLeft { .. }
    ));
    for (client, who) in [(&mut *bob, "bob"), (&mut *carol, "carol")] {
        expect_peer_left(client, who, "alice", LeaveReason::Left).await;
        expect_host_changed(client, who, "carol").await;
    }
    let (_, meta) = get_room(&server).await;
    assert_eq!(meta["hostId"], "carol");
    assert_eq!(meta["peers"][0]["userId"], "carol");
    assert_eq!(meta["peers"][0]["isHost"], true);
    assert_eq!(meta["peers"][1]["isHost"], false);

    // A peer vanishes without a close frame: the others hear it disconnected.
    let [alice, bob, carol] = clients;
    alice.close().await.unwrap();
    bob.abort();
    let mut carol = carol;
    expect_peer_left(&mut carol, "carol", "bob", LeaveReason::Disconnected).await;

    // The last peer leaves: the room is gone at once.
    carol.send_text(r#"{"type":"leave-room"}"#).await.unwrap();
    assert!(matches!(
        next(&mut carol, "carol").await,
        ServerMessage::RoomLeft { .. }
    ));
    let (status, body) = get_room(&server).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "room-not-found");
    let stats = peers::stats(server.http).await;
    assert_eq!(stats["server"]["activeRooms"], 0, "{stats}");
    carol.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn signals_never_cross_rooms() {
    let server = TestServer::start(fast_config()).await;
    let mut alice = server.join("alice", "room-a").await.client;
    let mut bob = server.join("bob", "room-a").await.client;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    let mut dave = server.join("dave", "room-b").await.client;

    for target in ["dave", "nobody", "alice"] {
        let offer = format!(
            r#"{{"type":"sdp-offer","data":{{"peer":"{target}","offer":{{"type":"offer","sdp":"v=0"}}}}}}"#
        );
        alice.send_text(offer).await.unwrap();
        expect_error(&mut alice, "alice", ErrorCode::PeerNotFound).await;
    }
    expect_silence(&mut dave, "dave").await;
    expect_silence(&mut bob, "bob").await;

    // The connection is still usable: a signal to a peer of the room goes through.
    alice
        .signal(
            SignalKind::Offer,
            "bob",
            json!({"type": "offer", "sdp": "v=0"}),
        )
        .await
        .unwrap();
    match next(&mut bob, "bob").await {
        ServerMessage::Signal { from, .. } => assert_eq!(from.as_str(), "alice"),
        other => panic!("bob: expected the offer, got {}", peers::brief(&other)),
    }
    server.stop().await;
}

#[tokio::test]
async fn messages_before_auth_and_a_second_auth_are_refused() {
    let server = TestServer::start(fast_config()).await;
    let mut client = peers::connect(&server.ws_url()).await;
    for text in [
        r#"{"type":"presence","data":{"status":"active"}}"#,
        r#"{"type":"sdp-offer","data":{"peer":"bob","offer":{}}}"#,
        r#"{"type":"join-room","roomId":"room-1"}"#,
    ] {
        client.send_text(text).await.unwrap();
        expect_error(&mut client, "anon", ErrorCode::NotAuthenticated).await;
    }
    // Still open: auth now succeeds.
    let token = server.token("alice", "room-1").await;
    client
        .send_text(json!({"type": "auth", "data": {"token": token}}).to_string())
        .await
        .unwrap();
    assert!(matches!(
        next(&mut client, "alice").await,
        ServerMessage::AuthOk { .. }
    ));
    client
        .send_text(json!({"type": "auth", "token": token}).to_string())
        .await
        .unwrap();
    expect_error(&mut client, "alice", ErrorCode::AlreadyAuthenticated).await;
    // Still in the room.
    client.send_text(r#"{"type":"leave-room"}"#).await.unwrap();
    assert!(matches!(
        next(&mut client, "alice").await,
        ServerMessage::RoomLeft { .. }
    ));
    server.stop().await;
}

#[tokio::test]
async fn bad_messages_get_errors_and_the_connection_stays_usable() {
    let server = TestServer::start(fast_config()).await;
    let mut alice = server.join("alice", "room-1").await.client;
    let mut bob = server.join("bob", "room-1").await.client;
    expect_peer_joined(&mut alice, "alice", "bob").await;

    let cases = [
        (
            r#"{"type":"sdp-offer","data":{"peer":"bob""#,
            ErrorCode::InvalidJson,
        ),
        ("not json at all", ErrorCode::InvalidJson),
        (r#"{"type":"teleport","data":{}}"#, ErrorCode::UnknownType),
        (
            r#"{"type":"SDP-OFFER","data":{"peer":"bob"}}"#,
            ErrorCode::UnknownType,
        ),
        (r#"[1,2,3]"#, ErrorCode::InvalidMessage),
        (r#"{"data":{}}"#, ErrorCode::MissingField),
        (r#"{"type":"sdp-offer"}"#, ErrorCode::MissingField),
        (
            r#"{"type":"sdp-offer","data":{"peer":"no spaces allowed"}}"#,
            ErrorCode::InvalidField,
        ),
        (
            r#"{"type":"cursor-update","data":{"line":-1,"column":0}}"#,
            ErrorCode::InvalidField,
        ),
    ];
    for (text, code) in cases {
        alice.send_text(text).await.unwrap();
        match next(&mut alice, "alice").await {
            ServerMessage::Error { code: got, .. } => assert_eq!(got, code, "answer to {text}"),
            other => panic!(
                "alice: expected error {code} for {text}, got {}",
                peers::brief(&other)
            ),
        }
    }
    // The connection still relays; bob got none of the bad messages.
    alice
        .signal(SignalKind::Offer, "bob", json!({"sdp": "v=0"}))
        .await
        .unwrap();
    match next(&mut bob, "bob").await {
        ServerMessage::Signal { from, kind, .. } => {
            assert_eq!((from.as_str(), kind), ("alice", SignalKind::Offer));
        }
        other => panic!("bob: expected the offer, got {}", peers::brief(&other)),
    }
    server.stop().await;
}

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    let server = TestServer::start(fast_config()).await;
    let mut alice = server.join("alice", "room-1").await.client;
    let mut bob = server.join("bob", "room-1").await.client;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    bob.send_raw(Message::binary(b"{\"type\":\"presence\"}".to_vec()))
        .await
        .unwrap();
    expect_error(&mut bob, "bob", ErrorCode::InvalidMessage).await;
    expect_close(&mut bob, "bob", 1003).await;
    expect_peer_left(&mut alice, "alice", "bob", LeaveReason::Disconnected).await;
    server.stop().await;
}

/// A `presence` message padded to exactly `len` bytes.
fn presence_of_len(len: usize) -> String {
    let head = r#"{"type":"presence","data":{"status":"active","pad":""#;
    let tail = r#""}}"#;
    let pad = "x".repeat(len - head.len() - tail.len());
    let text = format!("{head}{pad}{tail}");
    assert_eq!(text.len(), len);
    text
}

#[tokio::test]
async fn message_at_the_limit_passes_and_one_byte_more_closes_with_1009() {
    let server = TestServer::start(fast_config()).await;
    let mut alice = server.join("alice", "room-1").await.client;
    let mut bob = server.join("bob", "room-1").await.client;
    expect_peer_joined(&mut alice, "alice", "bob").await;

    bob.send_text(presence_of_len(DEFAULT_MAX_MESSAGE_BYTES))
        .await
        .unwrap();
    match next(&mut alice, "alice").await {
        ServerMessage::Update { from, data, .. } => {
            assert_eq!(from.as_str(), "bob");
            assert!(data.get().len() > 65_000);
        }
        other => panic!(
            "alice: expected the 64 KiB presence, got {}",
            peers::brief(&other)
        ),
    }
    bob.send_text(presence_of_len(DEFAULT_MAX_MESSAGE_BYTES + 1))
        .await
        .unwrap();
    expect_error(&mut bob, "bob", ErrorCode::TooLarge).await;
    expect_close(&mut bob, "bob", 1009).await;
    expect_peer_left(&mut alice, "alice", "bob", LeaveReason::Disconnected).await;
    server.stop().await;
}

#[tokio::test]
async fn no_auth_in_time_closes_with_4002() {
    let server = TestServer::start_tweaked(|c| c.auth_timeout = Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut client = peers::connect(&server.ws_url()).await;
    expect_error(&mut client, "anon", ErrorCode::NotAuthenticated).await;
    expect_close(&mut client, "anon", 4002).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the deadline: {:?}",
        started.elapsed()
    );

    // A client that authenticates in time is not affected by the deadline.
    let mut alice = server.join("alice", "room-1").await.client;
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice.send_text(r#"{"type":"leave-room"}"#).await.unwrap();
    assert!(matches!(
        next(&mut alice, "alice").await,
        ServerMessage::RoomLeft { .. }
    ));
    server.stop().await;
}
