//! Why a request to the core was refused.

use octate_protocol::ErrorCode;

/// A refused request; each maps onto a stable wire [`ErrorCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The connection has not authenticated.
    #[error("not authenticated")]
    NotAuthenticated,
    /// The connection authenticated already.
    #[error("already authenticated")]
    AlreadyAuthenticated,
    /// The token does not authorize the room asked for.
    #[error("the token does not authorize that room")]
    Forbidden,
    /// No such room.
    #[error("room not found")]
    RoomNotFound,
    /// The room exists already.
    #[error("room already exists")]
    RoomExists,
    /// The room is at its peer limit.
    #[error("room is full")]
    RoomFull,
    /// The process is at its room limit.
    #[error("too many rooms")]
    TooManyRooms,
    /// The user created as many rooms as allowed.
    #[error("too many rooms for this user")]
    TooManyRoomsForUser,
    /// The target is not a peer of the sender's room.
    #[error("no such peer in this room")]
    PeerNotFound,
    /// The target's connection dropped and it may come back soon.
    #[error("the peer is briefly unreachable; try again after it is back")]
    PeerUnavailable,
    /// The target speaks `y-webrtc`, which has no native signals.
    #[error("the peer speaks y-webrtc and cannot receive native signals")]
    PeerIncompatible,
    /// The connection is not in a room.
    #[error("not in a room")]
    NotInRoom,
    /// The cluster's shared store cannot be reached; try again shortly.
    #[error("the cluster is recovering; try again shortly")]
    Unavailable,
}

impl CoreError {
    /// The stable wire code.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::NotAuthenticated => ErrorCode::NotAuthenticated,
            Self::AlreadyAuthenticated => ErrorCode::AlreadyAuthenticated,
            Self::Forbidden => ErrorCode::Forbidden,
            Self::RoomNotFound => ErrorCode::RoomNotFound,
            Self::RoomExists => ErrorCode::RoomExists,
            Self::RoomFull => ErrorCode::RoomFull,
            Self::TooManyRooms => ErrorCode::TooManyRooms,
            Self::TooManyRoomsForUser => ErrorCode::TooManyRoomsForUser,
            Self::PeerNotFound => ErrorCode::PeerNotFound,
            Self::PeerUnavailable => ErrorCode::PeerUnavailable,
            Self::PeerIncompatible => ErrorCode::PeerIncompatible,
            Self::NotInRoom => ErrorCode::NotInRoom,
            Self::Unavailable => ErrorCode::Unavailable,
        }
    }
}
