//! How WebSocket sessions end, over real sockets: a connection the server closes is gone
//! within the close grace even when its client reads nothing, a slow consumer is told
//! 4008, and floods of control frames are rate limited like any other flood.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use octate_test::attack::{
    self, OP_CLOSE, OP_PING, OP_PONG, RawWs, Seen, Upgrade, WAIT, Watch, frame,
};
use octate_test::server::{TestServer, fast_config};
use octate_transport::TransportConfig;
use tokio::time::Instant;

/// A server with fast timers, changed by `tweak`.
async fn start(tweak: impl FnOnce(&mut TransportConfig)) -> TestServer {
    let mut config = fast_config();
    tweak(&mut config);
    TestServer::start(config).await
}

/// A client with a tiny receive window that authenticates as `user` in `room`.
async fn small_window_join(server: &TestServer, user: &str, room: &str) -> RawWs {
    let token = attack::token(server.http, user, room, None).await;
    let mut ws = RawWs::connect_small_window(server.signaling).await;
    ws.auth(&token, user).await;
    ws
}

/// Sends `count` pings with 125-byte payloads, in batches, without reading the pongs.
///
/// Returns how many went out before the server stopped taking them.
async fn send_pings(ws: &mut RawWs, count: usize) -> usize {
    let batch = frame(true, OP_PING, &[b'p'; 125]).repeat(500);
    let mut sent = 0;
    while sent < count {
        match tokio::time::timeout(WAIT, ws.send(&batch)).await {
            Ok(Ok(())) => sent += 500,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    sent
}

/// Whether a WebSocket upgrade from this address is accepted (`false`: refused).
async fn upgrade_accepted(server: &TestServer) -> bool {
    let tcp = tokio::net::TcpStream::connect(server.signaling)
        .await
        .unwrap();
    match RawWs::upgrade(tcp, server.signaling).await {
        Upgrade::Accepted(_) => true,
        Upgrade::Refused { status, body } => {
            assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
            false
        }
    }
}

/// Settings under which only the queue limits and the close grace stop a ping flood.
fn unlimited_pings(config: &mut TransportConfig) {
    config.messages_per_second = 1_000_000;
    config.message_burst = 1_000_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_connection_that_does_not_read_is_dropped_within_the_close_grace() {
    let grace = Duration::from_secs(1);
    let server = start(|c| {
        unlimited_pings(c);
        // Enough room for every pong owed, so the queue never overflows.
        c.outbound_queue_messages = 1_000_000;
        c.max_connections_per_ip = 2;
        c.close_grace = grace;
    })
    .await;
    let mut old = small_window_join(&server, "sam", "backlog").await;
    // ~12 MiB of pongs owed: more than the socket buffers hold, so a backlog waits.
    let sent = send_pings(&mut old, 100_000).await;
    assert_eq!(sent, 100_000, "the server stopped reading pings");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The same user connects again: the core closes the old connection (4004).
    let _new = server.join("sam", "backlog").await;
    assert!(
        !upgrade_accepted(&server).await,
        "the per-address cap of 2 holds while both are open"
    );
    let deadline = Instant::now() + WAIT;
    while !upgrade_accepted(&server).await {
        assert!(
            Instant::now() < deadline,
            "the replaced connection still holds its address slot after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut tcp, _) = old.into_parts();
    assert!(
        attack::ends_within(&mut tcp, WAIT).await,
        "the old socket is still open"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_sent_4008_once_it_reads_again() {
    let server = start(|c| {
        unlimited_pings(c);
        // Sam starts reading only after the test saw the overflow: give it time.
        c.close_grace = Duration::from_secs(30);
    })
    .await;
    let mut sam = small_window_join(&server, "sam", "slow").await;
    // Pongs pile up until the queue overflows.
    let mut killed = false;
    for _ in 0..200 {
        send_pings(&mut sam, 500).await;
        let stats = attack::stats(server.http).await;
        if stats["operations"]["slowConsumersClosed"] != 0 {
            killed = true;
            break;
        }
    }
    assert!(killed, "sam was never closed as a slow consumer");
    let (_, code) = sam.end("sam").await;
    assert_eq!(
        code,
        Some(4008),
        "what sam reads ends with a 4008 close frame"
    );
    // Sam answers the close; the server then ends the TCP connection.
    sam.send(&frame(true, OP_CLOSE, &4008u16.to_be_bytes()))
        .await
        .unwrap();
    let (mut tcp, _) = sam.into_parts();
    assert!(attack::ends_within(&mut tcp, WAIT).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_frame_the_peer_never_answers_holds_the_socket_for_the_grace_only() {
    let server = start(|c| {
        c.close_grace = Duration::from_secs(1);
        c.max_connections_per_ip = 2;
    })
    .await;
    let token = attack::token(server.http, "sam", "quiet", None).await;
    let mut old = RawWs::connect(server.signaling).await;
    old.auth(&token, "sam").await;
    let _new = server.join("sam", "quiet").await;
    match old.next("sam").await {
        Seen::Close(code) => assert_eq!(code, Some(4004)),
        other => panic!("sam: expected close 4004, got {other:?}"),
    }
    assert!(
        matches!(old.next("sam").await, Seen::Dropped),
        "the server ends its side of the stream after the close frame"
    );
    // No close answer: the server waits for one, then drops the socket.
    assert!(
        !upgrade_accepted(&server).await,
        "the session waits for the close answer"
    );
    let deadline = Instant::now() + WAIT;
    while !upgrade_accepted(&server).await {
        assert!(
            Instant::now() < deadline,
            "the closed connection still holds its address slot after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// An empty masked pong frame: 6 bytes.
fn empty_pong() -> Vec<u8> {
    frame(true, OP_PONG, &[])
}

/// Reads until the end and asserts rate-limited errors came first, then close 4029.
async fn expect_rate_limited_close(ws: &mut RawWs, who: &str) {
    let (texts, code) = ws.end(who).await;
    assert_eq!(code, Some(4029), "{who}: close code after {texts:?}");
    assert!(
        !texts.is_empty() && texts.iter().all(|t| t.contains(r#""code":"rate-limited""#)),
        "{who}: expected rate-limited errors, got {texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pong_flood_is_closed_with_4029_before_and_after_auth() {
    let server = start(|_| {}).await;
    let watch = Watch::start(server.http, server.signaling).await;
    let flood = empty_pong().repeat(5_000);

    let mut stranger = RawWs::connect(server.signaling).await;
    let _ = stranger.send(&flood).await;
    expect_rate_limited_close(&mut stranger, "stranger").await;

    let token = attack::token(server.http, "mallory", "pongs", None).await;
    let mut mallory = RawWs::connect(server.signaling).await;
    mallory.auth(&token, "mallory").await;
    let _ = mallory.send(&flood).await;
    expect_rate_limited_close(&mut mallory, "mallory").await;

    drop((stranger, mallory));
    watch.finish(0).await;
    server.stop().await;
}
