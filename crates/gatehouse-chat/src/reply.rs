//! Replies that fit a byte budget.
//!
//! Every frame the chat worker sends must fit `ChatConfig::max_reply_bytes`: a frame larger
//! than the gateway's outbound limit would be refused, and one client's pile of big messages
//! must never make another client's catch-up impossible. Lists (messages of a `sync` or
//! `history`, conversations, members, blocks) are therefore built item by item with
//! [`ListReply`]: each item is encoded once, counted, and kept only if the whole frame still
//! fits; the reply then says `more: true` and the client continues from its cursor.

use gatehouse_sdk::Frame;
use serde::Serialize;
use serde_json::{Map, Value};

/// A reply frame holding a list (and optionally a map keyed like the list's items, such as a
/// member page's roles) that never grows beyond a byte budget.
#[derive(Debug)]
pub struct ListReply {
    envelope: Map<String, Value>,
    list_field: &'static str,
    map_field: Option<&'static str>,
    items: Vec<String>,
    entries: Vec<String>,
    max_bytes: usize,
    used: usize,
}

impl ListReply {
    /// Starts a reply of at most `max_bytes`: `envelope` (an object with everything but the
    /// list, the map and `more`), the list under `list_field`, and under `map_field` a map
    /// whose entries come with the items (see [`ListReply::push_with_entry`]).
    pub fn new(
        envelope: Map<String, Value>,
        list_field: &'static str,
        map_field: Option<&'static str>,
        max_bytes: usize,
    ) -> ListReply {
        let mut reply = ListReply {
            envelope,
            list_field,
            map_field,
            items: Vec::new(),
            entries: Vec::new(),
            max_bytes,
            used: 0,
        };
        // The frame with nothing in it and the longer of the two `more` values.
        reply.used = reply.encode(false).len();
        reply
    }

    /// Adds `item` if the frame still fits with it; returns whether it did. Once an item was
    /// refused, later ones are refused too, so a list is always a prefix of what was offered.
    pub fn push<T: Serialize + ?Sized>(&mut self, item: &T) -> bool {
        self.push_with_entry(item, None)
    }

    /// Like [`ListReply::push`], with an entry (key, value) for the map field that is kept only
    /// together with the item.
    pub fn push_with_entry<T: Serialize + ?Sized>(&mut self, item: &T, entry: Option<(&str, &Value)>) -> bool {
        if self.is_full() {
            return false;
        }
        let encoded = encode(item);
        let entry = entry.map(|(key, value)| format!("{}:{}", encode(key), encode(value)));
        let separator = usize::from(!self.items.is_empty());
        let entry_cost = entry
            .as_ref()
            .map_or(0, |e| e.len() + usize::from(!self.entries.is_empty()));
        let cost = encoded.len() + separator + entry_cost;
        if self.used + cost > self.max_bytes {
            self.used = usize::MAX;
            return false;
        }
        self.used += cost;
        self.items.push(encoded);
        self.entries.extend(entry);
        true
    }

    /// Adds an entry to the map field alone (no list item), if the frame still fits with it;
    /// returns whether it did. Refused once anything was refused.
    pub fn push_entry(&mut self, key: &str, value: &Value) -> bool {
        if self.is_full() || self.map_field.is_none() {
            return false;
        }
        let entry = format!("{}:{}", encode(key), encode(value));
        let cost = entry.len() + usize::from(!self.entries.is_empty());
        if self.used + cost > self.max_bytes {
            self.used = usize::MAX;
            return false;
        }
        self.used += cost;
        self.entries.push(entry);
        true
    }

    /// Whether an item was refused (the budget is spent).
    pub fn is_full(&self) -> bool {
        self.used == usize::MAX
    }

    /// How many items the reply holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the reply holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Reverses the list (for items offered newest first but listed oldest first).
    pub fn reverse(&mut self) {
        self.items.reverse();
    }

    /// The reply frame, with `more` as given.
    pub fn finish(self, more: bool) -> Frame {
        Frame::text(self.encode(more))
    }

    fn encode(&self, more: bool) -> String {
        let mut text = serde_json::to_string(&self.envelope).expect("json values serialise");
        text.pop(); // the closing brace
        if !self.envelope.is_empty() {
            text.push(',');
        }
        text.push('"');
        text.push_str(self.list_field);
        text.push_str("\":[");
        text.push_str(&self.items.join(","));
        text.push(']');
        if let Some(map_field) = self.map_field {
            text.push_str(",\"");
            text.push_str(map_field);
            text.push_str("\":{");
            text.push_str(&self.entries.join(","));
            text.push('}');
        }
        text.push_str(if more { ",\"more\":true}" } else { ",\"more\":false}" });
        text
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("json values serialise")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(kind: &str) -> Map<String, Value> {
        json!({"type": kind, "cid": "c1"})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    fn parse(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_text().unwrap_or_default()).expect("valid json")
    }

    #[test]
    fn a_list_takes_items_while_the_frame_fits_and_never_more() {
        for budget in [60, 100, 200, 1000] {
            let mut reply = ListReply::new(envelope("sync"), "messages", None, budget);
            let mut kept = 0;
            for i in 0..50 {
                if reply.push(&json!({"n": i, "text": "\u{1}\"é"})) {
                    kept += 1;
                }
            }
            let frame = reply.finish(kept < 50);
            assert!(frame.data().len() <= budget, "{} > {budget}", frame.data().len());
            let value = parse(&frame);
            assert_eq!(value["messages"].as_array().map(Vec::len), Some(kept));
            assert_eq!(value["cid"], "c1");
            assert_eq!(value["more"], kept < 50);
        }
    }

    #[test]
    fn items_after_a_refused_one_are_refused_too() {
        let mut reply = ListReply::new(envelope("x"), "items", None, 80);
        assert!(reply.push("a"));
        assert!(!reply.push(&"b".repeat(100)));
        assert!(!reply.push("c"), "a prefix of what was offered, never a hole");
        assert_eq!(reply.len(), 1);
    }

    #[test]
    fn map_entries_come_and_go_with_their_items() {
        let mut reply = ListReply::new(envelope("members"), "members", Some("roles"), 100);
        let owner = json!("owner");
        assert!(reply.push_with_entry("alice", Some(("alice", &owner))));
        assert!(reply.push("bob"));
        let admin = json!("admin");
        assert!(!reply.push_with_entry("carol-with-a-long-name", Some(("carol-with-a-long-name", &admin))));
        let frame = reply.finish(true);
        assert!(frame.data().len() <= 100);
        let value = parse(&frame);
        assert_eq!(value["members"], json!(["alice", "bob"]));
        assert_eq!(value["roles"], json!({"alice": "owner"}));
    }

    #[test]
    fn a_reversed_list_keeps_its_items() {
        let mut reply = ListReply::new(envelope("history"), "messages", None, 1000);
        for i in [3, 2, 1] {
            reply.push(&i);
        }
        reply.reverse();
        assert_eq!(parse(&reply.finish(false))["messages"], json!([1, 2, 3]));
    }
}
