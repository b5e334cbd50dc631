//! Server-to-client WebSocket frames, encoded once and shared.
//!
//! A push is encoded into a complete frame (header and payload in one buffer)
//! before fan-out, so every receiver writes the same bytes: no per-connection
//! copy, no per-connection formatting. Server frames are never masked
//! (RFC 6455, section 5.1), which is what makes one encoding fit every client.

use bytes::{BufMut, Bytes, BytesMut};

/// An encoded frame, cheap to clone (a reference count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame(Bytes);

const FIN: u8 = 0x80;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

impl Frame {
    /// A final text frame carrying `text`.
    pub fn text(text: &str) -> Frame {
        Frame::encode(OP_TEXT, &[text.as_bytes()])
    }

    /// A final binary frame carrying `data`: a backend's answer to one
    /// connection (`push` with `conn` and `binary`).
    pub fn binary(data: &[u8]) -> Frame {
        Frame::encode(OP_BINARY, &[data])
    }

    /// The answer to a ping: a pong with the ping's payload (at most 125 bytes,
    /// which the decoder guarantees for control frames).
    pub fn pong(payload: &[u8]) -> Frame {
        Frame::encode(OP_PONG, &[payload])
    }

    /// A close frame with a status code and a reason (kept under the 123 bytes
    /// a control frame leaves for it).
    pub fn close(code: u16, reason: &str) -> Frame {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Frame::encode(OP_CLOSE, &[&code.to_be_bytes(), &reason.as_bytes()[..end]])
    }

    fn encode(opcode: u8, parts: &[&[u8]]) -> Frame {
        let len = parts.iter().map(|p| p.len()).sum();
        let mut buf = BytesMut::with_capacity(header_len(len) + len);
        buf.put_u8(FIN | opcode);
        match len {
            0..=125 => buf.put_u8(len as u8),
            126..=0xFFFF => {
                buf.put_u8(126);
                buf.put_u16(len as u16);
            }
            _ => {
                buf.put_u8(127);
                buf.put_u64(len as u64);
            }
        }
        for part in parts {
            buf.put_slice(part);
        }
        Frame(buf.freeze())
    }

    /// An empty ping, for heartbeats.
    pub fn ping() -> Frame {
        static PING: [u8; 2] = [FIN | OP_PING, 0];
        Frame(Bytes::from_static(&PING))
    }

    /// The whole frame, header included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_encodings() {
        assert_eq!(Frame::text("hi").as_bytes(), b"\x81\x02hi");
        assert_eq!(Frame::text("").as_bytes(), b"\x81\x00");
        let medium = "x".repeat(126);
        let f = Frame::text(&medium);
        assert_eq!(&f.as_bytes()[..4], b"\x81\x7e\x00\x7e");
        assert_eq!(f.len(), 4 + 126);
        let large = "y".repeat(70_000);
        let f = Frame::text(&large);
        assert_eq!(
            &f.as_bytes()[..10],
            b"\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70"
        );
        assert_eq!(f.len(), 10 + 70_000);
        assert_eq!(Frame::ping().as_bytes(), b"\x89\x00");
        assert_eq!(Frame::pong(b"ab").as_bytes(), b"\x8a\x02ab");
        assert_eq!(Frame::close(1001, "bye").as_bytes(), b"\x88\x05\x03\xe9bye");
        let long = Frame::close(4001, &"é".repeat(100));
        assert!(long.len() <= 2 + 125);
    }

    #[test]
    fn tungstenite_reads_what_we_write() {
        use async_tungstenite::tungstenite::Message;
        use async_tungstenite::tungstenite::protocol::{Role, WebSocket};
        for text in ["", "hello", &"é".repeat(100), &"z".repeat(70_000)] {
            let bytes = Frame::text(text).as_bytes().to_vec();
            let mut ws =
                WebSocket::from_raw_socket(std::io::Cursor::new(bytes), Role::Client, None);
            match ws.read().unwrap() {
                Message::Text(got) => assert_eq!(got.as_str(), text),
                other => panic!("{other:?}"),
            }
        }
    }
}
