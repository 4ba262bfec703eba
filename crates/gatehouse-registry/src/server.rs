//! `Config → bind → run(listener, token)`: the registry's entry points.

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_core::NodeId;
use gatehouse_core::admin::{AdminHooks, Readiness};
use gatehouse_core::shutdown::{GRACE, with_grace};
use gatehouse_core::tls::Role;
use gatehouse_proto::MAX_GRPC_MESSAGE_BYTES;
use gatehouse_proto::tonic::service::interceptor::InterceptedService;
use gatehouse_proto::tonic::transport::Server;
use gatehouse_proto::v1::registry_server::RegistryServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::RegistryConfig;
use crate::error::Result;
use crate::service::RegistryService;
use crate::stats::Stats;

/// A registry whose listener is bound but not yet serving.
pub struct BoundRegistry {
    config: RegistryConfig,
    listener: TcpListener,
    stats: Arc<Stats>,
}

/// Validates the configuration and binds the gRPC listener.
pub async fn bind(config: RegistryConfig) -> Result<BoundRegistry> {
    config.validate()?;
    let listener = TcpListener::bind(config.listen).await?;
    Ok(BoundRegistry {
        config,
        listener,
        stats: Arc::default(),
    })
}

impl BoundRegistry {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// What this registry serves on the admin listener: ready while it serves (a registry in
    /// its warm-up serves too; its table says it is not authoritative yet).
    pub fn admin_hooks(&self) -> AdminHooks {
        let ready = self.stats.clone();
        let scrape = self.stats.clone();
        AdminHooks {
            role: "registry",
            ready: Arc::new(move || Readiness {
                ready: true,
                detail: format!(
                    "{{\"members\":{},\"authoritative\":{}}}",
                    ready.members(),
                    ready.is_authoritative()
                ),
            }),
            scrape: Some(Arc::new(move || scrape.publish())),
        }
    }

    /// Serves until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) -> Result<()> {
        let id = NodeId::random();
        let addr = self.local_addr();
        tracing::info!(kind = %"grpc", %addr, tls = self.config.credentials.is_tls(), registry_id = %id, "listening");
        let service = RegistryService::start(id, self.config.clone(), self.stats.clone(), token.clone());
        let server = InterceptedService::new(
            RegistryServer::new(service)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            self.config
                .credentials
                .server_interceptor("registry", &[Role::Gateway, Role::Worker, Role::Api]),
        );
        let router = Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
            .add_service(server);
        let server = self
            .config
            .credentials
            .serve(router, self.listener, "registry", token.clone().cancelled_owned());
        if let Some(result) = with_grace(server, &token, GRACE, "registry").await {
            result?;
        }
        tracing::info!("registry stopped");
        Ok(())
    }
}
