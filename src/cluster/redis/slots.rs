//! Redis Cluster's key space as a client sees it: the hash slot of a key
//! (`slot`), the master serving each slot (`SlotMap`, read from
//! `CLUSTER SHARDS`), and the redirection a node answers instead when the
//! slot is not its own (`redirect`). Sans-I/O: whoever holds the
//! connections sends the commands and hands the replies here.
//!
//! Everything here reads what a peer sent: a reply of the wrong shape is
//! a [`SlotsError`], never a panic, and a node that is not usable (a
//! master failing over, a replica) is left out rather than guessed at.

use std::collections::HashMap;
use std::fmt;

use super::resp::{self, Frame};

/// Slots of a Redis Cluster: 0 to 16383.
pub const SLOTS: u16 = 16384;

/// The hash slot of `key`: CRC16 (XMODEM) mod 16384 of the key, or of its
/// hash tag, the bytes between the first `{` and the first `}` after it
/// when there are any.
pub fn slot(key: &[u8]) -> u16 {
    // redis-protocol's function follows Redis's own keyHashSlot, empty
    // tags included, and is compiled whatever its features: no CRC16 of
    // our own to keep right.
    redis_protocol::redis_keyslot(key)
}

/// Where a master listens, as `CLUSTER SHARDS` announces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardAddr {
    /// Its preferred endpoint (an address or a hostname), else its IP.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ShardAddr {
    /// `host:port`, with no brackets around an IPv6 address: the form of
    /// a [`Redirect`]'s address, so the two can be compared.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Which master serves each slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// Disjoint, in slot order.
    ranges: Vec<Range>,
    /// Distinct; only masters that serve a range.
    masters: Vec<ShardAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    first: u16,
    last: u16,
    /// Index into `SlotMap::masters`.
    master: usize,
}

impl SlotMap {
    /// The map in a reply to `CLUSTER SHARDS` (Redis 7 or later), as RESP2
    /// decodes it: an array of shards, each a flat key/value array whose
    /// `slots` are start/end pairs and whose `nodes` are flat key/value
    /// arrays too. Fields we do not read are ignored, so that a later
    /// Redis may add some. A shard without an online master (failing
    /// over, loading) serves nothing: its slots stay uncovered.
    pub fn from_shards(reply: &Frame) -> Result<SlotMap, SlotsError> {
        let shards = match reply {
            Frame::Array(shards) => shards,
            // Before 7.0 the command is unknown; without cluster mode it is refused.
            Frame::Error(e) => return Err(SlotsError::Refused(e.to_string())),
            _ => return Err(wrong_type("the reply", "an array")),
        };
        let mut ranges: Vec<(u16, u16, Option<usize>)> = Vec::new();
        let mut masters: Vec<ShardAddr> = Vec::new();
        // A map, not a scan of `masters`: a reply may list many shards.
        let mut index: HashMap<ShardAddr, usize> = HashMap::new();
        for shard in shards {
            let shard = Fields::of(shard, "a shard")?;
            let slots = slot_ranges(shard.require("slots")?)?;
            let Frame::Array(nodes) = shard.require("nodes")? else {
                return Err(wrong_type("nodes", "an array"));
            };
            let master = match online_master(nodes)? {
                // A master without slots is of no use to a client.
                Some(addr) if !slots.is_empty() => {
                    Some(*index.entry(addr).or_insert_with_key(|addr| {
                        masters.push(addr.clone());
                        masters.len() - 1
                    }))
                }
                _ => None,
            };
            ranges.extend(slots.into_iter().map(|(first, last)| (first, last, master)));
        }
        // Overlaps are refused even where a shard serves nothing: two
        // shards claiming one slot is a map to distrust as a whole.
        ranges.sort_unstable_by_key(|&(first, _, _)| first);
        if let Some(pair) = ranges.windows(2).find(|pair| pair[1].0 <= pair[0].1) {
            return Err(SlotsError::Overlap(pair[1].0));
        }
        let ranges = ranges
            .into_iter()
            .filter_map(|(first, last, master)| {
                Some(Range {
                    first,
                    last,
                    master: master?,
                })
            })
            .collect();
        Ok(SlotMap { ranges, masters })
    }

    /// The online master serving `slot`, if any serves it.
    pub fn master_for(&self, slot: u16) -> Option<&ShardAddr> {
        let range = self
            .ranges
            .get(self.ranges.partition_point(|r| r.last < slot))?;
        if range.first <= slot {
            self.masters.get(range.master)
        } else {
            None
        }
    }

    /// Every master serving at least one slot, each once.
    pub fn masters(&self) -> impl Iterator<Item = &ShardAddr> {
        self.masters.iter()
    }
}

/// The first node of a shard that is an online master, and where it
/// listens. Every node must be well formed, but only that one's address
/// is read: a replica's is of no use to us.
fn online_master(nodes: &[Frame]) -> Result<Option<ShardAddr>, SlotsError> {
    let mut found = None;
    for node in nodes {
        let node = Fields::of(node, "a node")?;
        let role = node.string("role")?;
        let health = node.string("health")?;
        // A shard has one master; should a stale view show two, the first
        // answers with MOVED if it is wrong, which the caller follows.
        if found.is_none() && role == b"master" && health == b"online" {
            found = Some(address(&node)?);
        }
    }
    Ok(found)
}

fn address(node: &Fields) -> Result<ShardAddr, SlotsError> {
    // Redis sends "?" for a hostname it does not have and "" when told to
    // announce no endpoint; the IP is then the address the cluster knows.
    let host = match node.get("endpoint") {
        Some(endpoint) => match text(endpoint, "endpoint")? {
            "" | "?" => text(node.require("ip")?, "ip")?,
            endpoint => endpoint,
        },
        None => text(node.require("ip")?, "ip")?,
    };
    if host.is_empty() {
        return Err(SlotsError::NoHost);
    }
    // Only "tls-port" may be announced when the cluster speaks TLS only,
    // which our links cannot: that is a missing "port".
    let port = match node.require("port")? {
        Frame::Integer(n) => u16::try_from(*n)
            .ok()
            .filter(|&p| p != 0)
            .ok_or(SlotsError::BadPort(*n))?,
        _ => return Err(wrong_type("port", "an integer")),
    };
    Ok(ShardAddr {
        host: host.to_string(),
        port,
    })
}

fn slot_ranges(frame: &Frame) -> Result<Vec<(u16, u16)>, SlotsError> {
    let Frame::Array(bounds) = frame else {
        return Err(wrong_type("slots", "an array"));
    };
    if bounds.len() % 2 != 0 {
        return Err(SlotsError::Unpaired("slots"));
    }
    bounds
        .chunks_exact(2)
        .map(|pair| {
            let (first, last) = (slot_number(&pair[0])?, slot_number(&pair[1])?);
            if first > last {
                return Err(SlotsError::Backward { first, last });
            }
            Ok((first, last))
        })
        .collect()
}

fn slot_number(frame: &Frame) -> Result<u16, SlotsError> {
    match frame {
        Frame::Integer(n) => u16::try_from(*n)
            .ok()
            .filter(|&s| s < SLOTS)
            .ok_or(SlotsError::SlotOutOfRange(*n)),
        _ => Err(wrong_type("a slot", "an integer")),
    }
}

fn text<'a>(frame: &'a Frame, field: &'static str) -> Result<&'a str, SlotsError> {
    let bytes = resp::bytes(frame).ok_or(wrong_type(field, "a string"))?;
    std::str::from_utf8(bytes).map_err(|_| wrong_type(field, "UTF-8 text"))
}

fn wrong_type(what: &'static str, expected: &'static str) -> SlotsError {
    SlotsError::WrongType { what, expected }
}

/// A RESP2 map: a flat array of keys and values.
struct Fields<'a> {
    items: &'a [Frame],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn of(frame: &'a Frame, what: &'static str) -> Result<Fields<'a>, SlotsError> {
        let Frame::Array(items) = frame else {
            return Err(wrong_type(what, "a key/value array"));
        };
        if items.len() % 2 != 0 {
            return Err(SlotsError::Unpaired(what));
        }
        if items
            .iter()
            .step_by(2)
            .any(|key| resp::bytes(key).is_none())
        {
            return Err(wrong_type("a field name", "a string"));
        }
        Ok(Fields { items, what })
    }

    fn get(&self, field: &str) -> Option<&'a Frame> {
        self.items
            .chunks_exact(2)
            .find(|kv| resp::bytes(&kv[0]).is_some_and(|k| k[..] == *field.as_bytes()))
            .map(|kv| &kv[1])
    }

    fn require(&self, field: &'static str) -> Result<&'a Frame, SlotsError> {
        self.get(field).ok_or(SlotsError::Missing {
            what: self.what,
            field,
        })
    }

    fn string(&self, field: &'static str) -> Result<&'a [u8], SlotsError> {
        resp::bytes(self.require(field)?)
            .map(|b| &b[..])
            .ok_or(wrong_type(field, "a string"))
    }
}

/// Why a `CLUSTER SHARDS` reply gives no map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotsError {
    /// Redis answered with an error: older than 7.0, or not in cluster mode.
    Refused(String),
    /// A value of another RESP type than the field has.
    WrongType {
        what: &'static str,
        expected: &'static str,
    },
    /// A field every shard or node has is absent.
    Missing {
        what: &'static str,
        field: &'static str,
    },
    /// A key/value array, or a list of slot pairs, of odd length.
    Unpaired(&'static str),
    /// A slot number outside 0 to 16383.
    SlotOutOfRange(i64),
    /// A slot range that ends before it starts.
    Backward { first: u16, last: u16 },
    /// A slot claimed by two ranges.
    Overlap(u16),
    /// A port outside 1 to 65535.
    BadPort(i64),
    /// An online master with neither an endpoint nor an IP.
    NoHost,
}

impl fmt::Display for SlotsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotsError::Refused(e) => write!(f, "CLUSTER SHARDS refused: {e}"),
            SlotsError::WrongType { what, expected } => {
                write!(f, "CLUSTER SHARDS: {what} is not {expected}")
            }
            SlotsError::Missing { what, field } => {
                write!(f, "CLUSTER SHARDS: {what} without \"{field}\"")
            }
            SlotsError::Unpaired(what) => write!(f, "CLUSTER SHARDS: {what} of odd length"),
            SlotsError::SlotOutOfRange(n) => {
                write!(f, "CLUSTER SHARDS: slot {n} outside 0-{}", SLOTS - 1)
            }
            SlotsError::Backward { first, last } => {
                write!(
                    f,
                    "CLUSTER SHARDS: slot range {first}-{last} ends before it starts"
                )
            }
            SlotsError::Overlap(slot) => {
                write!(f, "CLUSTER SHARDS: slot {slot} claimed twice")
            }
            SlotsError::BadPort(n) => write!(f, "CLUSTER SHARDS: port {n} out of range"),
            SlotsError::NoHost => write!(f, "CLUSTER SHARDS: a master without an address"),
        }
    }
}

impl std::error::Error for SlotsError {}

/// A node's answer that a key's slot is served elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// The slot has moved for good: the map is stale.
    Moved { slot: u16, addr: String },
    /// The slot is migrating: this one command goes there, after `ASKING`.
    Ask { slot: u16, addr: String },
}

impl Redirect {
    /// The slot it is about.
    pub fn slot(&self) -> u16 {
        match self {
            Redirect::Moved { slot, .. } | Redirect::Ask { slot, .. } => *slot,
        }
    }
}

/// The redirection in an error reply's text (as decoded, without the
/// leading `-`): `MOVED 3999 127.0.0.1:6381` or `ASK 3999 127.0.0.1:6381`.
/// `addr` is kept as Redis wrote it: `host:port`, the host unbracketed if
/// IPv6, `?` if the node has no hostname to announce, empty if it
/// announces none (then it means the host this connection reached).
/// Any other error is `None`.
pub fn redirect(error_text: &[u8]) -> Option<Redirect> {
    let text = std::str::from_utf8(error_text).ok()?;
    let mut words = text.split(' ');
    let (kind, slot, addr) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || !digits(slot) {
        return None;
    }
    let slot = slot.parse::<u16>().ok().filter(|&s| s < SLOTS)?;
    let (_, port) = addr.rsplit_once(':')?;
    if !digits(port) || !port.parse::<u16>().is_ok_and(|p| p != 0) {
        return None;
    }
    let addr = addr.to_string();
    match kind {
        "MOVED" => Some(Redirect::Moved { slot, addr }),
        "ASK" => Some(Redirect::Ask { slot, addr }),
        _ => None,
    }
}

/// Only ASCII digits: `parse` would also take a sign.
fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::redis::resp::Input;
    use bytes::Bytes;

    /// A reply of Redis 7.0.15 to `CLUSTER SHARDS` in RESP2, one line per
    /// element: three masters, the third with a replica still loading, the
    /// second announcing a hostname.
    const SHARDS: &str = "\
*3
*4
$5
slots
*2
:10923
:16383
$5
nodes
*1
*14
$2
id
$40
b63ee5900bce061f83d67576e38614b3d3234370
$4
port
:30103
$2
ip
$9
127.0.0.1
$8
endpoint
$9
127.0.0.1
$4
role
$6
master
$18
replication-offset
:0
$6
health
$6
online
*4
$5
slots
*2
:5461
:10922
$5
nodes
*1
*16
$2
id
$40
188c876db04c5984dd5c327593bc895d471166da
$4
port
:30102
$2
ip
$9
127.0.0.1
$8
endpoint
$9
127.0.0.1
$8
hostname
$16
redis-b.internal
$4
role
$6
master
$18
replication-offset
:0
$6
health
$6
online
*4
$5
slots
*2
:0
:5460
$5
nodes
*2
*14
$2
id
$40
182d519ea7527f23e2e214adc0486cfb78f322d3
$4
port
:30101
$2
ip
$9
127.0.0.1
$8
endpoint
$9
127.0.0.1
$4
role
$6
master
$18
replication-offset
:0
$6
health
$6
online
*14
$2
id
$40
279e989a325152862cc3e45caafba83e640bc119
$4
port
:30104
$2
ip
$9
127.0.0.1
$8
endpoint
$9
127.0.0.1
$4
role
$7
replica
$18
replication-offset
:0
$6
health
$7
loading
";

    fn decode(raw: &[u8]) -> Frame {
        let mut input = Input::new(1 << 20);
        let n = raw.len();
        input.spare(n).copy_from_slice(raw);
        input.filled(n, n);
        input.next_frame().unwrap().expect("a whole frame")
    }

    fn shards_reply() -> Frame {
        decode(SHARDS.replace('\n', "\r\n").as_bytes())
    }

    fn s(text: &str) -> Frame {
        Frame::BulkString(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn addr(host: &str, port: u16) -> ShardAddr {
        ShardAddr {
            host: host.into(),
            port,
        }
    }

    /// A node as Redis sends it, then `edit` applied to its key/value list.
    fn node(port: i64, role: &str, health: &str, edit: impl FnOnce(&mut Vec<Frame>)) -> Frame {
        let mut kv = vec![
            s("id"),
            s("0123456789abcdef0123456789abcdef01234567"),
            s("port"),
            Frame::Integer(port),
            s("ip"),
            s("10.0.0.1"),
            s("endpoint"),
            s("10.0.0.1"),
            s("role"),
            s(role),
            s("replication-offset"),
            Frame::Integer(42),
            s("health"),
            s(health),
        ];
        edit(&mut kv);
        Frame::Array(kv)
    }

    fn shard(slots: &[i64], nodes: Vec<Frame>) -> Frame {
        Frame::Array(vec![
            s("slots"),
            Frame::Array(slots.iter().map(|&n| Frame::Integer(n)).collect()),
            s("nodes"),
            Frame::Array(nodes),
        ])
    }

    fn master(port: i64) -> Frame {
        node(port, "master", "online", |_| {})
    }

    fn set(kv: &mut [Frame], key: &str, value: Frame) {
        let at = kv.iter().position(|f| *f == s(key)).unwrap();
        kv[at + 1] = value;
    }

    fn remove(kv: &mut Vec<Frame>, key: &str) {
        let at = kv.iter().position(|f| *f == s(key)).unwrap();
        kv.drain(at..at + 2);
    }

    #[test]
    fn slots_are_redis_s() {
        // Every value from `redis-cli cluster keyslot` (Redis 7.0.15).
        for (key, want) in [
            (&b"foo"[..], 12182),
            (b"bar", 5061),
            (b"", 0),
            (b"{user1000}.following", 3443),
            (b"user1000", 3443),
            // An empty tag is no tag: the whole key counts.
            (b"foo{}{bar}", 8363),
            (b"{}", 15257),
            // The tag ends at the first `}` after the first `{`.
            (b"foo{{bar}}zap", 4015),
            (b"{bar", 4015),
            (b"foo{bar}{zap}", 5061),
            // An unclosed tag is no tag.
            (b"{", 4092),
            (b"a{b", 13340),
            (b"pushhub:{u:u1}", 11658),
            (b"pushhub:{c:news}", 3985),
        ] {
            assert_eq!(slot(key), want, "{}", String::from_utf8_lossy(key));
        }
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
    }

    #[test]
    fn a_real_reply_maps_every_slot_to_its_master() {
        let map = SlotMap::from_shards(&shards_reply()).unwrap();
        let (a, b, c) = (
            addr("127.0.0.1", 30101),
            addr("127.0.0.1", 30102),
            addr("127.0.0.1", 30103),
        );
        for (slot, want) in [
            (0, &a),
            (5460, &a),
            (5461, &b),
            (10922, &b),
            (10923, &c),
            (16383, &c),
        ] {
            assert_eq!(map.master_for(slot), Some(want), "slot {slot}");
        }
        assert_eq!(map.master_for(slot(b"foo")), Some(&c));
        assert_eq!(map.master_for(SLOTS), None);
        let mut masters: Vec<_> = map.masters().cloned().collect();
        masters.sort_by_key(|m| m.port);
        assert_eq!(masters, [a, b, c]);
    }

    #[test]
    fn uncovered_slots_and_unusable_shards_have_no_master() {
        let reply = Frame::Array(vec![
            shard(&[0, 99, 200, 200], vec![master(7000)]),
            // Failing over: its master is down, its replica not yet promoted.
            shard(
                &[300, 399],
                vec![
                    node(7001, "master", "fail", |_| {}),
                    node(7002, "replica", "online", |_| {}),
                ],
            ),
            // A new master that has no slots yet.
            shard(&[], vec![master(7003)]),
        ]);
        let map = SlotMap::from_shards(&reply).unwrap();
        let a = addr("10.0.0.1", 7000);
        assert_eq!(map.master_for(0), Some(&a));
        assert_eq!(map.master_for(99), Some(&a));
        assert_eq!(map.master_for(100), None);
        assert_eq!(map.master_for(200), Some(&a));
        assert_eq!(map.master_for(201), None);
        assert_eq!(map.master_for(300), None);
        assert_eq!(map.masters().collect::<Vec<_>>(), [&a]);
        assert_eq!(
            SlotMap::from_shards(&Frame::Array(vec![])),
            Ok(SlotMap::default())
        );
    }

    #[test]
    fn a_master_is_listed_once_and_found_by_its_endpoint() {
        let reply = Frame::Array(vec![
            shard(
                &[0, 10],
                vec![node(7000, "master", "online", |kv| {
                    set(kv, "endpoint", s("redis-a.internal"))
                })],
            ),
            // "?": no hostname to announce; "": no endpoint announced.
            shard(
                &[11, 20],
                vec![node(7001, "master", "online", |kv| {
                    set(kv, "endpoint", s("?"))
                })],
            ),
            shard(
                &[21, 30],
                vec![node(7002, "master", "online", |kv| {
                    set(kv, "endpoint", s(""))
                })],
            ),
            shard(
                &[31, 40],
                vec![node(7003, "master", "online", |kv| remove(kv, "endpoint"))],
            ),
            // The same master again: a stale view, deduplicated.
            shard(
                &[41, 50],
                vec![node(7000, "master", "online", |kv| {
                    set(kv, "endpoint", s("redis-a.internal"))
                })],
            ),
        ]);
        let map = SlotMap::from_shards(&reply).unwrap();
        assert_eq!(map.master_for(5), Some(&addr("redis-a.internal", 7000)));
        assert_eq!(map.master_for(45), Some(&addr("redis-a.internal", 7000)));
        for (slot, port) in [(15, 7001), (25, 7002), (35, 7003)] {
            assert_eq!(map.master_for(slot), Some(&addr("10.0.0.1", port)));
        }
        assert_eq!(map.masters().count(), 4);
        assert_eq!(addr("::1", 7000).to_string(), "::1:7000");
    }

    #[test]
    fn malformed_replies_are_errors() {
        use SlotsError::*;
        let one = |node: Frame| Frame::Array(vec![shard(&[0, 16383], vec![node])]);
        let cases: Vec<(Frame, SlotsError)> = vec![
            (
                Frame::Error("ERR unknown subcommand 'SHARDS'".into()),
                Refused("ERR unknown subcommand 'SHARDS'".into()),
            ),
            (Frame::Integer(3), wrong_type("the reply", "an array")),
            (Frame::Null, wrong_type("the reply", "an array")),
            (
                Frame::Array(vec![s("slots")]),
                wrong_type("a shard", "a key/value array"),
            ),
            (
                Frame::Array(vec![Frame::Array(vec![s("slots")])]),
                Unpaired("a shard"),
            ),
            (
                Frame::Array(vec![Frame::Array(vec![
                    Frame::Integer(1),
                    Frame::Integer(2),
                ])]),
                wrong_type("a field name", "a string"),
            ),
            (
                Frame::Array(vec![Frame::Array(vec![s("nodes"), Frame::Array(vec![])])]),
                Missing {
                    what: "a shard",
                    field: "slots",
                },
            ),
            (
                Frame::Array(vec![Frame::Array(vec![s("slots"), Frame::Array(vec![])])]),
                Missing {
                    what: "a shard",
                    field: "nodes",
                },
            ),
            (
                Frame::Array(vec![Frame::Array(vec![
                    s("slots"),
                    s("0-16383"),
                    s("nodes"),
                    Frame::Array(vec![]),
                ])]),
                wrong_type("slots", "an array"),
            ),
            (
                Frame::Array(vec![Frame::Array(vec![
                    s("slots"),
                    Frame::Array(vec![]),
                    s("nodes"),
                    s("none"),
                ])]),
                wrong_type("nodes", "an array"),
            ),
            (
                Frame::Array(vec![shard(&[0, 10, 20], vec![master(7000)])]),
                Unpaired("slots"),
            ),
            (
                Frame::Array(vec![shard(&[0, 16384], vec![master(7000)])]),
                SlotOutOfRange(16384),
            ),
            (
                Frame::Array(vec![shard(&[-1, 10], vec![master(7000)])]),
                SlotOutOfRange(-1),
            ),
            (
                Frame::Array(vec![shard(&[10, 5], vec![master(7000)])]),
                Backward { first: 10, last: 5 },
            ),
            (
                Frame::Array(vec![Frame::Array(vec![
                    s("slots"),
                    Frame::Array(vec![s("0"), s("10")]),
                    s("nodes"),
                    Frame::Array(vec![]),
                ])]),
                wrong_type("a slot", "an integer"),
            ),
            (
                Frame::Array(vec![
                    shard(&[0, 100], vec![master(7000)]),
                    shard(&[100, 200], vec![master(7001)]),
                ]),
                Overlap(100),
            ),
            // An overlap counts even with a shard that serves nothing.
            (
                Frame::Array(vec![
                    shard(&[0, 100], vec![master(7000)]),
                    shard(&[50, 60], vec![node(7001, "master", "fail", |_| {})]),
                ]),
                Overlap(50),
            ),
            (one(s("node")), wrong_type("a node", "a key/value array")),
            (
                one(node(7000, "master", "online", |kv| remove(kv, "role"))),
                Missing {
                    what: "a node",
                    field: "role",
                },
            ),
            (
                one(node(7000, "master", "online", |kv| remove(kv, "health"))),
                Missing {
                    what: "a node",
                    field: "health",
                },
            ),
            (
                one(node(7000, "master", "online", |kv| {
                    set(kv, "role", Frame::Integer(1))
                })),
                wrong_type("role", "a string"),
            ),
            (
                one(node(7000, "master", "online", |kv| remove(kv, "port"))),
                Missing {
                    what: "a node",
                    field: "port",
                },
            ),
            (
                one(node(7000, "master", "online", |kv| {
                    set(kv, "port", s("7000"))
                })),
                wrong_type("port", "an integer"),
            ),
            (one(master(0)), BadPort(0)),
            (one(master(65536)), BadPort(65536)),
            (one(master(-1)), BadPort(-1)),
            (
                one(node(7000, "master", "online", |kv| {
                    remove(kv, "endpoint");
                    remove(kv, "ip");
                })),
                Missing {
                    what: "a node",
                    field: "ip",
                },
            ),
            (
                one(node(7000, "master", "online", |kv| {
                    set(kv, "endpoint", s("?"));
                    set(kv, "ip", s(""));
                })),
                NoHost,
            ),
            (
                one(node(7000, "master", "online", |kv| {
                    set(
                        kv,
                        "endpoint",
                        Frame::BulkString(Bytes::from_static(b"\xff\xfe")),
                    )
                })),
                wrong_type("endpoint", "UTF-8 text"),
            ),
            (
                one(node(7000, "master", "online", |kv| {
                    set(kv, "endpoint", s(""));
                    set(kv, "ip", Frame::Null);
                })),
                wrong_type("ip", "a string"),
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(SlotMap::from_shards(&reply), Err(want.clone()), "{reply:?}");
            assert!(!want.to_string().is_empty());
        }
        // What is not read need not be right: a usable endpoint spares the
        // IP, and a replica's address is never looked at.
        let fine = Frame::Array(vec![shard(
            &[0, 16383],
            vec![
                node(7000, "master", "online", |kv| set(kv, "ip", Frame::Null)),
                node(7001, "replica", "online", |kv| set(kv, "port", s("?"))),
            ],
        )]);
        assert_eq!(
            SlotMap::from_shards(&fine).unwrap().master_for(0),
            Some(&addr("10.0.0.1", 7000))
        );
    }

    /// Replaces subtrees of the real reply with pseudo-random frames, many
    /// times over: each result is a map or an error, never a panic.
    #[test]
    fn garbage_anywhere_is_an_error_not_a_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn garbage(next: &mut impl FnMut() -> u64, depth: u32) -> Frame {
            match next() % 7 {
                0 => Frame::Null,
                1 => Frame::Integer((next() % 70_000) as i64 - 1000),
                2 => Frame::Error("MOVED".into()),
                3 => s(["slots", "nodes", "port", "role", "master", "online", "?"]
                    [(next() % 7) as usize]),
                4 => Frame::SimpleString(Bytes::from_static(b"\xff")),
                _ if depth == 0 => Frame::Array(vec![]),
                _ => Frame::Array((0..next() % 5).map(|_| garbage(next, depth - 1)).collect()),
            }
        }
        fn count(frame: &Frame) -> usize {
            match frame {
                Frame::Array(items) => 1 + items.iter().map(count).sum::<usize>(),
                _ => 1,
            }
        }
        /// The `n`th frame in depth-first order.
        fn nth<'a>(frame: &'a mut Frame, n: &mut usize) -> Option<&'a mut Frame> {
            if *n == 0 {
                return Some(frame);
            }
            *n -= 1;
            match frame {
                Frame::Array(items) => items.iter_mut().find_map(|f| nth(f, n)),
                _ => None,
            }
        }
        let real = shards_reply();
        let total = count(&real);
        let (mut maps, mut errors) = (0, 0);
        for _ in 0..5000 {
            let mut reply = real.clone();
            for _ in 0..1 + next() % 3 {
                let mut at = (next() as usize) % total;
                if let Some(frame) = nth(&mut reply, &mut at) {
                    *frame = garbage(&mut next, 6);
                }
            }
            match SlotMap::from_shards(&reply) {
                Ok(_) => maps += 1,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    errors += 1;
                }
            }
        }
        assert!(maps > 0 && errors > 0, "{maps} maps, {errors} errors");
        // Nesting past the codec's bound never reaches us.
        let deep = "*1\r\n".repeat(64);
        let mut input = Input::new(1 << 20);
        input.spare(deep.len()).copy_from_slice(deep.as_bytes());
        input.filled(deep.len(), deep.len());
        assert!(input.next_frame().is_err());
    }

    #[test]
    fn redirections_are_parsed_and_nothing_else_is() {
        assert_eq!(
            redirect(b"MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            redirect(b"ASK 16383 redis-b.internal:6380"),
            Some(Redirect::Ask {
                slot: 16383,
                addr: "redis-b.internal:6380".into()
            })
        );
        // IPv6 unbracketed, no hostname ("?"), no endpoint (""): as Redis writes them.
        for addr in ["::1:6379", "?:30103", ":30103"] {
            assert_eq!(
                redirect(format!("MOVED 0 {addr}").as_bytes()),
                Some(Redirect::Moved {
                    slot: 0,
                    addr: addr.into()
                })
            );
        }
        for bad in [
            &b""[..],
            b"MOVED",
            b"MOVED 3999",
            b"MOVED 3999 127.0.0.1:6381 extra",
            b"MOVED  3999 127.0.0.1:6381",
            b"MOVED 16384 127.0.0.1:6381",
            b"MOVED +12 127.0.0.1:6381",
            b"MOVED -1 127.0.0.1:6381",
            b"MOVED 99999999999999999999 127.0.0.1:6381",
            b"MOVED 3999 127.0.0.1",
            b"MOVED 3999 127.0.0.1:",
            b"MOVED 3999 127.0.0.1:0",
            b"MOVED 3999 127.0.0.1:65536",
            b"MOVED 3999 127.0.0.1:+80",
            b"moved 3999 127.0.0.1:6381",
            b"ASKING 3999 127.0.0.1:6381",
            b"ERR unknown command",
            b"CLUSTERDOWN Hash slot not served",
            b"TRYAGAIN Multiple keys request during rehashing of slot",
            b"MOVED \xff 127.0.0.1:6381",
        ] {
            assert_eq!(redirect(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
