//! A WebSocket client on a bare TCP socket: it sends exactly the bytes it is given (any
//! frame at all, masked or not, cut off or oversized) and never answers anything by itself,
//! so tests can play a broken or hostile client and see every frame the server sends.
//!
//! Everything is bounded in time: every read has a deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::peers::{QUIET, WAIT};

/// The `auth` message for `token`.
pub fn auth_text(token: &str) -> String {
    json!({"type": "auth", "data": {"token": token}}).to_string()
}

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// The mask every frame of ours uses (any mask will do; the server must unmask).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame whose first byte (FIN, RSV bits, opcode) is `first`, declaring
/// `declared` payload bytes and carrying `payload` (which may be shorter: a cut-off frame).
pub fn raw_frame(first: u8, declared: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(first);
    match declared {
        n if n < 126 => out.push(0x80 | u8::try_from(n).unwrap()),
        n if n <= u64::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A complete masked frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let first = if fin { 0x80 } else { 0 } | opcode;
    raw_frame(first, payload.len() as u64, payload)
}

/// A frame from the server.
#[derive(Debug)]
pub struct ServerFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The opcode (the low four bits of the first byte).
    pub opcode: u8,
    /// The (unmasked) payload.
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a close frame (`None`: no code, or not a close frame).
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// How a read from the server ended, when no frame came.
#[derive(Debug)]
pub enum ReadEnd {
    /// The server closed the TCP connection (FIN).
    Eof,
    /// The connection failed (reset).
    Failed(std::io::Error),
    /// Nothing arrived before the deadline.
    Timeout,
}

/// What a bare client saw next, heartbeats and pings skipped.
#[derive(Debug)]
pub enum Seen {
    /// A text message.
    Text(String),
    /// A close frame with this code (`None`: no code).
    Close(Option<u16>),
    /// The TCP connection ended without a close frame.
    Dropped,
    /// Nothing before the deadline.
    Nothing,
}

/// The outcome of a hand-made WebSocket upgrade.
pub enum Upgrade {
    /// 101: a WebSocket.
    Accepted(RawWs),
    /// Any other answer: status and body.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The response body.
        body: Vec<u8>,
    },
}

/// A WebSocket client on a bare TCP socket: it sends exactly the bytes it is given and
/// never answers anything by itself (no pongs, no close echo).
pub struct RawWs {
    /// The socket.
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades to a WebSocket; panics unless the answer is 101.
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        match Self::upgrade(tcp, addr).await {
            Upgrade::Accepted(ws) => ws,
            Upgrade::Refused { status, body } => panic!(
                "upgrade refused: {status} {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Connects from the loopback address `source` (e.g. 127.0.0.2) to `addr`.
    pub async fn tcp_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .expect("connected in time")
            .unwrap()
    }

    /// Connects with a tiny receive buffer, so that not reading fills the server's queue fast.
    pub async fn connect_small_window(addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .expect("connected in time")
            .unwrap();
        match Self::upgrade(tcp, addr).await {
            Upgrade::Accepted(ws) => ws,
            Upgrade::Refused { status, .. } => panic!("upgrade refused: {status}"),
        }
    }

    /// Upgrades to a WebSocket, sending `frames` in the same write as the request (before
    /// the server has answered); panics unless the answer is 101.
    pub async fn connect_with_frames(addr: SocketAddr, frames: &[u8]) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        match Self::upgrade_with(tcp, addr, frames).await {
            Upgrade::Accepted(ws) => ws,
            Upgrade::Refused { status, .. } => panic!("upgrade refused: {status}"),
        }
    }

    /// Sends a WebSocket upgrade request on `tcp` and reads the answer.
    pub async fn upgrade(tcp: TcpStream, addr: SocketAddr) -> Upgrade {
        Self::upgrade_with(tcp, addr, &[]).await
    }

    /// Sends a WebSocket upgrade request followed by `early` bytes, and reads the answer.
    pub async fn upgrade_with(mut tcp: TcpStream, addr: SocketAddr, early: &[u8]) -> Upgrade {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(early);
        tcp.write_all(&bytes).await.unwrap();
        let deadline = Instant::now() + WAIT;
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
                .await
                .expect("an answer to the upgrade in time")
                .unwrap_or(0);
            assert!(
                n > 0,
                "connection closed before the upgrade answer: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line: {head}"));
        let rest = buf.split_off(head_end);
        if status == 101 {
            return Upgrade::Accepted(Self { tcp, buf: rest });
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = rest;
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
                .await
                .expect("the refusal's body in time")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Upgrade::Refused { status, body }
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// Sends one masked text frame; panics if the write fails.
    pub async fn send_text(&mut self, text: &str) {
        self.send(&frame(true, OP_TEXT, text.as_bytes()))
            .await
            .unwrap();
    }

    /// Sends `auth` and asserts `auth-ok`.
    pub async fn auth(&mut self, token: &str, who: &str) {
        self.send_text(&auth_text(token)).await;
        match self.next(who).await {
            Seen::Text(text) if text.starts_with(r#"{"type":"auth-ok""#) => {}
            other => panic!("{who}: expected auth-ok, got {other:?}"),
        }
    }

    /// Reads one frame before `deadline`.
    pub async fn read_frame(&mut self, deadline: Instant) -> Result<ServerFrame, ReadEnd> {
        loop {
            if let Some(frame) = self.parse_frame() {
                return Ok(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Err(_) => return Err(ReadEnd::Timeout),
                Ok(Err(err)) => return Err(ReadEnd::Failed(err)),
                Ok(Ok(0)) => return Err(ReadEnd::Eof),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn parse_frame(&mut self) -> Option<ServerFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "a server frame is masked");
        let (len, header) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                usize::try_from(u64::from_be_bytes(b[2..10].try_into().unwrap())).unwrap(),
                10,
            ),
            126 | 127 => return None,
            n => (usize::from(n), 2),
        };
        if b.len() < header + len {
            return None;
        }
        let frame = ServerFrame {
            fin: b[0] & 0x80 != 0,
            opcode: b[0] & 0x0f,
            payload: b[header..header + len].to_vec(),
        };
        self.buf.drain(..header + len);
        Some(frame)
    }

    /// The next text message or the end, within `wait`; heartbeats, pings and pongs skipped.
    pub async fn next_within(&mut self, wait: Duration) -> Seen {
        let deadline = Instant::now() + wait;
        loop {
            match self.read_frame(deadline).await {
                Err(ReadEnd::Timeout) => return Seen::Nothing,
                Err(ReadEnd::Eof | ReadEnd::Failed(_)) => return Seen::Dropped,
                Ok(f) if f.opcode == OP_CLOSE => {
                    let code = (f.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                    return Seen::Close(code);
                }
                Ok(f) if f.opcode == OP_TEXT => {
                    let text = String::from_utf8(f.payload).expect("server text is UTF-8");
                    if text == r#"{"type":"heartbeat"}"# {
                        continue;
                    }
                    return Seen::Text(text);
                }
                Ok(_) => continue,
            }
        }
    }

    /// The next text message or the end, within [`WAIT`].
    pub async fn next(&mut self, who: &str) -> Seen {
        match self.next_within(WAIT).await {
            Seen::Nothing => panic!("{who}: nothing arrived in {WAIT:?}"),
            seen => seen,
        }
    }

    /// Asserts the next message is `error` with `code`.
    pub async fn expect_error(&mut self, who: &str, code: &str) {
        match self.next(who).await {
            Seen::Text(text) => {
                let json: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    json["type"], "error",
                    "{who}: expected error {code}, got {text}"
                );
                assert_eq!(json["data"]["code"], code, "{who}: {text}");
            }
            other => panic!("{who}: expected error {code}, got {other:?}"),
        }
    }

    /// Asserts the next thing is a close frame with `code`.
    pub async fn expect_close(&mut self, who: &str, code: u16) {
        match self.next(who).await {
            Seen::Close(got) => assert_eq!(got, Some(code), "{who}: close code"),
            other => panic!("{who}: expected close {code}, got {other:?}"),
        }
    }

    /// Reads until the connection ends: the texts that came first and the close code
    /// (`None` when the TCP connection ended without a close frame).
    pub async fn end(&mut self, who: &str) -> (Vec<String>, Option<u16>) {
        let mut texts = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Seen::Text(text) => texts.push(text),
                Seen::Close(code) => return (texts, code),
                Seen::Dropped => return (texts, None),
                Seen::Nothing => panic!("{who}: still open after {WAIT:?}; got {texts:?}"),
            }
        }
    }

    /// Asserts nothing but heartbeats arrives for [`QUIET`] and the connection stays open.
    pub async fn expect_silence(&mut self, who: &str) {
        match self.next_within(QUIET).await {
            Seen::Nothing => {}
            other => panic!("{who}: expected silence, got {other:?}"),
        }
    }

    /// Reads until the server closes the TCP connection, within [`WAIT`]; every frame.
    pub async fn frames_until_eof(&mut self) -> Vec<ServerFrame> {
        let mut bytes = Vec::new();
        tokio::time::timeout(WAIT, self.tcp.read_to_end(&mut bytes))
            .await
            .expect("the server closes the connection")
            .unwrap();
        self.buf.extend_from_slice(&bytes);
        let mut frames = Vec::new();
        while let Some(frame) = self.parse_frame() {
            frames.push(frame);
        }
        assert!(self.buf.is_empty(), "truncated frame");
        frames
    }

    /// The socket and the bytes already read from it but not yet parsed.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.tcp, self.buf)
    }

    /// Resets the TCP connection (`SO_LINGER` 0): no FIN, no close frame.
    pub fn reset(self) {
        let _ = self.tcp.set_zero_linger();
        drop(self);
    }
}

/// Reads a bare socket until the server ends it; `true` when it did within `wait`.
pub async fn ends_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}
