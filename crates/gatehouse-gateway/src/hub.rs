//! [`Hub`]: the state of one gateway process, and the life cycle of a connection.
//!
//! The hub owns the parts (connection table, uid/group index, event router, route sync,
//! admission, counters) and ties them together where one step touches several: opening a
//! connection, retiring it, acknowledging its events, attaching and detaching worker links.
//! Each part keeps its own state private; the hub only calls their methods.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ws::Message;
use gatehouse_core::admin::metrics::{Histogram, describe_histogram, histogram};
use gatehouse_core::lease::LeaseClock;
use gatehouse_core::{ClientId, NodeId};
use gatehouse_proto::v1::{Closed, Open, Reject, event};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::config::GatewayConfig;
use crate::conn::Conn;
use crate::events::{EventRouter, Windows};
use crate::index::RouteIndex;
use crate::queue::{Outbound, PushError};
use crate::routes::RouteSync;
use crate::stats::Stats;
use crate::table::ConnTable;
use crate::workers::{MEMBERSHIP_GRACE, WorkerLink};

/// The gateway's latency histograms, sampled so that recording them stays off the cost of most
/// messages. Handles are made once: recording is an atomic add.
pub(crate) struct Latency {
    /// Client frame read → its worker acknowledged it (forwarding, the handler, the ack back):
    /// one event in 16.
    pub event_ack: Histogram,
    /// Frame queued for a client (a worker's delivery) → written to its socket: the oldest frame
    /// of one burst in 16.
    pub delivery: Histogram,
}

impl Latency {
    fn new() -> Latency {
        describe_histogram!(
            "gatehouse_gateway_event_ack_seconds",
            "client frame read to its acknowledgement by the worker that handled it (one event in 16)"
        );
        describe_histogram!(
            "gatehouse_gateway_delivery_seconds",
            "frame queued for a client to written to its socket (the oldest frame of one burst in 16)"
        );
        Latency {
            event_ack: histogram!("gatehouse_gateway_event_ack_seconds"),
            delivery: histogram!("gatehouse_gateway_delivery_seconds"),
        }
    }
}

/// How a client's handshake ended (see [`Hub::handshake`]).
pub(crate) enum Handshake {
    /// A worker accepted it: the connection is open and ready to be served.
    Accepted(Arc<Conn>),
    /// A worker refused it with this status and reason; the connection is gone.
    Refused(Reject),
    /// No worker answered in time; the connection is gone.
    Unanswered,
}

/// The state of one gateway process.
pub(crate) struct Hub {
    /// This process's id: the first half of every client id it hands out.
    id: NodeId,
    /// The validated configuration (limits every part enforces).
    config: GatewayConfig,
    /// Every connection, by number.
    conns: ConnTable,
    /// Which connections hold which uid and group (for fan-out and queries).
    index: RouteIndex,
    /// Client events on their way to workers.
    events: EventRouter,
    /// The keys announced to the registries and their confirmations.
    routes: Arc<RouteSync>,
    /// Caps on connections and handshakes.
    admission: Admission,
    /// Counters for `/metrics`.
    stats: Stats,
    /// Set when the gateway starts draining: it is unready and refuses handshakes.
    draining: AtomicBool,
    /// Latency histograms (sampled) on the message path.
    latency: Latency,
    /// This gateway's lease as proven by registry acks: when no registry can still list it,
    /// its clients may be missing messages and it fences itself (see `fence`).
    lease: Arc<LeaseClock>,
    /// The tasks of upgraded WebSockets (hyper spawns them outside the listener's tracker): a
    /// stopping gateway waits for them so that the close handshakes it began are finished
    /// before the process exits, instead of the last clients seeing a reset (1006).
    sockets: TaskTracker,
}

impl Hub {
    pub(crate) fn new(id: NodeId, config: GatewayConfig, routes: Arc<RouteSync>) -> Hub {
        let windows = Windows {
            conn_events: config.max_unacked_events,
            conn_bytes: config.max_unacked_bytes,
            gateway_bytes: config.max_gateway_unacked_bytes,
        };
        let latency = Latency::new();
        Hub {
            id,
            conns: ConnTable::new(config.send_queue),
            index: RouteIndex::new(routes.clone(), config.max_groups_per_conn),
            events: EventRouter::new(id, windows, latency.event_ack.clone()),
            latency,
            admission: Admission::new(
                config.max_connections + config.max_pending_handshakes,
                config.max_connections_per_ip,
                config.max_pending_handshakes,
            ),
            routes,
            stats: Stats::default(),
            draining: AtomicBool::new(false),
            lease: Arc::new(LeaseClock::new(config.registries.len())),
            sockets: TaskTracker::new(),
            config,
        }
    }

    /// The tasks of upgraded WebSockets (see the field).
    pub(crate) fn sockets(&self) -> &TaskTracker {
        &self.sockets
    }

    /// This gateway's id.
    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    /// The client id of one of this gateway's connections.
    pub(crate) fn client_id(&self, conn: &Conn) -> ClientId {
        ClientId::new(self.id, conn.id())
    }

    pub(crate) fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub(crate) fn conns(&self) -> &ConnTable {
        &self.conns
    }

    pub(crate) fn index(&self) -> &RouteIndex {
        &self.index
    }

    pub(crate) fn events(&self) -> &EventRouter {
        &self.events
    }

    pub(crate) fn routes(&self) -> &Arc<RouteSync> {
        &self.routes
    }

    pub(crate) fn admission(&self) -> &Admission {
        &self.admission
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the gateway is draining (shutting down).
    pub(crate) fn is_stopping(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts the drain: from now on the gateway is unready and refuses handshakes.
    pub(crate) fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The latency histograms.
    pub(crate) fn latency(&self) -> &Latency {
        &self.latency
    }

    /// The lease clock the registry sessions renew.
    pub(crate) fn lease(&self) -> &Arc<LeaseClock> {
        &self.lease
    }

    /// Whether the gateway is outside every lease right now (paused past it, or cut off from
    /// every registry): it is unready and refuses handshakes until a registry renews it, since
    /// workers may no longer send to it.
    pub(crate) fn is_fenced(&self) -> bool {
        self.lease.is_lapsed()
    }

    /// The lease lapsed: workers may have dropped this gateway and sent past its clients. Every
    /// client is closed with 1012 so that it reconnects (here once re-admitted, or elsewhere)
    /// and catches up from the store; events already read stay with their workers' acks.
    pub(crate) fn fence(&self) {
        Stats::inc(&self.stats.fenced);
        let clients = self.conns.snapshot();
        tracing::warn!(
            clients = clients.len(),
            "lease lapsed: no registry can still count this gateway as a member, so its clients may have missed messages; fencing: closing them with 1012 to reconnect and catch up"
        );
        for conn in &clients {
            conn.queue().kill(1012, "membership lost: reconnect and catch up");
        }
    }

    /// Copies the counters and the state gauges into the metrics recorder (before a scrape).
    pub(crate) fn publish_metrics(&self) {
        self.stats.publish();
        let gauges = [
            ("gatehouse_gateway_connections", self.conns.open_count() as f64),
            ("gatehouse_gateway_tcp_connections", self.admission.tcp_open() as f64),
            (
                "gatehouse_gateway_pending_handshakes",
                self.admission.pending_count() as f64,
            ),
            ("gatehouse_gateway_client_addresses", self.admission.addresses() as f64),
            ("gatehouse_gateway_uids", self.index.uid_count() as f64),
            ("gatehouse_gateway_groups", self.index.group_count() as f64),
            ("gatehouse_gateway_workers", self.events.workers().len() as f64),
            (
                "gatehouse_gateway_unacked_event_bytes",
                self.events.pending_bytes() as f64,
            ),
            ("gatehouse_gateway_registries", self.routes.attached_count() as f64),
            ("gatehouse_gateway_draining", if self.is_stopping() { 1.0 } else { 0.0 }),
            ("gatehouse_gateway_fenced", if self.is_fenced() { 1.0 } else { 0.0 }),
        ];
        gatehouse_core::admin::set_gauges(&gauges);
    }

    // ------------------------------------------------------------------ connection life cycle

    /// Opens a connection of app `app_slot` for a handshake and waits for a worker's verdict
    /// on it (at most the handshake timeout). A refused or unanswered connection is retired
    /// here; an accepted one is the caller's to serve and then [`Hub::retire`].
    pub(crate) async fn handshake(&self, app_slot: u16, open: Open) -> Handshake {
        let (conn, verdict) = self.open(app_slot);
        self.dispatch(&conn, event::Kind::Open(open));
        match tokio::time::timeout(self.config.handshake_timeout, verdict).await {
            Ok(Ok(None)) => {
                Stats::inc(&self.stats.connections_opened);
                Handshake::Accepted(conn)
            }
            Ok(Ok(Some(reject))) => {
                Stats::inc(&self.stats.connections_rejected);
                self.abandon(&conn);
                Handshake::Refused(reject)
            }
            Ok(Err(_)) | Err(_) => {
                Stats::inc(&self.stats.connections_rejected);
                self.retire(&conn, 1011, "no worker answered the handshake");
                Handshake::Unanswered
            }
        }
    }

    /// Opens a connection of app `app_slot`; its handshake waits for the verdict on the
    /// receiver.
    pub(crate) fn open(&self, app_slot: u16) -> (Arc<Conn>, oneshot::Receiver<Option<Reject>>) {
        self.conns.insert_new(app_slot)
    }

    /// Numbers and sends one event of `conn`; returns whether the connection must stop reading.
    pub(crate) fn dispatch(&self, conn: &Conn, kind: event::Kind) -> bool {
        self.events.dispatch(conn, kind, &self.stats)
    }

    /// Retires a connection whose socket is gone: leaves every index, tells its worker (a close
    /// event with the client's last uid, session and groups, so that `on_close` can say "X left
    /// room R" on whichever worker handles it), and keeps the entry until that event is
    /// acknowledged.
    pub(crate) fn retire(&self, conn: &Conn, code: u16, reason: &str) {
        if conn.is_closed() {
            return;
        }
        let groups = self.index.detach(conn);
        conn.queue().close();
        self.dispatch(
            conn,
            event::Kind::Closed(Closed {
                code: u32::from(code),
                reason: reason.to_owned(),
                groups,
            }),
        );
        self.conns.closed(conn, false);
    }

    /// Retires a connection whose handshake was refused: it never reached `on_connect`, so no
    /// close event.
    fn abandon(&self, conn: &Conn) {
        self.index.detach(conn);
        conn.queue().close();
        let drained = conn.lock().events().is_empty();
        self.conns.closed(conn, drained);
    }

    /// Applies a worker's acknowledgement; a closed connection whose events are all
    /// acknowledged leaves the table.
    pub(crate) fn ack(&self, conn_id: u64, seq: u64, reject: Option<Reject>) {
        let Some(conn) = self.conns.get(conn_id) else {
            return;
        };
        if self.events.ack(&conn, seq, reject, &self.stats).drained {
            self.conns.remove_if_closed(&conn);
        }
    }

    // ------------------------------------------------------------------ writing to clients

    /// Queues a frame for a client; a full queue closes the client as a slow consumer (1013).
    pub(crate) fn push(&self, conn: &Conn, frame: &Message) {
        match conn.queue().push(Outbound::Frame(frame.clone())) {
            Ok(()) => Stats::inc(&self.stats.frames_out),
            Err(PushError::Full) => self.close_slow_consumer(conn),
            Err(PushError::Closed) => {}
        }
    }

    /// Queues a non-frame item (a graceful close, a deadline) with the same slow-consumer policy.
    pub(crate) fn push_control(&self, conn: &Conn, item: Outbound) {
        if let Err(PushError::Full) = conn.queue().push(item) {
            self.close_slow_consumer(conn);
        }
    }

    fn close_slow_consumer(&self, conn: &Conn) {
        if conn.queue().kill(1013, "slow consumer: send queue full") {
            Stats::inc(&self.stats.slow_consumers_closed);
            tracing::warn!(client = %self.client_id(conn), "slow consumer: send queue full, closing with 1013");
        }
    }

    /// Closes a connection now with 1012 (service restart): its client reconnects, through
    /// the load balancer, to another gateway.
    pub(crate) fn close_for_restart(&self, conn: &Conn) {
        conn.queue().kill(1012, "service restart: reconnect");
    }

    // ------------------------------------------------------------------ worker links

    /// A worker (or API client) link attached: workers join the live set and take the events
    /// of connections that have none.
    pub(crate) fn link_attached(&self, link: &Arc<WorkerLink>) {
        if link.serves_foreign_app() {
            Stats::inc(&self.stats.foreign_workers);
            tracing::warn!(
                member = %link.node(),
                app = %link.app(),
                serves = ?self.config.apps,
                "a worker of an app this gateway does not serve attached: it gets no clients here"
            );
        }
        self.events.attach(link);
        if link.handles_events() {
            self.sweep();
        }
    }

    /// A worker says it is stopping: it gets no new client, and its clients move to other
    /// workers as soon as it answered for their events.
    pub(crate) fn link_draining(&self, link: &Arc<WorkerLink>) {
        if self.events.drain(link) {
            tracing::info!(member = %link.node(), name = %link.name(), "worker draining: moving its clients");
            self.sweep();
        }
    }

    /// A worker gave back events of `conn` from `seq` on; they go out again after a back-off
    /// (or, if it is draining, to another worker).
    pub(crate) fn nack(self: &Arc<Self>, conn_id: u64, seq: u64, link: &Arc<WorkerLink>) {
        let Some(conn) = self.conns.get(conn_id) else {
            return;
        };
        Stats::inc(&self.stats.events_nacked);
        match self.events.nack(&conn, seq, link) {
            Some(backoff) => {
                let hub = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(backoff).await;
                    hub.events.retry(&conn, &hub.stats);
                });
            }
            // A draining worker gave them back: they move now if it answered for the earlier
            // ones (otherwise with the acknowledgement of the last of those).
            None if link.is_draining() => self.events.rehome(&conn, &self.stats),
            None => {}
        }
    }

    /// A link broke or was dropped: its connections' unacknowledged events go to other workers.
    pub(crate) fn link_gone(&self, link: &Arc<WorkerLink>) {
        self.events.detach(link);
        if link.handles_events() {
            self.sweep();
        }
    }

    /// Re-homes the pending events of every connection whose worker is gone.
    fn sweep(&self) {
        for conn in self.conns.snapshot() {
            self.events.rehome(&conn, &self.stats);
        }
    }

    /// Drops the links of workers the registries say have left (lease expired): their clients'
    /// events go to the remaining workers without waiting for the HTTP/2 keep-alive.
    pub(crate) fn prune_departed_workers(&self) {
        let mut recheck = false;
        for link in self.events.workers().snapshot().iter() {
            if !self.routes.worker_left(link.member()) {
                continue;
            }
            if link.in_membership_grace() {
                recheck = true;
                continue;
            }
            tracing::warn!(member = %link.node(), name = %link.name(), "worker left the cluster (lease expired); dropping its link");
            link.drop_link();
        }
        if recheck {
            let routes = self.routes.clone();
            tokio::spawn(async move {
                tokio::time::sleep(MEMBERSHIP_GRACE).await;
                routes.membership_changed.notify_one();
            });
        }
    }
}
