//! Receipt markers (read, delivered): the requests, what moving one did, and the batch that
//! moves many in one transaction with a fixed number of statements.
//!
//! Kept apart from the backends and from `events` (which chooses each backend's statements):
//! the backends run a batch inside their own append transaction, and none of them may import
//! `events`, which imports them.

use std::collections::HashMap;

use crate::error::StoreError;
use crate::ids::{check_ident, check_seq};

/// Which receipt marker moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// The read marker (`read_seq`): the user has seen the events up to it.
    Read,
    /// The delivery marker (`delivered_seq`): a device of the user received them.
    Delivered,
}

/// One marker to move (see [`Store::move_marker`](crate::Store::move_marker)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerRequest {
    /// The reader.
    pub uid: String,
    /// The conversation id.
    pub conversation: String,
    /// The seq to move to.
    pub seq: i64,
    /// Which marker.
    pub marker: Marker,
}

/// What moving a marker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerMove {
    /// The marker after the request (never lower than before).
    pub marker: i64,
    /// The conversation's `last_seq`.
    pub last_seq: i64,
    /// Whether the marker moved.
    pub moved: bool,
    /// When it moved in a group: the author of the event at the new marker (a group receipt
    /// goes to it). `None` in a direct conversation, whose receipt goes to the peer.
    pub author: Option<String>,
}

/// Runs a [`MarkerBatch`]'s statements on `$conn` (a connection inside an open write
/// transaction): the read, the write-back of the markers that moved, and the author look-up of
/// each group receipt. A macro because the statements are the same on every backend while
/// the connection types differ; the SQLite append batch runs them in its own transaction.
macro_rules! marker_statements {
    ($conn:expr, $batch:expr, $read_sql:expr, $write_sql:expr, $author_sql:expr) => {{
        let conn = $conn;
        let batch: &mut $crate::markers::MarkerBatch<'_> = $batch;
        let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as($read_sql)
            .bind(batch.pairs())
            .fetch_all(&mut *conn)
            .await?;
        let moves = batch.apply(&rows)?;
        if let Some(changed) = &moves.changed {
            sqlx::query($write_sql).bind(changed).execute(&mut *conn).await?;
        }
        // Only a group receipt goes to the author of the event at the marker; a direct one
        // goes to the peer, whom the conversation id names.
        for (index, conversation, marker) in moves.authors_wanted {
            let author: Option<String> = sqlx::query_scalar($author_sql)
                .bind(conversation)
                .bind(marker)
                .fetch_optional(&mut *conn)
                .await?;
            batch.set_author(index, author);
        }
    }};
}
pub(crate) use marker_statements;

/// A batch of marker requests on its way through one transaction: checked once, its
/// statements ([`marker_statements`]) run in the transaction that carries it, answered per
/// request. It can run again (a retried transaction starts from the checked state).
pub(crate) struct MarkerBatch<'r> {
    requests: &'r [MarkerRequest],
    /// The answers known before any statement: the requests refused by the checks.
    refused: Vec<Option<Result<MarkerMove, StoreError>>>,
    /// Every request's answer so far.
    results: Vec<Option<Result<MarkerMove, StoreError>>>,
    /// The `[conversation, uid]` pairs the read statement takes (sorted, each once), as JSON;
    /// `None` when every request was refused.
    pairs: Option<String>,
}

/// What applying a batch to the markers read leaves for the statements after the read.
pub(crate) struct MarkerMoves<'r> {
    /// The `[conversation, uid, read, delivered]` rows that moved, as JSON; `None` if none did.
    pub(crate) changed: Option<String>,
    /// `(request index, conversation, marker)` of each group receipt whose author is wanted.
    pub(crate) authors_wanted: Vec<(usize, &'r str, i64)>,
}

impl<'r> MarkerBatch<'r> {
    /// Checks every request (uid, seq); the ones that fail are answered at once.
    pub(crate) fn new(requests: &'r [MarkerRequest]) -> Result<MarkerBatch<'r>, StoreError> {
        let mut refused: Vec<Option<Result<MarkerMove, StoreError>>> = vec![None; requests.len()];
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            match check_ident("uid", &request.uid).and_then(|()| check_seq("seq", request.seq)) {
                Ok(()) => pairs.push((&request.conversation, &request.uid)),
                Err(error) => refused[index] = Some(Err(error)),
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let pairs = if pairs.is_empty() { None } else { Some(to_json(&pairs)?) };
        Ok(MarkerBatch {
            requests,
            results: refused.clone(),
            refused,
            pairs,
        })
    }

    /// Whether no statement is needed: the batch is empty or every request was refused.
    pub(crate) fn is_empty(&self) -> bool {
        self.pairs.is_none()
    }

    /// The read statement's parameter.
    pub(crate) fn pairs(&self) -> &str {
        self.pairs.as_deref().unwrap_or("[]")
    }

    /// Applies the requests, in order, to the markers read (starting over from the checked
    /// state, so that a retried transaction answers afresh).
    pub(crate) fn apply<'a>(
        &mut self,
        rows: &'a [(String, String, i64, i64, i64)],
    ) -> Result<MarkerMoves<'a>, StoreError>
    where
        'r: 'a,
    {
        self.results.clone_from(&self.refused);
        let mut state: HashMap<(&str, &str), MarkerRow> = rows
            .iter()
            .map(|row| ((row.0.as_str(), row.1.as_str()), MarkerRow::from(row)))
            .collect();
        let requests: &'a [MarkerRequest] = self.requests;
        let authors_wanted = apply_markers(requests, &mut self.results, &mut state)
            .into_iter()
            .filter_map(|index| match &self.results[index] {
                Some(Ok(moved)) => Some((index, requests[index].conversation.as_str(), moved.marker)),
                _ => None,
            })
            .collect();
        let mut changed: Vec<(&str, &str, i64, i64)> = state
            .iter()
            .filter(|(_, row)| row.changed)
            .map(|(&(conversation, uid), row)| (conversation, uid, row.read, row.delivered))
            .collect();
        let changed = if changed.is_empty() {
            None
        } else {
            changed.sort_unstable();
            Some(to_json(&changed)?)
        };
        Ok(MarkerMoves {
            changed,
            authors_wanted,
        })
    }

    /// Records who wrote the event at the marker of request `index` (a group receipt).
    pub(crate) fn set_author(&mut self, index: usize, author: Option<String>) {
        if let Some(Some(Ok(moved))) = self.results.get_mut(index) {
            moved.author = author;
        }
    }

    /// The per-request results, every request answered.
    pub(crate) fn finish(self) -> Vec<Result<MarkerMove, StoreError>> {
        finish(self.results)
    }
}

/// Applies the requests, in order, to the markers read for the batch; returns the requests
/// whose marker moved in a group conversation (their receipt goes to the event's author).
fn apply_markers<'a>(
    requests: &'a [MarkerRequest],
    results: &mut [Option<Result<MarkerMove, StoreError>>],
    state: &mut HashMap<(&'a str, &'a str), MarkerRow>,
) -> Vec<usize> {
    let mut authors_wanted = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        if results[index].is_some() {
            continue;
        }
        let Some(row) = state.get_mut(&(request.conversation.as_str(), request.uid.as_str())) else {
            results[index] = Some(Err(StoreError::NotMember {
                uid: request.uid.clone(),
                conversation: request.conversation.clone(),
            }));
            continue;
        };
        let (moved, marker) = row.apply(request.marker, request.seq);
        if moved && request.conversation.starts_with("g:") {
            authors_wanted.push(index);
        }
        results[index] = Some(Ok(MarkerMove {
            marker,
            last_seq: row.last_seq,
            moved,
            author: None,
        }));
    }
    authors_wanted
}

/// One member's markers while a batch is applied to them.
struct MarkerRow {
    read: i64,
    delivered: i64,
    last_seq: i64,
    /// Whether a request of the batch moved a marker (the row is written back).
    changed: bool,
}

impl From<&(String, String, i64, i64, i64)> for MarkerRow {
    fn from(row: &(String, String, i64, i64, i64)) -> MarkerRow {
        MarkerRow {
            read: row.2,
            delivered: row.3,
            last_seq: row.4,
            changed: false,
        }
    }
}

impl MarkerRow {
    /// Moves `marker` to `seq` (capped at the conversation's last seq) unless it is there
    /// already; returns whether it moved and where it is.
    fn apply(&mut self, marker: Marker, seq: i64) -> (bool, i64) {
        let last_seq = self.last_seq;
        let current = match marker {
            Marker::Read => &mut self.read,
            Marker::Delivered => &mut self.delivered,
        };
        let wanted = seq.min(last_seq);
        if wanted <= *current {
            return (false, *current);
        }
        *current = wanted;
        self.changed = true;
        (true, wanted)
    }
}

/// A batch parameter as a JSON array (every backend unpacks it: `json_each`,
/// `jsonb_array_elements`, `JSON_TABLE`).
fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Invariant(e.to_string()))
}

/// The per-request results of a batch, every request answered.
fn finish(results: Vec<Option<Result<MarkerMove, StoreError>>>) -> Vec<Result<MarkerMove, StoreError>> {
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Invariant("a marker was not handled".to_owned()))))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn marker_rows(read: i64, delivered: i64, last_seq: i64) -> MarkerRow {
        MarkerRow {
            read,
            delivered,
            last_seq,
            changed: false,
        }
    }

    /// A request to move `uid`'s `marker` in `conversation` to `seq` (also used by the
    /// committer's tests).
    pub(crate) fn request(uid: &str, conversation: &str, seq: i64, marker: Marker) -> MarkerRequest {
        MarkerRequest {
            uid: uid.to_owned(),
            conversation: conversation.to_owned(),
            seq,
            marker,
        }
    }

    #[test]
    fn a_batch_of_markers_applies_its_requests_in_order() {
        let requests = [
            request("bob", "d:alice:bob", 2, Marker::Delivered),
            request("bob", "d:alice:bob", 1, Marker::Delivered),
            request("bob", "d:alice:bob", 9, Marker::Read),
            request("carol", "d:alice:bob", 1, Marker::Read),
            request("bob", "g:crew", 4, Marker::Read),
            request("dan", "g:crew", 1, Marker::Read),
        ];
        let mut results = vec![None; requests.len()];
        let mut state = HashMap::from([
            (("d:alice:bob", "bob"), marker_rows(0, 0, 3)),
            (("g:crew", "bob"), marker_rows(0, 0, 5)),
            (("g:crew", "dan"), marker_rows(3, 3, 5)),
        ]);
        let authors = apply_markers(&requests, &mut results, &mut state);
        let summary: Vec<_> = results
            .iter()
            .map(|r| match r {
                Some(Ok(m)) => Ok((m.marker, m.moved)),
                Some(Err(StoreError::NotMember { uid, .. })) => Err(uid.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                Ok((2, true)),
                Ok((2, false)),
                Ok((3, true)),
                Err("carol".to_owned()),
                Ok((4, true)),
                Ok((3, false)),
            ]
        );
        assert_eq!(authors, vec![4], "only a group receipt that moved looks up its author");
        assert!(state[&("d:alice:bob", "bob")].changed && state[&("g:crew", "bob")].changed);
        assert!(
            !state[&("g:crew", "dan")].changed,
            "a marker that did not move is not written"
        );
        assert_eq!(
            (
                state[&("d:alice:bob", "bob")].read,
                state[&("d:alice:bob", "bob")].delivered
            ),
            (3, 2)
        );
    }
}
