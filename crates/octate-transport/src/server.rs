//! Accept loops, per-connection HTTP serving, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use octate_protocol::CloseCode;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::app::App;
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
    let mut accepts = vec![tokio::spawn(accept_loop(listeners.http, app.clone(), Listener::Http))];
    if let Some(signaling) = listeners.signaling {
        accepts.push(tokio::spawn(accept_loop(signaling, app.clone(), Listener::Signaling)));
    }

    shutdown.await;
    info!("shutting down");
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
    Ok(())
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, kind: Listener) {
    let mut stop = app.stop.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors (EMFILE) and the like: back off briefly
                // instead of spinning, and keep accepting when sockets free up.
                debug!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let stop = app.stop.subscribe();
        tokio::spawn(serve_connection(tcp, remote, app, kind, stop));
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    remote: std::net::SocketAddr,
    app: Arc<App>,
    kind: Listener,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(tcp);
    let svc_app = app.clone();
    let svc = service_fn(move |req| route(req, svc_app.clone(), kind));
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
