//! The worker apps built into the `gatehouse` binary, each a small [`Worker`] on the public SDK —
//! they double as examples of writing one.
//!
//! They know nothing of gateways or registries beyond what the SDK offers.
//!
//! # Layout
//! - [`echo`] — every frame goes back to its sender unchanged.
//! - [`relay`] — login binds a uid; frames with `"to"` go to that uid (the GatewayWorker
//!   comparison app used by benchmarks), plus group and broadcast variants.
//! - [`api`] — exposes the whole cluster API to its clients as JSON requests. For tests and
//!   diagnostics only: never run it where untrusted clients connect.

pub mod api;
pub mod echo;
pub mod relay;

/// Names of the built-in apps, for `--app` help and validation.
pub const APP_NAMES: [&str; 3] = ["echo", "relay", "api"];
