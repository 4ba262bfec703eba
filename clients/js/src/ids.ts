import type { ConversationId } from "./protocol.js";

const escapeUid = (uid: string): string => uid.replace(/%/g, "%25").replace(/:/g, "%3A");
const unescapeUid = (uid: string): string => uid.replace(/%3A/gi, ":").replace(/%25/g, "%");

/** The id of the direct conversation of two uids (`d:<a>:<b>`, sorted, `%` and `:` escaped). */
export function directConversation(a: string, b: string): ConversationId {
  const [x, y] = [escapeUid(a), escapeUid(b)].sort();
  return `d:${x}:${y}`;
}

/** The id of a group's conversation. */
export function groupConversation(group: string): ConversationId {
  return `g:${group}`;
}

/** What a conversation id names: the group, or the two uids of a direct conversation. */
export function parseConversation(id: ConversationId): { group: string } | { uids: [string, string] } | undefined {
  if (id.startsWith("g:")) return { group: id.slice(2) };
  if (!id.startsWith("d:")) return undefined;
  const parts = id.slice(2).split(":");
  if (parts.length !== 2) return undefined;
  return { uids: [unescapeUid(parts[0]!), unescapeUid(parts[1]!)] };
}

/** The other uid of a direct conversation (or `me` for one's own notes), undefined for a group. */
export function peerOf(id: ConversationId, me: string): string | undefined {
  const parsed = parseConversation(id);
  if (!parsed || !("uids" in parsed)) return undefined;
  return parsed.uids.find((u) => u !== me) ?? me;
}

/** A fresh idempotency key: 96 random bits, so two devices never pick the same one. */
export function newCid(prefix = "c"): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return `${prefix}-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}
