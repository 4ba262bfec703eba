//! The writer of [`GroupCommitter::spawn_sink`](crate::GroupCommitter::spawn_sink), for
//! benchmarks only: it answers every job as a committed batch would and writes nothing, so that
//! a benchmark measures the chat path without its storage.
//!
//! It keeps what the answers need and nothing per message: each conversation's last `seq`
//! and each member's markers (memory grows with conversations, not with messages). It does
//! not know members, groups, blocks or earlier sends: every message is accepted as new (a
//! resend gets a new `seq`), and a group receipt names no author.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::committer::{Counters, GroupCommitConfig, GroupCommitter, Job, Meters};
use crate::error::StoreError;
use crate::ids::{direct_conversation_id, group_conversation_id};
use crate::markers::{Marker, MarkerMove, MarkerRequest};
use crate::model::{Appended, ConversationRef, EventKind, NewMessage, StoredMessage};

impl GroupCommitter {
    /// **For benchmarks only.** A committer whose writer answers every message and marker from
    /// memory and writes nothing (see the module docs): the same queue, thread, batching and
    /// wake-ups as [`GroupCommitter::spawn`], without the database, so that a benchmark can
    /// measure the chat path apart from its storage. Messages are lost by design; never use it
    /// to serve.
    pub async fn spawn_sink(config: GroupCommitConfig) -> Result<GroupCommitter, StoreError> {
        GroupCommitter::start(config, |jobs, max_batch, counters, meters| async move {
            run(jobs, max_batch, &counters, &meters).await;
        })
        .await
    }
}

/// Drains the queue in batches as the real writer does and answers from a [`Sink`].
async fn run(mut jobs: mpsc::Receiver<Job>, max_batch: usize, counters: &Counters, meters: &Meters) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut sink = Sink::default();
    while jobs.recv_many(&mut batch, max_batch).await > 0 {
        let started = Instant::now();
        let (mut messages, mut markers) = (0, 0);
        for job in batch.drain(..) {
            match job {
                Job::Append { message, reply } => {
                    messages += 1;
                    // The caller may have gone away, as with a real commit.
                    let _ = reply.send(Ok(sink.append(message)));
                }
                Job::Marker { request, reply } => {
                    markers += 1;
                    let _ = reply.send(Ok(sink.move_marker(&request)));
                }
            }
        }
        let elapsed = started.elapsed();
        if messages > 0 {
            meters.messages.batch(messages, elapsed);
            counters.messages_stored.fetch_add(messages as u64, Ordering::Relaxed);
        }
        if markers > 0 {
            meters.markers.batch(markers, elapsed);
        }
        counters.batches_committed.fetch_add(1, Ordering::Relaxed);
        meters.queue_depth.set(jobs.len() as f64);
    }
    tracing::debug!("group committer (sink) stopped");
}

/// What the sink remembers: per conversation its last `seq`, per member its markers.
#[derive(Default)]
struct Sink {
    /// The last message id given.
    last_id: i64,
    /// Each conversation's last `seq`.
    last_seq: HashMap<String, i64>,
    /// Per conversation, each member's read and delivered markers.
    markers: HashMap<String, HashMap<String, (i64, i64)>>,
}

impl Sink {
    /// Gives `message` the next id and the next `seq` of its conversation.
    fn append(&mut self, message: NewMessage) -> Appended {
        let (conversation, to, group) = match message.conversation {
            ConversationRef::Direct { to } => (direct_conversation_id(&message.sender, &to), Some(to), None),
            ConversationRef::Group { id } => (group_conversation_id(&id), None, Some(id)),
        };
        // Looked up before it is inserted: a key is copied once per conversation, not per
        // message.
        let seq = match self.last_seq.get_mut(&conversation) {
            Some(last) => {
                *last += 1;
                *last
            }
            None => {
                self.last_seq.insert(conversation.clone(), 1);
                1
            }
        };
        self.last_id += 1;
        Appended {
            message: StoredMessage {
                id: self.last_id,
                conversation,
                seq,
                sender: message.sender,
                to,
                group,
                cid: message.cid,
                text: message.text,
                ts_ms: message.ts_ms,
                kind: EventKind::Message,
                target: None,
                reply_to: message.reply_to,
                edited_ms: None,
                deleted: false,
                reactions: None,
            },
            duplicate: false,
        }
    }

    /// Moves a marker forward, never past the conversation's last `seq`.
    fn move_marker(&mut self, request: &MarkerRequest) -> MarkerMove {
        let last_seq = self.last_seq.get(&request.conversation).copied().unwrap_or(0);
        let members = match self.markers.get_mut(&request.conversation) {
            Some(members) => members,
            None => self.markers.entry(request.conversation.clone()).or_default(),
        };
        let (read, delivered) = match members.get_mut(&request.uid) {
            Some(markers) => markers,
            None => members.entry(request.uid.clone()).or_insert((0, 0)),
        };
        let marker = match request.marker {
            Marker::Read => read,
            Marker::Delivered => delivered,
        };
        let to = request.seq.min(last_seq);
        let moved = to > *marker;
        if moved {
            *marker = to;
        }
        MarkerMove {
            marker: *marker,
            last_seq,
            moved,
            author: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(to: &str, sender: &str, cid: &str) -> NewMessage {
        NewMessage {
            conversation: ConversationRef::Direct { to: to.into() },
            sender: sender.into(),
            cid: cid.into(),
            text: "hi".into(),
            ts_ms: 1,
            reply_to: None,
        }
    }

    #[test]
    fn each_conversation_counts_its_own_seq_and_ids_are_unique() {
        let mut sink = Sink::default();
        let first = sink.append(to("ben", "ann", "1")).message;
        let answer = sink.append(to("ann", "ben", "1")).message;
        let other = sink.append(to("cat", "ann", "2")).message;
        assert_eq!((first.conversation.as_str(), first.seq), ("d:ann:ben", 1));
        assert_eq!(
            (answer.conversation.as_str(), answer.seq),
            ("d:ann:ben", 2),
            "one conversation both ways"
        );
        assert_eq!((other.conversation.as_str(), other.seq), ("d:ann:cat", 1));
        assert_eq!([first.id, answer.id, other.id], [1, 2, 3]);
        assert_eq!(answer.to.as_deref(), Some("ann"));
    }

    #[test]
    fn a_marker_moves_forward_only_and_never_past_the_last_seq() {
        let mut sink = Sink::default();
        for cid in ["1", "2", "3"] {
            sink.append(to("ben", "ann", cid));
        }
        let read = |seq| MarkerRequest {
            uid: "ben".into(),
            conversation: "d:ann:ben".into(),
            seq,
            marker: Marker::Read,
        };
        let moved = sink.move_marker(&read(2));
        assert_eq!((moved.moved, moved.marker, moved.last_seq), (true, 2, 3));
        let back = sink.move_marker(&read(1));
        assert_eq!((back.moved, back.marker), (false, 2), "never back");
        let past = sink.move_marker(&read(9));
        assert_eq!((past.moved, past.marker), (true, 3), "capped at the last seq");
        let delivered = MarkerRequest {
            marker: Marker::Delivered,
            ..read(1)
        };
        assert_eq!(sink.move_marker(&delivered).marker, 1, "each marker on its own");
    }
}
