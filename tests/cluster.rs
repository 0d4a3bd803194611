//! Three real `octate-server` processes sharing rooms through a real Redis that the
//! tests start, stop, freeze and restart themselves; clients are independent
//! WebSocket clients. Timings are short (heartbeat 100 ms, node TTL 1 s), and every
//! wait is bounded.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::peers::{
    self, body, expect_close, expect_host_changed, expect_peer_joined, expect_peer_left, get, next,
    post,
};
use octate_client::{Client, ClientError};
use octate_protocol::{ErrorCode, LeaveReason, ServerMessage, SignalKind};
use serde_json::json;

const SECRET: &str = "cluster-test-secret-0123456789abcdef";
/// The node TTL the test nodes run with.
const TTL: Duration = Duration::from_millis(1000);

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
    let stats = peers::stats(nodes[0].http).await;
    assert_eq!(stats["cluster"]["nodesAlive"], 3, "{stats}");
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
    let (mut a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
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
    let (mut a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let _alice = a.join("alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    let started = Instant::now();
    a.signal("-TERM");
    expect_peer_left_within(&mut bob.client, "bob", "alice", LeaveReason::NodeDown, TTL).await;
    assert!(
        started.elapsed() < TTL,
        "announced by the stopping node, not the reaper"
    );
    a.exited_within(Duration::from_secs(10));
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

/// Joins, retrying while the cluster answers `unavailable` (it is recovering).
async fn join_when_available(node: &Node, user: &str, room: &str) -> peers::Joined {
    let deadline = Instant::now() + 10 * TTL;
    loop {
        let token = node.token(user, room).await;
        let (client, text) = peers::auth_raw(&node.ws_url(), &token, None).await;
        if text.contains("auth-ok") {
            let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
            let others = raw["data"]["peers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["userId"].as_str().unwrap().to_owned())
                .collect();
            let Ok(ServerMessage::AuthOk { room, .. }) = ServerMessage::decode(text.as_bytes())
            else {
                panic!("{user}: {text}");
            };
            return peers::Joined {
                client,
                room,
                others,
            };
        }
        assert!(text.contains("unavailable"), "{user}: {text}");
        assert!(Instant::now() < deadline, "{user}: still unavailable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `redis-server` of the test's own on a free loopback port, without persistence.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("octate-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            child: None,
            port,
            dir,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on the same port, empty.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (tests/all.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|| panic!("redis command {args:?} failed"))
    }

    /// Sends one command in RESP and returns the first line of the answer.
    fn try_command(&self, args: &[&str]) -> Option<String> {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            req.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            req.extend_from_slice(arg.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        tcp.write_all(&req).ok()?;
        let mut line = String::new();
        BufReader::new(tcp).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `octate-server` process of the cluster; killed on drop.
struct Node {
    child: Child,
    http: SocketAddr,
    signaling: SocketAddr,
}

impl Node {
    fn start(redis: &Redis, id: &str) -> Self {
        Self::start_with(redis, id, &[])
    }

    fn start_with(redis: &Redis, id: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(server_binary());
        for (name, _) in std::env::vars() {
            if name.starts_with("OCTATE_") {
                cmd.env_remove(name);
            }
        }
        cmd.current_dir(std::env::temp_dir())
            .env("RUST_LOG", "warn")
            .env("HOST", "127.0.0.2")
            .env("PORT", "0")
            .env("SIGNALING_PORT", "0")
            .env("OCTATE_TOKEN_SECRET", SECRET)
            .env("OCTATE_REDIS_URL", redis.url())
            .env("OCTATE_NODE_ID", id)
            .env("OCTATE_CLUSTER_HEARTBEAT_MS", "100")
            .env("OCTATE_CLUSTER_NODE_TTL_MS", TTL.as_millis().to_string())
            .env("OCTATE_CLUSTER_REAP_INTERVAL_MS", "100")
            // The tests send bursts of signals; the rate limit is not what they test.
            .env("OCTATE_MESSAGES_PER_SECOND", "10000")
            .env("OCTATE_MESSAGE_BURST", "10000")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node {id} printed no listening line");
        };
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        Self {
            http: addr("http="),
            signaling: addr("signaling="),
            child,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/", self.signaling)
    }

    async fn token(&self, user: &str, room: &str) -> String {
        let fetch = octate_client::fetch_token(self.http, user, room, None);
        tokio::time::timeout(peers::WAIT, fetch)
            .await
            .unwrap()
            .unwrap()
    }

    async fn join(&self, user: &str, room: &str) -> peers::Joined {
        let token = self.token(user, room).await;
        peers::join(&self.ws_url(), &token, user, None).await
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn exited_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Builds `octate-server` once and returns its path.
fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args([
            "build",
            "-p",
            "octate-server",
            "--bin",
            "octate-server",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        let out = cmd.output().unwrap();
        let mut log = String::new();
        let _ = out.stderr.as_slice().read_to_string(&mut log);
        assert!(
            out.status.success(),
            "cargo build -p octate-server failed:\n{log}"
        );
        profile_dir.join(format!("octate-server{}", std::env::consts::EXE_SUFFIX))
    })
}
