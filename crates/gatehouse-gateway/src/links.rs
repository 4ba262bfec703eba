//! The internal gRPC service workers and API clients attach to.
//!
//! One `Link` stream per peer. Down the stream go events and replies, up come commands and
//! acknowledgements; both directions batch whatever is queued into one message, so under load a
//! gRPC message carries many frames and at rest one frame costs one message.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use gatehouse_core::NodeId;
use gatehouse_proto::ErrorCode;
use gatehouse_proto::tonic::{self, Request, Response, Status, Streaming};
use gatehouse_proto::v1::gateway_server::Gateway;
use gatehouse_proto::v1::{LinkDown, LinkUp, LinkWelcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{Down, WorkerLink};
use crate::hub::Hub;
use crate::stats::Stats;

/// Items packed into one `LinkDown` message at most.
const BATCH_LIMIT: usize = 512;
/// How long a new link may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct LinkService {
    pub hub: Arc<Hub>,
    pub token: CancellationToken,
}

type DownStream = Pin<Box<dyn Stream<Item = Result<LinkDown, Status>> + Send>>;

#[tonic::async_trait]
impl Gateway for LinkService {
    type LinkStream = DownStream;

    async fn link(&self, request: Request<Streaming<LinkUp>>) -> Result<Response<DownStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(LinkUp { hello: Some(hello), .. }))) => hello,
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(ErrorCode::Timeout.status("no hello within 5s")),
            Ok(_) => return Err(ErrorCode::BadRequest.status("the first message must carry hello")),
        };
        let hub = self.hub.clone();
        if hello.expect_gateway != 0 && hello.expect_gateway != hub.id.0 {
            return Err(ErrorCode::NotFound.status(format!(
                "this is gateway {}, not {}",
                hub.id,
                NodeId(hello.expect_gateway)
            )));
        }
        let (down, rx) = mpsc::unbounded_channel();
        let link = Arc::new(WorkerLink {
            member: hello.member_id,
            name: hello.name.clone(),
            handles_events: hello.handles_events,
            down,
            alive: AtomicBool::new(true),
            cancel: self.token.child_token(),
            attached_at: tokio::time::Instant::now(),
        });
        tracing::info!(member = %NodeId(link.member), name = %link.name, handles_events = link.handles_events, "worker link attached");
        if link.handles_events {
            hub.workers.add(link.clone());
            hub.sweep();
        }

        let reader_link = link.clone();
        tokio::spawn(async move {
            let link = reader_link;
            loop {
                let next = tokio::select! {
                    _ = link.cancel.cancelled() => break,
                    next = inbound.message() => next,
                };
                match next {
                    Ok(Some(up)) => {
                        Stats::inc(&hub.stats.link_messages_in);
                        Stats::add(&hub.stats.link_items_in, (up.acks.len() + up.commands.len()) as u64);
                        for ack in up.acks {
                            hub.ack(ack.conn, ack.seq, ack.reject);
                        }
                        for command in up.commands {
                            hub.execute(&link, command);
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(member = %NodeId(link.member), %status, "worker link broke");
                        break;
                    }
                }
            }
            tracing::info!(member = %NodeId(link.member), name = %link.name, "worker link detached");
            hub.link_gone(&link);
            link.cancel.cancel();
        });

        let welcome = LinkDown {
            welcome: Some(LinkWelcome {
                gateway_id: self.hub.id.0,
            }),
            ..Default::default()
        };
        let cancel = link.cancel.clone();
        let out_hub = self.hub.clone();
        let batches = futures_util::stream::unfold((rx, out_hub), |(mut rx, hub)| async move {
            let first = rx.recv().await?;
            if !rx.is_empty() {
                // Under load (more than one event already waiting), let the client sockets that
                // are ready in this turn of the event loop add their events first: every gRPC
                // message costs HTTP/2 framing and a wake-up of the worker, so fewer, larger
                // batches are cheaper for both sides (measured: 21 → 28 events per message and
                // ~10% less CPU per message at the closed-loop maximum). A lone event (low
                // load) goes at once.
                tokio::task::yield_now().await;
            }
            let mut batch = LinkDown::default();
            push(&mut batch, first);
            let mut count = 1;
            while count < BATCH_LIMIT {
                match rx.try_recv() {
                    Ok(item) => {
                        push(&mut batch, item);
                        count += 1;
                    }
                    Err(_) => break,
                }
            }
            Stats::inc(&hub.stats.link_messages_out);
            Stats::add(&hub.stats.link_items_out, count as u64);
            Some((Ok(batch), (rx, hub)))
        });
        let stream = futures_util::stream::once(async move { Ok(welcome) })
            .chain(batches)
            .take_until(cancel.cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

fn push(batch: &mut LinkDown, item: Down) {
    match item {
        Down::Event(event) => batch.events.push(event),
        Down::Reply(reply) => batch.replies.push(reply),
    }
}
