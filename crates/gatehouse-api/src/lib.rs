//! The server API role (`gatehouse api`): the whole cluster API for backends written in any
//! language, over HTTP/JSON and gRPC — what GatewayWorker's `GatewayClient` is to PHP and
//! Centrifugo's server API is to its users.
//!
//! An API process joins the cluster as an API client (`Cluster::connect`), holds no state of its
//! own beyond caches, and scales horizontally: run as many as the backends need, behind any load
//! balancer. Every request carries an API key (stored as a SHA-256 digest, with scopes `publish`,
//! `query`, `admin`), is bounded in size, list lengths, rate and time, and gets a typed answer
//! with the cluster's error codes. Sends may carry an idempotency key. See docs/server-api.md.
//!
//! It depends on the SDK only (plus the shared proto and core crates), never on another role.
//!
//! # Layout
//! - [`config`] — [`ApiConfig`], [`Limits`] and their validation.
//! - [`server`] — [`bind`] and [`BoundApi::run`]: listeners, joining the cluster, SIGHUP reload.
//! - [`service`] — [`Api`]: admission, keys, scopes, rates, idempotency and deadlines around
//!   every operation, shared by both front ends.
//! - [`ops`] — the operations: names, scopes, checked requests ([`Op`]), answers ([`Output`]).
//! - [`http`] — the HTTP/JSON front end and its accept loop; [`json`] — its request bodies.
//! - [`grpc`] — the `gatehouse.v1.ServerApi` front end.
//! - [`keys`] — API keys: generation, the key file, verification.
//! - [`ratelimit`] — a lock-free per-key token bucket.
//! - [`idempotency`] — the bounded cache of send idempotency keys.
//! - [`stats`] — counters for `/metrics`.
//! - [`error`] — [`Failure`] (a request's typed error) and [`ServerError`].

pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod idempotency;
pub mod json;
pub mod keys;
pub mod ops;
pub mod ratelimit;
pub mod server;
pub mod service;
pub mod stats;

pub use config::{ApiConfig, ConfigError, Limits, Rate};
pub use error::{Failure, ServerError};
pub use ops::{Op, OpKind, Output};
pub use server::{BoundApi, bind};
pub use service::Api;
