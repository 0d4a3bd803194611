//! The server API for app backends over real sockets: kicking a peer (and revoking its
//! token), `server-message` to a room or to one peer, and the paginated room list, all
//! behind the admin key.

#![allow(clippy::unwrap_used)]

use octate_protocol::{ErrorCode, LeaveReason, ServerMessage};
use octate_test::peers::{
    self, assert_http_error, body, expect_close, expect_error, expect_peer_joined,
    expect_peer_left, expect_silence, get, next, post, request,
};
use octate_test::server::TestServer;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-0123456789";

async fn server() -> TestServer {
    TestServer::start_tweaked(|c| c.admin_key = Some(ADMIN_KEY.to_owned())).await
}

/// A token from the HTTP API, asked with the admin key.
async fn token(server: &TestServer, user: &str, room: &str) -> String {
    let fetch = octate_client::fetch_token(server.http, user, room, Some(ADMIN_KEY));
    tokio::time::timeout(peers::WAIT, fetch)
        .await
        .expect("token issued in time")
        .unwrap()
}

/// Authenticates `user` in `room` and asserts `auth-ok`.
async fn join(server: &TestServer, user: &str, room: &str) -> octate_client::Client {
    let token = token(server, user, room).await;
    peers::join(&server.ws_url(), &token, user, None)
        .await
        .client
}

async fn admin_post(server: &TestServer, path: &str, body: &Value) -> octate_client::HttpResponse {
    post(server.http, path, body, Some(ADMIN_KEY)).await
}

async fn admin_get(server: &TestServer, path: &str) -> octate_client::HttpResponse {
    let auth = format!("Bearer {ADMIN_KEY}");
    request(server.http, "GET", path, &[("authorization", &auth)], None).await
}

#[tokio::test]
async fn a_kicked_peer_gets_kicked_then_4005_and_the_others_see_it_leave() {
    let server = server().await;
    let mut alice = join(&server, "alice", "room-1").await;
    let mut bob = join(&server, "bob", "room-1").await;
    expect_peer_joined(&mut alice, "alice", "bob").await;

    let resp = admin_post(
        &server,
        "/api/rooms/room-1/peers/bob/kick",
        &json!({"reason": "spam"}),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(body(&resp), json!({"success": true, "tokenRevoked": false}));
    expect_error(&mut bob, "bob", ErrorCode::Kicked).await;
    expect_close(&mut bob, "bob", 4005).await;
    expect_peer_left(&mut alice, "alice", "bob", LeaveReason::Kicked).await;
    let peers = body(&get(server.http, "/api/rooms/room-1/peers").await);
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");

    // The same peer again, or a room that does not exist.
    assert_http_error(
        &admin_post(&server, "/api/rooms/room-1/peers/bob/kick", &json!({})).await,
        404,
        "peer-not-found",
    );
    assert_http_error(
        &admin_post(&server, "/api/rooms/nope/peers/bob/kick", &json!({})).await,
        404,
        "room-not-found",
    );
    server.stop().await;
}

#[tokio::test]
async fn a_kick_with_revoke_token_also_refuses_the_token_afterwards() {
    let server = server().await;
    let mut alice = join(&server, "alice", "room-1").await;
    let token = token(&server, "bob", "room-1").await;
    let mut bob = peers::join(&server.ws_url(), &token, "bob", None)
        .await
        .client;
    expect_peer_joined(&mut alice, "alice", "bob").await;

    let resp = admin_post(
        &server,
        "/api/rooms/room-1/peers/bob/kick",
        &json!({"revokeToken": true}),
    )
    .await;
    assert_eq!(body(&resp), json!({"success": true, "tokenRevoked": true}));
    expect_error(&mut bob, "bob", ErrorCode::Kicked).await;
    expect_close(&mut bob, "bob", 4005).await;
    expect_peer_left(&mut alice, "alice", "bob", LeaveReason::Kicked).await;

    // Coming back with the same token fails.
    let (mut again, text) = peers::auth_raw(&server.ws_url(), &token, None).await;
    match ServerMessage::decode(text.as_bytes()).unwrap() {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::TokenRevoked),
        other => panic!("expected token-revoked, got {other:?}"),
    }
    expect_close(&mut again, "bob again", 4001).await;
    expect_silence(&mut alice, "alice").await;
    server.stop().await;
}

#[tokio::test]
async fn a_broadcast_reaches_every_peer_and_a_message_only_its_peer() {
    let server = server().await;
    let mut alice = join(&server, "alice", "room-1").await;
    let mut bob = join(&server, "bob", "room-1").await;
    expect_peer_joined(&mut alice, "alice", "bob").await;

    let resp = admin_post(
        &server,
        "/api/rooms/room-1/broadcast",
        &json!({"data": {"notice": "closing in 5 minutes"}}),
    )
    .await;
    assert_eq!(body(&resp), json!({"delivered": 2}));
    for (client, who) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let text = peers::next_text(client, who).await;
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({"type": "server-message", "roomId": "room-1",
                   "data": {"notice": "closing in 5 minutes"}}),
            "{who}"
        );
    }

    let resp = admin_post(
        &server,
        "/api/rooms/room-1/peers/bob/message",
        &json!({"data": {"n": 1}}),
    )
    .await;
    assert_eq!(body(&resp), json!({"delivered": 1}));
    match next(&mut bob, "bob").await {
        ServerMessage::ServerMessage { data, .. } => assert_eq!(data.get(), r#"{"n":1}"#),
        other => panic!("bob: expected server-message, got {other:?}"),
    }
    expect_silence(&mut alice, "alice").await;
    server.stop().await;
}

#[tokio::test]
async fn server_messages_are_checked_like_client_messages() {
    let server = server().await;
    let mut alice = join(&server, "alice", "room-1").await;
    let path = "/api/rooms/room-1/broadcast";
    assert_http_error(
        &admin_post(&server, path, &json!({"data": [1, 2]})).await,
        400,
        "invalid-field",
    );
    assert_http_error(
        &admin_post(&server, path, &json!({})).await,
        400,
        "missing-field",
    );
    let big = "x".repeat(octate_protocol::DEFAULT_MAX_MESSAGE_BYTES);
    let resp = admin_post(&server, path, &json!({"data": {"big": big}})).await;
    assert!(
        matches!(resp.status, 413),
        "status {} {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    assert_http_error(
        &admin_post(
            &server,
            "/api/rooms/room-1/peers/carol/message",
            &json!({"data": {}}),
        )
        .await,
        404,
        "peer-not-found",
    );
    expect_silence(&mut alice, "alice").await;
    server.stop().await;
}

#[tokio::test]
async fn rooms_are_listed_page_by_page_with_their_peer_counts() {
    let server = server().await;
    let mut clients = Vec::new();
    for (user, room) in [
        ("u", "room-c"),
        ("u", "room-a"),
        ("v", "room-a"),
        ("u", "room-b"),
    ] {
        clients.push(join(&server, user, room).await);
    }
    let first = body(&admin_get(&server, "/api/rooms?limit=2").await);
    let ids: Vec<&str> = first["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["roomId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["room-a", "room-b"], "{first}");
    assert_eq!(first["rooms"][0]["peerCount"], 2);
    assert_eq!(first["nextCursor"], "room-b");

    let rest = body(&admin_get(&server, "/api/rooms?limit=2&cursor=room-b").await);
    assert_eq!(rest["rooms"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["rooms"][0]["roomId"], "room-c");
    assert!(rest.get("nextCursor").is_none(), "{rest}");

    let idle = body(&admin_get(&server, "/api/rooms?state=IDLE").await);
    assert_eq!(idle["rooms"], json!([]));
    assert_http_error(
        &admin_get(&server, "/api/rooms?limit=0").await,
        400,
        "invalid-field",
    );
    drop(clients);
    server.stop().await;
}

#[tokio::test]
async fn every_server_api_route_needs_the_admin_key() {
    let server = server().await;
    let _alice = join(&server, "alice", "room-1").await;
    let posts = [
        ("/api/rooms/room-1/peers/alice/kick", json!({})),
        ("/api/rooms/room-1/broadcast", json!({"data": {}})),
        ("/api/rooms/room-1/peers/alice/message", json!({"data": {}})),
    ];
    for (path, payload) in &posts {
        assert_http_error(
            &post(server.http, path, payload, None).await,
            401,
            "unauthorized",
        );
        assert_http_error(
            &post(server.http, path, payload, Some("wrong-key-0123456789")).await,
            403,
            "forbidden",
        );
    }
    assert_http_error(&get(server.http, "/api/rooms").await, 401, "unauthorized");
    // Alice is still there: nothing was done without the key.
    let peers = body(&get(server.http, "/api/rooms/room-1/peers").await);
    assert_eq!(peers.as_array().unwrap().len(), 1);
    server.stop().await;
}
