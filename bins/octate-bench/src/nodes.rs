//! The server nodes under test: their addresses, their processes, and which node each
//! peer connects to.
//!
//! One node is the usual case (`--ws`). A cluster of `octate-server` processes sharing
//! rooms through Redis is measured with `--ws-b` (a second node: relay pairs and fanout
//! rooms are split across the two) or `--ws-list` (any number of nodes, peers spread
//! round robin). Placement is decided once, before any connection is made, so the hot
//! paths of the scenarios never look at it.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::net::{self, Dialer};
use crate::{Args, Res};

/// One server process (or one of its listeners) that peers connect to.
pub(crate) struct Node {
    /// The WebSocket URL peers of this node dial, as given.
    pub(crate) ws: String,
    /// Its HTTP address, when known: tokens fetched over HTTP, `GET /stats`.
    pub(crate) http: Option<SocketAddr>,
    /// Its process id, when given with `--server-pids`.
    pub(crate) pid: Option<u32>,
    /// Opens this node's WebSockets.
    pub(crate) dialer: Arc<Dialer>,
}

/// Every node of a run, in the order given; never empty.
pub(crate) struct Nodes(Vec<Node>);

impl Nodes {
    /// The nodes named on the command line: `--ws-list`, or `--ws` then `--ws-b`.
    /// `default_ws` is the target's usual URL, used when none is given.
    pub(crate) fn from_args(args: &Args, default_ws: &str) -> Res<Self> {
        net::require_loopback(args.http.ip())?;
        // (URL, HTTP address when known)
        let given: Vec<(String, Option<SocketAddr>)> = if args.ws_list.is_empty() {
            let first = args.ws.clone().unwrap_or_else(|| default_ws.to_owned());
            let mut v = vec![(first, Some(args.http))];
            if let Some(b) = &args.ws_b {
                v.push((b.clone(), args.http_b));
            }
            v
        } else {
            if !args.http_list.is_empty() && args.http_list.len() != args.ws_list.len() {
                return Err(format!(
                    "--http-list has {} addresses for {} --ws-list URLs: give one per node",
                    args.http_list.len(),
                    args.ws_list.len()
                )
                .into());
            }
            args.ws_list
                .iter()
                .enumerate()
                .map(|(i, url)| (url.clone(), args.http_list.get(i).copied()))
                .collect()
        };
        if !args.server_pids.is_empty() && args.server_pids.len() != given.len() {
            return Err(format!(
                "--server-pids has {} pids for {} nodes: give one per node, in node order",
                args.server_pids.len(),
                given.len()
            )
            .into());
        }
        let mut nodes = Vec::with_capacity(given.len());
        for (i, (ws, http)) in given.into_iter().enumerate() {
            if let Some(http) = http {
                net::require_loopback(http.ip())?;
            }
            let dialer = Arc::new(Dialer::new(&ws, args.source_addrs)?);
            nodes.push(Node {
                ws,
                http,
                pid: args.server_pids.get(i).copied(),
                dialer,
            });
        }
        Ok(Self(nodes))
    }

    /// How many nodes there are (at least one).
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Node `i` (placements from [`Nodes::place`] are always in range).
    pub(crate) fn node(&self, i: usize) -> &Node {
        &self.0[i % self.0.len()]
    }

    /// Every node, in order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Node> {
        self.0.iter()
    }

    /// The node of the `i`th peer of a run or of a room: round robin, so consecutive
    /// peers (the two of a pair, neighbours in a room) are on different nodes whenever
    /// there are two or more.
    pub(crate) fn place(&self, i: usize) -> usize {
        i % self.0.len()
    }

    /// Whether `--server-pids` gave one process per node.
    pub(crate) fn have_pids(&self) -> bool {
        self.0.iter().all(|n| n.pid.is_some())
    }

    /// What the JSON line records: the first URL, the second (null with one node), all.
    pub(crate) fn describe(&self) -> (Value, Value, Value) {
        let urls: Vec<&str> = self.0.iter().map(|n| n.ws.as_str()).collect();
        (json!(urls[0]), json!(urls.get(1)), json!(urls))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn nodes(cmd: &[&str]) -> Res<Nodes> {
        let argv = [&["octate-bench", "--scenario", "relay"], cmd].concat();
        Nodes::from_args(&Args::try_parse_from(argv)?, "ws://127.0.0.1:3001/")
    }

    #[test]
    fn ws_b_adds_a_second_node_and_without_it_there_is_one() {
        let one = nodes(&["--ws", "ws://127.0.0.1:4001/"]).expect("one node");
        assert_eq!(one.len(), 1);
        assert_eq!(one.describe().1, Value::Null);
        assert_eq!(
            one.node(0).http,
            Some("127.0.0.1:3000".parse().expect("addr"))
        );

        let two = nodes(&[
            "--ws",
            "ws://127.0.0.1:4001/",
            "--ws-b",
            "ws://127.0.0.1:5001/",
            "--http-b",
            "127.0.0.1:5000",
        ])
        .expect("two nodes");
        assert_eq!(two.len(), 2);
        let (ws, ws_b, all) = two.describe();
        assert_eq!(ws, "ws://127.0.0.1:4001/");
        assert_eq!(ws_b, "ws://127.0.0.1:5001/");
        assert_eq!(all, json!(["ws://127.0.0.1:4001/", "ws://127.0.0.1:5001/"]));
        assert_eq!(
            two.node(1).http,
            Some("127.0.0.1:5000".parse().expect("addr"))
        );
    }

    #[test]
    fn ws_list_gives_every_node_and_lists_must_agree() {
        let three = nodes(&[
            "--ws-list",
            "ws://127.0.0.1:1/,ws://127.0.0.1:2/,ws://127.0.0.1:3/",
            "--server-pids",
            "11,12,13",
        ])
        .expect("three nodes");
        assert_eq!(three.len(), 3);
        assert!(three.have_pids());
        assert_eq!(three.node(2).pid, Some(13));
        // No --http-list: no node's HTTP address is known (tokens fall back to --http).
        assert!(three.iter().all(|n| n.http.is_none()));

        let mismatched_http = nodes(&[
            "--ws-list",
            "ws://127.0.0.1:1/,ws://127.0.0.1:2/",
            "--http-list",
            "127.0.0.1:10",
        ]);
        assert!(mismatched_http.is_err());
        let mismatched_pids = nodes(&["--ws-b", "ws://127.0.0.1:2/", "--server-pids", "1"]);
        assert!(mismatched_pids.is_err());
        // --ws-list replaces --ws and --ws-b.
        assert!(
            nodes(&[
                "--ws",
                "ws://127.0.0.1:1/",
                "--ws-list",
                "ws://127.0.0.1:2/"
            ])
            .is_err()
        );
    }

    #[test]
    fn every_node_is_loopback() {
        assert!(nodes(&["--ws-b", "ws://10.0.0.2:3001/"]).is_err());
        assert!(nodes(&["--ws-b", "ws://127.0.0.1:2/", "--http-b", "10.0.0.2:3000"]).is_err());
        assert!(
            nodes(&[
                "--ws-list",
                "ws://127.0.0.1:1/",
                "--http-list",
                "192.168.0.1:3000"
            ])
            .is_err()
        );
    }

    #[test]
    fn consecutive_peers_land_on_different_nodes_and_nodes_share_peers_evenly() {
        for n in 1..=5 {
            let urls: Vec<String> = (1..=n).map(|p| format!("ws://127.0.0.1:{p}/")).collect();
            let nodes = nodes(&["--ws-list", &urls.join(",")]).expect("nodes");
            let mut per_node = vec![0usize; n];
            for p in 0..1000 {
                per_node[nodes.place(p)] += 1;
                if n >= 2 && p % 2 == 0 {
                    // The two peers of a room (or of a relay pair) are p and p + 1.
                    assert_ne!(nodes.place(p), nodes.place(p + 1), "n={n} p={p}");
                }
            }
            let (min, max) = (per_node.iter().min(), per_node.iter().max());
            assert!(
                max.zip(min).is_some_and(|(a, b)| a - b <= 1),
                "{per_node:?}"
            );
        }
    }
}
