//! The admin dashboard: its page, script and style sheet at `/admin`, and the stats
//! stream the page reads (`GET /api/admin/stream`, server-sent events, one JSON event a
//! second). Both exist only when an admin key is configured; the files are built into
//! the binary and served with a Content-Security-Policy that allows no inline script.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use octate_protocol::ErrorCode;
use serde::Serialize;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::body::Body;
use super::request::require_admin;
use super::response::{address_refused, error, not_found};
use crate::app::App;

/// The dashboard's page.
const PAGE: &str = include_str!("../../admin/index.html");
/// The dashboard's script.
const SCRIPT: &str = include_str!("../../admin/app.js");
/// The dashboard's style sheet.
const STYLE: &str = include_str!("../../admin/style.css");
/// The dashboard's icon.
const ICON: &str = include_str!("../../admin/icon.svg");

/// What the dashboard's files may load: their own script, style and API, nothing inline,
/// nothing from elsewhere, and no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// Most stats streams open at once.
const MAX_STREAMS: usize = 8;

/// Time between two events of a stats stream.
const EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// `GET /admin` (`name` is `None`) and its files `app.js`, `style.css` and `icon.svg`:
/// 404 unless an admin key is configured, and refused outside the admin allow list.
pub(super) fn asset(app: &App, name: Option<&str>, ip: IpAddr) -> Response<Body> {
    if app.admin_key.is_none() {
        return not_found();
    }
    if let Err(refusal) = app.config.access.admit_admin(ip) {
        crate::access::refused(app, ip, refusal);
        return address_refused(refusal);
    }
    let (text, content_type) = match name {
        None | Some("index.html") => (PAGE, "text/html; charset=utf-8"),
        Some("app.js") => (SCRIPT, "text/javascript; charset=utf-8"),
        Some("style.css") => (STYLE, "text/css; charset=utf-8"),
        Some("icon.svg") => (ICON, "image/svg+xml"),
        Some(_) => return not_found(),
    };
    let mut resp = Response::new(Body::from(text));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    not_stored(headers);
    resp
}

/// `GET /api/admin/stream`: 404 unless an admin key is configured; with the key, a
/// `text/event-stream` of one [`StatsEvent`] a second until the client goes or the
/// server shuts down; 503 when [`MAX_STREAMS`] are open already.
pub(super) fn stream(app: &Arc<App>, req: &Request<Incoming>, ip: IpAddr) -> Response<Body> {
    if app.admin_key.is_none() {
        return not_found();
    }
    if let Err(resp) = require_admin(app, req, ip) {
        return resp;
    }
    if app.stopping() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the server is shutting down",
        );
    }
    let Some(events) = EventStream::open(app.clone()) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyConnections,
            format!("{MAX_STREAMS} stats streams are open already"),
        );
    };
    let mut resp = Response::new(Body::streamed(events));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // Proxies that buffer responses would hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    not_stored(headers);
    resp
}

/// Marks a response as never to be cached, nor its type guessed.
fn not_stored(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
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
struct EventStream {
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
    fn open(app: Arc<App>) -> Option<Self> {
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
        let messages_per_second = match self.previous {
            Some((at, relayed)) => {
                let seconds = now.duration_since(at).as_secs_f64();
                let delta = core.messages_relayed.saturating_sub(relayed) as f64;
                if seconds > 0.0 {
                    (delta / seconds * 10.0).round() / 10.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
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
