//! What a server did on one connection, as the client saw it, and how the connection ended.

use std::fmt;
use std::time::Duration;

use super::frame::CloseFrame;

/// Something the server sent, at message level: data messages reassembled from their
/// fragments, pongs, and its Close frame. Its own pings are answered and only counted.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message (bytes as received; [`Transcript::violations`] notes invalid
    /// UTF-8).
    Text(Vec<u8>),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, payload) = match self {
            Event::Text(p) => ("text", p),
            Event::Binary(p) => ("binary", p),
            Event::Pong(p) => ("pong", p),
        };
        write!(f, "{kind}({})", preview(payload))
    }
}

/// A short, printable rendering of a payload for reports: short payloads in full, long ones
/// by length and a fingerprint, so that two different payloads of one length still differ.
pub fn preview(payload: &[u8]) -> String {
    if payload.len() <= 24 {
        match std::str::from_utf8(payload) {
            Ok(text) => format!("{text:?}"),
            Err(_) => format!("0x{}", payload.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        }
    } else {
        let fingerprint = payload.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{} bytes #{:04x}", payload.len(), fingerprint & 0xffff)
    }
}

/// How the TCP connection ended (or did not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The server closed its side (the client read end-of-stream).
    TcpClosed,
    /// The connection was reset (or another read error): the server closed with unread data
    /// in its receive buffer, or aborted.
    TcpReset(String),
    /// Still open when the bound ran out.
    Timeout(Duration),
}

/// Everything observed on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// Messages and pongs the server sent before its Close frame (or before the end).
    pub events: Vec<Event>,
    /// The server's Close frame, if it sent one.
    pub close: Option<CloseFrame>,
    /// Whether the client had sent its Close before the server's arrived (the client started
    /// the closing handshake, the server answered).
    pub client_closed_first: bool,
    /// How the connection ended.
    pub end: End,
    /// Protocol violations by the server: masked frames, RSV bits, reserved opcodes, bad
    /// fragmentation, oversized or fragmented control frames, invalid UTF-8 in a text
    /// message, an invalid Close payload, data frames after its Close.
    pub violations: Vec<String>,
    /// Oddities that break no MUST of the RFC (a control frame after its Close).
    pub notes: Vec<String>,
    /// Writes of the client that failed (the server may legitimately have closed already).
    pub write_errors: Vec<String>,
    /// Pings the server sent (answered automatically; not part of [`Transcript::events`]).
    pub server_pings: usize,
}

/// The classified end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server sent a Close frame, then closed TCP: the closing handshake completed (when
    /// the server started it, the client answered before the server's TCP close).
    Clean {
        /// The server's status code (`None`: empty Close payload).
        code: Option<u16>,
        /// The server's reason.
        reason: String,
    },
    /// The server sent a Close frame but left TCP open beyond the bound.
    CloseWithoutTcpClose {
        /// The server's status code.
        code: Option<u16>,
    },
    /// TCP ended without a Close frame from the server.
    Unclean {
        /// Reset rather than closed.
        reset: bool,
    },
    /// Neither a Close frame nor the end of TCP came within the bound.
    Timeout,
}

impl Transcript {
    /// Classifies how the connection ended.
    pub fn outcome(&self) -> Outcome {
        match (&self.close, &self.end) {
            (Some(close), End::TcpClosed | End::TcpReset(_)) => Outcome::Clean {
                code: close.code,
                reason: close.reason.clone(),
            },
            (Some(close), End::Timeout(_)) => Outcome::CloseWithoutTcpClose { code: close.code },
            (None, End::TcpClosed) => Outcome::Unclean { reset: false },
            (None, End::TcpReset(_)) => Outcome::Unclean { reset: true },
            (None, End::Timeout(_)) => Outcome::Timeout,
        }
    }

    /// One line for a report: the events, then how it ended, then any violation.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        match self.events.as_slice() {
            [] => {}
            [_, _, _, _, _, ..] => out.push_str(&format!(
                "{} events ({:?} … {:?}); ",
                self.events.len(),
                self.events[0],
                self.events[self.events.len() - 1]
            )),
            events => out.push_str(&format!("{events:?}; ")),
        }
        match (&self.close, &self.end) {
            (Some(close), end) => {
                let who = if self.client_closed_first {
                    "answered our Close with"
                } else {
                    "sent"
                };
                out.push_str(&format!("{who} {close}, then "));
                out.push_str(&match end {
                    End::TcpClosed => "closed TCP".to_owned(),
                    End::TcpReset(error) => format!("TCP reset ({error})"),
                    End::Timeout(after) => format!("left TCP open for {after:?}"),
                });
            }
            (None, End::TcpClosed) => out.push_str("TCP closed without a Close frame"),
            (None, End::TcpReset(error)) => out.push_str(&format!("TCP reset without a Close frame ({error})")),
            (None, End::Timeout(after)) => out.push_str(&format!("no Close frame and no TCP close within {after:?}")),
        }
        if !self.violations.is_empty() {
            out.push_str(&format!("; VIOLATIONS: {}", self.violations.join("; ")));
        }
        if !self.notes.is_empty() {
            out.push_str(&format!("; notes: {}", self.notes.join("; ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(close: Option<CloseFrame>, end: End) -> Transcript {
        Transcript {
            events: vec![Event::Text(b"hi".to_vec())],
            close,
            client_closed_first: true,
            end,
            violations: Vec::new(),
            notes: Vec::new(),
            write_errors: Vec::new(),
            server_pings: 0,
        }
    }

    #[test]
    fn outcomes_follow_the_close_frame_and_the_tcp_end() {
        let close = Some(CloseFrame::parse(&1000u16.to_be_bytes()));
        let timeout = End::Timeout(Duration::from_secs(5));
        assert_eq!(
            transcript(close.clone(), End::TcpClosed).outcome(),
            Outcome::Clean {
                code: Some(1000),
                reason: String::new()
            }
        );
        assert_eq!(
            transcript(close.clone(), timeout.clone()).outcome(),
            Outcome::CloseWithoutTcpClose { code: Some(1000) }
        );
        assert_eq!(
            transcript(None, End::TcpClosed).outcome(),
            Outcome::Unclean { reset: false }
        );
        assert_eq!(
            transcript(None, End::TcpReset("reset".into())).outcome(),
            Outcome::Unclean { reset: true }
        );
        assert_eq!(transcript(None, timeout).outcome(), Outcome::Timeout);
        assert_eq!(
            transcript(close, End::TcpClosed).summary(),
            "[text(\"hi\")]; answered our Close with Close 1000, then closed TCP"
        );
    }

    #[test]
    fn previews_keep_long_payloads_apart() {
        assert_eq!(preview(b"abc"), "\"abc\"");
        assert_eq!(preview(&[0xff, 0x00]), "0xff00");
        let a = preview(&[1u8; 100]);
        let b = preview(&[2u8; 100]);
        assert!(a.starts_with("100 bytes") && a != b, "{a} {b}");
    }
}
