//! Errors: [`Failure`], why one request (or one operation of a batch) failed, and
//! [`ServerError`], why the server could not start or run.
//!
//! A failure carries one of the cluster's [`ErrorCode`]s, so a caller sees the same seven codes
//! whether it talks to the SDK, the HTTP API or the gRPC API. A few refusals need a more precise
//! transport status than the code's own (403 for a key without the scope, 413 for a body over
//! the limit, 404/405 for a path that is no operation); [`Refusal`] says which, without adding
//! codes.

use std::time::Duration;

use gatehouse_proto::ErrorCode;
use gatehouse_proto::tonic;
use gatehouse_sdk::ApiError;

/// How a failure is presented beyond its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The code decides: `ErrorCode::http_status` / `ErrorCode::grpc_code`.
    Plain,
    /// A valid key without the operation's scope: code `unauthenticated`, but HTTP 403 and
    /// gRPC `PERMISSION_DENIED` (401 would tell the caller to fetch a new key).
    Forbidden,
    /// The body exceeds the limit: code `bad_request`, HTTP 413.
    TooLarge,
    /// The path names no operation: code `not_found`, HTTP 404.
    NoRoute,
    /// The path exists but not with this method: code `bad_request`, HTTP 405.
    Method,
}

/// Why a request or one operation failed: a stable code, a message for people, and how to
/// present it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Failure {
    /// One of the cluster's error codes.
    pub code: ErrorCode,
    /// What went wrong, in words that point at the fix.
    pub message: String,
    /// The transport status, when the code's own is not precise enough.
    pub refusal: Refusal,
    /// When to retry (rate limits and overload): `Retry-After` / `retry-after` metadata.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure presented by its code alone.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            refusal: Refusal::Plain,
            retry_after: None,
        }
    }

    /// A malformed request or one over a limit.
    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(ErrorCode::BadRequest, message)
    }

    /// A missing or unknown API key.
    pub fn unauthenticated(message: impl Into<String>) -> Failure {
        Failure::new(ErrorCode::Unauthenticated, message)
    }

    /// A key without the scope an operation needs.
    pub fn forbidden(message: impl Into<String>) -> Failure {
        Failure {
            refusal: Refusal::Forbidden,
            ..Failure::unauthenticated(format!("forbidden: {}", message.into()))
        }
    }

    /// A body over the size limit.
    pub fn too_large(limit: usize) -> Failure {
        Failure {
            refusal: Refusal::TooLarge,
            ..Failure::bad_request(format!("the request body exceeds the limit of {limit} bytes"))
        }
    }

    /// A bug or an impossible state.
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(ErrorCode::Internal, message)
    }

    /// Sets when to retry.
    pub fn retry_after(mut self, after: Duration) -> Failure {
        self.retry_after = Some(after);
        self
    }

    /// The HTTP status of this failure.
    pub fn http_status(&self) -> http::StatusCode {
        match self.refusal {
            Refusal::Plain => self.code.http_status(),
            Refusal::Forbidden => http::StatusCode::FORBIDDEN,
            Refusal::TooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::NoRoute => http::StatusCode::NOT_FOUND,
            Refusal::Method => http::StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The gRPC status of this failure (with `retry-after` metadata when set).
    pub fn grpc_status(&self) -> tonic::Status {
        let code = match self.refusal {
            Refusal::Forbidden => tonic::Code::PermissionDenied,
            _ => self.code.grpc_code(),
        };
        let mut status = tonic::Status::new(code, self.message.clone());
        if let Some(after) = self.retry_after
            && let Ok(value) = retry_after_seconds(after).to_string().parse()
        {
            status.metadata_mut().insert("retry-after", value);
        }
        status
    }
}

/// Whole seconds to wait, rounded up and at least one (`Retry-After` has no fractions).
pub fn retry_after_seconds(after: Duration) -> u64 {
    after.as_secs() + u64::from(after.subsec_nanos() > 0 || after.is_zero())
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Failure {
        Failure::new(error.code, error.message)
    }
}

/// Why the API server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The API key file could not be read or is invalid.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyFileError),
    /// A listener could not be bound or served.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The listeners' certificate or key is unusable.
    #[error("tls: {0}")]
    Tls(#[from] gatehouse_core::tls::TlsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_code_unless_the_refusal_is_more_precise() {
        for code in ErrorCode::ALL {
            let failure = Failure::new(code, "x");
            assert_eq!(failure.http_status(), code.http_status());
            assert_eq!(failure.grpc_status().code(), code.grpc_code());
        }
        let forbidden = Failure::forbidden("no admin scope");
        assert_eq!(forbidden.code, ErrorCode::Unauthenticated);
        assert_eq!(forbidden.http_status(), http::StatusCode::FORBIDDEN);
        assert_eq!(forbidden.grpc_status().code(), tonic::Code::PermissionDenied);
        assert!(forbidden.message.starts_with("forbidden: "));
        let large = Failure::too_large(10);
        assert_eq!(large.code, ErrorCode::BadRequest);
        assert_eq!(large.http_status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        let status = Failure::new(ErrorCode::TooManyRequests, "slow down")
            .retry_after(Duration::from_millis(1500))
            .grpc_status();
        assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
    }
}
