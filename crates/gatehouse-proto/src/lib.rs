//! The wire contracts of gatehouse: code generated from `proto/gatehouse/v1`, plus the one small
//! error-code enum every service maps its errors onto.
//!
//! Every other crate talks to the network through these types and the `tonic` re-exported here,
//! so the whole workspace agrees on one version of each. This crate knows nothing of routing,
//! sockets or applications.
//!
//! # Layout
//! - [`v1`]: generated messages, clients and servers (`Registry`, `Gateway`, and `ServerApi`,
//!   the server API's public contract).
//! - [`error`] — [`ErrorCode`], mapped to gRPC and HTTP status codes.

pub mod error;

/// Generated code for package `gatehouse.v1`.
#[allow(missing_docs, clippy::all, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("gatehouse.v1");
}

pub use bytes;
pub use error::ErrorCode;
pub use prost;
pub use tonic;

/// Largest gRPC message either side accepts. Route snapshots and query results are chunked well
/// below this; the limit only guards against a corrupt peer.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
