//! Room membership: joining, leaving, host election, creating and closing rooms, and
//! the lifecycle events they raise.

use octate_protocol::{
    CloseCode, LeaveReason, PeerInfo, RoomCloseReason, RoomId, ServerMessage, UnixMillis, UserId,
};

use super::{Core, Identity, Reply};
use crate::room::{Member, Room};
use crate::session::SessionState;
use crate::{
    ClusterCommand, ClusterMember, ConnId, CoreError, JoinKind, LifecycleEvent, LifecycleKind,
    Output, PeerLocation,
};

impl Core {
    pub(super) fn check_room_limits(&self, creator: &UserId) -> Result<(), CoreError> {
        if self.rooms.len() >= self.config.max_rooms {
            return Err(CoreError::TooManyRooms);
        }
        if self.created_by.get(creator).copied().unwrap_or(0) >= self.config.max_rooms_per_user {
            return Err(CoreError::TooManyRoomsForUser);
        }
        Ok(())
    }

    pub(super) fn insert_room(&mut self, now: UnixMillis, room: Room) {
        *self.created_by.entry(room.created_by.clone()).or_default() += 1;
        self.stats.rooms_created += 1;
        // Reported before the room is in: it has no peers yet.
        self.lifecycle(now, &room.id, || LifecycleKind::RoomCreated);
        self.room_ids.insert(room.id.clone());
        self.rooms.insert(room.id.clone(), room);
    }

    /// Reports a lifecycle event when they are asked for (`kind` is not even built
    /// otherwise). A clustered core reports none: the cluster's store scripts do.
    pub(super) fn lifecycle(
        &mut self,
        now: UnixMillis,
        room_id: &RoomId,
        kind: impl FnOnce() -> LifecycleKind,
    ) {
        if !self.config.lifecycle_events || self.node.is_some() {
            return;
        }
        let kind = kind();
        let peer_count = self.rooms.get(room_id).map_or(0, |r| r.members.len());
        self.lifecycle_seq = (self.lifecycle_seq + 1).max(now.saturating_mul(1000));
        self.outputs.push_back(Output::Lifecycle(LifecycleEvent {
            at: now,
            room_id: Some(room_id.clone()),
            kind,
            peer_count,
            seq: self.lifecycle_seq,
        }));
    }

    pub(super) fn join(
        &mut self,
        now: UnixMillis,
        conn: ConnId,
        mode: JoinKind,
    ) -> Result<(), CoreError> {
        let state = self.conns.get(&conn).ok_or(CoreError::NotAuthenticated)?;
        let (user, room_id, name, protocol) = (
            state.identity.user_id.clone(),
            state.identity.room_id.clone(),
            state.user_name.clone(),
            state.protocol,
        );
        if state.joined {
            return match mode {
                JoinKind::Create { .. } => Err(CoreError::RoomExists),
                _ => {
                    self.reply_joined(conn, &user, &room_id, Reply::of(&mode));
                    Ok(())
                }
            };
        }
        if self.node.is_some() {
            return self.request_join(now, conn, user, room_id, name, mode);
        }
        let mut replaced = false;
        match self.rooms.get(&room_id) {
            Some(_) if matches!(mode, JoinKind::Create { .. }) => {
                return Err(CoreError::RoomExists);
            }
            Some(room) => {
                let existing = room.member(&user).map(|m| m.location.clone());
                let count = room.members.len() - usize::from(existing.is_some());
                if count >= self.config.max_peers_per_room {
                    return Err(CoreError::RoomFull);
                }
                replaced = existing.is_some();
                match existing {
                    Some(PeerLocation::Local(old)) => {
                        self.outputs.push_back(Output::Close {
                            conn: old,
                            code: CloseCode::Replaced,
                        });
                        self.forget(now, old, LeaveReason::Replaced);
                    }
                    Some(PeerLocation::Suspended) => {
                        // A fresh login takes over a suspended session at once.
                        self.remove_member(now, &room_id, &user, LeaveReason::Replaced);
                    }
                    Some(PeerLocation::Remote { .. }) | None => {}
                }
            }
            None => {
                self.check_room_limits(&user)?;
                let mut room = Room::new(
                    room_id.clone(),
                    room_id.to_string(),
                    user.clone(),
                    name.clone(),
                    now,
                );
                if let JoinKind::Create { room_name, file_id } = &mode {
                    if let Some(room_name) = room_name {
                        room.name.clone_from(room_name);
                    }
                    room.file_id.clone_from(file_id);
                }
                self.insert_room(now, room);
            }
        }
        // Invariant: the room exists: it was found above or just inserted, and
        // `remove_member` keeps a room emptied by a replacement (`LeaveReason::Replaced`).
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(CoreError::RoomNotFound)?;
        room.add(user.clone(), name, (conn, protocol), now);
        let others = room.conns_except(Some(&user));
        let joined = room.member(&user).map(|m| m.info.clone());
        if let Some(state) = self.conns.get_mut(&conn) {
            state.joined = true;
        }
        self.lifecycle(now, &room_id, || {
            if replaced {
                LifecycleKind::PeerReplaced(user.clone())
            } else {
                LifecycleKind::PeerJoined(user.clone())
            }
        });
        self.reply_joined(conn, &user, &room_id, Reply::of(&mode));
        if let (Some(peer), false) = (joined, others.is_empty()) {
            self.outputs.push_back(Output::Broadcast {
                to: others,
                msg: ServerMessage::PeerJoined { room_id, peer },
            });
        }
        Ok(())
    }

    /// Adds this node's joiner to a replica that a newer snapshot built without it.
    pub(super) fn insert_member(
        &mut self,
        now: UnixMillis,
        room_id: &RoomId,
        entry: &ClusterMember,
        conn: ConnId,
    ) {
        let protocol = self
            .conns
            .get(&conn)
            .map(|c| c.protocol)
            .unwrap_or_default();
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let info = PeerInfo {
            user_id: entry.user_id.clone(),
            user_name: entry.user_name.clone(),
            is_host: room.host_id == entry.user_id,
            connected_at: entry.joined_at,
            last_heartbeat: now,
        };
        let at = room
            .members
            .iter()
            .position(|m| m.info.connected_at > entry.joined_at)
            .unwrap_or(room.members.len());
        room.members.insert(
            at,
            Member {
                info: info.clone(),
                location: PeerLocation::Local(conn),
                session: None,
                protocol,
            },
        );
        let others = room.conns_except(Some(&entry.user_id));
        if !others.is_empty() {
            self.outputs.push_back(Output::Broadcast {
                to: others,
                msg: ServerMessage::PeerJoined {
                    room_id: room_id.clone(),
                    peer: info,
                },
            });
        }
    }

    pub(super) fn reply_joined(
        &mut self,
        conn: ConnId,
        user: &UserId,
        room_id: &RoomId,
        reply: Reply,
    ) {
        if self.speaks_ywebrtc(conn) {
            return;
        }
        let Some(room) = self.rooms.get(room_id).map(Room::metadata) else {
            return;
        };
        let resume = self.issue_ticket(conn);
        let user_id = user.clone();
        let msg = match reply {
            Reply::AuthOk => ServerMessage::AuthOk {
                user_id,
                room,
                ice_servers: None,
                resume,
            },
            Reply::RoomJoined => ServerMessage::RoomJoined {
                user_id,
                room,
                ice_servers: None,
                resume,
            },
            Reply::Resumed => ServerMessage::Resumed {
                user_id,
                room,
                ice_servers: None,
                resume,
            },
        };
        self.outputs.push_back(Output::Send { to: conn, msg });
    }

    pub(super) fn leave_by_request(
        &mut self,
        now: UnixMillis,
        conn: ConnId,
    ) -> Result<(), CoreError> {
        let state = self
            .conns
            .get_mut(&conn)
            .ok_or(CoreError::NotAuthenticated)?;
        if !state.joined {
            return Err(CoreError::NotInRoom);
        }
        state.joined = false;
        let (user, room_id) = (
            state.identity.user_id.clone(),
            state.identity.room_id.clone(),
        );
        self.outputs.push_back(Output::Send {
            to: conn,
            msg: ServerMessage::RoomLeft {
                room_id: room_id.clone(),
            },
        });
        self.remove_member(now, &room_id, &user, LeaveReason::Left);
        Ok(())
    }

    /// Drops a connection from the core and its peer from its room.
    pub(super) fn forget(&mut self, now: UnixMillis, conn: ConnId, reason: LeaveReason) {
        let Some(state) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(session_id) = &state.session
            && self
                .sessions
                .get(session_id)
                .is_some_and(|s| s.state == SessionState::Live(conn))
        {
            self.end_session(session_id);
        }
        if state.joined {
            let Identity { user_id, room_id } = state.identity;
            // Only remove the member if it is still reached through this connection.
            let same_conn = self
                .rooms
                .get(&room_id)
                .and_then(|r| r.member(&user_id))
                .is_some_and(|m| m.local() == Some(conn));
            if same_conn {
                self.remove_member(now, &room_id, &user_id, reason);
            }
        }
    }

    /// Closes a connection: the driver closes the socket, the core forgets it at once.
    pub(super) fn close(&mut self, now: UnixMillis, conn: ConnId, code: CloseCode) {
        let reason = match code {
            CloseCode::HeartbeatTimeout => LeaveReason::Timeout,
            CloseCode::MemoryPressure => LeaveReason::MemoryPressure,
            CloseCode::Kicked => LeaveReason::Kicked,
            _ => LeaveReason::Disconnected,
        };
        self.outputs.push_back(Output::Close { conn, code });
        self.forget(now, conn, reason);
    }

    pub(super) fn remove_member(
        &mut self,
        now: UnixMillis,
        room_id: &RoomId,
        user: &UserId,
        reason: LeaveReason,
    ) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some((member, new_host)) = room.remove(user, now) else {
            return;
        };
        if let Some(session_id) = &member.session {
            self.end_session(session_id);
        }
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if self.node.is_some() {
            if let Some(conn) = member.local() {
                self.outputs
                    .push_back(Output::Cluster(ClusterCommand::Leave {
                        conn,
                        room_id: room_id.clone(),
                        user_id: user.clone(),
                        reason,
                    }));
            }
            if !room.has_local_members() {
                // The room lives on in the cluster; this node keeps no replica of it.
                self.rooms.remove(room_id);
                self.room_ids.remove(room_id);
                return;
            }
        }
        if reason != LeaveReason::Replaced {
            // A replacement is reported by `join`, as one event.
            self.lifecycle(now, room_id, || {
                LifecycleKind::PeerLeft(user.clone(), reason)
            });
        }
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.members.is_empty() {
            // A replaced member is re-added at once by `join`: keep its room.
            if reason != LeaveReason::Replaced {
                self.remove_room(now, room_id, RoomCloseReason::Empty);
            }
            return;
        }
        let others = room.conns_except(None);
        if let Some(host) = new_host {
            self.outputs.push_back(Output::Broadcast {
                to: others.clone(),
                msg: ServerMessage::PeerLeft {
                    room_id: room_id.clone(),
                    peer: member.info,
                    reason,
                },
            });
            self.outputs.push_back(Output::Broadcast {
                to: others,
                msg: ServerMessage::HostChanged {
                    room_id: room_id.clone(),
                    host_id: host.user_id,
                    host_name: host.user_name,
                },
            });
        } else {
            self.outputs.push_back(Output::Broadcast {
                to: others,
                msg: ServerMessage::PeerLeft {
                    room_id: room_id.clone(),
                    peer: member.info,
                    reason,
                },
            });
        }
    }

    pub(super) fn remove_room(
        &mut self,
        now: UnixMillis,
        room_id: &RoomId,
        reason: RoomCloseReason,
    ) {
        // Counted before the room goes: the peers it had when it closed.
        self.lifecycle(now, room_id, || LifecycleKind::RoomClosed(reason));
        let Some(room) = self.rooms.remove(room_id) else {
            return;
        };
        self.room_ids.remove(room_id);
        for member in &room.members {
            if let Some(session_id) = &member.session {
                self.end_session(session_id);
            }
        }
        if let Some(count) = self.created_by.get_mut(&room.created_by) {
            *count -= 1;
            if *count == 0 {
                self.created_by.remove(&room.created_by);
            }
        }
        self.stats.rooms_closed += 1;
        self.outputs.push_back(Output::RoomRemoved {
            room_id: room.id,
            reason,
        });
    }

    /// Tells every member the room is closed, disconnects them, and removes the room.
    pub(super) fn close_room(
        &mut self,
        now: UnixMillis,
        room_id: &RoomId,
        reason: RoomCloseReason,
    ) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let conns = room.local_conns();
        let native = room.conns_except(None);
        if !native.is_empty() {
            self.outputs.push_back(Output::Broadcast {
                to: native,
                msg: ServerMessage::RoomClosed {
                    room_id: room_id.clone(),
                    reason,
                },
            });
        }
        for conn in &conns {
            self.outputs.push_back(Output::Close {
                conn: *conn,
                code: CloseCode::RoomClosed,
            });
            self.conns.remove(conn);
        }
        self.remove_room(now, room_id, reason);
    }
}
