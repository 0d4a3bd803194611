//! Request and response bodies of the HTTP API.

use serde::{Deserialize, Serialize};

use crate::{ErrorBody, ErrorCode, IceServer, RoomId, UnixMillis, UserId};

/// `POST /api/auth/token` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// User the token is for.
    pub user_id: UserId,
    /// Room the token authorizes.
    pub room_id: RoomId,
    /// Lifetime in seconds; the server's default (one hour) when absent, capped by its maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// `POST /api/auth/token` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// The signed token.
    pub token: String,
    /// Unique token id, for revocation.
    pub token_id: String,
    /// When the token was issued.
    pub issued_at: UnixMillis,
    /// When the token expires.
    pub expires_at: UnixMillis,
}

/// `POST /api/turn/credentials` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnCredentialsResponse {
    /// STUN/TURN servers in the browser's `RTCIceServer` shape, with a fresh TURN credential.
    pub ice_servers: Vec<IceServer>,
    /// Seconds the TURN credential stays valid.
    pub ttl: u64,
}

/// `POST /api/auth/validate` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateRequest {
    /// User the token should belong to.
    pub user_id: String,
    /// Room the token should authorize.
    pub room_id: String,
    /// The token.
    pub token: String,
}

/// `POST /api/auth/validate` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateResponse {
    /// Whether the token is valid for that user and room now.
    pub valid: bool,
    /// Why not, as an error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
}

/// `POST /api/auth/revoke` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeRequest {
    /// The token to revoke.
    pub token: String,
}

/// `POST /api/rooms` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRoomRequest {
    /// Identifier of the new room.
    pub room_id: RoomId,
    /// Display name.
    pub room_name: String,
    /// The user meant to host it.
    pub host_id: UserId,
    /// Display name of the host.
    pub host_name: String,
    /// File the room is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// Version number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `DELETE /api/rooms/:roomId` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessResponse {
    /// Always true.
    pub success: bool,
}

/// Heap figures in MB, as the seed reports them, plus exact bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryReport {
    /// Bytes allocated by the server, in MB.
    pub heap_used: f64,
    /// Bytes the allocator holds from the OS, in MB.
    pub heap_total: f64,
    /// Bytes allocated, exactly.
    pub heap_used_bytes: u64,
    /// Resident set size of the process in bytes, when the OS tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// `heapUsed` as a percentage of the critical threshold.
    pub heap_percent: f64,
    /// The memory policy's current level: `normal`, `warning` or `critical`.
    pub level: String,
}

/// `GET /health` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok`, or `shutting-down`.
    pub status: String,
    /// Now, in Unix milliseconds.
    pub timestamp: UnixMillis,
    /// Heap figures.
    pub memory: MemoryReport,
}

/// The `server` part of `GET /stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStats {
    /// Seconds since start.
    pub uptime: u64,
    /// Rooms in memory.
    pub active_rooms: usize,
    /// Open WebSocket connections, authenticated or not.
    pub total_connections: usize,
    /// Peers in rooms.
    pub peers: usize,
}

/// The `operations` part of `GET /stats`: counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStats {
    /// Signals and updates relayed to a peer.
    pub messages_relayed: u64,
    /// Rooms created.
    pub rooms_created: u64,
    /// Rooms closed, for any reason.
    pub rooms_closed: u64,
    /// Peers removed for silence.
    pub peers_timed_out: u64,
    /// Authentication failures.
    pub auth_failures: u64,
    /// Errors sent to clients.
    pub errors_sent: u64,
    /// Cleanups run by memory pressure.
    pub memory_cleanups: u64,
    /// Connections closed for not reading.
    pub slow_consumers_closed: u64,
}

/// `GET /stats` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsResponse {
    /// Process-wide figures.
    pub server: ServerStats,
    /// Heap figures.
    pub memory: MemoryReport,
    /// Counters since start.
    pub operations: OperationStats,
    /// The cluster, when this server is one node of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReport>,
}

/// The cluster section of `/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// This node.
    pub node_id: String,
    /// Nodes with a current heartbeat, this one included.
    pub nodes_alive: u64,
    /// Whether the link to the cluster store (Redis) is up.
    pub connected: bool,
    /// Whether joins are refused until the link recovers.
    pub degraded: bool,
    /// Messages received from other nodes since start.
    pub messages_in: u64,
    /// Messages sent to other nodes since start.
    pub messages_out: u64,
    /// Gaps found in other nodes' message sequences.
    pub link_gaps: u64,
    /// Rooms read again in full after a gap or an outage.
    pub resyncs: u64,
    /// Undecodable messages from the store, dropped.
    pub bad_messages: u64,
    /// Messages for other nodes dropped during an outage.
    pub dropped: u64,
}

/// `GET /info` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfoResponse {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Signaling protocol version.
    pub protocol_version: u32,
    /// This node's id, when the server is one node of a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

/// Every HTTP error body: `{ "error": { "code", "message" } }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    /// The error.
    pub error: ErrorBody,
}

impl HttpError {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }
}

/// `POST /api/rooms/:roomId/peers/:userId/kick` request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KickRequest {
    /// Why, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Also revoke the token the peer's session runs on.
    #[serde(default)]
    pub revoke_token: bool,
}

/// `POST /api/rooms/:roomId/peers/:userId/kick` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KickResponse {
    /// The peer was removed.
    pub success: bool,
    /// Its token was revoked (asked for, and the token has an id).
    pub token_revoked: bool,
}

/// `POST /api/rooms/:roomId/broadcast` and `.../peers/:userId/message` request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerMessageRequest {
    /// The JSON object every recipient gets as `data` of `server-message`.
    pub data: Box<serde_json::value::RawValue>,
}

/// `POST /api/rooms/:roomId/broadcast` and `.../peers/:userId/message` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerMessageResponse {
    /// How many connections the message was sent to.
    pub delivered: usize,
}

/// `GET /api/rooms` response: one page of rooms, in the order of their ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomListResponse {
    /// The rooms of this page, each with its peers and peer count.
    pub rooms: Vec<crate::RoomMetadata>,
    /// The `cursor` of the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<RoomId>,
}
