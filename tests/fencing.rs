//! A gateway that may have been dropped from the cluster fences itself, so no client stays
//! connected while workers no longer send to it (chat on PostgreSQL, real processes).
//!
//! The scenario of the report that found the hole: a reader on gateway 2 reads pushes and syncs
//! only when it (re)connects; a writer on gateway 1 sends 300 direct messages at 20/s; gateway 2
//! is cut off for 10 s, longer than its 6 s lease. Before fencing, the reader kept its
//! connection and ended with about 210 of the 300 messages.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use gatehouse_testkit::cluster::metric;
use gatehouse_testkit::{ChatClient, ChatDatabase, Cluster, Netns, Process};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

const MESSAGES: u64 = 300;
const LEASE: Duration = Duration::from_secs(6);
const CUT_OFF: Duration = Duration::from_secs(10);

/// What the reader has: the seqs of the one conversation it reads, and the close codes of the
/// connections it lost.
#[derive(Default)]
struct Received {
    seqs: BTreeSet<u64>,
    closes: Vec<u16>,
}

impl Received {
    /// The cursor to sync from: the end of the gap-free prefix (pushes after a gap do not count).
    fn cursor(&self) -> u64 {
        let mut cursor = 0;
        while self.seqs.contains(&(cursor + 1)) {
            cursor += 1;
        }
        cursor
    }
}

/// Connects to the first gateway that accepts the reader, syncs, then reads pushes until the
/// connection ends; over and over until `stop`.
async fn reader(
    urls: Vec<String>,
    received: Arc<Mutex<Received>>,
    progress: watch::Sender<u64>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let conversation = "d:reader:writer";
    while !*stop.borrow() {
        let mut client = None;
        for url in &urls {
            if let Ok(Ok(connected)) = ChatClient::try_connect(&format!("{url}?uid=reader")).await {
                client = Some(connected);
                break;
            }
        }
        let Some(mut client) = client else {
            // Every gateway refused (the one cut off is fenced, the other may be busy): a
            // client's retry back-off.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let cursor = received.lock().unwrap().cursor();
        let mut cursors = Map::new();
        cursors.insert(conversation.to_owned(), json!(cursor));
        for message in client.sync_all(&mut cursors).await? {
            record(&received, &progress, &message);
        }
        loop {
            let mut stopped = stop.clone();
            let frame = tokio::select! {
                _ = stopped.wait_for(|s| *s) => return Ok(()),
                frame = client.ws.recv_within(Duration::from_secs(60)) => frame?,
            };
            match frame {
                Ok(tokio_tungstenite::tungstenite::Message::Text(text)) => {
                    let frame: Value = serde_json::from_str(&text)?;
                    if frame["type"] == "message" {
                        record(&received, &progress, &frame);
                    }
                }
                Ok(_) => {}
                Err(gatehouse_testkit::client::Refusal::Closed(code)) => {
                    received.lock().unwrap().closes.push(code);
                    break;
                }
                Err(other) => bail!("reader: {other:?}"),
            }
        }
    }
    Ok(())
}

fn record(received: &Mutex<Received>, progress: &watch::Sender<u64>, message: &Value) {
    if let Some(seq) = message["seq"].as_u64() {
        let mut received = received.lock().unwrap();
        received.seqs.insert(seq);
        progress.send_replace(received.seqs.len() as u64);
    }
}

/// Sends MESSAGES direct messages to the reader at 20/s, each acked.
async fn writer(url: String) -> Result<()> {
    let mut client = ChatClient::connect_as(&url, "writer").await?;
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    for n in 1..=MESSAGES {
        pace.tick().await;
        let ack = client.send_to("reader", &format!("m{n}"), &format!("c{n}")).await?;
        ensure!(ack["type"] == "ack", "message {n} not acked: {ack}");
    }
    Ok(())
}

/// Runs the scenario with `cut_off` isolating gateway 2 for CUT_OFF once the writer is under way,
/// and checks that the reader ends with every message because gateway 2 fenced itself.
async fn reader_ends_with_every_message_when_gateway_2_is_cut_off<F, Fut>(
    cluster: &mut Cluster,
    reader_urls: Vec<String>,
    cut_off: F,
) -> Result<()>
where
    F: FnOnce(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let received = Arc::new(Mutex::new(Received::default()));
    let (progress, mut progressed) = watch::channel(0u64);
    let (stop, stopped) = watch::channel(false);
    let reading = tokio::spawn(reader(reader_urls, received.clone(), progress, stopped));
    // The reader is connected (to gateway 2) before anything is sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(cluster.gateways[1].addr("admin"), "gatehouse_gateway_connections").await? < 1 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the reader never connected to gateway 2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let writing = tokio::spawn(writer(cluster.ws_url(0)));
    progressed.wait_for(|n| *n >= 20).await?;
    cut_off(CUT_OFF).await?;
    writing.await??;

    // Every message was acked; the reader must end up with all of them, by pushes or by the
    // sync of a reconnect. Without fencing it would wait here for ever: bounded by a deadline.
    let all = tokio::time::timeout(Duration::from_secs(30), progressed.wait_for(|n| *n >= MESSAGES)).await;
    stop.send_replace(true);
    reading.await??;
    let (seqs, closes) = {
        let received = received.lock().unwrap();
        (received.seqs.clone(), received.closes.clone())
    };
    ensure!(
        all.is_ok(),
        "the reader ended with {} of {MESSAGES} messages (closes: {closes:?})",
        seqs.len()
    );
    assert_eq!(seqs, (1..=MESSAGES).collect(), "every seq from 1 to 300");
    assert!(
        closes.contains(&1012),
        "gateway 2 closed the reader with 1012 (closes: {closes:?})"
    );
    assert!(metric(cluster.gateways[1].addr("admin"), "gatehouse_gateway_fenced_total").await? >= 1);
    let log = cluster.gateways[1].log_text();
    assert!(log.contains("lease lapsed"), "gateway 2 says why it fenced:\n{log}");
    Ok(())
}

mod needs_postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gateway_paused_past_its_lease_fences_itself_and_its_clients_catch_up() -> Result<()> {
        let database = ChatDatabase::postgres();
        let url = database.url();
        let mut cluster = Cluster::builder()
            .gateways(2)
            .workers("chat", 1)
            .lease(LEASE)
            .gateway_args(&["--insecure-dev-auth"])
            .worker_args(&["--database-url", url.as_str(), "--insecure-dev-auth"])
            .start()
            .await?;
        let pid = cluster.gateways[1].pid().expect("gateway 2 runs").to_string();
        let readers = vec![cluster.ws_url(1), cluster.ws_url(0)];
        reader_ends_with_every_message_when_gateway_2_is_cut_off(&mut cluster, readers, |pause| async move {
            std::process::Command::new("kill").args(["-STOP", &pid]).status()?;
            tokio::time::sleep(pause).await;
            std::process::Command::new("kill").args(["-CONT", &pid]).status()?;
            Ok(())
        })
        .await
    }
}

mod needs_root_and_postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gateway_partitioned_from_every_registry_past_its_lease_fences_itself_and_its_clients_catch_up()
    -> Result<()> {
        // Gateway 2 runs in its own network namespace, joined to the host by a veth pair; setting
        // the pair's link down cuts it off from the registry, the worker and its clients alike,
        // with every process still running.
        let netns = Netns::create()?;
        let database = ChatDatabase::postgres();
        let url = database.url();
        let mut cluster = Cluster::builder()
            .registry_host(netns.host)
            .gateways(1)
            .workers("chat", 1)
            .lease(LEASE)
            .gateway_args(&["--insecure-dev-auth"])
            .worker_args(&["--database-url", url.as_str(), "--insecure-dev-auth"])
            .start()
            .await?;
        let inside = |port: u16| std::net::SocketAddr::new(netns.inside, port).to_string();
        let gateway = Process::start_in_netns(
            netns.name(),
            "gateway-1",
            [
                "gateway",
                "--listen",
                &inside(0),
                "--internal",
                &inside(0),
                "--admin-listen",
                &inside(0),
                "--registry",
                &cluster.registry_list(),
                "--insecure-plaintext",
                "--insecure-dev-auth",
                "--drain",
                "1s",
            ]
            .into_iter()
            .map(str::to_owned)
            .chain(cluster.credential_args().iter().cloned())
            .collect(),
            &["ws", "grpc", "admin"],
        )
        .await?;
        cluster.gateways.push(gateway);
        cluster.wait_workers(1).await?;
        let readers = vec![cluster.ws_url(1), cluster.ws_url(0)];
        let netns = &netns;
        reader_ends_with_every_message_when_gateway_2_is_cut_off(&mut cluster, readers, |cut| async move {
            netns.set_link(false)?;
            tokio::time::sleep(cut).await;
            netns.set_link(true)?;
            Ok(())
        })
        .await
    }
}
