//! The baseline: a minimal single-process WebSocket relay speaking the relay app's protocol
//! (login, join, `"to"`, `"group"`, broadcast) with one hop and no cluster. Every cluster figure
//! is divided by the same figure measured here, so it is built the way a careful single server
//! would be, not as a straw man: axum WebSockets with 4 KiB buffers, one task per connection,
//! sharded `std` mutex maps, a bounded outbound queue per connection filled with `try_send`
//! (a full queue closes the client with 1013, as the gateway does), and one shared payload
//! buffer per fan-out.
//!
//! With [`BaselineConfig::hops`] set, the process becomes an edge of the two-hop reference
//! ([`crate::hop`]): direct messages go through a hop process instead of straight to the
//! recipient's queue.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::io::BufReader;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::error::BenchError;
use crate::hop;
use crate::shards::Shards;

/// Frames written before one flush when a connection's queue holds several.
const MAX_WRITE_BATCH: usize = 64;

/// The baseline's limits; the defaults match the gateway's.
#[derive(Debug, Clone)]
pub struct BaselineConfig {
    /// Frames queued towards one client before it is closed as a slow consumer (1013).
    pub send_queue: usize,
    /// Largest client message, in bytes.
    pub max_message_bytes: usize,
    /// tungstenite read and write buffer per connection, in bytes.
    pub socket_buffer: usize,
    /// Hop processes ([`crate::hop::serve_hop`]) to route direct messages through; empty for
    /// the one-hop baseline. Each client's messages go to one hop (by connection id), logins
    /// to all of them.
    pub hops: Vec<SocketAddr>,
}

impl Default for BaselineConfig {
    fn default() -> BaselineConfig {
        BaselineConfig {
            send_queue: 1024,
            max_message_bytes: 64 * 1024,
            socket_buffer: 4 * 1024,
            hops: Vec::new(),
        }
    }
}

/// Serves the baseline relay with default limits on `listener` (`/ws`, plus `/healthz`) until
/// `shutdown` completes; then closes every client with 1001.
pub async fn serve_baseline(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BenchError> {
    serve_baseline_with(listener, BaselineConfig::default(), shutdown).await
}

/// [`serve_baseline`] with explicit limits. Logs `listening kind=ws addr=…` first, like every
/// gatehouse role, so scripts and tests find the bound port the same way.
pub async fn serve_baseline_with(
    listener: TcpListener,
    config: BaselineConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BenchError> {
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut hops = Vec::with_capacity(config.hops.len());
    let mut hop_readers = Vec::with_capacity(config.hops.len());
    for &hop_addr in &config.hops {
        let (read, write) = hop::connect(hop_addr).await?.into_split();
        let (tx, rx) = mpsc::channel(hop::QUEUE);
        tokio::spawn(hop::write_records(write, rx));
        hops.push(tx);
        hop_readers.push((hop_addr, read));
    }
    let hub = Arc::new(Hub {
        config,
        next_id: AtomicU64::new(1),
        conns: Shards::new(),
        uids: Shards::new(),
        groups: Shards::new(),
        hops,
        stop: stop_rx,
    });
    // Aborted once the server has stopped: they hold the hub, whose hop queues keep the hop
    // writers running.
    let mut readers = tokio::task::JoinSet::new();
    for (hop_addr, read) in hop_readers {
        readers.spawn(deliver_from_hop(hub.clone(), hop_addr, read));
    }
    tracing::info!(kind = %"ws", addr = %addr, role = %"baseline", "listening");
    let app = Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(hub);
    // Small frames must not wait for Nagle's algorithm (40 ms stalls behind delayed ACKs).
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await?;
    readers.shutdown().await;
    tracing::info!("baseline stopped");
    Ok(())
}

/// Writes the frames a hop hands over to the local connections they name, until the hop's
/// stream ends (then direct messages through it are lost, which the load generator reports).
async fn deliver_from_hop(hub: Arc<Hub>, addr: SocketAddr, read: tokio::net::tcp::OwnedReadHalf) {
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut buf = Vec::new();
    loop {
        match hop::read_record(&mut reader, &mut buf).await {
            Ok(Some((hop::DELIVER, conn))) => {
                let Ok(text) = std::str::from_utf8(&buf[hop::HEADER..]) else {
                    continue;
                };
                // `push` never waits, so it runs under the shard lock (no clone of the
                // connection per message), as `fan_out` does.
                if let Some(conn) = hub.conns.shard(&conn).get(&conn) {
                    conn.push(&Utf8Bytes::from(text));
                }
            }
            Ok(Some((kind, _))) => tracing::warn!(%addr, kind, "unexpected record from a hop"),
            Ok(None) => {
                tracing::warn!(%addr, "hop closed its stream");
                return;
            }
            Err(error) => {
                tracing::warn!(%addr, %error, "hop stream failed");
                return;
            }
        }
    }
}

/// The sending side of one connection.
#[derive(Clone)]
struct Conn {
    id: u64,
    tx: mpsc::Sender<Message>,
    /// Set when the queue overflowed; the connection task closes with 1013 on its next wake.
    slow: Arc<AtomicBool>,
}

impl Conn {
    fn push(&self, frame: &Utf8Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Message::Text(frame.clone())) {
            self.slow.store(true, Ordering::Relaxed);
        }
    }
}

struct Hub {
    config: BaselineConfig,
    next_id: AtomicU64,
    /// Every connection, for broadcasts.
    conns: Shards<u64, Conn>,
    uids: Shards<String, Vec<Conn>>,
    groups: Shards<String, Vec<Conn>>,
    /// Writer queues towards the hops of the two-hop reference (empty: one hop, no chain).
    hops: Vec<mpsc::Sender<Vec<u8>>>,
    stop: watch::Receiver<bool>,
}

/// What one connection joined, to undo on close.
#[derive(Default)]
struct Membership {
    uid: Option<String>,
    groups: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    group: Option<Cow<'a, str>>,
}

fn reply(value: serde_json::Value) -> Message {
    Message::text(value.to_string())
}

fn error(message: &str) -> Message {
    reply(serde_json::json!({"type": "error", "message": message}))
}

impl Hub {
    /// Handles one client frame; returns the reply to send back, if any.
    fn handle(&self, conn: &Conn, membership: &mut Membership, frame: &Utf8Bytes) -> Option<Message> {
        let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(frame.as_str()) else {
            return Some(error("malformed json"));
        };
        match (envelope.kind.as_deref(), envelope.to, envelope.group) {
            (Some("login"), _, _) => {
                let Some(uid) = envelope.uid.filter(|uid| !uid.is_empty()) else {
                    return Some(error("login needs a uid"));
                };
                // The hops learn of the change first: if one cannot take it, nothing changes
                // here and the client gets an error (a hop that took a new login is told to
                // forget it again).
                if let Some(old) = membership.uid.as_deref()
                    && !self.announce(hop::LOGOUT, conn.id, old)
                {
                    return Some(error("hop queue full or hop gone"));
                }
                if !self.announce(hop::LOGIN, conn.id, &uid) {
                    self.announce(hop::LOGOUT, conn.id, &uid);
                    return Some(error("hop queue full or hop gone"));
                }
                if let Some(old) = membership.uid.take() {
                    remove(&self.uids, old, conn.id);
                }
                self.uids
                    .shard(uid.as_ref())
                    .entry(uid.to_string())
                    .or_default()
                    .push(conn.clone());
                let answer = reply(serde_json::json!({"type": "login_ok", "uid": uid}));
                membership.uid = Some(uid.into_owned());
                Some(answer)
            }
            (_, Some(_), _) if !self.hops.is_empty() => {
                let tx = &self.hops[(conn.id % self.hops.len() as u64) as usize];
                match tx.try_send(hop::record(hop::FRAME, conn.id, frame.as_bytes())) {
                    Ok(()) => None,
                    Err(_) => Some(error("hop queue full or hop gone")),
                }
            }
            _ if !self.hops.is_empty() => Some(error("the two-hop reference routes direct messages only")),
            (Some("join"), _, Some(group)) => {
                if !membership.groups.iter().any(|g| *g == group) {
                    self.groups
                        .shard(group.as_ref())
                        .entry(group.to_string())
                        .or_default()
                        .push(conn.clone());
                    membership.groups.push(group.to_string());
                }
                Some(reply(serde_json::json!({"type": "join_ok", "group": group})))
            }
            (_, Some(to), _) => {
                fan_out(&self.uids, &to, frame);
                None
            }
            (_, None, Some(group)) => {
                fan_out(&self.groups, &group, frame);
                None
            }
            (Some("broadcast"), None, None) => {
                for shard in &self.conns.shards {
                    for conn in shard.lock().unwrap_or_else(|e| e.into_inner()).values() {
                        conn.push(frame);
                    }
                }
                None
            }
            _ => Some(error(
                "expected login, join, or a frame with \"to\", \"group\" or type broadcast",
            )),
        }
    }

    /// Tells every hop about a login or logout of connection `id`; `false` if one could not
    /// take it.
    fn announce(&self, kind: u8, id: u64, uid: &str) -> bool {
        let mut all = true;
        for tx in &self.hops {
            all &= tx.try_send(hop::record(kind, id, uid.as_bytes())).is_ok();
        }
        all
    }

    fn leave(&self, conn: &Conn, membership: Membership) {
        self.conns.shard(&conn.id).remove(&conn.id);
        if let Some(uid) = membership.uid {
            // A full queue here only leaves a stale route to a closed connection behind.
            self.announce(hop::LOGOUT, conn.id, &uid);
            remove(&self.uids, uid, conn.id);
        }
        for group in membership.groups {
            remove(&self.groups, group, conn.id);
        }
    }
}

/// Queues `frame` to every connection under `key`; the payload buffer is shared, not copied.
fn fan_out(map: &Shards<String, Vec<Conn>>, key: &str, frame: &Utf8Bytes) {
    if let Some(conns) = map.shard(key).get(key) {
        for conn in conns {
            conn.push(frame);
        }
    }
}

/// Removes connection `id` from `key`'s list, and the key once its list is empty.
fn remove(map: &Shards<String, Vec<Conn>>, key: String, id: u64) {
    let mut shard = map.shard(key.as_str());
    if let Entry::Occupied(mut entry) = shard.entry(key) {
        entry.get_mut().retain(|conn| conn.id != id);
        if entry.get().is_empty() {
            entry.remove();
        }
    }
}

async fn upgrade(State(hub): State<Arc<Hub>>, ws: WebSocketUpgrade) -> Response {
    let config = &hub.config;
    ws.read_buffer_size(config.socket_buffer)
        .write_buffer_size(config.socket_buffer)
        .max_write_buffer_size(config.socket_buffer.max(config.max_message_bytes) * 4)
        .max_message_size(config.max_message_bytes)
        .max_frame_size(config.max_message_bytes)
        .on_upgrade(move |socket| connection(hub, socket))
}

/// One connection: reads client frames and writes queued frames in one task.
async fn connection(hub: Arc<Hub>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::channel(hub.config.send_queue);
    let conn = Conn {
        id: hub.next_id.fetch_add(1, Ordering::Relaxed),
        tx,
        slow: Arc::new(AtomicBool::new(false)),
    };
    hub.conns.shard(&conn.id).insert(conn.id, conn.clone());
    let mut membership = Membership::default();
    let mut stop = hub.stop.clone();
    let close: Option<(u16, &str)> = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break Some((1001, "server shutting down")),
            queued = rx.recv() => {
                let Some(first) = queued else { break None };
                if conn.slow.load(Ordering::Relaxed) {
                    break Some((1013, "slow consumer"));
                }
                if write_batch(&mut socket, &mut rx, first).await.is_err() {
                    break None;
                }
            }
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Some(answer) = hub.handle(&conn, &mut membership, &text)
                        && socket.send(answer).await.is_err()
                    {
                        break None;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    if socket.send(error("relay expects json text frames")).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                Some(Ok(_)) => {}
            },
        }
    };
    hub.leave(&conn, membership);
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
}

/// Writes `first` and whatever else is already queued (up to a batch), then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    rx: &mut mpsc::Receiver<Message>,
    first: Message,
) -> Result<(), axum::Error> {
    socket.feed(first).await?;
    for _ in 1..MAX_WRITE_BATCH {
        match rx.try_recv() {
            Ok(next) => socket.feed(next).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        let (_stop_tx, stop) = watch::channel(false);
        Hub {
            config: BaselineConfig::default(),
            next_id: AtomicU64::new(1),
            conns: Shards::new(),
            uids: Shards::new(),
            groups: Shards::new(),
            hops: Vec::new(),
            stop,
        }
    }

    fn conn(hub: &Hub, id: u64, queue: usize) -> (Conn, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(queue);
        let conn = Conn {
            id,
            tx,
            slow: Arc::new(AtomicBool::new(false)),
        };
        hub.conns.shard(&id).insert(id, conn.clone());
        (conn, rx)
    }

    fn text(message: Message) -> String {
        match message {
            Message::Text(text) => text.as_str().to_owned(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn relay_protocol_routes_frames() {
        let hub = hub();
        let (alice, mut alice_rx) = conn(&hub, 1, 8);
        let (bob, mut bob_rx) = conn(&hub, 2, 8);
        let (mut alice_m, mut bob_m) = (Membership::default(), Membership::default());
        let login = |c: &Conn, m: &mut Membership, uid: &str| {
            let frame = Utf8Bytes::from(format!(r#"{{"type":"login","uid":"{uid}"}}"#));
            text(hub.handle(c, m, &frame).unwrap())
        };
        assert_eq!(login(&alice, &mut alice_m, "a"), r#"{"type":"login_ok","uid":"a"}"#);
        assert_eq!(login(&bob, &mut bob_m, "b"), r#"{"type":"login_ok","uid":"b"}"#);
        let join = Utf8Bytes::from_static(r#"{"type":"join","group":"g"}"#);
        assert!(text(hub.handle(&alice, &mut alice_m, &join).unwrap()).contains("join_ok"));
        assert!(text(hub.handle(&bob, &mut bob_m, &join).unwrap()).contains("join_ok"));

        let dm = Utf8Bytes::from_static(r#"{"to":"b","x":1}"#);
        assert!(hub.handle(&alice, &mut alice_m, &dm).is_none());
        assert_eq!(text(bob_rx.try_recv().unwrap()), dm.as_str());
        assert!(alice_rx.try_recv().is_err());

        let group = Utf8Bytes::from_static(r#"{"group":"g","x":2}"#);
        assert!(hub.handle(&alice, &mut alice_m, &group).is_none());
        assert_eq!(text(alice_rx.try_recv().unwrap()), group.as_str());
        assert_eq!(text(bob_rx.try_recv().unwrap()), group.as_str());

        let all = Utf8Bytes::from_static(r#"{"type":"broadcast","x":3}"#);
        assert!(hub.handle(&bob, &mut bob_m, &all).is_none());
        assert_eq!(text(alice_rx.try_recv().unwrap()), all.as_str());
        assert_eq!(text(bob_rx.try_recv().unwrap()), all.as_str());

        let nonsense = Utf8Bytes::from_static(r#"{"hello":1}"#);
        assert!(text(hub.handle(&bob, &mut bob_m, &nonsense).unwrap()).contains("error"));

        // After bob leaves, nothing routes to him and his keys are gone.
        hub.leave(&bob, bob_m);
        assert!(hub.handle(&alice, &mut alice_m, &dm).is_none());
        assert!(bob_rx.try_recv().is_err());
        assert!(hub.uids.shard("b").get("b").is_none());
        assert_eq!(hub.groups.shard("g").get("g").map(Vec::len), Some(1));
    }

    #[test]
    fn a_full_queue_marks_the_client_slow() {
        let hub = hub();
        let (slow, _rx) = conn(&hub, 1, 1);
        let frame = Utf8Bytes::from_static("{}");
        slow.push(&frame);
        assert!(!slow.slow.load(Ordering::Relaxed));
        slow.push(&frame);
        assert!(slow.slow.load(Ordering::Relaxed));
    }
}
