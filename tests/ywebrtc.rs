//! The `y-webrtc` endpoint over real sockets, with an independent WebSocket client that
//! speaks the provider's protocol (`subscribe`, `unsubscribe`, `publish`, `ping`): the
//! token is checked before the upgrade, a socket hears only its token's room, publishes
//! are forwarded as written with `clients` added, the native limits hold, and the two
//! protocols share rooms for presence without ever seeing each other's messages. The
//! last tests run two server processes of one cluster over a real Redis.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use octate_protocol::{ErrorCode, ServerMessage};
use octate_test::binary::{RealServer, server_command};
use octate_test::cluster::ClusterNode;
use octate_test::peers::{self, expect_error, expect_peer_joined, expect_silence, next};
use octate_test::redis::Redis;
use octate_test::server::{TestServer, fast_config};
use octate_test::tokens::{KEY_ID, SECRET, mint_with, now_ms};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for anything expected.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(400);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ---- a y-webrtc client -------------------------------------------------------------

fn url(addr: SocketAddr, token: &str) -> String {
    format!("ws://{addr}/y-webrtc?token={token}")
}

/// Opens a y-webrtc socket with `token`; panics if the server refuses.
async fn open(addr: SocketAddr, token: &str) -> Ws {
    let connect = tokio_tungstenite::connect_async(url(addr, token));
    let (ws, _) = tokio::time::timeout(WAIT, connect)
        .await
        .expect("upgrade answered in time")
        .expect("upgrade accepted");
    ws
}

/// The HTTP refusal of an upgrade to `path`: status and JSON body.
async fn refusal(addr: SocketAddr, path: &str) -> (u16, Value) {
    let connect = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"));
    match tokio::time::timeout(WAIT, connect)
        .await
        .expect("answered in time")
    {
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            let json = serde_json::from_slice(body).unwrap_or_else(|e| {
                panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(body))
            });
            (resp.status().as_u16(), json)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("{path}: the upgrade was accepted"),
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// The next text message (pings are answered by the client library).
async fn recv(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .expect("no socket error");
        match msg {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Asserts that no text message arrives for a while.
async fn quiet(ws: &mut Ws, who: &str) {
    let deadline = tokio::time::Instant::now() + QUIET;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("{who}: expected nothing, got {other:?}"),
        }
    }
}

/// Waits for the server's close frame (text before it is skipped); returns its code.
async fn closed(ws: &mut Ws) -> u16 {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("socket error before the close frame: {err}"),
            None => panic!("the socket ended without a close frame"),
        }
    }
}

/// `{"type":"publish"...}` for `topic` with the data `y-webrtc` announces itself with.
fn publish(topic: &str, from: &str) -> String {
    format!(
        r#"{{"type":"publish","topic":"{topic}","data":{{"type":"announce","from":"{from}"}}}}"#
    )
}

/// `publish` as a subscriber gets it: as written, with `clients` last.
fn forwarded(publish: &str, clients: usize) -> String {
    format!(
        "{},\"clients\":{clients}}}",
        publish.strip_suffix('}').unwrap()
    )
}

async fn subscribe(ws: &mut Ws, topics: &[&str]) {
    let msg = json!({"type": "subscribe", "topics": topics}).to_string();
    send(ws, &msg).await;
    // A ping behind it: once its pong is back, the subscription is in place.
    ping(ws).await;
}

async fn ping(ws: &mut Ws) {
    send(ws, r#"{"type":"ping"}"#).await;
    assert_eq!(recv(ws).await, r#"{"type":"pong"}"#);
}

fn minted(user: &str, room: &str, issued_at: u64, ttl: Duration) -> String {
    mint_with(KEY_ID, SECRET, user, room, issued_at, ttl)
}

// ---- tests ---------------------------------------------------------------------------

#[tokio::test]
async fn a_token_is_checked_before_the_upgrade() {
    let server = TestServer::start(fast_config()).await;
    for addr in [server.http, server.signaling] {
        let (status, body) = refusal(addr, "/y-webrtc").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{body}"
        );
        let (status, body) = refusal(addr, "/y-webrtc?token=").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{body}"
        );
        let (status, body) = refusal(addr, "/y-webrtc?token=garbage").await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "token-malformed", "{body}");
        let stale = minted(
            "alice",
            "doc",
            now_ms() - 7_200_000,
            Duration::from_secs(60),
        );
        let (status, body) = refusal(addr, &format!("/y-webrtc?token={stale}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("token-expired")),
            "{body}"
        );
    }

    let token = server.token("alice", "doc").await;
    let mut ws = open(server.http, &token).await;
    ping(&mut ws).await;
    let resp = peers::post(
        server.http,
        "/api/auth/revoke",
        &json!({"token": token}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        closed(&mut ws).await,
        4001,
        "revoking the token ends its socket"
    );
    let (status, body) = refusal(server.signaling, &format!("/y-webrtc?token={token}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token-revoked")),
        "{body}"
    );

    // The token's other parameters and percent-escapes are read as a browser writes them.
    let token = server.token("bob", "doc").await;
    let escaped = token.replace('.', "%2E");
    let mut ws = open(server.signaling, &format!("{escaped}&x=1")).await;
    ping(&mut ws).await;
    server.stop().await;
}

#[tokio::test]
async fn a_full_room_is_refused_before_the_upgrade() {
    let server = TestServer::start_tweaked(|c| c.core.max_peers_per_room = 1).await;
    let mut alice = open(server.signaling, &server.token("alice", "doc").await).await;
    ping(&mut alice).await;
    let bob = server.token("bob", "doc").await;
    let (status, body) = refusal(server.signaling, &format!("/y-webrtc?token={bob}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("room-full")),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn one_socket_per_user_and_room_and_a_quiet_one_is_replaced() {
    let server = TestServer::start_tweaked(|c| {
        c.core.ywebrtc_peer_timeout = Duration::from_millis(1200);
    })
    .await;
    let token = server.token("alice", "doc").await;
    let mut first = open(server.signaling, &token).await;
    ping(&mut first).await;
    // A second tab with the same user: refused before the upgrade, not a replacement
    // (two tabs replacing each other would reconnect in a loop).
    let (status, body) = refusal(server.signaling, &format!("/y-webrtc?token={token}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("too-many-connections")),
        "{body}"
    );
    // Once the first socket has missed its pings (its network dropped), a reconnection
    // replaces it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut second = open(server.signaling, &token).await;
    ping(&mut second).await;
    assert_eq!(closed(&mut first).await, 4004);
    // A socket that closes is gone at once: the next one is admitted.
    second.close(None).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let connect = tokio_tungstenite::connect_async(url(server.signaling, &token)).await;
        if let Ok((mut third, _)) = connect {
            ping(&mut third).await;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "admitted after the close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn the_per_address_connection_limit_counts_ywebrtc_sockets() {
    let server = TestServer::start_tweaked(|c| c.max_connections_per_ip = 1).await;
    let mut alice = open(server.signaling, &server.token("alice", "doc").await).await;
    ping(&mut alice).await;
    let bob = server.token("bob", "doc").await;
    let (status, body) = refusal(server.signaling, &format!("/y-webrtc?token={bob}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too-many-connections")),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_endpoint_can_be_turned_off() {
    let server = TestServer::start_tweaked(|c| c.ywebrtc = false).await;
    let token = server.token("alice", "doc").await;
    for addr in [server.http, server.signaling] {
        let (status, body) = refusal(addr, &format!("/y-webrtc?token={token}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not-found")),
            "{body}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn publishes_reach_the_rooms_subscribers_as_written_with_clients() {
    let server = TestServer::start(fast_config()).await;
    let mut alice = open(server.signaling, &server.token("alice", "doc").await).await;
    let mut bob = open(server.http, &server.token("bob", "doc").await).await;
    let mut carol = open(server.signaling, &server.token("carol", "elsewhere").await).await;

    // Not subscribed yet: nothing is delivered.
    send(&mut alice, &publish("doc", "a")).await;
    quiet(&mut bob, "bob").await;

    subscribe(&mut alice, &["doc", "other"]).await;
    subscribe(&mut bob, &["other", "doc"]).await;
    // Carol's token is for another room: her subscription to "doc" is ignored.
    subscribe(&mut carol, &["doc"]).await;

    let text = publish("doc", "a");
    send(&mut alice, &text).await;
    assert_eq!(recv(&mut bob).await, forwarded(&text, 2));
    // Data of any shape, spacing included, is forwarded byte for byte.
    let odd =
        r#"{ "type" : "publish", "topic":"doc", "data": "AAEC/+base64==" , "x":[1, {"y":null}] }"#;
    send(&mut bob, odd).await;
    assert_eq!(
        recv(&mut alice).await,
        r#"{ "type" : "publish", "topic":"doc", "data": "AAEC/+base64==" , "x":[1, {"y":null}],"clients":2}"#
    );
    quiet(&mut alice, "alice (its own publish)").await;
    quiet(&mut bob, "bob (its own publish)").await;
    quiet(&mut carol, "carol (another room)").await;

    // Other topics go nowhere; carol cannot publish into "doc".
    send(&mut alice, &publish("other", "a")).await;
    send(&mut carol, &publish("doc", "c")).await;
    send(&mut carol, &publish("elsewhere", "c")).await;
    quiet(&mut bob, "bob").await;

    // Unsubscribed, bob hears nothing more.
    send(&mut bob, r#"{"type":"unsubscribe","topics":["doc"]}"#).await;
    ping(&mut bob).await;
    send(&mut alice, &publish("doc", "a")).await;
    quiet(&mut bob, "bob after unsubscribing").await;
    server.stop().await;
}

#[tokio::test]
async fn ywebrtc_sockets_are_peers_of_their_room_without_crossing_protocols() {
    let server = TestServer::start(fast_config()).await;
    let mut native = server.join("nina", "doc").await;
    let mut alice = open(server.signaling, &server.token("alice", "doc").await).await;
    expect_peer_joined(&mut native.client, "nina", "alice").await;
    subscribe(&mut alice, &["doc"]).await;

    let resp = peers::get(server.http, "/api/rooms/doc/peers").await;
    let ids: Vec<String> = peers::body(&resp)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["userId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["nina", "alice"]);
    let stats = peers::stats(server.http).await;
    assert_eq!(stats["server"]["peers"], 2, "{stats}");
    assert_eq!(stats["server"]["totalConnections"], 2, "{stats}");
    let metrics = peers::get(server.http, "/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(metrics.contains("octate_peers 2"), "{metrics}");

    // Native traffic never reaches the y-webrtc socket...
    native
        .client
        .send_text(r#"{"type":"presence","data":{"status":"active"}}"#)
        .await
        .unwrap();
    native
        .client
        .send_text(
            r#"{"type":"sdp-offer","data":{"peer":"alice","offer":{"type":"offer","sdp":"v=0"}}}"#,
        )
        .await
        .unwrap();
    expect_error(&mut native.client, "nina", ErrorCode::PeerIncompatible).await;
    quiet(&mut alice, "alice").await;
    // ...and y-webrtc traffic never reaches the native one.
    send(&mut alice, &publish("doc", "a")).await;
    expect_silence(&mut native.client, "nina").await;

    // Leaving is presence too.
    alice.close(None).await.unwrap();
    match next(&mut native.client, "nina").await {
        ServerMessage::PeerLeft { peer, .. } => assert_eq!(peer.user_id.as_str(), "alice"),
        other => panic!("nina: expected peer-left, got {}", peers::brief(&other)),
    }
    server.stop().await;
}

#[tokio::test]
async fn malformed_input_is_ignored_and_limits_close_cleanly() {
    let server = TestServer::start_tweaked(|c| {
        c.max_message_bytes = 4096;
        c.messages_per_second = 5;
        c.message_burst = 20;
        c.rate_limit_strikes = 5;
    })
    .await;
    let token = server.token("alice", "doc").await;
    let mut ws = open(server.signaling, &token).await;
    let many: Vec<String> = (0..300).map(|i| format!("\"t{i}\"")).collect();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for text in [
        "not json",
        "null",
        "[1,2]",
        r#"{"type":42}"#,
        r#"{"type":"subscribe","topics":"doc"}"#,
        r#"{"type":"subscribe","topics":[1,{"a":2},null]}"#,
        r#"{"type":"publish","topic":7,"data":{}}"#,
        r#"{"type":"publish"}"#,
        r#"{"type":"who-knows","topics":["doc"]}"#,
        &format!(r#"{{"type":"publish","topic":"doc","data":{deep}}}"#),
        &format!(r#"{{"type":"subscribe","topics":[{}]}}"#, many.join(",")),
    ] {
        send(&mut ws, text).await;
    }
    ping(&mut ws).await;

    // A frame over the message size limit: 1009.
    send(&mut ws, &"x".repeat(5000)).await;
    assert_eq!(closed(&mut ws).await, 1009);

    // Binary frames: 1003.
    let mut ws = open(server.signaling, &token).await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(closed(&mut ws).await, 1003);

    // Flooding: dropped over the rate, then closed with 4029.
    let mut ws = open(server.signaling, &token).await;
    for _ in 0..200 {
        if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    assert_eq!(closed(&mut ws).await, 4029);
    server.stop().await;
}

#[tokio::test]
async fn a_silent_socket_is_closed_and_pings_keep_it_open() {
    let server = TestServer::start_tweaked(|c| {
        c.core.ywebrtc_peer_timeout = Duration::from_millis(600);
    })
    .await;
    let mut silent = open(server.signaling, &server.token("alice", "doc").await).await;
    let mut talker = open(server.signaling, &server.token("bob", "doc").await).await;
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        ping(&mut talker).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed(&mut silent).await, 4000);
    ping(&mut talker).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_reaches_subscribers_on_another_node() {
    const CLUSTER_SECRET: &str = "ywebrtc-cluster-secret-0123456789abcdef";
    let redis = Redis::start();
    let node = |id: &str| {
        let mut cmd = server_command();
        cmd.env("OCTATE_REDIS_URL", redis.url())
            .env("OCTATE_NODE_ID", id)
            .env("OCTATE_CLUSTER_HEARTBEAT_MS", "100")
            .env("OCTATE_CLUSTER_NODE_TTL_MS", "1000")
            .env("OCTATE_CLUSTER_REAP_INTERVAL_MS", "100");
        RealServer::start_command(cmd, CLUSTER_SECRET)
    };
    let (a, b) = (node("a"), node("b"));
    let mut alice = open(a.signaling, &a.token("alice", "doc").await).await;
    let mut bob = open(b.signaling, &b.token("bob", "doc").await).await;
    let mut carol = open(b.signaling, &b.token("carol", "doc").await).await;
    subscribe(&mut alice, &["doc"]).await;
    subscribe(&mut bob, &["doc"]).await;

    // The room is one across nodes; bob's join may still be on its way to node a.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let resp = peers::get(a.http, "/api/rooms/doc/peers").await;
        if resp.status == 200 && peers::body(&resp).as_array().map(Vec::len) == Some(3) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "three peers on node a"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let text = publish("doc", "a");
    send(&mut alice, &text).await;
    let got = recv(&mut bob).await;
    assert!(got.starts_with(text.strip_suffix('}').unwrap()), "{got}");
    let value: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(value["data"], json!({"type": "announce", "from": "a"}));
    assert!(value["clients"].is_u64(), "{got}");
    // Carol never subscribed.
    quiet(&mut carol, "carol").await;

    let back = publish("doc", "b");
    send(&mut bob, &back).await;
    let got = recv(&mut alice).await;
    assert!(got.starts_with(back.strip_suffix('}').unwrap()), "{got}");

    // A client announces itself as soon as it subscribes, before its join is committed
    // by the cluster: the announce still reaches the others.
    let mut dave = open(b.signaling, &b.token("dave", "doc").await).await;
    send(&mut dave, r#"{"type":"subscribe","topics":["doc"]}"#).await;
    let hello = publish("doc", "d");
    send(&mut dave, &hello).await;
    let got = recv(&mut alice).await;
    assert!(got.starts_with(hello.strip_suffix('}').unwrap()), "{got}");
    let got = recv(&mut bob).await;
    assert!(got.starts_with(hello.strip_suffix('}').unwrap()), "{got}");
    drop((alice, bob, carol, dave, a, b, redis));
}

/// A native peer on node a never sends a `y-webrtc` peer on node b a native message: its
/// signal is refused as on one node, the server API refuses to message it, and a
/// broadcast does not count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ywebrtc_peer_on_another_node_is_known_as_one() {
    let redis = Redis::start();
    let (a, b) = (
        ClusterNode::start(&redis, "a"),
        ClusterNode::start(&redis, "b"),
    );
    let mut nina = a.join("nina", "doc").await;
    let mut yuri = open(b.signaling, &b.token("yuri", "doc").await).await;
    subscribe(&mut yuri, &["doc"]).await;
    expect_peer_joined(&mut nina.client, "nina", "yuri").await;
    nina.client
        .send_text(
            r#"{"type":"sdp-offer","data":{"peer":"yuri","offer":{"type":"offer","sdp":"v=0"}}}"#,
        )
        .await
        .unwrap();
    expect_error(&mut nina.client, "nina", ErrorCode::PeerIncompatible).await;
    let resp = peers::post(
        a.http,
        "/api/rooms/doc/peers/yuri/message",
        &json!({"data": {"hello": 1}}),
        None,
    )
    .await;
    assert_eq!(resp.status, 409, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(peers::body(&resp)["error"]["code"], "peer-incompatible");
    let resp = peers::post(
        a.http,
        "/api/rooms/doc/broadcast",
        &json!({"data": {"hello": 2}}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(peers::body(&resp)["delivered"], 1, "nina only");
    match next(&mut nina.client, "nina").await {
        ServerMessage::ServerMessage { .. } => {}
        other => panic!("nina: expected the broadcast, got {}", peers::brief(&other)),
    }
    quiet(&mut yuri, "yuri").await;
}
