//! Flags and environment variables (every flag has a `GATEHOUSE_…` variable), converted into the
//! roles' config structs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use gatehouse_core::telemetry::LogFormat;
use gatehouse_core::tls::Role;
use gatehouse_gateway::{GatewayConfig, Rate};
use gatehouse_registry::RegistryConfig;
use gatehouse_sdk::WorkerConfig;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminListen};
use crate::apps::{DEFAULT_DATABASE, Trust, run_app};
use crate::tls::{CertArgs, ClusterArgs, PublicTlsArgs};

/// gatehouse: real-time push over WebSockets, as a cluster of gateways, workers and registries.
#[derive(Parser, Debug)]
#[command(name = "gatehouse", version, about, long_about = None)]
pub struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_LOG_FORMAT",
        value_enum,
        default_value = "plain"
    )]
    pub log_format: LogFormatArg,
    /// Runtime threads of this process (default: one per core). Several gatehouse processes on
    /// one machine should share its cores: give each a part, e.g. `--threads 1` for four
    /// processes on two cores. 1 runs a single-threaded runtime, which wakes no other thread
    /// per event.
    #[arg(long, global = true, env = "GATEHOUSE_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    #[command(subcommand)]
    pub command: Command,
}

/// Log line formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> LogFormat {
        match arg {
            LogFormatArg::Plain => LogFormat::Plain,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a registry: membership with leases and the uid/group -> gateway routing table.
    Registry(RegistryArgs),
    /// Run a gateway: holds client WebSockets and forwards their events to workers.
    Gateway(Box<GatewayArgs>),
    /// Run a business worker with a built-in app.
    Worker(Box<WorkerArgs>),
    /// Run a registry, a gateway and a worker in one process, ready to use.
    Dev(DevArgs),
    /// Print a chat token (HS256 JWT) for a uid, signed with the configured secret.
    Token(TokenArgs),
    /// Load generator and the one-hop baseline server (see docs/benchmarks.md).
    Bench(crate::bench::BenchArgs),
    /// Run the server API: the cluster API over HTTP/JSON and gRPC for any backend.
    Api(Box<crate::api::ApiArgs>),
    /// Manage server API keys.
    ApiKey(crate::api::ApiKeyArgs),
    /// Create a development CA, a certificate per role (cluster mutual TLS) and one for the
    /// public listeners (`wss://`).
    Cert(CertArgs),
    /// Ask a process's admin listener for /healthz or /readyz; exits 0 only on HTTP 200 (for
    /// container health checks).
    Probe(crate::probe::ProbeArgs),
}

#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// gRPC listen address (keep it on loopback or a private network).
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// A member silent this long is dropped and its routes removed.
    #[arg(long, env = "GATEHOUSE_LEASE", default_value = "6s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// A route subscriber that does not acknowledge an update this long is cut off.
    #[arg(long, env = "GATEHOUSE_ACK_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub ack_timeout: Duration,
    /// After start, how long before the table is declared complete (gateways resync meanwhile);
    /// defaults to the lease.
    #[arg(long, env = "GATEHOUSE_WARMUP", value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Members (gateways, workers, API clients) at once; more are refused.
    #[arg(long, env = "GATEHOUSE_MAX_MEMBERS", default_value_t = 10_000)]
    pub max_members: usize,
    /// Uids and groups one gateway may announce; a gateway announcing more is cut off.
    #[arg(long, env = "GATEHOUSE_MAX_KEYS_PER_GATEWAY", default_value_t = 4_000_000)]
    pub max_keys_per_gateway: usize,
    /// Admin listener (/healthz, /readyz, /metrics), or `off`.
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN", default_value = "127.0.0.1:9102")]
    pub admin_listen: AdminListen,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Public address for WebSocket clients (`/ws`) and the page (`/`).
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener (/healthz, /readyz, /metrics), away from the public port; or `off`.
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    pub admin_listen: AdminListen,
    /// On SIGTERM, how long the gateway takes to close its clients (gradually, with 1012) so
    /// that they reconnect elsewhere without a thundering herd.
    #[arg(long, env = "GATEHOUSE_DRAIN", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Internal gRPC address workers attach to.
    #[arg(long, env = "GATEHOUSE_INTERNAL", default_value = "127.0.0.1:7100")]
    pub internal: SocketAddr,
    /// Internal address announced to the cluster when it differs from --internal (Docker, NAT).
    #[arg(long, env = "GATEHOUSE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Registry addresses, comma-separated; the gateway attaches to all of them.
    #[arg(long, env = "GATEHOUSE_REGISTRY", value_delimiter = ',', required = true)]
    pub registry: Vec<String>,
    /// The apps this gateway serves, comma-separated (e.g. `chat`): `/ws` reaches the first,
    /// `/ws/<app>` each of them, and clients' events go only to workers of their app (workers
    /// of other apps are logged and get no clients). Unset: `/ws` reaches every worker.
    #[arg(long = "app", env = "GATEHOUSE_APP", value_delimiter = ',')]
    pub apps: Vec<String>,
    /// What `/` serves: `chat` (the chat app's page), `none` (404), or a directory of static
    /// files (`/` is its index.html). Default: `chat` when the first --app is chat, else `none`.
    #[arg(long, env = "GATEHOUSE_PAGE")]
    pub page: Option<crate::page::PageChoice>,
    #[command(flatten)]
    pub limits: GatewayLimits,
    #[command(flatten)]
    pub tls: PublicTlsArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Client-facing limits of a gateway (docs/security.md says what exceeding each one gets).
#[derive(Args, Debug, Clone)]
pub struct GatewayLimits {
    /// Largest client message in bytes; larger ones close the client with 1009.
    #[arg(long, env = "GATEHOUSE_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    pub max_message_bytes: usize,
    /// Largest frame a worker may send to a client, in bytes; larger sends are refused to the
    /// worker (bad_request).
    #[arg(long, env = "GATEHOUSE_MAX_FRAME_OUT_BYTES", default_value_t = 1024 * 1024)]
    pub max_frame_out_bytes: usize,
    /// Frames queued towards one client before it is closed as a slow consumer (1013).
    #[arg(long, env = "GATEHOUSE_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,
    /// Unacknowledged events per client before the gateway stops reading it (back-pressure).
    #[arg(long, env = "GATEHOUSE_MAX_UNACKED_EVENTS", default_value_t = 256)]
    pub max_unacked_events: usize,
    /// Bytes of unacknowledged events per client before the gateway stops reading it (default:
    /// 1 MiB, or two maximal messages if that is more).
    #[arg(long, env = "GATEHOUSE_MAX_UNACKED_BYTES")]
    pub max_unacked_bytes: Option<usize>,
    /// Bytes of unacknowledged events of all clients before the gateway stops reading them.
    #[arg(long, env = "GATEHOUSE_MAX_GATEWAY_UNACKED_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_gateway_unacked_bytes: usize,
    /// Interval of server pings to clients.
    #[arg(long, env = "GATEHOUSE_PING_INTERVAL", default_value = "25s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// Pings without any answer before a client is dropped.
    #[arg(long, env = "GATEHOUSE_PING_LIMIT", default_value_t = 2)]
    pub ping_limit: u32,
    /// Time a client has to send its HTTP request headers (slowloris defence).
    #[arg(long, env = "GATEHOUSE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Time a worker has to accept or refuse a handshake (503 after).
    #[arg(long, env = "GATEHOUSE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Handshakes waiting for a worker at once; more are refused with 503.
    #[arg(long, env = "GATEHOUSE_MAX_PENDING_HANDSHAKES", default_value_t = 1024)]
    pub max_pending_handshakes: usize,
    /// Open WebSocket connections of this gateway; more are refused with 503.
    #[arg(long, env = "GATEHOUSE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Connections from one client address; more are refused with 429.
    #[arg(long, env = "GATEHOUSE_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,
    /// Load balancers (addresses or CIDR networks, comma-separated) whose X-Forwarded-For names
    /// the client's address.
    #[arg(long, env = "GATEHOUSE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Request headers forwarded to workers with the handshake (comma-separated, lowercase).
    #[arg(
        long,
        env = "GATEHOUSE_FORWARD_HEADERS",
        value_delimiter = ',',
        default_value = "authorization,cookie,origin,user-agent,sec-websocket-protocol"
    )]
    pub forward_headers: Vec<String>,
    /// Bytes of forwarded headers, path and query per handshake; more are refused with 431.
    #[arg(long, env = "GATEHOUSE_MAX_HANDSHAKE_BYTES", default_value_t = 16 * 1024)]
    pub max_handshake_bytes: usize,
    /// Messages per second one client may send (0: no limit); a faster client is read slower.
    #[arg(long, env = "GATEHOUSE_MESSAGE_RATE", default_value_t = 200)]
    pub message_rate: u32,
    /// Messages one client may send in a burst above --message-rate.
    #[arg(long, env = "GATEHOUSE_MESSAGE_BURST", default_value_t = 200)]
    pub message_burst: u32,
    /// Bytes per second one client may send (0: no limit).
    #[arg(long, env = "GATEHOUSE_BYTE_RATE", default_value_t = 2 * 1024 * 1024)]
    pub byte_rate: u32,
    /// Bytes one client may send in a burst above --byte-rate, at least --max-message-bytes
    /// (default: 4 MiB, or one maximal message if that is more).
    #[arg(long, env = "GATEHOUSE_BYTE_BURST")]
    pub byte_burst: Option<u32>,
    /// A client over its rate for this long is closed with 1008.
    #[arg(long, env = "GATEHOUSE_RATE_LIMIT_CLOSE_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub rate_limit_close_after: Duration,
    /// Groups one client may be in.
    #[arg(long, env = "GATEHOUSE_MAX_GROUPS_PER_CONNECTION", default_value_t = 1024)]
    pub max_groups_per_connection: usize,
    /// Largest session a worker may store on a client, in bytes.
    #[arg(long, env = "GATEHOUSE_MAX_SESSION_BYTES", default_value_t = 16 * 1024)]
    pub max_session_bytes: usize,
    /// Let apps accept a bare identity (the chat app's `?uid=`) without a token. For demos and
    /// tests only; loudly logged.
    #[arg(long, env = "GATEHOUSE_INSECURE_DEV_AUTH")]
    pub insecure_dev_auth: bool,
}

/// Settings of the chat app.
#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    /// Chat history database: a SQLite file (`sqlite://gatehouse.db`, created on first start),
    /// `postgres://user@host/db`, or `mysql://user@host/db` (MariaDB 10.6+, the database must
    /// exist). Falls back to the DATABASE_URL environment variable.
    #[arg(long, env = "GATEHOUSE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// HS256 secret that signs chat tokens (at least 32 bytes).
    #[arg(long, env = "GATEHOUSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key that verifies chat tokens instead of a secret: RSA (RS256/384/512) or EC
    /// P-256/P-384 (ES256/384).
    #[arg(long, env = "GATEHOUSE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<std::path::PathBuf>,
    /// The `iss` every chat token must carry (not checked when unset).
    #[arg(long, env = "GATEHOUSE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` every chat token must carry (not checked when unset).
    #[arg(long, env = "GATEHOUSE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Let the chat app accept a bare `?uid=` (no token) from gateways that run with
    /// `--insecure-dev-auth` too. For demos and tests only; refused with a jwt secret or key.
    #[arg(long, env = "GATEHOUSE_INSECURE_DEV_AUTH")]
    pub insecure_dev_auth: bool,
    /// Chat messages one connection may send per second (0: unlimited); over it a send is
    /// answered `rate_limited` with `retry_after_ms`.
    #[arg(long = "chat-send-rate", env = "GATEHOUSE_CHAT_SEND_RATE", default_value_t = gatehouse_chat::ratelimit::RateLimits::default().sends.per_second)]
    pub send_rate: u32,
    /// Chat messages one connection may send at once after a quiet period.
    #[arg(long = "chat-send-burst", env = "GATEHOUSE_CHAT_SEND_BURST", default_value_t = gatehouse_chat::ratelimit::RateLimits::default().sends.burst)]
    pub send_burst: u32,
    /// Other chat requests (sync, history, group changes, ...) per second per connection (0:
    /// unlimited).
    #[arg(long = "chat-request-rate", env = "GATEHOUSE_CHAT_REQUEST_RATE", default_value_t = gatehouse_chat::ratelimit::RateLimits::default().requests.per_second)]
    pub request_rate: u32,
    /// Other chat requests one connection may make at once after a quiet period.
    #[arg(long = "chat-request-burst", env = "GATEHOUSE_CHAT_REQUEST_BURST", default_value_t = gatehouse_chat::ratelimit::RateLimits::default().requests.burst)]
    pub request_burst: u32,
    /// Connections (devices) one uid may have open across the cluster; further handshakes get
    /// HTTP 429 (0: no limit). Approximate under handshakes of one uid at the same moment.
    #[arg(
        long = "chat-max-connections-per-uid",
        env = "GATEHOUSE_CHAT_MAX_CONNECTIONS_PER_UID",
        default_value_t = 16
    )]
    pub max_connections_per_uid: u32,
    /// Largest frame the chat worker sends, in bytes: lists are cut to fit and say `more`. Must
    /// not exceed the gateways' --max-frame-out-bytes (default 1 MiB) and must hold the largest
    /// message (about 33 KB).
    #[arg(long = "chat-max-reply-bytes", env = "GATEHOUSE_CHAT_MAX_REPLY_BYTES", default_value_t = 256 * 1024)]
    pub max_reply_bytes: usize,
    /// Events per conversation a `sync` gives a device that is further behind (or new): the
    /// latest ones, marked `limited`; older ones come through `history`.
    #[arg(long = "chat-sync-window", env = "GATEHOUSE_CHAT_SYNC_WINDOW", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sync_window: u32,
    /// How often clients should `ping` (announced in `welcome`, in milliseconds).
    #[arg(
        long = "chat-heartbeat-ms",
        env = "GATEHOUSE_CHAT_HEARTBEAT_MS",
        default_value_t = 25_000
    )]
    pub heartbeat_ms: u64,
    /// How long after sending a message may be edited (`48h`; `0s`: no limit).
    #[arg(long = "chat-edit-window", env = "GATEHOUSE_CHAT_EDIT_WINDOW", default_value = "48h", value_parser = humantime::parse_duration)]
    pub edit_window: Duration,
    /// How long a typing indicator lasts unless repeated.
    #[arg(long = "chat-typing-ttl", env = "GATEHOUSE_CHAT_TYPING_TTL", default_value = "6s", value_parser = humantime::parse_duration)]
    pub typing_ttl: Duration,
    /// `typing` frames one connection may send per second (0: unlimited).
    #[arg(long = "chat-typing-rate", env = "GATEHOUSE_CHAT_TYPING_RATE", default_value_t = gatehouse_chat::ratelimit::RateLimits::default().typing.per_second)]
    pub typing_rate: u32,
    /// `typing` frames one connection may send at once.
    #[arg(long = "chat-typing-burst", env = "GATEHOUSE_CHAT_TYPING_BURST", default_value_t = gatehouse_chat::ratelimit::RateLimits::default().typing.burst)]
    pub typing_burst: u32,
    /// Most contacts a user's online/offline change is pushed to.
    #[arg(
        long = "chat-presence-contacts",
        env = "GATEHOUSE_CHAT_PRESENCE_CONTACTS",
        default_value_t = 1000
    )]
    pub presence_contacts: u32,
    /// How long a user's last connection may be gone before it is announced offline.
    #[arg(long = "chat-presence-grace", env = "GATEHOUSE_CHAT_PRESENCE_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub presence_grace: Duration,
    /// Benchmarks only: answer messages and receipts from an in-memory sink and store none, to
    /// measure the chat path without its storage. Needs --insecure-dev-auth.
    #[arg(long = "chat-bench-discard-messages")]
    pub discard_messages: bool,
}

impl ChatArgs {
    pub fn config(&self, default_database: &str) -> gatehouse_chat::ChatConfig {
        let url = self
            .database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .unwrap_or_else(|| default_database.to_owned());
        let mut config = gatehouse_chat::ChatConfig::new(url);
        config.jwt_secret = self.jwt_secret.clone();
        config.jwt_public_key = self.jwt_public_key.clone();
        config.jwt_issuer = self.jwt_issuer.clone();
        config.jwt_audience = self.jwt_audience.clone();
        config.insecure_dev_auth = self.insecure_dev_auth;
        config.max_connections_per_uid = self.max_connections_per_uid;
        config.max_reply_bytes = self.max_reply_bytes;
        config.rate.sends = gatehouse_chat::ratelimit::Rate {
            per_second: self.send_rate,
            burst: self.send_burst,
        };
        config.rate.requests = gatehouse_chat::ratelimit::Rate {
            per_second: self.request_rate,
            burst: self.request_burst,
        };
        config.rate.typing = gatehouse_chat::ratelimit::Rate {
            per_second: self.typing_rate,
            burst: self.typing_burst,
        };
        config.sync_window = self.sync_window;
        config.heartbeat = Duration::from_millis(self.heartbeat_ms);
        config.edit_window = (!self.edit_window.is_zero()).then_some(self.edit_window);
        config.typing_ttl = self.typing_ttl;
        config.presence_contacts = self.presence_contacts;
        config.presence_grace = self.presence_grace;
        config.discard_messages = self.discard_messages;
        config
    }
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The uid the token names (its `sub`).
    #[arg(long, env = "GATEHOUSE_TOKEN_UID")]
    pub uid: String,
    /// How long the token is valid (`30m`, `12h`, `7days`).
    #[arg(long, env = "GATEHOUSE_TOKEN_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// HS256 secret (the same as the chat workers', at least 32 bytes).
    #[arg(long, env = "GATEHOUSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Sign with this PEM private key instead (RSA: RS256; EC P-256: ES256); the workers verify
    /// with its public key (`--jwt-public-key`).
    #[arg(long, env = "GATEHOUSE_JWT_PRIVATE_KEY", conflicts_with = "jwt_secret")]
    pub jwt_private_key: Option<std::path::PathBuf>,
    /// The token's `iss` (for workers that check one).
    #[arg(long, env = "GATEHOUSE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The token's `aud` (for workers that check one).
    #[arg(long, env = "GATEHOUSE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Registry addresses, comma-separated; the worker attaches to all of them.
    #[arg(long, env = "GATEHOUSE_REGISTRY", value_delimiter = ',', required = true)]
    pub registry: Vec<String>,
    /// The app to run: chat, webhook (an HTTP backend, see --url), echo, relay, or api
    /// (tests and diagnostics only).
    #[arg(long, env = "GATEHOUSE_APP")]
    pub app: String,
    /// Let an app that authenticates nobody (relay, api) run: any client may then act as any
    /// uid (relay) or on any other client (api). Refused without this flag outside
    /// `gatehouse dev`.
    #[arg(long, env = "GATEHOUSE_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Admin listener (/healthz, /readyz, /metrics), or `off`.
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN", default_value = "127.0.0.1:9101")]
    pub admin_listen: AdminListen,
    #[command(flatten)]
    pub chat: ChatArgs,
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Public address of the gateway.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The app to run.
    #[arg(long, env = "GATEHOUSE_APP", default_value = "chat")]
    pub app: String,
    /// What `/` serves: `chat`, `none` or a directory (see `gatehouse gateway --help`).
    /// Default: the chat page when the app is chat, else `none`.
    #[arg(long, env = "GATEHOUSE_PAGE")]
    pub page: Option<crate::page::PageChoice>,
    /// Admin listener of the whole dev cluster (/healthz, /readyz, /metrics), or `off`.
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    pub admin_listen: AdminListen,
    #[command(flatten)]
    pub chat: ChatArgs,
}

impl GatewayLimits {
    fn apply(&self, config: &mut GatewayConfig) {
        config.max_message_bytes = self.max_message_bytes;
        config.max_frame_out_bytes = self.max_frame_out_bytes;
        config.send_queue = self.send_queue;
        config.max_unacked_events = self.max_unacked_events;
        config.max_unacked_bytes = self
            .max_unacked_bytes
            .unwrap_or_else(|| (1024 * 1024).max(2 * self.max_message_bytes));
        config.max_gateway_unacked_bytes = self.max_gateway_unacked_bytes;
        config.ping_interval = self.ping_interval;
        config.ping_limit = self.ping_limit;
        config.header_read_timeout = self.header_read_timeout;
        config.handshake_timeout = self.handshake_timeout;
        config.max_pending_handshakes = self.max_pending_handshakes;
        config.max_connections = self.max_connections;
        config.max_connections_per_ip = self.max_connections_per_ip;
        config.trusted_proxies = self.trusted_proxies.clone();
        config.forward_headers = self
            .forward_headers
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        config.max_handshake_bytes = self.max_handshake_bytes;
        config.message_rate = Rate {
            per_second: self.message_rate,
            burst: self.message_burst,
        };
        config.byte_rate = Rate {
            per_second: self.byte_rate,
            burst: self.byte_burst.unwrap_or_else(|| {
                u32::try_from(self.max_message_bytes)
                    .unwrap_or(u32::MAX)
                    .max(4 * 1024 * 1024)
            }),
        };
        config.rate_limit_close_after = self.rate_limit_close_after;
        config.max_groups_per_conn = self.max_groups_per_connection;
        config.max_session_bytes = self.max_session_bytes;
        config.insecure_dev_auth = self.insecure_dev_auth;
    }
}

/// Runs the chosen role until `token` is cancelled.
pub async fn run(cli: Cli, token: CancellationToken) -> Result<()> {
    match cli.command {
        Command::Registry(args) => {
            let mut config = RegistryConfig::new(args.listen, args.cluster.credentials(Role::Registry)?);
            config.insecure_plaintext = args.cluster.insecure_plaintext;
            config.lease = args.lease;
            config.ack_timeout = args.ack_timeout;
            config.warmup = args.warmup.unwrap_or(args.lease);
            config.max_members = args.max_members;
            config.max_keys_per_gateway = args.max_keys_per_gateway;
            let bound = gatehouse_registry::bind(config)
                .await
                .context("starting the registry")?;
            let admin = admin::serve(
                args.admin_listen.bind().await?,
                vec![bound.admin_hooks()],
                token.clone(),
            );
            bound.run(token).await?;
            wait(admin).await;
        }
        Command::Gateway(args) => {
            let credentials = args.cluster.credentials(Role::Gateway)?;
            let mut config = GatewayConfig::new(args.listen, args.internal, args.registry, credentials);
            config.tls = args.tls.files();
            config.insecure_plaintext = args.cluster.insecure_plaintext;
            config.advertise = args.advertise;
            config.page = crate::page::PageChoice::resolve(args.page, args.apps.first().map(String::as_str));
            config.drain = args.drain;
            config.apps = args.apps;
            args.limits.apply(&mut config);
            let bound = gatehouse_gateway::bind(config).await.context("starting the gateway")?;
            // The admin listener outlives the drain: /readyz answers 503 while it lasts.
            let admin_token = CancellationToken::new();
            let admin = admin::serve(
                args.admin_listen.bind().await?,
                vec![bound.admin_hooks()],
                admin_token.clone(),
            );
            let result = bound.run(token).await;
            admin_token.cancel();
            wait(admin).await;
            result?;
        }
        Command::Worker(args) => {
            let args = *args;
            let config = WorkerConfig::new(args.registry, args.cluster.credentials(Role::Worker)?, args.app.clone());
            let trust = if args.allow_unauthenticated {
                Trust::AllowUnauthenticated
            } else {
                Trust::Production
            };
            crate::apps::check_trust(&args.app, trust)?;
            if args.app == "webhook" {
                let webhook = args.webhook.config()?;
                let admin = args.admin_listen.bind().await?;
                return crate::webhook::run(webhook, config, admin, token).await;
            }
            let admin = args.admin_listen.bind().await?;
            run_app(
                &args.app,
                config,
                &args.chat.config(DEFAULT_DATABASE),
                trust,
                admin,
                token,
            )
            .await?;
        }
        Command::Dev(args) => {
            let dev = crate::dev::Dev {
                listen: args.listen,
                chat: args.chat.config(DEFAULT_DATABASE),
                page: crate::page::PageChoice::resolve(args.page, Some(&args.app)),
                app: args.app,
                admin: args.admin_listen.bind().await?,
            };
            crate::dev::run(dev, token).await?
        }
        Command::Bench(args) => crate::bench::run(args).await?,
        Command::Api(args) => crate::api::run(*args, token).await?,
        Command::ApiKey(args) => crate::api::run_key(args)?,
        Command::Cert(args) => crate::tls::run_cert(&args)?,
        Command::Probe(args) => crate::probe::run(&args).await?,
        Command::Token(args) => {
            use gatehouse_chat::auth::{MIN_SECRET_BYTES, SigningKey};
            let key = match (&args.jwt_secret, &args.jwt_private_key) {
                (Some(secret), _) if secret.len() < MIN_SECRET_BYTES => {
                    bail!("the jwt secret must be at least {MIN_SECRET_BYTES} bytes")
                }
                (Some(secret), _) => SigningKey::Secret(secret.clone()),
                (None, Some(path)) => {
                    SigningKey::PrivatePem(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
                }
                (None, None) => {
                    bail!("no signing key: set GATEHOUSE_JWT_SECRET (or --jwt-secret), or pass --jwt-private-key")
                }
            };
            if !gatehouse_chat::auth::valid_uid(&args.uid) {
                bail!("a uid is 1-64 letters, digits or _ . @ -");
            }
            let token = gatehouse_chat::auth::sign(
                &key,
                &args.uid,
                args.ttl,
                args.jwt_issuer.as_deref(),
                args.jwt_audience.as_deref(),
            )?;
            println!("{token}");
        }
    }
    Ok(())
}

/// Waits for an admin listener's task to end.
async fn wait(admin: Option<tokio::task::JoinHandle<()>>) {
    if let Some(admin) = admin {
        let _ = admin.await;
    }
}
