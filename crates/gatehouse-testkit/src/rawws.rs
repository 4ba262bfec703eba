//! A raw-frame WebSocket client (RFC 6455) for conformance tests.
//!
//! A normal client library cannot test a server's protocol handling: it refuses to send bad
//! frames, reassembles and validates what comes back, and hides how a connection ended. This
//! one writes exactly the bytes a test asks for (any FIN/RSV bits, opcode, length form, mask,
//! in one write or in chunks) and reports exactly what the server did: every message and
//! pong, its Close frame (code and reason checked), every protocol violation it committed,
//! and whether it closed TCP cleanly, dropped it without a Close frame, or did nothing.
//!
//! Reading never stops while the client writes, so a large message and its echo cannot
//! deadlock on full socket buffers. Every wait has a bound, and a bound only ever fails a
//! case: no result depends on a sleep.
//!
//! # Layout
//! - [`frame`] — the codec: [`Frame`] (outgoing, any header), [`decode`] (server frames),
//!   [`CloseFrame`], [`close_code_is_valid`].
//! - [`handshake`] — the upgrade request and the client's checks of the answer.
//! - [`transcript`] — [`Event`], [`Transcript`], [`Outcome`]: what was observed.

pub mod frame;
pub mod handshake;
#[cfg(test)]
mod tests;
pub mod transcript;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use frame::{
    CloseFrame, Frame, Length, Mask, ServerFrame, close_code_is_valid, decode, encode_all, fragments, opcode,
};
pub use transcript::{End, Event, Outcome, Transcript, preview};

/// The largest frame or message the client accepts from a server (the conformance suite's
/// largest message is 16 MiB); a larger one is a reported violation, never an allocation.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// How long one write may stall before the client gives up on it (a failure bound only).
pub const WRITE_BOUND: Duration = Duration::from_secs(30);

/// How long connecting and the opening handshake may take.
pub const HANDSHAKE_BOUND: Duration = Duration::from_secs(10);

/// A client connection that speaks frames, not messages.
pub struct RawWs {
    stream: TcpStream,
    /// Bytes read and not yet decoded start at `start`.
    buf: Vec<u8>,
    start: usize,
    /// Set once TCP ended (read end-of-stream or an error).
    eof: Option<End>,
    /// The data message being reassembled: its opcode and what arrived so far.
    partial: Option<(u8, Vec<u8>)>,
    events: Vec<Event>,
    close: Option<CloseFrame>,
    client_close_sent: bool,
    client_closed_first: bool,
    end: Option<End>,
    violations: Vec<String>,
    notes: Vec<String>,
    write_errors: Vec<String>,
    server_pings: usize,
}

/// What reading one frame produced.
enum FrameRead {
    Frame(ServerFrame),
    End(End),
    Timeout,
}

/// What reading up to the next event produced.
enum Got {
    Event(Event),
    Close,
    End(End),
    Timeout,
}

impl RawWs {
    /// Connects to `ws://host:port/path` and completes the opening handshake.
    pub async fn connect_url(url: &str) -> Result<RawWs> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("only ws:// URLs: {url}"))?;
        let (host, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, "/"),
        };
        let addr = tokio::net::lookup_host(host)
            .await?
            .next()
            .ok_or_else(|| anyhow!("{host} does not resolve"))?;
        RawWs::connect(addr, path).await
    }

    /// Connects to `addr`, asks for an upgrade of `path` and checks the answer (§4.1).
    pub async fn connect(addr: SocketAddr, path: &str) -> Result<RawWs> {
        let deadline = Instant::now() + HANDSHAKE_BOUND;
        let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} took over {HANDSHAKE_BOUND:?}"))?
            .with_context(|| format!("connecting to {addr}"))?;
        // Chunked writes must leave as separate segments, not wait for Nagle.
        stream.set_nodelay(true)?;
        let key = handshake::new_key();
        stream
            .write_all(handshake::request(&addr.to_string(), path, &key).as_bytes())
            .await?;
        let mut buf = Vec::with_capacity(1024);
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            if buf.len() > handshake::MAX_RESPONSE_HEAD {
                bail!("the handshake answer is over {} bytes", handshake::MAX_RESPONSE_HEAD);
            }
            let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf))
                .await
                .map_err(|_| anyhow!("no handshake answer within {HANDSHAKE_BOUND:?}"))??;
            if read == 0 {
                bail!(
                    "the server closed during the handshake: {:?}",
                    String::from_utf8_lossy(&buf)
                );
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        handshake::check_response(&head, &key)?;
        Ok(RawWs {
            stream,
            buf,
            start: head_end + 4,
            eof: None,
            partial: None,
            events: Vec::new(),
            close: None,
            client_close_sent: false,
            client_closed_first: false,
            end: None,
            violations: Vec::new(),
            notes: Vec::new(),
            write_errors: Vec::new(),
            server_pings: 0,
        })
    }

    /// The events received so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Whether the server's Close frame or the end of TCP has been seen.
    pub fn ended(&self) -> bool {
        self.close.is_some() || self.end.is_some()
    }

    /// Sends frames in one write. Returns whether the write succeeded; a failure is recorded
    /// in the transcript (a server may have closed already, legitimately).
    pub async fn send(&mut self, frames: &[Frame]) -> bool {
        self.note_close_sent(frames);
        self.write(&encode_all(frames)).await
    }

    /// Sends frames `chunk` bytes per write: one frame's header and payload may be split
    /// anywhere. With `TCP_NODELAY`, each write normally leaves as its own segment, though
    /// nothing forces the server to read them one at a time.
    pub async fn send_chopped(&mut self, frames: &[Frame], chunk: usize) -> bool {
        assert!(chunk > 0, "chunks of at least one byte");
        self.note_close_sent(frames);
        let bytes = encode_all(frames);
        for piece in bytes.chunks(chunk) {
            if !self.write(piece).await {
                return false;
            }
        }
        true
    }

    /// Sends raw bytes, whatever they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.write(bytes).await
    }

    /// Starts the closing handshake with `code` and `reason`.
    pub async fn close(&mut self, code: u16, reason: &str) -> bool {
        self.send(&[Frame::close(code, reason)]).await
    }

    fn note_close_sent(&mut self, frames: &[Frame]) {
        if frames.iter().any(|f| f.opcode == opcode::CLOSE) {
            self.client_close_sent = true;
        }
    }

    /// Reads events until `done` holds for everything received, the server's Close frame or
    /// the end of TCP arrives, or `within` passes. Returns whether `done` was reached.
    pub async fn read_until(&mut self, within: Duration, done: impl Fn(&[Event]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.events) {
                return true;
            }
            if self.ended() {
                return false;
            }
            match self.next_event(deadline).await {
                Got::Event(event) => self.events.push(event),
                Got::Close => {}
                Got::End(end) => self.end = Some(end),
                Got::Timeout => return false,
            }
        }
    }

    /// Collects everything until the connection is over and returns the transcript: waits up
    /// to `within` for the server's Close frame (answering it if the client has not sent its
    /// own) or the end of TCP, then up to `within` again for the server to close TCP after
    /// the closing handshake.
    pub async fn finish(mut self, within: Duration) -> Transcript {
        let deadline = Instant::now() + within;
        while !self.ended() {
            match self.next_event(deadline).await {
                Got::Event(event) => self.events.push(event),
                Got::Close => {}
                Got::End(end) => self.end = Some(end),
                Got::Timeout => self.end = Some(End::Timeout(within)),
            }
        }
        if self.end.is_none() {
            let deadline = Instant::now() + within;
            while self.end.is_none() {
                match self.next_frame(deadline).await {
                    FrameRead::Frame(frame) => self.after_close(&frame),
                    FrameRead::End(end) => self.end = Some(end),
                    FrameRead::Timeout => self.end = Some(End::Timeout(within)),
                }
            }
        }
        Transcript {
            events: self.events,
            close: self.close,
            client_closed_first: self.client_closed_first,
            end: self.end.expect("the loops above set an end"),
            violations: self.violations,
            notes: self.notes,
            write_errors: self.write_errors,
            server_pings: self.server_pings,
        }
    }

    /// Reads frames up to the next event, enforcing the rules a server's frames must follow.
    async fn next_event(&mut self, deadline: Instant) -> Got {
        loop {
            let frame = match self.next_frame(deadline).await {
                FrameRead::Frame(frame) => frame,
                FrameRead::End(end) => return Got::End(end),
                FrameRead::Timeout => return Got::Timeout,
            };
            self.check_header(&frame);
            if self.close.is_some() {
                self.after_close(&frame);
                continue;
            }
            if opcode::is_control(frame.opcode) {
                if !frame.fin {
                    self.violations
                        .push(format!("a fragmented control frame: {frame:?} (§5.5)"));
                }
                if frame.payload.len() > 125 {
                    self.violations
                        .push(format!("a control frame over 125 bytes: {frame:?} (§5.5)"));
                }
            }
            match frame.opcode {
                opcode::PING => {
                    self.server_pings += 1;
                    if !self.client_close_sent {
                        self.send(&[Frame::pong(frame.payload)]).await;
                    }
                }
                opcode::PONG => return Got::Event(Event::Pong(frame.payload)),
                opcode::CLOSE => {
                    let close = CloseFrame::parse(&frame.payload);
                    if let Some(problem) = &close.problem {
                        self.violations.push(problem.clone());
                    }
                    self.client_closed_first = self.client_close_sent;
                    if !self.client_close_sent {
                        // Answer as §5.5.1 asks: echo a valid code; an invalid one is a
                        // protocol error.
                        let reply = match close.code {
                            None => Frame::close_empty(),
                            Some(code) if close.problem.is_none() => Frame::close(code, ""),
                            Some(_) => Frame::close(1002, ""),
                        };
                        self.send(&[reply]).await;
                    }
                    self.close = Some(close);
                    return Got::Close;
                }
                opcode::TEXT | opcode::BINARY => {
                    if let Some((op, _)) = self.partial.take() {
                        self.violations.push(format!(
                            "a new {} frame while a fragmented {} message was open (§5.4)",
                            opcode::name(frame.opcode),
                            opcode::name(op)
                        ));
                    }
                    if frame.fin {
                        return Got::Event(self.complete(frame.opcode, frame.payload));
                    }
                    self.partial = Some((frame.opcode, frame.payload));
                }
                opcode::CONTINUATION => {
                    let Some((op, mut payload)) = self.partial.take() else {
                        self.violations
                            .push(format!("{frame:?} without a message to continue (§5.4)"));
                        continue;
                    };
                    if payload.len() + frame.payload.len() > MAX_PAYLOAD {
                        self.violations
                            .push(format!("a message over {MAX_PAYLOAD} bytes (this client's bound)"));
                        continue;
                    }
                    payload.extend_from_slice(&frame.payload);
                    if frame.fin {
                        return Got::Event(self.complete(op, payload));
                    }
                    self.partial = Some((op, payload));
                }
                // Reserved opcodes were reported by `check_header`.
                _ => {}
            }
        }
    }

    /// Records a frame that came after the server's Close: a data frame breaks §5.5.1 (no data
    /// after a Close); a control frame is only odd (the handshake is over), so it is a note.
    fn after_close(&mut self, frame: &ServerFrame) {
        if opcode::is_control(frame.opcode) {
            self.notes.push(format!("{frame:?} after its Close frame"));
        } else {
            self.violations.push(format!(
                "{frame:?} after its Close frame (§5.5.1: no data frames after a Close)"
            ));
        }
    }

    /// Records header bits a server must never send: a mask (§5.1), RSV bits without an
    /// extension (§5.2), a longer length form than needed (§5.2), a reserved opcode.
    fn check_header(&mut self, frame: &ServerFrame) {
        if frame.masked {
            self.violations
                .push(format!("a masked frame from the server: {frame:?} (§5.1)"));
        }
        if frame.rsv != 0 {
            self.violations
                .push(format!("RSV bits without an extension: {frame:?} (§5.2)"));
        }
        if !frame.minimal_length {
            self.violations
                .push(format!("a payload length not in its shortest form: {frame:?} (§5.2)"));
        }
        if !opcode::is_defined(frame.opcode) {
            self.violations.push(format!("a reserved opcode: {frame:?} (§5.2)"));
        }
    }

    fn complete(&mut self, op: u8, payload: Vec<u8>) -> Event {
        if op == opcode::TEXT {
            if std::str::from_utf8(&payload).is_err() {
                self.violations.push(format!(
                    "a text message that is not UTF-8: {} (§5.6)",
                    preview(&payload)
                ));
            }
            Event::Text(payload)
        } else {
            Event::Binary(payload)
        }
    }

    /// Decodes the next frame, reading more as needed, until `deadline`.
    async fn next_frame(&mut self, deadline: Instant) -> FrameRead {
        loop {
            match decode(&self.buf[self.start..], MAX_PAYLOAD) {
                Ok(Some((frame, used))) => {
                    self.start += used;
                    return FrameRead::Frame(frame);
                }
                Ok(None) => {}
                Err(error) => {
                    self.violations.push(error.to_string());
                    return FrameRead::End(End::TcpReset(format!("the client stopped reading: {error}")));
                }
            }
            if let Some(end) = &self.eof {
                let left = self.buf.len() - self.start;
                if left > 0 && *end == End::TcpClosed {
                    self.violations
                        .push(format!("TCP closed inside a frame ({left} bytes of it came)"));
                    self.start = self.buf.len();
                }
                return FrameRead::End(end.clone());
            }
            self.make_room();
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return FrameRead::Timeout,
                Ok(Ok(0)) => self.eof = Some(End::TcpClosed),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => self.eof = Some(End::TcpReset(error.to_string())),
            }
        }
    }

    /// Drops decoded bytes and reserves space for the next read.
    fn make_room(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 1024 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(64 * 1024);
    }

    /// Writes `bytes` while reading whatever the server sends meanwhile into the buffer, so
    /// that neither side's writes block on the other's full receive buffer.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        let result = self.write_reading(bytes).await;
        if let Err(error) = &result {
            self.write_errors.push(error.to_string());
        }
        result.is_ok()
    }

    async fn write_reading(&mut self, bytes: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + WRITE_BOUND;
        let read_ahead_limit = MAX_PAYLOAD + 1024 * 1024;
        self.make_room();
        let undecoded_from = self.start;
        let (buf, eof) = (&mut self.buf, &mut self.eof);
        let (mut reader, mut writer) = self.stream.split();
        let write = writer.write_all(bytes);
        tokio::pin!(write);
        loop {
            let reading = eof.is_none() && buf.len() - undecoded_from < read_ahead_limit;
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            tokio::select! {
                written = &mut write => return written,
                read = reader.read_buf(buf), if reading => match read {
                    Ok(0) => *eof = Some(End::TcpClosed),
                    Ok(_) => {}
                    Err(error) => *eof = Some(End::TcpReset(error.to_string())),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, format!("write stalled for {WRITE_BOUND:?}")));
                }
            }
        }
    }
}
