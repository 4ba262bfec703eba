//! Changes of stored messages (edits, deletes, reactions) as events of the conversation's
//! sequence, reply targets, and the receipt markers (read, delivered).
//!
//! A change is one write transaction: the conversation's lock (as appends and membership
//! changes take it), the user's standing and the target message read under it, the rules
//! applied, then the counter bump, the event row, the target's new state and the author's read
//! marker written together. So a change gets the next `seq` exactly like a message and is
//! never seen without the state it produced (or the other way round). Changes are rare next to
//! messages, so they do not go through the group commit.

use std::collections::{BTreeMap, HashMap};

use crate::access::check_cap;
use crate::error::{Limit, StoreError};
use crate::ids::{check_ident, check_text};
use crate::markers::{Marker, MarkerBatch, MarkerMove, MarkerRequest, marker_statements};
use crate::model::{EventKind, MessageRow, StoredMessage};
use crate::sql::{
    ADD_REACTION, APPLY_DELETE, APPLY_EDIT, AUTHOR_AT, BUMP, BY_KEY, CONTEXT, DELETE_REACTIONS, GO_OFFLINE, GO_ONLINE,
    INSERT_EVENT, REACTIONS_OF, READABLE_MESSAGE, REMOVE_REACTION, SET_REACTIONS, SET_READ, TARGET,
};
use crate::store::{Backend, Store, with_pool};

/// Most different emoji one message holds.
pub const MAX_REACTIONS_PER_MESSAGE: u32 = 20;
/// Most emoji one user puts on one message.
pub const MAX_REACTIONS_PER_USER: u32 = 10;

/// What a change does to its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeAction {
    /// Replace the text (own messages only, within `window_ms` of sending when given).
    Edit {
        /// The new text.
        text: String,
        /// The edit window in milliseconds; `None`: no limit.
        window_ms: Option<i64>,
    },
    /// Erase the text and keep a tombstone (own messages; in a group, the owner and admins
    /// delete any).
    Delete,
    /// Add (`add`) or remove one reaction of the user.
    React {
        /// The emoji.
        emoji: String,
        /// `true` adds, `false` removes.
        add: bool,
    },
}

/// A change requested by an authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChange {
    /// The conversation id (`d:…` or `g:…`).
    pub conversation: String,
    /// The user making the change (trusted).
    pub sender: String,
    /// The idempotency key, shared with messages: `(sender, cid)` names one event.
    pub cid: String,
    /// The id of the message changed.
    pub target: i64,
    /// What to do.
    pub action: ChangeAction,
    /// The server's receive time in milliseconds since the Unix epoch.
    pub ts_ms: i64,
}

/// The outcome of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The stored event; `None` when the change changed nothing (a reaction already there, or
    /// one that was not), so nothing was stored.
    pub event: Option<StoredMessage>,
    /// `true` when `(sender, cid)` named this very change already: nothing was written and
    /// `event` is the original.
    pub duplicate: bool,
    /// For a delete: whether an admin deleted another user's message.
    pub by_admin: bool,
}

/// The user's standing in a conversation and the target, read under the conversation's lock.
#[derive(Debug, sqlx::FromRow)]
struct ChangeContext {
    last_seq: i64,
    kind: String,
    owner: Option<String>,
    role: String,
    floor: i64,
}

/// The last-seen times among the uids of the JSON array `$1` (SQLite).
const LAST_SEEN_SQLITE: &str = "SELECT u.uid, u.last_seen_ms FROM json_each($1) AS k \
     JOIN users AS u ON u.uid = k.value WHERE u.last_seen_ms IS NOT NULL";

/// The last-seen times among the uids of the array `$1` (PostgreSQL).
const LAST_SEEN_POSTGRES: &str = "SELECT u.uid, u.last_seen_ms FROM UNNEST($1::text[]) AS k (uid) \
     JOIN users AS u ON u.uid = k.uid WHERE u.last_seen_ms IS NOT NULL";

impl ChangeAction {
    fn kind(&self) -> EventKind {
        match self {
            ChangeAction::Edit { .. } => EventKind::Edit,
            ChangeAction::Delete => EventKind::Delete,
            ChangeAction::React { add: true, .. } => EventKind::ReactionAdd,
            ChangeAction::React { add: false, .. } => EventKind::ReactionRemove,
        }
    }

    /// The event row's text: the new text of an edit, the emoji of a reaction.
    fn text(&self) -> &str {
        match self {
            ChangeAction::Edit { text, .. } => text,
            ChangeAction::Delete => "",
            ChangeAction::React { emoji, .. } => emoji,
        }
    }
}

/// Whether the stored event `row` is the same change as `change` (a resend).
fn same_change(row: &MessageRow, change: &NewChange) -> bool {
    row.conversation_id == change.conversation
        && row.kind.as_deref() == Some(change.action.kind().as_str())
        && row.target == Some(change.target)
        && row.text == change.action.text()
}

/// Applies `uid` adding or removing `emoji` to the reactions `rows` (`(uid, emoji)`), checking
/// the caps; returns `None` when nothing changes, else the aggregate to store (emoji → count,
/// `None` when empty).
fn react(rows: &[(String, String)], uid: &str, emoji: &str, add: bool) -> Result<Option<Option<String>>, StoreError> {
    let present = rows.iter().any(|(u, e)| u == uid && e == emoji);
    if present == add {
        return Ok(None);
    }
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, e) in rows {
        *counts.entry(e.as_str()).or_default() += 1;
    }
    if add {
        let mine = rows.iter().filter(|(u, _)| u == uid).count();
        check_cap(Limit::ReactionsPerUser, mine as i64, MAX_REACTIONS_PER_USER)?;
        if !counts.contains_key(emoji) {
            check_cap(
                Limit::ReactionsPerMessage,
                counts.len() as i64,
                MAX_REACTIONS_PER_MESSAGE,
            )?;
        }
        *counts.entry(emoji).or_default() += 1;
    } else if let Some(count) = counts.get_mut(emoji) {
        *count -= 1;
        if *count == 0 {
            counts.remove(emoji);
        }
    }
    if counts.is_empty() {
        return Ok(Some(None));
    }
    let aggregate = serde_json::to_string(&counts).map_err(|e| StoreError::Invariant(e.to_string()))?;
    Ok(Some(Some(aggregate)))
}

impl Store {
    /// Records that `uid` came online; returns `true` when it was offline (the caller
    /// announces it), `false` when another worker did already or it never went offline.
    pub async fn go_online(&self, uid: &str) -> Result<bool, StoreError> {
        check_ident("uid", uid)?;
        let changed = with_pool!(self, writer, |pool, dialect| {
            sqlx::query(dialect.sql(GO_ONLINE))
                .bind(uid)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Records that `uid`'s last device left at `at_ms`; returns `true` when it was online
    /// (the caller announces it), `false` when another worker did already.
    pub async fn go_offline(&self, uid: &str, at_ms: i64) -> Result<bool, StoreError> {
        check_ident("uid", uid)?;
        let changed = with_pool!(self, writer, |pool, dialect| {
            sqlx::query(dialect.sql(GO_OFFLINE))
                .bind(at_ms)
                .bind(uid)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Returns the last-seen times known among `uids` (at most [`crate::MAX_PAGE`] looked at).
    pub async fn last_seen(&self, uids: &[String]) -> Result<HashMap<String, i64>, StoreError> {
        let uids = &uids[..uids.len().min(crate::MAX_PAGE as usize)];
        let rows: Vec<(String, i64)> = match &*self.inner {
            Backend::Sqlite(backend) => {
                let list = serde_json::to_string(uids).map_err(|e| StoreError::Invariant(e.to_string()))?;
                sqlx::query_as(LAST_SEEN_SQLITE)
                    .bind(list)
                    .fetch_all(backend.reader())
                    .await?
            }
            Backend::Postgres(backend) => {
                sqlx::query_as(LAST_SEEN_POSTGRES)
                    .bind(uids)
                    .fetch_all(backend.reader())
                    .await?
            }
            Backend::MySql(backend) => {
                let list = serde_json::to_string(uids).map_err(|e| StoreError::Invariant(e.to_string()))?;
                sqlx::query_as(crate::mysql::LAST_SEEN)
                    .bind(list)
                    .fetch_all(backend.reader())
                    .await?
            }
        };
        Ok(rows.into_iter().collect())
    }

    /// Checks that `uid` may answer message `id` of `conversation_id`: a message (not an event)
    /// of that conversation that it may read. A reply to a message deleted later stays a reply.
    pub async fn reply_target(&self, uid: &str, conversation_id: &str, id: i64) -> Result<(), StoreError> {
        check_ident("uid", uid)?;
        let found: Option<i64> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_scalar(dialect.sql(READABLE_MESSAGE))
                .bind(conversation_id)
                .bind(uid)
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        found.map(drop).ok_or_else(|| StoreError::UnknownMessage {
            conversation: conversation_id.to_owned(),
            id,
        })
    }

    /// Applies a change (edit, delete, reaction) as a new event of the conversation.
    ///
    /// Fails with [`StoreError::NotMember`], [`StoreError::UnknownMessage`] (no such readable
    /// message), [`StoreError::Forbidden`] (another user's message; a delete by a group's owner
    /// or admin is allowed), [`StoreError::EditWindowClosed`], [`StoreError::MessageDeleted`],
    /// [`StoreError::LimitExceeded`] (reaction caps) or [`StoreError::CidConflict`].
    pub async fn change(&self, change: &NewChange) -> Result<Changed, StoreError> {
        check_ident("uid", &change.sender)?;
        check_ident("cid", &change.cid)?;
        check_text(change.action.text())?;
        let conversation = change.conversation.as_str();
        let uid = change.sender.as_str();
        with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            sqlx::query(dialect.lock_conversation)
                .bind(conversation)
                .execute(&mut *tx)
                .await?;
            let existing: Option<MessageRow> = sqlx::query_as(dialect.sql(BY_KEY))
                .bind(uid)
                .bind(&change.cid)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = existing {
                if !same_change(&row, change) {
                    return Err(StoreError::CidConflict {
                        sender: uid.to_owned(),
                        cid: change.cid.clone(),
                    });
                }
                let by_admin = change.action == ChangeAction::Delete && {
                    let target: Option<MessageRow> = sqlx::query_as(dialect.sql(TARGET))
                        .bind(change.target)
                        .bind(conversation)
                        .fetch_optional(&mut *tx)
                        .await?;
                    target.is_some_and(|t| t.sender != uid)
                };
                return Ok(Changed {
                    event: Some(row.into_stored()),
                    duplicate: true,
                    by_admin,
                });
            }
            let context: Option<ChangeContext> = sqlx::query_as(dialect.sql(CONTEXT))
                .bind(conversation)
                .bind(uid)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(context) = context else {
                return Err(StoreError::NotMember {
                    uid: uid.to_owned(),
                    conversation: conversation.to_owned(),
                });
            };
            let unknown = || StoreError::UnknownMessage {
                conversation: conversation.to_owned(),
                id: change.target,
            };
            let target: Option<MessageRow> = sqlx::query_as(dialect.sql(TARGET))
                .bind(change.target)
                .bind(conversation)
                .fetch_optional(&mut *tx)
                .await?;
            let target = target
                .filter(|t| t.kind.as_deref().unwrap_or("message") == "message" && t.seq > context.floor)
                .ok_or_else(unknown)?;
            if target.deleted.unwrap_or(0) != 0 {
                return Err(StoreError::MessageDeleted(target.id));
            }
            let forbidden = |action: &str| StoreError::Forbidden {
                uid: uid.to_owned(),
                group: conversation.to_owned(),
                action: format!("{action} message {} of {}", target.id, target.sender),
            };
            let own = target.sender == uid;
            let mut by_admin = false;
            let mut reactions = None;
            match &change.action {
                ChangeAction::Edit { window_ms, .. } => {
                    if !own {
                        return Err(forbidden("edit"));
                    }
                    if let Some(window) = *window_ms
                        && change.ts_ms - target.ts_ms > window
                    {
                        return Err(StoreError::EditWindowClosed {
                            id: target.id,
                            window_ms: window,
                        });
                    }
                }
                ChangeAction::Delete => {
                    let manager =
                        context.kind == "group" && (context.role == "admin" || context.owner.as_deref() == Some(uid));
                    if !own && !manager {
                        return Err(forbidden("delete"));
                    }
                    by_admin = !own;
                }
                ChangeAction::React { emoji, add } => {
                    let rows: Vec<(String, String)> = sqlx::query_as(dialect.sql(REACTIONS_OF))
                        .bind(target.id)
                        .fetch_all(&mut *tx)
                        .await?;
                    match react(&rows, uid, emoji, *add)? {
                        None => {
                            return Ok(Changed {
                                event: None,
                                duplicate: false,
                                by_admin: false,
                            });
                        }
                        Some(aggregate) => reactions = Some(aggregate),
                    }
                }
            }
            let seq = context.last_seq + 1;
            let kind = change.action.kind();
            sqlx::query(dialect.sql(BUMP))
                .bind(conversation)
                .execute(&mut *tx)
                .await?;
            let id: i64 = sqlx::query_scalar(dialect.sql(INSERT_EVENT))
                .bind(conversation)
                .bind(seq)
                .bind(uid)
                .bind(&change.cid)
                .bind(change.action.text())
                .bind(change.ts_ms)
                .bind(kind.as_str())
                .bind(target.id)
                .fetch_one(&mut *tx)
                .await?;
            // The author's read marker moves to its event: the new `last_seq`, so never back.
            sqlx::query(dialect.sql(SET_READ))
                .bind(seq)
                .bind(conversation)
                .bind(uid)
                .execute(&mut *tx)
                .await?;
            match &change.action {
                ChangeAction::Edit { text, .. } => {
                    sqlx::query(dialect.sql(APPLY_EDIT))
                        .bind(text)
                        .bind(change.ts_ms)
                        .bind(target.id)
                        .execute(&mut *tx)
                        .await?;
                }
                ChangeAction::Delete => {
                    sqlx::query(dialect.sql(APPLY_DELETE))
                        .bind(target.id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(dialect.sql(DELETE_REACTIONS))
                        .bind(target.id)
                        .execute(&mut *tx)
                        .await?;
                }
                ChangeAction::React { emoji, add } => {
                    let statement = if *add { ADD_REACTION } else { REMOVE_REACTION };
                    sqlx::query(dialect.sql(statement))
                        .bind(target.id)
                        .bind(uid)
                        .bind(emoji)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(dialect.sql(SET_REACTIONS))
                        .bind(reactions.flatten())
                        .bind(target.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            let mut row = MessageRow::plain(
                id,
                conversation.to_owned(),
                seq,
                uid.to_owned(),
                change.cid.clone(),
                change.action.text().to_owned(),
                change.ts_ms,
                None,
            );
            row.kind = Some(kind.as_str().to_owned());
            row.target = Some(target.id);
            Ok(Changed {
                event: Some(row.into_stored()),
                duplicate: false,
                by_admin,
            })
        })
    }

    /// Moves `uid`'s `marker` in `conversation_id` forward to `seq` (capped at the
    /// conversation's `last_seq`; never back) and says whether it moved and, if so, who wrote
    /// the event at the new marker. One transaction; receipts in bulk go through
    /// [`GroupCommitter::move_marker`](crate::GroupCommitter::move_marker), which batches them.
    pub async fn move_marker(
        &self,
        uid: &str,
        conversation_id: &str,
        seq: i64,
        marker: Marker,
    ) -> Result<MarkerMove, StoreError> {
        let request = MarkerRequest {
            uid: uid.to_owned(),
            conversation: conversation_id.to_owned(),
            seq,
            marker,
        };
        let mut results = self.move_markers(std::slice::from_ref(&request)).await?;
        results
            .pop()
            .unwrap_or_else(|| Err(StoreError::Invariant("no marker result".to_owned())))
    }

    /// Moves a batch of markers in one transaction (one commit, one fsync on SQLite) with a
    /// fixed number of statements whatever its size: one reads (and on PostgreSQL and MariaDB
    /// locks, in `(conversation, uid)` order) the markers of every member the batch names, the
    /// requests are applied in order in memory, and one writes back the pairs that moved.
    /// Receipts come at twice the rate of messages, so statements per marker would make them
    /// the group commit's main cost. Returns one result per request, in request order; a
    /// request of a non-member fails alone.
    pub(crate) async fn move_markers(
        &self,
        requests: &[MarkerRequest],
    ) -> Result<Vec<Result<MarkerMove, StoreError>>, StoreError> {
        let mut batch = MarkerBatch::new(requests)?;
        if batch.is_empty() {
            return Ok(batch.finish());
        }
        let (read_sql, write_sql) = match &*self.inner {
            Backend::Sqlite(_) => (crate::sqlite::MARKERS, crate::sqlite::SET_MARKERS),
            Backend::Postgres(_) => (crate::postgres::MARKERS, crate::postgres::SET_MARKERS),
            Backend::MySql(_) => (crate::mysql::MARKERS, crate::mysql::SET_MARKERS),
        };
        with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            marker_statements!(&mut *tx, &mut batch, read_sql, write_sql, dialect.sql(AUTHOR_AT));
            tx.commit().await?;
        });
        Ok(batch.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(u, e)| ((*u).to_owned(), (*e).to_owned())).collect()
    }

    #[test]
    fn reactions_aggregate_and_adding_twice_changes_nothing() {
        let existing = rows(&[("a", "👍"), ("b", "👍"), ("b", "🎉")]);
        assert_eq!(react(&existing, "a", "👍", true).unwrap(), None);
        assert_eq!(react(&existing, "c", "🎉", false).unwrap(), None);
        assert_eq!(
            react(&existing, "c", "👍", true).unwrap(),
            Some(Some(r#"{"🎉":1,"👍":3}"#.to_owned()))
        );
        assert_eq!(
            react(&existing, "b", "🎉", false).unwrap(),
            Some(Some(r#"{"👍":2}"#.to_owned()))
        );
        assert_eq!(react(&rows(&[("a", "x")]), "a", "x", false).unwrap(), Some(None));
    }

    #[test]
    fn reactions_are_capped_per_message_and_per_user() {
        let many: Vec<(String, String)> = (0..MAX_REACTIONS_PER_MESSAGE)
            .map(|i| (format!("u{i}"), format!("e{i}")))
            .collect();
        assert!(matches!(
            react(&many, "z", "new", true),
            Err(StoreError::LimitExceeded {
                limit: Limit::ReactionsPerMessage,
                ..
            })
        ));
        assert!(
            react(&many, "z", "e1", true).is_ok(),
            "an emoji already there is no new kind"
        );
        let mine: Vec<(String, String)> = (0..MAX_REACTIONS_PER_USER)
            .map(|i| ("me".to_owned(), format!("e{i}")))
            .collect();
        assert!(matches!(
            react(&mine, "me", "another", true),
            Err(StoreError::LimitExceeded {
                limit: Limit::ReactionsPerUser,
                ..
            })
        ));
    }
}
