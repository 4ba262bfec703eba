//! Section 9 (Autobahn 9.x, at a smaller scale): large messages, many fragment sizes, many
//! write sizes and long pipelines. These measure nothing; they check that correctness does
//! not depend on how the bytes are cut or how fast they come.

use gatehouse_testkit::rawws::{Frame, fragments, opcode};

use crate::case::{Case, Expect};
use crate::payload::{ascii, binary, bytes, size, text, utf8};
use crate::report::Section;

/// The limit this section runs with.
pub const LIMIT: usize = 16 * 1024 * 1024;

pub fn section() -> Section {
    let mut cases = Vec::new();
    for (group, op) in [(1, opcode::TEXT), (2, opcode::BINARY)] {
        let make = |n: usize| if op == opcode::TEXT { utf8(n) } else { bytes(n) };
        let echo = |p: Vec<u8>| if op == opcode::TEXT { text(p) } else { binary(p) };
        let name = opcode::name(op);
        for (index, len) in [64 << 10, 256 << 10, 1 << 20, 4 << 20].into_iter().enumerate() {
            cases.push(
                Case::new(
                    format!("9.{group}.{}", index + 1),
                    format!("{name} message of {}", size(len)),
                    vec![Frame::new(op, make(len))],
                    Expect::echo(vec![echo(make(len))]),
                )
                .large(),
            );
        }
        let payload = make(1 << 20);
        for (index, fragment) in [64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20]
            .into_iter()
            .enumerate()
        {
            cases.push(
                Case::new(
                    format!("9.{}.{}", group + 2, index + 1),
                    format!("1 MiB {name} message in fragments of {}", size(fragment)),
                    fragments(op, &payload, fragment),
                    Expect::echo(vec![echo(payload.clone())]),
                )
                .large(),
            );
        }
        let payload = make(256 << 10);
        for (index, chunk) in [64, 128, 256, 512, 1024, 2048].into_iter().enumerate() {
            cases.push(
                Case::new(
                    format!("9.{}.{}", group + 4, index + 1),
                    format!("256 KiB {name} message written {chunk} bytes per write"),
                    vec![Frame::new(op, payload.clone())],
                    Expect::echo(vec![echo(payload.clone())]),
                )
                .chopped(chunk)
                .large(),
            );
        }
        for (index, len) in [0usize, 16, 64, 256, 1024, 4096].into_iter().enumerate() {
            // Numbered messages, so that order is checked too (except for empty ones).
            let messages: Vec<Vec<u8>> = (0..1000)
                .map(|n| {
                    let mut m = format!("{n:04}-").into_bytes();
                    m.extend(if op == opcode::TEXT { ascii(len) } else { bytes(len) });
                    m.truncate(len);
                    m
                })
                .collect();
            cases.push(
                Case::new(
                    format!("9.{}.{}", group + 6, index + 1),
                    format!("1000 {name} messages of {len} bytes in one write"),
                    messages.iter().map(|m| Frame::new(op, m.clone())).collect(),
                    Expect::echo(messages.into_iter().map(echo).collect()),
                )
                .large(),
            );
        }
    }
    Section {
        number: "9",
        title: "large messages and many fragments",
        max_message_bytes: LIMIT,
        cases,
    }
}
