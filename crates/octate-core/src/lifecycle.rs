//! Lifecycle events: what happened to rooms and peers, for outside observers (webhooks).
//!
//! The core produces them only when [`CoreConfig::lifecycle_events`](crate::CoreConfig)
//! is on; they never touch the relay path.

use octate_protocol::{LeaveReason, RoomCloseReason, RoomId, UnixMillis, UserId};

use crate::NodeId;

/// Something that happened to a room or one of its peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// When it happened, in Unix milliseconds.
    pub at: UnixMillis,
    /// The room it happened in (empty for [`LifecycleKind::NodeDown`]).
    pub room_id: Option<RoomId>,
    /// What happened.
    pub kind: LifecycleKind,
    /// Peers in the room right after it happened (suspended peers count); for a closed
    /// room, the peers it had when it closed.
    pub peer_count: usize,
    /// Orders events: each is larger than every one reported before it by this server
    /// (on a cluster, by any node). Unix microseconds, or one more than the previous.
    pub seq: u64,
}

/// What happened, with whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LifecycleKind {
    /// A room was created (over HTTP, or by its first peer).
    RoomCreated,
    /// A room was closed; its peers are gone with it (no `PeerLeft` for them).
    RoomClosed(RoomCloseReason),
    /// A user joined the room.
    PeerJoined(UserId),
    /// A user left the room, for this reason.
    PeerLeft(UserId, LeaveReason),
    /// A user's new connection took over its place in the room (no leave, no join).
    PeerReplaced(UserId),
    /// A user's connection dropped; its place is kept for a resume.
    PeerSuspended(UserId),
    /// A suspended user came back with `resume`.
    PeerResumed(UserId),
    /// A cluster node was judged dead; its peers' departures follow as their own events.
    NodeDown(NodeId),
}

impl LifecycleKind {
    /// The event's type name on the wire, e.g. `peer.left`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RoomCreated => "room.created",
            Self::RoomClosed(_) => "room.closed",
            Self::PeerJoined(_) => "peer.joined",
            Self::PeerLeft(..) => "peer.left",
            Self::PeerReplaced(_) => "peer.replaced",
            Self::PeerSuspended(_) => "peer.suspended",
            Self::PeerResumed(_) => "peer.resumed",
            Self::NodeDown(_) => "node.down",
        }
    }

    /// The user the event is about, if any.
    pub fn user_id(&self) -> Option<&UserId> {
        match self {
            Self::PeerJoined(user)
            | Self::PeerLeft(user, _)
            | Self::PeerReplaced(user)
            | Self::PeerSuspended(user)
            | Self::PeerResumed(user) => Some(user),
            Self::RoomCreated | Self::RoomClosed(_) | Self::NodeDown(_) => None,
        }
    }
}
