//! Embeds `octate-core` in a service with its own transport: here, in-process channels.
//!
//! The core does no I/O and reads no clock. This example is its whole drive loop:
//! feed in what happened with `handle_*`, drain `poll_output`, carry each effect out,
//! and call `handle_timeout` when `poll_timeout` says so.
//!
//! Run: `cargo run --example embed_core`

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use octate_core::{ConnId, Core, CoreConfig, Identity, Output};
use octate_protocol::{ClientMessage, RoomId, ServerMessage, UserId};

/// Our own "transport": one in-process mailbox per connection.
struct Mailboxes {
    senders: HashMap<ConnId, mpsc::Sender<ServerMessage>>,
}

impl Mailboxes {
    /// Carries out every pending effect of the core.
    fn deliver(&self, core: &mut Core) {
        while let Some(out) = core.poll_output() {
            match out {
                Output::Send { to, msg } => self.post(to, msg),
                Output::Broadcast { to, msg } => {
                    for conn in to {
                        self.post(conn, msg.clone());
                    }
                }
                Output::Heartbeat { to } => {
                    for conn in to {
                        self.post(conn, ServerMessage::Heartbeat);
                    }
                }
                Output::Close { conn, code } => {
                    println!("close {conn}: {} {}", code.code(), code.reason())
                }
                Output::RoomRemoved { room_id, reason } => {
                    println!("room {room_id} removed: {reason:?}")
                }
                // Only a clustered core (`Core::clustered`) produces these.
                Output::Forward { .. } | Output::Cluster(_) => {}
                // Only a core with a resume issuer (`Core::set_resume_issuer`) produces this.
                Output::Resumed { .. } => {}
                // Only with `CoreConfig::lifecycle_events` on.
                Output::Lifecycle(_) => {}
            }
        }
    }

    fn post(&self, to: ConnId, msg: ServerMessage) {
        if let Some(tx) = self.senders.get(&to) {
            let _ = tx.send(msg);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Virtual time: the embedding service decides what "now" is (Unix milliseconds).
    let mut now: u64 = 1_700_000_000_000;
    let mut core = Core::new(CoreConfig::default(), now);
    let room = RoomId::new("design-review")?;

    let mut mailboxes = Mailboxes {
        senders: HashMap::new(),
    };
    let mut inboxes = HashMap::new();
    for (n, user) in ["ada", "grace"].into_iter().enumerate() {
        let conn = ConnId(n as u64);
        let (tx, rx) = mpsc::channel();
        mailboxes.senders.insert(conn, tx);
        inboxes.insert(user, rx);
        // Identity comes from a verified token; here we trust our own service.
        let identity = Identity {
            user_id: UserId::new(user)?,
            room_id: room.clone(),
        };
        core.handle_authenticated(now, conn, identity, Some(user.to_uppercase()));
        mailboxes.deliver(&mut core);
    }

    // Ada sends an offer to Grace; the core decides it may reach her and stamps the sender.
    now += 50;
    let offer =
        br#"{"type":"sdp-offer","data":{"peer":"grace","offer":{"type":"offer","sdp":"v=0..."}}}"#;
    core.handle_message(now, ConnId(0), ClientMessage::decode(offer, 64 * 1024)?);
    mailboxes.deliver(&mut core);

    // Time passes; the core's timers fire when we say so.
    now += Duration::from_secs(31).as_millis() as u64;
    if now >= core.poll_timeout() {
        core.handle_timeout(now);
        mailboxes.deliver(&mut core);
    }

    for (user, rx) in &inboxes {
        for msg in rx.try_iter() {
            println!("{user} <- {}", String::from_utf8_lossy(&msg.encode()));
        }
    }
    Ok(())
}
