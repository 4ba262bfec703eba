//! Section 2 (Autobahn 2.x): pings are answered with pongs carrying the same payload (§5.5.2,
//! §5.5.3), a ping over 125 bytes fails the connection (§5.5), unsolicited pongs are ignored.

use gatehouse_testkit::rawws::Frame;

use crate::case::{Case, Expect};
use crate::payload::{ascii, pong, text};
use crate::report::Section;

pub fn section() -> Section {
    let odd_bytes = vec![0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];
    let ten: Vec<Vec<u8>> = (0..10).map(|i| format!("payload-{i}").into_bytes()).collect();
    let cases = vec![
        Case::new(
            "2.1",
            "ping without payload",
            vec![Frame::ping("")],
            Expect::echo(vec![pong("")]),
        ),
        Case::new(
            "2.2",
            "ping with a short text payload",
            vec![Frame::ping("Hello, world!")],
            Expect::echo(vec![pong("Hello, world!")]),
        ),
        Case::new(
            "2.3",
            "ping with a binary (non-UTF-8) payload",
            vec![Frame::ping(odd_bytes.clone())],
            Expect::echo(vec![pong(odd_bytes)]),
        ),
        Case::new(
            "2.4",
            "ping with the largest payload, 125 bytes",
            vec![Frame::ping(ascii(125))],
            Expect::echo(vec![pong(ascii(125))]),
        ),
        Case::new(
            "2.5",
            "ping with 126 bytes (control frames carry at most 125)",
            vec![Frame::ping(ascii(126))],
            Expect::fail(1002),
        ),
        Case::new(
            "2.6",
            "ping with 125 bytes written one byte per write",
            vec![Frame::ping(ascii(125))],
            Expect::echo(vec![pong(ascii(125))]),
        )
        .chopped(1),
        Case::new(
            "2.7",
            "unsolicited pong without payload, then a text marker",
            vec![Frame::pong(""), Frame::text("marker")],
            Expect::echo(vec![text("marker")]),
        ),
        Case::new(
            "2.8",
            "unsolicited pong with payload, then a text marker",
            vec![Frame::pong("unsolicited"), Frame::text("marker")],
            Expect::echo(vec![text("marker")]),
        ),
        Case::new(
            "2.9",
            "unsolicited pong, then a ping: only the ping is answered",
            vec![Frame::pong("unsolicited"), Frame::ping("solicited")],
            Expect::echo(vec![pong("solicited")]),
        ),
        Case::new(
            "2.10",
            "ten pings in one write (pongs may be coalesced to the last, §5.5.3)",
            ten.iter().map(|p| Frame::ping(p.clone())).collect(),
            Expect::echo(ten.iter().map(|p| pong(p.clone())).collect()),
        ),
        Case::new(
            "2.11",
            "ten pings written one byte per write",
            ten.iter().map(|p| Frame::ping(p.clone())).collect(),
            Expect::echo(ten.iter().map(|p| pong(p.clone())).collect()),
        )
        .chopped(1),
        Case::new(
            "2.12",
            "a ping between two text messages",
            vec![Frame::text("first"), Frame::ping("between"), Frame::text("second")],
            Expect::echo(vec![text("first"), pong("between"), text("second")]),
        ),
    ];
    Section {
        number: "2",
        title: "pings and pongs",
        max_message_bytes: 64 * 1024,
        cases,
    }
}
