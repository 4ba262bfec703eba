//! The chat app protocol, with storage on the server side:
//!
//! - the client connects with `?uid=NAME` (the dev insecure mode; `--url-query` adds anything
//!   else the server needs);
//! - it sends `{"type":"send","to":U,"text":…,"cid":C}`;
//! - the server answers the sender `{"type":"ack","cid":C,"id":…}` once the message is durably
//!   stored, and pushes `{"type":"message","id":…,"from":…,"to":U,"text":…,"ts":…,"cid":C}` to
//!   the recipient.
//!
//! The server's own `from` and `ts` fields are not the generator's, so everything the
//! accounting needs travels in the client id: `cid = "{run}.{sender}.{seq}.{ts_ns}"`, unique per
//! message and echoed by both the ack and the push. Latency is measured send→push and send→ack.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;

use super::Incoming;

/// The `uid=NAME` query parameter, percent-encoded.
pub(crate) fn uid_param(uid: &str) -> String {
    let mut param = String::from("uid=");
    for byte in uid.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            param.push(char::from(byte));
        } else {
            let _ = write!(param, "%{byte:02X}");
        }
    }
    param
}

/// Writes `{"type":"send","to":"{prefix}{to}","text":"hello{pad}","cid":"{run}.{from}.{seq}.{ts}"}`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(out: &mut String, prefix: &str, to: u32, from: u32, seq: u64, ts: u64, run: u32, pad: &str) {
    let _ = write!(
        out,
        r#"{{"type":"send","to":"{prefix}{to}","text":"hello{pad}","cid":"{run}.{from}.{seq}.{ts}"}}"#
    );
}

/// Writes `{"type":"sync","cursors":{…},"cid":"sync.{n}"}`: everything after the cursors.
pub(crate) fn write_sync(out: &mut String, cursors: &std::collections::HashMap<String, u64>, n: u64) {
    let cursors = serde_json::to_string(cursors).unwrap_or_else(|_| "{}".to_owned());
    let _ = write!(
        out,
        r#"{{"type":"sync","cursors":{cursors},"limit":500,"cid":"sync.{n}"}}"#
    );
}

/// Where a stored message sits: its conversation and `seq` there (the cursor's unit).
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct Position {
    /// `d:<uid>:<uid>` or `g:<group>`.
    pub conversation: String,
    /// The per-conversation sequence number.
    pub seq: u64,
    /// The client id of the message (the generator's accounting for its own messages).
    #[serde(default)]
    pub cid: Option<String>,
}

/// The position of a pushed `message` frame.
pub(crate) fn position(text: &str) -> Option<Position> {
    serde_json::from_str(text).ok()
}

/// One page of a `sync` answer.
#[derive(Debug, Deserialize)]
pub(crate) struct SyncPage {
    /// The missed messages, in `seq` order per conversation.
    pub messages: Vec<Position>,
    /// Whether to ask again from the advanced cursors.
    #[serde(default)]
    pub more: bool,
}

/// A `sync` answer, if `text` is one.
pub(crate) fn sync_page(text: &str) -> Option<SyncPage> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    let answer: Answer<'_> = serde_json::from_str(text).ok()?;
    if answer.kind != "sync" {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// `(sender, seq, ts)` of a message of run `run`, from its client id.
pub(crate) fn ours(cid: &str, run: u32) -> Option<(u32, u64, u64)> {
    decode_cid(cid).and_then(|(frame_run, from, seq, ts)| (frame_run == run).then_some((from, seq, ts)))
}

/// Writes `{"type":"typing","conversation":"d:{a}:{b}"}` for the direct conversation of `from`
/// and `to` (uids in byte order, as the server names it).
pub(crate) fn write_typing(out: &mut String, from: &str, to: &str) {
    let (a, b) = if from <= to { (from, to) } else { (to, from) };
    let _ = write!(out, r#"{{"type":"typing","conversation":"d:{a}:{b}"}}"#);
}

/// The two receipts a recipient sends for a pushed message: `delivered` and `read` up to its
/// `seq`; `None` for a frame that is not a push with a conversation and a seq.
pub(crate) fn receipts(text: &str) -> Option<[String; 2]> {
    #[derive(Deserialize)]
    struct Push<'a> {
        #[serde(borrow)]
        conversation: Cow<'a, str>,
        seq: i64,
    }
    let push: Push<'_> = serde_json::from_str(text).ok()?;
    let frame = |kind: &str| {
        format!(
            r#"{{"type":"{kind}","conversation":"{}","seq":{}}}"#,
            push.conversation, push.seq
        )
    };
    Some([frame("delivered"), frame("read")])
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// `(run, sender, seq, ts)` from a client id this generator wrote.
fn decode_cid(cid: &str) -> Option<(u32, u32, u64, u64)> {
    let mut parts = cid.split('.');
    let run = parts.next()?.parse().ok()?;
    let from = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let ts = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((run, from, seq, ts))
}

/// Classifies one received text frame.
pub(crate) fn parse(text: &str, run: u32) -> Incoming<'_> {
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else {
        return Incoming::Ignored;
    };
    let ours = || {
        frame
            .cid
            .as_deref()
            .and_then(decode_cid)
            .filter(|&(frame_run, ..)| frame_run == run)
    };
    match frame.kind.as_deref() {
        Some("message") => match ours() {
            Some((_, from, seq, ts)) => Incoming::Data { from, seq, ts },
            None => Incoming::Ignored,
        },
        Some("ack") => match ours() {
            Some((_, from, seq, ts)) => Incoming::Ack { from, seq, ts },
            None => Incoming::Ignored,
        },
        Some("error") => Incoming::Error(frame.message.unwrap_or(Cow::Borrowed("error without a message"))),
        _ => Incoming::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_carry_the_accounting_in_the_cid() {
        let mut out = String::new();
        write(&mut out, "b", 4, 2, 10, 123_456, 77, "");
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["type"], "send");
        assert_eq!(value["to"], "b4");
        assert_eq!(value["cid"], "77.2.10.123456");
        assert_eq!(decode_cid("77.2.10.123456"), Some((77, 2, 10, 123_456)));
        assert_eq!(decode_cid("77.2.10"), None);
        assert_eq!(decode_cid("77.2.10.1.5"), None);
    }

    #[test]
    fn pushes_and_acks_are_told_apart() {
        let push = r#"{"type":"message","id":5,"from":"b2","to":"b4","text":"hello","ts":1700000000000,"cid":"77.2.10.123456"}"#;
        assert_eq!(
            parse(push, 77),
            Incoming::Data {
                from: 2,
                seq: 10,
                ts: 123_456
            }
        );
        assert_eq!(parse(push, 78), Incoming::Ignored);
        let ack = r#"{"type":"ack","cid":"77.2.10.123456","id":"5"}"#;
        assert_eq!(
            parse(ack, 77),
            Incoming::Ack {
                from: 2,
                seq: 10,
                ts: 123_456
            }
        );
        assert_eq!(
            parse(r#"{"type":"error","message":"unknown uid"}"#, 77),
            Incoming::Error(Cow::Borrowed("unknown uid"))
        );
        assert_eq!(
            parse(r#"{"type":"message","cid":"someone-else"}"#, 77),
            Incoming::Ignored
        );
    }

    #[test]
    fn a_sync_answer_gives_positions_and_more() {
        let text = r#"{"type":"sync","messages":[{"type":"message","id":5,"conversation":"d:b1:b2","seq":3,"from":"b2","to":"b1","text":"x","ts":1,"cid":"77.2.10.123"}],"more":true}"#;
        let page = sync_page(text).unwrap();
        assert!(page.more);
        assert_eq!(page.messages[0].conversation, "d:b1:b2");
        assert_eq!(page.messages[0].seq, 3);
        assert_eq!(ours(page.messages[0].cid.as_deref().unwrap(), 77), Some((2, 10, 123)));
        assert!(sync_page(r#"{"type":"ack","cid":"x"}"#).is_none());
        let mut out = String::new();
        write_sync(&mut out, &[("d:b1:b2".to_owned(), 3)].into_iter().collect(), 4);
        assert_eq!(
            out,
            r#"{"type":"sync","cursors":{"d:b1:b2":3},"limit":500,"cid":"sync.4"}"#
        );
    }

    #[test]
    fn the_mix_writes_typing_and_receipts() {
        let mut out = String::new();
        write_typing(&mut out, "b9", "b10");
        assert_eq!(out, r#"{"type":"typing","conversation":"d:b10:b9"}"#);
        let push = r#"{"type":"message","id":5,"conversation":"d:b10:b9","seq":7,"from":"b9","cid":"x"}"#;
        let [delivered, read] = receipts(push).expect("a push");
        assert_eq!(delivered, r#"{"type":"delivered","conversation":"d:b10:b9","seq":7}"#);
        assert_eq!(read, r#"{"type":"read","conversation":"d:b10:b9","seq":7}"#);
        assert!(receipts(r#"{"type":"ack","cid":"x"}"#).is_none());
    }

    #[test]
    fn uids_are_percent_encoded() {
        assert_eq!(uid_param("b12"), "uid=b12");
        assert_eq!(uid_param("a b&c"), "uid=a%20b%26c");
    }
}
