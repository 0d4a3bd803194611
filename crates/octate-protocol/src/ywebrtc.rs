//! The signaling protocol of Yjs's `y-webrtc` provider (10.x), as its reference server
//! speaks it: JSON text frames over a WebSocket, one topic per document room.
//!
//! Client to server: `{"type":"subscribe","topics":[..]}`, `{"type":"unsubscribe",
//! "topics":[..]}`, `{"type":"publish","topic":..,"data":..}` and `{"type":"ping"}`.
//! Server to client: [`PONG`], and every `publish` forwarded as the publisher wrote it
//! with `clients` (how many subscribers the topic has) added by [`with_clients`].
//! `data` is opaque (an object, or a base64 string in password-protected rooms): it is
//! checked to be JSON and never re-serialized.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::envelope::{check_depth, json_str};

/// The server's answer to `ping`.
pub const PONG: &str = r#"{"type":"pong"}"#;

/// Most topics read from one `subscribe` or `unsubscribe`; the rest are ignored.
pub const MAX_TOPICS: usize = 64;

/// A message from a `y-webrtc` client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YClientMessage<'a> {
    /// Deliver the `publish`es of these topics (entries that are not strings are dropped).
    Subscribe(Vec<Cow<'a, str>>),
    /// Stop delivering the `publish`es of these topics.
    Unsubscribe(Vec<Cow<'a, str>>),
    /// Forward this message, as it is, to the topic's subscribers.
    Publish {
        /// The topic (the document room's name).
        topic: Cow<'a, str>,
    },
    /// Answer [`PONG`].
    Ping,
    /// A type this server does not know: ignored, as the reference server does.
    Unknown,
}

/// Why a `y-webrtc` message was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YError {
    /// Not a JSON object, or nested deeper than the limit.
    #[error("not a JSON object: {0}")]
    InvalidJson(String),
    /// A field has the wrong type (`type` or `topic` not a string, `topics` not an array).
    #[error("field {0} has the wrong type")]
    InvalidField(&'static str),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    topics: Option<&'a RawValue>,
    #[serde(borrow, default)]
    topic: Option<&'a RawValue>,
}

impl<'a> YClientMessage<'a> {
    /// Decodes one client message; `text` is a whole text frame's payload.
    pub fn decode(text: &'a str) -> Result<Self, YError> {
        check_depth(text).map_err(|e| YError::InvalidJson(e.to_string()))?;
        let envelope: Envelope<'a> =
            serde_json::from_str(text).map_err(|e| YError::InvalidJson(e.to_string()))?;
        let Some(kind) = envelope.kind else {
            return Ok(Self::Unknown);
        };
        let kind = json_str(kind.get()).ok_or(YError::InvalidField("type"))?;
        Ok(match kind.as_ref() {
            "subscribe" => Self::Subscribe(topics(envelope.topics)?),
            "unsubscribe" => Self::Unsubscribe(topics(envelope.topics)?),
            "publish" => {
                let topic = envelope.topic.ok_or(YError::InvalidField("topic"))?;
                let topic = json_str(topic.get()).ok_or(YError::InvalidField("topic"))?;
                Self::Publish { topic }
            }
            "ping" => Self::Ping,
            _ => Self::Unknown,
        })
    }
}

/// The string entries of a `topics` array, at most [`MAX_TOPICS`]; absent is empty.
fn topics(raw: Option<&RawValue>) -> Result<Vec<Cow<'_, str>>, YError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let entries: Vec<&RawValue> =
        serde_json::from_str(raw.get()).map_err(|_| YError::InvalidField("topics"))?;
    Ok(entries
        .into_iter()
        .take(MAX_TOPICS)
        .filter_map(|entry| json_str(entry.get()))
        .collect())
}

/// A `publish` as its subscribers get it: the publisher's text with `"clients":n` added
/// as the last member (a `clients` the publisher sent is overridden by it).
///
/// `publish` must be a JSON object, as [`YClientMessage::decode`] found it.
pub fn with_clients(publish: &str, clients: usize) -> Arc<str> {
    let body = publish.trim_end();
    let body = body.strip_suffix('}').unwrap_or(body).trim_end();
    let mut out = String::with_capacity(body.len() + 32);
    out.push_str(body);
    // Writing to a String cannot fail.
    let _ = write!(out, ",\"clients\":{clients}}}");
    Arc::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_message_type() {
        assert_eq!(
            YClientMessage::decode(r#"{"type":"subscribe","topics":["a",7,"b",null]}"#),
            Ok(YClientMessage::Subscribe(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            YClientMessage::decode(r#"{"type":"unsubscribe"}"#),
            Ok(YClientMessage::Unsubscribe(vec![]))
        );
        assert_eq!(
            YClientMessage::decode(r#"{"type":"publish","topic":"r\u0031","data":{"x":[1]}}"#),
            Ok(YClientMessage::Publish { topic: "r1".into() })
        );
        assert_eq!(
            YClientMessage::decode(r#"{"type":"ping"}"#),
            Ok(YClientMessage::Ping)
        );
        assert_eq!(
            YClientMessage::decode(r#"{"type":"hello","x":1}"#),
            Ok(YClientMessage::Unknown)
        );
        assert_eq!(YClientMessage::decode("{}"), Ok(YClientMessage::Unknown));
    }

    #[test]
    fn refuses_what_is_not_an_object_or_has_wrong_types() {
        for text in ["", "null", "[]", "\"ping\"", "{", r#"{"type":"ping"} x"#] {
            assert!(
                matches!(YClientMessage::decode(text), Err(YError::InvalidJson(_))),
                "{text}"
            );
        }
        for text in [
            r#"{"type":1}"#,
            r#"{"type":"subscribe","topics":"a"}"#,
            r#"{"type":"publish","data":{}}"#,
            r#"{"type":"publish","topic":["a"]}"#,
        ] {
            assert!(
                matches!(YClientMessage::decode(text), Err(YError::InvalidField(_))),
                "{text}"
            );
        }
        let deep = format!(
            r#"{{"type":"publish","topic":"a","data":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(matches!(
            YClientMessage::decode(&deep),
            Err(YError::InvalidJson(_))
        ));
    }

    #[test]
    fn reads_a_bounded_number_of_topics() {
        let many: Vec<String> = (0..1000).map(|i| format!("\"t{i}\"")).collect();
        let text = format!(r#"{{"type":"subscribe","topics":[{}]}}"#, many.join(","));
        let Ok(YClientMessage::Subscribe(topics)) = YClientMessage::decode(&text) else {
            panic!("subscribe expected");
        };
        assert_eq!(topics.len(), MAX_TOPICS);
    }

    #[test]
    fn adds_clients_without_touching_the_rest() {
        let publish = r#"{"type":"publish","topic":"r","data":{ "b" : 1, "a":"x" }} "#;
        let out = with_clients(publish, 3);
        assert_eq!(
            &*out,
            r#"{"type":"publish","topic":"r","data":{ "b" : 1, "a":"x" },"clients":3}"#
        );
        let value: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(value["clients"], 3);
    }
}
