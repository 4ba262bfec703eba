//! A synthetic route subscriber: attaches as a worker that wants the routing table, counts what
//! it receives (entries and bytes) and acknowledges each update as soon as it arrives, like a
//! worker that applies updates instantly. It keeps no table: the real workers beside it are the
//! ones whose memory is measured; these only make the registry fan out to as many subscribers
//! as the scenario has workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use gatehouse_proto::prost::Message;
use gatehouse_proto::v1::{MemberKind, RouteAck, RouteUpdate, attach_request, attach_response};
use tokio_util::sync::CancellationToken;

use super::member::{self, Registry, Session};

/// Bytes of gRPC framing before each message (compression flag and length).
const GRPC_PREFIX: u64 = 5;

/// What one subscriber has received, read by the coordinator.
#[derive(Default)]
pub(super) struct Received {
    /// Encoded route updates, with their gRPC prefixes.
    pub bytes: AtomicU64,
    /// Route entries (present and absent).
    pub entries: AtomicU64,
    /// (key, gateway) pairs in its view: +1 per present entry, -1 per absent one, 0 on a reset.
    pub routes: AtomicI64,
    /// Its current view is a complete snapshot (the last chunk arrived).
    pub complete: AtomicBool,
    /// Sessions attached so far (1 after the first attach).
    pub sessions: AtomicU64,
}

/// Attaches as a route subscriber and keeps acknowledging until `token` is cancelled,
/// re-attaching whenever the session breaks.
pub(super) async fn run(registry: Registry, index: usize, received: Arc<Received>, token: CancellationToken) {
    let me = member::member(MemberKind::Worker, format!("synthetic-worker-{index}"));
    while let Some(mut session) = member::attach_until(&registry, &me, true, &token).await {
        received.complete.store(false, Ordering::Release);
        received.sessions.fetch_add(1, Ordering::AcqRel);
        serve(&mut session, &received, &token).await;
        if token.is_cancelled() {
            return;
        }
    }
}

async fn serve(session: &mut Session, received: &Received, token: &CancellationToken) {
    let mut heartbeat = tokio::time::interval(session.heartbeat_every);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = heartbeat.tick() => if !session.beat().await { return },
            message = session.inbound.message() => match message {
                Ok(Some(response)) => {
                    if let Some(attach_response::Msg::RouteUpdate(update)) = response.msg
                        && !apply(session, received, update).await
                    {
                        return;
                    }
                }
                _ => return,
            },
        }
    }
}

async fn apply(session: &Session, received: &Received, update: RouteUpdate) -> bool {
    received
        .bytes
        .fetch_add(update.encoded_len() as u64 + GRPC_PREFIX, Ordering::Relaxed);
    received
        .entries
        .fetch_add(update.entries.len() as u64, Ordering::Relaxed);
    if update.reset {
        received.routes.store(0, Ordering::Relaxed);
        received.complete.store(false, Ordering::Release);
    }
    let delta: i64 = update.entries.iter().map(|e| if e.present { 1 } else { -1 }).sum();
    received.routes.fetch_add(delta, Ordering::Relaxed);
    if update.partial {
        return true;
    }
    received.complete.store(true, Ordering::Release);
    session
        .send(attach_request::Msg::RouteAck(RouteAck { seq: update.seq }))
        .await
}
