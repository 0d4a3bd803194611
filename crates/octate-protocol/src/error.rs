//! Decode errors, the stable error codes sent to clients, and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// Why a client's bytes could not become a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The bytes are not valid JSON (or nest too deeply).
    #[error("invalid json: {0}")]
    InvalidJson(String),
    /// The JSON is valid but not an object of the expected shape.
    #[error("invalid message shape: {0}")]
    InvalidShape(String),
    /// The `type` names no known message.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field is present but its value is not acceptable.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// The field's wire name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The message is larger than the limit.
    #[error("message of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Size of the message.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
}

impl ProtocolError {
    /// The stable error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidJson(_) => ErrorCode::InvalidJson,
            Self::InvalidShape(_) => ErrorCode::InvalidMessage,
            Self::UnknownType(_) => ErrorCode::UnknownType,
            Self::MissingField(_) => ErrorCode::MissingField,
            Self::InvalidField { .. } => ErrorCode::InvalidField,
            Self::TooLarge { .. } => ErrorCode::TooLarge,
        }
    }

    pub(crate) fn from_serde(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                Self::InvalidJson(truncate(&err.to_string()))
            }
            Category::Data => {
                let text = err.to_string();
                match missing_field_name(&text) {
                    Some(field) => Self::MissingField(field),
                    None => Self::InvalidShape(truncate(&text)),
                }
            }
        }
    }
}

/// Longest client-derived text kept in an error, in characters.
const MAX_ERROR_TEXT_CHARS: usize = 160;

/// Keeps error messages bounded: serde's messages may quote the client's input.
pub(crate) fn truncate(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(MAX_ERROR_TEXT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Maps serde's "missing field `x`" text onto the static field names we know.
fn missing_field_name(text: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "type",
        "token",
        "peer",
        "status",
        "line",
        "column",
        "userId",
        "roomId",
        "roomName",
        "hostId",
        "hostName",
        "code",
        "message",
        "room",
        "peers",
        "data",
        "sessionId",
        "resumeToken",
    ];
    let rest = text.strip_prefix("missing field `")?;
    let name = &rest[..rest.find('`')?];
    KNOWN.iter().copied().find(|k| *k == name)
}

/// Stable, machine-readable error codes, shared by WebSocket and HTTP errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The bytes are not JSON.
    InvalidJson,
    /// JSON of the wrong shape.
    InvalidMessage,
    /// Unknown message `type`.
    UnknownType,
    /// A required field is missing.
    MissingField,
    /// A field has an unacceptable value.
    InvalidField,
    /// Message or body too large.
    TooLarge,
    /// A message other than `auth` arrived before authentication.
    NotAuthenticated,
    /// A second `auth` on an authenticated connection.
    AlreadyAuthenticated,
    /// The token is not a well-formed token.
    TokenMalformed,
    /// The token's signature does not verify.
    TokenBadSignature,
    /// The token has expired.
    TokenExpired,
    /// The token is not valid yet.
    TokenNotYetValid,
    /// The token's lifetime is longer than the server grants, or ends before it starts.
    TokenBadLifetime,
    /// The token was issued to another user.
    TokenWrongUser,
    /// The token authorizes another room.
    TokenWrongRoom,
    /// The token was revoked.
    TokenRevoked,
    /// The token was signed by a key the server does not know.
    TokenUnknownKey,
    /// The request needs the admin key.
    Unauthorized,
    /// The caller may not do this.
    Forbidden,
    /// No such room.
    RoomNotFound,
    /// The room already exists.
    RoomExists,
    /// The room has reached its peer limit.
    RoomFull,
    /// The server has reached its room limit.
    TooManyRooms,
    /// The user hosts as many rooms as allowed.
    TooManyRoomsForUser,
    /// The server has reached its connection limit.
    TooManyConnections,
    /// The target peer is not in the sender's room.
    PeerNotFound,
    /// The target peer's connection dropped and may come back soon: retry later.
    PeerUnavailable,
    /// The target peer speaks another protocol (`y-webrtc`): it cannot receive this signal.
    PeerIncompatible,
    /// The session cannot be resumed: authenticate afresh.
    ResumeFailed,
    /// The connection is not in a room.
    NotInRoom,
    /// An administrator removed the peer from its room; the connection will be closed.
    Kicked,
    /// Too many messages too fast.
    RateLimited,
    /// No such HTTP route.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The HTTP body is not JSON.
    UnsupportedMediaType,
    /// The server is shutting down or overloaded.
    Unavailable,
    /// A request took too long to arrive.
    Timeout,
    /// A bug on the server's side.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid-json",
            Self::InvalidMessage => "invalid-message",
            Self::UnknownType => "unknown-type",
            Self::MissingField => "missing-field",
            Self::InvalidField => "invalid-field",
            Self::TooLarge => "too-large",
            Self::NotAuthenticated => "not-authenticated",
            Self::AlreadyAuthenticated => "already-authenticated",
            Self::TokenMalformed => "token-malformed",
            Self::TokenBadSignature => "token-bad-signature",
            Self::TokenExpired => "token-expired",
            Self::TokenNotYetValid => "token-not-yet-valid",
            Self::TokenBadLifetime => "token-bad-lifetime",
            Self::TokenWrongUser => "token-wrong-user",
            Self::TokenWrongRoom => "token-wrong-room",
            Self::TokenRevoked => "token-revoked",
            Self::TokenUnknownKey => "token-unknown-key",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RoomNotFound => "room-not-found",
            Self::RoomExists => "room-exists",
            Self::RoomFull => "room-full",
            Self::TooManyRooms => "too-many-rooms",
            Self::TooManyRoomsForUser => "too-many-rooms-for-user",
            Self::TooManyConnections => "too-many-connections",
            Self::PeerNotFound => "peer-not-found",
            Self::PeerUnavailable => "peer-unavailable",
            Self::PeerIncompatible => "peer-incompatible",
            Self::ResumeFailed => "resume-failed",
            Self::NotInRoom => "not-in-room",
            Self::Kicked => "kicked",
            Self::RateLimited => "rate-limited",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }

    /// Every code, for documentation and metrics.
    pub const ALL: &'static [Self] = &[
        Self::InvalidJson,
        Self::InvalidMessage,
        Self::UnknownType,
        Self::MissingField,
        Self::InvalidField,
        Self::TooLarge,
        Self::NotAuthenticated,
        Self::AlreadyAuthenticated,
        Self::TokenMalformed,
        Self::TokenBadSignature,
        Self::TokenExpired,
        Self::TokenNotYetValid,
        Self::TokenBadLifetime,
        Self::TokenWrongUser,
        Self::TokenWrongRoom,
        Self::TokenRevoked,
        Self::TokenUnknownKey,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RoomNotFound,
        Self::RoomExists,
        Self::RoomFull,
        Self::TooManyRooms,
        Self::TooManyRoomsForUser,
        Self::TooManyConnections,
        Self::PeerNotFound,
        Self::PeerUnavailable,
        Self::PeerIncompatible,
        Self::ResumeFailed,
        Self::NotInRoom,
        Self::Kicked,
        Self::RateLimited,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::UnsupportedMediaType,
        Self::Unavailable,
        Self::Timeout,
        Self::Internal,
    ];
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: the session ended normally.
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: the peer broke the WebSocket protocol.
    ProtocolError,
    /// 1003: a binary frame; only text is accepted.
    UnsupportedData,
    /// 1007: a text frame that is not UTF-8.
    InvalidPayload,
    /// 1008: a policy violation not covered by a narrower code.
    PolicyViolation,
    /// 1009: a message over the size limit.
    MessageTooBig,
    /// 1011: a server bug.
    InternalError,
    /// 1013: the server is overloaded; try again later.
    TryAgainLater,
    /// 4000: no heartbeat answer within the timeout.
    HeartbeatTimeout,
    /// 4001: authentication failed.
    AuthFailed,
    /// 4002: no `auth` message within the time allowed.
    AuthTimeout,
    /// 4003: the room was closed (deleted, inactive, or memory pressure).
    RoomClosed,
    /// 4004: the same user connected to the same room again elsewhere.
    Replaced,
    /// 4005: an administrator removed the peer through the server API.
    Kicked,
    /// 4008: the client does not read fast enough; its queue overflowed.
    SlowConsumer,
    /// 4029: the client kept sending after `rate-limited` errors.
    RateLimited,
    /// 4010: the server dropped an idle peer to relieve memory pressure.
    MemoryPressure,
}

impl CloseCode {
    /// The numeric code sent in the Close frame.
    pub fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::UnsupportedData => 1003,
            Self::InvalidPayload => 1007,
            Self::PolicyViolation => 1008,
            Self::MessageTooBig => 1009,
            Self::InternalError => 1011,
            Self::TryAgainLater => 1013,
            Self::HeartbeatTimeout => 4000,
            Self::AuthFailed => 4001,
            Self::AuthTimeout => 4002,
            Self::RoomClosed => 4003,
            Self::Replaced => 4004,
            Self::Kicked => 4005,
            Self::SlowConsumer => 4008,
            Self::MemoryPressure => 4010,
            Self::RateLimited => 4029,
        }
    }

    /// A short reason sent with the code.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "bye",
            Self::GoingAway => "server shutting down",
            Self::ProtocolError => "protocol error",
            Self::UnsupportedData => "text frames only",
            Self::InvalidPayload => "invalid utf-8",
            Self::PolicyViolation => "policy violation",
            Self::MessageTooBig => "message too big",
            Self::InternalError => "internal error",
            Self::TryAgainLater => "try again later",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::AuthFailed => "authentication failed",
            Self::AuthTimeout => "authentication timeout",
            Self::RoomClosed => "room closed",
            Self::Replaced => "replaced by a newer connection",
            Self::Kicked => "kicked",
            Self::SlowConsumer => "slow consumer",
            Self::MemoryPressure => "memory pressure",
            Self::RateLimited => "rate limited",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_wire_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).expect("serialize code");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("parse code");
            assert_eq!(back, *code);
        }
    }

    #[test]
    fn close_codes_are_distinct() {
        let all = [
            CloseCode::Normal,
            CloseCode::GoingAway,
            CloseCode::ProtocolError,
            CloseCode::UnsupportedData,
            CloseCode::InvalidPayload,
            CloseCode::PolicyViolation,
            CloseCode::MessageTooBig,
            CloseCode::InternalError,
            CloseCode::TryAgainLater,
            CloseCode::HeartbeatTimeout,
            CloseCode::AuthFailed,
            CloseCode::AuthTimeout,
            CloseCode::RoomClosed,
            CloseCode::Replaced,
            CloseCode::Kicked,
            CloseCode::SlowConsumer,
            CloseCode::MemoryPressure,
            CloseCode::RateLimited,
        ];
        let mut codes: Vec<u16> = all.iter().map(|c| c.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn protocol_errors_map_to_the_expected_codes() {
        let cases = [
            (
                ProtocolError::InvalidJson("x".into()),
                ErrorCode::InvalidJson,
                "invalid-json",
            ),
            (
                ProtocolError::InvalidShape("x".into()),
                ErrorCode::InvalidMessage,
                "invalid-message",
            ),
            (
                ProtocolError::UnknownType("x".into()),
                ErrorCode::UnknownType,
                "unknown-type",
            ),
            (
                ProtocolError::MissingField("type"),
                ErrorCode::MissingField,
                "missing-field",
            ),
            (
                ProtocolError::InvalidField {
                    field: "roomId",
                    reason: "bad",
                },
                ErrorCode::InvalidField,
                "invalid-field",
            ),
            (
                ProtocolError::TooLarge { len: 2, limit: 1 },
                ErrorCode::TooLarge,
                "too-large",
            ),
        ];
        for (err, code, wire) in cases {
            assert_eq!(err.code(), code, "{err}");
            assert_eq!(err.code().as_str(), wire);
            assert_eq!(err.code().to_string(), wire);
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert_eq!(
            ProtocolError::MissingField("peer").to_string(),
            "missing field `peer`"
        );
        assert_eq!(
            ProtocolError::TooLarge {
                len: 70_000,
                limit: 65_536
            }
            .to_string(),
            "message of 70000 bytes exceeds the 65536-byte limit"
        );
        assert_eq!(
            ProtocolError::UnknownType("x".into()).to_string(),
            "unknown message type \"x\""
        );
    }

    #[test]
    fn all_lists_every_code_once() {
        let mut wire: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let n = wire.len();
        wire.sort_unstable();
        wire.dedup();
        assert_eq!(wire.len(), n);
        assert_eq!(n, 38);
    }

    #[test]
    fn close_code_numbers() {
        let expected = [
            (CloseCode::Normal, 1000),
            (CloseCode::GoingAway, 1001),
            (CloseCode::ProtocolError, 1002),
            (CloseCode::UnsupportedData, 1003),
            (CloseCode::InvalidPayload, 1007),
            (CloseCode::PolicyViolation, 1008),
            (CloseCode::MessageTooBig, 1009),
            (CloseCode::InternalError, 1011),
            (CloseCode::TryAgainLater, 1013),
            (CloseCode::HeartbeatTimeout, 4000),
            (CloseCode::AuthFailed, 4001),
            (CloseCode::AuthTimeout, 4002),
            (CloseCode::RoomClosed, 4003),
            (CloseCode::Replaced, 4004),
            (CloseCode::Kicked, 4005),
            (CloseCode::SlowConsumer, 4008),
            (CloseCode::MemoryPressure, 4010),
            (CloseCode::RateLimited, 4029),
        ];
        for (code, number) in expected {
            assert_eq!(code.code(), number, "{code:?}");
            // Close reasons must fit a control frame (123 bytes).
            assert!(!code.reason().is_empty() && code.reason().len() <= 123);
        }
    }

    #[test]
    fn serde_errors_are_classified() {
        let syntax = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert!(matches!(
            ProtocolError::from_serde(&syntax),
            ProtocolError::InvalidJson(_)
        ));
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct NeedsPeer {
            peer: String,
        }
        let missing = serde_json::from_str::<NeedsPeer>("{}").unwrap_err();
        assert_eq!(
            ProtocolError::from_serde(&missing),
            ProtocolError::MissingField("peer")
        );
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct NeedsOdd {
            odd: String,
        }
        let unknown = serde_json::from_str::<NeedsOdd>("{}").unwrap_err();
        assert!(matches!(
            ProtocolError::from_serde(&unknown),
            ProtocolError::InvalidShape(_)
        ));
    }

    #[test]
    fn truncate_bounds_text() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(1_000);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_ERROR_TEXT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
