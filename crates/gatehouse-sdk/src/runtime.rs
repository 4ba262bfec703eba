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
use crate::link::{EventSink, GatewayLink, HandlerFuture};
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
        let worker = self.worker.clone();
        let cluster = self.cluster.get().cloned();
        let client = ClientId::new(link.gateway, event.conn);
        Box::pin(async move {
            let conn = event.conn;
            let Some(cluster) = cluster else {
                // Cannot happen: the cluster is set as soon as `Cluster::start` returns, and links
                // (hence events) only appear after a registry answered. Acknowledging nothing
                // (seq 0) keeps the event pending at the gateway rather than losing it.
                return (
                    conn,
                    EventAck {
                        conn,
                        seq: 0,
                        reject: None,
                    },
                );
            };
            let ack = handle(&*worker, cluster, client, event).await;
            (conn, ack)
        })
    }
}

/// Runs the hook for one event and returns its acknowledgement.
async fn handle<W: Worker>(worker: &W, cluster: Cluster, client: ClientId, event: Event) -> EventAck {
    let uid = (!event.uid.is_empty()).then(|| Arc::from(String::from_utf8_lossy(&event.uid).as_ref()));
    let ctx = Context::new(client, uid, cluster);
    let mut ack = EventAck {
        conn: event.conn,
        seq: event.seq,
        reject: None,
    };
    match event.kind {
        // Connects and closes happen once per connection; their hooks are boxed on their own so
        // that the future allocated for every event is sized for `on_message` alone (a
        // handshake that touches a database can be kilobytes of state).
        Some(event::Kind::Open(open)) => {
            ack.reject = Box::pin(open_hooks(worker, &ctx, client, open)).await;
        }
        Some(event::Kind::Message(payload)) => {
            log_failure(
                client,
                "message",
                worker.on_message(&ctx, Frame::from_payload(payload)).await,
            );
        }
        Some(event::Kind::Closed(close)) => {
            let info = CloseInfo {
                code: u16::try_from(close.code).unwrap_or(1006),
                reason: close.reason,
            };
            log_failure(client, "close", Box::pin(worker.on_close(&ctx, &info)).await);
        }
        None => {}
    }
    ack
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
