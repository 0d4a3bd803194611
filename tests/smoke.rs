//! A two-peer session over real sockets: the shortest path through the server.

#![allow(clippy::unwrap_used)]

mod common;

use octate_client::Client;
use octate_protocol::{ServerMessage, SignalKind};
use serde_json::json;

#[tokio::test]
async fn two_peers_exchange_an_offer() {
    let server = common::TestServer::start(common::fast_config()).await;
    let ta = server.token("alice", "room-1").await;
    let tb = server.token("bob", "room-1").await;
    let (mut a, ok_a) = Client::join(&server.ws_url(), &ta, Some("Alice"))
        .await
        .unwrap();
    assert!(matches!(ok_a, ServerMessage::AuthOk { .. }), "{ok_a:?}");
    let (mut b, ok_b) = Client::join(&server.ws_url(), &tb, Some("Bob"))
        .await
        .unwrap();
    match ok_b {
        ServerMessage::AuthOk { room, .. } => assert_eq!(room.peer_count, 2),
        other => panic!("{other:?}"),
    }
    match a.recv().await.unwrap() {
        ServerMessage::PeerJoined { peer, .. } => assert_eq!(peer.user_id.as_str(), "bob"),
        other => panic!("{other:?}"),
    }
    a.signal(
        SignalKind::Offer,
        "bob",
        json!({"type": "offer", "sdp": "v=0"}),
    )
    .await
    .unwrap();
    match b.recv().await.unwrap() {
        ServerMessage::Signal { from, data, .. } => {
            assert_eq!(from.as_str(), "alice");
            assert!(data.get().contains("v=0"));
        }
        other => panic!("{other:?}"),
    }
    b.close().await.unwrap();
    match a.recv().await.unwrap() {
        ServerMessage::PeerLeft { peer, .. } => assert_eq!(peer.user_id.as_str(), "bob"),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}
