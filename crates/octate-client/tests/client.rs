//! One connection against a real in-process server: `auth`, a signal each way, the ICE
//! servers of `auth-ok` and of `POST /api/turn/credentials`, refusals as typed errors, and
//! `resume` with a fresh and a spent ticket.

use std::time::Duration;

use octate_client::{Client, ClientError, Membership, turn_credentials};
use octate_protocol::{ErrorCode, ServerMessage, SignalKind};
use octate_test::peers::{self, WAIT};
use octate_test::server::{TestServer, resume_config};
use octate_transport::{IceConfig, TurnSecret};
use serde_json::{Value, json};

const ROOM: &str = "room-1";

/// Authenticates `user` in [`ROOM`] with a token from the server's HTTP API.
async fn authenticate(server: &TestServer, user: &str) -> (Client, Membership) {
    let token = server.token(user, ROOM).await;
    let url = server.ws_url();
    let auth = Client::authenticate(&url, &token, Some(user));
    let (mut client, membership) = tokio::time::timeout(WAIT, auth)
        .await
        .expect("auth answered in time")
        .unwrap_or_else(|e| panic!("{user}: auth: {e}"));
    client.set_timeout(WAIT);
    (client, membership)
}

/// The next message, which must be a signal of `kind` from `from`; returns its `data`.
async fn expect_signal(client: &mut Client, who: &str, kind: SignalKind, from: &str) -> Value {
    match peers::next(client, who).await {
        ServerMessage::Signal {
            kind: got,
            from: sender,
            data,
            ..
        } if got == kind && sender.as_str() == from => {
            serde_json::from_str(data.get()).expect("signal data is JSON")
        }
        other => panic!(
            "{who}: expected {kind:?} from {from}, got {}",
            peers::brief(&other)
        ),
    }
}

#[tokio::test]
async fn an_offer_and_an_answer_cross_between_two_clients() {
    let server = TestServer::start(octate_test::server::fast_config()).await;
    let (mut alice, joined) = authenticate(&server, "alice").await;
    assert_eq!(joined.user_id.as_str(), "alice");
    assert_eq!(joined.room.room_id.as_str(), ROOM);
    let (mut bob, joined) = authenticate(&server, "bob").await;
    assert_eq!(joined.room.peers.len(), 2, "bob's auth-ok lists both peers");
    peers::expect_peer_joined(&mut alice, "alice", "bob").await;

    let offer = json!({"type": "offer", "sdp": "v=0\r\n"});
    alice
        .signal(SignalKind::Offer, "bob", offer.clone())
        .await
        .expect("offer sent");
    let data = expect_signal(&mut bob, "bob", SignalKind::Offer, "alice").await;
    assert_eq!(data, json!({"peer": "bob", "offer": offer}));

    let answer = json!({"type": "answer", "sdp": "v=0\r\n"});
    bob.signal(SignalKind::Answer, "alice", answer.clone())
        .await
        .expect("answer sent");
    let data = expect_signal(&mut alice, "alice", SignalKind::Answer, "bob").await;
    assert_eq!(data, json!({"peer": "alice", "answer": answer}));
    server.stop().await;
}

#[tokio::test]
async fn a_bad_token_is_a_typed_refusal() {
    let server = TestServer::start(octate_test::server::fast_config()).await;
    let url = server.ws_url();
    let auth = Client::authenticate(&url, "not-a-token", None);
    let err = tokio::time::timeout(WAIT, auth)
        .await
        .expect("auth answered in time")
        .expect_err("a bad token is refused");
    assert!(
        matches!(
            err,
            ClientError::Refused {
                code: ErrorCode::TokenMalformed,
                ..
            }
        ),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn ice_servers_come_with_auth_ok_and_from_the_turn_endpoint() {
    let uris = ["stun:stun.example.test:3478", "turn:turn.example.test:3478"];
    let secret = TurnSecret::new(b"octate-client-turn-secret-0123").expect("secret");
    let ice = IceConfig::new(uris, Some(secret), Duration::from_secs(600)).expect("ice config");
    let server = TestServer::start_tweaked(|config| config.ice = Some(ice)).await;
    let token = server.token("alice", ROOM).await;
    let url = server.ws_url();
    let auth = Client::authenticate(&url, &token, None);
    let (client, _) = tokio::time::timeout(WAIT, auth)
        .await
        .expect("in time")
        .expect("auth");

    let from_auth = client.ice_servers().expect("auth-ok carries iceServers");
    let turn = from_auth
        .iter()
        .find(|s| s.urls.iter().any(|u| u.starts_with("turn:")))
        .expect("a TURN entry");
    assert!(
        turn.username.is_some() && turn.credential.is_some(),
        "{turn:?}"
    );

    let fresh = tokio::time::timeout(WAIT, turn_credentials(server.http, &token))
        .await
        .expect("in time")
        .expect("fresh credentials");
    assert_eq!(fresh.ttl, 600);
    let urls = |servers: &[octate_protocol::IceServer]| -> Vec<Vec<String>> {
        servers.iter().map(|s| s.urls.clone()).collect()
    };
    assert_eq!(urls(&fresh.ice_servers), urls(from_auth));

    let refused = tokio::time::timeout(WAIT, turn_credentials(server.http, "not-a-token"))
        .await
        .expect("in time")
        .expect_err("a bad token gets no credentials");
    assert!(
        matches!(&refused, ClientError::Http(m) if m.contains("401")),
        "{refused:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_ticket_resumes_once_and_a_spent_one_fails() {
    let server = TestServer::start(resume_config(Duration::from_secs(10))).await;
    let (mut first, _) = authenticate(&server, "alice").await;
    let (mut bob, _) = authenticate(&server, "bob").await;
    peers::expect_peer_joined(&mut first, "alice", "bob").await;
    let ticket = first
        .ticket()
        .cloned()
        .expect("auth-ok carries a resume ticket");
    let url = server.ws_url();

    let resume = Client::resume(&url, &ticket);
    let (mut second, resumed) = tokio::time::timeout(WAIT, resume)
        .await
        .expect("resume answered in time")
        .expect("a fresh ticket resumes");
    second.set_timeout(WAIT);
    assert_eq!(resumed.user_id.as_str(), "alice");
    assert_eq!(resumed.room.peers.len(), 2, "bob is still there");
    let rotated = second.ticket().expect("resumed carries a new ticket");
    assert_ne!(rotated, &ticket, "every resumed rotates the ticket");
    peers::expect_close(&mut first, "alice's first connection", 4004).await;
    peers::expect_silence(&mut bob, "bob").await;

    let again = Client::resume(&url, &ticket);
    let err = tokio::time::timeout(WAIT, again)
        .await
        .expect("resume answered in time")
        .expect_err("a spent ticket does not resume");
    assert!(matches!(err, ClientError::ResumeFailed(_)), "{err:?}");

    bob.signal(SignalKind::Offer, "alice", json!({"sdp": "x"}))
        .await
        .expect("sent");
    expect_signal(&mut second, "alice", SignalKind::Offer, "bob").await;
    server.stop().await;
}
