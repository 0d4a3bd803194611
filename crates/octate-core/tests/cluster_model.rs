//! Several clustered cores driven through a pure model of the shared store.
//!
//! `FakeStore` does what the Redis scripts of `octate-cluster` do (commit joins and
//! leaves, elect one host per room, bump a room's version, publish whole-room snapshots
//! to the other nodes; record resume tickets, suspend a lost member, move a session to
//! the node that presents its current token, end suspensions whose grace ran out, and
//! suspend a dead node's members), and `FakeCluster` carries its answers and
//! publications to the cores in simulated time. Each node has two queues, as a real node
//! has two Redis connections: script replies and its inbox. Each is FIFO, but the
//! scheduler picks freely between them and between nodes, and may lose or repeat an
//! inbox message (a lost membership message is noticed by the receiver's sequence check
//! and repaired by a resync, as the cluster crate does). A pipelined cluster also runs
//! each node's commands late, in order, when the scheduler picks them. Connections
//! drop, resume on any node (with their newest ticket, a spent one, or twice at once),
//! the clock jumps past the resume grace, and nodes die and are reaped.
//!
//! After every step each replica and the store are checked (one host, each user once,
//! no local member on a connection the core forgot or the client lost), and every
//! `peer-left` a client is shown must name a membership the store ended: a suspension
//! that ran out is told `timeout`, one a fresh login ended `replaced` (a node that
//! missed the snapshot saying why may only say `disconnected`, or `replaced` when the
//! user is back). Once everything is delivered, every node must agree with the store,
//! and every client's own view (its `auth-ok` or `resumed` list, then every
//! `peer-joined`, `peer-left` and `host-changed` it received) must equal the room's
//! committed membership and host, suspended members included; a suspended membership
//! was never shown leaving and joining again; every refused `resume` was told
//! `resume-failed` and closed 4001, and of two racing ones at most one resumed.

#[path = "cluster_model/cluster.rs"]
mod cluster;
#[path = "cluster_model/store.rs"]
mod store;

use std::collections::HashMap;

use octate_core::{ClusterEvent, ClusterMember, ConnId, CoreError};
use octate_protocol::{CloseCode, LeaveReason, RoomId, UserId};
use proptest::prelude::*;

use cluster::{FakeCluster, PeerEvent};

const T0: u64 = 1_700_000_000_000;

/// How long a lost connection's member stays suspended, in the cores and the store.
const GRACE_MS: u64 = 10_000;

fn rid(s: &str) -> RoomId {
    RoomId::new(s).expect("room id")
}

fn uid(s: &str) -> UserId {
    UserId::new(s).expect("user id")
}

// ---- rules ---------------------------------------------------------------------------

#[test]
fn peers_on_two_nodes_see_one_room_and_one_host() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let b = c.connect(1, "bob", "r");
    c.settle();
    c.check_converged();
    let alice = &c.views[&(0, a)];
    let bob = &c.views[&(1, b)];
    assert_eq!(alice.peers, vec![uid("alice"), uid("bob")]);
    assert_eq!(bob.peers, vec![uid("alice"), uid("bob")]);
    assert_eq!(bob.host, Some(uid("alice")));
}

#[test]
fn a_signal_reaches_a_peer_on_another_node_stamped_with_its_sender() {
    let mut c = FakeCluster::new(2, 50);
    let _a = c.connect(0, "alice", "r");
    let b = c.connect(1, "bob", "r");
    c.settle();
    let a = ConnId(1);
    for seq in 0..5 {
        c.signal(0, a, "bob", seq);
    }
    c.settle();
    let got = &c.received[&(1, b)];
    assert_eq!(
        got,
        &(0..5).map(|s| (uid("alice"), s)).collect::<Vec<_>>(),
        "exactly once, in order, stamped"
    );
}

#[test]
fn the_host_leaving_on_one_node_moves_the_host_on_every_node() {
    let mut c = FakeCluster::new(3, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let _b = c.connect(1, "bob", "r");
    c.settle();
    let _c3 = c.connect(2, "carol", "r");
    c.settle();
    c.disconnect(0, a);
    c.settle();
    c.check_converged();
    assert_eq!(c.store.rooms[&rid("r")].host, Some(uid("bob")));
}

#[test]
fn the_same_user_on_another_node_replaces_the_old_session() {
    let mut c = FakeCluster::new(2, 50);
    let a1 = c.connect(0, "alice", "r");
    let _b = c.connect(0, "bob", "r");
    c.settle();
    let a2 = c.connect(1, "alice", "r");
    c.settle();
    assert!(c.views[&(0, a1)].closed, "the old session is closed");
    assert!(!c.views[&(1, a2)].closed);
    c.check_converged();
}

#[test]
fn a_full_room_refuses_a_joiner_on_any_node() {
    let mut c = FakeCluster::new(2, 2);
    c.connect(0, "alice", "r");
    c.connect(1, "bob", "r");
    c.settle();
    let late = c.connect(1, "carol", "r");
    c.settle();
    assert!(c.views[&(1, late)].closed, "refused and closed");
    assert!(c.views[&(1, late)].room.is_none());
    c.check_converged();
}

#[test]
fn joins_are_refused_while_the_store_is_unreachable() {
    let mut c = FakeCluster::new(1, 50);
    c.nodes[0].core.handle_cluster(T0, ClusterEvent::Degraded);
    let conn = c.connect(0, "alice", "r");
    assert!(c.views[&(0, conn)].closed);
    assert!(c.store.rooms.is_empty(), "nothing was asked of the store");
    c.nodes[0].core.handle_cluster(T0, ClusterEvent::Recovered);
    let conn = c.connect(0, "alice", "r");
    c.settle();
    assert!(!c.views[&(0, conn)].closed);
    c.check_converged();
}

#[test]
fn a_disconnect_during_a_join_in_flight_is_undone() {
    let mut c = FakeCluster::new(2, 50);
    c.connect(1, "bob", "r");
    c.settle();
    let a = c.connect(0, "alice", "r");
    c.disconnect(0, a);
    c.settle();
    assert_eq!(
        c.store.rooms[&rid("r")].members.len(),
        1,
        "alice's join undone"
    );
    c.check_converged();
}

#[test]
fn a_signal_that_overtakes_the_joiners_own_answer_is_delivered_after_auth_ok() {
    let mut c = FakeCluster::new(2, 50);
    let b = c.connect(1, "bob", "r");
    c.settle();
    let a = c.connect(0, "alice", "r");
    // Node 1 hears of alice's join before node 0 gets the join's answer.
    assert!(c.deliver_from(1, false), "alice's join reaches node 1");
    assert_eq!(c.views[&(1, b)].peers, vec![uid("bob"), uid("alice")]);
    c.signal(1, b, "alice", 7);
    assert!(
        c.deliver_from(0, false),
        "bob's signal reaches node 0 first"
    );
    assert!(c.views[&(0, a)].room.is_none(), "alice has no auth-ok yet");
    assert!(!c.received.contains_key(&(0, a)), "so the signal waits");
    c.settle();
    assert!(c.views[&(0, a)].room.is_some());
    assert_eq!(
        c.received[&(0, a)],
        vec![(uid("bob"), 7)],
        "delivered once, after auth-ok"
    );
    c.check_converged();
}

#[test]
fn a_join_room_sent_while_the_auth_join_is_in_flight_is_answered() {
    let mut c = FakeCluster::new(1, 50);
    let a = c.connect(0, "alice", "r");
    c.send(0, a, r#"{"type":"join-room"}"#);
    assert!(
        c.views[&(0, a)].room.is_none(),
        "nothing until the join commits"
    );
    c.settle();
    let view = &c.views[&(0, a)];
    assert!(view.room.is_some(), "auth-ok arrived");
    assert_eq!(view.room_joined, 1, "and the join-room got its room-joined");
    c.check_converged();
}

#[test]
fn a_room_closed_after_a_join_committed_undoes_the_join_even_when_the_close_arrives_first() {
    let mut c = FakeCluster::new(2, 50);
    let _bob = c.connect(1, "bob", "r");
    c.settle();
    let a = c.connect(0, "alice", "r");
    // The join is committed; then the room is deleted over HTTP before node 0 has the answer.
    c.delete_room("r");
    while c.deliver_from(0, false) {}
    assert!(c.views[&(0, a)].room.is_none(), "no auth-ok yet");
    c.settle();
    let alice = &c.views[&(0, a)];
    assert!(
        alice.room.is_none(),
        "alice never got auth-ok for the deleted room"
    );
    assert!(alice.closed, "alice was told the room closed");
    assert!(
        c.nodes[0].core.room(&rid("r")).is_none(),
        "no replica left behind"
    );
    c.check_converged();
}

#[test]
fn a_join_after_a_room_closed_creates_it_again() {
    let mut c = FakeCluster::new(2, 50);
    let b = c.connect(1, "bob", "r");
    let a0 = c.connect(0, "carol", "r");
    c.settle();
    c.delete_room("r");
    let a = c.connect(0, "alice", "r");
    c.settle();
    assert!(
        c.views[&(1, b)].closed && c.views[&(0, a0)].closed,
        "the old members are closed"
    );
    let alice = &c.views[&(0, a)];
    assert!(!alice.closed, "the new join is valid");
    assert_eq!(alice.peers, vec![uid("alice")]);
    c.check_converged();
}

#[test]
fn a_late_signal_from_a_replaced_session_is_dropped() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let old = c.connect(1, "bob", "r");
    assert!(
        c.deliver_from(1, true),
        "bob's first session joins on node 1"
    );
    c.signal(1, old, "alice", 1);
    // bob connects again on node 0, which hears of it before the old session's signal.
    let new = c.connect(0, "bob", "r");
    assert!(c.deliver_from(0, true), "the new session's answer");
    c.signal(0, new, "alice", 2);
    c.settle();
    assert_eq!(
        c.received[&(0, a)],
        vec![(uid("bob"), 2)],
        "the replaced session's late signal is not delivered after the new one's"
    );
    c.check_converged();
}

// ---- resume rules ----------------------------------------------------------------------

/// What one client was shown about `user`.
fn shown_about(c: &FakeCluster, client: (usize, ConnId), user: &str) -> Vec<PeerEvent> {
    c.views[&client]
        .events
        .iter()
        .filter(|e| e.user == uid(user))
        .cloned()
        .collect()
}

fn store_member(c: &FakeCluster, room: &str, user: &str) -> ClusterMember {
    c.store.rooms[&rid(room)]
        .members
        .iter()
        .find(|m| m.user_id == uid(user))
        .cloned()
        .unwrap_or_else(|| panic!("{user} is not in {room}"))
}

#[test]
fn a_resume_on_another_node_is_silent_to_a_third_nodes_peer() {
    let mut c = FakeCluster::new(3, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let carol = c.connect(2, "carol", "r");
    c.settle();
    c.lose(0, a);
    c.settle();
    assert!(store_member(&c, "r", "alice").suspended);
    let resumed = c.resume(1, (0, a), usize::MAX).expect("alice has a ticket");
    c.settle();
    let alice = &c.views[&(1, resumed)];
    assert!(alice.resumed, "alice is told resumed");
    assert_eq!(alice.peers, vec![uid("alice"), uid("carol")]);
    let member = store_member(&c, "r", "alice");
    assert_eq!((member.node.as_str(), member.conn), ("n1", resumed));
    assert!(!member.suspended);
    assert_eq!(
        shown_about(&c, (2, carol), "alice"),
        vec![],
        "carol saw nothing"
    );
    assert_eq!(c.views[&(2, carol)].peers, vec![uid("alice"), uid("carol")]);
    c.check_converged();
}

#[test]
fn a_live_connection_taken_over_by_a_resume_elsewhere_is_closed_4004_silently() {
    let mut c = FakeCluster::new(3, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(0, "bob", "r");
    let carol = c.connect(2, "carol", "r");
    c.settle();
    // The client saw its connection drop; node 0 did not.
    let resumed = c.resume(1, (0, a), usize::MAX).expect("alice has a ticket");
    c.settle();
    assert!(c.views[&(1, resumed)].resumed);
    let old = &c.views[&(0, a)];
    assert_eq!(old.close_code, Some(CloseCode::Replaced), "closed 4004");
    assert!(!c.nodes[0].core.is_authenticated(a), "node 0 forgot it");
    for watcher in [(0, bob), (2, carol)] {
        assert_eq!(
            shown_about(&c, watcher, "alice"),
            vec![],
            "{watcher:?} saw nothing"
        );
    }
    let member = store_member(&c, "r", "alice");
    assert_eq!((member.node.as_str(), member.conn), ("n1", resumed));
    c.check_converged();
}

#[test]
fn a_dead_nodes_suspended_member_resumes_elsewhere() {
    let mut c = FakeCluster::new(3, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    c.settle();
    c.kill(0);
    c.reap();
    c.settle();
    assert!(
        store_member(&c, "r", "alice").suspended,
        "the reaper suspends alice"
    );
    assert_eq!(c.views[&(1, bob)].peers, vec![uid("alice"), uid("bob")]);
    let resumed = c.resume(2, (0, a), usize::MAX).expect("alice has a ticket");
    c.settle();
    assert!(c.views[&(2, resumed)].resumed);
    assert_eq!(
        shown_about(&c, (1, bob), "alice"),
        vec![],
        "bob saw nothing"
    );
    c.check_converged();
}

#[test]
fn a_grace_that_ends_after_the_holding_node_died_gives_one_peer_left_timeout() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    c.settle();
    let joined_at = store_member(&c, "r", "alice").joined_at;
    c.kill(0);
    c.reap();
    c.settle();
    c.advance(GRACE_MS / 2);
    c.settle();
    assert!(
        store_member(&c, "r", "alice").suspended,
        "still in its grace"
    );
    c.advance(GRACE_MS);
    c.settle();
    c.advance(GRACE_MS);
    c.settle();
    assert_eq!(
        shown_about(&c, (1, bob), "alice"),
        vec![PeerEvent {
            user: uid("alice"),
            joined_at,
            left: Some(LeaveReason::Timeout),
        }],
        "one peer-left timeout"
    );
    assert_eq!(c.views[&(1, bob)].host, Some(uid("bob")));
    let late = c.resume(1, (0, a), usize::MAX).expect("alice has a ticket");
    c.settle();
    assert!(c.views[&(1, late)].resume_failed, "the grace is over");
    c.check_converged();
}

#[test]
fn of_two_resumes_racing_for_one_session_exactly_one_wins() {
    let mut c = FakeCluster::new(3, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(2, "bob", "r");
    c.settle();
    c.lose(0, a);
    let first = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    let second = c.resume(2, (0, a), usize::MAX).expect("a ticket");
    c.settle();
    let (won, lost) = (&c.views[&(1, first)], &c.views[&(2, second)]);
    assert!(won.resumed && !won.resume_failed);
    assert!(!lost.resumed && lost.resume_failed);
    assert_eq!(lost.close_code, Some(CloseCode::AuthFailed), "closed 4001");
    assert_eq!(
        shown_about(&c, (2, bob), "alice"),
        vec![],
        "bob saw nothing"
    );
    c.check_converged();
}

#[test]
fn a_spent_ticket_does_not_resume() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    c.lose(0, a);
    let again = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    c.settle();
    assert!(c.views[&(1, again)].resumed);
    c.lose(1, again);
    c.settle();
    // The first ticket was spent by the first resume.
    let stale = c.resume(0, (1, again), 0).expect("a ticket");
    c.settle();
    assert!(c.views[&(0, stale)].resume_failed);
    assert!(store_member(&c, "r", "alice").suspended, "still resumable");
    c.check_converged();
}

#[test]
fn a_fresh_login_ends_a_suspension_with_replaced_then_joined() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    c.settle();
    let first = store_member(&c, "r", "alice").joined_at;
    c.lose(0, a);
    c.settle();
    c.connect(1, "alice", "r");
    c.settle();
    let second = store_member(&c, "r", "alice").joined_at;
    assert_eq!(
        shown_about(&c, (1, bob), "alice"),
        vec![
            PeerEvent {
                user: uid("alice"),
                joined_at: first,
                left: Some(LeaveReason::Replaced),
            },
            PeerEvent {
                user: uid("alice"),
                joined_at: second,
                left: None,
            },
        ]
    );
    c.check_converged();
}

#[test]
fn a_snapshot_that_overtakes_a_resumes_answer_does_not_undo_the_resume() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    c.settle();
    c.lose(0, a);
    c.settle();
    let resumed = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    // Carol joins on node 0: node 1 hears of it before the resume's own answer.
    c.connect(0, "carol", "r");
    assert!(
        c.deliver_from(1, false),
        "carol's join reaches node 1 first"
    );
    assert!(c.deliver_from(1, true), "then the resume's answer");
    c.settle();
    assert!(c.views[&(1, resumed)].resumed, "alice is resumed");
    assert_eq!(
        shown_about(&c, (1, bob), "alice"),
        vec![],
        "bob saw nothing"
    );
    c.check_converged();
}

#[test]
fn a_snapshot_that_overtakes_a_takeover_on_the_same_node_closes_the_old_connection_4004() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(1, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    c.settle();
    let resumed = c.resume(1, (1, a), usize::MAX).expect("a ticket");
    c.connect(0, "carol", "r");
    assert!(
        c.deliver_from(1, false),
        "carol's join reaches node 1 first"
    );
    c.settle();
    assert!(c.views[&(1, resumed)].resumed, "alice is resumed");
    assert_eq!(c.views[&(1, a)].close_code, Some(CloseCode::Replaced));
    assert_eq!(
        shown_about(&c, (1, bob), "alice"),
        vec![],
        "bob saw nothing"
    );
    c.check_converged();
}

#[test]
fn a_snapshot_older_than_a_suspension_keeps_the_suspended_member() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(0, "bob", "r");
    c.settle();
    // Carol's join is committed before alice's connection drops; node 0 hears of it after.
    c.connect(1, "carol", "r");
    c.lose(0, a);
    c.settle();
    assert!(store_member(&c, "r", "alice").suspended);
    assert_eq!(
        shown_about(&c, (0, bob), "alice"),
        vec![],
        "bob saw nothing"
    );
    c.check_converged();
}

#[test]
fn a_room_closed_after_a_resume_committed_undoes_the_resume_even_when_the_close_arrives_first() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    c.lose(0, a);
    c.settle();
    let resumed = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    c.delete_room("r");
    assert!(c.deliver_from(1, false), "the close reaches node 1 first");
    c.settle();
    let alice = &c.views[&(1, resumed)];
    assert!(!alice.resumed, "alice is not resumed into a deleted room");
    assert_eq!(alice.close_code, Some(CloseCode::RoomClosed));
    assert!(c.nodes[1].core.room(&rid("r")).is_none(), "no replica left");
    c.check_converged();
}

#[test]
fn a_resume_whose_room_reads_empty_before_its_answer_is_refused() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    c.lose(0, a);
    c.settle();
    let resumed = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    c.connect(0, "carol", "r");
    c.delete_room("r");
    // Carol's join is lost on its way to node 1, which reads the room again: it is gone.
    assert!(c.deliver_at(1, false, true, false));
    assert!(c.deliver_at(1, true, false, false), "the resume's answer");
    let alice = &c.views[&(1, resumed)];
    assert!(!alice.resumed);
    assert!(alice.resume_failed, "the resume is answered");
    assert_eq!(alice.close_code, Some(CloseCode::AuthFailed));
    c.settle();
    c.check_converged();
}

#[test]
fn a_resume_whose_connection_drops_before_the_answer_stays_suspended_quietly() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    c.settle();
    // The client saw its connection drop; node 0 did not.
    let resumed = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    c.lose(1, resumed);
    // Carol's join, committed while alice is on node 1, reaches node 1 after the answer.
    c.connect(0, "carol", "r");
    assert!(
        c.deliver_from(1, true),
        "the resume's answer: suspend again"
    );
    c.settle();
    assert!(store_member(&c, "r", "alice").suspended);
    assert_eq!(
        shown_about(&c, (1, bob), "alice"),
        vec![],
        "bob saw nothing"
    );
    c.check_converged();
}

#[test]
fn a_resume_whose_connection_drops_before_a_snapshot_that_overtakes_the_answer_stays_quiet() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    c.settle();
    let resumed = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    c.lose(1, resumed);
    c.connect(0, "carol", "r");
    assert!(
        c.deliver_from(1, false),
        "carol's join reaches node 1 first"
    );
    c.settle();
    assert!(store_member(&c, "r", "alice").suspended);
    assert_eq!(
        shown_about(&c, (1, bob), "alice"),
        vec![],
        "bob saw nothing"
    );
    c.check_converged();
}

// ---- properties ----------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    Connect {
        node: usize,
        user: u8,
        room: u8,
    },
    Disconnect {
        pick: usize,
    },
    Signal {
        pick: usize,
        target: u8,
    },
    Deliver {
        pick: usize,
        lose: bool,
        repeat: bool,
    },
    Delete {
        room: u8,
    },
    /// A connection drops without a close frame.
    Lose {
        pick: usize,
    },
    /// A client resumes on `node` with its newest ticket, or a spent one (`stale`).
    Resume {
        pick: usize,
        node: usize,
        stale: Option<usize>,
    },
    /// A client resumes on two nodes at once with one ticket.
    Race {
        pick: usize,
        node: usize,
    },
    /// The clock jumps; suspensions that are due end.
    Advance {
        ms: u64,
    },
    /// A node dies (while at least two others live).
    Kill {
        node: usize,
    },
    /// The reaper takes the dead nodes' members.
    Reap,
    /// The server API kicks a user from a room, whatever node holds it.
    Kick {
        user: u8,
        room: u8,
    },
    /// The server API on `node` sends a room (or one user of it) a `server-message`.
    ServerMessage {
        node: usize,
        room: u8,
        to: Option<u8>,
    },
}

/// Nodes of the modelled cluster: two may die and two still live.
const NODES: usize = 4;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..NODES, 0..5u8, 0..2u8).prop_map(|(node, user, room)| Step::Connect { node, user, room }),
        1 => any::<usize>().prop_map(|pick| Step::Disconnect { pick }),
        2 => (any::<usize>(), 0..5u8).prop_map(|(pick, target)| Step::Signal { pick, target }),
        8 => (any::<usize>(), prop::bool::weighted(0.1), prop::bool::weighted(0.1))
            .prop_map(|(pick, lose, repeat)| Step::Deliver { pick, lose, repeat }),
        1 => (0..2u8).prop_map(|room| Step::Delete { room }),
        2 => any::<usize>().prop_map(|pick| Step::Lose { pick }),
        3 => (any::<usize>(), 0..NODES, prop::option::weighted(0.2, any::<usize>()))
            .prop_map(|(pick, node, stale)| Step::Resume { pick, node, stale }),
        1 => (any::<usize>(), 0..NODES).prop_map(|(pick, node)| Step::Race { pick, node }),
        1 => (0..2 * GRACE_MS).prop_map(|ms| Step::Advance { ms }),
        2 => prop_oneof![5 => Just(None), 1 => (0..NODES).prop_map(Some)]
            .prop_map(|node| node.map_or(Step::Reap, |node| Step::Kill { node })),
        1 => (0..5u8, 0..2u8).prop_map(|(user, room)| Step::Kick { user, room }),
        1 => (0..NODES, 0..2u8, prop::option::of(0..5u8))
            .prop_map(|(node, room, to)| Step::ServerMessage { node, room, to }),
    ]
}

/// The live node `node` names, or the next live one.
fn live(c: &FakeCluster, node: usize) -> usize {
    (0..c.nodes.len())
        .map(|k| (node + k) % c.nodes.len())
        .find(|i| !c.nodes[*i].dead)
        .expect("a node lives")
}

/// Open connections of live nodes, in a stable order; `joined`: in a room only;
/// `abandoned`: also those the client gave up for a resume (it no longer sends on them,
/// but they may still drop).
fn open_conns(c: &FakeCluster, joined: bool, abandoned: bool) -> Vec<(usize, ConnId)> {
    let mut open: Vec<_> = c
        .views
        .iter()
        .filter(|(k, v)| {
            !v.closed
                && !c.nodes[k.0].dead
                && (!joined || v.room.is_some())
                && (abandoned || !v.moved_on)
        })
        .map(|(k, _)| *k)
        .collect();
    open.sort();
    open
}

/// Clients that hold a ticket and have not resumed from it yet.
fn resumable(c: &FakeCluster) -> Vec<(usize, ConnId)> {
    let mut from: Vec<_> = c
        .views
        .iter()
        .filter(|(_, v)| !v.tickets.is_empty() && !v.moved_on)
        .map(|(k, _)| *k)
        .collect();
    from.sort();
    from
}

fn run(steps: &[Step], pipelined: bool) {
    let mut c = FakeCluster::new(NODES, 4);
    c.pipelined = pipelined;
    let mut seq = 0;
    for s in steps {
        if std::env::var_os("OCT_TRACE").is_some() {
            eprintln!("STEP {s:?}");
        }
        match *s {
            Step::Connect { node, user, room } => {
                let node = live(&c, node);
                c.connect(node, &format!("u{user}"), &format!("r{room}"));
            }
            Step::Disconnect { pick } => {
                let open = open_conns(&c, false, false);
                if !open.is_empty() {
                    let (node, conn) = open[pick % open.len()];
                    c.disconnect(node, conn);
                }
            }
            Step::Signal { pick, target } => {
                let open = open_conns(&c, true, false);
                if !open.is_empty() {
                    let (node, conn) = open[pick % open.len()];
                    seq += 1;
                    c.signal(node, conn, &format!("u{target}"), seq);
                }
            }
            Step::Deliver { pick, lose, repeat } => {
                c.deliver(pick, lose, repeat);
            }
            Step::Delete { room } => c.delete_room(&format!("r{room}")),
            Step::Lose { pick } => {
                let open = open_conns(&c, true, true);
                if !open.is_empty() {
                    let (node, conn) = open[pick % open.len()];
                    c.lose(node, conn);
                }
            }
            Step::Resume { pick, node, stale } => {
                let from = resumable(&c);
                if !from.is_empty() {
                    let node = live(&c, node);
                    c.resume(node, from[pick % from.len()], stale.unwrap_or(usize::MAX));
                }
            }
            Step::Race { pick, node } => {
                let from = resumable(&c);
                if !from.is_empty() {
                    let first = live(&c, node);
                    let second = live(&c, first + 1);
                    let client = from[pick % from.len()];
                    let a = c.resume(first, client, usize::MAX);
                    let b = c.resume(second, client, usize::MAX);
                    if let (Some(a), Some(b)) = (a, b) {
                        c.races.push([(first, a), (second, b)]);
                    }
                }
            }
            Step::Advance { ms } => c.advance(ms),
            Step::Kill { node } => {
                if c.live_nodes().count() > 2 {
                    c.kill(node);
                }
            }
            Step::Reap => c.reap(),
            Step::Kick { user, room } => {
                // Refused (404) when the user is not in the room: nothing changes.
                let _ = c.kick(&format!("r{room}"), &format!("u{user}"));
            }
            Step::ServerMessage { node, room, to } => {
                let node = live(&c, node);
                let to = to.map(|u| format!("u{u}"));
                // Refused (404, 409) when there is nobody to send it to.
                let _ = c.server_message(node, &format!("r{room}"), to.as_deref(), "{}");
            }
        }
        c.check_replicas();
    }
    c.reap();
    c.settle();
    c.check_converged();
    // Every suspension ends: by its grace, at the latest.
    c.advance(GRACE_MS + 1);
    c.settle();
    c.check_converged();
    assert!(
        c.store
            .rooms
            .values()
            .all(|r| r.members.iter().all(|m| !m.suspended)),
        "a suspension outlived its grace"
    );
    // Signals between one sending and one receiving connection arrive in order and at
    // most once (two connections of one user, an old one and the one that replaced or
    // resumed it, are not ordered with each other).
    for got in c.received_via.values() {
        let mut last: HashMap<&String, u64> = HashMap::new();
        for (from, s) in got {
            if let Some(prev) = last.insert(from, *s) {
                assert!(*s > prev, "out of order or repeated: {prev} then {s}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn nodes_and_clients_converge_on_the_committed_room(steps in prop::collection::vec(step(), 1..80)) {
        run(&steps, false);
    }

    #[test]
    fn nodes_and_clients_converge_when_the_store_runs_commands_late(steps in prop::collection::vec(step(), 1..80)) {
        run(&steps, true);
    }
}

// ---- the server API on a cluster ------------------------------------------------------

/// The `peer-left`s a client was shown about a user, with their reasons.
fn departures(c: &FakeCluster, client: (usize, ConnId), user: &str) -> Vec<Option<LeaveReason>> {
    shown_about(c, client, user)
        .into_iter()
        .map(|e| e.left)
        .collect()
}

#[test]
fn a_kick_removes_a_peer_held_by_another_node_and_its_node_closes_it_4005() {
    let mut c = FakeCluster::new(3, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    let carol = c.connect(2, "carol", "r");
    c.settle();
    let ticket = c.views[&(0, a)].tickets.len();
    assert!(ticket > 0, "alice has a ticket");
    // The kick runs in the store, asked by any node's HTTP API.
    c.kick("r", "alice").expect("alice is in r");
    c.settle();
    let alice = &c.views[&(0, a)];
    assert!(alice.kicked, "alice is told kicked");
    assert_eq!(alice.close_code, Some(CloseCode::Kicked), "closed 4005");
    assert!(!c.nodes[0].core.is_authenticated(a), "node 0 forgot alice");
    for watcher in [(1, bob), (2, carol)] {
        assert_eq!(
            departures(&c, watcher, "alice"),
            vec![Some(LeaveReason::Kicked)],
            "{watcher:?} is told once, kicked"
        );
        assert_eq!(c.views[&watcher].host, Some(uid("bob")), "the host moved");
    }
    // Its session ended with the kick.
    let again = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    c.settle();
    assert!(c.views[&(1, again)].resume_failed, "the session is gone");
    c.check_converged();
}

#[test]
fn a_kick_of_the_last_peer_reaches_its_node_and_deletes_the_room() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(1, "alice", "r");
    c.settle();
    c.kick("r", "alice").expect("alice is in r");
    c.settle();
    assert_eq!(c.views[&(1, a)].close_code, Some(CloseCode::Kicked));
    assert!(c.store.rooms.is_empty(), "the emptied room is deleted");
    assert!(
        c.nodes[1].core.room_ids().next().is_none(),
        "no replica left"
    );
    assert_eq!(c.kick("r", "alice"), Err(CoreError::RoomNotFound));
    c.check_converged();
}

#[test]
fn a_kick_of_a_suspended_peer_ends_its_session_and_is_told_once() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    let dave = c.connect(0, "dave", "r");
    c.settle();
    c.lose(0, a);
    c.settle();
    assert!(store_member(&c, "r", "alice").suspended);
    assert_eq!(c.kick("r", "nobody"), Err(CoreError::PeerNotFound));
    c.kick("r", "alice").expect("alice is suspended in r");
    c.settle();
    for watcher in [(1, bob), (0, dave)] {
        assert_eq!(
            departures(&c, watcher, "alice"),
            vec![Some(LeaveReason::Kicked)],
            "{watcher:?} is told once, kicked"
        );
    }
    let late = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    c.settle();
    assert!(c.views[&(1, late)].resume_failed, "the session is gone");
    c.check_converged();
}

#[test]
fn a_kick_racing_the_peers_own_leave_is_told_once() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    c.settle();
    // Node 0 has sent the leave; the store runs the kick first, then the leave (a no-op).
    c.pipelined = true;
    c.disconnect(0, a);
    c.kick("r", "alice").expect("alice is in r");
    c.settle();
    assert_eq!(
        departures(&c, (1, bob), "alice"),
        vec![Some(LeaveReason::Kicked)]
    );
    c.check_converged();
}

#[test]
fn a_kick_before_a_resume_runs_makes_the_resume_fail() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    c.settle();
    c.lose(0, a);
    c.settle();
    c.pipelined = true;
    let resumed = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    c.kick("r", "alice").expect("alice is suspended in r");
    c.settle();
    assert!(c.views[&(1, resumed)].resume_failed, "nothing to resume");
    assert_eq!(
        departures(&c, (1, bob), "alice"),
        vec![Some(LeaveReason::Kicked)]
    );
    c.check_converged();
}

#[test]
fn a_kick_after_a_resume_committed_closes_the_new_connection_4005() {
    let mut c = FakeCluster::new(3, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let carol = c.connect(2, "carol", "r");
    c.settle();
    c.lose(0, a);
    c.settle();
    // The store moved the session to node 1; its answer is still on its way.
    let resumed = c.resume(1, (0, a), usize::MAX).expect("a ticket");
    c.kick("r", "alice").expect("alice is in r");
    c.settle();
    let view = &c.views[&(1, resumed)];
    assert!(view.kicked, "the resumed connection is told kicked");
    assert_eq!(view.close_code, Some(CloseCode::Kicked));
    assert_eq!(
        departures(&c, (2, carol), "alice"),
        vec![Some(LeaveReason::Kicked)]
    );
    c.check_converged();
}

#[test]
fn a_server_message_from_any_node_reaches_the_rooms_peers_on_every_node_once() {
    let mut c = FakeCluster::new(3, 50);
    let a = c.connect(0, "alice", "r");
    c.settle();
    let bob = c.connect(1, "bob", "r");
    let dave = c.connect(1, "dave", "r");
    c.settle();
    // Node 2 has no peer of the room: it reads the room from the store.
    let sent = c
        .server_message(2, "r", None, r#"{"n":1}"#)
        .expect("the room exists");
    assert_eq!(sent, 3);
    // Messages asked on different nodes travel different ways: no order between them.
    c.settle();
    let sent = c
        .server_message(0, "r", None, r#"{"n":2}"#)
        .expect("the room exists");
    assert_eq!(sent, 3);
    let sent = c
        .server_message(0, "r", Some("bob"), r#"{"n":3}"#)
        .expect("bob is in r");
    assert_eq!(sent, 1);
    c.settle();
    assert_eq!(
        c.views[&(0, a)].server_messages,
        [r#"{"n":1}"#, r#"{"n":2}"#]
    );
    assert_eq!(
        c.views[&(1, dave)].server_messages,
        [r#"{"n":1}"#, r#"{"n":2}"#]
    );
    assert_eq!(
        c.views[&(1, bob)].server_messages,
        [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]
    );
    assert_eq!(
        c.server_message(0, "r", Some("nobody"), "{}"),
        Err(CoreError::PeerNotFound)
    );
    assert_eq!(
        c.server_message(0, "gone", None, "{}"),
        Err(CoreError::RoomNotFound)
    );
    c.lose(1, bob);
    c.settle();
    assert_eq!(
        c.server_message(0, "r", Some("bob"), "{}"),
        Err(CoreError::PeerUnavailable)
    );
    c.check_converged();
}

#[test]
fn a_refreshed_session_runs_on_its_new_token_in_the_store() {
    let mut c = FakeCluster::new(2, 50);
    let a = c.connect(0, "alice", "r");
    let _bob = c.connect(1, "bob", "r");
    c.settle();
    let fresh = octate_core::TokenRef {
        token_id: Some("fresh".to_owned()),
        expires_at: Some(9_000_000),
    };
    c.nodes[0].core.handle_token_refreshed(a, fresh.clone());
    c.pump(0);
    c.settle();
    // A kick asked of any node revokes the token the session runs on now.
    assert_eq!(c.kick("r", "alice"), Ok(fresh));
    c.settle();
    c.check_converged();
}
