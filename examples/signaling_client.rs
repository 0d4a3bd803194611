//! Two Rust peers signal each other through a running Octate server.
//!
//! Start a server (`cargo run -p octate-server`), then:
//! `cargo run --example signaling_client -- http://127.0.0.1:3000 ws://127.0.0.1:3001/`

use octate_client::{Client, fetch_token};
use octate_protocol::{ServerMessage, SignalKind};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let http = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:3000".into());
    let ws = args.next().unwrap_or_else(|| "ws://127.0.0.1:3001/".into());
    let http_addr = http
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()?;
    let admin_key = std::env::var("OCTATE_ADMIN_KEY").ok();

    // 1. Tokens, as an app backend would mint them.
    let room = format!("example-{}", std::process::id());
    let token_a = fetch_token(http_addr, "alice", &room, admin_key.as_deref()).await?;
    let token_b = fetch_token(http_addr, "bob", &room, admin_key.as_deref()).await?;

    // 2. Connect and authenticate; the first to arrive creates the room and hosts it.
    let (mut alice, welcome) = Client::join(&ws, &token_a, Some("Alice")).await?;
    println!("alice: {}", welcome.kind());
    let (mut bob, _) = Client::join(&ws, &token_b, Some("Bob")).await?;
    println!("alice: {:?}", alice.recv().await?.kind());

    // 3. Offer, answer, and a candidate, each relayed only to its named peer.
    alice
        .signal(
            SignalKind::Offer,
            "bob",
            json!({"type": "offer", "sdp": "v=0\r\n..."}),
        )
        .await?;
    if let ServerMessage::Signal { from, data, .. } = bob.recv().await? {
        println!("bob got an offer from {from}: {}", data.get());
    }
    bob.signal(
        SignalKind::Answer,
        "alice",
        json!({"type": "answer", "sdp": "v=0\r\n..."}),
    )
    .await?;
    if let ServerMessage::Signal { from, .. } = alice.recv().await? {
        println!("alice got an answer from {from}");
    }
    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0"});
    bob.signal(SignalKind::IceCandidate, "alice", candidate)
        .await?;
    println!("alice: {}", alice.recv().await?.kind());

    // 4. Leave: the other side hears `peer-left`.
    bob.close().await?;
    println!("alice: {}", alice.recv().await?.kind());
    alice.close().await?;
    Ok(())
}
