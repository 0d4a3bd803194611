//! Effects the core asks its driver to carry out.

use std::sync::Arc;

use octate_protocol::{CloseCode, RoomCloseReason, RoomId, ServerMessage};

use crate::{ClusterCommand, LifecycleEvent};

/// Identifies one connection of this process; assigned by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// One effect for the driver; drain them with [`Core::poll_output`](crate::Core::poll_output).
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send a message to one connection.
    Send {
        /// Recipient.
        to: ConnId,
        /// The message.
        msg: ServerMessage,
    },
    /// Send the same message to several connections (serialize it once).
    Broadcast {
        /// Recipients.
        to: Vec<ConnId>,
        /// The message.
        msg: ServerMessage,
    },
    /// Send a heartbeat message and a WebSocket ping to these connections.
    Heartbeat {
        /// Recipients.
        to: Vec<ConnId>,
    },
    /// Close a connection; the core has already forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        code: CloseCode,
    },
    /// A room was removed from memory.
    RoomRemoved {
        /// The room.
        room_id: RoomId,
        /// Why.
        reason: RoomCloseReason,
    },
    /// Send text already encoded elsewhere (a message relayed from another node).
    Forward {
        /// Recipients.
        to: Vec<ConnId>,
        /// The JSON text, sent as is.
        text: Arc<str>,
    },
    /// Ask the cluster for something (clustered cores only).
    Cluster(ClusterCommand),
    /// A connection took over a session with `resume`: it now speaks for `identity`,
    /// under the token that opened the session (check it is still valid).
    Resumed {
        /// The new connection.
        conn: ConnId,
        /// Whose session it is.
        identity: crate::Identity,
        /// The token that opened the session.
        token: crate::TokenRef,
    },
    /// A room or peer lifecycle event, for webhooks (only with
    /// [`CoreConfig::lifecycle_events`](crate::CoreConfig) on).
    Lifecycle(LifecycleEvent),
}
