//! What a cluster's redis-server holds for it: `used_memory` from `INFO
//! memory`, read over one short-lived connection per reading.
//!
//! Blocking and tiny on purpose: it is read a handful of times per run,
//! between the measured parts, and a RESP client on the executor would be
//! more code than the one reply it parses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::time::Duration;

/// A reading that takes longer means Redis is stalled: the run should say so
/// rather than wait.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Longest `INFO memory` reply accepted (Redis 7's is about 1.5 KB).
const MAX_INFO: usize = 64 * 1024;

/// Bytes Redis's allocator holds (`used_memory`): its dictionaries of
/// channels and their subscribers included, without the allocator's free
/// pages that RSS would count.
pub fn used_memory(addr: SocketAddrV4) -> Result<u64, String> {
    let info = info_memory(addr).map_err(|e| format!("redis INFO memory at {addr}: {e}"))?;
    field(&info, "used_memory").ok_or_else(|| format!("no used_memory in INFO from {addr}"))
}

fn info_memory(addr: SocketAddrV4) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr.into(), TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    (&stream).write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n")?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header)?;
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let len: usize = header
        .strip_prefix('$')
        .and_then(|n| n.trim_end().parse().ok())
        .filter(|&n| n <= MAX_INFO)
        .ok_or_else(|| bad(format!("unexpected reply {:?}", header.trim_end())))?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    String::from_utf8(body).map_err(|_| bad("INFO is not UTF-8".into()))
}

/// `name`'s value in INFO's `name:value` lines.
fn field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_used_memory() {
        let info = "# Memory\r\nused_memory:1064792\r\nused_memory_human:1.02M\r\n\
                    used_memory_rss:7000000\r\n";
        assert_eq!(field(info, "used_memory"), Some(1_064_792));
        assert_eq!(field(info, "used_memory_rss"), Some(7_000_000));
        assert_eq!(field(info, "used_memory_peak"), None);
        assert_eq!(field("used_memory:x\r\n", "used_memory"), None);
    }
}
