//! `idle`: N authenticated peers in rooms of two, held; the server's RSS before and after.
//!
//! With `--shards k` the peers are split over k child processes (this same binary with
//! `--shard i/k`), so no process holds more sockets than the open-file limit allows. The
//! parent and its children talk over pipes: a child prints `MINTED` once its tokens are
//! ready and waits for `start`; prints `READY` once its peers are connected and waits for
//! `release`; then closes everything and prints its result as one JSON line.

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
use crate::proto::{self, Incoming, Proto, Spec};
use crate::stats::{self, r1, r2};
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
    let dropped = dropped.load(Ordering::Relaxed);
    let mut h = stats::histogram();
    stats::record_all(&mut h, &conn.join_us);
    Ok(report(
        ctx,
        conn.connected,
        conn.failed,
        &conn.errors,
        connect_secs,
        &h,
        before,
        during,
        dropped,
        closed,
    ))
}

/// The server's RSS, its heap (Octate's `/stats`), and the kernel's TCP memory at one moment.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: Option<u64>,
    heap: Option<u64>,
    tcp_kernel: Option<u64>,
}

impl Memory {
    async fn sample(ctx: &Ctx) -> Self {
        let heap = match ctx.args.target {
            Target::Octate => octate_heap(ctx).await,
            Target::Matchbox => None,
        };
        Self {
            rss: ctx.args.server_pid.and_then(stats::rss_bytes),
            heap,
            tcp_kernel: stats::tcp_kernel_bytes(),
        }
    }
}

/// Bytes allocated on Octate's heap (`memory.heapUsedBytes` of `GET /stats`), if it answers.
async fn octate_heap(ctx: &Ctx) -> Option<u64> {
    let get = octate_client::http_request(ctx.args.http, "GET", "/stats", &[], None);
    let resp = tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .ok()?
        .ok()?;
    let v: Value = resp.json().ok()?;
    v["memory"]["heapUsedBytes"].as_u64()
}

#[allow(clippy::too_many_arguments)]
fn report(
    ctx: &Ctx,
    connected: u64,
    failed: u64,
    errors: &BTreeMap<String, u64>,
    connect_secs: f64,
    join: &hdrhistogram::Histogram<u64>,
    before: Memory,
    during: Memory,
    dropped: u64,
    closed: f64,
) -> Value {
    let per_peer = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if connected > 0 => json!(r1((b as f64 - a as f64) / connected as f64)),
        _ => Value::Null,
    };
    let rss_per_peer = per_peer(before.rss, during.rss);
    let rate = connected as f64 / connect_secs.max(1e-9);
    let join = stats::summary_ms(join);
    eprintln!(
        "idle {} N={}: connected {connected}, failed {failed}, {rate:.0} connect+auth/s, join p50 {} ms p99 {} ms, \
         server RSS {:?} -> {:?} bytes = {rss_per_peer} bytes/peer, dropped while held {dropped}, errors {errors:?}",
        ctx.args.target.as_str(),
        ctx.args.peers,
        join["p50_ms"],
        join["p99_ms"],
        before.rss,
        during.rss,
    );
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
            "failed": failed,
            "error_kinds": errors,
            "connect_s": r2(connect_secs),
            "connect_per_sec": r1(rate),
            "join": join,
            "server_rss_before": before.rss,
            "server_rss_held": during.rss,
            "rss_per_peer_bytes": rss_per_peer,
            "server_heap_before": before.heap,
            "server_heap_held": during.heap,
            "heap_per_peer_bytes": per_peer(before.heap, during.heap),
            "kernel_tcp_per_peer_bytes": per_peer(before.tcp_kernel, during.tcp_kernel),
            "dropped_while_held": dropped,
            "close_s": r2(closed),
        }),
    )
}

/// This shard's peers: rooms `r` with `r % k == i`, both peers of each, tokens minted.
async fn shard_specs(ctx: &Ctx, shard: ShardSpec) -> Res<Vec<Spec>> {
    let n = ctx.args.peers;
    let tag = &ctx.tag;
    let names: Vec<(String, String)> = (0..n)
        .filter(|p| (p / 2) % shard.count == shard.index)
        .map(|p| {
            let side = if p % 2 == 0 { 'a' } else { 'b' };
            (
                format!("{tag}-i{}{side}", p / 2),
                format!("{tag}-i{}", p / 2),
            )
        })
        .collect();
    let tokens = if ctx.args.no_auth {
        vec![None; names.len()]
    } else {
        ctx.proto.tokens(&names).await?
    };
    Ok(names
        .into_iter()
        .zip(tokens)
        .map(|((user, room), token)| Spec { room, user, token })
        .collect())
}

struct Connected {
    held: Vec<Ws>,
    connected: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    join_us: Vec<u32>,
}

async fn connect(ctx: &Ctx, specs: Vec<Spec>) -> Connected {
    let results = proto::join_many(&ctx.proto, &ctx.dialer, specs, ctx.args.concurrency).await;
    let mut out = Connected {
        held: Vec::with_capacity(results.len()),
        connected: 0,
        failed: 0,
        errors: BTreeMap::new(),
        join_us: Vec::new(),
    };
    for r in results {
        match r {
            Ok(j) => {
                out.connected += 1;
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
    let mut h = stats::histogram();
    for c in &mut children {
        let line = c.expect("{", Duration::from_secs(60)).await?;
        let v: Value = serde_json::from_str(&line)?;
        connected += v["connected"].as_u64().unwrap_or(0);
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
        connected,
        failed,
        &errors,
        connect_secs,
        &h,
        before,
        during,
        dropped,
        closed,
    ))
}
