//! The client against servers whose behaviour is known: tungstenite (a conformant library) and
//! scripted raw servers that misbehave on purpose, so that every classification the
//! conformance suite relies on is shown to come out right.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const BOUND: Duration = Duration::from_secs(5);

/// A tungstenite echo server for one connection.
async fn tungstenite_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() || message.is_binary() {
                ws.send(message).await.unwrap();
            }
        }
    });
    addr
}

/// A raw server: answers the handshake with `accept` (the right value when `None`), then
/// runs `script` on the socket.
async fn scripted<F, Fut>(accept: Option<&'static str>, script: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim();
        let accept = accept.map(str::to_owned).unwrap_or_else(|| handshake::accept_for(key));
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
        script(stream).await;
    });
    addr
}

/// Reads one client frame on the server side (the codec decodes masked frames too).
async fn read_client_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> ServerFrame {
    loop {
        if let Some((frame, used)) = decode(buf, 1 << 20).unwrap() {
            buf.drain(..used);
            return frame;
        }
        assert!(stream.read_buf(buf).await.unwrap() > 0, "the client closed");
    }
}

fn unmasked(frame: Frame) -> Vec<u8> {
    frame.mask(Mask::None).encode()
}

#[tokio::test]
async fn a_fragmented_message_with_a_ping_between_is_echoed_by_tungstenite_and_closed_cleanly() {
    let mut ws = RawWs::connect(tungstenite_echo().await, "/").await.unwrap();
    let text = "κόσμε 🦀".as_bytes();
    assert!(
        ws.send(&[
            Frame::text(&text[..3]).fin(false),
            Frame::ping("between"),
            Frame::continuation(&text[3..]),
        ])
        .await
    );
    assert!(ws.read_until(BOUND, |events| events.len() == 2).await);
    assert!(ws.close(1000, "done").await);
    let transcript = ws.finish(BOUND).await;
    assert_eq!(
        transcript.events,
        [Event::Pong(b"between".to_vec()), Event::Text(text.to_vec())]
    );
    assert_eq!(
        transcript.outcome(),
        Outcome::Clean {
            code: Some(1000),
            reason: "done".into()
        }
    );
    assert!(transcript.client_closed_first);
    assert!(transcript.violations.is_empty(), "{:?}", transcript.violations);
}

#[tokio::test]
async fn a_16_mib_binary_message_written_while_reading_does_not_deadlock() {
    let mut ws = RawWs::connect(tungstenite_echo().await, "/").await.unwrap();
    let payload: Vec<u8> = (0..16 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    // Twice in one write: the first echo arrives while the second copy is still being written.
    let frames = [Frame::binary(payload.clone()), Frame::binary(payload.clone())];
    assert!(ws.send_chopped(&frames, 1 << 20).await);
    assert!(ws.read_until(Duration::from_secs(30), |events| events.len() == 2).await);
    assert_eq!(ws.events(), [Event::Binary(payload.clone()), Event::Binary(payload)]);
}

#[tokio::test]
async fn a_tcp_drop_without_a_close_frame_is_unclean() {
    let addr = scripted(None, |stream| async move { drop(stream) }).await;
    let ws = RawWs::connect(addr, "/").await.unwrap();
    let transcript = ws.finish(BOUND).await;
    assert_eq!(transcript.outcome(), Outcome::Unclean { reset: false });
    assert_eq!(transcript.close, None);
}

#[tokio::test]
async fn a_silent_server_is_a_timeout() {
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = scripted(None, move |stream| async move {
        let _ = hold_rx.await;
        drop(stream);
    })
    .await;
    let ws = RawWs::connect(addr, "/").await.unwrap();
    let transcript = ws.finish(Duration::from_millis(200)).await;
    assert_eq!(transcript.outcome(), Outcome::Timeout);
    drop(hold_tx);
}

#[tokio::test]
async fn a_close_frame_without_a_tcp_close_is_reported() {
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = scripted(None, move |mut stream| async move {
        stream.write_all(&unmasked(Frame::close(1000, ""))).await.unwrap();
        let _ = hold_rx.await;
    })
    .await;
    let ws = RawWs::connect(addr, "/").await.unwrap();
    let transcript = ws.finish(Duration::from_millis(200)).await;
    assert_eq!(transcript.outcome(), Outcome::CloseWithoutTcpClose { code: Some(1000) });
    drop(hold_tx);
}

#[tokio::test]
async fn server_pings_and_a_server_close_are_answered_in_order() {
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let addr = scripted(None, |mut stream| async move {
        let mut wire = unmasked(Frame::ping("keepalive"));
        wire.extend(unmasked(Frame::close(1001, "bye")));
        stream.write_all(&wire).await.unwrap();
        let mut buf = Vec::new();
        let pong = read_client_frame(&mut stream, &mut buf).await;
        let close = read_client_frame(&mut stream, &mut buf).await;
        let _ = seen_tx.send((pong, close));
    })
    .await;
    let ws = RawWs::connect(addr, "/").await.unwrap();
    let transcript = ws.finish(BOUND).await;
    let (pong, close) = seen_rx.await.unwrap();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice(), pong.masked),
        (opcode::PONG, &b"keepalive"[..], true)
    );
    assert_eq!(
        (close.opcode, close.payload.as_slice(), close.masked),
        (opcode::CLOSE, &[0x03, 0xE9][..], true)
    );
    assert_eq!(transcript.server_pings, 1);
    assert!(!transcript.client_closed_first);
    assert_eq!(
        transcript.outcome(),
        Outcome::Clean {
            code: Some(1001),
            reason: "bye".into()
        }
    );
    assert!(transcript.events.is_empty() && transcript.violations.is_empty());
}

#[tokio::test]
async fn every_kind_of_server_violation_is_reported() {
    let addr = scripted(None, |mut stream| async move {
        let frames = [
            Frame::text("masked").mask(Mask::Key([1, 2, 3, 4])),
            Frame::text("rsv").rsv(4).mask(Mask::None),
            Frame::new(0x3, "reserved").mask(Mask::None),
            Frame::continuation("orphan").mask(Mask::None),
            Frame::text("long form").length(Length::Bits16).mask(Mask::None),
            Frame::text(vec![0xC0, 0xAF]).mask(Mask::None),
            Frame::text("open").fin(false).mask(Mask::None),
            Frame::binary("interrupts").mask(Mask::None),
            Frame::ping("split").fin(false).mask(Mask::None),
            Frame::pong(vec![b'p'; 126]).mask(Mask::None),
            Frame::close(1005, "").mask(Mask::None),
            Frame::text("after close").mask(Mask::None),
            Frame::pong("after close").mask(Mask::None),
        ];
        stream.write_all(&encode_all(&frames)).await.unwrap();
        // Read the client's Close reply, then close.
        let mut buf = Vec::new();
        let reply = read_client_frame(&mut stream, &mut buf).await;
        assert_eq!(reply.opcode, opcode::CLOSE);
    })
    .await;
    let transcript = RawWs::connect(addr, "/").await.unwrap().finish(BOUND).await;
    let all = transcript.violations.join("\n");
    for needle in [
        "masked frame",
        "RSV bits",
        "reserved opcode",
        "without a message to continue",
        "shortest form",
        "not UTF-8",
        "while a fragmented text message was open",
        "fragmented control frame",
        "control frame over 125 bytes",
        "close code 1005 may not be sent",
        "after its Close frame",
    ] {
        assert!(all.contains(needle), "no {needle:?} in:\n{all}");
    }
    assert_eq!(transcript.close.as_ref().and_then(|c| c.code), Some(1005));
    assert!(
        transcript.notes.iter().any(|n| n.starts_with("pong")),
        "{:?}",
        transcript.notes
    );
}

#[tokio::test]
async fn a_wrong_accept_value_fails_the_handshake() {
    let addr = scripted(Some("bm90IHRoZSByaWdodCBvbmU="), |stream| async move { drop(stream) }).await;
    let error = RawWs::connect(addr, "/").await.err().expect("the handshake must fail");
    assert!(error.to_string().contains("Sec-WebSocket-Accept"), "{error}");
}

#[tokio::test]
async fn tungstenite_answers_a_client_close_with_an_echo_and_closes_tcp() {
    // The baseline the conformance suite compares servers with.
    let mut ws = RawWs::connect(tungstenite_echo().await, "/").await.unwrap();
    assert!(ws.send(&[Frame::close(4000, "app")]).await);
    let transcript = ws.finish(BOUND).await;
    assert_eq!(
        transcript.outcome(),
        Outcome::Clean {
            code: Some(4000),
            reason: "app".into()
        }
    );
    assert_eq!(transcript.end, End::TcpClosed);
}
