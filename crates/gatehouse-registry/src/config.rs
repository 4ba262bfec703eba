//! Registry configuration: a plain struct, validated at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use gatehouse_core::Credentials;
use gatehouse_core::credentials::{PlaintextRefused, check_plaintext};

/// Everything a registry needs to run.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// gRPC listen address. Loopback unless deliberately exposed to the cluster network.
    pub listen: SocketAddr,
    /// How members prove they belong: the shared secret, a certificate from the cluster CA
    /// naming their role (mutual TLS), or both.
    pub credentials: Credentials,
    /// Serve plaintext on a non-loopback address anyway (the network is trusted).
    pub insecure_plaintext: bool,
    /// A member that sends nothing for this long is dropped and its routes removed. Bounds how
    /// long a dead gateway's uids stay routable.
    pub lease: Duration,
    /// A route subscriber that leaves an update unacknowledged this long is cut off (it
    /// reconnects and resynchronises). Bounds how long a `bind_uid` can wait for a stuck worker.
    pub ack_timeout: Duration,
    /// After start, the table is not claimed complete (authoritative) before every gateway had
    /// the chance to reconnect and resync. Subscribers fall back to broadcasting meanwhile.
    pub warmup: Duration,
    /// Members (gateways, workers, API clients) at once; a hello beyond it is refused with
    /// `too_many_requests`. Bounds the membership every member receives on each change.
    pub max_members: usize,
    /// Keys (uids and groups) one gateway may announce; a gateway that announces more is cut
    /// off with `too_many_requests` (its binds then time out: loud, never silent routing gaps).
    pub max_keys_per_gateway: usize,
}

/// Why a registry configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A duration is zero or out of proportion with another.
    #[error("invalid timing: {0}")]
    Timing(&'static str),
    /// Plaintext on a non-loopback address without `insecure_plaintext`.
    #[error(transparent)]
    Plaintext(#[from] PlaintextRefused),
}

impl RegistryConfig {
    /// Returns a configuration with production defaults for `listen`.
    pub fn new(listen: SocketAddr, credentials: impl Into<Credentials>) -> RegistryConfig {
        RegistryConfig {
            listen,
            credentials: credentials.into(),
            insecure_plaintext: false,
            lease: Duration::from_secs(6),
            ack_timeout: Duration::from_secs(3),
            warmup: Duration::from_secs(6),
            max_members: 10_000,
            max_keys_per_gateway: 4_000_000,
        }
    }

    /// Heartbeat interval asked of members: a third of the lease, so two beats may be lost.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease / 3
    }

    /// Checks the timings make sense together, and that the listener is encrypted or private.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_plaintext(
            "the registry's gRPC",
            self.listen,
            self.credentials.is_tls(),
            self.insecure_plaintext,
        )?;
        if self.lease < Duration::from_millis(300) {
            return Err(ConfigError::Timing("lease must be at least 300ms"));
        }
        if self.ack_timeout.is_zero() {
            return Err(ConfigError::Timing("ack timeout must be positive"));
        }
        if self.max_members == 0 || self.max_keys_per_gateway == 0 {
            return Err(ConfigError::Timing("member and key limits must be at least 1"));
        }
        Ok(())
    }
}
