//! The hub's counters and the `stats` snapshot built from them.
//!
//! Plain `u64`s owned by the hub: everything runs on one thread, so a counter is
//! an add, not an atomic.

pub mod http;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// Monotonic counters since start.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    /// Push requests handled (original form and `push` commands).
    pub pushes: u64,
    pub broadcasts: u64,
    /// Channel publications handled (text-port `publish` and v1 `pub`).
    pub publications: u64,
    /// Channel operations refused (bad name, no grant, a limit), by reason.
    pub channel_errors: BTreeMap<&'static str, u64>,
    /// Other v1 requests refused (malformed, unknown op, before `auth`), by kind.
    pub v1_errors: BTreeMap<&'static str, u64>,
    /// Messages queued to a connection.
    pub delivered: u64,
    /// Recoveries that replayed what a client missed (possibly nothing),
    /// the messages they replayed, and recoveries that found a gap.
    pub recoveries: u64,
    pub replayed: u64,
    pub recoveries_failed: u64,
    /// v1 acknowledgements accepted.
    pub acks: u64,
    /// Pushes with `ack_timeout` that were acknowledged, and those whose
    /// wait ended without it.
    pub acked_pushes: u64,
    pub unacked_pushes: u64,
    /// Client messages sent up to a listener, and those dropped (no
    /// listener, or every listener full).
    pub upstream: u64,
    pub upstream_dropped: u64,
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
    /// The same, by reason (`expired`, `signature`, `timeout`, ...).
    pub auth_failure_reasons: BTreeMap<&'static str, u64>,
    /// WebSocket handshakes completed.
    pub handshakes: u64,
    /// Handshakes that failed, by reason (`timeout`, `not_upgrade`, ...).
    pub handshake_failures: BTreeMap<&'static str, u64>,
    /// Text-port requests answered with an error (or `fail`), by kind.
    pub text_errors: BTreeMap<&'static str, u64>,
    pub kicked: u64,
    /// Connections closed because they sent nothing for the idle timeout.
    pub idle_closed: u64,
    /// wss certificates reloaded on SIGHUP, and reloads refused (bad files).
    pub tls_reloads: u64,
    pub tls_reload_failures: u64,
    /// When the wss certificate in use expires (Unix seconds), with wss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_certificate_expires_at: Option<i64>,
}

/// The `stats` reply body.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    #[serde(flatten)]
    pub live: Live,
    #[serde(flatten)]
    pub counters: Counters,
    pub uptime_secs: u64,
    /// Resident set size of the process, from /proc; 0 where unavailable.
    pub rss_bytes: u64,
    /// Each push service's counters, when it is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<crate::push::sender::Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm: Option<crate::push::sender::Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webpush: Option<crate::push::sender::Stats>,
    /// Cluster mode: the node and its link.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterStats>,
}

impl Stats {
    pub fn new(counters: &Counters, started: Instant, live: Live) -> Stats {
        Stats {
            live,
            counters: counters.clone(),
            uptime_secs: started.elapsed().as_secs(),
            rss_bytes: rss_bytes().unwrap_or(0),
            apns: None,
            fcm: None,
            webpush: None,
            cluster: None,
        }
    }
}

/// Gauges read off the connection table at snapshot time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Live {
    /// Open WebSocket connections, authenticated or not.
    pub connections: usize,
    /// Connections that have authenticated as a uid.
    pub authenticated: usize,
    /// Live connections without a uid (`--allow-anonymous`).
    pub anonymous: usize,
    /// Distinct uids online.
    pub uids: usize,
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Subscriptions of all connections to all channels.
    pub subscriptions: usize,
    /// Backend connections listening for events.
    pub listeners: usize,
    /// Streams with a position kept, the messages kept for recovery, and
    /// the bytes they hold (bounded by `--history-memory`).
    pub history_streams: usize,
    pub history_messages: usize,
    pub history_bytes: usize,
    /// Pushes waiting for an acknowledgement.
    pub acks_waiting: usize,
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

/// Gauges read at scrape time that `stats` does not carry.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Bytes waiting in every connection's outbound queue.
    pub queued_bytes: usize,
    pub open_fds: usize,
}

/// The Prometheus text exposition (format 0.0.4) of `stats` and `gauges`.
pub fn render(stats: &Stats, gauges: &Gauges) -> String {
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        out.push_str(&format!(
            "# HELP pushhub_{name} {help}\n# TYPE pushhub_{name} {kind}\n"
        ));
        for (labels, value) in samples {
            out.push_str(&format!("pushhub_{name}{labels} {value}\n"));
        }
    };
    let c = &stats.counters;
    let one = |v: u64| [("", v as f64)];
    metric(
        "connections",
        "gauge",
        "Open WebSocket connections.",
        &[("", stats.live.connections as f64)],
    );
    metric(
        "authenticated_connections",
        "gauge",
        "Connections bound to a uid.",
        &[("", stats.live.authenticated as f64)],
    );
    metric(
        "uids",
        "gauge",
        "Distinct uids online.",
        &[("", stats.live.uids as f64)],
    );
    metric(
        "channels",
        "gauge",
        "Channels with at least one subscriber.",
        &[("", stats.live.channels as f64)],
    );
    metric(
        "subscriptions",
        "gauge",
        "Subscriptions of all connections to all channels.",
        &[("", stats.live.subscriptions as f64)],
    );
    metric(
        "anonymous_connections",
        "gauge",
        "Live connections without a uid.",
        &[("", stats.live.anonymous as f64)],
    );
    metric(
        "listeners",
        "gauge",
        "Backend connections listening for events.",
        &[("", stats.live.listeners as f64)],
    );
    metric(
        "history_messages",
        "gauge",
        "Messages kept for recovery.",
        &[("", stats.live.history_messages as f64)],
    );
    metric(
        "history_bytes",
        "gauge",
        "Bytes the kept messages and their streams hold.",
        &[("", stats.live.history_bytes as f64)],
    );
    metric(
        "history_streams",
        "gauge",
        "Streams with a position kept.",
        &[("", stats.live.history_streams as f64)],
    );
    metric(
        "acks_waiting",
        "gauge",
        "Pushes waiting for an acknowledgement.",
        &[("", stats.live.acks_waiting as f64)],
    );
    metric(
        "recoveries_total",
        "counter",
        "Recoveries after a reconnect, by result.",
        &[
            ("{result=\"recovered\"}", c.recoveries as f64),
            ("{result=\"gap\"}", c.recoveries_failed as f64),
        ],
    );
    metric(
        "replayed_total",
        "counter",
        "Messages replayed by recoveries.",
        &one(c.replayed),
    );
    metric(
        "acks_total",
        "counter",
        "Acknowledgements accepted from v1 clients.",
        &one(c.acks),
    );
    metric(
        "ack_pushes_total",
        "counter",
        "Pushes that waited for an acknowledgement, by result.",
        &[
            ("{result=\"acked\"}", c.acked_pushes as f64),
            ("{result=\"unacked\"}", c.unacked_pushes as f64),
        ],
    );
    metric(
        "upstream_total",
        "counter",
        "Client messages sent up to listeners, by result.",
        &[
            ("{result=\"sent\"}", c.upstream as f64),
            ("{result=\"dropped\"}", c.upstream_dropped as f64),
        ],
    );
    metric(
        "queued_bytes",
        "gauge",
        "Bytes waiting in outbound queues.",
        &[("", gauges.queued_bytes as f64)],
    );
    metric(
        "handshakes_total",
        "counter",
        "WebSocket handshakes completed.",
        &one(c.handshakes),
    );
    let labelled = |map: &BTreeMap<&'static str, u64>, label: &str| -> Vec<(String, f64)> {
        map.iter()
            .map(|(k, v)| (format!("{{{label}=\"{}\"}}", escape(k)), *v as f64))
            .collect()
    };
    let failures = labelled(&c.handshake_failures, "reason");
    metric(
        "handshake_failures_total",
        "counter",
        "Handshakes that failed, by reason.",
        &as_refs(&failures),
    );
    let auth = labelled(&c.auth_failure_reasons, "reason");
    metric(
        "auth_failures_total",
        "counter",
        "Authentications refused or timed out, by reason.",
        &as_refs(&auth),
    );
    metric(
        "rejected_total",
        "counter",
        "Connections refused at a limit, by limit.",
        &[
            ("{limit=\"max_connections\"}", c.rejected as f64),
            ("{limit=\"per_ip\"}", c.rejected_per_ip as f64),
            ("{limit=\"origin\"}", c.rejected_origin as f64),
        ],
    );
    metric(
        "pushes_total",
        "counter",
        "Push requests handled.",
        &one(c.pushes),
    );
    metric(
        "broadcasts_total",
        "counter",
        "Broadcast requests handled.",
        &one(c.broadcasts),
    );
    metric(
        "publications_total",
        "counter",
        "Channel publications handled.",
        &one(c.publications),
    );
    let channel_errors = labelled(&c.channel_errors, "reason");
    metric(
        "channel_errors_total",
        "counter",
        "Channel operations refused, by reason.",
        &as_refs(&channel_errors),
    );
    let v1_errors = labelled(&c.v1_errors, "reason");
    metric(
        "v1_errors_total",
        "counter",
        "v1 requests refused for another reason than their channel, by reason.",
        &as_refs(&v1_errors),
    );
    metric(
        "delivered_total",
        "counter",
        "Messages queued to connections.",
        &one(c.delivered),
    );
    metric(
        "dropped_total",
        "counter",
        "Slow consumers dropped (close 1008).",
        &one(c.dropped),
    );
    metric(
        "kicked_total",
        "counter",
        "Connections closed by kick.",
        &one(c.kicked),
    );
    metric(
        "idle_closed_total",
        "counter",
        "Connections closed by the idle timeout.",
        &one(c.idle_closed),
    );
    metric(
        "tls_reloads_total",
        "counter",
        "wss certificate reloads on SIGHUP, by result.",
        &[
            ("{result=\"ok\"}", c.tls_reloads as f64),
            ("{result=\"failed\"}", c.tls_reload_failures as f64),
        ],
    );
    if let Some(at) = c.tls_certificate_expires_at {
        metric(
            "tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "When the wss certificate in use expires (Unix time).",
            &[("", at as f64)],
        );
    }
    let text = labelled(&c.text_errors, "kind");
    metric(
        "text_errors_total",
        "counter",
        "Text-port requests refused, by kind.",
        &as_refs(&text),
    );
    metric(
        "resident_memory_bytes",
        "gauge",
        "Resident set size.",
        &[("", stats.rss_bytes as f64)],
    );
    metric(
        "open_fds",
        "gauge",
        "Open file descriptors.",
        &[("", gauges.open_fds as f64)],
    );
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since start.",
        &[("", stats.uptime_secs as f64)],
    );
    for (prefix, service, stats) in [
        ("apns", "APNs", &stats.apns),
        ("fcm", "FCM", &stats.fcm),
        ("webpush", "Web Push", &stats.webpush),
    ] {
        if let Some(stats) = stats {
            sender_metrics(&mut metric, prefix, service, stats);
        }
    }
    if let Some(cluster) = &stats.cluster {
        let c = &cluster.counters;
        let up = f64::from(u8::from(cluster.redis == "up"));
        metric(
            "redis_up",
            "gauge",
            "1 while the cluster's link to Redis is up.",
            &[("", up)],
        );
        for (name, help, n) in [
            (
                "cluster_requests_total",
                "Requests published for other hubs.",
                c.cluster_requests,
            ),
            (
                "cluster_messages_in_total",
                "Requests from Redis acted on here.",
                c.cluster_messages_in,
            ),
            (
                "cluster_unconfirmed_total",
                "Replies that some hub did not confirm in time.",
                c.cluster_unconfirmed,
            ),
            (
                "cluster_bad_messages_total",
                "Messages from Redis that could not be read.",
                c.cluster_bad_messages,
            ),
            (
                "redis_connects_total",
                "Links to Redis made.",
                c.redis_connects,
            ),
            (
                "redis_disconnects_total",
                "Links to Redis lost.",
                c.redis_disconnects,
            ),
        ] {
            metric(name, "counter", help, &one(n));
        }
        metric(
            "cluster_routes",
            "gauge",
            "Redis channels subscribed: uids and channels held here.",
            &[("", cluster.cluster_routes as f64)],
        );
        metric(
            "cluster_waiting",
            "gauge",
            "Requests waiting for other hubs' answers.",
            &[("", cluster.cluster_waiting as f64)],
        );
    }
    out
}

/// One push service's sender counters, under `pushhub_PREFIX_*`.
fn sender_metrics(
    metric: &mut impl FnMut(&str, &str, &str, &[(&str, f64)]),
    prefix: &str,
    service: &str,
    stats: &crate::push::sender::Stats,
) {
    let one = |v: u64| [("", v as f64)];
    let rejected: Vec<(String, f64)> = stats
        .rejected
        .iter()
        .map(|(k, v)| (format!("{{reason=\"{}\"}}", escape(k)), *v as f64))
        .collect();
    let counters = [
        (
            "sent_total",
            format!("Requests sent to {service}, retries included."),
            stats.sent,
        ),
        (
            "accepted_total",
            format!("Messages {service} accepted."),
            stats.accepted,
        ),
        (
            "retried_total",
            format!("Requests sent to {service} again."),
            stats.retried,
        ),
        (
            "devices_gone_total",
            format!("Devices removed as gone by {service}."),
            stats.devices_gone,
        ),
        (
            "failed_total",
            format!("Messages not delivered, not refused by {service}."),
            stats.failed,
        ),
        (
            "connections_total",
            format!("Connections made to {service}."),
            stats.connections,
        ),
    ];
    for (name, help, value) in &counters[..2] {
        metric(&format!("{prefix}_{name}"), "counter", help, &one(*value));
    }
    metric(
        &format!("{prefix}_rejected_total"),
        "counter",
        &format!("Final refusals by {service}, by reason."),
        &as_refs(&rejected),
    );
    for (name, help, value) in &counters[2..] {
        metric(&format!("{prefix}_{name}"), "counter", help, &one(*value));
    }
    metric(
        &format!("{prefix}_queued"),
        "gauge",
        "Messages waiting for a stream.",
        &[("", stats.queued as f64)],
    );
}

fn as_refs(samples: &[(String, f64)]) -> Vec<(&str, f64)> {
    samples.iter().map(|(l, n)| (l.as_str(), *n)).collect()
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Counters {
    /// Counts one more under `reason` in `map`.
    pub fn bump(map: &mut BTreeMap<&'static str, u64>, reason: &'static str) {
        *map.entry(reason).or_insert(0) += 1;
    }
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
