//! RESP2 on our side of a Redis link: commands encoded into an output
//! buffer, replies and pub/sub messages decoded from an input buffer.
//! The codec is `redis-protocol`'s; this module adds what a link needs
//! around it: one encoding path for every command, a bound on what a reply
//! may make us buffer, and a bound on nesting (the decoder recurses once
//! per level, so a reply of a million nested arrays would otherwise
//! overflow the stack).

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode_borrowed;
use redis_protocol::resp2::types::BorrowedFrame;

pub use redis_protocol::resp2::types::BytesFrame as Frame;

/// Deepest nesting of arrays accepted in a reply: ours are at most two
/// levels deep (a pub/sub message, a `PUBSUB NUMSUB` reply), Redis
/// Cluster's shard map a few more.
const MAX_DEPTH: usize = 8;

/// Why a link's input cannot be read: the link is dropped and made again.
#[derive(Debug)]
pub enum RespError {
    /// Bytes that are not RESP2.
    Malformed(String),
    /// A reply nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A reply larger than the link's input bound.
    TooLarge(usize),
}

impl std::fmt::Display for RespError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RespError::Malformed(e) => write!(f, "not RESP2: {e}"),
            RespError::TooDeep => write!(f, "a reply nested over {MAX_DEPTH} levels"),
            RespError::TooLarge(max) => write!(f, "a reply over {max} bytes"),
        }
    }
}

/// Appends one command, its arguments as bulk strings.
pub fn command(out: &mut BytesMut, args: &[&[u8]]) {
    // A command has at most a dozen arguments (the streams' scripts) but
    // for batched (UN)SUBSCRIBEs, which are rare: a stack array covers the
    // rest, so that a push costs no allocation here.
    let mut small = [const { BorrowedFrame::Null }; 12];
    let mut large = Vec::new();
    let frames: &[BorrowedFrame] = if args.len() <= small.len() {
        for (slot, arg) in small.iter_mut().zip(args) {
            *slot = BorrowedFrame::BulkString(arg);
        }
        &small[..args.len()]
    } else {
        large.extend(args.iter().map(|arg| BorrowedFrame::BulkString(arg)));
        &large
    };
    // Encoding into a growable buffer cannot fail.
    extend_encode_borrowed(out, &BorrowedFrame::Array(frames), false)
        .expect("RESP2 encodes into a growable buffer");
}

/// A link's input: bytes read, and the frames decoded from them.
pub struct Input {
    buf: BytesMut,
    /// The most bytes one frame may make us hold.
    max: usize,
}

impl Input {
    pub fn new(max: usize) -> Input {
        Input {
            buf: BytesMut::with_capacity(16 * 1024),
            max,
        }
    }

    /// Room to read into: at least `at_least` spare bytes at the end.
    pub fn spare(&mut self, at_least: usize) -> &mut [u8] {
        let len = self.buf.len();
        self.buf.resize(len + at_least, 0);
        &mut self.buf[len..]
    }

    /// Keeps `n` of the bytes just read into [`spare`](Input::spare).
    pub fn filled(&mut self, spare: usize, n: usize) {
        let len = self.buf.len() - spare + n;
        self.buf.truncate(len);
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, RespError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        check(&self.buf, self.max)?;
        match decode_bytes_mut(&mut self.buf) {
            Ok(Some((frame, _, _))) => Ok(Some(frame)),
            Ok(None) if self.buf.len() > self.max => Err(RespError::TooLarge(self.max)),
            Ok(None) => Ok(None),
            Err(e) => Err(RespError::Malformed(e.to_string())),
        }
    }
}

/// Refuses the frame at the start of `buf`, as far as it has arrived, if
/// it nests arrays deeper than [`MAX_DEPTH`] or declares a string over
/// `max` bytes (before that much is buffered). Walks the framing without
/// recursion: array headers open levels, other frames fill their slots.
fn check(buf: &[u8], max: usize) -> Result<(), RespError> {
    // Elements still expected at each open level.
    let mut open: Vec<i64> = Vec::new();
    let mut at = 0;
    loop {
        let Some(end) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(());
        };
        let line = &buf[at..at + end];
        at += end + 2;
        let len = || -> Option<i64> { std::str::from_utf8(line.get(1..)?).ok()?.parse().ok() };
        match line.first() {
            Some(b'*') => match len() {
                Some(n) if n > 0 => {
                    if open.len() == MAX_DEPTH {
                        return Err(RespError::TooDeep);
                    }
                    open.push(n);
                    continue;
                }
                _ => {}
            },
            Some(b'$') => {
                if let Some(n @ 0..) = len() {
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    if n > max {
                        return Err(RespError::TooLarge(max));
                    }
                    // Skip the body; an incomplete one ends the walk.
                    at = match at.checked_add(n + 2) {
                        Some(next) if next <= buf.len() => next,
                        _ => return Ok(()),
                    };
                }
            }
            // Simple strings, errors, integers: one line each. Anything
            // else is the decoder's to refuse.
            _ => {}
        }
        // One element done: close every level it completes.
        loop {
            match open.last_mut() {
                None => return Ok(()),
                Some(n) => {
                    *n -= 1;
                    if *n > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
    }
}

/// A bulk or simple string's bytes.
pub fn bytes(frame: &Frame) -> Option<&Bytes> {
    match frame {
        Frame::BulkString(b) | Frame::SimpleString(b) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Frame>, RespError> {
        let mut buf = Input::new(1024);
        let spare = input.len();
        buf.spare(spare).copy_from_slice(input);
        buf.filled(spare, spare);
        let mut frames = Vec::new();
        while let Some(frame) = buf.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = BytesMut::new();
        command(&mut out, &[b"PUBLISH", b"ch", b""]);
        assert_eq!(&out[..], b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$0\r\n\r\n");
        let mut out = BytesMut::new();
        let args: Vec<&[u8]> = vec![b"SUBSCRIBE", b"a", b"b", b"c", b"d"];
        command(&mut out, &args);
        assert!(out.starts_with(b"*5\r\n$9\r\nSUBSCRIBE\r\n"));
    }

    #[test]
    fn replies_decode_one_at_a_time_and_wait_for_the_rest() {
        let frames =
            decode_all(b":3\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n+OK\r\n").unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], Frame::Integer(3));
        assert!(matches!(&frames[1], Frame::Array(a) if a.len() == 3));
        assert!(
            decode_all(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nh")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"*-5\r\n$x\r\nhello\r\n"[..],
            b"?what\r\n",
            b"$-7\r\n",
            b":abc\r\n",
        ] {
            // Either refused or (for shapes the codec tolerates) decoded:
            // never a panic.
            let _ = decode_all(bad);
        }
        assert!(matches!(
            decode_all(b"!x\r\n"),
            Err(RespError::Malformed(_))
        ));
    }

    #[test]
    fn deep_nesting_and_huge_frames_are_refused() {
        let deep = b"*1\r\n".repeat(100_000);
        let mut input = Input::new(usize::MAX);
        let n = deep.len();
        input.spare(n).copy_from_slice(&deep);
        input.filled(n, n);
        assert!(matches!(input.next_frame(), Err(RespError::TooDeep)));
        let shallow = [&b"*2\r\n*1\r\n:1\r\n*2\r\n$3\r\nabc\r\n:2\r\n"[..]].concat();
        assert_eq!(decode_all(&shallow).unwrap().len(), 1);
        assert!(matches!(
            decode_all(b"$100000\r\nabc"),
            Err(RespError::TooLarge(1024))
        ));
    }
}
