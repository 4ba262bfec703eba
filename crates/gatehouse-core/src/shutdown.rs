//! Bounded graceful shutdown.
//!
//! Servers drain on cancellation (HTTP/2 streams end, WebSockets get their close frame), but a
//! peer that keeps a connection open must not keep the process alive forever: after a grace
//! period the server future is dropped.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long a role waits for connections to drain after it was asked to stop.
pub const GRACE: Duration = Duration::from_secs(5);

/// Runs `server` to completion, or until `grace` after `token` was cancelled; returns `None`
/// (and logs) when the grace period ran out.
pub async fn with_grace<F: Future>(
    server: F,
    token: &CancellationToken,
    grace: Duration,
    role: &str,
) -> Option<F::Output> {
    let deadline = async {
        token.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        output = server => Some(output),
        _ = deadline => {
            tracing::warn!(role, grace_ms = grace.as_millis() as u64, "connections did not drain in time; stopping anyway");
            None
        }
    }
}
