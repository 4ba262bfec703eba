//! What an operator relies on, against real processes: every role's admin listener, and a
//! gateway that drains instead of dropping its clients when it is stopped.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use gatehouse_testkit::cluster::{http_get, metric};
use gatehouse_testkit::{Cluster, WsClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_serves_health_readiness_and_metrics_on_its_admin_listener() -> Result<()> {
    let cluster = Cluster::builder().gateways(1).workers("echo", 1).start().await?;
    let mut client = WsClient::connect(&cluster.ws_url(0)).await?;
    client.send_text("hello").await?;
    assert_eq!(client.recv_text().await?, "hello");

    let roles = [
        (&cluster.registries[0], "registry", "gatehouse_registry_members"),
        (&cluster.gateways[0], "gateway", "gatehouse_gateway_connections"),
        (&cluster.workers[0], "worker", "gatehouse_worker_events_total"),
    ];
    for (process, role, family) in roles {
        let admin = process.addr("admin");
        assert_eq!(http_get(admin, "/healthz").await?.0, 200, "{role} /healthz");
        let (status, body) = http_get(admin, "/readyz").await?;
        assert_eq!(status, 200, "{role} /readyz: {body}");
        assert!(
            body.contains(&format!("\"{role}\":{{")),
            "{role} /readyz names the role: {body}"
        );
        let (status, metrics) = http_get(admin, "/metrics").await?;
        assert_eq!(status, 200);
        assert!(metrics.contains(family), "{role} /metrics lacks {family}:\n{metrics}");
    }
    let worker = cluster.workers[0].addr("admin");
    assert!(
        metric(worker, "gatehouse_worker_events_total").await? >= 2,
        "the handshake and the message"
    );
    let (_, metrics) = http_get(worker, "/metrics").await?;
    assert!(metrics.contains("gatehouse_worker_handler_seconds_bucket"), "{metrics}");

    // The gateway's latency histograms sample one event in 16 and one delivery burst in 16:
    // 40 more echoes fill both. Acks reach the gateway after the echoes: wait for them.
    for i in 0..40 {
        client.send_text(format!("m{i}")).await?;
        assert_eq!(client.recv_text().await?, format!("m{i}"));
    }
    let gateway = cluster.gateways[0].addr("admin");
    for histogram in [
        "gatehouse_gateway_event_ack_seconds_count",
        "gatehouse_gateway_delivery_seconds_count",
    ] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while metric(gateway, histogram).await.unwrap_or(0) < 1 {
            ensure!(tokio::time::Instant::now() < deadline, "{histogram} recorded nothing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The public port serves clients, not operators.
    assert_eq!(http_get(cluster.gateways[0].addr("ws"), "/metrics").await?.0, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_turns_unready_and_closes_its_clients_gradually_with_1012() -> Result<()> {
    const CLIENTS: usize = 10;
    let mut cluster = Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        .gateway_args(&["--drain", "2s"])
        .start()
        .await?;
    let url = cluster.ws_url(0);
    let admin = cluster.gateways[0].addr("admin");
    let mut waiting = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = WsClient::connect(&url).await?;
        waiting.push(tokio::spawn(async move {
            let (code, reason) = client.expect_close_frame().await?;
            anyhow::Ok((code, reason, Instant::now()))
        }));
    }
    let pid = cluster.gateways[0].pid().expect("gateway running");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;

    // Unready at once, and new handshakes are refused while the drain lasts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if http_get(admin, "/readyz").await?.0 == 503 {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match WsClient::try_connect(&url).await? {
        Err(gatehouse_testkit::client::Refusal::Http(503, body)) => assert!(body.contains("draining"), "{body}"),
        Ok(_) => anyhow::bail!("a draining gateway accepted a new client"),
        Err(other) => anyhow::bail!("unexpected {other:?}"),
    }

    let mut closed = Vec::new();
    for task in waiting {
        let (code, reason, at) = task.await??;
        assert_eq!(code, 1012, "service restart: {reason}");
        closed.push(at);
    }
    closed.sort();
    let spread = *closed.last().unwrap() - closed[0];
    // The gateway spaces ten closes over its 2 s drain (about 200 ms apart).
    assert!(
        spread > Duration::from_millis(500),
        "all clients closed within {spread:?}: a herd"
    );
    assert_eq!(
        cluster.gateways[0].terminate().await?,
        Some(0),
        "a clean exit after the drain"
    );
    Ok(())
}

/// Runs `gatehouse bench run ARGS` against `urls` and returns its JSON report.
async fn load(urls: &[String], args: &[&str]) -> Result<serde_json::Value> {
    let mut command = tokio::process::Command::new(gatehouse_testkit::process::gatehouse_bin());
    command.args(["bench", "run", "-q"]);
    for url in urls {
        command.args(["--url", url]);
    }
    let output = command.args(args).output().await?;
    ensure!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    Ok(serde_json::from_str(stdout.lines().last().unwrap_or_default())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_hands_its_clients_over_with_nothing_lost_while_a_registry_is_down() -> Result<()> {
    // The reproduction of the loss: two registries, relay traffic at 2,500 msg/s, one registry
    // killed, then a worker stopped with SIGTERM in the middle of the traffic.
    let mut cluster = Cluster::builder()
        .registries(2)
        .gateways(2)
        .workers("relay", 2)
        .start()
        .await?;
    let urls = vec![cluster.ws_url(0), cluster.ws_url(1)];
    let traffic = tokio::spawn(async move {
        load(
            &urls,
            &[
                "--scenario",
                "dm",
                "--clients",
                "100",
                "--mode",
                "open",
                "--rate",
                "2500",
                "--duration",
                "10",
                "--warmup",
                "1",
                "--drain",
                "5",
            ],
        )
        .await
    });
    // Sleeps only place the failures inside the traffic; the assertions are on the counts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.kill_registry(0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cluster.workers[0].terminate().await?,
        Some(0),
        "the worker drained and left cleanly"
    );
    let report = traffic.await??;
    assert!(report["sent"].as_u64().unwrap_or(0) > 20_000, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(
        report["duplicated"], 0,
        "a drain hands over without handling anything twice: {report}"
    );
    let mut handed_over = 0;
    for gateway in &cluster.gateways {
        handed_over += metric(gateway.addr("admin"), "gatehouse_gateway_clients_handed_over_total").await?;
    }
    assert!(handed_over > 0, "the stopped worker's clients moved to the other one");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_handler_failed_transiently_is_handled_again_by_another_worker() -> Result<()> {
    let cluster = Cluster::builder().gateways(1).workers("api", 2).start().await?;
    let mut client = gatehouse_testkit::ApiClient::connect(&cluster.ws_url(0)).await?;
    let first = client.ok("whoami", serde_json::json!({})).await?["worker"].clone();
    // The client's worker fails the request with `unavailable`: it must not count as handled.
    let answer = client
        .ok("fail_on_worker", serde_json::json!({ "worker": first }))
        .await?;
    assert_ne!(answer["worker"], first, "the other worker handled it");
    let admin = cluster.gateways[0].addr("admin");
    assert_eq!(metric(admin, "gatehouse_gateway_events_nacked_total").await?, 1);
    // The client stays with the worker that handled it.
    assert_eq!(
        client.ok("whoami", serde_json::json!({})).await?["worker"],
        answer["worker"]
    );
    let (mut given_back, mut redelivered) = (0, 0);
    for worker in &cluster.workers {
        given_back += metric(worker.addr("admin"), "gatehouse_worker_events_given_back_total").await?;
        redelivered += metric(worker.addr("admin"), "gatehouse_worker_events_redelivered_total").await?;
    }
    assert_eq!(given_back, 1);
    assert_eq!(
        redelivered, 1,
        "the worker that handled it again knows it was a redelivery; nothing else was"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_one_gateway_drains_the_other_still_signs_in_users_it_held() -> Result<()> {
    let database = gatehouse_testkit::ChatDatabase::sqlite();
    let url = database.url();
    let mut cluster = Cluster::builder()
        .gateways(2)
        .workers("chat", 1)
        .gateway_args(&["--insecure-dev-auth", "--drain", "20s"])
        .worker_args(&["--database-url", url.as_str(), "--insecure-dev-auth"])
        .start()
        .await?;
    // ann has a device on the gateway that is about to drain; the per-uid connection count of
    // her next sign-in asks that gateway. Two clients: the drain closes the second one 10 s
    // after the first, and the gateway stays up meanwhile.
    let _held = gatehouse_testkit::ChatClient::connect_as(&cluster.ws_url(1), "ann").await?;
    let _other = gatehouse_testkit::ChatClient::connect_as(&cluster.ws_url(1), "cat").await?;
    let pid = cluster.gateways[1].pid().expect("gateway running");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let admin = cluster.gateways[1].addr("admin");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while http_get(admin, "/readyz").await?.0 != 503 {
        ensure!(tokio::time::Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for uid in ["ann", "ben"] {
        match gatehouse_testkit::ChatClient::try_connect(&format!("{}?uid={uid}", cluster.ws_url(0))).await? {
            Ok(_) => {}
            Err(refusal) => anyhow::bail!(
                "{uid} was refused by the gateway that is not draining: {refusal:?}\n{}",
                cluster.workers[0].log_text()
            ),
        }
    }
    cluster.gateways[1].kill().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_a_users_device_does_not_stop_her_signing_in_elsewhere() -> Result<()> {
    let database = gatehouse_testkit::ChatDatabase::sqlite();
    let url = database.url();
    let mut cluster = Cluster::builder()
        .gateways(2)
        .workers("chat", 1)
        .gateway_args(&["--insecure-dev-auth"])
        .worker_args(&["--database-url", url.as_str(), "--insecure-dev-auth"])
        .start()
        .await?;
    let _held = gatehouse_testkit::ChatClient::connect_as(&cluster.ws_url(1), "ann").await?;
    // Until its lease runs out (6 s) the dead gateway still holds ann in the routing table, and
    // the per-uid connection count of her next sign-in would ask it.
    cluster.gateways[1].kill().await;
    let again = gatehouse_testkit::ChatClient::try_connect(&format!("{}?uid=ann", cluster.ws_url(0))).await?;
    if let Err(refusal) = again {
        anyhow::bail!("ann was refused while a dead gateway was still listed: {refusal:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_gateway_the_client_and_its_uid() -> Result<()> {
    let database = gatehouse_testkit::ChatDatabase::sqlite();
    let url = database.url();
    let mut cluster = Cluster::builder()
        .gateways(1)
        .workers("chat", 1)
        .gateway_args(&[
            "--insecure-dev-auth",
            "--log-format",
            "json",
            "--max-message-bytes",
            "1024",
        ])
        .worker_args(&["--database-url", url.as_str(), "--insecure-dev-auth"])
        .start()
        .await?;
    let mut ann = gatehouse_testkit::ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    // An oversized frame: the gateway closes with 1009 and logs why, in the client's span.
    ann.ws.send_text("x".repeat(4096)).await?;
    assert_eq!(ann.ws.expect_close().await?, 1009);
    cluster.gateways[0]
        .wait_for_log("oversized", Duration::from_secs(5))
        .await?;
    let log = cluster.gateways[0].log_text();
    let line = log.lines().find(|l| l.contains("oversized")).expect("waited for it");
    let line: serde_json::Value = serde_json::from_str(line)?;
    let span = &line["span"];
    assert_eq!(span["uid"], "ann", "{line}");
    assert!(span["client"].as_str().is_some_and(|c| !c.is_empty()), "{line}");
    assert!(span["gateway"].as_str().is_some_and(|g| !g.is_empty()), "{line}");
    Ok(())
}
