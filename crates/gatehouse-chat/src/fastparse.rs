//! The frames a client sends once per message or more (`send`, `delivered`, `read`, `typing`),
//! read into a typed view that borrows from the frame's text instead of building a JSON tree.
//!
//! This is a shortcut, not a second parser: it answers only frames it finds valid, and only
//! with the request [`protocol::parse`] would return for them. Any other frame (another type, a
//! field of the wrong type, a duplicate key, a value out of bounds, an array, malformed JSON)
//! goes to [`protocol::parse`], which alone words the errors. A property test holds the two to
//! the same answer.

use std::borrow::Cow;

use serde::Deserialize;

use crate::auth::valid_uid;
use crate::protocol::{self, Parsed, Request, Target, check_text, typing_start, valid_cid, valid_conversation};

/// Parses a client text frame: the typed view for the per-message frames, the JSON tree for
/// everything else.
pub fn parse(text: &str, max_text_chars: usize) -> Parsed {
    quick(text, max_text_chars).unwrap_or_else(|| protocol::parse(text, max_text_chars))
}

/// The fields the per-message frames read. Missing and `null` fields are `None`, as in the
/// JSON tree; unknown fields are skipped without being kept.
#[derive(Deserialize)]
struct View<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    cid: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    conversation: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default, borrow)]
    state: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    to: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    group: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    reply_to: Option<i64>,
}

/// The request of a valid per-message frame, or `None` for [`protocol::parse`] to answer.
fn quick(text: &str, max_text_chars: usize) -> Option<Parsed> {
    // A derived struct also reads a JSON array, field by field in order; a frame must be an
    // object, so anything else is the tree parser's to refuse.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let view: View<'_> = serde_json::from_str(text).ok()?;
    let cid = match view.cid.as_deref() {
        None => None,
        Some(cid) if valid_cid(cid) => Some(cid.to_owned()),
        Some(_) => return None,
    };
    let request = match view.kind.as_ref() {
        "send" => send(&view, cid.is_some(), max_text_chars)?,
        "delivered" => Request::Delivered {
            conversation: conversation(&view)?,
            seq: non_negative(view.seq?)?,
        },
        "read" => Request::Read {
            conversation: conversation(&view)?,
            seq: non_negative(view.seq?)?,
        },
        "typing" => Request::Typing {
            conversation: conversation(&view)?,
            start: typing_start(view.state.as_deref()).ok()?,
        },
        _ => return None,
    };
    Some(Parsed {
        cid,
        request: Ok(request),
    })
}

/// A `send` to one uid or one group, with its cid, non-blank text within the bound, and an
/// optional non-negative `reply_to`.
fn send(view: &View<'_>, has_cid: bool, max_text_chars: usize) -> Option<Request> {
    let target = match (view.to.as_deref(), view.group.as_deref()) {
        (Some(to), None) if valid_uid(to) => Target::Direct(to.to_owned()),
        (None, Some(group)) if valid_uid(group) => Target::Group(group.to_owned()),
        _ => return None,
    };
    let text = view.text.as_deref()?;
    if !has_cid {
        return None;
    }
    check_text(text, max_text_chars).ok()?;
    let reply_to = match view.reply_to {
        None => None,
        Some(id) => Some(non_negative(id)?),
    };
    Some(Request::Send {
        target,
        text: text.to_owned(),
        reply_to,
    })
}

fn conversation(view: &View<'_>) -> Option<String> {
    view.conversation
        .as_deref()
        .filter(|c| valid_conversation(c))
        .map(str::to_owned)
}

fn non_negative(value: i64) -> Option<i64> {
    (value >= 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Both parsers' answer, in a comparable form.
    fn answer(parsed: &Parsed) -> (Option<String>, Result<Request, (protocol::Code, String)>) {
        let request = match &parsed.request {
            Ok(request) => Ok(request.clone()),
            Err(error) => Err((error.code, error.message.clone())),
        };
        (parsed.cid.clone(), request)
    }

    #[test]
    fn the_per_message_frames_are_read_without_the_tree() {
        let frames = [
            r#"{"type":"send","to":"bob","text":"hi","cid":"c1"}"#,
            r#"{"type":"send","group":"team","text":"hi","cid":"c1","reply_to":4}"#,
            r#"{"type":"delivered","conversation":"d:a:b","seq":7}"#,
            r#"{"type":"read","conversation":"g:team","seq":0,"cid":"r1"}"#,
            r#"{"type":"typing","conversation":"d:a:b"}"#,
            r#"{"type":"typing","conversation":"d:a:b","state":"stop","extra":[1,{"x":null}]}"#,
        ];
        for frame in frames {
            let quick = quick(frame, 10).unwrap_or_else(|| panic!("{frame} takes the shortcut"));
            assert_eq!(answer(&quick), answer(&protocol::parse(frame, 10)), "{frame}");
        }
    }

    #[test]
    fn frames_the_shortcut_does_not_accept_get_the_tree_parsers_error() {
        let frames = [
            r#"{"type":"send","to":"bob","group":"team","text":"hi","cid":"c1"}"#,
            r#"{"type":"send","to":"bob","text":"  ","cid":"c1"}"#,
            r#"{"type":"send","to":"bob","text":"far too long a text","cid":"c1"}"#,
            r#"{"type":"send","to":"bob","text":"hi"}"#,
            r#"{"type":"read","conversation":"d:a:b","seq":-1}"#,
            r#"{"type":"read","conversation":"d:a:b","seq":1.5}"#,
            r#"{"type":"read","conversation":"d:a:b","seq":"1"}"#,
            r#"{"type":"read","conversation":"x:a","seq":1}"#,
            r#"{"type":"read","conversation":"d:a:b","seq":1,"seq":2}"#,
            r#"{"type":"typing","conversation":"d:a:b","state":"maybe"}"#,
            r#"{"type":"typing","conversation":"d:a:b","cid":""}"#,
            r#"{"type":"history","conversation":"d:a:b"}"#,
            r#"[1,2]"#,
            r#"["typing",null,"d:a:b"]"#,
            r#"  ["read",null,"d:a:b",3]"#,
            r#"{"type":"read""#,
        ];
        for frame in frames {
            assert!(quick(frame, 10).is_none(), "{frame} must go to the tree parser");
            assert_eq!(
                answer(&parse(frame, 10)),
                answer(&protocol::parse(frame, 10)),
                "{frame}"
            );
        }
    }

    /// A JSON value for one field: right, wrong or odd, so that both parsers meet every case.
    fn field_value() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => Just("null".to_owned()),
            3 => (-3i64..12).prop_map(|n| n.to_string()),
            1 => Just("2.0".to_owned()),
            1 => Just("9223372036854775808".to_owned()),
            1 => Just("true".to_owned()),
            1 => Just("[]".to_owned()),
            1 => Just("{}".to_owned()),
            3 => prop::sample::select(vec![
                "", " ", "bob", "team", "d:a:b", "g:team", "d:a", "x:y", "start", "stop", "send", "read",
                "delivered", "typing", "héllo", "a\\u0000b", "tab\\there", "twelve chars",
            ])
            .prop_map(|s| format!("\"{s}\"")),
        ]
    }

    /// A value that is right for the field `name` in some per-message frame, or just past a
    /// bound (an 11-character text where 10 are allowed).
    fn good_value(name: &'static str) -> BoxedStrategy<String> {
        let pick = |values: Vec<&'static str>| prop::sample::select(values).prop_map(|v| format!("\"{v}\"")).boxed();
        match name {
            "cid" => pick(vec!["c1", "a cid"]),
            "conversation" => pick(vec!["d:a:b", "g:team"]),
            "state" => pick(vec!["start", "stop"]),
            "to" => pick(vec!["bob"]),
            "group" => pick(vec!["team"]),
            "text" => pick(vec!["hi", "héllo", "ten chars!", "eleven char"]),
            _ => (0i64..12).prop_map(|n| n.to_string()).boxed(),
        }
    }

    /// A per-message frame (or a near one): each field absent, right, or any odd value, and
    /// now and then one field twice. Most frames are valid or one detail away from it.
    fn frame() -> impl Strategy<Value = String> {
        const NAMES: [&str; 9] = [
            "cid",
            "conversation",
            "seq",
            "state",
            "to",
            "group",
            "text",
            "reply_to",
            "other",
        ];
        let kind = prop::sample::select(vec!["send", "delivered", "read", "typing", "edit"]);
        let fields: Vec<_> = NAMES
            .iter()
            .map(|&name| {
                prop_oneof![
                    2 => Just(None),
                    4 => good_value(name).prop_map(Some),
                    2 => field_value().prop_map(Some),
                ]
                .prop_map(move |value| value.map(|value| (name, value)))
            })
            .collect();
        let twice = prop::option::weighted(0.1, (prop::sample::select(NAMES.to_vec()), field_value()));
        (kind, fields, twice).prop_map(|(kind, fields, twice)| {
            let mut frame = format!("{{\"type\":\"{kind}\"");
            for (name, value) in fields.into_iter().flatten().chain(twice) {
                frame.push_str(&format!(",\"{name}\":{value}"));
            }
            frame.push('}');
            frame
        })
    }

    /// Nanoseconds per frame through each parser, for docs/benchmarks-fastparse.md:
    /// `cargo test --release -p gatehouse-chat --lib fastparse -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement, run in release mode"]
    fn time_per_frame_of_both_parsers() {
        let frames = [
            r#"{"type":"send","to":"user-417","text":"a message of about forty characters, ok","cid":"c-123456"}"#,
            r#"{"type":"delivered","conversation":"d:user-417:user-9","seq":1234}"#,
            r#"{"type":"read","conversation":"d:user-417:user-9","seq":1234}"#,
            r#"{"type":"typing","conversation":"d:user-417:user-9"}"#,
        ];
        const ROUNDS: u32 = 200_000;
        for frame in frames {
            let timed = |parser: fn(&str, usize) -> Parsed| {
                let start = std::time::Instant::now();
                for _ in 0..ROUNDS {
                    std::hint::black_box(parser(std::hint::black_box(frame), 4000));
                }
                start.elapsed().as_nanos() / u128::from(ROUNDS)
            };
            let (tree, typed) = (timed(protocol::parse), timed(parse));
            println!("{frame}: tree {tree} ns, typed {typed} ns");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// Whatever the frame, the shortcut's answer is the tree parser's.
        #[test]
        fn the_shortcut_answers_as_the_tree_parser(frame in frame()) {
            prop_assert_eq!(answer(&parse(&frame, 10)), answer(&protocol::parse(&frame, 10)));
        }
    }
}
