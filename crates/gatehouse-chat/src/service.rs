//! [`ChatWorker`]: the chat handlers.
//!
//! A `send` is validated, written through the group committer (one transaction for everything
//! queued), acknowledged to the sending connection, then pushed: to the recipient's devices and
//! the sender's other devices for a direct message, to the group's connections for a group.
//! Nothing is acknowledged or pushed before it is durable. A resend with a known `cid` gets the
//! original ack and is pushed again (recipients drop repeats by id), so a push lost with a dead
//! worker is repaired by the client's resend; a known `cid` reused for another message is a
//! `cid_conflict` (nothing stored, nothing pushed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashSet;
use gatehouse_sdk::{ApiError, CloseInfo, Context, Deadline, Frame, HandlerResult, Handshake, Reject, Worker};
use gatehouse_store::{
    ChangeAction, ConversationRef, GroupCommitter, Marker, NewMessage, Store, StoreError, direct_conversation_id,
    group_conversation_id,
};
use serde_json::{Map, Value, json};

use crate::auth::{self, Verifier};
use crate::config::{ChatConfig, ConfigError};
use crate::groups::follow;
use crate::presence::Presence;
use crate::protocol::{self, Code, ProtocolError, Request, Target};
use crate::ratelimit::{Kind, Limiter, Verdict};
use crate::reply::ListReply;

/// Why the chat worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or migrated.
    #[error("cannot open the chat store: {0}")]
    Store(#[from] StoreError),
}

/// The chat service's [`Worker`].
pub struct ChatWorker {
    pub(crate) config: ChatConfig,
    pub(crate) store: Store,
    pub(crate) committer: GroupCommitter,
    /// Uids known to have signed in. Users are never removed, so a positive answer can be kept
    /// forever and a direct message costs no lookup query.
    known_users: DashSet<String>,
    /// Per-connection rate limits.
    limiter: Limiter,
    /// Checks tokens; `None` when no key is configured (dev mode or nothing accepted).
    verifier: Option<Verifier>,
    /// Handshakes refused because their uid had too many connections.
    refused_connections: AtomicU64,
    /// Pending offline announcements.
    presence: Presence,
}

impl ChatWorker {
    /// Opens (and migrates) the store and starts the group committer.
    pub async fn open(config: ChatConfig) -> Result<ChatWorker, ChatError> {
        config.validate()?;
        let verifier = config.verifier()?;
        let store = Store::open(&config.database_url).await?;
        tracing::info!(backend = ?store.backend(), "chat store ready");
        let committer = GroupCommitter::spawn(store.clone(), config.commit).await?;
        let limiter = Limiter::new(config.rate);
        Ok(ChatWorker {
            config,
            store,
            committer,
            known_users: DashSet::new(),
            limiter,
            verifier,
            refused_connections: AtomicU64::new(0),
            presence: Presence::default(),
        })
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

    /// Starts a list reply of `kind` within the reply budget, with the request's `cid` and
    /// `fields`.
    pub(crate) fn list_reply(
        &self,
        kind: &str,
        cid: Option<&str>,
        fields: &[(&str, &str)],
        list: &'static str,
        map: Option<&'static str>,
    ) -> ListReply {
        let mut envelope = Map::new();
        envelope.insert("type".to_owned(), json!(kind));
        for (name, value) in fields {
            envelope.insert((*name).to_owned(), json!(value));
        }
        if let Some(cid) = cid {
            envelope.insert("cid".to_owned(), json!(cid));
        }
        ListReply::new(envelope, list, map, self.config.max_reply_bytes)
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

    /// Executes one request for `uid`; returns the answer.
    async fn execute(
        &self,
        ctx: &Context,
        uid: &str,
        request: Request,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let cluster = ctx.cluster();
        Ok(Answer::Json(match request {
            Request::Send { target, text, reply_to } => {
                return Box::pin(self.send(ctx, uid, target, text, reply_to, cid)).await;
            }
            Request::Sync { cursors, limit, window } => return self.catch_up(uid, &cursors, limit, window, cid).await,
            Request::Ping => self.pong(uid).await?,
            Request::Edit { conversation, id, text } => {
                let window_ms = self
                    .config
                    .edit_window
                    .map(|w| i64::try_from(w.as_millis()).unwrap_or(i64::MAX));
                let action = ChangeAction::Edit { text, window_ms };
                return self.change(ctx, uid, conversation, id, action, cid).await;
            }
            Request::Delete { conversation, id } => {
                return self.change(ctx, uid, conversation, id, ChangeAction::Delete, cid).await;
            }
            Request::React {
                conversation,
                id,
                emoji,
                add,
            } => {
                let action = ChangeAction::React { emoji, add };
                return self.change(ctx, uid, conversation, id, action, cid).await;
            }
            Request::Delivered { conversation, seq } => {
                return self.receipt(ctx, uid, &conversation, seq, Marker::Delivered, cid).await;
            }
            Request::Typing { conversation, start } => return self.typing(ctx, uid, &conversation, start, cid).await,
            Request::Search {
                query,
                conversation,
                offset,
                limit,
            } => {
                return self
                    .search(uid, &query, conversation.as_deref(), offset, limit, cid)
                    .await;
            }
            Request::History {
                conversation,
                before,
                limit,
            } => {
                let mut reply = self.list_reply("history", cid, &[("conversation", &conversation)], "messages", None);
                let more = match self
                    .store
                    .history_page(uid, &conversation, before, limit, &mut |m| {
                        reply.push(&protocol::message(m))
                    })
                    .await
                {
                    Ok(page) => page.more,
                    // A direct conversation of this user with no message yet: empty, not forbidden.
                    Err(StoreError::NotMember { .. }) if is_own_direct(&conversation, uid) => false,
                    Err(error) => return Err(store_error(error)),
                };
                reply.reverse();
                return Self::message_page(reply, more);
            }
            Request::Conversations { after, limit } => {
                let page = self
                    .store
                    .conversations_page(uid, after.as_deref(), limit)
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
                return Ok(Answer::Frame(reply.finish(more)));
            }
            Request::Read { conversation, seq } => {
                return self.receipt(ctx, uid, &conversation, seq, Marker::Read, cid).await;
            }
            request @ (Request::CreateGroup { .. }
            | Request::JoinGroup { .. }
            | Request::LeaveGroup { .. }
            | Request::Members { .. }
            | Request::Invite { .. }
            | Request::Decline { .. }
            | Request::Invitations
            | Request::Kick { .. }
            | Request::Ban { .. }
            | Request::Unban { .. }
            | Request::Promote { .. }
            | Request::Demote { .. }
            | Request::UpdateGroup { .. }
            | Request::GroupInfo { .. }
            | Request::Block { .. }
            | Request::Unblock { .. }
            | Request::Blocks { .. }) => return self.group_request(ctx, uid, request, cid).await,
            Request::Refresh { token } => self.refresh(ctx, uid, &token).await?,
            Request::Online => {
                // Only the asker's contacts, checked against the local routing table (no round
                // trip to any gateway when the table is trusted).
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
                return Ok(Answer::Frame(reply.finish(capped || trimmed || trimmed_seen)));
            }
        }))
    }

    /// Stores one message, acknowledges it, then pushes it. The hot path: everything rare in
    /// it (a recipient not yet cached, the error look-up) is boxed, so the future allocated
    /// for every message stays small.
    async fn send(
        &self,
        ctx: &Context,
        uid: &str,
        target: Target,
        text: String,
        reply_to: Option<i64>,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let cluster = ctx.cluster();
        let cid = cid.expect("parse requires a cid for send").to_owned();
        if let Some(id) = reply_to {
            let conversation = match &target {
                Target::Direct(to) => direct_conversation_id(uid, to),
                Target::Group(group) => group_conversation_id(group),
            };
            Box::pin(self.store.reply_target(uid, &conversation, id))
                .await
                .map_err(store_error)?;
        }
        let conversation = match target {
            Target::Direct(to) => {
                if !self.user_exists(&to).await? {
                    return Err(ProtocolError::new(Code::UnknownRecipient, format!("no user {to}")));
                }
                ConversationRef::Direct { to }
            }
            Target::Group(id) => ConversationRef::Group { id },
        };
        let message = NewMessage {
            conversation,
            sender: uid.to_owned(),
            cid,
            text,
            ts_ms: now_ms(),
            reply_to,
        };
        let group = match &message.conversation {
            ConversationRef::Group { id } => Some(id.clone()),
            ConversationRef::Direct { .. } => None,
        };
        let appended = match self.committer.append(message).await {
            Ok(appended) => appended,
            // "Not a member" of a group that does not exist: say so precisely.
            Err(StoreError::NotMember { .. }) if group.is_some() => {
                let id = group.expect("checked");
                return Err(match Box::pin(self.store.group_exists(&id)).await {
                    Ok(false) => store_error(StoreError::UnknownGroup(id)),
                    _ => store_error(StoreError::NotMember {
                        uid: uid.to_owned(),
                        conversation: group_conversation_id(&id),
                    }),
                });
            }
            Err(error) => return Err(store_error(error)),
        };
        let stored = &appended.message;
        ctx.reply(Frame::json(&protocol::ack(stored, appended.duplicate)))
            .await
            .map_err(api_error)?;
        let push = Frame::json(&protocol::message(stored));
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
        Ok(Answer::Done)
    }

    /// Whether `uid` has ever signed in (cached once true).
    async fn user_exists(&self, uid: &str) -> Result<bool, ProtocolError> {
        if self.known_users.contains(uid) {
            return Ok(true);
        }
        let exists = Box::pin(self.store.user_exists(uid)).await.map_err(store_error)?;
        if exists {
            self.known_users.insert(uid.to_owned());
        }
        Ok(exists)
    }
}

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
        let unavailable = |what: &str, error: &dyn std::fmt::Display| {
            tracing::warn!(%uid, %error, "{what} failed during a handshake");
            Reject::new(503, format!("{what} failed; retry later"))
        };
        // Devices per uid: counted before this connection is bound, so it is not among them.
        // Two handshakes of one uid at the same moment both see the count without the other.
        let max = self.config.max_connections_per_uid;
        let open = ctx
            .cluster()
            .client_ids_by_uid(&uid)
            .await
            .map_err(|e| unavailable("counting connections", &e))?;
        // The count also tells presence whether this is the uid's first device.
        if max > 0 && open.len() >= max as usize {
            self.refused_connections.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%uid, open = open.len(), max, "handshake refused: too many connections for one uid");
            return Err(Reject::new(
                429,
                format!("too many connections for this uid (at most {max})"),
            ));
        }
        self.store
            .ensure_user(&uid)
            .await
            .map_err(|e| unavailable("user registration", &e))?;
        // The welcome is queued before the bind, so it is the first frame the client reads even
        // when a message for this uid is pushed while the handshake completes.
        let mut welcome = json!({
            "type": "welcome", "uid": uid, "client": ctx.client_id(),
            "protocol": protocol::PROTOCOL_VERSION,
            "sync_window": self.config.sync_window,
            "heartbeat_ms": millis(self.config.heartbeat),
            "edit_window_ms": self.config.edit_window.map_or(0, millis),
            "typing_ttl_ms": millis(self.config.typing_ttl),
        });
        if let Some(expires_at) = identity.expires_at {
            welcome["expires_at"] = json!(unix_ms(expires_at));
        }
        ctx.reply(Frame::json(&welcome))
            .await
            .map_err(|e| unavailable("welcoming", &e))?;
        // The gateway enforces the token's expiry, so it holds even if this worker dies: a
        // warning ahead of it, then close code 4001 unless the client refreshed the token.
        if let Some(expires_at) = identity.expires_at {
            ctx.set_deadline(Some(self.token_deadline(expires_at)))
                .await
                .map_err(|e| unavailable("arming the token's expiry", &e))?;
        }
        ctx.bind_uid(&uid).await.map_err(|e| unavailable("binding", &e))?;
        // Bind, read the groups, join them, read again, leave what is no longer held. A removal
        // commits in the store and then takes every connection the cluster lists for the uid
        // out of the group. Against this handshake it either committed before the first read
        // (the group is never joined), or after the second (the bind had returned by then, so
        // the removal's lookup finds this connection, and its leave follows our join), or in
        // between (the second read misses the group and we leave it ourselves). No order of
        // the two leaves this connection in a group its user no longer belongs to.
        let groups = self
            .store
            .groups_of(&uid)
            .await
            .map_err(|e| unavailable("loading groups", &e))?;
        for group in &groups {
            follow(ctx, ctx.client_id(), &group_conversation_id(group), true)
                .await
                .map_err(|e| unavailable("joining groups", &e.message))?;
        }
        let still = self
            .store
            .groups_of(&uid)
            .await
            .map_err(|e| unavailable("loading groups", &e))?;
        for group in groups.iter().filter(|g| still.binary_search(g).is_err()) {
            follow(ctx, ctx.client_id(), &group_conversation_id(group), false)
                .await
                .map_err(|e| unavailable("leaving groups", &e.message))?;
        }
        if identity.expires_at.is_none() {
            tracing::info!(%uid, "signed in with a bare uid (insecure dev mode)");
        }
        self.presence
            .connected(
                ctx.cluster(),
                &self.store,
                &uid,
                open.len(),
                self.config.presence_contacts,
            )
            .await;
        Ok(())
    }

    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        let Some(text) = frame.as_text() else {
            let error = ProtocolError::new(Code::BadJson, "binary frames are not part of the chat protocol");
            ctx.reply(Frame::json(&protocol::error(&error, None))).await?;
            return Ok(());
        };
        let parsed = protocol::parse(text, self.config.max_text_chars);
        let cid = parsed.cid.as_deref();
        let kind = match &parsed.request {
            Ok(Request::Send { .. } | Request::Edit { .. } | Request::Delete { .. } | Request::React { .. }) => {
                Kind::Send
            }
            Ok(Request::Typing { .. }) => Kind::Typing,
            _ => Kind::Request,
        };
        match self.limiter.check(ctx.client_id(), kind) {
            Verdict::Allowed => {}
            Verdict::Refused { retry_after } => {
                let retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX).max(1);
                let mut error = ProtocolError::new(
                    Code::RateLimited,
                    format!("too many requests; retry in {retry_after_ms} ms"),
                );
                error.fields.push(("retry_after_ms", json!(retry_after_ms)));
                ctx.reply(self.bounded(&protocol::error(&error, cid))).await?;
                return Ok(());
            }
            Verdict::Abusive => {
                let error = ProtocolError::new(
                    Code::RateLimited,
                    "too many requests while refused: closing the connection (1008)",
                );
                ctx.reply(self.bounded(&protocol::error(&error, cid))).await?;
                ctx.close(CLOSE_POLICY_VIOLATION, "rate limit exceeded").await?;
                return Ok(());
            }
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
        ctx.reply(frame).await?;
        Ok(())
    }
}

/// What a handled request answers.
pub(crate) enum Answer {
    /// Nothing more: a send was answered with its ack before its pushes went out.
    Done,
    /// A JSON object, to which the request's `cid` is added.
    Json(Value),
    /// A frame built within the reply budget, `cid` included.
    Frame(Frame),
}

impl ChatWorker {
    /// Encodes a single-object answer. Answers are small by construction (every string in
    /// them is bounded); one that is not is a bug, answered with `internal` instead of a frame
    /// the gateway might refuse.
    pub(crate) fn bounded(&self, answer: &Value) -> Frame {
        let frame = Frame::json(answer);
        if frame.data().len() <= self.config.max_reply_bytes {
            return frame;
        }
        tracing::error!(
            bytes = frame.data().len(),
            kind = %answer["type"],
            "an answer exceeded max_reply_bytes"
        );
        let error = ProtocolError::new(Code::Internal, "the answer was larger than the reply limit");
        Frame::json(&protocol::error(&error, None))
    }
}

/// Whether `conversation` is a direct conversation (`d:a:b`) with `uid` as one of the two.
/// Chat uids contain neither `:` nor `%`, so the two parts are the uids verbatim.
fn is_own_direct(conversation: &str, uid: &str) -> bool {
    conversation
        .strip_prefix("d:")
        .and_then(|pair| pair.split_once(':'))
        .is_some_and(|(a, b)| (a == uid || b == uid) && auth::valid_uid(a) && auth::valid_uid(b))
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Milliseconds of a duration, saturated.
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub(crate) fn store_error(error: StoreError) -> ProtocolError {
    let code = match &error {
        StoreError::LimitExceeded { limit, max } => {
            return ProtocolError::limit(limit.as_str(), u64::from(*max), error.to_string());
        }
        StoreError::NotMember { .. } => Code::NotMember,
        StoreError::UnknownGroup(_) => Code::UnknownGroup,
        StoreError::GroupExists(_) => Code::GroupExists,
        StoreError::NotInvited { .. } => Code::NotInvited,
        StoreError::Banned { .. } => Code::Banned,
        StoreError::Forbidden { .. } => Code::Forbidden,
        StoreError::Blocked { .. } => Code::Blocked,
        StoreError::UnknownUser(_) => Code::UnknownUser,
        StoreError::CidConflict { .. } => Code::CidConflict,
        StoreError::UnknownMessage { .. } => Code::UnknownMessage,
        StoreError::EditWindowClosed { .. } => Code::EditWindowClosed,
        StoreError::MessageDeleted(_) => Code::MessageDeleted,
        StoreError::InvalidInput(_) => Code::InvalidField,
        StoreError::Overloaded => Code::Overloaded,
        StoreError::Database(_) | StoreError::Closed | StoreError::Contention(_) => Code::Unavailable,
        StoreError::Invariant(_) | StoreError::Migrate(_) | StoreError::Start(_) => Code::Internal,
    };
    if matches!(code, Code::Unavailable | Code::Internal) {
        tracing::error!(%error, "chat store failed");
    }
    ProtocolError::new(code, error.to_string())
}

pub(crate) fn api_error(error: ApiError) -> ProtocolError {
    tracing::warn!(%error, "cluster call failed");
    ProtocolError::new(Code::Unavailable, error.to_string())
}
