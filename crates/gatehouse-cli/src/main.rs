//! `gatehouse`: one binary for every role. Parses flags and environment into each role's plain
//! config struct, validates it, and runs the role until SIGINT or SIGTERM.

mod admin;
mod api;
mod apps;
mod bench;
mod cli;
mod dev;
mod page;
mod probe;
mod tls;
mod webhook;

use anyhow::Result;

use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> Result<()> {
    let cli = cli::Cli::parse();
    gatehouse_core::telemetry::init(cli.log_format.into());
    // Before any role makes its metric handles: a handle made earlier would record nothing.
    let _ = gatehouse_core::admin::install_metrics();
    let runtime = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        Some(threads) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(threads))
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    runtime.block_on(async move {
        let token = CancellationToken::new();
        tokio::spawn(shutdown_on_signal(token.clone()));
        cli::run(cli, token).await
    })
}

/// Cancels `token` on the first SIGINT or SIGTERM.
async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    token.cancel();
}
