//! A cross-check of the raw client with a second, independent one: tokio-tungstenite's client
//! (the one the rest of the test suite uses). For a few cases both clients run against the
//! same server, and how each saw the connection end must agree, so a verdict of the suite
//! cannot come from a quirk of the raw client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gatehouse_testkit::rawws::{Event, Frame, Outcome, RawWs};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame as TFrame, FrameHeader};
use tokio_tungstenite::tungstenite::{Error, Message};

const BOUND: Duration = Duration::from_secs(5);

/// How a connection ended, as either client can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The server sent a Close frame (with this code), then the connection ended.
    Close(Option<u16>),
    /// The connection ended without a Close frame.
    Dropped,
    /// Nothing ended within the bound.
    Timeout,
}

/// The cases both clients can express.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// Text "hello", wait for the echo, then Close 1000.
    EchoThenClose,
    /// Close 4000 "app" right away.
    CloseWithCode,
    /// A text frame with RSV1 set (no extension negotiated).
    ReservedBit,
}

pub const PROBES: [Probe; 3] = [Probe::EchoThenClose, Probe::CloseWithCode, Probe::ReservedBit];

/// Runs `probe` with the raw client; returns the data messages (lossily as text) and how it
/// ended.
pub async fn with_raw_client(url: &str, probe: Probe) -> (Vec<String>, Seen) {
    let mut ws = RawWs::connect_url(url).await.expect("raw client connects");
    match probe {
        Probe::EchoThenClose => {
            ws.send(&[Frame::text("hello")]).await;
            ws.read_until(BOUND, |events| !events.is_empty()).await;
            ws.close(1000, "").await;
        }
        Probe::CloseWithCode => {
            ws.close(4000, "app").await;
        }
        Probe::ReservedBit => {
            ws.send(&[Frame::text("hello").rsv(4)]).await;
        }
    }
    let transcript = ws.finish(BOUND).await;
    let messages = transcript
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Text(p) | Event::Binary(p) => Some(String::from_utf8_lossy(p).into_owned()),
            Event::Pong(_) => None,
        })
        .collect();
    let seen = match transcript.outcome() {
        Outcome::Clean { code, .. } | Outcome::CloseWithoutTcpClose { code } => Seen::Close(code),
        Outcome::Unclean { .. } => Seen::Dropped,
        Outcome::Timeout => Seen::Timeout,
    };
    (messages, seen)
}

/// Runs `probe` with tokio-tungstenite's client.
pub async fn with_tungstenite(url: &str, probe: Probe) -> (Vec<String>, Seen) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("tungstenite client connects");
    let mut messages = Vec::new();
    match probe {
        Probe::EchoThenClose => {
            ws.send(Message::text("hello")).await.expect("send");
            if let Ok(Some(Ok(message))) = tokio::time::timeout(BOUND, ws.next()).await {
                messages.push(String::from_utf8_lossy(&message.into_data()).into_owned());
            }
            let _ = ws.close(Some(close_frame(1000, ""))).await;
        }
        Probe::CloseWithCode => {
            let _ = ws.close(Some(close_frame(4000, "app"))).await;
        }
        Probe::ReservedBit => {
            let header = FrameHeader {
                rsv1: true,
                opcode: OpCode::Data(Data::Text),
                ..FrameHeader::default()
            };
            let frame = TFrame::from_payload(header, b"hello".to_vec().into());
            ws.send(Message::Frame(frame)).await.expect("send");
        }
    }
    let mut close = None;
    let seen = loop {
        match tokio::time::timeout(BOUND, ws.next()).await {
            Err(_) => break Seen::Timeout,
            Ok(Some(Ok(Message::Close(frame)))) => close = Some(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(Message::Text(t)))) => messages.push(t.to_string()),
            Ok(Some(Ok(Message::Binary(b)))) => messages.push(String::from_utf8_lossy(&b).into_owned()),
            Ok(Some(Ok(_))) => {}
            // After a Close frame, the end of the stream (or a reset) is the TCP close.
            Ok(None) | Ok(Some(Err(Error::ConnectionClosed | Error::AlreadyClosed))) => {
                break close.map_or(Seen::Dropped, Seen::Close);
            }
            Ok(Some(Err(_))) => break close.map_or(Seen::Dropped, Seen::Close),
        }
    };
    (messages, seen)
}

fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }
}
