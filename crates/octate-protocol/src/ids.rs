//! Validated identifiers for users and rooms.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

fn validate_id(field: &'static str, value: &str) -> Result<(), ProtocolError> {
    let ok_len = !value.is_empty() && value.len() <= MAX_ID_LEN;
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(ProtocolError::InvalidField {
            field,
            reason: "must be 1-128 characters of A-Z a-z 0-9 - _ . : @",
        })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        ///
        /// Cloning is a reference-count bump: ids are copied into every relayed message.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(Arc<str>);

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Validates and wraps an identifier.
            pub fn new(value: impl Into<String>) -> Result<Self, ProtocolError> {
                let value = value.into();
                validate_id($field, &value)?;
                Ok(Self(Arc::from(value)))
            }

            /// Validates and copies a borrowed identifier: one allocation, straight
            /// into the shared string.
            pub(crate) fn from_borrowed(value: &str) -> Result<Self, ProtocolError> {
                validate_id($field, value)?;
                Ok(Self(Arc::from(value)))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ProtocolError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A user's identifier, as carried by a verified token.
    UserId,
    "userId"
);
id_type!(
    /// A room's identifier.
    RoomId,
    "roomId"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_reasonable_ids() {
        for ok in ["a", "user-1", "room_456", "alice@example.com", "ns:room.1"] {
            assert!(UserId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_empty_long_and_odd_ids() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        for bad in ["", " ", "a b", "a/b", "ü", "<script>", long.as_str()] {
            assert!(RoomId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<UserId>("\"has space\"");
        assert!(err.is_err());
        let ok: UserId = serde_json::from_str("\"bob\"").expect("valid id");
        assert_eq!(ok.as_str(), "bob");
    }
}
