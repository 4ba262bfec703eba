//! Read-your-writes for sessions that travel with events.
//!
//! The gateway attaches a client's session to each event as it reads it. When a handler writes
//! the session, events the gateway had already read are on their way with the older one; the
//! gateway's answer to the write says up to which event that is. [`SessionWrites`] remembers
//! the write for those events and hands it to each as its handler starts, so a handler always
//! sees what the client's previous handler wrote.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_proto::v1::Event;
use tokio::time::Instant;

/// How long a write is remembered at most: the events it corrects were already on their way
/// when it was written (a given-back event comes again within seconds).
const KEEP_FOR: Duration = Duration::from_secs(60);

/// The sessions this worker wrote on one gateway link, by connection.
#[derive(Default)]
pub(crate) struct SessionWrites {
    writes: Mutex<HashMap<u64, Write>>,
    /// Whether `writes` holds anything: the per-event check is one atomic load.
    any: AtomicBool,
}

/// One write: events of the connection up to `after_seq` carry the older session.
struct Write {
    after_seq: u64,
    session: Bytes,
    at: Instant,
}

impl SessionWrites {
    /// Remembers that `session` was written for `conn` after its event `after_seq` was read.
    pub(crate) fn remember(&self, conn: u64, after_seq: u64, session: Bytes) {
        self.remember_at(conn, after_seq, session, Instant::now());
    }

    /// [`SessionWrites::remember`] at a given time (older writes age out).
    fn remember_at(&self, conn: u64, after_seq: u64, session: Bytes, now: Instant) {
        let mut writes = self.writes.lock().expect("session writes poisoned");
        writes.retain(|_, w| now.duration_since(w.at) < KEEP_FOR);
        writes.insert(
            conn,
            Write {
                after_seq,
                session,
                at: now,
            },
        );
        self.any.store(true, Ordering::Release);
    }

    /// Gives `event` the session written last for its client if the gateway read the event
    /// before that write; forgets the write once a later event comes (that one carries it).
    pub(crate) fn refresh(&self, event: &mut Event) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut writes = self.writes.lock().expect("session writes poisoned");
        if let Some(write) = writes.get(&event.conn) {
            if event.seq <= write.after_seq {
                event.session = write.session.clone();
            } else {
                writes.remove(&event.conn);
            }
        }
        if writes.is_empty() {
            self.any.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(conn: u64, seq: u64, session: &'static str) -> Event {
        Event {
            conn,
            seq,
            session: Bytes::from_static(session.as_bytes()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn events_read_before_a_write_get_it_and_the_first_later_one_ends_the_correction() {
        let writes = SessionWrites::default();
        let mut untouched = event(1, 1, "{}");
        writes.refresh(&mut untouched);
        assert_eq!(untouched.session, "{}", "nothing written: events keep their session");

        // Handler of event 1 wrote {"n":1} while events 2 and 3 were already on their way.
        writes.remember(1, 3, Bytes::from_static(b"{\"n\":1}"));
        let mut second = event(1, 2, "{}");
        writes.refresh(&mut second);
        assert_eq!(second.session, "{\"n\":1}");
        let mut other_client = event(2, 2, "{\"x\":0}");
        writes.refresh(&mut other_client);
        assert_eq!(other_client.session, "{\"x\":0}", "other clients are not touched");
        let mut third = event(1, 3, "{}");
        writes.refresh(&mut third);
        assert_eq!(third.session, "{\"n\":1}");

        // Event 4 was read after the write: it carries the new session itself.
        let mut fourth = event(1, 4, "{\"n\":2}");
        writes.refresh(&mut fourth);
        assert_eq!(fourth.session, "{\"n\":2}", "a later event's own session wins");
        assert!(!writes.any.load(Ordering::Acquire), "the write is forgotten");
    }

    #[tokio::test]
    async fn writes_are_forgotten_after_a_minute() {
        let writes = SessionWrites::default();
        let start = Instant::now();
        writes.remember_at(1, 5, Bytes::from_static(b"{\"old\":1}"), start);
        let later = start + KEEP_FOR + Duration::from_secs(1);
        writes.remember_at(2, 1, Bytes::from_static(b"{}"), later);
        assert_eq!(writes.writes.lock().unwrap().len(), 1, "client 1's write aged out");
    }
}
