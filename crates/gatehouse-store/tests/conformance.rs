//! One conformance suite for the three backends.
//!
//! Every case in `cases` runs against a fresh SQLite file (always), against a fresh schema
//! of the PostgreSQL database named by `TEST_DATABASE_URL`, and against a fresh database on the
//! MariaDB server named by `TEST_MYSQL_URL` (both default to the local servers scripts/services
//! starts; without them those variants, in `needs_postgres` and `needs_mariadb`, fail under `CI`
//! and are reported as skipped elsewhere: `gatehouse_testkit::services`). The
//! cases only use the public API, plus a raw connection
//! where a test has to act as a second, misbehaving or slow writer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_store::{
    Access, Appended, ConversationKind, ConversationRef, GroupCommitConfig, GroupCommitter, GroupUpdate,
    HistoryVisibility, InviteOutcome, JoinOutcome, Limit, NewGroup, NewMessage, Role, Store, StoreError, StoreLimits,
    direct_conversation_id, group_conversation_id,
};
use gatehouse_testkit::{Service, require};
use sqlx::{Connection, MySqlConnection, PgConnection, SqliteConnection};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

/// What a case gets: where its private database is.
#[derive(Debug, Clone)]
struct Ctx {
    kind: Kind,
    url: String,
}

impl Ctx {
    async fn open(&self) -> Store {
        Store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    async fn raw(&self) -> Raw {
        match self.kind {
            Kind::Sqlite => Raw::Sqlite(
                SqliteConnection::connect(&self.url)
                    .await
                    .expect("raw sqlite connection"),
            ),
            Kind::Postgres => Raw::Postgres(PgConnection::connect(&self.url).await.expect("raw postgres connection")),
            Kind::MySql => {
                let mut conn = MySqlConnection::connect(&self.url)
                    .await
                    .expect("raw mariadb connection");
                // The isolation level of the store's own connections.
                sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .execute(&mut conn)
                    .await
                    .expect("read committed");
                Raw::MySql(conn)
            }
        }
    }
}

/// A private database, removed after the case.
struct TestDb {
    ctx: Ctx,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
    /// The MariaDB server's URL (its own database) and the case's database.
    mysql_database: Option<(String, String)>,
}

static SCHEMA_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL server of the PostgreSQL variants (`TEST_DATABASE_URL`, by default the local
/// server scripts/services starts). The variants live in `needs_postgres`: without the server
/// they fail under `CI` and are reported as skipped elsewhere (`gatehouse_testkit::services`).
fn postgres_url() -> String {
    require(Service::Postgres);
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The MariaDB server of the MariaDB variants (`TEST_MYSQL_URL`, by default
/// `mysql://root@127.0.0.1:3306/mysql`): each case creates a database of its own there. The
/// variants live in `needs_mariadb`, under the same policy as PostgreSQL's.
fn mysql_url() -> String {
    require(Service::Mariadb);
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".to_owned())
}

/// `base` (`mysql://…/database?params`) with its database replaced by `database`.
fn with_database(base: &str, database: &str) -> String {
    let (address, params) = base.split_once('?').map_or((base, None), |(a, p)| (a, Some(p)));
    let scheme_end = address.find("://").map_or(0, |at| at + 3);
    let server = match address[scheme_end..].find('/') {
        Some(slash) => &address[..scheme_end + slash],
        None => address,
    };
    match params {
        Some(params) => format!("{server}/{database}?{params}"),
        None => format!("{server}/{database}"),
    }
}

/// A schema or database name no other case (of this or a concurrent run) uses.
fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t_{}_{}_{}",
        std::process::id(),
        nanos,
        SCHEMA_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestDb {
    async fn create(kind: Kind) -> TestDb {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = dir.path().join("chat.db");
                TestDb {
                    ctx: Ctx {
                        kind,
                        url: format!("sqlite://{}", path.display()),
                    },
                    _dir: Some(dir),
                    pg_schema: None,
                    mysql_database: None,
                }
            }
            Kind::Postgres => {
                let base = postgres_url();
                let schema = unique_name();
                let mut admin = PgConnection::connect(&base)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut admin)
                    .await
                    .expect("create test schema");
                let separator = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    ctx: Ctx {
                        kind,
                        url: format!("{base}{separator}options[search_path]={schema}"),
                    },
                    _dir: None,
                    pg_schema: Some((base, schema)),
                    mysql_database: None,
                }
            }
            Kind::MySql => {
                let base = mysql_url();
                let database = unique_name();
                let mut admin = MySqlConnection::connect(&base)
                    .await
                    .expect("connect to TEST_MYSQL_URL");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                TestDb {
                    ctx: Ctx {
                        kind,
                        url: with_database(&base, &database),
                    },
                    _dir: None,
                    pg_schema: None,
                    mysql_database: Some((base, database)),
                }
            }
        }
    }

    async fn cleanup(self) {
        if let Some((base, database)) = self.mysql_database {
            let mut admin = MySqlConnection::connect(&base).await.expect("connect for cleanup");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database}")))
                .execute(&mut admin)
                .await
                .expect("drop test database");
        }
        if let Some((base, schema)) = self.pg_schema {
            let mut admin = PgConnection::connect(&base).await.expect("connect for cleanup");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                .execute(&mut admin)
                .await
                .expect("drop test schema");
        }
    }
}

/// Runs `case` on a fresh database of `kind`, then removes the database even if the case
/// panicked, then re-raises the panic.
async fn run_case<F, Fut>(kind: Kind, case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = TestDb::create(kind).await;
    let task = tokio::spawn(case(db.ctx.clone()));
    let abort = task.abort_handle();
    let outcome = tokio::time::timeout(CASE_TIMEOUT, task).await;
    abort.abort();
    db.cleanup().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => std::panic::resume_unwind(error.into_panic()),
        Err(_) => panic!("case did not finish within {CASE_TIMEOUT:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The group committer and the runtimes around it
// ---------------------------------------------------------------------------------------------

/// The committer's writer runs on a thread of its own; when the last handle goes, the writer
/// stops without taking the store's connections with it. For an in-memory store the one
/// connection is the database. `shutdown` returns once the writer's thread has let go of
/// everything, so the store is used only after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_store_outlives_its_committer() {
    for round in 0..20 {
        let store = Store::open("sqlite::memory:").await.expect("open");
        let committer = GroupCommitter::spawn(store.clone(), GroupCommitConfig::default())
            .await
            .expect("start the group committer");
        ok(committer.append(dm("alice", "bob", "1")).await);
        committer.shutdown().await;
        let history = store
            .history("alice", &direct_conversation_id("alice", "bob"), None, 10)
            .await;
        assert_eq!(history.map(|h| h.len()).ok(), Some(1), "round {round}");
    }
}

/// What the committer accepted is written even when the runtime of whoever queued it stops
/// before the writer is done (the process shuts down its runtime, say): every queued message
/// is stored, once, in order.
///
/// The test holds the database's write lock (SQLite) or the conversation's row lock
/// (PostgreSQL) from before the first message is queued until after the callers' runtime is
/// gone, so no queued message can be written while that runtime lives: whatever the machine's
/// load, every one of them is still pending when it stops. (SQLite's busy timeout, 5 s, bounds
/// how long the writer waits for the lock: a failure bound, far above the milliseconds the
/// queueing takes.)
fn queued_messages_are_written_after_the_callers_runtime_stops(kind: Kind) {
    const QUEUED: usize = 2000;
    let new_runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let setup = new_runtime();
    let db = setup.block_on(TestDb::create(kind));
    let url = db.ctx.url.clone();
    let ab = direct_conversation_id("alice", "bob");
    let mut blocker = setup.block_on(async {
        let store = Store::open(&url).await.expect("open");
        // The conversation exists (PostgreSQL locks its row), with the seed as seq 1.
        ok(append_one(&store, dm("alice", "bob", "seed")).await);
        store.close().await;
        let mut blocker = db.ctx.raw().await;
        blocker.block_writes(&ab).await;
        blocker
    });
    let callers = new_runtime();
    callers.block_on(async {
        let store = Store::open(&url).await.expect("open");
        // Connections the callers' runtime opened, as a worker's handlers would have.
        store.conversations_of("alice").await.expect("read");
        let committer = GroupCommitter::spawn(store, GroupCommitConfig::default())
            .await
            .expect("start the group committer");
        for i in 0..QUEUED {
            // The first poll queues the message (the queue has room); the future is dropped.
            let mut append = std::pin::pin!(committer.append(dm("alice", "bob", &format!("q{i}"))));
            let first = tokio::task::unconstrained(async { futures_util::poll!(append.as_mut()) }).await;
            assert!(first.is_pending(), "nothing can be written while the lock is held");
        }
    });
    drop(callers);

    setup.block_on(async {
        blocker.exec("ROLLBACK").await;
        let store = Store::open(&url).await.expect("reopen");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stored = store.history("alice", &ab, None, 10_000).await.unwrap_or_default();
            if stored.len() == QUEUED + 1 || tokio::time::Instant::now() > deadline {
                let cids: Vec<&str> = stored.iter().map(|m| m.cid.as_str()).collect();
                let first_wrong = (0..QUEUED).find(|&i| cids.get(i + 1).copied() != Some(&format!("q{i}")));
                assert_eq!(
                    (stored.len(), cids.first().copied(), first_wrong),
                    (QUEUED + 1, Some("seed"), None),
                    "every queued message, once, in queue order (stored, first, first position that differs)"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        store.close().await;
        db.cleanup().await;
    });
}

#[test]
fn sqlite_queued_messages_are_written_after_the_callers_runtime_stops() {
    queued_messages_are_written_after_the_callers_runtime_stops(Kind::Sqlite);
}

/// The server variants of the case above (it runs runtimes of its own, so it is not one of the
/// `conformance!` cases), under the service policy of the suite.
mod callers_runtime_stops {
    mod needs_postgres {
        #[test]
        fn postgres_queued_messages_are_written_after_the_callers_runtime_stops() {
            crate::queued_messages_are_written_after_the_callers_runtime_stops(crate::Kind::Postgres);
        }
    }

    mod needs_mariadb {
        #[test]
        fn mysql_queued_messages_are_written_after_the_callers_runtime_stops() {
            crate::queued_messages_are_written_after_the_callers_runtime_stops(crate::Kind::MySql);
        }
    }
}

/// A hung case fails instead of blocking the suite.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `condition` every few milliseconds; panics after 10 s.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Generates `sqlite::<case>`, `postgres::<case>` and `mysql::<case>` tests for every listed case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run_case(super::Kind::Sqlite, super::cases::$case).await;
                }
            )*
        }
        mod needs_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run_case(super::Kind::Postgres, super::cases::$case).await;
                }
            )*
        }
        mod needs_mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run_case(super::Kind::MySql, super::cases::$case).await;
                }
            )*
        }
    };
}

conformance!(
    direct_and_group_sequences,
    group_membership_management,
    resend_is_idempotent_within_and_across_batches,
    a_reused_cid_for_another_message_is_a_conflict,
    concurrent_resend_from_two_stores_stores_once,
    writers_opening_the_same_conversation_at_once_all_store,
    non_members_cannot_send_or_read,
    history_pages_backwards,
    sync_returns_missed_messages_once_with_paging,
    unread_counts_and_monotonic_mark_read,
    late_committing_writer_blocks_the_next_seq,
    reader_never_skips_under_concurrent_writers,
    failed_transaction_stores_nothing,
    group_commit_batches_a_thousand_appends,
    group_commit_resends_in_one_batch,
    group_commit_failure_reaches_every_caller,
    try_append_sheds_load_when_queue_is_full,
    receipts_queued_with_messages_share_their_commit,
    uids_with_colons_and_invalid_input,
    users_are_known_after_their_first_sign_in,
    a_leave_waits_for_an_append_in_flight,
    an_append_waits_for_a_leave_in_flight_and_is_refused,
    a_row_ahead_of_its_counter_fails_the_batch_at_once,
    new_groups_are_invite_only_and_only_members_read_or_list_them,
    owners_and_admins_manage_a_group_and_members_do_not,
    joined_history_hides_what_came_before_a_join,
    kicked_and_banned_members_read_nothing_more_and_banned_ones_cannot_return,
    blocks_refuse_direct_messages_and_invitations_per_item,
    every_cap_is_refused_with_its_typed_error,
    concurrent_joins_never_exceed_a_cap,
    existing_groups_migrate_to_invite_only_with_shared_history,
    pages_end_where_the_callers_budget_says,
    contacts_are_direct_peers_then_fellow_group_members,
    changes_are_events_with_the_next_seq_and_a_final_state,
    reactions_aggregate_and_change_nothing_twice,
    catch_up_gives_the_latest_window_most_recent_first,
    markers_move_forward_only_and_name_the_author,
    search_finds_readable_live_messages_ranked,
);

/// The protocol-2 cases (events, catch-up, markers, search), in a file of their own.
#[path = "conformance/events.rs"]
mod events;

/// A raw connection acting as another writer, outside the store.
enum Raw {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
    MySql(MySqlConnection),
}

impl Raw {
    async fn exec(&mut self, sql: &'static str) {
        match self {
            Raw::Sqlite(c) => sqlx::raw_sql(sql).execute(c).await.map(|_| ()),
            Raw::Postgres(c) => sqlx::raw_sql(sql).execute(c).await.map(|_| ()),
            Raw::MySql(c) => sqlx::raw_sql(sql).execute(c).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Opens a write transaction and holds it: SQLite's database write lock, or the
    /// PostgreSQL or MariaDB row lock of `conversation` (which must exist).
    async fn block_writes(&mut self, conversation: &str) {
        match self {
            Raw::Sqlite(c) => {
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(c)
                    .await
                    .expect("begin immediate");
            }
            Raw::Postgres(c) => {
                sqlx::raw_sql("BEGIN").execute(&mut *c).await.expect("begin");
                sqlx::query("SELECT id FROM conversations WHERE id = $1 FOR UPDATE")
                    .bind(conversation)
                    .execute(c)
                    .await
                    .expect("lock conversation row");
            }
            Raw::MySql(c) => {
                sqlx::raw_sql("BEGIN").execute(&mut *c).await.expect("begin");
                sqlx::query("SELECT id FROM conversations WHERE id = ? FOR UPDATE")
                    .bind(conversation)
                    .execute(c)
                    .await
                    .expect("lock conversation row");
            }
        }
    }

    /// Acts as a writer that takes the next seq of `conversation` in an open transaction
    /// (the way the store does) and returns it without committing.
    async fn take_next_seq(&mut self, conversation: &str) -> i64 {
        const BUMP: &str = "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq";
        match self {
            Raw::Sqlite(c) => {
                sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *c).await.expect("begin");
                sqlx::query_scalar(BUMP).bind(conversation).fetch_one(c).await
            }
            Raw::Postgres(c) => {
                sqlx::raw_sql("BEGIN").execute(&mut *c).await.expect("begin");
                sqlx::query_scalar(BUMP).bind(conversation).fetch_one(c).await
            }
            Raw::MySql(c) => {
                sqlx::raw_sql("BEGIN").execute(&mut *c).await.expect("begin");
                sqlx::query("UPDATE conversations SET last_seq = last_seq + 1 WHERE id = ?")
                    .bind(conversation)
                    .execute(&mut *c)
                    .await
                    .expect("bump last_seq");
                sqlx::query_scalar("SELECT last_seq FROM conversations WHERE id = ?")
                    .bind(conversation)
                    .fetch_one(c)
                    .await
            }
        }
        .expect("bump last_seq")
    }

    async fn insert_message(&mut self, conversation: &str, seq: i64, sender: &str, cid: &str) {
        const INSERT: &str = "INSERT INTO messages (conversation_id, seq, sender, cid, text, ts_ms) \
             VALUES ($1, $2, $3, $4, 'late', 0)";
        match self {
            Raw::Sqlite(c) => sqlx::query(INSERT)
                .bind(conversation)
                .bind(seq)
                .bind(sender)
                .bind(cid)
                .execute(c)
                .await
                .map(|_| ()),
            Raw::Postgres(c) => sqlx::query(INSERT)
                .bind(conversation)
                .bind(seq)
                .bind(sender)
                .bind(cid)
                .execute(c)
                .await
                .map(|_| ()),
            Raw::MySql(c) => sqlx::query(
                "INSERT INTO messages (conversation_id, seq, sender, cid, text, ts_ms) VALUES (?, ?, ?, ?, 'late', 0)",
            )
            .bind(conversation)
            .bind(seq)
            .bind(sender)
            .bind(cid)
            .execute(c)
            .await
            .map(|_| ()),
        }
        .expect("insert late message");
    }
}

fn dm(from: &str, to: &str, cid: &str) -> NewMessage {
    NewMessage {
        conversation: ConversationRef::Direct { to: to.into() },
        sender: from.into(),
        cid: cid.into(),
        text: format!("{from} says {cid}"),
        ts_ms: 1_700_000_000_000,
        reply_to: None,
    }
}

fn gm(from: &str, group: &str, cid: &str) -> NewMessage {
    NewMessage {
        conversation: ConversationRef::Group { id: group.into() },
        sender: from.into(),
        cid: cid.into(),
        text: format!("{from} to {group}: {cid}"),
        ts_ms: 1_700_000_000_000,
        reply_to: None,
    }
}

/// Settings of the groups the older cases use: anyone may join and read everything.
fn open_shared(name: Option<&str>) -> NewGroup {
    NewGroup {
        name: name.map(str::to_owned),
        access: Access::Open,
        history: HistoryVisibility::Shared,
    }
}

/// Every member of `group` (read as member `reader`), in uid order.
async fn members_of(store: &Store, group: &str, reader: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .group_members(group, reader, after.as_deref(), 2)
            .await
            .unwrap_or_else(|e| panic!("members of {group}: {e}"));
        all.extend(page.members.iter().map(|m| m.uid.clone()));
        if !page.more {
            return all;
        }
        after = all.last().cloned();
    }
}

fn ok(result: Result<Appended, StoreError>) -> Appended {
    result.unwrap_or_else(|e| panic!("append failed: {e}"))
}

async fn append_one(store: &Store, message: NewMessage) -> Result<Appended, StoreError> {
    store.append(vec![message]).await.pop().expect("one result per message")
}

/// Asserts the whole history of `conversation` has seqs exactly `1..=expected`.
async fn assert_contiguous(store: &Store, reader: &str, conversation: &str, expected: i64) {
    let all = store
        .history(reader, conversation, None, 10_000)
        .await
        .expect("history");
    let seqs: Vec<i64> = all.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=expected).collect::<Vec<_>>(), "seqs of {conversation}");
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

mod cases {
    use super::*;

    pub use super::events::*;

    pub async fn direct_and_group_sequences(ctx: Ctx) {
        let store = ctx.open().await;
        let ab = direct_conversation_id("alice", "bob");
        assert_eq!(ab, "d:alice:bob");

        let results = store
            .append(vec![
                dm("alice", "bob", "1"),
                dm("bob", "alice", "2"),
                dm("alice", "carol", "3"),
                dm("alice", "bob", "4"),
            ])
            .await;
        let stored: Vec<Appended> = results.into_iter().map(ok).collect();
        let keyed: Vec<(&str, i64)> = stored
            .iter()
            .map(|a| (a.message.conversation.as_str(), a.message.seq))
            .collect();
        assert_eq!(
            keyed,
            vec![
                (ab.as_str(), 1),
                (ab.as_str(), 2),
                ("d:alice:carol", 1),
                (ab.as_str(), 3)
            ]
        );
        assert!(stored.iter().all(|a| !a.duplicate));
        assert_eq!(stored[0].message.to.as_deref(), Some("bob"));
        assert_eq!(stored[1].message.to.as_deref(), Some("alice"));
        assert_eq!(stored[0].message.group, None);
        assert_eq!(stored[0].message.text, "alice says 1");
        assert_eq!(stored[0].message.ts_ms, 1_700_000_000_000);
        let mut ids: Vec<i64> = stored.iter().map(|a| a.message.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 4, "ids are unique");

        // A later batch continues the sequence.
        let next = ok(append_one(&store, dm("bob", "alice", "5")).await);
        assert_eq!(next.message.seq, 4);
        assert!(store.is_member(&ab, "alice").await.expect("is_member"));
        assert!(store.is_member(&ab, "bob").await.expect("is_member"));
        assert!(!store.is_member(&ab, "carol").await.expect("is_member"));

        store
            .create_group("team", "alice", &open_shared(Some("The team")))
            .await
            .expect("create group");
        store.join_group("team", "bob").await.expect("join");
        let group: Vec<Appended> = store
            .append(vec![gm("alice", "team", "g1"), gm("bob", "team", "g2")])
            .await
            .into_iter()
            .map(ok)
            .collect();
        assert_eq!(group[0].message.conversation, group_conversation_id("team"));
        assert_eq!(group[0].message.seq, 1);
        assert_eq!(group[1].message.seq, 2);
        assert_eq!(group[1].message.group.as_deref(), Some("team"));
        assert_eq!(group[1].message.to, None);
        let third = ok(append_one(&store, gm("bob", "team", "g3")).await);
        assert_eq!(third.message.seq, 3);

        let list = store.conversations_of("alice").await.expect("list");
        let ids: Vec<(&str, ConversationKind, &str, i64)> = list
            .iter()
            .map(|c| (c.id.as_str(), c.kind, c.peer_or_group.as_str(), c.last_seq))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("d:alice:bob", ConversationKind::Direct, "bob", 4),
                ("d:alice:carol", ConversationKind::Direct, "carol", 1),
                ("g:team", ConversationKind::Group, "team", 3),
            ]
        );
        assert_eq!(list[2].name.as_deref(), Some("The team"));
    }

    pub async fn group_membership_management(ctx: Ctx) {
        let store = ctx.open().await;
        store
            .create_group("g", "alice", &open_shared(None))
            .await
            .expect("create");
        assert!(matches!(
            store.create_group("g", "bob", &open_shared(None)).await,
            Err(StoreError::GroupExists(id)) if id == "g"
        ));
        assert_eq!(store.join_group("g", "bob").await.expect("join"), JoinOutcome::Joined);
        assert_eq!(
            store.join_group("g", "bob").await.expect("join is idempotent"),
            JoinOutcome::AlreadyMember
        );
        store.join_group("g", "carol").await.expect("join");
        assert_eq!(members_of(&store, "g", "bob").await, vec!["alice", "bob", "carol"]);
        assert!(matches!(
            store.join_group("nope", "bob").await,
            Err(StoreError::UnknownGroup(id)) if id == "nope"
        ));
        assert!(matches!(
            store.group_members("nope", "bob", None, 10).await,
            Err(StoreError::UnknownGroup(_))
        ));
        assert!(matches!(
            store.leave_group("nope", "bob").await,
            Err(StoreError::UnknownGroup(_))
        ));
        store.leave_group("g", "carol").await.expect("leave");
        store.leave_group("g", "carol").await.expect("leave is idempotent");
        assert_eq!(members_of(&store, "g", "alice").await, vec!["alice", "bob"]);
        let g = group_conversation_id("g");
        assert!(!store.is_member(&g, "carol").await.expect("is_member"));
        // A left member can no longer send.
        assert!(matches!(
            append_one(&store, gm("carol", "g", "x")).await,
            Err(StoreError::NotMember { .. })
        ));
        // A group that everyone left still exists.
        store.leave_group("g", "alice").await.expect("leave");
        store.leave_group("g", "bob").await.expect("leave");
        assert!(store.group_exists("g").await.expect("exists"));
        store.join_group("g", "dave").await.expect("join an empty group");
        assert_eq!(members_of(&store, "g", "dave").await, vec!["dave"]);
    }

    pub async fn resend_is_idempotent_within_and_across_batches(ctx: Ctx) {
        let store = ctx.open().await;
        let mut resend = dm("alice", "bob", "c1");
        resend.ts_ms += 5;
        let results = store
            .append(vec![dm("alice", "bob", "c1"), dm("alice", "bob", "c2"), resend.clone()])
            .await;
        let first = ok(results[0].clone());
        let second = ok(results[1].clone());
        let third = ok(results[2].clone());
        assert!(!first.duplicate && !second.duplicate);
        assert!(third.duplicate, "same batch resend is a duplicate");
        assert_eq!(third.message, first.message, "the original is returned (its ts too)");
        assert_eq!(second.message.seq, 2);

        // Separate batch: nothing stored, the original comes back.
        let again = ok(append_one(&store, resend).await);
        assert!(again.duplicate);
        assert_eq!(again.message, first.message);
        assert_eq!(again.message.text, "alice says c1");

        // The same cid from another sender is a different message.
        let other = ok(append_one(&store, dm("bob", "alice", "c1")).await);
        assert!(!other.duplicate);
        assert_eq!(other.message.seq, 3, "duplicates did not consume seqs");
        assert_contiguous(&store, "alice", &direct_conversation_id("alice", "bob"), 3).await;
    }

    /// A cid reused for another message (another recipient, another text) is refused with a
    /// conflict instead of being answered with the old message's ack: nothing is stored, no
    /// conversation is created, no seq is used; within one batch as across batches.
    pub async fn a_reused_cid_for_another_message_is_a_conflict(ctx: Ctx) {
        let store = ctx.open().await;
        let first = ok(append_one(&store, dm("alice", "bob", "c1")).await);
        let conflict = |r: &Result<Appended, StoreError>| matches!(r, Err(StoreError::CidConflict { sender, cid }) if sender == "alice" && cid == "c1");
        let elsewhere = append_one(&store, dm("alice", "carol", "c1")).await;
        assert!(conflict(&elsewhere), "{elsewhere:?}");
        let edited = append_one(
            &store,
            NewMessage {
                text: "edited".into(),
                ..dm("alice", "bob", "c1")
            },
        )
        .await;
        assert!(conflict(&edited), "{edited:?}");
        assert!(
            !store
                .is_member(&direct_conversation_id("alice", "carol"), "carol")
                .await
                .expect("is_member"),
            "a refused message creates no conversation"
        );
        let results = store
            .append(vec![
                dm("alice", "dan", "c9"),
                NewMessage {
                    text: "not the same".into(),
                    ..dm("alice", "dan", "c9")
                },
                dm("alice", "dan", "c9"),
                dm("alice", "bob", "c2"),
            ])
            .await;
        assert!(!ok(results[0].clone()).duplicate);
        assert!(
            matches!(&results[1], Err(StoreError::CidConflict { .. })),
            "{:?}",
            results[1]
        );
        assert!(ok(results[2].clone()).duplicate);
        assert_eq!(ok(results[3].clone()).message.seq, 2, "the conflicts took no seq");
        assert_eq!(
            ok(append_one(&store, dm("alice", "bob", "c1")).await).message,
            first.message,
            "an identical resend is still a duplicate"
        );
        assert_contiguous(&store, "alice", &direct_conversation_id("alice", "dan"), 1).await;
    }

    pub async fn concurrent_resend_from_two_stores_stores_once(ctx: Ctx) {
        let s1 = ctx.open().await;
        let s2 = ctx.open().await;
        let ab = direct_conversation_id("alice", "bob");
        let ac = direct_conversation_id("alice", "carol");
        const ROUNDS: usize = 25;
        for round in 0..ROUNDS {
            let cid = format!("same-{round}");
            let (x, y) = tokio::join!(
                append_one(&s1, dm("alice", "bob", &cid)),
                append_one(&s2, dm("alice", "bob", &cid))
            );
            let (x, y) = (ok(x), ok(y));
            assert_eq!(x.message, y.message, "both writers see the same row");
            assert_eq!(
                usize::from(x.duplicate) + usize::from(y.duplicate),
                1,
                "exactly one of the two stored it"
            );
        }
        assert_contiguous(&s1, "alice", &ab, ROUNDS as i64).await;

        // The same key sent to two different conversations at once: one is stored, the other
        // is a conflict, and neither conversation gets a hole in its sequence.
        for round in 0..ROUNDS {
            let cid = format!("split-{round}");
            let (x, y) = tokio::join!(
                append_one(&s1, dm("alice", "bob", &cid)),
                append_one(&s2, dm("alice", "carol", &cid))
            );
            let stored = [&x, &y].iter().filter(|r| matches!(r, Ok(a) if !a.duplicate)).count();
            let conflicts = [&x, &y]
                .iter()
                .filter(|r| matches!(r, Err(StoreError::CidConflict { .. })))
                .count();
            assert_eq!((stored, conflicts), (1, 1), "{x:?} {y:?}");
        }
        let in_ab = s1.history("alice", &ab, None, 1000).await.expect("history").len() as i64;
        let in_ac = s1.history("alice", &ac, None, 1000).await.unwrap_or_default().len() as i64;
        assert_eq!(
            in_ab + in_ac,
            2 * ROUNDS as i64,
            "25 resends in ab, and one of each split"
        );
        assert_contiguous(&s1, "alice", &ab, in_ab).await;
        if in_ac > 0 {
            assert_contiguous(&s1, "alice", &ac, in_ac).await;
        }
        // The counters agree with the rows.
        let list = s2.conversations_of("alice").await.expect("list");
        for summary in list {
            let rows = if summary.id == ab { in_ab } else { in_ac };
            assert_eq!(summary.last_seq, rows, "last_seq of {}", summary.id);
        }
    }

    /// Several stores (several workers) send the first messages of the same new direct
    /// conversations at the same moment: on PostgreSQL and MariaDB all but one of them find the
    /// conversation created under them and start their attempt again. Every message is stored,
    /// the conversation has its two members, and its sequence has no hole.
    pub async fn writers_opening_the_same_conversation_at_once_all_store(ctx: Ctx) {
        let stores = [ctx.open().await, ctx.open().await, ctx.open().await];
        const PAIRS: usize = 8;
        for pair in 0..PAIRS {
            let (a, b) = (format!("open{pair}a"), format!("open{pair}b"));
            let sends = stores.iter().enumerate().flat_map(|(i, store)| {
                let (a, b) = (a.clone(), b.clone());
                (0..2).map(move |k| {
                    let (from, to) = if k == 0 {
                        (a.clone(), b.clone())
                    } else {
                        (b.clone(), a.clone())
                    };
                    let store = store.clone();
                    async move { append_one(&store, dm(&from, &to, &format!("first-{i}-{k}"))).await }
                })
            });
            let results = futures_util::future::join_all(sends).await;
            for result in results {
                assert!(!ok(result).duplicate, "every first message is new");
            }
            let conversation = direct_conversation_id(&a, &b);
            assert_contiguous(&stores[0], &a, &conversation, 6).await;
            assert_contiguous(&stores[1], &b, &conversation, 6).await;
        }
    }

    pub async fn non_members_cannot_send_or_read(ctx: Ctx) {
        let store = ctx.open().await;
        store
            .create_group("club", "alice", &open_shared(None))
            .await
            .expect("create");
        let results = store
            .append(vec![
                gm("alice", "club", "1"),
                gm("mallory", "club", "2"),
                gm("alice", "club", "3"),
                gm("mallory", "nowhere", "4"),
            ])
            .await;
        assert_eq!(ok(results[0].clone()).message.seq, 1);
        assert!(matches!(
            &results[1],
            Err(StoreError::NotMember { uid, conversation }) if uid == "mallory" && conversation == "g:club"
        ));
        assert_eq!(ok(results[2].clone()).message.seq, 2, "the refused item took no seq");
        assert!(matches!(&results[3], Err(StoreError::NotMember { .. })));

        let club = group_conversation_id("club");
        assert!(matches!(
            store.history("mallory", &club, None, 10).await,
            Err(StoreError::NotMember { .. })
        ));
        ok(append_one(&store, dm("alice", "bob", "dm")).await);
        let ab = direct_conversation_id("alice", "bob");
        assert!(matches!(
            store.history("mallory", &ab, None, 10).await,
            Err(StoreError::NotMember { .. })
        ));
        assert!(matches!(
            store.mark_read("mallory", &ab, 1).await,
            Err(StoreError::NotMember { .. })
        ));
        let cursors = HashMap::from([(club.clone(), 0), (ab.clone(), 0)]);
        let page = store.sync("mallory", &cursors, 100).await.expect("sync");
        assert!(page.messages.is_empty() && !page.more, "foreign cursors are ignored");
        assert_eq!(store.history("alice", &club, None, 10).await.expect("history").len(), 2);
    }

    pub async fn history_pages_backwards(ctx: Ctx) {
        let store = ctx.open().await;
        let batch: Vec<NewMessage> = (1..=25).map(|i| dm("alice", "bob", &format!("m{i}"))).collect();
        store.append(batch).await.into_iter().for_each(|r| {
            ok(r);
        });
        let ab = direct_conversation_id("alice", "bob");
        let seqs = |page: &[gatehouse_store::StoredMessage]| -> Vec<i64> { page.iter().map(|m| m.seq).collect() };
        let newest = store.history("bob", &ab, None, 10).await.expect("page 1");
        assert_eq!(seqs(&newest), (16..=25).collect::<Vec<_>>());
        assert_eq!(newest[0].cid, "m16");
        let older = store
            .history("bob", &ab, Some(newest[0].seq), 10)
            .await
            .expect("page 2");
        assert_eq!(seqs(&older), (6..=15).collect::<Vec<_>>());
        let oldest = store.history("bob", &ab, Some(older[0].seq), 10).await.expect("page 3");
        assert_eq!(seqs(&oldest), (1..=5).collect::<Vec<_>>());
        let none = store.history("bob", &ab, Some(1), 10).await.expect("page 4");
        assert!(none.is_empty());
        assert!(store.history("bob", &ab, None, 0).await.expect("limit 0").is_empty());
        assert!(matches!(
            store.history("bob", &ab, Some(-1), 10).await,
            Err(StoreError::InvalidInput(_))
        ));
    }

    pub async fn sync_returns_missed_messages_once_with_paging(ctx: Ctx) {
        let store = ctx.open().await;
        store
            .create_group("g", "alice", &open_shared(None))
            .await
            .expect("create");
        store.join_group("g", "carol").await.expect("join");
        let mut expected: HashMap<String, Vec<String>> = HashMap::new();
        for i in 0..7 {
            let cid = format!("d{i}");
            let a = ok(append_one(&store, dm("alice", "carol", &cid)).await);
            expected.entry(a.message.conversation).or_default().push(cid);
            let cid = format!("g{i}");
            let a = ok(append_one(&store, gm("alice", "g", &cid)).await);
            expected.entry(a.message.conversation).or_default().push(cid);
        }
        // Noise carol must not see.
        ok(append_one(&store, dm("alice", "bob", "secret")).await);

        let mut cursors: HashMap<String, i64> = HashMap::new();
        let mut got: HashMap<String, Vec<String>> = HashMap::new();
        let mut pages = 0;
        loop {
            let page = store.sync("carol", &cursors, 3).await.expect("sync");
            pages += 1;
            assert!(page.messages.len() <= 3);
            for m in &page.messages {
                let cursor = cursors.entry(m.conversation.clone()).or_insert(0);
                assert_eq!(m.seq, *cursor + 1, "ascending and gap-free per conversation");
                *cursor = m.seq;
                got.entry(m.conversation.clone()).or_default().push(m.cid.clone());
            }
            if !page.more {
                break;
            }
            assert_eq!(page.messages.len(), 3, "a page with more is full");
            assert!(pages < 20, "sync terminates");
        }
        assert_eq!(got, expected, "every missed message exactly once");
        assert_eq!(pages, 5, "14 messages in pages of 3");
        let again = store.sync("carol", &cursors, 3).await.expect("sync");
        assert!(again.messages.is_empty() && !again.more);

        // Resuming from a cursor in the middle returns only what follows it.
        let ac = direct_conversation_id("alice", "carol");
        let from_five = HashMap::from([(ac.clone(), 5), (group_conversation_id("g"), 7)]);
        let page = store.sync("carol", &from_five, 100).await.expect("sync");
        let seqs: Vec<(String, i64)> = page.messages.iter().map(|m| (m.conversation.clone(), m.seq)).collect();
        assert_eq!(seqs, vec![(ac.clone(), 6), (ac, 7)]);
        assert!(!page.more);

        // New messages after the sync show up in the next one.
        ok(append_one(&store, gm("alice", "g", "late")).await);
        let page = store.sync("carol", &cursors, 3).await.expect("sync");
        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].cid, "late");
        assert_eq!(page.messages[0].seq, 8);

        assert!(matches!(
            store.sync("carol", &HashMap::from([("g:g".to_string(), -1)]), 3).await,
            Err(StoreError::InvalidInput(_))
        ));
        let empty = store.sync("carol", &cursors, 0).await.expect("sync");
        assert!(empty.messages.is_empty() && empty.more, "limit 0 reports pending");
    }

    pub async fn unread_counts_and_monotonic_mark_read(ctx: Ctx) {
        let store = ctx.open().await;
        for i in 0..3 {
            ok(append_one(&store, dm("alice", "bob", &format!("a{i}"))).await);
        }
        let ab = direct_conversation_id("alice", "bob");
        let unread = |list: Vec<gatehouse_store::ConversationSummary>| -> Vec<(String, i64, i64)> {
            list.into_iter()
                .map(|c| (c.peer_or_group, c.read_seq, c.unread))
                .collect()
        };
        assert_eq!(
            unread(store.conversations_of("bob").await.expect("list")),
            vec![("alice".to_string(), 0, 3)]
        );
        assert_eq!(
            unread(store.conversations_of("alice").await.expect("list")),
            vec![("bob".to_string(), 3, 0)],
            "own messages are read"
        );
        assert_eq!(store.mark_read("bob", &ab, 2).await.expect("mark"), 2);
        assert_eq!(store.mark_read("bob", &ab, 1).await.expect("mark"), 2, "never back");
        assert_eq!(
            unread(store.conversations_of("bob").await.expect("list")),
            vec![("alice".to_string(), 2, 1)]
        );
        assert_eq!(
            store.mark_read("bob", &ab, 99).await.expect("mark"),
            3,
            "capped at last_seq"
        );
        ok(append_one(&store, dm("alice", "bob", "a3")).await);
        assert_eq!(
            unread(store.conversations_of("bob").await.expect("list")),
            vec![("alice".to_string(), 3, 1)]
        );
        // Replying marks the conversation read up to the reply.
        ok(append_one(&store, dm("bob", "alice", "b0")).await);
        assert_eq!(
            unread(store.conversations_of("bob").await.expect("list")),
            vec![("alice".to_string(), 5, 0)]
        );
        assert_eq!(
            unread(store.conversations_of("alice").await.expect("list")),
            vec![("bob".to_string(), 4, 1)]
        );
        assert!(matches!(
            store.mark_read("bob", &ab, -1).await,
            Err(StoreError::InvalidInput(_))
        ));

        // A group joiner starts with nothing unread.
        store
            .create_group("g", "alice", &open_shared(None))
            .await
            .expect("create");
        ok(append_one(&store, gm("alice", "g", "before")).await);
        store.join_group("g", "bob").await.expect("join");
        ok(append_one(&store, gm("alice", "g", "after")).await);
        let bob = store.conversations_of("bob").await.expect("list");
        let g = bob.iter().find(|c| c.id == "g:g").expect("group listed");
        assert_eq!((g.last_seq, g.read_seq, g.unread), (2, 1, 1));
    }

    /// Writer A takes seq N in an open transaction; writer B (the store) must not be able to
    /// commit N+1 before A commits, so a reader can never see N+1 without N.
    pub async fn late_committing_writer_blocks_the_next_seq(ctx: Ctx) {
        let store = ctx.open().await;
        let ab = direct_conversation_id("alice", "bob");
        assert_eq!(ok(append_one(&store, dm("alice", "bob", "m1")).await).message.seq, 1);

        let mut writer_a = ctx.raw().await;
        let taken = writer_a.take_next_seq(&ab).await;
        assert_eq!(taken, 2);

        let writer_b = tokio::spawn({
            let store = store.clone();
            async move { append_one(&store, dm("bob", "alice", "m3")).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!writer_b.is_finished(), "writer B must wait for writer A's transaction");
        let cursors = HashMap::from([(ab.clone(), 1)]);
        let during = store.sync("bob", &cursors, 100).await.expect("sync");
        assert!(
            during.messages.is_empty(),
            "nothing after seq 1 is visible while seq 2 is uncommitted: {:?}",
            during.messages
        );

        writer_a.insert_message(&ab, taken, "alice", "m2").await;
        writer_a.exec("COMMIT").await;
        let b = ok(writer_b.await.expect("writer B task"));
        assert_eq!(b.message.seq, 3, "B continues after A's seq");

        let after = store.sync("bob", &cursors, 100).await.expect("sync");
        let seqs: Vec<(i64, String)> = after.messages.iter().map(|m| (m.seq, m.cid.clone())).collect();
        assert_eq!(seqs, vec![(2, "m2".to_string()), (3, "m3".to_string())]);
    }

    /// A member who leaves while an append to the group is in flight (holding the conversation,
    /// as every append does first) leaves only after that append: the message was written
    /// while the sender was a member.
    pub async fn a_leave_waits_for_an_append_in_flight(ctx: Ctx) {
        let store = ctx.open().await;
        store
            .create_group("club", "alice", &open_shared(None))
            .await
            .expect("create");
        store.join_group("club", "bob").await.expect("join");
        let mut append = ctx.raw().await;
        append.block_writes(&group_conversation_id("club")).await;

        let leave = tokio::spawn({
            let store = store.clone();
            async move { store.leave_group("club", "bob").await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!leave.is_finished(), "the leave waits for the append in flight");
        append.exec("COMMIT").await;
        leave.await.expect("leave task").expect("leave");
        assert_eq!(members_of(&store, "club", "alice").await, vec!["alice"]);
    }

    /// An append from a member whose leave is in flight waits for the leave and is then refused:
    /// a message is never stored after its sender's leave committed.
    pub async fn an_append_waits_for_a_leave_in_flight_and_is_refused(ctx: Ctx) {
        let store = ctx.open().await;
        store
            .create_group("club", "alice", &open_shared(None))
            .await
            .expect("create");
        store.join_group("club", "bob").await.expect("join");
        // A leave half-way, done the way `leave_group` does it: the conversation first.
        let mut leave = ctx.raw().await;
        leave
            .exec(match ctx.kind {
                Kind::Sqlite => "BEGIN IMMEDIATE; DELETE FROM members WHERE conversation_id = 'g:club' AND uid = 'bob'",
                Kind::Postgres => {
                    "BEGIN; SELECT id FROM conversations WHERE id = 'g:club' FOR NO KEY UPDATE; \
                     DELETE FROM members WHERE conversation_id = 'g:club' AND uid = 'bob'"
                }
                Kind::MySql => {
                    "BEGIN; SELECT id FROM conversations WHERE id = 'g:club' FOR UPDATE; \
                     DELETE FROM members WHERE conversation_id = 'g:club' AND uid = 'bob'"
                }
            })
            .await;

        let append = tokio::spawn({
            let store = store.clone();
            async move { append_one(&store, gm("bob", "club", "bye")).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!append.is_finished(), "the append waits for the leave in flight");
        leave.exec("COMMIT").await;
        let result = append.await.expect("append task");
        assert!(matches!(result, Err(StoreError::NotMember { .. })), "{result:?}");
        assert!(
            store
                .history("alice", &group_conversation_id("club"), None, 10)
                .await
                .expect("history")
                .is_empty(),
            "nothing was stored"
        );
    }

    /// A message row ahead of its conversation's counter (a damaged database) fails every
    /// batch that writes to that conversation with the database's error, at once: no retries
    /// that cannot succeed, and nothing of the batch stored.
    pub async fn a_row_ahead_of_its_counter_fails_the_batch_at_once(ctx: Ctx) {
        let store = ctx.open().await;
        let ab = direct_conversation_id("alice", "bob");
        ok(append_one(&store, dm("alice", "bob", "m1")).await);
        let mut raw = ctx.raw().await;
        raw.insert_message(&ab, 2, "alice", "stray").await;

        let results = store
            .append(vec![dm("alice", "bob", "m2"), dm("carol", "dave", "unrelated")])
            .await;
        assert!(
            results.iter().all(|r| matches!(r, Err(StoreError::Database(_)))),
            "{results:?}"
        );
        let cd = direct_conversation_id("carol", "dave");
        assert!(
            !store.is_member(&cd, "carol").await.expect("is_member"),
            "nothing of the batch was stored"
        );
    }

    /// Many writers on two store instances append to one conversation while a reader syncs
    /// with an advancing cursor: the reader must see every seq exactly once, in order, and
    /// never a page that starts past its cursor.
    pub async fn reader_never_skips_under_concurrent_writers(ctx: Ctx) {
        let s1 = ctx.open().await;
        let s2 = ctx.open().await;
        let ab = direct_conversation_id("alice", "bob");
        const WRITERS: usize = 8;
        const PER_WRITER: usize = 40;
        let done = Arc::new(AtomicBool::new(false));

        let reader = tokio::spawn({
            let store = s2.clone();
            let done = Arc::clone(&done);
            let ab = ab.clone();
            async move {
                let mut cursor = 0i64;
                let mut seen = Vec::new();
                let mut syncs = 0u32;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let cursors = HashMap::from([(ab.clone(), cursor)]);
                    let page = store.sync("bob", &cursors, 16).await.expect("sync");
                    syncs += 1;
                    for m in &page.messages {
                        assert_eq!(m.seq, cursor + 1, "reader skipped or repeated a seq");
                        cursor = m.seq;
                        seen.push(m.seq);
                    }
                    if finished && !page.more {
                        break;
                    }
                    if page.messages.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                (seen, syncs)
            }
        });

        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let store = if w % 2 == 0 { s1.clone() } else { s2.clone() };
            writers.push(tokio::spawn(async move {
                let mut i = 0;
                while i < PER_WRITER {
                    let size = (i % 3 + 1).min(PER_WRITER - i);
                    let batch: Vec<NewMessage> = (i..i + size)
                        .map(|k| {
                            let (from, to) = if k % 2 == 0 { ("alice", "bob") } else { ("bob", "alice") };
                            dm(from, to, &format!("w{w}-{k}"))
                        })
                        .collect();
                    for result in store.append(batch).await {
                        assert!(!ok(result).duplicate);
                    }
                    i += size;
                }
            }));
        }
        for writer in writers {
            writer.await.expect("writer task");
        }
        done.store(true, Ordering::SeqCst);
        let (seen, syncs) = reader.await.expect("reader task");
        let total = (WRITERS * PER_WRITER) as i64;
        assert_eq!(seen, (1..=total).collect::<Vec<_>>());
        assert!(syncs > 1, "the reader ran during the writes");
        assert_contiguous(&s1, "alice", &ab, total).await;
    }

    /// A transaction that fails part-way stores nothing: no message, no seq consumed.
    pub async fn failed_transaction_stores_nothing(ctx: Ctx) {
        let store = ctx.open().await;
        ok(append_one(&store, dm("alice", "bob", "before")).await);
        let mut raw = ctx.raw().await;
        match ctx.kind {
            Kind::Sqlite => {
                raw.exec(
                    "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.text = 'boom' \
                     BEGIN SELECT RAISE(ABORT, 'boom'); END",
                )
                .await
            }
            Kind::Postgres | Kind::MySql => {
                raw.exec("ALTER TABLE messages ADD CONSTRAINT boom CHECK (text <> 'boom')")
                    .await
            }
        }
        let mut boom = dm("bob", "alice", "boom");
        boom.text = "boom".into();
        let results = store
            .append(vec![dm("alice", "bob", "x1"), boom, dm("alice", "carol", "x2")])
            .await;
        assert_eq!(results.len(), 3);
        assert!(
            results.iter().all(|r| matches!(r, Err(StoreError::Database(_)))),
            "{results:?}"
        );
        let ab = direct_conversation_id("alice", "bob");
        assert_contiguous(&store, "alice", &ab, 1).await;
        assert!(
            !store
                .is_member(&direct_conversation_id("alice", "carol"), "alice")
                .await
                .expect("is_member"),
            "the new conversation was rolled back too"
        );
        match ctx.kind {
            Kind::Sqlite => raw.exec("DROP TRIGGER boom").await,
            Kind::Postgres | Kind::MySql => raw.exec("ALTER TABLE messages DROP CONSTRAINT boom").await,
        }
        let retried = ok(append_one(&store, dm("alice", "bob", "x1")).await);
        assert!(!retried.duplicate, "the failed attempt left no row behind");
        assert_eq!(retried.message.seq, 2, "the failed attempt consumed no seq");
    }

    pub async fn group_commit_batches_a_thousand_appends(ctx: Ctx) {
        let store = ctx.open().await;
        let committer = GroupCommitter::spawn(
            store.clone(),
            GroupCommitConfig {
                max_batch: 256,
                queue_capacity: 1024,
            },
        )
        .await
        .expect("start the group committer");
        const N: usize = 1000;
        const SENDERS: usize = 10;
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let committer = committer.clone();
                tokio::spawn(async move {
                    committer
                        .append(dm(&format!("u{}", i % SENDERS), "hub", &format!("m{i}")))
                        .await
                })
            })
            .collect();
        let mut per_conversation: HashMap<String, Vec<i64>> = HashMap::new();
        for task in tasks {
            let appended = ok(task.await.expect("append task"));
            assert!(!appended.duplicate);
            per_conversation
                .entry(appended.message.conversation)
                .or_default()
                .push(appended.message.seq);
        }
        assert_eq!(per_conversation.len(), SENDERS);
        for (conversation, mut seqs) in per_conversation {
            seqs.sort_unstable();
            assert_eq!(seqs, (1..=(N / SENDERS) as i64).collect::<Vec<_>>(), "{conversation}");
            assert_contiguous(&store, "hub", &conversation, (N / SENDERS) as i64).await;
        }
        let batches = committer.batches_committed();
        eprintln!("{:?}: 1000 appends in {batches} transactions", ctx.kind);
        assert_eq!(committer.messages_stored(), N as u64);
        assert!(batches >= 1);
        assert!(batches <= 100, "{batches} transactions for {N} appends");
        assert_eq!(committer.batches_failed(), 0);
        assert_eq!(committer.queued(), 0);
    }

    pub async fn group_commit_resends_in_one_batch(ctx: Ctx) {
        let store = ctx.open().await;
        let committer = GroupCommitter::spawn(store.clone(), GroupCommitConfig::default())
            .await
            .expect("start the group committer");
        let results =
            futures_util::future::join_all((0..20).map(|_| committer.append(dm("alice", "bob", "same")))).await;
        let appended: Vec<Appended> = results.into_iter().map(ok).collect();
        assert_eq!(appended.iter().filter(|a| !a.duplicate).count(), 1);
        assert!(appended.iter().all(|a| a.message == appended[0].message));
        assert_eq!(committer.messages_stored(), 1);
        assert_contiguous(&store, "bob", &direct_conversation_id("alice", "bob"), 1).await;
    }

    pub async fn group_commit_failure_reaches_every_caller(ctx: Ctx) {
        let store = ctx.open().await;
        let committer = GroupCommitter::spawn(store.clone(), GroupCommitConfig::default())
            .await
            .expect("start the group committer");
        ok(committer.append(dm("alice", "bob", "ok")).await);
        store.close().await;
        let results =
            futures_util::future::join_all((0..10).map(|i| committer.append(dm("alice", "bob", &format!("lost{i}")))))
                .await;
        assert!(
            results.iter().all(|r| matches!(r, Err(StoreError::Database(_)))),
            "{results:?}"
        );
        assert!(committer.batches_failed() >= 1);
        assert_eq!(committer.batches_committed(), 1);
        assert_eq!(committer.messages_stored(), 1);

        let reopened = ctx.open().await;
        assert_contiguous(&reopened, "bob", &direct_conversation_id("alice", "bob"), 1).await;
    }

    pub async fn try_append_sheds_load_when_queue_is_full(ctx: Ctx) {
        let store = ctx.open().await;
        let ab = direct_conversation_id("alice", "bob");
        ok(append_one(&store, dm("alice", "bob", "m0")).await);
        let committer = GroupCommitter::spawn(
            store.clone(),
            GroupCommitConfig {
                max_batch: 1,
                queue_capacity: 1,
            },
        )
        .await
        .expect("start the group committer");
        let mut blocker = ctx.raw().await;
        blocker.block_writes(&ab).await;

        let in_flight = tokio::spawn({
            let committer = committer.clone();
            async move { committer.append(dm("alice", "bob", "m1")).await }
        });
        // Give the writer time to take m1 (it then waits on the lock). Should it not have taken
        // it yet, m1 itself fills the queue below and the test still holds.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let queued = tokio::spawn({
            let committer = committer.clone();
            async move { committer.append(dm("alice", "bob", "m2")).await }
        });
        wait_until("m2 to be queued", || committer.queued() == 1).await;
        assert!(matches!(
            committer.try_append(dm("alice", "bob", "m3")).await,
            Err(StoreError::Overloaded)
        ));

        blocker.exec("ROLLBACK").await;
        assert_eq!(ok(in_flight.await.expect("task")).message.seq, 2);
        assert_eq!(ok(queued.await.expect("task")).message.seq, 3);
        let m4 = ok(committer.try_append(dm("alice", "bob", "m4")).await);
        assert_eq!(m4.message.seq, 4);
    }

    /// Receipts queued with messages are written in the messages' transaction (one commit per
    /// round) on SQLite, and in one of their own on PostgreSQL and MariaDB; either way every
    /// caller gets the answer a transaction of its own would give.
    pub async fn receipts_queued_with_messages_share_their_commit(ctx: Ctx) {
        use futures_util::FutureExt;
        use gatehouse_store::{Marker, MarkerRequest};
        let store = ctx.open().await;
        let ab = direct_conversation_id("alice", "bob");
        ok(append_one(&store, dm("alice", "bob", "m1")).await);
        let committer = GroupCommitter::spawn(store.clone(), GroupCommitConfig::default())
            .await
            .expect("start the group committer");
        let mut blocker = ctx.raw().await;
        blocker.block_writes(&ab).await;
        // Each call is polled once, which queues it; then it runs on its own task.
        fn queued<T: Send + 'static>(
            mut future: futures_util::future::BoxFuture<'static, T>,
        ) -> tokio::task::JoinHandle<T> {
            assert!(
                (&mut future).now_or_never().is_none(),
                "nothing is written while blocked"
            );
            tokio::spawn(future)
        }
        let m2 = queued(Box::pin({
            let committer = committer.clone();
            async move { committer.append(dm("alice", "bob", "m2")).await.map(|a| a.message.seq) }
        }));
        wait_until("the writer to take m2", || committer.queued() == 0).await;
        let before = committer.batches_committed();
        let m3 = queued(Box::pin({
            let committer = committer.clone();
            async move { committer.append(dm("alice", "bob", "m3")).await.map(|a| a.message.seq) }
        }));
        let receipt = |marker, seq| MarkerRequest {
            uid: "bob".to_owned(),
            conversation: ab.clone(),
            seq,
            marker,
        };
        let delivered = queued(Box::pin({
            let (committer, request) = (committer.clone(), receipt(Marker::Delivered, 1));
            async move { committer.move_marker(request).await.map(|m| (m.marker, m.moved)) }
        }));
        let read = queued(Box::pin({
            let (committer, request) = (committer.clone(), receipt(Marker::Read, 1));
            async move { committer.move_marker(request).await.map(|m| (m.marker, m.moved)) }
        }));
        assert_eq!(committer.queued(), 3, "m3 and both receipts wait for the next round");
        blocker.exec("ROLLBACK").await;

        assert_eq!(m2.await.expect("task").expect("m2"), 2);
        assert_eq!(m3.await.expect("task").expect("m3"), 3);
        assert_eq!(delivered.await.expect("task").expect("delivered"), (1, true));
        assert_eq!(read.await.expect("task").expect("read"), (1, true));
        let commits = committer.batches_committed() - before;
        let expected = if ctx.kind == Kind::Sqlite { 2 } else { 3 };
        assert_eq!(
            commits, expected,
            "m2's round, then m3 with the receipts ({:?})",
            ctx.kind
        );
        let bob = store.conversations_of("bob").await.expect("conversations");
        assert_eq!(bob[0].unread, 2, "bob read seq 1 of 3");
    }

    pub async fn users_are_known_after_their_first_sign_in(ctx: Ctx) {
        let store = ctx.open().await;
        assert!(!store.user_exists("zoe").await.expect("lookup"));
        store.ensure_user("zoe").await.expect("first sign-in");
        store.ensure_user("zoe").await.expect("second sign-in is a no-op");
        assert!(store.user_exists("zoe").await.expect("lookup"));
        assert!(!store.user_exists("zo").await.expect("lookup"));
        assert!(matches!(store.ensure_user("").await, Err(StoreError::InvalidInput(_))));
    }

    /// The attack of issue #10: a guessed group name no longer lets an outsider in, and nothing
    /// of the group (history, members) is readable without membership.
    pub async fn new_groups_are_invite_only_and_only_members_read_or_list_them(ctx: Ctx) {
        let store = ctx.open().await;
        for uid in ["alice", "bob", "mallory"] {
            store.ensure_user(uid).await.expect("sign in");
        }
        store
            .create_group("team", "alice", &NewGroup::default())
            .await
            .expect("create");
        ok(append_one(&store, gm("alice", "team", "secret")).await);
        assert!(matches!(
            store.join_group("team", "mallory").await,
            Err(StoreError::NotInvited { uid, group }) if uid == "mallory" && group == "team"
        ));
        let team = group_conversation_id("team");
        assert!(matches!(
            store.history("mallory", &team, None, 10).await,
            Err(StoreError::NotMember { .. })
        ));
        assert!(matches!(
            store.group_members("team", "mallory", None, 10).await,
            Err(StoreError::NotMember { .. })
        ));
        assert!(matches!(
            store.group_info("team", "mallory").await,
            Err(StoreError::NotMember { .. })
        ));
        let cursors = HashMap::from([(team.clone(), 0)]);
        assert!(
            store
                .sync("mallory", &cursors, 100)
                .await
                .expect("sync")
                .messages
                .is_empty()
        );

        assert_eq!(
            store.invite("team", "alice", "bob").await.expect("invite"),
            InviteOutcome::Invited
        );
        assert_eq!(
            store.invite("team", "alice", "bob").await.expect("invite again"),
            InviteOutcome::AlreadyInvited
        );
        let invitations = store.invitations_of("bob").await.expect("invitations");
        assert_eq!(
            invitations
                .iter()
                .map(|i| (i.group.as_str(), i.by.as_str()))
                .collect::<Vec<_>>(),
            vec![("team", "alice")]
        );
        assert_eq!(
            store.join_group("team", "bob").await.expect("join"),
            JoinOutcome::Joined
        );
        assert!(
            store.invitations_of("bob").await.expect("invitations").is_empty(),
            "a join uses the invitation up"
        );
        assert_eq!(
            store.invite("team", "alice", "bob").await.expect("invite a member"),
            InviteOutcome::AlreadyMember
        );
        let info = store.group_info("team", "bob").await.expect("info");
        assert_eq!(
            (
                info.owner.as_str(),
                info.access,
                info.history,
                info.member_count,
                info.role
            ),
            ("alice", Access::Invite, HistoryVisibility::Joined, 2, Role::Member)
        );
        assert!(matches!(
            store.invite("team", "alice", "nobody").await,
            Err(StoreError::UnknownUser(uid)) if uid == "nobody"
        ));
        // A declined invitation is gone; the owner itself may always come back.
        store.invite("team", "alice", "mallory").await.expect("invite");
        assert!(store.decline_invitation("team", "mallory").await.expect("decline"));
        assert!(matches!(
            store.join_group("team", "mallory").await,
            Err(StoreError::NotInvited { .. })
        ));
        store.leave_group("team", "alice").await.expect("owner leaves");
        assert_eq!(
            store.join_group("team", "alice").await.expect("owner returns"),
            JoinOutcome::Joined
        );
    }

    pub async fn owners_and_admins_manage_a_group_and_members_do_not(ctx: Ctx) {
        let store = ctx.open().await;
        for uid in ["olga", "ada", "max", "zed"] {
            store.ensure_user(uid).await.expect("sign in");
        }
        store
            .create_group("crew", "olga", &NewGroup::default())
            .await
            .expect("create");
        for uid in ["ada", "max"] {
            store.invite("crew", "olga", uid).await.expect("invite");
            store.join_group("crew", uid).await.expect("join");
        }
        let forbidden = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Forbidden { .. }));
        assert!(matches!(
            store.invite("crew", "max", "zed").await,
            Err(StoreError::Forbidden { .. })
        ));
        assert!(forbidden(store.kick("crew", "max", "ada").await));
        assert!(forbidden(store.set_admin("crew", "ada", "max", true).await));
        store.set_admin("crew", "olga", "ada", true).await.expect("promote");
        let page = store.group_members("crew", "max", None, 10).await.expect("members");
        let roles: Vec<(&str, Role)> = page.members.iter().map(|m| (m.uid.as_str(), m.role)).collect();
        assert_eq!(
            roles,
            vec![("ada", Role::Admin), ("max", Role::Member), ("olga", Role::Owner)]
        );
        // An admin invites, changes settings, kicks members, but never the owner or an admin.
        store.invite("crew", "ada", "zed").await.expect("admin invites");
        let info = store
            .update_group(
                "crew",
                "ada",
                &GroupUpdate {
                    name: Some("The crew".into()),
                    access: Some(Access::Open),
                    history: None,
                },
            )
            .await
            .expect("admin updates");
        assert_eq!(
            (info.name.as_deref(), info.access, info.role),
            (Some("The crew"), Access::Open, Role::Admin)
        );
        assert!(matches!(
            store.update_group("crew", "max", &GroupUpdate::default()).await,
            Err(StoreError::Forbidden { .. })
        ));
        assert!(forbidden(store.kick("crew", "ada", "olga").await));
        assert!(forbidden(store.ban("crew", "ada", "olga").await));
        assert!(forbidden(store.set_admin("crew", "olga", "olga", false).await));
        store.set_admin("crew", "olga", "max", true).await.expect("promote max");
        assert!(
            forbidden(store.kick("crew", "ada", "max").await),
            "admins do not remove admins"
        );
        store.set_admin("crew", "olga", "max", false).await.expect("demote max");
        store.kick("crew", "ada", "max").await.expect("admin kicks a member");
        assert!(matches!(
            store.kick("crew", "ada", "max").await,
            Err(StoreError::NotMember { uid, .. }) if uid == "max"
        ));
        assert!(matches!(
            store.set_admin("crew", "olga", "max", true).await,
            Err(StoreError::NotMember { .. })
        ));
        assert!(matches!(
            store.kick("nope", "olga", "max").await,
            Err(StoreError::UnknownGroup(_))
        ));
    }

    /// With `joined` history (the default) a newcomer reads only what was sent after it joined,
    /// through history and sync alike; switching the group to `shared` shows it everything.
    pub async fn joined_history_hides_what_came_before_a_join(ctx: Ctx) {
        let store = ctx.open().await;
        for uid in ["alice", "carol"] {
            store.ensure_user(uid).await.expect("sign in");
        }
        store
            .create_group("g", "alice", &NewGroup::default())
            .await
            .expect("create");
        for cid in ["m1", "m2"] {
            ok(append_one(&store, gm("alice", "g", cid)).await);
        }
        store.invite("g", "alice", "carol").await.expect("invite");
        store.join_group("g", "carol").await.expect("join");
        ok(append_one(&store, gm("alice", "g", "m3")).await);
        let g = group_conversation_id("g");
        let cids = |page: Vec<gatehouse_store::StoredMessage>| page.into_iter().map(|m| m.cid).collect::<Vec<_>>();
        assert_eq!(
            cids(store.history("carol", &g, None, 10).await.expect("history")),
            vec!["m3"]
        );
        assert_eq!(
            cids(store.history("carol", &g, Some(3), 10).await.expect("older")),
            Vec::<String>::new()
        );
        let synced = store.sync("carol", &HashMap::new(), 100).await.expect("sync");
        assert_eq!(cids(synced.messages), vec!["m3"]);
        assert!(!synced.more);
        assert_eq!(
            cids(store.history("alice", &g, None, 10).await.expect("history")),
            vec!["m1", "m2", "m3"],
            "the creator joined at 0"
        );
        let list = store.conversations_of("carol").await.expect("list");
        assert_eq!((list[0].last_seq, list[0].unread), (3, 1));

        store
            .update_group(
                "g",
                "alice",
                &GroupUpdate {
                    history: Some(HistoryVisibility::Shared),
                    ..GroupUpdate::default()
                },
            )
            .await
            .expect("share history");
        assert_eq!(
            cids(store.history("carol", &g, None, 10).await.expect("history")),
            vec!["m1", "m2", "m3"]
        );
        let synced = store.sync("carol", &HashMap::new(), 100).await.expect("sync");
        assert_eq!(cids(synced.messages), vec!["m1", "m2", "m3"]);
    }

    /// Removal takes effect in the store at once: the removed member's next read finds nothing,
    /// and a banned user cannot come back through an open group or an invitation.
    pub async fn kicked_and_banned_members_read_nothing_more_and_banned_ones_cannot_return(ctx: Ctx) {
        let store = ctx.open().await;
        for uid in ["alice", "bob", "carl"] {
            store.ensure_user(uid).await.expect("sign in");
        }
        store
            .create_group("g", "alice", &open_shared(None))
            .await
            .expect("create");
        let g = group_conversation_id("g");
        store.join_group("g", "bob").await.expect("join");
        ok(append_one(&store, gm("alice", "g", "seen")).await);
        assert_eq!(store.history("bob", &g, None, 10).await.expect("history").len(), 1);
        store.kick("g", "alice", "bob").await.expect("kick");
        assert!(matches!(
            store.history("bob", &g, None, 10).await,
            Err(StoreError::NotMember { .. })
        ));
        let cursors = HashMap::from([(g.clone(), 0)]);
        assert!(store.sync("bob", &cursors, 10).await.expect("sync").messages.is_empty());
        assert!(matches!(
            append_one(&store, gm("bob", "g", "after kick")).await,
            Err(StoreError::NotMember { .. })
        ));
        store
            .join_group("g", "bob")
            .await
            .expect("a kicked member may rejoin an open group");

        store.ban("g", "alice", "bob").await.expect("ban");
        store.ban("g", "alice", "bob").await.expect("ban is idempotent");
        store.ban("g", "alice", "carl").await.expect("ban a non-member");
        assert!(!store.is_member(&g, "bob").await.expect("is_member"));
        assert!(matches!(
            store.history("bob", &g, None, 10).await,
            Err(StoreError::NotMember { .. })
        ));
        assert!(matches!(
            store.join_group("g", "bob").await,
            Err(StoreError::Banned { .. })
        ));
        assert!(matches!(
            store.invite("g", "alice", "carl").await,
            Err(StoreError::Banned { .. })
        ));
        assert!(store.unban("g", "alice", "bob").await.expect("unban"));
        assert!(!store.unban("g", "alice", "bob").await.expect("unban twice"));
        store.join_group("g", "bob").await.expect("an unbanned user may join");
    }

    pub async fn blocks_refuse_direct_messages_and_invitations_per_item(ctx: Ctx) {
        let store = ctx.open().await;
        for uid in ["bob", "eve", "ann"] {
            store.ensure_user(uid).await.expect("sign in");
        }
        ok(append_one(&store, dm("eve", "bob", "before")).await);
        assert!(store.block("bob", "eve").await.expect("block"));
        assert!(!store.block("bob", "eve").await.expect("block twice"));
        assert_eq!(
            store.blocks_of("bob", None, 10).await.expect("blocks"),
            (vec!["eve".to_owned()], false)
        );
        let results = store
            .append(vec![
                dm("eve", "bob", "x1"),
                dm("ann", "bob", "x2"),
                dm("bob", "eve", "x3"),
                dm("eve", "bob", "before"),
            ])
            .await;
        assert!(matches!(&results[0], Err(StoreError::Blocked { uid, by }) if uid == "eve" && by == "bob"));
        assert!(results[1].is_ok(), "others still reach bob");
        assert!(results[2].is_ok(), "a block is one-way");
        assert!(
            ok(results[3].clone()).duplicate,
            "a resend of a message stored before the block is answered"
        );
        let eb = direct_conversation_id("bob", "eve");
        assert_contiguous(&store, "bob", &eb, 2).await;

        store
            .create_group("eves", "eve", &NewGroup::default())
            .await
            .expect("create");
        assert!(matches!(
            store.invite("eves", "eve", "bob").await,
            Err(StoreError::Blocked { .. })
        ));
        assert!(matches!(
            store.block("bob", "bob").await,
            Err(StoreError::InvalidInput(_))
        ));
        assert!(matches!(
            store.block("bob", "ghost").await,
            Err(StoreError::UnknownUser(_))
        ));
        assert!(store.unblock("bob", "eve").await.expect("unblock"));
        ok(append_one(&store, dm("eve", "bob", "x1")).await);
        store.invite("eves", "eve", "bob").await.expect("invite after unblock");
    }

    pub async fn every_cap_is_refused_with_its_typed_error(ctx: Ctx) {
        let store = ctx.open().await.with_limits(StoreLimits {
            members_per_group: 3,
            groups_per_user: 2,
            invitations_per_group: 2,
            invitations_per_user: 1,
            bans_per_group: 1,
            blocks_per_user: 1,
        });
        for uid in ["o", "a", "b", "c", "d"] {
            store.ensure_user(uid).await.expect("sign in");
        }
        let cap = |r: Result<(), StoreError>, expected: Limit, max: u32| match r {
            Err(StoreError::LimitExceeded { limit, max: m }) => assert_eq!((limit, m), (expected, max)),
            other => panic!("expected {expected}, got {other:?}"),
        };
        store.create_group("g1", "o", &open_shared(None)).await.expect("create");
        store
            .create_group("g2", "o", &NewGroup::default())
            .await
            .expect("create");
        cap(
            store.create_group("g3", "o", &NewGroup::default()).await,
            Limit::GroupsPerUser,
            2,
        );
        assert!(
            !store.group_exists("g3").await.expect("exists"),
            "a refused create leaves nothing"
        );
        store.join_group("g1", "a").await.expect("join");
        store.join_group("g1", "b").await.expect("join");
        cap(store.join_group("g1", "c").await.map(drop), Limit::MembersPerGroup, 3);
        store.invite("g2", "o", "a").await.expect("invite");
        store.invite("g2", "o", "b").await.expect("invite");
        cap(
            store.invite("g2", "o", "c").await.map(drop),
            Limit::InvitationsPerGroup,
            2,
        );
        store.leave_group("g1", "b").await.expect("leave");
        store
            .create_group("h", "b", &NewGroup::default())
            .await
            .expect("create");
        cap(
            store.invite("h", "b", "a").await.map(drop),
            Limit::InvitationsPerUser,
            1,
        );
        store.ban("g1", "o", "c").await.expect("ban");
        cap(store.ban("g1", "o", "d").await, Limit::BansPerGroup, 1);
        store.block("d", "o").await.expect("block");
        cap(store.block("d", "a").await.map(drop), Limit::BlocksPerUser, 1);
        // a is in g1 and invited to g2: joining it makes two groups, and a third is refused.
        store.join_group("g2", "a").await.expect("join");
        store.create_group("g4", "c", &open_shared(None)).await.expect("create");
        cap(store.join_group("g4", "a").await.map(drop), Limit::GroupsPerUser, 2);
    }

    /// Caps hold under concurrency: joins racing for the last places of a group, and one user
    /// joining many groups at once, never end above the cap (the group's lock, then the user's).
    pub async fn concurrent_joins_never_exceed_a_cap(ctx: Ctx) {
        let s1 = ctx.open().await.with_limits(StoreLimits {
            members_per_group: 4,
            groups_per_user: 3,
            ..StoreLimits::default()
        });
        let s2 = ctx.open().await.with_limits(s1.limits());
        let users: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
        for uid in users.iter().chain([&"owner".to_owned()]) {
            s1.ensure_user(uid).await.expect("sign in");
        }
        s1.create_group("hot", "owner", &open_shared(None))
            .await
            .expect("create");
        let joins = futures_util::future::join_all(users.iter().enumerate().map(|(i, uid)| {
            let store = if i % 2 == 0 { s1.clone() } else { s2.clone() };
            async move { store.join_group("hot", uid).await }
        }))
        .await;
        let joined = joins.iter().filter(|r| r.is_ok()).count();
        assert_eq!(joined, 3, "4 places, the owner holds one: {joins:?}");
        assert!(joins.iter().all(|r| r.is_ok()
            || matches!(
                r,
                Err(StoreError::LimitExceeded {
                    limit: Limit::MembersPerGroup,
                    ..
                })
            )));
        assert_eq!(members_of(&s1, "hot", "owner").await.len(), 4);

        for i in 0..8 {
            s1.create_group(&format!("o{i}"), "owner", &open_shared(None))
                .await
                .map(drop)
                .or_else(|e| match e {
                    StoreError::LimitExceeded { .. } => Ok(()),
                    other => Err(other),
                })
                .expect("create");
        }
        // The owner holds 3 groups (the cap), so make groups of another user for u9 to join.
        let s_big = ctx.open().await;
        for i in 0..8 {
            s_big
                .create_group(&format!("open{i}"), &format!("host{i}"), &open_shared(None))
                .await
                .expect("create");
        }
        let joins = futures_util::future::join_all((0..8).map(|i| {
            let store = if i % 2 == 0 { s1.clone() } else { s2.clone() };
            async move { store.join_group(&format!("open{i}"), "u9").await }
        }))
        .await;
        let joined = joins.iter().filter(|r| r.is_ok()).count();
        let already = usize::from(s1.is_member(&group_conversation_id("hot"), "u9").await.expect("member"));
        assert_eq!(joined + already, 3, "u9 ends in exactly 3 groups: {joins:?}");
        assert_eq!(s1.groups_of("u9").await.expect("groups").len(), 3);
    }

    /// A database created before the access model keeps working: groups become invite-only,
    /// owned by their creator, with shared history, and their members keep every message.
    pub async fn existing_groups_migrate_to_invite_only_with_shared_history(ctx: Ctx) {
        // The schema as it was: the migrations before the access model, applied from a copy.
        let backend_dir = match ctx.kind {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
            Kind::MySql => "mysql",
        };
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend_dir);
        let old = tempfile::tempdir().expect("tempdir");
        let mut copied = 0;
        for entry in std::fs::read_dir(&source).expect("migrations") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if !name.contains("group_access") && name.ends_with(".sql") {
                std::fs::copy(&path, old.path().join(&name)).expect("copy migration");
                copied += 1;
            }
        }
        assert!(copied >= 1, "the pre-access-model migrations were found");
        let migrator = sqlx::migrate::Migrator::new(old.path()).await.expect("old migrations");
        match ctx.kind {
            Kind::Sqlite => {
                let options: sqlx::sqlite::SqliteConnectOptions = ctx.url.parse().expect("sqlite url");
                let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
                    .await
                    .expect("connect");
                migrator.run(&pool).await.expect("old schema");
                pool.close().await;
            }
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&ctx.url).await.expect("connect");
                migrator.run(&pool).await.expect("old schema");
                pool.close().await;
            }
            Kind::MySql => {
                let pool = sqlx::MySqlPool::connect(&ctx.url).await.expect("connect");
                migrator.run(&pool).await.expect("old schema");
                pool.close().await;
            }
        }
        let mut raw = ctx.raw().await;
        raw.exec(
            "INSERT INTO users (uid, first_seen_ms) VALUES ('ann', 0), ('ben', 0), ('sly', 0); \
             INSERT INTO conversations (id, kind, name, created_by, created_at_ms, last_seq) \
             VALUES ('g:old', 'group', 'Old', 'ann', 0, 2); \
             INSERT INTO members (conversation_id, uid, joined_at_ms, read_seq) \
             VALUES ('g:old', 'ann', 0, 2), ('g:old', 'ben', 0, 0); \
             INSERT INTO messages (conversation_id, seq, sender, cid, text, ts_ms) \
             VALUES ('g:old', 1, 'ann', 'o1', 'first', 0), ('g:old', 2, 'ben', 'o2', 'second', 0)",
        )
        .await;

        let store = ctx.open().await;
        let info = store.group_info("old", "ben").await.expect("info");
        assert_eq!(
            (
                info.owner.as_str(),
                info.access,
                info.history,
                info.role,
                info.member_count
            ),
            ("ann", Access::Invite, HistoryVisibility::Shared, Role::Member, 2)
        );
        assert_eq!(store.group_info("old", "ann").await.expect("info").role, Role::Owner);
        let g = group_conversation_id("old");
        assert_eq!(store.history("ben", &g, None, 10).await.expect("history").len(), 2);
        assert!(matches!(
            store.join_group("old", "sly").await,
            Err(StoreError::NotInvited { .. })
        ));
        store.invite("old", "ann", "sly").await.expect("the owner invites");
        store.join_group("old", "sly").await.expect("join");
        assert_eq!(
            store.history("sly", &g, None, 10).await.expect("history").len(),
            2,
            "shared history: a newcomer reads it all"
        );
    }

    /// Sync and history pages stop where the caller's budget says, continue from their cursor
    /// without a gap or a repeat, and conversation lists and block lists page by id.
    pub async fn pages_end_where_the_callers_budget_says(ctx: Ctx) {
        let store = ctx.open().await;
        let big = |i: usize| NewMessage {
            text: format!("{i:02}{}", "x".repeat(998)),
            ..dm("eve", "bob", &format!("b{i}"))
        };
        store
            .append((0..10).map(big).collect())
            .await
            .into_iter()
            .for_each(|r| {
                ok(r);
            });
        ok(append_one(&store, dm("ann", "bob", "a1")).await);
        // A budget of 3,000 text bytes: three 1,000-byte messages per page.
        let budget = || {
            let mut left = 3_000usize;
            move |m: &gatehouse_store::StoredMessage| {
                let fits = m.text.len() <= left;
                left = left.saturating_sub(m.text.len());
                fits
            }
        };
        let mut cursors: HashMap<String, i64> = HashMap::new();
        let mut pages = Vec::new();
        loop {
            let page = store
                .sync_within("bob", &cursors, 1000, &mut budget())
                .await
                .expect("sync");
            for m in &page.messages {
                let cursor = cursors.entry(m.conversation.clone()).or_insert(0);
                assert_eq!(m.seq, *cursor + 1, "no gap, no repeat");
                *cursor = m.seq;
            }
            pages.push(page.messages.iter().map(|m| m.cid.clone()).collect::<Vec<_>>());
            if !page.more {
                break;
            }
            assert!(pages.len() < 20, "sync terminates");
        }
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 3, 3, 2], "d:ann:bob (a1) then d:bob:eve, three per page");
        assert_eq!(pages[0][0], "a1");

        let eb = direct_conversation_id("bob", "eve");
        let newest = store
            .history_page("bob", &eb, None, 50, &mut budget())
            .await
            .expect("history");
        let seqs: Vec<i64> = newest.messages.iter().map(|m| m.seq).collect();
        assert_eq!(
            (seqs, newest.more),
            (vec![8, 9, 10], true),
            "the newest that fit, ascending"
        );
        let oldest = store
            .history_page("bob", &eb, Some(2), 50, &mut budget())
            .await
            .expect("history");
        assert_eq!((oldest.messages.len(), oldest.more), (1, false));
        let counted = store
            .history_page("bob", &eb, None, 4, &mut |_| true)
            .await
            .expect("history");
        assert_eq!(
            (counted.messages.len(), counted.more),
            (4, true),
            "the count still bounds a page"
        );

        for peer in ["cat", "dan", "fay"] {
            ok(append_one(&store, dm(peer, "bob", "hi")).await);
        }
        let first = store.conversations_page("bob", None, 2).await.expect("page");
        let ids: Vec<&str> = first.conversations.iter().map(|c| c.id.as_str()).collect();
        assert_eq!((ids, first.more), (vec!["d:ann:bob", "d:bob:cat"], true));
        let rest = store
            .conversations_page("bob", Some("d:bob:cat"), 10)
            .await
            .expect("page");
        let ids: Vec<&str> = rest.conversations.iter().map(|c| c.id.as_str()).collect();
        assert_eq!((ids, rest.more), (vec!["d:bob:dan", "d:bob:eve", "d:bob:fay"], false));
        assert_eq!(store.conversations_of("bob").await.expect("all").len(), 5);

        for blocked in ["cat", "dan", "fay"] {
            store.ensure_user(blocked).await.expect("sign in");
            store.block("bob", blocked).await.expect("block");
        }
        assert_eq!(
            store.blocks_of("bob", None, 2).await.expect("blocks"),
            (vec!["cat".to_owned(), "dan".to_owned()], true)
        );
        assert_eq!(
            store.blocks_of("bob", Some("dan"), 2).await.expect("blocks"),
            (vec!["fay".to_owned()], false)
        );
    }

    pub async fn contacts_are_direct_peers_then_fellow_group_members(ctx: Ctx) {
        let store = ctx.open().await;
        ok(append_one(&store, dm("zed", "ann", "1")).await);
        ok(append_one(&store, dm("ann", "bob", "2")).await);
        ok(append_one(&store, dm("ann", "bob", "3")).await);
        ok(append_one(&store, dm("eve", "mal", "4")).await);
        store
            .create_group("g", "ann", &open_shared(None))
            .await
            .expect("create");
        for uid in ["bob", "cat", "dan"] {
            store.join_group("g", uid).await.expect("join");
        }
        assert_eq!(
            store.contacts_of("ann", 100).await.expect("contacts"),
            vec!["bob", "zed", "cat", "dan"],
            "direct peers in conversation order, then group members, each once"
        );
        assert_eq!(store.contacts_of("ann", 2).await.expect("contacts"), vec!["bob", "zed"]);
        assert_eq!(store.contacts_of("mal", 100).await.expect("contacts"), vec!["eve"]);
        assert!(store.contacts_of("nobody", 100).await.expect("contacts").is_empty());
    }

    pub async fn uids_with_colons_and_invalid_input(ctx: Ctx) {
        let store = ctx.open().await;
        let x = ok(append_one(&store, dm("a", "b:c", "1")).await);
        let y = ok(append_one(&store, dm("a:b", "c", "1")).await);
        assert_ne!(x.message.conversation, y.message.conversation);
        assert_eq!(x.message.to.as_deref(), Some("b:c"));
        assert_eq!(y.message.to.as_deref(), Some("c"));
        assert_eq!(x.message.seq, 1);
        assert_eq!(y.message.seq, 1);
        let list = store.conversations_of("b:c").await.expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].peer_or_group, "a");
        assert_eq!(list[0].unread, 1);
        let to_self = ok(append_one(&store, dm("me", "me", "note")).await);
        assert_eq!(to_self.message.to.as_deref(), Some("me"));
        assert_eq!(store.conversations_of("me").await.expect("list")[0].unread, 0);

        let results = store
            .append(vec![
                dm("", "b", "1"),
                dm("a", "", "2"),
                dm("a", "b", ""),
                gm("a", "", "3"),
                NewMessage {
                    text: "nul \0 byte".into(),
                    ..dm("a", "b", "4")
                },
                dm("a", "b", "fine"),
            ])
            .await;
        for result in &results[..5] {
            assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{result:?}");
        }
        assert_eq!(ok(results[5].clone()).message.seq, 1);
        assert!(store.append(Vec::new()).await.is_empty());

        // The longest identifiers are stored on every backend, in 4-byte characters and in the
        // characters a direct conversation id escapes to three; one character more is refused.
        let long = "\u{1F600}".repeat(gatehouse_store::MAX_IDENT_CHARS);
        let escaped = "%:".repeat(gatehouse_store::MAX_IDENT_CHARS / 2);
        let stored = ok(append_one(&store, dm(&long, &escaped, &long)).await);
        assert_eq!(
            (stored.message.sender.as_str(), stored.message.cid.as_str()),
            (long.as_str(), long.as_str())
        );
        assert_eq!(
            store.conversations_of(&escaped).await.expect("list")[0].peer_or_group,
            long
        );
        let over = format!("{long}x");
        let results = store
            .append(vec![dm(&over, "b", "5"), dm("a", &over, "6"), dm("a", "b", &over)])
            .await;
        for result in &results {
            assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{result:?}");
        }
        assert!(matches!(
            store.create_group(&over, "a", &NewGroup::default()).await,
            Err(StoreError::InvalidInput(_))
        ));
        assert!(matches!(
            store.create_group("", "a", &NewGroup::default()).await,
            Err(StoreError::InvalidInput(_))
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// URL handling (SQLite only: it needs no server)
// ---------------------------------------------------------------------------------------------

mod open {
    use super::*;

    #[tokio::test]
    async fn sqlite_urls_and_plain_paths_open_the_same_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.db");
        let plain = Store::open(path.to_str().expect("utf-8 path"))
            .await
            .expect("plain path");
        ok(append_one(&plain, dm("a", "b", "1")).await);
        plain.close().await;
        for url in [
            format!("sqlite://{}", path.display()),
            format!("sqlite:{}", path.display()),
        ] {
            let store = Store::open(&url).await.expect("sqlite url");
            assert_eq!(store.backend(), gatehouse_store::BackendKind::Sqlite);
            let again = ok(append_one(&store, dm("a", "b", "1")).await);
            assert!(again.duplicate, "{url} opened the same database");
            store.close().await;
        }
    }

    #[tokio::test]
    async fn in_memory_database_works() {
        let store = Store::open("sqlite::memory:").await.expect("memory");
        for i in 0..3 {
            ok(append_one(&store, dm("a", "b", &format!("{i}"))).await);
        }
        let history = store
            .history("a", &direct_conversation_id("a", "b"), None, 10)
            .await
            .expect("history");
        assert_eq!(history.len(), 3);
    }

    #[tokio::test]
    async fn unsupported_schemes_are_rejected() {
        for url in ["mongodb://localhost/db", "", "http://x"] {
            assert!(
                matches!(Store::open(url).await, Err(StoreError::InvalidInput(_))),
                "{url}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput (opt-in, numbers only):
//   cargo test --release -p gatehouse-store --test conformance -- --ignored --nocapture
// ---------------------------------------------------------------------------------------------

mod throughput {
    use std::time::Instant;

    use super::*;

    /// Message `i` of a run: 100 senders writing to one hub, so 100 conversations.
    fn message(i: usize, tag: &str) -> NewMessage {
        dm(&format!("u{}", i % 100), "hub", &format!("{tag}{i}"))
    }

    async fn measure(ctx: Ctx) {
        let store = ctx.open().await;

        let singles = 2_000;
        let started = Instant::now();
        for i in 0..singles {
            ok(append_one(&store, message(i, "s")).await);
        }
        let single_rate = singles as f64 / started.elapsed().as_secs_f64();

        let mut rates = Vec::new();
        for batch in [100usize, 1_000] {
            let total = 50_000;
            let tag = format!("b{batch}-");
            let started = Instant::now();
            for chunk in (0..total).collect::<Vec<_>>().chunks(batch) {
                for result in store.append(chunk.iter().map(|&i| message(i, &tag)).collect()).await {
                    ok(result);
                }
            }
            rates.push((batch, total as f64 / started.elapsed().as_secs_f64()));
        }

        let committer = GroupCommitter::spawn(store.clone(), GroupCommitConfig::default())
            .await
            .expect("start the group committer");
        let total = 50_000;
        let producers = 1_000;
        let started = Instant::now();
        let tasks: Vec<_> = (0..producers)
            .map(|p| {
                let committer = committer.clone();
                tokio::spawn(async move {
                    for i in (p..total).step_by(producers) {
                        ok(committer.append(message(i, "c")).await);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("producer");
        }
        let committer_rate = total as f64 / started.elapsed().as_secs_f64();
        eprintln!(
            "{:?}: 1/commit {single_rate:.0} msg/s; {}; group commit ({producers} producers) \
             {committer_rate:.0} msg/s in {} transactions",
            ctx.kind,
            rates
                .iter()
                .map(|(b, r)| format!("{b}/commit {r:.0} msg/s"))
                .collect::<Vec<_>>()
                .join("; "),
            committer.batches_committed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, run in release mode"]
    async fn sqlite_append_rates() {
        run_case(Kind::Sqlite, measure).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, run in release mode"]
    async fn postgres_append_rates() {
        run_case(Kind::Postgres, measure).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, run in release mode"]
    async fn mysql_append_rates() {
        run_case(Kind::MySql, measure).await;
    }
}
