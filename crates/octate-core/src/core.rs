//! The signaling state machine: connections, rooms, routing, timers and memory policy.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use octate_protocol::{
    ClientMessage, CloseCode, ErrorCode, LeaveReason, PeerInfo, RoomCloseReason, RoomId,
    RoomMetadata, ServerMessage, UnixMillis, UserId,
};

mod cluster_api;
mod membership;
mod replica;
mod routing;
mod server_api;
mod sessions;
mod timers;

use crate::config::millis;
use crate::room::Room;
use crate::session::{Login, ResumeIssuer, Session, TokenDigest, TokenRef};
use crate::{
    ClusterCommand, ClusterMember, ConnId, CoreConfig, CoreError, JoinKind, LifecycleKind,
    LocalMember, MemoryLevel, NodeId, Output, RoomSnapshot,
};

/// Who a connection is, as proven by its verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's user.
    pub user_id: UserId,
    /// The one room the token authorizes.
    pub room_id: RoomId,
}

/// Which signaling protocol a connection speaks.
///
/// Both kinds are peers of their room (presence, limits, `/stats`), but a message of one
/// protocol never reaches a connection of the other: their formats differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Octate's own protocol (`docs/protocol.md`).
    #[default]
    Native,
    /// The protocol of Yjs's `y-webrtc` provider: one topic, the room, fanned out verbatim.
    YWebrtc,
}

/// Whether a room has a place for a new connection of a user: [`Core::vacancy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vacancy {
    /// It may join (replacing a quiet connection of the same user, if there is one).
    Open,
    /// The room is at its peer limit.
    Full,
    /// The user is in the room on a connection heard from lately.
    Taken,
}

/// Room details for a room created through the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRoom {
    /// Identifier.
    pub room_id: RoomId,
    /// Display name.
    pub room_name: String,
    /// The user meant to host it.
    pub host_id: UserId,
    /// The host's display name.
    pub host_name: String,
    /// File the room is about.
    pub file_id: Option<String>,
    /// Version number.
    pub version: Option<u64>,
}

/// Counters and gauges of the core, for `/stats` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Rooms in memory.
    pub rooms: usize,
    /// Peers in rooms.
    pub peers: usize,
    /// Authenticated connections.
    pub connections: usize,
    /// Rooms created since start.
    pub rooms_created: u64,
    /// Rooms removed since start.
    pub rooms_closed: u64,
    /// Peers removed for silence since start.
    pub peers_timed_out: u64,
    /// Memory readings at warning level or above since start.
    pub memory_cleanups: u64,
    /// Signals and updates delivered to a peer since start.
    pub messages_relayed: u64,
    /// Peers whose connection dropped, waiting to be resumed.
    pub suspended: usize,
    /// Sessions taken over by a `resume` since start.
    pub sessions_resumed: u64,
    /// Suspended sessions whose grace ran out since start.
    pub sessions_expired: u64,
}

/// An authenticated connection of this process.
#[derive(Clone, Debug)]
struct Conn {
    identity: Identity,
    user_name: String,
    /// The room the connection is in, if any (always its token's room).
    joined: bool,
    last_seen: UnixMillis,
    /// The token that opened the connection's session.
    token: TokenRef,
    /// The connection's resumable session, once it has been handed a ticket.
    session: Option<String>,
    /// On a cluster, the digest of the resume token last handed to the session (the store
    /// keeps it too; kept here to register it again if the store loses its data).
    resume_digest: Option<TokenDigest>,
    /// What the connection speaks.
    protocol: Protocol,
    /// A `y-webrtc` connection subscribed to its room's topic: it gets the room's `publish`es.
    subscribed: bool,
}

/// The whole signaling state of one server process, driven by its caller.
///
/// # Driving the core
///
/// - Getters (`room`, `peers`, `stats`, `poll_timeout`) take `&self`.
/// - `handle_*` methods feed in what happened: a verified connection, a message,
///   a pong, a disconnect, a timer, a heap reading. Each takes `now`, in Unix
///   milliseconds; the core never reads a clock.
/// - Commands from the HTTP API (`create_room`, `delete_room`) return a `Result`.
/// - After every call, drain [`Core::poll_output`] until it returns `None` and carry out
///   each [`Output`]. Call [`Core::handle_timeout`] at [`Core::poll_timeout`]; early or
///   extra calls are harmless no-ops.
///
/// ```
/// use octate_core::{ConnId, Core, CoreConfig, Identity, Output};
/// use octate_protocol::{ClientMessage, RoomId, ServerMessage, UserId};
///
/// let mut core = Core::new(CoreConfig::default(), 0);
/// let room = RoomId::new("room-1").unwrap();
/// for (n, user) in ["alice", "bob"].into_iter().enumerate() {
///     let id = Identity { user_id: UserId::new(user).unwrap(), room_id: room.clone() };
///     core.handle_authenticated(1_000, ConnId(n as u64), id, None);
/// }
/// while let Some(out) = core.poll_output() {
///     // deliver `out` to sockets
///     # let _ = out;
/// }
/// let offer = ClientMessage::decode(
///     br#"{"type":"sdp-offer","data":{"peer":"bob","offer":{"type":"offer","sdp":"v=0"}}}"#,
///     64 * 1024,
/// ).unwrap();
/// core.handle_message(2_000, ConnId(0), offer);
/// match core.poll_output() {
///     Some(Output::Send { to, msg: ServerMessage::Signal { from, .. } }) => {
///         assert_eq!(to, ConnId(1));
///         assert_eq!(from.as_str(), "alice");
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    rooms: HashMap<RoomId, Room>,
    /// The ids of `rooms`, in order: a page of the room list costs its length, not a sort.
    room_ids: BTreeSet<RoomId>,
    conns: HashMap<ConnId, Conn>,
    /// How many existing rooms each user created, for `max_rooms_per_user`.
    created_by: HashMap<UserId, usize>,
    outputs: VecDeque<Output>,
    next_heartbeat: UnixMillis,
    next_cleanup: UnixMillis,
    stats: CoreStats,
    /// Set by [`Core::handle_shutdown`]: no connection is accepted any more.
    stopping: bool,
    /// The `seq` of the last lifecycle event reported.
    lifecycle_seq: u64,
    /// On a cluster, how often (ms) a room's activity here is reported to the store.
    activity_every: u64,
    /// This node, when the core is one node of a cluster; `None` on a single node.
    node: Option<NodeId>,
    /// Joins sent to the cluster and not answered yet (clustered cores only).
    pending: HashMap<ConnId, PendingJoin>,
    /// The cluster's shared store is unreachable: joins are refused.
    degraded: bool,
    /// The newest snapshot of each room with a join in flight: it may overtake the
    /// join's own answer, and then decides whether the joiner is still current.
    early: HashMap<RoomId, RoomSnapshot>,
    /// The newest close of each room with a join in flight, as (version, reason): a join
    /// committed before it is undone.
    closed: HashMap<RoomId, (u64, RoomCloseReason)>,
    /// Mints resume tickets; resume is off without one.
    issuer: Option<Box<dyn ResumeIssuer>>,
    /// Resumable sessions by id.
    sessions: HashMap<String, Session>,
    /// Grace deadlines of suspended sessions, earliest first.
    deadlines: BTreeSet<(UnixMillis, String)>,
    /// Resumes sent to the cluster and not answered yet, with the ticket to hand out.
    resuming: HashMap<ConnId, PendingResume>,
    /// The newest snapshot of each room heard of while a resume is in flight: it may
    /// overtake the resume's own answer, and then decides whether the resume still holds.
    early_resumed: HashMap<RoomId, RoomSnapshot>,
    /// The newest close of each room heard of while a resume is in flight, as (version,
    /// reason): a resume committed before it is undone.
    closed_resumed: HashMap<RoomId, (u64, RoomCloseReason)>,
}

/// A resume waiting for the cluster's answer.
#[derive(Debug)]
struct PendingResume {
    ticket: octate_protocol::ResumeTicket,
    /// Digest of the ticket's resume token.
    next: TokenDigest,
    /// The connection went away before the answer: a committed resume is suspended again.
    gone: bool,
}

/// A join waiting for the cluster's answer.
#[derive(Debug)]
struct PendingJoin {
    kind: JoinKind,
    room_id: RoomId,
    user_id: UserId,
    /// Signals from other nodes that reached this node before the join's own answer
    /// (the other node saw the join first); delivered right after `auth-ok`.
    held: Vec<Arc<str>>,
    /// A `join-room` arrived while this join was in flight: it is answered too.
    also_room_joined: bool,
    /// `publish`es of a `y-webrtc` joiner, sent once its join is committed.
    published: Vec<String>,
}

/// Most bytes of signals held for one join in flight; more are dropped.
const MAX_HELD_BYTES: usize = 256 * 1024;

/// What a kicked peer is told.
const KICKED_MESSAGE: &str = "removed from the room by an administrator";

impl Core {
    /// Creates an empty core; timers start counting from `now`.
    pub fn new(config: CoreConfig, now: UnixMillis) -> Self {
        let next_heartbeat = now.saturating_add(millis(config.heartbeat_interval));
        let next_cleanup = now.saturating_add(millis(config.cleanup_interval));
        // Often enough that the store's word on a room's activity is never more than a
        // quarter of the idle time (or of the inactivity timeout) old.
        let activity_every =
            (millis(config.room_idle_after).min(millis(config.room_inactive_timeout)) / 4).max(1);
        Self {
            activity_every,
            config,
            rooms: HashMap::new(),
            room_ids: BTreeSet::new(),
            conns: HashMap::new(),
            created_by: HashMap::new(),
            outputs: VecDeque::new(),
            next_heartbeat,
            next_cleanup,
            stats: CoreStats::default(),
            stopping: false,
            lifecycle_seq: 0,
            node: None,
            pending: HashMap::new(),
            degraded: false,
            early: HashMap::new(),
            closed: HashMap::new(),
            issuer: None,
            sessions: HashMap::new(),
            deadlines: BTreeSet::new(),
            resuming: HashMap::new(),
            early_resumed: HashMap::new(),
            closed_resumed: HashMap::new(),
        }
    }

    /// Turns session resume on: `issuer` mints the tickets (see [`CoreConfig::resume_grace`]).
    pub fn set_resume_issuer(&mut self, issuer: Box<dyn ResumeIssuer>) {
        self.issuer = Some(issuer);
    }

    /// Whether a dropped connection's peer is kept, suspended, for a `resume`.
    pub fn resume_enabled(&self) -> bool {
        self.issuer.is_some() && !self.config.resume_grace.is_zero()
    }

    /// Creates an empty core that is node `node` of a cluster: joins and leaves are
    /// committed by the cluster ([`Output::Cluster`], [`Core::handle_cluster`]).
    pub fn clustered(config: CoreConfig, now: UnixMillis, node: NodeId) -> Self {
        Self {
            node: Some(node),
            ..Self::new(config, now)
        }
    }

    // ---- A. Getters ------------------------------------------------------------------

    /// The configuration in force.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// A room's metadata, peers included.
    pub fn room(&self, room_id: &RoomId) -> Option<RoomMetadata> {
        self.rooms.get(room_id).map(Room::metadata)
    }

    /// A room's peers, longest connected first.
    pub fn peers(&self, room_id: &RoomId) -> Option<Vec<PeerInfo>> {
        self.rooms.get(room_id).map(Room::peers)
    }

    /// Every room's id.
    pub fn room_ids(&self) -> impl Iterator<Item = &RoomId> {
        self.rooms.keys()
    }

    /// This node's id, when the core is part of a cluster.
    pub fn node(&self) -> Option<&NodeId> {
        self.node.as_ref()
    }

    /// This node's members of every room, with their rooms (clustered cores only: the
    /// cluster re-registers them after its store lost its data).
    pub fn local_members(&self) -> Vec<LocalMember> {
        let Some(node) = &self.node else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for room in self.rooms.values() {
            for m in &room.members {
                if let Some(conn) = m.local() {
                    let state = self.conns.get(&conn);
                    out.push(LocalMember {
                        room_id: room.id.clone(),
                        member: ClusterMember {
                            user_id: m.info.user_id.clone(),
                            user_name: m.info.user_name.clone(),
                            node: node.clone(),
                            conn,
                            joined_at: m.info.connected_at,
                            session: m.session.clone(),
                            suspended: false,
                            protocol: m.protocol,
                        },
                        resume_digest: state.and_then(|s| s.resume_digest),
                        token: state.map(|s| s.token.clone()).unwrap_or_default(),
                    });
                }
            }
        }
        out
    }

    /// Whether a connection is authenticated in this core.
    pub fn is_authenticated(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Whether a new connection of `user` may join `room_id` at `now`, as far as this
    /// node knows the room. A connection of the same user that has gone quiet (past its
    /// ping interval) may be replaced; one heard from recently may not.
    pub fn vacancy(&self, now: UnixMillis, room_id: &RoomId, user: &UserId) -> Vacancy {
        let Some(room) = self.rooms.get(room_id) else {
            return Vacancy::Open;
        };
        let Some(member) = room.member(user) else {
            return if room.members.len() >= self.config.max_peers_per_room {
                Vacancy::Full
            } else {
                Vacancy::Open
            };
        };
        let heard_lately = member
            .local()
            .and_then(|conn| self.conns.get(&conn))
            .is_some_and(|c| {
                let quiet_after = match c.protocol {
                    Protocol::Native => millis(self.config.heartbeat_interval).saturating_mul(2),
                    Protocol::YWebrtc => millis(self.config.ywebrtc_peer_timeout) / 2,
                };
                now.saturating_sub(c.last_seen) < quiet_after
            });
        if heard_lately {
            Vacancy::Taken
        } else {
            Vacancy::Open
        }
    }

    /// What a connection speaks, when it is authenticated here.
    pub fn protocol(&self, conn: ConnId) -> Option<Protocol> {
        self.conns.get(&conn).map(|c| c.protocol)
    }

    /// Counters and gauges.
    pub fn stats(&self) -> CoreStats {
        CoreStats {
            rooms: self.rooms.len(),
            peers: self
                .rooms
                .values()
                .map(|r| r.members.iter().filter(|m| m.local().is_some()).count())
                .sum(),
            connections: self.conns.len(),
            suspended: self.deadlines.len(),
            ..self.stats
        }
    }

    /// When [`Core::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> UnixMillis {
        let next = self.next_heartbeat.min(self.next_cleanup);
        match self.deadlines.first() {
            Some((until, _)) => next.min(*until),
            None => next,
        }
    }

    // ---- B. Handlers for what happened -----------------------------------------------

    /// A connection proved `identity` with a verified token: it joins its room.
    pub fn handle_authenticated(
        &mut self,
        now: UnixMillis,
        conn: ConnId,
        identity: Identity,
        user_name: Option<String>,
    ) {
        self.handle_login(
            now,
            conn,
            Login {
                identity,
                user_name,
                token: TokenRef::default(),
            },
        );
    }

    /// A connection proved who it is with a verified token: it joins its room, and its
    /// session remembers the token for a later `resume`.
    pub fn handle_login(&mut self, now: UnixMillis, conn: ConnId, login: Login) {
        self.login(now, conn, login, Protocol::Native);
    }

    /// A `y-webrtc` connection was upgraded with a verified token: it joins its room as a
    /// peer that is never sent native messages. It is not subscribed to its room's topic yet.
    pub fn handle_ywebrtc_login(&mut self, now: UnixMillis, conn: ConnId, login: Login) {
        self.login(now, conn, login, Protocol::YWebrtc);
    }

    /// A `y-webrtc` connection subscribed to its room's topic (`true`) or unsubscribed.
    pub fn handle_ywebrtc_subscription(&mut self, now: UnixMillis, conn: ConnId, subscribed: bool) {
        self.handle_pong(now, conn);
        if let Some(state) = self.conns.get_mut(&conn)
            && state.protocol == Protocol::YWebrtc
        {
            state.subscribed = subscribed;
        }
    }

    fn login(&mut self, now: UnixMillis, conn: ConnId, login: Login, protocol: Protocol) {
        let Login {
            identity,
            user_name,
            token,
        } = login;
        if self.stopping {
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::GoingAway,
            });
            return;
        }
        if self.conns.contains_key(&conn) {
            self.send_error(
                conn,
                ErrorCode::AlreadyAuthenticated,
                "connection is authenticated",
            );
            return;
        }
        let user_name = user_name.unwrap_or_else(|| identity.user_id.to_string());
        self.conns.insert(
            conn,
            Conn {
                identity,
                user_name,
                joined: false,
                last_seen: now,
                token,
                session: None,
                resume_digest: None,
                protocol,
                subscribed: false,
            },
        );
        if let Err(err) = self.join(now, conn, JoinKind::Auth) {
            self.refuse_auth(now, conn, err);
        }
    }

    /// A message arrived from a connection.
    pub fn handle_message(&mut self, now: UnixMillis, conn: ConnId, msg: ClientMessage) {
        let Some(state) = self.conns.get_mut(&conn) else {
            self.send_error(conn, ErrorCode::NotAuthenticated, "send auth first");
            return;
        };
        state.last_seen = now;
        let (user, room_id, joined) = (
            state.identity.user_id.clone(),
            state.identity.room_id.clone(),
            state.joined,
        );
        if joined
            && let Some(member) = self
                .rooms
                .get_mut(&room_id)
                .and_then(|r| r.member_mut(&user))
        {
            member.info.last_heartbeat = now;
        }
        let result = match msg {
            ClientMessage::Auth { .. } | ClientMessage::Resume { .. } => {
                Err(CoreError::AlreadyAuthenticated)
            }
            ClientMessage::CreateRoom {
                room_id: asked,
                room_name,
                file_id,
                user_name,
            } => self
                .check_room(&room_id, asked.as_ref())
                .map(|()| self.rename(conn, user_name))
                .and_then(|()| self.join(now, conn, JoinKind::Create { room_name, file_id })),
            ClientMessage::JoinRoom {
                room_id: asked,
                user_name,
            } => self
                .check_room(&room_id, asked.as_ref())
                .map(|()| self.rename(conn, user_name))
                .and_then(|()| self.join(now, conn, JoinKind::Join)),
            ClientMessage::LeaveRoom => self.leave_by_request(now, conn),
            ClientMessage::Signal { kind, target, data } => self.route_signal(
                now,
                conn,
                &user,
                &room_id,
                joined,
                target,
                |from, room_id| ServerMessage::Signal {
                    kind,
                    from,
                    room_id,
                    data,
                },
            ),
            ClientMessage::Update { kind, data } => {
                self.route_update(now, &user, &room_id, joined, |from, room_id| {
                    ServerMessage::Update {
                        kind,
                        from,
                        room_id,
                        data,
                    }
                })
            }
            // The transport answers `refresh` itself: here it only counts as liveness.
            ClientMessage::Heartbeat | ClientMessage::Pong | ClientMessage::Refresh { .. } => {
                Ok(())
            }
        };
        if let Err(err) = result {
            self.send_error(conn, err.code(), err.to_string());
        }
    }

    /// A connection's session now runs on a new token (`refresh`): a later `resume` is
    /// held to that one.
    pub fn handle_token_refreshed(&mut self, conn: ConnId, token: TokenRef) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        state.token = token.clone();
        if self.node.is_some() && state.joined {
            self.outputs
                .push_back(Output::Cluster(ClusterCommand::Token {
                    conn,
                    room_id: state.identity.room_id.clone(),
                    user_id: state.identity.user_id.clone(),
                    token: token.clone(),
                }));
        }
        if let Some(session) = state
            .session
            .as_ref()
            .and_then(|id| self.sessions.get_mut(id))
        {
            session.token = token;
        }
    }

    /// A connection answered a ping (or sent anything that proves it is alive).
    pub fn handle_pong(&mut self, now: UnixMillis, conn: ConnId) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        state.last_seen = now;
        if state.joined {
            let (room_id, user) = (&state.identity.room_id, &state.identity.user_id);
            if let Some(member) = self.rooms.get_mut(room_id).and_then(|r| r.member_mut(user)) {
                member.info.last_heartbeat = now;
            }
        }
    }

    /// A connection closed on purpose; the others are told at once.
    pub fn handle_disconnect(&mut self, now: UnixMillis, conn: ConnId) {
        if let Some(pending) = self.resuming.get_mut(&conn) {
            pending.gone = true;
        }
        self.forget(now, conn, LeaveReason::Disconnected);
    }

    /// The server is going away: every connection is closed with 1001 and nobody is
    /// told that anybody left, since peers keep their peer-to-peer links without the
    /// server. Connections that authenticate afterwards are closed the same way, and
    /// later disconnects change nothing.
    pub fn handle_shutdown(&mut self, now: UnixMillis) {
        self.stopping = true;
        // A single node's rooms end with it (a cluster's live on in the store).
        if self.config.lifecycle_events && self.node.is_none() {
            let rooms: Vec<RoomId> = self.room_ids.iter().cloned().collect();
            for room_id in rooms {
                self.lifecycle(now, &room_id, || {
                    LifecycleKind::RoomClosed(RoomCloseReason::Shutdown)
                });
            }
        }
        let mut conns: Vec<ConnId> = self.conns.drain().map(|(conn, _)| conn).collect();
        conns.sort_unstable();
        for conn in conns {
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::GoingAway,
            });
        }
        self.rooms.clear();
        self.room_ids.clear();
        self.created_by.clear();
        self.sessions.clear();
        self.deadlines.clear();
        self.resuming.clear();
    }

    /// Runs the heartbeat and cleanup timers that are due; early calls do nothing.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        self.expire_sessions(now);
        if now >= self.next_heartbeat {
            self.next_heartbeat = now.saturating_add(millis(self.config.heartbeat_interval));
            self.heartbeat(now);
        }
        if now >= self.next_cleanup {
            self.next_cleanup = now.saturating_add(millis(self.config.cleanup_interval));
            self.cleanup(now);
        }
    }

    /// Applies the memory policy to a heap reading and returns the level it falls into.
    pub fn handle_memory(&mut self, now: UnixMillis, heap_bytes: u64) -> MemoryLevel {
        let level = MemoryLevel::classify(
            heap_bytes,
            self.config.memory_warning_bytes,
            self.config.memory_critical_bytes,
        );
        if level >= MemoryLevel::Warning {
            self.stats.memory_cleanups += 1;
            self.drop_silent_peers(now);
            self.cleanup(now);
        }
        if level == MemoryLevel::Critical {
            self.drop_idle(now);
        }
        level
    }

    // ---- D. Output -------------------------------------------------------------------

    /// The next effect to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- Internals -------------------------------------------------------------------

    fn send_error(&mut self, conn: ConnId, code: ErrorCode, message: impl Into<String>) {
        if self.speaks_ywebrtc(conn) {
            return;
        }
        self.outputs.push_back(Output::Send {
            to: conn,
            msg: ServerMessage::error(code, message),
        });
    }

    /// Whether `conn` is a `y-webrtc` connection, which is never sent native messages.
    fn speaks_ywebrtc(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.protocol == Protocol::YWebrtc)
    }

    /// A connection that authenticated cannot be in its room: tell it why and close it.
    fn refuse_auth(&mut self, now: UnixMillis, conn: ConnId, err: CoreError) {
        self.send_error(conn, err.code(), err.to_string());
        let code = match err {
            CoreError::Unavailable => CloseCode::TryAgainLater,
            _ => CloseCode::PolicyViolation,
        };
        self.close(now, conn, code);
    }

    fn check_room(&self, authorized: &RoomId, asked: Option<&RoomId>) -> Result<(), CoreError> {
        match asked {
            Some(asked) if asked != authorized => Err(CoreError::Forbidden),
            _ => Ok(()),
        }
    }

    fn rename(&mut self, conn: ConnId, user_name: Option<String>) {
        if let (Some(state), Some(name)) = (self.conns.get_mut(&conn), user_name)
            && !state.joined
        {
            state.user_name = name;
        }
    }
}

/// Which answer a joined connection gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// `auth-ok`, to `auth`.
    AuthOk,
    /// `room-joined`, to `create-room` and `join-room`.
    RoomJoined,
    /// `resumed`, to `resume`.
    Resumed,
}

impl Reply {
    fn of(kind: &JoinKind) -> Self {
        match kind {
            JoinKind::Auth => Self::AuthOk,
            JoinKind::Create { .. } | JoinKind::Join => Self::RoomJoined,
        }
    }
}
