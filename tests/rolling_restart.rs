//! The acceptance test of zero-loss rolling restarts: the `docker-compose.yml` topology (chat on
//! PostgreSQL, two registries, two chat workers, two gateways behind HAProxy, mutual TLS, wss://)
//! under steady chat load from `gatehouse bench`, every process stopped with SIGTERM and started
//! again in turn. No acknowledged message may be lost or stored twice, no request may be
//! answered with an error frame, and every client must reconnect and catch up. The send→ack p99 during the restarts is printed next to the one
//! before them (a figure, not an assertion: timing depends on the machine).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gatehouse_testkit::cluster::metric;
use gatehouse_testkit::process::gatehouse_bin;
use gatehouse_testkit::{ChatClient, Compose};
use serde_json::Value;

const JWT_SECRET: &str = "a-rolling-restart-secret-of-32-bytes-or-more";
const VARS: [(&str, &str); 2] = [
    ("GATEHOUSE_JWT_SECRET", JWT_SECRET),
    ("POSTGRES_PASSWORD", "unused-here-the-local-server-trusts-loopback"),
];
/// Chat clients of the load, and the messages per second they send together.
const CLIENTS: usize = 40;
const RATE: &str = "200";
/// Every process, in the order a rolling deploy restarts them.
const ROLLING_ORDER: [&str; 6] = [
    "registry-1",
    "registry-2",
    "worker-1",
    "worker-2",
    "gateway-1",
    "gateway-2",
];

/// Runs `gatehouse bench run` with chat clients that reconnect and catch up, through `url`.
async fn chat_load(url: &str, ca: &Path, prefix: &str, seconds: u32) -> Result<Value> {
    let output = tokio::process::Command::new(gatehouse_bin())
        .args(["bench", "run", "-q", "--scenario", "chat", "--reconnect", "--url", url])
        .arg("--ca")
        .arg(ca)
        .args(["--jwt-secret", JWT_SECRET, "--uid-prefix", prefix, "--peers", "3"])
        .args(["--clients", &CLIENTS.to_string(), "--rate", RATE])
        .args(["--warmup", "2", "--duration", &seconds.to_string(), "--drain", "20"])
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout)?;
    Ok(serde_json::from_str(stdout.lines().last().unwrap_or_default())?)
}

/// Open client connections over both gateways.
async fn connections(compose: &mut Compose) -> Result<u64> {
    let mut open = 0;
    for gateway in ["gateway-1", "gateway-2"] {
        open += metric(compose.admin_addr(gateway)?, "gatehouse_gateway_connections")
            .await
            .unwrap_or(0);
    }
    Ok(open)
}

/// After a gateway restart, waits until HAProxy sends new clients to it again (its health
/// check saw it ready): a probe client connects through HAProxy until one lands there.
async fn wait_in_rotation(compose: &mut Compose, gateway: &str, url: &str) -> Result<()> {
    let admin = compose.admin_addr(gateway)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let token = sign("probe")?;
    loop {
        let probe = ChatClient::connect_tls(&format!("{url}?token={token}"), compose.tls()).await;
        let landed = metric(admin, "gatehouse_gateway_connections").await.unwrap_or(0) > 0;
        drop(probe);
        if landed {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "HAProxy never sent a client to the restarted {gateway}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sign(uid: &str) -> Result<String> {
    let output = std::process::Command::new(gatehouse_bin())
        .args(["token", "--uid", uid])
        .env("GATEHOUSE_JWT_SECRET", JWT_SECRET)
        .output()?;
    ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

mod needs_deploytools_and_haproxy_and_postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restarting_every_process_in_turn_under_chat_load_loses_and_doubles_nothing() -> Result<()> {
        let mut compose = Compose::load(&VARS)?;
        // The compose file's 20 s drain, shortened to keep the test quick.
        for gateway in ["gateway-1", "gateway-2"] {
            compose.override_env(gateway, "GATEHOUSE_DRAIN", Some("2s"));
        }
        compose.up().await?;
        let url = format!("wss://localhost:{}/ws", compose.addr("haproxy", 8443)?.port());
        let ca = compose.tls().file("ca.pem");

        let before = chat_load(&url, &ca, "steady-", 6).await?;
        ensure!(before["lost"] == 0 && before["errors"]["disconnects"] == 0, "{before}");

        let during = tokio::spawn({
            let (url, ca) = (url.clone(), ca.clone());
            async move { chat_load(&url, &ca, "rolling-", 50).await }
        });
        // Restarts begin once every client is connected.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while connections(&mut compose).await? < CLIENTS as u64 {
            ensure!(tokio::time::Instant::now() < deadline, "the load never connected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let started = tokio::time::Instant::now();
        for service in ROLLING_ORDER {
            let code = compose.stop(service).await?;
            assert_eq!(code, Some(0), "{service} did not drain and exit cleanly");
            compose.restart(service).await?;
            if service.starts_with("gateway") {
                wait_in_rotation(&mut compose, service, &url).await?;
            }
            eprintln!("restarted {service} at {:?}", started.elapsed());
        }
        let restarts_took = started.elapsed();
        let during = during.await??;
        eprintln!("rolling restart report: {during}");

        let clients = CLIENTS as u64;
        let reconnect = &during["reconnect"];
        ensure!(during["ready"] == clients, "not every client connected: {during}");
        // Every client was on a gateway that restarted: each one reconnected, and the restarts
        // happened inside the measured window (or fewer would have).
        assert_eq!(reconnect["clients"], clients, "{during}");
        assert_eq!(during["lost"], 0, "acknowledged messages were lost: {during}");
        assert_eq!(
            during["acked"], during["sent"],
            "every message sent was acknowledged: {during}"
        );
        assert_eq!(during["duplicated"], 0, "{during}");
        assert_eq!(during["errors"]["disconnects"], 0, "a client gave up: {during}");
        // An error frame is the server refusing a client's request. Here it would mean a send
        // refused mid-restart (a store or cluster failure the restart caused), or a send answered
        // twice: an ack, then an error for a push that failed after it because the recipient's
        // gateway was leaving. A push that fails after the ack is only logged by the worker (the
        // recipient catches up by seq or pong), so a restart answers every request once, with an ack.
        assert_eq!(
            during["errors"]["error_frames"], 0,
            "a request was answered with an error frame during the restarts: {during}"
        );
        assert!(during["sent"].as_u64().unwrap_or(0) > 1000, "{during}");

        // Stored once: one row per message (sender and the generator's sequence number).
        let db = compose.database().context("the chat database")?;
        let stored = db.query(
            "SELECT count(*) || '|' || count(DISTINCT (sender, split_part(cid, '.', 3))) FROM messages \
         WHERE sender LIKE 'rolling-%'",
        )?;
        let (rows, distinct) = stored.split_once('|').context("two counts")?;
        assert_eq!(rows, distinct, "a message was stored twice");
        assert!(
            rows.parse::<u64>()? >= during["sent"].as_u64().unwrap_or(u64::MAX),
            "{stored} {during}"
        );

        let p99 = |report: &Value| report["ack_latency_us"]["p99"].as_f64().unwrap_or(f64::NAN) / 1000.0;
        println!(
            "rolling restart: {} messages, {} reconnects by {} clients, restarts took {:.1} s; \
         send→ack p99 {:.1} ms before, {:.1} ms during the restarts",
            during["sent"],
            reconnect["reconnects"],
            reconnect["clients"],
            restarts_took.as_secs_f64(),
            p99(&before),
            p99(&during)
        );
        Ok(())
    }
}
