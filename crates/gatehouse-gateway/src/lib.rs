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
//! Listed from the edges inward; a module uses only modules listed after it.
//! - [`config`] — [`GatewayConfig`] and its validation.
//! - [`server`] — [`bind`] both listeners, then [`BoundGateway::run`].
//! - `accept`: the public listener: admission at accept, HTTP/1.1 with a header-read timeout.
//! - `http`: the public router (`/ws`, `/ws/<app>`) and the upgrade.
//! - `page`: what `/` and the paths below it serve (`--page`: nothing, the chat page, a directory).
//! - `fence`: closes every client when the gateway's lease lapsed (paused or cut off from
//!   every registry), so none stays connected while workers no longer send to it.
//! - `links`: the internal gRPC service workers attach to; byte-bounded batching both ways.
//! - `socket`: the per-connection task (reads, writes, pings, rates, deadline, close handshake).
//! - `commands`: execution of worker commands and queries, every field checked.
//! - `hub`: the gateway's state and the connection life cycle (open, retire, acknowledge).
//! - `handshake`: what a handshake forwards to workers, and who the client is.
//! - `admission`: caps on connections per gateway and per address, and on pending handshakes.
//! - `table`: the connection table.
//! - `index`: the uid and group indexes for fan-out.
//! - `events`: numbering, unacknowledged windows, worker choice and fail-over of events.
//! - `routes`: the uid / group announcements to the registries, and bind confirmation.
//! - `conn`: one connection's shared state.
//! - `workers`: the attached worker links and the live set.
//! - `queue`: the per-connection send queue (bounded, free when empty) and its items.
//! - `ratelimit`: the token bucket of a connection's input.
//! - `stats`: counters exposed at `/metrics`.

pub mod config;
pub mod error;
pub mod server;

mod accept;
mod admission;
mod commands;
mod conn;
mod events;
mod fence;
mod handshake;
mod http;
mod hub;
mod index;
mod links;
mod page;
mod queue;
mod ratelimit;
mod routes;
mod socket;
mod stats;
mod table;
mod workers;

pub use config::{DEFAULT_FORWARD_HEADERS, GatewayConfig, Page, Rate};
pub use error::GatewayError;
pub use server::{BoundGateway, bind};
