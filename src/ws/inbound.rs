//! Client-to-server WebSocket frames (RFC 6455, section 5): the decoder that
//! turns a client's bytes into messages. No I/O; it says "need more bytes" with
//! `Ok(None)`.
//!
//! Clients send little (a credential, pongs, the odd message that is ignored),
//! so the decoder favours holding no memory between messages over speed.

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
    Binary,
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
    data: Vec<u8>,
}

/// Decoder state that lives between frames: only a fragmented message.
/// Every connection holds one, so it is kept small: the rare fragmented
/// message is boxed, and the limit (at most 1 GiB) fits a `u32`.
#[derive(Debug)]
pub struct Decoder {
    max_message: u32,
    fragmented: Option<Box<Fragmented>>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            fragmented: None,
        }
    }

    /// Decodes the next frame at the start of `buf` (unmasking it in place).
    /// Returns the bytes consumed and the message the frame completed, if any;
    /// `Ok(None)` when `buf` holds no complete frame yet.
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
            return Ok(None);
        };
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        let consumed = at + len;
        let payload = &buf[at..consumed];
        let message = match opcode {
            OP_TEXT | OP_BINARY => {
                if self.fragmented.is_some() {
                    return Err(FrameError::Protocol("new message inside a fragmented one"));
                }
                let text = opcode == OP_TEXT;
                if fin {
                    Some(complete(text, payload.to_vec())?)
                } else {
                    self.fragmented = Some(Box::new(Fragmented {
                        text,
                        data: payload.to_vec(),
                    }));
                    None
                }
            }
            OP_CONTINUATION => {
                let Some(fragmented) = self.fragmented.as_mut() else {
                    return Err(FrameError::Protocol("continuation without a message"));
                };
                fragmented.data.extend_from_slice(payload);
                match (fin, self.fragmented.take()) {
                    (true, Some(done)) => Some(complete(done.text, done.data)?),
                    (_, fragmented) => {
                        self.fragmented = fragmented;
                        None
                    }
                }
            }
            OP_PING => Some(Incoming::Ping(payload.to_vec())),
            OP_PONG => Some(Incoming::Pong),
            OP_CLOSE => Some(close(payload)?),
            _ => return Err(FrameError::Protocol("unknown opcode")),
        };
        Ok(Some((consumed, message)))
    }
}

fn complete(text: bool, data: Vec<u8>) -> Result<Incoming, FrameError> {
    if text {
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| FrameError::BadUtf8)
    } else {
        Ok(Incoming::Binary)
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
        assert_eq!(got[1], Incoming::Binary);
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
}
