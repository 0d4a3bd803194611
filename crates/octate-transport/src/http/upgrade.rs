//! The WebSocket upgrade: admission (shutdown, origin, connection limits), the handshake
//! answered by fastwebsockets, and the hand-over of the socket (TCP or TLS) to a session.
//!
//! A native session authenticates with its first message; a `y-webrtc` one (at
//! [`YWEBRTC_PATH`]) with the token in its query string, checked before the `101`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use octate_core::Vacancy;
use octate_protocol::ErrorCode;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::body::Body;
use super::response::{error, method_not_allowed, origin_refused};
use crate::app::App;
use crate::audit::{self, ConnectionLimit};
use crate::session::{self, Opening};
use crate::stream::TlsSession;
use crate::tokens;

/// Where Yjs's `y-webrtc` provider connects, on both ports.
pub(super) const YWEBRTC_PATH: &str = "/y-webrtc";

/// Answers an upgrade request from `client`: `101` and a session task, or an error
/// response.
pub(super) fn upgrade(
    req: Request<Incoming>,
    app: &Arc<App>,
    origin: Option<&str>,
    client: IpAddr,
) -> Response<Body> {
    // RFC 6455 §4.1: "The method of the request MUST be GET".
    if req.method() != Method::GET {
        return method_not_allowed("GET", "a WebSocket upgrade must use GET");
    }
    admit(req, app, origin, client, Opening::Native)
}

/// Answers a `y-webrtc` upgrade: the token of its query string must be valid (and not
/// revoked) before anything else, so that a refused client sees an HTTP error and backs
/// off instead of reconnecting at once.
pub(super) fn upgrade_ywebrtc(
    req: Request<Incoming>,
    app: &Arc<App>,
    origin: Option<&str>,
    client: IpAddr,
) -> Response<Body> {
    if !app.config.ywebrtc {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "y-webrtc is turned off",
        );
    }
    if req.method() != Method::GET {
        return method_not_allowed("GET", "a WebSocket upgrade must use GET");
    }
    let Some(token) = req.uri().query().and_then(query_token) else {
        app.metrics.auth_failed(ErrorCode::Unauthorized);
        return unauthorized(ErrorCode::Unauthorized, "missing ?token= in the URL");
    };
    // Checked again when the session starts: a revocation in between ends it there.
    let identity = match tokens::verify(app, &token) {
        Ok((identity, _)) => identity,
        Err((code, message)) => {
            app.metrics.auth_failed(code);
            debug!(code = code.as_str(), "y-webrtc upgrade refused");
            return unauthorized(code, message);
        }
    };
    // Refusing here spares the client a socket that would open and close at once (and
    // two tabs of one user replacing each other in a loop); the core checks the room
    // again when the session joins.
    let now = app.clock.now_ms();
    match app.with_core(|core| core.vacancy(now, &identity.room_id, &identity.user_id)) {
        Vacancy::Open => {}
        Vacancy::Full => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RoomFull,
                "room is full",
            );
        }
        Vacancy::Taken => {
            return error(
                StatusCode::CONFLICT,
                ErrorCode::TooManyConnections,
                "this user is connected to this room already: each tab needs its own user id",
            );
        }
    }
    admit(req, app, origin, client, Opening::YWebrtc { token })
}

/// `401` with the token's error and `WWW-Authenticate: Bearer`.
fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Response<Body> {
    let mut resp = error(StatusCode::UNAUTHORIZED, code, message);
    resp.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// The value of the first `token` parameter of a query string, percent-decoded.
fn query_token(query: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    let token = percent_decode(raw)?;
    (!token.is_empty()).then_some(token)
}

/// Decodes `%XX` escapes and `+` (a space); `None` for a bad escape or non-UTF-8 result.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Admits an upgrade (shutdown, origin, connection limits), answers the handshake and
/// hands the socket to a session.
fn admit(
    mut req: Request<Incoming>,
    app: &Arc<App>,
    origin: Option<&str>,
    client: IpAddr,
    opening: Opening,
) -> Response<Body> {
    if app.stopping() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "shutting down",
        );
    }
    if let Some(origin) = origin
        && !app.config.cors_origins.allows(origin)
    {
        return origin_refused("origin not allowed");
    }
    let Some(slot) = ConnectionSlot::acquire(app) else {
        app.metrics.connections_refused.inc();
        audit::connection_refused(client, ConnectionLimit::MaxConnections);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyConnections,
            "connection limit reached",
        );
    };
    let Some(address) = AddressSlot::acquire(app, client) else {
        app.metrics.connections_refused.inc();
        audit::connection_refused(client, ConnectionLimit::PerAddress);
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyConnections,
            "too many connections from this address",
        );
    };
    // The session frames the upgraded TCP stream itself (see `session`), so the
    // upgrade is taken here and fastwebsockets only checks the handshake and answers it.
    let on_upgrade = hyper::upgrade::on(&mut req);
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((resp, _)) => {
            let app = app.clone();
            let stop = app.stop.subscribe();
            tokio::spawn(async move {
                let _slots = (slot, address);
                let upgraded = match on_upgrade.await {
                    Ok(upgraded) => upgraded,
                    Err(err) => return debug!(%err, "websocket upgrade failed"),
                };
                let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => {
                        return session::run(
                            parts.io.into_inner(),
                            client,
                            parts.read_buf,
                            app,
                            stop,
                            opening,
                        )
                        .await;
                    }
                    Err(upgraded) => upgraded,
                };
                match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
                    Ok(parts) => {
                        let stream = TlsSession::new(parts.io.into_inner());
                        session::run(stream, client, parts.read_buf, app, stop, opening).await
                    }
                    Err(_) => debug!("upgraded connection is neither TCP nor TLS"),
                }
            });
            resp.map(|_| Body::default())
        }
        Err(err) => error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidMessage,
            err.to_string(),
        ),
    }
}

/// One of the `max_connections` WebSocket slots, taken atomically before the 101 is
/// sent (so simultaneous upgrades cannot overshoot) and released when dropped.
struct ConnectionSlot(Arc<App>);

impl ConnectionSlot {
    fn acquire(app: &Arc<App>) -> Option<Self> {
        let max = app.config.max_connections;
        app.ws_slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(app.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.ws_slots.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One counted connection from an address, released when dropped.
struct AddressSlot {
    app: Arc<App>,
    ip: IpAddr,
}

impl AddressSlot {
    fn acquire(app: &Arc<App>, ip: IpAddr) -> Option<Self> {
        app.per_address
            .try_acquire(ip, app.config.max_connections_per_ip)
            .then(|| Self {
                app: app.clone(),
                ip,
            })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        self.app.per_address.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_query_string_as_browsers_encode_it() {
        assert_eq!(query_token("token=a.b-c_d"), Some("a.b-c_d".to_owned()));
        assert_eq!(
            query_token("x=1&token=a%2Eb%3d&y=2"),
            Some("a.b=".to_owned())
        );
        assert_eq!(query_token("token=a+b"), Some("a b".to_owned()));
        assert_eq!(query_token("mytoken=a"), None);
        assert_eq!(query_token("token="), None);
        assert_eq!(query_token("token=%"), None);
        assert_eq!(query_token("token=%zz"), None);
        assert_eq!(query_token("token=%ff"), None, "not UTF-8");
        assert_eq!(query_token(""), None);
    }
}
