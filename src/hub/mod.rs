//! The connection table: a slab of connections, a uid index over it, the
//! channels and their members, and each connection's bounded outbound queue.
//!
//! The hub never awaits. Fan-out appends a shared payload to each receiver's
//! queue and marks it dirty, so a push costs the hub O(receivers) queue
//! appends, whatever the peers are doing. The flusher task then writes the
//! dirty queues of plain sockets in one pass (`Hub::flush`, handed the
//! writer), never waiting; a connection it cannot finish, and every wss one,
//! is woken to drain its own queue.

mod acks;
mod channels;
mod held;
mod history;
pub mod listeners;
pub mod queue;
mod routes;

use std::cell::OnceCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

use slab::Slab;
use smol::Async;

pub use acks::{AckError, AckWatch};
pub use channels::SubscribeError;
pub use history::{MESSAGE_OVERHEAD, Pos, Recovery, StreamKey, StreamName};
pub use routes::RouteChange;
use routes::RouteLog;

use crate::config::{Config, HistoryLimits};
use crate::hub::listeners::{Event, Interests, Listeners, Payload, WireId};
use crate::hub::queue::Queue;
use crate::metrics::{Counters, Live, Stats};
use crate::ws::frame::Frame;

/// One message as each kind of client receives it: raw clients (the
/// original's) one frame, v1 clients another. Each is encoded at most once,
/// when its first receiver is reached, and shared by every receiver of its
/// kind; a kind nobody speaks costs nothing.
pub struct Fanout<F> {
    raw: OnceCell<Frame>,
    v1: OnceCell<Frame>,
    /// Encodes the frame for v1 clients (`true`) or raw ones (`false`).
    encode: F,
}

impl<F: Fn(bool) -> Frame> Fanout<F> {
    pub fn new(encode: F) -> Fanout<F> {
        Fanout {
            raw: OnceCell::new(),
            v1: OnceCell::new(),
            encode,
        }
    }

    fn for_conn(&self, conn: &Conn) -> &Frame {
        let cell = if conn.v1 { &self.v1 } else { &self.raw };
        cell.get_or_init(|| (self.encode)(conn.v1))
    }

    /// The v1 frame, encoded now if no v1 client needed it: what history
    /// keeps, and what a replay from Redis's history sends.
    pub fn v1_frame(&self) -> &Frame {
        self.v1.get_or_init(|| (self.encode)(true))
    }
}

/// Where a message goes: the stream it belongs to, and its receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Every connection of a uid (its personal stream).
    Uid(&'a str),
    /// Every subscriber of a channel.
    Channel(&'a str),
    /// Every live connection.
    All,
}

impl<'a> From<StreamKey<'a>> for Target<'a> {
    fn from(stream: StreamKey<'a>) -> Target<'a> {
        match stream {
            StreamKey::Uid(uid) => Target::Uid(uid),
            StreamKey::Channel(ch) => Target::Channel(ch),
            StreamKey::All => Target::All,
        }
    }
}

impl<'a> Target<'a> {
    /// The stream a message to this target is a message of.
    pub fn stream(self) -> StreamKey<'a> {
        match self {
            Target::Uid(uid) => StreamKey::Uid(uid),
            Target::Channel(ch) => StreamKey::Channel(ch),
            Target::All => StreamKey::All,
        }
    }
}

/// What the rest of a request may still replay (see [`Hub::replay_budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayBudget {
    pub messages: usize,
    pub bytes: usize,
}

/// Why a message could not go up to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No backend listens for messages.
    NoListener,
    /// Every listener is full: the message was dropped.
    Full,
}

/// The same frame for every client.
pub fn same(frame: Frame) -> Fanout<impl Fn(bool) -> Frame> {
    Fanout::new(move |_| frame.clone())
}

/// A connection's socket, shared by its task and the flusher.
pub type Socket = Rc<Async<std::net::TcpStream>>;

/// Marks the end of a uid's chain of connections.
const NIL: u32 = u32::MAX;

/// A connection's handle: its slab key plus a generation, because slab keys are
/// reused and a stale handle must not reach the connection that took its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    key: u32,
    generation: u32,
}

impl ConnId {
    /// Its id in event lines and in `push` with `conn`.
    pub fn wire(self) -> WireId {
        WireId(u64::from(self.generation) << 32 | u64::from(self.key))
    }

    pub fn from_wire(id: WireId) -> ConnId {
        ConnId {
            key: id.0 as u32,
            generation: (id.0 >> 32) as u32,
        }
    }
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
#[derive(Debug)]
pub enum Outbound<'a> {
    /// Write what is queued (possibly nothing).
    Write(&'a mut Queue),
    Close(CloseReason),
    /// The connection is no longer in the table.
    Gone,
}

struct Conn {
    generation: u32,
    /// Set once authenticated; shares its allocation with the uid index key.
    uid: Option<Rc<str>>,
    /// Neighbours in the uid's chain of connections (slab keys).
    prev: u32,
    next: u32,
    queue: Queue,
    /// For the flusher to write without waking the task; `None` for wss (only
    /// the task may seal TLS records) and in unit tests.
    socket: Option<Socket>,
    waker: Option<Waker>,
    opened_ms: u64,
    last_seen_ms: u64,
    /// A ping has been sent since the peer was last heard from.
    pinged: bool,
    /// Authenticated, or anonymous (`--allow-anonymous`): it receives.
    live: bool,
    /// Speaks the v1 protocol (`pushhub.v1`), not the original's.
    v1: bool,
    close: Option<CloseReason>,
    /// Its channels; `None` (no allocation) without any. Boxed, so that a
    /// connection without subscriptions pays 8 bytes for them, not a `Vec`'s 24.
    #[allow(clippy::box_collection)]
    subs: Option<Box<Vec<channels::Sub>>>,
}

impl Conn {
    fn wake(&mut self) {
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }

    fn is_live(&self) -> bool {
        self.live && self.close.is_none()
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
    pub max_subscriptions: usize,
    pub max_channels: usize,
    pub max_listener_buffer: usize,
    pub history: HistoryLimits,
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
            max_subscriptions: config.max_subscriptions_per_connection,
            max_channels: config.max_channels,
            max_listener_buffer: config.max_listener_buffer,
            history: config.history,
        }
    }
}

pub struct Hub {
    conns: Slab<Conn>,
    /// Each online uid's most recent connection; the rest follow through `next`.
    uids: HashMap<Rc<str>, u32>,
    n_authenticated: usize,
    n_anonymous: usize,
    channels: channels::Channels,
    history: history::History,
    held: held::Held,
    acks: acks::Acks,
    pub listeners: Listeners,
    next_generation: u32,
    /// Set by `close_all`: connections that finish their handshake later are
    /// born closing.
    closing_all: Option<CloseReason>,
    /// Connections whose queue went from empty to not empty since the last
    /// flush, and the flusher task to wake when the first one is added.
    dirty: Vec<ConnId>,
    flusher: Option<Waker>,
    /// In cluster mode, the uids and channels this hub holds, as they change.
    routes: Option<RouteLog>,
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
            n_anonymous: 0,
            channels: channels::Channels::new(limits.max_subscriptions, limits.max_channels),
            history: history::History::new(limits.history, epoch_base()),
            held: held::Held::default(),
            acks: acks::Acks::default(),
            listeners: Listeners::new(limits.max_listener_buffer),
            next_generation: 0,
            closing_all: None,
            dirty: Vec::new(),
            flusher: None,
            routes: None,
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
    /// authenticated; `v1` if it speaks the v1 protocol.
    pub fn open(&mut self, now_ms: u64, socket: Option<Socket>, v1: bool) -> ConnId {
        let generation = self.next_generation;
        // Wrapping: a stale handle could only meet its key's new tenant after
        // 2^32 opens, and nothing holds a handle that long (a handle lives
        // in its connection's task, and in the dirty list until the next
        // flush).
        self.next_generation = generation.wrapping_add(1);
        let key = self.conns.insert(Conn {
            generation,
            uid: None,
            prev: NIL,
            next: NIL,
            queue: Queue::default(),
            socket,
            waker: None,
            opened_ms: now_ms,
            last_seen_ms: now_ms,
            pinged: false,
            live: false,
            v1,
            close: self.closing_all,
            subs: None,
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

    /// Binds an open connection (anonymous or not yet live) to `uid`, making
    /// it reachable by pushes at once. Returns false if the connection is
    /// gone or closing, or has a uid already.
    pub fn bind(&mut self, id: ConnId, uid: &str) -> bool {
        match self.get(id) {
            Some(c) if c.uid.is_none() && c.close.is_none() => {}
            _ => return false,
        }
        if self.conns[id.key as usize].live {
            // For a listener, the anonymous connection ends here and one
            // with the uid begins: connects and disconnects stay paired.
            self.n_anonymous -= 1;
            self.listeners.emit(id.wire(), None, Event::Disconnect);
        }
        let key = id.key;
        let (uid, head) = match self.uids.get_key_value(uid) {
            Some((shared, &head)) => (Rc::clone(shared), head),
            None => {
                let uid = Rc::from(uid);
                if let Some(routes) = &mut self.routes {
                    routes.note(false, &uid, true);
                }
                (uid, NIL)
            }
        };
        if head != NIL {
            self.conns[head as usize].prev = key;
        }
        let conn = &mut self.conns[key as usize];
        conn.next = head;
        conn.prev = NIL;
        conn.uid = Some(Rc::clone(&uid));
        conn.live = true;
        self.uids.insert(Rc::clone(&uid), key);
        self.n_authenticated += 1;
        self.listeners.emit(id.wire(), Some(&uid), Event::Connect);
        true
    }

    /// Makes an open connection live without a uid (`--allow-anonymous`): it
    /// gets broadcasts and may join public channels and send up.
    pub fn bind_anonymous(&mut self, id: ConnId) -> bool {
        match self.get_mut(id) {
            Some(c) if !c.live && c.close.is_none() => c.live = true,
            _ => return false,
        }
        self.n_anonymous += 1;
        self.listeners.emit(id.wire(), None, Event::Connect);
        true
    }

    /// Takes a connection out of its uid's chain and its channels, so that it
    /// is offline at once.
    fn unlink(&mut self, key: u32) {
        self.channels
            .unsubscribe_all(&mut self.conns, &mut self.routes, key);
        let conn = &mut self.conns[key as usize];
        if !std::mem::take(&mut conn.live) {
            return;
        }
        let id = ConnId {
            key,
            generation: conn.generation,
        };
        let Some(uid) = conn.uid.take() else {
            self.n_anonymous -= 1;
            self.listeners.emit(id.wire(), None, Event::Disconnect);
            return;
        };
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
            if let Some(routes) = &mut self.routes {
                routes.note(false, &uid, false);
            }
        }
        if next != NIL {
            self.conns[next as usize].prev = prev;
        }
        self.n_authenticated -= 1;
        self.listeners
            .emit(id.wire(), Some(&uid), Event::Disconnect);
    }

    /// Forgets a connection, returning what was still queued for it (after a
    /// kick or on shutdown, everything; otherwise at most a half-written frame).
    pub fn remove(&mut self, id: ConnId) -> Option<Queue> {
        self.get(id)?;
        self.unlink(id.key);
        self.held.forget(id.key);
        Some(self.conns.remove(id.key as usize).queue)
    }

    /// Marks a connection for closing: it leaves the uid index now, and its task
    /// sends the close frame when it next runs. A kick or a shutdown delivers
    /// what is queued first; the other reasons drop it.
    pub fn close(&mut self, id: ConnId, reason: CloseReason) {
        if self.get(id).is_some_and(|c| c.close.is_none()) {
            self.close_key(id.key, reason);
        }
    }

    fn close_key(&mut self, key: u32, reason: CloseReason) {
        self.unlink(key);
        let conn = &mut self.conns[key as usize];
        conn.close = Some(reason);
        // A kicked or departing client still gets what was accepted for it; a
        // slow or silent one would only hold the memory longer.
        if !matches!(reason, CloseReason::Kicked | CloseReason::Shutdown) {
            conn.queue.clear_unstarted();
        }
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

    /// Appends `frame` to one connection's queue, closing it as a slow consumer
    /// if the queue is over its bounds. Returns whether the frame was queued.
    fn enqueue(&mut self, key: u32, frame: &Frame) -> bool {
        let limits = self.limits;
        let conn = &mut self.conns[key as usize];
        // An empty queue takes any frame: a message larger than the byte bound
        // must not condemn every receiver.
        let over = !conn.queue.is_empty()
            && (conn.queue.len() >= limits.max_queue_messages
                || conn.queue.bytes() + frame.len() > limits.max_queue_bytes);
        if over {
            self.counters.dropped += 1;
            self.close_key(key, CloseReason::SlowConsumer);
            return false;
        }
        let was_empty = conn.queue.is_empty();
        conn.queue.push(frame.clone());
        if was_empty {
            // A non-empty queue is already being written (or waits for the
            // socket): only a newly busy connection needs the flusher.
            let id = ConnId {
                key,
                generation: conn.generation,
            };
            if self.dirty.is_empty()
                && let Some(flusher) = &self.flusher
            {
                flusher.wake_by_ref();
            }
            self.dirty.push(id);
        }
        true
    }

    /// Queues a frame for one connection: the `--login-reply` greeting, a v1
    /// client's answers.
    pub fn send(&mut self, id: ConnId, frame: &Frame) -> bool {
        self.get(id).is_some_and(|c| c.close.is_none()) && self.enqueue(id.key, frame)
    }

    /// Queues `message` for every connection of `uid`; returns how many took it.
    pub fn push(&mut self, uid: &str, message: &Fanout<impl Fn(bool) -> Frame>) -> usize {
        self.fan_out(Target::Uid(uid), message, None)
    }

    /// Queues `message` for every authenticated connection; returns how many took it.
    pub fn broadcast(&mut self, message: &Fanout<impl Fn(bool) -> Frame>) -> usize {
        self.fan_out(Target::All, message, None)
    }

    /// Queues `message` for every member of channel `name`; returns how many
    /// took it.
    pub fn publish(&mut self, name: &str, message: &Fanout<impl Fn(bool) -> Frame>) -> usize {
        self.fan_out(Target::Channel(name), message, None)
    }

    /// Queues `message` for `target`'s receivers, one shared frame per
    /// kind; a message of a stream at `pos` goes to the connections that
    /// hold that stream (`hold`) to be held instead. Returns how many took it.
    fn fan_out(
        &mut self,
        target: Target,
        message: &Fanout<impl Fn(bool) -> Frame>,
        pos: Option<Pos>,
    ) -> usize {
        let stream = target.stream();
        let mut n = 0;
        match target {
            Target::Uid(uid) => self.each_of_uid(uid, |hub, key| {
                let frame = message.for_conn(&hub.conns[key as usize]);
                n += usize::from(hub.take(key, frame, stream, pos));
            }),
            Target::All => {
                for key in 0..self.conns.capacity() {
                    let frame = match self.conns.get(key) {
                        Some(conn) if conn.is_live() => message.for_conn(conn),
                        _ => continue,
                    };
                    n += usize::from(self.take(key as u32, frame, stream, pos));
                }
            }
            Target::Channel(name) => {
                let Some(ch) = self.channels.find(name) else {
                    return 0;
                };
                let mut at = 0;
                while let Some(key) = self.channels.member(ch, at) {
                    let frame = message.for_conn(&self.conns[key as usize]);
                    let queued = self.take(key, frame, stream, pos);
                    n += usize::from(queued);
                    // A slow consumer left every channel as it was dropped: the
                    // last member, not yet reached, now sits at `at` (and if it
                    // was the last one, the channel is gone and `member` finds
                    // nothing).
                    if queued {
                        at += 1;
                    }
                }
            }
        }
        self.counters.delivered += n as u64;
        n
    }

    /// Queues a frame for connection `key`, or holds it if the connection
    /// holds `stream` and the frame has a position. Whether it was taken.
    fn take(&mut self, key: u32, frame: &Frame, stream: StreamKey, pos: Option<Pos>) -> bool {
        if let Some(pos) = pos
            && self.held.holds(key)
        {
            if self.held.len(key) >= self.limits.max_queue_messages {
                self.counters.dropped += 1;
                self.close_key(key, CloseReason::SlowConsumer);
                return false;
            }
            if self.held.take(key, stream, pos, frame) {
                return true;
            }
        }
        self.enqueue(key, frame)
    }

    /// Sends a message to `target` as the next message of its stream: the
    /// stream's next position (if it keeps history) is handed to `make`,
    /// which builds the message; the v1 frame is kept for recovery. Returns
    /// how many connections took it.
    pub fn deliver<F: Fn(bool) -> Frame>(
        &mut self,
        target: Target,
        make: impl FnOnce(Option<Pos>) -> Fanout<F>,
    ) -> usize {
        let now = self.now_ms();
        let slot = match target {
            // A uid's stream starts when a v1 client is first given a
            // position in it: before that, no client could ever recover what
            // it kept, and a hub of the original's clients only pays for
            // nothing (about a fifth of its CPU per push, at the memory cap).
            Target::Uid(uid) if !self.has_v1(uid) => self.history.next_existing(target.stream()),
            _ => self.history.next(target.stream(), now),
        };
        self.send_at(target, slot, now, make)
    }

    /// [`deliver`](Hub::deliver) for a push that waits for its ack, and the
    /// message's position: it always takes one (the ack names it), so a push
    /// to a uid that only raw clients took waits for the ack they never send.
    pub fn deliver_at<F: Fn(bool) -> Frame>(
        &mut self,
        target: Target,
        make: impl FnOnce(Option<Pos>) -> Fanout<F>,
    ) -> (usize, Option<Pos>) {
        let now = self.now_ms();
        let slot = self.history.next(target.stream(), now);
        (
            self.send_at(target, slot, now, make),
            slot.map(|slot| slot.pos),
        )
    }

    /// Sends the message `make` builds for the position `slot` gives, and
    /// keeps it there for recovery.
    fn send_at<F: Fn(bool) -> Frame>(
        &mut self,
        target: Target,
        slot: Option<history::Slot>,
        now: u64,
        make: impl FnOnce(Option<Pos>) -> Fanout<F>,
    ) -> usize {
        let message = make(slot.map(|slot| slot.pos));
        let n = self.fan_out(target, &message, None);
        if let Some(slot) = slot {
            self.history.keep(slot, message.v1_frame().clone(), now);
        }
        n
    }

    /// Sends a message of `target`'s stream whose position was given
    /// elsewhere (by Redis, in a cluster, which keeps the history): no
    /// history here, and connections that hold the stream hold it.
    pub fn deliver_given<F: Fn(bool) -> Frame>(
        &mut self,
        target: Target,
        pos: Option<Pos>,
        make: impl FnOnce(Option<Pos>) -> Fanout<F>,
    ) -> usize {
        let message = make(pos);
        self.fan_out(target, &message, pos)
    }

    /// Holds connection `id`'s messages of `stream` that come with a
    /// position, until [`release`](Hub::release).
    pub fn hold(&mut self, id: ConnId, stream: StreamKey) {
        if self.get(id).is_some() {
            self.held.hold(id.key, id.generation, stream);
        }
    }

    /// The first of the messages held for `id` of `stream` that lead, one
    /// offset after another, up to `last`; `None` if `last` is not held.
    pub fn held_run_to(&self, id: ConnId, stream: StreamKey, last: Pos) -> Option<Pos> {
        self.get(id)?;
        self.held.run_to(id.key, id.generation, stream, last)
    }

    /// Stops holding `stream` for `id`, and queues what was held of it
    /// past `after` (an offset of the epoch `after` is of; messages of
    /// another epoch all go), or all of it.
    pub fn release(&mut self, id: ConnId, stream: StreamKey, after: Option<Pos>) {
        if self.get(id).is_none() {
            return;
        }
        let frames = self.held.release(id.key, id.generation, stream);
        for (pos, frame) in frames {
            let covered = after.is_some_and(|a| a.epoch == pos.epoch && pos.offset <= a.offset);
            if !covered && !self.send(id, &frame) {
                break;
            }
        }
    }

    /// Whether streams of this kind keep history and carry positions.
    pub fn keeps_history(&self, stream: StreamKey) -> bool {
        self.history.keeps(stream)
    }

    /// A stream's current position (created if need be), for a client to
    /// start from: `None` if its kind keeps no history.
    pub fn position(&mut self, stream: StreamKey) -> Option<Pos> {
        let now = self.now_ms();
        self.history.position(stream, now)
    }

    /// What one request of a connection may replay: the replay bounds,
    /// within the room left in its queue (less one frame, the answer).
    pub fn replay_budget(&self, id: ConnId) -> ReplayBudget {
        let limits = self.limits;
        let (queued, bytes) = self.get(id).map_or((usize::MAX, usize::MAX), |c| {
            (c.queue.len(), c.queue.bytes())
        });
        ReplayBudget {
            messages: (limits.history.replay_messages).min(
                limits
                    .max_queue_messages
                    .saturating_sub(queued.saturating_add(1)),
            ),
            bytes: (limits.history.replay_bytes).min(limits.max_queue_bytes.saturating_sub(bytes)),
        }
    }

    /// What a client missed of `stream` since `since`, if all of it is kept
    /// and fits `budget` (which it then uses up): the frames to replay, in
    /// order, or `None` for a gap. The caller queues them (`send`) right
    /// after its answer and before any await, so that nothing sent later
    /// comes first: nothing is lost or repeated at the seam.
    pub fn recover(
        &mut self,
        stream: StreamKey,
        since: Pos,
        budget: &mut ReplayBudget,
    ) -> Option<Vec<Frame>> {
        let replay = match self
            .history
            .recover(stream, since, budget.messages, budget.bytes)
        {
            Recovery::Gap => None,
            Recovery::Replay(frames) => Some(frames),
        };
        self.replay(replay, budget)
    }

    /// Counts a recovery, and takes what it replays out of `budget`; one
    /// that does not fit is a gap. `frames` are the missed messages, from
    /// this hub's history or another's (`None`: they are not all kept).
    pub fn replay(
        &mut self,
        frames: Option<Vec<Frame>>,
        budget: &mut ReplayBudget,
    ) -> Option<Vec<Frame>> {
        let bytes = frames
            .as_ref()
            .map(|f| f.iter().map(Frame::len).sum::<usize>());
        match (frames, bytes) {
            (Some(frames), Some(bytes))
                if frames.len() <= budget.messages && bytes <= budget.bytes =>
            {
                self.counters.recoveries += 1;
                self.counters.replayed += frames.len() as u64;
                budget.messages -= frames.len();
                budget.bytes -= bytes;
                Some(frames)
            }
            _ => {
                self.counters.recoveries_failed += 1;
                None
            }
        }
    }

    /// A v1 client acknowledged everything up to `pos` of its personal
    /// stream (`ch` `None`) or of channel `ch`.
    pub fn ack(&mut self, id: ConnId, ch: Option<&str>, pos: Pos) -> Result<(), AckError> {
        let conn = self
            .get(id)
            .filter(|c| c.is_live())
            .ok_or(AckError::NoStream)?;
        let uid = conn.uid.clone();
        let stream = match (ch, &uid) {
            (Some(ch), _) => StreamKey::Channel(ch),
            (None, Some(uid)) => StreamKey::Uid(uid),
            (None, None) => return Err(AckError::NoStream),
        };
        let current = self.history.current(stream).ok_or(AckError::NoStream)?;
        if current.epoch != pos.epoch {
            return Err(AckError::OtherEpoch);
        }
        if pos.offset > current.offset {
            return Err(AckError::Ahead);
        }
        self.counters.acks += 1;
        if let StreamKey::Uid(uid) = stream {
            self.counters.acked_pushes += self.acks.acked(uid, pos) as u64;
        }
        Ok(())
    }

    /// Watches `pos` of `uid`'s stream for an acknowledgement.
    pub fn watch_ack(&mut self, uid: &str, pos: Pos) -> AckWatch {
        self.acks.watch(uid, pos)
    }

    /// Queues a message for one live connection, by its wire id; `make`
    /// builds it for the connection's protocol (v1 or not). Returns whether
    /// it was queued.
    pub fn send_to(&mut self, to: WireId, make: impl FnOnce(bool) -> Frame) -> bool {
        let id = ConnId::from_wire(to);
        let Some(conn) = self.get(id).filter(|c| c.is_live()) else {
            return false;
        };
        let frame = make(conn.v1);
        let queued = self.enqueue(id.key, &frame);
        self.counters.delivered += u64::from(queued);
        queued
    }

    /// Sends what a live client sent up to a listening backend.
    pub fn upstream(&mut self, id: ConnId, payload: Payload) -> Result<(), UpstreamError> {
        let Some(conn) = self.get(id).filter(|c| c.is_live()) else {
            return Ok(());
        };
        let uid = conn.uid.clone();
        let event = Event::Message(payload);
        let result = match self.listeners.emit(id.wire(), uid.as_deref(), event) {
            true => Ok(()),
            false if self.listeners.anywhere_for(event) => Err(UpstreamError::Full),
            false => Err(UpstreamError::NoListener),
        };
        match result {
            Ok(()) => self.counters.upstream += 1,
            Err(_) => self.counters.upstream_dropped += 1,
        }
        result
    }

    /// Adds a listening backend; see [`Listeners`].
    pub fn listen(&mut self, interests: Interests) -> u32 {
        self.listeners.add(interests)
    }

    /// Subscribes a live connection to `name`: `Ok(true)` if newly, `Ok(false)`
    /// if it already was (or is gone or closing, which its task will see).
    pub fn subscribe(&mut self, id: ConnId, name: &str) -> Result<bool, SubscribeError> {
        if !self.get(id).is_some_and(Conn::is_live) {
            return Ok(false);
        }
        self.channels
            .subscribe(&mut self.conns, &mut self.routes, id.key, name)
    }

    /// Unsubscribes a connection from `name`; false if it was not subscribed.
    pub fn unsubscribe(&mut self, id: ConnId, name: &str) -> bool {
        self.get(id).is_some()
            && self
                .channels
                .unsubscribe(&mut self.conns, &mut self.routes, id.key, name)
    }

    /// Subscribes every connection of `uid` to `name`, queueing `notice` (the
    /// v1 `subbed` frame) for each newly subscribed v1 connection. Returns how
    /// many were newly subscribed, and the refusals.
    pub fn subscribe_uid(
        &mut self,
        uid: &str,
        name: &str,
        notice: &Frame,
    ) -> (usize, Vec<SubscribeError>) {
        let (mut added, mut refused) = (0, Vec::new());
        self.each_of_uid(uid, |hub, key| {
            match hub
                .channels
                .subscribe(&mut hub.conns, &mut hub.routes, key, name)
            {
                Ok(true) => {
                    added += 1;
                    hub.notify_v1(key, notice);
                }
                Ok(false) => {}
                Err(e) => refused.push(e),
            }
        });
        (added, refused)
    }

    /// Unsubscribes every connection of `uid` from `name`, queueing `notice`
    /// (the v1 `unsubbed` frame) for each v1 one; returns how many.
    pub fn unsubscribe_uid(&mut self, uid: &str, name: &str, notice: &Frame) -> usize {
        let mut n = 0;
        self.each_of_uid(uid, |hub, key| {
            if hub
                .channels
                .unsubscribe(&mut hub.conns, &mut hub.routes, key, name)
            {
                n += 1;
                hub.notify_v1(key, notice);
            }
        });
        n
    }

    /// Queues `notice` for connection `key` if it speaks v1.
    fn notify_v1(&mut self, key: u32, notice: &Frame) {
        if self.conns[key as usize].v1 {
            self.enqueue(key, notice);
        }
    }

    /// The keys of `uid`'s connections, newest first.
    fn keys_of<'a>(&'a self, uid: &str) -> impl Iterator<Item = u32> + 'a {
        let first = self.uids.get(uid).copied().filter(|&key| key != NIL);
        std::iter::successors(first, |&key| {
            Some(self.conns[key as usize].next).filter(|&next| next != NIL)
        })
    }

    /// Whether a v1 client is among `uid`'s connections.
    fn has_v1(&self, uid: &str) -> bool {
        self.keys_of(uid).any(|key| self.conns[key as usize].v1)
    }

    /// Runs `f` on each of `uid`'s connections, newest first. Each one's
    /// successor is read before `f` runs: `f` may close it (a slow consumer),
    /// which takes it out of the chain.
    fn each_of_uid(&mut self, uid: &str, mut f: impl FnMut(&mut Hub, u32)) {
        let mut key = self.uids.get(uid).copied().unwrap_or(NIL);
        while key != NIL {
            let next = self.conns[key as usize].next;
            f(self, key);
            key = next;
        }
    }

    /// The channels a connection is subscribed to, in the order it joined them.
    pub fn subscriptions_of(&self, id: ConnId) -> Vec<Rc<str>> {
        match self.get(id) {
            Some(_) => self.channels.of(&self.conns, id.key),
            None => Vec::new(),
        }
    }

    /// Channels whose name starts with `prefix`, by name, with their member
    /// (connection) counts.
    pub fn channel_list(&self, prefix: &str) -> Vec<(Rc<str>, usize)> {
        self.channels.list(prefix)
    }

    /// A channel's distinct uids, sorted, and its connections.
    pub fn members(&self, name: &str) -> (Vec<Rc<str>>, usize) {
        let Some(ch) = self.channels.find(name) else {
            return (Vec::new(), 0);
        };
        let mut uids: Vec<Rc<str>> = Vec::new();
        let mut connections = 0;
        for key in self.channels.members(ch) {
            connections += 1;
            if let Some(uid) = &self.conns[key as usize].uid {
                uids.push(Rc::clone(uid));
            }
        }
        uids.sort_unstable();
        uids.dedup();
        (uids, connections)
    }

    /// Notes from now on which uids and channels this hub holds, for a
    /// cluster to route them here; each one held already is noted at once.
    pub fn track_routes(&mut self) {
        let mut log = RouteLog::default();
        for uid in self.uids.keys() {
            log.note(false, uid, true);
        }
        for (name, _) in self.channels.list("") {
            log.note(true, &name, true);
        }
        self.routes = Some(log);
    }

    /// The uids and channels gained or lost since the last call (nothing
    /// unless [`track_routes`](Hub::track_routes)); `waker` is woken at the
    /// next change.
    pub fn take_routes(&mut self, waker: &Waker) -> Vec<RouteChange> {
        self.routes
            .as_mut()
            .map_or_else(Vec::new, |log| log.take(waker))
    }

    /// The same, for a caller that acts on them at once: whoever took
    /// them last stays the one woken.
    pub fn drain_routes(&mut self) -> Vec<RouteChange> {
        self.routes.as_mut().map_or_else(Vec::new, RouteLog::drain)
    }

    /// A live connection's uid.
    pub fn uid_of(&self, id: ConnId) -> Option<&Rc<str>> {
        self.get(id)?.uid.as_ref()
    }

    /// Whether `uid` has at least one connection.
    pub fn is_online(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    /// How many connections `uid` has open.
    pub fn connections_of(&self, uid: &str) -> usize {
        self.keys_of(uid).count()
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

    /// Closes every connection, for shutdown, and every one opened from now on.
    pub fn close_all(&mut self, reason: CloseReason) {
        self.closing_all = Some(reason);
        for key in 0..self.conns.capacity() {
            if self.conns.get(key).is_some_and(|c| c.close.is_none()) {
                self.close_key(key as u32, reason);
            }
        }
    }

    /// Applies the deadlines: authentication, heartbeat pings and idle
    /// timeouts, and the history's TTL.
    pub fn sweep(&mut self, now_ms: u64) {
        let limits = self.limits;
        let (uids, channels) = (&self.uids, &self.channels);
        let anyone = self.n_authenticated + self.n_anonymous > 0;
        self.history.expire(now_ms, |stream| match stream {
            StreamKey::Uid(uid) => uids.contains_key(uid),
            StreamKey::Channel(ch) => channels.find(ch).is_some(),
            StreamKey::All => anyone,
        });
        self.counters.unacked_pushes += self.acks.purge() as u64;
        for key in 0..self.conns.capacity() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.close.is_some() {
                continue;
            }
            let silent_ms = now_ms.saturating_sub(conn.last_seen_ms);
            if !conn.live && now_ms.saturating_sub(conn.opened_ms) >= limits.auth_timeout_ms {
                self.counters.auth_failures += 1;
                Counters::bump(&mut self.counters.auth_failure_reasons, "timeout");
                self.close_key(key as u32, CloseReason::AuthTimeout);
            } else if silent_ms >= limits.idle_timeout_ms {
                self.counters.idle_closed += 1;
                self.close_key(key as u32, CloseReason::IdleTimeout);
            } else if silent_ms >= limits.ping_interval_ms && !conn.pinged {
                conn.pinged = true;
                self.enqueue(key as u32, &Frame::ping());
            }
        }
    }

    /// Writes the queue of every connection that got messages since the last
    /// flush with `write` (which must not block and returns whether it wrote
    /// everything). A connection it cannot finish is handed to its task, which
    /// waits for the socket. One pass over the connections a turn of pushes
    /// reached, instead of waking a task for each.
    pub fn flush(
        &mut self,
        mut write: impl FnMut(&Async<std::net::TcpStream>, &mut Queue) -> bool,
    ) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            let Some(conn) = self.get_mut(id) else {
                continue;
            };
            if conn.close.is_some() || conn.queue.is_empty() {
                continue;
            }
            let done = match &conn.socket {
                Some(socket) => write(socket, &mut conn.queue),
                None => false,
            };
            if !done {
                conn.wake();
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Remembers the flusher task's waker.
    pub fn set_flusher(&mut self, waker: &Waker) {
        match &self.flusher {
            Some(w) if w.will_wake(waker) => {}
            _ => self.flusher = Some(waker.clone()),
        }
    }

    /// What a connection's task should do: write its queue, or close.
    pub fn outbound(&mut self, id: ConnId) -> Outbound<'_> {
        match self.get_mut(id) {
            None => Outbound::Gone,
            Some(Conn {
                close: Some(reason),
                ..
            }) => Outbound::Close(*reason),
            Some(conn) => Outbound::Write(&mut conn.queue),
        }
    }

    pub fn stats(&self) -> Stats {
        Stats::new(
            &self.counters,
            self.started,
            Live {
                connections: self.conns.len(),
                authenticated: self.n_authenticated,
                anonymous: self.n_anonymous,
                uids: self.uids.len(),
                channels: self.channels.len(),
                subscriptions: self.channels.subscriptions(),
                listeners: self.listeners.len(),
                history_streams: self.history.streams(),
                history_messages: self.history.messages(),
                history_bytes: self.history.bytes(),
                acks_waiting: self.acks.len(),
            },
        )
    }

    /// Bytes waiting in every connection's outbound queue (for metrics).
    pub fn queued_bytes(&self) -> usize {
        self.conns.iter().map(|(_, c)| c.queue.bytes()).sum()
    }

    /// Open connections, authenticated or not.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// The base of this run's stream epochs: the start time in nanoseconds and
/// the process id, so that a restarted hub never reuses its predecessor's.
fn epoch_base() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(48)
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_queue_messages: 3,
            max_queue_bytes: 100,
            auth_timeout_ms: 1000,
            ping_interval_ms: 2000,
            idle_timeout_ms: 5000,
            max_subscriptions: 3,
            max_channels: 4,
            max_listener_buffer: 1 << 20,
            history: HistoryLimits::default(),
        }
    }

    fn text(s: &str) -> Frame {
        Frame::text(s)
    }

    /// A message that raw and v1 clients receive alike.
    fn msg(s: &str) -> Fanout<impl Fn(bool) -> Frame> {
        same(Frame::text(s))
    }

    /// Everything queued for `id`, frame by frame, as if the socket took it all.
    fn drain(hub: &mut Hub, id: ConnId) -> Vec<Vec<u8>> {
        let Outbound::Write(queue) = hub.outbound(id) else {
            panic!("connection is closing or gone");
        };
        let mut frames = Vec::new();
        loop {
            let mut slice = [IoSlice::new(&[])];
            if queue.slices(&mut slice) == 0 {
                return frames;
            }
            let bytes = slice[0].to_vec();
            queue.advance(bytes.len());
            frames.push(bytes);
        }
    }

    fn closing(hub: &mut Hub, id: ConnId) -> Option<CloseReason> {
        match hub.outbound(id) {
            Outbound::Close(reason) => Some(reason),
            _ => None,
        }
    }

    /// Every connection pays for its `Conn` for its whole life.
    #[test]
    fn a_connection_s_entry_stays_small() {
        // slab's entry: a vacant slot's next key, or the connection.
        #[allow(dead_code)]
        enum Entry {
            Vacant(usize),
            Occupied(Conn),
        }
        let size = std::mem::size_of::<Entry>();
        assert!(
            size <= 128,
            "a connection's slab entry grew to {size} bytes"
        );
    }

    #[test]
    fn routes_to_every_connection_of_a_uid() {
        let mut hub = Hub::new(limits());
        let a1 = hub.open(0, None, false);
        let a2 = hub.open(0, None, false);
        let b = hub.open(0, None, false);
        assert!(hub.bind(a1, "a") && hub.bind(a2, "a") && hub.bind(b, "b"));
        assert_eq!(hub.push("a", &msg("x")), 2);
        assert_eq!(hub.push("nobody", &msg("x")), 0);
        assert_eq!(drain(&mut hub, a1), [text("x").as_bytes()]);
        assert_eq!(drain(&mut hub, a2), [text("x").as_bytes()]);
        assert!(drain(&mut hub, b).is_empty());
        assert_eq!(hub.connections_of("a"), 2);
        assert!(hub.is_online("b") && !hub.is_online("c"));
        let stats = hub.stats();
        assert_eq!(
            (
                stats.live.connections,
                stats.live.authenticated,
                stats.live.uids
            ),
            (3, 3, 2)
        );
        assert_eq!(stats.counters.delivered, 2);
    }

    #[test]
    fn held_messages_follow_the_answer_without_those_it_covers() {
        let mut hub = Hub::new(limits());
        let (waiting, other) = (hub.open(0, None, false), hub.open(0, None, false));
        assert!(hub.bind(waiting, "u") && hub.bind(other, "u"));
        hub.hold(waiting, StreamKey::Uid("u"));
        let at = |offset| Some(Pos { epoch: 7, offset });
        for (offset, m) in [(4, "m4"), (5, "m5")] {
            assert_eq!(
                hub.deliver_given(Target::Uid("u"), at(offset), |_| msg(m)),
                2
            );
        }
        // Without a position (Redis away), nothing is held.
        hub.deliver_given(Target::Uid("u"), None, |_| msg("plain"));
        let run_to = |hub: &Hub, stream, last| hub.held_run_to(waiting, stream, last);
        assert_eq!(run_to(&hub, StreamKey::Uid("u"), at(5).unwrap()), at(4));
        assert_eq!(run_to(&hub, StreamKey::Uid("u"), at(4).unwrap()), at(4));
        assert_eq!(run_to(&hub, StreamKey::Uid("u"), at(6).unwrap()), None);
        assert_eq!(run_to(&hub, StreamKey::All, at(5).unwrap()), None);
        assert_eq!(drain(&mut hub, waiting), [text("plain").as_bytes()]);
        assert_eq!(drain(&mut hub, other).len(), 3);
        // The answer covered offset 4: 5 follows it, then live ones go at once.
        hub.send(waiting, &text("answer"));
        hub.release(waiting, StreamKey::Uid("u"), at(4));
        hub.deliver_given(Target::Uid("u"), at(6), |_| msg("m6"));
        let frames = drain(&mut hub, waiting);
        let want = ["answer", "m5", "m6"].map(|m| text(m).as_bytes().to_vec());
        assert_eq!(frames, want);
        // A hole (messages missed while the route was re-subscribed): the
        // run that leads up to the last one is what counts.
        hub.hold(waiting, StreamKey::Uid("u"));
        for offset in [7, 9, 10] {
            hub.deliver_given(Target::Uid("u"), at(offset), |_| msg("m"));
        }
        assert_eq!(
            hub.held_run_to(waiting, StreamKey::Uid("u"), at(10).unwrap()),
            at(9)
        );
        hub.release(waiting, StreamKey::Uid("u"), at(8));
        assert_eq!(drain(&mut hub, waiting).len(), 2);
        // Another epoch's held messages all go.
        hub.hold(waiting, StreamKey::Uid("u"));
        hub.deliver_given(Target::Uid("u"), at(1), |_| msg("new epoch"));
        hub.release(
            waiting,
            StreamKey::Uid("u"),
            Some(Pos {
                epoch: 8,
                offset: 9,
            }),
        );
        assert_eq!(drain(&mut hub, waiting), [text("new epoch").as_bytes()]);
    }

    #[test]
    fn a_connection_holds_no_more_than_its_queue_would() {
        let mut hub = Hub::new(limits());
        let c = hub.open(0, None, false);
        assert!(hub.bind(c, "u"));
        hub.hold(c, StreamKey::Uid("u"));
        for offset in 1..=3 {
            let pos = Some(Pos { epoch: 1, offset });
            assert_eq!(hub.deliver_given(Target::Uid("u"), pos, |_| msg("x")), 1);
        }
        let pos = Some(Pos {
            epoch: 1,
            offset: 4,
        });
        assert_eq!(hub.deliver_given(Target::Uid("u"), pos, |_| msg("x")), 0);
        assert_eq!(closing(&mut hub, c), Some(CloseReason::SlowConsumer));
        // Gone, it holds nothing.
        hub.remove(c);
        let again = hub.open(0, None, false);
        assert!(hub.bind(again, "u"));
        let last = Pos {
            epoch: 1,
            offset: 3,
        };
        assert_eq!(hub.held_run_to(again, StreamKey::Uid("u"), last), None);
        let pos = Some(Pos {
            epoch: 1,
            offset: 5,
        });
        assert_eq!(hub.deliver_given(Target::Uid("u"), pos, |_| msg("y")), 1);
        assert_eq!(drain(&mut hub, again), [text("y").as_bytes()]);
    }

    #[test]
    fn removal_from_any_place_in_the_chain() {
        let mut hub = Hub::new(limits());
        let ids: Vec<ConnId> = (0..4).map(|_| hub.open(0, None, false)).collect();
        for &id in &ids {
            hub.bind(id, "u");
        }
        hub.remove(ids[1]); // middle
        hub.remove(ids[3]); // head (bound last)
        assert_eq!(hub.connections_of("u"), 2);
        assert_eq!(hub.push("u", &msg("m")), 2);
        hub.remove(ids[0]);
        hub.remove(ids[2]);
        assert_eq!(hub.connections_of("u"), 0);
        assert_eq!(hub.stats().live.uids, 0);
        assert!(hub.is_empty());
    }

    #[test]
    fn stale_handle_cannot_touch_a_reused_key() {
        let mut hub = Hub::new(limits());
        let old = hub.open(0, None, false);
        hub.remove(old);
        let new = hub.open(0, None, false);
        assert_eq!(old.key, new.key);
        assert!(!hub.bind(old, "u"));
        assert!(hub.remove(old).is_none());
        assert_eq!(hub.len(), 1);
        assert!(hub.bind(new, "u"));
    }

    #[test]
    fn unauthenticated_connections_get_no_broadcast() {
        let mut hub = Hub::new(limits());
        let pending = hub.open(0, None, false);
        let bound = hub.open(0, None, false);
        hub.bind(bound, "u");
        assert_eq!(hub.broadcast(&msg("all")), 1);
        assert!(drain(&mut hub, pending).is_empty());
    }

    #[test]
    fn slow_consumer_is_closed_and_others_keep_receiving() {
        let mut hub = Hub::new(limits());
        let slow = hub.open(0, None, false);
        let fast = hub.open(0, None, false);
        hub.bind(slow, "s");
        hub.bind(fast, "f");
        for i in 0..3 {
            assert_eq!(hub.broadcast(&msg(&format!("m{i}"))), 2);
            drain(&mut hub, fast);
        }
        // The fourth message overflows the slow queue (3 messages).
        assert_eq!(hub.broadcast(&msg("m3")), 1);
        assert_eq!(closing(&mut hub, slow), Some(CloseReason::SlowConsumer));
        assert_eq!(hub.connections_of("s"), 0);
        assert_eq!(hub.counters.dropped, 1);
        assert_eq!(drain(&mut hub, fast), [text("m3").as_bytes()]);
        // Nothing it had queued is kept for a dropped consumer.
        assert!(hub.remove(slow).unwrap().is_empty());
    }

    #[test]
    fn byte_bound_but_an_empty_queue_takes_a_big_message() {
        let mut hub = Hub::new(limits());
        let c = hub.open(0, None, false);
        hub.bind(c, "u");
        assert_eq!(hub.push("u", &msg(&"x".repeat(500))), 1);
        assert_eq!(hub.push("u", &msg("y")), 0);
        assert_eq!(hub.counters.dropped, 1);
    }

    #[test]
    fn kick_closes_all_and_takes_them_offline() {
        let mut hub = Hub::new(limits());
        let a = hub.open(0, None, false);
        let b = hub.open(0, None, false);
        hub.bind(a, "u");
        hub.bind(b, "u");
        hub.push("u", &msg("before"));
        assert_eq!(hub.kick("u"), 2);
        assert_eq!(hub.connections_of("u"), 0);
        assert_eq!(hub.push("u", &msg("late")), 0);
        for id in [a, b] {
            assert_eq!(closing(&mut hub, id), Some(CloseReason::Kicked));
        }
        // The tasks still own their slots until they finish closing.
        assert_eq!(hub.len(), 2);
        // What was accepted before the kick is still delivered, then the close.
        assert_eq!(hub.remove(a).unwrap().len(), 1);
    }

    #[test]
    fn shutdown_keeps_queued_messages_for_delivery() {
        let mut hub = Hub::new(limits());
        let c = hub.open(0, None, false);
        hub.bind(c, "u");
        hub.push("u", &msg("last words"));
        hub.close_all(CloseReason::Shutdown);
        assert_eq!(closing(&mut hub, c), Some(CloseReason::Shutdown));
        assert_eq!(hub.remove(c).unwrap().len(), 1);
        let late = hub.open(0, None, false);
        assert_eq!(closing(&mut hub, late), Some(CloseReason::Shutdown));
    }

    #[test]
    fn deadlines() {
        let mut hub = Hub::new(limits());
        let pending = hub.open(0, None, false);
        let quiet = hub.open(0, None, false);
        let chatty = hub.open(0, None, false);
        hub.bind(quiet, "q");
        hub.bind(chatty, "c");
        hub.sweep(999);
        assert_eq!(closing(&mut hub, pending), None);
        hub.sweep(1000);
        assert_eq!(closing(&mut hub, pending), Some(CloseReason::AuthTimeout));
        hub.touch(chatty, 1500);
        hub.sweep(2000);
        let Outbound::Write(q) = hub.outbound(quiet) else {
            panic!()
        };
        assert_eq!(q.len(), 1, "a ping is queued");
        let Outbound::Write(q) = hub.outbound(chatty) else {
            panic!()
        };
        assert!(q.is_empty());
        hub.sweep(2500);
        // One ping per silence, not one per sweep.
        let Outbound::Write(q) = hub.outbound(quiet) else {
            panic!()
        };
        assert_eq!(q.len(), 1);
        hub.sweep(5000);
        assert_eq!(closing(&mut hub, quiet), Some(CloseReason::IdleTimeout));
        // Silent since 1500: due a ping, not yet a close.
        let Outbound::Write(q) = hub.outbound(chatty) else {
            panic!()
        };
        assert_eq!(q.len(), 1);
        assert_eq!(hub.counters.idle_closed, 1);
        assert_eq!(hub.counters.auth_failures, 1);
    }

    /// Raw clients get "raw:<s>", v1 clients "v1:<s>".
    fn split(s: &str) -> Fanout<impl Fn(bool) -> Frame + '_> {
        Fanout::new(move |v1| Frame::text(&format!("{}:{s}", if v1 { "v1" } else { "raw" })))
    }

    fn live(hub: &mut Hub, uid: &str, v1: bool) -> ConnId {
        let id = hub.open(0, None, v1);
        assert!(hub.bind(id, uid));
        id
    }

    #[test]
    fn publish_reaches_members_only_in_their_protocol() {
        let mut hub = Hub::new(limits());
        let raw = live(&mut hub, "a", false);
        let v1 = live(&mut hub, "b", true);
        let outsider = live(&mut hub, "c", true);
        assert_eq!(hub.subscribe(raw, "room"), Ok(true));
        assert_eq!(hub.subscribe(v1, "room"), Ok(true));
        assert_eq!(hub.subscribe(v1, "room"), Ok(false));
        assert_eq!(hub.publish("room", &split("x")), 2);
        assert_eq!(hub.publish("empty", &split("x")), 0);
        assert_eq!(drain(&mut hub, raw), [text("raw:x").as_bytes()]);
        assert_eq!(drain(&mut hub, v1), [text("v1:x").as_bytes()]);
        assert!(drain(&mut hub, outsider).is_empty());
        // Pushes and broadcasts choose the frame the same way.
        assert_eq!(hub.push("b", &split("p")), 1);
        assert_eq!(drain(&mut hub, v1), [text("v1:p").as_bytes()]);
        assert_eq!(hub.broadcast(&split("all")), 3);
        assert_eq!(drain(&mut hub, raw), [text("raw:all").as_bytes()]);
        let stats = hub.stats();
        assert_eq!((stats.live.channels, stats.live.subscriptions), (1, 2));
        assert_eq!(hub.channel_list(""), [(Rc::from("room"), 2)]);
        let (uids, n) = hub.members("room");
        assert_eq!((uids, n), (vec![Rc::from("a"), Rc::from("b")], 2));
        assert!(hub.unsubscribe(raw, "room"));
        assert!(!hub.unsubscribe(raw, "room"));
        assert_eq!(hub.publish("room", &split("y")), 1);
    }

    #[test]
    fn subscriptions_need_a_live_connection_and_respect_the_limits() {
        let mut hub = Hub::new(limits());
        let pending = hub.open(0, None, true);
        assert_eq!(hub.subscribe(pending, "a"), Ok(false));
        let id = live(&mut hub, "u", true);
        for ch in ["a", "b", "c"] {
            assert_eq!(hub.subscribe(id, ch), Ok(true));
        }
        assert_eq!(
            hub.subscribe(id, "d"),
            Err(SubscribeError::TooManySubscriptions)
        );
        // Already subscribed: not a new subscription, so not over the limit.
        assert_eq!(hub.subscribe(id, "a"), Ok(false));
        let other = live(&mut hub, "v", false);
        assert_eq!(hub.subscribe(other, "d"), Ok(true));
        assert_eq!(
            hub.subscribe(other, "e"),
            Err(SubscribeError::TooManyChannels)
        );
        // An existing channel is not a new one.
        assert_eq!(hub.subscribe(other, "a"), Ok(true));
        assert_eq!(
            hub.subscriptions_of(id),
            [Rc::from("a"), Rc::from("b"), Rc::from("c")]
        );
    }

    #[test]
    fn closing_leaves_every_channel_and_frees_empty_ones() {
        let mut hub = Hub::new(limits());
        let a = live(&mut hub, "a", true);
        let b = live(&mut hub, "b", true);
        for ch in ["x", "y"] {
            hub.subscribe(a, ch).unwrap();
        }
        hub.subscribe(b, "y").unwrap();
        hub.close(a, CloseReason::Kicked);
        assert_eq!(hub.channel_list(""), [(Rc::from("y"), 1)]);
        assert_eq!(hub.publish("x", &msg("m")), 0);
        assert_eq!(hub.publish("y", &msg("m")), 1);
        hub.remove(b);
        let stats = hub.stats();
        assert_eq!((stats.live.channels, stats.live.subscriptions), (0, 0));
    }

    #[test]
    fn a_slow_consumer_dropped_mid_publication_costs_nobody_else_the_message() {
        let mut hub = Hub::new(limits());
        let ids: Vec<ConnId> = (0..4)
            .map(|i| live(&mut hub, &format!("u{i}"), false))
            .collect();
        for &id in &ids {
            hub.subscribe(id, "ch").unwrap();
        }
        // The second member's queue is full: the publication drops it.
        for _ in 0..3 {
            hub.push("u1", &msg("fill"));
        }
        assert_eq!(hub.publish("ch", &msg("news")), 3);
        assert_eq!(closing(&mut hub, ids[1]), Some(CloseReason::SlowConsumer));
        for i in [0, 2, 3] {
            assert_eq!(drain(&mut hub, ids[i]), [text("news").as_bytes()], "u{i}");
        }
        assert_eq!(hub.members("ch").1, 3);
    }

    #[test]
    fn membership_stays_exact_through_any_order_of_leaving() {
        // Many connections on a few channels, leaving in an order that moves
        // entries on both sides: every publication must reach exactly the
        // members left.
        let mut hub = Hub::new(Limits {
            max_queue_messages: 1 << 20,
            max_queue_bytes: 1 << 30,
            max_subscriptions: 8,
            max_channels: 8,
            ..limits()
        });
        let ids: Vec<ConnId> = (0..50)
            .map(|i| live(&mut hub, &format!("u{i}"), false))
            .collect();
        let chs = ["c0", "c1", "c2", "c3", "c4"];
        for (i, &id) in ids.iter().enumerate() {
            for (j, ch) in chs.iter().enumerate() {
                if !(i + j).is_multiple_of(3) {
                    hub.subscribe(id, ch).unwrap();
                }
            }
        }
        let member = |i: usize, j: usize| !(i + j).is_multiple_of(3);
        let mut gone = vec![false; ids.len()];
        let mut left = vec![[false; 5]; ids.len()];
        // A pseudo-random order of unsubscribes and closes.
        let mut x: u64 = 0x9e37_79b9;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % ids.len() as u64) as usize;
            let j = ((x >> 8) % chs.len() as u64) as usize;
            if gone[i] {
                continue;
            }
            if x.is_multiple_of(11) {
                hub.remove(ids[i]);
                gone[i] = true;
            } else {
                let was = member(i, j) && !left[i][j];
                assert_eq!(hub.unsubscribe(ids[i], chs[j]), was);
                left[i][j] = true;
            }
            for (j, ch) in chs.iter().enumerate() {
                let expected = (0..ids.len())
                    .filter(|&i| !gone[i] && member(i, j) && !left[i][j])
                    .count();
                assert_eq!(hub.members(ch).1, expected, "{ch}");
                assert_eq!(hub.publish(ch, &msg("m")), expected, "{ch}");
            }
        }
    }

    #[test]
    fn backend_subscriptions_notify_v1_connections_only() {
        let mut hub = Hub::new(limits());
        let raw = live(&mut hub, "u", false);
        let v1 = live(&mut hub, "u", true);
        let notice = text("subbed");
        let (added, refused) = hub.subscribe_uid("u", "room", &notice);
        assert_eq!((added, refused.len()), (2, 0));
        assert_eq!(hub.subscribe_uid("u", "room", &notice).0, 0);
        assert!(drain(&mut hub, raw).is_empty());
        assert_eq!(drain(&mut hub, v1), [text("subbed").as_bytes()]);
        assert_eq!(hub.unsubscribe_uid("u", "room", &text("unsubbed")), 2);
        assert_eq!(drain(&mut hub, v1), [text("unsubbed").as_bytes()]);
        assert_eq!(hub.stats().live.channels, 0);
        assert_eq!(hub.subscribe_uid("nobody", "room", &notice).0, 0);
    }
}
