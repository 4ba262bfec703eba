//! The one error type of the library.

use std::path::PathBuf;

/// Why a run, or the baseline server, could not be carried out.
///
/// Failures of single clients (a refused connection, a missing `login_ok`) are not errors:
/// they are counted in the [`Report`](crate::Report), because a load test must say how many
/// clients failed rather than stop at the first one.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration contradicts itself or names something impossible.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The run needs more file descriptors than this process may open.
    #[error(
        "{clients} clients need about {needed} open files but this process may hold only {limit} \
         (RLIMIT_NOFILE, `ulimit -n`){raise}; split the load over several `gatehouse bench run` \
         processes (each with its own --source-ips and --uid-prefix)"
    )]
    FdLimit {
        /// Clients requested.
        clients: usize,
        /// Descriptors the run would need (clients plus a reserve).
        needed: u64,
        /// The soft limit in force.
        limit: u64,
        /// Advice to raise the soft limit when the hard limit allows it (empty otherwise).
        raise: String,
    },
    /// A gateway URL could not be resolved to a socket address.
    #[error("cannot resolve {url}: {reason}")]
    Resolve {
        /// The URL as given.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Not a single client connected and completed its set-up, so there is nothing to measure.
    #[error("no client could connect and set up; first error: {first_error}")]
    NoClients {
        /// The first failure any client saw.
        first_error: String,
    },
    /// The server API of an `api-publish` run could not be reached before the traffic phase.
    #[error("server api {url}: {reason}")]
    Api {
        /// The API URL as given.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A file under /proc could not be read or parsed.
    #[error("reading {}: {reason}", path.display())]
    Proc {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A routing run could not complete a phase (a member that could not attach, a change
    /// never confirmed, a registry that was not restarted).
    #[error("routing run: {0}")]
    Routing(String),
    /// A socket operation of the baseline server failed.
    #[error("baseline server: {0}")]
    Serve(#[from] std::io::Error),
}
