//! `FakeCluster`: clustered cores, their queues (script replies, inbox, commands not
//! run yet), their clients' views, and the checks of both against the store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use octate_core::{
    ClusterCommand, ClusterEvent, ClusterMember, ConnId, Core, CoreConfig, CoreError, Identity,
    LocalMember, MembershipCause, NodeId, Output, RoomSnapshot, TokenRef,
};
use octate_protocol::{
    ClientMessage, CloseCode, ErrorCode, LeaveReason, RawJson, ResumeTicket, RoomCloseReason,
    RoomId, ServerMessage, UserId,
};

use super::store::{CountingIssuer, End, FakeStore, Publication};
use super::{GRACE_MS, T0, rid, uid};

/// A `peer-joined` or `peer-left` one client was shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerEvent {
    /// The membership it is about: user and joined at.
    pub(crate) user: UserId,
    pub(crate) joined_at: u64,
    /// `None` for `peer-joined`.
    pub(crate) left: Option<LeaveReason>,
}

/// What one client has been told about its room.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClientView {
    pub(crate) room: Option<RoomId>,
    /// `room-joined` answers to a `join-room` while already in the room.
    pub(crate) room_joined: usize,
    pub(crate) peers: Vec<UserId>,
    pub(crate) host: Option<UserId>,
    pub(crate) closed: bool,
    /// The close code the server sent, if it closed the connection.
    pub(crate) close_code: Option<CloseCode>,
    /// The client saw its connection drop (the server was not told a close frame).
    pub(crate) lost: bool,
    /// Every ticket the client was handed (carried over from the connection it resumed
    /// from), newest last.
    pub(crate) tickets: Vec<ResumeTicket>,
    /// A later connection resumed (or tried to resume) from this one's tickets.
    pub(crate) moved_on: bool,
    /// The answer was `resumed`.
    pub(crate) resumed: bool,
    /// The answer was `error` `resume-failed`.
    pub(crate) resume_failed: bool,
    /// The peers listed by `auth-ok` or `resumed`: (user, joined at).
    pub(crate) first_listed: Vec<(UserId, u64)>,
    /// Every `peer-joined` and `peer-left`, in order.
    pub(crate) events: Vec<PeerEvent>,
    /// The answer was `error` `kicked`.
    pub(crate) kicked: bool,
    /// The `data` of every `server-message`, as JSON text, in order.
    pub(crate) server_messages: Vec<String>,
}

impl ClientView {
    pub(crate) fn apply(&mut self, msg: &ServerMessage) {
        match msg {
            ServerMessage::RoomJoined { room, resume, .. }
                if self.room.as_ref() == Some(&room.room_id) =>
            {
                self.room_joined += 1;
                self.peers = room.peers.iter().map(|p| p.user_id.clone()).collect();
                self.host = Some(room.host_id.clone());
                self.tickets.extend(resume.clone());
            }
            ServerMessage::AuthOk { room, resume, .. }
            | ServerMessage::RoomJoined { room, resume, .. }
            | ServerMessage::Resumed { room, resume, .. } => {
                assert!(self.room.is_none(), "joined twice: {msg:?}");
                self.room = Some(room.room_id.clone());
                self.peers = room.peers.iter().map(|p| p.user_id.clone()).collect();
                self.first_listed = room
                    .peers
                    .iter()
                    .map(|p| (p.user_id.clone(), p.connected_at))
                    .collect();
                self.host = Some(room.host_id.clone());
                self.tickets.extend(resume.clone());
                if matches!(msg, ServerMessage::Resumed { .. }) {
                    assert!(resume.is_some(), "resumed hands a new ticket");
                    self.resumed = true;
                }
            }
            ServerMessage::PeerJoined { peer, .. } => {
                assert!(self.room.is_some(), "peer-joined before auth-ok");
                assert!(
                    !self.peers.contains(&peer.user_id),
                    "peer-joined for {} who is already listed",
                    peer.user_id
                );
                self.peers.push(peer.user_id.clone());
                self.events.push(PeerEvent {
                    user: peer.user_id.clone(),
                    joined_at: peer.connected_at,
                    left: None,
                });
            }
            ServerMessage::PeerLeft { peer, reason, .. } => {
                assert!(self.room.is_some(), "peer-left before auth-ok");
                let before = self.peers.len();
                self.peers.retain(|p| *p != peer.user_id);
                assert_eq!(
                    before,
                    self.peers.len() + 1,
                    "peer-left for an unknown peer"
                );
                self.events.push(PeerEvent {
                    user: peer.user_id.clone(),
                    joined_at: peer.connected_at,
                    left: Some(*reason),
                });
            }
            ServerMessage::HostChanged { host_id, .. } => self.host = Some(host_id.clone()),
            ServerMessage::RoomClosed { .. } => self.closed = true,
            ServerMessage::Error {
                code: ErrorCode::ResumeFailed,
                ..
            } => self.resume_failed = true,
            ServerMessage::Error {
                code: ErrorCode::Kicked,
                ..
            } => self.kicked = true,
            ServerMessage::ServerMessage { data, .. } => {
                self.server_messages.push(data.get().to_owned());
            }
            _ => {}
        }
    }

    /// The events this client was shown about one membership.
    pub(crate) fn about(&self, user: &UserId, joined_at: u64) -> Vec<&PeerEvent> {
        self.events
            .iter()
            .filter(|e| &e.user == user && e.joined_at == joined_at)
            .collect()
    }
}

/// A message on its way to a node.
#[derive(Clone, Debug)]
pub(crate) struct Delivery(pub(crate) ClusterEvent);

/// One of a node's queues.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Queue {
    /// Script replies to it.
    Replies,
    /// Publications to it.
    Inbox,
    /// Its commands, not run yet.
    Outgoing,
}

pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) core: Core,
    pub(crate) replies: VecDeque<Delivery>,
    pub(crate) inbox: VecDeque<Delivery>,
    /// The process died: it hears nothing more and is reaped.
    pub(crate) dead: bool,
    /// The reaper took its members.
    pub(crate) reaped: bool,
    /// It may have missed why someone left: an inbox message to it was lost (a resync
    /// told it the room as it is, not why), or an answer overtook an older snapshot.
    pub(crate) lossy: bool,
    /// Commands sent to the store and not run yet (pipelined clusters only).
    pub(crate) outgoing: VecDeque<ClusterCommand>,
}

/// One `resume` asked of the store, and what the store answered.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    pub(crate) node: usize,
    pub(crate) conn: ConnId,
    /// The room and user whose session the store moved to this connection, if it did.
    pub(crate) accepted: Option<(RoomId, UserId)>,
}

pub(crate) struct FakeCluster {
    pub(crate) nodes: Vec<Node>,
    pub(crate) store: FakeStore,
    pub(crate) now: u64,
    /// Every connection ever opened: (node index, conn) → user, room.
    pub(crate) conns: HashMap<(usize, ConnId), (UserId, RoomId)>,
    pub(crate) views: HashMap<(usize, ConnId), ClientView>,
    pub(crate) next_conn: u64,
    /// Relayed signals received per (node, conn): (from, seq).
    pub(crate) received: HashMap<(usize, ConnId), Vec<(UserId, u64)>>,
    /// The same, by the connection that sent them (`n<node>c<conn>`): (sender, seq).
    pub(crate) received_via: HashMap<(usize, ConnId), Vec<(String, u64)>>,
    /// Every `resume` the store answered, in order.
    pub(crate) attempts: Vec<Attempt>,
    /// Pairs of connections that resumed at once with one ticket.
    pub(crate) races: Vec<[(usize, ConnId); 2]>,
    /// The store runs a node's commands when the scheduler says (in order per node), not
    /// as soon as the core asks, as a real node's pipelined writer does.
    pub(crate) pipelined: bool,
}

impl FakeCluster {
    pub(crate) fn new(n: usize, max_peers: usize) -> Self {
        let config = CoreConfig {
            max_peers_per_room: max_peers,
            resume_grace: Duration::from_millis(GRACE_MS),
            ..CoreConfig::default()
        };
        let nodes = (0..n)
            .map(|i| {
                let name = format!("n{i}");
                let id = NodeId::new(&name).expect("node id");
                let mut core = Core::clustered(config.clone(), T0, id.clone());
                core.set_resume_issuer(Box::new(CountingIssuer {
                    node: name,
                    next: 0,
                }));
                Node {
                    core,
                    id,
                    replies: VecDeque::new(),
                    inbox: VecDeque::new(),
                    dead: false,
                    reaped: false,
                    lossy: false,
                    outgoing: VecDeque::new(),
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
            received_via: HashMap::new(),
            attempts: Vec::new(),
            races: Vec::new(),
            pipelined: false,
        }
    }

    /// Puts an event in a node's inbox, as a PUBLISH to its channel would (a dead node
    /// has no subscriber: the message is gone).
    pub(crate) fn publish(&mut self, node: &NodeId, event: ClusterEvent) {
        let i = self.node_index(node);
        if !self.nodes[i].dead {
            self.nodes[i].inbox.push_back(Delivery(event));
        }
    }

    pub(crate) fn publish_all(&mut self, publications: Vec<Publication>) {
        for (tell, event) in publications {
            for node in tell {
                self.publish(&node, event.clone());
            }
        }
    }

    pub(crate) fn node_index(&self, id: &NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| &n.id == id)
            .expect("known node")
    }

    pub(crate) fn connect(&mut self, node: usize, user: &str, room: &str) -> ConnId {
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

    pub(crate) fn send(&mut self, node: usize, conn: ConnId, json: &str) {
        self.now += 1;
        let msg = ClientMessage::decode(json.as_bytes(), 64 * 1024).expect("valid message");
        self.nodes[node].core.handle_message(self.now, conn, msg);
        self.pump(node);
    }

    /// Deletes a room over HTTP (any node): every node with members is told.
    pub(crate) fn delete_room(&mut self, room: &str) {
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

    /// Kicks a user over HTTP (the server API, any node): the kick script runs at once.
    pub(crate) fn kick(&mut self, room: &str, user: &str) -> Result<TokenRef, CoreError> {
        let (token, publication) = self.store.kick(&rid(room), &uid(user))?;
        self.publish_all(vec![publication]);
        Ok(token)
    }

    /// Sends a server message over HTTP on `node`: the room as the store holds it, then
    /// the core delivers it here and relays it to the other nodes.
    pub(crate) fn server_message(
        &mut self,
        node: usize,
        room: &str,
        to: Option<&str>,
        data: &str,
    ) -> Result<usize, CoreError> {
        let snapshot = self
            .store
            .snapshot(&rid(room))
            .ok_or(CoreError::RoomNotFound)?;
        let data = RawJson::from_string(data.to_owned()).expect("valid JSON");
        let to = to.map(uid);
        let sent = self.nodes[node]
            .core
            .cluster_server_message(&snapshot, to.as_ref(), data);
        self.pump(node);
        sent
    }

    pub(crate) fn disconnect(&mut self, node: usize, conn: ConnId) {
        self.now += 1;
        if let Some(view) = self.views.get_mut(&(node, conn)) {
            view.closed = true;
        }
        self.nodes[node].core.handle_disconnect(self.now, conn);
        self.pump(node);
    }

    /// The connection drops without a close frame: the server suspends its member.
    pub(crate) fn lose(&mut self, node: usize, conn: ConnId) {
        self.now += 1;
        if let Some(view) = self.views.get_mut(&(node, conn)) {
            view.closed = true;
            view.lost = true;
        }
        self.nodes[node].core.handle_connection_lost(self.now, conn);
        self.pump(node);
    }

    /// A new connection on `node` resumes with the ticket `pick` (an index into the
    /// tickets `from` was handed; the newest when out of range). The client gives up
    /// the connection it resumes from, whether or not the server saw it drop.
    pub(crate) fn resume(
        &mut self,
        node: usize,
        from: (usize, ConnId),
        pick: usize,
    ) -> Option<ConnId> {
        let old = self.views.get_mut(&from)?;
        let ticket = old.tickets.get(pick).or(old.tickets.last()).cloned()?;
        old.moved_on = true;
        let tickets = old.tickets.clone();
        let owner = self.conns.get(&from).cloned()?;
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.now += 1;
        self.conns.insert((node, conn), owner);
        self.views.insert(
            (node, conn),
            ClientView {
                tickets,
                ..ClientView::default()
            },
        );
        // The refusal is also told to the client as `resume-failed`, which the views check.
        let _ = self.nodes[node].core.handle_resume(
            self.now,
            conn,
            &ticket.session_id,
            &ticket.resume_token,
        );
        self.pump(node);
        Some(conn)
    }

    /// The node's process dies: its clients see their connections drop, and nobody
    /// hears from it again.
    pub(crate) fn kill(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.dead = true;
        n.replies.clear();
        n.inbox.clear();
        n.outgoing.clear();
        for ((i, _), view) in &mut self.views {
            if *i == node && !view.closed {
                view.closed = true;
                view.lost = true;
            }
        }
    }

    /// Another node's reaper takes the members of every dead node.
    pub(crate) fn reap(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].dead && !self.nodes[i].reaped {
                self.nodes[i].reaped = true;
                let dead = self.nodes[i].id.clone();
                let publications = self.store.reap(self.now, &dead);
                self.publish_all(publications);
            }
        }
    }

    /// The clock jumps by `ms`; then a node's reaper ends the suspensions that are due.
    pub(crate) fn advance(&mut self, ms: u64) {
        self.now += ms;
        let publications = self.store.expire(self.now);
        self.publish_all(publications);
    }

    pub(crate) fn signal(&mut self, node: usize, conn: ConnId, target: &str, seq: u64) {
        self.now += 1;
        let json = format!(
            r#"{{"type":"ice-candidate","data":{{"peer":"{target}","candidate":{{"seq":{seq},"via":"n{node}{conn}"}}}}}}"#
        );
        let msg = ClientMessage::decode(json.as_bytes(), 64 * 1024).expect("valid signal");
        self.nodes[node].core.handle_message(self.now, conn, msg);
        self.pump(node);
    }

    /// Carries out every output of a node's core.
    pub(crate) fn pump(&mut self, node: usize) {
        while let Some(out) = self.nodes[node].core.poll_output() {
            match out {
                Output::Send { to, msg } => self.tell(node, &[to], &msg),
                Output::Broadcast { to, msg } => self.tell(node, &to, &msg),
                Output::Forward { to, text } => {
                    let msg: serde_json::Value =
                        serde_json::from_str(&text).expect("forwarded text is JSON");
                    for conn in to {
                        if msg["type"] == "server-message" {
                            let view = self.views.get_mut(&(node, conn)).expect("known conn");
                            assert!(!view.closed, "server-message for closed conn {conn}");
                            view.server_messages.push(msg["data"].to_string());
                        } else {
                            self.record_signal(node, conn, &msg);
                        }
                    }
                }
                Output::Close { conn, code } => {
                    if let Some(view) = self.views.get_mut(&(node, conn))
                        && !view.lost
                    {
                        assert!(
                            code != CloseCode::Kicked || view.kicked,
                            "n{node}: {conn} closed 4005 without being told kicked"
                        );
                        view.closed = true;
                        view.close_code = Some(code);
                    }
                }
                Output::Heartbeat { .. }
                | Output::RoomRemoved { .. }
                | Output::Resumed { .. }
                | Output::Lifecycle(_) => {}
                Output::Cluster(cmd) if self.pipelined => {
                    self.nodes[node].outgoing.push_back(cmd);
                }
                Output::Cluster(cmd) => self.command(node, cmd),
            }
        }
    }

    pub(crate) fn tell(&mut self, node: usize, to: &[ConnId], msg: &ServerMessage) {
        for conn in to {
            let view = self
                .views
                .get_mut(&(node, *conn))
                .unwrap_or_else(|| panic!("message for unknown conn {conn}"));
            assert!(!view.closed, "message for closed conn {conn}: {msg:?}");
            view.apply(msg);
            let room = view.room.clone();
            if let (ServerMessage::PeerLeft { peer, reason, .. }, Some(room)) = (msg, room) {
                self.check_departure(node, &room, &peer.user_id, peer.connected_at, *reason);
            }
            if let ServerMessage::Signal { .. } = msg {
                let value: serde_json::Value =
                    serde_json::from_slice(&msg.encode()).expect("signal encodes");
                self.record_signal(node, *conn, &value);
            }
        }
    }

    /// A client is told a membership ended: the store ended it. One whose grace ran out
    /// is told `timeout` (unless the node missed the snapshot that said why); one that a
    /// fresh login replaced is told `replaced`, or `disconnected` when its connection
    /// closed here before this node heard of the login.
    pub(crate) fn check_departure(
        &self,
        node: usize,
        room: &RoomId,
        user: &UserId,
        joined_at: u64,
        reason: LeaveReason,
    ) {
        let life = self
            .store
            .lives
            .get(&(room.clone(), user.clone(), joined_at))
            .unwrap_or_else(|| panic!("peer-left for {user} who never joined {room}"));
        let leaving = self.nodes[node].outgoing.iter().any(|cmd| {
            matches!(cmd, ClusterCommand::Leave { room_id, user_id, .. }
                if room_id == room && user_id == user)
        });
        if life.end.is_none() && leaving {
            // This node removed it and told its peers; the store has not run the leave yet.
            return;
        }
        let end = life
            .end
            .unwrap_or_else(|| panic!("peer-left {reason:?} for {user}, still a member: {life:?}"));
        let vague = self.vague(node, room, user, joined_at, reason);
        match end {
            End::Left(LeaveReason::Timeout) => assert!(
                vague || reason == LeaveReason::Timeout,
                "n{node}: {user}'s grace ran out, told {reason:?}"
            ),
            End::Replaced => assert!(
                matches!(reason, LeaveReason::Replaced | LeaveReason::Disconnected),
                "n{node}: {user} logged in afresh, told {reason:?}"
            ),
            _ => {}
        }
    }

    /// Whether `reason` is one a node may tell when it never applied the snapshot that
    /// said why a membership ended (it was lost, or a newer answer overtook it):
    /// `disconnected`, or `replaced` when the user has joined again since (the newer
    /// snapshot shows the same user back with another session).
    pub(crate) fn vague(
        &self,
        node: usize,
        room: &RoomId,
        user: &UserId,
        joined_at: u64,
        reason: LeaveReason,
    ) -> bool {
        if !self.nodes[node].lossy {
            return false;
        }
        match reason {
            LeaveReason::Disconnected => true,
            LeaveReason::Replaced => self
                .store
                .lives
                .range((room.clone(), user.clone(), joined_at + 1)..)
                .next()
                .is_some_and(|((r, u, _), _)| r == room && u == user),
            _ => false,
        }
    }

    pub(crate) fn record_signal(&mut self, node: usize, conn: ConnId, msg: &serde_json::Value) {
        let from = msg["userId"].as_str().expect("stamped sender");
        let seq = msg["data"]["candidate"]["seq"].as_u64().expect("seq");
        let via = msg["data"]["candidate"]["via"].as_str().expect("via");
        self.received
            .entry((node, conn))
            .or_default()
            .push((uid(from), seq));
        self.received_via
            .entry((node, conn))
            .or_default()
            .push((via.to_owned(), seq));
    }

    pub(crate) fn command(&mut self, node: usize, cmd: ClusterCommand) {
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
                token: _,
                protocol,
            } => {
                let member = ClusterMember {
                    user_id,
                    user_name,
                    node: this,
                    conn,
                    joined_at,
                    session: session_id,
                    suspended: false,
                    protocol,
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
                if let Some((snapshot, tell)) =
                    self.store.leave(&room_id, &user_id, &this, conn, reason)
                {
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
            ClusterCommand::ServerMessage {
                nodes,
                room_id,
                to,
                msg,
            } => {
                let text: Arc<str> = String::from_utf8(msg.encode()).expect("utf-8").into();
                for node in nodes {
                    self.publish(
                        &node,
                        ClusterEvent::ServerMessage {
                            room_id: room_id.clone(),
                            to: to.clone(),
                            text: text.clone(),
                        },
                    );
                }
            }
            ClusterCommand::CloseRoom { .. } | ClusterCommand::Activity { .. } => {}
            ClusterCommand::Ticket {
                conn,
                room_id,
                user_id,
                session_id,
                digest,
                token,
            } => {
                self.store
                    .ticket(&room_id, &user_id, &this, conn, &session_id, digest, token);
            }
            ClusterCommand::Token {
                conn,
                room_id,
                user_id,
                token,
            } => {
                self.store.token(&room_id, &user_id, &this, conn, token);
            }
            ClusterCommand::Suspend {
                conn,
                room_id,
                user_id,
            } => {
                let publications = self
                    .store
                    .suspend(self.now, &room_id, &user_id, &this, conn);
                self.publish_all(publications.into_iter().collect());
            }
            ClusterCommand::Resume {
                conn,
                session_id,
                presented,
                next,
            } => {
                let moved =
                    self.store
                        .resume(self.now, &session_id, &presented, (&this, conn), next);
                let (reply, accepted) = match moved {
                    Some((user_id, snapshot, token, tell)) => {
                        for other in tell {
                            self.publish(
                                &other,
                                ClusterEvent::Membership {
                                    snapshot: snapshot.clone(),
                                    cause: MembershipCause::Resumed(user_id.clone()),
                                },
                            );
                        }
                        let owner = (snapshot.room_id.clone(), user_id.clone());
                        let reply = ClusterEvent::ResumeCommitted {
                            conn,
                            user_id,
                            snapshot,
                            token,
                        };
                        (reply, Some(owner))
                    }
                    None => (
                        ClusterEvent::ResumeRejected {
                            conn,
                            unavailable: false,
                        },
                        None,
                    ),
                };
                self.attempts.push(Attempt {
                    node,
                    conn,
                    accepted,
                });
                self.nodes[node].replies.push_back(Delivery(reply));
            }
        }
    }

    /// Delivers one queued message; `lose` drops an inbox membership message and
    /// schedules the resync that the receiver's sequence check would trigger.
    /// With a pipelined store, running a node's next command is one more candidate.
    pub(crate) fn deliver(&mut self, pick: usize, lose: bool, repeat: bool) -> bool {
        let candidates: Vec<(usize, Queue)> = (0..self.nodes.len())
            .flat_map(|i| [(i, Queue::Replies), (i, Queue::Inbox), (i, Queue::Outgoing)])
            .filter(|(i, queue)| {
                let n = &self.nodes[*i];
                match queue {
                    Queue::Replies => !n.replies.is_empty(),
                    Queue::Inbox => !n.inbox.is_empty(),
                    Queue::Outgoing => !n.outgoing.is_empty(),
                }
            })
            .collect();
        if candidates.is_empty() {
            return false;
        }
        match candidates[pick % candidates.len()] {
            (i, Queue::Replies) => self.deliver_at(i, true, lose, repeat),
            (i, Queue::Inbox) => self.deliver_at(i, false, lose, repeat),
            (i, Queue::Outgoing) => {
                let cmd = self.nodes[i].outgoing.pop_front().expect("non-empty");
                self.now += 1;
                self.command(i, cmd);
                true
            }
        }
    }

    /// Delivers the next message of node `i`'s replies or inbox, which is not empty.
    pub(crate) fn deliver_at(&mut self, i: usize, replies: bool, lose: bool, repeat: bool) -> bool {
        let node = &mut self.nodes[i];
        let Delivery(event) = if replies {
            node.replies.pop_front()
        } else {
            node.inbox.pop_front()
        }
        .expect("non-empty");
        Self::note_overtaking(node, &event);
        let event = match event {
            ClusterEvent::Membership { snapshot, .. } if lose && !replies => {
                // Lost: the gap is noticed and the room is read again.
                node.lossy = true;
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

    /// Notes when an answer overtakes an older snapshot of its room still in the inbox.
    pub(crate) fn note_overtaking(node: &mut Node, event: &ClusterEvent) {
        let (ClusterEvent::JoinCommitted { snapshot, .. }
        | ClusterEvent::ResumeCommitted { snapshot, .. }) = event
        else {
            return;
        };
        let older = node.inbox.iter().any(|Delivery(e)| {
            matches!(e, ClusterEvent::Membership { snapshot: s, .. }
                if s.room_id == snapshot.room_id && s.ver < snapshot.ver)
        });
        node.lossy |= older;
    }

    /// Delivers the next message of one node's inbox (`replies` false) or replies.
    pub(crate) fn deliver_from(&mut self, node: usize, replies: bool) -> bool {
        let n = &mut self.nodes[node];
        let Some(Delivery(event)) = (if replies {
            n.replies.pop_front()
        } else {
            n.inbox.pop_front()
        }) else {
            return false;
        };
        Self::note_overtaking(n, &event);
        self.now += 1;
        n.core.handle_cluster(self.now, event);
        self.pump(node);
        true
    }

    pub(crate) fn settle(&mut self) {
        let mut guard = 0;
        while self.deliver(0, false, false) {
            guard += 1;
            assert!(guard < 100_000, "deliveries never end");
        }
    }

    pub(crate) fn live_nodes(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes.iter().enumerate().filter(|(_, n)| !n.dead)
    }

    /// Checks every replica on its own (one host, no member twice, local members are
    /// connections the core holds and the client did not lose), and the store.
    pub(crate) fn check_replicas(&self) {
        self.store.check();
        for (i, node) in self.live_nodes() {
            let mut ids: Vec<&RoomId> = node.core.room_ids().collect();
            ids.sort_unstable();
            let listed = node.core.rooms_page(None, None, usize::MAX);
            let listed: Vec<&RoomId> = listed.iter().map(|r| &r.room_id).collect();
            assert_eq!(
                listed, ids,
                "{}: the room list is every replica, in order",
                node.id
            );
            for (room_id, members) in node.core.local_members().into_iter().fold(
                BTreeMap::<RoomId, Vec<ClusterMember>>::new(),
                |mut acc, local| {
                    acc.entry(local.room_id).or_default().push(local.member);
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
                for m in &members {
                    assert!(
                        node.core.is_authenticated(m.conn),
                        "{} holds {} on a connection it forgot",
                        node.id,
                        m.user_id
                    );
                    assert!(
                        !self.views.get(&(i, m.conn)).is_some_and(|v| v.lost),
                        "{} holds {} on a connection that was lost",
                        node.id,
                        m.user_id
                    );
                }
            }
        }
    }

    /// Once all is delivered: nodes agree with the store, clients with their rooms.
    pub(crate) fn check_converged(&self) {
        self.check_replicas();
        for (_, node) in self.live_nodes() {
            for LocalMember {
                room_id,
                member,
                resume_digest,
                token,
            } in node.core.local_members()
            {
                let room = self
                    .store
                    .rooms
                    .get(&room_id)
                    .unwrap_or_else(|| panic!("{} holds {room_id} the store lost", node.id));
                // What the node would register again if the store lost it is what it holds.
                let stored = room
                    .resume
                    .get(&member.user_id)
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(
                    resume_digest, stored.digest,
                    "{} and the store disagree on {}'s resume token",
                    node.id, member.user_id
                );
                if stored.digest.is_some() {
                    assert_eq!(
                        token, stored.token,
                        "{} and the store disagree on {}'s token",
                        node.id, member.user_id
                    );
                }
                assert!(
                    room.members.iter().any(|m| m.user_id == member.user_id
                        && m.node == node.id
                        && m.conn == member.conn
                        && !m.suspended),
                    "{} thinks {} is its live member of {room_id}",
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
                    .any(|m| m.node == self.nodes[*i].id && m.conn == *conn && !m.suspended),
                "open conn {conn} on n{i} is not a live member of {room_id}"
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
        self.check_suspensions();
        self.check_attempts();
        self.check_races();
    }

    /// Of two resumes racing with one ticket, the store takes at most one (the first it
    /// runs), and at most one is told `resumed`; the other is refused like any spent
    /// ticket (which `check_attempts` holds to `resume-failed` and 4001).
    pub(crate) fn check_races(&self) {
        for race in &self.races {
            let accepted = race
                .iter()
                .filter(|(node, conn)| {
                    self.attempts
                        .iter()
                        .any(|a| a.node == *node && a.conn == *conn && a.accepted.is_some())
                })
                .count();
            assert!(accepted <= 1, "both racing resumes were accepted: {race:?}");
            let resumed = race.iter().filter(|k| self.views[*k].resumed).count();
            assert!(
                resumed <= 1,
                "both racing resumes were told resumed: {race:?}"
            );
        }
    }

    /// Every membership that was suspended: no client was shown it leave or join again
    /// unless it ended for good, by its grace (`timeout`) or a fresh login (`replaced`,
    /// then the new membership joins).
    pub(crate) fn check_suspensions(&self) {
        for ((room_id, user, joined_at), life) in &self.store.lives {
            if life.suspensions == 0 {
                continue;
            }
            for ((i, _), view) in &self.views {
                if view.room.as_ref() != Some(room_id) {
                    continue;
                }
                let seen = view.about(user, *joined_at);
                let joins = seen.iter().filter(|e| e.left.is_none()).count();
                let leaves: Vec<LeaveReason> = seen.iter().filter_map(|e| e.left).collect();
                let listed = view
                    .first_listed
                    .iter()
                    .any(|(u, at)| u == user && at == joined_at);
                assert!(
                    joins <= usize::from(!listed),
                    "n{i}: {user} of {room_id} joined again after a suspension: {seen:?}"
                );
                assert!(leaves.len() <= 1, "n{i}: {user} left twice: {seen:?}");
                if self.nodes[*i].dead {
                    // A leave this node queued may have died with it, and the reaper
                    // suspended the member instead: its departure was checked when told.
                    continue;
                }
                if let Some(reason) = leaves.first() {
                    let vague = self.vague(*i, room_id, user, *joined_at, *reason);
                    match life.end {
                        Some(End::Left(LeaveReason::Timeout)) => assert!(
                            vague || *reason == LeaveReason::Timeout,
                            "n{i}: {user}'s grace ran out, told {reason:?}"
                        ),
                        Some(End::Replaced) => assert!(
                            matches!(reason, LeaveReason::Replaced | LeaveReason::Disconnected),
                            "n{i}: {user} logged in afresh, told {reason:?}"
                        ),
                        Some(_) => {}
                        None => panic!("n{i}: {user} left while still a member"),
                    }
                }
            }
        }
    }

    /// Every `resume` the store refused was told `resume-failed` and closed 4001; every
    /// one it accepted was told `resumed`, unless the session moved on before the answer.
    pub(crate) fn check_attempts(&self) {
        for a in &self.attempts {
            let view = &self.views[&(a.node, a.conn)];
            if self.nodes[a.node].dead || view.lost || (view.closed && view.close_code.is_none()) {
                continue;
            }
            match &a.accepted {
                None => {
                    assert!(!view.resumed, "a refused resume was told resumed");
                    assert!(
                        view.resume_failed,
                        "a refused resume was told resume-failed"
                    );
                    assert_eq!(view.close_code, Some(CloseCode::AuthFailed));
                }
                Some((room_id, user)) if !view.resumed => {
                    let closed = view.close_code == Some(CloseCode::RoomClosed);
                    assert!(
                        closed || view.resume_failed,
                        "an accepted resume got no answer"
                    );
                    assert!(
                        closed || view.close_code == Some(CloseCode::AuthFailed),
                        "{:?}",
                        view.close_code
                    );
                    let still_here = self.store.rooms.get(room_id).is_some_and(|r| {
                        r.members.iter().any(|m| {
                            &m.user_id == user
                                && m.node == self.nodes[a.node].id
                                && m.conn == a.conn
                        })
                    });
                    assert!(
                        !still_here,
                        "{user}'s resume was accepted and refused, and it is still there"
                    );
                }
                Some(_) => assert!(!view.resume_failed, "resumed and resume-failed"),
            }
        }
    }
}
