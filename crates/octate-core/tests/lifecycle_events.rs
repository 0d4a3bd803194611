//! Lifecycle events (for webhooks) on a single node, in virtual time: each at the right
//! moment, once, with the right fields; none when the switch is off.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Harness, T0, rid, secs, uid};
use octate_core::{
    ConnId, CoreConfig, LifecycleEvent, LifecycleKind, Output, ResumeIssuer, TokenDigest,
};
use octate_protocol::{LeaveReason, ResumeTicket, RoomCloseReason, ServerMessage};

/// Mints `s1`, `s2`, ... as session ids and `t1`, `t2`, ... as tokens; a token's digest
/// is its bytes, so only the minted token matches.
#[derive(Debug, Default)]
struct CountingIssuer {
    minted: u64,
}

impl ResumeIssuer for CountingIssuer {
    fn session_id(&mut self) -> String {
        self.minted += 1;
        format!("s{}", self.minted)
    }

    fn token(&mut self) -> (String, TokenDigest) {
        self.minted += 1;
        let token = format!("t{}", self.minted);
        let digest = self.digest(&token);
        (token, digest)
    }

    fn digest(&self, token: &str) -> TokenDigest {
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(token.bytes()) {
            *o = b;
        }
        TokenDigest(out)
    }
}

const GRACE: Duration = Duration::from_secs(10);

/// A core with lifecycle events on (`events`) and resume on.
fn harness(events: bool) -> Harness {
    let mut h = Harness::with_config(CoreConfig {
        lifecycle_events: events,
        resume_grace: GRACE,
        ..CoreConfig::default()
    });
    h.core
        .set_resume_issuer(Box::new(CountingIssuer::default()));
    h
}

/// Every lifecycle event in `outputs`, as reported.
fn reported(outputs: Vec<Output>) -> Vec<LifecycleEvent> {
    outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Lifecycle(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// The lifecycle events collected so far, taking them out of `h.out`, after checking
/// that their `seq` grows and is at least their time in µs; returned with `seq` 0 so
/// that the tests compare the rest.
fn events(h: &mut Harness) -> Vec<LifecycleEvent> {
    let mut events = reported(h.drain());
    for pair in events.windows(2) {
        assert!(pair[0].seq < pair[1].seq, "seq must grow: {pair:?}");
    }
    for e in &mut events {
        assert!(e.seq >= e.at * 1000, "{e:?}");
        e.seq = 0;
    }
    events
}

fn event(at: u64, room: &str, kind: LifecycleKind, peer_count: usize) -> LifecycleEvent {
    LifecycleEvent {
        at,
        room_id: Some(rid(room)),
        kind,
        peer_count,
        seq: 0,
    }
}

/// The resume ticket handed to `conn` in `out`.
fn ticket(out: &[Output], conn: u64) -> ResumeTicket {
    out.iter()
        .filter_map(|o| common::message_for(o, ConnId(conn)))
        .find_map(|m| match m {
            ServerMessage::AuthOk { resume, .. } => resume.clone(),
            _ => None,
        })
        .expect("auth-ok with a ticket")
}

#[test]
fn first_join_creates_the_room_then_joins_and_leave_empties_it() {
    let mut h = harness(true);
    h.auth(1, "alice", "r");
    assert_eq!(
        events(&mut h),
        [
            event(T0, "r", LifecycleKind::RoomCreated, 0),
            event(T0, "r", LifecycleKind::PeerJoined(uid("alice")), 1),
        ]
    );
    h.skip(secs(1));
    h.auth(2, "bob", "r");
    assert_eq!(
        events(&mut h),
        [event(
            T0 + 1000,
            "r",
            LifecycleKind::PeerJoined(uid("bob")),
            2
        )]
    );
    h.send(2, r#"{"type":"leave-room"}"#);
    assert_eq!(
        events(&mut h),
        [event(
            T0 + 1000,
            "r",
            LifecycleKind::PeerLeft(uid("bob"), LeaveReason::Left),
            1
        )]
    );
    h.disconnect(1);
    assert_eq!(
        events(&mut h),
        [
            event(
                T0 + 1000,
                "r",
                LifecycleKind::PeerLeft(uid("alice"), LeaveReason::Disconnected),
                0
            ),
            event(
                T0 + 1000,
                "r",
                LifecycleKind::RoomClosed(RoomCloseReason::Empty),
                0
            ),
        ]
    );
}

#[test]
fn a_second_connection_of_a_user_is_one_replaced_event() {
    let mut h = harness(true);
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    events(&mut h);
    h.auth(3, "alice", "r");
    assert_eq!(
        events(&mut h),
        [event(T0, "r", LifecycleKind::PeerReplaced(uid("alice")), 2)]
    );
}

#[test]
fn a_dropped_peer_is_suspended_then_resumed() {
    let mut h = harness(true);
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    let ticket = ticket(&h.drain(), 1);
    h.core.handle_connection_lost(h.now, ConnId(1));
    assert_eq!(
        events(&mut h),
        [event(
            T0,
            "r",
            LifecycleKind::PeerSuspended(uid("alice")),
            2
        )]
    );
    h.skip(secs(2));
    h.core
        .handle_resume(h.now, ConnId(3), &ticket.session_id, &ticket.resume_token)
        .unwrap();
    assert_eq!(
        events(&mut h),
        [event(
            T0 + 2000,
            "r",
            LifecycleKind::PeerResumed(uid("alice")),
            2
        )]
    );
}

#[test]
fn a_suspended_peer_whose_grace_ends_leaves_with_timeout_once() {
    let mut h = harness(true);
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.core.handle_connection_lost(h.now, ConnId(1));
    events(&mut h);
    h.advance(GRACE + secs(1));
    let left: Vec<_> = events(&mut h);
    assert_eq!(
        left,
        [event(
            T0 + 10_000,
            "r",
            LifecycleKind::PeerLeft(uid("alice"), LeaveReason::Timeout),
            1
        )]
    );
    h.advance(GRACE);
    assert_eq!(events(&mut h), []);
}

#[test]
fn a_room_created_over_http_and_deleted_reports_both_with_its_peer_count() {
    let mut h = harness(true);
    h.create_room("r", "alice").unwrap();
    assert_eq!(
        events(&mut h),
        [event(T0, "r", LifecycleKind::RoomCreated, 0)]
    );
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    events(&mut h);
    h.delete_room("r").unwrap();
    // The peers go with the room: one event, no peer.left for each.
    assert_eq!(
        events(&mut h),
        [event(
            T0,
            "r",
            LifecycleKind::RoomClosed(RoomCloseReason::Deleted),
            2
        )]
    );
}

#[test]
fn a_kicked_peer_leaves_with_reason_kicked() {
    let mut h = harness(true);
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    events(&mut h);
    h.core.kick(h.now, &rid("r"), &uid("bob")).unwrap();
    assert_eq!(
        events(&mut h),
        [event(
            T0,
            "r",
            LifecycleKind::PeerLeft(uid("bob"), LeaveReason::Kicked),
            1
        )]
    );
}

#[test]
fn nothing_is_produced_when_the_switch_is_off() {
    let mut h = harness(false);
    h.create_room("q", "carol").unwrap();
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.auth(3, "alice", "r");
    h.core.handle_connection_lost(h.now, ConnId(2));
    h.advance(GRACE + secs(1));
    h.send(3, r#"{"type":"leave-room"}"#);
    h.delete_room("q").unwrap();
    assert_eq!(events(&mut h), []);
    assert!(!CoreConfig::default().lifecycle_events);
}

#[test]
fn a_silent_peer_leaves_with_timeout() {
    let mut h = harness(true);
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    events(&mut h);
    let timeout = h.config().peer_timeout;
    // Bob answers every heartbeat; Alice stays silent until she is dropped.
    let step = h.config().heartbeat_interval;
    let mut waited = Duration::ZERO;
    while waited <= timeout + step {
        h.advance(step);
        h.pong(2);
        waited += step;
    }
    let left: Vec<LifecycleKind> = events(&mut h).into_iter().map(|e| e.kind).collect();
    assert_eq!(
        left,
        [LifecycleKind::PeerLeft(uid("alice"), LeaveReason::Timeout)]
    );
}

#[test]
fn cleanup_closes_a_never_joined_http_room_and_an_inactive_room_once() {
    let mut h = harness(true);
    h.create_room("lonely", "carol").unwrap();
    h.auth(1, "alice", "busy");
    events(&mut h);
    // Alice answers every heartbeat but does nothing else: her room goes inactive.
    let step = h.config().heartbeat_interval;
    let stay = |h: &mut Harness, d: Duration| {
        let mut waited = Duration::ZERO;
        while waited < d {
            h.advance(step);
            h.pong(1);
            waited += step;
        }
    };
    let config = h.config();
    stay(&mut h, config.empty_room_grace + config.cleanup_interval);
    let closed: Vec<(Option<String>, LifecycleKind)> = events(&mut h)
        .into_iter()
        .map(|e| (e.room_id.map(|r| r.to_string()), e.kind))
        .collect();
    assert_eq!(
        closed,
        [(
            Some("lonely".to_owned()),
            LifecycleKind::RoomClosed(RoomCloseReason::Empty)
        )]
    );
    stay(
        &mut h,
        config.room_inactive_timeout + config.cleanup_interval,
    );
    let closed: Vec<LifecycleEvent> = events(&mut h)
        .into_iter()
        .filter(|e| matches!(e.kind, LifecycleKind::RoomClosed(_)))
        .collect();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0].room_id, Some(rid("busy")));
    assert_eq!(
        closed[0].kind,
        LifecycleKind::RoomClosed(RoomCloseReason::Inactive)
    );
    assert_eq!(closed[0].peer_count, 1);
}

#[test]
fn a_stopping_single_server_closes_each_room_with_reason_shutdown() {
    let mut h = harness(true);
    h.auth(1, "alice", "b-room");
    h.auth(2, "bob", "b-room");
    h.auth(3, "carol", "a-room");
    events(&mut h);
    h.core.handle_shutdown(T0);
    assert_eq!(
        events(&mut h),
        [
            event(
                T0,
                "a-room",
                LifecycleKind::RoomClosed(RoomCloseReason::Shutdown),
                1
            ),
            event(
                T0,
                "b-room",
                LifecycleKind::RoomClosed(RoomCloseReason::Shutdown),
                2
            ),
        ]
    );
    // With the switch off, a shutdown reports nothing either.
    let mut quiet = harness(false);
    quiet.auth(1, "alice", "r");
    quiet.core.handle_shutdown(T0);
    assert_eq!(events(&mut quiet), []);
}

#[test]
fn seq_grows_across_calls_also_within_one_millisecond() {
    let mut h = harness(true);
    let mut all = Vec::new();
    for (conn, user) in [(1, "alice"), (2, "bob"), (3, "carol")] {
        h.auth(conn, user, "r");
        all.extend(reported(h.drain()));
    }
    h.core.handle_disconnect(h.now, ConnId(2));
    all.extend(reported(h.drain()));
    h.skip(secs(1));
    h.core.handle_disconnect(h.now, ConnId(3));
    all.extend(reported(h.drain()));
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), 6, "{all:?}");
    // Five events in the first millisecond: its time in µs, then one more each.
    let first = T0 * 1000;
    assert_eq!(
        seqs[..5],
        [first, first + 1, first + 2, first + 3, first + 4]
    );
    assert_eq!(seqs[5], (T0 + 1000) * 1000);
}
