//! TURN credentials end to end: the `iceServers` of `auth-ok` and `room-joined`, the
//! `POST /api/turn/credentials` endpoint, the configuration the binary refuses, and a
//! real coturn (`turnserver`) allocating relays with the credentials Octate hands out,
//! and refusing expired or wrongly signed ones.
//!
//! coturn comes from Debian's `coturn` package (tests/all.sh installs it); without it the
//! coturn test fails and says so.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use octate_protocol::UserId;
use octate_test::binary::{run_to_exit, server_command};
use octate_test::peers::{self, assert_http_error, body, next_text, request};
use octate_test::server::TestServer;
use octate_test::tokens::{self, now_ms};
use octate_transport::{IceConfig, TurnSecret};
use serde_json::{Value, json};

/// The secret Octate and coturn share.
const SECRET: &str = "octate-turn-test-secret-0123";

/// Lifetime of the credentials Octate hands out in these tests.
const TTL_SECS: u64 = 600;

/// Longest a coturn client run may take (a successful one sends and echoes a message).
const CLIENT_LIMIT: Duration = Duration::from_secs(30);

/// Longest coturn may take to listen.
const START_LIMIT: Duration = Duration::from_secs(10);

fn ice_config(uris: &[&str], secret: Option<&str>) -> IceConfig {
    let secret = secret.map(|s| TurnSecret::new(s.as_bytes()).unwrap());
    IceConfig::new(uris.iter().copied(), secret, Duration::from_secs(TTL_SECS)).unwrap()
}

async fn server_with(ice: Option<IceConfig>) -> TestServer {
    TestServer::start_tweaked(|config| config.ice = ice).await
}

/// `POST /api/turn/credentials` with an optional `Authorization` header value.
async fn credentials(
    server: &TestServer,
    authorization: Option<&str>,
) -> octate_client::HttpResponse {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    request(server.http, "POST", "/api/turn/credentials", &headers, None).await
}

/// The expected TURN password, computed by Python's standard library, not by Octate.
fn python_credential(secret: &str, username: &str) -> String {
    let script = "import base64, hashlib, hmac, sys; \
        print(base64.b64encode(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha1).digest()).decode())";
    let out = Command::new("python3")
        .args(["-c", script, secret, username])
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to check credentials apart: {e}"));
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Checks a TURN entry: URIs, an expiry `TTL_SECS` from now, an id that is not the user id,
/// and the credential Python computes for the username.
fn check_turn_entry(entry: &Value, turn_uris: &[&str], user: &str) -> (String, String) {
    assert_eq!(entry["urls"], json!(turn_uris), "{entry}");
    let username = entry["username"]
        .as_str()
        .unwrap_or_else(|| panic!("username: {entry}"));
    let credential = entry["credential"]
        .as_str()
        .unwrap_or_else(|| panic!("credential: {entry}"));
    let (expiry, id) = username
        .split_once(':')
        .unwrap_or_else(|| panic!("expiry:id, got {username}"));
    let expiry: u64 = expiry.parse().unwrap();
    let now = now_ms() / 1000;
    assert!(
        (now + TTL_SECS - 5..=now + TTL_SECS).contains(&expiry),
        "expiry {expiry} is {TTL_SECS} s after {now}"
    );
    assert!(
        !id.is_empty() && !id.contains(user),
        "the username hides the user id: {username}"
    );
    assert_eq!(
        credential,
        python_credential(SECRET, username),
        "{username}"
    );
    (username.to_owned(), credential.to_owned())
}

#[tokio::test]
async fn auth_ok_and_room_joined_carry_ice_servers() {
    let turn_uris = [
        "turn:127.0.0.1:3478?transport=udp",
        "turns:turn.example.com:5349",
    ];
    let server = server_with(Some(ice_config(
        &[turn_uris[0], "stun:stun.example.com:3478", turn_uris[1]],
        Some(SECRET),
    )))
    .await;
    let token = server.token("alice", "room-1").await;
    let (mut alice, text) = peers::auth_raw(&server.ws_url(), &token, None).await;
    let auth_ok: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(auth_ok["type"], "auth-ok", "{text}");
    let ice = auth_ok["data"]["iceServers"]
        .as_array()
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(ice.len(), 2, "{text}");
    let (username, _) = check_turn_entry(&ice[0], &turn_uris, "alice");
    assert_eq!(ice[1], json!({"urls": ["stun:stun.example.com:3478"]}));

    // Another user gets another id.
    let bob_token = server.token("bob", "room-1").await;
    let (_bob, bob_text) = peers::auth_raw(&server.ws_url(), &bob_token, None).await;
    let bob_ok: Value = serde_json::from_str(&bob_text).unwrap();
    let bob_username = bob_ok["data"]["iceServers"][0]["username"]
        .as_str()
        .unwrap();
    assert_ne!(
        bob_username.split_once(':').unwrap().1,
        username.split_once(':').unwrap().1
    );
    // Alice hears bob join: other messages carry no credentials.
    let joined = next_text(&mut alice, "alice").await;
    assert!(!joined.contains("iceServers"), "{joined}");

    alice.send_text(r#"{"type":"leave-room"}"#).await.unwrap();
    let left = next_text(&mut alice, "alice").await;
    assert!(left.contains("room-left"), "{left}");
    alice
        .send_text(r#"{"type":"join-room","roomId":"room-1"}"#)
        .await
        .unwrap();
    let text = next_text(&mut alice, "alice").await;
    let room_joined: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(room_joined["type"], "room-joined", "{text}");
    check_turn_entry(&room_joined["data"]["iceServers"][0], &turn_uris, "alice");
    server.stop().await;
}

#[tokio::test]
async fn without_turn_settings_nothing_is_handed_out() {
    let server = server_with(None).await;
    let token = server.token("alice", "room-1").await;
    let (_alice, text) = peers::auth_raw(&server.ws_url(), &token, None).await;
    let auth_ok: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(auth_ok["type"], "auth-ok", "{text}");
    assert!(auth_ok["data"].get("iceServers").is_none(), "{text}");
    let resp = credentials(&server, Some(&format!("Bearer {token}"))).await;
    assert_http_error(&resp, 404, "not-found");
    // Without a valid token, not even whether TURN is configured.
    assert_http_error(&credentials(&server, None).await, 401, "unauthorized");
    let resp = credentials(&server, Some("Bearer not-a-token")).await;
    assert_http_error(&resp, 401, "token-malformed");
    server.stop().await;

    // STUN only: the STUN servers, no credentials, and no credentials endpoint.
    let server = server_with(Some(ice_config(&["stun:stun.example.com"], None))).await;
    let token = server.token("alice", "room-1").await;
    let (_alice, text) = peers::auth_raw(&server.ws_url(), &token, None).await;
    let auth_ok: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        auth_ok["data"]["iceServers"],
        json!([{"urls": ["stun:stun.example.com"]}]),
        "{text}"
    );
    let resp = credentials(&server, Some(&format!("Bearer {token}"))).await;
    assert_http_error(&resp, 404, "not-found");
    server.stop().await;
}

#[tokio::test]
async fn credentials_endpoint_answers_the_holder_of_a_valid_room_token() {
    let turn_uris = ["turn:127.0.0.1:3478"];
    let server = server_with(Some(ice_config(&turn_uris, Some(SECRET)))).await;
    let token = server.token("alice", "room-1").await;

    let resp = credentials(&server, Some(&format!("Bearer {token}"))).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let got = body(&resp);
    assert_eq!(got["ttl"], TTL_SECS, "{got}");
    assert_eq!(got["iceServers"].as_array().unwrap().len(), 1, "{got}");
    check_turn_entry(&got["iceServers"][0], &turn_uris, "alice");

    // No token, not a bearer token, a token that is not one, an expired one.
    for (authorization, code) in [
        (None, "unauthorized"),
        (Some(format!("Basic {token}")), "unauthorized"),
        (Some("Bearer not-a-token".to_owned()), "token-malformed"),
        (
            Some(format!(
                "Bearer {}",
                tokens::mint("alice", "room-1", now_ms() - 2 * 3_600_000)
            )),
            "token-expired",
        ),
    ] {
        let resp = credentials(&server, authorization.as_deref()).await;
        assert_http_error(&resp, 401, code);
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{code}");
    }

    // A revoked token gets nothing more.
    let revoke = peers::post(
        server.http,
        "/api/auth/revoke",
        &json!({"token": token}),
        None,
    )
    .await;
    assert_eq!(
        revoke.status,
        200,
        "{}",
        String::from_utf8_lossy(&revoke.body)
    );
    let resp = credentials(&server, Some(&format!("Bearer {token}"))).await;
    assert_http_error(&resp, 401, "token-revoked");

    let resp = request(server.http, "GET", "/api/turn/credentials", &[], None).await;
    assert_http_error(&resp, 405, "method-not-allowed");
    assert_eq!(resp.header("allow"), Some("POST, OPTIONS"));
    server.stop().await;
}

#[test]
fn the_binary_refuses_malformed_turn_settings() {
    for (env, says) in [
        (
            &[
                ("OCTATE_TURN_URIS", "turn://turn.example.com"),
                ("OCTATE_TURN_SECRET", SECRET),
            ][..],
            &["OCTATE_TURN_URIS", "turn://turn.example.com", "no //"][..],
        ),
        (
            &[("OCTATE_TURN_URIS", "turn:turn.example.com")],
            &["OCTATE_TURN_URIS", "needs a TURN secret"],
        ),
        (
            &[
                ("OCTATE_TURN_URIS", "turn:turn.example.com"),
                ("OCTATE_TURN_SECRET", "too-short"),
            ],
            &["OCTATE_TURN_SECRET", "16 bytes"],
        ),
    ] {
        let mut cmd = server_command();
        cmd.env("PORT", "0").env("SIGNALING_PORT", "0");
        for (name, value) in env {
            cmd.env(name, value);
        }
        let (code, _out, err) = run_to_exit(cmd);
        assert_eq!(code, Some(2), "{env:?}: {err}");
        for text in says {
            assert!(err.contains(text), "{env:?}: stderr says {text:?}: {err}");
        }
    }
}

/// A free loopback TCP port (and, for coturn, the UDP port of the same number is tried).
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process of the test's own, killed on drop.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(mut cmd: Command, what: &str, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {what}: {e}; it comes from Debian's coturn package: \
                     apt-get install -y coturn (tests/all.sh does)"
                )
            });
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coturn server on loopback checking TURN REST credentials with [`SECRET`], and a UDP
/// echo peer for its clients to relay to.
struct Coturn {
    port: u16,
    peer_port: u16,
    server: Process,
    _peer: Process,
    dir: PathBuf,
}

impl Coturn {
    fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("octate-turn-{}-{}", std::process::id(), now_ms()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_tcp_port();
        let relay = free_udp_port().min(65_535 - 16);
        let mut cmd = Command::new("turnserver");
        cmd.args([
            "-n",
            "--listening-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--relay-ip=127.0.0.1",
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            "--realm=octate.test",
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            &format!("--min-port={relay}"),
            &format!("--max-port={}", relay + 16),
            &format!("--pidfile={}", dir.join("turnserver.pid").display()),
            &format!("--userdb={}", dir.join("turndb").display()),
            "--log-file=stdout",
        ]);
        let mut server = Process::spawn(cmd, "turnserver", dir.join("turnserver.log"));

        let peer_port = free_udp_port();
        let mut cmd = Command::new("turnutils_peer");
        cmd.args(["-L", "127.0.0.1", "-p", &peer_port.to_string()]);
        let peer = Process::spawn(cmd, "turnutils_peer", dir.join("peer.log"));

        let deadline = Instant::now() + START_LIMIT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("turnserver exited ({status}):\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "turnserver not listening after {START_LIMIT:?}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            peer_port,
            server,
            _peer: peer,
            dir,
        }
    }

    /// Allocates a relay over TCP with `username` / `credential` and sends one message through
    /// it to the echo peer; returns whether that worked, and the client's output.
    fn allocate(&self, username: &str, credential: &str) -> (bool, String) {
        let mut cmd = Command::new("turnutils_uclient");
        cmd.args([
            "-t",
            "-u",
            username,
            "-w",
            credential,
            "-p",
            &self.port.to_string(),
            "-e",
            "127.0.0.1",
            "-r",
            &self.peer_port.to_string(),
            "-n",
            "1",
            "-m",
            "1",
            "127.0.0.1",
        ]);
        let out = run_bounded(cmd, "turnutils_uclient", CLIENT_LIMIT);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cmd` to its end, killing it and failing after `limit`.
fn run_bounded(mut cmd: Command, what: &str, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}; apt-get install -y coturn"));
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_allocates_with_octates_credentials_and_refuses_others() {
    let coturn = tokio::task::spawn_blocking(Coturn::start).await.unwrap();
    let turn_uri = format!("turn:127.0.0.1:{}?transport=tcp", coturn.port);
    let server = server_with(Some(ice_config(&[&turn_uri], Some(SECRET)))).await;
    let token = server.token("alice", "room-1").await;

    // From auth-ok, and from the HTTP endpoint.
    let (_alice, text) = peers::auth_raw(&server.ws_url(), &token, None).await;
    let auth_ok: Value = serde_json::from_str(&text).unwrap();
    let (username, credential) = check_turn_entry(
        &auth_ok["data"]["iceServers"][0],
        &[turn_uri.as_str()],
        "alice",
    );
    let resp = credentials(&server, Some(&format!("Bearer {token}"))).await;
    let fetched = body(&resp);
    let (http_username, http_credential) =
        check_turn_entry(&fetched["iceServers"][0], &[turn_uri.as_str()], "alice");
    server.stop().await;

    let coturn = std::sync::Arc::new(coturn);
    let run = |username: String, credential: String| {
        let coturn = coturn.clone();
        tokio::task::spawn_blocking(move || coturn.allocate(&username, &credential))
    };
    let from_auth_ok = run(username.clone(), credential);
    let from_http = run(http_username, http_credential);
    let (ok, out) = from_auth_ok.await.unwrap();
    assert!(
        ok,
        "coturn refused the auth-ok credential:\n{out}\n{}",
        coturn.server.log()
    );
    let (ok, out) = from_http.await.unwrap();
    assert!(
        ok,
        "coturn refused the HTTP credential:\n{out}\n{}",
        coturn.server.log()
    );

    // Expired: a username whose expiry has passed, signed correctly.
    let secret = TurnSecret::new(SECRET.as_bytes()).unwrap();
    let expired = secret.username(&UserId::new("alice").unwrap(), now_ms() / 1000 - 60);
    let expired_credential = secret.credential(&expired);
    assert_eq!(expired_credential, python_credential(SECRET, &expired));
    // Wrong: the fresh username, signed with another secret.
    let other = TurnSecret::new(b"some-other-secret-0123").unwrap();
    let wrong_credential = other.credential(&username);
    for (case, username, credential) in [
        ("expired", expired, expired_credential),
        ("wrongly signed", username, wrong_credential),
    ] {
        let (ok, out) = run(username, credential).await.unwrap();
        assert!(!ok, "coturn allocated with a {case} credential:\n{out}");
        assert!(
            out.contains("Cannot complete Allocation"),
            "{case}: refused for another reason:\n{out}"
        );
    }
}
