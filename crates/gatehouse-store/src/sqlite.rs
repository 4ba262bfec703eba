//! The SQLite backend: one file in WAL mode, one writer connection, a small read pool.
//!
//! SQLite admits one writer at a time, so the store keeps exactly one write connection and
//! starts every write transaction with `BEGIN IMMEDIATE`: the database write lock is taken
//! before the first read of the transaction, which serialises appends (also against other
//! processes on the same file, with `busy_timeout` as the wait) and makes a separate row lock
//! unnecessary. Multi-row statements take their rows as one JSON array parameter unpacked with
//! `json_each`, so the SQL text is static and one statement covers the whole batch.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::error::StoreError;
use crate::model::MessageRow;
use crate::plan::{BumpedRow, DirectConversation, InsertedRow, MemberRow, Plan};
use crate::store::Attempt;

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

const MEMBERSHIP: &str = "SELECT m.conversation_id, m.uid FROM json_each($1) AS k \
     JOIN members AS m ON m.conversation_id = k.value ->> 0 AND m.uid = k.value ->> 1";

/// Creates direct conversations that the bump found missing, with `last_seq` already covering
/// the batch's messages to them (the bump and the creation together hand out `1..=n`).
const CREATE_DIRECTS: &str = "INSERT INTO conversations \
     (id, kind, name, created_by, created_at_ms, last_seq) \
     SELECT k.value ->> 0, 'direct', NULL, k.value ->> 1, k.value ->> 2, k.value ->> 3 \
     FROM json_each($1) AS k WHERE true \
     ON CONFLICT (id) DO NOTHING RETURNING id, last_seq";

const ADD_MEMBERS: &str = "INSERT INTO members (conversation_id, uid, joined_at_ms, read_seq) \
     SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, 0 FROM json_each($1) AS k WHERE true \
     ON CONFLICT (conversation_id, uid) DO NOTHING";

const EXISTING: &str = "SELECT m.id, m.conversation_id, m.seq, m.sender, m.cid, m.text, m.ts_ms \
     FROM json_each($1) AS k \
     JOIN messages AS m ON m.sender = k.value ->> 0 AND m.cid = k.value ->> 1";

const BUMP: &str = "UPDATE conversations SET last_seq = last_seq + (k.value ->> 1) \
     FROM json_each($1) AS k WHERE conversations.id = k.value ->> 0 \
     RETURNING conversations.id AS id, conversations.last_seq AS last_seq";

/// The highest message id so far: the batch's rows get the next ids explicitly, so the insert
/// needs no `RETURNING` (which costs about a third of the insert on big batches).
const LAST_ID: &str = "SELECT coalesce(max(id), 0) FROM messages";

const INSERT: &str = "INSERT INTO messages (id, conversation_id, seq, sender, cid, text, ts_ms) \
     SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, k.value ->> 3, k.value ->> 4, \
     k.value ->> 5, k.value ->> 6 FROM json_each($1) AS k WHERE true \
     ON CONFLICT DO NOTHING";

const READ_MARKS: &str = "UPDATE members SET read_seq = max(read_seq, k.value ->> 2) \
     FROM json_each($1) AS k \
     WHERE members.conversation_id = k.value ->> 0 AND members.uid = k.value ->> 1";

/// Moves `$2`'s read marker in `$1` forward to `$3`, capped at the conversation's `last_seq`.
pub(crate) const MARK_READ: &str = "UPDATE members \
     SET read_seq = max(read_seq, min($3, (SELECT last_seq FROM conversations WHERE id = $1))) \
     WHERE conversation_id = $1 AND uid = $2 RETURNING read_seq";

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
            .synchronous(SqliteSynchronous::Normal)
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

    /// Runs one attempt of an append batch in one `BEGIN IMMEDIATE` transaction.
    pub(crate) async fn append_attempt(&self, plan: &mut Plan) -> Result<Attempt, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;

        // `BEGIN IMMEDIATE` holds the database write lock from here to the commit, so this one
        // look-up for stored duplicates is final and no row lock step is needed. It comes first
        // so that a resend neither needs membership nor creates a conversation.
        let keys = plan.dedupe_keys();
        if !keys.is_empty() {
            let rows: Vec<MessageRow> = sqlx::query_as(EXISTING)
                .bind(to_json(&keys)?)
                .fetch_all(&mut *tx)
                .await?;
            plan.apply_existing(rows);
        }

        let probes = plan.membership_probes();
        if !probes.is_empty() {
            let rows: Vec<MemberRow> = sqlx::query_as(MEMBERSHIP)
                .bind(to_json(&probes)?)
                .fetch_all(&mut *tx)
                .await?;
            plan.apply_membership(&rows);
        }

        let demand = plan.seq_demand();
        if !demand.is_empty() {
            let mut bumped: Vec<BumpedRow> = sqlx::query_as(BUMP).bind(to_json(&demand)?).fetch_all(&mut *tx).await?;
            // Only direct conversations can be missing (a group sender's membership was just
            // checked); they are created here, so an ongoing conversation costs no statement.
            if bumped.len() < demand.len() {
                let have: HashSet<&str> = bumped.iter().map(|b| b.id.as_str()).collect();
                let wanted: HashMap<&str, i64> = demand.iter().copied().collect();
                let missing: Vec<DirectConversation<'_>> = plan
                    .direct_conversations()
                    .into_iter()
                    .filter(|d| !have.contains(d.id))
                    .collect();
                if !missing.is_empty() {
                    let rows: Vec<(&str, &str, i64, i64)> = missing
                        .iter()
                        .map(|d| (d.id, d.created_by, d.ts_ms, wanted.get(d.id).copied().unwrap_or(0)))
                        .collect();
                    let created: Vec<BumpedRow> = sqlx::query_as(CREATE_DIRECTS)
                        .bind(to_json(&rows)?)
                        .fetch_all(&mut *tx)
                        .await?;
                    let mut members: Vec<(&str, &str, i64)> = Vec::with_capacity(missing.len() * 2);
                    for d in &missing {
                        members.push((d.id, d.a, d.ts_ms));
                        if d.b != d.a {
                            members.push((d.id, d.b, d.ts_ms));
                        }
                    }
                    sqlx::query(ADD_MEMBERS)
                        .bind(to_json(&members)?)
                        .execute(&mut *tx)
                        .await?;
                    bumped.extend(created);
                }
            }
            plan.assign_seqs(bumped)?;

            let last_id: i64 = sqlx::query_scalar(LAST_ID).fetch_one(&mut *tx).await?;
            let new_rows = plan.new_rows();
            let rows: Vec<(i64, &str, i64, &str, &str, &str, i64)> = new_rows
                .iter()
                .zip(last_id + 1..)
                .map(|(r, id)| (id, r.conversation, r.seq, r.sender, r.cid, r.text, r.ts_ms))
                .collect();
            let stored = sqlx::query(INSERT)
                .bind(to_json(&rows)?)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // Under the write lock nothing else inserts, so every row is stored; if one was not,
            // keeping the others would leave a hole in its conversation's sequence.
            if stored != rows.len() as u64 {
                tx.rollback().await?;
                return Ok(Attempt::Retry);
            }
            let inserted: Vec<InsertedRow> = rows
                .iter()
                .map(|r| InsertedRow {
                    conversation_id: r.1.to_owned(),
                    seq: r.2,
                    id: r.0,
                })
                .collect();
            if !plan.apply_inserted(inserted) {
                tx.rollback().await?;
                return Ok(Attempt::Retry);
            }

            let marks = plan.read_marks();
            sqlx::query(READ_MARKS).bind(to_json(&marks)?).execute(&mut *tx).await?;
        }

        tx.commit().await?;
        Ok(Attempt::Committed)
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Invariant(format!("cannot encode batch rows: {e}")))
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

    /// Every statement reaches table rows through an index: the only full scan allowed is of
    /// the batch itself (`json_each`, alias `k`).
    #[tokio::test]
    async fn every_statement_uses_an_index() {
        let backend = SqliteBackend::open("sqlite::memory:")
            .await
            .expect("open in-memory store");
        let own = [
            MEMBERSHIP,
            CREATE_DIRECTS,
            ADD_MEMBERS,
            EXISTING,
            BUMP,
            LAST_ID,
            INSERT,
            READ_MARKS,
            MARK_READ,
        ];
        let statements: Vec<&str> = own.into_iter().chain(sql::SHARED).collect();
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
