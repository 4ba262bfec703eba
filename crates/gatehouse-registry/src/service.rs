//! The tonic `Registry` service: turns each `Attach` stream into inputs for the state machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_core::NodeId;
use gatehouse_proto::ErrorCode;
use gatehouse_proto::tonic::{self, Request, Response, Status, Streaming};
use gatehouse_proto::v1::registry_server::Registry;
use gatehouse_proto::v1::{AttachRequest, AttachResponse, Hello, Member, MemberKind, attach_request};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::config::RegistryConfig;
use crate::packed::Outgoing;
use crate::state::{Input, OUTBOUND_QUEUE, State};

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest member address or name: every member receives every other's in each membership.
const MAX_LABEL_BYTES: usize = 256;

pub(crate) struct RegistryService {
    inputs: mpsc::Sender<Input>,
    next_session: Arc<AtomicU64>,
}

impl RegistryService {
    pub(crate) fn start(
        id: NodeId,
        config: RegistryConfig,
        stats: Arc<crate::stats::Stats>,
        token: CancellationToken,
    ) -> RegistryService {
        let (inputs, rx) = mpsc::channel(8192);
        tokio::spawn(State::new(id, config, stats).run(rx, token));
        RegistryService {
            inputs,
            next_session: Arc::new(AtomicU64::new(1)),
        }
    }
}

#[tonic::async_trait]
impl Registry for RegistryService {
    /// The member's queue, each shared message unpacked as the stream encodes it.
    type AttachStream = std::pin::Pin<Box<dyn Stream<Item = Result<AttachResponse, Status>> + Send>>;

    async fn attach(&self, request: Request<Streaming<AttachRequest>>) -> Result<Response<Self::AttachStream>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let certified = gatehouse_core::tls::peer_role(&request);
        let mut inbound = request.into_inner();
        let hello = read_hello(&mut inbound).await?;
        let member = check_member(hello.member, certified, &peer)?;
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        tracing::info!(session, member = %NodeId(member.id), kind = ?member.kind(), addr = %member.addr, %peer, "member attached");
        self.inputs
            .send(Input::Attach {
                session,
                member,
                subscribe: hello.subscribe_routes,
                tx,
            })
            .await
            .map_err(|_| ErrorCode::Unavailable.status("registry is shutting down"))?;
        tokio::spawn(forward(inbound, session, self.inputs.clone()));
        let outbound = ReceiverStream::new(rx).map(|message| message.map(Outgoing::into_response));
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// Waits (at most [`HELLO_TIMEOUT`]) for the stream's first message, which must be a hello.
async fn read_hello(inbound: &mut Streaming<AttachRequest>) -> Result<Hello, Status> {
    match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(AttachRequest {
            msg: Some(attach_request::Msg::Hello(hello)),
        }))) => Ok(hello),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(ErrorCode::Timeout.status("no hello within 5s")),
        Ok(_) => Err(ErrorCode::BadRequest.status("the first message must be hello")),
    }
}

/// Checks what a hello announces: a kind and an id, a role its certificate allows, an address
/// for a gateway, and labels small enough to go to every member in each membership.
fn check_member(
    member: Option<Member>,
    certified: Option<gatehouse_core::tls::Role>,
    peer: &str,
) -> Result<Member, Status> {
    let member = member.ok_or_else(|| ErrorCode::BadRequest.status("hello without member"))?;
    let kind = MemberKind::try_from(member.kind).unwrap_or(MemberKind::Unspecified);
    if kind == MemberKind::Unspecified || member.id == 0 {
        return Err(ErrorCode::BadRequest.status("hello needs a member kind and a non-zero id"));
    }
    if let Some(role) = certified
        && !role_may_attach_as(role, kind)
    {
        tracing::warn!(%peer, %role, kind = ?kind, "refused member: its certificate names another role");
        return Err(ErrorCode::Unauthenticated.status(format!("a {role} certificate may not attach as {kind:?}")));
    }
    if kind == MemberKind::Gateway && member.addr.is_empty() {
        return Err(ErrorCode::BadRequest.status("a gateway must announce its internal address"));
    }
    if member.addr.len() > MAX_LABEL_BYTES || member.name.len() > MAX_LABEL_BYTES {
        return Err(ErrorCode::BadRequest.status(format!(
            "a member's address and name are at most {MAX_LABEL_BYTES} bytes"
        )));
    }
    Ok(member)
}

/// Turns the rest of one stream into inputs for the state machine, then reports its end:
/// graceful when the member closed it, not when it broke or misbehaved (a second hello).
async fn forward(mut inbound: Streaming<AttachRequest>, session: u64, inputs: mpsc::Sender<Input>) {
    let graceful = loop {
        match inbound.message().await {
            Ok(Some(AttachRequest { msg: Some(msg) })) => {
                let input = match msg {
                    attach_request::Msg::Heartbeat(beat) => Input::Heartbeat { session, seq: beat.seq },
                    attach_request::Msg::Routes(batch) => Input::Routes { session, batch },
                    attach_request::Msg::RouteAck(ack) => Input::RouteAck { session, seq: ack.seq },
                    attach_request::Msg::Hello(_) => {
                        tracing::warn!(session, "second hello on one stream; closing it");
                        break false;
                    }
                };
                if inputs.send(input).await.is_err() {
                    return;
                }
            }
            Ok(Some(AttachRequest { msg: None })) => {}
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    let _ = inputs.send(Input::Detach { session, graceful }).await;
}

/// Whether a member proven (by its certificate) to be `role` may attach as `kind`: a gateway as a
/// gateway, a worker as a worker, and cluster API clients (the API role, or a worker's own
/// client) as clients. Without this a worker's certificate could announce routes as a gateway.
fn role_may_attach_as(role: gatehouse_core::tls::Role, kind: MemberKind) -> bool {
    use gatehouse_core::tls::Role;
    matches!(
        (role, kind),
        (Role::Gateway, MemberKind::Gateway)
            | (Role::Worker, MemberKind::Worker)
            | (Role::Worker | Role::Api, MemberKind::Client)
    )
}

#[cfg(test)]
mod tests {
    use gatehouse_core::tls::Role;

    use super::*;

    #[test]
    fn a_certificate_admits_a_member_only_as_its_own_kind() {
        assert!(role_may_attach_as(Role::Gateway, MemberKind::Gateway));
        assert!(role_may_attach_as(Role::Worker, MemberKind::Worker));
        assert!(role_may_attach_as(Role::Api, MemberKind::Client));
        assert!(role_may_attach_as(Role::Worker, MemberKind::Client));
        assert!(
            !role_may_attach_as(Role::Worker, MemberKind::Gateway),
            "a worker announcing routes"
        );
        assert!(
            !role_may_attach_as(Role::Api, MemberKind::Worker),
            "an API key holder taking events"
        );
        assert!(!role_may_attach_as(Role::Gateway, MemberKind::Worker));
        assert!(!role_may_attach_as(Role::Registry, MemberKind::Gateway));
    }
}
