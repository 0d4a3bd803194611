//! The HTTP API: health, stats, info, metrics, tokens, rooms, CORS, and the WebSocket upgrade.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use octate_core::{CoreError, NewRoom};
use octate_protocol::http::{
    CreateRoomRequest, HealthResponse, HttpError, InfoResponse, MemoryReport, OperationStats,
    RevokeRequest, ServerStats, StatsResponse, SuccessResponse, TokenRequest, TokenResponse,
    ValidateRequest, ValidateResponse,
};
use octate_protocol::{ErrorCode, PROTOCOL_VERSION, RoomId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tracing::debug;

use crate::app::App;
use crate::auth::auth_error_code;
use crate::heap::rss_bytes;
use crate::metrics::Gauges;
use crate::{session, static_files};

/// The body type of every response.
pub(crate) type Body = Full<Bytes>;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The HTTP port: the API, plus WebSocket upgrades at `/ws`.
    Http,
    /// The signaling port: WebSocket upgrades on any path, and the API.
    Signaling,
}

/// Serves one request; never fails (errors become JSON error responses).
pub(crate) async fn route(
    req: Request<Incoming>,
    app: Arc<App>,
    listener: Listener,
    remote: IpAddr,
) -> Result<Response<Body>, Infallible> {
    app.metrics.http_requests.inc();
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let mut resp = if req.method() == Method::OPTIONS {
        preflight(&app, origin.as_deref(), req.uri().path())
    } else if fastwebsockets::upgrade::is_upgrade_request(&req)
        && (listener == Listener::Signaling || req.uri().path() == "/ws")
    {
        upgrade(req, &app, origin.as_deref(), remote)
    } else {
        api(req, &app).await
    };
    if let Some(origin) = origin.as_deref() {
        add_cors(&app, origin, &mut resp);
    }
    Ok(resp)
}

async fn api(req: Request<Incoming>, app: &Arc<App>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), &method) {
        (["health"], &Method::GET) => health(app),
        (["stats"], &Method::GET) => stats(app),
        (["info"], &Method::GET) => json(StatusCode::OK, &info()),
        (["metrics"], &Method::GET) => metrics(app),
        (["api", "auth", "token"], &Method::POST) => match admin(app, &req) {
            Err(resp) => resp,
            Ok(()) => issue_token(app, req).await,
        },
        (["api", "auth", "validate"], &Method::POST) => validate_token(app, req).await,
        (["api", "auth", "revoke"], &Method::POST) => match admin(app, &req) {
            Err(resp) => resp,
            Ok(()) => revoke_token(app, req).await,
        },
        (["api", "rooms"], &Method::POST) => match admin(app, &req) {
            Err(resp) => resp,
            Ok(()) => create_room(app, req).await,
        },
        (["api", "rooms", id], &Method::GET) => with_room(id, |room_id| {
            match app.with_core(|core| core.room(&room_id)) {
                Some(room) => json(StatusCode::OK, &room),
                None => error(
                    StatusCode::NOT_FOUND,
                    ErrorCode::RoomNotFound,
                    "room not found",
                ),
            }
        }),
        (["api", "rooms", id, "peers"], &Method::GET) => with_room(id, |room_id| {
            match app.with_core(|core| core.peers(&room_id)) {
                Some(peers) => json(StatusCode::OK, &peers),
                None => error(
                    StatusCode::NOT_FOUND,
                    ErrorCode::RoomNotFound,
                    "room not found",
                ),
            }
        }),
        (["api", "rooms", id], &Method::DELETE) => match admin(app, &req) {
            Err(resp) => resp,
            Ok(()) => with_room(id, |room_id| {
                match app.drive(|core, now| core.delete_room(now, &room_id)) {
                    Ok(()) => json(StatusCode::OK, &SuccessResponse { success: true }),
                    Err(err) => core_error(err),
                }
            }),
        },
        _ => match route_methods(&segments) {
            Some(allow) => method_not_allowed(allow),
            None if method == Method::GET || method == Method::HEAD => {
                match app.config.static_dir.as_deref() {
                    Some(dir) => static_files::serve(dir, &path).await,
                    None => not_found(),
                }
            }
            None => not_found(),
        },
    }
}

/// The methods an API route supports, for `Allow`; `None` for a path that is not an API route.
fn route_methods(segments: &[&str]) -> Option<&'static str> {
    match segments {
        ["health"] | ["stats"] | ["info"] | ["metrics"] | ["api", "rooms", _, "peers"] => {
            Some("GET, OPTIONS")
        }
        ["api", "auth", "token" | "validate" | "revoke"] | ["api", "rooms"] => {
            Some("POST, OPTIONS")
        }
        ["api", "rooms", _] => Some("GET, DELETE, OPTIONS"),
        _ => None,
    }
}

fn with_room(id: &str, f: impl FnOnce(RoomId) -> Response<Body>) -> Response<Body> {
    // Clients may percent-encode characters an id allows (`:` and `@` often are).
    let decoded = percent_decode(id).unwrap_or_else(|| id.to_owned());
    match RoomId::new(decoded) {
        Ok(room_id) => f(room_id),
        Err(err) => error(StatusCode::BAD_REQUEST, err.code(), err.to_string()),
    }
}

/// Percent-decodes a path segment; `None` when an escape is malformed or the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(segment.len());
    let mut bytes = segment.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = hex(bytes.next()?)?;
            let lo = hex(bytes.next()?)?;
            out.push((hi << 4) | lo);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn upgrade(
    mut req: Request<Incoming>,
    app: &Arc<App>,
    origin: Option<&str>,
    remote: IpAddr,
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
        return error(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "origin not allowed",
        );
    }
    let Some(slot) = ConnectionSlot::acquire(app) else {
        app.metrics.connections_refused.inc();
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyConnections,
            "connection limit reached",
        );
    };
    let Some(address) = AddressSlot::acquire(app, remote) else {
        app.metrics.connections_refused.inc();
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
                match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => {
                        session::run(parts.io.into_inner(), parts.read_buf, app, stop).await
                    }
                    Err(_) => debug!("upgraded connection is not a TCP stream"),
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

fn memory_report(app: &App) -> MemoryReport {
    let sample = app.heap.sample();
    let mb = |b: u64| (b as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0;
    let critical = app.config.core.memory_critical_bytes.max(1);
    MemoryReport {
        heap_used: mb(sample.allocated),
        heap_total: mb(sample.resident),
        heap_used_bytes: sample.allocated,
        rss_bytes: rss_bytes(),
        heap_percent: ((sample.allocated as f64 / critical as f64) * 1000.0).round() / 10.0,
        level: app.memory_level().as_str().to_owned(),
    }
}

fn health(app: &App) -> Response<Body> {
    let (status, code) = if app.stopping() {
        ("shutting-down", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("ok", StatusCode::OK)
    };
    let body = HealthResponse {
        status: status.to_owned(),
        timestamp: app.clock.now_ms(),
        memory: memory_report(app),
    };
    json(code, &body)
}

fn stats(app: &App) -> Response<Body> {
    let core = app.with_core(|core| core.stats());
    let body = StatsResponse {
        server: ServerStats {
            uptime: app.uptime(),
            active_rooms: core.rooms,
            total_connections: app.registry.len(),
            peers: core.peers,
        },
        memory: memory_report(app),
        operations: OperationStats {
            messages_relayed: core.messages_relayed,
            rooms_created: core.rooms_created,
            rooms_closed: core.rooms_closed,
            peers_timed_out: core.peers_timed_out,
            auth_failures: app.metrics.auth_failures_total(),
            errors_sent: app.metrics.errors_total(),
            memory_cleanups: core.memory_cleanups,
            slow_consumers_closed: app.metrics.slow_consumers.get(),
        },
    };
    json(StatusCode::OK, &body)
}

fn info() -> InfoResponse {
    InfoResponse {
        name: "Octate P2P signaling server".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
    }
}

fn metrics(app: &App) -> Response<Body> {
    let core = app.with_core(|core| core.stats());
    let heap = app.heap.sample();
    let text = app.metrics.render(Gauges {
        connections: app.registry.len(),
        rooms: core.rooms,
        peers: core.peers,
        heap_bytes: heap.allocated,
        resident_bytes: heap.resident,
    });
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn issue_token(app: &App, req: Request<Incoming>) -> Response<Body> {
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
        Ok((token, claims)) => json(
            StatusCode::OK,
            &TokenResponse {
                token,
                token_id: claims.token_id,
                issued_at: claims.issued_at,
                expires_at: claims.expires_at,
            },
        ),
        Err(err) => error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            err.to_string(),
        ),
    }
}

async fn validate_token(app: &App, req: Request<Incoming>) -> Response<Body> {
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
        Err(err) => ValidateResponse {
            valid: false,
            error: Some(auth_error_code(&err)),
        },
    };
    json(StatusCode::OK, &resp)
}

async fn revoke_token(app: &App, req: Request<Incoming>) -> Response<Body> {
    let body: RevokeRequest = match read_json(app, req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let result = app.revoke_token(&body.token);
    match result {
        Ok(_) => json(StatusCode::OK, &SuccessResponse { success: true }),
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

async fn create_room(app: &App, req: Request<Incoming>) -> Response<Body> {
    let body: CreateRoomRequest = match read_json(app, req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let new = NewRoom {
        room_id: body.room_id,
        room_name: body.room_name,
        host_id: body.host_id,
        host_name: body.host_name,
        file_id: body.file_id,
        version: body.version,
    };
    match app.drive(|core, now| core.create_room(now, new)) {
        Ok(room) => json(StatusCode::CREATED, &room),
        Err(err) => core_error(err),
    }
}

fn core_error(err: CoreError) -> Response<Body> {
    let status = match err {
        CoreError::RoomNotFound | CoreError::PeerNotFound => StatusCode::NOT_FOUND,
        CoreError::RoomExists => StatusCode::CONFLICT,
        CoreError::TooManyRooms | CoreError::TooManyRoomsForUser | CoreError::RoomFull => {
            StatusCode::TOO_MANY_REQUESTS
        }
        CoreError::Forbidden => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, err.code(), err.to_string())
}

/// Checks `Authorization: Bearer <admin key>` when an admin key is configured.
#[allow(clippy::result_large_err)]
fn admin(app: &App, req: &Request<Incoming>) -> Result<(), Response<Body>> {
    let Some(key) = app.admin_key.as_ref() else {
        return Ok(());
    };
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "admin key required",
        ));
    };
    if key.matches(given.trim()) {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "wrong admin key",
        ))
    }
}

/// Reads a JSON body under the size limit into `T`.
#[allow(clippy::result_large_err)]
async fn read_json<T: DeserializeOwned>(
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

fn preflight(app: &App, origin: Option<&str>, path: &str) -> Response<Body> {
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
        Some(_) => error(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "origin not allowed",
        ),
        None => {
            let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
            let allow = route_methods(&segments).unwrap_or("GET, POST, DELETE, OPTIONS");
            let mut resp = Response::new(Body::default());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            resp
        }
    }
}

fn add_cors(app: &App, origin: &str, resp: &mut Response<Body>) {
    if !app.config.cors_origins.allows(origin) {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(origin) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

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

fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "method not allowed",
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("room-1").as_deref(), Some("room-1"));
        assert_eq!(percent_decode("%3Aa%40b").as_deref(), Some(":a@b"));
        assert_eq!(percent_decode("%c3%a9").as_deref(), Some("é"));
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        for bad in ["%", "%4", "%zz", "%+1", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn allow_lists_the_methods_of_each_route() {
        let allow = |path: &str| {
            let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
            route_methods(&segments)
        };
        assert_eq!(allow("/health"), Some("GET, OPTIONS"));
        assert_eq!(allow("/metrics/"), Some("GET, OPTIONS"));
        assert_eq!(allow("/api/auth/token"), Some("POST, OPTIONS"));
        assert_eq!(allow("/api/rooms"), Some("POST, OPTIONS"));
        assert_eq!(allow("/api/rooms/r1"), Some("GET, DELETE, OPTIONS"));
        assert_eq!(allow("/api/rooms/r1/peers"), Some("GET, OPTIONS"));
        assert_eq!(allow("/"), None);
        assert_eq!(allow("/api/rooms/r1/other"), None);
    }
}
