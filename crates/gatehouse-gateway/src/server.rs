//! `Config → bind → run(listeners, token)`: the gateway's entry points.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::NodeId;
use gatehouse_core::attach::{self, AttachConfig};
use gatehouse_core::shutdown::{GRACE, with_grace};
use gatehouse_proto::MAX_GRPC_MESSAGE_BYTES;
use gatehouse_proto::tonic::service::interceptor::InterceptedService;
use gatehouse_proto::tonic::transport::Server;
use gatehouse_proto::tonic::transport::server::TcpIncoming;
use gatehouse_proto::v1::gateway_server::GatewayServer;
use gatehouse_proto::v1::{Member, MemberKind};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::hub::Hub;
use crate::links::LinkService;
use crate::routes::RouteSync;

/// A gateway whose two listeners are bound but not yet serving.
pub struct BoundGateway {
    config: GatewayConfig,
    public: TcpListener,
    internal: TcpListener,
}

/// Validates the configuration and binds the public and internal listeners.
pub async fn bind(config: GatewayConfig) -> Result<BoundGateway, GatewayError> {
    config.validate()?;
    let public = TcpListener::bind(config.listen).await?;
    let internal = TcpListener::bind(config.internal).await?;
    Ok(BoundGateway {
        config,
        public,
        internal,
    })
}

impl BoundGateway {
    /// The bound public (WebSocket/HTTP) address.
    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr().expect("bound listener has an address")
    }

    /// The bound internal (gRPC) address.
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal.local_addr().expect("bound listener has an address")
    }

    /// Serves until `token` is cancelled, then closes clients with 1001 and leaves the cluster.
    pub async fn run(self, token: CancellationToken) -> Result<(), GatewayError> {
        let id = NodeId::random();
        let public_addr = self.public_addr();
        let internal_addr = self.internal_addr();
        let advertise = self
            .config
            .advertise
            .clone()
            .unwrap_or_else(|| internal_addr.to_string());
        if self.config.advertise.is_none() && internal_addr.ip().is_unspecified() {
            tracing::warn!(%internal_addr, "internal address is unspecified; set --advertise to the address workers can reach");
        }
        tracing::info!(kind = %"ws", addr = %public_addr, gateway_id = %id, "listening");
        tracing::info!(kind = %"grpc", addr = %internal_addr, gateway_id = %id, advertise = %advertise, "listening");

        if self.config.insecure_dev_auth {
            tracing::warn!(
                "INSECURE DEV MODE: clients may sign in with a bare uid and no token; never use this in production"
            );
        }
        let routes = RouteSync::new(self.config.registries.len());
        let hub = Arc::new(Hub::new(id, self.config.clone(), routes.clone(), token.child_token()));
        tokio::spawn(routes.clone().run(token.clone()));
        tokio::spawn(prune_departed_workers(hub.clone(), token.clone()));
        let closing = hub.clone();
        let shutdown = token.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            closing.kill_all(1001, "server shutting down");
        });
        attach::spawn(
            AttachConfig {
                registries: self.config.registries.clone(),
                secret: self.config.secret.clone(),
                member: Member {
                    kind: MemberKind::Gateway as i32,
                    id: id.0,
                    addr: advertise,
                    name: public_addr.to_string(),
                },
                subscribe_routes: false,
                max_backoff: self.config.registry_backoff,
            },
            routes,
            token.clone(),
        );

        let grpc = InterceptedService::new(
            GatewayServer::new(LinkService {
                hub: hub.clone(),
                token: token.clone(),
            })
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            self.config.secret.server_interceptor("gateway"),
        );
        let grpc_token = token.clone();
        let grpc_server = Server::builder()
            .initial_stream_window_size(Some(4 * 1024 * 1024))
            .initial_connection_window_size(Some(8 * 1024 * 1024))
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(grpc)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.internal).with_nodelay(Some(true)),
                grpc_token.cancelled_owned(),
            );

        let router = crate::http::router(hub.clone());
        let http_server = async {
            crate::accept::serve(self.public, hub.clone(), router, token.clone()).await;
            Ok::<(), GatewayError>(())
        };

        let servers = async { tokio::join!(grpc_server, http_server) };
        if let Some((grpc_result, http_result)) = with_grace(servers, &token, GRACE, "gateway").await {
            grpc_result?;
            http_result?;
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// Drops the links of workers the registries report gone, whenever a membership changes.
async fn prune_departed_workers(hub: Arc<Hub>, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = hub.routes().membership_changed.notified() => hub.prune_departed_workers(),
        }
    }
}
