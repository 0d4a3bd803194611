//! Building responses: JSON bodies, the JSON error body, and the usual refusals.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use octate_protocol::ErrorCode;
use octate_protocol::http::HttpError;
use serde::Serialize;

use super::body::Body;
use crate::access::Refusal;

/// A JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(_) => {
            let mut resp = Response::new(Body::from(
                r#"{"error":{"code":"internal","message":"serialization failed"}}"#,
            ));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
    }
}

/// A JSON error response `{ "error": { "code", "message" } }`.
pub(crate) fn error(
    status: StatusCode,
    code: ErrorCode,
    message: impl Into<String>,
) -> Response<Body> {
    json(status, &HttpError::new(code, message))
}

/// `404 not-found` for a path that is no route.
pub(super) fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}

/// `405 method-not-allowed` with the `Allow` header listing the methods that are.
pub(super) fn method_not_allowed(allow: &'static str, message: &str) -> Response<Body> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        message,
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// `403 forbidden` for an `Origin` that is not allowed, or not an origin at all.
pub(super) fn origin_refused(message: &str) -> Response<Body> {
    error(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
}

/// `403 forbidden` for a client whose address a list refuses.
pub(super) fn address_refused(refusal: Refusal) -> Response<Body> {
    let message = match refusal {
        Refusal::NotAdmin => "the admin endpoints are not open to your address",
        Refusal::Denied | Refusal::NotAllowed => "this server is not open to your address",
    };
    error(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
}
