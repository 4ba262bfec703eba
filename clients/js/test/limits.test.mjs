// The library under the server's default rate limits (20 sends a second, bursts of 40): a
// burst of sends is paced by the outbox instead of being refused until the server closes the
// connection (1008 after 50 refusals in 10 s).
import assert from "node:assert/strict";
import { test } from "node:test";

import { directConversation } from "../dist/index.js";
import { startCluster } from "./cluster.mjs";
import { exactlyOnceInOrder, received, signedIn } from "./helpers.mjs";

test("a burst of sends over the rate limit is paced: all stored once, in order, on one connection", { timeout: 60_000 }, async (t) => {
  const cluster = await startCluster({ gateways: 1, workers: 1 });
  t.after(() => cluster.stop());
  const ann = await signedIn({ url: cluster.url(0), uid: "ann" });
  const ben = await signedIn({ url: cluster.url(0), uid: "ben" });
  t.after(() => Promise.all([ann.client.stop(), ben.client.stop()]));
  const texts = Array.from({ length: 120 }, (_, i) => `burst ${i}`);

  await Promise.all(texts.map((text) => ann.client.send({ to: "ben" }, text)));

  const conversation = directConversation("ann", "ben");
  await received(ben, conversation, texts.length);
  exactlyOnceInOrder(assert, ben.seen[conversation], texts);
  assert.equal(ann.client.stats.reconnects, 0, "never closed for ignoring the rate limit");
  assert.ok(ann.client.stats.rateLimited < 50, `refused ${ann.client.stats.rateLimited} times: fewer than the server's closing threshold`);
});
