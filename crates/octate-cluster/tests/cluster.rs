//! Two and three cluster links in one process over a real Redis that each test starts,
//! kills, restarts, freezes and feeds garbage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use octate_cluster::{Cluster, ClusterConfig, NodeEvent};
use octate_core::{
    ClusterCommand, ClusterEvent, ConnId, CoreError, JoinKind, LocalMember, MembershipCause,
    NewRoom, NodeId, Protocol, RoomSnapshot, TokenRef,
};
use octate_protocol::{ErrorCode, LeaveReason, RoomCloseReason, RoomId, ServerMessage, UserId};
use octate_test::redis::{Redis, free_port};
use octate_transport::ClusterLink;
use parking_lot::Mutex;

// ---- A private Redis per test (octate_test::redis) ----------------------------------

/// Runs one command through redis-rs and returns its answer.
async fn command(redis: &Redis, cmd: &redis::Cmd) -> redis::Value {
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    cmd.query_async(&mut conn).await.expect("command")
}

// ---- Nodes that record what the cluster tells them --------------------------------------

fn node_id(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}
fn user(s: &str) -> UserId {
    UserId::new(s).expect("user id")
}
fn room(s: &str) -> RoomId {
    RoomId::new(s).expect("room id")
}

fn config(redis: &Redis, node: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new(redis.url(), node_id(node));
    c.heartbeat_interval = Duration::from_millis(100);
    c.node_ttl = Duration::from_millis(500);
    c.reap_interval = Duration::from_millis(100);
    c.ping_interval = Duration::from_millis(100);
    c.ping_timeout = Duration::from_millis(400);
    c.command_timeout = Duration::from_millis(500);
    c.stall_threshold = Duration::from_millis(300);
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(300);
    c
}

/// One node: its link, every event it got, and the members its "core" holds.
struct Node {
    id: NodeId,
    link: Cluster,
    events: Arc<Mutex<Vec<NodeEvent>>>,
    members: Arc<Mutex<Vec<LocalMember>>>,
}

const WAIT: Duration = Duration::from_secs(5);

impl Node {
    async fn start(config: ClusterConfig) -> Self {
        let id = config.node_id.clone();
        let events: Arc<Mutex<Vec<NodeEvent>>> = Arc::default();
        let members: Arc<Mutex<Vec<LocalMember>>> = Arc::default();
        let (ev, mem, me) = (events.clone(), members.clone(), id.clone());
        let sink = Arc::new(move |event: NodeEvent| {
            // Like the core: a committed join makes a local member.
            if let NodeEvent::Core(ClusterEvent::JoinCommitted { conn, snapshot }) = &event
                && let Some(m) = snapshot
                    .members
                    .iter()
                    .find(|m| m.node == me && m.conn == *conn)
            {
                mem.lock().push(LocalMember {
                    room_id: snapshot.room_id.clone(),
                    member: m.clone(),
                    resume_digest: None,
                    token: TokenRef::default(),
                });
            }
            ev.lock().push(event);
        });
        let mem = members.clone();
        let local = Arc::new(move || mem.lock().clone());
        let link = Cluster::start(config, sink, local).await.expect("start");
        Self {
            id,
            link,
            events,
            members,
        }
    }

    fn join(&self, conn: u64, room_id: &str, user_id: &str, kind: JoinKind) {
        self.join_speaking(conn, room_id, user_id, kind, Protocol::Native);
    }

    fn join_speaking(
        &self,
        conn: u64,
        room_id: &str,
        user_id: &str,
        kind: JoinKind,
        protocol: Protocol,
    ) {
        self.link.submit(ClusterCommand::Join {
            conn: ConnId(conn),
            room_id: room(room_id),
            user_id: user(user_id),
            user_name: format!("{user_id} name"),
            kind,
            joined_at: 0,
            session_id: None,
            token: Default::default(),
            protocol,
        });
    }

    async fn joined(&self, conn: u64, room_id: &str, user_id: &str) -> RoomSnapshot {
        self.join(conn, room_id, user_id, JoinKind::Join);
        self.join_result(conn).await.expect("join committed")
    }

    async fn join_result(&self, conn: u64) -> Result<RoomSnapshot, CoreError> {
        let event = self
            .wait_for("join answer", |e| {
                matches!(e, NodeEvent::Core(ClusterEvent::JoinCommitted { conn: c, .. }
                    | ClusterEvent::JoinRejected { conn: c, .. }) if c.0 == conn)
            })
            .await;
        match event {
            NodeEvent::Core(ClusterEvent::JoinCommitted { snapshot, .. }) => Ok(snapshot),
            NodeEvent::Core(ClusterEvent::JoinRejected { error, .. }) => Err(error),
            _ => unreachable!(),
        }
    }

    fn leave(&self, conn: u64, room_id: &str, user_id: &str, reason: LeaveReason) {
        self.members
            .lock()
            .retain(|l| l.member.conn != ConnId(conn));
        self.link.submit(ClusterCommand::Leave {
            conn: ConnId(conn),
            room_id: room(room_id),
            user_id: user(user_id),
            reason,
        });
    }

    fn relay(&self, to_node: &Self, room_id: &str, from: &str, to: &str, text: &str) {
        self.link.submit(ClusterCommand::Relay {
            node: to_node.id.clone(),
            room_id: room(room_id),
            to: Some(user(to)),
            from: user(from),
            msg: ServerMessage::error(ErrorCode::InvalidField, text),
        });
    }

    /// Waits for the first event since the start that matches.
    async fn wait_for(&self, what: &str, pred: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
        self.wait_for_after(0, what, pred).await
    }

    /// Waits for an event at or after index `from` that matches.
    async fn wait_for_after(
        &self,
        from: usize,
        what: &str,
        pred: impl Fn(&NodeEvent) -> bool,
    ) -> NodeEvent {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.events.lock().iter().skip(from).find(|e| pred(e)) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {WAIT:?}; got {:#?}",
                self.id,
                self.events.lock()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn count(&self) -> usize {
        self.events.lock().len()
    }

    fn memberships(&self) -> Vec<(RoomSnapshot, MembershipCause)> {
        self.events
            .lock()
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Core(ClusterEvent::Membership { snapshot, cause }) => {
                    Some((snapshot.clone(), cause.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn relayed_texts(&self) -> Vec<String> {
        self.events
            .lock()
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Core(ClusterEvent::Relay { text, .. }) => Some(text.to_string()),
                _ => None,
            })
            .collect()
    }
}

fn users(snapshot: &RoomSnapshot) -> Vec<&str> {
    snapshot
        .members
        .iter()
        .map(|m| m.user_id.as_str())
        .collect()
}

fn is_membership(e: &NodeEvent, cause: impl Fn(&MembershipCause) -> bool) -> bool {
    matches!(e, NodeEvent::Core(ClusterEvent::Membership { cause: c, .. }) if cause(c))
}

fn snapshot_of(e: &NodeEvent) -> RoomSnapshot {
    match e {
        NodeEvent::Core(ClusterEvent::Membership { snapshot, .. }) => snapshot.clone(),
        other => panic!("not a membership event: {other:?}"),
    }
}

/// Waits until a condition holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "no {what} within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- Membership --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_on_each_node_gives_both_the_whole_room() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;

    let first = a.joined(1, "r", "alice").await;
    assert_eq!(users(&first), ["alice"]);
    assert_eq!(first.host_id, Some(user("alice")));

    let second = b.joined(7, "r", "bob").await;
    assert_eq!(users(&second), ["alice", "bob"]);
    assert_eq!(second.members[1].node, b.id);
    assert_eq!(second.members[1].conn, ConnId(7));
    assert_eq!(second.host_id, Some(user("alice")));
    assert!(second.ver > first.ver);

    let seen = a
        .wait_for("bob's join", |e| {
            is_membership(e, |c| *c == MembershipCause::Joined(user("bob")))
        })
        .await;
    assert_eq!(snapshot_of(&seen), second);
}

/// Every node learns what each member speaks, so that none sends a `y-webrtc` member a
/// native message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_protocol_reaches_every_node() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.join_speaking(2, "r", "yuri", JoinKind::Join, Protocol::YWebrtc);
    let mine = b.join_result(2).await.expect("join committed");
    let seen = a
        .wait_for("yuri's join", |e| {
            is_membership(e, |c| *c == MembershipCause::Joined(user("yuri")))
        })
        .await;
    for snapshot in [mine, snapshot_of(&seen)] {
        let speaks: Vec<(&str, Protocol)> = snapshot
            .members
            .iter()
            .map(|m| (m.user_id.as_str(), m.protocol))
            .collect();
        assert_eq!(
            speaks,
            [("alice", Protocol::Native), ("yuri", Protocol::YWebrtc)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_user_on_another_node_replaces_the_old_session() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    a.joined(2, "r", "carol").await;

    let moved = b.joined(9, "r", "alice").await;
    assert_eq!(users(&moved), ["carol", "alice"]);
    let alice = &moved.members[1];
    assert_eq!((&alice.node, alice.conn), (&b.id, ConnId(9)));

    let seen = a
        .wait_for("replacement", |e| {
            is_membership(e, |c| *c == MembershipCause::Replaced(user("alice")))
        })
        .await;
    assert_eq!(snapshot_of(&seen), moved);

    // The old session's leave is now a no-op: alice stays on b.
    a.leave(1, "r", "alice", LeaveReason::Disconnected);
    a.joined(3, "r", "dave").await;
    let now = a.link.room(room("r")).await.expect("read").expect("room");
    assert_eq!(users(&now), ["carol", "alice", "dave"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_rules_hold_across_nodes() {
    let redis = Redis::start();
    let mut ca = config(&redis, "a");
    ca.max_peers_per_room = 2;
    ca.max_rooms = 2;
    ca.max_rooms_per_user = 1;
    let mut cb = config(&redis, "b");
    cb.max_peers_per_room = 2;
    cb.max_rooms = 2;
    cb.max_rooms_per_user = 1;
    let a = Node::start(ca).await;
    let b = Node::start(cb).await;

    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;
    a.join(3, "r", "carol", JoinKind::Join);
    assert_eq!(a.join_result(3).await, Err(CoreError::RoomFull));
    // Replacing a session does not count against the limit.
    assert!(a.joined(4, "r", "bob").await.members.len() == 2);

    b.join(
        5,
        "r",
        "erin",
        JoinKind::Create {
            room_name: None,
            file_id: None,
        },
    );
    assert_eq!(b.join_result(5).await, Err(CoreError::RoomExists));

    // Alice created "r"; a second room of hers is refused, another user's is not.
    a.join(6, "r2", "alice", JoinKind::Join);
    assert_eq!(a.join_result(6).await, Err(CoreError::TooManyRoomsForUser));
    b.join(
        7,
        "r2",
        "frank",
        JoinKind::Create {
            room_name: Some("Second".into()),
            file_id: Some("file-1".into()),
        },
    );
    let created = b.join_result(7).await.expect("created");
    assert_eq!(created.room_name, "Second");
    assert_eq!(created.file_id.as_deref(), Some("file-1"));
    b.join(8, "r3", "gina", JoinKind::Join);
    assert_eq!(b.join_result(8).await, Err(CoreError::TooManyRooms));

    // An emptied room is gone, and frees its slot.
    b.leave(7, "r2", "frank", LeaveReason::Left);
    let deadline = Instant::now() + WAIT;
    while a.link.room(room("r2")).await.expect("read").is_some() {
        assert!(Instant::now() < deadline, "r2 still exists");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.joined(9, "r3", "gina").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_moves_the_host_and_reaches_the_other_node() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;

    a.leave(1, "r", "alice", LeaveReason::Left);
    let seen = b
        .wait_for("alice's leave", |e| {
            is_membership(e, |c| {
                *c == MembershipCause::Left(user("alice"), LeaveReason::Left)
            })
        })
        .await;
    let snap = snapshot_of(&seen);
    assert_eq!(users(&snap), ["bob"]);
    assert_eq!(snap.host_id, Some(user("bob")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rooms_are_cluster_wide() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    let new = NewRoom {
        room_id: room("planned"),
        room_name: "Planned".into(),
        host_id: user("alice"),
        host_name: "Alice".into(),
        file_id: None,
        version: None,
    };
    let created = a.link.create_room(new.clone(), 0).await.expect("created");
    assert!(created.members.is_empty());
    assert_eq!(
        b.link.create_room(new, 0).await,
        Err(octate_transport::LinkError::Refused(CoreError::RoomExists))
    );
    let read = b
        .link
        .room(room("planned"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read.room_name, "Planned");

    a.joined(1, "planned", "alice").await;
    b.joined(2, "planned", "bob").await;
    assert!(
        b.link
            .close_room(room("planned"), RoomCloseReason::Deleted)
            .await
            .expect("closed")
    );
    for node in [&a, &b] {
        node.wait_for("room closed", |e| {
            matches!(e, NodeEvent::Core(ClusterEvent::RoomClosed { room_id, reason: RoomCloseReason::Deleted, .. }) if room_id.as_str() == "planned")
        })
        .await;
    }
    assert_eq!(a.link.room(room("planned")).await, Ok(None));
    assert_eq!(
        a.link
            .close_room(room("planned"), RoomCloseReason::Deleted)
            .await,
        Ok(false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_closed_by_the_core_closes_on_every_node() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;
    a.link.submit(ClusterCommand::CloseRoom {
        room_id: room("r"),
        reason: RoomCloseReason::Inactive,
    });
    b.wait_for("room closed", |e| {
        matches!(e, NodeEvent::Core(ClusterEvent::RoomClosed {
            room_id,
            reason: RoomCloseReason::Inactive,
            ..
        }) if *room_id == room("r"))
    })
    .await;
    assert_eq!(a.link.room(room("r")).await, Ok(None));
    // The room's name is free again, and bob's old session is gone with it.
    let fresh = b.joined(3, "r", "carol").await;
    assert_eq!(users(&fresh), ["carol"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_room_never_joined_expires_after_its_grace() {
    let redis = Redis::start();
    let mut c = config(&redis, "a");
    c.empty_room_grace = Duration::from_millis(300);
    c.max_rooms = 1;
    let a = Node::start(c).await;
    let new = NewRoom {
        room_id: room("brief"),
        room_name: "Brief".into(),
        host_id: user("alice"),
        host_name: "Alice".into(),
        file_id: None,
        version: None,
    };
    a.link.create_room(new, 0).await.expect("created");
    let deadline = Instant::now() + WAIT;
    while a.link.room(room("brief")).await.expect("read").is_some() {
        assert!(Instant::now() < deadline, "room never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its slot is free again.
    a.joined(1, "other", "bob").await;
}

// ---- Relays ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_arrive_once_and_in_order() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;

    for i in 0..1000 {
        a.relay(&b, "r", "alice", "bob", &i.to_string());
    }
    until("1000 relays", || b.relayed_texts().len() >= 1000).await;
    let expected: Vec<String> = (0..1000)
        .map(|i| ServerMessage::error(ErrorCode::InvalidField, i.to_string()))
        .map(|m| String::from_utf8(m.encode()).expect("utf-8"))
        .collect();
    // Nothing more trickles in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.relayed_texts(), expected);
    let event = b
        .wait_for("a relay", |e| {
            matches!(e, NodeEvent::Core(ClusterEvent::Relay { .. }))
        })
        .await;
    assert!(matches!(
        event,
        NodeEvent::Core(ClusterEvent::Relay { room_id, from, to: Some(to), .. })
            if room_id.as_str() == "r" && from.as_str() == "alice" && to.as_str() == "bob"
    ));
    let (sa, sb) = (a.link.stats(), b.link.stats());
    assert_eq!(sa.messages_out, 1000);
    assert_eq!(sb.messages_in, 1000);
    assert_eq!(sb.link_gaps, 0);
    assert_eq!(sb.nodes_alive, 2);
    // Many pings went by: the link never looked down.
    for node in [&a, &b] {
        assert!(!node.events.lock().iter().any(degraded), "{}", node.id);
        assert!(node.link.stats().connected && !node.link.stats().degraded);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_an_inbox_is_counted_and_ignored() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;
    for junk in [
        &b"hello"[..],
        b"R\x05ab",
        b"M{\"cause\":1}",
        b"",
        b"R\x01a\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x01\x01r\x05al ce\0{}",
    ] {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg("oct:inbox:b").arg(junk);
        command(&redis, &cmd).await;
    }
    until("5 bad messages", || b.link.stats().bad_messages == 5).await;
    a.relay(&b, "r", "alice", "bob", "still fine");
    until("a relay", || b.relayed_texts().len() == 1).await;
    assert_eq!(b.link.stats().link_gaps, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_node() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    let exp = 4_102_444_800_000; // 2100-01-01
    a.link.revoke("tok-1".into(), exp).await.expect("revoked");
    let started = Instant::now();
    b.wait_for("revocation", |e| {
        *e == NodeEvent::Revoked {
            token_id: "tok-1".into(),
            expires_at: exp,
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(1));
    a.link
        .revoke("tok-old".into(), 1_000)
        .await
        .expect("revoked");
    let c = Node::start(config(&redis, "c")).await;
    assert_eq!(
        c.link.revoked_tokens().await.expect("read"),
        vec![("tok-1".to_owned(), exp)]
    );
}

// ---- Node failures -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_reaped_and_its_host_moves() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    let c = Node::start(config(&redis, "c")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;
    c.joined(3, "r", "carol").await;
    a.joined(4, "r2", "alice2").await;

    let crashed = Instant::now();
    a.link.abort();
    for node in [&b, &c] {
        let seen = node
            .wait_for("node-down", |e| {
                is_membership(e, |c| *c == MembershipCause::NodeDown(node_id("a")))
            })
            .await;
        let snap = snapshot_of(&seen);
        assert_eq!(users(&snap), ["bob", "carol"]);
        assert_eq!(snap.host_id, Some(user("bob")));
    }
    // ttl 500 ms + reap 100 ms, with room for a busy machine.
    assert!(crashed.elapsed() < Duration::from_secs(4));
    // a's room that nobody else was in is gone.
    assert_eq!(b.link.room(room("r2")).await, Ok(None));
    until("a no longer alive", || b.link.stats().nodes_alive == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_is_announced_at_once() {
    let redis = Redis::start();
    // A ttl far beyond the wait below: only the announcement can be seen in time.
    let mut ca = config(&redis, "a");
    ca.node_ttl = Duration::from_secs(30);
    let mut cb = config(&redis, "b");
    cb.node_ttl = Duration::from_secs(30);
    let a = Node::start(ca).await;
    let b = Node::start(cb).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;

    a.link.shutdown().await;
    let seen = b
        .wait_for("node-down", |e| {
            is_membership(e, |c| *c == MembershipCause::NodeDown(node_id("a")))
        })
        .await;
    assert_eq!(users(&snapshot_of(&seen)), ["bob"]);
    let alive = command(&redis, redis::cmd("ZRANGE").arg("oct:nodes").arg(0).arg(-1)).await;
    assert_eq!(
        alive,
        redis::Value::Array(vec![redis::Value::BulkString(b"b".to_vec())])
    );
    // A command after shutdown is ignored, not a panic.
    a.join(3, "r", "zed", JoinKind::Join);
}

// ---- Redis failures ----------------------------------------------------------------------

fn degraded(e: &NodeEvent) -> bool {
    *e == NodeEvent::Core(ClusterEvent::Degraded)
}
fn recovered(e: &NodeEvent) -> bool {
    *e == NodeEvent::Core(ClusterEvent::Recovered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gets_every_member_back() {
    let mut redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;
    b.join(
        3,
        "solo",
        "sam",
        JoinKind::Create {
            room_name: Some("Solo".into()),
            file_id: Some("file-9".into()),
        },
    );
    let solo = b.join_result(3).await.expect("created");
    let before = a.link.room(room("r")).await.expect("read").expect("room");

    redis.kill();
    for node in [&a, &b] {
        node.wait_for("degraded", degraded).await;
    }
    let mark = (a.count(), b.count());
    // A join while down is refused as retryable.
    a.join(10, "r", "late", JoinKind::Join);
    assert_eq!(a.join_result(10).await, Err(CoreError::Unavailable));
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();

    for node in [&a, &b] {
        node.wait_for("recovered", recovered).await;
    }
    // No snapshot since the outage lost a member: live peers saw no peer-left.
    for (node, from) in [(&a, mark.0), (&b, mark.1)] {
        let events = node.events.lock().clone();
        for e in events.iter().skip(from) {
            if let NodeEvent::Core(ClusterEvent::Membership { snapshot, .. }) = e
                && snapshot.room_id.as_str() == "r"
            {
                assert_eq!(
                    users(snapshot),
                    ["alice", "bob"],
                    "{}: {events:#?}",
                    node.id
                );
            }
        }
    }
    let after = b.link.room(room("r")).await.expect("read").expect("room");
    assert_eq!(users(&after), ["alice", "bob"]);
    assert_eq!(after.host_id, Some(user("alice")));
    assert_eq!(after.members, before.members);
    assert!(
        after.ver > before.ver,
        "versions keep growing across the restart"
    );
    let resync = b
        .wait_for_after(mark.1, "resync of r", |e| {
            matches!(e, NodeEvent::Core(ClusterEvent::Membership { snapshot, cause: MembershipCause::Resync }) if snapshot.room_id.as_str() == "r")
        })
        .await;
    assert_eq!(users(&snapshot_of(&resync)), ["alice", "bob"]);
    // A room is recreated with the metadata its node remembered.
    let solo_after = b
        .link
        .room(room("solo"))
        .await
        .expect("read")
        .expect("room");
    assert_eq!(solo_after.room_name, "Solo");
    assert_eq!(solo_after.file_id.as_deref(), Some("file-9"));
    assert_eq!(solo_after.created_by, user("sam"));
    assert_eq!(solo_after.created_at, solo.created_at);
    assert_eq!(solo_after.members, solo.members);

    // Relays flow again, and joins are accepted.
    a.relay(&b, "r", "alice", "bob", "after restart");
    until("relay after restart", || {
        b.relayed_texts()
            .iter()
            .any(|t| t.contains("after restart"))
    })
    .await;
    a.joined(11, "r", "late").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_reaps_nobody() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;

    redis.signal("-STOP");
    // Three node ttls.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.signal("-CONT");
    for node in [&a, &b] {
        node.wait_for("degraded", degraded).await;
        node.wait_for("recovered", recovered).await;
    }
    // Several reap passes after the stall.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in [&a, &b] {
        assert!(
            !node
                .memberships()
                .iter()
                .any(|(_, c)| matches!(c, MembershipCause::NodeDown(_))),
            "{} saw a node reaped",
            node.id
        );
    }
    let now = a.link.room(room("r")).await.expect("read").expect("room");
    assert_eq!(users(&now), ["alice", "bob"]);
    a.relay(&b, "r", "alice", "bob", "after stall");
    until("relay after stall", || {
        b.relayed_texts().iter().any(|t| t.contains("after stall"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscriber_comes_back() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;

    command(
        &redis,
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"),
    )
    .await;
    for node in [&a, &b] {
        node.wait_for("degraded", degraded).await;
        node.wait_for("recovered", recovered).await;
    }
    a.relay(&b, "r", "alice", "bob", "after kill");
    until("relay after kill", || {
        b.relayed_texts().iter().any(|t| t.contains("after kill"))
    })
    .await;
    let seen = a
        .wait_for("resync", |e| {
            is_membership(e, |c| *c == MembershipCause::Resync)
        })
        .await;
    assert_eq!(users(&snapshot_of(&seen)), ["alice", "bob"]);
    assert!(a.link.stats().resyncs >= 1);
    assert!(a.link.stats().connected && !a.link.stats().degraded);
}

/// A relay frame as another node would write it (see docs/cluster.md).
fn raw_frame(node: &str, boot: u64, seq: u64, room_id: &str, from: &str, payload: &str) -> Vec<u8> {
    let mut out = vec![b'R'];
    for (i, part) in [node, room_id, from, ""].iter().enumerate() {
        if i == 1 {
            out.extend_from_slice(&boot.to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
        }
        out.push(u8::try_from(part.len()).expect("short"));
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(payload.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_frames_are_dropped_and_gaps_resync_the_shared_rooms() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;
    // "private" sorts before "r": had it been resynced, it would come first.
    a.joined(3, "private", "alice2").await;
    let mark = a.count();
    // Frames as b would send them, some duplicated, some lost, one late.
    for (seq, text) in [
        (1, "one"),
        (1, "one again"),
        (4, "four"),
        (2, "late two"),
        (5, "five"),
    ] {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg("oct:inbox:a")
            .arg(raw_frame("b", 9, seq, "r", "bob", text));
        command(&redis, &cmd).await;
    }
    until("five", || {
        a.relayed_texts().last().is_some_and(|t| t == "five")
    })
    .await;
    assert_eq!(a.relayed_texts(), ["one", "four", "five"]);
    assert_eq!(a.link.stats().link_gaps, 2);
    let seen = a
        .wait_for_after(mark, "resync", |e| {
            is_membership(e, |c| *c == MembershipCause::Resync)
        })
        .await;
    assert_eq!(users(&snapshot_of(&seen)), ["alice", "bob"]);
    assert_eq!(a.link.stats().resyncs, 1);
    // A new process of the same node starts its own sequence.
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg("oct:inbox:a")
        .arg(raw_frame("b", 10, 1, "r", "bob", "rebooted"));
    command(&redis, &cmd).await;
    until("rebooted", || {
        a.relayed_texts().last().is_some_and(|t| t == "rebooted")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaped_while_alive_registers_its_peers_again() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;

    // Make a look dead to b (as after a long pause) until b reaps it.
    let deadline = Instant::now() + WAIT;
    loop {
        command(&redis, redis::cmd("ZADD").arg("oct:nodes").arg(1).arg("a")).await;
        let reaped = b.memberships().iter().any(|(snap, cause)| {
            *cause == MembershipCause::NodeDown(node_id("a")) && users(snap) == ["bob"]
        });
        if reaped {
            break;
        }
        assert!(Instant::now() < deadline, "b never reaped a");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back = b
        .wait_for("alice back", |e| {
            is_membership(e, |c| *c == MembershipCause::Resync)
                && users(&snapshot_of(e)) == ["alice", "bob"]
        })
        .await;
    assert_eq!(snapshot_of(&back).members[0].node, a.id);
    let seen = a
        .wait_for("a's resync", |e| {
            is_membership(e, |c| *c == MembershipCause::Resync)
        })
        .await;
    assert_eq!(users(&snapshot_of(&seen)), ["alice", "bob"]);
    until("a alive again", || b.link.stats().nodes_alive == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_during_a_short_outage_arrive_after_it() {
    let mut redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;
    a.relay(&b, "r", "alice", "bob", "before");
    until("before", || b.relayed_texts().len() == 1).await;

    redis.kill();
    a.wait_for("degraded", degraded).await;
    for text in ["during 1", "during 2", "during 3"] {
        a.relay(&b, "r", "alice", "bob", text);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    until("the outage's frames", || b.relayed_texts().len() == 4).await;
    let texts = b.relayed_texts();
    for (got, want) in texts
        .iter()
        .zip(["before", "during 1", "during 2", "during 3"])
    {
        assert!(got.contains(want), "{texts:?}");
    }
    assert_eq!(b.link.stats().link_gaps, 0);
    assert_eq!(a.link.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_older_than_the_outage_window_are_dropped_and_counted() {
    let mut redis = Redis::start();
    let mut ca = config(&redis, "a");
    ca.outage_queue_time = Duration::from_millis(200);
    let a = Node::start(ca).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;

    redis.kill();
    a.wait_for("degraded", degraded).await;
    for i in 0..5 {
        a.relay(&b, "r", "alice", "bob", &format!("stale {i}"));
    }
    until("stale frames dropped", || a.link.stats().dropped == 5).await;
    redis.restart();
    for node in [&a, &b] {
        node.wait_for("recovered", recovered).await;
    }
    a.relay(&b, "r", "alice", "bob", "fresh");
    until("fresh", || !b.relayed_texts().is_empty()).await;
    assert_eq!(b.relayed_texts().len(), 1);
    assert!(b.relayed_texts()[0].contains("fresh"));
}

/// Redis frozen longer than a node ttl, so every deadline in it expires, but shorter than
/// the ping timeout, so no node notices: only the stall guard stops the reaper.
async fn stall_without_degrading(stall_threshold: Duration) -> Vec<(NodeId, MembershipCause)> {
    let redis = Redis::start();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let mut c = config(&redis, name);
        c.ping_timeout = Duration::from_secs(4);
        c.command_timeout = Duration::from_secs(4);
        c.stall_threshold = stall_threshold;
        nodes.push(Node::start(c).await);
    }
    nodes[0].joined(1, "r", "alice").await;
    nodes[1].joined(2, "r", "bob").await;
    redis.signal("-STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.signal("-CONT");
    // Several heartbeats and reap passes after the stall.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut downs = Vec::new();
    for node in &nodes {
        assert!(!node.events.lock().iter().any(degraded));
        for (_, cause) in node.memberships() {
            if matches!(cause, MembershipCause::NodeDown(_)) {
                downs.push((node.id.clone(), cause));
            }
        }
    }
    downs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_that_no_node_noticed_reaps_nobody() {
    assert_eq!(
        stall_without_degrading(Duration::from_millis(300)).await,
        []
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_restarted_with_the_same_node_id_drops_the_old_members() {
    let redis = Redis::start();
    let mut ca = config(&redis, "a");
    ca.node_ttl = Duration::from_secs(30);
    let mut cb = config(&redis, "b");
    cb.node_ttl = Duration::from_secs(30);
    let a = Node::start(ca.clone()).await;
    let b = Node::start(cb).await;
    a.joined(1, "r", "alice").await;
    b.joined(2, "r", "bob").await;
    a.link.abort();

    // Long before the old process' ttl runs out.
    let again = Node::start(ca).await;
    let seen = b
        .wait_for("node-down", |e| {
            is_membership(e, |c| *c == MembershipCause::NodeDown(node_id("a")))
        })
        .await;
    assert_eq!(users(&snapshot_of(&seen)), ["bob"]);
    // The new process serves the same user normally.
    let back = again.joined(1, "r", "alice").await;
    assert_eq!(users(&back), ["bob", "alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_without_redis_is_an_error_not_a_hang() {
    let port = free_port();
    let mut c = ClusterConfig::new(format!("redis://127.0.0.1:{port}/"), node_id("a"));
    c.command_timeout = Duration::from_millis(500);
    let sink = Arc::new(|_: NodeEvent| {});
    let local = Arc::new(Vec::new);
    let started = tokio::time::timeout(
        Duration::from_secs(5),
        Cluster::start(c.clone(), sink.clone(), local.clone()),
    )
    .await
    .expect("bounded");
    assert!(matches!(
        started,
        Err(octate_cluster::ClusterError::Redis(_))
    ));
    c.redis_url = "not a url".into();
    let started = Cluster::start(c, sink, local).await;
    assert!(matches!(
        started,
        Err(octate_cluster::ClusterError::InvalidUrl(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_redis_is_down_still_returns() {
    let mut redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    a.joined(1, "r", "alice").await;
    redis.kill();
    a.wait_for("degraded", degraded).await;
    a.leave(1, "r", "alice", LeaveReason::Left);
    tokio::time::timeout(Duration::from_secs(5), a.link.shutdown())
        .await
        .expect("shutdown is bounded");
}

/// The room index as Redis holds it, and as a page of the room list reads it.
async fn indexed_rooms(redis: &Redis, node: &Node) -> (Vec<String>, Vec<String>) {
    let raw = command(
        redis,
        redis::cmd("ZRANGE").arg("oct:roomidx").arg(0).arg(-1),
    )
    .await;
    let raw: Vec<String> = redis::from_redis_value(raw).expect("a list of ids");
    let page = node.link.rooms_page(None, 100).await.expect("a page");
    let listed = page
        .rooms
        .iter()
        .map(|r| r.room_id.as_str().to_owned())
        .collect();
    (raw, listed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_tells_the_holding_node_and_the_room_index_follows_every_close() {
    let redis = Redis::start();
    let a = Node::start(config(&redis, "a")).await;
    let b = Node::start(config(&redis, "b")).await;
    a.joined(1, "r1", "alice").await;
    a.joined(2, "r2", "alice").await;
    b.joined(3, "r3", "bob").await;
    b.joined(4, "r4", "bob").await;
    a.joined(5, "r4", "carol").await;
    a.joined(6, "r5", "dave").await;
    b.joined(7, "r6", "erin").await;
    let all: Vec<String> = ["r1", "r2", "r3", "r4", "r5", "r6"]
        .map(String::from)
        .to_vec();
    assert_eq!(indexed_rooms(&redis, &b).await, (all.clone(), all));
    let page = a
        .link
        .rooms_page(Some(room("r2")), 2)
        .await
        .expect("a page");
    let ids: Vec<&str> = page.rooms.iter().map(|r| r.room_id.as_str()).collect();
    assert_eq!(ids, ["r3", "r4"], "after the cursor, at most the limit");
    assert_eq!(users(&page.rooms[1]), ["bob", "carol"]);

    // A kick from node a of bob, held by node b: b hears it (cause left, kicked), and so
    // does a, whose carol shares the room.
    let from = [a.count(), b.count()];
    let token = a
        .link
        .kick(room("r4"), user("bob"))
        .await
        .expect("bob is in r4");
    assert_eq!(token.token_id, None, "no ticket, no token in the store");
    for (node, from) in [&a, &b].into_iter().zip(from) {
        let seen = node
            .wait_for_after(from, "kicked", |e| {
                is_membership(e, |c| {
                    *c == MembershipCause::Left(user("bob"), LeaveReason::Kicked)
                })
            })
            .await;
        assert_eq!(users(&snapshot_of(&seen)), ["carol"]);
    }
    assert_eq!(
        a.link.kick(room("r4"), user("bob")).await,
        Err(octate_transport::LinkError::Refused(
            CoreError::PeerNotFound
        ))
    );
    assert_eq!(
        a.link.kick(room("nope"), user("bob")).await,
        Err(octate_transport::LinkError::Refused(
            CoreError::RoomNotFound
        ))
    );
    // The last member kicked: its node still hears it (a snapshot without members), and
    // the room is gone.
    let from = b.count();
    a.link
        .kick(room("r3"), user("bob"))
        .await
        .expect("bob is in r3");
    let seen = b
        .wait_for_after(from, "kicked from r3", |e| {
            is_membership(e, |c| {
                *c == MembershipCause::Left(user("bob"), LeaveReason::Kicked)
            })
        })
        .await;
    assert!(snapshot_of(&seen).members.is_empty());

    // Closed by the last leave, by `close_room`, by the reaper of a crashed node (r4,
    // r5).
    a.leave(1, "r1", "alice", LeaveReason::Left);
    assert_eq!(
        a.link
            .close_room(room("r2"), RoomCloseReason::Deleted)
            .await,
        Ok(true)
    );
    a.link.abort();
    let left: Vec<String> = vec!["r6".to_owned()];
    // The index itself follows (no page is read meanwhile: a page drops stale entries).
    let deadline = Instant::now() + WAIT;
    loop {
        let raw = command(
            &redis,
            redis::cmd("ZRANGE").arg("oct:roomidx").arg(0).arg(-1),
        )
        .await;
        let raw: Vec<String> = redis::from_redis_value(raw).expect("a list of ids");
        if raw == left {
            break;
        }
        assert!(Instant::now() < deadline, "index {raw:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(indexed_rooms(&redis, &b).await, (left.clone(), left));
}
