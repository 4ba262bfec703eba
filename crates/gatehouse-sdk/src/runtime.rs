//! [`WorkerRuntime`]: runs a [`Worker`] against the cluster.
//!
//! Each client gets an actor (a task and a queue) on first event, so its handlers run one at a
//! time in order while other clients proceed. An event is acknowledged to its gateway after its
//! handler returned; the actor ends after the close event.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use gatehouse_core::{ClientId, ClusterSecret};
use gatehouse_proto::v1::{Event, EventAck, MemberKind, event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cluster::{Cluster, ClusterConfig};
use crate::frame::Frame;
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
            actors: Arc::new(DashMap::new()),
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

type ActorKey = (u64, u64);
type ActorQueue = mpsc::UnboundedSender<(Arc<GatewayLink>, Event)>;

struct Dispatcher<W: Worker> {
    worker: Arc<W>,
    /// Per client: the queue of its actor. Unbounded by type, bounded in practice by the
    /// gateway's window of unacknowledged events per client.
    actors: Arc<DashMap<ActorKey, ActorQueue>>,
    cluster: std::sync::OnceLock<Cluster>,
}

impl<W: Worker> EventSink for Dispatcher<W> {
    fn events(&self, link: &Arc<GatewayLink>, events: Vec<Event>) {
        let Some(cluster) = self.cluster.get() else {
            return; // not started yet: unacknowledged events are re-sent later
        };
        for event in events {
            let key = (link.gateway.0, event.conn);
            let mut item = (link.clone(), event);
            if let Some(queue) = self.actors.get(&key) {
                match queue.send(item) {
                    Ok(()) => continue,
                    Err(mpsc::error::SendError(back)) => item = back,
                }
            }
            // No actor, or it just finished: start one.
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(item);
            self.actors.insert(key, tx.clone());
            let client = ClientId::new(link.gateway, key.1);
            let span = tracing::info_span!("client", %client);
            let actor = Actor {
                worker: self.worker.clone(),
                cluster: cluster.clone(),
                client,
                key,
                queue: tx,
                actors: self.actors.clone(),
            };
            tokio::spawn(actor.run(rx).instrument(span));
        }
    }
}

struct Actor<W: Worker> {
    worker: Arc<W>,
    cluster: Cluster,
    client: ClientId,
    key: ActorKey,
    queue: ActorQueue,
    actors: Arc<DashMap<ActorKey, ActorQueue>>,
}

impl<W: Worker> Actor<W> {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<(Arc<GatewayLink>, Event)>) {
        let mut retiring = false;
        while let Some((link, event)) = rx.recv().await {
            let (ack, closed) = self.handle(event).await;
            let ends = closed || ack.reject.is_some();
            link.ack(ack).await;
            if ends && !retiring {
                // Deregister first, then drain: anything queued meanwhile is still handled, and
                // later events start a fresh actor.
                retiring = true;
                self.actors
                    .remove_if(&self.key, |_, queue| queue.same_channel(&self.queue));
                rx.close();
            }
        }
    }

    /// Runs the hook for one event; returns its acknowledgement and whether it was the close.
    async fn handle(&self, event: Event) -> (EventAck, bool) {
        let uid = (!event.uid.is_empty()).then(|| Arc::from(String::from_utf8_lossy(&event.uid).as_ref()));
        let ctx = Context::new(self.client, uid, self.cluster.clone());
        let mut ack = EventAck {
            conn: event.conn,
            seq: event.seq,
            reject: None,
        };
        let mut closed = false;
        match event.kind {
            Some(event::Kind::Open(open)) => {
                let handshake = Handshake::from_open(open);
                match self.worker.on_handshake(&ctx, &handshake).await {
                    Ok(()) => log_failure("connect", self.worker.on_connect(&ctx).await),
                    Err(refusal) => {
                        ack.reject = Some(gatehouse_proto::v1::Reject {
                            status: u32::from(refusal.status),
                            reason: refusal.reason,
                        });
                    }
                }
            }
            Some(event::Kind::Message(payload)) => {
                log_failure(
                    "message",
                    self.worker.on_message(&ctx, Frame::from_payload(payload)).await,
                );
            }
            Some(event::Kind::Closed(close)) => {
                let info = CloseInfo {
                    code: u16::try_from(close.code).unwrap_or(1006),
                    reason: close.reason,
                };
                log_failure("close", self.worker.on_close(&ctx, &info).await);
                closed = true;
            }
            None => {}
        }
        (ack, closed)
    }
}

fn log_failure(hook: &'static str, result: crate::HandlerResult) {
    if let Err(error) = result {
        tracing::warn!(hook, %error, "handler failed");
    }
}
