//! Section 1 (Autobahn 1.x): text and binary messages across the three length encodings and up
//! to the configured limit, echoed byte for byte; extra cases for the length forms, unmasked
//! client frames, and the gateway's documented answer to oversized messages (1009).

use gatehouse_testkit::rawws::{Frame, Length, Mask, opcode};

use crate::case::{Case, Expect, Verdict};
use crate::payload::{ascii, binary, bytes, size, text, utf8};
use crate::report::Section;

/// The limit this section runs with (`--max-message-bytes`).
pub const LIMIT: usize = 16 * 1024 * 1024;

/// The lengths at the edges of the 7-bit, 16-bit and 64-bit forms.
const EDGES: [usize; 7] = [0, 125, 126, 127, 128, 65535, 65536];

pub fn section() -> Section {
    let mut cases = Vec::new();
    for (kind, op, make) in [
        (1, opcode::TEXT, ascii as fn(usize) -> Vec<u8>),
        (2, opcode::BINARY, bytes as fn(usize) -> Vec<u8>),
    ] {
        let name = if op == opcode::TEXT { "text" } else { "binary" };
        let echo = |payload: Vec<u8>| {
            if op == opcode::TEXT {
                text(payload)
            } else {
                binary(payload)
            }
        };
        for (index, len) in EDGES.into_iter().enumerate() {
            cases.push(Case::new(
                format!("1.{kind}.{}", index + 1),
                format!("{name} message of {len} bytes"),
                vec![Frame::new(op, make(len))],
                Expect::echo(vec![echo(make(len))]),
            ));
        }
        cases.push(
            Case::new(
                format!("1.{kind}.8"),
                format!("{name} message of 65536 bytes written in chunks of 997 bytes"),
                vec![Frame::new(op, make(65536))],
                Expect::echo(vec![echo(make(65536))]),
            )
            .chopped(997),
        );
        let big = if op == opcode::TEXT {
            utf8(1 << 20)
        } else {
            bytes(1 << 20)
        };
        cases.push(
            Case::new(
                format!("1.{kind}.9"),
                format!("{name} message of about 1 MiB"),
                vec![Frame::new(op, big.clone())],
                Expect::echo(vec![echo(big)]),
            )
            .large(),
        );
        let at_limit = make(LIMIT);
        cases.push(
            Case::new(
                format!("1.{kind}.10"),
                format!("{name} message of exactly the limit ({})", size(LIMIT)),
                vec![Frame::new(op, at_limit.clone())],
                Expect::echo(vec![echo(at_limit)]),
            )
            .large(),
        );
    }

    // Length forms a sender MUST NOT use (§5.2: "the minimal number of bytes MUST be used");
    // the RFC does not say what a receiver does with them, so an echo and a failure are both
    // fine. A length with the top bit set is out of range and must not be echoed.
    let hello = || b"Hello".to_vec();
    cases.push(Case::new(
        "1.3.1",
        "5-byte text in the 16-bit length form",
        vec![Frame::text(hello()).length(Length::Bits16)],
        Expect::EchoOrFail {
            events: vec![text(hello())],
            codes: vec![1002],
        },
    ));
    cases.push(Case::new(
        "1.3.2",
        "5-byte text in the 64-bit length form",
        vec![Frame::text(hello()).length(Length::Bits64)],
        Expect::EchoOrFail {
            events: vec![text(hello())],
            codes: vec![1002],
        },
    ));
    cases.push(Case::new(
        "1.3.3",
        "300-byte binary in the 64-bit length form",
        vec![Frame::binary(bytes(300)).length(Length::Bits64)],
        Expect::EchoOrFail {
            events: vec![binary(bytes(300))],
            codes: vec![1002],
        },
    ));
    cases.push(Case::new(
        "1.3.4",
        "binary header with the 64-bit length's top bit set (§5.2: MUST be 0)",
        vec![Frame::binary(Vec::new()).length(Length::Declared64((1 << 63) | 5))],
        Expect::fail(1002).or(1009),
    ));
    // §5.1: "The server MUST close the connection upon receiving a frame that is not masked";
    // the Close 1002 before it is a MAY, so a plain TCP close is as good.
    cases.push(Case::new(
        "1.3.5",
        "unmasked text frame from the client",
        vec![Frame::text(hello()).mask(Mask::None)],
        Expect::fail(1002).on_drop(Verdict::Ok),
    ));

    // The gateway documents 1009 for a message over --max-message-bytes
    // (docs/architecture.md, "Gateway limits and close codes"), so a TCP drop is FAILED here.
    let documented = || Verdict::Failed("dropped TCP instead of the documented Close 1009".into());
    cases.push(
        Case::new(
            "1.4.1",
            format!("text message one byte over the limit ({} + 1)", size(LIMIT)),
            vec![Frame::text(ascii(LIMIT + 1))],
            Expect::fail(1009).on_drop(documented()),
        )
        .large(),
    );
    cases.push(Case::new(
        "1.4.2",
        "binary header announcing limit + 1 bytes, payload never sent (refused from the header)",
        vec![Frame::binary(Vec::new()).length(Length::Declared64(LIMIT as u64 + 1))],
        Expect::fail(1009).on_drop(documented()),
    ));
    let half = LIMIT / 2 + 1;
    cases.push(
        Case::new(
            "1.4.3",
            format!("binary message in two fragments of {half} bytes: each under the limit, together over it"),
            vec![Frame::binary(bytes(half)).fin(false), Frame::continuation(bytes(half))],
            Expect::fail(1009).on_drop(documented()),
        )
        .large(),
    );
    Section {
        number: "1",
        title: "framing and message sizes",
        max_message_bytes: LIMIT,
        cases,
    }
}
