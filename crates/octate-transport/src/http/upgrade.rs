//! The WebSocket upgrade: admission (shutdown, origin, connection limits), the handshake
//! answered by fastwebsockets, and the hand-over of the socket (TCP or TLS) to a session.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use octate_protocol::ErrorCode;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::body::Body;
use super::response::{error, method_not_allowed, origin_refused};
use crate::app::App;
use crate::audit::{self, ConnectionLimit};
use crate::session;
use crate::stream::TlsSession;

/// Answers an upgrade request from `client`: `101` and a session task, or an error
/// response.
pub(super) fn upgrade(
    mut req: Request<Incoming>,
    app: &Arc<App>,
    origin: Option<&str>,
    client: IpAddr,
) -> Response<Body> {
    // RFC 6455 §4.1: "The method of the request MUST be GET".
    if req.method() != Method::GET {
        return method_not_allowed("GET", "a WebSocket upgrade must use GET");
    }
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
                        )
                        .await;
                    }
                    Err(upgraded) => upgraded,
                };
                match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
                    Ok(parts) => {
                        let stream = TlsSession::new(parts.io.into_inner());
                        session::run(stream, client, parts.read_buf, app, stop).await
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
