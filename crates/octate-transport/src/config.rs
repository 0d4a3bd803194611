//! Settings of the network layer, with documented defaults.

use std::path::PathBuf;
use std::time::Duration;

use octate_core::CoreConfig;
use octate_protocol::DEFAULT_MAX_MESSAGE_BYTES;

use crate::{AccessRules, IceConfig, Tls, WebhookConfig};

/// Which browser origins may call the HTTP API and open WebSockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`*`).
    Any,
    /// Exactly these origins, e.g. `http://localhost:3000`.
    List(Vec<String>),
}

impl CorsOrigins {
    /// Parses a comma-separated list; `*` alone means any origin.
    pub fn parse(list: &str) -> Self {
        let items: Vec<String> = list
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if items.iter().any(|s| s == "*") {
            Self::Any
        } else {
            Self::List(items)
        }
    }

    /// Whether a request from `origin` is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// What happens to an open session when the token it authenticated with expires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionExpiry {
    /// The session lives on: its token was checked when it authenticated.
    #[default]
    Ignore,
    /// The session is closed with `token-expired` (4001) at expiry, unless a
    /// `refresh` message gave it a newer token.
    Close,
}

/// Settings of the transport; [`Default`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Rules of the core: timings, limits, memory thresholds.
    pub core: CoreConfig,
    /// Browser origins allowed by CORS and on WebSocket upgrades.
    pub cors_origins: CorsOrigins,
    /// When set, token issuance, revocation and room create/delete need `Authorization: Bearer <key>`.
    pub admin_key: Option<String>,
    /// Time a new WebSocket has to send `auth`.
    pub auth_timeout: Duration,
    /// What happens to a session when its token expires.
    pub session_expiry: SessionExpiry,
    /// Longest a connection the server is closing may stay open: its last frames and the
    /// close handshake must finish within it, or the socket is dropped.
    pub close_grace: Duration,
    /// Largest WebSocket message (after reassembly of fragments), in bytes.
    pub max_message_bytes: usize,
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Most messages waiting to be written to one connection.
    pub outbound_queue_messages: usize,
    /// Most bytes waiting to be written to one connection.
    pub outbound_queue_bytes: usize,
    /// How often the heap is measured and the memory policy applied.
    pub memory_check_interval: Duration,
    /// Most open WebSocket connections.
    pub max_connections: usize,
    /// Most open WebSocket connections from one IP address (0 = no cap).
    pub max_connections_per_ip: usize,
    /// Messages per second one connection may send, sustained.
    pub messages_per_second: u32,
    /// Messages one connection may send at once above the sustained rate.
    pub message_burst: u32,
    /// Rejected messages in a row (no second without one) before the connection is closed.
    pub rate_limit_strikes: u32,
    /// Time a client has to send complete HTTP request headers.
    pub header_read_timeout: Duration,
    /// Time given to open connections to close at shutdown.
    pub shutdown_grace: Duration,
    /// Directory of static files served at `/` (the browser demo), if any.
    pub static_dir: Option<PathBuf>,
    /// STUN/TURN servers handed to peers in `auth-ok` and `room-joined`, if any.
    pub ice: Option<IceConfig>,
    /// Address lists and the proxy rules.
    pub access: AccessRules,
    /// The certificate served over TLS on both ports; plain TCP when `None`.
    pub tls: Option<Tls>,
    /// Whether `/y-webrtc` serves Yjs's `y-webrtc` provider (see `docs/y-webrtc.md`).
    pub ywebrtc: bool,
    /// Where room and peer lifecycle events are POSTed, signed; off when `None`.
    pub webhooks: Option<WebhookConfig>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            core: CoreConfig::default(),
            cors_origins: CorsOrigins::Any,
            admin_key: None,
            auth_timeout: Duration::from_secs(10),
            session_expiry: SessionExpiry::Ignore,
            close_grace: Duration::from_secs(5),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_body_bytes: 64 * 1024,
            outbound_queue_messages: 256,
            outbound_queue_bytes: 1024 * 1024,
            memory_check_interval: Duration::from_secs(30),
            max_connections: 16_384,
            max_connections_per_ip: 256,
            messages_per_second: 50,
            message_burst: 200,
            rate_limit_strikes: 50,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(4),
            static_dir: None,
            ice: None,
            access: AccessRules::default(),
            tls: None,
            ywebrtc: true,
            webhooks: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_list_parsing() {
        let list = CorsOrigins::parse("http://localhost:3000, https://app.example.com/");
        assert!(list.allows("http://localhost:3000"));
        assert!(list.allows("https://app.example.com"));
        assert!(!list.allows("https://evil.example.com"));
        assert_eq!(CorsOrigins::parse("*"), CorsOrigins::Any);
        assert!(!CorsOrigins::parse("").allows("http://x"));
    }
}
