//! Conversation ids and input validation.
//!
//! A direct conversation id is `d:<lo>:<hi>` where `lo`/`hi` are the two uids ordered bytewise
//! and escaped so that they contain no `:` (`%` → `%25`, then `:` → `%3A`). Escaped parts never
//! contain `:`, so the id splits back into exactly one pair; uids without `%` and `:` appear
//! verbatim (`d:alice:bob`). A group conversation id is `g:<group_id>` with the group id
//! verbatim: everything after the prefix is the group id, so no escaping is needed.

use crate::error::StoreError;

const DIRECT_PREFIX: &str = "d:";
const GROUP_PREFIX: &str = "g:";

/// Returns the id of the direct conversation between `a` and `b`, the same for both orders.
///
/// Chat clients address a direct message by the peer's uid; every component that needs the
/// conversation (sync cursors, read markers, history) uses this id, so it must be computed in
/// exactly one place.
pub fn direct_conversation_id(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut id = String::with_capacity(DIRECT_PREFIX.len() + lo.len() + hi.len() + 1);
    id.push_str(DIRECT_PREFIX);
    escape_into(&mut id, lo);
    id.push(':');
    escape_into(&mut id, hi);
    id
}

/// Returns the conversation id of group `group_id` (`g:<group_id>`).
///
/// Groups and direct conversations share one id space so that a sync cursor map and the
/// membership table cover both.
pub fn group_conversation_id(group_id: &str) -> String {
    format!("{GROUP_PREFIX}{group_id}")
}

/// A conversation id taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConversationKey {
    /// A direct conversation between two uids (equal for a note-to-self).
    Direct { a: String, b: String },
    /// A group conversation.
    Group { id: String },
}

impl ConversationKey {
    /// Returns the other participant of a direct conversation, seen from `uid`.
    pub(crate) fn peer_of(&self, uid: &str) -> Option<&str> {
        match self {
            ConversationKey::Direct { a, b } => Some(if a == uid { b } else { a }),
            ConversationKey::Group { .. } => None,
        }
    }
}

/// Parses a conversation id produced by [`direct_conversation_id`] or [`group_conversation_id`].
pub(crate) fn parse_conversation_id(id: &str) -> Option<ConversationKey> {
    if let Some(group) = id.strip_prefix(GROUP_PREFIX) {
        return (!group.is_empty()).then(|| ConversationKey::Group { id: group.to_owned() });
    }
    let rest = id.strip_prefix(DIRECT_PREFIX)?;
    let (a, b) = rest.split_once(':')?;
    if b.contains(':') {
        return None;
    }
    Some(ConversationKey::Direct {
        a: unescape(a)?,
        b: unescape(b)?,
    })
}

fn escape_into(out: &mut String, uid: &str) {
    for c in uid.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
}

fn unescape(part: &str) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let code = rest.get(pos + 1..pos + 3)?;
        out.push(match code {
            "25" => '%',
            "3A" => ':',
            _ => return None,
        });
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

/// Longest identifier (uid, group id, cid) the store accepts, in characters: the chat service's
/// own limit, and what keeps every key of the MariaDB schema within InnoDB's key size.
pub const MAX_IDENT_CHARS: usize = 64;

/// Checks an identifier (uid, group id, cid): 1 to [`MAX_IDENT_CHARS`] characters and free of
/// NUL, which PostgreSQL cannot store in `TEXT`; either would otherwise fail a whole batch
/// instead of one item.
pub(crate) fn check_ident(what: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::InvalidInput(format!("{what} is empty")));
    }
    if value.chars().count() > MAX_IDENT_CHARS {
        return Err(StoreError::InvalidInput(format!(
            "{what} is longer than {MAX_IDENT_CHARS} characters"
        )));
    }
    if value.contains('\0') {
        return Err(StoreError::InvalidInput(format!("{what} contains a nul byte")));
    }
    Ok(())
}

/// Checks a message body: any text except NUL (see [`check_ident`]).
pub(crate) fn check_text(text: &str) -> Result<(), StoreError> {
    if text.contains('\0') {
        return Err(StoreError::InvalidInput("text contains a nul byte".to_owned()));
    }
    Ok(())
}

/// Checks a sequence number given by a caller (cursor, read marker): never negative.
pub(crate) fn check_seq(what: &str, seq: i64) -> Result<(), StoreError> {
    if seq < 0 {
        return Err(StoreError::InvalidInput(format!("{what} is negative")));
    }
    Ok(())
}

/// Returns the wall clock in milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_id_is_symmetric_and_plain_for_simple_uids() {
        assert_eq!(direct_conversation_id("bob", "alice"), "d:alice:bob");
        assert_eq!(direct_conversation_id("alice", "bob"), "d:alice:bob");
    }

    #[test]
    fn direct_id_escapes_colons_unambiguously() {
        // Without escaping both pairs would give "d:a:b:c".
        let x = direct_conversation_id("a", "b:c");
        let y = direct_conversation_id("a:b", "c");
        assert_ne!(x, y);
        assert_eq!(
            parse_conversation_id(&x),
            Some(ConversationKey::Direct {
                a: "a".into(),
                b: "b:c".into()
            })
        );
        assert_eq!(
            parse_conversation_id(&y),
            Some(ConversationKey::Direct {
                a: "a:b".into(),
                b: "c".into()
            })
        );
        let z = direct_conversation_id("%3A", ":");
        assert_eq!(
            parse_conversation_id(&z),
            Some(ConversationKey::Direct {
                a: "%3A".into(),
                b: ":".into()
            })
        );
    }

    #[test]
    fn group_ids_round_trip_with_colons() {
        let id = group_conversation_id("team:ops");
        assert_eq!(id, "g:team:ops");
        assert_eq!(
            parse_conversation_id(&id),
            Some(ConversationKey::Group { id: "team:ops".into() })
        );
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in ["", "x:a", "d:a", "d:a:b:c", "d:%zz:b", "d::b", "g:", "d:a:%2"] {
            assert_eq!(parse_conversation_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn peer_of_handles_self_conversations() {
        let key = parse_conversation_id(&direct_conversation_id("me", "me"));
        assert_eq!(key.as_ref().and_then(|k| k.peer_of("me")), Some("me"));
        let key = parse_conversation_id(&direct_conversation_id("me", "you"));
        assert_eq!(key.as_ref().and_then(|k| k.peer_of("you")), Some("me"));
    }
}
