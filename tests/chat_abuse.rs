//! The chat service against a hostile signed-in user (issue #10), end to end on a real cluster
//! (two gateways, two chat workers, a SQLite file): every attack that worked before is refused
//! with a typed error, and honest users keep being served.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gatehouse_testkit::client::Refusal;
use gatehouse_testkit::process::gatehouse_bin;
use gatehouse_testkit::{ChatClient, ChatDatabase, Cluster};
use serde_json::{Value, json};

/// Two gateways and two chat workers in insecure dev mode (bare `?uid=` sign-in needs it on
/// both), with `extra` worker flags.
async fn chat_cluster(db: &ChatDatabase, extra: &[&str]) -> Result<Cluster> {
    let url = db.url();
    let mut worker_args = vec!["--database-url", url.as_str(), "--insecure-dev-auth"];
    worker_args.extend_from_slice(extra);
    Cluster::builder()
        .gateways(2)
        .workers("chat", 2)
        .gateway_args(&["--insecure-dev-auth"])
        .worker_args(&worker_args)
        .start()
        .await
}

/// Sends a request and asserts it was refused with `code`.
async fn refused(client: &mut ChatClient, request: Value, code: &str) -> Result<Value> {
    let shown: String = request.to_string().chars().take(200).collect();
    let answer = client.request(request).await?;
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some(code)),
        "{shown} -> {answer}"
    );
    Ok(answer)
}

/// `owner` creates `group` (default settings unless `settings` adds some) and brings `members`
/// in by invitation.
async fn group_with(
    owner: &mut ChatClient,
    group: &str,
    settings: Value,
    members: &mut [&mut ChatClient],
) -> Result<()> {
    let mut create = json!({"type": "create_group", "group": group});
    if let (Some(create), Some(settings)) = (create.as_object_mut(), settings.as_object()) {
        create.extend(settings.clone());
    }
    assert_eq!(owner.request(create).await?["action"], "created");
    for member in members.iter_mut() {
        let invited = owner
            .request(json!({"type": "invite", "group": group, "uid": member.uid}))
            .await?;
        assert_eq!(invited["action"], "invited", "{invited}");
        let joined = member.request(json!({"type": "join_group", "group": group})).await?;
        assert_eq!(joined["action"], "joined", "{joined}");
    }
    Ok(())
}

fn texts(messages: &[Value]) -> Vec<&str> {
    messages.iter().filter_map(|m| m["text"].as_str()).collect()
}

/// The first attack of issue #10: `mallory` guessed the group's name, joined it, and read
/// alice's earlier messages and its member list. Groups are invite-only now, and nothing of a
/// group is readable without membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_cannot_walk_into_a_group_nor_read_or_list_it() -> Result<()> {
    let db = ChatDatabase::sqlite();
    let cluster = chat_cluster(&db, &[]).await?;
    let mut alice = ChatClient::connect_as(&cluster.ws_url(0), "alice").await?;
    let mut mallory = ChatClient::connect_as(&cluster.ws_url(1), "mallory").await?;
    group_with(&mut alice, "team", json!({}), &mut []).await?;
    assert_eq!(
        alice.send_to_group("team", "the secret plan", "s1").await?["type"],
        "ack"
    );

    refused(
        &mut mallory,
        json!({"type": "join_group", "group": "team"}),
        "not_invited",
    )
    .await?;
    refused(
        &mut mallory,
        json!({"type": "history", "conversation": "g:team"}),
        "not_member",
    )
    .await?;
    refused(&mut mallory, json!({"type": "members", "group": "team"}), "not_member").await?;
    refused(
        &mut mallory,
        json!({"type": "group_info", "group": "team"}),
        "not_member",
    )
    .await?;
    refused(
        &mut mallory,
        json!({"type": "invite", "group": "team", "uid": "mallory"}),
        "not_member",
    )
    .await?;
    let synced = mallory
        .request(json!({"type": "sync", "cursors": {"g:team": 0}}))
        .await?;
    assert_eq!(synced["messages"], json!([]), "{synced}");
    let info = alice.request(json!({"type": "group_info", "group": "team"})).await?;
    assert_eq!(
        (info["access"].clone(), info["history"].clone(), info["role"].clone()),
        (json!("invite"), json!("joined"), json!("owner"))
    );
    Ok(())
}

/// With the default `joined` history a newcomer reads what was sent after it joined, through
/// history and catch-up alike, and nothing from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_reads_only_what_was_said_after_it_joined() -> Result<()> {
    let db = ChatDatabase::sqlite();
    let cluster = chat_cluster(&db, &[]).await?;
    let mut alice = ChatClient::connect_as(&cluster.ws_url(0), "alice").await?;
    let mut carol = ChatClient::connect_as(&cluster.ws_url(1), "carol").await?;
    group_with(&mut alice, "team", json!({}), &mut []).await?;
    alice.send_to_group("team", "before carol", "b1").await?;
    alice
        .request(json!({"type": "invite", "group": "team", "uid": "carol"}))
        .await?;
    carol.request(json!({"type": "join_group", "group": "team"})).await?;
    alice.send_to_group("team", "after carol", "a1").await?;

    let history = carol
        .request(json!({"type": "history", "conversation": "g:team"}))
        .await?;
    assert_eq!(texts(history["messages"].as_array().unwrap()), vec!["after carol"]);
    let mut cursors = serde_json::Map::new();
    let synced = carol.sync_all(&mut cursors).await?;
    assert_eq!(texts(&synced), vec!["after carol"]);

    // A group created with shared history shows a newcomer everything.
    group_with(&mut alice, "open-book", json!({"history": "shared"}), &mut []).await?;
    alice.send_to_group("open-book", "chapter one", "c1").await?;
    alice
        .request(json!({"type": "invite", "group": "open-book", "uid": "carol"}))
        .await?;
    carol
        .request(json!({"type": "join_group", "group": "open-book"}))
        .await?;
    let history = carol
        .request(json!({"type": "history", "conversation": "g:open-book"}))
        .await?;
    assert_eq!(texts(history["messages"].as_array().unwrap()), vec!["chapter one"]);
    Ok(())
}

/// A kick takes effect before it is answered: every device of the kicked user is told, stops
/// getting the group's messages, and reads nothing more of it. Proven in order: after the kick,
/// alice writes to the group and then directly to bob; bob's devices get the direct message
/// and never the group message, which would have arrived first on the same path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_member_stops_receiving_and_reading_the_group_at_once() -> Result<()> {
    let db = ChatDatabase::sqlite();
    let cluster = chat_cluster(&db, &[]).await?;
    let mut alice = ChatClient::connect_as(&cluster.ws_url(0), "alice").await?;
    let mut bob_phone = ChatClient::connect_as(&cluster.ws_url(1), "bob").await?;
    let mut bob_laptop = ChatClient::connect_as(&cluster.ws_url(0), "bob").await?;
    group_with(&mut alice, "team", json!({}), &mut [&mut bob_phone]).await?;
    let ack = alice.send_to_group("team", "welcome bob", "w1").await?;
    for device in [&mut bob_phone, &mut bob_laptop] {
        assert_eq!(device.next_message().await?["id"], ack["id"]);
    }

    let kicked = alice
        .request(json!({"type": "kick", "group": "team", "uid": "bob"}))
        .await?;
    assert_eq!(
        (kicked["action"].as_str(), kicked["uid"].as_str()),
        (Some("kicked"), Some("bob"))
    );
    for device in [&mut bob_phone, &mut bob_laptop] {
        let notice = device.next_of("removed").await?;
        assert_eq!(
            (
                notice["group"].as_str(),
                notice["by"].as_str(),
                notice["reason"].as_str()
            ),
            (Some("team"), Some("alice"), Some("kicked"))
        );
    }
    alice.send_to_group("team", "bob must not see this", "x1").await?;
    alice.send_to("bob", "marker", "m1").await?;
    for device in [&mut bob_phone, &mut bob_laptop] {
        let seen = device.messages_until("marker").await?;
        assert_eq!(texts(&seen), vec!["marker"], "only the marker after the kick");
    }
    refused(
        &mut bob_phone,
        json!({"type": "history", "conversation": "g:team"}),
        "not_member",
    )
    .await?;
    refused(
        &mut bob_laptop,
        json!({"type": "members", "group": "team"}),
        "not_member",
    )
    .await?;
    let refusal = bob_phone.send_to_group("team", "let me back", "r1").await?;
    assert_eq!(refusal["code"], "not_member");
    refused(
        &mut bob_phone,
        json!({"type": "join_group", "group": "team"}),
        "not_invited",
    )
    .await?;
    Ok(())
}

/// A ban removes the member and keeps it out, even of an open group and even when invited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_user_cannot_come_back_even_to_an_open_group() -> Result<()> {
    let db = ChatDatabase::sqlite();
    let cluster = chat_cluster(&db, &[]).await?;
    let mut alice = ChatClient::connect_as(&cluster.ws_url(0), "alice").await?;
    let mut bob = ChatClient::connect_as(&cluster.ws_url(1), "bob").await?;
    let mut carol = ChatClient::connect_as(&cluster.ws_url(1), "carol").await?;
    group_with(&mut alice, "lobby", json!({"access": "open"}), &mut []).await?;
    assert_eq!(
        carol.request(json!({"type": "join_group", "group": "lobby"})).await?["action"],
        "joined",
        "anyone may join an open group"
    );
    bob.request(json!({"type": "join_group", "group": "lobby"})).await?;
    refused(
        &mut carol,
        json!({"type": "ban", "group": "lobby", "uid": "bob"}),
        "forbidden",
    )
    .await?;
    assert_eq!(
        alice
            .request(json!({"type": "ban", "group": "lobby", "uid": "bob"}))
            .await?["action"],
        "banned"
    );
    assert_eq!(bob.next_of("removed").await?["reason"], "banned");
    refused(&mut bob, json!({"type": "join_group", "group": "lobby"}), "banned").await?;
    refused(
        &mut alice,
        json!({"type": "invite", "group": "lobby", "uid": "bob"}),
        "banned",
    )
    .await?;
    refused(
        &mut alice,
        json!({"type": "kick", "group": "lobby", "uid": "alice2"}),
        "not_member",
    )
    .await?;
    alice
        .request(json!({"type": "unban", "group": "lobby", "uid": "bob"}))
        .await?;
    assert_eq!(
        bob.request(json!({"type": "join_group", "group": "lobby"})).await?["action"],
        "joined"
    );
    Ok(())
}

/// The lock-out attack of issue #10: eve piles maximal messages on bob (4,000 × U+0001 each,
/// about 24 KB of JSON), more than a megabyte in all, so that one `sync` answer was larger
/// than any frame the gateway writes and bob's connection died at every reconnect. Replies
/// now page by bytes: every frame fits the reply budget (256 KiB by default), bob stays
/// connected, and gets every message, in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pile_of_maximal_messages_cannot_lock_a_user_out() -> Result<()> {
    const PILE: usize = 50;
    const BUDGET: usize = 256 * 1024;
    let db = ChatDatabase::sqlite();
    // Without a send limit: the rate limit would only slow the attack down; the byte budget
    // of the replies is what defeats it.
    let cluster = chat_cluster(&db, &["--chat-send-rate", "0"]).await?;
    let mut eve = ChatClient::connect_as(&cluster.ws_url(0), "eve").await?;
    let bob = ChatClient::connect_as(&cluster.ws_url(1), "bob").await?;
    bob.ws.close().await?;
    let heavy = "\u{1}".repeat(4000);
    for i in 0..PILE {
        let ack = eve.send_to("bob", &heavy, &format!("heavy-{i}")).await?;
        assert_eq!(ack["type"], "ack", "{ack}");
    }

    let mut bob = ChatClient::connect_as(&cluster.ws_url(1), "bob").await?;
    let mut cursors = serde_json::Map::new();
    let mut received = Vec::new();
    let mut pages = 0;
    loop {
        let (page, bytes) = bob
            .request_sized(json!({"type": "sync", "cursors": cursors.clone(), "limit": 1000}))
            .await?;
        assert_eq!(page["type"], "sync", "{page}");
        assert!(bytes <= BUDGET, "a sync frame of {bytes} bytes");
        pages += 1;
        for message in page["messages"].as_array().cloned().unwrap_or_default() {
            cursors.insert(
                message["conversation"].as_str().unwrap_or_default().to_owned(),
                message["seq"].clone(),
            );
            received.push(message);
        }
        if page["more"] != json!(true) {
            break;
        }
        assert!(pages <= PILE, "sync makes progress");
    }
    assert!(pages >= 5, "{pages} pages for {PILE} messages of 24 KB");
    let seqs: Vec<i64> = received.iter().filter_map(|m| m["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=PILE as i64).collect::<Vec<_>>());
    assert!(received.iter().all(|m| m["text"] == json!(heavy)));

    let (history, bytes) = bob
        .request_sized(json!({"type": "history", "conversation": "d:bob:eve", "limit": 200}))
        .await?;
    assert!(bytes <= BUDGET, "a history frame of {bytes} bytes");
    let page = history["messages"].as_array().map(Vec::len).unwrap_or_default();
    assert!(
        page > 0 && page < PILE && history["more"] == json!(true),
        "{page} messages, more: {}",
        history["more"]
    );
    assert_eq!(
        history["messages"][page - 1]["seq"],
        json!(PILE),
        "the newest page ends with the newest message"
    );
    assert_eq!(bob.send_to("eve", "still here", "alive").await?["type"], "ack");
    Ok(())
}

/// Every client-supplied collection and string has a bound, refused with a precise code:
/// `limit_exceeded` names the bound and its value; nothing unbounded is quoted back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_collections_and_strings_are_refused_with_precise_codes() -> Result<()> {
    let db = ChatDatabase::sqlite();
    let cluster = chat_cluster(&db, &[]).await?;
    let mut max = ChatClient::connect_as(&cluster.ws_url(0), "max").await?;
    let cursors: serde_json::Map<String, Value> = (0..1001).map(|i| (format!("g:c{i}"), json!(0))).collect();
    let answer = refused(&mut max, json!({"type": "sync", "cursors": cursors}), "limit_exceeded").await?;
    assert_eq!(
        (answer["limit"].as_str(), answer["max"].as_u64()),
        (Some("cursors"), Some(1000))
    );
    let answer = refused(
        &mut max,
        json!({"type": "create_group", "group": "g", "name": "n".repeat(101)}),
        "limit_exceeded",
    )
    .await?;
    assert_eq!(
        (answer["limit"].as_str(), answer["max"].as_u64()),
        (Some("name_chars"), Some(100))
    );
    refused(
        &mut max,
        json!({"type": "history", "conversation": "g:../../etc"}),
        "invalid_field",
    )
    .await?;
    refused(&mut max, json!({"type": "sync", "cursors": {"x": 1}}), "invalid_field").await?;
    refused(
        &mut max,
        json!({"type": "create_group", "group": "g".repeat(65)}),
        "invalid_field",
    )
    .await?;
    max.ws
        .send_json(&json!({"type": "conversations", "cid": "c".repeat(5000)}))
        .await?;
    let answer = max.ws.recv_json().await?;
    assert_eq!(
        (answer["code"].as_str(), answer["cid"].clone()),
        (Some("invalid_field"), Value::Null)
    );
    max.ws.send_json(&json!({"type": "t".repeat(20000)})).await?;
    let answer = max.ws.recv_text().await?;
    assert!(
        answer.len() < 512,
        "an unknown type is not quoted back in full: {answer}"
    );
    // 1000 cursors are fine.
    let cursors: serde_json::Map<String, Value> = (0..1000).map(|i| (format!("g:c{i}"), json!(0))).collect();
    assert_eq!(
        max.request(json!({"type": "sync", "cursors": cursors})).await?["type"],
        "sync"
    );
    Ok(())
}

/// `online` answers for the asker's contacts only (direct peers and fellow group members), no
/// longer for every uid of the cluster: a stranger learns nothing of who is connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shown_to_contacts_only() -> Result<()> {
    let db = ChatDatabase::sqlite();
    let cluster = chat_cluster(&db, &[]).await?;
    let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let mut bob = ChatClient::connect_as(&cluster.ws_url(1), "bob").await?;
    let mut cat = ChatClient::connect_as(&cluster.ws_url(1), "cat").await?;
    let _dan = ChatClient::connect_as(&cluster.ws_url(0), "dan").await?;
    let mut mal = ChatClient::connect_as(&cluster.ws_url(0), "mal").await?;
    ann.send_to("bob", "hi", "h1").await?;
    group_with(&mut ann, "team", json!({}), &mut [&mut cat]).await?;

    let seen = ann.request(json!({"type": "online"})).await?;
    assert_eq!(seen["uids"], json!(["ann", "bob", "cat"]), "{seen}");
    assert_eq!(seen["more"], false);
    assert_eq!(
        bob.request(json!({"type": "online"})).await?["uids"],
        json!(["ann", "bob"])
    );
    assert_eq!(
        mal.request(json!({"type": "online"})).await?["uids"],
        json!(["mal"]),
        "a stranger sees only itself"
    );
    cat.ws.close().await?;
    // Presence follows connections; a closed one disappears once its gateway has said so.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let seen = ann.request(json!({"type": "online"})).await?;
        if seen["uids"] == json!(["ann", "bob"]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "cat still online: {seen}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------------------------

/// A 32-byte HS256 secret for the token tests.
const SECRET: &str = "test-secret-of-at-least-32-bytes";

/// The test key pairs of `crates/gatehouse-chat/tests/keys` (for tests only).
fn key(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("crates/gatehouse-chat/tests/keys")
        .join(name)
}

/// Runs `gatehouse ARGS` with `env` to completion, for at most 20 s (a process that should have
/// refused to start but runs instead is killed, and the test fails on its exit code); returns
/// (exit code, stdout, stderr).
fn gatehouse_with(args: &[&str], env: &[(&str, &str)]) -> Result<(Option<i32>, String, String)> {
    let mut command = std::process::Command::new(gatehouse_bin());
    command
        .args(args)
        .env_remove("GATEHOUSE_JWT_SECRET")
        .env_remove("GATEHOUSE_INSECURE_DEV_AUTH")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().context("running gatehouse")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait()?.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output()?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// [`gatehouse_with`] in a clean environment.
fn gatehouse(args: &[&str]) -> Result<(Option<i32>, String, String)> {
    gatehouse_with(args, &[])
}

/// A token from `gatehouse token`.
fn token(args: &[&str]) -> Result<String> {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    match gatehouse(&all)? {
        (Some(0), token, _) => Ok(token),
        (code, _, stderr) => bail!("gatehouse token exited with {code:?}: {stderr}"),
    }
}

/// A cluster whose workers verify tokens with `worker` flags (no dev mode anywhere).
async fn token_cluster(db: &ChatDatabase, worker: &[&str]) -> Result<Cluster> {
    let url = db.url();
    let mut worker_args = vec!["--database-url", url.as_str()];
    worker_args.extend_from_slice(worker);
    Cluster::builder()
        .gateways(2)
        .workers("chat", 2)
        .worker_args(&worker_args)
        .start()
        .await
}

async fn refusal(url: &str) -> Result<(u16, String)> {
    match ChatClient::try_connect(url).await? {
        Err(Refusal::Http(status, reason)) => Ok((status, reason)),
        Err(other) => bail!("{url}: {other:?}"),
        Ok(_) => bail!("{url} was accepted"),
    }
}

/// Dev mode needs consent on both sides: a gateway in insecure dev mode no longer makes a
/// worker without it accept a bare `?uid=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_in_dev_mode_cannot_make_a_worker_accept_bare_uids() -> Result<()> {
    let db = ChatDatabase::sqlite();
    let url = db.url();
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("chat", 1)
        .gateway_args(&["--insecure-dev-auth"])
        .worker_args(&["--database-url", &url])
        .start()
        .await?;
    let (status, reason) = refusal(&format!("{}?uid=mallory", cluster.ws_url(0))).await?;
    assert_eq!(status, 401, "{reason}");
    assert!(reason.contains("worker is not in insecure dev mode"), "{reason}");
    Ok(())
}

/// A worker refuses to start in dev mode with a production credential, with a secret too
/// short to be safe, and with the benchmarks' message sink outside dev mode (it loses messages
/// by design); `gatehouse token` refuses the short secret too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_with_a_jwt_key_short_secrets_and_the_benchmark_sink_in_production_are_refused_at_start() -> Result<()>
{
    let worker = |extra: &[&str]| {
        let mut args = vec![
            "worker",
            "--app",
            "chat",
            "--registry",
            "127.0.0.1:9",
            "--cluster-secret",
            "test-cluster-secret",
            "--database-url",
            "sqlite::memory:",
        ];
        args.extend_from_slice(extra);
        gatehouse(&args)
    };
    let (code, _, stderr) = worker(&["--insecure-dev-auth", "--jwt-secret", SECRET])?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "refused at start, not killed: {code:?}"
    );
    assert!(stderr.contains("insecure dev auth"), "{stderr}");
    let public = key("es256-public.pem");
    let (code, _, stderr) = worker(&[
        "--insecure-dev-auth",
        "--jwt-public-key",
        public.to_str().unwrap_or_default(),
    ])?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "refused at start, not killed: {code:?}"
    );
    assert!(stderr.contains("insecure dev auth"), "{stderr}");
    let (code, _, stderr) = worker(&["--jwt-secret", "only-16-bytes..."])?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "refused at start, not killed: {code:?}"
    );
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    let (code, _, stderr) = worker(&["--jwt-secret", SECRET, "--chat-bench-discard-messages"])?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "refused at start, not killed: {code:?}"
    );
    assert!(stderr.contains("benchmarks only"), "{stderr}");
    let (code, _, stderr) = gatehouse(&["token", "--uid", "ann", "--jwt-secret", "only-16-bytes..."])?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "refused at start, not killed: {code:?}"
    );
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    Ok(())
}

/// ES256 tokens verified with a public key file, with the issuer and the audience checked:
/// the right token signs in, a token for another audience or issuer, or signed with a shared
/// secret instead of the private key, is refused with 401 and a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_tokens_are_checked_for_issuer_and_audience() -> Result<()> {
    let db = ChatDatabase::sqlite();
    let public = key("es256-public.pem");
    let private = key("es256-private.pem");
    let private = private.to_str().unwrap_or_default();
    let cluster = token_cluster(
        &db,
        &[
            "--jwt-public-key",
            public.to_str().unwrap_or_default(),
            "--jwt-issuer",
            "https://id.example",
            "--jwt-audience",
            "chat",
        ],
    )
    .await?;
    let ws = cluster.ws_url(0);
    let good = token(&[
        "--uid",
        "ann",
        "--jwt-private-key",
        private,
        "--jwt-issuer",
        "https://id.example",
        "--jwt-audience",
        "chat",
    ])?;
    let ann = ChatClient::connect(&format!("{ws}?token={good}")).await?;
    assert_eq!(ann.uid, "ann");
    for (args, reason) in [
        (
            vec![
                "--uid",
                "ann",
                "--jwt-private-key",
                private,
                "--jwt-issuer",
                "https://id.example",
                "--jwt-audience",
                "billing",
            ],
            "wrong audience",
        ),
        (
            vec![
                "--uid",
                "ann",
                "--jwt-private-key",
                private,
                "--jwt-issuer",
                "https://evil.example",
                "--jwt-audience",
                "chat",
            ],
            "wrong issuer",
        ),
        (
            vec![
                "--uid",
                "ann",
                "--jwt-secret",
                SECRET,
                "--jwt-issuer",
                "https://id.example",
                "--jwt-audience",
                "chat",
            ],
            "invalid token",
        ),
    ] {
        let (status, refused) = refusal(&format!("{ws}?token={}", token(&args)?)).await?;
        assert_eq!(status, 401);
        assert!(refused.contains(reason), "{args:?}: {refused}");
    }
    let (status, reason) = refusal(&format!("{ws}?uid=ann")).await?;
    assert_eq!(status, 401, "no bare uids: {reason}");
    Ok(())
}

/// A token's expiry ends its connection: the gateway sends `token_expiring`, then closes with
/// 4001 at `exp`, even though the worker that signed it in is not involved any more. A
/// connection that refreshes in time (same uid) lives on; a refresh naming another uid, or a
/// bad token, is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_warned_then_closed_with_4001_unless_refreshed() -> Result<()> {
    let db = ChatDatabase::sqlite();
    let cluster = token_cluster(&db, &["--jwt-secret", SECRET]).await?;
    let ws = cluster.ws_url(1);
    let short = |uid: &str| token(&["--uid", uid, "--jwt-secret", SECRET, "--ttl", "3s"]);
    let (ann_token, bob_token) = (short("ann")?, short("bob")?);
    let mut ann = ChatClient::connect(&format!("{ws}?token={ann_token}")).await?;
    let mut bob = ChatClient::connect(&format!("{ws}?token={bob_token}")).await?;
    for client in [&mut ann, &mut bob] {
        let warning = client.next_of("token_expiring").await?;
        assert!(warning["expires_at"].as_u64().is_some(), "{warning}");
    }

    let other = token(&["--uid", "carl", "--jwt-secret", SECRET, "--ttl", "1h"])?;
    let refused = bob.request(json!({"type": "refresh", "token": other})).await?;
    assert_eq!(refused["code"], "subject_mismatch", "{refused}");
    let refused = bob.request(json!({"type": "refresh", "token": "garbage"})).await?;
    assert_eq!(refused["code"], "invalid_token", "{refused}");
    let fresh = token(&["--uid", "bob", "--jwt-secret", SECRET, "--ttl", "1h"])?;
    let refreshed = bob.request(json!({"type": "refresh", "token": fresh})).await?;
    assert_eq!(refreshed["type"], "refreshed", "{refreshed}");
    let hour_ms = 3_600_000u64;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let expires = refreshed["expires_at"].as_u64().unwrap_or_default();
    assert!(expires > now_ms + hour_ms - 60_000, "{refreshed}");

    // ann did not refresh: closed with 4001 at her token's expiry, the same second as bob's
    // old one. bob, refreshed, is still there afterwards.
    let code = tokio::time::timeout(Duration::from_secs(15), ann.ws.expect_close()).await??;
    assert_eq!(code, 4001);
    assert_eq!(
        bob.request(json!({"type": "conversations"})).await?["type"],
        "conversations"
    );
    Ok(())
}

/// `gatehouse dev` keeps its one-command promise: dev mode on its gateway and its chat worker,
/// so a bare `?uid=` signs in; with a JWT secret in the environment it refuses to start and
/// says why, instead of silently running a dev shortcut next to a production credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatehouse_dev_signs_in_bare_uids_and_refuses_to_run_with_a_jwt_secret() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("gatehouse-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("dev.db").display());
    let args: Vec<String> = ["dev", "--listen", "127.0.0.1:0", "--database-url", &db]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let dev = gatehouse_testkit::Process::start("dev", args.clone(), &["ws"]).await?;
    let mut alice = ChatClient::connect_as(&format!("ws://{}/ws", dev.addr("ws")), "alice").await?;
    assert_eq!(
        alice.request(json!({"type": "conversations"})).await?["type"],
        "conversations"
    );
    drop(dev);

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = gatehouse_with(&args, &[("GATEHOUSE_JWT_SECRET", SECRET)])?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "refused at start, not killed: {code:?}"
    );
    assert!(stderr.contains("insecure dev auth"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A uid with as many connections as allowed cluster-wide (counted across both gateways) is
/// refused the next one with 429; other uids are not affected, and closing one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_cannot_open_more_connections_than_allowed() -> Result<()> {
    let db = ChatDatabase::sqlite();
    let cluster = chat_cluster(&db, &["--chat-max-connections-per-uid", "2"]).await?;
    let first = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let _second = ChatClient::connect_as(&cluster.ws_url(1), "ann").await?;
    let (status, reason) = refusal(&format!("{}?uid=ann", cluster.ws_url(0))).await?;
    assert_eq!(status, 429, "{reason}");
    assert!(reason.contains("at most 2"), "{reason}");
    let _ben = ChatClient::connect_as(&cluster.ws_url(0), "ben").await?;
    first.ws.close().await?;
    // The closed connection leaves the count once its gateway has released it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ChatClient::try_connect(&format!("{}?uid=ann", cluster.ws_url(1))).await? {
            Ok(third) => {
                assert_eq!(third.uid, "ann");
                break;
            }
            Err(Refusal::Http(429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => bail!("{other:?}"),
        }
    }
    Ok(())
}

/// The tests that count stored rows with the `sqlite3` shell (`gatehouse_testkit::services`).
mod needs_sqlite3 {
    use super::*;

    /// A user blocks another: the blocked user's direct messages and invitations are refused with
    /// `blocked`, nothing is stored or pushed, and everyone else still gets through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_user_can_neither_message_nor_invite() -> Result<()> {
        let db = ChatDatabase::sqlite();
        let cluster = chat_cluster(&db, &[]).await?;
        let mut bob = ChatClient::connect_as(&cluster.ws_url(0), "bob").await?;
        let mut eve = ChatClient::connect_as(&cluster.ws_url(1), "eve").await?;
        let mut ann = ChatClient::connect_as(&cluster.ws_url(1), "ann").await?;
        let blocked = bob.request(json!({"type": "block", "uid": "eve"})).await?;
        assert_eq!(
            (blocked["type"].as_str(), blocked["action"].as_str()),
            (Some("block"), Some("blocked"))
        );
        assert_eq!(bob.request(json!({"type": "blocks"})).await?["uids"], json!(["eve"]));

        let refusal = eve.send_to("bob", "you cannot ignore me", "e1").await?;
        assert_eq!(refusal["code"], "blocked", "{refusal}");
        group_with(&mut eve, "eves", json!({}), &mut []).await?;
        refused(
            &mut eve,
            json!({"type": "invite", "group": "eves", "uid": "bob"}),
            "blocked",
        )
        .await?;
        assert_eq!(db.stored_messages()?, 0);
        ann.send_to("bob", "marker", "a1").await?;
        assert_eq!(texts(&bob.messages_until("marker").await?), vec!["marker"]);

        bob.request(json!({"type": "unblock", "uid": "eve"})).await?;
        assert_eq!(eve.send_to("bob", "hello again", "e2").await?["type"], "ack");
        assert_eq!(bob.next_message().await?["text"], "hello again");
        refused(
            &mut bob,
            json!({"type": "block", "uid": "nobody-signed-in"}),
            "unknown_user",
        )
        .await?;
        Ok(())
    }

    /// Reusing a cid for another message used to be acknowledged as a duplicate of the old one
    /// while the new one was silently dropped. Now it is a `cid_conflict`: nothing stored, nothing
    /// pushed (proven by a later marker arriving alone), and an identical resend is still a
    /// duplicate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cid_reused_for_another_message_is_refused_not_dropped() -> Result<()> {
        let db = ChatDatabase::sqlite();
        let cluster = chat_cluster(&db, &[]).await?;
        let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
        let mut ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
        let mut cat = ChatClient::connect_as(&cluster.ws_url(1), "cat").await?;
        let first = ann.send_to("ben", "the original", "c1").await?;
        assert_eq!(first["type"], "ack");
        assert_eq!(ben.next_message().await?["text"], "the original");

        let elsewhere = ann.send_to("cat", "for cat", "c1").await?;
        assert_eq!(
            (elsewhere["code"].as_str(), elsewhere["cid"].as_str()),
            (Some("cid_conflict"), Some("c1"))
        );
        let edited = ann.send_to("ben", "the original, edited", "c1").await?;
        assert_eq!(edited["code"], "cid_conflict", "{edited}");
        assert_eq!(db.stored_messages()?, 1);
        let again = ann.send_to("ben", "the original", "c1").await?;
        assert_eq!(
            (again["duplicate"].as_bool(), again["id"].clone()),
            (Some(true), first["id"].clone())
        );

        ann.send_to("cat", "marker", "c2").await?;
        assert_eq!(texts(&cat.messages_until("marker").await?), vec!["marker"]);
        ann.send_to("ben", "marker", "c3").await?;
        let seen = ben.messages_until("marker").await?;
        assert_eq!(
            texts(&seen),
            vec!["the original", "marker"],
            "the identical resend is pushed again (clients drop it by id), the conflicting one never"
        );
        Ok(())
    }

    /// Per-connection rate limits: a send over the limit is refused with `rate_limited` and the
    /// time to wait, nothing is stored, other requests draw from their own bucket, waiting as told
    /// works; a connection that keeps sending while refused is closed with 1008 and counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_is_refused_with_retry_after_and_a_relentless_one_is_closed() -> Result<()> {
        let db = ChatDatabase::sqlite();
        let limits = [
            "--chat-send-rate",
            "2",
            "--chat-send-burst",
            "3",
            "--chat-request-rate",
            "5",
            "--chat-request-burst",
            "5",
        ];
        let cluster = chat_cluster(&db, &limits).await?;
        let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
        let _ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
        for i in 0..3 {
            assert_eq!(ann.send_to("ben", "burst", &format!("b{i}")).await?["type"], "ack");
        }
        let refused = ann.send_to("ben", "one too many", "b3").await?;
        assert_eq!(refused["code"], "rate_limited", "{refused}");
        let wait = refused["retry_after_ms"].as_u64().unwrap_or_default();
        assert!((1..=500).contains(&wait), "retry after {wait} ms at 2 per second");
        assert_eq!(db.stored_messages()?, 3, "a refused send stores nothing");
        assert_eq!(
            ann.request(json!({"type": "conversations"})).await?["type"],
            "conversations",
            "other requests have their own bucket"
        );
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        assert_eq!(
            ann.send_to("ben", "one too many", "b3").await?["type"],
            "ack",
            "after the wait"
        );

        // Relentless: frames without waiting for answers, far past the limit.
        let mut flood = ChatClient::connect_as(&cluster.ws_url(1), "flood").await?;
        for i in 0..200 {
            if flood
                .send_raw(&json!({"type": "conversations", "cid": format!("f{i}")}))
                .await
                .is_err()
            {
                break;
            }
        }
        let mut codes = std::collections::BTreeMap::<String, usize>::new();
        let close = loop {
            match flood.ws.recv_within(std::time::Duration::from_secs(10)).await? {
                Ok(message) => {
                    let frame: Value = serde_json::from_str(message.to_text()?)?;
                    let key = frame["code"]
                        .as_str()
                        .unwrap_or(frame["type"].as_str().unwrap_or("?"))
                        .to_owned();
                    *codes.entry(key).or_default() += 1;
                }
                Err(gatehouse_testkit::client::Refusal::Closed(code)) => break code,
                Err(other) => anyhow::bail!("unexpected {other:?}"),
            }
        };
        assert_eq!(close, 1008, "closed for policy violation; answers: {codes:?}");
        assert!(codes.get("rate_limited").copied().unwrap_or_default() > 50, "{codes:?}");
        let worker_logs: String = cluster.workers.iter().map(|w| w.log_text()).collect();
        assert!(
            worker_logs.contains("refused by the per-connection rate limit"),
            "the refusals are counted in the worker's log"
        );
        Ok(())
    }
}
