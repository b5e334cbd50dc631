//! Sockets: the loopback-only rule, the source addresses 127.0.0.1 to
//! 127.0.0.K, non-blocking connects from a chosen source (with rustix, since
//! std cannot bind before connecting), and the open-files limit.
//!
//! Why several sources: each source address has its own ~28,000 ephemeral
//! ports, and connections closed by this side linger in TIME_WAIT on them, so
//! back-to-back runs of 18,000 connections would exhaust a single address.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, bind, connect, socket_with, sockopt};
use rustix::process::{Resource, getrlimit};
use smol::Async;

/// Descriptors kept aside from connections: stdio, the text port, /proc reads,
/// the reactor's own.
const RESERVED_FDS: u64 = 64;

/// Accepts only IPv4 addresses in 127.0.0.0/8: the benches flood what they
/// point at, and must never be pointed at another machine.
pub fn loopback_v4(addr: SocketAddr) -> Result<SocketAddrV4, String> {
    match addr {
        SocketAddr::V4(v4) if v4.ip().octets()[0] == 127 => Ok(v4),
        other => Err(format!(
            "{other} is not in 127.0.0.0/8: pushhub-bench only measures a hub on this machine's loopback"
        )),
    }
}

/// The source address of connection `i`: 127.0.0.1 + (i mod `sources`).
pub fn source(i: u32, sources: u8) -> Ipv4Addr {
    let k = u32::from(sources.max(1));
    Ipv4Addr::new(127, 0, 0, (1 + i % k) as u8)
}

/// Opens a TCP connection from `src` (any port) to `dst`, without blocking the
/// executor: non-blocking connect, wait until writable, then SO_ERROR.
/// `rcvbuf` sets SO_RCVBUF, before connecting since the window scale is agreed
/// in the SYN.
pub async fn connect_from(
    src: Ipv4Addr,
    dst: SocketAddrV4,
    rcvbuf: Option<usize>,
) -> io::Result<Async<TcpStream>> {
    let fd = socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    if let Some(bytes) = rcvbuf {
        sockopt::set_socket_recv_buffer_size(&fd, bytes)?;
    }
    bind(&fd, &SocketAddrV4::new(src, 0))?;
    match connect(&fd, &dst) {
        Ok(()) => {}
        Err(e) if e == Errno::INPROGRESS => {}
        Err(e) => return Err(e.into()),
    }
    let stream = Async::new_nonblocking(TcpStream::from(fd))?;
    stream.writable().await?;
    sockopt::socket_error(stream.get_ref())??;
    Ok(stream)
}

/// Refuses `n` sockets more than this process may open.
pub fn check_fits(n: u32) -> Result<(), String> {
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if u64::from(n) + RESERVED_FDS > limit {
        return Err(format!(
            "{n} sockets do not fit under this process's open-files limit of {limit} \
             ({RESERVED_FDS} kept aside); use fewer"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_v4() {
        let ok = |s: &str| loopback_v4(s.parse().unwrap());
        assert!(ok("127.0.0.1:1234").is_ok());
        assert!(ok("127.0.0.9:1").is_ok());
        assert!(ok("127.255.255.254:5678").is_ok());
        assert!(ok("0.0.0.0:1234").is_err());
        assert!(ok("10.0.0.1:1234").is_err());
        assert!(ok("128.0.0.1:1234").is_err());
        assert!(ok("[::1]:1234").is_err());
        assert!(ok("[::ffff:127.0.0.1]:1234").is_err());
    }

    #[test]
    fn sources_cycle() {
        assert_eq!(source(0, 8), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source(7, 8), Ipv4Addr::new(127, 0, 0, 8));
        assert_eq!(source(8, 8), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source(5, 1), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source(5, 0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source(253, 254), Ipv4Addr::new(127, 0, 0, 254));
    }
}
