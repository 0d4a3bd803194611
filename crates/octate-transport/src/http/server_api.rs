//! The server API for app backends (admin key): kick a peer, send it or its whole room a
//! `server-message`, and list rooms a page at a time.
//!
//! On a cluster node each acts on the whole cluster: a kick runs in the shared store and
//! the node holding the peer closes it, server messages are relayed to the room's other
//! nodes, and the room list is read from the store's room index.

use std::net::IpAddr;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use octate_core::{CoreError, TokenRef};
use octate_protocol::http::{
    KickRequest, KickResponse, RoomListResponse, ServerMessageRequest, ServerMessageResponse,
};
use octate_protocol::{ErrorCode, RawJson, RoomState, UserId};

use super::body::Body;
use super::request::read_json;
use super::response::{error, json};
use super::rooms::{core_error, parse_room, percent_decode};
use crate::app::App;
use crate::audit;
use crate::cluster::{LinkError, metadata};

/// Longest `reason` a kick may give, in characters.
const MAX_REASON_CHARS: usize = 256;
/// Rooms per page when `limit` is absent, and the most a page may hold.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// `POST /api/rooms/:roomId/peers/:userId/kick`.
pub(super) async fn kick(
    app: &App,
    req: Request<Incoming>,
    (room, user): (&str, &str),
    ip: IpAddr,
) -> Response<Body> {
    let (room_id, user_id) = match (parse_room(room), parse_user(user)) {
        (Ok(room_id), Ok(user_id)) => (room_id, user_id),
        (Err(resp), _) | (_, Err(resp)) => return resp,
    };
    let body: KickRequest = match read_json(app, req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            format!("reason exceeds {MAX_REASON_CHARS} characters"),
        );
    }
    let token = match app.cluster() {
        Some(cluster) => {
            // The store knows the token once the session had a ticket (resume on); else
            // only the node holding the connection does.
            let local = body
                .revoke_token
                .then(|| app.with_core(|core| core.local_token(&room_id, &user_id)))
                .flatten();
            match cluster.kick(room_id.clone(), user_id.clone()).await {
                Ok(token) if token.token_id.is_none() => local.unwrap_or(token),
                Ok(token) => token,
                Err(err) => return link_refused(err),
            }
        }
        None => match app.drive(|core, now| core.kick(now, &room_id, &user_id)) {
            Ok(token) => token,
            Err(err) => return refused(err),
        },
    };
    let token_revoked = body.revoke_token && revoke(app, &token);
    audit::peer_kicked(
        ip,
        &room_id,
        &user_id,
        body.reason.as_deref(),
        token_revoked.then_some(token.token_id.as_deref()).flatten(),
    );
    json(
        StatusCode::OK,
        &KickResponse {
            success: true,
            token_revoked,
        },
    )
}

/// Revokes the kicked session's token until it expires, here and on every node; whether
/// it was revoked.
fn revoke(app: &App, token: &TokenRef) -> bool {
    let (Some(token_id), Some(expires_at)) = (token.token_id.as_deref(), token.expires_at) else {
        return false;
    };
    let now = app.clock.wall_ms();
    if let Err(err) = app.auth.write().revoke_id(token_id, expires_at, now) {
        tracing::warn!(%err, "cannot revoke a kicked peer's token");
        return false;
    }
    // Another connection may run on the same token (a `y-webrtc` one, say): it ends too.
    let conns = app.tokens.take_token(token_id);
    if !conns.is_empty() {
        app.end_sessions(&conns, ErrorCode::TokenRevoked, "token was revoked");
    }
    if let Some(cluster) = app.cluster() {
        let cluster = cluster.clone();
        let token_id = token_id.to_owned();
        tokio::spawn(async move {
            if let Err(err) = cluster.revoke(token_id, expires_at).await {
                tracing::warn!(%err, "a kicked peer's token is revoked on this node only");
            }
        });
    }
    true
}

/// `POST /api/rooms/:roomId/broadcast` (`user` is `None`) and
/// `POST /api/rooms/:roomId/peers/:userId/message`.
pub(super) async fn message(
    app: &App,
    req: Request<Incoming>,
    room: &str,
    user: Option<&str>,
) -> Response<Body> {
    let room_id = match parse_room(room) {
        Ok(room_id) => room_id,
        Err(resp) => return resp,
    };
    let user_id = match user.map(parse_user).transpose() {
        Ok(user_id) => user_id,
        Err(resp) => return resp,
    };
    let body: ServerMessageRequest = match read_json(app, req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    if !body.data.get().trim_start().starts_with('{') {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            "data must be a JSON object",
        );
    }
    let limit = app.config.max_message_bytes;
    if body.data.get().len() > limit {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("data exceeds the {limit}-byte message limit"),
        );
    }
    let data = match RawJson::from_string(body.data.get().to_owned()) {
        Ok(data) => data,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.code(), err.to_string()),
    };
    let sent = match app.cluster() {
        Some(cluster) => match cluster.room(room_id.clone()).await {
            Ok(Some(snapshot)) => {
                app.drive(|core, _| core.cluster_server_message(&snapshot, user_id.as_ref(), data))
            }
            Ok(None) => Err(CoreError::RoomNotFound),
            Err(err) => return link_refused(err),
        },
        None => app.drive(|core, _| core.server_message(&room_id, user_id.as_ref(), data)),
    };
    match sent {
        Ok(delivered) => json(StatusCode::OK, &ServerMessageResponse { delivered }),
        Err(err) => refused(err),
    }
}

/// `GET /api/rooms?state=&limit=&cursor=`: one page of rooms in the order of their ids.
pub(super) async fn list_rooms(app: &App, query: Option<&str>) -> Response<Body> {
    let page = match Page::parse(query.unwrap_or("")) {
        Ok(page) => page,
        Err(message) => return error(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, message),
    };
    // One more than asked tells whether another page follows.
    let (mut rooms, stopped_at) = match app.cluster() {
        // The store keeps no activity clock: every room of a cluster is `ACTIVE`.
        Some(_) if page.state == Some(RoomState::Idle) => (Vec::new(), None),
        Some(cluster) => match cluster.rooms_page(page.cursor, page.limit + 1).await {
            Ok(found) => (found.rooms.iter().map(metadata).collect(), found.stopped_at),
            Err(err) => return link_refused(err),
        },
        None => (
            app.with_core(|core| core.rooms_page(page.state, page.cursor.as_ref(), page.limit + 1)),
            None,
        ),
    };
    let next_cursor = if rooms.len() > page.limit {
        rooms.truncate(page.limit);
        rooms.last().map(|r| r.room_id.clone())
    } else {
        // The store stopped early (stale index entries): the next page goes on from there.
        stopped_at
    };
    json(StatusCode::OK, &RoomListResponse { rooms, next_cursor })
}

/// The query of `GET /api/rooms`.
#[derive(Debug, PartialEq)]
struct Page {
    state: Option<RoomState>,
    limit: usize,
    cursor: Option<octate_protocol::RoomId>,
}

impl Page {
    fn parse(query: &str) -> Result<Self, String> {
        let mut page = Self {
            state: None,
            limit: DEFAULT_PAGE,
            cursor: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(&raw.replace('+', " "))
                .ok_or_else(|| format!("{key}: malformed percent-encoding"))?;
            match key {
                "state" => {
                    page.state = Some(
                        serde_json::from_value(serde_json::Value::String(value))
                            .map_err(|_| "state must be ACTIVE or IDLE".to_owned())?,
                    );
                }
                "limit" => {
                    page.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| format!("limit must be 1 to {MAX_PAGE}"))?;
                }
                "cursor" => {
                    page.cursor = Some(
                        octate_protocol::RoomId::new(value).map_err(|e| format!("cursor: {e}"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(page)
    }
}

#[allow(clippy::result_large_err)]
fn parse_user(id: &str) -> Result<UserId, Response<Body>> {
    let decoded = percent_decode(id).unwrap_or_else(|| id.to_owned());
    UserId::new(decoded).map_err(|err| error(StatusCode::BAD_REQUEST, err.code(), err.to_string()))
}

/// The answer to a request the cluster's store refused or could not be asked.
fn link_refused(err: LinkError) -> Response<Body> {
    match err {
        LinkError::Refused(err) => refused(err),
        LinkError::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the cluster store is unavailable; try again shortly",
        ),
    }
}

/// The answer to a command the core refused.
fn refused(err: CoreError) -> Response<Body> {
    match err {
        CoreError::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the cluster cannot be reached; try again shortly",
        ),
        CoreError::PeerUnavailable | CoreError::PeerIncompatible => {
            error(StatusCode::CONFLICT, err.code(), err.to_string())
        }
        other => core_error(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_list_query_is_parsed_with_defaults_and_bounds() {
        assert_eq!(
            Page::parse(""),
            Ok(Page {
                state: None,
                limit: DEFAULT_PAGE,
                cursor: None
            })
        );
        let page = Page::parse("state=IDLE&limit=2&cursor=room%3A1&other=x").expect("valid query");
        assert_eq!(page.state, Some(RoomState::Idle));
        assert_eq!(page.limit, 2);
        assert_eq!(page.cursor.expect("a cursor").as_str(), "room:1");
        for bad in [
            "limit=0",
            "limit=501",
            "limit=x",
            "state=busy",
            "cursor=%zz",
        ] {
            assert!(Page::parse(bad).is_err(), "{bad}");
        }
    }
}
