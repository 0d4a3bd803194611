//! The field names and values of every audit record, as a JSON log line shows them.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

use super::*;

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The one record `emit` logs, as JSON with its fields at the top level, without the
/// timestamp and level every line has.
fn record(emit: impl FnOnce()) -> BTreeMap<String, Value> {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(out.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, emit);
    let text = String::from_utf8(out.0.lock().clone()).expect("utf-8 log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line per event: {text}");
    let mut fields: BTreeMap<String, Value> =
        serde_json::from_str(lines[0]).expect("a JSON object");
    assert_eq!(fields.remove("target"), Some(json!("octate::audit")));
    assert_eq!(fields.remove("level"), Some(json!("INFO")));
    assert!(fields.remove("timestamp").is_some());
    assert!(fields.remove("message").is_some_and(|m| m.is_string()));
    fields
}

fn expect(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn ip() -> IpAddr {
    "192.0.2.7".parse().expect("ip")
}

fn identity() -> Identity {
    Identity {
        user_id: UserId::new("alice").expect("user"),
        room_id: RoomId::new("room-1").expect("room"),
    }
}

#[test]
fn token_records_name_the_token_by_its_id() {
    assert_eq!(
        record(|| token_issued(ip(), "alice", "room-1", "jti-1")),
        expect(&[
            ("event.action", json!("token-issued")),
            ("event.outcome", json!("success")),
            ("source.ip", json!("192.0.2.7")),
            ("user.id", json!("alice")),
            ("octate.room_id", json!("room-1")),
            ("octate.token_id", json!("jti-1")),
        ])
    );
    assert_eq!(
        record(|| token_revoked(ip(), "alice", "room-1", "jti-1")),
        expect(&[
            ("event.action", json!("token-revoked")),
            ("event.outcome", json!("success")),
            ("source.ip", json!("192.0.2.7")),
            ("user.id", json!("alice")),
            ("octate.room_id", json!("room-1")),
            ("octate.token_id", json!("jti-1")),
        ])
    );
    assert_eq!(
        record(|| token_rejected(
            ip(),
            Endpoint::WebSocketAuth,
            ErrorCode::TokenExpired,
            Some(ConnId(7))
        )),
        expect(&[
            ("event.action", json!("token-rejected")),
            ("event.outcome", json!("failure")),
            ("event.reason", json!("token-expired")),
            ("source.ip", json!("192.0.2.7")),
            ("octate.endpoint", json!("ws-auth")),
            ("octate.conn_id", json!("c7")),
        ])
    );
    assert_eq!(
        record(|| token_rejected(
            ip(),
            Endpoint::TurnCredentials,
            ErrorCode::TokenBadSignature,
            None
        )),
        expect(&[
            ("event.action", json!("token-rejected")),
            ("event.outcome", json!("failure")),
            ("event.reason", json!("token-bad-signature")),
            ("source.ip", json!("192.0.2.7")),
            ("octate.endpoint", json!("/api/turn/credentials")),
        ]),
        "no connection id over HTTP"
    );
    assert_eq!(
        record(|| resume_rejected(ip(), ResumeRefusal::WrongToken, ConnId(8))),
        expect(&[
            ("event.action", json!("token-rejected")),
            ("event.outcome", json!("failure")),
            ("event.reason", json!("wrong-resume-token")),
            ("source.ip", json!("192.0.2.7")),
            ("octate.endpoint", json!("ws-resume")),
            ("octate.conn_id", json!("c8")),
        ])
    );
}

#[test]
fn admin_and_room_records() {
    assert_eq!(
        record(|| admin_auth_failed(
            ip(),
            &Method::DELETE,
            "/api/rooms/r1",
            AdminRefusal::WrongKey
        )),
        expect(&[
            ("event.action", json!("admin-auth-failed")),
            ("event.outcome", json!("failure")),
            ("event.reason", json!("wrong-admin-key")),
            ("source.ip", json!("192.0.2.7")),
            ("http.request.method", json!("DELETE")),
            ("url.path", json!("/api/rooms/r1")),
        ])
    );
    let id = identity();
    assert_eq!(
        record(|| room_created(ip(), &id.room_id, &id.user_id)),
        expect(&[
            ("event.action", json!("room-created")),
            ("event.outcome", json!("success")),
            ("source.ip", json!("192.0.2.7")),
            ("user.id", json!("alice")),
            ("octate.room_id", json!("room-1")),
        ])
    );
    assert_eq!(
        record(|| room_deleted(ip(), &id.room_id)),
        expect(&[
            ("event.action", json!("room-deleted")),
            ("event.outcome", json!("success")),
            ("source.ip", json!("192.0.2.7")),
            ("octate.room_id", json!("room-1")),
        ])
    );
    assert_eq!(
        record(|| room_closed(&id.room_id, RoomCloseReason::MemoryPressure)),
        expect(&[
            ("event.action", json!("room-closed")),
            ("event.outcome", json!("success")),
            ("event.reason", json!("memory-pressure")),
            ("octate.room_id", json!("room-1")),
        ])
    );
}

#[test]
fn connection_records() {
    assert_eq!(
        record(|| connection_refused(ip(), ConnectionLimit::PerAddress)),
        expect(&[
            ("event.action", json!("connection-refused")),
            ("event.outcome", json!("failure")),
            ("event.reason", json!("max-connections-per-ip")),
            ("source.ip", json!("192.0.2.7")),
        ])
    );
    assert_eq!(
        record(|| connection_refused(ip(), ConnectionLimit::AddressList("deny"))),
        expect(&[
            ("event.action", json!("connection-refused")),
            ("event.outcome", json!("failure")),
            ("event.reason", json!("deny-list")),
            ("source.ip", json!("192.0.2.7")),
        ])
    );
    let id = identity();
    assert_eq!(
        record(|| rate_limit_closed(ip(), ConnId(3), Some(&id))),
        expect(&[
            ("event.action", json!("connection-rate-limited")),
            ("event.outcome", json!("failure")),
            ("event.reason", json!("rate-limited")),
            ("source.ip", json!("192.0.2.7")),
            ("user.id", json!("alice")),
            ("octate.room_id", json!("room-1")),
            ("octate.conn_id", json!("c3")),
        ])
    );
    assert_eq!(
        record(|| rate_limit_closed(ip(), ConnId(3), None)),
        expect(&[
            ("event.action", json!("connection-rate-limited")),
            ("event.outcome", json!("failure")),
            ("event.reason", json!("rate-limited")),
            ("source.ip", json!("192.0.2.7")),
            ("octate.conn_id", json!("c3")),
        ]),
        "before auth there is no user"
    );
    assert_eq!(
        record(|| peer_replaced(ip(), ConnId(4), &id)),
        expect(&[
            ("event.action", json!("peer-replaced")),
            ("event.outcome", json!("success")),
            ("source.ip", json!("192.0.2.7")),
            ("user.id", json!("alice")),
            ("octate.room_id", json!("room-1")),
            ("octate.conn_id", json!("c4")),
        ])
    );
    assert_eq!(
        record(|| session_resumed(ip(), ConnId(5), &id, Some("jti-2"))),
        expect(&[
            ("event.action", json!("session-resumed")),
            ("event.outcome", json!("success")),
            ("source.ip", json!("192.0.2.7")),
            ("user.id", json!("alice")),
            ("octate.room_id", json!("room-1")),
            ("octate.token_id", json!("jti-2")),
            ("octate.conn_id", json!("c5")),
        ])
    );
}
