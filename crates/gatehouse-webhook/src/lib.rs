//! The webhook worker (`gatehouse worker --app webhook --url http://backend/...`): business
//! logic in any language, behind an HTTP endpoint.
//!
//! Each client event (handshake, connect, message, close) is forwarded to the backend in a
//! signed JSON batch; the backend's response carries, per event, the commands to run (reply,
//! send to clients, uids, groups or everyone, bind/unbind, join/leave, sessions, close), which
//! run in order before the event is acknowledged. The worker keeps the guarantees of any
//! worker: at least once, in order per client. The contract is in `docs/webhook.md`.
//!
//! It owns the HTTP side only: it knows the SDK's [`gatehouse_sdk::Worker`] trait and cluster
//! API, nothing of gateways, registries or the chat service.
//!
//! # Layout
//! - [`config`] — [`WebhookConfig`], its limits and defaults.
//! - [`contract`] — the JSON contract: events written, results read and validated into typed commands.
//! - [`signature`] — the `Gatehouse-Signature` header (HMAC-SHA256, timestamped).
//! - [`backend`] — the pooled keep-alive HTTP client, timeouts, status classes.
//! - `batcher` — one batching task per gateway link (group commit, byte and count budgets).
//! - [`worker`] — [`WebhookWorker`]: retries with back-off, give-back, give-up, command execution.
//! - `stats` — the counters on `/metrics`.

pub mod backend;
pub mod config;
pub mod contract;
pub mod signature;
pub mod worker;

mod batcher;
mod stats;

pub use config::{ConfigError, EventKinds, WebhookConfig};
pub use worker::WebhookWorker;
