//! Property tests of the chat protocol's parser and reply builder: whatever a client sends, the
//! parser does not panic, a refusal carries a documented code and quotes nothing unbounded
//! back, and an accepted request respects every bound of `docs/protocol.md`; a list reply never
//! exceeds its byte budget.

use std::collections::HashSet;

use gatehouse_chat::auth::valid_uid;
use gatehouse_chat::protocol::{
    self, CONVERSATIONS_LIMIT, Code, HISTORY_LIMIT, MAX_CURSORS, MAX_EMOJI_BYTES, MAX_QUERY_CHARS, MAX_SYNC_WINDOW,
    MEMBERS_LIMIT, Request, SEARCH_LIMIT, SYNC_LIMIT, Target, valid_cid, valid_conversation,
};
use gatehouse_chat::reply::ListReply;
use gatehouse_store::MAX_GROUP_NAME_CHARS;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// The text limit the tests parse with (the service's default).
const MAX_TEXT: usize = 4000;

const TYPES: &[&str] = &[
    "send",
    "sync",
    "history",
    "conversations",
    "read",
    "create_group",
    "join_group",
    "leave_group",
    "members",
    "invite",
    "decline",
    "invitations",
    "kick",
    "ban",
    "unban",
    "promote",
    "demote",
    "update_group",
    "group_info",
    "block",
    "unblock",
    "blocks",
    "online",
    "refresh",
    "ping",
    "edit",
    "delete",
    "react",
    "delivered",
    "typing",
    "search",
    "no_such_type",
];

const FIELDS: &[&str] = &[
    "to",
    "group",
    "text",
    "cid",
    "cursors",
    "limit",
    "conversation",
    "before",
    "seq",
    "name",
    "access",
    "history",
    "after",
    "uid",
    "token",
    "id",
    "reply_to",
    "window",
    "emoji",
    "action",
    "state",
    "query",
    "offset",
];

/// Strings a client might send: plausible names and ids, edge lengths, control and non-ASCII
/// characters, arbitrary text.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.@-]{1,6}",
        "[a-zA-Z0-9_.@-]{60,70}",
        "(d|g):[a-z]{1,4}(:[a-z]{1,4})?",
        "(open|invite|joined|shared)",
        "\\PC{0,40}",
        ".{0,20}",
        "[ \t\n\u{1}\u{7f}]{0,5}",
        (0usize..5000).prop_map(|n| "x".repeat(n)),
        (3990usize..4010).prop_map(|n| "\u{1}".repeat(n)),
        Just(String::new()),
    ]
}

fn integer() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..1200).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        integer(),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

/// Any JSON value, shallow.
fn value() -> impl Strategy<Value = Value> {
    tree(number())
}

/// Any JSON value without floats (which do not survive a text round trip bit for bit).
fn exact_value() -> impl Strategy<Value = Value> {
    tree(integer())
}

fn tree(numbers: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        numbers,
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 40, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((string(), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A `cursors` object: mostly well-formed, sometimes at or over the cap.
fn cursors() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec((string(), number()), 0..20)
            .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        (MAX_CURSORS - 1..MAX_CURSORS + 2).prop_map(|n| {
            Value::Object(
                (0..n)
                    .map(|i| (format!("g:g{i}"), json!(i)))
                    .collect::<Map<String, Value>>(),
            )
        }),
        value(),
    ]
}

/// A frame shaped like a request: a known (or unknown) type and some of the protocol's fields
/// with plausible or arbitrary values.
fn frame() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TYPES),
        prop::collection::vec((prop::sample::select(FIELDS), value(), string()), 0..7),
        cursors(),
        any::<bool>(),
    )
        .prop_map(|(kind, fields, cursors, with_cursors)| {
            let mut object = Map::new();
            object.insert("type".to_owned(), json!(kind));
            for (name, arbitrary, text) in fields {
                let value = match name {
                    "limit" | "before" | "seq" | "id" | "reply_to" | "window" | "offset" => arbitrary,
                    _ if arbitrary.is_string() || arbitrary.is_null() => Value::String(text),
                    _ => arbitrary,
                };
                object.insert(name.to_owned(), value);
            }
            if with_cursors {
                object.insert("cursors".to_owned(), cursors);
            }
            Value::Object(object)
        })
}

fn documented_codes() -> HashSet<String> {
    let doc = include_str!("../../../docs/protocol.md");
    let table = &doc[doc
        .find("## Error codes")
        .expect("docs/protocol.md has an error code table")..];
    table
        .lines()
        .filter_map(|line| {
            line.strip_prefix("| `")?
                .split_once('`')
                .map(|(code, _)| code.to_owned())
        })
        .collect()
}

fn valid_name(name: &str) -> bool {
    name.chars().count() <= MAX_GROUP_NAME_CHARS && !name.trim().is_empty() && !name.chars().any(char::is_control)
}

fn valid_text(text: &str) -> bool {
    !text.trim().is_empty() && text.chars().count() <= MAX_TEXT
}

fn in_range(limit: u32, (_, max): (u32, u32)) -> bool {
    (1..=max).contains(&limit)
}

/// Every bound `docs/protocol.md` promises for an accepted request.
fn respects_bounds(request: &Request) -> Result<(), String> {
    let ok = match request {
        Request::Send { target, text, reply_to } => {
            let target_ok = match target {
                Target::Direct(uid) => valid_uid(uid),
                Target::Group(group) => valid_uid(group),
            };
            target_ok && valid_text(text) && reply_to.is_none_or(|r| r >= 0)
        }
        Request::Sync { cursors, limit, window } => {
            cursors.len() <= MAX_CURSORS
                && cursors.iter().all(|(c, s)| valid_conversation(c) && *s >= 0)
                && in_range(*limit, SYNC_LIMIT)
                && window.is_none_or(|w| (1..=MAX_SYNC_WINDOW).contains(&w))
        }
        Request::Ping => true,
        Request::Edit { conversation, id, text } => valid_conversation(conversation) && *id >= 0 && valid_text(text),
        Request::Delete { conversation, id } => valid_conversation(conversation) && *id >= 0,
        Request::React {
            conversation,
            id,
            emoji,
            ..
        } => {
            valid_conversation(conversation)
                && *id >= 0
                && !emoji.is_empty()
                && emoji.len() <= MAX_EMOJI_BYTES
                && !emoji.chars().any(|c| c.is_control() || c.is_whitespace())
        }
        Request::Delivered { conversation, seq } => valid_conversation(conversation) && *seq >= 0,
        Request::Typing { conversation, .. } => valid_conversation(conversation),
        Request::Search {
            query,
            conversation,
            offset,
            limit,
        } => {
            !query.trim().is_empty()
                && query.chars().count() <= MAX_QUERY_CHARS
                && conversation.as_deref().is_none_or(valid_conversation)
                && *offset <= gatehouse_store::MAX_SEARCH_OFFSET
                && in_range(*limit, SEARCH_LIMIT)
        }
        Request::History {
            conversation,
            before,
            limit,
        } => valid_conversation(conversation) && before.is_none_or(|b| b >= 0) && in_range(*limit, HISTORY_LIMIT),
        Request::Conversations { after, limit } => {
            after.as_deref().is_none_or(valid_conversation) && in_range(*limit, CONVERSATIONS_LIMIT)
        }
        Request::Read { conversation, seq } => valid_conversation(conversation) && *seq >= 0,
        Request::CreateGroup { group, name, .. } | Request::UpdateGroup { group, name, .. } => {
            valid_uid(group) && name.as_deref().is_none_or(valid_name)
        }
        Request::JoinGroup { group }
        | Request::LeaveGroup { group }
        | Request::Decline { group }
        | Request::GroupInfo { group } => valid_uid(group),
        Request::Members { group, after, limit } => {
            valid_uid(group) && after.as_deref().is_none_or(valid_uid) && in_range(*limit, MEMBERS_LIMIT)
        }
        Request::Invite { group, uid }
        | Request::Kick { group, uid }
        | Request::Ban { group, uid }
        | Request::Unban { group, uid }
        | Request::Promote { group, uid }
        | Request::Demote { group, uid } => valid_uid(group) && valid_uid(uid),
        Request::Block { uid } | Request::Unblock { uid } => valid_uid(uid),
        Request::Blocks { after } => after.as_deref().is_none_or(valid_uid),
        Request::Refresh { token } => !token.is_empty() && token.len() <= gatehouse_chat::auth::MAX_TOKEN_BYTES,
        Request::Invitations | Request::Online => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{request:?} breaks a bound"))
    }
}

/// Checks one parse: no panic (the caller got here), a refusal with a documented code and a
/// small error frame, an acceptance within every bound, and a cid echoed only when valid.
fn check(text: &str, documented: &HashSet<String>) -> Result<(), TestCaseError> {
    let parsed = protocol::parse(text, MAX_TEXT);
    if let Some(cid) = &parsed.cid {
        prop_assert!(valid_cid(cid), "echoed cid {cid:?}");
    }
    match &parsed.request {
        Err(error) => {
            prop_assert!(Code::ALL.contains(&error.code));
            prop_assert!(
                documented.contains(&error.code.as_str()),
                "{:?} is not documented",
                error.code
            );
            let frame = protocol::error(error, parsed.cid.as_deref()).to_string();
            prop_assert!(frame.len() <= 1024, "an error frame of {} bytes: {frame}", frame.len());
        }
        Ok(request) => {
            if let Err(broken) = respects_bounds(request) {
                return Err(TestCaseError::fail(broken));
            }
            if matches!(
                request,
                Request::Send { .. } | Request::Edit { .. } | Request::Delete { .. } | Request::React { .. }
            ) {
                prop_assert!(parsed.cid.is_some(), "a change is accepted only with a cid");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        // Integration tests have no lib.rs next to them to keep regressions beside; a failure
        // prints its minimal input, which becomes a unit test.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics_and_is_refused_with_a_documented_code(text in "\\PC{0,200}|.{0,50}") {
        check(&text, &documented_codes())?;
    }

    #[test]
    fn arbitrary_json_is_parsed_within_every_bound(value in value()) {
        check(&value.to_string(), &documented_codes())?;
    }

    #[test]
    fn request_shaped_frames_are_parsed_within_every_bound(frame in frame()) {
        check(&frame.to_string(), &documented_codes())?;
    }

    #[test]
    fn a_list_reply_never_exceeds_its_budget_and_keeps_a_prefix(
        items in prop::collection::vec(exact_value(), 0..60),
        budget in 100usize..4000,
    ) {
        let envelope: Map<String, Value> = json!({"type": "sync", "cid": "c-1"}).as_object().cloned().unwrap_or_default();
        let mut reply = ListReply::new(envelope, "messages", Some("roles"), budget);
        let mut kept = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let role = json!("admin");
            let key = format!("k{i}");
            let entry = (i % 3 == 0).then_some((key.as_str(), &role));
            if reply.push_with_entry(item, entry) {
                prop_assert_eq!(kept.len(), i, "a prefix: nothing after a refusal");
                kept.push(item.clone());
            }
        }
        let more = kept.len() < items.len();
        let frame = reply.finish(more);
        let text = frame.as_text().unwrap_or_default();
        let parsed: Value = serde_json::from_str(text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(text.len() <= budget, "{} > {budget}", text.len());
        prop_assert_eq!(parsed["messages"].as_array().cloned().unwrap_or_default(), kept);
        prop_assert_eq!(parsed["more"].as_bool(), Some(more));
    }
}
