//! Octate's test kit: what the integration tests, the core's property tests and the fuzz
//! targets share, so that each helper exists once.
//!
//! - [`core_model`]: the invariants a [`octate_core::Core`] must keep after every step,
//!   checked by the property tests and the `core_sequence` fuzz target;
//! - [`tokens`]: minting tokens outside a server, with the test servers' secret or any other;
//! - with the `net` feature (on by default): [`server`] (a server in-process on loopback),
//!   [`binary`] (the real `octate-server` process), [`ws`] (a WebSocket client on a bare
//!   socket that sends any bytes at all), [`peers`] (bounded assertions on what a signaling
//!   client receives), [`attack`] (the control pair and recovery checks of the
//!   adversarial tests), [`redis`] (a private `redis-server`) and [`cluster`] (nodes of a
//!   test cluster on it, and the resume steps cluster tests share).
//!
//! Everything that waits is bounded in time and panics with what arrived instead.

#![allow(clippy::unwrap_used)]

pub mod core_model;
pub mod tokens;

#[cfg(feature = "net")]
pub mod attack;
#[cfg(feature = "net")]
pub mod binary;
#[cfg(feature = "net")]
pub mod cluster;
#[cfg(feature = "net")]
pub mod peers;
#[cfg(feature = "net")]
pub mod redis;
#[cfg(feature = "net")]
pub mod server;
#[cfg(feature = "net")]
pub mod ws;
