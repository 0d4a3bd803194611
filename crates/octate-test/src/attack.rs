//! Tools of the adversarial tests: a "control pair" of well-behaved peers that keeps
//! relaying offers while an attack runs, and the checks made after every attack (health,
//! connection count, memory). The bare-socket client of [`crate::ws`] is re-exported here.
//!
//! Everything is bounded in time: every read has a deadline, every loop a count.

use std::net::SocketAddr;
use std::time::Duration;

use octate_client::Client;
use octate_protocol::{ServerMessage, SignalKind};
use serde_json::{Value, json};
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

pub use crate::peers::{assert_http_error, body, get, post, request};

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

// ---- Well-behaved clients ---------------------------------------------------------------

pub use crate::peers::{QUIET, WAIT, expect_end, expect_silence, next, next_text};

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

// ---- The bare-socket client ------------------------------------------------------------

pub use crate::ws::{
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWs, ReadEnd, Seen, ServerFrame,
    Upgrade, auth_text, ends_within, frame, raw_frame,
};

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
