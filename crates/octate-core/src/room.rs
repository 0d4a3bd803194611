//! One room: who is in it, who hosts it, and when anything last happened.
//!
//! A room knows users, not sockets: each member carries where its connection lives
//! (a [`ConnId`] of this process, or another node of a cluster), and nothing else
//! about transport.

use octate_protocol::{PeerInfo, RoomId, RoomMetadata, RoomState, UnixMillis, UserId};

use crate::{ConnId, NodeId, PeerLocation, Protocol};

/// A user in a room and where the connection that reaches it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) info: PeerInfo,
    pub(crate) location: PeerLocation,
    /// The member's resumable session on this process, if it has one.
    pub(crate) session: Option<String>,
    /// What its connection speaks ([`Protocol::Native`] for members of other nodes).
    pub(crate) protocol: Protocol,
}

impl Member {
    /// The member's connection, when it is one of this process.
    pub(crate) fn local(&self) -> Option<ConnId> {
        self.location.local()
    }
}

/// A room in memory.
#[derive(Clone, Debug)]
pub(crate) struct Room {
    pub(crate) id: RoomId,
    pub(crate) name: String,
    pub(crate) host_id: UserId,
    pub(crate) host_name: String,
    pub(crate) created_by: UserId,
    pub(crate) file_id: Option<String>,
    pub(crate) version: Option<u64>,
    pub(crate) created_at: UnixMillis,
    pub(crate) last_activity: UnixMillis,
    pub(crate) state: RoomState,
    /// Members in the order they joined: the first is the longest connected.
    pub(crate) members: Vec<Member>,
    /// Version of the cluster snapshot this replica reflects (0 on a single node).
    pub(crate) ver: u64,
    /// Other nodes with members of this room (always empty on a single node).
    pub(crate) remote_nodes: Vec<NodeId>,
    /// On a cluster: when this node last told the store its peers were active here.
    pub(crate) activity_reported: UnixMillis,
    /// On a cluster: when this node last asked the store to close the room as inactive.
    pub(crate) inactive_close_asked: Option<UnixMillis>,
}

impl Room {
    pub(crate) fn new(
        id: RoomId,
        name: String,
        host_id: UserId,
        host_name: String,
        now: UnixMillis,
    ) -> Self {
        Self {
            id,
            name,
            created_by: host_id.clone(),
            host_id,
            host_name,
            file_id: None,
            version: None,
            created_at: now,
            last_activity: now,
            state: RoomState::Active,
            members: Vec::new(),
            ver: 0,
            remote_nodes: Vec::new(),
            activity_reported: 0,
            inactive_close_asked: None,
        }
    }

    pub(crate) fn member(&self, user: &UserId) -> Option<&Member> {
        self.members.iter().find(|m| &m.info.user_id == user)
    }

    pub(crate) fn member_mut(&mut self, user: &UserId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| &m.info.user_id == user)
    }

    /// Records activity: the room is active again.
    pub(crate) fn touch(&mut self, now: UnixMillis) {
        self.last_activity = self.last_activity.max(now);
        self.state = RoomState::Active;
    }

    /// Records activity of this node's own peers; true when the cluster's store should
    /// hear of it: the room has members on other nodes, which do not see this traffic,
    /// and the store was not told within `every`.
    pub(crate) fn touch_local(&mut self, now: UnixMillis, every: u64) -> bool {
        self.touch(now);
        if self.remote_nodes.is_empty() || now.saturating_sub(self.activity_reported) < every {
            return false;
        }
        self.activity_reported = now;
        true
    }

    /// Adds a member; the first member of an empty room becomes its host.
    pub(crate) fn add(
        &mut self,
        user: UserId,
        user_name: String,
        (conn, protocol): (ConnId, Protocol),
        now: UnixMillis,
    ) {
        let is_host = self.members.is_empty();
        if is_host {
            self.host_id = user.clone();
            self.host_name = user_name.clone();
        }
        let info = PeerInfo {
            user_id: user,
            user_name,
            is_host,
            connected_at: now,
            last_heartbeat: now,
        };
        self.members.push(Member {
            info,
            location: PeerLocation::Local(conn),
            session: None,
            protocol,
        });
        self.touch(now);
    }

    /// Removes a member; returns it and, when it hosted a room with peers left, the new host.
    pub(crate) fn remove(
        &mut self,
        user: &UserId,
        now: UnixMillis,
    ) -> Option<(Member, Option<PeerInfo>)> {
        let index = self.members.iter().position(|m| &m.info.user_id == user)?;
        let member = self.members.remove(index);
        self.touch(now);
        let mut new_host = None;
        if member.info.is_host
            && let Some(next) = self.members.first_mut()
        {
            next.info.is_host = true;
            self.host_id = next.info.user_id.clone();
            self.host_name = next.info.user_name.clone();
            new_host = Some(next.info.clone());
        }
        Some((member, new_host))
    }

    /// Local connections of every native member except `except`: who gets the room's
    /// native events and messages.
    pub(crate) fn conns_except(&self, except: Option<&UserId>) -> Vec<ConnId> {
        self.members
            .iter()
            .filter(|m| m.protocol == Protocol::Native && Some(&m.info.user_id) != except)
            .filter_map(Member::local)
            .collect()
    }

    /// Local connections of every member, whatever it speaks.
    pub(crate) fn local_conns(&self) -> Vec<ConnId> {
        self.members.iter().filter_map(Member::local).collect()
    }

    /// Local connections of the `y-webrtc` members.
    pub(crate) fn ywebrtc_conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.members
            .iter()
            .filter(|m| m.protocol == Protocol::YWebrtc)
            .filter_map(Member::local)
    }

    /// Whether any member's connection is one of this process.
    pub(crate) fn has_local_members(&self) -> bool {
        self.members.iter().any(|m| m.local().is_some())
    }

    /// Recomputes which other nodes hold members, after the members changed.
    pub(crate) fn refresh_remote_nodes(&mut self) {
        self.remote_nodes.clear();
        for m in &self.members {
            if let PeerLocation::Remote { node, .. } = &m.location
                && !self.remote_nodes.contains(node)
            {
                self.remote_nodes.push(node.clone());
            }
        }
    }

    pub(crate) fn peers(&self) -> Vec<PeerInfo> {
        self.members.iter().map(|m| m.info.clone()).collect()
    }

    pub(crate) fn metadata(&self) -> RoomMetadata {
        let peers = self.peers();
        RoomMetadata {
            room_id: self.id.clone(),
            room_name: self.name.clone(),
            host_id: self.host_id.clone(),
            host_name: self.host_name.clone(),
            file_id: self.file_id.clone(),
            content: None,
            version: self.version,
            created_at: self.created_at,
            last_activity: self.last_activity,
            state: self.state,
            peer_count: peers.len(),
            peers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::new(s).expect("valid id")
    }

    #[test]
    fn first_member_hosts_and_host_passes_to_longest_connected() {
        let mut room = Room::new(
            RoomId::new("r").expect("id"),
            "R".into(),
            uid("a"),
            "A".into(),
            0,
        );
        room.add(uid("a"), "A".into(), (ConnId(1), Protocol::Native), 1);
        room.add(uid("b"), "B".into(), (ConnId(2), Protocol::Native), 2);
        room.add(uid("c"), "C".into(), (ConnId(3), Protocol::Native), 3);
        assert!(room.members[0].info.is_host);
        let (gone, new_host) = room.remove(&uid("a"), 4).expect("a is a member");
        assert_eq!(gone.local(), Some(ConnId(1)));
        let new_host = new_host.expect("someone takes over");
        assert_eq!(new_host.user_id, uid("b"));
        assert_eq!(room.host_id, uid("b"));
        assert_eq!(room.members.iter().filter(|m| m.info.is_host).count(), 1);
        let (_, none) = room.remove(&uid("c"), 5).expect("c is a member");
        assert!(none.is_none(), "a non-host leaving changes no host");
    }
}
