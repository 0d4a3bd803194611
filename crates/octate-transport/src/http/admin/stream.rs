//! The admin stats stream's body: one server-sent event of the server's figures a
//! second, from when the stream opens until the client goes or the server shuts down,
//! holding one of a few stream slots meanwhile.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use serde::Serialize;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::app::App;

/// Most stats streams open at once.
pub(super) const MAX_STREAMS: usize = 8;

/// Time between two events of a stats stream.
const EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// `count` things over `elapsed`, per second, to one decimal; 0 over no time.
fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        (count as f64 / seconds * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// One event of the stats stream.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatsEvent {
    /// When the figures were read, in Unix milliseconds.
    timestamp: u64,
    /// This node's id on a cluster; absent on a single server.
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    /// Open WebSocket connections.
    connections: usize,
    /// Rooms in memory.
    rooms: usize,
    /// Peers of this server in rooms.
    peers: usize,
    /// Peers whose connection dropped, waiting to be resumed.
    suspended: usize,
    /// Signals and updates delivered to a peer since start.
    messages_relayed: u64,
    /// Messages relayed per second since the previous event (0 in the first).
    messages_per_second: f64,
    /// Bytes allocated on the heap.
    heap_bytes: u64,
    /// `normal`, `warning` or `critical`.
    memory_level: &'static str,
    /// The cluster's live nodes, this one included; absent on a single server.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_nodes: Option<Vec<String>>,
}

/// A stats stream's body: an event at each tick, ending at shutdown. It holds one of the
/// [`MAX_STREAMS`] slots until dropped (when the response ends or the client goes).
pub(super) struct EventStream {
    app: Arc<App>,
    ticks: Interval,
    /// Completes when the server begins to shut down.
    stopping: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    /// When the previous event was read, and the relayed count then.
    previous: Option<(Instant, u64)>,
    ended: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// Takes a stream slot, or `None` when none is free.
    pub(super) fn open(app: Arc<App>) -> Option<Self> {
        app.admin_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < MAX_STREAMS).then_some(open + 1)
            })
            .ok()?;
        let mut stop = app.stop.subscribe();
        let stopping = Box::pin(async move {
            // An error means the server is gone: stop as well.
            let _ = stop.wait_for(|stopping| *stopping).await;
        });
        let mut ticks = tokio::time::interval(EVENT_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Some(Self {
            app,
            ticks,
            stopping,
            previous: None,
            ended: false,
        })
    }

    /// Reads the figures now and frames them as one event.
    fn event(&mut self, now: Instant) -> Bytes {
        let app = &self.app;
        let core = app.with_core(|core| core.stats());
        let messages_per_second = self.previous.map_or(0.0, |(at, relayed)| {
            per_second(core.messages_relayed.saturating_sub(relayed), now - at)
        });
        self.previous = Some((now, core.messages_relayed));
        let cluster = app.cluster();
        let event = StatsEvent {
            timestamp: app.clock.now_ms(),
            node_id: cluster.map(|c| c.node_id().to_string()),
            connections: app.registry.len(),
            rooms: core.rooms,
            peers: core.peers,
            suspended: core.suspended,
            messages_relayed: core.messages_relayed,
            messages_per_second,
            heap_bytes: app.heap.sample().allocated,
            memory_level: app.memory_level().as_str(),
            cluster_nodes: cluster.map(|c| c.nodes()),
        };
        let mut frame = b"data: ".to_vec();
        if serde_json::to_writer(&mut frame, &event).is_err() {
            // Plain numbers and strings always serialize; keep the stream well formed.
            frame.truncate(6);
            frame.extend_from_slice(b"{}");
        }
        frame.extend_from_slice(b"\n\n");
        Bytes::from(frame)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.app.admin_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if this.stopping.as_mut().poll(cx).is_ready() {
            this.ended = true;
            return Poll::Ready(None);
        }
        match this.ticks.poll_tick(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(now) => Poll::Ready(Some(Ok(Frame::data(this.event(now))))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_per_second_to_one_decimal() {
        assert_eq!(per_second(20, Duration::from_secs(1)), 20.0);
        assert_eq!(per_second(25, Duration::from_millis(1500)), 16.7);
        assert_eq!(per_second(3, Duration::from_secs(2)), 1.5);
        assert_eq!(per_second(0, Duration::from_secs(1)), 0.0);
        assert_eq!(per_second(7, Duration::ZERO), 0.0);
    }
}
