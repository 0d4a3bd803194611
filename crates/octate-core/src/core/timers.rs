//! The core's timers: heartbeats, dropping silent peers, cleaning up idle rooms and
//! the memory level policy's evictions.

use octate_protocol::{CloseCode, LeaveReason, RoomCloseReason, RoomId, RoomState, UnixMillis};

use super::{Conn, Core, Protocol};
use crate::config::millis;
use crate::{ConnId, Output};

impl Core {
    pub(super) fn heartbeat(&mut self, now: UnixMillis) {
        self.drop_silent_peers(now);
        // `y-webrtc` clients ping the server themselves.
        let mut to: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.protocol == Protocol::Native)
            .map(|(conn, _)| *conn)
            .collect();
        if !to.is_empty() {
            to.sort_unstable();
            self.outputs.push_back(Output::Heartbeat { to });
        }
    }

    /// Closes every connection silent for longer than the peer timeout.
    pub(super) fn drop_silent_peers(&mut self, now: UnixMillis) {
        let native = millis(self.config.peer_timeout);
        let ywebrtc = millis(self.config.ywebrtc_peer_timeout);
        self.close_where(now, CloseCode::HeartbeatTimeout, |c| {
            let timeout = match c.protocol {
                Protocol::Native => native,
                Protocol::YWebrtc => ywebrtc,
            };
            now.saturating_sub(c.last_seen) > timeout
        });
    }

    fn close_where(&mut self, now: UnixMillis, code: CloseCode, pred: impl Fn(&Conn) -> bool) {
        let mut doomed: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(id, _)| *id)
            .collect();
        doomed.sort_unstable();
        for conn in doomed {
            if code == CloseCode::HeartbeatTimeout {
                self.stats.peers_timed_out += 1;
            }
            self.close(now, conn, code);
        }
    }

    /// Removes empty and inactive rooms and refreshes every room's state.
    pub(super) fn cleanup(&mut self, now: UnixMillis) {
        let grace = millis(self.config.empty_room_grace);
        let inactive = millis(self.config.room_inactive_timeout);
        let idle = millis(self.config.room_idle_after);
        let mut empty = Vec::new();
        let mut stale = Vec::new();
        for room in self.rooms.values_mut() {
            let quiet = now.saturating_sub(room.last_activity);
            if room.members.is_empty() {
                if quiet >= grace {
                    empty.push(room.id.clone());
                }
            } else if quiet > inactive {
                stale.push(room.id.clone());
            } else if quiet > idle {
                room.state = RoomState::Idle;
            }
        }
        empty.sort_unstable();
        stale.sort_unstable();
        for room_id in empty {
            self.remove_room(now, &room_id, RoomCloseReason::Empty);
        }
        for room_id in stale {
            if self.node.is_some() {
                self.ask_to_close_inactive(now, &room_id);
            } else {
                self.close_room(now, &room_id, RoomCloseReason::Inactive);
            }
        }
    }

    /// Under critical memory pressure: closes idle rooms and drops idle peers.
    pub(super) fn drop_idle(&mut self, now: UnixMillis) {
        let idle_rooms_after = millis(self.config.room_idle_after);
        let mut idle: Vec<RoomId> = self
            .rooms
            .values()
            .filter(|r| {
                now.saturating_sub(r.last_activity) > idle_rooms_after || r.state == RoomState::Idle
            })
            .map(|r| r.id.clone())
            .collect();
        idle.sort_unstable();
        for room_id in idle {
            self.close_room_everywhere(now, &room_id, RoomCloseReason::MemoryPressure);
        }
        let idle_peer = millis(self.config.idle_peer_after);
        self.close_where(now, CloseCode::MemoryPressure, |c| {
            now.saturating_sub(c.last_seen) > idle_peer
        });
        // Suspended peers hold memory for a connection that may never come back.
        while let Some((_, session_id)) = self.deadlines.pop_first() {
            if let Some(session) = self.sessions.remove(&session_id) {
                self.remove_member(
                    now,
                    &session.room_id,
                    &session.user_id,
                    LeaveReason::MemoryPressure,
                );
            }
        }
    }
}
