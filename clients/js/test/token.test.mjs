// Token sign-in against workers that verify HS256 tokens: a token provider keeps a connection
// alive past its first token's expiry (refresh on `token_expiring`), and a connection closed
// for an expired token (4001) comes back with a fresh one.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatClient } from "../dist/index.js";
import { eventually, startCluster, token } from "./cluster.mjs";
import { signedIn } from "./helpers.mjs";

test("a token provider refreshes the connection's token before it expires, so the connection lives on", { timeout: 60_000 }, async (t) => {
  const cluster = await startCluster({ gateways: 1, workers: 1, auth: "jwt" });
  t.after(() => cluster.stop());
  let issued = 0;
  // The first token lives 3 s (the server warns at once: less than a minute is left); the
  // refreshed ones live an hour.
  let refreshedEvent;
  const refreshedOnce = new Promise((r) => (refreshedEvent = r));
  const ann = await signedIn({ url: cluster.url(0), token: () => token("ann", issued++ === 0 ? 3 : 3600) }, (client) =>
    client.once("refreshed", refreshedEvent),
  );
  t.after(() => ann.client.stop());
  const refreshed = await refreshedOnce;

  assert.ok(refreshed.expires_at > Date.now() + 600_000, "the new deadline is the new token's");
  await new Promise((r) => setTimeout(r, 3500));
  assert.equal(ann.client.state, "online");
  assert.equal(ann.client.stats.reconnects, 0, "the connection outlived its first token");
  assert.equal((await ann.client.online()).uids[0], "ann");
});

test("without a provider an expired token stops the client; with one it signs in again with a new token", { timeout: 60_000 }, async (t) => {
  const cluster = await startCluster({ gateways: 1, workers: 1, auth: "jwt" });
  t.after(() => cluster.stop());
  const fixed = new ChatClient({ url: cluster.url(0), token: token("ben", 2) });
  const expired = new Promise((r) => fixed.on("error", (e) => e.code === "token_expired" && r(e)));
  await fixed.start();
  await expired;
  await eventually(() => fixed.state === "stopped", "the client to stop");

  // A provider that cannot help in time (the refresh fails): the connection ends with 4001 and
  // the client signs in again with the provider's next token.
  let calls = 0;
  const renewing = await signedIn({
    url: cluster.url(0),
    token: () => {
      calls += 1;
      if (calls === 2) throw new Error("identity provider unreachable");
      return token("cy", calls === 1 ? 2 : 3600);
    },
  });
  t.after(() => renewing.client.stop());
  await eventually(() => calls >= 3 && renewing.client.state === "online", "online again with a third token");
  assert.equal(renewing.client.stats.reconnects, 1);
});
