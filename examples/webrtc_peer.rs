//! A native WebRTC peer of the browser demo (`examples/browser`), written in Rust.
//!
//! It joins a room through Octate the way `octate-client.js` does and edits the demo's
//! document with the browser tabs: token over HTTP (`octate_client::fetch_token`), signaling
//! over the WebSocket (`octate_client::Client`), one `RTCPeerConnection` per remote peer
//! (the `webrtc` crate) carrying the pre-negotiated data channel `octate` (id 0, ordered),
//! and the document in [`yrs`], the Rust port of Yjs. Over the channel go the demo's
//! messages: `{type: "sync", peerId, timestamp, update}` when a channel opens, and
//! RemoteOperation-shaped edits `{id, peerId, timestamp, type, position, content?, version,
//! update}`, where `update` is a Yjs update (v1) in base64.
//!
//! ```sh
//! node examples/browser/site.mjs && OCTATE_STATIC_DIR=target/browser-demo cargo run -p octate-server
//! cargo run --example webrtc_peer -- --room demo --user rusty --insert "hello from Rust " --print
//! ```
//!
//! Negotiation follows the browser client: the newcomer (whose `auth-ok` lists peers) offers
//! to each of them; a peer already in the room waits 3 s for the newcomer's offer before
//! offering itself; on colliding offers the end with the larger user id (polite) yields and
//! the other ignores the colliding offer. ICE is loopback-only: no STUN/TURN, no mDNS, UDP4
//! host candidates on loopback addresses. There is no reconnect: when the signaling
//! connection closes, the peer exits. A connection whose data channel does not open (a
//! webrtc-rs 0.17 race, see `Peer::rejoin`) is started over by leaving and re-joining the room.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Parser;
use octate_client::{Client, ClientError, fetch_token};
use octate_protocol::{ClientMessage, ServerMessage, SignalKind};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::offer_answer_options::RTCOfferOptions;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::sdp_type::RTCSdpType;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::signaling_state::RTCSignalingState;
use yrs::updates::decoder::Decode;
use yrs::{
    Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, TextRef, Transact, Update,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Label of the data channel, as in `octate-client.js` (`channelLabel`).
const CHANNEL_LABEL: &str = "octate";
/// Id of the pre-negotiated data channel, as in `octate-client.js`.
const CHANNEL_ID: u16 = 0;
/// Name of the demo's shared text (`doc.getText('content')` in `demo.js`).
const TEXT_NAME: &str = "content";
/// How long a peer already in the room waits for the newcomer's offer (`offerFallbackMs`).
const OFFER_FALLBACK: Duration = Duration::from_secs(3);
/// How long after the connection is up the data channel may take to open.
const CHANNEL_OPEN_GRACE: Duration = Duration::from_secs(3);
/// How many times the peer leaves and re-joins the room to work around a lost channel.
const MAX_REJOINS: u32 = 3;

/// A Rust peer of the Octate browser demo: joins a room and edits its document over WebRTC.
#[derive(Parser, Debug)]
#[command(name = "webrtc_peer")]
struct Args {
    /// HTTP address of the server, for the token (`127.0.0.1:3000` or `http://127.0.0.1:3000`).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    http: String,
    /// WebSocket URL of the signaling server; default `ws://<http address>/ws`.
    #[arg(long)]
    ws: Option<String>,
    /// Room to join.
    #[arg(long, default_value = "demo")]
    room: String,
    /// User id (and display name) of this peer.
    #[arg(long, default_value = "rust-peer")]
    user: String,
    /// Admin key for the token request, when the server requires one.
    #[arg(long, env = "OCTATE_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Text to insert at position 0 once the first data channel is open.
    #[arg(long)]
    insert: Option<String>,
    /// Exit 0 as soon as the document contains this text (and `--insert` was sent).
    #[arg(long)]
    expect: Option<String>,
    /// Seconds before giving up; with `--expect`, exit 1 then. Default: 30 with `--expect`,
    /// no limit without.
    #[arg(long)]
    timeout: Option<f64>,
    /// Print the document (one JSON string per line, `doc "..."`) whenever it changes.
    #[arg(long)]
    print: bool,
    /// Log every signaling step to stderr, with the `webrtc` crate's warnings.
    #[arg(long)]
    verbose: bool,
}

/// What the WebRTC callbacks and timers tell the main loop. Each carries the peer and the
/// generation of the link it belongs to, so that events of a replaced link are ignored.
#[derive(Debug)]
enum Event {
    Candidate {
        peer: String,
        generation: u64,
        candidate: RTCIceCandidate,
    },
    ChannelOpen {
        peer: String,
        generation: u64,
    },
    ChannelClosed {
        peer: String,
        generation: u64,
    },
    ChannelMessage {
        peer: String,
        generation: u64,
        data: Vec<u8>,
    },
    ConnectionState {
        peer: String,
        generation: u64,
        state: RTCPeerConnectionState,
    },
    OfferFallback {
        peer: String,
    },
    /// The connection has been up for `CHANNEL_OPEN_GRACE`: is the channel open?
    ChannelCheck {
        peer: String,
        generation: u64,
    },
}

/// One remote peer: its connection, data channel and negotiation state.
struct Link {
    generation: u64,
    pc: Arc<RTCPeerConnection>,
    channel: Arc<RTCDataChannel>,
    /// The larger user id yields on colliding offers (as in `octate-client.js`).
    polite: bool,
    /// The last remote offer was ignored (a collision on the impolite end).
    ignore_offer: bool,
    ever_connected: bool,
    open: bool,
    /// Candidates received before the remote description.
    pending_candidates: Vec<RTCIceCandidateInit>,
}

struct Peer {
    me: String,
    verbose: bool,
    print: bool,
    api: API,
    client: Client,
    events: mpsc::UnboundedSender<Event>,
    /// The other peers of the room, as the server reports them.
    peers: HashSet<String>,
    links: HashMap<String, Link>,
    next_generation: u64,
    doc: Doc,
    text: TextRef,
    shown: String,
    op_counter: u64,
    insert: Option<String>,
    inserted: bool,
    /// Leave-and-rejoin rounds done (see `Peer::rejoin`).
    rejoins: u32,
    /// A `leave-room` was sent; `join-room` follows its `room-left`.
    rejoining: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The value of the first `a=NAME:` line of an SDP.
fn sdp_attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
}

/// Whether `candidate` belongs to a description this end never took (an ignored offer):
/// its ICE username fragment is not the remote description's.
fn of_another_negotiation(candidate: &RTCIceCandidateInit, remote_sdp: &str) -> bool {
    candidate.username_fragment.as_deref().is_some_and(|ufrag| {
        !ufrag.is_empty() && !remote_sdp.contains(&format!("a=ice-ufrag:{ufrag}"))
    })
}

impl Peer {
    fn log(&self, line: impl AsRef<str>) {
        if self.verbose {
            eprintln!("webrtc_peer[{}]: {}", self.me, line.as_ref());
        }
    }

    fn warn(&self, line: impl AsRef<str>) {
        eprintln!("webrtc_peer[{}]: {}", self.me, line.as_ref());
    }

    fn text_now(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    /// Prints the document if it changed since the last print.
    fn show(&mut self) {
        let now = self.text_now();
        if now != self.shown {
            self.shown = now;
            if self.print {
                println!("doc {}", Value::String(self.shown.clone()));
            }
        }
    }

    // ---- signaling ----

    async fn on_server(&mut self, msg: ServerMessage) {
        match msg {
            ServerMessage::PeerJoined { peer, .. } => {
                let id = peer.user_id.as_str().to_owned();
                if id == self.me {
                    return;
                }
                self.log(format!("{id} joined"));
                // The same user may come back (reconnect, "replaced"): start afresh with it.
                self.drop_link(&id).await;
                self.peers.insert(id.clone());
                // The newcomer offers; offer ourselves only if it stays silent.
                let events = self.events.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(OFFER_FALLBACK).await;
                    let _ = events.send(Event::OfferFallback { peer: id });
                });
            }
            ServerMessage::PeerLeft { peer, reason, .. } => {
                let id = peer.user_id.as_str();
                self.log(format!("{id} left ({reason:?})"));
                self.peers.remove(id);
                self.drop_link(id).await;
            }
            ServerMessage::Signal {
                kind, from, data, ..
            } => {
                let from = from.as_str().to_owned();
                let data: Value = match serde_json::from_str(data.get()) {
                    Ok(v) => v,
                    Err(err) => {
                        self.warn(format!("unreadable signal from {from}: {err}"));
                        return;
                    }
                };
                match kind {
                    SignalKind::Offer => {
                        if let Some(sdp) = data.pointer("/offer/sdp").and_then(Value::as_str) {
                            self.on_description(&from, RTCSdpType::Offer, sdp.to_owned())
                                .await;
                        }
                    }
                    SignalKind::Answer => {
                        if let Some(sdp) = data.pointer("/answer/sdp").and_then(Value::as_str) {
                            self.on_description(&from, RTCSdpType::Answer, sdp.to_owned())
                                .await;
                        }
                    }
                    SignalKind::IceCandidate => {
                        if let Some(c) = data.get("candidate") {
                            match serde_json::from_value::<RTCIceCandidateInit>(c.clone()) {
                                Ok(init) => self.on_candidate(&from, init).await,
                                Err(err) => {
                                    self.warn(format!("bad candidate from {from}: {err}"));
                                }
                            }
                        }
                    }
                }
            }
            ServerMessage::Error { code, message, .. } => {
                self.warn(format!("server error {code:?}: {message}"));
            }
            ServerMessage::RoomLeft { .. } if self.rejoining => {
                self.rejoining = false;
                let join = ClientMessage::JoinRoom {
                    room_id: None,
                    user_name: Some(self.me.clone()),
                };
                if let Err(err) = self.client.send(&join).await {
                    self.warn(format!("could not re-join: {err}"));
                }
            }
            ServerMessage::RoomJoined { room, .. } => {
                // Back in the room as the newcomer: offer to everyone, as after `auth-ok`.
                let others: Vec<String> = room
                    .peers
                    .iter()
                    .map(|p| p.user_id.as_str().to_owned())
                    .filter(|id| *id != self.me)
                    .collect();
                self.log(format!("re-joined; peers: [{}]", others.join(",")));
                self.peers = others.iter().cloned().collect();
                for other in &others {
                    self.offer(other, false).await;
                }
            }
            ServerMessage::RoomClosed { reason, .. } => {
                self.warn(format!("room closed ({reason:?})"));
            }
            ServerMessage::HostChanged { host_id, .. } => {
                self.log(format!("{host_id} is now the host"));
            }
            // Presence, cursors and anything newer: not needed here (protocol section 11).
            _ => {}
        }
    }

    async fn send_signal(&mut self, kind: SignalKind, peer: &str, payload: Value) {
        if let Err(err) = self.client.signal(kind, peer, payload).await {
            self.warn(format!("could not send {kind:?} to {peer}: {err}"));
        }
    }

    // ---- WebRTC: one RTCPeerConnection per remote peer ----

    async fn new_link(&mut self, peer: &str) -> Result<(), BoxError> {
        let config = RTCConfiguration {
            ice_servers: vec![],
            ..Default::default()
        };
        let pc = Arc::new(self.api.new_peer_connection(config).await?);
        // Both ends create the same pre-negotiated channel, as octate-client.js does.
        let channel = pc
            .create_data_channel(
                CHANNEL_LABEL,
                Some(RTCDataChannelInit {
                    ordered: Some(true),
                    negotiated: Some(CHANNEL_ID),
                    ..Default::default()
                }),
            )
            .await?;
        self.next_generation += 1;
        let generation = self.next_generation;

        let (tx, id) = (self.events.clone(), peer.to_owned());
        pc.on_ice_candidate(Box::new(move |candidate: Option<RTCIceCandidate>| {
            // `None` marks the end of gathering: nothing to relay.
            if let Some(candidate) = candidate {
                let _ = tx.send(Event::Candidate {
                    peer: id.clone(),
                    generation,
                    candidate,
                });
            }
            Box::pin(async {})
        }));
        let (tx, id) = (self.events.clone(), peer.to_owned());
        pc.on_peer_connection_state_change(Box::new(move |state| {
            let _ = tx.send(Event::ConnectionState {
                peer: id.clone(),
                generation,
                state,
            });
            Box::pin(async {})
        }));
        let (tx, id) = (self.events.clone(), peer.to_owned());
        channel.on_open(Box::new(move || {
            let _ = tx.send(Event::ChannelOpen {
                peer: id,
                generation,
            });
            Box::pin(async {})
        }));
        let (tx, id) = (self.events.clone(), peer.to_owned());
        channel.on_close(Box::new(move || {
            let _ = tx.send(Event::ChannelClosed {
                peer: id.clone(),
                generation,
            });
            Box::pin(async {})
        }));
        let (tx, id) = (self.events.clone(), peer.to_owned());
        channel.on_message(Box::new(move |msg: DataChannelMessage| {
            let _ = tx.send(Event::ChannelMessage {
                peer: id.clone(),
                generation,
                data: msg.data.to_vec(),
            });
            Box::pin(async {})
        }));

        self.links.insert(
            peer.to_owned(),
            Link {
                generation,
                pc,
                channel,
                polite: self.me.as_str() > peer,
                ignore_offer: false,
                ever_connected: false,
                open: false,
                pending_candidates: Vec::new(),
            },
        );
        Ok(())
    }

    /// Creates the link to `peer` if there is none; false if that failed.
    async fn ensure_link(&mut self, peer: &str) -> bool {
        if self.links.contains_key(peer) {
            return true;
        }
        match self.new_link(peer).await {
            Ok(()) => true,
            Err(err) => {
                self.warn(format!("could not create a connection to {peer}: {err}"));
                false
            }
        }
    }

    async fn drop_link(&mut self, peer: &str) {
        if let Some(link) = self.links.remove(peer) {
            let _ = link.channel.close().await;
            let _ = link.pc.close().await;
        }
    }

    /// Creates the link if needed and sends an offer on it.
    async fn offer(&mut self, peer: &str, ice_restart: bool) {
        if !self.ensure_link(peer).await {
            return;
        }
        let Some(pc) = self.links.get(peer).map(|l| Arc::clone(&l.pc)) else {
            return;
        };
        let options = ice_restart.then(|| RTCOfferOptions {
            ice_restart: true,
            ..Default::default()
        });
        let result = async {
            let offer = pc.create_offer(options).await?;
            pc.set_local_description(offer.clone()).await?;
            Ok::<_, webrtc::Error>(offer.sdp)
        }
        .await;
        match result {
            Ok(sdp) => {
                self.log(format!("sending offer to {peer}"));
                self.send_signal(
                    SignalKind::Offer,
                    peer,
                    json!({"type": "offer", "sdp": sdp}),
                )
                .await;
            }
            Err(err) => self.warn(format!("offer to {peer} failed: {err}")),
        }
    }

    async fn on_description(&mut self, peer: &str, kind: RTCSdpType, sdp: String) {
        self.log(format!("got {kind} from {peer}"));
        if peer == self.me || !self.peers.contains(peer) {
            return;
        }
        if !self.ensure_link(peer).await {
            return;
        }
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        let state = link.pc.signaling_state();
        // The main loop handles one event at a time, so an offer of ours is never half made
        // here: a collision is an offer that finds ours pending.
        let collision = kind == RTCSdpType::Offer && state != RTCSignalingState::Stable;
        link.ignore_offer = collision && !link.polite;
        let (ignore, ever_connected, pc) =
            (link.ignore_offer, link.ever_connected, Arc::clone(&link.pc));
        if ignore {
            self.log(format!("{peer}: colliding offer ignored (impolite end)"));
            return;
        }
        if kind == RTCSdpType::Answer && state != RTCSignalingState::HaveLocalOffer {
            self.log(format!("{peer}: answer in state {state}, ignored"));
            return;
        }
        if collision {
            // On an established connection, roll our offer back (keeping the connection);
            // before the first connection there is nothing to keep: take the remote offer
            // on a fresh connection, as octate-client.js does.
            let rolled_back = ever_connected && {
                // webrtc-rs wants an SDP it can parse even for a rollback: the pending offer.
                let pending = pc.local_description().await.map(|d| d.sdp);
                let rollback = json!({"type": "rollback", "sdp": pending.unwrap_or_default()});
                match serde_json::from_value::<RTCSessionDescription>(rollback) {
                    Ok(desc) => pc.set_local_description(desc).await.is_ok(),
                    Err(_) => false,
                }
            };
            self.log(format!(
                "{peer}: colliding offer taken (polite end), {}",
                if rolled_back {
                    "own offer rolled back"
                } else {
                    "on a fresh connection"
                }
            ));
            if !rolled_back {
                let queued = self
                    .links
                    .get_mut(peer)
                    .map(|l| l.pending_candidates.split_off(0))
                    .unwrap_or_default();
                self.drop_link(peer).await;
                if let Err(err) = self.new_link(peer).await {
                    self.warn(format!("could not create a connection to {peer}: {err}"));
                    return;
                }
                if let Some(link) = self.links.get_mut(peer) {
                    link.pending_candidates = queued;
                }
            }
        }
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        let pc = Arc::clone(&link.pc);
        let queued = link.pending_candidates.split_off(0);
        let result = async {
            let desc = match kind {
                RTCSdpType::Offer => RTCSessionDescription::offer(sdp)?,
                _ => RTCSessionDescription::answer(sdp)?,
            };
            let remote_sdp = desc.sdp.clone();
            pc.set_remote_description(desc).await?;
            for candidate in queued {
                if !of_another_negotiation(&candidate, &remote_sdp) {
                    // Refused: a candidate of a superseded negotiation, harmless.
                    let _ = pc.add_ice_candidate(candidate).await;
                }
            }
            if kind != RTCSdpType::Offer {
                return Ok(None);
            }
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer.clone()).await?;
            Ok::<_, webrtc::Error>(Some(answer.sdp))
        }
        .await;
        match result {
            Ok(Some(sdp)) => {
                self.log(format!("sending answer to {peer}"));
                self.send_signal(
                    SignalKind::Answer,
                    peer,
                    json!({"type": "answer", "sdp": sdp}),
                )
                .await;
            }
            Ok(None) => {}
            Err(err) => self.warn(format!("signaling with {peer} failed: {err}")),
        }
    }

    async fn on_candidate(&mut self, peer: &str, candidate: RTCIceCandidateInit) {
        if peer == self.me || !self.peers.contains(peer) {
            return;
        }
        if !self.ensure_link(peer).await {
            return;
        }
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        let Some(remote) = link.pc.remote_description().await else {
            link.pending_candidates.push(candidate);
            return;
        };
        if of_another_negotiation(&candidate, &remote.sdp) {
            self.log(format!(
                "{peer}: dropping a candidate of another negotiation"
            ));
            return;
        }
        let text = candidate.candidate.clone();
        if let Err(err) = link.pc.add_ice_candidate(candidate).await {
            let ignored = link.ignore_offer;
            if !ignored {
                self.log(format!("{peer}: candidate {text:?} not added: {err}"));
            }
        } else {
            self.log(format!("{peer}: added candidate {text}"));
        }
    }

    /// Relays one of our ICE candidates, shaped as the browser's `candidate.toJSON()`.
    async fn send_candidate(&mut self, peer: &str, candidate: RTCIceCandidate) {
        let Some(link) = self.links.get(peer) else {
            return;
        };
        let init = match candidate.to_json() {
            Ok(init) => init,
            Err(err) => {
                self.warn(format!("unusable local candidate: {err}"));
                return;
            }
        };
        let local = link.pc.local_description().await.map(|d| d.sdp);
        let local = local.as_deref().unwrap_or_default();
        let mid = sdp_attribute(local, "mid").unwrap_or("0");
        let ufrag = sdp_attribute(local, "ice-ufrag");
        let payload = json!({
            "candidate": init.candidate,
            "sdpMid": mid,
            "sdpMLineIndex": 0,
            "usernameFragment": ufrag,
        });
        self.log(format!("sending candidate {} to {peer}", init.candidate));
        self.send_signal(SignalKind::IceCandidate, peer, payload)
            .await;
    }

    // ---- the demo's messages over the data channel ----

    async fn on_event(&mut self, event: Event) {
        let current = |links: &HashMap<String, Link>, peer: &str, generation: u64| {
            links.get(peer).is_some_and(|l| l.generation == generation)
        };
        match event {
            Event::Candidate {
                peer,
                generation,
                candidate,
            } => {
                if current(&self.links, &peer, generation) {
                    self.send_candidate(&peer, candidate).await;
                }
            }
            Event::ConnectionState {
                peer,
                generation,
                state,
            } => {
                if !current(&self.links, &peer, generation) {
                    return;
                }
                self.log(format!("{peer}: connection {state}"));
                let Some(link) = self.links.get_mut(&peer) else {
                    return;
                };
                if state == RTCPeerConnectionState::Connected {
                    link.ever_connected = true;
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(CHANNEL_OPEN_GRACE).await;
                        let _ = events.send(Event::ChannelCheck { peer, generation });
                    });
                    return;
                }
                // The browser restarts ICE from both ends on failure; here only the impolite
                // end does, so that two Rust peers restart once and a Rust peer never has to
                // roll back an established connection's offer.
                if state == RTCPeerConnectionState::Failed
                    && !link.polite
                    && self.peers.contains(&peer)
                {
                    self.offer(&peer, true).await;
                }
            }
            Event::ChannelOpen { peer, generation } => {
                if !current(&self.links, &peer, generation) {
                    return;
                }
                if let Some(link) = self.links.get_mut(&peer) {
                    link.open = true;
                }
                println!("open {peer}");
                // Bring the peer up to date: the whole state, merged idempotently there.
                let update = self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                let sync = json!({
                    "type": "sync",
                    "peerId": self.me,
                    "timestamp": now_ms(),
                    "update": BASE64.encode(update),
                });
                self.send_to(&peer, &sync).await;
                if !self.inserted
                    && let Some(text) = self.insert.clone()
                {
                    self.inserted = true;
                    self.local_insert(0, &text).await;
                }
            }
            Event::ChannelClosed { peer, generation } => {
                if current(&self.links, &peer, generation) {
                    if let Some(link) = self.links.get_mut(&peer) {
                        link.open = false;
                    }
                    self.log(format!("{peer}: channel closed"));
                }
            }
            Event::ChannelMessage {
                peer,
                generation,
                data,
            } => {
                if current(&self.links, &peer, generation) {
                    self.receive(&peer, &data);
                }
            }
            Event::ChannelCheck { peer, generation } => {
                let stuck = self.links.get(&peer).is_some_and(|l| {
                    l.generation == generation
                        && !l.open
                        && l.pc.connection_state() == RTCPeerConnectionState::Connected
                });
                if stuck {
                    self.rejoin(&peer).await;
                }
            }
            Event::OfferFallback { peer } => {
                if self.peers.contains(&peer) && !self.links.contains_key(&peer) {
                    self.log(format!("{peer} sent no offer: offering"));
                    self.offer(&peer, false).await;
                }
            }
        }
    }

    /// Applies a `sync` or RemoteOperation message: its `update` is what counts.
    fn receive(&mut self, from: &str, data: &[u8]) {
        let msg: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(err) => {
                self.warn(format!("non-JSON message from {from}: {err}"));
                return;
            }
        };
        let Some(update) = msg.get("update").and_then(Value::as_str) else {
            return;
        };
        let applied = BASE64
            .decode(update)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Update::decode_v1(&bytes).map_err(|e| e.to_string()))
            .and_then(|update| {
                self.doc
                    .transact_mut()
                    .apply_update(update)
                    .map_err(|e| e.to_string())
            });
        match applied {
            Ok(()) => {
                let kind = msg.get("type").and_then(Value::as_str).unwrap_or("?");
                self.log(format!("applied {kind} from {from}"));
                self.show();
            }
            Err(err) => self.warn(format!("bad update from {from}: {err}")),
        }
    }

    /// Inserts `text` at `position` (UTF-16, like the demo) and broadcasts the edit.
    async fn local_insert(&mut self, position: u32, text: &str) {
        let (update, version) = {
            let before = self.doc.transact().state_vector();
            let mut txn = self.doc.transact_mut();
            self.text.insert(&mut txn, position, text);
            drop(txn);
            let txn = self.doc.transact();
            let version = txn.state_vector().get(&self.doc.client_id());
            (txn.encode_state_as_update_v1(&before), version)
        };
        self.op_counter += 1;
        let op = json!({
            "id": format!("{}:{}", self.me, self.op_counter),
            "peerId": self.me,
            "timestamp": now_ms(),
            "type": "insert",
            "position": position,
            "content": text,
            "version": version,
            "update": BASE64.encode(update),
        });
        let open: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| l.open)
            .map(|(id, _)| id.clone())
            .collect();
        for peer in &open {
            self.send_to(peer, &op).await;
        }
        println!(
            "inserted {} (sent to {})",
            Value::String(text.to_owned()),
            open.join(",")
        );
        self.show();
    }

    async fn send_to(&self, peer: &str, msg: &Value) {
        if let Some(link) = self.links.get(peer)
            && let Err(err) = link.channel.send_text(msg.to_string()).await
        {
            self.warn(format!("send to {peer} failed: {err}"));
        }
    }

    /// Waits (at most `limit`) until every open channel has sent what it queued.
    async fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for link in self.links.values().filter(|l| l.open) {
            while link.channel.buffered_amount().await > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Works around a race in webrtc-rs 0.17 (webrtc-rs/webrtc#821): when the remote end's
    /// first message on the pre-negotiated channel arrives before webrtc-rs has attached
    /// that channel to the new SCTP association, webrtc-rs takes the stream for an in-band
    /// channel announcement, drops the message, and the channel never opens, although the
    /// connection is up. Nothing short of a new connection helps, and the browser client
    /// starts one when a peer leaves and comes back: so leave the room and re-join it
    /// (`leave-room`, `join-room`), then offer afresh as the newcomer. The documents lose
    /// nothing: each side sends its whole state when the new channel opens.
    async fn rejoin(&mut self, peer: &str) {
        if self.rejoins >= MAX_REJOINS || self.rejoining {
            self.warn(format!(
                "the data channel with {peer} did not open; giving up after {} re-joins",
                self.rejoins
            ));
            return;
        }
        self.rejoins += 1;
        self.rejoining = true;
        self.warn(format!(
            "the data channel with {peer} did not open although the connection is up \
             (webrtc-rs 0.17, webrtc-rs/webrtc#821): leaving and re-joining the room"
        ));
        for id in self.links.keys().cloned().collect::<Vec<_>>() {
            self.drop_link(&id).await;
        }
        self.peers.clear();
        if let Err(err) = self.client.send(&ClientMessage::LeaveRoom).await {
            self.warn(format!("could not leave the room: {err}"));
        }
    }

    async fn shutdown(mut self) {
        for peer in self.links.keys().cloned().collect::<Vec<_>>() {
            self.drop_link(&peer).await;
        }
        let _ = self.client.close().await;
    }
}

/// Shows the `webrtc` crate's own warnings and errors (its `log` records) on stderr.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // Chromium's ClientHello carries TLS 1.3 extensions that the DTLS 1.2 stack warns
        // about, several times per connection: noise.
        metadata.level() <= log::Level::Warn
            && metadata.target() != "dtls::handshake::handshake_message_client_hello"
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "webrtc_peer: [{} {}] {}",
                record.level(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

static STDERR_LOG: StderrLog = StderrLog;

fn webrtc_api() -> API {
    let mut settings = SettingEngine::default();
    // Loopback only: no mDNS names, UDP over IPv4, loopback host candidates (which ICE
    // leaves out by default) and nothing else.
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    APIBuilder::new().with_setting_engine(settings).build()
}

async fn run(args: Args) -> Result<bool, BoxError> {
    let http = args
        .http
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let http_addr: SocketAddr = http
        .parse()
        .map_err(|e| format!("--http {:?}: {e}", args.http))?;
    let ws_url = args.ws.clone().unwrap_or_else(|| format!("ws://{http}/ws"));

    let token = fetch_token(http_addr, &args.user, &args.room, args.admin_key.as_deref()).await?;
    let (mut client, welcome) = Client::join(&ws_url, &token, Some(&args.user)).await?;
    let (me, room) = match welcome {
        ServerMessage::AuthOk { user_id, room, .. } => (user_id.as_str().to_owned(), room),
        ServerMessage::Error { code, message, .. } => {
            return Err(format!("refused: {code:?}: {message}").into());
        }
        other => return Err(format!("unexpected first message: {}", other.kind()).into()),
    };
    // Heartbeats are answered inside `recv`; no message for a long while is normal.
    client.set_timeout(Duration::from_secs(3600));
    let others: Vec<String> = room
        .peers
        .iter()
        .map(|p| p.user_id.as_str().to_owned())
        .filter(|id| *id != me)
        .collect();
    println!(
        "joined {} as {me}; peers: [{}]",
        room.room_id.as_str(),
        others.join(",")
    );

    let (events, mut incoming) = mpsc::unbounded_channel();
    let doc = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let text = doc.get_or_insert_text(TEXT_NAME);
    let mut peer = Peer {
        me,
        verbose: args.verbose,
        print: args.print,
        api: webrtc_api(),
        client,
        events,
        peers: others.iter().cloned().collect(),
        links: HashMap::new(),
        next_generation: 0,
        doc,
        text,
        shown: String::new(),
        op_counter: 0,
        insert: args.insert.clone(),
        inserted: false,
        rejoins: 0,
        rejoining: false,
    };
    // The newcomer offers to every peer already in the room.
    for other in &others {
        peer.offer(other, false).await;
    }

    let limit = args
        .timeout
        .or(args.expect.as_ref().map(|_| 30.0))
        .map(|s| Duration::from_secs_f64(s.max(0.0)));
    let deadline = limit.map(|l| Instant::now() + l);
    let met = |peer: &Peer| {
        args.expect
            .as_deref()
            .is_some_and(|want| peer.shown.contains(want))
            && (args.insert.is_none() || peer.inserted)
    };
    let outcome = loop {
        if met(&peer) {
            break Ok(true);
        }
        tokio::select! {
            msg = peer.client.recv() => match msg {
                Ok(msg) => peer.on_server(msg).await,
                Err(ClientError::Timeout) => {}
                Err(err) => break Err(BoxError::from(format!("signaling connection lost: {err}"))),
            },
            Some(event) = incoming.recv() => peer.on_event(event).await,
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break Ok(false),
            _ = tokio::signal::ctrl_c() => break Ok(false),
        }
    };
    peer.flush(Duration::from_secs(1)).await;
    let text = peer.text_now();
    println!("final {}", Value::String(text.clone()));
    peer.shutdown().await;
    match outcome {
        Ok(true) => Ok(true),
        Ok(false) => {
            if let Some(want) = &args.expect {
                eprintln!("webrtc_peer: the document never contained {want:?}; it is {text:?}");
                Ok(false)
            } else {
                Ok(true)
            }
        }
        Err(err) => Err(err),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.verbose && log::set_logger(&STDERR_LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("webrtc_peer: {err}");
            ExitCode::from(2)
        }
    }
}
