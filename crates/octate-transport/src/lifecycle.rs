//! The life of one WebSocket session, as a state machine without sockets or clock reads.
//!
//! After the handshake a session is *authenticating* (until the auth deadline), then
//! *live*, then *closing* (until the close deadline), then *closed*:
//!
//! ```text
//! Authenticating ──auth──▶ Live
//!       │                   │
//!       └──close/timeout────┴──▶ Closing ──close written and peer's close seen,
//!                                   │       socket ended, or close deadline──▶ Closed
//!       (socket ended) ─────────────┴──────────────────────────────────────▶ Closed
//! ```
//!
//! The session loop (`crate::session`) feeds it [`Input`]s and asks it what to wait
//! for: [`Lifecycle::deadline`], whether to read ([`Lifecycle::reads`]) and whether
//! frames still go to the core ([`Lifecycle::is_open`]). Every way a session ends is
//! an [`Exit`], and every way its socket goes is a [`Finish`].
//!
//! While closing, the socket is read only once the close frame is written, for the
//! client's answer, and only so far: a client that keeps sending is dropped.

use std::time::Duration;

use octate_protocol::CloseCode;
use tokio::time::Instant;

/// Why a session stopped being open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The session refused the client with this close code (bad frames, failed or late
    /// authentication, rate limit).
    Refused(CloseCode),
    /// The core closed it: replaced, heartbeat timeout, memory policy, room closed,
    /// shutdown.
    ClosedByCore,
    /// The server is shutting down (1001).
    Shutdown,
    /// Its outbound queue overflowed: the client does not read (4008).
    SlowConsumer,
    /// The client sent a close frame.
    PeerClosed,
    /// The socket ended or failed while the session was open.
    Dropped,
}

/// How the socket of a session went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Both close frames crossed: the close handshake completed.
    Handshake,
    /// The socket ended or failed (no close handshake, or not all of it).
    SocketEnded,
    /// The close grace ran out: the socket was dropped with the handshake unfinished.
    GraceExpired,
    /// The client kept sending after the close frame, past the closing read limit.
    KeptSending,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Upgraded; the client must authenticate before `deadline`.
    Authenticating {
        /// When the client is refused with 4002.
        deadline: Instant,
    },
    /// Authenticated: its messages go to the core.
    Live,
    /// A close frame is queued; the socket is dropped at `deadline` at the latest.
    Closing {
        /// Why the session ended.
        exit: Exit,
        /// When the socket is dropped whatever is left unsent or unanswered.
        deadline: Instant,
        /// Whether our close frame is completely written.
        close_written: bool,
        /// Whether the client's close frame arrived.
        peer_closed: bool,
        /// Bytes the client may still send before its close frame.
        read_allowance: usize,
    },
    /// Over: the socket is dropped.
    Closed {
        /// Why the session ended.
        exit: Exit,
        /// How the socket went.
        finish: Finish,
    },
}

/// Something that happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// The client proved who it is.
    Authenticated,
    /// A close frame for the client is queued, for this reason.
    Close {
        /// Why.
        exit: Exit,
        /// When it was queued.
        now: Instant,
    },
    /// The client's close frame arrived (while open, its echo is queued).
    PeerClose {
        /// When it arrived.
        now: Instant,
    },
    /// The close frame for the client is completely written.
    CloseWritten,
    /// The socket reached end of file or failed.
    SocketEnded,
    /// This many bytes were read while closing.
    ReadWhileClosing(usize),
    /// A deadline may have passed: it is `now`.
    Tick(Instant),
}

/// What the session must do after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing.
    None,
    /// The connection stopped being open: forget it in the registry and the core.
    Leave,
    /// The client did not authenticate in time: send it `not-authenticated` and close
    /// 4002, then forget it.
    RefuseLateAuth,
}

/// How long a session may authenticate and close, and how much it may send while closing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Time from the handshake to the `auth` message.
    pub(crate) auth_timeout: Duration,
    /// Time from queueing a close frame to dropping the socket.
    pub(crate) close_grace: Duration,
    /// Bytes read while closing before the client's close frame.
    pub(crate) closing_read_limit: usize,
}

/// One session's phase and the limits its deadlines are made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifecycle {
    phase: Phase,
    limits: Limits,
}

impl Lifecycle {
    /// A session whose handshake completed at `now`.
    pub(crate) fn new(now: Instant, limits: Limits) -> Self {
        Self {
            phase: Phase::Authenticating {
                deadline: now + limits.auth_timeout,
            },
            limits,
        }
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether frames still go to the core (authenticating or live).
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Authenticating { .. } | Phase::Live)
    }

    /// How the session ended, once it is closing or closed.
    pub(crate) fn exit(&self) -> Option<Exit> {
        match self.phase {
            Phase::Closing { exit, .. } | Phase::Closed { exit, .. } => Some(exit),
            Phase::Authenticating { .. } | Phase::Live => None,
        }
    }

    /// Whether the client is authenticated and its session open.
    pub(crate) fn is_live(&self) -> bool {
        self.phase == Phase::Live
    }

    /// Whether the socket is to be dropped now.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed { .. })
    }

    /// Whether to read the socket: while open, and while closing from when the close
    /// frame is written until the client's close frame arrives.
    pub(crate) fn reads(&self) -> bool {
        match self.phase {
            Phase::Authenticating { .. } | Phase::Live => true,
            Phase::Closing {
                close_written,
                peer_closed,
                ..
            } => close_written && !peer_closed,
            Phase::Closed { .. } => false,
        }
    }

    /// When the session must be woken whatever else happens.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Authenticating { deadline } | Phase::Closing { deadline, .. } => Some(deadline),
            Phase::Live | Phase::Closed { .. } => None,
        }
    }

    /// Applies one input and says what the session must do about it.
    pub(crate) fn on(&mut self, input: Input) -> Effect {
        match (self.phase, input) {
            (Phase::Authenticating { .. }, Input::Authenticated) => {
                self.phase = Phase::Live;
                Effect::None
            }
            (Phase::Authenticating { deadline }, Input::Tick(now)) if now >= deadline => {
                self.closing(Exit::Refused(CloseCode::AuthTimeout), now, false);
                Effect::RefuseLateAuth
            }
            (Phase::Authenticating { .. } | Phase::Live, Input::Close { exit, now }) => {
                self.closing(exit, now, false);
                Effect::Leave
            }
            (Phase::Authenticating { .. } | Phase::Live, Input::PeerClose { now }) => {
                self.closing(Exit::PeerClosed, now, true);
                Effect::Leave
            }
            (Phase::Authenticating { .. } | Phase::Live, Input::SocketEnded) => {
                self.phase = Phase::Closed {
                    exit: Exit::Dropped,
                    finish: Finish::SocketEnded,
                };
                Effect::Leave
            }
            (Phase::Closing { .. }, Input::PeerClose { .. }) => {
                if let Phase::Closing { peer_closed, .. } = &mut self.phase {
                    *peer_closed = true;
                }
                self.finish_handshake();
                Effect::None
            }
            (Phase::Closing { .. }, Input::CloseWritten) => {
                if let Phase::Closing { close_written, .. } = &mut self.phase {
                    *close_written = true;
                }
                self.finish_handshake();
                Effect::None
            }
            (
                Phase::Closing {
                    exit,
                    read_allowance,
                    ..
                },
                Input::ReadWhileClosing(bytes),
            ) => {
                match read_allowance.checked_sub(bytes) {
                    Some(left) => {
                        if let Phase::Closing { read_allowance, .. } = &mut self.phase {
                            *read_allowance = left;
                        }
                    }
                    None => {
                        self.phase = Phase::Closed {
                            exit,
                            finish: Finish::KeptSending,
                        };
                    }
                }
                Effect::None
            }
            (Phase::Closing { exit, .. }, Input::SocketEnded) => {
                self.phase = Phase::Closed {
                    exit,
                    finish: Finish::SocketEnded,
                };
                Effect::None
            }
            (Phase::Closing { exit, deadline, .. }, Input::Tick(now)) if now >= deadline => {
                self.phase = Phase::Closed {
                    exit,
                    finish: Finish::GraceExpired,
                };
                Effect::None
            }
            // Early ticks, a second close, a second authentication, a close frame
            // written while open (impossible) and anything once closed change nothing.
            _ => Effect::None,
        }
    }

    fn closing(&mut self, exit: Exit, now: Instant, peer_closed: bool) {
        self.phase = Phase::Closing {
            exit,
            deadline: now + self.limits.close_grace,
            close_written: false,
            peer_closed,
            read_allowance: self.limits.closing_read_limit,
        };
    }

    fn finish_handshake(&mut self) {
        if let Phase::Closing {
            exit,
            close_written: true,
            peer_closed: true,
            ..
        } = self.phase
        {
            self.phase = Phase::Closed {
                exit,
                finish: Finish::Handshake,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: Duration = Duration::from_secs(10);
    const GRACE: Duration = Duration::from_secs(5);

    const READ_LIMIT: usize = 1000;

    fn start() -> (Lifecycle, Instant) {
        let t0 = Instant::now();
        let limits = Limits {
            auth_timeout: AUTH,
            close_grace: GRACE,
            closing_read_limit: READ_LIMIT,
        };
        (Lifecycle::new(t0, limits), t0)
    }

    fn live() -> (Lifecycle, Instant) {
        let (mut life, t0) = start();
        assert_eq!(life.on(Input::Authenticated), Effect::None);
        (life, t0)
    }

    #[test]
    fn a_new_session_authenticates_before_its_deadline() {
        let (mut life, t0) = start();
        assert!(life.is_open() && life.reads() && !life.is_live());
        assert_eq!(life.deadline(), Some(t0 + AUTH));
        assert_eq!(life.on(Input::Tick(t0 + AUTH / 2)), Effect::None);
        assert_eq!(life.on(Input::Authenticated), Effect::None);
        assert!(life.is_live());
        assert_eq!(life.deadline(), None, "a live session has no deadline");
        assert_eq!(life.on(Input::Tick(t0 + AUTH * 2)), Effect::None);
        assert!(
            life.is_live(),
            "the auth deadline is gone once authenticated"
        );
    }

    #[test]
    fn a_late_client_is_refused_and_then_has_the_close_grace() {
        let (mut life, t0) = start();
        let late = t0 + AUTH;
        assert_eq!(life.on(Input::Tick(late)), Effect::RefuseLateAuth);
        assert!(!life.is_open());
        assert_eq!(life.deadline(), Some(late + GRACE));
        assert_eq!(
            life.on(Input::Authenticated),
            Effect::None,
            "too late to authenticate"
        );
        assert!(!life.is_live());
        assert_eq!(life.on(Input::Tick(late + GRACE)), Effect::None);
        assert_eq!(
            life.phase(),
            Phase::Closed {
                exit: Exit::Refused(CloseCode::AuthTimeout),
                finish: Finish::GraceExpired
            }
        );
    }

    #[test]
    fn a_close_leaves_once_and_waits_for_the_peers_answer() {
        let (mut life, t0) = live();
        let at = t0 + Duration::from_secs(60);
        let close = Input::Close {
            exit: Exit::ClosedByCore,
            now: at,
        };
        assert_eq!(life.on(close), Effect::Leave);
        assert_eq!(life.deadline(), Some(at + GRACE));
        let again = Input::Close {
            exit: Exit::Refused(CloseCode::ProtocolError),
            now: at + GRACE / 2,
        };
        assert_eq!(
            life.on(again),
            Effect::None,
            "a second close changes nothing"
        );
        assert_eq!(life.deadline(), Some(at + GRACE), "nor the deadline");
        assert!(
            !life.reads(),
            "nothing is read before the close frame is out"
        );
        assert_eq!(life.on(Input::CloseWritten), Effect::None);
        assert!(life.reads(), "then the peer's close frame is read");
        assert_eq!(life.on(Input::ReadWhileClosing(READ_LIMIT)), Effect::None);
        assert!(!life.is_closed(), "up to the closing read limit");
        assert_eq!(life.on(Input::PeerClose { now: at }), Effect::None);
        assert_eq!(
            life.phase(),
            Phase::Closed {
                exit: Exit::ClosedByCore,
                finish: Finish::Handshake
            }
        );
    }

    #[test]
    fn a_close_that_never_leaves_is_dropped_at_the_grace() {
        // A client that reads nothing: the close frame never gets written.
        let (mut life, t0) = live();
        let close = Input::Close {
            exit: Exit::SlowConsumer,
            now: t0,
        };
        assert_eq!(life.on(close), Effect::Leave);
        assert_eq!(life.on(Input::Tick(t0 + GRACE / 2)), Effect::None);
        assert!(!life.is_closed(), "early ticks change nothing");
        assert_eq!(life.on(Input::Tick(t0 + GRACE)), Effect::None);
        assert_eq!(
            life.phase(),
            Phase::Closed {
                exit: Exit::SlowConsumer,
                finish: Finish::GraceExpired
            }
        );
        assert!(!life.reads());
        assert_eq!(life.deadline(), None);
    }

    #[test]
    fn a_close_written_but_never_answered_is_dropped_at_the_grace() {
        let (mut life, t0) = live();
        let exit = Exit::Refused(CloseCode::RateLimited);
        life.on(Input::Close { exit, now: t0 });
        life.on(Input::CloseWritten);
        assert_eq!(life.deadline(), Some(t0 + GRACE));
        life.on(Input::Tick(t0 + GRACE));
        assert_eq!(
            life.phase(),
            Phase::Closed {
                exit,
                finish: Finish::GraceExpired
            }
        );
    }

    #[test]
    fn a_client_that_keeps_sending_after_the_close_is_dropped() {
        let (mut life, t0) = live();
        life.on(Input::Close {
            exit: Exit::Shutdown,
            now: t0,
        });
        life.on(Input::CloseWritten);
        life.on(Input::ReadWhileClosing(READ_LIMIT / 2));
        assert!(!life.is_closed());
        life.on(Input::ReadWhileClosing(READ_LIMIT / 2 + 1));
        assert_eq!(
            life.phase(),
            Phase::Closed {
                exit: Exit::Shutdown,
                finish: Finish::KeptSending
            }
        );
    }

    #[test]
    fn the_peers_close_is_answered_then_the_socket_goes() {
        let (mut life, t0) = start();
        assert_eq!(life.on(Input::PeerClose { now: t0 }), Effect::Leave);
        assert!(!life.reads(), "nothing more to read after the peer's close");
        assert_eq!(life.deadline(), Some(t0 + GRACE), "the echo has the grace");
        assert_eq!(life.on(Input::CloseWritten), Effect::None);
        assert_eq!(
            life.phase(),
            Phase::Closed {
                exit: Exit::PeerClosed,
                finish: Finish::Handshake
            }
        );
    }

    #[test]
    fn inputs_that_do_not_apply_change_nothing() {
        let (mut authenticating, t0) = start();
        for input in [Input::CloseWritten, Input::ReadWhileClosing(1 << 30)] {
            assert_eq!(authenticating.on(input), Effect::None);
            assert_eq!(
                authenticating.phase(),
                Phase::Authenticating {
                    deadline: t0 + AUTH
                }
            );
        }
        let (mut live, _) = live();
        for input in [
            Input::Authenticated,
            Input::CloseWritten,
            Input::ReadWhileClosing(1 << 30),
            Input::Tick(t0 + AUTH * 100),
        ] {
            assert_eq!(live.on(input), Effect::None);
            assert_eq!(live.phase(), Phase::Live);
        }
        let mut closing = live;
        closing.on(Input::Close {
            exit: Exit::ClosedByCore,
            now: t0,
        });
        let before = closing.phase();
        for input in [
            Input::Authenticated,
            Input::Tick(t0 + GRACE / 2),
            Input::Close {
                exit: Exit::SlowConsumer,
                now: t0,
            },
        ] {
            assert_eq!(closing.on(input), Effect::None);
            assert_eq!(closing.phase(), before);
        }
    }

    #[test]
    fn a_socket_that_ends_ends_the_session_in_any_phase() {
        let (mut open, _) = live();
        assert_eq!(open.on(Input::SocketEnded), Effect::Leave);
        assert_eq!(
            open.phase(),
            Phase::Closed {
                exit: Exit::Dropped,
                finish: Finish::SocketEnded
            }
        );

        let (mut closing, t0) = start();
        closing.on(Input::Close {
            exit: Exit::Shutdown,
            now: t0,
        });
        assert_eq!(
            closing.on(Input::SocketEnded),
            Effect::None,
            "left already when the close was queued"
        );
        assert_eq!(
            closing.phase(),
            Phase::Closed {
                exit: Exit::Shutdown,
                finish: Finish::SocketEnded
            }
        );
        assert_eq!(closing.on(Input::Authenticated), Effect::None);
        assert!(closing.is_closed(), "closed is final");
    }
}
