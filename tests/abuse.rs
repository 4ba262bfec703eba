//! Hostile clients and broken cluster members against a real cluster: each test reproduces an
//! attack or a failure that used to hurt other clients (or the whole gateway), and checks that
//! now only the offender is refused — with a documented status or close code and a counter —
//! while everyone else is served. The limits are in docs/security.md.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use gatehouse_testkit::client::Refusal;
use gatehouse_testkit::cluster::metric;
use gatehouse_testkit::{ApiClient, Cluster, WsClient};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The gateway part (first 16 hex digits) of a client id.
fn gateway_of(client_id: &str) -> &str {
    &client_id[..16]
}

/// Sends SIGSTOP or SIGCONT to a process.
fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill {signal} {pid} failed");
    Ok(())
}

/// Polls a gateway metric until `done` holds for it, failing after 20 s.
async fn wait_metric(addr: std::net::SocketAddr, name: &str, done: impl Fn(u64) -> bool) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = metric(addr, name).await?;
        if done(value) {
            return Ok(value);
        }
        ensure!(tokio::time::Instant::now() < deadline, "{name} stuck at {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_gateway_among_live_ones_costs_them_no_send() -> Result<()> {
    // A long lease keeps the dead gateway in every routing table for the whole test.
    let mut cluster = Cluster::builder()
        .lease(Duration::from_secs(60))
        .gateways(3)
        .workers("api", 1)
        .start()
        .await?;
    // The doomed gateway's client binds and joins first, so the dead gateway comes first in
    // the routing table's entries for the uid and the group.
    let mut doomed = ApiClient::connect(&cluster.ws_url(1)).await?;
    let mut live = vec![
        ApiClient::connect(&cluster.ws_url(0)).await?,
        ApiClient::connect(&cluster.ws_url(2)).await?,
    ];
    for client in std::iter::once(&mut doomed).chain(live.iter_mut()) {
        client.ok("bind_uid", json!({"uid": "u"})).await?;
        client.ok("join_group", json!({"group": "g"})).await?;
    }
    let dead_gateway = gateway_of(&doomed.client_id).to_owned();
    let mut caller = ApiClient::connect(&cluster.ws_url(0)).await?;
    cluster.gateways[1].kill().await;

    // Until the worker's link notices, sends are queued; then they fail for that gateway only.
    let mut probes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        probes += 1;
        let sent = caller
            .call("send_to_uid", json!({"uid": "u", "data": format!("probe {probes}")}))
            .await?;
        if let Err(error) = sent {
            ensure!(
                error["message"].as_str().unwrap_or_default().contains(&dead_gateway),
                "{error}"
            );
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "sends to a dead gateway never failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (op, target) in [
        ("send_to_uid", json!({"uid": "u", "data": "last uid send"})),
        ("send_to_group", json!({"group": "g", "data": "last group send"})),
        ("send_to_all", json!({"data": "last broadcast"})),
    ] {
        let error = caller
            .call(op, target)
            .await?
            .expect_err("the dead gateway is reported");
        assert_eq!(error["code"], "unavailable", "{op}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(&dead_gateway),
            "{op}: {error}"
        );
    }
    for client in &mut live {
        for n in 1..=probes {
            assert_eq!(client.next_delivery().await?, format!("probe {n}"));
        }
        assert_eq!(client.next_delivery().await?, "last uid send");
        assert_eq!(client.next_delivery().await?, "last group send");
        assert_eq!(client.next_delivery().await?, "last broadcast");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_bigger_than_the_old_write_buffer_reaches_the_client() -> Result<()> {
    let cluster = Cluster::builder().gateways(1).workers("api", 1).start().await?;
    let mut client = ApiClient::connect(&cluster.ws_url(0)).await?;
    // 20 sessions of 15 KB: the answer to all_sessions is ~300 KB, more than the 256 KiB a
    // gateway used to be able to write to one client (it dropped the connection instead).
    let mut others = Vec::new();
    for n in 0..20 {
        let mut other = ApiClient::connect(&cluster.ws_url(0)).await?;
        other
            .ok("set_session", json!({"session": {"blob": "x".repeat(15_000), "n": n}}))
            .await?;
        others.push(other);
    }
    let sessions = client.ok("all_sessions", json!({})).await?;
    assert_eq!(sessions.as_object().unwrap().len(), 21);
    assert_eq!(client.ok("whoami", json!({})).await?["client"], json!(client.client_id));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_events_bigger_than_a_grpc_message_does_not_break_the_worker_link() -> Result<()> {
    let cluster = Cluster::builder().gateways(1).workers("echo", 1).start().await?;
    const CLIENTS: usize = 64;
    const EACH: usize = 16;
    // Every message exactly at the default limit (64 KiB): 512 of them, what a gateway used to
    // pack into one batch, are more than the 32 MiB a gRPC message may carry.
    let payload = "y".repeat(64 * 1024 - 8);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(WsClient::connect(&cluster.ws_url(0)).await?);
    }
    // While the worker is frozen, 1,024 maximal messages (64 MiB) pile up at the gateway: more
    // than one gRPC message may carry, so the gateway must cut them into several batches.
    let worker = cluster.workers[0].pid().expect("worker running");
    signal(worker, "-STOP")?;
    let frozen = async {
        for (i, client) in clients.iter_mut().enumerate() {
            for n in 0..EACH {
                client.send_text(format!("{i:03}:{n:03}:{payload}")).await?;
            }
        }
        let gateway = cluster.gateways[0].addr("ws");
        wait_metric(gateway, "gatehouse_gateway_messages_in_total", |n| {
            n >= (CLIENTS * EACH) as u64
        })
        .await
    }
    .await;
    signal(worker, "-CONT")?;
    frozen?;
    for (i, client) in clients.iter_mut().enumerate() {
        for n in 0..EACH {
            let echoed = client.recv_text().await?;
            assert!(
                echoed.starts_with(&format!("{i:03}:{n:03}:")),
                "client {i} expected message {n}, got {}",
                &echoed[..20]
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_with_oversized_forwarded_headers_is_refused_with_431() -> Result<()> {
    let cluster = Cluster::builder().gateways(1).workers("api", 1).start().await?;
    let url = cluster.ws_url(0);
    let big = "c=".to_owned() + &"x".repeat(20_000);
    match WsClient::try_connect_with_headers(&url, &[("cookie", &big)]).await? {
        Err(Refusal::Http(431, _)) => {}
        other => bail!(
            "a 20 KB cookie should be refused with 431, got {:?}",
            other.map(|_| "accepted")
        ),
    }
    // Headers that are not forwarded cost nothing: the same bulk under another name is fine.
    let accepted = WsClient::try_connect_with_headers(&url, &[("x-junk", &big)]).await?;
    assert!(accepted.is_ok(), "a header that is not forwarded does not count");
    let gateway = cluster.gateways[0].addr("ws");
    assert_eq!(
        metric(gateway, "gatehouse_gateway_refused_handshake_too_large_total").await?,
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_is_read_slower_then_closed_with_1008_and_others_are_served() -> Result<()> {
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        .gateway_args(&[
            "--message-rate",
            "20",
            "--message-burst",
            "20",
            "--rate-limit-close-after",
            "1s",
        ])
        .start()
        .await?;
    let mut flooder = WsClient::connect(&cluster.ws_url(0)).await?;
    for n in 0..400 {
        flooder.send_text(format!("flood {n}")).await?;
    }
    let mut polite = WsClient::connect(&cluster.ws_url(0)).await?;
    let (code, reason) = flooder.expect_close_frame().await?;
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded"));
    for n in 0..10 {
        polite.send_text(format!("polite {n}")).await?;
        assert_eq!(polite.recv_text().await?, format!("polite {n}"));
    }
    let gateway = cluster.gateways[0].addr("ws");
    assert_eq!(metric(gateway, "gatehouse_gateway_rate_limit_closed_total").await?, 1);
    assert!(metric(gateway, "gatehouse_gateway_rate_limited_total").await? > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped_with_429_and_a_full_gateway_answers_503() -> Result<()> {
    let cluster = Cluster::builder()
        .gateways(2)
        .workers("echo", 1)
        .gateway_args(&["--max-connections-per-ip", "3", "--max-connections", "3"])
        .start()
        .await?;
    let url = cluster.ws_url(0);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(WsClient::connect(&url).await?);
    }
    match WsClient::try_connect(&url).await? {
        Err(Refusal::Http(status, _)) => assert!(status == 429 || status == 503, "got {status}"),
        Ok(_) => bail!("a fourth connection from one address was accepted"),
        Err(other) => bail!("unexpected {other:?}"),
    }
    // A place is given back when a connection goes.
    held.pop().unwrap().close().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match WsClient::try_connect(&url).await? {
            Ok(client) => {
                held.push(client);
                break;
            }
            Err(refusal) => ensure!(tokio::time::Instant::now() < deadline, "never readmitted: {refusal:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The metrics request is a connection from the same address too: make room for it.
    for client in held {
        client.close().await?;
    }
    let gateway = cluster.gateways[0].addr("ws");
    let refused = wait_metric(gateway, "gatehouse_gateway_refused_per_ip_total", |_| true).await?
        + metric(gateway, "gatehouse_gateway_refused_gateway_full_total").await?;
    assert!(refused >= 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gateway_refuses_new_websockets_with_503() -> Result<()> {
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        .gateway_args(&["--max-connections", "2"])
        .start()
        .await?;
    let url = cluster.ws_url(0);
    let _a = WsClient::connect(&url).await?;
    let _b = WsClient::connect(&url).await?;
    match WsClient::try_connect(&url).await? {
        Err(Refusal::Http(503, body)) => assert!(body.contains("gateway full"), "{body}"),
        other => bail!("expected 503, got {:?}", other.map(|_| "accepted")),
    }
    let gateway = cluster.gateways[0].addr("ws");
    assert_eq!(
        metric(gateway, "gatehouse_gateway_refused_gateway_full_total").await?,
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_dropped_after_the_header_timeout() -> Result<()> {
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        .gateway_args(&["--header-read-timeout", "500ms"])
        .start()
        .await?;
    let gateway = cluster.gateways[0].addr("ws");
    let mut slow = tokio::net::TcpStream::connect(gateway).await?;
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await?;
    // One header byte every 100 ms, for at most 10 s: the gateway must hang up long before.
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let closed = loop {
        tokio::select! {
            // End of stream, an error, or a response (408): the gateway let go either way.
            _ = slow.read(&mut buf) => break true,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if slow.write_all(b"X").await.is_err() {
                    break true;
                }
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
    };
    assert!(closed, "a trickling client held its connection for 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "dropped only after {:?}",
        started.elapsed()
    );
    wait_metric(gateway, "gatehouse_gateway_header_read_timeouts_total", |n| n >= 1).await?;
    // Meanwhile a normal client is served.
    let mut client = WsClient::connect(&cluster.ws_url(0)).await?;
    client.send_text("hello").await?;
    assert_eq!(client.recv_text().await?, "hello");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_waiting_for_a_worker_are_capped_with_503() -> Result<()> {
    let cluster = Cluster::builder()
        .lease(Duration::from_secs(60))
        .gateways(1)
        .workers("echo", 1)
        .gateway_args(&["--max-pending-handshakes", "2"])
        .start()
        .await?;
    let url = cluster.ws_url(0);
    let gateway = cluster.gateways[0].addr("ws");
    let worker = cluster.workers[0].pid().expect("worker running");
    signal(worker, "-STOP")?;
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { WsClient::try_connect(&url).await })
        })
        .collect();
    let refused = async {
        wait_metric(gateway, "gatehouse_gateway_pending_handshakes", |n| n == 2).await?;
        WsClient::try_connect(&url).await
    }
    .await;
    signal(worker, "-CONT")?;
    match refused? {
        Err(Refusal::Http(503, body)) => assert!(body.contains("too many handshakes"), "{body}"),
        other => bail!("expected 503, got {:?}", other.map(|_| "accepted")),
    }
    for handshake in waiting {
        assert!(
            handshake.await??.is_ok(),
            "the waiting handshakes complete once the worker is back"
        );
    }
    Ok(())
}

#[tokio::test]
async fn relay_and_api_refuse_to_start_without_an_explicit_opt_in() -> Result<()> {
    let bin = gatehouse_testkit::process::gatehouse_bin();
    for app in ["relay", "api"] {
        let mut child = tokio::process::Command::new(&bin)
            .args([
                "worker",
                "--app",
                app,
                "--registry",
                "127.0.0.1:9",
                "--cluster-secret",
                "s",
            ])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("the {app} worker kept running without --allow-unauthenticated"))??;
        assert!(!status.success());
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).await?;
        assert!(stderr.contains("--allow-unauthenticated"), "{app}: {stderr}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_warns_then_closes_with_the_applications_code() -> Result<()> {
    let cluster = Cluster::builder().gateways(1).workers("api", 1).start().await?;
    let mut client = ApiClient::connect(&cluster.ws_url(0)).await?;
    let refused = client
        .call("set_deadline", json!({"in_ms": 1000, "code": 1005, "reason": "x"}))
        .await?
        .expect_err("1005 is never sent");
    assert_eq!(refused["code"], "bad_request");
    client
        .ok(
            "set_deadline",
            json!({"in_ms": 1500, "warn_before_ms": 1000, "data": "expiring soon", "code": 4001, "reason": "token expired"}),
        )
        .await?;
    assert_eq!(client.next_delivery().await?, "expiring soon");
    let (code, reason) = client.ws.expect_close_frame().await?;
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    let gateway = cluster.gateways[0].addr("ws");
    assert_eq!(metric(gateway, "gatehouse_gateway_deadlines_closed_total").await?, 1);

    // A refreshed (replaced) deadline does not fire at the old time; a cleared one never.
    let mut other = ApiClient::connect(&cluster.ws_url(0)).await?;
    other.ok("set_deadline", json!({"in_ms": 300, "code": 4001})).await?;
    other.ok("set_deadline", json!({})).await?;
    // Closing oneself: the answer would come after the close, so none is awaited.
    other
        .ws
        .send_json(&json!({"id": 99, "op": "close_client_with", "code": 4000, "reason": "bye"}))
        .await?;
    assert_eq!(other.ws.expect_close_frame().await?, (4000, "bye".to_owned()));
    assert_eq!(metric(gateway, "gatehouse_gateway_deadlines_closed_total").await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_per_connection_and_session_sizes_are_bounded() -> Result<()> {
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("api", 1)
        .gateway_args(&["--max-groups-per-connection", "3", "--max-session-bytes", "1000"])
        .start()
        .await?;
    let mut client = ApiClient::connect(&cluster.ws_url(0)).await?;
    for group in ["a", "b", "c"] {
        client.ok("join_group", json!({"group": group})).await?;
    }
    let refused = client
        .call("join_group", json!({"group": "d"}))
        .await?
        .expect_err("a fourth group");
    assert_eq!(refused["code"], "too_many_requests", "{refused}");
    let refused = client
        .call("set_session", json!({"session": {"blob": "z".repeat(2000)}}))
        .await?
        .expect_err("a 2 KB session");
    assert_eq!(refused["code"], "bad_request", "{refused}");
    assert_eq!(client.ok("whoami", json!({})).await?["client"], json!(client.client_id));
    Ok(())
}
