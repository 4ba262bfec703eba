//! `gatehouse dev`: a registry, a gateway and a worker in one process, on loopback, with a fresh
//! random cluster secret: a working cluster with one command.

use std::time::Duration;

use anyhow::{Context, Result};
use gatehouse_core::ClusterSecret;
use gatehouse_gateway::GatewayConfig;
use gatehouse_registry::RegistryConfig;
use gatehouse_sdk::WorkerConfig;
use tokio_util::sync::CancellationToken;

use crate::cli::{DEFAULT_DATABASE, DevArgs, Trust, run_app};

/// Runs the dev cluster until `token` is cancelled.
pub async fn run(args: DevArgs, token: CancellationToken) -> Result<()> {
    let secret = ClusterSecret::random();
    let loopback = "127.0.0.1:0".parse().expect("valid address");

    let mut registry = RegistryConfig::new(loopback, secret.clone());
    // One process: nothing can be late to resync, so the table is complete at once.
    registry.warmup = Duration::ZERO;
    let registry = gatehouse_registry::bind(registry)
        .await
        .context("starting the registry")?;
    let registry_addr = registry.local_addr().to_string();

    let mut gateway = GatewayConfig::new(args.listen, loopback, vec![registry_addr.clone()], secret.clone());
    // A person tries it in a browser with no token tooling: bare uids are accepted (and logged).
    gateway.insecure_dev_auth = true;
    gateway.index_page = Some(gatehouse_chat::WEB_PAGE);
    let gateway = gatehouse_gateway::bind(gateway)
        .await
        .with_context(|| format!("binding {} (is another gatehouse running? try --listen)", args.listen))?;
    let public = gateway.public_addr();

    let worker = WorkerConfig::new(vec![registry_addr], secret, args.app.clone());
    let registry_task = tokio::spawn(registry.run(token.clone()));
    let gateway_task = tokio::spawn(gateway.run(token.clone()));
    tracing::info!(app = %args.app, "dev cluster ready: open http://{public}/ (websocket endpoint ws://{public}/ws)");
    eprintln!(
        "\n  gatehouse dev is running the {} app: open http://{public}/  (websocket: ws://{public}/ws)\n",
        args.app
    );
    // Everything runs on loopback in one process: the unauthenticated apps are fine here.
    let trust = Trust::AllowUnauthenticated;
    let worker_result = run_app(
        &args.app,
        worker,
        &gatehouse_chat::ChatConfig {
            insecure_dev_auth: true,
            ..args.chat.config(DEFAULT_DATABASE)
        },
        trust,
        token.clone(),
    )
    .await;
    token.cancel();
    let _ = registry_task.await;
    let _ = gateway_task.await;
    worker_result
}
