//! Build gatehouse business workers: implement [`Worker`], run it with [`WorkerRuntime`], and
//! reach any client of the cluster through [`Cluster`] — from inside a handler or from any other
//! Rust process (a web backend, a cron job) with [`Cluster::connect`]. Backends in other
//! languages use the server API (`gatehouse api`, docs/server-api.md) instead.
//!
//! An application depends on this crate and `tokio` (for `#[tokio::main]`), nothing else: what
//! running, stopping and logging need is re-exported here ([`CancellationToken`],
//! [`telemetry`], [`serde_json`] for sessions and JSON frames, [`bytes`]).
//!
//! # Quick start
//!
//! ```toml
//! [dependencies]
//! gatehouse-sdk = { git = "…" }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! ```no_run
//! use gatehouse_sdk::{Context, Frame, HandlerResult, Handshake, Reject, Worker, WorkerConfig, WorkerRuntime};
//!
//! struct Shout;
//!
//! impl Worker for Shout {
//!     async fn on_handshake(&self, ctx: &Context, handshake: &Handshake) -> Result<(), Reject> {
//!         let name = handshake.query_param("name").ok_or(Reject::new(400, "?name= is required"))?;
//!         let unavailable = |e: gatehouse_sdk::ApiError| Reject::new(503, e.to_string());
//!         ctx.bind_uid(&name).await.map_err(unavailable)?;
//!         ctx.join_group("lobby").await.map_err(unavailable)?;
//!         Ok(())
//!     }
//!
//!     async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
//!         let name = ctx.uid().unwrap_or_default();
//!         let line = format!("{name}: {}", frame.as_text().unwrap_or_default()).to_uppercase();
//!         ctx.cluster().send_to_group("lobby", &Frame::text(line), &[ctx.client_id()]).await?;
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), gatehouse_sdk::ApiError> {
//!     // GATEHOUSE_REGISTRY (default 127.0.0.1:7000) and GATEHOUSE_CLUSTER_SECRET.
//!     let config = WorkerConfig::from_env("shout")?;
//!     // Until SIGINT or SIGTERM, then drains: handlers finish, clients move to other workers.
//!     WorkerRuntime::new(config, Shout).run_until_signal().await
//! }
//! ```
//!
//! Start a cluster whose gateways serve the app (`gatehouse gateway --app shout …`, see the
//! README), run this, and connect two WebSocket clients to `ws://GATEWAY/ws?name=ann` and
//! `?name=ben`. The examples directory has more: `room` (a chat room that says who left, with
//! any number of workers), `notify` (presence-aware notifications) and `push` (a backend pushing
//! through the server API).
//!
//! # Guarantees
//! - **Order.** Events of one client reach handlers one at a time, in order, unless a handler
//!   lets the next ones start early ([`Context::release_order`]); different clients run
//!   concurrently (see [`WorkerConfig::spawn_handlers`] for CPU-heavy handlers). Frames one
//!   process sends to one client arrive in the order they were sent.
//! - **At least once.** An event is acknowledged after its handler returned. After a worker
//!   dies, its unacknowledged events are handled again by another worker, in order, so
//!   handlers should be idempotent. A handler that fails with a transient cluster error
//!   ([`ErrorCode::Unavailable`], [`ErrorCode::Timeout`]) gives its event back: it is handled
//!   again (here after a back-off, or elsewhere) before any later event of that client.
//! - **Routing.** Once [`Cluster::bind_uid`] or [`Cluster::join_group`] returned `Ok`, every
//!   later send to that uid or group, from any worker or API client, reaches the connection.
//! - **State with the event.** A handler reads the client's uid and session from its
//!   [`Context`] without a round trip; `on_close` still sees them, and [`CloseInfo`] the groups.
//! - **Sends** return once queued towards the gateways; nothing on the send path waits for a
//!   reply. Every call returns an [`ApiError`] with a stable [`ErrorCode`] on failure.
//! - **Stopping.** On SIGTERM (or when `run`'s token is cancelled) a worker drains: no new
//!   clients, handlers finish with the cluster usable, then `on_stop`, then it leaves.
//!
//! # Layout
//! - [`worker`] — the [`Worker`] trait, [`Context`], [`Handshake`], [`Reject`], [`CloseInfo`].
//! - [`runtime`] — [`WorkerRuntime`] and [`WorkerConfig`]: handlers on their gateway link's task
//!   (or each on its own task), acknowledgements, drain.
//! - [`cluster`] — [`Cluster`], the API handle, and [`ClusterConfig`].
//! - [`frame`] — [`Frame`], a text or binary message.
//! - [`error`] — [`ApiError`].
//! - [`telemetry`] — log set-up for applications that want JSON logs.
//! - `routes`: the replicated uid / group → gateway table.
//! - `link`: one self-healing stream to one gateway.
//! - `handlers`: the handlers running for one link, one at a time per client, their outcomes
//!   in order.
//! - `sessions`: read-your-writes for the sessions that travel with events.

#![deny(missing_docs)]

pub mod cluster;
pub mod error;
pub mod frame;
pub mod runtime;
pub mod worker;

mod handlers;
mod link;
mod routes;
mod sessions;

/// Logging: [`telemetry::init`] installs a subscriber writing plain text or JSON lines to
/// stderr, filtered by `RUST_LOG`. Optional: [`WorkerRuntime::run`] installs the plain one when
/// the application has none, so handler errors are never silent.
pub mod telemetry {
    pub use gatehouse_core::telemetry::{LogFormat, init};
}

pub use bytes;
pub use cluster::{Cluster, ClusterConfig, Deadline, Session};
pub use error::ApiError;
pub use frame::Frame;
pub use gatehouse_core::{ClientId, ClusterSecret, Credentials, tls};
pub use gatehouse_proto::ErrorCode;
pub use runtime::{WorkerConfig, WorkerRuntime};
pub use serde_json;
pub use tokio_util::sync::CancellationToken;
pub use worker::{CloseInfo, Context, HandlerResult, Handshake, Reject, Worker};

/// The README's code blocks compile (`cargo test --doc -p gatehouse-sdk`).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
