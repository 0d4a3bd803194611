//! The audit trail of a real `octate-server` run: every security event, driven over HTTP
//! and WebSocket, lands in `OCTATE_AUDIT_LOG` as one JSON line with its ECS fields; no
//! line carries a token, a resume token or an admin key; the file follows logrotate
//! (renamed, SIGHUP, a new file at the same path); and the records are in the normal
//! log too, as JSON with `OCTATE_LOG_FORMAT=json`.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use octate_test::binary::{RealServer, server_binary, server_command};
use octate_test::peers::{self, WAIT, body, post, request};
use octate_test::ws::{self, OP_PING, OP_TEXT, RawWs, Seen, Upgrade};
use serde_json::{Value, json};

const SECRET: &str = "audit-test-secret-0123456789abcdef";
const ADMIN_KEY: &str = "audit-admin-key-0123456789";
/// A guess at the admin key: no more fit for a log than the key itself.
const WRONG_KEY: &str = "not-the-admin-key-9876543210";

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "octate-audit-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with an audit file and an admin key, plus `env`.
async fn start(audit: &Path, env: &[(&str, &str)]) -> RealServer {
    let mut cmd = server_command();
    cmd.env("OCTATE_AUDIT_LOG", audit)
        .env("OCTATE_ADMIN_KEY", ADMIN_KEY);
    for (name, value) in env {
        cmd.env(name, value);
    }
    tokio::task::spawn_blocking(move || RealServer::start_command(cmd, SECRET))
        .await
        .unwrap()
}

/// Every line of the audit file, each of which must be a JSON object of the audit target.
fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert_eq!(record["target"], "octate::audit", "{line}");
            record
        })
        .collect()
}

/// Waits (bounded) for a record of `action` whose fields include every one of `fields`.
async fn expect_record(path: &Path, action: &str, fields: &[(&str, Value)]) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = records(path);
        let found = all.iter().find(|r| {
            r["event.action"] == action && fields.iter().all(|(name, value)| r[*name] == *value)
        });
        if let Some(record) = found {
            return record.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {action} record with {fields:?} in {WAIT:?}; the audit file holds:\n{}",
            all.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A token for `user` in `room`, and its id, issued with the admin key.
async fn issue(server: &RealServer, user: &str, room: &str) -> (String, String) {
    let resp = post(
        server.http,
        "/api/auth/token",
        &json!({"userId": user, "roomId": room}),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(resp.status, 200);
    let json = body(&resp);
    (
        json["token"].as_str().unwrap().to_owned(),
        json["tokenId"].as_str().unwrap().to_owned(),
    )
}

/// A raw WebSocket to the signaling port from the loopback address `source`.
async fn ws_from(server: &RealServer, source: &str) -> RawWs {
    let tcp = RawWs::tcp_from(ip(source), server.signaling).await;
    match RawWs::upgrade(tcp, server.signaling).await {
        Upgrade::Accepted(ws) => ws,
        Upgrade::Refused { status, .. } => panic!("upgrade from {source} refused: {status}"),
    }
}

/// The text of the next message, which must be one.
async fn next_json(ws: &mut RawWs, who: &str) -> Value {
    match ws.next(who).await {
        Seen::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("{who}: expected a message, got {other:?}"),
    }
}

/// The records every action shares: an outcome, a message, and no secret.
fn check_every_record(path: &Path, secrets: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "the audit file holds a secret ({secret}):\n{text}"
        );
    }
    for record in records(path) {
        assert!(
            record["event.outcome"] == "success" || record["event.outcome"] == "failure",
            "{record}"
        );
        assert!(record["event.action"].is_string(), "{record}");
        assert!(record["timestamp"].is_string(), "{record}");
    }
}

#[tokio::test]
async fn every_security_event_is_one_record_with_its_fields() {
    let dir = TempDir::new("events");
    let audit = dir.join("audit.log");
    let server = start(
        &audit,
        &[
            ("OCTATE_MESSAGES_PER_SECOND", "1"),
            ("OCTATE_MESSAGE_BURST", "5"),
            ("OCTATE_RATE_LIMIT_STRIKES", "3"),
            ("OCTATE_RESUME_GRACE_MS", "10000"),
        ],
    )
    .await;
    let http = server.http;

    // Admin routes without the key, then with a wrong one.
    let resp = post(
        http,
        "/api/auth/token",
        &json!({"userId": "mallory", "roomId": "room-a"}),
        None,
    )
    .await;
    assert_eq!(resp.status, 401);
    let record = expect_record(
        &audit,
        "admin-auth-failed",
        &[
            ("event.outcome", json!("failure")),
            ("event.reason", json!("missing-admin-key")),
            ("http.request.method", json!("POST")),
            ("url.path", json!("/api/auth/token")),
        ],
    )
    .await;
    let source: IpAddr = record["source.ip"].as_str().unwrap().parse().unwrap();
    assert!(source.is_loopback(), "{record}");
    assert!(record.get("user.id").is_none(), "no identity: {record}");
    let bearer = format!("Bearer {WRONG_KEY}");
    let resp = request(
        http,
        "DELETE",
        "/api/rooms/room-x",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(resp.status, 403);
    expect_record(
        &audit,
        "admin-auth-failed",
        &[
            ("event.reason", json!("wrong-admin-key")),
            ("http.request.method", json!("DELETE")),
            ("url.path", json!("/api/rooms/room-x")),
        ],
    )
    .await;

    // Token issued.
    let (token_a, id_a) = issue(&server, "alice", "room-a").await;
    expect_record(
        &audit,
        "token-issued",
        &[
            ("event.outcome", json!("success")),
            ("user.id", json!("alice")),
            ("octate.room_id", json!("room-a")),
            ("octate.token_id", json!(id_a)),
        ],
    )
    .await;

    // A room created and deleted over HTTP.
    let created =
        json!({"roomId": "room-h", "roomName": "H", "hostId": "hank", "hostName": "Hank"});
    let resp = post(http, "/api/rooms", &created, Some(ADMIN_KEY)).await;
    assert_eq!(resp.status, 201);
    expect_record(
        &audit,
        "room-created",
        &[
            ("event.outcome", json!("success")),
            ("octate.room_id", json!("room-h")),
            ("user.id", json!("hank")),
        ],
    )
    .await;
    let admin = format!("Bearer {ADMIN_KEY}");
    let resp = request(
        http,
        "DELETE",
        "/api/rooms/room-h",
        &[("Authorization", &admin)],
        None,
    )
    .await;
    assert_eq!(resp.status, 200);
    expect_record(
        &audit,
        "room-deleted",
        &[
            ("event.outcome", json!("success")),
            ("octate.room_id", json!("room-h")),
        ],
    )
    .await;

    // Tokens refused over HTTP: validation, TURN credentials.
    let resp = post(
        http,
        "/api/auth/validate",
        &json!({"token": token_a, "userId": "alice", "roomId": "room-b"}),
        None,
    )
    .await;
    assert_eq!(body(&resp)["valid"], false);
    expect_record(
        &audit,
        "token-rejected",
        &[
            ("event.outcome", json!("failure")),
            ("event.reason", json!("token-wrong-room")),
            ("octate.endpoint", json!("/api/auth/validate")),
        ],
    )
    .await;
    let resp = request(
        http,
        "POST",
        "/api/turn/credentials",
        &[("Authorization", "Bearer not-a-token")],
        None,
    )
    .await;
    assert_eq!(resp.status, 401);
    expect_record(
        &audit,
        "token-rejected",
        &[
            ("event.reason", json!("token-malformed")),
            ("octate.endpoint", json!("/api/turn/credentials")),
        ],
    )
    .await;

    // A token refused on a WebSocket, from a source address of our choosing.
    let mut stranger = ws_from(&server, "127.0.0.5").await;
    stranger.send_text(&ws::auth_text("not-a-token")).await;
    stranger.expect_error("stranger", "token-malformed").await;
    stranger.expect_close("stranger", 4001).await;
    let record = expect_record(
        &audit,
        "token-rejected",
        &[
            ("event.reason", json!("token-malformed")),
            ("octate.endpoint", json!("ws-auth")),
            ("source.ip", json!("127.0.0.5")),
        ],
    )
    .await;
    assert!(record["octate.conn_id"].is_string(), "{record}");

    // The same user again from elsewhere replaces the first connection (4004).
    let mut alice = ws_from(&server, "127.0.0.6").await;
    alice.auth(&token_a, "alice").await;
    let (token_a2, id_a2) = issue(&server, "alice", "room-a").await;
    let mut alice2 = ws_from(&server, "127.0.0.7").await;
    alice2.auth(&token_a2, "alice2").await;
    let (_, code) = alice.end("alice").await;
    assert_eq!(code, Some(4004));
    expect_record(
        &audit,
        "peer-replaced",
        &[
            ("user.id", json!("alice")),
            ("octate.room_id", json!("room-a")),
            ("source.ip", json!("127.0.0.6")),
        ],
    )
    .await;

    // A refresh with a token for someone else is refused.
    let (token_c, _) = issue(&server, "carol", "room-a").await;
    let refresh = json!({"type": "refresh", "data": {"token": token_c}}).to_string();
    alice2.send_text(&refresh).await;
    loop {
        let msg = next_json(&mut alice2, "alice2").await;
        if msg["type"] == "error" {
            assert_eq!(msg["data"]["code"], "forbidden", "{msg}");
            break;
        }
    }
    expect_record(
        &audit,
        "token-rejected",
        &[
            ("event.reason", json!("forbidden")),
            ("octate.endpoint", json!("ws-refresh")),
            ("source.ip", json!("127.0.0.7")),
        ],
    )
    .await;

    // A lost connection resumed from another address; a wrong resume token first.
    let (token_b, id_b) = issue(&server, "bob", "room-a").await;
    let mut bob = ws_from(&server, "127.0.0.8").await;
    bob.send_text(&ws::auth_text(&token_b)).await;
    let welcome = next_json(&mut bob, "bob").await;
    assert_eq!(welcome["type"], "auth-ok", "{welcome}");
    let session_id = welcome["data"]["resume"]["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let resume_token = welcome["data"]["resume"]["resumeToken"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.reset();
    let mut guesser = ws_from(&server, "127.0.0.9").await;
    let guess =
        json!({"type": "resume", "data": {"sessionId": session_id, "resumeToken": "guess"}});
    guesser.send_text(&guess.to_string()).await;
    let (_, code) = guesser.end("guesser").await;
    assert_eq!(code, Some(4001));
    expect_record(
        &audit,
        "token-rejected",
        &[
            ("event.reason", json!("wrong-resume-token")),
            ("octate.endpoint", json!("ws-resume")),
            ("source.ip", json!("127.0.0.9")),
        ],
    )
    .await;
    let mut bob_again = ws_from(&server, "127.0.0.10").await;
    let resume =
        json!({"type": "resume", "data": {"sessionId": session_id, "resumeToken": resume_token}});
    bob_again.send_text(&resume.to_string()).await;
    let resumed = next_json(&mut bob_again, "bob again").await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    expect_record(
        &audit,
        "session-resumed",
        &[
            ("event.outcome", json!("success")),
            ("user.id", json!("bob")),
            ("octate.room_id", json!("room-a")),
            ("octate.token_id", json!(id_b)),
            ("source.ip", json!("127.0.0.10")),
        ],
    )
    .await;

    // Revoking a token.
    let resp = post(
        http,
        "/api/auth/revoke",
        &json!({"token": token_a2}),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(resp.status, 200);
    expect_record(
        &audit,
        "token-revoked",
        &[
            ("event.outcome", json!("success")),
            ("user.id", json!("alice")),
            ("octate.room_id", json!("room-a")),
            ("octate.token_id", json!(id_a2)),
        ],
    )
    .await;

    // A flood closed by the rate limit (4029).
    let mut carol = ws_from(&server, "127.0.0.11").await;
    carol.auth(&token_c, "carol").await;
    carol
        .send(&ws::frame(true, OP_PING, b"").repeat(20))
        .await
        .unwrap();
    let (_, code) = carol.end("carol").await;
    assert_eq!(code, Some(4029));
    expect_record(
        &audit,
        "connection-rate-limited",
        &[
            ("event.outcome", json!("failure")),
            ("user.id", json!("carol")),
            ("octate.room_id", json!("room-a")),
            ("source.ip", json!("127.0.0.11")),
        ],
    )
    .await;

    check_every_record(
        &audit,
        &[
            ADMIN_KEY,
            WRONG_KEY,
            &token_a,
            &token_a2,
            &token_b,
            &token_c,
            &resume_token,
        ],
    );
}

#[tokio::test]
async fn connections_refused_by_a_limit_are_audited() {
    let dir = TempDir::new("limits");
    let audit = dir.join("audit.log");
    let server = start(
        &audit,
        &[
            ("OCTATE_MAX_CONNECTIONS", "3"),
            ("OCTATE_MAX_CONNECTIONS_PER_IP", "2"),
        ],
    )
    .await;
    let _first = ws_from(&server, "127.0.0.5").await;
    let _second = ws_from(&server, "127.0.0.5").await;
    let tcp = RawWs::tcp_from(ip("127.0.0.5"), server.signaling).await;
    let Upgrade::Refused { status: 429, .. } = RawWs::upgrade(tcp, server.signaling).await else {
        panic!("a third connection from one address is refused with 429");
    };
    expect_record(
        &audit,
        "connection-refused",
        &[
            ("event.outcome", json!("failure")),
            ("event.reason", json!("max-connections-per-ip")),
            ("source.ip", json!("127.0.0.5")),
        ],
    )
    .await;
    let _third = ws_from(&server, "127.0.0.6").await;
    let tcp = RawWs::tcp_from(ip("127.0.0.7"), server.signaling).await;
    let Upgrade::Refused { status: 503, .. } = RawWs::upgrade(tcp, server.signaling).await else {
        panic!("a connection over the server's limit is refused with 503");
    };
    expect_record(
        &audit,
        "connection-refused",
        &[
            ("event.reason", json!("max-connections")),
            ("source.ip", json!("127.0.0.7")),
        ],
    )
    .await;
    check_every_record(&audit, &[ADMIN_KEY]);
}

/// Joins `user` to `room` on a raw WebSocket and leaves it silent.
async fn silent_peer(server: &RealServer, user: &str, room: &str) -> RawWs {
    let (token, _) = issue(server, user, room).await;
    let mut ws = ws_from(server, "127.0.0.5").await;
    ws.auth(&token, user).await;
    ws
}

#[tokio::test]
async fn rooms_the_server_closes_by_itself_are_audited() {
    let dir = TempDir::new("rooms");
    let audit = dir.join("audit.log");
    let inactive = start(
        &audit,
        &[
            ("OCTATE_CLEANUP_INTERVAL_MS", "100"),
            ("OCTATE_ROOM_INACTIVE_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    let mut quiet = silent_peer(&inactive, "quinn", "room-quiet").await;
    let closed = next_json(&mut quiet, "quinn").await;
    assert_eq!(closed["type"], "room-closed", "{closed}");
    expect_record(
        &audit,
        "room-closed",
        &[
            ("event.outcome", json!("success")),
            ("event.reason", json!("inactive")),
            ("octate.room_id", json!("room-quiet")),
        ],
    )
    .await;
    drop(inactive);

    // A client holding 2 MiB in a frame still arriving puts the heap over a 1 MiB
    // critical level: idle rooms are closed at the next check.
    let audit = dir.join("memory.log");
    let pressed = start(
        &audit,
        &[
            ("OCTATE_MEMORY_WARNING_MB", "0"),
            ("OCTATE_MEMORY_CRITICAL_MB", "1"),
            ("OCTATE_MEMORY_CHECK_INTERVAL_MS", "100"),
            ("OCTATE_ROOM_IDLE_AFTER_MS", "100"),
            ("OCTATE_MAX_MESSAGE_BYTES", "4194304"),
            ("OCTATE_OUTBOUND_QUEUE_BYTES", "4194304"),
        ],
    )
    .await;
    let mut idle = silent_peer(&pressed, "ida", "room-idle").await;
    let mut hog = ws_from(&pressed, "127.0.0.6").await;
    let held = vec![b' '; 2 << 20];
    hog.send(&ws::raw_frame(0x80 | OP_TEXT, 4 << 20, &held))
        .await
        .unwrap();
    let closed = next_json(&mut idle, "ida").await;
    assert_eq!(closed["type"], "room-closed", "{closed}");
    expect_record(
        &audit,
        "room-closed",
        &[
            ("event.reason", json!("memory-pressure")),
            ("octate.room_id", json!("room-idle")),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_audit_file_follows_logrotate() {
    let dir = TempDir::new("rotate");
    let audit = dir.join("audit.log");
    let rotated = dir.join("audit.log.1");
    let mut server = start(&audit, &[]).await;
    let no_key = json!({"userId": "u", "roomId": "r"});
    let resp = post(server.http, "/api/auth/token", &no_key, None).await;
    assert_eq!(resp.status, 401);
    expect_record(
        &audit,
        "admin-auth-failed",
        &[("url.path", json!("/api/auth/token"))],
    )
    .await;

    std::fs::rename(&audit, &rotated).unwrap();
    server.signal("-HUP");
    let deadline = Instant::now() + WAIT;
    while !audit.exists() {
        assert!(
            Instant::now() < deadline,
            "no new audit file at the original path {WAIT:?} after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP does not stop the server"
    );
    let room = json!({"roomId": "r", "roomName": "R", "hostId": "h", "hostName": "H"});
    let resp = post(server.http, "/api/rooms", &room, None).await;
    assert_eq!(resp.status, 401);
    expect_record(
        &audit,
        "admin-auth-failed",
        &[("url.path", json!("/api/rooms"))],
    )
    .await;

    let old: Vec<Value> = records(&rotated);
    let new: Vec<Value> = records(&audit);
    assert_eq!(
        old.len(),
        1,
        "the rotated file keeps what came before: {old:?}"
    );
    assert_eq!(old[0]["url.path"], "/api/auth/token");
    assert_eq!(new.len(), 1, "the new file has what came after: {new:?}");
    assert!(server.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn audit_records_are_in_the_normal_log_as_json() {
    let dir = TempDir::new("stderr");
    let log = dir.join("stderr.log");
    // The shell hands the server's stderr to a file, then becomes the server.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"exec "$0" 2>"$1""#)
        .arg(server_binary())
        .arg(&log);
    for (name, _) in std::env::vars() {
        if name.starts_with("OCTATE_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(std::env::temp_dir())
        .env("OCTATE_ADMIN_KEY", ADMIN_KEY)
        .env("OCTATE_LOG_FORMAT", "json");
    let server = tokio::task::spawn_blocking(move || RealServer::start_command(cmd, SECRET))
        .await
        .unwrap();
    let resp = peers::post(
        server.http,
        "/api/auth/token",
        &json!({"userId": "u", "roomId": "r"}),
        None,
    )
    .await;
    assert_eq!(resp.status, 401);
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let audit_line = text.lines().find_map(|line| {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            (record["target"] == "octate::audit").then_some(record)
        });
        if let Some(record) = audit_line {
            assert_eq!(record["level"], "INFO", "{record}");
            assert_eq!(
                record["fields"]["event.action"], "admin-auth-failed",
                "{record}"
            );
            assert_eq!(
                record["fields"]["event.reason"], "missing-admin-key",
                "{record}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no audit record in the log in {WAIT:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
