//! WebSocket clients as a user's program would write them.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for an expected frame before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain WebSocket client.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection attempt or a connection ended, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The handshake was answered with an HTTP status.
    Http(u16, String),
    /// The server closed the connection with a close code.
    Closed(u16),
}

impl WsClient {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Result<WsClient> {
        WsClient::try_connect(url)
            .await?
            .map_err(|refusal| anyhow!("handshake refused: {refusal:?}"))
    }

    /// Connects, returning the HTTP refusal (status and body) instead of an error.
    pub async fn try_connect(url: &str) -> Result<std::result::Result<WsClient, Refusal>> {
        WsClient::try_connect_with_headers(url, &[]).await
    }

    /// Connects with extra request headers, returning the HTTP refusal instead of an error.
    pub async fn try_connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<std::result::Result<WsClient, Refusal>> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().append(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())?,
                value.parse()?,
            );
        }
        WsClient::handshake(url, request, None).await
    }

    /// Connects to a `wss://` URL trusting only `tls`'s CA.
    pub async fn connect_tls(url: &str, tls: &crate::TestTls) -> Result<WsClient> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let connector = tokio_tungstenite::Connector::Rustls(tls.client_config()?);
        WsClient::handshake(url, url.into_client_request()?, Some(connector))
            .await?
            .map_err(|refusal| anyhow!("handshake refused: {refusal:?}"))
    }

    async fn handshake(
        url: &str,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
        connector: Option<tokio_tungstenite::Connector>,
    ) -> Result<std::result::Result<WsClient, Refusal>> {
        match tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await {
            Ok((socket, _)) => Ok(Ok(WsClient { socket })),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Ok(Err(Refusal::Http(status, body)))
            }
            Err(error) => Err(error).with_context(|| format!("connecting to {url}")),
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.socket.send(Message::text(text.into())).await?;
        Ok(())
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: Vec<u8>) -> Result<()> {
        self.socket.send(Message::binary(data)).await?;
        Ok(())
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) -> Result<()> {
        self.send_text(value.to_string()).await
    }

    /// Receives the next data frame (text or binary), or how the connection ended.
    pub async fn recv_within(&mut self, timeout: Duration) -> Result<std::result::Result<Message, Refusal>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .map_err(|_| anyhow!("no frame within {timeout:?}"))?;
            match next {
                Some(Ok(Message::Close(frame))) => {
                    return Ok(Err(Refusal::Closed(frame.map(|f| u16::from(f.code)).unwrap_or(1005))));
                }
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => return Ok(Ok(message)),
                Some(Ok(_)) => continue,
                Some(Err(error)) => bail!("connection failed: {error}"),
                None => return Ok(Err(Refusal::Closed(1006))),
            }
        }
    }

    /// Receives the next text frame.
    pub async fn recv_text(&mut self) -> Result<String> {
        match self.recv_within(RECV_TIMEOUT).await? {
            Ok(Message::Text(text)) => Ok(text.to_string()),
            Ok(other) => bail!("expected a text frame, got {other:?}"),
            Err(refusal) => bail!("connection ended: {refusal:?}"),
        }
    }

    /// Receives the next frame and parses it as JSON.
    pub async fn recv_json(&mut self) -> Result<Value> {
        let text = self.recv_text().await?;
        serde_json::from_str(&text).with_context(|| format!("not json: {text}"))
    }

    /// Asserts that no data frame arrives within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) -> Result<()> {
        match tokio::time::timeout(quiet, self.socket.next()).await {
            Err(_) => Ok(()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => Ok(()),
            Ok(other) => bail!("expected silence, got {other:?}"),
        }
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn expect_close(&mut self) -> Result<u16> {
        loop {
            match self.recv_within(RECV_TIMEOUT).await? {
                Err(Refusal::Closed(code)) => return Ok(code),
                Err(other) => bail!("unexpected {other:?}"),
                Ok(_) => continue,
            }
        }
    }

    /// Waits for the server to close the connection, skipping data frames; returns the close
    /// code and reason (1006 and an empty reason when TCP ended without a Close frame).
    pub async fn expect_close_frame(&mut self) -> Result<(u16, String)> {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .map_err(|_| anyhow!("no close within {RECV_TIMEOUT:?}"))?;
            match next {
                Some(Ok(Message::Close(Some(frame)))) => return Ok((u16::from(frame.code), frame.reason.to_string())),
                Some(Ok(Message::Close(None))) => return Ok((1005, String::new())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ok((1006, String::new())),
            }
        }
    }

    /// Splits into a sending and a receiving half, for clients that send and read concurrently.
    pub fn split(self) -> (WsSender, WsReceiver) {
        let (sink, stream) = self.socket.split();
        (WsSender { sink }, WsReceiver { stream })
    }

    /// Closes the connection normally.
    pub async fn close(mut self) -> Result<()> {
        self.socket.close(None).await?;
        // Drain until the server's close arrives.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(2), self.socket.next()).await {}
        Ok(())
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sending half of a split [`WsClient`].
pub struct WsSender {
    sink: futures_util::stream::SplitSink<Socket, Message>,
}

impl WsSender {
    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.sink.send(Message::text(text.into())).await?;
        Ok(())
    }
}

/// The receiving half of a split [`WsClient`].
pub struct WsReceiver {
    stream: futures_util::stream::SplitStream<Socket>,
}

impl WsReceiver {
    /// Receives the next text frame; fails if the connection ends or nothing comes in time.
    pub async fn recv_text(&mut self) -> Result<String> {
        loop {
            match tokio::time::timeout(RECV_TIMEOUT, self.stream.next()).await {
                Err(_) => bail!("no frame within {RECV_TIMEOUT:?}"),
                Ok(Some(Ok(Message::Text(text)))) => return Ok(text.to_string()),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => bail!("expected a text frame, got {other:?}"),
            }
        }
    }
}

/// A client of the `api` app: calls cluster API operations and sees what is delivered to it.
pub struct ApiClient {
    /// The underlying socket.
    pub ws: WsClient,
    /// This client's id, from the hello frame.
    pub client_id: String,
    next_id: u64,
    /// Frames delivered to this client while it waited for answers, in order.
    pub inbox: Vec<String>,
}

impl ApiClient {
    /// Connects and reads the hello frame.
    pub async fn connect(url: &str) -> Result<ApiClient> {
        let mut ws = WsClient::connect(url).await?;
        let hello = ws.recv_json().await?;
        let client_id = hello["client"]
            .as_str()
            .ok_or_else(|| anyhow!("no client id in {hello}"))?
            .to_owned();
        Ok(ApiClient {
            ws,
            client_id,
            next_id: 1,
            inbox: Vec::new(),
        })
    }

    /// Calls an operation; returns its result, or the error object as an `Err`.
    pub async fn call(&mut self, op: &str, args: Value) -> Result<std::result::Result<Value, Value>> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"id": id, "op": op});
        if let (Some(request), Some(args)) = (request.as_object_mut(), args.as_object()) {
            request.extend(args.clone());
        }
        self.ws.send_json(&request).await?;
        loop {
            let text = self.ws.recv_text().await?;
            match serde_json::from_str::<Value>(&text) {
                Ok(answer) if answer.get("id") == Some(&json!(id)) => {
                    return Ok(if answer["ok"] == json!(true) {
                        Ok(answer["result"].clone())
                    } else {
                        Err(answer["error"].clone())
                    });
                }
                _ => self.inbox.push(text),
            }
        }
    }

    /// Calls an operation that must succeed.
    pub async fn ok(&mut self, op: &str, args: Value) -> Result<Value> {
        self.call(op, args)
            .await?
            .map_err(|error| anyhow!("{op} failed: {error}"))
    }

    /// The next delivered frame (from the inbox first).
    pub async fn next_delivery(&mut self) -> Result<String> {
        if !self.inbox.is_empty() {
            return Ok(self.inbox.remove(0));
        }
        self.ws.recv_text().await
    }
}
