//! [`Backend`]: the HTTP client that POSTs signed batches to the backend over a pool of
//! keep-alive connections, with a deadline on each request and a cap on the response.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::WebhookConfig;
use crate::signature;

/// Why a request did not produce a usable response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No connection, or it broke before the response was read.
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    /// No complete response within the request timeout.
    #[error("backend did not answer within {0:?}")]
    Timeout(Duration),
    /// A status that asks for a retry (408, 429, 5xx) or is not understood.
    #[error("backend answered {0}")]
    Status(u16),
    /// A 4xx other than 408 and 429: the backend refuses the batch as malformed. Retrying
    /// cannot help; the events are acknowledged without commands and counted.
    #[error("backend refused the batch with {0}")]
    Refused(u16),
    /// A response body over the size limit.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// A response that is not a result per event.
    #[error("{0}")]
    Invalid(String),
}

impl DeliveryError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, DeliveryError::Refused(_))
    }
}

/// The pooled client of one webhook worker.
#[derive(Clone)]
pub struct Backend {
    client: Client<HttpConnector, Full<Bytes>>,
    url: http::Uri,
    /// `host[:port]`, for the `Host` header.
    authority: http::HeaderValue,
    secret: std::sync::Arc<[u8]>,
    timeout: Duration,
    max_response_bytes: usize,
}

impl Backend {
    /// Builds the client (no connection is made until the first request).
    pub fn new(config: &WebhookConfig) -> Backend {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.request_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.pool_idle)
            .build(connector);
        let authority = config
            .url
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            .expect("a validated url has an authority");
        Backend {
            client,
            url: config.url.clone(),
            authority,
            secret: config.secret.clone().into(),
            timeout: config.request_timeout,
            max_response_bytes: config.max_response_bytes,
        }
    }

    /// POSTs `body`, signed now; returns the body of a 2xx response.
    pub async fn post(&self, body: Vec<u8>) -> Result<Bytes, DeliveryError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let signature = signature::sign(&self.secret, now, &body);
        let request = http::Request::post(self.url.clone())
            .header(http::header::HOST, self.authority.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "gatehouse-webhook")
            .header(signature::HEADER, signature)
            .body(Full::new(Bytes::from(body)))
            .expect("a request of valid parts");
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&self, request: http::Request<Full<Bytes>>) -> Result<Bytes, DeliveryError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| DeliveryError::Unreachable(error_chain(&e)))?;
        let status = response.status();
        if let Some(length) = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            && length > self.max_response_bytes
        {
            return Err(DeliveryError::TooLarge(self.max_response_bytes));
        }
        // The body is read even for a failure status, so that the connection can be reused.
        let body = Limited::new(response.into_body(), self.max_response_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    DeliveryError::TooLarge(self.max_response_bytes)
                } else {
                    DeliveryError::Unreachable(e.to_string())
                }
            })?
            .to_bytes();
        match status.as_u16() {
            200..=299 => Ok(body),
            408 | 429 => Err(DeliveryError::Status(status.as_u16())),
            code @ 400..=499 => Err(DeliveryError::Refused(code)),
            code => Err(DeliveryError::Status(code)),
        }
    }
}

/// An error and its causes on one line (hyper's own message is only "client error (Connect)").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
