//! [`WorkerRuntime`]: runs a [`Worker`] against the cluster.
//!
//! Handlers run on the task of the gateway link that delivered the event (see `link`): one
//! handler at a time per client, in order, while other clients' handlers proceed concurrently on
//! the same task. No task is spawned per client or per event, so an event costs no cross-thread
//! wake-up. An event is acknowledged to its gateway after its handler returned.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{ClientId, ClusterSecret};
use gatehouse_proto::v1::{Event, EventAck, MemberKind, event};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterConfig};
use crate::frame::Frame;
use crate::handlers::HandlerFuture;
use crate::link::{EventSink, GatewayLink};
use crate::worker::{CloseInfo, Context, Handshake, Worker};

/// How a worker joins the cluster.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Cluster connection settings (registries, secret, name, timeouts).
    pub cluster: ClusterConfig,
}

impl WorkerConfig {
    /// Returns a configuration with production defaults.
    pub fn new(registries: Vec<String>, secret: ClusterSecret, app: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            cluster: ClusterConfig::new(registries, secret, app),
        }
    }
}

/// Runs a [`Worker`]: attaches to the registries, links to every gateway, and dispatches events.
pub struct WorkerRuntime<W: Worker> {
    config: WorkerConfig,
    worker: Arc<W>,
}

impl<W: Worker> WorkerRuntime<W> {
    /// Prepares a runtime for `worker`.
    pub fn new(config: WorkerConfig, worker: W) -> WorkerRuntime<W> {
        WorkerRuntime {
            config,
            worker: Arc::new(worker),
        }
    }

    /// Runs until `token` is cancelled. Returns an error only for an invalid configuration.
    pub async fn run(self, token: CancellationToken) -> Result<(), crate::ApiError> {
        let dispatcher = Arc::new(Dispatcher {
            worker: self.worker.clone(),
            cluster: std::sync::OnceLock::new(),
        });
        let cluster = Cluster::start(
            self.config.cluster.clone(),
            MemberKind::Worker,
            Some(dispatcher.clone()),
            token.clone(),
        )?;
        let _ = dispatcher.cluster.set(cluster.clone());
        tracing::info!(app = %self.config.cluster.name, member = %cluster.member_id(), "worker started");
        if tokio::time::timeout(Duration::from_secs(30), cluster.wait_ready())
            .await
            .is_err()
        {
            tracing::warn!("cluster not ready yet; handlers run anyway");
        }
        self.worker.on_start(&cluster).await;
        token.cancelled().await;
        self.worker.on_stop(&cluster).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

struct Dispatcher<W: Worker> {
    worker: Arc<W>,
    cluster: std::sync::OnceLock<Cluster>,
}

impl<W: Worker> EventSink for Dispatcher<W> {
    fn handle(&self, link: &Arc<GatewayLink>, event: Event) -> HandlerFuture {
        let conn = event.conn;
        let ack = EventAck {
            conn,
            seq: event.seq,
            reject: None,
        };
        let Some(cluster) = self.cluster.get().cloned() else {
            // Cannot happen: the cluster is set as soon as `Cluster::start` returns, and links
            // (hence events) only appear after a registry answered. Acknowledging nothing
            // (seq 0) keeps the event pending at the gateway rather than losing it.
            return Box::pin(std::future::ready((conn, EventAck { seq: 0, ..ack })));
        };
        let client = ClientId::new(link.gateway, event.conn);
        let uid = (!event.uid.is_empty()).then(|| Arc::from(String::from_utf8_lossy(&event.uid).as_ref()));
        let ctx = Context::new(client, uid, cluster);
        let worker = self.worker.clone();
        // One future type per kind of event, each boxed on its own, so the future allocated for
        // every message holds `on_message`'s state only (a handshake that touches a database can
        // be kilobytes), and small enough for the allocator's per-thread cache.
        match event.kind {
            Some(event::Kind::Message(payload)) => Box::pin(async move {
                let result = worker.on_message(&ctx, Frame::from_payload(payload)).await;
                log_failure(client, "message", result);
                (conn, ack)
            }),
            Some(event::Kind::Open(open)) => Box::pin(async move {
                let reject = open_hooks(&*worker, &ctx, client, open).await;
                (conn, EventAck { reject, ..ack })
            }),
            Some(event::Kind::Closed(close)) => Box::pin(async move {
                let info = CloseInfo {
                    code: u16::try_from(close.code).unwrap_or(1006),
                    reason: close.reason,
                };
                log_failure(client, "close", worker.on_close(&ctx, &info).await);
                (conn, ack)
            }),
            None => Box::pin(std::future::ready((conn, ack))),
        }
    }
}

/// Runs `on_handshake` and, when it admits the client, `on_connect`; returns the refusal.
async fn open_hooks<W: Worker>(
    worker: &W,
    ctx: &Context,
    client: ClientId,
    open: gatehouse_proto::v1::Open,
) -> Option<gatehouse_proto::v1::Reject> {
    let handshake = Handshake::from_open(open);
    match worker.on_handshake(ctx, &handshake).await {
        Ok(()) => {
            log_failure(client, "connect", worker.on_connect(ctx).await);
            None
        }
        Err(refusal) => Some(gatehouse_proto::v1::Reject {
            status: u32::from(refusal.status),
            reason: refusal.reason,
        }),
    }
}

fn log_failure(client: ClientId, hook: &'static str, result: crate::HandlerResult) {
    if let Err(error) = result {
        tracing::warn!(%client, hook, %error, "handler failed");
    }
}
