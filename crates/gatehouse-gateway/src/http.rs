//! The public HTTP side: the WebSocket endpoint, and the page (`page`). Health, readiness and metrics are
//! on the admin listener (`--admin-listen`), away from untrusted clients.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::handshake::{self, HandshakeError};
use crate::hub::{Handshake, Hub};
use crate::socket::{self, Slots};
use crate::stats::Stats;

/// The places a TCP connection holds in the admission counters, handed from the accept loop to
/// the upgrade handler so that they live on with the WebSocket the connection becomes. Taken
/// only when a handshake is accepted: a refused one leaves them with the connection.
#[derive(Clone, Default)]
pub(crate) struct PeerSlots(pub Arc<Mutex<Option<Slots>>>);

/// Builds the router served on the public listener: the WebSocket endpoints, and the page the
/// deployment chose for everything else.
pub(crate) fn router(hub: Arc<Hub>) -> Router {
    let page = crate::page::router(hub.config().page.clone());
    Router::new()
        .route("/ws", get(upgrade))
        .route("/ws/{app}", get(upgrade))
        .with_state(hub)
        .merge(page)
}

/// A refusal with a reason and, for "try again later" statuses, a `Retry-After`.
fn refuse(status: StatusCode, reason: &str) -> Response {
    let retry = matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE);
    let mut response = (status, format!("{reason}\n")).into_response();
    if retry {
        response
            .headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("1"));
    }
    response
}

/// Accepts a WebSocket only after the gateway's own limits and then a worker accepted its
/// handshake, so a rejection reaches the client as a real HTTP status with a reason.
async fn upgrade(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(peer_slots): Extension<PeerSlots>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let stats = hub.stats();
    let config = hub.config();
    if hub.is_stopping() {
        Stats::inc(&stats.refused_draining);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway draining: reconnect to another",
        );
    }
    if hub.is_fenced() {
        Stats::inc(&stats.refused_fenced);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway fenced: not a cluster member until a registry renews its lease; reconnect to another",
        );
    }
    if hub.conns().open_count() >= config.max_connections as u64 {
        Stats::inc(&stats.refused_gateway_full);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "gateway full");
    }
    let Some(app_slot) = config.path_app_slot(uri.path()) else {
        Stats::inc(&stats.refused_unknown_app);
        return refuse(StatusCode::NOT_FOUND, "no such app on this gateway");
    };
    let client = handshake::client_addr(config, peer, &headers);
    // A direct client holds its address's place since the accept; a client behind a trusted
    // proxy takes one for its own address now.
    let mut client_slot = None;
    if client != peer {
        match hub.admission().ip(client.ip()) {
            Some(slot) => client_slot = Some(slot),
            None => {
                Stats::inc(&stats.refused_per_ip);
                return refuse(StatusCode::TOO_MANY_REQUESTS, "too many connections from this address");
            }
        }
    }
    let open = match handshake::open_event(config, uri.path(), uri.query().unwrap_or_default(), &headers, client) {
        Ok(open) => open,
        Err(HandshakeError::TooLarge { bytes, limit }) => {
            Stats::inc(&stats.refused_handshake_too_large);
            tracing::info!(%client, bytes, limit, "handshake over the byte budget refused");
            return refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "handshake too large");
        }
    };
    let Some(pending) = hub.admission().pending() else {
        Stats::inc(&stats.refused_pending_handshakes);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many handshakes in progress");
    };
    let handshake = hub.handshake(app_slot, open).await;
    drop(pending);
    match handshake {
        Handshake::Accepted(conn) => {
            let failed_hub = hub.clone();
            let failed_conn = conn.clone();
            let mut slots = peer_slots
                .0
                .lock()
                .expect("peer slots poisoned")
                .take()
                .unwrap_or_default();
            if client_slot.is_some() {
                slots.ip = client_slot;
            }
            ws.read_buffer_size(config.read_buffer)
                .write_buffer_size(config.write_buffer)
                // A frame is written whole into this buffer: it must hold the largest frame a
                // worker may send, or the write fails and the client is lost.
                .max_write_buffer_size(config.write_buffer + config.max_frame_out_bytes + 64)
                .max_message_size(config.max_message_bytes)
                .max_frame_size(config.max_message_bytes)
                .on_failed_upgrade(move |_| failed_hub.retire(&failed_conn, 1006, "upgrade failed"))
                .on_upgrade(move |socket| {
                    let sockets = hub.sockets().clone();
                    sockets.track_future(socket::run(hub, conn, socket, slots))
                })
        }
        Handshake::Refused(reject) => {
            let status = u16::try_from(reject.status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::FORBIDDEN);
            refuse(status, &reject.reason)
        }
        Handshake::Unanswered => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no worker answered the handshake in time",
        ),
    }
}
