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
//! each node's commands late, in order, when the scheduler picks them. Connections drop, resume on any
//! node (with their newest ticket, a spent one, or twice at once), the clock jumps past
//! the resume grace, and nodes die and are reaped.
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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use octate_core::{
    ClusterCommand, ClusterEvent, ClusterMember, ConnId, Core, CoreConfig, CoreError, Identity,
    JoinKind, MembershipCause, NodeId, Output, ResumeIssuer, RoomSnapshot, TokenDigest, TokenRef,
};
use octate_protocol::{
    ClientMessage, CloseCode, ErrorCode, LeaveReason, ResumeTicket, RoomCloseReason, RoomId,
    ServerMessage, UserId,
};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

/// How long a lost connection's member stays suspended, in the cores and the store.
const GRACE_MS: u64 = 10_000;

fn rid(s: &str) -> RoomId {
    RoomId::new(s).expect("room id")
}

fn uid(s: &str) -> UserId {
    UserId::new(s).expect("user id")
}

/// Mints `<node>-s<n>` session ids and `<node>-t<n>` tokens.
#[derive(Debug)]
struct CountingIssuer {
    node: String,
    next: u64,
}

impl ResumeIssuer for CountingIssuer {
    fn session_id(&mut self) -> String {
        self.next += 1;
        format!("{}-s{}", self.node, self.next)
    }

    fn token(&mut self) -> (String, TokenDigest) {
        self.next += 1;
        let token = format!("{}-t{}", self.node, self.next);
        let digest = digest_of(&token);
        (token, digest)
    }

    fn digest(&self, token: &str) -> TokenDigest {
        digest_of(token)
    }
}

/// An injective digest of tokens shorter than 32 bytes: their length, then their bytes.
fn digest_of(token: &str) -> TokenDigest {
    let bytes = token.as_bytes();
    assert!(bytes.len() < 32, "model tokens are short");
    let mut digest = [0u8; 32];
    digest[0] = u8::try_from(bytes.len()).expect("short");
    digest[1..=bytes.len()].copy_from_slice(bytes);
    TokenDigest(digest)
}

/// What the store keeps of a member's resumable session besides its id.
#[derive(Clone, Debug, Default)]
struct StoreSession {
    /// Digest of the current resume token (`d`); none before the first ticket.
    digest: Option<TokenDigest>,
    /// End of the grace while suspended (`x`).
    until: Option<u64>,
    /// The token that opened the session (`t`, `e`).
    token: TokenRef,
}

/// One room as the store holds it.
#[derive(Clone, Debug)]
struct StoreRoom {
    ver: u64,
    created_by: UserId,
    created_at: u64,
    host: Option<UserId>,
    members: Vec<ClusterMember>,
    /// Each member's session fields, by user.
    resume: BTreeMap<UserId, StoreSession>,
}

impl StoreRoom {
    /// Keeps the host while it is a member, else the longest joined member.
    fn elect(&mut self) {
        if self
            .host
            .as_ref()
            .is_none_or(|h| !self.members.iter().any(|m| &m.user_id == h))
        {
            self.host = self.members.first().map(|m| m.user_id.clone());
        }
    }
}

/// How one membership (a user's join, kept through suspensions and resumes) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Removed for this reason (`timeout`: its grace ran out).
    Left(LeaveReason),
    /// The same user joined again afresh.
    Replaced,
    /// Its node died and it had no session to suspend.
    NodeDown,
    /// Its room was deleted.
    Closed,
}

/// The life of one membership, named by (room, user, joined at).
#[derive(Clone, Debug, Default)]
struct Life {
    /// How many times it was suspended.
    suspensions: u32,
    /// How it ended, once it did.
    end: Option<End>,
}

/// A publication: the nodes to tell and the event.
type Publication = (Vec<NodeId>, ClusterEvent);

/// The shared store: what the join/leave/ticket/suspend/resume/expire/reap scripts compute.
#[derive(Default)]
struct FakeStore {
    rooms: BTreeMap<RoomId, StoreRoom>,
    max_peers: usize,
    /// Versions grow across a room's incarnations (the scripts take them from the clock).
    clock: u64,
    /// Room and user of each resumable session (`session:<id>`).
    sessions: HashMap<String, (RoomId, UserId)>,
    /// Every membership ever committed.
    lives: BTreeMap<(RoomId, UserId, u64), Life>,
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

    /// Ends a membership the scripts removed: its session key goes (`forget_session`).
    fn ended(&mut self, room_id: &RoomId, member: &ClusterMember, end: End) {
        if let Some(session) = &member.session {
            self.sessions.remove(session);
        }
        if let Some(life) =
            self.lives
                .get_mut(&(room_id.clone(), member.user_id.clone(), member.joined_at))
            && life.end.is_none()
        {
            life.end = Some(end);
        }
    }

    /// `settle_room`: drops an emptied room, or elects, bumps the version and tells the
    /// room's nodes.
    fn settle(&mut self, room_id: &RoomId, cause: MembershipCause) -> Option<Publication> {
        let room = self.rooms.get_mut(room_id)?;
        if room.members.is_empty() {
            self.rooms.remove(room_id);
            return None;
        }
        room.elect();
        self.clock += 1;
        room.ver = self.clock;
        let snapshot = self.snapshot(room_id).expect("room exists");
        Some((
            self.nodes_of(room_id),
            ClusterEvent::Membership { snapshot, cause },
        ))
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
                resume: BTreeMap::new(),
            });
        let old = room
            .members
            .iter()
            .position(|m| m.user_id == member.user_id);
        let count = room.members.len() - usize::from(old.is_some());
        if count >= self.max_peers {
            if room.members.is_empty() {
                self.rooms.remove(room_id);
            }
            return Err(CoreError::RoomFull);
        }
        let (cause, gone) = match old {
            Some(i) => {
                let gone = room.members.remove(i);
                room.resume.remove(&gone.user_id);
                tell.push(gone.node.clone());
                (
                    MembershipCause::Replaced(member.user_id.clone()),
                    Some(gone),
                )
            }
            None => (MembershipCause::Joined(member.user_id.clone()), None),
        };
        room.members.push(member.clone());
        room.members
            .sort_by(|a, b| (a.joined_at, &a.user_id).cmp(&(b.joined_at, &b.user_id)));
        room.resume
            .insert(member.user_id.clone(), StoreSession::default());
        room.elect();
        self.clock += 1;
        room.ver = self.clock;
        if let Some(gone) = gone {
            self.ended(room_id, &gone, End::Replaced);
        }
        if let Some(session) = &member.session {
            self.sessions
                .insert(session.clone(), (room_id.clone(), member.user_id.clone()));
        }
        self.lives.insert(
            (room_id.clone(), member.user_id.clone(), member.joined_at),
            Life::default(),
        );
        tell.sort();
        tell.dedup();
        let snapshot = self.snapshot(room_id).expect("just written");
        Ok((snapshot, cause, tell))
    }

    /// The close script: deletes the room; returns the close's version and the nodes to tell.
    fn close(&mut self, room_id: &RoomId) -> Option<(u64, Vec<NodeId>)> {
        let tell = self.nodes_of(room_id);
        let room = self.rooms.remove(room_id)?;
        for member in &room.members {
            self.ended(room_id, member, End::Closed);
        }
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
        reason: LeaveReason,
    ) -> Option<(RoomSnapshot, Vec<NodeId>)> {
        let room = self.rooms.get_mut(room_id)?;
        let i = room
            .members
            .iter()
            .position(|m| &m.user_id == user && &m.node == node && m.conn == conn)?;
        let gone = room.members.remove(i);
        room.resume.remove(user);
        if room.host.as_ref() == Some(user) {
            room.host = room.members.first().map(|m| m.user_id.clone());
        }
        self.clock += 1;
        room.ver = self.clock;
        self.ended(room_id, &gone, End::Left(reason));
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

    /// The ticket script: records the digest of the newest ticket of a member that the
    /// session (node, conn) still holds, live.
    #[allow(clippy::too_many_arguments)]
    fn ticket(
        &mut self,
        room_id: &RoomId,
        user: &UserId,
        node: &NodeId,
        conn: ConnId,
        session: &str,
        digest: TokenDigest,
        token: TokenRef,
    ) -> bool {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return false;
        };
        let Some(m) = room
            .members
            .iter_mut()
            .find(|m| &m.user_id == user && &m.node == node && m.conn == conn && !m.suspended)
        else {
            return false;
        };
        if let Some(old) = m.session.as_ref().filter(|s| *s != session) {
            self.sessions.remove(old);
        }
        m.session = Some(session.to_owned());
        let fields = room.resume.entry(user.clone()).or_default();
        fields.digest = Some(digest);
        fields.token = token;
        self.sessions
            .insert(session.to_owned(), (room_id.clone(), user.clone()));
        true
    }

    /// The suspend script: suspends a member that the session (node, conn) holds live,
    /// or removes it when it has no ticket yet.
    fn suspend(
        &mut self,
        now: u64,
        room_id: &RoomId,
        user: &UserId,
        node: &NodeId,
        conn: ConnId,
    ) -> Option<Publication> {
        let room = self.rooms.get_mut(room_id)?;
        let i = room
            .members
            .iter()
            .position(|m| &m.user_id == user && &m.node == node && m.conn == conn)?;
        if room.members[i].suspended {
            return None;
        }
        let fields = room.resume.entry(user.clone()).or_default();
        if room.members[i].session.is_none() || fields.digest.is_none() {
            let gone = room.members.remove(i);
            room.resume.remove(user);
            self.ended(room_id, &gone, End::Left(LeaveReason::Disconnected));
            return self.settle(
                room_id,
                MembershipCause::Left(user.clone(), LeaveReason::Disconnected),
            );
        }
        fields.until = Some(now + GRACE_MS);
        let m = &mut room.members[i];
        m.suspended = true;
        let key = (room_id.clone(), user.clone(), m.joined_at);
        self.lives.entry(key).or_default().suspensions += 1;
        self.settle(room_id, MembershipCause::Suspended(user.clone()))
    }

    /// The resume script: moves the session to (node, conn) when `presented` is its
    /// current token and its grace has not run out. Returns the user, the snapshot, the
    /// session's token and the other nodes to tell (the old holder's node included).
    fn resume(
        &mut self,
        now: u64,
        session: &str,
        presented: &TokenDigest,
        (node, conn): (&NodeId, ConnId),
        next: TokenDigest,
    ) -> Option<(UserId, RoomSnapshot, TokenRef, Vec<NodeId>)> {
        let (room_id, user) = self.sessions.get(session)?.clone();
        let room = self.rooms.get_mut(&room_id)?;
        let m = room.members.iter_mut().find(|m| m.user_id == user)?;
        if m.session.as_deref() != Some(session) {
            return None;
        }
        let fields = room.resume.entry(user.clone()).or_default();
        if fields.digest.as_ref() != Some(presented) {
            return None;
        }
        if fields.until.is_some_and(|until| until <= now) {
            return None;
        }
        let old_node = m.node.clone();
        m.node = node.clone();
        m.conn = conn;
        m.suspended = false;
        fields.until = None;
        fields.digest = Some(next);
        let token = fields.token.clone();
        room.elect();
        self.clock += 1;
        room.ver = self.clock;
        let snapshot = self.snapshot(&room_id).expect("room exists");
        let mut tell = self.nodes_of(&room_id);
        tell.push(old_node);
        tell.sort();
        tell.dedup();
        tell.retain(|n| n != node);
        Some((user, snapshot, token, tell))
    }

    /// The expire script: ends every suspension whose grace ran out (`left`, `timeout`).
    fn expire(&mut self, now: u64) -> Vec<Publication> {
        let mut due: Vec<(u64, RoomId, UserId)> = self
            .rooms
            .iter()
            .flat_map(|(room_id, room)| {
                room.resume.iter().filter_map(move |(user, f)| {
                    f.until
                        .filter(|until| *until <= now)
                        .map(|until| (until, room_id.clone(), user.clone()))
                })
            })
            .collect();
        due.sort();
        let mut out = Vec::new();
        for (_, room_id, user) in due {
            let Some(room) = self.rooms.get_mut(&room_id) else {
                continue;
            };
            let Some(i) = room.members.iter().position(|m| m.user_id == user) else {
                continue;
            };
            let gone = room.members.remove(i);
            room.resume.remove(&user);
            self.ended(&room_id, &gone, End::Left(LeaveReason::Timeout));
            out.extend(self.settle(
                &room_id,
                MembershipCause::Left(user.clone(), LeaveReason::Timeout),
            ));
        }
        out
    }

    /// The reap script: a dead node's live members are suspended when they have a
    /// ticket, removed otherwise; each touched room is told once (`node-down`).
    fn reap(&mut self, now: u64, dead: &NodeId) -> Vec<Publication> {
        let mut touched = BTreeSet::new();
        let mut gone = Vec::new();
        for (room_id, room) in &mut self.rooms {
            let mut i = 0;
            while i < room.members.len() {
                let m = &mut room.members[i];
                if &m.node != dead || m.suspended {
                    i += 1;
                    continue;
                }
                touched.insert(room_id.clone());
                let fields = room.resume.entry(m.user_id.clone()).or_default();
                if m.session.is_some() && fields.digest.is_some() {
                    fields.until = Some(now + GRACE_MS);
                    m.suspended = true;
                    let key = (room_id.clone(), m.user_id.clone(), m.joined_at);
                    self.lives.entry(key).or_default().suspensions += 1;
                    i += 1;
                } else {
                    let member = room.members.remove(i);
                    room.resume.remove(&member.user_id);
                    gone.push((room_id.clone(), member));
                }
            }
        }
        for (room_id, member) in gone {
            self.ended(&room_id, &member, End::NodeDown);
        }
        touched
            .into_iter()
            .filter_map(|room_id| self.settle(&room_id, MembershipCause::NodeDown(dead.clone())))
            .collect()
    }

    /// Every committed member of a room, once per user.
    fn check(&self) {
        for (room_id, room) in &self.rooms {
            let users: BTreeSet<&UserId> = room.members.iter().map(|m| &m.user_id).collect();
            assert_eq!(users.len(), room.members.len(), "a user twice in {room_id}");
            for m in &room.members {
                let until = room.resume.get(&m.user_id).and_then(|f| f.until);
                assert_eq!(m.suspended, until.is_some(), "{} in {room_id}", m.user_id);
            }
        }
    }
}

/// A `peer-joined` or `peer-left` one client was shown.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PeerEvent {
    /// The membership it is about: user and joined at.
    user: UserId,
    joined_at: u64,
    /// `None` for `peer-joined`.
    left: Option<LeaveReason>,
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
    /// The close code the server sent, if it closed the connection.
    close_code: Option<CloseCode>,
    /// The client saw its connection drop (the server was not told a close frame).
    lost: bool,
    /// Every ticket the client was handed (carried over from the connection it resumed
    /// from), newest last.
    tickets: Vec<ResumeTicket>,
    /// A later connection resumed (or tried to resume) from this one's tickets.
    moved_on: bool,
    /// The answer was `resumed`.
    resumed: bool,
    /// The answer was `error` `resume-failed`.
    resume_failed: bool,
    /// The peers listed by `auth-ok` or `resumed`: (user, joined at).
    first_listed: Vec<(UserId, u64)>,
    /// Every `peer-joined` and `peer-left`, in order.
    events: Vec<PeerEvent>,
}

impl ClientView {
    fn apply(&mut self, msg: &ServerMessage) {
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
            _ => {}
        }
    }

    /// The events this client was shown about one membership.
    fn about(&self, user: &UserId, joined_at: u64) -> Vec<&PeerEvent> {
        self.events
            .iter()
            .filter(|e| &e.user == user && e.joined_at == joined_at)
            .collect()
    }
}

/// A message on its way to a node.
#[derive(Clone, Debug)]
struct Delivery(ClusterEvent);

/// One of a node's queues.
#[derive(Clone, Copy, Debug)]
enum Queue {
    /// Script replies to it.
    Replies,
    /// Publications to it.
    Inbox,
    /// Its commands, not run yet.
    Outgoing,
}

struct Node {
    id: NodeId,
    core: Core,
    replies: VecDeque<Delivery>,
    inbox: VecDeque<Delivery>,
    /// The process died: it hears nothing more and is reaped.
    dead: bool,
    /// The reaper took its members.
    reaped: bool,
    /// It may have missed why someone left: an inbox message to it was lost (a resync
    /// told it the room as it is, not why), or an answer overtook an older snapshot.
    lossy: bool,
    /// Commands sent to the store and not run yet (pipelined clusters only).
    outgoing: VecDeque<ClusterCommand>,
}

/// One `resume` asked of the store, and what the store answered.
#[derive(Clone, Debug)]
struct Attempt {
    node: usize,
    conn: ConnId,
    /// The room and user whose session the store moved to this connection, if it did.
    accepted: Option<(RoomId, UserId)>,
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
    /// The same, by the connection that sent them (`n<node>c<conn>`): (sender, seq).
    received_via: HashMap<(usize, ConnId), Vec<(String, u64)>>,
    /// Every `resume` the store answered, in order.
    attempts: Vec<Attempt>,
    /// Pairs of connections that resumed at once with one ticket.
    races: Vec<[(usize, ConnId); 2]>,
    /// The store runs a node's commands when the scheduler says (in order per node), not
    /// as soon as the core asks, as a real node's pipelined writer does.
    pipelined: bool,
}

impl FakeCluster {
    fn new(n: usize, max_peers: usize) -> Self {
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
    fn publish(&mut self, node: &NodeId, event: ClusterEvent) {
        let i = self.node_index(node);
        if !self.nodes[i].dead {
            self.nodes[i].inbox.push_back(Delivery(event));
        }
    }

    fn publish_all(&mut self, publications: Vec<Publication>) {
        for (tell, event) in publications {
            for node in tell {
                self.publish(&node, event.clone());
            }
        }
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

    /// The connection drops without a close frame: the server suspends its member.
    fn lose(&mut self, node: usize, conn: ConnId) {
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
    fn resume(&mut self, node: usize, from: (usize, ConnId), pick: usize) -> Option<ConnId> {
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
    fn kill(&mut self, node: usize) {
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
    fn reap(&mut self) {
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
    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let publications = self.store.expire(self.now);
        self.publish_all(publications);
    }

    fn signal(&mut self, node: usize, conn: ConnId, target: &str, seq: u64) {
        self.now += 1;
        let json = format!(
            r#"{{"type":"ice-candidate","data":{{"peer":"{target}","candidate":{{"seq":{seq},"via":"n{node}{conn}"}}}}}}"#
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
                Output::Close { conn, code } => {
                    if let Some(view) = self.views.get_mut(&(node, conn))
                        && !view.lost
                    {
                        view.closed = true;
                        view.close_code = Some(code);
                    }
                }
                Output::Heartbeat { .. } | Output::RoomRemoved { .. } | Output::Resumed { .. } => {}
                Output::Cluster(cmd) if self.pipelined => {
                    self.nodes[node].outgoing.push_back(cmd);
                }
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
    fn check_departure(
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
    fn vague(
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

    fn record_signal(&mut self, node: usize, conn: ConnId, msg: &serde_json::Value) {
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
            ClusterCommand::CloseRoom { .. } => {}
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
    fn deliver(&mut self, pick: usize, lose: bool, repeat: bool) -> bool {
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
    fn deliver_at(&mut self, i: usize, replies: bool, lose: bool, repeat: bool) -> bool {
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
    fn note_overtaking(node: &mut Node, event: &ClusterEvent) {
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
    fn deliver_from(&mut self, node: usize, replies: bool) -> bool {
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

    fn settle(&mut self) {
        let mut guard = 0;
        while self.deliver(0, false, false) {
            guard += 1;
            assert!(guard < 100_000, "deliveries never end");
        }
    }

    fn live_nodes(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes.iter().enumerate().filter(|(_, n)| !n.dead)
    }

    /// Checks every replica on its own (one host, no member twice, local members are
    /// connections the core holds and the client did not lose), and the store.
    fn check_replicas(&self) {
        self.store.check();
        for (i, node) in self.live_nodes() {
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
    fn check_converged(&self) {
        self.check_replicas();
        for (_, node) in self.live_nodes() {
            for (room_id, member) in node.core.local_members() {
                let room = self
                    .store
                    .rooms
                    .get(&room_id)
                    .unwrap_or_else(|| panic!("{} holds {room_id} the store lost", node.id));
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
    fn check_races(&self) {
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
    fn check_suspensions(&self) {
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
    fn check_attempts(&self) {
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
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize, 0..5u8, 0..2u8).prop_map(|(node, user, room)| Step::Connect { node, user, room }),
        1 => any::<usize>().prop_map(|pick| Step::Disconnect { pick }),
        2 => (any::<usize>(), 0..5u8).prop_map(|(pick, target)| Step::Signal { pick, target }),
        8 => (any::<usize>(), prop::bool::weighted(0.1), prop::bool::weighted(0.1))
            .prop_map(|(pick, lose, repeat)| Step::Deliver { pick, lose, repeat }),
        1 => (0..2u8).prop_map(|room| Step::Delete { room }),
        2 => any::<usize>().prop_map(|pick| Step::Lose { pick }),
        3 => (any::<usize>(), 0..3usize, prop::option::weighted(0.2, any::<usize>()))
            .prop_map(|(pick, node, stale)| Step::Resume { pick, node, stale }),
        1 => (any::<usize>(), 0..3usize).prop_map(|(pick, node)| Step::Race { pick, node }),
        1 => (0..2 * GRACE_MS).prop_map(|ms| Step::Advance { ms }),
        1 => prop_oneof![20 => Just(None), 1 => (0..3usize).prop_map(Some)]
            .prop_map(|node| node.map_or(Step::Reap, |node| Step::Kill { node })),
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
    let mut c = FakeCluster::new(3, 4);
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
