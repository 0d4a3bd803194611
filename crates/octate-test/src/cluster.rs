//! Nodes of a test cluster: real `octate-server` processes sharing a test's own Redis,
//! with fast heartbeats, and the resume steps the cluster tests share.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use octate_client::Client;
use octate_protocol::{ClientMessage, ErrorCode, ResumeTicket, ServerMessage};

use crate::binary::{RealServer, server_command};
use crate::peers::{self, expect_close, next};
use crate::redis::Redis;

/// The token secret every node of a test cluster shares.
pub const NODE_SECRET: &str = "cluster-test-secret-0123456789abcdef";

/// How long a test node's heartbeat lives: a node silent this long is dead.
pub const NODE_TTL: Duration = Duration::from_millis(1000);

/// One `octate-server` process of a test cluster; killed on drop.
pub struct ClusterNode {
    server: RealServer,
    /// The node's id (`OCTATE_NODE_ID`).
    pub id: String,
}

impl Deref for ClusterNode {
    type Target = RealServer;
    fn deref(&self) -> &RealServer {
        &self.server
    }
}

impl DerefMut for ClusterNode {
    fn deref_mut(&mut self) -> &mut RealServer {
        &mut self.server
    }
}

impl ClusterNode {
    /// Starts node `id` on `redis`: heartbeats every 100 ms, [`NODE_TTL`], reaps every
    /// 100 ms, and no message rate limit (cluster tests send bursts).
    pub fn start(redis: &Redis, id: &str) -> Self {
        Self::start_with(redis, id, &[])
    }

    /// [`ClusterNode::start`] with more environment variables.
    pub fn start_with(redis: &Redis, id: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = server_command();
        cmd.env("OCTATE_REDIS_URL", redis.url())
            .env("OCTATE_NODE_ID", id)
            .env("OCTATE_CLUSTER_HEARTBEAT_MS", "100")
            .env(
                "OCTATE_CLUSTER_NODE_TTL_MS",
                NODE_TTL.as_millis().to_string(),
            )
            .env("OCTATE_CLUSTER_REAP_INTERVAL_MS", "100")
            .env("OCTATE_MESSAGES_PER_SECOND", "10000")
            .env("OCTATE_MESSAGE_BURST", "10000")
            .envs(env.iter().copied());
        Self {
            server: RealServer::start_command(cmd, NODE_SECRET),
            id: id.to_owned(),
        }
    }

    /// Authenticates `user` in `room` on this node and asserts `auth-ok`.
    pub async fn join(&self, user: &str, room: &str) -> peers::Joined {
        let token = self.token(user, room).await;
        peers::join(&self.ws_url(), &token, user, None).await
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
    }
}

/// Joins `user` to `room` on `node` and keeps the resume ticket of its `auth-ok`.
pub async fn join_with_ticket(
    node: &RealServer,
    user: &str,
    room: &str,
) -> (peers::Joined, ResumeTicket) {
    let token = node.token(user, room).await;
    let (client, text) = peers::auth_raw(&node.ws_url(), &token, None).await;
    let ticket = match ServerMessage::decode(text.as_bytes()) {
        Ok(ServerMessage::AuthOk {
            resume: Some(ticket),
            ..
        }) => ticket,
        other => panic!("{user}: expected auth-ok with a ticket, got {other:?}"),
    };
    (peers::joined_from(client, &text, user), ticket)
}

/// Opens a connection to `node` and sends `resume` with `ticket`; returns the answer.
pub async fn resume_on(node: &RealServer, ticket: &ResumeTicket) -> (Client, ServerMessage) {
    let mut client = peers::connect(&node.ws_url()).await;
    client
        .send(&ClientMessage::Resume {
            session_id: ticket.session_id.clone(),
            resume_token: ticket.resume_token.clone(),
        })
        .await
        .unwrap();
    let answer = next(&mut client, "resuming").await;
    (client, answer)
}

/// `answer` is `resume-failed`, and the connection is closed with 4001.
pub async fn expect_resume_failed(client: &mut Client, answer: &ServerMessage, who: &str) {
    match answer {
        ServerMessage::Error {
            code: ErrorCode::ResumeFailed,
            ..
        } => {}
        other => panic!("{who}: expected resume-failed, got {}", peers::brief(other)),
    }
    expect_close(client, who, 4001).await;
}
