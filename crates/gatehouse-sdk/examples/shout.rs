//! The README's worker: everyone in the lobby hears everyone else, in capitals.
//!
//! Clients connect to `ws://GATEWAY/ws?name=ann`; each text frame becomes `ANN: TEXT` for every
//! other client in the lobby, on whichever gateway.

use gatehouse_sdk::{Context, Frame, HandlerResult, Handshake, Reject, Worker, WorkerConfig, WorkerRuntime};

struct Shout;

impl Worker for Shout {
    async fn on_handshake(&self, ctx: &Context, handshake: &Handshake) -> Result<(), Reject> {
        let name = handshake
            .query_param("name")
            .ok_or(Reject::new(400, "?name= is required"))?;
        let unavailable = |e: gatehouse_sdk::ApiError| Reject::new(503, e.to_string());
        ctx.bind_uid(&name).await.map_err(unavailable)?;
        ctx.join_group("lobby").await.map_err(unavailable)?;
        Ok(())
    }

    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        let name = ctx.uid().unwrap_or_default();
        let line = format!("{name}: {}", frame.as_text().unwrap_or_default()).to_uppercase();
        ctx.cluster()
            .send_to_group("lobby", &Frame::text(line), &[ctx.client_id()])
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), gatehouse_sdk::ApiError> {
    // GATEHOUSE_REGISTRY (default 127.0.0.1:7000) and GATEHOUSE_CLUSTER_SECRET.
    let config = WorkerConfig::from_env("shout")?;
    // Until SIGINT or SIGTERM, then drains: handlers finish, clients move to other workers.
    WorkerRuntime::new(config, Shout).run_until_signal().await
}
