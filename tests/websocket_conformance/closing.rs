//! Section 7 (Autobahn 7.x): the closing handshake. A server that receives a Close MUST answer
//! with a Close (§5.5.1), typically echoing the code, and then close TCP (§5.5.1, §7.1.1); data
//! the client sends after its Close is ignored. A Close whose payload is malformed — one byte,
//! over 125 bytes, a code that may not be sent, a reason that is not UTF-8 — fails the
//! connection instead.

use gatehouse_testkit::rawws::Frame;

use crate::case::{Case, Expect};
use crate::payload::{ascii, text};
use crate::report::Section;

/// Codes a client may send: the RFC's, the IANA registry's 1012-1014, and the registered and
/// private ranges (see `rawws::close_code_is_valid`).
pub const VALID_CODES: [u16; 16] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
];

/// Codes no endpoint may send (§7.4: unused, reserved, or never on the wire).
pub const INVALID_CODES: [u16; 10] = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999];

pub fn section() -> Section {
    let normal = || Expect::close_reply(&[Some(1000), None]);
    let mut cases = vec![
        Case::new(
            "7.1.1",
            "text, then Close 1000 (one write)",
            vec![Frame::text("Hello"), Frame::close(1000, "")],
            normal().after(vec![text("Hello")]),
        ),
        Case::new(
            "7.1.2",
            "Close 1000 twice",
            vec![Frame::close(1000, ""), Frame::close(1000, "")],
            normal(),
        ),
        Case::new(
            "7.1.3",
            "Close 1000, then a ping",
            vec![Frame::close(1000, ""), Frame::ping("after close")],
            normal(),
        ),
        Case::new(
            "7.1.4",
            "Close 1000, then text (must be ignored)",
            vec![Frame::close(1000, ""), Frame::text("after close")],
            normal(),
        ),
        Case::new(
            "7.1.5",
            "first text fragment, Close 1000, last fragment",
            vec![
                Frame::text("fragment1").fin(false),
                Frame::close(1000, ""),
                Frame::continuation("fragment2"),
            ],
            normal(),
        ),
        Case::new(
            "7.1.6",
            "a 60 KiB text, then Close 1000, then a ping",
            vec![
                Frame::text(ascii(60 * 1024)),
                Frame::close(1000, ""),
                Frame::ping("after close"),
            ],
            normal().after(vec![text(ascii(60 * 1024))]),
        ),
        Case::new(
            "7.3.1",
            "Close with an empty payload",
            vec![Frame::close_empty()],
            Expect::close_reply(&[None, Some(1000)]),
        ),
        Case::new(
            "7.3.2",
            "Close with a 1-byte payload",
            vec![Frame::new(gatehouse_testkit::rawws::opcode::CLOSE, vec![0x03])],
            Expect::fail(1002),
        ),
        Case::new(
            "7.3.3",
            "Close 1000 without a reason",
            vec![Frame::close(1000, "")],
            normal(),
        ),
        Case::new(
            "7.3.4",
            "Close 1000 with a reason",
            vec![Frame::close(1000, "Hello World!")],
            normal(),
        ),
        Case::new(
            "7.3.5",
            "Close 1000 with a 123-byte reason (the largest control payload)",
            vec![Frame::close(1000, ascii(123))],
            normal(),
        ),
        Case::new(
            "7.3.6",
            "Close 1000 with a 124-byte reason (payload of 126 bytes)",
            vec![Frame::close(1000, ascii(124))],
            Expect::fail(1002),
        ),
        Case::new(
            "7.5.1",
            "Close 1000 with a reason that is not UTF-8",
            vec![Frame::close(
                1000,
                b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            )],
            Expect::fail(1007).lenient(&[1002]),
        ),
    ];
    for (index, code) in VALID_CODES.into_iter().enumerate() {
        cases.push(Case::new(
            format!("7.7.{}", index + 1),
            format!("Close with the valid code {code}"),
            vec![Frame::close(code, "")],
            // §5.5.1: the answer "typically echos the status code"; 1000 and an empty Close
            // answer it too.
            Expect::close_reply(&[Some(code), Some(1000), None]),
        ));
    }
    for (index, code) in INVALID_CODES.into_iter().enumerate() {
        cases.push(Case::new(
            format!("7.9.{}", index + 1),
            format!("Close with the invalid code {code}"),
            vec![Frame::close(code, "")],
            Expect::fail(1002),
        ));
    }
    for (index, code) in [5000u16, 65535].into_iter().enumerate() {
        // Outside every range §7.4.2 defines. Autobahn calls the outcome informational; a
        // protocol error is the precise answer, a normal close an acceptable one.
        cases.push(Case::new(
            format!("7.13.{}", index + 1),
            format!("Close with the out-of-range code {code}"),
            vec![Frame::close(code, "")],
            Expect::fail(1002).lenient(&[1000]),
        ));
    }
    Section {
        number: "7",
        title: "close handling",
        max_message_bytes: 64 * 1024,
        cases,
    }
}
