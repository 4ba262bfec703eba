//! How a process proves it belongs to the cluster, and checks that its peers do: a shared
//! secret (`x-gatehouse-secret`, compared in constant time), a certificate from the cluster CA
//! that names the member's role (mutual TLS), or both.
//!
//! With TLS the secret becomes optional: a member is admitted by its certificate, which cannot
//! be replayed by someone who watched the traffic, and its role decides what it may do.

use std::future::Future;
use std::sync::Arc;

use gatehouse_proto::ErrorCode;
use gatehouse_proto::tonic::service::Interceptor;
use gatehouse_proto::tonic::transport::Endpoint;
use gatehouse_proto::tonic::transport::server::{Router, TcpIncoming};
use gatehouse_proto::tonic::{Request, Status};
use tokio::net::TcpListener;

use crate::secret::{AttachSecret, CheckSecret, ClusterSecret};
use crate::tls::{ClusterTls, Role, peer_role};

/// A member's credentials for internal gRPC, both ways.
#[derive(Clone, Debug)]
pub struct Credentials {
    secret: Option<ClusterSecret>,
    tls: Option<Arc<ClusterTls>>,
}

/// Why credentials are unusable.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Neither a secret nor TLS: the cluster would admit anyone.
    #[error(
        "no cluster credentials: set GATEHOUSE_CLUSTER_SECRET, or the cluster TLS files (--cluster-ca, --cluster-cert, --cluster-key), or both"
    )]
    None,
}

impl From<ClusterSecret> for Credentials {
    fn from(secret: ClusterSecret) -> Credentials {
        Credentials {
            secret: Some(secret),
            tls: None,
        }
    }
}

impl Credentials {
    /// Credentials from a secret, TLS material, or both; at least one is required.
    pub fn new(secret: Option<ClusterSecret>, tls: Option<ClusterTls>) -> Result<Credentials, CredentialsError> {
        if secret.is_none() && tls.is_none() {
            return Err(CredentialsError::None);
        }
        Ok(Credentials {
            secret,
            tls: tls.map(Arc::new),
        })
    }

    /// Whether internal connections are encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The secret, if one is configured.
    pub fn secret(&self) -> Option<&ClusterSecret> {
        self.secret.as_ref()
    }

    /// The role this process's certificate proves, with TLS.
    pub fn role(&self) -> Option<Role> {
        self.tls.as_ref().map(|t| t.role())
    }

    /// Attaches the secret (if any) to outgoing calls.
    pub fn client_interceptor(&self) -> AttachCredentials {
        AttachCredentials(self.secret.as_ref().map(ClusterSecret::client_interceptor))
    }

    /// Refuses incoming calls without the secret (if one is configured) or, with TLS, from a
    /// peer whose certificate names none of `accept`.
    pub fn server_interceptor(&self, service: &'static str, accept: &'static [Role]) -> CheckCredentials {
        CheckCredentials {
            secret: self.secret.as_ref().map(|s| s.server_interceptor(service)),
            tls: self.tls.is_some().then_some(accept),
            service,
        }
    }

    /// An endpoint for `addr` (`host:port`, a scheme in front is accepted and replaced): `https`
    /// with the cluster's TLS when configured, `http` otherwise, so one address list works for
    /// both and a member never talks plaintext to a TLS cluster by a typo.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, gatehouse_proto::tonic::transport::Error> {
        let bare = addr
            .strip_prefix("https://")
            .or_else(|| addr.strip_prefix("http://"))
            .unwrap_or(addr);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{bare}"))?;
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.client_config()),
            None => Ok(endpoint),
        }
    }

    /// Serves a gRPC router on `listener` until `shutdown`: plain TCP, or with the cluster's
    /// mutual TLS (handshakes logged and bounded, see [`crate::tls::incoming`]).
    pub async fn serve(
        &self,
        router: Router,
        listener: TcpListener,
        service: &'static str,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        match &self.tls {
            None => router
                .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
                .await
                .map_err(ServeError::Transport),
            Some(tls) => {
                let acceptor = tls.acceptor().map_err(ServeError::Tls)?;
                router
                    .serve_with_incoming_shutdown(crate::tls::incoming(listener, acceptor, service), shutdown)
                    .await
                    .map_err(ServeError::Transport)
            }
        }
    }
}

/// Why an internal gRPC server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport failed.
    #[error("grpc server failed: {0}")]
    Transport(gatehouse_proto::tonic::transport::Error),
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(crate::tls::TlsError),
}

/// Client-side interceptor: attaches the secret when there is one.
#[derive(Clone)]
pub struct AttachCredentials(Option<AttachSecret>);

impl Interceptor for AttachCredentials {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match &mut self.0 {
            Some(secret) => secret.call(request),
            None => Ok(request),
        }
    }
}

/// Server-side interceptor: the secret, then (with TLS) the peer's role.
#[derive(Clone)]
pub struct CheckCredentials {
    secret: Option<CheckSecret>,
    tls: Option<&'static [Role]>,
    service: &'static str,
}

impl Interceptor for CheckCredentials {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let request = match &mut self.secret {
            Some(secret) => secret.call(request)?,
            None => request,
        };
        let Some(accept) = self.tls else {
            return Ok(request);
        };
        let peer = request
            .remote_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        match peer_role(&request) {
            Some(role) if accept.contains(&role) => Ok(request),
            Some(role) => {
                tracing::warn!(service = self.service, %peer, %role, "refused internal call: this role may not call this service");
                Err(ErrorCode::Unauthenticated.status(format!("a {role} may not call the {}", self.service)))
            }
            None => {
                tracing::warn!(service = self.service, %peer, "refused internal call: no cluster certificate naming a role");
                Err(ErrorCode::Unauthenticated.status("no cluster certificate naming a role"))
            }
        }
    }
}

/// A listener would accept unencrypted connections from other machines.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve {what} unencrypted on {addr}, which is not a loopback address: configure TLS, \
     or pass --insecure-plaintext if the network itself is trusted (a private overlay, a service mesh)"
)]
pub struct PlaintextRefused {
    /// The listener, in words (`"the public WebSocket listener"`).
    pub what: &'static str,
    /// The address it would listen on.
    pub addr: std::net::SocketAddr,
}

/// Refuses plaintext on a non-loopback `addr` unless the operator said the network is trusted.
///
/// Plain TCP stays the easy path on one machine (`gatehouse dev`, tests); anywhere else a
/// listener without TLS exposes tokens, messages and the cluster secret to the network, so that
/// needs a flag whose name says what it means.
pub fn check_plaintext(
    what: &'static str,
    addr: std::net::SocketAddr,
    encrypted: bool,
    insecure_plaintext: bool,
) -> Result<(), PlaintextRefused> {
    if encrypted || insecure_plaintext || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(PlaintextRefused { what, addr })
    }
}

/// An error with its causes (`transport error: tls handshake: invalid peer certificate: …`):
/// tonic's transport errors say only "transport error" at the top, which hides the reason a
/// member cannot connect (a certificate from another CA, a wrong name) from the operator.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
