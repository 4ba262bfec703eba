//! One small, stable set of error codes shared by every service and the client protocol.
//!
//! Each crate keeps its own typed error enum; the enum picks an [`ErrorCode`] once, and the code
//! decides the gRPC status, the HTTP status and the number carried in a `Reply`.

use std::fmt;

/// Why a cluster operation failed, as seen by a caller.
///
/// The numeric values travel in `Reply.error_code`; never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// The request itself is malformed or violates a limit.
    BadRequest = 1,
    /// The caller did not present the cluster secret, or a wrong one.
    Unauthenticated = 2,
    /// The named client, uid or group does not exist.
    NotFound = 3,
    /// The operation did not complete within its deadline.
    Timeout = 4,
    /// A bounded queue is full; retry later.
    TooManyRequests = 5,
    /// The process that must serve the request is not reachable right now.
    Unavailable = 6,
    /// A bug or an unexpected failure.
    Internal = 7,
}

impl ErrorCode {
    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthenticated,
        ErrorCode::NotFound,
        ErrorCode::Timeout,
        ErrorCode::TooManyRequests,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// Returns the value carried in `Reply.error_code`.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// Parses a wire value; unknown values become [`ErrorCode::Internal`] so that a newer peer
    /// cannot make an older one panic.
    pub fn from_u32(value: u32) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_u32() == value)
            .unwrap_or(ErrorCode::Internal)
    }

    /// Returns the lowercase name used in logs and client-facing JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Returns the gRPC status code for this error.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::BadRequest => tonic::Code::InvalidArgument,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
            ErrorCode::TooManyRequests => tonic::Code::ResourceExhausted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// Returns the HTTP status code for this error (handshake rejections, health endpoints).
    pub fn http_status(self) -> http::StatusCode {
        match self {
            ErrorCode::BadRequest => http::StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated => http::StatusCode::UNAUTHORIZED,
            ErrorCode::NotFound => http::StatusCode::NOT_FOUND,
            ErrorCode::Timeout => http::StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::TooManyRequests => http::StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a gRPC status back to a code, for errors raised by tonic itself.
    pub fn from_grpc(code: tonic::Code) -> ErrorCode {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::BadRequest,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => ErrorCode::Unauthenticated,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::DeadlineExceeded => ErrorCode::Timeout,
            tonic::Code::ResourceExhausted => ErrorCode::TooManyRequests,
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Aborted => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }

    /// Builds a gRPC status with this code.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), message)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip_and_unknown_values_are_internal() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u32(code.as_u32()), code);
            assert_eq!(ErrorCode::from_grpc(code.grpc_code()), code);
        }
        assert_eq!(ErrorCode::from_u32(0), ErrorCode::Internal);
        assert_eq!(ErrorCode::from_u32(999), ErrorCode::Internal);
    }
}
