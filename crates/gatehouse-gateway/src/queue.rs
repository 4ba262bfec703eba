//! The send queue of one connection: bounded, free when empty, and the connection's kill switch.
//!
//! A tokio `mpsc` channel allocates a 32-slot block up front (about 1.5 KB per connection with
//! our item size) whether or not anything is ever sent; with 100,000 mostly idle connections
//! that is 150 MB. This queue is a `VecDeque` behind the connection's own (uncontended) mutex:
//! nothing is allocated until frames are queued, and the socket task takes everything queued in
//! one swap, so a burst costs one lock on each side.
//!
//! The socket task's waker lives under the same mutex and is kept between waits, so a wait
//! costs the lock it takes anyway plus a pointer comparison (no atomic waker registration), and
//! a push wakes the task only when it is actually waiting (a burst of pushes wakes it once). A
//! close request (slow consumer, destroy, shutdown) is an atomic code that the socket task reads
//! on every turn, also while a write to a stalled client is pending.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use tokio::time::Instant;

/// What the socket task of a connection is asked to do, in order with the frames around it.
pub(crate) enum Outbound {
    /// A frame for the client.
    Frame(Message),
    /// Write `last` (if any) after everything queued before it, then close with `close`.
    Close { last: Option<Message>, close: CloseFrame },
    /// Replace (or, with `None`, clear) the connection's deadline. It travels through the queue
    /// so that the socket task, which owns the timers, applies it in order with the frames.
    Deadline(Option<Deadline>),
}

/// A deadline the gateway enforces on one connection (a token's expiry, set by a worker).
#[derive(Debug, Clone)]
pub(crate) struct Deadline {
    /// When the connection is closed with `close`.
    pub at: Instant,
    /// A frame written to the client at the given instant, before `at`.
    pub warning: Option<(Instant, Message)>,
    /// The close frame sent at `at`.
    pub close: CloseFrame,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds its capacity: the client is a slow consumer.
    Full,
    /// The connection is closing.
    Closed,
}

/// What the socket task woke up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The connection must close now with this code (see [`SendQueue::kill_frame`]).
    Kill(u16),
    /// Frames were moved into the caller's batch; with the instant the first of them was
    /// queued when this burst is sampled for the delivery-latency histogram.
    Frames(Option<Instant>),
}

/// One burst in this many (a burst: frames queued to an empty queue until the socket task takes
/// them) records when it started, so the delivery histogram costs a clock read per 16 bursts,
/// not per frame.
const SAMPLE_BURSTS: u8 = 16;

/// The frames waiting for one client, and the request to close it now.
pub(crate) struct SendQueue {
    state: Mutex<State>,
    /// The requested close code; 0 while none was requested. Read without the lock on every
    /// turn of the socket task.
    kill: AtomicU16,
    /// Items queued before the client counts as a slow consumer.
    capacity: usize,
}

struct State {
    items: VecDeque<Outbound>,
    closed: bool,
    /// The reason sent with the kill code (set with it, read once when closing).
    kill_reason: Option<Utf8Bytes>,
    /// The socket task's waker, kept across waits.
    waker: Option<Waker>,
    /// Whether the socket task waits for a push or a kill.
    waiting: bool,
    /// Bursts so far (wrapping), to sample one in `SAMPLE_BURSTS`.
    bursts: u8,
    /// When the current burst's first frame was queued, if it is sampled.
    burst_since: Option<Instant>,
}

impl State {
    /// Records that the task polling with `cx` waits.
    fn wait(&mut self, cx: &Context<'_>) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        self.waiting = true;
    }

    /// Wakes the socket task if it waits.
    fn wake(&mut self) {
        if std::mem::take(&mut self.waiting)
            && let Some(waker) = &self.waker
        {
            waker.wake_by_ref();
        }
    }
}

impl SendQueue {
    pub(crate) fn new(capacity: usize) -> SendQueue {
        SendQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
                kill_reason: None,
                waker: None,
                waiting: false,
                bursts: 0,
                burst_since: None,
            }),
            kill: AtomicU16::new(0),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("send queue poisoned")
    }

    /// Queues an item for the socket task, or says why not.
    pub(crate) fn push(&self, item: Outbound) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.items.len() >= self.capacity {
            return Err(PushError::Full);
        }
        if state.items.is_empty() {
            state.bursts = state.bursts.wrapping_add(1);
            if state.bursts.is_multiple_of(SAMPLE_BURSTS) {
                state.burst_since = Some(Instant::now());
            }
        }
        state.items.push_back(item);
        state.wake();
        Ok(())
    }

    /// Asks the socket task to close the connection now with `code` and `reason`; returns
    /// whether this was the first request (later ones are ignored).
    pub(crate) fn kill(&self, code: u16, reason: impl Into<Utf8Bytes>) -> bool {
        let mut state = self.lock();
        let first = self
            .kill
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            state.kill_reason = Some(reason.into());
        }
        // The code is stored under the lock: a waiter that checks the code under the lock either
        // sees it or is already marked waiting (and is woken here).
        state.wake();
        first
    }

    /// The close frame of a requested kill.
    pub(crate) fn kill_frame(&self) -> Option<CloseFrame> {
        let code = self.killed()?;
        let reason = self.lock().kill_reason.clone().unwrap_or_default();
        Some(CloseFrame { code, reason })
    }

    fn killed(&self) -> Option<u16> {
        match self.kill.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Waits until a kill is requested or something is queued; moves everything queued into
    /// `batch` (which must be empty; its capacity is reused by the next swap).
    pub(crate) fn next<'a>(&'a self, batch: &'a mut VecDeque<Outbound>) -> impl Future<Output = Next> + 'a {
        std::future::poll_fn(move |cx| {
            if let Some(code) = self.killed() {
                return Poll::Ready(Next::Kill(code));
            }
            let mut state = self.lock();
            if let Some(code) = self.killed() {
                return Poll::Ready(Next::Kill(code));
            }
            if state.items.is_empty() {
                state.wait(cx);
                return Poll::Pending;
            }
            std::mem::swap(&mut state.items, batch);
            Poll::Ready(Next::Frames(state.burst_since.take()))
        })
    }

    /// Frees the queue's room when it is empty, with `batch` (the socket task's half of the
    /// swap, see [`SendQueue::next`]): both keep their capacity while frames flow, and an idle
    /// connection gives it back at its next ping.
    pub(crate) fn release_idle(&self, batch: &mut VecDeque<Outbound>) {
        if batch.is_empty() && batch.capacity() > 0 {
            *batch = VecDeque::new();
        }
        let mut state = self.lock();
        if state.items.is_empty() && state.items.capacity() > 0 {
            state.items = VecDeque::new();
        }
    }

    /// Resolves to the close code once a kill is requested (for a socket task busy writing).
    pub(crate) fn killed_signal(&self) -> impl Future<Output = u16> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(code) = self.killed() {
                return Poll::Ready(code);
            }
            let mut state = self.lock();
            match self.killed() {
                Some(code) => Poll::Ready(code),
                None => {
                    state.wait(cx);
                    Poll::Pending
                }
            }
        })
    }

    /// Refuses further items and drops what is queued (the connection is gone).
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.items = VecDeque::new();
        state.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Outbound {
        Outbound::Frame(Message::Text(text.into()))
    }

    #[tokio::test]
    async fn items_come_out_in_order_in_one_batch_and_capacity_is_enforced() {
        let queue = SendQueue::new(2);
        assert_eq!(queue.push(frame("a")), Ok(()));
        assert_eq!(queue.push(frame("b")), Ok(()));
        assert_eq!(queue.push(frame("c")), Err(PushError::Full));
        let mut batch = VecDeque::new();
        assert!(matches!(queue.next(&mut batch).await, Next::Frames(_)));
        let texts: Vec<String> = batch
            .drain(..)
            .map(|item| match item {
                Outbound::Frame(Message::Text(t)) => t.to_string(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(queue.push(frame("d")), Ok(()));
        queue.close();
        assert_eq!(queue.push(frame("e")), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn an_idle_queue_gives_back_its_room_and_a_busy_one_keeps_it() {
        let queue = SendQueue::new(8);
        let mut batch = VecDeque::new();
        queue.push(frame("a")).unwrap();
        queue.next(&mut batch).await;
        queue.push(frame("b")).unwrap();
        queue.release_idle(&mut batch);
        assert!(batch.capacity() > 0, "frames still to write keep their room");
        assert!(queue.lock().items.capacity() > 0, "a queued frame keeps its room");
        batch.clear();
        queue.next(&mut batch).await;
        batch.clear();
        queue.release_idle(&mut batch);
        assert_eq!((batch.capacity(), queue.lock().items.capacity()), (0, 0));
        queue.push(frame("c")).unwrap();
        assert!(matches!(queue.next(&mut batch).await, Next::Frames(_)), "and works on");
        assert_eq!(batch.len(), 1);
    }

    #[tokio::test]
    async fn a_waiting_taker_is_woken_by_a_push() {
        let queue = std::sync::Arc::new(SendQueue::new(8));
        let pusher = queue.clone();
        let waiter = tokio::spawn(async move {
            let mut batch = VecDeque::new();
            queue.next(&mut batch).await;
            batch.len()
        });
        tokio::task::yield_now().await;
        pusher.push(frame("x")).unwrap();
        assert_eq!(waiter.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_kill_wakes_a_waiting_or_writing_task_and_wins_over_frames() {
        let queue = std::sync::Arc::new(SendQueue::new(8));
        let killer = queue.clone();
        let idle = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.killed_signal().await })
        };
        tokio::task::yield_now().await;
        assert!(killer.kill(1013, "slow"));
        assert!(!killer.kill(1000, "later"), "only the first code counts");
        assert_eq!(idle.await.unwrap(), 1013);
        let close = queue.kill_frame().unwrap();
        assert_eq!((close.code, close.reason.as_str()), (1013, "slow"));
        queue.push(frame("late")).unwrap();
        let mut batch = VecDeque::new();
        assert_eq!(queue.next(&mut batch).await, Next::Kill(1013));
        assert!(batch.is_empty());
    }
}

#[cfg(test)]
mod stress {
    use std::sync::Arc;

    use super::*;

    /// A producer pushes while the consumer, like the socket task, waits on the queue in a
    /// `select!` with another source of wake-ups; every item must come out (no lost wake-up).
    async fn every_item_comes_out(items: usize) {
        let queue = Arc::new(SendQueue::new(1 << 20));
        let (noise_tx, mut noise_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let consumer = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut taken = 0;
                let mut batch = VecDeque::new();
                while taken < items {
                    tokio::select! {
                        biased;
                        next = queue.next(&mut batch) => {
                            assert!(matches!(next, Next::Frames(_)));
                            taken += batch.len();
                            batch.clear();
                            if taken % 7 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                        _ = noise_rx.recv() => {}
                    }
                }
                taken
            })
        };
        for i in 0..items {
            queue.push(Outbound::Frame(Message::Text("x".into()))).unwrap();
            if i % 3 == 0 {
                let _ = noise_tx.send(());
            }
            if i % 5 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let taken = tokio::time::timeout(std::time::Duration::from_secs(5), consumer)
            .await
            .expect("the consumer missed a wake-up")
            .unwrap();
        assert_eq!(taken, items);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_wake_up_is_lost_on_one_thread() {
        for _ in 0..200 {
            every_item_comes_out(1000).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_wake_up_is_lost_across_threads() {
        for _ in 0..200 {
            every_item_comes_out(1000).await;
        }
    }
}
