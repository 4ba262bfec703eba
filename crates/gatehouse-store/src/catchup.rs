//! Bounded catch-up and the change counter.
//!
//! A device with empty cursors, or far behind, gets per conversation only the latest window
//! of events, with the conversations ordered by their latest activity, so that no device ever
//! downloads more than a window per conversation before it is current. The user's change
//! counter (the sum of `last_seq` over its conversations) lets a connected device notice an
//! event whose push it missed.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use serde::Serialize;

use crate::error::StoreError;
use crate::ids::{ConversationKey, check_ident, check_seq, parse_conversation_id};
use crate::model::{ConversationKind, MessageRow, StoredMessage};
use crate::sql;
use crate::store::{MAX_PAGE, Store, with_pool};

/// Most conversations of one user a catch-up or a heartbeat considers (the most recently
/// active ones).
pub const MAX_CONVERSATIONS_SCANNED: i64 = 10_000;

/// One conversation as a catch-up page reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatchUpConversation {
    /// The conversation id.
    pub id: String,
    /// Direct or group.
    pub kind: ConversationKind,
    /// The peer's uid (direct) or the group id.
    pub peer_or_group: String,
    /// The group's display name.
    pub name: Option<String>,
    /// The conversation's last seq.
    pub last_seq: i64,
    /// The user's read marker.
    pub read_seq: i64,
    /// `last_seq - read_seq`.
    pub unread: i64,
    /// The time of the latest event (or of the creation when there is none), in ms.
    pub last_ts: i64,
    /// Whether events before `from_seq` were left out.
    pub limited: bool,
    /// The first seq this catch-up delivers (or `cursor + 1` when it delivers nothing).
    pub from_seq: i64,
    /// The cursor the device stores for this conversation after the page.
    pub cursor: i64,
    /// The peer's read marker (direct conversations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_read_seq: Option<i64>,
    /// The peer's delivery marker (direct conversations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_delivered_seq: Option<i64>,
}

/// One page of a bounded catch-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUpPage {
    /// The conversations reported, most recently active first.
    pub conversations: Vec<CatchUpConversation>,
    /// Their events, conversation by conversation in the same order, ascending seq.
    pub messages: Vec<StoredMessage>,
    /// `true` when the page was cut (limit or budget): store the cursors and ask again.
    pub more: bool,
    /// The user's change counter when the page was read.
    pub counter: i64,
}

/// What [`Store::catch_up`] offers its caller's budget, in page order.
#[derive(Debug, Clone, Copy)]
pub enum Offer<'a> {
    /// A conversation entry (its `cursor` is still `last_seq`, the largest it can become).
    Conversation(&'a CatchUpConversation),
    /// An event.
    Message(&'a StoredMessage),
}

/// The user's change counter and its most recently active conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// The sum of `last_seq` over the user's conversations.
    pub counter: i64,
    /// `(conversation, last_seq)`, most recently active first.
    pub latest: Vec<(String, i64)>,
}

/// A row of [`sql::ACTIVITY`].
#[derive(Debug, sqlx::FromRow)]
struct ActivityRow {
    id: String,
    name: Option<String>,
    last_seq: i64,
    read_seq: i64,
    floor: i64,
    last_ts: i64,
    peer_read_seq: Option<i64>,
    peer_delivered_seq: Option<i64>,
}

impl ActivityRow {
    /// The entry for `uid`, starting after `start` (`limited` when the window cut it).
    fn entry(&self, uid: &str, start: i64, limited: bool) -> Option<CatchUpConversation> {
        let key = parse_conversation_id(&self.id)?;
        let (kind, peer_or_group) = match &key {
            ConversationKey::Direct { .. } => (ConversationKind::Direct, key.peer_of(uid)?.to_owned()),
            ConversationKey::Group { id } => (ConversationKind::Group, id.clone()),
        };
        let direct = kind == ConversationKind::Direct;
        Some(CatchUpConversation {
            id: self.id.clone(),
            kind,
            peer_or_group,
            name: self.name.clone(),
            last_seq: self.last_seq,
            read_seq: self.read_seq,
            unread: (self.last_seq - self.read_seq).max(0),
            last_ts: self.last_ts,
            limited,
            from_seq: start + 1,
            cursor: self.last_seq,
            peer_read_seq: if direct {
                Some(self.peer_read_seq.unwrap_or(0))
            } else {
                None
            },
            peer_delivered_seq: if direct {
                Some(self.peer_delivered_seq.unwrap_or(0))
            } else {
                None
            },
        })
    }
}

/// Where a conversation's catch-up starts: after the cursor (or the read floor), or
/// `window` events before the end when that is later (then `limited`).
pub(crate) fn window_start(cursor: i64, floor: i64, last_seq: i64, window: i64) -> (i64, bool) {
    let start = cursor.max(floor);
    if last_seq - start > window {
        (last_seq - window, true)
    } else {
        (start, false)
    }
}

impl Store {
    async fn activity_rows(&self, uid: &str) -> Result<Vec<ActivityRow>, StoreError> {
        Ok(with_pool!(self, reader, |pool, dialect| {
            sqlx::query_as(dialect.sql(sql::ACTIVITY))
                .bind(uid)
                .bind(MAX_CONVERSATIONS_SCANNED)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Returns `uid`'s change counter and its `latest` most recently active conversations.
    pub async fn activity(&self, uid: &str, latest: usize) -> Result<Activity, StoreError> {
        check_ident("uid", uid)?;
        let rows = self.activity_rows(uid).await?;
        Ok(Activity {
            counter: rows.iter().map(|r| r.last_seq).sum(),
            latest: rows.into_iter().take(latest).map(|r| (r.id, r.last_seq)).collect(),
        })
    }

    /// Returns one page of `uid`'s bounded catch-up from `cursors`.
    ///
    /// Conversations come most recently active first. Each one that is absent from `cursors`
    /// or has events after its cursor is reported with its entry; its events after the cursor
    /// (or after its read floor) follow, but at most the latest `window` of them (the entry
    /// says `limited`). At most `limit` events in all (capped at [`MAX_PAGE`]), and as many as
    /// `admit` lets in: it is offered each entry and each event in page order, and the page
    /// ends at the first refusal. An entry is only kept with at least one of its events when
    /// it has any to deliver, so every entry's `cursor` is backed by what the page holds.
    pub async fn catch_up(
        &self,
        uid: &str,
        cursors: &HashMap<String, i64>,
        limit: u32,
        window: u32,
        admit: &mut (dyn FnMut(Offer<'_>) -> bool + Send),
    ) -> Result<CatchUpPage, StoreError> {
        check_ident("uid", uid)?;
        for (conversation, &cursor) in cursors {
            check_seq(&format!("cursor of {conversation}"), cursor)?;
        }
        let limit = usize::try_from(limit.clamp(1, MAX_PAGE)).unwrap_or(usize::MAX);
        let window = i64::from(window.max(1));
        let rows = self.activity_rows(uid).await?;
        let counter = rows.iter().map(|r| r.last_seq).sum();
        let mut page = CatchUpPage {
            conversations: Vec::new(),
            messages: Vec::new(),
            more: false,
            counter,
        };
        for row in &rows {
            let given = cursors.get(&row.id).copied();
            let (start, limited) = window_start(given.unwrap_or(0), row.floor, row.last_seq, window);
            if given.is_some() && row.last_seq <= start {
                continue;
            }
            let Some(mut entry) = row.entry(uid, start, limited) else {
                continue;
            };
            let budget = limit - page.messages.len();
            let to_deliver = row.last_seq > start;
            if (to_deliver && budget == 0) || !admit(Offer::Conversation(&entry)) {
                page.more = true;
                break;
            }
            if !to_deliver {
                page.conversations.push(entry);
                continue;
            }
            let before = page.messages.len();
            let (fetched, full) = self
                .deliver(uid, &row.id, start, budget, admit, &mut page.messages)
                .await?;
            if fetched == 0 && !full {
                // The user left the conversation since its list was read: nothing to report.
                continue;
            }
            if page.messages.len() == before {
                page.more = true;
                break;
            }
            entry.cursor = page.messages.last().map_or(start, |m| m.seq);
            let cut = full || (fetched == budget && entry.cursor < row.last_seq);
            page.conversations.push(entry);
            if cut {
                page.more = true;
                break;
            }
        }
        Ok(page)
    }

    /// Streams the events of `conversation` after `start` that `uid` may read into `out`, at
    /// most `budget`, while `admit` lets them in; returns how many were fetched and whether
    /// `admit` refused one.
    async fn deliver(
        &self,
        uid: &str,
        conversation: &str,
        start: i64,
        budget: usize,
        admit: &mut (dyn FnMut(Offer<'_>) -> bool + Send),
        out: &mut Vec<StoredMessage>,
    ) -> Result<(usize, bool), StoreError> {
        let (mut fetched, mut full) = (0, false);
        with_pool!(self, reader, |pool, dialect| {
            let mut rows = sqlx::query_as::<_, MessageRow>(dialect.sql(sql::VISIBLE_AFTER))
                .bind(conversation)
                .bind(uid)
                .bind(start)
                .bind(i64::try_from(budget).unwrap_or(i64::MAX))
                .fetch(pool);
            while let Some(row) = rows.try_next().await? {
                fetched += 1;
                let message = row.into_stored();
                if !admit(Offer::Message(&message)) {
                    full = true;
                    break;
                }
                out.push(message);
            }
        });
        Ok((fetched, full))
    }
}

#[cfg(test)]
mod tests {
    use super::window_start;

    #[test]
    fn a_cursor_within_the_window_is_kept_and_one_behind_it_is_cut() {
        assert_eq!(window_start(0, 0, 1200, 50), (1150, true), "an empty cursor");
        assert_eq!(window_start(10, 0, 1200, 50), (1150, true), "far behind");
        assert_eq!(
            window_start(1150, 0, 1200, 50),
            (1150, false),
            "exactly a window behind"
        );
        assert_eq!(window_start(1190, 0, 1200, 50), (1190, false));
        assert_eq!(
            window_start(0, 1180, 1200, 50),
            (1180, false),
            "the read floor bounds first"
        );
        assert_eq!(window_start(0, 0, 0, 50), (0, false), "an empty conversation");
    }
}
