#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;
use crate::{ErrorCode, MAX_ID_LEN, MAX_NESTING_DEPTH};

const MAX: usize = DEFAULT_MAX_MESSAGE_BYTES;

fn decode(text: &str) -> Result<ClientMessage, ProtocolError> {
    ClientMessage::decode(text.as_bytes(), MAX)
}

fn ok(text: &str) -> ClientMessage {
    match decode(text) {
        Ok(msg) => msg,
        Err(e) => panic!("{text}: {e}"),
    }
}

fn err(text: &str) -> ProtocolError {
    match decode(text) {
        Ok(msg) => panic!("{text} decoded to {msg:?}"),
        Err(e) => e,
    }
}

// ---- auth ------------------------------------------------------------------------

#[test]
fn auth_token_in_data() {
    assert_eq!(
        ok(r#"{"type":"auth","data":{"token":"t.k.n"}}"#),
        ClientMessage::Auth {
            token: "t.k.n".into(),
            user_name: None,
            room_id: None,
            user_id: None,
        }
    );
}

#[test]
fn auth_token_at_top_level() {
    assert_eq!(
        ok(r#"{"type":"auth","token":"abc","userId":"u1","roomId":"r1"}"#),
        ClientMessage::Auth {
            token: "abc".into(),
            user_name: None,
            room_id: Some(RoomId::new("r1").unwrap()),
            user_id: Some(UserId::new("u1").unwrap()),
        }
    );
}

#[test]
fn auth_envelope_ids_are_kept_and_validated() {
    let msg = ok(r#"{"type":"auth","roomId":"doc-A","data":{"token":"t"}}"#);
    assert_eq!(
        msg,
        ClientMessage::Auth {
            token: "t".into(),
            user_name: None,
            room_id: Some(RoomId::new("doc-A").unwrap()),
            user_id: None,
        }
    );
    // They travel in the envelope, where a client puts them.
    assert_eq!(
        msg.encode(),
        r#"{"type":"auth","roomId":"doc-A","data":{"token":"t"}}"#
    );
    let null_ids = ok(r#"{"type":"auth","userId":null,"roomId":null,"data":{"token":"t"}}"#);
    assert!(matches!(
        null_ids,
        ClientMessage::Auth {
            room_id: None,
            user_id: None,
            ..
        }
    ));
    for (text, field) in [
        (
            r#"{"type":"auth","userId":42,"data":{"token":"t"}}"#,
            "userId",
        ),
        (
            r#"{"type":"auth","roomId":["r"],"data":{"token":"t"}}"#,
            "roomId",
        ),
        (
            r#"{"type":"auth","roomId":"has space","data":{"token":"t"}}"#,
            "roomId",
        ),
    ] {
        assert!(
            matches!(err(text), ProtocolError::InvalidField { field: f, .. } if f == field),
            "{text}"
        );
    }
}

#[test]
fn refresh_carries_a_token_in_data() {
    let msg = ok(r#"{"type":"refresh","data":{"token":"new.tok"}}"#);
    assert_eq!(
        msg,
        ClientMessage::Refresh {
            token: "new.tok".into()
        }
    );
    assert_eq!(msg.kind(), "refresh");
    assert_eq!(
        msg.encode(),
        r#"{"type":"refresh","data":{"token":"new.tok"}}"#
    );
    for text in [
        r#"{"type":"refresh"}"#,
        r#"{"type":"refresh","data":{}}"#,
        r#"{"type":"refresh","token":"top","data":null}"#,
    ] {
        assert_eq!(err(text), ProtocolError::MissingField("token"), "{text}");
    }
    assert!(matches!(
        err(r#"{"type":"refresh","data":{"token":1}}"#),
        ProtocolError::InvalidShape(_)
    ));
}

#[test]
fn auth_data_token_wins_over_top_level() {
    let msg = ok(r#"{"type":"auth","token":"top","data":{"token":"inner","userName":"Al"}}"#);
    assert_eq!(
        msg,
        ClientMessage::Auth {
            token: "inner".into(),
            user_name: Some("Al".into()),
            room_id: None,
            user_id: None,
        }
    );
}

#[test]
fn auth_with_null_data_uses_top_level_token() {
    let msg = ok(r#"{"type":"auth","token":"top","data":null}"#);
    assert!(matches!(msg, ClientMessage::Auth { token, .. } if token == "top"));
}

#[test]
fn auth_without_token_is_missing_token() {
    assert_eq!(
        err(r#"{"type":"auth"}"#),
        ProtocolError::MissingField("token")
    );
    assert_eq!(
        err(r#"{"type":"auth","data":{"userName":"x"}}"#),
        ProtocolError::MissingField("token")
    );
    assert_eq!(
        err(r#"{"type":"auth","token":null}"#),
        ProtocolError::MissingField("token")
    );
}

#[test]
fn auth_token_of_wrong_type_is_rejected() {
    assert!(matches!(
        err(r#"{"type":"auth","token":5}"#),
        ProtocolError::InvalidField { field: "token", .. }
    ));
    assert!(matches!(
        err(r#"{"type":"auth","data":{"token":5}}"#),
        ProtocolError::InvalidShape(_)
    ));
    assert!(matches!(
        err(r#"{"type":"auth","data":"tok"}"#),
        ProtocolError::InvalidShape(_)
    ));
    assert!(matches!(
        err(r#"{"type":"auth","data":["tok"]}"#),
        ProtocolError::InvalidShape(_)
    ));
}

#[test]
fn user_id_sent_by_client_is_ignored_whatever_it_is() {
    for user in [
        r#""mallory""#,
        r#""someone else""#,
        "42",
        "null",
        "[1,2]",
        "{}",
    ] {
        let text = format!(r#"{{"type":"sdp-offer","userId":{user},"data":{{"peer":"bob"}}}}"#);
        let msg = ok(&text);
        assert!(
            matches!(&msg, ClientMessage::Signal { target, .. } if target.as_str() == "bob"),
            "{text}"
        );
        // No variant carries a client-chosen sender.
        assert!(!msg.encode().contains("userId"), "{text}");
    }
}

#[test]
fn names_are_cleaned() {
    let msg = ok(r#"{"type":"auth","data":{"token":"t","userName":"  A\u0000l\nice  "}}"#);
    assert_eq!(
        msg,
        ClientMessage::Auth {
            token: "t".into(),
            user_name: Some("Alice".into()),
            room_id: None,
            user_id: None,
        }
    );
    let long = "é".repeat(MAX_NAME_CHARS + 10);
    let msg = ok(&format!(
        r#"{{"type":"join-room","data":{{"userName":"{long}"}}}}"#
    ));
    let ClientMessage::JoinRoom { user_name, .. } = msg else {
        panic!("not join-room");
    };
    assert_eq!(user_name.unwrap().chars().count(), MAX_NAME_CHARS);
    for empty in ["", "   ", "\u{0007}"] {
        let text = serde_json::json!({"type": "auth", "data": {"token": "t", "userName": empty}});
        let msg = ok(&text.to_string());
        assert_eq!(
            msg,
            ClientMessage::Auth {
                token: "t".into(),
                user_name: None,
                room_id: None,
                user_id: None,
            },
            "{empty:?}"
        );
    }
}

// ---- rooms -----------------------------------------------------------------------

#[test]
fn create_room_with_and_without_data() {
    assert_eq!(
        ok(
            r#"{"type":"create-room","userId":"u","roomId":"r1","data":{"roomName":"Pair","fileId":"f.rs","userName":"Ann","extra":1}}"#
        ),
        ClientMessage::CreateRoom {
            room_id: Some(RoomId::new("r1").unwrap()),
            room_name: Some("Pair".into()),
            file_id: Some("f.rs".into()),
            user_name: Some("Ann".into()),
        }
    );
    assert_eq!(
        ok(r#"{"type":"create-room"}"#),
        ClientMessage::CreateRoom {
            room_id: None,
            room_name: None,
            file_id: None,
            user_name: None,
        }
    );
}

#[test]
fn join_and_leave_room() {
    assert_eq!(
        ok(r#"{"type":"join-room","userId":"u","roomId":"r1","data":{"userName":"Bo"}}"#),
        ClientMessage::JoinRoom {
            room_id: Some(RoomId::new("r1").unwrap()),
            user_name: Some("Bo".into()),
        }
    );
    assert_eq!(
        ok(r#"{"type":"join-room","roomId":null,"data":null}"#),
        ClientMessage::JoinRoom {
            room_id: None,
            user_name: None,
        }
    );
    assert_eq!(
        ok(r#"{"type":"leave-room","userId":"u","roomId":"r1"}"#),
        ClientMessage::LeaveRoom
    );
}

#[test]
fn invalid_room_ids_are_invalid_fields() {
    let long = "r".repeat(MAX_ID_LEN + 1);
    for room in ["has space", "", "a/b", "ü", long.as_str()] {
        for kind in ["create-room", "join-room"] {
            let text = serde_json::json!({"type": kind, "roomId": room}).to_string();
            assert!(
                matches!(
                    err(&text),
                    ProtocolError::InvalidField {
                        field: "roomId",
                        ..
                    }
                ),
                "{text}"
            );
        }
    }
    assert!(matches!(
        err(r#"{"type":"join-room","roomId":7}"#),
        ProtocolError::InvalidField {
            field: "roomId",
            ..
        }
    ));
    let at_limit = "r".repeat(MAX_ID_LEN);
    let text = serde_json::json!({"type": "join-room", "roomId": at_limit}).to_string();
    assert!(decode(&text).is_ok());
}

#[test]
fn room_id_is_ignored_where_unused() {
    assert_eq!(
        ok(r#"{"type":"leave-room","roomId":"not a valid id!"}"#),
        ClientMessage::LeaveRoom
    );
    assert!(matches!(
        ok(r#"{"type":"presence","roomId":12,"data":{"status":"idle"}}"#),
        ClientMessage::Update { .. }
    ));
}

#[test]
fn file_id_is_bounded() {
    let ok_id = "f".repeat(MAX_FILE_ID_LEN);
    let text = serde_json::json!({"type": "create-room", "data": {"fileId": ok_id}}).to_string();
    assert!(decode(&text).is_ok());
    let long = "f".repeat(MAX_FILE_ID_LEN + 1);
    let text = serde_json::json!({"type": "create-room", "data": {"fileId": long}}).to_string();
    assert!(matches!(
        err(&text),
        ProtocolError::InvalidField {
            field: "fileId",
            ..
        }
    ));
}

// ---- signals and updates -----------------------------------------------------------

#[test]
fn signals_of_each_kind() {
    for (kind, key, expected) in [
        ("sdp-offer", "offer", SignalKind::Offer),
        ("sdp-answer", "answer", SignalKind::Answer),
        ("ice-candidate", "candidate", SignalKind::IceCandidate),
    ] {
        let data = format!(r#"{{"peer":"bob","{key}":{{"x":1}}}}"#);
        let text = format!(r#"{{"type":"{kind}","userId":"alice","roomId":"r","data":{data}}}"#);
        assert_eq!(
            ok(&text),
            ClientMessage::Signal {
                kind: expected,
                target: UserId::new("bob").unwrap(),
                data: RawJson::from_string(data).unwrap(),
            }
        );
    }
}

#[test]
fn signal_data_is_kept_byte_for_byte() {
    let data = "{ \"sdp\" : \"v=0\\r\\no=- 1 2 IN IP4 127.0.0.1\" ,\n\t\"peer\":\"bob\",  \"z\":1.50 , \"a\":[ ] }";
    let text = format!("{{\"type\":\"sdp-offer\",\"data\":{data}   }}");
    let ClientMessage::Signal { data: raw, .. } = ok(&text) else {
        panic!("not a signal");
    };
    assert_eq!(raw.get(), data);
}

#[test]
fn signal_without_data_or_peer_is_missing_field() {
    for kind in ["sdp-offer", "sdp-answer", "ice-candidate"] {
        assert_eq!(
            err(&format!(r#"{{"type":"{kind}"}}"#)),
            ProtocolError::MissingField("data")
        );
        assert_eq!(
            err(&format!(r#"{{"type":"{kind}","data":null}}"#)),
            ProtocolError::MissingField("data")
        );
        assert_eq!(
            err(&format!(r#"{{"type":"{kind}","data":{{"offer":{{}}}}}}"#)),
            ProtocolError::MissingField("peer")
        );
        assert_eq!(
            err(&format!(r#"{{"type":"{kind}","data":{{"peer":null}}}}"#)),
            ProtocolError::MissingField("peer")
        );
    }
}

#[test]
fn signal_with_invalid_peer_is_invalid_field() {
    let long = "p".repeat(MAX_ID_LEN + 1);
    for peer in [
        serde_json::json!("has space"),
        serde_json::json!(""),
        serde_json::json!(long),
        serde_json::json!(5),
        serde_json::json!(["bob"]),
    ] {
        let text = serde_json::json!({"type": "sdp-offer", "data": {"peer": peer}}).to_string();
        assert!(
            matches!(
                err(&text),
                ProtocolError::InvalidField { field: "peer", .. }
            ),
            "{text}"
        );
    }
}

#[test]
fn signal_data_must_be_an_object() {
    for data in ["[\"bob\"]", "\"bob\"", "1", "true"] {
        let text = format!(r#"{{"type":"sdp-offer","data":{data}}}"#);
        assert!(
            matches!(err(&text), ProtocolError::InvalidShape(_)),
            "{text}"
        );
    }
}

fn signal(text: &str) -> (UserId, String) {
    match ok(text) {
        ClientMessage::Signal { target, data, .. } => (target, data.get().to_owned()),
        other => panic!("{text}: not a signal: {other:?}"),
    }
}

#[test]
fn signal_peer_after_a_long_sdp_is_found() {
    let sdp = "v=0\\r\\no=- 1 2 IN IP4 127.0.0.1\\r\\na=\\\"peer\\\":\\\"eve\\\"\\r\\n".repeat(40);
    let data = format!(r#"{{"offer":{{"type":"offer","sdp":"{sdp}","peer":"eve"}},"peer":"bob"}}"#);
    let (target, raw) = signal(&format!(r#"{{"type":"sdp-offer","data":{data}}}"#));
    assert_eq!(target.as_str(), "bob");
    assert_eq!(raw, data);
}

#[test]
fn signal_peer_is_read_at_the_top_level_of_data_only() {
    let text =
        r#"{"type":"sdp-answer","peer":"eve","data":{"answer":{"peer":"eve"},"x":["peer","eve"]}}"#;
    assert_eq!(err(text), ProtocolError::MissingField("peer"));
    let text = r#"{"type":"sdp-answer","data":{"s":"\"peer\":\"eve\"","peer":"bob"}}"#;
    assert_eq!(signal(text).0.as_str(), "bob");
}

#[test]
fn signal_keys_and_peer_may_be_escaped() {
    // Keys are compared after unescaping, as the parser does.
    for data in [
        r#"{"pe\u0065r":"bob","candidate":{}}"#,
        r#"{"candidate":{},"\u0070\u0065\u0065\u0072":"bob"}"#,
        r#"{"x\n":1,"peer":"bob"}"#,
        r#"{"peer":"b\u006fb"}"#,
        r#"{ "peer" : "bob" }"#,
    ] {
        let text = format!(r#"{{"type":"ice-candidate","data":{data}}}"#);
        let (target, raw) = signal(&text);
        assert_eq!(target.as_str(), "bob", "{text}");
        assert_eq!(raw, data, "{text}");
    }
    let text = r#"{"type":"ice-candidate","data":{"pe\u0065r":"a b"}}"#;
    assert!(matches!(
        err(text),
        ProtocolError::InvalidField { field: "peer", .. }
    ));
    let text = r#"{"type":"ice-candidate","data":{"pe\u0065r":null}}"#;
    assert_eq!(err(text), ProtocolError::MissingField("peer"));
}

#[test]
fn signal_with_duplicate_peer_is_invalid_shape() {
    // The parser's "duplicate field" error, whatever the values and however spelled;
    // other keys may repeat, as the parser ignores them.
    for data in [
        r#"{"peer":"bob","peer":"bob"}"#,
        r#"{"peer":null,"peer":"bob"}"#,
        r#"{"peer":"bob","sdp":"v=0","pe\u0065r":"eve"}"#,
    ] {
        let text = format!(r#"{{"type":"sdp-offer","data":{data}}}"#);
        let e = err(&text);
        assert!(
            matches!(&e, ProtocolError::InvalidShape(m) if m.contains("duplicate field `peer`")),
            "{text}: {e:?}"
        );
    }
    let text = r#"{"type":"sdp-offer","data":{"x":1,"peer":"bob","x":[2]}}"#;
    assert_eq!(signal(text).0.as_str(), "bob");
}

#[test]
fn updates_read_fields_like_the_parser() {
    assert!(matches!(
        ok(r#"{"type":"presence","data":{"st\u0061tus":"\u0061ctive"}}"#),
        ClientMessage::Update { .. }
    ));
    assert!(matches!(
        err(r#"{"type":"presence","data":{"status":"idle","status":"away"}}"#),
        ProtocolError::InvalidShape(_)
    ));
    assert_eq!(
        err(r#"{"type":"presence","data":{"status":null}}"#),
        ProtocolError::MissingField("status")
    );
    assert!(matches!(
        ok(r#"{"type":"cursor-update","data":{ "line" : 1 , "column":2 ,"x":{"line":-1}}}"#),
        ClientMessage::Update { .. }
    ));
    assert_eq!(
        err(r#"{"type":"cursor-update","data":{"line":null,"column":2}}"#),
        ProtocolError::MissingField("line")
    );
    assert!(matches!(
        err(r#"{"type":"cursor-update","data":{"line":1,"column":2,"column":3}}"#),
        ProtocolError::InvalidShape(_)
    ));
}

#[test]
fn decode_str_is_decode_on_text() {
    let offer = r#"{"type":"sdp-offer","data":{"peer":"bob","offer":{}}}"#;
    assert_eq!(
        ClientMessage::decode_str(offer, MAX),
        ClientMessage::decode(offer.as_bytes(), MAX)
    );
    assert_eq!(
        ClientMessage::decode_str(offer, offer.len() - 1),
        Err(ProtocolError::TooLarge {
            len: offer.len(),
            limit: offer.len() - 1
        })
    );
    assert!(matches!(
        ClientMessage::decode_str("[]", MAX),
        Err(ProtocolError::InvalidShape(_))
    ));
}

/// Signal decoding as the parser alone does it: `data` parsed into `SignalData`.
fn reference_signal_target(data: Option<&str>) -> Result<UserId, ProtocolError> {
    let raw: &RawValue = match data {
        None | Some("null") => return Err(ProtocolError::MissingField("data")),
        Some(text) => serde_json::from_str(text).unwrap(),
    };
    require_object(raw)?;
    let data: SignalData<'_> =
        serde_json::from_str(raw.get()).map_err(|e| ProtocolError::from_serde(&e))?;
    let raw = data.peer.ok_or(ProtocolError::MissingField("peer"))?;
    let peer: String =
        serde_json::from_str(raw.get()).map_err(|_| ProtocolError::InvalidField {
            field: "peer",
            reason: "must be a user id string",
        })?;
    UserId::new(peer).map_err(|e| as_field(e, "peer"))
}

#[test]
fn presence_statuses() {
    for status in PRESENCE_STATUSES {
        let data = format!(r#"{{"status":"{status}"}}"#);
        assert_eq!(
            ok(&format!(r#"{{"type":"presence","data":{data}}}"#)),
            ClientMessage::Update {
                kind: UpdateKind::Presence,
                data: RawJson::from_string(data).unwrap(),
            }
        );
    }
    assert!(matches!(
        err(r#"{"type":"presence","data":{"status":"busy"}}"#),
        ProtocolError::InvalidField {
            field: "status",
            ..
        }
    ));
    assert!(matches!(
        err(r#"{"type":"presence","data":{"status":1}}"#),
        ProtocolError::InvalidField {
            field: "status",
            ..
        }
    ));
    assert_eq!(
        err(r#"{"type":"presence","data":{}}"#),
        ProtocolError::MissingField("status")
    );
    assert_eq!(
        err(r#"{"type":"presence"}"#),
        ProtocolError::MissingField("data")
    );
}

#[test]
fn cursor_updates() {
    let data = r#"{"line":10,"column":4,"file":"a.rs"}"#;
    assert_eq!(
        ok(&format!(r#"{{"type":"cursor-update","data":{data}}}"#)),
        ClientMessage::Update {
            kind: UpdateKind::Cursor,
            data: RawJson::from_string(data.to_owned()).unwrap(),
        }
    );
    assert_eq!(
        err(r#"{"type":"cursor-update","data":{"line":1}}"#),
        ProtocolError::MissingField("column")
    );
    assert_eq!(
        err(r#"{"type":"cursor-update","data":{"column":1}}"#),
        ProtocolError::MissingField("line")
    );
    for bad in ["-1", "1.5", "\"3\"", "[]"] {
        let text = format!(r#"{{"type":"cursor-update","data":{{"line":{bad},"column":0}}}}"#);
        assert!(
            matches!(
                err(&text),
                ProtocolError::InvalidField { field: "line", .. }
            ),
            "{text}"
        );
    }
}

#[test]
fn heartbeat_and_pong() {
    assert_eq!(ok(r#"{"type":"heartbeat"}"#), ClientMessage::Heartbeat);
    assert_eq!(ok(r#"{"type":"pong"}"#), ClientMessage::Pong);
    assert_eq!(
        ok(r#"{"type":"pong","data":{"anything":[1,2,3]}}"#),
        ClientMessage::Pong
    );
}

// ---- envelope errors -----------------------------------------------------------------

#[test]
fn not_json_is_invalid_json() {
    for text in [
        "",
        "hello",
        "{",
        "{\"type\":}",
        "{'type':'auth'}",
        "{\"type\":\"pong\"} x",
    ] {
        assert!(
            matches!(err(text), ProtocolError::InvalidJson(_)),
            "{text:?}"
        );
    }
}

#[test]
fn invalid_utf8_is_invalid_json() {
    let cases: [&[u8]; 4] = [
        b"\xff\xfe",
        b"{\"type\":\"heartbeat\",\"x\":\"\xff\"}",
        b"{\"type\":\"sdp-offer\",\"data\":{\"peer\":\"bob\",\"sdp\":\"\xc3\x28\"}}",
        b"{\"type\":\"auth\",\"token\":\"\xed\xa0\x80\"}",
    ];
    for bytes in cases {
        assert!(
            matches!(
                ClientMessage::decode(bytes, MAX),
                Err(ProtocolError::InvalidJson(_))
            ),
            "{bytes:?}"
        );
    }
}

#[test]
fn non_objects_are_invalid_shape() {
    for text in [
        "[]",
        "[\"heartbeat\"]",
        "[\"auth\",null,null,\"token\"]",
        "42",
        "-1.5e3",
        "\"heartbeat\"",
        "null",
        "false",
    ] {
        assert!(
            matches!(err(text), ProtocolError::InvalidShape(_)),
            "{text}"
        );
    }
}

#[test]
fn missing_or_bad_type() {
    assert_eq!(err("{}"), ProtocolError::MissingField("type"));
    assert_eq!(
        err(r#"{"data":{"token":"t"}}"#),
        ProtocolError::MissingField("type")
    );
    assert!(matches!(
        err(r#"{"type":1}"#),
        ProtocolError::InvalidShape(_)
    ));
    assert!(matches!(
        err(r#"{"type":null}"#),
        ProtocolError::InvalidShape(_)
    ));
}

#[test]
fn unknown_type_is_reported_bounded() {
    assert_eq!(
        err(r#"{"type":"teleport"}"#),
        ProtocolError::UnknownType("teleport".into())
    );
    assert_eq!(
        err(r#"{"type":"AUTH"}"#),
        ProtocolError::UnknownType("AUTH".into())
    );
    let long = "x".repeat(10_000);
    let ProtocolError::UnknownType(echo) = err(&format!(r#"{{"type":"{long}"}}"#)) else {
        panic!("not unknown-type");
    };
    assert!(echo.chars().count() <= 161);
}

#[test]
fn escaped_type_is_understood() {
    assert_eq!(ok(r#"{"type":"heart\u0062eat"}"#), ClientMessage::Heartbeat);
}

#[test]
fn duplicate_type_is_invalid_shape() {
    assert!(matches!(
        err(r#"{"type":"auth","type":"pong"}"#),
        ProtocolError::InvalidShape(_)
    ));
}

#[test]
fn errors_quoting_input_are_bounded() {
    let big = "y".repeat(50_000);
    let text = format!(r#"{{"type":"auth","data":{{"token":"t","userName":["{big}"]}}}}"#);
    let e = err(&text);
    assert!(e.to_string().len() < 400, "{}", e.to_string().len());
}

#[test]
fn too_large_is_checked_first() {
    let text = format!(r#"{{"type":"pong","pad":"{}"}}"#, "p".repeat(100));
    let len = text.len();
    assert_eq!(
        ClientMessage::decode(text.as_bytes(), len - 1),
        Err(ProtocolError::TooLarge {
            len,
            limit: len - 1
        })
    );
    assert_eq!(
        ClientMessage::decode(text.as_bytes(), len),
        Ok(ClientMessage::Pong)
    );
    // Even garbage over the limit is "too large", not "invalid json".
    let junk = vec![0xffu8; MAX + 1];
    assert!(matches!(
        ClientMessage::decode(&junk, MAX),
        Err(ProtocolError::TooLarge { .. })
    ));
}

// ---- nesting ---------------------------------------------------------------------------

fn nested_array(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_object(depth: usize) -> String {
    let mut s = String::with_capacity(depth * 7);
    for _ in 0..depth {
        s.push_str("{\"a\":");
    }
    s.push('1');
    s.push_str(&"}".repeat(depth));
    s
}

#[test]
fn raw_value_capture_has_no_recursion_limit() {
    // Why the decoder scans nesting itself: serde_json's 128-level recursion limit
    // applies when it builds values, but raw capture (used for `data`) skips values
    // iteratively without any limit.
    let deep = nested_array(10_000);
    assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
    assert!(serde_json::from_str::<&RawValue>(&deep).is_ok());
}

#[test]
fn very_deep_top_level_array_is_an_error_without_overflow() {
    let deep = nested_array(200_000);
    let e = ClientMessage::decode(deep.as_bytes(), usize::MAX).unwrap_err();
    assert!(matches!(e, ProtocolError::InvalidJson(_)), "{e:?}");
    assert!(ServerMessage::decode(deep.as_bytes()).is_err());
    // Unclosed as well.
    let open = "[".repeat(200_000);
    assert!(ClientMessage::decode(open.as_bytes(), usize::MAX).is_err());
}

#[test]
fn very_deep_data_is_an_error_without_overflow() {
    for data in [nested_object(200_000), nested_array(200_000)] {
        for kind in ["sdp-offer", "presence", "auth", "heartbeat", "create-room"] {
            let text = format!(r#"{{"type":"{kind}","data":{data}}}"#);
            let e = ClientMessage::decode(text.as_bytes(), usize::MAX).unwrap_err();
            assert!(matches!(e, ProtocolError::InvalidJson(_)), "{kind}: {e:?}");
            assert!(ServerMessage::decode(text.as_bytes()).is_err());
        }
        let text = format!(r#"{{"type":"pong","other":{data}}}"#);
        assert!(ClientMessage::decode(text.as_bytes(), usize::MAX).is_err());
    }
}

#[test]
fn nesting_within_the_limit_is_relayed() {
    // The envelope is level 1 and `data` level 2: data may nest 63 levels deep.
    let inner = nested_array(MAX_NESTING_DEPTH - 2);
    let text = format!(r#"{{"type":"sdp-offer","data":{{"peer":"bob","x":{inner}}}}}"#);
    let ClientMessage::Signal { data, .. } = ok(&text) else {
        panic!("not a signal");
    };
    assert!(data.get().ends_with(&format!("{inner}}}")));
    let inner = nested_array(MAX_NESTING_DEPTH - 1);
    let text = format!(r#"{{"type":"sdp-offer","data":{{"peer":"bob","x":{inner}}}}}"#);
    assert!(matches!(err(&text), ProtocolError::InvalidJson(_)));
}

#[test]
fn brackets_inside_strings_do_not_count() {
    let sdp = "[".repeat(5_000) + &"{".repeat(5_000) + "\\\"[[[";
    let text = format!(r#"{{"type":"sdp-offer","data":{{"peer":"bob","sdp":"{sdp}"}}}}"#);
    assert!(matches!(ok(&text), ClientMessage::Signal { .. }));
}

// ---- encode ------------------------------------------------------------------------------

fn every_client_message() -> Vec<ClientMessage> {
    let raw = |s: &str| RawJson::from_string(s.to_owned()).unwrap();
    vec![
        ClientMessage::Auth {
            token: "tok".into(),
            user_name: None,
            room_id: None,
            user_id: None,
        },
        ClientMessage::Auth {
            token: "tok".into(),
            user_name: Some("Alice".into()),
            room_id: Some(RoomId::new("room-1").unwrap()),
            user_id: Some(UserId::new("alice").unwrap()),
        },
        ClientMessage::Refresh {
            token: "tok".into(),
        },
        ClientMessage::CreateRoom {
            room_id: Some(RoomId::new("room-1").unwrap()),
            room_name: Some("Pairing".into()),
            file_id: Some("src/main.rs".into()),
            user_name: Some("Alice".into()),
        },
        ClientMessage::CreateRoom {
            room_id: None,
            room_name: None,
            file_id: None,
            user_name: None,
        },
        ClientMessage::JoinRoom {
            room_id: Some(RoomId::new("room-1").unwrap()),
            user_name: Some("Bob".into()),
        },
        ClientMessage::JoinRoom {
            room_id: None,
            user_name: None,
        },
        ClientMessage::LeaveRoom,
        ClientMessage::Signal {
            kind: SignalKind::Offer,
            target: UserId::new("bob").unwrap(),
            data: raw(r#"{"peer":"bob","offer":{"type":"offer","sdp":"v=0"}}"#),
        },
        ClientMessage::Signal {
            kind: SignalKind::Answer,
            target: UserId::new("alice").unwrap(),
            data: raw(r#"{ "peer" : "alice", "answer": {"type":"answer","sdp":"v=0"} }"#),
        },
        ClientMessage::Signal {
            kind: SignalKind::IceCandidate,
            target: UserId::new("bob").unwrap(),
            data: raw(
                r#"{"peer":"bob","candidate":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
            ),
        },
        ClientMessage::Update {
            kind: UpdateKind::Presence,
            data: raw(r#"{"status":"away"}"#),
        },
        ClientMessage::Update {
            kind: UpdateKind::Cursor,
            data: raw(r#"{"line":3,"column":14}"#),
        },
        ClientMessage::Heartbeat,
        ClientMessage::Pong,
    ]
}

#[test]
fn client_encode_decode_round_trip() {
    for msg in every_client_message() {
        let text = msg.encode();
        assert_eq!(ok(&text), msg, "{text}");
        assert!(text.starts_with(&format!(r#"{{"type":"{}""#, msg.kind())));
    }
}

#[test]
fn kinds_are_wire_names() {
    let kinds: Vec<&str> = every_client_message()
        .iter()
        .map(ClientMessage::kind)
        .collect();
    for k in [
        "auth",
        "create-room",
        "join-room",
        "leave-room",
        "sdp-offer",
        "sdp-answer",
        "ice-candidate",
        "presence",
        "cursor-update",
        "heartbeat",
        "pong",
    ] {
        assert!(kinds.contains(&k), "{k}");
    }
}

#[test]
fn decode_errors_have_stable_codes() {
    assert_eq!(err("nope").code(), ErrorCode::InvalidJson);
    assert_eq!(err("[]").code(), ErrorCode::InvalidMessage);
    assert_eq!(err("{}").code(), ErrorCode::MissingField);
    assert_eq!(err(r#"{"type":"x"}"#).code(), ErrorCode::UnknownType);
    assert_eq!(
        err(r#"{"type":"join-room","roomId":"a b"}"#).code(),
        ErrorCode::InvalidField
    );
    assert_eq!(
        ClientMessage::decode(b"{}", 1).unwrap_err().code(),
        ErrorCode::TooLarge
    );
}

// ---- never panics --------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("bob"),
            Just("alice"),
            Just("active"),
            Just("a b"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("peer".to_owned()),
                    Just("token".to_owned()),
                    Just("status".to_owned()),
                    Just("line".to_owned()),
                    Just("column".to_owned()),
                    Just("userName".to_owned()),
                    Just("roomName".to_owned()),
                    Just("fileId".to_owned()),
                    "[a-z]{0,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn message_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("auth"),
        Just("create-room"),
        Just("join-room"),
        Just("leave-room"),
        Just("sdp-offer"),
        Just("sdp-answer"),
        Just("ice-candidate"),
        Just("presence"),
        Just("cursor-update"),
        Just("heartbeat"),
        Just("pong"),
        Just("auth-ok"),
        Just("room-joined"),
        Just("room-left"),
        Just("peer-joined"),
        Just("peer-left"),
        Just("host-changed"),
        Just("room-closed"),
        Just("error"),
        Just("nope"),
    ]
    .prop_map(str::to_owned)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = ClientMessage::decode(&bytes, MAX);
        let _ = ClientMessage::decode(&bytes, 16);
        let _ = ServerMessage::decode(&bytes);
    }

    #[test]
    fn json_ish_strings_never_panic(text in r#"[\[\]{}":,\\ a-z0-9.eE+\-]{0,200}"#) {
        let _ = ClientMessage::decode(text.as_bytes(), MAX);
        let _ = ServerMessage::decode(text.as_bytes());
    }

    #[test]
    fn json_ish_envelopes_never_panic(
        kind in message_type(),
        tail in r#"[\[\]{}":,\\ a-z0-9.\-]{0,80}"#,
    ) {
        let text = format!(r#"{{"type":"{kind}","data":{{"peer":"bob"{tail}"#);
        let _ = ClientMessage::decode(text.as_bytes(), MAX);
        let _ = ServerMessage::decode(text.as_bytes());
    }

    #[test]
    fn signals_decode_as_the_parser_alone_would(
        data in proptest::option::of(json_value()),
        raw_members in prop::collection::vec(
            (
                prop_oneof![Just("peer"), Just("pe\\u0065r"), Just("sdp"), Just("")],
                prop_oneof![
                    Just("\"bob\""), Just("\"b\\u006fb\""), Just("null"), Just("\"a b\""),
                    Just("7"), Just("[\"bob\"]"), Just("{\"peer\":\"eve\"}"),
                    Just("\"v=0\\r\\na=\\\"peer\\\":\\\"eve\\\"\""),
                ],
            ),
            0..5,
        ),
        use_raw in any::<bool>(),
        spaced in any::<bool>(),
    ) {
        // Either a generated value, or an object written by hand with escaped and
        // repeated keys, which generated maps cannot have.
        let data = if use_raw {
            let sep = if spaced { " , " } else { "," };
            let colon = if spaced { " :\n" } else { ":" };
            let members: Vec<String> = raw_members
                .iter()
                .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
                .collect();
            Some(format!("{{{}}}", members.join(sep)))
        } else {
            data.map(|d| if spaced {
                serde_json::to_string_pretty(&d).unwrap()
            } else {
                d.to_string()
            })
        };
        let text = match &data {
            Some(d) => format!(r#"{{"type":"sdp-offer","data":{d}}}"#),
            None => r#"{"type":"sdp-offer"}"#.to_owned(),
        };
        let decoded = ClientMessage::decode(text.as_bytes(), MAX);
        let expected = reference_signal_target(data.as_deref());
        match (&decoded, &expected) {
            (Ok(ClientMessage::Signal { target, data: raw, .. }), Ok(peer)) => {
                prop_assert_eq!(target, peer);
                prop_assert_eq!(Some(raw.get()), data.as_deref());
            }
            (Err(got), Err(want)) => prop_assert_eq!(got, want),
            _ => prop_assert!(false, "{}: {:?} but the parser says {:?}", text, decoded, expected),
        }
        prop_assert_eq!(ClientMessage::decode_str(&text, MAX), decoded);
    }

    #[test]
    fn decode_str_matches_decode(text in r#"[\[\]{}":,\\ a-z0-9.\-]{0,120}"#, max in 0usize..140) {
        let body = format!(r#"{{"type":"sdp-offer","data":{{"peer":"bob"{text}"#);
        prop_assert_eq!(
            ClientMessage::decode_str(&body, max),
            ClientMessage::decode(body.as_bytes(), max)
        );
        prop_assert_eq!(
            ClientMessage::decode_str(&body, MAX),
            ClientMessage::decode(body.as_bytes(), MAX)
        );
    }

    #[test]
    fn structured_messages_never_panic(
        kind in message_type(),
        data in proptest::option::of(json_value()),
        user in proptest::option::of(json_value()),
        room in proptest::option::of(json_value()),
        token in proptest::option::of(json_value()),
    ) {
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), kind.into());
        for (key, value) in [("data", data), ("userId", user), ("roomId", room), ("token", token)] {
            if let Some(v) = value {
                obj.insert(key.into(), v);
            }
        }
        let text = serde_json::Value::Object(obj).to_string();
        if let Ok(msg) = ClientMessage::decode(text.as_bytes(), MAX) {
            // What decodes re-encodes to something that decodes to the same message.
            let again = ClientMessage::decode(msg.encode().as_bytes(), MAX);
            prop_assert_eq!(again, Ok(msg));
        }
        if let Ok(msg) = ServerMessage::decode(text.as_bytes()) {
            prop_assert_eq!(ServerMessage::decode(&msg.encode()), Ok(msg));
        }
    }
}

use crate::ServerMessage;
