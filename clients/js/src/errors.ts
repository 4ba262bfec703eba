import type { ErrorFrame } from "./protocol.js";

/** Error codes the server sends (docs/protocol.md, Error codes). */
export type ServerErrorCode =
  | "bad_json" | "unknown_type" | "missing_field" | "invalid_field" | "empty_text" | "text_too_long"
  | "unknown_recipient" | "cid_conflict" | "unknown_message" | "edit_window_closed" | "message_deleted"
  | "unknown_user" | "not_member" | "unknown_group" | "group_exists" | "not_invited" | "banned"
  | "forbidden" | "blocked" | "limit_exceeded" | "invalid_token" | "subject_mismatch"
  | "rate_limited" | "overloaded" | "unavailable" | "internal";

/** Error codes of the library itself. */
export type ClientErrorCode =
  /** The connection dropped before the answer came; the request may or may not have run. */
  | "disconnected"
  /** No answer within the request timeout. */
  | "timeout"
  /** The client was stopped (or never started). */
  | "stopped"
  /** The connected server's protocol version lacks the request (e.g. `edit` on protocol 1). */
  | "unsupported"
  /** The token expired and no token provider could give a new one. */
  | "token_expired";

/** Every code a {@link ChatError} can carry; unknown server codes pass through as strings. */
export type ErrorCode = ServerErrorCode | ClientErrorCode | (string & {});

/** Codes after which the same request may succeed later (the library retries sends itself). */
const TRANSIENT = new Set<string>(["rate_limited", "overloaded", "unavailable", "internal", "disconnected", "timeout"]);

/** A refused or failed request: the server's error frame, or a failure seen by the library. */
export class ChatError extends Error {
  /** What went wrong, e.g. `not_member` or `disconnected`. */
  readonly code: ErrorCode;
  /** The request's `cid`, when the error answers one. */
  readonly cid: string | undefined;
  /** For `rate_limited`: when the request would be accepted. */
  readonly retryAfterMs: number | undefined;
  /** For `limit_exceeded`: which limit, and its value. */
  readonly limit: string | undefined;
  readonly max: number | undefined;

  constructor(code: ErrorCode, message: string, extra: { cid?: string; retryAfterMs?: number; limit?: string; max?: number } = {}) {
    super(message);
    this.name = "ChatError";
    this.code = code;
    this.cid = extra.cid;
    this.retryAfterMs = extra.retryAfterMs;
    this.limit = extra.limit;
    this.max = extra.max;
  }

  /** Builds the error an `error` frame describes. */
  static fromFrame(frame: ErrorFrame): ChatError {
    return new ChatError(frame.code, frame.message ?? frame.code, {
      cid: frame.cid,
      retryAfterMs: frame.retry_after_ms,
      limit: frame.limit,
      max: frame.max,
    });
  }

  /** True when trying again later may succeed (nothing was done, or the outcome is unknown). */
  get transient(): boolean {
    return TRANSIENT.has(this.code);
  }
}
