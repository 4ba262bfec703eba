//! Build gatehouse business workers: implement [`Worker`], run it with [`WorkerRuntime`], and
//! reach any client of the cluster through [`Cluster`] — from inside a handler or from any other
//! process (a web backend, a cron job) with [`Cluster::connect`].
//!
//! This is the only crate an application depends on. It knows the cluster protocol (registries,
//! gateways) but nothing about any particular application.
//!
//! ```no_run
//! use gatehouse_sdk::{Context, Frame, HandlerResult, Worker, WorkerConfig, WorkerRuntime};
//!
//! struct Shout;
//!
//! impl Worker for Shout {
//!     async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
//!         let text = frame.as_text().unwrap_or_default().to_uppercase();
//!         ctx.reply(Frame::text(text)).await?;
//!         Ok(())
//!     }
//! }
//! # async fn run(config: WorkerConfig) {
//! WorkerRuntime::new(config, Shout).run(tokio_util::sync::CancellationToken::new()).await;
//! # }
//! ```
//!
//! # Guarantees
//! - Events of one client reach handlers one at a time, in order; different clients run
//!   concurrently. Events are delivered at least once: after a worker dies, its unacknowledged
//!   events are handled again by another worker, so handlers should be idempotent.
//! - Once [`Cluster::bind_uid`] or [`Cluster::join_group`] returned `Ok`, every later send to
//!   that uid or group, from any worker or API client, reaches the connection.
//! - Sends return once queued towards the gateways; nothing on the send path waits for a reply.
//!
//! # Layout
//! - [`worker`] — the [`Worker`] trait, [`Context`], [`Handshake`], [`Reject`], [`CloseInfo`].
//! - [`runtime`] — [`WorkerRuntime`]: one future per event, run on its gateway link's task; acknowledgements.
//! - [`cluster`] — [`Cluster`], the API handle, and [`ClusterConfig`].
//! - [`frame`] — [`Frame`], a text or binary message.
//! - [`error`] — [`ApiError`].
//! - `routes`: the replicated uid / group → gateway table.
//! - `link`: one self-healing stream to one gateway.
//! - `handlers`: the handlers running for one link, one at a time per client.

#![warn(missing_docs)]

pub mod cluster;
pub mod error;
pub mod frame;
pub mod runtime;
pub mod worker;

mod handlers;
mod link;
mod routes;

pub use cluster::{Cluster, ClusterConfig, Deadline};
pub use error::ApiError;
pub use frame::Frame;
pub use gatehouse_core::{ClientId, ClusterSecret, Credentials, tls};
pub use gatehouse_proto::ErrorCode;
pub use runtime::{WorkerConfig, WorkerRuntime};
pub use worker::{CloseInfo, Context, HandlerResult, Handshake, Reject, Worker};
