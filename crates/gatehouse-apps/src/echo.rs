//! `echo`: every client frame goes back to its sender unchanged (text stays text, binary stays
//! binary).

use gatehouse_sdk::{Context, Frame, HandlerResult, Worker};

/// The echo app.
pub struct Echo;

impl Worker for Echo {
    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        ctx.reply(frame).await?;
        Ok(())
    }
}
