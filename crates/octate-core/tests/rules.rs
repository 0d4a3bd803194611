//! One test per rule of the signaling core, driven in virtual time.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{Harness, T0, mins, ms, rid, secs, uid};
use octate_core::{ConnId, CoreConfig, CoreError, CoreStats, MemoryLevel, Output};
use octate_protocol::{
    CloseCode, ErrorCode, LeaveReason, RoomCloseReason, RoomState, ServerMessage, SignalKind,
    UpdateKind,
};

fn cfg(f: impl FnOnce(&mut CoreConfig)) -> CoreConfig {
    let mut c = CoreConfig::default();
    f(&mut c);
    c
}

/// Fails unless `msg` is `peer-left` for `user` with `reason`.
fn assert_peer_left(msg: &ServerMessage, user: &str, why: LeaveReason) {
    match msg {
        ServerMessage::PeerLeft {
            room_id: _,
            peer,
            reason,
        } => {
            assert_eq!(peer.user_id, uid(user), "{msg:?}");
            assert_eq!(*reason, why, "{msg:?}");
        }
        other => panic!("expected peer-left of {user}, got {other:?}"),
    }
}

fn assert_peer_joined(msg: &ServerMessage, user: &str) {
    match msg {
        ServerMessage::PeerJoined { peer, .. } => assert_eq!(peer.user_id, uid(user), "{msg:?}"),
        other => panic!("expected peer-joined of {user}, got {other:?}"),
    }
}

fn assert_room_closed(msg: &ServerMessage, room: &str, why: RoomCloseReason) {
    assert_eq!(
        *msg,
        ServerMessage::RoomClosed {
            room_id: rid(room),
            reason: why
        }
    );
}

// ---- auth and room creation ------------------------------------------------------------

#[test]
fn auth_creates_the_room_with_the_first_user_as_host() {
    let mut h = Harness::new();
    h.advance(secs(5));
    let t = h.now;
    h.auth_named(1, "alice", "room-1", Some("Alice A."));

    let room = h.expect_room("room-1");
    assert_eq!(room.state, RoomState::Active);
    assert_eq!(room.created_at, t);
    assert_eq!(room.last_activity, t);
    assert_eq!(room.host_id, uid("alice"));
    assert_eq!(room.host_name, "Alice A.");
    assert_eq!(room.peer_count, 1);
    assert_eq!(room.peers.len(), 1);
    let alice = &room.peers[0];
    assert!(alice.is_host);
    assert_eq!(alice.user_name, "Alice A.");
    assert_eq!((alice.connected_at, alice.last_heartbeat), (t, t));

    let sent = h.sent_to(1);
    assert_eq!(
        sent,
        vec![ServerMessage::AuthOk {
            user_id: uid("alice"),
            room: room.clone(),
            ice_servers: None,
            resume: None,
        }]
    );
    assert!(h.core.is_authenticated(ConnId(1)));
    let stats = h.core.stats();
    assert_eq!((stats.rooms, stats.peers, stats.connections), (1, 1, 1));
    assert_eq!(stats.rooms_created, 1);
}

#[test]
fn display_name_defaults_to_the_user_id() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    let room = h.expect_room("r");
    assert_eq!(room.peers[0].user_name, "alice");
    assert_eq!(room.host_name, "alice");
}

#[test]
fn second_user_gets_auth_ok_with_both_peers_and_the_first_gets_peer_joined() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.advance(secs(3));
    h.drain();
    h.auth(2, "bob", "r");

    let to_bob = h.sent_to(2);
    assert_eq!(to_bob.len(), 1, "{to_bob:?}");
    let ServerMessage::AuthOk { user_id, room, .. } = &to_bob[0] else {
        panic!("expected auth-ok, got {to_bob:?}");
    };
    assert_eq!(*user_id, uid("bob"));
    assert_eq!(room.room_id, rid("r"));
    assert_eq!(room.peer_count, 2);
    let ids: Vec<_> = room.peers.iter().map(|p| p.user_id.as_str()).collect();
    assert_eq!(ids, ["alice", "bob"]);
    assert!(room.peers[0].is_host);
    assert!(!room.peers[1].is_host);
    assert_eq!(room.host_id, uid("alice"));
    assert_eq!(room.created_at, T0, "joining does not recreate the room");

    let to_alice = h.sent_to(1);
    assert_eq!(to_alice.len(), 1, "{to_alice:?}");
    assert_peer_joined(&to_alice[0], "bob");
    let ServerMessage::PeerJoined { room_id, peer } = &to_alice[0] else {
        unreachable!()
    };
    assert_eq!(*room_id, rid("r"));
    assert!(!peer.is_host);
    assert_eq!(peer.connected_at, h.now);
    assert_eq!(h.core.stats().rooms_created, 1);
}

// ---- host handover and leaving ---------------------------------------------------------

#[test]
fn host_leaving_hands_over_to_the_longest_connected_peer() {
    let mut h = Harness::new();
    // Join order differs from both ConnId order and alphabetical order.
    h.auth(5, "zoe", "r");
    h.advance(secs(1));
    h.auth(9, "yan", "r");
    h.advance(secs(1));
    h.auth(2, "xia", "r");
    h.drain();

    h.disconnect(5);

    for conn in [9, 2] {
        let sent = h.sent_to(conn);
        assert_eq!(sent.len(), 2, "conn {conn}: {sent:?}");
        assert_peer_left(&sent[0], "zoe", LeaveReason::Disconnected);
        assert_eq!(
            sent[1],
            ServerMessage::HostChanged {
                room_id: rid("r"),
                host_id: uid("yan"),
                host_name: "yan".into()
            }
        );
    }
    assert!(h.sent_to(5).is_empty(), "the leaver is told nothing");
    let room = h.expect_room("r");
    assert_eq!(room.host_id, uid("yan"));
    let hosts: Vec<_> = room.peers.iter().filter(|p| p.is_host).collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].user_id, uid("yan"));
    assert_eq!(room.peer_count, 2);
}

#[test]
fn non_host_leaving_changes_no_host() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.auth(3, "carol", "r");
    h.drain();
    h.disconnect(2);
    for conn in [1, 3] {
        let sent = h.sent_to(conn);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_peer_left(&sent[0], "bob", LeaveReason::Disconnected);
    }
    assert_eq!(h.expect_room("r").host_id, uid("alice"));
}

#[test]
fn last_peer_leaving_removes_the_room_at_once() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.disconnect(1);
    h.drain();
    h.disconnect(2);
    assert_eq!(h.removed(), vec![(rid("r"), RoomCloseReason::Empty)]);
    assert!(h.room("r").is_none());
    assert!(h.core.room_ids().next().is_none());
    let stats = h.core.stats();
    assert_eq!((stats.rooms, stats.peers, stats.connections), (0, 0, 0));
    assert_eq!(stats.rooms_closed, 1);
}

#[test]
fn last_peer_sending_leave_room_removes_the_room_but_keeps_the_connection() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.drain();
    h.send(1, r#"{"type":"leave-room"}"#);
    assert_eq!(
        h.sent_to(1),
        vec![ServerMessage::RoomLeft { room_id: rid("r") }]
    );
    assert_eq!(h.removed(), vec![(rid("r"), RoomCloseReason::Empty)]);
    assert!(h.room("r").is_none());
    assert!(h.core.is_authenticated(ConnId(1)));
    assert_eq!(h.core.stats().connections, 1);
}

// ---- liveness --------------------------------------------------------------------------

#[test]
fn every_inbound_message_refreshes_last_heartbeat() {
    let messages = [
        r#"{"type":"heartbeat"}"#,
        r#"{"type":"pong"}"#,
        r#"{"type":"presence","data":{"status":"away"}}"#,
        r#"{"type":"cursor-update","data":{"line":1,"column":2}}"#,
        r#"{"type":"sdp-offer","data":{"peer":"bob","sdp":"v=0"}}"#,
        // Refused messages prove liveness too.
        r#"{"type":"sdp-offer","data":{"peer":"nobody","sdp":"v=0"}}"#,
        r#"{"type":"join-room"}"#,
        r#"{"type":"create-room"}"#,
    ];
    for json in messages {
        let mut h = Harness::new();
        h.auth(1, "alice", "r");
        h.auth(2, "bob", "r");
        h.advance(secs(47));
        h.send(1, json);
        let room = h.expect_room("r");
        assert_eq!(room.peers[0].last_heartbeat, h.now, "{json}");
        assert_eq!(room.peers[1].last_heartbeat, T0, "{json}: bob said nothing");
    }
}

#[test]
fn a_pong_refreshes_last_heartbeat() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.advance(secs(20));
    h.pong(1);
    assert_eq!(h.expect_room("r").peers[0].last_heartbeat, T0 + 20_000);
}

#[test]
fn a_silent_peer_is_closed_at_the_first_heartbeat_after_the_timeout() {
    let mut h = Harness::new();
    let config = h.config();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.drain();
    let deadline = T0 + ms(config.peer_timeout);
    // bob answers every heartbeat; alice never does.
    while h.closed(1).is_none() {
        assert!(
            h.now <= deadline + ms(config.heartbeat_interval),
            "alice should be gone by one heartbeat after the timeout"
        );
        h.advance(config.heartbeat_interval);
        h.pong(2);
    }
    assert!(
        h.now > deadline,
        "closed before {:?} of silence",
        config.peer_timeout
    );
    assert_eq!(h.closed(1), Some(CloseCode::HeartbeatTimeout));
    assert_eq!(h.closed(2), None);
    // The close happened at a heartbeat tick, and the closed peer got no heartbeat then.
    let last_hb = h.heartbeats().pop().unwrap();
    assert_eq!(last_hb, vec![ConnId(2)]);

    let bob: Vec<_> = h
        .sent_to(2)
        .into_iter()
        .filter(|m| !matches!(m, ServerMessage::Heartbeat))
        .collect();
    assert_peer_left(&bob[0], "alice", LeaveReason::Timeout);
    assert!(
        matches!(&bob[1], ServerMessage::HostChanged { host_id, .. } if *host_id == uid("bob"))
    );
    assert_eq!(bob.len(), 2, "{bob:?}");
    assert_eq!(h.peer_ids("r"), ["bob"]);
    assert!(!h.core.is_authenticated(ConnId(1)));
    assert_eq!(h.core.stats().peers_timed_out, 1);
}

#[test]
fn a_peer_silent_just_under_the_timeout_is_kept() {
    let mut h = Harness::new();
    let config = h.config();
    h.auth(1, "alice", "r");
    h.advance(config.peer_timeout - secs(1));
    assert_eq!(h.closed(1), None);
    assert_eq!(h.peer_ids("r"), ["alice"]);
}

#[test]
fn a_peer_that_pongs_every_30_seconds_survives_an_hour() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    for i in 0..120 {
        h.advance(secs(30));
        // Alternate between the WebSocket pong and the JSON one.
        if i % 2 == 0 {
            h.pong(1);
        } else {
            h.send(1, r#"{"type":"pong"}"#);
        }
        h.send(2, r#"{"type":"heartbeat"}"#);
    }
    assert_eq!(h.now, T0 + 3_600_000);
    assert_eq!(h.closed(1), None);
    assert_eq!(h.closed(2), None);
    assert_eq!(h.peer_ids("r"), ["alice", "bob"]);
    let heartbeats = h.heartbeats();
    assert_eq!(heartbeats.len(), 120);
    assert!(heartbeats.iter().all(|to| *to == [ConnId(1), ConnId(2)]));
    assert_eq!(h.core.stats().peers_timed_out, 0);
}

#[test]
fn heartbeats_go_out_every_interval_and_early_timeouts_do_nothing() {
    let mut h = Harness::new();
    let interval = ms(h.config().heartbeat_interval);
    h.auth(3, "carol", "r");
    h.auth(1, "alice", "r");
    h.drain();
    assert_eq!(h.core.poll_timeout(), T0 + interval);

    // Early: nothing at all.
    h.skip(secs(29));
    h.tick();
    h.core.handle_timeout(T0 + interval - 1);
    assert!(h.drain().is_empty());

    h.advance(secs(1));
    assert_eq!(h.now, T0 + interval);
    assert_eq!(
        h.drain(),
        vec![Output::Heartbeat {
            to: vec![ConnId(1), ConnId(3)]
        }]
    );
    // A spurious second call at the same instant is a no-op.
    h.tick();
    assert!(h.drain().is_empty());

    h.pong(1);
    h.pong(3);
    h.advance(secs(30 * 4 - 1));
    assert_eq!(h.heartbeats().len(), 3);
    h.advance(secs(1));
    assert_eq!(h.heartbeats().len(), 4);
}

#[test]
fn heartbeats_reach_authenticated_connections_outside_rooms_and_none_go_to_nobody() {
    let mut h = Harness::new();
    h.advance(secs(30));
    assert!(h.heartbeats().is_empty(), "no connections, no heartbeat");
    h.auth(1, "alice", "r");
    h.send(1, r#"{"type":"leave-room"}"#);
    h.drain();
    h.advance(secs(30));
    assert_eq!(h.heartbeats(), vec![vec![ConnId(1)]]);
}

#[test]
fn a_silent_connection_outside_any_room_is_closed_too() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.send(1, r#"{"type":"leave-room"}"#);
    h.advance(mins(6));
    assert_eq!(h.closed(1), Some(CloseCode::HeartbeatTimeout));
    assert!(!h.core.is_authenticated(ConnId(1)));
}

// ---- cleanup ---------------------------------------------------------------------------

#[test]
fn an_empty_http_room_lives_until_the_grace_then_goes_at_the_next_cleanup() {
    let mut h = Harness::new();
    let config = h.config();
    h.advance(secs(10));
    let created = h.now;
    let meta = h.create_room("lobby", "alice").unwrap();
    assert_eq!(meta.peer_count, 0);
    assert_eq!(meta.created_at, created);
    assert!(h.drain().is_empty(), "creating a room sends nothing");

    // Cleanups run every minute; the one at T0+5 min sees only 4 min 50 s of quiet.
    h.advance_to(created + ms(config.empty_room_grace) - 1);
    assert!(h.room("lobby").is_some(), "removed before its grace");
    assert!(h.removed().is_empty());
    let first_cleanup_after = T0 + 6 * ms(config.cleanup_interval);
    h.advance_to(first_cleanup_after - 1);
    assert!(h.room("lobby").is_some());
    h.advance_to(first_cleanup_after);
    assert_eq!(h.removed(), vec![(rid("lobby"), RoomCloseReason::Empty)]);
    assert!(h.room("lobby").is_none());
    assert_eq!(h.core.stats().rooms_closed, 1);
}

#[test]
fn an_http_room_keeps_its_details_and_its_first_joiner_hosts_it() {
    let mut h = Harness::new();
    h.create_room("lobby", "alice").unwrap();
    h.advance(mins(2));
    h.auth(1, "bob", "lobby");
    let room = h.expect_room("lobby");
    assert_eq!(room.room_name, "Room lobby");
    assert_eq!(room.file_id.as_deref(), Some("file-1"));
    assert_eq!(room.version, Some(7));
    assert_eq!(room.created_at, T0);
    assert_eq!(room.host_id, uid("bob"));
    assert!(room.peers[0].is_host);
    keep_alive(&mut h, &[1], mins(30));
    assert!(
        h.room("lobby").is_some(),
        "an occupied room is not removed as empty"
    );
    assert_eq!(h.core.stats().rooms_created, 1);
}

#[test]
fn creating_an_existing_room_over_http_is_refused() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    assert_eq!(h.create_room("r", "bob"), Err(CoreError::RoomExists));
    h.create_room("s", "bob").unwrap();
    assert_eq!(h.create_room("s", "bob"), Err(CoreError::RoomExists));
    assert_eq!(h.core.stats().rooms, 2);
}

/// alice and bob keep answering heartbeats but do nothing else.
fn keep_alive(h: &mut Harness, conns: &[u64], d: std::time::Duration) {
    let end = h.now + ms(d);
    while h.now < end {
        let step = secs(30).min(std::time::Duration::from_millis(end - h.now));
        h.advance(step);
        for &c in conns {
            if h.core.is_authenticated(ConnId(c)) {
                h.pong(c);
            }
        }
    }
}

#[test]
fn an_inactive_room_is_closed_after_the_inactivity_timeout() {
    let mut h = Harness::new();
    let config = h.config();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.auth(3, "carol", "other");
    h.drain();
    // Heartbeats and pongs, as JSON or WebSocket frames, are not activity.
    keep_alive(&mut h, &[1, 2, 3], config.room_inactive_timeout - mins(1));
    h.send(1, r#"{"type":"heartbeat"}"#);
    h.send(2, r#"{"type":"pong"}"#);
    assert!(h.removed().is_empty());
    assert_eq!(h.expect_room("r").last_activity, T0);
    // carol's room gets activity just in time.
    h.send(3, r#"{"type":"presence","data":{"status":"active"}}"#);
    h.drain();

    keep_alive(&mut h, &[1, 2, 3], mins(2));
    for conn in [1, 2] {
        assert_eq!(h.closed(conn), Some(CloseCode::RoomClosed), "conn {conn}");
        let closed: Vec<_> = h
            .sent_to(conn)
            .into_iter()
            .filter(|m| !matches!(m, ServerMessage::Heartbeat))
            .collect();
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert_room_closed(&closed[0], "r", RoomCloseReason::Inactive);
    }
    assert_eq!(h.removed(), vec![(rid("r"), RoomCloseReason::Inactive)]);
    assert!(h.room("r").is_none());
    assert!(!h.core.is_authenticated(ConnId(1)));
    assert!(!h.core.is_authenticated(ConnId(2)));
    assert_eq!(h.closed(3), None);
    assert!(h.room("other").is_some());
    assert_eq!(h.core.stats().connections, 1);
}

#[test]
fn signals_updates_and_joins_count_as_activity() {
    let config = CoreConfig::default();
    type Act = fn(&mut Harness);
    let steps: [(&str, Act); 3] = [
        ("signal", |h| {
            h.send(
                1,
                r#"{"type":"ice-candidate","data":{"peer":"bob","candidate":"c"}}"#,
            );
        }),
        ("update", |h| {
            h.send(
                2,
                r#"{"type":"cursor-update","data":{"line":3,"column":4}}"#,
            );
        }),
        ("join", |h| h.auth(3, "carol", "r")),
    ];
    for (what, act) in steps {
        let mut h = Harness::new();
        h.auth(1, "alice", "r");
        h.auth(2, "bob", "r");
        keep_alive(&mut h, &[1, 2, 3], mins(120));
        act(&mut h);
        assert_eq!(h.expect_room("r").last_activity, h.now, "{what}");
        let touched = h.now;
        // Past three hours since the start, but not since the activity.
        keep_alive(&mut h, &[1, 2, 3], mins(90));
        assert!(h.room("r").is_some(), "{what} did not count as activity");
        let first_cleanup_past_timeout =
            touched + ms(config.room_inactive_timeout) + ms(config.cleanup_interval);
        let until_just_before =
            std::time::Duration::from_millis(first_cleanup_past_timeout - 1 - h.now);
        keep_alive(&mut h, &[1, 2, 3], until_just_before);
        assert!(h.room("r").is_some(), "{what}: closed before 3 h of quiet");
        keep_alive(&mut h, &[1, 2, 3], std::time::Duration::from_millis(1));
        assert!(
            h.room("r").is_none(),
            "{what}: closed 3 h after the activity"
        );
    }
}

#[test]
fn a_quiet_room_turns_idle_and_back_to_active_on_activity() {
    let mut h = Harness::new();
    let config = h.config();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    keep_alive(&mut h, &[1, 2], config.room_idle_after);
    assert_eq!(
        h.expect_room("r").state,
        RoomState::Active,
        "not idle at exactly the limit"
    );
    keep_alive(&mut h, &[1, 2], config.cleanup_interval);
    assert_eq!(h.expect_room("r").state, RoomState::Idle);
    // Pongs do not wake it up.
    h.pong(1);
    h.send(2, r#"{"type":"heartbeat"}"#);
    assert_eq!(h.expect_room("r").state, RoomState::Idle);

    h.send(
        2,
        r#"{"type":"cursor-update","data":{"line":1,"column":1}}"#,
    );
    let room = h.expect_room("r");
    assert_eq!(room.state, RoomState::Active);
    assert_eq!(room.last_activity, h.now);
    keep_alive(&mut h, &[1, 2], mins(5));
    assert_eq!(h.expect_room("r").state, RoomState::Active);
}

#[test]
fn a_join_wakes_an_idle_room() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    keep_alive(&mut h, &[1], mins(15));
    assert_eq!(h.expect_room("r").state, RoomState::Idle);
    h.auth(2, "bob", "r");
    assert_eq!(h.expect_room("r").state, RoomState::Active);
}

// ---- memory policy ---------------------------------------------------------------------

/// alice in `quiet` (no activity for 15 min, but alive), bob + carol in `busy`
/// (bob just sent an update; carol silent for 2 min), dave silent for 6 min in `busy`,
/// and an empty HTTP room past its grace. No timer ran in the meantime (late driver).
fn memory_scene() -> Harness {
    let mut h = Harness::new();
    h.create_room("empty", "erin").unwrap();
    h.auth(1, "alice", "quiet");
    h.auth(4, "dave", "busy");
    h.skip(mins(9));
    h.auth(2, "bob", "busy");
    h.skip(mins(4));
    h.auth(3, "carol", "busy");
    h.skip(mins(2));
    h.pong(1);
    h.send(2, r#"{"type":"presence","data":{"status":"active"}}"#);
    h.drain();
    h
}

#[test]
fn memory_below_warning_does_nothing() {
    let mut h = memory_scene();
    let warning = h.config().memory_warning_bytes;
    assert_eq!(h.memory(0), MemoryLevel::Normal);
    assert_eq!(h.memory(warning - 1), MemoryLevel::Normal);
    assert!(h.drain().is_empty());
    assert_eq!(h.core.stats().rooms, 3);
    assert_eq!(h.core.stats().connections, 4);
    assert_eq!(h.core.stats().memory_cleanups, 0);
}

#[test]
fn memory_warning_drops_timed_out_peers_and_runs_the_cleanup() {
    let mut h = memory_scene();
    let warning = h.config().memory_warning_bytes;
    assert_eq!(h.memory(warning), MemoryLevel::Warning);
    // dave was silent 15 min > 5 min.
    assert_eq!(h.closed(4), Some(CloseCode::HeartbeatTimeout));
    for conn in [1, 2, 3] {
        assert_eq!(h.closed(conn), None, "conn {conn}");
    }
    assert_peer_left(&h.sent_to(2)[0], "dave", LeaveReason::Timeout);
    assert_eq!(h.removed(), vec![(rid("empty"), RoomCloseReason::Empty)]);
    // The idle room survives a mere warning; the cleanup marks it idle.
    assert_eq!(h.expect_room("quiet").state, RoomState::Idle);
    assert_eq!(h.expect_room("busy").state, RoomState::Active);
    let stats = h.core.stats();
    assert_eq!((stats.rooms, stats.connections), (2, 3));
    assert_eq!(stats.memory_cleanups, 1);
    assert_eq!(stats.peers_timed_out, 1);
}

#[test]
fn memory_critical_closes_idle_rooms_and_idle_peers_but_not_active_ones() {
    let mut h = memory_scene();
    let critical = h.config().memory_critical_bytes;
    assert_eq!(h.memory(critical - 1), MemoryLevel::Warning);
    h.drain();
    assert_eq!(h.memory(critical), MemoryLevel::Critical);

    // The quiet room is closed for memory pressure although alice is alive.
    assert_eq!(h.closed(1), Some(CloseCode::RoomClosed));
    assert_room_closed(&h.sent_to(1)[0], "quiet", RoomCloseReason::MemoryPressure);
    assert!(h.room("quiet").is_none());
    assert!(
        h.removed()
            .contains(&(rid("quiet"), RoomCloseReason::MemoryPressure))
    );
    // carol is silent 2 min > idle_peer_after (1 min): dropped; bob is active and stays.
    assert_eq!(h.closed(3), Some(CloseCode::MemoryPressure));
    assert_eq!(h.closed(2), None);
    assert_peer_left(&h.sent_to(2)[0], "carol", LeaveReason::MemoryPressure);
    assert_eq!(h.peer_ids("busy"), ["bob"]);
    assert_eq!(h.expect_room("busy").host_id, uid("bob"));
    assert!(h.core.is_authenticated(ConnId(2)));
    assert_eq!(h.core.stats().connections, 1);
    assert_eq!(h.core.stats().memory_cleanups, 2);
}

#[test]
fn memory_critical_spares_a_busy_room() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.advance(secs(30));
    h.send(
        1,
        r#"{"type":"cursor-update","data":{"line":1,"column":1}}"#,
    );
    h.pong(2);
    h.drain();
    assert_eq!(h.memory(u64::MAX), MemoryLevel::Critical);
    assert!(h.drain().is_empty());
    assert_eq!(h.peer_ids("r"), ["alice", "bob"]);
}

// ---- routing ---------------------------------------------------------------------------

/// alice (1), bob (2), carol (3) in `r`; dave (4) in `r2`.
fn routing_scene() -> Harness {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.auth(3, "carol", "r");
    h.auth(4, "dave", "r2");
    h.advance(secs(1));
    h.drain();
    h
}

#[test]
fn signals_reach_only_their_target_stamped_with_the_real_sender_and_byte_identical() {
    for (kind, wire) in [
        (SignalKind::Offer, "sdp-offer"),
        (SignalKind::Answer, "sdp-answer"),
        (SignalKind::IceCandidate, "ice-candidate"),
    ] {
        let mut h = routing_scene();
        // Odd spacing, key order, escapes and number formats must survive untouched.
        let data = r#"{ "sdp" : "v=0\r\no=- 1 2 IN IP4 0.0.0.0", "peer":"bob", "n": 1.50e0, "u":"\u00e9" }"#;
        let json = format!(r#"{{"type":"{wire}","userId":"carol","roomId":"r2","data":{data}}}"#);
        h.send(1, &json);

        assert_eq!(h.out.len(), 1, "{wire}: {:?}", h.out);
        let Output::Send { to, msg } = &h.out[0] else {
            panic!("{wire}: expected one send, got {:?}", h.out);
        };
        assert_eq!(*to, ConnId(2));
        let ServerMessage::Signal {
            kind: k,
            from,
            room_id,
            data: relayed,
        } = msg
        else {
            panic!("{wire}: {msg:?}");
        };
        assert_eq!(*k, kind);
        assert_eq!(
            *from,
            uid("alice"),
            "from comes from the token, not the JSON"
        );
        assert_eq!(*room_id, rid("r"));
        assert_eq!(relayed.get(), data);
        let encoded = String::from_utf8(msg.encode()).unwrap();
        assert!(encoded.contains(data), "{encoded}");
        assert!(encoded.contains(r#""userId":"alice""#), "{encoded}");
        for other in [1, 3, 4] {
            assert!(h.sent_to(other).is_empty(), "{wire}: conn {other}");
        }
        assert_eq!(h.core.stats().messages_relayed, 1);
    }
}

#[test]
fn a_signal_to_an_unknown_peer_is_an_error_for_the_sender_only() {
    let mut h = routing_scene();
    h.send(
        1,
        r#"{"type":"sdp-offer","data":{"peer":"mallory","sdp":"v=0"}}"#,
    );
    assert_eq!(h.errors_to(1), [ErrorCode::PeerNotFound]);
    assert_eq!(h.out.len(), 1);
    assert_eq!(h.core.stats().messages_relayed, 0);
}

#[test]
fn a_signal_never_crosses_rooms() {
    let mut h = routing_scene();
    h.send(
        1,
        r#"{"type":"sdp-offer","data":{"peer":"dave","sdp":"v=0"}}"#,
    );
    h.send(
        4,
        r#"{"type":"ice-candidate","data":{"peer":"alice","candidate":"c"}}"#,
    );
    assert_eq!(h.errors_to(1), [ErrorCode::PeerNotFound]);
    assert_eq!(h.errors_to(4), [ErrorCode::PeerNotFound]);
    assert_eq!(h.out.len(), 2, "{:?}", h.out);
}

#[test]
fn a_signal_to_oneself_is_refused() {
    let mut h = routing_scene();
    h.send(
        2,
        r#"{"type":"sdp-answer","data":{"peer":"bob","sdp":"v=0"}}"#,
    );
    assert_eq!(h.out.len(), 1, "{:?}", h.out);
    assert_eq!(h.errors_to(2), [ErrorCode::PeerNotFound]);
}

#[test]
fn a_signal_from_outside_a_room_is_refused() {
    let mut h = routing_scene();
    h.send(3, r#"{"type":"leave-room"}"#);
    h.drain();
    h.send(
        3,
        r#"{"type":"sdp-offer","data":{"peer":"alice","sdp":"v=0"}}"#,
    );
    h.send(3, r#"{"type":"presence","data":{"status":"idle"}}"#);
    assert_eq!(h.errors_to(3), [ErrorCode::NotInRoom, ErrorCode::NotInRoom]);
    assert_eq!(h.out.len(), 2, "{:?}", h.out);
}

#[test]
fn updates_reach_every_other_peer_of_the_room_only() {
    for (kind, json, data) in [
        (
            UpdateKind::Presence,
            r#"{"type":"presence","userId":"bob","data":{"status":"away","extra":[1, 2]}}"#,
            r#"{"status":"away","extra":[1, 2]}"#,
        ),
        (
            UpdateKind::Cursor,
            r#"{"type":"cursor-update","data":{"line":10,"column":4, "sel":null}}"#,
            r#"{"line":10,"column":4, "sel":null}"#,
        ),
    ] {
        let mut h = routing_scene();
        h.send(1, json);
        assert_eq!(h.out.len(), 1, "{:?}", h.out);
        let Output::Broadcast { to, msg } = &h.out[0] else {
            panic!("expected a broadcast, got {:?}", h.out);
        };
        let mut to = to.clone();
        to.sort();
        assert_eq!(to, [ConnId(2), ConnId(3)]);
        assert_eq!(
            *msg,
            ServerMessage::Update {
                kind,
                from: uid("alice"),
                room_id: rid("r"),
                data: octate_protocol::RawJson::from_string(data.into()).unwrap(),
            }
        );
        let ServerMessage::Update { data: d, .. } = msg else {
            unreachable!()
        };
        assert_eq!(d.get(), data);
        assert!(h.sent_to(1).is_empty());
        assert!(h.sent_to(4).is_empty());
        assert_eq!(h.core.stats().messages_relayed, 2);
    }
}

#[test]
fn an_update_in_a_room_of_one_goes_nowhere_and_is_no_error() {
    let mut h = routing_scene();
    h.send(4, r#"{"type":"presence","data":{"status":"active"}}"#);
    assert!(h.out.is_empty(), "{:?}", h.out);
}

// ---- authentication misuse -------------------------------------------------------------

#[test]
fn messages_before_auth_are_refused() {
    let mut h = routing_scene();
    for json in [
        r#"{"type":"join-room"}"#,
        r#"{"type":"create-room","roomId":"r"}"#,
        r#"{"type":"leave-room"}"#,
        r#"{"type":"sdp-offer","data":{"peer":"alice","sdp":"v=0"}}"#,
        r#"{"type":"presence","data":{"status":"active"}}"#,
        r#"{"type":"heartbeat"}"#,
        r#"{"type":"pong"}"#,
        r#"{"type":"auth","token":"t"}"#,
    ] {
        h.send(99, json);
        assert_eq!(h.errors_to(99), [ErrorCode::NotAuthenticated], "{json}");
        assert_eq!(h.drain().len(), 1, "{json}");
        assert!(!h.core.is_authenticated(ConnId(99)));
    }
    h.pong(99);
    assert!(h.drain().is_empty());
    assert_eq!(h.core.stats().connections, 4);
    assert_eq!(h.peer_ids("r"), ["alice", "bob", "carol"]);
}

#[test]
fn a_second_auth_is_refused_and_changes_nothing() {
    let mut h = routing_scene();
    h.auth(1, "alice", "elsewhere");
    h.auth(1, "mallory", "r");
    h.send(1, r#"{"type":"auth","data":{"token":"t"}}"#);
    assert_eq!(h.errors_to(1), [ErrorCode::AlreadyAuthenticated; 3]);
    assert_eq!(h.out.len(), 3, "{:?}", h.out);
    assert!(h.room("elsewhere").is_none());
    assert_eq!(h.peer_ids("r"), ["alice", "bob", "carol"]);
    assert_eq!(h.closed(1), None);
}

// ---- room commands ---------------------------------------------------------------------

#[test]
fn create_room_for_an_existing_room_is_refused() {
    let mut h = routing_scene();
    h.send(1, r#"{"type":"create-room","roomId":"r"}"#);
    assert_eq!(h.errors_to(1), [ErrorCode::RoomExists]);
    assert_eq!(h.out.len(), 1, "{:?}", h.out);
    h.send(2, r#"{"type":"leave-room"}"#);
    h.drain();
    // bob is out, but the room still exists.
    h.send(2, r#"{"type":"create-room","data":{"roomName":"mine"}}"#);
    assert_eq!(h.errors_to(2), [ErrorCode::RoomExists]);
    assert_eq!(h.expect_room("r").room_name, "r");
    assert_eq!(h.peer_ids("r"), ["alice", "carol"]);
}

#[test]
fn create_room_after_the_room_is_gone_creates_it_with_its_details() {
    let mut h = routing_scene();
    h.send(4, r#"{"type":"leave-room"}"#);
    assert!(h.room("r2").is_none());
    h.advance(secs(5));
    h.drain();
    h.send(
        4,
        r#"{"type":"create-room","roomId":"r2","data":{"roomName":"Design review","fileId":"f-9","userName":"Dave D."}}"#,
    );
    let sent = h.sent_to(4);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let ServerMessage::RoomJoined { user_id, room, .. } = &sent[0] else {
        panic!("{sent:?}")
    };
    assert_eq!(*user_id, uid("dave"));
    assert_eq!(room.room_name, "Design review");
    assert_eq!(room.file_id.as_deref(), Some("f-9"));
    assert_eq!(room.created_at, h.now);
    assert_eq!(room.host_name, "Dave D.");
    assert_eq!(room.peers[0].user_name, "Dave D.");
    assert_eq!(h.core.stats().rooms_created, 3);
}

#[test]
fn naming_a_room_other_than_the_tokens_is_forbidden() {
    let mut h = routing_scene();
    h.send(4, r#"{"type":"leave-room"}"#);
    h.drain();
    h.send(4, r#"{"type":"join-room","roomId":"r"}"#);
    h.send(4, r#"{"type":"create-room","roomId":"r"}"#);
    h.send(4, r#"{"type":"create-room","roomId":"new-room"}"#);
    h.send(1, r#"{"type":"join-room","roomId":"r2"}"#);
    assert_eq!(h.errors_to(4), [ErrorCode::Forbidden; 3]);
    assert_eq!(h.errors_to(1), [ErrorCode::Forbidden]);
    assert_eq!(h.out.len(), 4, "{:?}", h.out);
    assert_eq!(h.peer_ids("r"), ["alice", "bob", "carol"]);
    assert!(h.room("new-room").is_none());
    assert!(h.room("r2").is_none());
}

#[test]
fn leave_room_then_join_room() {
    let mut h = routing_scene();
    h.send(2, r#"{"type":"leave-room"}"#);
    assert_eq!(
        h.sent_to(2),
        [ServerMessage::RoomLeft { room_id: rid("r") }]
    );
    for conn in [1, 3] {
        let sent = h.sent_to(conn);
        assert_eq!(sent.len(), 1);
        assert_peer_left(&sent[0], "bob", LeaveReason::Left);
    }
    assert_eq!(h.peer_ids("r"), ["alice", "carol"]);
    assert!(h.core.is_authenticated(ConnId(2)));
    h.advance(secs(1));
    h.drain();

    h.send(
        2,
        r#"{"type":"join-room","roomId":"r","data":{"userName":"Bobby"}}"#,
    );
    let sent = h.sent_to(2);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let ServerMessage::RoomJoined { user_id, room, .. } = &sent[0] else {
        panic!("{sent:?}")
    };
    assert_eq!(*user_id, uid("bob"));
    let ids: Vec<_> = room.peers.iter().map(|p| p.user_id.as_str()).collect();
    assert_eq!(ids, ["alice", "carol", "bob"], "bob rejoins at the back");
    assert_eq!(room.peers[2].user_name, "Bobby");
    assert_eq!(room.peers[2].connected_at, h.now);
    for conn in [1, 3] {
        let sent = h.sent_to(conn);
        assert_eq!(sent.len(), 1);
        assert_peer_joined(&sent[0], "bob");
    }
    assert!(h.sent_to(4).is_empty());
}

#[test]
fn leave_room_when_not_in_a_room_is_refused() {
    let mut h = routing_scene();
    h.send(2, r#"{"type":"leave-room"}"#);
    h.drain();
    h.send(2, r#"{"type":"leave-room"}"#);
    assert_eq!(h.errors_to(2), [ErrorCode::NotInRoom]);
    assert_eq!(h.out.len(), 1);
}

#[test]
fn join_room_when_already_in_it_answers_again_without_duplicating() {
    let mut h = routing_scene();
    h.send(2, r#"{"type":"join-room","data":{"userName":"renamed"}}"#);
    assert_eq!(h.kinds_to(2), ["room-joined"]);
    assert_eq!(h.out.len(), 1, "nobody else hears of it: {:?}", h.out);
    assert_eq!(h.peer_ids("r"), ["alice", "bob", "carol"]);
    assert_eq!(h.expect_room("r").peers[1].user_name, "bob");
}

// ---- limits ----------------------------------------------------------------------------

#[test]
fn a_full_room_refuses_and_closes_the_extra_peer() {
    let mut h = Harness::with_config(cfg(|c| c.max_peers_per_room = 2));
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.drain();
    h.auth(3, "carol", "r");
    assert_eq!(h.errors_to(3), [ErrorCode::RoomFull]);
    assert!(h.closed(3).is_some());
    assert!(!h.core.is_authenticated(ConnId(3)));
    assert!(h.sent_to(1).is_empty() && h.sent_to(2).is_empty());
    assert_eq!(h.peer_ids("r"), ["alice", "bob"]);
    // A replacement is not an extra peer.
    h.drain();
    h.auth(4, "bob", "r");
    assert_eq!(h.kinds_to(4), ["auth-ok"]);
    // Room for one more once someone leaves.
    h.disconnect(1);
    h.auth(5, "carol", "r");
    assert_eq!(h.kinds_to(5), ["auth-ok"]);
}

#[test]
fn the_room_limit_refuses_new_rooms_until_one_is_removed() {
    let mut h = Harness::with_config(cfg(|c| c.max_rooms = 2));
    h.auth(1, "alice", "r1");
    h.create_room("r2", "bob").unwrap();
    h.drain();
    h.auth(3, "carol", "r3");
    assert_eq!(h.errors_to(3), [ErrorCode::TooManyRooms]);
    assert!(h.closed(3).is_some());
    assert!(h.room("r3").is_none());
    assert_eq!(h.create_room("r4", "dave"), Err(CoreError::TooManyRooms));
    // Joining an existing room is fine.
    h.auth(4, "dave", "r1");
    assert_eq!(h.kinds_to(4), ["auth-ok"]);

    h.delete_room("r2").unwrap();
    h.drain();
    h.auth(5, "carol", "r3");
    assert_eq!(h.kinds_to(5), ["auth-ok"]);
}

#[test]
fn the_per_user_room_limit_frees_up_when_a_room_is_removed() {
    let mut h = Harness::with_config(cfg(|c| c.max_rooms_per_user = 2));
    h.auth(1, "alice", "r1");
    h.create_room("r2", "alice").unwrap();
    h.drain();
    h.auth(3, "alice", "r3");
    assert_eq!(h.errors_to(3), [ErrorCode::TooManyRoomsForUser]);
    assert!(h.closed(3).is_some());
    assert!(h.room("r3").is_none());
    assert_eq!(
        h.create_room("r4", "alice"),
        Err(CoreError::TooManyRoomsForUser)
    );
    // Other users are not limited by alice's rooms.
    h.auth(4, "bob", "r4");
    assert_eq!(h.kinds_to(4), ["auth-ok"]);
    // alice may join a room someone else created.
    h.auth(5, "alice", "r4");
    assert_eq!(h.kinds_to(5), ["auth-ok"]);

    // Her room r1 goes away when she leaves it: the count frees up.
    h.disconnect(1);
    assert!(h.room("r1").is_none());
    h.drain();
    h.auth(6, "alice", "r3");
    assert_eq!(h.kinds_to(6), ["auth-ok"]);
    assert_eq!(
        h.create_room("r5", "alice"),
        Err(CoreError::TooManyRoomsForUser)
    );
}

#[test]
fn a_room_counts_for_its_creator_even_after_the_creator_leaves() {
    let mut h = Harness::with_config(cfg(|c| c.max_rooms_per_user = 1));
    h.auth(1, "alice", "r1");
    h.auth(2, "bob", "r1");
    h.disconnect(1);
    h.drain();
    assert_eq!(
        h.create_room("r2", "alice"),
        Err(CoreError::TooManyRoomsForUser)
    );
    h.disconnect(2);
    h.create_room("r2", "alice").unwrap();
}

// ---- replacement -----------------------------------------------------------------------

#[test]
fn the_same_user_again_replaces_the_old_connection() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.auth(3, "carol", "r");
    h.advance(secs(10));
    h.drain();

    h.auth(7, "bob", "r");
    assert_eq!(h.closed(2), Some(CloseCode::Replaced));
    assert!(h.sent_to(2).is_empty(), "the old connection is only closed");
    assert!(!h.core.is_authenticated(ConnId(2)));
    assert!(h.core.is_authenticated(ConnId(7)));
    for conn in [1, 3] {
        let sent = h.sent_to(conn);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_peer_left(&sent[0], "bob", LeaveReason::Replaced);
        assert_peer_joined(&sent[1], "bob");
    }
    let sent = h.sent_to(7);
    assert_eq!(sent.len(), 1);
    let ServerMessage::AuthOk { room, .. } = &sent[0] else {
        panic!("{sent:?}")
    };
    let ids: Vec<_> = room.peers.iter().map(|p| p.user_id.as_str()).collect();
    assert_eq!(ids, ["alice", "carol", "bob"]);
    assert_eq!(h.peer_ids("r"), ["alice", "carol", "bob"]);

    // Signals for bob now reach the new connection.
    h.drain();
    h.send(
        1,
        r#"{"type":"sdp-offer","data":{"peer":"bob","sdp":"v=0"}}"#,
    );
    assert_eq!(h.kinds_to(7), ["sdp-offer"]);
    // The old connection's late disconnect does not remove bob.
    h.drain();
    h.disconnect(2);
    assert!(h.drain().is_empty());
    assert_eq!(h.peer_ids("r"), ["alice", "carol", "bob"]);
}

#[test]
fn a_user_alone_in_a_room_can_reconnect() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.advance(secs(10));
    h.drain();
    h.auth(2, "alice", "r");
    assert_eq!(h.closed(1), Some(CloseCode::Replaced));
    assert_eq!(h.closed(2), None);
    assert_eq!(h.kinds_to(2), ["auth-ok"]);
    assert!(
        h.removed().is_empty(),
        "the room was not dropped: {:?}",
        h.removed()
    );
    let room = h.expect_room("r");
    assert_eq!(room.created_at, T0, "same room, not a new one");
    assert_eq!(h.peer_ids("r"), ["alice"]);
    assert!(room.peers[0].is_host);
    assert_eq!(room.peers[0].connected_at, h.now);
    assert_eq!(h.core.stats().rooms_created, 1);
    assert_eq!(h.core.stats().connections, 1);
}

#[test]
fn a_left_connection_rejoining_replaces_the_users_newer_connection() {
    let mut h = Harness::new();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.send(2, r#"{"type":"leave-room"}"#);
    h.auth(3, "bob", "r");
    h.drain();
    h.send(2, r#"{"type":"join-room"}"#);
    assert_eq!(h.closed(3), Some(CloseCode::Replaced));
    assert_eq!(h.kinds_to(2), ["room-joined"]);
    assert_eq!(h.peer_ids("r"), ["alice", "bob"]);
}

// ---- delete and disconnect -------------------------------------------------------------

#[test]
fn deleting_a_room_closes_its_members_and_nothing_else() {
    let mut h = routing_scene();
    h.delete_room("r").unwrap();
    for conn in [1, 2, 3] {
        let sent = h.sent_to(conn);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_room_closed(&sent[0], "r", RoomCloseReason::Deleted);
        assert_eq!(h.closed(conn), Some(CloseCode::RoomClosed));
        assert!(!h.core.is_authenticated(ConnId(conn)));
    }
    // The broadcast comes before the closes.
    let first_close = h.out.iter().position(|o| matches!(o, Output::Close { .. }));
    let broadcast = h
        .out
        .iter()
        .position(|o| matches!(o, Output::Broadcast { .. }));
    assert!(broadcast < first_close);
    assert_eq!(h.removed(), vec![(rid("r"), RoomCloseReason::Deleted)]);
    assert!(h.room("r").is_none());
    assert!(h.sent_to(4).is_empty());
    assert_eq!(h.closed(4), None);
    let stats = h.core.stats();
    assert_eq!((stats.rooms, stats.peers, stats.connections), (1, 1, 1));

    h.drain();
    for conn in [1, 2, 3] {
        h.disconnect(conn);
    }
    assert!(
        h.drain().is_empty(),
        "a disconnect after the close is a no-op"
    );
    assert_eq!(h.delete_room("r"), Err(CoreError::RoomNotFound));
    assert!(h.drain().is_empty());
}

#[test]
fn deleting_an_empty_or_unknown_room() {
    let mut h = Harness::new();
    assert_eq!(h.delete_room("nope"), Err(CoreError::RoomNotFound));
    h.create_room("lobby", "alice").unwrap();
    h.delete_room("lobby").unwrap();
    assert_eq!(
        h.drain(),
        vec![Output::RoomRemoved {
            room_id: rid("lobby"),
            reason: RoomCloseReason::Deleted
        }]
    );
    assert!(h.room("lobby").is_none());
}

#[test]
fn disconnecting_an_unknown_connection_is_a_no_op() {
    let mut h = routing_scene();
    let before = h.core.stats();
    h.disconnect(42);
    h.pong(42);
    assert!(h.drain().is_empty());
    assert_eq!(h.core.stats(), before);
}

#[test]
fn stats_count_rooms_peers_and_connections() {
    let mut h = Harness::new();
    assert_eq!(h.core.stats(), CoreStats::default());
    h.auth(1, "alice", "r1");
    h.auth(2, "bob", "r1");
    h.auth(3, "carol", "r2");
    h.auth(4, "dave", "r1");
    h.send(4, r#"{"type":"leave-room"}"#);
    h.create_room("lobby", "erin").unwrap();
    let stats = h.core.stats();
    assert_eq!(stats.rooms, 3);
    assert_eq!(stats.peers, 3);
    assert_eq!(stats.connections, 4);
    assert_eq!(stats.rooms_created, 3);
    assert_eq!(stats.rooms_closed, 0);

    h.send(
        1,
        r#"{"type":"sdp-offer","data":{"peer":"bob","sdp":"v=0"}}"#,
    );
    h.send(1, r#"{"type":"presence","data":{"status":"active"}}"#);
    h.send(3, r#"{"type":"presence","data":{"status":"active"}}"#);
    assert_eq!(h.core.stats().messages_relayed, 2);

    h.disconnect(3);
    h.disconnect(4);
    let stats = h.core.stats();
    assert_eq!((stats.rooms, stats.peers, stats.connections), (2, 2, 2));
    assert_eq!(stats.rooms_closed, 1);
}

// ---- shutdown --------------------------------------------------------------------------

#[test]
fn shutdown_closes_every_connection_with_1001_and_tells_nobody() {
    let mut h = Harness::new();
    h.auth(1, "alice", "room-1");
    h.auth(2, "bob", "room-1");
    h.auth(3, "carol", "room-2");
    h.send(3, r#"{"type":"leave-room"}"#);
    h.drain();

    h.core.handle_shutdown(h.now);
    let out = h.drain();
    let closes: Vec<_> = out
        .iter()
        .map(|o| match o {
            Output::Close { conn, code } => (*conn, *code),
            other => panic!("only closes at shutdown, got {other:?}"),
        })
        .collect();
    assert_eq!(
        closes,
        [1, 2, 3].map(|c| (ConnId(c), CloseCode::GoingAway)),
        "every connection, in or out of a room, in id order"
    );
    let stats = h.core.stats();
    assert_eq!((stats.rooms, stats.peers, stats.connections), (0, 0, 0));

    // Their sessions end next; that tells nobody anything either.
    for conn in [2, 1, 3] {
        h.disconnect(conn);
    }
    h.advance(mins(10));
    assert!(
        h.drain().is_empty(),
        "no peer-left, host-changed or heartbeat after shutdown"
    );
}

#[test]
fn a_connection_authenticating_after_shutdown_is_closed_with_1001() {
    let mut h = Harness::new();
    h.core.handle_shutdown(h.now);
    h.auth(7, "late", "room-9");
    assert_eq!(h.closed(7), Some(CloseCode::GoingAway));
    assert!(h.sent_to(7).is_empty(), "no auth-ok");
    assert!(h.core.room(&rid("room-9")).is_none(), "no room created");
    assert_eq!(h.core.stats().connections, 0);
}
