//! Packing queued items into one message under a count and a byte budget, for both directions of
//! the gateway links.
//!
//! Batching is what makes the links cheap under load (one gRPC message carries many frames), but
//! an unbounded batch can exceed the peer's message limit and fail the whole stream — and with
//! it every client on it. So a batch stops at `items` or `bytes`, whichever comes first; an item
//! that would overflow the bytes waits as the first item of the next batch, and an item larger
//! than the budget on its own still goes, alone (its sender bounds single items below the
//! transport's hard limit).

/// How much one batch may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most items per batch.
    pub items: usize,
    /// Most bytes per batch (as measured by the caller's size function).
    pub bytes: usize,
}

/// Fills a batch that starts with `first`, taking more items from `next` while both limits hold.
/// Returns the item that did not fit (the next batch's first), if `next` produced one.
pub fn fill<T>(
    first: T,
    limits: BatchLimits,
    size: impl Fn(&T) -> usize,
    mut next: impl FnMut() -> Option<T>,
    mut push: impl FnMut(T),
) -> Option<T> {
    let mut bytes = size(&first);
    let mut items = 1;
    push(first);
    while items < limits.items {
        let item = next()?;
        let item_bytes = size(&item);
        if bytes + item_bytes > limits.bytes {
            return Some(item);
        }
        bytes += item_bytes;
        items += 1;
        push(item);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(queue: &mut Vec<usize>, limits: BatchLimits) -> (Vec<usize>, Option<usize>) {
        queue.reverse();
        let first = queue.pop().unwrap();
        let mut out = Vec::new();
        let carry = fill(first, limits, |n| *n, || queue.pop(), |n| out.push(n));
        queue.reverse();
        (out, carry)
    }

    #[test]
    fn a_batch_stops_at_the_item_count() {
        let mut queue = vec![1, 1, 1, 1];
        let (out, carry) = batch(&mut queue, BatchLimits { items: 3, bytes: 100 });
        assert_eq!((out, carry), (vec![1, 1, 1], None));
        assert_eq!(queue, [1], "the rest stays queued");
    }

    #[test]
    fn an_item_that_would_overflow_the_bytes_is_carried_to_the_next_batch() {
        let mut queue = vec![40, 40, 40, 5];
        let (out, carry) = batch(&mut queue, BatchLimits { items: 10, bytes: 100 });
        assert_eq!((out, carry), (vec![40, 40], Some(40)));
        assert_eq!(queue, [5]);
    }

    #[test]
    fn an_item_over_the_budget_on_its_own_still_goes_alone() {
        let mut queue = vec![500, 1];
        let (out, carry) = batch(&mut queue, BatchLimits { items: 10, bytes: 100 });
        assert_eq!((out, carry), (vec![500], Some(1)));
    }
}
