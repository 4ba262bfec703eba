//! Sections 3 and 4 (Autobahn 3.x, 4.x): RSV bits without a negotiated extension and reserved
//! opcodes MUST fail the connection (§5.2); the Close that SHOULD precede it carries 1002.
//! Frames sent before the bad one are still owed their answers; frames after it are not.

use gatehouse_testkit::rawws::{Frame, opcode};

use crate::case::{Case, Expect};
use crate::payload::text;
use crate::report::Section;

/// Section 3: every RSV combination, on data and control frames.
pub fn reserved_bits() -> Section {
    let hello = || Frame::text("Hello");
    let cases = vec![
        Case::new(
            "3.1",
            "text with RSV = 1",
            vec![Frame::text("Hello").rsv(1)],
            Expect::fail(1002),
        ),
        Case::new(
            "3.2",
            "text, then text with RSV = 2, then ping",
            vec![hello(), Frame::text("Hello").rsv(2), Frame::ping("after")],
            Expect::fail(1002).after(vec![text("Hello")]),
        ),
        Case::new(
            "3.3",
            "text, then text with RSV = 3, then ping, one byte per write",
            vec![hello(), Frame::text("Hello").rsv(3), Frame::ping("after")],
            Expect::fail(1002).after(vec![text("Hello")]),
        )
        .chopped(1),
        Case::new(
            "3.4",
            "text, then text with RSV = 4 (permessage-deflate's bit, not negotiated), then ping, frame-wise",
            vec![hello(), Frame::text("Hello").rsv(4), Frame::ping("after")],
            Expect::fail(1002).after(vec![text("Hello")]),
        )
        .frame_wise(),
        Case::new(
            "3.5",
            "binary with RSV = 5",
            vec![Frame::binary(vec![0u8, 1, 2]).rsv(5)],
            Expect::fail(1002),
        ),
        Case::new(
            "3.6",
            "ping with RSV = 6",
            vec![Frame::ping("rsv").rsv(6)],
            Expect::fail(1002),
        ),
        Case::new(
            "3.7",
            "close with RSV = 7",
            vec![Frame::close(1000, "").rsv(7)],
            Expect::fail(1002),
        ),
    ];
    Section {
        number: "3",
        title: "reserved bits",
        max_message_bytes: 64 * 1024,
        cases,
    }
}

/// Section 4: the reserved data opcodes 3-7 (4.1.x) and control opcodes 0xB-0xF (4.2.x),
/// each alone and after a text message with a ping behind it.
pub fn reserved_opcodes() -> Section {
    let mut cases = Vec::new();
    for (group, ops) in [(1, [3u8, 4, 5, 6, 7]), (2, [0xB, 0xC, 0xD, 0xE, 0xF])] {
        for (index, op) in ops.into_iter().enumerate() {
            let name = opcode::name(op);
            cases.push(Case::new(
                format!("4.{group}.{}", 2 * index + 1),
                format!("{name} frame with a payload"),
                vec![Frame::new(op, "reserved")],
                Expect::fail(1002),
            ));
            cases.push(Case::new(
                format!("4.{group}.{}", 2 * index + 2),
                format!("text, then an empty {name} frame, then ping"),
                vec![Frame::text("Hello"), Frame::new(op, ""), Frame::ping("after")],
                Expect::fail(1002).after(vec![text("Hello")]),
            ));
        }
    }
    Section {
        number: "4",
        title: "reserved opcodes",
        max_message_bytes: 64 * 1024,
        cases,
    }
}
