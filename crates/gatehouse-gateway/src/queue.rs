//! The send queue of one connection: bounded, and free when empty.
//!
//! A tokio `mpsc` channel allocates a 32-slot block up front (about 1.5 KB per connection with
//! our item size) whether or not anything is ever sent; with 100,000 mostly idle connections
//! that is 150 MB. This queue is a `VecDeque` behind the connection's own (uncontended) mutex
//! plus an `AtomicWaker`: nothing is allocated until frames are queued, and the socket task takes
//! everything queued in one swap, so a burst costs one lock on each side.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::task::Poll;

use futures_util::task::AtomicWaker;

use crate::hub::Outbound;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds its capacity: the client is a slow consumer.
    Full,
    /// The connection is closing.
    Closed,
}

pub(crate) struct SendQueue {
    state: Mutex<State>,
    waker: AtomicWaker,
    capacity: usize,
}

struct State {
    items: VecDeque<Outbound>,
    closed: bool,
}

impl SendQueue {
    pub(crate) fn new(capacity: usize) -> SendQueue {
        SendQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            waker: AtomicWaker::new(),
            capacity,
        }
    }

    /// Queues an item for the socket task, or says why not.
    pub(crate) fn push(&self, item: Outbound) -> Result<(), PushError> {
        let mut state = self.state.lock().expect("send queue poisoned");
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.items.len() >= self.capacity {
            return Err(PushError::Full);
        }
        state.items.push_back(item);
        drop(state);
        self.waker.wake();
        Ok(())
    }

    /// Waits until something is queued, then moves everything queued into `batch` (which must be
    /// empty; its capacity is reused by the next swap).
    pub(crate) fn take<'a>(&'a self, batch: &'a mut VecDeque<Outbound>) -> impl Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            self.waker.register(cx.waker());
            let mut state = self.state.lock().expect("send queue poisoned");
            if state.items.is_empty() {
                return Poll::Pending;
            }
            std::mem::swap(&mut state.items, batch);
            Poll::Ready(())
        })
    }

    /// Refuses further items and drops what is queued (the connection is gone).
    pub(crate) fn close(&self) {
        let mut state = self.state.lock().expect("send queue poisoned");
        state.closed = true;
        state.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::Message;

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
        queue.take(&mut batch).await;
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
    async fn a_waiting_taker_is_woken_by_a_push() {
        let queue = std::sync::Arc::new(SendQueue::new(8));
        let pusher = queue.clone();
        let waiter = tokio::spawn(async move {
            let mut batch = VecDeque::new();
            queue.take(&mut batch).await;
            batch.len()
        });
        tokio::task::yield_now().await;
        pusher.push(frame("x")).unwrap();
        assert_eq!(waiter.await.unwrap(), 1);
    }
}
