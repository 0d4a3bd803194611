//! The node's own subscriber loop: one connection subscribed to this node's inbox and
//! the control channel, pinged on a timer, reconnected with backoff on any failure (the
//! client library's automatic resubscription is not relied on).
//!
//! Going down reports `Degraded` once and holds membership events back; coming back
//! asks the supervisor for a recovery. Relay frames are checked for duplicates and gaps
//! per sending node; anything that does not decode is counted and dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use octate_core::{ClusterEvent, NodeId};
use octate_protocol::{RoomId, UserId};
use redis::Msg;
use redis::aio::{PubSubSink, PubSubStream};

use crate::config::Backoff;
use crate::conn::bounded;
use crate::state::{Counters, Shared, Trigger};
use crate::wire::{Inbound, RelayIn, RelayKind, payload_text};
use crate::{ClusterError, NodeEvent};

/// Most sending nodes whose sequence is tracked.
const MAX_LINKS: usize = 4096;

/// Opens the subscriber connection and subscribes to this node's channels.
pub(crate) async fn open(sh: &Shared) -> Result<(PubSubSink, PubSubStream), ClusterError> {
    let limit = sh.config.command_timeout;
    let pubsub = bounded(limit, sh.client.get_async_pubsub()).await?;
    let (mut sink, stream) = pubsub.split();
    let channels = [sh.inbox(sh.config.node_id.as_str()), sh.key("control")];
    bounded(limit, sink.subscribe(&channels)).await?;
    Ok((sink, stream))
}

/// Runs the loop for ever, starting with an open subscription.
pub(crate) async fn run(sh: Arc<Shared>, first: (PubSubSink, PubSubStream)) {
    let mut backoff = Backoff::new(&sh.config);
    let mut receiver = Receiver::default();
    let mut link = Some(first);
    loop {
        let opened = match link.take() {
            Some(open) => Ok(open),
            None => open(&sh).await,
        };
        match opened {
            Ok((sink, stream)) => {
                backoff.reset();
                up(&sh);
                serve(&sh, sink, stream, &mut receiver).await;
                down(&sh);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster subscriber cannot reconnect");
                down(&sh);
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

fn up(sh: &Shared) {
    let mut h = sh.health.lock();
    h.subscribed = true;
    h.last_pong = Instant::now();
    let recover = h.degraded || h.recovering;
    drop(h);
    if recover {
        tracing::info!(node = %sh.config.node_id, "cluster subscriber reconnected");
        sh.trigger(Trigger::Recover);
    }
}

fn down(sh: &Shared) {
    let mut h = sh.health.lock();
    if h.subscribed {
        h.outage += 1;
    }
    h.subscribed = false;
    h.recovering = true;
    h.hold_heartbeat = true;
    let report = !h.degraded;
    h.degraded = true;
    drop(h);
    if report {
        tracing::warn!(node = %sh.config.node_id, "cluster link down: joins are refused");
        sh.emit(NodeEvent::Core(ClusterEvent::Degraded));
    }
}

/// Delivers messages until the connection fails or a ping goes unanswered.
async fn serve(
    sh: &Shared,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    receiver: &mut Receiver,
) {
    let mut ping = tokio::time::interval(sh.config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => receiver.handle(sh, &msg),
                None => {
                    tracing::warn!("cluster subscriber disconnected");
                    return;
                }
            },
            _ = ping.tick() => {
                let answer = tokio::time::timeout(
                    sh.config.ping_timeout,
                    sink.ping::<redis::Value>(),
                ).await;
                match answer {
                    Ok(Ok(_)) => sh.health.lock().last_pong = Instant::now(),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cluster subscriber ping failed");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!("cluster subscriber ping unanswered");
                        return;
                    }
                }
            }
        }
    }
}

/// Where a sending node's frames are up to.
#[derive(Debug)]
struct LinkState {
    boot: u64,
    next: u64,
    /// The sender's id, built once per link rather than once per frame.
    node: NodeId,
}

/// Decodes and delivers what arrives on the node's channels.
#[derive(Debug, Default)]
struct Receiver {
    links: HashMap<String, LinkState>,
}

impl Receiver {
    fn handle(&mut self, sh: &Shared, msg: &Msg) {
        match Inbound::parse(msg.get_payload_bytes()) {
            Err(e) => {
                Counters::add(&sh.counters.bad_messages, 1);
                tracing::debug!(error = %e, channel = msg.get_channel_name(), "dropped a bad cluster message");
            }
            Ok(Inbound::Relay(frame)) => self.relay(sh, &frame),
            Ok(Inbound::Membership { snapshot, cause }) => {
                // While recovering, a full resync follows: an event now could describe a
                // room before this node's members were registered again.
                if !sh.health.lock().recovering {
                    sh.emit_core(ClusterEvent::Membership { snapshot, cause });
                }
            }
            Ok(Inbound::Closed {
                room_id,
                reason,
                ver,
            }) => {
                sh.rooms.lock().remove(&room_id);
                sh.emit_core(ClusterEvent::RoomClosed {
                    room_id,
                    reason,
                    ver,
                });
            }
            Ok(Inbound::Revoked {
                token_id,
                expires_at,
            }) => sh.emit(NodeEvent::Revoked {
                token_id,
                expires_at,
            }),
        }
    }

    fn relay(&mut self, sh: &Shared, frame: &RelayIn<'_>) {
        let decoded = (|| {
            let room_id = RoomId::new(frame.room).ok()?;
            // A server message has no sending member.
            let from = match frame.kind {
                RelayKind::Server => None,
                RelayKind::Message | RelayKind::Publish => Some(UserId::new(frame.from).ok()?),
            };
            let to = match frame.to {
                Some(to) => Some(UserId::new(to).ok()?),
                None => None,
            };
            let text = payload_text(frame.payload).ok()?;
            Some((room_id, from, to, text))
        })();
        let Some((room_id, from, to, text)) = decoded else {
            Counters::add(&sh.counters.bad_messages, 1);
            return;
        };
        if !self.in_sequence(sh, frame) {
            return;
        }
        let Some(from_node) = self.links.get(frame.node).map(|l| l.node.clone()) else {
            return;
        };
        Counters::add(&sh.counters.messages_in, 1);
        let event = match (frame.kind, from) {
            (RelayKind::Message, Some(from)) => ClusterEvent::Relay {
                room_id,
                from,
                from_node,
                to,
                text,
            },
            (RelayKind::Publish, Some(from)) => ClusterEvent::Publish {
                room_id,
                from,
                from_node,
                text,
            },
            (RelayKind::Server, _) => ClusterEvent::ServerMessage { room_id, to, text },
            (RelayKind::Message | RelayKind::Publish, None) => return,
        };
        sh.emit(NodeEvent::Core(event));
    }

    /// Whether a frame is new; counts and reports gaps.
    fn in_sequence(&mut self, sh: &Shared, frame: &RelayIn<'_>) -> bool {
        match self.links.get_mut(frame.node) {
            Some(link) if link.boot == frame.boot => {
                if frame.seq < link.next {
                    return false;
                }
                if frame.seq > link.next {
                    let missing = frame.seq - link.next;
                    Counters::add(&sh.counters.link_gaps, missing);
                    tracing::warn!(node = frame.node, missing, "gap in a node's frames: resync");
                    sh.gaps.lock().insert(frame.node.to_owned());
                    sh.trigger(Trigger::Resync);
                }
                link.next = frame.seq + 1;
            }
            Some(link) => {
                link.boot = frame.boot;
                link.next = frame.seq + 1;
            }
            None => {
                if self.links.len() >= MAX_LINKS {
                    // Forget senders that are no longer alive, not the live ones' sequences.
                    let alive = sh.health.lock().alive.clone();
                    self.links.retain(|node, _| alive.iter().any(|a| a == node));
                    if self.links.len() >= MAX_LINKS
                        && let Some(any) = self.links.keys().next().cloned()
                    {
                        self.links.remove(&any);
                    }
                }
                let Ok(node) = NodeId::new(frame.node) else {
                    Counters::add(&sh.counters.bad_messages, 1);
                    return false;
                };
                self.links.insert(
                    frame.node.to_owned(),
                    LinkState {
                        boot: frame.boot,
                        next: frame.seq + 1,
                        node,
                    },
                );
            }
        }
        true
    }
}
