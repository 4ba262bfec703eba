//! The public HTTP side: the WebSocket endpoint, health, readiness, metrics and the page.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use gatehouse_proto::v1::{Header, Open, event};

use crate::hub::Hub;
use crate::socket;
use crate::stats::Stats;

/// Builds the router served on the public listener.
pub(crate) fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .with_state(hub)
}

/// Accepts a WebSocket only after a worker accepted its handshake, so a rejection reaches the
/// client as a real HTTP status (401, 403, ...) with a reason.
async fn upgrade(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if hub.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "gateway shutting down\n").into_response();
    }
    let (conn, verdict) = hub.open_conn();
    let open = Open {
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| Header {
                name: name.as_str().to_owned(),
                value: Bytes::copy_from_slice(value.as_bytes()),
            })
            .collect(),
        remote_addr: remote.to_string(),
        insecure_dev: hub.config.insecure_dev_auth,
    };
    hub.dispatch(&conn, event::Kind::Open(open));
    match tokio::time::timeout(hub.config.handshake_timeout, verdict).await {
        Ok(Ok(None)) => {
            Stats::inc(&hub.stats.connections_opened);
            let config = &hub.config;
            let failed_hub = hub.clone();
            let failed_conn = conn.clone();
            ws.read_buffer_size(config.read_buffer)
                .write_buffer_size(config.write_buffer)
                .max_write_buffer_size(config.write_buffer.max(config.max_message_bytes) * 4)
                .max_message_size(config.max_message_bytes)
                .max_frame_size(config.max_message_bytes)
                .on_failed_upgrade(move |_| failed_hub.retire(&failed_conn, 1006, "upgrade failed"))
                .on_upgrade(move |socket| socket::run(hub, conn, socket))
        }
        Ok(Ok(Some(reject))) => {
            Stats::inc(&hub.stats.connections_rejected);
            hub.abandon(&conn);
            let status = u16::try_from(reject.status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::FORBIDDEN);
            (status, format!("{}\n", reject.reason)).into_response()
        }
        Ok(Err(_)) | Err(_) => {
            Stats::inc(&hub.stats.connections_rejected);
            hub.retire(&conn, 1011, "no worker answered the handshake");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "no worker answered the handshake in time\n",
            )
                .into_response()
        }
    }
}

async fn readyz(State(hub): State<Arc<Hub>>) -> Response {
    let registries = *hub.routes.attached.borrow();
    let workers = hub.workers.len();
    let body = format!("{{\"registries\":{registries},\"workers\":{workers}}}\n");
    let status = if registries > 0 && workers > 0 && !hub.shutdown.is_cancelled() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [("content-type", "application/json")], body).into_response()
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let gauges = [
        (
            "gatehouse_gateway_connections",
            "open websocket connections",
            hub.open_count.load(Ordering::Relaxed),
        ),
        (
            "gatehouse_gateway_uids",
            "distinct uids bound on this gateway",
            hub.uids.len() as u64,
        ),
        (
            "gatehouse_gateway_groups",
            "groups with members on this gateway",
            hub.groups.len() as u64,
        ),
        (
            "gatehouse_gateway_workers",
            "attached workers taking events",
            hub.workers.len() as u64,
        ),
    ];
    (
        [("content-type", "text/plain; version=0.0.4")],
        hub.stats.render(&gauges),
    )
        .into_response()
}

async fn index(State(hub): State<Arc<Hub>>) -> Html<&'static str> {
    Html(hub.config.index_page.unwrap_or(include_str!("../assets/index.html")))
}
