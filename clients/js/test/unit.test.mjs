// The pieces that need no server: seq ranges, backoff, conversation ids, stores.
import assert from "node:assert/strict";
import { test } from "node:test";

import { LocalStorageStore, MemoryStore, RangeSet, backoffDelay, directConversation, parseConversation, peerOf } from "../dist/index.js";

test("a range set holds exactly the seqs added, merging neighbours", () => {
  const set = new RangeSet();
  for (const n of [5, 1, 3, 2, 9, 10, 8]) set.add(n);
  assert.deepEqual(set.ranges(), [[1, 3], [5, 5], [8, 10]]);
  assert.equal(set.add(2), false, "a repeat is not added twice");
  assert.equal(set.has(4), false);
  set.add(4);
  assert.deepEqual(set.ranges(), [[1, 5], [8, 10]]);
  assert.equal(set.startOf(9), 8);
  assert.equal(set.size, 8);
});

test("backoff grows exponentially to its cap, with jitter in the upper half", () => {
  const options = { initialMs: 100, maxMs: 1000 };
  assert.equal(backoffDelay(0, options, () => 0), 50);
  assert.equal(backoffDelay(0, options, () => 1), 100);
  assert.equal(backoffDelay(3, options, () => 1), 800);
  assert.equal(backoffDelay(20, options, () => 1), 1000);
  assert.equal(backoffDelay(20, options, () => 0), 500);
});

test("conversation ids sort and escape uids like the server", () => {
  assert.equal(directConversation("bob", "alice"), "d:alice:bob");
  assert.equal(directConversation("a:b", "c%d"), "d:a%3Ab:c%25d");
  assert.deepEqual(parseConversation("d:a%3Ab:c%25d"), { uids: ["a:b", "c%d"] });
  assert.deepEqual(parseConversation("g:team"), { group: "team" });
  assert.equal(peerOf("d:alice:bob", "bob"), "alice");
});

test("stores keep strings; a local-storage store prefixes its keys and survives a full storage", () => {
  const memory = new MemoryStore();
  memory.set("k", "v");
  assert.equal(memory.get("k"), "v");
  memory.delete("k");
  assert.equal(memory.get("k"), null);

  const items = new Map();
  let full = false;
  const storage = {
    getItem: (k) => items.get(k) ?? null,
    setItem: (k, v) => {
      if (full) throw new Error("QuotaExceededError");
      items.set(k, v);
    },
    removeItem: (k) => items.delete(k),
  };
  const local = new LocalStorageStore("app.", storage);
  local.set("ann.cursors", "{}");
  assert.deepEqual([...items.keys()], ["app.ann.cursors"]);
  full = true;
  local.set("ann.outbox", "[]");
  assert.equal(local.get("ann.outbox"), null);
});

test("a conversation applies edits, deletes and reactions once, whatever path delivered them", async () => {
  const { ConversationState } = await import("../dist/conversation.js");
  const conv = new ConversationState("d:ann:ben", "ben");
  const event = (seq, fields) => ({ id: 100 + seq, conversation: "d:ann:ben", seq, from: "ann", ts: 1000 + seq, ...fields });

  conv.apply(event(1, { type: "message", text: "hi", to: "ben" }), "ben", 1);
  assert.equal(conv.apply(event(2, { type: "reaction", target: 101, emoji: "👍", action: "add" }), "ben", 2).kind, "update");
  conv.apply(event(3, { type: "edit", target: 101, text: "hello" }), "ben", 3);
  assert.deepEqual(conv.messages.get(101), {
    id: 101, conversation: "d:ann:ben", seq: 1, from: "ann", to: "ben", text: "hello", ts: 1001, edited: 1003, deleted: false, reactions: { "👍": 1 },
  });

  // A message read by history after seq 5 already includes every event up to there: the
  // reaction at 4 changes nothing, the one at 6 counts.
  const fresh = new ConversationState("d:ann:ben", "ben");
  fresh.apply(event(1, { type: "message", text: "hello", edited: 1003, reactions: { "👍": 2 } }), "ben", 5);
  assert.equal(fresh.apply(event(4, { type: "reaction", target: 101, emoji: "👍", action: "add" }), "ben", 4).kind, "none");
  fresh.apply(event(6, { type: "reaction", target: 101, emoji: "👍", action: "remove" }), "ben", 6);
  assert.deepEqual(fresh.messages.get(101).reactions, { "👍": 1 });
  fresh.apply(event(7, { type: "delete", target: 101 }), "ben", 7);
  assert.equal(fresh.messages.get(101).text, "");
  assert.equal(fresh.messages.get(101).deleted, true);
  assert.deepEqual(fresh.held.ranges(), [[1, 1], [4, 4], [6, 7]], "only the seqs received are held");
  assert.equal(fresh.info.unread, 7, "events of others after the read marker");
});
