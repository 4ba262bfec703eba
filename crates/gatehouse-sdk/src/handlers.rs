//! The handlers running for one gateway link, polled by the link's own task: no task per client,
//! no cross-thread wake-up per event. Each client has at most one handler running; its later
//! events wait in order.
//!
//! A handler is polled once as soon as its event arrives: one that finishes without waiting
//! (a relay, a reply) never enters the set of running futures, which saves that set's
//! bookkeeping (a task allocation and a wake-up queue entry) on the common path.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::FuturesUnordered;
use gatehouse_proto::v1::{Event, EventAck};

/// A handler run for one event: resolves to the client's connection number and the event's
/// acknowledgement.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = (u64, EventAck)> + Send>>;

/// The running handlers of one link and the events waiting behind them.
#[derive(Default)]
pub(crate) struct EventLoop {
    /// Handlers that had to wait, polled by the link task.
    pub running: FuturesUnordered<HandlerFuture>,
    /// Clients with a running handler, and their queued events.
    busy: HashMap<u64, VecDeque<Event>>,
    /// Acknowledgements waiting for room in the link's queue.
    pub overflow: VecDeque<EventAck>,
}

impl EventLoop {
    /// Starts (with `start`) or queues the handler of `event`; returns its acknowledgement if it
    /// finished at once.
    pub fn admit(&mut self, event: Event, start: impl FnOnce(Event) -> HandlerFuture) -> Option<EventAck> {
        if let Some(queue) = self.busy.get_mut(&event.conn) {
            queue.push_back(event);
            return None;
        }
        let conn = event.conn;
        let ack = self.start(start(event));
        if ack.is_none() {
            self.busy.insert(conn, VecDeque::new());
        }
        ack
    }

    /// A handler of `conn` finished: starts its queued events in order until one has to wait.
    /// Returns the acknowledgements of those that finished at once.
    pub fn finished(&mut self, conn: u64, mut start: impl FnMut(Event) -> HandlerFuture) -> Vec<EventAck> {
        let mut acks = Vec::new();
        while let Some(event) = self.busy.get_mut(&conn).and_then(VecDeque::pop_front) {
            match self.start(start(event)) {
                Some(ack) => acks.push(ack),
                None => return acks,
            }
        }
        self.busy.remove(&conn);
        acks
    }

    /// Polls a new handler once; if it has to wait, it joins the running set, whose next poll
    /// registers the link task's waker (the first poll used a no-op waker).
    fn start(&mut self, mut handler: HandlerFuture) -> Option<EventAck> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match handler.as_mut().poll(&mut cx) {
            std::task::Poll::Ready((_, ack)) => Some(ack),
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

    fn ack(conn: u64, seq: u64) -> EventAck {
        EventAck {
            conn,
            seq,
            reject: None,
        }
    }

    /// A handler that finishes at once.
    fn instant(event: Event) -> HandlerFuture {
        Box::pin(std::future::ready((event.conn, ack(event.conn, event.seq))))
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
        gates.remove(0).send(()).unwrap();
        let (conn, done) = events.running.next().await.unwrap();
        assert_eq!((conn, done), (1, ack(1, 1)));
        assert_eq!(
            events.finished(1, instant),
            [ack(1, 2)],
            "the queued event runs next, in order"
        );
        assert_eq!(
            events.admit(event(1, 3), instant),
            Some(ack(1, 3)),
            "the client is free again"
        );
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
        events.running.next().await.unwrap();
        // 2 finishes at once, 3 has to wait: 4 stays queued behind it.
        let mut first = true;
        let acks = events.finished(1, |e| {
            if e.seq == 3 && first {
                first = false;
                gated(&started, &mut gates, e)
            } else {
                instant(e)
            }
        });
        assert_eq!(acks, [ack(1, 2)]);
        assert_eq!(*started.lock().unwrap(), [(1, 1), (1, 3)]);
        assert_eq!(events.admit(event(1, 5), instant), None, "still busy with 3");
        gates.remove(0).send(()).unwrap();
        assert_eq!(events.running.next().await.unwrap().1, ack(1, 3));
        assert_eq!(events.finished(1, instant), [ack(1, 4), ack(1, 5)]);
    }
}
