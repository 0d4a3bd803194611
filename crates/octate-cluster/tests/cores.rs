//! Two real cores, one per cluster link, over a real Redis: what their peers are told
//! when peers join across nodes, exchange signals, Redis restarts empty, and a node dies.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use octate_cluster::{Cluster, ClusterConfig, NodeEvent};
use octate_core::{ConnId, Core, CoreConfig, Identity, NodeId, Output};
use octate_protocol::{ClientMessage, LeaveReason, RoomId, ServerMessage, UserId};
use octate_test::redis::Redis;
use octate_transport::ClusterLink;
use parking_lot::Mutex;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A core driven by its cluster link; what it sends its connections is recorded.
struct CoreNode {
    core: Arc<Mutex<Core>>,
    link: Arc<OnceLock<Cluster>>,
    sent: Arc<Mutex<Vec<(ConnId, String)>>>,
}

/// Carries out the core's outputs: cluster commands go to the link, the rest is recorded.
fn pump(core: &mut Core, link: &OnceLock<Cluster>, sent: &Mutex<Vec<(ConnId, String)>>) {
    while let Some(out) = core.poll_output() {
        let mut sent = sent.lock();
        match out {
            Output::Cluster(command) => {
                if let Some(link) = link.get() {
                    link.submit(command);
                }
            }
            Output::Send { to, msg } => sent.push((to, text(&msg))),
            Output::Broadcast { to, msg } => {
                let t = text(&msg);
                sent.extend(to.into_iter().map(|c| (c, t.clone())));
            }
            Output::Forward { to, text } => {
                sent.extend(to.into_iter().map(|c| (c, text.to_string())));
            }
            Output::Close { conn, code } => sent.push((conn, format!("close {code:?}"))),
            _ => {}
        }
    }
}

fn text(msg: &ServerMessage) -> String {
    String::from_utf8(msg.encode()).expect("utf-8")
}

impl CoreNode {
    async fn start(redis: &Redis, name: &str) -> Self {
        let node = NodeId::new(name).expect("node id");
        let core = Arc::new(Mutex::new(Core::clustered(
            CoreConfig::default(),
            now(),
            node.clone(),
        )));
        let link: Arc<OnceLock<Cluster>> = Arc::default();
        let sent: Arc<Mutex<Vec<(ConnId, String)>>> = Arc::default();
        let (c, l, s) = (core.clone(), link.clone(), sent.clone());
        let sink = Arc::new(move |event: NodeEvent| {
            if let NodeEvent::Core(event) = event {
                let mut core = c.lock();
                core.handle_cluster(now(), event);
                pump(&mut core, &l, &s);
            }
        });
        let c = core.clone();
        let local = Arc::new(move || c.lock().local_members());
        let mut config =
            ClusterConfig::new(redis.url(), node).with_limits_of(&CoreConfig::default());
        config.heartbeat_interval = Duration::from_millis(100);
        config.node_ttl = Duration::from_millis(500);
        config.reap_interval = Duration::from_millis(100);
        config.ping_interval = Duration::from_millis(100);
        config.ping_timeout = Duration::from_millis(400);
        config.command_timeout = Duration::from_millis(500);
        config.stall_threshold = Duration::from_millis(300);
        config.reconnect_min = Duration::from_millis(50);
        config.reconnect_max = Duration::from_millis(300);
        let cluster = Cluster::start(config, sink, local).await.expect("start");
        let _ = link.set(cluster);
        Self { core, link, sent }
    }

    fn link(&self) -> &Cluster {
        self.link.get().expect("started")
    }

    fn drive(&self, f: impl FnOnce(&mut Core)) {
        let mut core = self.core.lock();
        f(&mut core);
        pump(&mut core, &self.link, &self.sent);
    }

    fn connect(&self, conn: u64, user: &str, room: &str) {
        let identity = Identity {
            user_id: UserId::new(user).expect("user"),
            room_id: RoomId::new(room).expect("room"),
        };
        self.drive(|core| core.handle_authenticated(now(), ConnId(conn), identity, None));
    }

    fn send(&self, conn: u64, json: &str) {
        let msg = ClientMessage::decode_str(json, 65_536).expect("valid message");
        self.drive(|core| core.handle_message(now(), ConnId(conn), msg));
    }

    fn texts(&self, conn: u64) -> Vec<String> {
        self.sent
            .lock()
            .iter()
            .filter(|(c, _)| *c == ConnId(conn))
            .map(|(_, t)| t.clone())
            .collect()
    }

    async fn wait_text(&self, conn: u64, what: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(t) = self.texts(conn).into_iter().find(|t| t.contains(needle)) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: nothing with {needle:?} for c{conn}; got {:#?}",
                self.texts(conn)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_two_cores_see_each_other_signal_and_survive_a_redis_restart() {
    let mut redis = Redis::start();
    let a = CoreNode::start(&redis, "a").await;
    let b = CoreNode::start(&redis, "b").await;

    a.connect(1, "alice", "room1");
    a.wait_text(1, "alice's auth-ok", "auth-ok").await;
    b.connect(2, "bob", "room1");
    let ok = b.wait_text(2, "bob's auth-ok", "auth-ok").await;
    assert!(ok.contains("\"alice\"") && ok.contains("\"bob\""), "{ok}");
    a.wait_text(1, "bob joined", "peer-joined").await;

    // A signal from alice on a reaches bob on b, byte for byte.
    a.send(
        1,
        r#"{"type":"sdp-offer","data":{"peer":"bob","offer":{"type":"offer","sdp":"v=0"}}}"#,
    );
    let offer = b.wait_text(2, "the offer", "sdp-offer").await;
    assert!(offer.contains(r#""sdp":"v=0""#), "{offer}");

    // Redis restarts empty: nobody is told anyone left.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.link().stats().degraded || b.link().stats().degraded {
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (node, conn) in [(&a, 1), (&b, 2)] {
        let texts = node.texts(conn);
        assert!(
            !texts
                .iter()
                .any(|t| t.contains("peer-left") || t.starts_with("close")),
            "c{conn}: {texts:#?}"
        );
    }
    let room = a
        .link()
        .room(RoomId::new("room1").expect("room"))
        .await
        .expect("read")
        .expect("room");
    assert_eq!(room.members.len(), 2);

    // Signals flow again, the other way.
    b.send(
        2,
        r#"{"type":"sdp-answer","data":{"peer":"alice","answer":{"type":"answer","sdp":"v=1"}}}"#,
    );
    a.wait_text(1, "the answer", "sdp-answer").await;

    // b dies: alice is told bob left because his node went down.
    b.link().abort();
    let left = a.wait_text(1, "bob left", "peer-left").await;
    let reason = serde_json::to_string(&LeaveReason::NodeDown).expect("json");
    assert!(left.contains(&reason), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_replaced_on_its_own_node_is_closed_as_replaced() {
    let redis = Redis::start();
    let a = CoreNode::start(&redis, "a").await;
    let b = CoreNode::start(&redis, "b").await;
    a.connect(1, "alice", "room1");
    a.wait_text(1, "alice's auth-ok", "auth-ok").await;
    b.connect(2, "bob", "room1");
    b.wait_text(2, "bob's auth-ok", "auth-ok").await;

    // alice again, on the same node: the old connection must not be told to retry
    // (it would reconnect and replace the new one in turn).
    a.connect(3, "alice", "room1");
    a.wait_text(3, "the new auth-ok", "auth-ok").await;
    let closed = a.wait_text(1, "old session closed", "close").await;
    assert_eq!(closed, "close Replaced");
    // On another node, the same: b's bob reconnecting through a replaces b's session.
    a.connect(4, "bob", "room1");
    a.wait_text(4, "bob's new auth-ok", "auth-ok").await;
    assert_eq!(
        b.wait_text(2, "bob's old session", "close").await,
        "close Replaced"
    );
}
