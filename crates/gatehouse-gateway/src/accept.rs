//! The public listener: accepts TCP connections under the admission caps, completes the TLS
//! handshake for `wss://`, and serves HTTP/1.1 on them with a header-read timeout, so that a
//! client that trickles its handshake or its request (slowloris) cannot hold a connection for
//! long, and then hands upgraded connections to their socket task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::PeerSlots;
use crate::hub::Hub;
use crate::socket::Slots;
use crate::stats::Stats;

/// Largest HTTP request head (request line and headers) read before the request is refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Accepts connections until `token` is cancelled, then lets plain HTTP connections finish.
/// With `tls`, every connection is a `wss://` one.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    hub: Arc<Hub>,
    router: Router,
    token: CancellationToken,
) {
    let tasks = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tasks.spawn(connection(
            stream,
            peer,
            tls.clone(),
            hub.clone(),
            router.clone(),
            token.clone(),
        ));
    }
    tasks.close();
    tasks.wait().await;
}

/// Serves one TCP connection: admission, then (with `tls`) the TLS handshake, then HTTP.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    hub: Arc<Hub>,
    router: Router,
    token: CancellationToken,
) {
    // Small frames must not wait for Nagle's algorithm (40 ms stalls behind delayed ACKs).
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let slots = match admit(&hub, peer) {
        Ok(slots) => slots,
        Err(refusal) => return refuse(stream, tls.is_some(), &hub, peer, refusal).await,
    };
    let Some(tls) = tls else {
        return serve_http(stream, peer, slots, hub, router, token).await;
    };
    // The handshake counts against the same clock as the headers: a client that starts TLS
    // and stalls holds its slot no longer than one that trickles its request.
    match tokio::time::timeout(hub.config().header_read_timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => serve_http(stream, peer, slots, hub, router, token).await,
        Ok(Err(error)) => {
            Stats::inc(&hub.stats().tls_handshake_failures);
            tracing::debug!(%peer, %error, "tls handshake failed");
        }
        Err(_) => {
            Stats::inc(&hub.stats().tls_handshake_failures);
            tracing::debug!(%peer, "tls handshake not finished in time");
        }
    }
}

/// Serves HTTP/1.1 (and the WebSocket upgrade) on an admitted connection, plain or TLS.
async fn serve_http<S>(
    stream: S,
    peer: SocketAddr,
    slots: Slots,
    hub: Arc<Hub>,
    router: Router,
    token: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer_slots = PeerSlots(Arc::new(std::sync::Mutex::new(Some(slots))));
    let service = {
        let peer_slots = peer_slots.clone();
        tower::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(peer_slots.clone());
            let mut router = router.clone();
            async move { tower::Service::call(&mut router, request).await }
        })
    };
    let config = hub.config();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let connection = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = token.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result
        && error.is_timeout()
    {
        Stats::inc(&hub.stats().header_timeouts);
        tracing::debug!(%peer, "http connection closed: headers not read in time");
    }
}

/// Which cap refused a connection at accept.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The listener holds its maximum of TCP connections.
    Full,
    /// The peer's address holds its maximum.
    PerIp,
}

/// Takes the places a new TCP connection needs: one among all connections, and one among its
/// address's unless the peer is a trusted proxy (whose clients are counted by their own
/// address at the handshake).
fn admit(hub: &Hub, peer: SocketAddr) -> Result<Slots, Refusal> {
    let tcp = hub.admission().tcp().ok_or(Refusal::Full)?;
    let ip = if hub.config().is_trusted_proxy(peer.ip()) {
        None
    } else {
        Some(hub.admission().ip(peer.ip()).ok_or(Refusal::PerIp)?)
    };
    Ok(Slots { _tcp: Some(tcp), ip })
}

/// Answers a connection over the caps with a minimal HTTP response and closes it; a `wss://`
/// connection is closed without one (answering would first cost a TLS handshake, the work the
/// cap is there to avoid).
async fn refuse(mut stream: TcpStream, tls: bool, hub: &Hub, peer: SocketAddr, refusal: Refusal) {
    let (status, reason) = match refusal {
        Refusal::Full => {
            Stats::inc(&hub.stats().refused_gateway_full);
            ("503 Service Unavailable", "gateway full\n")
        }
        Refusal::PerIp => {
            Stats::inc(&hub.stats().refused_per_ip);
            ("429 Too Many Requests", "too many connections from this address\n")
        }
    };
    tracing::debug!(%peer, status, "connection refused at accept");
    if tls {
        return;
    }
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{reason}",
        reason.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
