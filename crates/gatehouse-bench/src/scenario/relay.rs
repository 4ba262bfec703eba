//! The relay app's wire format as the generator uses it: set-up frames, the common tail of every
//! data frame, and the one parse of every received frame.
//!
//! Data frames carry `"ts"` (ns since the run's clock base, on the sender's schedule), `"seq"`
//! (per sender), `"from"` (sender index) and `"run"` (a random id of this run, so frames of
//! another bench process on the same cluster are ignored). The relay forwards them unchanged.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;

use super::Incoming;

/// `{"type":"login","uid":U}`; answered by `login_ok`.
pub(crate) fn login(uid: &str) -> String {
    format!(r#"{{"type":"login","uid":"{uid}"}}"#)
}

/// `{"type":"join","group":G}`; answered by `join_ok`.
pub(crate) fn join(group: &str) -> String {
    format!(r#"{{"type":"join","group":"{group}"}}"#)
}

/// Appends `"ts":…,"seq":…,"from":…,"run":…` and the padding, then closes the object.
pub(crate) fn write_tail(out: &mut String, ts: u64, seq: u64, from: u32, run: u32, pad: &str) {
    let _ = write!(out, r#""ts":{ts},"seq":{seq},"from":{from},"run":{run}"#);
    if !pad.is_empty() {
        let _ = write!(out, r#","pad":"{pad}""#);
    }
    out.push('}');
}

/// The fields the generator reads; everything else (`to`, `group`, `pad`) is skipped unread.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    from: Option<u32>,
    #[serde(default)]
    run: Option<u32>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// Classifies one received text frame.
pub(crate) fn parse(text: &str, run: u32) -> Incoming<'_> {
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else {
        return Incoming::Ignored;
    };
    if let (Some(ts), Some(seq), Some(from), Some(frame_run)) = (frame.ts, frame.seq, frame.from, frame.run) {
        return if frame_run == run {
            Incoming::Data { from, seq, ts }
        } else {
            Incoming::Ignored
        };
    }
    match frame.kind.as_deref() {
        Some("login_ok") => Incoming::Reply("login_ok"),
        Some("join_ok") => Incoming::Reply("join_ok"),
        Some("error") => Incoming::Error(frame.message.unwrap_or(Cow::Borrowed("error without a message"))),
        _ => Incoming::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_frames_round_trip() {
        let mut frame = String::from(r#"{"to":"b3","#);
        write_tail(&mut frame, 12_345, 7, 2, 99, "");
        assert_eq!(frame, r#"{"to":"b3","ts":12345,"seq":7,"from":2,"run":99}"#);
        assert_eq!(
            parse(&frame, 99),
            Incoming::Data {
                from: 2,
                seq: 7,
                ts: 12_345
            }
        );
        assert_eq!(parse(&frame, 98), Incoming::Ignored);

        let mut padded = String::from(r#"{"type":"broadcast","#);
        write_tail(&mut padded, 1, 2, 3, 4, "xxxx");
        assert!(serde_json::from_str::<serde_json::Value>(&padded).is_ok());
        assert_eq!(parse(&padded, 4), Incoming::Data { from: 3, seq: 2, ts: 1 });
    }

    #[test]
    fn replies_and_errors_are_recognised() {
        assert_eq!(
            parse(r#"{"type":"login_ok","uid":"b1"}"#, 1),
            Incoming::Reply("login_ok")
        );
        assert_eq!(
            parse(r#"{"type":"join_ok","group":"bg0"}"#, 1),
            Incoming::Reply("join_ok")
        );
        assert_eq!(
            parse(r#"{"type":"error","message":"no \"uid\""}"#, 1),
            Incoming::Error(Cow::Owned("no \"uid\"".into()))
        );
        assert_eq!(parse("not json", 1), Incoming::Ignored);
        assert_eq!(parse(r#"{"from":"alice"}"#, 1), Incoming::Ignored);
    }

    #[test]
    fn setup_frames_are_json() {
        let login: serde_json::Value = serde_json::from_str(&login("b1")).unwrap();
        assert_eq!(login["type"], "login");
        assert_eq!(login["uid"], "b1");
        let join: serde_json::Value = serde_json::from_str(&join("bg0")).unwrap();
        assert_eq!(join["group"], "bg0");
    }
}
