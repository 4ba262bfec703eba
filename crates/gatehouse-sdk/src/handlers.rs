//! The handlers running for one gateway link, polled by the link's own task: no task per client,
//! no cross-thread wake-up per event. Each client has at most one handler running; its later
//! events wait in order.
//!
//! A handler is polled once as soon as its event arrives: one that finishes without waiting
//! (a relay, a reply) never enters the set of running futures, which saves that set's
//! bookkeeping (a task allocation and a wake-up queue entry) on the common path.
//!
//! A handler that fails with a transient cluster error gives its event back (a nack): the
//! gateway delivers it again, with the client's later events after it. Events of that client
//! already queued here are dropped, and so are later ones still in flight from the gateway,
//! until the gateway sends the given-back event again: the client's order never breaks.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use gatehouse_proto::v1::{Event, EventAck, EventNack};
use tokio::time::Instant;

/// What became of one event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Handled: acknowledge it.
    Ack(EventAck),
    /// Not handled (a transient failure): give it, and the client's later events, back.
    Nack(EventNack),
}

/// A handler run for one event: resolves to the client's connection number and what became of
/// the event.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = (u64, Outcome)> + Send>>;

/// How long a given-back client's later events are dropped at most: the gateway answers a nack
/// within its back-off (5 s at most); an entry is kept a while longer, then forgotten.
const GIVEN_BACK_FOR: Duration = Duration::from_secs(60);

/// The running handlers of one link and the events waiting behind them.
#[derive(Default)]
pub(crate) struct EventLoop {
    /// Handlers that had to wait, polled by the link task.
    pub running: FuturesUnordered<HandlerFuture>,
    /// Clients with a running handler, and their queued events.
    busy: HashMap<u64, VecDeque<Event>>,
    /// Clients whose events were given back from a seq on, and since when.
    given_back: HashMap<u64, (u64, Instant)>,
    /// Outcomes waiting for room in the link's queue.
    pub overflow: VecDeque<Outcome>,
    /// Events admitted and not answered yet (running or queued).
    open: usize,
}

impl EventLoop {
    /// Starts (with `start`) or queues the handler of `event`; returns its outcome if it
    /// finished at once.
    pub fn admit(&mut self, event: Event, start: impl FnOnce(Event) -> HandlerFuture) -> Option<Outcome> {
        // Given-back clients are rare: no map look-up per event unless there are some.
        if !self.given_back.is_empty()
            && let Some(&(seq, _)) = self.given_back.get(&event.conn)
        {
            if event.seq > seq {
                return None; // comes again after the given-back one
            }
            if event.seq == seq {
                self.given_back.remove(&event.conn);
            }
        }
        self.open += 1;
        if let Some(queue) = self.busy.get_mut(&event.conn) {
            queue.push_back(event);
            return None;
        }
        let conn = event.conn;
        match self.start(start(event)) {
            Some(outcome) => {
                self.settle(conn, &outcome);
                Some(outcome)
            }
            None => {
                self.busy.insert(conn, VecDeque::new());
                None
            }
        }
    }

    /// A running handler of `conn` ended with `outcome`: starts its queued events in order
    /// until one has to wait (or gives its events back). Returns the outcomes of those that
    /// finished at once.
    pub fn finished(
        &mut self,
        conn: u64,
        outcome: &Outcome,
        mut start: impl FnMut(Event) -> HandlerFuture,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        if !self.settle(conn, outcome) {
            return outcomes;
        }
        while let Some(event) = self.busy.get_mut(&conn).and_then(VecDeque::pop_front) {
            match self.start(start(event)) {
                Some(outcome) => {
                    let go_on = self.settle(conn, &outcome);
                    outcomes.push(outcome);
                    if !go_on {
                        return outcomes;
                    }
                }
                None => return outcomes,
            }
        }
        self.busy.remove(&conn);
        outcomes
    }

    /// Whether nothing is running, queued or waiting to be sent.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.open == 0 && self.overflow.is_empty()
    }

    /// Events admitted and not answered, plus outcomes not yet queued for the gateway.
    pub fn unanswered(&self) -> usize {
        self.open + self.overflow.len()
    }

    /// Accounts for one answered event; a nack drops the client's queued events (they come
    /// again) and remembers from which seq. Returns whether the client's next events may run.
    fn settle(&mut self, conn: u64, outcome: &Outcome) -> bool {
        self.open -= 1;
        let Outcome::Nack(nack) = outcome else {
            return true;
        };
        if let Some(queued) = self.busy.remove(&conn) {
            self.open -= queued.len();
        }
        let now = Instant::now();
        self.given_back
            .retain(|_, (_, since)| now.duration_since(*since) < GIVEN_BACK_FOR);
        self.given_back.insert(conn, (nack.seq, now));
        false
    }

    /// Polls a new handler once; if it has to wait, it joins the running set, whose next poll
    /// registers the link task's waker (the first poll used a no-op waker).
    fn start(&mut self, mut handler: HandlerFuture) -> Option<Outcome> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match handler.as_mut().poll(&mut cx) {
            std::task::Poll::Ready((_, outcome)) => Some(outcome),
            std::task::Poll::Pending => {
                self.running.push(handler);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures_util::StreamExt;
    use tokio::sync::oneshot;

    use super::*;

    fn event(conn: u64, seq: u64) -> Event {
        Event {
            conn,
            seq,
            ..Default::default()
        }
    }

    fn ack(conn: u64, seq: u64) -> Outcome {
        Outcome::Ack(EventAck {
            conn,
            seq,
            reject: None,
        })
    }

    fn nack(conn: u64, seq: u64) -> Outcome {
        Outcome::Nack(EventNack { conn, seq })
    }

    /// A handler that finishes at once.
    fn instant(event: Event) -> HandlerFuture {
        Box::pin(std::future::ready((event.conn, ack(event.conn, event.seq))))
    }

    /// A handler that gives its event back at once.
    fn failing(event: Event) -> HandlerFuture {
        Box::pin(std::future::ready((event.conn, nack(event.conn, event.seq))))
    }

    /// A handler that waits for the test to release it; records when it started.
    fn gated(
        started: &Arc<Mutex<Vec<(u64, u64)>>>,
        gates: &mut Vec<oneshot::Sender<()>>,
        event: Event,
    ) -> HandlerFuture {
        started.lock().unwrap().push((event.conn, event.seq));
        let (tx, rx) = oneshot::channel();
        gates.push(tx);
        Box::pin(async move {
            let _ = rx.await;
            (event.conn, ack(event.conn, event.seq))
        })
    }

    #[test]
    fn a_handler_that_finishes_at_once_is_acknowledged_without_joining_the_running_set() {
        let mut events = EventLoop::default();
        assert_eq!(events.admit(event(1, 1), instant), Some(ack(1, 1)));
        assert!(events.running.is_empty());
        assert_eq!(
            events.admit(event(1, 2), instant),
            Some(ack(1, 2)),
            "no client stays busy"
        );
        assert!(events.is_idle());
    }

    #[tokio::test]
    async fn a_clients_later_events_wait_for_its_running_handler_while_other_clients_proceed() {
        let started = Arc::new(Mutex::new(Vec::new()));
        let mut gates = Vec::new();
        let mut events = EventLoop::default();
        assert_eq!(events.admit(event(1, 1), |e| gated(&started, &mut gates, e)), None);
        assert_eq!(events.admit(event(1, 2), instant), None, "queued behind seq 1");
        assert_eq!(
            events.admit(event(2, 1), instant),
            Some(ack(2, 1)),
            "another client is not held up"
        );
        assert_eq!(*started.lock().unwrap(), [(1, 1)]);
        assert_eq!(events.unanswered(), 2);
        gates.remove(0).send(()).unwrap();
        let (conn, done) = events.running.next().await.unwrap();
        assert_eq!((conn, &done), (1, &ack(1, 1)));
        assert_eq!(
            events.finished(1, &done, instant),
            [ack(1, 2)],
            "the queued event runs next, in order"
        );
        assert_eq!(
            events.admit(event(1, 3), instant),
            Some(ack(1, 3)),
            "the client is free again"
        );
        assert!(events.is_idle());
    }

    #[tokio::test]
    async fn queued_events_start_in_order_until_one_has_to_wait() {
        let started = Arc::new(Mutex::new(Vec::new()));
        let mut gates = Vec::new();
        let mut events = EventLoop::default();
        events.admit(event(1, 1), |e| gated(&started, &mut gates, e));
        for seq in 2..=4 {
            events.admit(event(1, seq), instant);
        }
        gates.remove(0).send(()).unwrap();
        let (_, done) = events.running.next().await.unwrap();
        // 2 finishes at once, 3 has to wait: 4 stays queued behind it.
        let mut first = true;
        let outcomes = events.finished(1, &done, |e| {
            if e.seq == 3 && first {
                first = false;
                gated(&started, &mut gates, e)
            } else {
                instant(e)
            }
        });
        assert_eq!(outcomes, [ack(1, 2)]);
        assert_eq!(*started.lock().unwrap(), [(1, 1), (1, 3)]);
        assert_eq!(events.admit(event(1, 5), instant), None, "still busy with 3");
        gates.remove(0).send(()).unwrap();
        let (_, done) = events.running.next().await.unwrap();
        assert_eq!(done, ack(1, 3));
        assert_eq!(events.finished(1, &done, instant), [ack(1, 4), ack(1, 5)]);
        assert!(events.is_idle());
    }

    #[tokio::test]
    async fn a_given_back_event_drops_the_clients_later_events_until_it_comes_again() {
        let mut events = EventLoop::default();
        let started = Arc::new(Mutex::new(Vec::new()));
        let mut gates = Vec::new();
        events.admit(event(1, 1), |e| gated(&started, &mut gates, e));
        events.admit(event(1, 2), failing);
        events.admit(event(1, 3), instant);
        gates.remove(0).send(()).unwrap();
        let (_, done) = events.running.next().await.unwrap();
        assert_eq!(
            events.finished(1, &done, failing),
            [nack(1, 2)],
            "2 is given back; 3, queued behind it, is dropped"
        );
        assert!(events.is_idle(), "nothing of the client is left here");
        assert_eq!(
            events.admit(event(1, 4), instant),
            None,
            "4 was still in flight: dropped"
        );
        assert_eq!(
            events.admit(event(2, 1), instant),
            Some(ack(2, 1)),
            "other clients are not affected"
        );
        assert_eq!(
            events.admit(event(1, 2), instant),
            Some(ack(1, 2)),
            "2 again, from the gateway"
        );
        assert_eq!(events.admit(event(1, 3), instant), Some(ack(1, 3)));
        assert!(events.is_idle());
    }

    #[tokio::test]
    async fn a_running_handler_that_gives_its_event_back_drops_the_clients_queued_events() {
        let mut events = EventLoop::default();
        let (release, released) = oneshot::channel::<()>();
        let giving_back: HandlerFuture = Box::pin(async move {
            let _ = released.await;
            (1, nack(1, 1))
        });
        assert_eq!(events.admit(event(1, 1), |_| giving_back), None);
        events.admit(event(1, 2), instant);
        assert_eq!(events.unanswered(), 2);
        release.send(()).unwrap();
        let (conn, done) = events.running.next().await.unwrap();
        assert!(
            events.finished(conn, &done, instant).is_empty(),
            "2 waits for 1 to come again"
        );
        assert!(events.is_idle());
        assert_eq!(events.admit(event(1, 2), instant), None, "still in flight: dropped");
        assert_eq!(events.admit(event(1, 1), instant), Some(ack(1, 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_given_back_client_is_forgotten_after_a_while() {
        let mut events = EventLoop::default();
        events.admit(event(1, 2), failing);
        tokio::time::advance(GIVEN_BACK_FOR).await;
        events.admit(event(2, 1), failing);
        assert_eq!(
            events.admit(event(1, 5), instant),
            Some(ack(1, 5)),
            "the gateway long since sent 2 again elsewhere"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_given_back_client_is_remembered_within_the_while() {
        let mut events = EventLoop::default();
        events.admit(event(1, 2), failing);
        tokio::time::advance(GIVEN_BACK_FOR - Duration::from_millis(1)).await;
        events.admit(event(2, 1), failing);
        assert_eq!(events.admit(event(1, 5), instant), None);
    }

    #[test]
    fn outcomes_waiting_for_the_queue_count_as_unanswered() {
        let mut events = EventLoop::default();
        events.overflow.push_back(ack(1, 1));
        assert_eq!(events.unanswered(), 1);
        assert!(!events.is_idle());
    }
}
