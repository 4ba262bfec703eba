//! The registry's typed errors.

/// Why the registry could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The listener could not be bound.
    #[error("cannot bind: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("grpc server failed: {0}")]
    Transport(#[from] gatehouse_proto::tonic::transport::Error),
    /// The gRPC server failed or its TLS material is unusable.
    #[error(transparent)]
    Serve(#[from] gatehouse_core::credentials::ServeError),
}

/// Result alias for the registry's entry points.
pub type Result<T> = std::result::Result<T, RegistryError>;
