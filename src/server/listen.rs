//! The listening sockets: bound by the binary (or a test, on port 0) before
//! the server runs, with a deep backlog and `SO_REUSEADDR`, and with
//! `--reuse-port` the WebSocket and text ports shared with this box's
//! other hubs (`SO_REUSEPORT`).

use std::io;
use std::net::{SocketAddr, TcpListener};

/// The two listening sockets, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub ws: TcpListener,
    pub text: TcpListener,
    /// The monitoring endpoint (`/metrics`, `/healthz`), if any.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses with a listen backlog of [`BACKLOG`]; with
    /// `reuse_port`, the WebSocket and text ports may be bound by other
    /// processes too, and the kernel spreads new connections over them.
    /// The metrics port is each hub's own.
    pub fn bind(
        ws: SocketAddr,
        text: SocketAddr,
        metrics: Option<SocketAddr>,
        reuse_port: bool,
    ) -> io::Result<Listeners> {
        Ok(Listeners {
            ws: listen(ws, reuse_port)?,
            text: listen(text, reuse_port)?,
            metrics: metrics.map(|m| listen(m, false)).transpose()?,
        })
    }
}

/// Connections the kernel holds for us before we accept them. std's listeners
/// use 128, and a burst of reconnecting clients (after a restart, say) then
/// overflows it: the dropped SYNs are retried only a second later. The kernel
/// caps this at `net.core.somaxconn`.
pub const BACKLOG: i32 = 4096;

/// A listening TCP socket with [`BACKLOG`] and `SO_REUSEADDR` (so that a
/// restart does not wait for the previous run's connections in TIME_WAIT).
fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if reuse_port {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, BACKLOG)?;
    Ok(TcpListener::from(fd))
}
