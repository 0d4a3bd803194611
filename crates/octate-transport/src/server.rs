//! Accept loops, per-connection HTTP serving (over TCP or TLS), and graceful shutdown.
//!
//! A connection is checked against the address lists as soon as it is accepted, before
//! any byte is read; a TLS handshake then runs in the connection's own task, bounded by
//! the handshake timeout.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use octate_protocol::CloseCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::access;
use crate::app::App;
use crate::audit::{self, ConnectionLimit};
use crate::http::{Listener, route};
use crate::{TransportError, timers};

/// The sockets a server listens on.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP API (and WebSocket upgrades at `/ws`).
    pub http: TcpListener,
    /// The signaling port (WebSocket upgrades on any path), if separate.
    pub signaling: Option<TcpListener>,
}

/// Serves until `shutdown` completes, then closes every connection (WebSockets with 1001).
pub async fn serve(
    listeners: Listeners,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TransportError> {
    let timers = tokio::spawn(timers::run(app.clone(), app.stop.subscribe()));
    let webhooks = tokio::spawn(crate::webhook::run(app.clone(), app.stop.subscribe()));
    let mut accepts = vec![tokio::spawn(accept_loop(
        listeners.http,
        app.clone(),
        Listener::Http,
    ))];
    if let Some(signaling) = listeners.signaling {
        accepts.push(tokio::spawn(accept_loop(
            signaling,
            app.clone(),
            Listener::Signaling,
        )));
    }

    shutdown.await;
    info!("shutting down");
    // The core closes every authenticated connection with 1001 before any session
    // learns of the shutdown, so no session's own ending can tell others `peer-left`.
    app.drive(|core, now| core.handle_shutdown(now));
    app.stop.send_replace(true);
    for accept in accepts {
        let _ = accept.await;
    }
    app.registry.close_all(CloseCode::GoingAway);
    let drained = tokio::time::timeout(app.config.shutdown_grace, app.stop.closed()).await;
    if drained.is_err() {
        warn!("connections still open after the shutdown grace period; leaving them");
    }
    timers.abort();
    // Events of the last moments (peers that left, rooms that closed) still go out, for at
    // most another grace period; what is left then is dropped.
    let mut webhooks = webhooks;
    if tokio::time::timeout(app.config.shutdown_grace, &mut webhooks)
        .await
        .is_err()
    {
        warn!("webhook deliveries still queued after the shutdown grace period; dropping them");
        webhooks.abort();
    }
    Ok(())
}

/// Sockets kept for plain HTTP requests beyond the WebSocket connection limit.
const HTTP_HEADROOM: usize = 256;

/// The answer to a connection refused before any HTTP parsing.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 69\r\nconnection: close\r\n\r\n\
{\"error\":{\"code\":\"too-many-connections\",\"message\":\"server is full\"}}\n";

async fn accept_loop(listener: TcpListener, app: Arc<App>, kind: Listener) {
    let mut stop = app.stop.subscribe();
    // A spare descriptor: at the open-file limit, closing it lets us accept and refuse
    // one waiting client at once instead of leaving the whole backlog hanging.
    let mut reserve = open_reserve();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(pair) => pair,
            Err(err) if is_out_of_descriptors(&err) => {
                app.metrics.connections_refused.inc();
                drop(reserve.take());
                let next = tokio::time::timeout(Duration::from_millis(10), listener.accept()).await;
                if let Ok(Ok((tcp, remote))) = next {
                    audit::connection_refused(remote.ip(), ConnectionLimit::OutOfDescriptors);
                    refuse(&tcp);
                }
                reserve = open_reserve();
                if reserve.is_none() {
                    // Still at the limit: give sockets a moment to close.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            Err(err) => {
                debug!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        if let Err(refusal) = app.config.access.admit_peer(remote.ip()) {
            // Closed unread: a refused network learns nothing, not even the protocol.
            access::refused(&app, remote.ip(), refusal);
            drop(tcp);
            continue;
        }
        let open = app.http_sockets.load(Ordering::Relaxed) + app.ws_slots.load(Ordering::Relaxed);
        if open >= app.config.max_connections + HTTP_HEADROOM {
            app.metrics.connections_refused.inc();
            audit::connection_refused(remote.ip(), ConnectionLimit::ServerFull);
            refuse(&tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let stop = app.stop.subscribe();
        tokio::spawn(serve_socket(tcp, remote, app, kind, stop));
    }
}

/// Serves one accepted socket: HTTP on it, or on the TLS session it starts.
async fn serve_socket(
    tcp: TcpStream,
    remote: std::net::SocketAddr,
    app: Arc<App>,
    kind: Listener,
    mut stop: watch::Receiver<bool>,
) {
    let counted = HttpSocket::new(app.clone());
    let Some(tls) = app.config.tls.as_ref() else {
        return serve_connection(tcp, remote, app, kind, stop, counted).await;
    };
    let handshake = tokio::select! {
        handshake = tls.accept(tcp) => handshake,
        _ = stop.wait_for(|s| *s) => return,
    };
    match handshake {
        Ok(stream) => serve_connection(stream, remote, app, kind, stop, counted).await,
        Err(failure) => {
            app.metrics.tls_handshake_failed(failure.as_str());
            debug!(%remote, %failure, "no TLS session");
        }
    }
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// EMFILE or ENFILE (Linux numbering).
fn is_out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(23 | 24))
}

/// Best-effort 503 and close, without waiting on the client.
fn refuse(tcp: &TcpStream) {
    let _ = tcp.try_write(REFUSAL);
}

/// Counts a socket that is speaking HTTP until dropped.
struct HttpSocket(Arc<App>);

impl HttpSocket {
    fn new(app: Arc<App>) -> Self {
        app.http_sockets.fetch_add(1, Ordering::Relaxed);
        Self(app)
    }
}

impl Drop for HttpSocket {
    fn drop(&mut self) {
        self.0.http_sockets.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection<S>(
    stream: S,
    remote: std::net::SocketAddr,
    app: Arc<App>,
    kind: Listener,
    mut stop: watch::Receiver<bool>,
    _counted: HttpSocket,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let svc_app = app.clone();
    let peer = remote.ip();
    let svc = service_fn(move |req| route(req, svc_app.clone(), kind, peer));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    let conn = builder.serve_connection(io, svc).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let finished = tokio::select! {
        result = conn.as_mut() => Some(result),
        _ = stop.wait_for(|s| *s) => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            // Keep polling after the request to shut down, until in-flight requests finish.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        debug!(%remote, %err, "http connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).expect("json body");
        assert_eq!(json["error"]["code"], "too-many-connections");
    }
}
