//! Several clustered cores driven through a pure model of the shared store.
//!
//! `FakeStore` does what the Redis scripts of `octate-cluster` do (commit joins and
//! leaves, elect one host per room, bump a room's version, publish whole-room snapshots
//! to the other nodes), and `FakeCluster` carries its answers and publications to the
//! cores in simulated time. Each node has two queues, as a real node has two Redis
//! connections: script replies and its inbox. Each is FIFO, but the scheduler picks
//! freely between them and between nodes, and may lose or repeat an inbox message
//! (a lost membership message is noticed by the receiver's sequence check and repaired
//! by a resync, as the cluster crate does).
//!
//! After every step each replica is checked; once everything is delivered, every node
//! must agree with the store, and every client's own view (its `auth-ok` list, then
//! every `peer-joined`, `peer-left` and `host-changed` it received) must equal the
//! room's committed membership and host.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use octate_core::{
    ClusterCommand, ClusterEvent, ClusterMember, ConnId, Core, CoreConfig, CoreError, Identity,
    JoinKind, MembershipCause, NodeId, Output, RoomSnapshot,
};
use octate_protocol::{ClientMessage, RoomCloseReason, RoomId, ServerMessage, UserId};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

fn rid(s: &str) -> RoomId {
    RoomId::new(s).expect("room id")
}

fn uid(s: &str) -> UserId {
    UserId::new(s).expect("user id")
}

/// One room as the store holds it.
#[derive(Clone, Debug)]
struct StoreRoom {
    ver: u64,
    created_by: UserId,
    created_at: u64,
    host: Option<UserId>,
    members: Vec<ClusterMember>,
}

/// The shared store: what the join/leave scripts compute.
#[derive(Default)]
struct FakeStore {
    rooms: BTreeMap<RoomId, StoreRoom>,
    max_peers: usize,
    /// Versions grow across a room's incarnations (the scripts take them from the clock).
    clock: u64,
}

impl FakeStore {
    fn snapshot(&self, room_id: &RoomId) -> Option<RoomSnapshot> {
        let r = self.rooms.get(room_id)?;
        Some(RoomSnapshot {
            room_id: room_id.clone(),
            ver: r.ver,
            room_name: room_id.to_string(),
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            file_id: None,
            host_id: r.host.clone(),
            members: r.members.clone(),
        })
    }

    fn nodes_of(&self, room_id: &RoomId) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .rooms
            .get(room_id)
            .map(|r| r.members.iter().map(|m| m.node.clone()).collect())
            .unwrap_or_default();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// The join script: returns the result and the nodes to tell. Like the leave
    /// script, it tells every node of the room, the caller and a replaced session's
    /// node included, so a node also hears of its own changes in the store's order.
    fn join(
        &mut self,
        room_id: &RoomId,
        member: ClusterMember,
        kind: &JoinKind,
    ) -> Result<(RoomSnapshot, MembershipCause, Vec<NodeId>), CoreError> {
        let exists = self.rooms.contains_key(room_id);
        if exists && matches!(kind, JoinKind::Create { .. }) {
            return Err(CoreError::RoomExists);
        }
        let mut tell = self.nodes_of(room_id);
        let room = self
            .rooms
            .entry(room_id.clone())
            .or_insert_with(|| StoreRoom {
                ver: 0,
                created_by: member.user_id.clone(),
                created_at: member.joined_at,
                host: None,
                members: Vec::new(),
            });
        let old = room
            .members
            .iter()
            .position(|m| m.user_id == member.user_id);
        let count = room.members.len() - usize::from(old.is_some());
        if count >= self.max_peers {
            return Err(CoreError::RoomFull);
        }
        let cause = match old {
            Some(i) => {
                let gone = room.members.remove(i);
                tell.push(gone.node);
                MembershipCause::Replaced(member.user_id.clone())
            }
            None => MembershipCause::Joined(member.user_id.clone()),
        };
        room.members.push(member.clone());
        room.members
            .sort_by(|a, b| (a.joined_at, &a.user_id).cmp(&(b.joined_at, &b.user_id)));
        if room
            .host
            .as_ref()
            .is_none_or(|h| !room.members.iter().any(|m| &m.user_id == h))
        {
            room.host = room.members.first().map(|m| m.user_id.clone());
        }
        self.clock += 1;
        room.ver = self.clock;
        tell.sort();
        tell.dedup();
        let snapshot = self.snapshot(room_id).expect("just written");
        Ok((snapshot, cause, tell))
    }

    /// The close script: deletes the room; returns the close's version and the nodes to tell.
    fn close(&mut self, room_id: &RoomId) -> Option<(u64, Vec<NodeId>)> {
        let tell = self.nodes_of(room_id);
        self.rooms.remove(room_id)?;
        self.clock += 1;
        Some((self.clock, tell))
    }

    /// The leave script: a no-op unless the session still owns the user.
    fn leave(
        &mut self,
        room_id: &RoomId,
        user: &UserId,
        node: &NodeId,
        conn: ConnId,
    ) -> Option<(RoomSnapshot, Vec<NodeId>)> {
        let room = self.rooms.get_mut(room_id)?;
        let i = room
            .members
            .iter()
            .position(|m| &m.user_id == user && &m.node == node && m.conn == conn)?;
        room.members.remove(i);
        if room.host.as_ref() == Some(user) {
            room.host = room.members.first().map(|m| m.user_id.clone());
        }
        self.clock += 1;
        room.ver = self.clock;
        let snapshot = self.snapshot(room_id).expect("room exists");
        let mut tell = self.nodes_of(room_id);
        tell.push(node.clone());
        tell.sort();
        tell.dedup();
        if snapshot.members.is_empty() {
            self.rooms.remove(room_id);
        }
        Some((snapshot, tell))
    }
}

/// What one client has been told about its room.
#[derive(Debug, Default, Clone)]
struct ClientView {
    room: Option<RoomId>,
    /// `room-joined` answers to a `join-room` while already in the room.
    room_joined: usize,
    peers: Vec<UserId>,
    host: Option<UserId>,
    closed: bool,
}

impl ClientView {
    fn apply(&mut self, msg: &ServerMessage) {
        match msg {
            ServerMessage::RoomJoined { room, .. } if self.room.as_ref() == Some(&room.room_id) => {
                self.room_joined += 1;
                self.peers = room.peers.iter().map(|p| p.user_id.clone()).collect();
                self.host = Some(room.host_id.clone());
            }
            ServerMessage::AuthOk { room, .. } | ServerMessage::RoomJoined { room, .. } => {
                assert!(self.room.is_none(), "joined twice: {msg:?}");
                self.room = Some(room.room_id.clone());
                self.peers = room.peers.iter().map(|p| p.user_id.clone()).collect();
                self.host = Some(room.host_id.clone());
            }
            ServerMessage::PeerJoined { peer, .. } => {
                assert!(self.room.is_some(), "peer-joined before auth-ok");
                assert!(
                    !self.peers.contains(&peer.user_id),
                    "peer-joined for {} who is already listed",
                    peer.user_id
                );
                self.peers.push(peer.user_id.clone());
            }
            ServerMessage::PeerLeft { peer, .. } => {
                assert!(self.room.is_some(), "peer-left before auth-ok");
                let before = self.peers.len();
                self.peers.retain(|p| *p != peer.user_id);
                assert_eq!(
                    before,
                    self.peers.len() + 1,
                    "peer-left for an unknown peer"
                );
            }
            ServerMessage::HostChanged { host_id, .. } => self.host = Some(host_id.clone()),
            ServerMessage::RoomClosed { .. } => self.closed = true,
            _ => {}
        }
    }
}

/// A message on its way to a node.
#[derive(Clone, Debug)]
struct Delivery(ClusterEvent);

struct Node {
    id: NodeId,
    core: Core,
    replies: VecDeque<Delivery>,
    inbox: VecDeque<Delivery>,
}

struct FakeCluster {
    nodes: Vec<Node>,
    store: FakeStore,
    now: u64,
    /// Every connection ever opened: (node index, conn) → user, room.
    conns: HashMap<(usize, ConnId), (UserId, RoomId)>,
    views: HashMap<(usize, ConnId), ClientView>,
    next_conn: u64,
    /// Relayed signals received per (node, conn): (from, seq).
    received: HashMap<(usize, ConnId), Vec<(UserId, u64)>>,
}

impl FakeCluster {
    fn new(n: usize, max_peers: usize) -> Self {
        let config = CoreConfig {
            max_peers_per_room: max_peers,
            ..CoreConfig::default()
        };
        let nodes = (0..n)
            .map(|i| {
                let id = NodeId::new(&format!("n{i}")).expect("node id");
                Node {
                    core: Core::clustered(config.clone(), T0, id.clone()),
                    id,
                    replies: VecDeque::new(),
                    inbox: VecDeque::new(),
                }
            })
            .collect();
        Self {
            nodes,
            store: FakeStore {
                max_peers,
                ..FakeStore::default()
            },
            now: T0,
            conns: HashMap::new(),
            views: HashMap::new(),
            next_conn: 1,
            received: HashMap::new(),
        }
    }

    /// Puts an event in a node's inbox, as a PUBLISH to its channel would.
    fn publish(&mut self, node: &NodeId, event: ClusterEvent) {
        let i = self.node_index(node);
        self.nodes[i].inbox.push_back(Delivery(event));
    }

    fn node_index(&self, id: &NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| &n.id == id)
            .expect("known node")
    }

    fn connect(&mut self, node: usize, user: &str, room: &str) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.now += 1;
        let identity = Identity {
            user_id: uid(user),
            room_id: rid(room),
        };
        self.conns.insert((node, conn), (uid(user), rid(room)));
        self.views.insert((node, conn), ClientView::default());
        self.nodes[node]
            .core
            .handle_authenticated(self.now, conn, identity, None);
        self.pump(node);
        conn
    }

    fn send(&mut self, node: usize, conn: ConnId, json: &str) {
        self.now += 1;
        let msg = ClientMessage::decode(json.as_bytes(), 64 * 1024).expect("valid message");
        self.nodes[node].core.handle_message(self.now, conn, msg);
        self.pump(node);
    }

    /// Deletes a room over HTTP (any node): every node with members is told.
    fn delete_room(&mut self, room: &str) {
        let room_id = rid(room);
        if let Some((ver, tell)) = self.store.close(&room_id) {
            for node in tell {
                self.publish(
                    &node,
                    ClusterEvent::RoomClosed {
                        room_id: room_id.clone(),
                        reason: RoomCloseReason::Deleted,
                        ver,
                    },
                );
            }
        }
    }

    fn disconnect(&mut self, node: usize, conn: ConnId) {
        self.now += 1;
        if let Some(view) = self.views.get_mut(&(node, conn)) {
            view.closed = true;
        }
        self.nodes[node].core.handle_disconnect(self.now, conn);
        self.pump(node);
    }

    fn signal(&mut self, node: usize, conn: ConnId, target: &str, seq: u64) {
        self.now += 1;
        let json = format!(
            r#"{{"type":"ice-candidate","data":{{"peer":"{target}","candidate":{{"seq":{seq}}}}}}}"#
        );
        let msg = ClientMessage::decode(json.as_bytes(), 64 * 1024).expect("valid signal");
        self.nodes[node].core.handle_message(self.now, conn, msg);
        self.pump(node);
    }

    /// Carries out every output of a node's core.
    fn pump(&mut self, node: usize) {
        while let Some(out) = self.nodes[node].core.poll_output() {
            match out {
                Output::Send { to, msg } => self.tell(node, &[to], &msg),
                Output::Broadcast { to, msg } => self.tell(node, &to, &msg),
                Output::Forward { to, text } => {
                    let msg: serde_json::Value =
                        serde_json::from_str(&text).expect("forwarded text is JSON");
                    for conn in to {
                        self.record_signal(node, conn, &msg);
                    }
                }
                Output::Close { conn, .. } => {
                    if let Some(view) = self.views.get_mut(&(node, conn)) {
                        view.closed = true;
                    }
                }
                Output::Heartbeat { .. } | Output::RoomRemoved { .. } | Output::Resumed { .. } => {}
                Output::Cluster(cmd) => self.command(node, cmd),
            }
        }
    }

    fn tell(&mut self, node: usize, to: &[ConnId], msg: &ServerMessage) {
        for conn in to {
            let view = self
                .views
                .get_mut(&(node, *conn))
                .unwrap_or_else(|| panic!("message for unknown conn {conn}"));
            assert!(!view.closed, "message for closed conn {conn}: {msg:?}");
            view.apply(msg);
            if let ServerMessage::Signal { .. } = msg {
                let value: serde_json::Value =
                    serde_json::from_slice(&msg.encode()).expect("signal encodes");
                self.record_signal(node, *conn, &value);
            }
        }
    }

    fn record_signal(&mut self, node: usize, conn: ConnId, msg: &serde_json::Value) {
        let from = msg["userId"].as_str().expect("stamped sender");
        let seq = msg["data"]["candidate"]["seq"].as_u64().expect("seq");
        self.received
            .entry((node, conn))
            .or_default()
            .push((uid(from), seq));
    }

    fn command(&mut self, node: usize, cmd: ClusterCommand) {
        if std::env::var_os("OCT_TRACE").is_some() {
            eprintln!("n{node} asks: {cmd:?}");
        }
        let this = self.nodes[node].id.clone();
        match cmd {
            ClusterCommand::Join {
                conn,
                room_id,
                user_id,
                user_name,
                kind,
                joined_at,
                session_id,
            } => {
                let member = ClusterMember {
                    user_id,
                    user_name,
                    node: this,
                    conn,
                    joined_at,
                    session: session_id,
                    suspended: false,
                };
                match self.store.join(&room_id, member, &kind) {
                    Ok((snapshot, cause, tell)) => {
                        for other in tell {
                            self.publish(
                                &other,
                                ClusterEvent::Membership {
                                    snapshot: snapshot.clone(),
                                    cause: cause.clone(),
                                },
                            );
                        }
                        self.nodes[node]
                            .replies
                            .push_back(Delivery(ClusterEvent::JoinCommitted { conn, snapshot }));
                    }
                    Err(error) => self.nodes[node]
                        .replies
                        .push_back(Delivery(ClusterEvent::JoinRejected { conn, error })),
                }
            }
            ClusterCommand::Leave {
                conn,
                room_id,
                user_id,
                reason,
            } => {
                if let Some((snapshot, tell)) = self.store.leave(&room_id, &user_id, &this, conn) {
                    for other in tell {
                        self.publish(
                            &other,
                            ClusterEvent::Membership {
                                snapshot: snapshot.clone(),
                                cause: MembershipCause::Left(user_id.clone(), reason),
                            },
                        );
                    }
                }
            }
            ClusterCommand::Relay {
                node: to_node,
                room_id,
                to,
                from,
                msg,
            } => {
                let text: Arc<str> = String::from_utf8(msg.encode()).expect("utf-8").into();
                self.publish(
                    &to_node,
                    ClusterEvent::Relay {
                        room_id,
                        from,
                        from_node: this.clone(),
                        to,
                        text,
                    },
                );
            }
            ClusterCommand::Publish {
                nodes,
                room_id,
                from,
                text,
            } => {
                for node in nodes {
                    self.publish(
                        &node,
                        ClusterEvent::Publish {
                            room_id: room_id.clone(),
                            from: from.clone(),
                            from_node: this.clone(),
                            text: text.clone(),
                        },
                    );
                }
            }
            ClusterCommand::Broadcast {
                nodes,
                room_id,
                from,
                msg,
            } => {
                let text: Arc<str> = String::from_utf8(msg.encode()).expect("utf-8").into();
                for node in nodes {
                    self.publish(
                        &node,
                        ClusterEvent::Relay {
                            room_id: room_id.clone(),
                            from: from.clone(),
                            from_node: this.clone(),
                            to: None,
                            text: text.clone(),
                        },
                    );
                }
            }
            ClusterCommand::CloseRoom { .. } => {}
            // The modelled cores have no resume issuer: resume is off.
            ClusterCommand::Ticket { .. }
            | ClusterCommand::Suspend { .. }
            | ClusterCommand::Resume { .. } => panic!("resume is off in this model: {cmd:?}"),
        }
    }

    /// Delivers one queued message; `lose` drops an inbox membership message and
    /// schedules the resync that the receiver's sequence check would trigger.
    fn deliver(&mut self, pick: usize, lose: bool, repeat: bool) -> bool {
        let candidates: Vec<(usize, bool)> = (0..self.nodes.len())
            .flat_map(|i| [(i, true), (i, false)])
            .filter(|(i, replies)| {
                let n = &self.nodes[*i];
                if *replies {
                    !n.replies.is_empty()
                } else {
                    !n.inbox.is_empty()
                }
            })
            .collect();
        if candidates.is_empty() {
            return false;
        }
        let (i, replies) = candidates[pick % candidates.len()];
        let node = &mut self.nodes[i];
        let Delivery(event) = if replies {
            node.replies.pop_front()
        } else {
            node.inbox.pop_front()
        }
        .expect("non-empty");
        let event = match event {
            ClusterEvent::Membership { snapshot, .. } if lose && !replies => {
                // Lost: the gap is noticed and the room is read again.
                let current = self.store.snapshot(&snapshot.room_id).unwrap_or_else(|| {
                    // A room that is gone reads as empty, as new as the store's clock.
                    RoomSnapshot {
                        ver: self.store.clock,
                        members: Vec::new(),
                        host_id: None,
                        ..snapshot
                    }
                });
                ClusterEvent::Membership {
                    snapshot: current,
                    cause: MembershipCause::Resync,
                }
            }
            other => other,
        };
        if repeat && !replies && matches!(event, ClusterEvent::Membership { .. }) {
            node.inbox.push_front(Delivery(event.clone()));
        }
        self.now += 1;
        if std::env::var_os("OCT_TRACE").is_some() {
            eprintln!("deliver to n{i}: {event:?}");
        }
        node.core.handle_cluster(self.now, event);
        self.pump(i);
        true
    }

    /// Delivers the next message of one node's inbox (`replies` false) or replies.
    fn deliver_from(&mut self, node: usize, replies: bool) -> bool {
        let n = &mut self.nodes[node];
        let Some(Delivery(event)) = (if replies {
            n.replies.pop_front()
        } else {
            n.inbox.pop_front()
        }) else {
            return false;
        };
        self.now += 1;
        n.core.handle_cluster(self.now, event);
        self.pump(node);
        true
    }

    fn settle(&mut self) {
        let mut guard = 0;
        while self.deliver(0, false, false) {
            guard += 1;
            assert!(guard < 100_000, "deliveries never end");
        }
    }

    /// Checks every replica on its own: one host, no member twice, local members joined.
    fn check_replicas(&self) {
        for node in &self.nodes {
            for (room_id, members) in node.core.local_members().into_iter().fold(
                BTreeMap::<RoomId, Vec<ClusterMember>>::new(),
                |mut acc, (r, m)| {
                    acc.entry(r).or_default().push(m);
                    acc
                },
            ) {
                let meta = node.core.room(&room_id).expect("a room with local members");
                let hosts = meta.peers.iter().filter(|p| p.is_host).count();
                assert!(hosts <= 1, "{room_id} on {} has {hosts} hosts", node.id);
                let mut ids: Vec<_> = meta.peers.iter().map(|p| p.user_id.clone()).collect();
                ids.sort();
                ids.dedup();
                assert_eq!(ids.len(), meta.peers.len(), "a member listed twice");
                assert!(!members.is_empty());
            }
        }
    }

    /// Once all is delivered: nodes agree with the store, clients with their rooms.
    fn check_converged(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            for (room_id, member) in node.core.local_members() {
                let room = self
                    .store
                    .rooms
                    .get(&room_id)
                    .unwrap_or_else(|| panic!("{} holds {room_id} the store lost", node.id));
                assert!(
                    room.members.iter().any(|m| m.user_id == member.user_id
                        && m.node == node.id
                        && m.conn == member.conn),
                    "{} thinks {} is its member of {room_id}",
                    node.id,
                    member.user_id
                );
                let meta = node.core.room(&room_id).expect("replica");
                let mut want: Vec<UserId> =
                    room.members.iter().map(|m| m.user_id.clone()).collect();
                let mut have: Vec<UserId> = meta.peers.iter().map(|p| p.user_id.clone()).collect();
                want.sort();
                have.sort();
                assert_eq!(have, want, "{} replica of {room_id}", node.id);
                assert_eq!(Some(&meta.host_id), room.host.as_ref(), "host of {room_id}");
                let _ = i;
            }
        }
        for ((i, conn), view) in &self.views {
            if view.closed || view.room.is_none() {
                continue;
            }
            let room_id = view.room.as_ref().expect("checked");
            let room = self
                .store
                .rooms
                .get(room_id)
                .expect("an open client's room exists");
            assert!(
                room.members
                    .iter()
                    .any(|m| m.node == self.nodes[*i].id && m.conn == *conn),
                "open conn {conn} on n{i} is not a member of {room_id}"
            );
            let mut want: Vec<UserId> = room.members.iter().map(|m| m.user_id.clone()).collect();
            let mut have = view.peers.clone();
            want.sort();
            have.sort();
            assert_eq!(have, want, "client {conn} on n{i}: its view of {room_id}");
            assert_eq!(
                view.host.as_ref(),
                room.host.as_ref(),
                "client {conn}: host"
            );
        }
    }
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
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize, 0..5u8, 0..2u8).prop_map(|(node, user, room)| Step::Connect { node, user, room }),
        2 => any::<usize>().prop_map(|pick| Step::Disconnect { pick }),
        2 => (any::<usize>(), 0..5u8).prop_map(|(pick, target)| Step::Signal { pick, target }),
        6 => (any::<usize>(), prop::bool::weighted(0.1), prop::bool::weighted(0.1))
            .prop_map(|(pick, lose, repeat)| Step::Deliver { pick, lose, repeat }),
        1 => (0..2u8).prop_map(|room| Step::Delete { room }),
    ]
}

fn run(steps: &[Step]) {
    let mut c = FakeCluster::new(3, 4);
    let mut seq = 0;
    for s in steps {
        match *s {
            Step::Connect { node, user, room } => {
                c.connect(node, &format!("u{user}"), &format!("r{room}"));
            }
            Step::Disconnect { pick } => {
                let mut open: Vec<_> = c
                    .views
                    .iter()
                    .filter(|(_, v)| !v.closed)
                    .map(|(k, _)| *k)
                    .collect();
                open.sort();
                if !open.is_empty() {
                    let (node, conn) = open[pick % open.len()];
                    c.disconnect(node, conn);
                }
            }
            Step::Signal { pick, target } => {
                let mut open: Vec<_> = c
                    .views
                    .iter()
                    .filter(|(_, v)| !v.closed && v.room.is_some())
                    .map(|(k, _)| *k)
                    .collect();
                open.sort();
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
        }
        c.check_replicas();
    }
    c.settle();
    c.check_converged();
    // Signals between one sender and one receiver arrive in order and at most once.
    for got in c.received.values() {
        let mut last: HashMap<&UserId, u64> = HashMap::new();
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
        run(&steps);
    }
}
