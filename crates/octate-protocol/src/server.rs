//! Messages the server sends over the signaling WebSocket.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::client::{SignalKind, UpdateKind};
use crate::envelope::{Envelope, OutEnvelope};
use crate::error::truncate;
use crate::{ErrorCode, PeerInfo, ProtocolError, RawJson, RoomId, RoomMetadata, UserId};

/// Why a peer left a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LeaveReason {
    /// The peer sent `leave-room`.
    Left,
    /// The peer's connection closed or dropped.
    Disconnected,
    /// The peer was silent longer than the heartbeat timeout.
    Timeout,
    /// The same user joined again from another connection.
    Replaced,
    /// The server dropped the idle peer under memory pressure.
    MemoryPressure,
    /// The cluster node holding the peer's connection died.
    NodeDown,
    /// An administrator removed the peer through the server API.
    Kicked,
}

/// Why a room was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RoomCloseReason {
    /// Deleted through the HTTP API.
    Deleted,
    /// Nothing happened for the configured inactivity time.
    Inactive,
    /// Closed while idle to relieve memory pressure.
    MemoryPressure,
    /// The last peer left (or nobody ever joined).
    Empty,
    /// A single server stopped and its rooms with it. Only webhooks report it: peers are
    /// closed with 1001 instead of being sent `room-closed`.
    Shutdown,
}

/// A message from the server.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage {
    /// `auth-ok`: the token verified and the peer is in its room.
    AuthOk {
        /// The authenticated user, from the token.
        user_id: UserId,
        /// The room with every peer, this one included.
        room: RoomMetadata,
        /// STUN/TURN servers for the peer's `RTCPeerConnection`, when the server hands them out.
        ice_servers: Option<Vec<IceServer>>,
        /// What a new connection sends to take over this session, when resume is on.
        resume: Option<ResumeTicket>,
    },
    /// `room-joined`: answer to `create-room` / `join-room` on an authenticated connection.
    RoomJoined {
        /// The user who joined, from the token.
        user_id: UserId,
        /// The room with every peer, this one included.
        room: RoomMetadata,
        /// STUN/TURN servers for the peer's `RTCPeerConnection`, when the server hands them out.
        ice_servers: Option<Vec<IceServer>>,
        /// What a new connection sends to take over this session, when resume is on.
        resume: Option<ResumeTicket>,
    },
    /// `resumed`: answer to `resume`; the connection took over the session, and the
    /// others were told nothing.
    Resumed {
        /// The session's user.
        user_id: UserId,
        /// The room with every peer, this one included.
        room: RoomMetadata,
        /// STUN/TURN servers for the peer's `RTCPeerConnection`, when the server hands them out.
        ice_servers: Option<Vec<IceServer>>,
        /// The session's new ticket: the one just used is spent.
        resume: Option<ResumeTicket>,
    },
    /// `room-left`: answer to `leave-room`.
    RoomLeft {
        /// The room that was left.
        room_id: RoomId,
    },
    /// `peer-joined`: another peer entered the room.
    PeerJoined {
        /// The room.
        room_id: RoomId,
        /// The new peer.
        peer: PeerInfo,
    },
    /// `peer-left`: another peer left the room.
    PeerLeft {
        /// The room.
        room_id: RoomId,
        /// The peer as it was when it left.
        peer: PeerInfo,
        /// Why it left.
        reason: LeaveReason,
    },
    /// `host-changed`: the host left and another peer now hosts the room.
    HostChanged {
        /// The room.
        room_id: RoomId,
        /// The new host.
        host_id: UserId,
        /// The new host's display name.
        host_name: String,
    },
    /// `room-closed`: the room is gone; the connection will be closed.
    RoomClosed {
        /// The room.
        room_id: RoomId,
        /// Why it was closed.
        reason: RoomCloseReason,
    },
    /// `sdp-offer`, `sdp-answer` or `ice-candidate` from another peer.
    Signal {
        /// Which signal.
        kind: SignalKind,
        /// The sender, stamped by the server from its verified token.
        from: UserId,
        /// The room.
        room_id: RoomId,
        /// The sender's `data`, byte for byte.
        data: RawJson,
    },
    /// `presence` or `cursor-update` from another peer.
    Update {
        /// Which update.
        kind: UpdateKind,
        /// The sender, stamped by the server from its verified token.
        from: UserId,
        /// The room.
        room_id: RoomId,
        /// The sender's `data`, byte for byte.
        data: RawJson,
    },
    /// `heartbeat`: answer with `pong` (any message also counts).
    Heartbeat,
    /// `token-refreshed`: the session now runs on the token sent with `refresh`.
    TokenRefreshed {
        /// When the new token expires, in Unix milliseconds.
        expires_at: u64,
    },
    /// `server-message`: a message from the app's backend, sent through the server API.
    ServerMessage {
        /// The room.
        room_id: RoomId,
        /// The backend's `data`, byte for byte.
        data: RawJson,
    },
    /// `error`: a request failed; the connection stays open unless a close follows.
    Error {
        /// Stable machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
        /// The peer a signal was for, when the error is about it (`peer-unavailable`).
        peer: Option<UserId>,
    },
}

/// One STUN or TURN server, in the shape of the browser's `RTCIceServer` dictionary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URIs of the server.
    pub urls: Vec<String>,
    /// TURN username (`<expiry unix seconds>:<opaque id>`); absent for STUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password for `username`; absent for STUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What a client needs to resume its session on a new connection: sent in `auth-ok`,
/// `room-joined` and `resumed`, and spent by one `resume`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeTicket {
    /// The session, named in `resume`.
    pub session_id: String,
    /// The one-time secret that proves the right to resume it.
    pub resume_token: String,
}

impl std::fmt::Debug for ResumeTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeTicket")
            .field("session_id", &self.session_id)
            .field("resume_token", &"<secret>")
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomData<R, P, I, T> {
    room: R,
    peers: Vec<P>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ice_servers: Option<I>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resume: Option<T>,
}

#[derive(Serialize, Deserialize)]
struct PeerData<P> {
    peer: P,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<LeaveReason>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HostData<U, S> {
    host_id: U,
    host_name: S,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshedData {
    expires_at: u64,
}

#[derive(Serialize, Deserialize)]
struct ReasonData {
    reason: RoomCloseReason,
}

/// The `data` of an `error` message: an [`ErrorBody`] and, for errors about a peer, the peer.
#[derive(Serialize, Deserialize)]
struct ErrorData<S, U> {
    code: ErrorCode,
    message: S,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<U>,
}

/// The body of an `error` message (and of every HTTP error, under `error`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl ServerMessage {
    /// The message `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AuthOk { .. } => "auth-ok",
            Self::RoomJoined { .. } => "room-joined",
            Self::Resumed { .. } => "resumed",
            Self::RoomLeft { .. } => "room-left",
            Self::PeerJoined { .. } => "peer-joined",
            Self::PeerLeft { .. } => "peer-left",
            Self::HostChanged { .. } => "host-changed",
            Self::RoomClosed { .. } => "room-closed",
            Self::Signal { kind, .. } => kind.as_str(),
            Self::Update { kind, .. } => kind.as_str(),
            Self::Heartbeat => "heartbeat",
            Self::TokenRefreshed { .. } => "token-refreshed",
            Self::ServerMessage { .. } => "server-message",
            Self::Error { .. } => "error",
        }
    }

    /// Builds an `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            peer: None,
        }
    }

    /// Serializes the message once, ready to be shared by every recipient.
    pub fn encode(&self) -> Vec<u8> {
        let kind = self.kind();
        match self {
            Self::AuthOk {
                user_id,
                room,
                ice_servers,
                resume,
            }
            | Self::RoomJoined {
                user_id,
                room,
                ice_servers,
                resume,
            }
            | Self::Resumed {
                user_id,
                room,
                ice_servers,
                resume,
            } => encode_room(kind, user_id, room, ice_servers.as_deref(), resume.as_ref()),
            Self::RoomLeft { room_id } => OutEnvelope::<()>::new(kind).room(Some(room_id)).to_vec(),
            Self::PeerJoined { room_id, peer } => OutEnvelope::new(kind)
                .room(Some(room_id))
                .data(&PeerData { peer, reason: None })
                .to_vec(),
            Self::PeerLeft {
                room_id,
                peer,
                reason,
            } => OutEnvelope::new(kind)
                .room(Some(room_id))
                .data(&PeerData {
                    peer,
                    reason: Some(*reason),
                })
                .to_vec(),
            Self::HostChanged {
                room_id,
                host_id,
                host_name,
            } => OutEnvelope::new(kind)
                .room(Some(room_id))
                .data(&HostData { host_id, host_name })
                .to_vec(),
            Self::RoomClosed { room_id, reason } => OutEnvelope::new(kind)
                .room(Some(room_id))
                .data(&ReasonData { reason: *reason })
                .to_vec(),
            Self::Signal {
                from,
                room_id,
                data,
                ..
            }
            | Self::Update {
                from,
                room_id,
                data,
                ..
            } => OutEnvelope::new(kind)
                .user(Some(from))
                .room(Some(room_id))
                .data(data)
                .to_vec_sized(data.get().len()),
            Self::ServerMessage { room_id, data } => OutEnvelope::new(kind)
                .room(Some(room_id))
                .data(data)
                .to_vec_sized(data.get().len()),
            Self::Heartbeat => OutEnvelope::<()>::new(kind).to_vec(),
            Self::TokenRefreshed { expires_at } => OutEnvelope::new(kind)
                .data(&RefreshedData {
                    expires_at: *expires_at,
                })
                .to_vec(),
            Self::Error {
                code,
                message,
                peer,
            } => OutEnvelope::new(kind)
                .data(&ErrorData {
                    code: *code,
                    message,
                    peer: peer.as_ref(),
                })
                .to_vec(),
        }
    }

    /// Decodes a server message, as a client does; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let env = Envelope::parse(bytes)?;
        let room_id = || -> Result<RoomId, ProtocolError> {
            env.room_id()?.ok_or(ProtocolError::MissingField("roomId"))
        };
        let from = || -> Result<UserId, ProtocolError> {
            env.user_id()?.ok_or(ProtocolError::MissingField("userId"))
        };
        let data = || env.data.ok_or(ProtocolError::MissingField("data"));
        fn parse<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, ProtocolError> {
            serde_json::from_str(raw.get()).map_err(|e| ProtocolError::from_serde(&e))
        }
        Ok(match env.kind.as_ref() {
            kind @ ("auth-ok" | "room-joined" | "resumed") => {
                let d: RoomData<RoomMetadata, PeerInfo, Vec<IceServer>, ResumeTicket> =
                    parse(data()?)?;
                let (user_id, room, ice_servers, resume) =
                    (from()?, d.room, d.ice_servers, d.resume);
                match kind {
                    "auth-ok" => Self::AuthOk {
                        user_id,
                        room,
                        ice_servers,
                        resume,
                    },
                    "room-joined" => Self::RoomJoined {
                        user_id,
                        room,
                        ice_servers,
                        resume,
                    },
                    _ => Self::Resumed {
                        user_id,
                        room,
                        ice_servers,
                        resume,
                    },
                }
            }
            "room-left" => Self::RoomLeft {
                room_id: room_id()?,
            },
            "peer-joined" => Self::PeerJoined {
                room_id: room_id()?,
                peer: parse::<PeerData<PeerInfo>>(data()?)?.peer,
            },
            "peer-left" => {
                let d: PeerData<PeerInfo> = parse(data()?)?;
                Self::PeerLeft {
                    room_id: room_id()?,
                    peer: d.peer,
                    reason: d.reason.unwrap_or(LeaveReason::Left),
                }
            }
            "host-changed" => {
                let d: HostData<UserId, String> = parse(data()?)?;
                Self::HostChanged {
                    room_id: room_id()?,
                    host_id: d.host_id,
                    host_name: d.host_name,
                }
            }
            "room-closed" => Self::RoomClosed {
                room_id: room_id()?,
                reason: parse::<ReasonData>(data()?)?.reason,
            },
            "sdp-offer" | "sdp-answer" | "ice-candidate" => Self::Signal {
                kind: match env.kind.as_ref() {
                    "sdp-offer" => SignalKind::Offer,
                    "sdp-answer" => SignalKind::Answer,
                    _ => SignalKind::IceCandidate,
                },
                from: from()?,
                room_id: room_id()?,
                data: RawJson::from_raw(data()?),
            },
            "presence" | "cursor-update" => Self::Update {
                kind: if env.kind == "presence" {
                    UpdateKind::Presence
                } else {
                    UpdateKind::Cursor
                },
                from: from()?,
                room_id: room_id()?,
                data: RawJson::from_raw(data()?),
            },
            "server-message" => Self::ServerMessage {
                room_id: room_id()?,
                data: RawJson::from_raw(data()?),
            },
            "heartbeat" => Self::Heartbeat,
            "token-refreshed" => Self::TokenRefreshed {
                expires_at: parse::<RefreshedData>(data()?)?.expires_at,
            },
            "error" => {
                let d: ErrorData<String, UserId> = parse(data()?)?;
                Self::Error {
                    code: d.code,
                    message: d.message,
                    peer: d.peer,
                }
            }
            other => return Err(ProtocolError::UnknownType(truncate(other))),
        })
    }
}

/// `auth-ok`, `room-joined` and `resumed` carry the room, apart the peers other than the
/// recipient, and the ICE servers and resume ticket when there are any.
fn encode_room(
    kind: &str,
    user: &UserId,
    room: &RoomMetadata,
    ice_servers: Option<&[IceServer]>,
    resume: Option<&ResumeTicket>,
) -> Vec<u8> {
    let others: Vec<&PeerInfo> = room.peers.iter().filter(|p| &p.user_id != user).collect();
    let ice_bytes = ice_servers.map_or(0, |servers| ICE_SERVER_BYTES * servers.len());
    OutEnvelope::new(kind)
        .user(Some(user))
        .room(Some(&room.room_id))
        .data(&RoomData {
            room,
            peers: others,
            ice_servers,
            resume,
        })
        .to_vec_sized(ROOM_BYTES + PEER_BYTES * 2 * room.peers.len() + ice_bytes + 128)
}

/// Rough JSON size of a room's metadata without its peers, and of one peer.
const ROOM_BYTES: usize = 256;
const PEER_BYTES: usize = 128;
/// Rough JSON size of one ICE server entry.
const ICE_SERVER_BYTES: usize = 160;

#[cfg(test)]
mod tests;
