//! The JSON body of one webhook event.

use bytes::Bytes;
use octate_core::{LifecycleEvent, LifecycleKind, NodeId};
use octate_protocol::{LeaveReason, RoomCloseReason, RoomId, UnixMillis, UserId};
use serde::Serialize;

/// An event encoded once, sent as is to every URL and on every attempt.
#[derive(Debug)]
pub(crate) struct EncodedEvent {
    /// Unique id, for deduplication by receivers.
    pub(crate) id: String,
    /// `room.created`, `peer.left`, ...
    pub(crate) kind: &'static str,
    /// The room, whose events are delivered in order (`None` for `node.down`).
    pub(crate) room_id: Option<RoomId>,
    /// The JSON body.
    pub(crate) body: Bytes,
}

/// The wire form of an event (see docs/webhooks.md).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: UnixMillis,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a RoomId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<&'a str>,
    seq: u64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Reason {
    Leave(LeaveReason),
    Close(RoomCloseReason),
}

impl EncodedEvent {
    /// Encodes `event` under the id `id`; `node` is the node that reports it, on a cluster.
    pub(crate) fn encode(id: String, event: &LifecycleEvent, node: Option<&NodeId>) -> Self {
        let (reason, node_id) = match &event.kind {
            LifecycleKind::PeerLeft(_, reason) => (Some(Reason::Leave(*reason)), node),
            LifecycleKind::RoomClosed(reason) => (Some(Reason::Close(*reason)), node),
            LifecycleKind::NodeDown(down) => (None, Some(down)),
            _ => (None, node),
        };
        let body = Body {
            id: &id,
            kind: event.kind.name(),
            created_at: event.at,
            room_id: event.room_id.as_ref(),
            user_id: event.kind.user_id(),
            peer_count: event.room_id.as_ref().map(|_| event.peer_count),
            reason,
            node_id: node_id.map(NodeId::as_str),
            seq: event.seq,
        };
        // Invariant: the body holds only strings, numbers and unit enums.
        let json = serde_json::to_vec(&body).unwrap_or_default();
        Self {
            id,
            kind: event.kind.name(),
            room_id: event.room_id.clone(),
            body: Bytes::from(json),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_left_event_carries_every_field() {
        let event = LifecycleEvent {
            at: 1_700_000_000_123,
            room_id: Some(RoomId::new("r1").unwrap()),
            kind: LifecycleKind::PeerLeft(UserId::new("alice").unwrap(), LeaveReason::Timeout),
            peer_count: 2,
            seq: 1_700_000_000_123_004,
        };
        let encoded = EncodedEvent::encode("evt_1".into(), &event, None);
        let json: serde_json::Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "evt_1", "type": "peer.left", "createdAt": 1_700_000_000_123u64,
                "roomId": "r1", "userId": "alice", "peerCount": 2, "reason": "timeout",
                "seq": 1_700_000_000_123_004u64
            })
        );
    }

    #[test]
    fn a_room_closed_event_has_its_reason_and_no_user() {
        let event = LifecycleEvent {
            at: 5,
            room_id: Some(RoomId::new("r1").unwrap()),
            kind: LifecycleKind::RoomClosed(RoomCloseReason::Deleted),
            peer_count: 0,
            seq: 5000,
        };
        let json: serde_json::Value =
            serde_json::from_slice(&EncodedEvent::encode("e".into(), &event, None).body).unwrap();
        assert_eq!(json["reason"], "deleted");
        assert!(json.get("userId").is_none());
        assert_eq!(json["peerCount"], 0);
    }
}
