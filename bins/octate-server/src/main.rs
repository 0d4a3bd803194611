//! `octate-server`: configuration, logging, signals, and composition of the Octate crates.

mod audit_log;
mod cluster;
mod config;
mod heap;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use octate_transport::{App, Listeners, Tls, serve};
use tokio::net::TcpListener;
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::audit_log::AuditLog;
use crate::config::{Config, LogFormat};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The tokio runtime for `threads` workers (0: one per CPU this process may run on).
///
/// One worker gets the current-thread scheduler: its single run queue serves ready
/// connections strictly in turn, where the multi-thread scheduler's bounded per-worker
/// queue lets some connections wait many times the median under overload.
fn runtime(threads: usize) -> tokio::runtime::Builder {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    }
}

fn main() -> ExitCode {
    // A missing .env file is normal; a malformed one is reported.
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("octate-server: .env: {err}");
        return ExitCode::from(2);
    }
    let config = Config::parse();
    let audit = match config.audit_log.as_deref().map(AuditLog::open).transpose() {
        Ok(audit) => audit,
        Err(err) => {
            eprintln!("octate-server: OCTATE_AUDIT_LOG: {err}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format, audit.as_ref());
    let built = match config.build() {
        Ok(built) => built,
        Err(message) => {
            eprintln!("octate-server: {message}");
            return ExitCode::from(2);
        }
    };
    for warning in &built.warnings {
        warn!("{warning}");
    }
    let runtime = match runtime(config.worker_threads).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("octate-server: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, built, audit)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            eprintln!("octate-server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, built: config::Built, audit: Option<AuditLog>) -> Result<(), String> {
    let http_addr = SocketAddr::new(config.host, config.port);
    let http = TcpListener::bind(http_addr)
        .await
        .map_err(|e| format!("bind {http_addr}: {e}"))?;
    let signaling = if config.no_signaling_port {
        None
    } else {
        let addr = SocketAddr::new(config.host, config.signaling_port);
        Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("bind {addr}: {e}"))?,
        )
    };
    let http_local = http.local_addr().map_err(|e| e.to_string())?;
    let signaling_local = signaling.as_ref().and_then(|l| l.local_addr().ok());
    config.cluster.validate()?;
    let core_config = built.transport.core.clone();
    let tls = built.transport.tls.clone();
    // Dropped on return, so the reloads stop with the server.
    let _reloads = spawn_reloads(tls.as_ref(), config.tls_reload_check_ms);
    let heap = Box::new(heap::JemallocProbe::new());
    let (app, cluster) = match config.cluster.node_id()? {
        None => (App::new(built.transport, built.authority, heap), None),
        Some(node) => {
            let app = App::new_clustered(built.transport, built.authority, heap, node.clone());
            let cluster = cluster::join(&config.cluster, node, &core_config, &app).await?;
            (app, Some(cluster))
        }
    };
    #[cfg(unix)]
    if let Some(audit) = audit {
        reopen_audit_log_on_hangup(audit)?;
    }
    // One machine-readable line on stdout, for scripts and tests that pass port 0.
    match signaling_local {
        Some(sig) => println!("octate-server listening http={http_local} signaling={sig}"),
        None => println!("octate-server listening http={http_local}"),
    }
    match signaling_local {
        Some(sig) => info!(http = %http_local, signaling = %sig, tls = tls.is_some(), "listening"),
        None => info!(
            http = %http_local,
            tls = tls.is_some(),
            "listening (signaling at /ws only)"
        ),
    }
    if let Some(dir) = &config.static_dir {
        info!(dir = %dir.display(), "serving static files at /");
    }
    // A stopping node of a cluster first tells the others that its peers are gone.
    let stop = async {
        shutdown_signal().await;
        if let Some(cluster) = &cluster {
            cluster::leave(cluster).await;
        }
    };
    serve(Listeners { http, signaling }, app, stop)
        .await
        .map_err(|e| e.to_string())?;
    info!("stopped");
    Ok(())
}

/// Aborts its tasks when dropped.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Answers SIGHUP (never fatal, TLS or not) by reloading the certificate, and reloads it
/// every `check_ms` (0: never) when its files change.
fn spawn_reloads(tls: Option<&Tls>, check_ms: u64) -> Tasks {
    let mut tasks = Vec::new();
    if let Some(tls) = tls
        && check_ms > 0
    {
        let watched = tls.clone().watch(Duration::from_millis(check_ms));
        tasks.push(tokio::spawn(watched));
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                let tls = tls.cloned();
                tasks.push(tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        match &tls {
                            Some(tls) => tls.reload_logged("SIGHUP"),
                            None => info!("SIGHUP: no certificate to reload"),
                        }
                    }
                }));
            }
            Err(err) => {
                warn!(%err, "no SIGHUP handler: the certificate reloads only when its files change")
            }
        }
    }
    Tasks(tasks)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Reopens the audit file on every SIGHUP, so that logrotate can move it away.
///
/// Installed before the server listens: from then on a SIGHUP no longer ends the process.
#[cfg(unix)]
fn reopen_audit_log_on_hangup(audit: AuditLog) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups =
        signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let path = audit.path().display();
            match audit.reopen() {
                Ok(()) => info!(%path, "audit log reopened"),
                Err(err) => {
                    error!(%path, %err, "cannot reopen the audit log; still writing to the old file")
                }
            }
        }
    });
    Ok(())
}

/// Logs to stderr, filtered by `RUST_LOG`; with `audit`, the audit records also go to
/// that file, whatever `RUST_LOG` says.
fn init_logging(format: LogFormat, audit: Option<&AuditLog>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let console = match format {
        LogFormat::Text => console.boxed(),
        LogFormat::Json => console.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(console.with_filter(filter))
        .with(audit.map(AuditLog::layer))
        .init();
}
