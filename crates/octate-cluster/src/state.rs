//! What the node's tasks share: configuration, connections, health, counters and the
//! metadata of the rooms this node has members in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use octate_core::{ClusterEvent, LocalMember, RoomSnapshot};
use octate_protocol::{RoomId, UnixMillis, UserId};
use parking_lot::Mutex;
use redis::Client;
use tokio::sync::mpsc;

use crate::conn::Control;
use crate::scripts::Scripts;
use crate::writer::Job;
use crate::{ClusterConfig, NodeEvent};

/// Where the node's events go.
pub(crate) type Sink = Arc<dyn Fn(NodeEvent) + Send + Sync>;
/// This node's live members, from the core.
pub(crate) type LocalMembers = Arc<dyn Fn() -> Vec<LocalMember> + Send + Sync>;

/// Counters for `/stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) link_gaps: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) bad_messages: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) nodes_alive: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The link's health, as the subscriber and the recovery see it.
#[derive(Debug)]
pub(crate) struct Health {
    /// The subscriber is connected and subscribed.
    pub(crate) subscribed: bool,
    /// Last answer to the subscriber's ping.
    pub(crate) last_pong: Instant,
    /// `Degraded` was sent and `Recovered` not yet.
    pub(crate) degraded: bool,
    /// Membership events are dropped: a full resync follows.
    pub(crate) recovering: bool,
    /// The liveness task must not heartbeat (this node's members may be missing).
    pub(crate) hold_heartbeat: bool,
    /// Bumped whenever the subscriber goes down.
    pub(crate) outage: u64,
    /// Redis' epoch when this node last registered.
    pub(crate) epoch: Option<String>,
    /// This node was found reaped: its members must be registered again.
    pub(crate) must_restore: bool,
    /// Nodes alive at the last heartbeat before an outage.
    pub(crate) alive: Vec<String>,
}

/// A room's fixed metadata, kept to recreate the room after Redis lost it.
#[derive(Debug, Clone)]
pub(crate) struct RoomInfo {
    pub(crate) name: String,
    pub(crate) created_by: UserId,
    pub(crate) created_at: UnixMillis,
    pub(crate) file_id: Option<String>,
    /// The host, as last seen.
    pub(crate) host: Option<UserId>,
    /// Nodes with members in the room, as last seen.
    pub(crate) nodes: Vec<String>,
}

/// Why the supervisor should act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// Re-register if needed, then resync every room and report `Recovered`.
    Recover,
    /// Read every room this node has members in again.
    Resync,
}

/// Everything the tasks of one node share.
pub(crate) struct Shared {
    pub(crate) config: ClusterConfig,
    pub(crate) client: Client,
    pub(crate) scripts: Scripts,
    pub(crate) control: Control,
    pub(crate) sink: Sink,
    pub(crate) local: LocalMembers,
    pub(crate) counters: Counters,
    pub(crate) health: Mutex<Health>,
    pub(crate) rooms: Mutex<HashMap<RoomId, RoomInfo>>,
    /// Nodes whose frames showed a gap since the last resync.
    pub(crate) gaps: Mutex<HashSet<String>>,
    /// Distinguishes this process' frames from an earlier process with the same node id.
    pub(crate) boot: u64,
    pub(crate) jobs: mpsc::UnboundedSender<Job>,
    /// Bytes of relay frames queued for the writer and not taken yet: bounded, so a slow
    /// Redis cannot make relays pile up without limit (joins and leaves are bounded by
    /// the connections themselves).
    pub(crate) queued_relay_bytes: std::sync::atomic::AtomicUsize,
    pub(crate) triggers: mpsc::Sender<Trigger>,
    /// Held through each drain of this node's outbox of lifecycle events: drains run one
    /// after the other, in order.
    pub(crate) hooks_drain: tokio::sync::Mutex<()>,
}

impl Shared {
    /// Key or channel name under the configured prefix.
    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.config.key_prefix)
    }

    /// This node's inbox channel.
    pub(crate) fn inbox(&self, node: &str) -> String {
        self.key(&format!("inbox:{node}"))
    }

    /// Sends an event to the node.
    pub(crate) fn emit(&self, event: NodeEvent) {
        (self.sink)(event);
    }

    /// Sends a core event, remembering the metadata of any room it describes.
    pub(crate) fn emit_core(&self, event: ClusterEvent) {
        match &event {
            ClusterEvent::JoinCommitted { snapshot, .. }
            | ClusterEvent::Membership { snapshot, .. } => self.remember(snapshot),
            _ => {}
        }
        self.emit(NodeEvent::Core(event));
    }

    /// Keeps a room's metadata for a later restore.
    pub(crate) fn remember(&self, snapshot: &RoomSnapshot) {
        let mut rooms = self.rooms.lock();
        if rooms.len() >= self.config.max_rooms.saturating_mul(2).max(1024)
            && !rooms.contains_key(&snapshot.room_id)
        {
            return;
        }
        rooms.insert(
            snapshot.room_id.clone(),
            RoomInfo {
                name: snapshot.room_name.clone(),
                created_by: snapshot.created_by.clone(),
                created_at: snapshot.created_at,
                file_id: snapshot.file_id.clone(),
                host: snapshot.host_id.clone(),
                nodes: snapshot_nodes(snapshot),
            },
        );
    }

    /// Every node seen with members in a room this node has members in.
    pub(crate) fn room_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .rooms
            .lock()
            .values()
            .flat_map(|r| r.nodes.iter().cloned())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Whether a room may be shared with one of `nodes` (unknown rooms may be).
    pub(crate) fn shares_room_with(&self, room_id: &RoomId, nodes: &HashSet<String>) -> bool {
        self.rooms
            .lock()
            .get(room_id)
            .is_none_or(|info| info.nodes.iter().any(|n| nodes.contains(n)))
    }

    /// Forgets rooms this node no longer has members in.
    pub(crate) fn prune_rooms(&self, members: &[LocalMember]) {
        let live: HashSet<&RoomId> = members.iter().map(|m| &m.room_id).collect();
        self.rooms.lock().retain(|r, _| live.contains(r));
    }

    /// Asks the supervisor to act; a full queue already holds enough requests.
    pub(crate) fn trigger(&self, trigger: Trigger) {
        let _ = self.triggers.try_send(trigger);
    }

    /// Whether the subscriber answered a ping recently.
    pub(crate) fn subscriber_healthy(&self) -> bool {
        let h = self.health.lock();
        h.subscribed && h.last_pong.elapsed() < self.config.ping_timeout
    }
}

fn snapshot_nodes(snapshot: &RoomSnapshot) -> Vec<String> {
    let mut nodes: Vec<String> = snapshot
        .members
        .iter()
        .map(|m| m.node.as_str().to_owned())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}
