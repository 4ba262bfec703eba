//! Durable chat history for gatehouse: conversations, members and per-conversation ordered
//! messages, on SQLite (default, one file), PostgreSQL or MariaDB (either shared by several
//! workers).
//!
//! The crate owns the chat schema and its migrations, conversation ids, the sequence numbers
//! that serve as sync cursors, idempotent appends keyed by `(sender, cid)`, read markers and
//! unread counts, and group commit (batching many appends into one transaction). It knows
//! nothing about WebSockets, gRPC, JSON protocol frames, routing or authentication: callers
//! pass in an already authenticated uid and get plain Rust values back. Authorisation is its
//! business, though: membership, roles, bans, blocks and history visibility are checked in the
//! same transaction (or statement) as the write or read they guard.
//!
//! Invariant: within a conversation, `seq` is contiguous from 1 and `seq` order is commit
//! order, so a client that resumes from cursor `X` gets every later message exactly once.
//!
//! # Layout
//!
//! - `store`: the public [`Store`] handle, backend choice from the URL, the
//!   append retry loop, reads (history, sync, conversation list).
//! - `access`: the group access model (owner, admins, access, history visibility, bans) as
//!   pure rules, and [`StoreLimits`], the caps on what users can accumulate.
//! - `groups`: group membership and administration under the group's lock.
//! - `blocks`: blocks between users.
//! - `events`: edits, deletes and reactions as events of the sequence; reply targets; moving
//!   the read and delivery markers.
//! - `catchup`: bounded catch-up (latest window per conversation, most recent first) and the
//!   change counter.
//! - `search`: full-text search (FTS5, tsvector, MariaDB's FULLTEXT) with snippets.
//! - `markers`: the receipt markers' requests and the batch that moves many in one
//!   transaction (its statements run in the backends' append transactions too).
//! - `plan`: backend-independent planning of one append batch (validation, in-batch
//!   duplicates, sequence assignment).
//! - `sqlite`, `postgres`, `mysql`: the three backends (pools, append transaction, dialect
//!   SQL; `mysql` also translates the shared SQL to MariaDB's placeholders and syntax).
//! - `sql`: SQL shared by the backends.
//! - `committer`: [`GroupCommitter`], the single writer (a thread of its own) that batches appends.
//! - `sink`: the benchmark-only writer that answers from memory and stores nothing
//!   ([`GroupCommitter::spawn_sink`]).
//! - `ids`: [`direct_conversation_id`], [`group_conversation_id`] and input checks.
//! - `model`: the values taken and returned ([`NewMessage`], [`StoredMessage`], …).
//! - `error`: [`StoreError`].
//! - `migrations/sqlite`, `migrations/postgres`, `migrations/mysql`: the schema, embedded at
//!   compile time.

mod access;
mod blocks;
mod catchup;
mod committer;
mod error;
mod events;
mod groups;
mod ids;
mod markers;
mod model;
mod mysql;
mod plan;
mod postgres;
mod search;
mod sink;
mod sql;
mod sqlite;
mod store;

pub use access::{
    Access, GroupInfo, GroupMember, GroupUpdate, HistoryVisibility, Invitation, InviteOutcome, JoinOutcome,
    MAX_GROUP_NAME_CHARS, MemberPage, NewGroup, Role, StoreLimits,
};
pub use catchup::{Activity, CatchUpConversation, CatchUpPage, MAX_CONVERSATIONS_SCANNED, Offer};
pub use committer::{GroupCommitConfig, GroupCommitter};
pub use error::{Limit, StoreError};
pub use events::{ChangeAction, Changed, MAX_REACTIONS_PER_MESSAGE, MAX_REACTIONS_PER_USER, NewChange};
pub use groups::MAX_GROUPS_LISTED;
pub use ids::{MAX_IDENT_CHARS, direct_conversation_id, group_conversation_id};
pub use markers::{Marker, MarkerMove, MarkerRequest};
pub use model::{
    Appended, ConversationKind, ConversationPage, ConversationRef, ConversationSummary, EventKind, HistoryPage,
    NewMessage, StoredMessage, SyncPage,
};
pub use search::{MAX_QUERY_WORDS, MAX_SEARCH_LIMIT, MAX_SEARCH_OFFSET, SearchHit, SearchPage, SearchQuery};
pub use store::{Admit, BackendKind, CONTACT_SCAN_FACTOR, MAX_PAGE, Store};
