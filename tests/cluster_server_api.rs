//! The server API on a cluster: real `octate-server` processes sharing one real Redis
//! (started by the test), asked over HTTP on any node: a kick of a peer that another
//! node holds or that is suspended, `server-message`s to peers on every node, and the
//! room list read from the shared store. Every wait is bounded.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use octate_client::Client;
use octate_protocol::{ErrorCode, LeaveReason, ServerMessage};
use octate_test::cluster::{
    ClusterNode as Node, NODE_TTL as TTL, expect_resume_failed, join_with_ticket, resume_on,
};
use octate_test::peers::{
    self, assert_http_error, body, expect_close, expect_error, expect_host_changed,
    expect_peer_joined, expect_peer_left, expect_silence, get, next, post, request,
};
use octate_test::redis::Redis;
use serde_json::{Value, json};

// ---- kick ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_on_one_node_closes_the_peer_on_another_and_the_room_is_told_once() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut alice = a.join("alice", "doc").await;
    let bob_token = b.token("bob", "doc").await;
    let mut bob = peers::join(&b.ws_url(), &bob_token, "bob", None).await;
    let mut carol = a.join("carol", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    expect_peer_joined(&mut alice.client, "alice", "carol").await;
    expect_peer_joined(&mut bob.client, "bob", "carol").await;
    // Bob's session has its ticket (and so its token) in the store.
    wait_for_field(&redis, "doc", "bob", "t").await;

    let resp = post(
        a.http,
        "/api/rooms/doc/peers/bob/kick",
        &json!({"reason": "spam", "revokeToken": true}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(body(&resp), json!({"success": true, "tokenRevoked": true}));
    expect_error(&mut bob.client, "bob", ErrorCode::Kicked).await;
    expect_close(&mut bob.client, "bob", 4005).await;
    for (client, who) in [(&mut alice.client, "alice"), (&mut carol.client, "carol")] {
        expect_peer_left(client, who, "bob", LeaveReason::Kicked).await;
        expect_silence(client, who).await;
    }
    // The revocation reaches node b: bob's token opens nothing there any more.
    expect_token_revoked_on(&b, &bob_token).await;
    // The same peer again, from either node; a room that does not exist.
    for node in [&a, &b] {
        assert_http_error(
            &post(node.http, "/api/rooms/doc/peers/bob/kick", &json!({}), None).await,
            404,
            "peer-not-found",
        );
        assert_http_error(
            &post(
                node.http,
                "/api/rooms/nope/peers/bob/kick",
                &json!({}),
                None,
            )
            .await,
            404,
            "room-not-found",
        );
    }
    // The host, on node a, kicked from node b: the host moves.
    let resp = post(b.http, "/api/rooms/doc/peers/alice/kick", &json!({}), None).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(body(&resp), json!({"success": true, "tokenRevoked": false}));
    expect_error(&mut alice.client, "alice", ErrorCode::Kicked).await;
    expect_close(&mut alice.client, "alice", 4005).await;
    expect_peer_left(&mut carol.client, "carol", "alice", LeaveReason::Kicked).await;
    expect_host_changed(&mut carol.client, "carol", "carol").await;
    expect_silence(&mut carol.client, "carol").await;
    let peers = body(&get(b.http, "/api/rooms/doc/peers").await);
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");
}

/// With resume off no ticket ever records a member's token: the join itself does, so a
/// kick from another node can still revoke it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resume_a_kick_from_another_node_still_revokes_the_token() {
    let redis = Redis::start();
    let no_resume = [("OCTATE_RESUME_GRACE_MS", "0")];
    let a = Node::start_with(&redis, "a", &no_resume);
    let b = Node::start_with(&redis, "b", &no_resume);
    let mut alice = a.join("alice", "doc").await;
    let bob_token = b.token("bob", "doc").await;
    let mut bob = peers::join(&b.ws_url(), &bob_token, "bob", None).await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;

    let resp = post(
        a.http,
        "/api/rooms/doc/peers/bob/kick",
        &json!({"revokeToken": true}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(body(&resp), json!({"success": true, "tokenRevoked": true}));
    expect_error(&mut bob.client, "bob", ErrorCode::Kicked).await;
    expect_close(&mut bob.client, "bob", 4005).await;
    expect_peer_left(&mut alice.client, "alice", "bob", LeaveReason::Kicked).await;
    expect_token_revoked_on(&b, &bob_token).await;
}

/// A session that sent `refresh` runs on its new token on every node: a kick from another
/// node revokes that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_from_another_node_revokes_the_token_the_session_refreshed_to() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut alice = a.join("alice", "doc").await;
    let first = b.token("bob", "doc").await;
    let mut bob = peers::join(&b.ws_url(), &first, "bob", None).await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    wait_for_field(&redis, "doc", "bob", "t").await;
    let joined_with = member_field(&redis, "doc", "bob", "t");
    assert!(joined_with.is_some());
    let second = b.token("bob", "doc").await;
    let refresh = json!({"type": "refresh", "data": {"token": second}});
    bob.client.send_text(refresh.to_string()).await.unwrap();
    match next(&mut bob.client, "bob").await {
        ServerMessage::TokenRefreshed { .. } => {}
        other => panic!(
            "bob: expected token-refreshed, got {}",
            peers::brief(&other)
        ),
    }
    // The store learns the new token shortly after the answer.
    let deadline = Instant::now() + peers::WAIT;
    while member_field(&redis, "doc", "bob", "t") == joined_with {
        assert!(
            Instant::now() < deadline,
            "the store never learned the new token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = post(
        a.http,
        "/api/rooms/doc/peers/bob/kick",
        &json!({"revokeToken": true}),
        None,
    )
    .await;
    assert_eq!(body(&resp), json!({"success": true, "tokenRevoked": true}));
    expect_error(&mut bob.client, "bob", ErrorCode::Kicked).await;
    expect_close(&mut bob.client, "bob", 4005).await;
    // Node a revoked it; node b learns it over the control channel, shortly after.
    let verdict = |token: String| {
        let http = b.http;
        async move {
            let ask = json!({"token": token, "userId": "bob", "roomId": "doc"});
            body(&post(http, "/api/auth/validate", &ask, None).await)
        }
    };
    let revoked = json!({"valid": false, "error": "token-revoked"});
    let deadline = Instant::now() + peers::WAIT;
    while verdict(second.clone()).await != revoked {
        assert!(
            Instant::now() < deadline,
            "node b never refused the new token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The token the session started with was not the one revoked.
    assert_eq!(verdict(first.clone()).await, json!({"valid": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_suspended_peer_cannot_resume_on_any_node() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let (alice, ticket) = join_with_ticket(&a, "alice", "doc").await;
    let mut bob = b.join("bob", "doc").await;
    assert_eq!(bob.others, ["alice"]);
    // The connection is lost without a close frame: alice is suspended.
    alice.client.abort();
    wait_for_field(&redis, "doc", "alice", "x").await;

    let resp = post(b.http, "/api/rooms/doc/peers/alice/kick", &json!({}), None).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    expect_peer_left(&mut bob.client, "bob", "alice", LeaveReason::Kicked).await;
    expect_host_changed(&mut bob.client, "bob", "bob").await;
    expect_silence(&mut bob.client, "bob").await;
    for node in [&a, &b] {
        let (mut again, answer) = resume_on(node, &ticket).await;
        expect_resume_failed(&mut again, &answer, "kicked alice").await;
    }
}

// ---- server messages -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_messages_from_any_node_reach_the_peers_on_every_node() {
    let redis = Redis::start();
    let nodes = [
        Node::start(&redis, "a"),
        Node::start(&redis, "b"),
        Node::start(&redis, "c"),
    ];
    let mut alice = nodes[0].join("alice", "doc").await;
    let mut bob = nodes[1].join("bob", "doc").await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;

    // Node c holds no peer of the room.
    let resp = post(
        nodes[2].http,
        "/api/rooms/doc/broadcast",
        &json!({"data": {"n": 0}}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(body(&resp), json!({"delivered": 2}));
    expect_server_message(&mut alice.client, "alice", &json!({"n": 0})).await;
    expect_server_message(&mut bob.client, "bob", &json!({"n": 0})).await;

    // Many from node a: each exactly once and in order, on node a and on node b.
    for n in 1..=50 {
        let resp = post(
            nodes[0].http,
            "/api/rooms/doc/broadcast",
            &json!({"data": {"n": n}}),
            None,
        )
        .await;
        assert_eq!(resp.status, 200);
    }
    for n in 1..=50 {
        expect_server_message(&mut alice.client, "alice", &json!({"n": n})).await;
        expect_server_message(&mut bob.client, "bob", &json!({"n": n})).await;
    }

    // One peer, on another node: only that peer.
    let resp = post(
        nodes[0].http,
        "/api/rooms/doc/peers/bob/message",
        &json!({"data": {"to": "bob"}}),
        None,
    )
    .await;
    assert_eq!(body(&resp), json!({"delivered": 1}));
    expect_server_message(&mut bob.client, "bob", &json!({"to": "bob"})).await;
    expect_silence(&mut alice.client, "alice").await;

    // Nothing to send to, from any node.
    for node in &nodes {
        assert_http_error(
            &post(
                node.http,
                "/api/rooms/nope/broadcast",
                &json!({"data": {}}),
                None,
            )
            .await,
            404,
            "room-not-found",
        );
        assert_http_error(
            &post(
                node.http,
                "/api/rooms/doc/peers/nobody/message",
                &json!({"data": {}}),
                None,
            )
            .await,
            404,
            "peer-not-found",
        );
    }
    expect_silence(&mut bob.client, "bob").await;
}

// ---- room list -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_listed_a_page_at_a_time_from_any_node_and_closed_rooms_leave_the_list() {
    let mut redis = Redis::start();
    let grace = [("OCTATE_EMPTY_ROOM_GRACE_MS", "1000")];
    let (a, b) = (
        Node::start_with(&redis, "a", &grace),
        Node::start_with(&redis, "b", &grace),
    );
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(a.join(&format!("ua{i}"), &format!("room-{i:02}")).await);
        clients.push(
            b.join(&format!("ub{i}"), &format!("room-{:02}", i + 5))
                .await,
        );
    }
    // One room over both nodes.
    clients.push(b.join("shared", "room-03").await);
    let created = post(
        a.http,
        "/api/rooms",
        &json!({"roomId": "room-99", "roomName": "Later", "hostId": "h", "hostName": "H"}),
        None,
    )
    .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );

    let mut expected: Vec<String> = (0..10).map(|i| format!("room-{i:02}")).collect();
    expected.push("room-99".to_owned());
    for node in [&a, &b] {
        let rooms = all_rooms(node, 3, "").await;
        let ids: Vec<&str> = rooms
            .iter()
            .map(|r| r["roomId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, expected, "every room, in order, from node {}", node.id);
        let shared = rooms.iter().find(|r| r["roomId"] == "room-03").unwrap();
        assert_eq!(shared["peerCount"], 2, "{shared}");
        assert_eq!(shared["peers"].as_array().unwrap().len(), 2);
        assert_eq!(shared["state"], "ACTIVE");
        let empty = rooms.iter().find(|r| r["roomId"] == "room-99").unwrap();
        assert_eq!(empty["peerCount"], 0, "{empty}");
        assert_eq!(empty["roomName"], "Later");
    }
    assert_eq!(all_rooms(&a, 50, "&state=ACTIVE").await.len(), 11);
    assert!(all_rooms(&b, 50, "&state=IDLE").await.is_empty());
    let resp = admin_get(&a, "/api/rooms?limit=0").await;
    assert_http_error(&resp, 400, "invalid-field");

    // Closed by DELETE, by the last leave, by a kick of the last peer, and an HTTP room
    // whose grace ran out: each leaves the list.
    let resp = request(b.http, "DELETE", "/api/rooms/room-01", &[], None).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let last = clients.remove(1);
    assert_eq!(
        last.room.room_id.as_str(),
        "room-05",
        "ub0 is alone in room-05"
    );
    last.client.close().await.unwrap();
    let resp = post(
        a.http,
        "/api/rooms/room-07/peers/ub2/kick",
        &json!({}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let gone = ["room-01", "room-05", "room-07", "room-99"];
    let deadline = Instant::now() + peers::WAIT;
    loop {
        let ids = room_ids(&all_rooms(&b, 4, "").await);
        if gone.iter().all(|g| !ids.iter().any(|id| id == g)) {
            let left: Vec<&String> = expected
                .iter()
                .filter(|e| !gone.contains(&e.as_str()))
                .collect();
            assert_eq!(ids.iter().collect::<Vec<_>>(), left);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed rooms still listed: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Redis restarted empty: the nodes register their peers again, rooms included.
    let before = room_ids(&all_rooms(&a, 50, "").await);
    redis.restart();
    let deadline = Instant::now() + 10 * TTL;
    loop {
        if let Some(ids) = try_room_ids(&a).await
            && ids == before
        {
            break;
        }
        assert!(Instant::now() < deadline, "the room list did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- helpers (copied from tests/cluster.rs where they match) ---------------------------

/// Every room in pages of `limit` from `node`, following `nextCursor`.
async fn all_rooms(node: &Node, limit: usize, filter: &str) -> Vec<Value> {
    let mut rooms = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let path = format!("/api/rooms?limit={limit}{filter}{cursor}");
        let resp = admin_get(node, &path).await;
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        let page = body(&resp);
        let got = page["rooms"].as_array().unwrap();
        assert!(got.len() <= limit, "{page}");
        rooms.extend(got.iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return rooms,
        }
    }
    panic!("the room list never ended");
}

fn room_ids(rooms: &[Value]) -> Vec<String> {
    rooms
        .iter()
        .map(|r| r["roomId"].as_str().unwrap().to_owned())
        .collect()
}

/// The room ids of one page of 50, or `None` while the cluster answers 503.
async fn try_room_ids(node: &Node) -> Option<Vec<String>> {
    let resp = admin_get(node, "/api/rooms?limit=50").await;
    (resp.status == 200).then(|| room_ids(body(&resp)["rooms"].as_array().unwrap()))
}

async fn admin_get(node: &Node, path: &str) -> octate_client::HttpResponse {
    request(node.http, "GET", path, &[], None).await
}

/// Asserts the next message is `server-message` for `doc` carrying `data`.
async fn expect_server_message(client: &mut Client, who: &str, data: &Value) {
    match next(client, who).await {
        ServerMessage::ServerMessage { room_id, data: got } => {
            assert_eq!(room_id.as_str(), "doc");
            let got: Value = serde_json::from_str(got.get()).unwrap();
            assert_eq!(&got, data, "{who}");
        }
        other => panic!(
            "{who}: expected server-message, got {}",
            peers::brief(&other)
        ),
    }
}

/// Whether the store's record of a member has `field` (`t`: the token its session runs
/// on, written with its first ticket; `x`: suspended until).
fn member_has(redis: &Redis, room: &str, user: &str, field: &str) -> bool {
    const SCRIPT: &str = "local m = redis.call('HGET', KEYS[1], ARGV[1]) \
        if not m then return 0 end \
        if cjson.decode(m)[ARGV[2]] then return 1 end return 0";
    let key = format!("oct:room:{{{room}}}:m");
    redis
        .try_command(&["EVAL", SCRIPT, "1", &key, user, field])
        .as_deref()
        == Some(":1")
}

/// Waits, bounded, until `node` refuses `token` as revoked (a revocation reaches the other
/// nodes over the control channel).
async fn expect_token_revoked_on(node: &Node, token: &str) {
    let deadline = Instant::now() + peers::WAIT;
    loop {
        let (_client, text) = peers::auth_raw(&node.ws_url(), token, None).await;
        if text.contains("token-revoked") {
            return;
        }
        assert!(Instant::now() < deadline, "the token still works: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A field of the store's record of a member, when it has it.
fn member_field(redis: &Redis, room: &str, user: &str, field: &str) -> Option<String> {
    // A status reply (`+value`) keeps the value on the answer's first line.
    const SCRIPT: &str = "local m = redis.call('HGET', KEYS[1], ARGV[1]) \
        if not m then return false end \
        local v = cjson.decode(m)[ARGV[2]] \
        if v == nil then return false end return { ok = tostring(v) }";
    let key = format!("oct:room:{{{room}}}:m");
    let line = redis.try_command(&["EVAL", SCRIPT, "1", &key, user, field])?;
    line.strip_prefix('+').map(str::to_owned)
}

/// Waits until the store's record of a member has `field`.
async fn wait_for_field(redis: &Redis, room: &str, user: &str, field: &str) {
    let deadline = Instant::now() + peers::WAIT;
    while !member_has(redis, room, user, field) {
        assert!(Instant::now() < deadline, "{user} never had {field}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
