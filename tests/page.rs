//! The gateway's page is the deployment's choice (`--page chat|none|DIR`): each choice against a
//! real `gatehouse` process, and the defaults of `gatehouse gateway` and `gatehouse dev`.

use std::time::Duration;

use anyhow::Result;
use gatehouse_testkit::cluster::{HttpResponse, http_request};
use gatehouse_testkit::{Cluster, Process, WsClient};

/// What identifies the chat app's page (its `<title>`).
const CHAT_TITLE: &str = "<title>gatehouse chat</title>";

/// `GET path` on gateway 0 of `cluster`.
async fn get(cluster: &Cluster, path: &str) -> Result<HttpResponse> {
    http_request(cluster.gateways[0].addr("ws"), path).await
}

/// A gateway of `app` with `page_args`, and one registry.
async fn gateway(app: Option<&str>, page_args: &[&str]) -> Result<Cluster> {
    let mut args: Vec<&str> = page_args.to_vec();
    if let Some(app) = app {
        args.extend(["--app", app]);
    }
    Cluster::builder().gateways(1).gateway_args(&args).start().await
}

#[tokio::test]
async fn a_chat_gateway_serves_the_chat_page_by_default_and_none_when_told() -> Result<()> {
    let chat = gateway(Some("chat"), &[]).await?;
    let page = get(&chat, "/").await?;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(CHAT_TITLE), "{}", page.body);
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    // One page at `/`, not a file tree.
    assert_eq!(get(&chat, "/index.html").await?.status, 404);

    let none = gateway(Some("chat"), &["--page", "none"]).await?;
    assert_eq!(get(&none, "/").await?.status, 404);
    Ok(())
}

#[tokio::test]
async fn a_gateway_of_another_app_or_of_every_app_serves_no_page_unless_told() -> Result<()> {
    let echo = gateway(Some("echo"), &[]).await?;
    let page = get(&echo, "/").await?;
    assert_eq!(page.status, 404);
    assert!(!page.body.contains(CHAT_TITLE));
    let every = gateway(None, &[]).await?;
    assert_eq!(get(&every, "/").await?.status, 404);

    let told = gateway(Some("echo"), &["--page", "chat"]).await?;
    assert!(get(&told, "/").await?.body.contains(CHAT_TITLE));
    Ok(())
}

#[tokio::test]
async fn a_page_directory_is_served_file_by_file_and_nothing_outside_it() -> Result<()> {
    let site = tempfile::tempdir()?;
    let root = site.path().join("site");
    std::fs::create_dir_all(root.join("js"))?;
    std::fs::write(root.join("index.html"), "<h1>our product</h1>")?;
    std::fs::write(root.join("js/app.js"), "console.log('hi')")?;
    std::fs::write(root.join(".env"), "SECRET=1")?;
    std::fs::write(site.path().join("outside.txt"), "not for clients")?;
    let mut cluster = Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        .gateway_args(&["--app", "echo", "--page", &root.display().to_string()])
        .start()
        .await?;

    let index = get(&cluster, "/").await?;
    assert_eq!((index.status, index.body.as_str()), (200, "<h1>our product</h1>"));
    assert_eq!(index.header("content-type"), Some("text/html; charset=utf-8"));
    let script = get(&cluster, "/js/app.js").await?;
    assert_eq!((script.status, script.body.as_str()), (200, "console.log('hi')"));
    assert_eq!(script.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(script.header("x-content-type-options"), Some("nosniff"));
    for refused in [
        "/.env",
        "/../outside.txt",
        "/js/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/js",
        "/missing.css",
    ] {
        let response = get(&cluster, refused).await?;
        assert_eq!(response.status, 404, "{refused}: {}", response.body);
        assert!(!response.body.contains("not for clients") && !response.body.contains("SECRET"));
    }

    // Files are read at each request: a deployment replaces them without a restart.
    std::fs::write(root.join("index.html"), "<h1>version 2</h1>")?;
    assert_eq!(get(&cluster, "/").await?.body, "<h1>version 2</h1>");

    // The WebSocket endpoint is still the gateway's, not the directory's.
    let mut client = WsClient::connect(&cluster.ws_url(0)).await?;
    client.send_text("ping").await?;
    assert_eq!(client.recv_text().await?, "ping");
    cluster.gateways[0].kill().await;
    Ok(())
}

#[tokio::test]
async fn a_missing_page_directory_stops_the_gateway_at_start() -> Result<()> {
    let missing = tempfile::tempdir()?.path().join("no-such-site");
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(gatehouse_testkit::process::gatehouse_bin())
            .args(["gateway", "--listen", "127.0.0.1:0", "--internal", "127.0.0.1:0"])
            .args(["--admin-listen", "off", "--registry", "127.0.0.1:1", "--cluster-secret"])
            .arg(gatehouse_testkit::TEST_SECRET)
            .arg("--page")
            .arg(&missing)
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no-such-site") && stderr.contains("not a readable directory"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn gatehouse_dev_serves_the_chat_page_and_takes_a_page_choice() -> Result<()> {
    let start = |extra: &[&str]| {
        let mut args = vec!["dev", "--listen", "127.0.0.1:0", "--admin-listen", "off"];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move { Process::start("dev", args, &["ws"]).await }
    };
    let database = tempfile::tempdir()?;
    let url = format!("sqlite://{}", database.path().join("chat.db").display());

    let dev = start(&["--database-url", &url]).await?;
    let page = http_request(dev.addr("ws"), "/").await?;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(CHAT_TITLE));
    drop(dev);

    let dev = start(&["--database-url", &url, "--page", "none"]).await?;
    assert_eq!(http_request(dev.addr("ws"), "/").await?.status, 404);
    drop(dev);

    let dev = start(&["--app", "echo"]).await?;
    assert_eq!(http_request(dev.addr("ws"), "/").await?.status, 404);
    Ok(())
}
