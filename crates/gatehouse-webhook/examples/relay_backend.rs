//! A minimal fast webhook backend with the relay app's semantics, for the webhook benchmark
//! (bench/webhook.py): it shows what the webhook worker itself costs when the backend costs
//! next to nothing. It checks every signature, as any backend must.
//!
//! ```sh
//! cargo build --release -p gatehouse-webhook --example relay_backend
//! GATEHOUSE_WEBHOOK_SECRET=… target/release/examples/relay_backend 127.0.0.1:0
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gatehouse_webhook::signature;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Batch {
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    group: Option<String>,
}

fn relay(event: Event) -> Value {
    let Some(text) = event.text.filter(|_| event.kind == "message") else {
        return Value::Null;
    };
    let Ok(frame) = serde_json::from_str::<Envelope>(&text) else {
        return json!({"commands": [{"cmd": "reply", "json": {"type": "error", "message": "malformed json"}}]});
    };
    let commands = match (frame.kind.as_deref(), frame.uid, frame.to, frame.group) {
        (Some("login"), Some(uid), _, _) => json!([
            {"cmd": "bind_uid", "uid": uid},
            {"cmd": "reply", "json": {"type": "login_ok", "uid": uid}},
        ]),
        (Some("join"), _, _, Some(group)) => json!([
            {"cmd": "join_group", "group": group},
            {"cmd": "reply", "json": {"type": "join_ok", "group": group}},
        ]),
        (_, _, Some(to), _) => json!([{"cmd": "send_to_uid", "uid": to, "text": text}]),
        (_, _, None, Some(group)) => json!([{"cmd": "send_to_group", "group": group, "text": text}]),
        (Some("broadcast"), _, None, None) => json!([{"cmd": "send_to_all", "text": text}]),
        _ => json!([{"cmd": "reply", "json": {"type": "error", "message": "unexpected frame"}}]),
    };
    json!({ "commands": commands })
}

async fn handle(
    secret: Arc<Vec<u8>>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = request
        .headers()
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, Bytes::new())),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    if signature::verify(&secret, &header, &body, now).is_err() {
        return Ok(answer(
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(b"{\"error\":\"bad signature\"}"),
        ));
    }
    let Ok(batch) = serde_json::from_slice::<Batch>(&body) else {
        return Ok(answer(StatusCode::BAD_REQUEST, Bytes::new()));
    };
    let results: Vec<Value> = batch.events.into_iter().map(relay).collect();
    let data = serde_json::to_vec(&json!({ "results": results })).expect("json serialises");
    Ok(answer(StatusCode::OK, Bytes::from(data)))
}

fn answer(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("a response of valid parts")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let secret = Arc::new(
        std::env::var("GATEHOUSE_WEBHOOK_SECRET")
            .expect("set GATEHOUSE_WEBHOOK_SECRET")
            .into_bytes(),
    );
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening addr={}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let secret = secret.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(secret.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
