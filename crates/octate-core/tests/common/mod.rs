//! Virtual-time harness for driving a [`Core`] in tests.
//!
//! The harness plays the driver: it owns the clock (Unix milliseconds), feeds inputs,
//! and drains every output into `out` after each call, as the drive contract asks.
//! `advance` steps through every timer deadline it crosses, so minutes and hours of
//! virtual time cost microseconds.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use octate_core::{ConnId, Core, CoreConfig, CoreError, Identity, MemoryLevel, NewRoom, Output};
use octate_protocol::{
    ClientMessage, CloseCode, DEFAULT_MAX_MESSAGE_BYTES, ErrorCode, RoomCloseReason, RoomId,
    RoomMetadata, ServerMessage, UserId,
};

/// The virtual clock starts here (a plausible Unix time in milliseconds).
pub const T0: u64 = 1_700_000_000_000;

/// A room id; panics on an invalid literal.
pub fn rid(s: &str) -> RoomId {
    RoomId::new(s).expect("valid room id in test")
}

/// A user id; panics on an invalid literal.
pub fn uid(s: &str) -> UserId {
    UserId::new(s).expect("valid user id in test")
}

/// Whole milliseconds of a duration.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("test durations fit in u64")
}

/// Seconds, as a duration.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Minutes, as a duration.
pub fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// Decodes a client message the way the transport does.
pub fn decode(json: &str) -> ClientMessage {
    ClientMessage::decode(json.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES)
        .unwrap_or_else(|e| panic!("test message {json} does not decode: {e}"))
}

/// Whether an output is addressed (as a message) to `conn`.
pub fn message_for(out: &Output, conn: ConnId) -> Option<&ServerMessage> {
    match out {
        Output::Send { to, msg } if *to == conn => Some(msg),
        Output::Broadcast { to, msg } if to.contains(&conn) => Some(msg),
        _ => None,
    }
}

/// A core driven in virtual time.
pub struct Harness {
    /// The state machine under test.
    pub core: Core,
    /// The virtual clock, Unix milliseconds.
    pub now: u64,
    /// Every output drained since the last [`Harness::drain`].
    pub out: Vec<Output>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A core with the default configuration, started at [`T0`].
    pub fn new() -> Self {
        Self::with_config(CoreConfig::default())
    }

    /// A core with `config`, started at [`T0`].
    pub fn with_config(config: CoreConfig) -> Self {
        Self {
            core: Core::new(config, T0),
            now: T0,
            out: Vec::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> CoreConfig {
        self.core.config().clone()
    }

    /// Pulls every pending output out of the core into `out`.
    fn pump(&mut self) {
        while let Some(o) = self.core.poll_output() {
            self.out.push(o);
        }
    }

    /// Takes everything collected so far (and anything still pending in the core).
    pub fn drain(&mut self) -> Vec<Output> {
        self.pump();
        std::mem::take(&mut self.out)
    }

    // ---- time ---------------------------------------------------------------------

    /// Moves the clock forward by `d`, firing every timer deadline on the way (at its
    /// exact time, as a punctual driver would), then calls `handle_timeout` at the end.
    pub fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + ms(d));
    }

    /// Like [`Harness::advance`], up to the absolute time `target`.
    pub fn advance_to(&mut self, target: u64) {
        assert!(target >= self.now, "time runs forward");
        loop {
            let due = self.core.poll_timeout();
            if due > target {
                break;
            }
            assert!(
                due >= self.now,
                "poll_timeout {due} is in the past (now {})",
                self.now
            );
            self.now = due;
            self.core.handle_timeout(due);
            self.pump();
            assert!(
                self.core.poll_timeout() > due,
                "handle_timeout at its deadline must move the deadline forward"
            );
        }
        self.now = target;
        self.core.handle_timeout(target);
        self.pump();
    }

    /// Moves the clock forward without firing any timer (a driver that is late).
    pub fn skip(&mut self, d: Duration) {
        self.now += ms(d);
    }

    /// Calls `handle_timeout` once at the current time.
    pub fn tick(&mut self) {
        self.core.handle_timeout(self.now);
        self.pump();
    }

    // ---- inputs -------------------------------------------------------------------

    /// Authenticates `conn` as `user` for `room` (the token verified upstream).
    pub fn auth(&mut self, conn: u64, user: &str, room: &str) {
        self.auth_named(conn, user, room, None);
    }

    /// Authenticates `conn` as `user` for `room` with a display name.
    pub fn auth_named(&mut self, conn: u64, user: &str, room: &str, name: Option<&str>) {
        let identity = Identity {
            user_id: uid(user),
            room_id: rid(room),
        };
        self.core
            .handle_authenticated(self.now, ConnId(conn), identity, name.map(str::to_owned));
        self.pump();
    }

    /// Sends a client message, given as wire JSON, from `conn`.
    pub fn send(&mut self, conn: u64, json: &str) {
        let msg = decode(json);
        self.core.handle_message(self.now, ConnId(conn), msg);
        self.pump();
    }

    /// A WebSocket pong (or other liveness proof) from `conn`.
    pub fn pong(&mut self, conn: u64) {
        self.core.handle_pong(self.now, ConnId(conn));
        self.pump();
    }

    /// `conn` closed or dropped.
    pub fn disconnect(&mut self, conn: u64) {
        self.core.handle_disconnect(self.now, ConnId(conn));
        self.pump();
    }

    /// A heap reading.
    pub fn memory(&mut self, heap_bytes: u64) -> MemoryLevel {
        let level = self.core.handle_memory(self.now, heap_bytes);
        self.pump();
        level
    }

    /// `POST /rooms`: an empty room hosted (to be) by `host`.
    pub fn create_room(&mut self, room: &str, host: &str) -> Result<RoomMetadata, CoreError> {
        let new = NewRoom {
            room_id: rid(room),
            room_name: format!("Room {room}"),
            host_id: uid(host),
            host_name: host.to_uppercase(),
            file_id: Some("file-1".into()),
            version: Some(7),
        };
        let result = self.core.create_room(self.now, new);
        self.pump();
        result
    }

    /// `DELETE /rooms/{room}`.
    pub fn delete_room(&mut self, room: &str) -> Result<(), CoreError> {
        let result = self.core.delete_room(self.now, &rid(room));
        self.pump();
        result
    }

    // ---- observations -------------------------------------------------------------

    /// The room's metadata, if it exists.
    pub fn room(&self, room: &str) -> Option<RoomMetadata> {
        self.core.room(&rid(room))
    }

    /// The room's metadata; panics if it does not exist.
    pub fn expect_room(&self, room: &str) -> RoomMetadata {
        self.room(room)
            .unwrap_or_else(|| panic!("room {room} should exist"))
    }

    /// User ids of a room's peers, in the core's order (longest connected first).
    pub fn peer_ids(&self, room: &str) -> Vec<String> {
        self.core
            .peers(&rid(room))
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.user_id.to_string())
            .collect()
    }

    /// Every message addressed to `conn` (directly or by broadcast), in order.
    pub fn sent_to(&self, conn: u64) -> Vec<ServerMessage> {
        self.out
            .iter()
            .filter_map(|o| message_for(o, ConnId(conn)))
            .cloned()
            .collect()
    }

    /// The wire `type` of every message addressed to `conn`, in order.
    pub fn kinds_to(&self, conn: u64) -> Vec<&'static str> {
        self.sent_to(conn).iter().map(ServerMessage::kind).collect()
    }

    /// Error codes sent to `conn`, in order.
    pub fn errors_to(&self, conn: u64) -> Vec<ErrorCode> {
        self.sent_to(conn)
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::Error { code, .. } => Some(code),
                _ => None,
            })
            .collect()
    }

    /// The close code of `conn`, if the core closed it.
    pub fn closed(&self, conn: u64) -> Option<CloseCode> {
        let mut codes = self.out.iter().filter_map(|o| match o {
            Output::Close { conn: c, code } if *c == ConnId(conn) => Some(*code),
            _ => None,
        });
        let first = codes.next();
        assert!(codes.next().is_none(), "conn {conn} closed twice");
        first
    }

    /// Recipients of each heartbeat, in order.
    pub fn heartbeats(&self) -> Vec<Vec<ConnId>> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Heartbeat { to } => Some(to.clone()),
                _ => None,
            })
            .collect()
    }

    /// Rooms removed, with why, in order.
    pub fn removed(&self) -> Vec<(RoomId, RoomCloseReason)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::RoomRemoved { room_id, reason } => Some((room_id.clone(), *reason)),
                _ => None,
            })
            .collect()
    }
}
