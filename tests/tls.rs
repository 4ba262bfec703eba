//! TLS everywhere: `wss://` on the gateways with a certificate from `gatehouse cert`, mutual TLS
//! between every role with no cluster secret at all, members from another CA (or without TLS)
//! refused and logged, and the chat worker's PostgreSQL connection over verified TLS.

use std::time::Duration;

use anyhow::{Result, ensure};
use gatehouse_testkit::api_server::ApiServer;
use gatehouse_testkit::cluster::{http_get, metric};
use gatehouse_testkit::{ChatClient, Cluster, Process, Service, TempDatabase, TestTls, WsClient, require};
use serde_json::json;

/// How long a test waits for a log line it expects.
const LOG_WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_talk_over_wss_with_a_certificate_from_gatehouse_cert() -> Result<()> {
    let tls = TestTls::generate()?;
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        .tls(&tls)
        .start()
        .await?;
    let url = cluster.ws_url(0);
    assert!(url.starts_with("wss://"), "{url}");

    let mut client = WsClient::connect_tls(&url, &tls).await?;
    client.send_text("over tls").await?;
    assert_eq!(client.recv_text().await?, "over tls");

    // The same port does not speak plaintext: a ws:// client fails its handshake, and the
    // gateway counts the failed TLS handshake.
    let plain = url.replacen("wss://", "ws://", 1);
    assert!(WsClient::connect(&plain).await.is_err(), "plaintext on a wss port");
    let admin = cluster.gateways[0].addr("admin");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(admin, "gatehouse_gateway_tls_handshake_failures_total").await? < 1 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the failed handshake was never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The encrypted client is still served.
    client.send_text("still here").await?;
    assert_eq!(client.recv_text().await?, "still here");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_talks_mutual_tls_and_needs_no_cluster_secret() -> Result<()> {
    let tls = TestTls::generate()?;
    let cluster = Cluster::builder()
        .registries(2)
        .gateways(2)
        .workers("echo", 2)
        .tls(&tls)
        .start()
        .await?;
    let processes = cluster
        .registries
        .iter()
        .chain(&cluster.gateways)
        .chain(&cluster.workers);
    for process in processes {
        assert!(
            !process.args().iter().any(|a| a.contains("secret")),
            "{} was given a secret",
            process.name
        );
    }
    for process in cluster.registries.iter().chain(&cluster.gateways) {
        let log = process.log_text();
        assert!(
            log.lines().any(|l| l.contains("kind=grpc") && l.contains("tls=true")),
            "{} does not say its gRPC listener is TLS:\n{log}",
            process.name
        );
    }

    // The server API joins the cluster with its own (api) certificate and reaches clients on
    // both gateways through them.
    let api = ApiServer::start(&cluster, &[("admin", "admin")], &[]).await?;
    let mut a = WsClient::connect_tls(&cluster.ws_url(0), &tls).await?;
    let mut b = WsClient::connect_tls(&cluster.ws_url(1), &tls).await?;
    // An echo proves each client has its worker (and its welcome done) before the broadcast.
    for client in [&mut a, &mut b] {
        client.send_text("ready").await?;
        assert_eq!(client.recv_text().await?, "ready");
    }
    api.ok("send_to_all", "admin", json!({"data": "to everyone"})).await?;
    assert_eq!(a.recv_text().await?, "to everyone");
    assert_eq!(b.recv_text().await?, "to everyone");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_certificate_from_another_ca_or_without_tls_is_refused_and_logged() -> Result<()> {
    let tls = TestTls::generate()?;
    let foreign = TestTls::generate()?;
    let mut cluster = Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        .tls(&tls)
        .start()
        .await?;
    let registry = cluster.registry_list();

    let worker = |name: &'static str, credentials: Vec<String>| {
        let mut args: Vec<String> = ["worker", "--app", "echo", "--admin-listen", "off", "--registry"]
            .map(String::from)
            .to_vec();
        args.push(registry.clone());
        args.extend(credentials);
        Process::start(name, args, &[])
    };
    let mut intruder = worker(
        "foreign-worker",
        vec!["--cluster-tls-dir".into(), foreign.dir().display().to_string()],
    )
    .await?;
    cluster.registries[0]
        .wait_for_log("trust different CAs", LOG_WAIT)
        .await?;
    intruder.wait_for_log("invalid peer certificate", LOG_WAIT).await?;

    let mut plaintext = worker("plaintext-worker", vec!["--cluster-secret".into(), "guessed".into()]).await?;
    cluster.registries[0]
        .wait_for_log("does not speak TLS", LOG_WAIT)
        .await?;
    plaintext.wait_for_log("registry unreachable", LOG_WAIT).await?;

    // Neither became a member: the gateway still has its one worker, and a client is served.
    let (_, ready) = http_get(cluster.gateways[0].addr("admin"), "/readyz").await?;
    assert!(ready.contains("\"workers\":1,"), "{ready}");
    let (_, members) = http_get(cluster.registries[0].addr("admin"), "/readyz").await?;
    assert!(members.contains("\"members\":2,"), "{members}");
    let mut client = WsClient::connect_tls(&cluster.ws_url(0), &tls).await?;
    client.send_text("only members").await?;
    assert_eq!(client.recv_text().await?, "only members");
    Ok(())
}

/// The chat worker's PostgreSQL connections over TLS, against the local server's certificate
/// from `scripts/services`.
mod needs_postgrestls {
    use super::*;
    use gatehouse_testkit::services::postgres_ca;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_chat_worker_stores_into_postgresql_over_verified_tls() -> Result<()> {
        require(Service::PostgresTls);
        let ca = postgres_ca().display().to_string();
        let db = TempDatabase::create()?;
        let app = format!("gatehouse_tls_{}", rand_suffix());
        // verify-full: the server's certificate must chain to `ca` and name the host we dial.
        let url = format!(
            "{}?sslmode=verify-full&sslrootcert={ca}&application_name={app}",
            db.url().replacen("127.0.0.1", "localhost", 1)
        );
        let cluster = Cluster::builder()
            .gateways(1)
            .workers("chat", 1)
            .gateway_args(&["--insecure-dev-auth"])
            .worker_args(&["--database-url", &url, "--insecure-dev-auth"])
            .start()
            .await?;
        let mut ben = ChatClient::connect_as(&cluster.ws_url(0), "ben").await?;
        let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
        let ack = ann.send_to("ben", "sealed in transit", "c1").await?;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ben.next_message().await?["text"], "sealed in transit");
        assert_eq!(db.query("SELECT count(*) FROM messages")?, "1");

        // Every connection the worker holds is encrypted, as the server itself reports.
        let sessions = db.query(&format!(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = '{app}'"
        ))?;
        let (encrypted, total) = sessions.split_once('|').expect("two counts");
        assert!(total.parse::<u32>()? > 0, "the worker holds no connection named {app}");
        assert_eq!(encrypted, total, "some of the worker's connections are plaintext");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chat_worker_refuses_a_postgresql_server_its_ca_did_not_sign() -> Result<()> {
        require(Service::PostgresTls);
        let other_ca = TestTls::generate()?;
        let db = TempDatabase::create()?;
        let url = format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            db.url().replacen("127.0.0.1", "localhost", 1),
            other_ca.file("ca.pem").display()
        );
        let cluster = Cluster::builder().gateways(1).start().await?;
        let mut worker = Process::start(
            "chat-worker",
            [
                "worker",
                "--app",
                "chat",
                "--admin-listen",
                "off",
                "--insecure-dev-auth",
                "--registry",
                &cluster.registry_list(),
                "--database-url",
                &url,
            ]
            .into_iter()
            .map(String::from)
            .chain(cluster.credential_args().iter().cloned())
            .collect(),
            &[],
        )
        .await?;
        let status = tokio::time::timeout(LOG_WAIT, worker.wait_exit()).await??;
        assert_ne!(status, Some(0), "the worker started against an unverified server");
        let log = worker.log_text();
        assert!(
            log.contains("certificate") || log.contains("UnknownIssuer"),
            "the worker does not say why:\n{log}"
        );
        Ok(())
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}
