//! What every gatehouse role shares and nothing more: identifiers, the stable routing hash, the
//! cluster-secret check for internal gRPC, reconnect back-off and logging set-up.
//!
//! This crate must not know about any particular role: no sockets, no routing tables, no
//! application logic. The registry *client* lives here because every role needs the same one.
//!
//! # Layout
//! - [`ids`] — [`ClientId`], [`NodeId`]: cluster-unique, self-describing identifiers.
//! - [`attach`] — the member side of the registry protocol: one self-healing stream per registry.
//! - [`hrw`] — rendezvous hashing, stable across processes and versions.
//! - [`secret`] — the cluster secret, attached to and checked on every internal call.
//! - [`backoff`] — capped exponential back-off with jitter for reconnect loops.
//! - [`batch`] — packing queued items into one message under a count and a byte budget.
//! - [`shutdown`] — graceful shutdown with a bounded grace period.
//! - [`telemetry`] — one-call tracing initialisation (plain or JSON lines).
//! - [`limits`] — name validation shared by the gateway and the SDK.

pub mod attach;
pub mod backoff;
pub mod batch;
pub mod hrw;
pub mod ids;
pub mod limits;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

pub use ids::{ClientId, NodeId};
pub use secret::ClusterSecret;
