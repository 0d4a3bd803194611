//! The invariants a [`Core`] keeps after every step, checked from the outside: what the
//! property tests (`crates/octate-core/tests/properties.rs`) and the `core_sequence` fuzz
//! target assert after each event they feed.
//!
//! The checker ([`Invariants`]) knows only what a driver can see: the identity each
//! connection was authenticated with, the `auth-ok` / `room-joined` answers, the outputs
//! of the step, and the core's public getters. After every step:
//! - every room: `peerCount == peers.len()`, at most `max_peers_per_room` peers, each user
//!   at most once, exactly one host when non-empty and it is a member named as the room's
//!   host, peers longest-connected first, timestamps ordered and not in the future;
//! - every member is reached through a live connection whose identity is that user in that
//!   room, and no connection is two members; `stats()` agrees with the rooms;
//! - a signal or update comes from the acting connection's user, goes only to other
//!   members of that same room (as it was before the step), never to the sender, never to
//!   nobody; a signal goes to exactly one connection;
//! - errors and `auth-ok` / `room-joined` go only to the acting connection;
//! - nothing is sent to a connection after its close, none is closed twice, a closed
//!   connection was open and is forgotten; a removed room is gone.

use std::collections::{HashMap, HashSet};

use octate_core::{ConnId, Core, Output};
use octate_protocol::{RoomId, ServerMessage, UserId};

/// The virtual clock's start (a plausible Unix time in milliseconds).
pub const T0: u64 = 1_700_000_000_000;
/// The users a model picks from.
pub const USERS: [&str; 4] = ["ann", "ben", "cat", "dan"];
/// The rooms a model picks from.
pub const ROOMS: [&str; 3] = ["r0", "r1", "r2"];
/// Connections are `ConnId(0..CONNS)`.
pub const CONNS: u64 = 6;
/// The signal message types.
pub const SIGNALS: [&str; 3] = ["sdp-offer", "sdp-answer", "ice-candidate"];

/// Who is in which room, and through which connection.
pub type Members = HashMap<RoomId, Vec<(UserId, ConnId)>>;

/// A user id; panics on an invalid literal.
pub fn uid(s: &str) -> UserId {
    UserId::new(s).expect("valid user id in a model")
}

/// A room id; panics on an invalid literal.
pub fn rid(s: &str) -> RoomId {
    RoomId::new(s).expect("valid room id in a model")
}

/// The model's connections that are authenticated now.
pub fn authenticated(core: &Core) -> HashSet<ConnId> {
    (0..CONNS)
        .map(ConnId)
        .filter(|c| core.is_authenticated(*c))
        .collect()
}

/// Asserts no room is empty (after a cleanup with no grace); `when` names the cleanup.
pub fn assert_no_empty_room(core: &Core, when: &str) {
    for room_id in core.room_ids() {
        let room = core.room(room_id).expect("a listed room exists");
        assert!(room.peer_count > 0, "empty room {room_id} survived {when}");
    }
}

/// The connections a message output is addressed to (none for a close or a room removal).
pub fn message_recipients(o: &Output) -> impl Iterator<Item = ConnId> + '_ {
    let to: &[ConnId] = match o {
        Output::Send { to, .. } => std::slice::from_ref(to),
        Output::Broadcast { to, .. } | Output::Heartbeat { to } | Output::Forward { to, .. } => to,
        Output::Close { .. }
        | Output::RoomRemoved { .. }
        | Output::Cluster(_)
        | Output::Resumed { .. }
        | Output::Lifecycle(_) => &[],
    };
    to.iter().copied()
}

/// What a driver knows about a core besides its public getters, and the checks made with it.
#[derive(Debug, Default)]
pub struct Invariants {
    /// The identity each live authenticated connection was given.
    identity: HashMap<ConnId, (UserId, RoomId)>,
    /// The connection each (room, user) was last acknowledged on (`auth-ok` / `room-joined`).
    acked: HashMap<(RoomId, UserId), ConnId>,
}

impl Invariants {
    /// Nothing known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `conn` was just authenticated as `user` in `room`.
    pub fn authenticated(&mut self, conn: ConnId, user: UserId, room: RoomId) {
        self.identity.insert(conn, (user, room));
    }

    /// The identity `conn` was authenticated with, while it is open.
    pub fn identity(&self, conn: ConnId) -> Option<&(UserId, RoomId)> {
        self.identity.get(&conn)
    }

    /// Every room's members and their connections; panics on a member never acknowledged.
    pub fn members(&self, core: &Core) -> Members {
        let mut members = Members::new();
        for room_id in core.room_ids() {
            let peers = core.peers(room_id).expect("a listed room exists");
            let list = peers
                .into_iter()
                .map(|p| {
                    let conn = *self
                        .acked
                        .get(&(room_id.clone(), p.user_id.clone()))
                        .unwrap_or_else(|| {
                            panic!("{} in {room_id} was never acknowledged", p.user_id)
                        });
                    (p.user_id, conn)
                })
                .collect();
            members.insert(room_id.clone(), list);
        }
        members
    }

    /// Checks one step's outputs `out` and the core's state at `now` against the rules in
    /// the module docs. `before` and `was_authenticated` are taken before the step;
    /// `actor` is the connection the step acted for, if any.
    pub fn check(
        &mut self,
        core: &Core,
        now: u64,
        out: &[Output],
        before: &Members,
        was_authenticated: &HashSet<ConnId>,
        actor: Option<ConnId>,
    ) {
        self.check_messages(out, before, actor);
        self.check_closes(core, out, was_authenticated, actor);
        self.check_rooms(core, now);
    }

    /// Signals and updates stay inside the sender's room; answers go to the actor.
    fn check_messages(&mut self, out: &[Output], before: &Members, actor: Option<ConnId>) {
        for o in out {
            let (msg, recipients): (&ServerMessage, Vec<ConnId>) = match o {
                Output::Send { to, msg } => (msg, vec![*to]),
                Output::Broadcast { to, msg } => (msg, to.clone()),
                _ => continue,
            };
            let (from, room) = match msg {
                ServerMessage::Signal { from, room_id, .. } => {
                    assert!(
                        matches!(o, Output::Send { .. }),
                        "{o:?}: a signal goes to one peer"
                    );
                    (from, room_id)
                }
                ServerMessage::Update { from, room_id, .. } => (from, room_id),
                ServerMessage::Error { .. } => {
                    assert_eq!(
                        recipients,
                        [actor.expect("errors answer an actor")],
                        "{o:?}"
                    );
                    continue;
                }
                ServerMessage::AuthOk { user_id, room, .. }
                | ServerMessage::RoomJoined { user_id, room, .. } => {
                    assert_eq!(recipients, [actor.expect("joins answer an actor")], "{o:?}");
                    assert_eq!(
                        self.identity.get(&recipients[0]),
                        Some(&(user_id.clone(), room.room_id.clone())),
                        "{o:?}: answered on a connection of another identity"
                    );
                    assert!(room.peers.iter().any(|p| &p.user_id == user_id), "{o:?}");
                    self.acked
                        .insert((room.room_id.clone(), user_id.clone()), recipients[0]);
                    continue;
                }
                _ => continue,
            };
            let members = before
                .get(room)
                .unwrap_or_else(|| panic!("{o:?}: room did not exist"));
            let sender = members
                .iter()
                .find(|(u, _)| u == from)
                .unwrap_or_else(|| panic!("{o:?}: {from} was not in {room}"));
            assert_eq!(
                Some(sender.1),
                actor,
                "{o:?}: stamped with someone else's id"
            );
            for to in &recipients {
                let (user, _) = members
                    .iter()
                    .find(|(_, c)| c == to)
                    .unwrap_or_else(|| panic!("{o:?}: {to} was not a member of {room}"));
                assert_ne!(user, from, "{o:?}: echoed to the sender");
            }
            assert!(!recipients.is_empty(), "{o:?}: nobody to send to");
        }
    }

    /// A closed connection was open, hears nothing more and is forgotten.
    fn check_closes(
        &mut self,
        core: &Core,
        out: &[Output],
        was_authenticated: &HashSet<ConnId>,
        actor: Option<ConnId>,
    ) {
        let mut closed = HashSet::new();
        for o in out {
            match o {
                Output::Close { conn, code } => {
                    assert!(closed.insert(*conn), "{conn} closed twice");
                    assert!(
                        was_authenticated.contains(conn) || Some(*conn) == actor,
                        "closing {conn} ({code:?}), which was never open"
                    );
                }
                Output::Heartbeat { to } => {
                    assert!(!to.is_empty(), "{o:?}");
                    assert!(to.windows(2).all(|w| w[0] < w[1]), "{to:?}");
                    assert!(
                        to.iter().all(|c| !closed.contains(c)),
                        "{o:?} after a close"
                    );
                }
                Output::RoomRemoved { room_id, .. } => {
                    assert!(
                        core.room(room_id).is_none(),
                        "{room_id} removed but present"
                    );
                }
                _ => {
                    for c in message_recipients(o) {
                        assert!(!closed.contains(&c), "{o:?} to {c} after its close");
                    }
                }
            }
        }
        for conn in &closed {
            assert!(
                !core.is_authenticated(*conn),
                "{conn} closed but remembered"
            );
        }
        self.identity.retain(|c, _| core.is_authenticated(*c));
        let authenticated = authenticated(core).len();
        assert_eq!(authenticated, self.identity.len());
    }

    /// Room structure, membership through live connections, and `stats()`.
    fn check_rooms(&self, core: &Core, now: u64) {
        let config = core.config();
        let mut total_peers = 0;
        let mut member_conns = HashSet::new();
        let room_ids: Vec<RoomId> = core.room_ids().cloned().collect();
        for room_id in &room_ids {
            let room = core.room(room_id).expect("a listed room exists");
            assert_eq!(&room.room_id, room_id);
            assert_eq!(room.peer_count, room.peers.len(), "peerCount: {room:?}");
            assert!(
                room.peer_count <= config.max_peers_per_room,
                "over the limit: {room:?}"
            );
            assert!(room.created_at <= room.last_activity && room.last_activity <= now);
            total_peers += room.peer_count;
            let users: HashSet<_> = room.peers.iter().map(|p| &p.user_id).collect();
            assert_eq!(users.len(), room.peers.len(), "a user twice in {room:?}");
            if !room.peers.is_empty() {
                let hosts: Vec<_> = room.peers.iter().filter(|p| p.is_host).collect();
                assert_eq!(hosts.len(), 1, "hosts of {room:?}");
                assert_eq!(
                    hosts[0].user_id, room.host_id,
                    "host is not a member: {room:?}"
                );
                assert_eq!(hosts[0].user_name, room.host_name, "{room:?}");
            }
            assert!(
                room.peers
                    .windows(2)
                    .all(|w| w[0].connected_at <= w[1].connected_at),
                "not longest-connected first: {room:?}"
            );
            for p in &room.peers {
                assert!(p.connected_at <= p.last_heartbeat && p.last_heartbeat <= now);
                let conn = self.acked[&(room_id.clone(), p.user_id.clone())];
                assert!(
                    core.is_authenticated(conn),
                    "{} in {room_id} via a dead {conn}",
                    p.user_id
                );
                assert_eq!(self.identity[&conn], (p.user_id.clone(), room_id.clone()));
                assert!(member_conns.insert(conn), "{conn} is two members");
            }
        }
        let stats = core.stats();
        assert_eq!(stats.rooms, room_ids.len());
        assert!(stats.rooms <= config.max_rooms, "{} rooms", stats.rooms);
        assert_eq!(stats.peers, total_peers);
        assert_eq!(stats.connections, authenticated(core).len());
    }
}
