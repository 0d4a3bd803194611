//! A [`Session`] against a real in-process server, its connection running through a TCP
//! relay the test can cut or make refuse connections: the session reconnects, resumes when
//! the server still holds it, authenticates afresh when not, gives up after its attempts,
//! and stops on a deliberate close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use octate_client::{
    Backoff, Client, ClientError, Membership, Session, SessionConfig, SessionEvent, TokenSource,
    fetch_token,
};
use octate_protocol::{LeaveReason, ServerMessage, SignalKind};
use octate_test::peers::{self, WAIT};
use octate_test::server::{TestServer, fast_config, resume_config};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const ROOM: &str = "room-1";

/// The admin key of the servers that have one.
const ADMIN_KEY: &str = "admin-key-0123456789";

/// How long the server holds a dropped session: longer than any step of these tests.
const GRACE: Duration = Duration::from_secs(10);

/// A TCP relay between the session and the server that the test can cut.
struct Relay {
    addr: SocketAddr,
    refusing: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Relays every connection to `upstream`.
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let addr = listener.local_addr().expect("relay address");
        let refusing = Arc::new(AtomicBool::new(false));
        let links = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (refusing, links) = (refusing.clone(), links.clone());
            async move {
                while let Ok((mut down, _)) = listener.accept().await {
                    if refusing.load(Ordering::SeqCst) {
                        drop(down);
                        continue;
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut up) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                    links.lock().expect("links").push(link);
                }
            }
        });
        Self {
            addr,
            refusing,
            links,
            accept,
        }
    }

    /// The signaling URL through the relay.
    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Drops every relayed connection at once, both ends, without a close frame.
    fn cut(&self) {
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    /// Makes the relay close new connections at once (`true`) or relay them again.
    fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Back-off for tests: short waits, a few attempts.
fn quick_backoff(max_attempts: u32) -> Backoff {
    Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
        max_attempts,
    }
}

/// Alice's tokens from the server's HTTP API, counted.
struct AliceTokens {
    http: SocketAddr,
    /// The server's admin key, when it has one (token issuance then needs it).
    admin_key: Option<&'static str>,
    fetched: Arc<AtomicUsize>,
}

impl TokenSource for AliceTokens {
    async fn token(&mut self) -> Result<String, ClientError> {
        self.fetched.fetch_add(1, Ordering::SeqCst);
        fetch_token(self.http, "alice", ROOM, self.admin_key).await
    }
}

/// Starts alice's session through `relay`; returns it with the count of tokens it fetched.
async fn alice_session(
    server: &TestServer,
    relay: &Relay,
    backoff: Backoff,
) -> (Session<AliceTokens>, Arc<AtomicUsize>) {
    alice_session_with_key(server, relay, backoff, None).await
}

/// [`alice_session`] on a server with an admin key.
async fn alice_session_with_key(
    server: &TestServer,
    relay: &Relay,
    backoff: Backoff,
    admin_key: Option<&'static str>,
) -> (Session<AliceTokens>, Arc<AtomicUsize>) {
    let fetched = Arc::new(AtomicUsize::new(0));
    let tokens = AliceTokens {
        http: server.http,
        admin_key,
        fetched: fetched.clone(),
    };
    let mut config = SessionConfig::new(relay.url());
    config.user_name = Some("Alice".to_owned());
    config.backoff = backoff;
    config.attempt_timeout = WAIT;
    let start = Session::start(config, tokens);
    let mut session = tokio::time::timeout(WAIT, start)
        .await
        .expect("session started in time")
        .expect("session starts");
    match next_event(&mut session).await {
        SessionEvent::Joined(m) => assert_eq!(m.user_id.as_str(), "alice"),
        other => panic!("alice: expected joined, got {}", peers::brief(&other)),
    }
    (session, fetched)
}

/// The session's next event, bounded in time.
async fn next_event(session: &mut Session<AliceTokens>) -> SessionEvent {
    tokio::time::timeout(WAIT, session.next_event())
        .await
        .expect("an event in time")
        .unwrap_or_else(|e| panic!("alice: expected an event, got {e}"))
}

/// The session's next event, which must be a signal of `kind` from `from`.
async fn expect_signal(session: &mut Session<AliceTokens>, kind: SignalKind, from: &str) {
    match next_event(session).await {
        SessionEvent::Message(ServerMessage::Signal {
            kind: got,
            from: sender,
            ..
        }) if got == kind && sender.as_str() == from => {}
        other => panic!(
            "alice: expected {kind:?} from {from}, got {}",
            peers::brief(&other)
        ),
    }
}

/// The next event, which must be `resumed`.
async fn expect_resumed(session: &mut Session<AliceTokens>) -> Membership {
    match next_event(session).await {
        SessionEvent::Resumed(m) => m,
        other => panic!("alice: expected resumed, got {}", peers::brief(&other)),
    }
}

/// The next event, which must be `reauthenticated`.
async fn expect_reauthenticated(session: &mut Session<AliceTokens>) -> Membership {
    match next_event(session).await {
        SessionEvent::Reauthenticated(m) => m,
        other => panic!(
            "alice: expected reauthenticated, got {}",
            peers::brief(&other)
        ),
    }
}

/// Asserts bob sees alice leave for `reason` and join again.
async fn expect_alice_left_and_joined(bob: &mut Client, reason: LeaveReason) {
    peers::expect_peer_left(bob, "bob", "alice", reason).await;
    expect_alice_back(bob).await;
}

/// Asserts bob sees alice join again (the host may move to him first).
async fn expect_alice_back(bob: &mut Client) {
    match peers::next(bob, "bob").await {
        ServerMessage::HostChanged { host_id, .. } if host_id.as_str() == "bob" => {
            peers::expect_peer_joined(bob, "bob", "alice").await;
        }
        ServerMessage::PeerJoined { peer, .. } if peer.user_id.as_str() == "alice" => {}
        other => panic!(
            "bob: expected alice to join again, got {}",
            peers::brief(&other)
        ),
    }
}

#[tokio::test]
async fn a_session_joins_relays_signals_and_closes_for_good() {
    let server = TestServer::start(resume_config(GRACE)).await;
    let relay = Relay::start(server.signaling).await;
    let (mut alice, fetched) = alice_session(&server, &relay, quick_backoff(3)).await;
    assert_eq!(fetched.load(Ordering::SeqCst), 1);
    let mut bob = server.join("bob", ROOM).await.client;
    match next_event(&mut alice).await {
        SessionEvent::Message(ServerMessage::PeerJoined { peer, .. }) => {
            assert_eq!(peer.user_id.as_str(), "bob");
        }
        other => panic!("alice: expected peer-joined, got {}", peers::brief(&other)),
    }
    bob.signal(SignalKind::Offer, "alice", json!({"sdp": "o"}))
        .await
        .expect("sent");
    expect_signal(&mut alice, SignalKind::Offer, "bob").await;
    alice
        .signal(SignalKind::Answer, "bob", json!({"sdp": "a"}))
        .await
        .expect("sent");
    match peers::next(&mut bob, "bob").await {
        ServerMessage::Signal {
            kind: SignalKind::Answer,
            from,
            ..
        } => {
            assert_eq!(from.as_str(), "alice");
        }
        other => panic!("bob: expected the answer, got {}", peers::brief(&other)),
    }

    // A close with 1000 ends the session at once, resume or not.
    alice.close().await.expect("closed");
    match peers::next(&mut bob, "bob").await {
        ServerMessage::PeerLeft { peer, .. } => assert_eq!(peer.user_id.as_str(), "alice"),
        other => panic!("bob: expected peer-left, got {}", peers::brief(&other)),
    }
    server.stop().await;
}

/// Without resume on the server, a cut connection comes back through a fresh `auth`: the
/// others see the peer leave and join again.
#[tokio::test]
async fn a_cut_socket_without_resume_comes_back_with_a_fresh_auth() {
    let server = TestServer::start(fast_config()).await;
    let relay = Relay::start(server.signaling).await;
    let (mut alice, fetched) = alice_session(&server, &relay, quick_backoff(5)).await;
    let mut bob = server.join("bob", ROOM).await.client;
    assert!(matches!(
        next_event(&mut alice).await,
        SessionEvent::Message(_)
    ));

    relay.cut();
    let back = expect_reauthenticated(&mut alice).await;
    assert_eq!(back.user_id.as_str(), "alice");
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        2,
        "a second token for the fresh auth"
    );
    assert!(alice.is_connected());
    expect_alice_left_and_joined(&mut bob, LeaveReason::Disconnected).await;

    bob.signal(SignalKind::Offer, "alice", json!({"sdp": "o"}))
        .await
        .expect("sent");
    expect_signal(&mut alice, SignalKind::Offer, "bob").await;
    server.stop().await;
}

#[tokio::test]
async fn a_cut_socket_resumes_and_the_other_peer_sees_nothing() {
    let server = TestServer::start(resume_config(GRACE)).await;
    let relay = Relay::start(server.signaling).await;
    let (mut alice, fetched) = alice_session(&server, &relay, quick_backoff(5)).await;
    let mut bob = server.join("bob", ROOM).await.client;
    assert!(matches!(
        next_event(&mut alice).await,
        SessionEvent::Message(_)
    ));
    let ticket = alice
        .ticket()
        .cloned()
        .expect("auth-ok carries a resume ticket");

    relay.cut();
    let back = expect_resumed(&mut alice).await;
    assert_eq!(back.user_id.as_str(), "alice");
    assert_eq!(back.room.peers.len(), 2, "bob is still in the room");
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        1,
        "no new token: the ticket did it"
    );
    let rotated = alice.ticket().expect("resumed carries a ticket");
    assert_ne!(rotated, &ticket, "resumed rotates the ticket");
    peers::expect_silence(&mut bob, "bob").await;

    bob.signal(SignalKind::Offer, "alice", json!({"sdp": "o"}))
        .await
        .expect("sent");
    expect_signal(&mut alice, SignalKind::Offer, "bob").await;
    alice
        .signal(SignalKind::Answer, "bob", json!({"sdp": "a"}))
        .await
        .expect("sent");
    match peers::next(&mut bob, "bob").await {
        ServerMessage::Signal {
            kind: SignalKind::Answer,
            from,
            ..
        } => {
            assert_eq!(from.as_str(), "alice");
        }
        other => panic!("bob: expected the answer, got {}", peers::brief(&other)),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_spent_ticket_fails_to_resume_and_the_session_authenticates_afresh() {
    let server = TestServer::start(resume_config(GRACE)).await;
    let relay = Relay::start(server.signaling).await;
    let (mut alice, fetched) = alice_session(&server, &relay, quick_backoff(50)).await;
    let mut bob = server.join("bob", ROOM).await.client;
    assert!(matches!(
        next_event(&mut alice).await,
        SessionEvent::Message(_)
    ));
    let ticket = alice
        .ticket()
        .cloned()
        .expect("auth-ok carries a resume ticket");

    // Cut alice off and keep her off while someone else spends her ticket.
    relay.refuse(true);
    relay.cut();
    let reconnecting = tokio::spawn(async move {
        let event = tokio::time::timeout(WAIT * 2, alice.next_event()).await;
        (alice, event)
    });
    let url = server.ws_url();
    let (mut thief, _) = tokio::time::timeout(WAIT, Client::resume(&url, &ticket))
        .await
        .expect("resume answered in time")
        .expect("the ticket resumes once");
    thief.set_timeout(WAIT);
    relay.refuse(false);

    let (mut alice, event) = reconnecting.await.expect("the session task");
    match event.expect("an event in time") {
        Ok(SessionEvent::Reauthenticated(m)) => assert_eq!(m.user_id.as_str(), "alice"),
        other => panic!(
            "alice: expected reauthenticated, got {}",
            peers::brief(&other)
        ),
    }
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        2,
        "a second token for the fresh auth"
    );
    peers::expect_close(&mut thief, "the resumed connection", 4004).await;
    expect_alice_left_and_joined(&mut bob, LeaveReason::Replaced).await;

    bob.signal(SignalKind::Offer, "alice", json!({"sdp": "o"}))
        .await
        .expect("sent");
    expect_signal(&mut alice, SignalKind::Offer, "bob").await;
    server.stop().await;
}

/// Kept off past the grace, the session finds the server forgot it: the resume fails and a
/// fresh `auth` brings it back after the others saw it time out.
#[tokio::test]
async fn a_session_kept_off_past_the_grace_authenticates_afresh() {
    let server = TestServer::start(resume_config(Duration::from_millis(300))).await;
    let relay = Relay::start(server.signaling).await;
    let (mut alice, fetched) = alice_session(&server, &relay, quick_backoff(100)).await;
    let mut bob = server.join("bob", ROOM).await.client;
    assert!(matches!(
        next_event(&mut alice).await,
        SessionEvent::Message(_)
    ));
    assert!(alice.ticket().is_some(), "auth-ok carries a resume ticket");

    relay.refuse(true);
    relay.cut();
    let reconnecting = tokio::spawn(async move {
        let event = tokio::time::timeout(WAIT * 2, alice.next_event()).await;
        (alice, event)
    });
    peers::expect_peer_left(&mut bob, "bob", "alice", LeaveReason::Timeout).await;
    relay.refuse(false);

    let (mut alice, event) = reconnecting.await.expect("the session task");
    match event.expect("an event in time") {
        Ok(SessionEvent::Reauthenticated(m)) => assert_eq!(m.user_id.as_str(), "alice"),
        other => panic!(
            "alice: expected reauthenticated, got {}",
            peers::brief(&other)
        ),
    }
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        2,
        "a second token for the fresh auth"
    );
    assert!(
        alice.ticket().is_some(),
        "the fresh auth-ok carries a new ticket"
    );
    expect_alice_back(&mut bob).await;
    bob.signal(SignalKind::Offer, "alice", json!({"sdp": "o"}))
        .await
        .expect("sent");
    expect_signal(&mut alice, SignalKind::Offer, "bob").await;
    server.stop().await;
}

#[tokio::test]
async fn reconnecting_gives_up_after_its_attempts() {
    let server = TestServer::start(fast_config()).await;
    let relay = Relay::start(server.signaling).await;
    let (mut alice, _) = alice_session(&server, &relay, quick_backoff(3)).await;
    relay.refuse(true);
    relay.cut();
    let err = tokio::time::timeout(WAIT, alice.next_event())
        .await
        .expect("gave up in time")
        .expect_err("no connection can be made");
    assert!(
        matches!(err, ClientError::GaveUp { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(!alice.is_connected());
    let after = alice.next_event().await.expect_err("the session is over");
    assert!(matches!(after, ClientError::NotConnected), "{after:?}");
    server.stop().await;
}

/// A second login of the same user closes the session's connection with 4004: the session
/// ends instead of fighting back.
#[tokio::test]
async fn a_replaced_session_ends_without_reconnecting() {
    let server = TestServer::start(fast_config()).await;
    let relay = Relay::start(server.signaling).await;
    let (mut alice, fetched) = alice_session(&server, &relay, quick_backoff(3)).await;
    let _other_tab = server.join("alice", ROOM).await;
    match next_event(&mut alice).await {
        SessionEvent::Ended(Some((code, _))) => assert_eq!(code, 4004),
        other => panic!(
            "alice: expected the session to end, got {}",
            peers::brief(&other)
        ),
    }
    assert_eq!(fetched.load(Ordering::SeqCst), 1, "no reconnect");
    assert!(matches!(
        alice.next_event().await,
        Err(ClientError::NotConnected)
    ));
    server.stop().await;
}

/// The app's backend talks to the session through the server API: its messages arrive as
/// `server-message`, and a kick (4005) ends the session without a reconnect.
#[tokio::test]
async fn server_messages_arrive_and_a_kick_ends_the_session_without_reconnecting() {
    let mut config = resume_config(GRACE);
    config.admin_key = Some(ADMIN_KEY.to_owned());
    let server = TestServer::start(config).await;
    let relay = Relay::start(server.signaling).await;
    let (mut alice, fetched) =
        alice_session_with_key(&server, &relay, quick_backoff(3), Some(ADMIN_KEY)).await;
    let path = format!("/api/rooms/{ROOM}/peers/alice/message");
    let sent = peers::post(
        server.http,
        &path,
        &json!({"data": {"n": 1}}),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(sent.status, 200);
    match next_event(&mut alice).await {
        SessionEvent::Message(ServerMessage::ServerMessage { room_id, data }) => {
            assert_eq!(room_id.as_str(), ROOM);
            assert_eq!(data.get(), r#"{"n":1}"#);
        }
        other => panic!(
            "alice: expected server-message, got {}",
            peers::brief(&other)
        ),
    }
    let path = format!("/api/rooms/{ROOM}/peers/alice/kick");
    let kicked = peers::post(server.http, &path, &json!({}), Some(ADMIN_KEY)).await;
    assert_eq!(kicked.status, 200);
    loop {
        match next_event(&mut alice).await {
            SessionEvent::Message(ServerMessage::Error { .. }) => continue,
            SessionEvent::Ended(Some((code, _))) => {
                assert_eq!(code, 4005);
                break;
            }
            other => panic!(
                "alice: expected the session to end, got {}",
                peers::brief(&other)
            ),
        }
    }
    assert_eq!(fetched.load(Ordering::SeqCst), 1, "no reconnect");
    assert!(matches!(
        alice.next_event().await,
        Err(ClientError::NotConnected)
    ));
    server.stop().await;
}
