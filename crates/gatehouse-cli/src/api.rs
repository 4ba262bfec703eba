//! `gatehouse api` (the server API role) and `gatehouse api-key` (API key management).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gatehouse_api::keys::{self, Scopes};
use gatehouse_api::{ApiConfig, Limits, Rate};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// HTTP/JSON listen address (`/api/v1/...`, `/healthz`, `/readyz`, `/metrics`). Keep it on a
    /// private network: it is for backends, not browsers.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// gRPC listen address (`gatehouse.v1.ServerApi`).
    #[arg(long, env = "GATEHOUSE_GRPC_LISTEN", default_value = "127.0.0.1:8091")]
    pub grpc_listen: SocketAddr,
    /// Registry addresses, comma-separated; the process attaches to all of them.
    #[arg(long, env = "GATEHOUSE_REGISTRY", value_delimiter = ',', required = true)]
    pub registry: Vec<String>,
    /// The API key file (JSON; `gatehouse api-key create` prints entries for it). Re-read on
    /// SIGHUP.
    #[arg(long, env = "GATEHOUSE_API_KEYS")]
    pub api_keys: PathBuf,
    /// Largest request body (HTTP) or message (gRPC) in bytes; larger: 413.
    #[arg(long, env = "GATEHOUSE_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Operations in one batch.
    #[arg(long, env = "GATEHOUSE_MAX_BATCH_OPS", default_value_t = Limits::default().max_batch_ops)]
    pub max_batch_ops: usize,
    /// Entries in any one list of a request (clients, uids, groups, exclude).
    #[arg(long, env = "GATEHOUSE_MAX_LIST_LEN", default_value_t = Limits::default().max_list_len)]
    pub max_list_len: usize,
    /// Largest answer in bytes (a batch's answers together).
    #[arg(long, env = "GATEHOUSE_MAX_RESPONSE_BYTES", default_value_t = Limits::default().max_response_bytes)]
    pub max_response_bytes: usize,
    /// Operations per second per API key (0: no limit); a key may set its own in the key file.
    #[arg(long, env = "GATEHOUSE_KEY_RATE", default_value_t = Limits::default().key_rate.per_second)]
    pub key_rate: u32,
    /// Operations one key may run in a burst above --key-rate.
    #[arg(long, env = "GATEHOUSE_KEY_BURST", default_value_t = Limits::default().key_rate.burst)]
    pub key_burst: u32,
    /// Deadline of one request (a whole batch).
    #[arg(long, env = "GATEHOUSE_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Requests executed at once (HTTP and gRPC); more get 503.
    #[arg(long, env = "GATEHOUSE_MAX_CONCURRENT_REQUESTS", default_value_t = Limits::default().max_concurrent_requests)]
    pub max_concurrent_requests: usize,
    /// Open HTTP connections; more are refused with 503 at accept.
    #[arg(long, env = "GATEHOUSE_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Time a client has to send its HTTP request headers.
    #[arg(long, env = "GATEHOUSE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// How long a successful send's idempotency key is remembered.
    #[arg(long, env = "GATEHOUSE_IDEMPOTENCY_WINDOW", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idempotency_window: Duration,
    /// Idempotency keys remembered at most (the oldest are forgotten first beyond it).
    #[arg(long, env = "GATEHOUSE_IDEMPOTENCY_CAPACITY", default_value_t = Limits::default().idempotency_capacity)]
    pub idempotency_capacity: usize,
    #[command(flatten)]
    pub tls: crate::tls::PublicTlsArgs,
    #[command(flatten)]
    pub cluster: crate::tls::ClusterArgs,
}

#[derive(Args, Debug)]
pub struct ApiKeyArgs {
    #[command(subcommand)]
    pub command: ApiKeyCommand,
}

#[derive(Subcommand, Debug)]
pub enum ApiKeyCommand {
    /// Generate a key: prints the secret once, and the entry to add to the key file.
    Create(ApiKeyCreateArgs),
}

#[derive(Args, Debug)]
pub struct ApiKeyCreateArgs {
    /// Who holds the key (logs, metrics): 1-64 of A-Z a-z 0-9 _ . -
    #[arg(long)]
    pub name: String,
    /// Comma-separated scopes: publish (sends, closes, deadlines), query (presence, lists,
    /// counts, session reads), admin (everything, including bindings, groups, session writes).
    #[arg(long)]
    pub scopes: String,
    /// Operations per second for this key (default: the server's --key-rate).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Burst for this key (default: the server's --key-burst).
    #[arg(long)]
    pub burst: Option<u32>,
}

/// Runs the API role until `token` is cancelled.
pub async fn run(args: ApiArgs, token: CancellationToken) -> Result<()> {
    let mut config = ApiConfig::new(
        args.listen,
        args.grpc_listen,
        args.registry,
        args.cluster.credentials(gatehouse_core::tls::Role::Api)?,
        args.api_keys,
    );
    config.tls = args.tls.files();
    config.insecure_plaintext = args.cluster.insecure_plaintext;
    config.limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_batch_ops: args.max_batch_ops,
        max_list_len: args.max_list_len,
        max_response_bytes: args.max_response_bytes,
        key_rate: Rate {
            per_second: args.key_rate,
            burst: args.key_burst,
        },
        request_timeout: args.request_timeout,
        max_concurrent_requests: args.max_concurrent_requests,
        max_connections: args.max_connections,
        header_read_timeout: args.header_read_timeout,
        idempotency_window: args.idempotency_window,
        idempotency_capacity: args.idempotency_capacity,
    };
    let bound = gatehouse_api::bind(config).await.context("starting the API")?;
    bound.run(token).await?;
    Ok(())
}

/// Runs an `api-key` subcommand.
pub fn run_key(args: ApiKeyArgs) -> Result<()> {
    match args.command {
        ApiKeyCommand::Create(create) => {
            let scopes = Scopes::parse_list(&create.scopes)?;
            let mut key = keys::generate(&create.name, scopes)?;
            key.entry.rate = create.rate;
            key.entry.burst = create.burst;
            println!("key: {}", key.secret);
            println!("entry: {}", serde_json::to_string(&key.entry)?);
            eprintln!(
                "The key is shown only now; the server stores its hash. Add the entry to the \"keys\" list of the \
                 API key file and send the API processes SIGHUP (or restart them)."
            );
        }
    }
    Ok(())
}
