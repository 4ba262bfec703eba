//! The gateway's typed errors.

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener could not be bound or served.
    #[error("listener failed: {0}")]
    Io(#[from] std::io::Error),
    /// The internal gRPC server failed.
    #[error("grpc server failed: {0}")]
    Transport(#[from] gatehouse_proto::tonic::transport::Error),
}
