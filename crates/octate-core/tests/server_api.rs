//! The server API's commands on a single node: kicking a peer, messages from the app's
//! backend, and the paginated room list.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Harness, rid, uid};
use octate_core::{
    ConnId, CoreConfig, CoreError, Identity, Login, Output, ResumeIssuer, TokenDigest, TokenRef,
};
use octate_protocol::{
    CloseCode, ErrorCode, LeaveReason, RawJson, RoomState, ServerMessage, UserId,
};

/// Numbered session ids and tokens; a token's digest is its number.
#[derive(Debug, Default)]
struct Issuer(u64);

impl ResumeIssuer for Issuer {
    fn session_id(&mut self) -> String {
        self.0 += 1;
        format!("s{}", self.0)
    }

    fn token(&mut self) -> (String, TokenDigest) {
        self.0 += 1;
        let token = format!("t{}", self.0);
        (token.clone(), self.digest(&token))
    }

    fn digest(&self, token: &str) -> TokenDigest {
        let mut out = [0u8; 32];
        out[..token.len().min(32)].copy_from_slice(&token.as_bytes()[..token.len().min(32)]);
        TokenDigest(out)
    }
}

fn login(user: &str, room: &str, token_id: &str) -> Login {
    Login {
        identity: Identity {
            user_id: uid(user),
            room_id: rid(room),
        },
        user_name: None,
        token: TokenRef {
            token_id: Some(token_id.to_owned()),
            expires_at: None,
        },
    }
}

fn data(json: &str) -> RawJson {
    RawJson::from_string(json.to_owned()).unwrap()
}

/// Alice (host, conn 1), Bob (conn 2) and Carol (conn 3) in room `r`, outputs drained.
fn room_of_three() -> Harness {
    let mut h = Harness::new();
    for (conn, user) in [(1, "alice"), (2, "bob"), (3, "carol")] {
        h.core.handle_login(
            h.now,
            ConnId(conn),
            login(user, "r", &format!("jwt-{user}")),
        );
    }
    h.drain();
    h
}

fn left_reasons(h: &Harness, conn: u64) -> Vec<(UserId, LeaveReason)> {
    h.sent_to(conn)
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::PeerLeft { peer, reason, .. } => Some((peer.user_id, reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_kicked_peer_is_told_why_then_closed_with_4005_and_the_others_see_it_leave() {
    let mut h = room_of_three();
    let token = h.core.kick(h.now, &rid("r"), &uid("bob")).unwrap();
    h.out = h.drain();
    assert_eq!(token.token_id.as_deref(), Some("jwt-bob"));
    assert_eq!(h.errors_to(2), vec![ErrorCode::Kicked]);
    assert_eq!(h.closed(2), Some(CloseCode::Kicked));
    for other in [1, 3] {
        assert_eq!(
            left_reasons(&h, other),
            vec![(uid("bob"), LeaveReason::Kicked)]
        );
        assert_eq!(h.closed(other), None);
    }
    assert_eq!(h.peer_ids("r"), vec!["alice", "carol"]);
    // The connection is gone from the core: nothing it sends is routed any more.
    assert!(!h.core.is_authenticated(ConnId(2)));
}

#[test]
fn kicking_the_host_hands_the_room_to_the_longest_connected_peer() {
    let mut h = room_of_three();
    h.core.kick(h.now, &rid("r"), &uid("alice")).unwrap();
    h.out = h.drain();
    let to_bob = h.kinds_to(2);
    assert_eq!(to_bob, vec!["peer-left", "host-changed"]);
    assert_eq!(h.expect_room("r").host_id, uid("bob"));
}

#[test]
fn kicking_the_last_peer_removes_the_room() {
    let mut h = Harness::new();
    h.core
        .handle_login(h.now, ConnId(1), login("alice", "r", "jwt-a"));
    h.drain();
    h.core.kick(h.now, &rid("r"), &uid("alice")).unwrap();
    h.out = h.drain();
    assert_eq!(h.closed(1), Some(CloseCode::Kicked));
    assert!(h.room("r").is_none());
}

#[test]
fn kicking_an_unknown_room_or_peer_is_refused_and_changes_nothing() {
    let mut h = room_of_three();
    assert_eq!(
        h.core.kick(h.now, &rid("nope"), &uid("bob")),
        Err(CoreError::RoomNotFound)
    );
    assert_eq!(
        h.core.kick(h.now, &rid("r"), &uid("dave")),
        Err(CoreError::PeerNotFound)
    );
    assert!(h.drain().is_empty());
    assert_eq!(h.peer_ids("r").len(), 3);
}

#[test]
fn kicking_a_suspended_peer_removes_it_and_ends_its_session() {
    let mut h = Harness::with_config(CoreConfig {
        resume_grace: Duration::from_secs(30),
        ..CoreConfig::default()
    });
    h.core.set_resume_issuer(Box::new(Issuer::default()));
    h.core
        .handle_login(h.now, ConnId(1), login("alice", "r", "jwt-a"));
    h.core
        .handle_login(h.now, ConnId(2), login("bob", "r", "jwt-b"));
    let out = h.drain();
    let ticket = out
        .iter()
        .find_map(|o| match common::message_for(o, ConnId(2)) {
            Some(ServerMessage::AuthOk { resume, .. }) => resume.clone(),
            _ => None,
        })
        .expect("bob got a ticket");
    h.core.handle_connection_lost(h.now, ConnId(2));
    h.drain();
    assert_eq!(h.core.stats().suspended, 1);

    let token = h.core.kick(h.now, &rid("r"), &uid("bob")).unwrap();
    h.out = h.drain();
    assert_eq!(token.token_id.as_deref(), Some("jwt-b"));
    assert_eq!(left_reasons(&h, 1), vec![(uid("bob"), LeaveReason::Kicked)]);
    assert_eq!(h.core.stats().suspended, 0);
    assert_eq!(h.peer_ids("r"), vec!["alice"]);
    // The kicked session cannot be taken over.
    let resumed = h
        .core
        .handle_resume(h.now, ConnId(3), &ticket.session_id, &ticket.resume_token);
    assert!(resumed.is_err(), "{resumed:?}");
    assert_eq!(h.peer_ids("r"), vec!["alice"]);
}

#[test]
fn a_broadcast_reaches_every_native_peer_and_no_ywebrtc_peer() {
    let mut h = room_of_three();
    h.core
        .handle_ywebrtc_login(h.now, ConnId(4), login("yuri", "r", "jwt-y"));
    h.drain();
    let sent = h
        .core
        .server_message(&rid("r"), None, data(r#"{"notice":"bye"}"#))
        .unwrap();
    h.out = h.drain();
    assert_eq!(sent, 3);
    for conn in [1, 2, 3] {
        assert_eq!(
            h.sent_to(conn),
            vec![ServerMessage::ServerMessage {
                room_id: rid("r"),
                data: data(r#"{"notice":"bye"}"#),
            }]
        );
    }
    assert!(h.sent_to(4).is_empty());
    assert!(
        !h.out.iter().any(|o| matches!(o, Output::Forward { .. })),
        "{:?}",
        h.out
    );
}

#[test]
fn a_message_to_one_peer_reaches_only_that_peer() {
    let mut h = room_of_three();
    let sent = h
        .core
        .server_message(&rid("r"), Some(&uid("carol")), data(r#"{"n":1}"#))
        .unwrap();
    h.out = h.drain();
    assert_eq!(sent, 1);
    assert_eq!(h.kinds_to(3), vec!["server-message"]);
    assert!(h.sent_to(1).is_empty() && h.sent_to(2).is_empty());
}

#[test]
fn a_message_to_a_missing_or_ywebrtc_peer_is_refused() {
    let mut h = room_of_three();
    h.core
        .handle_ywebrtc_login(h.now, ConnId(4), login("yuri", "r", "jwt-y"));
    h.drain();
    let mut send = |room: &str, user: &str| {
        h.core
            .server_message(&rid(room), Some(&uid(user)), data("{}"))
    };
    assert_eq!(send("r", "dave"), Err(CoreError::PeerNotFound));
    assert_eq!(send("nope", "bob"), Err(CoreError::RoomNotFound));
    assert_eq!(send("r", "yuri"), Err(CoreError::PeerIncompatible));
    assert!(h.drain().is_empty());
}

#[test]
fn rooms_are_listed_in_id_order_page_after_page() {
    let mut h = Harness::new();
    for (conn, room) in [(1, "c"), (2, "a"), (3, "e"), (4, "b"), (5, "d")] {
        h.core
            .handle_login(h.now, ConnId(conn), login("u", room, "jwt"));
    }
    h.core
        .handle_login(h.now, ConnId(6), login("v", "b", "jwt"));
    h.drain();
    let first = h.core.rooms_page(None, None, 2);
    let ids: Vec<&str> = first.iter().map(|r| r.room_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(first[1].peer_count, 2);
    let next = h.core.rooms_page(None, Some(&first[1].room_id), 2);
    let ids: Vec<&str> = next.iter().map(|r| r.room_id.as_str()).collect();
    assert_eq!(ids, ["c", "d"]);
    let last = h.core.rooms_page(None, Some(&next[1].room_id), 2);
    let ids: Vec<&str> = last.iter().map(|r| r.room_id.as_str()).collect();
    assert_eq!(ids, ["e"]);
    assert!(h.core.rooms_page(None, Some(&rid("e")), 2).is_empty());
    // A cursor naming a room that is gone still pages on from its place.
    let ids: Vec<String> = h
        .core
        .rooms_page(None, Some(&rid("bb")), 10)
        .into_iter()
        .map(|r| r.room_id.as_str().to_owned())
        .collect();
    assert_eq!(ids, ["c", "d", "e"]);
}

#[test]
fn rooms_can_be_listed_by_state() {
    let mut h = Harness::new();
    h.core
        .handle_login(h.now, ConnId(1), login("u", "a", "jwt"));
    h.drain();
    assert_eq!(
        h.core.rooms_page(Some(RoomState::Active), None, 10).len(),
        1
    );
    assert!(
        h.core
            .rooms_page(Some(RoomState::Idle), None, 10)
            .is_empty()
    );
}
