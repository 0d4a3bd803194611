//! A small Rust client for Octate: fetch a token over HTTP, connect, authenticate, and
//! exchange signaling messages. It shares only the wire types with the server; the
//! WebSocket side is `tokio-tungstenite`, the HTTP side a minimal HTTP/1.1 exchange.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use octate_protocol::http::{TokenRequest, TokenResponse};
use octate_protocol::{ClientMessage, RawJson, RoomId, ServerMessage, SignalKind, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server sent something that is not a valid message.
    #[error("protocol: {0}")]
    Protocol(#[from] octate_protocol::ProtocolError),
    /// An HTTP response could not be understood.
    #[error("http: {0}")]
    Http(String),
    /// The connection closed.
    #[error("closed: {0:?}")]
    Closed(Option<(u16, String)>),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(err: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(err))
    }
}

/// An HTTP response: status and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Raw headers, one `name: value` per entry.
    pub headers: Vec<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Parses the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Http(e.to_string()))
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends one HTTP/1.1 request (connection: close) and reads the whole response.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, ClientError> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, ClientError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Http("no header end".into()))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| ClientError::Http(e.to_string()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Http(format!("bad status line {status_line:?}")))?;
    let headers: Vec<String> = lines.map(str::to_owned).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|h| {
        h.to_ascii_lowercase().starts_with("transfer-encoding:")
            && h.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| ClientError::Http("bad chunk".into()))?;
        let size_text =
            std::str::from_utf8(&data[..line_end]).map_err(|e| ClientError::Http(e.to_string()))?;
        let size = usize::from_str_radix(size_text.trim(), 16)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(ClientError::Http("short chunk".into()));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// POSTs a JSON body.
pub async fn post_json<T: Serialize>(
    addr: SocketAddr,
    path: &str,
    body: &T,
    bearer: Option<&str>,
) -> Result<HttpResponse, ClientError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Http(e.to_string()))?;
    let auth = bearer.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = auth.as_deref() {
        headers.push(("Authorization", auth));
    }
    http_request(addr, "POST", path, &headers, Some(&bytes)).await
}

/// Asks the server for a token (`POST /api/auth/token`).
pub async fn fetch_token(
    addr: SocketAddr,
    user: &str,
    room: &str,
    admin_key: Option<&str>,
) -> Result<String, ClientError> {
    let req = TokenRequest {
        user_id: UserId::new(user)?,
        room_id: RoomId::new(room)?,
        ttl_seconds: None,
    };
    let resp = post_json(addr, "/api/auth/token", &req, admin_key).await?;
    if resp.status != 200 {
        return Err(ClientError::Http(format!(
            "token request failed: {} {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        )));
    }
    Ok(resp.json::<TokenResponse>()?.token)
}

/// A signaling connection.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    timeout: Duration,
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
            timeout: Duration::from_secs(5),
        })
    }

    /// Connects, authenticates with `token`, and returns the client with its `auth-ok`.
    pub async fn join(
        url: &str,
        token: &str,
        user_name: Option<&str>,
    ) -> Result<(Self, ServerMessage), ClientError> {
        let mut client = Self::connect(url).await?;
        client
            .send(&ClientMessage::Auth {
                token: token.to_owned(),
                user_name: user_name.map(str::to_owned),
                room_id: None,
                user_id: None,
            })
            .await?;
        let first = client.recv().await?;
        Ok((client, first))
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
        let field = match kind {
            SignalKind::Offer => "offer",
            SignalKind::Answer => "answer",
            SignalKind::IceCandidate => "candidate",
        };
        let data = serde_json::json!({ "peer": peer, field: payload });
        let msg = ClientMessage::Signal {
            kind,
            target: UserId::new(peer)?,
            data: RawJson::from_value(&data),
        };
        self.send(&msg).await
    }

    /// Next server message, skipping heartbeats (answered with `pong`) and pings.
    pub async fn recv(&mut self) -> Result<ServerMessage, ClientError> {
        let text = self.recv_text().await?;
        Ok(ServerMessage::decode(text.as_bytes())?)
    }

    /// Next server message within `wait` (instead of the client's timeout).
    pub async fn recv_within(&mut self, wait: Duration) -> Result<ServerMessage, ClientError> {
        let saved = std::mem::replace(&mut self.timeout, wait);
        let result = self.recv().await;
        self.timeout = saved;
        result
    }

    /// Next server message as the exact text the server sent, skipping heartbeats
    /// (answered with `pong`) and pings.
    ///
    /// The timeout bounds the whole call: heartbeats skipped on the way do not extend it.
    pub async fn recv_text(&mut self) -> Result<String, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout)?;
            match next {
                None => return Err(ClientError::Closed(None)),
                Some(Err(err)) => return Err(err.into()),
                Some(Ok(Message::Text(text))) => {
                    if ServerMessage::decode(text.as_bytes()).ok() == Some(ServerMessage::Heartbeat)
                    {
                        self.send(&ClientMessage::Pong).await?;
                        continue;
                    }
                    return Ok(text.as_str().to_owned());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::Closed(
                        frame.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                Some(Ok(_)) => continue,
            }
        }
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

    /// Closes the connection politely.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.ws.close(None).await?;
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
}
