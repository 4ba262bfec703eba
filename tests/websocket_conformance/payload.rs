//! Payloads and expected events: every payload varies byte by byte, so that a reordered,
//! truncated or shifted echo never matches by accident.

use gatehouse_testkit::rawws::Event;

/// `n` printable ASCII bytes.
pub fn ascii(n: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n).map(|i| ALPHABET[i % ALPHABET.len()]).collect()
}

/// `n` bytes covering every byte value (not UTF-8).
pub fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8).collect()
}

/// UTF-8 text of at most `n` bytes (and at least `n - 3`) mixing 1- to 4-byte characters, so
/// that fragment and chunk boundaries fall inside characters.
pub fn utf8(n: usize) -> Vec<u8> {
    const SAMPLE: &str = "Grüße, κόσμε! 日本語 🦀 ½€ ";
    let mut text = String::with_capacity(n + SAMPLE.len());
    while text.len() + SAMPLE.len() <= n {
        text.push_str(SAMPLE);
    }
    for c in SAMPLE.chars() {
        if text.len() + c.len_utf8() > n {
            break;
        }
        text.push(c);
    }
    text.into_bytes()
}

/// The expected echo of a text message.
pub fn text(payload: impl Into<Vec<u8>>) -> Event {
    Event::Text(payload.into())
}

/// The expected echo of a binary message.
pub fn binary(payload: impl Into<Vec<u8>>) -> Event {
    Event::Binary(payload.into())
}

/// The expected pong.
pub fn pong(payload: impl Into<Vec<u8>>) -> Event {
    Event::Pong(payload.into())
}

/// A human size: 65536 → "64 KiB".
pub fn size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_payloads_are_valid_and_close_to_the_size() {
        for n in [0, 1, 3, 100, 1000, 65_536] {
            let text = utf8(n);
            assert!(std::str::from_utf8(&text).is_ok());
            assert!(text.len() <= n && text.len() + 4 > n, "{n}: {}", text.len());
        }
    }
}
