//! Random event sequences against the core, with its invariants checked after every step.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Harness, ms, rid, uid};
use octate_core::{ConnId, CoreConfig, CoreError, MemoryLevel, NewRoom, Output};
use octate_protocol::{CloseCode, ErrorCode, RoomId, ServerMessage, UserId};
use octate_test::core_model::{
    self, CONNS, Invariants, Members, ROOMS, SIGNALS, USERS, message_recipients,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Msg {
    /// With `mate`, `target` picks among the sender's room-mates (if any).
    Signal {
        kind: usize,
        target: usize,
        mate: bool,
        spoof: usize,
    },
    Update {
        cursor: bool,
        spoof: usize,
    },
    Join {
        room: Option<usize>,
    },
    Create {
        room: Option<usize>,
    },
    Leave,
    Heartbeat,
    Pong,
    Auth,
}

#[derive(Clone, Debug)]
enum Event {
    Auth {
        conn: u64,
        user: usize,
        room: usize,
        named: bool,
    },
    /// With `live`, `conn` picks among the authenticated connections (if any).
    Msg {
        conn: u64,
        live: bool,
        msg: Msg,
    },
    Pong {
        conn: u64,
        live: bool,
    },
    Disconnect {
        conn: u64,
        live: bool,
    },
    Advance {
        ms: u64,
    },
    Memory {
        level: usize,
    },
    CreateRoom {
        room: usize,
        host: usize,
    },
    DeleteRoom {
        room: usize,
    },
}

fn msg() -> impl Strategy<Value = Msg> {
    let user = 0..USERS.len();
    let room = prop::option::of(0..ROOMS.len());
    prop_oneof![
        5 => (0..SIGNALS.len(), user.clone(), prop::bool::weighted(0.7), user.clone())
            .prop_map(|(kind, target, mate, spoof)| Msg::Signal { kind, target, mate, spoof }),
        3 => (any::<bool>(), user).prop_map(|(cursor, spoof)| Msg::Update { cursor, spoof }),
        2 => room.clone().prop_map(|room| Msg::Join { room }),
        1 => room.prop_map(|room| Msg::Create { room }),
        2 => Just(Msg::Leave),
        1 => Just(Msg::Heartbeat),
        1 => Just(Msg::Pong),
        1 => Just(Msg::Auth),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let conn = 0..CONNS;
    prop_oneof![
        // Mostly one room, so that rooms have several peers to route between.
        6 => (conn.clone(), 0..USERS.len(), prop_oneof![2 => Just(0), 1 => 0..ROOMS.len()], any::<bool>())
            .prop_map(|(conn, user, room, named)| Event::Auth { conn, user, room, named }),
        10 => (conn.clone(), prop::bool::weighted(0.85), msg())
            .prop_map(|(conn, live, msg)| Event::Msg { conn, live, msg }),
        3 => (conn.clone(), prop::bool::weighted(0.85))
            .prop_map(|(conn, live)| Event::Pong { conn, live }),
        2 => (conn, any::<bool>()).prop_map(|(conn, live)| Event::Disconnect { conn, live }),
        3 => (0..=60_000u64).prop_map(|ms| Event::Advance { ms }),
        1 => (0..=600_000u64).prop_map(|ms| Event::Advance { ms }),
        1 => (0..3usize).prop_map(|level| Event::Memory { level }),
        1 => (0..ROOMS.len(), 0..USERS.len())
            .prop_map(|(room, host)| Event::CreateRoom { room, host }),
        1 => (0..ROOMS.len()).prop_map(|room| Event::DeleteRoom { room }),
    ]
}

fn config() -> impl Strategy<Value = CoreConfig> {
    (
        prop_oneof![1 => 1..=2usize, 3 => 3..=4usize],
        prop_oneof![1 => 1..=2usize, 3 => 3..=4usize],
        1..=3usize,
        prop::sample::select(vec![2u64, 5]),
        prop::sample::select(vec![3u64, 10]),
        prop::sample::select(vec![15u64, 180]),
        prop::sample::select(vec![30u64, 60, 90]),
    )
        .prop_map(
            |(peers, rooms, per_user, peer_timeout, idle, inactive, cleanup)| CoreConfig {
                heartbeat_interval: Duration::from_secs(30),
                peer_timeout: Duration::from_secs(peer_timeout * 60),
                ywebrtc_peer_timeout: Duration::from_secs(45),
                cleanup_interval: Duration::from_secs(cleanup),
                room_inactive_timeout: Duration::from_secs(inactive * 60),
                room_idle_after: Duration::from_secs(idle * 60),
                empty_room_grace: Duration::ZERO,
                idle_peer_after: Duration::from_secs(60),
                max_peers_per_room: peers,
                max_rooms: rooms,
                max_rooms_per_user: per_user,
                memory_warning_bytes: 1_000,
                memory_critical_bytes: 2_000,
                resume_grace: Duration::from_secs(15),
                lifecycle_events: false,
            },
        )
}

/// The wire JSON of a message; a signal goes to `target`.
fn encode(msg: &Msg, target: &str, nonce: usize) -> String {
    match msg {
        Msg::Signal { kind, spoof, .. } => format!(
            r#"{{"type":"{}","userId":"{}","data":{{"peer":"{target}","sdp":"v=0 {nonce}"}}}}"#,
            SIGNALS[*kind], USERS[*spoof]
        ),
        Msg::Update {
            cursor: true,
            spoof,
        } => format!(
            r#"{{"type":"cursor-update","userId":"{}","data":{{"line":{nonce},"column":1}}}}"#,
            USERS[*spoof]
        ),
        Msg::Update {
            cursor: false,
            spoof,
        } => format!(
            r#"{{"type":"presence","userId":"{}","data":{{"status":"away","n":{nonce}}}}}"#,
            USERS[*spoof]
        ),
        Msg::Join { room: None } => r#"{"type":"join-room"}"#.into(),
        Msg::Join { room: Some(r) } => {
            format!(r#"{{"type":"join-room","roomId":"{}"}}"#, ROOMS[*r])
        }
        Msg::Create { room: None } => r#"{"type":"create-room","data":{"roomName":"made"}}"#.into(),
        Msg::Create { room: Some(r) } => {
            format!(r#"{{"type":"create-room","roomId":"{}"}}"#, ROOMS[*r])
        }
        Msg::Leave => r#"{"type":"leave-room"}"#.into(),
        Msg::Heartbeat => r#"{"type":"heartbeat"}"#.into(),
        Msg::Pong => r#"{"type":"pong"}"#.into(),
        Msg::Auth => r#"{"type":"auth","token":"t"}"#.into(),
    }
}

/// The core in its harness, and what the test knows besides the core's public getters.
struct Model {
    h: Harness,
    /// Identities and acknowledgements, and the invariants checked with them.
    known: Invariants,
    /// When the cleanup timer is next due (the harness fires timers exactly on time).
    next_cleanup: u64,
    nonce: usize,
}

impl Model {
    fn new(config: CoreConfig) -> Self {
        let h = Harness::with_config(config);
        let next_cleanup = h.now + ms(h.config().cleanup_interval);
        Self {
            h,
            known: Invariants::new(),
            next_cleanup,
            nonce: 0,
        }
    }

    fn members(&self) -> Members {
        self.known.members(&self.h.core)
    }

    fn assert_no_empty_room(&self, when: &str) {
        core_model::assert_no_empty_room(&self.h.core, when);
    }

    /// Advances time timer by timer, checking the cleanup rule after each cleanup.
    fn advance(&mut self, d: u64) {
        let target = self.h.now + d;
        loop {
            let due = self.h.core.poll_timeout();
            if due > target {
                break;
            }
            assert!(due >= self.h.now);
            self.h.now = due;
            self.h.tick();
            if due >= self.next_cleanup {
                self.next_cleanup = due + ms(self.h.config().cleanup_interval);
                self.assert_no_empty_room("a cleanup with no grace");
            }
            assert!(self.h.core.poll_timeout() > due, "deadline did not move");
        }
        self.h.now = target;
        self.h.tick();
    }

    /// The connection an event acts on: with `live`, one of the authenticated ones.
    fn pick(&self, conn: u64, live: bool) -> u64 {
        let mut alive: Vec<u64> = (0..CONNS)
            .filter(|c| self.h.core.is_authenticated(ConnId(*c)))
            .collect();
        alive.sort_unstable();
        match alive.len() {
            0 => conn,
            n if live => alive[usize::try_from(conn).unwrap() % n],
            _ => conn,
        }
    }

    fn step(&mut self, event: &Event) {
        let before = self.members();
        let member_conn = |room: &RoomId, user: &UserId| {
            before
                .get(room)
                .and_then(|m| m.iter().find(|(u, _)| u == user))
                .map(|(_, c)| *c)
        };
        let was_authenticated = core_model::authenticated(&self.h.core);
        let rooms_before = before.len();
        self.nonce += 1;
        let mut actor = None;

        match event {
            Event::Auth {
                conn,
                user,
                room,
                named,
            } => {
                actor = Some(ConnId(*conn));
                let name = named.then(|| format!("{} the great", USERS[*user]));
                self.h
                    .auth_named(*conn, USERS[*user], ROOMS[*room], name.as_deref());
                let c = ConnId(*conn);
                if was_authenticated.contains(&c) {
                    assert_eq!(self.h.errors_to(*conn), [ErrorCode::AlreadyAuthenticated]);
                } else if self.h.core.is_authenticated(c) {
                    self.known
                        .authenticated(c, uid(USERS[*user]), rid(ROOMS[*room]));
                    assert_eq!(self.h.kinds_to(*conn), ["auth-ok"]);
                } else {
                    // Refused: an error, then a close.
                    let errors = self.h.errors_to(*conn);
                    assert_eq!(errors.len(), 1, "{:?}", self.h.out);
                    assert!(
                        matches!(
                            errors[0],
                            ErrorCode::RoomFull
                                | ErrorCode::TooManyRooms
                                | ErrorCode::TooManyRoomsForUser
                        ),
                        "{errors:?}"
                    );
                    assert!(self.h.closed(*conn).is_some());
                }
            }
            Event::Msg { conn, live, msg } => {
                let conn = &self.pick(*conn, *live);
                let c = ConnId(*conn);
                actor = Some(c);
                let identity = self.known.identity(c).cloned();
                let target = match msg {
                    Msg::Signal { target, mate, .. } => {
                        let mates: Vec<&UserId> = identity
                            .as_ref()
                            .and_then(|(user, room)| {
                                before.get(room).map(|m| {
                                    m.iter().map(|(u, _)| u).filter(|u| *u != user).collect()
                                })
                            })
                            .unwrap_or_default();
                        if *mate && !mates.is_empty() {
                            mates[*target % mates.len()].to_string()
                        } else {
                            USERS[*target].to_string()
                        }
                    }
                    _ => String::new(),
                };
                let json = encode(msg, &target, self.nonce);
                self.h.send(*conn, &json);
                let Some((user, room)) = identity else {
                    assert_eq!(self.h.errors_to(*conn), [ErrorCode::NotAuthenticated]);
                    assert_eq!(self.h.out.len(), 1);
                    return self.check_after(&before, &was_authenticated, actor);
                };
                let joined = member_conn(&room, &user) == Some(c);
                match msg {
                    Msg::Signal { .. } => {
                        let target = uid(&target);
                        let target_conn = member_conn(&room, &target).filter(|_| target != user);
                        let signals: Vec<_> = self
                            .h
                            .out
                            .iter()
                            .filter(|o| {
                                matches!(
                                    o,
                                    Output::Send {
                                        msg: ServerMessage::Signal { .. },
                                        ..
                                    }
                                )
                            })
                            .collect();
                        match (joined, target_conn) {
                            (true, Some(to)) => {
                                assert_eq!(signals.len(), 1, "{:?}", self.h.out);
                                assert!(
                                    matches!(signals[0], Output::Send { to: t, .. } if *t == to),
                                    "{signals:?}"
                                );
                                assert!(self.h.errors_to(*conn).is_empty());
                            }
                            (false, _) => {
                                assert!(signals.is_empty());
                                assert_eq!(self.h.errors_to(*conn), [ErrorCode::NotInRoom]);
                            }
                            (true, None) => {
                                assert!(signals.is_empty());
                                assert_eq!(self.h.errors_to(*conn), [ErrorCode::PeerNotFound]);
                            }
                        }
                    }
                    Msg::Update { .. } => {
                        if joined {
                            let mut expected: Vec<ConnId> = before[&room]
                                .iter()
                                .filter(|(u, _)| *u != user)
                                .map(|(_, c)| *c)
                                .collect();
                            expected.sort();
                            let mut got: Vec<ConnId> = self
                                .h
                                .out
                                .iter()
                                .flat_map(|o| match o {
                                    Output::Broadcast {
                                        to,
                                        msg: ServerMessage::Update { .. },
                                    } => to.clone(),
                                    _ => Vec::new(),
                                })
                                .collect();
                            got.sort();
                            assert_eq!(got, expected);
                        } else {
                            assert_eq!(self.h.errors_to(*conn), [ErrorCode::NotInRoom]);
                            assert_eq!(self.h.out.len(), 1);
                        }
                    }
                    Msg::Leave => {
                        if joined {
                            assert_eq!(self.h.kinds_to(*conn), ["room-left"]);
                            assert!(!self.h.peer_ids(room.as_str()).contains(&user.to_string()));
                        } else {
                            assert_eq!(self.h.errors_to(*conn), [ErrorCode::NotInRoom]);
                        }
                    }
                    Msg::Join { room: asked } | Msg::Create { room: asked } => {
                        let forbidden = asked.is_some_and(|r| rid(ROOMS[r]) != room);
                        if forbidden {
                            assert_eq!(self.h.errors_to(*conn), [ErrorCode::Forbidden]);
                            assert_eq!(self.h.out.len(), 1);
                        }
                        let joined_now = self.h.kinds_to(*conn) == ["room-joined"];
                        if let Msg::Create { .. } = msg
                            && before.contains_key(&room)
                        {
                            assert!(!joined_now, "create-room joined an existing room");
                        }
                        if joined_now {
                            assert!(self.h.peer_ids(room.as_str()).contains(&user.to_string()));
                        }
                    }
                    Msg::Heartbeat | Msg::Pong => assert!(self.h.out.is_empty()),
                    Msg::Auth => {
                        assert_eq!(self.h.errors_to(*conn), [ErrorCode::AlreadyAuthenticated]);
                    }
                }
            }
            Event::Pong { conn, live } => {
                self.h.pong(self.pick(*conn, *live));
                assert!(self.h.out.is_empty());
            }
            Event::Disconnect { conn, live } => {
                let conn = &self.pick(*conn, *live);
                let c = ConnId(*conn);
                self.h.disconnect(*conn);
                assert!(!self.h.core.is_authenticated(c));
                assert!(
                    self.h
                        .out
                        .iter()
                        .all(|o| message_recipients(o).all(|r| r != c))
                );
                if let Some((user, room)) = self.known.identity(c)
                    && member_conn(room, user) == Some(c)
                {
                    assert!(!self.h.peer_ids(room.as_str()).contains(&user.to_string()));
                }
            }
            Event::Advance { ms } => self.advance(*ms),
            Event::Memory { level } => {
                let config = self.h.config();
                let bytes = [0, config.memory_warning_bytes, config.memory_critical_bytes][*level];
                let expected = [
                    MemoryLevel::Normal,
                    MemoryLevel::Warning,
                    MemoryLevel::Critical,
                ];
                assert_eq!(self.h.memory(bytes), expected[*level]);
                if *level == 0 {
                    assert!(self.h.out.is_empty());
                } else {
                    self.assert_no_empty_room("a memory cleanup with no grace");
                }
            }
            Event::CreateRoom { room, host } => {
                let room_id = rid(ROOMS[*room]);
                let result = self.h.core.create_room(
                    self.h.now,
                    NewRoom {
                        room_id: room_id.clone(),
                        room_name: "http".into(),
                        host_id: uid(USERS[*host]),
                        host_name: USERS[*host].into(),
                        file_id: None,
                        version: None,
                    },
                );
                match result {
                    Ok(meta) => {
                        assert!(!before.contains_key(&room_id));
                        assert_eq!(meta.peer_count, 0);
                        assert_eq!(self.h.core.room(&room_id).unwrap(), meta);
                    }
                    Err(CoreError::RoomExists) => assert!(before.contains_key(&room_id)),
                    Err(CoreError::TooManyRooms) => {
                        assert!(rooms_before >= self.h.config().max_rooms);
                    }
                    Err(CoreError::TooManyRoomsForUser) => {}
                    Err(other) => panic!("create_room: {other:?}"),
                }
                assert!(self.h.drain().is_empty());
            }
            Event::DeleteRoom { room } => {
                let room_id = rid(ROOMS[*room]);
                let result = self.h.delete_room(ROOMS[*room]);
                assert_eq!(result.is_ok(), before.contains_key(&room_id));
                assert!(self.h.core.room(&room_id).is_none());
                for (_, conn) in before.get(&room_id).into_iter().flatten() {
                    assert_eq!(self.h.closed(conn.0), Some(CloseCode::RoomClosed));
                }
            }
        }
        self.check_after(&before, &was_authenticated, actor);
    }

    fn check_after(
        &mut self,
        before: &Members,
        was_authenticated: &HashSet<ConnId>,
        actor: Option<ConnId>,
    ) {
        let out = self.h.drain();
        let mut ids: Vec<RoomId> = self.h.core.room_ids().cloned().collect();
        ids.sort_unstable();
        let listed: Vec<RoomId> = (self.h.core.rooms_page(None, None, usize::MAX).into_iter())
            .map(|r| r.room_id)
            .collect();
        assert_eq!(listed, ids, "the room list is every room, in order");
        self.known.check(
            &self.h.core,
            self.h.now,
            &out,
            before,
            was_authenticated,
            actor,
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_step(
        config in config(),
        events in prop::collection::vec(event(), 1..60),
    ) {
        let mut model = Model::new(config);
        for event in &events {
            model.step(event);
        }
    }
}

/// The invariant checks must be able to fail: a forged signal is caught.
#[test]
#[should_panic(expected = "was not a member")]
fn the_routing_check_catches_a_signal_to_a_stranger() {
    let mut model = Model::new(CoreConfig::default());
    model.step(&Event::Auth {
        conn: 0,
        user: 0,
        room: 0,
        named: false,
    });
    model.step(&Event::Auth {
        conn: 1,
        user: 1,
        room: 0,
        named: false,
    });
    let before = model.members();
    let was = (0..2).map(ConnId).collect();
    model.h.out.push(Output::Send {
        to: ConnId(5),
        msg: ServerMessage::Signal {
            kind: octate_protocol::SignalKind::Offer,
            from: uid("ann"),
            room_id: rid("r0"),
            data: octate_protocol::RawJson::from_string("{}".into()).unwrap(),
        },
    });
    model.check_after(&before, &was, Some(ConnId(0)));
}

#[test]
fn a_long_idle_sequence_stays_consistent() {
    // A fixed scenario through every kind of event, as a smoke test of the model itself.
    let mut model = Model::new(CoreConfig {
        empty_room_grace: Duration::ZERO,
        ..CoreConfig::default()
    });
    let events = [
        Event::CreateRoom { room: 2, host: 3 },
        Event::Auth {
            conn: 0,
            user: 0,
            room: 0,
            named: true,
        },
        Event::Auth {
            conn: 1,
            user: 1,
            room: 0,
            named: false,
        },
        Event::Auth {
            conn: 2,
            user: 0,
            room: 0,
            named: false,
        },
        Event::Msg {
            conn: 1,
            live: false,
            msg: Msg::Signal {
                kind: 0,
                target: 0,
                mate: false,
                spoof: 2,
            },
        },
        Event::Msg {
            conn: 2,
            live: false,
            msg: Msg::Update {
                cursor: true,
                spoof: 1,
            },
        },
        Event::Msg {
            conn: 1,
            live: false,
            msg: Msg::Leave,
        },
        Event::Msg {
            conn: 1,
            live: false,
            msg: Msg::Join { room: None },
        },
        Event::Advance { ms: 600_000 },
        Event::Memory { level: 2 },
        Event::DeleteRoom { room: 0 },
    ];
    for e in &events {
        model.step(e);
    }
    assert!(
        model.h.core.room(&rid("r2")).is_none(),
        "empty room removed at the first cleanup"
    );
    assert_eq!(model.h.core.stats().rooms, 0);
}
