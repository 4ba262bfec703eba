//! The two-hop reference: the baseline split the way the cluster is split, with the cheapest
//! hop that can be built in the middle.
//!
//! A cluster message crosses three processes in sequence (the sender's gateway, a worker, the
//! recipient's gateway); the one-hop baseline crosses one. Part of the cluster's extra cost per
//! message, and most of its extra latency at low rates, is that topology itself: every process
//! on the path has to be woken up, and on a small machine each wake-up may wait behind another
//! runnable process. This reference measures the topology alone. Baseline processes started
//! with `hops` become edges: a direct message goes to one hop process over plain TCP as a
//! length-prefixed record, the hop looks its recipient up and hands the record to the edge that
//! holds it, which writes it to the client. No gRPC, no acknowledgement, no redelivery, no
//! registry, no authentication: whatever the cluster costs beyond this reference is the price of
//! those, and whatever this reference costs beyond the baseline is the price of the split.
//!
//! Only direct messages (`"to"`) are chained; the reference exists for the `dm` scenario.
//! Logins are announced to every hop and not confirmed, so a message sent to a uid in the
//! instant after its login may find no route: load tests measure after a warm-up anyway.
//!
//! # Records
//! `u32` length (of what follows, little endian), `u8` kind, `u64` connection id, payload:
//! [`LOGIN`] and [`LOGOUT`] carry a uid, [`FRAME`] (edge to hop) and [`DELIVER`] (hop to
//! edge) carry the client's frame unchanged.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::error::BenchError;
use crate::shards::Shards;

/// Edge to hop: connection `conn` logged in as the payload's uid.
pub(crate) const LOGIN: u8 = 1;
/// Edge to hop: connection `conn` (logged in as the payload's uid) is gone.
pub(crate) const LOGOUT: u8 = 2;
/// Edge to hop: a client frame with a `"to"` field, from connection `conn`.
pub(crate) const FRAME: u8 = 3;
/// Hop to edge: write the payload to the edge's connection `conn`.
pub(crate) const DELIVER: u8 = 4;

/// Kind and connection id: the part of a record after its length.
pub(crate) const HEADER: usize = 9;
/// Largest record accepted: a client message is at most 64 KiB by default; anything much
/// larger means the stream is corrupt.
const MAX_RECORD: usize = 1 << 24;
/// Records queued towards one peer. Senders wait when it is full (back-pressure, nothing is
/// dropped), except the edges' client handlers, which cannot wait and answer with an error.
pub(crate) const QUEUE: usize = 64 * 1024;
/// Bytes gathered into one `write` when several records are queued.
const WRITE_BATCH: usize = 64 * 1024;

/// Encodes one record.
pub(crate) fn record(kind: u8, conn: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + HEADER + payload.len());
    out.extend_from_slice(&((HEADER + payload.len()) as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&conn.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads the next record into `buf` (kind and id first, then the payload from `buf[HEADER..]`);
/// `None` at a clean end of stream.
pub(crate) async fn read_record<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(u8, u64)>> {
    if reader.fill_buf().await?.is_empty() {
        return Ok(None);
    }
    // From here on an end of stream cuts a record short: an error, not a clean end.
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if !(HEADER..=MAX_RECORD).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("record of {len} bytes"),
        ));
    }
    buf.resize(len, 0);
    reader.read_exact(buf).await?;
    let conn = u64::from_le_bytes(buf[1..HEADER].try_into().expect("eight bytes"));
    Ok(Some((buf[0], conn)))
}

/// Writes queued records until the queue closes, gathering whatever is already queued into
/// one `write`, up to 64 KiB. (The gateway's links also yield once under load before they
/// gather, which makes their batches larger; this does not, so if anything the reference pays
/// a few more writes at saturation than the cluster would for the same batching.)
pub(crate) async fn write_records<W: AsyncWrite + Unpin>(mut writer: W, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut out = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = queue.recv().await {
        out.extend_from_slice(&first);
        while out.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(next) => out.extend_from_slice(&next),
                Err(_) => break,
            }
        }
        if let Err(error) = writer.write_all(&out).await {
            tracing::warn!(%error, "hop link write failed");
            return;
        }
        out.clear();
    }
}

/// Opens a TCP stream for records, without Nagle's delay (a lone record must not wait for the
/// peer's delayed ACK).
pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream, BenchError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The recipient of a direct message, borrowed from the frame like the baseline's envelope.
#[derive(Deserialize)]
pub(crate) struct To<'a> {
    #[serde(borrow, default)]
    pub to: Option<Cow<'a, str>>,
}

/// Where a uid is connected: an edge (by its index in [`Hop::edges`]) and the connection id
/// on that edge.
type Route = (usize, u64);

struct Hop {
    /// The writer queue of every edge that ever connected, by index; `None` once it left.
    edges: RwLock<Vec<Option<mpsc::Sender<Vec<u8>>>>>,
    uids: Shards<String, Vec<Route>>,
}

/// Serves the middle of the two-hop reference on `listener` until `shutdown` completes. Logs
/// `listening kind=hop addr=…` first, like every gatehouse role.
pub async fn serve_hop(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BenchError> {
    let addr = listener.local_addr()?;
    tracing::info!(kind = %"hop", addr = %addr, role = %"hop", "listening");
    let hop = Arc::new(Hop {
        edges: RwLock::new(Vec::new()),
        uids: Shards::new(),
    });
    tokio::pin!(shutdown);
    // Every edge's reader and writer, stopped with the server.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: keep serving the edges already here.
                    tracing::warn!(%error, "hop accept failed");
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel(QUEUE);
        let index = {
            let mut edges = hop.edges.write().unwrap_or_else(|e| e.into_inner());
            edges.push(Some(tx));
            edges.len() - 1
        };
        tracing::info!(%peer, index, "edge attached");
        tasks.spawn(write_records(write, rx));
        tasks.spawn(hop.clone().serve_edge(index, read));
    }
    tasks.shutdown().await;
    tracing::info!("hop stopped");
    Ok(())
}

impl Hop {
    async fn serve_edge(self: Arc<Self>, index: usize, read: tokio::net::tcp::OwnedReadHalf) {
        let mut reader = BufReader::with_capacity(WRITE_BATCH, read);
        let mut buf = Vec::new();
        loop {
            let (kind, conn) = match read_record(&mut reader, &mut buf).await {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, index, "edge stream failed");
                    break;
                }
            };
            let payload = &buf[HEADER..];
            match kind {
                LOGIN => {
                    let uid = String::from_utf8_lossy(payload).into_owned();
                    self.uids
                        .shard(uid.as_str())
                        .entry(uid)
                        .or_default()
                        .push((index, conn));
                }
                LOGOUT => {
                    let uid = String::from_utf8_lossy(payload).into_owned();
                    let mut shard = self.uids.shard(uid.as_str());
                    if let Entry::Occupied(mut entry) = shard.entry(uid) {
                        entry.get_mut().retain(|route| *route != (index, conn));
                        if entry.get().is_empty() {
                            entry.remove();
                        }
                    }
                }
                FRAME => self.route(payload).await,
                other => {
                    tracing::warn!(kind = other, index, "unknown record kind; dropping the edge");
                    break;
                }
            }
        }
        self.edge_gone(index);
    }

    /// Hands a frame to every connection of its recipient.
    async fn route(&self, frame: &[u8]) {
        let Ok(To { to: Some(to) }) = serde_json::from_slice::<To<'_>>(frame) else {
            return;
        };
        // Queued without waiting under the locks; only records that met a full queue wait,
        // after the locks are released.
        let mut blocked = Vec::new();
        if let Some(routes) = self.uids.shard(to.as_ref()).get(to.as_ref()) {
            let edges = self.edges.read().unwrap_or_else(|e| e.into_inner());
            for &(edge, conn) in routes {
                let Some(Some(tx)) = edges.get(edge) else { continue };
                if let Err(mpsc::error::TrySendError::Full(out)) = tx.try_send(record(DELIVER, conn, frame)) {
                    blocked.push((tx.clone(), out));
                }
            }
        }
        for (tx, out) in blocked {
            let _ = tx.send(out).await;
        }
    }

    /// Forgets an edge and every uid it held.
    fn edge_gone(&self, index: usize) {
        if let Some(slot) = self.edges.write().unwrap_or_else(|e| e.into_inner()).get_mut(index) {
            *slot = None;
        }
        for shard in &self.uids.shards {
            shard.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, routes| {
                routes.retain(|(edge, _)| *edge != index);
                !routes.is_empty()
            });
        }
        tracing::info!(index, "edge detached");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_round_trip_and_a_corrupt_length_is_an_error() {
        let mut bytes = record(FRAME, 7, br#"{"to":"b"}"#);
        bytes.extend(record(LOGIN, u64::MAX, b"alice"));
        let mut reader = BufReader::new(&bytes[..]);
        let mut buf = Vec::new();
        assert_eq!(read_record(&mut reader, &mut buf).await.unwrap(), Some((FRAME, 7)));
        assert_eq!(&buf[HEADER..], br#"{"to":"b"}"#);
        assert_eq!(
            read_record(&mut reader, &mut buf).await.unwrap(),
            Some((LOGIN, u64::MAX))
        );
        assert_eq!(&buf[HEADER..], b"alice");
        assert_eq!(read_record(&mut reader, &mut buf).await.unwrap(), None);

        let short = 3u32.to_le_bytes();
        let error = read_record(&mut BufReader::new(&short[..]), &mut buf)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    }
}
