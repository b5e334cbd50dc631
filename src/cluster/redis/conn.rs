//! One connection to Redis: TCP or a Unix socket, then the handshake
//! (`AUTH`, `SELECT`, `CLIENT SETNAME`) under one deadline. What runs over
//! it afterwards is the link's business (`cluster::link`).

use std::io;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use smol::Async;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::resp::{self, Frame, Input};
use super::url::{Addr, RedisUrl};
use crate::auth::Secret;
use crate::time::timeout;

/// A connected socket to Redis.
pub enum Stream {
    Tcp(Async<TcpStream>),
    Unix(Async<UnixStream>),
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Io(io::Error),
    TimedOut,
    /// Redis refused a handshake command (a wrong password, a missing db).
    Refused(String),
    Protocol(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::TimedOut => write!(f, "no answer in time"),
            ConnectError::Refused(e) => write!(f, "refused: {e}"),
            ConnectError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

/// Connects and completes the handshake within `limit`; replies may be up
/// to `max_frame` bytes.
pub async fn connect(
    url: &RedisUrl,
    password: Option<&Secret>,
    name: &str,
    limit: Duration,
    max_frame: usize,
) -> Result<(Stream, Input), ConnectError> {
    timeout(limit, handshake(url, password, name, max_frame))
        .await
        .unwrap_or(Err(ConnectError::TimedOut))
}

async fn handshake(
    url: &RedisUrl,
    password: Option<&Secret>,
    name: &str,
    max_frame: usize,
) -> Result<(Stream, Input), ConnectError> {
    if url.tls {
        return Err(ConnectError::Protocol(
            "rediss:// (TLS) is not supported; use a local Redis, a Unix socket, or a TLS tunnel"
                .into(),
        ));
    }
    let mut stream = match &url.addr {
        Addr::Tcp { host, port } => {
            let stream = Async::<TcpStream>::connect(resolve(host, *port).await?)
                .await
                .map_err(ConnectError::Io)?;
            // Replies and pushes are small and latency matters.
            let _ = stream.get_ref().set_nodelay(true);
            Stream::Tcp(stream)
        }
        Addr::Unix(path) => Stream::Unix(
            Async::<UnixStream>::connect(path)
                .await
                .map_err(ConnectError::Io)?,
        ),
    };
    let mut out = BytesMut::new();
    let db = url.db.to_string();
    let mut expected = 0;
    if let Some(password) = password {
        match &url.username {
            Some(user) => resp::command(&mut out, &[b"AUTH", user.as_bytes(), password.expose()]),
            None => resp::command(&mut out, &[b"AUTH", password.expose()]),
        }
        expected += 1;
    }
    if url.db != 0 {
        resp::command(&mut out, &[b"SELECT", db.as_bytes()]);
        expected += 1;
    }
    resp::command(&mut out, &[b"CLIENT", b"SETNAME", name.as_bytes()]);
    expected += 1;
    stream.write_all(&out).await.map_err(ConnectError::Io)?;
    let mut input = Input::new(max_frame);
    for _ in 0..expected {
        match read_frame(&mut stream, &mut input).await? {
            Frame::Error(e) => return Err(ConnectError::Refused(e.to_string())),
            Frame::SimpleString(_) => {}
            other => {
                return Err(ConnectError::Protocol(format!(
                    "unexpected handshake reply {other:?}"
                )));
            }
        }
    }
    Ok((stream, input))
}

/// The first address `host` resolves to. A name lookup blocks the thread,
/// so it is only done for names: at start and on each reconnection.
async fn resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, ConnectError> {
    use std::net::ToSocketAddrs;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(ConnectError::Io)?
        .next()
        .ok_or_else(|| ConnectError::Protocol(format!("{host} has no address")))
}

/// Reads until one frame is complete.
pub async fn read_frame(stream: &mut Stream, input: &mut Input) -> Result<Frame, ConnectError> {
    loop {
        if let Some(frame) = input
            .next_frame()
            .map_err(|e| ConnectError::Protocol(e.to_string()))?
        {
            return Ok(frame);
        }
        const CHUNK: usize = 16 * 1024;
        let n = stream
            .read(input.spare(CHUNK))
            .await
            .map_err(ConnectError::Io)?;
        input.filled(CHUNK, n);
        if n == 0 {
            return Err(ConnectError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_close(cx),
            Stream::Unix(s) => Pin::new(s).poll_close(cx),
        }
    }
}
