//! The task of one client connection: reads frames into events, writes queued frames, pings,
//! enforces the client's rates and deadline, and closes with a meaningful code.
//!
//! Close codes (RFC 6455 §7.4): 1000 closed by the application, 1001 server shutdown or ping
//! timeout, 1002 protocol error, 1007 invalid UTF-8, 1008 rate limit exceeded, 1009 message too
//! big, 1011 internal error, 1013 slow consumer; applications may use 3000-4999 (the chat
//! service closes an expired token with 4001).
//!
//! Closing follows the RFC's handshake: when the client closes, the reply tungstenite queued is
//! flushed before the socket is dropped; when the server closes, it sends its Close frame and
//! then reads (briefly) until the client's answer, so that the client sees a clean close.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use gatehouse_proto::v1::{Payload, event};
use tokio::time::{Instant, Interval, Sleep};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::ProtocolError;

use crate::admission::{IpSlot, TcpSlot};
use crate::conn::Conn;
use crate::hub::Hub;
use crate::queue::{Deadline, Next, Outbound};
use crate::ratelimit::TokenBucket;
use crate::stats::Stats;

/// How long a closing connection waits for the other side's Close frame or for its own to be
/// written.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The places a connection holds in the admission counters, given back when its task ends.
#[derive(Default)]
pub(crate) struct Slots {
    /// The connection's place among the listener's TCP connections (held for its `Drop`).
    pub _tcp: Option<TcpSlot>,
    /// Its place among its client address's connections.
    pub ip: Option<IpSlot>,
}

/// Runs the connection until it closes, then retires it.
///
/// The client's span is the parent of what the task logs, but it is not entered on every poll
/// of the task (entering a span costs the subscriber's bookkeeping, per wake-up, per client).
///
/// Not an `async fn`: the session is built before the future, so the socket lives in the
/// future once (inside the session) instead of twice (an argument's slot stays reserved in an
/// async fn's state). The future is every idle connection's largest allocation.
pub(crate) fn run(hub: Arc<Hub>, conn: Arc<Conn>, socket: WebSocket, slots: Slots) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!(
        "client",
        gateway = %hub.id(),
        client = %hub.client_id(&conn),
        uid = tracing::field::Empty
    );
    let mut session = Session::new(hub, conn, socket, span);
    async move {
        let ending = session.serve().await;
        let (code, reason) = ending.code_and_reason();
        tracing::debug!(parent: session.log_span(), code, %reason, "connection closed");
        session.hub.retire(&session.conn, code, &reason);
        // Boxed: the close handshake's state is larger than the whole serving loop's, and
        // every idle connection's task would carry it inline for its lifetime.
        Box::pin(session.finish(ending)).await;
        drop(slots);
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq)]
enum Ending {
    /// The client sent a Close frame (with this code, if any); tungstenite queued the reply.
    ClientClosed(Option<u16>),
    /// The server closes with this frame.
    ServerClose(CloseFrame),
    /// The transport is gone; nothing more can be sent.
    Lost(&'static str),
}

impl Ending {
    fn server(code: u16, reason: &'static str) -> Ending {
        Ending::ServerClose(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })
    }

    /// The code and reason reported to the worker's `on_close`.
    fn code_and_reason(&self) -> (u16, String) {
        match self {
            Ending::ClientClosed(code) => (code.unwrap_or(1005), "closed by the client".to_owned()),
            Ending::ServerClose(frame) => (frame.code, frame.reason.to_string()),
            Ending::Lost(reason) => (1006, (*reason).to_owned()),
        }
    }
}

/// How writing a batch ended.
enum Written {
    /// The batch was written; `Some` when it asked to close with that frame.
    Done(Result<Option<CloseFrame>, ()>),
    /// A kill was requested while the write was blocked.
    Killed,
    /// The client stopped reading and answering for longer than the ping limit.
    Stalled,
}

/// What one turn of the loop decided.
enum Step {
    Continue,
    End(Ending),
}

/// Why the socket is not being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paused {
    No,
    /// The connection's own window of unacknowledged events is full.
    ConnWindow,
    /// The gateway's window of unacknowledged bytes is full.
    GatewayWindow,
}

/// The state of one connection's task.
struct Session {
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    socket: WebSocket,
    span: tracing::Span,
    /// Frames taken from the send queue in one swap, written in one flush.
    batch: VecDeque<Outbound>,
    ping: Interval,
    last_heard: Instant,
    paused: Paused,
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    /// Reading resumes at this instant (the client went over its rate). Boxed and created
    /// only when first needed: most connections never need it.
    throttle: Option<Pin<Box<Sleep>>>,
    throttled: bool,
    /// Since when the client has been continuously over its rate.
    over_rate_since: Option<Instant>,
    deadline: Option<Deadline>,
    deadline_timer: Option<Pin<Box<Sleep>>>,
}

impl Session {
    fn new(hub: Arc<Hub>, conn: Arc<Conn>, socket: WebSocket, span: tracing::Span) -> Session {
        let config = hub.config();
        let now = Instant::now();
        let mut ping = tokio::time::interval_at(now + config.ping_interval, config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let messages = TokenBucket::new(config.message_rate, now);
        let bytes = TokenBucket::new(config.byte_rate, now);
        Session {
            hub,
            conn,
            socket,
            span,
            batch: VecDeque::new(),
            ping,
            last_heard: now,
            paused: Paused::No,
            messages,
            bytes,
            throttle: None,
            throttled: false,
            over_rate_since: None,
            deadline: None,
            deadline_timer: None,
        }
    }

    async fn serve(&mut self) -> Ending {
        loop {
            let step = tokio::select! {
                biased;
                next = self.conn.queue().next(&mut self.batch) => self.on_outbound(next).await,
                _ = self.conn.credit(), if self.paused == Paused::ConnWindow => self.resume(),
                _ = self.hub.events().gateway_room(), if self.paused == Paused::GatewayWindow => self.resume(),
                _ = wake(&mut self.throttle), if self.throttled => {
                    self.throttled = false;
                    Step::Continue
                }
                _ = wake(&mut self.deadline_timer), if self.deadline.is_some() => self.on_deadline().await,
                message = self.socket.recv(), if self.reading() => self.on_read(message),
                _ = self.ping.tick() => self.on_ping().await,
            };
            if let Step::End(ending) = step {
                return ending;
            }
        }
    }

    /// The client's span for a log line, with the uid bound to the connection at this moment
    /// (binds happen on worker commands, far from this task: the uid is read when a line is
    /// logged, which is rare, rather than kept in step on every bind).
    fn log_span(&self) -> &tracing::Span {
        if let Some(uid) = self.conn.lock().uid() {
            self.span.record("uid", uid);
        }
        &self.span
    }

    fn reading(&self) -> bool {
        self.paused == Paused::No && !self.throttled
    }

    // ------------------------------------------------------------------ reading

    fn on_read(&mut self, message: Option<Result<Message, axum::Error>>) -> Step {
        let now = Instant::now();
        self.last_heard = now;
        let kind = match message {
            Some(Ok(Message::Text(text))) => event::Kind::Message(Payload {
                data: text.into(),
                binary: false,
            }),
            Some(Ok(Message::Binary(data))) => event::Kind::Message(Payload { data, binary: true }),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Step::Continue,
            Some(Ok(Message::Close(frame))) => return Step::End(Ending::ClientClosed(frame.map(|f| f.code))),
            Some(Err(error)) => return Step::End(self.read_failed(error)),
            None => return Step::End(Ending::Lost("connection lost")),
        };
        let size = match &kind {
            event::Kind::Message(payload) => payload.data.len(),
            _ => 0,
        };
        Stats::inc(&self.hub.stats().messages_in);
        if self.hub.dispatch(&self.conn, kind) {
            self.pause();
        }
        self.charge(size, now)
    }

    /// Maps a read error to the close the RFC asks for.
    fn read_failed(&self, error: axum::Error) -> Ending {
        let stats = self.hub.stats();
        let inner = error.into_inner();
        let Some(error) = inner.downcast_ref::<WsError>() else {
            return Ending::Lost("read failed");
        };
        match error {
            WsError::Capacity(_) => {
                Stats::inc(&stats.oversized_closed);
                tracing::info!(parent: self.log_span(), limit = self.hub.config().max_message_bytes, "client sent an oversized message; closing with 1009");
                Ending::server(1009, "message too big")
            }
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Lost("connection reset"),
            WsError::Protocol(violation) => {
                Stats::inc(&stats.protocol_errors_closed);
                tracing::info!(parent: self.log_span(), %violation, "websocket protocol error; closing with 1002");
                Ending::server(1002, "protocol error")
            }
            WsError::Utf8(_) => {
                Stats::inc(&stats.protocol_errors_closed);
                Ending::server(1007, "invalid utf-8")
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => Ending::Lost("connection closed"),
            _ => Ending::Lost("read failed"),
        }
    }

    /// Charges a message of `size` bytes to the client's rates; a client over its rate is read
    /// again only when the debt is paid, and one that stays over for too long is closed.
    fn charge(&mut self, size: usize, now: Instant) -> Step {
        let wait = [
            self.messages.as_mut().map(|b| b.take(1.0, now)),
            self.bytes.as_mut().map(|b| b.take(size as f64, now)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default();
        if wait.is_zero() {
            self.over_rate_since = None;
            return Step::Continue;
        }
        Stats::inc(&self.hub.stats().rate_limited);
        let since = *self.over_rate_since.get_or_insert(now);
        if now.duration_since(since) >= self.hub.config().rate_limit_close_after {
            Stats::inc(&self.hub.stats().rate_limit_closed);
            tracing::info!(parent: self.log_span(), "client stayed over its rate limit; closing with 1008");
            return Step::End(Ending::server(1008, "rate limit exceeded"));
        }
        arm(&mut self.throttle, now + wait);
        self.throttled = true;
        Step::Continue
    }

    fn pause(&mut self) {
        let window_full = self.hub.events().conn_window_full(&self.conn.lock());
        self.paused = if window_full {
            Paused::ConnWindow
        } else {
            Paused::GatewayWindow
        };
        Stats::inc(&self.hub.stats().reads_paused);
    }

    fn resume(&mut self) -> Step {
        let events = self.hub.events();
        self.paused = if events.conn_window_full(&self.conn.lock()) {
            Paused::ConnWindow
        } else if events.gateway_over_budget() {
            Paused::GatewayWindow
        } else {
            Paused::No
        };
        Step::Continue
    }

    // ------------------------------------------------------------------ writing

    async fn on_outbound(&mut self, next: Next) -> Step {
        let since = match next {
            Next::Kill(_) => return Step::End(self.killed()),
            Next::Frames(since) => since,
        };
        let written = self.write_queued().await;
        if let Some(since) = since {
            self.hub.latency().delivery.record(since.elapsed().as_secs_f64());
        }
        match written {
            Written::Done(Ok(None)) => Step::Continue,
            Written::Done(Ok(Some(close))) => Step::End(Ending::ServerClose(close)),
            Written::Done(Err(())) => Step::End(Ending::Lost("write failed")),
            Written::Killed => Step::End(self.killed()),
            Written::Stalled => {
                Stats::inc(&self.hub.stats().ping_timeouts);
                Step::End(Ending::server(1001, "write stalled"))
            }
        }
    }

    /// Writes the batch taken from the queue. A client that stops reading blocks the write; a
    /// kill (slow consumer, destroy, shutdown) must still get through, and the ping tick bounds
    /// a stalled write (no timer per write).
    async fn write_queued(&mut self) -> Written {
        let silence_limit = self.silence_limit();
        let Session {
            socket,
            batch,
            conn,
            ping,
            last_heard,
            deadline,
            deadline_timer,
            ..
        } = self;
        let write = write_batch(socket, batch, deadline, deadline_timer);
        tokio::pin!(write);
        loop {
            tokio::select! {
                // The write first: it usually completes at once, and then the kill and the
                // ping watches are not even polled.
                biased;
                written = &mut write => return Written::Done(written),
                _ = conn.queue().killed_signal() => return Written::Killed,
                _ = ping.tick() => if last_heard.elapsed() > silence_limit {
                    return Written::Stalled;
                },
            }
        }
    }

    fn killed(&self) -> Ending {
        match self.conn.queue().kill_frame() {
            Some(frame) => Ending::ServerClose(frame),
            None => Ending::server(1011, "closed by the server"),
        }
    }

    // ------------------------------------------------------------------ timers

    fn silence_limit(&self) -> Duration {
        let config = self.hub.config();
        config.ping_interval * config.ping_limit
    }

    async fn on_ping(&mut self) -> Step {
        if self.last_heard.elapsed() > self.silence_limit() {
            Stats::inc(&self.hub.stats().ping_timeouts);
            return Step::End(Ending::server(1001, "ping timeout"));
        }
        // Once per ping interval: a busy connection reallocates its buffers at most that
        // often, an idle one holds only its fixed state.
        self.conn.queue().release_idle(&mut self.batch);
        self.conn.lock().events_mut().release_idle();
        match self.socket.send(Message::Ping(bytes::Bytes::new())).await {
            Ok(()) => Step::Continue,
            Err(_) => Step::End(Ending::Lost("write failed")),
        }
    }

    /// The deadline's timer fired: either the warning is due (written, then the timer is set
    /// for the deadline itself) or the deadline passed.
    async fn on_deadline(&mut self) -> Step {
        let Some(deadline) = self.deadline.as_mut() else {
            return Step::Continue;
        };
        if let Some((_, warning)) = deadline.warning.take() {
            arm(&mut self.deadline_timer, deadline.at);
            return match self.socket.send(warning).await {
                Ok(()) => Step::Continue,
                Err(_) => Step::End(Ending::Lost("write failed")),
            };
        }
        let close = deadline.close.clone();
        self.deadline = None;
        Stats::inc(&self.hub.stats().deadlines_closed);
        tracing::info!(parent: self.log_span(), code = close.code, reason = %close.reason, "connection reached its deadline");
        Step::End(Ending::ServerClose(close))
    }

    // ------------------------------------------------------------------ closing

    /// Completes the close handshake the ending calls for, bounded by [`CLOSE_WAIT`].
    async fn finish(mut self, ending: Ending) {
        match ending {
            // tungstenite queued the echo of the client's Close; flushing writes it (and then
            // reports the connection closed, which is the expected end).
            Ending::ClientClosed(_) => {
                let _ = tokio::time::timeout(CLOSE_WAIT, self.socket.flush()).await;
            }
            Ending::ServerClose(frame) => {
                let socket = &mut self.socket;
                let _ = tokio::time::timeout(CLOSE_WAIT, async move {
                    if socket.send(Message::Close(Some(frame))).await.is_err() {
                        return;
                    }
                    // Read until the client's answering Close (or the end of the stream):
                    // dropping the socket before would reset a connection the client is
                    // still closing cleanly.
                    while let Some(Ok(message)) = socket.recv().await {
                        if matches!(message, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
            Ending::Lost(_) => {}
        }
    }
}

/// Writes every item of `batch`, then flushes once. Returns the close frame when the batch asked
/// to close (items queued after a close are dropped); applies deadline changes in order.
async fn write_batch(
    socket: &mut WebSocket,
    batch: &mut VecDeque<Outbound>,
    deadline: &mut Option<Deadline>,
    timer: &mut Option<Pin<Box<Sleep>>>,
) -> Result<Option<CloseFrame>, ()> {
    while let Some(item) = batch.pop_front() {
        match item {
            Outbound::Frame(frame) => socket.feed(frame).await.map_err(|_| ())?,
            Outbound::Close { last, close } => {
                batch.clear();
                if let Some(frame) = last {
                    socket.feed(frame).await.map_err(|_| ())?;
                }
                socket.flush().await.map_err(|_| ())?;
                return Ok(Some(close));
            }
            Outbound::Deadline(next) => {
                if let Some(next) = &next {
                    arm(timer, next.warning.as_ref().map_or(next.at, |(at, _)| *at));
                }
                *deadline = next;
            }
        }
    }
    socket.flush().await.map_err(|_| ())?;
    Ok(None)
}

/// Sets a lazily created timer to fire at `at`.
fn arm(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant) {
    match timer {
        Some(sleep) => sleep.as_mut().reset(at),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
    }
}

/// Waits for a lazily created timer (forever if it was never armed; callers guard on that).
async fn wake(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Whether an error came from a frame over the size limit (for tests of the mapping).
#[cfg(test)]
fn is_capacity(error: &WsError) -> bool {
    matches!(error, WsError::Capacity(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ending_reports_a_code_and_reason_to_the_worker() {
        assert_eq!(Ending::ClientClosed(Some(1000)).code_and_reason().0, 1000);
        assert_eq!(
            Ending::ClientClosed(None).code_and_reason().0,
            1005,
            "no status received"
        );
        assert_eq!(
            Ending::server(1008, "rate limit exceeded").code_and_reason(),
            (1008, "rate limit exceeded".into())
        );
        assert_eq!(Ending::Lost("gone").code_and_reason().0, 1006);
        use tokio_tungstenite::tungstenite::error::CapacityError;
        assert!(is_capacity(&WsError::Capacity(CapacityError::MessageTooLong {
            size: 2,
            max_size: 1
        })));
    }
}
