//! Prometheus metrics: counters bumped on the hot path without locks, gauges set at scrape.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use octate_protocol::ErrorCode;
use parking_lot::Mutex;

use crate::ClusterStats;

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
    /// Sessions taken over by a `resume`.
    sessions_resumed: Counter,
    /// Connections and requests refused by an address list, by list.
    address_refusals: Family<Labels, Counter>,
    /// TLS handshakes that failed or timed out, by reason.
    tls_handshake_failures: Family<Labels, Counter>,
    webhook_deliveries: Family<Labels, Counter>,
    webhook_retries: Counter,
    webhook_queue_depth: Gauge,
    suspended: Gauge,
    connections: Gauge,
    rooms: Gauge,
    peers: Gauge,
    heap_bytes: Gauge,
    resident_bytes: Gauge,
    cluster: ClusterMetrics,
}

/// The cluster section: zero on a single node.
#[derive(Debug, Default)]
struct ClusterMetrics {
    nodes_alive: Gauge,
    connected: Gauge,
    degraded: Gauge,
    messages_in: Counter,
    messages_out: Counter,
    link_gaps: Counter,
    resyncs: Counter,
    bad_messages: Counter,
    dropped: Counter,
    /// The figures last exported, to advance the counters by the difference.
    last: Mutex<ClusterStats>,
}

impl ClusterMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "cluster_nodes_alive",
            "Cluster nodes with a current heartbeat",
            self.nodes_alive.clone(),
        );
        r.register(
            "cluster_connected",
            "1 while the link to the cluster store is up",
            self.connected.clone(),
        );
        r.register(
            "cluster_degraded",
            "1 while joins are refused for a cluster outage",
            self.degraded.clone(),
        );
        r.register(
            "cluster_messages_in",
            "Messages received from other nodes",
            self.messages_in.clone(),
        );
        r.register(
            "cluster_messages_out",
            "Messages sent to other nodes",
            self.messages_out.clone(),
        );
        r.register(
            "cluster_link_gaps",
            "Gaps found in other nodes' message sequences",
            self.link_gaps.clone(),
        );
        r.register(
            "cluster_resyncs",
            "Rooms read again in full after a gap or an outage",
            self.resyncs.clone(),
        );
        r.register(
            "cluster_bad_messages",
            "Undecodable messages from the cluster store, dropped",
            self.bad_messages.clone(),
        );
        r.register(
            "cluster_dropped",
            "Messages for other nodes dropped during an outage",
            self.dropped.clone(),
        );
    }

    fn set(&self, now: &ClusterStats) {
        self.nodes_alive.set(to_i64(now.nodes_alive));
        self.connected.set(i64::from(now.connected));
        self.degraded.set(i64::from(now.degraded));
        let mut last = self.last.lock();
        let advance = |c: &Counter, new: u64, old: u64| {
            c.inc_by(new.saturating_sub(old));
        };
        advance(&self.messages_in, now.messages_in, last.messages_in);
        advance(&self.messages_out, now.messages_out, last.messages_out);
        advance(&self.link_gaps, now.link_gaps, last.link_gaps);
        advance(&self.resyncs, now.resyncs, last.resyncs);
        advance(&self.bad_messages, now.bad_messages, last.bad_messages);
        advance(&self.dropped, now.dropped, last.dropped);
        *last = now.clone();
    }
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
            sessions_resumed: Counter::default(),
            address_refusals: Family::default(),
            tls_handshake_failures: Family::default(),
            webhook_deliveries: Family::default(),
            webhook_retries: Counter::default(),
            webhook_queue_depth: Gauge::default(),
            suspended: Gauge::default(),
            connections: Gauge::default(),
            rooms: Gauge::default(),
            peers: Gauge::default(),
            heap_bytes: Gauge::default(),
            resident_bytes: Gauge::default(),
            cluster: ClusterMetrics::default(),
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
        r.register(
            "sessions_resumed",
            "Sessions taken over by a resume",
            metrics.sessions_resumed.clone(),
        );
        r.register(
            "peers_suspended",
            "Peers whose connection dropped, waiting to be resumed",
            metrics.suspended.clone(),
        );
        r.register(
            "address_refusals",
            "Connections and requests refused by an address list, by list",
            metrics.address_refusals.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by reason",
            metrics.tls_handshake_failures.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook deliveries settled, by outcome (delivered, rejected, failed, dropped)",
            metrics.webhook_deliveries.clone(),
        );
        r.register(
            "webhook_retries",
            "Webhook attempts that failed and will be tried again",
            metrics.webhook_retries.clone(),
        );
        r.register(
            "webhook_queue_depth",
            "Webhook deliveries waiting or in flight",
            metrics.webhook_queue_depth.clone(),
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
        metrics.cluster.register(&mut metrics.registry);
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

    /// Counts one session taken over by a `resume`.
    pub fn session_resumed(&self) {
        self.sessions_resumed.inc();
    }

    /// Counts one refusal by the address list `list` (`deny`, `allow` or `admin`).
    pub fn address_refused(&self, list: &'static str) {
        self.address_refusals.get_or_create(&[("list", list)]).inc();
    }

    /// Counts one TLS handshake that failed for `reason` (`timeout` or `error`).
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts webhook deliveries settled with `outcome`.
    pub fn webhook_settled(&self, outcome: &'static str, n: u64) {
        self.webhook_deliveries
            .get_or_create(&[("outcome", outcome)])
            .inc_by(n);
    }

    /// Counts one webhook attempt that will be retried.
    pub fn webhook_retried(&self) {
        self.webhook_retries.inc();
    }

    /// Sets how many webhook deliveries wait or are in flight.
    pub fn set_webhook_queue_depth(&self, depth: usize) {
        self.webhook_queue_depth.set(to_i64(depth as u64));
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
        self.suspended.set(to_i64(gauges.suspended as u64));
        self.heap_bytes.set(to_i64(gauges.heap_bytes));
        self.resident_bytes.set(to_i64(gauges.resident_bytes));
        if let Some(cluster) = &gauges.cluster {
            self.cluster.set(cluster);
        }
        let mut out = String::new();
        // Invariant: writing into a String cannot fail.
        encode(&mut out, &self.registry).expect("encoding into a String cannot fail");
        out
    }
}

/// Point-in-time values for the gauges.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Rooms in memory.
    pub rooms: usize,
    /// Peers in rooms.
    pub peers: usize,
    /// Peers whose connection dropped, waiting to be resumed.
    pub suspended: usize,
    /// Heap bytes allocated.
    pub heap_bytes: u64,
    /// Bytes the allocator holds.
    pub resident_bytes: u64,
    /// The cluster's figures, on a node of a cluster.
    pub cluster: Option<ClusterStats>,
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
            suspended: 1,
            heap_bytes: 1234,
            resident_bytes: 5678,
            cluster: None,
        });
        assert!(text.contains("octate_peers_suspended 1"), "{text}");
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
