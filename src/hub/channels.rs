//! Channels: which connections listen to which names.
//!
//! A channel is a slab entry holding its name and its members (connection
//! keys); each connection holds its subscriptions (channel keys). Every entry
//! on either side also records where its counterpart sits on the other side,
//! so that subscribing, unsubscribing and closing a connection cost
//! O(subscriptions of that connection), whatever the size of the channels:
//! a removal swaps the last entry into the hole and fixes that entry's
//! counterpart. A channel exists while it has members; its memory goes with
//! the last of them.

use std::collections::HashMap;
use std::rc::Rc;

use slab::Slab;

use super::Conn;
use super::routes::RouteLog;

/// A member of a channel: a connection, and the index of this subscription in
/// that connection's list.
#[derive(Debug, Clone, Copy)]
struct Member {
    key: u32,
    slot: u32,
}

/// One of a connection's subscriptions: a channel, and the index of this
/// connection in that channel's members.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sub {
    ch: u32,
    pos: u32,
}

struct Channel {
    name: Rc<str>,
    members: Vec<Member>,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The connection is at `--max-subscriptions-per-connection`.
    TooManySubscriptions,
    /// The hub is at `--max-channels` and this would be a new one.
    TooManyChannels,
}

impl SubscribeError {
    /// A short name for counting refusals by reason.
    pub fn kind(self) -> &'static str {
        match self {
            SubscribeError::TooManySubscriptions => "too_many_subscriptions",
            SubscribeError::TooManyChannels => "too_many_channels",
        }
    }
}

impl std::fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SubscribeError::TooManySubscriptions => {
                "too many subscriptions on this connection (--max-subscriptions-per-connection)"
            }
            SubscribeError::TooManyChannels => "too many channels on this hub (--max-channels)",
        })
    }
}

impl std::error::Error for SubscribeError {}

pub(super) struct Channels {
    slab: Slab<Channel>,
    index: HashMap<Rc<str>, u32>,
    /// Subscriptions in all, for stats.
    n_subscriptions: usize,
    /// `--max-subscriptions-per-connection` and `--max-channels`.
    max_per_conn: usize,
    max_channels: usize,
}

impl Channels {
    pub(super) fn new(max_per_conn: usize, max_channels: usize) -> Channels {
        Channels {
            slab: Slab::new(),
            index: HashMap::new(),
            n_subscriptions: 0,
            max_per_conn,
            max_channels,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(super) fn subscriptions(&self) -> usize {
        self.n_subscriptions
    }

    /// The slab key of channel `name`, if it has members.
    pub(super) fn find(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// The connection at `pos` in channel `ch`, if there is one.
    pub(super) fn member(&self, ch: u32, pos: usize) -> Option<u32> {
        self.slab.get(ch as usize)?.members.get(pos).map(|m| m.key)
    }

    /// Every channel whose name starts with `prefix`, with its member count.
    pub(super) fn list(&self, prefix: &str) -> Vec<(Rc<str>, usize)> {
        let mut list: Vec<(Rc<str>, usize)> = self
            .slab
            .iter()
            .filter(|(_, c)| c.name.starts_with(prefix))
            .map(|(_, c)| (Rc::clone(&c.name), c.members.len()))
            .collect();
        list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// The connection keys of channel `ch`'s members.
    pub(super) fn members(&self, ch: u32) -> impl Iterator<Item = u32> + '_ {
        self.slab[ch as usize].members.iter().map(|m| m.key)
    }

    /// Subscribes connection `key` to `name`: `Ok(true)` if it was not yet
    /// subscribed, `Ok(false)` if it was.
    pub(super) fn subscribe(
        &mut self,
        conns: &mut Slab<Conn>,
        routes: &mut Option<RouteLog>,
        key: u32,
        name: &str,
    ) -> Result<bool, SubscribeError> {
        let conn = &conns[key as usize];
        let subs = conn.subs.as_deref().map_or(&[][..], Vec::as_slice);
        if subs.iter().any(|s| *self.slab[s.ch as usize].name == *name) {
            return Ok(false);
        }
        if subs.len() >= self.max_per_conn {
            return Err(SubscribeError::TooManySubscriptions);
        }
        let ch = match self.index.get(name) {
            Some(&ch) => ch,
            None if self.slab.len() >= self.max_channels => {
                return Err(SubscribeError::TooManyChannels);
            }
            None => {
                let name: Rc<str> = Rc::from(name);
                let ch = self.slab.insert(Channel {
                    name: Rc::clone(&name),
                    members: Vec::new(),
                });
                // Below `max_channels`, which the configuration keeps within
                // u32 (so are the per-connection lists, by the same rule).
                let ch = u32::try_from(ch).expect("channel table within u32 keys");
                if let Some(routes) = routes {
                    routes.note(true, &name, true);
                }
                self.index.insert(name, ch);
                ch
            }
        };
        // Room for one to start with: many connections join a single channel,
        // and a `Vec`'s first growth would reserve four.
        let subs = conns[key as usize]
            .subs
            .get_or_insert_with(|| Box::new(Vec::with_capacity(1)));
        let members = &mut self.slab[ch as usize].members;
        // Both lists are bounded by u32 keys: members by the connection
        // table, subscriptions by the per-connection limit.
        let pos = members.len() as u32;
        let slot = subs.len() as u32;
        members.push(Member { key, slot });
        subs.push(Sub { ch, pos });
        self.n_subscriptions += 1;
        Ok(true)
    }

    /// Unsubscribes connection `key` from `name`; false if it was not subscribed.
    pub(super) fn unsubscribe(
        &mut self,
        conns: &mut Slab<Conn>,
        routes: &mut Option<RouteLog>,
        key: u32,
        name: &str,
    ) -> bool {
        let Some(&ch) = self.index.get(name) else {
            return false;
        };
        let slot = conns[key as usize]
            .subs
            .as_deref()
            .and_then(|subs| subs.iter().position(|s| s.ch == ch));
        match slot {
            Some(slot) => {
                self.remove_at(conns, routes, key, slot);
                true
            }
            None => false,
        }
    }

    /// Drops every subscription of connection `key` (it is closing).
    pub(super) fn unsubscribe_all(
        &mut self,
        conns: &mut Slab<Conn>,
        routes: &mut Option<RouteLog>,
        key: u32,
    ) {
        while let Some(n) = conns[key as usize].subs.as_deref().map(Vec::len) {
            if n == 0 {
                break;
            }
            // From the end: no other subscription of this connection moves.
            self.remove_at(conns, routes, key, n - 1);
        }
        conns[key as usize].subs = None;
    }

    /// The names connection `key` is subscribed to, in subscription order.
    pub(super) fn of(&self, conns: &Slab<Conn>, key: u32) -> Vec<Rc<str>> {
        conns[key as usize]
            .subs
            .as_deref()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|s| Rc::clone(&self.slab[s.ch as usize].name))
            .collect()
    }

    /// Removes subscription `slot` of connection `key`, on both sides.
    fn remove_at(
        &mut self,
        conns: &mut Slab<Conn>,
        routes: &mut Option<RouteLog>,
        key: u32,
        slot: usize,
    ) {
        let subs = conns[key as usize]
            .subs
            .as_deref_mut()
            .expect("a subscription being removed exists");
        let Sub { ch, pos } = subs.swap_remove(slot);
        if let Some(&moved) = subs.get(slot) {
            self.slab[moved.ch as usize].members[moved.pos as usize].slot = slot as u32;
        }
        if subs.is_empty() {
            // An idle connection without subscriptions holds no allocation.
            conns[key as usize].subs = None;
        }
        let channel = &mut self.slab[ch as usize];
        channel.members.swap_remove(pos as usize);
        if let Some(&moved) = channel.members.get(pos as usize) {
            let subs = conns[moved.key as usize]
                .subs
                .as_deref_mut()
                .expect("a member has its subscription");
            subs[moved.slot as usize].pos = pos;
        }
        if channel.members.is_empty() {
            let channel = self.slab.remove(ch as usize);
            self.index.remove(&channel.name);
            if let Some(routes) = routes {
                routes.note(true, &channel.name, false);
            }
        } else if channel.members.capacity() > 4 * channel.members.len() {
            // A channel that emptied out after a crowd left gives back
            // most of its memory.
            channel.members.shrink_to(2 * channel.members.len());
        }
        self.n_subscriptions -= 1;
    }
}
