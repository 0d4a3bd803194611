//! Prometheus metrics: counters bumped on the hot path without locks, gauges set at scrape.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use octate_protocol::ErrorCode;

type Labels = [(&'static str, &'static str); 1];

/// Message types counted when relayed.
const RELAYED: [&str; 5] = [
    "sdp-offer",
    "sdp-answer",
    "ice-candidate",
    "presence",
    "cursor-update",
];

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    relayed: Vec<Counter>,
    errors: Vec<Counter>,
    auth_failures: Vec<Counter>,
    /// WebSocket connections accepted since start.
    pub connections_opened: Counter,
    /// WebSocket connections refused at the connection limit.
    pub connections_refused: Counter,
    /// Connections closed because their outbound queue overflowed.
    pub slow_consumers: Counter,
    /// HTTP requests served.
    pub http_requests: Counter,
    connections: Gauge,
    rooms: Gauge,
    peers: Gauge,
    heap_bytes: Gauge,
    resident_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("octate");
        let relayed_family = Family::<Labels, Counter>::default();
        let relayed = RELAYED
            .iter()
            .map(|t| relayed_family.get_or_create(&[("type", t)]).clone())
            .collect();
        registry.register(
            "messages_relayed",
            "Messages delivered to a peer, by type",
            relayed_family,
        );

        let error_family = Family::<Labels, Counter>::default();
        let errors = ErrorCode::ALL
            .iter()
            .map(|c| error_family.get_or_create(&[("code", c.as_str())]).clone())
            .collect();
        registry.register("errors", "Errors sent to clients, by code", error_family);

        let auth_family = Family::<Labels, Counter>::default();
        let auth_failures = ErrorCode::ALL
            .iter()
            .map(|c| auth_family.get_or_create(&[("code", c.as_str())]).clone())
            .collect();
        registry.register(
            "auth_failures",
            "Failed authentications, by code",
            auth_family,
        );

        let metrics = Self {
            relayed,
            errors,
            auth_failures,
            connections_opened: Counter::default(),
            connections_refused: Counter::default(),
            slow_consumers: Counter::default(),
            http_requests: Counter::default(),
            connections: Gauge::default(),
            rooms: Gauge::default(),
            peers: Gauge::default(),
            heap_bytes: Gauge::default(),
            resident_bytes: Gauge::default(),
            registry,
        };
        let mut metrics = metrics;
        let r = &mut metrics.registry;
        r.register(
            "connections_opened",
            "WebSocket connections accepted",
            metrics.connections_opened.clone(),
        );
        r.register(
            "connections_refused",
            "WebSocket connections refused at the limit",
            metrics.connections_refused.clone(),
        );
        r.register(
            "slow_consumers_closed",
            "Connections closed for not reading",
            metrics.slow_consumers.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests served",
            metrics.http_requests.clone(),
        );
        r.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        r.register("rooms", "Rooms in memory", metrics.rooms.clone());
        r.register("peers", "Peers in rooms", metrics.peers.clone());
        r.register(
            "heap_bytes",
            "Heap bytes allocated",
            metrics.heap_bytes.clone(),
        );
        r.register(
            "heap_resident_bytes",
            "Bytes the allocator holds from the OS",
            metrics.resident_bytes.clone(),
        );
        metrics
    }

    /// Counts one message of `kind` delivered to `recipients` peers.
    pub fn relayed(&self, kind: &str, recipients: usize) {
        if let Some(i) = RELAYED.iter().position(|t| *t == kind) {
            self.relayed[i].inc_by(recipients as u64);
        }
    }

    /// Counts one error sent to a client.
    pub fn error_sent(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    /// Counts one failed authentication.
    pub fn auth_failed(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.auth_failures[i].inc();
        }
    }

    /// Total failed authentications.
    pub fn auth_failures_total(&self) -> u64 {
        self.auth_failures.iter().map(Counter::get).sum()
    }

    /// Total errors sent.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(Counter::get).sum()
    }

    /// Renders the registry in the Prometheus text format with fresh gauge values.
    pub fn render(&self, gauges: Gauges) -> String {
        self.connections.set(to_i64(gauges.connections as u64));
        self.rooms.set(to_i64(gauges.rooms as u64));
        self.peers.set(to_i64(gauges.peers as u64));
        self.heap_bytes.set(to_i64(gauges.heap_bytes));
        self.resident_bytes.set(to_i64(gauges.resident_bytes));
        let mut out = String::new();
        // Invariant: writing into a String cannot fail.
        encode(&mut out, &self.registry).expect("encoding into a String cannot fail");
        out
    }
}

/// Point-in-time values for the gauges.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Rooms in memory.
    pub rooms: usize,
    /// Peers in rooms.
    pub peers: usize,
    /// Heap bytes allocated.
    pub heap_bytes: u64,
    /// Bytes the allocator holds.
    pub resident_bytes: u64,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::new();
        m.relayed("sdp-offer", 1);
        m.relayed("presence", 3);
        m.error_sent(ErrorCode::PeerNotFound);
        m.auth_failed(ErrorCode::TokenExpired);
        let text = m.render(Gauges {
            connections: 2,
            rooms: 1,
            peers: 2,
            heap_bytes: 1234,
            resident_bytes: 5678,
        });
        assert!(
            text.contains("octate_messages_relayed_total{type=\"sdp-offer\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("octate_messages_relayed_total{type=\"presence\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("octate_errors_total{code=\"peer-not-found\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("octate_auth_failures_total{code=\"token-expired\"} 1"),
            "{text}"
        );
        assert!(text.contains("octate_connections 2"), "{text}");
        assert!(text.contains("octate_heap_bytes 1234"), "{text}");
        assert_eq!(m.auth_failures_total(), 1);
    }
}
