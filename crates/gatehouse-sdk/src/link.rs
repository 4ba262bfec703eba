//! One self-healing stream from this process to one gateway.
//!
//! Commands and acknowledgements queue in a bounded channel that outlives sessions: what was
//! queued while the stream was down goes out on the next session. Requests waiting for a reply
//! fail with `unavailable` when their session breaks (a reply can no longer come), never hang.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use gatehouse_core::backoff::Backoff;
use gatehouse_core::batch::{self, BatchLimits};
use gatehouse_core::secret::log_if_refused;
use gatehouse_core::{Credentials, NodeId};
use gatehouse_proto::prost::Message as _;
use gatehouse_proto::tonic::service::interceptor::InterceptedService;
use gatehouse_proto::tonic::transport::Channel;
use gatehouse_proto::tonic::{Code, Status, Streaming};
use gatehouse_proto::v1::gateway_client::GatewayClient;
use gatehouse_proto::v1::{Command, Event, EventAck, EventNack, LinkDown, LinkHello, LinkUp, Reply};
use gatehouse_proto::{ErrorCode, MAX_GRPC_MESSAGE_BYTES};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::handlers::{EventLoop, HandlerFuture, Outcome, Ticket};
use crate::sessions::SessionWrites;

/// Commands and acks queued towards one gateway. A full queue means the gateway is not
/// reading; callers then get `too_many_requests` instead of growing memory.
const LINK_QUEUE: usize = 16 * 1024;
/// What one `LinkUp` message carries at most: far below the gateway's 32 MiB limit, so that no
/// batch of commands can fail the stream (single commands are bounded by the gateway's frame
/// and list limits, checked before they are queued).
const UP_BATCH: BatchLimits = BatchLimits {
    items: 512,
    bytes: 4 * 1024 * 1024,
};
/// The gateway's limits until its welcome says otherwise (the defaults of a gateway).
const DEFAULT_MAX_FRAME_BYTES: u64 = 1024 * 1024;
const DEFAULT_MAX_COMMAND_KEYS: u32 = 4096;
/// A link down for longer than this fails sends at once instead of queueing them: the gateway
/// is most likely gone, and a handler must not wait on it.
const FAIL_FAST_AFTER: Duration = Duration::from_secs(1);

/// A gateway client with the cluster credentials attached.
type Client = GatewayClient<InterceptedService<Channel, gatehouse_core::credentials::AttachCredentials>>;

/// What goes up a link.
pub(crate) enum Up {
    Command(Command),
    Ack(EventAck),
    Nack(EventNack),
    /// Wakes the batcher to tell the gateway this worker is draining (every batch then says so).
    Draining,
    /// Ends the session's outbound stream after what is queued before it: the graceful end of
    /// a drained worker's link.
    Close,
}

/// Runs the handlers of the events a gateway sends (workers only).
pub(crate) trait EventSink: Send + Sync + 'static {
    /// Returns the future that handles `event`; the link polls it on its own task. `ticket`
    /// names the handler to [`GatewayLink::release_order`].
    fn handle(&self, link: &Arc<GatewayLink>, event: Event, ticket: Ticket) -> HandlerFuture;
}

/// Identity a link presents.
#[derive(Clone)]
pub(crate) struct LinkIdentity {
    pub member: NodeId,
    pub name: String,
    /// The app a worker serves (its name); empty for an API client.
    pub app: String,
    pub credentials: Credentials,
}

/// The receiving end of the up queue, with the item that did not fit in the last batch.
struct UpQueue {
    rx: mpsc::Receiver<Up>,
    /// Kept here, not in a session's stream, so that a session that ends does not lose it.
    carry: Option<Up>,
}

/// One gateway as this process sees it: the queue towards it, the requests waiting for its
/// replies, and whether it is reachable. Outlives its sessions (see the module docs).
pub(crate) struct GatewayLink {
    /// The gateway's member id: a client id names it, and its welcome must match it.
    pub gateway: NodeId,
    /// Its internal address, from the registry's membership.
    pub addr: String,
    /// The bounded queue of what goes up (commands, acks, nacks): callers never wait on the
    /// network, and a gateway that stops reading fills it instead of memory.
    up: mpsc::Sender<Up>,
    /// The queue's receiving end, taken by the current session's outbound stream (a lock so
    /// that a new session can take it over once the old stream is dropped).
    up_rx: tokio::sync::Mutex<UpQueue>,
    /// The largest frame the gateway writes to a client (from its welcome).
    max_frame_bytes: AtomicU64,
    /// The most entries per list in one command (from its welcome).
    max_command_keys: AtomicU32,
    /// Requests waiting for their reply, by request id: a per-link lock, taken once per
    /// request and once per batch of replies.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    /// The next request id (unique within this link).
    next_request: AtomicU64,
    /// A session is up (welcome accepted): sends queue normally.
    pub connected: AtomicBool,
    /// Since when the link has been down after having been up (`None` while up or connecting
    /// for the first time).
    down_since: Mutex<Option<tokio::time::Instant>>,
    /// The worker is stopping: every batch says so, and each new session first.
    draining: AtomicBool,
    /// The worker is about to close the link: events that arrive from now on are given back
    /// at once instead of handled, so that no handler can queue a command behind the close
    /// (its event acknowledged, its sends never leaving).
    closing: AtomicBool,
    /// Events received and not answered yet (running, queued, or answers not yet queued).
    /// The event loop raises it before it looks at `closing`, and [`GatewayLink::stop_handling`]
    /// reads it after setting `closing` (both sequentially consistent): an event is either seen
    /// by the closing side as unanswered or given back by the loop, never neither.
    unanswered: AtomicUsize,
    /// Sessions this worker wrote, for the events the gateway had read before the write.
    pub sessions: SessionWrites,
    /// Handlers that gave their client's order up, for the event loop to pick up.
    releases: Releases,
    /// Sessions started, for the first ticket of each (see [`EventLoop::new`]).
    sessions_started: AtomicU64,
    /// Ends the link for good (the gateway left the cluster, or the process stops).
    pub cancel: CancellationToken,
}

impl GatewayLink {
    /// Creates the link and starts its connection task.
    pub(crate) fn spawn(
        gateway: NodeId,
        addr: String,
        identity: LinkIdentity,
        sink: Option<Arc<dyn EventSink>>,
        parent: &CancellationToken,
    ) -> Arc<GatewayLink> {
        let link = GatewayLink::new(gateway, addr, LINK_QUEUE, parent);
        tokio::spawn(link.clone().run(identity, sink));
        link
    }

    /// The link's state with nothing connected: what [`GatewayLink::spawn`] starts its
    /// connection task with, and what the unit tests drive without a socket.
    fn new(gateway: NodeId, addr: String, queue: usize, parent: &CancellationToken) -> Arc<GatewayLink> {
        let (up, up_rx) = mpsc::channel(queue);
        Arc::new(GatewayLink {
            gateway,
            addr,
            up,
            up_rx: tokio::sync::Mutex::new(UpQueue { rx: up_rx, carry: None }),
            max_frame_bytes: AtomicU64::new(DEFAULT_MAX_FRAME_BYTES),
            max_command_keys: AtomicU32::new(DEFAULT_MAX_COMMAND_KEYS),
            waiting: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            connected: AtomicBool::new(false),
            down_since: Mutex::new(None),
            draining: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            unanswered: AtomicUsize::new(0),
            sessions: SessionWrites::default(),
            releases: Releases::default(),
            sessions_started: AtomicU64::new(0),
            cancel: parent.child_token(),
        })
    }

    /// The largest frame this gateway accepts for a client.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes.load(Ordering::Relaxed) as usize
    }

    /// The most entries one list of a command may hold on this gateway.
    pub(crate) fn max_command_keys(&self) -> usize {
        self.max_command_keys.load(Ordering::Relaxed).max(1) as usize
    }

    /// Tells the gateway this worker is stopping: it gets no new client, and its clients move
    /// to other workers once their events here are answered.
    pub(crate) fn begin_drain(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            let _ = self.up.try_send(Up::Draining);
        }
    }

    /// Whether every event received was answered and every answer handed to the stream.
    pub(crate) fn is_idle(&self) -> bool {
        self.unanswered.load(Ordering::SeqCst) == 0 && self.up.capacity() == self.up.max_capacity()
    }

    /// The last step before [`GatewayLink::finish`]: events that arrive from now on are given
    /// back (nacked) instead of handled. Once every link [`is_idle`](Self::is_idle) after this,
    /// no handler runs any more, so nothing a handler sends can be queued behind the close.
    pub(crate) fn stop_handling(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Ends the link's outbound stream after what is queued, so that the last answers reach
    /// the gateway before the link goes.
    pub(crate) async fn finish(&self) {
        if self.up.send(Up::Close).await.is_ok() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while self.connected.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// The handler `ticket` of client `conn` gives its order up: the client's next events may
    /// start before it ends (see [`Context::release_order`](crate::Context::release_order)).
    /// Called from the handler, on the link's task or (spawned handlers) another one.
    pub(crate) fn release_order(&self, conn: u64, ticket: Ticket) {
        self.releases.push(conn, ticket);
    }

    /// Queues a command that needs no reply.
    pub(crate) fn send(&self, command: Command) -> Result<(), ApiError> {
        if !self.connected.load(Ordering::Acquire) && !self.cancel.is_cancelled() {
            let down_since = *self.down_since.lock().expect("down_since poisoned");
            if down_since.is_some_and(|t| t.elapsed() > FAIL_FAST_AFTER) {
                tracing::debug!(gateway = %self.gateway, "send to an unreachable gateway refused");
                return Err(ApiError::unavailable(format!(
                    "gateway {} is unreachable",
                    self.gateway
                )));
            }
        }
        if self.cancel.is_cancelled() {
            return Err(ApiError::unavailable(format!(
                "gateway {} left the cluster",
                self.gateway
            )));
        }
        self.up.try_send(Up::Command(command)).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ApiError::new(
                ErrorCode::TooManyRequests,
                format!("queue towards gateway {} is full", self.gateway),
            ),
            mpsc::error::TrySendError::Closed(_) => ApiError::unavailable(format!("gateway {} is gone", self.gateway)),
        })
    }

    /// Sends a command and waits for its reply.
    pub(crate) async fn request(&self, mut command: Command, timeout: Duration) -> Result<Reply, ApiError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        command.request_id = id;
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiting poisoned").insert(id, tx);
        if let Err(error) = self.send(command) {
            self.waiting.lock().expect("waiting poisoned").remove(&id);
            return Err(error);
        }
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(ApiError::unavailable(format!("link to gateway {} broke", self.gateway))),
            Err(_) => {
                self.waiting.lock().expect("waiting poisoned").remove(&id);
                return Err(ApiError::timeout(format!(
                    "gateway {} did not answer in time",
                    self.gateway
                )));
            }
        };
        if reply.error_code != 0 {
            return Err(ApiError::new(
                ErrorCode::from_u32(reply.error_code),
                reply.error_message,
            ));
        }
        Ok(reply)
    }

    fn fail_waiting(&self) {
        // Dropping the senders wakes every waiter with "link broke".
        self.waiting.lock().expect("waiting poisoned").clear();
    }

    async fn run(self: Arc<Self>, identity: LinkIdentity, sink: Option<Arc<dyn EventSink>>) {
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        loop {
            let outcome = tokio::select! {
                _ = self.cancel.cancelled() => break,
                outcome = self.session(&identity, sink.as_ref()) => outcome,
            };
            if self.connected.swap(false, Ordering::AcqRel) {
                tracing::warn!(gateway = %self.gateway, addr = %self.addr, "gateway link lost; reconnecting");
                *self.down_since.lock().expect("down_since poisoned") = Some(tokio::time::Instant::now());
            }
            self.fail_waiting();
            match outcome {
                Ok(()) => backoff.reset(),
                Err(Fatal(reason)) => {
                    tracing::info!(gateway = %self.gateway, addr = %self.addr, %reason, "gateway link closed for good");
                    break;
                }
                Err(Retry(reason)) => {
                    tracing::debug!(gateway = %self.gateway, addr = %self.addr, %reason, "gateway link down; retrying");
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
        self.connected.store(false, Ordering::Release);
        self.fail_waiting();
        self.cancel.cancel();
    }

    /// One session: connect, open the stream, check the welcome, then serve until it breaks.
    async fn session(
        self: &Arc<Self>,
        identity: &LinkIdentity,
        sink: Option<&Arc<dyn EventSink>>,
    ) -> Result<(), SessionEnd> {
        let client = self.connect(identity).await?;
        let mut inbound = self.open(client, identity, sink.is_some()).await?;
        self.accept_welcome(&mut inbound).await?;
        self.connected.store(true, Ordering::Release);
        *self.down_since.lock().expect("down_since poisoned") = None;
        tracing::debug!(gateway = %self.gateway, addr = %self.addr, "gateway link up");
        if self.draining.load(Ordering::Acquire) {
            let _ = self.up.try_send(Up::Draining);
        }
        self.serve(inbound, sink).await
    }

    /// Dials the gateway's internal address.
    async fn connect(&self, identity: &LinkIdentity) -> Result<Client, SessionEnd> {
        let channel = identity
            .credentials
            .endpoint(&self.addr)
            .map_err(|e| Fatal(format!("bad gateway address or TLS settings: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(4 * 1024 * 1024))
            .initial_connection_window_size(Some(8 * 1024 * 1024))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                Retry(format!(
                    "connect failed: {}",
                    gatehouse_core::credentials::error_chain(&e)
                ))
            })?;
        Ok(
            GatewayClient::with_interceptor(channel, identity.credentials.client_interceptor())
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
    }

    /// Opens the link stream: the hello, then batches of whatever is queued (bounded by
    /// [`UP_BATCH`]).
    async fn open(
        self: &Arc<Self>,
        mut client: Client,
        identity: &LinkIdentity,
        handles_events: bool,
    ) -> Result<Streaming<LinkDown>, SessionEnd> {
        let hello = LinkUp {
            hello: Some(LinkHello {
                member_id: identity.member.0,
                handles_events,
                name: identity.name.clone(),
                expect_gateway: self.gateway.0,
                app: identity.app.clone(),
            }),
            ..Default::default()
        };
        let batches = futures_util::stream::unfold(self.clone(), |link| async move {
            let batch = link.next_batch().await?;
            Some((batch, link))
        });
        let outbound = futures_util::stream::once(async move { hello }).chain(batches);
        let response = client.link(outbound).await.map_err(|status| {
            if log_if_refused(&status, &self.addr) {
                return Retry("cluster secret refused".to_owned());
            }
            match status.code() {
                Code::NotFound => Fatal(status.message().to_owned()),
                _ => Retry(format!("link refused: {}", status.message())),
            }
        })?;
        Ok(response.into_inner())
    }

    /// Waits for the next queued item and packs it with whatever else is queued; `None` when
    /// the queue is closed or a [`Up::Close`] comes first (the stream then ends).
    async fn next_batch(&self) -> Option<LinkUp> {
        let mut queue = self.up_rx.lock().await;
        let first = match queue.carry.take() {
            Some(item) => item,
            None => queue.rx.recv().await?,
        };
        if matches!(first, Up::Close) {
            return None;
        }
        let mut batch = LinkUp::default();
        let UpQueue { rx, carry } = &mut *queue;
        // A close ends this batch; it waits as the carry and ends the stream next time.
        let mut closing = false;
        let next = || match rx.try_recv() {
            Ok(Up::Close) => {
                closing = true;
                None
            }
            item => item.ok(),
        };
        *carry = batch::fill(first, UP_BATCH, up_size, next, |item| push(&mut batch, item));
        if closing {
            *carry = Some(Up::Close);
        }
        batch.draining = self.draining.load(Ordering::Acquire);
        Some(batch)
    }

    /// Checks that the gateway we meant answered, and learns its limits.
    async fn accept_welcome(&self, inbound: &mut Streaming<LinkDown>) -> Result<(), SessionEnd> {
        match inbound.message().await {
            Ok(Some(LinkDown {
                welcome: Some(welcome), ..
            })) if welcome.gateway_id == self.gateway.0 => {
                if welcome.max_frame_bytes > 0 {
                    self.max_frame_bytes.store(welcome.max_frame_bytes, Ordering::Relaxed);
                }
                if welcome.max_command_keys > 0 {
                    self.max_command_keys.store(welcome.max_command_keys, Ordering::Relaxed);
                }
                Ok(())
            }
            Ok(Some(_)) => Err(Fatal("a different gateway answered on this address".to_owned())),
            Ok(None) => Err(Retry("gateway closed the link".to_owned())),
            Err(status) => Err(Retry(format!("link failed: {}", status.message()))),
        }
    }

    /// Serves the session: replies to their waiters, events to their handlers, handlers'
    /// acknowledgements back up; until the stream breaks. Generic over the inbound stream (a
    /// gRPC `Streaming` in production, a plain stream in the unit tests).
    async fn serve(
        self: &Arc<Self>,
        mut inbound: impl Stream<Item = Result<LinkDown, Status>> + Unpin,
        sink: Option<&Arc<dyn EventSink>>,
    ) -> Result<(), SessionEnd> {
        let mut events = self.event_loop();
        let handle = |event: Event, ticket: Ticket| match sink {
            Some(sink) => sink.handle(self, event, ticket),
            // Without a sink no handler ever runs; nothing can be queued.
            None => Box::pin(std::future::ready((event.conn, Outcome::Ack(EventAck::default())))) as HandlerFuture,
        };
        let result = loop {
            tokio::select! {
                message = inbound.next() => match message.transpose() {
                    Ok(Some(down)) => {
                        self.answer(down.replies);
                        if let Some(sink) = sink && !down.events.is_empty() {
                            // Counted before `closing` is read (see `unanswered`); the store
                            // below replaces this with the true count.
                            self.unanswered.fetch_add(down.events.len(), Ordering::SeqCst);
                            let closing = self.closing.load(Ordering::SeqCst);
                            for event in down.events {
                                let start = |event: Event, ticket| if closing { give_back(&event) } else { sink.handle(self, event, ticket) };
                                if let Some(outcome) = events.admit(event, start) {
                                    self.queue_outcome(outcome, &mut events.overflow);
                                }
                            }
                        }
                    }
                    Ok(None) => break Err(Retry("gateway closed the link".to_owned())),
                    Err(status) => break Err(Retry(format!("link failed: {}", status.message()))),
                },
                Some((conn, ticket, outcome)) = events.running.next(), if !events.running.is_empty() => {
                    let outcomes = events.finished(conn, ticket, outcome, handle);
                    self.queue_outcomes(outcomes, &mut events.overflow);
                }
                () = self.releases.wait(), if !events.running.is_empty() => {
                    for (conn, ticket) in self.releases.take() {
                        let outcomes = events.released(conn, ticket, handle);
                        self.queue_outcomes(outcomes, &mut events.overflow);
                    }
                }
                permit = self.up.reserve(), if !events.overflow.is_empty() => {
                    if let (Ok(permit), Some(outcome)) = (permit, events.overflow.pop_front()) {
                        permit.send(up(outcome));
                    }
                }
            }
            // Release suffices here: the ordering that matters is the increment above.
            self.unanswered.store(events.unanswered(), Ordering::Release);
        };
        // Handlers already running finish (their effects are real); their acks cannot reach the
        // gateway any more, which re-sends those events elsewhere.
        self.unanswered.store(0, Ordering::Release);
        if !events.running.is_empty() {
            let mut running = std::mem::take(&mut events.running);
            tokio::spawn(async move { while running.next().await.is_some() {} });
        }
        result
    }

    /// The event loop of a new session. 2^40 tickets per session: a handler of an earlier
    /// session (still running, spawned away) is never mistaken for one of this session.
    fn event_loop(&self) -> EventLoop {
        let session = self.sessions_started.fetch_add(1, Ordering::Relaxed);
        EventLoop::new(session << 40)
    }

    /// Queues outcomes in order (see [`GatewayLink::queue_outcome`]).
    fn queue_outcomes(&self, outcomes: Vec<Outcome>, overflow: &mut VecDeque<Outcome>) {
        for outcome in outcomes {
            self.queue_outcome(outcome, overflow);
        }
    }

    /// Hands replies to the requests waiting for them.
    fn answer(&self, replies: Vec<Reply>) {
        if replies.is_empty() {
            return;
        }
        let mut waiting = self.waiting.lock().expect("waiting poisoned");
        for reply in replies {
            if let Some(tx) = waiting.remove(&reply.request_id) {
                let _ = tx.send(reply);
            }
        }
    }

    /// Queues an event's outcome without waiting; if the queue is full it waits in `overflow`
    /// (answers must never be dropped, and the event loop must never block).
    fn queue_outcome(&self, outcome: Outcome, overflow: &mut VecDeque<Outcome>) {
        if !overflow.is_empty() {
            overflow.push_back(outcome);
            return;
        }
        match self.up.try_send(up(outcome)) {
            Err(mpsc::error::TrySendError::Full(Up::Ack(ack))) => overflow.push_back(Outcome::Ack(ack)),
            Err(mpsc::error::TrySendError::Full(Up::Nack(nack))) => overflow.push_back(Outcome::Nack(nack)),
            _ => {}
        }
    }
}

/// Handlers that gave their client's order up, waiting for the link's event loop: pushed from
/// a handler (on the loop's task, or another one for spawned handlers), taken by the loop,
/// which the push wakes. Rare (receipts and the like), so a lock is fine; the loop's check
/// while nothing was pushed is a load and a waker registration.
#[derive(Default)]
struct Releases {
    pushed: Mutex<Vec<(u64, Ticket)>>,
    any: AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl Releases {
    fn push(&self, conn: u64, ticket: Ticket) {
        self.pushed.lock().expect("releases poisoned").push((conn, ticket));
        self.any.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn take(&self) -> Vec<(u64, Ticket)> {
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut *self.pushed.lock().expect("releases poisoned"))
    }

    /// Resolves once something was pushed (and not yet taken).
    fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.any.load(Ordering::Acquire) {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.any.load(Ordering::Acquire) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }
}

enum SessionEnd {
    Retry(String),
    Fatal(String),
}
use SessionEnd::{Fatal, Retry};

/// The encoded size of one item in a `LinkUp`.
fn up_size(item: &Up) -> usize {
    match item {
        Up::Command(command) => command.encoded_len() + 4,
        Up::Ack(ack) => ack.encoded_len() + 4,
        Up::Nack(nack) => nack.encoded_len() + 4,
        Up::Draining | Up::Close => 2,
    }
}

/// The answer to an event that arrived after the worker stopped handling: given back, so the
/// gateway sends it (and the client's later events) to another worker at once.
fn give_back(event: &Event) -> HandlerFuture {
    let nack = EventNack {
        conn: event.conn,
        seq: event.seq,
    };
    Box::pin(std::future::ready((event.conn, Outcome::Nack(nack))))
}

fn up(outcome: Outcome) -> Up {
    match outcome {
        Outcome::Ack(ack) => Up::Ack(ack),
        Outcome::Nack(nack) => Up::Nack(nack),
    }
}

fn push(batch: &mut LinkUp, item: Up) {
    match item {
        Up::Command(command) => batch.commands.push(command),
        Up::Ack(ack) => batch.acks.push(ack),
        Up::Nack(nack) => batch.nacks.push(nack),
        Up::Draining => batch.draining = true,
        // `next_batch` never packs a close.
        Up::Close => {}
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::v1::command;

    use super::*;

    fn link(queue: usize) -> Arc<GatewayLink> {
        GatewayLink::new(NodeId(7), "127.0.0.1:1".into(), queue, &CancellationToken::new())
    }

    fn ack(seq: u64) -> Outcome {
        Outcome::Ack(EventAck {
            conn: 1,
            seq,
            reject: None,
        })
    }

    fn nack(seq: u64) -> Outcome {
        Outcome::Nack(EventNack { conn: 1, seq })
    }

    fn command(request_id: u64) -> Command {
        Command {
            request_id,
            op: Some(command::Op::Ungroup(Default::default())),
        }
    }

    fn reply(request_id: u64, error: Option<ErrorCode>) -> Reply {
        Reply {
            request_id,
            error_code: error.map_or(0, ErrorCode::as_u32),
            error_message: error.map(|_| "refused".to_owned()).unwrap_or_default(),
            result: None,
        }
    }

    /// The acks and nacks of what is queued, in order, as outcomes.
    fn queued(link: &GatewayLink) -> Vec<Outcome> {
        let mut queue = link.up_rx.try_lock().expect("not in use");
        let mut out = Vec::new();
        while let Ok(item) = queue.rx.try_recv() {
            match item {
                Up::Ack(ack) => out.push(Outcome::Ack(ack)),
                Up::Nack(nack) => out.push(Outcome::Nack(nack)),
                _ => panic!("only outcomes were queued"),
            }
        }
        out
    }

    #[test]
    fn outcomes_that_find_the_queue_full_wait_in_order_behind_each_other() {
        let link = link(1);
        let mut overflow = VecDeque::new();
        link.queue_outcome(ack(1), &mut overflow);
        link.queue_outcome(nack(2), &mut overflow);
        link.queue_outcome(ack(3), &mut overflow);
        assert_eq!(overflow, [nack(2), ack(3)]);
        assert_eq!(queued(&link), [ack(1)]);
        link.queue_outcome(ack(4), &mut overflow);
        assert_eq!(
            overflow,
            [nack(2), ack(3), ack(4)],
            "room in the queue does not let a later outcome overtake"
        );
        assert!(queued(&link).is_empty());
    }

    #[tokio::test]
    async fn a_batch_packs_everything_queued_up_to_a_close_which_ends_the_stream() {
        let link = link(16);
        link.up.try_send(Up::Command(command(1))).unwrap();
        link.up.try_send(Up::Ack(EventAck::default())).unwrap();
        link.up.try_send(Up::Nack(EventNack::default())).unwrap();
        link.up.try_send(Up::Close).unwrap();
        link.up.try_send(Up::Command(command(2))).unwrap();
        let batch = link.next_batch().await.expect("a batch");
        assert_eq!((batch.commands.len(), batch.acks.len(), batch.nacks.len()), (1, 1, 1));
        assert!(!batch.draining);
        assert!(link.next_batch().await.is_none(), "the close ends the stream");
        let next = link
            .next_batch()
            .await
            .expect("what followed the close goes out next session");
        assert_eq!(next.commands[0].request_id, 2);
    }

    #[tokio::test]
    async fn a_close_first_in_line_ends_the_stream_at_once() {
        let link = link(16);
        link.up.try_send(Up::Close).unwrap();
        assert!(link.next_batch().await.is_none());
    }

    #[tokio::test]
    async fn an_item_that_does_not_fit_opens_the_next_batch() {
        let link = link(2 * UP_BATCH.items);
        for id in 0..UP_BATCH.items as u64 + 1 {
            link.up.try_send(Up::Command(command(id))).unwrap();
        }
        assert_eq!(link.next_batch().await.unwrap().commands.len(), UP_BATCH.items);
        let rest = link.next_batch().await.unwrap();
        assert_eq!(rest.commands.len(), 1);
        assert_eq!(rest.commands[0].request_id, UP_BATCH.items as u64);
    }

    #[tokio::test]
    async fn a_draining_worker_says_so_once_queued_and_in_every_batch_after() {
        let link = link(16);
        assert!(link.is_idle());
        link.begin_drain();
        link.begin_drain();
        assert!(!link.is_idle(), "the drain notice is still queued");
        assert!(link.next_batch().await.unwrap().draining);
        assert!(link.is_idle(), "queued once");
        link.up.try_send(Up::Ack(EventAck::default())).unwrap();
        assert!(link.next_batch().await.unwrap().draining);
    }

    #[test]
    fn replies_reach_their_waiters_and_a_broken_session_fails_the_others() {
        let link = link(16);
        let (first, mut first_rx) = oneshot::channel();
        let (second, mut second_rx) = oneshot::channel();
        link.waiting.lock().unwrap().extend([(1, first), (2, second)]);
        link.answer(vec![reply(1, None), reply(99, None)]);
        assert_eq!(first_rx.try_recv().unwrap().request_id, 1);
        assert!(second_rx.try_recv().is_err(), "still waiting");
        link.fail_waiting();
        assert!(matches!(
            second_rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_request_returns_its_reply_or_the_gateways_error() {
        let link = link(16);
        let asking = tokio::spawn({
            let link = link.clone();
            async move {
                let ok = link.request(command(0), Duration::from_secs(5)).await;
                let refused = link.request(command(0), Duration::from_secs(5)).await;
                (ok, refused)
            }
        });
        let first = link.next_batch().await.unwrap().commands[0].request_id;
        link.answer(vec![reply(first, None)]);
        let second = link.next_batch().await.unwrap().commands[0].request_id;
        assert_ne!(first, second, "every request has its own id");
        link.answer(vec![reply(second, Some(ErrorCode::NotFound))]);
        let (ok, refused) = asking.await.unwrap();
        assert_eq!(ok.unwrap().request_id, first);
        assert_eq!(refused.unwrap_err().code, ErrorCode::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_times_out_and_forgets_its_waiter() {
        let link = link(16);
        let error = link.request(command(0), Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Timeout);
        assert!(link.waiting.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_request_whose_session_breaks_fails_as_unavailable() {
        let link = link(16);
        let asking = tokio::spawn({
            let link = link.clone();
            async move { link.request(command(0), Duration::from_secs(5)).await }
        });
        link.next_batch().await.unwrap();
        link.fail_waiting();
        assert_eq!(asking.await.unwrap().unwrap_err().code, ErrorCode::Unavailable);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_queue_while_the_link_is_briefly_down_and_fail_fast_after_a_while() {
        let link = link(16);
        assert!(link.send(command(0)).is_ok(), "never connected yet: queued");
        *link.down_since.lock().unwrap() = Some(tokio::time::Instant::now());
        tokio::time::advance(FAIL_FAST_AFTER).await;
        assert!(link.send(command(0)).is_ok(), "not yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(link.send(command(0)).unwrap_err().code, ErrorCode::Unavailable);
        link.connected.store(true, Ordering::Release);
        assert!(link.send(command(0)).is_ok(), "up again");
    }

    #[test]
    fn a_full_queue_refuses_sends_as_too_many_requests_and_a_gone_gateway_as_unavailable() {
        let link = link(1);
        link.send(command(0)).unwrap();
        assert_eq!(link.send(command(0)).unwrap_err().code, ErrorCode::TooManyRequests);
        link.cancel.cancel();
        assert_eq!(link.send(command(0)).unwrap_err().code, ErrorCode::Unavailable);
    }

    #[test]
    fn a_request_that_cannot_be_queued_leaves_no_waiter() {
        let link = link(1);
        link.send(command(0)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let error = runtime
            .block_on(link.request(command(0), Duration::from_secs(1)))
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::TooManyRequests);
        assert!(link.waiting.lock().unwrap().is_empty());
    }

    #[test]
    fn the_gateway_defaults_apply_until_its_welcome_and_the_key_limit_is_never_zero() {
        let link = link(1);
        assert_eq!(link.max_frame_bytes(), DEFAULT_MAX_FRAME_BYTES as usize);
        assert_eq!(link.max_command_keys(), DEFAULT_MAX_COMMAND_KEYS as usize);
        link.max_command_keys.store(0, Ordering::Relaxed);
        assert_eq!(link.max_command_keys(), 1, "never zero");
    }

    /// Handles every event at once: acknowledges it, or gives it back for conn 9.
    struct AtOnce;

    impl EventSink for AtOnce {
        fn handle(&self, _link: &Arc<GatewayLink>, event: Event, _ticket: Ticket) -> HandlerFuture {
            let outcome = if event.conn == 9 {
                Outcome::Nack(EventNack {
                    conn: event.conn,
                    seq: event.seq,
                })
            } else {
                Outcome::Ack(EventAck {
                    conn: event.conn,
                    seq: event.seq,
                    reject: None,
                })
            };
            Box::pin(std::future::ready((event.conn, outcome)))
        }
    }

    /// Handles every event only when the test releases it.
    struct Held(Mutex<Vec<oneshot::Sender<()>>>);

    impl EventSink for Held {
        fn handle(&self, _link: &Arc<GatewayLink>, event: Event, _ticket: Ticket) -> HandlerFuture {
            let (release, released) = oneshot::channel();
            self.0.lock().unwrap().push(release);
            Box::pin(async move {
                let _ = released.await;
                let ack = EventAck {
                    conn: event.conn,
                    seq: event.seq,
                    reject: None,
                };
                (event.conn, Outcome::Ack(ack))
            })
        }
    }

    fn event(conn: u64, seq: u64) -> Event {
        Event {
            conn,
            seq,
            ..Default::default()
        }
    }

    fn down(events: Vec<Event>, replies: Vec<Reply>) -> Result<LinkDown, Status> {
        Ok(LinkDown {
            events,
            replies,
            ..Default::default()
        })
    }

    fn outcome(conn: u64, seq: u64) -> Outcome {
        Outcome::Ack(EventAck {
            conn,
            seq,
            reject: None,
        })
    }

    #[tokio::test]
    async fn a_session_answers_replies_runs_events_and_queues_their_outcomes_until_the_gateway_closes() {
        let link = link(16);
        let (waiter, mut replied) = oneshot::channel();
        link.waiting.lock().unwrap().insert(5, waiter);
        let sink: Arc<dyn EventSink> = Arc::new(AtOnce);
        let inbound = futures_util::stream::iter([
            down(vec![event(1, 1), event(9, 1)], vec![reply(5, None)]),
            down(vec![event(1, 2)], vec![]),
        ]);
        let end = link.serve(inbound, Some(&sink)).await;
        assert!(matches!(end, Err(Retry(reason)) if reason == "gateway closed the link"));
        assert_eq!(replied.try_recv().unwrap().request_id, 5);
        assert_eq!(
            queued(&link),
            [
                outcome(1, 1),
                Outcome::Nack(EventNack { conn: 9, seq: 1 }),
                outcome(1, 2)
            ]
        );
        assert_eq!(link.unanswered.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn events_that_arrive_after_the_worker_stopped_handling_are_given_back_unhandled() {
        let link = link(16);
        let held = Arc::new(Held(Mutex::new(Vec::new())));
        let sink: Arc<dyn EventSink> = held.clone();
        link.stop_handling();
        let inbound = futures_util::stream::iter([down(vec![event(1, 4), event(1, 5), event(2, 1)], vec![])]);
        let _ = link.serve(inbound, Some(&sink)).await;
        assert!(held.0.lock().unwrap().is_empty(), "no handler ran");
        assert_eq!(
            queued(&link),
            [
                Outcome::Nack(EventNack { conn: 1, seq: 4 }),
                Outcome::Nack(EventNack { conn: 2, seq: 1 })
            ],
            "one nack per client, from its first event: the gateway sends the rest again"
        );
        assert!(link.is_idle(), "nothing left to answer once the nacks are out");
    }

    #[tokio::test]
    async fn a_broken_stream_ends_the_session_for_a_retry() {
        let link = link(16);
        let inbound = futures_util::stream::iter([Err(Status::unavailable("reset"))]);
        let end = link.serve(inbound, None).await;
        assert!(matches!(end, Err(Retry(reason)) if reason == "link failed: reset"));
    }

    #[tokio::test]
    async fn an_api_client_ignores_events() {
        let link = link(16);
        let inbound = futures_util::stream::iter([down(vec![event(1, 1)], vec![])]);
        let _ = link.serve(inbound, None).await;
        assert!(queued(&link).is_empty());
    }

    #[tokio::test]
    async fn events_that_wait_are_counted_as_unanswered_and_acknowledged_when_done() {
        let link = link(16);
        let held = Arc::new(Held(Mutex::new(Vec::new())));
        let sink: Arc<dyn EventSink> = held.clone();
        let inbound = futures_util::stream::iter([down(vec![event(1, 1), event(1, 2), event(2, 1)], vec![])])
            .chain(futures_util::stream::pending());
        let serving = tokio::spawn({
            let link = link.clone();
            async move { link.serve(Box::pin(inbound), Some(&sink)).await.is_ok() }
        });
        while held.0.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            link.unanswered.load(Ordering::Acquire),
            3,
            "1:1 and 2:1 run, 1:2 waits behind 1:1"
        );
        let releases: Vec<_> = held.0.lock().unwrap().drain(..).collect();
        for release in releases {
            release.send(()).unwrap();
        }
        let mut acks = Vec::new();
        while acks.len() < 2 {
            acks.extend(
                link.next_batch()
                    .await
                    .unwrap()
                    .acks
                    .into_iter()
                    .map(|a| (a.conn, a.seq)),
            );
        }
        while held.0.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        held.0.lock().unwrap().pop().unwrap().send(()).unwrap();
        while acks.len() < 3 {
            acks.extend(
                link.next_batch()
                    .await
                    .unwrap()
                    .acks
                    .into_iter()
                    .map(|a| (a.conn, a.seq)),
            );
        }
        acks.sort();
        assert_eq!(acks, [(1, 1), (1, 2), (2, 1)]);
        serving.abort();
    }
}
