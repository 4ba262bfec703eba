//! Gateway configuration: a plain struct, validated at start-up.
//!
//! Every limit here bounds what a client (or a worker) can make the gateway hold or do; each
//! one's answer when exceeded is documented in `docs/security.md`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use gatehouse_core::Credentials;
use gatehouse_core::credentials::{PlaintextRefused, check_plaintext};
use gatehouse_core::tls::CertFiles;
use gatehouse_proto::MAX_GRPC_MESSAGE_BYTES;
use ipnet::IpNet;

pub use crate::page::{Page, PageError};

/// A token-bucket rate: `per_second` on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained rate; 0 disables the limit.
    pub per_second: u32,
    /// Largest burst above the sustained rate.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_second: 0,
        burst: 0,
    };
}

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
    /// How the gateway proves it belongs to the cluster and checks its peers: the shared
    /// secret, a certificate from the cluster CA naming each member's role (mutual TLS), or both.
    pub credentials: Credentials,
    /// `wss://` on the public listener: the certificate and key, reloaded when the files change
    /// or on SIGHUP. `None`: plain `ws://` (loopback, or behind a TLS-terminating proxy with
    /// `insecure_plaintext`).
    pub tls: Option<CertFiles>,
    /// Serve plaintext on a non-loopback address anyway (TLS ends at a proxy in front, or the
    /// network is private).
    pub insecure_plaintext: bool,
    /// Largest client message accepted; larger ones close that client with 1009.
    pub max_message_bytes: usize,
    /// Largest frame a worker may send to a client. Bounds the socket's write buffer: a larger
    /// send is refused to the worker (`bad_request`) instead of failing the client's write.
    pub max_frame_out_bytes: usize,
    /// Frames queued towards one client before it counts as a slow consumer and is closed
    /// with 1013. Bounds memory per connection.
    pub send_queue: usize,
    /// Events of one client that may await a worker's acknowledgement; beyond it the gateway
    /// stops reading that client's socket (TCP back-pressure) rather than buffer or drop.
    pub max_unacked_events: usize,
    /// Bytes of one client's events that may await acknowledgement (same policy).
    pub max_unacked_bytes: usize,
    /// Bytes of all clients' events that may await acknowledgement: a gateway whose workers
    /// fall behind stops reading every client instead of growing without bound.
    pub max_gateway_unacked_bytes: usize,
    /// Interval of server pings.
    pub ping_interval: Duration,
    /// A client silent for `ping_interval * ping_limit` is dropped as dead.
    pub ping_limit: u32,
    /// How long reading an HTTP request's headers may take (slowloris defence).
    pub header_read_timeout: Duration,
    /// How long a worker has to accept or reject a handshake.
    pub handshake_timeout: Duration,
    /// Handshakes waiting for a worker's verdict at once; more are refused with 503.
    pub max_pending_handshakes: usize,
    /// Request headers forwarded to workers with the handshake (lowercase names). Everything
    /// else stays at the gateway: a worker sees only what it may need to authenticate.
    pub forward_headers: Vec<String>,
    /// Total bytes of forwarded headers, path and query; a larger handshake is refused with 431.
    pub max_handshake_bytes: usize,
    /// Open WebSocket connections; more are refused with 503.
    pub max_connections: usize,
    /// Connections (open and handshaking) from one client address; more are refused with 429.
    pub max_connections_per_ip: usize,
    /// Peers allowed to name the client's address in `X-Forwarded-For` (load balancers).
    /// The client's address is then the last address in that header not in this list.
    pub trusted_proxies: Vec<IpNet>,
    /// Messages per second one client may send; a faster client is read more slowly.
    pub message_rate: Rate,
    /// Bytes per second one client may send (same policy).
    pub byte_rate: Rate,
    /// A client that stays over its rate for this long is closed with 1008.
    pub rate_limit_close_after: Duration,
    /// Groups one connection may be in (bounds the keys a client makes the gateway announce).
    pub max_groups_per_conn: usize,
    /// Largest session (its JSON) a worker may store on a connection.
    pub max_session_bytes: usize,
    /// Largest answer to one query, in bytes; a larger one is refused with `bad_request`.
    pub max_query_result_bytes: usize,
    /// How long a stopping gateway takes to close its clients (gradually, with 1012), so that
    /// their reconnects spread over the other gateways instead of arriving at once.
    pub drain: Duration,
    /// How long a bind or join may wait for the registries' confirmation.
    pub bind_timeout: Duration,
    /// Upper bound of the registry reconnect back-off.
    pub registry_backoff: Duration,
    /// Let applications accept a bare identity (such as `?uid=`) without a token: for demos
    /// and tests only, loudly logged at start. Applications must opt in on their side too.
    pub insecure_dev_auth: bool,
    /// The apps this gateway serves (`--app`): `/ws` reaches the first, `/ws/<app>` any of
    /// them, and a client's events go only to workers that announced its app. Workers of other
    /// apps are logged and counted and get no clients. Empty: `/ws` reaches every worker,
    /// whatever its app, and `/ws/<app>` is not served (one app per cluster).
    pub apps: Vec<String>,
    /// What `/` and the paths below it serve besides `/ws` (`--page`): the deployment's choice,
    /// since the gateway cannot know what its workers run. Default: nothing (404).
    pub page: Page,
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
    /// A listener would be plaintext on a non-loopback address.
    #[error(transparent)]
    Plaintext(#[from] PlaintextRefused),
    /// The page directory is missing or has no `index.html`.
    #[error(transparent)]
    Page(#[from] PageError),
}

/// Headers forwarded to workers by default: what an application needs to authenticate a client
/// and check where it comes from.
pub const DEFAULT_FORWARD_HEADERS: [&str; 5] = [
    "authorization",
    "cookie",
    "origin",
    "user-agent",
    "sec-websocket-protocol",
];

/// The most apps one gateway serves (`--app`).
const MAX_APPS: usize = 64;
use gatehouse_core::limits::MAX_KEY_BYTES;

/// Room for the framing around a client message inside one gRPC message.
const EVENT_OVERHEAD: usize = 64 * 1024;

impl GatewayConfig {
    /// Returns a configuration with production defaults.
    pub fn new(
        listen: SocketAddr,
        internal: SocketAddr,
        registries: Vec<String>,
        credentials: impl Into<Credentials>,
    ) -> GatewayConfig {
        GatewayConfig {
            listen,
            internal,
            advertise: None,
            registries,
            credentials: credentials.into(),
            tls: None,
            insecure_plaintext: false,
            max_message_bytes: 64 * 1024,
            max_frame_out_bytes: 1024 * 1024,
            send_queue: 1024,
            max_unacked_events: 256,
            max_unacked_bytes: 1024 * 1024,
            max_gateway_unacked_bytes: 256 * 1024 * 1024,
            ping_interval: Duration::from_secs(25),
            ping_limit: 2,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
            forward_headers: DEFAULT_FORWARD_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            max_handshake_bytes: 16 * 1024,
            max_connections: 100_000,
            max_connections_per_ip: 1000,
            trusted_proxies: Vec::new(),
            message_rate: Rate {
                per_second: 200,
                burst: 200,
            },
            byte_rate: Rate {
                per_second: 2 * 1024 * 1024,
                burst: 4 * 1024 * 1024,
            },
            rate_limit_close_after: Duration::from_secs(10),
            max_groups_per_conn: 1024,
            max_session_bytes: 16 * 1024,
            max_query_result_bytes: 16 * 1024 * 1024,
            drain: Duration::from_secs(30),
            bind_timeout: Duration::from_secs(10),
            registry_backoff: Duration::from_secs(1),
            insecure_dev_auth: false,
            apps: Vec::new(),
            page: Page::None,
            read_buffer: 1024,
            write_buffer: 4096,
        }
    }

    /// Checks that the limits make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.registries.is_empty() {
            return Err(ConfigError::NoRegistry);
        }
        check_plaintext("WebSockets", self.listen, self.tls.is_some(), self.insecure_plaintext)?;
        check_plaintext(
            "the gateway's internal gRPC",
            self.internal,
            self.credentials.is_tls(),
            self.insecure_plaintext,
        )?;
        if self.max_message_bytes < 16 || self.max_frame_out_bytes < 16 {
            return Err(ConfigError::Limit("message sizes must be at least 16 bytes"));
        }
        // Every event carries the session; a close event also the groups.
        let state_bytes = self.max_session_bytes + self.max_groups_per_conn * (MAX_KEY_BYTES + 4);
        if self.max_message_bytes + state_bytes + EVENT_OVERHEAD > MAX_GRPC_MESSAGE_BYTES
            || self.max_handshake_bytes + state_bytes + EVENT_OVERHEAD > MAX_GRPC_MESSAGE_BYTES
        {
            return Err(ConfigError::Limit(
                "a client message or handshake, with the session and groups that travel with it, must fit in one internal grpc message (32 MiB)",
            ));
        }
        if self.max_frame_out_bytes + EVENT_OVERHEAD > MAX_GRPC_MESSAGE_BYTES {
            return Err(ConfigError::Limit(
                "the outbound frame limit must fit in one internal grpc message (32 MiB)",
            ));
        }
        if self.send_queue == 0 || self.max_unacked_events == 0 {
            return Err(ConfigError::Limit("queues must hold at least one item"));
        }
        if self.max_unacked_bytes < self.max_message_bytes + self.max_session_bytes {
            return Err(ConfigError::Limit(
                "the unacknowledged byte window of a client must hold one maximal message with a maximal session",
            ));
        }
        if self.max_gateway_unacked_bytes < self.max_unacked_bytes {
            return Err(ConfigError::Limit(
                "the gateway's unacknowledged byte window must hold one client's window",
            ));
        }
        if self.ping_interval < Duration::from_millis(10) || self.ping_limit == 0 {
            return Err(ConfigError::Limit("ping interval and limit must be positive"));
        }
        if self.header_read_timeout.is_zero() || self.handshake_timeout.is_zero() {
            return Err(ConfigError::Limit("handshake timeouts must be positive"));
        }
        if self.max_pending_handshakes == 0 || self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(ConfigError::Limit("connection limits must be at least 1"));
        }
        if self.max_handshake_bytes < 1024 {
            return Err(ConfigError::Limit("the handshake byte limit must be at least 1 KiB"));
        }
        for rate in [self.message_rate, self.byte_rate] {
            if rate.per_second > 0 && rate.burst == 0 {
                return Err(ConfigError::Limit("a rate limit needs a burst of at least 1"));
            }
        }
        if self.byte_rate.per_second > 0 && (self.byte_rate.burst as usize) < self.max_message_bytes {
            return Err(ConfigError::Limit(
                "the byte rate's burst must hold one maximal message (or no message could ever pass)",
            ));
        }
        if self.apps.len() > MAX_APPS
            || self
                .apps
                .iter()
                .any(|a| a.is_empty() || a.len() > MAX_KEY_BYTES || a.contains('/') || a.chars().any(char::is_control))
        {
            return Err(ConfigError::Limit(
                "apps (--app) are at most 64 names of 1-256 bytes without '/' or control characters",
            ));
        }
        if self
            .forward_headers
            .iter()
            .any(|h| h.is_empty() || h.chars().any(|c| c.is_ascii_uppercase()))
        {
            return Err(ConfigError::Limit(
                "forwarded header names must be lowercase and non-empty",
            ));
        }
        self.page.check()?;
        Ok(())
    }

    /// The app slot of a worker that announced `app`: its place in [`GatewayConfig::apps`], or
    /// 0 for every worker when the gateway serves any app; `None` for an app it does not serve.
    pub(crate) fn worker_app_slot(&self, app: &str) -> Option<u16> {
        if self.apps.is_empty() {
            return Some(0);
        }
        self.apps.iter().position(|a| a == app).map(|i| i as u16)
    }

    /// The app slot a handshake path asks for: `/ws` the first app (or any worker), `/ws/<app>`
    /// that app if this gateway serves it; `None` for anything else.
    pub(crate) fn path_app_slot(&self, path: &str) -> Option<u16> {
        match path.strip_prefix("/ws") {
            Some("" | "/") => Some(0),
            Some(rest) => {
                let app = rest.strip_prefix('/')?;
                self.apps.iter().position(|a| a == app).map(|i| i as u16)
            }
            None => None,
        }
    }

    /// Whether `peer` is a trusted proxy whose `X-Forwarded-For` names the client.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GatewayConfig {
        let any = "127.0.0.1:0".parse().unwrap();
        GatewayConfig::new(
            any,
            any,
            vec!["127.0.0.1:1".into()],
            gatehouse_core::ClusterSecret::random(),
        )
    }

    #[test]
    fn without_apps_ws_reaches_every_worker_and_with_apps_each_path_its_own() {
        let any = config();
        assert_eq!(any.path_app_slot("/ws"), Some(0));
        assert_eq!(any.path_app_slot("/ws/chat"), None, "one app per cluster: no app paths");
        assert_eq!(any.worker_app_slot("relay"), Some(0));
        assert_eq!(any.worker_app_slot(""), Some(0));

        let mut two = config();
        two.apps = vec!["chat".into(), "relay".into()];
        assert!(two.validate().is_ok());
        assert_eq!(two.path_app_slot("/ws"), Some(0), "/ws is the first app");
        assert_eq!(two.path_app_slot("/ws/chat"), Some(0));
        assert_eq!(two.path_app_slot("/ws/relay"), Some(1));
        assert_eq!(two.path_app_slot("/ws/echo"), None);
        assert_eq!(two.path_app_slot("/ws/relay/x"), None);
        assert_eq!(two.path_app_slot("/wsx"), None);
        assert_eq!(two.worker_app_slot("relay"), Some(1));
        assert_eq!(
            two.worker_app_slot("echo"),
            None,
            "a worker of another app gets no clients"
        );
        assert_eq!(two.worker_app_slot(""), None);

        let mut bad = config();
        bad.apps = vec!["a/b".into()];
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_defaults_are_valid_and_inconsistent_limits_are_refused() {
        assert!(config().validate().is_ok());
        let mut big = config();
        big.max_message_bytes = MAX_GRPC_MESSAGE_BYTES;
        assert!(big.validate().is_err(), "a message that cannot cross the internal link");
        let mut tight = config();
        tight.max_unacked_bytes = 1024;
        assert!(
            tight.validate().is_err(),
            "a window smaller than one message would deadlock"
        );
        let mut burst = config();
        burst.byte_rate.burst = 10;
        assert!(burst.validate().is_err());
        let mut upper = config();
        upper.forward_headers.push("X-Token".into());
        assert!(upper.validate().is_err());
    }

    #[test]
    fn plaintext_is_refused_off_loopback_unless_declared_insecure() {
        let mut public = config();
        public.listen = "0.0.0.0:8080".parse().unwrap();
        let error = public.validate().unwrap_err().to_string();
        assert!(
            error.contains("WebSockets") && error.contains("--insecure-plaintext"),
            "{error}"
        );
        public.insecure_plaintext = true;
        assert!(public.validate().is_ok());

        let mut internal = config();
        internal.internal = "10.0.0.1:7100".parse().unwrap();
        internal.tls = Some(CertFiles {
            cert: "c".into(),
            key: "k".into(),
        });
        let error = internal.validate().unwrap_err().to_string();
        assert!(
            error.contains("internal gRPC"),
            "public TLS does not cover the cluster port: {error}"
        );
    }

    #[test]
    fn trusted_proxies_are_matched_by_network() {
        let mut config = config();
        config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(config.is_trusted_proxy("10.1.2.3".parse().unwrap()));
        assert!(!config.is_trusted_proxy("11.1.2.3".parse().unwrap()));
    }
}
