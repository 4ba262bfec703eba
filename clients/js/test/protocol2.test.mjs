// Protocol 2 through the library, against a real cluster: bounded catch-up, the heartbeat that
// notices a lost last message, edits, deletes, replies and reactions (live and after being
// offline), receipts, typing, presence and search.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { MemoryStore, directConversation } from "../dist/index.js";
import { eventually, startCluster } from "./cluster.mjs";
import { droppingWebSocket, exactlyOnceInOrder, received, signedIn } from "./helpers.mjs";

let cluster;
const clients = [];
before(async () => {
  cluster = await startCluster({ gateways: 2, workers: 1, workerArgs: ["--chat-send-rate", "0"] });
});
after(async () => {
  for (const c of clients) await c.client.stop();
  await cluster?.stop();
});
async function as(uid, options = {}, setup) {
  const who = await signedIn({ url: cluster.url(clients.length % 2), uid, ...options }, setup);
  clients.push(who);
  assert.ok(who.client.protocol >= 2, `the server speaks protocol ${who.client.protocol}`);
  return who;
}
const texts = (tag, n) => Array.from({ length: n }, (_, i) => `${tag} ${i + 1}`);

test("a new device catches up only the latest window of each conversation, most recent first, and pages the rest in", async () => {
  const ann = await as("p-ann1");
  await (await as("p-ben1")).client.stop();
  await ann.client.createGroup("p-team1", { access: "open" });
  for (const text of texts("dm", 30)) await ann.client.send({ to: "p-ben1" }, text);
  const bob = await as("p-bob1");
  await bob.client.joinGroup("p-team1");
  await bob.client.stop();
  await ann.client.send({ group: "p-team1" }, "latest");

  const limited = [];
  const fresh = await as("p-ben1", { syncWindow: 10 }, (c) => c.on("limited", (e) => limited.push(e)));
  const dm = directConversation("p-ann1", "p-ben1");

  assert.deepEqual(limited, [{ conversation: dm, fromSeq: 21 }]);
  assert.deepEqual(fresh.client.ranges(dm), [[21, 30]], "holds the window, believes nothing before it");
  assert.deepEqual(fresh.seen[dm].map((m) => m.text), texts("dm", 30).slice(20));
  assert.deepEqual(fresh.client.conversationList().map((c) => [c.id, c.unread]), [[dm, 30]]);
  await fresh.client.loadOlder(dm, 15);
  assert.deepEqual(fresh.client.ranges(dm), [[6, 30]]);
  await fresh.client.loadOlder(dm, 15);
  assert.deepEqual(fresh.client.ranges(dm), [[1, 30]]);
  assert.equal(fresh.client.hasOlder(dm), false);
});

test("a lost last message is noticed by the heartbeat, without any later push", async () => {
  const ann = await as("p-ann2");
  let dropped = 0;
  const ben = await as("p-ben2", {
    heartbeatMs: 200,
    WebSocket: droppingWebSocket((f) => f.type === "message" && f.text === "the last one" && ++dropped === 1),
  });
  const dm = directConversation("p-ann2", "p-ben2");
  await ann.client.send({ to: "p-ben2" }, "first");
  await received(ben, dm, 1);

  await ann.client.send({ to: "p-ben2" }, "the last one");

  await received(ben, dm, 2, 5000);
  assert.equal(dropped, 1, "the push was dropped");
  exactlyOnceInOrder(assert, ben.seen[dm], ["first", "the last one"]);
});

test("edits, deletes, replies and reactions reach a live device as updates and an offline one in their final state", async () => {
  const ann = await as("p-ann3");
  const ben = await as("p-ben3");
  const dm = directConversation("p-ann3", "p-ben3");
  const updates = [];
  ben.client.on("update", (u) => updates.push(u));

  const question = await ann.client.send({ to: "p-ben3" }, "lunch at 12?");
  const typo = await ann.client.send({ to: "p-ben3" }, "oops");
  const answer = await ben.client.send({ to: "p-ann3" }, "yes", { replyTo: question.id });
  assert.equal(answer.replyTo, question.id);
  await ann.client.edit(dm, question.id, "lunch at 1?");
  await ann.client.deleteMessage(dm, typo.id);
  await ann.client.react(dm, answer.id, "👍");
  await ben.client.react(dm, answer.id, "👍");
  const again = await ben.client.react(dm, answer.id, "👍");
  assert.equal(again.changed, false, "a reaction already there changes nothing");

  const finalState = (client) => {
    const byId = (id) => client.message(dm, id);
    return [byId(question.id)?.text, Boolean(byId(question.id)?.edited), byId(typo.id)?.deleted, byId(typo.id)?.text, byId(answer.id)?.replyTo, byId(answer.id)?.reactions];
  };
  const expected = ["lunch at 1?", true, true, "", question.id, { "👍": 2 }];
  await eventually(() => JSON.stringify(finalState(ben.client)) === JSON.stringify(expected), () => `ben's state ${JSON.stringify(finalState(ben.client))}`);
  // Ann's two changes, her reaction, and ben's own (from his ack).
  assert.deepEqual(updates.map((u) => u.event.type), ["edit", "delete", "reaction", "reaction"]);

  // A device that was offline gets the final state from history; the events that changed it
  // come too, and applying them again changes nothing (no reaction counted twice).
  const other = await as("p-ben3", { store: new MemoryStore() });
  await other.client.loadOlder(dm, 50);
  assert.deepEqual(finalState(other.client), expected);
  assert.deepEqual(other.client.messages(dm).map((m) => m.text), ["lunch at 1?", "", "yes"]);
});

test("receipts: the sender sees delivered then read, and the reader's other device its unread count", async () => {
  const ann = await as("p-ann4");
  const ben = await as("p-ben4");
  const benPhone = await as("p-ben4", { store: new MemoryStore() });
  const dm = directConversation("p-ann4", "p-ben4");
  const receipts = [];
  ann.client.on("receipt", (r) => receipts.push(`${r.kind} ${r.seq}`));
  const reads = [];
  benPhone.client.on("read", (r) => reads.push(r));

  const sent = await ann.client.send({ to: "p-ben4" }, "did you get this?");
  await eventually(() => ann.client.status(sent) === "delivered", "delivered");
  await ben.client.markRead(dm);
  await eventually(() => ann.client.status(sent) === "read", "read");
  assert.deepEqual(receipts.slice(-1), [`read ${sent.seq}`]);
  await eventually(() => reads.some((r) => r.conversation === dm && r.seq === sent.seq && r.unread === 0), "the phone's unread count");
});

test("typing shows up on the other side and expires on its own; presence follows the first and last device", async () => {
  const ben = await as("p-ben5");
  const dm = directConversation("p-ann5", "p-ben5");
  const online = eventually(() => ben.client.presence("p-ann5")?.online === true, "ann online on ben's side");
  const ann = await as("p-ann5");
  await ann.client.send({ to: "p-ben5" }, "hi");
  await received(ben, dm, 1);
  await ben.client.online();
  await online;

  await ann.client.typing(dm);
  await eventually(() => ben.client.typingUsers(dm).includes("p-ann5"), "ann typing");
  await eventually(() => ben.client.typingUsers(dm).length === 0, "the indicator expired", 15_000);

  await ann.client.stop();
  await eventually(() => ben.client.presence("p-ann5")?.online === false, "ann offline after the grace period", 20_000);
  assert.ok(ben.client.presence("p-ann5").lastSeen > 0);
});

test("search finds words in what the user may read, ranked, with highlights", async () => {
  const ann = await as("p-ann6");
  await ann.client.createGroup("p-team6");
  await ann.client.send({ group: "p-team6" }, "the deploy failed again");
  await ann.client.send({ group: "p-team6" }, "lunch at noon");
  const eve = await as("p-eve6");

  const found = await ann.client.search("deploy");
  assert.deepEqual(found.results.map((r) => r.text), ["the deploy failed again"]);
  const [hit] = found.results;
  assert.deepEqual(hit.highlights.map(([a, b]) => [...hit.snippet].slice(a, b).join("")), ["deploy"]);
  assert.deepEqual((await eve.client.search("deploy")).results, [], "not a member: nothing found");
});

