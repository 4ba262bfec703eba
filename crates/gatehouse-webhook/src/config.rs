//! [`WebhookConfig`]: where the backend is, how events are batched, signed, retried and given
//! up on, and how much of the backend's answer is believed.

use std::time::Duration;

/// The shortest shared key accepted: an HMAC key shorter than its hash's output is guessable
/// sooner than the hash is broken.
pub const MIN_SECRET_BYTES: usize = 32;

/// Which client events go to the backend. An event kind that is not forwarded is handled
/// locally: an unforwarded handshake is accepted, the others are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKinds {
    /// The WebSocket handshake (the backend accepts or rejects the client).
    pub handshake: bool,
    /// The client is connected (after an accepted handshake).
    pub connect: bool,
    /// Every frame the client sends.
    pub message: bool,
    /// The connection is gone.
    pub close: bool,
}

impl EventKinds {
    /// Every kind.
    pub const ALL: EventKinds = EventKinds {
        handshake: true,
        connect: true,
        message: true,
        close: true,
    };

    /// Parses a comma-separated list (`handshake,message,close`).
    pub fn parse(list: &str) -> Result<EventKinds, ConfigError> {
        let mut kinds = EventKinds {
            handshake: false,
            connect: false,
            message: false,
            close: false,
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "handshake" => kinds.handshake = true,
                "connect" => kinds.connect = true,
                "message" => kinds.message = true,
                "close" => kinds.close = true,
                other => return Err(ConfigError::UnknownEvent(other.to_owned())),
            }
        }
        Ok(kinds)
    }
}

/// The webhook worker's settings; [`WebhookConfig::new`] gives the production defaults.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The backend's URL (`http://host:port/path`); every batch is a POST to it.
    pub url: http::Uri,
    /// The key both sides share: the worker signs every body with it (HMAC-SHA256), the
    /// backend checks the signature before it believes a byte. At least [`MIN_SECRET_BYTES`].
    pub secret: Vec<u8>,
    /// Which events are forwarded.
    pub events: EventKinds,
    /// A batch holds at most this many events: the backend's work per request stays bounded.
    pub max_batch_events: usize,
    /// A batch's events add up to at most this many bytes of JSON; an event larger than this
    /// on its own is never sent (its client is closed with 1008).
    pub max_batch_bytes: usize,
    /// Requests in flight at once per gateway link: while they all wait, new events gather
    /// into the next batch (no timer: a quiet link sends each event at once).
    pub concurrency: usize,
    /// A request (connect, send, response) that takes longer fails and is retried.
    pub request_timeout: Duration,
    /// Retries of one event inside its handler before it is given back to its gateway, which
    /// delivers it again later (to another worker if there is one).
    pub retries: u32,
    /// The first pause between retries; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest pause between retries.
    pub max_backoff: Duration,
    /// A client whose events have failed to reach the backend for this long is closed with
    /// 1013 (try again later), and its remaining events are dropped (counted): a client is
    /// told rather than left waiting for a backend that is gone.
    pub give_up_after: Duration,
    /// A handshake the backend has not answered within this is refused with 503; it must be
    /// shorter than the gateway's own handshake timeout (10 s by default).
    pub handshake_timeout: Duration,
    /// The largest response body read; a larger one fails the request.
    pub max_response_bytes: usize,
    /// Commands one event's result may carry.
    pub max_commands: usize,
    /// Client ids, uids or groups one command may name (targets and exclusions each).
    pub max_targets: usize,
    /// The largest frame a command may send.
    pub max_frame_bytes: usize,
    /// Idle keep-alive connections kept per backend host.
    pub pool_idle: usize,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("max_batch_events", &self.max_batch_events)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("concurrency", &self.concurrency)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("give_up_after", &self.give_up_after)
            .finish_non_exhaustive()
    }
}

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse or is not `http://` with a host.
    #[error("the webhook url must be http://host[:port]/path: {0}")]
    Url(String),
    /// The shared key is missing or short.
    #[error("the webhook secret must be at least {MIN_SECRET_BYTES} bytes (GATEHOUSE_WEBHOOK_SECRET)")]
    Secret,
    /// An unknown event name in the list of forwarded events.
    #[error("unknown webhook event {0:?} (handshake, connect, message, close)")]
    UnknownEvent(String),
    /// A limit that makes no sense (zero, or inconsistent with another).
    #[error("invalid webhook setting: {0}")]
    Limit(&'static str),
}

impl WebhookConfig {
    /// Returns a configuration with production defaults for `url`, signed with `secret`.
    pub fn new(url: &str, secret: impl Into<Vec<u8>>) -> Result<WebhookConfig, ConfigError> {
        let config = WebhookConfig {
            url: parse_url(url)?,
            secret: secret.into(),
            events: EventKinds::ALL,
            max_batch_events: 64,
            max_batch_bytes: 1024 * 1024,
            concurrency: 4,
            request_timeout: Duration::from_secs(5),
            retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            give_up_after: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            max_response_bytes: 8 * 1024 * 1024,
            max_commands: 64,
            max_targets: 1024,
            max_frame_bytes: 1024 * 1024,
            pool_idle: 16,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting (call again after changing fields).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::Secret);
        }
        if self.max_batch_events == 0 || self.concurrency == 0 {
            return Err(ConfigError::Limit("batch size and concurrency must be at least 1"));
        }
        if self.max_batch_bytes < 4096 {
            return Err(ConfigError::Limit("the batch byte budget must be at least 4 KiB"));
        }
        if self.request_timeout.is_zero() || self.handshake_timeout.is_zero() {
            return Err(ConfigError::Limit("timeouts must be positive"));
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return Err(ConfigError::Limit(
                "the back-off must be positive and its maximum at least its start",
            ));
        }
        if self.max_commands == 0 || self.max_targets == 0 || self.max_frame_bytes == 0 {
            return Err(ConfigError::Limit("command limits must be at least 1"));
        }
        if self.max_response_bytes < 1024 {
            return Err(ConfigError::Limit("the response byte limit must be at least 1 KiB"));
        }
        Ok(())
    }
}

fn parse_url(url: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = url.parse().map_err(|e| ConfigError::Url(format!("{url}: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(ConfigError::Url(format!(
            "{url}: only http:// is supported; put the backend on loopback or a private network, or a TLS proxy beside the worker"
        )));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults_are_valid_and_a_short_secret_or_a_foreign_scheme_is_refused() {
        assert!(WebhookConfig::new("http://127.0.0.1:9000/events", SECRET).is_ok());
        assert_eq!(
            WebhookConfig::new("http://127.0.0.1:9000/", b"short".to_vec()).unwrap_err(),
            ConfigError::Secret
        );
        assert!(matches!(
            WebhookConfig::new("ftp://backend/", SECRET),
            Err(ConfigError::Url(_))
        ));
        assert!(matches!(
            WebhookConfig::new("not a url", SECRET),
            Err(ConfigError::Url(_))
        ));
    }

    #[test]
    fn event_lists_parse_and_unknown_names_are_refused() {
        let kinds = EventKinds::parse("message, close").unwrap();
        assert!(kinds.message && kinds.close && !kinds.handshake && !kinds.connect);
        assert_eq!(
            EventKinds::parse("message,open"),
            Err(ConfigError::UnknownEvent("open".into()))
        );
    }
}
