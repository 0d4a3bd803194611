//! `fanout`: rooms of S peers pass presence/cursor updates around.
//!
//! Each room carries W "batons". The peer holding one sends an update to the whole room
//! (Octate: one `cursor-update`, every eighth a `presence`, broadcast by the server;
//! matchbox, which has no broadcast: one `Signal` per other peer). The update names the
//! next peer, which sends the next update when it receives it. Every peer but the sender
//! receives every update: deliveries/s counts those, latency is send → each delivery.
//!
//! With `--ws-b` (or `--ws-list`), member j of every room connects to node j mod n, so
//! every update is delivered both on its sender's node and across nodes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::net::Ws;
use crate::proto::{self, Clock, Incoming, Name, Proto};
use crate::stats::{self, Window, r1};
use crate::{Ctx, Res};

#[derive(Debug, Default)]
struct PeerOut {
    deliveries: u64,
    sent: u64,
    latency_us: Vec<u32>,
    errors: u64,
    closed: bool,
}

pub(crate) async fn run(ctx: &Ctx) -> Res<Value> {
    let rooms = ctx.args.rooms.max(1);
    let size = ctx.args.room_size.max(2);
    let batons = ctx.args.window.clamp(1, size);
    let tag = &ctx.tag;
    let nodes = &ctx.nodes;
    let names: Vec<Name> = (0..rooms)
        .flat_map(|r| {
            (0..size).map(move |j| {
                Name::new(
                    format!("{tag}-f{r}u{j}"),
                    format!("{tag}-f{r}"),
                    nodes.place(j),
                )
            })
        })
        .collect();
    let (peers, connect_secs) =
        proto::join_named(&ctx.proto, &ctx.nodes, names, "the rooms").await?;
    eprintln!(
        "fanout: {} peers in {rooms} rooms of {size} connected in {:.2} s",
        peers.len(),
        connect_secs
    );

    let w = Window::after(Duration::from_millis(200), ctx);
    let clock = Clock(std::time::Instant::now());
    let mut tasks = tokio::task::JoinSet::new();
    let mut iter = peers.into_iter();
    for _ in 0..rooms {
        let members: Vec<_> = iter.by_ref().take(size).collect();
        let ids: Arc<Vec<String>> = Arc::new(members.iter().map(|m| m.id.clone()).collect());
        for (j, m) in members.into_iter().enumerate() {
            let starts = (0..batons).any(|b| b * size / batons == j);
            tasks.spawn(peer(
                m.ws,
                ctx.proto.clone(),
                ids.clone(),
                j,
                starts,
                w,
                clock,
            ));
        }
    }
    let cpu = w.measure_cpu(ctx.server_pids());
    let mut outs = Vec::with_capacity(rooms * size);
    while let Some(out) = tasks.join_next().await {
        outs.push(out?);
    }
    let cpu = cpu.await?;

    let secs = ctx.args.duration;
    let deliveries: u64 = outs.iter().map(|o| o.deliveries).sum();
    let sent: u64 = outs.iter().map(|o| o.sent).sum();
    let errors: u64 = outs.iter().map(|o| o.errors).sum();
    let closed = outs.iter().filter(|o| o.closed).count();
    let mut h = stats::histogram();
    for o in &outs {
        stats::record_all(&mut h, &o.latency_us);
    }
    let rate = deliveries as f64 / secs;
    let lat = stats::summary_ms(&h);
    eprintln!(
        "fanout {} {rooms}x{size} W={batons}: {rate:.0} deliveries/s, latency p50 {} ms p99 {} ms, \
         client messages sent {sent}, errors {errors}, closed {closed}, cpu {cpu}",
        ctx.args.target.as_str(),
        lat["p50_ms"],
        lat["p99_ms"],
    );
    Ok(ctx.result_line(
        json!({
            "rooms": rooms,
            "room_size": size,
            "batons_per_room": batons,
            "duration_s": secs,
            "warmup_s": ctx.args.warmup,
        }),
        json!({
            "deliveries_per_sec": r1(rate),
            "server_cpu_us_per_op": stats::server_us_per_op(&cpu, rate),
            "deliveries": deliveries,
            "client_messages_sent": sent,
            "latency": lat,
            "errors": errors,
            "closed_early": closed,
            "cpu": cpu,
        }),
    ))
}

/// The messages one update takes: one broadcast (Octate) or one signal per other peer (matchbox).
fn update_messages(
    proto: &Proto,
    ids: &[String],
    me: usize,
    next: usize,
    hop: u64,
    t: u64,
) -> Vec<String> {
    match proto {
        Proto::Octate(_) => {
            let text = if hop.is_multiple_of(8) {
                format!(r#"{{"type":"presence","data":{{"status":"active","n":{next},"t":{t}}}}}"#)
            } else {
                let (line, column) = (hop % 500, hop % 80);
                format!(
                    r#"{{"type":"cursor-update","data":{{"line":{line},"column":{column},"n":{next},"t":{t}}}}}"#
                )
            };
            vec![text]
        }
        Proto::Matchbox => {
            let body = if hop.is_multiple_of(8) {
                format!(r#"{{"presence":{{"status":"active","n":{next},"t":{t}}}}}"#)
            } else {
                let (line, column) = (hop % 500, hop % 80);
                format!(r#"{{"cursor":{{"line":{line},"column":{column},"n":{next},"t":{t}}}}}"#)
            };
            ids.iter()
                .enumerate()
                .filter(|(j, _)| *j != me)
                .map(|(_, id)| format!(r#"{{"Signal":{{"receiver":"{id}","data":{body}}}}}"#))
                .collect()
        }
    }
}

async fn send_update(
    ws: &mut Ws,
    proto: &Proto,
    ids: &[String],
    me: usize,
    out: &mut PeerOut,
    clock: Clock,
) -> Res<()> {
    let next = (me + 1) % ids.len();
    // Queue every message of the update, then write them out together.
    for text in update_messages(proto, ids, me, next, out.sent, clock.us()) {
        ws.feed(Message::text(text)).await?;
    }
    ws.flush().await?;
    out.sent += 1;
    Ok(())
}

async fn peer(
    mut ws: Ws,
    proto: Arc<Proto>,
    ids: Arc<Vec<String>>,
    me: usize,
    starts: bool,
    w: Window,
    clock: Clock,
) -> PeerOut {
    let mut out = PeerOut::default();
    tokio::time::sleep_until(w.start).await;
    if starts
        && send_update(&mut ws, &proto, &ids, me, &mut out, clock)
            .await
            .is_err()
    {
        out.closed = true;
        return out;
    }
    let stop = w.until + Duration::from_millis(300);
    loop {
        let Ok(msg) = tokio::time::timeout_at(stop, ws.next()).await else {
            break;
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                out.closed = true;
                return out;
            }
            Some(Ok(_)) => continue,
        };
        match proto.classify(text.as_str()) {
            Incoming::Signal | Incoming::Update => {
                let now = Instant::now();
                let text = text.as_str();
                if w.contains(now) {
                    out.deliveries += 1;
                    if let Some(t) = proto::last_u64(text, "\"t\":") {
                        let lat = clock.us().saturating_sub(t);
                        out.latency_us.push(u32::try_from(lat).unwrap_or(u32::MAX));
                    }
                }
                let mine = proto::last_u64(text, "\"n\":") == Some(me as u64);
                if mine
                    && now < w.until
                    && send_update(&mut ws, &proto, &ids, me, &mut out, clock)
                        .await
                        .is_err()
                {
                    out.closed = true;
                    return out;
                }
            }
            Incoming::Heartbeat => {
                if let Some(pong) = proto.pong() {
                    let _ = proto::send_text(&mut ws, pong.to_owned()).await;
                }
            }
            Incoming::Error => out.errors += 1,
            Incoming::Other => {}
        }
    }
    proto::close(ws, Duration::from_secs(2)).await;
    out
}
