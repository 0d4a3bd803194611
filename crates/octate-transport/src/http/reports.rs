//! The monitoring endpoints: `/health`, `/stats`, `/info` and `/metrics`.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use octate_protocol::PROTOCOL_VERSION;
use octate_protocol::http::{
    HealthResponse, InfoResponse, MemoryReport, OperationStats, ServerStats, StatsResponse,
};

use super::body::Body;
use super::response::json;
use crate::app::App;
use crate::heap::rss_bytes;
use crate::metrics::Gauges;

fn memory_report(app: &App) -> MemoryReport {
    let sample = app.heap.sample();
    let mb = |b: u64| (b as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0;
    let critical = app.config.core.memory_critical_bytes.max(1);
    MemoryReport {
        heap_used: mb(sample.allocated),
        heap_total: mb(sample.resident),
        heap_used_bytes: sample.allocated,
        rss_bytes: rss_bytes(),
        heap_percent: ((sample.allocated as f64 / critical as f64) * 1000.0).round() / 10.0,
        level: app.memory_level().as_str().to_owned(),
    }
}

/// `GET /health`: 200 while running, 503 while shutting down.
pub(super) fn health(app: &App) -> Response<Body> {
    let (status, code) = if app.stopping() {
        ("shutting-down", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("ok", StatusCode::OK)
    };
    let body = HealthResponse {
        status: status.to_owned(),
        timestamp: app.clock.now_ms(),
        memory: memory_report(app),
    };
    json(code, &body)
}

/// `GET /stats`: counts of rooms, peers, connections and operations.
pub(super) fn stats(app: &App) -> Response<Body> {
    let core = app.with_core(|core| core.stats());
    let body = StatsResponse {
        server: ServerStats {
            uptime: app.uptime(),
            active_rooms: core.rooms,
            total_connections: app.registry.len(),
            peers: core.peers,
        },
        memory: memory_report(app),
        operations: OperationStats {
            messages_relayed: core.messages_relayed,
            rooms_created: core.rooms_created,
            rooms_closed: core.rooms_closed,
            peers_timed_out: core.peers_timed_out,
            auth_failures: app.metrics.auth_failures_total(),
            errors_sent: app.metrics.errors_total(),
            memory_cleanups: core.memory_cleanups,
            slow_consumers_closed: app.metrics.slow_consumers.get(),
        },
        cluster: app.cluster().map(|c| c.stats()),
    };
    json(StatusCode::OK, &body)
}

/// `GET /info`: name, version, protocol version and, on a cluster, the node id.
pub(super) fn info(app: &App) -> Response<Body> {
    let body = InfoResponse {
        name: "Octate P2P signaling server".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
        node_id: app.cluster().map(|c| c.node_id().to_string()),
    };
    json(StatusCode::OK, &body)
}

/// `GET /metrics`: Prometheus text.
pub(super) fn metrics(app: &App) -> Response<Body> {
    let core = app.with_core(|core| core.stats());
    let heap = app.heap.sample();
    let text = app.metrics.render(Gauges {
        connections: app.registry.len(),
        rooms: core.rooms,
        peers: core.peers,
        suspended: core.suspended,
        heap_bytes: heap.allocated,
        resident_bytes: heap.resident,
        cluster: app.cluster().map(|c| c.stats()),
    });
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
