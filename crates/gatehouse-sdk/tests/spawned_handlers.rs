//! `WorkerConfig::spawn_handlers`: a handler that holds its thread (as a long computation does)
//! does not hold up other clients of the same gateway, and one client's events still run one
//! at a time, in order. An in-process worker against real registry and gateway processes.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::Result;
use gatehouse_sdk::{
    CancellationToken, ClusterSecret, Context, Frame, HandlerResult, Worker, WorkerConfig, WorkerRuntime,
};
use gatehouse_testkit::{Cluster, WsClient};

/// `busy` holds its thread until the test lets it go; anything else is answered at once.
struct Busy {
    release: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl Worker for Busy {
    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        let text = frame.as_text().unwrap_or_default().to_owned();
        if text.starts_with("busy") {
            // Holds the thread, as a computation would: nothing else can run on it meanwhile.
            let _ = self
                .release
                .lock()
                .expect("release lock")
                .recv_timeout(Duration::from_secs(20));
        }
        ctx.reply(Frame::text(format!("done {text}"))).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_that_holds_its_thread_does_not_hold_up_other_clients() -> Result<()> {
    let cluster = Cluster::builder()
        .gateways(1)
        .gateway_args(&["--app", "busy"])
        .start()
        .await?;
    let (release, released) = mpsc::channel();
    let mut config = WorkerConfig::new(
        vec![cluster.registry_list()],
        ClusterSecret::new(gatehouse_testkit::TEST_SECRET)?,
        "busy",
    );
    config.spawn_handlers = true;
    let worker = Busy {
        release: Arc::new(Mutex::new(released)),
    };
    let stop = CancellationToken::new();
    let running = tokio::spawn(WorkerRuntime::new(config, worker).run(stop.clone()));
    cluster.wait_workers(1).await?;

    let mut ann = WsClient::connect(&cluster.ws_url(0)).await?;
    let mut ben = WsClient::connect(&cluster.ws_url(0)).await?;
    ann.send_text("busy 1").await?;
    ann.send_text("after 2").await?;
    // On the link's own task, ben's handler could not run until ann's let go: this would
    // never be answered (the test lets ann's handler go only after it).
    ben.send_text("ping").await?;
    assert_eq!(ben.recv_text().await?, "done ping");
    release.send(())?;
    assert_eq!(ann.recv_text().await?, "done busy 1");
    assert_eq!(
        ann.recv_text().await?,
        "done after 2",
        "one client's events stay in order"
    );

    stop.cancel();
    running.await??;
    Ok(())
}
