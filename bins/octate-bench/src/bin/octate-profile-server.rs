//! `octate-profile-server`: Octate's transport composed as `octate-server` composes it,
//! but with the system allocator (so valgrind's DHAT/massif see every allocation) and a
//! bounded lifetime (so a profiled run stops by itself and writes its profile).
//!
//! Loopback only. Environment: `PORT` (13000), `SIGNALING_PORT` (13001),
//! `OCTATE_TOKEN_SECRET` (required), `OCTATE_AUTH_TIMEOUT_MS` (10000),
//! `OCTATE_PROFILE_SECS` (how long to serve, default 60). The limits are the benchmark's:
//! no rate limit to speak of, no per-address cap, 64 peers per room.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use octate_auth::{KeyRing, TokenAuthority};
use octate_core::CoreConfig;
use octate_transport::{App, Listeners, RssProbe, TransportConfig, serve};
use tokio::net::TcpListener;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("OCTATE_TOKEN_SECRET").map_err(|_| "set OCTATE_TOKEN_SECRET")?;
    let authority = TokenAuthority::new(KeyRing::new("k1", secret.as_bytes())?);
    let config = TransportConfig {
        core: CoreConfig {
            max_peers_per_room: 64,
            max_rooms: 1_000_000,
            memory_warning_bytes: u64::MAX / 2,
            memory_critical_bytes: u64::MAX,
            ..CoreConfig::default()
        },
        auth_timeout: Duration::from_millis(env_u64("OCTATE_AUTH_TIMEOUT_MS", 10_000)),
        max_connections: 19_500,
        max_connections_per_ip: 0,
        messages_per_second: 1_000_000,
        message_burst: 1_000_000,
        ..TransportConfig::default()
    };
    let port = |name, default| u16::try_from(env_u64(name, default)).unwrap_or(0);
    let http = TcpListener::bind(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        port("PORT", 13_000),
    )))
    .await?;
    let signaling = TcpListener::bind(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        port("SIGNALING_PORT", 13_001),
    )))
    .await?;
    println!(
        "octate-profile-server listening http={} signaling={}",
        http.local_addr()?,
        signaling.local_addr()?
    );
    let app = App::new(config, authority, Box::new(RssProbe));
    let lifetime = Duration::from_secs(env_u64("OCTATE_PROFILE_SECS", 60));
    let shutdown = async move {
        tokio::select! {
            () = tokio::time::sleep(lifetime) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    serve(
        Listeners {
            http,
            signaling: Some(signaling),
        },
        app,
        shutdown,
    )
    .await?;
    Ok(())
}
