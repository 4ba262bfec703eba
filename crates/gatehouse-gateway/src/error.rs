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
    /// The internal gRPC server failed, or its cluster TLS material is unusable.
    #[error(transparent)]
    Serve(#[from] gatehouse_core::credentials::ServeError),
    /// The public listener's certificate or key is unusable.
    #[error("public tls: {0}")]
    Tls(#[from] gatehouse_core::tls::TlsError),
}
