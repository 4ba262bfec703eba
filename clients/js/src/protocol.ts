// The frames of docs/protocol.md, as they travel (snake_case field names are the contract).
// Everything the server may omit is optional: a protocol-1 server sends none of the
// protocol-2 fields.

/** A conversation id: `d:<uidA>:<uidB>` (sorted, escaped) or `g:<group>`. */
export type ConversationId = string;

/** The kinds of item that occupy a conversation's `seq` (protocol 2; protocol 1 has messages only). */
export type EventType = "message" | "edit" | "delete" | "reaction";

/** One item of a conversation's event sequence: pushed, acknowledged, synced or paged in history. */
export interface WireEvent {
  type: EventType;
  id: number;
  conversation: ConversationId;
  seq: number;
  from: string;
  ts: number;
  cid?: string;
  to?: string;
  group?: string;
  text?: string;
  reply_to?: number;
  edited?: number;
  deleted?: boolean;
  reactions?: Record<string, number>;
  target?: number;
  by_admin?: boolean;
  emoji?: string;
  action?: "add" | "remove";
}

/** `welcome`: the connection is signed in; the protocol-2 fields say what the server supports. */
export interface Welcome {
  type: "welcome";
  uid: string;
  client: string;
  expires_at?: number;
  protocol?: number;
  sync_window?: number;
  heartbeat_ms?: number;
  edit_window_ms?: number;
  typing_ttl_ms?: number;
}

/** A conversation as listed by `conversations` and (protocol 2) by `sync`. */
export interface WireConversation {
  id: ConversationId;
  kind: "direct" | "group";
  peer_or_group: string;
  name?: string | null;
  last_seq: number;
  read_seq: number;
  unread: number;
  last_ts?: number;
  peer_read_seq?: number;
  peer_delivered_seq?: number;
  limited?: boolean;
  from_seq?: number;
  cursor?: number;
}

/** `ack` of a send (and, protocol 2, of an edit, delete or reaction). */
export interface Ack {
  type: "ack";
  cid: string;
  id?: number;
  conversation: ConversationId;
  seq?: number;
  ts?: number;
  duplicate?: boolean;
  changed?: boolean;
}

/** `sync`: events after the cursors (bounded by the window in protocol 2). */
export interface SyncAnswer {
  type: "sync";
  messages: WireEvent[];
  more: boolean;
  counter?: number;
  conversations?: WireConversation[];
}

/** `history`: a page of older events, ascending. */
export interface HistoryAnswer {
  type: "history";
  conversation: ConversationId;
  messages: WireEvent[];
  more: boolean;
}

/** `conversations`: one page in id order. */
export interface ConversationsAnswer {
  type: "conversations";
  conversations: WireConversation[];
  more: boolean;
}

/** `read`: the answer to a `read`, or (protocol 2) another device of the user moved its marker. */
export interface ReadAnswer {
  type: "read";
  conversation: ConversationId;
  seq: number;
  unread?: number;
}

/** The `action` of a `group` answer. */
export type GroupAction =
  | "created" | "joined" | "left" | "invited" | "declined"
  | "kicked" | "banned" | "unbanned" | "promoted" | "demoted";

/** `group`: what a group request did. */
export interface GroupAnswer {
  type: "group";
  group: string;
  action: GroupAction;
  uid?: string;
  already?: "invited" | "member";
}

/** `group_info`: a member's view of a group. */
export interface GroupInfo {
  type: "group_info";
  group: string;
  name?: string | null;
  owner: string;
  access: "invite" | "open";
  history: "joined" | "shared";
  member_count: number;
  role: "owner" | "admin" | "member";
}

/** `members`: one page of a group's members. */
export interface MembersAnswer {
  type: "members";
  group: string;
  members: string[];
  roles: Record<string, "owner" | "admin">;
  more: boolean;
}

/** One received invitation. */
export interface Invitation {
  group: string;
  name?: string | null;
  by: string;
  ts: number;
}

/** `invitations`: the invitations the user holds. */
export interface InvitationsAnswer {
  type: "invitations";
  invitations: Invitation[];
  more: boolean;
}

/** `block`: a block or unblock took effect. */
export interface BlockAnswer {
  type: "block";
  uid: string;
  action: "blocked" | "unblocked";
}

/** `blocks`: one page of the users one blocks. */
export interface BlocksAnswer {
  type: "blocks";
  uids: string[];
  more: boolean;
}

/** `online`: the asker and its contacts that are online (protocol 2: when the others were last seen). */
export interface OnlineAnswer {
  type: "online";
  uids: string[];
  last_seen?: Record<string, number>;
  more: boolean;
}

/** `refreshed`: the connection's token was replaced. */
export interface Refreshed {
  type: "refreshed";
  expires_at: number;
}

/** `pong` (protocol 2): the user's change counter and its most recently active conversations. */
export interface Pong {
  type: "pong";
  counter: number;
  latest: { conversation: ConversationId; last_seq: number }[];
  ts: number;
}

/** One result of `search` (protocol 2): a message with a snippet and highlight ranges. */
export interface SearchHit extends WireEvent {
  snippet: string;
  highlights: [number, number][];
}

/** `search` (protocol 2): one ranked page of results. */
export interface SearchAnswer {
  type: "search";
  query: string;
  results: SearchHit[];
  offset: number;
  next_offset?: number;
  more: boolean;
}

/** `receipt` (protocol 2): a user's delivered or read marker moved over an author's events. */
export interface Receipt {
  type: "receipt";
  conversation: ConversationId;
  uid: string;
  kind: "delivered" | "read";
  seq: number;
  ts?: number;
}

/** `typing` (protocol 2): someone started or stopped typing. */
export interface TypingPush {
  type: "typing";
  conversation: ConversationId;
  uid: string;
  state: "start" | "stop";
  expires_ms?: number;
}

/** `presence` (protocol 2): a contact came online or went offline. */
export interface PresencePush {
  type: "presence";
  uid: string;
  status: "online" | "offline";
  last_seen?: number;
}

/** `invited`: someone invited the user to a group. */
export interface InvitedPush {
  type: "invited";
  group: string;
  by: string;
}

/** `removed`: the user was kicked or banned from a group. */
export interface RemovedPush {
  type: "removed";
  group: string;
  by: string;
  reason: "kicked" | "banned";
}

/** `token_expiring`: the connection closes at `expires_at` unless it sends `refresh`. */
export interface TokenExpiring {
  type: "token_expiring";
  expires_at: number;
}

/** `error`: a request was refused (or a limit was hit); the connection stays open. */
export interface ErrorFrame {
  type: "error";
  code: string;
  message?: string;
  cid?: string;
  retry_after_ms?: number;
  limit?: string;
  max?: number;
}

/** Close code: the token expired without a `refresh`. */
export const CLOSE_TOKEN_EXPIRED = 4001;
/** Close code: policy violation (kept sending while rate limited). */
export const CLOSE_POLICY = 1008;
/** Close code: a frame larger than the gateway accepts. */
export const CLOSE_TOO_BIG = 1009;
