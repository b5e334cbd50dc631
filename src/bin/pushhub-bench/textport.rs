//! The backend side: one text-port connection, pipelined, and the request
//! lines the benches send on it. Requests are written by one task and replies
//! read by another, so that a slow reply never holds the sender. Replies are
//! split with `pushhub::text_port::protocol::split_line`, the line codec the hub itself
//! uses.
//!
//! A server that is not pushhub (`--peer`) gets only what the original
//! push.php understands: pushes in its form ([`PushForm::Original`]) and
//! broadcasts whose data is delivered the same by both ([`broadcast_array_line`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smol::Async;
use smol::future::try_zip;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use pushhub::text_port::protocol::split_line;

/// Longest reply line accepted (a `stats` or an `online` reply is far shorter).
const MAX_REPLY: usize = 1 << 20;

const READ_CHUNK: usize = 64 * 1024;

/// Opens a connection and splits it into its writing and reading halves.
pub async fn connect(addr: SocketAddrV4) -> io::Result<(Requests, Replies)> {
    let stream = Async::<TcpStream>::connect(addr).await?;
    // Pipelined small lines: do not let Nagle hold one back for an ACK.
    stream.get_ref().set_nodelay(true)?;
    let stream = Rc::new(stream);
    Ok((
        Requests {
            stream: Rc::clone(&stream),
        },
        Replies {
            stream,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        },
    ))
}

pub struct Requests {
    stream: Rc<Async<TcpStream>>,
}

impl Requests {
    /// Writes request lines (each ending with `\n`).
    pub async fn send(&self, lines: &[u8]) -> Result<(), String> {
        (&*self.stream)
            .write_all(lines)
            .await
            .map_err(|e| format!("text port write: {e}"))
    }
}

pub struct Replies {
    stream: Rc<Async<TcpStream>>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Replies {
    /// The next reply line, without its newline; an error at EOF.
    pub async fn next(&mut self) -> Result<&[u8], String> {
        self.read_line()
            .await
            .map_err(|e| format!("text port read: {e}"))
    }

    async fn read_line(&mut self) -> io::Result<&[u8]> {
        loop {
            match split_line(&self.buf[self.start..self.end], MAX_REPLY) {
                Ok(Some((line, used))) => {
                    let (at, len) = (self.start, line.len());
                    self.start += used;
                    return Ok(&self.buf[at..at + len]);
                }
                Ok(None) => {}
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "reply line over 1 MiB",
                    ));
                }
            }
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.end == self.buf.len() {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    (self.start, self.end) = (0, self.end - self.start);
                } else {
                    self.buf.resize(self.buf.len() * 2, 0);
                }
            }
            let n = (&*self.stream).read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the hub closed the text port",
                ));
            }
            self.end += n;
        }
    }
}

/// Both halves, for one request at a time (`stats`, `online`).
pub struct Backend {
    requests: Requests,
    replies: Replies,
    /// Ask `stats` of every hub of a cluster and sum them.
    cluster: bool,
}

impl Backend {
    pub async fn connect(addr: SocketAddrV4) -> Result<Backend, String> {
        let (requests, replies) = connect(addr)
            .await
            .map_err(|e| format!("cannot connect to the text port {addr}: {e}"))?;
        Ok(Backend {
            requests,
            replies,
            cluster: false,
        })
    }

    /// In a cluster, one hub's `stats` counts only its own clients, and the
    /// kernel chooses which hub a shared port's connection lands on.
    pub fn cluster(mut self, cluster: bool) -> Backend {
        self.cluster = cluster;
        self
    }

    /// Sends one request line (without newline) and parses its JSON reply.
    pub async fn request(&mut self, line: &str) -> Result<Value, String> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.requests.send(&bytes).await?;
        let reply = self.replies.next().await?;
        serde_json::from_slice(reply).map_err(|e| {
            format!(
                "text port reply is not JSON ({e}): {}",
                String::from_utf8_lossy(reply)
            )
        })
    }

    /// The hub's `stats` reply; a cluster's summed over its nodes.
    pub async fn stats(&mut self) -> Result<Stats, String> {
        if !self.cluster {
            let value = self.request(r#"{"cmd":"stats"}"#).await?;
            return serde_json::from_value(value)
                .map_err(|e| format!("unexpected stats reply: {e}"));
        }
        let value = self.request(r#"{"cmd":"stats","cluster":true}"#).await?;
        cluster_stats(value)
    }

    /// Writes `lines`, `count` requests, while reading their replies, and
    /// hands each reply to `on_reply` in order; stops at the first error.
    pub async fn pipeline(
        &mut self,
        lines: &[u8],
        count: usize,
        mut on_reply: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let replies = &mut self.replies;
        let read = async move {
            for _ in 0..count {
                on_reply(replies.next().await?)?;
            }
            Ok(())
        };
        try_zip(self.requests.send(lines), read).await.map(|_| ())
    }

    /// Splits into the pipelined halves.
    pub fn split(self) -> (Requests, Replies) {
        (self.requests, self.replies)
    }
}

/// A `{"ok":true,"nodes":[...]}` reply summed; an error if a hub did not
/// answer (`unconfirmed`), since a sum without it would be a wrong count.
fn cluster_stats(value: Value) -> Result<Stats, String> {
    if value["unconfirmed"] == true || value["ok"] != true {
        return Err(format!("the cluster's stats are incomplete: {value}"));
    }
    let nodes = value["nodes"]
        .as_array()
        .filter(|nodes| !nodes.is_empty())
        .ok_or_else(|| format!("a cluster stats reply without nodes: {value}"))?;
    let mut sum = Stats::default();
    for node in nodes {
        let one: Stats = serde_json::from_value(node.clone())
            .map_err(|e| format!("unexpected stats of a node: {e}"))?;
        sum.add(&one);
    }
    Ok(sum)
}

/// The `stats` fields the benches look at.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Stats {
    pub connections: u64,
    pub authenticated: u64,
    pub dropped: u64,
    /// Channels that have subscribers (0 from a hub without channels).
    #[serde(default)]
    pub channels: u64,
    #[serde(default)]
    pub subscriptions: u64,
    /// Connections refused at --max-connections, and failed handshakes by
    /// reason: why a hub closed clients before their upgrade.
    #[serde(default)]
    pub rejected: u64,
    #[serde(default)]
    pub handshake_failures: BTreeMap<String, u64>,
    /// History for recovery (0 from a hub without it, or with it off).
    #[serde(default)]
    pub history_streams: u64,
    #[serde(default)]
    pub history_messages: u64,
    #[serde(default)]
    pub history_bytes: u64,
    /// Recoveries that filled the gap, the messages they replayed, and those
    /// answered `recovered:false`.
    #[serde(default)]
    pub recoveries: u64,
    #[serde(default)]
    pub replayed: u64,
    #[serde(default)]
    pub recoveries_failed: u64,
}

impl Stats {
    /// Adds another hub's counts to these.
    fn add(&mut self, other: &Stats) {
        self.connections += other.connections;
        self.authenticated += other.authenticated;
        self.dropped += other.dropped;
        self.channels += other.channels;
        self.subscriptions += other.subscriptions;
        self.rejected += other.rejected;
        for (reason, n) in &other.handshake_failures {
            *self.handshake_failures.entry(reason.clone()).or_default() += n;
        }
        self.history_streams += other.history_streams;
        self.history_messages += other.history_messages;
        self.history_bytes += other.history_bytes;
        self.recoveries += other.recoveries;
        self.replayed += other.replayed;
        self.recoveries_failed += other.recoveries_failed;
    }
}

/// The body of an `"ok":true` reply; an error naming the hub's reason
/// otherwise, or if a cluster could not confirm it (`unconfirmed`: a count
/// that may be short, which no bench can take as its figure).
fn answer<T: DeserializeOwned>(reply: &[u8]) -> Result<T, String> {
    #[derive(Deserialize)]
    struct Envelope<T> {
        ok: bool,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        unconfirmed: bool,
        #[serde(flatten)]
        body: T,
    }
    match serde_json::from_slice::<Envelope<T>>(reply) {
        Ok(Envelope {
            unconfirmed: true, ..
        }) => Err(format!(
            "the cluster did not confirm a reply (a hub or Redis silent past \
             --cluster-timeout): {}",
            String::from_utf8_lossy(reply)
        )),
        Ok(Envelope { ok: true, body, .. }) => Ok(body),
        Ok(Envelope { error, .. }) => Err(format!(
            "the hub refused a request: {}",
            error.unwrap_or_default()
        )),
        Err(e) => Err(format!(
            "unexpected reply ({e}): {}",
            String::from_utf8_lossy(reply)
        )),
    }
}

/// The `delivered` count of a `push`, `broadcast` or `publish` reply.
pub fn delivered(reply: &[u8]) -> Result<u64, String> {
    #[derive(Deserialize)]
    struct Delivered {
        #[serde(default)]
        delivered: u64,
    }
    answer::<Delivered>(reply).map(|d| d.delivered)
}

/// The `subscribed` count of a `subscribe` reply; an error if the hub refused
/// any subscription (at one of its limits), since the benches need them all.
pub fn subscribed(reply: &[u8]) -> Result<u64, String> {
    #[derive(Deserialize)]
    struct Subscribed {
        #[serde(default)]
        subscribed: u64,
        #[serde(default)]
        refused: BTreeMap<String, u64>,
    }
    let body = answer::<Subscribed>(reply)?;
    if !body.refused.is_empty() {
        let reasons: Vec<String> = body
            .refused
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        return Err(format!(
            "the hub refused subscriptions: {} (--max-subscriptions-per-connection, \
             --max-channels)",
            reasons.join(", ")
        ));
    }
    Ok(body.subscribed)
}

/// The requests the benches send, typed as the hub reads them.
#[derive(Serialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
enum Command<'a> {
    Push {
        uid: &'a str,
        data: &'a str,
    },
    Broadcast {
        data: Payload<'a>,
    },
    Publish {
        ch: &'a str,
        data: &'a str,
    },
    Subscribe {
        uids: Vec<String>,
        chs: &'a [&'a str],
    },
}

/// A broadcast's data as sent: a string, which pushhub delivers bare, or a
/// JSON array holding it, which pushhub and the original both deliver as
/// written (the original encodes `data` again, so a string would reach its
/// clients quoted, and pushhub's bare).
#[derive(Serialize)]
#[serde(untagged)]
enum Payload<'a> {
    Text(&'a str),
    Array([&'a str; 1]),
}

impl Command<'_> {
    fn line(&self) -> Vec<u8> {
        // Strings and arrays of them always serialize.
        let mut line = serde_json::to_vec(self).expect("requests serialize");
        line.push(b'\n');
        line
    }
}

/// `size` bytes of data starting with `b<k>-` (cut to `size`), so that a
/// client can tell which message it got.
fn tagged_data(k: u32, size: usize) -> String {
    let mut data = format!("b{k}-");
    data.truncate(size);
    data.extend(std::iter::repeat_n('x', size - data.len()));
    data
}

/// The request line of a push of `size` bytes of data to `uid`, the data
/// tagged `b<k>-` as a broadcast's is.
pub fn push_line(uid: &str, k: u32, size: usize) -> Vec<u8> {
    Command::Push {
        uid,
        data: &tagged_data(k, size),
    }
    .line()
}

/// The request line of broadcast `k`, its data tagged as [`tagged_data`].
pub fn broadcast_line(k: u32, size: usize) -> Vec<u8> {
    Command::Broadcast {
        data: Payload::Text(&tagged_data(k, size)),
    }
    .line()
}

/// The request line of broadcast `k` for any server of the original's
/// protocol: its data a JSON array of one tagged string, `["b<k>-xx…"]`, that
/// clients receive as written, `size` bytes (at least 4, the brackets and
/// quotes).
pub fn broadcast_array_line(k: u32, size: usize) -> Vec<u8> {
    Command::Broadcast {
        data: Payload::Array([&tagged_data(k, size.saturating_sub(4))]),
    }
    .line()
}

/// The request line of publication `k` to channel `ch`, its data tagged as a
/// broadcast's is.
pub fn publish_line(ch: &str, k: u32, size: usize) -> Vec<u8> {
    Command::Publish {
        ch,
        data: &tagged_data(k, size),
    }
    .line()
}

/// The request line that subscribes every connection of the uids `u<i>`, for
/// `i` in `uids`, to each of the channels `chs`.
pub fn subscribe_line(uids: impl IntoIterator<Item = u32>, chs: &[&str]) -> Vec<u8> {
    Command::Subscribe {
        uids: uids.into_iter().map(|i| format!("u{i}")).collect(),
        chs,
    }
    .line()
}

/// Which message `k` of [`broadcast_line`], [`broadcast_array_line`] or
/// [`publish_line`] a message is, from its first bytes; `None` when they do
/// not say (data shorter than `b<k>-`, or not tagged so).
pub fn broadcast_index(prefix: &[u8]) -> Option<u32> {
    let tagged = prefix.strip_prefix(b"[\"").unwrap_or(prefix);
    let digits = tagged.strip_prefix(b"b")?;
    let end = digits.iter().position(|&b| b == b'-')?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// How a push is asked for, and what its reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushForm {
    /// `{"cmd":"push","uid":..,"data":..}`, answered with its `delivered`
    /// count; a raw client receives the data bare.
    Command,
    /// The original's `{"uid":..,"data":..}`, answered `ok` (some connection
    /// took it) or `fail`; clients receive the whole line, from pushhub and
    /// from the original alike.
    Original,
}

impl PushForm {
    /// Appends the request line of a push of `data` to `u<uid>`. `data` is
    /// written as it is, so it must need no JSON escaping (the benches send
    /// digits and spaces).
    pub fn write(self, out: &mut Vec<u8>, uid: u32, data: fmt::Arguments<'_>) {
        // Writing to a Vec cannot fail.
        let _ = match self {
            PushForm::Command => {
                writeln!(out, r#"{{"cmd":"push","uid":"u{uid}","data":"{data}"}}"#)
            }
            PushForm::Original => writeln!(out, r#"{{"uid":"u{uid}","data":"{data}"}}"#),
        };
    }

    /// The connections a push reached, from its reply. `ok` says only that
    /// some connection took the line; the benches hold one connection per
    /// uid, so it is one.
    pub fn delivered(self, reply: &[u8]) -> Result<u64, String> {
        match (self, reply) {
            (PushForm::Command, reply) => delivered(reply),
            (PushForm::Original, b"ok") => Ok(1),
            (PushForm::Original, b"fail") => Ok(0),
            (PushForm::Original, other) => Err(format!(
                "unexpected reply to a push in the original form: {}",
                String::from_utf8_lossy(other)
            )),
        }
    }
}

/// A push's data from the text its client received: the text itself (a
/// `push` command's string data), or the `data` string of the original
/// form's line, which is delivered whole. `None` when that line does not
/// read as one (cut short, or another object).
pub fn pushed_data(text: &[u8]) -> Option<&str> {
    #[derive(Deserialize)]
    struct Original<'a> {
        #[serde(borrow)]
        data: &'a str,
    }
    if text.first() == Some(&b'{') {
        return serde_json::from_slice::<Original>(text)
            .ok()
            .map(|line| line.data);
    }
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_lines_have_the_size_asked() {
        let line = broadcast_line(7, 32);
        let v: Value = serde_json::from_slice(&line).unwrap();
        let data = v["data"].as_str().unwrap();
        assert_eq!(data.len(), 32);
        assert!(data.starts_with("b7-x"));
        assert_eq!(broadcast_index(data.as_bytes()), Some(7));
        assert_eq!(line.last(), Some(&b'\n'));
        let tiny: Value = serde_json::from_slice(&broadcast_line(123, 2)).unwrap();
        assert_eq!(tiny["data"], "b1");
        assert_eq!(broadcast_index(b"b1"), None);
        let empty: Value = serde_json::from_slice(&broadcast_line(1, 0)).unwrap();
        assert_eq!(empty["data"], "");
        assert_eq!(broadcast_index(b"17 123"), None);
    }

    #[test]
    fn publish_and_subscribe_lines() {
        let line = publish_line("c7", 3, 16);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["cmd"], "publish");
        assert_eq!(v["ch"], "c7");
        assert_eq!(v["data"], "b3-xxxxxxxxxxxxx");
        let line = subscribe_line([0, 5, 10], &["c1", "c2"]);
        assert_eq!(
            line,
            b"{\"cmd\":\"subscribe\",\"uids\":[\"u0\",\"u5\",\"u10\"],\"chs\":[\"c1\",\"c2\"]}\n"
        );
        assert_eq!(
            push_line("o7", 4, 8),
            b"{\"cmd\":\"push\",\"uid\":\"o7\",\"data\":\"b4-xxxxx\"}\n"
        );
        let v: Value = serde_json::from_slice(&broadcast_line(2, 8)).unwrap();
        assert_eq!(
            (&v["cmd"], &v["data"]),
            (&"broadcast".into(), &"b2-xxxxx".into())
        );
    }

    #[test]
    fn broadcast_array_lines_are_delivered_as_written() {
        let line = broadcast_array_line(7, 32);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["cmd"], "broadcast");
        // What both servers send: the data's JSON text, compact.
        let delivered = serde_json::to_string(&v["data"]).unwrap();
        assert_eq!(delivered.len(), 32);
        assert!(delivered.starts_with(r#"["b7-x"#), "{delivered}");
        assert_eq!(broadcast_index(delivered.as_bytes()), Some(7));
        assert_eq!(line.last(), Some(&b'\n'));
        let tiny: Value = serde_json::from_slice(&broadcast_array_line(1, 4)).unwrap();
        assert_eq!(tiny["data"], serde_json::json!([""]));
        assert_eq!(broadcast_index(br#"[""]"#), None);
        assert_eq!(broadcast_index(br#""b3-x""#), None);
    }

    #[test]
    fn push_forms() {
        let mut lines = Vec::new();
        PushForm::Command.write(&mut lines, 5, format_args!("{} {}", 12, 345));
        PushForm::Original.write(&mut lines, 6, format_args!("{}", 13));
        assert_eq!(
            lines,
            b"{\"cmd\":\"push\",\"uid\":\"u5\",\"data\":\"12 345\"}\n{\"uid\":\"u6\",\"data\":\"13\"}\n"
        );
        assert_eq!(PushForm::Original.delivered(b"ok"), Ok(1));
        assert_eq!(PushForm::Original.delivered(b"fail"), Ok(0));
        assert!(
            PushForm::Original
                .delivered(br#"{"ok":true,"delivered":1}"#)
                .is_err()
        );
        assert_eq!(
            PushForm::Command.delivered(br#"{"ok":true,"delivered":2}"#),
            Ok(2)
        );
        assert!(PushForm::Command.delivered(b"ok").is_err());
    }

    #[test]
    fn reads_pushed_data_in_either_form() {
        assert_eq!(pushed_data(b"12 345"), Some("12 345"));
        // The original form's line, as pushhub and the original deliver it.
        assert_eq!(
            pushed_data(br#"{"uid":"u6","data":"12 345"}"#),
            Some("12 345")
        );
        assert_eq!(pushed_data(br#"{"uid":"u6","data":"12"#), None);
        assert_eq!(pushed_data(br#"{"uid":"u6"}"#), None);
        assert_eq!(pushed_data(b"\xff"), None);
    }

    #[test]
    fn reads_subscribed() {
        assert_eq!(subscribed(br#"{"ok":true,"subscribed":180}"#), Ok(180));
        let refused =
            subscribed(br#"{"ok":true,"subscribed":3,"refused":{"too_many_subscriptions":1}}"#)
                .unwrap_err();
        assert!(refused.contains("1 too_many_subscriptions"), "{refused}");
        assert!(
            subscribed(br#"{"ok":false,"error":"bad channel name"}"#)
                .unwrap_err()
                .contains("bad channel name")
        );
        assert!(subscribed(b"fail").is_err());
    }

    #[test]
    fn reads_delivered() {
        assert_eq!(delivered(br#"{"ok":true,"delivered":3}"#), Ok(3));
        assert_eq!(delivered(br#"{"ok":true,"id":1,"delivered":0}"#), Ok(0));
        assert!(
            delivered(br#"{"ok":false,"error":"nope"}"#)
                .unwrap_err()
                .contains("nope")
        );
        assert!(delivered(b"ok").is_err());
        assert!(
            delivered(br#"{"ok":true,"delivered":1,"unconfirmed":true}"#)
                .unwrap_err()
                .contains("did not confirm")
        );
    }

    #[test]
    fn sums_a_clusters_stats() {
        let node = |c: u64, f: u64| {
            serde_json::json!({"connections": c, "authenticated": c, "dropped": 0,
                "subscriptions": 2 * c, "handshake_failures": {"timeout": f}})
        };
        let sum = cluster_stats(serde_json::json!({"ok": true, "nodes": [node(3, 1), node(4, 2)]}))
            .unwrap();
        assert_eq!(
            (sum.connections, sum.authenticated, sum.subscriptions),
            (7, 7, 14)
        );
        assert_eq!(sum.handshake_failures["timeout"], 3);
        assert!(
            cluster_stats(
                serde_json::json!({"ok": true, "nodes": [node(1, 0)], "unconfirmed": true})
            )
            .is_err()
        );
        assert!(cluster_stats(serde_json::json!({"ok": true, "nodes": []})).is_err());
    }
}
