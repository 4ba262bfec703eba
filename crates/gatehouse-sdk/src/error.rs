//! The error every cluster API call returns.

use gatehouse_proto::ErrorCode;

/// Why a cluster API call failed: a stable [`ErrorCode`] plus a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// What kind of failure, stable across versions.
    pub code: ErrorCode,
    /// Details for logs and people.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    pub(crate) fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Timeout, message)
    }
}

impl From<gatehouse_core::limits::KeyError> for ApiError {
    fn from(error: gatehouse_core::limits::KeyError) -> ApiError {
        ApiError::bad_request(error.to_string())
    }
}
