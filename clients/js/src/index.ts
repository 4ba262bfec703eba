// @gatehouse/chat: the client library of the gatehouse chat protocol (docs/protocol.md).
export { ChatClient } from "./client.js";
export type {
  ChatClientOptions, ChangeResult, ClientEvents, ConnectionState, HistoryPage, OutboxEntry,
  WebSocketConstructor, WebSocketLike,
} from "./client.js";
export type { ChatMessage, ConversationInfo } from "./conversation.js";
export { ChatError } from "./errors.js";
export type { ClientErrorCode, ErrorCode, ServerErrorCode } from "./errors.js";
export { MemoryStore, LocalStorageStore } from "./store.js";
export type { KeyValueStore, WebStorage } from "./store.js";
export { RangeSet } from "./ranges.js";
export { backoffDelay } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { directConversation, groupConversation, parseConversation, peerOf, newCid } from "./ids.js";
export * from "./protocol.js";
