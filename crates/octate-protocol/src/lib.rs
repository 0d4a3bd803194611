//! Octate's wire types: what crosses the network and nothing else.
//!
//! Signaling messages travel over a WebSocket as JSON text frames in the envelope
//! `{ "type", "userId"?, "roomId"?, "data"? }`. [`ClientMessage::decode`] is the one
//! entry point from client bytes to a typed message ([`ClientMessage::decode_str`] the
//! same for text already known to be UTF-8); it never panics and returns a
//! [`ProtocolError`] with a stable [`ErrorCode`]. SDP and ICE payloads are kept as raw
//! JSON and relayed byte for byte. HTTP bodies live in [`http`].
//!
//! This crate performs no I/O.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod envelope;
mod error;
pub mod http;
mod ids;
mod model;
mod raw;
mod server;
pub mod ywebrtc;

pub use client::{
    ClientMessage, DEFAULT_MAX_MESSAGE_BYTES, MAX_FILE_ID_LEN, MAX_NAME_CHARS,
    MAX_RESUME_FIELD_BYTES, PRESENCE_STATUSES, SignalKind, UpdateKind,
};
pub use envelope::MAX_NESTING_DEPTH;
pub use error::{CloseCode, ErrorCode, ProtocolError};
pub use ids::{MAX_ID_LEN, RoomId, UserId};
pub use model::{
    AuthToken, OperationType, PeerInfo, RemoteOperation, RoomMetadata, RoomState, UnixMillis,
};
pub use raw::RawJson;
pub use server::{ErrorBody, IceServer, LeaveReason, ResumeTicket, RoomCloseReason, ServerMessage};

/// Version of the signaling protocol described in `docs/protocol.md`.
pub const PROTOCOL_VERSION: u32 = 1;
