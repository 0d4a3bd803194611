//! Starts a real server on loopback for the tests in this folder.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use octate_auth::{KeyRing, TokenAuthority};
use octate_transport::{App, Listeners, RssProbe, TransportConfig, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The secret every test server signs with.
pub const SECRET: &[u8] = b"test-secret-0123456789abcdef-0123456789";

/// A running server and how to reach and stop it.
pub struct TestServer {
    pub http: SocketAddr,
    pub signaling: SocketAddr,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with the given configuration on 127.0.0.1, random ports.
    pub async fn start(config: TransportConfig) -> Self {
        let authority = TokenAuthority::new(KeyRing::new("k1", SECRET).unwrap());
        Self::start_with(config, authority).await
    }

    /// Starts a server with a token authority of the caller's.
    pub async fn start_with(config: TransportConfig, authority: TokenAuthority) -> Self {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let signaling = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http_addr, sig_addr) = (http.local_addr().unwrap(), signaling.local_addr().unwrap());
        let app = App::new(config, authority, Box::new(RssProbe));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let app = app.clone();
            async move {
                let listeners = Listeners {
                    http,
                    signaling: Some(signaling),
                };
                serve(listeners, app, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            }
        });
        Self {
            http: http_addr,
            signaling: sig_addr,
            app,
            stop: Some(tx),
            task,
        }
    }

    /// The signaling URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.signaling)
    }

    /// Token for `user` in `room`.
    pub async fn token(&self, user: &str, room: &str) -> String {
        let fetch = octate_client::fetch_token(self.http, user, room, None);
        tokio::time::timeout(peers::WAIT, fetch)
            .await
            .expect("token issued in time")
            .unwrap()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

/// A config with fast timers for tests.
pub fn fast_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config.core.heartbeat_interval = Duration::from_millis(200);
    config.core.cleanup_interval = Duration::from_millis(200);
    config
}

pub mod peers;

impl TestServer {
    /// Starts a server with [`fast_config`] changed by `tweak`.
    pub async fn start_tweaked(tweak: impl FnOnce(&mut TransportConfig)) -> Self {
        let mut config = fast_config();
        tweak(&mut config);
        Self::start(config).await
    }

    /// Authenticates `user` in `room` (token from the HTTP API) and asserts `auth-ok`.
    pub async fn join(&self, user: &str, room: &str) -> peers::Joined {
        let token = self.token(user, room).await;
        peers::join(&self.ws_url(), &token, user, None).await
    }
}
