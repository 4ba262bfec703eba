//! The HTTP/JSON front end: `POST /api/v1/<operation>`, `POST /api/v1/batch`, plus `/healthz`,
//! `/readyz` and `/metrics`, served by our own accept loop over hyper's HTTP/1.1 server (for the
//! header-read timeout and the connection cap that `axum::serve` lacks).
//!
//! Every answer is JSON: `{"result": {…}}`, `{"results": […]}` for a batch, or
//! `{"error": {"code": "…", "message": "…"}}` with the status of [`Failure::http_status`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use gatehouse_proto::ErrorCode;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Failure, Refusal, retry_after_seconds};
use crate::json;
use crate::ops::{OpKind, Output};
use crate::service::{Api, Call};
use crate::stats::Stats;

/// The header that carries a send's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// The header set on an answer that was replayed from the idempotency cache.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Largest request head (request line and headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Batch results at most this large are always kept, even past the response budget: they
/// are the answers of operations that changed something (sends, binds, closes), and a caller
/// must learn whether those succeeded.
const SMALL_RESULT_BYTES: usize = 256;

/// The router of the HTTP API.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/batch", any(batch))
        .route("/api/v1/{op}", any(operation))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(no_route)
        .with_state(api)
}

async fn no_route(State(api): State<Arc<Api>>) -> Response {
    let failure = Failure {
        refusal: Refusal::NoRoute,
        ..Failure::new(
            ErrorCode::NotFound,
            "no such endpoint: operations are POST /api/v1/<operation>",
        )
    };
    api.stats().failure(&failure);
    failure_response(&failure)
}

async fn readyz(State(api): State<Arc<Api>>) -> Response {
    let body = serde_json::json!({"connected": api.is_connected(), "keys": api.keys().len()});
    let status = if api.is_connected() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let text = api.stats().render(&api.gauges());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[derive(Serialize)]
struct ResultEnvelope<'a> {
    result: &'a Output,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

fn error_json(failure: &Failure) -> Vec<u8> {
    serde_json::to_vec(&ErrorEnvelope {
        error: ErrorBody {
            code: failure.code.as_str(),
            message: &failure.message,
        },
    })
    .expect("strings serialise")
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The response of a failed request.
pub fn failure_response(failure: &Failure) -> Response {
    let mut response = json_response(failure.http_status(), error_json(failure));
    let headers = response.headers_mut();
    if let Some(after) = failure.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(after)));
    }
    if failure.http_status() == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if failure.refusal == Refusal::Method {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

fn method_not_allowed() -> Failure {
    Failure {
        refusal: Refusal::Method,
        ..Failure::bad_request("API operations are called with POST")
    }
}

async fn operation(State(api): State<Arc<Api>>, Path(name): Path<String>, request: Request) -> Response {
    match run_operation(&api, &name, request).await {
        Ok(response) => response,
        Err(failure) => {
            api.stats().failure(&failure);
            failure_response(&failure)
        }
    }
}

async fn run_operation(api: &Api, name: &str, request: Request) -> Result<Response, Failure> {
    if request.method() != Method::POST {
        return Err(method_not_allowed());
    }
    let _permit = api.admit()?;
    let (parts, body) = request.into_parts();
    let key = api.authenticate(parts.headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes))?;
    api.charge(&key, 1)?;
    let kind = OpKind::from_name(name).ok_or_else(|| Failure {
        refusal: Refusal::NoRoute,
        ..Failure::new(
            ErrorCode::NotFound,
            format!("no operation named {:?}", name.chars().take(64).collect::<String>()),
        )
    })?;
    let body = read_body(&parts.headers, body, api.limits().max_body_bytes).await?;
    let call = json::parse_body(kind, &body, api.limits())?;
    let call = with_header_key(call, &parts.headers)?;
    api.authorize(&key, kind)?;
    let output = api.run(&key, call, api.deadline()).await?;
    let body = serde_json::to_vec(&ResultEnvelope { result: &output })
        .map_err(|e| Failure::internal(format!("encoding the answer: {e}")))?;
    let limit = api.limits().max_response_bytes;
    if body.len() > limit {
        return Err(Failure::bad_request(format!(
            "the answer is {} bytes, over the limit of {limit}: ask for counts or fewer keys",
            body.len()
        )));
    }
    let mut response = json_response(StatusCode::OK, body);
    if output == (Output::Sent { replayed: true }) {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Merges the `Idempotency-Key` header into a call (the body's `idempotency_key` may say the
/// same, but not something else).
fn with_header_key(call: Call, headers: &HeaderMap) -> Result<Call, Failure> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(call);
    };
    let header = value
        .to_str()
        .map_err(|_| Failure::bad_request("the Idempotency-Key header must be printable ASCII"))?
        .to_owned();
    match &call.idempotency_key {
        Some(field) if *field != header => Err(Failure::bad_request(
            "the Idempotency-Key header and the body's idempotency_key differ",
        )),
        Some(_) => Ok(call),
        None => call.with_idempotency_key(Some(header)),
    }
}

/// Reads a body of at most `limit` bytes; a larger one is refused with 413 without reading it.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Failure> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Failure::too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Failure::too_large(limit)),
        Err(error) => Err(Failure::bad_request(format!("reading the request body: {error}"))),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    ops: Vec<serde_json::Value>,
}

async fn batch(State(api): State<Arc<Api>>, request: Request) -> Response {
    match run_batch(&api, request).await {
        Ok(response) => response,
        Err(failure) => {
            api.stats().failure(&failure);
            failure_response(&failure)
        }
    }
}

async fn run_batch(api: &Api, request: Request) -> Result<Response, Failure> {
    if request.method() != Method::POST {
        return Err(method_not_allowed());
    }
    let _permit = api.admit()?;
    let (parts, body) = request.into_parts();
    let key = api.authenticate(parts.headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes))?;
    if parts.headers.contains_key(IDEMPOTENCY_HEADER) {
        return Err(Failure::bad_request(
            "a batch takes no Idempotency-Key header: give each send its own idempotency_key",
        ));
    }
    let limits = api.limits();
    let body = read_body(&parts.headers, body, limits.max_body_bytes).await?;
    let batch: BatchBody =
        serde_json::from_slice(&body).map_err(|e| Failure::bad_request(format!("invalid batch body: {e}")))?;
    drop(body);
    if batch.ops.len() > limits.max_batch_ops {
        return Err(Failure::bad_request(format!(
            "the batch has {} operations; at most {}",
            batch.ops.len(),
            limits.max_batch_ops
        )));
    }
    // The whole batch is checked before anything runs: a malformed batch changes nothing.
    let mut calls = Vec::with_capacity(batch.ops.len());
    for (index, item) in batch.ops.into_iter().enumerate() {
        let call = json::parse_item(item, limits).map_err(|f| Failure {
            message: format!("ops[{index}]: {}", f.message),
            ..f
        })?;
        api.authorize(&key, call.op.kind()).map_err(|f| Failure {
            message: format!("ops[{index}]: {}", f.message),
            ..f
        })?;
        calls.push(call);
    }
    api.charge(&key, u32::try_from(calls.len()).unwrap_or(u32::MAX))?;
    let deadline = api.deadline();
    let budget = limits.max_response_bytes;
    let mut out = Vec::with_capacity(64 * calls.len() + 16);
    out.extend_from_slice(b"{\"results\":[");
    for (index, call) in calls.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let item = match api.run(&key, call, deadline).await {
            Ok(output) => serde_json::to_vec(&ResultEnvelope { result: &output })
                .map_err(|e| Failure::internal(format!("encoding the answer: {e}"))),
            Err(failure) => Err(failure),
        };
        let item = match item {
            Ok(bytes) if bytes.len() <= SMALL_RESULT_BYTES || out.len() + bytes.len() <= budget => bytes,
            Ok(bytes) => {
                let failure = Failure::bad_request(format!(
                    "this answer of {} bytes does not fit in the batch's limit of {budget} bytes: ask for counts \
                     or fewer keys",
                    bytes.len()
                ));
                api.stats().failure(&failure);
                error_json(&failure)
            }
            Err(failure) => {
                api.stats().failure(&failure);
                error_json(&failure)
            }
        };
        out.extend_from_slice(&item);
    }
    out.extend_from_slice(b"]}");
    Ok(json_response(StatusCode::OK, out))
}

/// Accepts HTTP connections until `token` is cancelled, then lets open requests finish.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, api: Arc<Api>, token: CancellationToken) {
    let router = router(api.clone());
    let slots = Arc::new(Semaphore::new(api.limits().max_connections));
    let tasks = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            Stats::inc(&api.stats().refused_connections);
            tracing::debug!(%peer, "http connection refused: connection limit");
            if tls.is_none() {
                tasks.spawn(refuse(stream));
            }
            continue;
        };
        let router = router.clone();
        let api = api.clone();
        let token = token.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            match tls {
                None => connection(stream, router, &api, token).await,
                Some(tls) => match tokio::time::timeout(api.limits().header_read_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => connection(stream, router, &api, token).await,
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "tls handshake failed"),
                    Err(_) => tracing::debug!(%peer, "tls handshake not finished in time"),
                },
            }
            drop(slot);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Serves HTTP/1.1 on one admitted connection, plain or TLS.
async fn connection<S>(stream: S, router: Router, api: &Api, token: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(api.limits().header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = token.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result
        && error.is_timeout()
    {
        Stats::inc(&api.stats().header_timeouts);
    }
}

/// Answers a connection over the cap with a minimal 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":{"code":"unavailable","message":"too many connections to this API process"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: \
         1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    fn send(body: &str) -> Call {
        json::parse_body(OpKind::SendToUid, body.as_bytes(), &Limits::default()).unwrap()
    }

    fn header(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_HEADER, HeaderValue::from_str(key).unwrap());
        headers
    }

    #[test]
    fn the_idempotency_header_and_field_must_agree() {
        let call = with_header_key(send(r#"{"uid":"a","data":"x"}"#), &header("k1")).unwrap();
        assert_eq!(call.idempotency_key.as_deref(), Some("k1"));
        let same = with_header_key(send(r#"{"uid":"a","data":"x","idempotency_key":"k1"}"#), &header("k1"));
        assert_eq!(same.unwrap().idempotency_key.as_deref(), Some("k1"));
        let other = with_header_key(send(r#"{"uid":"a","data":"x","idempotency_key":"k2"}"#), &header("k1"));
        assert!(other.unwrap_err().message.contains("differ"));
        let none = with_header_key(send(r#"{"uid":"a","data":"x"}"#), &HeaderMap::new()).unwrap();
        assert_eq!(none.idempotency_key, None);
        let spaced = with_header_key(send(r#"{"uid":"a","data":"x"}"#), &header("has space"));
        assert!(spaced.is_err());
    }

    #[test]
    fn failures_become_json_with_their_status_and_headers() {
        let response = failure_response(&Failure::unauthenticated("missing API key"));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let response = failure_response(
            &Failure::new(ErrorCode::TooManyRequests, "slow down").retry_after(Duration::from_millis(2500)),
        );
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let body: serde_json::Value =
            serde_json::from_slice(&error_json(&Failure::forbidden("no admin scope"))).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "unauthenticated", "message": "forbidden: no admin scope"}})
        );
    }
}
