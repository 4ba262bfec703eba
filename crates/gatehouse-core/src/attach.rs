//! The member side of the registry protocol.
//!
//! Every gateway, worker and API client keeps one `Attach` stream to **every** listed registry, so
//! the death of one registry loses nothing. Each stream reconnects with back-off forever (until
//! cancelled), sends heartbeats on the interval the registry asks for, and hands everything else
//! to the role through [`RegistryPeer`] callbacks. The role pushes its own messages (route
//! batches, route acks) into the [`RegistrySender`] it is given on each connect.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_proto::MAX_GRPC_MESSAGE_BYTES;
use gatehouse_proto::v1::registry_client::RegistryClient;
use gatehouse_proto::v1::{AttachRequest, Heartbeat, Hello, Member, attach_request, attach_response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::credentials::Credentials;
use crate::lease::LeaseClock;
use crate::secret::log_if_refused;

/// Capacity of the queue of messages a member sends to one registry. Heartbeats and acks are
/// tiny; route batches are coalesced by the gateway, so a full queue means the registry has
/// stopped reading, and the session is restarted.
pub const REGISTRY_QUEUE: usize = 4096;

/// Where a member sends messages to one registry during one session.
pub type RegistrySender = mpsc::Sender<AttachRequest>;

/// Callbacks from the registry streams. They run on the stream's task: keep them short and
/// never block.
pub trait RegistryPeer: Send + Sync + 'static {
    /// A session with registry number `registry` (its index in the configured list) started.
    fn connected(&self, registry: usize, out: RegistrySender);
    /// The registry sent a message.
    fn message(&self, registry: usize, msg: attach_response::Msg);
    /// The session ended; a new one will be attempted.
    fn disconnected(&self, registry: usize);
}

/// How a member attaches to the registries.
#[derive(Debug, Clone)]
pub struct AttachConfig {
    /// Registry gRPC addresses (`host:port` or `http://host:port`).
    pub registries: Vec<String>,
    /// How we prove we belong to the cluster (secret, certificate, or both).
    pub credentials: Credentials,
    /// Who we are.
    pub member: Member,
    /// Whether we want the routing table (workers and API clients).
    pub subscribe_routes: bool,
    /// Cap on the reconnect back-off: keep it well below the registry's lease and warm-up so a
    /// restarted registry hears from every member before it claims a complete table.
    pub max_backoff: Duration,
    /// Where acked heartbeats are recorded, for a member that must know whether it may have
    /// been dropped (gateways fence on a lapse); `None` for members that need not.
    pub lease: Option<Arc<LeaseClock>>,
}

/// Spawns one attachment task per registry; they stop when `token` is cancelled.
pub fn spawn<P: RegistryPeer>(config: AttachConfig, peer: Arc<P>, token: CancellationToken) {
    for (index, addr) in config.registries.iter().enumerate() {
        let config = config.clone();
        let peer = peer.clone();
        let token = token.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            attach_loop(index, addr, config, peer, token).await;
        });
    }
}

async fn attach_loop<P: RegistryPeer>(
    index: usize,
    addr: String,
    config: AttachConfig,
    peer: Arc<P>,
    token: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), config.max_backoff);
    let mut last_error = String::new();
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            _ = token.cancelled() => return,
            outcome = session(index, &addr, &config, &peer, &token) => outcome,
        };
        match outcome {
            Ok(()) => {
                tracing::info!(registry = %addr, "registry session ended");
                last_error.clear();
            }
            Err(error) => {
                // Log a repeated failure once, not on every retry.
                if error != last_error {
                    tracing::warn!(registry = %addr, %error, "registry unreachable; retrying");
                    last_error = error;
                }
            }
        }
        if started.elapsed() > Duration::from_secs(5) {
            backoff.reset();
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn session<P: RegistryPeer>(
    index: usize,
    addr: &str,
    config: &AttachConfig,
    peer: &Arc<P>,
    token: &CancellationToken,
) -> Result<(), String> {
    let channel = config
        .credentials
        .endpoint(addr)
        .map_err(|e| format!("bad registry address or TLS settings: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect failed: {}", crate::credentials::error_chain(&e)))?;
    let mut client = RegistryClient::with_interceptor(channel, config.credentials.client_interceptor())
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);

    let (tx, rx) = mpsc::channel(REGISTRY_QUEUE);
    let hello_at = std::time::Instant::now();
    tx.try_send(AttachRequest {
        msg: Some(attach_request::Msg::Hello(Hello {
            member: Some(config.member.clone()),
            subscribe_routes: config.subscribe_routes,
        })),
    })
    .expect("fresh queue has room");
    let response = client.attach(ReceiverStream::new(rx)).await.map_err(|status| {
        log_if_refused(&status, addr);
        format!("attach refused: {}", status.message())
    })?;
    let mut inbound = response.into_inner();

    // The first message must be the welcome: it carries the heartbeat interval.
    let welcome = match inbound.message().await {
        Ok(Some(gatehouse_proto::v1::AttachResponse {
            msg: Some(attach_response::Msg::Welcome(welcome)),
        })) => welcome,
        Ok(_) => return Err("registry did not welcome us".to_owned()),
        Err(status) => {
            log_if_refused(&status, addr);
            return Err(format!("attach failed: {}", status.message()));
        }
    };
    tracing::info!(registry = %addr, registry_id = %crate::NodeId(welcome.registry_id), "attached to registry");
    let heartbeat_every = Duration::from_millis(welcome.heartbeat_interval_ms.max(10));
    // Only a registry that acks heartbeats proves the lease; the welcome proves the hello.
    let mut renewals = (welcome.acks_heartbeats)
        .then(|| config.lease.clone())
        .flatten()
        .map(|clock| Renewals::new(clock, index, Duration::from_millis(welcome.lease_ms)));
    if let Some(renewals) = &renewals {
        renewals.clock.renewed(index, hello_at, renewals.lease);
    }
    peer.connected(index, tx.clone());

    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats = 0u64;
    let result = loop {
        tokio::select! {
            _ = token.cancelled() => break Ok(()),
            _ = heartbeat.tick() => {
                beats += 1;
                let beat = AttachRequest { msg: Some(attach_request::Msg::Heartbeat(Heartbeat { seq: beats })) };
                if tx.try_send(beat).is_err() {
                    break Err("registry queue full or closed".to_owned());
                }
                if let Some(renewals) = &mut renewals {
                    renewals.sent(beats);
                }
            }
            message = inbound.message() => match message {
                Ok(Some(response)) => match response.msg {
                    Some(attach_response::Msg::HeartbeatAck(ack)) => {
                        if let Some(renewals) = &mut renewals {
                            renewals.acked(ack.seq);
                        }
                    }
                    Some(msg) => peer.message(index, msg),
                    None => {}
                },
                Ok(None) => break Err("registry closed the stream".to_owned()),
                Err(status) => {
                    log_if_refused(&status, addr);
                    break Err(format!("stream failed: {}", status.message()));
                }
            }
        }
    };
    peer.disconnected(index);
    result
}

/// The heartbeats of one session not yet acked, with their send times: an ack turns its
/// heartbeat's send time into a renewal of the lease.
struct Renewals {
    clock: Arc<LeaseClock>,
    registry: usize,
    lease: Duration,
    unacked: std::collections::VecDeque<(u64, std::time::Instant)>,
}

impl Renewals {
    /// Beyond this many unacked heartbeats the oldest are forgotten: a registry that stopped
    /// acking renews nothing anyway, and the queue must stay bounded.
    const MAX_UNACKED: usize = 64;

    fn new(clock: Arc<LeaseClock>, registry: usize, lease: Duration) -> Renewals {
        Renewals {
            clock,
            registry,
            lease,
            unacked: std::collections::VecDeque::new(),
        }
    }

    fn sent(&mut self, seq: u64) {
        if self.unacked.len() == Self::MAX_UNACKED {
            self.unacked.pop_front();
        }
        self.unacked.push_back((seq, std::time::Instant::now()));
    }

    fn acked(&mut self, seq: u64) {
        while let Some(&(sent_seq, sent_at)) = self.unacked.front() {
            if sent_seq > seq {
                break;
            }
            self.unacked.pop_front();
            if sent_seq == seq {
                self.clock.renewed(self.registry, sent_at, self.lease);
                break;
            }
        }
    }
}
