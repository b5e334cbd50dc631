//! Several hubs, one uid space, over Redis.
//!
//! Each hub subscribes to one Redis channel per uid it holds a connection
//! of and per channel it holds a member of (`routes`), plus its own inbox
//! and one that every hub shares. A backend's request that concerns other
//! hubs is published, line and all, to the route of each uid or channel it
//! names (`wire`); every hub that holds the route acts on it as its own
//! text port would and answers the origin's inbox with its share. Redis's
//! reply to `PUBLISH` says how many hubs received each part, so the origin
//! knows how many answers make the reply certain (`gather`); whatever is
//! missing at `--cluster-timeout` makes it unconfirmed, never guessed.
//!
//! The origin itself holds routes too: its own requests come back to it
//! through Redis and are acted on like anyone's, so every hub delivers in
//! Redis's order. While the link is down, requests are acted on here only,
//! and their answers say so.
//!
//! Streams with history keep their positions and last messages in Redis
//! (`streams`): a message of one is published by a script that gives it
//! its position, and a client's position and what it missed are read from
//! there, so it recovers on any hub.
//!
//! `link` runs the two Redis connections as tasks of the hub's executor;
//! everything else here is state that never awaits.

mod events;
mod gather;
pub mod link;
pub mod redis;
mod routes;
pub mod settings;
pub mod streams;
pub mod wire;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;

use gather::Gathers;
pub use gather::{GatherId, Gathered};
use redis::resp;
use redis::url::RedisUrl;
use routes::Routes;
pub use wire::Header;
use wire::Partial;

use streams::{Scripts, StreamRead};

use crate::auth::Secret;
use crate::config::HistoryLimits;
use crate::hub::{ConnId, Hub, Pos, StreamKey, Target};

/// Bytes of commands that may wait for the Redis connection before new
/// requests stop being published (and are answered unconfirmed): a link
/// that slow is as good as down, and memory must not grow with it.
const MAX_OUTPUT: usize = 16 << 20;

/// The `--redis*`, `--node-id` and `--cluster-timeout` settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub url: RedisUrl,
    pub password: Option<Secret>,
    pub node: String,
    pub prefix: String,
    pub timeout: Duration,
    /// The most one message from Redis may be: a request carries a whole
    /// backend line.
    pub max_frame: usize,
    /// What streams keep, in Redis.
    pub history: HistoryLimits,
}

/// Where one part of a request goes: to the hubs that hold a uid or a
/// channel (or to every hub), or to one hub by its node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    To(Target<'a>),
    Node(&'a str),
}

/// How a hub acts on a request that came through Redis (with its header;
/// `None` when acted on here alone), for one route of it: the text port's
/// own handling, restricted to that uid, channel, to everyone, or (`Node`)
/// to this hub, a message with the position Redis gave it. `None` if the
/// line is not one it can act on.
pub type Execute = fn(&mut Hub, &Cluster, Route<'_>, Option<&Header<'_>>, &[u8]) -> Option<Partial>;

pub struct Cluster {
    config: ClusterConfig,
    names: Names,
    execute: Execute,
    scripts: Scripts,
    state: RefCell<State>,
}

/// The Redis channel names of this cluster. A uid's and a channel's are
/// `PREFIX:{u:UID}` and `PREFIX:{c:NAME}`: the braces make the name a Redis
/// Cluster hash tag, so that a stream's channel and its keys share a slot.
struct Names {
    uid: Vec<u8>,
    channel: Vec<u8>,
    all: Vec<u8>,
    node: Vec<u8>,
    inbox: Vec<u8>,
    /// What hubs with listeners subscribe to: `PREFIX:l:KINDS:NODE`.
    listen: Vec<u8>,
    /// Requests for one hub: `PREFIX:d:NODE`.
    direct: Vec<u8>,
    /// What the device registry's keys start with: `PREFIX:{devices}`,
    /// one slot for them all, so that its scripts may touch several.
    devices: Vec<u8>,
    /// With a Redis Cluster, the master of this key's slot holds every
    /// hub's own channels: `PREFIX:{hubs}`.
    home: Vec<u8>,
    /// The hubs with listeners, a sorted set in that slot:
    /// `PREFIX:{hubs}:listeners`.
    listeners: Vec<u8>,
}

impl Names {
    fn new(prefix: &str, node: &str) -> Names {
        let name = |rest: &str| format!("{prefix}:{rest}").into_bytes();
        Names {
            uid: name("{u:"),
            channel: name("{c:"),
            all: name("{all}"),
            node: name("n:"),
            inbox: name(&format!("n:{node}")),
            listen: name("l:"),
            direct: name("d:"),
            devices: name("{devices}"),
            home: name("{hubs}"),
            listeners: name("{hubs}:listeners"),
        }
    }

    fn route(&self, route: Route) -> Vec<u8> {
        let mut name = Vec::new();
        self.route_into(&mut name, route);
        name
    }

    /// Appends `route`'s channel name to `out`.
    fn route_into(&self, out: &mut Vec<u8>, route: Route) {
        let (start, name, end): (&[u8], &[u8], &[u8]) = match route {
            Route::To(Target::Uid(uid)) => (&self.uid, uid.as_bytes(), b"}"),
            Route::To(Target::Channel(ch)) => (&self.channel, ch.as_bytes(), b"}"),
            Route::To(Target::All) => (&self.all, b"", b""),
            Route::Node(node) => (&self.direct, node.as_bytes(), b""),
        };
        out.extend_from_slice(start);
        out.extend_from_slice(name);
        out.extend_from_slice(end);
    }

    /// Whether a Redis channel is a route (a uid's, a channel's, everyone's):
    /// those are sharded with a Redis Cluster, the hubs' own are not.
    fn is_route(&self, channel: &[u8]) -> bool {
        matches!(self.target(channel), Some(Route::To(_)))
    }

    /// The route a channel stands for.
    fn target<'c>(&self, channel: &'c [u8]) -> Option<Route<'c>> {
        if channel == self.all {
            return Some(Route::To(Target::All));
        }
        let text = |rest: &'c [u8]| std::str::from_utf8(rest.strip_suffix(b"}")?).ok();
        if let Some(uid) = channel.strip_prefix(&self.uid[..]) {
            return text(uid).map(|uid| Route::To(Target::Uid(uid)));
        }
        if let Some(node) = channel.strip_prefix(&self.direct[..]) {
            return std::str::from_utf8(node).ok().map(Route::Node);
        }
        channel
            .strip_prefix(&self.channel[..])
            .and_then(text)
            .map(|ch| Route::To(Target::Channel(ch)))
    }
}

/// What a reply on the command connection is for.
enum Expect {
    /// How many hubs received a part of a request.
    Count(GatherId, u32),
    /// How many hubs received each message of a `PUBLISH` run, and the
    /// part of a request each was.
    Batch(Vec<(GatherId, u32)>),
    /// A liveness check.
    Ping,
    /// Which hubs have listeners.
    ListenerHubs,
    /// Events forwarded to another hub's listeners: lost if nobody got them.
    Events(u32),
    /// Where a stream stands, for a read's stream.
    Read(u64, usize),
    /// A script loaded.
    Script,
    /// Whether the server keeps an append-only file.
    Persistence,
    /// The Redis Cluster's shard map, read again.
    ShardMap,
    /// Another module's command (the device registry's), by number.
    Call(u64),
    /// Another module's command whose reply nobody waits for: an error is
    /// logged, as this says what it was.
    Cast(&'static str),
    /// Nothing to act on (an answer published to another hub).
    Ignore,
}

#[derive(Default)]
struct State {
    up: bool,
    /// The command connections: `[0]` the `--redis` URL's (the only one
    /// with a standalone Redis), then one per Redis Cluster shard.
    pipes: Vec<Pipe>,
    /// What waits to be written on the subscriber connections, by the
    /// same index.
    subscribers: Vec<Outbox>,
    /// With a Redis Cluster: which connections serve each slot.
    shards: Option<Shards>,
    /// The masters of the Redis Cluster, last the hub knew: where it
    /// reconnects when the `--redis` URL's node is down. `pipes[i + 1]`
    /// and `subscribers[i + 1]` are `seeds[i]`'s.
    seeds: Vec<redis::slots::ShardAddr>,
    /// Whether the shard map is known to be out of date.
    map: MapState,
    /// Routes a master dropped, or refused, as their slots moved: they
    /// are subscribed again once the fresh map says where.
    dropped: Vec<Box<[u8]>>,
    gathers: Gathers,
    routes: Routes,
    /// The task that writes route changes, woken when a batch is due.
    routes_waker: Option<Waker>,
    /// Sessions waiting for their routes to be confirmed.
    ready_waiters: Vec<Waker>,
    /// Answers to other hubs, by origin, from the messages read so far.
    answers: HashMap<String, Vec<u8>>,
    /// Answers that wait for these routes to be confirmed.
    held: Vec<(Answer, Vec<Box<[u8]>>)>,
    /// This hub's listener channel, while it has listeners.
    listening: Option<Vec<u8>>,
    /// Other hubs with listeners, as Redis last said.
    listener_hubs: Vec<events::ListenerHub>,
    /// The task that forwards events, woken when that list changes.
    events_waker: Option<Waker>,
    /// Reads of streams' positions, by number.
    reads: HashMap<u64, Read>,
    /// This hub's pushes with `ack_timeout` waiting for an acknowledgement
    /// from whichever hub holds the connection, by request.
    acks: HashMap<u64, AckWait>,
    /// Other hubs' (and this one's) pushes with `ack_timeout` delivered
    /// here, by uid: whom to tell when a connection acknowledges.
    remote_acks: HashMap<String, Vec<RemoteAck>>,
    remote_ack_count: usize,
    next_read: u64,
    /// Other modules' commands waiting for their reply, by number.
    calls: HashMap<u64, Call>,
    next_call: u64,
    /// Streams created by this hub so far: what makes each one's epoch.
    epochs: u64,
    counters: ClusterCounters,
}

/// Whether the shard map (`State::shards`) matches the Redis Cluster's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum MapState {
    #[default]
    Fresh,
    /// A slot moved: to be read again.
    Stale,
    /// Read again; the reply is on its way.
    Asked,
}

/// Another module's command: its reply once in (`None` if the link was
/// lost first), and who waits for it.
#[derive(Default)]
struct Call {
    reply: Option<Option<resp::Frame>>,
    waker: Option<Waker>,
}

/// Another module's command, to wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallId(u64);

/// A read of where streams stand, for one client.
struct Read {
    since: Vec<Option<Pos>>,
    results: Vec<Option<StreamRead>>,
    /// Replies still to come; 0 once complete (or the link is lost).
    remaining: usize,
    waker: Option<Waker>,
}

struct AckWait {
    acked: Option<Instant>,
    waker: Option<Waker>,
    /// Past it nobody waits any more (should its reply be dropped with its
    /// backend, this is what forgets it).
    until: Instant,
}

/// A push delivered here that its origin waits to hear acknowledged.
struct RemoteAck {
    pos: Pos,
    origin: String,
    request: u64,
    part: u32,
    until: Instant,
}

/// Pushes delivered here that other hubs wait to hear acknowledged, at
/// most: past it an acknowledgement is not relayed, and the origin answers
/// unacknowledged (and falls back to APNs if asked), never the reverse.
const MAX_REMOTE_ACKS: usize = 100_000;

/// A read of streams' positions, to wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadId(u64);

/// One command connection's commands not yet written, and the replies
/// still to come on it, in order, with when each command was queued.
#[derive(Default)]
struct Pipe {
    out: BytesMut,
    waker: Option<Waker>,
    expected: VecDeque<(Instant, Expect)>,
    /// Messages of streams for the next `PUBLISH` run, which goes out
    /// before any other command does (`Cluster::flush`).
    batch: streams::Batch,
}

impl Pipe {
    fn expect(&mut self, expect: Expect) {
        self.expected.push_back((Instant::now(), expect));
    }

    fn wake(&mut self) {
        wake(&mut self.waker);
    }
}

/// A subscriber connection's commands not yet written, and the pongs
/// still to come on it: each for a read (by number) that waits until every
/// message published before it was read from this connection.
#[derive(Default)]
struct Outbox {
    out: BytesMut,
    waker: Option<Waker>,
    pongs: VecDeque<u64>,
}

/// A Redis Cluster's slots, by the index of the connections that serve
/// them (`State::pipes`, `State::subscribers`).
pub(crate) struct Shards {
    /// One entry per slot.
    by_slot: Vec<u8>,
}

impl Shards {
    /// The connections' index for the shard `slot` is on.
    fn index(&self, slot: u16) -> usize {
        usize::from(self.by_slot[usize::from(slot)])
    }
}

impl State {
    /// Whether new commands can be sent: the link is up, and no connection
    /// is so far behind that memory would grow with it.
    fn room(&self) -> bool {
        self.up
            && self
                .pipes
                .iter()
                .all(|p| p.out.len() + p.batch.len() < MAX_OUTPUT)
    }

    /// The connections' index for Redis channel `name`: a route's shard with
    /// a Redis Cluster, the URL's for everything else.
    fn index_of(&self, name: &[u8], sharded: bool) -> usize {
        match (&self.shards, sharded) {
            (Some(shards), true) => shards.index(redis::slots::slot(name)),
            _ => 0,
        }
    }

    /// The command that publishes to a route: sharded pub/sub with a
    /// Redis Cluster, where a channel's subscribers are counted exactly.
    fn publish_command(&self, sharded: bool) -> &'static [u8] {
        match (&self.shards, sharded) {
            (Some(_), true) => b"SPUBLISH",
            _ => b"PUBLISH",
        }
    }

    /// The URL's command connection, while the link is up.
    fn home(&mut self) -> Option<&mut Pipe> {
        self.pipes.first_mut()
    }
}

/// This hub's share of a request from `origin`.
struct Answer {
    origin: String,
    request: u64,
    part: u32,
    partial: Partial,
}

/// The cluster's counters, in `stats` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterCounters {
    /// Requests published for other hubs.
    pub cluster_requests: u64,
    /// Requests that came through Redis and were acted on here.
    pub cluster_messages_in: u64,
    /// Replies that said `unconfirmed` (or `fail` for want of proof).
    pub cluster_unconfirmed: u64,
    /// Messages from Redis that were not ours to read.
    pub cluster_bad_messages: u64,
    /// Clients' events for another hub's listeners that reached none.
    pub cluster_events_lost: u64,
    pub redis_connects: u64,
    pub redis_disconnects: u64,
}

/// The cluster part of `stats`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStats {
    pub node: String,
    /// "up" or "down".
    pub redis: &'static str,
    /// Redis channels this hub is subscribed to (or on its way).
    pub cluster_routes: usize,
    pub cluster_waiting: usize,
    #[serde(flatten)]
    pub counters: ClusterCounters,
}

impl Cluster {
    pub fn new(config: ClusterConfig, execute: Execute) -> Cluster {
        let names = Names::new(&config.prefix, &config.node);
        let mut state = State {
            epochs: epoch_base(&config.node),
            ..State::default()
        };
        state.routes.want(&names.inbox, true);
        state.routes.want(&names.all, true);
        state
            .routes
            .want(&names.route(Route::Node(&config.node)), true);
        Cluster {
            config,
            names,
            execute,
            scripts: Scripts::default(),
            state: RefCell::new(state),
        }
    }

    /// Whether streams of this kind keep history (in Redis) and carry
    /// positions.
    pub fn keeps_history(&self, stream: StreamKey) -> bool {
        streams::size(&self.config.history, stream) > 0
    }

    pub fn node(&self) -> &str {
        &self.config.node
    }

    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    pub fn is_up(&self) -> bool {
        self.state.borrow().up
    }

    /// Sends `line` to every hub that holds one of `targets`, one part per
    /// target, and returns the request to wait on; `message` if the line is
    /// a message of each target's stream, which then takes its next
    /// position. Published if the link can take it; otherwise acted on
    /// here alone, unconfirmed (and without positions).
    pub fn request(
        &self,
        hub: &mut Hub,
        line: &[u8],
        targets: &[Route],
        message: bool,
    ) -> GatherId {
        let mut state = self.state.borrow_mut();
        let id = state.gathers.start(targets.len());
        if state.room() {
            state.counters.cluster_requests += 1;
            // One buffer each for the message and the channel name, reused
            // by every part.
            let mut published = Vec::with_capacity(line.len() + 32);
            let mut route = Vec::new();
            for (part, &target) in targets.iter().enumerate() {
                let part = part as u32;
                published.clear();
                route.clear();
                let header = Header {
                    origin: &self.config.node,
                    request: id.wire(),
                    part,
                    pos: None,
                };
                self.names.route_into(&mut route, target);
                let sharded = matches!(target, Route::To(_));
                let size = match target {
                    Route::To(t) if message => streams::size(&self.config.history, t.stream()),
                    _ => 0,
                };
                // Only a stream's script may start a stream, with this epoch.
                let epoch = if size > 0 { next_epoch(&mut state) } else { 0 };
                let command = state.publish_command(sharded);
                let at = state.index_of(&route, sharded);
                let slot = state.shards.as_ref().map(|_| redis::slots::slot(&route));
                let pipe = &mut state.pipes[at];
                if size > 0 {
                    if !pipe.batch.takes(slot) {
                        self.flush(pipe);
                    }
                    wire::head(&mut published, &header);
                    let message = streams::Publish {
                        command,
                        route: &route,
                        head: &published,
                        line,
                        size,
                        epoch,
                    };
                    pipe.batch.push(&message, (id, part), slot);
                } else {
                    wire::request(&mut published, &header, line);
                    self.flush(pipe);
                    resp::command(&mut pipe.out, &[command, &route, &published]);
                    pipe.expect(Expect::Count(id, part));
                }
                pipe.wake();
            }
            return id;
        }
        drop(state);
        for (part, &target) in targets.iter().enumerate() {
            // Another hub's connection is not this hub's to act on.
            let elsewhere = matches!(target, Route::Node(node) if node != self.config.node);
            let partial = match elsewhere {
                true => None,
                false => (self.execute)(hub, self, target, None, line),
            };
            let mut state = self.state.borrow_mut();
            if let Some(partial) = partial {
                state.gathers.answer(id, part as u32, partial);
            }
            state.gathers.give_up(id, part as u32);
        }
        id
    }

    /// Ready with what a request gathered once it is complete.
    pub fn poll_gather(&self, id: GatherId, cx: &mut Context<'_>) -> Poll<Gathered> {
        let mut state = self.state.borrow_mut();
        let polled = state.gathers.poll(id, cx);
        if let Poll::Ready(Gathered {
            unconfirmed: true, ..
        }) = polled
        {
            state.counters.cluster_unconfirmed += 1;
        }
        polled
    }

    /// Ends a request at its deadline with what it has.
    pub fn finish(&self, id: GatherId) -> Gathered {
        let mut state = self.state.borrow_mut();
        let gathered = state.gathers.finish(id);
        if gathered.unconfirmed {
            state.counters.cluster_unconfirmed += 1;
        }
        gathered
    }

    /// Waits, besides the answers, for a connection's acknowledgement of
    /// request `id` (a push with `ack_timeout`) until `deadline`.
    pub fn await_ack(&self, id: GatherId, deadline: Instant) {
        let mut state = self.state.borrow_mut();
        if state.acks.len() >= 1024 {
            let now = Instant::now();
            state.acks.retain(|_, wait| wait.until >= now);
        }
        let wait = AckWait {
            acked: None,
            waker: None,
            until: deadline,
        };
        state.acks.insert(id.wire(), wait);
    }

    /// Ready, with when it came, once request `id` was acknowledged.
    pub fn poll_acked(&self, id: GatherId, cx: &mut Context<'_>) -> Poll<Instant> {
        let mut state = self.state.borrow_mut();
        let Some(wait) = state.acks.get_mut(&id.wire()) else {
            return Poll::Pending;
        };
        match wait.acked {
            Some(at) => Poll::Ready(at),
            None => {
                wait.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Stops waiting for request `id`'s acknowledgement.
    pub fn forget_ack(&self, id: GatherId) {
        self.state.borrow_mut().acks.remove(&id.wire());
    }

    /// A push of `header`'s request reached a connection of `uid` here at
    /// `pos`: its origin is told if a connection acknowledges it within
    /// `timeout`.
    pub fn relay_ack(&self, uid: &str, pos: Pos, header: &Header, timeout: Duration) {
        let mut state = self.state.borrow_mut();
        let now = Instant::now();
        let State {
            remote_acks,
            remote_ack_count,
            ..
        } = &mut *state;
        let list = remote_acks.entry(uid.to_string()).or_default();
        let before = list.len();
        list.retain(|w| w.until >= now);
        *remote_ack_count -= before - list.len();
        if *remote_ack_count >= MAX_REMOTE_ACKS {
            return;
        }
        list.push(RemoteAck {
            pos,
            origin: header.origin.to_string(),
            request: header.request,
            part: header.part,
            until: now + timeout,
        });
        *remote_ack_count += 1;
    }

    /// A connection of `uid` here acknowledged its stream up to `pos`: the
    /// origins of the pushes that covers are told.
    pub fn client_acked(&self, uid: &str, pos: Pos) {
        let mut state = self.state.borrow_mut();
        let Some(mut list) = state.remote_acks.remove(uid) else {
            return;
        };
        let now = Instant::now();
        let before = list.len();
        let mut told = Vec::new();
        list.retain(|w| {
            let covered = w.pos.epoch == pos.epoch && w.pos.offset <= pos.offset;
            if covered && w.until >= now {
                told.push((w.origin.clone(), w.request, w.part));
            }
            !covered && w.until >= now
        });
        state.remote_ack_count -= before - list.len();
        if !list.is_empty() {
            state.remote_acks.insert(uid.to_string(), list);
        }
        for (origin, request, part) in told {
            let answer = Answer {
                origin,
                request,
                part,
                partial: Partial::Acked,
            };
            self.answer(&mut state, answer);
        }
        drop(state);
        self.send_answers();
    }

    /// An acknowledgement of request `request` from the hub that holds the
    /// connection.
    fn on_acked(state: &mut State, request: u64) {
        if let Some(wait) = state.acks.get_mut(&request)
            && wait.acked.is_none()
        {
            wait.acked = Some(Instant::now());
            wake(&mut wait.waker);
        }
    }

    /// Drops a request whose answer nobody waits for: answers that come
    /// later find nothing.
    pub fn forget(&self, id: GatherId) {
        self.state.borrow_mut().gathers.finish(id);
    }

    /// Ready once requests for everything connection `id` holds (its uid,
    /// its channels) reach this hub, or at once while the link is down: a
    /// session does not act on its client's next message before, so that
    /// a client that saw its login answered can be reached from any hub.
    pub fn poll_ready(&self, hub: &Hub, id: ConnId, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.borrow_mut();
        if !state.up {
            return Poll::Ready(());
        }
        let uid_ready = hub.uid_of(id).is_none_or(|uid| {
            state
                .routes
                .ready(&self.names.route(Route::To(Target::Uid(uid))))
        });
        let channels_ready = || {
            hub.subscriptions_of(id).iter().all(|ch| {
                let route = Route::To(Target::Channel(ch));
                state.routes.ready(&self.names.route(route))
            })
        };
        if uid_ready && channels_ready() {
            return Poll::Ready(());
        }
        state.ready_waiters.push(cx.waker().clone());
        Poll::Pending
    }

    /// Reads where each of `streams` stands, and what came after the
    /// position given with it, for a client that is to be told. Call it
    /// once the client's routes are ready ([`poll_ready`](Cluster::poll_ready)):
    /// a message published after the read then reaches this hub too.
    pub fn read(&self, streams: &[(StreamKey, Option<Pos>)]) -> ReadId {
        let mut state = self.state.borrow_mut();
        let number = state.next_read;
        state.next_read += 1;
        let mut read = Read {
            since: streams.iter().map(|(_, since)| *since).collect(),
            results: streams.iter().map(|_| None).collect(),
            remaining: 0,
            waker: None,
        };
        if state.room() {
            for (i, &(stream, since)) in streams.iter().enumerate() {
                let size = streams::size(&self.config.history, stream);
                if size == 0 {
                    continue;
                }
                let route = self.names.route(Route::To(Target::from(stream)));
                let epoch = next_epoch(&mut state);
                let at = state.index_of(&route, true);
                let pipe = &mut state.pipes[at];
                let history = &self.config.history;
                self.flush(pipe);
                self.scripts
                    .read(&mut pipe.out, &route, since, size, history, epoch);
                pipe.expect(Expect::Read(number, i));
                pipe.wake();
                read.remaining += 1;
            }
        }
        state.reads.insert(number, read);
        ReadId(number)
    }

    /// Ready once a read is complete, with each stream's answer in the
    /// order asked (`None` where Redis could not say: a kind without
    /// history, or a link lost).
    pub fn poll_read(&self, id: ReadId, cx: &mut Context<'_>) -> Poll<Vec<Option<StreamRead>>> {
        let mut state = self.state.borrow_mut();
        let Some(read) = state.reads.get_mut(&id.0) else {
            return Poll::Ready(Vec::new());
        };
        if read.remaining > 0 {
            read.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let read = state.reads.remove(&id.0).map(|r| r.results);
        Poll::Ready(read.unwrap_or_default())
    }

    /// Drops a read nobody waits for any more.
    pub fn cancel_read(&self, id: ReadId) {
        self.state.borrow_mut().reads.remove(&id.0);
    }

    /// Writes the `PUBLISH` run of the messages batched on `pipe`, if any:
    /// before any other command is written there, so that every command
    /// goes out in the order it was made.
    fn flush(&self, pipe: &mut Pipe) {
        if pipe.batch.is_empty() {
            return;
        }
        let parts = self
            .scripts
            .publish(&mut pipe.out, &mut pipe.batch, &self.config.history);
        pipe.expect(Expect::Batch(parts));
    }

    /// What the device registry's keys start with (they share one slot).
    pub fn devices_key(&self) -> &[u8] {
        &self.names.devices
    }

    /// Sends another module's command, on the connection that serves `key`
    /// (one of the keys it touches); `None` if the link cannot take it now.
    pub fn call(&self, key: &[u8], args: &[&[u8]]) -> Option<CallId> {
        let mut state = self.state.borrow_mut();
        let number = state.next_call;
        if !self.command(&mut state, key, args, Expect::Call(number)) {
            return None;
        }
        state.next_call += 1;
        state.calls.insert(number, Call::default());
        Some(CallId(number))
    }

    /// Ready with a call's reply, or `None` if the link was lost before it
    /// came (whether Redis ran the command is then unknown).
    pub fn poll_call(&self, id: CallId, cx: &mut Context<'_>) -> Poll<Option<resp::Frame>> {
        let mut state = self.state.borrow_mut();
        let Some(call) = state.calls.get_mut(&id.0) else {
            return Poll::Ready(None);
        };
        match call.reply.take() {
            Some(reply) => {
                state.calls.remove(&id.0);
                Poll::Ready(reply)
            }
            None => {
                call.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Drops a call nobody waits for any more: its reply lands nowhere.
    pub fn cancel_call(&self, id: CallId) {
        self.state.borrow_mut().calls.remove(&id.0);
    }

    /// Sends a command whose reply nobody waits for; an error reply is
    /// logged as a failure to do `what`. False if the link cannot take it.
    pub fn cast(&self, key: &[u8], args: &[&[u8]], what: &'static str) -> bool {
        let mut state = self.state.borrow_mut();
        self.command(&mut state, key, args, Expect::Cast(what))
    }

    /// Writes another module's command on the connection that serves
    /// `key`, after the messages batched there; false if the link cannot
    /// take it now.
    fn command(&self, state: &mut State, key: &[u8], args: &[&[u8]], expect: Expect) -> bool {
        if !state.room() {
            return false;
        }
        let at = state.index_of(key, true);
        let pipe = &mut state.pipes[at];
        self.flush(pipe);
        resp::command(&mut pipe.out, args);
        pipe.expect(expect);
        pipe.wake();
        true
    }

    pub fn stats(&self) -> ClusterStats {
        let state = self.state.borrow();
        ClusterStats {
            node: self.config.node.clone(),
            redis: if state.up { "up" } else { "down" },
            cluster_routes: state.routes.len(),
            cluster_waiting: state.gathers.len(),
            counters: state.counters.clone(),
        }
    }
}

/// A fresh epoch for a stream this hub may create: unrelated to any other
/// hub's or run's (a random base, mixed with a count).
fn next_epoch(state: &mut State) -> u64 {
    state.epochs = state.epochs.wrapping_add(1);
    state
        .epochs
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
}

fn epoch_base(node: &str) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    // std's RandomState is seeded from the operating system.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    node.hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    hasher.finish()
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(w) = waker.take() {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_round_trip_and_carry_a_hash_tag() {
        let names = Names::new("pushhub", "a");
        for target in [
            Route::To(Target::Uid("u1")),
            Route::To(Target::Uid("we}ird:{uid")),
            Route::To(Target::Channel("news")),
            Route::To(Target::All),
            Route::Node("b"),
        ] {
            let route = names.route(target);
            assert_eq!(names.target(&route), Some(target));
        }
        let u1 = Route::To(Target::Uid("u1"));
        assert_eq!(names.route(u1), b"pushhub:{u:u1}");
        assert_eq!(names.target(b"pushhub:{u:u1"), None);
        assert_eq!(names.target(b"pushhub:n:a"), None);
        assert_eq!(names.target(b"other:{u:u1}"), None);
    }
}
