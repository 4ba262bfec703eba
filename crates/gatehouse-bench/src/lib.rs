//! Load generator for gatehouse, and the single-process baseline relay it is compared with.
//!
//! [`run`] opens N WebSocket clients against one or more gateways, drives a scenario (direct
//! messages, group fan-out, broadcast, idle connections, chat with storage, chat with typing
//! events and receipts, backends publishing through the server API) in open mode (a fixed offered rate) or closed mode (a bounded number
//! of unanswered messages per sender, or of API requests in flight per publisher), and
//! returns a [`Report`]: what was sent, delivered, lost and duplicated in the measured window,
//! latency percentiles from an HDR histogram, the connect rate, and the memory and CPU time of
//! the server processes named by pid (split by thread name, so that a worker's database
//! threads show apart from its runtime) and of database server processes, kept apart so that
//! what storage costs per message shows on its own. [`baseline::serve_baseline`] is a minimal one-hop relay
//! speaking the same protocol: the reference every cluster figure is divided by;
//! [`hop::serve_hop`] splits it into the cluster's three-process shape without the cluster.
//!
//! The crate owns the clients, the accounting and the report. It must not know how gatehouse
//! works inside and depends on no other gatehouse crate but `gatehouse-proto`, the public gRPC
//! contract any backend generates its server API client from: it sees the system only from
//! outside, over WebSockets (the relay and chat apps' JSON frames), the server API (HTTP/JSON
//! and gRPC, as a backend calls it) and Linux's /proc. The `gatehouse bench` command maps its
//! flags onto [`BenchConfig`] and prints the report.
//!
//! The generator shares the machine with the servers it measures, so it is built to be cheap:
//! one task per client serving both directions, 4 KiB socket buffers, messages formatted
//! directly into their frame, one borrowed-struct parse per received frame, relaxed atomic
//! counters and sharded histograms. One process holds at most as many clients as its open-file
//! limit allows ([`run`] refuses more, with advice); larger loads are split over several
//! processes, each with its own `uid_prefix` and `source_ips`.
//!
//! # Layout
//! - [`config`] — [`BenchConfig`], [`Scenario`], [`Mode`]: what a run does, as a plain struct.
//! - [`runner`] — [`run`]: the coordinator (limits, phases, sampling, the report).
//! - `session` — one client's task: connect, set up, send, receive, account.
//! - `scenario` — per-scenario roles, frames and parsing (`dm`, `group`, `broadcast`, `chat`,
//!   and `relay`, the relay app's shared wire format).
//! - `api` — the `api-publish` scenario's publishers: closed loops of `send_to_uid` requests
//!   (one send or a batch) over HTTP or gRPC.
//! - `client` — URL resolution and WebSocket connect with small buffers and source binding.
//! - `accounting` — the measured window, counters, duplicate detection, latency histograms.
//! - [`report`] — [`Report`] (JSON and human summary) and [`Progress`].
//! - [`proc`] — /proc readings: memory, CPU time, the open-file limit.
//! - [`baseline`] — the single-process reference relay server.
//! - [`hop`] — the two-hop reference: baseline edges routing direct messages through hop
//!   processes, to measure what the cluster's topology costs by itself.
//! - [`routing`] — [`routing::run_routing`]: the routing state at scale (registry and worker
//!   memory per uid, bind latency, bytes per bind, resync after a registry restart), measured
//!   with synthetic gateways and subscribers speaking the registry's gRPC protocol.
//! - `shards` — the sharded map of the baseline and hop processes.
//! - [`error`] — [`BenchError`].

mod accounting;
mod api;
pub mod baseline;
mod client;
pub mod config;
pub mod error;
pub mod hop;
pub mod proc;
pub mod report;
pub mod routing;
pub mod runner;
mod scenario;
mod session;
mod shards;

pub use baseline::{BaselineConfig, serve_baseline, serve_baseline_with};
pub use client::SOCKET_BUFFER;
pub use config::{ApiTarget, ApiTransport, BenchConfig, Mode, Scenario, parse_source_ips};
pub use error::BenchError;
pub use hop::serve_hop;
pub use report::{ApiStats, Latency, PLOT_QUANTILES, Progress, QuantileValue, Report};
pub use runner::run;
