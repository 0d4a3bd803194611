//! Command-line and environment configuration, with validation.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use octate_auth::{KeyRing, TokenAuthority};
use octate_core::CoreConfig;
use octate_transport::{
    AccessRules, AddressList, CorsOrigins, IceConfig, IceConfigError, SessionExpiry, Tls,
    TransportConfig, TurnSecret, WebhookConfig,
};

/// Deployment mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Open token issuance allowed, random secret allowed, warnings only.
    Development,
    /// Requires a token secret, an admin key, an origin list, and TLS (or a proxy that
    /// terminates it).
    Production,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What happens to an open session when its token expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum SessionExpiryArg {
    /// The session lives on: its token was checked when it authenticated.
    Ignore,
    /// The session is closed with `token-expired` (4001) unless it sent `refresh` first.
    Close,
}

/// Octate: a WebRTC signaling server for peer-to-peer collaborative editing.
///
/// Every option can also be set in the environment (shown in brackets) or in a `.env` file.
#[derive(Debug, Parser)]
#[command(name = "octate-server", version, about, long_about = None)]
pub(crate) struct Config {
    /// Threads serving connections; 0 means one per CPU this process may run on.
    /// With one, connections are served strictly in turn (see docs/performance.md).
    #[arg(long, env = "OCTATE_WORKER_THREADS", default_value_t = 0)]
    pub(crate) worker_threads: usize,
    /// Address to bind both listeners to.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub(crate) host: IpAddr,
    /// HTTP port (API, metrics, and WebSocket upgrades at /ws); 0 picks a free port.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub(crate) port: u16,
    /// WebSocket signaling port (upgrades on any path); 0 picks a free port.
    #[arg(long, env = "SIGNALING_PORT", default_value_t = 3001)]
    pub(crate) signaling_port: u16,
    /// Serve signaling only at /ws on the HTTP port, with no separate signaling listener.
    #[arg(long, env = "OCTATE_NO_SIGNALING_PORT", default_value_t = false)]
    pub(crate) no_signaling_port: bool,
    /// Comma-separated browser origins allowed by CORS and on WebSocket upgrades; `*` allows any
    /// (refused in production unless --allow-any-origin).
    #[arg(long, env = "CORS_ORIGINS", default_value = "*")]
    pub(crate) cors_origins: String,
    /// Let production run with CORS_ORIGINS=*, so that any web page may call the API and open
    /// WebSockets.
    #[arg(long, env = "OCTATE_ALLOW_ANY_ORIGIN", default_value_t = false)]
    pub(crate) allow_any_origin: bool,
    /// development or production; production requires a token secret, an admin key, an
    /// origin list, and TLS unless OCTATE_BEHIND_PROXY=true.
    #[arg(
        long = "env",
        env = "OCTATE_ENV",
        value_enum,
        default_value = "development"
    )]
    pub(crate) mode: Mode,
    /// Token signing secret, at least 32 bytes; random per start when unset.
    #[arg(long, env = "OCTATE_TOKEN_SECRET", hide_env_values = true)]
    pub(crate) token_secret: Option<String>,
    /// Id of the signing key, carried in every token.
    #[arg(long, env = "OCTATE_TOKEN_KEY_ID", default_value = "k1")]
    pub(crate) token_key_id: String,
    /// Older keys that still verify tokens, as `id:secret,id:secret` (key rotation).
    #[arg(long, env = "OCTATE_TOKEN_VERIFY_KEYS", hide_env_values = true)]
    pub(crate) token_verify_keys: Option<String>,
    /// Default token lifetime in seconds.
    #[arg(long, env = "OCTATE_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub(crate) token_ttl_secs: u64,
    /// Longest token lifetime a caller may ask for, in seconds.
    #[arg(long, env = "OCTATE_TOKEN_MAX_TTL_SECS", default_value_t = 86_400)]
    pub(crate) token_max_ttl_secs: u64,
    /// What happens to a session when its token expires: ignore or close.
    #[arg(
        long,
        env = "OCTATE_SESSION_EXPIRY",
        value_enum,
        default_value = "ignore"
    )]
    pub(crate) session_expiry: SessionExpiryArg,
    /// Admin key guarding token issuance and room create/delete (Authorization: Bearer).
    #[arg(long, env = "OCTATE_ADMIN_KEY", hide_env_values = true)]
    pub(crate) admin_key: Option<String>,
    /// Heartbeat interval in milliseconds.
    #[arg(long, env = "OCTATE_HEARTBEAT_INTERVAL_MS", default_value_t = 30_000)]
    pub(crate) heartbeat_interval_ms: u64,
    /// Silence after which a peer is removed, in milliseconds.
    #[arg(long, env = "OCTATE_PEER_TIMEOUT_MS", default_value_t = 300_000)]
    pub(crate) peer_timeout_ms: u64,
    /// Silence after which a y-webrtc peer is removed, in milliseconds (its client pings
    /// every 15 s).
    #[arg(long, env = "OCTATE_YWEBRTC_PEER_TIMEOUT_MS", default_value_t = 45_000)]
    pub(crate) ywebrtc_peer_timeout_ms: u64,
    /// Serve Yjs's y-webrtc provider at /y-webrtc on both ports (`false` turns it off).
    #[arg(long, env = "OCTATE_YWEBRTC", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) ywebrtc: bool,
    /// How long a peer whose connection dropped stays suspended, waiting for `resume`,
    /// in milliseconds (at most 60000; 0 turns resume off).
    #[arg(long, env = "OCTATE_RESUME_GRACE_MS", default_value_t = 15_000)]
    pub(crate) resume_grace_ms: u64,
    /// Cleanup interval in milliseconds.
    #[arg(long, env = "OCTATE_CLEANUP_INTERVAL_MS", default_value_t = 60_000)]
    pub(crate) cleanup_interval_ms: u64,
    /// Inactivity after which a room is closed, in milliseconds.
    #[arg(
        long,
        env = "OCTATE_ROOM_INACTIVE_TIMEOUT_MS",
        default_value_t = 10_800_000
    )]
    pub(crate) room_inactive_timeout_ms: u64,
    /// Inactivity after which a room is marked IDLE, in milliseconds.
    #[arg(long, env = "OCTATE_ROOM_IDLE_AFTER_MS", default_value_t = 600_000)]
    pub(crate) room_idle_after_ms: u64,
    /// How long a room created over HTTP may stay empty, in milliseconds.
    #[arg(long, env = "OCTATE_EMPTY_ROOM_GRACE_MS", default_value_t = 300_000)]
    pub(crate) empty_room_grace_ms: u64,
    /// Silence after which a peer counts as idle under critical memory pressure, in milliseconds.
    #[arg(long, env = "OCTATE_IDLE_PEER_AFTER_MS", default_value_t = 60_000)]
    pub(crate) idle_peer_after_ms: u64,
    /// Memory check interval in milliseconds.
    #[arg(
        long,
        env = "OCTATE_MEMORY_CHECK_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub(crate) memory_check_interval_ms: u64,
    /// Heap size in MiB at which the normal cleanup runs at once.
    #[arg(long, env = "OCTATE_MEMORY_WARNING_MB", default_value_t = 200)]
    pub(crate) memory_warning_mb: u64,
    /// Heap size in MiB at which idle rooms and idle peers are dropped.
    #[arg(long, env = "OCTATE_MEMORY_CRITICAL_MB", default_value_t = 300)]
    pub(crate) memory_critical_mb: u64,
    /// Time a new WebSocket has to send `auth`, in milliseconds.
    #[arg(long, env = "OCTATE_AUTH_TIMEOUT_MS", default_value_t = 10_000)]
    pub(crate) auth_timeout_ms: u64,
    /// Longest a connection being closed may stay open, in milliseconds.
    #[arg(long, env = "OCTATE_CLOSE_GRACE_MS", default_value_t = 5_000)]
    pub(crate) close_grace_ms: u64,
    /// Most peers in one room.
    #[arg(long, env = "OCTATE_MAX_PEERS_PER_ROOM", default_value_t = 50)]
    pub(crate) max_peers_per_room: usize,
    /// Most rooms in the server.
    #[arg(long, env = "OCTATE_MAX_ROOMS", default_value_t = 10_000)]
    pub(crate) max_rooms: usize,
    /// Most rooms one user may create.
    #[arg(long, env = "OCTATE_MAX_ROOMS_PER_USER", default_value_t = 10)]
    pub(crate) max_rooms_per_user: usize,
    /// Most open WebSocket connections.
    #[arg(long, env = "OCTATE_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub(crate) max_connections: usize,
    /// Most open WebSocket connections from one IP address (0 = no cap).
    #[arg(long, env = "OCTATE_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub(crate) max_connections_per_ip: usize,
    /// Messages per second one connection may send, sustained.
    #[arg(long, env = "OCTATE_MESSAGES_PER_SECOND", default_value_t = 50)]
    pub(crate) messages_per_second: u32,
    /// Messages one connection may send at once above the sustained rate.
    #[arg(long, env = "OCTATE_MESSAGE_BURST", default_value_t = 200)]
    pub(crate) message_burst: u32,
    /// Rejected messages in a row before a flooding connection is closed (4029).
    #[arg(long, env = "OCTATE_RATE_LIMIT_STRIKES", default_value_t = 50)]
    pub(crate) rate_limit_strikes: u32,
    /// Time a client has to send complete HTTP request headers, in milliseconds.
    #[arg(long, env = "OCTATE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub(crate) header_read_timeout_ms: u64,
    /// Largest WebSocket message in bytes.
    #[arg(long, env = "OCTATE_MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    pub(crate) max_message_bytes: usize,
    /// Largest HTTP request body in bytes.
    #[arg(long, env = "OCTATE_MAX_BODY_BYTES", default_value_t = 65_536)]
    pub(crate) max_body_bytes: usize,
    /// Most messages waiting to be written to one connection.
    #[arg(long, env = "OCTATE_OUTBOUND_QUEUE_MESSAGES", default_value_t = 256)]
    pub(crate) outbound_queue_messages: usize,
    /// Most bytes waiting to be written to one connection.
    #[arg(long, env = "OCTATE_OUTBOUND_QUEUE_BYTES", default_value_t = 1_048_576)]
    pub(crate) outbound_queue_bytes: usize,
    /// Comma-separated stun:, turn: and turns: URIs handed to peers in auth-ok and room-joined;
    /// turn: and turns: ones need OCTATE_TURN_SECRET.
    #[arg(long, env = "OCTATE_TURN_URIS")]
    pub(crate) turn_uris: Option<String>,
    /// Shared secret of the TURN server (coturn's static-auth-secret), at least 16 bytes:
    /// TURN credentials are signed with it.
    #[arg(long, env = "OCTATE_TURN_SECRET", hide_env_values = true)]
    pub(crate) turn_secret: Option<String>,
    /// The TURN secret being rotated out, still accepted by the TURN server; never signed with.
    #[arg(long, env = "OCTATE_TURN_SECRET_PREVIOUS", hide_env_values = true)]
    pub(crate) turn_secret_previous: Option<String>,
    /// Lifetime of a TURN credential in seconds.
    #[arg(long, env = "OCTATE_TURN_TTL_SECS", default_value_t = 14_400)]
    pub(crate) turn_ttl_secs: u64,
    /// Directory of static files to serve at / (e.g. examples/browser for the demo).
    #[arg(long, env = "OCTATE_STATIC_DIR")]
    pub(crate) static_dir: Option<PathBuf>,
    /// PEM certificate chain (leaf first) served over TLS on both ports, with OCTATE_TLS_KEY;
    /// reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "OCTATE_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of OCTATE_TLS_CERT.
    #[arg(long, env = "OCTATE_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Time a client has to complete the TLS handshake, in milliseconds.
    #[arg(
        long,
        env = "OCTATE_TLS_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub(crate) tls_handshake_timeout_ms: u64,
    /// How often the certificate and key files are checked for changes, in milliseconds
    /// (0: only on SIGHUP).
    #[arg(long, env = "OCTATE_TLS_RELOAD_CHECK_MS", default_value_t = 1_000)]
    pub(crate) tls_reload_check_ms: u64,
    /// A reverse proxy in front terminates TLS and names the client in X-Forwarded-For
    /// (believed only from OCTATE_TRUSTED_PROXIES).
    #[arg(long, env = "OCTATE_BEHIND_PROXY", default_value_t = false)]
    pub(crate) behind_proxy: bool,
    /// Comma-separated networks (CIDRs) of the proxies whose X-Forwarded-For is believed.
    #[arg(long, env = "OCTATE_TRUSTED_PROXIES", default_value = "")]
    pub(crate) trusted_proxies: String,
    /// Comma-separated networks (CIDRs, IPv4 or IPv6) that may connect; empty: all.
    #[arg(long, env = "OCTATE_ALLOW_CIDRS", default_value = "")]
    pub(crate) allow_cidrs: String,
    /// Comma-separated networks that may never connect (wins over the allow list).
    #[arg(long, env = "OCTATE_DENY_CIDRS", default_value = "")]
    pub(crate) deny_cidrs: String,
    /// Comma-separated networks that may use the admin endpoints (token issuance and
    /// revocation, room create/delete); empty: all that may connect.
    #[arg(long, env = "OCTATE_ADMIN_ALLOW_CIDRS", default_value = "")]
    pub(crate) admin_allow_cidrs: String,
    /// Log format.
    #[arg(long, env = "OCTATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
    /// File the audit records are also appended to, as JSON lines; reopened on SIGHUP.
    #[arg(long, env = "OCTATE_AUDIT_LOG")]
    pub(crate) audit_log: Option<PathBuf>,
    /// Comma-separated URLs that room and peer lifecycle events are POSTed to, signed
    /// (docs/webhooks.md); empty: webhooks off.
    #[arg(long, env = "OCTATE_WEBHOOK_URLS", default_value = "")]
    pub(crate) webhook_urls: String,
    /// Shared secret of the `Octate-Signature` header; required with OCTATE_WEBHOOK_URLS.
    #[arg(long, env = "OCTATE_WEBHOOK_SECRET", hide_env_values = true)]
    pub(crate) webhook_secret: Option<String>,
    /// Most attempts of one webhook delivery, the first included.
    #[arg(long, env = "OCTATE_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub(crate) webhook_max_attempts: u32,
    /// Most webhook deliveries waiting; beyond it the oldest are dropped.
    #[arg(long, env = "OCTATE_WEBHOOK_QUEUE", default_value_t = 10_000)]
    pub(crate) webhook_queue: usize,
    /// Longest wait for a webhook receiver's answer, in milliseconds.
    #[arg(long, env = "OCTATE_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub(crate) webhook_timeout_ms: u64,
    /// Longest wait before the first webhook retry, in milliseconds; it doubles after each.
    #[arg(long, env = "OCTATE_WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000)]
    pub(crate) webhook_retry_base_ms: u64,
    /// Most webhook requests in flight to one URL (each to a different room).
    #[arg(long, env = "OCTATE_WEBHOOK_CONCURRENCY", default_value_t = 8)]
    pub(crate) webhook_concurrency: usize,
    /// Cluster mode (with `--redis-url`).
    #[command(flatten)]
    pub(crate) cluster: crate::cluster::ClusterArgs,
}

/// What `Config::build` produces.
pub(crate) struct Built {
    pub(crate) transport: TransportConfig,
    pub(crate) authority: TokenAuthority,
    pub(crate) warnings: Vec<String>,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Longest resume grace: a suspended peer holds its place in a room this long at most.
const MAX_RESUME_GRACE_MS: u64 = 60_000;

impl Config {
    /// Checks the settings together and builds the server's parts; errors are for the operator.
    pub(crate) fn build(&self) -> Result<Built, String> {
        let mut warnings = Vec::new();
        if self.memory_warning_mb >= self.memory_critical_mb {
            return Err("OCTATE_MEMORY_WARNING_MB must be below OCTATE_MEMORY_CRITICAL_MB".into());
        }
        for (name, v) in [
            ("OCTATE_HEARTBEAT_INTERVAL_MS", self.heartbeat_interval_ms),
            ("OCTATE_PEER_TIMEOUT_MS", self.peer_timeout_ms),
            (
                "OCTATE_YWEBRTC_PEER_TIMEOUT_MS",
                self.ywebrtc_peer_timeout_ms,
            ),
            ("OCTATE_CLEANUP_INTERVAL_MS", self.cleanup_interval_ms),
            (
                "OCTATE_MEMORY_CHECK_INTERVAL_MS",
                self.memory_check_interval_ms,
            ),
            ("OCTATE_AUTH_TIMEOUT_MS", self.auth_timeout_ms),
            ("OCTATE_CLOSE_GRACE_MS", self.close_grace_ms),
            ("OCTATE_HEADER_READ_TIMEOUT_MS", self.header_read_timeout_ms),
            (
                "OCTATE_MESSAGES_PER_SECOND",
                u64::from(self.messages_per_second),
            ),
            (
                "OCTATE_RATE_LIMIT_STRIKES",
                u64::from(self.rate_limit_strikes),
            ),
        ] {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        for (name, v) in [
            ("OCTATE_MAX_PEERS_PER_ROOM", self.max_peers_per_room),
            ("OCTATE_MAX_ROOMS", self.max_rooms),
            ("OCTATE_MAX_ROOMS_PER_USER", self.max_rooms_per_user),
            ("OCTATE_MAX_CONNECTIONS", self.max_connections),
            (
                "OCTATE_OUTBOUND_QUEUE_MESSAGES",
                self.outbound_queue_messages,
            ),
        ] {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.resume_grace_ms > MAX_RESUME_GRACE_MS {
            return Err(format!(
                "OCTATE_RESUME_GRACE_MS must be at most {MAX_RESUME_GRACE_MS} (0 turns resume off)"
            ));
        }
        if self.max_message_bytes < 1024 || self.max_body_bytes < 1024 {
            return Err(
                "OCTATE_MAX_MESSAGE_BYTES and OCTATE_MAX_BODY_BYTES must be at least 1024".into(),
            );
        }
        if self.outbound_queue_bytes < self.max_message_bytes {
            return Err(
                "OCTATE_OUTBOUND_QUEUE_BYTES must be at least OCTATE_MAX_MESSAGE_BYTES".into(),
            );
        }
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return Err(format!(
                "OCTATE_STATIC_DIR {} is not a directory",
                dir.display()
            ));
        }
        let production = self.mode == Mode::Production;
        let mut keys = match &self.token_secret {
            Some(secret) => KeyRing::new(self.token_key_id.clone(), secret.as_bytes())
                .map_err(|e| format!("OCTATE_TOKEN_SECRET: {e}"))?,
            None if production => {
                return Err("OCTATE_TOKEN_SECRET is required when OCTATE_ENV=production".into());
            }
            None => {
                warnings.push(
                    "no OCTATE_TOKEN_SECRET: using a random one; tokens will not survive a restart"
                        .into(),
                );
                KeyRing::generate().map_err(|e| format!("generating a token secret: {e}"))?
            }
        };
        if let Some(list) = &self.token_verify_keys {
            for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                let (id, secret) = pair.split_once(':').ok_or_else(|| {
                    "OCTATE_TOKEN_VERIFY_KEYS must be id:secret,id:secret".to_string()
                })?;
                keys.add_verifying_key(id.trim(), secret.as_bytes())
                    .map_err(|e| format!("OCTATE_TOKEN_VERIFY_KEYS {id}: {e}"))?;
            }
        }
        let authority = TokenAuthority::new(keys)
            .with_ttls(
                Duration::from_secs(self.token_ttl_secs),
                Duration::from_secs(self.token_max_ttl_secs),
            )
            .map_err(|e| format!("token lifetimes: {e}"))?;
        match &self.admin_key {
            Some(key) if key.len() < 16 => return Err("OCTATE_ADMIN_KEY must be at least 16 characters".into()),
            Some(_) => {}
            None if production => return Err("OCTATE_ADMIN_KEY is required when OCTATE_ENV=production".into()),
            None => warnings.push(
                "no OCTATE_ADMIN_KEY: anyone can issue tokens and create or delete rooms (development only)".into(),
            ),
        }
        let cors_origins = CorsOrigins::parse(&self.cors_origins);
        if production && cors_origins == CorsOrigins::Any {
            if !self.allow_any_origin {
                return Err("CORS_ORIGINS is * (any web page may call this server), which \
                    OCTATE_ENV=production refuses: set CORS_ORIGINS to your app's origins, or \
                    OCTATE_ALLOW_ANY_ORIGIN=true (--allow-any-origin) to allow any origin on purpose"
                    .into());
            }
            warnings.push(
                "CORS_ORIGINS is * in production (OCTATE_ALLOW_ANY_ORIGIN): any web page may call this server"
                    .into(),
            );
        }
        let ice = self.ice_config()?;
        let access = self.access_rules(&mut warnings)?;
        let tls = self.tls()?;
        if production && tls.is_none() && !self.behind_proxy {
            return Err("OCTATE_ENV=production serves TLS: set OCTATE_TLS_CERT and \
                OCTATE_TLS_KEY, or OCTATE_BEHIND_PROXY=true when a reverse proxy terminates TLS"
                .into());
        }
        let core = CoreConfig {
            heartbeat_interval: ms(self.heartbeat_interval_ms),
            peer_timeout: ms(self.peer_timeout_ms),
            ywebrtc_peer_timeout: ms(self.ywebrtc_peer_timeout_ms),
            cleanup_interval: ms(self.cleanup_interval_ms),
            room_inactive_timeout: ms(self.room_inactive_timeout_ms),
            room_idle_after: ms(self.room_idle_after_ms),
            empty_room_grace: ms(self.empty_room_grace_ms),
            idle_peer_after: ms(self.idle_peer_after_ms),
            max_peers_per_room: self.max_peers_per_room,
            max_rooms: self.max_rooms,
            max_rooms_per_user: self.max_rooms_per_user,
            memory_warning_bytes: self.memory_warning_mb * 1024 * 1024,
            memory_critical_bytes: self.memory_critical_mb * 1024 * 1024,
            resume_grace: ms(self.resume_grace_ms),
            // Webhooks need them; a cluster node's store scripts report them too.
            lifecycle_events: !self.webhook_urls.trim().is_empty(),
        };
        let transport = TransportConfig {
            core,
            cors_origins,
            admin_key: self.admin_key.clone(),
            auth_timeout: ms(self.auth_timeout_ms),
            session_expiry: match self.session_expiry {
                SessionExpiryArg::Ignore => SessionExpiry::Ignore,
                SessionExpiryArg::Close => SessionExpiry::Close,
            },
            close_grace: ms(self.close_grace_ms),
            max_message_bytes: self.max_message_bytes,
            max_body_bytes: self.max_body_bytes,
            outbound_queue_messages: self.outbound_queue_messages,
            outbound_queue_bytes: self.outbound_queue_bytes,
            memory_check_interval: ms(self.memory_check_interval_ms),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            messages_per_second: self.messages_per_second,
            message_burst: self.message_burst,
            rate_limit_strikes: self.rate_limit_strikes,
            header_read_timeout: ms(self.header_read_timeout_ms),
            static_dir: self.static_dir.clone(),
            ice,
            access,
            tls,
            ywebrtc: self.ywebrtc,
            webhooks: self.webhooks()?,
            ..TransportConfig::default()
        };
        Ok(Built {
            transport,
            authority,
            warnings,
        })
    }
}

impl Config {
    /// Webhook delivery, when URLs are set.
    fn webhooks(&self) -> Result<Option<WebhookConfig>, String> {
        let parsed = WebhookConfig::parse(&self.webhook_urls, self.webhook_secret.as_deref())
            .map_err(|e| format!("OCTATE_WEBHOOK_URLS: {e}"))?;
        let Some(mut config) = parsed else {
            return Ok(None);
        };
        config.max_attempts = self.webhook_max_attempts;
        config.queue_capacity = self.webhook_queue;
        config.timeout = ms(self.webhook_timeout_ms);
        config.retry_base = ms(self.webhook_retry_base_ms);
        config.max_in_flight = self.webhook_concurrency;
        config.validate().map_err(|e| e.to_string())?;
        Ok(Some(config))
    }

    /// The address lists and proxy rules; warns of proxy settings that do nothing.
    fn access_rules(&self, warnings: &mut Vec<String>) -> Result<AccessRules, String> {
        let list =
            |name: &str, value: &str| AddressList::parse(value).map_err(|e| format!("{name}: {e}"));
        let rules = AccessRules {
            allow: list("OCTATE_ALLOW_CIDRS", &self.allow_cidrs)?,
            deny: list("OCTATE_DENY_CIDRS", &self.deny_cidrs)?,
            admin_allow: list("OCTATE_ADMIN_ALLOW_CIDRS", &self.admin_allow_cidrs)?,
            behind_proxy: self.behind_proxy,
            trusted_proxies: list("OCTATE_TRUSTED_PROXIES", &self.trusted_proxies)?,
        };
        match (rules.behind_proxy, rules.trusted_proxies.is_empty()) {
            (true, true) => warnings.push(
                "OCTATE_BEHIND_PROXY without OCTATE_TRUSTED_PROXIES: X-Forwarded-For is ignored, \
                 and every client looks like the proxy to per-address limits and lists"
                    .into(),
            ),
            (false, false) => warnings
                .push("OCTATE_TRUSTED_PROXIES is ignored without OCTATE_BEHIND_PROXY=true".into()),
            _ => {}
        }
        Ok(rules)
    }

    /// The certificate to serve, loaded and checked, when one is configured.
    fn tls(&self) -> Result<Option<Tls>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        if self.tls_handshake_timeout_ms == 0 {
            return Err("OCTATE_TLS_HANDSHAKE_TIMEOUT_MS must be greater than 0".into());
        }
        let tls =
            Tls::load(cert, key).map_err(|e| format!("OCTATE_TLS_CERT/OCTATE_TLS_KEY: {e}"))?;
        Ok(Some(
            tls.with_handshake_timeout(ms(self.tls_handshake_timeout_ms)),
        ))
    }

    /// The STUN/TURN servers handed to peers, or `None` when no URI and no secret is set.
    fn ice_config(&self) -> Result<Option<IceConfig>, String> {
        let uris: Vec<&str> = self
            .turn_uris
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|uri| !uri.is_empty())
            .collect();
        let secret = match &self.turn_secret {
            Some(secret) => Some(
                TurnSecret::new(secret.as_bytes())
                    .map_err(|e| format!("OCTATE_TURN_SECRET: {e}"))?,
            ),
            None => None,
        };
        if let Some(previous) = &self.turn_secret_previous {
            if self.turn_secret.is_none() {
                return Err(
                    "OCTATE_TURN_SECRET_PREVIOUS is set without OCTATE_TURN_SECRET, the secret \
                     credentials are signed with"
                        .into(),
                );
            }
            TurnSecret::new(previous.as_bytes())
                .map_err(|e| format!("OCTATE_TURN_SECRET_PREVIOUS: {e}"))?;
            if self.turn_secret.as_deref() == Some(previous.as_str()) {
                return Err("OCTATE_TURN_SECRET_PREVIOUS is the same as OCTATE_TURN_SECRET".into());
            }
        }
        if uris.is_empty() && secret.is_none() {
            return Ok(None);
        }
        let ttl = Duration::from_secs(self.turn_ttl_secs);
        IceConfig::new(uris, secret, ttl).map(Some).map_err(|e| {
            let name = match e {
                IceConfigError::SecretWithoutTurn | IceConfigError::SecretTooShort { .. } => {
                    "OCTATE_TURN_SECRET"
                }
                IceConfigError::BadTtl { .. } => "OCTATE_TURN_TTL_SECS",
                _ => "OCTATE_TURN_URIS",
            };
            format!("{name}: {e}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["octate-server"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("arguments parse")
    }

    #[test]
    fn webhooks_are_off_by_default_and_need_a_secret() {
        assert!(
            parse(&[])
                .build()
                .unwrap_or_else(|e| panic!("{e}"))
                .transport
                .webhooks
                .is_none()
        );
        let no_secret = parse(&["--webhook-urls", "https://hooks.example/in"]).build();
        assert!(
            no_secret
                .err()
                .is_some_and(|e| e.contains("OCTATE_WEBHOOK_SECRET"))
        );
        let built = parse(&[
            "--webhook-urls",
            "https://hooks.example/in",
            "--webhook-secret",
            "s3cret",
            "--webhook-retry-base-ms",
            "50",
            "--webhook-concurrency",
            "32",
        ])
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(built.transport.core.lifecycle_events);
        let hooks = built.transport.webhooks.expect("webhooks on");
        assert_eq!(hooks.retry_base, Duration::from_millis(50));
        assert_eq!(hooks.max_attempts, 8);
        assert_eq!(hooks.max_in_flight, 32);
        let zero = parse(&[
            "--webhook-urls",
            "https://hooks.example/in",
            "--webhook-secret",
            "s3cret",
            "--webhook-max-attempts",
            "0",
        ])
        .build();
        assert!(
            zero.err()
                .is_some_and(|e| e.contains("OCTATE_WEBHOOK_MAX_ATTEMPTS"))
        );
        let no_slot = parse(&[
            "--webhook-urls",
            "https://hooks.example/in",
            "--webhook-secret",
            "s3cret",
            "--webhook-concurrency",
            "0",
        ])
        .build();
        assert!(
            no_slot
                .err()
                .is_some_and(|e| e.contains("OCTATE_WEBHOOK_CONCURRENCY"))
        );
    }

    #[test]
    fn defaults_build_in_development() {
        let built = parse(&[]).build().expect("defaults are valid");
        assert_eq!(built.transport.core, CoreConfig::default());
        assert_eq!(built.warnings.len(), 2, "{:?}", built.warnings);
    }

    #[test]
    fn production_requires_secret_and_admin_key() {
        assert!(parse(&["--env", "production"]).build().is_err());
        let secret = "0123456789abcdef0123456789abcdef";
        assert!(
            parse(&["--env", "production", "--token-secret", secret])
                .build()
                .is_err()
        );
        let ok = parse(&[
            "--env",
            "production",
            "--token-secret",
            secret,
            "--admin-key",
            "admin-key-0123456789",
            "--cors-origins",
            "https://app.example.com",
            "--behind-proxy",
        ]);
        assert!(ok.build().is_ok());
    }

    #[test]
    fn ywebrtc_is_on_unless_turned_off() {
        let default = parse(&[]).build().expect("defaults are valid");
        assert!(default.transport.ywebrtc);
        let off = parse(&["--ywebrtc", "false", "--ywebrtc-peer-timeout-ms", "60000"])
            .build()
            .expect("valid");
        assert!(!off.transport.ywebrtc);
        assert_eq!(
            off.transport.core.ywebrtc_peer_timeout,
            Duration::from_secs(60)
        );
        assert!(parse(&["--ywebrtc-peer-timeout-ms", "0"]).build().is_err());
    }

    #[test]
    fn session_expiry_defaults_to_ignore() {
        let default = parse(&[]).build().expect("defaults are valid");
        assert_eq!(default.transport.session_expiry, SessionExpiry::Ignore);
        let close = parse(&["--session-expiry", "close"])
            .build()
            .expect("valid");
        assert_eq!(close.transport.session_expiry, SessionExpiry::Close);
        assert!(Config::try_parse_from(["octate-server", "--session-expiry", "later"]).is_err());
    }

    #[test]
    fn production_refuses_any_origin_unless_allowed() {
        let production = [
            "--env",
            "production",
            "--token-secret",
            "0123456789abcdef0123456789abcdef",
            "--admin-key",
            "admin-key-0123456789",
            "--behind-proxy",
        ];
        let err = parse(&production)
            .build()
            .err()
            .expect("any origin refused");
        assert!(err.contains("CORS_ORIGINS"), "{err}");
        assert!(err.contains("OCTATE_ALLOW_ANY_ORIGIN"), "{err}");
        let star = [&production[..], &["--cors-origins", "https://a.test, *"]].concat();
        assert!(
            parse(&star).build().is_err(),
            "a * in the list is any origin"
        );

        let allowed = [&production[..], &["--allow-any-origin"]].concat();
        let built = parse(&allowed).build().expect("allowed on purpose");
        assert_eq!(built.transport.cors_origins, CorsOrigins::Any);
        assert!(
            built.warnings.iter().any(|w| w.contains("CORS_ORIGINS")),
            "{:?}",
            built.warnings
        );
        // Development keeps `*` as its default, with no flag needed.
        assert!(parse(&[]).build().is_ok());
    }

    const TURN_SECRET: &str = "turn-secret-0123456789";

    #[test]
    fn no_turn_settings_hand_out_no_ice_servers() {
        let built = parse(&[]).build().expect("defaults are valid");
        assert!(built.transport.ice.is_none());
    }

    #[test]
    fn turn_settings_build_an_ice_config() {
        let built = parse(&[
            "--turn-uris",
            "turn:turn.example.com:3478, turns:turn.example.com:5349 ,stun:stun.example.com,",
            "--turn-secret",
            TURN_SECRET,
            "--turn-secret-previous",
            "older-turn-secret-0123",
        ])
        .build()
        .expect("valid TURN settings");
        let ice = built.transport.ice.expect("ICE servers configured");
        assert!(ice.issues_credentials());
        assert_eq!(ice.ttl(), Duration::from_secs(14_400));
        let stun = parse(&[
            "--turn-uris",
            "stun:stun.example.com",
            "--turn-ttl-secs",
            "60",
        ])
        .build()
        .expect("STUN needs no secret");
        let ice = stun.transport.ice.expect("STUN servers configured");
        assert!(!ice.issues_credentials());
    }

    #[test]
    fn bad_turn_settings_name_the_variable_at_fault() {
        for (args, names) in [
            (
                &[
                    "--turn-uris",
                    "turn://turn.example.com",
                    "--turn-secret",
                    TURN_SECRET,
                ][..],
                &["OCTATE_TURN_URIS", "turn://turn.example.com"][..],
            ),
            (
                &["--turn-uris", "stun:s.test,http://x.test"],
                &["OCTATE_TURN_URIS", "http://x.test"],
            ),
            (
                &["--turn-uris", "turn:t.test"],
                &["OCTATE_TURN_URIS", "needs a TURN secret"],
            ),
            (
                &["--turn-secret", TURN_SECRET],
                &["OCTATE_TURN_SECRET", "no turn:"],
            ),
            (
                &["--turn-uris", "turn:t.test", "--turn-secret", "short"],
                &["OCTATE_TURN_SECRET", "16 bytes"],
            ),
            (
                &[
                    "--turn-uris",
                    "turn:t.test",
                    "--turn-secret",
                    TURN_SECRET,
                    "--turn-ttl-secs",
                    "0",
                ],
                &["OCTATE_TURN_TTL_SECS"],
            ),
            (
                &[
                    "--turn-uris",
                    "stun:s.test",
                    "--turn-secret-previous",
                    TURN_SECRET,
                ],
                &["OCTATE_TURN_SECRET_PREVIOUS", "without OCTATE_TURN_SECRET"],
            ),
            (
                &[
                    "--turn-uris",
                    "turn:t.test",
                    "--turn-secret",
                    TURN_SECRET,
                    "--turn-secret-previous",
                    "short",
                ],
                &["OCTATE_TURN_SECRET_PREVIOUS", "16 bytes"],
            ),
            (
                &[
                    "--turn-uris",
                    "turn:t.test",
                    "--turn-secret",
                    TURN_SECRET,
                    "--turn-secret-previous",
                    TURN_SECRET,
                ],
                &["OCTATE_TURN_SECRET_PREVIOUS", "same"],
            ),
        ] {
            let err = parse(args)
                .build()
                .err()
                .unwrap_or_else(|| panic!("{args:?} refused"));
            for name in names {
                assert!(err.contains(name), "{args:?}: {err}");
            }
        }
    }

    const PRODUCTION: [&str; 8] = [
        "--env",
        "production",
        "--token-secret",
        "0123456789abcdef0123456789abcdef",
        "--admin-key",
        "admin-key-0123456789",
        "--cors-origins",
        "https://app.example.com",
    ];

    #[test]
    fn production_refuses_to_serve_without_tls_unless_a_proxy_terminates_it() {
        let err = parse(&PRODUCTION).build().err().expect("plain TCP refused");
        assert!(err.contains("OCTATE_TLS_CERT"), "{err}");
        assert!(err.contains("OCTATE_BEHIND_PROXY"), "{err}");
        let proxied = [&PRODUCTION[..], &["--behind-proxy"]].concat();
        assert!(parse(&proxied).build().is_ok());

        let dir = std::env::temp_dir().join(format!("octate-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        let (cert_arg, key_arg) = (
            cert_path.to_str().expect("utf-8 path"),
            key_path.to_str().expect("utf-8 path"),
        );
        let with_tls = [
            &PRODUCTION[..],
            &["--tls-cert", cert_arg, "--tls-key", key_arg],
        ]
        .concat();
        let built = parse(&with_tls).build().expect("TLS in production");
        assert!(built.transport.tls.is_some());

        // A key that is not the certificate's is refused at start.
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(&key_path, other.serialize_pem()).expect("write");
        let err = parse(&with_tls).build().err().expect("mismatch refused");
        assert!(err.contains("does not belong"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);

        // One file without the other is an argument error.
        assert!(Config::try_parse_from(["octate-server", "--tls-cert", "c.pem"]).is_err());
    }

    #[test]
    fn address_lists_name_the_bad_setting_and_proxy_settings_that_do_nothing_warn() {
        let err = parse(&["--deny-cidrs", "10.0.0.0/8,nonsense"])
            .build()
            .err()
            .expect("refused");
        assert!(
            err.contains("OCTATE_DENY_CIDRS") && err.contains("nonsense"),
            "{err}"
        );
        let built = parse(&[
            "--allow-cidrs",
            "10.0.0.0/8, 2001:db8::/32",
            "--admin-allow-cidrs",
            "127.0.0.1",
        ])
        .build()
        .expect("valid lists");
        let access = &built.transport.access;
        assert!(access.allow.contains("2001:db8::1".parse().expect("ip")));
        assert!(
            access
                .admin_allow
                .contains("127.0.0.1".parse().expect("ip"))
        );

        let lonely = parse(&["--behind-proxy"]).build().expect("valid");
        assert!(
            lonely
                .warnings
                .iter()
                .any(|w| w.contains("OCTATE_TRUSTED_PROXIES")),
            "{:?}",
            lonely.warnings
        );
        let unused = parse(&["--trusted-proxies", "10.0.0.1"])
            .build()
            .expect("valid");
        assert!(
            unused
                .warnings
                .iter()
                .any(|w| w.contains("OCTATE_BEHIND_PROXY")),
            "{:?}",
            unused.warnings
        );
    }

    #[test]
    fn rejects_bad_combinations() {
        assert!(parse(&["--token-secret", "short"]).build().is_err());
        assert!(
            parse(&["--memory-warning-mb", "300", "--memory-critical-mb", "200"])
                .build()
                .is_err()
        );
        assert!(parse(&["--heartbeat-interval-ms", "0"]).build().is_err());
        assert!(Config::try_parse_from(["octate-server", "--port", "seventy"]).is_err());
    }
}
