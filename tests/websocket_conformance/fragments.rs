//! Section 5 (Autobahn 5.x): fragmented messages are reassembled and echoed as one message
//! (§5.4), control frames between fragments are answered, and every broken fragmentation —
//! an orphan continuation, a new data frame while a message is open, a fragmented control
//! frame — fails the connection.

use gatehouse_testkit::rawws::{Frame, fragments, opcode};

use crate::case::{Case, Expect, Step};
use crate::payload::{ascii, binary, bytes, pong, text};
use crate::report::Section;

pub fn section() -> Section {
    let two = || vec![Frame::text("fragment1").fin(false), Frame::continuation("fragment2")];
    let two_with_ping = || {
        vec![
            Frame::text("fragment1").fin(false),
            Frame::ping("between"),
            Frame::continuation("fragment2"),
        ]
    };
    let joined = || text("fragment1fragment2");
    let orphan = |fin: bool| vec![Frame::continuation("orphan").fin(fin), Frame::text("Hello")];
    let mut cases = vec![
        Case::new(
            "5.1",
            "ping in two fragments",
            vec![Frame::ping("frag").fin(false), Frame::continuation("ment")],
            Expect::fail(1002),
        ),
        Case::new(
            "5.2",
            "pong in two fragments",
            vec![Frame::pong("frag").fin(false), Frame::continuation("ment")],
            Expect::fail(1002),
        ),
        Case::new("5.3", "text in two fragments", two(), Expect::echo(vec![joined()])),
        Case::new(
            "5.4",
            "text in two fragments, one byte per write",
            two(),
            Expect::echo(vec![joined()]),
        )
        .chopped(1),
        Case::new(
            "5.5",
            "text in two fragments, frame-wise writes",
            two(),
            Expect::echo(vec![joined()]),
        )
        .frame_wise(),
        Case::new(
            "5.6",
            "text in two fragments with a ping between",
            two_with_ping(),
            Expect::echo(vec![pong("between"), joined()]),
        ),
        Case::new(
            "5.7",
            "text in two fragments with a ping between, one byte per write",
            two_with_ping(),
            Expect::echo(vec![pong("between"), joined()]),
        )
        .chopped(1),
        Case::new(
            "5.8",
            "text in two fragments with a ping between, frame-wise writes",
            two_with_ping(),
            Expect::echo(vec![pong("between"), joined()]),
        )
        .frame_wise(),
        Case::new(
            "5.9",
            "continuation (FIN) with nothing to continue, then text",
            orphan(true),
            Expect::fail(1002),
        ),
        Case::new(
            "5.10",
            "continuation (FIN) with nothing to continue, then text, one byte per write",
            orphan(true),
            Expect::fail(1002),
        )
        .chopped(1),
        Case::new(
            "5.11",
            "continuation (FIN) with nothing to continue, then text, frame-wise",
            orphan(true),
            Expect::fail(1002),
        )
        .frame_wise(),
        Case::new(
            "5.12",
            "continuation (no FIN) with nothing to continue, then text",
            orphan(false),
            Expect::fail(1002),
        ),
        Case::new(
            "5.13",
            "continuation (no FIN) with nothing to continue, then text, one byte per write",
            orphan(false),
            Expect::fail(1002),
        )
        .chopped(1),
        Case::new(
            "5.14",
            "continuation (no FIN) with nothing to continue, then text, frame-wise",
            orphan(false),
            Expect::fail(1002),
        )
        .frame_wise(),
        Case::new(
            "5.15",
            "text in two fragments, then an orphan continuation, then text",
            vec![
                Frame::text("fragment1").fin(false),
                Frame::continuation("fragment2"),
                Frame::continuation("fragment3").fin(false),
                Frame::text("fragment4"),
            ],
            Expect::fail(1002).after(vec![joined()]),
        ),
        Case::new(
            "5.16",
            "twice: orphan continuation (no FIN), text (no FIN), continuation (FIN)",
            (0..2)
                .flat_map(|_| {
                    [
                        Frame::continuation("fragment1").fin(false),
                        Frame::text("fragment2").fin(false),
                        Frame::continuation("fragment3"),
                    ]
                })
                .collect(),
            Expect::fail(1002),
        ),
        Case::new(
            "5.17",
            "twice: orphan continuation (FIN), text (no FIN), continuation (FIN)",
            (0..2)
                .flat_map(|_| {
                    [
                        Frame::continuation("fragment1"),
                        Frame::text("fragment2").fin(false),
                        Frame::continuation("fragment3"),
                    ]
                })
                .collect(),
            Expect::fail(1002),
        ),
        Case::new(
            "5.18",
            "text in two fragments that both carry the text opcode",
            vec![Frame::text("fragment1").fin(false), Frame::text("fragment2")],
            Expect::fail(1002),
        ),
    ];
    for (id, chop) in [("5.19", None), ("5.20", Some(1))] {
        // Each ping's pong is awaited before the next fragment goes out: proof that control
        // frames are answered while a fragmented message is open, without a sleep.
        let mut steps = Vec::new();
        let mut expected = Vec::new();
        for index in 1..=4 {
            let ping = format!("pong-{index}").into_bytes();
            let first = index == 1;
            let fragment = if first {
                Frame::text("fragment1")
            } else {
                Frame::continuation(format!("fragment{index}"))
            };
            steps.push(Step::Send(vec![fragment.fin(false), Frame::ping(ping.clone())]));
            steps.push(Step::AwaitPong(ping.clone()));
            expected.push(pong(ping));
        }
        steps.push(Step::Send(vec![Frame::continuation("fragment5")]));
        expected.push(text("fragment1fragment2fragment3fragment4fragment5"));
        let case = Case::steps(
            id,
            format!(
                "text in five fragments, a ping after each of the first four, each pong awaited{}",
                if chop.is_some() { ", one byte per write" } else { "" }
            ),
            steps,
            Expect::echo(expected),
        );
        cases.push(match chop {
            Some(n) => case.chopped(n),
            None => case,
        });
    }
    cases.extend([
        Case::new(
            "5.21",
            "binary in three fragments",
            fragments(opcode::BINARY, &bytes(3000), 1000),
            Expect::echo(vec![binary(bytes(3000))]),
        ),
        Case::new(
            "5.22",
            "text in 2000 one-byte fragments",
            fragments(opcode::TEXT, &ascii(2000), 1),
            Expect::echo(vec![text(ascii(2000))]),
        ),
        Case::new(
            "5.23",
            "binary in 2000 one-byte fragments",
            fragments(opcode::BINARY, &bytes(2000), 1),
            Expect::echo(vec![binary(bytes(2000))]),
        ),
        Case::new(
            "5.24",
            "text in four fragments, three of them empty",
            vec![
                Frame::text("").fin(false),
                Frame::continuation("").fin(false),
                Frame::continuation("middle").fin(false),
                Frame::continuation(""),
            ],
            Expect::echo(vec![text("middle")]),
        ),
        Case::new(
            "5.25",
            "text in two fragments with an unsolicited pong between",
            vec![
                Frame::text("fragment1").fin(false),
                Frame::pong("unsolicited"),
                Frame::continuation("fragment2"),
            ],
            Expect::echo(vec![joined()]),
        ),
        Case::new(
            "5.26",
            "binary in two fragments, then a text message",
            vec![
                Frame::binary(bytes(10)).fin(false),
                Frame::continuation(bytes(20)),
                Frame::text("after"),
            ],
            Expect::echo(vec![binary([bytes(10), bytes(20)].concat()), text("after")]),
        ),
    ]);
    Section {
        number: "5",
        title: "fragmentation",
        max_message_bytes: 64 * 1024,
        cases,
    }
}
