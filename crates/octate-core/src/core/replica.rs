//! The clustered core: applying the cluster's events and room snapshots, committing or
//! refusing joins, holding what overtakes a join, and relaying from other nodes.

use std::sync::Arc;

use octate_protocol::{
    CloseCode, ErrorCode, LeaveReason, PeerInfo, RoomCloseReason, RoomId, ServerMessage,
    UnixMillis, UserId,
};

use super::{Core, KICKED_MESSAGE, MAX_HELD_BYTES, PendingJoin, Protocol, Reply};
use crate::room::{Member, Room};
use crate::{
    ClusterCommand, ClusterEvent, ConnId, CoreError, JoinKind, MembershipCause, NodeId, Output,
    PeerLocation, RoomSnapshot,
};

impl Core {
    /// Something happened in the cluster (clustered cores only; a single node ignores it).
    pub fn handle_cluster(&mut self, now: UnixMillis, event: ClusterEvent) {
        if self.node.is_none() || self.stopping {
            return;
        }
        match event {
            ClusterEvent::JoinCommitted { conn, snapshot } => {
                self.join_committed(now, conn, snapshot);
            }
            ClusterEvent::JoinRejected { conn, error } => self.join_rejected(now, conn, error),
            ClusterEvent::ResumeCommitted {
                conn,
                user_id,
                snapshot,
                token,
            } => self.resume_committed(now, conn, user_id, snapshot, token),
            ClusterEvent::ResumeRejected { conn, unavailable } => {
                let pending = self.resuming.remove(&conn);
                if self.resuming.is_empty() {
                    self.early_resumed.clear();
                    self.closed_resumed.clear();
                }
                if pending.is_some_and(|p| !p.gone) {
                    self.refuse_resume(conn, unavailable);
                }
            }
            ClusterEvent::Membership { snapshot, cause } => {
                self.apply_snapshot(now, snapshot, &cause, None);
            }
            ClusterEvent::Relay {
                room_id,
                from,
                from_node,
                to,
                text,
            } => self.deliver_remote(now, &room_id, (&from, &from_node), to.as_ref(), text),
            ClusterEvent::Publish {
                room_id,
                from,
                from_node,
                text,
            } => self.deliver_remote_publish(now, &room_id, (&from, &from_node), text),
            ClusterEvent::ServerMessage { room_id, to, text } => {
                self.deliver_server_message(&room_id, to.as_ref(), text);
            }
            ClusterEvent::RoomClosed {
                room_id,
                reason,
                ver,
            } => {
                if self.pending.values().any(|p| p.room_id == room_id) {
                    // A join in flight may have been committed before this close.
                    let closed = self.closed.entry(room_id.clone()).or_insert((0, reason));
                    if ver >= closed.0 {
                        *closed = (ver, reason);
                    }
                }
                if !self.resuming.is_empty() {
                    // So may a resume in flight.
                    let closed = self
                        .closed_resumed
                        .entry(room_id.clone())
                        .or_insert((0, reason));
                    if ver >= closed.0 {
                        *closed = (ver, reason);
                    }
                }
                // A replica newer than the close belongs to the room created again since.
                if self.rooms.get(&room_id).is_none_or(|r| r.ver <= ver) {
                    self.close_room(now, &room_id, reason);
                }
            }
            ClusterEvent::Lifecycle(event) => {
                if self.config.lifecycle_events {
                    self.outputs.push_back(Output::Lifecycle(event));
                }
            }
            ClusterEvent::Degraded => self.degraded = true,
            ClusterEvent::Recovered => self.degraded = false,
        }
    }

    /// Asks the cluster to commit a join; the answer comes as a [`ClusterEvent`].
    pub(super) fn request_join(
        &mut self,
        now: UnixMillis,
        conn: ConnId,
        user_id: UserId,
        room_id: RoomId,
        user_name: String,
        kind: JoinKind,
    ) -> Result<(), CoreError> {
        if self.degraded {
            return Err(CoreError::Unavailable);
        }
        if let Some(pending) = self.pending.get_mut(&conn) {
            // The connection is joining already: answer this request with that join.
            return match kind {
                JoinKind::Create { .. } => Err(CoreError::RoomExists),
                JoinKind::Auth | JoinKind::Join => {
                    pending.also_room_joined = true;
                    Ok(())
                }
            };
        }
        self.pending.insert(
            conn,
            PendingJoin {
                kind: kind.clone(),
                room_id: room_id.clone(),
                user_id: user_id.clone(),
                held: Vec::new(),
                also_room_joined: false,
                published: Vec::new(),
            },
        );
        let resumable = self.resume_enabled() && !self.speaks_ywebrtc(conn);
        let session_id = match (resumable, self.issuer.as_deref_mut()) {
            (true, Some(issuer)) => self.conns.get_mut(&conn).map(|state| {
                state
                    .session
                    .get_or_insert_with(|| issuer.session_id())
                    .clone()
            }),
            _ => None,
        };
        let (token, protocol) = self
            .conns
            .get(&conn)
            .map(|state| (state.token.clone(), state.protocol))
            .unwrap_or_default();
        self.outputs
            .push_back(Output::Cluster(ClusterCommand::Join {
                conn,
                room_id,
                user_id,
                user_name,
                kind,
                joined_at: now,
                session_id,
                token,
                protocol,
            }));
        Ok(())
    }

    fn join_committed(&mut self, now: UnixMillis, conn: ConnId, snapshot: RoomSnapshot) {
        let Some(pending) = self.pending.remove(&conn) else {
            return;
        };
        let room_id = snapshot.room_id.clone();
        // A newer snapshot of the room may have overtaken this answer: judge by the newest.
        let newest = match self.early.get(&room_id) {
            Some(early) if early.ver > snapshot.ver => early.clone(),
            _ => snapshot,
        };
        let closed = self.closed.get(&room_id).copied();
        if !self.pending.values().any(|p| p.room_id == room_id) {
            self.early.remove(&room_id);
            self.closed.remove(&room_id);
        }
        if let Some((closed_ver, reason)) = closed
            && closed_ver > newest.ver
        {
            // The room was closed after this join was committed: the join is gone with it.
            if self.conns.remove(&conn).is_some() {
                self.outputs.push_back(Output::Send {
                    to: conn,
                    msg: ServerMessage::RoomClosed { room_id, reason },
                });
                self.outputs.push_back(Output::Close {
                    conn,
                    code: CloseCode::RoomClosed,
                });
            }
            return;
        }
        let Some(state) = self.conns.get_mut(&conn) else {
            // The connection went away while its join was in flight: undo the join.
            self.outputs
                .push_back(Output::Cluster(ClusterCommand::Leave {
                    conn,
                    room_id,
                    user_id: pending.user_id,
                    reason: LeaveReason::Disconnected,
                }));
            return;
        };
        let user = pending.user_id;
        let owner = newest.members.iter().find(|m| m.user_id == user);
        let entry = match owner {
            Some(m) if Some(&m.node) == self.node.as_ref() && m.conn == conn => m.clone(),
            other => {
                // Replaced by a newer session (or removed) before it was told it joined.
                let code = if other.is_some() {
                    CloseCode::Replaced
                } else {
                    CloseCode::TryAgainLater
                };
                self.outputs.push_back(Output::Close { conn, code });
                self.conns.remove(&conn);
                return;
            }
        };
        state.joined = true;
        self.apply_snapshot(
            now,
            newest,
            &MembershipCause::Joined(user.clone()),
            Some(conn),
        );
        // The replica may already be newer than this answer and lack the joiner.
        let present = self
            .rooms
            .get(&room_id)
            .is_some_and(|r| r.member(&user).is_some());
        if !present {
            self.insert_member(now, &room_id, &entry, conn);
        }
        self.reply_joined(conn, &user, &room_id, Reply::of(&pending.kind));
        if pending.also_room_joined {
            self.reply_joined(conn, &user, &room_id, Reply::RoomJoined);
        }
        let native = !self.speaks_ywebrtc(conn);
        for text in pending.held.into_iter().filter(|_| native) {
            self.stats.messages_relayed += 1;
            self.outputs.push_back(Output::Forward {
                to: vec![conn],
                text,
            });
        }
        for text in pending.published {
            self.publish(now, conn, &text);
        }
    }

    fn join_rejected(&mut self, now: UnixMillis, conn: ConnId, error: CoreError) {
        let Some(pending) = self.pending.remove(&conn) else {
            return;
        };
        if !self.pending.values().any(|p| p.room_id == pending.room_id) {
            self.early.remove(&pending.room_id);
            self.closed.remove(&pending.room_id);
        }
        if !self.conns.contains_key(&conn) {
            return;
        }
        if pending.kind == JoinKind::Auth {
            self.refuse_auth(now, conn, error);
        } else {
            self.send_error(conn, error.code(), error.to_string());
        }
    }

    /// Makes this node's replica of a room match a committed snapshot, telling the local
    /// peers what changed. Older snapshots are ignored; `quiet` gets no notifications.
    pub(super) fn apply_snapshot(
        &mut self,
        now: UnixMillis,
        snapshot: RoomSnapshot,
        cause: &MembershipCause,
        quiet: Option<ConnId>,
    ) {
        let Some(this_node) = self.node.clone() else {
            return;
        };
        if self.pending.values().any(|p| p.room_id == snapshot.room_id)
            && self
                .early
                .get(&snapshot.room_id)
                .is_none_or(|e| e.ver < snapshot.ver)
        {
            self.early
                .insert(snapshot.room_id.clone(), snapshot.clone());
        }
        if !self.resuming.is_empty()
            && self
                .early_resumed
                .get(&snapshot.room_id)
                .is_none_or(|e| e.ver < snapshot.ver)
        {
            self.early_resumed
                .insert(snapshot.room_id.clone(), snapshot.clone());
        }
        let existing = self.rooms.get(&snapshot.room_id);
        if existing.is_some_and(|r| r.ver >= snapshot.ver) {
            return;
        }
        let old: Vec<Member> = existing.map(|r| r.members.clone()).unwrap_or_default();
        let old_host = existing.map(|r| r.host_id.clone());
        let mut members = Vec::with_capacity(snapshot.members.len());
        for m in &snapshot.members {
            let mut protocol = m.protocol;
            let location = if m.suspended {
                PeerLocation::Suspended
            } else if m.node == this_node {
                // A local member stays only while its connection is joined to this room.
                let live = self.conns.get(&m.conn).is_some_and(|c| {
                    c.joined
                        && c.identity.user_id == m.user_id
                        && c.identity.room_id == snapshot.room_id
                });
                let resuming = self
                    .resuming
                    .get(&m.conn)
                    .is_some_and(|p| m.session.as_deref() == Some(p.ticket.session_id.as_str()));
                // This node suspended the member (its connection was lost) and the
                // store's word on it has not come yet.
                let suspending = old.iter().any(|o| {
                    o.info.user_id == m.user_id
                        && o.location == PeerLocation::Suspended
                        && o.session.is_some()
                        && o.session == m.session
                });
                if live {
                    protocol = self
                        .conns
                        .get(&m.conn)
                        .map(|c| c.protocol)
                        .unwrap_or_default();
                    PeerLocation::Local(m.conn)
                } else if resuming || suspending {
                    // Resumed here with the answer on its way (if the connection went
                    // away meanwhile, the answer suspends it again), or suspended here:
                    // no connection yet, or no more.
                    PeerLocation::Suspended
                } else {
                    continue;
                }
            } else {
                PeerLocation::Remote {
                    node: m.node.clone(),
                    conn: m.conn,
                }
            };
            let last_heartbeat = old
                .iter()
                .find(|o| o.info.user_id == m.user_id && o.location == location)
                .map_or(m.joined_at, |o| o.info.last_heartbeat);
            members.push(Member {
                info: PeerInfo {
                    user_id: m.user_id.clone(),
                    user_name: m.user_name.clone(),
                    is_host: snapshot.host_id.as_ref() == Some(&m.user_id),
                    connected_at: m.joined_at,
                    last_heartbeat,
                },
                location,
                session: m.session.clone(),
                protocol,
            });
        }
        if existing.is_none() && !members.iter().any(|m| m.local().is_some()) {
            return;
        }
        // Local members the cluster removed while their connection is still open.
        let mut evicted = Vec::new();
        for o in &old {
            if let PeerLocation::Local(conn) = o.location
                && !members.iter().any(|m| m.location == o.location)
                && self.conns.get(&conn).is_some_and(|c| c.joined)
            {
                evicted.push((conn, o.info.user_id.clone()));
            }
        }
        let room_id = snapshot.room_id.clone();
        let room = self.rooms.entry(room_id.clone()).or_insert_with(|| {
            self.room_ids.insert(room_id.clone());
            Room::new(
                room_id.clone(),
                snapshot.room_name.clone(),
                snapshot.created_by.clone(),
                String::new(),
                snapshot.created_at,
            )
        });
        room.ver = snapshot.ver;
        room.name.clone_from(&snapshot.room_name);
        room.file_id.clone_from(&snapshot.file_id);
        room.created_at = snapshot.created_at;
        room.created_by.clone_from(&snapshot.created_by);
        room.members = members;
        room.refresh_remote_nodes();
        if let Some(host) = snapshot
            .host_id
            .as_ref()
            .and_then(|h| snapshot.members.iter().find(|m| &m.user_id == h))
        {
            room.host_id = host.user_id.clone();
            room.host_name.clone_from(&host.user_name);
        }
        room.touch(now);
        let mut targets = room.conns_except(None);
        targets.retain(|c| Some(*c) != quiet);
        let mut notes = Vec::new();
        if old_host.is_some() {
            for o in &old {
                let now_member = room.member(&o.info.user_id);
                let reason = match cause {
                    MembershipCause::Left(user, reason) if *user == o.info.user_id => *reason,
                    MembershipCause::Replaced(user) if *user == o.info.user_id => {
                        LeaveReason::Replaced
                    }
                    MembershipCause::NodeDown(_) => LeaveReason::NodeDown,
                    _ => LeaveReason::Disconnected,
                };
                match now_member {
                    None => notes.push((
                        o.info.user_id.clone(),
                        ServerMessage::PeerLeft {
                            room_id: room_id.clone(),
                            peer: o.info.clone(),
                            reason,
                        },
                    )),
                    // The same session moved (suspended, resumed elsewhere): nobody is told.
                    Some(n) if o.session.is_some() && n.session == o.session => {}
                    Some(n) if n.location != o.location => {
                        notes.push((
                            o.info.user_id.clone(),
                            ServerMessage::PeerLeft {
                                room_id: room_id.clone(),
                                peer: o.info.clone(),
                                reason: LeaveReason::Replaced,
                            },
                        ));
                        notes.push((
                            o.info.user_id.clone(),
                            ServerMessage::PeerJoined {
                                room_id: room_id.clone(),
                                peer: n.info.clone(),
                            },
                        ));
                    }
                    Some(_) => {}
                }
            }
            for n in &room.members {
                if !old.iter().any(|o| o.info.user_id == n.info.user_id) {
                    notes.push((
                        n.info.user_id.clone(),
                        ServerMessage::PeerJoined {
                            room_id: room_id.clone(),
                            peer: n.info.clone(),
                        },
                    ));
                }
            }
        }
        let host_changed = match &old_host {
            Some(old_host) => *old_host != room.host_id && !old.is_empty(),
            None => false,
        };
        let host_note = host_changed.then(|| ServerMessage::HostChanged {
            room_id: room_id.clone(),
            host_id: room.host_id.clone(),
            host_name: room.host_name.clone(),
        });
        let has_local = room.has_local_members();
        for (conn, user) in evicted {
            // Replaced by a newer session, suspended by the cluster (this node is judged
            // dead, or is retiring: the client resumes elsewhere), or removed by the
            // cluster: the client reconnects.
            let now_there = self
                .rooms
                .get(&room_id)
                .and_then(|r| r.member(&user))
                .map(|m| m.location.clone());
            let suspended = snapshot
                .members
                .iter()
                .any(|m| m.user_id == user && m.suspended);
            let kicked =
                matches!(cause, MembershipCause::Left(u, LeaveReason::Kicked) if *u == user);
            let code = match now_there {
                Some(PeerLocation::Suspended) if suspended => CloseCode::GoingAway,
                Some(_) => CloseCode::Replaced,
                None if matches!(cause, MembershipCause::Replaced(_)) => CloseCode::Replaced,
                None if kicked => CloseCode::Kicked,
                None => CloseCode::TryAgainLater,
            };
            if code == CloseCode::Kicked {
                self.send_error(conn, ErrorCode::Kicked, KICKED_MESSAGE);
            }
            self.outputs.push_back(Output::Close { conn, code });
            self.conns.remove(&conn);
            targets.retain(|c| *c != conn);
        }
        for (subject, msg) in notes {
            let to: Vec<ConnId> = match self.rooms.get(&room_id).and_then(|r| r.member(&subject)) {
                Some(member) => targets
                    .iter()
                    .copied()
                    .filter(|c| member.local() != Some(*c))
                    .collect(),
                None => targets.clone(),
            };
            if !to.is_empty() {
                self.outputs.push_back(Output::Broadcast { to, msg });
            }
        }
        if let Some(msg) = host_note
            && !targets.is_empty()
        {
            self.outputs
                .push_back(Output::Broadcast { to: targets, msg });
        }
        if !has_local {
            self.rooms.remove(&room_id);
            self.room_ids.remove(&room_id);
        }
    }

    /// Delivers a message relayed from another node to this node's peers of the room.
    fn deliver_remote(
        &mut self,
        now: UnixMillis,
        room_id: &RoomId,
        (from, from_node): (&UserId, &NodeId),
        to: Option<&UserId>,
        text: Arc<str>,
    ) {
        if let Some(user) = to
            && self.hold_for_joiner(room_id, user, &text)
        {
            return;
        }
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let current = room.member(from).is_some_and(
            |m| matches!(&m.location, PeerLocation::Remote { node, .. } if node == from_node),
        );
        if !current {
            // The sender left, or its session moved elsewhere since (the message is stale).
            return;
        }
        room.touch(now);
        let to = match to {
            Some(user) => room
                .member(user)
                .filter(|m| m.protocol == Protocol::Native)
                .and_then(Member::local)
                .into_iter()
                .collect(),
            None => room.conns_except(Some(from)),
        };
        if !to.is_empty() {
            self.stats.messages_relayed += to.len() as u64;
            self.outputs.push_back(Output::Forward { to, text });
        }
    }

    /// Delivers a `y-webrtc` `publish` from another node to this node's subscribers of
    /// the room's topic.
    fn deliver_remote_publish(
        &mut self,
        now: UnixMillis,
        room_id: &RoomId,
        (from, from_node): (&UserId, &NodeId),
        text: Arc<str>,
    ) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let current = room.member(from).is_some_and(
            |m| matches!(&m.location, PeerLocation::Remote { node, .. } if node == from_node),
        );
        if !current {
            return;
        }
        room.touch(now);
        let conns = &self.conns;
        let to: Vec<ConnId> = room
            .ywebrtc_conns()
            .filter(|c| conns.get(c).is_some_and(|s| s.subscribed))
            .collect();
        if !to.is_empty() {
            self.stats.messages_relayed += to.len() as u64;
            self.outputs.push_back(Output::Forward { to, text });
        }
    }

    /// Keeps a signal for a local user whose join is committed elsewhere but not answered
    /// here yet; `false` when the user is a live member here or has no join in flight.
    fn hold_for_joiner(&mut self, room_id: &RoomId, user: &UserId, text: &Arc<str>) -> bool {
        let live_here = self
            .rooms
            .get(room_id)
            .and_then(|r| r.member(user))
            .and_then(Member::local)
            .is_some();
        if live_here {
            return false;
        }
        let Some(pending) = self
            .pending
            .values_mut()
            .find(|p| &p.room_id == room_id && &p.user_id == user)
        else {
            return false;
        };
        let held: usize = pending.held.iter().map(|t| t.len()).sum();
        if held + text.len() <= MAX_HELD_BYTES {
            pending.held.push(text.clone());
        }
        true
    }

    /// On a cluster, a room quiet here for the inactivity timeout may be busy on another
    /// node: the store closes it (and every node, this one too, hears `room-closed`) only
    /// if no node reported activity within the timeout. Asked again, while the room stays
    /// quiet here, as often as nodes report activity.
    pub(super) fn ask_to_close_inactive(&mut self, now: UnixMillis, room_id: &RoomId) {
        let every = self.activity_every;
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room
            .inactive_close_asked
            .is_some_and(|at| now.saturating_sub(at) <= every)
        {
            return;
        }
        room.inactive_close_asked = Some(now);
        self.outputs
            .push_back(Output::Cluster(ClusterCommand::CloseRoom {
                room_id: room_id.clone(),
                reason: RoomCloseReason::Inactive,
            }));
    }

    /// Closes a room here and, on a cluster, on every other node too.
    pub(super) fn close_room_everywhere(
        &mut self,
        now: UnixMillis,
        room_id: &RoomId,
        reason: RoomCloseReason,
    ) {
        if self.node.is_some() {
            self.outputs
                .push_back(Output::Cluster(ClusterCommand::CloseRoom {
                    room_id: room_id.clone(),
                    reason,
                }));
        }
        self.close_room(now, room_id, reason);
    }
}
