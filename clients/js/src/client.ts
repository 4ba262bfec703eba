import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { ConversationState, toMessage, type ChatMessage, type ConversationInfo } from "./conversation.js";
import { Emitter } from "./emitter.js";
import { ChatError } from "./errors.js";
import { directConversation, groupConversation, newCid } from "./ids.js";
import {
  CLOSE_TOKEN_EXPIRED,
  type Ack, type BlockAnswer, type BlocksAnswer, type ConversationId, type ConversationsAnswer,
  type ErrorFrame, type GroupAnswer, type GroupInfo, type HistoryAnswer, type InvitationsAnswer,
  type InvitedPush, type MembersAnswer, type OnlineAnswer, type Pong, type PresencePush,
  type ReadAnswer, type Receipt, type Refreshed, type RemovedPush, type SearchAnswer, type SyncAnswer,
  type TokenExpiring, type TypingPush, type Welcome, type WireConversation, type WireEvent,
} from "./protocol.js";
import { MemoryStore, type KeyValueStore } from "./store.js";

/** The WebSocket constructor the client uses (the WHATWG API: browsers, Node ≥ 22, `ws`). */
export type WebSocketLike = {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
};
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Where a connection is. */
export type ConnectionState = "idle" | "connecting" | "online" | "offline" | "stopped";

/** How to sign in and how to behave. Only `url` and one of `token`/`uid` are required. */
export interface ChatClientOptions {
  /** The gateway's WebSocket URL (`ws://host/ws`), several to rotate through on reconnects, or a function. */
  url: string | string[] | ((attempt: number) => string);
  /** A JWT, or a function returning a fresh one (called for every connection and before expiry). */
  token?: string | (() => string | Promise<string>);
  /** A bare uid: only for gateways and workers in insecure dev mode. */
  uid?: string;
  /** Where cursors and the outbox survive restarts (default: memory only). */
  store?: KeyValueStore;
  /** The WebSocket implementation (default `globalThis.WebSocket`; pass `ws`'s on Node 20). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect spacing (exponential with jitter). */
  backoff?: BackoffOptions;
  /** Give up (state `stopped`) after this many handshakes in a row that never got a `welcome`. Default: never. */
  maxHandshakeFailures?: number;
  /** How long a connection may take to be welcomed before it is dropped and tried again. Default 10 s. */
  connectTimeoutMs?: number;
  /** How long a request waits for its answer (including waiting for a connection). Default 15 s. */
  requestTimeoutMs?: number;
  /** An unacknowledged send on a live connection is sent again (same `cid`) after this long. Default 10 s. */
  resendAfterMs?: number;
  /** The `window` of each `sync` (protocol 2); default: the server's. */
  syncWindow?: number;
  /** Send `delivered` receipts for received events (protocol 2). Default true. */
  autoDelivered?: boolean;
  /** Heartbeat interval override (protocol 2); default: the server's `heartbeat_ms`. */
  heartbeatMs?: number;
  /** Source of randomness for the backoff jitter (tests). */
  random?: () => number;
}

/** A send, edit, delete or reaction that is not yet acknowledged; it survives restarts in the store. */
export interface OutboxEntry {
  cid: string;
  kind: "send" | "edit" | "delete" | "react";
  conversation: ConversationId;
  /** The request, exactly as it is (re)sent. */
  frame: Record<string, unknown> & { type: string; cid: string };
  createdAt: number;
}

/** The answer to an edit, delete or reaction. */
export interface ChangeResult {
  conversation: ConversationId;
  id?: number;
  seq?: number;
  ts?: number;
  duplicate: boolean;
  /** False when a reaction changed nothing (already there, or not there to remove). */
  changed: boolean;
}

/** A page of older messages. */
export interface HistoryPage {
  conversation: ConversationId;
  messages: ChatMessage[];
  more: boolean;
}

/** Everything the client tells its application. */
export interface ClientEvents {
  /** The connection changed state; `retryInMs` when a reconnect is scheduled. */
  state: { state: ConnectionState; attempt: number; retryInMs?: number; code?: number; reason?: string; handshakeFailed?: boolean };
  /** Signed in (again). */
  welcome: Welcome;
  /** A new message, in `seq` order per conversation, exactly once. */
  message: ChatMessage;
  /** A held message changed (edit, delete, reaction). */
  update: { message: ChatMessage; event: WireEvent };
  /** Older messages paged in through `history`. */
  history: HistoryPage;
  /** A catch-up skipped events before `fromSeq` (protocol 2 window): fetch them with `history` if needed. */
  limited: { conversation: ConversationId; fromSeq: number };
  /** The conversation list changed (most recent first). */
  conversations: ConversationInfo[];
  /** Catch-up finished: everything up to the server's state when asked was received. */
  synced: { counter?: number };
  /** An outbox entry was queued, acknowledged, or refused for good. */
  outbox: { entry: OutboxEntry; state: "queued" | "acked" | "failed"; error?: ChatError; message?: ChatMessage };
  /** A receipt (someone received or read up to `seq`). */
  receipt: Receipt;
  /** The user's own read marker moved (on this or another device). */
  read: { conversation: ConversationId; seq: number; unread: number };
  /** Who is typing in a conversation now. */
  typing: { conversation: ConversationId; uids: string[] };
  /** A contact came online or went offline. */
  presence: { uid: string; online: boolean; lastSeen?: number };
  invited: InvitedPush;
  removed: RemovedPush;
  /** A group request of this client took effect. */
  group: GroupAnswer;
  token_expiring: TokenExpiring;
  refreshed: Refreshed;
  /** An error that answers no request of this client (or a failed token refresh). */
  error: ChatError;
}

type Target = { to: string } | { group: string } | { conversation: ConversationId };

interface Inflight {
  frame: Record<string, unknown> & { cid: string };
  resolve: (answer: never) => void;
  reject: (error: ChatError) => void;
  timer: ReturnType<typeof setTimeout>;
  sent: boolean;
  retries: number;
}

const ANSWERS = new Set([
  "sync", "history", "conversations", "read", "group", "group_info", "members", "invitations", "block",
  "blocks", "refreshed", "online", "pong", "search", "delivered",
]);
const EVENTS = new Set(["message", "edit", "delete", "reaction"]);
const MAX_PENDING = 5_000;
const SEND_WINDOW = 16;
const RELAX_MS = 10_000;
const MAX_CURSORS = 1_000;
const MAX_CURSOR_BYTES = 48 * 1024;
const MAX_LIST = 5_000;
const OPEN = 1;

/**
 * A chat client for docs/protocol.md that is correct by default: it reconnects with backoff,
 * catches up through `sync` from cursors it persists, resends unacknowledged sends with the same
 * `cid` (so nothing is stored twice), drops repeats by `(conversation, seq)` and hands every
 * event over in `seq` order per conversation, without ever believing it holds a range it did not
 * receive.
 */
export class ChatClient {
  private readonly options: ChatClientOptions;
  private readonly store: KeyValueStore;
  private readonly events = new Emitter<ClientEvents>((error) => this.events.emit("error", asChatError(error)));
  private ws: WebSocketLike | undefined;
  private connState: ConnectionState = "idle";
  private attempt = 0;
  private handshakeFailures = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private resendTimer: ReturnType<typeof setInterval> | undefined;
  private saveTimer: ReturnType<typeof setTimeout> | undefined;
  private deliveredTimer: ReturnType<typeof setTimeout> | undefined;
  private welcomeFrame: Welcome | undefined;
  private me: string | undefined;
  private loading: Promise<void> | undefined;
  private buffered: string[] = [];
  private readonly convs = new Map<ConversationId, ConversationState>();
  private readonly outboxEntries = new Map<string, OutboxEntry>();
  /** Outbox entries transmitted on the current connection and not answered yet: cid → when. */
  private readonly outboxSentAt = new Map<string, number>();
  private pausedUntil = 0;
  private sendInterval = 0;
  private lastSendAt = 0;
  private lastRefusalAt = 0;
  private pumpTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly outboxWaiters = new Map<string, { resolve: (value: never) => void; reject: (error: ChatError) => void }>();
  private readonly inflight = new Map<string, Inflight>();
  private nextRequest = 1;
  private syncing = false;
  private syncAgain = false;
  private counter: number | undefined;
  private readonly deliveredSent = new Map<ConversationId, number>();
  private readonly typingIn = new Map<ConversationId, Map<string, ReturnType<typeof setTimeout>>>();
  private readonly typingSentAt = new Map<ConversationId, number>();
  private readonly presenceOf = new Map<string, { online: boolean; lastSeen?: number }>();
  private readonly onBrowserOnline = () => {
    if (this.connState === "offline") this.connectNow();
  };
  /** Counts of what the client dropped or repaired (for tests and diagnostics). */
  readonly stats = { repeats: 0, gaps: 0, syncs: 0, resends: 0, reconnects: 0, rateLimited: 0 };

  constructor(options: ChatClientOptions) {
    if (!options.token && !options.uid) throw new Error("ChatClient: give a token (or, in dev mode, a uid)");
    this.options = options;
    this.store = options.store ?? new MemoryStore();
  }

  // ---- lifecycle --------------------------------------------------------------------------

  /** Connects (and keeps reconnecting until `stop`). Resolves once the saved state is loaded. */
  async start(): Promise<void> {
    if (this.connState !== "idle" && this.connState !== "stopped") return;
    this.connState = "offline";
    this.handshakeFailures = 0;
    const expected = this.options.uid ?? (typeof this.options.token === "string" ? subjectOf(this.options.token) : undefined);
    if (expected && expected !== this.me) await this.loadUser(expected);
    (globalThis as { addEventListener?: (type: string, fn: () => void) => void }).addEventListener?.("online", this.onBrowserOnline);
    this.resendTimer = setInterval(() => this.resendStale(), Math.max(1000, (this.options.resendAfterMs ?? 10_000) / 2));
    this.connectNow();
  }

  /** Closes the connection and stops reconnecting; the outbox stays saved for the next start. */
  async stop(): Promise<void> {
    this.setState("stopped", {});
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.pumpTimer);
    clearInterval(this.resendTimer);
    this.stopHeartbeat();
    (globalThis as { removeEventListener?: (type: string, fn: () => void) => void }).removeEventListener?.("online", this.onBrowserOnline);
    const ws = this.ws;
    this.ws = undefined;
    ws?.close(1000, "client stopped");
    this.failInflight("stopped", true);
    await this.flushCursors();
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.connState;
  }

  /** The signed-in uid (from the last `welcome`, or the configured uid before it). */
  get uid(): string | undefined {
    return this.me;
  }

  /** The last `welcome` (protocol version, server settings). */
  get welcome(): Welcome | undefined {
    return this.welcomeFrame;
  }

  /** The protocol version of the connected server (1 before protocol 2 existed). */
  get protocol(): number {
    return this.welcomeFrame?.protocol ?? 1;
  }

  /** Subscribes to an event; returns the function that unsubscribes. */
  on<K extends keyof ClientEvents>(type: K, listener: (value: ClientEvents[K]) => void): () => void {
    return this.events.on(type, listener);
  }

  /** Subscribes to the next occurrence of an event only. */
  once<K extends keyof ClientEvents>(type: K, listener: (value: ClientEvents[K]) => void): () => void {
    return this.events.once(type, listener);
  }

  // ---- what the client holds ----------------------------------------------------------------

  /** The messages held of a conversation, oldest first. */
  messages(conversation: ConversationId): ChatMessage[] {
    return this.convs.get(conversation)?.sortedMessages() ?? [];
  }

  /** One held message by id. */
  message(conversation: ConversationId, id: number): ChatMessage | undefined {
    return this.convs.get(conversation)?.messages.get(id);
  }

  /** The `[first, last]` seq ranges received of a conversation: anything outside them was not. */
  ranges(conversation: ConversationId): [number, number][] {
    return this.convs.get(conversation)?.held.ranges() ?? [];
  }

  /** The catch-up cursor of a conversation. */
  cursor(conversation: ConversationId): number {
    return this.convs.get(conversation)?.cursor ?? 0;
  }

  /** True when older events may exist that `loadOlder` would fetch. */
  hasOlder(conversation: ConversationId): boolean {
    const conv = this.convs.get(conversation);
    if (!conv || conv.beginning) return false;
    const lowest = conv.held.highest === undefined ? undefined : conv.held.startOf(conv.held.highest);
    return lowest === undefined ? conv.cursor > 0 : lowest > 1;
  }

  /** What is known of one conversation. */
  conversationInfo(conversation: ConversationId): ConversationInfo | undefined {
    const info = this.convs.get(conversation)?.info;
    return info && { ...info };
  }

  /** The conversations known, most recent activity first. */
  conversationList(): ConversationInfo[] {
    return [...this.convs.values()]
      .filter((c) => c.info.lastSeq > 0 || c.info.name !== undefined || c.messages.size > 0)
      .map((c) => ({ ...c.info }))
      .sort((a, b) => (b.lastTs ?? 0) - (a.lastTs ?? 0) || a.id.localeCompare(b.id));
  }

  /** Sends, edits, deletes and reactions not yet acknowledged, oldest first. */
  outbox(conversation?: ConversationId): OutboxEntry[] {
    return [...this.outboxEntries.values()].filter((e) => !conversation || e.conversation === conversation);
  }

  /** Users typing in a conversation now. */
  typingUsers(conversation: ConversationId): string[] {
    return [...(this.typingIn.get(conversation)?.keys() ?? [])];
  }

  /** Whether a contact is online (undefined: not known yet), and when it was last seen. */
  presence(uid: string): { online: boolean; lastSeen?: number } | undefined {
    return this.presenceOf.get(uid);
  }

  /** Every user whose presence is known, online ones first, by uid. */
  presenceList(): { uid: string; online: boolean; lastSeen?: number }[] {
    return [...this.presenceOf]
      .map(([uid, p]) => ({ uid, ...p }))
      .sort((a, b) => Number(b.online) - Number(a.online) || a.uid.localeCompare(b.uid));
  }

  /** Another user's markers in a conversation (the peer of a direct one, or a group member). */
  receipts(conversation: ConversationId, uid: string): { delivered: number; read: number } | undefined {
    const markers = this.convs.get(conversation)?.receipts.get(uid);
    return markers && { ...markers };
  }

  /** How far one's own message got: `read` or `delivered` by someone else, or just `sent`. */
  status(message: ChatMessage): "sent" | "delivered" | "read" {
    const conv = this.convs.get(message.conversation);
    let status: "sent" | "delivered" | "read" = "sent";
    for (const [uid, markers] of conv?.receipts ?? []) {
      if (uid === this.me) continue;
      if (markers.read >= message.seq) return "read";
      if (markers.delivered >= message.seq) status = "delivered";
    }
    return status;
  }

  // ---- sending (through the outbox) ---------------------------------------------------------

  /**
   * Sends a message to a uid, a group or a conversation. Resolves with the stored message once
   * acknowledged (resent with the same `cid` across reconnects until then); rejects only when the
   * server refuses it for good (`not_member`, `blocked`, …).
   */
  send(target: Target, text: string, options: { replyTo?: number; cid?: string } = {}): Promise<ChatMessage> {
    const address = this.address(target);
    const cid = options.cid ?? newCid("c");
    const frame: OutboxEntry["frame"] = { type: "send", cid, text, ...address.fields };
    if (options.replyTo !== undefined) frame.reply_to = options.replyTo;
    return this.enqueue({ cid, kind: "send", conversation: address.conversation, frame, createdAt: Date.now() });
  }

  /** Edits one's own message (protocol 2). */
  edit(conversation: ConversationId, id: number, text: string): Promise<ChangeResult> {
    return this.change("edit", conversation, { id, text });
  }

  /** Deletes a message (one's own, or any in a group one administers) (protocol 2). */
  deleteMessage(conversation: ConversationId, id: number): Promise<ChangeResult> {
    return this.change("delete", conversation, { id });
  }

  /** Adds or removes one's reaction to a message (protocol 2). */
  react(conversation: ConversationId, id: number, emoji: string, action: "add" | "remove" = "add"): Promise<ChangeResult> {
    return this.change("react", conversation, { id, emoji, action });
  }

  private change(kind: "edit" | "delete" | "react", conversation: ConversationId, fields: Record<string, unknown>): Promise<ChangeResult> {
    if (this.welcomeFrame && this.protocol < 2) return Promise.reject(unsupported(kind));
    const cid = newCid(kind[0]!);
    const frame = { type: kind, cid, conversation, ...fields };
    return this.enqueue({ cid, kind, conversation, frame, createdAt: Date.now() });
  }

  private enqueue<T>(entry: OutboxEntry): Promise<T> {
    const done = new Promise<T>((resolve, reject) => this.outboxWaiters.set(entry.cid, { resolve: resolve as (v: never) => void, reject }));
    this.outboxEntries.set(entry.cid, entry);
    this.saveOutbox();
    this.events.emit("outbox", { entry, state: "queued" });
    this.pump();
    return done;
  }

  /**
   * Transmits what waits in the outbox, oldest first, at most `SEND_WINDOW` unacknowledged on the
   * connection. After a `rate_limited` refusal it pauses as long as the server asked and then
   * sends one at a time, spaced by an interval that grows by half at each refusal and shrinks a
   * little at each acceptance (so it settles just above the server's refill rate), until no
   * refusal came for `RELAX_MS`: a long outbox never bursts into the limit over and over, whose
   * repeated refusals would close the connection (1008).
   */
  private pump(): void {
    clearTimeout(this.pumpTimer);
    if (this.connState !== "online") return;
    const now = Date.now();
    if (this.sendInterval && now - this.lastRefusalAt > RELAX_MS) this.sendInterval = 0;
    const next = Math.max(this.pausedUntil, this.sendInterval ? this.lastSendAt + this.sendInterval : 0);
    if (next > now) {
      this.pumpTimer = setTimeout(() => this.pump(), next - now);
      return;
    }
    let inFlight = this.outboxSentAt.size;
    for (const entry of this.outboxEntries.values()) {
      if (inFlight >= SEND_WINDOW) break;
      if (this.outboxSentAt.has(entry.cid)) continue;
      if (!this.sendFrame(entry.frame)) break;
      this.outboxSentAt.set(entry.cid, now);
      this.lastSendAt = now;
      inFlight += 1;
      if (this.sendInterval) {
        this.pumpTimer = setTimeout(() => this.pump(), this.sendInterval);
        break;
      }
    }
  }

  /** Sends that got no answer in `resendAfterMs` go out again (same cid: stored at most once). */
  private resendStale(): void {
    if (this.connState !== "online") return;
    const stale = Date.now() - (this.options.resendAfterMs ?? 10_000);
    for (const [cid, sentAt] of this.outboxSentAt) {
      if (sentAt > stale) continue;
      this.stats.resends += 1;
      this.outboxSentAt.delete(cid);
    }
    this.pump();
  }

  private onAck(ack: Ack): void {
    const entry = this.outboxEntries.get(ack.cid);
    if (!entry) return;
    let message: ChatMessage | undefined;
    if (ack.changed !== false && ack.seq !== undefined && ack.id !== undefined) {
      const event = eventOf(entry, ack, this.me ?? "");
      this.accept(event, "live");
      if (event.type === "message") message = this.message(event.conversation, event.id) ?? toMessage(event);
    }
    if (entry.kind === "send") this.settle(entry, message ?? toMessage(eventOf(entry, ack, this.me ?? "")));
    else this.settle(entry, { conversation: ack.conversation, id: ack.id, seq: ack.seq, ts: ack.ts, duplicate: ack.duplicate === true, changed: ack.changed !== false } satisfies ChangeResult);
  }

  private settle(entry: OutboxEntry, value: unknown, error?: ChatError): void {
    if (!this.outboxEntries.delete(entry.cid)) return;
    this.outboxSentAt.delete(entry.cid);
    // Accepted while paced: try a little faster (the next refusal slows down again).
    if (this.sendInterval && !error) this.sendInterval = Math.max(10, this.sendInterval * 0.98);
    this.saveOutbox();
    const waiter = this.outboxWaiters.get(entry.cid);
    this.outboxWaiters.delete(entry.cid);
    if (error) {
      this.events.emit("outbox", { entry, state: "failed", error });
      waiter?.reject(error);
    } else {
      const message = entry.kind === "send" ? (value as ChatMessage) : undefined;
      this.events.emit("outbox", message ? { entry, state: "acked", message } : { entry, state: "acked" });
      waiter?.resolve(value as never);
    }
    this.pump();
  }

  private onOutboxError(entry: OutboxEntry, error: ChatError): void {
    if (!error.transient) return this.settle(entry, undefined, error);
    // Refused for now (rate limit, overload): sent again, same cid, after a pause.
    this.outboxSentAt.delete(entry.cid);
    const wait = error.code === "rate_limited" ? Math.min(2000, Math.max(20, error.retryAfterMs ?? 100)) : 1000;
    this.pausedUntil = Math.max(this.pausedUntil, Date.now() + wait);
    if (error.code === "rate_limited") {
      this.stats.rateLimited += 1;
      // Space sends further apart (once per burst of refusals: those in flight together).
      const now = Date.now();
      if (now - this.lastRefusalAt > this.sendInterval) this.sendInterval = Math.min(2000, Math.max(this.sendInterval * 1.5, wait, 20));
      this.lastRefusalAt = now;
    }
    this.pump();
  }

  // ---- requests ------------------------------------------------------------------------------

  /** Sends any request and resolves with its answer (rejects with a {@link ChatError}). */
  request<T>(frame: Record<string, unknown> & { type: string }, timeoutMs = this.options.requestTimeoutMs ?? 15_000): Promise<T> {
    if (this.connState === "stopped" || this.connState === "idle") return Promise.reject(new ChatError("stopped", "the client is not started"));
    const cid = typeof frame.cid === "string" ? frame.cid : `q${this.nextRequest++}`;
    return new Promise<T>((resolve, reject) => {
      const entry: Inflight = {
        frame: { ...frame, cid },
        resolve: resolve as (answer: never) => void,
        reject,
        sent: false,
        retries: 0,
        timer: setTimeout(() => {
          this.inflight.delete(cid);
          reject(new ChatError("timeout", `no answer to ${frame.type} within ${timeoutMs} ms`, { cid }));
        }, timeoutMs),
      };
      this.inflight.set(cid, entry);
      if (this.connState === "online") entry.sent = this.sendFrame(entry.frame);
    });
  }

  /** Catches up now (resolves when every conversation is current). */
  async sync(): Promise<void> {
    await this.runSync();
  }

  /** One page of a conversation's older events (`before` a seq; the newest page without). */
  async history(conversation: ConversationId, options: { before?: number; limit?: number } = {}): Promise<HistoryPage> {
    const frame: Record<string, unknown> & { type: string } = { type: "history", conversation };
    if (options.before !== undefined) frame.before = options.before;
    if (options.limit !== undefined) frame.limit = options.limit;
    const answer = await this.request<HistoryAnswer>(frame);
    const conv = this.conv(conversation);
    const items = answer.messages ?? [];
    const version = Math.max(conv.cursor, conv.info.lastSeq, ...items.map((m) => m.seq));
    const messages: ChatMessage[] = [];
    for (const item of items) {
      const message = this.accept(item, "history", version);
      if (message) messages.push(message);
    }
    if (!answer.more) conv.beginning = true;
    const page = { conversation, messages, more: answer.more };
    this.events.emit("history", page);
    return page;
  }

  /** The page before the oldest event held of the latest range (or the newest page). */
  async loadOlder(conversation: ConversationId, limit = 50): Promise<HistoryPage> {
    const conv = this.conv(conversation);
    const top = conv.held.highest;
    const before = top === undefined ? undefined : conv.held.startOf(top);
    if (conv.beginning && (before === undefined || before <= (conv.held.lowest ?? 0))) {
      return { conversation, messages: [], more: false };
    }
    try {
      return await this.history(conversation, before === undefined ? { limit } : { before, limit });
    } catch (error) {
      // A direct conversation exists from its first message only: nothing to show yet.
      if (error instanceof ChatError && error.code === "not_member" && conversation.startsWith("d:")) {
        conv.beginning = true;
        return { conversation, messages: [], more: false };
      }
      throw error;
    }
  }

  /** One page of the conversation list (in id order); see also {@link refreshConversations}. */
  async conversations(options: { after?: ConversationId; limit?: number } = {}): Promise<ConversationsAnswer> {
    const answer = await this.request<ConversationsAnswer>({ type: "conversations", ...options });
    for (const wire of answer.conversations ?? []) this.conv(wire.id).updateInfo(wire);
    return answer;
  }

  /** Fetches the whole conversation list (following `more`) and announces it. */
  async refreshConversations(): Promise<ConversationInfo[]> {
    let after: ConversationId | undefined;
    for (let total = 0; total < MAX_LIST; ) {
      const page = await this.conversations(after ? { after } : {});
      total += page.conversations.length;
      after = page.conversations[page.conversations.length - 1]?.id;
      if (!page.more || !after) break;
    }
    const list = this.conversationList();
    this.events.emit("conversations", list);
    return list;
  }

  /** Moves the read marker of a conversation (never backwards). */
  async read(conversation: ConversationId, seq: number): Promise<ReadAnswer> {
    const answer = await this.request<ReadAnswer>({ type: "read", conversation, seq });
    this.onRead(answer);
    return answer;
  }

  /** Marks everything held of a conversation read, if that moves the marker. */
  async markRead(conversation: ConversationId): Promise<void> {
    const conv = this.convs.get(conversation);
    const top = conv?.held.highest;
    if (!conv || top === undefined || top <= conv.info.readSeq) return;
    await this.read(conversation, top);
  }

  /** Tells the authors that this device received events up to `seq` (protocol 2). */
  async delivered(conversation: ConversationId, seq: number): Promise<void> {
    this.requireProtocol2("delivered");
    await this.request({ type: "delivered", conversation, seq });
  }

  /**
   * Says the user is typing (`start`, repeated by the library at most every ttl/2) or stopped
   * (protocol 2). Nothing is sent for a conversation that does not exist yet (a direct one before
   * its first message), which the server would refuse.
   */
  async typing(conversation: ConversationId, state: "start" | "stop" = "start"): Promise<void> {
    if (this.protocol < 2 || this.connState !== "online") return;
    const conv = this.convs.get(conversation);
    if (!conv || (!conv.listed && conv.held.size === 0 && conv.cursor === 0)) return;
    const now = Date.now();
    const ttl = this.welcomeFrame?.typing_ttl_ms ?? 6000;
    if (state === "start") {
      if (now - (this.typingSentAt.get(conversation) ?? 0) < ttl / 2) return;
      this.typingSentAt.set(conversation, now);
    } else {
      if (!this.typingSentAt.has(conversation)) return;
      this.typingSentAt.delete(conversation);
    }
    this.sendFrame({ type: "typing", conversation, state });
  }

  /** Full-text search over what the user may read (protocol 2). */
  async search(query: string, options: { conversation?: ConversationId; offset?: number; limit?: number } = {}): Promise<SearchAnswer> {
    this.requireProtocol2("search");
    return this.request<SearchAnswer>({ type: "search", query, ...options });
  }

  /** Asks for the change counter now (protocol 2); the library does this every `heartbeat_ms`. */
  async ping(): Promise<Pong> {
    this.requireProtocol2("ping");
    const pong = await this.request<Pong>({ type: "ping" });
    this.onPong(pong);
    return pong;
  }

  /** The user and its online contacts (presence is updated from the answer). */
  async online(): Promise<OnlineAnswer> {
    const answer = await this.request<OnlineAnswer>({ type: "online" });
    const online = new Set(answer.uids ?? []);
    if (!answer.more) {
      // A complete answer: whoever was online and is not listed any more went offline.
      for (const [uid, known] of this.presenceOf) if (known.online && !online.has(uid)) this.setPresence(uid, false, known.lastSeen);
    }
    for (const uid of online) this.setPresence(uid, true);
    for (const [uid, lastSeen] of Object.entries(answer.last_seen ?? {})) this.setPresence(uid, false, lastSeen);
    return answer;
  }

  /** Replaces the connection's token (before it expires). */
  async refresh(token: string): Promise<Refreshed> {
    const answer = await this.request<Refreshed>({ type: "refresh", token });
    this.events.emit("refreshed", answer);
    return answer;
  }

  createGroup(group: string, options: { name?: string; access?: "invite" | "open"; history?: "joined" | "shared" } = {}): Promise<GroupAnswer> {
    return this.groupRequest({ type: "create_group", group, ...options });
  }
  joinGroup(group: string): Promise<GroupAnswer> {
    return this.groupRequest({ type: "join_group", group });
  }
  leaveGroup(group: string): Promise<GroupAnswer> {
    return this.groupRequest({ type: "leave_group", group });
  }
  invite(group: string, uid: string): Promise<GroupAnswer> {
    return this.groupRequest({ type: "invite", group, uid });
  }
  decline(group: string): Promise<GroupAnswer> {
    return this.groupRequest({ type: "decline", group });
  }
  kick(group: string, uid: string): Promise<GroupAnswer> {
    return this.groupRequest({ type: "kick", group, uid });
  }
  ban(group: string, uid: string): Promise<GroupAnswer> {
    return this.groupRequest({ type: "ban", group, uid });
  }
  unban(group: string, uid: string): Promise<GroupAnswer> {
    return this.groupRequest({ type: "unban", group, uid });
  }
  promote(group: string, uid: string): Promise<GroupAnswer> {
    return this.groupRequest({ type: "promote", group, uid });
  }
  demote(group: string, uid: string): Promise<GroupAnswer> {
    return this.groupRequest({ type: "demote", group, uid });
  }
  updateGroup(group: string, changes: { name?: string; access?: "invite" | "open"; history?: "joined" | "shared" }): Promise<GroupInfo> {
    return this.request<GroupInfo>({ type: "update_group", group, ...changes });
  }
  groupInfo(group: string): Promise<GroupInfo> {
    return this.request<GroupInfo>({ type: "group_info", group });
  }
  invitations(): Promise<InvitationsAnswer> {
    return this.request<InvitationsAnswer>({ type: "invitations" });
  }
  /** One page of a group's members. */
  members(group: string, options: { after?: string; limit?: number } = {}): Promise<MembersAnswer> {
    return this.request<MembersAnswer>({ type: "members", group, ...options });
  }
  /** Every member of a group (following `more`), with the owner's and admins' roles. */
  async allMembers(group: string): Promise<{ members: string[]; roles: Record<string, "owner" | "admin"> }> {
    const members: string[] = [];
    const roles: Record<string, "owner" | "admin"> = {};
    let after: string | undefined;
    do {
      const page = await this.members(group, after ? { after } : {});
      members.push(...page.members);
      Object.assign(roles, page.roles);
      after = page.more ? page.members[page.members.length - 1] : undefined;
    } while (after && members.length < MAX_LIST);
    return { members, roles };
  }
  block(uid: string): Promise<BlockAnswer> {
    return this.request<BlockAnswer>({ type: "block", uid });
  }
  unblock(uid: string): Promise<BlockAnswer> {
    return this.request<BlockAnswer>({ type: "unblock", uid });
  }
  blocks(options: { after?: string } = {}): Promise<BlocksAnswer> {
    return this.request<BlocksAnswer>({ type: "blocks", ...options });
  }

  private async groupRequest(frame: Record<string, unknown> & { type: string; group: string }): Promise<GroupAnswer> {
    const answer = await this.request<GroupAnswer>(frame);
    this.onGroup(answer);
    return answer;
  }

  // ---- connection ------------------------------------------------------------------------------

  private connectNow(): void {
    clearTimeout(this.reconnectTimer);
    if (this.connState === "stopped" || this.connState === "connecting" || this.connState === "online") return;
    void this.openSocket();
  }

  private async openSocket(): Promise<void> {
    this.setState("connecting", {});
    let url: string;
    try {
      url = await this.handshakeUrl();
    } catch (error) {
      this.events.emit("error", asChatError(error));
      return this.scheduleReconnect({ handshakeFailed: true });
    }
    if (this.connState !== "connecting") return;
    const Socket = this.options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Socket) throw new Error("ChatClient: no WebSocket here; pass options.WebSocket (e.g. from the `ws` package on Node 20)");
    const ws = new Socket(url);
    this.ws = ws;
    let opened = false;
    const closed = (code: number, reason: string) => {
      clearTimeout(this.connectTimer);
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.onClose(code, reason, opened);
    };
    // No welcome in time (a handshake the server never answers, a half-open socket): try again.
    this.connectTimer = setTimeout(() => {
      if (this.ws !== ws || this.connState === "online") return;
      ws.close(4000, "no welcome in time");
      closed(4000, "no welcome in time");
    }, this.options.connectTimeoutMs ?? 10_000);
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (event) => {
      if (this.ws === ws && typeof event.data === "string") this.onData(event.data);
    };
    // A refused handshake: some implementations (Node 20's) report the error but never close.
    ws.onerror = () => {
      if (!opened) closed(1006, "handshake failed");
    };
    ws.onclose = (event) => closed(event.code, event.reason);
  }

  private async handshakeUrl(): Promise<string> {
    const source = this.options.url;
    const raw = typeof source === "function" ? source(this.attempt) : Array.isArray(source) ? source[this.stats.reconnects % source.length]! : source;
    const url = new URL(raw);
    const token = this.options.token;
    if (token) url.searchParams.set("token", typeof token === "function" ? await token() : token);
    else url.searchParams.set("uid", this.options.uid ?? "");
    return url.toString();
  }

  private onClose(code: number, reason: string, opened: boolean): void {
    const welcomed = this.connState === "online";
    this.stopHeartbeat();
    clearTimeout(this.pumpTimer);
    this.outboxSentAt.clear();
    this.failInflight("disconnected", false);
    this.syncing = false;
    for (const conversation of [...this.typingIn.keys()]) this.clearTyping(conversation);
    if (this.connState === "stopped") return;
    if (code === CLOSE_TOKEN_EXPIRED && typeof this.options.token !== "function") {
      this.events.emit("error", new ChatError("token_expired", "the token expired: sign in again with a new one"));
      void this.stop();
      return;
    }
    const handshakeFailed = !opened || (!welcomed && !this.welcomeFrame);
    if (welcomed) this.handshakeFailures = 0;
    else this.handshakeFailures += 1;
    if (!welcomed && this.handshakeFailures >= (this.options.maxHandshakeFailures ?? Infinity)) {
      this.setState("offline", { code, reason, handshakeFailed });
      void this.stop();
      return;
    }
    this.scheduleReconnect({ code, reason, handshakeFailed, immediate: code === CLOSE_TOKEN_EXPIRED });
  }

  private scheduleReconnect(detail: { code?: number; reason?: string; handshakeFailed?: boolean; immediate?: boolean }): void {
    const delay = detail.immediate ? 0 : backoffDelay(this.attempt, this.options.backoff, this.options.random);
    this.attempt += 1;
    this.setState("offline", { code: detail.code, reason: detail.reason, handshakeFailed: detail.handshakeFailed, retryInMs: delay });
    this.reconnectTimer = setTimeout(() => {
      this.stats.reconnects += 1;
      this.connectNow();
    }, delay);
  }

  private setState(state: ConnectionState, detail: Omit<ClientEvents["state"], "state" | "attempt">): void {
    this.connState = state;
    const event: ClientEvents["state"] = { state, attempt: this.attempt };
    for (const [key, value] of Object.entries(detail)) if (value !== undefined) (event as Record<string, unknown>)[key] = value;
    this.events.emit("state", event);
  }

  private sendFrame(frame: Record<string, unknown>): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN || this.connState !== "online") return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  private failInflight(code: "disconnected" | "stopped", all: boolean): void {
    for (const [cid, entry] of this.inflight) {
      if (!all && !entry.sent) continue;
      clearTimeout(entry.timer);
      this.inflight.delete(cid);
      entry.reject(new ChatError(code, code === "stopped" ? "the client was stopped" : "the connection dropped before the answer", { cid }));
    }
  }

  // ---- incoming frames ------------------------------------------------------------------------

  private onData(data: string): void {
    if (this.loading) {
      this.buffered.push(data);
      return;
    }
    let frame: { type?: string; cid?: string } & Record<string, unknown>;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    try {
      this.dispatch(frame);
    } catch (error) {
      this.events.emit("error", asChatError(error));
    }
  }

  private dispatch(frame: { type?: string; cid?: string } & Record<string, unknown>): void {
    const type = frame.type ?? "";
    if (type === "welcome") return this.onWelcome(frame as unknown as Welcome);
    if (EVENTS.has(type)) return void this.accept(frame as unknown as WireEvent, "live");
    if (type === "ack") return this.onAck(frame as unknown as Ack);
    if (type === "error") return this.onError(frame as unknown as ErrorFrame);
    const waiting = frame.cid !== undefined && ANSWERS.has(type) ? this.inflight.get(frame.cid) : undefined;
    if (waiting) {
      clearTimeout(waiting.timer);
      this.inflight.delete(frame.cid!);
      if (type === "sync") this.stats.syncs += 1;
      return waiting.resolve(frame as never);
    }
    this.onPush(type, frame);
  }

  private onPush(type: string, frame: Record<string, unknown>): void {
    switch (type) {
      case "read":
        return this.onRead(frame as unknown as ReadAnswer);
      case "receipt":
        return this.onReceipt(frame as unknown as Receipt);
      case "typing":
        return this.onTyping(frame as unknown as TypingPush);
      case "presence": {
        const p = frame as unknown as PresencePush;
        return this.setPresence(p.uid, p.status === "online", p.last_seen);
      }
      case "invited":
        return this.events.emit("invited", frame as unknown as InvitedPush);
      case "removed":
        return this.onRemoved(frame as unknown as RemovedPush);
      case "token_expiring":
        return this.onTokenExpiring(frame as unknown as TokenExpiring);
      case "pong":
        return this.onPong(frame as unknown as Pong);
    }
  }

  private onError(frame: ErrorFrame): void {
    const error = ChatError.fromFrame(frame);
    const entry = frame.cid ? this.outboxEntries.get(frame.cid) : undefined;
    if (entry) return this.onOutboxError(entry, error);
    const waiting = frame.cid ? this.inflight.get(frame.cid) : undefined;
    if (!waiting) return this.events.emit("error", error);
    if (error.code === "rate_limited" && waiting.retries < 5) {
      // Not executed: the same request again once the bucket allows it.
      waiting.retries += 1;
      waiting.sent = false;
      setTimeout(() => {
        if (this.inflight.get(frame.cid!) === waiting && this.connState === "online") waiting.sent = this.sendFrame(waiting.frame);
      }, Math.max(50, error.retryAfterMs ?? 100));
      return;
    }
    clearTimeout(waiting.timer);
    this.inflight.delete(frame.cid!);
    waiting.reject(error);
  }

  private onWelcome(welcome: Welcome): void {
    if (welcome.uid !== this.me) {
      // Another user than the state loaded: load its state before anything else is handled.
      this.loading = this.loadUser(welcome.uid).finally(() => {
        this.loading = undefined;
        this.welcomed(welcome);
        const later = this.buffered;
        this.buffered = [];
        for (const data of later) this.onData(data);
      });
      return;
    }
    this.welcomed(welcome);
  }

  private welcomed(welcome: Welcome): void {
    clearTimeout(this.connectTimer);
    this.welcomeFrame = welcome;
    this.attempt = 0;
    this.handshakeFailures = 0;
    this.setState("online", {});
    this.events.emit("welcome", welcome);
    for (const entry of this.inflight.values()) if (!entry.sent) entry.sent = this.sendFrame(entry.frame);
    this.readdress();
    this.outboxSentAt.clear();
    this.pump();
    this.startHeartbeat();
    void this.runSync();
  }

  // ---- the event stream: ordering, repeats, gaps ---------------------------------------------

  /**
   * Takes one event from a push or an ack (`live`), a catch-up page (`sync`) or a history page.
   * Returns the message it added or changed (for history pages).
   */
  private accept(event: WireEvent, flow: "live" | "sync" | "history", version = event.seq): ChatMessage | undefined {
    if (typeof event.conversation !== "string" || !Number.isInteger(event.seq) || event.seq < 1) return undefined;
    const conv = this.conv(event.conversation);
    const seq = event.seq;
    if (conv.held.has(seq) || (flow !== "history" && seq <= conv.cursor)) {
      this.stats.repeats += 1;
      if (flow === "sync" && seq > conv.cursor) this.jump(conv, seq);
      return undefined;
    }
    if (flow === "history") {
      const message = this.deliver(conv, event, version, false);
      this.advance(conv);
      return message;
    }
    if (seq > conv.cursor + 1) {
      if (flow === "sync") {
        // A catch-up answers everything readable after the cursor: what it skipped is not ours
        // (before we joined) or beyond the window; it is not held, and stays a hole.
        this.jump(conv, seq - 1);
      } else {
        this.stats.gaps += 1;
        if (conv.pending.size < MAX_PENDING) conv.pending.set(seq, event);
        void this.runSync();
        return undefined;
      }
    }
    const message = this.deliver(conv, event, version, true);
    conv.cursor = seq;
    this.advance(conv);
    this.cursorsChanged();
    return message;
  }

  /** Moves the cursor to `to`, delivering (in order) what was pushed ahead of the hole. */
  private jump(conv: ConversationState, to: number): void {
    const early = [...conv.pending.keys()].filter((seq) => seq <= to).sort((a, b) => a - b);
    for (const seq of early) {
      const event = conv.pending.get(seq)!;
      conv.pending.delete(seq);
      if (!conv.held.has(seq)) this.deliver(conv, event, seq, true);
    }
    if (to > conv.cursor) {
      conv.cursor = to;
      this.cursorsChanged();
    }
    this.advance(conv);
  }

  /** Moves the cursor over what is held or waiting right after it. */
  private advance(conv: ConversationState): void {
    for (;;) {
      const next = conv.cursor + 1;
      if (conv.held.has(next)) {
        conv.cursor = next;
      } else if (conv.pending.has(next)) {
        const event = conv.pending.get(next)!;
        conv.pending.delete(next);
        this.deliver(conv, event, next, true);
        conv.cursor = next;
      } else {
        break;
      }
      this.cursorsChanged();
    }
    for (const seq of conv.pending.keys()) if (seq <= conv.cursor) conv.pending.delete(seq);
  }

  private deliver(conv: ConversationState, event: WireEvent, version: number, announce: boolean): ChatMessage | undefined {
    const applied = conv.apply(event, this.me ?? "", version);
    if (event.from !== this.me) {
      this.clearTypingOf(conv.id, event.from);
      this.deliveredSoon(conv.id);
    }
    if (applied.kind === "none") return undefined;
    const message = applied.message;
    if (message.from === this.me && event.type === "message" && event.cid) {
      // Stored: acknowledged through another path (a catch-up after a reconnect).
      const entry = this.outboxEntries.get(event.cid);
      if (entry && entry.kind === "send") this.settle(entry, message);
    }
    if (announce) {
      if (applied.kind === "message") this.events.emit("message", message);
      else this.events.emit("update", { message, event });
    }
    return message;
  }

  private conv(id: ConversationId): ConversationState {
    let conv = this.convs.get(id);
    if (!conv) this.convs.set(id, (conv = new ConversationState(id, this.me ?? "")));
    return conv;
  }

  // ---- catch-up --------------------------------------------------------------------------------

  private async runSync(): Promise<void> {
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    if (this.connState !== "online") return;
    this.syncing = true;
    try {
      do {
        this.syncAgain = false;
        let more = true;
        while (more && this.connState === "online") {
          const frame: Record<string, unknown> & { type: string } = { type: "sync", cursors: this.cursorsToSend() };
          if (this.options.syncWindow !== undefined && this.protocol >= 2) frame.window = this.options.syncWindow;
          const before = JSON.stringify(frame.cursors);
          const answer = await this.request<SyncAnswer>(frame);
          this.applySync(answer);
          more = answer.more && JSON.stringify(this.cursorsToSend()) !== before;
        }
      } while (this.syncAgain && this.connState === "online");
      if (this.connState === "online") this.events.emit("synced", this.counter === undefined ? {} : { counter: this.counter });
    } catch (error) {
      // Disconnected or timed out: the next welcome (or heartbeat) starts again.
      if (!(error instanceof ChatError && (error.code === "disconnected" || error.code === "stopped"))) this.events.emit("error", asChatError(error));
    } finally {
      this.syncing = false;
    }
  }

  private applySync(answer: SyncAnswer): void {
    const entries = new Map<ConversationId, WireConversation>();
    for (const wire of answer.conversations ?? []) entries.set(wire.id, wire);
    const pageTop = new Map<ConversationId, number>();
    for (const item of answer.messages ?? []) pageTop.set(item.conversation, Math.max(pageTop.get(item.conversation) ?? 0, item.seq));
    for (const wire of entries.values()) this.conv(wire.id).updateInfo(wire);
    for (const item of answer.messages ?? []) {
      const version = entries.get(item.conversation)?.last_seq ?? pageTop.get(item.conversation) ?? item.seq;
      this.accept(item, "sync", version);
    }
    for (const wire of entries.values()) {
      const conv = this.conv(wire.id);
      if (wire.limited && wire.from_seq !== undefined) this.events.emit("limited", { conversation: wire.id, fromSeq: wire.from_seq });
      if (wire.cursor !== undefined && wire.cursor > conv.cursor) this.jump(conv, wire.cursor);
    }
    if (answer.counter !== undefined && !answer.more) this.counter = answer.counter;
    if (entries.size > 0) this.events.emit("conversations", this.conversationList());
  }

  /** The cursors a `sync` carries: at most 1,000 (most recent first) and well under the frame limit. */
  private cursorsToSend(): Record<ConversationId, number> {
    const out: Record<ConversationId, number> = {};
    // A listed conversation goes in even at 0, so that a page of empty ones is not listed again.
    const ordered = [...this.convs.values()].filter((c) => c.cursor > 0 || c.listed).sort((a, b) => (b.info.lastTs ?? 0) - (a.info.lastTs ?? 0));
    let bytes = 0;
    let count = 0;
    for (const conv of ordered) {
      bytes += conv.id.length * 3 + 20;
      if (count >= MAX_CURSORS || bytes > MAX_CURSOR_BYTES) break;
      out[conv.id] = conv.cursor;
      count += 1;
    }
    return out;
  }

  // ---- heartbeat (protocol 2) ------------------------------------------------------------------

  private startHeartbeat(): void {
    this.stopHeartbeat();
    const every = this.options.heartbeatMs ?? this.welcomeFrame?.heartbeat_ms;
    if (this.protocol < 2 || !every) return;
    this.heartbeatTimer = setInterval(() => {
      const ws = this.ws;
      this.request<Pong>({ type: "ping" }, Math.min(every, 10_000)).then(
        (pong) => this.onPong(pong),
        (error: ChatError) => {
          // No pong: the connection is dead without knowing it. Drop it and reconnect.
          if (error.code === "timeout" && this.ws === ws) ws?.close(4000, "heartbeat timeout");
        },
      );
    }, every);
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  private onPong(pong: Pong): void {
    const behind = (pong.latest ?? []).some((l) => this.cursor(l.conversation) < l.last_seq);
    if (behind || (pong.counter !== undefined && pong.counter !== this.counter)) void this.runSync();
  }

  // ---- receipts, typing, presence, groups, tokens -------------------------------------------------

  private deliveredSoon(conversation: ConversationId): void {
    if (this.protocol < 2 || this.options.autoDelivered === false) return;
    this.deliveredSent.set(conversation, this.deliveredSent.get(conversation) ?? 0);
    if (this.deliveredTimer) return;
    this.deliveredTimer = setTimeout(() => {
      this.deliveredTimer = undefined;
      for (const [id, sent] of this.deliveredSent) {
        const conv = this.convs.get(id);
        if (!conv || conv.cursor <= sent) continue;
        if (this.sendFrame({ type: "delivered", conversation: id, seq: conv.cursor })) this.deliveredSent.set(id, conv.cursor);
      }
    }, 100);
  }

  private onRead(frame: ReadAnswer): void {
    const conv = this.conv(frame.conversation);
    conv.markRead(frame.seq, frame.unread);
    this.events.emit("read", { conversation: frame.conversation, seq: conv.info.readSeq, unread: conv.info.unread });
  }

  private onReceipt(receipt: Receipt): void {
    if (this.conv(receipt.conversation).receipt(receipt.uid, receipt.kind, receipt.seq)) this.events.emit("receipt", receipt);
  }

  private onTyping(push: TypingPush): void {
    if (push.uid === this.me) return;
    if (push.state === "stop") return this.clearTypingOf(push.conversation, push.uid);
    let typing = this.typingIn.get(push.conversation);
    if (!typing) this.typingIn.set(push.conversation, (typing = new Map()));
    clearTimeout(typing.get(push.uid));
    const ttl = push.expires_ms ?? this.welcomeFrame?.typing_ttl_ms ?? 6000;
    typing.set(push.uid, setTimeout(() => this.clearTypingOf(push.conversation, push.uid), ttl));
    this.events.emit("typing", { conversation: push.conversation, uids: this.typingUsers(push.conversation) });
  }

  private clearTypingOf(conversation: ConversationId, uid: string): void {
    const typing = this.typingIn.get(conversation);
    if (!typing?.has(uid)) return;
    clearTimeout(typing.get(uid));
    typing.delete(uid);
    this.events.emit("typing", { conversation, uids: this.typingUsers(conversation) });
  }

  private clearTyping(conversation: ConversationId): void {
    for (const uid of [...(this.typingIn.get(conversation)?.keys() ?? [])]) this.clearTypingOf(conversation, uid);
  }

  private setPresence(uid: string, online: boolean, lastSeen?: number): void {
    const before = this.presenceOf.get(uid);
    if (before && before.online === online && before.lastSeen === lastSeen) return;
    this.presenceOf.set(uid, lastSeen === undefined ? { online } : { online, lastSeen });
    this.events.emit("presence", lastSeen === undefined ? { uid, online } : { uid, online, lastSeen });
  }

  private onGroup(answer: GroupAnswer): void {
    if (answer.action === "left") this.forget(groupConversation(answer.group));
    this.events.emit("group", answer);
    if (answer.action === "created" || answer.action === "joined") void this.runSync();
  }

  private onRemoved(push: RemovedPush): void {
    this.forget(groupConversation(push.group));
    this.events.emit("removed", push);
  }

  /** Drops a conversation the user no longer belongs to (a later join starts it afresh). */
  private forget(conversation: ConversationId): void {
    if (!this.convs.delete(conversation)) return;
    this.cursorsChanged();
    this.events.emit("conversations", this.conversationList());
  }

  private onTokenExpiring(frame: TokenExpiring): void {
    this.events.emit("token_expiring", frame);
    const provider = this.options.token;
    if (typeof provider !== "function") return;
    Promise.resolve()
      .then(() => provider())
      .then((token) => this.refresh(token))
      .catch((error) => this.events.emit("error", asChatError(error)));
  }

  private requireProtocol2(what: string): void {
    if (this.welcomeFrame && this.protocol < 2) throw unsupported(what);
  }

  private address(target: Target): { conversation: ConversationId; fields: Record<string, string> } {
    // Before the first welcome of a token sign-in the own uid may be unknown: `readdress` fixes it.
    if ("to" in target) return { conversation: directConversation(this.me ?? this.options.uid ?? "", target.to), fields: { to: target.to } };
    if ("group" in target) return { conversation: groupConversation(target.group), fields: { group: target.group } };
    const id = target.conversation;
    if (id.startsWith("g:")) return { conversation: id, fields: { group: id.slice(2) } };
    const peer = this.conv(id).info.peerOrGroup;
    return { conversation: id, fields: { to: peer } };
  }

  /** Sends queued to a uid before the user's own uid was known get their conversation id now. */
  private readdress(): void {
    const me = this.me;
    if (!me) return;
    for (const entry of this.outboxEntries.values()) {
      if (entry.kind !== "send" || typeof entry.frame.to !== "string") continue;
      const conversation = directConversation(me, entry.frame.to);
      if (entry.conversation !== conversation) entry.conversation = conversation;
    }
  }

  // ---- persistence ----------------------------------------------------------------------------

  private async loadUser(uid: string): Promise<void> {
    this.me = uid;
    this.convs.clear();
    this.counter = undefined;
    const [cursors, outbox] = await Promise.all([this.store.get(`${uid}.cursors`), this.store.get(`${uid}.outbox`)]);
    for (const [id, cursor] of Object.entries(parseJson<Record<string, number>>(cursors, {}))) {
      if (Number.isInteger(cursor) && cursor > 0) this.conv(id).cursor = cursor;
    }
    // Sends queued before the uid was known keep their place; saved ones go first.
    const unsaved = [...this.outboxEntries.values()];
    this.outboxEntries.clear();
    for (const entry of [...parseJson<OutboxEntry[]>(outbox, []), ...unsaved]) this.outboxEntries.set(entry.cid, entry);
    for (const entry of this.outboxEntries.values()) this.events.emit("outbox", { entry, state: "queued" });
  }

  private cursorsChanged(): void {
    if (this.saveTimer || !this.me) return;
    this.saveTimer = setTimeout(() => void this.flushCursors(), 50);
  }

  private async flushCursors(): Promise<void> {
    clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    if (!this.me) return;
    const cursors: Record<string, number> = {};
    for (const conv of this.convs.values()) if (conv.cursor > 0) cursors[conv.id] = conv.cursor;
    await this.store.set(`${this.me}.cursors`, JSON.stringify(cursors));
  }

  private saveOutbox(): void {
    if (!this.me) return;
    void this.store.set(`${this.me}.outbox`, JSON.stringify([...this.outboxEntries.values()]));
  }
}

function eventOf(entry: OutboxEntry, ack: Ack, me: string): WireEvent {
  const base = { id: ack.id ?? 0, conversation: ack.conversation, seq: ack.seq ?? 0, ts: ack.ts ?? Date.now(), from: me, cid: entry.cid };
  const f = entry.frame;
  switch (entry.kind) {
    case "send": {
      const event: WireEvent = { ...base, type: "message", text: f.text as string };
      if (f.to !== undefined) event.to = f.to as string;
      if (f.group !== undefined) event.group = f.group as string;
      if (f.reply_to !== undefined) event.reply_to = f.reply_to as number;
      return event;
    }
    case "edit":
      return { ...base, type: "edit", target: f.id as number, text: f.text as string };
    case "delete":
      return { ...base, type: "delete", target: f.id as number };
    case "react":
      return { ...base, type: "reaction", target: f.id as number, emoji: f.emoji as string, action: f.action as "add" | "remove" };
  }
}

function unsupported(what: string): ChatError {
  return new ChatError("unsupported", `${what} needs protocol 2; this server speaks protocol 1`);
}

function asChatError(error: unknown): ChatError {
  if (error instanceof ChatError) return error;
  return new ChatError("internal", error instanceof Error ? error.message : String(error));
}

function parseJson<T>(text: string | null | undefined, fallback: T): T {
  if (!text) return fallback;
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}

/** The `sub` of a JWT (unverified: it only picks which saved state to load before `welcome`). */
function subjectOf(token: string): string | undefined {
  try {
    const payload = token.split(".")[1] ?? "";
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(payload.length / 4) * 4, "="));
    const sub = JSON.parse(json).sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}
