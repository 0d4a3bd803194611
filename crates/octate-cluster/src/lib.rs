//! Octate's cluster link: several `octate-server` processes share rooms through Redis.
//!
//! A room's membership lives in Redis and changes only through Lua scripts, which check
//! the room rules, bump the room's version and publish the whole new membership to the
//! inbox channel of every other node with members in the room. Messages between peers
//! on different nodes go to the destination node's inbox as sequenced frames. Each node
//! heartbeats; a node whose heartbeat expires is reaped by another, which removes its
//! members. After losing Redis, a node re-registers its live members if needed and reads
//! every room again. See `docs/cluster.md` for the design, keys and failure behaviour.
//!
//! [`Cluster`] implements [`octate_transport::ClusterLink`]; what the cluster tells the
//! node comes out of its sink as [`NodeEvent`]s.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod conn;
mod error;
mod hooks;
mod liveness;
mod recovery;
mod scripts;
mod state;
mod store;
mod subscriber;
mod wire;
mod writer;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use octate_core::{
    ClusterCommand, ClusterEvent, LocalMember, NewRoom, NodeId, RoomPage, RoomSnapshot, TokenRef,
};
use octate_protocol::{RoomCloseReason, RoomId, UnixMillis, UserId};
use octate_transport::{ClusterLink, ClusterStats, LinkError, LinkFuture};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use crate::config::ClusterConfig;
pub use crate::error::ClusterError;

use crate::conn::{Control, connect};
use crate::scripts::Scripts;
use crate::state::{Counters, Health, Shared};
use crate::store::BeatMode;
use crate::wire::RelayFrame;
use crate::writer::{Job, Writer};

/// Most bytes of relay frames waiting for the writer; more are dropped and counted.
const MAX_QUEUED_RELAY_BYTES: usize = 64 * 1024 * 1024;

/// Something the cluster tells this node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// For the core: feed it to `App::handle_cluster_event`.
    Core(ClusterEvent),
    /// A token was revoked on some node; refuse it here too until it expires.
    Revoked {
        /// The token's id.
        token_id: String,
        /// When the token expires anyway (Unix ms).
        expires_at: UnixMillis,
    },
}

/// Receives every [`NodeEvent`]; called from the link's tasks, so it must not block long.
pub type EventSink = Arc<dyn Fn(NodeEvent) + Send + Sync>;
/// Lists this node's live members with their rooms (`App::local_members`).
pub type LocalMembers = Arc<dyn Fn() -> Vec<LocalMember> + Send + Sync>;

/// This node's link to the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    sh: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    liveness: Mutex<Option<JoinHandle<()>>>,
    stopped: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.inner.sh.config.node_id)
            .finish_non_exhaustive()
    }
}

/// A random number for this process start.
fn boot_nonce() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl Cluster {
    /// Connects to Redis, subscribes, registers this node and starts the link's tasks.
    ///
    /// `sink` receives what the cluster tells this node; `local` lists this node's live
    /// members, used to register them again after Redis lost them.
    pub async fn start(
        config: ClusterConfig,
        sink: EventSink,
        local: LocalMembers,
    ) -> Result<Self, ClusterError> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| ClusterError::InvalidUrl(e.to_string()))?;
        let scripts = Scripts::new();
        let writer_conn = connect(&client, &scripts, config.command_timeout).await?;
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (triggers, triggers_rx) = mpsc::channel(16);
        let sh = Arc::new(Shared {
            config,
            client,
            scripts,
            control: Control::new(),
            sink,
            local,
            counters: Counters::default(),
            health: Mutex::new(Health {
                subscribed: false,
                last_pong: Instant::now(),
                degraded: false,
                recovering: false,
                hold_heartbeat: false,
                outage: 0,
                epoch: None,
                must_restore: false,
                alive: Vec::new(),
            }),
            rooms: Mutex::new(HashMap::new()),
            gaps: Mutex::new(HashSet::new()),
            boot: boot_nonce(),
            jobs,
            queued_relay_bytes: std::sync::atomic::AtomicUsize::new(0),
            triggers,
            hooks_drain: tokio::sync::Mutex::new(()),
        });
        let subscription = subscriber::open(&sh).await?;
        {
            let mut h = sh.health.lock();
            h.subscribed = true;
            h.last_pong = Instant::now();
        }
        // Members an earlier process with this node id left behind are removed now
        // (their rooms hear `node-down`), not kept for ever by this process' heartbeat.
        sh.retire().await?;
        let beat = sh.heartbeat(BeatMode::Force).await?;
        {
            let mut h = sh.health.lock();
            h.epoch = Some(beat.epoch);
            h.alive = beat.alive.into_iter().map(|(node, _)| node).collect();
        }
        let tasks = vec![
            tokio::spawn(Writer::new(sh.clone(), jobs_rx, writer_conn).run()),
            tokio::spawn(subscriber::run(sh.clone(), subscription)),
            tokio::spawn(recovery::run(sh.clone(), triggers_rx)),
        ];
        let liveness = tokio::spawn(liveness::run(sh.clone()));
        tracing::info!(node = %sh.config.node_id, "joined the cluster");
        Ok(Self {
            inner: Arc::new(Inner {
                sh,
                tasks: Mutex::new(tasks),
                liveness: Mutex::new(Some(liveness)),
                stopped: AtomicBool::new(false),
            }),
        })
    }

    /// Every revoked token that has not expired, to load at start.
    pub async fn revoked_tokens(&self) -> Result<Vec<(String, UnixMillis)>, ClusterError> {
        self.inner.sh.revoked().await
    }

    /// Leaves the cluster: sends what is queued, removes this node's members at once
    /// (the other nodes' peers are told `peer-left` with reason `node-down`),
    /// deregisters the node and stops the link.
    pub async fn shutdown(&self) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let sh = &self.inner.sh;
        if let Some(liveness) = self.inner.liveness.lock().take() {
            liveness.abort();
        }
        let (reply, flushed) = oneshot::channel();
        if sh.jobs.send(Job::Flush { reply }).is_ok() {
            let _ = tokio::time::timeout(sh.config.command_timeout * 2, flushed).await;
        }
        if let Err(e) = sh.retire().await {
            tracing::warn!(error = %e, "could not deregister; the node will be reaped");
        }
        if sh.config.lifecycle_events
            && let Err(e) = sh.drain_hooks().await
        {
            tracing::warn!(error = %e, "could not send the last lifecycle events");
        }
        let _ = sh.jobs.send(Job::Stop);
        self.stop_tasks();
        tracing::info!(node = %sh.config.node_id, "left the cluster");
    }

    /// Stops every task at once without telling anyone, as a crash would; the other
    /// nodes reap this one when its heartbeat expires.
    pub fn abort(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        if let Some(liveness) = self.inner.liveness.lock().take() {
            liveness.abort();
        }
        self.stop_tasks();
    }

    fn stop_tasks(&self) {
        for task in self.inner.tasks.lock().drain(..) {
            task.abort();
        }
    }

    fn sh(&self) -> &Shared {
        &self.inner.sh
    }
}

fn unavailable(e: &ClusterError) -> LinkError {
    tracing::warn!(error = %e, "cluster request failed");
    LinkError::Unavailable
}

impl Cluster {
    /// Counts a relay frame against the writer's budget; `None` (dropped and counted)
    /// when Redis does not keep up.
    fn admit(&self, frame: RelayFrame) -> Option<RelayFrame> {
        let sh = self.sh();
        let len = frame.bytes.len();
        let queued = sh.queued_relay_bytes.fetch_add(len, Ordering::Relaxed);
        if queued + len > MAX_QUEUED_RELAY_BYTES {
            sh.queued_relay_bytes.fetch_sub(len, Ordering::Relaxed);
            Counters::add(&sh.counters.dropped, 1);
            return None;
        }
        Some(frame)
    }
}

impl ClusterLink for Cluster {
    fn node_id(&self) -> &NodeId {
        &self.sh().config.node_id
    }

    fn submit(&self, command: ClusterCommand) {
        if self.inner.stopped.load(Ordering::Relaxed) {
            return;
        }
        let sh = self.sh();
        let job = match command {
            ClusterCommand::Join {
                conn,
                room_id,
                user_id,
                user_name,
                kind,
                joined_at: _,
                session_id,
                token,
                protocol,
            } => Job::Join {
                conn,
                room_id,
                user_id,
                user_name,
                kind,
                session_id,
                token,
                protocol,
            },
            ClusterCommand::Leave {
                conn,
                room_id,
                user_id,
                reason,
            } => Job::Leave {
                conn,
                room_id,
                user_id,
                reason,
            },
            ClusterCommand::Relay {
                node,
                room_id,
                to,
                from,
                msg,
            } => {
                let frame = RelayFrame::new(
                    &sh.config.node_id,
                    sh.boot,
                    &room_id,
                    &from,
                    to.as_ref(),
                    &msg.encode(),
                );
                match self.admit(frame) {
                    Some(frame) => Job::Relay { node, frame },
                    None => return,
                }
            }
            ClusterCommand::Broadcast {
                nodes,
                room_id,
                from,
                msg,
            } => {
                // Encoded once; each node's frame gets its own sequence number.
                let payload = msg.encode();
                for node in nodes {
                    let frame = RelayFrame::new(
                        &sh.config.node_id,
                        sh.boot,
                        &room_id,
                        &from,
                        None,
                        &payload,
                    );
                    if let Some(frame) = self.admit(frame) {
                        // The writer only stops at shutdown.
                        let _ = sh.jobs.send(Job::Relay { node, frame });
                    }
                }
                return;
            }
            ClusterCommand::Publish {
                nodes,
                room_id,
                from,
                text,
            } => {
                for node in nodes {
                    let frame = RelayFrame::publish(
                        &sh.config.node_id,
                        sh.boot,
                        &room_id,
                        &from,
                        text.as_bytes(),
                    );
                    if let Some(frame) = self.admit(frame) {
                        // The writer only stops at shutdown.
                        let _ = sh.jobs.send(Job::Relay { node, frame });
                    }
                }
                return;
            }
            ClusterCommand::ServerMessage {
                nodes,
                room_id,
                to,
                msg,
            } => {
                // Encoded once; each node's frame gets its own sequence number.
                let payload = msg.encode();
                for node in nodes {
                    let frame = RelayFrame::server(
                        &sh.config.node_id,
                        sh.boot,
                        &room_id,
                        to.as_ref(),
                        &payload,
                    );
                    if let Some(frame) = self.admit(frame) {
                        // The writer only stops at shutdown.
                        let _ = sh.jobs.send(Job::Relay { node, frame });
                    }
                }
                return;
            }
            ClusterCommand::CloseRoom { room_id, reason } => Job::Close { room_id, reason },
            ClusterCommand::Activity { room_id } => Job::Activity { room_id },
            ClusterCommand::Ticket {
                conn,
                room_id,
                user_id,
                session_id,
                digest,
                token,
            } => Job::Ticket {
                conn,
                room_id,
                user_id,
                session_id,
                digest: hex(&digest),
                token,
            },
            ClusterCommand::Token {
                conn,
                room_id,
                user_id,
                token,
            } => Job::Token {
                conn,
                room_id,
                user_id,
                token,
            },
            ClusterCommand::Suspend {
                conn,
                room_id,
                user_id,
            } => Job::Suspend {
                conn,
                room_id,
                user_id,
            },
            ClusterCommand::Resume {
                conn,
                session_id,
                presented,
                next,
            } => Job::Resume {
                conn,
                session_id,
                presented: hex(&presented),
                next: hex(&next),
            },
        };
        // The writer only stops at shutdown.
        let _ = sh.jobs.send(job);
    }

    fn room(&self, room_id: RoomId) -> LinkFuture<'_, Result<Option<RoomSnapshot>, LinkError>> {
        Box::pin(async move {
            self.sh()
                .read_room(&room_id)
                .await
                .map_err(|e| unavailable(&e))
        })
    }

    fn create_room(
        &self,
        room: NewRoom,
        _now: UnixMillis,
    ) -> LinkFuture<'_, Result<RoomSnapshot, LinkError>> {
        Box::pin(async move {
            match self.sh().create_room(&room).await {
                Ok(Ok(snapshot)) => Ok(snapshot),
                Ok(Err(refused)) => Err(LinkError::Refused(refused)),
                Err(e) => Err(unavailable(&e)),
            }
        })
    }

    fn close_room(
        &self,
        room_id: RoomId,
        reason: RoomCloseReason,
    ) -> LinkFuture<'_, Result<bool, LinkError>> {
        Box::pin(async move {
            self.sh()
                .close_room(&room_id, reason)
                .await
                .map_err(|e| unavailable(&e))
        })
    }

    fn revoke(
        &self,
        token_id: String,
        expires_at: UnixMillis,
    ) -> LinkFuture<'_, Result<(), LinkError>> {
        Box::pin(async move {
            self.sh()
                .revoke(&token_id, expires_at)
                .await
                .map_err(|e| unavailable(&e))
        })
    }

    fn kick(
        &self,
        room_id: RoomId,
        user_id: UserId,
    ) -> LinkFuture<'_, Result<TokenRef, LinkError>> {
        Box::pin(async move {
            match self.sh().kick(&room_id, &user_id).await {
                Ok(Ok(token)) => Ok(token),
                Ok(Err(refused)) => Err(LinkError::Refused(refused)),
                Err(e) => Err(unavailable(&e)),
            }
        })
    }

    fn rooms_page(
        &self,
        after: Option<RoomId>,
        limit: usize,
    ) -> LinkFuture<'_, Result<RoomPage, LinkError>> {
        Box::pin(async move {
            self.sh()
                .rooms_page(after.as_ref(), limit)
                .await
                .map_err(|e| unavailable(&e))
        })
    }

    fn stats(&self) -> ClusterStats {
        let sh = self.sh();
        let c = &sh.counters;
        let (connected, degraded) = {
            let h = sh.health.lock();
            (h.subscribed, h.degraded)
        };
        ClusterStats {
            node_id: sh.config.node_id.to_string(),
            nodes_alive: Counters::get(&c.nodes_alive),
            connected,
            degraded,
            messages_in: Counters::get(&c.messages_in),
            messages_out: Counters::get(&c.messages_out),
            link_gaps: Counters::get(&c.link_gaps),
            resyncs: Counters::get(&c.resyncs),
            bad_messages: Counters::get(&c.bad_messages),
            dropped: Counters::get(&c.dropped),
        }
    }

    fn nodes(&self) -> Vec<String> {
        let sh = self.sh();
        let mut nodes = sh.health.lock().alive.clone();
        let me = sh.config.node_id.as_str();
        if !nodes.iter().any(|n| n == me) {
            nodes.push(me.to_owned());
        }
        nodes.sort_unstable();
        nodes
    }
}

/// A token digest as the scripts keep it: lowercase hex.
pub(crate) fn hex(digest: &octate_core::TokenDigest) -> String {
    use std::fmt::Write;
    digest
        .0
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}
