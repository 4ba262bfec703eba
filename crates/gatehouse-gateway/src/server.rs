//! `Config → bind → run(listeners, token)`: the gateway's entry points, and its drain.
//!
//! Stopping is a drain, not a cut: when `token` is cancelled the gateway turns unready at once
//! (`/readyz` 503, new handshakes 503), closes its clients gradually over `drain` with 1012
//! (service restart) so that the load balancer spreads their reconnects over the other
//! gateways instead of a thundering herd, waits until the events it already read are
//! acknowledged by workers, and only then leaves the cluster and stops its listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::NodeId;
use gatehouse_core::admin::{AdminHooks, Readiness};
use gatehouse_core::attach::{self, AttachConfig};
use gatehouse_core::shutdown::{GRACE, with_grace};
use gatehouse_core::tls::{PublicTls, Role};
use gatehouse_proto::MAX_GRPC_MESSAGE_BYTES;
use gatehouse_proto::tonic::service::interceptor::InterceptedService;
use gatehouse_proto::tonic::transport::Server;
use gatehouse_proto::v1::gateway_server::GatewayServer;
use gatehouse_proto::v1::{Member, MemberKind};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::hub::Hub;
use crate::links::LinkService;
use crate::routes::RouteSync;

/// How long a drained gateway waits for workers to acknowledge the events it already read.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// How long a drained gateway waits for its sockets' close handshakes (each is bounded by 2 s).
const SOCKETS_WAIT: Duration = Duration::from_secs(3);

/// A gateway whose two listeners are bound but not yet serving.
pub struct BoundGateway {
    public: TcpListener,
    public_tls: Option<Arc<PublicTls>>,
    internal: TcpListener,
    hub: Arc<Hub>,
    routes: Arc<RouteSync>,
}

/// Validates the configuration and binds the public and internal listeners.
pub async fn bind(config: GatewayConfig) -> Result<BoundGateway, GatewayError> {
    config.validate()?;
    // Loaded before binding: a missing or unreadable certificate fails the start, loudly.
    let public_tls = match &config.tls {
        Some(files) => Some(Arc::new(PublicTls::load(&files.cert, &files.key, &[b"http/1.1"])?)),
        None => None,
    };
    let public = TcpListener::bind(config.listen).await?;
    let internal = TcpListener::bind(config.internal).await?;
    let routes = RouteSync::new(config.registries.len());
    let hub = Arc::new(Hub::new(NodeId::random(), config, routes.clone()));
    Ok(BoundGateway {
        public,
        public_tls,
        internal,
        hub,
        routes,
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

    /// What this gateway serves on the admin listener: ready while it has a worker to hand
    /// clients to and is not draining. A restarting registry does not make it unready: its
    /// clients are still served.
    pub fn admin_hooks(&self) -> AdminHooks {
        let ready = self.hub.clone();
        let scrape = self.hub.clone();
        AdminHooks {
            role: "gateway",
            ready: Arc::new(move || {
                let registries = ready.routes().attached_count();
                let workers = ready.events().workers().len();
                let draining = ready.is_stopping();
                let fenced = ready.is_fenced();
                Readiness {
                    ready: workers > 0 && !draining && !fenced,
                    detail: format!(
                        "{{\"registries\":{registries},\"workers\":{workers},\"draining\":{draining},\"fenced\":{fenced}}}"
                    ),
                }
            }),
            scrape: Some(Arc::new(move || scrape.publish_metrics())),
        }
    }

    /// Serves until `token` is cancelled, then drains (see the module doc) and leaves.
    pub async fn run(self, token: CancellationToken) -> Result<(), GatewayError> {
        let hub = self.hub.clone();
        let config = hub.config().clone();
        let id = hub.id();
        let public_addr = self.public_addr();
        let internal_addr = self.internal_addr();
        let advertise = config.advertise.clone().unwrap_or_else(|| internal_addr.to_string());
        if config.advertise.is_none() && internal_addr.ip().is_unspecified() {
            tracing::warn!(%internal_addr, "internal address is unspecified; set --advertise to the address workers can reach");
        }
        let (public_tls, cluster_tls) = (self.public_tls.is_some(), config.credentials.is_tls());
        tracing::info!(kind = %"ws", addr = %public_addr, tls = public_tls, gateway_id = %id, "listening");
        tracing::info!(kind = %"grpc", addr = %internal_addr, tls = cluster_tls, gateway_id = %id, advertise = %advertise, "listening");
        if config.insecure_dev_auth {
            tracing::warn!(
                "INSECURE DEV MODE: clients may sign in with a bare uid and no token; never use this in production"
            );
        }

        // The listeners, links and registry sessions live until the drain is over.
        let serving = CancellationToken::new();
        tokio::spawn(self.routes.clone().run(serving.clone()));
        tokio::spawn(prune_departed_workers(hub.clone(), serving.clone()));
        tokio::spawn(crate::fence::watch(hub.clone(), serving.clone()));
        attach::spawn(
            AttachConfig {
                registries: config.registries.clone(),
                credentials: config.credentials.clone(),
                member: Member {
                    kind: MemberKind::Gateway as i32,
                    id: id.0,
                    addr: advertise,
                    name: public_addr.to_string(),
                },
                subscribe_routes: false,
                max_backoff: config.registry_backoff,
                lease: Some(hub.lease().clone()),
            },
            self.routes.clone(),
            serving.clone(),
        );

        let grpc = InterceptedService::new(
            GatewayServer::new(LinkService::new(hub.clone(), serving.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            config
                .credentials
                .server_interceptor("gateway", &[Role::Worker, Role::Api]),
        );
        let grpc_router = Server::builder()
            .initial_stream_window_size(Some(4 * 1024 * 1024))
            .initial_connection_window_size(Some(8 * 1024 * 1024))
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(grpc);
        let grpc_server = async {
            config
                .credentials
                .serve(grpc_router, self.internal, "gateway", serving.clone().cancelled_owned())
                .await
        };
        let router = crate::http::router(hub.clone());
        let acceptor = self.public_tls.map(|tls| {
            tls.clone().keep_fresh(serving.clone());
            tls.acceptor()
        });
        let http_server = async {
            crate::accept::serve(self.public, acceptor, hub.clone(), router, serving.clone()).await;
            Ok::<(), GatewayError>(())
        };
        let drain = async {
            token.cancelled().await;
            drain(&hub, config.drain).await;
            serving.cancel();
        };
        let servers = async { tokio::join!(grpc_server, http_server, drain) };
        let stopped = with_grace(servers, &serving, GRACE, "gateway").await;
        if let Some((grpc_result, http_result, ())) = stopped {
            grpc_result?;
            http_result?;
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// Turns the gateway unready, closes its clients gradually over `window` with 1012, then waits
/// (bounded) until workers acknowledged every event already read.
async fn drain(hub: &Hub, window: Duration) {
    hub.begin_drain();
    let clients = hub.conns().snapshot();
    tracing::info!(
        clients = clients.len(),
        window_ms = window.as_millis() as u64,
        "draining: closing clients gradually with 1012"
    );
    if !clients.is_empty() {
        // Evenly spread over the window, in steps of at least 10 ms.
        let steps = (window.as_millis() / 10).clamp(1, clients.len() as u128) as usize;
        let per_step = clients.len().div_ceil(steps);
        let pause = window / steps as u32;
        for (index, batch) in clients.chunks(per_step).enumerate() {
            if index > 0 {
                tokio::time::sleep(pause).await;
            }
            for conn in batch {
                hub.close_for_restart(conn);
            }
        }
    }
    let acked = tokio::time::timeout(ACK_WAIT, hub.events().drained()).await.is_ok();
    if !acked {
        tracing::warn!(
            pending_bytes = hub.events().pending_bytes(),
            "some events read before the drain were not acknowledged in time"
        );
    }
    // The last clients closed are still in their close handshake (bounded per socket): exiting
    // now would reset them instead of closing them cleanly.
    hub.sockets().close();
    if tokio::time::timeout(SOCKETS_WAIT, hub.sockets().wait()).await.is_err() {
        tracing::warn!(
            sockets = hub.sockets().len(),
            "some connections had not finished closing at the end of the drain"
        );
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
