//! Messages a client sends over the signaling WebSocket, and their one decode entry point.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::envelope::{Envelope, OutEnvelope};
use crate::{ProtocolError, RawJson, RoomId, UserId};

/// Largest client message accepted by default, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Kind of a WebRTC signal relayed to one named peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignalKind {
    /// `sdp-offer`
    Offer,
    /// `sdp-answer`
    Answer,
    /// `ice-candidate`
    IceCandidate,
}

impl SignalKind {
    /// The message `type` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offer => "sdp-offer",
            Self::Answer => "sdp-answer",
            Self::IceCandidate => "ice-candidate",
        }
    }
}

/// Kind of a room-wide update sent to every other peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateKind {
    /// `presence`
    Presence,
    /// `cursor-update`
    Cursor,
}

impl UpdateKind {
    /// The message `type` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Presence => "presence",
            Self::Cursor => "cursor-update",
        }
    }
}

/// A message from a client.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    /// `auth`: the first message, carrying the signed token.
    Auth {
        /// The token string (from `data.token` or the top-level `token`).
        token: String,
        /// Display name to show other peers.
        user_name: Option<String>,
    },
    /// `create-room`: join the token's room, which must not exist yet.
    CreateRoom {
        /// Room named by the client; must be the token's room when present.
        room_id: Option<RoomId>,
        /// Display name for the new room.
        room_name: Option<String>,
        /// File the room is about.
        file_id: Option<String>,
        /// Display name of the creating user.
        user_name: Option<String>,
    },
    /// `join-room`: join (or re-join after `leave-room`) the token's room.
    JoinRoom {
        /// Room named by the client; must be the token's room when present.
        room_id: Option<RoomId>,
        /// Display name of the user.
        user_name: Option<String>,
    },
    /// `leave-room`: leave the room but keep the connection.
    LeaveRoom,
    /// `sdp-offer`, `sdp-answer` or `ice-candidate` for one peer.
    Signal {
        /// Which signal.
        kind: SignalKind,
        /// The peer it is for (`data.peer`).
        target: UserId,
        /// The whole `data` object, relayed byte for byte.
        data: RawJson,
    },
    /// `presence` or `cursor-update` for every other peer of the room.
    Update {
        /// Which update.
        kind: UpdateKind,
        /// The whole `data` object, relayed byte for byte.
        data: RawJson,
    },
    /// `heartbeat` sent by a client: counts as liveness.
    Heartbeat,
    /// `pong`: the answer to a server heartbeat.
    Pong,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthData {
    token: Option<String>,
    user_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RoomData {
    room_name: Option<String>,
    file_id: Option<String>,
    user_name: Option<String>,
}

#[derive(Deserialize)]
struct SignalTarget {
    peer: UserId,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum PresenceStatus {
    Active,
    Idle,
    Away,
}

#[derive(Deserialize)]
struct PresenceData {
    #[allow(dead_code)]
    status: PresenceStatus,
}

#[derive(Deserialize)]
struct CursorData {
    #[allow(dead_code)]
    line: u64,
    #[allow(dead_code)]
    column: u64,
}

/// Longest display name kept, in characters; longer names are cut.
pub const MAX_NAME_CHARS: usize = 64;

fn clean_name(name: Option<String>) -> Option<String> {
    name.map(|n| {
        n.chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME_CHARS)
            .collect()
    })
}

fn parse_data<'a, T: Deserialize<'a>>(data: Option<&'a RawValue>) -> Result<T, ProtocolError> {
    let raw = data.ok_or(ProtocolError::MissingField("data"))?;
    serde_json::from_str(raw.get()).map_err(|e| ProtocolError::from_serde(&e))
}

fn parse_optional_data<'a, T: Deserialize<'a> + Default>(
    data: Option<&'a RawValue>,
) -> Result<T, ProtocolError> {
    match data {
        None => Ok(T::default()),
        Some(raw) if raw.get() == "null" => Ok(T::default()),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|e| ProtocolError::from_serde(&e)),
    }
}

fn optional_room(room_id: Option<&str>) -> Result<Option<RoomId>, ProtocolError> {
    room_id.map(RoomId::new).transpose()
}

impl ClientMessage {
    /// Decodes one client message; never panics, whatever the bytes.
    ///
    /// `max_len` bounds the input; the `userId` field is accepted and ignored,
    /// because identity comes from the verified token.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Self, ProtocolError> {
        if bytes.len() > max_len {
            return Err(ProtocolError::TooLarge {
                len: bytes.len(),
                limit: max_len,
            });
        }
        let env = Envelope::parse(bytes)?;
        let msg = match env.kind.as_ref() {
            "auth" => {
                let data: Option<AuthData> = match env.data {
                    Some(raw) if raw.get() != "null" => Some(
                        serde_json::from_str(raw.get())
                            .map_err(|e| ProtocolError::from_serde(&e))?,
                    ),
                    _ => None,
                };
                let (data_token, user_name) = match data {
                    Some(d) => (d.token, d.user_name),
                    None => (None, None),
                };
                let token = data_token
                    .or_else(|| env.token.map(|t| t.into_owned()))
                    .ok_or(ProtocolError::MissingField("token"))?;
                Self::Auth {
                    token,
                    user_name: clean_name(user_name),
                }
            }
            "create-room" => {
                let data: RoomData = parse_optional_data(env.data)?;
                Self::CreateRoom {
                    room_id: optional_room(env.room_id.as_deref())?,
                    room_name: clean_name(data.room_name),
                    file_id: data.file_id,
                    user_name: clean_name(data.user_name),
                }
            }
            "join-room" => {
                let data: RoomData = parse_optional_data(env.data)?;
                Self::JoinRoom {
                    room_id: optional_room(env.room_id.as_deref())?,
                    user_name: clean_name(data.user_name),
                }
            }
            "leave-room" => Self::LeaveRoom,
            "sdp-offer" | "sdp-answer" | "ice-candidate" => {
                let kind = match env.kind.as_ref() {
                    "sdp-offer" => SignalKind::Offer,
                    "sdp-answer" => SignalKind::Answer,
                    _ => SignalKind::IceCandidate,
                };
                let target: SignalTarget = parse_data(env.data)?;
                let data = env.data.ok_or(ProtocolError::MissingField("data"))?;
                Self::Signal {
                    kind,
                    target: target.peer,
                    data: RawJson::from_raw(data),
                }
            }
            "presence" => {
                let _: PresenceData = parse_data(env.data)?;
                let data = env.data.ok_or(ProtocolError::MissingField("data"))?;
                Self::Update {
                    kind: UpdateKind::Presence,
                    data: RawJson::from_raw(data),
                }
            }
            "cursor-update" => {
                let _: CursorData = parse_data(env.data)?;
                let data = env.data.ok_or(ProtocolError::MissingField("data"))?;
                Self::Update {
                    kind: UpdateKind::Cursor,
                    data: RawJson::from_raw(data),
                }
            }
            "heartbeat" => Self::Heartbeat,
            "pong" => Self::Pong,
            other => return Err(ProtocolError::UnknownType(truncate(other))),
        };
        Ok(msg)
    }

    /// The message `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Auth { .. } => "auth",
            Self::CreateRoom { .. } => "create-room",
            Self::JoinRoom { .. } => "join-room",
            Self::LeaveRoom => "leave-room",
            Self::Signal { kind, .. } => kind.as_str(),
            Self::Update { kind, .. } => kind.as_str(),
            Self::Heartbeat => "heartbeat",
            Self::Pong => "pong",
        }
    }

    /// Encodes the message as a client would send it.
    pub fn encode(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct AuthOut<'a> {
            token: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            user_name: Option<&'a str>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct RoomOut<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            room_name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            file_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            user_name: Option<&'a str>,
        }
        let kind = self.kind();
        match self {
            Self::Auth { token, user_name } => OutEnvelope::new(kind)
                .data(&AuthOut {
                    token,
                    user_name: user_name.as_deref(),
                })
                .to_string(),
            Self::CreateRoom {
                room_id,
                room_name,
                file_id,
                user_name,
            } => OutEnvelope::new(kind)
                .room(room_id.as_ref())
                .data(&RoomOut {
                    room_name: room_name.as_deref(),
                    file_id: file_id.as_deref(),
                    user_name: user_name.as_deref(),
                })
                .to_string(),
            Self::JoinRoom { room_id, user_name } => OutEnvelope::new(kind)
                .room(room_id.as_ref())
                .data(&RoomOut {
                    room_name: None,
                    file_id: None,
                    user_name: user_name.as_deref(),
                })
                .to_string(),
            Self::Signal { data, .. } | Self::Update { data, .. } => {
                OutEnvelope::new(kind).data(data).to_string()
            }
            Self::LeaveRoom | Self::Heartbeat | Self::Pong => {
                OutEnvelope::<()>::new(kind).to_string()
            }
        }
    }
}

/// Keeps error messages bounded when echoing client-supplied text.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
