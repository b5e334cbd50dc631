//! In a cluster, the messages a connection gets while its streams'
//! positions are read from Redis.
//!
//! A client that just logged in or subscribed is told where each of its
//! streams stands, and sent what it missed, from a read that Redis answers
//! on another connection than the one its live messages come on. Between
//! the subscription and that answer, the live ones are held here with
//! their positions instead of being queued: once the answer is in, those
//! it already covers are dropped and the rest follow it, so that the
//! client sees each message once and in order.

use std::collections::HashMap;

use super::{Pos, StreamKey, StreamName};
use crate::ws::frame::Frame;

struct Holding {
    generation: u32,
    streams: Vec<(StreamName, Vec<(Pos, Frame)>)>,
}

/// Held messages, by connection (slab key and generation).
#[derive(Default)]
pub(super) struct Held {
    conns: HashMap<u32, Holding>,
}

impl Held {
    /// Starts holding `key`'s messages of `stream`.
    pub(super) fn hold(&mut self, key: u32, generation: u32, stream: StreamKey) {
        let holding = self.conns.entry(key).or_insert_with(|| Holding {
            generation,
            streams: Vec::new(),
        });
        if holding.generation != generation {
            // The key's former tenant left without releasing.
            holding.generation = generation;
            holding.streams.clear();
        }
        if !holding.streams.iter().any(|(s, _)| s.key() == stream) {
            holding.streams.push((StreamName::new(stream), Vec::new()));
        }
    }

    /// Holds a message of `stream` at `pos` if `key` holds that stream;
    /// says whether it did.
    pub(super) fn take(&mut self, key: u32, stream: StreamKey, pos: Pos, frame: &Frame) -> bool {
        let Some(holding) = self.conns.get_mut(&key) else {
            return false;
        };
        match holding.streams.iter_mut().find(|(s, _)| s.key() == stream) {
            Some((_, frames)) => {
                frames.push((pos, frame.clone()));
                true
            }
            None => false,
        }
    }

    /// How many messages `key` holds, over all its streams.
    pub(super) fn len(&self, key: u32) -> usize {
        self.conns
            .get(&key)
            .map_or(0, |h| h.streams.iter().map(|(_, f)| f.len()).sum())
    }

    /// The first of the messages held of `stream` that lead, one offset
    /// after another, up to `last`; `None` if `last` itself is not held.
    pub(super) fn run_to(
        &self,
        key: u32,
        generation: u32,
        stream: StreamKey,
        last: Pos,
    ) -> Option<Pos> {
        let holding = self
            .conns
            .get(&key)
            .filter(|h| h.generation == generation)?;
        let (_, frames) = holding.streams.iter().find(|(s, _)| s.key() == stream)?;
        let mut first: Option<Pos> = None;
        for (pos, _) in frames.iter().rev() {
            let next = match first {
                Some(f) => Pos {
                    offset: f.offset.wrapping_sub(1),
                    ..f
                },
                None => last,
            };
            match *pos == next {
                true => first = Some(*pos),
                false if first.is_some() => break,
                // Held past `last`: not in the run.
                false => {}
            }
        }
        first
    }

    /// Stops holding `stream` for `key`, and gives back what was held of it.
    pub(super) fn release(
        &mut self,
        key: u32,
        generation: u32,
        stream: StreamKey,
    ) -> Vec<(Pos, Frame)> {
        let Some(holding) = self.conns.get_mut(&key) else {
            return Vec::new();
        };
        if holding.generation != generation {
            return Vec::new();
        }
        let frames = match holding.streams.iter().position(|(s, _)| s.key() == stream) {
            Some(at) => holding.streams.swap_remove(at).1,
            None => Vec::new(),
        };
        if holding.streams.is_empty() {
            self.conns.remove(&key);
        }
        frames
    }

    /// Whether `key` holds anything: a look-up only while some connection
    /// does, so that a hub with none pays nothing per delivery.
    pub(super) fn holds(&self, key: u32) -> bool {
        !self.conns.is_empty() && self.conns.contains_key(&key)
    }

    /// Forgets everything `key` held (its connection is gone).
    pub(super) fn forget(&mut self, key: u32) {
        if !self.conns.is_empty() {
            self.conns.remove(&key);
        }
    }
}
