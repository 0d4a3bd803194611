//! `POST /api/turn/credentials`: fresh STUN/TURN servers for the holder of a room token.

use std::net::IpAddr;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use octate_protocol::ErrorCode;
use octate_protocol::http::TurnCredentialsResponse;

use super::body::Body;
use super::response::{error, json};
use crate::app::App;
use crate::audit::{self, Endpoint};
use crate::auth::bearer_token;
use crate::tokens;

/// Answers with the ICE servers and a TURN credential for the token's user.
///
/// `401` with `unauthorized` without a bearer token, or with the token's own code
/// (expired, revoked, ...) when it does not verify against the wall clock; then
/// `404 not-found` when the server hands out no TURN credentials.
pub(super) fn credentials(app: &App, req: &Request<Incoming>, ip: IpAddr) -> Response<Body> {
    let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(bearer_token)
    else {
        audit::token_rejected(ip, Endpoint::TurnCredentials, ErrorCode::Unauthorized, None);
        return unauthorized(
            ErrorCode::Unauthorized,
            "a room token is required: Authorization: Bearer <token>",
        );
    };
    let identity = match tokens::verify(app, token) {
        Ok((identity, _claims)) => identity,
        Err((code, message)) => {
            audit::token_rejected(ip, Endpoint::TurnCredentials, code, None);
            return unauthorized(code, message);
        }
    };
    // Only the holder of a valid token learns whether TURN is configured.
    let Some(ice) = app
        .config
        .ice
        .as_ref()
        .filter(|ice| ice.issues_credentials())
    else {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "TURN is not configured on this server",
        );
    };
    let body = TurnCredentialsResponse {
        ice_servers: ice.ice_servers(&identity.user_id, app.clock.wall_ms()),
        ttl: ice.ttl().as_secs(),
    };
    let mut resp = json(StatusCode::OK, &body);
    // A credential is for its holder only: no cache along the way may keep it.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `401` with the token's error and `WWW-Authenticate: Bearer` (RFC 6750).
fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Response<Body> {
    let mut resp = error(StatusCode::UNAUTHORIZED, code, message);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}
