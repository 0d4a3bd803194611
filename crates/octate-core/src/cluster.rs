//! What the core says to, and hears from, the rest of a cluster.
//!
//! In a cluster, a room's membership is decided by a shared store (Redis, owned by the
//! `octate-cluster` crate), not by one core. The core learns only node ids and
//! committed membership: it asks with [`ClusterCommand`]s (join, leave, relay to
//! another node) and is told with [`ClusterEvent`]s (a join committed or refused, a
//! room's new membership, a message relayed from another node, the store down or back).
//!
//! Every membership change arrives as a whole [`RoomSnapshot`] stamped with a version
//! that only grows. The core keeps a replica of each room that has a peer on this node
//! and applies a snapshot by comparing it with the replica: the differences become
//! `peer-joined`, `peer-left` and `host-changed` for the local peers. A lost, repeated
//! or late snapshot therefore never produces a wrong event: an older version is
//! ignored, and a newer one carries everything that happened in between (only the
//! exact reason of a departure described by a lost snapshot is lost: `disconnected`).

use std::sync::Arc;

use octate_protocol::{LeaveReason, RoomCloseReason, RoomId, ServerMessage, UnixMillis, UserId};

use crate::{ConnId, CoreError, Protocol, TokenDigest, TokenRef};

/// Longest node id, in bytes.
pub const MAX_NODE_ID_LEN: usize = 64;

/// Identifies one server process of a cluster; a restarted process is a new node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a node id is 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'")]
pub struct InvalidNodeId;

impl NodeId {
    /// Checks and wraps a node id.
    pub fn new(value: &str) -> Result<Self, InvalidNodeId> {
        let ok = !value.is_empty()
            && value.len() <= MAX_NODE_ID_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(Arc::from(value)))
        } else {
            Err(InvalidNodeId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the connection that reaches a room member lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerLocation {
    /// A connection of this process.
    Local(ConnId),
    /// A connection of another node.
    Remote {
        /// The node.
        node: NodeId,
        /// The connection on that node.
        conn: ConnId,
    },
    /// No connection: the member's connection dropped and its session waits to be resumed.
    Suspended,
}

impl PeerLocation {
    /// The connection, when it is one of this process.
    pub fn local(&self) -> Option<ConnId> {
        match self {
            Self::Local(conn) => Some(*conn),
            Self::Remote { .. } | Self::Suspended => None,
        }
    }
}

/// One member of a room as the cluster committed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterMember {
    /// The member's user, from its token.
    pub user_id: UserId,
    /// Its display name.
    pub user_name: String,
    /// The node holding its connection.
    pub node: NodeId,
    /// The connection on that node; with `node`, it names one session.
    pub conn: ConnId,
    /// When it joined (Unix ms).
    pub joined_at: UnixMillis,
    /// Its resumable session, once it was handed a ticket.
    pub session: Option<String>,
    /// Its connection was lost: no node holds it, it waits to be resumed.
    pub suspended: bool,
    /// What its connection speaks: only native members get signals and server messages.
    pub protocol: Protocol,
}

/// A member whose connection this node holds, with what the store needs to register it
/// again after losing its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMember {
    /// Its room.
    pub room_id: RoomId,
    /// The member as the store records it.
    pub member: ClusterMember,
    /// Digest of the resume token last handed to its session, once it has one.
    pub resume_digest: Option<TokenDigest>,
    /// The token it runs on.
    pub token: TokenRef,
}

/// A room's committed state, as the shared store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// The room.
    pub room_id: RoomId,
    /// Version of the room's membership; every change makes it larger.
    pub ver: u64,
    /// Display name.
    pub room_name: String,
    /// The user who created the room.
    pub created_by: UserId,
    /// When the room was created (Unix ms).
    pub created_at: UnixMillis,
    /// File the room is about.
    pub file_id: Option<String>,
    /// The hosting member, if the room has members.
    pub host_id: Option<UserId>,
    /// Members, longest connected first.
    pub members: Vec<ClusterMember>,
}

/// One page of a cluster's rooms, in the order of their ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomPage {
    /// The rooms found, at most as many as asked.
    pub rooms: Vec<RoomSnapshot>,
    /// Where the store stopped looking before the page was full (rooms may follow it);
    /// `None` when it looked through to the end or the page is full.
    pub stopped_at: Option<RoomId>,
}

/// What changed to produce a snapshot; names the reason a member left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipCause {
    /// A member joined.
    Joined(UserId),
    /// A member left for this reason.
    Left(UserId, LeaveReason),
    /// The same user joined again from another session, which replaced the old one.
    Replaced(UserId),
    /// The members of a dead node were removed (or suspended, when they can resume).
    NodeDown(NodeId),
    /// A member's connection was lost; it is suspended, waiting to be resumed.
    Suspended(UserId),
    /// A suspended (or still connected) session was taken over by `resume`.
    Resumed(UserId),
    /// A full resynchronisation: the snapshot was read, not produced by a change.
    Resync,
}

/// How a connection asked for its room, carried through a two-phase join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// Right after `auth`: create the room if needed.
    Auth,
    /// `join-room`: create the room if needed.
    Join,
    /// `create-room`: the room must not exist yet.
    Create {
        /// Display name for the new room.
        room_name: Option<String>,
        /// File the room is about.
        file_id: Option<String>,
    },
}

/// Something the core asks of the cluster; produced as [`Output::Cluster`](crate::Output::Cluster).
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterCommand {
    /// Commit a connection of this node into its room, then answer
    /// [`ClusterEvent::JoinCommitted`] or [`ClusterEvent::JoinRejected`].
    Join {
        /// The joining connection.
        conn: ConnId,
        /// Its room.
        room_id: RoomId,
        /// Its user.
        user_id: UserId,
        /// Its display name.
        user_name: String,
        /// How it asked.
        kind: JoinKind,
        /// Now (Unix ms), the member's join time.
        joined_at: UnixMillis,
        /// The session the member will be resumable as, when resume is on.
        session_id: Option<String>,
        /// The token the connection authenticated with (a kick from any node revokes it).
        token: TokenRef,
        /// What the connection speaks.
        protocol: Protocol,
    },
    /// Remove a session of this node from its room, if it still owns its user there.
    Leave {
        /// The session's connection.
        conn: ConnId,
        /// Its room.
        room_id: RoomId,
        /// Its user.
        user_id: UserId,
        /// Why.
        reason: LeaveReason,
    },
    /// Deliver a message to a room's peers on another node.
    Relay {
        /// The node to deliver to.
        node: NodeId,
        /// The room.
        room_id: RoomId,
        /// The one recipient, or every peer of the room on that node but the sender.
        to: Option<UserId>,
        /// The sender.
        from: UserId,
        /// The message, ready to encode once.
        msg: ServerMessage,
    },
    /// Deliver one message to a room's peers on several other nodes (presence, cursors):
    /// encoded once for all of them.
    Broadcast {
        /// The nodes to deliver to.
        nodes: Vec<NodeId>,
        /// The room.
        room_id: RoomId,
        /// The sender; every peer of the room on those nodes but the sender receives it.
        from: UserId,
        /// The message, ready to encode once.
        msg: ServerMessage,
    },
    /// Deliver a `y-webrtc` `publish` to the topic's subscribers on other nodes.
    Publish {
        /// The nodes to deliver to.
        nodes: Vec<NodeId>,
        /// The room (the topic).
        room_id: RoomId,
        /// The publisher.
        from: UserId,
        /// The message as subscribers get it, `clients` included.
        text: Arc<str>,
    },
    /// Record the digest of the ticket just handed to a session of this node (the one
    /// before is spent), and the token the session runs on.
    Ticket {
        /// The session's connection.
        conn: ConnId,
        /// Its room.
        room_id: RoomId,
        /// Its user.
        user_id: UserId,
        /// The session.
        session_id: String,
        /// Digest of the new resume token.
        digest: TokenDigest,
        /// The token that opened the session.
        token: TokenRef,
    },
    /// Record the token a member of this node runs on after a `refresh`.
    Token {
        /// The member's connection.
        conn: ConnId,
        /// Its room.
        room_id: RoomId,
        /// Its user.
        user_id: UserId,
        /// The new token.
        token: TokenRef,
    },
    /// Suspend a member of this node whose connection was lost, for the resume grace.
    Suspend {
        /// The lost connection.
        conn: ConnId,
        /// Its room.
        room_id: RoomId,
        /// Its user.
        user_id: UserId,
    },
    /// Move a session to a connection of this node if `presented` is its current token,
    /// then answer [`ClusterEvent::ResumeCommitted`] or [`ClusterEvent::ResumeRejected`].
    Resume {
        /// The new connection.
        conn: ConnId,
        /// The session.
        session_id: String,
        /// Digest of the token the client presented.
        presented: TokenDigest,
        /// Digest of the token handed out if the resume succeeds.
        next: TokenDigest,
    },
    /// Deliver a `server-message` from the server API to a room's native peers on other
    /// nodes (it has no sending member).
    ServerMessage {
        /// The nodes to deliver to.
        nodes: Vec<NodeId>,
        /// The room.
        room_id: RoomId,
        /// The one recipient, or every native peer of the room on those nodes.
        to: Option<UserId>,
        /// The message, ready to encode once.
        msg: ServerMessage,
    },
    /// Close a room everywhere (inactivity, memory pressure). For inactivity the store
    /// closes it only if no node reported activity within the inactivity timeout.
    CloseRoom {
        /// The room.
        room_id: RoomId,
        /// Why.
        reason: RoomCloseReason,
    },
    /// This node's peers were active in a room that has members on other nodes (sent at
    /// most every quarter of the idle time per room).
    Activity {
        /// The room.
        room_id: RoomId,
    },
}

/// Something the cluster tells the core; fed in with [`Core::handle_cluster`](crate::Core::handle_cluster).
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterEvent {
    /// A lifecycle event this node's store scripts reported (passed on as
    /// [`Output::Lifecycle`](crate::Output) when lifecycle events are on).
    Lifecycle(crate::LifecycleEvent),
    /// A [`ClusterCommand::Join`] was committed; the snapshot includes the joiner.
    JoinCommitted {
        /// The joining connection.
        conn: ConnId,
        /// The room right after the join.
        snapshot: RoomSnapshot,
    },
    /// A [`ClusterCommand::Resume`] was committed: the session is the connection's.
    ResumeCommitted {
        /// The new connection.
        conn: ConnId,
        /// The session's user.
        user_id: UserId,
        /// The room right after the resume.
        snapshot: RoomSnapshot,
        /// The token that opened the session.
        token: TokenRef,
    },
    /// A [`ClusterCommand::Resume`] was refused (unknown session, wrong token, grace over).
    ResumeRejected {
        /// The connection that asked.
        conn: ConnId,
        /// The store was unreachable: the session may still be resumable.
        unavailable: bool,
    },
    /// A [`ClusterCommand::Join`] was refused.
    JoinRejected {
        /// The joining connection.
        conn: ConnId,
        /// Why.
        error: CoreError,
    },
    /// A room's membership changed (or was read again).
    Membership {
        /// The room now.
        snapshot: RoomSnapshot,
        /// What changed.
        cause: MembershipCause,
    },
    /// A message from a peer on another node, already encoded for the wire.
    Relay {
        /// The room.
        room_id: RoomId,
        /// The sender.
        from: UserId,
        /// The node the sender's session is on: a message from a session the sender
        /// replaced since is dropped.
        from_node: NodeId,
        /// The one recipient, or every local peer of the room but the sender.
        to: Option<UserId>,
        /// The JSON text to send as is.
        text: Arc<str>,
    },
    /// A `y-webrtc` `publish` from a peer on another node, for this node's subscribers.
    Publish {
        /// The room (the topic).
        room_id: RoomId,
        /// The publisher.
        from: UserId,
        /// The node the publisher's session is on.
        from_node: NodeId,
        /// The message as subscribers get it.
        text: Arc<str>,
    },
    /// A `server-message` from the server API on another node, already encoded.
    ServerMessage {
        /// The room.
        room_id: RoomId,
        /// The one recipient, or every native peer of the room on this node.
        to: Option<UserId>,
        /// The JSON text to send as is.
        text: Arc<str>,
    },
    /// A room was closed by any node (or over HTTP).
    RoomClosed {
        /// The room.
        room_id: RoomId,
        /// Why.
        reason: RoomCloseReason,
        /// When, as a room version: a join committed with a smaller version was undone by
        /// this close, a larger one created the room again.
        ver: u64,
    },
    /// The shared store cannot be reached: joins are refused until [`ClusterEvent::Recovered`].
    Degraded,
    /// The shared store is reachable again and this node's peers are registered.
    Recovered,
}
