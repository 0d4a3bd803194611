//! Session resume on a single node: one test per rule, driven in virtual time, and a
//! property test over random sequences of logins, drops, resumes, leaves and time.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Harness, T0, ms, rid, secs, uid};
use octate_core::{
    ConnId, CoreConfig, Identity, Login, Output, ResumeIssuer, ResumeRefusal, TokenDigest, TokenRef,
};
use octate_protocol::{
    CloseCode, ErrorCode, LeaveReason, ResumeTicket, RoomId, ServerMessage, UserId,
};
use proptest::prelude::*;

// ---- A deterministic issuer and harness helpers ----------------------------------------

/// Mints `s1`, `s2`, ... as session ids and `t1`, `t2`, ... as tokens. A minted token's
/// digest is tag 1 and its number; any other string digests to tag 0 and an FNV hash, so
/// no guess can match a minted token and two minted tokens never share a digest.
#[derive(Debug, Default)]
struct CountingIssuer {
    sessions: u64,
    tokens: u64,
}

impl ResumeIssuer for CountingIssuer {
    fn session_id(&mut self) -> String {
        self.sessions += 1;
        format!("s{}", self.sessions)
    }

    fn token(&mut self) -> (String, TokenDigest) {
        self.tokens += 1;
        let token = format!("t{}", self.tokens);
        let digest = self.digest(&token);
        (token, digest)
    }

    fn digest(&self, token: &str) -> TokenDigest {
        let mut out = [0u8; 32];
        let minted = token
            .strip_prefix('t')
            .filter(|n| !n.starts_with('0'))
            .and_then(|n| n.parse::<u64>().ok());
        match minted {
            Some(n) => {
                out[0] = 1;
                out[1..9].copy_from_slice(&n.to_be_bytes());
            }
            None => {
                let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
                for b in token.bytes() {
                    hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
                out[1..9].copy_from_slice(&hash.to_be_bytes());
            }
        }
        TokenDigest(out)
    }
}

/// The grace of the resumable harnesses.
const GRACE: Duration = Duration::from_secs(10);

/// A core with resume on (grace [`GRACE`]), changed by `tweak`.
fn resumable(tweak: impl FnOnce(&mut CoreConfig)) -> Harness {
    let mut config = CoreConfig {
        resume_grace: GRACE,
        ..CoreConfig::default()
    };
    tweak(&mut config);
    let mut h = Harness::with_config(config);
    h.core
        .set_resume_issuer(Box::new(CountingIssuer::default()));
    h
}

/// What the tests do to a core beyond [`Harness`]'s own inputs.
trait ResumeHarness {
    /// `conn` dropped without leaving.
    fn lose(&mut self, conn: u64);
    /// `conn` sends `resume` with `ticket`.
    fn resume(&mut self, conn: u64, ticket: &ResumeTicket) -> Result<(), ResumeRefusal>;
    /// The newest ticket handed to `conn` in what was collected; panics without one.
    fn ticket(&self, conn: u64) -> ResumeTicket;
    /// How many suspended peers the core counts.
    fn suspended(&self) -> usize;
    /// Whether anything at all was addressed (message or close) to `conn`.
    fn touched(&self, conn: u64) -> bool;
}

impl ResumeHarness for Harness {
    fn lose(&mut self, conn: u64) {
        self.core.handle_connection_lost(self.now, ConnId(conn));
        let out = self.drain();
        self.out = out;
    }

    fn resume(&mut self, conn: u64, ticket: &ResumeTicket) -> Result<(), ResumeRefusal> {
        let result = self.core.handle_resume(
            self.now,
            ConnId(conn),
            &ticket.session_id,
            &ticket.resume_token,
        );
        let out = self.drain();
        self.out = out;
        result
    }

    fn ticket(&self, conn: u64) -> ResumeTicket {
        self.sent_to(conn)
            .into_iter()
            .filter_map(ticket_of)
            .last()
            .unwrap_or_else(|| panic!("no ticket was sent to conn {conn}: {:?}", self.out))
    }

    fn suspended(&self) -> usize {
        self.core.stats().suspended
    }

    fn touched(&self, conn: u64) -> bool {
        self.out.iter().any(|o| match o {
            Output::Close { conn: c, .. } => *c == ConnId(conn),
            other => common::message_for(other, ConnId(conn)).is_some(),
        })
    }
}

/// The ticket an `auth-ok`, `room-joined` or `resumed` carries.
fn ticket_of(msg: ServerMessage) -> Option<ResumeTicket> {
    match msg {
        ServerMessage::AuthOk { resume, .. }
        | ServerMessage::RoomJoined { resume, .. }
        | ServerMessage::Resumed { resume, .. } => resume,
        _ => None,
    }
}

/// A ticket for `session` with another token.
fn forged(session: &str, token: &str) -> ResumeTicket {
    ResumeTicket {
        session_id: session.to_owned(),
        resume_token: token.to_owned(),
    }
}

/// Alice (host, conn 1) and Bob (conn 2) in room `r`, with everything drained.
fn pair() -> Harness {
    let mut h = resumable(|_| {});
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.out.clear();
    h
}

/// Alice's ticket from her `auth-ok`, then Alice's connection dropped; drained.
fn pair_with_alice_suspended() -> (Harness, ResumeTicket) {
    let mut h = resumable(|_| {});
    h.auth(1, "alice", "r");
    let ticket = h.ticket(1);
    h.auth(2, "bob", "r");
    h.lose(1);
    h.out.clear();
    (h, ticket)
}

/// Fails unless `conn` got exactly `resume-failed` and a 4001 close, and nobody else
/// got anything.
fn assert_refused(h: &Harness, conn: u64, result: Result<(), ResumeRefusal>) {
    assert!(
        result.is_err(),
        "resume on conn {conn} succeeded: {:?}",
        h.out
    );
    assert_eq!(h.errors_to(conn), [ErrorCode::ResumeFailed], "{:?}", h.out);
    assert_eq!(h.closed(conn), Some(CloseCode::AuthFailed));
    assert_eq!(h.out.len(), 2, "only the refusal: {:?}", h.out);
    assert!(!h.core.is_authenticated(ConnId(conn)));
}

/// Fails unless `msg` is `peer-left` for `user` with `reason`.
fn assert_peer_left(msg: &ServerMessage, user: &str, why: LeaveReason) {
    match msg {
        ServerMessage::PeerLeft { peer, reason, .. } => {
            assert_eq!(peer.user_id, uid(user), "{msg:?}");
            assert_eq!(*reason, why, "{msg:?}");
        }
        other => panic!("expected peer-left of {user} ({why:?}), got {other:?}"),
    }
}

/// The offer JSON from the sender of `h.send` to `peer`.
fn offer_to(peer: &str) -> String {
    format!(r#"{{"type":"sdp-offer","data":{{"peer":"{peer}","sdp":"v=0"}}}}"#)
}

/// Asserts `to` got exactly one signal, from `from`.
fn assert_signal(h: &Harness, to: u64, from: &str) {
    let got = h.sent_to(to);
    assert!(
        matches!(got.as_slice(), [ServerMessage::Signal { from: f, .. }] if *f == uid(from)),
        "conn {to}: expected one signal from {from}, got {got:?}"
    );
}

// ---- The ticket ------------------------------------------------------------------------

#[test]
fn every_join_answer_carries_a_new_ticket_and_spends_the_one_before() {
    let mut h = resumable(|_| {});
    h.auth(1, "alice", "r");
    let first = h.ticket(1);
    h.send(1, r#"{"type":"join-room"}"#);
    let second = h.ticket(1);
    assert_eq!(second.session_id, first.session_id, "one session");
    assert_ne!(second.resume_token, first.resume_token, "a new token");
    h.auth(2, "bob", "r");
    assert_ne!(
        h.ticket(2).session_id,
        first.session_id,
        "bob's own session"
    );
    h.lose(1);
    h.out.clear();

    // The token of the auth-ok was spent by the room-joined.
    let spent = h.resume(3, &first);
    assert_eq!(spent, Err(ResumeRefusal::WrongToken));
    assert_refused(&h, 3, spent);
    assert_eq!(h.suspended(), 1, "a refused resume changes nothing");
    h.out.clear();

    h.resume(4, &second).unwrap();
    let third = h.ticket(4);
    assert_eq!(third.session_id, first.session_id);
    assert_ne!(third.resume_token, second.resume_token);

    // The token just used is spent too, even on a live session.
    h.lose(4);
    h.out.clear();
    let replay = h.resume(5, &second);
    assert_refused(&h, 5, replay);
    h.out.clear();
    h.resume(6, &third).unwrap();
    assert_eq!(h.core.stats().sessions_resumed, 2);
}

// ---- Suspension --------------------------------------------------------------------------

#[test]
fn a_lost_peer_is_suspended_quietly_keeps_its_place_and_host_and_fills_its_seat() {
    let mut h = resumable(|c| {
        c.max_peers_per_room = 2;
        c.resume_grace = secs(60);
    });
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.out.clear();
    h.lose(1);

    assert!(h.out.is_empty(), "nobody is told: {:?}", h.out);
    assert!(!h.core.is_authenticated(ConnId(1)));
    assert_eq!(h.peer_ids("r"), ["alice", "bob"]);
    assert_eq!(h.expect_room("r").host_id, uid("alice"));
    let stats = h.core.stats();
    assert_eq!(stats.suspended, 1);
    assert_eq!(stats.peers, 1, "only bob is reachable");
    assert_eq!(stats.connections, 1);

    // The suspended peer still counts against the room's size.
    h.auth(3, "carol", "r");
    assert_eq!(h.errors_to(3), [ErrorCode::RoomFull]);
    assert!(h.sent_to(2).is_empty(), "{:?}", h.out);

    // Heartbeats go to live connections only, and the peer timeout does not touch a
    // suspended peer (it has no connection to time out).
    h.out.clear();
    h.advance(h.config().heartbeat_interval);
    for to in h.heartbeats() {
        assert_eq!(to, [ConnId(2)]);
    }
    assert!(h.sent_to(2).is_empty());
    assert_eq!(h.peer_ids("r"), ["alice", "bob"]);
}

#[test]
fn a_signal_to_a_suspended_peer_is_answered_peer_unavailable_to_its_sender_only() {
    let (mut h, _) = pair_with_alice_suspended();
    for kind in ["sdp-offer", "sdp-answer", "ice-candidate"] {
        h.send(
            2,
            &format!(r#"{{"type":"{kind}","data":{{"peer":"alice","sdp":"v=0"}}}}"#),
        );
    }
    assert_eq!(h.errors_to(2), [ErrorCode::PeerUnavailable; 3]);
    assert_eq!(h.out.len(), 3, "{:?}", h.out);
    assert_eq!(h.core.stats().messages_relayed, 0);
}

#[test]
fn room_updates_skip_the_suspended_peer() {
    let (mut h, _) = pair_with_alice_suspended();
    h.auth(3, "carol", "r");
    h.out.clear();
    h.send(2, r#"{"type":"presence","data":{"status":"active"}}"#);
    h.send(
        2,
        r#"{"type":"cursor-update","data":{"line":1,"column":2}}"#,
    );
    assert_eq!(h.out.len(), 2, "{:?}", h.out);
    for o in &h.out {
        let Output::Broadcast { to, .. } = o else {
            panic!("expected a broadcast, got {o:?}");
        };
        assert_eq!(to, &[ConnId(3)]);
    }
    assert!(h.errors_to(2).is_empty());
}

// ---- Resume ------------------------------------------------------------------------------

#[test]
fn resume_hands_back_the_room_and_the_others_see_nothing() {
    let (mut h, ticket) = pair_with_alice_suspended();
    h.advance(secs(3));
    h.out.clear();
    h.resume(3, &ticket).unwrap();

    let sent = h.sent_to(3);
    let [
        ServerMessage::Resumed {
            user_id,
            room,
            resume: Some(_),
            ..
        },
    ] = sent.as_slice()
    else {
        panic!("expected one resumed with a ticket, got {sent:?}");
    };
    assert_eq!(*user_id, uid("alice"));
    assert_eq!(room.room_id, rid("r"));
    assert_eq!(room.host_id, uid("alice"));
    let peers: Vec<&str> = room.peers.iter().map(|p| p.user_id.as_str()).collect();
    assert_eq!(peers, ["alice", "bob"]);
    assert!(h.out.iter().any(|o| matches!(
        o,
        Output::Resumed { conn: ConnId(3), identity, .. }
            if identity.user_id == uid("alice") && identity.room_id == rid("r")
    )));
    assert!(!h.touched(2), "bob is told nothing: {:?}", h.out);
    assert!(h.core.is_authenticated(ConnId(3)));
    let stats = h.core.stats();
    assert_eq!((stats.suspended, stats.sessions_resumed), (0, 1));
    assert_eq!(stats.peers, 2);

    // Signals flow both ways again, on the new connection.
    h.out.clear();
    h.send(2, &offer_to("alice"));
    assert_signal(&h, 3, "bob");
    h.out.clear();
    h.send(3, &offer_to("bob"));
    assert_signal(&h, 2, "alice");

    // The grace deadline of the suspension is gone: nothing happens at it.
    h.out.clear();
    h.advance(GRACE);
    assert!(h.sent_to(2).is_empty(), "{:?}", h.out);
    assert_eq!(h.peer_ids("r"), ["alice", "bob"]);
}

#[test]
fn the_grace_ends_in_one_peer_left_timeout_at_its_deadline_and_not_before() {
    let (mut h, ticket) = pair_with_alice_suspended();
    let lost_at = h.now;
    let deadline = lost_at + ms(GRACE);

    h.advance_to(deadline - 1);
    assert!(h.sent_to(2).is_empty(), "{:?}", h.out);
    assert_eq!(h.suspended(), 1);

    h.advance_to(deadline);
    let sent = h.sent_to(2);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_peer_left(&sent[0], "alice", LeaveReason::Timeout);
    assert!(
        matches!(&sent[1], ServerMessage::HostChanged { host_id, .. } if *host_id == uid("bob")),
        "{sent:?}"
    );
    assert_eq!(h.peer_ids("r"), ["bob"]);
    let stats = h.core.stats();
    assert_eq!((stats.suspended, stats.sessions_expired), (0, 1));

    // Never a second one, and the ticket is dead.
    h.out.clear();
    h.advance(secs(3600));
    assert!(
        !h.sent_to(2)
            .iter()
            .any(|m| matches!(m, ServerMessage::PeerLeft { .. })),
        "{:?}",
        h.out
    );
    h.out.clear();
    let late = h.resume(3, &ticket);
    assert_eq!(late, Err(ResumeRefusal::UnknownSession));
    assert_refused(&h, 3, late);
}

#[test]
fn poll_timeout_names_the_grace_deadline() {
    let mut h = resumable(|c| {
        c.heartbeat_interval = secs(3600);
        c.cleanup_interval = secs(3600);
    });
    h.auth(1, "alice", "r");
    h.auth(2, "bob", "r");
    h.advance(secs(1));
    let lost_at = h.now;
    h.lose(1);
    assert_eq!(h.core.poll_timeout(), lost_at + ms(GRACE));
    h.auth(3, "carol", "r");
    h.advance(secs(2));
    h.lose(3);
    assert_eq!(h.core.poll_timeout(), lost_at + ms(GRACE), "the earliest");
    h.out.clear();
    h.core.handle_timeout(lost_at + ms(GRACE));
    let out = h.drain();
    assert!(
        out.iter().any(|o| matches!(
            common::message_for(o, ConnId(2)),
            Some(ServerMessage::PeerLeft { peer, .. }) if peer.user_id == uid("alice")
        )),
        "{out:?}"
    );
    assert_eq!(h.core.poll_timeout(), lost_at + ms(GRACE) + 2000, "carol's");
}

#[test]
fn a_late_driver_still_ends_the_grace_before_a_resume_is_judged() {
    let (mut h, ticket) = pair_with_alice_suspended();
    // No timer fires: the resume itself finds the grace over.
    h.skip(GRACE);
    let late = h.resume(3, &ticket);
    assert_eq!(late, Err(ResumeRefusal::UnknownSession));
    let to_bob = h.sent_to(2);
    assert_peer_left(&to_bob[0], "alice", LeaveReason::Timeout);
    assert_eq!(h.errors_to(3), [ErrorCode::ResumeFailed]);
    assert_eq!(h.closed(3), Some(CloseCode::AuthFailed));
    assert_eq!(h.suspended(), 0);
}

#[test]
fn a_resume_with_an_unknown_session_or_a_wrong_token_fails_and_changes_nothing() {
    let mut h = resumable(|_| {});
    h.auth(1, "alice", "r");
    let alice = h.ticket(1);
    h.auth(2, "bob", "r");
    let bob = h.ticket(2);
    h.auth(3, "carol", "other");
    let carol = h.ticket(3);
    h.lose(1);
    h.lose(3);
    h.out.clear();

    let attempts = [
        (
            forged("no-such-session", &alice.resume_token),
            ResumeRefusal::UnknownSession,
        ),
        (forged(&alice.session_id, "t999"), ResumeRefusal::WrongToken),
        (
            forged(&alice.session_id, "guess"),
            ResumeRefusal::WrongToken,
        ),
        (forged(&alice.session_id, ""), ResumeRefusal::WrongToken),
        // Another user's token in the same room, and a token of another room.
        (
            forged(&alice.session_id, &bob.resume_token),
            ResumeRefusal::WrongToken,
        ),
        (
            forged(&alice.session_id, &carol.resume_token),
            ResumeRefusal::WrongToken,
        ),
        (
            forged(&carol.session_id, &alice.resume_token),
            ResumeRefusal::WrongToken,
        ),
    ];
    for (i, (ticket, why)) in attempts.into_iter().enumerate() {
        let conn = 10 + i as u64;
        let result = h.resume(conn, &ticket);
        assert_eq!(result, Err(why), "{ticket:?}");
        assert_refused(&h, conn, result);
        assert_eq!(h.suspended(), 2);
        assert_eq!(h.peer_ids("r"), ["alice", "bob"]);
        h.out.clear();
    }
    // The real tickets still work.
    h.resume(20, &alice).unwrap();
    h.resume(21, &carol).unwrap();
    assert_eq!(h.suspended(), 0);
}

#[test]
fn of_two_racing_resumes_the_first_wins() {
    let (mut h, ticket) = pair_with_alice_suspended();
    h.resume(3, &ticket).unwrap();
    h.out.clear();
    let second = h.resume(4, &ticket);
    assert_eq!(second, Err(ResumeRefusal::WrongToken));
    assert_refused(&h, 4, second);
    h.out.clear();
    h.send(2, &offer_to("alice"));
    assert_signal(&h, 3, "bob");
}

#[test]
fn a_resume_while_the_old_connection_is_live_replaces_it_quietly() {
    let mut h = resumable(|_| {});
    h.auth(1, "alice", "r");
    let ticket = h.ticket(1);
    h.auth(2, "bob", "r");
    h.out.clear();

    h.resume(3, &ticket).unwrap();
    assert_eq!(h.closed(1), Some(CloseCode::Replaced));
    assert_eq!(h.kinds_to(3), ["resumed"]);
    assert!(!h.touched(2), "{:?}", h.out);
    assert!(!h.core.is_authenticated(ConnId(1)));

    // The old socket's end, however it is reported, changes nothing.
    h.out.clear();
    h.lose(1);
    h.disconnect(1);
    assert!(h.out.is_empty(), "{:?}", h.out);
    assert_eq!(h.suspended(), 0);
    h.send(2, &offer_to("alice"));
    assert_signal(&h, 3, "bob");
}

#[test]
fn a_fresh_auth_takes_over_a_suspended_user_and_kills_its_ticket() {
    let (mut h, ticket) = pair_with_alice_suspended();
    h.auth(3, "alice", "r");

    let to_bob = h.sent_to(2);
    assert!(to_bob.len() >= 2, "{to_bob:?}");
    assert_peer_left(&to_bob[0], "alice", LeaveReason::Replaced);
    assert!(
        matches!(to_bob.last(), Some(ServerMessage::PeerJoined { peer, .. }) if peer.user_id == uid("alice")),
        "{to_bob:?}"
    );
    assert_eq!(h.kinds_to(3), ["auth-ok"]);
    assert_ne!(h.ticket(3).session_id, ticket.session_id, "a new session");
    assert_eq!(h.suspended(), 0);
    assert_eq!(h.peer_ids("r"), ["bob", "alice"]);

    h.out.clear();
    let old = h.resume(4, &ticket);
    assert_refused(&h, 4, old);
    // And the grace deadline of the old session does nothing.
    h.out.clear();
    h.advance(GRACE);
    assert!(h.sent_to(2).is_empty(), "{:?}", h.out);
}

#[test]
fn a_fresh_auth_of_the_only_suspended_peer_keeps_the_room() {
    let mut h = resumable(|_| {});
    h.auth(1, "alice", "r");
    h.lose(1);
    h.auth(2, "alice", "r");
    assert_eq!(h.kinds_to(2), ["auth-ok"]);
    assert!(h.removed().is_empty(), "{:?}", h.out);
    assert_eq!(h.peer_ids("r"), ["alice"]);
    assert_eq!(h.suspended(), 0);
}

#[test]
fn a_fresh_auth_of_a_live_user_kills_the_old_sessions_ticket() {
    let mut h = resumable(|_| {});
    h.auth(1, "alice", "r");
    let ticket = h.ticket(1);
    h.auth(2, "alice", "r");
    assert_eq!(h.closed(1), Some(CloseCode::Replaced));
    h.out.clear();
    let old = h.resume(3, &ticket);
    assert_refused(&h, 3, old);
}

#[test]
fn leaving_on_purpose_ends_the_session_at_once() {
    // leave-room
    let mut h = pair();
    let ticket = h.ticket_after_rejoin(1);
    h.send(1, r#"{"type":"leave-room"}"#);
    assert_peer_left(&h.sent_to(2)[0], "alice", LeaveReason::Left);
    h.lose(1);
    assert_eq!(
        h.suspended(),
        0,
        "a connection out of its room is not suspended"
    );
    h.out.clear();
    let after_leave = h.resume(3, &ticket);
    assert_refused(&h, 3, after_leave);

    // A close on purpose.
    let mut h = pair();
    let ticket = h.ticket_after_rejoin(1);
    h.disconnect(1);
    assert_peer_left(&h.sent_to(2)[0], "alice", LeaveReason::Disconnected);
    assert_eq!(h.suspended(), 0);
    h.out.clear();
    let after_close = h.resume(3, &ticket);
    assert_refused(&h, 3, after_close);
}

/// Asks for a fresh ticket (`join-room` on a joined connection answers `room-joined`).
trait Rejoin {
    fn ticket_after_rejoin(&mut self, conn: u64) -> ResumeTicket;
}

impl Rejoin for Harness {
    fn ticket_after_rejoin(&mut self, conn: u64) -> ResumeTicket {
        self.send(conn, r#"{"type":"join-room"}"#);
        let ticket = self.ticket(conn);
        self.out.clear();
        ticket
    }
}

#[test]
fn a_connection_that_left_and_joined_again_gets_a_working_ticket() {
    let mut h = pair();
    let before = h.ticket_after_rejoin(1);
    h.send(1, r#"{"type":"leave-room"}"#);
    h.send(1, r#"{"type":"join-room"}"#);
    let after = h.ticket(1);
    h.lose(1);
    assert_eq!(h.suspended(), 1);
    h.out.clear();
    let stale = h.resume(3, &before);
    assert_refused(&h, 3, stale);
    h.out.clear();
    h.resume(4, &after).unwrap();
    assert_eq!(h.kinds_to(4), ["resumed"]);
}

#[test]
fn deleting_the_room_of_a_suspended_peer_ends_its_session() {
    let (mut h, ticket) = pair_with_alice_suspended();
    h.delete_room("r").unwrap();
    assert_eq!(h.closed(2), Some(CloseCode::RoomClosed));
    assert_eq!(h.suspended(), 0);
    assert!(!h.touched(1));
    h.out.clear();
    let gone = h.resume(3, &ticket);
    assert_eq!(gone, Err(ResumeRefusal::UnknownSession));
    assert_refused(&h, 3, gone);
    h.out.clear();
    h.advance(GRACE * 2);
    assert!(h.room("r").is_none());
    assert!(
        h.out
            .iter()
            .all(|o| matches!(o, Output::Heartbeat { .. } | Output::RoomRemoved { .. })),
        "{:?}",
        h.out
    );
}

#[test]
fn a_room_whose_peers_are_all_suspended_lives_until_the_grace_ends() {
    let mut h = resumable(|c| {
        c.empty_room_grace = Duration::ZERO;
        c.cleanup_interval = secs(1);
    });
    h.auth(1, "alice", "r");
    let ticket = h.ticket(1);
    h.lose(1);
    h.advance(GRACE - Duration::from_millis(1));
    assert_eq!(h.peer_ids("r"), ["alice"], "not an empty room");
    h.resume(2, &ticket).unwrap();
    h.lose(2);
    h.out.clear();
    h.advance(GRACE);
    assert!(h.room("r").is_none(), "empty once the grace ran out");
    assert_eq!(h.suspended(), 0);
}

#[test]
fn critical_memory_drops_suspended_peers() {
    let (mut h, ticket) = pair_with_alice_suspended();
    let critical = h.config().memory_critical_bytes;
    h.memory(critical);
    let to_bob = h.sent_to(2);
    assert!(!to_bob.is_empty(), "{:?}", h.out);
    assert_peer_left(&to_bob[0], "alice", LeaveReason::MemoryPressure);
    assert_eq!(
        to_bob
            .iter()
            .filter(|m| matches!(m, ServerMessage::PeerLeft { .. }))
            .count(),
        1
    );
    assert_eq!(h.suspended(), 0);
    assert_eq!(h.peer_ids("r"), ["bob"]);
    h.out.clear();
    let dropped = h.resume(3, &ticket);
    assert_refused(&h, 3, dropped);
    // And nothing at the old deadline.
    h.out.clear();
    h.advance(GRACE);
    assert!(
        !h.sent_to(2)
            .iter()
            .any(|m| matches!(m, ServerMessage::PeerLeft { .. }))
    );
}

#[test]
fn without_a_grace_or_an_issuer_there_is_no_ticket_and_a_lost_connection_leaves() {
    let no_grace = {
        let mut h = resumable(|c| c.resume_grace = Duration::ZERO);
        assert!(!h.core.resume_enabled());
        h.auth(1, "alice", "r");
        h
    };
    let no_issuer = {
        let mut h = Harness::with_config(CoreConfig {
            resume_grace: GRACE,
            ..CoreConfig::default()
        });
        assert!(!h.core.resume_enabled());
        h.auth(1, "alice", "r");
        h
    };
    for mut h in [no_grace, no_issuer] {
        let sent = h.sent_to(1);
        assert!(
            matches!(
                sent.as_slice(),
                [ServerMessage::AuthOk { resume: None, .. }]
            ),
            "{sent:?}"
        );
        h.send(1, r#"{"type":"join-room"}"#);
        assert!(
            matches!(
                h.sent_to(1).last(),
                Some(ServerMessage::RoomJoined { resume: None, .. })
            ),
            "{:?}",
            h.out
        );
        h.auth(2, "bob", "r");
        h.out.clear();
        h.lose(1);
        assert_peer_left(&h.sent_to(2)[0], "alice", LeaveReason::Disconnected);
        assert_eq!(h.suspended(), 0);
        h.out.clear();
        let refused = h.resume(3, &forged("s1", "t1"));
        assert_eq!(refused, Err(ResumeRefusal::Disabled));
        assert_refused(&h, 3, refused);
    }
}

#[test]
fn a_resumed_connection_is_held_to_the_newest_token_of_its_session() {
    let mut h = resumable(|_| {});
    let login = |user: &str, token: &str| Login {
        identity: Identity {
            user_id: uid(user),
            room_id: rid("r"),
        },
        user_name: None,
        token: TokenRef {
            token_id: Some(token.to_owned()),
            expires_at: Some(T0 + 1000),
        },
    };
    h.core
        .handle_login(h.now, ConnId(1), login("alice", "jwt-1"));
    h.out = h.drain();
    let ticket = h.ticket(1);
    let refreshed = TokenRef {
        token_id: Some("jwt-2".to_owned()),
        expires_at: Some(T0 + 9000),
    };
    h.core.handle_token_refreshed(ConnId(1), refreshed.clone());
    h.lose(1);
    h.resume(2, &ticket).unwrap();
    let held: Vec<&TokenRef> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Resumed { token, .. } => Some(token),
            _ => None,
        })
        .collect();
    assert_eq!(held, [&refreshed]);
}

#[test]
fn a_second_resume_or_auth_on_a_resumed_connection_is_refused() {
    let (mut h, ticket) = pair_with_alice_suspended();
    h.resume(3, &ticket).unwrap();
    let fresh = h.ticket(3);
    h.out.clear();
    assert_eq!(h.resume(3, &fresh), Ok(()));
    assert_eq!(h.errors_to(3), [ErrorCode::AlreadyAuthenticated]);
    assert_eq!(h.closed(3), None);
    // The ticket was not spent by the refused attempt.
    h.lose(3);
    h.resume(4, &fresh).unwrap();
}

#[test]
fn shutdown_forgets_every_session() {
    let (mut h, ticket) = pair_with_alice_suspended();
    h.core.handle_shutdown(h.now);
    h.out.clear();
    assert_eq!(h.suspended(), 0);
    assert_eq!(h.resume(3, &ticket), Ok(()));
    assert_eq!(h.closed(3), Some(CloseCode::GoingAway));
    assert!(h.kinds_to(3).is_empty(), "{:?}", h.out);
    h.out.clear();
    h.advance(GRACE * 2);
    assert!(
        h.out.iter().all(|o| !matches!(o, Output::Broadcast { .. })),
        "{:?}",
        h.out
    );
}

// ---- Random sequences --------------------------------------------------------------------

const USERS: [&str; 3] = ["u0", "u1", "u2"];
const ROOMS: [&str; 2] = ["r0", "r1"];
/// The grace of the random sequences: a few steps of time.
const SHORT_GRACE: Duration = Duration::from_millis(3000);

#[derive(Clone, Debug)]
enum Step {
    Auth {
        user: usize,
        room: usize,
    },
    /// `pick` chooses among the open connections.
    Lose {
        pick: usize,
    },
    Disconnect {
        pick: usize,
    },
    Leave {
        pick: usize,
    },
    Join {
        pick: usize,
    },
    Signal {
        pick: usize,
        target: usize,
    },
    /// `pick` chooses among every ticket ever handed out; with `newest`, the session's
    /// newest ticket instead of the one picked.
    Resume {
        pick: usize,
        newest: bool,
    },
    Advance {
        ms: u64,
    },
    /// A heap reading at the critical level.
    MemoryCritical,
    /// `DELETE /rooms/{room}`.
    DeleteRoom {
        room: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..USERS.len(), 0..ROOMS.len()).prop_map(|(user, room)| Step::Auth { user, room }),
        3 => any::<usize>().prop_map(|pick| Step::Lose { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Disconnect { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Leave { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Join { pick }),
        2 => (any::<usize>(), 0..USERS.len()).prop_map(|(pick, target)| Step::Signal { pick, target }),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(pick, newest)| Step::Resume { pick, newest }),
        2 => prop_oneof![1u64..1500, Just(3000u64), 3000u64..7000].prop_map(|ms| Step::Advance { ms }),
        1 => Just(Step::MemoryCritical),
        1 => (0..ROOMS.len()).prop_map(|room| Step::DeleteRoom { room }),
    ]
}

type Member = (RoomId, UserId);

/// What the test knows from what the core said.
#[derive(Default)]
struct Model {
    next_conn: u64,
    /// Identity of every connection the core accepted, while it may be open.
    identity: HashMap<u64, Member>,
    /// Connections that were last told they are in their room.
    joined: HashSet<u64>,
    /// Every ticket handed out, oldest first.
    tickets: Vec<ResumeTicket>,
    /// The newest token of each session, and whose session it is.
    newest: HashMap<String, (String, Member)>,
    /// Open suspension episodes: when each began, and how many `peer-left` it got.
    episodes: HashMap<Member, (u64, usize)>,
}

impl Model {
    /// Open connections (the core's word), in a stable order.
    fn open(&self, h: &Harness) -> Vec<u64> {
        let mut open: Vec<u64> = self
            .identity
            .keys()
            .copied()
            .filter(|c| h.core.is_authenticated(ConnId(*c)))
            .collect();
        open.sort_unstable();
        open
    }

    fn pick(&self, h: &Harness, pick: usize) -> Option<u64> {
        let open = self.open(h);
        (!open.is_empty()).then(|| open[pick % open.len()])
    }

    /// Learns identities, join states and tickets from one step's outputs.
    fn learn(&mut self, out: &[Output]) {
        for o in out {
            if let Output::Resumed { conn, identity, .. } = o {
                self.identity
                    .insert(conn.0, (identity.room_id.clone(), identity.user_id.clone()));
            }
            let Output::Send { to, msg } = o else {
                continue;
            };
            match msg {
                ServerMessage::AuthOk {
                    user_id,
                    room,
                    resume,
                    ..
                }
                | ServerMessage::RoomJoined {
                    user_id,
                    room,
                    resume,
                    ..
                }
                | ServerMessage::Resumed {
                    user_id,
                    room,
                    resume,
                    ..
                } => {
                    let member = (room.room_id.clone(), user_id.clone());
                    assert_eq!(self.identity.get(&to.0), Some(&member), "{o:?}");
                    self.joined.insert(to.0);
                    let ticket = resume
                        .clone()
                        .expect("resume is on: every answer has a ticket");
                    if let Some((_, owner)) = self.newest.get(&ticket.session_id) {
                        assert_eq!(owner, &member, "a session changed hands: {o:?}");
                    }
                    self.newest.insert(
                        ticket.session_id.clone(),
                        (ticket.resume_token.clone(), member),
                    );
                    self.tickets.push(ticket);
                }
                ServerMessage::RoomLeft { .. } => {
                    self.joined.remove(&to.0);
                }
                _ => {}
            }
        }
    }

    /// Members reached through an open, joined connection.
    fn live(&self, h: &Harness) -> Vec<Member> {
        self.open(h)
            .into_iter()
            .filter(|c| self.joined.contains(c))
            .map(|c| self.identity[&c].clone())
            .collect()
    }
}

/// Every member of every room.
fn members(h: &Harness) -> Vec<Member> {
    let mut all = Vec::new();
    for room in h.core.room_ids() {
        for peer in h.core.peers(room).unwrap() {
            all.push((room.clone(), peer.user_id));
        }
    }
    all
}

/// `peer-left` broadcasts of one step, by member.
fn peer_lefts(out: &[Output]) -> HashMap<Member, usize> {
    let mut count = HashMap::new();
    for o in out {
        if let Output::Broadcast {
            msg: ServerMessage::PeerLeft { room_id, peer, .. },
            ..
        } = o
        {
            *count
                .entry((room_id.clone(), peer.user_id.clone()))
                .or_default() += 1;
        }
    }
    count
}

fn run(steps: &[Step]) {
    let mut h = Harness::with_config(CoreConfig {
        resume_grace: SHORT_GRACE,
        heartbeat_interval: secs(2),
        cleanup_interval: secs(5),
        ..CoreConfig::default()
    });
    h.core
        .set_resume_issuer(Box::new(CountingIssuer::default()));
    let mut m = Model::default();
    for (i, step) in steps.iter().enumerate() {
        let live_before: HashSet<Member> = m.live(&h).into_iter().collect();
        let mut lost = None;
        let mut resumed_with = None;
        h.out.clear();
        match *step {
            Step::Auth { user, room } => {
                m.next_conn += 1;
                let conn = m.next_conn;
                m.identity
                    .insert(conn, (rid(ROOMS[room]), uid(USERS[user])));
                h.auth(conn, USERS[user], ROOMS[room]);
            }
            Step::Lose { pick } => {
                if let Some(conn) = m.pick(&h, pick) {
                    lost = m.joined.contains(&conn).then(|| m.identity[&conn].clone());
                    h.lose(conn);
                }
            }
            Step::Disconnect { pick } => {
                if let Some(conn) = m.pick(&h, pick) {
                    h.disconnect(conn);
                }
            }
            Step::Leave { pick } => {
                if let Some(conn) = m.pick(&h, pick) {
                    h.send(conn, r#"{"type":"leave-room"}"#);
                }
            }
            Step::Join { pick } => {
                if let Some(conn) = m.pick(&h, pick) {
                    h.send(conn, r#"{"type":"join-room"}"#);
                }
            }
            Step::Signal { pick, target } => {
                if let Some(conn) = m.pick(&h, pick) {
                    h.send(conn, &offer_to(USERS[target]));
                }
            }
            Step::Resume { pick, newest } => {
                if !m.tickets.is_empty() {
                    let mut ticket = m.tickets[pick % m.tickets.len()].clone();
                    let (current, owner) = m.newest[&ticket.session_id].clone();
                    if newest {
                        ticket.resume_token = current.clone();
                    }
                    m.next_conn += 1;
                    let conn = m.next_conn;
                    let result = h.resume(conn, &ticket);
                    if ticket.resume_token != current {
                        assert!(result.is_err(), "step {i}: a spent token worked");
                    }
                    if result.is_ok() {
                        resumed_with = Some((conn, owner));
                    } else {
                        assert_eq!(h.closed(conn), Some(CloseCode::AuthFailed), "step {i}");
                    }
                }
            }
            Step::Advance { ms } => h.advance(Duration::from_millis(ms)),
            Step::MemoryCritical => {
                let critical = h.config().memory_critical_bytes;
                h.memory(critical);
            }
            Step::DeleteRoom { room } => {
                let _ = h.delete_room(ROOMS[room]);
            }
        }
        m.learn(&h.out);
        if let Some((conn, owner)) = &resumed_with {
            assert_eq!(
                m.identity.get(conn),
                Some(owner),
                "step {i}: resumed as its owner"
            );
        }
        check(
            &h,
            &mut m,
            i,
            lost,
            resumed_with.map(|(_, o)| o),
            &live_before,
        );
    }
}

/// The invariants after step `i`.
fn check(
    h: &Harness,
    m: &mut Model,
    i: usize,
    lost: Option<Member>,
    resumed: Option<Member>,
    live_before: &HashSet<Member>,
) {
    let all = members(h);
    let unique: HashSet<&Member> = all.iter().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "step {i}: a user twice in a room: {all:?}"
    );

    // At most one live connection per member, and only for a member.
    let live = m.live(h);
    let live_set: HashSet<&Member> = live.iter().collect();
    assert_eq!(
        live_set.len(),
        live.len(),
        "step {i}: a member on two connections"
    );
    for member in &live {
        assert!(
            unique.contains(member),
            "step {i}: {member:?} live but not a member"
        );
    }
    let suspended: HashSet<Member> = all
        .iter()
        .filter(|mb| !live_set.contains(mb))
        .cloned()
        .collect();
    let stats = h.core.stats();
    assert_eq!(stats.suspended, suspended.len(), "step {i}: {suspended:?}");
    assert_eq!(stats.peers, live.len(), "step {i}");

    // Signals go to the live connection of their target, and to nobody suspended.
    for o in &h.out {
        if let Output::Send {
            to,
            msg: ServerMessage::Signal { room_id, .. },
        } = o
        {
            let member = m.identity.get(&to.0).unwrap_or_else(|| panic!("{o:?}"));
            assert_eq!(&member.0, room_id);
            assert!(
                live_set.contains(member),
                "step {i}: {o:?} to a dead connection"
            );
        }
    }

    // Episodes: each suspension ends once, by resume or by one peer-left.
    if let Some(member) = lost
        && suspended.contains(&member)
    {
        assert!(live_before.contains(&member), "step {i}");
        let fresh = m.episodes.insert(member.clone(), (h.now, 0));
        assert!(fresh.is_none(), "step {i}: {member:?} suspended twice");
    }
    for (member, count) in peer_lefts(&h.out) {
        if let Some(episode) = m.episodes.get_mut(&member) {
            episode.1 += count;
            assert_eq!(episode.1, 1, "step {i}: {member:?} announced gone twice");
        }
    }
    if let Some(member) = resumed {
        let (_, lefts) = m.episodes.remove(&member).unwrap_or((h.now, 0));
        assert_eq!(lefts, 0, "step {i}: {member:?} resumed after peer-left");
    }
    let grace = ms(SHORT_GRACE);
    m.episodes.retain(|member, (since, lefts)| {
        let present = unique.contains(member);
        if *lefts == 1 {
            return false;
        }
        if !present {
            // Gone without a word: only with its whole room.
            assert!(
                h.room(member.0.as_str()).is_none(),
                "step {i}: {member:?} vanished silently"
            );
            return false;
        }
        if !suspended.contains(member) {
            // Taken over by a fresh auth: told to nobody only when nobody else is there.
            let room = h.core.peers(&member.0).unwrap_or_default();
            assert!(
                room.len() == 1,
                "step {i}: {member:?} is live again without resume or peer-left"
            );
            return false;
        }
        assert!(
            h.now < *since + grace,
            "step {i}: {member:?} still suspended after its grace"
        );
        true
    });
    let open: HashSet<&Member> = m.episodes.keys().collect();
    assert_eq!(
        open,
        suspended.iter().collect(),
        "step {i}: suspended members and open episodes differ"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_suspension_ends_once_and_no_peer_is_suspended_and_live(
        steps in prop::collection::vec(step(), 1..60)
    ) {
        run(&steps);
    }
}

#[test]
fn resume_token_names_the_sessions_token_for_a_good_ticket_only_and_spends_nothing() {
    let mut h = resumable(|_| {});
    let token = TokenRef {
        token_id: Some("jwt-1".to_owned()),
        expires_at: None,
    };
    let login = Login {
        identity: Identity {
            user_id: uid("alice"),
            room_id: rid("r"),
        },
        user_name: None,
        token: token.clone(),
    };
    h.core.handle_login(h.now, ConnId(1), login);
    h.out = h.drain();
    let ticket = h.ticket(1);
    let peek = |h: &Harness, at: u64, t: &ResumeTicket| {
        h.core.resume_token(at, &t.session_id, &t.resume_token)
    };
    assert_eq!(
        peek(&h, h.now, &ticket),
        Some(token.clone()),
        "a live session"
    );
    assert_eq!(peek(&h, h.now, &forged(&ticket.session_id, "t999")), None);
    assert_eq!(peek(&h, h.now, &forged("s999", &ticket.resume_token)), None);
    h.lose(1);
    let until = h.now + ms(GRACE);
    assert_eq!(peek(&h, until - 1, &ticket), Some(token));
    assert_eq!(peek(&h, until, &ticket), None, "the grace is over");
    h.resume(2, &ticket).unwrap();
    assert_eq!(peek(&h, h.now, &ticket), None, "spent");
}
