//! A WebSocket client's byte stream once the handshake is done: the plain
//! socket, or TLS over it (wss). Frames go out from the connection's queue and
//! bytes come in for its decoder; nothing else in the connection's task depends
//! on which.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read};
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use smol::Async;
use smol::io::{AsyncRead, AsyncWrite};

use crate::hub::Socket;
use crate::hub::queue::Queue;
use crate::ws::tls::TlsStream;
use crate::ws::writer;

/// The most TLS plaintext sealed in one record.
const RECORD: usize = 16 * 1024;

thread_local! {
    /// Where small frames are copied to go out in one record: one buffer for
    /// every wss connection, as the hub runs on one thread.
    static COALESCED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(RECORD));
}

pub enum Link {
    /// Shared with the hub, whose flusher writes to it without waking the task.
    Plain {
        socket: Socket,
        /// The last read found nothing: wait for a readiness event before the
        /// next, instead of paying a failed system call on every wake-up.
        read_blocked: bool,
    },
    /// Only the connection's task writes to it: records must be sealed in
    /// order by one writer. Boxed, so that plain connections do not pay for its
    /// size.
    Tls(Box<TlsStream>),
}

impl Link {
    /// A plain connection whose handshake was just answered: the client has
    /// had no time to send more (what it sent with its request is in the
    /// handshake's tail), so the first read waits for the socket's readiness
    /// instead of paying a system call that finds nothing.
    pub fn plain(stream: Async<TcpStream>) -> Link {
        Link::Plain {
            socket: Socket::new(stream),
            read_blocked: true,
        }
    }

    /// The socket the hub's flusher may write to directly, if any.
    pub fn flusher_socket(&self) -> Option<Socket> {
        match self {
            Link::Plain { socket, .. } => Some(Socket::clone(socket)),
            Link::Tls(_) => None,
        }
    }

    /// Reads what the client sent (decrypted, for TLS); `Ok(0)` is the end.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Link::Plain {
                socket,
                read_blocked,
            } => loop {
                if *read_blocked {
                    ready!(socket.poll_readable(cx))?;
                    *read_blocked = false;
                }
                match socket.get_ref().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => *read_blocked = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    done => return Poll::Ready(done),
                }
            },
            // The stream may hold decrypted bytes the socket no longer
            // shows as readable, so TLS always tries the read.
            Link::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }

    /// Writes `queue` until it is empty (`Ready(Ok)`), or until the socket is
    /// full, in which case the task is woken when it can take more (`Pending`).
    pub fn poll_write(&mut self, queue: &mut Queue, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Link::Plain { socket, .. } => writer::poll_write(socket, queue, cx),
            Link::Tls(tls) => COALESCED.with_borrow_mut(|coalesced| {
                while !queue.is_empty() {
                    let mut slices = [IoSlice::new(&[]); writer::MAX_IOVECS];
                    let n = queue.slices(&mut slices);
                    // A write seals one buffer, in one record of up to 16
                    // KiB, and sends it: small frames queued together are
                    // copied into one buffer first, so that a burst leaves
                    // in one record and one `send`.
                    let data: &[u8] = if n == 1 || slices[0].len() >= RECORD {
                        &slices[0]
                    } else {
                        coalesced.clear();
                        for slice in &slices[..n] {
                            if !coalesced.is_empty() && coalesced.len() + slice.len() > RECORD {
                                break;
                            }
                            coalesced.extend_from_slice(slice);
                        }
                        coalesced
                    };
                    match Pin::new(&mut **tls).poll_write(cx, data) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        Poll::Ready(Ok(written)) => queue.advance(written),
                        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        // Nothing of `data` was taken.
                        Poll::Pending => return Poll::Pending,
                    }
                }
                // The last record may still be partly unsent.
                Pin::new(&mut **tls).poll_flush(cx)
            }),
        }
    }
}
