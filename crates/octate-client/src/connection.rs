//! One signaling connection: the WebSocket, the JSON messages on it, heartbeats answered on
//! the way, and the `auth` and `resume` handshakes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use octate_protocol::{
    ClientMessage, ErrorCode, IceServer, RawJson, ResumeTicket, ServerMessage, SignalKind, UserId,
};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::ClientError;
use crate::welcome::{Latest, Membership};

/// How long `recv` waits unless told otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a wait for the next message is bounded.
#[derive(Clone, Copy)]
enum Wait {
    /// The whole call, heartbeats skipped on the way included.
    Total(Duration),
    /// Each frame: any frame, a heartbeat or a ping too, starts the wait again.
    Silence(Duration),
}

/// A signaling connection.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    timeout: Duration,
    latest: Latest,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a WebSocket to `url` (e.g. `ws://127.0.0.1:3001/`).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self {
            ws,
            timeout: DEFAULT_TIMEOUT,
            latest: Latest::default(),
        })
    }

    /// Connects, sends `auth` with `token`, and returns the client with the first answer,
    /// whatever it is.
    pub async fn join(
        url: &str,
        token: &str,
        user_name: Option<&str>,
    ) -> Result<(Self, ServerMessage), ClientError> {
        let mut client = Self::connect(url).await?;
        client.send(&auth(token, user_name)).await?;
        let first = client.recv().await?;
        Ok((client, first))
    }

    /// Connects and authenticates with `token`; an answer other than `auth-ok` is an error.
    pub async fn authenticate(
        url: &str,
        token: &str,
        user_name: Option<&str>,
    ) -> Result<(Self, Membership), ClientError> {
        let mut client = Self::connect(url).await?;
        client.send(&auth(token, user_name)).await?;
        let membership = client.expect_welcome("auth-ok").await?;
        Ok((client, membership))
    }

    /// Connects and takes over a dropped session with its `ticket`; an answer other than
    /// `resumed` is an error, [`ClientError::ResumeFailed`] when the session is gone.
    pub async fn resume(
        url: &str,
        ticket: &ResumeTicket,
    ) -> Result<(Self, Membership), ClientError> {
        let mut client = Self::connect(url).await?;
        client
            .send(&ClientMessage::Resume {
                session_id: ticket.session_id.clone(),
                resume_token: ticket.resume_token.clone(),
            })
            .await?;
        let membership = client.expect_welcome("resumed").await?;
        Ok((client, membership))
    }

    /// The ticket that resumes this connection's session, from the newest `auth-ok`,
    /// `room-joined` or `resumed`; `None` when the server hands out none or the session ended.
    pub fn ticket(&self) -> Option<&ResumeTicket> {
        self.latest.ticket()
    }

    /// The newest STUN/TURN servers the server handed out on this connection.
    pub fn ice_servers(&self) -> Option<&[IceServer]> {
        self.latest.ice_servers()
    }

    /// What this connection was handed out last.
    pub(crate) fn latest(&self) -> &Latest {
        &self.latest
    }

    /// Sets how long `recv` waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a message.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        self.send_text(msg.encode()).await
    }

    /// Sends raw text, valid or not.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        self.ws.send(Message::text(text.into())).await?;
        Ok(())
    }

    /// Sends a raw WebSocket message (binary, ping, ...).
    pub async fn send_raw(&mut self, msg: Message) -> Result<(), ClientError> {
        self.ws.send(msg).await?;
        Ok(())
    }

    /// Sends an SDP offer / answer or ICE candidate to `peer`.
    pub async fn signal(
        &mut self,
        kind: SignalKind,
        peer: &str,
        payload: serde_json::Value,
    ) -> Result<(), ClientError> {
        self.send(&signal(kind, peer, payload)?).await
    }

    /// Next server message, skipping heartbeats (answered with `pong`) and pings.
    pub async fn recv(&mut self) -> Result<ServerMessage, ClientError> {
        let (_, msg) = self.next_message(Wait::Total(self.timeout)).await?;
        Ok(msg?)
    }

    /// Next server message within `wait` (instead of the client's timeout).
    pub async fn recv_within(&mut self, wait: Duration) -> Result<ServerMessage, ClientError> {
        let (_, msg) = self.next_message(Wait::Total(wait)).await?;
        Ok(msg?)
    }

    /// Next server message as the exact text the server sent, skipping heartbeats
    /// (answered with `pong`) and pings.
    ///
    /// The timeout bounds the whole call: heartbeats skipped on the way do not extend it.
    pub async fn recv_text(&mut self) -> Result<String, ClientError> {
        let (text, _) = self.next_message(Wait::Total(self.timeout)).await?;
        Ok(text)
    }

    /// Next server message, waiting as long as frames keep coming: only `silence` without
    /// any frame at all is a [`ClientError::Timeout`].
    pub(crate) async fn recv_until_silent(
        &mut self,
        silence: Duration,
    ) -> Result<ServerMessage, ClientError> {
        let (_, msg) = self.next_message(Wait::Silence(silence)).await?;
        Ok(msg?)
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            match self.recv().await {
                Err(ClientError::Closed(frame)) => return frame,
                Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Closes the connection with code 1000: the session ends, it cannot be resumed.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        self.ws.close(Some(normal)).await?;
        Ok(())
    }

    /// Drops the connection abruptly: no close frame, and the TCP connection is reset
    /// (`SO_LINGER` 0) instead of shut down, as when a browser tab crashes.
    pub fn abort(self) {
        if let MaybeTlsStream::Plain(tcp) = self.ws.get_ref() {
            let _ = tcp.set_zero_linger();
        }
        drop(self);
    }

    /// The answer to `auth` or `resume`: a welcome of type `expected`, or the refusal.
    async fn expect_welcome(&mut self, expected: &'static str) -> Result<Membership, ClientError> {
        let answer = self.recv().await?;
        match answer {
            ServerMessage::Error {
                code: ErrorCode::ResumeFailed,
                message,
                ..
            } => Err(ClientError::ResumeFailed(message)),
            ServerMessage::Error { code, message, .. } => {
                Err(ClientError::Refused { code, message })
            }
            msg if msg.kind() == expected => {
                Membership::from_message(&msg).ok_or(ClientError::UnexpectedAnswer(msg.kind()))
            }
            msg => Err(ClientError::UnexpectedAnswer(msg.kind())),
        }
    }

    /// The next message other than a heartbeat, as text and decoded; heartbeats are answered
    /// with `pong` and what the message hands out is remembered.
    async fn next_message(
        &mut self,
        wait: Wait,
    ) -> Result<
        (
            String,
            Result<ServerMessage, octate_protocol::ProtocolError>,
        ),
        ClientError,
    > {
        let mut deadline = Instant::now() + wait.limit();
        loop {
            let text = self.next_text_frame(&mut deadline, wait).await?;
            match ServerMessage::decode(text.as_bytes()) {
                Ok(ServerMessage::Heartbeat) => {
                    self.send(&ClientMessage::Pong).await?;
                    if let Wait::Silence(limit) = wait {
                        deadline = Instant::now() + limit;
                    }
                }
                Ok(msg) => {
                    self.latest.observe(&msg);
                    return Ok((text, Ok(msg)));
                }
                Err(err) => return Ok((text, Err(err))),
            }
        }
    }

    /// The next text frame, before `deadline`; other frames are skipped and, with
    /// [`Wait::Silence`], move the deadline.
    async fn next_text_frame(
        &mut self,
        deadline: &mut Instant,
        wait: Wait,
    ) -> Result<String, ClientError> {
        loop {
            let next = tokio::time::timeout_at(*deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout)?;
            match next {
                None => return Err(ClientError::Closed(None)),
                Some(Err(err)) => return Err(err.into()),
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::Closed(
                        frame.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                Some(Ok(_)) => {
                    if let Wait::Silence(limit) = wait {
                        *deadline = Instant::now() + limit;
                    }
                }
            }
        }
    }
}

impl Wait {
    fn limit(self) -> Duration {
        match self {
            Self::Total(limit) | Self::Silence(limit) => limit,
        }
    }
}

/// The `auth` message for `token`.
fn auth(token: &str, user_name: Option<&str>) -> ClientMessage {
    ClientMessage::Auth {
        token: token.to_owned(),
        user_name: user_name.map(str::to_owned),
        room_id: None,
        user_id: None,
    }
}

/// The signal message of `kind` carrying `payload` to `peer`.
pub(crate) fn signal(
    kind: SignalKind,
    peer: &str,
    payload: serde_json::Value,
) -> Result<ClientMessage, ClientError> {
    let field = match kind {
        SignalKind::Offer => "offer",
        SignalKind::Answer => "answer",
        SignalKind::IceCandidate => "candidate",
    };
    let data = serde_json::json!({ "peer": peer, field: payload });
    Ok(ClientMessage::Signal {
        kind,
        target: UserId::new(peer)?,
        data: RawJson::from_value(&data),
    })
}
