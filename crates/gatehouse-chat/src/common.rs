//! The small pieces every handler module shares, kept below all of them so that none has to
//! import another handler module: what a handled request answers ([`Answer`]), how store and
//! cluster failures become protocol errors, the wall clock, and the protocol-2 event counter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_sdk::{ApiError, Frame};
use gatehouse_store::StoreError;
use serde_json::Value;

use crate::protocol::{Code, ProtocolError};

/// What a handled request answers.
pub(crate) enum Answer {
    /// Nothing more: a send was answered with its ack before its pushes went out.
    Done,
    /// A JSON object, to which the request's `cid` is added.
    Json(Value),
    /// A frame built within the reply budget, `cid` included.
    Frame(Frame),
}

/// The protocol error of a store failure; unavailable and internal ones are logged, since
/// they are the server's problem rather than the client's.
pub(crate) fn store_error(error: StoreError) -> ProtocolError {
    let code = match &error {
        StoreError::LimitExceeded { limit, max } => {
            return ProtocolError::limit(limit.as_str(), u64::from(*max), error.to_string());
        }
        StoreError::NotMember { .. } => Code::NotMember,
        StoreError::UnknownGroup(_) => Code::UnknownGroup,
        StoreError::GroupExists(_) => Code::GroupExists,
        StoreError::NotInvited { .. } => Code::NotInvited,
        StoreError::Banned { .. } => Code::Banned,
        StoreError::Forbidden { .. } => Code::Forbidden,
        StoreError::Blocked { .. } => Code::Blocked,
        StoreError::UnknownUser(_) => Code::UnknownUser,
        StoreError::CidConflict { .. } => Code::CidConflict,
        StoreError::UnknownMessage { .. } => Code::UnknownMessage,
        StoreError::EditWindowClosed { .. } => Code::EditWindowClosed,
        StoreError::MessageDeleted(_) => Code::MessageDeleted,
        StoreError::InvalidInput(_) => Code::InvalidField,
        StoreError::Overloaded => Code::Overloaded,
        StoreError::Database(_) | StoreError::Closed | StoreError::Contention(_) => Code::Unavailable,
        StoreError::Invariant(_) | StoreError::Migrate(_) | StoreError::Start(_) => Code::Internal,
    };
    if matches!(code, Code::Unavailable | Code::Internal) {
        tracing::error!(%error, "chat store failed");
    }
    ProtocolError::new(code, error.to_string())
}

/// The protocol error of a failed cluster call (logged: the client can only retry).
pub(crate) fn api_error(error: ApiError) -> ProtocolError {
    tracing::warn!(%error, "cluster call failed");
    ProtocolError::new(Code::Unavailable, error.to_string())
}

/// The wall clock in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Milliseconds of a duration, saturated.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Counts one protocol-2 event of `kind` (`gatehouse_chat_events_total{kind=…}`).
pub(crate) fn count(kind: &'static str) {
    metrics::counter!("gatehouse_chat_events_total", "kind" => kind).increment(1);
}
