//! The STUN and TURN servers handed to peers, with TURN credentials in the TURN REST
//! form that coturn checks with `use-auth-secret`.
//!
//! A credential is `username = "<expiry unix seconds>:<opaque id>"` and
//! `credential = base64(HMAC-SHA1(secret, username))`; the TURN server recomputes it
//! from the shared secret and refuses it once the expiry has passed. The opaque id
//! stands for the user without naming them (the username crosses the network in the
//! clear): the first 12 bytes of HMAC-SHA256 of the user id, under a key derived from
//! the secret, in unpadded base64url. It is the same for a user until the secret
//! changes, so an operator who holds the secret can tell whose allocation a coturn log
//! line is about, and nobody else can.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use octate_protocol::{IceServer, UnixMillis, UserId};
use ring::hmac;

/// Shortest TURN secret accepted, in bytes.
pub const MIN_TURN_SECRET_BYTES: usize = 16;

/// Longest credential lifetime accepted: a leaked credential relays for at most this long.
pub const MAX_TURN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest URI accepted in the list.
const MAX_URI_LEN: usize = 512;

/// What the opaque-id key is derived with, so that it is not the signing key itself.
const ID_KEY_LABEL: &[u8] = b"octate turn user id";

/// How many bytes of the keyed hash make the opaque id (96 bits, 16 characters).
const ID_BYTES: usize = 12;

/// Why the STUN/TURN settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IceConfigError {
    /// An entry of the URI list is not a `stun:`, `turn:` or `turns:` URI.
    #[error("{uri:?} is not a STUN/TURN URI: {reason}")]
    BadUri {
        /// The entry as given (cut to a readable length).
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `turn:`/`turns:` URI is listed but there is no secret to sign credentials with.
    #[error(
        "{uri:?} needs a TURN secret: a TURN server without credentials refuses every allocation"
    )]
    TurnWithoutSecret {
        /// The first TURN URI.
        uri: String,
    },
    /// A secret is set but no `turn:`/`turns:` URI would use its credentials.
    #[error("a TURN secret is set but no turn: or turns: URI is listed")]
    SecretWithoutTurn,
    /// The secret is shorter than [`MIN_TURN_SECRET_BYTES`].
    #[error("the TURN secret must be at least {MIN_TURN_SECRET_BYTES} bytes, not {len}")]
    SecretTooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// The lifetime is zero or longer than [`MAX_TURN_TTL`].
    #[error("the TURN credential lifetime must be between 1 and {} seconds, not {secs}", MAX_TURN_TTL.as_secs())]
    BadTtl {
        /// The lifetime given, in seconds.
        secs: u64,
    },
}

/// The kind of server a URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IceUriKind {
    /// `stun:` (RFC 7064): no credentials.
    Stun,
    /// `turn:` or `turns:` (RFC 7065): needs credentials.
    Turn,
}

/// Checks one `stun:`, `turn:` or `turns:` URI (RFC 7064, RFC 7065) and says which it is.
pub(crate) fn parse_ice_uri(uri: &str) -> Result<IceUriKind, IceConfigError> {
    let bad = |reason| IceConfigError::BadUri {
        uri: uri.chars().take(80).collect(),
        reason,
    };
    if uri.len() > MAX_URI_LEN {
        return Err(bad("longer than 512 bytes"));
    }
    let (kind, rest) = if let Some(rest) = uri.strip_prefix("stun:") {
        (IceUriKind::Stun, rest)
    } else if let Some(rest) = uri
        .strip_prefix("turn:")
        .or_else(|| uri.strip_prefix("turns:"))
    {
        (IceUriKind::Turn, rest)
    } else {
        return Err(bad("the scheme must be stun:, turn: or turns:"));
    };
    if rest.starts_with("//") {
        return Err(bad("no // after the scheme: write turn:host:port"));
    }
    if rest.contains('@') {
        return Err(bad("credentials do not belong in the URI"));
    }
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    if let Some(query) = query {
        if kind == IceUriKind::Stun {
            return Err(bad("a stun: URI takes no query"));
        }
        if query != "transport=udp" && query != "transport=tcp" {
            return Err(bad("the only query is ?transport=udp or ?transport=tcp"));
        }
    }
    let (host, port) = split_host_port(authority).map_err(bad)?;
    check_host(host).map_err(bad)?;
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
    }
    Ok(kind)
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 address.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address needs its closing ]")?;
        inside
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| "the address in [] is not IPv6")?;
        return match after {
            "" => Ok((authority, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((authority, Some(port))),
                None => Err("only :port may follow an IPv6 address"),
            },
        };
    }
    Ok(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// Checks a host name or IPv4 address (a bracketed IPv6 one was checked already).
fn check_host(host: &str) -> Result<(), &'static str> {
    if host.starts_with('[') {
        return Ok(());
    }
    if host.is_empty() {
        return Err("the host is missing");
    }
    if host.len() > 253 {
        return Err("the host name is longer than 253 bytes");
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated part of the host must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("the host may hold only letters, digits, - and .");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a part of the host may not start or end with -");
        }
    }
    Ok(())
}

/// The shared secret TURN credentials are signed with.
#[derive(Clone)]
pub struct TurnSecret {
    /// HMAC-SHA1 under the secret: what coturn recomputes.
    signing: hmac::Key,
    /// HMAC-SHA256 under a key derived from the secret: the opaque ids.
    ids: hmac::Key,
}

impl TurnSecret {
    /// Keeps `secret`, which must be at least [`MIN_TURN_SECRET_BYTES`] long.
    pub fn new(secret: &[u8]) -> Result<Self, IceConfigError> {
        if secret.len() < MIN_TURN_SECRET_BYTES {
            return Err(IceConfigError::SecretTooShort { len: secret.len() });
        }
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), ID_KEY_LABEL);
        Ok(Self {
            signing: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret),
            ids: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        })
    }

    /// The TURN password for `username`: base64 of HMAC-SHA1(secret, username).
    pub fn credential(&self, username: &str) -> String {
        STANDARD.encode(hmac::sign(&self.signing, username.as_bytes()))
    }

    /// The id that stands for `user` in TURN usernames.
    pub fn opaque_id(&self, user: &UserId) -> String {
        let tag = hmac::sign(&self.ids, user.as_str().as_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..ID_BYTES])
    }

    /// A TURN username for `user` that expires at `expires_at` (Unix seconds).
    pub fn username(&self, user: &UserId, expires_at: u64) -> String {
        format!("{expires_at}:{}", self.opaque_id(user))
    }
}

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(..)")
    }
}

/// The STUN and TURN servers a server hands to its peers.
#[derive(Clone, Debug)]
pub struct IceConfig {
    turn_uris: Vec<String>,
    stun_uris: Vec<String>,
    secret: Option<TurnSecret>,
    ttl: Duration,
}

impl IceConfig {
    /// Checks the URIs (every one; a `turn:`/`turns:` one needs `secret`, and `secret`
    /// needs one) and the credential lifetime `ttl`.
    pub fn new<'a>(
        uris: impl IntoIterator<Item = &'a str>,
        secret: Option<TurnSecret>,
        ttl: Duration,
    ) -> Result<Self, IceConfigError> {
        let mut turn_uris = Vec::new();
        let mut stun_uris = Vec::new();
        for uri in uris {
            match parse_ice_uri(uri)? {
                IceUriKind::Turn => turn_uris.push(uri.to_owned()),
                IceUriKind::Stun => stun_uris.push(uri.to_owned()),
            }
        }
        match (turn_uris.first(), &secret) {
            (Some(uri), None) => {
                return Err(IceConfigError::TurnWithoutSecret { uri: uri.clone() });
            }
            (None, Some(_)) => return Err(IceConfigError::SecretWithoutTurn),
            _ => {}
        }
        if ttl.is_zero() || ttl > MAX_TURN_TTL {
            return Err(IceConfigError::BadTtl {
                secs: ttl.as_secs(),
            });
        }
        Ok(Self {
            turn_uris,
            stun_uris,
            secret,
            ttl,
        })
    }

    /// Whether TURN credentials are handed out (there is a secret and a TURN URI).
    pub fn issues_credentials(&self) -> bool {
        self.secret.is_some()
    }

    /// How long a TURN credential stays valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The ICE servers for `user` at wall time `now`: TURN with a fresh credential, then STUN.
    pub fn ice_servers(&self, user: &UserId, now: UnixMillis) -> Vec<IceServer> {
        let mut servers = Vec::with_capacity(2);
        if let Some(secret) = &self.secret {
            let expires_at = (now / 1000).saturating_add(self.ttl.as_secs());
            let username = secret.username(user, expires_at);
            servers.push(IceServer {
                urls: self.turn_uris.clone(),
                credential: Some(secret.credential(&username)),
                username: Some(username),
            });
        }
        if !self.stun_uris.is_empty() {
            servers.push(IceServer {
                urls: self.stun_uris.clone(),
                username: None,
                credential: None,
            });
        }
        servers
    }
}

#[cfg(test)]
mod tests;
