//! Section 6 (Autobahn 6.x): a text message MUST be UTF-8 (§5.6); a receiver that finds it is
//! not MUST fail the connection (§8.1), with 1007 (§7.4.1). Valid text — every sequence
//! length, boundary code points, noncharacters, and text split across fragments at every
//! byte — is echoed unchanged. Failing as soon as an invalid sequence arrives, before the
//! message ends, is allowed but not required.

use gatehouse_testkit::rawws::{Frame, fragments, opcode};

use crate::case::{Case, Expect};
use crate::payload::text;
use crate::report::Section;

/// A named byte sequence and whether it is UTF-8 (RFC 3629).
pub struct Vector {
    pub group: &'static str,
    pub title: &'static str,
    pub bytes: Vec<u8>,
    pub valid: bool,
}

fn v(group: &'static str, title: &'static str, bytes: &[u8], valid: bool) -> Vector {
    Vector {
        group,
        title,
        bytes: bytes.to_vec(),
        valid,
    }
}

/// Every start byte of a range, each followed by a space.
fn lonely(range: std::ops::RangeInclusive<u8>) -> Vec<u8> {
    range.flat_map(|b| [b, b' ']).collect()
}

/// The vectors, by group: valid ones first in each theme, then the invalid ones.
pub fn vectors() -> Vec<Vector> {
    let continuation_bytes: Vec<u8> = (0x80..=0xBF).collect();
    vec![
        // 6.5: ordinary text in several scripts.
        v("6.5", "Greek \"κόσμε\"", "κόσμε".as_bytes(), true),
        v(
            "6.5",
            "Latin with accents and symbols",
            "Grüße aus Köln, ça va? ½ € ✓".as_bytes(),
            true,
        ),
        v(
            "6.5",
            "Japanese (3-byte sequences)",
            "日本語のテキスト".as_bytes(),
            true,
        ),
        v("6.5", "4-byte sequences", "𝄞 music, 🦀 crab, 😀".as_bytes(), true),
        v(
            "6.5",
            "one character of each length",
            "a\u{80}\u{800}\u{10000}".as_bytes(),
            true,
        ),
        // 6.7: the first code point of each sequence length.
        v("6.7", "U+0000", &[0x00], true),
        v("6.7", "U+0080", &[0xC2, 0x80], true),
        v("6.7", "U+0800", &[0xE0, 0xA0, 0x80], true),
        v("6.7", "U+10000", &[0xF0, 0x90, 0x80, 0x80], true),
        // 6.8: the first of the 5- and 6-byte forms UTF-8 no longer has.
        v(
            "6.8",
            "5-byte form (former U+200000)",
            &[0xF8, 0x88, 0x80, 0x80, 0x80],
            false,
        ),
        v(
            "6.8",
            "6-byte form (former U+4000000)",
            &[0xFC, 0x84, 0x80, 0x80, 0x80, 0x80],
            false,
        ),
        // 6.9: the last code point of each sequence length.
        v("6.9", "U+007F", &[0x7F], true),
        v("6.9", "U+07FF", &[0xDF, 0xBF], true),
        v("6.9", "U+FFFF (a noncharacter, still UTF-8)", &[0xEF, 0xBF, 0xBF], true),
        v("6.9", "U+10FFFF", &[0xF4, 0x8F, 0xBF, 0xBF], true),
        // 6.10: beyond U+10FFFF.
        v("6.10", "U+110000", &[0xF4, 0x90, 0x80, 0x80], false),
        v("6.10", "4-byte form of U+1FFFFF", &[0xF7, 0xBF, 0xBF, 0xBF], false),
        v("6.10", "start byte F5", &[0xF5, 0x80, 0x80, 0x80], false),
        v(
            "6.10",
            "5-byte form of U+3FFFFFF",
            &[0xFB, 0xBF, 0xBF, 0xBF, 0xBF],
            false,
        ),
        v(
            "6.10",
            "6-byte form of U+7FFFFFFF",
            &[0xFD, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF],
            false,
        ),
        // 6.11: other boundaries.
        v("6.11", "U+D7FF (just below the surrogates)", &[0xED, 0x9F, 0xBF], true),
        v("6.11", "U+E000 (just above the surrogates)", &[0xEE, 0x80, 0x80], true),
        v("6.11", "U+FFFD", &[0xEF, 0xBF, 0xBD], true),
        v("6.11", "U+FEFF (byte order mark)", &[0xEF, 0xBB, 0xBF], true),
        // 6.12: continuation bytes without a start.
        v("6.12", "lone 0x80", &[0x80], false),
        v("6.12", "lone 0xBF", &[0xBF], false),
        v("6.12", "0x80 0xBF", &[0x80, 0xBF], false),
        v("6.12", "0x80 0xBF 0x80 0xBF", &[0x80, 0xBF, 0x80, 0xBF], false),
        v("6.12", "all 64 continuation bytes", &continuation_bytes, false),
        v(
            "6.12",
            "a continuation byte after a complete character",
            &[b'a', 0xC2, 0x80, 0x80],
            false,
        ),
        // 6.13: start bytes followed by a space instead of continuations.
        v(
            "6.13",
            "2-byte start bytes C0-DF, each followed by a space",
            &lonely(0xC0..=0xDF),
            false,
        ),
        v(
            "6.13",
            "3-byte start bytes E0-EF, each followed by a space",
            &lonely(0xE0..=0xEF),
            false,
        ),
        v(
            "6.13",
            "4-byte start bytes F0-F7, each followed by a space",
            &lonely(0xF0..=0xF7),
            false,
        ),
        v(
            "6.13",
            "5-byte start bytes F8-FB, each followed by a space",
            &lonely(0xF8..=0xFB),
            false,
        ),
        v(
            "6.13",
            "6-byte start bytes FC-FD, each followed by a space",
            &lonely(0xFC..=0xFD),
            false,
        ),
        // 6.14: sequences whose last byte is missing, at the end of the message.
        v("6.14", "C2 (U+0080 without its last byte)", &[0xC2], false),
        v("6.14", "E0 A0 (U+0800 without its last byte)", &[0xE0, 0xA0], false),
        v(
            "6.14",
            "F0 90 80 (U+10000 without its last byte)",
            &[0xF0, 0x90, 0x80],
            false,
        ),
        v("6.14", "DF (U+07FF without its last byte)", &[0xDF], false),
        v("6.14", "EF BF (U+FFFF without its last byte)", &[0xEF, 0xBF], false),
        v(
            "6.14",
            "F4 8F BF (U+10FFFF without its last byte)",
            &[0xF4, 0x8F, 0xBF],
            false,
        ),
        v(
            "6.14",
            "a truncated sequence followed by ASCII",
            &[0xE2, 0x82, b'A'],
            false,
        ),
        // 6.15: all of the above back to back.
        v(
            "6.15",
            "truncated sequences concatenated",
            &[0xC2, 0xE0, 0xA0, 0xF0, 0x90, 0x80, 0xDF, 0xEF, 0xBF, 0xF4, 0x8F, 0xBF],
            false,
        ),
        // 6.16: bytes that never appear in UTF-8.
        v("6.16", "FE", &[0xFE], false),
        v("6.16", "FF", &[0xFF], false),
        v("6.16", "FE FE FF FF", &[0xFE, 0xFE, 0xFF, 0xFF], false),
        // 6.17: overlong forms of '/'.
        v("6.17", "'/' as 2 bytes", &[0xC0, 0xAF], false),
        v("6.17", "'/' as 3 bytes", &[0xE0, 0x80, 0xAF], false),
        v("6.17", "'/' as 4 bytes", &[0xF0, 0x80, 0x80, 0xAF], false),
        v("6.17", "'/' as 5 bytes", &[0xF8, 0x80, 0x80, 0x80, 0xAF], false),
        v("6.17", "'/' as 6 bytes", &[0xFC, 0x80, 0x80, 0x80, 0x80, 0xAF], false),
        // 6.18: the largest overlong form of each length.
        v("6.18", "U+007F as 2 bytes", &[0xC1, 0xBF], false),
        v("6.18", "U+07FF as 3 bytes", &[0xE0, 0x9F, 0xBF], false),
        v("6.18", "U+FFFF as 4 bytes", &[0xF0, 0x8F, 0xBF, 0xBF], false),
        v("6.18", "U+1FFFFF as 5 bytes", &[0xF8, 0x87, 0xBF, 0xBF, 0xBF], false),
        v(
            "6.18",
            "U+3FFFFFF as 6 bytes",
            &[0xFC, 0x83, 0xBF, 0xBF, 0xBF, 0xBF],
            false,
        ),
        // 6.19: overlong NUL.
        v("6.19", "NUL as 2 bytes", &[0xC0, 0x80], false),
        v("6.19", "NUL as 3 bytes", &[0xE0, 0x80, 0x80], false),
        v("6.19", "NUL as 4 bytes", &[0xF0, 0x80, 0x80, 0x80], false),
        v("6.19", "NUL as 5 bytes", &[0xF8, 0x80, 0x80, 0x80, 0x80], false),
        v("6.19", "NUL as 6 bytes", &[0xFC, 0x80, 0x80, 0x80, 0x80, 0x80], false),
        // 6.20: single UTF-16 surrogates.
        v("6.20", "U+D800", &[0xED, 0xA0, 0x80], false),
        v("6.20", "U+DB7F", &[0xED, 0xAD, 0xBF], false),
        v("6.20", "U+DB80", &[0xED, 0xAE, 0x80], false),
        v("6.20", "U+DBFF", &[0xED, 0xAF, 0xBF], false),
        v("6.20", "U+DC00", &[0xED, 0xB0, 0x80], false),
        v("6.20", "U+DF80", &[0xED, 0xBE, 0x80], false),
        v("6.20", "U+DFFF", &[0xED, 0xBF, 0xBF], false),
        // 6.21: surrogate pairs encoded one by one (CESU-8 style).
        v("6.21", "U+D800 U+DC00", &[0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80], false),
        v("6.21", "U+D800 U+DFFF", &[0xED, 0xA0, 0x80, 0xED, 0xBF, 0xBF], false),
        v("6.21", "U+DB7F U+DC00", &[0xED, 0xAD, 0xBF, 0xED, 0xB0, 0x80], false),
        v("6.21", "U+DBFF U+DFFF", &[0xED, 0xAF, 0xBF, 0xED, 0xBF, 0xBF], false),
        // 6.22: noncharacters are valid UTF-8.
        v("6.22", "U+FFFE", &[0xEF, 0xBF, 0xBE], true),
        v("6.22", "U+FDD0", &[0xEF, 0xB7, 0x90], true),
        v("6.22", "U+FDEF", &[0xEF, 0xB7, 0xAF], true),
        v("6.22", "U+1FFFE", &[0xF0, 0x9F, 0xBF, 0xBE], true),
        v("6.22", "U+10FFFE", &[0xF4, 0x8F, 0xBF, 0xBE], true),
    ]
}

/// Valid text with a surrogate (U+D800) inside: "κόσμε", ED A0 80, "edited".
const INVALID: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited";

/// The multi-byte sample split and fragmented in 6.2 and 6.6.
const SAMPLE: &str = "κόσμε, Grüße, 日本, 🦀!";

fn expect_for(valid: bool, bytes: &[u8]) -> Expect {
    if valid {
        Expect::echo(vec![text(bytes.to_vec())])
    } else {
        // 1002 names a protocol error in general; 1007 is the code for this one.
        Expect::fail(1007).lenient(&[1002])
    }
}

pub fn section() -> Section {
    let sample = SAMPLE.as_bytes().to_vec();
    let invalid = INVALID.to_vec();
    let mut cases = vec![
        Case::new(
            "6.1.1",
            "empty text message",
            vec![Frame::text("")],
            Expect::echo(vec![text("")]),
        ),
        Case::new(
            "6.1.2",
            "empty text in three empty fragments",
            vec![
                Frame::text("").fin(false),
                Frame::continuation("").fin(false),
                Frame::continuation(""),
            ],
            Expect::echo(vec![text("")]),
        ),
        Case::new(
            "6.2.1",
            "multi-byte text in one frame",
            vec![Frame::text(sample.clone())],
            Expect::echo(vec![text(sample.clone())]),
        ),
        Case::new(
            "6.2.2",
            "multi-byte text split into two fragments at every byte offset (one message per offset)",
            (1..sample.len())
                .flat_map(|cut| {
                    [
                        Frame::text(&sample[..cut]).fin(false),
                        Frame::continuation(&sample[cut..]),
                    ]
                })
                .collect(),
            Expect::echo((1..sample.len()).map(|_| text(sample.clone())).collect()),
        ),
        Case::new(
            "6.2.3",
            "multi-byte text, one byte per fragment",
            fragments(opcode::TEXT, &sample, 1),
            Expect::echo(vec![text(sample.clone())]),
        ),
        Case::new(
            "6.2.4",
            "multi-byte text, one byte per fragment, one byte per write",
            fragments(opcode::TEXT, &sample, 1),
            Expect::echo(vec![text(sample.clone())]),
        )
        .chopped(1),
        Case::new(
            "6.3.1",
            "invalid text in one frame",
            vec![Frame::text(invalid.clone())],
            expect_for(false, &invalid),
        ),
        Case::new(
            "6.3.2",
            "invalid text, one byte per fragment",
            fragments(opcode::TEXT, &invalid, 1),
            expect_for(false, &invalid),
        ),
        Case::new(
            "6.4.1",
            "three fragments: valid, one with U+110000, valid",
            vec![
                Frame::text("κόσμε").fin(false),
                Frame::continuation([0xF4, 0x90, 0x80, 0x80]).fin(false),
                Frame::continuation("edited"),
            ],
            expect_for(false, &[]),
        ),
        Case::new(
            "6.4.2",
            "an invalid sequence split across two fragments (F4 | 90 80 80)",
            vec![
                Frame::text([b'a', 0xF4]).fin(false),
                Frame::continuation([0x90, 0x80, 0x80]).fin(false),
                Frame::continuation("edited"),
            ],
            expect_for(false, &[]),
        ),
        Case::new(
            "6.4.3",
            "valid fragments, the last ending inside a character",
            vec![Frame::text("κόσμε").fin(false), Frame::continuation([b'x', 0xCE])],
            expect_for(false, &[]),
        ),
        Case::new(
            "6.4.4",
            "a surrogate in the first fragment, the rest valid",
            vec![
                Frame::text([0xED, 0xA0, 0x80]).fin(false),
                Frame::continuation("valid").fin(false),
                Frame::continuation("valid"),
            ],
            expect_for(false, &[]),
        ),
    ];
    // 6.6: every prefix of the sample: UTF-8 exactly when it ends on a character boundary.
    for cut in 1..=sample.len() {
        let prefix = &sample[..cut];
        let valid = SAMPLE.is_char_boundary(cut);
        cases.push(Case::new(
            format!("6.6.{cut}"),
            format!(
                "the first {cut} bytes of {SAMPLE:?} ({})",
                if valid { "valid" } else { "cut inside a character" }
            ),
            vec![Frame::text(prefix)],
            expect_for(valid, prefix),
        ));
    }
    let mut numbers = std::collections::HashMap::new();
    for vector in vectors() {
        let number = numbers.entry(vector.group).or_insert(0);
        *number += 1;
        cases.push(Case::new(
            format!("{}.{number}", vector.group),
            vector.title,
            vec![Frame::text(vector.bytes.clone())],
            expect_for(vector.valid, &vector.bytes),
        ));
    }
    Section {
        number: "6",
        title: "UTF-8 handling",
        max_message_bytes: 64 * 1024,
        cases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels of the table, checked against the standard library's validator.
    #[test]
    fn every_vector_is_labelled_as_the_standard_library_sees_it() {
        for vector in vectors() {
            assert_eq!(
                std::str::from_utf8(&vector.bytes).is_ok(),
                vector.valid,
                "{} {}",
                vector.group,
                vector.title
            );
        }
        assert!(std::str::from_utf8(SAMPLE.as_bytes()).is_ok());
    }
}
