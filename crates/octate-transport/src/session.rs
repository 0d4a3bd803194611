//! One signaling WebSocket: authentication, the read loop, and its writer task.
//!
//! The read loop owns the read half; a writer task owns the write half and drains the
//! connection's bounded queue. Everything sent to the peer, pongs and close echoes
//! included, goes through that queue, so the writer is the only place that writes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fastwebsockets::{
    Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use octate_core::{ConnId, Identity};
use octate_protocol::{ClientMessage, CloseCode, ErrorCode, RoomId, UserId};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::app::App;
use crate::assemble::{AssembleError, Assembler, Message};
use crate::auth::auth_error_code;
use crate::batch::BatchWriter;
use crate::limits::{MessageRate, Verdict};
use crate::registry::{Mailbox, Outbound};

type Io = TokioIo<Upgraded>;

/// How a session ended, for the log line.
#[derive(Debug, Clone, Copy)]
#[expect(
    dead_code,
    reason = "fields are read through Debug in the session log line"
)]
enum End {
    PeerClosed,
    Dropped,
    Closed(CloseCode),
    Shutdown,
    SlowConsumer,
    WriterDone,
}

/// Runs a WebSocket session until it ends, then reports the disconnect to the core.
pub(crate) async fn run(mut ws: WebSocket<Io>, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    // A frame may carry the whole message limit; the check is `len >= max`.
    ws.set_max_message_size(app.config.max_message_bytes.saturating_add(1));
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let (rx, tx) = ws.split(|io| {
        let (read, write) = tokio::io::split(io);
        (read, BatchWriter::new(write))
    });
    let (conn, mailbox) = app.registry.register();
    app.metrics.connections_opened.inc();
    debug!(%conn, "websocket open");

    let Mailbox {
        rx: queue,
        pending_bytes,
        kill,
    } = mailbox;
    // Every frame goes out as header + payload slices into the batch buffer, so the
    // library's own per-connection write buffer never grows.
    let mut tx = tx;
    tx.set_writev_threshold(0);
    let mut writer = tokio::spawn(write_loop(tx, queue, pending_bytes));
    let mut session = Session {
        app: app.clone(),
        conn,
        identity: None,
    };
    let end = session.read_loop(rx, &mut stop, &kill, &mut writer).await;

    app.registry.unregister(conn);
    // At shutdown every connection gets 1001. Reporting this disconnect would race the
    // others' own close with `peer-left` (and `host-changed`), and clients would tear
    // down peer-to-peer links that do not need the signaling server.
    if !app.stopping() {
        app.drive(|core, now| core.handle_disconnect(now, conn));
    }
    match end {
        End::WriterDone => {}
        End::SlowConsumer | End::Dropped => writer.abort(),
        _ => {
            // Let the writer flush what is queued (a close frame, typically), briefly.
            let grace = std::time::Duration::from_secs(2);
            if tokio::time::timeout(grace, &mut writer).await.is_err() {
                writer.abort();
            }
        }
    }
    match &session.identity {
        Some(id) => info!(%conn, user = %id.user_id, room = %id.room_id, ?end, "session ended"),
        None => debug!(%conn, ?end, "unauthenticated session ended"),
    }
}

struct Session {
    app: Arc<App>,
    conn: ConnId,
    identity: Option<Identity>,
}

impl Session {
    async fn read_loop(
        &mut self,
        mut rx: WebSocketRead<ReadHalf<Io>>,
        stop: &mut watch::Receiver<bool>,
        kill: &tokio::sync::Notify,
        writer: &mut tokio::task::JoinHandle<()>,
    ) -> End {
        let app = self.app.clone();
        let conn = self.conn;
        let mut assembler = Assembler::new(app.config.max_message_bytes);
        let mut rate = MessageRate::new(
            app.config.messages_per_second,
            app.config.message_burst,
            app.config.rate_limit_strikes,
        );
        // Pongs and close echoes owed by the protocol go through the same queue.
        let mut send_fn = |frame: Frame<'_>| {
            let owned = Frame::new(
                frame.fin,
                frame.opcode,
                None,
                Payload::Owned(frame.payload.to_vec()),
            );
            let res = match app.registry.send_control(conn, Outbound::Control(owned)) {
                crate::registry::Push::Queued => Ok(()),
                _ => Err(WebSocketError::ConnectionClosed),
            };
            std::future::ready(res)
        };
        let auth_deadline = tokio::time::Instant::now() + app.config.auth_timeout;
        loop {
            let authenticated = self.identity.is_some();
            // `read_frame` is not cancel-safe: every other branch leaves the loop.
            let frame = tokio::select! {
                biased;
                () = kill.notified() => return End::SlowConsumer,
                _ = stop.wait_for(|s| *s) => {
                    app.close(conn, CloseCode::GoingAway);
                    return End::Shutdown;
                }
                _ = &mut *writer => return End::WriterDone,
                () = tokio::time::sleep_until(auth_deadline), if !authenticated => {
                    app.send_error(conn, ErrorCode::NotAuthenticated, "no auth message in time");
                    app.close(conn, CloseCode::AuthTimeout);
                    return End::Closed(CloseCode::AuthTimeout);
                }
                frame = rx.read_frame(&mut send_fn) => frame,
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(err) => return self.on_read_error(&err),
            };
            match frame.opcode {
                OpCode::Close => return End::PeerClosed,
                OpCode::Pong => {
                    app.drive(|core, now| core.handle_pong(now, conn));
                    continue;
                }
                OpCode::Ping => continue,
                _ => {}
            }
            match assembler.push(frame) {
                Ok(None) => {}
                Ok(Some(Message::Text(bytes))) => {
                    match rate.check() {
                        Verdict::Allow => {}
                        Verdict::Reject => {
                            app.send_error(
                                conn,
                                ErrorCode::RateLimited,
                                "slow down: message dropped",
                            );
                            continue;
                        }
                        Verdict::Close => {
                            return self.close_with(
                                ErrorCode::RateLimited,
                                "rate limit exceeded",
                                CloseCode::RateLimited,
                            );
                        }
                    }
                    if let Some(end) = self.on_text(&bytes) {
                        return end;
                    }
                }
                Ok(Some(Message::Binary)) => {
                    return self.close_with(
                        ErrorCode::InvalidMessage,
                        "text frames only",
                        CloseCode::UnsupportedData,
                    );
                }
                Err(AssembleError::TooLarge) => {
                    return self.close_with(
                        ErrorCode::TooLarge,
                        "message too large",
                        CloseCode::MessageTooBig,
                    );
                }
                Err(AssembleError::InvalidUtf8) => {
                    return self.close_with(
                        ErrorCode::InvalidMessage,
                        "invalid utf-8",
                        CloseCode::InvalidPayload,
                    );
                }
                Err(AssembleError::BadFragment) => {
                    return self.close_with(
                        ErrorCode::InvalidMessage,
                        "invalid fragmentation",
                        CloseCode::ProtocolError,
                    );
                }
            }
        }
    }

    fn close_with(&self, code: ErrorCode, message: &str, close: CloseCode) -> End {
        self.app.send_error(self.conn, code, message);
        self.app.close(self.conn, close);
        End::Closed(close)
    }

    fn on_read_error(&self, err: &WebSocketError) -> End {
        let close = match err {
            WebSocketError::FrameTooLarge => CloseCode::MessageTooBig,
            WebSocketError::InvalidUTF8 => CloseCode::InvalidPayload,
            WebSocketError::UnexpectedEOF
            | WebSocketError::IoError(_)
            | WebSocketError::ConnectionClosed
            | WebSocketError::SendError(_) => return End::Dropped,
            _ => CloseCode::ProtocolError,
        };
        debug!(conn = %self.conn, %err, "websocket protocol error");
        match close {
            CloseCode::MessageTooBig => {
                self.close_with(ErrorCode::TooLarge, "frame too large", close)
            }
            CloseCode::InvalidPayload => {
                self.close_with(ErrorCode::InvalidMessage, "invalid utf-8", close)
            }
            _ => {
                self.app.close(self.conn, close);
                End::Closed(close)
            }
        }
    }

    /// Handles one text message; returns how the session ends, if it does.
    fn on_text(&mut self, bytes: &[u8]) -> Option<End> {
        let app = &self.app;
        let conn = self.conn;
        let msg = match ClientMessage::decode(bytes, app.config.max_message_bytes) {
            Ok(msg) => msg,
            Err(err) => {
                app.send_error(conn, err.code(), err.to_string());
                return None;
            }
        };
        if self.identity.is_some() {
            app.drive(|core, now| core.handle_message(now, conn, msg));
            return None;
        }
        let ClientMessage::Auth { token, user_name } = msg else {
            app.send_error(
                conn,
                ErrorCode::NotAuthenticated,
                "the first message must be auth",
            );
            return None;
        };
        match self.verify(&token) {
            Ok(identity) => {
                debug!(%conn, user = %identity.user_id, room = %identity.room_id, "authenticated");
                self.identity = Some(identity.clone());
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

    fn verify(&self, token: &str) -> Result<Identity, (ErrorCode, String)> {
        let now = self.app.clock.now_ms();
        let claims = self
            .app
            .auth
            .read()
            .verify(token, now)
            .map_err(|e| (auth_error_code(&e), e.to_string()))?;
        let user_id = UserId::new(claims.user_id).map_err(|_| {
            (
                ErrorCode::TokenMalformed,
                "token user id is invalid".to_owned(),
            )
        })?;
        let room_id = RoomId::new(claims.room_id).map_err(|_| {
            (
                ErrorCode::TokenMalformed,
                "token room id is invalid".to_owned(),
            )
        })?;
        Ok(Identity { user_id, room_id })
    }
}

/// Drains the connection's queue onto the socket; the only writer of this WebSocket.
///
/// Frames queued together are written together: the batch is flushed when the
/// queue is momentarily empty, so a burst costs one system call, not one per frame.
async fn write_loop(
    mut tx: WebSocketWrite<BatchWriter<WriteHalf<Io>>>,
    mut queue: tokio::sync::mpsc::Receiver<Outbound>,
    pending_bytes: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let (result, last) = match item {
                Outbound::Text(bytes) => {
                    let res = tx.write_frame(Frame::text(Payload::Borrowed(&bytes))).await;
                    pending_bytes.fetch_sub(bytes.len(), Ordering::Relaxed);
                    (res, false)
                }
                Outbound::Ping => {
                    let ping = Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[]));
                    (tx.write_frame(ping).await, false)
                }
                Outbound::Control(frame) => {
                    let last = frame.opcode == OpCode::Close;
                    (tx.write_frame(frame).await, last)
                }
                Outbound::Close(code) => {
                    let close = Frame::close(code.code(), code.reason().as_bytes());
                    (tx.write_frame(close).await, true)
                }
            };
            if result.is_err() {
                return;
            }
            if last {
                let _ = tx.flush().await;
                return;
            }
            next = queue.try_recv().ok();
        }
        if tx.flush().await.is_err() {
            return;
        }
    }
}
