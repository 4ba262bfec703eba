//! Rendezvous (highest random weight) hashing.
//!
//! Chooses the worker that handles a client: every gateway computes the same choice from the
//! same live set, and removing a worker moves only the clients it had. Built on xxh3 with fixed
//! seeds so the choice is stable across processes and releases (never `DefaultHasher`).

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Scores `key` against `node`; the highest score wins.
pub fn score(key: &[u8], node: u64) -> u64 {
    xxh3_64_with_seed(key, node)
}

/// Returns the index of the winning node in `nodes`, or `None` when it is empty.
pub fn pick<T>(key: &[u8], nodes: &[T], id: impl Fn(&T) -> u64) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .max_by_key(|(_, node)| (score(key, id(node)), id(node)))
        .map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_is_pinned_across_releases() {
        // Golden values: a change here silently reshuffles every client of a live cluster.
        assert_eq!(score(b"client-1", 7), 7_530_252_742_040_902_367);
        let nodes = [11u64, 22, 33, 44];
        let picks: Vec<usize> = (0..8u8).map(|k| pick(&[k], &nodes, |n| *n).unwrap()).collect();
        assert_eq!(picks, [1, 1, 2, 1, 3, 3, 2, 3]);
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let all = [1u64, 2, 3, 4, 5];
        let without_three = [1u64, 2, 4, 5];
        for k in 0..2000u32 {
            let key = k.to_be_bytes();
            let before = all[pick(&key, &all, |n| *n).unwrap()];
            let after = without_three[pick(&key, &without_three, |n| *n).unwrap()];
            if before != 3 {
                assert_eq!(before, after, "key {k} moved although its node stayed");
            }
        }
    }

    #[test]
    fn keys_spread_over_nodes() {
        let nodes = [10u64, 20];
        let first = (0..10_000u32)
            .filter(|k| pick(&k.to_be_bytes(), &nodes, |n| *n) == Some(0))
            .count();
        assert!((4_000..6_000).contains(&first), "skewed split: {first}");
    }
}
