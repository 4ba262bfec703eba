//! The cluster secret: every internal gRPC call carries it, every internal server checks it in
//! constant time, and both sides say so clearly in the log when it is missing or wrong (the silent
//! misconfiguration of GatewayWorker is the pain this avoids).

use std::fmt;
use std::sync::Arc;

use gatehouse_proto::ErrorCode;
use gatehouse_proto::tonic::metadata::{Ascii, MetadataValue};
use gatehouse_proto::tonic::service::Interceptor;
use gatehouse_proto::tonic::{Request, Status};
use subtle::ConstantTimeEq;

/// The metadata key that carries the secret.
pub const SECRET_HEADER: &str = "x-gatehouse-secret";

/// The shared secret of a cluster. Its `Debug` form never shows the value.
#[derive(Clone)]
pub struct ClusterSecret(Arc<str>);

/// Why a configured secret is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No secret was configured.
    #[error("the cluster secret is empty: set GATEHOUSE_CLUSTER_SECRET or --cluster-secret")]
    Empty,
    /// The secret cannot travel in a gRPC header.
    #[error("the cluster secret must be printable ascii without spaces")]
    NotPrintable,
}

impl ClusterSecret {
    /// Validates and wraps a secret.
    pub fn new(secret: &str) -> Result<ClusterSecret, SecretError> {
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::NotPrintable);
        }
        Ok(ClusterSecret(secret.into()))
    }

    /// Draws a random secret, for `gatehouse dev` where every role lives in one process.
    pub fn random() -> ClusterSecret {
        let bytes: [u8; 24] = rand::random();
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        ClusterSecret(text.into())
    }

    /// Compares a presented secret in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// Returns an interceptor that attaches the secret to outgoing calls.
    pub fn client_interceptor(&self) -> AttachSecret {
        let value = MetadataValue::try_from(&*self.0).expect("validated secret is a header value");
        AttachSecret(value)
    }

    /// Returns an interceptor that refuses incoming calls without the right secret.
    pub fn server_interceptor(&self, service: &'static str) -> CheckSecret {
        CheckSecret {
            secret: self.clone(),
            service,
        }
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Client-side interceptor adding [`SECRET_HEADER`].
#[derive(Clone)]
pub struct AttachSecret(MetadataValue<Ascii>);

impl Interceptor for AttachSecret {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(SECRET_HEADER, self.0.clone());
        Ok(request)
    }
}

/// Server-side interceptor checking [`SECRET_HEADER`].
#[derive(Clone)]
pub struct CheckSecret {
    secret: ClusterSecret,
    service: &'static str,
}

impl Interceptor for CheckSecret {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let peer = request
            .remote_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        match request.metadata().get(SECRET_HEADER) {
            Some(value) if self.secret.matches(value.as_bytes()) => Ok(request),
            Some(_) => {
                tracing::warn!(service = self.service, %peer, "refused internal call: wrong cluster secret");
                Err(ErrorCode::Unauthenticated.status("wrong cluster secret"))
            }
            None => {
                tracing::warn!(service = self.service, %peer, "refused internal call: no cluster secret");
                Err(ErrorCode::Unauthenticated.status("missing cluster secret"))
            }
        }
    }
}

/// Logs a refused call from the caller's side in words that point at the fix, and says whether
/// the status was such a refusal.
pub fn log_if_refused(status: &Status, peer: &str) -> bool {
    if status.code() == gatehouse_proto::tonic::Code::Unauthenticated {
        tracing::error!(
            %peer,
            reason = status.message(),
            "peer refused our cluster secret: every process of a cluster needs the same GATEHOUSE_CLUSTER_SECRET"
        );
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        let secret = ClusterSecret::new("s3cret").unwrap();
        assert!(secret.matches(b"s3cret"));
        assert!(!secret.matches(b"s3cre"));
        assert!(!secret.matches(b"s3cret!"));
        assert!(!secret.matches(b""));
        assert!(ClusterSecret::new("").is_err());
        assert!(ClusterSecret::new("with space").is_err());
        assert_eq!(format!("{secret:?}"), "ClusterSecret(..)");
    }

    #[test]
    fn server_interceptor_refuses_missing_and_wrong_secrets() {
        let secret = ClusterSecret::new("right").unwrap();
        let mut check = secret.server_interceptor("test");
        assert_eq!(
            check.call(Request::new(())).unwrap_err().code(),
            gatehouse_proto::tonic::Code::Unauthenticated
        );
        let mut wrong = Request::new(());
        wrong.metadata_mut().insert(SECRET_HEADER, "wrong".parse().unwrap());
        assert!(check.call(wrong).is_err());
        let good = secret.client_interceptor().call(Request::new(())).unwrap();
        assert!(check.call(good).is_ok());
    }
}
