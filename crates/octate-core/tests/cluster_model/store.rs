//! `FakeStore`: a pure model of the Redis scripts of `octate-cluster` (join, leave,
//! close, ticket, suspend, resume, expire, reap), and the resume issuer the modelled
//! cores use.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use octate_core::{
    ClusterEvent, ClusterMember, ConnId, CoreError, JoinKind, MembershipCause, NodeId,
    ResumeIssuer, RoomSnapshot, TokenDigest, TokenRef,
};
use octate_protocol::{LeaveReason, RoomId, UserId};

use super::GRACE_MS;

/// Mints `<node>-s<n>` session ids and `<node>-t<n>` tokens.
#[derive(Debug)]
pub(crate) struct CountingIssuer {
    pub(crate) node: String,
    pub(crate) next: u64,
}

impl ResumeIssuer for CountingIssuer {
    fn session_id(&mut self) -> String {
        self.next += 1;
        format!("{}-s{}", self.node, self.next)
    }

    fn token(&mut self) -> (String, TokenDigest) {
        self.next += 1;
        let token = format!("{}-t{}", self.node, self.next);
        let digest = digest_of(&token);
        (token, digest)
    }

    fn digest(&self, token: &str) -> TokenDigest {
        digest_of(token)
    }
}

/// An injective digest of tokens shorter than 32 bytes: their length, then their bytes.
pub(crate) fn digest_of(token: &str) -> TokenDigest {
    let bytes = token.as_bytes();
    assert!(bytes.len() < 32, "model tokens are short");
    let mut digest = [0u8; 32];
    digest[0] = u8::try_from(bytes.len()).expect("short");
    digest[1..=bytes.len()].copy_from_slice(bytes);
    TokenDigest(digest)
}

/// What the store keeps of a member's resumable session besides its id.
#[derive(Clone, Debug, Default)]
pub(crate) struct StoreSession {
    /// Digest of the current resume token (`d`); none before the first ticket.
    pub(crate) digest: Option<TokenDigest>,
    /// End of the grace while suspended (`x`).
    pub(crate) until: Option<u64>,
    /// The token that opened the session (`t`, `e`).
    pub(crate) token: TokenRef,
}

/// One room as the store holds it.
#[derive(Clone, Debug)]
pub(crate) struct StoreRoom {
    pub(crate) ver: u64,
    pub(crate) created_by: UserId,
    pub(crate) created_at: u64,
    pub(crate) host: Option<UserId>,
    pub(crate) members: Vec<ClusterMember>,
    /// Each member's session fields, by user.
    pub(crate) resume: BTreeMap<UserId, StoreSession>,
}

impl StoreRoom {
    /// Keeps the host while it is a member, else the longest joined member.
    pub(crate) fn elect(&mut self) {
        if self
            .host
            .as_ref()
            .is_none_or(|h| !self.members.iter().any(|m| &m.user_id == h))
        {
            self.host = self.members.first().map(|m| m.user_id.clone());
        }
    }
}

/// How one membership (a user's join, kept through suspensions and resumes) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Removed for this reason (`timeout`: its grace ran out).
    Left(LeaveReason),
    /// The same user joined again afresh.
    Replaced,
    /// Its node died and it had no session to suspend.
    NodeDown,
    /// Its room was deleted.
    Closed,
}

/// The life of one membership, named by (room, user, joined at).
#[derive(Clone, Debug, Default)]
pub(crate) struct Life {
    /// How many times it was suspended.
    pub(crate) suspensions: u32,
    /// How it ended, once it did.
    pub(crate) end: Option<End>,
}

/// A publication: the nodes to tell and the event.
pub(crate) type Publication = (Vec<NodeId>, ClusterEvent);

/// The shared store: what the join/leave/ticket/suspend/resume/expire/reap scripts compute.
#[derive(Default)]
pub(crate) struct FakeStore {
    pub(crate) rooms: BTreeMap<RoomId, StoreRoom>,
    pub(crate) max_peers: usize,
    /// Versions grow across a room's incarnations (the scripts take them from the clock).
    pub(crate) clock: u64,
    /// Room and user of each resumable session (`session:<id>`).
    pub(crate) sessions: HashMap<String, (RoomId, UserId)>,
    /// Every membership ever committed.
    pub(crate) lives: BTreeMap<(RoomId, UserId, u64), Life>,
}

impl FakeStore {
    pub(crate) fn snapshot(&self, room_id: &RoomId) -> Option<RoomSnapshot> {
        let r = self.rooms.get(room_id)?;
        Some(RoomSnapshot {
            room_id: room_id.clone(),
            ver: r.ver,
            room_name: room_id.to_string(),
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            file_id: None,
            host_id: r.host.clone(),
            members: r.members.clone(),
        })
    }

    pub(crate) fn nodes_of(&self, room_id: &RoomId) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .rooms
            .get(room_id)
            .map(|r| r.members.iter().map(|m| m.node.clone()).collect())
            .unwrap_or_default();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Ends a membership the scripts removed: its session key goes (`forget_session`).
    pub(crate) fn ended(&mut self, room_id: &RoomId, member: &ClusterMember, end: End) {
        if let Some(session) = &member.session {
            self.sessions.remove(session);
        }
        if let Some(life) =
            self.lives
                .get_mut(&(room_id.clone(), member.user_id.clone(), member.joined_at))
            && life.end.is_none()
        {
            life.end = Some(end);
        }
    }

    /// `settle_room`: drops an emptied room, or elects, bumps the version and tells the
    /// room's nodes.
    pub(crate) fn settle(
        &mut self,
        room_id: &RoomId,
        cause: MembershipCause,
    ) -> Option<Publication> {
        let room = self.rooms.get_mut(room_id)?;
        if room.members.is_empty() {
            self.rooms.remove(room_id);
            return None;
        }
        room.elect();
        self.clock += 1;
        room.ver = self.clock;
        let snapshot = self.snapshot(room_id).expect("room exists");
        Some((
            self.nodes_of(room_id),
            ClusterEvent::Membership { snapshot, cause },
        ))
    }

    /// The join script: returns the result and the nodes to tell. Like the leave
    /// script, it tells every node of the room, the caller and a replaced session's
    /// node included, so a node also hears of its own changes in the store's order.
    pub(crate) fn join(
        &mut self,
        room_id: &RoomId,
        member: ClusterMember,
        kind: &JoinKind,
    ) -> Result<(RoomSnapshot, MembershipCause, Vec<NodeId>), CoreError> {
        let exists = self.rooms.contains_key(room_id);
        if exists && matches!(kind, JoinKind::Create { .. }) {
            return Err(CoreError::RoomExists);
        }
        let mut tell = self.nodes_of(room_id);
        let room = self
            .rooms
            .entry(room_id.clone())
            .or_insert_with(|| StoreRoom {
                ver: 0,
                created_by: member.user_id.clone(),
                created_at: member.joined_at,
                host: None,
                members: Vec::new(),
                resume: BTreeMap::new(),
            });
        let old = room
            .members
            .iter()
            .position(|m| m.user_id == member.user_id);
        let count = room.members.len() - usize::from(old.is_some());
        if count >= self.max_peers {
            if room.members.is_empty() {
                self.rooms.remove(room_id);
            }
            return Err(CoreError::RoomFull);
        }
        let (cause, gone) = match old {
            Some(i) => {
                let gone = room.members.remove(i);
                room.resume.remove(&gone.user_id);
                tell.push(gone.node.clone());
                (
                    MembershipCause::Replaced(member.user_id.clone()),
                    Some(gone),
                )
            }
            None => (MembershipCause::Joined(member.user_id.clone()), None),
        };
        room.members.push(member.clone());
        room.members
            .sort_by(|a, b| (a.joined_at, &a.user_id).cmp(&(b.joined_at, &b.user_id)));
        room.resume
            .insert(member.user_id.clone(), StoreSession::default());
        room.elect();
        self.clock += 1;
        room.ver = self.clock;
        if let Some(gone) = gone {
            self.ended(room_id, &gone, End::Replaced);
        }
        if let Some(session) = &member.session {
            self.sessions
                .insert(session.clone(), (room_id.clone(), member.user_id.clone()));
        }
        self.lives.insert(
            (room_id.clone(), member.user_id.clone(), member.joined_at),
            Life::default(),
        );
        tell.sort();
        tell.dedup();
        let snapshot = self.snapshot(room_id).expect("just written");
        Ok((snapshot, cause, tell))
    }

    /// The close script: deletes the room; returns the close's version and the nodes to tell.
    pub(crate) fn close(&mut self, room_id: &RoomId) -> Option<(u64, Vec<NodeId>)> {
        let tell = self.nodes_of(room_id);
        let room = self.rooms.remove(room_id)?;
        for member in &room.members {
            self.ended(room_id, member, End::Closed);
        }
        self.clock += 1;
        Some((self.clock, tell))
    }

    /// The leave script: a no-op unless the session still owns the user.
    pub(crate) fn leave(
        &mut self,
        room_id: &RoomId,
        user: &UserId,
        node: &NodeId,
        conn: ConnId,
        reason: LeaveReason,
    ) -> Option<(RoomSnapshot, Vec<NodeId>)> {
        let room = self.rooms.get_mut(room_id)?;
        let i = room
            .members
            .iter()
            .position(|m| &m.user_id == user && &m.node == node && m.conn == conn)?;
        let gone = room.members.remove(i);
        room.resume.remove(user);
        if room.host.as_ref() == Some(user) {
            room.host = room.members.first().map(|m| m.user_id.clone());
        }
        self.clock += 1;
        room.ver = self.clock;
        self.ended(room_id, &gone, End::Left(reason));
        let snapshot = self.snapshot(room_id).expect("room exists");
        let mut tell = self.nodes_of(room_id);
        tell.push(node.clone());
        tell.sort();
        tell.dedup();
        if snapshot.members.is_empty() {
            self.rooms.remove(room_id);
        }
        Some((snapshot, tell))
    }

    /// The kick script: removes the user whatever node holds it (or while suspended),
    /// ends its session, and tells the room's nodes and the node that held it. Returns
    /// the token its session ran on and the publication.
    pub(crate) fn kick(
        &mut self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<(TokenRef, Publication), CoreError> {
        let room = self.rooms.get_mut(room_id).ok_or(CoreError::RoomNotFound)?;
        let i = room
            .members
            .iter()
            .position(|m| &m.user_id == user)
            .ok_or(CoreError::PeerNotFound)?;
        let gone = room.members.remove(i);
        let session = room.resume.remove(user).unwrap_or_default();
        room.elect();
        self.clock += 1;
        room.ver = self.clock;
        self.ended(room_id, &gone, End::Left(LeaveReason::Kicked));
        let snapshot = self.snapshot(room_id).expect("room exists");
        let mut tell = self.nodes_of(room_id);
        tell.push(gone.node.clone());
        tell.sort();
        tell.dedup();
        if snapshot.members.is_empty() {
            self.rooms.remove(room_id);
        }
        let cause = MembershipCause::Left(user.clone(), LeaveReason::Kicked);
        Ok((
            session.token,
            (tell, ClusterEvent::Membership { snapshot, cause }),
        ))
    }

    /// The ticket script: records the digest of the newest ticket of a member that the
    /// session (node, conn) still holds, live.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ticket(
        &mut self,
        room_id: &RoomId,
        user: &UserId,
        node: &NodeId,
        conn: ConnId,
        session: &str,
        digest: TokenDigest,
        token: TokenRef,
    ) -> bool {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return false;
        };
        let Some(m) = room
            .members
            .iter_mut()
            .find(|m| &m.user_id == user && &m.node == node && m.conn == conn && !m.suspended)
        else {
            return false;
        };
        if let Some(old) = m.session.as_ref().filter(|s| *s != session) {
            self.sessions.remove(old);
        }
        m.session = Some(session.to_owned());
        let fields = room.resume.entry(user.clone()).or_default();
        fields.digest = Some(digest);
        fields.token = token;
        self.sessions
            .insert(session.to_owned(), (room_id.clone(), user.clone()));
        true
    }

    /// The token script: the session (node, conn), live, now runs on `token`.
    pub(crate) fn token(
        &mut self,
        room_id: &RoomId,
        user: &UserId,
        node: &NodeId,
        conn: ConnId,
        token: TokenRef,
    ) -> bool {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return false;
        };
        let owns = room
            .members
            .iter()
            .any(|m| &m.user_id == user && &m.node == node && m.conn == conn && !m.suspended);
        if owns {
            room.resume.entry(user.clone()).or_default().token = token;
        }
        owns
    }

    /// The suspend script: suspends a member that the session (node, conn) holds live,
    /// or removes it when it has no ticket yet.
    pub(crate) fn suspend(
        &mut self,
        now: u64,
        room_id: &RoomId,
        user: &UserId,
        node: &NodeId,
        conn: ConnId,
    ) -> Option<Publication> {
        let room = self.rooms.get_mut(room_id)?;
        let i = room
            .members
            .iter()
            .position(|m| &m.user_id == user && &m.node == node && m.conn == conn)?;
        if room.members[i].suspended {
            return None;
        }
        let fields = room.resume.entry(user.clone()).or_default();
        if room.members[i].session.is_none() || fields.digest.is_none() {
            let gone = room.members.remove(i);
            room.resume.remove(user);
            self.ended(room_id, &gone, End::Left(LeaveReason::Disconnected));
            return self.settle(
                room_id,
                MembershipCause::Left(user.clone(), LeaveReason::Disconnected),
            );
        }
        fields.until = Some(now + GRACE_MS);
        let m = &mut room.members[i];
        m.suspended = true;
        let key = (room_id.clone(), user.clone(), m.joined_at);
        self.lives.entry(key).or_default().suspensions += 1;
        self.settle(room_id, MembershipCause::Suspended(user.clone()))
    }

    /// The resume script: moves the session to (node, conn) when `presented` is its
    /// current token and its grace has not run out. Returns the user, the snapshot, the
    /// session's token and the other nodes to tell (the old holder's node included).
    pub(crate) fn resume(
        &mut self,
        now: u64,
        session: &str,
        presented: &TokenDigest,
        (node, conn): (&NodeId, ConnId),
        next: TokenDigest,
    ) -> Option<(UserId, RoomSnapshot, TokenRef, Vec<NodeId>)> {
        let (room_id, user) = self.sessions.get(session)?.clone();
        let room = self.rooms.get_mut(&room_id)?;
        let m = room.members.iter_mut().find(|m| m.user_id == user)?;
        if m.session.as_deref() != Some(session) {
            return None;
        }
        let fields = room.resume.entry(user.clone()).or_default();
        if fields.digest.as_ref() != Some(presented) {
            return None;
        }
        if fields.until.is_some_and(|until| until <= now) {
            return None;
        }
        let old_node = m.node.clone();
        m.node = node.clone();
        m.conn = conn;
        m.suspended = false;
        fields.until = None;
        fields.digest = Some(next);
        let token = fields.token.clone();
        room.elect();
        self.clock += 1;
        room.ver = self.clock;
        let snapshot = self.snapshot(&room_id).expect("room exists");
        let mut tell = self.nodes_of(&room_id);
        tell.push(old_node);
        tell.sort();
        tell.dedup();
        tell.retain(|n| n != node);
        Some((user, snapshot, token, tell))
    }

    /// The expire script: ends every suspension whose grace ran out (`left`, `timeout`).
    pub(crate) fn expire(&mut self, now: u64) -> Vec<Publication> {
        let mut due: Vec<(u64, RoomId, UserId)> = self
            .rooms
            .iter()
            .flat_map(|(room_id, room)| {
                room.resume.iter().filter_map(move |(user, f)| {
                    f.until
                        .filter(|until| *until <= now)
                        .map(|until| (until, room_id.clone(), user.clone()))
                })
            })
            .collect();
        due.sort();
        let mut out = Vec::new();
        for (_, room_id, user) in due {
            let Some(room) = self.rooms.get_mut(&room_id) else {
                continue;
            };
            let Some(i) = room.members.iter().position(|m| m.user_id == user) else {
                continue;
            };
            let gone = room.members.remove(i);
            room.resume.remove(&user);
            self.ended(&room_id, &gone, End::Left(LeaveReason::Timeout));
            out.extend(self.settle(
                &room_id,
                MembershipCause::Left(user.clone(), LeaveReason::Timeout),
            ));
        }
        out
    }

    /// The reap script: a dead node's live members are suspended when they have a
    /// ticket, removed otherwise; each touched room is told once (`node-down`).
    pub(crate) fn reap(&mut self, now: u64, dead: &NodeId) -> Vec<Publication> {
        let mut touched = BTreeSet::new();
        let mut gone = Vec::new();
        for (room_id, room) in &mut self.rooms {
            let mut i = 0;
            while i < room.members.len() {
                let m = &mut room.members[i];
                if &m.node != dead || m.suspended {
                    i += 1;
                    continue;
                }
                touched.insert(room_id.clone());
                let fields = room.resume.entry(m.user_id.clone()).or_default();
                if m.session.is_some() && fields.digest.is_some() {
                    fields.until = Some(now + GRACE_MS);
                    m.suspended = true;
                    let key = (room_id.clone(), m.user_id.clone(), m.joined_at);
                    self.lives.entry(key).or_default().suspensions += 1;
                    i += 1;
                } else {
                    let member = room.members.remove(i);
                    room.resume.remove(&member.user_id);
                    gone.push((room_id.clone(), member));
                }
            }
        }
        for (room_id, member) in gone {
            self.ended(&room_id, &member, End::NodeDown);
        }
        touched
            .into_iter()
            .filter_map(|room_id| self.settle(&room_id, MembershipCause::NodeDown(dead.clone())))
            .collect()
    }

    /// Every committed member of a room, once per user.
    pub(crate) fn check(&self) {
        for (room_id, room) in &self.rooms {
            let users: BTreeSet<&UserId> = room.members.iter().map(|m| &m.user_id).collect();
            assert_eq!(users.len(), room.members.len(), "a user twice in {room_id}");
            for m in &room.members {
                let until = room.resume.get(&m.user_id).and_then(|f| f.until);
                assert_eq!(m.suspended, until.is_some(), "{} in {room_id}", m.user_id);
            }
        }
    }
}
