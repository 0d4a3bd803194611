//! The supervisor: brings the node back after an outage (re-registering its members if
//! Redis lost them or reaped the node, waiting for the other nodes, then reading every
//! room again) and resyncs rooms after a gap in another node's frames.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use octate_core::{ClusterEvent, MembershipCause};
use octate_protocol::{RoomCloseReason, RoomId};
use tokio::sync::{mpsc, oneshot};

use crate::config::ms;
use crate::state::{Counters, Shared, Trigger};
use crate::store::BeatMode;
use crate::writer::Job;
use crate::{ClusterError, NodeEvent};

/// Runs for ever, one request at a time.
pub(crate) async fn run(sh: Arc<Shared>, mut triggers: mpsc::Receiver<Trigger>) {
    while let Some(first) = triggers.recv().await {
        let mut recover = first == Trigger::Recover;
        while let Ok(next) = triggers.try_recv() {
            recover |= next == Trigger::Recover;
        }
        if recover {
            recover_until_done(&sh).await;
        } else if let Err(e) = resync(&sh, false).await {
            tracing::warn!(error = %e, "resync failed");
        }
    }
}

async fn recover_until_done(sh: &Shared) {
    loop {
        let (outage, subscribed) = {
            let h = sh.health.lock();
            (h.outage, h.subscribed)
        };
        if !subscribed {
            // The subscriber asks again once it is back.
            return;
        }
        match recover(sh, outage).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "recovery failed; retrying");
                tokio::time::sleep(sh.config.reconnect_min).await;
            }
        }
        if sh.health.lock().outage != outage {
            return;
        }
    }
}

async fn recover(sh: &Shared, outage: u64) -> Result<(), ClusterError> {
    sh.health.lock().recovering = true;
    let check = sh.heartbeat(BeatMode::Check).await?;
    let (restore, known) = {
        let h = sh.health.lock();
        let epoch_changed = h.epoch.as_ref().is_some_and(|e| *e != check.epoch);
        (
            epoch_changed || check.reaped || h.must_restore,
            h.alive.clone(),
        )
    };
    let mut known = known;
    known.extend(sh.room_nodes());
    if restore {
        let (reply, done) = oneshot::channel();
        sh.jobs
            .send(Job::Restore { reply })
            .map_err(|_| ClusterError::Stopped)?;
        done.await.map_err(|_| ClusterError::Stopped)??;
    }
    {
        let mut h = sh.health.lock();
        h.epoch = Some(check.epoch.clone());
        h.must_restore = false;
        h.hold_heartbeat = false;
    }
    let mode = if restore {
        BeatMode::Force
    } else {
        BeatMode::Register
    };
    sh.heartbeat(mode).await?;
    // Every node known before the outage (alive, or seen in this node's rooms) gets one ttl to heartbeat again: it does so only
    // once its own members are registered, so the rooms read next include them.
    let ttl = ms(sh.config.node_ttl);
    let me = sh.config.node_id.as_str();
    let deadline = Instant::now() + sh.config.node_ttl;
    let alive = loop {
        let beat = sh.heartbeat(BeatMode::Check).await?;
        let back = known.iter().filter(|n| n.as_str() != me).all(|n| {
            beat.alive
                .iter()
                .any(|(m, until)| m == n && *until >= check.now + ttl)
        });
        if back || Instant::now() >= deadline {
            break beat.alive;
        }
        tokio::time::sleep(sh.config.heartbeat_interval / 2).await;
    };
    sh.health.lock().recovering = false;
    resync(sh, true).await?;
    let mut h = sh.health.lock();
    if h.outage != outage || !h.subscribed {
        return Ok(());
    }
    h.alive = alive.into_iter().map(|(node, _)| node).collect();
    let report = h.degraded;
    h.degraded = false;
    drop(h);
    if report {
        tracing::info!(node = %sh.config.node_id, "cluster link recovered");
        sh.emit(NodeEvent::Core(ClusterEvent::Recovered));
    }
    Ok(())
}

/// Reads rooms this node has members in and hands the core each whole snapshot: after
/// an outage every room (one that no longer exists was closed meanwhile), after a gap
/// the rooms shared with the nodes whose frames went missing.
async fn resync(sh: &Shared, after_outage: bool) -> Result<(), ClusterError> {
    let gaps = std::mem::take(&mut *sh.gaps.lock());
    let members = (sh.local)();
    sh.prune_rooms(&members);
    let rooms: BTreeSet<RoomId> = members
        .into_iter()
        .map(|m| m.room_id)
        .filter(|room| after_outage || sh.shares_room_with(room, &gaps))
        .collect();
    for room_id in rooms {
        match sh.read_room(&room_id).await? {
            Some(snapshot) => {
                Counters::add(&sh.counters.resyncs, 1);
                sh.emit_core(ClusterEvent::Membership {
                    snapshot,
                    cause: MembershipCause::Resync,
                });
            }
            None if after_outage => sh.emit_core(ClusterEvent::RoomClosed {
                room_id,
                reason: RoomCloseReason::Deleted,
                // Read after the outage: newer than any join this node had in flight.
                ver: u64::MAX,
            }),
            None => {}
        }
    }
    Ok(())
}
