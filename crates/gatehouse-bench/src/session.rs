//! One client, from connect to stop, in one task: connect, set up (login, join), wait for the
//! traffic phase, then send on schedule (open mode) or on permits (closed mode) while reading
//! and accounting every frame it receives.
//!
//! A single task serves both directions: `select!` reads whenever a frame is ready and sends
//! when a message is due, so the generator costs one task, one socket and two 4 KiB buffers
//! per client. Messages are formatted straight into the frame's buffer; received frames are
//! parsed once into a borrowed struct.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::accounting::{Counters, LatencyRecorder, Seen, Tally, Window};
use crate::client::{self, Endpoint, Ws};
use crate::config::Mode;
use crate::scenario::{Incoming, Plan, Traffic, dm};

/// Most messages one wake-up sends before reading again, so a sender that fell behind cannot
/// starve its own receive side.
const MAX_BATCH: usize = 64;

/// Stands in for a sender's permits in open mode, where there are none: `select!` builds every
/// branch's future even when the branch is disabled.
static NO_PERMITS: Semaphore = Semaphore::const_new(0);

/// How long a stopping client waits for its close frame to be written.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Open mode: how late a message may leave before it is stamped with its scheduled time rather
/// than its real send time (tokio timers have millisecond granularity).
const TIMER_SLACK_NS: u64 = 2_000_000;

/// Stream keys of the duplicate detector.
const DELIVERY: u8 = 0;
const ACK: u8 = 1;

/// Where the run is; every client watches it.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// Clients connect and set up.
    Setup,
    /// Senders send; everyone receives and counts.
    Traffic(Arc<Traffic>),
    /// The run is over.
    Stop,
}

/// What every client task shares with the coordinator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub plan: Plan,
    pub endpoints: Vec<Endpoint>,
    pub source_ips: Vec<IpAddr>,
    pub url_query: Option<String>,
    /// For `wss://` URLs.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    pub setup_timeout: Duration,
    /// Chat: reconnect, resend and catch up after a lost connection (see
    /// [`crate::BenchConfig::reconnect`]).
    pub reconnect: bool,
    /// Chat: signs each client's token.
    pub token: Option<crate::config::TokenSigner>,
    /// How long after the window a reconnecting client keeps trying (the drain).
    pub drain: Duration,
    /// The clock every timestamp is relative to.
    pub base: Instant,
    pub counters: Counters,
    /// Delivery latency (send → receive), µs.
    pub latency: LatencyRecorder,
    /// Chat only: send → ack, µs.
    pub ack_latency: LatencyRecorder,
    /// Bounds connection attempts in flight.
    pub connect_gate: Semaphore,
    pub setup: SetupState,
    pub phase: watch::Receiver<Phase>,
}

impl Shared {
    /// Nanoseconds since the clock base.
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Keeps the first error any client saw, for the report.
    pub fn note_error(&self, error: impl FnOnce() -> String) {
        let mut first = self.setup.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(error());
        }
    }
}

/// How the connect and set-up phase is going.
#[derive(Debug, Default)]
pub(crate) struct SetupState {
    /// Clients whose WebSocket handshake completed.
    pub connected: AtomicU64,
    /// Clients whose connection failed.
    pub connect_failures: AtomicU64,
    /// When the last handshake completed (ns since the clock base).
    pub last_connect_ns: AtomicU64,
    /// Clients that connected but did not complete their set-up.
    pub setup_failures: AtomicU64,
    /// Clients ready for traffic.
    pub ready: Mutex<Vec<u32>>,
    /// Clients that are ready or failed.
    pub settled: AtomicUsize,
    /// Signalled when every client has settled.
    pub all_settled: Notify,
    /// The first error any client saw.
    pub first_error: Mutex<Option<String>>,
}

impl SetupState {
    fn settle(&self, clients: usize) {
        if self.settled.fetch_add(1, Ordering::AcqRel) + 1 == clients {
            self.all_settled.notify_one();
        }
    }
}

/// The whole life of client `index`.
pub(crate) async fn run_client(shared: Arc<Shared>, index: u32) {
    let mut phase = shared.phase.clone();
    let clients = shared.plan.clients;
    let mut ws = match open(&shared, index).await {
        Ok(ws) => ws,
        Err(error) => {
            Counters::bump(&shared.setup.connect_failures);
            shared.note_error(|| format!("client {index}: {error}"));
            shared.setup.settle(clients);
            return;
        }
    };
    Counters::bump(&shared.setup.connected);
    shared
        .setup
        .last_connect_ns
        .fetch_max(shared.now_ns(), Ordering::Relaxed);
    if let Err(error) = set_up(&shared, index, &mut ws).await {
        Counters::bump(&shared.setup.setup_failures);
        shared.note_error(|| format!("client {index}: {error}"));
        shared.setup.settle(clients);
        return;
    }
    shared.setup.ready.lock().unwrap_or_else(|e| e.into_inner()).push(index);
    shared.setup.settle(clients);
    let mut early = Vec::new();
    let Some(traffic) = await_traffic(&shared, index, &mut ws, &mut phase, &mut early).await else {
        return;
    };
    let mut session = Session::new(shared, index, ws, traffic);
    for text in early {
        session.on_text(text.as_str());
    }
    session.run(&mut phase).await;
}

async fn open(shared: &Shared, index: u32) -> Result<Ws, String> {
    let endpoint = &shared.endpoints[shared.plan.gateway_of(index)];
    let token = shared
        .token
        .as_ref()
        .map(|sign| format!("token={}", (sign.0)(&shared.plan.uid(index))));
    let query = match (token, shared.url_query.as_deref()) {
        (Some(token), Some(extra)) => Some(format!("{token}&{extra}")),
        (Some(token), None) => Some(token),
        (None, extra) => extra.map(str::to_owned),
    };
    let url = shared.plan.url(index, &endpoint.url, query.as_deref());
    let source = (!shared.source_ips.is_empty()).then(|| shared.source_ips[index as usize % shared.source_ips.len()]);
    let _permit = shared
        .connect_gate
        .acquire()
        .await
        .map_err(|_| "connect gate closed".to_owned())?;
    client::connect(endpoint.addr, source, &url, shared.connect_timeout, shared.tls.as_ref()).await
}

/// Sends the set-up frames one by one, each awaiting its answer.
async fn set_up(shared: &Shared, index: u32, ws: &mut Ws) -> Result<(), String> {
    for (frame, reply) in shared.plan.setup(index) {
        ws.send(Message::text(frame))
            .await
            .map_err(|e| format!("sending set-up: {e}"))?;
        let deadline = Instant::now() + shared.setup_timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| format!("no {reply} within {:?}", shared.setup_timeout))?;
            let text = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("closed during set-up: {}", describe_close(frame)));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("during set-up: {e}")),
                None => return Err("connection ended during set-up".to_owned()),
            };
            match shared.plan.parse(text.as_str()) {
                Incoming::Reply(got) if got == reply => break,
                Incoming::Error(message) => return Err(format!("set-up refused: {message}")),
                _ => continue,
            }
        }
    }
    Ok(())
}

/// Keeps reading (pings, stray frames) until the coordinator starts the traffic phase.
///
/// Another client may see the traffic phase first and send before this one does: its frames
/// are kept in `early` for the session to account, not dropped (which would count a message
/// that did arrive as lost and stall its sender in closed mode).
async fn await_traffic(
    shared: &Shared,
    index: u32,
    ws: &mut Ws,
    phase: &mut watch::Receiver<Phase>,
    early: &mut Vec<tungstenite::Utf8Bytes>,
) -> Option<Arc<Traffic>> {
    loop {
        let current = phase.borrow_and_update().clone();
        match current {
            Phase::Traffic(traffic) => return Some(traffic),
            Phase::Stop => return None,
            Phase::Setup => {}
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    Counters::bump(&shared.counters.disconnects);
                    shared.note_error(|| format!("client {index}: disconnected before the traffic phase"));
                    return None;
                }
                Some(Ok(Message::Text(text))) => match shared.plan.parse(text.as_str()) {
                    Incoming::Error(message) => {
                        Counters::bump(&shared.counters.error_frames);
                        shared.note_error(|| format!("client {index}: server error: {message}"));
                    }
                    Incoming::Data { .. } | Incoming::Ack { .. } => early.push(text),
                    _ => {}
                },
                Some(Ok(_)) => {}
            }
        }
    }
}

fn describe_close(frame: Option<tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(frame) => format!("code {} {}", u16::from(frame.code), frame.reason),
        None => "no close code".to_owned(),
    }
}

/// A ready client in the traffic phase.
struct Session {
    shared: Arc<Shared>,
    traffic: Arc<Traffic>,
    index: u32,
    ws: Ws,
    tally: Tally,
    /// Recipient choice (dm, chat senders only: the generator's state is ~300 bytes).
    rng: Option<StdRng>,
    /// Whether this client still sends (it counts in `traffic.active_senders` while true).
    sending: bool,
    /// Next sequence number.
    seq: u64,
    /// Deliveries (or acks) one message costs in closed mode.
    cost: u32,
    /// Chat with reconnect: what it takes to resume after a lost connection.
    resume: Option<Box<Resume>>,
    /// Frames to send besides messages (`chat-mix` receipts), flushed after each step.
    outbox: Vec<String>,
}

/// What a reconnecting chat client keeps in order to resume after its connection ends.
#[derive(Debug, Default)]
struct Resume {
    /// Sent and not acknowledged yet, by seq: sent again with the same cid after a reconnect
    /// (the server stores a cid once and acknowledges the resend).
    unacked: std::collections::BTreeMap<u64, String>,
    /// Highest `seq` seen per conversation: where `sync` resumes.
    cursors: std::collections::HashMap<String, u64>,
    /// A sync page said `more`: ask again.
    sync_wanted: bool,
    /// Syncs sent (their cid numbers).
    syncs: u64,
    /// Whether this client reconnected before.
    reconnected: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop_sending();
    }
}

impl Session {
    fn new(shared: Arc<Shared>, index: u32, ws: Ws, traffic: Arc<Traffic>) -> Session {
        let shared_reconnect = shared.reconnect;
        let sending = shared.plan.sender_rank(index).is_some();
        let fanout = traffic.fanout[index as usize];
        let cost = if shared.plan.answered_by_ack() { 1 } else { fanout };
        let rng = (sending && shared.plan.picks_recipients())
            .then(|| StdRng::seed_from_u64(u64::from(shared.plan.run) << 32 | u64::from(index)));
        Session {
            shared,
            traffic,
            index,
            ws,
            tally: Tally::default(),
            rng,
            sending,
            seq: 0,
            cost,
            resume: shared_reconnect.then(Box::default),
            outbox: Vec::new(),
        }
    }

    fn stop_sending(&mut self) {
        if std::mem::take(&mut self.sending) {
            self.traffic.active_senders.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn deadline(&self, ns: u64) -> Instant {
        self.shared.base + Duration::from_nanos(ns)
    }

    async fn run(mut self, phase: &mut watch::Receiver<Phase>) {
        let traffic = self.traffic.clone();
        let rank = self.shared.plan.sender_rank(self.index).unwrap_or(0);
        let open = matches!(self.shared.plan.mode, Mode::Open { .. });
        // Open mode: message number `next` is due at its scheduled time.
        let mut next = 0u64;
        let first_due = self.shared.plan.scheduled_ns(&traffic, rank, 0);
        let due = tokio::time::sleep_until(self.deadline(first_due));
        tokio::pin!(due);
        // Closed mode: senders stop at the end of the window even while waiting for permits.
        let end = tokio::time::sleep_until(self.deadline(traffic.window.end_ns));
        tokio::pin!(end);
        loop {
            let outcome = tokio::select! {
                // Phase changes first, then sends that are due, then reads, so a flood of
                // received frames cannot delay the offered load; every send batch is followed by
                // reading what is already there, so a sender that is behind cannot starve reads.
                biased;
                changed = phase.changed() => {
                    if changed.is_err() || matches!(*phase.borrow_and_update(), Phase::Stop) {
                        // A polite close, so servers log a normal disconnect rather than a reset.
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.close(None)).await;
                        return;
                    }
                    Ok(())
                }
                () = &mut due, if self.sending && open => {
                    let sent = self.send_due(rank, &mut next).await.and_then(|()| self.read_ready());
                    if self.sending {
                        let at = self.shared.plan.scheduled_ns(&traffic, rank, next);
                        due.as_mut().reset(self.deadline(at));
                    }
                    sent
                }
                permit = traffic.permits.get(self.index as usize).unwrap_or(&NO_PERMITS).acquire_many(self.cost), if self.sending && !open => {
                    let Ok(permit) = permit else { return };
                    permit.forget();
                    self.send_permitted().await.and_then(|()| self.read_ready())
                }
                () = &mut end, if self.sending && !open => {
                    self.stop_sending();
                    Ok(())
                }
                frame = self.ws.next() => self.on_frame(frame),
            };
            let outcome = match outcome {
                Ok(()) => self.flush_outbox().await,
                other => other,
            };
            let outcome = match outcome {
                Ok(()) if self.resume.as_ref().is_some_and(|r| r.sync_wanted) => self.send_sync().await,
                other => other,
            };
            if let Err(error) = outcome
                && !self.recover(error).await
            {
                return;
            }
        }
    }

    /// Sends the receipts queued while reading (`chat-mix`).
    async fn flush_outbox(&mut self) -> Result<(), String> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        for frame in self.outbox.drain(..) {
            self.ws
                .feed(Message::text(frame))
                .await
                .map_err(|e| format!("sending: {e}"))?;
        }
        self.ws.flush().await.map_err(|e| format!("sending: {e}"))
    }

    /// After a connection error: a reconnecting chat client connects again, resends what was
    /// not acknowledged and catches up (true: go on); any other client is done (false).
    async fn recover(&mut self, error: String) -> bool {
        if self.resume.is_none() {
            self.disconnected(error);
            return false;
        }
        match self.reconnect().await {
            Ok(()) => true,
            Err(again) => {
                self.disconnected(format!("{error}; then {again}"));
                false
            }
        }
    }

    /// Connects again, sends the unacknowledged messages again and a `sync` from the cursors;
    /// backs off (with jitter) and starts over until the end of the drain whenever any step
    /// fails: a connection that a draining gateway closes right after accepting it is as
    /// transient as one refused.
    async fn reconnect(&mut self) -> Result<(), String> {
        let until = self.deadline(self.traffic.window.end_ns) + self.shared.drain;
        let mut backoff = Duration::from_millis(50);
        loop {
            let error = match self.resume_once().await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let jitter = Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 + 1));
            if Instant::now() + backoff + jitter > until {
                return Err(format!("could not resume: {error}"));
            }
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One attempt of [`Session::reconnect`]: open, resend, sync.
    async fn resume_once(&mut self) -> Result<(), String> {
        let shared = self.shared.clone();
        self.ws = open(&shared, self.index).await?;
        let counters = &shared.counters;
        Counters::bump(&counters.reconnects);
        let resume = self.resume.as_mut().expect("only reconnecting clients reconnect");
        if !std::mem::replace(&mut resume.reconnected, true) {
            Counters::bump(&counters.reconnected_clients);
        }
        for text in resume.unacked.values() {
            self.ws
                .feed(Message::text(text.clone()))
                .await
                .map_err(|e| format!("resending: {e}"))?;
        }
        self.send_sync().await
    }

    /// Asks for everything after the cursors (and flushes whatever was fed before).
    async fn send_sync(&mut self) -> Result<(), String> {
        let resume = self.resume.as_mut().expect("only reconnecting clients sync");
        resume.sync_wanted = false;
        resume.syncs += 1;
        let mut text = String::new();
        crate::scenario::chat::write_sync(&mut text, &resume.cursors, resume.syncs);
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| format!("sending sync: {e}"))
    }

    /// Accounts the frames that can be read without waiting (at most a batch).
    fn read_ready(&mut self) -> Result<(), String> {
        for _ in 0..MAX_BATCH {
            match self.ws.next().now_or_never() {
                Some(frame) => self.on_frame(frame)?,
                None => break,
            }
        }
        Ok(())
    }

    fn disconnected(&mut self, error: String) {
        Counters::bump(&self.shared.counters.disconnects);
        let index = self.index;
        self.shared.note_error(|| format!("client {index}: {error}"));
    }

    /// Open mode: sends every message whose scheduled time has come (at most a batch), stamped
    /// with its scheduled time, then flushes once.
    async fn send_due(&mut self, rank: u32, next: &mut u64) -> Result<(), String> {
        let now = self.shared.now_ns();
        let mut batch = 0;
        loop {
            let ts = self.shared.plan.scheduled_ns(&self.traffic, rank, *next);
            if ts >= self.traffic.window.end_ns {
                self.stop_sending();
                break;
            }
            if ts > now || batch == MAX_BATCH {
                break;
            }
            // Timers fire up to a millisecond late: within that slack the message is stamped
            // with the real send time, so timer granularity is not reported as latency; beyond
            // it, with the scheduled time, so a stalled sender or server is.
            let now = self.shared.now_ns();
            let stamp = if now.saturating_sub(ts) <= TIMER_SLACK_NS {
                now
            } else {
                ts
            };
            self.send_one(stamp).await?;
            *next += 1;
            batch += 1;
        }
        if batch > 0 {
            self.ws.flush().await.map_err(|e| format!("sending: {e}"))?;
        }
        Ok(())
    }

    /// Closed mode: one permit is in hand; sends that message and as many more as the permits
    /// allow right now (at most a batch), stamped with the current time, then flushes once.
    async fn send_permitted(&mut self) -> Result<(), String> {
        let mut batch = 0;
        loop {
            let ts = self.shared.now_ns();
            if ts >= self.traffic.window.end_ns {
                self.stop_sending();
                break;
            }
            self.send_one(ts).await?;
            batch += 1;
            if batch == MAX_BATCH {
                break;
            }
            match self.traffic.permits[self.index as usize].try_acquire_many(self.cost) {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
        }
        if batch > 0 {
            self.ws.flush().await.map_err(|e| format!("sending: {e}"))?;
        }
        Ok(())
    }

    /// Formats and queues one message stamped `ts`; counts it once queued.
    async fn send_one(&mut self, ts: u64) -> Result<(), String> {
        let plan = &self.shared.plan;
        let to = if plan.picks_recipients() {
            let gateway = plan.gateway_of(self.index);
            let rng = self
                .rng
                .get_or_insert_with(|| StdRng::seed_from_u64(u64::from(self.index)));
            match dm::pick(&self.traffic.candidates[gateway], self.index, plan.peers, rng) {
                Some(to) => to,
                None => {
                    self.stop_sending();
                    return Ok(());
                }
            }
        } else {
            0
        };
        if plan.mixes_events() {
            let mut typing = String::with_capacity(64);
            plan.write_typing(&mut typing, self.index, to);
            self.ws
                .feed(Message::text(typing))
                .await
                .map_err(|e| format!("sending: {e}"))?;
        }
        let mut text = String::with_capacity(112 + plan.pad.len());
        plan.write_message(&mut text, self.index, to, self.seq, ts);
        let seq = self.seq;
        self.seq += 1;
        if let Some(resume) = self.resume.as_mut() {
            // Counted as sent from here on: if the connection fails now, it goes out again.
            resume.unacked.insert(seq, text.clone());
            self.count_sent(ts);
        }
        self.ws
            .feed(Message::text(text))
            .await
            .map_err(|e| format!("sending: {e}"))?;
        if self.resume.is_none() {
            self.count_sent(ts);
        }
        Ok(())
    }

    fn count_sent(&self, ts: u64) {
        let counters = &self.shared.counters;
        Counters::bump(&counters.sent_total);
        if self.traffic.window.contains(ts) {
            Counters::bump(&counters.sent);
            Counters::add(&counters.expected, u64::from(self.traffic.fanout[self.index as usize]));
        }
    }

    /// Accounts one received frame; an error means the connection is gone.
    fn on_frame(&mut self, frame: Option<Result<Message, tungstenite::Error>>) -> Result<(), String> {
        match frame {
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
            Some(Ok(Message::Binary(data))) => {
                if let Ok(text) = std::str::from_utf8(&data) {
                    self.on_text(text);
                }
            }
            Some(Ok(Message::Close(frame))) => return Err(format!("closed by the server: {}", describe_close(frame))),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("connection error: {e}")),
            None => return Err("connection ended".to_owned()),
        }
        Ok(())
    }

    fn on_text(&mut self, text: &str) {
        let Session {
            shared,
            traffic,
            tally,
            index,
            resume,
            outbox,
            ..
        } = self;
        let (shared, index) = (&**shared, *index);
        let counters = &shared.counters;
        let closed = matches!(shared.plan.mode, Mode::Closed { .. });
        let incoming = shared.plan.parse(text);
        if let Some(resume) = resume.as_deref_mut() {
            follow(resume, shared, traffic, tally, index, text, &incoming);
        }
        match incoming {
            Incoming::Data { from, seq, ts } => {
                if shared.plan.answered_by_ack() && from == index {
                    // A chat server may copy a message to its sender's own sessions: not a delivery.
                    return;
                }
                Counters::bump(&counters.received_total);
                if shared.plan.mixes_events()
                    && let Some(receipts) = crate::scenario::chat::receipts(text)
                {
                    outbox.extend(receipts);
                }
                let first = account(tally, shared, traffic.window, index, Stream::Delivery, (from, seq, ts));
                if first && closed && !shared.plan.answered_by_ack() {
                    release(traffic, from);
                }
            }
            Incoming::Ack { from, seq, ts } => {
                if from != index {
                    return;
                }
                let first = account(tally, shared, traffic.window, index, Stream::Ack, (from, seq, ts));
                if first && closed {
                    release(traffic, from);
                }
            }
            Incoming::Error(message) => {
                Counters::bump(&counters.error_frames);
                shared.note_error(|| format!("client {index}: server error: {message}"));
            }
            Incoming::Reply(_) | Incoming::Ignored => {}
        }
    }
}

/// A reconnecting chat client's bookkeeping of one received frame: cursors advance with pushed
/// and synced messages, acks settle resends, and a sync page's messages count as deliveries.
fn follow(
    resume: &mut Resume,
    shared: &Shared,
    traffic: &Traffic,
    tally: &mut Tally,
    index: u32,
    text: &str,
    incoming: &Incoming<'_>,
) {
    use crate::scenario::chat;
    let advance = |cursors: &mut std::collections::HashMap<String, u64>, position: chat::Position| {
        let cursor = cursors.entry(position.conversation).or_default();
        *cursor = (*cursor).max(position.seq);
    };
    match incoming {
        Incoming::Data { .. } => {
            if let Some(position) = chat::position(text) {
                advance(&mut resume.cursors, position);
            }
        }
        Incoming::Ack { from, seq, .. } if *from == index => {
            resume.unacked.remove(seq);
        }
        Incoming::Ignored => {
            let Some(page) = chat::sync_page(text) else { return };
            resume.sync_wanted = page.more;
            for position in page.messages {
                let message = position.cid.as_deref().and_then(|cid| chat::ours(cid, shared.plan.run));
                advance(&mut resume.cursors, position);
                if let Some((from, seq, ts)) = message
                    && from != index
                {
                    Counters::bump(&shared.counters.received_total);
                    account(tally, shared, traffic.window, index, Stream::Delivery, (from, seq, ts));
                }
            }
        }
        _ => {}
    }
}

/// What a received copy is a copy of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// A message delivered to its recipient.
    Delivery,
    /// A chat acknowledgement to the sender.
    Ack,
}

/// Counts a delivery or ack, received by client `index`, of message `(from, seq, ts)`; returns
/// whether it was the first copy (copies of unmeasured messages are not tracked and count as
/// first).
fn account(
    tally: &mut Tally,
    shared: &Shared,
    window: Window,
    index: u32,
    stream: Stream,
    (from, seq, ts): (u32, u64, u64),
) -> bool {
    if !window.contains(ts) {
        return true;
    }
    let counters = &shared.counters;
    let (kind, distinct, latency) = match stream {
        Stream::Delivery => (DELIVERY, &counters.delivered, &shared.latency),
        Stream::Ack => (ACK, &counters.acked, &shared.ack_latency),
    };
    match tally.observe(kind, from, seq) {
        Seen::First => {
            Counters::bump(distinct);
            let micros = shared.now_ns().saturating_sub(ts) / 1_000;
            latency.record(index as usize, micros);
            true
        }
        Seen::Duplicate => {
            // Repeated acks are harmless to the user; only repeated deliveries are reported. A
            // reconnecting chat client expects repeats (a push racing its catch-up, a resend
            // pushed again) and drops them by position: they are counted apart.
            if stream == Stream::Delivery {
                if shared.reconnect {
                    Counters::bump(&counters.repeated);
                } else {
                    Counters::bump(&counters.duplicated);
                }
            }
            false
        }
    }
}

/// Gives one permit back to sender `from` (closed mode).
fn release(traffic: &Traffic, from: u32) {
    if let Some(permits) = traffic.permits.get(from as usize) {
        permits.add_permits(1);
    }
}
