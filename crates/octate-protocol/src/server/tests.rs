#![allow(clippy::unwrap_used)]

use super::*;
use crate::{ClientMessage, DEFAULT_MAX_MESSAGE_BYTES, RoomState};

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

fn room_id() -> RoomId {
    RoomId::new("room-1").unwrap()
}

fn peer(id: &str, name: &str, host: bool, at: u64) -> PeerInfo {
    PeerInfo {
        user_id: user(id),
        user_name: name.into(),
        is_host: host,
        connected_at: at,
        last_heartbeat: at + 5,
    }
}

fn room() -> RoomMetadata {
    let peers = vec![
        peer("alice", "Alice", true, 1_000),
        peer("bob", "Bob", false, 2_000),
        peer("carol", "Carol", false, 3_000),
    ];
    RoomMetadata {
        room_id: room_id(),
        room_name: "Pairing".into(),
        host_id: user("alice"),
        host_name: "Alice".into(),
        file_id: Some("src/main.rs".into()),
        content: None,
        version: Some(3),
        created_at: 1_000,
        last_activity: 3_000,
        state: RoomState::Active,
        peer_count: peers.len(),
        peers,
    }
}

fn raw(text: &str) -> RawJson {
    RawJson::from_string(text.to_owned()).unwrap()
}

fn every_server_message() -> Vec<ServerMessage> {
    let mut msgs = vec![
        ServerMessage::AuthOk {
            user_id: user("bob"),
            room: room(),
            ice_servers: None,
            resume: None,
        },
        ServerMessage::RoomJoined {
            user_id: user("carol"),
            room: room(),
            ice_servers: None,
            resume: None,
        },
        ServerMessage::AuthOk {
            user_id: user("bob"),
            room: room(),
            ice_servers: Some(ice_servers()),
            resume: None,
        },
        ServerMessage::RoomJoined {
            user_id: user("carol"),
            room: room(),
            ice_servers: Some(Vec::new()),
            resume: None,
        },
        ServerMessage::RoomLeft { room_id: room_id() },
        ServerMessage::PeerJoined {
            room_id: room_id(),
            peer: peer("dave", "Dave", false, 4_000),
        },
        ServerMessage::HostChanged {
            room_id: room_id(),
            host_id: user("bob"),
            host_name: "Bob".into(),
        },
        ServerMessage::Signal {
            kind: SignalKind::Offer,
            from: user("alice"),
            room_id: room_id(),
            data: raw(r#"{"peer":"bob","offer":{"type":"offer","sdp":"v=0\r\n"}}"#),
        },
        ServerMessage::Signal {
            kind: SignalKind::Answer,
            from: user("bob"),
            room_id: room_id(),
            data: raw(r#"{"peer":"alice","answer":{"type":"answer","sdp":"v=0\r\n"}}"#),
        },
        ServerMessage::Signal {
            kind: SignalKind::IceCandidate,
            from: user("alice"),
            room_id: room_id(),
            data: raw(r#"{"peer":"bob","candidate":{"candidate":"candidate:0","sdpMid":"0"}}"#),
        },
        ServerMessage::Update {
            kind: UpdateKind::Presence,
            from: user("alice"),
            room_id: room_id(),
            data: raw(r#"{"status":"idle"}"#),
        },
        ServerMessage::Update {
            kind: UpdateKind::Cursor,
            from: user("alice"),
            room_id: room_id(),
            data: raw(r#"{"line":1,"column":2}"#),
        },
        ServerMessage::Heartbeat,
        ServerMessage::ServerMessage {
            room_id: room_id(),
            data: raw(r#"{"notice":"closing soon"}"#),
        },
        ServerMessage::TokenRefreshed {
            expires_at: 1_700_000_060_000,
        },
    ];
    for reason in [
        LeaveReason::Left,
        LeaveReason::Disconnected,
        LeaveReason::Timeout,
        LeaveReason::Replaced,
        LeaveReason::MemoryPressure,
        LeaveReason::NodeDown,
        LeaveReason::Kicked,
    ] {
        msgs.push(ServerMessage::PeerLeft {
            room_id: room_id(),
            peer: peer("bob", "Bob", false, 2_000),
            reason,
        });
    }
    for reason in [
        RoomCloseReason::Deleted,
        RoomCloseReason::Inactive,
        RoomCloseReason::MemoryPressure,
        RoomCloseReason::Empty,
    ] {
        msgs.push(ServerMessage::RoomClosed {
            room_id: room_id(),
            reason,
        });
    }
    for code in ErrorCode::ALL {
        msgs.push(ServerMessage::error(*code, format!("because {code}")));
    }
    msgs
}

#[test]
fn every_variant_round_trips() {
    let msgs = every_server_message();
    assert_eq!(msgs.len(), 15 + 7 + 4 + ErrorCode::ALL.len());
    for msg in msgs {
        let bytes = msg.encode();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(ServerMessage::decode(&bytes), Ok(msg.clone()), "{text}");
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["type"], msg.kind(), "{text}");
    }
}

#[test]
fn auth_ok_lists_the_room_and_the_other_peers() {
    for kind in ["auth-ok", "room-joined"] {
        let msg = if kind == "auth-ok" {
            ServerMessage::AuthOk {
                user_id: user("bob"),
                room: room(),
                ice_servers: None,
                resume: None,
            }
        } else {
            ServerMessage::RoomJoined {
                user_id: user("bob"),
                room: room(),
                ice_servers: None,
                resume: None,
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&msg.encode()).unwrap();
        assert_eq!(v["type"], kind);
        assert_eq!(v["userId"], "bob");
        assert_eq!(v["roomId"], "room-1");
        assert_eq!(v["data"]["room"]["peerCount"], 3);
        assert_eq!(v["data"]["room"]["peers"].as_array().unwrap().len(), 3);
        let others: Vec<&str> = v["data"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["userId"].as_str().unwrap())
            .collect();
        assert_eq!(others, ["alice", "carol"]);
        assert!(
            v["data"].get("iceServers").is_none(),
            "no ICE servers, no field: {v}"
        );
    }
}

fn ice_servers() -> Vec<IceServer> {
    vec![
        IceServer {
            urls: vec![
                "turn:turn.example.com:3478?transport=udp".into(),
                "turns:turn.example.com:5349".into(),
            ],
            username: Some("1700000000:q1w2e3r4t5y6u7i8".into()),
            credential: Some("c2VjcmV0LWNyZWRlbnRpYWw=".into()),
        },
        IceServer {
            urls: vec!["stun:stun.example.com:3478".into()],
            username: None,
            credential: None,
        },
    ]
}

#[test]
fn ice_servers_are_in_the_browsers_rtc_ice_server_shape() {
    for kind in ["auth-ok", "room-joined"] {
        let msg = if kind == "auth-ok" {
            ServerMessage::AuthOk {
                user_id: user("bob"),
                room: room(),
                ice_servers: Some(ice_servers()),
                resume: None,
            }
        } else {
            ServerMessage::RoomJoined {
                user_id: user("bob"),
                room: room(),
                ice_servers: Some(ice_servers()),
                resume: None,
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&msg.encode()).unwrap();
        assert_eq!(
            v["data"]["iceServers"],
            serde_json::json!([
                {
                    "urls": ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"],
                    "username": "1700000000:q1w2e3r4t5y6u7i8",
                    "credential": "c2VjcmV0LWNyZWRlbnRpYWw="
                },
                {"urls": ["stun:stun.example.com:3478"]}
            ]),
            "{kind}"
        );
        assert_eq!(v["data"]["peers"].as_array().unwrap().len(), 2, "{kind}");
    }
}

#[test]
fn ice_servers_must_be_well_formed_when_present() {
    let head = r#"{"type":"auth-ok","userId":"bob","roomId":"room-1","data":{"room":"#;
    let room = serde_json::to_string(&room()).unwrap();
    for ice in [
        r#""turn:x""#,
        r#"[{"username":"u"}]"#,
        r#"[{"urls":"turn:x"}]"#,
    ] {
        let text = format!(r#"{head}{room},"peers":[],"iceServers":{ice}}}}}"#);
        assert!(
            ServerMessage::decode(text.as_bytes()).is_err(),
            "{ice} is not a list of RTCIceServer"
        );
    }
    let text = format!(r#"{head}{room},"peers":[],"iceServers":[{{"urls":["stun:x"]}}]}}}}"#);
    let Ok(ServerMessage::AuthOk { ice_servers, .. }) = ServerMessage::decode(text.as_bytes())
    else {
        panic!("a STUN-only list decodes: {text}");
    };
    assert_eq!(
        ice_servers,
        Some(vec![IceServer {
            urls: vec!["stun:x".into()],
            username: None,
            credential: None,
        }])
    );
}

#[test]
fn relayed_data_is_byte_for_byte_and_sender_is_stamped() {
    let data = "{  \"z\" : 1 ,\n\t\"peer\":\"bob\",\"offer\":{\"sdp\":\"v=0\\r\\na=x\",\"type\":\"offer\"} , \"n\":1.0e2 }";
    let client_text = format!(
        "{{\"type\":\"sdp-offer\",\"userId\":\"mallory\",\"roomId\":\"other\",\"data\":{data}}}"
    );
    let ClientMessage::Signal {
        kind,
        target,
        data: relayed,
    } = ClientMessage::decode(client_text.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES).unwrap()
    else {
        panic!("not a signal");
    };
    assert_eq!(target.as_str(), "bob");
    let out = ServerMessage::Signal {
        kind,
        from: user("alice"),
        room_id: room_id(),
        data: relayed,
    }
    .encode();
    let out_text = std::str::from_utf8(&out).unwrap();
    assert_eq!(
        out_text,
        format!(
            "{{\"type\":\"sdp-offer\",\"userId\":\"alice\",\"roomId\":\"room-1\",\"data\":{data}}}"
        )
    );
    let ServerMessage::Signal {
        from, data: got, ..
    } = ServerMessage::decode(&out).unwrap()
    else {
        panic!("not a signal");
    };
    assert_eq!(from.as_str(), "alice");
    assert_eq!(got.get(), data);
}

#[test]
fn updates_are_stamped_with_the_sender() {
    let data = r#"{"line":7 ,"column":0}"#;
    let ClientMessage::Update {
        kind,
        data: relayed,
    } = ClientMessage::decode(
        format!(r#"{{"type":"cursor-update","userId":"eve","data":{data}}}"#).as_bytes(),
        DEFAULT_MAX_MESSAGE_BYTES,
    )
    .unwrap()
    else {
        panic!("not an update");
    };
    let out = ServerMessage::Update {
        kind,
        from: user("alice"),
        room_id: room_id(),
        data: relayed,
    }
    .encode();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        format!(r#"{{"type":"cursor-update","userId":"alice","roomId":"room-1","data":{data}}}"#)
    );
}

#[test]
fn peer_left_without_reason_defaults_to_left() {
    let text = r#"{"type":"peer-left","roomId":"r","data":{"peer":{"userId":"b","userName":"B","isHost":false,"connectedAt":1,"lastHeartbeat":2}}}"#;
    let ServerMessage::PeerLeft { reason, .. } = ServerMessage::decode(text.as_bytes()).unwrap()
    else {
        panic!("not peer-left");
    };
    assert_eq!(reason, LeaveReason::Left);
}

#[test]
fn decode_errors() {
    let cases: &[(&str, ProtocolError)] = &[
        (
            r#"{"type":"room-left"}"#,
            ProtocolError::MissingField("roomId"),
        ),
        (
            r#"{"type":"sdp-offer","roomId":"r","data":{}}"#,
            ProtocolError::MissingField("userId"),
        ),
        (
            r#"{"type":"sdp-offer","userId":"a","roomId":"r"}"#,
            ProtocolError::MissingField("data"),
        ),
        (r#"{"type":"error"}"#, ProtocolError::MissingField("data")),
        (
            r#"{"type":"error","data":{"message":"m"}}"#,
            ProtocolError::MissingField("code"),
        ),
        (
            r#"{"type":"pong"}"#,
            ProtocolError::UnknownType("pong".into()),
        ),
        ("{}", ProtocolError::MissingField("type")),
    ];
    for (text, expected) in cases {
        assert_eq!(
            ServerMessage::decode(text.as_bytes()).as_ref(),
            Err(expected),
            "{text}"
        );
    }
    assert!(matches!(
        ServerMessage::decode(b"[1]"),
        Err(ProtocolError::InvalidShape(_))
    ));
    assert!(matches!(
        ServerMessage::decode(b"{"),
        Err(ProtocolError::InvalidJson(_))
    ));
    assert!(matches!(
        ServerMessage::decode(br#"{"type":"room-left","roomId":"a b"}"#),
        Err(ProtocolError::InvalidField {
            field: "roomId",
            ..
        })
    ));
    assert!(matches!(
        ServerMessage::decode(br#"{"type":"error","data":{"code":"no-such-code","message":""}}"#),
        Err(ProtocolError::InvalidShape(_))
    ));
}

#[test]
fn error_helper_builds_error_messages() {
    let msg = ServerMessage::error(ErrorCode::PeerNotFound, "no peer bob");
    assert_eq!(
        std::str::from_utf8(&msg.encode()).unwrap(),
        r#"{"type":"error","data":{"code":"peer-not-found","message":"no peer bob"}}"#
    );
}
