//! The seed's message envelope `{ type, userId?, roomId?, data? }`, both ways.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ProtocolError, RoomId, UserId};

/// An incoming envelope whose `data` is left unparsed until its `type` is known.
#[derive(Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Cow<'a, str>,
    #[serde(rename = "roomId", default, borrow)]
    pub(crate) room_id: Option<Cow<'a, str>>,
    #[serde(rename = "userId", default, borrow)]
    pub(crate) user_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) token: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) data: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, ProtocolError> {
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::from_serde(&e))
    }
}

/// An outgoing envelope borrowing its parts; serializes in one pass.
#[derive(Serialize)]
pub(crate) struct OutEnvelope<'a, D: ?Sized + Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(rename = "roomId", skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

impl<'a, D: ?Sized + Serialize> OutEnvelope<'a, D> {
    pub(crate) fn new(kind: &'a str) -> Self {
        Self {
            kind,
            user_id: None,
            room_id: None,
            data: None,
        }
    }

    pub(crate) fn user(mut self, user: Option<&'a UserId>) -> Self {
        self.user_id = user.map(UserId::as_str);
        self
    }

    pub(crate) fn room(mut self, room: Option<&'a RoomId>) -> Self {
        self.room_id = room.map(RoomId::as_str);
        self
    }

    pub(crate) fn data(mut self, data: &'a D) -> Self {
        self.data = Some(data);
        self
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        // Invariant: every wire type serializes (string keys, no fallible impls).
        serde_json::to_vec(self).expect("wire types always serialize")
    }
}

impl<D: ?Sized + Serialize> std::fmt::Display for OutEnvelope<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Invariant: serde_json writes valid UTF-8.
        let bytes = self.to_vec();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| std::fmt::Error)?)
    }
}
