//! `Context::release_order`: a handler that gives its client's order up lets the client's next
//! events run before it ends, and still nothing is lost: those events are acknowledged only
//! after it, so a worker that leaves with it unfinished leaves them all to the next worker.
//! An in-process worker against real registry and gateway processes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use gatehouse_sdk::{
    CancellationToken, ClusterSecret, Context, Frame, HandlerResult, Worker, WorkerConfig, WorkerRuntime,
};
use gatehouse_testkit::{Cluster, WsClient};
use tokio::sync::Notify;

/// What a handler does with a text starting with `slow`.
enum Slow {
    /// Gives its order up, then waits for the notification before it answers.
    Until(Arc<Notify>),
    /// Gives its order up and never answers.
    Forever,
    /// Answers at once, like any other text.
    No,
}

/// Answers `done <text>` to every text, a slow one as `slow` says.
struct Releasing {
    slow: Slow,
    /// Every text a handler started for, in start order.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Worker for Releasing {
    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        let text = frame.as_text().unwrap_or_default().to_owned();
        self.seen.lock().expect("seen lock").push(text.clone());
        if text.starts_with("slow") {
            match &self.slow {
                Slow::Until(go) => {
                    ctx.release_order();
                    go.notified().await;
                }
                Slow::Forever => {
                    ctx.release_order();
                    std::future::pending::<()>().await;
                }
                Slow::No => {}
            }
        }
        ctx.reply(Frame::text(format!("done {text}"))).await?;
        Ok(())
    }
}

fn config(cluster: &Cluster) -> Result<WorkerConfig> {
    let mut config = WorkerConfig::new(
        vec![cluster.registry_list()],
        ClusterSecret::new(gatehouse_testkit::TEST_SECRET)?,
        "releasing",
    );
    config.drain_timeout = Duration::from_millis(300);
    Ok(config)
}

async fn cluster() -> Result<Cluster> {
    Cluster::builder()
        .gateways(1)
        .gateway_args(&["--app", "releasing"])
        .start()
        .await
}

/// An in-process [`Releasing`] worker of the test's cluster.
struct Running {
    /// What its handlers started for.
    seen: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), gatehouse_sdk::ApiError>>,
}

impl Running {
    async fn start(cluster: &Cluster, slow: Slow) -> Result<Running> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let worker = Releasing {
            slow,
            seen: seen.clone(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(WorkerRuntime::new(config(cluster)?, worker).run(stop.clone()));
        Ok(Running { seen, stop, task })
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// Stops it as SIGTERM would: it drains (for `config`'s short drain timeout) and leaves.
    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

#[tokio::test]
async fn a_handler_that_gives_its_order_up_lets_the_clients_next_message_run_before_it_ends() -> Result<()> {
    let cluster = cluster().await?;
    let go = Arc::new(Notify::new());
    let worker = Running::start(&cluster, Slow::Until(go.clone())).await?;
    cluster.wait_workers(1).await?;

    let mut client = WsClient::connect(&cluster.ws_url(0)).await?;
    client.send_text("slow 1").await?;
    client.send_text("fast 2").await?;
    // Held in order, "fast 2" would wait for "slow 1", which waits for the test: this would
    // never come.
    assert_eq!(client.recv_text().await?, "done fast 2");
    go.notify_one();
    assert_eq!(client.recv_text().await?, "done slow 1");
    client.send_text("fast 3").await?;
    assert_eq!(client.recv_text().await?, "done fast 3", "the client goes on as usual");
    assert_eq!(worker.seen(), ["slow 1", "fast 2", "fast 3"]);
    worker.stop().await
}

#[tokio::test]
async fn events_that_ran_after_an_unfinished_released_one_go_to_the_next_worker_with_it() -> Result<()> {
    let cluster = cluster().await?;
    let first = Running::start(&cluster, Slow::Forever).await?;
    cluster.wait_workers(1).await?;

    let mut client = WsClient::connect(&cluster.ws_url(0)).await?;
    client.send_text("slow 1").await?;
    client.send_text("fast 2").await?;
    assert_eq!(client.recv_text().await?, "done fast 2", "2 ran on the first worker");
    // The first worker leaves with "slow 1" unfinished. Had "fast 2" been acknowledged when
    // its handler ended, that cumulative acknowledgement would have covered "slow 1" too, and
    // the gateway would have nothing left to send again.
    assert_eq!(first.seen(), ["slow 1", "fast 2"]);
    first.stop().await?;
    cluster.wait_workers(0).await?;

    let next = Running::start(&cluster, Slow::No).await?;
    assert_eq!(
        client.recv_text().await?,
        "done slow 1",
        "1 handled again, by the next worker"
    );
    assert_eq!(
        client.recv_text().await?,
        "done fast 2",
        "2 came again with it: its ack had waited for 1's"
    );
    assert_eq!(next.seen(), ["slow 1", "fast 2"], "in order");
    next.stop().await
}
