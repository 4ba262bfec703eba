//! Conformance cases of protocol 2: changes as events, reactions, replies, bounded catch-up,
//! receipt markers, presence flips and search (every backend).

use std::collections::HashMap;

use gatehouse_store::{
    ChangeAction, EventKind, Marker, NewChange, Offer, SearchQuery, Store, StoreError, direct_conversation_id,
};

use super::*;

const T0: i64 = 1_700_000_000_000;

fn change(conversation: &str, sender: &str, cid: &str, target: i64, action: ChangeAction) -> NewChange {
    NewChange {
        conversation: conversation.to_owned(),
        sender: sender.to_owned(),
        cid: cid.to_owned(),
        target,
        action,
        ts_ms: T0 + 1_000,
    }
}

fn edit(text: &str, window_ms: Option<i64>) -> ChangeAction {
    ChangeAction::Edit {
        text: text.to_owned(),
        window_ms,
    }
}

fn react(emoji: &str, add: bool) -> ChangeAction {
    ChangeAction::React {
        emoji: emoji.to_owned(),
        add,
    }
}

async fn everything(store: &Store, uid: &str, conversation: &str) -> Vec<gatehouse_store::StoredMessage> {
    store.history(uid, conversation, None, 1000).await.expect("history")
}

pub async fn changes_are_events_with_the_next_seq_and_a_final_state(ctx: Ctx) {
    let store = ctx.open().await;
    store
        .create_group("team", "alice", &open_shared(None))
        .await
        .expect("create");
    store.join_group("team", "bob").await.expect("join");
    let g = group_conversation_id("team");
    let first = ok(append_one(&store, gm("alice", "team", "1")).await).message;
    let bobs = ok(append_one(&store, gm("bob", "team", "2")).await).message;

    let edited = store
        .change(&change(&g, "alice", "e1", first.id, edit("fixed", Some(60_000))))
        .await
        .expect("edit");
    let event = edited.event.expect("an event");
    assert_eq!(
        (event.seq, event.kind, event.target),
        (3, EventKind::Edit, Some(first.id))
    );
    assert!(!edited.duplicate);
    let again = store
        .change(&change(&g, "alice", "e1", first.id, edit("fixed", Some(60_000))))
        .await
        .expect("resend");
    assert!(again.duplicate);
    assert_eq!(again.event.expect("original").seq, 3);
    assert!(matches!(
        store
            .change(&change(&g, "alice", "e1", first.id, edit("other", None)))
            .await,
        Err(StoreError::CidConflict { .. })
    ));
    assert!(matches!(
        store
            .change(&change(&g, "alice", "e2", first.id, edit("late", Some(10))))
            .await,
        Err(StoreError::EditWindowClosed { .. })
    ));
    assert!(matches!(
        store
            .change(&change(&g, "bob", "e3", first.id, edit("not mine", None)))
            .await,
        Err(StoreError::Forbidden { .. })
    ));
    assert!(matches!(
        store
            .change(&change(&g, "bob", "e4", 987_654, ChangeAction::Delete))
            .await,
        Err(StoreError::UnknownMessage { .. })
    ));
    let on_event = store
        .change(&change(&g, "bob", "e5", event.id, ChangeAction::Delete))
        .await;
    assert!(
        matches!(on_event, Err(StoreError::UnknownMessage { .. })),
        "an event is no message: {on_event:?}"
    );
    assert!(matches!(
        store
            .change(&change(&g, "mallory", "e6", first.id, ChangeAction::Delete))
            .await,
        Err(StoreError::NotMember { .. })
    ));
    // The owner deletes a member's message; then it is a tombstone.
    let deleted = store
        .change(&change(&g, "alice", "d1", bobs.id, ChangeAction::Delete))
        .await
        .expect("admin delete");
    assert!(deleted.by_admin);
    assert_eq!(deleted.event.expect("event").seq, 4);
    assert!(matches!(
        store
            .change(&change(&g, "bob", "e7", bobs.id, edit("back", None)))
            .await,
        Err(StoreError::MessageDeleted(_))
    ));
    let all = everything(&store, "bob", &g).await;
    assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!((all[0].text.as_str(), all[0].edited_ms), ("fixed", Some(T0 + 1_000)));
    assert_eq!((all[1].text.as_str(), all[1].deleted), ("", true));
    // A change moves its author's read marker like a message does.
    let summary = store.conversations_of("alice").await.expect("list");
    assert_eq!((summary[0].last_seq, summary[0].read_seq), (4, 4));
    // In a direct conversation nobody deletes the other's message.
    let dm1 = ok(append_one(&store, dm("alice", "bob", "3")).await).message;
    let ab = direct_conversation_id("alice", "bob");
    assert!(matches!(
        store
            .change(&change(&ab, "bob", "d2", dm1.id, ChangeAction::Delete))
            .await,
        Err(StoreError::Forbidden { .. })
    ));
    assert_eq!(store.reply_target("bob", &ab, dm1.id).await.ok(), Some(()));
    assert!(matches!(
        store.reply_target("bob", &ab, first.id).await,
        Err(StoreError::UnknownMessage { .. })
    ));
    let mut reply = dm("bob", "alice", "4");
    reply.reply_to = Some(dm1.id);
    let stored = ok(append_one(&store, reply).await).message;
    assert_eq!(stored.reply_to, Some(dm1.id));
    assert_eq!(everything(&store, "alice", &ab).await[1].reply_to, Some(dm1.id));
}

pub async fn reactions_aggregate_and_change_nothing_twice(ctx: Ctx) {
    let store = ctx.open().await;
    let ab = direct_conversation_id("alice", "bob");
    let m = ok(append_one(&store, dm("alice", "bob", "1")).await).message;
    let added = store
        .change(&change(&ab, "bob", "r1", m.id, react("👍", true)))
        .await
        .expect("react");
    assert_eq!(added.event.expect("event").kind, EventKind::ReactionAdd);
    let nothing = store
        .change(&change(&ab, "bob", "r2", m.id, react("👍", true)))
        .await
        .expect("again");
    assert_eq!(nothing.event, None, "a reaction is there once");
    store
        .change(&change(&ab, "alice", "r3", m.id, react("👍", true)))
        .await
        .expect("react");
    let counts = |store: &Store| {
        let store = store.clone();
        let ab = ab.clone();
        async move {
            let all = everything(&store, "alice", &ab).await;
            all[0]
                .reactions
                .as_deref()
                .map(|r| serde_json::from_str::<serde_json::Value>(r).expect("json"))
        }
    };
    assert_eq!(counts(&store).await, Some(serde_json::json!({"👍": 2})));
    store
        .change(&change(&ab, "bob", "r4", m.id, react("👍", false)))
        .await
        .expect("unreact");
    store
        .change(&change(&ab, "alice", "r5", m.id, react("👍", false)))
        .await
        .expect("unreact");
    assert_eq!(counts(&store).await, None);
    let seqs: Vec<i64> = everything(&store, "alice", &ab).await.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4, 5],
        "every change that changed something is an event"
    );
}

pub async fn catch_up_gives_the_latest_window_most_recent_first(ctx: Ctx) {
    let store = ctx.open().await;
    store
        .create_group("big", "alice", &open_shared(None))
        .await
        .expect("create");
    store.join_group("big", "bob").await.expect("join");
    for i in 0..12 {
        ok(append_one(&store, gm("alice", "big", &format!("g{i}"))).await);
    }
    let mut late = dm("alice", "bob", "d1");
    late.ts_ms = T0 + 5_000;
    ok(append_one(&store, late).await);
    let mut all = |_: Offer<'_>| true;
    let page = store
        .catch_up("bob", &HashMap::new(), 100, 5, &mut all)
        .await
        .expect("catch up");
    let ids: Vec<&str> = page.conversations.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["d:alice:bob", "g:big"]);
    assert_eq!(page.counter, 13);
    let big = &page.conversations[1];
    assert_eq!((big.limited, big.from_seq, big.cursor, big.unread), (true, 8, 12, 12));
    let seqs: Vec<i64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 8, 9, 10, 11, 12]);
    assert!(!page.more);
    // Cut by the caller's budget after three events: the entries say where it stopped.
    let mut budget = 0;
    let mut three = |offer: Offer<'_>| match offer {
        Offer::Conversation(_) => true,
        Offer::Message(_) => {
            budget += 1;
            budget <= 3
        }
    };
    let page = store
        .catch_up("bob", &HashMap::new(), 100, 5, &mut three)
        .await
        .expect("catch up");
    assert!(page.more);
    assert_eq!(
        page.conversations.iter().map(|c| c.cursor).collect::<Vec<_>>(),
        vec![1, 9]
    );
    let cursors: HashMap<String, i64> = page.conversations.iter().map(|c| (c.id.clone(), c.cursor)).collect();
    let rest = store
        .catch_up("bob", &cursors, 100, 5, &mut all)
        .await
        .expect("catch up");
    assert_eq!(
        rest.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![10, 11, 12]
    );
    assert!(!rest.conversations[0].limited);
    let activity = store.activity("bob", 1).await.expect("activity");
    assert_eq!(
        (activity.counter, activity.latest),
        (13, vec![("d:alice:bob".to_owned(), 1)])
    );
}

pub async fn markers_move_forward_only_and_name_the_author(ctx: Ctx) {
    let store = ctx.open().await;
    let ab = direct_conversation_id("alice", "bob");
    for i in 0..3 {
        ok(append_one(&store, dm("alice", "bob", &format!("{i}"))).await);
    }
    let moved = store.move_marker("bob", &ab, 2, Marker::Delivered).await.expect("move");
    // A direct receipt goes to the peer, whom the id names: no author is looked up.
    assert_eq!(
        (moved.marker, moved.last_seq, moved.moved, moved.author.as_deref()),
        (2, 3, true, None)
    );
    let not = store.move_marker("bob", &ab, 1, Marker::Delivered).await.expect("move");
    assert_eq!((not.marker, not.moved), (2, false));
    let capped = store.move_marker("bob", &ab, 99, Marker::Read).await.expect("move");
    assert_eq!((capped.marker, capped.moved), (3, true));
    assert!(matches!(
        store.move_marker("carol", &ab, 1, Marker::Read).await,
        Err(StoreError::NotMember { .. })
    ));
    // In a group, a receipt goes to the author of the message at the marker.
    store
        .create_group("crew", "alice", &open_shared(None))
        .await
        .expect("create");
    store.join_group("crew", "bob").await.expect("join");
    ok(append_one(&store, gm("alice", "crew", "c1")).await);
    ok(append_one(&store, gm("bob", "crew", "c2")).await);
    let g = group_conversation_id("crew");
    let read = store.move_marker("carol", &g, 1, Marker::Read).await;
    assert!(matches!(read, Err(StoreError::NotMember { .. })), "{read:?}");
    let first = store.move_marker("bob", &g, 1, Marker::Delivered).await.expect("move");
    assert_eq!(
        (first.marker, first.moved, first.author.as_deref()),
        (1, true, Some("alice"))
    );
    let second = store.move_marker("alice", &g, 2, Marker::Read).await.expect("move");
    assert_eq!(
        (second.marker, second.moved, second.author.as_deref()),
        (2, true, Some("bob"))
    );
    store.ensure_user("dave").await.expect("user");
    assert!(store.go_online("dave").await.expect("online"));
    assert!(!store.go_online("dave").await.expect("online"), "only one announces");
    assert!(store.go_offline("dave", T0).await.expect("offline"));
    assert!(
        !store.go_offline("dave", T0 + 1).await.expect("offline"),
        "only one announces"
    );
    let seen = store
        .last_seen(&["dave".to_owned(), "nobody".to_owned()])
        .await
        .expect("seen");
    assert_eq!(seen, HashMap::from([("dave".to_owned(), T0)]));
}

pub async fn search_finds_readable_live_messages_ranked(ctx: Ctx) {
    let store = ctx.open().await;
    let mut group = open_shared(None);
    group.history = HistoryVisibility::Joined;
    store.create_group("ops", "alice", &group).await.expect("create");
    let texts = [
        "the deploy failed",
        "lunch",
        "deploy deploy deploy now",
        "secret deplyo",
    ];
    let mut ids = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let mut message = gm("alice", "ops", &format!("s{i}"));
        message.text = (*text).to_owned();
        ids.push(ok(append_one(&store, message).await).message.id);
    }
    store.join_group("ops", "bob").await.expect("join");
    let mut later = gm("alice", "ops", "s9");
    later.text = "deploy again".to_owned();
    ok(append_one(&store, later).await);
    let mut all = |_: &gatehouse_store::SearchHit| true;
    let query = SearchQuery::parse("deploy").expect("query");
    let page = store
        .search("alice", &query, None, 0, 10, &mut all)
        .await
        .expect("search");
    let found: Vec<&str> = page.hits.iter().map(|h| h.message.text.as_str()).collect();
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0], "deploy deploy deploy now", "ranked");
    for hit in &page.hits {
        let chars: Vec<char> = hit.snippet.chars().collect();
        assert!(!hit.highlights.is_empty());
        for &(a, b) in &hit.highlights {
            assert_eq!(chars[a..b].iter().collect::<String>(), "deploy", "{hit:?}");
        }
    }
    let bobs = store
        .search("bob", &query, None, 0, 10, &mut all)
        .await
        .expect("search");
    assert_eq!(
        bobs.hits.len(),
        1,
        "a joined-history newcomer finds only what came after"
    );
    let prefix = SearchQuery::parse("depl*").expect("query");
    let first = store
        .search("alice", &prefix, None, 0, 2, &mut all)
        .await
        .expect("search");
    assert_eq!((first.hits.len(), first.more), (2, true));
    let second = store
        .search("alice", &prefix, None, 2, 2, &mut all)
        .await
        .expect("search");
    assert_eq!((second.hits.len(), second.more), (2, false));
    let g = group_conversation_id("ops");
    store
        .change(&change(&g, "alice", "x1", ids[2], ChangeAction::Delete))
        .await
        .expect("delete");
    store
        .change(&change(&g, "alice", "x2", ids[0], edit("rollout failed", None)))
        .await
        .expect("edit");
    let after = store
        .search("alice", &query, None, 0, 10, &mut all)
        .await
        .expect("search");
    let found: Vec<&str> = after.hits.iter().map(|h| h.message.text.as_str()).collect();
    assert_eq!(found, vec!["deploy again"]);
    let rollout = SearchQuery::parse("rollout").expect("query");
    let edited = store
        .search("alice", &rollout, Some(&g), 0, 10, &mut all)
        .await
        .expect("search");
    assert_eq!(edited.hits.len(), 1);
    let none = store
        .search("mallory", &rollout, Some(&g), 0, 10, &mut all)
        .await
        .expect("search");
    assert!(none.hits.is_empty(), "non-members find nothing");
}
