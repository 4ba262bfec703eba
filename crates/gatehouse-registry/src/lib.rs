//! The registry: who is alive in the cluster, and which gateways hold each uid and group.
//!
//! It owns membership (gateways, workers, API clients) with leases, and the routing table that
//! workers replicate to send to exactly the gateways that hold a uid or group. The table is soft
//! state: gateways announce their keys in batched deltas and re-send everything (a reset) on each
//! new session, so a restarted registry rebuilds it. Several registries may run side by side;
//! every member attaches to all of them and none depends on another.
//!
//! The key guarantee: a gateway's change is confirmed (`BatchApplied`) only after every route
//! subscriber attached to this registry has acknowledged it. That is what lets `bind_uid` return
//! only when every worker would route a following send correctly (no propagation window).
//!
//! It must not know about WebSockets, client payloads or applications.
//!
//! # Layout
//! - [`config`] — [`RegistryConfig`] and its validation.
//! - [`error`] — [`RegistryError`].
//! - [`server`] — bind and run the gRPC service ([`bind`], [`BoundRegistry::run`]).
//! - `state`: the single-task state machine that owns membership and the table.
//! - `keys`: the keys one gateway holds, kept small (the registry holds every bound uid).
//! - `packed`: route updates packed for the subscribers' queues, unpacked as they are encoded.
//! - `service`: the tonic `Registry` service feeding the state machine.
//! - `stats`: counters and gauges for the admin listener's `/metrics`.

pub mod config;
pub mod error;
mod keys;
mod packed;
pub mod server;
mod service;
mod state;
mod stats;

pub use config::{ConfigError, RegistryConfig};
pub use error::RegistryError;
pub use server::{BoundRegistry, bind};
