//! One synthetic member's stream to the registry: the same hello, welcome and heartbeats as a
//! real gateway or worker, from outside (the public gRPC contract and the cluster secret's
//! metadata header), so the registry cannot tell the difference.

use std::time::Duration;

use gatehouse_proto::MAX_GRPC_MESSAGE_BYTES;
use gatehouse_proto::tonic::metadata::MetadataValue;
use gatehouse_proto::tonic::{self, Streaming};
use gatehouse_proto::v1::registry_client::RegistryClient;
use gatehouse_proto::v1::{
    AttachRequest, AttachResponse, Heartbeat, Hello, Member, MemberKind, attach_request, attach_response,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The metadata header that carries the cluster secret (the registry's documented contract).
const SECRET_HEADER: &str = "x-gatehouse-secret";

/// Messages queued towards the registry: load batches wait here while HTTP/2 drains them.
const OUTBOUND: usize = 256;

/// Where a synthetic member attaches and how it proves it belongs.
#[derive(Clone)]
pub(super) struct Registry {
    /// `http://host:port` of the registry's gRPC listener.
    pub url: String,
    /// The cluster secret, when the registry wants one.
    pub secret: Option<String>,
}

/// An attached session: send with `tx`, read `inbound`, beat every `heartbeat_every`.
pub(super) struct Session {
    pub tx: mpsc::Sender<AttachRequest>,
    pub inbound: Streaming<AttachResponse>,
    pub heartbeat_every: Duration,
    beats: u64,
}

impl Session {
    /// Sends the next heartbeat; `false` when the stream is gone.
    pub async fn beat(&mut self) -> bool {
        self.beats += 1;
        let beat = attach_request::Msg::Heartbeat(Heartbeat { seq: self.beats });
        self.send(beat).await
    }

    /// Queues one message; `false` when the stream is gone.
    pub async fn send(&self, msg: attach_request::Msg) -> bool {
        self.tx.send(AttachRequest { msg: Some(msg) }).await.is_ok()
    }
}

/// A member of `kind` with a random id, as a process start would make.
pub(super) fn member(kind: MemberKind, name: String) -> Member {
    Member {
        kind: kind as i32,
        id: rand::random::<u64>() | 1,
        // Port 9 (discard) is closed on loopback: a worker that dials this gateway is refused at
        // once and backs off, which is all a synthetic gateway needs from it.
        addr: if kind == MemberKind::Gateway {
            "127.0.0.1:9".to_owned()
        } else {
            String::new()
        },
        name,
    }
}

/// Attaches, retrying every 20 ms (a restarted registry is back within milliseconds) until it
/// succeeds or `token` is cancelled.
pub(super) async fn attach_until(
    registry: &Registry,
    member: &Member,
    subscribe: bool,
    token: &CancellationToken,
) -> Option<Session> {
    loop {
        match attach(registry, member, subscribe).await {
            Ok(session) => return Some(session),
            Err(error) => tracing::debug!(%error, "synthetic member not attached; retrying"),
        }
        tokio::select! {
            _ = token.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

async fn attach(registry: &Registry, member: &Member, subscribe: bool) -> Result<Session, String> {
    let channel = tonic::transport::Endpoint::from_shared(registry.url.clone())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let secret = match &registry.secret {
        Some(secret) => Some(MetadataValue::try_from(secret.as_str()).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut client = RegistryClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        if let Some(secret) = &secret {
            request.metadata_mut().insert(SECRET_HEADER, secret.clone());
        }
        Ok(request)
    })
    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let (tx, mut rx) = mpsc::channel(OUTBOUND);
    let hello = Hello {
        member: Some(member.clone()),
        subscribe_routes: subscribe,
    };
    tx.try_send(AttachRequest {
        msg: Some(attach_request::Msg::Hello(hello)),
    })
    .expect("a fresh queue has room");
    let outbound = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut inbound = client
        .attach(outbound)
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    match inbound.message().await {
        Ok(Some(AttachResponse {
            msg: Some(attach_response::Msg::Welcome(welcome)),
        })) => Ok(Session {
            tx,
            inbound,
            heartbeat_every: Duration::from_millis(welcome.heartbeat_interval_ms.max(10)),
            beats: 0,
        }),
        Ok(_) => Err("the registry did not welcome us".to_owned()),
        Err(status) => Err(status.message().to_owned()),
    }
}
