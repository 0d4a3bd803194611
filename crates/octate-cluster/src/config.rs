//! How a node joins its cluster: where Redis is, who it is, and its timings and limits.

use std::time::Duration;

use octate_core::{CoreConfig, NodeId};

/// Settings of one node's cluster link.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Redis to share rooms through, e.g. `redis://127.0.0.1:6379/`.
    pub redis_url: String,
    /// This node; use a fresh id per process start.
    pub node_id: NodeId,
    /// Prefix of every Redis key and channel (default `oct:`).
    pub key_prefix: String,
    /// How often the node says it is alive (default 1 s).
    pub heartbeat_interval: Duration,
    /// How long a heartbeat keeps the node alive (default 5 s).
    pub node_ttl: Duration,
    /// How often dead nodes are looked for (default 1 s).
    pub reap_interval: Duration,
    /// How often the subscriber connection is pinged (default 500 ms).
    pub ping_interval: Duration,
    /// A ping unanswered this long means the subscriber is down (default 2 s).
    pub ping_timeout: Duration,
    /// Longest wait for one Redis command or pipeline (default 2 s).
    pub command_timeout: Duration,
    /// First wait before reconnecting; doubles on each failure (default 100 ms).
    pub reconnect_min: Duration,
    /// Longest wait between reconnection attempts (default 1 s).
    pub reconnect_max: Duration,
    /// No node's heartbeat processed for this long means Redis itself stalled, and
    /// nobody is reaped for one ttl (default 2 s).
    pub stall_threshold: Duration,
    /// How long a frame for another node is kept while it cannot be delivered (default 2 s).
    pub outage_queue_time: Duration,
    /// Most frames kept per destination node while they cannot be delivered (default 4096).
    pub outage_queue_frames: usize,
    /// Most peers in one room, cluster-wide.
    pub max_peers_per_room: usize,
    /// Most rooms, cluster-wide.
    pub max_rooms: usize,
    /// Most live rooms one user may have created, cluster-wide.
    pub max_rooms_per_user: usize,
    /// How long a room created over HTTP may stay empty.
    pub empty_room_grace: Duration,
    /// How long no node may report activity in a room before it is closed as inactive.
    pub room_inactive_timeout: Duration,
    /// How long a member whose connection was lost (or whose node died) stays suspended,
    /// waiting to be resumed on any node; zero removes it at once.
    pub resume_grace: Duration,
    /// Whether the store scripts report room and peer lifecycle events to this node
    /// (webhooks); each change is reported by the node whose script made it.
    pub lifecycle_events: bool,
}

impl ClusterConfig {
    /// Production timings, and the room limits of [`CoreConfig::default`].
    pub fn new(redis_url: impl Into<String>, node_id: NodeId) -> Self {
        let core = CoreConfig::default();
        Self {
            redis_url: redis_url.into(),
            node_id,
            key_prefix: "oct:".to_owned(),
            heartbeat_interval: Duration::from_secs(1),
            node_ttl: Duration::from_secs(5),
            reap_interval: Duration::from_secs(1),
            ping_interval: Duration::from_millis(500),
            ping_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
            stall_threshold: Duration::from_secs(2),
            outage_queue_time: Duration::from_secs(2),
            outage_queue_frames: 4096,
            max_peers_per_room: core.max_peers_per_room,
            max_rooms: core.max_rooms,
            max_rooms_per_user: core.max_rooms_per_user,
            empty_room_grace: core.empty_room_grace,
            room_inactive_timeout: core.room_inactive_timeout,
            resume_grace: core.resume_grace,
            lifecycle_events: false,
        }
    }

    /// Takes the room limits from the core's configuration, so both enforce the same.
    pub fn with_limits_of(mut self, core: &CoreConfig) -> Self {
        self.max_peers_per_room = core.max_peers_per_room;
        self.max_rooms = core.max_rooms;
        self.max_rooms_per_user = core.max_rooms_per_user;
        self.empty_room_grace = core.empty_room_grace;
        self.room_inactive_timeout = core.room_inactive_timeout;
        self.resume_grace = core.resume_grace;
        self.lifecycle_events = core.lifecycle_events;
        self
    }

    /// The node the store scripts report lifecycle events to: this one, or none (`""`).
    pub(crate) fn hooks_node(&self) -> &str {
        if self.lifecycle_events {
            self.node_id.as_str()
        } else {
            ""
        }
    }
}

/// Milliseconds of a duration, as Redis arguments take them.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Exponential reconnection delay: `min`, doubling, capped at `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(config: &ClusterConfig) -> Self {
        Self {
            min: config.reconnect_min,
            max: config.reconnect_max,
            next: config.reconnect_min,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the shortest delay after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}
