//! The chat service: direct and group messages pushed in real time, every message stored before
//! it is acknowledged or pushed, idempotent resends, history and catch-up after reconnect.
//!
//! It is an ordinary [`Worker`](gatehouse_sdk::Worker) on the public SDK, plus the
//! [`gatehouse_store`] history store; it knows nothing of gateways, registries or gRPC. Its wire
//! protocol is documented in `docs/protocol.md`.
//!
//! # Layout
//! From the handlers down; a module uses only modules listed after it (the `structure` test
//! at the workspace root checks this order against the code).
//! - [`service`] — [`ChatWorker`]'s handlers: the handshake, the per-message path (rate
//!   limits, sends) and history, conversations, online and refresh.
//! - `events` — protocol 2: bounded catch-up, heartbeat, edits, deletes, reactions, receipts,
//!   typing and search.
//! - `groups` — the group and block requests, and the cluster groups that follow membership.
//! - `state` — [`ChatWorker`]'s state and how it is opened, and the answer builders every
//!   handler module shares.
//! - `presence` — online/offline pushes to contacts from the cluster's routing table.
//! - `common` — what a handled request answers, store and cluster failures as protocol
//!   errors, the clock, the event counter.
//! - [`config`] — [`ChatConfig`] and its validation.
//! - [`reply`] — [`reply::ListReply`], list replies that fit the reply byte budget.
//! - `fastparse` — the per-message frames (send, receipts, typing) read without a JSON tree,
//!   answering exactly as [`protocol`]'s parser, which takes every other frame.
//! - [`protocol`] — client and server frames, error codes.
//! - [`ratelimit`] — per-connection token buckets for sends and other requests.
//! - [`auth`] — signed tokens (JWT: HS256 with a shared secret, or RS256/ES256 with a public key) and the insecure dev identity.
//! - [`WEB_PAGE`] — the browser client a chat deployment's gateways serve at `/` (`--page chat`).

pub mod auth;
mod common;
pub mod config;
mod events;
mod fastparse;
mod groups;
mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod reply;
pub mod service;
mod state;

pub use config::ChatConfig;
pub use service::ChatWorker;

/// The chat page, served at `/` by gateways told `--page chat` (the default of a gateway whose
/// first `--app` is chat, and of `gatehouse dev`): one self-contained file
/// (no external resources) generated from `clients/js` (the client library and the page's UI,
/// bundled inline by `clients/js/scripts/build-page.mjs`), so that the binary needs no build
/// step of its own.
pub const WEB_PAGE: &str = include_str!("../web/index.html");
