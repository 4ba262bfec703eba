//! `relay`: the seed's own example, used to compare with GatewayWorker.
//!
//! - `{"type":"login","uid":U}` binds the connection to U and answers
//!   `{"type":"login_ok","uid":U}` once the bind is complete.
//! - `{"type":"join","group":G}` joins group G and answers `{"type":"join_ok","group":G}`.
//! - Any other JSON object with a `"to":U` field goes unchanged to uid U; with a `"group":G`
//!   field (and no `"to"`), unchanged to every member of G; with `"type":"broadcast"`, unchanged
//!   to every client.
//! - Anything else is answered with `{"type":"error","message":…}`.
//!
//! No storage: this measures the cluster's routing, not a database.

use gatehouse_sdk::{Context, Frame, HandlerResult, Worker};
use serde::Deserialize;

/// The relay app.
pub struct Relay;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    uid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    to: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    group: Option<std::borrow::Cow<'a, str>>,
}

fn error(message: &str) -> Frame {
    Frame::json(&serde_json::json!({"type": "error", "message": message}))
}

impl Worker for Relay {
    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        let Some(text) = frame.as_text() else {
            ctx.reply(error("relay expects json text frames")).await?;
            return Ok(());
        };
        let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(text) else {
            ctx.reply(error("malformed json")).await?;
            return Ok(());
        };
        let cluster = ctx.cluster();
        match (envelope.kind, envelope.to, envelope.group) {
            (Some("login"), _, _) => {
                let Some(uid) = envelope.uid else {
                    ctx.reply(error("login needs a uid")).await?;
                    return Ok(());
                };
                match cluster.bind_uid(ctx.client_id(), &uid).await {
                    Ok(()) => {
                        ctx.reply(Frame::json(&serde_json::json!({"type": "login_ok", "uid": uid})))
                            .await?
                    }
                    Err(e) => ctx.reply(error(&e.to_string())).await?,
                }
            }
            (Some("join"), _, Some(group)) => match cluster.join_group(ctx.client_id(), &group).await {
                Ok(()) => {
                    ctx.reply(Frame::json(&serde_json::json!({"type": "join_ok", "group": group})))
                        .await?
                }
                Err(e) => ctx.reply(error(&e.to_string())).await?,
            },
            (_, Some(to), _) => {
                if let Err(e) = cluster.send_to_uid(&to, &frame, &[]).await {
                    ctx.reply(error(&e.to_string())).await?;
                }
            }
            (_, None, Some(group)) => {
                if let Err(e) = cluster.send_to_group(&group, &frame, &[]).await {
                    ctx.reply(error(&e.to_string())).await?;
                }
            }
            (Some("broadcast"), None, None) => {
                if let Err(e) = cluster.send_to_all(&frame, &[]).await {
                    ctx.reply(error(&e.to_string())).await?;
                }
            }
            _ => {
                ctx.reply(error(
                    "expected login, join, or a frame with \"to\", \"group\" or type broadcast",
                ))
                .await?
            }
        }
        Ok(())
    }
}
