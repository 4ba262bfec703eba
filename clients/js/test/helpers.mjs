import { ChatClient } from "../dist/index.js";
import { eventually } from "./cluster.mjs";

/**
 * A started client plus what it announced: `seen[conversation]` is every `message` event in
 * the order it came, so a test can check "every message exactly once, in order".
 */
export async function signedIn(options, setup = () => {}) {
  const client = new ChatClient({ backoff: { initialMs: 50, maxMs: 1000 }, requestTimeoutMs: 10_000, ...options });
  const seen = {};
  const errors = [];
  client.on("message", (m) => (seen[m.conversation] ??= []).push(m));
  client.on("error", (e) => errors.push(e));
  setup(client);
  const welcomed = new Promise((r) => client.once("welcome", r));
  await client.start();
  await welcomed;
  await new Promise((r) => (client.state === "online" && !client["syncing"] ? r() : client.once("synced", r)));
  return { client, seen, errors };
}

/** Waits until `seen[conversation]` holds `count` messages. */
export function received(who, conversation, count, timeoutMs = 20_000) {
  return eventually(
    () => (who.seen[conversation]?.length ?? 0) >= count,
    () => `${who.client.uid} to receive ${count} messages of ${conversation} (has ${who.seen[conversation]?.length ?? 0}; cursor ${who.client.cursor(conversation)}, ranges ${JSON.stringify(who.client.ranges(conversation))})`,
    timeoutMs,
  );
}

/** Checks that `messages` are exactly `texts` in this order, with strictly increasing seqs. */
export function exactlyOnceInOrder(assert, messages, texts) {
  const seqs = messages.map((m) => m.seq);
  for (let i = 1; i < seqs.length; i += 1) assert.ok(seqs[i] > seqs[i - 1], `seq ${seqs[i]} after ${seqs[i - 1]}`);
  const got = messages.map((m) => m.text);
  const missing = texts.filter((t) => !got.includes(t));
  const repeated = got.filter((t, i) => got.indexOf(t) !== i);
  assert.deepEqual({ missing, repeated }, { missing: [], repeated: [] });
  assert.deepEqual(got, texts);
}

/** A WebSocket class whose instances silently drop the incoming frames `drop` picks. */
export function droppingWebSocket(drop) {
  return class extends WebSocket {
    set onmessage(handler) {
      super.onmessage = (event) => {
        if (!drop(JSON.parse(event.data))) handler(event);
      };
    }
    get onmessage() {
      return super.onmessage;
    }
  };
}
