//! Octate's network layer: the HTTP API and WebSocket signaling on raw hyper 1.x and
//! fastwebsockets, plus the timers that drive [`octate_core::Core`].
//!
//! One [`App`] holds the core behind a single short-held lock, the token authority,
//! the map of open connections, metrics and the heap probe. [`serve`] runs the
//! accept loops until its shutdown future completes, then closes every WebSocket
//! with 1001 and waits (bounded) for connections to finish.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod access;
mod app;
mod assemble;
mod audit;
mod auth;
mod cluster;
mod config;
mod error;
mod heap;
mod http;
mod lifecycle;
mod limits;
mod metrics;
mod registry;
mod resume;
mod server;
mod session;
mod stream;
mod timers;
mod tls;
mod tokens;
mod turn;
mod webhook;
mod wire;
mod writer;

pub use access::{AccessRules, AddressList, BadNetwork, Refusal};
pub use app::App;
pub use audit::AUDIT_TARGET;
pub use cluster::{ClusterLink, ClusterStats, LinkError, LinkFuture};
pub use config::{CorsOrigins, SessionExpiry, TransportConfig};
pub use error::TransportError;
pub use heap::{HeapProbe, HeapSample, RssProbe, rss_bytes};
pub use http::Listener;
pub use metrics::{Gauges, Metrics};
pub use server::{Listeners, serve};
pub use tls::{DEFAULT_HANDSHAKE_TIMEOUT, Tls, TlsError};
pub use turn::{IceConfig, IceConfigError, MAX_TURN_TTL, MIN_TURN_SECRET_BYTES, TurnSecret};
pub use webhook::{
    SIGNATURE_HEADER, SIGNATURE_TOLERANCE_SECS, SignatureError, WebhookConfig, WebhookConfigError,
    verify_signature,
};
