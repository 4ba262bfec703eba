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
