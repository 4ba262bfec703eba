// The library through real failures: a gateway killed while a client sends through it, and a
// chat worker killed while it commits. Whatever was lost in flight, both ends finish with every
// message exactly once and in order.
import assert from "node:assert/strict";
import { test } from "node:test";

import { directConversation, groupConversation } from "../dist/index.js";
import { eventually, startCluster } from "./cluster.mjs";
import { exactlyOnceInOrder, received, signedIn } from "./helpers.mjs";

const COUNT = 200;
const texts = (tag) => Array.from({ length: COUNT }, (_, i) => `${tag} ${i}`);

test("a gateway killed mid-send: the sender reconnects to the other, resends, and nothing is lost or doubled", { timeout: 90_000 }, async (t) => {
  const cluster = await startCluster({ gateways: 2, workers: 1, workerArgs: ["--chat-send-rate", "0"] });
  t.after(() => cluster.stop());
  // The sender starts on gateway 0 and rotates to gateway 1 when it falls; the receiver is on 1.
  const ann = await signedIn({ url: [cluster.url(0), cluster.url(1)], uid: "ann" });
  const ben = await signedIn({ url: cluster.url(1), uid: "ben" });
  t.after(() => Promise.all([ann.client.stop(), ben.client.stop()]));
  const conversation = directConversation("ann", "ben");
  const all = texts("gw");
  let acked = 0;

  const sends = all.map((text) => ann.client.send({ to: "ben" }, text).then(() => (acked += 1)));
  await eventually(() => acked >= COUNT / 4, "a quarter of the sends acknowledged");
  await cluster.gateways[0].kill();
  const ackedAtKill = acked;
  await Promise.all(sends);
  assert.ok(ackedAtKill < COUNT, `sends were in flight when the gateway died (${ackedAtKill} acknowledged)`);

  await received(ben, conversation, COUNT);
  assert.ok(ann.client.stats.reconnects >= 1, "the sender reconnected");
  exactlyOnceInOrder(assert, ben.seen[conversation], all);
  exactlyOnceInOrder(assert, ann.client.messages(conversation), all);
  assert.deepEqual(ben.client.ranges(conversation), [[1, COUNT]]);
});

test("a worker killed mid-commit: its events go to the other worker, and both ends hold every message once", { timeout: 90_000 }, async (t) => {
  const cluster = await startCluster({ gateways: 2, workers: 1, workerArgs: ["--chat-send-rate", "0"] });
  t.after(() => cluster.stop());
  const ann = await signedIn({ url: cluster.url(0), uid: "ann" });
  const ben = await signedIn({ url: cluster.url(1), uid: "ben" });
  t.after(() => Promise.all([ann.client.stop(), ben.client.stop()]));
  await ann.client.createGroup("team", { access: "open" });
  await ben.client.joinGroup("team");
  const conversation = groupConversation("team");
  // Both clients were signed in by worker 0; a second worker takes over when it dies.
  await cluster.addWorker();
  await cluster.waitWorkers(2);
  const all = texts("wk");
  let acked = 0;

  const sends = all.map((text) => ann.client.send({ group: "team" }, text).then(() => (acked += 1)));
  await eventually(() => acked >= COUNT / 4, "a quarter of the sends acknowledged");
  await cluster.workers[0].kill();
  const ackedAtKill = acked;
  await Promise.all(sends);
  assert.ok(ackedAtKill < COUNT, `sends were in flight when the worker died (${ackedAtKill} acknowledged)`);
  // One more message after the failure: a push lost with the worker shows as a gap at the
  // latest when this one arrives.
  await ann.client.send({ group: "team" }, "after the failure");

  await received(ben, conversation, COUNT + 1);
  exactlyOnceInOrder(assert, ben.seen[conversation], [...all, "after the failure"]);
  exactlyOnceInOrder(assert, ann.client.messages(conversation), [...all, "after the failure"]);
});
