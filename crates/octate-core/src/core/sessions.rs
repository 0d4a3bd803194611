//! Resumable sessions: tickets, suspending a lost connection for the resume grace,
//! resuming it with its token, and ending sessions whose grace is over.

use octate_protocol::{CloseCode, ErrorCode, LeaveReason, ServerMessage, UnixMillis, UserId};

use super::{Conn, Core, Identity, PendingResume, Protocol, Reply};
use crate::config::millis;
use crate::room::{Member, Room};
use crate::session::{ResumeRefusal, Session, SessionState, TokenRef, ticket};
use crate::{
    ClusterCommand, ConnId, LifecycleKind, MembershipCause, Output, PeerLocation, RoomSnapshot,
};

impl Core {
    /// A connection dropped without leaving (network error, no close frame, 1001, 1006):
    /// its peer is suspended for the resume grace, when it has a session; otherwise it is
    /// a disconnect.
    pub fn handle_connection_lost(&mut self, now: UnixMillis, conn: ConnId) {
        let suspendable = self.resume_enabled()
            && !self.stopping
            && self
                .conns
                .get(&conn)
                .is_some_and(|c| c.joined && c.session.is_some());
        if !suspendable {
            self.handle_disconnect(now, conn);
            return;
        }
        let Some(state) = self.conns.remove(&conn) else {
            return;
        };
        if self.node.is_some() {
            // The cluster keeps the grace: it survives this node.
            if let Some(member) = self
                .rooms
                .get_mut(&state.identity.room_id)
                .and_then(|r| r.member_mut(&state.identity.user_id))
                && member.local() == Some(conn)
            {
                member.location = PeerLocation::Suspended;
            }
            self.outputs
                .push_back(Output::Cluster(ClusterCommand::Suspend {
                    conn,
                    room_id: state.identity.room_id,
                    user_id: state.identity.user_id,
                }));
            return;
        }
        let Some(session_id) = state.session else {
            return;
        };
        let until = now.saturating_add(millis(self.config.resume_grace));
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        session.state = SessionState::Suspended { until };
        self.deadlines.insert((until, session_id));
        if let Some(member) = self
            .rooms
            .get_mut(&state.identity.room_id)
            .and_then(|r| r.member_mut(&state.identity.user_id))
            && member.local() == Some(conn)
        {
            member.location = PeerLocation::Suspended;
            let Identity { user_id, room_id } = state.identity;
            self.lifecycle(now, &room_id, || LifecycleKind::PeerSuspended(user_id));
        }
    }

    /// A new connection asks to take over a session with its resume token (instead of
    /// authenticating). On success it gets `resumed` and the others are told nothing;
    /// otherwise `resume-failed` and a 4001 close.
    pub fn handle_resume(
        &mut self,
        now: UnixMillis,
        conn: ConnId,
        session_id: &str,
        resume_token: &str,
    ) -> Result<(), ResumeRefusal> {
        if self.stopping {
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::GoingAway,
            });
            return Ok(());
        }
        if self.conns.contains_key(&conn) {
            self.send_error(
                conn,
                ErrorCode::AlreadyAuthenticated,
                "connection is authenticated",
            );
            return Ok(());
        }
        if self.node.is_some() {
            return self.request_resume(conn, session_id, resume_token);
        }
        let checked = self.check_resume(now, session_id, resume_token);
        let session = match checked {
            Ok(session) => session,
            Err(refusal) => {
                self.refuse_resume(conn, false);
                return Err(refusal);
            }
        };
        match session.state {
            SessionState::Live(old) => {
                // The server had not seen the old connection drop yet: it is replaced,
                // quietly.
                self.conns.remove(&old);
                self.outputs.push_back(Output::Close {
                    conn: old,
                    code: CloseCode::Replaced,
                });
            }
            SessionState::Suspended { until } => {
                self.deadlines.remove(&(until, session_id.to_owned()));
            }
        }
        if let Some(s) = self.sessions.get_mut(session_id) {
            s.state = SessionState::Live(conn);
        }
        if let Some(member) = self
            .rooms
            .get_mut(&session.room_id)
            .and_then(|r| r.member_mut(&session.user_id))
        {
            member.location = PeerLocation::Local(conn);
            member.info.last_heartbeat = now;
        }
        let identity = Identity {
            user_id: session.user_id.clone(),
            room_id: session.room_id.clone(),
        };
        self.conns.insert(
            conn,
            Conn {
                identity: identity.clone(),
                user_name: session.user_name,
                joined: true,
                last_seen: now,
                token: session.token.clone(),
                session: Some(session_id.to_owned()),
                resume_digest: None,
                protocol: Protocol::Native,
                subscribed: false,
            },
        );
        self.stats.sessions_resumed += 1;
        self.lifecycle(now, &session.room_id, || {
            LifecycleKind::PeerResumed(session.user_id.clone())
        });
        self.outputs.push_back(Output::Resumed {
            conn,
            identity,
            token: session.token,
        });
        self.reply_joined(conn, &session.user_id, &session.room_id, Reply::Resumed);
        Ok(())
    }

    /// Asks the cluster to move a session to this connection; the answer comes as a
    /// [`ClusterEvent`].
    fn request_resume(
        &mut self,
        conn: ConnId,
        session_id: &str,
        resume_token: &str,
    ) -> Result<(), ResumeRefusal> {
        if !self.resume_enabled() {
            self.refuse_resume(conn, false);
            return Err(ResumeRefusal::Disabled);
        }
        if self.degraded {
            self.refuse_resume(conn, true);
            return Err(ResumeRefusal::UnknownSession);
        }
        if self.resuming.contains_key(&conn) {
            self.send_error(
                conn,
                ErrorCode::AlreadyAuthenticated,
                "a resume is in flight on this connection",
            );
            return Ok(());
        }
        let Some(issuer) = self.issuer.as_deref_mut() else {
            return Err(ResumeRefusal::Disabled);
        };
        let presented = issuer.digest(resume_token);
        let (ticket, next) = ticket(issuer, session_id);
        self.resuming.insert(
            conn,
            PendingResume {
                ticket,
                next,
                gone: false,
            },
        );
        self.outputs
            .push_back(Output::Cluster(ClusterCommand::Resume {
                conn,
                session_id: session_id.to_owned(),
                presented,
                next,
            }));
        Ok(())
    }

    /// Tells a connection its `resume` failed and closes it: 4001 (authenticate again),
    /// or 1013 when the cluster could not be asked (the session may still be resumable).
    pub(super) fn refuse_resume(&mut self, conn: ConnId, unavailable: bool) {
        if unavailable {
            self.send_error(
                conn,
                ErrorCode::Unavailable,
                "the cluster is recovering; resume again shortly",
            );
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::TryAgainLater,
            });
        } else {
            self.send_error(
                conn,
                ErrorCode::ResumeFailed,
                "the session cannot be resumed; authenticate again",
            );
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::AuthFailed,
            });
        }
    }

    /// The cluster moved a session to `conn`: it is joined, quietly.
    pub(super) fn resume_committed(
        &mut self,
        now: UnixMillis,
        conn: ConnId,
        user_id: UserId,
        snapshot: RoomSnapshot,
        token: TokenRef,
    ) {
        let Some(pending) = self.resuming.remove(&conn) else {
            return;
        };
        // A newer snapshot of the room may have overtaken this answer: judge by the newest.
        let snapshot = match self.early_resumed.get(&snapshot.room_id) {
            Some(early) if early.ver > snapshot.ver => early.clone(),
            _ => snapshot,
        };
        let closed = self.closed_resumed.get(&snapshot.room_id).copied();
        if self.resuming.is_empty() {
            self.early_resumed.clear();
            self.closed_resumed.clear();
        }
        let room_id = snapshot.room_id.clone();
        if let Some((closed_ver, reason)) = closed
            && closed_ver > snapshot.ver
            && !pending.gone
        {
            // The room was closed after this resume was committed: the session is gone
            // with it.
            self.outputs.push_back(Output::Send {
                to: conn,
                msg: ServerMessage::RoomClosed { room_id, reason },
            });
            self.outputs.push_back(Output::Close {
                conn,
                code: CloseCode::RoomClosed,
            });
            return;
        }
        let Some(entry) = snapshot
            .members
            .iter()
            .find(|m| m.user_id == user_id)
            .cloned()
        else {
            // A newer snapshot no longer has the member: the session ended meanwhile.
            if !pending.gone {
                self.refuse_resume(conn, false);
            }
            return;
        };
        if pending.gone {
            // The connection went away while the resume was in flight: suspend it again.
            // Meanwhile the replica shows the member suspended, as the store soon will.
            let mut snapshot = snapshot;
            if let Some(m) = snapshot.members.iter_mut().find(|m| m.user_id == user_id) {
                m.suspended = true;
            }
            self.apply_snapshot(
                now,
                snapshot,
                &MembershipCause::Suspended(user_id.clone()),
                None,
            );
            self.outputs
                .push_back(Output::Cluster(ClusterCommand::Suspend {
                    conn,
                    room_id,
                    user_id,
                }));
            return;
        }
        let identity = Identity {
            user_id: user_id.clone(),
            room_id: room_id.clone(),
        };
        self.conns.insert(
            conn,
            Conn {
                identity: identity.clone(),
                user_name: entry.user_name.clone(),
                joined: true,
                last_seen: now,
                token: token.clone(),
                session: Some(pending.ticket.session_id.clone()),
                resume_digest: Some(pending.next),
                protocol: Protocol::Native,
                subscribed: false,
            },
        );
        let here =
            Some(&entry.node) == self.node.as_ref() && entry.conn == conn && !entry.suspended;
        let ver = snapshot.ver;
        self.apply_snapshot(
            now,
            snapshot,
            &MembershipCause::Resumed(user_id.clone()),
            Some(conn),
        );
        if here
            && let Some(member) = self
                .rooms
                .get_mut(&room_id)
                .filter(|r| r.ver == ver)
                .and_then(|r| r.member_mut(&user_id))
            && member.location == PeerLocation::Suspended
        {
            // The replica was built from this snapshot before the answer came: the
            // member waited there for this connection.
            member.location = PeerLocation::Local(conn);
        }
        let present = self
            .rooms
            .get(&room_id)
            .is_some_and(|r| r.member(&user_id).and_then(Member::local) == Some(conn));
        if !present {
            // A newer snapshot already moved the session on: this connection lost it.
            self.conns.remove(&conn);
            self.refuse_resume(conn, false);
            return;
        }
        self.stats.sessions_resumed += 1;
        self.outputs.push_back(Output::Resumed {
            conn,
            identity,
            token,
        });
        let Some(room) = self.rooms.get(&room_id).map(Room::metadata) else {
            return;
        };
        self.outputs.push_back(Output::Send {
            to: conn,
            msg: ServerMessage::Resumed {
                user_id,
                room,
                ice_servers: None,
                resume: Some(pending.ticket),
            },
        });
    }

    /// The token a `resume` with this ticket would hold its connection to, when the
    /// ticket is good now: the driver refuses a session whose token it no longer
    /// accepts before anything is handed over.
    pub fn resume_token(
        &self,
        now: UnixMillis,
        session_id: &str,
        resume_token: &str,
    ) -> Option<TokenRef> {
        if !self.resume_enabled() {
            return None;
        }
        let issuer = self.issuer.as_ref()?;
        let session = self.sessions.get(session_id)?;
        let expired = matches!(session.state, SessionState::Suspended { until } if until <= now);
        (!expired && session.accepts(&issuer.digest(resume_token))).then(|| session.token.clone())
    }

    /// The session a `resume` names, when its token is the current one and its grace
    /// has not run out.
    fn check_resume(
        &mut self,
        now: UnixMillis,
        session_id: &str,
        resume_token: &str,
    ) -> Result<Session, ResumeRefusal> {
        if !self.resume_enabled() {
            return Err(ResumeRefusal::Disabled);
        }
        self.expire_sessions(now);
        let presented = match &self.issuer {
            Some(issuer) => issuer.digest(resume_token),
            None => return Err(ResumeRefusal::Disabled),
        };
        let session = self
            .sessions
            .get(session_id)
            .ok_or(ResumeRefusal::UnknownSession)?;
        if !session.accepts(&presented) {
            return Err(ResumeRefusal::WrongToken);
        }
        Ok(session.clone())
    }

    /// A fresh ticket for a joined connection's session (opened on first use): every
    /// ticket handed out spends the one before.
    pub(super) fn issue_ticket(&mut self, conn: ConnId) -> Option<octate_protocol::ResumeTicket> {
        if !self.resume_enabled() {
            return None;
        }
        let issuer = self.issuer.as_deref_mut()?;
        let state = self.conns.get_mut(&conn)?;
        if !state.joined {
            return None;
        }
        let session_id = match &state.session {
            Some(id) => id.clone(),
            None => issuer.session_id(),
        };
        let (ticket, digest) = ticket(issuer, &session_id);
        state.session = Some(session_id.clone());
        let (user_id, room_id) = (
            state.identity.user_id.clone(),
            state.identity.room_id.clone(),
        );
        if self.node.is_some() {
            // The cluster keeps the session, so that it resumes on any node.
            state.resume_digest = Some(digest);
            let token = state.token.clone();
            if let Some(member) = self
                .rooms
                .get_mut(&room_id)
                .and_then(|r| r.member_mut(&user_id))
            {
                member.session = Some(session_id.clone());
            }
            self.outputs
                .push_back(Output::Cluster(ClusterCommand::Ticket {
                    conn,
                    room_id,
                    user_id,
                    session_id,
                    digest,
                    token,
                }));
            return Some(ticket);
        }
        let session = self
            .sessions
            .entry(session_id.clone())
            .or_insert_with(|| Session {
                user_id: user_id.clone(),
                room_id: room_id.clone(),
                user_name: state.user_name.clone(),
                digest: None,
                token: state.token.clone(),
                state: SessionState::Live(conn),
            });
        session.digest = Some(digest);
        if let Some(member) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.member_mut(&user_id))
        {
            member.session = Some(session_id);
        }
        Some(ticket)
    }

    /// Ends every suspended session whose grace has run out: its room is told the peer
    /// left with reason `timeout`.
    pub(super) fn expire_sessions(&mut self, now: UnixMillis) {
        while let Some((until, _)) = self.deadlines.first()
            && *until <= now
        {
            let Some((_, session_id)) = self.deadlines.pop_first() else {
                break;
            };
            let Some(session) = self.sessions.remove(&session_id) else {
                continue;
            };
            self.stats.sessions_expired += 1;
            self.remove_member(
                now,
                &session.room_id,
                &session.user_id,
                LeaveReason::Timeout,
            );
        }
    }

    /// Forgets a session (its member left, was replaced, or its room closed).
    pub(super) fn end_session(&mut self, session_id: &str) {
        if let Some(session) = self.sessions.remove(session_id)
            && let SessionState::Suspended { until } = session.state
        {
            self.deadlines.remove(&(until, session_id.to_owned()));
        }
    }
}
