//! `churn`: short sessions as fast as C workers can run them.
//!
//! Each worker owns a room holding one long-lived "anchor" peer. A session connects,
//! authenticates (Octate: a token minted before the run; matchbox: the room is the path),
//! sends one SDP offer to the anchor, and leaves (close handshake, then the server closes
//! TCP). Join latency is from the start of the TCP connect to `auth-ok` / `IdAssigned`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::net::{Dialer, Ws};
use crate::proto::{self, Incoming, Name, Proto};
use crate::stats::{self, Window, r1};
use crate::{Ctx, Res};

#[derive(Debug, Default)]
struct WorkerOut {
    sessions: u64,
    join_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    exhausted: bool,
}

pub(crate) async fn run(ctx: &Ctx) -> Res<Value> {
    if ctx.nodes.len() > 1 {
        return Err(
            "churn runs against one node: --ws-b and --ws-list are for idle, relay and fanout"
                .into(),
        );
    }
    let workers = ctx.args.concurrency.max(1);
    let per_worker = (ctx.args.max_sessions / workers).max(1);
    let tag = &ctx.tag;
    // Anchors first, then every session's (user, room), minted before the clock starts.
    let mut names = Vec::with_capacity(workers * (per_worker + 1));
    for w in 0..workers {
        names.push(Name::new(
            format!("{tag}-anchor{w}"),
            format!("{tag}-c{w}"),
            0,
        ));
    }
    for w in 0..workers {
        for k in 0..per_worker {
            names.push(Name::new(
                format!("{tag}-s{w}x{k}"),
                format!("{tag}-c{w}"),
                0,
            ));
        }
    }
    let minted = Instant::now();
    let mut tokens = ctx.proto.tokens(&names, &ctx.nodes).await?;
    if ctx.proto.minter().is_some() {
        eprintln!(
            "churn: {} tokens minted in {:.2} s",
            tokens.len(),
            minted.elapsed().as_secs_f64()
        );
    }
    let session_tokens = tokens.split_off(workers);
    names.truncate(workers);
    let anchor_specs = proto::specs(names, tokens);
    let mut anchors = Vec::with_capacity(workers);
    for j in proto::join_many(&ctx.proto, &ctx.nodes, anchor_specs, 32).await {
        anchors.push(j.map_err(|e| format!("connecting the anchors: {e}"))?);
    }

    let offer = format!(
        r#"{{"type":"offer","sdp":"{}"}}"#,
        proto::sdp_text(ctx.args.payload, "offer")
    );
    let offer: Arc<str> = offer.into();
    let w = Window::after(Duration::from_millis(100), ctx);
    let mut anchor_tasks = tokio::task::JoinSet::new();
    let mut worker_tasks = tokio::task::JoinSet::new();
    let mut session_tokens = session_tokens.into_iter();
    for (i, anchor) in anchors.into_iter().enumerate() {
        let tokens: Vec<Option<String>> = session_tokens.by_ref().take(per_worker).collect();
        let users: Vec<String> = (0..per_worker).map(|k| format!("{tag}-s{i}x{k}")).collect();
        let room = format!("{tag}-c{i}");
        let dialer = ctx.nodes.node(0).dialer.clone();
        let (proto, offer) = (ctx.proto.clone(), offer.clone());
        // The whole signal is the same for every session of a worker: built once, shared.
        let signal = Utf8Bytes::from(proto.signal(&anchor.id, "sdp-offer", &offer));
        worker_tasks.spawn(worker(proto, dialer, room, users, tokens, signal, w));
        anchor_tasks.spawn(anchor_loop(anchor.ws, ctx.proto.clone(), w));
    }
    let cpu = w.measure_cpu(ctx.server_pids());
    let mut outs = Vec::with_capacity(workers);
    while let Some(out) = worker_tasks.join_next().await {
        outs.push(out?);
    }
    let mut delivered = 0u64;
    while let Some(out) = anchor_tasks.join_next().await {
        delivered += out?;
    }
    let cpu = cpu.await?;

    let secs = ctx.args.duration;
    let sessions: u64 = outs.iter().map(|o| o.sessions).sum();
    let mut h = stats::histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for o in &outs {
        stats::record_all(&mut h, &o.join_us);
        for (k, v) in &o.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
    }
    let error_total: u64 = errors.values().sum();
    let exhausted = outs.iter().filter(|o| o.exhausted).count();
    let rate = sessions as f64 / secs;
    let join = stats::summary_ms(&h);
    eprintln!(
        "churn {} C={workers}: {rate:.0} sessions/s, join p50 {} ms p99 {} ms, errors {error_total} {errors:?}, \
         signals delivered {delivered}, workers out of tokens {exhausted}, cpu {cpu}",
        ctx.args.target.as_str(),
        join["p50_ms"],
        join["p99_ms"],
    );
    Ok(ctx.result_line(
        json!({
            "workers": workers,
            "duration_s": secs,
            "warmup_s": ctx.args.warmup,
            "offer_bytes": offer.len(),
        }),
        json!({
            "sessions_per_sec": r1(rate),
            "server_cpu_us_per_op": stats::server_us_per_op(&cpu, rate),
            "sessions": sessions,
            "join": join,
            "errors": error_total,
            "error_kinds": errors,
            "signals_delivered_in_window": delivered,
            "workers_out_of_tokens": exhausted,
            "cpu": cpu,
        }),
    ))
}

async fn worker(
    proto: Arc<Proto>,
    dialer: Arc<Dialer>,
    room: String,
    users: Vec<String>,
    tokens: Vec<Option<String>>,
    signal: Utf8Bytes,
    w: Window,
) -> WorkerOut {
    let mut out = WorkerOut::default();
    tokio::time::sleep_until(w.start).await;
    let mut k = 0;
    while Instant::now() < w.until {
        if k >= users.len() {
            out.exhausted = true;
            break;
        }
        let began = Instant::now();
        let result = session(
            &proto,
            &dialer,
            &room,
            &users[k],
            tokens[k].as_deref(),
            &signal,
        )
        .await;
        k += 1;
        let done = Instant::now();
        match result {
            Ok(join) => {
                if w.contains(done) {
                    out.sessions += 1;
                    let us = join.duration_since(began).as_micros();
                    out.join_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Err(err) => {
                let mut kind = err.to_string();
                kind.truncate(80);
                *out.errors.entry(kind).or_default() += 1;
                // Do not spin on a refusing server.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    out
}

/// One session, sending `signal` (the offer to the anchor); returns when it had joined.
async fn session(
    proto: &Proto,
    dialer: &Dialer,
    room: &str,
    user: &str,
    token: Option<&str>,
    signal: &Utf8Bytes,
) -> Res<Instant> {
    let joined = proto.join(dialer, room, user, token).await?;
    let at = Instant::now();
    let mut ws = joined.ws;
    proto::send_text(&mut ws, signal.clone()).await?;
    proto::close(ws, Duration::from_secs(2)).await;
    Ok(at)
}

/// Reads everything the anchor receives; returns the signals that arrived in the window.
async fn anchor_loop(mut ws: Ws, proto: Arc<Proto>, w: Window) -> u64 {
    let mut delivered = 0;
    let stop = w.until + Duration::from_millis(500);
    loop {
        let Ok(msg) = tokio::time::timeout_at(stop, ws.next()).await else {
            break;
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return delivered,
            Some(Ok(_)) => continue,
        };
        match proto.classify(text.as_str()) {
            Incoming::Signal if w.contains(Instant::now()) => delivered += 1,
            Incoming::Heartbeat => {
                if let Some(pong) = proto.pong() {
                    let _ = proto::send_text(&mut ws, pong.to_owned()).await;
                }
            }
            _ => {}
        }
    }
    proto::close(ws, Duration::from_secs(2)).await;
    delivered
}
