import type { ConversationId, WireConversation, WireEvent } from "./protocol.js";
import { RangeSet } from "./ranges.js";

/** A message in its current state: edits, a delete and reactions already applied. */
export interface ChatMessage {
  id: number;
  conversation: ConversationId;
  seq: number;
  from: string;
  /** The recipient of a direct message. */
  to?: string;
  /** The group of a group message. */
  group?: string;
  /** The current text ("" once deleted). */
  text: string;
  /** When the server received it (Unix ms). */
  ts: number;
  cid?: string;
  /** The id of the message this one answers. */
  replyTo?: number;
  /** When it was last edited (Unix ms), if ever. */
  edited?: number;
  deleted: boolean;
  /** Deleted by a group owner or admin rather than by its author. */
  deletedByAdmin?: boolean;
  /** Emoji → how many users reacted with it. */
  reactions: Record<string, number>;
}

/** What the client knows about a conversation (from `sync`, `conversations`, and live events). */
export interface ConversationInfo {
  id: ConversationId;
  kind: "direct" | "group";
  /** The peer's uid, or the group id. */
  peerOrGroup: string;
  name?: string | null;
  lastSeq: number;
  readSeq: number;
  unread: number;
  lastTs?: number;
  /** Direct conversations: how far the peer has read and received. */
  peerReadSeq?: number;
  peerDeliveredSeq?: number;
}

/** What applying one event did to the conversation's messages. */
export type Applied =
  | { kind: "message"; message: ChatMessage }
  | { kind: "update"; message: ChatMessage }
  | { kind: "none" };

/**
 * One conversation's bookkeeping: which `seq`s were received (never more), the catch-up
 * cursor, pushes that arrived ahead of a gap, and the messages in their current state.
 */
export class ConversationState {
  /** Everything up to here was caught up (or is not readable by this user): what `sync` sends. */
  cursor = 0;
  /** The seqs actually received in this session. */
  readonly held = new RangeSet();
  /** Events that arrived after a gap, waiting for it to be filled (by seq). */
  readonly pending = new Map<number, WireEvent>();
  /** Messages by id, in their current state. */
  readonly messages = new Map<number, ChatMessage>();
  /** For each message id: the seq up to which its state includes the conversation's events. */
  private readonly versions = new Map<number, number>();
  /** `history` reached the first event this user may read. */
  beginning = false;
  /** Receipts of group members (and the peer of a direct conversation): uid → markers. */
  readonly receipts = new Map<string, { delivered: number; read: number }>();
  info: ConversationInfo;

  constructor(readonly id: ConversationId, me: string) {
    const group = id.startsWith("g:");
    this.info = {
      id,
      kind: group ? "group" : "direct",
      peerOrGroup: group ? id.slice(2) : peerFromId(id, me),
      lastSeq: 0,
      readSeq: 0,
      unread: 0,
    };
  }

  /** The server listed it: the user belongs to it (so its cursor may be sent even when 0). */
  listed = false;

  /** Takes what the server lists about the conversation. */
  updateInfo(wire: WireConversation): void {
    this.listed = true;
    const info = this.info;
    info.kind = wire.kind;
    info.peerOrGroup = wire.peer_or_group;
    info.name = wire.name ?? null;
    info.lastSeq = Math.max(info.lastSeq, wire.last_seq);
    info.readSeq = Math.max(info.readSeq, wire.read_seq);
    info.unread = Math.max(0, info.lastSeq - info.readSeq);
    if (wire.last_ts !== undefined) info.lastTs = Math.max(info.lastTs ?? 0, wire.last_ts);
    if (wire.peer_read_seq !== undefined) this.receipt(wire.peer_or_group, "read", wire.peer_read_seq);
    if (wire.peer_delivered_seq !== undefined) this.receipt(wire.peer_or_group, "delivered", wire.peer_delivered_seq);
  }

  /** Records a user's marker (markers only move forward); returns true when it moved. */
  receipt(uid: string, kind: "delivered" | "read", seq: number): boolean {
    const markers = this.receipts.get(uid) ?? { delivered: 0, read: 0 };
    this.receipts.set(uid, markers);
    const moved = seq > markers[kind];
    if (moved) markers[kind] = seq;
    if (kind === "read" && markers.delivered < markers.read) markers.delivered = markers.read;
    if (this.info.kind === "direct" && uid === this.info.peerOrGroup) {
      this.info.peerReadSeq = markers.read;
      this.info.peerDeliveredSeq = markers.delivered;
    }
    return moved;
  }

  /** Moves the user's own read marker forward. */
  markRead(seq: number, unread?: number): void {
    this.info.readSeq = Math.max(this.info.readSeq, seq);
    this.info.unread = unread ?? Math.max(0, this.info.lastSeq - this.info.readSeq);
  }

  /**
   * Applies a received event: a message is added, an edit, delete or reaction changes its
   * target. `version` is the seq the event's state is current to: a message read by `sync` or
   * `history` already includes every event up to the read, which must not be applied again.
   */
  apply(event: WireEvent, me: string, version: number): Applied {
    this.held.add(event.seq);
    this.info.lastSeq = Math.max(this.info.lastSeq, event.seq);
    if (event.ts && event.seq >= this.info.lastSeq) this.info.lastTs = Math.max(this.info.lastTs ?? 0, event.ts);
    if (event.from === me) this.markRead(event.seq);
    else this.info.unread = Math.max(0, this.info.lastSeq - this.info.readSeq);
    if (event.type === "message" || event.type === undefined) {
      if (this.messages.has(event.id)) return { kind: "none" };
      const message = toMessage(event);
      this.messages.set(message.id, message);
      this.versions.set(message.id, Math.max(version, event.seq));
      return { kind: "message", message };
    }
    const target = event.target === undefined ? undefined : this.messages.get(event.target);
    // An event about a message not held: the message, when it arrives, carries its state.
    if (!target || event.seq <= (this.versions.get(target.id) ?? 0)) return { kind: "none" };
    this.versions.set(target.id, event.seq);
    const changed = changeOf(target, event);
    this.messages.set(changed.id, changed);
    return { kind: "update", message: changed };
  }

  /** The messages held, oldest first. */
  sortedMessages(): ChatMessage[] {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }
}

function changeOf(target: ChatMessage, event: WireEvent): ChatMessage {
  switch (event.type) {
    case "edit":
      return { ...target, text: event.text ?? target.text, edited: event.ts };
    case "delete":
      return { ...target, text: "", deleted: true, deletedByAdmin: event.by_admin === true, reactions: {} };
    case "reaction": {
      const reactions = { ...target.reactions };
      const emoji = event.emoji ?? "";
      const count = (reactions[emoji] ?? 0) + (event.action === "remove" ? -1 : 1);
      if (count > 0) reactions[emoji] = count;
      else delete reactions[emoji];
      return { ...target, reactions };
    }
    default:
      return target;
  }
}

/** The library's view of a wire `message`. */
export function toMessage(event: WireEvent): ChatMessage {
  const message: ChatMessage = {
    id: event.id,
    conversation: event.conversation,
    seq: event.seq,
    from: event.from,
    text: event.deleted ? "" : (event.text ?? ""),
    ts: event.ts,
    deleted: event.deleted === true,
    reactions: { ...(event.reactions ?? {}) },
  };
  if (event.to !== undefined) message.to = event.to;
  if (event.group !== undefined) message.group = event.group;
  if (event.cid !== undefined) message.cid = event.cid;
  if (event.reply_to !== undefined && event.reply_to !== null) message.replyTo = event.reply_to;
  if (event.edited) message.edited = event.edited;
  if (event.by_admin) message.deletedByAdmin = true;
  return message;
}

function peerFromId(id: ConversationId, me: string): string {
  const parts = id.slice(2).split(":").map((u) => u.replace(/%3A/gi, ":").replace(/%25/g, "%"));
  return parts.find((u) => u !== me) ?? me;
}
