//! A chat room: join with a name, talk, and everyone hears when someone leaves — whichever
//! worker handles the close, because the close event carries the client's last uid, session
//! and groups. No state in the worker: run as many as you like.
//!
//! Clients connect to `ws://GATEWAY/ws?name=ann&room=lobby` and get
//! `{"type":"joined","name":"ann","room":"lobby"}`; every text frame they send reaches the
//! others in the room as `{"type":"said","name":"ann","text":"…"}`, and when a connection
//! closes the others get `{"type":"left","name":"ann","room":"lobby"}`.
//!
//! ```sh
//! GATEHOUSE_REGISTRY=127.0.0.1:7000 GATEHOUSE_CLUSTER_SECRET=change-me \
//!     cargo run -p gatehouse-sdk --example room
//! ```

use gatehouse_sdk::serde_json::{Value, json};
use gatehouse_sdk::{
    CloseInfo, Context, Frame, HandlerResult, Handshake, Reject, Session, Worker, WorkerConfig, WorkerRuntime,
};

struct Room;

impl Worker for Room {
    async fn on_handshake(&self, ctx: &Context, handshake: &Handshake) -> Result<(), Reject> {
        let name = handshake
            .query_param("name")
            .ok_or(Reject::new(400, "?name= is required"))?;
        let room = handshake.query_param("room").unwrap_or_else(|| "lobby".to_owned());
        let unavailable = |e: gatehouse_sdk::ApiError| Reject::new(503, e.to_string());
        ctx.bind_uid(&name).await.map_err(unavailable)?;
        ctx.join_group(&room).await.map_err(unavailable)?;
        // The session travels with every later event of this client: no round trip to read it.
        let mut session = Session::new();
        session.insert("room".into(), room.into());
        ctx.set_session(&session).await.map_err(unavailable)?;
        Ok(())
    }

    async fn on_connect(&self, ctx: &Context) -> HandlerResult {
        let room = ctx.session_value("room").unwrap_or(Value::Null);
        let joined = json!({"type": "joined", "name": ctx.uid().as_deref(), "room": room});
        ctx.reply(Frame::json(&joined)).await?;
        Ok(())
    }

    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        let Some(Value::String(room)) = ctx.session_value("room") else {
            return Ok(());
        };
        let said = json!({"type": "said", "name": ctx.uid().as_deref(), "text": frame.as_text()});
        ctx.cluster()
            .send_to_group(&room, &Frame::json(&said), &[ctx.client_id()])
            .await?;
        Ok(())
    }

    async fn on_close(&self, ctx: &Context, close: &CloseInfo) -> HandlerResult {
        // The client is already out of its rooms; `close.groups` says which they were.
        for room in &close.groups {
            let left = json!({"type": "left", "name": ctx.uid().as_deref(), "room": room});
            ctx.cluster().send_to_group(room, &Frame::json(&left), &[]).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), gatehouse_sdk::ApiError> {
    WorkerRuntime::new(WorkerConfig::from_env("room")?, Room)
        .run_until_signal()
        .await
}
