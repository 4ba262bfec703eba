//! The reference server: an echo server on tokio-tungstenite, which is known to pass Autobahn's
//! server suite. The conformance suite runs every section against it to prove that its cases
//! and its judge are right: a case that fails here is a bug in the suite, unless it is one of
//! [`KNOWN_EXCEPTIONS`].
//!
//! tungstenite reports a protocol error to the application instead of closing by itself, so
//! the server does what RFC 6455 §7.1.7 asks of an application: Close with 1002 (1007 for
//! invalid UTF-8, 1009 for a message over the limit), then wait (bounded) for the client's
//! Close and close TCP. That is also what the gateway should do.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{WebSocketConfig, frame::coding::CloseCode};

/// Cases where tungstenite 0.29 itself is not conformant, with the reason. The reference test
/// requires exactly these to fail, so a fixed tungstenite shows up as a test to update.
pub const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[(
    "7.7.12",
    "tungstenite 0.29 treats close code 1014 (Bad Gateway, in the IANA registry since 2012) as \
     invalid and answers it with 1002 (CloseCode::from maps 1014 to Bad)",
)];

/// Starts the reference server on loopback with `max_message_bytes` as its message and frame
/// limit (as the gateway sets both); it serves until the test ends.
pub async fn start(max_message_bytes: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the reference server");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, max_message_bytes));
        }
    });
    addr
}

async fn serve(stream: TcpStream, max: usize) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    loop {
        let code = match ws.next().await {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                if ws.send(message).await.is_err() {
                    return;
                }
                continue;
            }
            // Pings are answered and Close frames echoed by tungstenite itself; the next read
            // flushes the answer (and, after a Close, ends the stream).
            Some(Ok(_)) => continue,
            Some(Err(Error::Protocol(_))) => CloseCode::Protocol,
            Some(Err(Error::Utf8(_))) => CloseCode::Invalid,
            Some(Err(Error::Capacity(_))) => CloseCode::Size,
            Some(Err(_)) | None => return,
        };
        let frame = CloseFrame {
            code,
            reason: "".into(),
        };
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        // Wait for the client's Close (bounded); then dropping the stream closes TCP.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        return;
    }
}
