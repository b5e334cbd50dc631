//! The hub's counters and the `stats` snapshot built from them.
//!
//! Plain `u64`s owned by the hub: everything runs on one thread, so a counter is
//! an add, not an atomic.

use std::time::Instant;

use serde::Serialize;

/// Monotonic counters since start.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    /// Push requests handled (original form and `push` commands).
    pub pushes: u64,
    pub broadcasts: u64,
    /// Messages queued to a connection.
    pub delivered: u64,
    /// Connections dropped because their outbound queue overflowed.
    pub dropped: u64,
    /// Connections refused because the hub was at `--max-connections`.
    pub rejected: u64,
    /// Connections refused because their address was at `--max-connections-per-ip`.
    pub rejected_per_ip: u64,
    /// Handshakes refused because their `Origin` is not allowed.
    pub rejected_origin: u64,
    /// Connections whose authentication failed or timed out.
    pub auth_failures: u64,
    pub kicked: u64,
    /// Connections closed because they sent nothing for the idle timeout.
    pub idle_closed: u64,
}

/// The `stats` reply body.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Open WebSocket connections, authenticated or not.
    pub connections: usize,
    /// Connections that have authenticated as a uid.
    pub authenticated: usize,
    /// Distinct uids online.
    pub uids: usize,
    #[serde(flatten)]
    pub counters: Counters,
    pub uptime_secs: u64,
    /// Resident set size of the process, from /proc; 0 where unavailable.
    pub rss_bytes: u64,
    /// The APNs sender's counters, when APNs is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<crate::apns::sender::Stats>,
}

impl Stats {
    pub fn new(counters: &Counters, started: Instant, live: Live) -> Stats {
        Stats {
            connections: live.connections,
            authenticated: live.authenticated,
            uids: live.uids,
            counters: counters.clone(),
            uptime_secs: started.elapsed().as_secs(),
            rss_bytes: rss_bytes().unwrap_or(0),
            apns: None,
        }
    }
}

/// Gauges read off the connection table at snapshot time.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    pub connections: usize,
    pub authenticated: usize,
    pub uids: usize,
}

/// This process's resident set size, read from `/proc/self/status`.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// Extracts `VmRSS` (reported in kB) from the text of a `/proc/PID/status` file.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss() {
        let status = "Name:\tpushhub\nVmPeak:\t  9000 kB\nVmRSS:\t    3172 kB\nThreads:\t2\n";
        assert_eq!(parse_vm_rss(status), Some(3172 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_bytes().unwrap() > 0);
    }
}
