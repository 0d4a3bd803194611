//! Room activity on a cluster: a node reports its own peers' activity in a room shared
//! with other nodes (which do not see that traffic) to the store, at most every quarter
//! of the idle time, and asks the store, rather than closing at once, to close a room
//! quiet here for the inactivity timeout.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use octate_core::{
    ClusterCommand, ClusterEvent, ClusterMember, ConnId, Core, CoreConfig, Identity, Login, NodeId,
    Output, Protocol, RoomSnapshot, TokenRef,
};
use octate_protocol::{ClientMessage, RoomCloseReason, RoomId, ServerMessage, UserId};

const T0: u64 = 1_700_000_000_000;

fn rid(s: &str) -> RoomId {
    RoomId::new(s).unwrap()
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn drain(core: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

/// Idle after 40 s (activity reported every 10 s), closed when inactive for 60 s.
fn config() -> CoreConfig {
    CoreConfig {
        room_idle_after: Duration::from_secs(40),
        room_inactive_timeout: Duration::from_secs(60),
        cleanup_interval: Duration::from_secs(5),
        ..CoreConfig::default()
    }
}

fn login(user: &str) -> Login {
    Login {
        identity: Identity {
            user_id: uid(user),
            room_id: rid("doc"),
        },
        user_name: None,
        token: TokenRef::default(),
    }
}

fn member(user: &str, on: &str, conn: u64) -> ClusterMember {
    ClusterMember {
        user_id: uid(user),
        user_name: user.to_owned(),
        node: node(on),
        conn: ConnId(conn),
        joined_at: T0,
        session: None,
        suspended: false,
        protocol: Protocol::Native,
    }
}

/// Node a, with its peer `n` (conn 1) in room `doc`, and `members` of other nodes.
fn node_a(members: Vec<ClusterMember>) -> Core {
    let mut core = Core::clustered(config(), T0, node("a"));
    core.handle_login(T0, ConnId(1), login("n"));
    drain(&mut core);
    let mut all = vec![member("n", "a", 1)];
    all.extend(members);
    let snapshot = RoomSnapshot {
        room_id: rid("doc"),
        ver: 2,
        room_name: "doc".into(),
        created_by: uid("n"),
        created_at: T0,
        file_id: None,
        host_id: Some(uid("n")),
        members: all,
    };
    core.handle_cluster(
        T0,
        ClusterEvent::JoinCommitted {
            conn: ConnId(1),
            snapshot,
        },
    );
    drain(&mut core);
    core
}

fn presence(core: &mut Core, at: u64) -> Vec<Output> {
    let msg = ClientMessage::decode(br#"{"type":"presence","data":{"status":"active"}}"#, 65_536)
        .unwrap();
    core.handle_message(at, ConnId(1), msg);
    drain(core)
}

fn activity_reports(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Cluster(ClusterCommand::Activity { room_id }) if room_id.as_str() == "doc"))
        .count()
}

fn inactive_closes(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::Cluster(ClusterCommand::CloseRoom {
                    reason: RoomCloseReason::Inactive,
                    ..
                })
            )
        })
        .count()
}

#[test]
fn activity_in_a_shared_room_is_reported_at_most_every_quarter_of_the_idle_time() {
    let mut core = node_a(vec![member("m", "b", 7)]);
    assert_eq!(activity_reports(&presence(&mut core, T0 + 1)), 1);
    assert_eq!(activity_reports(&presence(&mut core, T0 + 9_000)), 0);
    assert_eq!(activity_reports(&presence(&mut core, T0 + 10_001)), 1);
}

#[test]
fn activity_in_a_room_of_this_node_only_is_not_reported() {
    let mut core = node_a(Vec::new());
    assert_eq!(activity_reports(&presence(&mut core, T0 + 1)), 0);
    // Nor on a single server.
    let mut single = Core::new(config(), T0);
    single.handle_login(T0, ConnId(1), login("n"));
    drain(&mut single);
    let outputs = presence(&mut single, T0 + 1);
    assert!(
        !outputs.iter().any(|o| matches!(o, Output::Cluster(_))),
        "{outputs:?}"
    );
}

#[test]
fn a_room_quiet_here_is_closed_by_the_store_not_at_once_and_asked_as_often_as_activity_is_reported()
{
    let mut core = node_a(vec![member("m", "b", 7)]);
    let mut asked = 0;
    let mut at = T0;
    while at <= T0 + 90_000 {
        core.handle_timeout(at);
        let outputs = drain(&mut core);
        asked += inactive_closes(&outputs);
        assert!(
            !outputs.iter().any(|o| matches!(
                o,
                Output::Close {
                    conn: ConnId(1),
                    ..
                }
            )),
            "closed here before the store decided: {outputs:?}"
        );
        at += 5_000;
    }
    // Quiet for 60 s at +65 s (cleanup every 5 s); asked again after more than the 10 s
    // between activity reports: at +80 s, not at +75 s or +90 s.
    assert_eq!(asked, 2);
    assert!(core.room(&rid("doc")).is_some());
    // The store closes it: every node with members hears it, this one too.
    core.handle_cluster(
        at,
        ClusterEvent::RoomClosed {
            room_id: rid("doc"),
            reason: RoomCloseReason::Inactive,
            ver: u64::MAX,
        },
    );
    let outputs = drain(&mut core);
    assert!(
        outputs.iter().any(|o| matches!(
            o,
            Output::Broadcast {
                to,
                msg: ServerMessage::RoomClosed {
                    reason: RoomCloseReason::Inactive,
                    ..
                }
            } if to == &[ConnId(1)]
        )),
        "{outputs:?}"
    );
    assert!(core.room(&rid("doc")).is_none());
}
