//! Signed room tokens for Octate.
//!
//! A token says "user U may join room R until time T". It is a compact,
//! URL-safe string: the base64url (no padding) JSON [`Claims`], a dot, and the
//! base64url HMAC-SHA256 of the first segment's ASCII, computed with a key
//! from a [`KeyRing`]. The [`TokenAuthority`] issues and verifies tokens, and
//! keeps a bounded [`RevocationList`].
//!
//! The crate does no I/O and never reads a clock: every operation that
//! depends on time takes `now_ms`, milliseconds since the Unix epoch, from
//! the caller. The only outside resource is the operating system's random
//! number generator, used for token ids and generated keys.
//!
//! ```
//! use octate_auth::{AuthError, KeyRing, TokenAuthority};
//!
//! let keys = KeyRing::new("k1", b"a secret of at least thirty-two bytes")?;
//! let authority = TokenAuthority::new(keys);
//! let now_ms = 1_700_000_000_000;
//! let (token, claims) = authority.issue("alice", "room-1", None, now_ms)?;
//! assert_eq!(authority.verify_for(&token, "alice", "room-1", now_ms + 1)?, claims);
//! assert_eq!(authority.verify_for(&token, "bob", "room-1", now_ms), Err(AuthError::WrongUser));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod authority;
mod claims;
mod error;
mod keys;
mod revocation;

pub use authority::TokenAuthority;
pub use claims::{Claims, MAX_TOKEN_LEN, TOKEN_VERSION};
pub use error::{AuthError, KeyError};
pub use keys::{KeyRing, MAX_KEY_ID_LEN, MIN_SECRET_LEN};
pub use revocation::{DEFAULT_REVOCATION_CAPACITY, RevocationList};
