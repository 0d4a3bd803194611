//! The `y-webrtc` side of a session: the token of the upgrade URL authenticates it, its
//! one topic is its token's room, and its messages are `subscribe`, `unsubscribe`,
//! `publish` and `ping` (see `docs/y-webrtc.md`).
//!
//! Framing, limits, rate and life are the native session's. What the protocol has no
//! answer for is ignored, as its reference server does: malformed JSON, unknown types,
//! other topics. A publish is forwarded as the client wrote it; only its topic is read.

use bytes::Bytes;
use octate_core::Login;
use octate_protocol::ywebrtc::{PONG, YClientMessage};
use octate_protocol::{CloseCode, ErrorCode};
use tracing::{debug, info};

use super::{End, Session};
use crate::limits::Verdict;
use crate::registry::Outbound;
use crate::tokens;

impl Session {
    /// Authenticates a `y-webrtc` session with the token of its URL and puts it in its
    /// room; returns how the session ends if the token is refused (revoked since the
    /// upgrade, or expired).
    pub(super) fn login_ywebrtc(&mut self, token: &str) -> Option<End> {
        let (app, conn) = (self.app.clone(), self.conn);
        match tokens::authenticate(&app, conn, token, None, None) {
            Ok((identity, lease, token)) => {
                debug!(%conn, user = %identity.user_id, room = %identity.room_id, "y-webrtc authenticated");
                self.identity = Some(identity.clone());
                self.token = Some(lease);
                let login = Login {
                    identity,
                    user_name: None,
                    token,
                };
                app.drive(|core, now| core.handle_ywebrtc_login(now, conn, login));
                None
            }
            Err((code, _)) => {
                app.metrics.auth_failed(code);
                info!(%conn, code = code.as_str(), "y-webrtc authentication failed");
                app.close(conn, CloseCode::AuthFailed);
                Some(End::Closed(CloseCode::AuthFailed))
            }
        }
    }

    /// Handles one `y-webrtc` message; returns how the session ends, if it does.
    pub(super) fn on_ywebrtc_text(&mut self, text: &str) -> Option<End> {
        match self.rate.check() {
            Verdict::Allow => {}
            Verdict::Reject => return None,
            Verdict::Close => {
                return Some(self.close_with(
                    ErrorCode::RateLimited,
                    "rate limit exceeded",
                    CloseCode::RateLimited,
                ));
            }
        }
        let (app, conn) = (&self.app, self.conn);
        let room = self.identity.as_ref()?.room_id.as_str();
        let msg = match YClientMessage::decode(text) {
            Ok(msg) => msg,
            Err(err) => {
                debug!(%conn, %err, "y-webrtc message ignored");
                return None;
            }
        };
        match msg {
            YClientMessage::Subscribe(topics) | YClientMessage::Unsubscribe(topics)
                if !topics.iter().any(|topic| topic == room) => {}
            YClientMessage::Subscribe(_) => {
                app.drive(|core, now| core.handle_ywebrtc_subscription(now, conn, true));
                self.reached_core = true;
            }
            YClientMessage::Unsubscribe(_) => {
                app.drive(|core, now| core.handle_ywebrtc_subscription(now, conn, false));
                self.reached_core = true;
            }
            YClientMessage::Publish { topic } if topic == room => {
                app.drive(|core, now| core.handle_ywebrtc_publish(now, conn, text));
                self.reached_core = true;
            }
            YClientMessage::Ping => {
                app.push(conn, Outbound::Text(Bytes::from_static(PONG.as_bytes())));
            }
            YClientMessage::Publish { .. } | YClientMessage::Unknown => {}
        }
        None
    }
}
