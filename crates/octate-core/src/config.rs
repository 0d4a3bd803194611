//! Tunable timings and limits of the core, with the seed's defaults.

use std::time::Duration;

/// Timings, limits and memory thresholds of a [`Core`](crate::Core).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreConfig {
    /// How often every connection is sent a heartbeat and silent peers are checked (seed: 30 s).
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is removed (seed: 5 min).
    pub peer_timeout: Duration,
    /// Silence after which a `y-webrtc` peer is removed: its client pings every 15 s.
    pub ywebrtc_peer_timeout: Duration,
    /// How often rooms are cleaned up (seed: 60 s).
    pub cleanup_interval: Duration,
    /// Inactivity after which a room is closed (seed: 3 h).
    pub room_inactive_timeout: Duration,
    /// Inactivity after which a room is marked `IDLE`.
    pub room_idle_after: Duration,
    /// How long a room created over HTTP may stay empty before cleanup removes it.
    pub empty_room_grace: Duration,
    /// Silence after which a peer counts as idle under critical memory pressure.
    pub idle_peer_after: Duration,
    /// Most peers in one room.
    pub max_peers_per_room: usize,
    /// Most rooms in this process.
    pub max_rooms: usize,
    /// Most rooms one user may have created and that still exist.
    pub max_rooms_per_user: usize,
    /// How long a peer whose connection dropped stays in its room, suspended, waiting to
    /// be resumed (zero turns resume off; it also needs a [`ResumeIssuer`](crate::ResumeIssuer)).
    pub resume_grace: Duration,
    /// Heap size at which the normal cleanup runs at once (seed: 200 MB).
    pub memory_warning_bytes: u64,
    /// Heap size at which idle rooms and idle peers are dropped (seed: 300 MB).
    pub memory_critical_bytes: u64,
    /// Whether room and peer lifecycle events are produced ([`Output::Lifecycle`](crate::Output)),
    /// for webhooks; off by default.
    pub lifecycle_events: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(5 * 60),
            ywebrtc_peer_timeout: Duration::from_secs(45),
            cleanup_interval: Duration::from_secs(60),
            room_inactive_timeout: Duration::from_secs(3 * 60 * 60),
            room_idle_after: Duration::from_secs(10 * 60),
            empty_room_grace: Duration::from_secs(5 * 60),
            idle_peer_after: Duration::from_secs(60),
            max_peers_per_room: 50,
            max_rooms: 10_000,
            max_rooms_per_user: 10,
            resume_grace: Duration::from_secs(15),
            memory_warning_bytes: 200 * 1024 * 1024,
            memory_critical_bytes: 300 * 1024 * 1024,
            lifecycle_events: false,
        }
    }
}

/// Whole milliseconds of a duration, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
