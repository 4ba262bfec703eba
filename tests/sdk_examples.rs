//! The SDK's examples run end to end as real processes against a real cluster: the README's
//! worker, a chat room that says who left with two workers (one of them stopped first), a
//! presence-aware notification service, and a backend pushing through the server API.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use gatehouse_testkit::api_server::ApiServer;
use gatehouse_testkit::process::{Process, example_bin};
use gatehouse_testkit::{Cluster, WsClient};
use serde_json::{Value, json};

/// A cluster of one gateway serving `app`, and no workers yet.
async fn cluster_for(app: &str) -> Result<Cluster> {
    Cluster::builder()
        .gateways(1)
        .gateway_args(&["--app", app])
        .start()
        .await
}

/// Starts the SDK example `name` as a worker of `cluster`, configured from the environment as
/// `WorkerConfig::from_env` reads it.
async fn start_example(cluster: &Cluster, name: &str, index: usize) -> Result<Process> {
    let registries = cluster.registry_list();
    let env = [
        ("GATEHOUSE_REGISTRY", registries.as_str()),
        ("GATEHOUSE_CLUSTER_SECRET", gatehouse_testkit::TEST_SECRET),
    ];
    let mut worker = Process::start_program(&format!("{name}-{index}"), &example_bin(name), vec![], &env, &[]).await?;
    worker.wait_for_log("worker started", Duration::from_secs(10)).await?;
    Ok(worker)
}

/// The next JSON frame of `type` `kind`, skipping others.
async fn next_of(client: &mut WsClient, kind: &str) -> Result<Value> {
    loop {
        let frame = client.recv_json().await?;
        if frame["type"] == kind {
            return Ok(frame);
        }
    }
}

#[tokio::test]
async fn the_readme_worker_is_the_shout_example_and_runs() -> Result<()> {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md"))?;
    let example = std::fs::read_to_string(format!("{root}/crates/gatehouse-sdk/examples/shout.rs"))?;
    let block = readme
        .split("```rust,no_run\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .context("README.md has no rust block")?;
    assert!(
        example.ends_with(block),
        "README.md's worker and crates/gatehouse-sdk/examples/shout.rs differ"
    );

    let cluster = cluster_for("shout").await?;
    let mut worker = start_example(&cluster, "shout", 0).await?;
    cluster.wait_workers(1).await?;
    let mut ann = WsClient::connect(&format!("{}?name=ann", cluster.ws_url(0))).await?;
    let mut ben = WsClient::connect(&format!("{}?name=ben", cluster.ws_url(0))).await?;
    ann.send_text("hello there").await?;
    assert_eq!(ben.recv_text().await?, "ANN: HELLO THERE");
    ann.expect_silence(Duration::from_millis(200)).await?;
    let refused = WsClient::try_connect(&cluster.ws_url(0)).await?;
    assert!(refused.is_err(), "a client without ?name= is refused");

    // Stopped as systemd or Kubernetes stops it: it drains and exits cleanly.
    assert_eq!(worker.terminate().await?, Some(0), "{}", worker.log_text());
    assert!(worker.log_text().contains("worker stopped"), "{}", worker.log_text());
    Ok(())
}

#[tokio::test]
async fn everyone_in_the_room_hears_who_left_even_after_a_worker_stopped() -> Result<()> {
    let cluster = cluster_for("room").await?;
    let mut first = start_example(&cluster, "room", 0).await?;
    let _second = start_example(&cluster, "room", 1).await?;
    cluster.wait_workers(2).await?;
    let url = |name: &str| format!("{}?name={name}&room=lobby", cluster.ws_url(0));

    let mut observer = WsClient::connect(&url("obs")).await?;
    next_of(&mut observer, "joined").await?;
    let mut talkers = Vec::new();
    for n in 0..8 {
        let mut talker = WsClient::connect(&url(&format!("t{n}"))).await?;
        let joined = next_of(&mut talker, "joined").await?;
        assert_eq!(
            joined,
            json!({"type": "joined", "name": format!("t{n}"), "room": "lobby"})
        );
        // The room comes from the session that travelled with the message.
        talker.send_text(format!("hi from t{n}")).await?;
        let said = next_of(&mut observer, "said").await?;
        assert_eq!(
            said,
            json!({"type": "said", "name": format!("t{n}"), "text": format!("hi from t{n}")})
        );
        talkers.push(talker);
    }

    // One worker stops while the clients are still connected: its clients move to the other.
    assert_eq!(first.terminate().await?, Some(0), "{}", first.log_text());
    cluster.wait_workers(1).await?;
    for talker in talkers {
        talker.close().await?;
    }
    let mut left = Vec::new();
    while left.len() < 8 {
        let frame = next_of(&mut observer, "left").await?;
        assert_eq!(frame["room"], "lobby", "{frame}");
        left.push(frame["name"].as_str().unwrap_or_default().to_owned());
    }
    left.sort();
    let expected: Vec<String> = (0..8).map(|n| format!("t{n}")).collect();
    assert_eq!(left, expected, "every talker's departure, each once");
    Ok(())
}

#[tokio::test]
async fn followers_see_presence_and_notices_to_offline_users_are_answered() -> Result<()> {
    let cluster = cluster_for("notify").await?;
    let _worker = start_example(&cluster, "notify", 0).await?;
    cluster.wait_workers(1).await?;
    let base = cluster.ws_url(0);

    let mut ann = WsClient::connect(&format!("{base}?uid=ann&follow=ben,cat")).await?;
    assert_eq!(next_of(&mut ann, "presence").await?["online"], json!([]));
    let mut ben = WsClient::connect(&format!("{base}?uid=ben&follow=ann")).await?;
    assert_eq!(next_of(&mut ben, "presence").await?["online"], json!(["ann"]));
    assert_eq!(next_of(&mut ann, "online").await?["uid"], "ben");

    ann.send_json(&json!({"to": "cat", "text": "are you there?"})).await?;
    assert_eq!(next_of(&mut ann, "undelivered").await?["to"], "cat");
    ann.send_json(&json!({"to": "ben", "text": "lunch?"})).await?;
    let notice = next_of(&mut ben, "notice").await?;
    assert_eq!(
        (notice["from"].clone(), notice["text"].clone()),
        (json!("ann"), json!("lunch?"))
    );

    // A second device of ben: no new "online"; ben is offline only when both are gone.
    let ben_phone = WsClient::connect(&format!("{base}?uid=ben")).await?;
    ben.close().await?;
    ann.expect_silence(Duration::from_millis(300)).await?;
    ben_phone.close().await?;
    assert_eq!(next_of(&mut ann, "offline").await?["uid"], "ben");
    Ok(())
}

#[tokio::test]
async fn a_backend_pushes_to_a_user_through_the_server_api() -> Result<()> {
    let cluster = cluster_for("shout").await?;
    let _worker = start_example(&cluster, "shout", 0).await?;
    cluster.wait_workers(1).await?;
    let api = ApiServer::start(&cluster, &[("backend", "publish,query")], &[]).await?;
    let mut alice = WsClient::connect(&format!("{}?name=alice", cluster.ws_url(0))).await?;

    let output = tokio::process::Command::new(example_bin("push"))
        .args(["alice", "your order shipped", "order-42"])
        .env("GATEHOUSE_API", api.http_addr().to_string())
        .env("GATEHOUSE_API_KEY", api.key("backend"))
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("push failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    }
    assert!(stdout.contains("online: [\"alice\"]"), "{stdout}");
    assert_eq!(
        alice.recv_json().await?,
        json!({"type": "notice", "text": "your order shipped"})
    );
    Ok(())
}
