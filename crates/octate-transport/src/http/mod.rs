//! The HTTP side of the server: each request goes to a CORS preflight, a WebSocket
//! upgrade or the API (with static files behind it), and its answer gets CORS headers.
//!
//! - [`api`]: the routing table; [`reports`], [`tokens`], [`rooms`], [`server_api`],
//!   [`turn`]: the handlers.
//! - [`upgrade`]: WebSocket admission (native, and `y-webrtc` at `/y-webrtc` with its
//!   token checked first) and hand-over to a session.
//! - [`cors`]: origins, preflights and `Access-Control-Allow-Origin`.
//! - [`request`] and [`response`]: reading bodies and the admin key; building answers.
//! - [`body`]: the response body type; [`static_files`]: the demo's files.
//! - [`admin`]: the admin dashboard's page and its stats stream.

mod admin;
mod api;
mod body;
mod cors;
mod reports;
mod request;
mod response;
mod rooms;
mod server_api;
mod static_files;
mod tokens;
mod turn;
mod upgrade;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

pub(crate) use body::Body;

use crate::app::App;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The HTTP port: the API, plus WebSocket upgrades at `/ws` and `/y-webrtc`.
    Http,
    /// The signaling port: WebSocket upgrades on any path, and the API.
    Signaling,
}

/// Serves one request from `peer`; never fails (errors become JSON error responses).
///
/// Behind a trusted proxy the client is the one `X-Forwarded-For` names, and the
/// address lists are checked here, per request (other peers were checked at accept).
pub(crate) async fn route(
    req: Request<Incoming>,
    app: Arc<App>,
    listener: Listener,
    peer: IpAddr,
) -> Result<Response<Body>, Infallible> {
    app.metrics.http_requests.inc();
    let access = &app.config.access;
    let client = access.client_address(peer, req.headers());
    if access.trusts(peer)
        && let Err(refusal) = access.admit(client)
    {
        crate::access::refused(&app, client, refusal);
        return Ok(response::address_refused(refusal));
    }
    let Ok(origin) = cors::request_origin(req.headers()) else {
        return Ok(response::origin_refused(
            "the Origin header is not an origin",
        ));
    };
    let mut resp = if req.method() == Method::OPTIONS {
        cors::preflight(
            &app,
            origin.as_deref(),
            api::allowed_methods(req.uri().path()),
        )
    } else if fastwebsockets::upgrade::is_upgrade_request(&req)
        && req.uri().path() == upgrade::YWEBRTC_PATH
    {
        upgrade::upgrade_ywebrtc(req, &app, origin.as_deref(), client)
    } else if fastwebsockets::upgrade::is_upgrade_request(&req)
        && (listener == Listener::Signaling || req.uri().path() == "/ws")
    {
        upgrade::upgrade(req, &app, origin.as_deref(), client)
    } else {
        api::handle(req, &app, client).await
    };
    if let Some(origin) = origin.as_deref() {
        cors::add_cors(&app, origin, &mut resp);
    }
    Ok(resp)
}
