//! Connections to Redis that this crate reconnects itself, with every call bounded in
//! time and the scripts loaded right after connecting.

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

use crate::ClusterError;
use crate::scripts::Scripts;

/// Runs a Redis call with a deadline.
pub(crate) async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(ClusterError::from),
        Err(_) => Err(ClusterError::Timeout),
    }
}

/// Opens a multiplexed connection and loads every script into Redis' cache.
pub(crate) async fn connect(
    client: &Client,
    scripts: &Scripts,
    limit: Duration,
) -> Result<MultiplexedConnection, ClusterError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(limit));
    let mut conn = bounded(
        limit,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    for script in scripts.all() {
        bounded(limit, script.load_async(&mut conn)).await?;
    }
    Ok(conn)
}

/// One shared connection for requests that need no ordering (heartbeats, reaping, reads,
/// HTTP requests); dropped after any failure and opened again by the next caller.
pub(crate) struct Control {
    current: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Control {
    pub(crate) fn new() -> Self {
        Self {
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection, opened if needed.
    pub(crate) async fn get(
        &self,
        client: &Client,
        scripts: &Scripts,
        limit: Duration,
    ) -> Result<MultiplexedConnection, ClusterError> {
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref() {
            return Ok(conn.clone());
        }
        let conn = connect(client, scripts, limit).await?;
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the connection after a failure that may have broken it.
    pub(crate) async fn reset(&self) {
        *self.current.lock().await = None;
    }
}

/// Whether an error means the connection (or Redis' script cache) must be renewed.
pub(crate) fn needs_reconnect(err: &ClusterError) -> bool {
    match err {
        ClusterError::Redis(e) => {
            e.is_io_error()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.is_unrecoverable_error()
                || e.code() == Some("NOSCRIPT")
        }
        ClusterError::Timeout => true,
        _ => false,
    }
}
