//! Streams' positions and history in Redis, so that a client recovers on
//! any hub what it missed on another.
//!
//! A stream (a uid's, a channel's, the broadcasts') has two keys beside
//! its route, under the route's hash tag so that Redis Cluster keeps them
//! on the route's shard: `ROUTE:l`, a list of its last messages, each
//! `"<ms> <line>"` (the backend's line as it came, which every hub turns
//! into frames with the text port's own parser), and `ROUTE:s`, a hash of
//! its epoch `e`, the offset `b` just before the list's first message (a
//! message's offset is `b` plus its place in the list, so none is stored),
//! and `r`, when the keys' expiry was last pushed back. They live
//! `--history-ttl` after the stream was last written or read, and an
//! eighth more: the expiry is pushed back at most every eighth of the TTL,
//! which spares a command per message; a message older than the TTL is
//! not replayed, whatever is still kept. The milliseconds are the hubs'
//! clocks, which should agree (NTP) to well within the TTL.
//!
//! Two scripts, run by `EVALSHA`, do what must not interleave with
//! another hub's: `PUBLISH` keeps the message, which gives it its offset,
//! and publishes it with its position in one step, so every hub delivers
//! it with the same position and in the same order; `READ` says where a
//! stream stands and, when asked and still kept, what came after a
//! client's position. Each `redis.call` costs Redis a microsecond or two,
//! so `PUBLISH` makes three for most messages (BENCHMARKS.md has what a
//! push costs Redis).

use bytes::{Bytes, BytesMut};

use super::GatherId;
use super::redis::resp::{self, Frame};
use crate::config::HistoryLimits;
use crate::hub::{Pos, StreamKey};

/// Publishes a batch of messages, each as the next of its stream. KEYS:
/// each message's state and list. ARGV: now in ms, the keys' life in ms,
/// then six per message: its route, header, line, its stream's size, the
/// epoch to start the stream with, and the publishing command (`SPUBLISH`
/// in a Redis Cluster, where the route is on the keys' shard). Returns
/// {receivers, epoch, offset} per message. A list is trimmed to its size
/// once it holds 32 more: trimming at each message would cost a command
/// each. One run for all the messages of a turn spares Redis the cost of a
/// script call per message, which is most of a lone message's.
const PUBLISH: &str = r"
local now, life = tonumber(ARGV[1]), tonumber(ARGV[2])
local replies = {}
for m = 1, #KEYS / 2 do
  local sk, lk, a = KEYS[2 * m - 1], KEYS[2 * m], 6 * m - 3
  local s = redis.call('HMGET', sk, 'e', 'b', 'r')
  local e, b = s[1], tonumber(s[2]) or 0
  if not e then
    e, b = ARGV[a + 4], 0
    redis.call('DEL', lk)
    redis.call('HSET', sk, 'e', e, 'b', 0, 'r', now)
    redis.call('PEXPIRE', sk, life)
  elseif now - (tonumber(s[3]) or 0) > life / 9 then
    redis.call('HSET', sk, 'r', now)
    redis.call('PEXPIRE', sk, life)
    redis.call('PEXPIRE', lk, life)
  end
  local line = ARGV[a + 2]
  local n = redis.call('RPUSH', lk, ARGV[1] .. ' ' .. line)
  if n == 1 then
    redis.call('PEXPIRE', lk, life)
  end
  local size = tonumber(ARGV[a + 3])
  if n > size + 32 then
    redis.call('LTRIM', lk, n - size, -1)
    redis.call('HINCRBY', sk, 'b', n - size)
  end
  local o = b + n
  local head = ARGV[a + 1] .. ' ' .. e .. ':' .. o .. '\n'
  replies[m] = {redis.call(ARGV[a + 5], ARGV[a], head .. line), e, o}
end
return replies
";

/// KEYS: state, list. ARGV: the client's epoch ('' for none) and offset,
/// the epoch to start with, the keys' life in ms, the most messages and
/// bytes to return, now in ms. Returns {epoch, offset, 1 and the messages
/// after the client's offset | 0 if they cannot all be returned}.
const READ: &str = r"
local now, life = tonumber(ARGV[7]), tonumber(ARGV[4])
local s = redis.call('HMGET', KEYS[1], 'e', 'b')
local e, b = s[1], tonumber(s[2]) or 0
if not e then
  e, b = ARGV[3], 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 'b', 0)
end
redis.call('HSET', KEYS[1], 'r', now)
redis.call('PEXPIRE', KEYS[1], life)
redis.call('PEXPIRE', KEYS[2], life)
local n = redis.call('LLEN', KEYS[2])
local o = b + n
local missed = o - tonumber(ARGV[2])
if ARGV[1] ~= e or missed < 0 or missed > tonumber(ARGV[5]) or missed > n then
  return {e, o, 0}
end
local reply = {e, o, 1}
if missed == 0 then
  return reply
end
local bytes = 0
for _, m in ipairs(redis.call('LRANGE', KEYS[2], n - missed, -1)) do
  bytes = bytes + #m
  if bytes > tonumber(ARGV[6]) then
    return {e, o, 0}
  end
  reply[#reply + 1] = m
end
return reply
";

/// The scripts' SHA1s, as `EVALSHA` names them, in lowercase hex.
pub struct Scripts {
    publish: String,
    read: String,
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts {
            publish: sha1_hex(PUBLISH),
            read: sha1_hex(READ),
        }
    }
}

impl Scripts {
    /// `SCRIPT LOAD`s for a new link, ahead of any `EVALSHA`.
    pub fn load(&self, out: &mut BytesMut) {
        for script in [PUBLISH, READ] {
            resp::command(out, &[b"SCRIPT", b"LOAD", script.as_bytes()]);
        }
    }

    /// Appends the `PUBLISH` run of `batch`'s messages, and empties it;
    /// returns each one's request part, in order, for its reply.
    pub fn publish(
        &self,
        out: &mut BytesMut,
        batch: &mut Batch,
        limits: &HistoryLimits,
    ) -> Vec<(GatherId, u32)> {
        let keys = (batch.parts.len() * 2).to_string();
        let life = life_ms(limits);
        let now = now_ms().to_string();
        let mut args: Vec<&[u8]> = Vec::with_capacity(5 + batch.ends.len());
        args.extend_from_slice(&[b"EVALSHA", self.publish.as_bytes(), keys.as_bytes()]);
        let mut start = 0;
        let all: Vec<&[u8]> = batch
            .ends
            .iter()
            .map(|&end| {
                let item = &batch.data[start..end];
                start = end;
                item
            })
            .collect();
        // The keys come first, then the arguments: each message's two keys
        // are its first two items.
        for message in all.chunks(ITEMS) {
            args.extend_from_slice(&message[..2]);
        }
        args.extend_from_slice(&[now.as_bytes(), life.as_bytes()]);
        for message in all.chunks(ITEMS) {
            args.extend_from_slice(&message[2..]);
        }
        resp::command(out, &args);
        batch.data.clear();
        batch.ends.clear();
        batch.slot = None;
        std::mem::take(&mut batch.parts)
    }

    /// Reads where `route`'s stream stands, and what came after `since`.
    pub fn read(
        &self,
        out: &mut BytesMut,
        route: &[u8],
        since: Option<Pos>,
        size: usize,
        limits: &HistoryLimits,
        epoch: u64,
    ) {
        let (state, list) = keys(route);
        let (since_epoch, since_offset) = match since {
            Some(p) => (format!("{:x}", p.epoch), p.offset.to_string()),
            None => (String::new(), "0".to_string()),
        };
        let life = life_ms(limits);
        let epoch = format!("{epoch:x}");
        let most = size.min(limits.replay_messages).to_string();
        let bytes = limits.replay_bytes.to_string();
        let now = now_ms().to_string();
        resp::command(
            out,
            &[
                b"EVALSHA",
                self.read.as_bytes(),
                b"2",
                &state,
                &list,
                since_epoch.as_bytes(),
                since_offset.as_bytes(),
                epoch.as_bytes(),
                life.as_bytes(),
                most.as_bytes(),
                bytes.as_bytes(),
                now.as_bytes(),
            ],
        );
    }
}

/// A message for the `PUBLISH` script: published with `command` to
/// `route` as `head`, its position, and `line`; its stream keeps `size`
/// messages, and starts with `epoch` if it is new.
pub struct Publish<'a> {
    pub command: &'a [u8],
    pub route: &'a [u8],
    pub head: &'a [u8],
    pub line: &'a [u8],
    pub size: usize,
    pub epoch: u64,
}

/// Items per message in a batch: two keys, six arguments.
const ITEMS: usize = 8;

/// Most messages in one `PUBLISH` run: Redis does nothing else while a
/// script runs.
const MAX_BATCH: usize = 64;

/// Messages waiting for their `PUBLISH` run, written when the connection
/// is about to be written to: each one's keys and arguments, one after
/// another in `data`.
#[derive(Default)]
pub struct Batch {
    data: Vec<u8>,
    /// Where each item ends in `data`.
    ends: Vec<usize>,
    parts: Vec<(GatherId, u32)>,
    /// With a Redis Cluster, the slot of every message's keys (a script's
    /// keys must share one).
    slot: Option<u16>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The bytes waiting in it.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether a message whose keys are in `slot` can join it.
    pub fn takes(&self, slot: Option<u16>) -> bool {
        self.parts.is_empty() || (self.slot == slot && self.parts.len() < MAX_BATCH)
    }

    /// Adds `message`, the part `part` of its request.
    pub fn push(&mut self, message: &Publish, part: (GatherId, u32), slot: Option<u16>) {
        // The stream's two keys, written in place: `ROUTE:s`, `ROUTE:l`.
        for suffix in [b":s", b":l"] {
            self.data.extend_from_slice(message.route);
            self.data.extend_from_slice(suffix);
            self.ends.push(self.data.len());
        }
        let size = message.size.to_string();
        let epoch = format!("{:x}", message.epoch);
        for item in [
            message.route,
            message.head,
            message.line,
            size.as_bytes(),
            epoch.as_bytes(),
            message.command,
        ] {
            self.data.extend_from_slice(item);
            self.ends.push(self.data.len());
        }
        self.parts.push(part);
        self.slot = slot;
    }
}

/// Messages a stream of this kind keeps (0: no history, no positions).
pub fn size(limits: &HistoryLimits, stream: StreamKey) -> usize {
    match stream {
        StreamKey::Uid(_) => limits.size_uid,
        StreamKey::Channel(_) => limits.size_channel,
        StreamKey::All => limits.size_broadcast,
    }
}

fn keys(route: &[u8]) -> (Vec<u8>, Vec<u8>) {
    ([route, b":s"].concat(), [route, b":l"].concat())
}

/// How long a stream's keys live after their expiry was last pushed back:
/// the TTL and an eighth, since that happens at most every eighth.
fn life_ms(limits: &HistoryLimits) -> String {
    let ttl = limits.ttl.as_millis().max(8);
    (ttl + ttl / 8).to_string()
}

/// This hub's clock, in ms since the Unix epoch: what kept messages are
/// stamped with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn sha1_hex(script: &str) -> String {
    openssl::sha::sha1(script.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The position a `PUBLISH` run gave one message (an item of its reply),
/// and how many hubs received it.
pub fn published(reply: &Frame) -> Option<(u32, Pos)> {
    let Frame::Array(items) = reply else {
        return None;
    };
    let [Frame::Integer(n), e, Frame::Integer(o)] = &items[..] else {
        return None;
    };
    let pos = Pos {
        epoch: epoch(e)?,
        offset: u64::try_from(*o).ok()?,
    };
    Some((u32::try_from(*n).ok()?, pos))
}

/// Where a stream stands, from a `READ` script's reply.
#[derive(Debug)]
pub struct StreamRead {
    pub pos: Pos,
    /// The messages after the client's position, oldest first, as
    /// `(offset, line)`, if they are all still kept (and were asked).
    pub missed: Option<Vec<(u64, Bytes)>>,
}

/// Reads a `READ` script's reply, checked: as many messages as the client
/// missed, none older than the TTL as of `now_ms`. `None` if the reply is
/// not one.
pub fn read_reply(
    reply: Frame,
    since: Option<Pos>,
    limits: &HistoryLimits,
    now_ms: u64,
) -> Option<StreamRead> {
    let Frame::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    let e = items.next()?;
    let (Some(Frame::Integer(o)), Some(Frame::Integer(ok))) = (items.next(), items.next()) else {
        return None;
    };
    let pos = Pos {
        epoch: epoch(&e)?,
        offset: u64::try_from(o).ok()?,
    };
    let ttl = u64::try_from(limits.ttl.as_millis()).unwrap_or(u64::MAX);
    let oldest = now_ms.saturating_sub(ttl);
    let missed = match (since, ok) {
        (Some(since), 1) if since.epoch == pos.epoch && since.offset <= pos.offset => {
            let lines: Option<Vec<Bytes>> = items
                .map(|item| resp::bytes(&item).and_then(|b| entry(b, oldest)))
                .collect();
            lines
                .filter(|lines| lines.len() as u64 == pos.offset - since.offset)
                .map(|lines| (since.offset + 1..).zip(lines).collect())
        }
        _ => None,
    };
    Some(StreamRead { pos, missed })
}

/// One kept message's line, `"<ms> <line>"`, if it is not older than
/// `oldest` (in ms).
fn entry(item: &Bytes, oldest: u64) -> Option<Bytes> {
    let end = item.iter().position(|&b| b == b' ')?;
    let ms: u64 = std::str::from_utf8(&item[..end]).ok()?.parse().ok()?;
    (ms >= oldest).then(|| item.slice(end + 1..))
}

fn epoch(frame: &Frame) -> Option<u64> {
    let text = std::str::from_utf8(resp::bytes(frame)?).ok()?;
    u64::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn reply(o: i64, ok: i64, entries: &[&str]) -> Frame {
        let mut items = vec![bulk("ab"), Frame::Integer(o), Frame::Integer(ok)];
        items.extend(entries.iter().map(|e| bulk(e)));
        Frame::Array(items)
    }

    #[test]
    fn a_read_gives_the_missed_messages_only_when_they_are_all_there() {
        let limits = HistoryLimits::default();
        let now = 10_000_000;
        let since = Some(Pos {
            epoch: 0xab,
            offset: 3,
        });
        let at = |s: &str| format!("{} {s}", now - 5);
        let (e4, e5) = (at("{\"a\":1}"), at("x y"));
        let read = read_reply(reply(5, 1, &[&e4, &e5]), since, &limits, now).unwrap();
        assert_eq!(read.pos.to_string(), "ab:5");
        let missed = read.missed.unwrap();
        assert_eq!(missed[0], (4, Bytes::from_static(b"{\"a\":1}")));
        assert_eq!(missed[1], (5, Bytes::from_static(b"x y")));
        // One missing, one too old, one of another epoch, one not a message.
        let old = format!("{} old", now - 700_000);
        let other = Some(Pos {
            epoch: 0xac,
            offset: 3,
        });
        for (entries, since) in [
            (vec![e5.clone()], since),
            (vec![e4.clone(), old], since),
            (vec![e4.clone(), e5.clone()], other),
            (vec![e4.clone(), "garbage".to_string()], since),
        ] {
            let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
            let read = read_reply(reply(5, 1, &entries), since, &limits, now).unwrap();
            assert!(read.missed.is_none(), "{entries:?}");
        }
        let read = read_reply(reply(5, 0, &[]), since, &limits, now).unwrap();
        assert!(read.missed.is_none());
        let read = read_reply(reply(3, 1, &[]), since, &limits, now).unwrap();
        assert_eq!(read.missed, Some(Vec::new()));
        // A client ahead of the stream is not recovered.
        let read = read_reply(reply(2, 1, &[]), since, &limits, now).unwrap();
        assert!(read.missed.is_none());
        for bad in [
            Frame::Integer(1),
            Frame::Array(vec![bulk("zz"), Frame::Integer(1)]),
            reply(-1, 1, &[]),
        ] {
            assert!(read_reply(bad, since, &limits, now).is_none());
        }
    }

    #[test]
    fn a_publish_reply_gives_receivers_and_position() {
        let ok = Frame::Array(vec![Frame::Integer(2), bulk("ff"), Frame::Integer(9)]);
        let (n, pos) = published(&ok).unwrap();
        assert_eq!((n, pos.to_string()), (2, "ff:9".to_string()));
        assert!(published(&Frame::Integer(2)).is_none());
    }
}
