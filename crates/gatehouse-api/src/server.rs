//! `ApiConfig → bind → run(token)`: the API role's entry points.
//!
//! The listeners are bound and logged first; the process then joins the cluster in the
//! background (retrying with back-off), so an orchestrator sees a live process at once and
//! `/readyz` says when it can serve. Until then operations answer 503 `unavailable`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::backoff::Backoff;
use gatehouse_core::shutdown::{GRACE, with_grace};
use gatehouse_core::tls::PublicTls;
use gatehouse_proto::MAX_GRPC_MESSAGE_BYTES;
use gatehouse_proto::tonic::transport::Server;
use gatehouse_proto::tonic::transport::server::TcpIncoming;
use gatehouse_proto::v1::server_api_server::ServerApiServer;
use gatehouse_sdk::{Cluster, ClusterConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ApiConfig;
use crate::error::ServerError;
use crate::grpc::GrpcApi;
use crate::keys::KeyStore;
use crate::service::Api;

/// An API process whose listeners are bound but not yet serving.
pub struct BoundApi {
    config: ApiConfig,
    http: TcpListener,
    grpc: TcpListener,
    /// TLS for each listener (HTTP/1.1 and h2 differ in ALPN only).
    tls: Option<(Arc<PublicTls>, Arc<PublicTls>)>,
    api: Arc<Api>,
}

/// Validates the configuration, reads the key file and binds both listeners.
pub async fn bind(config: ApiConfig) -> Result<BoundApi, ServerError> {
    config.validate()?;
    let keys = KeyStore::load(&config.keys_file, config.limits.key_rate)?;
    if keys.is_empty() {
        tracing::warn!(file = %config.keys_file.display(), "the API key file holds no key: every request will be refused");
    }
    let tls = match &config.tls {
        Some(files) => Some((
            Arc::new(PublicTls::load(&files.cert, &files.key, &[b"http/1.1"])?),
            Arc::new(PublicTls::load(&files.cert, &files.key, &[b"h2"])?),
        )),
        None => None,
    };
    let http = TcpListener::bind(config.listen).await?;
    let grpc = TcpListener::bind(config.grpc_listen).await?;
    let api = Arc::new(Api::new(keys, config.limits.clone()));
    Ok(BoundApi {
        config,
        http,
        grpc,
        tls,
        api,
    })
}

impl BoundApi {
    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener has an address")
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound listener has an address")
    }

    /// Serves until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) -> Result<(), ServerError> {
        reload_keys_on_sighup(self.api.clone(), &self.config, token.clone())?;
        let http_addr = self.http_addr();
        let grpc_addr = self.grpc_addr();
        let tls = self.tls.is_some();
        tracing::info!(kind = %"http", addr = %http_addr, tls, keys = self.api.keys().len(), "listening");
        tracing::info!(kind = %"grpc", addr = %grpc_addr, tls, "listening");

        let cluster = ClusterConfig::new(self.config.registries.clone(), self.config.credentials.clone(), "api");
        tokio::spawn(join_cluster(self.api.clone(), cluster, token.clone()));

        let (http_tls, grpc_tls) = match self.tls {
            Some((http_tls, grpc_tls)) => {
                http_tls.clone().keep_fresh(token.clone());
                grpc_tls.clone().keep_fresh(token.clone());
                (Some(http_tls.acceptor()), Some(grpc_tls.acceptor()))
            }
            None => (None, None),
        };
        let grpc_router = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(
                ServerApiServer::new(GrpcApi::new(self.api.clone()))
                    .max_decoding_message_size(self.config.limits.max_body_bytes)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            );
        let shutdown = token.clone().cancelled_owned();
        let grpc = async move {
            match grpc_tls {
                Some(acceptor) => {
                    let incoming = gatehouse_core::tls::incoming(self.grpc, acceptor, "api");
                    grpc_router.serve_with_incoming_shutdown(incoming, shutdown).await
                }
                None => {
                    let incoming = TcpIncoming::from(self.grpc).with_nodelay(Some(true));
                    grpc_router.serve_with_incoming_shutdown(incoming, shutdown).await
                }
            }
        };
        let http = crate::http::serve(self.http, http_tls, self.api.clone(), token.clone());
        let (grpc, ()) = tokio::join!(
            async {
                match with_grace(grpc, &token, GRACE, "api grpc").await {
                    Some(result) => result,
                    None => Ok(()),
                }
            },
            async {
                with_grace(http, &token, GRACE, "api http").await;
            }
        );
        grpc?;
        tracing::info!("api stopped");
        Ok(())
    }
}

/// Joins the cluster, retrying until it succeeds or the process stops. A failed attempt's
/// connections are torn down with its own token.
async fn join_cluster(api: Arc<Api>, config: ClusterConfig, token: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let attempt = token.child_token();
        tokio::select! {
            _ = token.cancelled() => return,
            result = Cluster::connect(config.clone(), attempt.clone()) => match result {
                Ok(cluster) => {
                    tracing::info!(member = %cluster.member_id(), "joined the cluster; serving operations");
                    api.connected(cluster);
                    return;
                }
                Err(error) => {
                    attempt.cancel();
                    tracing::warn!(%error, "cannot join the cluster yet; retrying");
                }
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Re-reads the key file on every SIGHUP; a broken file is logged and the keys in force stay.
/// The handler is installed before the process says it is listening, so a SIGHUP can never
/// kill it (the default action).
fn reload_keys_on_sighup(api: Arc<Api>, config: &ApiConfig, token: CancellationToken) -> Result<(), ServerError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup())?;
        let file = config.keys_file.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    received = hangups.recv() => if received.is_none() { return },
                }
                match api.keys().reload() {
                    Ok(count) => tracing::info!(file = %file.display(), keys = count, "api keys reloaded"),
                    Err(error) => tracing::error!(%error, "api keys not reloaded; the previous keys stay in force"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (api, config, token);
    Ok(())
}
