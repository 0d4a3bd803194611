//! The answers that put a connection in a room (`auth-ok`, `room-joined`, `resumed`): who
//! the connection is and the room it is in, and the newest resume ticket and ICE servers
//! they handed out.

use octate_protocol::{IceServer, ResumeTicket, RoomMetadata, ServerMessage, UserId};

/// Who a connection is and the room it is in, from `auth-ok`, `room-joined` or `resumed`.
#[derive(Clone, Debug, PartialEq)]
pub struct Membership {
    /// The user, as the server verified it.
    pub user_id: UserId,
    /// The room with every peer, this one included.
    pub room: RoomMetadata,
}

impl Membership {
    /// The membership an `auth-ok`, `room-joined` or `resumed` carries; `None` for others.
    pub fn from_message(msg: &ServerMessage) -> Option<Self> {
        match msg {
            ServerMessage::AuthOk { user_id, room, .. }
            | ServerMessage::RoomJoined { user_id, room, .. }
            | ServerMessage::Resumed { user_id, room, .. } => Some(Self {
                user_id: user_id.clone(),
                room: room.clone(),
            }),
            _ => None,
        }
    }
}

/// The newest resume ticket and ICE servers the server handed out on one connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct Latest {
    ticket: Option<ResumeTicket>,
    ice_servers: Option<Vec<IceServer>>,
}

impl Latest {
    /// Takes what `msg` hands out, if anything.
    ///
    /// Every `auth-ok`, `room-joined` and `resumed` spends the previous ticket, so its own
    /// (or none) replaces it; leaving the room or its closing ends the session, and with it
    /// the ticket.
    pub(crate) fn observe(&mut self, msg: &ServerMessage) {
        match msg {
            ServerMessage::AuthOk {
                ice_servers,
                resume,
                ..
            }
            | ServerMessage::RoomJoined {
                ice_servers,
                resume,
                ..
            }
            | ServerMessage::Resumed {
                ice_servers,
                resume,
                ..
            } => {
                self.ticket.clone_from(resume);
                if ice_servers.is_some() {
                    self.ice_servers.clone_from(ice_servers);
                }
            }
            ServerMessage::RoomLeft { .. } | ServerMessage::RoomClosed { .. } => {
                self.ticket = None;
            }
            _ => {}
        }
    }

    /// The ticket that resumes the session now, if the server handed one out.
    pub(crate) fn ticket(&self) -> Option<&ResumeTicket> {
        self.ticket.as_ref()
    }

    /// Drops the ticket: the server refused it.
    pub(crate) fn forget_ticket(&mut self) {
        self.ticket = None;
    }

    /// The newest ICE servers, if the server handed any out.
    pub(crate) fn ice_servers(&self) -> Option<&[IceServer]> {
        self.ice_servers.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use octate_protocol::{RoomCloseReason, RoomId};

    use super::*;

    fn ticket(n: u32) -> ResumeTicket {
        ResumeTicket {
            session_id: format!("s{n}"),
            resume_token: format!("t{n}"),
        }
    }

    fn stun(url: &str) -> Vec<IceServer> {
        vec![IceServer {
            urls: vec![url.to_owned()],
            username: None,
            credential: None,
        }]
    }

    /// A welcome message as the server sends it: `auth-ok`, `room-joined` or `resumed`.
    fn welcome(
        kind: &str,
        resume: Option<ResumeTicket>,
        ice: Option<Vec<IceServer>>,
    ) -> ServerMessage {
        let mut value = serde_json::json!({
            "type": kind,
            "userId": "alice",
            "roomId": "room-1",
            "data": {
                "room": {
                    "roomId": "room-1", "roomName": "r", "hostId": "alice", "hostName": "alice",
                    "createdAt": 1, "lastActivity": 1, "state": "ACTIVE",
                    "peers": [], "peerCount": 0
                },
                "peers": []
            }
        });
        if let Some(resume) = resume {
            value["data"]["resume"] = serde_json::to_value(resume).expect("ticket");
        }
        if let Some(ice) = ice {
            value["data"]["iceServers"] = serde_json::to_value(ice).expect("ice");
        }
        ServerMessage::decode(value.to_string().as_bytes()).expect("a valid welcome")
    }

    #[test]
    fn the_newest_ticket_replaces_the_older_one() {
        let mut latest = Latest::default();
        latest.observe(&welcome("auth-ok", Some(ticket(1)), None));
        assert_eq!(latest.ticket(), Some(&ticket(1)));
        latest.observe(&welcome("room-joined", Some(ticket(2)), None));
        assert_eq!(latest.ticket(), Some(&ticket(2)));
        latest.observe(&welcome("resumed", Some(ticket(3)), None));
        assert_eq!(latest.ticket(), Some(&ticket(3)));
    }

    #[test]
    fn a_welcome_without_a_ticket_forgets_the_spent_one() {
        let mut latest = Latest::default();
        latest.observe(&welcome("auth-ok", Some(ticket(1)), None));
        latest.observe(&welcome("room-joined", None, None));
        assert_eq!(latest.ticket(), None);
    }

    #[test]
    fn leaving_or_a_closed_room_forgets_the_ticket() {
        let room_id = RoomId::new("room-1").expect("room id");
        let mut latest = Latest::default();
        latest.observe(&welcome("auth-ok", Some(ticket(1)), None));
        latest.observe(&ServerMessage::RoomLeft {
            room_id: room_id.clone(),
        });
        assert_eq!(latest.ticket(), None);

        latest.observe(&welcome("room-joined", Some(ticket(2)), None));
        latest.observe(&ServerMessage::RoomClosed {
            room_id,
            reason: RoomCloseReason::Deleted,
        });
        assert_eq!(latest.ticket(), None);
    }

    #[test]
    fn other_messages_keep_the_ticket() {
        let mut latest = Latest::default();
        latest.observe(&welcome("auth-ok", Some(ticket(1)), None));
        latest.observe(&ServerMessage::Heartbeat);
        latest.observe(&ServerMessage::TokenRefreshed { expires_at: 5 });
        assert_eq!(latest.ticket(), Some(&ticket(1)));
    }

    #[test]
    fn the_newest_ice_servers_are_kept() {
        let mut latest = Latest::default();
        assert_eq!(latest.ice_servers(), None);
        latest.observe(&welcome("auth-ok", None, Some(stun("stun:a"))));
        assert_eq!(latest.ice_servers(), Some(stun("stun:a").as_slice()));
        latest.observe(&welcome("resumed", None, Some(stun("stun:b"))));
        assert_eq!(latest.ice_servers(), Some(stun("stun:b").as_slice()));
    }

    #[test]
    fn the_membership_comes_from_welcome_messages_only() {
        let joined = Membership::from_message(&welcome("resumed", None, None)).expect("resumed");
        assert_eq!(joined.user_id.as_str(), "alice");
        assert_eq!(joined.room.room_id.as_str(), "room-1");
        assert_eq!(Membership::from_message(&ServerMessage::Heartbeat), None);
    }
}
