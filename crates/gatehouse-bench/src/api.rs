//! The `api-publish` scenario's publishers: backends pushing to the WebSocket clients through
//! the server API (`gatehouse api`), over HTTP/JSON or gRPC, one `send_to_uid` per request or
//! a batch of them.
//!
//! Every publisher runs `inflight` closed loops; a loop has one request in flight at a time and
//! sends the next as soon as the API answered. Over HTTP each loop owns a keep-alive
//! connection (HTTP/1.1 has no pipelining, and a backend that wants requests in flight opens
//! connections); over gRPC the loops of one publisher share its HTTP/2 connection, as the
//! calls of one gRPC client do. Each loop is a sender of its own to the receivers' accounting
//! (`from` is its loop number), so `(from, seq)` stays unique without coordination between
//! loops.
//!
//! A send's frame is the relay app's data frame (`ts`, `seq`, `from`, `run`): the clients
//! account for it exactly as for a direct message, and the send→delivery latency includes
//! the request's round trip. Sends are counted when their request is built; a send the API
//! refuses (the whole request, or its entry of a batch) is counted in `failed_sends` and, not
//! being delivered, as lost.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_proto::tonic;
use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::server_api_client::ServerApiClient;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::accounting::{Counters, LatencyRecorder};
use crate::config::{ApiTarget, ApiTransport};
use crate::error::BenchError;
use crate::scenario::{Traffic, relay};
use crate::session::Shared;

/// Longest wait for one API answer; the API's own request deadline is 10 s by default, so a
/// request still unanswered after this is lost rather than slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// After an error answer, a loop pauses this long before its next request, so that an API
/// that refuses everything (a wrong key, a rate limit) is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Error messages kept from API answers are cut to this many bytes.
const MAX_ERROR_TEXT: usize = 300;

/// What the publishers counted. Only requests whose sends were stamped inside the measured
/// window count (like messages), except `requests_total`, which feeds nothing but progress.
#[derive(Debug, Default)]
pub(crate) struct ApiCounters {
    /// Requests stamped inside the window.
    pub requests: AtomicU64,
    /// Of those, requests that failed as a whole (connection error, timeout, error status).
    pub failed_requests: AtomicU64,
    /// Measured sends refused: those of failed requests and failed batch entries.
    pub failed_sends: AtomicU64,
}

/// What every publisher loop shares.
#[derive(Debug)]
pub(crate) struct ApiRun {
    pub target: ApiTarget,
    pub counters: ApiCounters,
    /// Request round trips (request written → answer read) of measured requests, µs.
    pub request_latency: LatencyRecorder,
    /// `Bearer KEY`.
    bearer: String,
}

impl ApiRun {
    pub fn new(target: ApiTarget) -> ApiRun {
        let bearer = format!("Bearer {}", target.key);
        ApiRun {
            target,
            counters: ApiCounters::default(),
            request_latency: LatencyRecorder::new(),
            bearer,
        }
    }
}

/// One loop's connection to the API.
pub(crate) enum Conn {
    Http(HttpConn),
    Grpc(ServerApiClient<tonic::transport::Channel>),
}

/// Opens every loop's connection (`publishers × inflight` of them), before the traffic phase:
/// an API that cannot be reached fails the run before anything is measured.
pub(crate) async fn connect(run: &ApiRun, loops: usize, timeout: Duration) -> Result<Vec<Conn>, BenchError> {
    let target = &run.target;
    let error = |reason: String| BenchError::Api {
        url: target.url.clone(),
        reason,
    };
    let per_publisher = loops / target.publishers.max(1);
    let mut conns = Vec::with_capacity(loops);
    match target.transport {
        ApiTransport::Http => {
            let addr = resolve(&target.url).await.map_err(error)?;
            for _ in 0..loops {
                let conn = tokio::time::timeout(timeout, HttpConn::open(addr, &run.bearer))
                    .await
                    .map_err(|_| error(format!("no connection within {timeout:?}")))?
                    .map_err(error)?;
                conns.push(Conn::Http(conn));
            }
        }
        ApiTransport::Grpc => {
            for _ in 0..target.publishers {
                let channel = tonic::transport::Endpoint::from_shared(target.url.clone())
                    .map_err(|e| error(e.to_string()))?
                    .connect_timeout(timeout)
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| error(format!("{e}: {}", source_chain(&e))))?;
                let client = ServerApiClient::new(channel);
                conns.extend((0..per_publisher).map(|_| Conn::Grpc(client.clone())));
            }
        }
    }
    Ok(conns)
}

async fn resolve(url: &str) -> Result<SocketAddr, String> {
    let authority = authority(url);
    tokio::net::lookup_host(authority)
        .await
        .map_err(|e| format!("resolving {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))
}

/// `HOST:PORT` of an `http://HOST:PORT[/…]` URL.
fn authority(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(error) = source {
        chain.push(error.to_string());
        source = error.source();
    }
    chain.join(": ")
}

/// An HTTP/1.1 keep-alive connection to the API's HTTP listener.
pub(crate) struct HttpConn {
    addr: SocketAddr,
    host: http::HeaderValue,
    authorization: http::HeaderValue,
    sender: http1::SendRequest<Full<Bytes>>,
}

impl HttpConn {
    async fn open(addr: SocketAddr, bearer: &str) -> Result<HttpConn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("http handshake with {addr}: {e}"))?;
        // The connection's I/O runs on its own task; it ends when the sender is dropped.
        tokio::spawn(connection);
        Ok(HttpConn {
            addr,
            host: http::HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?,
            authorization: http::HeaderValue::from_str(bearer)
                .map_err(|_| "the api key is not a valid header value")?,
            sender,
        })
    }

    /// POSTs `body` to `path`; returns the status and the whole answer body. A connection the
    /// server closed is opened again first.
    async fn post(&mut self, path: &'static str, body: Bytes) -> Result<(http::StatusCode, Bytes), String> {
        if self.sender.is_closed() || self.sender.ready().await.is_err() {
            // The server closed the keep-alive connection (idle, or restarted): open another.
            let bearer = self.authorization.to_str().unwrap_or_default().to_owned();
            *self = HttpConn::open(self.addr, &bearer).await?;
        }
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_static(path);
        let headers = request.headers_mut();
        headers.insert(http::header::HOST, self.host.clone());
        headers.insert(http::header::AUTHORIZATION, self.authorization.clone());
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("http request: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("http answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

/// One request's sends: `(recipient client, seq)` each, all stamped `ts`.
struct Request<'a> {
    sends: &'a [(u32, u64)],
    ts: u64,
}

/// Builds request bodies and frames for one loop, reusing its buffers.
struct Writer<'a> {
    shared: &'a Shared,
    from: u32,
    frame: String,
}

impl Writer<'_> {
    /// The relay data frame of message `seq`.
    fn frame(&mut self, seq: u64, ts: u64) -> &str {
        let plan = &self.shared.plan;
        self.frame.clear();
        self.frame.push('{');
        relay::write_tail(&mut self.frame, ts, seq, self.from, plan.run, &plan.pad);
        &self.frame
    }

    /// The JSON body: `{"uid":…,"data":…}` for one send, `{"ops":[{"op":"send_to_uid",…},…]}`
    /// for a batch.
    fn http_body(&mut self, request: &Request<'_>, batched: bool) -> Bytes {
        let shared = self.shared;
        let prefix = &shared.plan.prefix;
        let mut body = String::with_capacity(request.sends.len() * (96 + shared.plan.pad.len()) + 16);
        if batched {
            body.push_str(r#"{"ops":["#);
        }
        for (i, &(to, seq)) in request.sends.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            if batched {
                body.push_str(r#"{"op":"send_to_uid","#);
            } else {
                body.push('{');
            }
            let _ = write!(body, r#""uid":"{prefix}{to}","data":""#);
            // The frame holds digits, ASCII letters and quotes only (the uid prefix may hold
            // no quote, backslash or control character): escaping its quotes makes it a JSON
            // string.
            for c in self.frame(seq, request.ts).chars() {
                if c == '"' {
                    body.push('\\');
                }
                body.push(c);
            }
            body.push_str("\"}");
        }
        if batched {
            body.push_str("]}");
        }
        Bytes::from(body)
    }

    fn send_to_uid(&mut self, to: u32, seq: u64, ts: u64) -> pb::SendToUidRequest {
        pb::SendToUidRequest {
            uid: self.shared.plan.uid(to),
            data: Some(pb::send_to_uid_request::Data::Text(self.frame(seq, ts).to_owned())),
            exclude: Vec::new(),
            idempotency_key: String::new(),
        }
    }
}

/// How one request went.
enum Outcome {
    /// Answered; `failed` of its sends were refused (batch entries with an error), the first
    /// of them for this reason.
    Answered { failed: u64, error: Option<String> },
    /// Failed as a whole.
    Failed(String),
}

/// A batch answer over HTTP: only whether each entry is an error matters.
#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<EntryAnswer>,
}

#[derive(Deserialize)]
struct EntryAnswer {
    #[serde(default)]
    error: Option<ErrorAnswer>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    code: String,
    message: String,
}

fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Keeps a loop counted among the active senders until it ends, however it ends.
struct ActiveGuard<'a>(&'a Traffic);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active_senders.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Loop number `from`: sends requests of `batch` sends to random ready clients, one at a time,
/// until the end of the measured window.
pub(crate) async fn run_loop(shared: Arc<Shared>, traffic: Arc<Traffic>, api: Arc<ApiRun>, from: u32, mut conn: Conn) {
    let _active = ActiveGuard(&traffic);
    let recipients = &traffic.candidates[0];
    if recipients.is_empty() {
        return;
    }
    let batch = api.target.batch;
    let batched = batch > 1;
    let counters = &shared.counters;
    let mut rng = StdRng::seed_from_u64(u64::from(shared.plan.run) << 32 | u64::from(from) | 1 << 31);
    let mut writer = Writer {
        shared: &shared,
        from,
        frame: String::with_capacity(96 + shared.plan.pad.len()),
    };
    let mut sends = Vec::with_capacity(batch);
    let mut seq = 0u64;
    loop {
        let ts = shared.now_ns();
        if ts >= traffic.window.end_ns {
            return;
        }
        sends.clear();
        for _ in 0..batch {
            sends.push((recipients[rng.random_range(0..recipients.len())], seq));
            seq += 1;
        }
        let request = Request { sends: &sends, ts };
        let measured = traffic.window.contains(ts);
        Counters::add(&counters.sent_total, batch as u64);
        if measured {
            Counters::add(&counters.sent, batch as u64);
            Counters::add(&counters.expected, batch as u64);
        }
        let outcome = match &mut conn {
            Conn::Http(http) => {
                let (path, body) = match batched {
                    true => ("/api/v1/batch", writer.http_body(&request, true)),
                    false => ("/api/v1/send_to_uid", writer.http_body(&request, false)),
                };
                let started = shared.now_ns();
                let answer = tokio::time::timeout(REQUEST_TIMEOUT, http.post(path, body)).await;
                record(&api, &shared, from, measured, started);
                match answer {
                    Err(_) => Outcome::Failed(format!("no answer within {REQUEST_TIMEOUT:?}")),
                    Ok(Err(error)) => Outcome::Failed(error),
                    Ok(Ok((status, body))) => http_outcome(status, &body, batched, batch),
                }
            }
            Conn::Grpc(client) => {
                let started = shared.now_ns();
                let answer =
                    tokio::time::timeout(REQUEST_TIMEOUT, grpc_call(client, &mut writer, &request, &api)).await;
                record(&api, &shared, from, measured, started);
                match answer {
                    Err(_) => Outcome::Failed(format!("no answer within {REQUEST_TIMEOUT:?}")),
                    Ok(outcome) => outcome,
                }
            }
        };
        let failed = match outcome {
            Outcome::Answered { failed: 0, .. } => continue,
            Outcome::Answered { failed, error } => {
                let error = error.unwrap_or_else(|| "a batch entry without a result".to_owned());
                shared.note_error(|| format!("api loop {from}: batch entry refused: {error}"));
                failed
            }
            Outcome::Failed(error) => {
                if measured {
                    Counters::bump(&api.counters.failed_requests);
                }
                shared.note_error(|| format!("api loop {from}: {error}"));
                batch as u64
            }
        };
        if measured {
            Counters::add(&api.counters.failed_sends, failed);
        }
        tokio::time::sleep(ERROR_PAUSE).await;
    }
}

/// Counts a request and its round trip (measured requests only).
fn record(api: &ApiRun, shared: &Shared, from: u32, measured: bool, started_ns: u64) {
    if measured {
        Counters::bump(&api.counters.requests);
        let micros = shared.now_ns().saturating_sub(started_ns) / 1_000;
        api.request_latency.record(from as usize, micros);
    }
}

fn http_outcome(status: http::StatusCode, body: &[u8], batched: bool, batch: usize) -> Outcome {
    if !status.is_success() {
        let text = String::from_utf8_lossy(body);
        return Outcome::Failed(format!("answer {status}: {}", cut(&text)));
    }
    if !batched {
        return Outcome::Answered { failed: 0, error: None };
    }
    match serde_json::from_slice::<BatchAnswer>(body) {
        Ok(answer) if answer.results.len() == batch => {
            let failed = answer.results.iter().filter(|entry| entry.error.is_some()).count() as u64;
            let error = answer
                .results
                .iter()
                .find_map(|entry| entry.error.as_ref())
                .map(|error| format!("{}: {}", error.code, cut(&error.message)));
            Outcome::Answered { failed, error }
        }
        Ok(answer) => Outcome::Failed(format!(
            "a batch of {batch} answered with {} results",
            answer.results.len()
        )),
        Err(error) => Outcome::Failed(format!(
            "unreadable batch answer ({error}): {}",
            cut(&String::from_utf8_lossy(body))
        )),
    }
}

async fn grpc_call(
    client: &mut ServerApiClient<tonic::transport::Channel>,
    writer: &mut Writer<'_>,
    request: &Request<'_>,
    api: &ApiRun,
) -> Outcome {
    let status = if request.sends.len() == 1 {
        let (to, seq) = request.sends[0];
        let message = writer.send_to_uid(to, seq, request.ts);
        match client.send_to_uid(authorized(message, &api.bearer)).await {
            Ok(_) => return Outcome::Answered { failed: 0, error: None },
            Err(status) => status,
        }
    } else {
        let ops = request
            .sends
            .iter()
            .map(|&(to, seq)| pb::BatchOperation {
                op: Some(pb::batch_operation::Op::SendToUid(
                    writer.send_to_uid(to, seq, request.ts),
                )),
            })
            .collect();
        match client.batch(authorized(pb::BatchRequest { ops }, &api.bearer)).await {
            Ok(answer) => {
                let results = answer.into_inner().results;
                if results.len() != request.sends.len() {
                    return Outcome::Failed(format!(
                        "a batch of {} answered with {} results",
                        request.sends.len(),
                        results.len()
                    ));
                }
                let failed = results
                    .iter()
                    .filter(|r| matches!(r.result, Some(pb::batch_result::Result::Error(_)) | None))
                    .count() as u64;
                let error = results.iter().find_map(|r| match &r.result {
                    Some(pb::batch_result::Result::Error(error)) => {
                        Some(format!("{}: {}", error.code, cut(&error.message)))
                    }
                    _ => None,
                });
                return Outcome::Answered { failed, error };
            }
            Err(status) => status,
        }
    };
    Outcome::Failed(format!("grpc {:?}: {}", status.code(), cut(status.message())))
}

/// A gRPC request carrying the API key as `authorization` metadata.
fn authorized<T>(message: T, bearer: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = tonic::metadata::MetadataValue::try_from(bearer) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_authority() {
        assert_eq!(authority("http://127.0.0.1:8090"), "127.0.0.1:8090");
        assert_eq!(authority("http://api.internal:80/"), "api.internal:80");
    }

    #[test]
    fn batch_answers_count_refused_entries() {
        let ok = br#"{"results":[{"result":{"replayed":false}},{"error":{"code":"not_found","message":"x"}}]}"#;
        match http_outcome(http::StatusCode::OK, ok, true, 2) {
            Outcome::Answered { failed, error } => {
                assert_eq!(failed, 1);
                assert_eq!(error.as_deref(), Some("not_found: x"));
            }
            Outcome::Failed(error) => panic!("{error}"),
        }
        assert!(matches!(
            http_outcome(http::StatusCode::OK, ok, true, 3),
            Outcome::Failed(_)
        ));
        let refused = br#"{"error":{"code":"too_many_requests","message":"slow down"}}"#;
        match http_outcome(http::StatusCode::TOO_MANY_REQUESTS, refused, false, 1) {
            Outcome::Failed(error) => assert!(error.contains("429") && error.contains("slow down"), "{error}"),
            Outcome::Answered { .. } => panic!("a 429 is a failure"),
        }
        assert!(matches!(
            http_outcome(http::StatusCode::OK, b"{}", false, 1),
            Outcome::Answered { failed: 0, error: None }
        ));
    }
}
