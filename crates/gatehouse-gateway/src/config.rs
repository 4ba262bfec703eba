//! Gateway configuration: a plain struct, validated at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use gatehouse_core::ClusterSecret;

/// Everything a gateway needs to run.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Public address for WebSocket clients and HTTP (`/ws`, `/healthz`, ...).
    pub listen: SocketAddr,
    /// Internal gRPC address workers attach to. Keep it on loopback or a private network.
    pub internal: SocketAddr,
    /// The internal address announced to the cluster when it differs from the bound one
    /// (Docker, NAT). `None`: the bound address.
    pub advertise: Option<String>,
    /// Registry addresses; the gateway attaches to all of them.
    pub registries: Vec<String>,
    /// The cluster secret, required on every internal call both ways.
    pub secret: ClusterSecret,
    /// Largest client message accepted; larger ones close that client with 1009.
    pub max_message_bytes: usize,
    /// Frames queued towards one client before it counts as a slow consumer and is closed
    /// with 1013. Bounds memory per connection.
    pub send_queue: usize,
    /// Events of one client that may await a worker's acknowledgement; beyond it the gateway
    /// stops reading that client's socket (TCP back-pressure) rather than buffer or drop.
    pub max_unacked_events: usize,
    /// Interval of server pings.
    pub ping_interval: Duration,
    /// A client silent for `ping_interval * ping_limit` is dropped as dead.
    pub ping_limit: u32,
    /// How long a worker has to accept or reject a handshake.
    pub handshake_timeout: Duration,
    /// How long a bind or join may wait for the registries' confirmation.
    pub bind_timeout: Duration,
    /// Upper bound of the registry reconnect back-off.
    pub registry_backoff: Duration,
    /// Let applications accept a bare identity (such as `?uid=`) without a token: for demos
    /// and tests only, loudly logged at start.
    pub insecure_dev_auth: bool,
    /// The HTML page served at `/`, supplied by the application (the gateway does not know
    /// what it shows). `None`: a short page naming the endpoints.
    pub index_page: Option<&'static str>,
    /// Socket read buffer: the buffer every idle connection keeps. Chat frames are a few hundred
    /// bytes, so 1 KiB reads them in one system call and keeps an idle connection small (larger
    /// frames take a few reads). tungstenite's default is 128 KiB.
    pub read_buffer: usize,
    /// Size at which written frames are flushed to the socket (the write buffer itself grows
    /// only while writing). tungstenite's default is 128 KiB.
    pub write_buffer: usize,
}

/// Why a gateway configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// At least one registry is needed.
    #[error("no registry address given (--registry)")]
    NoRegistry,
    /// A limit is zero or absurd.
    #[error("invalid limit: {0}")]
    Limit(&'static str),
}

impl GatewayConfig {
    /// Returns a configuration with production defaults.
    pub fn new(
        listen: SocketAddr,
        internal: SocketAddr,
        registries: Vec<String>,
        secret: ClusterSecret,
    ) -> GatewayConfig {
        GatewayConfig {
            listen,
            internal,
            advertise: None,
            registries,
            secret,
            max_message_bytes: 64 * 1024,
            send_queue: 1024,
            max_unacked_events: 256,
            ping_interval: Duration::from_secs(25),
            ping_limit: 2,
            handshake_timeout: Duration::from_secs(10),
            bind_timeout: Duration::from_secs(10),
            registry_backoff: Duration::from_secs(1),
            insecure_dev_auth: false,
            index_page: None,
            read_buffer: 1024,
            write_buffer: 4096,
        }
    }

    /// Checks limits make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.registries.is_empty() {
            return Err(ConfigError::NoRegistry);
        }
        if self.max_message_bytes < 16 {
            return Err(ConfigError::Limit("max message size must be at least 16 bytes"));
        }
        if self.send_queue == 0 || self.max_unacked_events == 0 {
            return Err(ConfigError::Limit("queues must hold at least one item"));
        }
        if self.ping_interval < Duration::from_millis(10) || self.ping_limit == 0 {
            return Err(ConfigError::Limit("ping interval and limit must be positive"));
        }
        Ok(())
    }
}
