//! The token behind each open session, so that revocation and expiry reach sessions.
//!
//! A session holds the token it authenticated (or last refreshed) with in an index of
//! token id (the revocation key) and expiry per connection. Revoking a token ends every
//! session the index has under its id. When expiry closes sessions
//! ([`SessionExpiry::Close`]), one sweeper task per server sleeps until the earliest
//! expiry (at most a second, so a stepped wall clock is noticed) and ends the sessions
//! whose token has expired: one timer for all sessions, however many there are.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use octate_auth::Claims;
use octate_core::{ConnId, Identity, TokenRef};
use octate_protocol::{ErrorCode, RoomId, ServerMessage, UnixMillis, UserId};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tracing::info;

use crate::SessionExpiry;
use crate::app::App;
use crate::audit::{self, Endpoint};
use crate::auth::auth_error_code;
use crate::registry::Outbound;

/// Longest the sweeper sleeps while it tracks sessions.
const SWEEP_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// Why a token does not let a session in (or on): the wire code and a message.
pub(crate) type Refusal = (ErrorCode, String);

/// Open sessions by the token they run on, and by when that token expires.
#[derive(Debug, Default)]
pub(crate) struct SessionTokens {
    index: Mutex<Index>,
    /// Wakes the sweeper when a session brings an expiry earlier than all others.
    wake: Notify,
    /// Whether the sweeper task has been started.
    sweeping: AtomicBool,
}

#[derive(Debug, Default)]
struct Index {
    by_conn: HashMap<ConnId, Held>,
    /// `(token id, connection)`: the sessions of a token are one range.
    by_token: BTreeSet<(Arc<str>, ConnId)>,
    /// `(expiry, connection)` of the sessions expiry closes.
    deadlines: BTreeSet<(UnixMillis, ConnId)>,
}

/// The token one session runs on.
#[derive(Debug)]
struct Held {
    token_id: Arc<str>,
    expires_at: UnixMillis,
}

impl Index {
    fn remove(&mut self, conn: ConnId) {
        if let Some(held) = self.by_conn.remove(&conn) {
            self.by_token.remove(&(held.token_id, conn));
            self.deadlines.remove(&(held.expires_at, conn));
        }
    }
}

impl SessionTokens {
    /// Records that `conn` runs on the token of `claims`, in place of any earlier one.
    ///
    /// With `deadline`, the session is also ended when the token expires.
    fn hold(&self, conn: ConnId, token_id: &str, expires_at: UnixMillis, deadline: bool) {
        let mut index = self.index.lock();
        index.remove(conn);
        let token_id: Arc<str> = Arc::from(token_id);
        index.by_token.insert((token_id.clone(), conn));
        index.by_conn.insert(
            conn,
            Held {
                token_id,
                expires_at,
            },
        );
        if deadline {
            let earliest = index
                .deadlines
                .first()
                .is_none_or(|&(first, _)| expires_at < first);
            index.deadlines.insert((expires_at, conn));
            drop(index);
            if earliest {
                self.wake.notify_one();
            }
        }
    }

    /// Forgets `conn` (its session ended).
    fn release(&self, conn: ConnId) {
        self.index.lock().remove(conn);
    }

    /// Removes and returns the sessions that run on the token `token_id`.
    pub(crate) fn take_token(&self, token_id: &str) -> Vec<ConnId> {
        let key: Arc<str> = Arc::from(token_id);
        let mut index = self.index.lock();
        let conns: Vec<ConnId> = index
            .by_token
            .range((key.clone(), ConnId(0))..=(key, ConnId(u64::MAX)))
            .map(|&(_, conn)| conn)
            .collect();
        for &conn in &conns {
            index.remove(conn);
        }
        conns
    }

    /// Removes and returns the sessions with a deadline whose token has expired at `now`.
    fn take_expired(&self, now: UnixMillis) -> Vec<ConnId> {
        let mut index = self.index.lock();
        let mut expired = Vec::new();
        while let Some(&(at, conn)) = index.deadlines.first()
            && at <= now
        {
            index.remove(conn);
            expired.push(conn);
        }
        expired
    }

    /// The earliest deadline, if any session has one.
    fn next_deadline(&self) -> Option<UnixMillis> {
        self.index.lock().deadlines.first().map(|&(at, _)| at)
    }

    /// Sessions in the index.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.index.lock().by_conn.len()
    }
}

/// A session's place in the index; the session keeps it and dropping it releases it.
#[derive(Debug)]
pub(crate) struct TokenLease {
    tokens: Arc<SessionTokens>,
    conn: ConnId,
}

impl Drop for TokenLease {
    fn drop(&mut self) {
        self.tokens.release(self.conn);
    }
}

/// Verifies `token` against the wall clock and turns its claims into an identity.
pub(crate) fn verify(app: &App, token: &str) -> Result<(Identity, Claims), Refusal> {
    let now = app.clock.wall_ms();
    let claims = app
        .auth
        .read()
        .verify(token, now)
        .map_err(|e| (auth_error_code(&e), e.to_string()))?;
    let user_id = UserId::new(claims.user_id.as_str()).map_err(|_| {
        (
            ErrorCode::TokenMalformed,
            "token user id is invalid".to_owned(),
        )
    })?;
    let room_id = RoomId::new(claims.room_id.as_str()).map_err(|_| {
        (
            ErrorCode::TokenMalformed,
            "token room id is invalid".to_owned(),
        )
    })?;
    Ok((Identity { user_id, room_id }, claims))
}

/// Refuses a token whose identity contradicts the room or user the client named.
fn check_expected(
    identity: &Identity,
    room_id: Option<&RoomId>,
    user_id: Option<&UserId>,
) -> Result<(), Refusal> {
    if let Some(room) = room_id
        && *room != identity.room_id
    {
        let message = format!("token is for room {}, not {room}", identity.room_id);
        return Err((ErrorCode::Forbidden, message));
    }
    if let Some(user) = user_id
        && *user != identity.user_id
    {
        let message = format!("token is for user {}, not {user}", identity.user_id);
        return Err((ErrorCode::Forbidden, message));
    }
    Ok(())
}

/// Records the token a session runs on, and starts the sweeper when expiry closes sessions.
fn hold_token(app: &Arc<App>, conn: ConnId, claims: &Claims) -> Result<(), Refusal> {
    hold_token_id(app, conn, &claims.token_id, claims.expires_at)
}

/// Records the token, by id and expiry, a session runs on; refused when it is revoked.
fn hold_token_id(
    app: &Arc<App>,
    conn: ConnId,
    token_id: &str,
    expires_at: UnixMillis,
) -> Result<(), Refusal> {
    let deadline = app.config.session_expiry == SessionExpiry::Close;
    if deadline && !app.tokens.sweeping.swap(true, Ordering::AcqRel) {
        tokio::spawn(sweep(
            app.tokens.clone(),
            Arc::downgrade(app),
            app.stop.subscribe(),
        ));
    }
    app.tokens.hold(conn, token_id, expires_at, deadline);
    // A revocation between the check and the hold found no session to end.
    if app.auth.read().revocations().is_revoked(token_id) {
        app.tokens.release(conn);
        return Err((ErrorCode::TokenRevoked, "token was revoked".to_owned()));
    }
    Ok(())
}

/// Authenticates a session: verifies the token, checks it against the ids the client
/// named in its `auth` envelope, and holds it for revocation and expiry.
pub(crate) fn authenticate(
    app: &Arc<App>,
    conn: ConnId,
    token: &str,
    room_id: Option<&RoomId>,
    user_id: Option<&UserId>,
) -> Result<(Identity, TokenLease, TokenRef), Refusal> {
    let (identity, claims) = verify(app, token)?;
    check_expected(&identity, room_id, user_id)?;
    hold_token(app, conn, &claims)?;
    let lease = TokenLease {
        tokens: app.tokens.clone(),
        conn,
    };
    Ok((identity, lease, token_ref(&claims)))
}

/// What the core keeps of a token for the session it opens.
fn token_ref(claims: &Claims) -> TokenRef {
    TokenRef {
        token_id: Some(claims.token_id.clone()),
        expires_at: Some(claims.expires_at),
    }
}

/// Holds a resumed session to the token that opened it: refused when that token has
/// been revoked since, or has expired when expiry closes sessions.
pub(crate) fn adopt(app: &Arc<App>, conn: ConnId, token: &TokenRef) -> Result<TokenLease, Refusal> {
    let lease = TokenLease {
        tokens: app.tokens.clone(),
        conn,
    };
    let Some(token_id) = &token.token_id else {
        return Ok(lease);
    };
    check_resumable(app, token)?;
    let expires_at = token.expires_at.unwrap_or(UnixMillis::MAX);
    hold_token_id(app, conn, token_id, expires_at)?;
    Ok(lease)
}

/// Whether a session may still run on the token that opened it: not when that token has
/// been revoked since, or has expired when expiry closes sessions.
pub(crate) fn check_resumable(app: &App, token: &TokenRef) -> Result<(), Refusal> {
    let Some(token_id) = &token.token_id else {
        return Ok(());
    };
    let expires_at = token.expires_at.unwrap_or(UnixMillis::MAX);
    if app.config.session_expiry == SessionExpiry::Close && expires_at <= app.clock.wall_ms() {
        return Err((ErrorCode::TokenExpired, "token expired".to_owned()));
    }
    if app.auth.read().revocations().is_revoked(token_id) {
        return Err((ErrorCode::TokenRevoked, "token was revoked".to_owned()));
    }
    Ok(())
}

/// Answers `refresh`: a valid token for the same user and room replaces the session's
/// token and is answered with `token-refreshed`; anything else is an error and
/// changes nothing. Returns whether the session goes on. A refusal is audited as from `ip`.
pub(crate) fn refresh(
    app: &Arc<App>,
    conn: ConnId,
    ip: IpAddr,
    identity: &Identity,
    token: &str,
) -> bool {
    let checked = verify(app, token).and_then(|(new, claims)| {
        check_expected(&new, Some(&identity.room_id), Some(&identity.user_id))?;
        Ok(claims)
    });
    let claims = match checked {
        Ok(claims) => claims,
        Err((code, message)) => {
            audit::token_rejected(ip, Endpoint::Refresh, code, Some(conn));
            app.send_error(conn, code, message);
            return true;
        }
    };
    if let Err((code, message)) = hold_token(app, conn, &claims) {
        // The session's token is now one that has been revoked.
        audit::token_rejected(ip, Endpoint::Refresh, code, Some(conn));
        app.end_sessions(&[conn], code, &message);
        return false;
    }
    let token = token_ref(&claims);
    app.drive(|core, _| core.handle_token_refreshed(conn, token));
    let msg = ServerMessage::TokenRefreshed {
        expires_at: claims.expires_at,
    };
    app.push(conn, Outbound::Text(Bytes::from(msg.encode())));
    true
}

/// Ends sessions whose token expires, at expiry, until shutdown.
async fn sweep(tokens: Arc<SessionTokens>, app: Weak<App>, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = {
            let Some(app) = app.upgrade() else { return };
            let now = app.clock.wall_ms();
            let expired = tokens.take_expired(now);
            if !expired.is_empty() {
                info!(
                    sessions = expired.len(),
                    "expired tokens end their sessions"
                );
                app.end_sessions(&expired, ErrorCode::TokenExpired, "token expired");
            }
            tokens
                .next_deadline()
                .map(|at| Duration::from_millis(at.saturating_sub(now)).min(SWEEP_AT_LEAST_EVERY))
        };
        let sleep = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokens.wake.notified() => {}
            () = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests;
