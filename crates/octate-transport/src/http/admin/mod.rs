//! The admin dashboard: its page, script and style sheet at `/admin`, and the stats
//! stream the page reads (`GET /api/admin/stream`, server-sent events, one JSON event a
//! second, made in [`mod@stream`]). Both exist only when an admin key is configured; the
//! files are built into the binary and served with a Content-Security-Policy that allows
//! no inline script.

mod stream;

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use octate_protocol::ErrorCode;

use self::stream::{EventStream, MAX_STREAMS};
use super::body::Body;
use super::request::require_admin;
use super::response::{address_refused, error, not_found};
use crate::app::App;

/// The dashboard's page.
const PAGE: &str = include_str!("../../../admin/index.html");
/// The dashboard's script.
const SCRIPT: &str = include_str!("../../../admin/app.js");
/// The dashboard's style sheet.
const STYLE: &str = include_str!("../../../admin/style.css");
/// The dashboard's icon.
const ICON: &str = include_str!("../../../admin/icon.svg");

/// What the dashboard's files may load: their own script, style and API, nothing inline,
/// nothing from elsewhere, and no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// `GET /admin` (`name` is `None`) and its files `app.js`, `style.css` and `icon.svg`:
/// 404 unless an admin key is configured, and refused outside the admin allow list.
pub(super) fn asset(app: &App, name: Option<&str>, ip: IpAddr) -> Response<Body> {
    if app.admin_key.is_none() {
        return not_found();
    }
    if let Err(refusal) = app.config.access.admit_admin(ip) {
        crate::access::refused(app, ip, refusal);
        return address_refused(refusal);
    }
    let (text, content_type) = match name {
        None => (PAGE, "text/html; charset=utf-8"),
        Some("app.js") => (SCRIPT, "text/javascript; charset=utf-8"),
        Some("style.css") => (STYLE, "text/css; charset=utf-8"),
        Some("icon.svg") => (ICON, "image/svg+xml"),
        Some(_) => return not_found(),
    };
    let mut resp = Response::new(Body::from(text));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    not_stored(headers);
    resp
}

/// `GET /api/admin/stream`: 404 unless an admin key is configured; with the key, a
/// `text/event-stream` of one event of figures a second until the client goes or the
/// server shuts down; 503 when [`MAX_STREAMS`] are open already.
pub(super) fn stream(app: &Arc<App>, req: &Request<Incoming>, ip: IpAddr) -> Response<Body> {
    if app.admin_key.is_none() {
        return not_found();
    }
    if let Err(resp) = require_admin(app, req, ip) {
        return resp;
    }
    if app.stopping() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the server is shutting down",
        );
    }
    let Some(events) = EventStream::open(app.clone()) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyConnections,
            format!("{MAX_STREAMS} stats streams are open already"),
        );
    };
    let mut resp = Response::new(Body::streamed(events));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // Proxies that buffer responses would hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    not_stored(headers);
    resp
}

/// Marks a response as never to be cached, nor its type guessed.
fn not_stored(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}
