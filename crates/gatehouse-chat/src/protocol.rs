//! The chat protocol's frames and error codes (documented in `docs/protocol.md`).
//!
//! Parsing is two-step so that every bad input gets the precise code: first the frame must be a
//! JSON object with a known `type`, then the fields of that type are checked one by one.

use std::collections::HashMap;

use gatehouse_store::{Access, EventKind, HistoryVisibility, MAX_GROUP_NAME_CHARS, StoredMessage};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Longest `cid`, in characters.
pub const MAX_CID_CHARS: usize = 64;
/// Most entries in a `sync` request's `cursors`. A client with more conversations leaves some
/// out (they are caught up from their start, or from when the user joined); the gateway's
/// message size limit (64 KiB) holds about 450 of the longest ids anyway.
pub const MAX_CURSORS: usize = 1000;
/// Longest unknown `type` quoted back in an `unknown_type` error, in characters.
const MAX_QUOTED_CHARS: usize = 32;
/// Default and largest page of a `sync`.
pub const SYNC_LIMIT: (u32, u32) = (500, 1000);
/// Default and largest page of a `history`.
pub const HISTORY_LIMIT: (u32, u32) = (50, 200);
/// Default and largest page of `members`.
pub const MEMBERS_LIMIT: (u32, u32) = (200, 1000);
/// Default and largest page of `conversations`.
pub const CONVERSATIONS_LIMIT: (u32, u32) = (100, 500);
/// Largest `window` of a `sync`.
pub const MAX_SYNC_WINDOW: u32 = 1000;
/// Default and largest page of `search`.
pub const SEARCH_LIMIT: (u32, u32) = (20, 50);
/// Longest search `query`, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Longest `emoji`, in bytes.
pub const MAX_EMOJI_BYTES: usize = 32;
/// The protocol version `welcome` announces.
pub const PROTOCOL_VERSION: u32 = 2;

/// The error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// Not JSON, not an object, or a binary frame.
    BadJson,
    /// `type` missing or unknown.
    UnknownType,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type or an invalid value.
    InvalidField,
    /// `text` is empty or whitespace.
    EmptyText,
    /// `text` is too long.
    TextTooLong,
    /// `to` names a uid that never signed in.
    UnknownRecipient,
    /// An `edit`, `delete`, `react` or `reply_to` names no readable message of that
    /// conversation.
    UnknownMessage,
    /// An `edit` after the edit window.
    EditWindowClosed,
    /// An `edit`, `react` or second `delete` of a deleted message.
    MessageDeleted,
    /// The `cid` was already used by this sender for another message (other recipient or
    /// text); nothing was stored.
    CidConflict,
    /// Not a member of the group or conversation.
    NotMember,
    /// The group does not exist.
    UnknownGroup,
    /// The group already exists.
    GroupExists,
    /// The group is invite-only and the user has no invitation.
    NotInvited,
    /// The user is banned from the group.
    Banned,
    /// The user's role in the group does not allow the action.
    Forbidden,
    /// The recipient (or invitee) blocks the user.
    Blocked,
    /// The uid has never signed in.
    UnknownUser,
    /// A count or size bound was reached; the error names it (`limit`) and its value (`max`).
    LimitExceeded,
    /// A `refresh` token is invalid (signature, expiry, issuer, audience) or no key is set.
    InvalidToken,
    /// A `refresh` token names another uid than the connection's.
    SubjectMismatch,
    /// Over the connection's rate limit; the error says when to retry (`retry_after_ms`).
    RateLimited,
    /// The store's queue is full.
    Overloaded,
    /// The store or the cluster cannot be reached.
    Unavailable,
    /// A bug.
    Internal,
}

impl Code {
    /// Every code, for documentation checks and tests.
    pub const ALL: &'static [Code] = &[
        Code::BadJson,
        Code::UnknownType,
        Code::MissingField,
        Code::InvalidField,
        Code::EmptyText,
        Code::TextTooLong,
        Code::UnknownRecipient,
        Code::UnknownMessage,
        Code::EditWindowClosed,
        Code::MessageDeleted,
        Code::CidConflict,
        Code::NotMember,
        Code::UnknownGroup,
        Code::GroupExists,
        Code::NotInvited,
        Code::Banned,
        Code::Forbidden,
        Code::Blocked,
        Code::UnknownUser,
        Code::LimitExceeded,
        Code::InvalidToken,
        Code::SubjectMismatch,
        Code::RateLimited,
        Code::Overloaded,
        Code::Unavailable,
        Code::Internal,
    ];

    /// The code as it appears in error frames.
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// A refused request: code, human message, and fields some codes carry (`limit_exceeded`:
/// `limit` and `max`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolError {
    /// The code.
    pub code: Code,
    /// Details.
    pub message: String,
    /// Extra fields of the error frame, documented per code.
    pub fields: Vec<(&'static str, Value)>,
}

impl ProtocolError {
    /// Builds an error.
    pub fn new(code: Code, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// A `limit_exceeded` error naming the bound and its value.
    pub fn limit(limit: &str, max: u64, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code: Code::LimitExceeded,
            message: message.into(),
            fields: vec![("limit", json!(limit)), ("max", json!(max))],
        }
    }
}

/// A parsed client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store and deliver a message.
    Send {
        /// The recipient.
        target: Target,
        /// The text.
        text: String,
        /// The message answered (protocol 2).
        reply_to: Option<i64>,
    },
    /// Catch up after the cursor.
    Sync {
        /// Conversation → highest seq seen.
        cursors: HashMap<String, i64>,
        /// Page size.
        limit: u32,
        /// Events per conversation at most (protocol 2; `None`: the server's window).
        window: Option<u32>,
    },
    /// Ask for the change counter (protocol 2).
    Ping,
    /// Edit one's message (protocol 2).
    Edit {
        /// Conversation id.
        conversation: String,
        /// The message.
        id: i64,
        /// The new text.
        text: String,
    },
    /// Delete a message (protocol 2).
    Delete {
        /// Conversation id.
        conversation: String,
        /// The message.
        id: i64,
    },
    /// Add or remove a reaction (protocol 2).
    React {
        /// Conversation id.
        conversation: String,
        /// The message.
        id: i64,
        /// The emoji.
        emoji: String,
        /// `true`: add; `false`: remove.
        add: bool,
    },
    /// Move the delivery marker (protocol 2).
    Delivered {
        /// Conversation id.
        conversation: String,
        /// Highest seq received.
        seq: i64,
    },
    /// The user is (or stopped) typing (protocol 2).
    Typing {
        /// Conversation id.
        conversation: String,
        /// `true`: start; `false`: stop.
        start: bool,
    },
    /// Full-text search (protocol 2).
    Search {
        /// The query text.
        query: String,
        /// Only this conversation.
        conversation: Option<String>,
        /// Hits to skip.
        offset: u32,
        /// Page size.
        limit: u32,
    },
    /// Page backwards through one conversation.
    History {
        /// Conversation id.
        conversation: String,
        /// Only messages with a smaller seq.
        before: Option<i64>,
        /// Page size.
        limit: u32,
    },
    /// List conversations with unread counts, a page at a time.
    Conversations {
        /// Only conversations whose id sorts after this one.
        after: Option<String>,
        /// Page size.
        limit: u32,
    },
    /// Mark read up to `seq`.
    Read {
        /// Conversation id.
        conversation: String,
        /// Highest seq read.
        seq: i64,
    },
    /// Create a group.
    CreateGroup {
        /// Group id.
        group: String,
        /// Display name.
        name: Option<String>,
        /// Who may join (default `invite`).
        access: Option<Access>,
        /// What members read (default `joined`).
        history: Option<HistoryVisibility>,
    },
    /// Join a group.
    JoinGroup {
        /// Group id.
        group: String,
    },
    /// Leave a group.
    LeaveGroup {
        /// Group id.
        group: String,
    },
    /// List a group's members, a page at a time.
    Members {
        /// Group id.
        group: String,
        /// Only members whose uid sorts after this one.
        after: Option<String>,
        /// Page size.
        limit: u32,
    },
    /// Invite a user to a group (owner or admin).
    Invite {
        /// Group id.
        group: String,
        /// The invitee.
        uid: String,
    },
    /// Decline (withdraw) one's invitation to a group.
    Decline {
        /// Group id.
        group: String,
    },
    /// List one's invitations.
    Invitations,
    /// Remove a member from a group (owner or admin).
    Kick {
        /// Group id.
        group: String,
        /// The member.
        uid: String,
    },
    /// Ban a user from a group (owner or admin).
    Ban {
        /// Group id.
        group: String,
        /// The user.
        uid: String,
    },
    /// Lift a ban (owner or admin).
    Unban {
        /// Group id.
        group: String,
        /// The user.
        uid: String,
    },
    /// Make a member an admin (owner).
    Promote {
        /// Group id.
        group: String,
        /// The member.
        uid: String,
    },
    /// Make an admin a plain member again (owner).
    Demote {
        /// Group id.
        group: String,
        /// The admin.
        uid: String,
    },
    /// Change a group's settings (owner or admin).
    UpdateGroup {
        /// Group id.
        group: String,
        /// New display name.
        name: Option<String>,
        /// New access mode.
        access: Option<Access>,
        /// New history visibility.
        history: Option<HistoryVisibility>,
    },
    /// A group's settings and one's role in it.
    GroupInfo {
        /// Group id.
        group: String,
    },
    /// Refuse a user's direct messages and invitations.
    Block {
        /// The user to block.
        uid: String,
    },
    /// Accept a blocked user again.
    Unblock {
        /// The user.
        uid: String,
    },
    /// List the users one blocks, a page at a time.
    Blocks {
        /// Only uids after this one.
        after: Option<String>,
    },
    /// Replace the connection's token before it expires.
    Refresh {
        /// The new token (same `sub`).
        token: String,
    },
    /// List online uids.
    Online,
}

/// Where a `send` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A uid.
    Direct(String),
    /// A group id.
    Group(String),
}

/// One parsed frame: its `cid` (echoed in answers) and the request or why it is refused.
pub struct Parsed {
    /// The frame's `cid`, when it had a string one.
    pub cid: Option<String>,
    /// The request.
    pub request: Result<Request, ProtocolError>,
}

/// Parses a client text frame.
pub fn parse(text: &str, max_text_chars: usize) -> Parsed {
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Parsed {
                cid: None,
                request: Err(ProtocolError::new(Code::BadJson, "a frame must be a json object")),
            };
        }
        Err(error) => {
            return Parsed {
                cid: None,
                request: Err(ProtocolError::new(Code::BadJson, format!("malformed json: {error}"))),
            };
        }
    };
    // Only a valid cid is echoed: an answer never quotes more of the client than it allows.
    let cid = match object.get("cid") {
        None | Some(Value::Null) => None,
        Some(Value::String(cid)) if valid_cid(cid) => Some(cid.clone()),
        Some(_) => {
            return Parsed {
                cid: None,
                request: Err(invalid(format!("cid must be 1-{MAX_CID_CHARS} printable characters"))),
            };
        }
    };
    let request = Fields(&object).request(max_text_chars);
    Parsed { cid, request }
}

/// Whether `cid` is 1–64 characters without control characters.
pub fn valid_cid(cid: &str) -> bool {
    !cid.is_empty() && cid.chars().count() <= MAX_CID_CHARS && !cid.chars().any(char::is_control)
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// The request the frame's `type` names, its fields checked. Each family of types reads
    /// its own fields; a type none of them knows is `unknown_type`.
    fn request(&self, max_text_chars: usize) -> Result<Request, ProtocolError> {
        let kind = match self.0.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => return Err(ProtocolError::new(Code::UnknownType, "type must be a string")),
            None => return Err(ProtocolError::new(Code::UnknownType, "the frame has no type")),
        };
        if let Some(request) = self.message_request(kind, max_text_chars)? {
            return Ok(request);
        }
        if let Some(request) = self.query_request(kind)? {
            return Ok(request);
        }
        if let Some(request) = self.group_request(kind)? {
            return Ok(request);
        }
        if let Some(request) = self.account_request(kind)? {
            return Ok(request);
        }
        let quoted: String = kind.chars().take(MAX_QUOTED_CHARS).collect();
        let ellipsis = if quoted.len() < kind.len() { "…" } else { "" };
        Err(ProtocolError::new(
            Code::UnknownType,
            format!("unknown type {quoted:?}{ellipsis}"),
        ))
    }

    /// The requests that write to a conversation or tell its members something: `send`,
    /// `edit`, `delete`, `react`, `delivered`, `read`, `typing`.
    fn message_request(&self, kind: &str, max_text_chars: usize) -> Result<Option<Request>, ProtocolError> {
        Ok(Some(match kind {
            "send" => self.send(max_text_chars)?,
            "edit" => {
                self.string("cid")?;
                Request::Edit {
                    conversation: self.conversation("conversation")?,
                    id: self.int("id")?,
                    text: self.text(max_text_chars)?,
                }
            }
            "delete" => {
                self.string("cid")?;
                Request::Delete {
                    conversation: self.conversation("conversation")?,
                    id: self.int("id")?,
                }
            }
            "react" => {
                self.string("cid")?;
                Request::React {
                    conversation: self.conversation("conversation")?,
                    id: self.int("id")?,
                    emoji: self.emoji()?,
                    add: self.choice("action", "add", "remove")?,
                }
            }
            "delivered" => Request::Delivered {
                conversation: self.conversation("conversation")?,
                seq: self.int("seq")?,
            },
            "read" => Request::Read {
                conversation: self.conversation("conversation")?,
                seq: self.int("seq")?,
            },
            "typing" => Request::Typing {
                conversation: self.conversation("conversation")?,
                start: typing_start(self.optional_string("state")?.as_deref())?,
            },
            _ => return Ok(None),
        }))
    }

    /// The requests that read: `sync`, `ping`, `search`, `history`, `conversations`.
    fn query_request(&self, kind: &str) -> Result<Option<Request>, ProtocolError> {
        Ok(Some(match kind {
            "sync" => Request::Sync {
                cursors: self.cursors()?,
                limit: self.limit(SYNC_LIMIT)?,
                window: self.window()?,
            },
            "ping" => Request::Ping,
            "search" => Request::Search {
                query: self.query()?,
                conversation: self.optional_conversation("conversation")?,
                offset: self.offset()?,
                limit: self.limit(SEARCH_LIMIT)?,
            },
            "history" => Request::History {
                conversation: self.conversation("conversation")?,
                before: self.optional_int("before")?,
                limit: self.limit(HISTORY_LIMIT)?,
            },
            "conversations" => Request::Conversations {
                after: self.optional_conversation("after")?,
                limit: self.limit(CONVERSATIONS_LIMIT)?,
            },
            _ => return Ok(None),
        }))
    }

    /// The group requests: membership, invitations, moderation, roles, settings.
    fn group_request(&self, kind: &str) -> Result<Option<Request>, ProtocolError> {
        Ok(Some(match kind {
            "create_group" => Request::CreateGroup {
                group: self.group("group")?,
                name: self.name()?,
                access: self.access()?,
                history: self.history()?,
            },
            "join_group" => Request::JoinGroup {
                group: self.group("group")?,
            },
            "leave_group" => Request::LeaveGroup {
                group: self.group("group")?,
            },
            "members" => Request::Members {
                group: self.group("group")?,
                after: self.optional_uid("after")?,
                limit: self.limit(MEMBERS_LIMIT)?,
            },
            "invite" => Request::Invite {
                group: self.group("group")?,
                uid: self.uid("uid")?,
            },
            "decline" => Request::Decline {
                group: self.group("group")?,
            },
            "invitations" => Request::Invitations,
            "update_group" => Request::UpdateGroup {
                group: self.group("group")?,
                name: self.name()?,
                access: self.access()?,
                history: self.history()?,
            },
            "group_info" => Request::GroupInfo {
                group: self.group("group")?,
            },
            _ => return self.moderation_request(kind),
        }))
    }

    /// The group requests on another member: `kick`, `ban`, `unban`, `promote`, `demote`.
    fn moderation_request(&self, kind: &str) -> Result<Option<Request>, ProtocolError> {
        let make: fn(String, String) -> Request = match kind {
            "kick" => |group, uid| Request::Kick { group, uid },
            "ban" => |group, uid| Request::Ban { group, uid },
            "unban" => |group, uid| Request::Unban { group, uid },
            "promote" => |group, uid| Request::Promote { group, uid },
            "demote" => |group, uid| Request::Demote { group, uid },
            _ => return Ok(None),
        };
        Ok(Some(make(self.group("group")?, self.uid("uid")?)))
    }

    /// The user's own requests: blocks, token refresh, who is online.
    fn account_request(&self, kind: &str) -> Result<Option<Request>, ProtocolError> {
        Ok(Some(match kind {
            "block" => Request::Block { uid: self.uid("uid")? },
            "unblock" => Request::Unblock { uid: self.uid("uid")? },
            "blocks" => Request::Blocks {
                after: self.optional_uid("after")?,
            },
            "refresh" => Request::Refresh { token: self.token()? },
            "online" => Request::Online,
            _ => return Ok(None),
        }))
    }

    fn send(&self, max_text_chars: usize) -> Result<Request, ProtocolError> {
        let target = match (self.optional_string("to")?, self.optional_string("group")?) {
            (Some(_), Some(_)) => return Err(invalid("give either to or group, not both")),
            (Some(to), None) => {
                if !crate::auth::valid_uid(&to) {
                    return Err(invalid("to is not a valid uid"));
                }
                Target::Direct(to)
            }
            (None, Some(_)) => Target::Group(self.group("group")?),
            (None, None) => return Err(ProtocolError::new(Code::MissingField, "a send needs to or group")),
        };
        // `parse` already refused an invalid cid; a send needs one.
        self.string("cid")?;
        let text = self.text(max_text_chars)?;
        let reply_to = self.optional_int("reply_to")?;
        Ok(Request::Send { target, text, reply_to })
    }

    fn text(&self, max_text_chars: usize) -> Result<String, ProtocolError> {
        let text = self.string("text")?;
        check_text(&text, max_text_chars)?;
        Ok(text)
    }

    /// An optional field that is one of two words, `first` by default: `true` for `first`.
    fn choice(&self, name: &str, first: &str, second: &str) -> Result<bool, ProtocolError> {
        choose(name, self.optional_string(name)?.as_deref(), first, second)
    }

    /// One emoji: 1–32 bytes, printable, no whitespace.
    fn emoji(&self) -> Result<String, ProtocolError> {
        let emoji = self.string("emoji")?;
        if emoji.is_empty()
            || emoji.len() > MAX_EMOJI_BYTES
            || emoji.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(format!(
                "emoji must be 1-{MAX_EMOJI_BYTES} bytes without spaces or control characters"
            )));
        }
        Ok(emoji)
    }

    /// A search query: 1–200 characters, at most 10 words (checked by the store's parser).
    fn query(&self) -> Result<String, ProtocolError> {
        let query = self.string("query")?;
        if query.trim().is_empty() || query.chars().count() > MAX_QUERY_CHARS {
            return Err(invalid(format!("query must be 1-{MAX_QUERY_CHARS} characters")));
        }
        gatehouse_store::SearchQuery::parse(&query).map_err(|e| invalid(e.to_string()))?;
        Ok(query)
    }

    fn offset(&self) -> Result<u32, ProtocolError> {
        let max = gatehouse_store::MAX_SEARCH_OFFSET;
        match self.optional_int("offset")? {
            None => Ok(0),
            Some(offset) if offset <= i64::from(max) => Ok(offset as u32),
            Some(_) => Err(invalid(format!("offset must be between 0 and {max}"))),
        }
    }

    fn window(&self) -> Result<Option<u32>, ProtocolError> {
        match self.optional_int("window")? {
            None => Ok(None),
            Some(window) if (1..=i64::from(MAX_SYNC_WINDOW)).contains(&window) => Ok(Some(window as u32)),
            Some(_) => Err(invalid(format!("window must be between 1 and {MAX_SYNC_WINDOW}"))),
        }
    }

    fn optional_string(&self, name: &str) -> Result<Option<String>, ProtocolError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.clone())),
            Some(_) => Err(invalid(format!("{name} must be a string"))),
        }
    }

    fn string(&self, name: &str) -> Result<String, ProtocolError> {
        self.optional_string(name)?.ok_or_else(|| missing(name))
    }

    fn group(&self, name: &str) -> Result<String, ProtocolError> {
        let group = self.string(name)?;
        if !crate::auth::valid_uid(&group) {
            return Err(invalid(format!("{name} must be 1-64 letters, digits or _ . @ -")));
        }
        Ok(group)
    }

    fn token(&self) -> Result<String, ProtocolError> {
        let token = self.string("token")?;
        if token.is_empty() || token.len() > crate::auth::MAX_TOKEN_BYTES {
            return Err(invalid(format!(
                "token must be 1-{} bytes",
                crate::auth::MAX_TOKEN_BYTES
            )));
        }
        Ok(token)
    }

    fn conversation(&self, name: &str) -> Result<String, ProtocolError> {
        self.optional_conversation(name)?.ok_or_else(|| missing(name))
    }

    fn optional_conversation(&self, name: &str) -> Result<Option<String>, ProtocolError> {
        let Some(conversation) = self.optional_string(name)? else {
            return Ok(None);
        };
        if !valid_conversation(&conversation) {
            return Err(invalid(format!(
                "{name} must be a conversation id: d:<uid>:<uid> or g:<group>"
            )));
        }
        Ok(Some(conversation))
    }

    fn optional_uid(&self, name: &str) -> Result<Option<String>, ProtocolError> {
        let Some(uid) = self.optional_string(name)? else {
            return Ok(None);
        };
        if !crate::auth::valid_uid(&uid) {
            return Err(invalid(format!("{name} must be 1-64 letters, digits or _ . @ -")));
        }
        Ok(Some(uid))
    }

    fn uid(&self, name: &str) -> Result<String, ProtocolError> {
        self.optional_uid(name)?.ok_or_else(|| missing(name))
    }

    /// A group display name: 1–100 characters, not only whitespace, no control characters.
    fn name(&self) -> Result<Option<String>, ProtocolError> {
        let Some(name) = self.optional_string("name")? else {
            return Ok(None);
        };
        if name.chars().count() > MAX_GROUP_NAME_CHARS {
            return Err(ProtocolError::limit(
                "name_chars",
                MAX_GROUP_NAME_CHARS as u64,
                format!("name is longer than {MAX_GROUP_NAME_CHARS} characters"),
            ));
        }
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(invalid("name must be printable text, not only whitespace"));
        }
        Ok(Some(name))
    }

    fn access(&self) -> Result<Option<Access>, ProtocolError> {
        match self.optional_string("access")? {
            None => Ok(None),
            Some(value) => Access::parse(&value)
                .map(Some)
                .ok_or_else(|| invalid("access must be \"open\" or \"invite\"")),
        }
    }

    fn history(&self) -> Result<Option<HistoryVisibility>, ProtocolError> {
        match self.optional_string("history")? {
            None => Ok(None),
            Some(value) => HistoryVisibility::parse(&value)
                .map(Some)
                .ok_or_else(|| invalid("history must be \"joined\" or \"shared\"")),
        }
    }

    fn optional_int(&self, name: &str) -> Result<Option<i64>, ProtocolError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_i64()
                .filter(|v| *v >= 0)
                .map(Some)
                .ok_or_else(|| invalid(format!("{name} must be a non-negative integer"))),
        }
    }

    fn int(&self, name: &str) -> Result<i64, ProtocolError> {
        self.optional_int(name)?.ok_or_else(|| missing(name))
    }

    fn limit(&self, (default, max): (u32, u32)) -> Result<u32, ProtocolError> {
        match self.optional_int("limit")? {
            None => Ok(default),
            Some(limit) if (1..=i64::from(max)).contains(&limit) => Ok(limit as u32),
            Some(_) => Err(invalid(format!("limit must be between 1 and {max}"))),
        }
    }

    fn cursors(&self) -> Result<HashMap<String, i64>, ProtocolError> {
        match self.0.get("cursors") {
            None | Some(Value::Null) => Ok(HashMap::new()),
            Some(Value::Object(map)) => {
                if map.len() > MAX_CURSORS {
                    return Err(ProtocolError::limit(
                        "cursors",
                        MAX_CURSORS as u64,
                        format!("cursors has {} entries, at most {MAX_CURSORS} are allowed", map.len()),
                    ));
                }
                map.iter()
                    .map(|(conversation, seq)| {
                        if !valid_conversation(conversation) {
                            return Err(invalid("cursors keys must be conversation ids"));
                        }
                        seq.as_i64()
                            .filter(|s| *s >= 0)
                            .map(|s| (conversation.clone(), s))
                            .ok_or_else(|| invalid("cursors map conversations to non-negative integers"))
                    })
                    .collect()
            }
            Some(_) => Err(invalid("cursors must be an object")),
        }
    }
}

/// Whether `id` is a conversation id of the chat service: `g:<group>` or `d:<uid>:<uid>` with
/// valid names (chat uids and group ids contain neither `:` nor `%`, so no escaping occurs), at
/// most 131 characters.
pub fn valid_conversation(id: &str) -> bool {
    if let Some(group) = id.strip_prefix("g:") {
        return crate::auth::valid_uid(group);
    }
    id.strip_prefix("d:")
        .and_then(|pair| pair.split_once(':'))
        .is_some_and(|(a, b)| crate::auth::valid_uid(a) && crate::auth::valid_uid(b))
}

/// Whether a message's `text` may be sent: not only whitespace, at most `max_text_chars`
/// characters. Both parsers (this module's and `fastparse`) check a text through it.
pub(crate) fn check_text(text: &str, max_text_chars: usize) -> Result<(), ProtocolError> {
    if text.trim().is_empty() {
        return Err(ProtocolError::new(Code::EmptyText, "text is empty"));
    }
    if text.chars().count() > max_text_chars {
        return Err(ProtocolError::new(
            Code::TextTooLong,
            format!("text is longer than {max_text_chars} characters"),
        ));
    }
    Ok(())
}

/// A `typing` frame's `state`: `true` for `"start"` (the default), `false` for `"stop"`.
/// Both parsers read it through this.
pub(crate) fn typing_start(state: Option<&str>) -> Result<bool, ProtocolError> {
    choose("state", state, "start", "stop")
}

/// An optional field's `value` that is one of two words, `first` by default: `true` for
/// `first`.
fn choose(name: &str, value: Option<&str>, first: &str, second: &str) -> Result<bool, ProtocolError> {
    match value {
        None => Ok(true),
        Some(value) if value == first => Ok(true),
        Some(value) if value == second => Ok(false),
        Some(_) => Err(invalid(format!("{name} must be \"{first}\" or \"{second}\""))),
    }
}

fn missing(name: &str) -> ProtocolError {
    ProtocolError::new(Code::MissingField, format!("missing field {name}"))
}

fn invalid(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(Code::InvalidField, message)
}

/// The object of one item of a conversation's sequence (pushed, and inside `sync` and
/// `history`): a `message` in its current state, or an `edit`, `delete` or `reaction` event.
pub fn message(stored: &StoredMessage) -> Value {
    serde_json::to_value(MessageFrame::new(stored)).expect("a message frame serialises")
}

/// [`message`] serialised straight from the stored message, without building a JSON tree
/// first: every message is pushed, so this runs once per message, where the tree cost an
/// allocation per key and per string. Fields are declared in the order a tree sorts its keys,
/// so the bytes are the same either way.
#[derive(Serialize)]
pub struct MessageFrame<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    cid: &'a str,
    conversation: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    edited: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emoji: Option<&'a str>,
    from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reactions: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<i64>,
    seq: i64,
    /// Present (possibly `null`) on change events only.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    ts: i64,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl<'a> MessageFrame<'a> {
    /// The frame of `stored`.
    pub fn new(stored: &'a StoredMessage) -> MessageFrame<'a> {
        let mut frame = MessageFrame {
            action: None,
            cid: &stored.cid,
            conversation: &stored.conversation,
            deleted: false,
            edited: None,
            emoji: None,
            from: &stored.sender,
            group: stored.group.as_deref(),
            id: stored.id,
            reactions: None,
            reply_to: None,
            seq: stored.seq,
            target: None,
            text: None,
            to: stored.to.as_deref(),
            ts: stored.ts_ms,
            kind: "message",
        };
        match stored.kind {
            EventKind::Message => {
                frame.text = Some(&stored.text);
                frame.reply_to = stored.reply_to;
                frame.edited = stored.edited_ms;
                frame.deleted = stored.deleted;
                frame.reactions = stored
                    .reactions
                    .as_deref()
                    .and_then(|r| serde_json::from_str::<Value>(r).ok());
            }
            EventKind::Edit => {
                frame.kind = "edit";
                frame.target = Some(stored.target);
                frame.text = Some(&stored.text);
            }
            EventKind::Delete => {
                frame.kind = "delete";
                frame.target = Some(stored.target);
            }
            EventKind::ReactionAdd | EventKind::ReactionRemove => {
                frame.kind = "reaction";
                frame.target = Some(stored.target);
                frame.emoji = Some(&stored.text);
                frame.action = Some(if stored.kind == EventKind::ReactionAdd {
                    "add"
                } else {
                    "remove"
                });
            }
        }
        frame
    }
}

/// The `ack` for a stored message.
pub fn ack(stored: &StoredMessage, duplicate: bool) -> AckFrame<'_> {
    AckFrame {
        cid: &stored.cid,
        conversation: &stored.conversation,
        duplicate,
        id: stored.id,
        seq: stored.seq,
        ts: stored.ts_ms,
        kind: "ack",
    }
}

/// The `ack` frame, serialised without a JSON tree (one per message, as [`MessageFrame`]), its
/// fields in a tree's key order.
#[derive(Serialize)]
pub struct AckFrame<'a> {
    cid: &'a str,
    conversation: &'a str,
    duplicate: bool,
    id: i64,
    seq: i64,
    ts: i64,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The `receipt` push to the authors, serialised without a JSON tree (two per message in a
/// live chat), fields in a tree's key order.
#[derive(Serialize)]
pub struct ReceiptFrame<'a> {
    /// The conversation.
    pub conversation: &'a str,
    /// `read` or `delivered`.
    pub kind: &'static str,
    /// The marker after the move.
    pub seq: i64,
    /// When it moved (milliseconds since the Unix epoch).
    pub ts: i64,
    #[serde(rename = "type")]
    kind_of_frame: &'static str,
    /// The reader.
    pub uid: &'a str,
}

impl<'a> ReceiptFrame<'a> {
    /// The receipt of `uid`'s `kind` marker moved to `seq` in `conversation` at `ts`.
    pub fn new(conversation: &'a str, uid: &'a str, kind: &'static str, seq: i64, ts: i64) -> ReceiptFrame<'a> {
        ReceiptFrame {
            conversation,
            kind,
            seq,
            ts,
            kind_of_frame: "receipt",
            uid,
        }
    }
}

/// A marker and the unread count that follows (`read` pushed to the reader's other devices,
/// and the answer to `read` or `delivered`), fields in a tree's key order.
#[derive(Serialize)]
pub struct MarkerFrame<'a> {
    /// The conversation.
    pub conversation: &'a str,
    /// The marker.
    pub seq: i64,
    /// `read` or `delivered`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Events after the marker.
    pub unread: i64,
}

/// The `typing` push, serialised without a JSON tree, fields in a tree's key order.
#[derive(Serialize)]
pub struct TypingFrame<'a> {
    /// The conversation.
    pub conversation: &'a str,
    /// How long the indicator lasts without a refresh.
    pub expires_ms: u64,
    /// `start` or `stop`.
    pub state: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    /// Who types.
    pub uid: &'a str,
}

impl<'a> TypingFrame<'a> {
    /// `uid` started or stopped typing in `conversation`.
    pub fn new(conversation: &'a str, uid: &'a str, state: &'static str, expires_ms: u64) -> TypingFrame<'a> {
        TypingFrame {
            conversation,
            expires_ms,
            state,
            kind: "typing",
            uid,
        }
    }
}

/// The `group_info` frame: a group as one of its members sees it.
pub fn group_info(info: &gatehouse_store::GroupInfo) -> Value {
    json!({
        "type": "group_info",
        "group": info.group,
        "name": info.name,
        "owner": info.owner,
        "access": info.access,
        "history": info.history,
        "member_count": info.member_count,
        "role": info.role,
    })
}

/// An `error` frame.
pub fn error(error: &ProtocolError, cid: Option<&str>) -> Value {
    let mut frame = json!({"type": "error", "code": error.code, "message": error.message, "cid": cid});
    for (name, value) in &error.fields {
        frame[*name] = value.clone();
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(kind: EventKind) -> StoredMessage {
        StoredMessage {
            id: 41,
            conversation: "d:ann:ben".into(),
            seq: 7,
            sender: "ann".into(),
            to: Some("ben".into()),
            group: None,
            cid: "c-1".into(),
            text: "hi \"there\"".into(),
            ts_ms: 1_764_254_400_123,
            kind,
            target: None,
            reply_to: None,
            edited_ms: None,
            deleted: false,
            reactions: None,
        }
    }

    /// The frame as bytes, and the same frame's bytes through a JSON tree (sorted keys).
    fn both_ways(stored: &StoredMessage) -> (String, String) {
        let direct = serde_json::to_string(&MessageFrame::new(stored)).unwrap();
        let tree = serde_json::to_string(&message(stored)).unwrap();
        (direct, tree)
    }

    #[test]
    fn a_message_frame_has_every_field_of_its_kind_and_the_bytes_of_a_json_tree() {
        let mut plain = stored(EventKind::Message);
        let (direct, tree) = both_ways(&plain);
        assert_eq!(direct, tree, "fields in a tree's key order");
        assert_eq!(
            message(&plain),
            json!({"type": "message", "id": 41, "conversation": "d:ann:ben", "seq": 7, "from": "ann",
                "ts": 1_764_254_400_123_i64, "cid": "c-1", "to": "ben", "text": "hi \"there\""})
        );
        plain.reply_to = Some(3);
        plain.edited_ms = Some(5);
        plain.deleted = true;
        plain.reactions = Some(r#"{"👍":2,"🎉":1}"#.into());
        plain.to = None;
        plain.group = Some("team".into());
        let (direct, tree) = both_ways(&plain);
        assert_eq!(direct, tree);
        let value = message(&plain);
        assert_eq!(value["reply_to"], 3);
        assert_eq!(value["edited"], 5);
        assert_eq!(value["deleted"], true);
        assert_eq!(value["reactions"], json!({"👍": 2, "🎉": 1}));
        assert_eq!(value["group"], "team");
        assert!(value.get("to").is_none() && value.get("target").is_none());

        let mut edit = stored(EventKind::Edit);
        edit.target = Some(40);
        let (direct, tree) = both_ways(&edit);
        assert_eq!(direct, tree);
        assert_eq!(
            (&message(&edit)["type"], &message(&edit)["target"]),
            (&json!("edit"), &json!(40))
        );

        let delete = stored(EventKind::Delete);
        let (direct, tree) = both_ways(&delete);
        assert_eq!(direct, tree);
        let value = message(&delete);
        assert_eq!(
            value["target"],
            Value::Null,
            "a change names its target, null if unknown"
        );
        assert!(value.get("text").is_none());

        for (kind, action) in [(EventKind::ReactionAdd, "add"), (EventKind::ReactionRemove, "remove")] {
            let reaction = stored(kind);
            let (direct, tree) = both_ways(&reaction);
            assert_eq!(direct, tree);
            let value = message(&reaction);
            assert_eq!(
                (&value["type"], &value["action"], &value["emoji"]),
                (&json!("reaction"), &json!(action), &json!("hi \"there\""))
            );
            assert!(value.get("text").is_none());
        }
    }

    #[test]
    fn receipt_marker_and_typing_pushes_have_the_bytes_of_a_json_tree() {
        let receipt = ReceiptFrame::new("d:ann:ben", "ben", "read", 14, 1_764_254_400_123);
        let expected = json!({"type": "receipt", "conversation": "d:ann:ben", "uid": "ben", "kind": "read",
            "seq": 14, "ts": 1_764_254_400_123_i64});
        assert_eq!(serde_json::to_string(&receipt).unwrap(), expected.to_string());
        let marker = MarkerFrame {
            conversation: "d:ann:ben",
            seq: 14,
            kind: "read",
            unread: 2,
        };
        let expected = json!({"type": "read", "conversation": "d:ann:ben", "seq": 14, "unread": 2});
        assert_eq!(serde_json::to_string(&marker).unwrap(), expected.to_string());
        let typing = TypingFrame::new("g:team", "ann", "start", 6000);
        let expected = json!({"type": "typing", "conversation": "g:team", "uid": "ann", "state": "start",
            "expires_ms": 6000});
        assert_eq!(serde_json::to_string(&typing).unwrap(), expected.to_string());
    }

    #[test]
    fn an_ack_has_the_bytes_of_a_json_tree() {
        let sent = stored(EventKind::Message);
        let direct = serde_json::to_string(&ack(&sent, true)).unwrap();
        let expected = json!({"type": "ack", "cid": "c-1", "id": 41, "conversation": "d:ann:ben", "seq": 7,
            "ts": 1_764_254_400_123_i64, "duplicate": true});
        assert_eq!(direct, expected.to_string());
    }

    fn code(text: &str) -> Code {
        parse(text, 10).request.unwrap_err().code
    }

    #[test]
    fn every_bad_input_gets_its_code() {
        assert_eq!(code("{nope"), Code::BadJson);
        assert_eq!(code("[1]"), Code::BadJson);
        assert_eq!(code("{}"), Code::UnknownType);
        assert_eq!(code(r#"{"type":"dance"}"#), Code::UnknownType);
        assert_eq!(code(r#"{"type":"send","to":"bob","cid":"1"}"#), Code::MissingField);
        assert_eq!(code(r#"{"type":"send","text":"x","cid":"1"}"#), Code::MissingField);
        assert_eq!(code(r#"{"type":"send","to":"bob","text":"x"}"#), Code::MissingField);
        assert_eq!(
            code(r#"{"type":"send","to":5,"text":"x","cid":"1"}"#),
            Code::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"send","to":"bob","group":"g","text":"x","cid":"1"}"#),
            Code::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"send","to":"bob","text":7,"cid":"1"}"#),
            Code::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"send","to":"bob","text":"x","cid":""}"#),
            Code::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"send","to":"bob","text":"   ","cid":"1"}"#),
            Code::EmptyText
        );
        assert_eq!(
            code(r#"{"type":"send","to":"bob","text":"12345678901","cid":"1"}"#),
            Code::TextTooLong
        );
        assert_eq!(code(r#"{"type":"history"}"#), Code::MissingField);
        assert_eq!(code(r#"{"type":"sync","limit":0}"#), Code::InvalidField);
        assert_eq!(code(r#"{"type":"sync","cursors":{"d:a:b":-1}}"#), Code::InvalidField);
    }

    #[test]
    fn every_code_is_documented_in_the_protocol() {
        let doc = include_str!("../../../docs/protocol.md");
        for code in Code::ALL {
            let row = format!("| `{}` |", code.as_str());
            assert!(doc.contains(&row), "docs/protocol.md has no row for {row}");
        }
    }

    #[test]
    fn bounds_are_refused_with_precise_codes() {
        let cursors: Map<String, Value> = (0..=MAX_CURSORS).map(|i| (format!("g:c{i}"), json!(0))).collect();
        let frame = json!({"type": "sync", "cursors": cursors}).to_string();
        let error = parse(&frame, 10).request.unwrap_err();
        assert_eq!(error.code, Code::LimitExceeded);
        assert!(error.fields.contains(&("limit", json!("cursors"))));
        assert_eq!(code(r#"{"type":"sync","cursors":{"nonsense":1}}"#), Code::InvalidField);
        assert_eq!(code(r#"{"type":"history","conversation":"g:"}"#), Code::InvalidField);
        assert_eq!(
            code(r#"{"type":"read","conversation":"d:a","seq":1}"#),
            Code::InvalidField
        );
        let long_name = json!({"type": "create_group", "group": "g", "name": "n".repeat(101)}).to_string();
        assert_eq!(parse(&long_name, 10).request.unwrap_err().code, Code::LimitExceeded);
        let long_cid = json!({"type": "conversations", "cid": "c".repeat(65)}).to_string();
        let parsed = parse(&long_cid, 10);
        assert_eq!(
            (parsed.cid, parsed.request.unwrap_err().code),
            (None, Code::InvalidField)
        );
        let long_type = json!({"type": "t".repeat(5000)}).to_string();
        let error = parse(&long_type, 10).request.unwrap_err();
        assert!(error.message.len() < 100, "{}", error.message);
    }

    #[test]
    fn good_frames_parse_and_keep_their_cid() {
        let parsed = parse(r#"{"type":"send","group":"team","text":"hi","cid":"c1"}"#, 10);
        assert_eq!(parsed.cid.as_deref(), Some("c1"));
        assert_eq!(
            parsed.request.unwrap(),
            Request::Send {
                target: Target::Group("team".into()),
                text: "hi".into(),
                reply_to: None,
            }
        );
        let sync = parse(r#"{"type":"sync","cursors":{"g:team":4}}"#, 10).request.unwrap();
        assert_eq!(
            sync,
            Request::Sync {
                cursors: HashMap::from([("g:team".into(), 4)]),
                limit: 500,
                window: None,
            }
        );
    }
}
