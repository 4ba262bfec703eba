//! Chat configuration: a plain struct, validated at start-up.

use gatehouse_store::GroupCommitConfig;

use crate::ratelimit::RateLimits;

/// Everything the chat worker needs.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// `sqlite://path` (created on first start) or `postgres://…`.
    pub database_url: String,
    /// HS256 secret for tokens; `None` refuses every token (only the dev identity works then).
    pub jwt_secret: Option<String>,
    /// Longest message text, in characters.
    pub max_text_chars: usize,
    /// Largest frame the worker sends to a client, in bytes. Lists (`sync` and `history`
    /// messages, conversations, members, blocks, online uids) are cut to fit and say
    /// `more: true`. Must not exceed the gateway's outbound frame limit (`--max-frame-out-bytes`,
    /// default 1 MiB), and must hold the largest single message
    /// ([`ChatConfig::min_reply_bytes`]).
    pub max_reply_bytes: usize,
    /// Group commit: largest batch and queue capacity.
    pub commit: GroupCommitConfig,
    /// Per-connection rate limits (sends, other requests, when abuse closes the connection).
    pub rate: RateLimits,
    /// Most contacts (direct peers, then fellow group members) an `online` request checks:
    /// presence is only shown to a user's contacts, and the check costs one bounded store read
    /// and a look-up in the local routing table.
    pub max_online_contacts: u32,
}

/// Why a chat configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JWT secret is too short to be safe.
    #[error("the jwt secret must be at least 16 bytes")]
    WeakSecret,
    /// `max_reply_bytes` cannot hold the largest message.
    #[error("max_reply_bytes {got} is below {min}, the size of the largest possible message frame")]
    ReplyBudgetTooSmall {
        /// The configured budget.
        got: usize,
        /// The smallest budget that holds every message.
        min: usize,
    },
    /// An empty database URL.
    #[error("no database url")]
    NoDatabase,
}

impl ChatConfig {
    /// Returns a configuration with defaults for `database_url`.
    pub fn new(database_url: impl Into<String>) -> ChatConfig {
        ChatConfig {
            database_url: database_url.into(),
            jwt_secret: None,
            max_text_chars: 4000,
            max_reply_bytes: 256 * 1024,
            commit: GroupCommitConfig::default(),
            rate: RateLimits::default(),
            max_online_contacts: 500,
        }
    }

    /// The smallest reply budget that holds any one message in a `sync` or `history` frame:
    /// JSON escapes a control character in 6 bytes, so a text of `max_text_chars` takes at most
    /// six times as many bytes, and 8 KiB covers the rest (ids, uids of up to 256 bytes, the
    /// envelope with its cid).
    pub fn min_reply_bytes(&self) -> usize {
        self.max_text_chars.saturating_mul(6).saturating_add(8 * 1024)
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.trim().is_empty() {
            return Err(ConfigError::NoDatabase);
        }
        if self.jwt_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::WeakSecret);
        }
        if self.max_reply_bytes < self.min_reply_bytes() {
            return Err(ConfigError::ReplyBudgetTooSmall {
                got: self.max_reply_bytes,
                min: self.min_reply_bytes(),
            });
        }
        Ok(())
    }
}
