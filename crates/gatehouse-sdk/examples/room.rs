//! A complete custom worker: a chat room in a few dozen lines.
//!
//! Clients connect to `ws://GATEWAY/ws?name=ann&room=lobby`; every text frame they send is
//! relayed as `ann: text` to everyone else in the room, on whichever gateway. Run it against a
//! cluster (see the README):
//!
//! ```sh
//! GATEHOUSE_REGISTRY=127.0.0.1:7000 GATEHOUSE_CLUSTER_SECRET=change-me \
//!     cargo run -p gatehouse-sdk --example room
//! ```

use gatehouse_sdk::{
    ClusterSecret, Context, Frame, HandlerResult, Handshake, Reject, Worker, WorkerConfig, WorkerRuntime,
};
use serde_json::json;

struct Room;

impl Worker for Room {
    async fn on_handshake(&self, ctx: &Context, handshake: &Handshake) -> Result<(), Reject> {
        let name = handshake
            .query_param("name")
            .ok_or_else(|| Reject::new(400, "?name= is required"))?;
        let room = handshake.query_param("room").unwrap_or_else(|| "lobby".to_owned());
        let cluster = ctx.cluster();
        let fail = |e: gatehouse_sdk::ApiError| Reject::new(503, e.to_string());
        ctx.bind_uid(&name).await.map_err(fail)?;
        cluster.join_group(ctx.client_id(), &room).await.map_err(fail)?;
        let session = json!({"room": room}).as_object().cloned().unwrap_or_default();
        cluster.set_session(ctx.client_id(), &session).await.map_err(fail)?;
        Ok(())
    }

    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        let cluster = ctx.cluster();
        let session = cluster.get_session(ctx.client_id()).await?.unwrap_or_default();
        let room = session.get("room").and_then(|r| r.as_str()).unwrap_or("lobby");
        let line = format!(
            "{}: {}",
            ctx.uid().as_deref().unwrap_or("?"),
            frame.as_text().unwrap_or("(binary)")
        );
        cluster
            .send_to_group(room, &Frame::text(line), &[ctx.client_id()])
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    gatehouse_core::telemetry::init(gatehouse_core::telemetry::LogFormat::Plain);
    let registries = std::env::var("GATEHOUSE_REGISTRY").unwrap_or_else(|_| "127.0.0.1:7000".into());
    let secret = ClusterSecret::new(&std::env::var("GATEHOUSE_CLUSTER_SECRET")?)?;
    let config = WorkerConfig::new(registries.split(',').map(str::to_owned).collect(), secret, "room");
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    WorkerRuntime::new(config, Room).run(token).await?;
    Ok(())
}
