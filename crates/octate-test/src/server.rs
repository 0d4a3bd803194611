//! A real server started inside the test process on 127.0.0.1, random ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use octate_auth::TokenAuthority;
use octate_transport::{App, Listeners, RssProbe, TransportConfig, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::peers::{self, Joined, WAIT};
use crate::tokens;

pub use crate::tokens::SECRET;

/// A running server and how to reach and stop it.
pub struct TestServer {
    /// The HTTP API's address.
    pub http: SocketAddr,
    /// The signaling (WebSocket) address.
    pub signaling: SocketAddr,
    /// The server's shared state.
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    /// The task running `serve`.
    pub task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with the given configuration, signing with [`SECRET`].
    pub async fn start(config: TransportConfig) -> Self {
        Self::start_with(config, tokens::authority()).await
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

    /// Starts a server with [`fast_config`] changed by `tweak`.
    pub async fn start_tweaked(tweak: impl FnOnce(&mut TransportConfig)) -> Self {
        let mut config = fast_config();
        tweak(&mut config);
        Self::start(config).await
    }

    /// The signaling URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.signaling)
    }

    /// A token for `user` in `room` from the HTTP API.
    pub async fn token(&self, user: &str, room: &str) -> String {
        let fetch = octate_client::fetch_token(self.http, user, room, None);
        tokio::time::timeout(WAIT, fetch)
            .await
            .expect("token issued in time")
            .unwrap()
    }

    /// Authenticates `user` in `room` (token from the HTTP API) and asserts `auth-ok`.
    pub async fn join(&self, user: &str, room: &str) -> Joined {
        let token = self.token(user, room).await;
        peers::join(&self.ws_url(), &token, user, None).await
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

/// A config with fast timers for tests, and resume off: a dropped connection's peer
/// leaves at once (tests of resume turn it on with [`resume_config`]).
pub fn fast_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config.core.heartbeat_interval = Duration::from_millis(200);
    config.core.cleanup_interval = Duration::from_millis(200);
    config.core.resume_grace = Duration::ZERO;
    config
}

/// [`fast_config`] with resume on, for a grace of `grace`.
pub fn resume_config(grace: Duration) -> TransportConfig {
    let mut config = fast_config();
    config.core.resume_grace = grace;
    config
}
