//! Raw JSON payloads relayed byte for byte.

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::ProtocolError;

/// A JSON value kept as the exact text the sender wrote.
#[derive(Clone, Debug)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Checks that `json` is one JSON value and keeps its text.
    pub fn from_string(json: String) -> Result<Self, ProtocolError> {
        RawValue::from_string(json)
            .map(Self)
            .map_err(|e| ProtocolError::InvalidJson(e.to_string()))
    }

    /// Serializes a value into raw JSON.
    pub fn from_value<T: Serialize>(value: &T) -> Self {
        // Invariant: serde_json produces one valid JSON value for any Serialize with string keys.
        let text = serde_json::to_string(value).expect("value serializes to JSON");
        Self(RawValue::from_string(text).expect("serde_json output is valid JSON"))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub(crate) fn from_raw(raw: &RawValue) -> Self {
        Self(raw.to_owned())
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}
