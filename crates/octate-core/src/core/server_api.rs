//! The server API's commands on a core: creating and deleting rooms, kicking a peer,
//! sending server messages and listing rooms a page at a time.

use std::ops::Bound;

use octate_protocol::{
    CloseCode, ErrorCode, LeaveReason, RawJson, RoomCloseReason, RoomId, RoomMetadata, RoomState,
    ServerMessage, UnixMillis, UserId,
};

use super::{Core, KICKED_MESSAGE, NewRoom, Protocol};
use crate::room::Room;
use crate::session::TokenRef;
use crate::{CoreError, Output, PeerLocation};

impl Core {
    /// Creates an empty room that its host is expected to join.
    pub fn create_room(
        &mut self,
        now: UnixMillis,
        new: NewRoom,
    ) -> Result<RoomMetadata, CoreError> {
        if self.rooms.contains_key(&new.room_id) {
            return Err(CoreError::RoomExists);
        }
        self.check_room_limits(&new.host_id)?;
        let mut room = Room::new(new.room_id, new.room_name, new.host_id, new.host_name, now);
        room.file_id = new.file_id;
        room.version = new.version;
        let meta = room.metadata();
        self.insert_room(now, room);
        Ok(meta)
    }

    /// Closes a room: its peers are told `room-closed` and disconnected.
    pub fn delete_room(&mut self, now: UnixMillis, room_id: &RoomId) -> Result<(), CoreError> {
        if !self.rooms.contains_key(room_id) {
            return Err(CoreError::RoomNotFound);
        }
        self.close_room(now, room_id, RoomCloseReason::Deleted);
        Ok(())
    }

    /// Removes a user from a room on an administrator's order: a connected member is sent
    /// `error` `kicked` and closed with 4005, a suspended one loses its session; the others
    /// are told `peer-left` with reason `kicked`. Returns the member's token, for revocation.
    pub fn kick(
        &mut self,
        now: UnixMillis,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<TokenRef, CoreError> {
        let room = self.rooms.get(room_id).ok_or(CoreError::RoomNotFound)?;
        let member = room.member(user).ok_or(CoreError::PeerNotFound)?;
        match &member.location {
            PeerLocation::Local(conn) => {
                let conn = *conn;
                let token = self
                    .conns
                    .get(&conn)
                    .map(|c| c.token.clone())
                    .unwrap_or_default();
                self.send_error(conn, ErrorCode::Kicked, KICKED_MESSAGE);
                self.close(now, conn, CloseCode::Kicked);
                Ok(token)
            }
            // A clustered session lives in the cluster's store, not here.
            PeerLocation::Suspended if self.node.is_some() => Err(CoreError::Unavailable),
            PeerLocation::Suspended => {
                let token = member
                    .session
                    .as_ref()
                    .and_then(|id| self.sessions.get(id))
                    .map(|s| s.token.clone())
                    .unwrap_or_default();
                self.remove_member(now, room_id, user, LeaveReason::Kicked);
                Ok(token)
            }
            // Held by another node: that node's replica has to evict it.
            PeerLocation::Remote { .. } => Err(CoreError::Unavailable),
        }
    }

    /// Sends `server-message` with `data` to one member of a room, or to every member when
    /// `to` is `None`. Only members of this process that speak the native protocol receive
    /// it. Returns how many connections it was sent to.
    pub fn server_message(
        &mut self,
        room_id: &RoomId,
        to: Option<&UserId>,
        data: RawJson,
    ) -> Result<usize, CoreError> {
        let room = self.rooms.get(room_id).ok_or(CoreError::RoomNotFound)?;
        let conns = match to {
            None => room.conns_except(None),
            Some(user) => {
                let member = room.member(user).ok_or(CoreError::PeerNotFound)?;
                match (&member.location, member.protocol) {
                    (_, Protocol::YWebrtc) => return Err(CoreError::PeerIncompatible),
                    (PeerLocation::Local(conn), Protocol::Native) => vec![*conn],
                    (PeerLocation::Suspended, _) => return Err(CoreError::PeerUnavailable),
                    (PeerLocation::Remote { .. }, _) => return Err(CoreError::Unavailable),
                }
            }
        };
        let sent = conns.len();
        if sent > 0 {
            self.outputs.push_back(Output::Broadcast {
                to: conns,
                msg: ServerMessage::ServerMessage {
                    room_id: room_id.clone(),
                    data,
                },
            });
        }
        Ok(sent)
    }

    /// Up to `limit` rooms in the order of their ids, starting after the room `after`, and
    /// only those in `state` when given; each with its peers.
    pub fn rooms_page(
        &self,
        state: Option<RoomState>,
        after: Option<&RoomId>,
        limit: usize,
    ) -> Vec<RoomMetadata> {
        debug_assert_eq!(
            self.room_ids.len(),
            self.rooms.len(),
            "the room index is stale"
        );
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.room_ids
            .range::<RoomId, _>((start, Bound::Unbounded))
            .filter_map(|id| self.rooms.get(id))
            .filter(|r| state.is_none_or(|s| r.state == s))
            .take(limit)
            .map(Room::metadata)
            .collect()
    }
}
