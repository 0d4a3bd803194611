//! Cross-origin rules: reading a request's `Origin`, answering preflights, and the
//! `Access-Control-Allow-Origin` header on responses to allowed origins.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::Body;
use super::response::origin_refused;
use crate::app::App;

/// An `Origin` header that is not one serialized origin: not ASCII, not of the form
/// `scheme://host[:port]` or `null`, or more than one header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InvalidOrigin;

/// The request's `Origin`: `None` when it has none, an error when it has one that is
/// not an origin (refused rather than taken as absent).
pub(super) fn request_origin(headers: &HeaderMap) -> Result<Option<String>, InvalidOrigin> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(InvalidOrigin);
    }
    let origin = value.to_str().map_err(|_| InvalidOrigin)?;
    if is_serialized_origin(origin) {
        Ok(Some(origin.to_owned()))
    } else {
        Err(InvalidOrigin)
    }
}

/// Whether `origin` is `null` or `scheme "://" host [ ":" port ]` (RFC 6454 §6.2), the
/// host in the characters RFC 3986 allows (IPv6 literals in brackets included).
fn is_serialized_origin(origin: &str) -> bool {
    if origin == "null" {
        return true;
    }
    let Some((scheme, host_port)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let host_ok = !host_port.is_empty()
        && host_port.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                )
        });
    scheme_ok && host_ok
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

#[cfg(test)]
mod tests {
    use super::*;

    fn origin_of(values: &[&[u8]]) -> Result<Option<String>, InvalidOrigin> {
        let mut headers = HeaderMap::new();
        for value in values {
            let value = HeaderValue::from_bytes(value).expect("a header value");
            headers.append(header::ORIGIN, value);
        }
        request_origin(&headers)
    }

    #[test]
    fn origins_are_read_or_refused() {
        assert_eq!(origin_of(&[]), Ok(None));
        for good in [
            "http://localhost:3000",
            "https://app.example.com",
            "https://[::1]:8443",
            "http://127.0.0.1",
            "chrome-extension://abcdef",
            "null",
        ] {
            assert_eq!(
                origin_of(&[good.as_bytes()]),
                Ok(Some(good.to_owned())),
                "{good}"
            );
        }
        let bad: [&[u8]; 9] = [
            b"\xff\xfe",
            b"http://caf\xc3\xa9.test",
            b"localhost:3000",
            b"http://",
            b"://host",
            b"1http://host",
            b"http://host/path",
            b"http://user@host",
            b"not an origin",
        ];
        for value in bad {
            assert_eq!(origin_of(&[value]), Err(InvalidOrigin), "{value:?}");
        }
        assert_eq!(
            origin_of(&[b"http://a.test", b"http://b.test"]),
            Err(InvalidOrigin)
        );
    }
}
