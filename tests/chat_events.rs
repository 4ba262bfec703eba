//! Protocol 2 of the chat service end to end (docs/protocol.md, "Protocol 2"), on a real
//! cluster (two gateways, two chat workers) against SQLite, PostgreSQL and MariaDB: bounded catch-up,
//! seq on every push and the heartbeat that reveals a missed last push, edits and deletes,
//! replies and reactions, receipts, typing, presence and search.

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use gatehouse_testkit::{ChatClient, ChatDatabase, Cluster};
use serde_json::{Map, Value, json};

type Backend = ChatDatabase;

async fn chat_cluster(backend: &Backend, extra: &[&str]) -> Result<Cluster> {
    let url = backend.url();
    let mut worker_args = vec![
        "--database-url",
        url.as_str(),
        "--insecure-dev-auth",
        "--chat-send-rate",
        "0",
    ];
    worker_args.extend_from_slice(extra);
    Cluster::builder()
        .gateways(2)
        .workers("chat", 2)
        .gateway_args(&["--insecure-dev-auth"])
        .worker_args(&worker_args)
        .start()
        .await
}

fn texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// What a client holds: per conversation, the events by seq. Repeats are dropped by
/// `(conversation, seq)`, and `missing` says whether the seqs held have a hole.
#[derive(Default)]
struct Replica {
    held: BTreeMap<String, BTreeMap<i64, Value>>,
}

impl Replica {
    fn highest(&self, conversation: &str) -> i64 {
        self.held
            .get(conversation)
            .and_then(|events| events.keys().next_back().copied())
            .unwrap_or(0)
    }

    /// Keeps a pushed or synced event; returns `true` when it reveals a gap (its seq is beyond
    /// the next one expected).
    fn keep(&mut self, event: &Value) -> bool {
        let conversation = event["conversation"].as_str().unwrap_or_default().to_owned();
        let seq = event["seq"].as_i64().unwrap_or_default();
        let gap = seq > self.highest(&conversation) + 1;
        self.held.entry(conversation).or_default().insert(seq, event.clone());
        gap
    }

    /// The highest seq up to which every event is held: what a sync may start from.
    fn contiguous(&self, conversation: &str) -> i64 {
        let Some(events) = self.held.get(conversation) else {
            return 0;
        };
        let mut through = 0;
        while events.contains_key(&(through + 1)) {
            through += 1;
        }
        through
    }

    fn cursors(&self) -> Map<String, Value> {
        self.held
            .keys()
            .map(|c| (c.clone(), json!(self.contiguous(c))))
            .collect()
    }

    /// Catches up from the highest seq held, following `more`.
    async fn sync(&mut self, client: &mut ChatClient) -> Result<()> {
        loop {
            let answer = client
                .request(json!({"type": "sync", "cursors": self.cursors()}))
                .await?;
            ensure!(answer["type"] == "sync", "{answer}");
            for event in answer["messages"].as_array().cloned().unwrap_or_default() {
                self.keep(&event);
            }
            if answer["more"] != json!(true) {
                return Ok(());
            }
        }
    }

    fn seqs(&self, conversation: &str) -> Vec<i64> {
        self.held
            .get(conversation)
            .map(|events| events.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// A new device gets, per conversation, only the latest window, conversations most recently
/// active first with their unread counts; older events come through `history`, and the next
/// sync from the stored cursors brings exactly what is new.
async fn a_new_device_gets_the_latest_window_of_each_conversation(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend, &["--chat-sync-window", "10"]).await?;
    let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
    let mut ben = ben;
    ann.request(json!({"type": "create_group", "group": "big", "access": "open"}))
        .await?;
    ben.request(json!({"type": "join_group", "group": "big"})).await?;
    for i in 1..=30 {
        ann.send_to_group("big", &format!("big {i}"), &format!("b{i}")).await?;
    }
    for i in 1..=3 {
        ann.send_to("ben", &format!("dm {i}"), &format!("d{i}")).await?;
    }
    ben.ws.close().await?;

    let mut ben = ChatClient::connect_as(&cluster.ws_url(0), "ben").await?;
    let answer = ben.request(json!({"type": "sync", "cursors": {}})).await?;
    assert_eq!(answer["more"], false, "{answer}");
    let conversations = answer["conversations"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = conversations.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, vec!["d:ann:ben", "g:big"], "most recent activity first");
    let direct = &conversations[0];
    assert_eq!(
        (
            direct["limited"].clone(),
            direct["from_seq"].clone(),
            direct["cursor"].clone()
        ),
        (json!(false), json!(1), json!(3))
    );
    assert_eq!(
        (direct["unread"].clone(), direct["peer_or_group"].clone()),
        (json!(3), json!("ann"))
    );
    let group = &conversations[1];
    assert_eq!(
        (
            group["limited"].clone(),
            group["from_seq"].clone(),
            group["cursor"].clone(),
            group["unread"].clone()
        ),
        (json!(true), json!(21), json!(30), json!(30))
    );
    let messages = answer["messages"].as_array().cloned().unwrap_or_default();
    let expected: Vec<String> = (1..=3)
        .map(|i| format!("dm {i}"))
        .chain((21..=30).map(|i| format!("big {i}")))
        .collect();
    assert_eq!(texts(&messages), expected);
    assert_eq!(answer["counter"], 33, "the change counter is the sum of last_seq");

    // Older events on demand, from the window's start.
    let older = ben
        .request(json!({"type": "history", "conversation": "g:big", "before": 21, "limit": 200}))
        .await?;
    let older_texts = texts(older["messages"].as_array().unwrap());
    assert_eq!(older_texts, (1..=20).map(|i| format!("big {i}")).collect::<Vec<_>>());

    // From the stored cursors: nothing, then exactly the new message.
    let cursors: Map<String, Value> = conversations
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_owned(), c["cursor"].clone()))
        .collect();
    let again = ben.request(json!({"type": "sync", "cursors": cursors})).await?;
    assert_eq!(
        (again["messages"].clone(), again["conversations"].clone()),
        (json!([]), json!([]))
    );
    ann.send_to_group("big", "big 31", "b31").await?;
    let newer = ben.request(json!({"type": "sync", "cursors": cursors})).await?;
    assert_eq!(texts(newer["messages"].as_array().unwrap()), vec!["big 31"]);
    assert_eq!(newer["conversations"][0]["limited"], false);

    // A page cut by `limit` reports the cursor it reached, and the next page continues there.
    // The group is now the most recently active conversation, so it comes first.
    let first = ben.request(json!({"type": "sync", "cursors": {}, "limit": 5})).await?;
    assert_eq!(first["more"], true);
    let entries = first["conversations"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{first}");
    assert_eq!(
        (
            entries[0]["id"].clone(),
            entries[0]["from_seq"].clone(),
            entries[0]["cursor"].clone()
        ),
        (json!("g:big"), json!(22), json!(26)),
        "{first}"
    );
    let cursors: Map<String, Value> = entries
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_owned(), c["cursor"].clone()))
        .collect();
    let rest = ben
        .request(json!({"type": "sync", "cursors": cursors, "limit": 100}))
        .await?;
    let seqs: Vec<(String, i64)> = rest["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["conversation"].as_str().unwrap().to_owned(),
                m["seq"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = (27..=31)
        .map(|s| ("g:big".to_owned(), s))
        .chain((1..=3).map(|s| ("d:ann:ben".to_owned(), s)))
        .collect();
    assert_eq!(seqs, expected);
    assert_eq!(rest["conversations"][0]["limited"], false, "{rest}");
    Ok(())
}

/// A client that loses pushes finds out by itself: a later push's seq reveals a hole, and the
/// heartbeat reveals a lost last push. It ends with every event exactly once, in order.
async fn a_client_that_misses_pushes_notices_and_catches_up(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend, &[]).await?;
    let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let mut ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
    let welcome_free = ben.request(json!({"type": "ping"})).await?;
    assert_eq!(welcome_free["type"], "pong", "{welcome_free}");
    let mut replica = Replica::default();
    let mut syncs = 0;
    // Every second push is dropped on purpose, the last one included.
    for i in 1..=9 {
        ann.send_to("ben", &format!("m{i}"), &format!("c{i}")).await?;
        let pushed = ben.next_message().await?;
        assert_eq!(pushed["seq"], i, "pushes carry the conversation's seq: {pushed}");
        if i % 2 == 0 {
            continue;
        }
        if replica.keep(&pushed) {
            replica.sync(&mut ben).await?;
            syncs += 1;
        }
    }
    assert_eq!(replica.seqs("d:ann:ben"), (1..=9).collect::<Vec<_>>());
    ann.send_to("ben", "the last one", "c10").await?;
    let lost = ben.next_message().await?;
    assert_eq!(lost["seq"], 10);
    // Nothing else will come: only the heartbeat tells the client.
    let pong = ben.request(json!({"type": "ping"})).await?;
    assert_eq!(pong["counter"], 10, "{pong}");
    let latest = pong["latest"].as_array().cloned().unwrap_or_default();
    let behind = latest
        .iter()
        .any(|c| c["last_seq"].as_i64().unwrap_or(0) > replica.highest(c["conversation"].as_str().unwrap_or("")));
    assert!(behind, "the pong reveals the missed last message: {pong}");
    replica.sync(&mut ben).await?;
    assert_eq!(replica.seqs("d:ann:ben"), (1..=10).collect::<Vec<_>>());
    assert_eq!(replica.held["d:ann:ben"][&10]["text"], "the last one");
    assert_eq!(syncs, 4, "one sync per hole revealed by a later push");
    let pong = ben.request(json!({"type": "ping"})).await?;
    let current = pong["latest"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["last_seq"].as_i64().unwrap_or(0) <= replica.highest(c["conversation"].as_str().unwrap_or("")));
    assert!(current, "{pong}");
    Ok(())
}

/// Edits and deletes are events of the sequence: pushed with their seq, delivered by sync to
/// a device that was away, and history shows the final state.
async fn edits_and_deletes_are_events_with_a_final_state(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend, &[]).await?;
    let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let mut ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
    ann.request(json!({"type": "create_group", "group": "team", "history": "shared"}))
        .await?;
    ann.request(json!({"type": "invite", "group": "team", "uid": "ben"}))
        .await?;
    ben.request(json!({"type": "join_group", "group": "team"})).await?;
    let first = ann.send_to_group("team", "helo", "t1").await?;
    let mine = ben.send_to_group("team", "oops", "t2").await?;
    let keep = ben.send_to_group("team", "keep me", "t3").await?;
    let (first_id, mine_id, keep_id) = (first["id"].clone(), mine["id"].clone(), keep["id"].clone());

    let edited = ann
        .request(json!({"type": "edit", "conversation": "g:team", "id": first_id, "text": "hello"}))
        .await?;
    assert_eq!(
        (edited["type"].clone(), edited["seq"].clone()),
        (json!("ack"), json!(4)),
        "{edited}"
    );
    let pushed = ben.next_of("edit").await?;
    assert_eq!(
        (pushed["seq"].clone(), pushed["target"].clone(), pushed["text"].clone()),
        (json!(4), first_id.clone(), json!("hello"))
    );
    let refused = ben
        .request(json!({"type": "edit", "conversation": "g:team", "id": first_id, "text": "mine now"}))
        .await?;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = ben
        .request(json!({"type": "edit", "conversation": "g:team", "id": 999_999, "text": "x"}))
        .await?;
    assert_eq!(refused["code"], "unknown_message", "{refused}");

    // The owner deletes another member's message; the author deletes its own.
    let deleted = ann
        .request(json!({"type": "delete", "conversation": "g:team", "id": mine_id}))
        .await?;
    assert_eq!(deleted["seq"], 5, "{deleted}");
    let pushed = ben.next_of("delete").await?;
    assert_eq!(
        (pushed["target"].clone(), pushed["by_admin"].clone()),
        (mine_id.clone(), json!(true))
    );
    let again = ben
        .request(json!({"type": "edit", "conversation": "g:team", "id": mine_id, "text": "back"}))
        .await?;
    assert_eq!(again["code"], "message_deleted", "{again}");
    let own = ben
        .request(json!({"type": "delete", "conversation": "g:team", "id": keep_id}))
        .await?;
    assert_eq!(own["seq"], 6);
    let cannot = ben
        .request(json!({"type": "delete", "conversation": "g:team", "id": first_id}))
        .await?;
    assert_eq!(cannot["code"], "forbidden", "a member deletes only its own: {cannot}");

    // A resend of a change with the same cid is a duplicate, not a second event.
    ann.send_raw(&json!({"type": "edit", "conversation": "g:team", "id": first_id, "text": "hello!", "cid": "e-1"}))
        .await?;
    let once = ann.answer_for("e-1").await?;
    ann.send_raw(&json!({"type": "edit", "conversation": "g:team", "id": first_id, "text": "hello!", "cid": "e-1"}))
        .await?;
    let twice = ann.answer_for("e-1").await?;
    assert_eq!(
        (once["seq"].clone(), twice["duplicate"].clone()),
        (json!(7), json!(true))
    );
    assert_eq!(twice["seq"], 7);

    // A device that was away gets the events in order; history shows the final state.
    let mut cat_cursors = Map::new();
    let mut cat = ChatClient::connect_as(&cluster.ws_url(0), "ben").await?;
    let events = cat.sync_all(&mut cat_cursors).await?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        vec!["message", "message", "message", "edit", "delete", "delete", "edit"]
    );
    let history = cat
        .request(json!({"type": "history", "conversation": "g:team"}))
        .await?;
    let items = history["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 7);
    assert_eq!(
        (items[0]["text"].clone(), items[0]["edited"].is_i64()),
        (json!("hello!"), true)
    );
    assert_eq!(
        (items[1]["text"].clone(), items[1]["deleted"].clone()),
        (json!(""), json!(true))
    );
    assert_eq!(items[2]["deleted"], true);
    assert_eq!(
        backend.count("SELECT count(*) FROM messages WHERE deleted = 1 AND text <> ''")?,
        0,
        "tombstones keep no text"
    );
    Ok(())
}

/// Replies name a readable message of the same conversation; reactions add and remove as
/// events and history aggregates them.
async fn replies_and_reactions(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend, &[]).await?;
    let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let mut ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
    let question = ann.send_to("ben", "lunch?", "q1").await?;
    let qid = question["id"].clone();
    ben.next_message().await?;
    ben.send_raw(&json!({"type": "send", "to": "ann", "text": "yes!", "cid": "r1", "reply_to": qid}))
        .await?;
    let reply = ben.answer_for("r1").await?;
    assert_eq!(reply["type"], "ack", "{reply}");
    let pushed = ann.next_message().await?;
    assert_eq!(
        (pushed["text"].clone(), pushed["reply_to"].clone()),
        (json!("yes!"), qid.clone())
    );
    ben.send_raw(&json!({"type": "send", "to": "ann", "text": "?", "cid": "r2", "reply_to": 987_654}))
        .await?;
    assert_eq!(ben.answer_for("r2").await?["code"], "unknown_message");

    let react = |emoji: &str, action: &str| json!({"type": "react", "conversation": "d:ann:ben", "id": qid, "emoji": emoji, "action": action});
    let added = ben.request(react("👍", "add")).await?;
    assert_eq!(
        (added["changed"].clone(), added["seq"].clone()),
        (json!(true), json!(3)),
        "{added}"
    );
    let pushed = ann.next_of("reaction").await?;
    assert_eq!(
        (
            pushed["emoji"].clone(),
            pushed["action"].clone(),
            pushed["target"].clone(),
            pushed["seq"].clone()
        ),
        (json!("👍"), json!("add"), qid.clone(), json!(3))
    );
    assert_eq!(
        ben.request(react("👍", "add")).await?["changed"],
        false,
        "a reaction is there once"
    );
    ann.request(react("👍", "add")).await?;
    ann.request(react("🎉", "add")).await?;
    let history = ann
        .request(json!({"type": "history", "conversation": "d:ann:ben"}))
        .await?;
    assert_eq!(
        history["messages"][0]["reactions"],
        json!({"👍": 2, "🎉": 1}),
        "{history}"
    );
    ben.request(react("👍", "remove")).await?;
    let history = ben
        .request(json!({"type": "history", "conversation": "d:ann:ben"}))
        .await?;
    assert_eq!(history["messages"][0]["reactions"], json!({"👍": 1, "🎉": 1}));
    let bad = ben.request(react("two words", "add")).await?;
    assert_eq!(bad["code"], "invalid_field");
    Ok(())
}

/// Delivered and read receipts reach the author; a read marker reaches the reader's other
/// devices with the unread count; the peer's markers survive in the conversation list.
async fn receipts_reach_the_author_and_the_readers_other_devices(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend, &[]).await?;
    let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let mut ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
    let mut ben_phone = ChatClient::connect_as(&cluster.ws_url(0), "ben").await?;
    ann.send_to("ben", "one", "m1").await?;
    ann.send_to("ben", "two", "m2").await?;
    ben.next_message().await?;
    ben.send_raw(&json!({"type": "delivered", "conversation": "d:ann:ben", "seq": 2}))
        .await?;
    let receipt = ann.next_of("receipt").await?;
    assert_eq!(
        (receipt["kind"].clone(), receipt["uid"].clone(), receipt["seq"].clone()),
        (json!("delivered"), json!("ben"), json!(2))
    );
    let read = ben
        .request(json!({"type": "read", "conversation": "d:ann:ben", "seq": 1}))
        .await?;
    assert_eq!((read["seq"].clone(), read["unread"].clone()), (json!(1), json!(1)));
    let receipt = ann.next_of("receipt").await?;
    assert_eq!(
        (receipt["kind"].clone(), receipt["seq"].clone()),
        (json!("read"), json!(1))
    );
    let mirrored = ben_phone.next_of("read").await?;
    assert_eq!(
        (mirrored["seq"].clone(), mirrored["unread"].clone()),
        (json!(1), json!(1))
    );
    // Reading what is already read moves nothing and pushes nothing: the next receipt ann
    // gets is for seq 2.
    ben.request(json!({"type": "read", "conversation": "d:ann:ben", "seq": 1}))
        .await?;
    ben.request(json!({"type": "read", "conversation": "d:ann:ben", "seq": 2}))
        .await?;
    assert_eq!(ann.next_of("receipt").await?["seq"], 2);
    let list = ann.request(json!({"type": "sync", "cursors": {}})).await?;
    let entry = &list["conversations"][0];
    assert_eq!(
        (entry["peer_read_seq"].clone(), entry["peer_delivered_seq"].clone()),
        (json!(2), json!(2)),
        "{list}"
    );
    // In a group, the receipt goes to the author of the event at the marker only.
    ann.request(json!({"type": "create_group", "group": "team", "access": "open"}))
        .await?;
    ben.request(json!({"type": "join_group", "group": "team"})).await?;
    let mut cat = ChatClient::connect_as(&cluster.ws_url(1), "cat").await?;
    cat.request(json!({"type": "join_group", "group": "team"})).await?;
    cat.send_to_group("team", "from cat", "g1").await?;
    ben.request(json!({"type": "read", "conversation": "g:team", "seq": 1}))
        .await?;
    let receipt = cat.next_of("receipt").await?;
    assert_eq!(
        (receipt["conversation"].clone(), receipt["uid"].clone()),
        (json!("g:team"), json!("ben"))
    );
    let refused = cat
        .request(json!({"type": "delivered", "conversation": "d:ann:ben", "seq": 1}))
        .await?;
    assert_eq!(refused["code"], "not_member");
    Ok(())
}

/// Typing goes to the other members online, is refused to outsiders, and is rate limited
/// without closing the connection.
async fn typing_reaches_the_others_and_is_rate_limited(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend, &[]).await?;
    let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let mut ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
    let mut eve = ChatClient::connect_as(&cluster.ws_url(1), "eve").await?;
    let early = ann
        .request(json!({"type": "typing", "conversation": "d:ann:ben"}))
        .await?;
    assert_eq!(
        early["code"], "not_member",
        "a direct conversation exists from its first message"
    );
    ann.send_to("ben", "hi", "h1").await?;
    ann.send_raw(&json!({"type": "typing", "conversation": "d:ann:ben"}))
        .await?;
    let typing = ben.next_of("typing").await?;
    assert_eq!(
        (
            typing["uid"].clone(),
            typing["state"].clone(),
            typing["expires_ms"].clone()
        ),
        (json!("ann"), json!("start"), json!(6000))
    );
    let refused = eve
        .request(json!({"type": "typing", "conversation": "d:ann:ben"}))
        .await?;
    assert_eq!(refused["code"], "not_member");
    let mut codes = Vec::new();
    for _ in 0..8 {
        let answer = ann
            .request(json!({"type": "typing", "conversation": "d:ann:ben", "state": "stop"}))
            .await?;
        codes
            .push(answer["type"].as_str().unwrap_or_default().to_owned() + ":" + answer["code"].as_str().unwrap_or(""));
    }
    assert!(codes.iter().any(|c| c == "error:rate_limited"), "{codes:?}");
    assert_eq!(
        ann.send_to("ben", "still here", "h2").await?["type"],
        "ack",
        "the connection stays open"
    );
    Ok(())
}

/// Presence: contacts learn when a user's first device comes and when its last one has been
/// gone for the grace period; a reconnect within it is no flap.
async fn presence_follows_the_first_and_last_device(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend, &["--chat-presence-grace", "1500ms"]).await?;
    let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let mut ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
    ann.send_to("ben", "we are contacts now", "p1").await?;
    ben.next_message().await?;
    ben.ws.close().await?;
    let offline = ann.next_of("presence").await?;
    assert_eq!(
        (offline["uid"].clone(), offline["status"].clone()),
        (json!("ben"), json!("offline"))
    );
    assert!(offline["last_seen"].as_i64().unwrap_or(0) > 0, "{offline}");
    let online = ann.request(json!({"type": "online"})).await?;
    assert_eq!(online["uids"], json!(["ann"]));
    assert_eq!(online["last_seen"]["ben"], offline["last_seen"], "{online}");

    let ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
    let back = ann.next_of("presence").await?;
    assert_eq!(
        (back["uid"].clone(), back["status"].clone()),
        (json!("ben"), json!("online"))
    );
    // A second device and a quick reconnect of the first: no presence change at all.
    let phone = ChatClient::connect_as(&cluster.ws_url(0), "ben").await?;
    ben.ws.close().await?;
    let ben = ChatClient::connect_as(&cluster.ws_url(1), "ben").await?;
    phone.ws.close().await?;
    ben.ws.close().await?;
    let mut cat = ChatClient::connect_as(&cluster.ws_url(0), "cat").await?;
    let last = ann.next_of("presence").await?;
    assert_eq!(last["status"], "offline", "{last}");
    cat.send_to("ann", "marker", "mk").await?;
    let mut seen = Vec::new();
    loop {
        let frame = ann.ws.recv_json().await?;
        if frame["type"] == "presence" {
            seen.push(frame.clone());
        }
        if frame["text"] == "marker" {
            break;
        }
    }
    assert!(seen.iter().all(|p| p["uid"] != "ben"), "no flap: {seen:?}");
    Ok(())
}

/// Search finds what the user may read, ranked, with highlights that point at the words.
async fn search_is_ranked_highlighted_and_respects_visibility(backend: Backend) -> Result<()> {
    let cluster = chat_cluster(&backend, &[]).await?;
    let mut ann = ChatClient::connect_as(&cluster.ws_url(0), "ann").await?;
    let mut cat = ChatClient::connect_as(&cluster.ws_url(1), "cat").await?;
    ann.request(json!({"type": "create_group", "group": "ops", "access": "open"}))
        .await?;
    ann.send_to_group("ops", "the deploy failed again", "s1").await?;
    ann.send_to_group("ops", "lunch at noon", "s2").await?;
    cat.request(json!({"type": "join_group", "group": "ops"})).await?;
    let later = ann
        .send_to_group("ops", "deploy deploy: the deploy is green", "s3")
        .await?;
    let typo = ann.send_to_group("ops", "deplyo tomorrow", "s4").await?;
    ann.send_to("cat", "secret deploy plan", "s5").await?;

    let found = ann.request(json!({"type": "search", "query": "deploy"})).await?;
    let results = found["results"].as_array().cloned().unwrap_or_default();
    let mut texts_found: Vec<String> = texts(&results);
    assert_eq!(texts_found.len(), 3, "{found}");
    assert_eq!(
        texts_found[0], "deploy deploy: the deploy is green",
        "the densest match ranks first"
    );
    texts_found.sort();
    assert_eq!(
        texts_found,
        vec![
            "deploy deploy: the deploy is green",
            "secret deploy plan",
            "the deploy failed again"
        ]
    );
    for hit in &results {
        let snippet: Vec<char> = hit["snippet"].as_str().unwrap().chars().collect();
        let ranges = hit["highlights"].as_array().unwrap();
        assert!(!ranges.is_empty(), "{hit}");
        for range in ranges {
            let (a, b) = (range[0].as_u64().unwrap() as usize, range[1].as_u64().unwrap() as usize);
            assert_eq!(
                snippet[a..b].iter().collect::<String>().to_lowercase(),
                "deploy",
                "{hit}"
            );
        }
    }
    // A newcomer of a `joined` group finds only what came after it joined.
    let cats = cat.request(json!({"type": "search", "query": "deploy failed"})).await?;
    assert_eq!(cats["results"], json!([]), "{cats}");
    let cats = cat
        .request(json!({"type": "search", "query": "DEPLOY", "conversation": "g:ops"}))
        .await?;
    assert_eq!(
        texts(cats["results"].as_array().unwrap()),
        vec!["deploy deploy: the deploy is green"]
    );
    // Prefixes, paging, edits and deletes.
    let prefix = ann
        .request(json!({"type": "search", "query": "depl*", "limit": 2}))
        .await?;
    assert_eq!(
        (prefix["results"].as_array().unwrap().len(), prefix["more"].clone()),
        (2, json!(true))
    );
    let next = ann
        .request(json!({"type": "search", "query": "depl*", "limit": 2, "offset": prefix["next_offset"]}))
        .await?;
    assert_eq!(
        (next["results"].as_array().unwrap().len(), next["more"].clone()),
        (2, json!(false))
    );
    ann.request(json!({"type": "edit", "conversation": "g:ops", "id": typo["id"], "text": "rollout tomorrow"}))
        .await?;
    ann.request(json!({"type": "delete", "conversation": "g:ops", "id": later["id"]}))
        .await?;
    let after = ann.request(json!({"type": "search", "query": "depl*"})).await?;
    let mut left = texts(after["results"].as_array().unwrap());
    left.sort();
    assert_eq!(left, vec!["secret deploy plan", "the deploy failed again"]);
    let rollout = ann.request(json!({"type": "search", "query": "rollout"})).await?;
    assert_eq!(texts(rollout["results"].as_array().unwrap()), vec!["rollout tomorrow"]);
    let empty = ann.request(json!({"type": "search", "query": "?!"})).await?;
    assert_eq!(empty["code"], "invalid_field");
    Ok(())
}

/// Measurements, run by hand (`--ignored`).
mod measurement {
    mod needs_sqlite3 {
        use crate::*;

        /// Presence fan-out for a user with 1,000 contacts, all online: the time from its handshake
        /// to the last contact's `presence` frame. A measurement for docs/benchmarks.md (run it against
        /// a release binary: `GATEHOUSE_BIN=target/release/gatehouse cargo test --test chat_events --
        /// --ignored --nocapture`); it fails only if a contact is not told.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "measurement"]
        async fn presence_fan_out_to_a_thousand_contacts() -> Result<()> {
            const CONTACTS: usize = 1000;
            let backend = Backend::sqlite();
            let url = backend.url();
            let cluster = Cluster::builder()
                .gateways(2)
                .workers("chat", 2)
                // The contacts are read only at the end: a long ping interval keeps the gateways from
                // dropping them as silent while the hub writes to each of them in turn.
                .gateway_args(&[
                    "--insecure-dev-auth",
                    "--max-connections-per-ip",
                    "5000",
                    "--ping-interval",
                    "10m",
                ])
                .worker_args(&[
                    "--database-url",
                    url.as_str(),
                    "--insecure-dev-auth",
                    "--chat-send-rate",
                    "0",
                    "--chat-presence-grace",
                    "200ms",
                ])
                .start()
                .await?;
            let mut hub = ChatClient::connect_as(&cluster.ws_url(0), "hub").await?;
            let mut contacts = Vec::new();
            for i in 0..CONTACTS {
                contacts.push(ChatClient::connect_as(&cluster.ws_url(i % 2), &format!("c{i}")).await?);
            }
            for i in 0..CONTACTS {
                ensure!(hub.send_to(&format!("c{i}"), "hello", &format!("h{i}")).await?["type"] == "ack");
            }
            hub.ws.close().await?;
            // Everybody learns that the hub left, then it comes back: that announcement is timed.
            let mut waiting = Vec::new();
            for mut contact in contacts {
                waiting.push(tokio::spawn(async move {
                    let offline = contact.next_of("presence").await?;
                    ensure!(offline["status"] == "offline", "{offline}");
                    let online = contact.next_of("presence").await?;
                    ensure!(online["status"] == "online", "{online}");
                    anyhow::Ok(std::time::Instant::now())
                }));
            }
            // Wait for the offline announcement to have reached everyone before reconnecting: the
            // store says so (the hub's state flips to offline once the grace period is over).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while backend.count("SELECT count(*) FROM users WHERE uid = 'hub' AND present = 0")? == 0 {
                ensure!(std::time::Instant::now() < deadline, "the hub never went offline");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let started = std::time::Instant::now();
            let _hub = ChatClient::connect_as(&cluster.ws_url(0), "hub").await?;
            let mut arrivals = Vec::new();
            for task in waiting {
                arrivals.push(task.await??.saturating_duration_since(started).as_micros() as u64);
            }
            arrivals.sort_unstable();
            let at = |q: f64| arrivals[((arrivals.len() - 1) as f64 * q) as usize];
            let line = format!(
                "presence fan-out to {CONTACTS} online contacts: first {} µs, p50 {} µs, p99 {} µs, last {} µs after the handshake began",
                arrivals[0],
                at(0.5),
                at(0.99),
                arrivals[arrivals.len() - 1]
            );
            println!("{line}");
            // `GATEHOUSE_MEASUREMENT_OUT=docs/benchmarks-presence.md` keeps the figures in a generated
            // report with the command that produced them.
            if let Ok(out) = std::env::var("GATEHOUSE_MEASUREMENT_OUT") {
                let report = format!(
                    "# Benchmark: presence fan-out to a thousand contacts\n\n\
             Generated by `GATEHOUSE_BIN=target/release/gatehouse GATEHOUSE_MEASUREMENT_OUT={out} \
             cargo test --release --test chat_events -- --ignored presence_fan_out --nocapture` \
             (tests/chat_events.rs, `presence_fan_out_to_a_thousand_contacts`): two gateways, two chat workers \
             on SQLite, one user with {CONTACTS} direct contacts, all online, each contact on its own \
             connection; the user goes offline, then connects again, and the time from that handshake to \
             each contact's `presence` frame is measured (servers: the release binary; the test's \
             clients share the machine).\n\n- {line}\n"
                );
                std::fs::write(&out, report)?;
            }
            Ok(())
        }
    }
}

gatehouse_testkit::on_every_database!(
    a_new_device_gets_the_latest_window_of_each_conversation,
    a_client_that_misses_pushes_notices_and_catches_up,
    edits_and_deletes_are_events_with_a_final_state,
    replies_and_reactions,
    receipts_reach_the_author_and_the_readers_other_devices,
    typing_reaches_the_others_and_is_rate_limited,
    presence_follows_the_first_and_last_device,
    search_is_ranked_highlighted_and_respects_visibility,
);
