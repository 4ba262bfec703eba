//! The webhook app's flags (`gatehouse worker --app webhook --url …`), turned into a
//! [`WebhookConfig`], and its run.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use gatehouse_core::admin::AdminServer;
use gatehouse_sdk::{WorkerConfig, WorkerRuntime};
use gatehouse_webhook::{EventKinds, WebhookConfig, WebhookWorker};
use tokio_util::sync::CancellationToken;

/// Settings of the webhook app (see docs/webhook.md).
#[derive(Args, Debug)]
pub struct WebhookArgs {
    /// The webhook app's backend: every batch of events is POSTed to this http:// URL.
    #[arg(long = "url", env = "GATEHOUSE_WEBHOOK_URL")]
    pub url: Option<String>,
    /// The key shared with the backend: every body is signed with it (HMAC-SHA256,
    /// `Gatehouse-Signature`). At least 32 bytes.
    #[arg(long = "webhook-secret", env = "GATEHOUSE_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The events forwarded to the backend (others are handled locally: an unforwarded
    /// handshake is accepted).
    #[arg(
        long = "webhook-events",
        env = "GATEHOUSE_WEBHOOK_EVENTS",
        default_value = "handshake,connect,message,close"
    )]
    pub events: String,
    /// Events per request at most.
    #[arg(
        long = "webhook-batch-events",
        env = "GATEHOUSE_WEBHOOK_BATCH_EVENTS",
        default_value_t = 64
    )]
    pub batch_events: usize,
    /// Bytes of events per request at most; a larger event closes its client with 1008.
    #[arg(long = "webhook-batch-bytes", env = "GATEHOUSE_WEBHOOK_BATCH_BYTES", default_value_t = 1024 * 1024)]
    pub batch_bytes: usize,
    /// Requests in flight at once per gateway link.
    #[arg(
        long = "webhook-concurrency",
        env = "GATEHOUSE_WEBHOOK_CONCURRENCY",
        default_value_t = 4
    )]
    pub concurrency: usize,
    /// A request not answered within this fails and is retried.
    #[arg(long = "webhook-timeout", env = "GATEHOUSE_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Retries of an event in its handler before it goes back to its gateway.
    #[arg(long = "webhook-retries", env = "GATEHOUSE_WEBHOOK_RETRIES", default_value_t = 3)]
    pub retries: u32,
    /// A client whose events have failed for this long is closed with 1013.
    #[arg(long = "webhook-give-up", env = "GATEHOUSE_WEBHOOK_GIVE_UP", default_value = "30s", value_parser = humantime::parse_duration)]
    pub give_up: Duration,
    /// A handshake the backend has not answered within this is refused with 503 (keep it
    /// below the gateway's --handshake-timeout).
    #[arg(long = "webhook-handshake-timeout", env = "GATEHOUSE_WEBHOOK_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
}

impl WebhookArgs {
    /// Builds and checks the configuration.
    pub fn config(&self) -> Result<WebhookConfig> {
        let Some(url) = &self.url else {
            bail!("the webhook app needs the backend's URL: --url http://host:port/path (GATEHOUSE_WEBHOOK_URL)");
        };
        let Some(secret) = &self.secret else {
            bail!(
                "the webhook app signs every request: set GATEHOUSE_WEBHOOK_SECRET (or --webhook-secret), at least 32 bytes"
            );
        };
        let mut config = WebhookConfig::new(url, secret.as_bytes())?;
        config.events = EventKinds::parse(&self.events)?;
        config.max_batch_events = self.batch_events;
        config.max_batch_bytes = self.batch_bytes;
        config.concurrency = self.concurrency;
        config.request_timeout = self.timeout;
        config.retries = self.retries;
        config.give_up_after = self.give_up;
        config.handshake_timeout = self.handshake_timeout;
        config.validate()?;
        Ok(config)
    }
}

/// Runs the webhook worker until `token` is cancelled; its counters join the worker's on the
/// admin listener.
pub async fn run(
    webhook: WebhookConfig,
    config: WorkerConfig,
    admin: Option<AdminServer>,
    token: CancellationToken,
) -> Result<()> {
    tracing::info!(url = %webhook.url, "webhook worker forwards events to its backend");
    let worker = WebhookWorker::new(webhook).context("starting the webhook app")?;
    let webhook_hooks = worker.admin_hooks();
    let runtime = WorkerRuntime::new(config, worker);
    let admin = crate::admin::serve(admin, vec![runtime.admin_hooks(), webhook_hooks], token.clone());
    runtime.run(token).await?;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    Ok(())
}
