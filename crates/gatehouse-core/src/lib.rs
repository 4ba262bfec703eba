//! What every gatehouse role shares and nothing more: identifiers, the stable routing hash, the
//! cluster credentials for internal gRPC (the secret and mutual TLS), reconnect back-off, logging
//! set-up and the admin listener.
//!
//! This crate must not know about any particular role: no sockets, no routing tables, no
//! application logic. The registry *client* lives here because every role needs the same one.
//!
//! # Layout
//! - [`ids`] — [`ClientId`], [`NodeId`]: cluster-unique, self-describing identifiers.
//! - [`admin`] — the admin listener (`/healthz`, `/readyz`, `/metrics`) and the metrics recorder.
//! - [`attach`] — the member side of the registry protocol: one self-healing stream per registry.
//! - [`lease`] — a member's own view of its lease (acked heartbeats), so a gateway knows when to fence.
//! - [`hrw`] — rendezvous hashing, stable across processes and versions.
//! - [`secret`] — the cluster secret, attached to and checked on every internal call.
//! - [`credentials`] — the secret and/or mutual TLS a member proves itself with; serving gRPC with them.
//! - [`tls`] — cluster certificates naming roles, `gatehouse cert`'s generator, TLS acceptors.
//! - [`backoff`] — capped exponential back-off with jitter for reconnect loops.
//! - [`batch`] — packing queued items into one message under a count and a byte budget.
//! - [`shutdown`] — graceful shutdown with a bounded grace period.
//! - [`telemetry`] — one-call tracing initialisation (plain or JSON lines).
//! - [`limits`] — name validation shared by the gateway and the SDK.

pub mod admin;
pub mod attach;
pub mod backoff;
pub mod batch;
pub mod credentials;
pub mod hrw;
pub mod ids;
pub mod lease;
pub mod limits;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use credentials::Credentials;
pub use ids::{ClientId, NodeId};
pub use secret::ClusterSecret;
