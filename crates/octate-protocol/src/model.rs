//! The seed's data models: rooms, peers, tokens and peer-to-peer operations.

use serde::{Deserialize, Serialize};

use crate::{RoomId, UserId};

/// Milliseconds since the Unix epoch, the unit of every timestamp on the wire.
pub type UnixMillis = u64;

/// Lifecycle state of a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RoomState {
    /// Peers are present and something happened recently.
    Active,
    /// Nothing happened for the configured idle time.
    Idle,
    /// The room was closed; it is about to disappear.
    Closed,
}

/// A collaboration session as the server keeps it in memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomMetadata {
    /// Unique identifier.
    pub room_id: RoomId,
    /// Display name.
    pub room_name: String,
    /// The peer that currently hosts the room.
    pub host_id: UserId,
    /// Display name of the host.
    pub host_name: String,
    /// File the session is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// Initial content; the server never stores document content, so it is always absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Version number set by the creator, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// When the room was created.
    pub created_at: UnixMillis,
    /// When anything last happened in the room.
    pub last_activity: UnixMillis,
    /// Lifecycle state.
    pub state: RoomState,
    /// Connected peers, longest-connected first.
    pub peers: Vec<PeerInfo>,
    /// Number of connected peers; always `peers.len()`.
    pub peer_count: usize,
}

/// A user inside a room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    /// User identifier, from the verified token.
    pub user_id: UserId,
    /// Display name.
    pub user_name: String,
    /// Whether this peer hosts the room.
    pub is_host: bool,
    /// When the peer joined.
    pub connected_at: UnixMillis,
    /// When the peer was last heard from.
    pub last_heartbeat: UnixMillis,
}

/// The content of a signed token, as the seed describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthToken {
    /// User the token was issued to.
    pub user_id: String,
    /// Room the token authorizes.
    pub room_id: String,
    /// When the token was issued.
    pub issued_at: UnixMillis,
    /// When the token stops being valid.
    pub expires_at: UnixMillis,
    /// Unique token id, used for revocation (absent from the seed's shape: empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_id: String,
    /// Id of the key that signed the token (absent from the seed's shape: empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    /// URL-safe base64 of the HMAC-SHA256 signature.
    pub signature: String,
}

/// Kind of edit in a [`RemoteOperation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationType {
    /// Text inserted at `position`.
    Insert,
    /// Text deleted at `position`.
    Delete,
    /// Text replaced at `position`.
    Replace,
}

/// An edit sent peer to peer over a data channel; the server never sees one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteOperation {
    /// Unique operation id.
    pub id: String,
    /// Peer that made the change.
    pub peer_id: String,
    /// When it happened.
    pub timestamp: UnixMillis,
    /// Kind of change.
    #[serde(rename = "type")]
    pub kind: OperationType,
    /// Where in the document.
    pub position: u64,
    /// New content, for inserts and replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Operation version.
    pub version: u64,
}
