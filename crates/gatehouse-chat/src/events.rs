//! The protocol-2 requests of the chat service: bounded catch-up, the heartbeat, edits,
//! deletes and reactions, receipts, typing and search (see `docs/protocol.md`).
//!
//! Changes are events of the conversation's sequence: stored (with the next `seq`),
//! acknowledged, then pushed like messages. Receipts and typing are pushed, never to more than
//! the conversation's peer, its author or the group's connections. Every request is bounded by
//! the parser and every answer by the reply budget.

use std::collections::HashMap;

use gatehouse_sdk::{Context, Frame};
use gatehouse_store::{ChangeAction, Changed, Marker, MarkerRequest, NewChange, Offer, SearchQuery, StoreError};
use serde_json::{Value, json};

use crate::common::{Answer, api_error, count, now_ms, store_error};
use crate::protocol::{self, Code, ProtocolError, Request};
use crate::state::ChatWorker;

/// Where a conversation's pushes go, from its id.
pub(crate) enum Audience<'a> {
    /// A direct conversation: the peer (the user itself for notes to self).
    Direct(&'a str),
    /// A group: its cluster group (`g:<id>`).
    Group(&'a str),
}

/// The audience of `conversation` seen from `uid` (ids are validated by the parser, so a
/// direct id names two uids verbatim).
pub(crate) fn audience<'a>(conversation: &'a str, uid: &str) -> Option<Audience<'a>> {
    if conversation.starts_with("g:") {
        return Some(Audience::Group(conversation));
    }
    let (a, b) = conversation.strip_prefix("d:")?.split_once(':')?;
    match (a == uid, b == uid) {
        (true, _) => Some(Audience::Direct(b)),
        (_, true) => Some(Audience::Direct(a)),
        _ => None,
    }
}

impl ChatWorker {
    /// Executes a protocol-2 request for `uid`: `sync`, `ping`, a change, a receipt, `typing`
    /// or `search`.
    pub(crate) async fn event_request(
        &self,
        ctx: &Context,
        uid: &str,
        request: Request,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        match request {
            Request::Sync { cursors, limit, window } => self.catch_up(uid, &cursors, limit, window, cid).await,
            Request::Ping => self.pong(uid).await.map(Answer::Json),
            Request::Edit { conversation, id, text } => {
                let window_ms = self
                    .config
                    .edit_window
                    .map(|w| i64::try_from(w.as_millis()).unwrap_or(i64::MAX));
                let action = ChangeAction::Edit { text, window_ms };
                self.change(ctx, uid, conversation, id, action, cid).await
            }
            Request::Delete { conversation, id } => {
                self.change(ctx, uid, conversation, id, ChangeAction::Delete, cid).await
            }
            Request::React {
                conversation,
                id,
                emoji,
                add,
            } => {
                let action = ChangeAction::React { emoji, add };
                self.change(ctx, uid, conversation, id, action, cid).await
            }
            Request::Delivered { conversation, seq } => {
                self.receipt(ctx, uid, &conversation, seq, Marker::Delivered, cid).await
            }
            Request::Read { conversation, seq } => self.receipt(ctx, uid, &conversation, seq, Marker::Read, cid).await,
            Request::Typing { conversation, start } => self.typing(ctx, uid, &conversation, start, cid).await,
            Request::Search {
                query,
                conversation,
                offset,
                limit,
            } => {
                self.search(uid, &query, conversation.as_deref(), offset, limit, cid)
                    .await
            }
            other => Err(ProtocolError::new(
                Code::Internal,
                format!("not a protocol-2 event request: {other:?}"),
            )),
        }
    }

    /// Pushes `frame` to everyone in `conversation` but the requesting connection: both users'
    /// devices of a direct conversation, the group's connections.
    pub(crate) async fn push_to_conversation(
        &self,
        ctx: &Context,
        uid: &str,
        conversation: &str,
        frame: &Frame,
    ) -> Result<(), ProtocolError> {
        let me = [ctx.client_id()];
        let cluster = ctx.cluster();
        match audience(conversation, uid) {
            Some(Audience::Direct(peer)) if peer == uid => cluster.send_to_uids(&[uid], frame, &me).await,
            Some(Audience::Direct(peer)) => cluster.send_to_uids(&[peer, uid], frame, &me).await,
            Some(Audience::Group(group)) => cluster.send_to_group(group, frame, &me).await,
            None => Ok(()),
        }
        .map_err(api_error)
    }

    /// A bounded `sync` page: conversations most recently active first, each with at most
    /// `window` events, within the reply budget.
    pub(crate) async fn catch_up(
        &self,
        uid: &str,
        cursors: &HashMap<String, i64>,
        limit: u32,
        window: Option<u32>,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let window = window.unwrap_or(self.config.sync_window);
        // The envelope with the longest `more`, a counter of 20 digits and the cid.
        let mut used = 96 + cid.map_or(0, |c| c.len() * 6 + 10);
        let budget = self.config.max_reply_bytes;
        let mut admit = |offer: Offer<'_>| {
            let cost = match offer {
                Offer::Conversation(entry) => serde_json::to_vec(entry).map_or(usize::MAX, |v| v.len()),
                Offer::Message(message) => {
                    serde_json::to_vec(&protocol::MessageFrame::new(message)).map_or(usize::MAX, |v| v.len())
                }
            }
            .saturating_add(1);
            if used.saturating_add(cost) > budget {
                return false;
            }
            used += cost;
            true
        };
        let page = self
            .store
            .catch_up(uid, cursors, limit, window, &mut admit)
            .await
            .map_err(store_error)?;
        if page.conversations.is_empty() && page.more {
            tracing::error!("a stored event does not fit max_reply_bytes; raise it");
            return Err(ProtocolError::new(
                Code::Internal,
                "a stored message is larger than the server's reply limit",
            ));
        }
        let messages: Vec<Value> = page.messages.iter().map(protocol::message).collect();
        let mut answer = json!({
            "type": "sync",
            "counter": page.counter,
            "conversations": page.conversations,
            "messages": messages,
            "more": page.more,
        });
        if let Some(cid) = cid {
            answer["cid"] = json!(cid);
        }
        count("sync");
        Ok(Answer::Frame(self.bounded(&answer)))
    }

    /// The `pong`: the change counter and the most recently active conversations.
    pub(crate) async fn pong(&self, uid: &str) -> Result<Value, ProtocolError> {
        let activity = self
            .store
            .activity(uid, self.config.heartbeat_conversations)
            .await
            .map_err(store_error)?;
        let latest: Vec<Value> = activity
            .latest
            .iter()
            .map(|(conversation, last_seq)| json!({"conversation": conversation, "last_seq": last_seq}))
            .collect();
        count("ping");
        Ok(json!({"type": "pong", "counter": activity.counter, "latest": latest, "ts": now_ms()}))
    }

    /// An edit, delete or reaction: stored as an event, acknowledged, then pushed.
    pub(crate) async fn change(
        &self,
        ctx: &Context,
        uid: &str,
        conversation: String,
        target: i64,
        action: ChangeAction,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let cid = cid.ok_or_else(|| ProtocolError::new(Code::MissingField, "missing field cid"))?;
        let kind = match &action {
            ChangeAction::Edit { .. } => "edit",
            ChangeAction::Delete => "delete",
            ChangeAction::React { .. } => "react",
        };
        let change = NewChange {
            conversation: conversation.clone(),
            sender: uid.to_owned(),
            cid: cid.to_owned(),
            target,
            action,
            ts_ms: now_ms(),
        };
        let Changed {
            event,
            duplicate,
            by_admin,
        } = self.store.change(&change).await.map_err(store_error)?;
        let Some(event) = event else {
            return Ok(Answer::Json(
                json!({"type": "ack", "changed": false, "conversation": conversation}),
            ));
        };
        let mut ack = serde_json::to_value(protocol::ack(&event, duplicate)).expect("an ack serialises");
        ack["changed"] = json!(true);
        ctx.reply(Frame::json(&ack)).await.map_err(api_error)?;
        let mut push = protocol::message(&event);
        if by_admin {
            push["by_admin"] = json!(true);
        }
        count(kind);
        self.push_to_conversation(ctx, uid, &conversation, &Frame::json(&push))
            .await?;
        Ok(Answer::Done)
    }

    /// `read` or `delivered`: moves the marker and, when it moved, pushes the receipt to the
    /// authors and (read) the marker to the reader's other devices.
    pub(crate) async fn receipt(
        &self,
        ctx: &Context,
        uid: &str,
        conversation: &str,
        seq: i64,
        marker: Marker,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let request = MarkerRequest {
            uid: uid.to_owned(),
            conversation: conversation.to_owned(),
            seq,
            marker,
        };
        // A marker only ever moves forward, and nothing the client sends next depends on this
        // one's commit: the client's next requests need not wait for its commit round (the
        // event is still acknowledged only after it, see `Context::release_order`).
        ctx.release_order();
        let moved = self.committer.move_marker(request).await.map_err(store_error)?;
        let kind = match marker {
            Marker::Read => "read",
            Marker::Delivered => "delivered",
        };
        if moved.moved {
            let receipt = Frame::json(&protocol::ReceiptFrame::new(
                conversation,
                uid,
                kind,
                moved.marker,
                now_ms(),
            ));
            let cluster = ctx.cluster();
            let to = match audience(conversation, uid) {
                Some(Audience::Direct(peer)) if peer != uid => Some(peer.to_owned()),
                Some(Audience::Group(_)) => moved.author.filter(|author| author != uid),
                _ => None,
            };
            if let Some(to) = to {
                cluster.send_to_uid(&to, &receipt, &[]).await.map_err(api_error)?;
                count("receipt");
            }
            if marker == Marker::Read {
                let mine = protocol::MarkerFrame {
                    conversation,
                    seq: moved.marker,
                    kind: "read",
                    unread: (moved.last_seq - moved.marker).max(0),
                };
                cluster
                    .send_to_uids(&[uid], &Frame::json(&mine), &[ctx.client_id()])
                    .await
                    .map_err(api_error)?;
            }
        }
        let answer = json!({"type": kind, "conversation": conversation, "seq": moved.marker,
            "unread": (moved.last_seq - moved.marker).max(0)});
        match (marker, cid) {
            (Marker::Delivered, None) => Ok(Answer::Done),
            _ => Ok(Answer::Json(answer)),
        }
    }

    /// `typing`: pushed to the conversation's other members online, never stored.
    pub(crate) async fn typing(
        &self,
        ctx: &Context,
        uid: &str,
        conversation: &str,
        start: bool,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let audience = audience(conversation, uid);
        let member = match audience {
            // Two fixed members: cached once the conversation exists.
            Some(Audience::Direct(_)) => self.in_direct(conversation, uid).await?,
            _ => self.store.is_member(conversation, uid).await.map_err(store_error)?,
        };
        if !member {
            return Err(store_error(StoreError::NotMember {
                uid: uid.to_owned(),
                conversation: conversation.to_owned(),
            }));
        }
        let state = if start { "start" } else { "stop" };
        let ttl = u64::try_from(self.config.typing_ttl.as_millis()).unwrap_or(u64::MAX);
        let push = Frame::json(&protocol::TypingFrame::new(conversation, uid, state, ttl));
        let cluster = ctx.cluster();
        match audience {
            Some(Audience::Direct(peer)) if peer != uid => cluster.send_to_uid(peer, &push, &[]).await,
            Some(Audience::Group(group)) => cluster.send_to_group(group, &push, &[ctx.client_id()]).await,
            _ => Ok(()),
        }
        .map_err(api_error)?;
        count("typing");
        Ok(match cid {
            Some(_) => Answer::Json(json!({"type": "typing", "conversation": conversation, "state": state})),
            None => Answer::Done,
        })
    }

    /// `search`: one ranked page within the reply budget.
    pub(crate) async fn search(
        &self,
        uid: &str,
        text: &str,
        conversation: Option<&str>,
        offset: u32,
        limit: u32,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let query = SearchQuery::parse(text).map_err(|e| ProtocolError::new(Code::InvalidField, e.to_string()))?;
        let mut used = 160 + text.len() * 6 + cid.map_or(0, |c| c.len() * 6 + 10);
        let budget = self.config.max_reply_bytes;
        let mut admit = |hit: &gatehouse_store::SearchHit| {
            let cost = serde_json::to_vec(&hit_value(hit)).map_or(usize::MAX, |v| v.len()) + 1;
            if used.saturating_add(cost) > budget {
                return false;
            }
            used += cost;
            true
        };
        let page = self
            .store
            .search(uid, &query, conversation, offset, limit, &mut admit)
            .await
            .map_err(store_error)?;
        let results: Vec<Value> = page.hits.iter().map(hit_value).collect();
        let next = offset + u32::try_from(results.len()).unwrap_or(0);
        let mut answer = json!({"type": "search", "query": text, "results": results, "offset": offset,
            "next_offset": next, "more": page.more});
        if let Some(cid) = cid {
            answer["cid"] = json!(cid);
        }
        count("search");
        Ok(Answer::Frame(self.bounded(&answer)))
    }
}

/// A search hit as a result object: the message plus `snippet` and `highlights`.
fn hit_value(hit: &gatehouse_store::SearchHit) -> Value {
    let mut value = protocol::message(&hit.message);
    value["snippet"] = json!(hit.snippet);
    value["highlights"] = json!(hit.highlights.iter().map(|(a, b)| [a, b]).collect::<Vec<_>>());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audience_of_a_conversation_depends_on_who_asks() {
        assert!(matches!(audience("d:ann:ben", "ann"), Some(Audience::Direct("ben"))));
        assert!(matches!(audience("d:ann:ben", "ben"), Some(Audience::Direct("ann"))));
        assert!(matches!(audience("d:ann:ann", "ann"), Some(Audience::Direct("ann"))));
        assert!(audience("d:ann:ben", "cat").is_none());
        assert!(matches!(audience("g:team", "cat"), Some(Audience::Group("g:team"))));
    }
}
