//! Every HTTP endpoint over a real socket: reports, metrics, tokens, rooms, errors,
//! CORS, the admin key, and the WebSocket upgrade on the HTTP port.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use octate_client::HttpResponse;
use octate_protocol::{ErrorCode, RoomCloseReason, ServerMessage, SignalKind};
use octate_test::peers::{
    self, assert_http_error, body, expect_close, expect_peer_joined, expect_room_closed,
    expect_silence, get, next, post, request,
};
use octate_test::server::{TestServer, fast_config};
use octate_transport::CorsOrigins;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const ADMIN_KEY: &str = "admin-key-0123456789";
const ALLOWED: &str = "http://allowed.test";

/// Polls `/stats` until `pred` holds (bounded), and returns the last body.
async fn stats_when(addr: SocketAddr, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + peers::WAIT;
    loop {
        let stats = peers::stats(addr).await;
        if pred(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: /stats never got there: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(resp: &HttpResponse) -> String {
    String::from_utf8(resp.body.clone()).unwrap()
}

fn room_request(room: &str) -> Value {
    json!({
        "roomId": room,
        "roomName": "Pairing",
        "hostId": "alice",
        "hostName": "Alice",
        "fileId": "src/main.rs",
        "version": 3
    })
}

#[tokio::test]
async fn health_info_and_stats_report_the_server() {
    let server = TestServer::start(fast_config()).await;

    let resp = get(server.http, "/health").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let health = body(&resp);
    assert_eq!(health["status"], "ok");
    assert!(
        health["timestamp"].as_u64().unwrap() > 1_700_000_000_000,
        "{health}"
    );
    let memory = &health["memory"];
    assert!(memory["heapUsed"].as_f64().unwrap() > 0.0, "{health}");
    assert!(memory["heapTotal"].as_f64().unwrap() > 0.0, "{health}");
    assert!(memory["heapUsedBytes"].as_u64().unwrap() > 0, "{health}");
    assert!(memory["rssBytes"].as_u64().unwrap() > 0, "{health}");
    assert!(memory["heapPercent"].as_f64().unwrap() > 0.0, "{health}");
    assert_eq!(memory["level"], "normal");

    let info = body(&get(server.http, "/info").await);
    assert_eq!(
        info,
        json!({"name": "Octate P2P signaling server", "version": env!("CARGO_PKG_VERSION"), "protocolVersion": 1})
    );

    let idle = peers::stats(server.http).await;
    assert_eq!(idle["server"]["activeRooms"], 0, "{idle}");
    assert_eq!(idle["server"]["totalConnections"], 0, "{idle}");

    let mut alice = server.join("alice", "room-1").await.client;
    let _bob = server.join("bob", "room-1").await.client;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    let stats = peers::stats(server.http).await;
    assert_eq!(stats["server"]["activeRooms"], 1, "{stats}");
    assert_eq!(stats["server"]["totalConnections"], 2, "{stats}");
    assert_eq!(stats["server"]["peers"], 2, "{stats}");
    assert_eq!(stats["operations"]["roomsCreated"], 1, "{stats}");
    assert!(stats["server"]["uptime"].is_u64(), "{stats}");
    assert!(
        stats["memory"]["heapUsedBytes"].as_u64().unwrap() > 0,
        "{stats}"
    );

    // A connection that has not authenticated counts as a connection, not a peer.
    let anon = peers::connect(&server.ws_url()).await;
    stats_when(server.http, "anonymous connection", |s| {
        s["server"]["totalConnections"] == 3 && s["server"]["peers"] == 2
    })
    .await;
    anon.close().await.unwrap();
    stats_when(server.http, "anonymous connection gone", |s| {
        s["server"]["totalConnections"] == 2
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_relayed_messages_and_connections() {
    let server = TestServer::start(fast_config()).await;
    let mut alice = server.join("alice", "room-1").await.client;
    let mut bob = server.join("bob", "room-1").await.client;
    expect_peer_joined(&mut alice, "alice", "bob").await;

    let offer = json!({"type": "offer", "sdp": "v=0"});
    for _ in 0..2 {
        alice
            .signal(SignalKind::Offer, "bob", offer.clone())
            .await
            .unwrap();
        assert!(matches!(
            next(&mut bob, "bob").await,
            ServerMessage::Signal {
                kind: SignalKind::Offer,
                ..
            }
        ));
    }
    bob.signal(SignalKind::Offer, "alice", offer.clone())
        .await
        .unwrap();
    assert!(matches!(
        next(&mut alice, "alice").await,
        ServerMessage::Signal {
            kind: SignalKind::Offer,
            ..
        }
    ));
    bob.signal(SignalKind::Answer, "nobody", offer)
        .await
        .unwrap();
    octate_test::peers::expect_error(&mut bob, "bob", ErrorCode::PeerNotFound).await;

    let resp = get(server.http, "/metrics").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        resp.headers
    );
    let metrics = text(&resp);
    for line in [
        "octate_messages_relayed_total{type=\"sdp-offer\"} 3",
        "octate_messages_relayed_total{type=\"sdp-answer\"} 0",
        "octate_errors_total{code=\"peer-not-found\"} 1",
        "# TYPE octate_connections gauge",
        "octate_connections 2",
        "octate_rooms 1",
        "octate_peers 2",
        "octate_connections_opened_total 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    let stats = peers::stats(server.http).await;
    assert_eq!(stats["operations"]["messagesRelayed"], 3, "{stats}");
    assert_eq!(stats["operations"]["errorsSent"], 1, "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn rooms_can_be_created_read_and_entered_over_http() {
    let server = TestServer::start(fast_config()).await;

    let resp = post(server.http, "/api/rooms", &room_request("pairing"), None).await;
    assert_eq!(resp.status, 201, "{}", text(&resp));
    let created = body(&resp);
    assert_eq!(created["roomId"], "pairing");
    assert_eq!(created["roomName"], "Pairing");
    assert_eq!(created["hostId"], "alice");
    assert_eq!(created["hostName"], "Alice");
    assert_eq!(created["fileId"], "src/main.rs");
    assert_eq!(created["version"], 3);
    assert_eq!(created["state"], "ACTIVE");
    assert_eq!(created["peers"], json!([]));
    assert_eq!(created["peerCount"], 0);
    assert!(created["createdAt"].as_u64().unwrap() > 0);
    assert!(
        created.get("content").is_none(),
        "the server keeps no content: {created}"
    );

    let again = post(server.http, "/api/rooms", &room_request("pairing"), None).await;
    assert_http_error(&again, 409, "room-exists");
    let missing = post(
        server.http,
        "/api/rooms",
        &json!({"roomId": "x", "hostId": "alice"}),
        None,
    )
    .await;
    assert_http_error(&missing, 400, "missing-field");
    let bad_id = post(
        server.http,
        "/api/rooms",
        &json!({"roomId": "bad id", "roomName": "x", "hostId": "a", "hostName": "A"}),
        None,
    )
    .await;
    assert_http_error(&bad_id, 400, "invalid-field");
    let bytes = serde_json::to_vec(&room_request("other")).unwrap();
    let no_type = request(server.http, "POST", "/api/rooms", &[], Some(&bytes)).await;
    assert_http_error(&no_type, 415, "unsupported-media-type");
    let json_type = [("Content-Type", "application/json")];
    let not_json = request(
        server.http,
        "POST",
        "/api/rooms",
        &json_type,
        Some(b"{\"roomId\":"),
    )
    .await;
    assert_http_error(&not_json, 400, "invalid-json");
    let mut huge = room_request("huge");
    huge["roomName"] = json!("x".repeat(70 * 1024));
    let huge = serde_json::to_vec(&huge).unwrap();
    let too_big = request(server.http, "POST", "/api/rooms", &json_type, Some(&huge)).await;
    assert_http_error(&too_big, 413, "too-large");
    assert_http_error(
        &get(server.http, "/api/rooms/huge").await,
        404,
        "room-not-found",
    );

    assert_eq!(body(&get(server.http, "/api/rooms/pairing").await), created);
    assert_eq!(
        body(&get(server.http, "/api/rooms/pairing/peers").await),
        json!([])
    );
    assert_http_error(
        &get(server.http, "/api/rooms/nope").await,
        404,
        "room-not-found",
    );
    assert_http_error(
        &get(server.http, "/api/rooms/nope/peers").await,
        404,
        "room-not-found",
    );
    assert_http_error(
        &get(server.http, "/api/rooms/bad%20id").await,
        400,
        "invalid-field",
    );

    // A peer entering the pre-created room finds its name and file, and hosts it.
    let joined = server.join("alice", "pairing").await;
    assert_eq!(joined.room.room_name, "Pairing");
    assert_eq!(joined.room.file_id.as_deref(), Some("src/main.rs"));
    assert_eq!(joined.room.version, Some(3));
    assert!(joined.room.peers[0].is_host);
    let listed = body(&get(server.http, "/api/rooms/pairing/peers").await);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["userId"], "alice");
    assert_eq!(listed[0]["isHost"], true);
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_room_closes_its_peers_with_4003() {
    let server = TestServer::start(fast_config()).await;
    let mut alice = server.join("alice", "doomed").await.client;
    let mut bob = server.join("bob", "doomed").await.client;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    let mut carol = server.join("carol", "elsewhere").await.client;

    let resp = request(server.http, "DELETE", "/api/rooms/doomed", &[], None).await;
    assert_eq!(resp.status, 200);
    assert_eq!(body(&resp), json!({"success": true}));
    for (client, who) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        expect_room_closed(client, who, RoomCloseReason::Deleted).await;
        expect_close(client, who, 4003).await;
    }
    assert_http_error(
        &get(server.http, "/api/rooms/doomed").await,
        404,
        "room-not-found",
    );
    let again = request(server.http, "DELETE", "/api/rooms/doomed", &[], None).await;
    assert_http_error(&again, 404, "room-not-found");

    expect_silence(&mut carol, "carol").await;
    assert_eq!(
        body(&get(server.http, "/api/rooms/elsewhere").await)["peerCount"],
        1
    );
    let stats = peers::stats(server.http).await;
    assert_eq!(stats["server"]["activeRooms"], 1, "{stats}");
    assert_eq!(stats["operations"]["roomsClosed"], 1, "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let server = TestServer::start(fast_config()).await;
    for path in ["/nope", "/api", "/api/rooms/a/b/c"] {
        let resp = get(server.http, path).await;
        assert_http_error(&resp, 404, "not-found");
        assert_eq!(
            resp.header("content-type"),
            Some("application/json"),
            "{path}"
        );
    }
    assert_http_error(
        &request(server.http, "POST", "/nope", &[], Some(b"{}")).await,
        404,
        "not-found",
    );

    let cases = [
        ("DELETE", "/health", "GET, OPTIONS"),
        ("POST", "/stats", "GET, OPTIONS"),
        ("PUT", "/api/rooms", "GET, POST, OPTIONS"),
        ("GET", "/api/rooms/r1/peers/u1/kick", "POST, OPTIONS"),
        ("GET", "/api/auth/token", "POST, OPTIONS"),
        ("POST", "/api/rooms/r1", "GET, DELETE, OPTIONS"),
        ("DELETE", "/api/rooms/r1/peers", "GET, OPTIONS"),
    ];
    for (method, path, allow) in cases {
        let resp = request(server.http, method, path, &[], None).await;
        assert_http_error(&resp, 405, "method-not-allowed");
        assert_eq!(resp.header("allow"), Some(allow), "{method} {path}");
    }
    server.stop().await;
}

/// Opens a WebSocket to `url` with an `Origin` header; returns the HTTP status on refusal.
async fn ws_with_origin(url: &str, origin: &str) -> Result<(), u16> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", HeaderValue::from_str(origin).unwrap());
    match tokio::time::timeout(peers::WAIT, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(tungstenite::Error::Http(resp))) => Err(resp.status().as_u16()),
        Ok(Err(err)) => panic!("upgrade with Origin {origin}: {err}"),
        Err(_) => panic!("upgrade with Origin {origin}: no answer"),
    }
}

#[tokio::test]
async fn cors_allows_only_the_listed_origins() {
    let server =
        TestServer::start_tweaked(|c| c.cors_origins = CorsOrigins::List(vec![ALLOWED.to_owned()]))
            .await;
    let preflight = |origin: &'static str| {
        let headers = [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
        ];
        async move { request(server.http, "OPTIONS", "/api/rooms", &headers, None).await }
    };

    let ok = preflight(ALLOWED).await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), Some(ALLOWED));
    assert!(
        ok.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        ok.header("access-control-allow-headers")
            .unwrap()
            .to_lowercase()
            .contains("authorization")
    );

    let refused = preflight("http://evil.test").await;
    assert_http_error(&refused, 403, "forbidden");
    assert_eq!(refused.header("access-control-allow-origin"), None);

    let allowed_get = request(server.http, "GET", "/health", &[("Origin", ALLOWED)], None).await;
    assert_eq!(
        allowed_get.header("access-control-allow-origin"),
        Some(ALLOWED)
    );
    let evil_get = request(
        server.http,
        "GET",
        "/health",
        &[("Origin", "http://evil.test")],
        None,
    )
    .await;
    assert_eq!(evil_get.header("access-control-allow-origin"), None);

    // WebSocket upgrades follow the same list, on both ports; non-browser clients send no Origin.
    let http_ws = format!("ws://{}/ws", server.http);
    for url in [server.ws_url(), http_ws] {
        assert_eq!(
            ws_with_origin(&url, "http://evil.test").await,
            Err(403),
            "{url}"
        );
        assert_eq!(ws_with_origin(&url, ALLOWED).await, Ok(()), "{url}");
    }
    server.join("alice", "room-1").await;
    server.stop().await;
}

#[tokio::test]
async fn the_admin_key_guards_tokens_and_rooms() {
    let server = TestServer::start_tweaked(|c| c.admin_key = Some(ADMIN_KEY.to_owned())).await;
    let token_req = json!({"userId": "alice", "roomId": "room-1"});
    let calls: [(&str, &str, Value); 3] = [
        ("POST", "/api/auth/token", token_req.clone()),
        ("POST", "/api/rooms", room_request("guarded")),
        ("DELETE", "/api/rooms/guarded", Value::Null),
    ];
    for (method, path, payload) in &calls {
        let bytes = serde_json::to_vec(payload).unwrap();
        let send = |auth: Option<String>| {
            let bytes = bytes.clone();
            async move {
                let mut headers = vec![("Content-Type", "application/json")];
                let auth = auth.map(|k| format!("Bearer {k}"));
                if let Some(auth) = auth.as_deref() {
                    headers.push(("Authorization", auth));
                }
                let body = (*method == "POST").then_some(bytes.as_slice());
                request(server.http, method, path, &headers, body).await
            }
        };
        assert_http_error(&send(None).await, 401, "unauthorized");
        assert_http_error(
            &send(Some("wrong-key-0123456789".into())).await,
            403,
            "forbidden",
        );
        let ok = send(Some(ADMIN_KEY.into())).await;
        assert!(
            matches!(ok.status, 200 | 201),
            "{method} {path} with the key: {} {}",
            ok.status,
            text(&ok)
        );
    }

    let fetch = octate_client::fetch_token(server.http, "alice", "room-1", Some(ADMIN_KEY));
    let token = tokio::time::timeout(peers::WAIT, fetch)
        .await
        .unwrap()
        .unwrap();
    let revoke = json!({"token": token});
    assert_http_error(
        &post(server.http, "/api/auth/revoke", &revoke, None).await,
        401,
        "unauthorized",
    );
    // Validation and reads need no key.
    let valid = post(
        server.http,
        "/api/auth/validate",
        &json!({"token": token, "userId": "alice", "roomId": "room-1"}),
        None,
    )
    .await;
    assert_eq!(body(&valid), json!({"valid": true}));
    assert_eq!(get(server.http, "/stats").await.status, 200);
    let revoked = post(server.http, "/api/auth/revoke", &revoke, Some(ADMIN_KEY)).await;
    assert_eq!(revoked.status, 200, "{}", text(&revoked));
    server.stop().await;
}

#[tokio::test]
async fn websocket_upgrades_at_ws_on_the_http_port() {
    let server = TestServer::start(fast_config()).await;
    let token_a = server.token("alice", "room-1").await;
    let token_b = server.token("bob", "room-1").await;
    let http_ws = format!("ws://{}/ws", server.http);
    let mut alice = peers::join(&http_ws, &token_a, "alice", None).await.client;
    // The signaling port accepts any path.
    let sig_ws = format!("ws://{}/any/path", server.signaling);
    let mut bob = peers::join(&sig_ws, &token_b, "bob", None).await.client;
    expect_peer_joined(&mut alice, "alice", "bob").await;
    bob.signal(SignalKind::Offer, "alice", json!({"sdp": "v=0"}))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut alice, "alice").await,
        ServerMessage::Signal { .. }
    ));

    // On the HTTP port, other paths are not upgraded.
    let url = format!("ws://{}/other", server.http);
    match tokio::time::timeout(peers::WAIT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
    {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 404),
        Ok(_) => panic!("an upgrade outside /ws was accepted on the HTTP port"),
        Err(err) => panic!("unexpected failure: {err}"),
    }
    server.stop().await;
}
