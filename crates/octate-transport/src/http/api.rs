//! The API's routing table: which handler answers a path and method, which routes need
//! the admin key, and the `Allow` list of each route.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::body::Body;
use super::request::require_admin;
use super::response::{method_not_allowed, not_found};
use super::{admin, reports, rooms, server_api, static_files, tokens, turn};
use crate::app::App;

/// Answers an API request from `ip`, or a static file for a `GET` or `HEAD` that is no route.
pub(super) async fn handle(req: Request<Incoming>, app: &Arc<App>, ip: IpAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments = split(&path);
    let method = req.method().clone();
    match (segments.as_slice(), &method) {
        (["health"], &Method::GET) => reports::health(app),
        (["stats"], &Method::GET) => reports::stats(app),
        (["info"], &Method::GET) => reports::info(app),
        (["metrics"], &Method::GET) => reports::metrics(app),
        (["admin"], &Method::GET) => admin::asset(app, None, ip),
        (["admin", file], &Method::GET) => admin::asset(app, Some(file), ip),
        (["api", "admin", "stream"], &Method::GET) => admin::stream(app, &req, ip),
        (["api", "auth", "token"], &Method::POST) => match require_admin(app, &req, ip) {
            Err(resp) => resp,
            Ok(()) => tokens::issue_token(app, req, ip).await,
        },
        (["api", "auth", "validate"], &Method::POST) => tokens::validate_token(app, req, ip).await,
        (["api", "auth", "revoke"], &Method::POST) => match require_admin(app, &req, ip) {
            Err(resp) => resp,
            Ok(()) => tokens::revoke_token(app, req, ip).await,
        },
        (["api", "rooms"], &Method::POST) => match require_admin(app, &req, ip) {
            Err(resp) => resp,
            Ok(()) => rooms::create_room(app, req, ip).await,
        },
        (["api", "rooms"], &Method::GET) => match require_admin(app, &req, ip) {
            Err(resp) => resp,
            Ok(()) => server_api::list_rooms(app, req.uri().query()).await,
        },
        (["api", "rooms", room, "peers", user, "kick"], &Method::POST) => {
            match require_admin(app, &req, ip) {
                Err(resp) => resp,
                Ok(()) => server_api::kick(app, req, (room, user), ip).await,
            }
        }
        (["api", "rooms", room, "broadcast"], &Method::POST) => {
            match require_admin(app, &req, ip) {
                Err(resp) => resp,
                Ok(()) => server_api::message(app, req, room, None).await,
            }
        }
        (["api", "rooms", room, "peers", user, "message"], &Method::POST) => {
            match require_admin(app, &req, ip) {
                Err(resp) => resp,
                Ok(()) => server_api::message(app, req, room, Some(user)).await,
            }
        }
        (["api", "turn", "credentials"], &Method::POST) => turn::credentials(app, &req, ip),
        (["api", "rooms", id], &Method::GET) => rooms::get_room(app, id).await,
        (["api", "rooms", id, "peers"], &Method::GET) => rooms::room_peers(app, id).await,
        (["api", "rooms", id], &Method::DELETE) => match require_admin(app, &req, ip) {
            Err(resp) => resp,
            Ok(()) => rooms::delete_room(app, id, ip).await,
        },
        _ => match route_methods(&segments) {
            Some(allow) => method_not_allowed(allow, "method not allowed"),
            None if method == Method::GET || method == Method::HEAD => {
                match app.config.static_dir.as_deref() {
                    Some(dir) => static_files::serve(dir, &path, method == Method::HEAD).await,
                    None => not_found(),
                }
            }
            None => not_found(),
        },
    }
}

/// The methods the API route at `path` supports, for `Allow`; `None` for a path that is
/// not an API route.
pub(super) fn allowed_methods(path: &str) -> Option<&'static str> {
    route_methods(&split(path))
}

fn split(path: &str) -> Vec<&str> {
    path.trim_matches('/').split('/').collect()
}

fn route_methods(segments: &[&str]) -> Option<&'static str> {
    match segments {
        ["health"]
        | ["stats"]
        | ["info"]
        | ["metrics"]
        | ["admin"]
        | ["admin", _]
        | ["api", "admin", "stream"]
        | ["api", "rooms", _, "peers"] => Some("GET, OPTIONS"),
        ["api", "auth", "token" | "validate" | "revoke"]
        | ["api", "turn", "credentials"]
        | ["api", "rooms", _, "broadcast"]
        | ["api", "rooms", _, "peers", _, "kick" | "message"] => Some("POST, OPTIONS"),
        ["api", "rooms"] => Some("GET, POST, OPTIONS"),
        ["api", "rooms", _] => Some("GET, DELETE, OPTIONS"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_the_methods_of_each_route() {
        assert_eq!(allowed_methods("/health"), Some("GET, OPTIONS"));
        assert_eq!(allowed_methods("/metrics/"), Some("GET, OPTIONS"));
        assert_eq!(allowed_methods("/api/auth/token"), Some("POST, OPTIONS"));
        assert_eq!(allowed_methods("/api/rooms"), Some("GET, POST, OPTIONS"));
        assert_eq!(
            allowed_methods("/api/rooms/r1/peers/u1/kick"),
            Some("POST, OPTIONS")
        );
        assert_eq!(
            allowed_methods("/api/rooms/r1/broadcast"),
            Some("POST, OPTIONS")
        );
        assert_eq!(
            allowed_methods("/api/turn/credentials"),
            Some("POST, OPTIONS")
        );
        assert_eq!(
            allowed_methods("/api/rooms/r1"),
            Some("GET, DELETE, OPTIONS")
        );
        assert_eq!(allowed_methods("/api/rooms/r1/peers"), Some("GET, OPTIONS"));
        assert_eq!(allowed_methods("/admin/app.js"), Some("GET, OPTIONS"));
        assert_eq!(allowed_methods("/api/admin/stream"), Some("GET, OPTIONS"));
        assert_eq!(allowed_methods("/"), None);
        assert_eq!(allowed_methods("/api/rooms/r1/other"), None);
    }
}
