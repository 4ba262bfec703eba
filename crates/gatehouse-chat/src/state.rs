//! [`ChatWorker`]'s state (configuration, store, committer, caches, limits, presence), how it is
//! opened, and the answer builders every handler module uses.
//!
//! The handlers themselves live above this module: the per-message path and the handshake in
//! `service`, the protocol-2 requests in `events`, the group requests in `groups`. Each adds
//! its own `impl ChatWorker` block, and none of them imports another.

use std::sync::atomic::AtomicU64;

use dashmap::DashSet;
use gatehouse_sdk::Frame;
use gatehouse_store::{GroupCommitter, Store, StoreError};
use serde_json::{Map, Value, json};

use crate::auth::Verifier;
use crate::common::store_error;
use crate::config::{ChatConfig, ConfigError};
use crate::presence::Presence;
use crate::protocol::{self, Code, ProtocolError};
use crate::ratelimit::Limiter;
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

/// The chat service's [`Worker`](gatehouse_sdk::Worker).
pub struct ChatWorker {
    pub(crate) config: ChatConfig,
    pub(crate) store: Store,
    pub(crate) committer: GroupCommitter,
    /// Uids known to have signed in. Users are never removed, so a positive answer can be kept
    /// forever and a direct message costs no lookup query.
    known_users: DashSet<String>,
    /// Per-connection rate limits.
    pub(crate) limiter: Limiter,
    /// Checks tokens; `None` when no key is configured (dev mode or nothing accepted).
    pub(crate) verifier: Option<Verifier>,
    /// Handshakes refused because their uid had too many connections.
    pub(crate) refused_connections: AtomicU64,
    /// Pending offline announcements.
    pub(crate) presence: Presence,
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

    /// Whether `uid` has ever signed in (cached once true).
    pub(crate) async fn user_exists(&self, uid: &str) -> Result<bool, ProtocolError> {
        if self.known_users.contains(uid) {
            return Ok(true);
        }
        let exists = Box::pin(self.store.user_exists(uid)).await.map_err(store_error)?;
        if exists {
            self.known_users.insert(uid.to_owned());
        }
        Ok(exists)
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
