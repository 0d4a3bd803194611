//! Messages a client sends over the signaling WebSocket, and their decode entry points.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::envelope::{Envelope, OutEnvelope, json_str, object_fields, utf8};
use crate::error::truncate;
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
        /// The envelope's `roomId`: the room the client expects; must be the token's.
        room_id: Option<RoomId>,
        /// The envelope's `userId`: the user the client expects; must be the token's.
        user_id: Option<UserId>,
    },
    /// `resume`: the first message of a new connection that takes over a dropped session.
    Resume {
        /// The session to resume (`data.sessionId`).
        session_id: String,
        /// The secret the server handed out with the session (`data.resumeToken`).
        resume_token: String,
    },
    /// `refresh`: a new token for the same user and room, to outlive the first one.
    Refresh {
        /// The new token string (`data.token`).
        token: String,
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

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthData {
    token: Option<String>,
    user_name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResumeData<S> {
    session_id: S,
    resume_token: S,
}

/// Longest session id or resume token accepted, in bytes.
pub const MAX_RESUME_FIELD_BYTES: usize = 128;

#[derive(Deserialize, Default)]
struct RefreshData {
    token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RoomData {
    room_name: Option<String>,
    file_id: Option<String>,
    user_name: Option<String>,
}

#[derive(Deserialize)]
struct SignalData<'a> {
    #[serde(default, borrow)]
    peer: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResumeFields<'a> {
    #[serde(default, borrow)]
    session_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    resume_token: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PresenceData<'a> {
    #[serde(default, borrow)]
    status: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CursorData<'a> {
    #[serde(default, borrow)]
    line: Option<&'a RawValue>,
    #[serde(default, borrow)]
    column: Option<&'a RawValue>,
}

/// Longest display name kept, in characters; longer names are cut.
pub const MAX_NAME_CHARS: usize = 64;

/// Longest `fileId` accepted, in bytes.
pub const MAX_FILE_ID_LEN: usize = 256;

/// Presence statuses a client may send.
pub const PRESENCE_STATUSES: &[&str] = &["active", "idle", "away"];

/// Drops control characters, trims, and cuts to [`MAX_NAME_CHARS`]; empty means absent.
fn clean_name(name: Option<String>) -> Option<String> {
    let name: String = name?
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_NAME_CHARS)
        .collect();
    let name = name.trim_end();
    (!name.is_empty()).then(|| name.to_owned())
}

fn check_file_id(file_id: Option<String>) -> Result<Option<String>, ProtocolError> {
    match file_id {
        Some(f) if f.len() > MAX_FILE_ID_LEN => Err(ProtocolError::InvalidField {
            field: "fileId",
            reason: "must be at most 256 bytes",
        }),
        other => Ok(other),
    }
}

/// Rejects a message longer than `max_len` bytes, before looking at it.
fn check_len(len: usize, max_len: usize) -> Result<(), ProtocolError> {
    if len > max_len {
        Err(ProtocolError::TooLarge {
            len,
            limit: max_len,
        })
    } else {
        Ok(())
    }
}

/// `data` must be a JSON object: serde would otherwise accept an array for a struct.
fn require_object(raw: &RawValue) -> Result<(), ProtocolError> {
    if raw.get().starts_with('{') {
        Ok(())
    } else {
        Err(ProtocolError::InvalidShape(
            "`data` must be a JSON object".into(),
        ))
    }
}

/// Parses an optional `data` object (absent or `null` gives the default).
fn parse_optional_data<'a, T: Deserialize<'a> + Default>(
    data: Option<&'a RawValue>,
) -> Result<T, ProtocolError> {
    match data {
        None => Ok(T::default()),
        Some(raw) => {
            require_object(raw)?;
            serde_json::from_str(raw.get()).map_err(|e| ProtocolError::from_serde(&e))
        }
    }
}

/// The raw text of the named fields of a required `data` object; `null` counts as absent.
///
/// A scan finds the fields without parsing `data` a second time (it was validated when
/// captured). When the scan cannot vouch for its answer (escaped keys, a wanted field
/// written twice), `data` is parsed into `T`, whose derived `Deserialize` defines the
/// behaviour, errors included: `fields` lists its fields in the order of `names`.
fn data_fields<'a, T: Deserialize<'a>, const N: usize>(
    data: Option<&'a RawValue>,
    names: [&str; N],
    fields: impl FnOnce(T) -> [Option<&'a RawValue>; N],
) -> Result<[Option<&'a str>; N], ProtocolError> {
    let raw = data.ok_or(ProtocolError::MissingField("data"))?;
    require_object(raw)?;
    if let Some(found) = object_fields(raw.get(), names) {
        // The parser reads `null` into an absent `Option`.
        return Ok(found.map(|value| value.filter(|v| *v != "null")));
    }
    let parsed: T = serde_json::from_str(raw.get()).map_err(|e| ProtocolError::from_serde(&e))?;
    Ok(fields(parsed).map(|value| value.map(RawValue::get)))
}

/// A required field of `data`, parsed as `T`; a value of another type is an invalid field.
fn required<'a, T: Deserialize<'a>>(
    raw: Option<&'a str>,
    field: &'static str,
    reason: &'static str,
) -> Result<T, ProtocolError> {
    let raw = raw.ok_or(ProtocolError::MissingField(field))?;
    serde_json::from_str(raw).map_err(|_| ProtocolError::InvalidField { field, reason })
}

/// A required string field of `data`, borrowed when written without escapes.
fn required_str<'a>(
    raw: Option<&'a str>,
    field: &'static str,
    reason: &'static str,
) -> Result<Cow<'a, str>, ProtocolError> {
    let raw = raw.ok_or(ProtocolError::MissingField(field))?;
    json_str(raw).ok_or(ProtocolError::InvalidField { field, reason })
}

/// Renames the field of an id validation error (`peer` is a user id).
fn as_field(err: ProtocolError, field: &'static str) -> ProtocolError {
    match err {
        ProtocolError::InvalidField { reason, .. } => ProtocolError::InvalidField { field, reason },
        other => other,
    }
}

impl ClientMessage {
    /// Decodes one client message; never panics, whatever the bytes.
    ///
    /// `max_len` bounds the input. The input must be UTF-8, a JSON object, and nest no
    /// deeper than [`MAX_NESTING_DEPTH`](crate::MAX_NESTING_DEPTH). The `userId` field is
    /// ignored whatever its value on messages other than `auth`, because identity comes
    /// from the verified token; so is `roomId` on messages other than `auth`,
    /// `create-room` and `join-room`. On `auth`, both are what the client expects the
    /// token to say, checked against it once verified.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Self, ProtocolError> {
        check_len(bytes.len(), max_len)?;
        Self::decode_text(utf8(bytes)?)
    }

    /// Decodes one client message already known to be text, such as a WebSocket text
    /// frame; never panics.
    ///
    /// Same as [`decode`](Self::decode) on `text.as_bytes()`, results and errors alike,
    /// minus the UTF-8 validation that `&str` already guarantees.
    pub fn decode_str(text: &str, max_len: usize) -> Result<Self, ProtocolError> {
        check_len(text.len(), max_len)?;
        Self::decode_text(text)
    }

    fn decode_text(text: &str) -> Result<Self, ProtocolError> {
        let env = Envelope::parse_str(text)?;
        let msg = match env.kind.as_ref() {
            "auth" => {
                let data: AuthData = parse_optional_data(env.data)?;
                let token = match data.token {
                    Some(token) => token,
                    None => env.token()?.ok_or(ProtocolError::MissingField("token"))?,
                };
                Self::Auth {
                    token,
                    user_name: clean_name(data.user_name),
                    room_id: env.room_id()?,
                    user_id: env.user_id()?,
                }
            }
            "resume" => {
                let [session_id, resume_token] = data_fields(
                    env.data,
                    ["sessionId", "resumeToken"],
                    |d: ResumeFields<'_>| [d.session_id, d.resume_token],
                )?;
                let reason = "must be a non-empty string of at most 128 bytes";
                let session_id = required_str(session_id, "sessionId", reason)?;
                let resume_token = required_str(resume_token, "resumeToken", reason)?;
                for (field, value) in [("sessionId", &session_id), ("resumeToken", &resume_token)] {
                    if value.is_empty() || value.len() > MAX_RESUME_FIELD_BYTES {
                        return Err(ProtocolError::InvalidField { field, reason });
                    }
                }
                Self::Resume {
                    session_id: session_id.into_owned(),
                    resume_token: resume_token.into_owned(),
                }
            }
            "refresh" => {
                let data: RefreshData = parse_optional_data(env.data)?;
                Self::Refresh {
                    token: data.token.ok_or(ProtocolError::MissingField("token"))?,
                }
            }
            "create-room" => {
                let data: RoomData = parse_optional_data(env.data)?;
                Self::CreateRoom {
                    room_id: env.room_id()?,
                    room_name: clean_name(data.room_name),
                    file_id: check_file_id(data.file_id)?,
                    user_name: clean_name(data.user_name),
                }
            }
            "join-room" => {
                let data: RoomData = parse_optional_data(env.data)?;
                Self::JoinRoom {
                    room_id: env.room_id()?,
                    user_name: clean_name(data.user_name),
                }
            }
            "leave-room" => Self::LeaveRoom,
            kind @ ("sdp-offer" | "sdp-answer" | "ice-candidate") => {
                let kind = match kind {
                    "sdp-offer" => SignalKind::Offer,
                    "sdp-answer" => SignalKind::Answer,
                    _ => SignalKind::IceCandidate,
                };
                let [peer] = data_fields(env.data, ["peer"], |d: SignalData<'_>| [d.peer])?;
                let peer = required_str(peer, "peer", "must be a user id string")?;
                let target = UserId::from_borrowed(&peer).map_err(|e| as_field(e, "peer"))?;
                Self::Signal {
                    kind,
                    target,
                    data: RawJson::from_raw(env.data.ok_or(ProtocolError::MissingField("data"))?),
                }
            }
            "presence" => {
                let [status] = data_fields(env.data, ["status"], |d: PresenceData<'_>| [d.status])?;
                let reason = "must be \"active\", \"idle\" or \"away\"";
                let status = required_str(status, "status", reason)?;
                if !PRESENCE_STATUSES.contains(&status.as_ref()) {
                    return Err(ProtocolError::InvalidField {
                        field: "status",
                        reason,
                    });
                }
                Self::Update {
                    kind: UpdateKind::Presence,
                    data: RawJson::from_raw(env.data.ok_or(ProtocolError::MissingField("data"))?),
                }
            }
            "cursor-update" => {
                let [line, column] =
                    data_fields(env.data, ["line", "column"], |d: CursorData<'_>| {
                        [d.line, d.column]
                    })?;
                let reason = "must be a non-negative integer";
                let _: u64 = required(line, "line", reason)?;
                let _: u64 = required(column, "column", reason)?;
                Self::Update {
                    kind: UpdateKind::Cursor,
                    data: RawJson::from_raw(env.data.ok_or(ProtocolError::MissingField("data"))?),
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
            Self::Resume { .. } => "resume",
            Self::Refresh { .. } => "refresh",
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
            Self::Auth {
                token,
                user_name,
                room_id,
                user_id,
            } => OutEnvelope::new(kind)
                .user(user_id.as_ref())
                .room(room_id.as_ref())
                .data(&AuthOut {
                    token,
                    user_name: user_name.as_deref(),
                })
                .to_string(),
            Self::Resume {
                session_id,
                resume_token,
            } => OutEnvelope::new(kind)
                .data(&ResumeData {
                    session_id: session_id.as_str(),
                    resume_token: resume_token.as_str(),
                })
                .to_string(),
            Self::Refresh { token } => OutEnvelope::new(kind)
                .data(&AuthOut {
                    token,
                    user_name: None,
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

#[cfg(test)]
mod tests;
