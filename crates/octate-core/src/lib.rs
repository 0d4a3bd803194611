//! Octate's signaling state machines: rooms, peers, heartbeats, cleanup, memory policy
//! and routing decisions.
//!
//! `octate-core` performs no I/O and never reads a clock. Time comes in as an argument
//! (Unix milliseconds, supplied by the driver from a monotonic source), and effects go
//! out as [`Output`] values addressed to [`ConnId`]s, which the driver maps onto its
//! own connections. See [`Core`] for the drive loop.
//!
//! Rooms know users and the connection that reaches each one; connections know their
//! verified identity. Keeping the two apart is what lets a room's membership live
//! elsewhere later without touching the routing rules.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cluster;
mod config;
mod core;
mod error;
mod lifecycle;
mod memory;
mod output;
mod room;
mod session;

pub use crate::cluster::{
    ClusterCommand, ClusterEvent, ClusterMember, InvalidNodeId, JoinKind, LocalMember,
    MAX_NODE_ID_LEN, MembershipCause, NodeId, PeerLocation, RoomPage, RoomSnapshot,
};
pub use crate::config::CoreConfig;
pub use crate::core::{Core, CoreStats, Identity, NewRoom, Protocol, Vacancy};
pub use crate::error::CoreError;
pub use crate::lifecycle::{LifecycleEvent, LifecycleKind};
pub use crate::memory::MemoryLevel;
pub use crate::output::{ConnId, Output};
pub use crate::session::{Login, ResumeIssuer, ResumeRefusal, TokenDigest, TokenRef};
