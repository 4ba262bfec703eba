//! [`Frame`]: one WebSocket message, text or binary, as cheap-to-clone bytes.

use bytes::Bytes;
use gatehouse_proto::v1::Payload;

/// One message to or from a client. Text frames are valid UTF-8; cloning shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    data: Bytes,
    binary: bool,
}

impl Frame {
    /// A text frame.
    pub fn text(text: impl Into<String>) -> Frame {
        Frame {
            data: Bytes::from(text.into()),
            binary: false,
        }
    }

    /// A binary frame.
    pub fn binary(data: impl Into<Bytes>) -> Frame {
        Frame {
            data: data.into(),
            binary: true,
        }
    }

    /// A text frame holding `value` as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Frame {
        Frame {
            data: Bytes::from(serde_json::to_vec(value).expect("json values serialise")),
            binary: false,
        }
    }

    /// Whether this is a binary frame.
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// The text of a text frame.
    pub fn as_text(&self) -> Option<&str> {
        if self.binary {
            return None;
        }
        std::str::from_utf8(&self.data).ok()
    }

    /// The raw bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub(crate) fn from_payload(payload: Payload) -> Frame {
        Frame {
            data: payload.data,
            binary: payload.binary,
        }
    }

    pub(crate) fn to_payload(&self) -> Payload {
        Payload {
            data: self.data.clone(),
            binary: self.binary,
        }
    }
}
