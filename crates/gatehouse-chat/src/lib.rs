//! The chat service: direct and group messages pushed in real time, every message stored before
//! it is acknowledged or pushed, idempotent resends, history and catch-up after reconnect.
//!
//! It is an ordinary [`Worker`](gatehouse_sdk::Worker) on the public SDK, plus the
//! [`gatehouse_store`] history store; it knows nothing of gateways, registries or gRPC. Its wire
//! protocol is documented in `docs/protocol.md`.
//!
//! # Layout
//! - [`config`] — [`ChatConfig`] and its validation.
//! - [`auth`] — signed tokens (HS256 JWT) and the insecure dev identity.
//! - [`protocol`] — client and server frames, error codes.
//! - [`reply`] — [`reply::ListReply`], list replies that fit the reply byte budget.
//! - [`ratelimit`] — per-connection token buckets for sends and other requests.
//! - [`service`] — [`ChatWorker`], the handlers.
//! - `groups` — the group and block requests, and the cluster groups that follow membership.
//! - `events` — protocol 2: bounded catch-up, heartbeat, edits, deletes, reactions, receipts,
//!   typing and search.
//! - `presence` — online/offline pushes to contacts from the cluster's routing table.
//! - [`WEB_PAGE`] — the browser client a chat deployment's gateways serve at `/` (`--page chat`).

pub mod auth;
pub mod config;
mod events;
mod groups;
mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod reply;
pub mod service;

pub use config::ChatConfig;
pub use service::ChatWorker;

/// The chat page, served at `/` by gateways told `--page chat` (the default of a gateway whose
/// first `--app` is chat, and of `gatehouse dev`): one self-contained file
/// (no external resources) generated from `clients/js` (the client library and the page's UI,
/// bundled inline by `clients/js/scripts/build-page.mjs`), so that the binary needs no build
/// step of its own.
pub const WEB_PAGE: &str = include_str!("../web/index.html");
