//! The admin dashboard over real sockets: the page and its files exist only with an admin
//! key and come with a strict Content-Security-Policy and `no-store`; the stats stream
//! refuses without the key, sends one JSON event a second with the server's figures,
//! holds no more than its cap of streams open, frees a slot when its client goes, ends
//! cleanly when the server shuts down, and on a cluster node lists the live nodes.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use octate_protocol::{ServerMessage, SignalKind};
use octate_test::binary::{RealServer, server_command};
use octate_test::peers::{self, assert_http_error, expect_peer_joined, get, request};
use octate_test::redis::Redis;
use octate_test::server::TestServer;
use octate_transport::AddressList;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const ADMIN_KEY: &str = "admin-key-0123456789";

/// The most stats streams the server keeps open at once.
const MAX_STREAMS: usize = 8;

/// Longest wait for an event: the stream sends one a second.
const EVENT_WAIT: Duration = Duration::from_secs(5);

async fn server() -> TestServer {
    TestServer::start_tweaked(|c| c.admin_key = Some(ADMIN_KEY.to_owned())).await
}

/// Authenticates `user` in `room` with a token asked with the admin key.
async fn join(server: &TestServer, user: &str, room: &str) -> octate_client::Client {
    let fetch = octate_client::fetch_token(server.http, user, room, Some(ADMIN_KEY));
    let token = timeout(peers::WAIT, fetch).await.unwrap().unwrap();
    peers::join(&server.ws_url(), &token, user, None)
        .await
        .client
}

/// An open stats stream read off a raw socket: the response head, then the chunked body
/// cut into server-sent events.
struct EventStream {
    socket: TcpStream,
    /// Bytes read and not yet decoded.
    raw: Vec<u8>,
    /// Body bytes decoded and not yet cut into events.
    text: String,
    headers: Vec<String>,
    /// Whether the last chunk (size 0) arrived.
    ended: bool,
}

/// What opening a stream got: the stream, or a refusal's status and JSON body.
enum Opened {
    Stream(EventStream),
    Refused(u16, Value),
}

impl Opened {
    fn stream(self) -> EventStream {
        match self {
            Self::Stream(stream) => stream,
            Self::Refused(status, body) => panic!("stream refused: {status} {body}"),
        }
    }

    fn refusal(self) -> (u16, Value) {
        match self {
            Self::Stream(_) => panic!("a stream was opened"),
            Self::Refused(status, body) => (status, body),
        }
    }
}

/// `GET /api/admin/stream`, with `Authorization: Bearer <key>` when a key is given.
async fn open_stream(addr: SocketAddr, key: Option<&str>) -> Opened {
    timeout(peers::WAIT, open_stream_unbounded(addr, key))
        .await
        .expect("an answer to GET /api/admin/stream in time")
}

async fn open_stream_unbounded(addr: SocketAddr, key: Option<&str>) -> Opened {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let head = format!("GET /api/admin/stream HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        read_more(&mut socket, &mut raw).await;
    };
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    raw.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<String> = lines.map(str::to_owned).collect();
    if status == 200 {
        return Opened::Stream(EventStream {
            socket,
            raw,
            text: String::new(),
            headers,
            ended: false,
        });
    }
    let length: usize = header(&headers, "content-length").unwrap().parse().unwrap();
    while raw.len() < length {
        read_more(&mut socket, &mut raw).await;
    }
    Opened::Refused(status, serde_json::from_slice(&raw[..length]).unwrap())
}

async fn read_more(socket: &mut TcpStream, raw: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    let n = socket.read(&mut buf).await.unwrap();
    assert!(n > 0, "the server closed the connection early");
    raw.extend_from_slice(&buf[..n]);
}

fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let (n, v) = h.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl EventStream {
    /// The next event's JSON, or `None` once the body ended cleanly; panics after
    /// [`EVENT_WAIT`] without either.
    async fn next(&mut self) -> Option<Value> {
        timeout(EVENT_WAIT, self.next_unbounded())
            .await
            .expect("a stats event or the end of the stream in time")
    }

    async fn next_unbounded(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let event: String = self.text.drain(..end + 2).collect();
                let data = event
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data event: {event:?}"));
                return Some(serde_json::from_str(data.trim_end()).unwrap());
            }
            if self.ended {
                assert!(self.text.is_empty(), "a cut event: {:?}", self.text);
                return None;
            }
            self.decode_chunk().await;
        }
    }

    /// Reads one chunk of the chunked body into `text`.
    async fn decode_chunk(&mut self) {
        let line_end = loop {
            if let Some(end) = self.raw.windows(2).position(|w| w == b"\r\n") {
                break end;
            }
            read_more(&mut self.socket, &mut self.raw).await;
        };
        let size_line = std::str::from_utf8(&self.raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
        while self.raw.len() < line_end + 2 + size + 2 {
            read_more(&mut self.socket, &mut self.raw).await;
        }
        let chunk = &self.raw[line_end + 2..line_end + 2 + size];
        self.text.push_str(std::str::from_utf8(chunk).unwrap());
        self.raw.drain(..line_end + 2 + size + 2);
        if size == 0 {
            self.ended = true;
        }
    }

    /// Reads events until one satisfies `done`, for at most `wait`; returns it.
    async fn until(&mut self, wait: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + wait;
        let mut last = Value::Null;
        loop {
            assert!(
                Instant::now() < deadline,
                "no such event in {wait:?}; the last was {last}"
            );
            let event = self.next().await.expect("the stream goes on");
            if done(&event) {
                return event;
            }
            last = event;
        }
    }
}

#[tokio::test]
async fn without_an_admin_key_the_dashboard_does_not_exist() {
    let server = TestServer::start_tweaked(|c| c.admin_key = None).await;
    for path in ["/admin", "/admin/", "/admin/app.js", "/admin/style.css"] {
        assert_http_error(&get(server.http, path).await, 404, "not-found");
    }
    let (status, body) = open_stream(server.http, Some(ADMIN_KEY)).await.refusal();
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not-found")));
    server.stop().await;
}

#[tokio::test]
async fn the_page_and_its_files_come_with_a_strict_policy_and_are_never_stored() {
    let server = server().await;
    let files = [
        ("/admin", "text/html"),
        ("/admin/", "text/html"),
        ("/admin/app.js", "text/javascript"),
        ("/admin/style.css", "text/css"),
        ("/admin/icon.svg", "image/svg+xml"),
    ];
    for (path, content_type) in files {
        let resp = get(server.http, path).await;
        assert_eq!(resp.status, 200, "{path}");
        assert!(
            resp.header("content-type")
                .is_some_and(|v| v.starts_with(content_type)),
            "{path}: {:?}",
            resp.headers
        );
        assert_eq!(resp.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
        let csp = resp.header("content-security-policy").unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
    }

    // The page loads its script and style from files: no inline script or style, and
    // nothing from another origin.
    let page = String::from_utf8(get(server.http, "/admin").await.body).unwrap();
    assert!(page.contains(r#"<script src="/admin/app.js""#), "{page}");
    assert!(page.contains(r#"href="/admin/style.css""#), "{page}");
    assert_eq!(
        page.matches("<script").count(),
        1,
        "one script, from a file"
    );
    assert!(!page.contains("<style") && !page.contains(" style="));
    assert!(!page.contains("http://") && !page.contains("https://"));
    // The key stays in the tab's session storage and goes in a header.
    let script = String::from_utf8(get(server.http, "/admin/app.js").await.body).unwrap();
    assert!(script.contains("sessionStorage"));
    assert!(!script.contains("localStorage"));
    assert!(script.contains("Authorization: `Bearer ${state.key}`"));

    assert_http_error(&get(server.http, "/admin/other.js").await, 404, "not-found");
    let post = request(server.http, "POST", "/admin", &[], None).await;
    assert_http_error(&post, 405, "method-not-allowed");
    server.stop().await;
}

#[tokio::test]
async fn outside_the_admin_allow_list_the_page_and_the_stream_are_refused() {
    let server = TestServer::start_tweaked(|c| {
        c.admin_key = Some(ADMIN_KEY.to_owned());
        c.access.admin_allow = AddressList::parse("198.51.100.1").unwrap();
    })
    .await;
    assert_http_error(&get(server.http, "/admin").await, 403, "forbidden");
    assert_http_error(&get(server.http, "/admin/app.js").await, 403, "forbidden");
    let (status, body) = open_stream(server.http, Some(ADMIN_KEY)).await.refusal();
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    server.stop().await;
}

#[tokio::test]
async fn the_stream_refuses_a_missing_or_wrong_key() {
    let server = server().await;
    let (status, body) = open_stream(server.http, None).await.refusal();
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    let (status, body) = open_stream(server.http, Some("wrong-key")).await.refusal();
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    server.stop().await;
}

#[tokio::test]
async fn the_stream_sends_an_event_a_second_with_the_servers_figures() {
    let server = server().await;
    let mut alice = join(&server, "alice", "room-1").await;
    let mut bob = join(&server, "bob", "room-1").await;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    let _carol = join(&server, "carol", "room-2").await;

    let mut stream = open_stream(server.http, Some(ADMIN_KEY)).await.stream();
    assert_eq!(
        header(&stream.headers, "content-type"),
        Some("text/event-stream")
    );
    assert_eq!(header(&stream.headers, "cache-control"), Some("no-store"));
    let first = stream.next().await.unwrap();
    assert_eq!(first["connections"], 3, "{first}");
    assert_eq!(first["rooms"], 2, "{first}");
    assert_eq!(first["peers"], 3, "{first}");
    assert_eq!(first["suspended"], 0, "{first}");
    assert_eq!(first["messagesRelayed"], 0, "{first}");
    assert_eq!(first["messagesPerSecond"], 0.0, "{first}");
    assert_eq!(first["memoryLevel"], "normal", "{first}");
    assert!(first["heapBytes"].as_u64().unwrap() > 0, "{first}");
    assert!(first["timestamp"].as_u64().unwrap() > 0, "{first}");
    assert!(first.get("nodeId").is_none() && first.get("clusterNodes").is_none());

    // Twenty signals from alice to bob: the total counts them, the rate sees them.
    for i in 0..20 {
        alice
            .signal(SignalKind::IceCandidate, "bob", json!({"candidate": i}))
            .await
            .unwrap();
    }
    for _ in 0..20 {
        match bob.recv().await.unwrap() {
            ServerMessage::Signal { .. } => {}
            other => panic!("bob: {other:?}"),
        }
    }
    let moved = stream
        .until(Duration::from_secs(5), |e| e["messagesRelayed"] == 20)
        .await;
    let rate = moved["messagesPerSecond"].as_f64().unwrap();
    assert!(rate > 0.0 && rate <= 20.0, "{moved}");

    // With nothing relayed, the rate falls back to zero and the total stays.
    let quiet = stream
        .until(Duration::from_secs(5), |e| e["messagesPerSecond"] == 0.0)
        .await;
    assert_eq!(quiet["messagesRelayed"], 20, "{quiet}");

    // A peer that leaves is gone from the next figures.
    drop(bob);
    let after = stream
        .until(Duration::from_secs(5), |e| e["peers"] == 2)
        .await;
    assert_eq!(after["connections"], 2, "{after}");
    assert!(after["timestamp"].as_u64() > first["timestamp"].as_u64());
    server.stop().await;
}

#[tokio::test]
async fn no_more_streams_than_the_cap_and_a_client_that_goes_frees_its_slot() {
    let server = server().await;
    let mut open = Vec::new();
    for _ in 0..MAX_STREAMS {
        let mut stream = open_stream(server.http, Some(ADMIN_KEY)).await.stream();
        stream.next().await.unwrap();
        open.push(stream);
    }
    let (status, body) = open_stream(server.http, Some(ADMIN_KEY)).await.refusal();
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("too-many-connections"))
    );

    // One client goes: its slot is free once the server notices, within a few events.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reopened = loop {
        match open_stream(server.http, Some(ADMIN_KEY)).await {
            Opened::Stream(stream) => break stream,
            Opened::Refused(503, _) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Opened::Refused(status, body) => panic!("slot never freed: {status} {body}"),
        }
    };
    reopened.next().await.unwrap();
    // The others still stream.
    for stream in &mut open {
        stream.next().await.unwrap();
    }
    let (status, _) = open_stream(server.http, Some(ADMIN_KEY)).await.refusal();
    assert_eq!(status, 503);
    server.stop().await;
}

#[tokio::test]
async fn a_stream_ends_cleanly_when_the_server_shuts_down() {
    let server = server().await;
    let mut stream = open_stream(server.http, Some(ADMIN_KEY)).await.stream();
    stream.next().await.unwrap();

    let task_done = {
        let stop = tokio::spawn(server.stop());
        // The body ends with its last chunk: every event whole, none cut.
        let end = timeout(EVENT_WAIT, async {
            while stream.next_unbounded().await.is_some() {}
        })
        .await;
        assert!(end.is_ok(), "the stream did not end at shutdown");
        stop
    };
    // The server finishes well within its shutdown grace: nothing held it open.
    timeout(Duration::from_secs(3), task_done)
        .await
        .expect("the server stopped")
        .unwrap();
}

/// A node of a two-node cluster over a Redis of the test's own, with the admin key.
fn cluster_node(redis: &Redis, id: &str) -> RealServer {
    let mut cmd = server_command();
    cmd.env("OCTATE_REDIS_URL", redis.url())
        .env("OCTATE_NODE_ID", id)
        .env("OCTATE_ADMIN_KEY", ADMIN_KEY)
        .env("OCTATE_CLUSTER_HEARTBEAT_MS", "100")
        .env("OCTATE_CLUSTER_NODE_TTL_MS", "1000")
        .env("OCTATE_CLUSTER_REAP_INTERVAL_MS", "100");
    RealServer::start_command(cmd, "admin-cluster-secret-0123456789abcdef")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_stream_lists_the_live_nodes() {
    let redis = Redis::start();
    let a = cluster_node(&redis, "node-a");
    let mut b = cluster_node(&redis, "node-b");
    let mut stream = open_stream(a.http, Some(ADMIN_KEY)).await.stream();
    let both = stream
        .until(Duration::from_secs(5), |e| {
            e["clusterNodes"] == json!(["node-a", "node-b"])
        })
        .await;
    assert_eq!(both["nodeId"], "node-a", "{both}");

    // Node b dies: once its heartbeat expires, node a's list no longer has it.
    let _ = b.child.kill();
    let _ = b.child.wait();
    let alone = stream
        .until(Duration::from_secs(10), |e| {
            e["clusterNodes"] == json!(["node-a"])
        })
        .await;
    assert_eq!(alone["nodeId"], "node-a", "{alone}");
}
