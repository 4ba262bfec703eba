//! The handlers running for one gateway link, polled by the link's own task: no task per client,
//! no cross-thread wake-up per event. Each client's events start in order, one at a time: a
//! running handler holds its client's order and the client's later events wait behind it.
//!
//! A handler may give its order up before it ends ([`Context::release_order`](crate::Context::release_order)):
//! the client's next events start while it still runs (a receipt waiting for its commit need
//! not hold up the client's next message). Its outcome, and those of every later event of the
//! client, still reach the gateway in order: acknowledgements are cumulative per client, so an
//! event is acknowledged only once it and every earlier one ended. A worker that dies meanwhile
//! leaves them all unacknowledged, and the gateway delivers them again.
//!
//! A handler is polled once as soon as its event arrives: one that finishes without waiting
//! (a relay, a reply) never enters the set of running futures, which saves that set's
//! bookkeeping (a task allocation and a wake-up queue entry) on the common path.
//!
//! A handler that fails with a transient cluster error gives its event back (a nack): the
//! gateway delivers it again, with the client's later events after it. Events of that client
//! already queued here are dropped, later handlers that already ran have their outcomes
//! dropped (they run again), and later events still in flight from the gateway are dropped
//! until the gateway sends the given-back event again: the client's order never breaks.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
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

/// Names one started handler within a link, across its sessions: what a handler gives its
/// order up with, and how the loop finds a handler's place when it ends (a handler whose
/// outcome was dropped can end after its event came again and started anew).
pub(crate) type Ticket = u64;

/// How long a given-back client's later events are dropped at most: the gateway answers a nack
/// within its back-off (5 s at most); an entry is kept a while longer, then forgotten.
const GIVEN_BACK_FOR: Duration = Duration::from_secs(60);

/// A running handler with its ticket.
pub(crate) struct Running {
    ticket: Ticket,
    handler: HandlerFuture,
}

impl Future for Running {
    type Output = (u64, Ticket, Outcome);

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let ticket = self.ticket;
        self.handler
            .as_mut()
            .poll(cx)
            .map(|(conn, outcome)| (conn, ticket, outcome))
    }
}

/// One client with a handler running or outcomes held back.
#[derive(Default)]
struct Client {
    /// Events waiting for the order.
    queue: VecDeque<Event>,
    /// The running handler that holds the client's order.
    holder: Option<Ticket>,
    /// Started events the order has moved past (they gave it up, or ran after one that did),
    /// earliest first, each with its outcome once it ended: outcomes leave from the front
    /// only, so the front never holds one.
    earlier: VecDeque<(Ticket, Option<Outcome>)>,
    /// An outcome held in `earlier` gives the client's events back: nothing more of the
    /// client starts.
    failed: bool,
}

/// The loop's accounting, apart from its clients so that both can be borrowed at once.
#[derive(Default)]
struct Books {
    /// Clients whose events were given back from a seq on, and since when.
    given_back: HashMap<u64, (u64, Instant)>,
    /// Events admitted and not answered yet (queued, running, or with a held outcome).
    open: usize,
    /// Handlers still running whose outcome will be dropped (an earlier event of their client
    /// was given back): unanswered until they end, so that a drain waits for them.
    dropped: usize,
    /// The next ticket.
    next_ticket: Ticket,
}

/// The running handlers of one link and the events waiting behind them.
pub(crate) struct EventLoop {
    /// Handlers that had to wait, polled by the link task.
    pub running: FuturesUnordered<Running>,
    /// Clients with a running handler, queued events or held outcomes.
    clients: HashMap<u64, Client>,
    books: Books,
    /// Outcomes waiting for room in the link's queue.
    pub overflow: VecDeque<Outcome>,
}

impl EventLoop {
    /// An empty loop whose tickets start at `first_ticket` (distinct per session of a link, so
    /// that a handler of an earlier session is never mistaken for one of this session).
    pub fn new(first_ticket: Ticket) -> EventLoop {
        EventLoop {
            running: FuturesUnordered::new(),
            clients: HashMap::new(),
            books: Books {
                next_ticket: first_ticket,
                ..Books::default()
            },
            overflow: VecDeque::new(),
        }
    }

    /// Starts (with `start`) or queues the handler of `event`; returns its outcome if it
    /// finished at once and nothing earlier of its client is pending.
    pub fn admit(&mut self, event: Event, mut start: impl FnMut(Event, Ticket) -> HandlerFuture) -> Option<Outcome> {
        let books = &mut self.books;
        // Given-back clients are rare: no map look-up per event unless there are some.
        if !books.given_back.is_empty()
            && let Some(&(seq, _)) = books.given_back.get(&event.conn)
        {
            if event.seq > seq {
                return None; // comes again after the given-back one
            }
            if event.seq == seq {
                books.given_back.remove(&event.conn);
            }
        }
        books.open += 1;
        let conn = event.conn;
        let mut outcome = AtMostOne(None);
        match self.clients.get_mut(&conn) {
            Some(client) => {
                client.queue.push_back(event);
                pump(client, books, &self.running, &mut start, &mut outcome);
                if client.is_done() {
                    self.clients.remove(&conn);
                }
            }
            // The common path: nothing of the client pending, no map entry unless it waits.
            None => {
                let mut client = Client::default();
                run(&mut client, books, &self.running, event, &mut start, &mut outcome);
                if !client.is_done() {
                    self.clients.insert(conn, client);
                }
            }
        }
        outcome.0
    }

    /// The running handler `ticket` of `conn` ended with `outcome`: sends on what is now in
    /// order, and starts the client's queued events if the order is free, until one has to
    /// wait. Returns the outcomes to send, in order.
    pub fn finished(
        &mut self,
        conn: u64,
        ticket: Ticket,
        outcome: Outcome,
        mut start: impl FnMut(Event, Ticket) -> HandlerFuture,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let books = &mut self.books;
        let Some(client) = self.clients.get_mut(&conn) else {
            books.dropped_ended();
            return outcomes;
        };
        if client.holder == Some(ticket) {
            client.holder = None;
            ended(client, books, ticket, outcome, &mut outcomes);
        } else if let Some(index) = client.earlier.iter().position(|(t, _)| *t == ticket) {
            if let Outcome::Nack(nack) = &outcome {
                fail(client, books, nack);
            }
            client.earlier[index].1 = Some(outcome);
            flush(client, books, &mut outcomes);
        } else {
            books.dropped_ended();
            return outcomes;
        }
        pump(client, books, &self.running, &mut start, &mut outcomes);
        if client.is_done() {
            self.clients.remove(&conn);
        }
        outcomes
    }

    /// The running handler `ticket` of `conn` gave its order up: the client's queued events
    /// start, until one has to wait. Returns the outcomes to send (none while the releasing
    /// handler runs; given for symmetry with [`EventLoop::finished`]).
    pub fn released(
        &mut self,
        conn: u64,
        ticket: Ticket,
        mut start: impl FnMut(Event, Ticket) -> HandlerFuture,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        // A handler that ended, or was dropped, before its release was seen gave nothing up.
        if let Some(client) = self.clients.get_mut(&conn)
            && client.holder == Some(ticket)
        {
            client.holder = None;
            client.earlier.push_back((ticket, None));
            pump(client, &mut self.books, &self.running, &mut start, &mut outcomes);
        }
        outcomes
    }

    /// Whether nothing is running, queued or waiting to be sent.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.unanswered() == 0
    }

    /// Events admitted and not answered, handlers running whose outcome will be dropped, plus
    /// outcomes not yet queued for the gateway.
    pub fn unanswered(&self) -> usize {
        self.books.open + self.books.dropped + self.overflow.len()
    }
}

/// Where [`EventLoop::admit`] collects its answer without allocating: it starts one event, so
/// at most one outcome can go out (a client with held outcomes holds the new one too).
struct AtMostOne(Option<Outcome>);

impl Extend<Outcome> for AtMostOne {
    fn extend<I: IntoIterator<Item = Outcome>>(&mut self, outcomes: I) {
        for outcome in outcomes {
            debug_assert!(self.0.is_none(), "one event starts, and nothing was held before it");
            self.0 = Some(outcome);
        }
    }
}

impl Client {
    /// Nothing runs, waits or is held: the entry goes.
    fn is_done(&self) -> bool {
        self.holder.is_none() && self.earlier.is_empty() && self.queue.is_empty()
    }
}

impl Books {
    fn ticket(&mut self) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        ticket
    }

    /// A handler whose outcome was dropped ended: it is no longer waited for.
    fn dropped_ended(&mut self) {
        debug_assert!(self.dropped > 0, "a handler ended that the loop does not know");
        self.dropped = self.dropped.saturating_sub(1);
    }

    /// Remembers that `conn`'s events were given back from `nack.seq` on, so that the later
    /// ones still in flight are dropped until it comes again.
    fn give_back(&mut self, nack: &EventNack) {
        let now = Instant::now();
        self.given_back
            .retain(|_, (_, since)| now.duration_since(*since) < GIVEN_BACK_FOR);
        self.given_back.insert(nack.conn, (nack.seq, now));
    }
}

/// Starts the client's queued events in order while nothing holds its order; a handler that
/// has to wait takes the order.
fn pump(
    client: &mut Client,
    books: &mut Books,
    running: &FuturesUnordered<Running>,
    start: &mut impl FnMut(Event, Ticket) -> HandlerFuture,
    outcomes: &mut impl Extend<Outcome>,
) {
    while client.holder.is_none() && !client.failed {
        let Some(event) = client.queue.pop_front() else {
            return;
        };
        run(client, books, running, event, start, outcomes);
    }
}

/// Starts the handler of `event`, the client's next in order, and polls it once at once; if
/// it has to wait, it joins the running set (whose next poll registers the link task's waker:
/// this poll used a no-op one) and takes the client's order.
fn run(
    client: &mut Client,
    books: &mut Books,
    running: &FuturesUnordered<Running>,
    event: Event,
    start: &mut impl FnMut(Event, Ticket) -> HandlerFuture,
    outcomes: &mut impl Extend<Outcome>,
) {
    let ticket = books.ticket();
    let mut handler = start(event, ticket);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match handler.as_mut().poll(&mut cx) {
        Poll::Ready((_, outcome)) => ended(client, books, ticket, outcome, outcomes),
        Poll::Pending => {
            running.push(Running { ticket, handler });
            client.holder = Some(ticket);
        }
    }
}

/// The latest started event of the client (nothing of it runs after it) ended: its outcome
/// goes out now if nothing earlier is pending, else waits behind.
fn ended(
    client: &mut Client,
    books: &mut Books,
    ticket: Ticket,
    outcome: Outcome,
    outcomes: &mut impl Extend<Outcome>,
) {
    if client.earlier.is_empty() {
        emit(client, books, outcome, outcomes);
        return;
    }
    if let Outcome::Nack(nack) = &outcome {
        fail(client, books, nack);
    }
    client.earlier.push_back((ticket, Some(outcome)));
}

/// A held outcome gives the client's events back: nothing more of it starts, its queued events
/// are dropped and later ones in flight will be (they come again after the given-back one).
fn fail(client: &mut Client, books: &mut Books, nack: &EventNack) {
    client.failed = true;
    books.open -= client.queue.len();
    client.queue.clear();
    books.give_back(nack);
}

/// Sends the outcomes at the front of `earlier` that ended.
fn flush(client: &mut Client, books: &mut Books, outcomes: &mut impl Extend<Outcome>) {
    while let Some((_, Some(_))) = client.earlier.front() {
        let Some((_, Some(outcome))) = client.earlier.pop_front() else {
            unreachable!("checked above");
        };
        emit(client, books, outcome, outcomes);
    }
}

/// Sends one outcome. A nack gives back the client's later events too: those queued are
/// dropped, those that ran have their outcomes dropped, and those still running are counted
/// until they end (their outcomes dropped too).
fn emit(client: &mut Client, books: &mut Books, outcome: Outcome, outcomes: &mut impl Extend<Outcome>) {
    books.open -= 1;
    if let Outcome::Nack(nack) = &outcome {
        books.open -= client.queue.len();
        client.queue.clear();
        for (_, held) in client.earlier.drain(..) {
            books.open -= 1;
            if held.is_none() {
                books.dropped += 1;
            }
        }
        if client.holder.take().is_some() {
            books.open -= 1;
            books.dropped += 1;
        }
        client.failed = false;
        books.give_back(nack);
    }
    outcomes.extend(Some(outcome));
}

#[cfg(test)]
mod tests {
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
    fn instant(event: Event, _: Ticket) -> HandlerFuture {
        Box::pin(std::future::ready((event.conn, ack(event.conn, event.seq))))
    }

    /// A handler that gives its event back at once.
    fn failing(event: Event, _: Ticket) -> HandlerFuture {
        Box::pin(std::future::ready((event.conn, nack(event.conn, event.seq))))
    }

    /// Handlers that wait for the test to end them, with what each will answer.
    #[derive(Default)]
    struct Gates {
        /// (conn, seq, ticket) of every gated handler started, in start order.
        started: Vec<(u64, u64, Ticket)>,
        /// (conn, seq, how to end it) of the handlers not ended yet, in start order.
        ends: Vec<(u64, u64, oneshot::Sender<Outcome>)>,
    }

    impl Gates {
        fn start(&mut self, event: Event, ticket: Ticket) -> HandlerFuture {
            self.started.push((event.conn, event.seq, ticket));
            let (tx, rx) = oneshot::channel();
            self.ends.push((event.conn, event.seq, tx));
            Box::pin(async move { (event.conn, rx.await.expect("the test ends every handler")) })
        }

        fn ticket(&self, conn: u64, seq: u64) -> Ticket {
            self.started.iter().rev().find(|s| (s.0, s.1) == (conn, seq)).unwrap().2
        }

        fn started(&self) -> Vec<(u64, u64)> {
            self.started.iter().map(|s| (s.0, s.1)).collect()
        }

        /// Ends the earliest started handler of (conn, seq) still running.
        fn end(&mut self, conn: u64, seq: u64, outcome: Outcome) {
            let index = self.ends.iter().position(|e| (e.0, e.1) == (conn, seq)).unwrap();
            self.ends.remove(index).2.send(outcome).unwrap();
        }
    }

    /// Waits for the next running handler to end and hands it to the loop.
    async fn next_end(events: &mut EventLoop, start: impl FnMut(Event, Ticket) -> HandlerFuture) -> Vec<Outcome> {
        let (conn, ticket, outcome) = events.running.next().await.unwrap();
        events.finished(conn, ticket, outcome, start)
    }

    #[test]
    fn a_handler_that_finishes_at_once_is_acknowledged_without_joining_the_running_set() {
        let mut events = EventLoop::new(0);
        assert_eq!(events.admit(event(1, 1), instant), Some(ack(1, 1)));
        assert!(events.running.is_empty());
        assert_eq!(
            events.admit(event(1, 2), instant),
            Some(ack(1, 2)),
            "no client stays busy"
        );
        assert!(events.clients.is_empty(), "no entry for a client that never waited");
        assert!(events.is_idle());
    }

    #[tokio::test]
    async fn a_clients_later_events_wait_for_its_running_handler_while_other_clients_proceed() {
        let mut gates = Gates::default();
        let mut events = EventLoop::new(0);
        assert_eq!(events.admit(event(1, 1), |e, t| gates.start(e, t)), None);
        assert_eq!(events.admit(event(1, 2), instant), None, "queued behind seq 1");
        assert_eq!(
            events.admit(event(2, 1), instant),
            Some(ack(2, 1)),
            "another client is not held up"
        );
        assert_eq!(gates.started(), [(1, 1)]);
        assert_eq!(events.unanswered(), 2);
        gates.end(1, 1, ack(1, 1));
        assert_eq!(
            next_end(&mut events, instant).await,
            [ack(1, 1), ack(1, 2)],
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
        let mut gates = Gates::default();
        let mut events = EventLoop::new(0);
        events.admit(event(1, 1), |e, t| gates.start(e, t));
        for seq in 2..=4 {
            events.admit(event(1, seq), instant);
        }
        gates.end(1, 1, ack(1, 1));
        // 2 finishes at once, 3 has to wait: 4 stays queued behind it.
        let outcomes = next_end(
            &mut events,
            |e, t| {
                if e.seq == 3 { gates.start(e, t) } else { instant(e, t) }
            },
        )
        .await;
        assert_eq!(outcomes, [ack(1, 1), ack(1, 2)]);
        assert_eq!(gates.started(), [(1, 1), (1, 3)]);
        assert_eq!(events.admit(event(1, 5), instant), None, "still busy with 3");
        gates.end(1, 3, ack(1, 3));
        assert_eq!(next_end(&mut events, instant).await, [ack(1, 3), ack(1, 4), ack(1, 5)]);
        assert!(events.is_idle());
    }

    #[tokio::test]
    async fn a_given_back_event_drops_the_clients_later_events_until_it_comes_again() {
        let mut events = EventLoop::new(0);
        let mut gates = Gates::default();
        events.admit(event(1, 1), |e, t| gates.start(e, t));
        events.admit(event(1, 2), failing);
        events.admit(event(1, 3), instant);
        gates.end(1, 1, ack(1, 1));
        assert_eq!(
            next_end(&mut events, failing).await,
            [ack(1, 1), nack(1, 2)],
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
        let mut events = EventLoop::new(0);
        let mut gates = Gates::default();
        assert_eq!(events.admit(event(1, 1), |e, t| gates.start(e, t)), None);
        events.admit(event(1, 2), instant);
        assert_eq!(events.unanswered(), 2);
        gates.end(1, 1, nack(1, 1));
        assert_eq!(
            next_end(&mut events, instant).await,
            [nack(1, 1)],
            "2 waits for 1 to come again"
        );
        assert!(events.is_idle());
        assert_eq!(events.admit(event(1, 2), instant), None, "still in flight: dropped");
        assert_eq!(events.admit(event(1, 1), instant), Some(ack(1, 1)));
    }

    #[tokio::test]
    async fn a_handler_that_gives_its_order_up_lets_the_clients_next_events_run_and_is_acknowledged_before_them() {
        let mut gates = Gates::default();
        let mut events = EventLoop::new(0);
        events.admit(event(1, 1), |e, t| gates.start(e, t));
        assert_eq!(events.admit(event(1, 2), instant), None, "queued behind 1");
        let ticket = gates.ticket(1, 1);
        assert!(
            events.released(1, ticket, instant).is_empty(),
            "2 ran, but its ack waits for 1's"
        );
        assert_eq!(
            events.admit(event(1, 3), instant),
            None,
            "3 runs at once, and waits too"
        );
        assert_eq!(events.unanswered(), 3);
        gates.end(1, 1, ack(1, 1));
        assert_eq!(
            next_end(&mut events, instant).await,
            [ack(1, 1), ack(1, 2), ack(1, 3)],
            "every outcome in order once 1 ended"
        );
        assert!(events.is_idle());
        assert!(events.clients.is_empty());
    }

    #[tokio::test]
    async fn after_a_release_the_next_handler_that_waits_holds_the_order_again() {
        let mut gates = Gates::default();
        let mut events = EventLoop::new(0);
        events.admit(event(1, 1), |e, t| gates.start(e, t));
        events.admit(event(1, 2), instant);
        events.admit(event(1, 3), instant);
        let first = gates.ticket(1, 1);
        let started = events.released(1, first, |e, t| gates.start(e, t));
        assert!(started.is_empty());
        assert_eq!(gates.started(), [(1, 1), (1, 2)], "2 holds the order: 3 waits");
        gates.end(1, 2, ack(1, 2));
        assert!(
            next_end(&mut events, instant).await.is_empty(),
            "2 and 3 ended, both wait for 1"
        );
        gates.end(1, 1, ack(1, 1));
        assert_eq!(next_end(&mut events, instant).await, [ack(1, 1), ack(1, 2), ack(1, 3)]);
        assert!(events.is_idle());
    }

    #[tokio::test]
    async fn a_release_that_comes_after_its_handler_ended_changes_nothing() {
        let mut gates = Gates::default();
        let mut events = EventLoop::new(0);
        events.admit(event(1, 1), |e, t| gates.start(e, t));
        let first = gates.ticket(1, 1);
        gates.end(1, 1, ack(1, 1));
        assert_eq!(next_end(&mut events, instant).await, [ack(1, 1)]);
        events.admit(event(1, 2), |e, t| gates.start(e, t));
        events.admit(event(1, 3), instant);
        assert!(events.released(1, first, instant).is_empty());
        assert_eq!(events.unanswered(), 2, "3 still waits for 2");
        gates.end(1, 2, ack(1, 2));
        assert_eq!(next_end(&mut events, instant).await, [ack(1, 2), ack(1, 3)]);
    }

    #[tokio::test]
    async fn a_released_handler_that_gives_its_event_back_gives_back_the_later_ones_that_already_ran() {
        let mut gates = Gates::default();
        let mut events = EventLoop::new(0);
        events.admit(event(1, 1), |e, t| gates.start(e, t));
        events.admit(event(1, 2), instant);
        events.admit(event(1, 3), instant);
        events.released(1, gates.ticket(1, 1), |e, t| {
            if e.seq == 3 { gates.start(e, t) } else { instant(e, t) }
        });
        assert_eq!(gates.started(), [(1, 1), (1, 3)], "2 ran and ended, 3 runs");
        gates.end(1, 1, nack(1, 1));
        assert_eq!(
            next_end(&mut events, instant).await,
            [nack(1, 1)],
            "one nack: 2's ack is dropped (it comes again)"
        );
        assert_eq!(
            events.unanswered(),
            1,
            "3 still runs; a drain waits for it though its outcome is dropped"
        );
        assert_eq!(events.admit(event(1, 4), instant), None, "in flight: dropped");
        assert_eq!(events.admit(event(1, 1), instant), Some(ack(1, 1)), "1 again");
        assert_eq!(events.admit(event(1, 2), instant), Some(ack(1, 2)));
        assert_eq!(
            events.admit(event(1, 3), |e, t| gates.start(e, t)),
            None,
            "3 again, while its first run still goes on"
        );
        gates.end(1, 3, ack(1, 3));
        let mut outcomes = next_end(&mut events, instant).await;
        assert!(outcomes.is_empty(), "the first run of 3 ended: its outcome is dropped");
        gates.end(1, 3, ack(1, 3));
        outcomes = next_end(&mut events, instant).await;
        assert_eq!(outcomes, [ack(1, 3)], "the second run of 3 is acknowledged");
        assert!(events.is_idle());
    }

    #[tokio::test]
    async fn a_later_event_given_back_while_an_earlier_one_runs_waits_and_stops_the_client() {
        let mut gates = Gates::default();
        let mut events = EventLoop::new(0);
        events.admit(event(1, 1), |e, t| gates.start(e, t));
        events.admit(event(1, 2), failing);
        events.admit(event(1, 3), instant);
        assert!(events.released(1, gates.ticket(1, 1), failing).is_empty());
        assert_eq!(events.unanswered(), 2, "3 dropped behind the given-back 2");
        assert_eq!(events.admit(event(1, 4), instant), None, "in flight: dropped");
        gates.end(1, 1, ack(1, 1));
        assert_eq!(
            next_end(&mut events, instant).await,
            [ack(1, 1), nack(1, 2)],
            "the nack goes out after 1's ack"
        );
        assert!(events.is_idle());
        assert_eq!(events.admit(event(1, 2), instant), Some(ack(1, 2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_given_back_client_is_forgotten_after_a_while() {
        let mut events = EventLoop::new(0);
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
        let mut events = EventLoop::new(0);
        events.admit(event(1, 2), failing);
        tokio::time::advance(GIVEN_BACK_FOR - Duration::from_millis(1)).await;
        events.admit(event(2, 1), failing);
        assert_eq!(events.admit(event(1, 5), instant), None);
    }

    #[test]
    fn outcomes_waiting_for_the_queue_count_as_unanswered() {
        let mut events = EventLoop::new(0);
        events.overflow.push_back(ack(1, 1));
        assert_eq!(events.unanswered(), 1);
        assert!(!events.is_idle());
    }
}
