//! [`WebhookWorker`]: a [`Worker`] whose handlers forward each event to the backend and run
//! the commands of its result, in order, before the event is acknowledged.
//!
//! What happens when the backend fails (docs/webhook.md has the contract):
//! - A failed request is retried inside the handler with exponential back-off
//!   (`retries` times); then the event is given back to its gateway (a transient failure for
//!   the SDK), which delivers it again later, to another worker if there is one, before any
//!   later event of that client: nothing is lost and the client's order holds.
//! - A client whose events have failed for `give_up_after` is closed with 1013 (try again
//!   later); its remaining events are acknowledged without delivery and counted.
//! - A handshake the backend has not answered within `handshake_timeout` is refused with 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use gatehouse_core::admin::{AdminHooks, Readiness};
use gatehouse_core::backoff::Backoff;
use gatehouse_sdk::{
    ApiError, ClientId, CloseInfo, Context, ErrorCode, Frame, HandlerResult, Handshake, Reject, Worker,
};
use tokio::time::Instant;

use crate::batcher::Batchers;
use crate::config::WebhookConfig;
use crate::contract::{self, Command, EventResult, Kind};
use crate::stats::WebhookStats;

/// The close code of a client given up on: 1013, try again later.
pub const GIVE_UP_CODE: u16 = 1013;
/// Its reason.
pub const GIVE_UP_REASON: &str = "webhook backend unavailable";
/// The close code of a client whose event does not fit in a batch: 1008, policy.
pub const TOO_LARGE_CODE: u16 = 1008;

/// The webhook worker. Build it with [`WebhookWorker::new`] and run it with
/// `gatehouse_sdk::WorkerRuntime` like any worker.
pub struct WebhookWorker {
    config: Arc<WebhookConfig>,
    batchers: Arc<Batchers>,
    stats: Arc<WebhookStats>,
    failing: Arc<Failing>,
}

/// What became of one event's delivery.
enum Delivery {
    /// The backend answered with a valid result.
    Answered(EventResult),
    /// The event is acknowledged without a result (refused batch, invalid result, dropped).
    Skipped,
    /// The backend could not be reached within the retries (or the deadline).
    Unavailable,
}

impl WebhookWorker {
    /// Builds the worker from a validated configuration.
    pub fn new(config: WebhookConfig) -> Result<WebhookWorker, crate::ConfigError> {
        config.validate()?;
        let stats = Arc::new(WebhookStats::default());
        Ok(WebhookWorker {
            batchers: Arc::new(Batchers::new(&config, stats.clone())),
            config: Arc::new(config),
            stats,
            failing: Arc::default(),
        })
    }

    /// What this worker adds to the admin listener: its counters on `/metrics`, and the
    /// number of clients whose events are failing in `/readyz` (always ready: a backend
    /// outage is not cured by taking the worker out).
    pub fn admin_hooks(&self) -> AdminHooks {
        let stats = self.stats.clone();
        let failing = self.failing.clone();
        AdminHooks {
            role: "webhook",
            ready: Arc::new(move || Readiness {
                ready: true,
                detail: format!("{{\"failing_clients\":{}}}", failing.count.load(Ordering::Relaxed)),
            }),
            scrape: Some(Arc::new(move || stats.publish())),
        }
    }

    /// Forwards a non-handshake event and runs its commands; see the module doc for failures.
    async fn forward(&self, ctx: &Context, kind: Kind, event: Vec<u8>) -> HandlerResult {
        let client = ctx.client_id();
        let delivery = self.deliver(ctx, kind, event, None).await;
        if kind == Kind::Close && !matches!(delivery, Delivery::Unavailable) {
            self.failing.forget(client);
        }
        match delivery {
            Delivery::Answered(result) => Ok(self.execute(ctx, result.commands).await?),
            Delivery::Skipped => Ok(()),
            Delivery::Unavailable => {
                let failing_for = self.failing.failed(client);
                if failing_for < self.config.give_up_after {
                    WebhookStats::inc(&self.stats.given_back);
                    return Err(Box::new(ApiError::new(
                        ErrorCode::Unavailable,
                        "webhook backend unavailable; the event goes back to its gateway",
                    )));
                }
                self.give_up(ctx, kind).await;
                Ok(())
            }
        }
    }

    /// Closes a client the backend has been unreachable for too long (once), and drops the event.
    async fn give_up(&self, ctx: &Context, kind: Kind) {
        WebhookStats::inc(&self.stats.events_dropped);
        if kind == Kind::Close {
            self.failing.forget(ctx.client_id());
            tracing::warn!(client = %ctx.client_id(), "close event dropped: the webhook backend stayed unavailable past the give-up time");
            return;
        }
        if self.failing.give_up(ctx.client_id()) {
            WebhookStats::inc(&self.stats.clients_given_up);
            tracing::warn!(client = %ctx.client_id(), code = GIVE_UP_CODE, "closing a client: the webhook backend stayed unavailable past the give-up time");
            if let Err(error) = ctx.close(GIVE_UP_CODE, GIVE_UP_REASON).await {
                tracing::debug!(client = %ctx.client_id(), %error, "closing a given-up client failed");
            }
        }
    }

    /// Sends one event until it is answered, refused, or out of retries / time.
    async fn deliver(&self, ctx: &Context, kind: Kind, event: Vec<u8>, deadline: Option<Instant>) -> Delivery {
        let client = ctx.client_id();
        if event.len() > self.config.max_batch_bytes {
            return self.too_large(ctx, kind, event.len()).await;
        }
        if kind != Kind::Handshake && self.failing.is_given_up(client) {
            WebhookStats::inc(&self.stats.events_dropped);
            return Delivery::Skipped;
        }
        let event = Bytes::from(event);
        let mut backoff = Backoff::new(self.config.initial_backoff, self.config.max_backoff);
        let mut attempts = 0;
        loop {
            let submitted = self.batchers.submit(client.gateway, event.clone());
            let outcome = match deadline {
                // A handshake's answer is bounded as a whole, not per attempt.
                Some(deadline) => match tokio::time::timeout_at(deadline, submitted).await {
                    Ok(outcome) => outcome,
                    Err(_) => return Delivery::Unavailable,
                },
                None => submitted.await,
            };
            match outcome {
                Ok(raw) => match contract::parse_result(raw, kind, &self.config) {
                    Ok(result) if !result.retry => {
                        self.failing.clear(client);
                        return Delivery::Answered(result);
                    }
                    Ok(_) => {} // the backend asks for the event again
                    Err(error) => {
                        WebhookStats::inc(&self.stats.invalid_results);
                        tracing::warn!(%client, event = kind.as_str(), code = error.code(), %error, "webhook result refused; none of its commands ran");
                        self.failing.clear(client);
                        return Delivery::Skipped;
                    }
                },
                Err(error) if !error.is_retryable() => {
                    self.failing.clear(client);
                    return Delivery::Skipped;
                }
                Err(_) => {}
            }
            attempts += 1;
            let pause = backoff.next_delay();
            let out_of_time = deadline.is_some_and(|d| Instant::now() + pause >= d);
            if out_of_time || (deadline.is_none() && attempts > self.config.retries) {
                return Delivery::Unavailable;
            }
            WebhookStats::inc(&self.stats.retries);
            tokio::time::sleep(pause).await;
        }
    }

    async fn too_large(&self, ctx: &Context, kind: Kind, bytes: usize) -> Delivery {
        WebhookStats::inc(&self.stats.events_dropped);
        tracing::warn!(client = %ctx.client_id(), bytes, limit = self.config.max_batch_bytes, "event larger than a webhook batch; closing the client");
        if kind != Kind::Close && kind != Kind::Handshake {
            let _ = ctx.close(TOO_LARGE_CODE, "message too large for the webhook").await;
        }
        Delivery::Skipped
    }

    /// Runs commands in order. A transient cluster failure stops the run and is returned (the
    /// event goes back to its gateway and the backend sees it again); any other failure is
    /// logged and counted, and the next command runs.
    async fn execute(&self, ctx: &Context, commands: Vec<Command>) -> Result<(), ApiError> {
        for command in commands {
            WebhookStats::inc(&self.stats.commands);
            let name = command.name();
            match run(ctx, command).await {
                Ok(()) => {}
                Err(error) if matches!(error.code, ErrorCode::Unavailable | ErrorCode::Timeout) => return Err(error),
                Err(error) => {
                    WebhookStats::inc(&self.stats.command_failures);
                    tracing::warn!(client = %ctx.client_id(), command = name, code = error.code.as_str(), %error, "webhook command failed");
                }
            }
        }
        Ok(())
    }
}

/// Runs one command for the event of `ctx`'s client (commands without a `client` act on it).
async fn run(ctx: &Context, command: Command) -> Result<(), ApiError> {
    let cluster = ctx.cluster();
    let me = ctx.client_id();
    match command {
        Command::Reply(frame) => ctx.reply(frame).await,
        Command::SendToClients { clients, frame } => cluster.send_to_clients(&clients, &frame).await,
        Command::SendToUids { uids, exclude, frame } => cluster.send_to_uids(&uids, &frame, &exclude).await,
        Command::SendToGroups { groups, exclude, frame } => cluster.send_to_groups(&groups, &frame, &exclude).await,
        Command::SendToAll { exclude, frame } => cluster.send_to_all(&frame, &exclude).await,
        Command::BindUid { client, uid } => match client.filter(|c| *c != me) {
            None => ctx.bind_uid(&uid).await,
            Some(other) => cluster.bind_uid(other, &uid).await,
        },
        Command::UnbindUid { client, uid } => match client.filter(|c| *c != me) {
            None => ctx.unbind_uid(&uid).await,
            Some(other) => cluster.unbind_uid(other, &uid).await,
        },
        Command::JoinGroup { client, group } => cluster.join_group(client.unwrap_or(me), &group).await,
        Command::LeaveGroup { client, group } => cluster.leave_group(client.unwrap_or(me), &group).await,
        Command::Ungroup { group } => cluster.ungroup(&group).await,
        Command::SetSession { client, session } => cluster.set_session(client.unwrap_or(me), &session).await,
        Command::UpdateSession { client, session } => cluster.update_session(client.unwrap_or(me), &session).await,
        Command::Close {
            client,
            code,
            reason,
            last,
        } => {
            cluster
                .close_client_with(client.unwrap_or(me), code, &reason, last.as_ref())
                .await
        }
        Command::Destroy { client } => cluster.destroy_client(client.unwrap_or(me)).await,
    }
}

impl Worker for WebhookWorker {
    async fn on_handshake(&self, ctx: &Context, handshake: &Handshake) -> Result<(), Reject> {
        if !self.config.events.handshake {
            return Ok(());
        }
        let uid = ctx.uid();
        let event = contract::handshake(ctx.client_id(), uid.as_deref(), handshake);
        let deadline = Instant::now() + self.config.handshake_timeout;
        let result = match self.deliver(ctx, Kind::Handshake, event, Some(deadline)).await {
            Delivery::Answered(result) => result,
            // Fail closed: no valid verdict admits nobody.
            Delivery::Skipped => return Err(Reject::new(503, "webhook backend gave no valid verdict")),
            Delivery::Unavailable => {
                WebhookStats::inc(&self.stats.handshakes_unavailable);
                return Err(Reject::new(503, GIVE_UP_REASON));
            }
        };
        if let Some((status, reason)) = result.reject {
            WebhookStats::inc(&self.stats.handshakes_rejected);
            return Err(Reject::new(status, reason));
        }
        // Before the verdict: binds and joins complete before the client's first message.
        self.execute(ctx, result.commands)
            .await
            .map_err(|error| Reject::new(error.code.http_status().as_u16(), error.to_string()))
    }

    async fn on_connect(&self, ctx: &Context) -> HandlerResult {
        if !self.config.events.connect {
            return Ok(());
        }
        let uid = ctx.uid();
        self.forward(ctx, Kind::Connect, contract::connect(ctx.client_id(), uid.as_deref()))
            .await
    }

    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        if !self.config.events.message {
            return Ok(());
        }
        let uid = ctx.uid();
        self.forward(
            ctx,
            Kind::Message,
            contract::message(ctx.client_id(), uid.as_deref(), &frame),
        )
        .await
    }

    async fn on_close(&self, ctx: &Context, close: &CloseInfo) -> HandlerResult {
        if !self.config.events.close {
            self.failing.forget(ctx.client_id());
            return Ok(());
        }
        let uid = ctx.uid();
        self.forward(
            ctx,
            Kind::Close,
            contract::close(ctx.client_id(), uid.as_deref(), close),
        )
        .await
    }
}

/// Clients whose events are failing: since when, and whether they were given up on. Touched
/// only while something fails (the count is checked first), so the message path of a healthy
/// backend takes no lock.
#[derive(Default)]
struct Failing {
    clients: DashMap<ClientId, (Instant, bool)>,
    count: AtomicUsize,
}

impl Failing {
    /// Records a failure of `client` now; returns how long its events have been failing.
    fn failed(&self, client: ClientId) -> std::time::Duration {
        let now = Instant::now();
        let mut fresh = false;
        let since = self
            .clients
            .entry(client)
            .or_insert_with(|| {
                fresh = true;
                (now, false)
            })
            .0;
        if fresh {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        now.duration_since(since)
    }

    /// Marks `client` given up on; returns whether it was not already.
    fn give_up(&self, client: ClientId) -> bool {
        match self.clients.get_mut(&client) {
            Some(mut entry) if !entry.1 => {
                entry.1 = true;
                true
            }
            Some(_) => false,
            None => {
                self.count.fetch_add(1, Ordering::Relaxed);
                self.clients.insert(client, (Instant::now(), true));
                true
            }
        }
    }

    fn is_given_up(&self, client: ClientId) -> bool {
        self.count.load(Ordering::Relaxed) > 0 && self.clients.get(&client).is_some_and(|entry| entry.1)
    }

    /// The backend answered for `client`: its failure clock stops (a given-up client stays so).
    fn clear(&self, client: ClientId) {
        if self.count.load(Ordering::Relaxed) > 0 && self.clients.remove_if(&client, |_, entry| !entry.1).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The client is gone: forget it.
    fn forget(&self, client: ClientId) {
        if self.count.load(Ordering::Relaxed) > 0 && self.clients.remove(&client).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
