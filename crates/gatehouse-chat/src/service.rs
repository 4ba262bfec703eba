//! [`ChatWorker`]: the chat handlers — the handshake, the per-message path and the requests
//! that are neither protocol-2 events (`events`) nor group requests (`groups`).
//!
//! A `send` is validated, written through the group committer (one transaction for everything
//! queued), acknowledged to the sending connection, then pushed: to the recipient's devices and
//! the sender's other devices for a direct message, to the group's connections for a group.
//! Nothing is acknowledged or pushed before it is durable. A resend with a known `cid` gets the
//! original ack and is pushed again (recipients drop repeats by id), so a push lost with a dead
//! worker is repaired by the client's resend; a known `cid` reused for another message is a
//! `cid_conflict` (nothing stored, nothing pushed).

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use gatehouse_sdk::{ApiError, CloseInfo, Cluster, Context, Deadline, Frame, HandlerResult, Handshake, Reject, Worker};
use gatehouse_store::{
    Appended, ConversationRef, NewMessage, StoreError, StoredMessage, direct_conversation_id, group_conversation_id,
};
use serde_json::{Value, json};

use crate::auth;
use crate::common::{Answer, api_error, millis, now_ms, store_error, unix_ms};
use crate::groups::follow;
use crate::protocol::{self, Code, ProtocolError, Request, Target};
use crate::ratelimit::{Kind, Verdict};
use crate::reply::ListReply;
pub use crate::state::{ChatError, ChatWorker};

/// The close code of a connection that kept sending while rate limited (RFC 6455: policy
/// violation).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;

/// The close code of a connection whose token expired without a `refresh` (application range).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

impl Worker for ChatWorker {
    async fn on_close(&self, ctx: &Context, _close: &CloseInfo) -> HandlerResult {
        self.limiter.forget(ctx.client_id());
        if let Some(uid) = ctx.uid() {
            self.presence.disconnected(
                ctx.cluster().clone(),
                self.store.clone(),
                uid.to_string(),
                self.config.presence_grace,
                self.config.presence_contacts,
            );
        }
        Ok(())
    }

    async fn on_handshake(&self, ctx: &Context, handshake: &Handshake) -> Result<(), Reject> {
        let identity = auth::identify(handshake, self.verifier.as_ref(), self.config.insecure_dev_auth)?;
        let uid = identity.uid;
        let open = self.count_devices(ctx, &uid).await?;
        self.store
            .ensure_user(&uid)
            .await
            .map_err(|e| unavailable(&uid, "user registration", &e))?;
        // The welcome is queued before the bind, so it is the first frame the client reads even
        // when a message for this uid is pushed while the handshake completes.
        self.welcome(ctx, &uid, identity.expires_at).await?;
        // The gateway enforces the token's expiry, so it holds even if this worker dies: a
        // warning ahead of it, then close code 4001 unless the client refreshed the token.
        if let Some(expires_at) = identity.expires_at {
            ctx.set_deadline(Some(self.token_deadline(expires_at)))
                .await
                .map_err(|e| unavailable(&uid, "arming the token's expiry", &e))?;
        }
        ctx.bind_uid(&uid).await.map_err(|e| unavailable(&uid, "binding", &e))?;
        self.join_groups(ctx, &uid).await?;
        if identity.expires_at.is_none() {
            tracing::info!(%uid, "signed in with a bare uid (insecure dev mode)");
        }
        self.presence
            .connected(ctx.cluster(), &self.store, &uid, open, self.config.presence_contacts)
            .await;
        Ok(())
    }

    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        let Some(text) = frame.as_text() else {
            let error = ProtocolError::new(Code::BadJson, "binary frames are not part of the chat protocol");
            ctx.reply(Frame::json(&protocol::error(&error, None))).await?;
            return Ok(());
        };
        let parsed = crate::fastparse::parse(text, self.config.max_text_chars);
        let cid = parsed.cid.as_deref();
        if self.rate_limited(ctx, &parsed.request, cid).await? {
            return Ok(());
        }
        let outcome = match (parsed.request, ctx.uid()) {
            (Err(error), _) => Err(error),
            (Ok(_), None) => Err(ProtocolError::new(Code::Internal, "the connection has no uid")),
            (Ok(Request::Send { target, text, reply_to }), Some(uid)) => {
                self.send(ctx, &uid, target, text, reply_to, cid).await
            }
            // Everything but sending is rare next to it and holds much more state (store
            // queries): boxed, so that state is not allocated for every message.
            (Ok(request), Some(uid)) => Box::pin(self.execute(ctx, &uid, request, cid)).await,
        };
        self.answer(ctx, outcome, cid).await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------- the per-message path

impl ChatWorker {
    /// Checks the connection's rate limit for `request`. Over it, answers the refusal (with
    /// the request's `cid` and when to retry), closes a connection that kept sending while
    /// refused, and returns true: the request is not executed.
    async fn rate_limited(
        &self,
        ctx: &Context,
        request: &Result<Request, ProtocolError>,
        cid: Option<&str>,
    ) -> Result<bool, ApiError> {
        let kind = match request {
            Ok(Request::Send { .. } | Request::Edit { .. } | Request::Delete { .. } | Request::React { .. }) => {
                Kind::Send
            }
            Ok(Request::Typing { .. }) => Kind::Typing,
            _ => Kind::Request,
        };
        match self.limiter.check(ctx.client_id(), kind, cid) {
            Verdict::Allowed => return Ok(false),
            Verdict::Refused { retry_after } => {
                let retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX).max(1);
                let mut error = ProtocolError::new(
                    Code::RateLimited,
                    format!("too many requests; retry in {retry_after_ms} ms"),
                );
                error.fields.push(("retry_after_ms", json!(retry_after_ms)));
                ctx.reply(self.bounded(&protocol::error(&error, cid))).await?;
            }
            Verdict::Abusive => {
                let error = ProtocolError::new(
                    Code::RateLimited,
                    "too many requests while refused: closing the connection (1008)",
                );
                ctx.reply(self.bounded(&protocol::error(&error, cid))).await?;
                ctx.close(CLOSE_POLICY_VIOLATION, "rate limit exceeded").await?;
            }
        }
        Ok(true)
    }

    /// Replies what a request answered: a JSON answer with the request's `cid` added, a frame
    /// as it is, an error as an error frame with the `cid`; nothing for [`Answer::Done`].
    async fn answer(
        &self,
        ctx: &Context,
        outcome: Result<Answer, ProtocolError>,
        cid: Option<&str>,
    ) -> Result<(), ApiError> {
        let frame = match outcome {
            Ok(Answer::Done) => return Ok(()),
            Ok(Answer::Frame(frame)) => frame,
            Ok(Answer::Json(mut answer)) => {
                if let Some(cid) = cid {
                    answer["cid"] = json!(cid);
                }
                self.bounded(&answer)
            }
            Err(error) => self.bounded(&protocol::error(&error, cid)),
        };
        ctx.reply(frame).await
    }

    /// Stores one message, acknowledges it, then pushes it. The hot path: everything rare in
    /// it (a reply target, a recipient not yet cached, the error look-up) is boxed, so the
    /// future allocated for every message stays small.
    async fn send(
        &self,
        ctx: &Context,
        uid: &str,
        target: Target,
        text: String,
        reply_to: Option<i64>,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let cid = cid.expect("parse requires a cid for send").to_owned();
        if let Some(id) = reply_to {
            self.check_reply_target(uid, &target, id).await?;
        }
        let message = NewMessage {
            conversation: self.conversation_of(target).await?,
            sender: uid.to_owned(),
            cid,
            text,
            ts_ms: now_ms(),
            reply_to,
        };
        let appended = self.append(uid, message).await?;
        let stored = &appended.message;
        ctx.reply(Frame::json(&protocol::ack(stored, appended.duplicate)))
            .await
            .map_err(api_error)?;
        self.push_message(ctx, uid, stored).await;
        Ok(Answer::Done)
    }

    /// Refuses a `reply_to` that names no message `uid` can read in the send's conversation.
    async fn check_reply_target(&self, uid: &str, target: &Target, id: i64) -> Result<(), ProtocolError> {
        let conversation = match target {
            Target::Direct(to) => direct_conversation_id(uid, to),
            Target::Group(group) => group_conversation_id(group),
        };
        Box::pin(self.store.reply_target(uid, &conversation, id))
            .await
            .map_err(store_error)
    }

    /// The conversation a send goes to; a direct message needs a recipient that has signed in.
    async fn conversation_of(&self, target: Target) -> Result<ConversationRef, ProtocolError> {
        Ok(match target {
            Target::Direct(to) => {
                if !self.user_exists(&to).await? {
                    return Err(ProtocolError::new(Code::UnknownRecipient, format!("no user {to}")));
                }
                ConversationRef::Direct { to }
            }
            Target::Group(id) => ConversationRef::Group { id },
        })
    }

    /// Writes `message` through the group committer. "Not a member" of a group that does not
    /// exist is answered precisely: `unknown_group`.
    async fn append(&self, uid: &str, message: NewMessage) -> Result<Appended, ProtocolError> {
        let group = match &message.conversation {
            ConversationRef::Group { id } => Some(id.clone()),
            ConversationRef::Direct { .. } => None,
        };
        match (self.committer.append(message).await, group) {
            (Ok(appended), _) => Ok(appended),
            (Err(StoreError::NotMember { .. }), Some(id)) => Err(match Box::pin(self.store.group_exists(&id)).await {
                Ok(false) => store_error(StoreError::UnknownGroup(id)),
                _ => store_error(StoreError::NotMember {
                    uid: uid.to_owned(),
                    conversation: group_conversation_id(&id),
                }),
            }),
            (Err(error), _) => Err(store_error(error)),
        }
    }

    /// Pushes a stored and acknowledged message to its recipients' devices and the sender's
    /// other devices (a direct message), or to the group's connections.
    async fn push_message(&self, ctx: &Context, uid: &str, stored: &StoredMessage) {
        let cluster = ctx.cluster();
        let push = Frame::json(&protocol::MessageFrame::new(stored));
        let me = [ctx.client_id()];
        let pushed = match (&stored.to, &stored.group) {
            (Some(to), _) if to == uid => cluster.send_to_uids(&[uid], &push, &me).await,
            (Some(to), _) => cluster.send_to_uids(&[to.as_str(), uid], &push, &me).await,
            (None, Some(group)) => cluster.send_to_group(&group_conversation_id(group), &push, &me).await,
            (None, None) => Ok(()),
        };
        if let Err(error) = pushed {
            // The message is stored and its ack is out: an error frame with the same cid now would
            // contradict the ack. A device the push missed (a gateway leaving mid-send) sees the
            // gap by the next push's seq or by the change counter in `pong`, and syncs.
            tracing::warn!(%uid, conversation = %stored.conversation, seq = stored.seq, %error, "push of a stored message failed; recipients catch up with sync");
        }
    }
}

// ---------------------------------------------------------------------- the other requests

impl ChatWorker {
    /// Executes one request for `uid`; returns the answer. The protocol-2 events (`events`)
    /// and the group and block requests (`groups`) are handled in their own modules.
    async fn execute(
        &self,
        ctx: &Context,
        uid: &str,
        request: Request,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        match request {
            Request::Send { target, text, reply_to } => {
                Box::pin(self.send(ctx, uid, target, text, reply_to, cid)).await
            }
            Request::History {
                conversation,
                before,
                limit,
            } => self.history(uid, &conversation, before, limit, cid).await,
            Request::Conversations { after, limit } => self.conversations(uid, after.as_deref(), limit, cid).await,
            Request::Refresh { token } => self.refresh(ctx, uid, &token).await.map(Answer::Json),
            Request::Online => self.online(ctx.cluster(), uid, cid).await,
            request @ (Request::Sync { .. }
            | Request::Ping
            | Request::Edit { .. }
            | Request::Delete { .. }
            | Request::React { .. }
            | Request::Delivered { .. }
            | Request::Read { .. }
            | Request::Typing { .. }
            | Request::Search { .. }) => self.event_request(ctx, uid, request, cid).await,
            request @ (Request::CreateGroup { .. }
            | Request::JoinGroup { .. }
            | Request::LeaveGroup { .. }
            | Request::Invite { .. }
            | Request::Decline { .. }
            | Request::Members { .. }
            | Request::Invitations) => self.group_request(ctx, uid, request, cid).await,
            request @ (Request::Kick { .. }
            | Request::Ban { .. }
            | Request::Unban { .. }
            | Request::Promote { .. }
            | Request::Demote { .. }
            | Request::UpdateGroup { .. }
            | Request::GroupInfo { .. }) => self.admin_request(ctx, uid, request).await,
            request @ (Request::Block { .. } | Request::Unblock { .. } | Request::Blocks { .. }) => {
                self.block_request(uid, request, cid).await
            }
        }
    }

    /// `history`: the page of `conversation`'s messages before `before`, oldest first, within
    /// the reply budget.
    async fn history(
        &self,
        uid: &str,
        conversation: &str,
        before: Option<i64>,
        limit: u32,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let mut reply = self.list_reply("history", cid, &[("conversation", conversation)], "messages", None);
        let more = match self
            .store
            .history_page(uid, conversation, before, limit, &mut |m| {
                reply.push(&protocol::message(m))
            })
            .await
        {
            Ok(page) => page.more,
            // A direct conversation of this user with no message yet: empty, not forbidden.
            Err(StoreError::NotMember { .. }) if is_own_direct(conversation, uid) => false,
            Err(error) => return Err(store_error(error)),
        };
        reply.reverse();
        message_page(reply, more)
    }

    /// `conversations`: the user's conversations after `after`, within the reply budget.
    async fn conversations(
        &self,
        uid: &str,
        after: Option<&str>,
        limit: u32,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let page = self
            .store
            .conversations_page(uid, after, limit)
            .await
            .map_err(store_error)?;
        let mut reply = self.list_reply("conversations", cid, &[], "conversations", None);
        let mut more = page.more;
        for summary in &page.conversations {
            if !reply.push(summary) {
                more = true;
                break;
            }
        }
        Ok(Answer::Frame(reply.finish(more)))
    }

    /// `online`: which of the asker's contacts are online, and when the others were last seen.
    /// Only the asker's contacts, checked against the local routing table (no round trip to any
    /// gateway when the table is trusted).
    async fn online(&self, cluster: &Cluster, uid: &str, cid: Option<&str>) -> Result<Answer, ProtocolError> {
        let max = self.config.max_online_contacts;
        let contacts = self.store.contacts_of(uid, max).await.map_err(store_error)?;
        let capped = contacts.len() >= max as usize;
        let mut online: Vec<String> = cluster
            .online_uids(&contacts)
            .await
            .map_err(api_error)?
            .into_iter()
            .chain([uid.to_owned()])
            .collect();
        online.sort_unstable();
        online.dedup();
        let offline: Vec<String> = contacts
            .into_iter()
            .filter(|c| online.binary_search(c).is_err())
            .collect();
        let last_seen = self.store.last_seen(&offline).await.map_err(store_error)?;
        let mut reply = self.list_reply("online", cid, &[], "uids", Some("last_seen"));
        let trimmed = online.iter().any(|u| !reply.push(u));
        let mut seen: Vec<(&String, &i64)> = last_seen.iter().collect();
        seen.sort_unstable();
        let trimmed_seen = seen.into_iter().any(|(uid, at)| !reply.push_entry(uid, &json!(at)));
        Ok(Answer::Frame(reply.finish(capped || trimmed || trimmed_seen)))
    }

    /// Replaces the connection's token: same `sub`, a later (or earlier) expiry.
    async fn refresh(&self, ctx: &Context, uid: &str, token: &str) -> Result<Value, ProtocolError> {
        let Some(verifier) = &self.verifier else {
            return Err(ProtocolError::new(
                Code::InvalidToken,
                "tokens are not accepted: the server has no jwt key configured",
            ));
        };
        let identity = verifier
            .verify(token)
            .map_err(|reject| ProtocolError::new(Code::InvalidToken, reject.reason))?;
        if identity.uid != uid {
            return Err(ProtocolError::new(
                Code::SubjectMismatch,
                format!("the token names {}, this connection is {uid}", identity.uid),
            ));
        }
        let expires_at = identity.expires_at.unwrap_or(UNIX_EPOCH);
        ctx.set_deadline(Some(self.token_deadline(expires_at)))
            .await
            .map_err(api_error)?;
        Ok(json!({"type": "refreshed", "expires_at": unix_ms(expires_at)}))
    }
}

// ---------------------------------------------------------------------- the handshake's steps

impl ChatWorker {
    /// The uid's devices already connected: counted before this connection is bound, so it is
    /// not among them (two handshakes of one uid at the same moment both see the count without
    /// the other). Refuses the handshake when the uid has its most connections already; the
    /// count also tells presence whether this is the uid's first device.
    async fn count_devices(&self, ctx: &Context, uid: &str) -> Result<usize, Reject> {
        let max = self.config.max_connections_per_uid;
        let open = ctx
            .cluster()
            .client_ids_by_uid(uid)
            .await
            .map_err(|e| unavailable(uid, "counting connections", &e))?;
        if max > 0 && open.len() >= max as usize {
            self.refused_connections.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%uid, open = open.len(), max, "handshake refused: too many connections for one uid");
            return Err(Reject::new(
                429,
                format!("too many connections for this uid (at most {max})"),
            ));
        }
        Ok(open.len())
    }

    /// Queues the `welcome`: the uid, the connection, the protocol version and the server's
    /// limits the client follows, and the token's expiry when it has one.
    async fn welcome(&self, ctx: &Context, uid: &str, expires_at: Option<SystemTime>) -> Result<(), Reject> {
        let mut welcome = json!({
            "type": "welcome", "uid": uid, "client": ctx.client_id(),
            "protocol": protocol::PROTOCOL_VERSION,
            "sync_window": self.config.sync_window,
            "heartbeat_ms": millis(self.config.heartbeat),
            "edit_window_ms": self.config.edit_window.map_or(0, millis),
            "typing_ttl_ms": millis(self.config.typing_ttl),
        });
        if let Some(expires_at) = expires_at {
            welcome["expires_at"] = json!(unix_ms(expires_at));
        }
        ctx.reply(Frame::json(&welcome))
            .await
            .map_err(|e| unavailable(uid, "welcoming", &e))
    }

    /// After the bind: makes this connection follow the cluster groups of the uid's groups.
    ///
    /// Bind, read the groups, join them, read again, leave what is no longer held. A removal
    /// commits in the store and then takes every connection the cluster lists for the uid
    /// out of the group. Against this handshake it either committed before the first read
    /// (the group is never joined), or after the second (the bind had returned by then, so
    /// the removal's lookup finds this connection, and its leave follows our join), or in
    /// between (the second read misses the group and we leave it ourselves). No order of
    /// the two leaves this connection in a group its user no longer belongs to.
    async fn join_groups(&self, ctx: &Context, uid: &str) -> Result<(), Reject> {
        let groups = self
            .store
            .groups_of(uid)
            .await
            .map_err(|e| unavailable(uid, "loading groups", &e))?;
        for group in &groups {
            follow(ctx, ctx.client_id(), &group_conversation_id(group), true)
                .await
                .map_err(|e| unavailable(uid, "joining groups", &e.message))?;
        }
        let still = self
            .store
            .groups_of(uid)
            .await
            .map_err(|e| unavailable(uid, "loading groups", &e))?;
        for group in groups.iter().filter(|g| still.binary_search(g).is_err()) {
            follow(ctx, ctx.client_id(), &group_conversation_id(group), false)
                .await
                .map_err(|e| unavailable(uid, "leaving groups", &e.message))?;
        }
        Ok(())
    }

    /// The deadline of a connection whose token expires at `expires_at`.
    fn token_deadline(&self, expires_at: SystemTime) -> Deadline {
        let warning = json!({"type": "token_expiring", "expires_at": unix_ms(expires_at)});
        Deadline {
            at: expires_at,
            warning: Some((self.config.token_warning, Frame::json(&warning))),
            close_code: CLOSE_TOKEN_EXPIRED,
            close_reason: "token expired".to_owned(),
        }
    }
}

/// The refusal of a handshake a step of which failed (`what`): a retryable 503, logged.
fn unavailable(uid: &str, what: &str, error: &dyn std::fmt::Display) -> Reject {
    tracing::warn!(%uid, %error, "{what} failed during a handshake");
    Reject::new(503, format!("{what} failed; retry later"))
}

/// Finishes a page of messages; a page that could not take even its first message is a
/// configuration error (a stored text longer than `max_text_chars` allows), reported
/// loudly instead of answering an empty page that would be asked for again forever.
fn message_page(reply: ListReply, more: bool) -> Result<Answer, ProtocolError> {
    if reply.is_empty() && reply.is_full() {
        tracing::error!("a stored message does not fit max_reply_bytes; raise it");
        return Err(ProtocolError::new(
            Code::Internal,
            "a stored message is larger than the server's reply limit",
        ));
    }
    Ok(Answer::Frame(reply.finish(more)))
}

/// Whether `conversation` is a direct conversation (`d:a:b`) with `uid` as one of the two.
/// Chat uids contain neither `:` nor `%`, so the two parts are the uids verbatim.
fn is_own_direct(conversation: &str, uid: &str) -> bool {
    conversation
        .strip_prefix("d:")
        .and_then(|pair| pair.split_once(':'))
        .is_some_and(|(a, b)| (a == uid || b == uid) && auth::valid_uid(a) && auth::valid_uid(b))
}
