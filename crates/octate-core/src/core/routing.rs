//! Relaying between peers: signals and updates to the room's other peers, and
//! `y-webrtc` publishes to the topic's subscribers.

use std::collections::VecDeque;

use octate_protocol::{ErrorCode, RoomId, ServerMessage, UnixMillis, UserId};

use super::{Core, MAX_HELD_BYTES, Protocol};
use crate::room::Room;
use crate::{ClusterCommand, ConnId, CoreError, Output, PeerLocation};

impl Core {
    /// A `y-webrtc` connection published `text` (a whole `publish` message, already
    /// checked to name its room's topic): it goes, with `clients` added, to the topic's
    /// other subscribers here and on every other node of the room. On a cluster, what a
    /// connection publishes before its join is committed is sent once it is (the client
    /// announces itself as soon as it subscribes).
    pub fn handle_ywebrtc_publish(&mut self, now: UnixMillis, conn: ConnId, text: &str) {
        self.handle_pong(now, conn);
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        if state.protocol != Protocol::YWebrtc {
            return;
        }
        if !state.joined {
            if let Some(pending) = self.pending.get_mut(&conn) {
                let held: usize = pending.held.iter().map(|t| t.len()).sum::<usize>()
                    + pending.published.iter().map(String::len).sum::<usize>();
                if held + text.len() <= MAX_HELD_BYTES {
                    pending.published.push(text.to_owned());
                }
            }
            return;
        }
        self.publish(now, conn, text);
    }

    /// Sends a joined `y-webrtc` connection's `publish` to the topic's other subscribers.
    pub(super) fn publish(&mut self, now: UnixMillis, conn: ConnId, text: &str) {
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        let (user, room_id) = (&state.identity.user_id, &state.identity.room_id);
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        touch_local(room, now, self.activity_every, &mut self.outputs);
        let conns = &self.conns;
        let mut subscribers = 0;
        let to: Vec<ConnId> = room
            .ywebrtc_conns()
            .filter(|c| conns.get(c).is_some_and(|s| s.subscribed))
            .inspect(|_| subscribers += 1)
            .filter(|c| *c != conn)
            .collect();
        if to.is_empty() && room.remote_nodes.is_empty() {
            return;
        }
        let text = octate_protocol::ywebrtc::with_clients(text, subscribers);
        if !room.remote_nodes.is_empty() {
            self.outputs
                .push_back(Output::Cluster(ClusterCommand::Publish {
                    nodes: room.remote_nodes.clone(),
                    room_id: room_id.clone(),
                    from: user.clone(),
                    text: text.clone(),
                }));
        }
        if !to.is_empty() {
            self.stats.messages_relayed += to.len() as u64;
            self.outputs.push_back(Output::Forward { to, text });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn route_signal(
        &mut self,
        now: UnixMillis,
        conn: ConnId,
        user: &UserId,
        room_id: &RoomId,
        joined: bool,
        target: UserId,
        build: impl FnOnce(UserId, RoomId) -> ServerMessage,
    ) -> Result<(), CoreError> {
        if !joined {
            return Err(CoreError::NotInRoom);
        }
        let room = self.rooms.get_mut(room_id).ok_or(CoreError::NotInRoom)?;
        if &target == user {
            return Err(CoreError::PeerNotFound);
        }
        let member = room.member(&target).ok_or(CoreError::PeerNotFound)?;
        if member.protocol == Protocol::YWebrtc {
            return Err(CoreError::PeerIncompatible);
        }
        let location = &member.location;
        let out = match location {
            PeerLocation::Local(to) => {
                debug_assert_ne!(*to, conn);
                Output::Send {
                    to: *to,
                    msg: build(user.clone(), room_id.clone()),
                }
            }
            PeerLocation::Suspended => {
                // Told with the peer's name: the sender retries that signal later.
                let message =
                    format!("peer {target} is briefly unreachable; retry after it is back");
                self.outputs.push_back(Output::Send {
                    to: conn,
                    msg: ServerMessage::Error {
                        code: ErrorCode::PeerUnavailable,
                        message,
                        peer: Some(target),
                    },
                });
                return Ok(());
            }
            PeerLocation::Remote { node, .. } => Output::Cluster(ClusterCommand::Relay {
                node: node.clone(),
                room_id: room_id.clone(),
                to: Some(target),
                from: user.clone(),
                msg: build(user.clone(), room_id.clone()),
            }),
        };
        touch_local(room, now, self.activity_every, &mut self.outputs);
        self.stats.messages_relayed += 1;
        self.outputs.push_back(out);
        Ok(())
    }

    pub(super) fn route_update(
        &mut self,
        now: UnixMillis,
        user: &UserId,
        room_id: &RoomId,
        joined: bool,
        build: impl FnOnce(UserId, RoomId) -> ServerMessage,
    ) -> Result<(), CoreError> {
        if !joined {
            return Err(CoreError::NotInRoom);
        }
        let room = self.rooms.get_mut(room_id).ok_or(CoreError::NotInRoom)?;
        touch_local(room, now, self.activity_every, &mut self.outputs);
        let to = room.conns_except(Some(user));
        let msg = build(user.clone(), room_id.clone());
        // Empty on a single node: cloning it allocates nothing.
        let nodes = room.remote_nodes.clone();
        let remote = |msg| {
            Output::Cluster(ClusterCommand::Broadcast {
                nodes,
                room_id: room_id.clone(),
                from: user.clone(),
                msg,
            })
        };
        if to.is_empty() {
            if !room.remote_nodes.is_empty() {
                self.outputs.push_back(remote(msg));
            }
            return Ok(());
        }
        if !room.remote_nodes.is_empty() {
            self.outputs.push_back(remote(msg.clone()));
        }
        self.stats.messages_relayed += to.len() as u64;
        self.outputs.push_back(Output::Broadcast { to, msg });
        Ok(())
    }
}

/// Records activity of this node's own peers in `room`, and tells the cluster's store
/// when [`Room::touch_local`] says it should hear of it.
fn touch_local(room: &mut Room, now: UnixMillis, every: u64, outputs: &mut VecDeque<Output>) {
    if room.touch_local(now, every) {
        outputs.push_back(Output::Cluster(ClusterCommand::Activity {
            room_id: room.id.clone(),
        }));
    }
}
