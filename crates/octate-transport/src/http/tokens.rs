//! The token endpoints: issue, validate and revoke.

use std::net::IpAddr;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use octate_protocol::ErrorCode;
use octate_protocol::http::{
    RevokeRequest, SuccessResponse, TokenRequest, TokenResponse, ValidateRequest, ValidateResponse,
};

use super::body::Body;
use super::request::read_json;
use super::response::{error, json};
use crate::app::App;
use crate::audit::{self, Endpoint};
use crate::auth::auth_error_code;

/// `POST /api/auth/token`: a signed token for a user in a room.
pub(super) async fn issue_token(app: &App, req: Request<Incoming>, ip: IpAddr) -> Response<Body> {
    let body: TokenRequest = match read_json(app, req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let ttl = body.ttl_seconds.map(std::time::Duration::from_secs);
    let now = app.clock.wall_ms();
    let issued = app
        .auth
        .read()
        .issue(body.user_id.as_str(), body.room_id.as_str(), ttl, now);
    match issued {
        Ok((token, claims)) => {
            audit::token_issued(ip, &claims.user_id, &claims.room_id, &claims.token_id);
            json(
                StatusCode::OK,
                &TokenResponse {
                    token,
                    token_id: claims.token_id,
                    issued_at: claims.issued_at,
                    expires_at: claims.expires_at,
                },
            )
        }
        Err(err) => error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            err.to_string(),
        ),
    }
}

/// `POST /api/auth/validate`: whether a token is valid for a user and room.
pub(super) async fn validate_token(
    app: &App,
    req: Request<Incoming>,
    ip: IpAddr,
) -> Response<Body> {
    let body: ValidateRequest = match read_json(app, req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let now = app.clock.wall_ms();
    let result = app
        .auth
        .read()
        .verify_for(&body.token, &body.user_id, &body.room_id, now);
    let resp = match result {
        Ok(_) => ValidateResponse {
            valid: true,
            error: None,
        },
        Err(err) => {
            let code = auth_error_code(&err);
            audit::token_rejected(ip, Endpoint::Validate, code, None);
            ValidateResponse {
                valid: false,
                error: Some(code),
            }
        }
    };
    json(StatusCode::OK, &resp)
}

/// `POST /api/auth/revoke`: refuses a token from now until it would have expired.
pub(super) async fn revoke_token(app: &App, req: Request<Incoming>, ip: IpAddr) -> Response<Body> {
    let body: RevokeRequest = match read_json(app, req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let result = app.revoke_token(&body.token);
    match result {
        Ok(claims) => {
            audit::token_revoked(ip, &claims.user_id, &claims.room_id, &claims.token_id);
            // Every other node of a cluster must refuse the token too, and end its sessions.
            if let Some(cluster) = app.cluster()
                && let Err(err) = cluster.revoke(claims.token_id, claims.expires_at).await
            {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    format!("revoked on this node only: {err}; retry to reach the cluster"),
                );
            }
            json(StatusCode::OK, &SuccessResponse { success: true })
        }
        Err(octate_auth::AuthError::RevocationListFull) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "revocation list is full",
        ),
        Err(err) => error(
            StatusCode::BAD_REQUEST,
            auth_error_code(&err),
            err.to_string(),
        ),
    }
}
