//! The audit trail: security events, one structured record each, on the tracing target
//! [`AUDIT_TARGET`], for a SIEM to ingest.
//!
//! Every event has one function here, and every field name is written here only, in
//! the style of the Elastic Common Schema: `event.action`, `event.outcome` (`success` or
//! `failure`), `event.reason`, `user.id`, `source.ip`, plus `octate.room_id`,
//! `octate.token_id`, `octate.conn_id` and `octate.endpoint`. A record names a token by
//! its id (`jti`) only: it never carries a token, a resume token or the admin key.
//! Records about failures carry only what the server verified, never an identity a
//! client merely claimed.
//!
//! None of these functions runs on the relay path: they run at most once per HTTP
//! request, connection attempt, login or session end.

use std::net::IpAddr;

use hyper::Method;
use octate_core::{ConnId, Identity, ResumeRefusal};
use octate_protocol::{ErrorCode, RoomCloseReason, RoomId, UserId};
use tracing::info;

/// The tracing target of every audit record.
pub const AUDIT_TARGET: &str = "octate::audit";

/// `event.outcome` of an action that was carried out.
const SUCCESS: &str = "success";
/// `event.outcome` of an action that was refused.
const FAILURE: &str = "failure";

/// Where a token (or a resume token) was presented and refused: `octate.endpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// The `auth` message on a WebSocket.
    WebSocketAuth,
    /// The `refresh` message of an open session.
    Refresh,
    /// The `resume` message on a new WebSocket.
    Resume,
    /// `POST /api/auth/validate`.
    Validate,
    /// `POST /api/turn/credentials`.
    TurnCredentials,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Self::WebSocketAuth => "ws-auth",
            Self::Refresh => "ws-refresh",
            Self::Resume => "ws-resume",
            Self::Validate => "/api/auth/validate",
            Self::TurnCredentials => "/api/turn/credentials",
        }
    }
}

/// Why an admin route was refused: `event.reason` of `admin-auth-failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminRefusal {
    /// No `Authorization: Bearer` header.
    MissingKey,
    /// A key that is not the admin key.
    WrongKey,
}

impl AdminRefusal {
    fn as_str(self) -> &'static str {
        match self {
            Self::MissingKey => "missing-admin-key",
            Self::WrongKey => "wrong-admin-key",
        }
    }
}

/// Which limit refused a connection: `event.reason` of `connection-refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionLimit {
    /// `OCTATE_MAX_CONNECTIONS` WebSockets are open.
    MaxConnections,
    /// `OCTATE_MAX_CONNECTIONS_PER_IP` WebSockets are open from the address.
    PerAddress,
    /// Every socket the server keeps (WebSockets plus HTTP headroom) is taken.
    ServerFull,
    /// The process is out of file descriptors.
    OutOfDescriptors,
    /// An address list refused the address: `deny`, `allow` or `admin`.
    AddressList(&'static str),
}

impl ConnectionLimit {
    fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "max-connections",
            Self::PerAddress => "max-connections-per-ip",
            Self::ServerFull => "server-full",
            Self::OutOfDescriptors => "out-of-descriptors",
            Self::AddressList("deny") => "deny-list",
            Self::AddressList("admin") => "admin-allow-list",
            Self::AddressList(_) => "allow-list",
        }
    }
}

/// The wire name of a resume refusal, as `event.reason`.
fn resume_reason(refusal: ResumeRefusal) -> &'static str {
    match refusal {
        ResumeRefusal::Disabled => "resume-disabled",
        ResumeRefusal::UnknownSession => "unknown-session",
        ResumeRefusal::WrongToken => "wrong-resume-token",
    }
}

/// The wire name of a room close reason, as `event.reason`.
fn close_reason(reason: RoomCloseReason) -> &'static str {
    match reason {
        RoomCloseReason::Deleted => "deleted",
        RoomCloseReason::Inactive => "inactive",
        RoomCloseReason::MemoryPressure => "memory-pressure",
        RoomCloseReason::Empty => "empty",
        RoomCloseReason::Shutdown => "shutdown",
        _ => "other",
    }
}

/// `token-issued`: `POST /api/auth/token` signed a token.
pub(crate) fn token_issued(ip: IpAddr, user_id: &str, room_id: &str, token_id: &str) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "token-issued",
            event.outcome = SUCCESS,
            source.ip = %ip,
            user.id = user_id,
            octate.room_id = room_id,
            octate.token_id = token_id,
        },
        "token issued"
    );
}

/// `token-rejected`: a token was refused where it was presented, for `reason`.
pub(crate) fn token_rejected(
    ip: IpAddr,
    endpoint: Endpoint,
    reason: ErrorCode,
    conn: Option<ConnId>,
) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "token-rejected",
            event.outcome = FAILURE,
            event.reason = reason.as_str(),
            source.ip = %ip,
            octate.endpoint = endpoint.as_str(),
            octate.conn_id = conn.map(tracing::field::display),
        },
        "token rejected"
    );
}

/// `token-rejected` at `resume`: the session cannot be taken over, for `refusal`.
pub(crate) fn resume_rejected(ip: IpAddr, refusal: ResumeRefusal, conn: ConnId) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "token-rejected",
            event.outcome = FAILURE,
            event.reason = resume_reason(refusal),
            source.ip = %ip,
            octate.endpoint = Endpoint::Resume.as_str(),
            octate.conn_id = %conn,
        },
        "resume token rejected"
    );
}

/// `token-revoked`: `POST /api/auth/revoke` revoked a token.
pub(crate) fn token_revoked(ip: IpAddr, user_id: &str, room_id: &str, token_id: &str) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "token-revoked",
            event.outcome = SUCCESS,
            source.ip = %ip,
            user.id = user_id,
            octate.room_id = room_id,
            octate.token_id = token_id,
        },
        "token revoked"
    );
}

/// `admin-auth-failed`: an admin route was called without the admin key.
pub(crate) fn admin_auth_failed(ip: IpAddr, method: &Method, path: &str, reason: AdminRefusal) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "admin-auth-failed",
            event.outcome = FAILURE,
            event.reason = reason.as_str(),
            source.ip = %ip,
            http.request.method = method.as_str(),
            url.path = path,
        },
        "admin authorization failed"
    );
}

/// `room-created`: `POST /api/rooms` created a room for its host.
pub(crate) fn room_created(ip: IpAddr, room_id: &RoomId, host_id: &UserId) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "room-created",
            event.outcome = SUCCESS,
            source.ip = %ip,
            user.id = host_id.as_str(),
            octate.room_id = room_id.as_str(),
        },
        "room created"
    );
}

/// `room-deleted`: `DELETE /api/rooms/:id` closed a room.
pub(crate) fn room_deleted(ip: IpAddr, room_id: &RoomId) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "room-deleted",
            event.outcome = SUCCESS,
            source.ip = %ip,
            octate.room_id = room_id.as_str(),
        },
        "room deleted"
    );
}

/// `peer-kicked`: `POST /api/rooms/:roomId/peers/:userId/kick` removed a peer.
pub(crate) fn peer_kicked(
    ip: IpAddr,
    room_id: &RoomId,
    user_id: &UserId,
    reason: Option<&str>,
    revoked_token_id: Option<&str>,
) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "peer-kicked",
            event.outcome = SUCCESS,
            event.reason = reason,
            source.ip = %ip,
            user.id = user_id.as_str(),
            octate.room_id = room_id.as_str(),
            octate.token_id = revoked_token_id,
        },
        "peer kicked"
    );
}

/// `room-closed`: the server closed a room by itself (inactivity, memory pressure).
pub(crate) fn room_closed(room_id: &RoomId, reason: RoomCloseReason) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "room-closed",
            event.outcome = SUCCESS,
            event.reason = close_reason(reason),
            octate.room_id = room_id.as_str(),
        },
        "room closed by the server"
    );
}

/// `connection-refused`: a connection from `ip` was refused by `limit`.
pub(crate) fn connection_refused(ip: IpAddr, limit: ConnectionLimit) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "connection-refused",
            event.outcome = FAILURE,
            event.reason = limit.as_str(),
            source.ip = %ip,
        },
        "connection refused"
    );
}

/// `connection-rate-limited`: a connection that kept flooding was closed (4029).
pub(crate) fn rate_limit_closed(ip: IpAddr, conn: ConnId, identity: Option<&Identity>) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "connection-rate-limited",
            event.outcome = FAILURE,
            event.reason = "rate-limited",
            source.ip = %ip,
            user.id = identity.map(|i| i.user_id.as_str()),
            octate.room_id = identity.map(|i| i.room_id.as_str()),
            octate.conn_id = %conn,
        },
        "flooding connection closed"
    );
}

/// `peer-replaced`: a newer connection of the same user took the session's place (4004).
pub(crate) fn peer_replaced(ip: IpAddr, conn: ConnId, identity: &Identity) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "peer-replaced",
            event.outcome = SUCCESS,
            source.ip = %ip,
            user.id = identity.user_id.as_str(),
            octate.room_id = identity.room_id.as_str(),
            octate.conn_id = %conn,
        },
        "peer replaced by a newer connection"
    );
}

/// `session-resumed`: a new connection took over a suspended session with `resume`.
pub(crate) fn session_resumed(
    ip: IpAddr,
    conn: ConnId,
    identity: &Identity,
    token_id: Option<&str>,
) {
    info!(
        target: AUDIT_TARGET,
        {
            event.action = "session-resumed",
            event.outcome = SUCCESS,
            source.ip = %ip,
            user.id = identity.user_id.as_str(),
            octate.room_id = identity.room_id.as_str(),
            octate.token_id = token_id,
            octate.conn_id = %conn,
        },
        "session resumed"
    );
}

#[cfg(test)]
mod tests;
