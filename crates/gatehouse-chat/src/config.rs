//! Chat configuration: a plain struct, validated at start-up.

use gatehouse_store::GroupCommitConfig;

/// Everything the chat worker needs.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// `sqlite://path` (created on first start) or `postgres://…`.
    pub database_url: String,
    /// HS256 secret for tokens; `None` refuses every token (only the dev identity works then).
    pub jwt_secret: Option<String>,
    /// Longest message text, in characters.
    pub max_text_chars: usize,
    /// Group commit: largest batch and queue capacity.
    pub commit: GroupCommitConfig,
}

/// Why a chat configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JWT secret is too short to be safe.
    #[error("the jwt secret must be at least 16 bytes")]
    WeakSecret,
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
            commit: GroupCommitConfig::default(),
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.trim().is_empty() {
            return Err(ConfigError::NoDatabase);
        }
        if self.jwt_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::WeakSecret);
        }
        Ok(())
    }
}
