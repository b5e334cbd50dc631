//! The raw client's WebSocket frames (RFC 6455, section 5): masked frames out,
//! and a streaming decoder for the server's frames in.
//!
//! A client MUST mask what it sends (section 5.3); a fixed mask is fine for a
//! load generator, since nothing here needs to defeat a caching proxy.
//!
//! The decoder keeps no buffer between frames, and of a data frame only its
//! first [`KEEP`] bytes: the benches read a sequence number and a timestamp at
//! the start of each message, and a connection must stay a few dozen bytes
//! however big the frames it receives (`slow` sends 64 KiB ones to a thousand
//! readers). Control frames (at most 125 bytes) are kept whole. The v1 client
//! ([`crate::v1`]) reads whole JSON answers, so it keeps more: the limit is
//! the decoder's type parameter, and the raw client's stays as small as it was.

use std::fmt;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

const FIN: u8 = 0x80;
const MASKED: u8 = 0x80;

/// The mask of every frame this client sends.
pub const MASK: [u8; 4] = [0x5a, 0xc3, 0x81, 0x07];

/// How many leading bytes of a data message reach the listener.
pub const KEEP: usize = 64;

/// The longest frame header: 2 bytes, a 64-bit length, a mask.
const MAX_HEADER: usize = 14;

/// Appends one final frame with `payload`, masked with `mask` if given.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let mask_bit = if mask.is_some() { MASKED } else { 0 };
    out.push(FIN | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], key, 0);
        }
        None => out.extend_from_slice(payload),
    }
}

/// XORs `data` with `key`, where `data` starts `offset` bytes into the payload.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    let shift = (offset % 4) as usize;
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(i + shift) % 4];
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
    /// Bytes the header itself takes.
    pub header_len: usize,
}

impl Header {
    fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// How the server broke the protocol (from this client's point of view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    ReservedBits,
    UnknownOpcode(u8),
    /// A control frame that is fragmented or longer than 125 bytes.
    BadControl,
    /// A 64-bit length with its top bit set.
    BadLength,
    /// The hub never fragments, so this client does not reassemble.
    Fragmented,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedBits => f.write_str("frame with reserved bits set"),
            FrameError::UnknownOpcode(op) => write!(f, "frame with unknown opcode {op:#x}"),
            FrameError::BadControl => f.write_str("fragmented or oversized control frame"),
            FrameError::BadLength => f.write_str("frame length over 2^63"),
            FrameError::Fragmented => f.write_str("fragmented message (not expected from the hub)"),
        }
    }
}

/// Parses the header at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(FrameError::UnknownOpcode(opcode));
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(&[hi, lo]) => (u64::from(u16::from_be_bytes([hi, lo])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(bytes) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > i64::MAX as u64 {
        return Err(FrameError::BadLength);
    }
    let mask = if b1 & MASKED != 0 {
        match buf.get(at..at + 4) {
            Some(&[a, b, c, d]) => {
                at += 4;
                Some([a, b, c, d])
            }
            _ => return Ok(None),
        }
    } else {
        None
    };
    let header = Header {
        fin: b0 & FIN != 0,
        opcode,
        mask,
        len,
        header_len: at,
    };
    if header.is_control() && (!header.fin || len > 125) {
        return Err(FrameError::BadControl);
    }
    Ok(Some(header))
}

/// A message as the decoder hands it over.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A text message: its first bytes (at most the decoder's `K`, by
    /// default [`KEEP`]) and its full length.
    Text {
        prefix: &'a [u8],
        len: u64,
    },
    Binary {
        len: u64,
    },
    Ping(&'a [u8]),
    Pong,
    /// A close frame and its status code, if it carried one.
    Close(Option<u16>),
}

/// A frame whose payload is still arriving.
#[derive(Debug)]
struct Partial {
    header: Header,
    /// Payload bytes seen so far.
    got: u64,
    /// The payload's first bytes, unmasked.
    keep: Vec<u8>,
}

impl Partial {
    /// Bytes still to keep of the payload, `keep` for a data frame.
    fn room(&self, keep: usize) -> usize {
        let cap = if self.header.is_control() { 125 } else { keep };
        cap.saturating_sub(self.keep.len())
    }
}

/// The streaming decoder of one connection; of a text message it hands over
/// the first `K` bytes.
#[derive(Debug, Default)]
pub struct Decoder<const K: usize = KEEP> {
    /// A header split across reads.
    head: [u8; MAX_HEADER],
    head_len: u8,
    frame: Option<Partial>,
}

impl<const K: usize> Decoder<K> {
    /// Decodes `data`, calling `on` for each complete message.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), FrameError> {
        while !data.is_empty() {
            if let Some(partial) = &mut self.frame {
                let take = (partial.header.len - partial.got).min(data.len() as u64) as usize;
                let kept = take.min(partial.room(K));
                let from = partial.keep.len();
                partial.keep.extend_from_slice(&data[..kept]);
                if let Some(key) = partial.header.mask {
                    apply_mask(&mut partial.keep[from..], key, partial.got);
                }
                partial.got += take as u64;
                data = &data[take..];
                if partial.got == partial.header.len
                    && let Some(done) = self.frame.take()
                {
                    emit::<K>(done.header, &done.keep, on)?;
                }
                continue;
            }
            let used = if self.head_len == 0 {
                match parse_header(data)? {
                    None => {
                        // Fewer than MAX_HEADER bytes, or parse_header would have
                        // found the header: they fit in `head`.
                        self.head[..data.len()].copy_from_slice(data);
                        self.head_len = data.len() as u8;
                        return Ok(());
                    }
                    Some(header) => {
                        let rest = &data[header.header_len..];
                        if header.mask.is_none() && rest.len() as u64 >= header.len {
                            // The whole frame is here: no copy.
                            check_data_frame(&header)?;
                            let end = header.header_len + header.len as usize;
                            emit::<K>(header, &data[header.header_len..end], on)?;
                            data = &data[end..];
                            continue;
                        }
                        self.start(header)?;
                        header.header_len
                    }
                }
            } else {
                let had = usize::from(self.head_len);
                let added = (MAX_HEADER - had).min(data.len());
                self.head[had..had + added].copy_from_slice(&data[..added]);
                match parse_header(&self.head[..had + added])? {
                    None => {
                        self.head_len = (had + added) as u8;
                        return Ok(());
                    }
                    Some(header) => {
                        self.head_len = 0;
                        self.start(header)?;
                        header.header_len - had
                    }
                }
            };
            data = &data[used..];
            // An empty payload completes at once.
            if let Some(partial) = &self.frame
                && partial.header.len == 0
                && let Some(done) = self.frame.take()
            {
                emit::<K>(done.header, &done.keep, on)?;
            }
        }
        Ok(())
    }

    fn start(&mut self, header: Header) -> Result<(), FrameError> {
        check_data_frame(&header)?;
        self.frame = Some(Partial {
            header,
            got: 0,
            keep: Vec::new(),
        });
        Ok(())
    }
}

fn check_data_frame(header: &Header) -> Result<(), FrameError> {
    if header.opcode == OP_CONTINUATION || (!header.fin && !header.is_control()) {
        return Err(FrameError::Fragmented);
    }
    Ok(())
}

fn emit<const K: usize>(
    header: Header,
    payload: &[u8],
    on: &mut dyn FnMut(Event<'_>),
) -> Result<(), FrameError> {
    match header.opcode {
        OP_TEXT => on(Event::Text {
            prefix: &payload[..payload.len().min(K)],
            len: header.len,
        }),
        OP_BINARY => on(Event::Binary { len: header.len }),
        OP_PING => on(Event::Ping(payload)),
        OP_PONG => on(Event::Pong),
        OP_CLOSE => on(Event::Close(match payload {
            [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        })),
        _ => return Err(FrameError::Fragmented),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushhub::ws::frame::Frame;

    /// What the decoder reports for `bytes`, fed in pieces of `step` bytes.
    fn decode(bytes: &[u8], step: usize) -> Result<Vec<String>, FrameError> {
        let mut decoder: Decoder = Decoder::default();
        let mut seen = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            decoder.feed(piece, &mut |event| {
                seen.push(match event {
                    Event::Text { prefix, len } => {
                        format!("text {len} {}", String::from_utf8_lossy(prefix))
                    }
                    Event::Binary { len } => format!("binary {len}"),
                    Event::Ping(p) => format!("ping {}", String::from_utf8_lossy(p)),
                    Event::Pong => "pong".into(),
                    Event::Close(code) => format!("close {code:?}"),
                })
            })?;
        }
        Ok(seen)
    }

    #[test]
    fn masking_round_trips() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut frame = Vec::new();
        encode(&mut frame, OP_TEXT, &payload, Some(MASK));
        let header = parse_header(&frame).unwrap().unwrap();
        assert_eq!(header.mask, Some(MASK));
        assert_eq!(header.len, 1000);
        let mut body = frame[header.header_len..].to_vec();
        assert_ne!(body, payload, "the payload is sent masked");
        apply_mask(&mut body, MASK, 0);
        assert_eq!(body, payload);
        // Unmasking from an offset, as the streaming decoder does.
        let mut tail = frame[header.header_len + 7..].to_vec();
        apply_mask(&mut tail, MASK, 7);
        assert_eq!(tail, &payload[7..]);
    }

    #[test]
    fn length_encodings() {
        for (len, header_len, len_byte) in [
            (0usize, 2usize, 0u8),
            (125, 2, 125),
            (126, 4, 126),
            (0xFFFF, 4, 126),
            (0x1_0000, 10, 127),
            (70_000, 10, 127),
        ] {
            let payload = vec![b'a'; len];
            for mask in [None, Some(MASK)] {
                let mut frame = Vec::new();
                encode(&mut frame, OP_BINARY, &payload, mask);
                let extra = if mask.is_some() { 4 } else { 0 };
                assert_eq!(frame[1] & 0x7F, len_byte, "len {len}");
                let header = parse_header(&frame).unwrap().unwrap();
                assert_eq!(header.len, len as u64);
                assert_eq!(header.header_len, header_len + extra);
                assert_eq!(frame.len(), header_len + extra + len);
            }
        }
        // A 64-bit length with the top bit set is refused.
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_header(&huge), Err(FrameError::BadLength));
    }

    #[test]
    fn partial_input_needs_more_bytes() {
        let mut frame = Vec::new();
        encode(&mut frame, OP_TEXT, &[b'z'; 300], Some(MASK));
        // 2 + 2 (16-bit length) + 4 (mask): every shorter prefix is "need more".
        for cut in 0..8 {
            assert_eq!(parse_header(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_header(&frame[..8]).unwrap().is_some());
        let mut long = Vec::new();
        encode(&mut long, OP_TEXT, &[b'z'; 70_000], None);
        for cut in 0..10 {
            assert_eq!(parse_header(&long[..cut]), Ok(None), "cut at {cut}");
        }
        // The decoder reports nothing until the frame is complete.
        let mut decoder: Decoder = Decoder::default();
        let mut count = 0;
        decoder
            .feed(&frame[..frame.len() - 1], &mut |_| count += 1)
            .unwrap();
        assert_eq!(count, 0);
        decoder
            .feed(&frame[frame.len() - 1..], &mut |_| count += 1)
            .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn decodes_what_the_hub_encodes_in_any_split() {
        let mut stream = Vec::new();
        for frame in [
            Frame::text("login success, your uid is u7"),
            Frame::ping(),
            Frame::text(&"x".repeat(200)),
            Frame::pong(b"hi"),
            Frame::text(&format!("17 {}", "y".repeat(70_000))),
            Frame::text(""),
            Frame::close(1008, "slow consumer: outbound queue full"),
        ] {
            stream.extend_from_slice(frame.as_bytes());
        }
        let expected = vec![
            "text 29 login success, your uid is u7".to_string(),
            "ping ".into(),
            format!("text 200 {}", "x".repeat(KEEP)),
            "pong".into(),
            format!("text 70003 17 {}", "y".repeat(KEEP - 3)),
            "text 0 ".into(),
            "close Some(1008)".into(),
        ];
        for step in [1, 2, 3, 7, 13, 100, 4096, stream.len()] {
            assert_eq!(decode(&stream, step).unwrap(), expected, "step {step}");
        }
    }

    #[test]
    fn a_wider_decoder_keeps_more_of_each_message() {
        let text = "z".repeat(300);
        let frame = Frame::text(&text);
        for step in [1, 7, frame.as_bytes().len()] {
            let mut decoder = Decoder::<256>::default();
            let mut seen = Vec::new();
            for piece in frame.as_bytes().chunks(step) {
                decoder
                    .feed(piece, &mut |event| {
                        if let Event::Text { prefix, len } = event {
                            seen.push((prefix.len(), len));
                        }
                    })
                    .unwrap();
            }
            assert_eq!(seen, [(256, 300)], "step {step}");
        }
    }

    #[test]
    fn masked_frames_decode_too() {
        let mut stream = Vec::new();
        encode(&mut stream, OP_TEXT, b"hello there", Some(MASK));
        encode(&mut stream, OP_PING, b"p", Some(MASK));
        encode(&mut stream, OP_CLOSE, &[], Some(MASK));
        for step in [1, 5, stream.len()] {
            assert_eq!(
                decode(&stream, step).unwrap(),
                ["text 11 hello there", "ping p", "close None"]
            );
        }
    }

    #[test]
    fn refuses_what_the_hub_never_sends() {
        assert_eq!(decode(b"\xc1\x00", 2), Err(FrameError::ReservedBits));
        assert_eq!(decode(b"\x83\x00", 2), Err(FrameError::UnknownOpcode(3)));
        assert_eq!(decode(b"\x09\x00", 2), Err(FrameError::BadControl));
        assert_eq!(decode(b"\x89\x7e\x00\x7e", 4), Err(FrameError::BadControl));
        assert_eq!(decode(b"\x01\x01a", 3), Err(FrameError::Fragmented));
        assert_eq!(decode(b"\x80\x01a", 3), Err(FrameError::Fragmented));
    }
}
