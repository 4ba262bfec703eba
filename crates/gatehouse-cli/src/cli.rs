//! Flags and environment variables (every flag has a `GATEHOUSE_…` variable), converted into the
//! roles' config structs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use gatehouse_core::ClusterSecret;
use gatehouse_core::telemetry::LogFormat;
use gatehouse_gateway::GatewayConfig;
use gatehouse_registry::RegistryConfig;
use gatehouse_sdk::WorkerConfig;
use tokio_util::sync::CancellationToken;

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
    Gateway(GatewayArgs),
    /// Run a business worker with a built-in app.
    Worker(WorkerArgs),
    /// Run a registry, a gateway and a worker in one process, ready to use.
    Dev(DevArgs),
    /// Print a chat token (HS256 JWT) for a uid, signed with the configured secret.
    Token(TokenArgs),
    /// Load generator and the one-hop baseline server (see docs/benchmarks.md).
    Bench(crate::bench::BenchArgs),
}

/// The cluster secret, shared by every role.
#[derive(Args, Debug, Clone)]
pub struct SecretArg {
    /// Shared secret of the cluster; every internal call carries it and is refused without it.
    #[arg(long = "cluster-secret", env = "GATEHOUSE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
}

impl SecretArg {
    fn secret(&self) -> Result<ClusterSecret> {
        let Some(secret) = self.cluster_secret.as_deref() else {
            bail!(
                "no cluster secret: set GATEHOUSE_CLUSTER_SECRET or pass --cluster-secret (the same on every process)"
            );
        };
        Ok(ClusterSecret::new(secret)?)
    }
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
    #[command(flatten)]
    pub secret: SecretArg,
}

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Public address for WebSocket clients (`/ws`) and HTTP (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Internal gRPC address workers attach to.
    #[arg(long, env = "GATEHOUSE_INTERNAL", default_value = "127.0.0.1:7100")]
    pub internal: SocketAddr,
    /// Internal address announced to the cluster when it differs from --internal (Docker, NAT).
    #[arg(long, env = "GATEHOUSE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Registry addresses, comma-separated; the gateway attaches to all of them.
    #[arg(long, env = "GATEHOUSE_REGISTRY", value_delimiter = ',', required = true)]
    pub registry: Vec<String>,
    #[command(flatten)]
    pub limits: GatewayLimits,
    #[command(flatten)]
    pub secret: SecretArg,
}

/// Client-facing limits of a gateway.
#[derive(Args, Debug, Clone)]
pub struct GatewayLimits {
    /// Largest client message in bytes; larger ones close the client with 1009.
    #[arg(long, env = "GATEHOUSE_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    pub max_message_bytes: usize,
    /// Frames queued towards one client before it is closed as a slow consumer (1013).
    #[arg(long, env = "GATEHOUSE_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,
    /// Unacknowledged events per client before the gateway stops reading it (back-pressure).
    #[arg(long, env = "GATEHOUSE_MAX_UNACKED_EVENTS", default_value_t = 256)]
    pub max_unacked_events: usize,
    /// Interval of server pings to clients.
    #[arg(long, env = "GATEHOUSE_PING_INTERVAL", default_value = "25s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// Pings without any answer before a client is dropped.
    #[arg(long, env = "GATEHOUSE_PING_LIMIT", default_value_t = 2)]
    pub ping_limit: u32,
    /// Let apps accept a bare identity (the chat app's `?uid=`) without a token. For demos and
    /// tests only; loudly logged.
    #[arg(long, env = "GATEHOUSE_INSECURE_DEV_AUTH")]
    pub insecure_dev_auth: bool,
}

/// Settings of the chat app.
#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    /// Chat history database: a SQLite file (`sqlite://gatehouse.db`, created on first start) or
    /// `postgres://user@host/db`. Falls back to the DATABASE_URL environment variable.
    #[arg(long, env = "GATEHOUSE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// HS256 secret that signs chat tokens (at least 16 bytes).
    #[arg(long, env = "GATEHOUSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
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
    /// HS256 secret (the same as the chat workers').
    #[arg(long, env = "GATEHOUSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Registry addresses, comma-separated; the worker attaches to all of them.
    #[arg(long, env = "GATEHOUSE_REGISTRY", value_delimiter = ',', required = true)]
    pub registry: Vec<String>,
    /// The app to run: chat, echo, relay, or api (tests and diagnostics only).
    #[arg(long, env = "GATEHOUSE_APP")]
    pub app: String,
    #[command(flatten)]
    pub chat: ChatArgs,
    #[command(flatten)]
    pub secret: SecretArg,
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Public address of the gateway.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The app to run.
    #[arg(long, env = "GATEHOUSE_APP", default_value = "chat")]
    pub app: String,
    #[command(flatten)]
    pub chat: ChatArgs,
}

impl GatewayLimits {
    fn apply(&self, config: &mut GatewayConfig) {
        config.max_message_bytes = self.max_message_bytes;
        config.send_queue = self.send_queue;
        config.max_unacked_events = self.max_unacked_events;
        config.ping_interval = self.ping_interval;
        config.ping_limit = self.ping_limit;
        config.insecure_dev_auth = self.insecure_dev_auth;
    }
}

/// Runs the chosen role until `token` is cancelled.
pub async fn run(cli: Cli, token: CancellationToken) -> Result<()> {
    match cli.command {
        Command::Registry(args) => {
            let mut config = RegistryConfig::new(args.listen, args.secret.secret()?);
            config.lease = args.lease;
            config.ack_timeout = args.ack_timeout;
            config.warmup = args.warmup.unwrap_or(args.lease);
            let bound = gatehouse_registry::bind(config)
                .await
                .context("starting the registry")?;
            bound.run(token).await?;
        }
        Command::Gateway(args) => {
            let mut config = GatewayConfig::new(args.listen, args.internal, args.registry, args.secret.secret()?);
            config.advertise = args.advertise;
            config.index_page = Some(gatehouse_chat::WEB_PAGE);
            args.limits.apply(&mut config);
            let bound = gatehouse_gateway::bind(config).await.context("starting the gateway")?;
            bound.run(token).await?;
        }
        Command::Worker(args) => {
            let config = WorkerConfig::new(args.registry, args.secret.secret()?, args.app.clone());
            run_app(&args.app, config, &args.chat.config(DEFAULT_DATABASE), token).await?;
        }
        Command::Dev(args) => crate::dev::run(args, token).await?,
        Command::Bench(args) => crate::bench::run(args).await?,
        Command::Token(args) => {
            let Some(secret) = args.jwt_secret.as_deref() else {
                bail!("no jwt secret: set GATEHOUSE_JWT_SECRET or pass --jwt-secret");
            };
            if !gatehouse_chat::auth::valid_uid(&args.uid) {
                bail!("a uid is 1-64 letters, digits or _ . @ -");
            }
            println!("{}", gatehouse_chat::auth::sign(secret, &args.uid, args.ttl)?);
        }
    }
    Ok(())
}

/// The chat database when none is configured: a SQLite file in the working directory.
pub const DEFAULT_DATABASE: &str = "sqlite://gatehouse.db";

/// Runs a built-in app by name.
pub async fn run_app(
    app: &str,
    config: WorkerConfig,
    chat: &gatehouse_chat::ChatConfig,
    token: CancellationToken,
) -> Result<()> {
    use gatehouse_sdk::WorkerRuntime;
    match app {
        "chat" => {
            let worker = gatehouse_chat::ChatWorker::open(chat.clone())
                .await
                .context("starting the chat app")?;
            WorkerRuntime::new(config, worker).run(token).await?
        }
        "echo" => {
            WorkerRuntime::new(config, gatehouse_apps::echo::Echo)
                .run(token)
                .await?
        }
        "relay" => {
            WorkerRuntime::new(config, gatehouse_apps::relay::Relay)
                .run(token)
                .await?
        }
        "api" => {
            tracing::warn!("the api app lets every client act on every other; use it for tests and diagnostics only");
            WorkerRuntime::new(config, gatehouse_apps::api::Api).run(token).await?
        }
        other => bail!(
            "unknown app {other:?}; built-in apps: {}",
            gatehouse_apps::APP_NAMES.join(", ")
        ),
    }
    Ok(())
}
