//! Chat configuration: a plain struct, validated at start-up.

use std::path::PathBuf;
use std::time::Duration;

use gatehouse_store::GroupCommitConfig;

use crate::auth::{KeyError, TokenKey, Verifier};
use crate::ratelimit::RateLimits;

/// Everything the chat worker needs.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// `sqlite://path` (created on first start), `postgres://…` or `mysql://…` (MariaDB).
    pub database_url: String,
    /// HS256 secret for tokens (at least 32 bytes). With neither this nor `jwt_public_key`
    /// every token is refused (only the dev identity works then).
    pub jwt_secret: Option<String>,
    /// A PEM public key (RSA: RS256/384/512; EC P-256/P-384: ES256/384) that verifies tokens,
    /// instead of `jwt_secret`.
    pub jwt_public_key: Option<PathBuf>,
    /// The `iss` every token must carry, when set.
    pub jwt_issuer: Option<String>,
    /// The `aud` every token must carry, when set.
    pub jwt_audience: Option<String>,
    /// Accept a bare `?uid=` (no token) from gateways that run in insecure dev mode too. For
    /// demos and tests only; refused together with a token key.
    pub insecure_dev_auth: bool,
    /// How long before a token expires its connection is sent `token_expiring`.
    pub token_warning: Duration,
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
    /// Most connections (devices) one uid may have open cluster-wide; the next handshake is
    /// refused with 429. Counted at the handshake from the cluster's lookup, so handshakes of
    /// one uid racing each other may together exceed it by a few.
    pub max_connections_per_uid: u32,
    /// Most contacts (direct peers, then fellow group members) an `online` request checks:
    /// presence is only shown to a user's contacts, and the check costs one bounded store read
    /// and a look-up in the local routing table.
    pub max_online_contacts: u32,
    /// Events per conversation a `sync` delivers to a device that is further behind (or has
    /// no cursor): the latest window, marked `limited`; older ones come through `history`.
    pub sync_window: u32,
    /// How often a client should `ping` (announced in `welcome`).
    pub heartbeat: Duration,
    /// Conversations a `pong` lists (the most recently active).
    pub heartbeat_conversations: usize,
    /// How long after sending a message may be edited; `None`: always.
    pub edit_window: Option<Duration>,
    /// How long a `typing` start lasts unless repeated.
    pub typing_ttl: Duration,
    /// Most contacts a presence change is pushed to (direct peers first, then fellow group
    /// members).
    pub presence_contacts: u32,
    /// How long a user's last connection may be gone before it is announced offline: a reload
    /// or a network switch within it is no offline/online flap.
    pub presence_grace: Duration,
    /// **Benchmarks only**: messages and receipts are answered by an in-memory sink and never
    /// stored ([`GroupCommitter::spawn_sink`](gatehouse_store::GroupCommitter::spawn_sink)), so
    /// that a benchmark measures the chat path without its storage. Everything else (sign-in,
    /// groups, history) still uses the database, which then holds no message. Only with
    /// `insecure_dev_auth`, so that no production configuration can lose messages by it.
    pub discard_messages: bool,
}

/// Why a chat configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The token key cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The public key file cannot be read.
    #[error("cannot read the jwt public key {path}: {error}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Both a secret and a public key are configured.
    #[error("configure either a jwt secret or a jwt public key, not both")]
    TwoKeys,
    /// Insecure dev auth together with a production credential.
    #[error(
        "insecure dev auth (bare ?uid= sign-in) cannot be combined with a jwt secret or public key: \
         unset GATEHOUSE_JWT_SECRET / GATEHOUSE_JWT_PUBLIC_KEY for development, or drop --insecure-dev-auth"
    )]
    DevAuthWithKey,
    /// The benchmark-only message sink outside development mode.
    #[error("discarding messages is for benchmarks only: it needs insecure dev auth (--insecure-dev-auth)")]
    DiscardOutsideDev,
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
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            insecure_dev_auth: false,
            token_warning: Duration::from_secs(60),
            max_text_chars: 4000,
            max_reply_bytes: 256 * 1024,
            commit: GroupCommitConfig::default(),
            rate: RateLimits::default(),
            max_online_contacts: 500,
            max_connections_per_uid: 16,
            sync_window: 50,
            heartbeat: Duration::from_secs(25),
            heartbeat_conversations: 20,
            edit_window: Some(Duration::from_secs(48 * 3600)),
            typing_ttl: Duration::from_secs(6),
            presence_contacts: 1000,
            presence_grace: Duration::from_secs(5),
            discard_messages: false,
        }
    }

    /// The smallest reply budget that holds any one message in a `sync` or `history` frame:
    /// JSON escapes a control character in 6 bytes, so a text of `max_text_chars` takes at most
    /// six times as many bytes, and 8 KiB covers the rest (ids, uids of up to 256 bytes, the
    /// envelope with its cid).
    pub fn min_reply_bytes(&self) -> usize {
        self.max_text_chars.saturating_mul(6).saturating_add(8 * 1024)
    }

    /// The token verifier the configuration describes (`None` without a key); checks that the
    /// key is usable and that dev mode is not combined with it.
    pub fn verifier(&self) -> Result<Option<Verifier>, ConfigError> {
        let key = match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(_), Some(_)) => return Err(ConfigError::TwoKeys),
            (Some(secret), None) => TokenKey::Secret(secret.clone()),
            (None, Some(path)) => TokenKey::PublicPem(std::fs::read(path).map_err(|error| ConfigError::KeyFile {
                path: path.clone(),
                error,
            })?),
            (None, None) => return Ok(None),
        };
        if self.insecure_dev_auth {
            return Err(ConfigError::DevAuthWithKey);
        }
        Ok(Some(Verifier::new(
            &key,
            self.jwt_issuer.as_deref(),
            self.jwt_audience.as_deref(),
        )?))
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.trim().is_empty() {
            return Err(ConfigError::NoDatabase);
        }
        self.verifier()?;
        if self.discard_messages && !self.insecure_dev_auth {
            return Err(ConfigError::DiscardOutsideDev);
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_defaults_are_valid() {
        ChatConfig::new("sqlite::memory:").validate().unwrap();
    }

    #[test]
    fn the_message_sink_is_refused_outside_development_mode() {
        let mut config = ChatConfig::new("sqlite::memory:");
        config.discard_messages = true;
        assert!(matches!(config.validate(), Err(ConfigError::DiscardOutsideDev)));
        config.insecure_dev_auth = true;
        config.validate().unwrap();
    }

    #[test]
    fn dev_mode_is_refused_together_with_a_token_key() {
        let mut config = ChatConfig::new("sqlite::memory:");
        config.insecure_dev_auth = true;
        config.validate().unwrap();
        config.jwt_secret = Some(SECRET.into());
        assert!(matches!(config.validate(), Err(ConfigError::DevAuthWithKey)));
    }

    #[test]
    fn short_secrets_two_keys_and_missing_key_files_are_refused() {
        let mut config = ChatConfig::new("sqlite::memory:");
        config.jwt_secret = Some("0123456789abcdef".into());
        assert!(matches!(config.validate(), Err(ConfigError::Key(KeyError::WeakSecret))));
        config.jwt_secret = Some(SECRET.into());
        config.validate().unwrap();
        config.jwt_public_key = Some(PathBuf::from("/nonexistent/key.pem"));
        assert!(matches!(config.validate(), Err(ConfigError::TwoKeys)));
        config.jwt_secret = None;
        assert!(matches!(config.validate(), Err(ConfigError::KeyFile { .. })));
    }

    #[test]
    fn a_reply_budget_must_hold_the_largest_message() {
        let mut config = ChatConfig::new("sqlite::memory:");
        config.max_reply_bytes = config.min_reply_bytes() - 1;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::ReplyBudgetTooSmall { .. })
        ));
    }
}
