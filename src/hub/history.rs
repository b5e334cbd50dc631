//! History: the recent messages of every stream, so that a v1 client that
//! reconnects gets what it missed, in order, with nothing twice.
//!
//! A stream is a uid's personal stream, a channel, or the broadcasts. Each
//! has an epoch and an offset that rises by one per message; a position is
//! both (`"<epoch>:<offset>"`). A stream keeps its last `--history-size`
//! messages, each for `--history-ttl`, as the v1 frame its live receivers got
//! (a shared buffer: keeping it costs no copy). A stream outlives its
//! receivers, so a channel's only subscriber can recover what was published
//! while it was away.
//!
//! One queue in arrival order over every stream's messages enforces the
//! hub-wide byte cap and the TTL: eviction pops its front. A stream whose
//! last message was evicted keeps its epoch and offset (so a client that
//! missed nothing is still told it is recovered) until it is evicted in turn,
//! by the cap, or a TTL after it emptied once nobody receives it any more.
//! A stream that is evicted and comes back gets a new epoch: a client holding
//! a position of the old one is told it was not recovered. Never a silent gap.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::rc::Rc;

use slab::Slab;

use crate::config::HistoryLimits;
use crate::ws::frame::Frame;

/// Which stream: its kind and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKey<'a> {
    Uid(&'a str),
    Channel(&'a str),
    All,
}

/// A stream, owned: what outlives the request that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamName {
    Uid(Rc<str>),
    Channel(Rc<str>),
    All,
}

impl StreamName {
    pub fn new(key: StreamKey) -> StreamName {
        match key {
            StreamKey::Uid(uid) => StreamName::Uid(Rc::from(uid)),
            StreamKey::Channel(ch) => StreamName::Channel(Rc::from(ch)),
            StreamKey::All => StreamName::All,
        }
    }

    pub fn key(&self) -> StreamKey<'_> {
        match self {
            StreamName::Uid(uid) => StreamKey::Uid(uid),
            StreamName::Channel(ch) => StreamKey::Channel(ch),
            StreamName::All => StreamKey::All,
        }
    }
}

/// A stream's kind, kept with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uid,
    Channel,
    All,
}

/// A position in a stream: the epoch, and the offset of a message (0 before
/// the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub epoch: u64,
    pub offset: u64,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{}", self.epoch, self.offset)
    }
}

impl serde::Serialize for Pos {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Pos {
    /// Reads `"<epoch in hex>:<offset>"`, as [`Display`](fmt::Display) writes it.
    pub fn parse(text: &str) -> Option<Pos> {
        let (epoch, offset) = text.split_once(':')?;
        let digits = |s: &str, radix| {
            // from_str_radix takes a sign; a position has none.
            (!s.is_empty() && s.bytes().all(|b| (b as char).is_digit(radix)))
                .then(|| u64::from_str_radix(s, radix).ok())
                .flatten()
        };
        Some(Pos {
            epoch: digits(epoch, 16)?,
            offset: digits(offset, 10)?,
        })
    }
}

/// What a recovery found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Every message after the client's position, in order (none if it
    /// missed nothing).
    Replay(Vec<Frame>),
    /// The gap cannot be filled: another epoch, evicted messages, or more than
    /// one replay may carry.
    Gap,
}

/// Bytes a kept message costs besides its frame: its slot in its stream and
/// its item in the eviction queue.
pub const MESSAGE_OVERHEAD: usize = std::mem::size_of::<Frame>() + ITEM;

/// An item of the eviction queue, counted from its push to its pop.
const ITEM: usize = std::mem::size_of::<Item>();

/// Bytes a stream costs besides its name and messages: its entry, its
/// index entry, and the allocation of its name (shared by both).
const STREAM_OVERHEAD: usize =
    std::mem::size_of::<Stream>() + std::mem::size_of::<(Rc<str>, u32)>() + 32;

struct Stream {
    kind: Kind,
    name: Rc<str>,
    generation: u32,
    epoch: u64,
    /// The offset of the newest message; 0 before the first.
    last: u64,
    /// The kept messages, oldest first: offsets `last - len + 1 ..= last`.
    kept: VecDeque<Frame>,
    /// Whether a tombstone item stands for it in the queue (it is empty).
    tombstoned: bool,
}

impl Stream {
    fn key(&self) -> StreamKey<'_> {
        match self.kind {
            Kind::Uid => StreamKey::Uid(&self.name),
            Kind::Channel => StreamKey::Channel(&self.name),
            Kind::All => StreamKey::All,
        }
    }

    fn first_kept(&self) -> u64 {
        self.last + 1 - self.kept.len() as u64
    }
}

/// One entry of the eviction queue: a message of a stream, or (a
/// tombstone) an emptied stream. An item whose stream or message is gone
/// already is stale, skipped when reached.
#[derive(Debug, Clone, Copy)]
struct Item {
    stream: u32,
    generation: u32,
    /// The message's offset; for a tombstone, the stream's `last` when it
    /// emptied, with [`TOMB`] set (offsets never reach it).
    offset: u64,
    at_ms: u64,
}

/// The bit of `Item::offset` that marks a tombstone: one flag in the
/// offset keeps an item at 24 bytes, paid per kept message.
const TOMB: u64 = 1 << 63;

impl Item {
    fn is_tomb(&self) -> bool {
        self.offset & TOMB != 0
    }

    fn offset(&self) -> u64 {
        self.offset & !TOMB
    }
}

/// A stream about to receive a message: where the message goes.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    stream: u32,
    pub pos: Pos,
}

pub(super) struct History {
    limits: HistoryLimits,
    streams: Slab<Stream>,
    /// The streams by name, one map per kind (looked up without
    /// allocating), and the broadcasts'.
    uids: HashMap<Rc<str>, u32>,
    channels: HashMap<Rc<str>, u32>,
    all: Option<u32>,
    queue: VecDeque<Item>,
    /// Items in `queue` whose message or stream is gone (an estimate that
    /// only decides when to compact).
    stale: usize,
    /// Bytes held: streams, kept frames and queue items.
    bytes: usize,
    /// Messages kept now.
    messages: usize,
    /// Messages evicted by the byte cap, and streams dropped, for stats.
    pub evicted: u64,
    next_generation: u32,
    /// Epochs are this hub's random base plus a count of streams created, so
    /// that no two streams' lives, in this run or another, share one.
    epoch_base: u64,
    streams_created: u64,
}

impl History {
    pub(super) fn new(limits: HistoryLimits, epoch_base: u64) -> History {
        History {
            limits,
            streams: Slab::new(),
            uids: HashMap::new(),
            channels: HashMap::new(),
            all: None,
            queue: VecDeque::new(),
            stale: 0,
            bytes: 0,
            messages: 0,
            evicted: 0,
            next_generation: 0,
            epoch_base,
            streams_created: 0,
        }
    }

    /// Whether streams of this kind keep history (and carry positions).
    pub(super) fn keeps(&self, key: StreamKey) -> bool {
        self.size_of(key) > 0
    }

    fn size_of(&self, key: StreamKey) -> usize {
        match key {
            StreamKey::Uid(_) => self.limits.size_uid,
            StreamKey::Channel(_) => self.limits.size_channel,
            StreamKey::All => self.limits.size_broadcast,
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn messages(&self) -> usize {
        self.messages
    }

    pub(super) fn streams(&self) -> usize {
        self.streams.len()
    }

    /// The stream's slab key, created (empty, with a new epoch) if needed.
    fn stream(&mut self, key: StreamKey, now_ms: u64) -> u32 {
        if let Some(k) = self.find(key) {
            return k;
        }
        self.streams_created += 1;
        // A multiplicative mix: consecutive streams get unrelated epochs.
        let epoch = (self.epoch_base ^ self.streams_created)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let (kind, name): (Kind, Rc<str>) = match key {
            StreamKey::Uid(uid) => (Kind::Uid, Rc::from(uid)),
            StreamKey::Channel(ch) => (Kind::Channel, Rc::from(ch)),
            StreamKey::All => (Kind::All, Rc::from("")),
        };
        self.bytes += STREAM_OVERHEAD + name.len();
        let k = self.streams.insert(Stream {
            kind,
            name: Rc::clone(&name),
            generation,
            epoch,
            last: 0,
            kept: VecDeque::new(),
            tombstoned: false,
        });
        let k = u32::try_from(k).expect("streams within u32 keys");
        match kind {
            Kind::Uid => drop(self.uids.insert(name, k)),
            Kind::Channel => drop(self.channels.insert(name, k)),
            Kind::All => self.all = Some(k),
        }
        self.tombstone(k, now_ms);
        k
    }

    /// The current position of a stream (creating it), for a client to start
    /// from; `None` if its kind keeps no history.
    pub(super) fn position(&mut self, key: StreamKey, now_ms: u64) -> Option<Pos> {
        if !self.keeps(key) {
            return None;
        }
        let k = self.stream(key, now_ms);
        let s = &self.streams[k as usize];
        let pos = Pos {
            epoch: s.epoch,
            offset: s.last,
        };
        // Should the cap evict the stream at once, the client's position
        // is of an epoch that no longer exists: it will not be recovered.
        self.enforce_cap(now_ms);
        Some(pos)
    }

    /// The current position of a stream, if it exists.
    pub(super) fn current(&self, key: StreamKey) -> Option<Pos> {
        let k = self.find(key)?;
        let s = &self.streams[k as usize];
        Some(Pos {
            epoch: s.epoch,
            offset: s.last,
        })
    }

    /// Takes the next position of a stream for a message about to be sent;
    /// `keep` then stores the message. `None` if its kind keeps no history.
    pub(super) fn next(&mut self, key: StreamKey, now_ms: u64) -> Option<Slot> {
        if !self.keeps(key) {
            return None;
        }
        let k = self.stream(key, now_ms);
        Some(self.take_next(k))
    }

    /// [`next`](History::next) for a stream that exists already: `None`
    /// (and nothing to keep) if it does not.
    pub(super) fn next_existing(&mut self, key: StreamKey) -> Option<Slot> {
        let k = self.find(key)?;
        Some(self.take_next(k))
    }

    fn take_next(&mut self, k: u32) -> Slot {
        let s = &mut self.streams[k as usize];
        s.last += 1;
        Slot {
            stream: k,
            pos: Pos {
                epoch: s.epoch,
                offset: s.last,
            },
        }
    }

    /// Keeps the message that took `slot` (the `next` just before):
    /// `frame` is what a v1 client of the stream received live.
    pub(super) fn keep(&mut self, slot: Slot, frame: Frame, now_ms: u64) {
        let size = self.size_of_slot(slot);
        let Some(s) = self.streams.get_mut(slot.stream as usize) else {
            return;
        };
        if s.epoch != slot.pos.epoch || s.last != slot.pos.offset {
            return;
        }
        if s.tombstoned {
            s.tombstoned = false;
            self.stale += 1;
        }
        let mut dropped = (0, 0);
        if entry_cost(&frame) + ITEM > self.limits.memory {
            // Too big to keep at all: what was kept before it no longer
            // leads up to `last`, so it cannot be replayed either.
            dropped = (s.kept.len(), s.kept.iter().map(entry_cost).sum());
            s.kept.clear();
            self.forget(dropped.0, dropped.1);
            self.tombstone(slot.stream, now_ms);
            // The stream's entry, perhaps new, still counts against the cap.
            self.enforce_cap(now_ms);
            return;
        }
        self.bytes += entry_cost(&frame);
        s.kept.push_back(frame);
        let generation = s.generation;
        while s.kept.len() > size {
            if let Some(old) = s.kept.pop_front() {
                dropped.0 += 1;
                dropped.1 += entry_cost(&old);
            }
        }
        self.forget(dropped.0, dropped.1);
        self.messages += 1;
        self.push_item(Item {
            stream: slot.stream,
            generation,
            offset: slot.pos.offset,
            at_ms: now_ms,
        });
        self.enforce_cap(now_ms);
    }

    fn push_item(&mut self, item: Item) {
        self.bytes += ITEM;
        self.queue.push_back(item);
    }

    fn size_of_slot(&self, slot: Slot) -> usize {
        match self.streams.get(slot.stream as usize) {
            Some(s) => self.size_of(s.key()),
            None => 0,
        }
    }

    /// The slab key of a stream, if it exists.
    fn find(&self, key: StreamKey) -> Option<u32> {
        match key {
            StreamKey::Uid(uid) => self.uids.get(uid).copied(),
            StreamKey::Channel(ch) => self.channels.get(ch).copied(),
            StreamKey::All => self.all,
        }
    }

    /// Accounts for `n` messages (of `bytes` in all, items aside) dropped
    /// from their stream while their items stay queued, stale.
    fn forget(&mut self, n: usize, bytes: usize) {
        self.bytes -= bytes;
        self.messages -= n;
        self.stale += n;
    }

    /// Queues a tombstone for stream `k`, now empty, so that it can be evicted.
    fn tombstone(&mut self, k: u32, now_ms: u64) {
        let s = &mut self.streams[k as usize];
        if s.tombstoned || !s.kept.is_empty() {
            return;
        }
        s.tombstoned = true;
        let item = Item {
            stream: k,
            generation: s.generation,
            offset: s.last | TOMB,
            at_ms: now_ms,
        };
        self.push_item(item);
    }

    /// Whether `item` still stands for a kept message or an empty stream.
    fn is_live(&self, item: &Item) -> bool {
        let Some(s) = self.streams.get(item.stream as usize) else {
            return false;
        };
        if s.generation != item.generation {
            return false;
        }
        match item.is_tomb() {
            true => s.tombstoned && s.kept.is_empty() && s.last == item.offset(),
            false => !s.kept.is_empty() && (s.first_kept()..=s.last).contains(&item.offset),
        }
    }

    /// Evicts the oldest until the history fits `--history-memory`.
    fn enforce_cap(&mut self, now_ms: u64) {
        while self.bytes > self.limits.memory {
            let Some(item) = self.queue.pop_front() else {
                break;
            };
            self.evict(item, now_ms, Why::Cap);
        }
        self.compact();
    }

    /// Takes `item`, just popped from the queue, out of the history; a
    /// stream it empties is tombstoned as of `now_ms`.
    fn evict(&mut self, item: Item, now_ms: u64, why: Why) {
        self.bytes -= ITEM;
        if !self.is_live(&item) {
            self.stale = self.stale.saturating_sub(1);
            return;
        }
        if item.is_tomb() {
            let s = self.streams.remove(item.stream as usize);
            match s.kind {
                Kind::Uid => drop(self.uids.remove(&s.name)),
                Kind::Channel => drop(self.channels.remove(&s.name)),
                Kind::All => self.all = None,
            }
            self.bytes -= STREAM_OVERHEAD + s.name.len();
            return;
        }
        let s = &mut self.streams[item.stream as usize];
        if let Some(frame) = s.kept.pop_front() {
            self.bytes -= entry_cost(&frame);
            self.messages -= 1;
            if why == Why::Cap {
                self.evicted += 1;
            }
        }
        self.tombstone(item.stream, now_ms);
    }

    /// Drops what has outlived `--history-ttl`: messages, and streams empty
    /// for that long that `received` says nobody receives any more (a
    /// received one is kept, its tombstone queued again).
    pub(super) fn expire(&mut self, now_ms: u64, mut received: impl FnMut(StreamKey) -> bool) {
        let ttl = u64::try_from(self.limits.ttl.as_millis()).unwrap_or(u64::MAX);
        // Each item is looked at once per call, even those queued again.
        for _ in 0..self.queue.len() {
            let Some(&item) = self.queue.front() else {
                break;
            };
            if now_ms.saturating_sub(item.at_ms) < ttl {
                break;
            }
            self.queue.pop_front();
            if item.is_tomb() && self.is_live(&item) {
                let s = &self.streams[item.stream as usize];
                if received(s.key()) {
                    self.queue.push_back(Item {
                        at_ms: now_ms,
                        ..item
                    });
                    continue;
                }
            }
            self.evict(item, now_ms, Why::Ttl);
        }
        self.compact();
    }

    /// Rebuilds the queue without its stale items once they outnumber the
    /// live ones, so that a busy stream with a short window does not fill the
    /// queue with items of messages it trimmed long ago.
    fn compact(&mut self) {
        if self.stale <= 1024 || self.stale <= self.queue.len() / 2 {
            return;
        }
        let mut queue = std::mem::take(&mut self.queue);
        let before = queue.len();
        queue.retain(|item| self.is_live(item));
        self.bytes -= (before - queue.len()) * ITEM;
        self.stale = 0;
        self.queue = queue;
    }

    /// What a client that last saw `since` missed in a stream, to replay: at
    /// most `max_messages` and `max_bytes` (the room left in its queue, within
    /// the replay bounds).
    pub(super) fn recover(
        &self,
        key: StreamKey,
        since: Pos,
        max_messages: usize,
        max_bytes: usize,
    ) -> Recovery {
        let Some(k) = self.find(key) else {
            return Recovery::Gap;
        };
        let s = &self.streams[k as usize];
        if s.epoch != since.epoch || since.offset > s.last {
            return Recovery::Gap;
        }
        let missed = s.last - since.offset;
        if missed == 0 {
            return Recovery::Replay(Vec::new());
        }
        if missed > s.kept.len() as u64 || missed > max_messages as u64 {
            return Recovery::Gap;
        }
        let from = s.kept.len() - missed as usize;
        let mut bytes = 0;
        let mut frames = Vec::with_capacity(missed as usize);
        for frame in s.kept.range(from..) {
            bytes += frame.len();
            if bytes > max_bytes {
                return Recovery::Gap;
            }
            frames.push(frame.clone());
        }
        Recovery::Replay(frames)
    }
}

/// Why an item leaves the eviction queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Cap,
    Ttl,
}

/// What a kept frame costs in its stream, its queue item aside.
fn entry_cost(frame: &Frame) -> usize {
    frame.len() + std::mem::size_of::<Frame>()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(size: usize, memory: usize) -> HistoryLimits {
        HistoryLimits {
            size_uid: size,
            size_channel: size,
            size_broadcast: size,
            ttl: Duration::from_secs(10),
            memory,
            replay_messages: 100,
            replay_bytes: 1 << 20,
        }
    }

    fn send(h: &mut History, key: StreamKey, text: &str, now_ms: u64) -> Pos {
        let slot = h.next(key, now_ms).unwrap();
        h.keep(slot, Frame::text(text), now_ms);
        slot.pos
    }

    fn replayed(h: &History, key: StreamKey, since: Pos) -> Option<Vec<Frame>> {
        match h.recover(key, since, 100, 1 << 20) {
            Recovery::Replay(frames) => Some(frames),
            Recovery::Gap => None,
        }
    }

    #[test]
    fn a_kept_message_costs_56_bytes_besides_its_frame() {
        assert_eq!(MESSAGE_OVERHEAD, 56);
    }

    #[test]
    fn positions_round_trip_as_text() {
        let pos = Pos {
            epoch: 0xdead_beef_0042,
            offset: 17,
        };
        assert_eq!(pos.to_string(), "deadbeef0042:17");
        assert_eq!(Pos::parse("deadbeef0042:17"), Some(pos));
        for bad in [
            "", ":", "1:", ":1", "x:1", "1:x", "1:-1", "+1:1", "1:2:3", "1 :2",
        ] {
            assert_eq!(Pos::parse(bad), None, "{bad}");
        }
        assert_eq!(Pos::parse("ffffffffffffffff0:1"), None, "epoch overflows");
    }

    #[test]
    fn offsets_rise_by_one_per_stream_and_replay_what_was_missed() {
        let mut h = History::new(limits(10, 1 << 20), 7);
        let a = StreamKey::Uid("a");
        let room = StreamKey::Channel("a");
        let start = h.position(a, 0).unwrap();
        assert_eq!(start.offset, 0);
        let p1 = send(&mut h, a, "1", 0);
        send(&mut h, room, "other stream", 0);
        let p2 = send(&mut h, a, "2", 0);
        let p3 = send(&mut h, a, "3", 0);
        assert_eq!((p1.offset, p2.offset, p3.offset), (1, 2, 3));
        assert_eq!(p1.epoch, start.epoch);
        assert_ne!(h.position(room, 0).unwrap().epoch, start.epoch);
        assert_eq!(
            replayed(&h, a, p1),
            Some(vec![Frame::text("2"), Frame::text("3")])
        );
        assert_eq!(replayed(&h, a, start).unwrap().len(), 3);
        assert_eq!(replayed(&h, a, p3), Some(vec![]));
        // A position from the future, or of another epoch: a gap.
        let ahead = Pos { offset: 4, ..p3 };
        assert_eq!(replayed(&h, a, ahead), None);
        let other = Pos {
            epoch: p3.epoch ^ 1,
            ..p3
        };
        assert_eq!(replayed(&h, a, other), None);
        assert_eq!(replayed(&h, StreamKey::Uid("nobody"), p3), None);
    }

    #[test]
    fn the_window_and_the_replay_bounds() {
        let mut h = History::new(limits(3, 1 << 20), 7);
        let ch = StreamKey::Channel("news");
        let start = h.position(ch, 0).unwrap();
        let pos: Vec<Pos> = (1..=5)
            .map(|i| send(&mut h, ch, &i.to_string(), 0))
            .collect();
        assert_eq!(h.messages(), 3);
        // Messages 1 and 2 are out of the window.
        assert_eq!(replayed(&h, ch, start), None);
        assert_eq!(replayed(&h, ch, pos[0]), None);
        assert_eq!(replayed(&h, ch, pos[1]).unwrap().len(), 3);
        assert_eq!(h.recover(ch, pos[1], 2, 1 << 20), Recovery::Gap);
        let three_frames = 3 * Frame::text("5").len();
        assert_eq!(h.recover(ch, pos[1], 3, three_frames - 1), Recovery::Gap);
        assert!(matches!(
            h.recover(ch, pos[1], 3, three_frames),
            Recovery::Replay(f) if f.len() == 3
        ));
    }

    #[test]
    fn the_byte_cap_evicts_the_oldest_of_any_stream() {
        let frame_cost = Frame::text("xxxxxxxx").len() + MESSAGE_OVERHEAD;
        // Room for the streams and about ten messages.
        let cap = 2 * (STREAM_OVERHEAD + 2) + 10 * frame_cost;
        let mut h = History::new(limits(100, cap), 7);
        let (a, b) = (StreamKey::Uid("a"), StreamKey::Uid("b"));
        let first_a = send(&mut h, a, "xxxxxxxx", 0);
        for _ in 0..11 {
            send(&mut h, b, "xxxxxxxx", 0);
        }
        assert!(h.bytes() <= cap, "{} > {cap}", h.bytes());
        // a's only message was the oldest: gone, but a's position lives on.
        let start_a = Pos {
            offset: 0,
            ..first_a
        };
        assert_eq!(replayed(&h, a, start_a), None);
        assert_eq!(replayed(&h, a, first_a), Some(vec![]));
        assert!(h.evicted > 0);
        assert!(h.messages() < 11);
        // Enough churn evicts the emptied stream itself: a new epoch.
        for _ in 0..100 {
            send(&mut h, b, "xxxxxxxx", 0);
        }
        assert_ne!(h.position(a, 0).unwrap().epoch, first_a.epoch);
        assert!(h.bytes() <= cap);
    }

    #[test]
    fn a_message_larger_than_the_cap_is_not_kept_and_breaks_recovery_across_it() {
        let mut h = History::new(limits(100, 4096), 7);
        let a = StreamKey::Uid("a");
        let p1 = send(&mut h, a, "small", 0);
        send(&mut h, a, &"x".repeat(5000), 0);
        let p3 = send(&mut h, a, "small again", 0);
        assert_eq!(replayed(&h, a, p1), None);
        assert_eq!(replayed(&h, a, Pos { offset: 2, ..p3 }).unwrap().len(), 1);
    }

    #[test]
    fn a_message_larger_than_the_cap_to_a_new_stream_keeps_the_cap() {
        let cap = 4096;
        let mut h = History::new(limits(100, cap), 7);
        let a = StreamKey::Uid("a");
        // Filled to the brim by small messages.
        while h.bytes() + Frame::text("small").len() + MESSAGE_OVERHEAD <= cap {
            send(&mut h, a, "small", 0);
        }
        // A new stream costs its entry even when its message is not kept.
        send(&mut h, StreamKey::Uid("new"), &"x".repeat(5000), 0);
        assert!(h.bytes() <= cap, "{} > {cap}", h.bytes());
    }

    #[test]
    fn ttl_expires_messages_then_streams_nobody_receives() {
        let mut h = History::new(limits(100, 1 << 20), 7);
        let (a, b) = (StreamKey::Channel("a"), StreamKey::Channel("b"));
        let pa = send(&mut h, a, "1", 1000);
        let pb = send(&mut h, b, "1", 1000);
        let pb2 = send(&mut h, b, "2", 6000);
        h.expire(10_999, |_| false);
        assert_eq!(h.messages(), 3);
        h.expire(11_000, |_| false);
        assert_eq!(h.messages(), 1);
        assert_eq!(replayed(&h, a, Pos { offset: 0, ..pa }), None);
        // Nothing missed since: still recovered.
        assert_eq!(replayed(&h, a, pa), Some(vec![]));
        assert_eq!(replayed(&h, b, pb).unwrap().len(), 1);
        // Ten seconds after it emptied, a stream nobody receives is gone;
        // one that is still received stays.
        h.expire(21_000, |key| key == b);
        assert_eq!(replayed(&h, a, pa), None);
        h.expire(40_000, |key| key == b);
        assert_eq!(replayed(&h, b, pb2), Some(vec![]));
        assert_eq!(h.streams(), 1);
        h.expire(60_000, |_| false);
        assert_eq!((h.streams(), h.messages(), h.bytes()), (0, 0, 0));
    }

    #[test]
    fn stale_items_are_compacted_and_the_accounting_returns_to_zero() {
        let mut h = History::new(limits(2, 1 << 30), 7);
        let a = StreamKey::All;
        for i in 0..10_000 {
            send(&mut h, a, "m", i);
        }
        assert_eq!(h.messages(), 2);
        assert!(h.queue.len() < 5000, "{} items queued", h.queue.len());
        // The messages expire, then, a TTL later, the emptied stream.
        h.expire(1_000_000, |_| false);
        assert_eq!((h.streams(), h.messages()), (1, 0));
        h.expire(2_000_000, |_| false);
        assert_eq!((h.streams(), h.messages(), h.bytes()), (0, 0, 0));
        assert!(h.queue.is_empty());
    }

    #[test]
    fn no_history_no_positions() {
        let mut h = History::new(limits(0, 1 << 20), 7);
        assert_eq!(h.next(StreamKey::Uid("a"), 0).map(|s| s.pos), None);
        assert_eq!(h.position(StreamKey::All, 0), None);
        assert_eq!(h.streams(), 0);
    }
}
