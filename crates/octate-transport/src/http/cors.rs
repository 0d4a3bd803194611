//! Cross-origin rules: reading a request's `Origin`, answering preflights, and the
//! `Access-Control-Allow-Origin` header on responses to allowed origins.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::Body;
use super::response::origin_refused;
use crate::app::App;

/// The request's `Origin`, if it has one.
pub(super) fn request_origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned)
}

/// Answers `OPTIONS`: the CORS preflight for an allowed origin, 403 for another, and for
/// no origin at all the path's `Allow` list (`allow`, or every method for a non-route).
pub(super) fn preflight(
    app: &App,
    origin: Option<&str>,
    allow: Option<&'static str>,
) -> Response<Body> {
    match origin {
        Some(origin) if app.config.cors_origins.allows(origin) => {
            let mut resp = Response::new(Body::default());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            let h = resp.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type, authorization"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            resp
        }
        Some(_) => origin_refused("origin not allowed"),
        None => {
            let allow = allow.unwrap_or("GET, POST, DELETE, OPTIONS");
            let mut resp = Response::new(Body::default());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            resp
        }
    }
}

/// Adds `Access-Control-Allow-Origin` (and `Vary: Origin`) when `origin` is allowed.
pub(super) fn add_cors(app: &App, origin: &str, resp: &mut Response<Body>) {
    if !app.config.cors_origins.allows(origin) {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(origin) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}
