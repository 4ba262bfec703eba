//! The gateway: a stateless edge process that holds client WebSocket connections.
//!
//! It gives each connection a cluster-unique [`ClientId`](gatehouse_core::ClientId), forwards the
//! connection's events (open with the handshake, message, close) to one worker chosen by
//! rendezvous hashing, and executes the commands workers send back (deliveries, binds, groups,
//! sessions, queries, closes). It announces the uids and groups it holds to every registry and
//! confirms a bind only once the registries' subscribers have it.
//!
//! It must not know what an application does with a message: payloads are opaque bytes.
//!
//! # Layout
//! - [`config`] — [`GatewayConfig`] and its validation.
//! - [`server`] — [`bind`] both listeners, then [`BoundGateway::run`].
//! - `hub`: the connection table and the uid / group indexes of this gateway.
//! - `events`: per-connection event queues, worker choice, at-least-once delivery and fail-over.
//! - `links`: the internal gRPC service workers attach to; batching both ways.
//! - `commands`: execution of worker commands and queries against the hub.
//! - `queue` — the per-connection send queue (bounded, free when empty).
//! - `routes`: the uid / group announcements to the registries, and bind confirmation.
//! - `socket`: the per-connection task (reads, writes, pings, slow-consumer policy).
//! - `http`: the public axum router (`/ws`, `/healthz`, `/readyz`, `/metrics`, `/`).
//! - `stats`: counters exposed at `/metrics`.

pub mod config;
pub mod error;
pub mod server;

mod commands;
mod events;
mod http;
mod hub;
mod links;
mod queue;
mod routes;
mod socket;
mod stats;

pub use config::GatewayConfig;
pub use error::GatewayError;
pub use server::{BoundGateway, bind};
