//! Connection and process lifecycle over real sockets: heartbeats and timeouts, slow
//! consumers, memory pressure, graceful shutdown (in-process and of the real binary),
//! the binary's command line, and a crash followed by a restart.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use octate_client::{Client, ClientError};
use octate_protocol::{ErrorCode, LeaveReason, RoomCloseReason, ServerMessage, SignalKind};
use octate_test::binary::{RealServer, run_to_exit, server_command};
use octate_test::peers::{self, expect_end, expect_peer_joined, expect_peer_left, next};
use octate_test::server::{TestServer, fast_config};
use octate_test::ws::{self, OP_CLOSE, OP_PING, OP_TEXT};
use octate_transport::TransportConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const BIN_SECRET: &str = "binary-test-secret-0123456789abcdef";

// ---- Raw clients that misbehave -------------------------------------------------------

type RawWs = WebSocketStream<TcpStream>;

/// A WebSocket whose receive buffer is tiny, so that not reading fills the server's queue fast.
async fn connect_small_window(addr: SocketAddr) -> RawWs {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let upgrade = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp);
    let (ws, _) = tokio::time::timeout(peers::WAIT, upgrade)
        .await
        .unwrap()
        .unwrap();
    ws
}

/// Sends `auth` on a raw WebSocket and then, deliberately, reads nothing.
async fn raw_auth(ws: &mut RawWs, token: &str) {
    let auth = json!({"type": "auth", "data": {"token": token}}).to_string();
    ws.send(Message::text(auth)).await.unwrap();
}

/// Reads a raw WebSocket until it ends; the close code, if a close frame came.
async fn raw_end(ws: &mut RawWs, who: &str) -> Option<u16> {
    let read_all = async {
        while let Some(item) = ws.next().await {
            match item {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(peers::WAIT, read_all)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{who}: the connection was still open after {:?}",
                peers::WAIT
            )
        })
}

// ---- Heartbeats -----------------------------------------------------------------------

/// A client read without pause by its own task, so that it answers every heartbeat
/// even while the test is busy elsewhere (a loaded machine must not make it look silent).
struct Pumped {
    who: &'static str,
    incoming: mpsc::UnboundedReceiver<Result<ServerMessage, ClientError>>,
    outgoing: mpsc::UnboundedSender<String>,
}

impl Pumped {
    fn new(mut client: Client, who: &'static str) -> Self {
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let (outgoing, mut out_rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    result = client.recv_within(Duration::from_secs(3600)) => {
                        let end = result.is_err();
                        let _ = in_tx.send(result);
                        if end {
                            return;
                        }
                    }
                    Some(text) = out_rx.recv() => {
                        let _ = client.send_text(text).await;
                    }
                }
            }
        });
        Self {
            who,
            incoming,
            outgoing,
        }
    }

    async fn next(&mut self) -> ServerMessage {
        let who = self.who;
        match tokio::time::timeout(peers::WAIT, self.incoming.recv()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(err))) => panic!("{who}: expected a message, got {err}"),
            Ok(None) => panic!("{who}: the reader stopped"),
            Err(_) => panic!("{who}: nothing arrived in {:?}", peers::WAIT),
        }
    }

    /// Asserts that for `wait` nothing arrives and the connection does not end.
    async fn quiet_for(&mut self, wait: Duration) {
        let who = self.who;
        if let Ok(got) = tokio::time::timeout(wait, self.incoming.recv()).await {
            panic!(
                "{who}: expected {wait:?} of silence, got {}",
                peers::brief(&got)
            );
        }
    }

    fn send(&self, text: &str) {
        self.outgoing.send(text.to_owned()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peers_time_out_and_answering_peers_stay() {
    let server = TestServer::start_tweaked(|c| {
        c.core.heartbeat_interval = Duration::from_millis(100);
        c.core.peer_timeout = Duration::from_millis(400);
    })
    .await;
    let mut alice = Pumped::new(server.join("alice", "hb").await.client, "alice");
    let mut zombie = ws::RawWs::connect(server.signaling).await;
    let token = server.token("zombie", "hb").await;
    zombie
        .send_text(&json!({"type": "auth", "data": {"token": token}}).to_string())
        .await;
    match alice.next().await {
        ServerMessage::PeerJoined { peer, .. } => assert_eq!(peer.user_id.as_str(), "zombie"),
        other => panic!(
            "alice: expected peer-joined zombie, got {}",
            peers::brief(&other)
        ),
    }

    // The zombie never reads, so it never answers heartbeats or pings.
    let started = Instant::now();
    match alice.next().await {
        ServerMessage::PeerLeft { peer, reason, .. } => {
            assert_eq!(peer.user_id.as_str(), "zombie");
            assert_eq!(reason, LeaveReason::Timeout);
        }
        other => panic!(
            "alice: expected peer-left zombie, got {}",
            peers::brief(&other)
        ),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "timed out too early: {:?}",
        started.elapsed()
    );
    let frames = zombie.frames_until_eof().await;
    let texts: Vec<String> = frames
        .iter()
        .filter(|f| f.opcode == OP_TEXT)
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .collect();
    assert!(texts[0].starts_with(r#"{"type":"auth-ok""#), "{texts:?}");
    assert!(
        texts.iter().any(|t| t == r#"{"type":"heartbeat"}"#),
        "no heartbeat sent: {texts:?}"
    );
    assert!(frames.iter().any(|f| f.opcode == OP_PING), "no ping sent");
    let last = frames.last().unwrap();
    let (op, payload) = (last.opcode, &last.payload);
    assert_eq!(
        op, OP_CLOSE,
        "the last frame closes the connection: {texts:?}"
    );
    assert_eq!(
        u16::from_be_bytes([payload[0], payload[1]]),
        4000,
        "the silent peer is closed with 4000"
    );

    // Alice answers every heartbeat (Client::recv does): 2 s later she is still there.
    alice.quiet_for(Duration::from_secs(2)).await;
    let listed = peers::body(&peers::get(server.http, "/api/rooms/hb/peers").await);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["userId"], "alice");
    alice.send(r#"{"type":"leave-room"}"#);
    assert!(matches!(alice.next().await, ServerMessage::RoomLeft { .. }));
    let stats = peers::stats(server.http).await;
    assert_eq!(stats["operations"]["peersTimedOut"], 1, "{stats}");
    server.stop().await;
}

// ---- Slow consumers -------------------------------------------------------------------

#[tokio::test]
async fn a_peer_that_does_not_read_is_dropped_and_the_others_carry_on() {
    let server = TestServer::start_tweaked(|c| c.outbound_queue_bytes = 128 * 1024).await;
    let mut xavier = server.join("xavier", "slow").await.client;
    let mut carol = server.join("carol", "slow").await.client;
    expect_peer_joined(&mut xavier, "xavier", "carol").await;
    let mut sam = connect_small_window(server.signaling).await;
    raw_auth(&mut sam, &server.token("sam", "slow").await).await;
    expect_peer_joined(&mut xavier, "xavier", "sam").await;
    expect_peer_joined(&mut carol, "carol", "sam").await;

    // ~60 KiB offers to sam, who reads nothing, until the server gives up on sam.
    let sdp = "a=candidate ".repeat(60 * 1024 / 12);
    let mut dropped = false;
    for round in 0..400 {
        xavier
            .signal(
                SignalKind::Offer,
                "sam",
                json!({"type": "offer", "sdp": sdp}),
            )
            .await
            .unwrap();
        if round % 8 == 7
            && peers::stats(server.http).await["operations"]["slowConsumersClosed"] != 0
        {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "sam was never closed as a slow consumer");
    let code = raw_end(&mut sam, "sam").await;
    assert!(
        matches!(code, None | Some(4008)),
        "sam: closed with {code:?}"
    );

    // The others hear sam leave; offers sent after that are refused, not queued.
    expect_peer_left(&mut carol, "carol", "sam", LeaveReason::Disconnected).await;
    loop {
        match next(&mut xavier, "xavier").await {
            ServerMessage::Error {
                code: ErrorCode::PeerNotFound,
                ..
            } => continue,
            ServerMessage::PeerLeft { peer, reason, .. } if peer.user_id.as_str() == "sam" => {
                assert_eq!(reason, LeaveReason::Disconnected);
                break;
            }
            other => panic!(
                "xavier: expected peer-left sam, got {}",
                peers::brief(&other)
            ),
        }
    }
    xavier
        .signal(
            SignalKind::Offer,
            "carol",
            json!({"type": "offer", "sdp": "v=0"}),
        )
        .await
        .unwrap();
    match next(&mut carol, "carol").await {
        ServerMessage::Signal {
            from,
            kind: SignalKind::Offer,
            ..
        } => assert_eq!(from.as_str(), "xavier"),
        other => panic!(
            "carol: expected xavier's offer, got {}",
            peers::brief(&other)
        ),
    }
    carol
        .signal(
            SignalKind::Answer,
            "xavier",
            json!({"type": "answer", "sdp": "v=0"}),
        )
        .await
        .unwrap();
    // Offers to sam still in flight when sam left are refused after its peer-left.
    let mut reply = next(&mut xavier, "xavier").await;
    while let ServerMessage::Error {
        code: ErrorCode::PeerNotFound,
        ..
    } = reply
    {
        reply = next(&mut xavier, "xavier").await;
    }
    match reply {
        ServerMessage::Signal {
            from,
            kind: SignalKind::Answer,
            ..
        } => assert_eq!(from.as_str(), "carol"),
        other => panic!(
            "xavier: expected carol's answer, got {}",
            peers::brief(&other)
        ),
    }
    let stats = peers::stats(server.http).await;
    assert!(
        stats["operations"]["slowConsumersClosed"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["server"]["peers"], 2, "{stats}");
    server.stop().await;
}

// ---- Memory pressure ------------------------------------------------------------------

/// Keeps `client` alive by sending a message every 20 ms: `presence` (which keeps the room
/// active) until `room_may_idle` turns true, then `heartbeat` (which keeps only the peer
/// alive). Returns every message received and the close code once the connection ends.
async fn keep_alive(
    mut client: Client,
    mut room_may_idle: watch::Receiver<bool>,
) -> (Vec<ServerMessage>, Option<u16>) {
    let mut received = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + peers::WAIT;
    loop {
        tokio::select! {
            result = client.recv() => match result {
                Ok(msg) => received.push(msg),
                Err(ClientError::Closed(frame)) => return (received, frame.map(|(code, _)| code)),
                Err(err) => panic!("connection failed: {err}; received {received:?}"),
            },
            _ = tick.tick() => {
                assert!(tokio::time::Instant::now() < deadline, "never closed; received {received:?}");
                let text = if *room_may_idle.borrow_and_update() {
                    r#"{"type":"heartbeat"}"#
                } else {
                    r#"{"type":"presence","data":{"status":"active"}}"#
                };
                if client.send_text(text).await.is_err() {
                    // The server closed first; the close frame is still to be read.
                    continue;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_memory_closes_idle_rooms() {
    let mut config = TransportConfig::default();
    config.core.memory_warning_bytes = 1;
    config.core.memory_critical_bytes = 2;
    config.core.room_idle_after = Duration::from_millis(100);
    config.core.idle_peer_after = Duration::from_millis(100);
    config.memory_check_interval = Duration::from_millis(100);
    let server = TestServer::start(config).await;

    let (idle_tx, idle_rx) = watch::channel(false);
    let alice = server.join("alice", "idle-room").await.client;
    let alice = tokio::spawn(keep_alive(alice, idle_rx.clone()));
    let bob = server.join("bob", "idle-room").await.client;
    let bob = tokio::spawn(keep_alive(bob, idle_rx));
    // Both are in: let the room go idle while both peers stay alive.
    idle_tx.send(true).unwrap();

    for (task, who) in [(alice, "alice"), (bob, "bob")] {
        let (received, code) = task.await.unwrap();
        let closed = received.iter().position(|m| {
            matches!(
                m,
                ServerMessage::RoomClosed {
                    reason: RoomCloseReason::MemoryPressure,
                    ..
                }
            )
        });
        assert!(
            closed.is_some(),
            "{who}: no room-closed memory-pressure in {received:?}"
        );
        assert_eq!(
            closed,
            Some(received.len() - 1),
            "{who}: room-closed must come last: {received:?}"
        );
        assert!(
            !received
                .iter()
                .any(|m| matches!(m, ServerMessage::PeerLeft { .. })),
            "{who}: a live peer was dropped: {received:?}"
        );
        assert_eq!(code, Some(4003), "{who}: close code");
    }

    let stats = peers::stats(server.http).await;
    assert!(
        stats["operations"]["memoryCleanups"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["memory"]["level"], "critical", "{stats}");
    assert_eq!(stats["server"]["activeRooms"], 0, "{stats}");
    let health = peers::body(&peers::get(server.http, "/health").await);
    assert_eq!(health["memory"]["level"], "critical", "{health}");
    let metrics = peers::get(server.http, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.lines().any(|l| l == "octate_rooms 0"), "{text}");
    server.stop().await;
}

// ---- Graceful shutdown in-process -----------------------------------------------------

#[tokio::test]
async fn stopping_the_server_closes_every_websocket_with_1001() {
    let server = TestServer::start(fast_config()).await;
    let mut alice = server.join("alice", "room-1").await.client;
    let mut bob = server.join("bob", "room-1").await.client;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    let mut anon = peers::connect(&server.ws_url()).await;
    let http = server.http;

    let started = Instant::now();
    let (_, a, b, c) = tokio::join!(
        server.stop(),
        expect_end(&mut alice, "alice"),
        expect_end(&mut bob, "bob"),
        expect_end(&mut anon, "anon"),
    );
    assert_eq!((a, b, c), (Some(1001), Some(1001), Some(1001)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        TcpStream::connect(http).await.is_err(),
        "the listener still accepts after shutdown"
    );
}

// ---- The real binary ------------------------------------------------------------------

/// Names of the process's threads that are tokio workers.
fn tokio_workers(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tokio-rt-worker")
        .count()
}

#[tokio::test]
async fn the_binary_shuts_down_gracefully_on_sigterm() {
    // 0 (one worker per CPU), one worker (the current-thread scheduler), and two.
    for (threads, workers) in [("0", None), ("1", Some(0)), ("2", Some(2))] {
        sigterm_with_workers(threads, workers).await;
    }
}

/// A whole session then SIGTERM, with `OCTATE_WORKER_THREADS=threads`.
async fn sigterm_with_workers(threads: &'static str, workers: Option<usize>) {
    let mut server = tokio::task::spawn_blocking(move || {
        let mut cmd = server_command();
        cmd.env("OCTATE_WORKER_THREADS", threads);
        RealServer::start_command(cmd, BIN_SECRET)
    })
    .await
    .unwrap();
    if let Some(want) = workers {
        // Worker threads start (and take their name) as the runtime starts: on a loaded
        // machine the last may come a moment after the listening line.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tokio_workers(server.child.id()) < want && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(tokio_workers(server.child.id()), want, "{threads} threads");
    }
    let health = peers::body(&peers::get(server.http, "/health").await);
    assert_eq!(health["status"], "ok");
    let token_a = server.token("alice", "room-1").await;
    let token_b = server.token("bob", "room-1").await;
    let mut alice = peers::join(&server.ws_url(), &token_a, "alice", None)
        .await
        .client;
    let mut bob = peers::join(&server.ws_url(), &token_b, "bob", None)
        .await
        .client;
    expect_peer_joined(&mut alice, "alice", "bob").await;

    let started = Instant::now();
    server.signal("-TERM");
    let (a, b) = tokio::join!(expect_end(&mut alice, "alice"), expect_end(&mut bob, "bob"));
    assert_eq!(
        (a, b),
        (Some(1001), Some(1001)),
        "both peers see 'going away'"
    );
    let status = server.exited_within(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_crash_then_a_restart_with_the_same_secret_lets_peers_rejoin() {
    let mut first = tokio::task::spawn_blocking(|| RealServer::start(BIN_SECRET))
        .await
        .unwrap();
    let token_a = first.token("alice", "crash-room").await;
    let token_b = first.token("bob", "crash-room").await;
    let mut alice = peers::join(&first.ws_url(), &token_a, "alice", None)
        .await
        .client;
    let mut bob = peers::join(&first.ws_url(), &token_b, "bob", None)
        .await
        .client;
    expect_peer_joined(&mut alice, "alice", "bob").await;

    first.signal("-KILL");
    let (a, b) = tokio::join!(expect_end(&mut alice, "alice"), expect_end(&mut bob, "bob"));
    assert_eq!((a, b), (None, None), "a killed server sends no close frame");
    let status = first.exited_within(Duration::from_secs(5)).await;
    assert_eq!(status.code(), None, "killed by a signal: {status:?}");

    let second = tokio::task::spawn_blocking(|| RealServer::start(BIN_SECRET))
        .await
        .unwrap();
    let alice = peers::join(&second.ws_url(), &token_a, "alice", None).await;
    assert!(alice.room.peers[0].is_host, "the room is created anew");
    let bob = peers::join(&second.ws_url(), &token_b, "bob", None).await;
    assert_eq!(bob.others, ["alice"]);
    let mut alice = alice.client;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    let room = peers::body(&peers::get(second.http, "/api/rooms/crash-room").await);
    assert_eq!(room["peerCount"], 2, "{room}");
}

#[tokio::test]
async fn the_binary_rejects_bad_configuration_with_exit_code_2() {
    let (code, _, err) = tokio::task::spawn_blocking(|| {
        let mut cmd = server_command();
        cmd.args(["--port", "notanumber"]);
        run_to_exit(cmd)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(2), "stderr: {err}");
    assert!(
        err.contains("notanumber"),
        "stderr names the bad value: {err}"
    );

    let (code, out, err) = tokio::task::spawn_blocking(|| {
        let mut cmd = server_command();
        cmd.env("OCTATE_ENV", "production")
            .env("PORT", "0")
            .env("SIGNALING_PORT", "0");
        run_to_exit(cmd)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(2), "stdout: {out} stderr: {err}");
    assert!(
        err.contains("OCTATE_TOKEN_SECRET"),
        "stderr explains what is missing: {err}"
    );
    assert!(!out.contains("listening"), "it must not start: {out}");

    let (code, out, _) = tokio::task::spawn_blocking(|| {
        let mut cmd = server_command();
        cmd.arg("--help");
        run_to_exit(cmd)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0));
    for var in [
        "PORT",
        "SIGNALING_PORT",
        "OCTATE_TOKEN_SECRET",
        "OCTATE_ADMIN_KEY",
    ] {
        assert!(
            out.contains(&format!("env: {var}")),
            "--help does not list {var}:\n{out}"
        );
    }
}

/// Sends `GET /health` on a fresh connection; the status line, or `None` if nothing
/// (not even a close) came back within two seconds.
async fn probe(addr: SocketAddr) -> Option<String> {
    let attempt = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        let _ = tcp
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf);
        Some(text.lines().next().unwrap_or("closed").to_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// At the open-file limit new clients are refused at once (503 or a close), never left
/// hanging, and service resumes as soon as sockets are released.
#[tokio::test]
async fn at_the_open_file_limit_new_clients_are_refused_fast_and_service_recovers() {
    let server = RealServer::start_with_file_limit("fd-limit-secret-0123456789abcdef0123", 96);
    assert_eq!(probe(server.http).await.as_deref(), Some("HTTP/1.1 200 OK"));
    // Hold idle sockets until the server has no descriptor left for another.
    let mut held = Vec::new();
    for _ in 0..160 {
        if let Ok(tcp) = TcpStream::connect(server.http).await {
            held.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = probe(server.http).await;
    let refused = refused.expect("a client at the limit was left hanging");
    assert!(
        refused.starts_with("HTTP/1.1 503") || refused == "closed",
        "at the limit: {refused}"
    );
    drop(held);
    let mut recovered = None;
    for _ in 0..20 {
        recovered = probe(server.http).await;
        if recovered.as_deref() == Some("HTTP/1.1 200 OK") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        recovered.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "service did not recover"
    );
}
