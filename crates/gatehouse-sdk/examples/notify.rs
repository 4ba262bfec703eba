//! A presence-aware notification service: users see when the people they follow come and go,
//! and a notification to someone who is offline is answered at once instead of vanishing.
//!
//! Clients connect to `ws://GATEWAY/ws?uid=ann&follow=ben,cat` (a real service would take the
//! uid from a token, see the chat app). They get `{"type":"presence","online":[…]}` for the
//! people they follow, then `{"type":"online","uid":…}` / `{"type":"offline","uid":…}` as those
//! come and go (a user with several devices is online while any of them is). A frame
//! `{"to":"ben","text":"…"}` reaches every device of ben as `{"type":"notice","from":"ann",…}`,
//! or is answered `{"type":"undelivered","to":"ben"}` when ben is offline.
//!
//! ```sh
//! GATEHOUSE_REGISTRY=127.0.0.1:7000 GATEHOUSE_CLUSTER_SECRET=change-me \
//!     cargo run -p gatehouse-sdk --example notify
//! ```

use gatehouse_sdk::serde_json::{self, Value, json};
use gatehouse_sdk::{CloseInfo, Context, Frame, HandlerResult, Handshake, Reject, Worker, WorkerConfig, WorkerRuntime};

struct Notify;

/// The group of the people following `uid`: they hear about its presence.
fn followers_of(uid: &str) -> String {
    format!("followers:{uid}")
}

impl Worker for Notify {
    async fn on_handshake(&self, ctx: &Context, handshake: &Handshake) -> Result<(), Reject> {
        let uid = handshake
            .query_param("uid")
            .ok_or(Reject::new(400, "?uid= is required"))?;
        let follow = handshake.query_param("follow").unwrap_or_default();
        let unavailable = |e: gatehouse_sdk::ApiError| Reject::new(503, e.to_string());
        for followed in follow.split(',').filter(|f| !f.is_empty()).take(100) {
            ctx.join_group(&followers_of(followed)).await.map_err(unavailable)?;
        }
        let mut session = gatehouse_sdk::Session::new();
        session.insert("follow".into(), follow.into());
        ctx.set_session(&session).await.map_err(unavailable)?;
        // Was this user already online (another device) before this connection counts?
        let already = ctx.cluster().is_uid_online(&uid).await.map_err(unavailable)?;
        ctx.bind_uid(&uid).await.map_err(unavailable)?;
        if !already {
            let online = Frame::json(&json!({"type": "online", "uid": uid}));
            ctx.cluster()
                .send_to_group(&followers_of(&uid), &online, &[])
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn on_connect(&self, ctx: &Context) -> HandlerResult {
        let follow = ctx.session_value("follow").unwrap_or_default();
        let follows: Vec<&str> = follow
            .as_str()
            .unwrap_or_default()
            .split(',')
            .filter(|f| !f.is_empty())
            .collect();
        let mut online: Vec<String> = ctx.cluster().online_uids(&follows).await?.into_iter().collect();
        online.sort();
        ctx.reply(Frame::json(&json!({"type": "presence", "online": online})))
            .await?;
        Ok(())
    }

    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        let notice: Value = serde_json::from_slice(frame.data()).unwrap_or_default();
        let (Some(to), Some(text)) = (notice["to"].as_str(), notice["text"].as_str()) else {
            let error = json!({"type": "error", "message": "expected {\"to\": uid, \"text\": text}"});
            ctx.reply(Frame::json(&error)).await?;
            return Ok(());
        };
        // Presence comes from this worker's routing table: no round trip.
        if !ctx.cluster().is_uid_online(to).await? {
            ctx.reply(Frame::json(&json!({"type": "undelivered", "to": to})))
                .await?;
            return Ok(());
        }
        let push = json!({"type": "notice", "from": ctx.uid().as_deref(), "text": text});
        ctx.cluster().send_to_uid(to, &Frame::json(&push), &[]).await?;
        Ok(())
    }

    async fn on_close(&self, ctx: &Context, _close: &CloseInfo) -> HandlerResult {
        let Some(uid) = ctx.uid() else {
            return Ok(());
        };
        // Offline once the last device is gone (this connection no longer counts).
        if ctx.cluster().client_ids_by_uid(&uid).await?.is_empty() {
            let offline = Frame::json(&json!({"type": "offline", "uid": &*uid}));
            ctx.cluster().send_to_group(&followers_of(&uid), &offline, &[]).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), gatehouse_sdk::ApiError> {
    WorkerRuntime::new(WorkerConfig::from_env("notify")?, Notify)
        .run_until_signal()
        .await
}
