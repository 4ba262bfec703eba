//! The shared harness of the end-to-end tests: real `gatehouse` processes on loopback, and
//! WebSocket clients that speak to them.
//!
//! Tests read as specifications because the plumbing lives here: [`Cluster::builder`] starts
//! registries, gateways and workers as separate processes (bound to port 0, their addresses read
//! from their `listening` log lines), waits until every gateway sees every worker, and kills
//! everything on drop. [`WsClient`] and [`ApiClient`] are what a user's client would be.
//!
//! It must not depend on any gatehouse crate: it sees the system only from outside.
//!
//! # Layout
//! - [`process`] — one child process, its log, its bound addresses.
//! - [`api_server`] — `ApiServer`, a `gatehouse api` process, its keys and an HTTP client.
//! - [`cluster`] — [`Cluster`] and its builder.
//! - [`compose`] — [`Compose`], `docker-compose.yml` run as real processes on loopback.
//! - [`client`] — [`WsClient`], [`ApiClient`].
//! - [`browser`] — a headless-Chromium driver (DevTools protocol) for tests of the web page.
//! - [`chat`] — [`ChatClient`], a client of the chat protocol.
//! - [`haproxy`] — [`Haproxy`], a real load balancer in front of gateways.
//! - [`netns`] — [`Netns`], a network namespace on a veth pair, for real partitions.
//! - [`postgres`] — [`TempDatabase`], a throw-away PostgreSQL database per test.
//! - [`rawws`] — [`RawWs`], a raw-frame WebSocket client for protocol conformance tests.
//! - [`services`] — [`require`], the one policy for tests that need a service (a database,
//!   HAProxy, Chromium, a tool, root): fail under CI, reported as skipped elsewhere.
//! - [`tls`] — [`TestTls`], certificates from `gatehouse cert` and a client that trusts them.

pub mod api_server;
pub mod browser;
pub mod chat;
pub mod client;
pub mod cluster;
pub mod compose;
pub mod haproxy;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod rawws;
pub mod services;
pub mod tls;

pub use chat::{ChatClient, ChatDatabase};
pub use client::{ApiClient, WsClient};
pub use cluster::{Cluster, ClusterBuilder};
pub use compose::Compose;
pub use haproxy::Haproxy;
pub use netns::Netns;
pub use postgres::TempDatabase;
pub use process::Process;
pub use rawws::RawWs;
pub use services::{Service, require};
pub use tls::TestTls;

/// The secret test clusters share.
pub const TEST_SECRET: &str = "test-cluster-secret";

/// Declares each named scenario (an `async fn NAME(database: ChatDatabase) -> anyhow::Result<()>`
/// in the calling module) once per chat database: `needs_sqlite3::NAME`, `needs_postgres::NAME`
/// and `needs_mariadb::NAME`. The module names are what [`services`] filters on, so a scenario
/// whose database is missing is reported as skipped (or fails under CI), never passed unrun.
#[macro_export]
macro_rules! on_every_database {
    ($($scenario:ident),* $(,)?) => {
        mod needs_sqlite3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario($crate::ChatDatabase::sqlite()).await
                }
            )*
        }
        mod needs_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario($crate::ChatDatabase::postgres()).await
                }
            )*
        }
        mod needs_mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario($crate::ChatDatabase::mariadb()).await
                }
            )*
        }
    };
}
