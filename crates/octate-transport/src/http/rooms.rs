//! The room endpoints: create, read, list peers, delete.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use octate_core::{CoreError, NewRoom};
use octate_protocol::http::{CreateRoomRequest, SuccessResponse};
use octate_protocol::{ErrorCode, RoomId};

use super::body::Body;
use super::request::read_json;
use super::response::{error, json};
use crate::app::App;

/// `POST /api/rooms`: creates a room that waits for its host.
pub(super) async fn create_room(app: &App, req: Request<Incoming>) -> Response<Body> {
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

/// `GET /api/rooms/:id`: the room's metadata.
pub(super) fn get_room(app: &App, id: &str) -> Response<Body> {
    with_room(id, |room_id| {
        match app.with_core(|core| core.room(&room_id)) {
            Some(room) => json(StatusCode::OK, &room),
            None => room_not_found(),
        }
    })
}

/// `GET /api/rooms/:id/peers`: the peers in the room.
pub(super) fn room_peers(app: &App, id: &str) -> Response<Body> {
    with_room(id, |room_id| {
        match app.with_core(|core| core.peers(&room_id)) {
            Some(peers) => json(StatusCode::OK, &peers),
            None => room_not_found(),
        }
    })
}

/// `DELETE /api/rooms/:id`: closes the room and everyone's connection to it.
pub(super) fn delete_room(app: &App, id: &str) -> Response<Body> {
    with_room(id, |room_id| {
        match app.drive(|core, now| core.delete_room(now, &room_id)) {
            Ok(()) => json(StatusCode::OK, &SuccessResponse { success: true }),
            Err(err) => core_error(err),
        }
    })
}

fn room_not_found() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        ErrorCode::RoomNotFound,
        "room not found",
    )
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
