//! The server API's commands on a clustered core, for rooms whose peers are spread over
//! several nodes: a `server-message` is delivered to this node's peers and relayed to
//! the other nodes', which deliver it to theirs.

use std::sync::Arc;

use octate_protocol::{RawJson, RoomId, ServerMessage, UserId};

use super::{Core, Protocol};
use crate::room::Member;
use crate::{ClusterCommand, ConnId, CoreError, NodeId, Output, RoomSnapshot, TokenRef};

impl Core {
    /// Sends `server-message` with `data` to one member of a room as the cluster holds it
    /// (`snapshot`), or to every member when `to` is `None`: this node's native peers at
    /// once, the other nodes' through the cluster. Returns how many peers it was sent to
    /// (a peer of another node counts once its node is asked); `y-webrtc` peers get none.
    /// A single node answers as [`Core::server_message`].
    pub fn cluster_server_message(
        &mut self,
        snapshot: &RoomSnapshot,
        to: Option<&UserId>,
        data: RawJson,
    ) -> Result<usize, CoreError> {
        let Some(this) = self.node.clone() else {
            return self.server_message(&snapshot.room_id, to, data);
        };
        let room_id = &snapshot.room_id;
        if let Some(user) = to {
            let member = snapshot
                .members
                .iter()
                .find(|m| &m.user_id == user)
                .ok_or(CoreError::PeerNotFound)?;
            if member.protocol == Protocol::YWebrtc {
                return Err(CoreError::PeerIncompatible);
            }
            if member.suspended {
                return Err(CoreError::PeerUnavailable);
            }
            if member.node == this {
                return self.server_message(room_id, Some(user), data);
            }
            self.relay_server_message(vec![member.node.clone()], room_id, Some(user), data);
            return Ok(1);
        }
        let remote = |m: &&crate::ClusterMember| {
            !m.suspended && m.node != this && m.protocol == Protocol::Native
        };
        let remote_peers = snapshot.members.iter().filter(remote).count();
        let mut nodes: Vec<NodeId> = snapshot
            .members
            .iter()
            .filter(remote)
            .map(|m| m.node.clone())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        let local: Vec<ConnId> = self
            .rooms
            .get(room_id)
            .map(|r| r.conns_except(None))
            .unwrap_or_default();
        let local_peers = local.len();
        match (local.is_empty(), nodes.is_empty()) {
            (true, true) => {}
            (true, false) => self.relay_server_message(nodes, room_id, None, data),
            (false, true) => self.outputs.push_back(Output::Broadcast {
                to: local,
                msg: ServerMessage::ServerMessage {
                    room_id: room_id.clone(),
                    data,
                },
            }),
            (false, false) => {
                let msg = ServerMessage::ServerMessage {
                    room_id: room_id.clone(),
                    data,
                };
                self.outputs
                    .push_back(Output::Cluster(ClusterCommand::ServerMessage {
                        nodes,
                        room_id: room_id.clone(),
                        to: None,
                        msg: msg.clone(),
                    }));
                self.outputs.push_back(Output::Broadcast { to: local, msg });
            }
        }
        Ok(local_peers + remote_peers)
    }

    /// The token the session of a member held by this node runs on, if it is here.
    pub fn local_token(&self, room_id: &RoomId, user: &UserId) -> Option<TokenRef> {
        let conn = self.rooms.get(room_id)?.member(user)?.local()?;
        self.conns.get(&conn).map(|c| c.token.clone())
    }

    fn relay_server_message(
        &mut self,
        nodes: Vec<NodeId>,
        room_id: &RoomId,
        to: Option<&UserId>,
        data: RawJson,
    ) {
        self.outputs
            .push_back(Output::Cluster(ClusterCommand::ServerMessage {
                nodes,
                room_id: room_id.clone(),
                to: to.cloned(),
                msg: ServerMessage::ServerMessage {
                    room_id: room_id.clone(),
                    data,
                },
            }));
    }

    /// Delivers a `server-message` relayed from another node to this node's native peers
    /// of the room (or the one named).
    pub(super) fn deliver_server_message(
        &mut self,
        room_id: &RoomId,
        to: Option<&UserId>,
        text: Arc<str>,
    ) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let to: Vec<ConnId> = match to {
            Some(user) => room
                .member(user)
                .filter(|m| m.protocol == Protocol::Native)
                .and_then(Member::local)
                .into_iter()
                .collect(),
            None => room.conns_except(None),
        };
        if !to.is_empty() {
            self.outputs.push_back(Output::Forward { to, text });
        }
    }
}
