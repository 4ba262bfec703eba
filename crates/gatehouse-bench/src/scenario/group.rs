//! Group fan-out: client `i` joins group `i / group_size`. Clients are assigned to gateways
//! round-robin, so consecutive members sit on different gateways and every group spans
//! `min(group_size, gateways)` of them. Each sender sends to its own group, whose members
//! (the sender included) all receive the message.

use std::fmt::Write as _;

use super::relay;

/// The group client `index` belongs to.
pub(crate) fn group_of(index: u32, group_size: usize) -> usize {
    index as usize / group_size
}

/// The name of group `group`: `{prefix}g{group}`.
pub(crate) fn name(prefix: &str, group: usize) -> String {
    format!("{prefix}g{group}")
}

/// Ready members per group: the fan-out a message to that group must reach.
pub(crate) fn ready_members(clients: usize, group_size: usize, ready: &[u32]) -> Vec<u32> {
    let mut members = vec![0u32; clients.div_ceil(group_size)];
    for &client in ready {
        members[group_of(client, group_size)] += 1;
    }
    members
}

/// Writes `{"group":"{prefix}g{group}","ts":…,"seq":…,"from":…,"run":…}`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(out: &mut String, prefix: &str, group: usize, from: u32, seq: u64, ts: u64, run: u32, pad: &str) {
    let _ = write!(out, r#"{{"group":"{prefix}g{group}","#);
    relay::write_tail(out, ts, seq, from, run, pad);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_counted_per_group() {
        // 7 clients in groups of 3: {0,1,2} {3,4,5} {6}; client 4 failed its set-up.
        let ready = [0, 1, 2, 3, 5, 6];
        assert_eq!(ready_members(7, 3, &ready), [3, 2, 1]);
        assert_eq!(group_of(5, 3), 1);
        assert_eq!(name("b", 1), "bg1");
    }

    #[test]
    fn frames_name_the_group() {
        let mut out = String::new();
        write(&mut out, "b", 2, 7, 1, 9, 5, "");
        assert_eq!(out, r#"{"group":"bg2","ts":9,"seq":1,"from":7,"run":5}"#);
    }
}
