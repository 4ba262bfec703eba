//! The MariaDB backend (`mysql://` or `mariadb://` URLs): one pool, batch rows bound as one
//! JSON parameter and unpacked with `JSON_TABLE`.
//!
//! Several worker processes may append to the same database at once, under the same protocol as
//! on PostgreSQL. Every append transaction first takes the row locks (`FOR UPDATE`) of the
//! conversations it writes to, in id order (the batch array is sorted and drives the join, so
//! InnoDB locks the rows in that order), reading their `last_seq` on the way, and only then looks
//! for stored duplicates. Every connection runs `READ COMMITTED`, so a statement after the lock
//! sees what the previous holder committed: a resend is found, not re-inserted, and the sequence
//! continues where the previous writer stopped (sequence order is commit order). The one race
//! the locks cannot cover, the same `(sender, cid)` sent to two different conversations at once,
//! fails the insert on the `(sender, cid)` key; the attempt is rolled back and planned again
//! (see `store::is_transient`), so no sequence number is ever left unused.
//!
//! MariaDB 10.6 or later: `JSON_TABLE` for the batch arrays, `INSERT … RETURNING` for the new
//! message ids, and the `utf8mb4_nopad_bin` collation of the schema. Statements shared with the
//! other backends (`crate::sql`) are written with `$n` placeholders; [`statement`] gives their
//! MariaDB text.
//!
//! A batch costs seven round trips in the steady state (begin, lock, one read for duplicates,
//! memberships and blocks, the counter bumps, the read markers, the messages, commit); new
//! direct conversations add two (create them, add their members).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::error::StoreError;
use crate::model::MessageRow;
use crate::plan::{Attempt, BumpedRow, DirectConversation, InsertedRow, MemberRow, Plan};
use crate::sql;

/// Connections per store (per worker process): writes are batched, reads are short.
const MAX_CONNECTIONS: u32 = 8;
/// How long an operation waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of message rows bound in one insert statement: the JSON parameter must fit the
/// server's `max_allowed_packet` (16 MiB by default), whatever the batch holds.
const INSERT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Settings of every store connection. `READ COMMITTED`: a statement that follows a row lock
/// sees the row, and everything committed before, as its previous holder left it (InnoDB's
/// default, `REPEATABLE READ`, would read from the transaction's first snapshot).
const SESSION: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// Locks the existing conversations among the JSON array `?` (sorted by id) and returns their
/// counters, which stay valid until the commit because nobody else can bump them meanwhile.
/// `STRAIGHT_JOIN` keeps the array as the driving table: the rows are locked one by one through
/// the primary key in array order, never by a scan.
const LOCK: &str = "SELECT c.id, c.last_seq \
     FROM JSON_TABLE(?, '$[*]' COLUMNS (id VARCHAR(400) COLLATE utf8mb4_nopad_bin PATH '$')) AS k \
     STRAIGHT_JOIN conversations AS c ON c.id = k.id FOR UPDATE";

/// The read phase of an append, after the locks, as rows tagged by `part`: 0, the stored
/// messages with one of the batch's `(sender, cid)` keys; 1, the batch's `(group, sender)`
/// memberships that exist (`a` = conversation, `b` = uid); 2, the `(recipient, sender)` blocks
/// among its direct messages (`a` = blocker, `b` = blocked). One statement instead of three.
const READ: &str = "SELECT 0 AS part, m.id, m.conversation_id AS a, m.seq, m.sender AS b, m.cid, m.text, m.ts_ms, \
     m.reply_to \
     FROM JSON_TABLE(?, '$[*]' COLUMNS (sender VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[0]', \
     cid VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[1]')) AS k \
     STRAIGHT_JOIN messages AS m ON m.sender = k.sender AND m.cid = k.cid \
     UNION ALL SELECT 1, 0, m.conversation_id, 0, m.uid, '', '', 0, NULL \
     FROM JSON_TABLE(?, '$[*]' COLUMNS (conversation_id VARCHAR(400) COLLATE utf8mb4_nopad_bin PATH '$[0]', \
     uid VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[1]')) AS k \
     STRAIGHT_JOIN members AS m ON m.conversation_id = k.conversation_id AND m.uid = k.uid \
     UNION ALL SELECT 2, 0, b.blocker, 0, b.blocked, '', '', 0, NULL \
     FROM JSON_TABLE(?, '$[*]' COLUMNS (blocker VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[0]', \
     blocked VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[1]')) AS k \
     STRAIGHT_JOIN blocks AS b ON b.blocker = k.blocker AND b.blocked = k.blocked";

/// Creates the direct conversations that the lock found missing. `IGNORE` covers a concurrent
/// writer that created one of them first (the affected-row count then falls short).
const CREATE_DIRECTS: &str = "INSERT IGNORE INTO conversations \
     (id, kind, name, created_by, created_at_ms, last_seq) \
     SELECT k.id, 'direct', NULL, k.created_by, k.ts_ms, 0 \
     FROM JSON_TABLE(?, '$[*]' COLUMNS (id VARCHAR(400) COLLATE utf8mb4_nopad_bin PATH '$[0]', \
     created_by VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[1]', ts_ms BIGINT PATH '$[2]')) AS k";

/// Adds the two members of each direct conversation just created.
const ADD_MEMBERS: &str = "INSERT IGNORE INTO members (conversation_id, uid, joined_at_ms, read_seq) \
     SELECT k.conversation_id, k.uid, k.ts_ms, 0 \
     FROM JSON_TABLE(?, '$[*]' COLUMNS (conversation_id VARCHAR(400) COLLATE utf8mb4_nopad_bin PATH '$[0]', \
     uid VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[1]', ts_ms BIGINT PATH '$[2]')) AS k";

/// Bumps the counters of rows this transaction has locked or created by `n` each.
const BUMP: &str = "UPDATE JSON_TABLE(?, '$[*]' COLUMNS (id VARCHAR(400) COLLATE utf8mb4_nopad_bin PATH '$[0]', \
     n BIGINT PATH '$[1]')) AS k \
     STRAIGHT_JOIN conversations AS c ON c.id = k.id SET c.last_seq = c.last_seq + k.n";

/// Moves the senders' read markers forward to their newest message.
const MARKS: &str = "UPDATE JSON_TABLE(?, '$[*]' COLUMNS (conversation_id VARCHAR(400) COLLATE utf8mb4_nopad_bin PATH '$[0]', \
     uid VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[1]', seq BIGINT PATH '$[2]')) AS k \
     STRAIGHT_JOIN members AS m ON m.conversation_id = k.conversation_id AND m.uid = k.uid \
     SET m.read_seq = GREATEST(m.read_seq, k.seq)";

/// Inserts messages, which come back with their ids. A plain insert: any conflict fails the
/// statement, so a batch is stored whole or not at all.
const INSERT: &str = "INSERT INTO messages (conversation_id, seq, sender, cid, text, ts_ms, reply_to) \
     SELECT k.conversation_id, k.seq, k.sender, k.cid, k.text, k.ts_ms, k.reply_to \
     FROM JSON_TABLE(?, '$[*]' COLUMNS (conversation_id VARCHAR(400) COLLATE utf8mb4_nopad_bin PATH '$[0]', \
     seq BIGINT PATH '$[1]', sender VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[2]', \
     cid VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[3]', text LONGTEXT COLLATE utf8mb4_nopad_bin PATH '$[4]', \
     ts_ms BIGINT PATH '$[5]', reply_to BIGINT PATH '$[6]')) AS k \
     RETURNING conversation_id, seq, id";

/// Moves `?`'s read marker forward: to `?` (the seq asked for), capped at conversation `?`'s
/// `last_seq`, in conversation `?` (MariaDB has no `UPDATE … RETURNING`; [`READ_MARK`] follows).
const MARK_READ: &str = "UPDATE members \
     SET read_seq = GREATEST(read_seq, LEAST(?, (SELECT last_seq FROM conversations WHERE id = ?))) \
     WHERE conversation_id = ? AND uid = ?";

/// The read marker of member `?` of conversation `?`.
const READ_MARK: &str = "SELECT read_seq FROM members WHERE conversation_id = ? AND uid = ?";

/// The read and delivered markers, with the conversation's `last_seq`, of the members named by
/// the JSON array `?` of `[conversation, uid]` pairs (a receipt batch). Not locked: the write
/// only ever moves a marker forward.
pub(crate) const MARKERS: &str = "SELECT m.conversation_id, m.uid, m.read_seq, m.delivered_seq, c.last_seq \
     FROM JSON_TABLE(?, '$[*]' COLUMNS (conversation_id VARCHAR(400) COLLATE utf8mb4_nopad_bin PATH '$[0]', \
     uid VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[1]')) AS k \
     STRAIGHT_JOIN members AS m ON m.conversation_id = k.conversation_id AND m.uid = k.uid \
     STRAIGHT_JOIN conversations AS c ON c.id = m.conversation_id";

/// Moves the markers of the JSON array `?` of `[conversation, uid, read, delivered]` forward.
pub(crate) const SET_MARKERS: &str = "UPDATE JSON_TABLE(?, '$[*]' COLUMNS (\
     conversation_id VARCHAR(400) COLLATE utf8mb4_nopad_bin PATH '$[0]', \
     uid VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$[1]', read_seq BIGINT PATH '$[2]', \
     delivered_seq BIGINT PATH '$[3]')) AS k \
     STRAIGHT_JOIN members AS m ON m.conversation_id = k.conversation_id AND m.uid = k.uid \
     SET m.read_seq = GREATEST(m.read_seq, k.read_seq), m.delivered_seq = GREATEST(m.delivered_seq, k.delivered_seq)";

/// The last-seen times among the uids of the JSON array `?`.
pub(crate) const LAST_SEEN: &str = "SELECT u.uid, u.last_seen_ms \
     FROM JSON_TABLE(?, '$[*]' COLUMNS (uid VARCHAR(64) COLLATE utf8mb4_nopad_bin PATH '$')) AS k \
     STRAIGHT_JOIN users AS u ON u.uid = k.uid WHERE u.last_seen_ms IS NOT NULL";

/// Full-text matches of the boolean-mode query `?` (against the lower-cased, live-only
/// `search_text`) that member `?` may read, in conversation `?` unless it is empty, best first,
/// `?` of them from `?` on. The query is bound twice (score and filter), as is the conversation:
/// `AGAINST` takes only a constant.
pub(crate) const SEARCH: &str = "SELECT m.id, m.conversation_id, m.seq, m.sender, m.cid, m.text, m.ts_ms, \
     m.kind, m.target, m.reply_to, m.edited_ms, m.deleted, m.reactions, '' AS snippet, \
     MATCH (m.search_text) AGAINST (? IN BOOLEAN MODE) AS score \
     FROM messages AS m \
     JOIN members AS v ON v.conversation_id = m.conversation_id AND v.uid = ? \
     JOIN conversations AS c ON c.id = m.conversation_id \
     WHERE MATCH (m.search_text) AGAINST (? IN BOOLEAN MODE) \
     AND (? = '' OR m.conversation_id = ?) AND m.kind = 'message' AND m.deleted = 0 \
     AND m.seq > CASE WHEN c.history = 'joined' THEN v.joined_seq ELSE 0 END \
     ORDER BY score DESC, m.id DESC LIMIT ? OFFSET ?";

/// Takes the row lock of conversation `$1`, as an append does first: membership changes take
/// it too, so an append checks membership either before a change starts or after it committed.
pub(crate) const LOCK_CONVERSATION: &str = "SELECT id FROM conversations WHERE id = ? FOR UPDATE";

/// Returns user `$1` if it exists and takes its row lock: per-user caps are counted under it.
/// Taken after the conversation's lock, as every transaction does.
pub(crate) const LOCK_USER: &str = "SELECT uid FROM users WHERE uid = ? FOR UPDATE";

/// Begins a transaction; its isolation level is the session's (`READ COMMITTED`, see
/// [`SESSION`]): MariaDB takes `SET TRANSACTION` as a statement of its own, not in `BEGIN`.
pub(crate) const BEGIN: &str = "BEGIN";

/// The shared statements whose MariaDB text is not a mere placeholder change: one placeholder
/// per parameter, in parameter order, and no `ON CONFLICT`.
const OVERRIDES: &[(&str, &str)] = &[
    (
        sql::STANDING,
        "SELECT coalesce(c.owner, c.created_by) AS owner, c.access, c.history, c.name, c.last_seq, \
         (SELECT m.role FROM members AS m WHERE m.conversation_id = c.id AND m.uid = p.uid) AS role, \
         (SELECT count(*) FROM group_bans AS b WHERE b.conversation_id = c.id AND b.uid = p.uid) AS banned, \
         (SELECT count(*) FROM group_invites AS i WHERE i.conversation_id = c.id AND i.uid = p.uid) AS invited, \
         (SELECT count(*) FROM members AS n WHERE n.conversation_id = c.id) AS member_count \
         FROM (SELECT ? AS id, ? AS uid) AS p \
         JOIN conversations AS c ON c.id = p.id WHERE c.kind = 'group'",
    ),
    (
        sql::MEMBER_PAGE,
        "SELECT o.uid, o.role, coalesce(c.owner, c.created_by) AS owner \
         FROM members AS me JOIN conversations AS c ON c.id = me.conversation_id \
         JOIN members AS o ON o.conversation_id = me.conversation_id \
         WHERE me.conversation_id = ? AND me.uid = ? AND o.uid > ? \
         ORDER BY o.uid LIMIT ?",
    ),
    (
        sql::VISIBLE_AFTER,
        "SELECT m.id, m.conversation_id, m.seq, m.sender, m.cid, m.text, m.ts_ms, \
         m.kind, m.target, m.reply_to, m.edited_ms, m.deleted, m.reactions \
         FROM members AS v JOIN conversations AS c ON c.id = v.conversation_id \
         JOIN messages AS m ON m.conversation_id = v.conversation_id \
         WHERE v.conversation_id = ? AND v.uid = ? AND m.seq > ? \
         AND m.seq > CASE WHEN c.history = 'joined' THEN v.joined_seq ELSE 0 END \
         ORDER BY m.seq LIMIT ?",
    ),
    (
        sql::VISIBLE_BEFORE,
        "SELECT m.id, m.conversation_id, m.seq, m.sender, m.cid, m.text, m.ts_ms, \
         m.kind, m.target, m.reply_to, m.edited_ms, m.deleted, m.reactions \
         FROM members AS v JOIN conversations AS c ON c.id = v.conversation_id \
         JOIN messages AS m ON m.conversation_id = v.conversation_id \
         WHERE v.conversation_id = ? AND v.uid = ? AND m.seq < ? AND m.seq > ? \
         AND m.seq > CASE WHEN c.history = 'joined' THEN v.joined_seq ELSE 0 END \
         ORDER BY m.seq DESC LIMIT ?",
    ),
];

/// The MariaDB text of every statement in [`sql::SHARED`], built once.
static TRANSLATED: LazyLock<HashMap<&'static str, &'static str>> = LazyLock::new(|| {
    let overrides: HashMap<&str, &str> = OVERRIDES.iter().copied().collect();
    sql::SHARED
        .iter()
        .chain(sql::EVENTS)
        .chain([&sql::ACTIVITY])
        .map(|&shared| {
            let text = overrides
                .get(shared)
                .copied()
                .or_else(|| translate(shared).map(leak))
                .unwrap_or(shared);
            (shared, text)
        })
        .collect()
});

/// Statements translated on first use because they are missing from [`sql::SHARED`].
static LATE: LazyLock<RwLock<HashMap<&'static str, &'static str>>> = LazyLock::new(RwLock::default);

/// Returns the MariaDB text of a statement shared with the other backends (`$n` placeholders).
///
/// A statement that cannot be translated (a placeholder used twice or out of order, an
/// `ON CONFLICT` other than `DO NOTHING`) comes back as it is and fails at the server with a
/// syntax error, which the conformance suite reports; `OVERRIDES` is where its MariaDB text goes.
pub(crate) fn statement(shared: &'static str) -> &'static str {
    if let Some(&text) = TRANSLATED.get(shared) {
        return text;
    }
    if let Some(&text) = LATE.read().unwrap_or_else(PoisonError::into_inner).get(shared) {
        return text;
    }
    tracing::warn!(statement = shared, "a shared statement is missing from sql::SHARED");
    let text = translate(shared).map_or(shared, leak);
    LATE.write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(shared, text);
    text
}

/// Keeps a translated statement for the life of the process: one per statement of the binary.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// Translates `$n` placeholders to `?` when they appear once each in parameter order, and an
/// `INSERT INTO … ON CONFLICT (…) DO NOTHING` to `INSERT IGNORE INTO …`; `None` otherwise.
fn translate(shared: &str) -> Option<String> {
    let mut text = String::with_capacity(shared.len());
    let mut rest = shared;
    let mut expected = 1;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let digits: String = rest[at + 1..].chars().take_while(char::is_ascii_digit).collect();
        if digits.parse::<usize>().ok()? != expected {
            return None;
        }
        text.push('?');
        expected += 1;
        rest = &rest[at + 1 + digits.len()..];
    }
    text.push_str(rest);
    if let Some(at) = text.find(" ON CONFLICT ") {
        if !text.ends_with(" DO NOTHING") || !text.starts_with("INSERT INTO ") {
            return None;
        }
        text.truncate(at);
        text.replace_range(..="INSERT".len(), "INSERT IGNORE ");
    }
    Some(text)
}

/// The MariaDB pool.
#[derive(Debug)]
pub(crate) struct MySqlBackend {
    pool: MySqlPool,
    /// Kept to open further pools ([`MySqlBackend::for_this_runtime`]); boxed, being large.
    options: Box<MySqlConnectOptions>,
    /// The pools of the backends made from this one, closed with it.
    derived: Mutex<Vec<MySqlPool>>,
}

impl MySqlBackend {
    /// Connects to `url` (`mysql://user:password@host:port/database`, `mariadb://…` alike) and
    /// applies the migrations. URL parameters pass through to the driver (e.g.
    /// `?ssl-mode=verify_identity&ssl-ca=ca.pem`).
    pub(crate) async fn open(url: &str) -> Result<MySqlBackend, StoreError> {
        let options = MySqlConnectOptions::from_str(url)?;
        let pool = pool_options(MAX_CONNECTIONS).connect_with(options.clone()).await?;
        let version: String = sqlx::query_scalar("SELECT VERSION()").fetch_one(&pool).await?;
        if let Err(error) = check_server(&version) {
            pool.close().await;
            return Err(error);
        }
        sqlx::migrate!("./migrations/mysql").run(&pool).await?;
        Ok(MySqlBackend {
            pool,
            options: Box::new(options),
            derived: Mutex::default(),
        })
    }

    /// Returns a backend with a pool of its own, which opens its one connection on first use:
    /// on the runtime that uses it (see `Store::for_this_runtime`). Closing this backend closes
    /// that pool too.
    pub(crate) fn for_this_runtime(&self) -> MySqlBackend {
        let pool = pool_options(1).connect_lazy_with((*self.options).clone());
        self.derived
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pool.clone());
        MySqlBackend {
            pool,
            options: self.options.clone(),
            derived: Mutex::default(),
        }
    }

    /// Returns the pool for queries that only read.
    pub(crate) fn reader(&self) -> &MySqlPool {
        &self.pool
    }

    /// Returns the pool for writes (the same pool: InnoDB has row-level write concurrency).
    pub(crate) fn writer(&self) -> &MySqlPool {
        &self.pool
    }

    /// Closes the pool and those of the backends made from this one.
    pub(crate) async fn close(&self) {
        let derived: Vec<MySqlPool> = self.derived.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for pool in derived {
            pool.close().await;
        }
        self.pool.close().await;
    }

    /// Moves `uid`'s read marker in `conversation_id` forward to `seq` (capped at the
    /// conversation's `last_seq`) and returns it; `None` when `uid` is not a member.
    pub(crate) async fn mark_read(
        &self,
        conversation_id: &str,
        uid: &str,
        seq: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query(MARK_READ)
            .bind(seq)
            .bind(conversation_id)
            .bind(conversation_id)
            .bind(uid)
            .execute(&mut *conn)
            .await?;
        Ok(sqlx::query_scalar(READ_MARK)
            .bind(conversation_id)
            .bind(uid)
            .fetch_optional(&mut *conn)
            .await?)
    }

    /// Runs one attempt of an append batch in one transaction: lock the batch's
    /// conversations in id order, read under the locks, create the missing direct
    /// conversations, then bump, mark and insert.
    pub(crate) async fn append_attempt(&self, plan: &mut Plan) -> Result<Attempt, StoreError> {
        let mut tx = self.pool.begin_with(BEGIN).await?;
        let mut counters = lock_conversations(&mut tx, plan).await?;
        // Authoritative: the locks above make every earlier writer of these conversations
        // committed and visible. Duplicates first, so that a resend needs neither membership
        // nor a new conversation.
        read_phase(&mut tx, plan).await?;
        if !create_directs(&mut tx, plan, &mut counters).await? {
            tx.rollback().await?;
            return Ok(Attempt::Retry);
        }
        write_messages(&mut tx, plan, &counters).await?;
        tx.commit().await?;
        Ok(Attempt::Committed)
    }
}

type MySqlTransaction = sqlx::Transaction<'static, sqlx::MySql>;

/// Step 1: locks the rows of the batch's existing conversations (sorted: the lock order) and
/// returns their `last_seq`.
async fn lock_conversations(tx: &mut MySqlTransaction, plan: &Plan) -> Result<HashMap<String, i64>, StoreError> {
    let mut counters: HashMap<String, i64> = HashMap::new();
    let ids = plan.conversations();
    if !ids.is_empty() {
        let locked: Vec<(String, i64)> = sqlx::query_as(LOCK).bind(to_json(&ids)?).fetch_all(&mut **tx).await?;
        counters.extend(locked);
    }
    Ok(counters)
}

/// Step 3: creates the direct conversations the batch needs that do not exist yet, with their
/// members, and adds them to `counters` at 0. Returns `false` when a concurrent writer created
/// one of them after the locks were taken: it cannot be locked now without breaking the id
/// order of the locks, so the attempt must start again and will find it existing.
async fn create_directs(
    tx: &mut MySqlTransaction,
    plan: &Plan,
    counters: &mut HashMap<String, i64>,
) -> Result<bool, StoreError> {
    let missing: Vec<DirectConversation<'_>> = plan
        .direct_conversations()
        .into_iter()
        .filter(|d| !counters.contains_key(d.id))
        .collect();
    if missing.is_empty() {
        return Ok(true);
    }
    let rows: Vec<(&str, &str, i64)> = missing.iter().map(|d| (d.id, d.created_by, d.ts_ms)).collect();
    let created = sqlx::query(CREATE_DIRECTS)
        .bind(to_json(&rows)?)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if created < missing.len() as u64 {
        return Ok(false);
    }
    let mut members: Vec<(&str, &str, i64)> = Vec::with_capacity(missing.len() * 2);
    for d in &missing {
        members.push((d.id, d.a, d.ts_ms));
        if d.b != d.a {
            members.push((d.id, d.b, d.ts_ms));
        }
    }
    sqlx::query(ADD_MEMBERS)
        .bind(to_json(&members)?)
        .execute(&mut **tx)
        .await?;
    counters.extend(missing.iter().map(|d| (d.id.to_owned(), 0)));
    Ok(true)
}

/// Step 4: hands out the sequence numbers, bumps the counters, moves the senders' read
/// markers and inserts the messages (in chunks); the plan learns the new ids.
async fn write_messages(
    tx: &mut MySqlTransaction,
    plan: &mut Plan,
    counters: &HashMap<String, i64>,
) -> Result<(), StoreError> {
    let demand = plan.seq_demand();
    if demand.is_empty() {
        return Ok(());
    }
    // A conversation missing from `counters` vanished, which `assign_seqs` reports.
    let (bumped, bumps): (Vec<BumpedRow>, Vec<(&str, i64)>) = demand
        .iter()
        .filter_map(|&(id, n)| {
            let bumped = BumpedRow {
                id: id.to_owned(),
                last_seq: counters.get(id)? + n,
            };
            Some((bumped, (id, n)))
        })
        .unzip();
    let (bumps, expected) = (to_json(&bumps)?, bumps.len() as u64);
    plan.assign_seqs(&bumped)?;
    let changed = sqlx::query(BUMP).bind(bumps).execute(&mut **tx).await?.rows_affected();
    if changed != expected {
        return Err(StoreError::Invariant(format!(
            "bumped {changed} conversation counters where {expected} were locked"
        )));
    }
    sqlx::query(MARKS)
        .bind(to_json(&plan.read_marks())?)
        .execute(&mut **tx)
        .await?;
    let mut inserted: Vec<InsertedRow> = Vec::new();
    for chunk in insert_chunks(plan)? {
        let rows: Vec<InsertedRow> = sqlx::query_as(INSERT).bind(chunk).fetch_all(&mut **tx).await?;
        inserted.extend(rows);
    }
    if !plan.apply_inserted(inserted) {
        return Err(StoreError::Invariant(
            "an inserted message came back without its id".to_owned(),
        ));
    }
    Ok(())
}

/// Refuses a server the schema and the statements were not written for: MySQL (no
/// `INSERT … RETURNING`, other collation names), or MariaDB before 10.6 (no `JSON_TABLE`).
fn check_server(version: &str) -> Result<(), StoreError> {
    // Old clients see MariaDB 10+ as `5.5.5-10.x…` (a replication-era prefix).
    let bare = version.strip_prefix("5.5.5-").unwrap_or(version);
    let mut numbers = bare.split(['.', '-']).map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version.contains("MariaDB") && (major, minor) >= (10, 6) {
        return Ok(());
    }
    Err(StoreError::InvalidInput(format!(
        "database server {version:?} is not supported: a mysql:// store needs MariaDB 10.6 or later"
    )))
}

/// The options of every pool: `connections` at most, and the session settings on each one.
fn pool_options(connections: u32) -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _| Box::pin(async move { sqlx::raw_sql(SESSION).execute(conn).await.map(drop) }))
}

/// The plan's new message rows as JSON arrays of at most about [`INSERT_CHUNK_BYTES`] each (a
/// single row may exceed it: it goes alone).
fn insert_chunks(plan: &Plan) -> Result<Vec<String>, StoreError> {
    let mut chunks = Vec::new();
    let mut chunk = String::from("[");
    for row in plan.new_rows() {
        let encoded = to_json(&(
            row.conversation,
            row.seq,
            row.sender,
            row.cid,
            row.text,
            row.ts_ms,
            row.reply_to,
        ))?;
        if chunk.len() > 1 && chunk.len() + encoded.len() > INSERT_CHUNK_BYTES {
            chunk.push(']');
            chunks.push(std::mem::replace(&mut chunk, String::from("[")));
        }
        if chunk.len() > 1 {
            chunk.push(',');
        }
        chunk.push_str(&encoded);
    }
    if chunk.len() > 1 {
        chunk.push(']');
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// A row of [`READ`].
type ReadRow = (i32, i64, String, i64, String, String, String, i64, Option<i64>);

/// Step 2: runs the read phase ([`READ`]) and applies it to the plan: stored duplicates first,
/// then memberships and blocks of what is still pending.
async fn read_phase(tx: &mut MySqlTransaction, plan: &mut Plan) -> Result<(), StoreError> {
    let keys = plan.dedupe_keys();
    if keys.is_empty() {
        return Ok(());
    }
    let rows: Vec<ReadRow> = sqlx::query_as(READ)
        .bind(to_json(&keys)?)
        .bind(to_json(&plan.membership_probes())?)
        .bind(to_json(&plan.block_probes())?)
        .fetch_all(&mut **tx)
        .await?;
    let (mut existing, mut members, mut blocks) = (Vec::new(), Vec::new(), Vec::new());
    for (part, id, a, seq, b, cid, text, ts_ms, reply_to) in rows {
        match part {
            0 => existing.push(MessageRow::plain(id, a, seq, b, cid, text, ts_ms, reply_to)),
            1 => members.push(MemberRow {
                conversation_id: a,
                uid: b,
            }),
            _ => blocks.push((a, b)),
        }
    }
    plan.apply_existing(existing);
    plan.apply_membership(&members);
    plan.apply_blocks(&blocks);
    Ok(())
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Invariant(format!("cannot encode batch rows: {e}")))
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, MySqlConnection, Row};

    use super::*;

    /// Rows of every table, so that the optimizer weighs a scan against an index as it would on
    /// a real database (on empty tables every plan is trivially cheap).
    const FILL: &str = "\
INSERT INTO users (uid, first_seen_ms) SELECT concat('u', seq), 0 FROM seq_1_to_2000;
INSERT INTO conversations (id, kind, name, created_by, created_at_ms, last_seq, owner, access, history) \
SELECT concat('g:', seq), 'group', NULL, concat('u', seq), 0, 3, concat('u', seq), 'open', 'joined' FROM seq_1_to_2000;
INSERT INTO members (conversation_id, uid, joined_at_ms, read_seq) \
SELECT concat('g:', seq), concat('u', seq), 0, 0 FROM seq_1_to_2000;
INSERT INTO members (conversation_id, uid, joined_at_ms, read_seq) \
SELECT concat('g:', seq), concat('u', seq + 1), 0, 0 FROM seq_1_to_2000;
INSERT INTO messages (conversation_id, seq, sender, cid, text, ts_ms) \
SELECT concat('g:', s.seq), n.seq, concat('u', s.seq), concat('c', n.seq), 'x', 0 FROM seq_1_to_2000 AS s, seq_1_to_3 AS n;
INSERT INTO group_invites SELECT concat('g:', seq), concat('u', seq + 2), 'u1', 0 FROM seq_1_to_2000;
INSERT INTO group_bans SELECT concat('g:', seq), concat('u', seq + 3), 'u1', 0 FROM seq_1_to_2000;
INSERT INTO blocks SELECT concat('u', seq), concat('u', seq + 1), 0 FROM seq_1_to_2000;
ANALYZE TABLE users, conversations, members, messages, group_invites, group_bans, blocks";

    /// Explains `statement` with a plausible value for each placeholder and returns every
    /// `(table, access type)` of the plan that reads a whole table or index.
    async fn scans_of(conn: &mut MySqlConnection, statement: &str) -> Vec<String> {
        let text = statement.split(" RETURNING ").next().unwrap_or(statement);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {text}")));
        let mut rest = text;
        while let Some(at) = rest.find('?') {
            let before = &rest[..at];
            query = if before.ends_with("JSON_TABLE(") {
                query.bind(r#"[["g:1", "u1", 1, "c1", "x", 0]]"#)
            } else if before.ends_with("LIMIT ") || before.ends_with("OFFSET ") {
                query.bind(10_i64)
            } else {
                query.bind("g:1")
            };
            rest = &rest[at + 1..];
        }
        let rows = query
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("explain {text}: {e}"));
        rows.iter()
            .filter_map(|row| {
                let kind: Option<String> = row.try_get("select_type").ok()?;
                if kind.as_deref() == Some("INSERT") {
                    // The table an `INSERT … VALUES` writes to, which it does not read.
                    return None;
                }
                let table: Option<String> = row.try_get("table").ok()?;
                let access: Option<String> = row.try_get("type").ok()?;
                let (table, access) = (table.unwrap_or_default(), access.unwrap_or_default());
                // `k`: the batch itself; `<derivedN>`: a one-row parameter table.
                let own = table == "k" || table.starts_with("<derived");
                (!own && matches!(access.as_str(), "ALL" | "index")).then(|| format!("{table}: {access}"))
            })
            .collect()
    }

    /// Runs against the local server (`gatehouse_testkit::services`).
    mod needs_mariadb {
        use super::*;

        /// Every statement reaches table rows through an index, on tables with rows: no full table
        /// or index scan except of the batch (`JSON_TABLE`) and of a one-row parameter table. Runs
        /// against `TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/mysql`: a database of its
        /// own is created there and dropped).
        #[tokio::test]
        async fn every_statement_uses_an_index() {
            gatehouse_testkit::require(gatehouse_testkit::Service::Mariadb);
            let base =
                std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".to_owned());
            let database = format!("t_plan_{}", std::process::id());
            let mut admin = MySqlConnection::connect(&base).await.expect("connect");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {database}; CREATE DATABASE {database}"
            )))
            .execute(&mut admin)
            .await
            .expect("create database");
            let options = MySqlConnectOptions::from_str(&base).expect("url").database(&database);
            let url = base
                .rsplit_once('/')
                .map(|(server, _)| format!("{server}/{database}"))
                .expect("a url with a database");
            let backend = MySqlBackend::open(&url).await.expect("open");
            let mut conn = MySqlConnection::connect_with(&options).await.expect("connect");
            sqlx::raw_sql(FILL).execute(&mut conn).await.expect("fill");
            let own = [
                LOCK,
                READ,
                CREATE_DIRECTS,
                ADD_MEMBERS,
                BUMP,
                MARKS,
                INSERT,
                MARK_READ,
                READ_MARK,
                LOCK_CONVERSATION,
                LOCK_USER,
                LAST_SEEN,
                SEARCH,
                MARKERS,
                SET_MARKERS,
            ];
            let shared = sql::SHARED
                .iter()
                .chain(sql::EVENTS)
                .chain([&sql::ACTIVITY])
                .map(|&shared| statement(shared));
            let mut failures = Vec::new();
            for text in own.into_iter().chain(shared) {
                let scans = scans_of(&mut conn, text).await;
                if !scans.is_empty() {
                    failures.push(format!("{text}\n  {}", scans.join(", ")));
                }
            }
            backend.close().await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {database}")))
                .execute(&mut admin)
                .await
                .expect("drop database");
            assert!(failures.is_empty(), "full scans:\n{}", failures.join("\n\n"));
        }
    }

    /// Every shared statement has a MariaDB text: an override, or a translation that replaced
    /// every placeholder and every `ON CONFLICT`.
    #[test]
    fn every_shared_statement_translates() {
        for &shared in sql::SHARED.iter().chain(sql::EVENTS).chain([&sql::ACTIVITY]) {
            let text = statement(shared);
            assert!(
                !text.contains('$') && !text.contains("ON CONFLICT"),
                "no MariaDB text for {shared:?}"
            );
            let placeholders = text.matches('?').count();
            let parameters = (1..=20).filter(|n| shared.contains(&format!("${n}"))).count();
            assert_eq!(placeholders, parameters, "one placeholder per parameter in {text:?}");
        }
    }

    #[test]
    fn only_mariadb_from_10_6_on_is_accepted() {
        for good in [
            "10.11.19-MariaDB-0+deb12u1",
            "10.6.0-MariaDB",
            "11.4.2-MariaDB-log",
            "12.0.1-MariaDB",
            "5.5.5-10.11.6-MariaDB",
        ] {
            assert!(check_server(good).is_ok(), "{good}");
        }
        for bad in ["8.0.36", "8.4.0-commercial", "10.5.22-MariaDB", "5.5.5-10.4.1-MariaDB"] {
            assert!(matches!(check_server(bad), Err(StoreError::InvalidInput(_))), "{bad}");
        }
    }

    #[test]
    fn placeholders_in_order_and_conflicts_translate() {
        assert_eq!(
            translate("SELECT a FROM t WHERE a = $1 AND b > $2 LIMIT $3").as_deref(),
            Some("SELECT a FROM t WHERE a = ? AND b > ? LIMIT ?")
        );
        assert_eq!(
            translate("INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a) DO NOTHING").as_deref(),
            Some("INSERT IGNORE INTO t (a, b) VALUES (?, ?)")
        );
        assert_eq!(translate("SELECT $2, $1"), None, "out of order");
        assert_eq!(translate("SELECT $1, $1"), None, "used twice");
        assert_eq!(
            translate("INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = 1"),
            None
        );
    }
}
