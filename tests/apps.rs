//! Clients reach the app they asked for: a gateway gives a client's events only to workers of
//! its app (`--app` on the gateway, or the `/ws/<app>` path), and workers of other apps that
//! join the cluster are logged and counted instead of taking clients.

use std::time::Duration;

use anyhow::Result;
use gatehouse_testkit::client::Refusal;
use gatehouse_testkit::cluster::metric;
use gatehouse_testkit::{ChatClient, ChatDatabase, Cluster, WsClient};
use serde_json::json;

#[tokio::test]
async fn relay_workers_joining_a_chat_cluster_take_no_chat_clients() -> Result<()> {
    let database = ChatDatabase::sqlite();
    let url = database.url();
    let mut cluster = Cluster::builder()
        .gateways(1)
        .workers("chat", 1)
        .gateway_args(&["--insecure-dev-auth", "--app", "chat"])
        .worker_args(&["--database-url", url.as_str(), "--insecure-dev-auth"])
        .start()
        .await?;
    // Two relay workers left running from a benchmark, same cluster credentials.
    cluster.add_worker("relay").await?;
    cluster.add_worker("relay").await?;
    let admin = cluster.gateways[0].addr("admin");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(admin, "gatehouse_gateway_foreign_workers_total").await? < 2 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the relay workers never attached"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cluster.gateways[0]
        .wait_for_log("does not serve attached", Duration::from_secs(5))
        .await?;
    cluster.wait_workers(1).await?;

    // With three workers sharing clients by hash, about two in three of these would land on a
    // relay worker and never get their welcome.
    for n in 0..12 {
        let client = ChatClient::connect_as(&cluster.ws_url(0), &format!("user{n}")).await?;
        assert_eq!(client.uid, format!("user{n}"));
    }
    Ok(())
}

#[tokio::test]
async fn one_cluster_runs_several_apps_each_behind_its_own_path() -> Result<()> {
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        .workers("relay", 1)
        .gateway_args(&["--app", "echo,relay"])
        .start()
        .await?;
    let base = cluster.ws_url(0);

    // `/ws` is the first app, echo: every frame comes back as it was sent. Several clients, so
    // that hashing alone would have put some of them on the relay worker.
    for n in 0..8 {
        let mut echo = WsClient::connect(&base).await?;
        echo.send_text(format!("ping {n}")).await?;
        assert_eq!(echo.recv_text().await?, format!("ping {n}"));
    }
    for n in 0..8 {
        let mut echo = WsClient::connect(&format!("{base}/echo")).await?;
        echo.send_text(format!("again {n}")).await?;
        assert_eq!(echo.recv_text().await?, format!("again {n}"));
    }

    // `/ws/relay` reaches the relay app, which answers a login (echo would send it back as is).
    for n in 0..8 {
        let mut relay = WsClient::connect(&format!("{base}/relay")).await?;
        relay
            .send_json(&json!({"type": "login", "uid": format!("r{n}")}))
            .await?;
        assert_eq!(
            relay.recv_json().await?,
            json!({"type": "login_ok", "uid": format!("r{n}")})
        );
    }

    // An app this gateway does not serve is a 404, counted.
    match WsClient::try_connect(&format!("{base}/chat")).await? {
        Err(Refusal::Http(status, body)) => assert_eq!(status, 404, "{body}"),
        Err(other) => panic!("expected a 404, got {other:?}"),
        Ok(_) => panic!("a gateway that does not serve chat accepted /ws/chat"),
    }
    let admin = cluster.gateways[0].addr("admin");
    assert_eq!(metric(admin, "gatehouse_gateway_refused_unknown_app_total").await?, 1);
    assert_eq!(metric(admin, "gatehouse_gateway_foreign_workers_total").await?, 0);
    Ok(())
}
