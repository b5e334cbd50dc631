//! Client-to-server WebSocket frames (RFC 6455, section 5): the decoder that
//! turns a client's bytes into messages. No I/O; it says "need more bytes" with
//! `Ok(None)`.
//!
//! Clients send little (a credential, pongs, the odd message that is ignored),
//! so the decoder favours holding no memory between messages over speed.
//! Text is checked as it arrives, fragment by fragment and within a frame
//! still arriving, so that invalid UTF-8 fails the message at once rather
//! than after the rest of it; what that keeps is a count of bytes checked.

use std::fmt;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The close frame's code, if it carried one.
    Close(Option<u16>),
}

/// How a client broke the protocol; each ends its connection with a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A frame or message over the size limit (close code 1009).
    TooBig,
    /// A text message, or a close reason, that is not UTF-8 (1007).
    BadUtf8,
    /// Any other violation (1002): unmasked frame, reserved bits or opcode,
    /// fragmented or oversized control frame, continuation out of place.
    Protocol(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooBig => f.write_str("message too big"),
            FrameError::BadUtf8 => f.write_str("invalid UTF-8"),
            FrameError::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

/// A message whose frames are still arriving.
#[derive(Debug)]
struct Fragmented {
    text: bool,
    /// For a text message: `data[..checked]` is UTF-8 that ends on a
    /// character boundary; what follows is at most an incomplete character.
    checked: u32,
    data: Vec<u8>,
}

impl Fragmented {
    /// Checks what the last fragment added, so that a text message fails as
    /// soon as a fragment makes it invalid rather than at its last one. A
    /// character cut at the end may still be completed by the next fragment.
    fn check(&mut self) -> Result<(), FrameError> {
        if !self.text {
            return Ok(());
        }
        let from = self.checked as usize;
        // `data` fits the size limit, which fits a u32.
        self.checked = match std::str::from_utf8(&self.data[from..]) {
            Ok(_) => self.data.len() as u32,
            Err(e) if e.error_len().is_some() => return Err(FrameError::BadUtf8),
            Err(e) => (from + e.valid_up_to()) as u32,
        };
        Ok(())
    }

    /// The incomplete character the checked part ends with, if any.
    fn tail(&self) -> &[u8] {
        &self.data[self.checked as usize..]
    }
}

/// Decoder state that lives between frames: only a fragmented message, and
/// how much of a text frame still arriving is known to be UTF-8.
/// Every connection holds one, so it is kept small: the rare fragmented
/// message is boxed, and the limit (at most 1 GiB) fits a `u32`.
#[derive(Debug)]
pub struct Decoder {
    max_message: u32,
    /// Payload bytes of the partial text frame at the start of the input
    /// that were found to complete characters (0 once the frame is done).
    checked: u32,
    fragmented: Option<Box<Fragmented>>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            checked: 0,
            fragmented: None,
        }
    }

    /// Decodes the next frame at the start of `buf` (unmasking it in place).
    /// Returns the bytes consumed and the message the frame completed, if any;
    /// `Ok(None)` when `buf` holds no complete frame yet. A partial frame is
    /// left as it was, and must be passed again with more bytes after it:
    /// the part of a text frame already checked is not checked again.
    pub fn decode(
        &mut self,
        buf: &mut [u8],
    ) -> Result<Option<(usize, Option<Incoming>)>, FrameError> {
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(None),
        };
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b0 & 0x70 != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(FrameError::Protocol("unmasked client frame"));
        }
        let (len, mut at) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    (u64::from_be_bytes(be), 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let control = opcode & 0x8 != 0;
        if control && (!fin || len > 125) {
            return Err(FrameError::Protocol(
                "fragmented or oversized control frame",
            ));
        }
        // Known from the header alone: refused before the payload arrives.
        match (opcode, &self.fragmented) {
            (OP_TEXT | OP_BINARY, Some(_)) => {
                return Err(FrameError::Protocol("new message inside a fragmented one"));
            }
            (OP_CONTINUATION, None) => {
                return Err(FrameError::Protocol("continuation without a message"));
            }
            (OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG, _) => {}
            _ => return Err(FrameError::Protocol("unknown opcode")),
        }
        let buffered = self.fragmented.as_ref().map_or(0, |f| f.data.len()) as u64;
        if !control && len.saturating_add(buffered) > u64::from(self.max_message) {
            return Err(FrameError::TooBig);
        }
        let len = len as usize;
        let Some(mask) = buf.get(at..at + 4).map(|m| [m[0], m[1], m[2], m[3]]) else {
            return Ok(None);
        };
        at += 4;
        let Some(payload) = buf.get_mut(at..at + len) else {
            self.check_partial(opcode, &buf[at..], mask)?;
            return Ok(None);
        };
        self.checked = 0;
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        let consumed = at + len;
        let payload = &buf[at..consumed];
        let message = match opcode {
            OP_TEXT | OP_BINARY => {
                let text = opcode == OP_TEXT;
                if fin {
                    Some(complete(text, payload.to_vec())?)
                } else {
                    let mut first = Box::new(Fragmented {
                        text,
                        checked: 0,
                        data: payload.to_vec(),
                    });
                    first.check()?;
                    self.fragmented = Some(first);
                    None
                }
            }
            OP_PING => Some(Incoming::Ping(payload.to_vec())),
            OP_PONG => Some(Incoming::Pong),
            OP_CLOSE => Some(close(payload)?),
            // A continuation: the header check saw its message.
            _ => match (fin, self.fragmented.take()) {
                (true, Some(mut done)) => {
                    done.data.extend_from_slice(payload);
                    Some(complete(done.text, done.data)?)
                }
                (false, Some(mut more)) => {
                    more.data.extend_from_slice(payload);
                    more.check()?;
                    self.fragmented = Some(more);
                    None
                }
                (_, None) => return Err(FrameError::Protocol("continuation without a message")),
            },
        };
        Ok(Some((consumed, message)))
    }

    /// Fails a text message as soon as the part of its frame that has arrived
    /// cannot be UTF-8, instead of once the frame is complete, so a client
    /// streaming a large invalid message is stopped early. Only the bytes
    /// that arrived since the last call are looked at, through a stack copy:
    /// `arrived` (the payload so far) stays masked and untouched.
    fn check_partial(
        &mut self,
        opcode: u8,
        arrived: &[u8],
        mask: [u8; 4],
    ) -> Result<(), FrameError> {
        let carry: &[u8] = match (opcode, &self.fragmented) {
            (OP_TEXT, None) => &[],
            (OP_CONTINUATION, Some(fragmented)) if fragmented.text => fragmented.tail(),
            _ => return Ok(()),
        };
        let from = self.checked as usize;
        // Once some of this frame completed a character, the carried one is done.
        let carry = if from == 0 { carry } else { &[] };
        let new = arrived.get(from..).unwrap_or_default();
        if new.is_empty() {
            return Ok(());
        }
        // A partial frame is shorter than its length, which fits a u32.
        self.checked += utf8_prefix(carry, new, mask, from)? as u32;
        Ok(())
    }
}

/// How many bytes of `masked` (payload bytes from `offset` on, still masked)
/// end on a character boundary, after `carry`, the start of a character left
/// by the previous fragment; `BadUtf8` as soon as they cannot be UTF-8. An
/// incomplete character at the end is not counted: it may yet be completed.
fn utf8_prefix(
    carry: &[u8],
    masked: &[u8],
    mask: [u8; 4],
    offset: usize,
) -> Result<usize, FrameError> {
    const CHUNK: usize = 256;
    // An incomplete character is at most 3 bytes.
    let mut window = [0u8; CHUNK + 3];
    // `window[..held]` is an incomplete character carried over, whose first
    // `from_carry` bytes are `carry`'s (the rest came from `masked`).
    let (mut held, mut from_carry) = (carry.len(), carry.len());
    window[..held].copy_from_slice(carry);
    let mut done = 0;
    for (n, chunk) in masked.chunks(CHUNK).enumerate() {
        let start = n * CHUNK;
        for (i, byte) in chunk.iter().enumerate() {
            window[held + i] = byte ^ mask[(offset + start + i) % 4];
        }
        let filled = held + chunk.len();
        let valid = match std::str::from_utf8(&window[..filled]) {
            Ok(_) => filled,
            Err(e) if e.error_len().is_some() => return Err(FrameError::BadUtf8),
            Err(e) => e.valid_up_to(),
        };
        let (tail, carried) = (filled - valid, from_carry.saturating_sub(valid));
        done = start + chunk.len() - (tail - carried);
        window.copy_within(valid..filled, 0);
        (held, from_carry) = (tail, carried);
    }
    Ok(done)
}

fn complete(text: bool, data: Vec<u8>) -> Result<Incoming, FrameError> {
    if text {
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| FrameError::BadUtf8)
    } else {
        Ok(Incoming::Binary(data))
    }
}

/// A close frame's payload: nothing, or a valid code and a UTF-8 reason.
fn close(payload: &[u8]) -> Result<Incoming, FrameError> {
    match payload {
        [] => Ok(Incoming::Close(None)),
        [_] => Err(FrameError::Protocol("one-byte close payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(FrameError::Protocol("invalid close code"));
            }
            std::str::from_utf8(reason).map_err(|_| FrameError::BadUtf8)?;
            Ok(Incoming::Close(Some(code)))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A masked client frame, as a browser would send it.
    pub(crate) fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first_byte];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_all(decoder: &mut Decoder, mut bytes: Vec<u8>) -> Result<Vec<Incoming>, FrameError> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((used, message)) = decoder.decode(&mut bytes[at..])? {
            at += used;
            out.extend(message);
        }
        assert_eq!(at, bytes.len(), "bytes left over");
        Ok(out)
    }

    #[test]
    fn messages_of_every_kind() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = client_frame(0x81, b"hello");
        bytes.extend(client_frame(0x82, &[0, 1, 2]));
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x8A, b""));
        bytes.extend(client_frame(0x81, &vec![b'x'; 300]));
        bytes.extend(client_frame(0x81, &vec![b'y'; 70_000]));
        bytes.extend(client_frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        let got = decode_all(&mut d, bytes).unwrap();
        assert_eq!(got[0], Incoming::Text("hello".into()));
        assert_eq!(got[1], Incoming::Binary(vec![0, 1, 2]));
        assert_eq!(got[2], Incoming::Ping(b"p".to_vec()));
        assert_eq!(got[3], Incoming::Pong);
        assert_eq!(got[4], Incoming::Text("x".repeat(300)));
        assert_eq!(got[5], Incoming::Text("y".repeat(70_000)));
        assert_eq!(got[6], Incoming::Close(Some(1000)));
    }

    #[test]
    fn partial_input_needs_more_bytes() {
        let mut d = Decoder::new(1 << 20);
        let frame = client_frame(0x81, &[b'z'; 200]);
        for cut in [0, 1, 2, 3, 5, 8, frame.len() - 1] {
            let mut part = frame[..cut].to_vec();
            assert_eq!(d.decode(&mut part), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn fragments_with_a_ping_between() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = client_frame(0x01, "hé".as_bytes());
        bytes.extend(client_frame(0x89, b""));
        bytes.extend(client_frame(0x80, b"llo"));
        let got = decode_all(&mut d, bytes).unwrap();
        assert_eq!(
            got,
            [Incoming::Ping(vec![]), Incoming::Text("héllo".into())]
        );
    }

    #[test]
    fn protocol_violations() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                b"\x81\x02hi".to_vec(),
                FrameError::Protocol("unmasked client frame"),
            ),
            (
                client_frame(0xC1, b"x"),
                FrameError::Protocol("reserved bits set"),
            ),
            (
                client_frame(0x83, b"x"),
                FrameError::Protocol("unknown opcode"),
            ),
            (
                client_frame(0x09, b""),
                FrameError::Protocol("fragmented or oversized control frame"),
            ),
            (
                client_frame(0x89, &[0; 126]),
                FrameError::Protocol("fragmented or oversized control frame"),
            ),
            (
                client_frame(0x80, b"x"),
                FrameError::Protocol("continuation without a message"),
            ),
            (client_frame(0x81, &[0xff, 0xfe]), FrameError::BadUtf8),
            (
                client_frame(0x88, &[0x03]),
                FrameError::Protocol("one-byte close payload"),
            ),
            (
                client_frame(0x88, &[0x03, 0xed]),
                FrameError::Protocol("invalid close code"),
            ),
            (client_frame(0x88, &[0x03, 0xe8, 0xff]), FrameError::BadUtf8),
        ];
        for (bytes, expected) in cases {
            let mut d = Decoder::new(1 << 20);
            assert_eq!(decode_all(&mut d, bytes), Err(expected));
        }
        let mut d = Decoder::new(1 << 20);
        let mut bytes = client_frame(0x01, b"a");
        bytes.extend(client_frame(0x81, b"b"));
        assert_eq!(
            decode_all(&mut d, bytes),
            Err(FrameError::Protocol("new message inside a fragmented one"))
        );
    }

    #[test]
    fn size_limit_covers_frames_and_messages() {
        let mut d = Decoder::new(10);
        assert_eq!(
            decode_all(&mut d, client_frame(0x81, &[b'a'; 11])),
            Err(FrameError::TooBig)
        );
        // Refused from the header alone, before the payload arrives.
        let mut header = client_frame(0x82, &[0; 1000])[..8].to_vec();
        assert_eq!(
            Decoder::new(10).decode(&mut header),
            Err(FrameError::TooBig)
        );
        let mut d = Decoder::new(10);
        let mut bytes = client_frame(0x01, &[b'a'; 6]);
        bytes.extend(client_frame(0x80, &[b'a'; 6]));
        assert_eq!(decode_all(&mut d, bytes), Err(FrameError::TooBig));
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(Decoder::new(10).decode(&mut huge), Err(FrameError::TooBig));
    }

    #[test]
    fn refused_from_the_header_before_the_payload() {
        let header = |frame: Vec<u8>| frame[..8].to_vec();
        let mut d = Decoder::new(1 << 20);
        assert_eq!(
            d.decode(&mut header(client_frame(0x80, &[0; 1000]))),
            Err(FrameError::Protocol("continuation without a message"))
        );
        let mut d = Decoder::new(1 << 20);
        assert_eq!(
            d.decode(&mut header(client_frame(0x83, &[0; 1000]))),
            Err(FrameError::Protocol("unknown opcode"))
        );
        let mut d = Decoder::new(1 << 20);
        let mut first = client_frame(0x01, b"a");
        assert!(matches!(d.decode(&mut first), Ok(Some((_, None)))));
        assert_eq!(
            d.decode(&mut header(client_frame(0x82, &[0; 1000]))),
            Err(FrameError::Protocol("new message inside a fragmented one"))
        );
    }

    /// Feeds `bytes` `piece` bytes at a time, as reads from a socket would
    /// come, keeping only the undecoded rest (as a connection does). On an
    /// error, says how many bytes had been fed.
    fn feed(
        decoder: &mut Decoder,
        bytes: &[u8],
        piece: usize,
    ) -> Result<Vec<Incoming>, (FrameError, usize)> {
        let (mut pending, mut out, mut fed) = (Vec::new(), Vec::new(), 0);
        for chunk in bytes.chunks(piece) {
            pending.extend_from_slice(chunk);
            fed += chunk.len();
            loop {
                match decoder.decode(&mut pending) {
                    Ok(Some((used, message))) => {
                        pending.drain(..used);
                        out.extend(message);
                    }
                    Ok(None) => break,
                    Err(e) => return Err((e, fed)),
                }
            }
        }
        assert!(pending.is_empty(), "bytes left over");
        Ok(out)
    }

    /// Characters of 1 to 4 bytes, over more than one 256-byte chunk of the
    /// partial-frame check.
    fn mixed_text() -> String {
        "aé€😀".repeat(40)
    }

    #[test]
    fn characters_cut_anywhere_are_accepted() {
        let text = mixed_text();
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut frames = client_frame(0x01, &bytes[..cut]);
            frames.extend(client_frame(0x80, &bytes[cut..]));
            for piece in [1, 2, 3, 5, 97, 300, frames.len()] {
                let got = feed(&mut Decoder::new(1 << 20), &frames, piece);
                assert_eq!(
                    got,
                    Ok(vec![Incoming::Text(text.clone())]),
                    "cut {cut}, piece {piece}"
                );
            }
        }
        // Three fragments, the middle one a single byte of a 4-byte character.
        let four = "😀".as_bytes();
        let mut frames = client_frame(0x01, &four[..1]);
        frames.extend(client_frame(0x00, &four[1..2]));
        frames.extend(client_frame(0x80, &four[2..]));
        for piece in [1, 4, frames.len()] {
            let got = feed(&mut Decoder::new(1 << 20), &frames, piece);
            assert_eq!(got, Ok(vec![Incoming::Text("😀".into())]));
        }
    }

    /// Invalid UTF-8 fails the message once the byte that makes it invalid
    /// has arrived, whether the message is one frame still arriving or a
    /// fragment of several, without waiting for the rest.
    #[test]
    fn invalid_text_fails_as_soon_as_it_arrives() {
        // Each sequence and the index of the byte that makes it invalid.
        let bad: [(&[u8], usize); 5] = [
            (&[0xF4, 0x90, 0x80, 0x80], 1), // past U+10FFFF
            (&[0xED, 0xA0, 0x80], 1),       // a surrogate
            (&[0xC0, 0x80], 0),             // overlong
            (&[0xFF], 0),
            (&[0x80], 0), // a continuation byte alone
        ];
        let valid = mixed_text();
        for (sequence, at) in bad {
            for prefix in [0, 1, 3, 250, 255, 256, 257, valid.len()] {
                // Only whole characters of the valid text, so that the bad
                // byte is where it says.
                let Some(prefix) = valid.get(..prefix) else {
                    continue;
                };
                let mut payload = prefix.as_bytes().to_vec();
                payload.extend_from_slice(sequence);
                payload.extend_from_slice(b" and a rest that never needs to arrive");
                let bad_byte = prefix.len() + at;

                let frame = client_frame(0x81, &payload);
                let header = frame.len() - payload.len();
                for piece in [1, 3, 64] {
                    let got = feed(&mut Decoder::new(1 << 20), &frame, piece);
                    let Err((FrameError::BadUtf8, fed)) = got else {
                        panic!("{sequence:x?} after {}: {got:?}", prefix.len());
                    };
                    assert!(fed <= header + bad_byte + piece, "one frame: fed {fed}");
                }

                // Cut into fragments just before the bad byte: the fragment
                // that carries it fails, the last one is never needed.
                let mut frames = client_frame(0x01, &payload[..bad_byte]);
                let first = frames.len();
                frames.extend(client_frame(0x00, &payload[bad_byte..]));
                let header = frames.len() - first - (payload.len() - bad_byte);
                let two = frames.len();
                frames.extend(client_frame(0x80, b"never read"));
                let got = feed(&mut Decoder::new(1 << 20), &frames, 1);
                assert_eq!(got, Err((FrameError::BadUtf8, first + header + 1)));
                // The same when each fragment arrives whole.
                let got = feed(&mut Decoder::new(1 << 20), &frames[..two], two);
                assert_eq!(got, Err((FrameError::BadUtf8, two)));
            }
        }
    }

    /// Whatever the frames, valid or not, the outcome does not depend on
    /// how the bytes were cut into reads: the same messages, then the same
    /// error or the same partial frame left over.
    #[test]
    fn any_piece_size_gives_the_same_result() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let pieces: [&[u8]; 7] = [
            b"ab",
            "é".as_bytes(),
            "€".as_bytes(),
            "😀".as_bytes(),
            &[0xF0, 0x9F],
            &[0xFF],
            &[0x80],
        ];
        for _ in 0..2000 {
            let mut bytes = Vec::new();
            let mut inside = false;
            for _ in 0..1 + next(5) {
                // Mostly what a client may send next; now and then not.
                let first = match (next(5), inside) {
                    (0, _) => [0x01, 0x81, 0x00, 0x80, 0x82, 0x89][next(6) as usize],
                    (1, _) => 0x89,
                    (_, true) => [0x00, 0x80][next(2) as usize],
                    (_, false) => [0x01, 0x81, 0x02, 0x82][next(4) as usize],
                };
                inside = match first {
                    0x01 | 0x02 => true,
                    0x80..=0x82 => false,
                    _ => inside,
                };
                let mut payload = Vec::new();
                let count = if first == 0x89 { next(30) } else { next(200) };
                for _ in 0..count {
                    // Mostly valid text, with the odd invalid or cut sequence.
                    let piece = match next(150) {
                        0 => 4,
                        1 => 5,
                        2 => 6,
                        n => (n % 4) as usize,
                    };
                    payload.extend_from_slice(pieces[piece]);
                }
                bytes.extend(client_frame(first, &payload));
            }
            bytes.truncate(bytes.len() - next(3) as usize);
            let outcome = |piece: usize| -> Result<(Vec<Incoming>, usize), (FrameError, usize)> {
                let (mut decoder, mut pending, mut out) =
                    (Decoder::new(1 << 20), Vec::new(), Vec::new());
                for chunk in bytes.chunks(piece) {
                    pending.extend_from_slice(chunk);
                    while let Some((used, message)) =
                        decoder.decode(&mut pending).map_err(|e| (e, out.len()))?
                    {
                        pending.drain(..used);
                        out.extend(message);
                    }
                }
                Ok((out, pending.len()))
            };
            let whole = outcome(bytes.len().max(1));
            for piece in [1, 2, 3, 7, 64, 255] {
                assert_eq!(outcome(piece), whole, "piece {piece}");
            }
        }
    }

    #[test]
    fn binary_is_not_checked() {
        let bytes = [0xFF, 0xFE, 0x80];
        let mut frames = client_frame(0x02, &bytes[..1]);
        frames.extend(client_frame(0x80, &bytes[1..]));
        let got = feed(&mut Decoder::new(1 << 20), &frames, 1);
        assert_eq!(got, Ok(vec![Incoming::Binary(bytes.to_vec())]));
    }
}
