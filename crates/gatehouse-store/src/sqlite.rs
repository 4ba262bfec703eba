//! The SQLite backend: one file in WAL mode, one writer connection, a small read pool.
//!
//! SQLite admits one writer at a time, so the store keeps exactly one write connection and
//! starts every write transaction with `BEGIN IMMEDIATE`: the database write lock is taken
//! before the first read of the transaction, which serialises appends (also against other
//! processes on the same file, with `busy_timeout` as the wait) and makes a separate row lock
//! unnecessary. Multi-row statements take their rows as one JSON array parameter unpacked with
//! `json_each`, so the SQL text is static and one statement covers the whole batch.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::error::StoreError;
use crate::markers::{MarkerBatch, marker_statements};
use crate::model::MessageRow;
use crate::plan::{Attempt, BumpedRow, DirectConversation, InsertedRow, MemberRow, Plan};

/// How long a write waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache of the write connection, in KiB (SQLite's default is 2 MiB). One append batch
/// touches a few random pages per message in each of the message indexes and the
/// conversation and member rows; with the default cache a batch of hundreds spills dirty pages
/// mid-transaction and re-reads them from the OS. Memory is only taken as pages are used.
const WRITER_CACHE_KIB: u32 = 64 * 1024;
/// WAL pages written before a checkpoint copies them into the database file (SQLite's
/// default is 1,000). Hot index pages are rewritten by every batch; checkpointing less often
/// copies each of them once for many batches, at the price of a longer WAL file.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;
/// Read connections: reads run concurrently with the writer in WAL mode.
const READ_CONNECTIONS: u32 = 4;

/// The read phase of an append: five statements sent as one command, so one round trip to
/// the database thread. Each returns exactly one row holding a JSON array, so no result
/// streams back row by row either. In order: the stored messages with one of the batch's
/// `(sender, cid)` keys (`$1`), the batch's `(group, sender)` memberships that exist (`$2`), the
/// `last_seq` of the batch's conversations that exist (`$3`), the `(recipient, sender)` blocks
/// among the batch's direct messages (`$4`), and the highest message id.
const READ: &str = "\
SELECT json_group_array(json_array(m.id, m.conversation_id, m.seq, m.sender, m.cid, m.text, m.ts_ms, m.reply_to)) \
FROM json_each($1) AS k JOIN messages AS m ON m.sender = k.value ->> 0 AND m.cid = k.value ->> 1;
SELECT json_group_array(json_array(m.conversation_id, m.uid)) \
FROM json_each($2) AS k JOIN members AS m ON m.conversation_id = k.value ->> 0 AND m.uid = k.value ->> 1;
SELECT json_group_array(json_array(c.id, c.last_seq)) \
FROM json_each($3) AS k JOIN conversations AS c ON c.id = k.value;
SELECT json_group_array(json_array(b.blocker, b.blocked)) \
FROM json_each($4) AS k JOIN blocks AS b ON b.blocker = k.value ->> 0 AND b.blocked = k.value ->> 1;
SELECT json_array(coalesce(max(id), 0)) FROM messages";

/// The write phase of an append: five statements sent as one command. In order: the new
/// direct conversations with `last_seq` already covering their messages (`$1`), their members
/// (`$2`), the counter bumps of existing conversations (`$3`), the messages with their ids and
/// sequence numbers (`$4`), and the senders' read markers (`$5`). Every value was decided from
/// the read phase under the same write lock, so no statement can meet a conflict; one that did
/// would fail the command and roll the batch back, never store part of it.
const WRITE: &str = "\
INSERT INTO conversations (id, kind, name, created_by, created_at_ms, last_seq) \
SELECT k.value ->> 0, 'direct', NULL, k.value ->> 1, k.value ->> 2, k.value ->> 3 FROM json_each($1) AS k;
INSERT INTO members (conversation_id, uid, joined_at_ms, read_seq) \
SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, 0 FROM json_each($2) AS k;
UPDATE conversations SET last_seq = last_seq + (k.value ->> 1) \
FROM json_each($3) AS k WHERE conversations.id = k.value ->> 0;
INSERT INTO messages (id, conversation_id, seq, sender, cid, text, ts_ms, reply_to) \
SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, k.value ->> 3, k.value ->> 4, k.value ->> 5, k.value ->> 6, \
k.value ->> 7 \
FROM json_each($4) AS k;
UPDATE members SET read_seq = max(read_seq, k.value ->> 2) FROM json_each($5) AS k \
WHERE members.conversation_id = k.value ->> 0 AND members.uid = k.value ->> 1";

/// The read and delivered markers, with the conversation's `last_seq`, of the members named by
/// the JSON array `$1` of `[conversation, uid]` pairs (a receipt batch).
pub(crate) const MARKERS: &str = "SELECT m.conversation_id, m.uid, m.read_seq, m.delivered_seq, c.last_seq \
     FROM json_each($1) AS k JOIN members AS m ON m.conversation_id = k.value ->> 0 AND m.uid = k.value ->> 1 \
     JOIN conversations AS c ON c.id = m.conversation_id";

/// Moves the markers of the JSON array `$1` of `[conversation, uid, read, delivered]` forward
/// (never back: another writer may have moved them further meanwhile).
pub(crate) const SET_MARKERS: &str = "UPDATE members SET read_seq = max(read_seq, k.value ->> 2), \
     delivered_seq = max(delivered_seq, k.value ->> 3) FROM json_each($1) AS k \
     WHERE members.conversation_id = k.value ->> 0 AND members.uid = k.value ->> 1";

/// Moves `$2`'s read marker in `$1` forward to `$3`, capped at the conversation's `last_seq`.
pub(crate) const MARK_READ: &str = "UPDATE members \
     SET read_seq = max(read_seq, min($3, (SELECT last_seq FROM conversations WHERE id = $1))) \
     WHERE conversation_id = $1 AND uid = $2 RETURNING read_seq";

/// Begins every transaction that writes: the database write lock is taken at once, so no
/// statement of the transaction can fail because another connection wrote since it read.
pub(crate) const BEGIN: &str = "BEGIN IMMEDIATE";

/// The conversation read of a membership change. On SQLite every write goes through the one
/// writer connection, so a membership change is already ordered with every append; the read
/// only keeps the backends' code alike (PostgreSQL and MariaDB take the row lock here).
pub(crate) const LOCK_CONVERSATION: &str = "SELECT id FROM conversations WHERE id = $1";

/// Returns user `$1` if it exists. The write lock every write transaction takes already orders
/// per-user counts with every other write, so no row lock is needed.
pub(crate) const LOCK_USER: &str = "SELECT uid FROM users WHERE uid = $1";

/// The SQLite pools.
#[derive(Debug)]
pub(crate) struct SqliteBackend {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteBackend {
    /// Opens (creating if missing) the database named by `url` and applies the migrations.
    ///
    /// `url` is `sqlite://path`, `sqlite:path`, or a plain file path; `sqlite::memory:` gives a
    /// private in-memory database served by a single connection (for tests of other crates).
    pub(crate) async fn open(url: &str) -> Result<SqliteBackend, StoreError> {
        let in_memory = url == ":memory:"
            || url.starts_with("sqlite::memory:")
            || (url.starts_with("sqlite:") && url.contains("mode=memory"));
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)?
        } else if url == ":memory:" {
            SqliteConnectOptions::from_str("sqlite::memory:")?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: every commit is fsynced to the WAL before it returns, so an acknowledged
            // message survives a power loss. NORMAL syncs only at checkpoints: a crash can lose
            // the last commits, and their seqs would be handed out again to other messages,
            // which clients that already hold the old ones drop as repeats. With group commit
            // the fsync is shared by a whole batch (see docs/architecture.md, "Durability").
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let writer_options = options
            .clone()
            .pragma("cache_size", format!("-{}", WRITER_CACHE_KIB))
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            // Statement journals (a multi-row upsert that may abort half-way keeps one) in
            // memory instead of a temporary file written page by page.
            .pragma("temp_store", "memory");
        // One connection: SQLite has one writer anyway, and an in-memory database lives only as
        // long as a connection to it, so that connection is never recycled.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(READ_CONNECTIONS)
                .connect_with(options)
                .await?
        };
        Ok(SqliteBackend { writer, reader })
    }

    /// Returns the pool for queries that only read.
    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Returns the single-connection pool every write goes through.
    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub(crate) async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Runs one attempt of an append batch in one `BEGIN IMMEDIATE` transaction: four round
    /// trips to the database thread (begin, read, write, commit) whatever the batch holds.
    ///
    /// `BEGIN IMMEDIATE` holds the database write lock from the start to the commit, so what
    /// the read phase finds (stored duplicates, memberships, counters, blocks, the last id)
    /// stays true until the write phase, and no row lock step is needed.
    ///
    /// `markers` are moved in the same transaction, after the messages: one commit, so one
    /// fsync of the WAL, for the whole round of the group committer.
    pub(crate) async fn append_attempt(
        &self,
        plan: &mut Plan,
        markers: Option<&mut MarkerBatch<'_>>,
    ) -> Result<Attempt, StoreError> {
        let mut tx = self.writer.begin_with(BEGIN).await?;
        let found = read_phase(&mut tx, plan).await?;
        if !plan.seq_demand().is_empty() {
            let counters = counter_writes(plan, &found.counters)?;
            plan.assign_seqs(&counters.bumped)?;
            let messages = message_rows(plan, found.last_id)?;
            write_phase(&mut tx, plan, counters, messages).await?;
        }
        if let Some(batch) = markers.filter(|batch| !batch.is_empty()) {
            marker_statements!(&mut *tx, batch, MARKERS, SET_MARKERS, crate::sql::AUTHOR_AT);
        }
        tx.commit().await?;
        Ok(Attempt::Committed)
    }
}

/// What the read phase leaves for the write phase once the plan has taken in duplicates,
/// memberships and blocks.
struct Found {
    /// `last_seq` of the batch's conversations that exist.
    counters: HashMap<String, i64>,
    /// The highest message id: the batch's rows take the ids after it (the write lock is held).
    last_id: i64,
}

/// The conversation rows the write phase changes, as the JSON parameters of [`WRITE`].
struct CounterWrites {
    /// Every conversation's `last_seq` after the batch, for [`Plan::assign_seqs`].
    bumped: Vec<BumpedRow>,
    /// New direct conversations `(id, created_by, ts_ms, last_seq)`.
    created: String,
    /// Their members `(conversation, uid, ts_ms)`.
    new_members: String,
    /// Counter bumps `(conversation, n)` of existing conversations.
    bumps: String,
    /// Rows the three statements above affect.
    rows: usize,
}

/// The message rows of the write phase, as the JSON parameter of [`WRITE`].
struct MessageRows {
    json: String,
    count: usize,
}

/// Step 1: runs [`READ`] and applies what it found to the plan. Duplicates first, so that a
/// resend neither needs membership nor creates a conversation.
async fn read_phase(tx: &mut sqlx::SqliteConnection, plan: &mut Plan) -> Result<Found, StoreError> {
    let read: Vec<(String,)> = sqlx::query_as(READ)
        .bind(to_json(&plan.dedupe_keys())?)
        .bind(to_json(&plan.membership_probes())?)
        .bind(to_json(&plan.conversations())?)
        .bind(to_json(&plan.block_probes())?)
        .fetch_all(&mut *tx)
        .await?;
    let [(existing,), (members,), (counters,), (blocks,), (last_id,)]: [(String,); 5] = read
        .try_into()
        .map_err(|rows: Vec<_>| StoreError::Invariant(format!("read phase returned {} rows, not 5", rows.len())))?;
    let existing: Vec<crate::model::ExistingRow> = from_json(&existing)?;
    plan.apply_existing(
        existing
            .into_iter()
            .map(|(id, conversation_id, seq, sender, cid, text, ts_ms, reply_to)| {
                MessageRow::plain(id, conversation_id, seq, sender, cid, text, ts_ms, reply_to)
            })
            .collect(),
    );
    let members: Vec<MemberRow> = from_json::<Vec<(String, String)>>(&members)?
        .into_iter()
        .map(|(conversation_id, uid)| MemberRow { conversation_id, uid })
        .collect();
    plan.apply_membership(&members);
    plan.apply_blocks(&from_json::<Vec<(String, String)>>(&blocks)?);
    let counters = from_json::<Vec<(String, i64)>>(&counters)?.into_iter().collect();
    let (last_id,): (i64,) = from_json(&last_id)?;
    Ok(Found { counters, last_id })
}

/// Step 2: existing conversations are bumped; missing direct ones are created with the counter
/// already covering their messages. A missing group cannot occur (its sender's membership was
/// just found) and fails [`Plan::assign_seqs`].
fn counter_writes(plan: &Plan, counters: &HashMap<String, i64>) -> Result<CounterWrites, StoreError> {
    let directs: HashMap<&str, DirectConversation<'_>> =
        plan.direct_conversations().into_iter().map(|d| (d.id, d)).collect();
    let demand = plan.seq_demand();
    let mut bumped = Vec::with_capacity(demand.len());
    let mut bumps: Vec<(&str, i64)> = Vec::with_capacity(demand.len());
    let mut created: Vec<(&str, &str, i64, i64)> = Vec::new();
    let mut new_members: Vec<(&str, &str, i64)> = Vec::new();
    for &(id, n) in &demand {
        if let Some(&last) = counters.get(id) {
            bumps.push((id, n));
            bumped.push(BumpedRow {
                id: id.to_owned(),
                last_seq: last + n,
            });
        } else if let Some(d) = directs.get(id) {
            created.push((d.id, d.created_by, d.ts_ms, n));
            new_members.push((d.id, d.a, d.ts_ms));
            if d.b != d.a {
                new_members.push((d.id, d.b, d.ts_ms));
            }
            bumped.push(BumpedRow {
                id: id.to_owned(),
                last_seq: n,
            });
        }
    }
    Ok(CounterWrites {
        rows: created.len() + new_members.len() + bumps.len(),
        bumped,
        created: to_json(&created)?,
        new_members: to_json(&new_members)?,
        bumps: to_json(&bumps)?,
    })
}

/// Step 3: the rows of the messages that received a sequence number, with the ids after
/// `last_id`; the plan learns those ids at once (the insert stores every row or fails).
fn message_rows(plan: &mut Plan, last_id: i64) -> Result<MessageRows, StoreError> {
    type Row<'a> = (i64, &'a str, i64, &'a str, &'a str, &'a str, i64, Option<i64>);
    let rows: Vec<Row<'_>> = plan
        .new_rows()
        .iter()
        .zip(last_id + 1..)
        .map(|(r, id)| (id, r.conversation, r.seq, r.sender, r.cid, r.text, r.ts_ms, r.reply_to))
        .collect();
    let inserted: Vec<InsertedRow> = rows
        .iter()
        .map(|r| InsertedRow {
            conversation_id: r.1.to_owned(),
            seq: r.2,
            id: r.0,
        })
        .collect();
    let (json, count) = (to_json(&rows)?, rows.len());
    if !plan.apply_inserted(inserted) {
        return Err(StoreError::Invariant("a planned message row got no id".to_owned()));
    }
    Ok(MessageRows { json, count })
}

/// Step 4: runs [`WRITE`] with the senders' read markers and checks that it wrote every
/// planned row; on an error the caller drops the transaction, which rolls the whole batch back.
async fn write_phase(
    tx: &mut sqlx::SqliteConnection,
    plan: &Plan,
    counters: CounterWrites,
    messages: MessageRows,
) -> Result<(), StoreError> {
    let marks = plan.read_marks();
    let expected = counters.rows + messages.count + marks.len();
    let changed = sqlx::query(WRITE)
        .bind(counters.created)
        .bind(counters.new_members)
        .bind(counters.bumps)
        .bind(messages.json)
        .bind(to_json(&marks)?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if changed != expected as u64 {
        return Err(StoreError::Invariant(format!(
            "append wrote {changed} rows where {expected} were planned"
        )));
    }
    Ok(())
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Invariant(format!("cannot encode batch rows: {e}")))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Invariant(format!("cannot decode a read-phase result: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql;

    /// Returns the query plan lines of `statement` (parameters left NULL).
    async fn plan_of(pool: &SqlitePool, statement: &str) -> Vec<String> {
        let params = (1..=9).filter(|n| statement.contains(&format!("${n}"))).count();
        let explain = format!("EXPLAIN QUERY PLAN {statement}");
        let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(explain));
        for _ in 0..params {
            query = query.bind(None::<String>);
        }
        query
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("explain {statement}: {e}"))
            .into_iter()
            .map(|row| row.3)
            .collect()
    }

    /// An acknowledged append survives a power loss: the connection that writes runs in WAL mode
    /// with `synchronous=FULL` (2), which fsyncs the WAL at every commit.
    #[tokio::test]
    async fn the_writer_syncs_every_commit_to_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("durable.db").display());
        let backend = SqliteBackend::open(&url).await.expect("open");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(backend.writer())
            .await
            .expect("pragma");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(backend.writer())
            .await
            .expect("pragma");
        assert_eq!((synchronous, journal.as_str()), (2, "wal"));
        backend.close().await;
    }

    /// Every statement (each statement of the multi-statement commands on its own) reaches
    /// table rows through an index: the only full scan allowed is of the batch itself
    /// (`json_each`, alias `k`).
    #[tokio::test]
    async fn every_statement_uses_an_index() {
        let backend = SqliteBackend::open("sqlite::memory:")
            .await
            .expect("open in-memory store");
        let commands = [READ, WRITE].into_iter().flat_map(|command| command.split(';'));
        let statements: Vec<&str> = commands
            .chain([MARK_READ, LOCK_CONVERSATION, LOCK_USER, MARKERS, SET_MARKERS])
            .chain(sql::SHARED.iter().copied())
            .chain(sql::EVENTS.iter().copied())
            .chain([sql::ACTIVITY])
            .collect();
        assert_eq!(
            statements.len(),
            5 + 5 + 5 + sql::SHARED.len() + sql::EVENTS.len() + 1,
            "one entry per statement"
        );
        for statement in statements {
            let lines = plan_of(backend.reader(), statement).await;
            for line in &lines {
                assert!(
                    !line.starts_with("SCAN") || line.starts_with("SCAN k VIRTUAL TABLE"),
                    "full scan in {statement:?}: {lines:?}"
                );
            }
        }
    }
}
