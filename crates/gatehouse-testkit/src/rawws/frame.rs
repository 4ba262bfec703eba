//! The frame codec (RFC 6455 §5.2): an encoder that can write any header a test needs, legal or
//! not, and a decoder for server frames that reports exactly what came, including the header
//! details a server is not allowed to get wrong.

use std::fmt;

/// Frame opcodes (RFC 6455 §5.2, §11.8).
pub mod opcode {
    /// Continues a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message (or its first fragment).
    pub const TEXT: u8 = 0x1;
    /// A binary message (or its first fragment).
    pub const BINARY: u8 = 0x2;
    /// Close control frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping control frame.
    pub const PING: u8 = 0x9;
    /// Pong control frame.
    pub const PONG: u8 = 0xA;

    /// Whether `op` is one the RFC defines (3-7 and 0xB-0xF are reserved).
    pub fn is_defined(op: u8) -> bool {
        matches!(op, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG)
    }

    /// Whether `op` is a control opcode (high bit of the nibble set).
    pub fn is_control(op: u8) -> bool {
        op & 0x8 != 0
    }

    /// A short name for reports.
    pub fn name(op: u8) -> String {
        match op {
            CONTINUATION => "continuation".into(),
            TEXT => "text".into(),
            BINARY => "binary".into(),
            CLOSE => "close".into(),
            PING => "ping".into(),
            PONG => "pong".into(),
            other => format!("reserved-0x{other:X}"),
        }
    }
}

/// How an outgoing frame's payload length is written. Senders MUST use the shortest form
/// (§5.2); the other forms exist so that tests can check how a server treats the longer ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// The shortest form: 7 bits up to 125, 16 bits up to 65535, 64 bits beyond.
    Minimal,
    /// Always the 16-bit form (126 + two bytes); the payload must fit in it.
    Bits16,
    /// Always the 64-bit form (127 + eight bytes).
    Bits64,
    /// The 64-bit form carrying this value whatever the payload is: a header that announces
    /// more (or other) than what follows, to test limits without sending the bytes.
    Declared64(u64),
}

/// The masking key of an outgoing frame. Clients MUST mask every frame with a fresh,
/// unpredictable key (§5.3); `Key` and `None` exist for codec tests and for checking that a
/// server refuses unmasked frames (§5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// A fresh random key, chosen when the frame is encoded.
    Random,
    /// This key.
    Key([u8; 4]),
    /// No mask (a protocol violation for a client).
    None,
}

/// An outgoing frame with every header field under the test's control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The FIN bit.
    pub fin: bool,
    /// RSV1..RSV3 as a 3-bit number (RSV1 is 4). Non-zero without an extension is a violation.
    pub rsv: u8,
    /// The 4-bit opcode, defined or reserved.
    pub opcode: u8,
    /// The application payload, unmasked.
    pub payload: Vec<u8>,
    /// The masking key.
    pub mask: Mask,
    /// How the length is written.
    pub length: Length,
}

impl Frame {
    /// A final, masked frame with the shortest length form.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            payload: payload.into(),
            mask: Mask::Random,
            length: Length::Minimal,
        }
    }

    /// A complete text message in one frame.
    pub fn text(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(opcode::TEXT, payload)
    }

    /// A complete binary message in one frame.
    pub fn binary(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(opcode::BINARY, payload)
    }

    /// A continuation frame (final unless [`Frame::fin`] says otherwise).
    pub fn continuation(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(opcode::CONTINUATION, payload)
    }

    /// A ping.
    pub fn ping(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(opcode::PING, payload)
    }

    /// A pong.
    pub fn pong(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(opcode::PONG, payload)
    }

    /// A Close frame with a status code and a reason (the reason may be any bytes, so that
    /// tests can send invalid UTF-8).
    pub fn close(code: u16, reason: impl AsRef<[u8]>) -> Frame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_ref());
        Frame::new(opcode::CLOSE, payload)
    }

    /// A Close frame with an empty payload (no status code).
    pub fn close_empty() -> Frame {
        Frame::new(opcode::CLOSE, Vec::new())
    }

    /// Sets the FIN bit.
    pub fn fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }

    /// Sets the RSV bits (RSV1 = 4, RSV2 = 2, RSV3 = 1).
    pub fn rsv(mut self, rsv: u8) -> Frame {
        assert!(rsv < 8, "three RSV bits");
        self.rsv = rsv;
        self
    }

    /// Sets the masking key.
    pub fn mask(mut self, mask: Mask) -> Frame {
        self.mask = mask;
        self
    }

    /// Sets the length form.
    pub fn length(mut self, length: Length) -> Frame {
        self.length = length;
        self
    }

    /// Encodes the frame as it goes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.opcode < 16, "a 4-bit opcode");
        let len = self.payload.len() as u64;
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push((u8::from(self.fin) << 7) | (self.rsv << 4) | self.opcode);
        let masked = !matches!(self.mask, Mask::None);
        let mask_bit = u8::from(masked) << 7;
        match self.length {
            Length::Minimal if len <= 125 => out.push(mask_bit | len as u8),
            Length::Minimal if len <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Length::Minimal | Length::Bits64 => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
            Length::Bits16 => {
                let short = u16::try_from(len).expect("the 16-bit form holds at most 65535 bytes");
                out.push(mask_bit | 126);
                out.extend_from_slice(&short.to_be_bytes());
            }
            Length::Declared64(declared) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&declared.to_be_bytes());
            }
        }
        let key = match self.mask {
            Mask::None => None,
            Mask::Key(key) => Some(key),
            Mask::Random => Some(rand::random::<[u8; 4]>()),
        };
        let start = out.len() + if key.is_some() { 4 } else { 0 };
        if let Some(key) = key {
            out.extend_from_slice(&key);
        }
        out.extend_from_slice(&self.payload);
        if let Some(key) = key {
            apply_mask(&mut out[start..], key);
        }
        out
    }
}

/// Splits a message into frames of at most `size` payload bytes: the first carries `opcode`,
/// the rest are continuations, only the last has FIN. An empty payload is one final frame.
pub fn fragments(opcode: u8, payload: &[u8], size: usize) -> Vec<Frame> {
    assert!(size > 0, "fragments of at least one byte");
    if payload.is_empty() {
        return vec![Frame::new(opcode, Vec::new())];
    }
    let count = payload.len().div_ceil(size);
    payload
        .chunks(size)
        .enumerate()
        .map(|(index, chunk)| {
            let op = if index == 0 { opcode } else { opcode::CONTINUATION };
            Frame::new(op, chunk).fin(index + 1 == count)
        })
        .collect()
}

/// Encodes several frames back to back (one write on the wire).
pub fn encode_all(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(Frame::encode).collect()
}

/// XORs `data` with the masking key (§5.3); masking and unmasking are the same operation.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (index, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[index];
    }
}

/// A frame as the server sent it, payload unmasked.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// The FIN bit.
    pub fin: bool,
    /// RSV1..RSV3 as a 3-bit number.
    pub rsv: u8,
    /// The 4-bit opcode.
    pub opcode: u8,
    /// Whether the frame was masked (servers MUST NOT mask, §5.1).
    pub masked: bool,
    /// Whether the length used the shortest form (senders MUST, §5.2).
    pub minimal_length: bool,
    /// The payload (unmasked if it was masked).
    pub payload: Vec<u8>,
}

impl fmt::Debug for ServerFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}{}({} bytes)",
            opcode::name(self.opcode),
            if self.fin { "" } else { "[no FIN]" },
            if self.rsv != 0 {
                format!("[rsv={}]", self.rsv)
            } else {
                String::new()
            },
            if self.masked { "[masked]" } else { "" },
            self.payload.len()
        )
    }
}

/// Why the bytes cannot be decoded into a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The header announces a payload longer than the client accepts.
    TooLong {
        /// The announced length.
        declared: u64,
        /// The bound.
        max: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLong { declared, max } => {
                write!(f, "a frame announcing {declared} bytes (this client accepts {max})")
            }
        }
    }
}

/// Decodes one frame from the start of `buf`. Returns the frame and the number of bytes it
/// took, or `None` when `buf` holds only part of a frame. Payloads over `max_payload` bytes are
/// refused before any of them is buffered, so a hostile length cannot exhaust memory.
pub fn decode(buf: &[u8], max_payload: usize) -> Result<Option<(ServerFrame, usize)>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (first, second) = (buf[0], buf[1]);
    let masked = second & 0x80 != 0;
    let (declared, mut pos, minimal_length) = match second & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else { return Ok(None) };
            let len = u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            (len, 4, len > 125)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else { return Ok(None) };
            let len = u64::from_be_bytes(bytes.try_into().expect("eight bytes"));
            // The top bit MUST be 0, and 64 bits only for lengths over 65535.
            (len, 10, len > 0xFFFF && len >> 63 == 0)
        }
        short => (u64::from(short), 2, true),
    };
    if declared > max_payload as u64 {
        return Err(DecodeError::TooLong {
            declared,
            max: max_payload,
        });
    }
    let len = declared as usize;
    let key = if masked {
        let Some(bytes) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        pos += 4;
        Some([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        None
    };
    let Some(payload) = buf.get(pos..pos + len) else {
        return Ok(None);
    };
    let mut payload = payload.to_vec();
    if let Some(key) = key {
        apply_mask(&mut payload, key);
    }
    let frame = ServerFrame {
        fin: first & 0x80 != 0,
        rsv: (first >> 4) & 0x7,
        opcode: first & 0x0F,
        masked,
        minimal_length,
        payload,
    };
    Ok(Some((frame, pos + len)))
}

/// Whether `code` may appear in a Close frame on the wire: 1000-1003 and 1007-1011 (RFC 6455
/// §7.4.1), 1012-1014 (registered since in the IANA "WebSocket Close Code Number Registry":
/// service restart, try again later, bad gateway), 3000-4999 (§7.4.2: registered and private
/// use). Not 0-999 (unused), 1004 (reserved), 1005, 1006 and 1015 (MUST NOT be sent),
/// 1016-2999 (reserved for the protocol and extensions, none assigned), nor 5000 and above
/// (outside every range the RFC defines).
pub fn close_code_is_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A Close frame's payload, parsed (§5.5.1): empty, or a status code and a UTF-8 reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code; `None` for an empty payload.
    pub code: Option<u16>,
    /// The reason (lossily decoded when it is not UTF-8; see [`CloseFrame::problem`]).
    pub reason: String,
    /// What is wrong with the payload, if anything (1-byte payload, a code that may not be
    /// sent, a reason that is not UTF-8).
    pub problem: Option<String>,
}

impl CloseFrame {
    /// Parses a Close payload.
    pub fn parse(payload: &[u8]) -> CloseFrame {
        match payload {
            [] => CloseFrame {
                code: None,
                reason: String::new(),
                problem: None,
            },
            [_] => CloseFrame {
                code: None,
                reason: String::new(),
                problem: Some("a 1-byte Close payload (§5.5.1: a body starts with a 2-byte code)".into()),
            },
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                let mut problem = None;
                if !close_code_is_valid(code) {
                    problem = Some(format!("close code {code} may not be sent (§7.4)"));
                }
                let reason = match std::str::from_utf8(reason) {
                    Ok(text) => text.to_owned(),
                    Err(_) => {
                        problem.get_or_insert_with(|| "a Close reason that is not UTF-8 (§5.5.1)".into());
                        String::from_utf8_lossy(reason).into_owned()
                    }
                };
                CloseFrame {
                    code: Some(code),
                    reason,
                    problem,
                }
            }
        }
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            None => write!(f, "Close (empty)")?,
            Some(code) if self.reason.is_empty() => write!(f, "Close {code}")?,
            Some(code) => write!(f, "Close {code} {:?}", self.reason)?,
        }
        if let Some(problem) = &self.problem {
            write!(f, " [invalid: {problem}]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// The examples of RFC 6455 §5.7, byte for byte.
    #[test]
    fn encodes_the_rfc_examples() {
        assert_eq!(
            Frame::text("Hello").mask(Mask::None).encode(),
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            Frame::text("Hello").mask(Mask::Key(KEY)).encode(),
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        assert_eq!(
            Frame::text("Hel").fin(false).mask(Mask::None).encode(),
            [0x01, 0x03, 0x48, 0x65, 0x6c]
        );
        assert_eq!(
            Frame::continuation("lo").mask(Mask::None).encode(),
            [0x80, 0x02, 0x6c, 0x6f]
        );
        assert_eq!(
            Frame::ping("Hello").mask(Mask::None).encode(),
            [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            Frame::pong("Hello").mask(Mask::Key(KEY)).encode(),
            [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        let big = Frame::binary(vec![0u8; 256]).mask(Mask::None).encode();
        assert_eq!(big[..4], [0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(big.len(), 4 + 256);
        let huge = Frame::binary(vec![0u8; 65536]).mask(Mask::None).encode();
        assert_eq!(huge[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(huge.len(), 10 + 65536);
    }

    #[test]
    fn the_length_form_switches_at_126_and_65536() {
        let header = |len: usize| Frame::binary(vec![7u8; len]).mask(Mask::None).encode()[1];
        for (len, byte) in [(0, 0), (125, 125), (126, 126), (127, 126), (65535, 126), (65536, 127)] {
            assert_eq!(header(len), byte, "length {len}");
        }
    }

    #[test]
    fn forced_length_forms_round_trip_and_are_reported_as_not_minimal() {
        for (length, header_len) in [(Length::Bits16, 4), (Length::Bits64, 10)] {
            let wire = Frame::text("abc").mask(Mask::None).length(length).encode();
            assert_eq!(wire.len(), header_len + 3);
            let (frame, used) = decode(&wire, 1024).unwrap().unwrap();
            assert_eq!((frame.payload.as_slice(), used), (&b"abc"[..], wire.len()));
            assert!(!frame.minimal_length, "{length:?}");
        }
        let declared = Frame::text("")
            .mask(Mask::None)
            .length(Length::Declared64(1 << 40))
            .encode();
        assert_eq!(declared, [0x81, 127, 0, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(
            decode(&declared, 1 << 20),
            Err(DecodeError::TooLong {
                declared: 1 << 40,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn header_bits_are_written_and_read_back() {
        let wire = Frame::new(0xB, "x").fin(false).rsv(5).mask(Mask::None).encode();
        assert_eq!(wire[0], 0b0101_1011);
        let (frame, _) = decode(&wire, 16).unwrap().unwrap();
        assert_eq!((frame.fin, frame.rsv, frame.opcode), (false, 5, 0xB));
    }

    #[test]
    fn masked_frames_are_unmasked_and_flagged() {
        let wire = Frame::text("Hello").mask(Mask::Key(KEY)).encode();
        let (frame, used) = decode(&wire, 16).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert!(frame.masked);
        assert_eq!(frame.payload, b"Hello");
    }

    #[test]
    fn random_masks_differ_between_frames_and_still_round_trip() {
        let payload: Vec<u8> = (0..=255).collect();
        let first = Frame::binary(payload.clone()).encode();
        let second = Frame::binary(payload.clone()).encode();
        assert_ne!(first[4..8], second[4..8], "two frames got the same masking key");
        let (frame, _) = decode(&first, 1024).unwrap().unwrap();
        assert_eq!(frame.payload, payload);
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        for frame in [
            Frame::text("Hello").mask(Mask::Key(KEY)),
            Frame::binary(vec![1u8; 300]).mask(Mask::None),
            Frame::binary(vec![2u8; 70_000]).mask(Mask::Key(KEY)),
        ] {
            let wire = frame.encode();
            for cut in (0..wire.len()).filter(|cut| *cut < 20 || cut + 1 == wire.len()) {
                assert_eq!(decode(&wire[..cut], 1 << 20), Ok(None), "cut at {cut}");
            }
            let mut two = wire.clone();
            two.extend_from_slice(&wire);
            let (decoded, used) = decode(&two, 1 << 20).unwrap().unwrap();
            assert_eq!((decoded.payload, used), (frame.payload, wire.len()));
        }
    }

    #[test]
    fn a_64_bit_length_with_the_top_bit_set_is_refused() {
        let mut wire = vec![0x82, 127];
        wire.extend_from_slice(&((1u64 << 63) | 3).to_be_bytes());
        wire.extend_from_slice(b"abc");
        assert!(matches!(decode(&wire, 1 << 20), Err(DecodeError::TooLong { .. })));
    }

    #[test]
    fn fragments_split_a_message_and_mark_only_the_last_final() {
        let frames = fragments(opcode::TEXT, b"abcdefg", 3);
        let shape: Vec<_> = frames.iter().map(|f| (f.opcode, f.fin, f.payload.clone())).collect();
        assert_eq!(
            shape,
            [
                (opcode::TEXT, false, b"abc".to_vec()),
                (opcode::CONTINUATION, false, b"def".to_vec()),
                (opcode::CONTINUATION, true, b"g".to_vec()),
            ]
        );
        assert_eq!(fragments(opcode::BINARY, b"", 3).len(), 1);
        assert!(fragments(opcode::BINARY, b"", 3)[0].fin);
    }

    #[test]
    fn close_payloads_are_parsed_and_checked() {
        assert_eq!(CloseFrame::parse(&[]).code, None);
        assert!(CloseFrame::parse(&[0x03]).problem.is_some());
        let normal = CloseFrame::parse(&[0x03, 0xE8, b'o', b'k']);
        assert_eq!(
            (normal.code, normal.reason.as_str(), normal.problem),
            (Some(1000), "ok", None)
        );
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(CloseFrame::parse(&bad.to_be_bytes()).problem.is_some(), "{bad}");
        }
        for good in [1000u16, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999] {
            assert_eq!(CloseFrame::parse(&good.to_be_bytes()).problem, None, "{good}");
        }
        assert!(CloseFrame::parse(&[0x03, 0xE8, 0xC0, 0xAF]).problem.is_some());
    }
}
