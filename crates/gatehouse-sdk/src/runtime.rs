//! [`WorkerRuntime`]: runs a [`Worker`] against the cluster.
//!
//! Handlers run on the task of the gateway link that delivered the event (see `link`): one
//! handler at a time per client, in order, while other clients' handlers proceed concurrently on
//! the same task. No task is spawned per client or per event, so an event costs no cross-thread
//! wake-up. An event is acknowledged to its gateway after its handler returned, and after every
//! earlier event of its client was (a handler may let the client's next events start before it
//! ends: [`Context::release_order`]).

use std::sync::Arc;
use std::time::Duration;

use std::sync::OnceLock;

use gatehouse_core::admin::metrics::Histogram;
use gatehouse_core::admin::{AdminHooks, Readiness};
use gatehouse_core::{ClientId, Credentials};
use gatehouse_proto::ErrorCode;
use gatehouse_proto::v1::{Event, EventAck, EventNack, MemberKind, event};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterConfig};
use crate::frame::Frame;
use crate::handlers::{HandlerFuture, Outcome, Ticket};
use crate::link::{EventSink, GatewayLink};
use crate::worker::{CloseInfo, Context, Handshake, Order, Worker};

/// How a worker joins the cluster and runs its handlers.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Cluster connection settings (registries, credentials, the app name, timeouts).
    pub cluster: ClusterConfig,
    /// On stop, how long the worker waits for the handlers it has (and the events already on
    /// their way to it) to finish before it leaves anyway; what is left unanswered then goes
    /// to another worker.
    pub drain_timeout: Duration,
    /// Where handlers run. `false` (the default): on the task of the gateway link that
    /// delivered the event, polled together: no task and no cross-thread wake-up per event,
    /// the fastest for handlers that mostly wait (sends, database calls), but a handler that
    /// computes for long holds up every client of that gateway on this worker, and a worker
    /// uses about one core per gateway.
    ///
    /// `true`: every handler is a task of its own on the multi-threaded runtime, so CPU-heavy
    /// handlers of different clients run in parallel on every core and a slow one holds up only
    /// its own client. The guarantees are the same: one handler at a time per client, in
    /// order, acknowledged after it returned. It costs a task (an allocation and a wake-up) per
    /// event. A handler that blocks a thread for long (synchronous I/O, seconds of
    /// computation) should still use `tokio::task::spawn_blocking`.
    pub spawn_handlers: bool,
}

impl WorkerConfig {
    /// Returns a configuration with production defaults for a worker of `app` (the name
    /// gateways match against a client's app, see [`ClusterConfig::name`]).
    pub fn new(registries: Vec<String>, credentials: impl Into<Credentials>, app: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            cluster: ClusterConfig::new(registries, credentials, app),
            drain_timeout: Duration::from_secs(30),
            spawn_handlers: false,
        }
    }

    /// A configuration for a worker of `app` from the environment, as the `gatehouse` binary
    /// reads it: `GATEHOUSE_REGISTRY` (comma-separated registry addresses, default
    /// `127.0.0.1:7000`) and `GATEHOUSE_CLUSTER_SECRET`.
    ///
    /// # Errors
    /// A missing or too short secret (`bad_request`).
    pub fn from_env(app: impl Into<String>) -> Result<WorkerConfig, crate::ApiError> {
        let registries = std::env::var("GATEHOUSE_REGISTRY").unwrap_or_else(|_| "127.0.0.1:7000".into());
        let secret = std::env::var("GATEHOUSE_CLUSTER_SECRET")
            .map_err(|_| crate::ApiError::bad_request("GATEHOUSE_CLUSTER_SECRET is not set"))?;
        let secret = gatehouse_core::ClusterSecret::new(&secret)
            .map_err(|e| crate::ApiError::bad_request(format!("GATEHOUSE_CLUSTER_SECRET: {e}")))?;
        let registries = registries
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(WorkerConfig::new(registries, secret, app))
    }
}

/// Runs a [`Worker`]: attaches to the registries, links to every gateway, and dispatches events.
pub struct WorkerRuntime<W: Worker> {
    config: WorkerConfig,
    worker: Arc<W>,
    /// The cluster handle once running (for readiness).
    cluster: Arc<OnceLock<Cluster>>,
    stats: Arc<WorkerStats>,
}

gatehouse_core::counters! {
    /// What a worker counts, exported at the admin listener's `/metrics`.
    pub(crate) struct WorkerStats {
        events => "gatehouse_worker_events_total", "client events handled (handshakes, messages, closes)";
        handler_errors => "gatehouse_worker_handler_errors_total", "handlers that returned an error (logged with the client id)";
        events_given_back => "gatehouse_worker_events_given_back_total", "events given back to their gateway after a transient cluster failure (handled again)";
        events_redelivered => "gatehouse_worker_events_redelivered_total", "events a gateway had sent to a worker before (it died with them unacknowledged, or gave them back): their handlers may run twice";
    }
}

impl<W: Worker> WorkerRuntime<W> {
    /// Prepares a runtime for `worker`.
    pub fn new(config: WorkerConfig, worker: W) -> WorkerRuntime<W> {
        WorkerRuntime {
            config,
            worker: Arc::new(worker),
            cluster: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// What this worker serves on an admin listener: ready while every known gateway is
    /// linked (it then takes events; whether its routing table is trusted yet is reported).
    pub fn admin_hooks(&self) -> AdminHooks {
        let cluster = self.cluster.clone();
        let stats = self.stats.clone();
        AdminHooks {
            role: "worker",
            ready: Arc::new(move || {
                let (ready, gateways, trusted) = match cluster.get() {
                    Some(cluster) => (
                        cluster.is_linked(),
                        cluster.gateway_count(),
                        cluster.is_routing_trusted(),
                    ),
                    None => (false, 0, false),
                };
                Readiness {
                    ready,
                    detail: format!("{{\"gateways\":{gateways},\"routing_trusted\":{trusted}}}"),
                }
            }),
            scrape: Some(Arc::new(move || stats.publish())),
        }
    }

    /// Runs until the process gets SIGINT (Ctrl-C) or SIGTERM (systemd, Kubernetes, Docker),
    /// then stops gracefully like [`WorkerRuntime::run`] (drain, `on_stop`, leave). Installs a
    /// plain-text log subscriber on stderr (`RUST_LOG`, default `info`) unless the application
    /// installed one.
    ///
    /// # Errors
    /// An invalid configuration (no registry, too many), or a signal handler that cannot be
    /// installed (`internal`).
    pub async fn run_until_signal(self) -> Result<(), crate::ApiError> {
        let token = CancellationToken::new();
        let stop = token.clone();
        let mut terminate = terminate_signal()?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
                _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            }
            stop.cancel();
        });
        self.run(token).await
    }

    /// Runs until `token` is cancelled, then drains: the gateways give this worker no new
    /// client and move its clients elsewhere once it answered for their events; the handlers
    /// it has finish (with the cluster still fully usable to them), `on_stop` runs, and only
    /// then do the links and the registry sessions end. Returns an error only for an invalid
    /// configuration.
    ///
    /// Installs a plain-text log subscriber on stderr (`RUST_LOG`, default `info`) unless the
    /// application installed one, so handler errors are never silent.
    pub async fn run(self, token: CancellationToken) -> Result<(), crate::ApiError> {
        if !tracing::dispatcher::has_been_set() {
            gatehouse_core::telemetry::init(gatehouse_core::telemetry::LogFormat::Plain);
        }
        let dispatcher = Arc::new(Dispatcher {
            spawn: self.config.spawn_handlers,
            worker: self.worker.clone(),
            cluster: std::sync::OnceLock::new(),
            stats: self.stats.clone(),
            handler_seconds: gatehouse_core::admin::metrics::histogram!("gatehouse_worker_handler_seconds"),
            seen: std::sync::atomic::AtomicU64::new(0),
        });
        // The cluster outlives `token`: handlers still running when the worker is told to stop
        // need their links until they finish.
        let links = CancellationToken::new();
        let cluster = Cluster::start(
            self.config.cluster.clone(),
            MemberKind::Worker,
            Some(dispatcher.clone()),
            links.clone(),
        )?;
        let _ = dispatcher.cluster.set(cluster.clone());
        let _ = self.cluster.set(cluster.clone());
        tracing::info!(app = %self.config.cluster.name, member = %cluster.member_id(), "worker started");
        // A stop while the cluster is still out of reach (a wrong address, a refused
        // certificate) is honoured at once: `on_start` never ran, so neither does `on_stop`.
        let started = tokio::select! {
            _ = token.cancelled() => false,
            ready = tokio::time::timeout(Duration::from_secs(30), cluster.wait_ready()) => {
                if ready.is_err() {
                    tracing::warn!("cluster not ready yet; handlers run anyway");
                }
                true
            }
        };
        if started {
            self.worker.on_start(&cluster).await;
        }
        token.cancelled().await;
        tracing::info!("worker draining: no new clients; finishing the events it has");
        cluster.begin_drain();
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        let drained = tokio::time::timeout_at(deadline, cluster.drained()).await.is_ok();
        // Events a gateway sent before it learnt of the drain may still arrive: they are given
        // back from now on, and the handlers that started meanwhile end before any link closes.
        let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !(cluster.stop_handling(rest).await && drained) {
            tracing::warn!(
                timeout_ms = self.config.drain_timeout.as_millis() as u64,
                "handlers still running at the end of the drain; their events go to other workers"
            );
        }
        if started {
            self.worker.on_stop(&cluster).await;
        }
        cluster.finish_links().await;
        links.cancel();
        tracing::info!("worker stopped");
        Ok(())
    }
}

struct Dispatcher<W: Worker> {
    worker: Arc<W>,
    /// Every handler runs as a task of its own (see [`WorkerConfig::spawn_handlers`]).
    spawn: bool,
    cluster: std::sync::OnceLock<Cluster>,
    stats: Arc<WorkerStats>,
    /// Time from an event's arrival to its handler's end, for one event in
    /// [`LATENCY_SAMPLE`]: latency percentiles need a sample, not every event, and recording
    /// each would cost every event.
    handler_seconds: Histogram,
    /// Events seen, for the sampling.
    seen: std::sync::atomic::AtomicU64,
}

/// One event in this many has its handler's latency recorded.
const LATENCY_SAMPLE: u64 = 16;

impl<W: Worker> EventSink for Dispatcher<W> {
    fn handle(&self, link: &Arc<GatewayLink>, event: Event, ticket: Ticket) -> HandlerFuture {
        let handler = self.handler(link, event, ticket);
        if !self.spawn {
            return handler;
        }
        // A panic stays the handler's own, as on the link task: it propagates to the link.
        Box::pin(async move {
            match tokio::spawn(handler).await {
                Ok(done) => done,
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        })
    }
}

impl<W: Worker> Dispatcher<W> {
    /// The future that runs the handler of `event` and says what became of it.
    fn handler(&self, link: &Arc<GatewayLink>, mut event: Event, ticket: Ticket) -> HandlerFuture {
        link.sessions.refresh(&mut event);
        if event.redelivered {
            WorkerStats::inc(&self.stats.events_redelivered);
        }
        let conn = event.conn;
        let seq = event.seq;
        let ack = EventAck {
            conn,
            seq,
            reject: None,
        };
        let Some(cluster) = self.cluster.get().cloned() else {
            // Cannot happen: the cluster is set as soon as `Cluster::start` returns, and links
            // (hence events) only appear after a registry answered. Acknowledging nothing
            // (seq 0) keeps the event pending at the gateway rather than losing it.
            return Box::pin(std::future::ready((conn, Outcome::Ack(EventAck { seq: 0, ..ack }))));
        };
        let client = ClientId::new(link.gateway, event.conn);
        let uid = (!event.uid.is_empty()).then(|| Arc::from(String::from_utf8_lossy(&event.uid).as_ref()));
        let order = Order::new(link.clone(), conn, ticket);
        let ctx = Context::new(client, uid, std::mem::take(&mut event.session), cluster, order);
        let worker = self.worker.clone();
        let sampled = self
            .seen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(LATENCY_SAMPLE);
        let done = Done {
            timing: sampled.then(|| (tokio::time::Instant::now(), self.handler_seconds.clone())),
            stats: self.stats.clone(),
            client,
            ack,
        };
        // One future type per kind of event, each boxed on its own, so the future allocated for
        // every message holds `on_message`'s state only (a handshake that touches a database can
        // be kilobytes), and small enough for the allocator's per-thread cache.
        match event.kind {
            Some(event::Kind::Message(payload)) => Box::pin(async move {
                let result = worker.on_message(&ctx, Frame::from_payload(payload)).await;
                (conn, done.finish("message", result))
            }),
            Some(event::Kind::Open(open)) => Box::pin(async move {
                let (reject, result) = open_hooks(&*worker, &ctx, open).await;
                (conn, done.finish_handshake(reject, result))
            }),
            Some(event::Kind::Closed(close)) => Box::pin(async move {
                let info = CloseInfo {
                    code: u16::try_from(close.code).unwrap_or(1006),
                    reason: close.reason,
                    groups: close.groups,
                };
                let result = worker.on_close(&ctx, &info).await;
                (conn, done.finish("close", result))
            }),
            None => Box::pin(std::future::ready((conn, Outcome::Ack(done.ack)))),
        }
    }
}

/// What is recorded when a handler ends, and what it answers.
struct Done {
    /// When the handler started and where its latency goes, for a sampled event.
    timing: Option<(tokio::time::Instant, Histogram)>,
    stats: Arc<WorkerStats>,
    client: ClientId,
    ack: EventAck,
}

impl Done {
    /// Records the handler's end; a transient cluster failure (`unavailable`, `timeout`) gives
    /// the event back, so that it is handled again (here after a back-off, or by another
    /// worker), anything else acknowledges it.
    fn finish(self, hook: &'static str, result: crate::HandlerResult) -> Outcome {
        if self.note(hook, &result) {
            WorkerStats::inc(&self.stats.events_given_back);
            return Outcome::Nack(EventNack {
                conn: self.ack.conn,
                seq: self.ack.seq,
            });
        }
        Outcome::Ack(self.ack)
    }

    /// Records a handshake's end. A handshake is answered either way (its verdict travels in
    /// the acknowledgement): a failure of `on_connect` after it was accepted is only logged.
    fn finish_handshake(self, reject: Option<gatehouse_proto::v1::Reject>, result: crate::HandlerResult) -> Outcome {
        self.note("connect", &result);
        Outcome::Ack(EventAck { reject, ..self.ack })
    }

    /// Measures and counts the handler, logs a failure; returns whether it failed on a
    /// transient cluster error.
    fn note(&self, hook: &'static str, result: &crate::HandlerResult) -> bool {
        if let Some((started, seconds)) = &self.timing {
            seconds.record(started.elapsed());
        }
        WorkerStats::inc(&self.stats.events);
        let Err(error) = result else {
            return false;
        };
        WorkerStats::inc(&self.stats.handler_errors);
        let transient = is_transient(&**error);
        if transient {
            tracing::warn!(client = %self.client, hook, %error, "handler failed on a transient cluster error; the event goes back to its gateway");
        } else {
            tracing::warn!(client = %self.client, hook, %error, "handler failed");
        }
        transient
    }
}

/// SIGTERM, where there is such a thing; elsewhere a signal that never comes.
#[cfg(unix)]
fn terminate_signal() -> Result<tokio::signal::unix::Signal, crate::ApiError> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| crate::ApiError::new(ErrorCode::Internal, format!("installing a SIGTERM handler: {e}")))
}

#[cfg(not(unix))]
fn terminate_signal() -> Result<NeverSignal, crate::ApiError> {
    Ok(NeverSignal)
}

/// A signal that never comes (no SIGTERM on this platform).
#[cfg(not(unix))]
struct NeverSignal;

#[cfg(not(unix))]
impl NeverSignal {
    async fn recv(&mut self) -> Option<()> {
        std::future::pending().await
    }
}

/// Whether a handler's error is (or was caused by) a transient cluster failure.
fn is_transient(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(api) = error.downcast_ref::<crate::ApiError>() {
            return matches!(api.code, ErrorCode::Unavailable | ErrorCode::Timeout);
        }
        current = error.source();
    }
    false
}

/// Runs `on_handshake` and, when it admits the client, `on_connect`; returns the refusal and
/// `on_connect`'s result.
async fn open_hooks<W: Worker>(
    worker: &W,
    ctx: &Context,
    open: gatehouse_proto::v1::Open,
) -> (Option<gatehouse_proto::v1::Reject>, crate::HandlerResult) {
    let handshake = Handshake::from_open(open);
    match worker.on_handshake(ctx, &handshake).await {
        Ok(()) => (None, worker.on_connect(ctx).await),
        Err(refusal) => (
            Some(gatehouse_proto::v1::Reject {
                status: u32::from(refusal.status),
                reason: refusal.reason,
            }),
            Ok(()),
        ),
    }
}
