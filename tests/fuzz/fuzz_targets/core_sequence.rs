//! Arbitrary bytes as a sequence of events on a `Core`, invariants checked after each.
//!
//! Input layout (every missing byte reads as 0), see `docs/fuzzing.md`:
//! 4 config bytes (peers per room, rooms, rooms per user, timings), then events, each an
//! opcode byte (modulo 15) and its argument bytes. Users come from `USERS`, rooms from
//! `ROOMS`, connections are `ConnId(0..CONNS)`; a connection byte with its high bit set
//! picks among the authenticated connections instead. `empty_room_grace` is always 0.
//!
//! Invariants, after every step: those of `octate_test::core_model` (shared with the core's
//! property tests: room structure, membership through live connections, routing inside
//! the sender's room, answers to the actor, nothing after a close), and:
//! - no empty room survives a cleanup (timer or memory reading), as the grace is 0;
//! - `poll_timeout` moves forward after each timer fires at its deadline.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use octate_core::{ConnId, Core, CoreConfig, Identity, NewRoom, Output};
use octate_protocol::{ClientMessage, DEFAULT_MAX_MESSAGE_BYTES};
use octate_test::core_model::{
    self, CONNS, Invariants, Members, ROOMS, SIGNALS, T0, USERS, rid, uid,
};

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

fn config(b: &mut Bytes<'_>) -> CoreConfig {
    let peers = 1 + b.pick(4);
    let rooms = 1 + b.pick(4);
    let per_user = 1 + b.pick(3);
    let t = b.byte();
    let pick = |bits: u8, options: &[u64]| options[usize::from(bits) % options.len()];
    CoreConfig {
        heartbeat_interval: Duration::from_secs(pick(t, &[30, 10])),
        peer_timeout: Duration::from_secs(pick(t >> 1, &[120, 300])),
        ywebrtc_peer_timeout: Duration::from_secs(45),
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
        resume_grace: Duration::from_secs(15),
        lifecycle_events: t & 0x80 != 0,
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

struct Model {
    core: Core,
    now: u64,
    cleanup_interval: u64,
    next_cleanup: u64,
    /// Identities and acknowledgements, and the invariants checked with them.
    known: Invariants,
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
            known: Invariants::new(),
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
        self.known.members(&self.core)
    }

    fn assert_no_empty_room(&self, when: &str) {
        core_model::assert_no_empty_room(&self.core, when);
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
                        let mate = self.known.identity(actor).and_then(|(user, room)| {
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
        let was_authenticated = core_model::authenticated(&self.core);
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
                    self.known.authenticated(conn, user, room);
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
        let out = std::mem::take(&mut self.out);
        self.known.check(
            &self.core,
            self.now,
            &out,
            &before,
            &was_authenticated,
            actor,
        );
        if cleanup {
            self.assert_no_empty_room("a memory cleanup with no grace");
        }
        true
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
