//! Failure behaviour on real processes: killed workers, killed and restarted registries,
//! a wrong cluster secret, oversized frames.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use gatehouse_testkit::cluster::metric;
use gatehouse_testkit::{ApiClient, Cluster, TEST_SECRET, WsClient};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_keeps_text_and_binary_and_per_client_order() -> Result<()> {
    // 2,000 frames at once: far over the default per-client rate, which is not what this test
    // is about.
    let cluster = Cluster::builder()
        .gateways(2)
        .workers("echo", 2)
        .gateway_args(&["--message-rate", "0"])
        .start()
        .await?;
    let mut client = WsClient::connect(&cluster.ws_url(1)).await?;
    client.send_binary(vec![0, 159, 146, 150]).await?;
    assert_eq!(
        client.recv_within(Duration::from_secs(5)).await?.unwrap(),
        Message::binary(vec![0, 159, 146, 150])
    );
    for i in 0..2000 {
        client.send_text(format!("{i}")).await?;
    }
    for i in 0..2000 {
        assert_eq!(client.recv_text().await?, format!("{i}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_loses_no_event_and_keeps_clients_connected() -> Result<()> {
    let mut cluster = Cluster::builder().gateways(2).workers("echo", 2).start().await?;
    // 16 clients: rendezvous hashing gives each worker some of them (all 16 on one worker has
    // odds of 1 in 65,536), so the kill below really fails clients over.
    const CLIENTS: usize = 16;
    const MESSAGES: usize = 300;
    let echoed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for index in 0..CLIENTS {
        let url = cluster.ws_url(index % 2);
        let echoed = echoed.clone();
        tasks.push(tokio::spawn(async move {
            let client = WsClient::connect(&url).await?;
            let (mut sink, mut stream) = client.split();
            let sender = tokio::spawn(async move {
                for n in 0..MESSAGES {
                    sink.send_text(format!("{n}")).await?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                anyhow::Ok(sink)
            });
            // Every number must come back; duplicates are allowed (at-least-once), but the first
            // sighting of each number must be in order.
            let mut next_new = 0usize;
            let mut seen: HashMap<usize, usize> = HashMap::new();
            while next_new < MESSAGES {
                let text = stream.recv_text().await?;
                let n: usize = text.parse()?;
                *seen.entry(n).or_default() += 1;
                if n == next_new {
                    next_new += 1;
                    echoed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    assert!(n < next_new, "client {index}: {n} arrived before {next_new}");
                }
            }
            sender.await??;
            anyhow::Ok(seen.values().filter(|c| **c > 1).count())
        }));
    }
    // Kill mid-stream: once a quarter of the messages have come back.
    wait_until(|| echoed.load(std::sync::atomic::Ordering::Relaxed) >= CLIENTS * MESSAGES / 4).await?;
    cluster.workers[0].kill().await;
    let mut duplicates = 0;
    for task in tasks {
        duplicates += task.await??;
    }
    eprintln!("duplicates after the kill: {duplicates}");
    // The failover happened: the dead worker's clients moved to the other worker.
    let mut failed_over = 0;
    for gateway in &cluster.gateways {
        failed_over += metric(gateway.addr("admin"), "gatehouse_gateway_clients_failed_over_total").await?;
    }
    assert!(failed_over > 0, "no client moved: the killed worker served none");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registry_rebuilds_routing_and_delivery_continues() -> Result<()> {
    let mut cluster = Cluster::builder().gateways(2).workers("api", 2).start().await?;
    let mut alice = ApiClient::connect(&cluster.ws_url(0)).await?;
    let mut bob = ApiClient::connect(&cluster.ws_url(1)).await?;
    alice.ok("bind_uid", json!({"uid": "alice"})).await?;

    cluster.kill_registry(0).await;
    // With the registry gone, sends still arrive (workers fall back to every gateway).
    bob.ok("send_to_uid", json!({"uid": "alice", "data": "during the outage"}))
        .await?;
    assert_eq!(alice.next_delivery().await?, "during the outage");

    cluster.restart_registry(0).await?;
    cluster.registries[0]
        .wait_for_log("routing table complete", Duration::from_secs(10))
        .await?;
    cluster.registries[0]
        .wait_for_log("gateway routes resynchronised", Duration::from_secs(10))
        .await?;
    for round in 0..20 {
        bob.ok("send_to_uid", json!({"uid": "alice", "data": format!("after {round}")}))
            .await?;
        assert_eq!(alice.next_delivery().await?, format!("after {round}"));
    }
    // New binds complete and route after the restart.
    let mut carol = ApiClient::connect(&cluster.ws_url(1)).await?;
    carol.ok("bind_uid", json!({"uid": "carol"})).await?;
    alice
        .ok("send_to_uid", json!({"uid": "carol", "data": "hello carol"}))
        .await?;
    assert_eq!(carol.next_delivery().await?, "hello carol");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_registry_takes_over_when_the_first_dies() -> Result<()> {
    let mut cluster = Cluster::builder()
        .registries(2)
        .gateways(2)
        .workers("api", 2)
        .start()
        .await?;
    let mut alice = ApiClient::connect(&cluster.ws_url(0)).await?;
    let mut bob = ApiClient::connect(&cluster.ws_url(1)).await?;
    alice.ok("bind_uid", json!({"uid": "alice"})).await?;
    cluster.kill_registry(0).await;
    for round in 0..50 {
        let mut fresh = ApiClient::connect(&cluster.ws_url(round % 2)).await?;
        let uid = format!("after-kill-{round}");
        fresh.ok("bind_uid", json!({"uid": uid})).await?;
        bob.ok("send_to_uid", json!({"uid": uid, "data": "routed"})).await?;
        assert_eq!(fresh.next_delivery().await?, "routed");
    }
    bob.ok("send_to_uid", json!({"uid": "alice", "data": "still here"}))
        .await?;
    assert_eq!(alice.next_delivery().await?, "still here");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_call_without_the_secret_is_refused_and_logged() -> Result<()> {
    let mut cluster = Cluster::builder().gateways(1).start().await?;
    // A worker with the wrong secret is refused by the registry, and both sides say why.
    let registry = cluster.registry_list();
    let mut intruder = gatehouse_testkit::Process::start(
        "intruder",
        vec![
            "worker".into(),
            "--registry".into(),
            registry,
            "--app".into(),
            "echo".into(),
            "--cluster-secret".into(),
            "wrong-secret".into(),
            "--admin-listen".into(),
            "off".into(),
        ],
        &[],
    )
    .await?;
    intruder
        .wait_for_log("refused our cluster secret", Duration::from_secs(10))
        .await?;
    cluster.registries[0]
        .wait_for_log("refused internal call: wrong cluster secret", Duration::from_secs(10))
        .await?;
    // A raw gRPC call to the gateway with no secret at all is refused too.
    let gateway = cluster.gateways[0].addr("grpc");
    let refused = grpc_without_secret(gateway).await;
    assert!(refused, "the gateway accepted a link without the secret");
    cluster.gateways[0]
        .wait_for_log("refused internal call: no cluster secret", Duration::from_secs(10))
        .await?;
    assert!(
        !cluster.gateways[0].log_text().contains(TEST_SECRET),
        "the secret leaked into a log"
    );
    Ok(())
}

/// Opens a gRPC `Link` to the gateway with no secret and reports whether it was refused.
async fn grpc_without_secret(addr: std::net::SocketAddr) -> bool {
    use gatehouse_proto::v1::gateway_client::GatewayClient;
    use gatehouse_proto::v1::{LinkHello, LinkUp};
    let Ok(mut client) = GatewayClient::connect(format!("http://{addr}")).await else {
        return false;
    };
    let hello = LinkUp {
        hello: Some(LinkHello {
            member_id: 1,
            handles_events: true,
            name: "nosecret".into(),
            expect_gateway: 0,
            app: String::new(),
        }),
        ..Default::default()
    };
    match client.link(futures_util::stream::iter(vec![hello])).await {
        Err(status) => status.code() == gatehouse_proto::tonic::Code::Unauthenticated,
        Ok(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_its_sender() -> Result<()> {
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        .gateway_args(&["--max-message-bytes", "1024"])
        .start()
        .await?;
    let mut bystander = WsClient::connect(&cluster.ws_url(0)).await?;
    let mut offender = WsClient::connect(&cluster.ws_url(0)).await?;
    offender.send_text("x".repeat(4096)).await?;
    assert_eq!(offender.expect_close().await?, 1009);
    bystander.send_text("still fine").await?;
    assert_eq!(bystander.recv_text().await?, "still fine");
    let mut newcomer = WsClient::connect(&cluster.ws_url(0)).await?;
    newcomer.send_text("x".repeat(1000)).await?;
    assert_eq!(newcomer.recv_text().await?.len(), 1000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_and_counted_without_hurting_others() -> Result<()> {
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("api", 1)
        // The flooder sends 20 MB as fast as it can: this test is about the receiving side,
        // so the sender's own rate limits are lifted.
        .gateway_args(&["--send-queue", "4", "--message-rate", "0", "--byte-rate", "0"])
        .start()
        .await?;
    let mut sleeper = ApiClient::connect(&cluster.ws_url(0)).await?;
    let mut flooder = ApiClient::connect(&cluster.ws_url(0)).await?;
    let target = sleeper.client_id.clone();
    let chunk = "z".repeat(50_000);
    // The sleeper reads nothing while 20 MB are pushed at it.
    for _ in 0..400 {
        flooder
            .ok("send_to_client", json!({"client": target, "data": chunk}))
            .await?;
    }
    let (_, metrics) = gatehouse_testkit::cluster::http_get(cluster.gateways[0].addr("admin"), "/metrics").await?;
    assert!(
        metrics.contains("gatehouse_gateway_slow_consumers_closed_total 1"),
        "{metrics}"
    );
    // Its buffers are full, so the close frame may not get through: a close or a reset.
    match sleeper.ws.expect_close().await {
        Ok(code) => assert!(code == 1013 || code == 1006, "closed with {code}"),
        Err(error) => assert!(error.to_string().contains("reset"), "{error}"),
    }
    // Everyone else is served as before.
    assert_eq!(
        flooder.ok("whoami", json!({})).await?["client"],
        json!(flooder.client_id)
    );
    Ok(())
}

#[tokio::test]
async fn every_flag_is_documented_with_its_environment_variable() -> Result<()> {
    let bin = gatehouse_testkit::process::gatehouse_bin();
    for (role, flags) in [
        (
            "registry",
            &["--listen", "--lease", "--ack-timeout", "--warmup", "--cluster-secret"][..],
        ),
        (
            "gateway",
            &[
                "--listen",
                "--internal",
                "--advertise",
                "--registry",
                "--max-message-bytes",
                "--send-queue",
                "--ping-interval",
                "--ping-limit",
                "--max-frame-out-bytes",
                "--header-read-timeout",
                "--max-connections",
                "--max-connections-per-ip",
                "--trusted-proxies",
                "--forward-headers",
                "--message-rate",
                "--byte-rate",
                "--rate-limit-close-after",
                "--admin-listen",
                "--drain",
                "--cluster-secret",
            ][..],
        ),
        (
            "worker",
            &[
                "--registry",
                "--app",
                "--allow-unauthenticated",
                "--admin-listen",
                "--cluster-secret",
            ][..],
        ),
        ("dev", &["--listen", "--app"][..]),
    ] {
        let output = std::process::Command::new(&bin).args([role, "--help"]).output()?;
        let help = String::from_utf8(output.stdout)?;
        for flag in flags {
            assert!(help.contains(flag), "{role} --help lacks {flag}:\n{help}");
        }
        assert!(
            help.contains("[env: GATEHOUSE_"),
            "{role} --help names no environment variables"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_dropped() -> Result<()> {
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("api", 1)
        .gateway_args(&["--ping-interval", "200ms", "--ping-limit", "2"])
        .start()
        .await?;
    let mut observer = ApiClient::connect(&cluster.ws_url(0)).await?;
    // A raw TCP client that completes the handshake and then never reads again: it can answer
    // no ping.
    let silent = WsClient::connect(&cluster.ws_url(0)).await?;
    let silent_count = observer.ok("all_client_count", json!({})).await?;
    assert_eq!(silent_count, json!(2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // The observer keeps talking (its client library answers pings); the silent one is dropped.
    while observer.ok("all_client_count", json!({})).await? != json!(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent client was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = gatehouse_testkit::cluster::http_get(cluster.gateways[0].addr("admin"), "/metrics").await?;
    assert!(metrics.contains("gatehouse_gateway_ping_timeouts_total 1"), "{metrics}");
    drop(silent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_heart_beating_is_dropped_within_its_lease() -> Result<()> {
    let mut cluster = Cluster::builder().gateways(1).workers("echo", 1).start().await?;
    let pid = cluster.workers[0].pid().expect("worker running").to_string();
    // Freeze the worker: its connections stay open, but it sends nothing (the test lease is 2s).
    std::process::Command::new("kill").args(["-STOP", &pid]).status()?;
    let frozen = std::time::Instant::now();
    let outcome = cluster.registries[0]
        .wait_for_log("member lease expired", Duration::from_secs(6))
        .await;
    std::process::Command::new("kill").args(["-CONT", &pid]).status()?;
    outcome?;
    let waited = frozen.elapsed();
    assert!(waited < Duration::from_secs(4), "dropped only after {waited:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_frozen_worker_are_served_by_another_within_the_lease() -> Result<()> {
    let cluster = Cluster::builder().gateways(1).workers("echo", 2).start().await?;
    let mut clients = Vec::new();
    // 16 clients: some of them are the frozen worker's (see the worker-kill test).
    for _ in 0..16 {
        clients.push(WsClient::connect(&cluster.ws_url(0)).await?);
    }
    // Freeze a worker: no crash, no closed socket, it just stops (the test lease is 2s).
    let pid = cluster.workers[0].pid().expect("worker running").to_string();
    std::process::Command::new("kill").args(["-STOP", &pid]).status()?;
    let frozen = std::time::Instant::now();
    let mut outcome = Ok(());
    for (i, client) in clients.iter_mut().enumerate() {
        client.send_text(format!("still there {i}")).await?;
        match client.recv_within(Duration::from_secs(6)).await {
            Ok(Ok(Message::Text(text))) if text.as_str() == format!("still there {i}") => {}
            other => {
                outcome = Err(anyhow::anyhow!("client {i}: {other:?}"));
                break;
            }
        }
    }
    let waited = frozen.elapsed();
    std::process::Command::new("kill").args(["-CONT", &pid]).status()?;
    outcome?;
    // Well before HTTP/2 keep-alive (10 s) would have noticed.
    assert!(waited < Duration::from_secs(5), "served again only after {waited:?}");
    let gateway = cluster.gateways[0].addr("admin");
    assert!(
        metric(gateway, "gatehouse_gateway_clients_failed_over_total").await? > 0,
        "no client moved: the frozen worker served none"
    );
    Ok(())
}

/// Polls `condition` until it holds, failing after 20 seconds.
async fn wait_until(condition: impl Fn() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 20s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
