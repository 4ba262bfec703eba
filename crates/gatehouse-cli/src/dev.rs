//! `gatehouse dev`: a registry, a gateway and a worker in one process, on loopback, with a fresh
//! random cluster secret: a working cluster with one command.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use gatehouse_core::ClusterSecret;
use gatehouse_core::admin::AdminServer;
use gatehouse_gateway::GatewayConfig;
use gatehouse_registry::RegistryConfig;
use gatehouse_sdk::WorkerConfig;
use tokio_util::sync::CancellationToken;

use crate::apps::{Trust, run_app};

/// What `gatehouse dev` runs.
pub struct Dev {
    /// The gateway's public address.
    pub listen: SocketAddr,
    /// The app the worker runs.
    pub app: String,
    /// What the gateway serves at `/` (`--page`; the chat page for the chat app).
    pub page: gatehouse_gateway::Page,
    /// The chat app's settings.
    pub chat: gatehouse_chat::ChatConfig,
    /// The admin listener serving all three roles, if any.
    pub admin: Option<AdminServer>,
}

/// Runs the dev cluster until `token` is cancelled: then the gateway drains first (briefly),
/// while the worker and the registry still serve it, and they stop after it.
pub async fn run(dev: Dev, token: CancellationToken) -> Result<()> {
    let secret = ClusterSecret::random();
    let loopback = "127.0.0.1:0".parse().expect("valid address");

    let mut registry = RegistryConfig::new(loopback, secret.clone());
    // One process: nothing can be late to resync, so the table is complete at once.
    registry.warmup = Duration::ZERO;
    let registry = gatehouse_registry::bind(registry)
        .await
        .context("starting the registry")?;
    let registry_addr = registry.local_addr().to_string();

    let mut gateway = GatewayConfig::new(dev.listen, loopback, vec![registry_addr.clone()], secret.clone());
    // A person tries it in a browser with no token tooling: bare uids are accepted (and logged).
    gateway.insecure_dev_auth = true;
    gateway.apps = vec![dev.app.clone()];
    gateway.page = dev.page;
    // Ctrl-C should not wait 30 s for a graceful drain of a laptop's two tabs.
    gateway.drain = Duration::from_millis(500);
    let gateway = gatehouse_gateway::bind(gateway)
        .await
        .with_context(|| format!("binding {} (is another gatehouse running? try --listen)", dev.listen))?;
    let public = gateway.public_addr();

    let worker = WorkerConfig::new(vec![registry_addr], secret, dev.app.clone());
    let behind = CancellationToken::new();
    let hooks = vec![registry.admin_hooks(), gateway.admin_hooks()];
    let admin = match dev.admin {
        Some(mut admin) => {
            for hook in hooks {
                admin.add(hook);
            }
            Some(admin)
        }
        None => None,
    };
    // The worker consents to bare uids too: dev mode needs both sides. Checked before anything
    // starts, so that a refusal (dev mode with a JWT key) is the process's error.
    let chat = gatehouse_chat::ChatConfig {
        insecure_dev_auth: true,
        ..dev.chat
    };
    if dev.app == "chat" {
        chat.validate().context("the chat app's configuration")?;
    }
    let gateway_token = token.child_token();
    let registry_task = tokio::spawn(registry.run(behind.clone()));
    let mut gateway_task = tokio::spawn(gateway.run(gateway_token.clone()));
    tracing::info!(app = %dev.app, "dev cluster ready: open http://{public}/ (websocket endpoint ws://{public}/ws)");
    eprintln!(
        "\n  gatehouse dev is running the {} app: open http://{public}/  (websocket: ws://{public}/ws)\n",
        dev.app
    );
    // Everything runs on loopback in one process: the unauthenticated apps are fine here.
    let trust = Trust::AllowUnauthenticated;
    let mut worker_task = {
        let behind = behind.clone();
        let app = dev.app.clone();
        tokio::spawn(async move { run_app(&app, worker, &chat, trust, admin, behind).await })
    };
    // Normally the gateway stops first (it drains while the worker serves it); a worker that
    // fails to start stops everything.
    let worker_result = tokio::select! {
        _ = &mut gateway_task => {
            behind.cancel();
            worker_task.await.context("the worker task panicked")?
        }
        result = &mut worker_task => {
            gateway_token.cancel();
            let _ = gateway_task.await;
            behind.cancel();
            result.context("the worker task panicked")?
        }
    };
    let _ = registry_task.await;
    worker_result
}
