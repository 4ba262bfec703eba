//! Broadcast: a few senders send `{"type":"broadcast",…}`, which the relay delivers to every
//! connected client, the senders included; a message's fan-out is the number of ready clients.

use super::relay;

/// Writes `{"type":"broadcast","ts":…,"seq":…,"from":…,"run":…}`.
pub(crate) fn write(out: &mut String, from: u32, seq: u64, ts: u64, run: u32, pad: &str) {
    out.push_str(r#"{"type":"broadcast","#);
    relay::write_tail(out, ts, seq, from, run, pad);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_broadcasts() {
        let mut out = String::new();
        write(&mut out, 1, 2, 3, 4, "");
        assert_eq!(out, r#"{"type":"broadcast","ts":3,"seq":2,"from":1,"run":4}"#);
    }
}
