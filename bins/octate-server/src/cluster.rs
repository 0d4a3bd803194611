//! Cluster settings and the wiring of a node to its cluster (only with `--redis-url`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use octate_cluster::{Cluster, ClusterConfig, NodeEvent};
use octate_core::{CoreConfig, NodeId};
use octate_transport::App;
use tracing::{info, warn};

/// How long a stopping node may take to announce that its peers are gone.
const ANNOUNCE_LIMIT: Duration = Duration::from_secs(2);

/// Settings of cluster mode; none of them matters without `--redis-url`.
#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    /// Redis URL (redis://host:port/db); turns clustering on. Every node shares it and the token secret.
    #[arg(long, env = "OCTATE_REDIS_URL")]
    pub(crate) redis_url: Option<String>,
    /// This node's id (1-64 of A-Z a-z 0-9 - _ .); default: random per start, so a restarted process is a new node.
    #[arg(long, env = "OCTATE_NODE_ID")]
    pub(crate) node_id: Option<String>,
    /// How often a node proves it is alive.
    #[arg(long, env = "OCTATE_CLUSTER_HEARTBEAT_MS", default_value_t = 1000)]
    pub(crate) cluster_heartbeat_ms: u64,
    /// Silence after which a node counts as dead and its peers are announced gone.
    #[arg(long, env = "OCTATE_CLUSTER_NODE_TTL_MS", default_value_t = 5000)]
    pub(crate) cluster_node_ttl_ms: u64,
    /// How often each node looks for dead nodes.
    #[arg(long, env = "OCTATE_CLUSTER_REAP_INTERVAL_MS", default_value_t = 1000)]
    pub(crate) cluster_reap_interval_ms: u64,
}

impl ClusterArgs {
    /// The node id to use: the configured one, checked, or a new random one.
    pub(crate) fn node_id(&self) -> Result<Option<NodeId>, String> {
        if self.redis_url.is_none() {
            return Ok(None);
        }
        let id = match &self.node_id {
            Some(id) => id.clone(),
            None => random_node_id()?,
        };
        NodeId::new(&id)
            .map(Some)
            .map_err(|e| format!("OCTATE_NODE_ID: {e}"))
    }

    /// Checks the timings together.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.redis_url.is_none() {
            return Ok(());
        }
        if self.cluster_heartbeat_ms == 0 || self.cluster_reap_interval_ms == 0 {
            return Err("cluster heartbeat and reap intervals must be above 0".into());
        }
        if self.cluster_node_ttl_ms < 2 * self.cluster_heartbeat_ms {
            return Err(
                "OCTATE_CLUSTER_NODE_TTL_MS must be at least twice the heartbeat interval".into(),
            );
        }
        Ok(())
    }
}

fn random_node_id() -> Result<String, String> {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no randomness for a node id".to_owned())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Connects a clustered app to Redis and attaches the link; returns the cluster handle.
pub(crate) async fn join(
    args: &ClusterArgs,
    node: NodeId,
    core: &CoreConfig,
    app: &Arc<App>,
) -> Result<Cluster, String> {
    let Some(url) = args.redis_url.clone() else {
        return Err("no Redis URL".into());
    };
    let mut config = ClusterConfig::new(url, node.clone()).with_limits_of(core);
    config.heartbeat_interval = Duration::from_millis(args.cluster_heartbeat_ms);
    config.node_ttl = Duration::from_millis(args.cluster_node_ttl_ms);
    config.reap_interval = Duration::from_millis(args.cluster_reap_interval_ms);
    let events: Weak<App> = Arc::downgrade(app);
    let sink = Arc::new(move |event: NodeEvent| {
        let Some(app) = events.upgrade() else {
            return;
        };
        match event {
            NodeEvent::Core(event) => app.handle_cluster_event(event),
            NodeEvent::Revoked {
                token_id,
                expires_at,
            } => app.apply_revocation(&token_id, expires_at),
        }
    });
    let members: Weak<App> = Arc::downgrade(app);
    let local = Arc::new(move || {
        members
            .upgrade()
            .map(|app| app.local_members())
            .unwrap_or_default()
    });
    let cluster = Cluster::start(config, sink, local)
        .await
        .map_err(|e| format!("cluster: {e}"))?;
    match cluster.revoked_tokens().await {
        Ok(revoked) => {
            for (token_id, expires_at) in revoked {
                app.apply_revocation(&token_id, expires_at);
            }
        }
        Err(err) => warn!(%err, "cannot load revoked tokens from the cluster"),
    }
    app.attach_cluster(Arc::new(cluster.clone()));
    info!(node = %node, "joined the cluster");
    Ok(cluster)
}

/// Announces at once, bounded, that this node's peers are gone (graceful stop).
pub(crate) async fn leave(cluster: &Cluster) {
    if tokio::time::timeout(ANNOUNCE_LIMIT, cluster.shutdown())
        .await
        .is_err()
    {
        warn!("the cluster did not hear this node stop; its peers will be reaped");
    }
}
