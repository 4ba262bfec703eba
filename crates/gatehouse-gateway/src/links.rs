//! The internal gRPC service workers and API clients attach to.
//!
//! One `Link` stream per peer. Down the stream go events and replies, up come commands and
//! acknowledgements; both directions batch whatever is queued into one message, bounded in
//! items and bytes (see [`gatehouse_core::batch`]), so under load a gRPC message carries many
//! frames, at rest one frame costs one message, and no batch can outgrow the peer's limit.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use gatehouse_core::NodeId;
use gatehouse_core::batch::{self, BatchLimits};
use gatehouse_proto::ErrorCode;
use gatehouse_proto::prost::Message as _;
use gatehouse_proto::tonic::{self, Request, Response, Status, Streaming};
use gatehouse_proto::v1::gateway_server::Gateway;
use gatehouse_proto::v1::{LinkDown, LinkHello, LinkUp, LinkWelcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::commands::{self, MAX_COMMAND_KEYS};
use crate::hub::Hub;
use crate::stats::Stats;
use crate::workers::{Down, WorkerLink};

/// What one `LinkDown` message carries at most: far below the 32 MiB gRPC limit, so that a
/// batch of maximal events still fits, and small enough to keep the latency of one message low.
const DOWN_BATCH: BatchLimits = BatchLimits {
    items: 512,
    bytes: 4 * 1024 * 1024,
};
/// How long a new link may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest peer name kept for logs.
const MAX_NAME_BYTES: usize = 256;

/// The `Gateway` gRPC service.
pub(crate) struct LinkService {
    /// The gateway's state every link reads and changes.
    hub: Arc<Hub>,
    /// The parent of every link's token: cancelled when the gateway stops serving, which drops
    /// every link.
    token: CancellationToken,
}

impl LinkService {
    pub(crate) fn new(hub: Arc<Hub>, token: CancellationToken) -> LinkService {
        LinkService { hub, token }
    }
}

type DownStream = Pin<Box<dyn Stream<Item = Result<LinkDown, Status>> + Send>>;

#[tonic::async_trait]
impl Gateway for LinkService {
    type LinkStream = DownStream;

    async fn link(&self, request: Request<Streaming<LinkUp>>) -> Result<Response<DownStream>, Status> {
        let certified = gatehouse_core::tls::peer_role(&request);
        let mut inbound = request.into_inner();
        let hello = read_hello(&mut inbound, &self.hub).await?;
        // Under mutual TLS only a worker's certificate may take clients' events: an API
        // client's key cannot turn it into a worker that reads everyone's messages.
        if hello.handles_events
            && let Some(role) = certified
            && role != gatehouse_core::tls::Role::Worker
        {
            tracing::warn!(member = %gatehouse_core::NodeId(hello.member_id), %role, "refused link: only workers handle events");
            return Err(ErrorCode::Unauthenticated.status(format!("a {role} certificate may not handle events")));
        }
        let (down, rx) = mpsc::unbounded_channel();
        let app_slot = self.hub.config().worker_app_slot(&hello.app);
        let link = WorkerLink::new(
            hello.member_id,
            hello.name,
            hello.handles_events,
            down,
            self.token.child_token(),
        )
        .with_app(hello.app, app_slot);
        let link = Arc::new(link);
        tracing::info!(member = %link.node(), name = %link.name(), app = %link.app(), handles_events = link.handles_events(), "worker link attached");
        self.hub.link_attached(&link);
        tokio::spawn(read_up(self.hub.clone(), link.clone(), inbound));
        let welcome = LinkDown {
            welcome: Some(LinkWelcome {
                gateway_id: self.hub.id().0,
                max_frame_bytes: self.hub.config().max_frame_out_bytes as u64,
                max_command_keys: MAX_COMMAND_KEYS as u32,
            }),
            ..Default::default()
        };
        let stream = futures_util::stream::once(async move { Ok(welcome) })
            .chain(down_batches(rx, self.hub.clone()))
            .take_until(link.dropped_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Reads and checks the peer's hello.
async fn read_hello(inbound: &mut Streaming<LinkUp>, hub: &Hub) -> Result<LinkHello, Status> {
    let mut hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(LinkUp { hello: Some(hello), .. }))) => hello,
        Ok(Err(status)) => return Err(status),
        Err(_) => return Err(ErrorCode::Timeout.status("no hello within 5s")),
        Ok(_) => return Err(ErrorCode::BadRequest.status("the first message must carry hello")),
    };
    if hello.expect_gateway != 0 && hello.expect_gateway != hub.id().0 {
        return Err(ErrorCode::NotFound.status(format!(
            "this is gateway {}, not {}",
            hub.id(),
            NodeId(hello.expect_gateway)
        )));
    }
    for label in [&mut hello.name, &mut hello.app] {
        if label.len() > MAX_NAME_BYTES {
            let mut end = MAX_NAME_BYTES;
            while !label.is_char_boundary(end) {
                end -= 1;
            }
            label.truncate(end);
        }
    }
    Ok(hello)
}

/// Applies what the peer sends (acknowledgements first, then commands, in order) until the
/// stream ends or the link is dropped; then re-homes the link's connections.
async fn read_up(hub: Arc<Hub>, link: Arc<WorkerLink>, mut inbound: Streaming<LinkUp>) {
    loop {
        let next = tokio::select! {
            _ = link.dropped() => break,
            next = inbound.message() => next,
        };
        match next {
            Ok(Some(up)) => {
                let stats = hub.stats();
                Stats::inc(&stats.link_messages_in);
                Stats::add(&stats.link_items_in, (up.acks.len() + up.commands.len()) as u64);
                for ack in up.acks {
                    hub.ack(ack.conn, ack.seq, ack.reject);
                }
                for nack in up.nacks {
                    hub.nack(nack.conn, nack.seq, &link);
                }
                for command in up.commands {
                    commands::execute(&hub, &link, command);
                }
                if up.draining {
                    hub.link_draining(&link);
                }
            }
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(member = %link.node(), %status, "worker link broke");
                break;
            }
        }
    }
    tracing::info!(member = %link.node(), name = %link.name(), "worker link detached");
    hub.link_gone(&link);
    link.drop_link();
}

/// The stream of `LinkDown` batches: whatever is queued, bounded by [`DOWN_BATCH`].
fn down_batches(rx: mpsc::UnboundedReceiver<Down>, hub: Arc<Hub>) -> impl Stream<Item = Result<LinkDown, Status>> {
    futures_util::stream::unfold((rx, hub, None), |(mut rx, hub, carry)| async move {
        let first = match carry {
            Some(item) => item,
            None => {
                let first = rx.recv().await?;
                if !rx.is_empty() {
                    // Under load (more than one event already waiting), let the client sockets
                    // that are ready in this turn of the event loop add their events first:
                    // every gRPC message costs HTTP/2 framing and a wake-up of the worker, so
                    // fewer, larger batches are cheaper for both sides. A lone event (low load)
                    // goes at once.
                    tokio::task::yield_now().await;
                }
                first
            }
        };
        let mut message = LinkDown::default();
        let mut count = 0;
        let carry = batch::fill(
            first,
            DOWN_BATCH,
            down_size,
            || rx.try_recv().ok(),
            |item| {
                count += 1;
                match item {
                    Down::Event(event, _) => message.events.push(event),
                    Down::Reply(reply) => message.replies.push(reply),
                }
            },
        );
        Stats::inc(&hub.stats().link_messages_out);
        Stats::add(&hub.stats().link_items_out, count);
        Some((Ok(message), (rx, hub, carry)))
    })
}

/// The encoded size of one item in a `LinkDown`.
fn down_size(item: &Down) -> usize {
    match item {
        Down::Event(_, bytes) => *bytes as usize + 4,
        Down::Reply(reply) => reply.encoded_len() + 4,
    }
}
