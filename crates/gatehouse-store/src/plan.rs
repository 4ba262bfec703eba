//! Backend-independent planning of one append batch.
//!
//! A backend runs the same steps inside one transaction and feeds each result back into the
//! [`Plan`]: the idempotency look-up, membership of group senders, creation of new direct
//! conversations, the conversation row locks (and on PostgreSQL the look-up again, now under
//! the locks), one sequence bump per conversation, one multi-row insert, the senders' read
//! markers. The plan decides everything that does not need
//! the database (validation, in-batch duplicates, which seq each message gets), so the backends
//! share that logic and differ only in SQL.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::StoreError;
use crate::ids::{check_ident, check_text, direct_conversation_id, group_conversation_id};
use crate::model::{Appended, ConversationRef, MessageRow, NewMessage, StoredMessage};

/// One append batch on its way through a transaction.
#[derive(Debug)]
pub(crate) struct Plan {
    /// One per input item, in input order: the results come back in this order.
    slots: Vec<Slot>,
    /// The distinct `(sender, cid)` items that need the database, in batch order (the order
    /// in which a conversation's sequence numbers are handed out).
    primaries: Vec<Primary>,
}

/// The result of one backend's attempt at a [`Plan`] (see `Store::append`). It lives with the
/// plan, not with the store, so that the backends that produce it and the store that retries
/// on it both depend on this module and never on each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The transaction committed.
    Committed,
    /// The transaction was rolled back and has to be planned again: on PostgreSQL or MariaDB, a concurrent
    /// writer created one of the batch's conversations after this attempt had taken its locks.
    Retry,
}

/// What became of one input item.
#[derive(Debug)]
enum Slot {
    /// Rejected before touching the database.
    Failed(StoreError),
    /// The first item of the batch with its `(sender, cid)`: index into `primaries`.
    Primary(usize),
    /// A later item with the same `(sender, cid)`, conversation and text as `primaries[i]`:
    /// answered like it, as a duplicate.
    Alias(usize),
}

/// One message to store, validated.
#[derive(Debug)]
struct Primary {
    /// The conversation id (`d:…` or `g:…`): what is locked, bumped and written to.
    conversation: String,
    /// The recipient for a direct message, `None` for a group message.
    peer: Option<String>,
    /// The sender's uid: with `cid`, the idempotency key.
    sender: String,
    /// The sender's idempotency key.
    cid: String,
    /// The body; a resend must carry the same one to count as a duplicate.
    text: String,
    /// The receive time given at append.
    ts_ms: i64,
    /// The message it answers (checked by the caller before the append).
    reply_to: Option<i64>,
    /// How far the transaction got with it.
    state: State,
}

/// Where one message stands in the current attempt.
#[derive(Debug)]
enum State {
    /// Not decided yet: still needs the database.
    Pending,
    /// A group message whose sender is not a member.
    NotMember,
    /// The recipient of a direct message blocks its sender.
    Blocked,
    /// `(sender, cid)` is stored with another conversation or text.
    Conflict,
    /// Stored before (a resend): answered with the stored message.
    Existing(StoredMessage),
    /// Given this sequence number; its row is not inserted yet.
    Assigned(i64),
    /// Inserted with its id.
    Stored(StoredMessage),
}

/// A direct conversation the batch may have to create, with its two members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirectConversation<'a> {
    pub(crate) id: &'a str,
    pub(crate) created_by: &'a str,
    pub(crate) ts_ms: i64,
    pub(crate) a: &'a str,
    pub(crate) b: &'a str,
}

/// A message row ready for the multi-row insert.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRow<'a> {
    pub(crate) conversation: &'a str,
    pub(crate) seq: i64,
    pub(crate) sender: &'a str,
    pub(crate) cid: &'a str,
    pub(crate) text: &'a str,
    pub(crate) ts_ms: i64,
    pub(crate) reply_to: Option<i64>,
}

/// The part of an inserted row the plan needs back: its key and its new id.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct InsertedRow {
    pub(crate) conversation_id: String,
    pub(crate) seq: i64,
    pub(crate) id: i64,
}

/// A conversation's `last_seq` after the bump.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct BumpedRow {
    pub(crate) id: String,
    pub(crate) last_seq: i64,
}

/// A `(conversation, uid)` membership that exists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, sqlx::FromRow)]
pub(crate) struct MemberRow {
    pub(crate) conversation_id: String,
    pub(crate) uid: String,
}

impl Plan {
    /// Validates the items and folds in-batch duplicates onto their first occurrence.
    pub(crate) fn new(messages: Vec<NewMessage>) -> Plan {
        let mut slots = Vec::with_capacity(messages.len());
        let mut primaries: Vec<Primary> = Vec::with_capacity(messages.len());
        let mut first_of: HashMap<(String, String), usize> = HashMap::new();
        for message in messages {
            match prepare(message) {
                Err(error) => slots.push(Slot::Failed(error)),
                Ok(primary) => {
                    let key = (primary.sender.clone(), primary.cid.clone());
                    if let Some(&index) = first_of.get(&key) {
                        let first = &primaries[index];
                        if first.conversation == primary.conversation && first.text == primary.text {
                            slots.push(Slot::Alias(index));
                        } else {
                            slots.push(Slot::Failed(StoreError::CidConflict {
                                sender: primary.sender,
                                cid: primary.cid,
                            }));
                        }
                    } else {
                        first_of.insert(key, primaries.len());
                        slots.push(Slot::Primary(primaries.len()));
                        primaries.push(primary);
                    }
                }
            }
        }
        Plan { slots, primaries }
    }

    /// Returns `true` when no item needs the database (empty batch or all invalid).
    pub(crate) fn is_offline(&self) -> bool {
        self.primaries.is_empty()
    }

    /// Forgets all database results so that a rolled-back attempt can be retried from scratch.
    pub(crate) fn reset(&mut self) {
        for primary in &mut self.primaries {
            primary.state = State::Pending;
        }
    }

    fn pending(&self) -> impl Iterator<Item = &Primary> {
        self.primaries.iter().filter(|p| matches!(p.state, State::Pending))
    }

    /// Returns the distinct `(group conversation, sender)` pairs whose membership must be checked.
    pub(crate) fn membership_probes(&self) -> Vec<(&str, &str)> {
        let mut probes: Vec<(&str, &str)> = self
            .pending()
            .filter(|p| p.peer.is_none())
            .map(|p| (p.conversation.as_str(), p.sender.as_str()))
            .collect();
        probes.sort_unstable();
        probes.dedup();
        probes
    }

    /// Marks group messages whose sender is not among `members` as refused.
    pub(crate) fn apply_membership(&mut self, members: &[MemberRow]) {
        let members: HashSet<(&str, &str)> = members
            .iter()
            .map(|m| (m.conversation_id.as_str(), m.uid.as_str()))
            .collect();
        for primary in &mut self.primaries {
            if matches!(primary.state, State::Pending)
                && primary.peer.is_none()
                && !members.contains(&(primary.conversation.as_str(), primary.sender.as_str()))
            {
                primary.state = State::NotMember;
            }
        }
    }

    /// Returns the distinct `(recipient, sender)` pairs of pending direct messages (notes to
    /// oneself excluded): a stored block `recipient → sender` refuses the message.
    pub(crate) fn block_probes(&self) -> Vec<(&str, &str)> {
        let mut probes: Vec<(&str, &str)> = self
            .pending()
            .filter_map(|p| Some((p.peer.as_deref()?, p.sender.as_str())))
            .filter(|(recipient, sender)| recipient != sender)
            .collect();
        probes.sort_unstable();
        probes.dedup();
        probes
    }

    /// Marks direct messages whose recipient blocks their sender (`(blocker, blocked)` rows) as
    /// refused.
    pub(crate) fn apply_blocks(&mut self, blocks: &[(String, String)]) {
        if blocks.is_empty() {
            return;
        }
        let blocks: HashSet<(&str, &str)> = blocks.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        for primary in &mut self.primaries {
            if matches!(primary.state, State::Pending)
                && let Some(peer) = primary.peer.as_deref()
                && blocks.contains(&(peer, primary.sender.as_str()))
            {
                primary.state = State::Blocked;
            }
        }
    }

    /// Returns the direct conversations the batch writes to, sorted by id (the lock order):
    /// those of the items still pending, or already given their sequence number (PostgreSQL
    /// creates new conversations after numbering, at their final counter).
    pub(crate) fn direct_conversations(&self) -> Vec<DirectConversation<'_>> {
        let mut seen: BTreeMap<&str, DirectConversation<'_>> = BTreeMap::new();
        let to_write = self
            .primaries
            .iter()
            .filter(|p| matches!(p.state, State::Pending | State::Assigned(_)));
        for primary in to_write {
            let Some(peer) = primary.peer.as_deref() else {
                continue;
            };
            seen.entry(primary.conversation.as_str()).or_insert(DirectConversation {
                id: &primary.conversation,
                created_by: &primary.sender,
                ts_ms: primary.ts_ms,
                a: &primary.sender,
                b: peer,
            });
        }
        seen.into_values().collect()
    }

    /// Returns the conversations of the pending items, sorted by id: on PostgreSQL the order in
    /// which their rows are locked, so that two batches never wait on each other in a cycle; on
    /// SQLite the counters read before duplicates and refused items are known.
    pub(crate) fn conversations(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.pending().map(|p| p.conversation.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Returns the `(sender, cid)` keys still to be checked against stored messages.
    pub(crate) fn dedupe_keys(&self) -> Vec<(&str, &str)> {
        self.pending().map(|p| (p.sender.as_str(), p.cid.as_str())).collect()
    }

    /// Turns every pending item whose key is among `rows` into a duplicate of that stored row
    /// when it is the same message (same conversation and text), or into a conflict when the
    /// key was used for another one: a client that reuses a cid for a new message must learn
    /// that it was not stored, rather than get the old message's ack.
    pub(crate) fn apply_existing(&mut self, rows: Vec<MessageRow>) {
        let mut by_key: HashMap<(String, String), MessageRow> = rows
            .into_iter()
            .map(|row| ((row.sender.clone(), row.cid.clone()), row))
            .collect();
        for primary in &mut self.primaries {
            if !matches!(primary.state, State::Pending) {
                continue;
            }
            if let Some(row) = by_key.remove(&(primary.sender.clone(), primary.cid.clone())) {
                primary.state = if row.conversation_id == primary.conversation && row.text == primary.text {
                    State::Existing(row.into_stored())
                } else {
                    State::Conflict
                };
            }
        }
    }

    /// Returns how many new messages each conversation receives, sorted by conversation id.
    pub(crate) fn seq_demand(&self) -> Vec<(&str, i64)> {
        let mut demand: BTreeMap<&str, i64> = BTreeMap::new();
        for primary in self.pending() {
            *demand.entry(primary.conversation.as_str()).or_insert(0) += 1;
        }
        demand.into_iter().collect()
    }

    /// Hands out sequence numbers from the bumped counters: conversation `c` with `n` new
    /// messages and new `last_seq = L` gets `L-n+1 ..= L`, in batch order.
    pub(crate) fn assign_seqs(&mut self, bumped: &[BumpedRow]) -> Result<(), StoreError> {
        let mut next: HashMap<&str, i64> = HashMap::new();
        let demand: HashMap<String, i64> = self
            .seq_demand()
            .into_iter()
            .map(|(id, n)| (id.to_owned(), n))
            .collect();
        for row in bumped {
            let n = demand.get(&row.id).copied().unwrap_or(0);
            next.insert(&row.id, row.last_seq - n + 1);
        }
        for primary in &mut self.primaries {
            if !matches!(primary.state, State::Pending) {
                continue;
            }
            let Some(seq) = next.get_mut(primary.conversation.as_str()) else {
                return Err(StoreError::Invariant(format!(
                    "conversation {} vanished during append",
                    primary.conversation
                )));
            };
            primary.state = State::Assigned(*seq);
            *seq += 1;
        }
        Ok(())
    }

    /// Returns the rows to insert (every item that received a seq).
    pub(crate) fn new_rows(&self) -> Vec<NewRow<'_>> {
        self.primaries
            .iter()
            .filter_map(|p| match p.state {
                State::Assigned(seq) => Some(NewRow {
                    conversation: &p.conversation,
                    seq,
                    sender: &p.sender,
                    cid: &p.cid,
                    text: &p.text,
                    ts_ms: p.ts_ms,
                    reply_to: p.reply_to,
                }),
                _ => None,
            })
            .collect()
    }

    /// Returns `(conversation, sender, highest new seq)` for the new messages: sending marks
    /// the conversation read up to one's own message, so own messages never count as unread.
    /// Sorted for lock order; call after [`Plan::assign_seqs`] (the ids are not needed, so the
    /// markers can be written in the same statement as the messages).
    pub(crate) fn read_marks(&self) -> Vec<(&str, &str, i64)> {
        let mut marks: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for primary in &self.primaries {
            let seq = match &primary.state {
                State::Assigned(seq) => *seq,
                State::Stored(message) => message.seq,
                _ => continue,
            };
            let mark = marks
                .entry((primary.conversation.as_str(), primary.sender.as_str()))
                .or_insert(seq);
            *mark = (*mark).max(seq);
        }
        marks.into_iter().map(|((c, u), s)| (c, u, s)).collect()
    }

    /// Records the ids of the inserted rows. Returns `false` when a planned row is missing
    /// from `rows`, which the backends report as a broken invariant: their inserts store every
    /// row or fail, because a skipped row would leave a hole in its conversation's sequence.
    pub(crate) fn apply_inserted(&mut self, rows: Vec<InsertedRow>) -> bool {
        let ids: HashMap<(String, i64), i64> = rows
            .into_iter()
            .map(|row| ((row.conversation_id, row.seq), row.id))
            .collect();
        let mut complete = true;
        for primary in &mut self.primaries {
            let State::Assigned(seq) = primary.state else {
                continue;
            };
            match ids.get(&(primary.conversation.clone(), seq)) {
                Some(&id) => {
                    let row = MessageRow::plain(
                        id,
                        primary.conversation.clone(),
                        seq,
                        primary.sender.clone(),
                        primary.cid.clone(),
                        primary.text.clone(),
                        primary.ts_ms,
                        primary.reply_to,
                    );
                    primary.state = State::Stored(row.into_stored());
                }
                None => complete = false,
            }
        }
        complete
    }

    /// Produces one result per input item, in input order.
    pub(crate) fn finish(self) -> Vec<Result<Appended, StoreError>> {
        let results: Vec<Result<Appended, StoreError>> = self
            .primaries
            .into_iter()
            .map(|primary| match primary.state {
                State::Stored(message) => Ok(Appended {
                    message,
                    duplicate: false,
                }),
                State::Existing(message) => Ok(Appended {
                    message,
                    duplicate: true,
                }),
                State::NotMember => Err(StoreError::NotMember {
                    uid: primary.sender,
                    conversation: primary.conversation,
                }),
                State::Conflict => Err(StoreError::CidConflict {
                    sender: primary.sender,
                    cid: primary.cid,
                }),
                State::Blocked => Err(StoreError::Blocked {
                    uid: primary.sender,
                    by: primary.peer.unwrap_or_default(),
                }),
                State::Pending | State::Assigned(_) => Err(StoreError::Invariant(format!(
                    "message {} of {} left unresolved",
                    primary.cid, primary.sender
                ))),
            })
            .collect();
        self.slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Failed(error) => Err(error),
                Slot::Primary(index) => results[index].clone(),
                Slot::Alias(index) => results[index].clone().map(|appended| Appended {
                    duplicate: true,
                    ..appended
                }),
            })
            .collect()
    }
}

fn prepare(message: NewMessage) -> Result<Primary, StoreError> {
    check_ident("sender", &message.sender)?;
    check_ident("cid", &message.cid)?;
    check_text(&message.text)?;
    let (conversation, peer) = match message.conversation {
        ConversationRef::Direct { to } => {
            check_ident("recipient", &to)?;
            (direct_conversation_id(&message.sender, &to), Some(to))
        }
        ConversationRef::Group { id } => {
            check_ident("group id", &id)?;
            (group_conversation_id(&id), None)
        }
    };
    Ok(Primary {
        conversation,
        peer,
        sender: message.sender,
        cid: message.cid,
        text: message.text,
        ts_ms: message.ts_ms,
        reply_to: message.reply_to,
        state: State::Pending,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A direct message of `sender` to `to` (also used by the committer's tests).
    pub(crate) fn direct(sender: &str, to: &str, cid: &str) -> NewMessage {
        NewMessage {
            conversation: ConversationRef::Direct { to: to.into() },
            sender: sender.into(),
            cid: cid.into(),
            text: format!("{sender}->{to} {cid}"),
            ts_ms: 7,
            reply_to: None,
        }
    }

    fn group(sender: &str, id: &str, cid: &str) -> NewMessage {
        NewMessage {
            conversation: ConversationRef::Group { id: id.into() },
            sender: sender.into(),
            cid: cid.into(),
            text: String::new(),
            ts_ms: 7,
            reply_to: None,
        }
    }

    fn bumped(plan: &Plan, base: i64) -> Vec<BumpedRow> {
        plan.seq_demand()
            .into_iter()
            .map(|(id, n)| BumpedRow {
                id: id.to_owned(),
                last_seq: base + n,
            })
            .collect()
    }

    fn insert_all(plan: &mut Plan) {
        let rows: Vec<InsertedRow> = plan
            .new_rows()
            .iter()
            .enumerate()
            .map(|(i, r)| InsertedRow {
                conversation_id: r.conversation.to_owned(),
                seq: r.seq,
                id: 100 + i as i64,
            })
            .collect();
        assert!(plan.apply_inserted(rows));
    }

    #[test]
    fn seqs_are_contiguous_per_conversation_in_batch_order() {
        let mut plan = Plan::new(vec![
            direct("a", "b", "1"),
            direct("b", "c", "1"),
            direct("b", "a", "2"),
            direct("a", "b", "3"),
        ]);
        assert_eq!(
            plan.seq_demand(),
            vec![("d:a:b", 3), ("d:b:c", 1)],
            "one bump per conversation"
        );
        let rows = bumped(&plan, 10);
        plan.assign_seqs(&rows).expect("assign");
        insert_all(&mut plan);
        let seqs: Vec<(String, i64)> = plan
            .finish()
            .into_iter()
            .map(|r| r.map(|a| (a.message.conversation, a.message.seq)))
            .collect::<Result<_, _>>()
            .expect("all stored");
        assert_eq!(
            seqs,
            vec![
                ("d:a:b".into(), 11),
                ("d:b:c".into(), 11),
                ("d:a:b".into(), 12),
                ("d:a:b".into(), 13)
            ]
        );
    }

    #[test]
    fn read_marks_cover_each_senders_last_new_message() {
        let mut plan = Plan::new(vec![
            direct("a", "b", "1"),
            direct("a", "b", "2"),
            direct("b", "a", "3"),
        ]);
        let rows = bumped(&plan, 4);
        plan.assign_seqs(&rows).expect("assign");
        let expected = vec![("d:a:b", "a", 6), ("d:a:b", "b", 7)];
        assert_eq!(plan.read_marks(), expected, "known once sequence numbers are assigned");
        insert_all(&mut plan);
        assert_eq!(plan.read_marks(), expected, "and unchanged once the ids are known");
    }

    #[test]
    fn in_batch_resend_is_answered_with_the_original() {
        let mut plan = Plan::new(vec![direct("a", "b", "x"), direct("a", "b", "x")]);
        assert_eq!(plan.dedupe_keys(), vec![("a", "x")]);
        let rows = bumped(&plan, 0);
        plan.assign_seqs(&rows).expect("assign");
        insert_all(&mut plan);
        let results = plan.finish();
        let first = results[0].clone().expect("first stored");
        let second = results[1].clone().expect("second answered");
        assert!(!first.duplicate);
        assert!(second.duplicate);
        assert_eq!(first.message, second.message);
        assert_eq!(first.message.to.as_deref(), Some("b"));
    }

    #[test]
    fn an_in_batch_reuse_of_a_cid_for_another_message_is_a_conflict() {
        let mut other_text = direct("a", "b", "x");
        other_text.text = "something else".into();
        let mut plan = Plan::new(vec![direct("a", "b", "x"), direct("a", "c", "x"), other_text]);
        assert_eq!(plan.dedupe_keys(), vec![("a", "x")], "only the first is planned");
        let rows = bumped(&plan, 0);
        plan.assign_seqs(&rows).expect("assign");
        insert_all(&mut plan);
        let results = plan.finish();
        assert!(results[0].is_ok());
        for conflict in &results[1..] {
            assert!(matches!(conflict, Err(StoreError::CidConflict { sender, cid }) if sender == "a" && cid == "x"));
        }
    }

    #[test]
    fn a_stored_key_with_other_content_is_a_conflict_and_the_same_content_a_duplicate() {
        let stored = |conversation: &str, text: &str| {
            MessageRow::plain(9, conversation.into(), 1, "a".into(), "x".into(), text.into(), 1, None)
        };
        let same = direct("a", "b", "x");
        for (row, duplicate) in [
            (stored("d:a:b", &same.text), true),
            (stored("d:a:c", &same.text), false),
            (stored("d:a:b", "edited"), false),
        ] {
            let mut plan = Plan::new(vec![same.clone()]);
            plan.apply_existing(vec![row]);
            let result = plan.finish().pop().expect("one result");
            if duplicate {
                assert!(result.expect("duplicate").duplicate);
            } else {
                assert!(matches!(result, Err(StoreError::CidConflict { .. })), "{result:?}");
            }
        }
    }

    #[test]
    fn non_members_are_refused_per_item() {
        let mut plan = Plan::new(vec![
            group("a", "g1", "1"),
            group("z", "g1", "2"),
            group("z", "g1", "2"),
        ]);
        assert_eq!(plan.membership_probes(), vec![("g:g1", "a"), ("g:g1", "z")]);
        plan.apply_membership(&[MemberRow {
            conversation_id: "g:g1".into(),
            uid: "a".into(),
        }]);
        let rows = bumped(&plan, 0);
        plan.assign_seqs(&rows).expect("assign");
        insert_all(&mut plan);
        let results = plan.finish();
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(StoreError::NotMember { .. })));
        assert!(matches!(results[2], Err(StoreError::NotMember { .. })));
    }

    #[test]
    fn blocked_direct_messages_are_refused_per_item() {
        let mut plan = Plan::new(vec![
            direct("eve", "bob", "1"),
            direct("ann", "bob", "2"),
            direct("eve", "eve", "3"),
        ]);
        assert_eq!(plan.block_probes(), vec![("bob", "ann"), ("bob", "eve")]);
        plan.apply_blocks(&[("bob".into(), "eve".into())]);
        let rows = bumped(&plan, 0);
        plan.assign_seqs(&rows).expect("assign");
        insert_all(&mut plan);
        let results = plan.finish();
        assert!(matches!(&results[0], Err(StoreError::Blocked { uid, by }) if uid == "eve" && by == "bob"));
        assert!(results[1].is_ok());
        assert!(results[2].is_ok(), "a note to oneself is never blocked");
    }

    #[test]
    fn invalid_items_fail_alone() {
        let plan = Plan::new(vec![direct("", "b", "1"), direct("a", "b", "\0")]);
        assert!(plan.is_offline());
        let results = plan.finish();
        assert!(results.iter().all(|r| matches!(r, Err(StoreError::InvalidInput(_)))));
    }

    #[test]
    fn a_missing_insert_is_reported_as_incomplete() {
        let mut plan = Plan::new(vec![direct("a", "b", "1"), direct("a", "b", "2")]);
        let rows = bumped(&plan, 0);
        plan.assign_seqs(&rows).expect("assign");
        let only_first = vec![InsertedRow {
            conversation_id: "d:a:b".into(),
            seq: 1,
            id: 1,
        }];
        assert!(!plan.apply_inserted(only_first));
    }

    #[test]
    fn a_retry_after_a_rollback_plans_every_item_again() {
        let mut plan = Plan::new(vec![group("a", "g1", "1"), direct("a", "b", "2")]);
        plan.apply_membership(&[]);
        plan.apply_blocks(&[("b".into(), "a".into())]);
        assert!(plan.dedupe_keys().is_empty(), "both refused");
        plan.reset();
        assert_eq!(plan.dedupe_keys(), vec![("a", "1"), ("a", "2")]);
        assert_eq!(plan.membership_probes(), vec![("g:g1", "a")]);
        assert_eq!(plan.block_probes(), vec![("b", "a")]);
    }

    #[test]
    fn refused_items_are_neither_probed_nor_given_a_seq() {
        let mut plan = Plan::new(vec![
            group("a", "g1", "1"),
            group("z", "g2", "2"),
            direct("eve", "bob", "3"),
            direct("ann", "bob", "4"),
        ]);
        plan.apply_membership(&[MemberRow {
            conversation_id: "g:g1".into(),
            uid: "a".into(),
        }]);
        plan.apply_blocks(&[("bob".into(), "eve".into())]);
        assert_eq!(plan.seq_demand(), vec![("d:ann:bob", 1), ("g:g1", 1)]);
        assert_eq!(plan.conversations(), vec!["d:ann:bob", "g:g1"]);
        assert_eq!(plan.dedupe_keys(), vec![("a", "1"), ("ann", "4")]);
        assert_eq!(plan.membership_probes(), vec![("g:g1", "a")]);
        assert_eq!(plan.block_probes(), vec![("bob", "ann")]);
        assert_eq!(plan.direct_conversations().len(), 1);
    }

    #[test]
    fn numbered_items_still_name_the_direct_conversations_to_create_with_their_markers() {
        let mut plan = Plan::new(vec![direct("ann", "bob", "1"), direct("ann", "bob", "2")]);
        plan.assign_seqs(&[BumpedRow {
            id: "d:ann:bob".into(),
            last_seq: 2,
        }])
        .expect("numbered");
        let directs = plan.direct_conversations();
        assert_eq!(
            directs.len(),
            1,
            "a numbered item's conversation is still to be created"
        );
        assert_eq!((directs[0].a, directs[0].b), ("ann", "bob"));
        assert_eq!(plan.read_marks(), vec![("d:ann:bob", "ann", 2)]);
    }

    #[test]
    fn membership_is_probed_for_group_messages_and_blocks_for_direct_ones() {
        let plan = Plan::new(vec![group("a", "g1", "1"), direct("a", "b", "2")]);
        assert_eq!(plan.membership_probes(), vec![("g:g1", "a")]);
        assert_eq!(plan.block_probes(), vec![("b", "a")]);
    }

    #[test]
    fn a_block_of_someone_else_refuses_nothing() {
        let mut plan = Plan::new(vec![direct("ann", "bob", "1")]);
        plan.apply_blocks(&[("bob".into(), "eve".into()), ("ann".into(), "bob".into())]);
        assert_eq!(plan.dedupe_keys(), vec![("ann", "1")], "only bob → ann would refuse it");
    }

    #[test]
    fn direct_conversations_are_listed_once_each_in_lock_order_with_their_first_sender() {
        let mut late = direct("b", "a", "2");
        late.ts_ms = 99;
        let plan = Plan::new(vec![
            direct("c", "b", "1"),
            late,
            direct("a", "b", "3"),
            group("a", "g1", "4"),
        ]);
        assert_eq!(
            plan.direct_conversations(),
            vec![
                DirectConversation {
                    id: "d:a:b",
                    created_by: "b",
                    ts_ms: 99,
                    a: "b",
                    b: "a",
                },
                DirectConversation {
                    id: "d:b:c",
                    created_by: "c",
                    ts_ms: 7,
                    a: "c",
                    b: "b",
                },
            ]
        );
        assert_eq!(
            plan.conversations(),
            vec!["d:a:b", "d:b:c", "g:g1"],
            "groups too, sorted"
        );
    }

    #[test]
    fn a_conversation_missing_from_the_bumped_counters_is_an_invariant_error() {
        let mut plan = Plan::new(vec![direct("a", "b", "1"), group("a", "g1", "2")]);
        let only_direct = vec![BumpedRow {
            id: "d:a:b".into(),
            last_seq: 1,
        }];
        assert!(matches!(plan.assign_seqs(&only_direct), Err(StoreError::Invariant(_))));
    }

    #[test]
    fn a_stored_duplicate_takes_no_seq_and_moves_no_read_marker() {
        let resent = direct("a", "b", "x");
        let stored = MessageRow::plain(
            9,
            "d:a:b".into(),
            4,
            "a".into(),
            "x".into(),
            resent.text.clone(),
            1,
            None,
        );
        let mut plan = Plan::new(vec![resent, direct("a", "b", "y")]);
        plan.apply_existing(vec![stored]);
        assert_eq!(plan.seq_demand(), vec![("d:a:b", 1)], "only the new message");
        let rows = bumped(&plan, 4);
        plan.assign_seqs(&rows).expect("assign");
        assert_eq!(plan.read_marks(), vec![("d:a:b", "a", 5)]);
        insert_all(&mut plan);
        let results = plan.finish();
        let duplicate = results[0].clone().expect("duplicate");
        assert!(duplicate.duplicate);
        assert_eq!((duplicate.message.id, duplicate.message.seq), (9, 4), "the stored row");
        let new = results[1].clone().expect("stored");
        assert_eq!((new.message.id, new.message.seq, new.duplicate), (100, 5, false));
    }

    #[test]
    fn an_item_left_unresolved_is_an_invariant_error_never_a_success() {
        let planned_only = Plan::new(vec![direct("a", "b", "1")]);
        assert!(matches!(planned_only.finish()[0], Err(StoreError::Invariant(_))));
        let mut assigned_only = Plan::new(vec![direct("a", "b", "1")]);
        let rows = bumped(&assigned_only, 0);
        assigned_only.assign_seqs(&rows).expect("assign");
        assert!(matches!(assigned_only.finish()[0], Err(StoreError::Invariant(_))));
    }

    #[test]
    fn inserted_rows_give_each_message_its_id_and_fields() {
        let mut message = group("a", "g1", "1");
        message.text = "hello".into();
        message.reply_to = Some(3);
        let mut plan = Plan::new(vec![message]);
        plan.apply_membership(&[MemberRow {
            conversation_id: "g:g1".into(),
            uid: "a".into(),
        }]);
        let rows = bumped(&plan, 2);
        plan.assign_seqs(&rows).expect("assign");
        let new_rows = plan.new_rows();
        assert_eq!(new_rows.len(), 1);
        let row = new_rows[0];
        assert_eq!(
            (
                row.conversation,
                row.seq,
                row.sender,
                row.cid,
                row.text,
                row.ts_ms,
                row.reply_to
            ),
            ("g:g1", 3, "a", "1", "hello", 7, Some(3))
        );
        insert_all(&mut plan);
        let stored = plan.finish().pop().expect("one").expect("stored").message;
        assert_eq!(
            (stored.id, stored.seq, stored.group.as_deref(), stored.to),
            (100, 3, Some("g1"), None)
        );
        assert_eq!((stored.text.as_str(), stored.reply_to), ("hello", Some(3)));
    }
}
