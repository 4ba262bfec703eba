//! The opening handshake (RFC 6455 §4.1, §4.2.2): the client's upgrade request and the checks
//! a client MUST make on the server's answer.

use anyhow::{Result, bail};
use base64::Engine;
use sha1::{Digest, Sha1};

/// The GUID every server appends to the key (§1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest response head a client waits for; a server that sends more is refused.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (§4.1: "randomly selected").
pub fn new_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

/// The `Sec-WebSocket-Accept` a server must answer to `key` (§4.2.2, step 5.4).
pub fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The upgrade request for `path` on `host`, offering no extension and no subprotocol.
pub fn request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Checks a response head (up to and excluding the blank line) against §4.1's list of what
/// a client MUST verify: status 101, `Upgrade: websocket`, `Connection: Upgrade`, the right
/// `Sec-WebSocket-Accept`, and no extension or subprotocol it did not offer.
pub fn check_response(head: &str, key: &str) -> Result<()> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.1 ") || code != "101" {
        bail!("the server did not switch protocols: {status:?}");
    }
    let headers: Vec<(String, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        bail!("no `Upgrade: websocket` in the answer:\n{head}");
    }
    if !header("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))) {
        bail!("no `Connection: Upgrade` in the answer:\n{head}");
    }
    let expected = accept_for(key);
    match header("sec-websocket-accept") {
        Some(accept) if accept == expected => {}
        other => bail!("Sec-WebSocket-Accept is {other:?}, expected {expected:?}"),
    }
    if let Some(extensions) = header("sec-websocket-extensions") {
        bail!("the server chose extensions the client did not offer: {extensions}");
    }
    if let Some(protocol) = header("sec-websocket-protocol") {
        bail!("the server chose a subprotocol the client did not offer: {protocol}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of RFC 6455 §1.3.
    #[test]
    fn the_accept_value_matches_the_rfc_example() {
        assert_eq!(accept_for("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        // And tungstenite, an independent implementation, agrees on a random key.
        let key = new_key();
        assert_eq!(
            accept_for(&key),
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
        );
    }

    #[test]
    fn keys_are_16_random_bytes() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        let decoded = base64::engine::general_purpose::STANDARD.decode(&a).unwrap();
        assert_eq!(decoded.len(), 16);
    }

    fn answer(accept: &str, extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {accept}{extra}"
        )
    }

    #[test]
    fn a_correct_answer_passes_and_header_case_does_not_matter() {
        let key = new_key();
        check_response(&answer(&accept_for(&key), ""), &key).unwrap();
    }

    #[test]
    fn wrong_answers_are_refused() {
        let key = new_key();
        let accept = accept_for(&key);
        assert!(check_response(&answer(&accept_for("other"), ""), &key).is_err());
        assert!(
            check_response(
                &answer(&accept, "\r\nSec-WebSocket-Extensions: permessage-deflate"),
                &key
            )
            .is_err()
        );
        assert!(check_response(&answer(&accept, "\r\nSec-WebSocket-Protocol: chat"), &key).is_err());
        assert!(check_response(&format!("HTTP/1.1 200 OK\r\nSec-WebSocket-Accept: {accept}"), &key).is_err());
        let no_upgrade =
            format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}");
        assert!(check_response(&no_upgrade, &key).is_err());
    }
}
