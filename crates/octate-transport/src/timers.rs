//! The background task that drives the core's heartbeat, cleanup and memory timers.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::{info, warn};

use octate_core::MemoryLevel;

use crate::app::App;

/// Wakes at the core's next deadline and at every memory check until shutdown.
pub(crate) async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut next_memory = Instant::now() + app.config.memory_check_interval;
    loop {
        let due = app.with_core(|core| core.poll_timeout());
        let next_core = app.clock.instant_at(due);
        let wake = next_core.min(next_memory);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = sleep_until(wake) => {}
            // A deadline earlier than `wake` appeared: compute the wake again.
            () = app.timer_wake.notified() => continue,
        }
        let now = Instant::now();
        if now >= next_core {
            app.drive(|core, now| core.handle_timeout(now));
            app.purge_revoked_tokens();
        }
        if now >= next_memory {
            next_memory = now + app.config.memory_check_interval;
            let (sample, level) = app.check_memory();
            match level {
                MemoryLevel::Normal => {}
                MemoryLevel::Warning => {
                    info!(heap = sample.allocated, "memory warning: cleanup ran")
                }
                MemoryLevel::Critical => {
                    warn!(
                        heap = sample.allocated,
                        "memory critical: idle rooms and peers dropped"
                    );
                }
            }
        }
    }
}
