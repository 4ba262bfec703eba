//! [`ApiConfig`]: everything `gatehouse api` needs, as a plain struct validated at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse_core::Credentials;
use gatehouse_core::credentials::{PlaintextRefused, check_plaintext};
use gatehouse_core::tls::CertFiles;

/// A token-bucket rate: `per_second` tokens refill continuously up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rate {
    /// Sustained operations per second; 0 means no limit.
    pub per_second: u32,
    /// Operations allowed at once above the sustained rate (the bucket's size).
    pub burst: u32,
}

/// Every bound one request or one key runs into. Each is documented in `docs/server-api.md`
/// with its answer; the defaults suit a backend-facing service on a private network.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (HTTP) or message (gRPC). A frame sent through the API rides in
    /// it, so it must exceed the gateways' `--max-frame-out-bytes` (1 MiB) plus JSON or base64
    /// overhead. Larger: 413 (HTTP) or `INVALID_ARGUMENT`/`RESOURCE_EXHAUSTED` (gRPC).
    pub max_body_bytes: usize,
    /// Operations in one batch: one request must not monopolise the process.
    pub max_batch_ops: usize,
    /// Entries of any one list of a request (clients, uids, groups, exclusions). The SDK
    /// splits long lists for the gateways; this bounds what one request may ask for at all.
    pub max_list_len: usize,
    /// Largest answer: a cluster-wide list on a big cluster can be tens of megabytes. Over it:
    /// `bad_request` (ask for counts or fewer keys).
    pub max_response_bytes: usize,
    /// Default per-key rate in operations (a batch costs one per operation); a key may set
    /// its own in the key file. Over it: 429 with `Retry-After`.
    pub key_rate: Rate,
    /// Deadline of a whole request; a batch's operations that could not start before it get
    /// `timeout`.
    pub request_timeout: Duration,
    /// Requests being executed at once (HTTP and gRPC together); more get 503 `unavailable`
    /// with `Retry-After: 1`. Bounds the memory a burst of slow queries can hold.
    pub max_concurrent_requests: usize,
    /// Open HTTP connections; more are answered 503 at accept.
    pub max_connections: usize,
    /// Time a client has to send its HTTP request headers (slowloris defence).
    pub header_read_timeout: Duration,
    /// How long a completed send's idempotency key is remembered.
    pub idempotency_window: Duration,
    /// Idempotency keys remembered at most; beyond, the oldest are forgotten early.
    pub idempotency_capacity: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_ops: 100,
            max_list_len: 10_000,
            max_response_bytes: 16 * 1024 * 1024,
            key_rate: Rate {
                per_second: 1000,
                burst: 2000,
            },
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 1024,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idempotency_window: Duration::from_secs(300),
            idempotency_capacity: 100_000,
        }
    }
}

/// Everything an API process needs to run.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// HTTP/JSON listen address. Backend-facing: keep it on a private network.
    pub listen: SocketAddr,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// Registry addresses; the process joins the cluster as an API client through all of them.
    pub registries: Vec<String>,
    /// How this process proves it belongs to the cluster (secret, certificate, or both).
    pub credentials: Credentials,
    /// TLS on both listeners (HTTPS and gRPC over TLS): certificate and key, reloaded when the
    /// files change or on SIGHUP. `None`: plaintext.
    pub tls: Option<CertFiles>,
    /// Serve plaintext on a non-loopback address anyway (a private network).
    pub insecure_plaintext: bool,
    /// The API key file (JSON, see [`crate::keys`]); reloaded on SIGHUP.
    pub keys_file: PathBuf,
    /// Request and key limits.
    pub limits: Limits,
}

/// Why a configuration is refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No registry address was given.
    #[error("no registry address given")]
    NoRegistry,
    /// A limit is zero or inconsistent with another.
    #[error("invalid limit: {0}")]
    Limit(String),
    /// A listener would be plaintext on a non-loopback address.
    #[error(transparent)]
    Plaintext(#[from] PlaintextRefused),
}

impl ApiConfig {
    /// Returns a configuration with the default [`Limits`].
    pub fn new(
        listen: SocketAddr,
        grpc_listen: SocketAddr,
        registries: Vec<String>,
        credentials: impl Into<Credentials>,
        keys_file: PathBuf,
    ) -> ApiConfig {
        ApiConfig {
            listen,
            grpc_listen,
            registries,
            credentials: credentials.into(),
            tls: None,
            insecure_plaintext: false,
            keys_file,
            limits: Limits::default(),
        }
    }

    /// Checks the configuration makes sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.registries.is_empty() {
            return Err(ConfigError::NoRegistry);
        }
        let encrypted = self.tls.is_some();
        check_plaintext("the server API (HTTP)", self.listen, encrypted, self.insecure_plaintext)?;
        check_plaintext(
            "the server API (gRPC)",
            self.grpc_listen,
            encrypted,
            self.insecure_plaintext,
        )?;
        let l = &self.limits;
        let positive = [
            ("max body bytes", l.max_body_bytes),
            ("max batch ops", l.max_batch_ops),
            ("max list length", l.max_list_len),
            ("max response bytes", l.max_response_bytes),
            ("max concurrent requests", l.max_concurrent_requests),
            ("max connections", l.max_connections),
            ("idempotency capacity", l.idempotency_capacity),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Limit(format!("{name} must be at least 1")));
        }
        if l.max_body_bytes > gatehouse_proto::MAX_GRPC_MESSAGE_BYTES {
            return Err(ConfigError::Limit(format!(
                "max body bytes may be at most {} (the gRPC message limit)",
                gatehouse_proto::MAX_GRPC_MESSAGE_BYTES
            )));
        }
        if l.key_rate.per_second > 0 && l.key_rate.burst == 0 {
            return Err(ConfigError::Limit("a rate's burst must be at least 1".into()));
        }
        if l.request_timeout.is_zero() || l.header_read_timeout.is_zero() || l.idempotency_window.is_zero() {
            return Err(ConfigError::Limit("timeouts and windows must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ApiConfig {
        ApiConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            vec!["127.0.0.1:7000".into()],
            gatehouse_core::ClusterSecret::new("s").unwrap(),
            "keys.json".into(),
        )
    }

    #[test]
    fn the_defaults_are_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn zero_limits_and_missing_registries_are_refused() {
        let mut c = config();
        c.limits.max_batch_ops = 0;
        assert!(matches!(c.validate(), Err(ConfigError::Limit(_))));
        let mut c = config();
        c.registries.clear();
        assert!(matches!(c.validate(), Err(ConfigError::NoRegistry)));
        let mut c = config();
        c.limits.key_rate.burst = 0;
        assert!(c.validate().is_err());
        let mut c = config();
        c.limits.max_body_bytes = 64 * 1024 * 1024;
        assert!(c.validate().is_err());
    }
}
