//! The worker apps built into the binary, and the rule that keeps the unauthenticated ones out
//! of production.

use anyhow::{Context, Result, bail};
use gatehouse_core::admin::AdminServer;
use gatehouse_sdk::{Worker, WorkerConfig, WorkerRuntime};
use tokio_util::sync::CancellationToken;

/// The chat database when none is configured: a SQLite file in the working directory.
pub const DEFAULT_DATABASE: &str = "sqlite://gatehouse.db";

/// Whether apps that authenticate nobody may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Refuse them: a production cluster must not hand every client every identity.
    Production,
    /// The operator said so (`--allow-unauthenticated`), or this is `gatehouse dev`.
    AllowUnauthenticated,
}

/// Apps that authenticate nobody.
const UNAUTHENTICATED_APPS: [&str; 2] = ["relay", "api"];

/// Refuses an app that authenticates nobody unless `trust` allows it (checked before anything
/// is bound, so that the refusal is the error an operator sees).
pub fn check_trust(app: &str, trust: Trust) -> Result<()> {
    if UNAUTHENTICATED_APPS.contains(&app) && trust == Trust::Production {
        bail!(
            "the {app} app authenticates nobody: any client could act as any user. Run it only for tests or \
             benchmarks, with --allow-unauthenticated (GATEHOUSE_ALLOW_UNAUTHENTICATED=true)"
        );
    }
    Ok(())
}

/// Runs a built-in app by name until `token` is cancelled, serving its admin hooks on `admin`.
pub async fn run_app(
    app: &str,
    config: WorkerConfig,
    chat: &gatehouse_chat::ChatConfig,
    trust: Trust,
    admin: Option<AdminServer>,
    token: CancellationToken,
) -> Result<()> {
    check_trust(app, trust)?;
    match app {
        "chat" => {
            let worker = gatehouse_chat::ChatWorker::open(chat.clone())
                .await
                .context("starting the chat app")?;
            run_worker(worker, config, admin, token).await
        }
        "echo" => run_worker(gatehouse_apps::echo::Echo, config, admin, token).await,
        "relay" => run_worker(gatehouse_apps::relay::Relay, config, admin, token).await,
        "api" => {
            tracing::warn!("the api app lets every client act on every other; use it for tests and diagnostics only");
            run_worker(gatehouse_apps::api::Api, config, admin, token).await
        }
        "webhook" => {
            bail!("the webhook app runs as a worker of its own: gatehouse worker --app webhook --url http://…")
        }
        other => bail!(
            "unknown app {other:?}; built-in apps: chat, webhook, {}",
            gatehouse_apps::APP_NAMES.join(", ")
        ),
    }
}

async fn run_worker<W: Worker>(
    worker: W,
    config: WorkerConfig,
    admin: Option<AdminServer>,
    token: CancellationToken,
) -> Result<()> {
    let runtime = WorkerRuntime::new(config, worker);
    let admin = crate::admin::serve(admin, vec![runtime.admin_hooks()], token.clone());
    runtime.run(token).await?;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    Ok(())
}
