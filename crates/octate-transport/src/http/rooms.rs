//! The room endpoints: create, read, list peers, delete.

use std::net::IpAddr;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use octate_core::{CoreError, NewRoom};
use octate_protocol::http::{CreateRoomRequest, SuccessResponse};
use octate_protocol::{ErrorCode, RoomCloseReason, RoomId, RoomMetadata};

use super::body::Body;
use super::request::read_json;
use super::response::{error, json};
use crate::app::App;
use crate::audit;
use crate::cluster::{LinkError, metadata};

/// `POST /api/rooms`: creates a room that waits for its host.
pub(super) async fn create_room(app: &App, req: Request<Incoming>, ip: IpAddr) -> Response<Body> {
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
    let created = match app.cluster() {
        Some(cluster) => cluster
            .create_room(new, app.clock.now_ms())
            .await
            .map(|snapshot| metadata(&snapshot)),
        None => app
            .drive(|core, now| core.create_room(now, new))
            .map_err(LinkError::Refused),
    };
    match created {
        Ok(room) => {
            audit::room_created(ip, &room.room_id, &room.host_id);
            json(StatusCode::CREATED, &room)
        }
        Err(err) => link_error(err),
    }
}

/// The room as the whole cluster holds it, or as this server does on its own.
async fn find_room(app: &App, room_id: RoomId) -> Result<Option<RoomMetadata>, LinkError> {
    match app.cluster() {
        Some(cluster) => Ok(cluster.room(room_id).await?.as_ref().map(metadata)),
        None => Ok(app.with_core(|core| core.room(&room_id))),
    }
}

/// `GET /api/rooms/:id`: the room's metadata.
pub(super) async fn get_room(app: &App, id: &str) -> Response<Body> {
    let room_id = match parse_room(id) {
        Ok(room_id) => room_id,
        Err(resp) => return resp,
    };
    match find_room(app, room_id).await {
        Ok(Some(room)) => json(StatusCode::OK, &room),
        Ok(None) => room_not_found(),
        Err(err) => link_error(err),
    }
}

/// `GET /api/rooms/:id/peers`: the peers in the room.
pub(super) async fn room_peers(app: &App, id: &str) -> Response<Body> {
    let room_id = match parse_room(id) {
        Ok(room_id) => room_id,
        Err(resp) => return resp,
    };
    match find_room(app, room_id).await {
        Ok(Some(room)) => json(StatusCode::OK, &room.peers),
        Ok(None) => room_not_found(),
        Err(err) => link_error(err),
    }
}

/// `DELETE /api/rooms/:id`: closes the room and everyone's connection to it.
pub(super) async fn delete_room(app: &App, id: &str, ip: IpAddr) -> Response<Body> {
    let room_id = match parse_room(id) {
        Ok(room_id) => room_id,
        Err(resp) => return resp,
    };
    let deleted = match app.cluster() {
        Some(cluster) => match cluster
            .close_room(room_id.clone(), RoomCloseReason::Deleted)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(LinkError::Refused(CoreError::RoomNotFound)),
            Err(err) => Err(err),
        },
        None => app
            .drive(|core, now| core.delete_room(now, &room_id))
            .map_err(LinkError::Refused),
    };
    match deleted {
        Ok(()) => {
            audit::room_deleted(ip, &room_id);
            json(StatusCode::OK, &SuccessResponse { success: true })
        }
        Err(err) => link_error(err),
    }
}

fn room_not_found() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        ErrorCode::RoomNotFound,
        "room not found",
    )
}

fn link_error(err: LinkError) -> Response<Body> {
    match err {
        LinkError::Refused(err) => core_error(err),
        LinkError::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the cluster store is unavailable; try again shortly",
        ),
    }
}

pub(super) fn core_error(err: CoreError) -> Response<Body> {
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

/// A room id from a path segment, or the 400 to answer.
#[allow(clippy::result_large_err)]
pub(super) fn parse_room(id: &str) -> Result<RoomId, Response<Body>> {
    // Clients may percent-encode characters an id allows (`:` and `@` often are).
    let decoded = percent_decode(id).unwrap_or_else(|| id.to_owned());
    RoomId::new(decoded).map_err(|err| error(StatusCode::BAD_REQUEST, err.code(), err.to_string()))
}

/// Percent-decodes a path segment; `None` when an escape is malformed or the result is not UTF-8.
pub(super) fn percent_decode(segment: &str) -> Option<String> {
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
}
