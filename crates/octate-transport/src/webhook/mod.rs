//! Signed webhooks: room and peer lifecycle events POSTed to the operator's URLs.
//!
//! Events come from the core ([`octate_core::Output::Lifecycle`]), are encoded once and
//! queued without blocking; a background task delivers them, signed, with retries
//! (see `docs/webhooks.md`).

mod backoff;
mod config;
mod event;
mod queue;
mod sender;
mod signature;

pub use config::{WebhookConfig, WebhookConfigError};
pub(crate) use sender::{Webhooks, run};
pub use signature::{SIGNATURE_HEADER, SIGNATURE_TOLERANCE_SECS, SignatureError, verify_signature};
