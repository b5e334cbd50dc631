//! The backend side: one text-port connection, pipelined, and the request
//! lines the benches send on it. Requests are written by one task and replies
//! read by another, so that a slow reply never holds the sender. Replies are
//! split with `pushhub::text_port::protocol::split_line`, the line codec the hub itself
//! uses.

use std::io::{self, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::rc::Rc;

use serde::Deserialize;
use serde_json::Value;
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use pushhub::text_port::protocol::split_line;

/// Longest reply line accepted (a `stats` or an `online` reply is far shorter).
const MAX_REPLY: usize = 1 << 20;

const READ_CHUNK: usize = 64 * 1024;

/// Opens a connection and splits it into its writing and reading halves.
pub async fn connect(addr: SocketAddrV4) -> io::Result<(Requests, Replies)> {
    let stream = Async::<TcpStream>::connect(addr).await?;
    // Pipelined small lines: do not let Nagle hold one back for an ACK.
    stream.get_ref().set_nodelay(true)?;
    let stream = Rc::new(stream);
    Ok((
        Requests {
            stream: Rc::clone(&stream),
        },
        Replies {
            stream,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        },
    ))
}

pub struct Requests {
    stream: Rc<Async<TcpStream>>,
}

impl Requests {
    /// Writes request lines (each ending with `\n`).
    pub async fn send(&self, lines: &[u8]) -> Result<(), String> {
        (&*self.stream)
            .write_all(lines)
            .await
            .map_err(|e| format!("text port write: {e}"))
    }
}

pub struct Replies {
    stream: Rc<Async<TcpStream>>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Replies {
    /// The next reply line, without its newline; an error at EOF.
    pub async fn next(&mut self) -> Result<&[u8], String> {
        self.read_line()
            .await
            .map_err(|e| format!("text port read: {e}"))
    }

    async fn read_line(&mut self) -> io::Result<&[u8]> {
        loop {
            match split_line(&self.buf[self.start..self.end], MAX_REPLY) {
                Ok(Some((line, used))) => {
                    let (at, len) = (self.start, line.len());
                    self.start += used;
                    return Ok(&self.buf[at..at + len]);
                }
                Ok(None) => {}
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "reply line over 1 MiB",
                    ));
                }
            }
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.end == self.buf.len() {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    (self.start, self.end) = (0, self.end - self.start);
                } else {
                    self.buf.resize(self.buf.len() * 2, 0);
                }
            }
            let n = (&*self.stream).read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the hub closed the text port",
                ));
            }
            self.end += n;
        }
    }
}

/// Both halves, for one request at a time (`stats`, `online`).
pub struct Backend {
    requests: Requests,
    replies: Replies,
}

impl Backend {
    pub async fn connect(addr: SocketAddrV4) -> Result<Backend, String> {
        let (requests, replies) = connect(addr)
            .await
            .map_err(|e| format!("cannot connect to the text port {addr}: {e}"))?;
        Ok(Backend { requests, replies })
    }

    /// Sends one request line (without newline) and parses its JSON reply.
    pub async fn request(&mut self, line: &str) -> Result<Value, String> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.requests.send(&bytes).await?;
        let reply = self.replies.next().await?;
        serde_json::from_slice(reply).map_err(|e| {
            format!(
                "text port reply is not JSON ({e}): {}",
                String::from_utf8_lossy(reply)
            )
        })
    }

    /// The hub's `stats` reply.
    pub async fn stats(&mut self) -> Result<Stats, String> {
        let value = self.request(r#"{"cmd":"stats"}"#).await?;
        serde_json::from_value(value).map_err(|e| format!("unexpected stats reply: {e}"))
    }

    /// Splits into the pipelined halves.
    pub fn split(self) -> (Requests, Replies) {
        (self.requests, self.replies)
    }
}

/// The `stats` fields the benches look at.
#[derive(Debug, Clone, Deserialize)]
pub struct Stats {
    pub connections: u64,
    pub authenticated: u64,
    pub dropped: u64,
}

/// The `delivered` count of a `push` or `broadcast` reply.
pub fn delivered(reply: &[u8]) -> Result<u64, String> {
    #[derive(Deserialize)]
    struct Delivered {
        ok: bool,
        #[serde(default)]
        delivered: u64,
        #[serde(default)]
        error: Option<String>,
    }
    match serde_json::from_slice::<Delivered>(reply) {
        Ok(Delivered {
            ok: true,
            delivered,
            ..
        }) => Ok(delivered),
        Ok(Delivered { error, .. }) => Err(format!(
            "the hub refused a request: {}",
            error.unwrap_or_default()
        )),
        Err(e) => Err(format!(
            "unexpected reply ({e}): {}",
            String::from_utf8_lossy(reply)
        )),
    }
}

/// The request line of broadcast `k`: `size` bytes of data starting with
/// `b<k>-` (cut to `size`), so that a client can tell which broadcast it got.
pub fn broadcast_line(k: u32, size: usize) -> Vec<u8> {
    let mut data = format!("b{k}-");
    data.truncate(size);
    data.extend(std::iter::repeat_n('x', size - data.len()));
    let mut line = Vec::with_capacity(size + 32);
    // Writing to a Vec cannot fail.
    let _ = writeln!(line, r#"{{"cmd":"broadcast","data":"{data}"}}"#);
    line
}

/// Which broadcast a message is, from its first bytes; `None` when they do not
/// say (data shorter than `b<k>-`, or not a broadcast of [`broadcast_line`]).
pub fn broadcast_index(prefix: &[u8]) -> Option<u32> {
    let digits = prefix.strip_prefix(b"b")?;
    let end = digits.iter().position(|&b| b == b'-')?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_lines_have_the_size_asked() {
        let line = broadcast_line(7, 32);
        let v: Value = serde_json::from_slice(&line).unwrap();
        let data = v["data"].as_str().unwrap();
        assert_eq!(data.len(), 32);
        assert!(data.starts_with("b7-x"));
        assert_eq!(broadcast_index(data.as_bytes()), Some(7));
        assert_eq!(line.last(), Some(&b'\n'));
        let tiny: Value = serde_json::from_slice(&broadcast_line(123, 2)).unwrap();
        assert_eq!(tiny["data"], "b1");
        assert_eq!(broadcast_index(b"b1"), None);
        let empty: Value = serde_json::from_slice(&broadcast_line(1, 0)).unwrap();
        assert_eq!(empty["data"], "");
        assert_eq!(broadcast_index(b"17 123"), None);
    }

    #[test]
    fn reads_delivered() {
        assert_eq!(delivered(br#"{"ok":true,"delivered":3}"#), Ok(3));
        assert_eq!(delivered(br#"{"ok":true,"id":1,"delivered":0}"#), Ok(0));
        assert!(
            delivered(br#"{"ok":false,"error":"nope"}"#)
                .unwrap_err()
                .contains("nope")
        );
        assert!(delivered(b"ok").is_err());
    }
}
