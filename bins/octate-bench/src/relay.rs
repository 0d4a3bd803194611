//! `relay`: P pairs ping-pong an SDP offer/answer through the server, W in flight per pair.
//!
//! Peer A of each pair sends `sdp-offer`s stamped with the time; peer B answers each
//! with an `sdp-answer` of the same size carrying the stamp back. One round trip is two
//! relayed messages. Only answers received inside the measured window count.
//!
//! With `--ws-b`, A connects to the first node and B to the second, so every offer and
//! every answer crosses between nodes; with `--ws-list`, peers go round robin, A and B
//! of a pair always on different nodes. Placement happens before the clock starts.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Message;

use crate::net::Ws;
use crate::proto::{self, Clock, Incoming, Name, Proto};
use crate::stats::{self, Window, r1, r2};
use crate::{Ctx, Res};

/// What one initiator saw.
#[derive(Debug, Default)]
struct PairOut {
    round_trips: u64,
    rtt_us: Vec<u32>,
    errors: u64,
    closed: bool,
}

pub(crate) async fn run(ctx: &Ctx) -> Res<Value> {
    let pairs = ctx.args.pairs.max(1);
    let window = ctx.args.window.max(1);
    let names = pair_names(&ctx.tag, pairs, |p| ctx.nodes.place(p));
    let (peers, connect_secs) =
        proto::join_named(&ctx.proto, &ctx.nodes, names, "the pairs").await?;
    eprintln!(
        "relay: {} peers connected in {connect_secs:.2} s over {} node(s)",
        peers.len(),
        ctx.nodes.len()
    );

    let offer_prefix: Arc<str> = format!(
        r#"{{"type":"offer","sdp":"{}","seq":"#,
        proto::sdp_text(ctx.args.payload, "offer")
    )
    .into();
    let answer_prefix: Arc<str> = format!(
        r#"{{"type":"answer","sdp":"{}","seq":"#,
        proto::sdp_text(ctx.args.payload, "answer")
    )
    .into();
    let sample_len = ctx
        .proto
        .signal(
            "peer-id-of-typical-length",
            "sdp-offer",
            &format!("{offer_prefix}1,\"t\":123456789}}"),
        )
        .len();

    let w = Window::after(Duration::from_millis(100), ctx);
    let clock = Clock(std::time::Instant::now());
    let mut initiators = tokio::task::JoinSet::new();
    let mut responders = tokio::task::JoinSet::new();
    let mut iter = peers.into_iter();
    while let (Some(a), Some(b)) = (iter.next(), iter.next()) {
        let proto = ctx.proto.clone();
        let prefix = offer_prefix.clone();
        let b_id = b.id.clone();
        initiators.spawn(initiator(a.ws, proto, b_id, prefix, window, w, clock));
        let proto = ctx.proto.clone();
        let prefix = answer_prefix.clone();
        responders.spawn(responder(b.ws, proto, a.id, prefix, w));
    }
    let cpu = w.measure_cpu(ctx.server_pids());

    let mut outs = Vec::with_capacity(pairs);
    while let Some(out) = initiators.join_next().await {
        outs.push(out?);
    }
    let mut responder_errors = 0u64;
    while let Some(out) = responders.join_next().await {
        responder_errors += out?;
    }
    let cpu = cpu.await?;

    let secs = ctx.args.duration;
    let mut h = stats::histogram();
    for o in &outs {
        stats::record_all(&mut h, &o.rtt_us);
    }
    let counts: Vec<u64> = outs.iter().map(|o| o.round_trips).collect();
    let total: u64 = counts.iter().sum();
    let min = counts.iter().copied().min().unwrap_or(0);
    let max = counts.iter().copied().max().unwrap_or(0);
    let mean = total as f64 / counts.len().max(1) as f64;
    let starved = counts.iter().filter(|&&c| c == 0).count();
    let errors: u64 = outs.iter().map(|o| o.errors).sum::<u64>() + responder_errors;
    let closed = outs.iter().filter(|o| o.closed).count();
    let msgs_per_sec = 2.0 * total as f64 / secs;
    let rtt = stats::summary_ms(&h);
    eprintln!(
        "relay {} P={pairs} W={window}: {:.0} relayed msgs/s, RTT p50 {} ms p99 {} ms p99.9 {} ms, \
         per pair min {min} max {max} mean {mean:.1}, starved {starved}, errors {errors}, closed {closed}, cpu {cpu}",
        ctx.args.target.as_str(),
        msgs_per_sec,
        rtt["p50_ms"],
        rtt["p99_ms"],
        rtt["p999_ms"],
    );
    Ok(ctx.result_line(
        json!({
            "pairs": pairs,
            "window": window,
            "message_bytes": sample_len,
            "duration_s": secs,
            "warmup_s": ctx.args.warmup,
        }),
        json!({
            "relayed_msgs_per_sec": r1(msgs_per_sec),
            "server_cpu_us_per_op": stats::server_us_per_op(&cpu, msgs_per_sec),
            "round_trips": total,
            "rtt": rtt,
            "per_pair": {"min": min, "max": max, "mean": r1(mean), "starved": starved},
            "errors": errors,
            "closed_early": closed,
            "connect_s": r2(connect_secs),
            "cpu": cpu,
        }),
    ))
}

/// Peers `a{i}` and `b{i}` of every pair `i`, in room `r{i}`, A first; peer `p` of the
/// list (A of pair i is 2i, B is 2i + 1) connects to node `place(p)`.
fn pair_names(tag: &str, pairs: usize, place: impl Fn(usize) -> usize) -> Vec<Name> {
    (0..pairs)
        .flat_map(|i| {
            let room = format!("{tag}-r{i}");
            [
                Name::new(format!("{tag}-a{i}"), room.clone(), place(2 * i)),
                Name::new(format!("{tag}-b{i}"), room, place(2 * i + 1)),
            ]
        })
        .collect()
}

/// Builds the relayed messages of one direction of a pair: everything but the sequence
/// number and the stamp is fixed, so each message is one allocation and a few copies.
struct Stamped {
    /// The signal up to and including `"seq":`.
    head: String,
    /// What closes the body and the signal after the stamp.
    tail: String,
}

impl Stamped {
    /// Messages of `kind` to `peer` whose body starts with `prefix` (ending in `"seq":`).
    fn new(proto: &Proto, peer: &str, kind: &str, prefix: &str) -> Self {
        let mut head = proto.signal_head(peer, kind);
        head.push_str(prefix);
        let mut tail = String::from("}");
        tail.push_str(proto.signal_tail());
        Self { head, tail }
    }

    /// The same text as `proto.signal(peer, kind, &format!("{prefix}{seq},\"t\":{t}}}"))`.
    fn build(&self, seq: u64, t: u64) -> String {
        let mut text = String::with_capacity(self.head.len() + self.tail.len() + 48);
        text.push_str(&self.head);
        proto::push_u64(&mut text, seq);
        text.push_str(",\"t\":");
        proto::push_u64(&mut text, t);
        text.push_str(&self.tail);
        text
    }
}

/// The next message, or `None` once `deadline` has passed. Like `timeout_at`, a message
/// that is ready wins over the deadline; unlike it, the timer is registered only once
/// per loop instead of once per message.
async fn next_until(ws: &mut Ws, deadline: Pin<&mut Sleep>) -> Option<Option<WsResult>> {
    tokio::select! {
        biased;
        msg = ws.next() => Some(msg),
        () = deadline => None,
    }
}

/// One item of the WebSocket stream.
type WsResult = Result<Message, tokio_tungstenite::tungstenite::Error>;

async fn initiator(
    mut ws: Ws,
    proto: Arc<Proto>,
    peer: String,
    prefix: Arc<str>,
    window: usize,
    w: Window,
    clock: Clock,
) -> PairOut {
    let mut out = PairOut::default();
    let mut seq = 0u64;
    let offers = Stamped::new(&proto, &peer, "sdp-offer", &prefix);
    tokio::time::sleep_until(w.start).await;
    for _ in 0..window {
        seq += 1;
        if proto::send_text(&mut ws, offers.build(seq, clock.us()))
            .await
            .is_err()
        {
            out.closed = true;
            return out;
        }
    }
    let deadline = tokio::time::sleep_until(w.until);
    tokio::pin!(deadline);
    while let Some(msg) = next_until(&mut ws, deadline.as_mut()).await {
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                out.closed = true;
                return out;
            }
            Some(Ok(_)) => continue,
        };
        match proto.classify(text.as_str()) {
            Incoming::Signal => {
                let now = Instant::now();
                if w.contains(now)
                    && let Some(t) = proto::last_u64(text.as_str(), "\"t\":")
                {
                    out.round_trips += 1;
                    let rtt = clock.us_at(now.into_std()).saturating_sub(t);
                    out.rtt_us.push(u32::try_from(rtt).unwrap_or(u32::MAX));
                }
                if now < w.until {
                    seq += 1;
                    if proto::send_text(&mut ws, offers.build(seq, clock.us()))
                        .await
                        .is_err()
                    {
                        out.closed = true;
                        return out;
                    }
                }
            }
            Incoming::Heartbeat => {
                if let Some(pong) = proto.pong() {
                    let _ = proto::send_text(&mut ws, pong).await;
                }
            }
            Incoming::Error => out.errors += 1,
            Incoming::Update | Incoming::Other => {}
        }
    }
    proto::close(ws, Duration::from_secs(2)).await;
    out
}

/// Answers every offer with an answer of the same size carrying the offer's stamp; returns errors seen.
async fn responder(
    mut ws: Ws,
    proto: Arc<Proto>,
    peer: String,
    prefix: Arc<str>,
    w: Window,
) -> u64 {
    let mut errors = 0;
    let answers = Stamped::new(&proto, &peer, "sdp-answer", &prefix);
    let deadline = tokio::time::sleep_until(w.until + Duration::from_millis(500));
    tokio::pin!(deadline);
    while let Some(msg) = next_until(&mut ws, deadline.as_mut()).await {
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return errors,
            Some(Ok(_)) => continue,
        };
        match proto.classify(text.as_str()) {
            Incoming::Signal => {
                let t = proto::last_u64(text.as_str(), "\"t\":").unwrap_or(0);
                let seq = proto::last_u64(text.as_str(), "\"seq\":").unwrap_or(0);
                if proto::send_text(&mut ws, answers.build(seq, t))
                    .await
                    .is_err()
                {
                    return errors;
                }
            }
            Incoming::Heartbeat => {
                if let Some(pong) = proto.pong() {
                    let _ = proto::send_text(&mut ws, pong).await;
                }
            }
            // After the window, answers to an initiator that already left fail: not counted.
            Incoming::Error if Instant::now() < w.until => errors += 1,
            Incoming::Error | Incoming::Update | Incoming::Other => {}
        }
    }
    proto::close(ws, Duration::from_secs(2)).await;
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_two_nodes_every_initiator_is_on_the_first_and_every_responder_on_the_second() {
        let names = pair_names("t", 3, |p| p % 2);
        let nodes: Vec<(&str, usize)> = names.iter().map(|n| (n.user.as_str(), n.node)).collect();
        assert_eq!(
            nodes,
            [
                ("t-a0", 0),
                ("t-b0", 1),
                ("t-a1", 0),
                ("t-b1", 1),
                ("t-a2", 0),
                ("t-b2", 1)
            ]
        );
        // Both peers of a pair share its room; with one node nothing moves.
        assert!(names.chunks(2).all(|p| p[0].room == p[1].room));
        assert!(pair_names("t", 3, |_| 0).iter().all(|n| n.node == 0));
    }

    #[test]
    fn stamped_messages_match_the_formatted_ones() {
        let prefix = r#"{"type":"offer","sdp":"v=0","seq":"#;
        let proto = Proto::Matchbox;
        let built = Stamped::new(&proto, "peer-b", "sdp-offer", prefix).build(42, 1_234_567);
        let formatted = proto.signal(
            "peer-b",
            "sdp-offer",
            &format!("{prefix}42,\"t\":1234567}}"),
        );
        assert_eq!(built, formatted);
        assert_eq!(proto::last_u64(&built, "\"t\":"), Some(1_234_567));
        assert_eq!(proto::last_u64(&built, "\"seq\":"), Some(42));
        let mut digits = String::new();
        for n in [0, 7, 10, 999, u64::MAX] {
            digits.clear();
            proto::push_u64(&mut digits, n);
            assert_eq!(digits, n.to_string());
        }
    }
}
