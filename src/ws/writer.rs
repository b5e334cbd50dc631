//! Writing a connection's queue to its socket, straight from the shared frame
//! buffers: a plain `write` for one frame, a vectored one for several.
//!
//! Two callers: the flusher, which writes every connection that got messages in
//! a turn and never waits (a connection it cannot finish is handed to its own
//! task), and the connection's task, which waits for the socket to drain.

use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::task::{Context, Poll};

use smol::Async;

use crate::hub::queue::Queue;

/// Frames taken from a queue for one write, at most: handed to the kernel in
/// one vectored write, or (wss) copied into one TLS record.
pub const MAX_IOVECS: usize = 64;

/// Writes as much of `queue` as the socket takes without blocking. Returns
/// whether the queue is now empty.
pub fn write_now(socket: &TcpStream, queue: &mut Queue) -> io::Result<bool> {
    let mut socket = socket;
    while !queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = queue.slices(&mut slices);
        // One frame (the usual case) goes out with a plain write: the kernel's
        // vectored path costs measurably more per call.
        let written = if n == 1 {
            socket.write(&slices[0])
        } else {
            socket.write_vectored(&slices[..n])
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => queue.advance(written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes `queue` until it is empty (`Ready(Ok)`), or until the socket is full,
/// in which case the task is woken when it can take more (`Pending`).
pub fn poll_write(
    socket: &Async<TcpStream>,
    queue: &mut Queue,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        if write_now(socket.get_ref(), queue)? {
            return Poll::Ready(Ok(()));
        }
        // Ready means the socket drained since we last looked: write again.
        if socket.poll_writable(cx)?.is_pending() {
            return Poll::Pending;
        }
    }
}
