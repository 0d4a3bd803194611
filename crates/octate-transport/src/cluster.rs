//! The seam between this server and a cluster of servers that share rooms.
//!
//! The transport never talks to the shared store itself: a [`ClusterLink`] (implemented
//! by the `octate-cluster` crate over Redis) carries the core's
//! [`ClusterCommand`]s out and answers the HTTP API's cluster-wide questions; what the
//! cluster tells this node comes back through [`App::handle_cluster_event`] and
//! [`App::apply_revocation`](crate::App::apply_revocation). Without a link the server is one
//! in-memory node, exactly as before.

use std::future::Future;
use std::pin::Pin;

use octate_core::{ClusterCommand, CoreError, NewRoom, NodeId, RoomPage, RoomSnapshot, TokenRef};
use octate_protocol::http::ClusterReport;
use octate_protocol::{
    PeerInfo, RoomCloseReason, RoomId, RoomMetadata, RoomState, UnixMillis, UserId,
};

/// A boxed future, for the link's asynchronous calls.
pub type LinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a cluster-wide request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The shared store cannot be reached right now; the request may be retried.
    #[error("the cluster store is unavailable")]
    Unavailable,
    /// The request was refused by a room rule.
    #[error(transparent)]
    Refused(#[from] CoreError),
}

/// Figures about the cluster for `/stats` and `/metrics` (the `/stats` section itself).
pub type ClusterStats = ClusterReport;

/// What this node needs from the rest of the cluster.
pub trait ClusterLink: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &NodeId;
    /// Carries out a command of the core; never waits.
    fn submit(&self, command: ClusterCommand);
    /// A room as the whole cluster sees it.
    fn room(&self, room_id: RoomId) -> LinkFuture<'_, Result<Option<RoomSnapshot>, LinkError>>;
    /// Creates an empty room for the whole cluster.
    fn create_room(
        &self,
        room: NewRoom,
        now: UnixMillis,
    ) -> LinkFuture<'_, Result<RoomSnapshot, LinkError>>;
    /// Closes a room on every node; `Ok(false)` when there was no such room.
    fn close_room(
        &self,
        room_id: RoomId,
        reason: RoomCloseReason,
    ) -> LinkFuture<'_, Result<bool, LinkError>>;
    /// Tells every node that a token is revoked until it expires.
    fn revoke(
        &self,
        token_id: String,
        expires_at: UnixMillis,
    ) -> LinkFuture<'_, Result<(), LinkError>>;
    /// Removes a user from a room whatever node holds it (its node closes it with 4005);
    /// the token its session ran on, as far as the store knows it.
    fn kick(&self, room_id: RoomId, user_id: UserId)
    -> LinkFuture<'_, Result<TokenRef, LinkError>>;
    /// Up to `limit` rooms of the whole cluster in the order of their ids, after `after`.
    fn rooms_page(
        &self,
        after: Option<RoomId>,
        limit: usize,
    ) -> LinkFuture<'_, Result<RoomPage, LinkError>>;
    /// Current figures.
    fn stats(&self) -> ClusterStats;
    /// The ids of the live nodes as last heard, this one included; never waits.
    fn nodes(&self) -> Vec<String> {
        vec![self.node_id().to_string()]
    }
}

/// A room as the whole cluster holds it, in the HTTP API's shape.
pub(crate) fn metadata(snapshot: &RoomSnapshot) -> RoomMetadata {
    let peers: Vec<PeerInfo> = snapshot
        .members
        .iter()
        .map(|m| PeerInfo {
            user_id: m.user_id.clone(),
            user_name: m.user_name.clone(),
            is_host: snapshot.host_id.as_ref() == Some(&m.user_id),
            connected_at: m.joined_at,
            last_heartbeat: m.joined_at,
        })
        .collect();
    let host = peers.iter().find(|p| p.is_host);
    RoomMetadata {
        room_id: snapshot.room_id.clone(),
        room_name: snapshot.room_name.clone(),
        host_id: host.map_or_else(|| snapshot.created_by.clone(), |h| h.user_id.clone()),
        host_name: host.map_or_else(|| snapshot.created_by.to_string(), |h| h.user_name.clone()),
        file_id: snapshot.file_id.clone(),
        content: None,
        version: None,
        created_at: snapshot.created_at,
        last_activity: peers
            .iter()
            .map(|p| p.connected_at)
            .max()
            .unwrap_or(snapshot.created_at),
        state: RoomState::Active,
        peer_count: peers.len(),
        peers,
    }
}
