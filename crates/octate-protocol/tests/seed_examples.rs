//! Golden tests: the seed's JSON examples and every server message, as exact text.
//!
//! Any change of the wire format shows up as a diff of the strings below.

#![allow(clippy::unwrap_used, missing_docs)]

use octate_protocol::http::{
    CreateRoomRequest, HealthResponse, HttpError, InfoResponse, MemoryReport, OperationStats,
    RevokeRequest, ServerStats, StatsResponse, SuccessResponse, TokenRequest, TokenResponse,
    ValidateRequest, ValidateResponse,
};
use octate_protocol::{
    AuthToken, ClientMessage, DEFAULT_MAX_MESSAGE_BYTES, ErrorCode, LeaveReason, PROTOCOL_VERSION,
    PeerInfo, RemoteOperation, RoomCloseReason, RoomId, RoomMetadata, ServerMessage, UserId,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("golden is not JSON: {e}\n{text}"))
}

fn decode(text: &str) -> ClientMessage {
    ClientMessage::decode(text.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Decodes `text` as `T` and re-encodes it: the JSON must be the same.
fn same_shape<T: Serialize + DeserializeOwned>(text: &str) -> T {
    let parsed: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let again = serde_json::to_value(&parsed).unwrap();
    assert_eq!(again, value(text), "re-encoded differently:\n{text}");
    parsed
}

/// What the server relays for a client signal or update, sent by `from` in `room`.
fn relayed(msg: ClientMessage, from: &str, room: &str) -> Value {
    let (from, room_id) = (UserId::new(from).unwrap(), RoomId::new(room).unwrap());
    let out = match msg {
        ClientMessage::Signal { kind, data, .. } => ServerMessage::Signal {
            kind,
            from,
            room_id,
            data,
        },
        ClientMessage::Update { kind, data } => ServerMessage::Update {
            kind,
            from,
            room_id,
            data,
        },
        other => panic!("not relayed: {other:?}"),
    };
    serde_json::from_slice(&out.encode()).unwrap()
}

// ---- WebSocket messages from the seed ----------------------------------------------

#[test]
fn seed_auth_with_token_in_data() {
    let text =
        r#"{"type":"auth","userId":"user123","roomId":"room456","data":{"token":"dG9rZW4"}}"#;
    let msg = decode(text);
    assert_eq!(
        msg,
        ClientMessage::Auth {
            token: "dG9rZW4".into(),
            user_name: None,
            room_id: Some(RoomId::new("room456").unwrap()),
            user_id: Some(UserId::new("user123").unwrap()),
        }
    );
    // userId/roomId are what the client expects; the server checks them against the token.
    assert_eq!(value(&msg.encode()), value(text));
}

#[test]
fn seed_auth_with_token_at_top_level() {
    let text = r#"{"type":"auth","token":"dG9rZW4","userId":"user123","roomId":"room456"}"#;
    let msg = decode(text);
    assert_eq!(
        msg,
        ClientMessage::Auth {
            token: "dG9rZW4".into(),
            user_name: None,
            room_id: Some(RoomId::new("room456").unwrap()),
            user_id: Some(UserId::new("user123").unwrap()),
        }
    );
    assert_eq!(
        value(&msg.encode()),
        value(
            r#"{"type":"auth","userId":"user123","roomId":"room456","data":{"token":"dG9rZW4"}}"#
        )
    );
}

#[test]
fn auth_with_user_name() {
    let text = r#"{"type":"auth","data":{"token":"dG9rZW4","userName":"Alice"}}"#;
    let msg = decode(text);
    assert_eq!(value(&msg.encode()), value(text));
}

#[test]
fn seed_create_room() {
    let text = r#"{"type":"create-room","userId":"user123","roomId":"room456","data":{"roomName":"Pairing","fileId":"src/main.rs","userName":"Alice"}}"#;
    let msg = decode(text);
    assert_eq!(
        msg,
        ClientMessage::CreateRoom {
            room_id: Some(RoomId::new("room456").unwrap()),
            room_name: Some("Pairing".into()),
            file_id: Some("src/main.rs".into()),
            user_name: Some("Alice".into()),
        }
    );
    assert_eq!(
        value(&msg.encode()),
        value(
            r#"{"type":"create-room","roomId":"room456","data":{"roomName":"Pairing","fileId":"src/main.rs","userName":"Alice"}}"#
        )
    );
}

#[test]
fn seed_join_room() {
    let text =
        r#"{"type":"join-room","userId":"user123","roomId":"room456","data":{"userName":"Bob"}}"#;
    let msg = decode(text);
    assert_eq!(
        msg,
        ClientMessage::JoinRoom {
            room_id: Some(RoomId::new("room456").unwrap()),
            user_name: Some("Bob".into()),
        }
    );
    assert_eq!(
        value(&msg.encode()),
        value(r#"{"type":"join-room","roomId":"room456","data":{"userName":"Bob"}}"#)
    );
}

#[test]
fn seed_leave_room() {
    let text = r#"{"type":"leave-room","userId":"user123","roomId":"room456"}"#;
    let msg = decode(text);
    assert_eq!(msg, ClientMessage::LeaveRoom);
    assert_eq!(value(&msg.encode()), value(r#"{"type":"leave-room"}"#));
}

#[test]
fn seed_sdp_offer() {
    let text = r#"{"type":"sdp-offer","userId":"alice","roomId":"room456","data":{"peer":"bob","offer":{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}}}"#;
    let msg = decode(text);
    assert!(matches!(&msg, ClientMessage::Signal { target, .. } if target.as_str() == "bob"));
    assert_eq!(relayed(msg, "alice", "room456"), value(text));
}

#[test]
fn seed_sdp_answer() {
    let text = r#"{"type":"sdp-answer","userId":"bob","roomId":"room456","data":{"peer":"alice","answer":{"type":"answer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}}}"#;
    let msg = decode(text);
    assert!(matches!(&msg, ClientMessage::Signal { target, .. } if target.as_str() == "alice"));
    assert_eq!(relayed(msg, "bob", "room456"), value(text));
}

#[test]
fn seed_ice_candidate() {
    let text = r#"{"type":"ice-candidate","userId":"alice","roomId":"room456","data":{"peer":"bob","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Xp3r"}}}"#;
    let msg = decode(text);
    assert!(matches!(&msg, ClientMessage::Signal { target, .. } if target.as_str() == "bob"));
    assert_eq!(relayed(msg, "alice", "room456"), value(text));
}

#[test]
fn seed_presence() {
    for status in ["active", "idle", "away"] {
        let text = format!(
            r#"{{"type":"presence","userId":"alice","roomId":"room456","data":{{"status":"{status}"}}}}"#
        );
        let msg = decode(&text);
        assert_eq!(relayed(msg, "alice", "room456"), value(&text));
    }
}

#[test]
fn seed_cursor_update() {
    let text = r#"{"type":"cursor-update","userId":"alice","roomId":"room456","data":{"line":42,"column":7}}"#;
    let msg = decode(text);
    assert_eq!(relayed(msg, "alice", "room456"), value(text));
}

#[test]
fn token_refreshed_is_exact() {
    let msg = ServerMessage::TokenRefreshed {
        expires_at: 1_700_000_060_000,
    };
    let text = r#"{"type":"token-refreshed","data":{"expiresAt":1700000060000}}"#;
    assert_eq!(String::from_utf8(msg.encode()).unwrap(), text);
    assert_eq!(ServerMessage::decode(text.as_bytes()).unwrap(), msg);
}

#[test]
fn seed_heartbeat_both_ways() {
    let text = r#"{"type":"heartbeat"}"#;
    assert_eq!(decode(text), ClientMessage::Heartbeat);
    assert_eq!(ServerMessage::Heartbeat.encode(), text.as_bytes());
    assert_eq!(
        ServerMessage::decode(text.as_bytes()),
        Ok(ServerMessage::Heartbeat)
    );
    assert_eq!(decode(r#"{"type":"pong"}"#), ClientMessage::Pong);
    assert_eq!(ClientMessage::Pong.encode(), r#"{"type":"pong"}"#);
}

#[test]
fn claimed_user_id_is_replaced_by_the_sender() {
    // Mallory claims to be Alice; the server stamps the verified sender instead.
    let text = r#"{"type":"sdp-offer","userId":"alice","roomId":"room456","data":{"peer":"bob"}}"#;
    let out = relayed(decode(text), "mallory", "room456");
    assert_eq!(out["userId"], "mallory");
}

// ---- Data models ---------------------------------------------------------------------------

const PEER: &str = r#"{"userId":"alice","userName":"Alice","isHost":true,"connectedAt":1717430400000,"lastHeartbeat":1717430430000}"#;

const ROOM: &str = r#"{
  "roomId": "room456",
  "roomName": "Pairing",
  "hostId": "alice",
  "hostName": "Alice",
  "fileId": "src/main.rs",
  "version": 3,
  "createdAt": 1717430400000,
  "lastActivity": 1717430460000,
  "state": "ACTIVE",
  "peers": [
    {"userId":"alice","userName":"Alice","isHost":true,"connectedAt":1717430400000,"lastHeartbeat":1717430430000},
    {"userId":"bob","userName":"Bob","isHost":false,"connectedAt":1717430410000,"lastHeartbeat":1717430440000}
  ],
  "peerCount": 2
}"#;

#[test]
fn peer_info() {
    let p: PeerInfo = same_shape(PEER);
    assert!(p.is_host);
    assert_eq!(p.user_id.as_str(), "alice");
}

#[test]
fn room_metadata() {
    let r: RoomMetadata = same_shape(ROOM);
    assert_eq!(r.peer_count, r.peers.len());
    assert_eq!(r.host_id, r.peers[0].user_id);
}

#[test]
fn room_metadata_minimal_and_states() {
    for state in ["ACTIVE", "IDLE", "CLOSED"] {
        let text = format!(
            r#"{{"roomId":"r","roomName":"r","hostId":"h","hostName":"H","createdAt":1,"lastActivity":2,"state":"{state}","peers":[],"peerCount":0}}"#
        );
        let _: RoomMetadata = same_shape(&text);
    }
    let with_content = r#"{"roomId":"r","roomName":"r","hostId":"h","hostName":"H","content":"fn main() {}","createdAt":1,"lastActivity":2,"state":"ACTIVE","peers":[],"peerCount":0}"#;
    let _: RoomMetadata = same_shape(with_content);
}

#[test]
fn auth_token_seed_shape() {
    let text = r#"{"userId":"user123","roomId":"room456","issuedAt":1717430400000,"expiresAt":1717434000000,"signature":"c2lnbmF0dXJl"}"#;
    let t: AuthToken = same_shape(text);
    assert!(t.token_id.is_empty() && t.key_id.is_empty());
}

#[test]
fn auth_token_full_shape() {
    let text = r#"{"userId":"user123","roomId":"room456","issuedAt":1717430400000,"expiresAt":1717434000000,"tokenId":"0f8e1c2a","keyId":"k1","signature":"c2lnbmF0dXJl"}"#;
    let t: AuthToken = same_shape(text);
    assert_eq!(t.key_id, "k1");
}

#[test]
fn remote_operation() {
    let insert = r#"{"id":"op-1","peerId":"alice","timestamp":1717430400000,"type":"insert","position":10,"content":"foo","version":7}"#;
    let _: RemoteOperation = same_shape(insert);
    let delete = r#"{"id":"op-2","peerId":"bob","timestamp":1717430400001,"type":"delete","position":3,"version":8}"#;
    let _: RemoteOperation = same_shape(delete);
    let replace = r#"{"id":"op-3","peerId":"bob","timestamp":1717430400002,"type":"replace","position":0,"content":"bar","version":9}"#;
    let _: RemoteOperation = same_shape(replace);
}

// ---- HTTP bodies -----------------------------------------------------------------------------

#[test]
fn http_token() {
    let req: TokenRequest = same_shape(r#"{"userId":"user123","roomId":"room456"}"#);
    assert_eq!(req.ttl_seconds, None);
    let _: TokenRequest = same_shape(r#"{"userId":"user123","roomId":"room456","ttlSeconds":600}"#);
    assert!(serde_json::from_str::<TokenRequest>(r#"{"userId":"a b","roomId":"r"}"#).is_err());
    let _: TokenResponse = same_shape(
        r#"{"token":"eyJ1.sig","tokenId":"0f8e1c2a","issuedAt":1717430400000,"expiresAt":1717434000000}"#,
    );
}

#[test]
fn http_validate_and_revoke() {
    let _: ValidateRequest =
        same_shape(r#"{"userId":"user123","roomId":"room456","token":"eyJ1.sig"}"#);
    let ok: ValidateResponse = same_shape(r#"{"valid":true}"#);
    assert!(ok.valid);
    let bad: ValidateResponse = same_shape(r#"{"valid":false,"error":"token-expired"}"#);
    assert_eq!(bad.error, Some(ErrorCode::TokenExpired));
    let _: RevokeRequest = same_shape(r#"{"token":"eyJ1.sig"}"#);
}

#[test]
fn http_rooms() {
    let req: CreateRoomRequest = same_shape(
        r#"{"roomId":"room456","roomName":"Pairing","hostId":"alice","hostName":"Alice"}"#,
    );
    assert_eq!(req.file_id, None);
    let _: CreateRoomRequest = same_shape(
        r#"{"roomId":"room456","roomName":"Pairing","hostId":"alice","hostName":"Alice","fileId":"f","version":1}"#,
    );
    let _: SuccessResponse = same_shape(r#"{"success":true}"#);
    let peers: Vec<PeerInfo> = same_shape(&format!("[{PEER}]"));
    assert_eq!(peers.len(), 1);
}

const MEMORY: &str = r#"{"heapUsed":150.5,"heapTotal":512.0,"heapUsedBytes":157810688,"rssBytes":201326592,"heapPercent":50.1,"level":"normal"}"#;

#[test]
fn http_health_stats_info() {
    let _: MemoryReport = same_shape(MEMORY);
    let _: MemoryReport = same_shape(
        r#"{"heapUsed":1.0,"heapTotal":2.0,"heapUsedBytes":1048576,"heapPercent":0.3,"level":"warning"}"#,
    );
    let h: HealthResponse = same_shape(&format!(
        r#"{{"status":"ok","timestamp":1717430400000,"memory":{MEMORY}}}"#
    ));
    assert_eq!(h.status, "ok");
    let s: StatsResponse = same_shape(&format!(
        r#"{{"server":{{"uptime":3600,"activeRooms":5,"totalConnections":12,"peers":11}},"memory":{MEMORY},"operations":{{"messagesRelayed":1,"roomsCreated":2,"roomsClosed":3,"peersTimedOut":4,"authFailures":5,"errorsSent":6,"memoryCleanups":7,"slowConsumersClosed":8}}}}"#
    ));
    assert_eq!(
        s.server,
        ServerStats {
            uptime: 3600,
            active_rooms: 5,
            total_connections: 12,
            peers: 11
        }
    );
    assert_eq!(s.operations.slow_consumers_closed, 8);
    assert_ne!(s.operations, OperationStats::default());
    let i: InfoResponse = same_shape(r#"{"name":"octate","version":"0.1.0","protocolVersion":1}"#);
    assert_eq!(i.protocol_version, PROTOCOL_VERSION);
    assert_eq!(PROTOCOL_VERSION, 1);
}

#[test]
fn http_error_body() {
    let e: HttpError =
        same_shape(r#"{"error":{"code":"room-not-found","message":"no room room456"}}"#);
    assert_eq!(
        e,
        HttpError::new(ErrorCode::RoomNotFound, "no room room456")
    );
}

// ---- Every server message, exactly as the encoder writes it ----------------------------------

fn peer(id: &str, name: &str, host: bool, at: u64) -> PeerInfo {
    PeerInfo {
        user_id: UserId::new(id).unwrap(),
        user_name: name.into(),
        is_host: host,
        connected_at: at,
        last_heartbeat: at,
    }
}

fn two_peer_room() -> RoomMetadata {
    let mut room: RoomMetadata = serde_json::from_str(ROOM).unwrap();
    room.peers = vec![
        peer("alice", "Alice", true, 1717430400000),
        peer("bob", "Bob", false, 1717430410000),
    ];
    room.last_activity = 1717430410000;
    room
}

fn golden(msg: &ServerMessage, expected: &str) {
    let bytes = msg.encode();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert_eq!(text, expected);
    assert_eq!(ServerMessage::decode(&bytes).as_ref(), Ok(msg));
}

#[test]
fn golden_auth_ok_and_room_joined() {
    let room = two_peer_room();
    let bob = UserId::new("bob").unwrap();
    let data = r#"{"room":{"roomId":"room456","roomName":"Pairing","hostId":"alice","hostName":"Alice","fileId":"src/main.rs","version":3,"createdAt":1717430400000,"lastActivity":1717430410000,"state":"ACTIVE","peers":[{"userId":"alice","userName":"Alice","isHost":true,"connectedAt":1717430400000,"lastHeartbeat":1717430400000},{"userId":"bob","userName":"Bob","isHost":false,"connectedAt":1717430410000,"lastHeartbeat":1717430410000}],"peerCount":2},"peers":[{"userId":"alice","userName":"Alice","isHost":true,"connectedAt":1717430400000,"lastHeartbeat":1717430400000}]}"#;
    golden(
        &ServerMessage::AuthOk {
            user_id: bob.clone(),
            room: room.clone(),
            ice_servers: None,
            resume: None,
        },
        &format!(r#"{{"type":"auth-ok","userId":"bob","roomId":"room456","data":{data}}}"#),
    );
    golden(
        &ServerMessage::RoomJoined {
            user_id: bob,
            room,
            ice_servers: None,
            resume: None,
        },
        &format!(r#"{{"type":"room-joined","userId":"bob","roomId":"room456","data":{data}}}"#),
    );
}

#[test]
fn golden_room_left_peer_joined_peer_left() {
    let room_id = RoomId::new("room456").unwrap();
    golden(
        &ServerMessage::RoomLeft {
            room_id: room_id.clone(),
        },
        r#"{"type":"room-left","roomId":"room456"}"#,
    );
    golden(
        &ServerMessage::PeerJoined {
            room_id: room_id.clone(),
            peer: peer("bob", "Bob", false, 1717430410000),
        },
        r#"{"type":"peer-joined","roomId":"room456","data":{"peer":{"userId":"bob","userName":"Bob","isHost":false,"connectedAt":1717430410000,"lastHeartbeat":1717430410000}}}"#,
    );
    for (reason, wire) in [
        (LeaveReason::Left, "left"),
        (LeaveReason::Disconnected, "disconnected"),
        (LeaveReason::Timeout, "timeout"),
        (LeaveReason::Replaced, "replaced"),
        (LeaveReason::MemoryPressure, "memory-pressure"),
        (LeaveReason::Kicked, "kicked"),
    ] {
        golden(
            &ServerMessage::PeerLeft {
                room_id: room_id.clone(),
                peer: peer("alice", "Alice", true, 1717430400000),
                reason,
            },
            &format!(
                r#"{{"type":"peer-left","roomId":"room456","data":{{"peer":{{"userId":"alice","userName":"Alice","isHost":true,"connectedAt":1717430400000,"lastHeartbeat":1717430400000}},"reason":"{wire}"}}}}"#
            ),
        );
    }
}

#[test]
fn golden_host_changed_and_room_closed() {
    let room_id = RoomId::new("room456").unwrap();
    golden(
        &ServerMessage::HostChanged {
            room_id: room_id.clone(),
            host_id: UserId::new("bob").unwrap(),
            host_name: "Bob".into(),
        },
        r#"{"type":"host-changed","roomId":"room456","data":{"hostId":"bob","hostName":"Bob"}}"#,
    );
    for (reason, wire) in [
        (RoomCloseReason::Deleted, "deleted"),
        (RoomCloseReason::Inactive, "inactive"),
        (RoomCloseReason::MemoryPressure, "memory-pressure"),
        (RoomCloseReason::Empty, "empty"),
    ] {
        golden(
            &ServerMessage::RoomClosed {
                room_id: room_id.clone(),
                reason,
            },
            &format!(r#"{{"type":"room-closed","roomId":"room456","data":{{"reason":"{wire}"}}}}"#),
        );
    }
}

#[test]
fn golden_server_message() {
    golden(
        &ServerMessage::ServerMessage {
            room_id: RoomId::new("room456").unwrap(),
            data: octate_protocol::RawJson::from_string(r#"{"notice":"bye soon"}"#.into()).unwrap(),
        },
        r#"{"type":"server-message","roomId":"room456","data":{"notice":"bye soon"}}"#,
    );
}

#[test]
fn golden_errors() {
    golden(
        &ServerMessage::error(ErrorCode::PeerNotFound, "peer carol is not in room room456"),
        r#"{"type":"error","data":{"code":"peer-not-found","message":"peer carol is not in room room456"}}"#,
    );
    let err =
        ClientMessage::decode(br#"{"type":"teleport"}"#, DEFAULT_MAX_MESSAGE_BYTES).unwrap_err();
    golden(
        &ServerMessage::error(err.code(), err.to_string()),
        r#"{"type":"error","data":{"code":"unknown-type","message":"unknown message type \"teleport\""}}"#,
    );
}
