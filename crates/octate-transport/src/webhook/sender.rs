//! The delivery task: takes due deliveries off the queue and POSTs them, signed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use octate_core::{LifecycleEvent, NodeId};
use parking_lot::Mutex;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::backoff::{Backoff, parse_retry_after};
use super::config::WebhookConfig;
use super::event::EncodedEvent;
use super::queue::{Attempt, Delivery, Queue, Settled};
use super::signature::{SIGNATURE_HEADER, SigningKey};
use crate::app::App;
use crate::metrics::Metrics;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Most bytes of a receiver's answer that are read (and thrown away).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Webhook delivery of one server: the queue and what sends from it.
#[derive(Debug)]
pub(crate) struct Webhooks {
    queue: Mutex<Queue>,
    /// Rung when a delivery is queued or settled.
    wake: Notify,
    urls: Vec<Uri>,
    key: SigningKey,
    timeout: Duration,
    client: HttpClient,
    random: SystemRandom,
    /// Tells event ids apart should the random source ever fail.
    counter: AtomicU64,
    /// This node, on a cluster: named in every event it reports.
    node: Option<NodeId>,
}

impl Webhooks {
    /// Delivery as `config` says; `None` (with a warning) when no TLS client can be built.
    pub(crate) fn new(config: &WebhookConfig, node: Option<NodeId>) -> Option<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
        {
            Ok(builder) => builder,
            Err(err) => {
                warn!(%err, "webhooks are off: no TLS client");
                return None;
            }
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(config.max_in_flight)
            .build(connector);
        let backoff = Backoff {
            base: config.retry_base,
            max_attempts: config.max_attempts,
        };
        Some(Self {
            queue: Mutex::new(Queue::new(
                config.urls.len(),
                config.queue_capacity,
                config.max_in_flight,
                backoff,
            )),
            wake: Notify::new(),
            urls: config.urls.clone(),
            key: SigningKey::new(config.secret.as_bytes()),
            timeout: config.timeout,
            client,
            random: SystemRandom::new(),
            counter: AtomicU64::new(0),
            node,
        })
    }

    /// Queues an event for every URL without waiting; a full queue drops its oldest.
    pub(crate) fn enqueue(&self, event: &LifecycleEvent, metrics: &Metrics) {
        let encoded = Arc::new(EncodedEvent::encode(
            self.event_id(),
            event,
            self.node.as_ref(),
        ));
        let dropped = {
            let mut queue = self.queue.lock();
            let dropped = queue.push(&encoded);
            // Set while locked, so that the last value set is the queue's.
            metrics.set_webhook_queue_depth(queue.len());
            dropped
        };
        if dropped > 0 {
            metrics.webhook_settled("dropped", dropped as u64);
        }
        self.wake.notify_one();
    }

    /// `evt_` and 32 hex digits: 12 random bytes and a counter.
    fn event_id(&self) -> String {
        let mut bytes = [0u8; 12];
        if self.random.fill(&mut bytes).is_err() {
            warn!("no randomness for a webhook event id; the counter alone tells it apart");
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(36);
        id.push_str("evt_");
        for b in bytes.iter().chain(&n.to_be_bytes()[4..]) {
            id.push_str(&format!("{b:02x}"));
        }
        id
    }

    fn random_u64(&self) -> u64 {
        let mut bytes = [0u8; 8];
        // Jitter only: a failure leaves a wait of zero, still bounded by the attempts.
        let _ = self.random.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// Sends one attempt of a delivery and reports how it went.
    async fn attempt(&self, delivery: &Delivery, wall_secs: u64) -> Attempt {
        let Some(uri) = self.urls.get(delivery.url) else {
            return Attempt::Rejected;
        };
        let event = &delivery.event;
        let request = Request::post(uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("octate/", env!("CARGO_PKG_VERSION")))
            .header(SIGNATURE_HEADER, self.key.header(wall_secs, &event.body))
            .header("octate-event-id", event.id.as_str())
            .header("octate-event-type", event.kind)
            .header("octate-delivery-attempt", delivery.attempt)
            .body(Full::new(event.body.clone()));
        let request = match request {
            Ok(request) => request,
            Err(err) => {
                warn!(%err, "webhook request cannot be built");
                return Attempt::Rejected;
            }
        };
        let deadline = Instant::now() + self.timeout;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => {
                debug!(%err, url = %uri, "webhook delivery failed");
                return Attempt::Retry(None);
            }
            Err(_) => {
                debug!(url = %uri, "webhook delivery timed out");
                return Attempt::Retry(None);
            }
        };
        let attempt = classify(
            response.status(),
            response.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            SystemTime::now(),
        );
        // Read the answer (a bounded part of it, within the same deadline) so that its
        // connection can carry the next delivery; what it says does not matter.
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES);
        let _ = tokio::time::timeout_at(deadline, body.collect()).await;
        attempt
    }
}

/// How a receiver's answer (received at `now`) counts: 2xx delivered, 429 and 5xx retried,
/// anything else final.
fn classify(status: StatusCode, retry_after: Option<&[u8]>, now: SystemTime) -> Attempt {
    if status.is_success() {
        Attempt::Delivered
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        Attempt::Retry(retry_after.and_then(|v| parse_retry_after(v, now)))
    } else if status.is_server_error() {
        Attempt::Retry(None)
    } else {
        Attempt::Rejected
    }
}

/// Delivers queued events; after shutdown begins, returns once the queue is empty (the
/// caller bounds how long it waits for that).
pub(crate) async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let Some(hooks) = app.webhooks.as_ref() else {
        return;
    };
    let mut stopping = false;
    loop {
        let now = Instant::now();
        let (ready, due) = {
            let mut queue = hooks.queue.lock();
            let ready: Vec<Delivery> = std::iter::from_fn(|| queue.next_ready(now)).collect();
            (ready, queue.next_due())
        };
        for delivery in ready {
            tokio::spawn(deliver(app.clone(), delivery));
        }
        if stopping && hooks.queue.lock().len() == 0 {
            return;
        }
        let due = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = hooks.wake.notified() => {}
            () = due => {}
            _ = stop.wait_for(|s| *s), if !stopping => stopping = true,
        }
    }
}

/// One attempt of one delivery, settled on the queue.
async fn deliver(app: Arc<App>, delivery: Delivery) {
    let Some(hooks) = app.webhooks.as_ref() else {
        return;
    };
    let wall_secs = app.clock.wall_ms() / 1000;
    let attempt = hooks.attempt(&delivery, wall_secs).await;
    let (id, kind, number) = (
        delivery.event.id.clone(),
        delivery.event.kind,
        delivery.attempt,
    );
    let random = hooks.random_u64();
    let settled = {
        let mut queue = hooks.queue.lock();
        let settled = queue.settle(delivery, attempt, Instant::now(), random);
        app.metrics.set_webhook_queue_depth(queue.len());
        settled
    };
    let outcome = match settled {
        Settled::Delivered => Some("delivered"),
        Settled::Rejected => Some("rejected"),
        Settled::Failed => Some("failed"),
        Settled::Retrying => None,
    };
    if let Some(outcome) = outcome {
        app.metrics.webhook_settled(outcome, 1);
    } else {
        app.metrics.webhook_retried();
    }
    if matches!(settled, Settled::Rejected | Settled::Failed) {
        warn!(event = %id, kind, attempt = number, ?attempt, "webhook not delivered");
    }
    hooks.wake.notify_one();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_429_and_5xx_are_retried() {
        let cases = [
            (200, None, Attempt::Delivered),
            (204, None, Attempt::Delivered),
            (400, None, Attempt::Rejected),
            (404, None, Attempt::Rejected),
            (408, None, Attempt::Rejected),
            (301, None, Attempt::Rejected),
            (500, None, Attempt::Retry(None)),
            (503, Some(&b"3"[..]), Attempt::Retry(None)),
            (429, None, Attempt::Retry(None)),
            (
                429,
                Some(&b"3"[..]),
                Attempt::Retry(Some(Duration::from_secs(3))),
            ),
        ];
        for (status, retry_after, expected) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                classify(status, retry_after, SystemTime::UNIX_EPOCH),
                expected,
                "{status}"
            );
        }
    }
}
