//! The chat service end to end, on a real cluster (two gateways, two chat workers) against each
//! database: SQLite (a file per test), PostgreSQL and MariaDB (a fresh database per test).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Result;
use gatehouse_testkit::client::Refusal;
use gatehouse_testkit::cluster::metric;
use gatehouse_testkit::{ChatClient, ChatDatabase, Cluster};
use serde_json::{Value, json};

type Backend = ChatDatabase;

async fn chat_cluster(backend: &Backend) -> Result<Cluster> {
    chat_cluster_with(backend, &[]).await
}

/// [`chat_cluster`] with `extra` worker flags. Gateways and workers are in insecure dev mode:
/// bare `?uid=` sign-in needs it on both.
async fn chat_cluster_with(backend: &Backend, extra: &[&str]) -> Result<Cluster> {
    let url = backend.url();
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

async fn direct_and_group_messages_cross_gateways(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend).await?;
    let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let mut ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
    let ack = ann.send_to("ben", "hello ben", "c1").await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["conversation"], "d:ann:ben");
    assert_eq!(ack["seq"], 1);
    let pushed = ben.next_message().await?;
    assert_eq!(
        (pushed["from"].clone(), pushed["to"].clone(), pushed["text"].clone()),
        (json!("ann"), json!("ben"), json!("hello ben"))
    );
    assert_eq!(pushed["id"], ack["id"]);
    assert_eq!(pushed["cid"], "c1");

    assert_eq!(
        ann.request(json!({"type": "create_group", "group": "team", "name": "Team"}))
            .await?["action"],
        "created"
    );
    assert_eq!(
        ann.request(json!({"type": "invite", "group": "team", "uid": "ben"}))
            .await?["action"],
        "invited"
    );
    let invitation = ben.next_of("invited").await?;
    assert_eq!(
        (invitation["group"].clone(), invitation["by"].clone()),
        (json!("team"), json!("ann"))
    );
    assert_eq!(
        ben.request(json!({"type": "join_group", "group": "team"})).await?["action"],
        "joined"
    );
    let mut cat = ChatClient::connect_as(&cluster.ws_url(0), "cat").await?;
    let members = ann.request(json!({"type": "members", "group": "team"})).await?;
    assert_eq!(members["members"], json!(["ann", "ben"]));
    assert_eq!(members["roles"], json!({"ann": "owner"}));
    let ack = ben.send_to_group("team", "hi team", "g1").await?;
    assert_eq!(ack["conversation"], "g:team");
    let pushed = ann.next_message().await?;
    assert_eq!(
        (pushed["group"].clone(), pushed["from"].clone(), pushed["text"].clone()),
        (json!("team"), json!("ben"), json!("hi team"))
    );
    cat.expect_no_message(Duration::from_millis(300)).await?;
    let refused = cat.send_to_group("team", "let me in", "x1").await?;
    assert_eq!(refused["code"], "not_member");
    Ok(())
}

async fn an_offline_recipient_gets_everything_on_reconnect(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend).await?;
    let dan = ChatClient::connect_as(&cluster.ws_url(1), "dan").await?;
    dan.ws.close().await?;
    let mut eve = ChatClient::connect_as(&cluster.ws_url(0), "eve").await?;
    eve.request(json!({"type": "create_group", "group": "club"})).await?;
    let mut sent = Vec::new();
    for i in 0..23 {
        let text = format!("while you were away {i}");
        eve.send_to("dan", &text, &format!("away-{i}")).await?;
        sent.push(text);
    }
    // Dan comes back on the other gateway and catches up from an empty cursor, page by page.
    let mut dan = ChatClient::connect_as(&cluster.ws_url(0), "dan").await?;
    let mut cursors = serde_json::Map::new();
    let caught_up = dan.sync_all(&mut cursors).await?;
    let texts: Vec<&str> = caught_up.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, sent.iter().map(String::as_str).collect::<Vec<_>>());
    let seqs: Vec<i64> = caught_up.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=23).collect::<Vec<_>>());
    // With the advanced cursor, nothing more; after one new message, exactly that one.
    assert!(dan.sync_all(&mut cursors).await?.is_empty());
    eve.send_to("dan", "one more", "away-x").await?;
    let newer = dan.sync_all(&mut cursors).await?;
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0]["text"], "one more");
    let list = dan.request(json!({"type": "conversations"})).await?;
    assert_eq!(list["conversations"][0]["unread"], 24);
    let read = dan
        .request(json!({"type": "read", "conversation": "d:dan:eve", "seq": 24}))
        .await?;
    assert_eq!(read["seq"], 24);
    let back = dan
        .request(json!({"type": "read", "conversation": "d:dan:eve", "seq": 3}))
        .await?;
    assert_eq!(back["seq"], 24, "read markers never move back");
    Ok(())
}

async fn history_pages_backwards(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend).await?;
    let mut fay = ChatClient::connect_as(&cluster.ws_url(0), "fay").await?;
    let _gus = ChatClient::connect_as(&cluster.ws_url(1), "gus").await?;
    for i in 1..=12 {
        fay.send_to("gus", &format!("m{i}"), &format!("h{i}")).await?;
    }
    let newest = fay
        .request(json!({"type": "history", "conversation": "d:fay:gus", "limit": 5}))
        .await?;
    let seqs = |page: &Value| {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&newest), vec![8, 9, 10, 11, 12]);
    assert_eq!(newest["more"], true);
    let older = fay
        .request(json!({"type": "history", "conversation": "d:fay:gus", "before": 8, "limit": 5}))
        .await?;
    assert_eq!(seqs(&older), vec![3, 4, 5, 6, 7]);
    let oldest = fay
        .request(json!({"type": "history", "conversation": "d:fay:gus", "before": 3, "limit": 5}))
        .await?;
    assert_eq!(seqs(&oldest), vec![1, 2]);
    assert_eq!(oldest["more"], false);
    let mut stranger = ChatClient::connect_as(&cluster.ws_url(1), "hal").await?;
    let refused = stranger
        .request(json!({"type": "history", "conversation": "d:fay:gus"}))
        .await?;
    assert_eq!(refused["code"], "not_member");
    // Hal's own conversation with Fay exists in name only: an empty page, not an error.
    let empty = stranger
        .request(json!({"type": "history", "conversation": "d:fay:hal"}))
        .await?;
    assert_eq!(
        (empty["type"].clone(), empty["messages"].clone()),
        (json!("history"), json!([]))
    );
    Ok(())
}

async fn a_resend_with_the_same_cid_is_stored_and_delivered_once(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend).await?;
    let mut ivy = ChatClient::connect_as(&cluster.ws_url(0), "ivy").await?;
    let mut jon = ChatClient::connect_as(&cluster.ws_url(1), "jon").await?;
    let first = ivy.send_to("jon", "only once", "dup-1").await?;
    let again = ivy.send_to("jon", "only once", "dup-1").await?;
    assert_eq!(first["duplicate"], false);
    assert_eq!(again["duplicate"], true);
    for field in ["id", "seq", "ts", "conversation"] {
        assert_eq!(
            first[field], again[field],
            "{field} differs between the ack and the resend's ack"
        );
    }
    let history = jon
        .request(json!({"type": "history", "conversation": "d:ivy:jon"}))
        .await?;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    assert_eq!(backend.stored_messages()?, 1);
    // The recipient may see a repeated push; it is the same message (same id).
    let pushed = jon.next_message().await?;
    assert_eq!(pushed["id"], first["id"]);
    Ok(())
}

async fn every_device_of_both_users_sees_a_message(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend).await?;
    let mut kim_phone = ChatClient::connect_as(&cluster.ws_url(0), "kim").await?;
    let mut kim_laptop = ChatClient::connect_as(&cluster.ws_url(1), "kim").await?;
    let mut leo_phone = ChatClient::connect_as(&cluster.ws_url(1), "leo").await?;
    let mut leo_laptop = ChatClient::connect_as(&cluster.ws_url(0), "leo").await?;
    let ack = kim_phone.send_to("leo", "on every screen", "md-1").await?;
    for device in [&mut kim_laptop, &mut leo_phone, &mut leo_laptop] {
        let pushed = device.next_message().await?;
        assert_eq!(pushed["id"], ack["id"]);
    }
    kim_phone.expect_no_message(Duration::from_millis(300)).await?;
    Ok(())
}

async fn bad_input_gets_a_typed_error_and_stores_nothing(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend).await?;
    let mut max = ChatClient::connect_as(&cluster.ws_url(0), "max").await?;
    let _ned = ChatClient::connect_as(&cluster.ws_url(1), "ned").await?;
    let cases: Vec<(&str, &str)> = vec![
        ("{not json", "bad_json"),
        ("[1,2]", "bad_json"),
        (r#"{"cid":"e1"}"#, "unknown_type"),
        (r#"{"type":"teleport","cid":"e2"}"#, "unknown_type"),
        (r#"{"type":"send","to":"ned","cid":"e3"}"#, "missing_field"),
        (r#"{"type":"send","text":"hi","cid":"e4"}"#, "missing_field"),
        (r#"{"type":"send","to":"ned","text":"hi"}"#, "missing_field"),
        (r#"{"type":"send","to":42,"text":"hi","cid":"e5"}"#, "invalid_field"),
        (
            r#"{"type":"send","to":"ned","text":["hi"],"cid":"e6"}"#,
            "invalid_field",
        ),
        (
            r#"{"type":"send","to":"ned","group":"g","text":"hi","cid":"e7"}"#,
            "invalid_field",
        ),
        (r#"{"type":"send","to":"ned","text":"","cid":"e8"}"#, "empty_text"),
        (r#"{"type":"send","to":"ned","text":"   ","cid":"e9"}"#, "empty_text"),
        (
            r#"{"type":"send","to":"nobody-here","text":"hi","cid":"e10"}"#,
            "unknown_recipient",
        ),
        (
            r#"{"type":"send","group":"ghosts","text":"hi","cid":"e11"}"#,
            "unknown_group",
        ),
        (
            r#"{"type":"history","conversation":"d:ned:zed","cid":"e12"}"#,
            "not_member",
        ),
        (r#"{"type":"sync","limit":"all","cid":"e13"}"#, "invalid_field"),
    ];
    let long = format!(
        r#"{{"type":"send","to":"ned","text":"{}","cid":"e14"}}"#,
        "x".repeat(4001)
    );
    for (frame, code) in cases.iter().copied().chain([(long.as_str(), "text_too_long")]) {
        max.ws.send_text(frame).await?;
        let answer = max.ws.recv_json().await?;
        assert_eq!(answer["type"], "error", "{frame} -> {answer}");
        assert_eq!(answer["code"], code, "{frame} -> {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    max.ws.send_binary(vec![1, 2, 3]).await?;
    assert_eq!(max.ws.recv_json().await?["code"], "bad_json");
    max.request(json!({"type": "create_group", "group": "taken"})).await?;
    assert_eq!(
        max.request(json!({"type": "create_group", "group": "taken"})).await?["code"],
        "group_exists"
    );
    // The error echoes the cid, and the connection still works.
    max.ws
        .send_text(r#"{"type":"send","to":"ned","text":"","cid":"echo-me"}"#)
        .await?;
    assert_eq!(max.ws.recv_json().await?["cid"], "echo-me");
    assert_eq!(backend.stored_messages()?, 0);
    assert_eq!(max.send_to("ned", "finally valid", "ok-1").await?["type"], "ack");
    assert_eq!(backend.stored_messages()?, 1);
    Ok(())
}

async fn killing_a_chat_worker_loses_no_acknowledged_message(backend: Backend) -> Result<()> {
    // Each sender writes about 200 messages a second, ten times the per-connection default.
    let mut cluster = chat_cluster_with(&backend, &["--chat-send-rate", "0"]).await?;
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 60;
    let mut reader = ChatClient::connect_as(&cluster.ws_url(1), "sink").await?;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let url = cluster.ws_url(s % 2);
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let uid = format!("src{s}");
            // Send each message until it is acknowledged, reconnecting when the connection or
            // the worker fails: what a real client does with its unacknowledged messages.
            let mut client = ChatClient::connect_as(&url, &uid).await?;
            let mut acked = Vec::new();
            for i in 0..PER_SENDER {
                let cid = format!("{uid}-{i}");
                loop {
                    match tokio::time::timeout(
                        Duration::from_secs(3),
                        client.send_to("sink", &format!("{uid} #{i}"), &cid),
                    )
                    .await
                    {
                        Ok(Ok(ack)) if ack["type"] == "ack" => {
                            acked.push(ack["id"].as_i64().unwrap());
                            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                        _ => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if let Ok(fresh) = ChatClient::connect_as(&url, &uid).await {
                                client = fresh;
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(acked)
        }));
    }
    // Kill mid-stream: once a quarter of the messages are acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while progress.load(std::sync::atomic::Ordering::Relaxed) < SENDERS * PER_SENDER / 4 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.workers[0].kill().await;
    let mut acked = HashSet::new();
    for task in tasks {
        acked.extend(task.await??);
    }
    assert_eq!(
        acked.len(),
        SENDERS * PER_SENDER,
        "an ack repeated an id: a resend was stored twice"
    );
    // Every acknowledged message is stored exactly once, and the recipient gets all of them.
    assert_eq!(backend.stored_messages()?, (SENDERS * PER_SENDER) as i64);
    let mut cursors = serde_json::Map::new();
    let all = reader.sync_all(&mut cursors).await?;
    let ids: HashSet<i64> = all.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, acked);
    let mut per_conversation: HashMap<String, Vec<i64>> = HashMap::new();
    for message in &all {
        per_conversation
            .entry(message["conversation"].as_str().unwrap().to_owned())
            .or_default()
            .push(message["seq"].as_i64().unwrap());
    }
    for (conversation, seqs) in per_conversation {
        assert_eq!(
            seqs,
            (1..=PER_SENDER as i64).collect::<Vec<_>>(),
            "{conversation} has gaps or repeats"
        );
    }
    Ok(())
}

async fn handshakes_need_a_valid_identity(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend).await?;
    for (query, status) in [("", 401), ("?token=not-a-jwt", 401), ("?uid=bad%20name", 400)] {
        match ChatClient::try_connect(&format!("{}{query}", cluster.ws_url(0))).await? {
            Err(Refusal::Http(code, reason)) => {
                assert_eq!(code, status, "{query}: {reason}");
                assert!(!reason.trim().is_empty());
            }
            Err(other) => panic!("{query}: {other:?}"),
            Ok(_) => panic!("{query} was accepted"),
        }
    }
    Ok(())
}

/// The group commit's families in the workers' `/metrics`, summed over both workers (a client
/// lands on either). Every family is there before the first send; then each acknowledged
/// message is counted in exactly one batch, each acknowledged receipt too, and the queue is
/// empty once every answer is in: the writer records a batch before it answers its callers.
async fn the_group_commit_reports_batches_latency_and_queue_depth(backend: Backend) -> Result<()> {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 10;
    let cluster = chat_cluster_with(&backend, &["--chat-send-rate", "0"]).await?;
    let admins: Vec<_> = cluster.workers.iter().map(|w| w.addr("admin")).collect();
    let total = async |series: &str| -> Result<u64> {
        let mut sum = 0;
        for admin in &admins {
            sum += metric(*admin, series).await?;
        }
        Ok(sum)
    };
    for kind in ["messages", "markers"] {
        for family in [
            "gatehouse_chat_commit_batch_items_count",
            "gatehouse_chat_commit_batch_items_sum",
            "gatehouse_chat_commit_seconds_count",
            "gatehouse_chat_commit_failures_total",
        ] {
            assert_eq!(
                total(&format!("{family}{{kind=\"{kind}\"}}")).await?,
                0,
                "{family} {kind}"
            );
        }
    }
    for admin in &admins {
        assert_eq!(metric(*admin, "gatehouse_chat_commit_queue_depth").await?, 0);
        assert_eq!(metric(*admin, "gatehouse_chat_commit_queue_capacity").await?, 4096);
    }

    // Four senders at once (on both gateways), so batches can hold more than one message.
    let mut sink = ChatClient::connect_as(&cluster.ws_url(1), "sink").await?;
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let url = cluster.ws_url(s % 2);
        tasks.push(tokio::spawn(async move {
            let uid = format!("src{s}");
            let mut client = ChatClient::connect_as(&url, &uid).await?;
            for i in 0..PER_SENDER {
                let ack = client.send_to("sink", &format!("#{i}"), &format!("{uid}-{i}")).await?;
                anyhow::ensure!(ack["type"] == "ack", "{ack}");
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let sent = (SENDERS * PER_SENDER) as u64;
    let messages = "{kind=\"messages\"}";
    assert_eq!(
        total(&format!("gatehouse_chat_commit_batch_items_sum{messages}")).await?,
        sent,
        "every acknowledged message was written in one batch"
    );
    let batches = total(&format!("gatehouse_chat_commit_batch_items_count{messages}")).await?;
    assert!((1..=sent).contains(&batches), "{batches} batches for {sent} messages");
    assert_eq!(
        total(&format!("gatehouse_chat_commit_seconds_count{messages}")).await?,
        batches,
        "one commit time per batch"
    );

    // A read receipt is a marker batch of its own kind.
    let read = sink
        .request(json!({"type": "read", "conversation": "d:sink:src0", "seq": PER_SENDER}))
        .await?;
    assert_eq!(read["seq"], json!(PER_SENDER), "{read}");
    let markers = "{kind=\"markers\"}";
    assert_eq!(
        total(&format!("gatehouse_chat_commit_batch_items_sum{markers}")).await?,
        1
    );
    assert_eq!(
        total(&format!("gatehouse_chat_commit_seconds_count{markers}")).await?,
        1
    );

    for kind in [messages, markers] {
        assert_eq!(total(&format!("gatehouse_chat_commit_failures_total{kind}")).await?, 0);
    }
    for admin in &admins {
        assert_eq!(metric(*admin, "gatehouse_chat_commit_queue_depth").await?, 0);
    }
    Ok(())
}

gatehouse_testkit::on_every_database!(
    direct_and_group_messages_cross_gateways,
    an_offline_recipient_gets_everything_on_reconnect,
    history_pages_backwards,
    a_resend_with_the_same_cid_is_stored_and_delivered_once,
    every_device_of_both_users_sees_a_message,
    bad_input_gets_a_typed_error_and_stores_nothing,
    killing_a_chat_worker_loses_no_acknowledged_message,
    handshakes_need_a_valid_identity,
    the_group_commit_reports_batches_latency_and_queue_depth,
);

/// What only MariaDB needs showing (the scenarios above run on every database).
mod mariadb_only {
    mod needs_mariadb {
        use crate::*;

        /// A chat cluster on MariaDB survives a restart of every chat worker: the new worker process
        /// finds its schema migrated, continues the conversation's sequence where it stopped, answers a
        /// resend from before the restart as a duplicate, and a recipient's catch-up returns every
        /// message once, in order.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn mariadb_history_survives_a_restart_of_every_chat_worker() -> Result<()> {
            let backend = Backend::mariadb();
            let mut cluster = chat_cluster(&backend).await?;
            let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
            let ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
            ben.ws.close().await?;
            for i in 1..=5 {
                let ack = ann.send_to("ben", &format!("before {i}"), &format!("b{i}")).await?;
                assert_eq!(ack["seq"], i, "{ack}");
            }
            for worker in &mut cluster.workers {
                worker.kill().await;
            }
            cluster.add_worker("chat").await?;
            cluster.wait_workers(1).await?;

            let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
            for i in 6..=8 {
                let ack = ann.send_to("ben", &format!("after {i}"), &format!("a{i}")).await?;
                assert_eq!(ack["seq"], i, "{ack}");
            }
            let resend = ann.send_to("ben", "before 2", "b2").await?;
            assert_eq!(
                (resend["seq"].clone(), resend["duplicate"].clone()),
                (json!(2), json!(true))
            );

            let mut ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
            let caught_up = ben.sync_all(&mut serde_json::Map::new()).await?;
            let seqs: Vec<i64> = caught_up.iter().map(|m| m["seq"].as_i64().unwrap_or(0)).collect();
            assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
            assert_eq!(caught_up[7]["text"], "after 8");
            assert_eq!(backend.stored_messages()?, 8);
            Ok(())
        }

        /// `gatehouse dev --database-url mysql://…` keeps the one-process cluster's history in MariaDB.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn gatehouse_dev_keeps_its_history_in_mariadb() -> Result<()> {
            let backend = Backend::mariadb();
            let url = backend.url();
            let args = ["dev", "--listen", "127.0.0.1:0", "--database-url", url.as_str()]
                .map(str::to_owned)
                .to_vec();
            let dev = gatehouse_testkit::Process::start("dev", args, &["ws"]).await?;
            let ws = format!("ws://{}/ws", dev.addr("ws"));
            let mut bob = ChatClient::connect_as(&ws, "bob").await?;
            let mut alice = ChatClient::connect_as(&ws, "alice").await?;
            let ack = alice.send_to("bob", "stored in MariaDB", "m1").await?;
            assert_eq!(
                (ack["type"].clone(), ack["seq"].clone()),
                (json!("ack"), json!(1)),
                "{ack}"
            );
            assert_eq!(bob.next_message().await?["text"], "stored in MariaDB");
            assert_eq!(
                backend.count("SELECT count(*) FROM messages WHERE text = 'stored in MariaDB'")?,
                1
            );
            Ok(())
        }
    }
}

/// The benchmarks' message sink (its acceptance on SQLite; the store's count needs the sqlite3
/// shell).
mod sink {
    mod needs_sqlite3 {
        use crate::*;

        /// `--chat-bench-discard-messages`, the benchmarks' way to measure the chat path without its
        /// storage: messages are acknowledged and pushed as usual, and none reaches the database.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_benchmark_sink_acknowledges_and_pushes_every_message_and_stores_none() -> Result<()> {
            let backend = Backend::sqlite();
            let cluster = chat_cluster_with(&backend, &["--chat-bench-discard-messages"]).await?;
            let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
            let mut ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
            for i in 1..=3 {
                let ack = ann.send_to("ben", &format!("m{i}"), &format!("c{i}")).await?;
                assert_eq!(
                    (ack["type"].clone(), ack["seq"].clone()),
                    (json!("ack"), json!(i)),
                    "{ack}"
                );
                let pushed = ben.next_message().await?;
                assert_eq!(
                    (pushed["text"].clone(), pushed["id"].clone()),
                    (json!(format!("m{i}")), ack["id"].clone())
                );
            }
            assert_eq!(backend.stored_messages()?, 0, "nothing reached the database");
            Ok(())
        }
    }
}
