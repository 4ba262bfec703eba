//! Sessions travel with events: a handler reads the session without a round trip, sees what
//! the client's previous handler wrote even when the client sends faster than the writes
//! complete, and `on_close` still gets the client's last uid, session and groups. An
//! in-process worker against real registry and gateway processes.

use std::sync::Arc;

use anyhow::Result;
use gatehouse_sdk::serde_json::{Value, json};
use gatehouse_sdk::{
    CancellationToken, CloseInfo, ClusterSecret, Context, Frame, HandlerResult, Session, Worker, WorkerConfig,
    WorkerRuntime,
};
use gatehouse_testkit::{Cluster, WsClient};
use tokio::sync::mpsc;

/// Counts each client's messages in its session; reports closes to the test.
struct Counter {
    closes: mpsc::UnboundedSender<(Option<Arc<str>>, Session, Vec<String>)>,
}

impl Worker for Counter {
    async fn on_connect(&self, ctx: &Context) -> HandlerResult {
        ctx.bind_uid("ann").await?;
        ctx.join_group("g1").await?;
        ctx.join_group("g2").await?;
        Ok(())
    }

    async fn on_message(&self, ctx: &Context, _frame: Frame) -> HandlerResult {
        let n = ctx.session_value("n").and_then(|n| n.as_u64()).unwrap_or(0) + 1;
        let mut update = Session::new();
        update.insert("n".into(), n.into());
        ctx.update_session(&update).await?;
        ctx.reply(Frame::text(n.to_string())).await?;
        Ok(())
    }

    async fn on_close(&self, ctx: &Context, close: &CloseInfo) -> HandlerResult {
        let mut groups = close.groups.clone();
        groups.sort();
        let _ = self.closes.send((ctx.uid(), ctx.session(), groups));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_read_the_session_their_predecessors_wrote_and_on_close_gets_the_last_state() -> Result<()> {
    let cluster = Cluster::builder().gateways(1).start().await?;
    let (closes, mut closed) = mpsc::unbounded_channel();
    let config = WorkerConfig::new(
        vec![cluster.registry_list()],
        ClusterSecret::new(gatehouse_testkit::TEST_SECRET)?,
        "counter",
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(WorkerRuntime::new(config, Counter { closes }).run(stop.clone()));
    cluster.wait_workers(1).await?;

    let mut client = WsClient::connect(&cluster.ws_url(0)).await?;
    // Sent back to back: most are read by the gateway before the previous write completed.
    for _ in 0..50 {
        client.send_text("+1").await?;
    }
    for n in 1..=50 {
        assert_eq!(
            client.recv_text().await?,
            n.to_string(),
            "every handler saw the previous write"
        );
    }
    client.close().await?;
    let (uid, session, groups) = closed.recv().await.expect("on_close ran");
    assert_eq!(uid.as_deref(), Some("ann"));
    assert_eq!(Value::Object(session), json!({"n": 50}));
    assert_eq!(groups, ["g1", "g2"]);

    stop.cancel();
    running.await??;
    Ok(())
}
