//! Streams' positions and history in Redis, so that a client recovers on
//! any hub what it missed on another.
//!
//! A stream (a uid's, a channel's, the broadcasts') has two keys beside
//! its route, under the route's hash tag so that Redis Cluster keeps them
//! on the route's shard: `ROUTE:s`, a hash of its epoch `e` and its last
//! offset `o`, and `ROUTE:l`, a list of its last messages, each
//! `"<ms> <offset> <line>"` (the backend's line as it came, which every
//! hub turns into frames with the text port's own parser). Both expire
//! `--history-ttl` after their stream was last written or read.
//!
//! Two scripts, run by `EVALSHA`, do what must not interleave with
//! another hub's: `PUBLISH` takes the next offset, keeps the message and
//! publishes it with its position in one step, so every hub delivers it
//! with the same position and in the same order; `READ` says where a
//! stream stands and, when asked and still kept, what came after a
//! client's position.

use bytes::{Bytes, BytesMut};

use super::redis::resp::{self, Frame};
use crate::config::HistoryLimits;
use crate::hub::{Pos, StreamKey};

/// KEYS: state, list. ARGV: route, message header, line, size, TTL in ms,
/// the epoch to start with, the publishing command (`SPUBLISH` in a Redis
/// Cluster, where the route is on the keys' shard). Returns {receivers,
/// epoch, offset}.
const PUBLISH: &str = r"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[6]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
end
local o = redis.call('HINCRBY', KEYS[1], 'o', 1)
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('RPUSH', KEYS[2], string.format('%d %d ', ms, o) .. ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local n = redis.call(ARGV[7], ARGV[1], ARGV[2] .. ' ' .. e .. ':' .. o .. '\n' .. ARGV[3])
return {n, e, o}
";

/// KEYS: state, list. ARGV: the client's epoch ('' for none) and offset,
/// the epoch to start with, TTL in ms, the most messages and bytes to
/// return. Returns {epoch, offset, now in ms, 1 and the messages after
/// the client's offset | 0 if they cannot all be returned}.
const READ: &str = r"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[3]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local o = tonumber(redis.call('HGET', KEYS[1], 'o'))
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local since = tonumber(ARGV[2])
local missed = o - since
if ARGV[1] ~= e or missed < 0 or missed > tonumber(ARGV[5]) then
  return {e, o, now, 0}
end
local reply = {e, o, now, 1}
if missed == 0 then
  return reply
end
local bytes = 0
for _, m in ipairs(redis.call('LRANGE', KEYS[2], -missed, -1)) do
  bytes = bytes + #m
  if bytes > tonumber(ARGV[6]) then
    return {e, o, now, 0}
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

    /// Publishes a message as the next of its route's stream.
    pub fn publish(&self, out: &mut BytesMut, message: &Publish, limits: &HistoryLimits) {
        let (state, list) = keys(message.route);
        let size = message.size.to_string();
        let ttl = ttl_ms(limits);
        let epoch = format!("{:x}", message.epoch);
        resp::command(
            out,
            &[
                b"EVALSHA",
                self.publish.as_bytes(),
                b"2",
                &state,
                &list,
                message.route,
                message.head,
                message.line,
                size.as_bytes(),
                ttl.as_bytes(),
                epoch.as_bytes(),
                message.command,
            ],
        );
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
        let ttl = ttl_ms(limits);
        let epoch = format!("{epoch:x}");
        let most = size.min(limits.replay_messages).to_string();
        let bytes = limits.replay_bytes.to_string();
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
                ttl.as_bytes(),
                most.as_bytes(),
                bytes.as_bytes(),
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

fn ttl_ms(limits: &HistoryLimits) -> String {
    limits.ttl.as_millis().max(1).to_string()
}

fn sha1_hex(script: &str) -> String {
    openssl::sha::sha1(script.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The position a `PUBLISH` script's reply gave the message, and how many
/// hubs received it.
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

/// Reads a `READ` script's reply, checked: the messages must follow the
/// client's position one by one up to the stream's, none older than the
/// TTL. `None` if the reply is not one.
pub fn read_reply(reply: Frame, since: Option<Pos>, limits: &HistoryLimits) -> Option<StreamRead> {
    let Frame::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    let e = items.next()?;
    let (Some(Frame::Integer(o)), Some(Frame::Integer(now)), Some(Frame::Integer(ok))) =
        (items.next(), items.next(), items.next())
    else {
        return None;
    };
    let pos = Pos {
        epoch: epoch(&e)?,
        offset: u64::try_from(o).ok()?,
    };
    let oldest = u64::try_from(now)
        .ok()?
        .saturating_sub(u64::try_from(limits.ttl.as_millis()).unwrap_or(u64::MAX));
    let missed = match (since, ok) {
        (Some(since), 1) if since.epoch == pos.epoch => {
            let mut missed = Vec::new();
            let mut next = since.offset + 1;
            let mut whole = true;
            for item in items {
                match resp::bytes(&item).and_then(|b| entry(b, oldest)) {
                    Some((offset, line)) if offset == next => {
                        missed.push((offset, line));
                        next += 1;
                    }
                    _ => {
                        whole = false;
                        break;
                    }
                }
            }
            (whole && next == pos.offset + 1).then_some(missed)
        }
        _ => None,
    };
    Some(StreamRead { pos, missed })
}

/// One kept message, `"<ms> <offset> <line>"`, if it is younger than
/// `oldest` (in ms).
fn entry(item: &Bytes, oldest: u64) -> Option<(u64, Bytes)> {
    let mut at = 0;
    let mut field = || -> Option<u64> {
        let rest = &item[at..];
        let end = rest.iter().position(|&b| b == b' ')?;
        at += end + 1;
        std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
    };
    let ms = field()?;
    let offset = field()?;
    (ms >= oldest).then(|| (offset, item.slice(at..)))
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

    fn reply(o: i64, now: i64, ok: i64, entries: &[&str]) -> Frame {
        let mut items = vec![
            bulk("ab"),
            Frame::Integer(o),
            Frame::Integer(now),
            Frame::Integer(ok),
        ];
        items.extend(entries.iter().map(|e| bulk(e)));
        Frame::Array(items)
    }

    #[test]
    fn a_read_gives_the_missed_messages_only_when_they_follow_on() {
        let limits = HistoryLimits::default();
        let now = 10_000_000;
        let since = Some(Pos {
            epoch: 0xab,
            offset: 3,
        });
        let at = |s: &str| format!("{} {s}", now - 5);
        let (e4, e5) = (at("4 {\"a\":1}"), at("5 x y"));
        let read = read_reply(reply(5, now, 1, &[&e4, &e5]), since, &limits).unwrap();
        assert_eq!(read.pos.to_string(), "ab:5");
        let missed = read.missed.unwrap();
        assert_eq!(missed[0], (4, Bytes::from_static(b"{\"a\":1}")));
        assert_eq!(missed[1], (5, Bytes::from_static(b"x y")));
        // One missing, one out of order, one too old, one of another epoch.
        for (entries, since) in [
            (vec![e5.clone()], since),
            (vec![e5.clone(), e4.clone()], since),
            (vec![e4.clone(), "1 5 old".to_string()], since),
            (
                vec![e4.clone(), e5.clone()],
                Some(Pos {
                    epoch: 0xac,
                    offset: 3,
                }),
            ),
        ] {
            let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
            let read = read_reply(reply(5, now, 1, &entries), since, &limits).unwrap();
            assert!(read.missed.is_none(), "{entries:?}");
        }
        let read = read_reply(reply(5, now, 0, &[]), since, &limits).unwrap();
        assert!(read.missed.is_none());
        let read = read_reply(reply(3, now, 1, &[]), since, &limits).unwrap();
        assert_eq!(read.missed, Some(Vec::new()));
        for bad in [
            Frame::Integer(1),
            Frame::Array(vec![bulk("zz"), Frame::Integer(1)]),
            reply(-1, now, 1, &[]),
        ] {
            assert!(read_reply(bad, since, &limits).is_none());
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
