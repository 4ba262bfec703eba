//! The values the store takes and returns.

use serde::Serialize;

use crate::access::{Access, HistoryVisibility, Role, Standing};
use crate::error::StoreError;
use crate::ids::{ConversationKey, parse_conversation_id};

/// Where a new message goes, as the sender names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationRef {
    /// A direct message to one user; the conversation is created on the first message.
    Direct {
        /// The recipient's uid.
        to: String,
    },
    /// A message to a group the sender is a member of.
    Group {
        /// The group id (without the `g:` prefix).
        id: String,
    },
}

/// A message to append, as received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The target conversation.
    pub conversation: ConversationRef,
    /// The authenticated sender's uid (the store trusts it).
    pub sender: String,
    /// The client's idempotency key: a resend with the same `(sender, cid)` stores nothing and
    /// returns the original message.
    pub cid: String,
    /// The message body.
    pub text: String,
    /// The server's receive time in milliseconds since the Unix epoch; stored as given.
    pub ts_ms: i64,
    /// The id of the message this one answers (same conversation, readable by the sender:
    /// checked by [`Store::reply_target`](crate::Store::reply_target) before the append).
    pub reply_to: Option<i64>,
}

/// What an item of a conversation's sequence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A message.
    Message,
    /// An edit of `target`.
    Edit,
    /// The deletion of `target`.
    Delete,
    /// A reaction added to `target` (the emoji is the event's text).
    ReactionAdd,
    /// A reaction removed from `target`.
    ReactionRemove,
}

impl EventKind {
    /// The kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Edit => "edit",
            EventKind::Delete => "delete",
            EventKind::ReactionAdd => "reaction_add",
            EventKind::ReactionRemove => "reaction_remove",
        }
    }

    /// Parses a stored kind; unknown values are treated as messages (the schema forbids them).
    pub fn parse(value: &str) -> EventKind {
        match value {
            "edit" => EventKind::Edit,
            "delete" => EventKind::Delete,
            "reaction_add" => EventKind::ReactionAdd,
            "reaction_remove" => EventKind::ReactionRemove,
            _ => EventKind::Message,
        }
    }
}

/// A message as stored, with its position in its conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredMessage {
    /// Store-wide unique id; identifies the message but is not ordered by commit, so it is never
    /// a cursor.
    pub id: i64,
    /// The conversation id (`d:…` or `g:…`).
    pub conversation: String,
    /// The 1-based position in the conversation; contiguous and in commit order, so it is the
    /// sync cursor.
    pub seq: i64,
    /// The sender's uid.
    pub sender: String,
    /// For a direct message, the recipient (the sender's peer); `None` for groups.
    pub to: Option<String>,
    /// For a group message, the group id; `None` for direct messages.
    pub group: Option<String>,
    /// The sender's idempotency key.
    pub cid: String,
    /// The message body.
    pub text: String,
    /// The receive time given at append, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// What this item of the sequence is: a message or a change of one.
    pub kind: EventKind,
    /// For a change event, the id of the message it changes.
    pub target: Option<i64>,
    /// For a message, the id of the message it answers.
    pub reply_to: Option<i64>,
    /// For a message, when it was last edited.
    pub edited_ms: Option<i64>,
    /// For a message, whether it was deleted (its text is then empty).
    pub deleted: bool,
    /// For a message, its reactions as a JSON object emoji → count (`None`: none).
    pub reactions: Option<String>,
}

/// The outcome of appending one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appended {
    /// The stored message: the new one, or the original if this was a resend.
    pub message: StoredMessage,
    /// `true` when `(sender, cid)` had been stored before (or earlier in the same batch), so
    /// nothing was written; callers acknowledge again but must not push the message twice.
    pub duplicate: bool,
}

/// Whether a conversation is a direct pair or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    /// Two users (or one user's notes to self).
    Direct,
    /// An explicitly created group.
    Group,
}

/// One conversation in a user's conversation list, with its unread count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversationSummary {
    /// The conversation id (`d:…` or `g:…`).
    pub id: String,
    /// Direct or group.
    pub kind: ConversationKind,
    /// The peer's uid for a direct conversation, the group id for a group.
    pub peer_or_group: String,
    /// The group's display name, if one was given at creation.
    pub name: Option<String>,
    /// The highest sequence number in the conversation.
    pub last_seq: i64,
    /// The highest sequence number this user has marked read (sending also marks read).
    pub read_seq: i64,
    /// `last_seq - read_seq`: messages this user has not read yet.
    pub unread: i64,
}

/// One page of a catch-up sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncPage {
    /// Missed messages, grouped by conversation (conversations in id order), ascending `seq`
    /// within each conversation.
    pub messages: Vec<StoredMessage>,
    /// `true` when the limit or the budget cut the page short: the client advances its cursors
    /// with these messages and calls again.
    pub more: bool,
}

/// One page of a conversation's history, ascending `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryPage {
    /// The newest messages before the requested seq that the reader may read.
    pub messages: Vec<StoredMessage>,
    /// `true` when older readable messages exist (ask again with `before` = the first seq).
    pub more: bool,
}

/// One page of a user's conversation list, in id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversationPage {
    /// The conversations after the requested id.
    pub conversations: Vec<ConversationSummary>,
    /// `true` when more follow (ask again with `after` = the last id).
    pub more: bool,
}

/// A stored message as the append's read phase returns it (JSON array): id, conversation,
/// seq, sender, cid, text, ts, reply_to.
pub(crate) type ExistingRow = (i64, String, i64, String, String, String, i64, Option<i64>);

/// A `messages` row as selected by every query that returns messages.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct MessageRow {
    pub(crate) id: i64,
    pub(crate) conversation_id: String,
    pub(crate) seq: i64,
    pub(crate) sender: String,
    pub(crate) cid: String,
    pub(crate) text: String,
    pub(crate) ts_ms: i64,
    #[sqlx(default)]
    pub(crate) kind: Option<String>,
    #[sqlx(default)]
    pub(crate) target: Option<i64>,
    #[sqlx(default)]
    pub(crate) reply_to: Option<i64>,
    #[sqlx(default)]
    pub(crate) edited_ms: Option<i64>,
    #[sqlx(default)]
    pub(crate) deleted: Option<i64>,
    #[sqlx(default)]
    pub(crate) reactions: Option<String>,
}

impl MessageRow {
    /// A row of a plain message as the append path knows it (no change applied yet).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plain(
        id: i64,
        conversation_id: String,
        seq: i64,
        sender: String,
        cid: String,
        text: String,
        ts_ms: i64,
        reply_to: Option<i64>,
    ) -> MessageRow {
        MessageRow {
            id,
            conversation_id,
            seq,
            sender,
            cid,
            text,
            ts_ms,
            kind: None,
            target: None,
            reply_to,
            edited_ms: None,
            deleted: None,
            reactions: None,
        }
    }

    /// Converts the row, deriving `to`/`group` from the conversation id.
    pub(crate) fn into_stored(self) -> StoredMessage {
        let (to, group) = match parse_conversation_id(&self.conversation_id) {
            Some(key @ ConversationKey::Direct { .. }) => (key.peer_of(&self.sender).map(str::to_owned), None),
            Some(ConversationKey::Group { id }) => (None, Some(id)),
            None => (None, None),
        };
        StoredMessage {
            id: self.id,
            conversation: self.conversation_id,
            seq: self.seq,
            sender: self.sender,
            to,
            group,
            cid: self.cid,
            text: self.text,
            ts_ms: self.ts_ms,
            kind: self.kind.as_deref().map_or(EventKind::Message, EventKind::parse),
            target: self.target,
            reply_to: self.reply_to,
            edited_ms: self.edited_ms,
            deleted: self.deleted.unwrap_or(0) != 0,
            reactions: self.reactions,
        }
    }
}

/// A `members ⋈ conversations` row for one user's conversation list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct SummaryRow {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) last_seq: i64,
    pub(crate) read_seq: i64,
}

impl SummaryRow {
    /// Converts the row as seen by `uid`; `None` for an id the store never writes.
    pub(crate) fn into_summary(self, uid: &str) -> Option<ConversationSummary> {
        let key = parse_conversation_id(&self.id)?;
        let (kind, peer_or_group) = match &key {
            ConversationKey::Direct { .. } => (ConversationKind::Direct, key.peer_of(uid)?.to_owned()),
            ConversationKey::Group { id } => (ConversationKind::Group, id.clone()),
        };
        Some(ConversationSummary {
            id: self.id,
            kind,
            peer_or_group,
            name: self.name,
            last_seq: self.last_seq,
            read_seq: self.read_seq,
            unread: (self.last_seq - self.read_seq).max(0),
        })
    }
}

/// A conversation the user belongs to and its current `last_seq` (sync planning).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct CursorRow {
    pub(crate) conversation_id: String,
    pub(crate) last_seq: i64,
    /// The seq at and below which the user may not read (see `sql::CURSORS`).
    pub(crate) floor: i64,
}

/// A row of `sql::STANDING`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct StandingRow {
    pub(crate) owner: String,
    pub(crate) access: String,
    pub(crate) history: String,
    pub(crate) name: Option<String>,
    pub(crate) last_seq: i64,
    pub(crate) role: Option<String>,
    pub(crate) banned: i64,
    pub(crate) invited: i64,
    pub(crate) member_count: i64,
}

impl StandingRow {
    /// Converts the row read for `uid`; a value the schema's checks forbid is a broken invariant.
    pub(crate) fn into_standing(self, uid: &str) -> Result<(Standing, i64), StoreError> {
        let access = Access::parse(&self.access)
            .ok_or_else(|| StoreError::Invariant(format!("unknown group access {:?}", self.access)))?;
        let history = HistoryVisibility::parse(&self.history)
            .ok_or_else(|| StoreError::Invariant(format!("unknown history visibility {:?}", self.history)))?;
        let role = match self.role.as_deref() {
            None => None,
            Some(_) if self.owner == uid => Some(Role::Owner),
            Some("admin") => Some(Role::Admin),
            Some("member") => Some(Role::Member),
            Some(other) => return Err(StoreError::Invariant(format!("unknown member role {other:?}"))),
        };
        let standing = Standing {
            owner: self.owner,
            access,
            history,
            name: self.name,
            last_seq: self.last_seq,
            role,
            banned: self.banned > 0,
            invited: self.invited > 0,
        };
        Ok((standing, self.member_count))
    }
}
