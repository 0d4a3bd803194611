//! Assertions on what a signaling client receives, each bounded in time.
//!
//! Every helper panics with the peer's name and what arrived instead, so a failing
//! end-to-end test says which step went wrong.

use std::net::SocketAddr;
use std::time::Duration;

use octate_client::{Client, ClientError, HttpResponse};
use octate_protocol::{
    ClientMessage, ErrorCode, LeaveReason, PeerInfo, RoomCloseReason, RoomMetadata, ServerMessage,
};
use serde_json::Value;

/// `value`'s Debug form, cut to a readable length for panic messages.
pub fn brief<T: std::fmt::Debug>(value: &T) -> String {
    let text = format!("{value:?}");
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
        None => text,
    }
}

/// Longest wait for a message that must arrive.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long "nothing arrives" is observed.
pub const QUIET: Duration = Duration::from_millis(300);

/// A peer that authenticated: its client, its `auth-ok` room, and the raw `data.peers` ids.
pub struct Joined {
    /// The authenticated client.
    pub client: Client,
    /// `data.room` of the `auth-ok`.
    pub room: RoomMetadata,
    /// `data.peers` of the `auth-ok`: the other peers, in the server's order.
    pub others: Vec<String>,
}

/// Opens a WebSocket to `url`, bounded in time.
pub async fn connect(url: &str) -> Client {
    let mut client = tokio::time::timeout(WAIT, Client::connect(url))
        .await
        .unwrap_or_else(|_| panic!("no WebSocket upgrade from {url} in {WAIT:?}"))
        .unwrap_or_else(|e| panic!("WebSocket to {url}: {e}"));
    client.set_timeout(WAIT);
    client
}

/// Connects to `url`, sends `auth` with `token`, and returns the first server message's raw text.
pub async fn auth_raw(url: &str, token: &str, user_name: Option<&str>) -> (Client, String) {
    let mut client = connect(url).await;
    let auth = ClientMessage::Auth {
        token: token.to_owned(),
        user_name: user_name.map(str::to_owned),
        room_id: None,
        user_id: None,
    };
    client.send(&auth).await.expect("auth is sent");
    let text = client.recv_text().await.expect("an answer to auth");
    (client, text)
}

/// Authenticates and asserts the answer is `auth-ok` for `user`.
pub async fn join(url: &str, token: &str, user: &str, user_name: Option<&str>) -> Joined {
    let (client, text) = auth_raw(url, token, user_name).await;
    joined_from(client, &text, user)
}

/// The peer that got `text` in answer to its `auth`, which must be `auth-ok` for `user`.
pub fn joined_from(client: Client, text: &str, user: &str) -> Joined {
    let msg = ServerMessage::decode(text.as_bytes()).expect("auth answer decodes");
    let ServerMessage::AuthOk { user_id, room, .. } = msg else {
        panic!("{user}: expected auth-ok, got {text}");
    };
    assert_eq!(
        user_id.as_str(),
        user,
        "{user}: auth-ok names the token's user"
    );
    let raw: Value = serde_json::from_str(text).expect("auth-ok is JSON");
    let others = raw["data"]["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("{user}: auth-ok without data.peers: {text}"))
        .iter()
        .map(|p| p["userId"].as_str().expect("peer userId").to_owned())
        .collect();
    Joined {
        client,
        room,
        others,
    }
}

/// The next message, or a panic naming `who` and what happened instead.
pub async fn next(client: &mut Client, who: &str) -> ServerMessage {
    match client.recv_within(WAIT).await {
        Ok(msg) => msg,
        Err(err) => panic!("{who}: expected a message, got {err}"),
    }
}

/// The next message's exact text.
pub async fn next_text(client: &mut Client, who: &str) -> String {
    match tokio::time::timeout(WAIT, client.recv_text()).await {
        Ok(Ok(text)) => text,
        Ok(Err(err)) => panic!("{who}: expected a message, got {err}"),
        Err(_) => panic!("{who}: expected a message, got nothing in {WAIT:?}"),
    }
}

/// Asserts the next message is `peer-joined` for `user`; returns the peer.
pub async fn expect_peer_joined(client: &mut Client, who: &str, user: &str) -> PeerInfo {
    match next(client, who).await {
        ServerMessage::PeerJoined { peer, .. } if peer.user_id.as_str() == user => peer,
        other => panic!("{who}: expected peer-joined {user}, got {}", brief(&other)),
    }
}

/// Asserts the next message is `peer-left` for `user` with `reason`.
pub async fn expect_peer_left(client: &mut Client, who: &str, user: &str, reason: LeaveReason) {
    match next(client, who).await {
        ServerMessage::PeerLeft {
            peer, reason: got, ..
        } if peer.user_id.as_str() == user && got == reason => {}
        other => panic!(
            "{who}: expected peer-left {user} ({reason:?}), got {}",
            brief(&other)
        ),
    }
}

/// Asserts the next message is `host-changed` naming `host`.
pub async fn expect_host_changed(client: &mut Client, who: &str, host: &str) {
    match next(client, who).await {
        ServerMessage::HostChanged { host_id, .. } if host_id.as_str() == host => {}
        other => panic!(
            "{who}: expected host-changed to {host}, got {}",
            brief(&other)
        ),
    }
}

/// Asserts the next message is `room-closed` with `reason`.
pub async fn expect_room_closed(client: &mut Client, who: &str, reason: RoomCloseReason) {
    match next(client, who).await {
        ServerMessage::RoomClosed { reason: got, .. } if got == reason => {}
        other => panic!(
            "{who}: expected room-closed ({reason:?}), got {}",
            brief(&other)
        ),
    }
}

/// Asserts the next message is an `error` with `code`.
pub async fn expect_error(client: &mut Client, who: &str, code: ErrorCode) {
    match next(client, who).await {
        ServerMessage::Error { code: got, .. } if got == code => {}
        other => panic!("{who}: expected error {code}, got {}", brief(&other)),
    }
}

/// Reads until the connection ends; returns the close code, `None` for a drop without
/// a close frame. Panics if a message arrives first or nothing happens in time.
pub async fn expect_end(client: &mut Client, who: &str) -> Option<u16> {
    match client.recv_within(WAIT).await {
        Err(ClientError::Closed(frame)) => frame.map(|(code, _)| code),
        Err(ClientError::WebSocket(_) | ClientError::Io(_)) => None,
        Err(ClientError::Timeout) => {
            panic!("{who}: expected the connection to end, still open after {WAIT:?}")
        }
        Err(err) => panic!("{who}: expected the connection to end, got {err}"),
        Ok(msg) => panic!("{who}: expected the connection to end, got {}", brief(&msg)),
    }
}

/// Asserts the server closes the connection with `code` (nothing else arrives first).
pub async fn expect_close(client: &mut Client, who: &str, code: u16) {
    let got = expect_end(client, who).await;
    assert_eq!(got, Some(code), "{who}: close code");
}

/// Asserts nothing arrives for [`QUIET`] (heartbeats excepted) and the connection stays open.
pub async fn expect_silence(client: &mut Client, who: &str) {
    match client.recv_within(QUIET).await {
        Err(ClientError::Timeout) => {}
        Err(err) => panic!("{who}: expected silence, the connection failed: {err}"),
        Ok(msg) => panic!("{who}: expected silence, got {}", brief(&msg)),
    }
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, "GET", path, &[], None).await
}

/// Any HTTP request, bounded in time.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    let call = octate_client::http_request(addr, method, path, headers, body);
    match tokio::time::timeout(WAIT, call).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(err)) => panic!("{method} {path}: {err}"),
        Err(_) => panic!("{method} {path}: no response in {WAIT:?}"),
    }
}

/// `POST path` with a JSON body and an optional admin key.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    bearer: Option<&str>,
) -> HttpResponse {
    let call = octate_client::post_json(addr, path, body, bearer);
    match tokio::time::timeout(WAIT, call).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(err)) => panic!("POST {path}: {err}"),
        Err(_) => panic!("POST {path}: no response in {WAIT:?}"),
    }
}

/// The body as JSON, with the status and body in the panic message when it is not.
pub fn body(resp: &HttpResponse) -> Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
        panic!(
            "status {}: body is not JSON ({e}): {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        )
    })
}

/// Asserts an HTTP error response: status and `{"error":{"code":...,"message":...}}`.
pub fn assert_http_error(resp: &HttpResponse, status: u16, code: &str) {
    let json = body(resp);
    assert_eq!(resp.status, status, "status; body {json}");
    assert_eq!(json["error"]["code"], code, "error code; body {json}");
    assert!(
        json["error"]["message"].is_string(),
        "error message; body {json}"
    );
}

/// The current `/stats` body.
pub async fn stats(addr: SocketAddr) -> Value {
    let resp = get(addr, "/stats").await;
    assert_eq!(resp.status, 200);
    body(&resp)
}
