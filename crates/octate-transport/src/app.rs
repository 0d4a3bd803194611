//! Shared state of a running server and the drive loop around the core.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use octate_auth::TokenAuthority;
use octate_core::{ConnId, Core, MemoryLevel, Output};
use octate_protocol::{CloseCode, ErrorCode, ServerMessage, UnixMillis};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::TransportConfig;
use crate::auth::AdminKey;
use crate::heap::{HeapProbe, HeapSample};
use crate::limits::PerAddress;
use crate::metrics::Metrics;
use crate::registry::{Outbound, Push, Registry};

/// Converts between the tokio clock and the core's Unix milliseconds.
///
/// Reads tokio's clock, so paused-time tests steer the core too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
    base_unix_ms: UnixMillis,
}

impl Clock {
    fn new() -> Self {
        let base_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            base: Instant::now(),
            base_unix_ms,
        }
    }

    /// Now, in Unix milliseconds, advancing monotonically.
    pub(crate) fn now_ms(&self) -> UnixMillis {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_unix_ms.saturating_add(elapsed)
    }

    /// The tokio instant at which the Unix time `at` is reached.
    pub(crate) fn instant_at(&self, at: UnixMillis) -> Instant {
        self.base + Duration::from_millis(at.saturating_sub(self.base_unix_ms))
    }
}

/// Everything the connection tasks, HTTP handlers and timers share.
pub struct App {
    /// One lock for all rooms and peers, held while the core computes and its outputs are queued.
    ///
    /// A `parking_lot::Mutex`, not a tokio one: nothing awaits while holding it,
    /// and its guard is `!Send`, so holding it across an `.await` fails to compile.
    core: Mutex<Core>,
    /// Token issuance and verification; written only to revoke or rotate.
    pub(crate) auth: RwLock<TokenAuthority>,
    pub(crate) registry: Registry,
    pub(crate) metrics: Metrics,
    pub(crate) heap: Box<dyn HeapProbe>,
    pub(crate) config: TransportConfig,
    pub(crate) clock: Clock,
    /// Flips to `true` at shutdown; every task holds a receiver.
    pub(crate) stop: watch::Sender<bool>,
    /// Accepted TCP connections still speaking HTTP (upgraded ones are in `registry`).
    pub(crate) http_sockets: std::sync::atomic::AtomicUsize,
    /// WebSocket connections open or being upgraded, for `max_connections`.
    pub(crate) ws_slots: std::sync::atomic::AtomicUsize,
    /// Open WebSocket connections per source address.
    pub(crate) per_address: PerAddress,
    /// The admin key, when one is configured.
    pub(crate) admin_key: Option<AdminKey>,
    memory_level: AtomicU8,
    started: Instant,
    /// How many times the core has been driven, for tests that count lock acquisitions.
    #[cfg(test)]
    pub(crate) drives: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Builds the shared state of a server.
    pub fn new(
        config: TransportConfig,
        authority: TokenAuthority,
        heap: Box<dyn HeapProbe>,
    ) -> Arc<Self> {
        let clock = Clock::new();
        let core = Core::new(config.core.clone(), clock.now_ms());
        let (stop, _) = watch::channel(false);
        let admin_key = config.admin_key.as_deref().map(AdminKey::new);
        Arc::new(Self {
            core: Mutex::new(core),
            auth: RwLock::new(authority),
            registry: Registry::new(config.outbound_queue_messages, config.outbound_queue_bytes),
            metrics: Metrics::new(),
            heap,
            config,
            clock,
            stop,
            http_sockets: std::sync::atomic::AtomicUsize::new(0),
            ws_slots: std::sync::atomic::AtomicUsize::new(0),
            per_address: PerAddress::default(),
            admin_key,
            memory_level: AtomicU8::new(0),
            started: Instant::now(),
            #[cfg(test)]
            drives: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Runs `f` on the core with the current time, then carries out every output.
    pub(crate) fn drive<T>(&self, f: impl FnOnce(&mut Core, UnixMillis) -> T) -> T {
        let mut core = self.core.lock();
        #[cfg(test)]
        self.drives.fetch_add(1, Ordering::Relaxed);
        // Read the clock under the lock, so the core sees time move forward only.
        let now = self.clock.now_ms();
        let result = f(&mut core, now);
        // Queue the outputs before unlocking: every connection then receives events in
        // the order the core produced them (never `peer-joined` before its own
        // `auth-ok`). Queueing is a non-blocking push, so the lock stays short.
        while let Some(out) = core.poll_output() {
            self.dispatch(out);
        }
        result
    }

    /// Reads the core without driving it.
    pub(crate) fn with_core<T>(&self, f: impl FnOnce(&Core) -> T) -> T {
        f(&self.core.lock())
    }

    fn dispatch(&self, out: Output) {
        match out {
            Output::Send { to, msg } => {
                self.count(&msg, 1);
                let bytes = Bytes::from(msg.encode());
                self.push(to, Outbound::Text(bytes));
            }
            Output::Broadcast { to, msg } => {
                self.count(&msg, to.len());
                let bytes = Bytes::from(msg.encode());
                for conn in to {
                    self.push(conn, Outbound::Text(bytes.clone()));
                }
            }
            Output::Heartbeat { to } => {
                let bytes = Bytes::from(ServerMessage::Heartbeat.encode());
                for conn in to {
                    if self.push(conn, Outbound::Text(bytes.clone())) == Push::Queued {
                        self.push(conn, Outbound::Ping);
                    }
                }
            }
            Output::Close { conn, code } => {
                debug!(%conn, code = code.code(), reason = code.reason(), "closing connection");
                self.registry.close(conn, code);
            }
            Output::RoomRemoved { room_id, reason } => {
                info!(room = %room_id, ?reason, "room removed");
            }
        }
    }

    fn count(&self, msg: &ServerMessage, recipients: usize) {
        match msg {
            ServerMessage::Signal { .. } | ServerMessage::Update { .. } => {
                self.metrics.relayed(msg.kind(), recipients);
            }
            ServerMessage::Error { code, .. } => self.metrics.error_sent(*code),
            _ => {}
        }
    }

    /// Queues an item for a connection; a slow consumer is dropped from the core at once.
    pub(crate) fn push(&self, conn: ConnId, item: Outbound) -> Push {
        let push = self.registry.push(conn, item);
        if push == Push::SlowConsumer {
            self.on_slow_consumer(conn);
        }
        push
    }

    fn on_slow_consumer(&self, conn: ConnId) {
        self.metrics.slow_consumers.inc();
        info!(%conn, "slow consumer closed");
        // The session notices the overflow, sends 4008 ahead of what is left unsent and
        // reports the disconnect itself; telling the core here would re-enter `drive`
        // from inside a dispatch.
    }

    /// Sends an error straight to a connection, outside the core.
    pub(crate) fn send_error(&self, conn: ConnId, code: ErrorCode, message: impl Into<String>) {
        self.metrics.error_sent(code);
        let bytes = Bytes::from(ServerMessage::error(code, message).encode());
        self.push(conn, Outbound::Text(bytes));
    }

    /// Closes a connection outside the core.
    pub(crate) fn close(&self, conn: ConnId, code: CloseCode) {
        self.registry.close(conn, code);
    }

    /// Measures the heap and applies the memory policy.
    pub(crate) fn check_memory(&self) -> (HeapSample, MemoryLevel) {
        let sample = self.heap.sample();
        let level = self.drive(|core, now| core.handle_memory(now, sample.allocated));
        self.memory_level.store(level as u8, Ordering::Relaxed);
        if level == MemoryLevel::Critical {
            self.heap.release();
        }
        (sample, level)
    }

    /// The memory level found by the last check.
    pub(crate) fn memory_level(&self) -> MemoryLevel {
        match self.memory_level.load(Ordering::Relaxed) {
            0 => MemoryLevel::Normal,
            1 => MemoryLevel::Warning,
            _ => MemoryLevel::Critical,
        }
    }

    /// Seconds since the server started.
    pub(crate) fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Whether shutdown has begun.
    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}
