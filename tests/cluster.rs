//! Three real `octate-server` processes sharing rooms through a real Redis that the
//! tests start, stop, freeze and restart themselves; clients are independent
//! WebSocket clients. Timings are short (heartbeat 100 ms, node TTL 1 s), and every
//! wait is bounded.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use octate_client::{Client, ClientError};
use octate_protocol::{ErrorCode, LeaveReason, RoomCloseReason, ServerMessage, SignalKind};
use octate_test::cluster::{
    ClusterNode as Node, NODE_TTL as TTL, expect_resume_failed, join_with_ticket, resume_on,
};
use octate_test::peers::{
    self, body, expect_close, expect_host_changed, expect_peer_joined, expect_peer_left, get, next,
    post,
};
use octate_test::redis::Redis;
use serde_json::json;

// ---- tests ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_show_one_room_and_relay_across_nodes() {
    let redis = Redis::start();
    let nodes = [
        Node::start(&redis, "a"),
        Node::start(&redis, "b"),
        Node::start(&redis, "c"),
    ];
    let mut alice = nodes[0].join("alice", "doc").await;
    assert!(alice.others.is_empty());
    let mut bob = nodes[1].join("bob", "doc").await;
    assert_eq!(
        bob.others,
        ["alice"],
        "bob's auth-ok lists alice on another node"
    );
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    let mut carol = nodes[2].join("carol", "doc").await;
    assert_eq!(carol.others, ["alice", "bob"]);
    expect_peer_joined(&mut alice.client, "alice", "carol").await;
    expect_peer_joined(&mut bob.client, "bob", "carol").await;
    assert_eq!(
        carol.room.host_id.as_str(),
        "alice",
        "one host for the whole cluster"
    );

    // Targeted signals reach the named peer on its node, stamped with the sender.
    alice
        .client
        .signal(
            SignalKind::Offer,
            "bob",
            json!({"type": "offer", "sdp": "v=0"}),
        )
        .await
        .unwrap();
    match next(&mut bob.client, "bob").await {
        ServerMessage::Signal {
            kind, from, data, ..
        } => {
            assert_eq!(kind, SignalKind::Offer);
            assert_eq!(from.as_str(), "alice");
            let data: serde_json::Value = serde_json::from_str(data.get()).unwrap();
            assert_eq!(data["offer"], json!({"type": "offer", "sdp": "v=0"}));
        }
        other => panic!("bob: expected the offer, got {}", peers::brief(&other)),
    }
    // Many candidates in a row: exactly once, in order.
    for seq in 0..300 {
        alice
            .client
            .signal(SignalKind::IceCandidate, "carol", json!({"seq": seq}))
            .await
            .unwrap();
    }
    for seq in 0..300 {
        match next(&mut carol.client, "carol").await {
            ServerMessage::Signal { from, data, .. } => {
                assert_eq!(from.as_str(), "alice");
                let data: serde_json::Value = serde_json::from_str(data.get()).unwrap();
                assert_eq!(data["candidate"]["seq"], seq, "in order, once");
            }
            other => panic!(
                "carol: expected candidate {seq}, got {}",
                peers::brief(&other)
            ),
        }
    }
    // Presence reaches the whole room, across nodes.
    carol
        .client
        .send_text(r#"{"type":"presence","data":{"status":"idle"}}"#)
        .await
        .unwrap();
    for (client, who) in [(&mut alice.client, "alice"), (&mut bob.client, "bob")] {
        match next(client, who).await {
            ServerMessage::Update { from, .. } => assert_eq!(from.as_str(), "carol"),
            other => panic!(
                "{who}: expected carol's presence, got {}",
                peers::brief(&other)
            ),
        }
    }
    // Any node answers HTTP for the whole cluster.
    let resp = get(nodes[2].http, "/api/rooms/doc/peers").await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let ids: Vec<String> = body(&resp)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["userId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["alice", "bob", "carol"]);
    // Each node counts the live nodes at its own heartbeat: wait for one that saw all three.
    let deadline = Instant::now() + 5 * TTL;
    let stats = loop {
        let stats = peers::stats(nodes[0].http).await;
        if stats["cluster"]["nodesAlive"] == 3 {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "never saw 3 nodes alive: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        stats["cluster"]["messagesOut"].as_u64().unwrap() >= 301,
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_leaving_hands_over_on_every_node() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let alice = a.join("alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    let mut carol = a.join("carol", "doc").await;
    expect_peer_joined(&mut bob.client, "bob", "carol").await;
    alice.client.close().await.unwrap();
    for (client, who) in [(&mut bob.client, "bob"), (&mut carol.client, "carol")] {
        expect_peer_left(client, who, "alice", LeaveReason::Disconnected).await;
        expect_host_changed(client, who, "bob").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_user_on_another_node_replaces_the_old_connection() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut old = a.join("alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    expect_peer_joined(&mut old.client, "old alice", "bob").await;
    let _new = b.join("alice", "doc").await;
    expect_close(&mut old.client, "old alice", 4004).await;
    expect_peer_left(&mut bob.client, "bob", "alice", LeaveReason::Replaced).await;
    expect_peer_joined(&mut bob.client, "bob", "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_a_killed_node_are_announced_node_down_and_the_host_moves() {
    let redis = Redis::start();
    // Without resume, a dead node's peers are gone at once.
    let (mut a, b) = (no_resume(&redis, "a"), no_resume(&redis, "b"));
    let _alice = a.join("alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    let started = Instant::now();
    a.kill();
    expect_peer_left_within(
        &mut bob.client,
        "bob",
        "alice",
        LeaveReason::NodeDown,
        5 * TTL,
    )
    .await;
    expect_host_changed(&mut bob.client, "bob", "bob").await;
    let took = started.elapsed();
    assert!(
        took >= TTL / 2,
        "announced before the node could be judged dead: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_announces_its_peers_at_once() {
    let redis = Redis::start();
    let (mut a, b) = (no_resume(&redis, "a"), no_resume(&redis, "b"));
    let _alice = a.join("alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    let started = Instant::now();
    a.signal("-TERM");
    expect_peer_left_within(&mut bob.client, "bob", "alice", LeaveReason::NodeDown, TTL).await;
    assert!(
        started.elapsed() < TTL,
        "announced by the stopping node, not the reaper"
    );
    a.exited_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_on_another_node_and_nobody_notices() {
    let redis = Redis::start();
    let (a, b, c) = (
        Node::start(&redis, "a"),
        Node::start(&redis, "b"),
        Node::start(&redis, "c"),
    );
    let (alice, ticket) = join_with_ticket(&a, "alice", "doc").await;
    let mut bob = c.join("bob", "doc").await;
    // The connection is lost: no close frame.
    alice.client.abort();
    // Until the suspension reaches bob's node, a signal may still go to node a; once it
    // has, the sender is told the peer is unavailable.
    let deadline = Instant::now() + 5 * TTL;
    loop {
        bob.client
            .signal(SignalKind::Offer, "alice", json!({"sdp": "x"}))
            .await
            .unwrap();
        match bob.client.recv_within(Duration::from_millis(200)).await {
            Ok(ServerMessage::Error {
                code: ErrorCode::PeerUnavailable,
                peer,
                ..
            }) => {
                assert_eq!(peer.as_ref().map(|p| p.as_str()), Some("alice"));
                break;
            }
            Ok(other) => panic!("bob: unexpected {}", peers::brief(&other)),
            Err(ClientError::Timeout) => {}
            Err(err) => panic!("bob: {err}"),
        }
        assert!(Instant::now() < deadline, "alice never became unavailable");
    }
    // Alice comes back through another node.
    let (mut alice2, resumed) = resume_on(&b, &ticket).await;
    let ServerMessage::Resumed { room, resume, .. } = resumed else {
        panic!("alice: expected resumed, got {}", peers::brief(&resumed));
    };
    assert_eq!(room.peer_count, 2, "{room:?}");
    let next_ticket = resume.expect("a fresh ticket");
    assert_ne!(next_ticket.resume_token, ticket.resume_token, "rotated");
    // Signals flow both ways again, across nodes b and c. Node c learns of the resume from
    // its snapshot, a moment after alice: until then bob is told she is unavailable.
    let deadline = Instant::now() + 5 * TTL;
    loop {
        bob.client
            .signal(SignalKind::Offer, "alice", json!({"sdp": "again"}))
            .await
            .unwrap();
        match alice2.recv_within(Duration::from_millis(200)).await {
            Ok(ServerMessage::Signal { from, .. }) => {
                assert_eq!(from.as_str(), "bob");
                break;
            }
            Ok(other) => panic!("alice: expected bob's offer, got {}", peers::brief(&other)),
            Err(ClientError::Timeout) => {}
            Err(err) => panic!("alice: {err}"),
        }
        match next(&mut bob.client, "bob").await {
            ServerMessage::Error {
                code: ErrorCode::PeerUnavailable,
                ..
            } => {}
            other => panic!(
                "bob: expected peer-unavailable, got {}",
                peers::brief(&other)
            ),
        }
        assert!(
            Instant::now() < deadline,
            "bob's offers never reached alice"
        );
    }
    alice2
        .signal(SignalKind::Answer, "bob", json!({"sdp": "ok"}))
        .await
        .unwrap();
    match next(&mut bob.client, "bob").await {
        ServerMessage::Signal { from, .. } => assert_eq!(from.as_str(), "alice"),
        other => panic!("bob: expected alice's answer, got {}", peers::brief(&other)),
    }
    // Bob never saw alice leave or join again; the spent ticket fails anywhere.
    drain_expect_no_departures(&mut bob.client, "bob").await;
    let (mut replay, answer) = resume_on(&c, &ticket).await;
    expect_resume_failed(&mut replay, &answer, "replayed ticket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_a_killed_node_resume_elsewhere_and_the_room_lives_on() {
    let redis = Redis::start();
    let (mut a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let (alice, ticket) = join_with_ticket(&a, "alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    a.kill();
    drop(alice);
    // The reaper suspends alice instead of removing her; she resumes on node b.
    tokio::time::sleep(2 * TTL).await;
    let (_alice2, resumed) = resume_on(&b, &ticket).await;
    let ServerMessage::Resumed { room, .. } = resumed else {
        panic!("alice: expected resumed, got {}", peers::brief(&resumed));
    };
    assert_eq!(room.host_id.as_str(), "alice", "alice kept the host role");
    drain_expect_no_departures(&mut bob.client, "bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_hands_every_peer_to_the_other_node() {
    let redis = Redis::start();
    let (mut a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let (mut alice, ticket) = join_with_ticket(&a, "alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    a.signal("-TERM");
    expect_close(&mut alice.client, "alice", 1001).await;
    let (_alice2, resumed) = resume_on(&b, &ticket).await;
    assert!(
        matches!(resumed, ServerMessage::Resumed { .. }),
        "alice: expected resumed, got {}",
        peers::brief(&resumed)
    );
    drain_expect_no_departures(&mut bob.client, "bob").await;
    a.exited_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_peer_of_a_dead_node_times_out_exactly_once() {
    let redis = Redis::start();
    let grace = [("OCTATE_RESUME_GRACE_MS", "1500")];
    let (mut a, b, c) = (
        Node::start_with(&redis, "a", &grace),
        Node::start_with(&redis, "b", &grace),
        Node::start_with(&redis, "c", &grace),
    );
    let (alice, _ticket) = join_with_ticket(&a, "alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    let mut carol = c.join("carol", "doc").await;
    expect_peer_joined(&mut bob.client, "bob", "carol").await;
    let killed = Instant::now();
    a.kill();
    drop(alice);
    // Node a held the grace timer and is gone: the cluster ends the grace anyway.
    for (client, who) in [(&mut bob.client, "bob"), (&mut carol.client, "carol")] {
        expect_peer_left_within(client, who, "alice", LeaveReason::Timeout, 10 * TTL).await;
        expect_host_changed(client, who, "bob").await;
    }
    assert!(
        killed.elapsed() >= Duration::from_millis(1500),
        "announced before the grace ran out: {:?}",
        killed.elapsed()
    );
    drain_expect_no_departures(&mut bob.client, "bob").await;
    drain_expect_no_departures(&mut carol.client, "carol").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_is_full_for_the_whole_cluster() {
    let redis = Redis::start();
    let a = Node::start_with(&redis, "a", &[("OCTATE_MAX_PEERS_PER_ROOM", "2")]);
    let b = Node::start_with(&redis, "b", &[("OCTATE_MAX_PEERS_PER_ROOM", "2")]);
    let _alice = a.join("alice", "doc").await;
    let _bob = b.join("bob", "doc").await;
    let token = b.token("carol", "doc").await;
    let (mut carol, text) = peers::auth_raw(&b.ws_url(), &token, None).await;
    assert!(text.contains("room-full"), "{text}");
    assert!(peers::expect_end(&mut carol, "carol").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_keeps_every_peer_and_relay_comes_back() {
    for down in [Duration::from_secs(2), Duration::from_secs(10)] {
        let mut redis = Redis::start();
        let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
        let mut alice = a.join("alice", "doc").await;
        let mut bob = b.join("bob", "doc").await;
        expect_peer_joined(&mut alice.client, "alice", "bob").await;
        redis.kill();
        // Same-node peers keep working while Redis is down.
        let mut carol = None;
        tokio::time::sleep(down).await;
        redis.restart();
        // Cross-node relay resumes by itself, with no peer-left for anybody.
        let deadline = Instant::now() + 5 * TTL;
        let mut seq = 0;
        'relay: loop {
            seq += 1;
            alice
                .client
                .signal(SignalKind::IceCandidate, "bob", json!({"probe": seq}))
                .await
                .unwrap();
            match bob.client.recv_within(Duration::from_millis(200)).await {
                Ok(ServerMessage::Signal { from, .. }) => {
                    assert_eq!(from.as_str(), "alice");
                    break 'relay;
                }
                Ok(other) => panic!("bob after {down:?} outage: {}", peers::brief(&other)),
                Err(ClientError::Timeout) => {}
                Err(err) => panic!("bob lost his connection: {err}"),
            }
            assert!(
                Instant::now() < deadline,
                "relay did not resume after {down:?}"
            );
        }
        // Memberships are restored: a newcomer sees both.
        if carol.is_none() {
            carol = Some(join_when_available(&b, "carol", "doc").await);
        }
        let carol = carol.unwrap();
        let mut others = carol.others.clone();
        others.sort();
        assert_eq!(others, ["alice", "bob"], "after a {down:?} outage");
        // Nobody was told that a live peer left.
        drain_expect_no_departures(&mut alice.client, "alice").await;
        drain_expect_no_departures(&mut bob.client, "bob").await;
    }
}

/// A Redis that restarts empty loses no session: the members the nodes register again
/// keep their session (a dropped connection resumes, on any node) and their token (a kick
/// from any node revokes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_tokens_survive_redis_restarting_empty() {
    let mut redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let (mut alice, ticket) = join_with_ticket(&a, "alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();
    // Once both nodes registered their members again, a newcomer sees both.
    let mut carol = join_when_available(&b, "carol", "doc").await;
    let mut others = carol.others.clone();
    others.sort();
    assert_eq!(others, ["alice", "bob"]);
    // Alice's connection drops; her ticket from before the restart still resumes her.
    alice.client.abort();
    let (_alice2, resumed) = resume_on(&b, &ticket).await;
    assert!(
        matches!(resumed, ServerMessage::Resumed { .. }),
        "alice: expected resumed, got {}",
        peers::brief(&resumed)
    );
    drain_expect_no_departures(&mut carol.client, "carol").await;
    drain_expect_no_departures(&mut bob.client, "bob").await;
    // Bob, on node b, kicked from node a: the token he joined with is revoked.
    let resp = post(
        a.http,
        "/api/rooms/doc/peers/bob/kick",
        &json!({"revokeToken": true}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(body(&resp), json!({"success": true, "tokenRevoked": true}));
    peers::expect_error(&mut bob.client, "bob", ErrorCode::Kicked).await;
    expect_close(&mut bob.client, "bob", 4005).await;
}

/// A room is closed for inactivity only once no node saw activity: two peers of node b
/// that signal only each other keep it open for a silent peer of node a (whose node sees
/// none of that traffic); once they stop too, it closes for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_busy_on_one_node_is_not_closed_as_inactive_by_another() {
    let redis = Redis::start();
    let (a, b) = (
        Node::start_with(&redis, "a", &INACTIVE_SOON),
        Node::start_with(&redis, "b", &INACTIVE_SOON),
    );
    let mut quiet = a.join("quiet", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    let mut carol = b.join("carol", "doc").await;
    expect_peer_joined(&mut quiet.client, "quiet", "bob").await;
    expect_peer_joined(&mut quiet.client, "quiet", "carol").await;
    expect_peer_joined(&mut bob.client, "bob", "carol").await;
    // Twice the timeout of signals between bob and carol only.
    let busy_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < busy_until {
        bob.client
            .signal(SignalKind::IceCandidate, "carol", json!({"c": 1}))
            .await
            .unwrap();
        match next(&mut carol.client, "carol").await {
            ServerMessage::Signal { from, .. } => assert_eq!(from.as_str(), "bob"),
            other => panic!("carol: expected bob's signal, got {}", peers::brief(&other)),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drain_expect_no_departures(&mut quiet.client, "quiet").await;
    // Now nobody says anything: the room closes as inactive, for the peers of both nodes.
    for (client, who) in [
        (&mut quiet.client, "quiet"),
        (&mut bob.client, "bob"),
        (&mut carol.client, "carol"),
    ] {
        expect_room_closed_inactive(client, who).await;
    }
}

/// A room the store lost (as if its close never reached this node) is not kept open for
/// ever: the node that finds it quiet closes its own copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_room_gone_from_the_store_is_closed_where_it_lingers() {
    let redis = Redis::start();
    let a = Node::start_with(&redis, "a", &INACTIVE_SOON);
    let mut quiet = a.join("quiet", "doc").await;
    redis.command(&["DEL", "oct:room:{doc}:meta", "oct:room:{doc}:m"]);
    expect_room_closed_inactive(&mut quiet.client, "quiet").await;
}

/// Rooms closed as inactive after 2 s, idle after 1 s, looked at every 100 ms.
const INACTIVE_SOON: [(&str, &str); 3] = [
    ("OCTATE_ROOM_INACTIVE_TIMEOUT_MS", "2000"),
    ("OCTATE_ROOM_IDLE_AFTER_MS", "1000"),
    ("OCTATE_CLEANUP_INTERVAL_MS", "100"),
];

async fn expect_room_closed_inactive(client: &mut Client, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_within(left).await {
            Ok(ServerMessage::RoomClosed { reason, .. }) => {
                assert_eq!(reason, RoomCloseReason::Inactive, "{who}");
                return;
            }
            Ok(ServerMessage::Heartbeat) => {}
            Ok(other) => panic!("{who}: expected room-closed, got {}", peers::brief(&other)),
            Err(err) => panic!("{who}: no room-closed: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_makes_no_node_look_dead() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut alice = a.join("alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    redis.signal("-STOP");
    tokio::time::sleep(3 * TTL).await;
    redis.signal("-CONT");
    tokio::time::sleep(3 * TTL).await;
    drain_expect_no_departures(&mut alice.client, "alice").await;
    drain_expect_no_departures(&mut bob.client, "bob").await;
    alice
        .client
        .signal(SignalKind::IceCandidate, "bob", json!({"after": "freeze"}))
        .await
        .unwrap();
    match next(&mut bob.client, "bob").await {
        ServerMessage::Signal { from, .. } => assert_eq!(from.as_str(), "alice"),
        other => panic!("bob: {}", peers::brief(&other)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_subscriber_connection_loses_nothing() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut alice = a.join("alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let deadline = Instant::now() + 5 * TTL;
    loop {
        alice
            .client
            .signal(SignalKind::IceCandidate, "bob", json!({"x": 1}))
            .await
            .unwrap();
        match bob.client.recv_within(Duration::from_millis(200)).await {
            Ok(ServerMessage::Signal { .. }) => break,
            Ok(other) => panic!("bob: {}", peers::brief(&other)),
            Err(ClientError::Timeout) => {}
            Err(err) => panic!("bob: {err}"),
        }
        assert!(Instant::now() < deadline, "the subscriber never came back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_node_inbox_is_counted_and_dropped() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut alice = a.join("alice", "doc").await;
    let _bob = b.join("bob", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    for junk in ["", "not a frame", "\u{0}\u{1}\u{2}", "R{{{{{", "M[1,2,3]"] {
        redis.command(&["PUBLISH", "oct:inbox:a", junk]);
    }
    let deadline = Instant::now() + 5 * TTL;
    loop {
        let stats = peers::stats(a.http).await;
        if stats["cluster"]["badMessages"].as_u64().unwrap_or(0) >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "junk not counted: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _late = a.join("dave", "doc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_ends_the_session_on_another() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let token = b.token("bob", "doc").await;
    let (mut bob, text) = peers::auth_raw(&b.ws_url(), &token, None).await;
    assert!(text.contains("auth-ok"), "{text}");
    let started = Instant::now();
    let resp = post(a.http, "/api/auth/revoke", &json!({ "token": token }), None).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    peers::expect_error(&mut bob, "bob", ErrorCode::TokenRevoked).await;
    expect_close(&mut bob, "bob", 4001).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "revocation took {:?}",
        started.elapsed()
    );
    // And the token no longer opens a session on any node.
    let (_again, text) = peers::auth_raw(&a.ws_url(), &token, None).await;
    assert!(text.contains("token-revoked"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_rejoin_and_http_rooms_work_across_nodes() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut alice = a.join("alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;

    // leave-room on node A: bob on node B sees alice leave and becomes host.
    alice
        .client
        .send_text(r#"{"type":"leave-room"}"#)
        .await
        .unwrap();
    assert!(matches!(
        next(&mut alice.client, "alice").await,
        ServerMessage::RoomLeft { .. }
    ));
    expect_peer_left(&mut bob.client, "bob", "alice", LeaveReason::Left).await;
    expect_host_changed(&mut bob.client, "bob", "bob").await;
    // join-room on the same connection: back in, with bob listed.
    alice
        .client
        .send_text(r#"{"type":"join-room"}"#)
        .await
        .unwrap();
    match next(&mut alice.client, "alice").await {
        ServerMessage::RoomJoined { room, .. } => {
            let ids: Vec<&str> = room.peers.iter().map(|p| p.user_id.as_str()).collect();
            assert_eq!(ids, ["bob", "alice"]);
            assert_eq!(room.host_id.as_str(), "bob");
        }
        other => panic!("alice: expected room-joined, got {}", peers::brief(&other)),
    }
    expect_peer_joined(&mut bob.client, "bob", "alice").await;

    // A room created over HTTP on node B exists for node A; create-room for it is refused.
    let resp = post(
        b.http,
        "/api/rooms",
        &json!({"roomId": "planned", "roomName": "Planned", "hostId": "carol", "hostName": "Carol"}),
        None,
    )
    .await;
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    let resp = get(a.http, "/api/rooms/planned").await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(body(&resp)["roomName"], "Planned");
    let token = a.token("carol", "planned").await;
    let mut carol = peers::connect(&a.ws_url()).await;
    carol
        .send_text(format!(r#"{{"type":"auth","data":{{"token":"{token}"}}}}"#))
        .await
        .unwrap();
    match next(&mut carol, "carol").await {
        ServerMessage::AuthOk { room, .. } => assert_eq!(room.room_name, "Planned"),
        other => panic!("carol: expected auth-ok, got {}", peers::brief(&other)),
    }
    // Deleting it over HTTP on node B closes carol's connection on node A.
    let resp = peers::request(b.http, "DELETE", "/api/rooms/planned", &[], None).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    match next(&mut carol, "carol").await {
        ServerMessage::RoomClosed { .. } => {}
        other => panic!("carol: expected room-closed, got {}", peers::brief(&other)),
    }
    expect_close(&mut carol, "carol", 4003).await;
    let resp = get(a.http, "/api/rooms/planned").await;
    assert_eq!(resp.status, 404);
}

// ---- helpers --------------------------------------------------------------------------

/// Reads messages until silence; fails on anything that says a peer left or the room
/// changed (late probe signals are fine).
async fn drain_expect_no_departures(client: &mut Client, who: &str) {
    loop {
        match client.recv_within(peers::QUIET).await {
            Ok(
                ServerMessage::PeerJoined { .. }
                | ServerMessage::Heartbeat
                | ServerMessage::Signal { .. },
            ) => {}
            Ok(other) => panic!("{who}: unexpected {}", peers::brief(&other)),
            Err(ClientError::Timeout) => return,
            Err(err) => panic!("{who}: connection failed: {err}"),
        }
    }
}

async fn expect_peer_left_within(
    client: &mut Client,
    who: &str,
    user: &str,
    reason: LeaveReason,
    limit: Duration,
) {
    match client.recv_within(limit).await {
        Ok(ServerMessage::PeerLeft {
            peer, reason: got, ..
        }) if peer.user_id.as_str() == user && got == reason => {}
        other => {
            panic!("{who}: expected peer-left {user} ({reason:?}) within {limit:?}, got {other:?}")
        }
    }
}

/// A node with resume off.
fn no_resume(redis: &Redis, id: &str) -> Node {
    Node::start_with(redis, id, &[("OCTATE_RESUME_GRACE_MS", "0")])
}

/// Joins, retrying while the cluster answers `unavailable` (it is recovering).
async fn join_when_available(node: &Node, user: &str, room: &str) -> peers::Joined {
    let deadline = Instant::now() + 10 * TTL;
    loop {
        let token = node.token(user, room).await;
        let (client, text) = peers::auth_raw(&node.ws_url(), &token, None).await;
        if text.contains("auth-ok") {
            return peers::joined_from(client, &text, user);
        }
        assert!(text.contains("unavailable"), "{user}: {text}");
        assert!(Instant::now() < deadline, "{user}: still unavailable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
