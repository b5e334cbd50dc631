//! The hub as /proc shows it: resident memory (`VmRSS`) and CPU time.
//!
//! CPU time is the sum over the hub's threads of the first field of
//! `/proc/PID/task/*/schedstat` (nanoseconds on the CPU, at nanosecond
//! resolution); without schedstat (a kernel built without it), utime + stime of
//! `/proc/PID/stat` at 100 ticks per second.

use std::fs;
use std::net::SocketAddrV4;

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on Linux).
const CLK_TCK: u64 = 100;

/// The kernel's page, the unit of `/proc/net/sockstat` (4 KiB on x86-64).
const PAGE_BYTES: u64 = 4096;

pub struct HubProc {
    pid: u32,
}

impl HubProc {
    /// Checks that the process exists and that its status is readable.
    pub fn new(pid: u32) -> Result<HubProc, String> {
        let hub = HubProc { pid };
        hub.rss_bytes()?;
        hub.cpu_ns()?;
        Ok(hub)
    }

    /// Whether this process holds the listening socket bound to `addr`: a
    /// wrong --hub-pid (a shell, another hub) would make every memory and CPU
    /// figure wrong without any other sign.
    pub fn listens_on(&self, addr: SocketAddrV4) -> Result<bool, String> {
        let tcp = fs::read_to_string("/proc/net/tcp")
            .map_err(|e| format!("cannot read /proc/net/tcp: {e}"))?;
        let inodes = listener_inodes(&tcp, addr);
        if inodes.is_empty() {
            return Err(format!("nothing listens on {addr} (is the hub running?)"));
        }
        // Hubs sharing a port (--reuse-port) each hold a listener of their own.
        let sockets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
        let fds = fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map_err(|e| format!("cannot list the descriptors of pid {}: {e}", self.pid))?;
        Ok(fds
            .filter_map(Result::ok)
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .any(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str())))
    }

    fn read(&self, what: &str) -> Result<String, String> {
        let path = format!("/proc/{}/{what}", self.pid);
        fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {path} (is --hub-pid right?): {e}"))
    }

    pub fn rss_bytes(&self) -> Result<u64, String> {
        let status = self.read("status")?;
        pushhub::metrics::parse_vm_rss(&status)
            .ok_or_else(|| format!("no VmRSS in /proc/{}/status", self.pid))
    }

    /// CPU time used by every thread of the hub so far, in ns.
    pub fn cpu_ns(&self) -> Result<u64, String> {
        match self.schedstat_ns() {
            Some(ns) => Ok(ns),
            None => {
                let stat = self.read("stat")?;
                stat_cpu_ns(&stat).ok_or_else(|| format!("cannot parse /proc/{}/stat", self.pid))
            }
        }
    }

    fn schedstat_ns(&self) -> Option<u64> {
        let tasks = fs::read_dir(format!("/proc/{}/task", self.pid)).ok()?;
        let mut total = 0;
        for task in tasks {
            let text = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            total += schedstat_ns(&text)?;
        }
        Some(total)
    }
}

/// Time the hypervisor kept this machine's CPUs from running (`steal` of
/// the `cpu` line of `/proc/stat`, all CPUs), in ns: on a shared virtual
/// machine, what a latency figure cannot be told apart from.
pub fn steal_ns() -> Option<u64> {
    steal_ticks(&fs::read_to_string("/proc/stat").ok()?).map(|t| t * (1_000_000_000 / CLK_TCK))
}

/// The 8th value of the `cpu` line (user nice system idle iowait irq
/// softirq steal ...), in ticks.
pub fn steal_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace().nth(8)?.parse().ok()
}

/// A `TcpExt` counter of this network namespace (`/proc/net/netstat`), such as
/// `ListenOverflows`: connections the kernel dropped because a listener's
/// accept queue was full.
pub fn tcp_ext(name: &str) -> Option<u64> {
    tcp_ext_in(&fs::read_to_string("/proc/net/netstat").ok()?, name)
}

/// `name`'s value in the text of `/proc/net/netstat`: a `TcpExt:` line of
/// names followed by a `TcpExt:` line of values.
pub fn tcp_ext_in(netstat: &str, name: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Bytes of memory the kernel holds for TCP sockets in this network
/// namespace (`mem` of the `TCP:` line of `/proc/net/sockstat`, in pages):
/// where what a socket has not sent yet, or its peer not read, waits. Every
/// process's sockets count, not only the hub's.
pub fn tcp_kernel_bytes() -> Option<u64> {
    let pages = tcp_mem_pages(&fs::read_to_string("/proc/net/sockstat").ok()?)?;
    Some(pages * PAGE_BYTES)
}

/// The `mem` field of the `TCP:` line of `/proc/net/sockstat`.
pub fn tcp_mem_pages(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = line.split_whitespace();
    fields.find(|&f| f == "mem")?;
    fields.next()?.parse().ok()
}

/// The inodes of the TCP sockets listening on `addr` (several with
/// SO_REUSEPORT), from the text of `/proc/net/tcp` (addresses as the kernel
/// prints them: the IPv4 address as a native-endian hex word, the port as hex).
pub fn listener_inodes(tcp: &str, addr: SocketAddrV4) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(addr.ip().octets()),
        addr.port()
    );
    tcp.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [_, l, _, st, _, _, _, _, _, inode, ..] if l == local && st == LISTEN => {
                    inode.parse().ok()
                }
                _ => None,
            }
        })
        .collect()
}

/// The first field of a schedstat line: time spent on the CPU, in ns.
pub fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// utime + stime of a `/proc/PID/stat` line, in ns. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn stat_cpu_ns(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * (1_000_000_000 / CLK_TCK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_time() {
        assert_eq!(schedstat_ns("123456789 2222 33\n"), Some(123_456_789));
        assert_eq!(schedstat_ns(""), None);
        let stat = "4242 (push hub) (x) S 1 4242 4242 0 -1 4194560 \
                    1000 0 0 0 250 50 0 0 20 0 2 0 12345 1000000 500";
        assert_eq!(stat_cpu_ns(stat), Some(300 * 10_000_000));
        assert_eq!(stat_cpu_ns("4242 (x) S 1"), None);
    }

    #[test]
    fn reads_steal_time() {
        let stat = "cpu  476576 0 149018 9631432 5086 0 19263 166501 0 0\n\
                    cpu0 229657 0 70670 4828672 1192 0 11248 83148 0 0\n";
        assert_eq!(steal_ticks(stat), Some(166501));
        assert_eq!(steal_ticks("cpu0 1 2 3\n"), None);
        assert!(steal_ns().is_some());
    }

    #[test]
    fn reads_tcp_ext() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                    TcpExt: 0 322 323\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(tcp_ext_in(text, "ListenOverflows"), Some(322));
        assert_eq!(tcp_ext_in(text, "ListenDrops"), Some(323));
        assert_eq!(tcp_ext_in(text, "Nope"), None);
        assert_eq!(tcp_ext_in("", "ListenDrops"), None);
    }

    #[test]
    fn reads_the_kernels_tcp_memory() {
        let text = "sockets: used 125\nTCP: inuse 108 orphan 0 tw 81684 alloc 108 mem 100\n\
                    UDP: inuse 0 mem 0\n";
        assert_eq!(tcp_mem_pages(text), Some(100));
        assert_eq!(tcp_mem_pages("UDP: inuse 0 mem 3\n"), None);
        assert!(tcp_kernel_bytes().is_some());
    }

    #[test]
    fn reads_this_process() {
        let me = HubProc::new(std::process::id()).unwrap();
        assert!(me.rss_bytes().unwrap() > 0);
        assert!(me.cpu_ns().unwrap() > 0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            panic!("not v4");
        };
        assert_eq!(me.listens_on(addr), Ok(true));
        let parent = HubProc {
            pid: std::os::unix::process::parent_id(),
        };
        assert_eq!(parent.listens_on(addr), Ok(false));
        drop(listener);
        assert!(me.listens_on(addr).is_err());
    }

    #[test]
    fn finds_a_listener_inode() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                   0: 0100007F:5324 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0\n\
                   1: 0100007F:5324 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0\n\
                   2: 0100007F:5324 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 654321 1 0000000000000000 100 0 0 10 0\n";
        let addr = |s: &str| s.parse::<SocketAddrV4>().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(
                listener_inodes(tcp, addr("127.0.0.1:21284")),
                [123456, 654321]
            );
        }
        assert!(listener_inodes(tcp, addr("127.0.0.1:21285")).is_empty());
        assert!(listener_inodes("", addr("127.0.0.1:21284")).is_empty());
    }
}
