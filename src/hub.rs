//! The connection table: a slab of connections, a uid index over it, and each
//! connection's bounded outbound queue.
//!
//! The hub never awaits and never touches a socket. Fan-out appends a shared
//! payload to each receiver's queue and wakes its task; each connection task
//! drains its own queue. So a push costs the hub O(receivers) queue appends,
//! whatever the peers are doing.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Utf8Bytes;
use slab::Slab;

use crate::config::Config;
use crate::metrics::{Counters, Live, Stats};

/// One message's text, shared by every connection it is queued for.
pub type Payload = Utf8Bytes;

/// Marks the end of a uid's chain of connections.
const NIL: u32 = u32::MAX;

/// A connection's handle: its slab key plus a generation, because slab keys are
/// reused and a stale handle must not reach the connection that took its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    key: u32,
    generation: u64,
}

/// Why the hub wants a connection closed; each maps to a WebSocket close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Kicked,
    SlowConsumer,
    AuthTimeout,
    IdleTimeout,
    Shutdown,
}

/// What a connection's task should do next, as decided by the hub.
#[derive(Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Send these messages (possibly none), and a ping first if `ping`.
    Send {
        ping: bool,
    },
    Close(CloseReason),
    /// The connection is no longer in the table.
    Gone,
}

struct Conn {
    generation: u64,
    /// Set once authenticated; shares its allocation with the uid index key.
    uid: Option<Rc<str>>,
    /// Neighbours in the uid's chain of connections (slab keys).
    prev: u32,
    next: u32,
    queue: VecDeque<Payload>,
    queued_bytes: usize,
    waker: Option<Waker>,
    opened_ms: u64,
    last_seen_ms: u64,
    ping_due: bool,
    pinged: bool,
    close: Option<CloseReason>,
}

impl Conn {
    fn wake(&mut self) {
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }

    fn is_live(&self) -> bool {
        self.uid.is_some() && self.close.is_none()
    }
}

/// Limits the hub enforces, copied out of [`Config`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_queue_messages: usize,
    pub max_queue_bytes: usize,
    pub auth_timeout_ms: u64,
    pub ping_interval_ms: u64,
    pub idle_timeout_ms: u64,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Limits {
            max_queue_messages: config.max_queue_messages,
            max_queue_bytes: config.max_queue_bytes,
            auth_timeout_ms: ms(config.auth_timeout),
            ping_interval_ms: ms(config.ping_interval),
            idle_timeout_ms: ms(config.idle_timeout),
        }
    }
}

pub struct Hub {
    conns: Slab<Conn>,
    /// Each online uid's most recent connection; the rest follow through `next`.
    uids: HashMap<Rc<str>, u32>,
    n_authenticated: usize,
    next_generation: u64,
    limits: Limits,
    started: Instant,
    pub counters: Counters,
}

impl Hub {
    pub fn new(limits: Limits) -> Hub {
        Hub {
            conns: Slab::new(),
            uids: HashMap::new(),
            n_authenticated: 0,
            next_generation: 0,
            limits,
            started: Instant::now(),
            counters: Counters::default(),
        }
    }

    /// Milliseconds since the hub started: the clock of every deadline.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Adds a connection that has completed its WebSocket handshake but not yet
    /// authenticated.
    pub fn open(&mut self, now_ms: u64) -> ConnId {
        let generation = self.next_generation;
        self.next_generation += 1;
        let key = self.conns.insert(Conn {
            generation,
            uid: None,
            prev: NIL,
            next: NIL,
            queue: VecDeque::new(),
            queued_bytes: 0,
            waker: None,
            opened_ms: now_ms,
            last_seen_ms: now_ms,
            ping_due: false,
            pinged: false,
            close: None,
        });
        // Slab keys stay below the connection limit, which the accept loop keeps
        // far under u32::MAX (it is bounded by the open-files limit).
        let key = u32::try_from(key).expect("connection table within u32 keys");
        ConnId { key, generation }
    }

    fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns
            .get(id.key as usize)
            .filter(|c| c.generation == id.generation)
    }

    fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.key as usize)
            .filter(|c| c.generation == id.generation)
    }

    /// Binds an open connection to `uid`, making it reachable by pushes at once.
    /// Returns false if the connection is gone or closing.
    pub fn bind(&mut self, id: ConnId, uid: &str) -> bool {
        match self.get(id) {
            Some(c) if c.uid.is_none() && c.close.is_none() => {}
            _ => return false,
        }
        let key = id.key;
        let (uid, head) = match self.uids.get_key_value(uid) {
            Some((shared, &head)) => (Rc::clone(shared), head),
            None => (Rc::from(uid), NIL),
        };
        if head != NIL {
            self.conns[head as usize].prev = key;
        }
        let conn = &mut self.conns[key as usize];
        conn.next = head;
        conn.prev = NIL;
        conn.uid = Some(Rc::clone(&uid));
        self.uids.insert(uid, key);
        self.n_authenticated += 1;
        true
    }

    /// Takes a connection out of its uid's chain, so that it is offline at once.
    fn unlink(&mut self, key: u32) {
        let conn = &mut self.conns[key as usize];
        let Some(uid) = conn.uid.take() else { return };
        let (prev, next) = (conn.prev, conn.next);
        conn.prev = NIL;
        conn.next = NIL;
        if prev != NIL {
            self.conns[prev as usize].next = next;
        } else if next != NIL {
            if let Some(head) = self.uids.get_mut(&uid) {
                *head = next;
            }
        } else {
            self.uids.remove(&uid);
        }
        if next != NIL {
            self.conns[next as usize].prev = prev;
        }
        self.n_authenticated -= 1;
    }

    /// Forgets a connection whose task has ended.
    pub fn remove(&mut self, id: ConnId) {
        if self.get(id).is_some() {
            self.unlink(id.key);
            self.conns.remove(id.key as usize);
        }
    }

    /// Marks a connection for closing: it leaves the uid index now, and its task
    /// sends the close frame when it next runs.
    pub fn close(&mut self, id: ConnId, reason: CloseReason) {
        if self.get(id).is_some_and(|c| c.close.is_none()) {
            self.close_key(id.key, reason);
        }
    }

    fn close_key(&mut self, key: u32, reason: CloseReason) {
        self.unlink(key);
        let conn = &mut self.conns[key as usize];
        conn.close = Some(reason);
        conn.queue = VecDeque::new();
        conn.queued_bytes = 0;
        conn.wake();
    }

    /// Records inbound traffic: the peer is alive.
    pub fn touch(&mut self, id: ConnId, now_ms: u64) {
        if let Some(conn) = self.get_mut(id) {
            conn.last_seen_ms = now_ms;
            conn.pinged = false;
        }
    }

    /// Remembers the waker of a connection's task, for fan-out to wake it.
    pub fn set_waker(&mut self, id: ConnId, waker: &Waker) {
        if let Some(conn) = self.get_mut(id) {
            match &conn.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => conn.waker = Some(waker.clone()),
            }
        }
    }

    /// Appends `payload` to one connection's queue, closing it as a slow consumer
    /// if the queue is over its bounds. Returns whether the message was queued.
    fn enqueue(&mut self, key: u32, payload: &Payload) -> bool {
        let limits = self.limits;
        let conn = &mut self.conns[key as usize];
        let len = payload.len();
        // An empty queue takes any message: a message larger than the byte bound
        // must not condemn every receiver.
        let over = !conn.queue.is_empty()
            && (conn.queue.len() >= limits.max_queue_messages
                || conn.queued_bytes + len > limits.max_queue_bytes);
        if over {
            self.counters.dropped += 1;
            self.close_key(key, CloseReason::SlowConsumer);
            return false;
        }
        if conn.queue.is_empty() {
            conn.wake();
        }
        conn.queue.push_back(payload.clone());
        conn.queued_bytes += len;
        self.counters.delivered += 1;
        true
    }

    /// Queues `payload` for every connection of `uid`; returns how many took it.
    pub fn push(&mut self, uid: &str, payload: &Payload) -> usize {
        let mut key = self.uids.get(uid).copied().unwrap_or(NIL);
        let mut n = 0;
        while key != NIL {
            // Read the successor first: enqueue may unlink this connection.
            let next = self.conns[key as usize].next;
            n += usize::from(self.enqueue(key, payload));
            key = next;
        }
        n
    }

    /// Queues `payload` for every authenticated connection; returns how many took it.
    pub fn broadcast(&mut self, payload: &Payload) -> usize {
        let mut n = 0;
        for key in 0..self.conns.capacity() {
            if self.conns.get(key).is_some_and(Conn::is_live) {
                n += usize::from(self.enqueue(key as u32, payload));
            }
        }
        n
    }

    /// Whether `uid` has at least one connection.
    pub fn is_online(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    /// How many connections `uid` has open.
    pub fn connections_of(&self, uid: &str) -> usize {
        let mut key = self.uids.get(uid).copied().unwrap_or(NIL);
        let mut n = 0;
        while key != NIL {
            n += 1;
            key = self.conns[key as usize].next;
        }
        n
    }

    /// Closes every connection of `uid`; returns how many.
    pub fn kick(&mut self, uid: &str) -> usize {
        let mut n = 0;
        while let Some(&key) = self.uids.get(uid) {
            self.close_key(key, CloseReason::Kicked);
            n += 1;
        }
        self.counters.kicked += n as u64;
        n
    }

    /// Closes every connection, for shutdown.
    pub fn close_all(&mut self, reason: CloseReason) {
        for key in 0..self.conns.capacity() {
            if self.conns.get(key).is_some_and(|c| c.close.is_none()) {
                self.close_key(key as u32, reason);
            }
        }
    }

    /// Applies the deadlines: authentication, heartbeat pings and idle timeouts.
    pub fn sweep(&mut self, now_ms: u64) {
        let limits = self.limits;
        for key in 0..self.conns.capacity() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.close.is_some() {
                continue;
            }
            let silent_ms = now_ms.saturating_sub(conn.last_seen_ms);
            if conn.uid.is_none() && now_ms.saturating_sub(conn.opened_ms) >= limits.auth_timeout_ms
            {
                self.counters.auth_failures += 1;
                self.close_key(key as u32, CloseReason::AuthTimeout);
            } else if silent_ms >= limits.idle_timeout_ms {
                self.counters.idle_closed += 1;
                self.close_key(key as u32, CloseReason::IdleTimeout);
            } else if silent_ms >= limits.ping_interval_ms && !conn.pinged {
                conn.pinged = true;
                conn.ping_due = true;
                conn.wake();
            }
        }
    }

    /// Hands a connection's task up to `max_bytes` of its queue (at least one
    /// message if any is queued), and says whether to ping or close.
    pub fn take_outbound(
        &mut self,
        id: ConnId,
        max_bytes: usize,
        mut send: impl FnMut(Payload),
    ) -> Outbound {
        let Some(conn) = self.get_mut(id) else {
            return Outbound::Gone;
        };
        if let Some(reason) = conn.close {
            return Outbound::Close(reason);
        }
        let mut taken = 0;
        while taken < max_bytes {
            let Some(payload) = conn.queue.pop_front() else {
                break;
            };
            taken += payload.len();
            send(payload);
        }
        conn.queued_bytes -= taken;
        if conn.queue.is_empty() && conn.queue.capacity() > 16 {
            // A burst's queue is not kept for an idle connection.
            conn.queue = VecDeque::new();
        }
        Outbound::Send {
            ping: std::mem::take(&mut conn.ping_due),
        }
    }

    /// Whether a connection has messages waiting.
    pub fn has_queued(&self, id: ConnId) -> bool {
        self.get(id).is_some_and(|c| !c.queue.is_empty())
    }

    pub fn stats(&self) -> Stats {
        Stats::new(
            &self.counters,
            self.started,
            Live {
                connections: self.conns.len(),
                authenticated: self.n_authenticated,
                uids: self.uids.len(),
            },
        )
    }

    /// Open connections, authenticated or not.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_queue_messages: 3,
            max_queue_bytes: 100,
            auth_timeout_ms: 1000,
            ping_interval_ms: 2000,
            idle_timeout_ms: 5000,
        }
    }

    fn drain(hub: &mut Hub, id: ConnId) -> Vec<String> {
        let mut got = Vec::new();
        hub.take_outbound(id, usize::MAX, |p| got.push(p.as_str().to_string()));
        got
    }

    #[test]
    fn routes_to_every_connection_of_a_uid() {
        let mut hub = Hub::new(limits());
        let a1 = hub.open(0);
        let a2 = hub.open(0);
        let b = hub.open(0);
        assert!(hub.bind(a1, "a") && hub.bind(a2, "a") && hub.bind(b, "b"));
        assert_eq!(hub.push("a", &Payload::from("x")), 2);
        assert_eq!(hub.push("nobody", &Payload::from("x")), 0);
        assert_eq!(drain(&mut hub, a1), ["x"]);
        assert_eq!(drain(&mut hub, a2), ["x"]);
        assert!(drain(&mut hub, b).is_empty());
        assert_eq!(hub.connections_of("a"), 2);
        let stats = hub.stats();
        assert_eq!(
            (stats.connections, stats.authenticated, stats.uids),
            (3, 3, 2)
        );
    }

    #[test]
    fn removal_from_any_place_in_the_chain() {
        let mut hub = Hub::new(limits());
        let ids: Vec<ConnId> = (0..4).map(|_| hub.open(0)).collect();
        for &id in &ids {
            hub.bind(id, "u");
        }
        hub.remove(ids[1]); // middle
        hub.remove(ids[3]); // head (bound last)
        assert_eq!(hub.connections_of("u"), 2);
        assert_eq!(hub.push("u", &Payload::from("m")), 2);
        hub.remove(ids[0]);
        hub.remove(ids[2]);
        assert_eq!(hub.connections_of("u"), 0);
        assert_eq!(hub.stats().uids, 0);
        assert!(hub.is_empty());
    }

    #[test]
    fn stale_handle_cannot_touch_a_reused_key() {
        let mut hub = Hub::new(limits());
        let old = hub.open(0);
        hub.remove(old);
        let new = hub.open(0);
        assert_eq!(old.key, new.key);
        assert!(!hub.bind(old, "u"));
        hub.remove(old);
        assert_eq!(hub.len(), 1);
        assert!(hub.bind(new, "u"));
    }

    #[test]
    fn unauthenticated_connections_get_no_broadcast() {
        let mut hub = Hub::new(limits());
        let pending = hub.open(0);
        let bound = hub.open(0);
        hub.bind(bound, "u");
        assert_eq!(hub.broadcast(&Payload::from("all")), 1);
        assert!(drain(&mut hub, pending).is_empty());
    }

    #[test]
    fn slow_consumer_is_closed_and_others_keep_receiving() {
        let mut hub = Hub::new(limits());
        let slow = hub.open(0);
        let fast = hub.open(0);
        hub.bind(slow, "s");
        hub.bind(fast, "f");
        for i in 0..3 {
            assert_eq!(hub.broadcast(&Payload::from(format!("m{i}"))), 2);
            drain(&mut hub, fast);
        }
        // The fourth message overflows the slow queue (3 messages).
        assert_eq!(hub.broadcast(&Payload::from("m3")), 1);
        assert_eq!(
            hub.take_outbound(slow, usize::MAX, |_| {}),
            Outbound::Close(CloseReason::SlowConsumer)
        );
        assert_eq!(hub.connections_of("s"), 0);
        assert_eq!(hub.counters.dropped, 1);
        assert_eq!(drain(&mut hub, fast), ["m3"]);
    }

    #[test]
    fn byte_bound_but_an_empty_queue_takes_a_big_message() {
        let mut hub = Hub::new(limits());
        let c = hub.open(0);
        hub.bind(c, "u");
        let big = Payload::from("x".repeat(500));
        assert_eq!(hub.push("u", &big), 1);
        assert_eq!(hub.push("u", &Payload::from("y")), 0);
        assert_eq!(hub.counters.dropped, 1);
    }

    #[test]
    fn take_outbound_respects_the_batch_size() {
        let mut hub = Hub::new(Limits {
            max_queue_messages: 100,
            max_queue_bytes: 10_000,
            ..limits()
        });
        let c = hub.open(0);
        hub.bind(c, "u");
        for _ in 0..10 {
            hub.push("u", &Payload::from("0123456789"));
        }
        let mut n = 0;
        hub.take_outbound(c, 25, |_| n += 1);
        assert_eq!(n, 3);
        assert!(hub.has_queued(c));
    }

    #[test]
    fn kick_closes_all_and_takes_them_offline() {
        let mut hub = Hub::new(limits());
        let a = hub.open(0);
        let b = hub.open(0);
        hub.bind(a, "u");
        hub.bind(b, "u");
        assert_eq!(hub.kick("u"), 2);
        assert_eq!(hub.connections_of("u"), 0);
        assert_eq!(hub.push("u", &Payload::from("late")), 0);
        for id in [a, b] {
            assert_eq!(
                hub.take_outbound(id, 1, |_| {}),
                Outbound::Close(CloseReason::Kicked)
            );
        }
        // The tasks still own their slots until they finish closing.
        assert_eq!(hub.len(), 2);
    }

    #[test]
    fn deadlines() {
        let mut hub = Hub::new(limits());
        let pending = hub.open(0);
        let quiet = hub.open(0);
        let chatty = hub.open(0);
        hub.bind(quiet, "q");
        hub.bind(chatty, "c");
        hub.sweep(999);
        assert_eq!(
            hub.take_outbound(pending, 1, |_| {}),
            Outbound::Send { ping: false }
        );
        hub.sweep(1000);
        assert_eq!(
            hub.take_outbound(pending, 1, |_| {}),
            Outbound::Close(CloseReason::AuthTimeout)
        );
        hub.touch(chatty, 1500);
        hub.sweep(2000);
        assert_eq!(
            hub.take_outbound(quiet, 1, |_| {}),
            Outbound::Send { ping: true }
        );
        assert_eq!(
            hub.take_outbound(chatty, 1, |_| {}),
            Outbound::Send { ping: false }
        );
        hub.sweep(2500);
        // One ping per silence, not one per sweep.
        assert_eq!(
            hub.take_outbound(quiet, 1, |_| {}),
            Outbound::Send { ping: false }
        );
        hub.sweep(5000);
        assert_eq!(
            hub.take_outbound(quiet, 1, |_| {}),
            Outbound::Close(CloseReason::IdleTimeout)
        );
        // Silent since 1500: due a ping, not yet a close.
        assert_eq!(
            hub.take_outbound(chatty, 1, |_| {}),
            Outbound::Send { ping: true }
        );
        assert_eq!(hub.counters.idle_closed, 1);
        assert_eq!(hub.counters.auth_failures, 1);
    }
}
