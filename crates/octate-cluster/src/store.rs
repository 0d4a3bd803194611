//! Requests that need no ordering with this node's relays, run on the shared control
//! connection: heartbeats, reaping, room reads and the HTTP API's requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use octate_core::{CoreError, NewRoom, RoomPage, RoomSnapshot, TokenRef};
use octate_protocol::{RoomCloseReason, RoomId, UnixMillis, UserId};
use redis::{FromRedisValue, ScriptInvocation};

use crate::ClusterError;
use crate::config::ms;
use crate::conn::{bounded, needs_reconnect};
use crate::state::Shared;
use crate::wire::{RevokedJson, decode_snapshot};

/// Members removed per reap script call.
const REAP_BATCH: usize = 200;
/// Fewest room index entries a room list looks at per page (stale entries are skipped).
const LIST_SCAN_MIN: usize = 256;

/// What a heartbeat script answered.
#[derive(Debug)]
pub(crate) struct Beat {
    /// Redis' epoch: a new value means Redis lost its data.
    pub(crate) epoch: String,
    /// Redis' clock (ms).
    pub(crate) now: u64,
    /// This node was declared dead while it was away.
    pub(crate) reaped: bool,
    /// Live nodes and their deadlines (ms).
    pub(crate) alive: Vec<(String, u64)>,
}

/// How a heartbeat registers the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BeatMode {
    /// Read only.
    Check,
    /// Register unless reaped or the epoch changed.
    Register,
    /// Register: this node's members are known to be in Redis.
    Force,
}

/// A room-changing answer of a script: a snapshot, or a room rule's refusal.
pub(crate) fn refusal(code: &str) -> CoreError {
    match code {
        "room-exists" => CoreError::RoomExists,
        "room-full" => CoreError::RoomFull,
        "too-many-rooms" => CoreError::TooManyRooms,
        "too-many-rooms-for-user" => CoreError::TooManyRoomsForUser,
        _ => CoreError::Unavailable,
    }
}

fn unix_now() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

static EPOCH_SEQ: AtomicU64 = AtomicU64::new(0);

impl Shared {
    /// Runs a script on the control connection, renewing the connection after failures.
    pub(crate) async fn call<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        let limit = self.config.command_timeout;
        let mut conn = self.control.get(&self.client, &self.scripts, limit).await?;
        let result = bounded(limit, invocation.invoke_async(&mut conn)).await;
        if let Err(e) = &result
            && needs_reconnect(e)
        {
            self.control.reset().await;
        }
        result
    }

    /// Runs a plain command pipeline on the control connection.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, ClusterError> {
        let limit = self.config.command_timeout;
        let mut conn = self.control.get(&self.client, &self.scripts, limit).await?;
        let result = bounded(limit, pipe.query_async(&mut conn)).await;
        if let Err(e) = &result
            && needs_reconnect(e)
        {
            self.control.reset().await;
        }
        result
    }

    /// Runs the heartbeat script.
    pub(crate) async fn heartbeat(&self, mode: BeatMode) -> Result<Beat, ClusterError> {
        let c = &self.config;
        let expected = self.health.lock().epoch.clone().unwrap_or_default();
        let candidate = format!(
            "{:x}-{:x}-{}",
            self.boot,
            unix_now(),
            EPOCH_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mode = match mode {
            BeatMode::Check => "0",
            BeatMode::Register => "1",
            BeatMode::Force => "2",
        };
        let info = format!(r#"{{"node":"{}","boot":{}}}"#, c.node_id, self.boot);
        let (epoch, now, reaped, flat): (String, String, i64, Vec<String>) = self
            .call(
                self.scripts
                    .heartbeat
                    .arg(&c.key_prefix)
                    .arg(c.node_id.as_str())
                    .arg(ms(c.node_ttl))
                    .arg(ms(c.stall_threshold))
                    .arg(candidate)
                    .arg(mode)
                    .arg(info)
                    .arg(expected),
            )
            .await?;
        let mut alive = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            let deadline = pair[1].parse::<f64>().unwrap_or(0.0);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            alive.push((pair[0].clone(), deadline as u64));
        }
        self.counters
            .nodes_alive
            .store(alive.len() as u64, Ordering::Relaxed);
        Ok(Beat {
            epoch,
            now: now
                .parse()
                .map_err(|_| ClusterError::Decode("time".into()))?,
            reaped: reaped == 1,
            alive,
        })
    }

    /// Claims one dead node to reap, if any.
    pub(crate) async fn claim_dead(&self) -> Result<Option<String>, ClusterError> {
        let c = &self.config;
        let ttl = ms(c.node_ttl);
        self.call(
            self.scripts
                .claim_dead
                .arg(&c.key_prefix)
                .arg(c.node_id.as_str())
                .arg(ttl)
                .arg(ms(c.stall_threshold))
                .arg(ttl.saturating_mul(4))
                .arg(c.hooks_node()),
        )
        .await
    }

    /// Removes (or suspends) every member of a claimed node, batch by batch; the
    /// departures are reported as lifecycle events by this node.
    pub(crate) async fn reap(&self, node: &str) -> Result<(), ClusterError> {
        let c = &self.config;
        let hooks = c.hooks_node();
        let lease = ms(c.node_ttl).saturating_mul(4);
        loop {
            let left: u64 = self
                .call(
                    self.scripts
                        .reap_batch
                        .arg(&c.key_prefix)
                        .arg(node)
                        .arg(REAP_BATCH)
                        .arg(lease)
                        .arg(ms(c.resume_grace))
                        .arg(hooks),
                )
                .await?;
            if left == 0 {
                return Ok(());
            }
        }
    }

    /// Ends suspended members whose resume grace ran out; returns how many.
    pub(crate) async fn expire_suspended(&self) -> Result<u64, ClusterError> {
        let c = &self.config;
        self.call(
            self.scripts
                .expire
                .arg(&c.key_prefix)
                .arg(REAP_BATCH)
                .arg(c.hooks_node()),
        )
        .await
    }

    /// Deregisters this node and hands its members over (suspended when they can resume),
    /// telling their rooms' other nodes.
    pub(crate) async fn retire(&self) -> Result<(), ClusterError> {
        let c = &self.config;
        let lease = ms(c.node_ttl).saturating_mul(4);
        let node = c.node_id.as_str();
        let _: i64 = self
            .call(self.scripts.retire.arg(&c.key_prefix).arg(node).arg(lease))
            .await?;
        // Its peers' suspensions (or departures, without resume) are reported by this
        // node itself, from its outbox, drained once more before it stops.
        self.reap(node).await
    }

    /// A room as Redis holds it.
    pub(crate) async fn read_room(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<RoomSnapshot>, ClusterError> {
        let raw: Option<Vec<u8>> = self
            .call(
                self.scripts
                    .read_room
                    .arg(&self.config.key_prefix)
                    .arg(room_id.as_str()),
            )
            .await?;
        raw.map(|bytes| decode_snapshot(&bytes).map_err(|e| ClusterError::Decode(e.0)))
            .transpose()
    }

    /// Creates an empty room that expires unless joined within the grace period.
    pub(crate) async fn create_room(
        &self,
        room: &NewRoom,
    ) -> Result<Result<RoomSnapshot, CoreError>, ClusterError> {
        let c = &self.config;
        let reply: Vec<String> = self
            .call(
                self.scripts
                    .create_room
                    .arg(&c.key_prefix)
                    .arg(room.room_id.as_str())
                    .arg(&room.room_name)
                    .arg(room.host_id.as_str())
                    .arg(room.file_id.as_deref().unwrap_or(""))
                    .arg(c.max_rooms)
                    .arg(c.max_rooms_per_user)
                    .arg(ms(c.empty_room_grace))
                    .arg(c.hooks_node()),
            )
            .await?;
        match reply.as_slice() {
            [ok, snap] if ok == "ok" => decode_snapshot(snap.as_bytes())
                .map(Ok)
                .map_err(|e| ClusterError::Decode(e.0)),
            [err, code] if err == "err" => Ok(Err(refusal(code))),
            _ => Err(ClusterError::Decode("create_room reply".into())),
        }
    }

    /// Deletes a room and tells every node with members; `false` if there was none.
    pub(crate) async fn close_room(
        &self,
        room_id: &RoomId,
        reason: RoomCloseReason,
    ) -> Result<bool, ClusterError> {
        let closed: i64 = self
            .call(
                self.scripts
                    .close_room
                    .arg(&self.config.key_prefix)
                    .arg(room_id.as_str())
                    .arg(close_reason(reason))
                    .arg("")
                    .arg(self.config.hooks_node()),
            )
            .await?;
        Ok(closed == 1)
    }

    /// Removes a user from a room whatever node holds it, ending its session; tells the
    /// room's nodes and the holder (cause left, reason kicked). The token its session
    /// runs on (empty when the store never learnt it), or `RoomNotFound`/`PeerNotFound`.
    pub(crate) async fn kick(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Result<TokenRef, CoreError>, ClusterError> {
        let reply: Vec<String> = self
            .call(
                self.scripts
                    .kick
                    .arg(&self.config.key_prefix)
                    .arg(room_id.as_str())
                    .arg(user_id.as_str())
                    .arg(self.config.hooks_node()),
            )
            .await?;
        match reply.as_slice() {
            [ok, token_id, expiry, _node] if ok == "ok" => Ok(Ok(TokenRef {
                token_id: (!token_id.is_empty()).then(|| token_id.clone()),
                expires_at: expiry.parse().ok(),
            })),
            [err, code] if err == "err" && code == "room-not-found" => {
                Ok(Err(CoreError::RoomNotFound))
            }
            [err, code] if err == "err" && code == "peer-not-found" => {
                Ok(Err(CoreError::PeerNotFound))
            }
            _ => Err(ClusterError::Decode("kick reply".into())),
        }
    }

    /// Up to `limit` rooms in the order of their ids, after `after`.
    pub(crate) async fn rooms_page(
        &self,
        after: Option<&RoomId>,
        limit: usize,
    ) -> Result<RoomPage, ClusterError> {
        let budget = limit.saturating_mul(4).max(LIST_SCAN_MIN);
        let reply: Vec<Vec<u8>> = self
            .call(
                self.scripts
                    .list_rooms
                    .arg(&self.config.key_prefix)
                    .arg(after.map_or("", RoomId::as_str))
                    .arg(limit)
                    .arg(budget),
            )
            .await?;
        let Some((stopped, snapshots)) = reply.split_first() else {
            return Err(ClusterError::Decode("list_rooms reply".into()));
        };
        let mut rooms = Vec::with_capacity(snapshots.len());
        for bytes in snapshots {
            match decode_snapshot(bytes) {
                Ok(snapshot) => rooms.push(snapshot),
                Err(e) => tracing::warn!(error = %e.0, "a room of the index cannot be read"),
            }
        }
        let stopped_at = std::str::from_utf8(stopped)
            .ok()
            .filter(|s| !s.is_empty())
            .and_then(|s| RoomId::new(s).ok());
        Ok(RoomPage { rooms, stopped_at })
    }

    /// Stores a revoked token until it expires and tells every node.
    pub(crate) async fn revoke(
        &self,
        token_id: &str,
        expires_at: UnixMillis,
    ) -> Result<(), ClusterError> {
        let key = self.key("revoked");
        let message = RevokedJson {
            id: token_id.to_owned(),
            exp: expires_at,
        }
        .encode();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(expires_at)
            .arg(token_id)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(unix_now())
            .ignore()
            .cmd("PUBLISH")
            .arg(self.key("control"))
            .arg(message)
            .ignore();
        self.query::<()>(&pipe).await
    }

    /// Every token revoked and not expired yet.
    pub(crate) async fn revoked(&self) -> Result<Vec<(String, UnixMillis)>, ClusterError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(self.key("revoked"))
            .arg(unix_now())
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES");
        let (flat,): (Vec<String>,) = self.query(&pipe).await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            if let Ok(exp) = pair[1].parse::<f64>() {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                out.push((pair[0].clone(), exp as u64));
            }
        }
        Ok(out)
    }
}

/// A reason's wire name, as the scripts pass it on.
pub(crate) fn close_reason(reason: RoomCloseReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "deleted".to_owned())
}
