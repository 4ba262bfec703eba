//! Direct messages: `{"to":"b{j}",…}` from every sender to a random other client, preferably one
//! on another gateway, so the measured path is the cluster's cross-gateway route. The chat
//! scenario picks its recipients the same way.

use std::fmt::Write as _;

use rand::Rng;

use super::relay;

/// Recipients each gateway's senders choose from: the ready clients on *other* gateways, or all
/// ready clients when there is only one gateway (or no other gateway has a ready client).
pub(crate) fn candidates(gateways: usize, ready: &[u32]) -> Vec<Vec<u32>> {
    (0..gateways)
        .map(|gateway| {
            let elsewhere: Vec<u32> = ready
                .iter()
                .copied()
                .filter(|&client| client as usize % gateways != gateway)
                .collect();
            if elsewhere.is_empty() {
                ready.to_vec()
            } else {
                elsewhere
            }
        })
        .collect()
}

/// A random recipient other than `me`, or `None` when `me` is the only candidate. With `peers`,
/// the choice is among `me`'s fixed partners only (the same ones every time: its ongoing
/// conversations).
pub(crate) fn pick(candidates: &[u32], me: u32, peers: Option<usize>, rng: &mut impl Rng) -> Option<u32> {
    match candidates {
        [] => None,
        [only] if *only == me => None,
        _ => loop {
            let slot = match peers {
                Some(peers) => {
                    (me as usize)
                        .wrapping_mul(7919)
                        .wrapping_add(rng.random_range(0..peers))
                        % candidates.len()
                }
                None => rng.random_range(0..candidates.len()),
            };
            let pick = candidates[slot];
            if pick != me {
                return Some(pick);
            }
        },
    }
}

/// Writes `{"to":"{prefix}{to}","ts":…,"seq":…,"from":…,"run":…}`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(out: &mut String, prefix: &str, to: u32, from: u32, seq: u64, ts: u64, run: u32, pad: &str) {
    let _ = write!(out, r#"{{"to":"{prefix}{to}","#);
    relay::write_tail(out, ts, seq, from, run, pad);
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn recipients_are_on_other_gateways() {
        let ready = [0, 1, 2, 3, 4, 5];
        let lists = candidates(2, &ready);
        assert_eq!(lists[0], [1, 3, 5]);
        assert_eq!(lists[1], [0, 2, 4]);
        // One gateway: everyone is a candidate, and `pick` skips the sender itself.
        let single = candidates(1, &ready);
        assert_eq!(single[0], ready);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let to = pick(&single[0], 3, None, &mut rng).unwrap();
            assert_ne!(to, 3);
        }
        assert_eq!(pick(&[3], 3, None, &mut rng), None);
        assert_eq!(pick(&[], 3, None, &mut rng), None);
    }

    #[test]
    fn frames_name_the_recipient_uid() {
        let mut out = String::new();
        write(&mut out, "b", 12, 3, 4, 5, 6, "");
        assert_eq!(out, r#"{"to":"b12","ts":5,"seq":4,"from":3,"run":6}"#);
    }
}
