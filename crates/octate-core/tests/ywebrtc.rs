//! `y-webrtc` peers in the core: they count in their room, get only their topic's
//! `publish`es, and never exchange messages with native peers.

use std::sync::Arc;

use octate_core::{
    ClusterCommand, ClusterEvent, ClusterMember, ConnId, Core, CoreConfig, CoreError, Identity,
    Login, NodeId, Output, Protocol, RoomSnapshot, TokenRef, Vacancy,
};
use octate_protocol::{ClientMessage, ErrorCode, RawJson, RoomId, ServerMessage, UserId};

const T0: u64 = 1_700_000_000_000;

fn rid(s: &str) -> RoomId {
    RoomId::new(s).expect("room id")
}

fn uid(s: &str) -> UserId {
    UserId::new(s).expect("user id")
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

fn drain(core: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

/// Every connection some output is addressed to.
fn addressed(outputs: &[Output]) -> Vec<ConnId> {
    let mut to = Vec::new();
    for out in outputs {
        match out {
            Output::Send { to: c, .. } => to.push(*c),
            Output::Broadcast { to: cs, .. }
            | Output::Heartbeat { to: cs }
            | Output::Forward { to: cs, .. } => to.extend(cs),
            _ => {}
        }
    }
    to
}

const PUBLISH: &str = r#"{"type":"publish","topic":"doc","data":{"type":"announce","from":"p1"}}"#;

/// A native peer `n` (conn 1) and y-webrtc peers `a` (conn 2) and `b` (conn 3).
fn mixed_room() -> Core {
    let mut core = Core::new(CoreConfig::default(), T0);
    core.handle_login(T0, ConnId(1), login("n"));
    core.handle_ywebrtc_login(T0, ConnId(2), login("a"));
    core.handle_ywebrtc_login(T0, ConnId(3), login("b"));
    core
}

#[test]
fn ywebrtc_peers_count_in_the_room_but_get_no_native_events() {
    let mut core = mixed_room();
    let outputs = drain(&mut core);
    assert!(
        !addressed(&outputs).contains(&ConnId(2)) && !addressed(&outputs).contains(&ConnId(3)),
        "{outputs:?}"
    );
    // The native peer hears of both y-webrtc peers.
    let joined = outputs
        .iter()
        .filter(|o| matches!(o, Output::Broadcast { msg: ServerMessage::PeerJoined { .. }, to } if to == &[ConnId(1)]))
        .count();
    assert_eq!(joined, 2, "{outputs:?}");
    assert_eq!(core.peers(&rid("doc")).map(|p| p.len()), Some(3));
    assert_eq!(core.stats().peers, 3);

    core.handle_disconnect(T0 + 1, ConnId(2));
    let outputs = drain(&mut core);
    assert!(!addressed(&outputs).contains(&ConnId(3)), "{outputs:?}");
    assert!(
        addressed(&outputs).contains(&ConnId(1)),
        "peer-left for the native peer"
    );
}

#[test]
fn a_publish_reaches_only_the_other_subscribers_with_clients() {
    let mut core = mixed_room();
    drain(&mut core);
    core.handle_ywebrtc_publish(T0 + 1, ConnId(2), PUBLISH);
    assert!(drain(&mut core).is_empty(), "nobody is subscribed yet");

    core.handle_ywebrtc_subscription(T0 + 1, ConnId(2), true);
    core.handle_ywebrtc_subscription(T0 + 1, ConnId(3), true);
    core.handle_ywebrtc_publish(T0 + 2, ConnId(2), PUBLISH);
    let outputs = drain(&mut core);
    let [Output::Forward { to, text }] = outputs.as_slice() else {
        panic!("one forward expected: {outputs:?}");
    };
    assert_eq!(to, &[ConnId(3)]);
    assert_eq!(
        &**text,
        r#"{"type":"publish","topic":"doc","data":{"type":"announce","from":"p1"},"clients":2}"#
    );

    core.handle_ywebrtc_subscription(T0 + 3, ConnId(3), false);
    core.handle_ywebrtc_publish(T0 + 3, ConnId(2), PUBLISH);
    assert!(drain(&mut core).is_empty());

    // A native peer cannot publish.
    core.handle_ywebrtc_publish(T0 + 3, ConnId(1), PUBLISH);
    assert!(drain(&mut core).is_empty());
}

#[test]
fn native_messages_never_reach_ywebrtc_peers() {
    let mut core = mixed_room();
    drain(&mut core);
    let update = ClientMessage::decode(
        br#"{"type":"presence","data":{"status":"active"}}"#,
        64 * 1024,
    )
    .expect("presence");
    core.handle_message(T0 + 1, ConnId(1), update);
    assert!(drain(&mut core).is_empty(), "no native peer but the sender");

    let offer = ClientMessage::decode(
        br#"{"type":"sdp-offer","data":{"peer":"a","offer":{"type":"offer","sdp":"v=0"}}}"#,
        64 * 1024,
    )
    .expect("offer");
    core.handle_message(T0 + 1, ConnId(1), offer);
    let outputs = drain(&mut core);
    let [
        Output::Send {
            to,
            msg: ServerMessage::Error { code, .. },
        },
    ] = outputs.as_slice()
    else {
        panic!("an error for the sender: {outputs:?}");
    };
    assert_eq!((*to, *code), (ConnId(1), ErrorCode::PeerIncompatible));
}

#[test]
fn heartbeats_go_to_native_peers_and_silent_ywebrtc_peers_are_closed_sooner() {
    let config = CoreConfig::default();
    let mut core = mixed_room();
    drain(&mut core);
    let at = T0 + 2 * config.heartbeat_interval.as_millis() as u64;
    core.handle_pong(at - 1, ConnId(1));
    core.handle_ywebrtc_subscription(at - 1, ConnId(3), true);
    core.handle_timeout(at);
    let outputs = drain(&mut core);
    let heartbeat: Vec<_> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Heartbeat { to } => Some(to.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(heartbeat, vec![vec![ConnId(1)]]);
    let closed: Vec<_> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Close { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![ConnId(2)], "silent for {} ms", at - T0);
}

#[test]
fn a_publish_crosses_nodes_to_subscribers_only() {
    let node_a = NodeId::new("a").expect("node");
    let node_b = NodeId::new("b").expect("node");
    let mut core = Core::clustered(CoreConfig::default(), T0, node_a.clone());
    core.handle_ywebrtc_login(T0, ConnId(2), login("a"));
    // The client announces itself at once, before its join is committed.
    core.handle_ywebrtc_publish(T0, ConnId(2), PUBLISH);
    let join = drain(&mut core);
    assert!(
        join.iter().all(|o| matches!(
            o,
            Output::Cluster(ClusterCommand::Join {
                session_id: None,
                protocol: Protocol::YWebrtc,
                ..
            })
        )),
        "y-webrtc sessions are not resumable, and the cluster knows what they speak: {join:?}"
    );
    let member = |user: &str, node: &NodeId, conn: u64| ClusterMember {
        user_id: uid(user),
        user_name: user.to_owned(),
        node: node.clone(),
        conn: ConnId(conn),
        joined_at: T0,
        session: None,
        suspended: false,
        protocol: Protocol::YWebrtc,
    };
    let snapshot = RoomSnapshot {
        room_id: rid("doc"),
        ver: 2,
        room_name: "doc".into(),
        created_by: uid("a"),
        created_at: T0,
        file_id: None,
        host_id: Some(uid("a")),
        members: vec![member("a", &node_a, 2), member("r", &node_b, 9)],
    };
    core.handle_cluster(
        T0,
        ClusterEvent::JoinCommitted {
            conn: ConnId(2),
            snapshot,
        },
    );
    let mut outputs = drain(&mut core);
    assert!(addressed(&outputs).is_empty(), "{outputs:?}");
    // The room is shared with node b: the store hears of the activity (once).
    let reported = outputs.len();
    outputs.retain(|o| !matches!(o, Output::Cluster(ClusterCommand::Activity { .. })));
    assert_eq!(reported - outputs.len(), 1, "{outputs:?}");
    let [Output::Cluster(ClusterCommand::Publish { nodes, text, .. })] = outputs.as_slice() else {
        panic!("the early announce goes out once the join is committed: {outputs:?}");
    };
    assert_eq!(nodes, std::slice::from_ref(&node_b));
    assert!(text.ends_with(r#","clients":0}"#), "{text}");

    core.handle_ywebrtc_publish(T0 + 1, ConnId(2), PUBLISH);
    let outputs = drain(&mut core);
    let [Output::Cluster(ClusterCommand::Publish { nodes, text, .. })] = outputs.as_slice() else {
        panic!("a publish for node b: {outputs:?}");
    };
    assert_eq!(nodes, std::slice::from_ref(&node_b));
    assert!(text.ends_with(r#","clients":0}"#), "{text}");

    let remote = |text: &str| ClusterEvent::Publish {
        room_id: rid("doc"),
        from: uid("r"),
        from_node: node_b.clone(),
        text: Arc::from(text),
    };
    core.handle_cluster(T0 + 2, remote("{}"));
    assert!(drain(&mut core).is_empty(), "not subscribed");
    core.handle_ywebrtc_subscription(T0 + 2, ConnId(2), true);
    core.handle_cluster(T0 + 2, remote("{\"x\":1}"));
    let outputs = drain(&mut core);
    assert!(
        matches!(outputs.as_slice(), [Output::Forward { to, text }] if to == &[ConnId(2)] && &**text == "{\"x\":1}"),
        "{outputs:?}"
    );
    // A native relay addressed to the y-webrtc peer is dropped.
    core.handle_cluster(
        T0 + 3,
        ClusterEvent::Relay {
            room_id: rid("doc"),
            from: uid("r"),
            from_node: node_b,
            to: Some(uid("a")),
            text: Arc::from("{}"),
        },
    );
    assert!(drain(&mut core).is_empty());
}

/// A native peer `n` (conn 1) on node a, sharing a room with `m` (native) and `y`
/// (y-webrtc) on node b; returns the core and the room's snapshot.
fn clustered_mixed_room() -> (Core, RoomSnapshot) {
    let node_a = NodeId::new("a").expect("node");
    let node_b = NodeId::new("b").expect("node");
    let mut core = Core::clustered(CoreConfig::default(), T0, node_a.clone());
    core.handle_login(T0, ConnId(1), login("n"));
    drain(&mut core);
    let member = |user: &str, node: &NodeId, conn: u64, protocol| ClusterMember {
        user_id: uid(user),
        user_name: user.to_owned(),
        node: node.clone(),
        conn: ConnId(conn),
        joined_at: T0,
        session: None,
        suspended: false,
        protocol,
    };
    let snapshot = RoomSnapshot {
        room_id: rid("doc"),
        ver: 2,
        room_name: "doc".into(),
        created_by: uid("n"),
        created_at: T0,
        file_id: None,
        host_id: Some(uid("n")),
        members: vec![
            member("n", &node_a, 1, Protocol::Native),
            member("m", &node_b, 7, Protocol::Native),
            member("y", &node_b, 8, Protocol::YWebrtc),
        ],
    };
    core.handle_cluster(
        T0,
        ClusterEvent::JoinCommitted {
            conn: ConnId(1),
            snapshot: snapshot.clone(),
        },
    );
    drain(&mut core);
    (core, snapshot)
}

#[test]
fn a_ywebrtc_peer_of_another_node_gets_no_native_message() {
    let (mut core, snapshot) = clustered_mixed_room();
    let offer = ClientMessage::decode(
        br#"{"type":"sdp-offer","data":{"peer":"y","offer":{"type":"offer","sdp":"v=0"}}}"#,
        64 * 1024,
    )
    .expect("offer");
    core.handle_message(T0 + 1, ConnId(1), offer);
    let outputs = drain(&mut core);
    assert!(
        matches!(
            outputs.as_slice(),
            [Output::Send {
                to: ConnId(1),
                msg: ServerMessage::Error {
                    code: ErrorCode::PeerIncompatible,
                    ..
                },
            }]
        ),
        "an error for the sender, nothing for node b: {outputs:?}"
    );
    let data = || RawJson::from_string("{\"n\":1}".to_owned()).expect("json");
    assert!(matches!(
        core.cluster_server_message(&snapshot, Some(&uid("y")), data()),
        Err(CoreError::PeerIncompatible)
    ));
    // A broadcast counts n and m; node b is asked for m.
    assert_eq!(core.cluster_server_message(&snapshot, None, data()), Ok(2));
    let outputs = drain(&mut core);
    let nodes: Vec<&NodeId> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Cluster(ClusterCommand::ServerMessage { nodes, .. }) => Some(nodes),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(nodes, [&NodeId::new("b").expect("node")]);
    // Without m, node b has nobody to give it to and is not asked.
    let mut only_y = snapshot.clone();
    only_y.members.retain(|m| m.user_id.as_str() != "m");
    assert_eq!(core.cluster_server_message(&only_y, None, data()), Ok(1));
    let outputs = drain(&mut core);
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, Output::Cluster(ClusterCommand::ServerMessage { .. }))),
        "{outputs:?}"
    );
}

#[test]
fn a_room_has_no_place_for_a_second_live_socket_of_a_user_or_past_its_limit() {
    let config = CoreConfig {
        max_peers_per_room: 3,
        ..CoreConfig::default()
    };
    let quiet_after = config.ywebrtc_peer_timeout.as_millis() as u64 / 2;
    let mut core = Core::new(config, T0);
    core.handle_login(T0, ConnId(1), login("n"));
    core.handle_ywebrtc_login(T0, ConnId(2), login("a"));
    let (doc, other) = (rid("doc"), rid("other"));
    assert_eq!(core.vacancy(T0, &other, &uid("a")), Vacancy::Open);
    assert_eq!(core.vacancy(T0 + 1, &doc, &uid("a")), Vacancy::Taken);
    assert_eq!(core.vacancy(T0 + 1, &doc, &uid("b")), Vacancy::Open);
    // Quiet past half its timeout: a reconnection may replace it.
    assert_eq!(
        core.vacancy(T0 + quiet_after, &doc, &uid("a")),
        Vacancy::Open
    );
    core.handle_ywebrtc_publish(T0 + quiet_after, ConnId(2), PUBLISH);
    assert_eq!(
        core.vacancy(T0 + quiet_after, &doc, &uid("a")),
        Vacancy::Taken
    );
    core.handle_ywebrtc_login(T0, ConnId(3), login("b"));
    assert_eq!(core.vacancy(T0 + 1, &doc, &uid("c")), Vacancy::Full);
    assert_eq!(core.vacancy(T0 + 1, &doc, &uid("n")), Vacancy::Taken);
}
