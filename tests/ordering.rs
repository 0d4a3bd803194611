//! Every connection sees events in the order the core produced them.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use octate_client::Client;
use octate_protocol::ServerMessage;

/// Peers join one room concurrently from many tasks on a multi-threaded runtime.
/// Each must read its own `auth-ok` first, and only then `peer-joined` for peers that
/// were not already listed in that `auth-ok` (never twice, never before).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_never_see_peer_joined_before_their_auth_ok() {
    const PEERS: usize = 40;
    let server = common::TestServer::start_tweaked(|c| c.core.max_peers_per_room = 64).await;
    let mut tokens = Vec::new();
    for n in 0..PEERS {
        tokens.push(server.token(&format!("u{n}"), "busy-room").await);
    }
    let url = server.ws_url();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(PEERS));
    let mut tasks = Vec::new();
    for (n, token) in tokens.into_iter().enumerate() {
        let (url, barrier) = (url.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await.unwrap();
            barrier.wait().await;
            client
                .send(&octate_protocol::ClientMessage::Auth {
                    token,
                    user_name: None,
                    room_id: None,
                    user_id: None,
                })
                .await
                .unwrap();
            let first = client.recv().await.unwrap();
            let ServerMessage::AuthOk { room, .. } = first else {
                panic!("u{n}: first message was {first:?}, not auth-ok");
            };
            let mut known: HashSet<String> =
                room.peers.iter().map(|p| p.user_id.to_string()).collect();
            // Everyone who joins after us must be announced exactly once.
            while known.len() < PEERS {
                match client.recv().await.unwrap() {
                    ServerMessage::PeerJoined { peer, .. } => {
                        assert!(
                            known.insert(peer.user_id.to_string()),
                            "u{n}: {} announced twice or after auth-ok listed it",
                            peer.user_id
                        );
                    }
                    other => panic!("u{n}: unexpected {other:?}"),
                }
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    drop(clients);
    server.stop().await;
}
