//! The one task that sends this node's changes and messages to Redis.
//!
//! Joins, leaves, room closes and relay frames go through one ordered queue and one
//! connection, drained into one pipeline per pass, so what this node sends to another
//! node arrives in the order it was submitted, and a peer's membership event precedes its
//! messages. Relay frames carry a sequence number per destination node. A frame that no
//! subscriber received (the destination is reconnecting) or that Redis did not take (the
//! link is down) waits in a bounded queue for its destination and is sent again until it
//! is older than the outage window; leaves and closes wait for the link; joins are
//! refused as `unavailable` while the link is down.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use octate_core::{
    ClusterEvent, ConnId, CoreError, JoinKind, MembershipCause, NodeId, Protocol, RoomSnapshot,
    TokenRef,
};
use octate_protocol::{LeaveReason, RoomCloseReason, RoomId, UserId};
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};
use tokio::sync::{mpsc, oneshot};

use crate::config::Backoff;
use crate::conn::{bounded, connect};
use crate::state::{Counters, Shared};
use crate::store::{close_reason, refusal};
use crate::wire::{RelayFrame, decode_snapshot};
use crate::{ClusterError, hex};

/// Most queued items taken into one pipeline.
const MAX_BATCH: usize = 1024;
/// Most leaves and closes kept while the link is down.
const MAX_WAITING: usize = 65_536;
/// Members re-registered per restore script call.
const RESTORE_BATCH: usize = 100;

/// One thing for the writer to send.
#[derive(Debug)]
pub(crate) enum Job {
    /// Commit a member; answered with `JoinCommitted` or `JoinRejected`.
    Join {
        conn: ConnId,
        room_id: RoomId,
        user_id: UserId,
        user_name: String,
        kind: JoinKind,
        session_id: Option<String>,
        token: TokenRef,
        protocol: Protocol,
    },
    /// Record a session's new ticket (digest in hex) and token.
    Ticket {
        conn: ConnId,
        room_id: RoomId,
        user_id: UserId,
        session_id: String,
        digest: String,
        token: TokenRef,
    },
    /// Record the token a member runs on after a `refresh`.
    Token {
        conn: ConnId,
        room_id: RoomId,
        user_id: UserId,
        token: TokenRef,
    },
    /// Suspend a member whose connection was lost.
    Suspend {
        conn: ConnId,
        room_id: RoomId,
        user_id: UserId,
    },
    /// Move a session to a connection of this node; answered with `ResumeCommitted` or
    /// `ResumeRejected`.
    Resume {
        conn: ConnId,
        session_id: String,
        presented: String,
        next: String,
    },
    /// Remove a member if the session still owns it.
    Leave {
        conn: ConnId,
        room_id: RoomId,
        user_id: UserId,
        reason: LeaveReason,
    },
    /// A message for another node.
    Relay { node: NodeId, frame: RelayFrame },
    /// Close a room everywhere (for inactivity: if no node reported activity meanwhile).
    Close {
        room_id: RoomId,
        reason: RoomCloseReason,
    },
    /// Record that this node's peers were active in a room.
    Activity { room_id: RoomId },
    /// Re-register this node's live members (after Redis lost them or reaped the node).
    Restore {
        reply: oneshot::Sender<Result<(), ClusterError>>,
    },
    /// Answered once everything queued before it was sent (or could not be).
    Flush { reply: oneshot::Sender<()> },
    /// Stop after the current pass.
    Stop,
}

/// A frame with its sequence number, waiting for its destination.
#[derive(Debug)]
struct Pending {
    frame: Vec<u8>,
    since: Instant,
}

/// What each pipeline entry was, to settle its reply.
enum Sent {
    Frame { node: NodeId, pending: Pending },
    Job(Job),
}

pub(crate) struct Writer {
    sh: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Job>,
    conn: Option<MultiplexedConnection>,
    backoff: Backoff,
    next_attempt: Instant,
    seqs: HashMap<NodeId, u64>,
    inboxes: HashMap<NodeId, String>,
    backlog: HashMap<NodeId, VecDeque<Pending>>,
    waiting: VecDeque<Job>,
    stopping: bool,
}

impl Writer {
    pub(crate) fn new(
        sh: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Job>,
        conn: MultiplexedConnection,
    ) -> Self {
        let backoff = Backoff::new(&sh.config);
        Self {
            sh,
            rx,
            conn: Some(conn),
            backoff,
            next_attempt: Instant::now(),
            seqs: HashMap::new(),
            inboxes: HashMap::new(),
            backlog: HashMap::new(),
            waiting: VecDeque::new(),
            stopping: false,
        }
    }

    /// Runs until [`Job::Stop`].
    pub(crate) async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while !self.stopping {
            let wait = self.wait_limit();
            match wait {
                None => {
                    if self.rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                        return;
                    }
                }
                Some(limit) => {
                    let _ =
                        tokio::time::timeout(limit, self.rx.recv_many(&mut batch, MAX_BATCH)).await;
                }
            }
            self.expire_backlog();
            let jobs = std::mem::take(&mut batch);
            let taken: usize = jobs
                .iter()
                .map(|j| match j {
                    Job::Relay { frame, .. } => frame.bytes.len(),
                    _ => 0,
                })
                .sum();
            self.sh
                .queued_relay_bytes
                .fetch_sub(taken, std::sync::atomic::Ordering::Relaxed);
            // A restore means the subscriber is back: Redis is likely up, try at once.
            let restoring = jobs.iter().any(|j| matches!(j, Job::Restore { .. }));
            if self.conn.is_none() && (restoring || Instant::now() >= self.next_attempt) {
                self.reconnect().await;
            }
            if self.conn.is_none() {
                for job in jobs {
                    self.park(job);
                }
            } else {
                self.send(jobs).await;
            }
        }
    }

    /// How long to wait for new work: for ever when nothing is pending.
    fn wait_limit(&self) -> Option<Duration> {
        if self.conn.is_none() {
            return Some(self.next_attempt.saturating_duration_since(Instant::now()));
        }
        let pending = !self.waiting.is_empty() || self.backlog.values().any(|q| !q.is_empty());
        pending.then_some(self.sh.config.reconnect_min)
    }

    async fn reconnect(&mut self) {
        let c = &self.sh.config;
        match connect(&self.sh.client, &self.sh.scripts, c.command_timeout).await {
            Ok(conn) => {
                tracing::info!(node = %c.node_id, "cluster writer reconnected");
                self.conn = Some(conn);
                self.backoff.reset();
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster writer cannot reconnect");
                self.next_attempt = Instant::now() + self.backoff.next_delay();
            }
        }
    }

    /// A node's inbox channel name, built once per node.
    fn inbox(&mut self, node: &NodeId) -> &str {
        if !self.inboxes.contains_key(node) {
            if self.inboxes.len() >= MAX_WAITING {
                self.inboxes.clear();
            }
            let channel = self.sh.inbox(node.as_str());
            self.inboxes.insert(node.clone(), channel);
        }
        self.inboxes.get(node).map_or("", String::as_str)
    }

    fn next_seq(&mut self, node: &NodeId) -> u64 {
        let seq = self.seqs.entry(node.clone()).or_insert(0);
        *seq += 1;
        *seq
    }

    fn stamp(&mut self, node: &NodeId, mut frame: RelayFrame) -> Pending {
        let seq = self.next_seq(node);
        frame.set_seq(seq);
        Pending {
            frame: frame.bytes,
            since: Instant::now(),
        }
    }

    /// Keeps a frame for a later attempt, dropping the oldest beyond the limit.
    fn hold(&mut self, node: NodeId, pending: Pending) {
        let limit = self.sh.config.outage_queue_frames.max(1);
        let queue = self.backlog.entry(node).or_default();
        while queue.len() >= limit {
            queue.pop_front();
            Counters::add(&self.sh.counters.dropped, 1);
        }
        queue.push_back(pending);
    }

    fn expire_backlog(&mut self) {
        let window = self.sh.config.outage_queue_time;
        let mut dropped = 0;
        for queue in self.backlog.values_mut() {
            while queue.front().is_some_and(|p| p.since.elapsed() > window) {
                queue.pop_front();
                dropped += 1;
            }
        }
        self.backlog.retain(|_, q| !q.is_empty());
        if dropped > 0 {
            Counters::add(&self.sh.counters.dropped, dropped);
            tracing::warn!(
                dropped,
                "cluster frames dropped: their node stayed unreachable"
            );
        }
    }

    fn wait_for_link(&mut self, job: Job) {
        if matches!(
            job,
            Job::Activity { .. }
                | Job::Close {
                    reason: RoomCloseReason::Inactive,
                    ..
                }
        ) {
            // Worth nothing later: an activity report would carry the time it is replayed,
            // and an inactivity close would judge a room that may have woken meanwhile. The
            // core reports and asks again.
            return;
        }
        if self.waiting.len() >= MAX_WAITING {
            // Counted and logged: a leave lost here stays in Redis until this node restarts.
            self.waiting.pop_front();
            Counters::add(&self.sh.counters.dropped, 1);
            tracing::warn!("a membership change waiting for Redis was dropped: too many waiting");
        }
        self.waiting.push_back(job);
    }

    /// The link is down: keep what can wait, refuse what cannot.
    fn park(&mut self, job: Job) {
        match job {
            Job::Relay { node, frame } => {
                let pending = self.stamp(&node, frame);
                self.hold(node, pending);
            }
            Job::Join { conn, .. } => self.sh.emit_core(ClusterEvent::JoinRejected {
                conn,
                error: CoreError::Unavailable,
            }),
            Job::Resume { conn, .. } => self.sh.emit_core(ClusterEvent::ResumeRejected {
                conn,
                unavailable: true,
            }),
            Job::Leave { .. }
            | Job::Close { .. }
            | Job::Activity { .. }
            | Job::Ticket { .. }
            | Job::Token { .. }
            | Job::Suspend { .. } => {
                self.wait_for_link(job);
            }
            Job::Restore { reply } => {
                let _ = reply.send(Err(ClusterError::Timeout));
            }
            Job::Flush { reply } => {
                let _ = reply.send(());
            }
            Job::Stop => self.stopping = true,
        }
    }

    fn add_job(&self, pipe: &mut redis::Pipeline, job: &Job) {
        let c = &self.sh.config;
        let s = &self.sh.scripts;
        let node = c.node_id.as_str();
        match job {
            Job::Join {
                conn,
                room_id,
                user_id,
                user_name,
                kind,
                session_id,
                token,
                protocol,
            } => {
                let (kind, room_name, file_id) = match kind {
                    JoinKind::Auth => ("auth", "", ""),
                    JoinKind::Join => ("join", "", ""),
                    JoinKind::Create { room_name, file_id } => (
                        "create",
                        room_name.as_deref().unwrap_or(""),
                        file_id.as_deref().unwrap_or(""),
                    ),
                };
                pipe.invoke_script(
                    s.join
                        .arg(&c.key_prefix)
                        .arg(room_id.as_str())
                        .arg(user_id.as_str())
                        .arg(user_name)
                        .arg(node)
                        .arg(conn.0)
                        .arg(kind)
                        .arg(room_name)
                        .arg(file_id)
                        .arg(c.max_peers_per_room)
                        .arg(c.max_rooms)
                        .arg(c.max_rooms_per_user)
                        .arg(session_id.as_deref().unwrap_or(""))
                        .arg(token.token_id.as_deref().unwrap_or(""))
                        .arg(token.expires_at.map(|e| e.to_string()).unwrap_or_default())
                        .arg(protocol_flag(*protocol))
                        .arg(c.hooks_node()),
                );
            }
            Job::Ticket {
                conn,
                room_id,
                user_id,
                session_id,
                digest,
                token,
            } => {
                pipe.invoke_script(
                    s.ticket
                        .arg(&c.key_prefix)
                        .arg(room_id.as_str())
                        .arg(user_id.as_str())
                        .arg(node)
                        .arg(conn.0)
                        .arg(session_id)
                        .arg(digest)
                        .arg(token.token_id.as_deref().unwrap_or(""))
                        .arg(token.expires_at.map(|e| e.to_string()).unwrap_or_default()),
                );
            }
            Job::Token {
                conn,
                room_id,
                user_id,
                token,
            } => {
                pipe.invoke_script(
                    s.token
                        .arg(&c.key_prefix)
                        .arg(room_id.as_str())
                        .arg(user_id.as_str())
                        .arg(node)
                        .arg(conn.0)
                        .arg(token.token_id.as_deref().unwrap_or(""))
                        .arg(token.expires_at.map(|e| e.to_string()).unwrap_or_default()),
                );
            }
            Job::Suspend {
                conn,
                room_id,
                user_id,
            } => {
                pipe.invoke_script(
                    s.suspend
                        .arg(&c.key_prefix)
                        .arg(room_id.as_str())
                        .arg(user_id.as_str())
                        .arg(node)
                        .arg(conn.0)
                        .arg(crate::config::ms(c.resume_grace))
                        .arg(c.hooks_node()),
                );
            }
            Job::Resume {
                conn,
                session_id,
                presented,
                next,
            } => {
                pipe.invoke_script(
                    s.resume
                        .arg(&c.key_prefix)
                        .arg(session_id)
                        .arg(presented)
                        .arg(node)
                        .arg(conn.0)
                        .arg(next)
                        .arg(c.hooks_node()),
                );
            }
            Job::Leave {
                conn,
                room_id,
                user_id,
                reason,
            } => {
                pipe.invoke_script(
                    s.leave
                        .arg(&c.key_prefix)
                        .arg(room_id.as_str())
                        .arg(user_id.as_str())
                        .arg(node)
                        .arg(conn.0)
                        .arg(leave_reason(*reason))
                        .arg(c.hooks_node()),
                );
            }
            Job::Close { room_id, reason } => {
                let quiet = match reason {
                    RoomCloseReason::Inactive => c.room_inactive_timeout.as_millis().to_string(),
                    _ => String::new(),
                };
                pipe.invoke_script(
                    s.close_room
                        .arg(&c.key_prefix)
                        .arg(room_id.as_str())
                        .arg(close_reason(*reason))
                        .arg(quiet)
                        .arg(c.hooks_node()),
                );
            }
            Job::Activity { room_id } => {
                pipe.invoke_script(s.activity.arg(&c.key_prefix).arg(room_id.as_str()));
            }
            // Sent in their own steps.
            Job::Relay { .. } | Job::Restore { .. } | Job::Flush { .. } | Job::Stop => {}
        }
    }

    /// Sends everything waiting, then the new jobs, in one pipeline.
    async fn send(&mut self, jobs: Vec<Job>) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut sent: Vec<Sent> = Vec::with_capacity(jobs.len());
        let mut after: Vec<Job> = Vec::new();
        for job in std::mem::take(&mut self.waiting) {
            self.add_job(&mut pipe, &job);
            sent.push(Sent::Job(job));
        }
        for (node, queue) in std::mem::take(&mut self.backlog) {
            let channel = self.inbox(&node);
            for pending in &queue {
                pipe.cmd("PUBLISH").arg(channel).arg(&pending.frame);
            }
            for pending in queue {
                sent.push(Sent::Frame {
                    node: node.clone(),
                    pending,
                });
            }
        }
        for job in jobs {
            match job {
                Job::Relay { node, frame } => {
                    // Any frame still waiting for this node went into the pipeline above.
                    let pending = self.stamp(&node, frame);
                    pipe.cmd("PUBLISH")
                        .arg(self.inbox(&node))
                        .arg(&pending.frame);
                    sent.push(Sent::Frame { node, pending });
                }
                Job::Restore { reply } => {
                    let result = self.restore().await;
                    let _ = reply.send(result);
                }
                Job::Flush { .. } | Job::Stop => after.push(job),
                other => {
                    self.add_job(&mut pipe, &other);
                    sent.push(Sent::Job(other));
                }
            }
        }
        if !sent.is_empty() {
            self.execute(&pipe, sent).await;
        }
        for job in after {
            match job {
                Job::Flush { reply } => {
                    let _ = reply.send(());
                }
                Job::Stop => self.stopping = true,
                _ => {}
            }
        }
    }

    async fn execute(&mut self, pipe: &redis::Pipeline, sent: Vec<Sent>) {
        let Some(conn) = self.conn.as_mut() else {
            for s in sent {
                self.failed(s);
            }
            return;
        };
        let limit = self.sh.config.command_timeout;
        let result: Result<Vec<RedisResult<Value>>, ClusterError> =
            bounded(limit, pipe.query_async(conn)).await;
        match result {
            Ok(replies) if replies.len() == sent.len() => {
                for (s, reply) in sent.into_iter().zip(replies) {
                    self.settle(s, reply);
                }
            }
            Ok(_) | Err(_) => {
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "cluster writer lost its link");
                }
                self.conn = None;
                self.next_attempt = Instant::now() + self.backoff.next_delay();
                for s in sent {
                    self.failed(s);
                }
            }
        }
    }

    /// The pipeline failed as a whole: nothing is known to have happened.
    fn failed(&mut self, sent: Sent) {
        match sent {
            Sent::Frame { node, pending } => self.hold(node, pending),
            Sent::Job(Job::Join {
                conn,
                room_id,
                user_id,
                ..
            }) => {
                // The join may have been committed: undo it when the link is back.
                self.sh.emit_core(ClusterEvent::JoinRejected {
                    conn,
                    error: CoreError::Unavailable,
                });
                self.wait_for_link(Job::Leave {
                    conn,
                    room_id,
                    user_id,
                    reason: LeaveReason::Disconnected,
                });
            }
            Sent::Job(Job::Resume { conn, .. }) => {
                // The session stays suspended (or moved here, and is reaped with its
                // grace); the client tries again.
                self.sh.emit_core(ClusterEvent::ResumeRejected {
                    conn,
                    unavailable: true,
                });
            }
            Sent::Job(job) => self.wait_for_link(job),
        }
    }

    fn settle(&mut self, sent: Sent, reply: RedisResult<Value>) {
        if let Err(e) = &reply
            && e.code() == Some("NOSCRIPT")
        {
            // Redis lost its script cache: reconnecting loads the scripts again.
            self.conn = None;
            self.failed(sent);
            return;
        }
        match sent {
            Sent::Frame { node, pending } => match reply {
                Ok(Value::Int(n)) if n > 0 => Counters::add(&self.sh.counters.messages_out, 1),
                // Nobody subscribed: the destination is reconnecting, or dead.
                _ => self.hold(node, pending),
            },
            Sent::Job(Job::Join { conn, user_id, .. }) => {
                let event = match join_reply(reply, self.sh.config.node_id.as_str()) {
                    Ok(Ok((snapshot, replaced_here))) => {
                        if replaced_here {
                            // The script tells only the other nodes; this node's old
                            // session must learn it was replaced, not merely dropped.
                            self.sh.emit_core(ClusterEvent::Membership {
                                snapshot: snapshot.clone(),
                                cause: MembershipCause::Replaced(user_id),
                            });
                        }
                        ClusterEvent::JoinCommitted { conn, snapshot }
                    }
                    Ok(Err(error)) => ClusterEvent::JoinRejected { conn, error },
                    Err(e) => {
                        tracing::error!(error = %e, "join script failed");
                        ClusterEvent::JoinRejected {
                            conn,
                            error: CoreError::Unavailable,
                        }
                    }
                };
                self.sh.emit_core(event);
            }
            Sent::Job(Job::Resume { conn, .. }) => {
                let event = match resume_reply(reply) {
                    Ok(Some((user_id, snapshot, token))) => ClusterEvent::ResumeCommitted {
                        conn,
                        user_id,
                        snapshot,
                        token,
                    },
                    Ok(None) => ClusterEvent::ResumeRejected {
                        conn,
                        unavailable: false,
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "resume script failed");
                        ClusterEvent::ResumeRejected {
                            conn,
                            unavailable: true,
                        }
                    }
                };
                self.sh.emit_core(event);
            }
            Sent::Job(Job::Close {
                room_id,
                reason: RoomCloseReason::Inactive,
            }) => match reply {
                // The store has no such room any more (its close never reached this node):
                // the replica goes too, as of the store's clock.
                Ok(Value::Array(parts)) if parts.len() == 2 => {
                    let ver: Option<u64> = redis::from_redis_value(parts[1].clone()).ok();
                    if let Some(ver) = ver {
                        self.sh.emit_core(ClusterEvent::RoomClosed {
                            room_id,
                            reason: RoomCloseReason::Inactive,
                            ver,
                        });
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, %room_id, "closing an inactive room failed"),
            },
            Sent::Job(job) => {
                if let Err(e) = reply {
                    tracing::error!(error = %e, ?job, "cluster script failed");
                }
            }
        }
    }

    /// Re-registers every live member of this node, announcing them to their rooms.
    async fn restore(&mut self) -> Result<(), ClusterError> {
        let members = (self.sh.local)();
        self.sh.prune_rooms(&members);
        let Some(conn) = self.conn.as_mut() else {
            return Err(ClusterError::Timeout);
        };
        let c = &self.sh.config;
        let rooms = self.sh.rooms.lock().clone();
        for chunk in members.chunks(RESTORE_BATCH) {
            let mut invocation = self.sh.scripts.restore.prepare_invoke();
            invocation
                .arg(&c.key_prefix)
                .arg(c.node_id.as_str())
                .arg("1");
            for local in chunk {
                let (room_id, m) = (&local.room_id, &local.member);
                let info = rooms.get(room_id);
                invocation
                    .arg(room_id.as_str())
                    .arg(m.user_id.as_str())
                    .arg(&m.user_name)
                    .arg(m.conn.0)
                    .arg(m.joined_at)
                    .arg(info.map_or("", |i| i.name.as_str()))
                    .arg(info.map_or(m.user_id.as_str(), |i| i.created_by.as_str()))
                    .arg(info.map_or(m.joined_at, |i| i.created_at))
                    .arg(info.and_then(|i| i.file_id.as_deref()).unwrap_or(""))
                    .arg(
                        info.and_then(|i| i.host.as_ref())
                            .map_or("", UserId::as_str),
                    );
                // The session, when both its id and its resume token's digest are known.
                match (&m.session, &local.resume_digest) {
                    (Some(session), Some(digest)) => invocation.arg(session).arg(hex(digest)),
                    _ => invocation.arg("").arg(""),
                };
                invocation
                    .arg(local.token.token_id.as_deref().unwrap_or(""))
                    .arg(
                        local
                            .token
                            .expires_at
                            .map(|e| e.to_string())
                            .unwrap_or_default(),
                    )
                    .arg(protocol_flag(m.protocol));
            }
            let result: Result<i64, ClusterError> =
                bounded(c.command_timeout, invocation.invoke_async(conn)).await;
            if let Err(e) = result {
                self.conn = None;
                self.next_attempt = Instant::now() + self.backoff.next_delay();
                return Err(e);
            }
        }
        tracing::info!(members = members.len(), node = %c.node_id, "members registered again");
        Ok(())
    }
}

/// What a member speaks, as the scripts keep it (`p`): `y` for `y-webrtc`, else nothing.
fn protocol_flag(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Native => "",
        Protocol::YWebrtc => "y",
    }
}

/// A reason's wire name, as the scripts pass it on.
fn leave_reason(reason: LeaveReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "disconnected".to_owned())
}

/// Reads the resume script's answer: the session's user, the room and the session's
/// token, or `None` when the resume was refused.
fn resume_reply(
    reply: RedisResult<Value>,
) -> Result<Option<(UserId, RoomSnapshot, TokenRef)>, ClusterError> {
    let parts: Vec<Vec<u8>> =
        redis::from_redis_value(reply?).map_err(|e| ClusterError::Decode(e.to_string()))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match parts.as_slice() {
        [ok, snap, user, token_id, expiry] if ok == b"ok" => {
            let snapshot = decode_snapshot(snap).map_err(|e| ClusterError::Decode(e.0))?;
            let user = UserId::new(text(user)).map_err(|e| ClusterError::Decode(e.to_string()))?;
            let token = TokenRef {
                token_id: (!token_id.is_empty()).then(|| text(token_id)),
                expires_at: text(expiry).parse().ok(),
            };
            Ok(Some((user, snapshot, token)))
        }
        [err, _] if err == b"err" => Ok(None),
        _ => Err(ClusterError::Decode("resume reply".into())),
    }
}

/// Reads the join script's answer: the snapshot and whether the session it replaced was
/// on node `me`, or the refusal.
fn join_reply(
    reply: RedisResult<Value>,
    me: &str,
) -> Result<Result<(RoomSnapshot, bool), CoreError>, ClusterError> {
    let parts: Vec<Vec<u8>> =
        redis::from_redis_value(reply?).map_err(|e| ClusterError::Decode(e.to_string()))?;
    match parts.as_slice() {
        [ok, snap, _, old_node] if ok == b"ok" => decode_snapshot(snap)
            .map(|s| Ok((s, old_node == me.as_bytes())))
            .map_err(|e| ClusterError::Decode(e.0)),
        [err, code] if err == b"err" => Ok(Err(refusal(&String::from_utf8_lossy(code)))),
        _ => Err(ClusterError::Decode("join reply".into())),
    }
}
