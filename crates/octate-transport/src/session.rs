//! One signaling WebSocket: authentication, reading frames, and writing its queue.
//!
//! One task per connection does both directions over the stream (TCP or TLS). It waits only on
//! cancel-safe events (the socket is readable or writable, something was queued,
//! shutdown, a deadline) and does all reading, handling and writing without awaiting,
//! so it is never cancelled half-way through a frame. What it waits for and when it
//! stops is the session's [`Lifecycle`]'s to say.
//!
//! Bytes are read into a per-thread buffer and handled in place; a connection keeps
//! bytes of its own only for a frame still arriving. Writing is [`crate::writer`]'s.
//! Every control frame and every message counts against the connection's rate limit;
//! a read's frames refresh the connection's liveness in the core once at most.
//!
//! A session speaks Octate's protocol, or `y-webrtc` ([`ywebrtc`]): the same framing,
//! limits and life, with its own messages.

mod ywebrtc;

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use octate_core::{ConnId, Identity, Login, Protocol, TokenRef};
use octate_protocol::{ClientMessage, CloseCode, ErrorCode, RoomId, UserId};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tracing::{debug, info};

use crate::app::App;
use crate::assemble::{AssembleError, Assembler, Message};
use crate::audit::{self, Endpoint};
use crate::lifecycle::{Effect, Exit, Input, Lifecycle, Limits};
use crate::limits::{MessageRate, Verdict};
use crate::registry::{Ending, Outbound};
use crate::stream::{SessionStream, SessionWriter};
use crate::tokens::{self, TokenLease};
use crate::wire::{self, FrameError, FrameReader, OpCode};
use crate::writer::Writer;

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// Where every connection on this thread reads into; handled before the next read.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Why handling what was read ends the open session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer sent a valid close frame; the echo is queued.
    PeerClosed,
    /// The session refused the peer's input; a close frame with this code is queued.
    Closed(CloseCode),
    /// The socket ended, failed, or broke the protocol while closing.
    Dropped,
}

/// What one read brought.
#[derive(Debug, Default)]
struct ReadReport {
    /// Bytes read.
    bytes: usize,
    /// Whether the session ends.
    end: Option<End>,
    /// Whether a whole frame arrived: the client is alive.
    heard: bool,
    /// Whether an authenticated client's message went to the core (which notes it alive).
    to_core: bool,
}

/// How a session proves who it is, and which protocol it speaks.
#[derive(Debug)]
pub(crate) enum Opening {
    /// Octate's protocol: the first message is `auth` (or `resume`).
    Native,
    /// Yjs's `y-webrtc`: authenticated by the token of its upgrade URL.
    YWebrtc {
        /// The token, checked once before the upgrade and again here.
        token: String,
    },
}

/// Runs a WebSocket session until it ends; the core hears of the disconnect as soon as
/// the session stops being open.
///
/// `ip` is the client's address; `early` holds bytes the client sent right behind its
/// upgrade request.
pub(crate) async fn run<S: SessionStream>(
    mut stream: S,
    ip: IpAddr,
    early: Bytes,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    opening: Opening,
) {
    let protocol = match opening {
        Opening::Native => Protocol::Native,
        Opening::YWebrtc { .. } => Protocol::YWebrtc,
    };
    let mut conn = Connection::new(app, ip, Instant::now(), protocol);
    debug!(conn = %conn.session.conn, ?protocol, "websocket open");
    if let Opening::YWebrtc { token } = opening {
        let end = conn.session.login_ywebrtc(&token);
        conn.after_read(ReadReport {
            end,
            ..ReadReport::default()
        });
    }
    let (mut rd, mut wr) = stream.split();
    if !early.is_empty() {
        conn.on_bytes(&mut early.to_vec());
    }
    // These bytes may share the HTTP connection's whole read buffer: let it go now.
    drop(early);
    conn.after_event(&mut wr);
    event_loop(&mut rd, &mut wr, &mut conn, &mut stop).await;
    let id = conn.session.conn;
    let phase = conn.life.phase();
    match &conn.session.identity {
        Some(who) => {
            info!(conn = %id, user = %who.user_id, room = %who.room_id, ?phase, "session ended")
        }
        None => debug!(conn = %id, ?phase, "unauthenticated session ended"),
    }
}

/// What woke the session.
enum Event {
    Stop,
    Deadline,
    Read(io::Result<ReadReport>),
    Queued,
    Writable(io::Result<()>),
}

/// Waits for events and handles them until the session is closed.
async fn event_loop<R: AsyncRead + Unpin, W: SessionWriter>(
    rd: &mut R,
    wr: &mut W,
    conn: &mut Connection,
    stop: &mut watch::Receiver<bool>,
) {
    // Boxed: most sessions are live, with no deadline, and the session stays small.
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    while !conn.life.is_closed() {
        arm(&mut timer, conn.life.deadline());
        let open = conn.life.is_open();
        let reading = conn.life.reads();
        let backlog = conn.writer.has_backlog() || wr.has_pending();
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s), if open => Event::Stop,
            () = expire(&mut timer) => Event::Deadline,
            read = poll_fn(|cx| poll_read_frames(cx, rd, &mut conn.reader, &mut conn.session, open)),
                if reading => Event::Read(read),
            () = conn.writer.outbox.wait() => Event::Queued,
            ready = wr.writable(), if backlog => Event::Writable(ready),
        };
        match event {
            Event::Stop => {
                conn.session
                    .app
                    .close(conn.session.conn, CloseCode::GoingAway);
                conn.step(Input::Close {
                    exit: Exit::Shutdown,
                    now: Instant::now(),
                });
            }
            Event::Deadline => {
                // The timer fired, so its deadline has passed, whatever the clock reads.
                let now = Instant::now();
                let at = conn
                    .life
                    .deadline()
                    .map_or(now, |deadline| deadline.max(now));
                conn.step(Input::Tick(at));
            }
            Event::Read(Ok(report)) => conn.after_read(report),
            Event::Read(Err(_)) | Event::Writable(Err(_)) => conn.step(Input::SocketEnded),
            Event::Queued | Event::Writable(Ok(())) => {}
        }
        conn.after_event(wr);
    }
}

/// Points the timer at `deadline`, reusing it when there is one already.
fn arm(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Option<Instant>) {
    match (timer.as_mut(), deadline) {
        (Some(sleep), Some(at)) if sleep.deadline() != at => sleep.as_mut().reset(at),
        (Some(_), Some(_)) => {}
        (None, Some(at)) => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
        (_, None) => *timer = None,
    }
}

/// Completes when the timer fires; never, when there is none.
async fn expire(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Reads what the socket has into the thread's buffer and handles every whole frame.
///
/// Cancel-safe: bytes are handled in the same poll that reads them.
fn poll_read_frames<R: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    rd: &mut R,
    reader: &mut Reader,
    session: &mut Session,
    open: bool,
) -> Poll<io::Result<ReadReport>> {
    READ_BUF.with_borrow_mut(|buf| {
        let n = {
            let mut read = ReadBuf::new(buf);
            ready!(Pin::new(&mut *rd).poll_read(cx, &mut read))?;
            read.filled().len()
        };
        if n == 0 {
            return Poll::Ready(Ok(ReadReport {
                end: Some(End::Dropped),
                ..ReadReport::default()
            }));
        }
        let mut report = reader.on_bytes(session, &mut buf[..n], open);
        report.bytes = n;
        Poll::Ready(Ok(report))
    })
}

/// One connection's parts: who it is, its reading and writing sides, and its life.
struct Connection {
    session: Session,
    reader: Reader,
    writer: Writer,
    life: Lifecycle,
    /// Whether the outbox's ending has been acted on.
    ending_seen: bool,
    /// Whether the close frame is written and the writing side shut down.
    write_shut: bool,
}

impl Connection {
    /// Registers a connection from `ip`, speaking `protocol`, whose handshake completed
    /// at `now`.
    fn new(app: Arc<App>, ip: IpAddr, now: Instant, protocol: Protocol) -> Self {
        let (conn, outbox) = app.registry.register();
        app.metrics.connections_opened.inc();
        let config = &app.config;
        Self {
            reader: Reader {
                frames: FrameReader::new(config.max_message_bytes),
                assembler: Assembler::new(config.max_message_bytes),
            },
            writer: Writer::new(outbox),
            life: Lifecycle::new(
                now,
                Limits {
                    auth_timeout: config.auth_timeout,
                    close_grace: config.close_grace,
                    // Room for a message in flight when the close frame arrived.
                    closing_read_limit: config.max_message_bytes + READ_CHUNK,
                },
            ),
            ending_seen: false,
            write_shut: false,
            session: Session {
                rate: MessageRate::new(
                    config.messages_per_second,
                    config.message_burst,
                    config.rate_limit_strikes,
                ),
                app: app.clone(),
                conn,
                ip,
                identity: None,
                token: None,
                peer_close: None,
                resuming: false,
                protocol,
                reached_core: false,
            },
        }
    }

    /// Handles bytes that did not come through the event loop (sent with the upgrade).
    fn on_bytes(&mut self, data: &mut [u8]) {
        let mut report = self
            .reader
            .on_bytes(&mut self.session, data, self.life.is_open());
        report.bytes = data.len();
        self.after_read(report);
    }

    /// Moves the session's life on after a read, and refreshes its liveness if it is owed.
    fn after_read(&mut self, report: ReadReport) {
        if !self.life.is_open() {
            self.step(Input::ReadWhileClosing(report.bytes));
        }
        if !self.life.is_live() && self.session.identity.is_some() {
            self.step(Input::Authenticated);
        }
        match report.end {
            None => {}
            Some(End::PeerClosed) => self.step(Input::PeerClose {
                now: Instant::now(),
            }),
            Some(End::Closed(code)) => self.step(Input::Close {
                exit: Exit::Refused(code),
                now: Instant::now(),
            }),
            Some(End::Dropped) => self.step(Input::SocketEnded),
        }
        if report.heard && !report.to_core && self.life.is_live() {
            let conn = self.session.conn;
            self.session
                .app
                .drive(|core, now| core.handle_pong(now, conn));
        }
    }

    /// Acts on how the server ended the connection, writes what the socket takes, and
    /// once the close frame is written, shuts the writing side (the client sees the
    /// end of the stream while the session waits for its close frame).
    fn after_event(&mut self, wr: &mut impl SessionWriter) {
        if self.session.resuming && self.life.is_open() {
            if let Some(End::Closed(code)) = self.session.adopt_resumed() {
                self.step(Input::Close {
                    exit: Exit::Refused(code),
                    now: Instant::now(),
                });
            } else if self.session.identity.is_some() && !self.life.is_live() {
                self.step(Input::Authenticated);
            }
        }
        if !self.ending_seen
            && let Some(ending) = self.writer.outbox.ending()
        {
            self.ending_seen = true;
            let exit = match ending {
                Ending::CloseQueued => {
                    self.session.audit_close(self.writer.outbox.close_code());
                    Exit::ClosedByCore
                }
                Ending::Overflowed => {
                    self.writer.close_now(CloseCode::SlowConsumer);
                    Exit::SlowConsumer
                }
            };
            self.step(Input::Close {
                exit,
                now: Instant::now(),
            });
        }
        if self.writer.flush(wr).is_err() {
            self.step(Input::SocketEnded);
        }
        if self.writer.close_written() && !self.write_shut {
            self.write_shut = true;
            self.step(Input::CloseWritten);
            // An error means the socket is gone.
            if let Poll::Ready(Err(_)) = wr.poll_shutdown_now() {
                self.step(Input::SocketEnded);
            }
        }
    }

    /// Feeds the life one input and carries out what it asks.
    fn step(&mut self, input: Input) {
        match self.life.on(input) {
            Effect::None => {}
            Effect::Leave => self.leave(),
            Effect::RefuseLateAuth => {
                let (app, conn) = (&self.session.app, self.session.conn);
                app.send_error(conn, ErrorCode::NotAuthenticated, "no auth message in time");
                app.close(conn, CloseCode::AuthTimeout);
                self.leave();
            }
        }
    }

    /// Forgets the connection: nothing more is queued for it, and its peers are told, or
    /// its peer is suspended for a `resume` when the connection was lost rather than
    /// closed on purpose.
    fn leave(&self) {
        let (app, conn) = (&self.session.app, self.session.conn);
        app.registry.unregister(conn);
        if self.session.resuming {
            // The core is told, so a resume committed after this is suspended again.
            app.drive(|core, now| core.handle_disconnect(now, conn));
        } else if self.session.identity.is_some() {
            // After shutdown the core has forgotten every connection, so this tells nobody.
            if self.lost() {
                app.drive(|core, now| core.handle_connection_lost(now, conn));
            } else {
                app.drive(|core, now| core.handle_disconnect(now, conn));
            }
        }
    }

    /// Whether the connection ended without the client meaning to leave: the socket
    /// dropped, the client stopped reading, or it closed with 1001 (going away).
    fn lost(&self) -> bool {
        match self.life.exit() {
            Some(Exit::Dropped | Exit::SlowConsumer) => true,
            Some(Exit::PeerClosed) => self.session.peer_close == Some(CloseCode::GoingAway.code()),
            _ => false,
        }
    }
}

/// Turns bytes from the socket into frames and messages.
struct Reader {
    frames: FrameReader,
    assembler: Assembler,
}

impl Reader {
    /// Handles newly read bytes: every frame while `open`, only a close frame otherwise.
    fn on_bytes(&mut self, session: &mut Session, data: &mut [u8], open: bool) -> ReadReport {
        let Self { frames, assembler } = self;
        let mut report = ReadReport::default();
        let outcome = frames.feed(data, |header, payload| {
            let end = if open {
                Self::on_frame(
                    assembler,
                    session,
                    &mut report,
                    header.fin,
                    header.opcode,
                    payload,
                )
            } else {
                (header.opcode == OpCode::Close).then_some(End::PeerClosed)
            };
            match end {
                Some(end) => ControlFlow::Break(end),
                None => ControlFlow::Continue(()),
            }
        });
        report.end = match outcome {
            Ok(end) => end,
            Err(err) if open => Some(session.on_frame_error(err)),
            Err(_) => Some(End::Dropped),
        };
        report
    }

    fn on_frame(
        assembler: &mut Assembler,
        session: &mut Session,
        report: &mut ReadReport,
        fin: bool,
        opcode: OpCode,
        payload: &[u8],
    ) -> Option<End> {
        report.heard = true;
        match opcode {
            OpCode::Close => return Some(session.on_close(payload)),
            OpCode::Ping => {
                match session.admit_frame() {
                    Ok(true) => {
                        let pong = Outbound::Pong(Bytes::copy_from_slice(payload));
                        session.app.push(session.conn, pong);
                    }
                    Ok(false) => {}
                    Err(end) => return Some(end),
                }
                return None;
            }
            // Liveness is taken once per read, from `report.heard`.
            OpCode::Pong => return session.admit_frame().err(),
            // A message counts once, whole, in `on_text`; its fragments are bounded by
            // the message size limit.
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {}
        }
        match assembler.push(fin, opcode, payload) {
            Ok(None) => None,
            Ok(Some(Message::Text(text))) => {
                let end = session.on_text(text);
                report.to_core |= session.took_to_core();
                end
            }
            Ok(Some(Message::Binary)) => Some(session.close_with(
                ErrorCode::InvalidMessage,
                "text frames only",
                CloseCode::UnsupportedData,
            )),
            Err(AssembleError::TooLarge) => Some(session.close_with(
                ErrorCode::TooLarge,
                "message too large",
                CloseCode::MessageTooBig,
            )),
            Err(AssembleError::InvalidUtf8) => Some(session.close_with(
                ErrorCode::InvalidMessage,
                "invalid utf-8",
                CloseCode::InvalidPayload,
            )),
            Err(AssembleError::BadFragment) => Some(session.close_with(
                ErrorCode::InvalidMessage,
                "invalid fragmentation",
                CloseCode::ProtocolError,
            )),
        }
    }
}

/// Who is on the other end, and what they may do.
struct Session {
    app: Arc<App>,
    conn: ConnId,
    /// The client's address, for the audit trail.
    ip: IpAddr,
    identity: Option<Identity>,
    /// The token the session runs on, held for revocation and expiry.
    token: Option<TokenLease>,
    rate: MessageRate,
    /// The code of the client's close frame, once it sent one.
    peer_close: Option<u16>,
    /// A `resume` is waiting for the cluster's answer.
    resuming: bool,
    /// What the client speaks.
    protocol: Protocol,
    /// A `y-webrtc` message went to the core since the last look (which notes it alive).
    reached_core: bool,
}

impl Session {
    fn close_with(&self, code: ErrorCode, message: &str, close: CloseCode) -> End {
        self.tell(code, message);
        self.app.close(self.conn, close);
        End::Closed(close)
    }

    /// Sends the client an `error`, in the protocols that have one (`y-webrtc` has none:
    /// its client is told by the close code alone).
    fn tell(&self, code: ErrorCode, message: &str) {
        match self.protocol {
            Protocol::Native => self.app.send_error(self.conn, code, message),
            Protocol::YWebrtc => {
                debug!(conn = %self.conn, code = code.as_str(), message, "y-webrtc refusal")
            }
        }
    }

    /// Whether the message just handled went to the core, and refreshed liveness there.
    fn took_to_core(&mut self) -> bool {
        match self.protocol {
            Protocol::Native => self.identity.is_some(),
            Protocol::YWebrtc => std::mem::take(&mut self.reached_core),
        }
    }

    /// Counts one control frame against the rate limit: `Ok(true)`
    /// to handle it, `Ok(false)` when it is over the rate (the client is told).
    fn admit_frame(&mut self) -> Result<bool, End> {
        match self.rate.check() {
            Verdict::Allow => Ok(true),
            Verdict::Reject => {
                self.tell(ErrorCode::RateLimited, "slow down: frame dropped");
                Ok(false)
            }
            Verdict::Close => Err(self.close_flooding()),
        }
    }

    /// Closes a connection that kept sending over its rate (4029).
    fn close_flooding(&self) -> End {
        audit::rate_limit_closed(self.ip, self.conn, self.identity.as_ref());
        self.close_with(
            ErrorCode::RateLimited,
            "rate limit exceeded",
            CloseCode::RateLimited,
        )
    }

    /// Audits a close the server queued with `code`, when it says a newer connection of
    /// the same user replaced this one (4004).
    fn audit_close(&self, code: Option<u16>) {
        if code == Some(CloseCode::Replaced.code())
            && let Some(identity) = &self.identity
        {
            audit::peer_replaced(self.ip, self.conn, identity);
        }
    }

    fn on_frame_error(&self, err: FrameError) -> End {
        debug!(conn = %self.conn, %err, "websocket protocol error");
        match err {
            FrameError::TooLarge => self.close_with(
                ErrorCode::TooLarge,
                "frame too large",
                CloseCode::MessageTooBig,
            ),
            _ => {
                self.app.close(self.conn, CloseCode::ProtocolError);
                End::Closed(CloseCode::ProtocolError)
            }
        }
    }

    /// Answers the peer's close frame (RFC 6455 §5.5.1), or refuses a malformed one.
    fn on_close(&mut self, payload: &[u8]) -> End {
        let code = match payload {
            [] => None,
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !wire::close_code_allowed(code) {
                    self.app.close(self.conn, CloseCode::ProtocolError);
                    return End::Closed(CloseCode::ProtocolError);
                }
                if std::str::from_utf8(reason).is_err() {
                    self.app.close(self.conn, CloseCode::InvalidPayload);
                    return End::Closed(CloseCode::InvalidPayload);
                }
                Some(code)
            }
            [_] => {
                self.app.close(self.conn, CloseCode::ProtocolError);
                return End::Closed(CloseCode::ProtocolError);
            }
        };
        self.peer_close = code;
        self.app.push(self.conn, Outbound::CloseEcho(code));
        self.app.registry.unregister(self.conn);
        End::PeerClosed
    }

    /// Handles one text message; returns how the session ends, if it does.
    fn on_text(&mut self, text: &str) -> Option<End> {
        if self.protocol == Protocol::YWebrtc {
            return self.on_ywebrtc_text(text);
        }
        match self.rate.check() {
            Verdict::Allow => {}
            Verdict::Reject => {
                self.app.send_error(
                    self.conn,
                    ErrorCode::RateLimited,
                    "slow down: message dropped",
                );
                return None;
            }
            Verdict::Close => return Some(self.close_flooding()),
        }
        let app = &self.app;
        let conn = self.conn;
        let msg = match ClientMessage::decode_str(text, app.config.max_message_bytes) {
            Ok(msg) => msg,
            Err(err) => {
                app.send_error(conn, err.code(), err.to_string());
                return None;
            }
        };
        if let ClientMessage::Resume {
            session_id,
            resume_token,
        } = &msg
            && self.identity.is_none()
        {
            return self.resume(session_id, resume_token);
        }
        if let Some(identity) = &self.identity {
            if let ClientMessage::Refresh { token } = msg {
                let goes_on = tokens::refresh(app, conn, self.ip, identity, &token);
                return (!goes_on).then_some(End::Closed(CloseCode::AuthFailed));
            }
            app.drive(|core, now| core.handle_message(now, conn, msg));
            return None;
        }
        let ClientMessage::Auth {
            token,
            user_name,
            room_id,
            user_id,
        } = msg
        else {
            app.send_error(
                conn,
                ErrorCode::NotAuthenticated,
                "the first message must be auth",
            );
            return None;
        };
        match self.verify(&token, room_id.as_ref(), user_id.as_ref()) {
            Ok((identity, lease, token)) => {
                debug!(%conn, user = %identity.user_id, room = %identity.room_id, "authenticated");
                self.identity = Some(identity.clone());
                self.token = Some(lease);
                let login = Login {
                    identity,
                    user_name,
                    token,
                };
                app.drive(|core, now| core.handle_login(now, conn, login));
                None
            }
            Err((code, message)) => {
                app.metrics.auth_failed(code);
                audit::token_rejected(self.ip, Endpoint::WebSocketAuth, code, Some(conn));
                info!(%conn, code = code.as_str(), "authentication failed");
                Some(self.close_with(code, &message, CloseCode::AuthFailed))
            }
        }
    }

    /// Verifies the token of `auth` and checks it against the ids the client named.
    fn verify(
        &self,
        token: &str,
        room_id: Option<&RoomId>,
        user_id: Option<&UserId>,
    ) -> Result<(Identity, TokenLease, TokenRef), (ErrorCode, String)> {
        tokens::authenticate(&self.app, self.conn, token, room_id, user_id)
    }

    /// Takes over a dropped session with its resume token, instead of authenticating.
    fn resume(&mut self, session_id: &str, resume_token: &str) -> Option<End> {
        let (app, conn) = (self.app.clone(), self.conn);
        // A session whose token was revoked (or expired) while it was suspended is
        // refused before anything, `resumed` included, is handed over.
        let checked = app.drive(|core, now| {
            if let Some(token) = core.resume_token(now, session_id, resume_token) {
                tokens::check_resumable(&app, &token)?;
            }
            Ok(core.handle_resume(now, conn, session_id, resume_token))
        });
        let result = match checked {
            Ok(result) => result,
            Err((code, message)) => {
                app.metrics.auth_failed(code);
                info!(%conn, code = code.as_str(), "resume refused: the session's token");
                return Some(self.close_with(code, &message, CloseCode::AuthFailed));
            }
        };
        if let Err(refusal) = result {
            app.metrics.auth_failed(ErrorCode::ResumeFailed);
            audit::resume_rejected(self.ip, refusal, conn);
            info!(%conn, ?refusal, "resume refused");
            return Some(End::Closed(CloseCode::AuthFailed));
        }
        // On a cluster the answer comes later: `adopt_resumed` runs on every wake.
        self.resuming = true;
        self.adopt_resumed()
    }

    /// Makes the session the connection's once the core has handed it over.
    fn adopt_resumed(&mut self) -> Option<End> {
        let (app, conn) = (self.app.clone(), self.conn);
        let (identity, token) = app.take_resumed(conn)?;
        self.resuming = false;
        match tokens::adopt(&app, conn, &token) {
            Ok(lease) => {
                debug!(%conn, user = %identity.user_id, room = %identity.room_id, "resumed");
                audit::session_resumed(self.ip, conn, &identity, token.token_id.as_deref());
                self.identity = Some(identity);
                self.token = Some(lease);
                None
            }
            Err((code, message)) => {
                // The session's token was revoked (or expired) while it was suspended.
                audit::token_rejected(self.ip, Endpoint::Resume, code, Some(conn));
                app.end_sessions(&[conn], code, &message);
                Some(End::Closed(CloseCode::AuthFailed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use octate_auth::{KeyRing, TokenAuthority};

    use octate_protocol::ywebrtc::PONG;

    use super::*;
    use crate::TransportConfig;
    use crate::heap::RssProbe;
    use crate::lifecycle::Phase;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A masked client frame.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mask = [1, 2, 3, 4];
        let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn pongs(n: usize) -> Vec<u8> {
        frame(0xA, &[]).repeat(n)
    }

    fn app(tweak: impl FnOnce(&mut TransportConfig)) -> Arc<App> {
        let mut config = TransportConfig::default();
        tweak(&mut config);
        let keys = KeyRing::new("k1", b"test-secret-0123456789abcdef-0123456789").expect("keys");
        App::new(config, TokenAuthority::new(keys), Box::new(RssProbe))
    }

    fn drives(app: &App) -> usize {
        app.drives.load(Ordering::Relaxed)
    }

    fn auth_frame(app: &App, user: &str) -> Vec<u8> {
        let (token, _) = app
            .auth
            .read()
            .issue(user, "room", None, app.clock.now_ms())
            .expect("token");
        let text = format!(r#"{{"type":"auth","data":{{"token":"{token}"}}}}"#);
        let mut out = vec![0x81, 0xFE];
        out.extend_from_slice(&u16::try_from(text.len()).expect("short").to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(text.as_bytes());
        out
    }

    fn queued(conn: &Connection) -> Vec<Outbound> {
        let mut out = std::collections::VecDeque::new();
        conn.writer.outbox.drain_into(&mut out);
        out.into()
    }

    #[tokio::test]
    async fn a_read_of_many_pongs_drives_the_core_once_and_only_when_live() {
        let app = app(|c| c.message_burst = 10_000);
        let mut conn = Connection::new(app.clone(), LOOPBACK, Instant::now(), Protocol::Native);

        let before = drives(&app);
        conn.on_bytes(&mut pongs(50));
        assert_eq!(drives(&app), before, "no core before authentication");

        let mut read = pongs(20);
        read.extend(auth_frame(&app, "alice"));
        read.extend(pongs(20));
        let before = drives(&app);
        conn.on_bytes(&mut read);
        assert!(conn.life.is_live());
        assert_eq!(drives(&app), before + 1, "authentication only");

        let before = drives(&app);
        conn.on_bytes(&mut pongs(100));
        assert_eq!(drives(&app), before + 1, "one liveness update per read");

        let mut read = pongs(10);
        read.extend(frame(0x1, br#"{"type":"heartbeat"}"#));
        read.extend(pongs(10));
        let before = drives(&app);
        conn.on_bytes(&mut read);
        assert_eq!(drives(&app), before + 1, "the message is the sign of life");
    }

    #[tokio::test]
    async fn control_frames_count_against_the_rate_limit() {
        let app = app(|c| {
            c.messages_per_second = 10;
            c.message_burst = 5;
            c.rate_limit_strikes = 3;
        });
        let mut conn = Connection::new(app.clone(), LOOPBACK, Instant::now(), Protocol::Native);
        let mut read = frame(0x9, b"ping").repeat(5);
        read.extend(pongs(1));
        conn.on_bytes(&mut read);
        assert!(
            conn.life.is_open(),
            "one over the burst: rejected, not closed"
        );
        let items = queued(&conn);
        assert_eq!(items.len(), 6, "{items:?}");
        assert!(
            items[..5]
                .iter()
                .all(|i| *i == Outbound::Pong(Bytes::from_static(b"ping")))
        );
        assert!(matches!(&items[5], Outbound::Text(t) if t.starts_with(br#"{"type":"error""#)));

        conn.on_bytes(&mut frame(0x9, b"ping").repeat(10));
        assert!(matches!(
            conn.life.phase(),
            Phase::Closing {
                exit: Exit::Refused(CloseCode::RateLimited),
                ..
            }
        ));
        assert_eq!(
            queued(&conn).last(),
            Some(&Outbound::Close(CloseCode::RateLimited)),
            "no pong for a ping over the rate"
        );
    }

    #[tokio::test]
    async fn ywebrtc_pings_are_answered_and_a_read_refreshes_liveness_once() {
        let app = app(|c| c.message_burst = 10_000);
        let mut conn = Connection::new(app.clone(), LOOPBACK, Instant::now(), Protocol::YWebrtc);
        let (token, _) = app
            .auth
            .read()
            .issue("alice", "room", None, app.clock.now_ms())
            .expect("token");
        let end = conn.session.login_ywebrtc(&token);
        assert_eq!(end, None);
        conn.after_read(ReadReport::default());
        assert!(conn.life.is_live());
        assert!(queued(&conn).is_empty(), "no native auth-ok");

        let before = drives(&app);
        conn.on_bytes(&mut frame(0x1, br#"{"type":"ping"}"#).repeat(20));
        assert_eq!(drives(&app), before + 1, "one liveness update for the read");
        let pong = Outbound::Text(Bytes::from_static(PONG.as_bytes()));
        let items = queued(&conn);
        assert_eq!(items.len(), 20);
        assert!(items.iter().all(|i| *i == pong), "{items:?}");

        let mut read = frame(0x1, br#"{"type":"subscribe","topics":["room"]}"#);
        read.extend(frame(
            0x1,
            br#"{"type":"publish","topic":"room","data":{}}"#,
        ));
        read.extend(frame(
            0x1,
            br#"{"type":"publish","topic":"elsewhere","data":{}}"#,
        ));
        read.extend(frame(0x1, b"not json"));
        let before = drives(&app);
        conn.on_bytes(&mut read);
        assert_eq!(
            drives(&app),
            before + 2,
            "subscribe and publish; they are the sign of life"
        );
        assert!(conn.life.is_live());
        assert!(queued(&conn).is_empty(), "nothing answers ignored input");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_flood_within_the_rate_is_never_closed() {
        let app = app(|c| {
            c.messages_per_second = 10;
            c.message_burst = 5;
            c.rate_limit_strikes = 3;
        });
        let mut conn = Connection::new(app.clone(), LOOPBACK, Instant::now(), Protocol::Native);
        for _ in 0..20 {
            conn.on_bytes(&mut pongs(1));
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert!(conn.life.is_open());
        assert!(queued(&conn).is_empty(), "no rate-limited error");
    }
}
