//! `idle`: N authenticated peers in rooms of two, held; the server's RSS before and after.
//!
//! With `--shards k` the peers are split over k child processes (this same binary with
//! `--shard i/k`), so no process holds more sockets than the open-file limit allows. The
//! parent and its children talk over pipes: a child prints `MINTED` once its tokens are
//! ready and waits for `start`; prints `READY` once its peers are connected and waits for
//! `release`; then closes everything and prints its result as one JSON line.
//!
//! With several nodes (`--ws-b`, `--ws-list`) peer p connects to node p mod n, so the
//! two peers of a room are on different nodes; children get the same node lists. With
//! `--server-pids` each node's RSS is reported with the peers it held, besides the total.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::net::Ws;
use crate::nodes::Nodes;
use crate::proto::{self, Incoming, Name, Proto, Spec};
use crate::stats::{self, r1, r2, sum_all};
use crate::{Ctx, Res, ShardSpec, Target};

/// How long a child waits for the parent before giving up on its own.
const PARENT_WAIT: Duration = Duration::from_secs(180);

pub(crate) async fn run(ctx: &Ctx) -> Res<Value> {
    if let Some(shard) = ctx.args.shard {
        return child(ctx, shard).await;
    }
    if ctx.args.shards > 1 {
        return parent(ctx).await;
    }
    let before = Memory::sample(ctx).await;
    let specs = shard_specs(ctx, ShardSpec { index: 0, count: 1 }).await?;
    let started = Instant::now();
    let conn = connect(ctx, specs).await;
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "idle: {} connected, {} failed in {connect_secs:.2} s; holding {} s",
        conn.held.len(),
        conn.failed,
        ctx.args.hold
    );
    let (stop, dropped) = hold(conn.held, ctx.proto.clone());
    tokio::time::sleep(Duration::from_secs_f64(ctx.args.hold)).await;
    let during = Memory::sample(ctx).await;
    let closed = release(stop).await;
    let mut join = stats::histogram();
    stats::record_all(&mut join, &conn.join_us);
    Ok(report(
        ctx,
        &Outcome {
            connected: conn.connected,
            failed: conn.failed,
            errors: conn.errors,
            per_node: conn.per_node,
            connect_secs,
            join,
            dropped: dropped.load(Ordering::Relaxed),
            closed,
        },
        &before,
        &during,
    ))
}

/// The servers' RSS, their heap (Octate's `/stats`), and the kernel's TCP memory at one moment.
#[derive(Debug, Clone)]
struct Memory {
    /// RSS of each server process (`Ctx::server_pids`, one per node with `--server-pids`).
    rss: Vec<Option<u64>>,
    /// Heap of each node whose HTTP address is known.
    heap: Vec<Option<u64>>,
    tcp_kernel: Option<u64>,
}

impl Memory {
    async fn sample(ctx: &Ctx) -> Self {
        let mut heap = Vec::with_capacity(ctx.nodes.len());
        for node in ctx.nodes.iter() {
            heap.push(match (ctx.args.target, node.http) {
                (Target::Octate, Some(http)) => octate_heap(http).await,
                _ => None,
            });
        }
        Self {
            rss: ctx
                .server_pids()
                .into_iter()
                .map(stats::rss_bytes)
                .collect(),
            heap,
            tcp_kernel: stats::tcp_kernel_bytes(),
        }
    }
}

/// Bytes allocated on Octate's heap (`memory.heapUsedBytes` of `GET /stats`), if it answers.
async fn octate_heap(http: std::net::SocketAddr) -> Option<u64> {
    let get = octate_client::http_request(http, "GET", "/stats", &[], None);
    let resp = tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .ok()?
        .ok()?;
    let v: Value = resp.json().ok()?;
    v["memory"]["heapUsedBytes"].as_u64()
}

/// What the peers of a run saw, over every shard.
struct Outcome {
    connected: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    /// Peers connected on each node, in node order.
    per_node: Vec<u64>,
    connect_secs: f64,
    join: hdrhistogram::Histogram<u64>,
    dropped: u64,
    closed: f64,
}

/// `(held - before) / peers`, rounded; null when a value is unknown or no peer was held.
fn per_peer(before: Option<u64>, held: Option<u64>, peers: u64) -> Value {
    match (before, held) {
        (Some(a), Some(b)) if peers > 0 => json!(r1((b as f64 - a as f64) / peers as f64)),
        _ => Value::Null,
    }
}

/// Each node's share: its URL, process, peers held, and its RSS and heap per peer (RSS
/// only with one pid per node). Empty with one node: the totals say it all.
fn per_node_report(nodes: &Nodes, peers: &[u64], before: &Memory, during: &Memory) -> Vec<Value> {
    if nodes.len() < 2 {
        return Vec::new();
    }
    let rss_known = nodes.have_pids();
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let held = peers.get(i).copied().unwrap_or(0);
            let at = |v: &[Option<u64>]| {
                if rss_known {
                    v.get(i).copied().flatten()
                } else {
                    None
                }
            };
            let (rss_before, rss_held) = (at(&before.rss), at(&during.rss));
            let heap = |m: &Memory| m.heap.get(i).copied().flatten();
            json!({
                "ws": node.ws,
                "pid": node.pid,
                "peers_held": held,
                "rss_before": rss_before,
                "rss_held": rss_held,
                "rss_per_peer_bytes": per_peer(rss_before, rss_held, held),
                "heap_before": heap(before),
                "heap_held": heap(during),
                "heap_per_peer_bytes": per_peer(heap(before), heap(during), held),
            })
        })
        .collect()
}

fn report(ctx: &Ctx, out: &Outcome, before: &Memory, during: &Memory) -> Value {
    let connected = out.connected;
    let (rss_before, rss_held) = (sum_all(&before.rss), sum_all(&during.rss));
    let rss_per_peer = per_peer(rss_before, rss_held, connected);
    let rate = connected as f64 / out.connect_secs.max(1e-9);
    let join = stats::summary_ms(&out.join);
    eprintln!(
        "idle {} N={}: connected {connected}, failed {}, {rate:.0} connect+auth/s, join p50 {} ms p99 {} ms, \
         server RSS {rss_before:?} -> {rss_held:?} bytes = {rss_per_peer} bytes/peer, dropped while held {}, errors {:?}",
        ctx.args.target.as_str(),
        ctx.args.peers,
        out.failed,
        join["p50_ms"],
        join["p99_ms"],
        out.dropped,
        out.errors,
    );
    let nodes = per_node_report(&ctx.nodes, &out.per_node, before, during);
    for n in &nodes {
        eprintln!(
            "idle   node {}: pid {}, peers held {}, RSS {} -> {} bytes = {} bytes/peer",
            n["ws"].as_str().unwrap_or("?"),
            n["pid"],
            n["peers_held"],
            n["rss_before"],
            n["rss_held"],
            n["rss_per_peer_bytes"],
        );
    }
    ctx.result_line(
        json!({
            "peers": ctx.args.peers,
            "shards": ctx.args.shards.max(1),
            "hold_s": ctx.args.hold,
            "concurrency": ctx.args.concurrency,
            "source_addrs": ctx.args.source_addrs,
            "authenticated": !ctx.args.no_auth,
        }),
        json!({
            "connected": connected,
            "failed": out.failed,
            "error_kinds": out.errors,
            "connect_s": r2(out.connect_secs),
            "connect_per_sec": r1(rate),
            "join": join,
            "server_rss_before": rss_before,
            "server_rss_held": rss_held,
            "rss_per_peer_bytes": rss_per_peer,
            "server_heap_before": sum_all(&before.heap),
            "server_heap_held": sum_all(&during.heap),
            "heap_per_peer_bytes": per_peer(sum_all(&before.heap), sum_all(&during.heap), connected),
            "kernel_tcp_per_peer_bytes": per_peer(before.tcp_kernel, during.tcp_kernel, connected),
            "dropped_while_held": out.dropped,
            "close_s": r2(out.closed),
            "per_node": nodes,
        }),
    )
}

/// This shard's peers: rooms `r` with `r % k == i`, both peers of each, tokens minted.
async fn shard_specs(ctx: &Ctx, shard: ShardSpec) -> Res<Vec<Spec>> {
    let names = shard_names(&ctx.tag, ctx.args.peers, shard, |p| ctx.nodes.place(p));
    let tokens = if ctx.args.no_auth {
        vec![None; names.len()]
    } else {
        ctx.proto.tokens(&names, &ctx.nodes).await?
    };
    Ok(proto::specs(names, tokens))
}

/// The names of shard `shard`'s peers out of `peers` in rooms of two: peer p is in room
/// p / 2 and connects to node `place(p)`, whichever shard holds it.
fn shard_names(
    tag: &str,
    peers: usize,
    shard: ShardSpec,
    place: impl Fn(usize) -> usize,
) -> Vec<Name> {
    (0..peers)
        .filter(|p| (p / 2) % shard.count == shard.index)
        .map(|p| {
            let side = if p % 2 == 0 { 'a' } else { 'b' };
            Name::new(
                format!("{tag}-i{}{side}", p / 2),
                format!("{tag}-i{}", p / 2),
                place(p),
            )
        })
        .collect()
}

struct Connected {
    held: Vec<Ws>,
    connected: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    join_us: Vec<u32>,
    /// Peers connected on each node.
    per_node: Vec<u64>,
}

async fn connect(ctx: &Ctx, specs: Vec<Spec>) -> Connected {
    let placed: Vec<usize> = specs.iter().map(|s| s.name.node).collect();
    let results = proto::join_many(&ctx.proto, &ctx.nodes, specs, ctx.args.concurrency).await;
    let mut out = Connected {
        held: Vec::with_capacity(results.len()),
        connected: 0,
        failed: 0,
        errors: BTreeMap::new(),
        join_us: Vec::new(),
        per_node: vec![0; ctx.nodes.len()],
    };
    for (r, node) in results.into_iter().zip(placed) {
        match r {
            Ok(j) => {
                out.connected += 1;
                if let Some(n) = out.per_node.get_mut(node) {
                    *n += 1;
                }
                out.join_us
                    .push(u32::try_from(j.took.as_micros()).unwrap_or(u32::MAX));
                out.held.push(j.ws);
            }
            Err(err) => {
                out.failed += 1;
                let mut kind = err;
                kind.truncate(80);
                *out.errors.entry(kind).or_default() += 1;
            }
        }
    }
    out
}

/// Keeps every connection read (heartbeats answered, pings ponged) until told to stop.
fn hold(held: Vec<Ws>, proto: Arc<Proto>) -> (Release, Arc<AtomicU64>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for mut ws in held {
        let mut stop = stop_rx.clone();
        let (proto, dropped) = (proto.clone(), dropped.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(text))) => {
                            if proto.classify(text.as_str()) == Incoming::Heartbeat
                                && let Some(pong) = proto.pong()
                            {
                                let _ = proto::send_text(&mut ws, pong.to_owned()).await;
                            }
                        }
                        Some(Ok(Message::Close(_)) | Err(_)) | None => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Some(Ok(_)) => {}
                    },
                }
            }
            proto::close(ws, Duration::from_secs(5)).await;
        });
    }
    (
        Release {
            stop: stop_tx,
            tasks,
        },
        dropped,
    )
}

struct Release {
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

/// Closes every held connection; returns how long it took, seconds.
async fn release(mut r: Release) -> f64 {
    let t = Instant::now();
    r.stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while r.tasks.join_next().await.is_some() {}
    })
    .await;
    r.tasks.abort_all();
    t.elapsed().as_secs_f64()
}

/// Waits for one line on stdin (from the parent), at most `PARENT_WAIT`.
async fn wait_parent(
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    what: &str,
) -> Res<()> {
    match tokio::time::timeout(PARENT_WAIT, lines.next_line()).await {
        Ok(Ok(Some(line))) if line.trim() == what => Ok(()),
        Ok(Ok(other)) => Err(format!("expected {what:?} from the parent, got {other:?}").into()),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Err(format!("no {what:?} from the parent in time").into()),
    }
}

async fn child(ctx: &Ctx, shard: ShardSpec) -> Res<Value> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let specs = shard_specs(ctx, shard).await?;
    println!("MINTED {}", specs.len());
    wait_parent(&mut stdin, "start").await?;
    let started = Instant::now();
    let conn = connect(ctx, specs).await;
    let secs = started.elapsed().as_secs_f64();
    println!("READY {} {}", conn.connected, conn.failed);
    let (stop, dropped) = hold(conn.held, ctx.proto.clone());
    let waited = wait_parent(&mut stdin, "release").await;
    let closed = release(stop).await;
    waited?;
    Ok(json!({
        "shard": shard.index,
        "connected": conn.connected,
        "connected_per_node": conn.per_node,
        "failed": conn.failed,
        "connect_s": secs,
        "errors": conn.errors,
        "join_us": conn.join_us,
        "dropped": dropped.load(Ordering::Relaxed),
        "close_s": closed,
    }))
}

struct Child {
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    /// The next line starting with `prefix`, within `wait`.
    async fn expect(&mut self, prefix: &str, wait: Duration) -> Res<String> {
        let deadline = Instant::now() + wait;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stdout.next_line())
                .await
                .map_err(|_| format!("shard: no {prefix:?} line in time"))??
                .ok_or_else(|| format!("shard exited before {prefix:?}"))?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
    }

    async fn say(&mut self, line: &str) -> Res<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }
}

async fn parent(ctx: &Ctx) -> Res<Value> {
    let k = ctx.args.shards;
    let exe = std::env::current_exe()?;
    // The children get this command line, plus their shard and the shared id prefix.
    let mut base: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--tag" || a == "--shard" {
            let _ = args.next();
        } else if !a.starts_with("--tag=") && !a.starts_with("--shard=") {
            base.push(a);
        }
    }
    let mut children = Vec::with_capacity(k);
    for i in 0..k {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(&base)
            .arg(format!("--shard={i}/{k}"))
            .arg(format!("--tag={}", ctx.tag))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut proc = cmd.spawn()?;
        let stdin = proc.stdin.take().ok_or("child stdin")?;
        let stdout = BufReader::new(proc.stdout.take().ok_or("child stdout")?).lines();
        children.push(Child {
            proc,
            stdin,
            stdout,
        });
    }
    for c in &mut children {
        c.expect("MINTED", Duration::from_secs(120)).await?;
    }
    let before = Memory::sample(ctx).await;
    let started = Instant::now();
    for c in &mut children {
        c.say("start").await?;
    }
    for c in &mut children {
        c.expect("READY", Duration::from_secs(170)).await?;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "idle: {k} shards connected in {connect_secs:.2} s; holding {} s",
        ctx.args.hold
    );
    tokio::time::sleep(Duration::from_secs_f64(ctx.args.hold)).await;
    let during = Memory::sample(ctx).await;
    let release_started = Instant::now();
    for c in &mut children {
        c.say("release").await?;
    }
    let (mut connected, mut failed, mut dropped) = (0u64, 0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_node = vec![0u64; ctx.nodes.len()];
    let mut h = stats::histogram();
    for c in &mut children {
        let line = c.expect("{", Duration::from_secs(60)).await?;
        let v: Value = serde_json::from_str(&line)?;
        connected += v["connected"].as_u64().unwrap_or(0);
        add_per_node(&mut per_node, &v["connected_per_node"]);
        failed += v["failed"].as_u64().unwrap_or(0);
        dropped += v["dropped"].as_u64().unwrap_or(0);
        if let Some(errs) = v["errors"].as_object() {
            for (kind, n) in errs {
                *errors.entry(kind.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
        let samples: Vec<u32> = v["join_us"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| u32::try_from(x).unwrap_or(u32::MAX))
                    .collect()
            })
            .unwrap_or_default();
        stats::record_all(&mut h, &samples);
    }
    let closed = release_started.elapsed().as_secs_f64();
    for c in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(10), c.proc.wait()).await;
    }
    Ok(report(
        ctx,
        &Outcome {
            connected,
            failed,
            errors,
            per_node,
            connect_secs,
            join: h,
            dropped,
            closed,
        },
        &before,
        &during,
    ))
}

/// Adds a child's peers per node (a JSON array, node order) to the totals.
fn add_per_node(totals: &mut [u64], child: &Value) {
    if let Some(counts) = child.as_array() {
        for (t, n) in totals.iter_mut().zip(counts) {
            *t += n.as_u64().unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn every_room_is_split_across_nodes_and_shards_keep_the_placement() {
        let place = |p: usize| p % 3;
        let all = shard_names("t", 12, ShardSpec { index: 0, count: 1 }, place);
        assert_eq!(all.len(), 12);
        for pair in all.chunks(2) {
            assert_eq!(pair[0].room, pair[1].room);
            assert_ne!(pair[0].node, pair[1].node, "{pair:?}");
        }
        // Two shards hold the same peers on the same nodes between them, rooms whole.
        let mut sharded: Vec<Name> = (0..2)
            .flat_map(|i| shard_names("t", 12, ShardSpec { index: i, count: 2 }, place))
            .collect();
        sharded.sort_by(|a, b| a.user.cmp(&b.user));
        let mut expected = all;
        expected.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(sharded, expected);
    }

    fn memory(rss: Vec<Option<u64>>, heap: Vec<Option<u64>>) -> Memory {
        Memory {
            rss,
            heap,
            tcp_kernel: None,
        }
    }

    #[test]
    fn each_node_reports_its_own_rss_per_peer() {
        let args = crate::Args::try_parse_from([
            "octate-bench",
            "--scenario",
            "idle",
            "--ws-list",
            "ws://127.0.0.1:1/,ws://127.0.0.1:2/",
            "--server-pids",
            "101,102",
        ])
        .expect("args");
        let nodes = Nodes::from_args(&args, "ws://127.0.0.1:3001/").expect("nodes");
        let before = memory(vec![Some(1000), Some(2000)], vec![None, None]);
        let during = memory(vec![Some(11_000), Some(42_000)], vec![None, None]);
        let mut peers = vec![0u64; 2];
        add_per_node(&mut peers, &json!([4, 6]));
        add_per_node(&mut peers, &json!([6, 4]));
        assert_eq!(peers, [10, 10]);
        let per = per_node_report(&nodes, &peers, &before, &during);
        assert_eq!(per.len(), 2);
        assert_eq!(per[0]["pid"], 101);
        assert_eq!(per[0]["peers_held"], 10);
        assert_eq!(per[0]["rss_per_peer_bytes"], 1000.0);
        assert_eq!(per[1]["rss_per_peer_bytes"], 4000.0);
        assert_eq!(per[1]["ws"], "ws://127.0.0.1:2/");
        // The total is over every node.
        assert_eq!(sum_all(&during.rss), Some(53_000));
        assert_eq!(
            per_peer(sum_all(&before.rss), sum_all(&during.rss), 20),
            json!(2500.0)
        );
    }

    #[test]
    fn one_node_has_no_per_node_section() {
        let args =
            crate::Args::try_parse_from(["octate-bench", "--scenario", "idle"]).expect("args");
        let nodes = Nodes::from_args(&args, "ws://127.0.0.1:3001/").expect("nodes");
        let m = memory(vec![Some(1)], vec![None]);
        assert!(per_node_report(&nodes, &[5], &m, &m).is_empty());
    }
}
