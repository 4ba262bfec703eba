//! A backend pushing to users through the server API (`gatehouse api`, docs/server-api.md):
//! plain HTTP/JSON with an API key, so the same takes a few lines in any language. This one
//! uses nothing but a TCP socket, to show there is no client library to wait for.
//!
//! ```sh
//! GATEHOUSE_API=127.0.0.1:8090 GATEHOUSE_API_KEY=ghk_… \
//!     cargo run -p gatehouse-sdk --example push -- alice "your order shipped" order-42
//! ```
//!
//! Prints whether the user is online, then pushes `{"type":"notice","text":…}` to every device
//! of the user. The optional third argument is an idempotency key: a retry with the same key
//! (say, after a timeout) is not delivered twice.

use gatehouse_sdk::serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `POST /api/v1/<op>` with a JSON body; the `result` of the answer, or the error it carried.
async fn call(api: &str, key: &str, op: &str, body: &Value) -> Result<Value, Box<dyn std::error::Error>> {
    let body = body.to_string();
    let request = format!(
        "POST /api/v1/{op} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(api).await?;
    socket.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await?;
    let (_, answer) = response.split_once("\r\n\r\n").ok_or("no HTTP body")?;
    let answer: Value = gatehouse_sdk::serde_json::from_str(answer)?;
    match answer.get("result") {
        Some(result) => Ok(result.clone()),
        None => Err(format!("{op}: {}", answer["error"]).into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let api = std::env::var("GATEHOUSE_API").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let key = std::env::var("GATEHOUSE_API_KEY")?;
    let mut args = std::env::args().skip(1);
    let (Some(uid), Some(text)) = (args.next(), args.next()) else {
        return Err("usage: push UID TEXT [IDEMPOTENCY_KEY]".into());
    };
    let online = call(&api, &key, "online_uids", &json!({"uids": [uid]})).await?;
    println!("online: {}", online["uids"]);
    let notice = json!({"type": "notice", "text": text}).to_string();
    let mut send = json!({"uid": uid, "data": notice});
    if let Some(idempotency_key) = args.next() {
        send["idempotency_key"] = idempotency_key.into();
    }
    let sent = call(&api, &key, "send_to_uid", &send).await?;
    println!("sent: {sent}");
    Ok(())
}
