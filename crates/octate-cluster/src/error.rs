//! What can go wrong when talking to the cluster's store.

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL does not parse.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// Redis could not be reached or answered with an error.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("Redis did not answer in time")]
    Timeout,
    /// Redis answered something this crate did not write.
    #[error("unexpected data in Redis: {0}")]
    Decode(String),
    /// The link was shut down.
    #[error("the cluster link is stopped")]
    Stopped,
}
