//! The bytes on the nodes' channels: relay frames (binary, built here) and membership,
//! room-closed and revocation events (JSON, mostly built by the Lua scripts).
//!
//! Every message starts with one tag byte: `R` relay, `P` y-webrtc publish, `S` server
//! message, `M` membership, `C` room closed, `V` token revoked. A relay (publish, server
//! message: `from` empty) frame is
//! `R | node len u8 | node | boot u64 | seq u64 | room len u8 | room | from len u8 | from |
//! to len u8 (0: everyone) | to | payload`, integers big-endian, the payload being the
//! message's JSON exactly as the recipients get it.

use std::sync::Arc;

use octate_core::{ClusterMember, ConnId, MembershipCause, NodeId, Protocol, RoomSnapshot};
use octate_protocol::{LeaveReason, RoomCloseReason, RoomId, UnixMillis, UserId};
use serde::{Deserialize, Serialize};

/// Tag of a relay frame.
pub(crate) const TAG_RELAY: u8 = b'R';
/// Tag of a relay frame carrying a `y-webrtc` `publish` (for the topic's subscribers).
pub(crate) const TAG_PUBLISH: u8 = b'P';

/// Tag of a relay frame carrying a server API `server-message` (no sending member).
pub(crate) const TAG_SERVER: u8 = b'S';

/// What a relay frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayKind {
    /// A native message for the room's native peers (or one of them).
    Message,
    /// A `y-webrtc` `publish` for the room topic's subscribers.
    Publish,
    /// A `server-message` of the server API for the room's native peers (or one of them).
    Server,
}
/// Tag of a revocation.
pub(crate) const TAG_REVOKED: u8 = b'V';

/// Why bytes from Redis could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("bad cluster message: {0}")]
pub(crate) struct BadMessage(pub(crate) String);

fn bad(what: impl Into<String>) -> BadMessage {
    BadMessage(what.into())
}

/// A relay frame ready to publish; the writer fills in its sequence number.
#[derive(Debug)]
pub(crate) struct RelayFrame {
    pub(crate) bytes: Vec<u8>,
    seq_at: usize,
}

impl RelayFrame {
    /// Frames one message for another node.
    pub(crate) fn new(
        node: &NodeId,
        boot: u64,
        room: &RoomId,
        from: &UserId,
        to: Option<&UserId>,
        payload: &[u8],
    ) -> Self {
        Self::framed(TAG_RELAY, node, boot, (room, from, to), payload)
    }

    /// Frames one `y-webrtc` `publish` for another node's subscribers of `room`.
    pub(crate) fn publish(
        node: &NodeId,
        boot: u64,
        room: &RoomId,
        from: &UserId,
        payload: &[u8],
    ) -> Self {
        Self::framed(TAG_PUBLISH, node, boot, (room, from, None), payload)
    }

    /// Frames one server API `server-message` for another node's native peers of `room`
    /// (all of them, or `to`).
    pub(crate) fn server(
        node: &NodeId,
        boot: u64,
        room: &RoomId,
        to: Option<&UserId>,
        payload: &[u8],
    ) -> Self {
        Self::framed_raw(TAG_SERVER, node, boot, (room.as_str(), "", to), payload)
    }

    fn framed(
        tag: u8,
        node: &NodeId,
        boot: u64,
        (room, from, to): (&RoomId, &UserId, Option<&UserId>),
        payload: &[u8],
    ) -> Self {
        Self::framed_raw(tag, node, boot, (room.as_str(), from.as_str(), to), payload)
    }

    fn framed_raw(
        tag: u8,
        node: &NodeId,
        boot: u64,
        (room, from, to): (&str, &str, Option<&UserId>),
        payload: &[u8],
    ) -> Self {
        let node = node.as_str();
        let to = to.map_or("", UserId::as_str);
        let len = 1 + 1 + node.len() + 16 + 3 + room.len() + from.len() + to.len() + payload.len();
        let mut bytes = Vec::with_capacity(len);
        bytes.push(tag);
        push_short(&mut bytes, node);
        bytes.extend_from_slice(&boot.to_be_bytes());
        let seq_at = bytes.len();
        bytes.extend_from_slice(&0u64.to_be_bytes());
        push_short(&mut bytes, room);
        push_short(&mut bytes, from);
        push_short(&mut bytes, to);
        bytes.extend_from_slice(payload);
        Self { bytes, seq_at }
    }

    /// Stamps the per-destination sequence number.
    pub(crate) fn set_seq(&mut self, seq: u64) {
        if let Some(slot) = self.bytes.get_mut(self.seq_at..self.seq_at + 8) {
            slot.copy_from_slice(&seq.to_be_bytes());
        }
    }
}

/// Ids are at most 128 bytes (node ids 64), so one length byte is enough.
fn push_short(out: &mut Vec<u8>, s: &str) {
    let len = u8::try_from(s.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// A relay frame as received, borrowing the message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RelayIn<'a> {
    pub(crate) kind: RelayKind,
    pub(crate) node: &'a str,
    pub(crate) boot: u64,
    pub(crate) seq: u64,
    pub(crate) room: &'a str,
    pub(crate) from: &'a str,
    pub(crate) to: Option<&'a str>,
    pub(crate) payload: &'a [u8],
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BadMessage> {
        if self.rest.len() < n {
            return Err(bad("truncated relay frame"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, BadMessage> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn short(&mut self) -> Result<&'a str, BadMessage> {
        let len = self.take(1)?[0];
        std::str::from_utf8(self.take(usize::from(len))?).map_err(|_| bad("id is not UTF-8"))
    }
}

impl<'a> RelayIn<'a> {
    /// Parses a relay frame, tag included.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, BadMessage> {
        let mut r = Reader { rest: bytes };
        let kind = match r.take(1)? {
            [TAG_RELAY] => RelayKind::Message,
            [TAG_PUBLISH] => RelayKind::Publish,
            [TAG_SERVER] => RelayKind::Server,
            _ => return Err(bad("not a relay frame")),
        };
        let node = r.short()?;
        let boot = r.u64()?;
        let seq = r.u64()?;
        let room = r.short()?;
        let from = r.short()?;
        let to = r.short()?;
        Ok(Self {
            kind,
            node,
            boot,
            seq,
            room,
            from,
            to: (!to.is_empty()).then_some(to),
            payload: r.rest,
        })
    }
}

/// A room snapshot as the scripts write it: numbers as strings (Lua numbers are doubles).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotJson {
    room: String,
    ver: String,
    name: String,
    created_by: String,
    created_at: String,
    file_id: Option<String>,
    host: Option<String>,
    members: Vec<MemberJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberJson {
    user: String,
    name: String,
    node: String,
    conn: String,
    joined_at: String,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    suspended: bool,
    /// The member speaks `y-webrtc` (absent: the native protocol).
    #[serde(default)]
    ywebrtc: bool,
}

fn number(field: &str, s: &str) -> Result<u64, BadMessage> {
    s.parse()
        .map_err(|_| bad(format!("{field} is not a number")))
}

fn user(s: String) -> Result<UserId, BadMessage> {
    UserId::new(s).map_err(|e| bad(e.to_string()))
}

impl SnapshotJson {
    fn into_snapshot(self) -> Result<RoomSnapshot, BadMessage> {
        let mut members = Vec::with_capacity(self.members.len());
        for m in self.members {
            members.push(ClusterMember {
                user_id: user(m.user)?,
                user_name: m.name,
                node: NodeId::new(&m.node).map_err(|e| bad(e.to_string()))?,
                conn: ConnId(number("conn", &m.conn)?),
                joined_at: number("joinedAt", &m.joined_at)?,
                session: m.session,
                suspended: m.suspended,
                protocol: if m.ywebrtc {
                    Protocol::YWebrtc
                } else {
                    Protocol::Native
                },
            });
        }
        Ok(RoomSnapshot {
            room_id: RoomId::new(self.room).map_err(|e| bad(e.to_string()))?,
            ver: number("ver", &self.ver)?,
            room_name: self.name,
            created_by: user(self.created_by)?,
            created_at: number("createdAt", &self.created_at)?,
            file_id: self.file_id,
            host_id: self.host.map(user).transpose()?,
            members,
        })
    }
}

/// Decodes a snapshot written by a script.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<RoomSnapshot, BadMessage> {
    serde_json::from_slice::<SnapshotJson>(bytes)
        .map_err(|e| bad(e.to_string()))?
        .into_snapshot()
}

#[derive(Debug, Deserialize)]
struct CauseJson {
    kind: String,
    user: Option<String>,
    node: Option<String>,
    reason: Option<LeaveReason>,
}

impl CauseJson {
    fn into_cause(self) -> Result<MembershipCause, BadMessage> {
        let need_user =
            |u: Option<String>| u.ok_or_else(|| bad("cause without user")).and_then(user);
        Ok(match self.kind.as_str() {
            "joined" => MembershipCause::Joined(need_user(self.user)?),
            "replaced" => MembershipCause::Replaced(need_user(self.user)?),
            "suspended" => MembershipCause::Suspended(need_user(self.user)?),
            "resumed" => MembershipCause::Resumed(need_user(self.user)?),
            "left" => MembershipCause::Left(
                need_user(self.user)?,
                self.reason.unwrap_or(LeaveReason::Disconnected),
            ),
            "node-down" => MembershipCause::NodeDown(
                NodeId::new(self.node.as_deref().unwrap_or_default())
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "resync" => MembershipCause::Resync,
            other => return Err(bad(format!("unknown cause {other}"))),
        })
    }
}

#[derive(Debug, Deserialize)]
struct MembershipJson {
    cause: CauseJson,
    snapshot: SnapshotJson,
}

#[derive(Debug, Deserialize)]
struct ClosedJson {
    room: String,
    reason: RoomCloseReason,
    /// Missing from a node that predates it: the close then counts as newer than any join.
    #[serde(default)]
    ver: Option<String>,
}

/// A revocation, as published on the control channel.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RevokedJson {
    pub(crate) id: String,
    pub(crate) exp: UnixMillis,
}

impl RevokedJson {
    /// The message to publish.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![TAG_REVOKED];
        // Serializing a string and a number cannot fail.
        let _ = serde_json::to_writer(&mut out, self);
        out
    }
}

/// Any message from the node's channels.
#[derive(Debug)]
pub(crate) enum Inbound<'a> {
    Relay(RelayIn<'a>),
    Membership {
        snapshot: RoomSnapshot,
        cause: MembershipCause,
    },
    Closed {
        room_id: RoomId,
        reason: RoomCloseReason,
        ver: u64,
    },
    Revoked {
        token_id: String,
        expires_at: UnixMillis,
    },
}

impl<'a> Inbound<'a> {
    /// Decodes a message; anything this crate did not write is an error.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, BadMessage> {
        let (tag, body) = bytes.split_first().ok_or_else(|| bad("empty message"))?;
        let json = |what| bad(format!("bad {what} event"));
        match tag {
            b'R' | b'P' | b'S' => RelayIn::parse(bytes).map(Self::Relay),
            b'M' => {
                let m: MembershipJson =
                    serde_json::from_slice(body).map_err(|_| json("membership"))?;
                Ok(Self::Membership {
                    cause: m.cause.into_cause()?,
                    snapshot: m.snapshot.into_snapshot()?,
                })
            }
            b'C' => {
                let c: ClosedJson =
                    serde_json::from_slice(body).map_err(|_| json("room-closed"))?;
                let ver = match &c.ver {
                    Some(v) => number("ver", v)?,
                    None => u64::MAX,
                };
                Ok(Self::Closed {
                    room_id: RoomId::new(c.room).map_err(|e| bad(e.to_string()))?,
                    reason: c.reason,
                    ver,
                })
            }
            b'V' => {
                let v: RevokedJson = serde_json::from_slice(body).map_err(|_| json("revoked"))?;
                Ok(Self::Revoked {
                    token_id: v.id,
                    expires_at: v.exp,
                })
            }
            _ => Err(bad("unknown tag")),
        }
    }
}

/// Text of a relayed payload, checked once.
pub(crate) fn payload_text(payload: &[u8]) -> Result<Arc<str>, BadMessage> {
    std::str::from_utf8(payload)
        .map(Arc::from)
        .map_err(|_| bad("payload is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<T>(r: Result<T, impl std::fmt::Debug>) -> T {
        r.expect("valid id")
    }

    #[test]
    fn relay_frame_round_trips() {
        let node = id(NodeId::new("node-a"));
        let room = id(RoomId::new("room-1"));
        let from = id(UserId::new("alice"));
        let to = id(UserId::new("bob"));
        let mut frame = RelayFrame::new(&node, 7, &room, &from, Some(&to), br#"{"type":"x"}"#);
        frame.set_seq(42);
        let got = RelayIn::parse(&frame.bytes).expect("parses");
        assert_eq!(
            got,
            RelayIn {
                kind: RelayKind::Message,
                node: "node-a",
                boot: 7,
                seq: 42,
                room: "room-1",
                from: "alice",
                to: Some("bob"),
                payload: br#"{"type":"x"}"#,
            }
        );
        let broadcast = RelayFrame::new(&node, 7, &room, &from, None, b"{}");
        assert_eq!(RelayIn::parse(&broadcast.bytes).expect("parses").to, None);
        let server = RelayFrame::server(&node, 7, &room, Some(&to), b"{}");
        let got = RelayIn::parse(&server.bytes).expect("parses");
        assert_eq!(
            (got.kind, got.from, got.to),
            (RelayKind::Server, "", Some("bob"))
        );
        let publish = RelayFrame::publish(&node, 7, &room, &from, b"{}");
        let got = RelayIn::parse(&publish.bytes).expect("parses");
        assert_eq!(
            (got.kind, got.to, got.payload),
            (RelayKind::Publish, None, &b"{}"[..])
        );
    }

    #[test]
    fn truncated_frames_are_errors() {
        let node = id(NodeId::new("n"));
        let room = id(RoomId::new("r"));
        let from = id(UserId::new("u"));
        let frame = RelayFrame::new(&node, 1, &room, &from, None, b"");
        for cut in 0..frame.bytes.len() {
            assert!(RelayIn::parse(&frame.bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"M",
            b"M{",
            b"Mnull",
            b"C{}",
            b"V[]",
            b"Z",
            b"R\xff",
        ] {
            assert!(Inbound::parse(bytes).is_err(), "{bytes:?}");
        }
        let evil = br#"M{"cause":{"kind":"joined","user":"a b"},"snapshot":{"room":"r","ver":"1","name":"r","createdBy":"u","createdAt":"1","fileId":null,"host":null,"members":[]}}"#;
        assert!(Inbound::parse(evil).is_err());
    }

    #[test]
    fn membership_event_decodes() {
        let bytes = br#"M{"cause":{"kind":"left","user":"bob","reason":"timeout"},"snapshot":{"room":"r","ver":"1764888888123456","name":"Room","createdBy":"alice","createdAt":"1700000000000","fileId":"f","host":"alice","members":[{"user":"alice","name":"Alice","node":"a","conn":"3","joinedAt":"1700000000001"}]}}"#;
        let Ok(Inbound::Membership { snapshot, cause }) = Inbound::parse(bytes) else {
            panic!("decodes");
        };
        assert_eq!(
            cause,
            MembershipCause::Left(id(UserId::new("bob")), LeaveReason::Timeout)
        );
        assert_eq!(snapshot.ver, 1_764_888_888_123_456);
        assert_eq!(snapshot.members[0].conn, ConnId(3));
        assert_eq!(snapshot.host_id, Some(id(UserId::new("alice"))));
    }
}
