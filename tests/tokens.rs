//! Tokens over real sockets: forged, expired, early, garbage, revoked and other-room
//! tokens are refused without disturbing the room; tokens survive a restart.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use octate_protocol::{ErrorCode, ServerMessage};
use octate_test::peers::{self, expect_close, expect_error, expect_silence, next};
use octate_test::server::{TestServer, fast_config};
use octate_test::tokens::{KEY_ID, SECRET, authority, authority_with, mint_with, now_ms};
use serde_json::json;

const HOUR_MS: u64 = 3_600_000;

/// A token minted with the servers' secret at `issued_at`, valid for `ttl`.
fn minted(user: &str, room: &str, issued_at: u64, ttl: Duration) -> String {
    mint_with(KEY_ID, SECRET, user, room, issued_at, ttl)
}

/// `token` with one character of its signature (not the last, which carries padding
/// bits) replaced by another base64url character.
fn flip_signature_char(token: &str) -> String {
    let dot = token.find('.').unwrap();
    let at = dot + 10;
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

/// Authenticates with `token` and asserts `error` `code` followed by close 4001.
async fn assert_refused(server: &TestServer, token: &str, code: ErrorCode) {
    let (mut client, text) = peers::auth_raw(&server.ws_url(), token, Some("Mallory")).await;
    match ServerMessage::decode(text.as_bytes()).unwrap() {
        ServerMessage::Error { code: got, .. } => assert_eq!(got, code, "token {token:?}: {text}"),
        other => panic!(
            "token {token:?}: expected error {code}, got {}",
            peers::brief(&other)
        ),
    }
    expect_close(&mut client, "mallory", 4001).await;
}

async fn validate(server: &TestServer, token: &str, user: &str, room: &str) -> serde_json::Value {
    let body = json!({"token": token, "userId": user, "roomId": room});
    let resp = peers::post(server.http, "/api/auth/validate", &body, None).await;
    assert_eq!(resp.status, 200);
    peers::body(&resp)
}

#[tokio::test]
async fn bad_tokens_are_refused_with_4001_and_never_reach_the_room() {
    let server = TestServer::start(fast_config()).await;
    let mut alice = server.join("alice", "guarded").await.client;
    let mut bob = server.join("bob", "guarded").await.client;
    peers::expect_peer_joined(&mut alice, "alice", "bob").await;

    let good = server.token("mallory", "guarded").await;
    let now = now_ms();
    let stranger = authority_with("k9", SECRET);
    let cases = [
        (flip_signature_char(&good), ErrorCode::TokenBadSignature),
        (
            minted(
                "mallory",
                "guarded",
                now - 2 * HOUR_MS,
                Duration::from_secs(3600),
            ),
            ErrorCode::TokenExpired,
        ),
        (
            minted(
                "mallory",
                "guarded",
                now + HOUR_MS,
                Duration::from_secs(3600),
            ),
            ErrorCode::TokenNotYetValid,
        ),
        (
            stranger.issue("mallory", "guarded", None, now).unwrap().0,
            ErrorCode::TokenUnknownKey,
        ),
        ("garbage".to_owned(), ErrorCode::TokenMalformed),
        (format!("{good}.extra"), ErrorCode::TokenMalformed),
        (String::new(), ErrorCode::TokenMalformed),
    ];
    for (token, code) in &cases {
        assert_refused(&server, token, *code).await;
    }

    // The peers of the room saw none of it, and the room is unchanged.
    expect_silence(&mut alice, "alice").await;
    expect_silence(&mut bob, "bob").await;
    let resp = peers::get(server.http, "/api/rooms/guarded/peers").await;
    let ids: Vec<String> = peers::body(&resp)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["userId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["alice", "bob"]);

    let stats = peers::stats(server.http).await;
    assert_eq!(stats["operations"]["authFailures"], cases.len(), "{stats}");
    let metrics = String::from_utf8(peers::get(server.http, "/metrics").await.body).unwrap();
    assert!(
        metrics.contains("octate_auth_failures_total{code=\"token-expired\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("octate_auth_failures_total{code=\"token-malformed\"} 3"),
        "{metrics}"
    );

    // The genuine token still works.
    let joined = peers::join(&server.ws_url(), &good, "mallory", None).await;
    assert_eq!(joined.room.peer_count, 3);
    server.stop().await;
}

#[tokio::test]
async fn a_token_for_another_room_cannot_enter_this_one() {
    let server = TestServer::start(fast_config()).await;
    let mut alice = server.join("alice", "room-a").await.client;
    let joined = server.join("mallory", "room-b").await;
    assert_eq!(
        joined.room.room_id.as_str(),
        "room-b",
        "a token enters its own room only"
    );
    let mut mallory = joined.client;

    for text in [
        r#"{"type":"join-room","roomId":"room-a"}"#,
        r#"{"type":"create-room","roomId":"room-a","data":{"roomName":"Hijack"}}"#,
    ] {
        mallory.send_text(text).await.unwrap();
        expect_error(&mut mallory, "mallory", ErrorCode::Forbidden).await;
    }
    // Out of its room, still refused the other one.
    mallory.send_text(r#"{"type":"leave-room"}"#).await.unwrap();
    assert!(matches!(
        next(&mut mallory, "mallory").await,
        ServerMessage::RoomLeft { .. }
    ));
    mallory
        .send_text(r#"{"type":"join-room","roomId":"room-a"}"#)
        .await
        .unwrap();
    expect_error(&mut mallory, "mallory", ErrorCode::Forbidden).await;

    expect_silence(&mut alice, "alice").await;
    let resp = peers::get(server.http, "/api/rooms/room-a").await;
    let room = peers::body(&resp);
    assert_eq!(room["peerCount"], 1, "{room}");
    assert_eq!(room["roomName"], "room-a", "{room}");

    // The connection stays usable for its own room.
    mallory.send_text(r#"{"type":"join-room"}"#).await.unwrap();
    match next(&mut mallory, "mallory").await {
        ServerMessage::RoomJoined { room, .. } => assert_eq!(room.room_id.as_str(), "room-b"),
        other => panic!(
            "mallory: expected room-joined room-b, got {}",
            peers::brief(&other)
        ),
    }
    server.stop().await;
}

#[tokio::test]
async fn validate_reports_why_a_token_is_not_valid() {
    let server = TestServer::start(fast_config()).await;
    let token = server.token("alice", "room-1").await;

    let ok = validate(&server, &token, "alice", "room-1").await;
    assert_eq!(ok, json!({"valid": true}));

    let expired = minted(
        "alice",
        "room-1",
        now_ms() - 2 * HOUR_MS,
        Duration::from_secs(60),
    );
    let cases = [
        (expired.as_str(), "alice", "room-1", "token-expired"),
        (token.as_str(), "bob", "room-1", "token-wrong-user"),
        (token.as_str(), "alice", "room-2", "token-wrong-room"),
        ("garbage", "alice", "room-1", "token-malformed"),
    ];
    for (token, user, room, code) in cases {
        let body = validate(&server, token, user, room).await;
        assert_eq!(
            body,
            json!({"valid": false, "error": code}),
            "{user}@{room}"
        );
    }
    let forged = flip_signature_char(&token);
    let body = validate(&server, &forged, "alice", "room-1").await;
    assert_eq!(
        body,
        json!({"valid": false, "error": "token-bad-signature"})
    );

    let resp = peers::post(
        server.http,
        "/api/auth/validate",
        &json!({"token": token}),
        None,
    )
    .await;
    peers::assert_http_error(&resp, 400, "missing-field");
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_token_cannot_authenticate() {
    let server = TestServer::start(fast_config()).await;
    let token = server.token("alice", "room-1").await;
    let spare = server.token("alice", "room-1").await;
    let joined = peers::join(&server.ws_url(), &token, "alice", None).await;
    joined.client.close().await.unwrap();

    let resp = peers::post(
        server.http,
        "/api/auth/revoke",
        &json!({"token": token}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(peers::body(&resp), json!({"success": true}));

    assert_refused(&server, &token, ErrorCode::TokenRevoked).await;
    let body = validate(&server, &token, "alice", "room-1").await;
    assert_eq!(body, json!({"valid": false, "error": "token-revoked"}));
    let again = peers::post(
        server.http,
        "/api/auth/revoke",
        &json!({"token": token}),
        None,
    )
    .await;
    peers::assert_http_error(&again, 400, "token-revoked");
    let garbage = peers::post(
        server.http,
        "/api/auth/revoke",
        &json!({"token": "garbage"}),
        None,
    )
    .await;
    peers::assert_http_error(&garbage, 400, "token-malformed");

    // Only that token: another one of the same user still works.
    peers::join(&server.ws_url(), &spare, "alice", None).await;
    server.stop().await;
}

#[tokio::test]
async fn a_token_expires_on_the_servers_clock() {
    let authority = authority()
        .with_ttls(Duration::from_secs(1), Duration::from_secs(60))
        .unwrap();
    let server = TestServer::start_with(fast_config(), authority).await;
    let token = server.token("alice", "room-1").await;
    peers::join(&server.ws_url(), &token, "alice", None)
        .await
        .client
        .close()
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let body = validate(&server, &token, "alice", "room-1").await;
        if body["valid"] == false {
            assert_eq!(body["error"], "token-expired", "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the token did not expire within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_refused(&server, &token, ErrorCode::TokenExpired).await;
    server.stop().await;
}

#[tokio::test]
async fn tokens_survive_a_restart_only_with_the_same_secret() {
    let first = TestServer::start(fast_config()).await;
    let token = first.token("alice", "room-1").await;
    first.stop().await;

    let same_secret = TestServer::start(fast_config()).await;
    let joined = peers::join(&same_secret.ws_url(), &token, "alice", None).await;
    assert_eq!(joined.room.room_id.as_str(), "room-1");
    assert!(
        joined.room.peers[0].is_host,
        "the room is created anew on the new server"
    );
    same_secret.stop().await;

    let other_keys = authority_with(KEY_ID, b"another-secret-0123456789abcdef-xyz");
    let other_secret = TestServer::start_with(fast_config(), other_keys).await;
    assert_refused(&other_secret, &token, ErrorCode::TokenBadSignature).await;
    other_secret.stop().await;
}

/// Sends `text` as the first message and returns the client and the first answer.
async fn first_answer(server: &TestServer, text: &str) -> (octate_client::Client, ServerMessage) {
    let mut client = peers::connect(&server.ws_url()).await;
    client.send_text(text).await.unwrap();
    let answer = next(&mut client, "client").await;
    (client, answer)
}

#[tokio::test]
async fn revoking_a_token_ends_the_sessions_that_used_it() {
    let server = TestServer::start(fast_config()).await;
    let token = server.token("alice", "room-1").await;
    let mut alice = peers::join(&server.ws_url(), &token, "alice", None)
        .await
        .client;
    let mut bob = server.join("bob", "room-1").await.client;
    peers::expect_peer_joined(&mut alice, "alice", "bob").await;

    let resp = peers::post(
        server.http,
        "/api/auth/revoke",
        &json!({"token": token}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200);

    expect_error(&mut alice, "alice", ErrorCode::TokenRevoked).await;
    expect_close(&mut alice, "alice", 4001).await;
    // The room forgets alice at once; bob, whose token is another, stays.
    peers::expect_peer_left(
        &mut bob,
        "bob",
        "alice",
        octate_protocol::LeaveReason::Disconnected,
    )
    .await;
    peers::expect_host_changed(&mut bob, "bob", "bob").await;
    expect_silence(&mut bob, "bob").await;
    let resp = peers::get(server.http, "/api/rooms/room-1/peers").await;
    assert_eq!(peers::body(&resp).as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn auth_naming_another_room_or_user_than_its_token_is_refused() {
    let server = TestServer::start(fast_config()).await;
    let token = server.token("mallory", "doc-B").await;
    let mut alice = server.join("alice", "doc-A").await.client;

    for (envelope, names) in [
        (r#""roomId":"doc-A""#, "room doc-B, not doc-A"),
        (r#""userId":"alice""#, "user mallory, not alice"),
        (
            r#""userId":"mallory","roomId":"doc-A""#,
            "room doc-B, not doc-A",
        ),
    ] {
        let text = format!(r#"{{"type":"auth",{envelope},"data":{{"token":"{token}"}}}}"#);
        let (mut client, answer) = first_answer(&server, &text).await;
        match answer {
            ServerMessage::Error { code, message, .. } => {
                assert_eq!(code, ErrorCode::Forbidden, "{text}");
                assert!(message.contains(names), "{message:?} for {text}");
            }
            other => panic!("{text}: expected forbidden, got {}", peers::brief(&other)),
        }
        expect_close(&mut client, "mallory", 4001).await;
    }
    expect_silence(&mut alice, "alice").await;

    // Ids that agree with the token, or none at all, let the token decide.
    for envelope in [r#""userId":"mallory","roomId":"doc-B""#, r#""x":1"#] {
        let text = format!(r#"{{"type":"auth",{envelope},"data":{{"token":"{token}"}}}}"#);
        let (client, answer) = first_answer(&server, &text).await;
        match answer {
            ServerMessage::AuthOk { room, .. } => assert_eq!(room.room_id.as_str(), "doc-B"),
            other => panic!("{text}: expected auth-ok, got {}", peers::brief(&other)),
        }
        client.close().await.unwrap();
    }
    server.stop().await;
}

/// A server whose sessions end when their token expires.
async fn closing_server() -> TestServer {
    TestServer::start_tweaked(|config| {
        config.session_expiry = octate_transport::SessionExpiry::Close;
    })
    .await
}

fn refresh_text(token: &str) -> String {
    json!({"type": "refresh", "data": {"token": token}}).to_string()
}

async fn revoke(server: &TestServer, token: &str) {
    let resp = peers::post(
        server.http,
        "/api/auth/revoke",
        &json!({"token": token}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn with_session_expiry_close_a_session_ends_when_its_token_expires() {
    let server = closing_server().await;
    let short = minted("alice", "room-1", now_ms(), Duration::from_millis(1500));
    let mut alice = peers::join(&server.ws_url(), &short, "alice", None)
        .await
        .client;
    let long = minted("bob", "room-1", now_ms(), Duration::from_secs(60));
    let mut bob = peers::join(&server.ws_url(), &long, "bob", None)
        .await
        .client;
    peers::expect_peer_joined(&mut alice, "alice", "bob").await;

    expect_error(&mut alice, "alice", ErrorCode::TokenExpired).await;
    expect_close(&mut alice, "alice", 4001).await;
    peers::expect_peer_left(
        &mut bob,
        "bob",
        "alice",
        octate_protocol::LeaveReason::Disconnected,
    )
    .await;
    peers::expect_host_changed(&mut bob, "bob", "bob").await;
    expect_silence(&mut bob, "bob").await;
    server.stop().await;
}

#[tokio::test]
async fn by_default_a_session_outlives_its_token() {
    let server = TestServer::start(fast_config()).await;
    let short = minted("alice", "room-1", now_ms(), Duration::from_millis(300));
    let mut alice = peers::join(&server.ws_url(), &short, "alice", None)
        .await
        .client;
    tokio::time::sleep(Duration::from_millis(600)).await;
    alice.send_text(r#"{"type":"leave-room"}"#).await.unwrap();
    assert!(matches!(
        next(&mut alice, "alice").await,
        ServerMessage::RoomLeft { .. }
    ));
    server.stop().await;
}

#[tokio::test]
async fn refresh_moves_a_session_onto_a_new_token_of_the_same_user_and_room() {
    let server = closing_server().await;
    let first_expires = now_ms() + 2000;
    let first = minted(
        "alice",
        "room-1",
        first_expires - 2000,
        Duration::from_secs(2),
    );
    let mut alice = peers::join(&server.ws_url(), &first, "alice", None)
        .await
        .client;

    // Tokens for another room or user, or that do not verify, change nothing.
    let cases = [
        (
            minted("alice", "room-2", now_ms(), Duration::from_secs(60)),
            ErrorCode::Forbidden,
        ),
        (
            minted("bob", "room-1", now_ms(), Duration::from_secs(60)),
            ErrorCode::Forbidden,
        ),
        ("garbage".to_owned(), ErrorCode::TokenMalformed),
        (flip_signature_char(&first), ErrorCode::TokenBadSignature),
    ];
    for (token, code) in &cases {
        alice.send_text(refresh_text(token)).await.unwrap();
        expect_error(&mut alice, "alice", *code).await;
    }

    let issued = now_ms();
    let second = minted("alice", "room-1", issued, Duration::from_secs(60));
    alice.send_text(refresh_text(&second)).await.unwrap();
    match next(&mut alice, "alice").await {
        ServerMessage::TokenRefreshed { expires_at } => assert_eq!(expires_at, issued + 60_000),
        other => panic!(
            "alice: expected token-refreshed, got {}",
            peers::brief(&other)
        ),
    }
    // The first token's expiry and revocation no longer concern the session.
    revoke(&server, &first).await;
    let past_first = (first_expires + 300).saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(past_first)).await;
    alice.send_text(r#"{"type":"leave-room"}"#).await.unwrap();
    assert!(matches!(
        next(&mut alice, "alice").await,
        ServerMessage::RoomLeft { .. }
    ));
    // Revoking the token it runs on now ends it.
    revoke(&server, &second).await;
    expect_error(&mut alice, "alice", ErrorCode::TokenRevoked).await;
    expect_close(&mut alice, "alice", 4001).await;
    server.stop().await;
}
