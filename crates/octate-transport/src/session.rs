//! One signaling WebSocket: authentication, reading frames, and writing its queue.
//!
//! One task per connection does both directions over the TCP stream. It waits only on
//! cancel-safe events (the socket is readable or writable, something was queued,
//! shutdown, the auth deadline) and does all reading, handling and writing without
//! awaiting, so it is never cancelled half-way through a frame.
//!
//! Bytes are read into a per-thread buffer and handled in place; a connection keeps
//! bytes of its own only for a frame still arriving. Writing is [`crate::writer`]'s.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use octate_core::{ConnId, Identity};
use octate_protocol::{ClientMessage, CloseCode, ErrorCode, RoomId, UserId};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::time::Sleep;
use tracing::{debug, info};

use crate::app::App;
use crate::assemble::{AssembleError, Assembler, Message};
use crate::limits::{MessageRate, Verdict};
use crate::registry::Outbound;
use crate::tokens::{self, TokenLease};
use crate::wire::{self, FrameError, FrameReader, OpCode};
use crate::writer::Writer;

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// How long queued frames (a close, typically) may take to leave once a session ends.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

thread_local! {
    /// Where every connection on this thread reads into; handled before the next read.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// How a session ended, for the log line.
#[derive(Debug, Clone, Copy)]
#[expect(
    dead_code,
    reason = "fields are read through Debug in the session log line"
)]
enum End {
    /// The peer sent a close frame.
    PeerClosed,
    /// The socket closed or failed without a close frame.
    Dropped,
    /// The session closed it, for this reason.
    Closed(CloseCode),
    /// The server is shutting down.
    Shutdown,
    /// The queue overflowed: the peer does not read.
    SlowConsumer,
    /// A close frame queued by the core was sent.
    CloseSent,
}

/// Runs a WebSocket session until it ends, then reports the disconnect to the core.
///
/// `early` holds bytes the client sent right behind its upgrade request.
pub(crate) async fn run(
    mut tcp: TcpStream,
    early: Bytes,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    let (conn, outbox) = app.registry.register();
    app.metrics.connections_opened.inc();
    debug!(%conn, "websocket open");
    let (mut rd, wr) = tcp.split();
    let mut session = Session {
        rate: MessageRate::new(
            app.config.messages_per_second,
            app.config.message_burst,
            app.config.rate_limit_strikes,
        ),
        app: app.clone(),
        conn,
        identity: None,
        token: None,
    };
    let mut reader = Reader {
        frames: FrameReader::new(app.config.max_message_bytes),
        assembler: Assembler::new(app.config.max_message_bytes),
    };
    let mut writer = Writer::new(outbox);

    let mut end = None;
    if !early.is_empty() {
        end = reader.on_bytes(&mut session, &mut early.to_vec());
    }
    // These bytes may share the HTTP connection's whole read buffer: let it go now.
    drop(early);
    let end = match end {
        Some(end) => end,
        None => {
            event_loop(
                &mut rd,
                &wr,
                &mut reader,
                &mut session,
                &mut writer,
                &mut stop,
            )
            .await
        }
    };

    app.registry.unregister(conn);
    // After shutdown the core has forgotten every connection, so this tells nobody.
    app.drive(|core, now| core.handle_disconnect(now, conn));
    if !matches!(end, End::SlowConsumer | End::Dropped | End::CloseSent) {
        // Let what is queued (a close frame, typically) leave, briefly.
        let _ = tokio::time::timeout(CLOSE_GRACE, writer.finish(&wr)).await;
    }
    match &session.identity {
        Some(id) => info!(%conn, user = %id.user_id, room = %id.room_id, ?end, "session ended"),
        None => debug!(%conn, ?end, "unauthenticated session ended"),
    }
}

/// What woke the session.
enum Event {
    Stop,
    AuthTimeout,
    Read(io::Result<Option<End>>),
    Queued,
    Writable(io::Result<()>),
}

/// Waits for events and handles them until the session ends.
async fn event_loop(
    rd: &mut ReadHalf<'_>,
    wr: &WriteHalf<'_>,
    reader: &mut Reader,
    session: &mut Session,
    writer: &mut Writer,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let app = session.app.clone();
    let conn = session.conn;
    // Boxed: it is gone once the client authenticates, and the session stays small.
    let mut auth_deadline: Option<Pin<Box<Sleep>>> =
        Some(Box::pin(tokio::time::sleep(app.config.auth_timeout)));
    loop {
        let backlog = writer.has_backlog();
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => Event::Stop,
            () = expire(&mut auth_deadline), if auth_deadline.is_some() => Event::AuthTimeout,
            read = poll_fn(|cx| poll_read_frames(cx, rd, reader, session)) => Event::Read(read),
            () = writer.outbox.wait() => Event::Queued,
            ready = wr.writable(), if backlog => Event::Writable(ready),
        };
        match event {
            Event::Stop => {
                app.close(conn, CloseCode::GoingAway);
                return End::Shutdown;
            }
            Event::AuthTimeout => {
                app.send_error(conn, ErrorCode::NotAuthenticated, "no auth message in time");
                app.close(conn, CloseCode::AuthTimeout);
                return End::Closed(CloseCode::AuthTimeout);
            }
            Event::Read(Ok(Some(end))) => return end,
            Event::Read(Err(_)) | Event::Writable(Err(_)) => return End::Dropped,
            Event::Read(Ok(None)) | Event::Queued | Event::Writable(Ok(())) => {}
        }
        if session.identity.is_some() {
            auth_deadline = None;
        }
        if writer.outbox.killed() {
            return End::SlowConsumer;
        }
        if writer.flush(wr).is_err() {
            return End::Dropped;
        }
        if writer.close_sent && !writer.has_backlog() {
            return End::CloseSent;
        }
    }
}

/// Completes when the deadline passes; never, once there is none.
async fn expire(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Reads what the socket has into the thread's buffer and handles every whole frame.
///
/// Cancel-safe: bytes are handled in the same poll that reads them.
fn poll_read_frames(
    cx: &mut Context<'_>,
    rd: &mut ReadHalf<'_>,
    reader: &mut Reader,
    session: &mut Session,
) -> Poll<io::Result<Option<End>>> {
    READ_BUF.with_borrow_mut(|buf| {
        let n = {
            let mut read = ReadBuf::new(buf);
            ready!(Pin::new(&mut *rd).poll_read(cx, &mut read))?;
            read.filled().len()
        };
        if n == 0 {
            return Poll::Ready(Ok(Some(End::Dropped)));
        }
        Poll::Ready(Ok(reader.on_bytes(session, &mut buf[..n])))
    })
}

/// Turns bytes from the socket into frames and messages.
struct Reader {
    frames: FrameReader,
    assembler: Assembler,
}

impl Reader {
    /// Handles newly read bytes; returns how the session ends, if it does.
    fn on_bytes(&mut self, session: &mut Session, data: &mut [u8]) -> Option<End> {
        let Self { frames, assembler } = self;
        let outcome = frames.feed(data, |header, payload| {
            match Self::on_frame(assembler, session, header.fin, header.opcode, payload) {
                Some(end) => ControlFlow::Break(end),
                None => ControlFlow::Continue(()),
            }
        });
        match outcome {
            Ok(end) => end,
            Err(err) => Some(session.on_frame_error(err)),
        }
    }

    fn on_frame(
        assembler: &mut Assembler,
        session: &mut Session,
        fin: bool,
        opcode: OpCode,
        payload: &[u8],
    ) -> Option<End> {
        let app = &session.app;
        let conn = session.conn;
        match opcode {
            OpCode::Close => return Some(session.on_close(payload)),
            OpCode::Ping => {
                app.push(conn, Outbound::Pong(Bytes::copy_from_slice(payload)));
                return None;
            }
            OpCode::Pong => {
                app.drive(|core, now| core.handle_pong(now, conn));
                return None;
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {}
        }
        match assembler.push(fin, opcode, payload) {
            Ok(None) => None,
            Ok(Some(Message::Text(text))) => session.on_text(text),
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
    identity: Option<Identity>,
    /// The token the session runs on, held for revocation and expiry.
    token: Option<TokenLease>,
    rate: MessageRate,
}

impl Session {
    fn close_with(&self, code: ErrorCode, message: &str, close: CloseCode) -> End {
        self.app.send_error(self.conn, code, message);
        self.app.close(self.conn, close);
        End::Closed(close)
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
    fn on_close(&self, payload: &[u8]) -> End {
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
        self.app.push(self.conn, Outbound::CloseEcho(code));
        self.app.registry.unregister(self.conn);
        End::PeerClosed
    }

    /// Handles one text message; returns how the session ends, if it does.
    fn on_text(&mut self, text: &str) -> Option<End> {
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
            Verdict::Close => {
                return Some(self.close_with(
                    ErrorCode::RateLimited,
                    "rate limit exceeded",
                    CloseCode::RateLimited,
                ));
            }
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
        if let Some(identity) = &self.identity {
            if let ClientMessage::Refresh { token } = msg {
                let goes_on = tokens::refresh(app, conn, identity, &token);
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
            Ok((identity, lease)) => {
                debug!(%conn, user = %identity.user_id, room = %identity.room_id, "authenticated");
                self.identity = Some(identity.clone());
                self.token = Some(lease);
                app.drive(|core, now| core.handle_authenticated(now, conn, identity, user_name));
                None
            }
            Err((code, message)) => {
                app.metrics.auth_failed(code);
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
    ) -> Result<(Identity, TokenLease), (ErrorCode, String)> {
        tokens::authenticate(&self.app, self.conn, token, room_id, user_id)
    }
}
