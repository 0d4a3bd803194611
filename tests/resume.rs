//! Session resume over real sockets: how a connection ends decides whether its peer is
//! suspended or leaves, a suspended peer comes back on a new socket without the others
//! noticing, the grace ends in one `peer-left`, and hostile resumes get nothing.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use octate_client::Client;
use octate_protocol::{
    ClientMessage, ErrorCode, LeaveReason, ResumeTicket, ServerMessage, SignalKind,
};
use octate_test::binary::{RealServer, run_to_exit, server_command};
use octate_test::peers::{
    self, WAIT, brief, expect_close, expect_error, expect_host_changed, expect_peer_joined,
    expect_peer_left, expect_silence, next,
};
use octate_test::server::{TestServer, resume_config};
use octate_test::ws::{OP_PING, RawWs, Seen, Upgrade, auth_text, frame};
use octate_transport::TransportConfig;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

/// The grace of most tests: long enough never to run out while a test looks.
const LONG_GRACE: Duration = Duration::from_secs(30);

/// A server with resume on for `grace`, changed by `tweak`.
async fn start(grace: Duration, tweak: impl FnOnce(&mut TransportConfig)) -> TestServer {
    let mut config = resume_config(grace);
    tweak(&mut config);
    TestServer::start(config).await
}

/// A peer that authenticated, with the ticket of its `auth-ok` and its token.
struct Peer {
    client: Client,
    ticket: ResumeTicket,
    token: String,
}

/// The ticket of an `auth-ok`, `room-joined` or `resumed` text; panics without one.
fn ticket_in(text: &str, who: &str) -> ResumeTicket {
    match ServerMessage::decode(text.as_bytes()) {
        Ok(
            ServerMessage::AuthOk {
                resume: Some(ticket),
                ..
            }
            | ServerMessage::Resumed {
                resume: Some(ticket),
                ..
            },
        ) => ticket,
        _ => panic!("{who}: expected an answer with a resume ticket, got {text}"),
    }
}

/// Authenticates `user` in `room` and returns it with its ticket.
async fn join(server: &TestServer, user: &str, room: &str) -> Peer {
    let token = server.token(user, room).await;
    let (client, text) = peers::auth_raw(&server.ws_url(), &token, None).await;
    let ticket = ticket_in(&text, user);
    assert!(
        ticket.resume_token.len() >= 22,
        "at least 128 bits: {}",
        ticket.resume_token.len()
    );
    Peer {
        client,
        ticket,
        token,
    }
}

/// Opens a new connection and sends `resume` with `ticket`; returns it and the answer's text.
async fn send_resume(server: &TestServer, ticket: &ResumeTicket) -> (Client, String) {
    let mut client = peers::connect(&server.ws_url()).await;
    client
        .send(&ClientMessage::Resume {
            session_id: ticket.session_id.clone(),
            resume_token: ticket.resume_token.clone(),
        })
        .await
        .unwrap();
    let text = peers::next_text(&mut client, "resumer").await;
    (client, text)
}

/// Resumes with `ticket` and asserts `resumed` for `user` with `peers` (everyone, the
/// resumer included); returns the client and its new ticket.
async fn resume(
    server: &TestServer,
    ticket: &ResumeTicket,
    user: &str,
    peers: &[&str],
) -> (Client, ResumeTicket) {
    let (client, text) = send_resume(server, ticket).await;
    let Ok(ServerMessage::Resumed {
        user_id,
        room,
        resume: Some(fresh),
        ..
    }) = ServerMessage::decode(text.as_bytes())
    else {
        panic!("{user}: expected resumed with a ticket, got {text}");
    };
    assert_eq!(user_id.as_str(), user);
    let ids: Vec<&str> = room.peers.iter().map(|p| p.user_id.as_str()).collect();
    assert_eq!(ids, peers, "{user}: the room in resumed");
    assert_eq!(fresh.session_id, ticket.session_id, "same session");
    assert_ne!(fresh.resume_token, ticket.resume_token, "a new token");
    let raw: Value = serde_json::from_str(&text).unwrap();
    assert!(
        raw["data"]["peers"].is_array(),
        "shaped like auth-ok: {text}"
    );
    (client, fresh)
}

/// Resumes with `ticket` and asserts `resume-failed` then close 4001.
async fn refused(server: &TestServer, ticket: &ResumeTicket, who: &str) {
    let (mut client, text) = send_resume(server, ticket).await;
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["type"], "error", "{who}: {text}");
    assert_eq!(json["data"]["code"], "resume-failed", "{who}: {text}");
    expect_close(&mut client, who, 4001).await;
}

/// Sends a close frame with `code` (and keeps reading until the server's answer).
async fn close_with(client: &mut Client, code: WsCloseCode) {
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    client.send_raw(Message::Close(Some(frame))).await.unwrap();
    let _ = client.recv_within(WAIT).await;
}

/// Value of the unlabelled metric `name` in `/metrics`.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let resp = peers::get(server.http, "/metrics").await;
    assert_eq!(resp.status, 200);
    let text = String::from_utf8(resp.body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Waits, bounded, until `octate_peers_suspended` is `want`.
async fn wait_suspended(server: &TestServer, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = metric(server, "octate_peers_suspended").await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "octate_peers_suspended stayed {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends an offer from `from` to `to` and asserts `to` gets it, stamped `sender`.
async fn offer(from: &mut Client, to: &mut Client, sender: &str, target: &str) {
    from.signal(
        SignalKind::Offer,
        target,
        json!({"type": "offer", "sdp": "v=0"}),
    )
    .await
    .unwrap();
    match next(to, target).await {
        ServerMessage::Signal { kind, from, .. }
            if kind == SignalKind::Offer && from.as_str() == sender => {}
        other => panic!(
            "{target}: expected an offer from {sender}, got {}",
            brief(&other)
        ),
    }
}

/// Alice (host) and Bob in `room`, Bob told of Alice... and Alice of Bob.
async fn pair(server: &TestServer, room: &str) -> (Peer, Peer) {
    let mut alice = join(server, "alice", room).await;
    let bob = join(server, "bob", room).await;
    expect_peer_joined(&mut alice.client, "alice", "bob").await;
    (alice, bob)
}

// ---- How a connection ends -----------------------------------------------------------------

#[tokio::test]
async fn a_dropped_socket_is_resumed_on_a_new_one_quietly_and_signals_flow_again() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (alice, mut bob) = pair(&server, "drop").await;
    assert_eq!(metric(&server, "octate_sessions_resumed_total").await, 0);

    alice.client.abort();
    wait_suspended(&server, 1).await;
    expect_silence(&mut bob.client, "bob").await;

    let (mut alice, _) = resume(&server, &alice.ticket, "alice", &["alice", "bob"]).await;
    expect_silence(&mut bob.client, "bob").await;
    assert_eq!(metric(&server, "octate_peers_suspended").await, 0);
    assert_eq!(metric(&server, "octate_sessions_resumed_total").await, 1);

    offer(&mut bob.client, &mut alice, "bob", "alice").await;
    offer(&mut alice, &mut bob.client, "alice", "bob").await;
    let room = peers::body(&peers::get(server.http, "/api/rooms/drop").await);
    assert_eq!(room["hostId"], "alice", "{room}");
    server.stop().await;
}

#[tokio::test]
async fn a_close_with_1000_or_without_a_code_leaves_at_once() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (mut alice, mut bob) = pair(&server, "bye").await;
    close_with(&mut alice.client, WsCloseCode::Normal).await;
    expect_peer_left(&mut bob.client, "bob", "alice", LeaveReason::Disconnected).await;
    refused(&server, &alice.ticket, "alice").await;

    expect_host_changed(&mut bob.client, "bob", "bob").await;
    let carol = join(&server, "carol", "bye").await;
    expect_peer_joined(&mut bob.client, "bob", "carol").await;
    carol.client.close().await.unwrap();
    expect_peer_left(&mut bob.client, "bob", "carol", LeaveReason::Disconnected).await;
    refused(&server, &carol.ticket, "carol").await;
    assert_eq!(metric(&server, "octate_peers_suspended").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn leave_room_ends_the_session_at_once() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (mut alice, mut bob) = pair(&server, "leave").await;
    alice
        .client
        .send_text(r#"{"type":"leave-room"}"#)
        .await
        .unwrap();
    expect_peer_left(&mut bob.client, "bob", "alice", LeaveReason::Left).await;
    alice.client.abort();
    refused(&server, &alice.ticket, "alice").await;
    assert_eq!(metric(&server, "octate_peers_suspended").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_close_with_1001_suspends_the_peer() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (mut alice, mut bob) = pair(&server, "away").await;
    close_with(&mut alice.client, WsCloseCode::Away).await;
    wait_suspended(&server, 1).await;
    expect_silence(&mut bob.client, "bob").await;
    let (mut alice, _) = resume(&server, &alice.ticket, "alice", &["alice", "bob"]).await;
    offer(&mut bob.client, &mut alice, "bob", "alice").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_closed_with_4008_is_suspended_then_resumable() {
    let server = start(LONG_GRACE, |c| {
        c.messages_per_second = 1_000_000;
        c.message_burst = 1_000_000;
        c.close_grace = Duration::from_secs(30);
    })
    .await;
    let token = server.token("sam", "slow").await;
    let mut sam = RawWs::connect_small_window(server.signaling).await;
    sam.send_text(&auth_text(&token)).await;
    let ticket = match sam.next("sam").await {
        Seen::Text(text) => ticket_in(&text, "sam"),
        other => panic!("sam: expected auth-ok, got {other:?}"),
    };
    let mut bob = join(&server, "bob", "slow").await;

    // Pings whose pongs sam never reads, until the server gives up on sam.
    let batch = frame(true, OP_PING, &[b'p'; 125]).repeat(500);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(200), sam.send(&batch)).await;
        if metric(&server, "octate_peers_suspended").await == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "sam was never suspended");
    }
    let stats = peers::stats(server.http).await;
    assert_ne!(stats["operations"]["slowConsumersClosed"], 0, "{stats}");
    expect_silence(&mut bob.client, "bob").await;

    let (mut sam2, _) = resume(&server, &ticket, "sam", &["sam", "bob"]).await;
    offer(&mut bob.client, &mut sam2, "bob", "sam").await;
    offer(&mut sam2, &mut bob.client, "sam", "bob").await;
    drop(sam);
    server.stop().await;
}

// ---- While suspended ---------------------------------------------------------------------

#[tokio::test]
async fn the_grace_runs_out_in_exactly_one_peer_left_timeout() {
    let grace = Duration::from_millis(400);
    let server = start(grace, |_| {}).await;
    let (alice, mut bob) = pair(&server, "gone").await;
    let lost = Instant::now();
    alice.client.abort();
    expect_peer_left(&mut bob.client, "bob", "alice", LeaveReason::Timeout).await;
    assert!(
        lost.elapsed() >= grace - Duration::from_millis(50),
        "peer-left came before the grace: {:?}",
        lost.elapsed()
    );
    match next(&mut bob.client, "bob").await {
        ServerMessage::HostChanged { host_id, .. } if host_id.as_str() == "bob" => {}
        other => panic!("bob: expected host-changed, got {}", brief(&other)),
    }
    // Never a second one.
    tokio::time::sleep(grace).await;
    expect_silence(&mut bob.client, "bob").await;
    refused(&server, &alice.ticket, "alice").await;
    assert_eq!(metric(&server, "octate_peers_suspended").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_signal_to_a_suspended_peer_is_answered_peer_unavailable() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (alice, mut bob) = pair(&server, "unavailable").await;
    alice.client.abort();
    wait_suspended(&server, 1).await;
    bob.client
        .signal(
            SignalKind::Offer,
            "alice",
            json!({"type": "offer", "sdp": "v=0"}),
        )
        .await
        .unwrap();
    expect_error(&mut bob.client, "bob", ErrorCode::PeerUnavailable).await;
    // Back again, the same signal goes through.
    let (mut alice, _) = resume(&server, &alice.ticket, "alice", &["alice", "bob"]).await;
    offer(&mut bob.client, &mut alice, "bob", "alice").await;
    server.stop().await;
}

#[tokio::test]
async fn a_fresh_auth_takes_over_a_suspended_peer() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (alice, mut bob) = pair(&server, "takeover").await;
    alice.client.abort();
    wait_suspended(&server, 1).await;
    let again = peers::join(&server.ws_url(), &alice.token, "alice", None).await;
    assert_eq!(again.others, ["bob"]);
    expect_peer_left(&mut bob.client, "bob", "alice", LeaveReason::Replaced).await;
    match next(&mut bob.client, "bob").await {
        ServerMessage::HostChanged { host_id, .. } if host_id.as_str() == "bob" => {}
        other => panic!("bob: expected host-changed, got {}", brief(&other)),
    }
    expect_peer_joined(&mut bob.client, "bob", "alice").await;
    refused(&server, &alice.ticket, "alice").await;
    assert_eq!(metric(&server, "octate_peers_suspended").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_resume_while_the_old_socket_is_open_closes_it_with_4004_quietly() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (mut alice, mut bob) = pair(&server, "overlap").await;
    let (mut again, _) = resume(&server, &alice.ticket, "alice", &["alice", "bob"]).await;
    expect_close(&mut alice.client, "old alice", 4004).await;
    drop(alice.client);
    expect_silence(&mut bob.client, "bob").await;
    assert_eq!(metric(&server, "octate_peers_suspended").await, 0);
    offer(&mut bob.client, &mut again, "bob", "alice").await;
    offer(&mut again, &mut bob.client, "alice", "bob").await;
    server.stop().await;
}

#[tokio::test]
async fn a_token_revoked_while_suspended_cannot_resume() {
    let grace = Duration::from_secs(3);
    let server = start(grace, |_| {}).await;
    let (alice, mut bob) = pair(&server, "revoked").await;
    alice.client.abort();
    wait_suspended(&server, 1).await;
    let resp = peers::post(
        server.http,
        "/api/auth/revoke",
        &json!({"token": alice.token}),
        None,
    )
    .await;
    assert_eq!(resp.status, 200);

    // Refused before anything is handed over: no resumed, no new ticket.
    let (mut client, text) = send_resume(&server, &alice.ticket).await;
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["type"], "error", "nothing but the refusal: {text}");
    assert_eq!(json["data"]["code"], "token-revoked", "{text}");
    expect_close(&mut client, "alice", 4001).await;
    // The session cannot be resumed; it ends with its grace, told once.
    expect_peer_left(&mut bob.client, "bob", "alice", LeaveReason::Timeout).await;
    expect_host_changed(&mut bob.client, "bob", "bob").await;
    expect_silence(&mut bob.client, "bob").await;
    assert_eq!(metric(&server, "octate_peers_suspended").await, 0);
    refused(&server, &alice.ticket, "alice").await;
    server.stop().await;
}

#[tokio::test]
async fn a_refreshed_session_resumes_on_its_newest_token() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (mut alice, mut bob) = pair(&server, "refreshed").await;
    let newer = server.token("alice", "refreshed").await;
    alice
        .client
        .send_text(json!({"type": "refresh", "data": {"token": newer}}).to_string())
        .await
        .unwrap();
    let answer = peers::next_text(&mut alice.client, "alice").await;
    assert!(answer.contains(r#""type":"token-refreshed""#), "{answer}");
    alice.client.abort();
    wait_suspended(&server, 1).await;

    // The first token no longer matters to the session.
    let revoke = |token: String| {
        let http = server.http;
        async move {
            let resp = peers::post(http, "/api/auth/revoke", &json!({"token": token}), None).await;
            assert_eq!(resp.status, 200);
        }
    };
    revoke(alice.token.clone()).await;
    let (again, ticket) = resume(&server, &alice.ticket, "alice", &["alice", "bob"]).await;
    again.abort();
    wait_suspended(&server, 1).await;
    // The newest one does.
    revoke(newer).await;
    let (mut client, text) = send_resume(&server, &ticket).await;
    assert!(text.contains(r#""code":"token-revoked""#), "{text}");
    expect_close(&mut client, "alice", 4001).await;
    expect_silence(&mut bob.client, "bob").await;
    server.stop().await;
}

#[tokio::test]
async fn a_token_expired_while_suspended_cannot_resume_when_expiry_closes_sessions() {
    let authority = octate_test::tokens::authority()
        .with_ttls(Duration::from_secs(1), Duration::from_secs(60))
        .unwrap();
    let mut config = resume_config(LONG_GRACE);
    config.session_expiry = octate_transport::SessionExpiry::Close;
    let server = TestServer::start_with(config, authority).await;
    let issued = Instant::now();
    let (alice, mut bob) = pair(&server, "expired").await;
    alice.client.abort();
    wait_suspended(&server, 1).await;
    tokio::time::sleep_until(issued + Duration::from_millis(1200)).await;
    let (mut client, text) = send_resume(&server, &alice.ticket).await;
    assert!(text.contains(r#""code":"token-expired""#), "{text}");
    expect_close(&mut client, "alice", 4001).await;
    // Bob's own token expired too: his session ends, as it would without resume.
    expect_error(&mut bob.client, "bob", ErrorCode::TokenExpired).await;
    server.stop().await;
}

#[tokio::test]
async fn resumed_carries_fresh_ice_servers_when_turn_is_configured() {
    let turn = ["turn:127.0.0.1:3478"];
    let ice = octate_transport::IceConfig::new(
        turn.iter().copied(),
        Some(octate_transport::TurnSecret::new(b"resume-turn-secret-0123456789").unwrap()),
        Duration::from_secs(600),
    )
    .unwrap();
    let server = start(LONG_GRACE, |c| c.ice = Some(ice)).await;
    let (alice, _bob) = pair(&server, "turn").await;
    alice.client.abort();
    wait_suspended(&server, 1).await;
    let (_client, text) = send_resume(&server, &alice.ticket).await;
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["type"], "resumed", "{text}");
    let entry = &json["data"]["iceServers"][0];
    assert_eq!(entry["urls"], json!(turn), "{text}");
    assert!(
        entry["username"].is_string() && entry["credential"].is_string(),
        "{text}"
    );
    server.stop().await;
}

// ---- Hostile resumes ---------------------------------------------------------------------

/// A xorshift generator: random-looking tokens without a dependency.
struct Noise(u64);

impl Noise {
    fn seeded() -> Self {
        Self(octate_test::tokens::now_ms() | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` base64url characters.
    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..len)
            .map(|_| char::from(ALPHABET[(self.next() % 64) as usize]))
            .collect()
    }
}

#[tokio::test]
async fn guessed_tokens_fail_and_the_session_stays_resumable() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (alice, mut bob) = pair(&server, "guess").await;
    alice.client.abort();
    wait_suspended(&server, 1).await;
    let mut noise = Noise::seeded();
    for _ in 0..20 {
        let guess = ResumeTicket {
            session_id: alice.ticket.session_id.clone(),
            resume_token: noise.token(43),
        };
        refused(&server, &guess, "guesser").await;
    }
    expect_silence(&mut bob.client, "bob").await;
    assert_eq!(metric(&server, "octate_peers_suspended").await, 1);
    let (mut alice, _) = resume(&server, &alice.ticket, "alice", &["alice", "bob"]).await;
    offer(&mut bob.client, &mut alice, "bob", "alice").await;
    server.stop().await;
}

#[tokio::test]
async fn a_spent_token_is_refused() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (alice, mut bob) = pair(&server, "replay").await;
    alice.client.abort();
    wait_suspended(&server, 1).await;
    let (second, fresh) = resume(&server, &alice.ticket, "alice", &["alice", "bob"]).await;
    second.abort();
    wait_suspended(&server, 1).await;
    refused(&server, &alice.ticket, "replayer").await;
    let (mut third, _) = resume(&server, &fresh, "alice", &["alice", "bob"]).await;
    expect_silence(&mut bob.client, "bob").await;
    offer(&mut bob.client, &mut third, "bob", "alice").await;
    server.stop().await;
}

#[tokio::test]
async fn a_token_under_another_sessions_id_is_refused() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (alice, mut bob) = pair(&server, "mix").await;
    let carol = join(&server, "carol", "elsewhere").await;
    alice.client.abort();
    carol.client.abort();
    wait_suspended(&server, 2).await;
    let mixed = |session: &ResumeTicket, token: &ResumeTicket| ResumeTicket {
        session_id: session.session_id.clone(),
        resume_token: token.resume_token.clone(),
    };
    for (session, token) in [
        (&alice.ticket, &bob.ticket),
        (&alice.ticket, &carol.ticket),
        (&carol.ticket, &alice.ticket),
        (&bob.ticket, &alice.ticket),
    ] {
        refused(&server, &mixed(session, token), "mixer").await;
    }
    expect_silence(&mut bob.client, "bob").await;
    resume(&server, &alice.ticket, "alice", &["alice", "bob"]).await;
    resume(&server, &carol.ticket, "carol", &["carol"]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_resumes_costs_one_connection_each_and_the_address_cap_holds() {
    const CAP: usize = 8;
    const ATTEMPTS: usize = 200;
    let server = start(LONG_GRACE, |c| c.max_connections_per_ip = CAP).await;
    let (alice, mut bob) = pair(&server, "flood").await;
    alice.client.abort();
    wait_suspended(&server, 1).await;

    // The flood comes from 127.0.0.2: CAP workers, one resume per connection each.
    let flooder = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let session = alice.ticket.session_id.clone();
    let mut workers = Vec::new();
    for w in 0..CAP {
        let (addr, session) = (server.signaling, session.clone());
        workers.push(tokio::spawn(async move {
            let mut noise = Noise((octate_test::tokens::now_ms() + w as u64 * 7919) | 1);
            let mut refused_upgrades = 0;
            let mut done = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while done < ATTEMPTS / CAP {
                assert!(Instant::now() < deadline, "the flood did not finish");
                let tcp = RawWs::tcp_from(flooder, addr).await;
                let mut ws = match RawWs::upgrade(tcp, addr).await {
                    Upgrade::Accepted(ws) => ws,
                    Upgrade::Refused { status, .. } => {
                        // A slot not yet released by the connection before.
                        assert_eq!(status, 429);
                        refused_upgrades += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let attempt = json!({"type": "resume", "data": {
                    "sessionId": session, "resumeToken": noise.token(43)}});
                ws.send_text(&attempt.to_string()).await;
                let (texts, code) = ws.end("flooder").await;
                assert_eq!(code, Some(4001), "{texts:?}");
                assert_eq!(texts.len(), 1, "one answer per attempt: {texts:?}");
                assert!(texts[0].contains(r#""code":"resume-failed""#), "{texts:?}");
                done += 1;
            }
            refused_upgrades
        }));
    }
    // Meanwhile the room goes on.
    let carol = join(&server, "carol", "flood").await;
    expect_peer_joined(&mut bob.client, "bob", "carol").await;
    let mut carol = carol.client;
    offer(&mut carol, &mut bob.client, "carol", "bob").await;
    for worker in workers {
        worker.await.unwrap();
    }

    // The cap holds: CAP open connections from one address, and the next is refused.
    let holder = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut held = Vec::new();
    for _ in 0..CAP {
        let tcp = RawWs::tcp_from(holder, server.signaling).await;
        match RawWs::upgrade(tcp, server.signaling).await {
            Upgrade::Accepted(ws) => held.push(ws),
            Upgrade::Refused { status, .. } => panic!("refused below the cap: {status}"),
        }
    }
    let tcp = RawWs::tcp_from(holder, server.signaling).await;
    match RawWs::upgrade(tcp, server.signaling).await {
        Upgrade::Refused { status, .. } => assert_eq!(status, 429),
        Upgrade::Accepted(_) => panic!("the per-address cap of {CAP} did not hold"),
    }
    drop(held);

    // The session survived the flood and a normal peer is served.
    let (mut alice, _) = resume(&server, &alice.ticket, "alice", &["alice", "bob", "carol"]).await;
    offer(&mut bob.client, &mut alice, "bob", "alice").await;
    expect_silence(&mut carol, "carol").await;
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_resume_is_refused_with_a_clear_error() {
    let server = start(LONG_GRACE, |_| {}).await;
    let (alice, mut bob) = pair(&server, "malformed").await;
    alice.client.abort();
    wait_suspended(&server, 1).await;
    let session = alice.ticket.session_id.clone();
    let long = "x".repeat(10 * 1024);
    let cases = [
        (json!({"type": "resume"}), "missing-field"),
        (json!({"type": "resume", "data": {}}), "missing-field"),
        (
            json!({"type": "resume", "data": {"sessionId": session}}),
            "missing-field",
        ),
        (
            json!({"type": "resume", "data": {"resumeToken": "x"}}),
            "missing-field",
        ),
        (
            json!({"type": "resume", "data": {"sessionId": 7, "resumeToken": "x"}}),
            "invalid-field",
        ),
        (
            json!({"type": "resume", "data": {"sessionId": session, "resumeToken": ["x"]}}),
            "invalid-field",
        ),
        (
            // `null` counts as absent, as in every message.
            json!({"type": "resume", "data": {"sessionId": session, "resumeToken": null}}),
            "missing-field",
        ),
        (
            json!({"type": "resume", "data": {"sessionId": session, "resumeToken": ""}}),
            "invalid-field",
        ),
        (
            json!({"type": "resume", "data": {"sessionId": session, "resumeToken": long}}),
            "invalid-field",
        ),
        (
            json!({"type": "resume", "data": {"sessionId": long, "resumeToken": "x"}}),
            "invalid-field",
        ),
    ];
    for (msg, code) in cases {
        let mut client = peers::connect(&server.ws_url()).await;
        client.send_text(msg.to_string()).await.unwrap();
        let text = peers::next_text(&mut client, "malformed").await;
        let json: Value = serde_json::from_str(&text).unwrap();
        let shown = brief(&msg);
        assert_eq!(json["type"], "error", "{shown}: {text}");
        assert_eq!(json["data"]["code"], code, "{shown}: {text}");
        // The connection may still authenticate or resume properly.
        client.send_text(r#"{"type":"heartbeat"}"#).await.unwrap();
        expect_error(&mut client, "malformed", ErrorCode::NotAuthenticated).await;
    }
    expect_silence(&mut bob.client, "bob").await;
    resume(&server, &alice.ticket, "alice", &["alice", "bob"]).await;
    server.stop().await;
}

// ---- The real binary ---------------------------------------------------------------------

const BIN_SECRET: &str = "resume-binary-secret-0123456789abcdef";

#[tokio::test]
async fn the_binary_refuses_a_grace_over_a_minute() {
    let (code, out, err) = tokio::task::spawn_blocking(|| {
        let mut cmd = server_command();
        cmd.env("OCTATE_RESUME_GRACE_MS", "70000")
            .env("OCTATE_TOKEN_SECRET", BIN_SECRET)
            .env("HOST", "127.0.0.2")
            .env("PORT", "0")
            .env("SIGNALING_PORT", "0");
        run_to_exit(cmd)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(2), "stdout: {out} stderr: {err}");
    assert!(err.contains("OCTATE_RESUME_GRACE_MS"), "stderr: {err}");
    assert!(!out.contains("listening"), "it must not start: {out}");
}

/// The `data.resume` of an `auth-ok` from the real binary started with `grace_ms`
/// (`None`: the default).
async fn binary_auth_ok(grace_ms: Option<&'static str>) -> Value {
    let server = tokio::task::spawn_blocking(move || {
        let mut cmd = server_command();
        if let Some(grace) = grace_ms {
            cmd.env("OCTATE_RESUME_GRACE_MS", grace);
        }
        RealServer::start_command(cmd, BIN_SECRET)
    })
    .await
    .unwrap();
    let token = server.token("alice", "bin-room").await;
    let (_client, text) = peers::auth_raw(&server.ws_url(), &token, None).await;
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["type"], "auth-ok", "{text}");
    json["data"]["resume"].clone()
}

#[tokio::test]
async fn the_binary_hands_out_tickets_by_default_and_none_with_grace_zero() {
    let ticket = binary_auth_ok(None).await;
    assert!(ticket["sessionId"].is_string(), "{ticket}");
    assert_eq!(
        ticket["resumeToken"].as_str().map(str::len),
        Some(43),
        "{ticket}"
    );
    let off = binary_auth_ok(Some("0")).await;
    assert!(
        off.is_null(),
        "no resume block with OCTATE_RESUME_GRACE_MS=0: {off}"
    );
}
