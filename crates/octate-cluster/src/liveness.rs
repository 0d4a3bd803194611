//! Node liveness: this node's heartbeat, the reaper that takes the members of nodes
//! whose heartbeat expired, and the end of suspended members' resume grace.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;

use crate::state::{Shared, Trigger};
use crate::store::BeatMode;

/// Heartbeats between two prunings of the room metadata cache.
const PRUNE_EVERY: u32 = 30;

/// How often this node's outbox of lifecycle events is drained (webhooks on).
const HOOKS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs the heartbeat and the reaper for ever.
pub(crate) async fn run(sh: Arc<Shared>) {
    let mut beat = tokio::time::interval(sh.config.heartbeat_interval);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reap = tokio::time::interval(sh.config.reap_interval);
    reap.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut hooks = tokio::time::interval(HOOKS_EVERY);
    hooks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut beats = 0u32;
    loop {
        tokio::select! {
            _ = hooks.tick(), if sh.config.lifecycle_events => {
                // A task of its own: stopping this one (at shutdown) must not cut a drain
                // between taking events from Redis and handing them on; the last drain
                // of the shutdown waits for it.
                let sh = sh.clone();
                let drain = tokio::spawn(async move {
                    if let Err(e) = sh.drain_hooks().await {
                        tracing::debug!(error = %e, "draining lifecycle events failed");
                    }
                });
                let _ = drain.await;
            }
            _ = beat.tick() => {
                heartbeat(&sh).await;
                beats += 1;
                if beats.is_multiple_of(PRUNE_EVERY) {
                    let members = (sh.local)();
                    sh.prune_rooms(&members);
                }
            }
            _ = reap.tick() => {
                reap_dead(&sh).await;
                expire_suspended(&sh).await;
            }
        }
    }
}

/// Says this node is alive, unless it cannot receive (then it must not claim to be).
async fn heartbeat(sh: &Shared) {
    if !sh.subscriber_healthy() || sh.health.lock().hold_heartbeat {
        return;
    }
    let beat = match sh.heartbeat(BeatMode::Register).await {
        Ok(beat) => beat,
        Err(e) => {
            tracing::debug!(error = %e, "heartbeat failed");
            return;
        }
    };
    let mut h = sh.health.lock();
    let epoch_changed = h.epoch.as_ref().is_some_and(|e| *e != beat.epoch);
    if epoch_changed || beat.reaped {
        tracing::warn!(
            epoch_changed,
            reaped = beat.reaped,
            "this node's members are missing from Redis"
        );
        h.must_restore = true;
        h.recovering = true;
        h.hold_heartbeat = true;
        drop(h);
        sh.trigger(Trigger::Recover);
        return;
    }
    if h.epoch.is_none() {
        h.epoch = Some(beat.epoch);
    }
    if !h.degraded && !h.recovering {
        h.alive = beat.alive.into_iter().map(|(node, _)| node).collect();
    }
}

/// Ends the suspended members whose resume grace ran out, on whichever node they were.
async fn expire_suspended(sh: &Shared) {
    if sh.health.lock().degraded || !sh.subscriber_healthy() {
        return;
    }
    match sh.expire_suspended().await {
        Ok(0) => {}
        Ok(ended) => tracing::debug!(ended, "suspended members timed out"),
        Err(e) => tracing::debug!(error = %e, "expiring suspended members failed"),
    }
}

/// Claims a dead node, if any, and removes its members.
async fn reap_dead(sh: &Shared) {
    {
        let h = sh.health.lock();
        if h.degraded || h.recovering {
            return;
        }
    }
    if !sh.subscriber_healthy() {
        return;
    }
    match sh.claim_dead().await {
        Ok(Some(node)) => {
            tracing::warn!(dead = %node, "reaping a dead node");
            if let Err(e) = sh.reap(&node).await {
                tracing::warn!(error = %e, dead = %node, "reap interrupted; it resumes later");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "claim_dead failed"),
    }
}
