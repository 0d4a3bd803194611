//! The end of a suspended peer's grace is announced on time with production timers: the
//! driver wakes for a deadline that appears after it went to sleep (the heartbeat, 30 s
//! by default, is not what ends a 300 ms grace).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use octate_protocol::LeaveReason;
use octate_test::peers::expect_peer_left;
use octate_test::server::TestServer;
use octate_transport::TransportConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_shorter_than_the_heartbeat_ends_on_time() {
    let mut config = TransportConfig::default();
    assert!(config.core.heartbeat_interval >= Duration::from_secs(30));
    config.core.resume_grace = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let alice = server.join("alice", "doc").await;
    let mut bob = server.join("bob", "doc").await;
    let lost = Instant::now();
    alice.client.abort();
    expect_peer_left(&mut bob.client, "bob", "alice", LeaveReason::Timeout).await;
    let took = lost.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "announced before the grace ran out: {took:?}"
    );
    server.stop().await;
}
