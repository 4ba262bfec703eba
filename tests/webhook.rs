//! The webhook worker against real HTTP backends written in Python (standard library only),
//! through a real cluster: the chat room ported from GatewayWorker exactly as
//! docs/migrating-from-gatewayworker.md shows it, and a backend that fails on purpose (500,
//! slow, down) to prove that nothing is lost, each client's order holds, and a client is
//! closed with 1013 when the backend stays down past the give-up time.

mod needs_python3 {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use anyhow::{Context, Result, anyhow, bail};
    use gatehouse_testkit::api_server::{ApiServer, http_request};
    use gatehouse_testkit::client::Refusal;
    use gatehouse_testkit::cluster::metric;
    use gatehouse_testkit::{Cluster, Service, WsClient, require};
    use serde_json::{Value, json};
    use tokio::io::{AsyncBufReadExt, BufReader};

    const SECRET: &str = "webhook-test-secret-of-32-bytes-or-more";

    /// A Python backend process, killed when dropped.
    struct Backend {
        child: tokio::process::Child,
        addr: SocketAddr,
        script: PathBuf,
        env: Vec<(String, String)>,
    }

    impl Backend {
        /// Starts `python3 script [port]` and reads the address it prints.
        async fn start(script: &Path, port: u16, env: &[(&str, String)]) -> Result<Backend> {
            let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match Backend::spawn(script, port, &env).await {
                    Ok(backend) => return Ok(backend),
                    // The port of a backend just killed may take a moment to be free again.
                    Err(error) if port != 0 && tokio::time::Instant::now() < deadline => {
                        let _ = error;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        }

        async fn spawn(script: &Path, port: u16, env: &[(String, String)]) -> Result<Backend> {
            let mut child = tokio::process::Command::new("python3")
                .arg(script)
                .arg(port.to_string())
                .envs(env.iter().cloned())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting python3")?;
            let stdout = child.stdout.take().expect("piped");
            let line = tokio::time::timeout(Duration::from_secs(10), BufReader::new(stdout).lines().next_line())
                .await
                .map_err(|_| anyhow!("{} printed no address", script.display()))??
                .ok_or_else(|| anyhow!("{} exited before listening", script.display()))?;
            let addr = line
                .strip_prefix("listening addr=")
                .ok_or_else(|| anyhow!("unexpected first line {line:?}"))?
                .parse()?;
            Ok(Backend {
                child,
                addr,
                script: script.to_owned(),
                env: env.to_vec(),
            })
        }

        fn url(&self) -> String {
            format!("http://{}/events", self.addr)
        }

        async fn kill(&mut self) {
            let _ = self.child.kill().await;
        }

        /// Starts the same script again on the same port.
        async fn restart(&mut self) -> Result<()> {
            self.kill().await;
            let env: Vec<(&str, String)> = self.env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            *self = Backend::start(&self.script.clone(), self.addr.port(), &env).await?;
            Ok(())
        }

        async fn control(&self, settings: Value) -> Result<()> {
            let response = http_request(self.addr, "POST", "/control", &[], settings.to_string().as_bytes()).await?;
            if response.status != 200 {
                bail!("control answered {}", response.status);
            }
            Ok(())
        }

        async fn state(&self) -> Result<Value> {
            http_request(self.addr, "GET", "/state", &[], b"").await?.json()
        }
    }

    fn repo_file(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// A cluster with one webhook worker pointed at `url`, with `extra` worker flags.
    async fn cluster_with_webhook(url: &str, extra: &[&str]) -> Result<Cluster> {
        let mut args = vec!["--url", url, "--webhook-secret", SECRET];
        args.extend_from_slice(extra);
        Cluster::builder()
            .gateways(2)
            .workers("webhook", 1)
            .worker_args(&args)
            .start()
            .await
    }

    /// The events file of a scripted backend: (client, type, text) in arrival order.
    fn received(file: &Path) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).context("events file line"))
            .collect()
    }

    /// Sends `count` numbered messages from `client` and returns their texts.
    async fn send_numbered(client: &mut WsClient, tag: &str, from: usize, count: usize) -> Result<Vec<String>> {
        let mut sent = Vec::new();
        for n in from..from + count {
            let text = format!("{tag}-{n}");
            client.send_text(text.clone()).await?;
            sent.push(text);
        }
        Ok(sent)
    }

    /// Receives `count` echoes and checks they are exactly `sent`, in order.
    async fn expect_echoes(client: &mut WsClient, sent: &[String]) -> Result<()> {
        for text in sent {
            let got = client.recv_text().await?;
            if got != format!("echo:{text}") {
                bail!("expected echo:{text}, got {got}");
            }
        }
        Ok(())
    }

    /// Checks that the backend saw every message of `sent` and, per client, never an earlier one
    /// after a later one (a retried event comes again before anything newer of its client).
    fn assert_in_order(events: &[Value], client_id: &str, sent: &[String]) -> Result<()> {
        let texts: Vec<&str> = events
            .iter()
            .filter(|e| e["client"] == client_id && e["type"] == "message")
            .filter_map(|e| e["text"].as_str())
            .collect();
        let position = |t: &str| sent.iter().position(|s| s == t);
        let mut last = 0;
        for text in &texts {
            let Some(at) = position(text) else { continue };
            if at < last {
                bail!("{client_id}: {text} arrived after a later message: {texts:?}");
            }
            last = at;
        }
        for text in sent {
            if !texts.contains(&text.as_str()) {
                bail!("{client_id}: {text} never reached the backend: {texts:?}");
            }
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backend_that_fails_answers_slowly_or_goes_down_loses_nothing_and_keeps_each_clients_order() -> Result<()>
    {
        require(Service::Python3);
        let dir = tempfile::tempdir()?;
        let events_file = dir.path().join("events.jsonl");
        let env = [
            ("GATEHOUSE_WEBHOOK_SECRET", SECRET.to_owned()),
            ("EVENTS_FILE", events_file.display().to_string()),
        ];
        let mut backend = Backend::start(&repo_file("tests/webhook/scripted_backend.py"), 0, &env).await?;
        let cluster = cluster_with_webhook(
            &backend.url(),
            &[
                "--webhook-timeout",
                "300ms",
                "--webhook-retries",
                "2",
                "--webhook-give-up",
                "60s",
            ],
        )
        .await?;
        let mut ann = WsClient::connect(&cluster.ws_url(0)).await?;
        let mut bob = WsClient::connect(&cluster.ws_url(1)).await?;

        // Healthy: every message is echoed through the backend, in order.
        let ann_sent = send_numbered(&mut ann, "ann", 0, 5).await?;
        expect_echoes(&mut ann, &ann_sent).await?;

        // 500s: the events wait (retried in the handler, then given back to the gateway and
        // delivered again) and come through, in order, once the backend answers again.
        backend.control(json!({"mode": "fail"})).await?;
        let mut all_ann = ann_sent.clone();
        let failing_ann = send_numbered(&mut ann, "ann", 5, 5).await?;
        let failing_bob = send_numbered(&mut bob, "bob", 0, 5).await?;
        wait_for(|| async { Ok(backend.state().await?["requests"].as_u64() >= Some(3)) }).await?;
        ann.expect_silence(Duration::from_millis(300)).await?;
        backend.control(json!({"mode": "ok"})).await?;
        expect_echoes(&mut ann, &failing_ann).await?;
        expect_echoes(&mut bob, &failing_bob).await?;
        all_ann.extend(failing_ann);
        let mut all_bob = failing_bob;

        // Slower than the request timeout: each request times out and is retried (the backend
        // sees duplicates) until the backend is fast again; the clients get each echo once.
        backend.control(json!({"mode": "slow", "delay_ms": 600})).await?;
        let slow_ann = send_numbered(&mut ann, "ann", 10, 3).await?;
        let slow_bob = send_numbered(&mut bob, "bob", 5, 3).await?;
        wait_for(|| async { Ok(backend.state().await?["requests"].as_u64() >= Some(8)) }).await?;
        backend.control(json!({"mode": "ok"})).await?;
        expect_echoes(&mut ann, &slow_ann).await?;
        expect_echoes(&mut bob, &slow_bob).await?;
        all_ann.extend(slow_ann);
        all_bob.extend(slow_bob);

        // Down (connection refused), then back on the same address within the give-up time.
        backend.kill().await;
        let down_ann = send_numbered(&mut ann, "ann", 13, 4).await?;
        let down_bob = send_numbered(&mut bob, "bob", 8, 4).await?;
        let worker_admin = cluster.workers[0].addr("admin");
        wait_for(|| async { Ok(metric(worker_admin, "gatehouse_webhook_events_given_back_total").await? >= 2) })
            .await?;
        backend.restart().await?;
        expect_echoes(&mut ann, &down_ann).await?;
        expect_echoes(&mut bob, &down_bob).await?;
        all_ann.extend(down_ann);
        all_bob.extend(down_bob);

        let events = received(&events_file)?;
        let ann_id = client_id_of(&events, "ann-0")?;
        let bob_id = client_id_of(&events, "bob-0")?;
        assert_in_order(&events, &ann_id, &all_ann)?;
        assert_in_order(&events, &bob_id, &all_bob)?;
        assert_eq!(backend.state().await?["bad_signatures"], 0, "every request was signed");
        assert!(metric(worker_admin, "gatehouse_webhook_request_failures_total").await? > 0);
        assert!(metric(worker_admin, "gatehouse_webhook_event_retries_total").await? > 0);
        assert_eq!(
            metric(worker_admin, "gatehouse_webhook_clients_given_up_total").await?,
            0
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backend_down_past_the_give_up_time_closes_its_clients_with_1013_and_refuses_handshakes_with_503()
    -> Result<()> {
        require(Service::Python3);
        let dir = tempfile::tempdir()?;
        let events_file = dir.path().join("events.jsonl");
        let env = [
            ("GATEHOUSE_WEBHOOK_SECRET", SECRET.to_owned()),
            ("EVENTS_FILE", events_file.display().to_string()),
        ];
        let mut backend = Backend::start(&repo_file("tests/webhook/scripted_backend.py"), 0, &env).await?;
        let cluster = cluster_with_webhook(
            &backend.url(),
            &[
                "--webhook-timeout",
                "300ms",
                "--webhook-retries",
                "1",
                "--webhook-give-up",
                "2s",
                "--webhook-handshake-timeout",
                "1s",
            ],
        )
        .await?;
        // The backend decides handshakes: ?reject=1 is refused with its status.
        match WsClient::try_connect(&format!("{}?reject=1", cluster.ws_url(0))).await? {
            Err(Refusal::Http(status, body)) => {
                assert_eq!(status, 403);
                assert!(body.contains("not today"), "{body}");
            }
            other => bail!("expected a 403 refusal, got {:?}", other.map(|_| "a connection")),
        }
        let mut ann = WsClient::connect(&cluster.ws_url(0)).await?;
        ann.send_text("hello").await?;
        assert_eq!(ann.recv_text().await?, "echo:hello");

        backend.kill().await;
        let started = tokio::time::Instant::now();
        ann.send_text("into the void").await?;
        let (code, reason) = ann.expect_close_frame().await?;
        assert_eq!((code, reason.as_str()), (1013, "webhook backend unavailable"));
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "closed before the give-up time"
        );
        let worker_admin = cluster.workers[0].addr("admin");
        assert_eq!(
            metric(worker_admin, "gatehouse_webhook_clients_given_up_total").await?,
            1
        );

        // A new client is refused while the backend is down: 503 within the handshake timeout.
        match WsClient::try_connect(&cluster.ws_url(1)).await? {
            Err(Refusal::Http(status, _)) => assert_eq!(status, 503),
            other => bail!("expected a 503 refusal, got {:?}", other.map(|_| "a connection")),
        }
        assert!(metric(worker_admin, "gatehouse_webhook_handshakes_unavailable_total").await? >= 1);

        // Back up: new clients work again.
        backend.restart().await?;
        let mut bob = WsClient::connect(&cluster.ws_url(1)).await?;
        bob.send_text("again").await?;
        assert_eq!(bob.recv_text().await?, "echo:again");
        Ok(())
    }

    /// The client id the backend saw on the message `text`.
    fn client_id_of(events: &[Value], text: &str) -> Result<String> {
        events
            .iter()
            .find(|e| e["text"] == text)
            .and_then(|e| e["client"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the backend never saw {text}"))
    }

    /// Polls `check` until it is true (10 s at most).
    async fn wait_for<F, Fut>(mut check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if check().await.unwrap_or(false) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("condition not reached within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    /// The chat room of docs/migrating-from-gatewayworker.md, run exactly as the document shows
    /// it, against two gateways and the server API.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ported_chat_room_runs_end_to_end_with_signed_requests() -> Result<()> {
        require(Service::Python3);
        let doc = std::fs::read_to_string(repo_file("docs/migrating-from-gatewayworker.md"))?;
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("chat_room.py");
        std::fs::write(&script, tested_block(&doc, "webhook-chat-room")?)?;
        // The backend needs the server API's address, which needs the cluster, which needs the
        // backend's address: the backend takes a port chosen here.
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}/events");
        let cluster = cluster_with_webhook(&url, &[]).await?;
        let api = ApiServer::start(&cluster, &[("chat", "query")], &[]).await?;
        let backend = Backend::start(
            &script,
            port,
            &[
                ("GATEHOUSE_WEBHOOK_SECRET", SECRET.to_owned()),
                ("GATEHOUSE_API", api.url()),
                ("GATEHOUSE_API_KEY", api.key("chat").to_owned()),
            ],
        )
        .await?;

        // onWebSocketConnect: a client without the room's token is refused.
        match WsClient::try_connect(&cluster.ws_url(0)).await? {
            Err(Refusal::Http(status, _)) => assert_eq!(status, 401),
            other => bail!("expected 401, got {:?}", other.map(|_| "a connection")),
        }
        let (mut alice, alice_id) = chatter(&cluster, 0).await?;
        let (mut bob, bob_id) = chatter(&cluster, 1).await?;
        let (mut carol, _) = chatter(&cluster, 0).await?;

        alice
            .send_json(&json!({"type": "login", "room": "1", "name": "alice"}))
            .await?;
        let members = alice.recv_json().await?;
        assert_eq!(members["type"], "members");
        assert_eq!(members["members"], json!({alice_id.clone(): "alice"}));

        bob.send_json(&json!({"type": "login", "room": "1", "name": "bob"}))
            .await?;
        let joined = alice.recv_json().await?;
        assert_eq!(joined, json!({"type": "joined", "client_id": bob_id, "name": "bob"}));
        let members = bob.recv_json().await?;
        assert_eq!(
            members["members"],
            json!({alice_id.clone(): "alice", bob_id.clone(): "bob"})
        );

        carol
            .send_json(&json!({"type": "login", "room": "2", "name": "carol"}))
            .await?;
        assert_eq!(carol.recv_json().await?["type"], "members");

        // Said to the room: both members (the sender too), nobody in room 2.
        alice.send_json(&json!({"type": "say", "text": "<hi>"})).await?;
        for client in [&mut alice, &mut bob] {
            let said = client.recv_json().await?;
            assert_eq!(said["from"], "alice");
            assert_eq!(said["text"], "&lt;hi&gt;", "escaped like htmlspecialchars");
        }
        // Privately: the addressee and the sender only.
        bob.send_json(&json!({"type": "say", "to": alice_id, "text": "psst"}))
            .await?;
        for client in [&mut alice, &mut bob] {
            let said = client.recv_json().await?;
            assert_eq!(
                (said["text"].as_str(), said["private"].as_bool()),
                (Some("psst"), Some(true))
            );
        }
        carol.expect_silence(Duration::from_millis(300)).await?;

        // onClose: the room hears that bob left.
        bob.close().await?;
        assert_eq!(
            alice.recv_json().await?,
            json!({"type": "left", "client_id": bob_id, "name": "bob"})
        );

        // The backend believes only signed, recent bodies.
        let body = br#"{"v":1,"events":[]}"#;
        let unsigned = http_request(backend.addr, "POST", "/events", &[], body).await?;
        assert_eq!(unsigned.status, 401);
        let stale = format!("t=1,v1={}", "0".repeat(64));
        let replayed = http_request(
            backend.addr,
            "POST",
            "/events",
            &[("gatehouse-signature", &stale)],
            body,
        )
        .await?;
        assert_eq!(replayed.status, 401);
        Ok(())
    }

    /// Connects with the room's token and reads the welcome that carries the client id.
    async fn chatter(cluster: &Cluster, gateway: usize) -> Result<(WsClient, String)> {
        let mut client = WsClient::connect(&format!("{}?token=letmein", cluster.ws_url(gateway))).await?;
        let welcome = client.recv_json().await?;
        assert_eq!(welcome["type"], "welcome");
        let id = welcome["client_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no client id in {welcome}"))?
            .to_owned();
        Ok((client, id))
    }

    /// A port nothing listens on right now (bound, then released).
    fn free_port() -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }

    /// The first fenced block after `<!-- tested: NAME`.
    fn tested_block(doc: &str, name: &str) -> Result<String> {
        let marker = format!("<!-- tested: {name}");
        let Some(start) = doc.find(&marker) else {
            bail!("no {marker} in the document");
        };
        let mut lines = doc[start..].lines().skip_while(|l| !l.starts_with("```"));
        lines.next();
        let block: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
        Ok(block.join("\n") + "\n")
    }
}
