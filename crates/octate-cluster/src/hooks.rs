//! Lifecycle events the store scripts reported to this node (webhooks): drained from
//! this node's outbox in Redis and handed to the core.
//!
//! A script that changes membership appends its events to the outbox of the node that
//! ran it, in the same atomic step, and only that node drains its outbox: each change is
//! reported once per cluster, by the node whose script made it (see docs/webhooks.md).

use octate_core::{ClusterEvent, LifecycleEvent, LifecycleKind, NodeId};
use octate_protocol::{LeaveReason, RoomCloseReason, RoomId, UnixMillis, UserId};
use serde::Deserialize;

use crate::ClusterError;
use crate::state::Shared;

/// Most events taken from the outbox at once.
const HOOKS_BATCH: usize = 256;

/// One event as the scripts encode it (`prelude.lua`, `hook`).
#[derive(Deserialize)]
struct HookJson {
    #[serde(rename = "type")]
    kind: String,
    room: Option<String>,
    user: Option<String>,
    reason: Option<String>,
    node: Option<String>,
    count: usize,
    at: UnixMillis,
    /// Digits (a Lua number would lose them); absent from events of older builds.
    #[serde(default)]
    seq: Option<String>,
}

/// Decodes one outbox entry; `None` (logged) when it is not an event this build knows.
pub(crate) fn decode(raw: &str) -> Option<LifecycleEvent> {
    let hook: HookJson = match serde_json::from_str(raw) {
        Ok(hook) => hook,
        Err(err) => {
            tracing::warn!(%err, "undecodable lifecycle event from the store");
            return None;
        }
    };
    let user = || hook.user.as_deref().and_then(|u| UserId::new(u).ok());
    let kind = match hook.kind.as_str() {
        "room.created" => LifecycleKind::RoomCreated,
        "room.closed" => LifecycleKind::RoomClosed(
            wire_name(hook.reason.as_deref()?).unwrap_or(RoomCloseReason::Empty),
        ),
        "peer.joined" => LifecycleKind::PeerJoined(user()?),
        "peer.replaced" => LifecycleKind::PeerReplaced(user()?),
        "peer.suspended" => LifecycleKind::PeerSuspended(user()?),
        "peer.resumed" => LifecycleKind::PeerResumed(user()?),
        "peer.left" => LifecycleKind::PeerLeft(
            user()?,
            wire_name(hook.reason.as_deref()?).unwrap_or(LeaveReason::Disconnected),
        ),
        "node.down" => LifecycleKind::NodeDown(NodeId::new(hook.node.as_deref()?).ok()?),
        other => {
            tracing::warn!(kind = other, "unknown lifecycle event from the store");
            return None;
        }
    };
    let room_id = match hook.room.as_deref() {
        Some(room) => Some(RoomId::new(room).ok()?),
        None => None,
    };
    let seq = hook
        .seq
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(hook.at.saturating_mul(1000));
    Some(LifecycleEvent {
        at: hook.at,
        room_id,
        kind,
        peer_count: hook.count,
        seq,
    })
}

/// A reason from its wire name (`node-down`, `deleted`, ...).
fn wire_name<T: serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

impl Shared {
    /// Hands every event waiting in this node's outbox to the core, oldest first.
    pub(crate) async fn drain_hooks(&self) -> Result<usize, ClusterError> {
        let _one_at_a_time = self.hooks_drain.lock().await;
        let key = self.key(&format!("hooks:{}", self.config.node_id));
        let mut drained = 0;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("LPOP").arg(&key).arg(HOOKS_BATCH);
            let (batch,): (Option<Vec<String>>,) = self.query(&pipe).await?;
            let batch = batch.unwrap_or_default();
            let full = batch.len() == HOOKS_BATCH;
            for event in batch.iter().filter_map(|raw| decode(raw)) {
                self.emit_core(ClusterEvent::Lifecycle(event));
                drained += 1;
            }
            if !full {
                return Ok(drained);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn script_events_decode_with_their_reasons() {
        let left = decode(
            r#"{"type":"peer.left","room":"r","user":"bob","reason":"node-down","count":1,"at":5,"seq":"1700000000000123"}"#,
        )
        .unwrap();
        assert_eq!(
            left,
            LifecycleEvent {
                at: 5,
                room_id: Some(RoomId::new("r").unwrap()),
                kind: LifecycleKind::PeerLeft(UserId::new("bob").unwrap(), LeaveReason::NodeDown),
                peer_count: 1,
                seq: 1_700_000_000_000_123,
            }
        );
        let down = decode(r#"{"type":"node.down","node":"b","count":0,"at":7}"#).unwrap();
        assert_eq!(
            down.kind,
            LifecycleKind::NodeDown(NodeId::new("b").unwrap())
        );
        assert_eq!(down.room_id, None);
        assert_eq!(
            down.seq, 7000,
            "without a seq (an older build): its time in µs"
        );
        let closed =
            decode(r#"{"type":"room.closed","room":"r","reason":"deleted","count":2,"at":1}"#)
                .unwrap();
        assert_eq!(
            closed.kind,
            LifecycleKind::RoomClosed(RoomCloseReason::Deleted)
        );
        assert!(decode(r#"{"type":"peer.joined","room":"r","count":1,"at":1}"#).is_none());
        assert!(decode("not json").is_none());
    }
}
