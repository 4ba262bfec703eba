//! Smoke tests of the load generator against real clusters: every scenario runs briefly and
//! must account for every message (correctness of the counts, not speed). The api-publish
//! scenario runs against a real `gatehouse api` process as well.

use anyhow::{Context, Result, ensure};
use gatehouse_testkit::Cluster;
use gatehouse_testkit::api_server::ApiServer;
use gatehouse_testkit::cluster::metric;
use gatehouse_testkit::process::gatehouse_bin;
use serde_json::Value;

/// Runs `gatehouse bench run ARGS` and returns its JSON report.
async fn bench(args: &[&str]) -> Result<Value> {
    let output = tokio::process::Command::new(gatehouse_bin())
        .args([
            "bench",
            "run",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--drain",
            "3",
            "-q",
        ])
        .args(args)
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let line = stdout.lines().last().unwrap_or_default();
    Ok(serde_json::from_str(line)?)
}

fn assert_complete(report: &Value) {
    assert!(report["sent"].as_u64().unwrap_or(0) > 0, "nothing sent: {report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert_eq!(report["delivered"], report["expected"], "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_relay_scenario_accounts_for_every_message() -> Result<()> {
    let cluster = Cluster::builder().gateways(2).workers("relay", 2).start().await?;
    let (a, b) = (cluster.ws_url(0), cluster.ws_url(1));
    let urls = ["--url", a.as_str(), "--url", b.as_str()];
    for scenario in [
        vec!["--scenario", "dm", "--clients", "20", "--mode", "open", "--rate", "500"],
        vec![
            "--scenario",
            "dm",
            "--clients",
            "20",
            "--mode",
            "closed",
            "--inflight",
            "2",
        ],
        vec![
            "--scenario",
            "group",
            "--clients",
            "20",
            "--group-size",
            "10",
            "--senders",
            "2",
            "--rate",
            "100",
        ],
        vec![
            "--scenario",
            "broadcast",
            "--clients",
            "20",
            "--senders",
            "1",
            "--rate",
            "50",
        ],
    ] {
        let report = bench(&[&urls[..], &scenario[..]].concat()).await?;
        assert_complete(&report);
    }
    let idle = bench(&[&urls[..], &["--scenario", "idle", "--clients", "30"][..]].concat()).await?;
    assert_eq!(idle["connect"]["count"], 30, "{idle}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_scenario_stores_and_delivers_every_message() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("chat.db").display());
    let cluster = Cluster::builder()
        .gateways(2)
        .workers("chat", 2)
        .gateway_args(&["--insecure-dev-auth"])
        .worker_args(&["--database-url", &db, "--insecure-dev-auth"])
        .start()
        .await?;
    let (a, b) = (cluster.ws_url(0), cluster.ws_url(1));
    let report = bench(&[
        "--url",
        &a,
        "--url",
        &b,
        "--scenario",
        "chat",
        "--clients",
        "20",
        "--mode",
        "open",
        "--rate",
        "300",
    ])
    .await?;
    assert_complete(&report);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `chat-mix` adds what a live chat sends around each message (a typing event before it, a
/// delivered and a read receipt after each push): every message still arrives once, and the
/// chat worker handles a typing event and receipts for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_mix_scenario_sends_typing_and_receipts_around_every_message() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-chatmix-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("chat.db").display());
    let cluster = Cluster::builder()
        .gateways(2)
        .workers("chat", 1)
        .gateway_args(&["--insecure-dev-auth"])
        .worker_args(&[
            "--database-url",
            &db,
            "--insecure-dev-auth",
            "--chat-typing-rate",
            "0",
            "--chat-request-rate",
            "0",
        ])
        .start()
        .await?;
    let (a, b) = (cluster.ws_url(0), cluster.ws_url(1));
    let mix = [
        "--url",
        &a,
        "--url",
        &b,
        "--scenario",
        "chat-mix",
        "--clients",
        "20",
        "--peers",
        "4",
        "--mode",
        "open",
        "--rate",
        "100",
    ];
    let worker = cluster.workers[0].addr("admin");
    let counts = async || -> Result<(u64, u64)> {
        Ok((
            metric(worker, r#"gatehouse_chat_events_total{kind="typing"}"#)
                .await
                .unwrap_or(0),
            metric(worker, r#"gatehouse_chat_events_total{kind="receipt"}"#)
                .await
                .unwrap_or(0),
        ))
    };
    // A first run opens the conversations: a typing event before a conversation's first
    // message is refused (the sender is not a member yet).
    assert_complete(&bench(&mix).await?);
    let (typing_before, receipts_before) = counts().await?;
    let report = bench(&mix).await?;
    assert_complete(&report);
    let (typing, receipts) = counts().await?;
    let sent = report["sent"].as_u64().unwrap_or(0);
    // The counters also count the run's warm-up, which `sent` does not.
    assert!(
        typing - typing_before >= sent,
        "{} typing events for {sent} messages",
        typing - typing_before
    );
    assert!(
        receipts - receipts_before >= sent,
        "{} receipts for {sent} messages",
        receipts - receipts_before
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_publish_scenario_delivers_every_send_over_http_and_grpc() -> Result<()> {
    // Relay workers bind each client's uid at login; the API process pushes to those uids.
    let cluster = Cluster::builder().gateways(2).workers("relay", 2).start().await?;
    let api = ApiServer::start(&cluster, &[("bench", "publish")], &["--key-rate", "0"]).await?;
    let (a, b) = (cluster.ws_url(0), cluster.ws_url(1));
    let (http, grpc) = (api.url(), format!("http://{}", api.grpc_addr()));
    let key = api.key("bench");
    let api_pid = api.process.pid().context("the api process has no pid")?.to_string();
    for (transport, url) in [("http", &http), ("grpc", &grpc)] {
        for batch in ["1", "8"] {
            let report = bench(&[
                "--url",
                &a,
                "--url",
                &b,
                "--scenario",
                "api-publish",
                "--clients",
                "20",
                "--mode",
                "closed",
                "--inflight",
                "2",
                "--publishers",
                "2",
                "--api-transport",
                transport,
                "--api-url",
                url,
                "--api-key",
                key,
                "--batch",
                batch,
                "--server-pid",
                &api_pid,
            ])
            .await?;
            assert_complete(&report);
            let stats = &report["api"];
            assert_eq!(stats["transport"], transport, "{report}");
            assert_eq!(stats["loops"], 4, "{report}");
            let requests = stats["requests"].as_u64().unwrap_or(0);
            assert!(requests > 0, "{report}");
            let sends = requests * batch.parse::<u64>()?;
            assert_eq!(report["sent"].as_u64(), Some(sends), "{report}");
            assert_eq!(stats["failed_sends"], 0, "{report}");
            assert!(report["server_cpu_us_per_delivered"].as_f64().is_some(), "{report}");
        }
    }
    Ok(())
}

/// `gatehouse bench routing` against a real registry, with real gateways and a real worker
/// attached beside its synthetic members: the load reaches every synthetic subscriber (the tool
/// fails otherwise), every bind and unbind is confirmed, and after the registry is killed and
/// started again on its address, as the tool asks, the whole table comes back and is timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_measurement_loads_binds_and_times_the_table_back_after_a_registry_restart() -> Result<()> {
    use tokio::io::AsyncBufReadExt;

    let mut cluster = Cluster::builder().workers("relay", 1).start().await?;
    let registry = cluster.registries[0].addr("grpc").to_string();
    let registry_pid = cluster.registries[0].pid().context("registry pid")?.to_string();
    let worker_pid = cluster.workers[0].pid().context("worker pid")?.to_string();
    let mut args = vec![
        "bench",
        "routing",
        "--registry",
        &registry,
        "--gateways",
        "4",
        "--uids",
        "2000",
        "--subscribers",
        "2",
        "--bind-rate",
        "200",
        "--bind-seconds",
        "0.5",
        "--resync",
        "--registry-pid",
        &registry_pid,
        "--worker-pid",
        &worker_pid,
    ];
    let credentials: Vec<&str> = cluster.credential_args().iter().map(String::as_str).collect();
    args.extend(credentials);
    let mut tool = tokio::process::Command::new(gatehouse_bin())
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(tool.stdout.take().context("stdout")?).lines();
    let mut report = None;
    while let Some(line) = lines.next_line().await? {
        let event: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
        if event["event"] == "restart-registry" {
            cluster.kill_registry(0).await;
            cluster.restart_registry(0).await?;
        } else {
            report = Some(event);
        }
    }
    let output = tool.wait_with_output().await?;
    ensure!(
        output.status.success(),
        "routing run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = report.context("no report")?;
    assert_eq!(report["uids"], 2000, "{report}");
    let (binds, unbinds) = (report["bind"]["count"].as_u64(), report["unbind"]["count"].as_u64());
    assert_eq!(
        binds,
        Some(52),
        "13 rounds of binds over 4 gateways in 100 timed operations: {report}"
    );
    assert_eq!(unbinds, Some(52), "every bind is unbound again: {report}");
    assert!(report["bytes_per_change"].as_f64() > Some(0.0), "{report}");
    assert!(report["registry_memory"]["after_bytes"].as_u64() > Some(0), "{report}");
    assert_eq!(report["worker_memory"].as_array().map(Vec::len), Some(1), "{report}");
    let resync = &report["resync"];
    assert!(resync["table_seconds"].as_f64() > Some(0.0), "{report}");
    assert!(
        resync["table_seconds"].as_f64() >= resync["gateways_seconds"].as_f64(),
        "{report}"
    );
    Ok(())
}
