//! The task of one client connection: reads frames into events, writes queued frames, pings,
//! and closes with a meaningful code.
//!
//! Close codes: 1000 normal (worker asked), 1001 going away (server shutdown or ping timeout),
//! 1009 message too big, 1011 internal error, 1013 try again later (slow consumer).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use gatehouse_core::ClientId;
use gatehouse_proto::v1::{Closed, Payload, event};
use tokio::time::Instant;

use crate::hub::{Conn, Hub, Outbound};
use crate::queue::Next;
use crate::stats::Stats;

/// Runs the connection until it closes, then retires it.
///
/// The client's span is the parent of what the task logs, but it is not entered on every poll
/// of the task (entering a span costs the subscriber's bookkeeping, per wake-up, per client).
pub(crate) async fn run(hub: Arc<Hub>, conn: Arc<Conn>, socket: WebSocket) {
    let span = tracing::info_span!("client", client = %ClientId::new(hub.id, conn.id));
    let (code, reason) = serve(&hub, &conn, socket, &span).await;
    span.in_scope(|| {
        tracing::debug!(code, reason, "connection closed");
        hub.retire(&conn, code, reason);
    });
}

async fn serve(hub: &Hub, conn: &Conn, mut socket: WebSocket, span: &tracing::Span) -> (u16, &'static str) {
    let config = &hub.config;
    let limit = config.max_unacked_events;
    let mut ping = tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silence_limit = config.ping_interval * config.ping_limit;
    let mut last_heard = Instant::now();
    let mut blocked = false;
    let mut batch = VecDeque::new();
    let (code, reason, client_closed) = 'serve: loop {
        tokio::select! {
            biased;
            next = conn.queue.next(&mut batch) => {
                if let Next::Kill(code) = next {
                    break killed(code);
                }
                // A client that stops reading blocks the write; a kill (slow consumer, destroy)
                // or shutdown must still get through.
                let write = write(&mut socket, &mut batch);
                tokio::pin!(write);
                let written = loop {
                    tokio::select! {
                        // The write first: it usually completes at once, and then the kill and
                        // the ping watches are not even polled.
                        biased;
                        written = &mut write => break written,
                        code = conn.queue.killed_signal() => break 'serve killed(code),
                        // No timer per write: the ping tick bounds a stalled write too.
                        _ = ping.tick() => if last_heard.elapsed() > silence_limit {
                            Stats::inc(&hub.stats.ping_timeouts);
                            break 'serve (1001, "write stalled", false);
                        },
                    }
                };
                match written {
                    Ok(true) => {}
                    Ok(false) => break (1000, "", false),
                    Err(()) => break (1006, "write failed", true),
                }
            }
            _ = conn.credit.notified(), if blocked => {
                blocked = conn.inner.lock().expect("conn mutex poisoned").queue.pending.len() >= limit;
            }
            message = socket.recv(), if !blocked => {
                last_heard = Instant::now();
                let kind = match message {
                    Some(Ok(Message::Text(text))) => event::Kind::Message(Payload { data: text.into(), binary: false }),
                    Some(Ok(Message::Binary(data))) => event::Kind::Message(Payload { data, binary: true }),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.as_ref().map(|f| f.code).unwrap_or(1005);
                        break (code, "closed by the client", true);
                    }
                    Some(Err(error)) => {
                        if is_too_big(error) {
                            Stats::inc(&hub.stats.oversized_closed);
                            tracing::info!(parent: span, limit = config.max_message_bytes, "client sent an oversized message; closing with 1009");
                            break (1009, "message too big", false);
                        }
                        break (1006, "read failed", true);
                    }
                    None => break (1006, "connection lost", true),
                };
                Stats::inc(&hub.stats.messages_in);
                blocked = hub.dispatch(conn, kind) >= limit;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > silence_limit {
                    Stats::inc(&hub.stats.ping_timeouts);
                    break (1001, "ping timeout", true);
                }
                if socket.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                    break (1006, "write failed", true);
                }
            }
        }
    };
    if !client_closed || code != 1006 {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(Some(frame)))).await;
    }
    (code, reason)
}

/// The close code and reason of a connection the server killed.
fn killed(code: u16) -> (u16, &'static str, bool) {
    let reason = match code {
        1013 => "slow consumer: send queue full",
        1001 => "server shutting down",
        _ => "closed by the server",
    };
    (code, reason, false)
}

/// Writes every frame of `batch`, then flushes once. Returns `Ok(false)` when the server asked
/// to close (frames queued after the close are dropped).
async fn write(socket: &mut WebSocket, batch: &mut VecDeque<Outbound>) -> Result<bool, ()> {
    while let Some(item) = batch.pop_front() {
        match item {
            Outbound::Frame(frame) => socket.feed(frame).await.map_err(|_| ())?,
            Outbound::Close { last } => {
                batch.clear();
                if let Some(frame) = last {
                    socket.feed(frame).await.map_err(|_| ())?;
                }
                socket.flush().await.map_err(|_| ())?;
                return Ok(false);
            }
        }
    }
    socket.flush().await.map_err(|_| ())?;
    Ok(true)
}

fn is_too_big(error: axum::Error) -> bool {
    let inner = error.into_inner();
    matches!(
        inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

impl Hub {
    /// Retires a connection whose socket is gone: leaves every index, tells the worker, and
    /// drops the entry once the close event is acknowledged.
    pub(crate) fn retire(&self, conn: &Conn, code: u16, reason: &str) {
        if conn.closed.load(Ordering::Acquire) {
            return;
        }
        self.detach(conn);
        self.dispatch(
            conn,
            event::Kind::Closed(Closed {
                code: u32::from(code),
                reason: reason.to_owned(),
            }),
        );
        self.mark_closed(conn);
    }

    /// Retires a connection that never reached its worker's `on_connect` (handshake rejected):
    /// no close event.
    pub(crate) fn abandon(&self, conn: &Conn) {
        self.detach(conn);
        self.mark_closed(conn);
    }

    fn mark_closed(&self, conn: &Conn) {
        conn.closed.store(true, Ordering::Release);
        conn.queue.close();
        self.open_count.fetch_sub(1, Ordering::Relaxed);
        let drained = conn.inner.lock().expect("conn mutex poisoned").queue.pending.is_empty();
        if drained {
            self.conns.remove(&conn.id);
        }
    }
}
