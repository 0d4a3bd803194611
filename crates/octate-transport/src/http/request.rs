//! Reading requests: the admin key check and JSON bodies under the size and time limits.

use std::net::IpAddr;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use octate_protocol::ErrorCode;
use serde::de::DeserializeOwned;

use super::body::Body;
use super::response::{address_refused, error};
use crate::app::App;
use crate::audit::{self, AdminRefusal};
use crate::auth::bearer_token;

/// Checks that `ip` is in the admin allow list (when there is one), then
/// `Authorization: Bearer <admin key>` when an admin key is configured; a refusal is
/// audited.
#[allow(clippy::result_large_err)]
pub(super) fn require_admin(
    app: &App,
    req: &Request<Incoming>,
    ip: IpAddr,
) -> Result<(), Response<Body>> {
    if let Err(refusal) = app.config.access.admit_admin(ip) {
        crate::access::refused(app, ip, refusal);
        return Err(address_refused(refusal));
    }
    let Some(key) = app.admin_key.as_ref() else {
        return Ok(());
    };
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(bearer_token)
    else {
        audit::admin_auth_failed(ip, req.method(), req.uri().path(), AdminRefusal::MissingKey);
        return Err(error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "admin key required",
        ));
    };
    if key.matches(given) {
        Ok(())
    } else {
        audit::admin_auth_failed(ip, req.method(), req.uri().path(), AdminRefusal::WrongKey);
        Err(error(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "wrong admin key",
        ))
    }
}

/// Reads a JSON body under the size limit into `T`.
#[allow(clippy::result_large_err)]
pub(super) async fn read_json<T: DeserializeOwned>(
    app: &App,
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ));
    }
    let limit = app.config.max_body_bytes;
    // The header timeout does not cover the body: a body that stalls would hold its
    // socket for ever, so it gets the same time to arrive.
    let collect = Limited::new(req.into_body(), limit).collect();
    let Ok(collected) = tokio::time::timeout(app.config.header_read_timeout, collect).await else {
        return Err(error(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Timeout,
            "request body did not arrive in time",
        ));
    };
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("body exceeds {limit} bytes"),
            ));
        }
        Err(_) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidJson,
                "body could not be read",
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|err| {
        use serde_json::error::Category;
        let code = match err.classify() {
            Category::Data if err.to_string().starts_with("missing field") => {
                ErrorCode::MissingField
            }
            Category::Data => ErrorCode::InvalidField,
            _ => ErrorCode::InvalidJson,
        };
        error(StatusCode::BAD_REQUEST, code, err.to_string())
    })
}
