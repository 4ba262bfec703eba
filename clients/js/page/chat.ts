// The chat page's user interface. Everything about the protocol (connection, catch-up, outbox,
// repeats, order, receipts, typing expiry, presence) is the library's; this file only turns its
// state and events into DOM and the user's clicks into its method calls.
import {
  ChatClient, ChatError, LocalStorageStore, directConversation, peerOf,
  type ChatMessage, type ConversationId, type ConversationInfo, type Invitation, type OutboxEntry, type SearchHit,
} from "../src/index.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
const PAGE = 50;
const QUICK_REACTION = "👍";

type Auth = { uid: string } | { token: string };
const saved = {
  get<T>(key: string, fallback: T): T {
    try {
      const v = localStorage.getItem(key);
      return v === null ? fallback : (JSON.parse(v) as T);
    } catch {
      return fallback;
    }
  },
  set(key: string, value: unknown): void {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch {
      // storage full or blocked
    }
  },
};
const LOGIN = "gatehouse.login";
const openKey = (uid: string) => `gatehouse.open.${uid}`;

const S = {
  client: null as ChatClient | null,
  auth: null as Auth | null,
  me: null as string | null,
  everWelcomed: false,
  open: null as ConversationId | null,
  convs: [] as ConversationInfo[],
  failed: new Map<string, { entry: OutboxEntry; error: string }>(),
  loading: new Set<ConversationId>(),
  onlineKey: null as string | null,
  replyTo: null as ChatMessage | null,
  editing: null as ChatMessage | null,
  confirmDelete: null as number | null,
  mine: new Map<number, Set<string>>(), // message id -> emoji this user added (this session)
};

// ---- signing in and out -------------------------------------------------------------------

function signIn(auth: Auth): void {
  stop();
  S.auth = auth;
  S.everWelcomed = false;
  saved.set(LOGIN, { ...auth, auto: false });
  $("login-error").textContent = "";
  $<HTMLButtonElement>("logout").disabled = false;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const client = new ChatClient({
    url: `${scheme}//${location.host}/ws`,
    ...auth,
    store: new LocalStorageStore("gatehouse."),
  });
  S.client = client;
  wire(client);
  void client.start();
}

function stop(): void {
  const client = S.client;
  S.client = null;
  if (client) void client.stop();
  setStatus("signed out");
}

function setStatus(state: string): void {
  $("status").textContent = state;
  $("status").dataset.state = state;
}

function wire(client: ChatClient): void {
  const live = <A extends unknown[]>(fn: (...args: A) => void) => (...args: A) => {
    if (S.client === client) fn(...args);
  };
  client.on("state", live(({ state, handshakeFailed, attempt }) => {
    if (state === "online") return;
    setStatus(state === "stopped" ? "signed out" : state);
    if (state === "offline" && handshakeFailed) {
      // The HTTP status and reason of a refused handshake are invisible to page scripts.
      $("login-error").textContent =
        "Could not connect: the server refused the sign-in or cannot be reached. " +
        "Check the uid or token (bare uids work only when the gateway runs with --insecure-dev-auth; tokens expire).";
      if (!S.everWelcomed && attempt >= 3) {
        stop();
        $("login-error").textContent += " Gave up; press Sign in to try again.";
      }
    }
  }));
  client.on("welcome", live((welcome) => onWelcome(client, welcome.uid)));
  client.on("message", live((m) => {
    if (!S.open) openConversation(m.conversation);
    if (m.conversation === S.open) renderSoon();
    refreshSoon();
  }));
  client.on("update", live(({ message }) => message.conversation === S.open && renderSoon()));
  client.on("history", live((page) => page.conversation === S.open && renderSoon()));
  client.on("outbox", live(({ entry, state, error }) => {
    if (state === "failed" && entry.kind === "send") S.failed.set(entry.cid, { entry, error: error?.message ?? "refused" });
    else if (state === "failed") showError(error?.code ?? "refused", error?.message ?? "");
    if (entry.conversation === S.open) renderSoon();
  }));
  client.on("conversations", live((list) => {
    S.convs = list;
    renderConversations();
  }));
  client.on("read", live(() => refreshSoon()));
  client.on("receipt", live((r) => r.conversation === S.open && renderSoon()));
  client.on("typing", live(({ conversation }) => conversation === S.open && renderTyping()));
  client.on("presence", live(() => {
    renderOnline();
    renderConversations();
  }));
  client.on("invited", live((p) => {
    void fetchInvitations();
    showError("invited", `${p.by} invited you to ${p.group}`);
  }));
  client.on("removed", live((p) => {
    if (S.open === `g:${p.group}`) showConversation(null);
    showError(p.reason || "removed", `${p.by} removed you from ${p.group}`);
    refreshSoon();
  }));
  client.on("group", live((g) => {
    if (g.action === "left" && S.open === `g:${g.group}`) showConversation(null);
    if (g.action === "created" || g.action === "joined") {
      openConversation(`g:${g.group}`);
      void fetchInvitations();
    }
    refreshSoon();
  }));
  client.on("token_expiring", live((f) => {
    showError("token_expiring", `your sign-in expires at ${new Date(f.expires_at).toLocaleTimeString()}; sign in again with a new token`);
  }));
  client.on("error", live((e) => {
    if (e.code === "token_expired") $("login-error").textContent = "Your token expired: sign in again with a new token.";
    else showError(e.code, e.message);
  }));
}

function onWelcome(client: ChatClient, uid: string): void {
  if (S.me !== uid) {
    S.me = uid;
    S.failed.clear();
    S.convs = [];
    S.open = null;
    $("member-list").replaceChildren();
    showConversation(saved.get<string | null>(openKey(uid), null));
  }
  S.everWelcomed = true;
  document.body.dataset.protocol = String(client.protocol);
  $("login-error").textContent = "";
  $("me").textContent = uid;
  setStatus("online");
  saved.set(LOGIN, { ...S.auth, auto: true });
  S.onlineKey = null; // the conversation list's answer asks for presence
  refreshSoon(0);
  void fetchInvitations();
  if (S.open) openConversation(S.open);
}

// ---- requests -------------------------------------------------------------------------------

/** Runs a request; a refusal is shown, a dropped connection is quietly retried by the user. */
async function attempt<T>(what: Promise<T>): Promise<T | undefined> {
  try {
    return await what;
  } catch (error) {
    const e = error instanceof ChatError ? error : new ChatError("internal", String(error));
    if (e.code !== "disconnected" && e.code !== "stopped") showError(e.code, e.message);
    return undefined;
  }
}

let refreshTimer: ReturnType<typeof setTimeout> | undefined;
function refreshSoon(delay = 300): void {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => void fetchConversations(), delay);
}

async function fetchConversations(): Promise<void> {
  const client = S.client;
  if (!client || client.state !== "online") return;
  const list = await attempt(client.refreshConversations());
  if (!list || S.client !== client) return;
  S.convs = list;
  renderConversations();
  // Presence is asked for when the set of conversations (hence of contacts) changed, not
  // polled: the server answers for the user's contacts only, and pushes changes (protocol 2).
  const key = list.map((c) => c.id).join(" ");
  if (key !== S.onlineKey) {
    S.onlineKey = key;
    const answer = await attempt(client.online());
    if (answer && S.client === client) {
      renderOnline();
      renderConversations();
    }
  }
}

async function fetchInvitations(): Promise<void> {
  const answer = await attempt(S.client!.invitations());
  if (answer) renderInvitations(answer.invitations);
}

// ---- conversations ------------------------------------------------------------------------------

function describe(c: ConversationId): { label: string; to: string; peer?: string } {
  const listed = S.convs.find((x) => x.id === c);
  if (c.startsWith("g:")) return { label: `# ${listed?.name || c.slice(2)}`, to: `group:${c.slice(2)}` };
  const peer = listed?.peerOrGroup || peerOf(c, S.me ?? "") || S.me || "";
  return { label: peer, to: peer, peer };
}

function showConversation(c: ConversationId | null): void {
  if (S.open !== c) {
    $("messages").replaceChildren();
    cancelReply();
    cancelEdit();
  }
  S.open = c;
  if (S.me) saved.set(openKey(S.me), c);
  $("messages").dataset.conversation = c || "";
  $("conversation-title").textContent = c ? describe(c).label : "No conversation open";
  renderConversations();
  renderTyping();
  renderSoon();
}

function openConversation(c: ConversationId): void {
  showConversation(c);
  $<HTMLInputElement>("to").value = describe(c).to;
  if (c.startsWith("g:")) $<HTMLInputElement>("group-name").value = c.slice(2); // group actions act on the open group
  // The newest page, always: after a reload nothing is in memory, and it fills any gap.
  void loadPage(c, false);
}

async function loadPage(c: ConversationId, older: boolean): Promise<void> {
  const client = S.client;
  if (!client || S.loading.has(c) || client.state !== "online") return;
  S.loading.add(c);
  renderSoon();
  try {
    await attempt(older ? client.loadOlder(c, PAGE) : client.history(c, { limit: PAGE }).catch((e: unknown) => {
      // A direct conversation exists from its first message only: nothing to show yet.
      if (e instanceof ChatError && e.code === "not_member" && c.startsWith("d:")) return undefined;
      throw e;
    }));
  } finally {
    S.loading.delete(c);
    renderSoon();
  }
}

function loadOlder(): void {
  const c = S.open;
  if (c && S.client?.hasOlder(c)) void loadPage(c, true);
}

function markRead(): void {
  const c = S.open;
  if (!c || document.hidden || S.client?.state !== "online") return;
  void S.client.markRead(c).catch(() => {});
}

// ---- sending and changing messages ----------------------------------------------------------------

function targetOf(raw: string): { to: string } | { group: string } | null {
  const t = raw.trim();
  if (t.startsWith("group:")) {
    const group = t.slice(6).trim();
    return group ? { group } : null;
  }
  return t ? { to: t } : null;
}

function sendMessage(): void {
  const client = S.client;
  const target = targetOf($<HTMLInputElement>("to").value);
  const text = $<HTMLInputElement>("text").value;
  if (!client || !S.me) return showError("not_signed_in", "sign in first");
  if (S.editing) return saveEdit(S.editing, text);
  if (!target) return showError("missing_field", "write a uid or group:<name> in the to field");
  if (!text.trim()) return;
  const conversation = "group" in target ? `g:${target.group}` : directConversation(S.me, target.to);
  const replyTo = S.replyTo?.conversation === conversation ? S.replyTo.id : undefined;
  $<HTMLInputElement>("text").value = "";
  cancelReply();
  if (S.open !== conversation) openConversation(conversation);
  // Refusals arrive through the outbox event (shown as a failed message).
  client.send(target, text, replyTo === undefined ? {} : { replyTo }).catch(() => {});
  void client.typing(conversation, "stop");
  renderSoon();
}

function startReply(m: ChatMessage): void {
  cancelEdit();
  S.replyTo = m;
  $("replying").hidden = false;
  $("replying").dataset.id = String(m.id);
  $("replying-text").textContent = `${m.from}: ${m.text}`;
  $<HTMLInputElement>("text").focus();
}

function cancelReply(): void {
  S.replyTo = null;
  $("replying").hidden = true;
  delete $("replying").dataset.id;
}

/** Puts a message's text into the composer; Send then saves the edit. */
function startEdit(m: ChatMessage): void {
  cancelReply();
  S.editing = m;
  $("editing").hidden = false;
  $("editing").dataset.id = String(m.id);
  $("editing-text").textContent = m.text;
  $<HTMLInputElement>("text").value = m.text;
  $<HTMLInputElement>("text").focus();
}

function cancelEdit(): void {
  S.editing = null;
  $("editing").hidden = true;
  delete $("editing").dataset.id;
}

function saveEdit(m: ChatMessage, text: string): void {
  cancelEdit();
  $<HTMLInputElement>("text").value = "";
  if (!text.trim() || text === m.text) return;
  void attempt(S.client!.edit(m.conversation, m.id, text));
}

/** The first click asks (the button turns into "Delete?" for a few seconds), the second deletes. */
function deleteMessage(m: ChatMessage): void {
  if (S.confirmDelete !== m.id) {
    S.confirmDelete = m.id;
    renderSoon();
    setTimeout(() => {
      if (S.confirmDelete === m.id) S.confirmDelete = null;
      renderSoon();
    }, 4000);
    return;
  }
  S.confirmDelete = null;
  void attempt(S.client!.deleteMessage(m.conversation, m.id));
}

function toggleReaction(m: ChatMessage, emoji: string): void {
  const mine = S.mine.get(m.id) ?? new Set<string>();
  S.mine.set(m.id, mine);
  const action = mine.has(emoji) ? "remove" : "add";
  if (action === "add") mine.add(emoji);
  else mine.delete(emoji);
  void attempt(S.client!.react(m.conversation, m.id, emoji, action));
}

// ---- search ---------------------------------------------------------------------------------------

async function search(): Promise<void> {
  const query = $<HTMLInputElement>("search").value.trim();
  if (!query || !S.client) return;
  const answer = await attempt(S.client.search(query, { limit: 20 }));
  if (answer) renderSearch(answer.results);
}

function renderSearch(hits: SearchHit[]): void {
  renderList($("search-results"), hits, () => "", (button, hit, li) => {
    li.dataset.conversation = hit.conversation;
    li.dataset.seq = String(hit.seq);
    li.dataset.id = String(hit.id);
    const where = hit.conversation.startsWith("g:") ? `${describe(hit.conversation).label} · ${hit.from}` : `with ${describe(hit.conversation).label}`;
    button.replaceChildren(highlighted(hit), meta("where", where));
    button.onclick = () => openConversation(hit.conversation);
  });
}

/** The snippet with its highlight ranges (character positions) in <mark>. */
function highlighted(hit: SearchHit): HTMLElement {
  const span = document.createElement("span");
  span.className = "snippet";
  const chars = [...hit.snippet];
  let at = 0;
  for (const [start, end] of hit.highlights ?? []) {
    if (start < at || end > chars.length) continue;
    span.append(chars.slice(at, start).join(""));
    const mark = document.createElement("mark");
    mark.textContent = chars.slice(start, end).join("");
    span.append(mark);
    at = end;
  }
  span.append(chars.slice(at).join(""));
  return span;
}

// ---- rendering --------------------------------------------------------------------------------------

let renderQueued = false;
function renderSoon(): void {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    renderMessages();
  });
}

interface Item {
  key: string;
  m: ChatMessage;
  state: "pending" | "acked" | "failed";
  error?: string;
}

function pendingMessage(entry: OutboxEntry): ChatMessage {
  const f = entry.frame;
  const m: ChatMessage = {
    id: 0, seq: 0, conversation: entry.conversation, from: S.me ?? "", text: String(f.text ?? ""),
    ts: entry.createdAt, cid: entry.cid, deleted: false, reactions: {},
  };
  if (typeof f.reply_to === "number") m.replyTo = f.reply_to;
  return m;
}

function renderMessages(): void {
  const box = $("messages");
  const c = S.open;
  const client = S.client;
  $<HTMLButtonElement>("load-older").disabled = !c || !client?.hasOlder(c) || S.loading.has(c);
  if (!c || !client) return;
  const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const fromBottom = box.scrollHeight - box.scrollTop;
  const items: Item[] = client.messages(c).map((m) => ({ key: `s${m.seq}`, m, state: "acked" }));
  for (const entry of client.outbox(c)) if (entry.kind === "send") items.push({ key: `c${entry.cid}`, m: pendingMessage(entry), state: "pending" });
  for (const [cid, f] of S.failed) if (f.entry.conversation === c) items.push({ key: `c${cid}`, m: pendingMessage(f.entry), state: "failed", error: f.error });
  const existing = new Map([...box.children].map((el) => [(el as HTMLElement).dataset.key, el as HTMLElement]));
  let previous: HTMLElement | null = null;
  for (const item of items) {
    const el = existing.get(item.key) ?? document.createElement("li");
    existing.delete(item.key);
    fillMessage(el, item, client);
    const at: ChildNode | null = previous ? previous.nextSibling : box.firstChild;
    if (at !== el) box.insertBefore(el, at);
    previous = el;
  }
  for (const el of existing.values()) el.remove();
  box.scrollTop = stick ? box.scrollHeight : box.scrollHeight - fromBottom;
  markRead();
}

function fillMessage(el: HTMLElement, item: Item, client: ChatClient): void {
  const { m, state } = item;
  const mine = m.from === S.me;
  const stored = state === "acked";
  el.className = mine ? "msg mine" : "msg";
  Object.assign(el.dataset, {
    key: item.key, conversation: m.conversation, seq: stored ? String(m.seq) : "", id: stored ? String(m.id) : "",
    cid: m.cid ?? "", from: m.from, state,
  });
  const receipt = mine && stored ? client.status(m) : undefined;
  setData(el, "receipt", receipt);
  setData(el, "edited", m.edited ? String(m.edited) : undefined);
  setData(el, "deleted", m.deleted ? "" : undefined);
  const time = new Date(m.ts || Date.now()).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const v2 = client.protocol >= 2;
  const stateText =
    state === "pending" ? "sending…" : state === "failed" ? `failed: ${item.error}` :
    receipt === "read" ? "✓✓ read" : receipt === "delivered" ? "✓✓" : mine ? "✓" : "";
  const parts: HTMLElement[] = [];
  if (m.replyTo !== undefined) parts.push(meta("reply-to", quoted(client, m)));
  parts.push(meta("from", m.from), meta("text", m.deleted ? "message deleted" : m.text));
  if (m.edited && !m.deleted) parts.push(meta("edited", "(edited)"));
  const metaLine = meta("meta", `${time} `);
  metaLine.append(meta("state", stateText));
  parts.push(metaLine);
  if (v2 && stored && !m.deleted) parts.push(reactions(m), actions(m, mine, client));
  el.replaceChildren(...parts);
}

function quoted(client: ChatClient, m: ChatMessage): string {
  const original = client.message(m.conversation, m.replyTo!);
  if (!original) return "↪ an earlier message";
  return `↪ ${original.from}: ${original.deleted ? "message deleted" : original.text}`;
}

function reactions(m: ChatMessage): HTMLElement {
  const box = meta("reactions", "");
  const mine = S.mine.get(m.id);
  for (const [emoji, count] of Object.entries(m.reactions)) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.emoji = emoji;
    button.dataset.count = String(count);
    if (mine?.has(emoji)) button.dataset.mine = "";
    button.textContent = `${emoji} ${count}`;
    button.onclick = () => toggleReaction(m, emoji);
    box.append(button);
  }
  return box;
}

function actions(m: ChatMessage, mine: boolean, client: ChatClient): HTMLElement {
  const box = meta("actions", "");
  const add = (cls: string, label: string, onclick: () => void) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = cls;
    button.textContent = label;
    button.onclick = onclick;
    box.append(button);
    return button;
  };
  add("reply", "Reply", () => startReply(m));
  add("react", QUICK_REACTION, () => toggleReaction(m, QUICK_REACTION));
  const editable = mine && (!client.welcome?.edit_window_ms || Date.now() - m.ts < client.welcome.edit_window_ms);
  if (editable) add("edit", "Edit", () => startEdit(m));
  if (mine || m.group) {
    const confirming = S.confirmDelete === m.id;
    const button = add("delete", confirming ? "Delete?" : "Delete", () => deleteMessage(m));
    if (confirming) button.dataset.confirm = "";
  }
  return box;
}

function meta(cls: string, text: string): HTMLElement {
  const span = document.createElement("span");
  span.className = cls;
  span.textContent = text;
  return span;
}

function setData(el: HTMLElement, key: string, value: string | undefined): void {
  if (value === undefined) delete el.dataset[key];
  else el.dataset[key] = value;
}

function renderTyping(): void {
  const uids = S.open && S.client ? S.client.typingUsers(S.open) : [];
  $("typing").textContent =
    uids.length === 0 ? "" : uids.length === 1 ? `${uids[0]} is typing…` : `${uids.slice(0, 3).join(", ")} are typing…`;
}

function presenceDot(uid: string | undefined): HTMLElement {
  const dot = meta("presence", "");
  const known = uid ? S.client?.presence(uid) : undefined;
  const online = uid === S.me || known?.online === true;
  dot.dataset.presence = online ? "online" : "offline";
  if (known?.lastSeen && !online) dot.title = `last seen ${new Date(known.lastSeen).toLocaleString()}`;
  return dot;
}

function renderConversations(): void {
  const list = [...S.convs];
  if (S.open && !list.some((x) => x.id === S.open)) list.unshift({ id: S.open, unread: 0 } as ConversationInfo);
  renderList($("conversations"), list, (x) => describe(x.id).label, (button, x) => {
    button.dataset.conversation = x.id;
    button.dataset.unread = String(x.unread || 0);
    if (x.id === S.open) button.setAttribute("aria-current", "true");
    if (x.id.startsWith("d:")) {
      const dot = presenceDot(describe(x.id).peer);
      button.dataset.presence = dot.dataset.presence;
      button.prepend(dot);
    }
    const badge = meta("unread", x.unread && x.id !== S.open ? String(x.unread) : "");
    badge.setAttribute("aria-label", "unread");
    button.append(badge);
    button.onclick = () => openConversation(x.id);
  });
}

function renderOnline(): void {
  const client = S.client;
  if (!client || !S.me) return;
  const uids = client.presenceList().filter((p) => p.online && p.uid !== S.me).map((p) => p.uid);
  renderList($("online"), [S.me, ...uids], (u) => (u === S.me ? `${u} (you)` : u), (button, u, li) => {
    li.dataset.uid = u;
    const dot = presenceDot(u);
    li.dataset.presence = dot.dataset.presence;
    button.prepend(dot);
    if (u === S.me) li.dataset.self = "";
    button.onclick = () => {
      $<HTMLInputElement>("to").value = u;
      openConversation(directConversation(S.me!, u));
      $("text").focus();
    };
  });
}

function renderInvitations(list: Invitation[]): void {
  renderList($("invitations"), list, (i) => `${i.name || i.group} (from ${i.by})`, (button, i, li) => {
    li.dataset.group = i.group;
    button.className = "accept";
    button.title = "join";
    button.onclick = () => void attempt(S.client!.joinGroup(i.group));
    const decline = document.createElement("button");
    decline.type = "button";
    decline.className = "decline";
    decline.textContent = "Decline";
    decline.onclick = () => {
      void attempt(S.client!.decline(i.group));
      li.remove();
    };
    li.append(decline);
  });
}

function renderMembers(members: string[], roles: Record<string, string>): void {
  renderList($("member-list"), members, (u) => u, (_button, u, li) => {
    li.dataset.uid = u;
    li.dataset.role = roles[u] || "member";
  });
}

function renderList<T>(ul: HTMLElement, items: T[], label: (item: T) => string, decorate: (button: HTMLButtonElement, item: T, li: HTMLLIElement) => void): void {
  ul.replaceChildren(...items.map((item) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.append(meta("label", label(item)));
    li.append(button);
    decorate(button, item, li);
    return li;
  }));
}

function showError(code: string, message: string): void {
  const li = document.createElement("li");
  li.className = "error";
  li.dataset.code = code;
  li.textContent = `${code}: ${message || ""}`;
  $("errors").append(li);
  while ($("errors").children.length > 5) $("errors").firstChild!.remove();
  setTimeout(() => li.remove(), 8000);
}

// ---- wiring ---------------------------------------------------------------------------------------------

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $<HTMLInputElement>("token").value.trim();
  const uid = $<HTMLInputElement>("uid").value.trim();
  if (!token && !uid) {
    $("login-error").textContent = "Enter a uid (dev mode) or a token.";
    return;
  }
  signIn(token ? { token } : { uid });
});
$("logout").addEventListener("click", () => {
  stop();
  saved.set(LOGIN, { ...S.auth, auto: false });
  $<HTMLButtonElement>("logout").disabled = true;
});
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  sendMessage();
});
$("text").addEventListener("input", () => {
  const target = targetOf($<HTMLInputElement>("to").value);
  if (!target || !S.me || !S.client || !$<HTMLInputElement>("text").value) return;
  const conversation = "group" in target ? `g:${target.group}` : directConversation(S.me, target.to);
  void S.client.typing(conversation, "start");
});
$("cancel-reply").addEventListener("click", cancelReply);
$("cancel-edit").addEventListener("click", () => {
  cancelEdit();
  $<HTMLInputElement>("text").value = "";
});
$("load-older").addEventListener("click", loadOlder);
$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 8) loadOlder();
});
$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  void search();
});
$("group-form").addEventListener("submit", (e) => e.preventDefault());
const groupActions: Record<string, (client: ChatClient, group: string) => Promise<unknown> | undefined> = {
  "create-group": (c, g) => c.createGroup(g),
  "join-group": (c, g) => c.joinGroup(g),
  "leave-group": (c, g) => c.leaveGroup(g),
  members: async (c, g) => {
    const { members, roles } = await c.allMembers(g);
    renderMembers(members, roles);
  },
  invite: (c, g) => {
    const uid = $<HTMLInputElement>("invite-uid").value.trim();
    if (!uid) return void showError("missing_field", "enter the uid to invite");
    return c.invite(g, uid);
  },
};
for (const [id, action] of Object.entries(groupActions)) {
  $(id).addEventListener("click", () => {
    const group = $<HTMLInputElement>("group-name").value.trim();
    if (!group) return showError("missing_field", "enter a group name");
    if (!S.client || S.client.state !== "online") return showError("offline", "not connected");
    const running = action(S.client, group);
    if (running) void attempt(running);
  });
}
document.addEventListener("visibilitychange", markRead);

// Sign in from the address (?uid= or ?token=), else as last time if that session was live.
{
  const params = new URLSearchParams(location.search);
  const last = saved.get<{ uid?: string; token?: string; auto?: boolean }>(LOGIN, {});
  const token = params.get("token");
  const uid = params.get("uid");
  $<HTMLInputElement>("uid").value = uid || (token ? "" : last.uid || "");
  $<HTMLInputElement>("token").value = token || (uid ? "" : last.token || "");
  if (token) signIn({ token });
  else if (uid) signIn({ uid });
  else if (last.auto && (last.token || last.uid)) signIn(last.token ? { token: last.token } : { uid: last.uid! });
}
