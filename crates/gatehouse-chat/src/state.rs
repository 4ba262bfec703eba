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
    /// Uids known to have signed in. Users are never removed, so a positive answer stays true
    /// and a direct message costs no lookup query.
    known_users: Known,
    /// Direct conversations known to exist. Their two members never change, so a `typing` in
    /// one costs no membership query once its first has been checked.
    known_directs: Known,
    /// Per-connection rate limits.
    pub(crate) limiter: Limiter,
    /// Checks tokens; `None` when no key is configured (dev mode or nothing accepted).
    pub(crate) verifier: Option<Verifier>,
    /// Handshakes refused because their uid had too many connections.
    pub(crate) refused_connections: AtomicU64,
    /// Pending offline announcements.
    pub(crate) presence: Presence,
}

/// How many facts each [`Known`] set keeps before it starts over: about 20 MB of short ids.
const KNOWN_CAPACITY: usize = 200_000;

/// Facts that never turn false (a user has signed in, a direct conversation exists), kept so
/// that the per-message path skips their look-up query.
///
/// Bounded without bookkeeping per hit: when full, the set forgets everything and learns again,
/// one query per fact. A hostile client that names many users or conversations costs queries,
/// never memory.
pub(crate) struct Known {
    facts: DashSet<String>,
    capacity: usize,
}

impl Known {
    /// An empty set that keeps at most `capacity` facts.
    pub(crate) fn new(capacity: usize) -> Known {
        Known {
            facts: DashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `fact` is known.
    pub(crate) fn contains(&self, fact: &str) -> bool {
        self.facts.contains(fact)
    }

    /// Learns `fact`; forgets everything first when the set is full. Called only after a
    /// look-up query, so the size count (a read of every shard) is never per message.
    pub(crate) fn insert(&self, fact: &str) {
        if self.facts.len() >= self.capacity {
            self.facts.clear();
        }
        self.facts.insert(fact.to_owned());
    }

    /// How many facts are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.facts.len()
    }
}

impl ChatWorker {
    /// Opens (and migrates) the store and starts the group committer.
    pub async fn open(config: ChatConfig) -> Result<ChatWorker, ChatError> {
        config.validate()?;
        let verifier = config.verifier()?;
        let store = Store::open(&config.database_url).await?;
        tracing::info!(backend = ?store.backend(), "chat store ready");
        let committer = if config.discard_messages {
            tracing::warn!("benchmark mode: messages and receipts are answered by a sink and never stored");
            GroupCommitter::spawn_sink(config.commit).await?
        } else {
            GroupCommitter::spawn(store.clone(), config.commit).await?
        };
        let limiter = Limiter::new(config.rate);
        Ok(ChatWorker {
            config,
            store,
            committer,
            known_users: Known::new(KNOWN_CAPACITY),
            known_directs: Known::new(KNOWN_CAPACITY),
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
            self.known_users.insert(uid);
        }
        Ok(exists)
    }

    /// Whether `uid` is a member of direct conversation `conversation` (whose id names `uid`, as
    /// the caller has checked): true once the conversation exists, which is cached.
    pub(crate) async fn in_direct(&self, conversation: &str, uid: &str) -> Result<bool, ProtocolError> {
        if self.known_directs.contains(conversation) {
            return Ok(true);
        }
        let member = Box::pin(self.store.is_member(conversation, uid))
            .await
            .map_err(store_error)?;
        if member {
            self.known_directs.insert(conversation);
        }
        Ok(member)
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

#[cfg(test)]
mod tests {
    use super::Known;

    #[test]
    fn a_known_set_keeps_what_it_learned_and_starts_over_when_full() {
        let known = Known::new(2);
        known.insert("d:ann:ben");
        known.insert("d:ann:ben");
        known.insert("d:ann:cat");
        assert!(known.contains("d:ann:ben") && known.contains("d:ann:cat"));
        assert_eq!(known.len(), 2);
        known.insert("d:ben:cat");
        assert_eq!(known.len(), 1, "a full set forgets everything before it learns more");
        assert!(known.contains("d:ben:cat"));
        assert!(!known.contains("d:ann:ben"));
    }
}
