//! Tools of the adversarial tests: a WebSocket client on a bare TCP socket that can send
//! any bytes at all, a "control pair" of well-behaved peers that keeps relaying offers
//! while an attack runs, and the checks made after every attack (health, connection
//! count, memory).
//!
//! Everything is bounded in time: every read has a deadline, every loop a count.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use octate_client::Client;
use octate_protocol::{ServerMessage, SignalKind};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How much the process's resident set may grow during one attack.
///
/// The server runs inside the test process, so its memory is measured as the resident set
/// of the whole process (`RssProbe`, reported by `/health` as `memory.heapUsedBytes`). Other
/// tests run in parallel in the same process and the allocator keeps freed pages, so the
/// bound is generous: it catches a leak or an unbounded buffer (an attack sends up to tens
/// of MiB), not a few pages of allocator slack.
pub const MEMORY_BOUND: u64 = 64 * 1024 * 1024;

// ---- HTTP -------------------------------------------------------------------------------

pub use crate::common::peers::{assert_http_error, body, get, post, request};

/// The current `/stats`.
pub async fn stats(http: SocketAddr) -> Value {
    let resp = get(http, "/stats").await;
    assert_eq!(resp.status, 200, "/stats");
    body(&resp)
}

/// `/stats` `server.totalConnections`.
pub async fn total_connections(http: SocketAddr) -> u64 {
    stats(http).await["server"]["totalConnections"]
        .as_u64()
        .unwrap()
}

/// Polls `/stats` until `server.totalConnections` is `want`; panics after [`WAIT`].
pub async fn wait_for_connections(http: SocketAddr, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = stats(http).await;
        if stats["server"]["totalConnections"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "totalConnections never came back to {want}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A token from `POST /api/auth/token`, with the admin key when one is set.
pub async fn token(http: SocketAddr, user: &str, room: &str, admin_key: Option<&str>) -> String {
    let fetch = octate_client::fetch_token(http, user, room, admin_key);
    tokio::time::timeout(WAIT, fetch)
        .await
        .expect("token issued in time")
        .unwrap()
}

/// The `auth` message for `token`.
pub fn auth_text(token: &str) -> String {
    json!({"type": "auth", "data": {"token": token}}).to_string()
}

// ---- Well-behaved clients ---------------------------------------------------------------

pub use crate::common::peers::{QUIET, WAIT, expect_end, expect_silence, next, next_text};

/// Connects a tungstenite client and authenticates it; asserts `auth-ok` for `user`.
pub async fn join(signaling: SocketAddr, token: &str, user: &str) -> Client {
    let url = format!("ws://{signaling}/");
    let (mut client, first) = tokio::time::timeout(WAIT, Client::join(&url, token, None))
        .await
        .unwrap_or_else(|_| panic!("{user}: no auth answer in {WAIT:?}"))
        .unwrap_or_else(|e| panic!("{user}: join failed: {e}"));
    client.set_timeout(WAIT);
    match first {
        ServerMessage::AuthOk { user_id, .. } if user_id.as_str() == user => client,
        other => panic!("{user}: expected auth-ok, got {other:?}"),
    }
}

/// Asserts the next message is an `error` with `code` (its wire name); returns the message text.
pub async fn expect_error(client: &mut Client, who: &str, code: &str) -> String {
    let text = next_text(client, who).await;
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json["type"], "error",
        "{who}: expected error {code}, got {text}"
    );
    assert_eq!(json["data"]["code"], code, "{who}: {text}");
    json["data"]["message"].as_str().unwrap().to_owned()
}

// ---- A WebSocket client on a bare socket ------------------------------------------------

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
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
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
    Refused { status: u16, body: Vec<u8> },
}

/// A WebSocket client on a bare TCP socket: it sends exactly the bytes it is given and
/// never answers anything by itself (no pongs, no close echo).
pub struct RawWs {
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

    /// Sends a WebSocket upgrade request on `tcp` and reads the answer.
    pub async fn upgrade(mut tcp: TcpStream, addr: SocketAddr) -> Upgrade {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
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

// ---- The control pair -------------------------------------------------------------------

/// The control pair's room.
pub const CONTROL_ROOM: &str = "control-room";
const CONTROL_A: &str = "control-a";
const CONTROL_B: &str = "control-b";

/// Pause between two round trips: ~12 messages a second per peer, well under the rate limit.
const CONTROL_PACE: Duration = Duration::from_millis(80);

/// What the control pair saw.
#[derive(Debug)]
pub struct ControlReport {
    /// Offers answered, each checked for its sequence number on both legs.
    pub round_trips: u64,
    /// Slowest leg (one message from one control peer to the other).
    pub slowest: Duration,
    /// The first thing that went wrong, if anything did.
    pub failure: Option<String>,
}

/// Two authenticated peers in their own room that relay numbered offers and answers back
/// and forth in a background task for as long as an attack runs.
pub struct ControlPair {
    stop: watch::Sender<bool>,
    task: JoinHandle<ControlReport>,
}

impl ControlPair {
    /// Joins both control peers and starts relaying.
    pub async fn start(http: SocketAddr, signaling: SocketAddr, admin_key: Option<&str>) -> Self {
        let token_a = token(http, CONTROL_A, CONTROL_ROOM, admin_key).await;
        let token_b = token(http, CONTROL_B, CONTROL_ROOM, admin_key).await;
        let mut a = join(signaling, &token_a, CONTROL_A).await;
        let b = join(signaling, &token_b, CONTROL_B).await;
        match next(&mut a, CONTROL_A).await {
            ServerMessage::PeerJoined { peer, .. } if peer.user_id.as_str() == CONTROL_B => {}
            other => panic!("{CONTROL_A}: expected peer-joined {CONTROL_B}, got {other:?}"),
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(relay(a, b, stopped));
        Self { stop, task }
    }

    /// Stops relaying after one last round trip; asserts nothing was lost.
    pub async fn finish(self) -> ControlReport {
        let _ = self.stop.send(true);
        let report = tokio::time::timeout(WAIT * 3, self.task)
            .await
            .expect("the control pair stops in time")
            .expect("the control task does not panic");
        assert!(
            report.failure.is_none(),
            "the control pair was disturbed: {report:?}"
        );
        assert!(report.round_trips >= 1, "{report:?}");
        report
    }
}

async fn relay(mut a: Client, mut b: Client, mut stopped: watch::Receiver<bool>) -> ControlReport {
    let mut report = ControlReport {
        round_trips: 0,
        slowest: Duration::ZERO,
        failure: None,
    };
    for seq in 0u64.. {
        let last = *stopped.borrow_and_update();
        let legs = [(SignalKind::Offer, "offer"), (SignalKind::Answer, "answer")];
        for (kind, field) in legs {
            let (from, to, from_id, to_id) = match kind {
                SignalKind::Offer => (&mut a, &mut b, CONTROL_A, CONTROL_B),
                _ => (&mut b, &mut a, CONTROL_B, CONTROL_A),
            };
            let sent = Instant::now();
            let payload = json!({"type": field, "sdp": format!("v=0 control {seq}"), "seq": seq});
            if let Err(err) = from.signal(kind, to_id, payload).await {
                report.failure = Some(format!("{from_id}: sending {field} {seq}: {err}"));
                return report;
            }
            match to.recv_within(WAIT).await {
                Ok(ServerMessage::Signal {
                    kind: got,
                    from,
                    data,
                    ..
                }) if got == kind && from.as_str() == from_id => {
                    let data: Value = serde_json::from_str(data.get()).unwrap();
                    if data[field]["seq"] != seq {
                        report.failure = Some(format!(
                            "{to_id}: expected {field} {seq}, got {data} (lost or reordered)"
                        ));
                        return report;
                    }
                }
                Ok(other) => {
                    report.failure =
                        Some(format!("{to_id}: expected {field} {seq}, got {other:?}"));
                    return report;
                }
                Err(err) => {
                    report.failure = Some(format!("{to_id}: expected {field} {seq}, got {err}"));
                    return report;
                }
            }
            report.slowest = report.slowest.max(sent.elapsed());
        }
        report.round_trips += 1;
        if last {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(CONTROL_PACE) => {}
            _ = stopped.changed() => {}
        }
    }
    let _ = a.close().await;
    let _ = b.close().await;
    report
}

// ---- Before and after an attack ---------------------------------------------------------

/// The control pair plus what the server looked like before the attack.
pub struct Watch {
    http: SocketAddr,
    control: ControlPair,
    connections: u64,
    resident: u64,
}

impl Watch {
    /// Starts the control pair and notes the connection count and memory.
    pub async fn start(http: SocketAddr, signaling: SocketAddr) -> Self {
        Self::start_with_key(http, signaling, None).await
    }

    /// [`Watch::start`] on a server with an admin key.
    pub async fn start_with_key(
        http: SocketAddr,
        signaling: SocketAddr,
        admin_key: Option<&str>,
    ) -> Self {
        let control = ControlPair::start(http, signaling, admin_key).await;
        let connections = total_connections(http).await;
        let resident = resident(http).await;
        Self {
            http,
            control,
            connections,
            resident,
        }
    }

    /// Connections open when the attack began (the control pair's included).
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Stops the control pair and asserts the server recovered: the control pair lost
    /// nothing, `/health` is 200 `ok`, `/stats` counts the connections open before the
    /// attack plus `still_open` (the test's own, still connected), and memory is back
    /// within [`MEMORY_BOUND`] of where it started.
    pub async fn finish(self, still_open: u64) -> ControlReport {
        // The control pair is still connected while the count settles. A session leaves
        // the connection registry a moment before the core removes its peer, so `peers`
        // may briefly exceed `totalConnections`: wait for both to settle.
        let want = self.connections + still_open;
        let deadline = Instant::now() + WAIT;
        let stats = loop {
            let stats = stats(self.http).await;
            let server = &stats["server"];
            let connections = server["totalConnections"].as_u64().unwrap();
            if connections == want && server["peers"].as_u64().unwrap() <= connections {
                break stats;
            }
            assert!(
                Instant::now() < deadline,
                "expected {want} connections and no more peers than that: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let server = &stats["server"];
        assert!(server["uptime"].is_u64(), "{stats}");
        assert!(server["activeRooms"].as_u64().unwrap() >= 1, "{stats}");
        assert!(server["peers"].as_u64().unwrap() >= 2, "{stats}");
        let report = self.control.finish().await;
        let health = get(self.http, "/health").await;
        assert_eq!(health.status, 200, "/health");
        let health = body(&health);
        assert_eq!(health["status"], "ok", "{health}");
        let now = resident(self.http).await;
        assert!(
            now < self.resident + MEMORY_BOUND,
            "memory grew from {} to {} bytes during the attack",
            self.resident,
            now
        );
        report
    }
}

/// The process's resident set as the server reports it (`RssProbe`).
pub async fn resident(http: SocketAddr) -> u64 {
    let health = body(&get(http, "/health").await);
    health["memory"]["heapUsedBytes"].as_u64().unwrap()
}
