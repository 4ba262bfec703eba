//! The `Gatehouse-Signature` header: HMAC-SHA256 with the shared key over the request's
//! timestamp and body, so that a backend believes only bodies the cluster sent, and only
//! recently (a captured request replayed later carries an old timestamp).
//!
//! Format: `t=<unix seconds>,v1=<64 lowercase hex digits>`, the MAC taken over
//! `<unix seconds>.<body>` (the timestamp as decimal ASCII, a dot, the raw body bytes).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "gatehouse-signature";

/// How far a timestamp may be from the verifier's clock (either way) in [`verify`]; backends
/// should use the same window.
pub const TOLERANCE_SECONDS: u64 = 300;

/// Returns the header value for `body` sent at `unix_seconds`.
pub fn sign(secret: &[u8], unix_seconds: u64, body: &[u8]) -> String {
    let tag = mac(secret, unix_seconds, body).finalize().into_bytes();
    let mut value = format!("t={unix_seconds},v1=");
    for byte in tag {
        value.push(char::from(HEX[usize::from(byte >> 4)]));
        value.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    value
}

/// Why a signature is not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `t=…,v1=…` with a decimal timestamp and 64 hex digits.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is outside [`TOLERANCE_SECONDS`] of now.
    #[error("signature timestamp too far from now")]
    Stale,
    /// The MAC does not match the body.
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks a header value against `body` at `now_seconds` (what a backend does; the tests'
/// Python backends do the same in a few lines). The comparison takes constant time.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now_seconds: u64) -> Result<(), SignatureError> {
    let (timestamp, tag) = parse(header).ok_or(SignatureError::Malformed)?;
    if timestamp.abs_diff(now_seconds) > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    mac(secret, timestamp, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn mac(secret: &[u8], unix_seconds: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes keys of any length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn parse(header: &str) -> Option<(u64, [u8; 32])> {
    let mut timestamp = None;
    let mut tag = None;
    for part in header.split(',') {
        match part.trim().split_once('=')? {
            ("t", value) => timestamp = value.parse::<u64>().ok(),
            ("v1", value) => tag = unhex(value),
            _ => {}
        }
    }
    Some((timestamp?, tag?))
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signature_verifies_only_for_its_body_its_key_and_a_recent_timestamp() {
        let header = sign(KEY, 1_700_000_000, b"{\"events\":[]}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(verify(KEY, &header, b"{\"events\":[]}", 1_700_000_100), Ok(()));
        assert_eq!(
            verify(KEY, &header, b"{\"events\":[1]}", 1_700_000_100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"another key, just as long as the first",
                &header,
                b"{\"events\":[]}",
                1_700_000_000
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(KEY, &header, b"{\"events\":[]}", 1_700_000_000 + TOLERANCE_SECONDS + 1),
            Err(SignatureError::Stale),
            "a replay after the window is refused"
        );
        assert_eq!(verify(KEY, "v1=00", b"", 0), Err(SignatureError::Malformed));
    }

    #[test]
    fn the_mac_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: python3 -c 'import hmac,hashlib;
        // print(hmac.new(b"key", b"1.body", hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(b"key", 1, b"body"),
            "t=1,v1=91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5"
        );
    }
}
