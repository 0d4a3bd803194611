//! Octate's Rust signaling client.
//!
//! - HTTP: a token over HTTP ([`fetch_token`]), fresh TURN credentials
//!   ([`turn_credentials`]), and a minimal HTTP/1.1 exchange for the rest of the API;
//! - [`Client`]: one WebSocket connection: `auth` or `resume`, signals, server messages,
//!   heartbeats answered on the way, the newest resume ticket and ICE servers kept;
//! - [`Session`]: a session that outlives its connections: it reconnects with back-off,
//!   resumes, and falls back to a fresh `auth` when the server no longer knows it.
//!
//! It shares only the wire types with the server (`octate-protocol`); the WebSocket side
//! is `tokio-tungstenite`. The crate's README has a complete example.

#![forbid(unsafe_code)]

mod backoff;
mod connection;
mod error;
mod http;
mod session;
mod welcome;

pub use backoff::Backoff;
pub use connection::Client;
pub use error::ClientError;
pub use http::{HttpResponse, fetch_token, http_request, post_json, turn_credentials};
pub use session::{Session, SessionConfig, SessionEvent, TokenSource};
pub use welcome::Membership;

/// The README's example, compiled with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
