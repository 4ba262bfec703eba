//! Identifiers that carry their own routing information.

use std::fmt;
use std::str::FromStr;

/// A process identity: random per start, so a restarted gateway never reuses the ids of its
/// previous life, and a link dialled to a reused address can tell it reached someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl NodeId {
    /// Draws a fresh random non-zero id.
    pub fn random() -> NodeId {
        loop {
            let id: u64 = rand::random();
            if id != 0 {
                return NodeId(id);
            }
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A cluster-unique client (connection) id: the owning gateway's [`NodeId`] and a per-gateway
/// counter.
///
/// Any process can tell which gateway holds a client from the id alone, so sending to one client
/// needs no lookup. The text form is 32 lowercase hex digits (gateway, then connection number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    /// The gateway process that accepted the connection.
    pub gateway: NodeId,
    /// The connection number, unique within that gateway process.
    pub conn: u64,
}

impl ClientId {
    /// Builds an id from its parts.
    pub fn new(gateway: NodeId, conn: u64) -> ClientId {
        ClientId { gateway, conn }
    }

    /// Returns the bytes hashed for worker selection.
    pub fn hash_key(&self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.gateway.0.to_be_bytes());
        key[8..].copy_from_slice(&self.conn.to_be_bytes());
        key
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.gateway.0, self.conn)
    }
}

/// Why a string is not a [`ClientId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client id {0:?}: expected 32 hex digits")]
pub struct ParseClientIdError(pub String);

impl FromStr for ClientId {
    type Err = ParseClientIdError;

    fn from_str(s: &str) -> Result<ClientId, ParseClientIdError> {
        let bad = || ParseClientIdError(s.chars().take(64).collect());
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let gateway = u64::from_str_radix(&s[..16], 16).map_err(|_| bad())?;
        let conn = u64::from_str_radix(&s[16..], 16).map_err(|_| bad())?;
        if gateway == 0 {
            return Err(bad());
        }
        Ok(ClientId::new(NodeId(gateway), conn))
    }
}

impl serde::Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ClientId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_text_form_round_trips() {
        let id = ClientId::new(NodeId(0xdead_beef_0000_0001), 42);
        let text = id.to_string();
        assert_eq!(text, "deadbeef00000001000000000000002a");
        assert_eq!(text.parse::<ClientId>().unwrap(), id);
    }

    #[test]
    fn malformed_client_ids_are_rejected() {
        for bad in [
            "",
            "xyz",
            "00000000000000000000000000000001",
            &"a".repeat(33),
            "g".repeat(32).as_str(),
        ] {
            assert!(bad.parse::<ClientId>().is_err(), "{bad:?} accepted");
        }
    }
}
