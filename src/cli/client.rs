//! One backend exchange with the text port: a request line out, its reply line
//! back, over a blocking socket under one deadline. A program that sends one
//! line needs no executor; the hub's own code is not involved, only its line
//! codec, so the client reads replies exactly as the protocol frames them.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::text_port::protocol::split_line;

/// The longest reply line read. Replies are small (`stats` is under 1 KiB);
/// the largest, `online` for every uid a command line can hold, stays far
/// below this, so a longer line is not the text port talking.
pub const MAX_REPLY_LEN: usize = 16 << 20;

/// Why no reply line came back.
#[derive(Debug)]
pub enum ExchangeError {
    /// The connection was refused or could not be made in time.
    Connect(SocketAddr, io::Error),
    /// Connected, but the reply did not come before the deadline.
    TimedOut(SocketAddr, Duration),
    /// The peer closed the connection before a whole reply line.
    Closed(SocketAddr),
    /// Writing the request or reading the reply failed (a reset, say).
    Io(SocketAddr, io::Error),
    /// A reply line longer than [`MAX_REPLY_LEN`].
    TooLong(SocketAddr),
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Connect(addr, e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                write!(
                    f,
                    "cannot connect to the text port {addr}: {e}; is the hub running, \
                     and is --text its text port?"
                )
            }
            ExchangeError::Connect(addr, e) => {
                write!(f, "cannot connect to the text port {addr}: {e}")
            }
            ExchangeError::TimedOut(addr, limit) => {
                write!(f, "no reply from the text port {addr} within {limit:?}")
            }
            ExchangeError::Closed(addr) => write!(
                f,
                "the text port {addr} closed the connection without a reply"
            ),
            ExchangeError::Io(addr, e) => write!(f, "talking to the text port {addr}: {e}"),
            ExchangeError::TooLong(addr) => write!(
                f,
                "the reply from {addr} is longer than {MAX_REPLY_LEN} bytes; is it a pushhub \
                 text port?"
            ),
        }
    }
}

impl std::error::Error for ExchangeError {}

/// Sends `request` (one line, without its newline) to the text port at `addr`
/// and returns the reply line without its newline. Connecting, writing and
/// reading together take at most `limit`.
pub fn exchange(
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
) -> Result<Vec<u8>, ExchangeError> {
    let deadline = Instant::now() + limit;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(ExchangeError::TimedOut(addr, limit))
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, limit).map_err(|e| ExchangeError::Connect(addr, e))?;
    let io = |e: io::Error| match e.kind() {
        // What a socket timeout looks like on Unix (EAGAIN) and elsewhere.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ExchangeError::TimedOut(addr, limit),
        _ => ExchangeError::Io(addr, e),
    };
    let mut line = Vec::with_capacity(request.len() + 1);
    line.extend_from_slice(request);
    line.push(b'\n');
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    stream.write_all(&line).map_err(io)?;
    // Nothing more will be asked: the hub may close once it has answered.
    stream.shutdown(Shutdown::Write).map_err(io)?;

    let mut reply = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match split_line(&reply, MAX_REPLY_LEN) {
            Ok(Some((line, _))) => return Ok(line.to_vec()),
            Ok(None) => {}
            Err(_) => return Err(ExchangeError::TooLong(addr)),
        }
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(ExchangeError::Closed(addr)),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
}
