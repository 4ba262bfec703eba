//! The PostgreSQL backend: one pool, arrays bound as parameters and unpacked with `UNNEST`.
//!
//! Several worker processes may append to the same database at once. Every append transaction
//! first takes the row locks of the conversations it writes to, sorted by id (`FOR NO KEY
//! UPDATE`), reading their `last_seq` on the way, and only then looks for stored duplicates.
//! Two writers of one conversation therefore run one after the other: the second sees the
//! first's committed messages (so a resend is found, not re-inserted) and continues its sequence
//! (so sequence order is commit order). Sorted lock order rules out deadlocks between batches
//! that share conversations. The one race the locks cannot cover, the same `(sender, cid)` sent
//! to two different conversations at once, makes the insert fail on the `(sender, cid)` key; the
//! attempt is rolled back and planned again, and the second attempt finds the other writer's
//! message (a conflict: the same key for another conversation), so no sequence number is ever
//! left unused.
//!
//! A batch costs five round trips in the steady state (begin, lock, one read for duplicates,
//! group memberships and blocks, one statement for every write, commit); new direct
//! conversations add two (create them, add their members).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::StoreError;
use crate::model::MessageRow;
use crate::plan::{Attempt, BumpedRow, DirectConversation, InsertedRow, MemberRow, Plan};

/// Connections per store (per worker process): writes are batched, reads are short.
const MAX_CONNECTIONS: u32 = 8;
/// How long an operation waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The read phase of an append, after the locks: one row of three JSON arrays. The stored
/// messages with one of the batch's `(sender, cid)` keys (`$1`, `$2`), the batch's
/// `(group, sender)` memberships that exist (`$3`, `$4`), and the `(recipient, sender)` blocks
/// among its direct messages (`$5`, `$6`). One statement instead of three: each round trip
/// waits for a core on a busy machine.
const READ: &str = "SELECT \
     (SELECT coalesce(json_agg(json_build_array(m.id, m.conversation_id, m.seq, m.sender, m.cid, m.text, m.ts_ms, m.reply_to)), '[]') \
      FROM UNNEST($1::text[], $2::text[]) AS k (sender, cid) \
      JOIN messages AS m ON m.sender = k.sender AND m.cid = k.cid)::text, \
     (SELECT coalesce(json_agg(json_build_array(m.conversation_id, m.uid)), '[]') \
      FROM UNNEST($3::text[], $4::text[]) AS k (conversation_id, uid) \
      JOIN members AS m ON m.conversation_id = k.conversation_id AND m.uid = k.uid)::text, \
     (SELECT coalesce(json_agg(json_build_array(b.blocker, b.blocked)), '[]') \
      FROM UNNEST($5::text[], $6::text[]) AS k (blocker, blocked) \
      JOIN blocks AS b ON b.blocker = k.blocker AND b.blocked = k.blocked)::text";

/// Creates the direct conversations that the lock found missing, in id order, at their new
/// `last_seq` (`$4`). A plain insert:
/// a concurrent writer that created one of them first makes it fail on the primary key
/// ([`CONVERSATION_KEY`]), and the attempt starts again (an `ON CONFLICT DO NOTHING` would
/// make every row pay a speculative insertion for a race that almost never happens).
const CREATE_DIRECTS: &str = "INSERT INTO conversations \
     (id, kind, name, created_by, created_at_ms, last_seq) \
     SELECT k.id, 'direct', NULL, k.created_by, k.ts_ms, k.last_seq \
     FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) AS k (id, created_by, ts_ms, last_seq) \
     ORDER BY k.id";

/// The name PostgreSQL gives the primary key of `conversations`.
const CONVERSATION_KEY: &str = "conversations_pkey";

/// Adds the members of the direct conversations [`CREATE_DIRECTS`] has just created, with
/// their read markers. A plain insert: nobody else can have added members to a conversation
/// this transaction created.
const ADD_MEMBERS: &str = "INSERT INTO members (conversation_id, uid, joined_at_ms, read_seq) \
     SELECT k.conversation_id, k.uid, k.ts_ms, k.read_seq \
     FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) AS k (conversation_id, uid, ts_ms, read_seq) \
     ORDER BY k.conversation_id, k.uid";

/// Locks the existing conversations among `$1` in id order and returns their counters, which
/// stay valid until the commit because nobody else can bump them meanwhile.
const LOCK: &str = "SELECT id, last_seq FROM conversations WHERE id = ANY($1::text[]) \
     ORDER BY id FOR NO KEY UPDATE";

/// Planner settings of every store connection. Every statement is written for, and tested to
/// get, index probes driven by the batch arrays; the same settings in production make it run
/// the tested plans. Without them a table whose statistics lag (one that grew fast since the
/// last `ANALYZE`) gets a hash join over a sequential scan of the whole message history, once
/// per batch. Set by statement rather than as startup options, which poolers may refuse.
const PLANNER: &str = "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan";

/// Every write of a batch in one statement: the counter bumps (`$1`, `$2`: of rows this
/// transaction has locked or created), the senders' read markers (`$3`..`$5`) and the messages
/// (`$6`..`$12`), which come back with their ids. A plain insert: any conflict fails the
/// statement, so a batch is stored whole or not at all.
const WRITE: &str = "WITH bump AS (\
     UPDATE conversations AS c SET last_seq = c.last_seq + k.n \
     FROM UNNEST($1::text[], $2::int8[]) AS k (id, n) WHERE c.id = k.id), \
     marks AS (\
     UPDATE members AS m SET read_seq = GREATEST(m.read_seq, k.seq) \
     FROM UNNEST($3::text[], $4::text[], $5::int8[]) AS k (conversation_id, uid, seq) \
     WHERE m.conversation_id = k.conversation_id AND m.uid = k.uid) \
     INSERT INTO messages (conversation_id, seq, sender, cid, text, ts_ms, reply_to) \
     SELECT * FROM UNNEST($6::text[], $7::int8[], $8::text[], $9::text[], $10::text[], $11::int8[], $12::int8[]) \
     RETURNING conversation_id, seq, id";

/// The read and delivered markers, with the conversation's `last_seq`, of the members named by
/// the JSON array `$1` of `[conversation, uid]` pairs (a receipt batch), locked in key order so
/// that two workers' batches never wait for each other in a circle. The pairs are unpacked into
/// arrays for `UNNEST` (whose size the planner estimates from the arrays, so that it looks the
/// members up by key rather than scanning them).
pub(crate) const MARKERS: &str = "SELECT m.conversation_id, m.uid, m.read_seq, m.delivered_seq, c.last_seq \
     FROM UNNEST(\
     ARRAY(SELECT e ->> 0 FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS j (e, n) ORDER BY n), \
     ARRAY(SELECT e ->> 1 FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS j (e, n) ORDER BY n)) \
     AS k (conversation_id, uid) \
     JOIN members AS m ON m.conversation_id = k.conversation_id AND m.uid = k.uid \
     JOIN conversations AS c ON c.id = m.conversation_id \
     ORDER BY m.conversation_id, m.uid FOR UPDATE OF m";

/// Moves the markers of the JSON array `$1` of `[conversation, uid, read, delivered]` forward.
pub(crate) const SET_MARKERS: &str = "UPDATE members AS m \
     SET read_seq = GREATEST(m.read_seq, k.read_seq), delivered_seq = GREATEST(m.delivered_seq, k.delivered_seq) \
     FROM UNNEST(\
     ARRAY(SELECT e ->> 0 FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS j (e, n) ORDER BY n), \
     ARRAY(SELECT e ->> 1 FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS j (e, n) ORDER BY n), \
     ARRAY(SELECT (e ->> 2)::int8 FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS j (e, n) ORDER BY n), \
     ARRAY(SELECT (e ->> 3)::int8 FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS j (e, n) ORDER BY n)) \
     AS k (conversation_id, uid, read_seq, delivered_seq) \
     WHERE m.conversation_id = k.conversation_id AND m.uid = k.uid";

/// Moves `$2`'s read marker in `$1` forward to `$3`, capped at the conversation's `last_seq`.
pub(crate) const MARK_READ: &str = "UPDATE members \
     SET read_seq = GREATEST(read_seq, LEAST($3, (SELECT last_seq FROM conversations WHERE id = $1))) \
     WHERE conversation_id = $1 AND uid = $2 RETURNING read_seq";

/// Takes the row lock of conversation `$1`, as an append does first: membership changes take
/// it too, so an append checks membership either before a change starts or after it committed.
pub(crate) const LOCK_CONVERSATION: &str = "SELECT id FROM conversations WHERE id = $1 FOR NO KEY UPDATE";

/// Returns user `$1` if it exists and takes its row lock: per-user caps (groups, invitations,
/// blocks) are counted under it, so two changes of one user never both pass a cap. Taken after
/// the conversation's lock, as every transaction does, so the two locks never form a cycle.
pub(crate) const LOCK_USER: &str = "SELECT uid FROM users WHERE uid = $1 FOR UPDATE";

/// Every append and membership change relies on `READ COMMITTED` (a statement that waited for a
/// row lock sees the row as committed by its holder), so it does not depend on the server's
/// default isolation level.
pub(crate) const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// The PostgreSQL pool.
#[derive(Debug)]
pub(crate) struct PgBackend {
    pool: PgPool,
    /// Kept to open further pools ([`PgBackend::for_this_runtime`]); boxed, being large.
    options: Box<PgConnectOptions>,
    /// The pools of the backends made from this one, closed with it: a store that is closed
    /// stops writing through every handle, including the group committer's.
    derived: Mutex<Vec<PgPool>>,
}

impl PgBackend {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and applies the migrations.
    ///
    /// URL parameters pass through to the driver, e.g. `?options[search_path]=tenant_a` to use
    /// another schema.
    pub(crate) async fn open(url: &str) -> Result<PgBackend, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = pool_options(MAX_CONNECTIONS).connect_with(options.clone()).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgBackend {
            pool,
            options: Box::new(options),
            derived: Mutex::default(),
        })
    }

    /// Returns a backend with a pool of its own, which opens its one connection on first use:
    /// on the runtime that uses it, which drives that connection's socket from then on. Closing
    /// this backend closes that pool too.
    pub(crate) fn for_this_runtime(&self) -> PgBackend {
        let pool = pool_options(1).connect_lazy_with((*self.options).clone());
        self.derived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pool.clone());
        PgBackend {
            pool,
            options: self.options.clone(),
            derived: Mutex::default(),
        }
    }

    /// Returns the pool for queries that only read.
    pub(crate) fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// Returns the pool for writes (the same pool: PostgreSQL has row-level write concurrency).
    pub(crate) fn writer(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool and those of the backends made from this one, waiting for connections
    /// in use to be returned.
    pub(crate) async fn close(&self) {
        let derived: Vec<PgPool> = self.derived.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for pool in derived {
            pool.close().await;
        }
        self.pool.close().await;
    }

    /// Runs one attempt of an append batch in one transaction: lock the batch's
    /// conversations in id order, read under the locks, hand out the sequence numbers, create
    /// the missing direct conversations, then bump, mark and insert in one statement.
    pub(crate) async fn append_attempt(&self, plan: &mut Plan) -> Result<Attempt, StoreError> {
        let mut tx = self.pool.begin_with(BEGIN).await?;
        let counters = lock_conversations(&mut tx, plan).await?;
        // Authoritative: the locks above make every earlier writer of these conversations
        // committed and visible. Duplicates are applied before membership and creation, so that
        // a resend needs neither.
        read_phase(&mut tx, plan).await?;
        let bumped = assign_seqs(plan, &counters)?;
        if !create_directs(&mut tx, plan, &counters, &bumped).await? {
            tx.rollback().await?;
            return Ok(Attempt::Retry);
        }
        write_messages(&mut tx, plan, &counters, &bumped).await?;
        tx.commit().await?;
        Ok(Attempt::Committed)
    }
}

type PgTransaction = sqlx::Transaction<'static, sqlx::Postgres>;

/// Step 1: locks the rows of the batch's existing conversations (sorted: the lock order) and
/// returns their `last_seq`.
async fn lock_conversations(tx: &mut PgTransaction, plan: &Plan) -> Result<HashMap<String, i64>, StoreError> {
    let mut counters: HashMap<String, i64> = HashMap::new();
    let ids = plan.conversations();
    if !ids.is_empty() {
        let locked: Vec<(String, i64)> = sqlx::query_as(LOCK).bind(ids).fetch_all(&mut **tx).await?;
        counters.extend(locked);
    }
    Ok(counters)
}

/// Step 3: hands out the sequence numbers. A direct conversation the locks did not find is
/// one the batch creates (step 4) and starts at 0; any other conversation missing from
/// `counters` vanished, which [`Plan::assign_seqs`] reports. Returns each written
/// conversation's new `last_seq`, sorted by id.
fn assign_seqs(plan: &mut Plan, counters: &HashMap<String, i64>) -> Result<Vec<BumpedRow>, StoreError> {
    let new_directs: HashSet<&str> = plan
        .direct_conversations()
        .into_iter()
        .map(|d| d.id)
        .filter(|id| !counters.contains_key(*id))
        .collect();
    let bumped: Vec<BumpedRow> = plan
        .seq_demand()
        .into_iter()
        .filter_map(|(id, n)| {
            let counter = match counters.get(id) {
                Some(counter) => *counter,
                None if new_directs.contains(id) => 0,
                None => return None,
            };
            Some(BumpedRow {
                id: id.to_owned(),
                last_seq: counter + n,
            })
        })
        .collect();
    plan.assign_seqs(&bumped)?;
    Ok(bumped)
}

/// Step 4: creates the direct conversations the batch needs that do not exist yet, already
/// at their new `last_seq` and with their members' read markers where step 5 would move them
/// (the sender has read up to its own message): a row inserted with its final values costs
/// one row version, where an insert followed by an update costs two. Returns `false` when a
/// concurrent writer created one of them after the locks were taken (the insert fails on the
/// primary key, which aborts the transaction): it cannot be locked now without breaking the id
/// order of the locks (a deadlock with a third writer), so the attempt must start again and
/// will find it existing.
async fn create_directs(
    tx: &mut PgTransaction,
    plan: &Plan,
    counters: &HashMap<String, i64>,
    bumped: &[BumpedRow],
) -> Result<bool, StoreError> {
    let missing: Vec<DirectConversation<'_>> = plan
        .direct_conversations()
        .into_iter()
        .filter(|d| !counters.contains_key(d.id))
        .collect();
    if missing.is_empty() {
        return Ok(true);
    }
    let last_seq: HashMap<&str, i64> = bumped.iter().map(|row| (row.id.as_str(), row.last_seq)).collect();
    let created = sqlx::query(CREATE_DIRECTS)
        .bind(missing.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(missing.iter().map(|d| d.created_by).collect::<Vec<_>>())
        .bind(missing.iter().map(|d| d.ts_ms).collect::<Vec<_>>())
        .bind(
            missing
                .iter()
                .map(|d| last_seq.get(d.id).copied().unwrap_or(0))
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await;
    match created.map_err(StoreError::from) {
        Ok(_) => {}
        Err(error) if error.database_constraint().as_deref() == Some(CONVERSATION_KEY) => return Ok(false),
        Err(error) => return Err(error),
    }
    let marks: HashMap<(&str, &str), i64> = plan.read_marks().into_iter().map(|(c, u, seq)| ((c, u), seq)).collect();
    let (mut ids, mut uids, mut ts, mut read) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in &missing {
        let members = if d.a == d.b { 1 } else { 2 };
        for uid in [d.a, d.b].into_iter().take(members) {
            ids.push(d.id);
            uids.push(uid);
            ts.push(d.ts_ms);
            read.push(marks.get(&(d.id, uid)).copied().unwrap_or(0));
        }
    }
    sqlx::query(ADD_MEMBERS)
        .bind(ids)
        .bind(uids)
        .bind(ts)
        .bind(read)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// Step 5: bumps the counters of the conversations that existed, moves the senders' read
/// markers in them and inserts the messages, in one statement; the plan learns the new ids.
async fn write_messages(
    tx: &mut PgTransaction,
    plan: &mut Plan,
    counters: &HashMap<String, i64>,
    bumped: &[BumpedRow],
) -> Result<(), StoreError> {
    if bumped.is_empty() {
        return Ok(());
    }
    // Conversations created by step 4 already hold their final counter and markers; the
    // others grow by their new messages.
    let (bump_ids, bump_counts): (Vec<&str>, Vec<i64>) = bumped
        .iter()
        .filter_map(|row| Some((row.id.as_str(), row.last_seq - counters.get(&row.id)?)))
        .unzip();
    let marks: Vec<(&str, &str, i64)> = plan
        .read_marks()
        .into_iter()
        .filter(|(conversation, _, _)| counters.contains_key(*conversation))
        .collect();
    let rows = plan.new_rows();
    let inserted: Vec<InsertedRow> = sqlx::query_as(WRITE)
        .bind(bump_ids)
        .bind(bump_counts)
        .bind(marks.iter().map(|m| m.0).collect::<Vec<_>>())
        .bind(marks.iter().map(|m| m.1).collect::<Vec<_>>())
        .bind(marks.iter().map(|m| m.2).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.conversation).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.sender).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.cid).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.text).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ts_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.reply_to).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?;
    if !plan.apply_inserted(inserted) {
        return Err(StoreError::Invariant(
            "an inserted message came back without its id".to_owned(),
        ));
    }
    Ok(())
}

/// The options of every pool: `connections` at most, and the planner settings on each one.
fn pool_options(connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _| Box::pin(async move { sqlx::raw_sql(PLANNER).execute(conn).await.map(drop) }))
}

/// Step 2: runs the read phase ([`READ`]) and applies it to the plan: stored duplicates first,
/// then memberships and blocks of what is still pending.
async fn read_phase(tx: &mut PgTransaction, plan: &mut Plan) -> Result<(), StoreError> {
    let keys = plan.dedupe_keys();
    if keys.is_empty() {
        return Ok(());
    }
    let (senders, cids): (Vec<&str>, Vec<&str>) = keys.into_iter().unzip();
    let (member_conversations, member_uids): (Vec<&str>, Vec<&str>) = plan.membership_probes().into_iter().unzip();
    let (blockers, blocked): (Vec<&str>, Vec<&str>) = plan.block_probes().into_iter().unzip();
    let (existing, members, blocks): (String, String, String) = sqlx::query_as(READ)
        .bind(senders)
        .bind(cids)
        .bind(member_conversations)
        .bind(member_uids)
        .bind(blockers)
        .bind(blocked)
        .fetch_one(&mut **tx)
        .await?;
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
    Ok(())
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Invariant(format!("cannot decode a read-phase result: {e}")))
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, PgConnection};

    use super::*;
    use crate::sql;

    /// Returns `false` if a plan scans a table sequentially, or walks a whole index (an index
    /// scan node without an `Index Cond`), which `enable_seqscan = off` may choose instead.
    fn reaches_rows_by_index(plan: &[String]) -> bool {
        let mut open_index_scan = false;
        for line in plan {
            if line.contains("->") || !line.starts_with(' ') {
                if open_index_scan {
                    return false;
                }
                if line.contains("Seq Scan") {
                    return false;
                }
                open_index_scan = line.contains("Index Scan") || line.contains("Index Only Scan");
            } else if line.contains("Index Cond") {
                open_index_scan = false;
            }
        }
        !open_index_scan
    }

    /// Runs against the local server (`gatehouse_testkit::services`).
    mod needs_postgres {
        use super::*;

        /// Every statement reaches table rows through an index, checked on the generic plan with
        /// sequential scans disabled (PostgreSQL then still scans only where no index applies).
        /// Runs against `TEST_DATABASE_URL` (default: the local server of scripts/services).
        #[tokio::test]
        async fn every_statement_uses_an_index() {
            gatehouse_testkit::require(gatehouse_testkit::Service::Postgres);
            let base = std::env::var("TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            let schema = format!("t_plan_{}", std::process::id());
            let mut admin = PgConnection::connect(&base).await.expect("connect");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            )))
            .execute(&mut admin)
            .await
            .expect("create schema");
            let separator = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{separator}options[search_path]={schema}");
            let backend = PgBackend::open(&url).await.expect("open");
            // A connection of the store's own pool: the plans checked are those its settings give.
            let mut conn = backend.pool.acquire().await.expect("acquire");
            let setting: String = sqlx::query_scalar("SHOW enable_seqscan")
                .fetch_one(&mut *conn)
                .await
                .expect("show");
            assert_eq!(
                setting, "off",
                "store connections run with the planner settings the plans are tested with"
            );
            let own = [
                READ,
                CREATE_DIRECTS,
                ADD_MEMBERS,
                LOCK,
                WRITE,
                MARK_READ,
                LOCK_CONVERSATION,
                LOCK_USER,
                MARKERS,
                SET_MARKERS,
            ];
            let statements: Vec<&str> = own
                .into_iter()
                .chain(sql::SHARED.iter().copied())
                .chain(sql::EVENTS.iter().copied())
                .chain([sql::ACTIVITY])
                .collect();
            let mut failures = Vec::new();
            for (i, statement) in statements.iter().enumerate() {
                // The highest `$n` placeholder: every parameter up to it must be given.
                let params = statement
                    .split('$')
                    .skip(1)
                    .filter_map(|tail| tail.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok())
                    .max()
                    .unwrap_or(0);
                let nulls = vec!["NULL"; params].join(", ");
                let args = if params == 0 {
                    String::new()
                } else {
                    format!("({nulls})")
                };
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE s{i} AS {statement}")))
                    .execute(&mut *conn)
                    .await
                    .unwrap_or_else(|e| panic!("prepare {statement}: {e}"));
                let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN EXECUTE s{i}{args}")))
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap_or_else(|e| panic!("explain {statement}: {e}"));
                if !reaches_rows_by_index(&plan) {
                    failures.push(format!("{statement}\n{}", plan.join("\n")));
                }
            }
            drop(conn);
            backend.close().await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await
                .expect("drop schema");
            assert!(failures.is_empty(), "full scans:\n{}", failures.join("\n\n"));
        }
    }
}
