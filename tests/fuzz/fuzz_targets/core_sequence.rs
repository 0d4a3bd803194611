//! Arbitrary bytes as a sequence of events on a `Core`, invariants checked after each.
//!
//! Input layout (every missing byte reads as 0), see `docs/fuzzing.md`:
//! 4 config bytes (peers per room, rooms, rooms per user, timings), then events, each an
//! opcode byte (modulo 15) and its argument bytes. Users come from `USERS`, rooms from
//! `ROOMS`, connections are `ConnId(0..CONNS)`; a connection byte with its high bit set
//! picks among the authenticated connections instead. `empty_room_grace` is always 0.
//!
//! Invariants, after every step:
//! - every room: `peerCount == peers.len()`, at most `max_peers_per_room` peers, each user
//!   at most once, exactly one host when non-empty and it is a member and `hostId`,
//!   peers longest-connected first, timestamps ordered and not in the future;
//! - every member is reached through a live connection whose identity is that user in
//!   that room, and no connection is two members; `stats()` agrees with the rooms;
//! - a signal or update output comes from the acting connection's user, is addressed
//!   only to other members of that same room (as it was before the step), never to the
//!   sender, never to nobody; a signal goes to exactly one connection;
//! - errors and `auth-ok`/`room-joined` go only to the acting connection;
//! - nothing is sent to a connection after its close, none is closed twice, and a closed
//!   connection is forgotten;
//! - no empty room survives a cleanup (timer or memory reading), as the grace is 0;
//! - `poll_timeout` moves forward after each timer fires at its deadline.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use octate_core::{ConnId, Core, CoreConfig, Identity, NewRoom, Output};
use octate_protocol::{ClientMessage, DEFAULT_MAX_MESSAGE_BYTES, RoomId, ServerMessage, UserId};

const T0: u64 = 1_700_000_000_000;
const USERS: [&str; 4] = ["ann", "ben", "cat", "dan"];
const ROOMS: [&str; 3] = ["r0", "r1", "r2"];
const CONNS: u64 = 6;
const SIGNALS: [&str; 3] = ["sdp-offer", "sdp-answer", "ice-candidate"];
const MAX_STEPS: usize = 400;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn pick(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

fn uid(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

fn rid(s: &str) -> RoomId {
    RoomId::new(s).expect("valid room id")
}

fn config(b: &mut Bytes<'_>) -> CoreConfig {
    let peers = 1 + b.pick(4);
    let rooms = 1 + b.pick(4);
    let per_user = 1 + b.pick(3);
    let t = b.byte();
    let pick = |bits: u8, options: &[u64]| options[usize::from(bits) % options.len()];
    CoreConfig {
        heartbeat_interval: Duration::from_secs(pick(t, &[30, 10])),
        peer_timeout: Duration::from_secs(pick(t >> 1, &[120, 300])),
        cleanup_interval: Duration::from_secs(pick(t >> 2, &[30, 60, 90])),
        room_inactive_timeout: Duration::from_secs(pick(t >> 4, &[15 * 60, 3 * 3600])),
        room_idle_after: Duration::from_secs(pick(t >> 5, &[3 * 60, 10 * 60])),
        empty_room_grace: Duration::ZERO,
        idle_peer_after: Duration::from_secs(pick(t >> 6, &[60, 20])),
        max_peers_per_room: peers,
        max_rooms: rooms,
        max_rooms_per_user: per_user,
        memory_warning_bytes: 1_000,
        memory_critical_bytes: 2_000,
    }
}

fn duration(b: u8) -> u64 {
    match b % 8 {
        0 => 0,
        1 => 1,
        2 => 999,
        3 => 30_000,
        4 => 60_000,
        5 => 5 * 60_000 + 1,
        6 => 10 * 60_000,
        _ => u64::from(b) * 7_919,
    }
}

/// The actor a connection byte names: high bit set picks among the authenticated ones.
fn conn_of(core: &Core, b: u8) -> ConnId {
    if b & 0x80 != 0 {
        let alive: Vec<u64> = (0..CONNS)
            .filter(|c| core.is_authenticated(ConnId(*c)))
            .collect();
        if !alive.is_empty() {
            return ConnId(alive[usize::from(b & 0x7f) % alive.len()]);
        }
    }
    ConnId(u64::from(b) % CONNS)
}

type Members = HashMap<RoomId, Vec<(UserId, ConnId)>>;

struct Model {
    core: Core,
    now: u64,
    cleanup_interval: u64,
    next_cleanup: u64,
    /// Identity given to each connection that authenticated.
    identity: HashMap<ConnId, (UserId, RoomId)>,
    /// The connection each (room, user) was last answered `auth-ok`/`room-joined` on.
    acked: HashMap<(RoomId, UserId), ConnId>,
    out: Vec<Output>,
    nonce: u64,
}

impl Model {
    fn new(config: CoreConfig) -> Self {
        let cleanup_interval = u64::try_from(config.cleanup_interval.as_millis()).expect("fits");
        Self {
            core: Core::new(config, T0),
            now: T0,
            cleanup_interval,
            next_cleanup: T0 + cleanup_interval,
            identity: HashMap::new(),
            acked: HashMap::new(),
            out: Vec::new(),
            nonce: 0,
        }
    }

    fn pump(&mut self) {
        while let Some(o) = self.core.poll_output() {
            self.out.push(o);
        }
    }

    fn members(&self) -> Members {
        let mut members = Members::new();
        for room_id in self.core.room_ids() {
            let peers = self.core.peers(room_id).expect("listed room exists");
            let list = peers
                .into_iter()
                .map(|p| {
                    let conn = *self
                        .acked
                        .get(&(room_id.clone(), p.user_id.clone()))
                        .unwrap_or_else(|| panic!("{} in {room_id} never acknowledged", p.user_id));
                    (p.user_id, conn)
                })
                .collect();
            members.insert(room_id.clone(), list);
        }
        members
    }

    fn assert_no_empty_room(&self, when: &str) {
        for room_id in self.core.room_ids() {
            let room = self.core.room(room_id).expect("listed room exists");
            assert!(room.peer_count > 0, "empty room {room_id} survived {when}");
        }
    }

    /// Fires `handle_timeout` at `at`; checks the cleanup rule when the cleanup was due.
    fn timeout_at(&mut self, at: u64) {
        self.now = at;
        self.core.handle_timeout(at);
        self.pump();
        if at >= self.next_cleanup {
            self.next_cleanup = at.saturating_add(self.cleanup_interval);
            self.assert_no_empty_room("a cleanup with no grace");
        }
    }

    /// Advances the clock, firing every timer at its deadline.
    fn advance(&mut self, d: u64) {
        let target = self.now + d;
        loop {
            let due = self.core.poll_timeout();
            if due > target {
                break;
            }
            assert!(
                due >= self.now,
                "poll_timeout {due} in the past ({})",
                self.now
            );
            self.timeout_at(due);
            assert!(self.core.poll_timeout() > due, "deadline did not move");
        }
        self.timeout_at(target);
    }

    fn message_json(&mut self, b: &mut Bytes<'_>, actor: ConnId, before: &Members) -> Vec<u8> {
        self.nonce += 1;
        let nonce = self.nonce;
        let spoof = USERS[b.pick(USERS.len())];
        match b.pick(8) {
            0 => {
                let kind = SIGNALS[b.pick(SIGNALS.len())];
                let t = b.pick(6);
                let target = match t {
                    0..4 => USERS[t].to_owned(),
                    4 => {
                        // A room-mate of the sender, when it has one.
                        let mate = self.identity.get(&actor).and_then(|(user, room)| {
                            before
                                .get(room)
                                .and_then(|m| m.iter().map(|(u, _)| u).find(|u| *u != user))
                        });
                        mate.map_or_else(|| "ann".to_owned(), ToString::to_string)
                    }
                    _ => "stranger".to_owned(),
                };
                format!(
                    r#"{{"type":"{kind}","userId":"{spoof}","roomId":"r9","data":{{"peer":"{target}","sdp":"v=0 {nonce}"}}}}"#
                )
            }
            1 => format!(
                r#"{{"type":"cursor-update","userId":"{spoof}","data":{{"line":{nonce},"column":1}}}}"#
            ),
            2 => format!(
                r#"{{"type":"presence","userId":"{spoof}","data":{{"status":"away","n":{nonce}}}}}"#
            ),
            3 => match b.pick(4) {
                3 => r#"{"type":"join-room","data":{"userName":"renamed"}}"#.to_owned(),
                r => format!(r#"{{"type":"join-room","roomId":"{}"}}"#, ROOMS[r]),
            },
            4 => match b.pick(4) {
                3 => r#"{"type":"create-room","data":{"roomName":"made","fileId":"f"}}"#.to_owned(),
                r => format!(r#"{{"type":"create-room","roomId":"{}"}}"#, ROOMS[r]),
            },
            5 => r#"{"type":"leave-room"}"#.to_owned(),
            6 => [
                r#"{"type":"heartbeat"}"#,
                r#"{"type":"pong"}"#,
                r#"{"type":"auth","token":"t"}"#,
            ][b.pick(3)]
            .to_owned(),
            _ => {
                // Raw bytes from the input: whatever decodes is delivered.
                let len = b.pick(96);
                return b.take(len).to_vec();
            }
        }
        .into_bytes()
    }

    /// Runs one event; returns false when the input is used up.
    fn step(&mut self, b: &mut Bytes<'_>) -> bool {
        if b.0.is_empty() {
            return false;
        }
        let before = self.members();
        let was_authenticated: HashSet<ConnId> = (0..CONNS)
            .map(ConnId)
            .filter(|c| self.core.is_authenticated(*c))
            .collect();
        let mut actor = None;
        let mut cleanup = false;
        match b.pick(15) {
            0 => {
                let conn = conn_of(&self.core, b.byte());
                let (user, room) = (uid(USERS[b.pick(4)]), rid(ROOMS[b.pick(3)]));
                let name = match b.pick(3) {
                    0 => None,
                    1 => Some(format!("{user} the great")),
                    _ => Some(String::new()),
                };
                actor = Some(conn);
                let identity = Identity {
                    user_id: user.clone(),
                    room_id: room.clone(),
                };
                let fresh = !self.core.is_authenticated(conn);
                self.core
                    .handle_authenticated(self.now, conn, identity, name);
                if fresh && self.core.is_authenticated(conn) {
                    self.identity.insert(conn, (user, room));
                }
            }
            1..=7 => {
                let conn = conn_of(&self.core, b.byte());
                actor = Some(conn);
                let json = self.message_json(b, conn, &before);
                if let Ok(msg) = ClientMessage::decode(&json, DEFAULT_MAX_MESSAGE_BYTES) {
                    self.core.handle_message(self.now, conn, msg);
                }
            }
            8 => {
                let conn = conn_of(&self.core, b.byte());
                self.core.handle_pong(self.now, conn);
            }
            9 => {
                let conn = conn_of(&self.core, b.byte());
                self.core.handle_disconnect(self.now, conn);
                assert!(
                    !self.core.is_authenticated(conn),
                    "{conn} disconnected but remembered"
                );
            }
            10 => {
                let d = duration(b.byte());
                self.advance(d);
            }
            11 => {
                // A late driver: time jumps, then one timer call.
                let d = duration(b.byte()) * u64::from(1 + b.byte() % 4);
                self.timeout_at(self.now + d);
            }
            12 => {
                let level = b.pick(3);
                let bytes = [0, 1_000, 2_000][level];
                let got = self.core.handle_memory(self.now, bytes);
                assert_eq!(got as usize, level, "memory level");
                cleanup = level > 0;
            }
            13 => {
                let room_id = rid(ROOMS[b.pick(3)]);
                let host = uid(USERS[b.pick(4)]);
                let result = self.core.create_room(
                    self.now,
                    NewRoom {
                        room_id: room_id.clone(),
                        room_name: "http".into(),
                        host_id: host.clone(),
                        host_name: host.to_string(),
                        file_id: None,
                        version: Some(1),
                    },
                );
                if let Ok(meta) = result {
                    assert!(!before.contains_key(&room_id), "created an existing room");
                    assert_eq!(meta.peer_count, 0);
                }
            }
            _ => {
                let room_id = rid(ROOMS[b.pick(3)]);
                let existed = before.contains_key(&room_id);
                assert_eq!(self.core.delete_room(self.now, &room_id).is_ok(), existed);
                assert!(self.core.room(&room_id).is_none());
            }
        }
        self.pump();
        self.check(&before, &was_authenticated, actor);
        if cleanup {
            self.assert_no_empty_room("a memory cleanup with no grace");
        }
        true
    }

    fn check(
        &mut self,
        before: &Members,
        was_authenticated: &HashSet<ConnId>,
        actor: Option<ConnId>,
    ) {
        let out = std::mem::take(&mut self.out);
        let config = self.core.config().clone();

        for o in &out {
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
                ServerMessage::AuthOk { user_id, room }
                | ServerMessage::RoomJoined { user_id, room } => {
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
            assert!(!recipients.is_empty(), "{o:?}: nobody to send to");
            for to in &recipients {
                let (user, _) = members
                    .iter()
                    .find(|(_, c)| c == to)
                    .unwrap_or_else(|| panic!("{o:?}: {to} is not a member of {room}"));
                assert_ne!(user, from, "{o:?}: echoed to the sender");
            }
        }

        let mut closed = HashSet::new();
        for o in &out {
            match o {
                Output::Close { conn, .. } => {
                    assert!(closed.insert(*conn), "{conn} closed twice");
                    assert!(
                        was_authenticated.contains(conn) || Some(*conn) == actor,
                        "closing {conn}, which was never open"
                    );
                }
                Output::Send { to, .. } => assert!(!closed.contains(to), "{o:?} after a close"),
                Output::Broadcast { to, .. } | Output::Heartbeat { to } => {
                    assert!(!to.is_empty(), "{o:?}");
                    assert!(
                        to.iter().all(|c| !closed.contains(c)),
                        "{o:?} after a close"
                    );
                }
                Output::RoomRemoved { room_id, .. } => {
                    assert!(
                        self.core.room(room_id).is_none(),
                        "{room_id} removed but present"
                    );
                }
                // A single-node core never produces these.
                Output::Forward { .. } | Output::Cluster(_) => {}
            }
        }
        for conn in &closed {
            assert!(
                !self.core.is_authenticated(*conn),
                "{conn} closed but remembered"
            );
        }

        self.identity.retain(|c, _| self.core.is_authenticated(*c));
        let authenticated = (0..CONNS)
            .filter(|c| self.core.is_authenticated(ConnId(*c)))
            .count();
        assert_eq!(authenticated, self.identity.len());

        let mut total_peers = 0;
        let mut member_conns = HashSet::new();
        let room_ids: Vec<RoomId> = self.core.room_ids().cloned().collect();
        for room_id in &room_ids {
            let room = self.core.room(room_id).expect("listed room exists");
            assert_eq!(&room.room_id, room_id);
            assert_eq!(room.peer_count, room.peers.len(), "peerCount: {room:?}");
            assert!(
                room.peer_count <= config.max_peers_per_room,
                "over the limit: {room:?}"
            );
            assert!(room.created_at <= room.last_activity && room.last_activity <= self.now);
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
                assert!(p.connected_at <= p.last_heartbeat && p.last_heartbeat <= self.now);
                let conn = self.acked[&(room_id.clone(), p.user_id.clone())];
                assert!(
                    self.core.is_authenticated(conn),
                    "{} in {room_id} via a dead {conn}",
                    p.user_id
                );
                assert_eq!(self.identity[&conn], (p.user_id.clone(), room_id.clone()));
                assert!(member_conns.insert(conn), "{conn} is two members");
            }
        }
        let stats = self.core.stats();
        assert_eq!(stats.rooms, room_ids.len());
        assert!(stats.rooms <= config.max_rooms, "{} rooms", stats.rooms);
        assert_eq!(stats.peers, total_peers);
        assert_eq!(stats.connections, authenticated);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut model = Model::new(config(&mut b));
    for _ in 0..MAX_STEPS {
        if !model.step(&mut b) {
            break;
        }
    }
});
