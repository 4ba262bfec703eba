//! The public [`Store`] handle: backend choice, the append retry loop, and the read paths.

use std::collections::HashMap;
use std::sync::Arc;

use crate::access::StoreLimits;
use crate::error::StoreError;
use crate::ids::{check_ident, check_seq, now_ms};
use crate::markers::MarkerBatch;
use futures_util::TryStreamExt;

use crate::model::{
    Appended, ConversationPage, ConversationSummary, CursorRow, HistoryPage, MessageRow, NewMessage, StoredMessage,
    SummaryRow, SyncPage,
};
use crate::mysql::MySqlBackend;
use crate::plan::{Attempt, Plan};
use crate::postgres::PgBackend;
use crate::sql;
use crate::sqlite::SqliteBackend;

/// Upper bound on `limit` for [`Store::history`] and [`Store::sync`]: one page must fit in
/// memory and in one client frame, whatever a client asks for.
pub const MAX_PAGE: u32 = 10_000;

/// Decides, message by message in page order, whether a page has room for one more: `false`
/// ends the page before that message (see [`Store::sync_within`], [`Store::history_page`]).
pub type Admit<'a> = dyn FnMut(&StoredMessage) -> bool + Send + 'a;

/// How many membership rows [`Store::contacts_of`] reads per contact it may return.
pub const CONTACT_SCAN_FACTOR: usize = 20;

/// How often an append batch is retried after a deadlock or a conflicting concurrent insert
/// before [`StoreError::Contention`] is returned.
const MAX_ATTEMPTS: u32 = 5;

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A local SQLite file (single node, the default).
    Sqlite,
    /// A PostgreSQL server (several workers share one database).
    Postgres,
    /// A MariaDB server (several workers share one database), for teams that run MySQL-family
    /// databases already.
    MySql,
}

/// The durable chat history store: conversations, members and messages.
///
/// Cheap to clone (an `Arc` around the connection pools); every clone uses the same pools.
#[derive(Debug, Clone)]
pub struct Store {
    /// The backend and its pools, shared by every clone of the handle.
    pub(crate) inner: Arc<Backend>,
    /// Whether `inner`'s pools belong to this handle alone, not to the handle it was made from
    /// (see [`Store::for_this_runtime`]).
    own_pools: bool,
    /// The caps group and block operations enforce.
    pub(crate) limits: StoreLimits,
}

/// The database a store talks to, chosen once from the URL; every operation matches on it
/// (see `with_pool!`), so there is no dynamic dispatch per call.
#[derive(Debug)]
pub(crate) enum Backend {
    /// One file: a single writer connection and a small read pool.
    Sqlite(SqliteBackend),
    /// A shared server with row locks.
    Postgres(PgBackend),
    /// A shared MariaDB server (the shared SQL translated to its dialect).
    MySql(MySqlBackend),
}

/// Statements whose text differs between the backends, for code shared by all of them.
pub(crate) struct Dialect {
    /// Turns a statement of `crate::sql` into this backend's text (see [`Dialect::sql`]).
    pub(crate) translate: fn(&'static str) -> &'static str,
    /// Takes conversation `$1`'s row lock where the backend has row locks.
    pub(crate) lock_conversation: &'static str,
    /// Returns user `$1` if it exists, taking its row lock where the backend has row locks:
    /// per-user caps are counted under it. Always taken after the conversation's lock.
    pub(crate) lock_user: &'static str,
    /// Begins a transaction that writes, the way appends begin theirs.
    pub(crate) begin_write: &'static str,
}

impl Dialect {
    /// Returns this backend's text of `shared`, a statement of `crate::sql`: the same text on
    /// SQLite and PostgreSQL, `?` placeholders and MariaDB syntax on MariaDB.
    pub(crate) fn sql(&self, shared: &'static str) -> &'static str {
        (self.translate)(shared)
    }
}

/// The text of a shared statement on the backends that take `$n` placeholders.
pub(crate) fn as_is(shared: &'static str) -> &'static str {
    shared
}

/// The result of a whole append batch, for the group committer's counters.
#[derive(Debug)]
pub(crate) struct BatchOutcome {
    /// One result per input message, in input order.
    pub(crate) results: Vec<Result<Appended, StoreError>>,
    /// `true` when a transaction committed (`false` when every item failed validation).
    pub(crate) committed: bool,
    /// `true` when the marker batch handed to [`Store::append_batch`] was moved in the same
    /// transaction (SQLite); `false` leaves it to a transaction of its own.
    pub(crate) markers_moved: bool,
}

/// Runs `$body` with `$pool` bound to the chosen pool of whichever backend the store has and
/// `$dialect` bound to that backend's [`Dialect`]. The body is expanded once per backend, so it
/// is type-checked against each driver.
macro_rules! with_pool {
    ($store:expr, $role:ident, |$pool:ident, $dialect:ident| $body:expr) => {
        match &*$store.inner {
            $crate::store::Backend::Sqlite(backend) => {
                let $pool = backend.$role();
                let $dialect = $crate::store::Dialect {
                    translate: $crate::store::as_is,
                    lock_conversation: $crate::sqlite::LOCK_CONVERSATION,
                    lock_user: $crate::sqlite::LOCK_USER,
                    begin_write: $crate::sqlite::BEGIN,
                };
                $body
            }
            $crate::store::Backend::Postgres(backend) => {
                let $pool = backend.$role();
                let $dialect = $crate::store::Dialect {
                    translate: $crate::store::as_is,
                    lock_conversation: $crate::postgres::LOCK_CONVERSATION,
                    lock_user: $crate::postgres::LOCK_USER,
                    begin_write: $crate::postgres::BEGIN,
                };
                $body
            }
            $crate::store::Backend::MySql(backend) => {
                let $pool = backend.$role();
                let $dialect = $crate::store::Dialect {
                    translate: $crate::mysql::statement,
                    lock_conversation: $crate::mysql::LOCK_CONVERSATION,
                    lock_user: $crate::mysql::LOCK_USER,
                    begin_write: $crate::mysql::BEGIN,
                };
                $body
            }
        }
    };
    ($store:expr, $role:ident, |$pool:ident| $body:expr) => {
        with_pool!($store, $role, |$pool, _dialect| $body)
    };
}
pub(crate) use with_pool;

impl Store {
    /// Opens the store named by `url` and applies pending migrations.
    ///
    /// `postgres://…` and `postgresql://…` select PostgreSQL; `mysql://…` and `mariadb://…`
    /// select MariaDB (10.6 or later; the database must exist); `sqlite://path`, `sqlite:path`
    /// and a plain file path select SQLite (the file is created on first start; WAL mode,
    /// `synchronous=FULL` so that a committed append survives a power loss, 5 s busy timeout, foreign keys on). `sqlite::memory:` gives a
    /// private in-memory database for tests.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(PgBackend::open(url).await?)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Backend::MySql(MySqlBackend::open(url).await?)
        } else if url.is_empty() || (url.contains("://") && !url.starts_with("sqlite://")) {
            return Err(StoreError::InvalidInput(format!(
                "unsupported database url {url:?}: expected postgres://, mysql://, sqlite: or a file path"
            )));
        } else {
            Backend::Sqlite(SqliteBackend::open(url).await?)
        };
        tracing::debug!(backend = ?Self::kind_of(&backend), "store opened");
        Ok(Store {
            inner: Arc::new(backend),
            own_pools: false,
            limits: StoreLimits::default(),
        })
    }

    /// Returns a handle (sharing the same pools) that enforces `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: StoreLimits) -> Store {
        self.limits = limits;
        self
    }

    /// Returns the caps this handle enforces.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Returns a handle for a writer that runs on a runtime of its own (the group committer's
    /// thread).
    ///
    /// A PostgreSQL or MariaDB connection belongs to the runtime that opened it: that runtime's
    /// I/O driver wakes whoever waits on its socket. A writer sharing the caller's connections
    /// would still wait for the caller's runtime on every round trip, and would lose them when
    /// that runtime stops. So on those servers the handle gets a pool of its own, whose one connection is opened
    /// by the runtime that first uses it; call this on the writer's runtime. SQLite connections
    /// each run on a thread of their own and are shared, so that the one writer connection
    /// stays the only one.
    pub(crate) fn for_this_runtime(&self) -> Store {
        match &*self.inner {
            Backend::Sqlite(_) => self.clone(),
            Backend::Postgres(backend) => Store {
                inner: Arc::new(Backend::Postgres(backend.for_this_runtime())),
                own_pools: true,
                limits: self.limits,
            },
            Backend::MySql(backend) => Store {
                inner: Arc::new(Backend::MySql(backend.for_this_runtime())),
                own_pools: true,
                limits: self.limits,
            },
        }
    }

    /// Closes the pools of a handle from [`Store::for_this_runtime`] that are its alone; the
    /// pools it shares stay open for the other handles.
    pub(crate) async fn close_own_pools(&self) {
        if self.own_pools {
            self.close().await;
        }
    }

    fn kind_of(backend: &Backend) -> BackendKind {
        match backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
            Backend::MySql(_) => BackendKind::MySql,
        }
    }

    /// Returns which database this store runs on (for logs and health output).
    pub fn backend(&self) -> BackendKind {
        Self::kind_of(&self.inner)
    }

    /// Closes the connection pools; later calls on any clone fail with a database error.
    ///
    /// Lets a shutting-down process finish in-flight queries and release its connections
    /// instead of dropping them mid-transaction.
    pub async fn close(&self) {
        match &*self.inner {
            Backend::Sqlite(backend) => backend.close().await,
            Backend::Postgres(backend) => backend.close().await,
            Backend::MySql(backend) => backend.close().await,
        }
    }

    /// Appends a batch of messages in one transaction and returns one result per message, in
    /// input order.
    ///
    /// Each conversation's `last_seq` is bumped once for all of its new messages in the batch,
    /// under the conversation's row lock, so sequence order equals commit order. A message
    /// whose `(sender, cid)` is already stored, or appears earlier in the batch, is not stored
    /// again: its result is the original message with `duplicate: true` when it is the same
    /// message (same conversation and text), and [`StoreError::CidConflict`] when the key was
    /// used for another one. Item errors (conflict, not a member, blocked, invalid input) do not
    /// stop the other items; if the transaction itself fails, every item carries that error and
    /// nothing was stored.
    pub async fn append(&self, messages: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        let count = messages.len();
        match self.append_batch(messages, None).await {
            Ok(outcome) => outcome.results,
            Err(error) => vec![Err(error); count],
        }
    }

    /// Whether [`Store::append_batch`] moves a marker batch in its own transaction (SQLite).
    pub(crate) fn merges_markers(&self) -> bool {
        matches!(&*self.inner, Backend::Sqlite(_))
    }

    /// Like [`Store::append`], but reports a failed transaction once instead of per item.
    ///
    /// `markers`, if any, are moved in the same transaction on SQLite, whose single writer holds
    /// the database lock: the group committer pays one commit (one fsync) per round instead of
    /// two. PostgreSQL and MariaDB leave them to a transaction of their own (`markers_moved:
    /// false`): there a shared transaction would have to lock the receipts' conversations with
    /// the messages', and with two workers that cost more throughput than the saved commit
    /// (docs/benchmarks-receipts-idle.md).
    pub(crate) async fn append_batch(
        &self,
        messages: Vec<NewMessage>,
        mut markers: Option<&mut MarkerBatch<'_>>,
    ) -> Result<BatchOutcome, StoreError> {
        let mut plan = Plan::new(messages);
        if !self.merges_markers() {
            markers = None;
        }
        if plan.is_offline() {
            return Ok(BatchOutcome {
                results: plan.finish(),
                committed: false,
                markers_moved: false,
            });
        }
        let markers_moved = markers.is_some();
        for attempt in 1..=MAX_ATTEMPTS {
            let outcome = match &*self.inner {
                Backend::Sqlite(backend) => backend.append_attempt(&mut plan, markers.as_deref_mut()).await,
                Backend::Postgres(backend) => backend.append_attempt(&mut plan).await,
                Backend::MySql(backend) => backend.append_attempt(&mut plan).await,
            };
            match outcome {
                Ok(Attempt::Committed) => {
                    return Ok(BatchOutcome {
                        results: plan.finish(),
                        committed: true,
                        markers_moved,
                    });
                }
                Ok(Attempt::Retry) => {
                    tracing::debug!(
                        attempt,
                        "a conversation of the batch was created concurrently, retrying"
                    );
                }
                Err(error) if is_transient(&error) => {
                    tracing::debug!(attempt, %error, "append hit a transient error, retrying");
                }
                Err(error) => return Err(error),
            }
            plan.reset();
        }
        Err(StoreError::Contention(MAX_ATTEMPTS))
    }

    /// Records that `uid` has signed in (idempotent), so that others may address it.
    pub async fn ensure_user(&self, uid: &str) -> Result<(), StoreError> {
        check_ident("uid", uid)?;
        with_pool!(self, writer, |pool, dialect| {
            sqlx::query(dialect.sql(sql::ENSURE_USER))
                .bind(uid)
                .bind(now_ms())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Returns whether `uid` has ever signed in: direct messages to unknown users are refused.
    pub async fn user_exists(&self, uid: &str) -> Result<bool, StoreError> {
        check_ident("uid", uid)?;
        let found: Option<String> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_scalar(dialect.sql(sql::USER_EXISTS))
                .bind(uid)
                .fetch_optional(pool)
                .await?
        });
        Ok(found.is_some())
    }

    /// Returns whether `uid` belongs to `conversation_id` (a `d:…` or `g:…` id).
    ///
    /// The authorisation check for reads and subscriptions; a direct conversation has members
    /// once its first message is stored.
    pub async fn is_member(&self, conversation_id: &str, uid: &str) -> Result<bool, StoreError> {
        let found: Option<String> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_scalar(dialect.sql(sql::IS_MEMBER))
                .bind(conversation_id)
                .bind(uid)
                .fetch_optional(pool)
                .await?
        });
        Ok(found.is_some())
    }

    /// Returns all of `uid`'s conversations (sorted by id) with `last_seq`, read marker and
    /// unread count. For tools and tests; a client asks for pages ([`Store::conversations_page`]).
    pub async fn conversations_of(&self, uid: &str) -> Result<Vec<ConversationSummary>, StoreError> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map(|c: &ConversationSummary| c.id.clone());
            let page = self.conversations_page(uid, after.as_deref(), MAX_PAGE).await?;
            all.extend(page.conversations);
            if !page.more {
                return Ok(all);
            }
        }
    }

    /// Returns up to `limit` (1 to [`MAX_PAGE`]) of `uid`'s conversations with an id after
    /// `after` (from the first when `None`), in id order, with `last_seq`, read marker and unread
    /// count, for a client's conversation list.
    pub async fn conversations_page(
        &self,
        uid: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ConversationPage, StoreError> {
        check_ident("uid", uid)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let rows: Vec<SummaryRow> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_as(dialect.sql(sql::SUMMARIES))
                .bind(uid)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?
        });
        let more = rows.len() > limit as usize;
        let conversations = rows
            .into_iter()
            .take(limit as usize)
            .filter_map(|row| row.into_summary(uid))
            .collect();
        Ok(ConversationPage { conversations, more })
    }

    /// Returns up to `limit` messages of `conversation_id` with `seq < before_seq` (all when
    /// `None`) that `uid` may read, ascending; see [`Store::history_page`].
    pub async fn history(
        &self,
        uid: &str,
        conversation_id: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self
            .history_page(uid, conversation_id, before_seq, limit, &mut |_| true)
            .await?
            .messages)
    }

    /// Returns the newest messages of `conversation_id` with `seq < before_seq` (all when
    /// `None`) that `uid` may read, at most `limit` (capped at [`MAX_PAGE`]) and as many as
    /// `admit` lets in, in ascending `seq` order.
    ///
    /// `admit` is asked about each message from the newest down and ends the page when it says
    /// no: the caller's byte budget, so that one page fits one reply frame. Rows are streamed
    /// from the database and the first one that does not fit stops the read, so a page never
    /// holds more in memory than its budget (plus that one message). Pages backwards through
    /// history: pass the first `seq` of a page as `before_seq` to get the page before it;
    /// `more` says older readable messages exist. Only members may read
    /// ([`StoreError::NotMember`]), and in a group with `joined` history only what was stored
    /// after they joined.
    pub async fn history_page(
        &self,
        uid: &str,
        conversation_id: &str,
        before_seq: Option<i64>,
        limit: u32,
        admit: &mut Admit<'_>,
    ) -> Result<HistoryPage, StoreError> {
        check_ident("uid", uid)?;
        if let Some(before) = before_seq {
            check_seq("before_seq", before)?;
        }
        let Some(floor) = self.floor(conversation_id, uid).await? else {
            return Err(StoreError::NotMember {
                uid: uid.to_owned(),
                conversation: conversation_id.to_owned(),
            });
        };
        let before = before_seq.unwrap_or(i64::MAX);
        let limit = limit.min(MAX_PAGE) as usize;
        let mut messages: Vec<StoredMessage> = Vec::new();
        let mut more = false;
        with_pool!(self, reader, |pool, dialect| {
            let mut rows = sqlx::query_as::<_, MessageRow>(dialect.sql(sql::VISIBLE_BEFORE))
                .bind(conversation_id)
                .bind(uid)
                .bind(before)
                .bind(floor)
                .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
                .fetch(pool);
            while let Some(row) = rows.try_next().await? {
                let message = row.into_stored();
                if messages.len() == limit || !admit(&message) {
                    more = true;
                    break;
                }
                messages.push(message);
            }
        });
        messages.reverse();
        Ok(HistoryPage { messages, more })
    }

    /// Returns the seq at and below which `uid` may not read `conversation_id`, or `None` when
    /// it is not a member.
    async fn floor(&self, conversation_id: &str, uid: &str) -> Result<Option<i64>, StoreError> {
        Ok(with_pool!(self, reader, |pool, dialect| {
            sqlx::query_scalar(dialect.sql(sql::FLOOR))
                .bind(conversation_id)
                .bind(uid)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Returns the messages `uid` missed, at most `limit`; see [`Store::sync_within`].
    pub async fn sync(&self, uid: &str, cursors: &HashMap<String, i64>, limit: u32) -> Result<SyncPage, StoreError> {
        self.sync_within(uid, cursors, limit, &mut |_| true).await
    }

    /// Returns the messages `uid` missed: for every conversation it is a member of, the
    /// messages it may read with `seq` above its cursor (0 when absent from `cursors`), at most
    /// `limit` in total (capped at [`MAX_PAGE`]) and as many as `admit` lets in.
    ///
    /// Conversations come in id order and each one's messages in ascending `seq`, so a client
    /// advances `cursors[conversation]` to the last `seq` it received per conversation and
    /// calls again while `more` is set. `admit` is asked about each message in that order and
    /// ends the page when it says no (the caller's byte budget); rows are streamed, so the page
    /// holds no more than that in memory. Because `seq` order is commit order, a cursor never
    /// skips a message that commits later. Cursors of conversations the user does not belong
    /// to are ignored; messages of a `joined`-history group from before the user joined are
    /// never returned.
    pub async fn sync_within(
        &self,
        uid: &str,
        cursors: &HashMap<String, i64>,
        limit: u32,
        admit: &mut Admit<'_>,
    ) -> Result<SyncPage, StoreError> {
        check_ident("uid", uid)?;
        for (conversation, &cursor) in cursors {
            check_seq(&format!("cursor of {conversation}"), cursor)?;
        }
        let limit = usize::try_from(limit.min(MAX_PAGE)).unwrap_or(usize::MAX);
        let conversations: Vec<CursorRow> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_as(dialect.sql(sql::CURSORS))
                .bind(uid)
                .fetch_all(pool)
                .await?
        });
        let mut messages: Vec<StoredMessage> = Vec::new();
        let mut more = false;
        for conversation in conversations {
            let cursor = cursors
                .get(&conversation.conversation_id)
                .copied()
                .unwrap_or(0)
                .max(conversation.floor);
            if conversation.last_seq <= cursor {
                continue;
            }
            let budget = limit - messages.len();
            if budget == 0 {
                more = true;
                break;
            }
            let (mut fetched, mut full) = (0, false);
            with_pool!(self, reader, |pool, dialect| {
                let mut rows = sqlx::query_as::<_, MessageRow>(dialect.sql(sql::VISIBLE_AFTER))
                    .bind(&conversation.conversation_id)
                    .bind(uid)
                    .bind(cursor)
                    .bind(i64::try_from(budget).unwrap_or(i64::MAX))
                    .fetch(pool);
                while let Some(row) = rows.try_next().await? {
                    fetched += 1;
                    let message = row.into_stored();
                    if !admit(&message) {
                        full = true;
                        break;
                    }
                    messages.push(message);
                }
            });
            if full {
                more = true;
                break;
            }
            let reached = messages
                .last()
                .filter(|m| m.conversation == conversation.conversation_id)
                .map_or(cursor, |m| m.seq);
            if fetched == budget && reached < conversation.last_seq {
                more = true;
            }
        }
        Ok(SyncPage { messages, more })
    }

    /// Returns up to `max` distinct contacts of `uid`: its direct peers first, then its fellow
    /// group members, in conversation id order (the users whose presence it may see).
    ///
    /// Reads at most `max` × [`CONTACT_SCAN_FACTOR`] membership rows, so the cost is bounded
    /// whatever the user belongs to; a user in many large groups sees the first contacts found.
    pub async fn contacts_of(&self, uid: &str, max: u32) -> Result<Vec<String>, StoreError> {
        check_ident("uid", uid)?;
        let max = max.clamp(1, MAX_PAGE) as usize;
        let scan = i64::try_from(max.saturating_mul(CONTACT_SCAN_FACTOR)).unwrap_or(i64::MAX);
        let mut seen = std::collections::HashSet::new();
        let mut contacts = Vec::new();
        with_pool!(self, reader, |pool, dialect| {
            let mut rows = sqlx::query_scalar::<_, String>(dialect.sql(sql::CONTACTS))
                .bind(uid)
                .bind(scan)
                .fetch(pool);
            while let Some(contact) = rows.try_next().await? {
                if seen.insert(contact.clone()) {
                    contacts.push(contact);
                    if contacts.len() == max {
                        break;
                    }
                }
            }
        });
        Ok(contacts)
    }

    /// Moves `uid`'s read marker in `conversation_id` forward to `seq` and returns the marker.
    ///
    /// Monotonic (an older `seq` from a slow device never moves it back) and capped at the
    /// conversation's `last_seq` (a marker in the future would hide later messages).
    pub async fn mark_read(&self, uid: &str, conversation_id: &str, seq: i64) -> Result<i64, StoreError> {
        check_ident("uid", uid)?;
        check_seq("seq", seq)?;
        let marker: Option<i64> = match &*self.inner {
            Backend::Sqlite(backend) => {
                sqlx::query_scalar(crate::sqlite::MARK_READ)
                    .bind(conversation_id)
                    .bind(uid)
                    .bind(seq)
                    .fetch_optional(backend.writer())
                    .await?
            }
            Backend::Postgres(backend) => {
                sqlx::query_scalar(crate::postgres::MARK_READ)
                    .bind(conversation_id)
                    .bind(uid)
                    .bind(seq)
                    .fetch_optional(backend.writer())
                    .await?
            }
            Backend::MySql(backend) => backend.mark_read(conversation_id, uid, seq).await?,
        };
        marker.ok_or_else(|| StoreError::NotMember {
            uid: uid.to_owned(),
            conversation: conversation_id.to_owned(),
        })
    }
}

/// Returns `true` for errors after which the whole transaction may simply be run again.
pub(crate) fn is_transient(error: &StoreError) -> bool {
    // PostgreSQL: deadlock_detected, serialization_failure, and a unique violation of the
    // idempotency key, which an append meets when a concurrent writer stored the same
    // `(sender, cid)` in another conversation (the next attempt finds that message and answers
    // this one with a conflict). Any other violation (a message row ahead of its conversation's counter) is a
    // broken database and fails at once. MariaDB: the same cases as SQLSTATE 40001 (deadlock)
    // and 23000 (duplicate key, which it names only in the message). SQLite's codes are
    // numeric and never match: its writes run under the database lock and cannot race.
    match error.database_code().as_deref() {
        Some("40P01" | "40001") => true,
        Some("23505") => error.database_constraint().as_deref() == Some(IDEMPOTENCY_KEY),
        Some("23000") => error
            .database_message()
            .is_some_and(|message| message.ends_with(MYSQL_IDEMPOTENCY_KEY)),
        _ => false,
    }
}

/// The name PostgreSQL gives the `UNIQUE (sender, cid)` constraint of `messages`.
const IDEMPOTENCY_KEY: &str = "messages_sender_cid_key";

/// How a MariaDB duplicate-key message ends when the key is `messages (sender, cid)`.
const MYSQL_IDEMPOTENCY_KEY: &str = "for key 'messages_sender_cid'";
