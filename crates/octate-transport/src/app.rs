//! Shared state of a running server and the drive loop around the core.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use octate_auth::{AuthError, Claims, TokenAuthority};
use octate_core::{
    ClusterEvent, ConnId, Core, Identity, LocalMember, MemoryLevel, NodeId, Output, Protocol,
    TokenRef,
};
use octate_protocol::{CloseCode, ErrorCode, RoomCloseReason, ServerMessage, UnixMillis};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::TransportConfig;
use crate::audit;
use crate::auth::AdminKey;
use crate::cluster::ClusterLink;
use crate::heap::{HeapProbe, HeapSample};
use crate::limits::PerAddress;
use crate::metrics::Metrics;
use crate::registry::{Outbound, Push, Registry};
use crate::tokens::SessionTokens;
use crate::webhook::Webhooks;

/// A source of wall-clock time, in Unix milliseconds (quinn's `TimeSource`, for wall time).
pub(crate) trait WallClock: Send + Sync + std::fmt::Debug {
    /// Now, as the wall clock says: it may jump when the system clock is set.
    fn unix_ms(&self) -> UnixMillis;
}

/// The system's wall clock.
#[derive(Debug)]
struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn unix_ms(&self) -> UnixMillis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// Time for timers and for tokens.
///
/// Timers run on tokio's monotonic clock, mapped onto Unix milliseconds from the
/// wall time at start, so paused-time tests steer the core too and a stepped
/// system clock never moves a deadline. Token times (`iat`, `exp`) are judged
/// against the wall clock read at each check, so a server started before its
/// clock was set judges tokens right once it is.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    base: Instant,
    base_unix_ms: UnixMillis,
    wall: Arc<dyn WallClock>,
}

impl Clock {
    fn new() -> Self {
        Self::with_wall(Arc::new(SystemWallClock))
    }

    /// A clock whose wall time comes from `wall`; timers start at its current reading.
    pub(crate) fn with_wall(wall: Arc<dyn WallClock>) -> Self {
        Self {
            base: Instant::now(),
            base_unix_ms: wall.unix_ms(),
            wall,
        }
    }

    /// Now, in Unix milliseconds, advancing monotonically: for timers and the core.
    pub(crate) fn now_ms(&self) -> UnixMillis {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_unix_ms.saturating_add(elapsed)
    }

    /// Now, as the wall clock says, read afresh: for token times.
    pub(crate) fn wall_ms(&self) -> UnixMillis {
        self.wall.unix_ms()
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
    /// Admin stats streams open now.
    pub(crate) admin_streams: std::sync::atomic::AtomicUsize,
    /// Which open session runs on which token, for revocation and expiry.
    pub(crate) tokens: Arc<SessionTokens>,
    memory_level: AtomicU8,
    started: Instant,
    /// The rest of the cluster, when this server is one node of several.
    pub(crate) cluster: OnceLock<Arc<dyn ClusterLink>>,
    /// Wakes the timer task when the core's next deadline moved earlier (a suspended
    /// peer's grace).
    pub(crate) timer_wake: tokio::sync::Notify,
    /// Sessions taken over by `resume` and not yet adopted by their connection task.
    resumed: Mutex<HashMap<ConnId, (Identity, TokenRef)>>,
    /// Webhook delivery, when URLs are configured.
    pub(crate) webhooks: Option<Webhooks>,
    /// How many times the core has been driven, for tests that count lock acquisitions.
    #[cfg(test)]
    pub(crate) drives: std::sync::atomic::AtomicUsize,
}

/// The core's settings, with lifecycle events on when webhooks are configured.
fn core_config(config: &TransportConfig) -> octate_core::CoreConfig {
    let mut core = config.core.clone();
    core.lifecycle_events |= config.webhooks.is_some();
    core
}

/// Text shared by every recipient of a relayed message, handed to `Bytes` without a copy.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
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
        Self::with_clock(config, authority, heap, Clock::new())
    }

    /// Builds the shared state of a server that reads time from `clock`.
    pub(crate) fn with_clock(
        config: TransportConfig,
        authority: TokenAuthority,
        heap: Box<dyn HeapProbe>,
        clock: Clock,
    ) -> Arc<Self> {
        let core = Core::new(core_config(&config), clock.now_ms());
        Self::build(config, authority, heap, clock, core)
    }

    /// Builds the shared state of one node of a cluster; attach its link with
    /// [`App::attach_cluster`] before serving.
    pub fn new_clustered(
        config: TransportConfig,
        authority: TokenAuthority,
        heap: Box<dyn HeapProbe>,
        node: NodeId,
    ) -> Arc<Self> {
        let clock = Clock::new();
        let core = Core::clustered(core_config(&config), clock.now_ms(), node);
        Self::build(config, authority, heap, clock, core)
    }

    fn build(
        config: TransportConfig,
        authority: TokenAuthority,
        heap: Box<dyn HeapProbe>,
        clock: Clock,
        mut core: Core,
    ) -> Arc<Self> {
        core.set_resume_issuer(Box::new(crate::resume::RandomIssuer::new()));
        let (stop, _) = watch::channel(false);
        let admin_key = config.admin_key.as_deref().map(AdminKey::new);
        let webhooks = config
            .webhooks
            .as_ref()
            .and_then(|hooks| Webhooks::new(hooks, core.node().cloned()));
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
            admin_streams: std::sync::atomic::AtomicUsize::new(0),
            tokens: Arc::default(),
            memory_level: AtomicU8::new(0),
            started: Instant::now(),
            cluster: OnceLock::new(),
            resumed: Mutex::new(HashMap::new()),
            webhooks,
            timer_wake: tokio::sync::Notify::new(),
            #[cfg(test)]
            drives: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Connects this node to the rest of its cluster; a second link is ignored.
    pub fn attach_cluster(&self, link: Arc<dyn ClusterLink>) {
        if self.cluster.set(link).is_err() {
            tracing::warn!("a cluster link is attached already");
        }
    }

    /// The cluster link, when this server is a node of a cluster.
    pub(crate) fn cluster(&self) -> Option<&Arc<dyn ClusterLink>> {
        self.cluster.get()
    }

    /// Feeds something the cluster reported into the core.
    pub fn handle_cluster_event(&self, event: ClusterEvent) {
        self.drive(|core, now| core.handle_cluster(now, event));
    }

    /// Every peer of this node in a room, as the cluster should know it.
    pub fn local_members(&self) -> Vec<LocalMember> {
        self.with_core(Core::local_members)
    }

    /// The session a connection just took over with `resume`, once, if it did.
    pub(crate) fn take_resumed(&self, conn: ConnId) -> Option<(Identity, TokenRef)> {
        self.resumed.lock().remove(&conn)
    }

    /// Runs `f` on the core with the current time, then carries out every output.
    pub(crate) fn drive<T>(&self, f: impl FnOnce(&mut Core, UnixMillis) -> T) -> T {
        let mut core = self.core.lock();
        #[cfg(test)]
        self.drives.fetch_add(1, Ordering::Relaxed);
        // Read the clock under the lock, so the core sees time move forward only.
        let now = self.clock.now_ms();
        let due = core.poll_timeout();
        let result = f(&mut core, now);
        if core.poll_timeout() < due {
            self.timer_wake.notify_one();
        }
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
            Output::Send { to, mut msg } => {
                self.count(&msg, 1);
                self.attach_ice_servers(&mut msg);
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
                // A deletion is audited where it was asked for, with its source; an
                // empty room going is routine.
                if matches!(
                    reason,
                    RoomCloseReason::Inactive | RoomCloseReason::MemoryPressure
                ) {
                    audit::room_closed(&room_id, reason);
                }
            }
            Output::Forward { to, text } => {
                let bytes = Bytes::from_owner(SharedText(text));
                for conn in to {
                    self.push(conn, Outbound::Text(bytes.clone()));
                }
            }
            Output::Cluster(command) => match self.cluster() {
                Some(cluster) => cluster.submit(command),
                None => debug!(?command, "cluster command without a cluster"),
            },
            Output::Resumed {
                conn,
                identity,
                token,
            } => {
                self.metrics.session_resumed();
                self.resumed.lock().insert(conn, (identity, token));
            }
            Output::Lifecycle(event) => {
                if let Some(hooks) = &self.webhooks {
                    hooks.enqueue(&event, &self.metrics);
                }
            }
        }
    }

    /// Fills in the ICE servers of an `auth-ok` or `room-joined`, with a TURN credential
    /// for its user, when the server hands them out.
    fn attach_ice_servers(&self, msg: &mut ServerMessage) {
        let Some(ice) = &self.config.ice else { return };
        if let ServerMessage::AuthOk {
            user_id,
            ice_servers,
            ..
        }
        | ServerMessage::RoomJoined {
            user_id,
            ice_servers,
            ..
        }
        | ServerMessage::Resumed {
            user_id,
            ice_servers,
            ..
        } = msg
        {
            *ice_servers = Some(ice.ice_servers(user_id, self.clock.wall_ms()));
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

    /// Revokes a token and ends every open session that runs on it; returns its claims.
    pub(crate) fn revoke_token(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = self.auth.write().revoke(token, self.clock.wall_ms())?;
        let conns = self.tokens.take_token(&claims.token_id);
        if !conns.is_empty() {
            info!(sessions = conns.len(), "revoked token ends its sessions");
            self.end_sessions(&conns, ErrorCode::TokenRevoked, "token was revoked");
        }
        Ok(claims)
    }

    /// Applies a revocation made on another node: the token is refused here too, and
    /// the sessions that used it end as if it had been revoked here.
    pub fn apply_revocation(&self, token_id: &str, expires_at: UnixMillis) {
        if let Err(err) = self
            .auth
            .write()
            .revoke_id(token_id, expires_at, self.clock.wall_ms())
        {
            tracing::warn!(%err, "cannot keep a revocation from the cluster");
        }
        let conns = self.tokens.take_token(token_id);
        if !conns.is_empty() {
            info!(
                sessions = conns.len(),
                "token revoked elsewhere ends its sessions"
            );
            self.end_sessions(&conns, ErrorCode::TokenRevoked, "token was revoked");
        }
    }

    /// Forgets revocations of tokens expired by the wall clock; returns how many.
    pub(crate) fn purge_revoked_tokens(&self) -> usize {
        self.auth.write().purge_revoked(self.clock.wall_ms())
    }

    /// Sends `error` `code` to each connection, closes it with 4001 and tells the core
    /// at once, so its room sees it leave without waiting for the socket to drain.
    pub(crate) fn end_sessions(&self, conns: &[ConnId], code: ErrorCode, message: &str) {
        for &conn in conns {
            // A `y-webrtc` client has no `error` message: the close code tells it.
            if self.with_core(|core| core.protocol(conn)) != Some(Protocol::YWebrtc) {
                self.send_error(conn, code, message);
            }
            self.close(conn, CloseCode::AuthFailed);
        }
        // The sessions report their own end later; the core has forgotten them by then.
        self.drive(|core, now| {
            for &conn in conns {
                core.handle_disconnect(now, conn);
            }
        });
    }
}
