//! Webhooks over real sockets: a real HTTP receiver (hyper) started by each test checks
//! every signature, answers as the test tells it (200, 500, 400, 429, or not at all) and
//! records what arrived, in order.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use octate_client::Client;
use octate_protocol::{ClientMessage, ErrorCode, ResumeTicket, ServerMessage, SignalKind};
use octate_test::cluster::ClusterNode;
use octate_test::peers::{self, WAIT, expect_close, expect_peer_joined, next};
use octate_test::redis::Redis;
use octate_test::server::{TestServer, fast_config};
use octate_transport::{TransportConfig, WebhookConfig};
use ring::hmac;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// The secret webhooks are signed with in these tests.
const WEBHOOK_SECRET: &str = "whsec-test-0123456789";

// ---- The receiver ----------------------------------------------------------------------

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// This status, with `Retry-After: <secs>` when given.
    Status(u16, Option<u64>),
    /// Nothing: the request hangs until the server gives up.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    event: Value,
    attempt: u32,
    signature: String,
    body: Bytes,
    at: Instant,
}

type Policy = Box<dyn FnMut(&Value, u32) -> Answer + Send>;

/// A webhook receiver on 127.0.0.1 that verifies signatures and records requests.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
    policy: Arc<Mutex<Policy>>,
    bad_signatures: Arc<Mutex<u32>>,
}

impl Receiver {
    /// A receiver that answers each request as `policy` says.
    async fn start(policy: impl FnMut(&Value, u32) -> Answer + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let policy: Arc<Mutex<Policy>> = Arc::new(Mutex::new(Box::new(policy)));
        let bad_signatures = Arc::new(Mutex::new(0));
        let (s, p, b) = (seen.clone(), policy.clone(), bad_signatures.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (s, p, b) = (s.clone(), p.clone(), b.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(req, s.clone(), p.clone(), b.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            policy,
            bad_signatures,
        }
    }

    /// A receiver that accepts everything.
    async fn accepting() -> Self {
        Self::start(|_, _| Answer::Status(200, None)).await
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Changes how later requests are answered.
    fn answer_with(&self, policy: impl FnMut(&Value, u32) -> Answer + Send + 'static) {
        *self.policy.lock().unwrap() = Box::new(policy);
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Events answered 2xx-or-not, in arrival order, as `type:userId` (or `type`).
    fn labels(&self) -> Vec<String> {
        self.seen().iter().map(|r| label(&r.event)).collect()
    }

    /// Waits, bounded, until `done` holds for what arrived.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "receiver: waited for {what}; got {:?}",
                self.labels()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until an event with this label arrived.
    async fn wait_label(&self, want: &str) -> Vec<Received> {
        self.wait_for(want, |seen| seen.iter().any(|r| label(&r.event) == want))
            .await
    }

    fn assert_all_signed(&self) {
        assert_eq!(*self.bad_signatures.lock().unwrap(), 0, "bad signatures");
    }
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Received>>>,
    policy: Arc<Mutex<Policy>>,
    bad: Arc<Mutex<u32>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let signature = header(&req, "octate-signature");
    let attempt = header(&req, "octate-delivery-attempt").parse().unwrap_or(0);
    let event_id = header(&req, "octate-event-id");
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let body = body.unwrap_or_default();
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !signature_ok(&signature, &body) || event["id"] != event_id.as_str() {
        *bad.lock().unwrap() += 1;
    }
    let answer = (policy.lock().unwrap())(&event, attempt);
    seen.lock().unwrap().push(Received {
        event,
        attempt,
        signature,
        body,
        at: Instant::now(),
    });
    match answer {
        Answer::Status(status, retry_after) => {
            let mut resp = Response::builder().status(status);
            if let Some(secs) = retry_after {
                resp = resp.header("retry-after", secs.to_string());
            }
            Ok(resp.body(Full::new(Bytes::new())).unwrap())
        }
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(Response::new(Full::new(Bytes::new())))
        }
    }
}

fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Checks `t=<secs>,v1=<hex>` independently of the server's code: HMAC-SHA256 over
/// `"<t>.<body>"`, and `t` within five minutes of now.
fn signature_ok(header: &str, body: &[u8]) -> bool {
    let mut parts = header.split(',');
    let (Some(t), Some(v1)) = (
        parts.next().and_then(|p| p.strip_prefix("t=")),
        parts.next().and_then(|p| p.strip_prefix("v1=")),
    ) else {
        return false;
    };
    let Ok(secs) = t.parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = hmac::Key::new(hmac::HMAC_SHA256, WEBHOOK_SECRET.as_bytes());
    let tag = hmac::sign(&key, &[t.as_bytes(), b".", body].concat());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    now.abs_diff(secs) <= 300 && hex == v1
}

/// `type:userId`, or the type alone.
fn label(event: &Value) -> String {
    match event["userId"].as_str() {
        Some(user) => format!("{}:{user}", event["type"].as_str().unwrap_or("?")),
        None => event["type"].as_str().unwrap_or("?").to_owned(),
    }
}

// ---- The server ------------------------------------------------------------------------

/// Webhook settings for tests: fast retries and timeouts.
fn hooks(urls: &[String]) -> WebhookConfig {
    let mut config = WebhookConfig::parse(&urls.join(","), Some(WEBHOOK_SECRET))
        .unwrap()
        .unwrap();
    config.max_attempts = 4;
    config.retry_base = Duration::from_millis(50);
    config.timeout = Duration::from_millis(500);
    config.queue_capacity = 100;
    config
}

/// A server whose webhooks go to `receiver`, with resume on (grace `grace`), tweaked.
async fn server_for(
    receiver: &Receiver,
    grace: Duration,
    tweak: impl FnOnce(&mut TransportConfig),
) -> TestServer {
    let mut config = fast_config();
    config.core.resume_grace = grace;
    config.webhooks = Some(hooks(&[receiver.url()]));
    tweak(&mut config);
    TestServer::start(config).await
}

/// Authenticates `user` in `room`; returns the client and its resume ticket, if any.
async fn join(server: &TestServer, user: &str, room: &str) -> (Client, Option<ResumeTicket>) {
    let token = server.token(user, room).await;
    let (client, text) = peers::auth_raw(&server.ws_url(), &token, None).await;
    match ServerMessage::decode(text.as_bytes()) {
        Ok(ServerMessage::AuthOk { resume, .. }) => (client, resume),
        _ => panic!("{user}: expected auth-ok, got {text}"),
    }
}

/// The value of `name` (with its labels, e.g. `x{outcome="dropped"}`) in `/metrics`, or 0.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let resp = peers::get(server.http, "/metrics").await;
    let text = String::from_utf8(resp.body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

// ---- Tests -----------------------------------------------------------------------------

#[tokio::test]
async fn every_event_type_arrives_signed_once_with_its_fields() {
    let receiver = Receiver::accepting().await;
    // Long enough for Carol to resume in time even on a loaded machine.
    let grace = Duration::from_millis(1_500);
    let server = server_for(&receiver, grace, |_| {}).await;

    let (mut alice, _) = join(&server, "alice", "r").await;
    receiver.wait_label("peer.joined:alice").await;
    let (_bob, _) = join(&server, "bob", "r").await;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    receiver.wait_label("peer.joined:bob").await;
    // Bob again, on a new connection: the old one is replaced.
    let (mut bob, _) = join(&server, "bob", "r").await;
    receiver.wait_label("peer.replaced:bob").await;
    // Carol drops and resumes, then drops for good: the grace runs out.
    let (carol, ticket) = join(&server, "carol", "r").await;
    receiver.wait_label("peer.joined:carol").await;
    carol.abort();
    receiver.wait_label("peer.suspended:carol").await;
    let ticket = ticket.expect("resume is on");
    let carol = Client::connect(&server.ws_url()).await.unwrap();
    let mut carol = carol;
    carol
        .send(&ClientMessage::Resume {
            session_id: ticket.session_id,
            resume_token: ticket.resume_token,
        })
        .await
        .unwrap();
    assert!(matches!(
        next(&mut carol, "carol").await,
        ServerMessage::Resumed { .. }
    ));
    receiver.wait_label("peer.resumed:carol").await;
    carol.abort();
    receiver.wait_label("peer.left:carol").await;
    bob.send(&ClientMessage::LeaveRoom).await.unwrap();
    receiver
        .wait_for("bob left", |s| {
            s.iter()
                .any(|r| label(&r.event) == "peer.left:bob" && r.event["reason"] == "left")
        })
        .await;
    let deleted = peers::request(server.http, "DELETE", "/api/rooms/r", &[], None).await;
    assert_eq!(
        deleted.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&deleted.body)
    );
    receiver.wait_label("room.closed").await;
    // A room closed by emptiness.
    let (dave, _) = join(&server, "dave", "q").await;
    dave.close().await.unwrap();
    let seen = receiver
        .wait_for("room q closed", |s| {
            s.iter()
                .any(|r| r.event["type"] == "room.closed" && r.event["roomId"] == "q")
        })
        .await;

    receiver.assert_all_signed();
    let events: Vec<&Value> = seen.iter().map(|r| &r.event).collect();
    let in_r: Vec<(String, Value, Value)> = events
        .iter()
        .filter(|e| e["roomId"] == "r")
        .map(|e| (label(e), e["reason"].clone(), e["peerCount"].clone()))
        .collect();
    let expected: Vec<(String, Value, Value)> = [
        ("room.created", Value::Null, json!(0)),
        ("peer.joined:alice", Value::Null, json!(1)),
        ("peer.joined:bob", Value::Null, json!(2)),
        ("peer.replaced:bob", Value::Null, json!(2)),
        ("peer.joined:carol", Value::Null, json!(3)),
        ("peer.suspended:carol", Value::Null, json!(3)),
        ("peer.resumed:carol", Value::Null, json!(3)),
        ("peer.suspended:carol", Value::Null, json!(3)),
        ("peer.left:carol", json!("timeout"), json!(2)),
        ("peer.left:bob", json!("left"), json!(1)),
        ("room.closed", json!("deleted"), json!(1)),
    ]
    .into_iter()
    .map(|(l, r, c)| (l.to_owned(), r, c))
    .collect();
    assert_eq!(in_r, expected);
    let in_q: Vec<(String, Value)> = events
        .iter()
        .filter(|e| e["roomId"] == "q")
        .map(|e| (label(e), e["reason"].clone()))
        .collect();
    assert_eq!(
        in_q,
        [
            ("room.created".to_owned(), Value::Null),
            ("peer.joined:dave".to_owned(), Value::Null),
            ("peer.left:dave".to_owned(), json!("disconnected")),
            ("room.closed".to_owned(), json!("empty")),
        ]
    );
    let ids: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
    for e in &events {
        assert!(e["createdAt"].as_u64().unwrap() > 1_600_000_000_000, "{e}");
    }
    assert_seq_grows(&events);
    server.stop().await;
}

/// Each event's `seq` is larger than the one before it (in the order they happened) and
/// at least its `createdAt` in microseconds.
fn assert_seq_grows(events: &[&Value]) {
    let mut last = 0;
    for e in events {
        let seq = e["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {e}"));
        assert!(seq > last, "seq {seq} after {last}: {e}");
        assert!(seq >= e["createdAt"].as_u64().unwrap() * 1000, "{e}");
        last = seq;
    }
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_id_until_accepted() {
    let receiver = Receiver::start(|_, attempt| {
        if attempt < 3 {
            Answer::Status(503, None)
        } else {
            Answer::Status(200, None)
        }
    })
    .await;
    let server = server_for(&receiver, Duration::ZERO, |_| {}).await;
    let _alice = join(&server, "alice", "r").await;
    let seen = receiver
        .wait_for("room.created accepted on attempt 3", |s| {
            s.iter()
                .any(|r| r.event["type"] == "room.created" && r.attempt == 3)
        })
        .await;
    let created: Vec<&Received> = seen
        .iter()
        .filter(|r| r.event["type"] == "room.created")
        .collect();
    assert_eq!(
        created.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let ids: HashSet<&Value> = created.iter().map(|r| &r.event["id"]).collect();
    assert_eq!(ids.len(), 1, "one event, three attempts");
    assert_eq!(created[0].body, created[2].body, "the same body every time");
    receiver.wait_label("peer.joined:alice").await;
    receiver.assert_all_signed();
    let deadline = Instant::now() + WAIT;
    while metric(
        &server,
        "octate_webhook_deliveries_total{outcome=\"delivered\"}",
    )
    .await
        < 2
    {
        assert!(Instant::now() < deadline, "delivered count");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(&server, "octate_webhook_retries_total").await >= 4);
    server.stop().await;
}

#[tokio::test]
async fn a_4xx_is_not_retried_and_counted_as_rejected() {
    let receiver = Receiver::start(|_, _| Answer::Status(400, None)).await;
    let server = server_for(&receiver, Duration::ZERO, |_| {}).await;
    let _alice = join(&server, "alice", "r").await;
    receiver.wait_label("peer.joined:alice").await;
    // Far longer than every retry of the schedule (4 attempts from 50 ms).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(receiver.labels(), ["room.created", "peer.joined:alice"]);
    assert_eq!(
        metric(
            &server,
            "octate_webhook_deliveries_total{outcome=\"rejected\"}"
        )
        .await,
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let receiver = Receiver::start(|_, attempt| {
        if attempt == 1 {
            Answer::Status(429, Some(1))
        } else {
            Answer::Status(200, None)
        }
    })
    .await;
    let server = server_for(&receiver, Duration::ZERO, |_| {}).await;
    let _alice = join(&server, "alice", "r").await;
    let seen = receiver
        .wait_for("room.created again", |s| {
            s.iter()
                .any(|r| r.event["type"] == "room.created" && r.attempt == 2)
        })
        .await;
    let created: Vec<&Received> = seen
        .iter()
        .filter(|r| r.event["type"] == "room.created")
        .collect();
    // Back-off alone would wait at most 50 ms: the second second is Retry-After's.
    let waited = created[1].at - created[0].at;
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_room_keeps_its_order_under_retries_while_other_rooms_go_on() {
    // Room a's first event fails twice; everything else is accepted.
    let receiver = Receiver::start(|event, attempt| {
        if event["roomId"] == "a" && event["type"] == "room.created" && attempt < 3 {
            Answer::Status(500, None)
        } else {
            Answer::Status(200, None)
        }
    })
    .await;
    let server = server_for(&receiver, Duration::ZERO, |c| {
        if let Some(h) = c.webhooks.as_mut() {
            // Long enough for room b to be served while room a waits.
            h.retry_base = Duration::from_millis(300);
        }
    })
    .await;
    let (alice, _) = join(&server, "alice", "a").await;
    let (mut bob, _) = join(&server, "bob", "a").await;
    bob.send(&ClientMessage::LeaveRoom).await.unwrap();
    let (_carol, _) = join(&server, "carol", "b").await;
    alice.close().await.unwrap();
    let seen = receiver
        .wait_for("room a closed", |s| {
            s.iter()
                .any(|r| r.event["roomId"] == "a" && r.event["type"] == "room.closed")
        })
        .await;
    // Accepted attempts only, per room, in arrival order.
    let accepted = |room: &str| -> Vec<String> {
        seen.iter()
            .filter(|r| r.event["roomId"] == room)
            .filter(|r| !(r.event["type"] == "room.created" && room == "a" && r.attempt < 3))
            .map(|r| label(&r.event))
            .collect()
    };
    assert_eq!(
        accepted("a"),
        [
            "room.created",
            "peer.joined:alice",
            "peer.joined:bob",
            "peer.left:bob",
            "peer.left:alice",
            "room.closed"
        ]
    );
    assert_eq!(accepted("b"), ["room.created", "peer.joined:carol"]);
    // Room b did not wait for room a's retries.
    let position = |pred: &dyn Fn(&Received) -> bool| seen.iter().position(pred).unwrap();
    let b_joined = position(&|r| label(&r.event) == "peer.joined:carol");
    let a_accepted = position(&|r| r.event["roomId"] == "a" && r.attempt == 3);
    assert!(b_joined < a_accepted, "{:?}", receiver.labels());
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_events_and_counts_them() {
    // One request at a time, and the receiver holds it: everything else waits in the queue.
    let receiver = Receiver::start(|_, _| Answer::Hang).await;
    let server = server_for(&receiver, Duration::ZERO, |c| {
        if let Some(h) = c.webhooks.as_mut() {
            h.queue_capacity = 4;
            h.max_in_flight = 1;
            h.timeout = Duration::from_secs(1);
            // Nothing gives up while the test looks: every event is kept or dropped.
            h.max_attempts = 1_000;
        }
    })
    .await;
    // Ten rooms, two events each (room.created, peer.joined): twenty deliveries.
    let mut clients = Vec::new();
    for i in 0..10 {
        let (client, _) = join(&server, &format!("u{i}"), &format!("room{i}")).await;
        clients.push(client);
    }
    let dropped = "octate_webhook_deliveries_total{outcome=\"dropped\"}";
    assert_eq!(metric(&server, dropped).await, 16, "20 events, 4 kept");
    assert_eq!(metric(&server, "octate_webhook_queue_depth").await, 4);
    // Signaling went on meanwhile: every join was answered.
    assert_eq!(clients.len(), 10);
    let switched = Instant::now();
    receiver.answer_with(|_, _| Answer::Status(200, None));
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&server, "octate_webhook_queue_depth").await > 0 {
        assert!(Instant::now() < deadline, "queue drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after: Vec<String> = receiver
        .seen()
        .iter()
        .filter(|r| r.at >= switched)
        .map(|r| {
            format!(
                "{}/{}",
                r.event["roomId"].as_str().unwrap_or(""),
                label(&r.event)
            )
        })
        .collect();
    // The newest three were kept (the fourth kept is whichever old one was being sent).
    for newest in [
        "room8/peer.joined:u8",
        "room9/room.created",
        "room9/peer.joined:u9",
    ] {
        assert!(after.iter().any(|a| a == newest), "{newest} in {after:?}");
    }
    for old in 1..8 {
        assert!(
            !after.iter().any(|a| a.starts_with(&format!("room{old}/"))),
            "room{old} was dropped: {after:?}"
        );
    }
    assert_eq!(metric(&server, dropped).await, 16);
    server.stop().await;
}

#[tokio::test]
async fn signaling_goes_on_while_the_receiver_hangs() {
    let receiver = Receiver::start(|_, _| Answer::Hang).await;
    let server = server_for(&receiver, Duration::ZERO, |c| {
        if let Some(h) = c.webhooks.as_mut() {
            h.timeout = Duration::from_secs(30);
        }
    })
    .await;
    let (mut alice, _) = join(&server, "alice", "r").await;
    let (mut bob, _) = join(&server, "bob", "r").await;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    receiver.wait_label("room.created").await;
    // The receiver holds the first request; signals still flow at once.
    alice
        .signal(
            SignalKind::Offer,
            "bob",
            json!({"type": "offer", "sdp": "v=0"}),
        )
        .await
        .unwrap();
    match next(&mut bob, "bob").await {
        ServerMessage::Signal { kind, .. } => assert_eq!(kind, SignalKind::Offer),
        other => panic!("bob: expected the offer, got {other:?}"),
    }
    let health = peers::get(server.http, "/health").await;
    assert_eq!(health.status, 200);
    // Another room's events are not held behind the hung one either.
    let (_carol, _) = join(&server, "carol", "other").await;
    receiver
        .wait_for("room other created", |s| {
            s.iter().any(|r| r.event["roomId"] == "other")
        })
        .await;
    bob.close().await.unwrap();
    expect_close_or_left(&mut alice).await;
    server.stop().await;
}

/// Alice hears that Bob left (the room goes on).
async fn expect_close_or_left(alice: &mut Client) {
    match next(alice, "alice").await {
        ServerMessage::PeerLeft { .. } => {}
        other => panic!("alice: expected peer-left, got {other:?}"),
    }
}

// ---- The verification snippets of docs/webhooks.md -------------------------------------

/// The code block that follows `<!-- verify:{lang} -->` in docs/webhooks.md.
fn doc_snippet(lang: &str) -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/webhooks.md")).unwrap();
    let marker = format!("<!-- verify:{lang} -->");
    let after = &doc[doc.find(&marker).unwrap_or_else(|| panic!("no {marker}"))..];
    let start = after.find("```").unwrap();
    let code = &after[start..];
    let code = &code[code.find('\n').unwrap() + 1..];
    code[..code.find("```").unwrap()].to_owned()
}

/// Runs a snippet with a driver that verifies `body_file` under `signature` with `secret`
/// at `now`; whether it accepted.
fn snippet_accepts(lang: &str, secret: &str, signature: &str, body_file: &str, now: u64) -> bool {
    let (program, driver) = match lang {
        "python" => (
            "python3",
            "\nimport os, sys\nbody = open(os.environ['BODY_FILE'], 'rb').read()\n\
             sys.exit(0 if verify_octate_signature(os.environ['SECRET'], os.environ['SIGNATURE'], \
             body, float(os.environ['NOW'])) else 1)\n",
        ),
        _ => (
            "node",
            "\nconst body = require('node:fs').readFileSync(process.env.BODY_FILE);\n\
             process.exit(verifyOctateSignature(process.env.SECRET, process.env.SIGNATURE, body, \
             Number(process.env.NOW)) ? 0 : 1);\n",
        ),
    };
    let source = doc_snippet(lang) + driver;
    let flag = if lang == "python" { "-c" } else { "-e" };
    let status = std::process::Command::new(program)
        .args([flag, &source])
        .env("SECRET", secret)
        .env("SIGNATURE", signature)
        .env("BODY_FILE", body_file)
        .env("NOW", now.to_string())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("{lang} snippet crashed: {other:?}"),
    }
}

#[tokio::test]
async fn the_documented_python_and_node_checks_accept_a_real_request_and_refuse_forgeries() {
    let receiver = Receiver::accepting().await;
    let server = server_for(&receiver, Duration::ZERO, |_| {}).await;
    let _alice = join(&server, "alice", "r").await;
    let seen = receiver.wait_label("peer.joined:alice").await;
    let real = seen.last().unwrap().clone();
    server.stop().await;
    let dir = std::env::temp_dir().join(format!("octate-webhook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body_file = dir.join("body.json");
    std::fs::write(&body_file, &real.body).unwrap();
    let body_file = body_file.to_str().unwrap();
    let t: u64 = real.signature[2..real.signature.find(',').unwrap()]
        .parse()
        .unwrap();
    for lang in ["python", "node"] {
        assert!(
            snippet_accepts(lang, WEBHOOK_SECRET, &real.signature, body_file, t + 1),
            "{lang}: the real request"
        );
        assert!(
            !snippet_accepts(lang, "another-secret", &real.signature, body_file, t + 1),
            "{lang}: signed with another secret"
        );
        assert!(
            !snippet_accepts(lang, WEBHOOK_SECRET, &real.signature, body_file, t + 301),
            "{lang}: six minutes old"
        );
        let tampered = dir.join(format!("tampered-{lang}.json"));
        std::fs::write(&tampered, [&real.body[..], b" "].concat()).unwrap();
        assert!(
            !snippet_accepts(
                lang,
                WEBHOOK_SECRET,
                &real.signature,
                tampered.to_str().unwrap(),
                t
            ),
            "{lang}: a changed body"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_urls_nothing_is_sent_and_no_metric_moves() {
    let receiver = Receiver::accepting().await;
    let server = TestServer::start(fast_config()).await;
    let (_alice, _) = join(&server, "alice", "r").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.seen().is_empty());
    assert_eq!(metric(&server, "octate_webhook_queue_depth").await, 0);
    server.stop().await;
    let _ = expect_close;
}

// ---- Two nodes and a Redis -----------------------------------------------------------------

/// A node of a test cluster sending webhooks to `receiver`, with a resume grace of 1 s.
fn webhook_node(redis: &Redis, id: &str, receiver: &Receiver) -> ClusterNode {
    let url = receiver.url();
    ClusterNode::start_with(
        redis,
        id,
        &[
            ("OCTATE_RESUME_GRACE_MS", "1000"),
            ("OCTATE_WEBHOOK_URLS", &url),
            ("OCTATE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("OCTATE_WEBHOOK_RETRY_BASE_MS", "50"),
        ],
    )
}

/// `type:userId:reason`, the event's meaning without its id and time.
fn meaning(event: &Value) -> String {
    format!(
        "{}:{}:{}",
        label(event),
        event["reason"].as_str().unwrap_or(""),
        event["nodeId"].as_str().unwrap_or("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_each_event_once_and_node_down_when_one_dies() {
    let redis = Redis::start();
    let receiver = Receiver::accepting().await;
    let a = webhook_node(&redis, "a", &receiver);
    let mut b = webhook_node(&redis, "b", &receiver);
    let mut alice = a.join("alice", "doc").await;
    receiver.wait_label("peer.joined:alice").await;
    let mut bob = b.join("bob", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    receiver.wait_label("peer.joined:bob").await;
    bob.client.send(&ClientMessage::LeaveRoom).await.unwrap();
    receiver.wait_label("peer.left:bob").await;
    let _carol = b.join("carol", "doc").await;
    receiver.wait_label("peer.joined:carol").await;
    // Room `side`: created over HTTP on b, joined on a, the same user again on b (it
    // replaces the session on a), deleted over HTTP on a.
    let created = peers::post(
        b.http,
        "/api/rooms",
        &json!({"roomId": "side", "roomName": "Side", "hostId": "eve", "hostName": "Eve"}),
        None,
    )
    .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    // Nodes send their own events: across nodes only `createdAt` orders them, so each
    // step waits for the last one to arrive.
    receiver
        .wait_for("room side created", |s| {
            s.iter()
                .any(|r| r.event["roomId"] == "side" && r.event["type"] == "room.created")
        })
        .await;
    let _eve_on_a = a.join("eve", "side").await;
    receiver.wait_label("peer.joined:eve").await;
    let _eve_on_b = b.join("eve", "side").await;
    receiver.wait_label("peer.replaced:eve").await;
    let deleted = peers::request(a.http, "DELETE", "/api/rooms/side", &[], None).await;
    assert_eq!(
        deleted.status,
        200,
        "{}",
        String::from_utf8_lossy(&deleted.body)
    );
    receiver
        .wait_for("room side closed", |s| {
            s.iter()
                .any(|r| r.event["roomId"] == "side" && r.event["type"] == "room.closed")
        })
        .await;
    // Node b dies with Carol on it: node a reaps it; her grace then runs out.
    b.kill();
    receiver.wait_label("node.down").await;
    receiver.wait_label("peer.suspended:carol").await;
    receiver.wait_label("peer.left:carol").await;
    alice.client.close().await.unwrap();
    receiver
        .wait_for("room closed", |s| {
            s.iter().any(|r| r.event["type"] == "room.closed")
        })
        .await;
    // Anything late (a second copy) would arrive now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.assert_all_signed();
    let seen = receiver.seen();
    let ids: HashSet<&str> = seen.iter().filter_map(|r| r.event["id"].as_str()).collect();
    assert_eq!(
        ids.len(),
        seen.len(),
        "no retries, so one request per event"
    );
    // node.down has no room: it is not ordered with the room's events.
    let downs: Vec<String> = seen
        .iter()
        .filter(|r| r.event["type"] == "node.down")
        .map(|r| meaning(&r.event))
        .collect();
    assert_eq!(downs, ["node.down::b"]);
    let in_doc: Vec<String> = seen
        .iter()
        .filter(|r| r.event["roomId"] == "doc")
        .map(|r| meaning(&r.event))
        .collect();
    assert_eq!(
        in_doc,
        [
            "room.created::a",
            "peer.joined:alice::a",
            "peer.joined:bob::b",
            "peer.left:bob:left:b",
            "peer.joined:carol::b",
            "peer.suspended:carol::a",
            "peer.left:carol:timeout:a",
            "peer.left:alice:disconnected:a",
            "room.closed:empty:a",
        ]
    );
    let in_side: Vec<String> = seen
        .iter()
        .filter(|r| r.event["roomId"] == "side")
        .map(|r| format!("{}/{}", meaning(&r.event), r.event["peerCount"]))
        .collect();
    assert_eq!(
        in_side,
        [
            "room.created::b/0",
            "peer.joined:eve::a/1",
            "peer.replaced:eve::b/1",
            "room.closed:deleted:a/1",
        ]
    );
    assert_eq!(seen.len(), in_doc.len() + downs.len() + in_side.len());
    // Each step waited for the one before: arrival order is the order things happened,
    // across both nodes, and `seq` says so.
    let in_order: Vec<&Value> = seen
        .iter()
        .map(|r| &r.event)
        .filter(|e| e["type"] != "node.down")
        .collect();
    assert_seq_grows(&in_order);
    let counts: Vec<u64> = seen
        .iter()
        .filter(|r| r.event["roomId"] == "doc")
        .map(|r| r.event["peerCount"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [0, 1, 2, 1, 2, 2, 1, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_on_a_cluster_is_reported_once_by_the_node_that_ran_it() {
    let redis = Redis::start();
    let receiver = Receiver::accepting().await;
    let a = webhook_node(&redis, "a", &receiver);
    let b = webhook_node(&redis, "b", &receiver);
    let mut alice = a.join("alice", "doc").await;
    let mut dave = b.join("dave", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "dave").await;
    receiver.wait_label("peer.joined:dave").await;
    // Dave is on b; the kick is asked of a, which runs the script.
    let kicked = peers::post(a.http, "/api/rooms/doc/peers/dave/kick", &json!({}), None).await;
    assert_eq!(
        kicked.status,
        200,
        "{}",
        String::from_utf8_lossy(&kicked.body)
    );
    peers::expect_error(&mut dave.client, "dave", ErrorCode::Kicked).await;
    peers::expect_close(&mut dave.client, "dave", 4005).await;
    receiver.wait_label("peer.left:dave").await;
    // The last peer kicked from b: the emptied room closes in the same step.
    let kicked = peers::post(b.http, "/api/rooms/doc/peers/alice/kick", &json!({}), None).await;
    assert_eq!(
        kicked.status,
        200,
        "{}",
        String::from_utf8_lossy(&kicked.body)
    );
    receiver
        .wait_for("room closed", |s| {
            s.iter().any(|r| r.event["type"] == "room.closed")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.assert_all_signed();
    // Alice's events (node a) and Dave's join (node b) may arrive in either order: `seq`
    // orders them.
    let mut events: Vec<Value> = receiver.seen().into_iter().map(|r| r.event).collect();
    events.sort_by_key(|e| e["seq"].as_u64());
    let seen: Vec<String> = events
        .iter()
        .map(|e| format!("{}/{}", meaning(e), e["peerCount"]))
        .collect();
    assert_eq!(
        seen,
        [
            "room.created::a/0",
            "peer.joined:alice::a/1",
            "peer.joined:dave::b/2",
            "peer.left:dave:kicked:a/1",
            "peer.left:alice:kicked:b/0",
            "room.closed:empty:b/0",
        ]
    );
}

/// A room created over HTTP that nobody joins within its grace is reported closed
/// (`empty`) once, as on a single server; a room created again under the same id after
/// that is a new room, reported created after the old one closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_nobody_joined_is_reported_closed_once_when_its_grace_ends() {
    let redis = Redis::start();
    let receiver = Receiver::accepting().await;
    let url = receiver.url();
    let env = [
        ("OCTATE_EMPTY_ROOM_GRACE_MS", "1000"),
        ("OCTATE_WEBHOOK_URLS", url.as_str()),
        ("OCTATE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    let a = ClusterNode::start_with(&redis, "a", &env);
    let b = ClusterNode::start_with(&redis, "b", &env);
    let room = json!({"roomId": "lobby", "roomName": "Lobby", "hostId": "eve", "hostName": "Eve"});
    let create = |node: &ClusterNode| peers::post(node.http, "/api/rooms", &room, None);
    let created = create(&a).await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    receiver
        .wait_for("room lobby closed", |s| {
            s.iter().any(|r| r.event["type"] == "room.closed")
        })
        .await;
    // The id is free again: b creates the room anew, and Eve joins it on a.
    let created = create(&b).await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let _eve = a.join("eve", "lobby").await;
    receiver.wait_label("peer.joined:eve").await;
    // A second report of the first close would arrive now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.assert_all_signed();
    // Each node sends its own events (b's room.created may arrive after a's peer.joined):
    // `seq` orders them.
    let mut events: Vec<Value> = receiver.seen().into_iter().map(|r| r.event).collect();
    events.sort_by_key(|e| e["seq"].as_u64());
    let seen: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}:{}/{}",
                label(e),
                e["reason"].as_str().unwrap_or(""),
                e["peerCount"]
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            "room.created:/0",
            "room.closed:empty/0",
            "room.created:/0",
            "peer.joined:eve:/1",
        ]
    );
}

/// Events a node committed to its outbox but never sent (it froze, then was declared
/// dead) are sent by the node that reaps it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_unsent_events_are_sent_by_the_node_that_reaps_it() {
    let redis = Redis::start();
    let receiver = Receiver::accepting().await;
    let a = webhook_node(&redis, "a", &receiver);
    let b = webhook_node(&redis, "b", &receiver);
    let _bob = b.join("bob", "doc").await;
    receiver.wait_label("peer.joined:bob").await;
    // Node b freezes with an event in its outbox (as if committed just before).
    b.signal("-STOP");
    let entry = json!({
        "type": "peer.left", "room": "doc", "user": "zed", "reason": "left",
        "count": 1, "at": 1_700_000_000_000u64,
    });
    redis.command(&["RPUSH", "oct:hooks:b", &entry.to_string()]);
    receiver.wait_label("node.down").await;
    receiver.wait_label("peer.left:zed").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.assert_all_signed();
    let zed: Vec<String> = receiver
        .seen()
        .iter()
        .filter(|r| r.event["userId"] == "zed")
        .map(|r| meaning(&r.event))
        .collect();
    assert_eq!(zed, ["peer.left:zed:left:a"], "sent once, by node a");
    b.signal("-KILL");
    drop(a);
}

/// A shutdown gives deliveries still queued (here: waiting for a retry) the shutdown grace
/// to go out, instead of dropping them.
#[tokio::test]
async fn events_still_queued_at_shutdown_are_delivered_within_the_grace() {
    // Every first attempt hangs until the 500 ms timeout; the second is accepted.
    let receiver = Receiver::start(|_, attempt| {
        if attempt == 1 {
            Answer::Hang
        } else {
            Answer::Status(200, None)
        }
    })
    .await;
    let server = server_for(&receiver, Duration::ZERO, |_| {}).await;
    let (alice, _) = join(&server, "alice", "r").await;
    receiver.wait_label("room.created").await;
    // Gone before the shutdown: no connection holds the shutdown up.
    drop(alice);
    server.stop().await;
    let seen = receiver.seen();
    let accepted: Vec<String> = seen
        .iter()
        .filter(|r| r.attempt == 2)
        .map(|r| label(&r.event))
        .collect();
    assert_eq!(accepted[..2], ["room.created", "peer.joined:alice"]);
    // Whatever came after (alice's leave, or the shutdown's close) went out too.
    let tried = seen.iter().filter(|r| r.attempt == 1).count();
    assert_eq!(
        accepted.len(),
        tried,
        "every event was accepted: {accepted:?}"
    );
}

/// A single server keeps its rooms in memory: when it stops, each room is reported closed
/// with reason `shutdown`, and those last events go out before the process ends.
#[tokio::test]
async fn a_stopping_server_reports_each_room_closed_with_reason_shutdown() {
    let receiver = Receiver::accepting().await;
    let server = server_for(&receiver, Duration::ZERO, |_| {}).await;
    let (alice, _) = join(&server, "alice", "one").await;
    let (bob, _) = join(&server, "bob", "two").await;
    receiver.wait_label("peer.joined:bob").await;
    server.stop().await;
    drop((alice, bob));
    let mut closed: Vec<String> = receiver
        .seen()
        .iter()
        .filter(|r| r.event["type"] == "room.closed")
        .map(|r| format!("{}:{}", r.event["roomId"], r.event["reason"]))
        .collect();
    // Rooms are delivered independently of each other: their order is not kept.
    closed.sort();
    assert_eq!(closed, [r#""one":"shutdown""#, r#""two":"shutdown""#]);
}

/// A deploy: node b stops gracefully (SIGTERM) and hands its peers over suspended; it
/// reports that itself before it exits, once; the grace then ends on node a.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_for_a_deploy_has_its_peers_reported_suspended_once() {
    let redis = Redis::start();
    let receiver = Receiver::accepting().await;
    let a = webhook_node(&redis, "a", &receiver);
    let mut b = webhook_node(&redis, "b", &receiver);
    let mut alice = a.join("alice", "doc").await;
    let _bob = b.join("bob", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    receiver.wait_label("peer.joined:bob").await;
    b.signal("-TERM");
    b.exited_within(Duration::from_secs(10)).await;
    receiver.wait_label("peer.suspended:bob").await;
    // Past the 1 s grace: bob never came back.
    receiver.wait_label("peer.left:bob").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.assert_all_signed();
    let bob: Vec<String> = receiver
        .seen()
        .iter()
        .filter(|r| r.event["userId"] == "bob")
        .map(|r| meaning(&r.event))
        .collect();
    assert_eq!(
        bob,
        [
            "peer.joined:bob::b",
            "peer.suspended:bob::b",
            "peer.left:bob:timeout:a"
        ]
    );
}
