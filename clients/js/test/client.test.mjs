// The library against a real cluster (two gateways, one chat worker, bare-uid sign-in):
// messages, every request, the outbox across restarts, repeats and gaps.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { ChatError, MemoryStore, directConversation } from "../dist/index.js";
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
async function as(uid, options = {}) {
  const who = await signedIn({ url: cluster.url(clients.length % 2), uid, ...options });
  clients.push(who);
  return who;
}

test("a message reaches the other user once, and the sender gets it back with its stored id and seq", async () => {
  const ann = await as("ann1");
  const ben = await as("ben1");
  const conversation = directConversation("ann1", "ben1");

  const sent = await ann.client.send({ to: "ben1" }, "hello ben");

  assert.equal(sent.conversation, conversation);
  assert.equal(sent.seq, 1);
  assert.equal(sent.from, "ann1");
  await received(ben, conversation, 1);
  assert.equal(ben.seen[conversation][0].id, sent.id);
  assert.equal(ben.seen[conversation][0].text, "hello ben");
  assert.deepEqual(ann.seen[conversation].map((m) => m.id), [sent.id], "the sender's own message is announced once");
  assert.deepEqual(ann.client.outbox(), [], "acknowledged sends leave the outbox");
  assert.deepEqual(ben.client.ranges(conversation), [[1, 1]]);
});

test("every request of the protocol answers through a promise, and refusals are typed errors", async () => {
  const ann = await as("ann2");
  const ben = await as("ben2");
  const invited = new Promise((r) => ben.client.once("invited", r));

  assert.equal((await ann.client.createGroup("team2", { name: "Team" })).action, "created");
  assert.equal((await ann.client.invite("team2", "ben2")).action, "invited");
  assert.equal((await invited).by, "ann2");
  assert.deepEqual((await ben.client.invitations()).invitations.map((i) => i.group), ["team2"]);
  assert.equal((await ben.client.joinGroup("team2")).action, "joined");
  const info = await ben.client.groupInfo("team2");
  assert.equal(info.name, "Team");
  assert.equal(info.role, "member");
  assert.deepEqual(await ann.client.allMembers("team2"), { members: ["ann2", "ben2"], roles: { ann2: "owner" } });
  assert.equal((await ann.client.promote("team2", "ben2")).action, "promoted");
  assert.equal((await ann.client.demote("team2", "ben2")).action, "demoted");
  assert.equal((await ann.client.updateGroup("team2", { access: "open" })).access, "open");

  const sent = await ann.client.send({ group: "team2" }, "hi team");
  await received(ben, "g:team2", 1);
  const page = await ben.client.history("g:team2");
  assert.deepEqual(page.messages.map((m) => m.id), [], "history of what is held brings nothing new");
  assert.equal((await ben.client.read("g:team2", sent.seq)).seq, sent.seq);
  const list = await ben.client.refreshConversations();
  assert.deepEqual(list.map((c) => [c.id, c.unread]), [["g:team2", 0]]);
  assert.deepEqual((await ann.client.online()).uids, ["ann2", "ben2"]);

  assert.equal((await ben.client.block("ann2")).action, "blocked");
  assert.deepEqual((await ben.client.blocks()).uids, ["ann2"]);
  const refused = await ann.client.send({ to: "ben2" }, "blocked?").catch((e) => e);
  assert.ok(refused instanceof ChatError, String(refused));
  assert.equal(refused.code, "blocked");
  assert.equal(refused.transient, false);
  assert.deepEqual(ann.client.outbox(), [], "a send refused for good leaves the outbox");
  assert.equal((await ben.client.unblock("ann2")).action, "unblocked");

  const removed = new Promise((r) => ben.client.once("removed", r));
  assert.equal((await ann.client.kick("team2", "ben2")).action, "kicked");
  assert.equal((await removed).reason, "kicked");
  assert.equal((await ann.client.ban("team2", "ben2")).action, "banned");
  const banned = await ben.client.joinGroup("team2").catch((e) => e);
  assert.equal(banned.code, "banned");
  assert.equal((await ann.client.unban("team2", "ben2")).action, "unbanned");
  await ann.client.updateGroup("team2", { access: "invite" });
  await ann.client.invite("team2", "ben2");
  assert.equal((await ben.client.decline("team2")).action, "declined");
  const notMember = await ben.client.members("team2").catch((e) => e);
  assert.equal(notMember.code, "not_member");
  assert.equal((await ann.client.leaveGroup("team2")).action, "left");
});

test("a send queued while stopped is sent by the next client on the same store, once", async () => {
  const store = new MemoryStore();
  const ben = await as("ben3");
  const conversation = directConversation("ann3", "ben3");
  const first = await as("ann3", { store });
  await first.client.send({ to: "ben3" }, "before the restart");
  await received(ben, conversation, 1);
  await first.client.stop();

  // Queued while stopped: saved in the store, never transmitted by this instance.
  const lost = first.client.send({ to: "ben3" }, "queued while stopped");
  assert.equal(first.client.outbox().length, 1);

  const second = await as("ann3", { store });
  await received(ben, conversation, 2);
  await eventually(() => second.client.outbox().length === 0, "the outbox to drain");
  exactlyOnceInOrder(assert, ben.seen[conversation], ["before the restart", "queued while stopped"]);
  assert.equal(second.client.cursor(conversation), 2, "the cursor came from the store and moved over the ack");
  assert.equal(second.seen[conversation]?.length, 1, "the restarted client announces only what is new to it");
  void lost;
});

test("a push lost on the way is noticed at the next one and caught up, in order", async () => {
  const ann = await as("ann4");
  const conversation = directConversation("ann4", "ben4");
  let dropped = 0;
  const ben = await as("ben4", { WebSocket: droppingWebSocket((frame) => frame.type === "message" && frame.text === "lost" && dropped++ === 0) });

  await ann.client.send({ to: "ben4" }, "first");
  await received(ben, conversation, 1);
  await ann.client.send({ to: "ben4" }, "lost");
  await ann.client.send({ to: "ben4" }, "after");
  await received(ben, conversation, 3);

  assert.equal(dropped, 1);
  exactlyOnceInOrder(assert, ben.seen[conversation], ["first", "lost", "after"]);
  assert.ok(ben.client.stats.gaps >= 1);
  assert.deepEqual(ben.client.ranges(conversation), [[1, 3]]);
});

test("a new device catches up the latest messages and pages older ones in, holding only what it received", async () => {
  const ann = await as("ann5");
  await (await as("ben5")).client.stop(); // ben5 exists once it has signed in
  const conversation = directConversation("ann5", "ben5");
  const texts = Array.from({ length: 30 }, (_, i) => `m${i + 1}`);
  for (const text of texts) await ann.client.send({ to: "ben5" }, text);

  const ben = await as("ben5", { syncWindow: 10 });
  const caughtUp = ben.client.ranges(conversation);
  if (ben.client.protocol >= 2) {
    assert.deepEqual(caughtUp, [[21, 30]], "a bounded catch-up holds the latest window only");
  } else {
    assert.deepEqual(caughtUp, [[1, 30]]);
  }
  while (ben.client.hasOlder(conversation)) await ben.client.loadOlder(conversation, 7);
  assert.deepEqual(ben.client.ranges(conversation), [[1, 30]]);
  assert.deepEqual(ben.client.messages(conversation).map((m) => m.text), texts);
});

