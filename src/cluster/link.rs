//! The cluster's connections to Redis, as tasks of the hub's executor. To
//! the `--redis` URL's server: a command connection (`PUBLISH`es and
//! scripts, pipelined, their replies in order) and a subscriber connection
//! (the routes, and the requests and answers that arrive on them). With a
//! Redis Cluster, the URL's node keeps the hubs' own channels (inboxes,
//! listeners), and each shard's master gets a pair of its own for the
//! routes whose slots it serves, with sharded pub/sub. All are made
//! together, and lost together: when any fails or stalls past
//! `--cluster-timeout`, all are dropped, every waiting request settles
//! unconfirmed, and the link is made again with backoff (the shard map
//! read anew), its routes subscribed anew. A slot that moves between the
//! masters the hub knows is followed in place: the command that met the
//! move is unconfirmed, the map is read again, and the routes the old
//! master dropped are subscribed on the new one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use log::{debug, info, warn};
use smol::Timer;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::redis::conn::{self, ConnectError, Stream};
use super::redis::resp::{self, Frame, Input};
use super::redis::slots::{self, ShardAddr, SlotMap};
use super::redis::url::{Addr, RedisUrl};
use super::{Answer, Cluster, Expect, GatherId, MapState, Outbox, Pipe, Shards, State, wake, wire};
use crate::hub::RouteChange;
use crate::shared::Shared;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Channels per `SUBSCRIBE` or `UNSUBSCRIBE`: a reconnection subscribes
/// every route again, and one command per route would be one reply each.
const CHANNELS_PER_COMMAND: usize = 1024;

/// Messages acted on before the subscriber's reader lets other tasks run.
const MESSAGE_BUDGET: usize = 256;

/// Shards a Redis Cluster may have here: a connection index is a byte.
const MAX_SHARDS: usize = 254;

/// Keeps the cluster's link to Redis up, for the life of the hub.
pub(crate) async fn run(shared: Rc<Shared>) {
    let Some(cluster) = shared.cluster.clone() else {
        return;
    };
    let url = &cluster.config.url;
    let mut delay = BACKOFF_MIN;
    let mut failures: u64 = 0;
    loop {
        // What changed while there was no link is subscribed on the next.
        cluster.absorb_routes(&shared, std::task::Waker::noop());
        match connect(&cluster).await {
            Ok(link) => {
                delay = BACKOFF_MIN;
                failures = 0;
                let shards = link.pairs.len() - 1;
                cluster.link_up(link.shards, link.pairs.len());
                match shards {
                    0 => info!("redis: connected to {url} as node {}", cluster.node()),
                    n => info!(
                        "redis: connected to the Redis Cluster of {url} ({n} shards) as node {}",
                        cluster.node()
                    ),
                }
                let why = serve(&shared, &cluster, link.pairs).await;
                cluster.link_down();
                cluster.forget_listener_hubs(&shared);
                warn!("redis: link lost: {why}; serving this hub's clients alone until it is back");
            }
            Err(e) => {
                // Once, then every minute or so while it lasts.
                if failures.is_multiple_of(30) {
                    warn!("redis: cannot connect to {url}: {e}; retrying");
                }
                failures += 1;
            }
        }
        Timer::after(jitter(delay)).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// A command connection and a subscriber connection to one server.
struct Pair {
    commands: (Stream, Input),
    subscriber: (Stream, Input),
}

struct Link {
    /// `[0]` to the URL's server, then one per shard.
    pairs: Vec<Pair>,
    shards: Option<Shards>,
}

/// Connects through the `--redis` URL, or (should it be down) a master the
/// hub learned of before: with a Redis Cluster, any node tells where the
/// shards are.
async fn connect(cluster: &Cluster) -> Result<Link, ConnectError> {
    let seeds: Vec<RedisUrl> = std::iter::once(cluster.config.url.clone())
        .chain(
            cluster
                .state
                .borrow()
                .seeds
                .iter()
                .map(|m| cluster.url_of(m)),
        )
        .collect();
    let mut failure = None;
    for seed in &seeds {
        match connect_through(cluster, seed).await {
            Ok(link) => return Ok(link),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure.unwrap_or(ConnectError::TimedOut))
}

async fn connect_through(cluster: &Cluster, seed: &RedisUrl) -> Result<Link, ConnectError> {
    let mut commands = connect_one(cluster, seed, "cmd").await?;
    let Some(map) = shard_map(&mut commands).await? else {
        let subscriber = connect_one(cluster, seed, "sub").await?;
        return Ok(Link {
            pairs: vec![Pair {
                commands,
                subscriber,
            }],
            shards: None,
        });
    };
    let masters: Vec<ShardAddr> = map.masters().cloned().collect();
    if masters.len() > MAX_SHARDS {
        return Err(ConnectError::Protocol(format!(
            "a Redis Cluster of {} shards; at most {MAX_SHARDS} are supported",
            masters.len()
        )));
    }
    let by_slot = by_slot(&map, &masters).map_err(ConnectError::Protocol)?;
    // The hubs' own channels and keys live on one master that every hub
    // finds the same way: that of `PREFIX:{hubs}`'s slot.
    let home_slot = slots::slot(&cluster.names.home);
    let home = &masters[usize::from(by_slot[usize::from(home_slot)]) - 1];
    let mut pairs = vec![connect_pair(cluster, &cluster.url_of(home), "").await?];
    for (i, master) in masters.iter().enumerate() {
        let url = cluster.url_of(master);
        pairs.push(connect_pair(cluster, &url, &format!("-s{i}")).await?);
    }
    cluster.state.borrow_mut().seeds = masters;
    Ok(Link {
        pairs,
        shards: Some(Shards { by_slot }),
    })
}

/// For each slot, the index of the connections to its master: 1 + its
/// place in `masters`, which must hold every master of `map`.
fn by_slot(map: &SlotMap, masters: &[ShardAddr]) -> Result<Vec<u8>, String> {
    let mut by_slot = vec![0u8; usize::from(slots::SLOTS)];
    for (slot, entry) in by_slot.iter_mut().enumerate() {
        let master = map
            .master_for(slot as u16)
            .ok_or_else(|| format!("slot {slot} has no master: the Redis Cluster is not whole"))?;
        let index = masters
            .iter()
            .position(|m| m == master)
            .ok_or_else(|| format!("a new master, {master}"))?;
        *entry = (index + 1) as u8;
    }
    Ok(by_slot)
}

async fn connect_pair(cluster: &Cluster, url: &RedisUrl, tag: &str) -> Result<Pair, ConnectError> {
    Ok(Pair {
        commands: connect_one(cluster, url, &format!("cmd{tag}")).await?,
        subscriber: connect_one(cluster, url, &format!("sub{tag}")).await?,
    })
}

async fn connect_one(
    cluster: &Cluster,
    url: &RedisUrl,
    role: &str,
) -> Result<(Stream, Input), ConnectError> {
    let config = &cluster.config;
    let limit = config.timeout.max(Duration::from_secs(1));
    let name = format!("pushhub-{}-{role}", config.node);
    let password = config.password.as_ref();
    conn::connect(url, password, &name, limit, config.max_frame).await
}

/// A Redis Cluster's shard map, or `None` for a standalone Redis.
async fn shard_map(commands: &mut (Stream, Input)) -> Result<Option<SlotMap>, ConnectError> {
    let (stream, input) = commands;
    let mut out = BytesMut::new();
    resp::command(&mut out, &[b"CLUSTER", b"SHARDS"]);
    write_all(stream, &out).await.map_err(ConnectError::Io)?;
    let reply = conn::read_frame(stream, input).await?;
    if let Frame::Error(e) = &reply {
        // A standalone server, or a Redis before 7: not a cluster to us.
        if e.contains("cluster support disabled") || e.contains("unknown subcommand") {
            return Ok(None);
        }
        return Err(ConnectError::Refused(e.to_string()));
    }
    SlotMap::from_shards(&reply)
        .map(Some)
        .map_err(|e| ConnectError::Protocol(format!("CLUSTER SHARDS: {e}")))
}

/// Between the 50% and 100% of `delay`, so that hubs that lost Redis
/// together do not all come back in the same millisecond.
fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    delay / 2 + delay.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

type Task<'a> = Pin<Box<dyn Future<Output = String> + 'a>>;

/// Runs the link until it fails; says why.
async fn serve(shared: &Shared, cluster: &Cluster, pairs: Vec<Pair>) -> String {
    let mut tasks: Vec<Task> = Vec::new();
    for (i, pair) in pairs.into_iter().enumerate() {
        let Pair {
            commands: (commands, command_input),
            subscriber: (subscriber, subscriber_input),
        } = pair;
        let commands = Rc::new(commands);
        let subscriber = Rc::new(subscriber);
        tasks.push(Box::pin(write_commands(cluster, i, Rc::clone(&commands))));
        tasks.push(Box::pin(read_replies(cluster, i, commands, command_input)));
        tasks.push(Box::pin(write_subscriber(
            cluster,
            i,
            Rc::clone(&subscriber),
        )));
        tasks.push(Box::pin(read_messages(
            shared,
            cluster,
            i,
            subscriber,
            subscriber_input,
        )));
    }
    tasks.push(Box::pin(write_routes(shared, cluster)));
    tasks.push(Box::pin(watch(cluster)));
    tasks.push(Box::pin(super::events::forward(shared, cluster)));
    // The first to end ends them all.
    std::future::poll_fn(|cx| {
        for task in &mut tasks {
            if let Poll::Ready(why) = task.as_mut().poll(cx) {
                return Poll::Ready(why);
            }
        }
        Poll::Pending
    })
    .await
}

async fn write_commands(cluster: &Cluster, at: usize, stream: Rc<Stream>) -> String {
    loop {
        let out = std::future::poll_fn(|cx| {
            let mut state = cluster.state.borrow_mut();
            let Some(pipe) = state.pipes.get_mut(at) else {
                return Poll::Ready(None);
            };
            // The messages of this turn, in one script run.
            cluster.flush(pipe);
            if pipe.out.is_empty() {
                pipe.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Some(std::mem::take(&mut pipe.out)))
        })
        .await;
        let Some(out) = out else {
            return "the link was reset".into();
        };
        if let Err(e) = write_all(&stream, &out).await {
            return format!("write failed: {e}");
        }
    }
}

async fn read_replies(
    cluster: &Cluster,
    at: usize,
    stream: Rc<Stream>,
    mut input: Input,
) -> String {
    loop {
        loop {
            match input.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(e) = cluster.on_reply(at, frame) {
                        return e;
                    }
                }
                Ok(None) => break,
                Err(e) => return format!("bad reply: {e}"),
            }
        }
        if let Err(e) = read(&stream, &mut input).await {
            return e;
        }
    }
}

async fn write_subscriber(cluster: &Cluster, at: usize, stream: Rc<Stream>) -> String {
    loop {
        let out = std::future::poll_fn(|cx| {
            let mut state = cluster.state.borrow_mut();
            let Some(outbox) = state.subscribers.get_mut(at) else {
                return Poll::Ready(None);
            };
            if outbox.out.is_empty() {
                outbox.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Some(std::mem::take(&mut outbox.out)))
        })
        .await;
        let Some(out) = out else {
            return "the link was reset".into();
        };
        if let Err(e) = write_all(&stream, &out).await {
            return format!("write failed: {e}");
        }
    }
}

/// Turns the routes' batches into (un)subscriptions, each on the
/// subscriber connection of its shard.
async fn write_routes(shared: &Shared, cluster: &Cluster) -> String {
    loop {
        std::future::poll_fn(|cx| {
            cluster.absorb_routes(shared, cx.waker());
            let mut state = cluster.state.borrow_mut();
            if !state.routes.has_batch() {
                state.routes_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let batch = state.routes.batch();
            cluster.encode_batch(&mut state, true, &batch.subscribe);
            cluster.encode_batch(&mut state, false, &batch.unsubscribe);
            Poll::Ready(())
        })
        .await;
    }
}

async fn read_messages(
    shared: &Shared,
    cluster: &Cluster,
    at: usize,
    stream: Rc<Stream>,
    mut input: Input,
) -> String {
    loop {
        let mut budget = MESSAGE_BUDGET;
        loop {
            match input.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(e) = cluster.on_push(shared, at, frame) {
                        return e;
                    }
                    budget -= 1;
                    if budget == 0 {
                        cluster.send_answers();
                        smol::future::yield_now().await;
                        budget = MESSAGE_BUDGET;
                    }
                }
                Ok(None) => break,
                Err(e) => return format!("bad message: {e}"),
            }
        }
        cluster.send_answers();
        if let Err(e) = read(&stream, &mut input).await {
            return e;
        }
    }
}

/// Fails the link when Redis stops answering, and checks that it still
/// does when nothing else would tell.
async fn watch(cluster: &Cluster) -> String {
    let limit = cluster.config.timeout;
    let period = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut last_ping = Instant::now();
    let mut last_look = Instant::now();
    cluster.ask_for_listeners();
    loop {
        Timer::after(period).await;
        if last_look.elapsed() >= Duration::from_secs(1) {
            last_look = Instant::now();
            cluster.ask_for_listeners();
        }
        let mut state = cluster.state.borrow_mut();
        for pipe in &state.pipes {
            if let Some((since, _)) = pipe.expected.front()
                && since.elapsed() > limit
            {
                return format!("no reply from Redis in {limit:?}");
            }
        }
        // At most once a period: during a resharding a map read at once
        // may not show the move yet.
        if state.map == MapState::Stale
            && let Some(home) = state.home()
        {
            resp::command(&mut home.out, &[b"CLUSTER", b"SHARDS"]);
            home.expect(Expect::ShardMap);
            home.wake();
            state.map = MapState::Asked;
        }
        if last_ping.elapsed() >= Duration::from_secs(1) {
            last_ping = Instant::now();
            for pipe in &mut state.pipes {
                if pipe.expected.is_empty() {
                    resp::command(&mut pipe.out, &[b"PING"]);
                    pipe.expect(Expect::Ping);
                    pipe.wake();
                }
            }
        }
    }
}

async fn read(stream: &Stream, input: &mut Input) -> Result<(), String> {
    const CHUNK: usize = 64 * 1024;
    let spare = input.spare(CHUNK);
    let n = match stream {
        Stream::Tcp(s) => (&*s).read(spare).await,
        Stream::Unix(s) => (&*s).read(spare).await,
    };
    match n {
        Ok(0) => {
            input.filled(CHUNK, 0);
            Err("Redis closed the connection".into())
        }
        Ok(n) => {
            input.filled(CHUNK, n);
            Ok(())
        }
        Err(e) => {
            input.filled(CHUNK, 0);
            Err(format!("read failed: {e}"))
        }
    }
}

async fn write_all(stream: &Stream, bytes: &[u8]) -> std::io::Result<()> {
    match stream {
        Stream::Tcp(s) => (&*s).write_all(bytes).await,
        Stream::Unix(s) => (&*s).write_all(bytes).await,
    }
}

impl Cluster {
    /// The URL of a Redis Cluster node: the `--redis` URL's but for the
    /// address.
    fn url_of(&self, node: &ShardAddr) -> RedisUrl {
        RedisUrl {
            addr: Addr::Tcp {
                host: node.host.clone(),
                port: node.port,
            },
            ..self.config.url.clone()
        }
    }

    /// Takes the hub's route changes into the routes; `waker` is woken
    /// at the next one.
    fn absorb_routes(&self, shared: &Shared, waker: &std::task::Waker) {
        self.track_listeners(shared);
        let changes = shared.hub.borrow_mut().take_routes(waker);
        self.absorb(changes);
    }

    /// Notes the hub's route changes for the next batch, and says which
    /// routes it took that Redis has yet to confirm.
    fn absorb(&self, changes: Vec<RouteChange>) -> Vec<Box<[u8]>> {
        if changes.is_empty() {
            return Vec::new();
        }
        let mut state = self.state.borrow_mut();
        let mut pending = Vec::new();
        for change in changes {
            let target = match change.channel {
                true => crate::hub::Target::Channel(&change.name),
                false => crate::hub::Target::Uid(&change.name),
            };
            let route = self.names.route(super::Route::To(target));
            state.routes.want(&route, change.held);
            if state.routes.pending(&route) {
                pending.push(route.into_boxed_slice());
            }
        }
        if state.routes.has_batch() {
            wake(&mut state.routes_waker);
        }
        pending
    }

    /// A new link of `pairs` pairs of connections: nothing is subscribed on
    /// it yet.
    fn link_up(&self, shards: Option<Shards>, pairs: usize) {
        let mut state = self.state.borrow_mut();
        state.up = true;
        state.counters.redis_connects += 1;
        state.pipes = (0..pairs).map(|_| Pipe::default()).collect();
        state.subscribers = (0..pairs).map(|_| Outbox::default()).collect();
        state.shards = shards;
        state.map = MapState::Fresh;
        state.dropped.clear();
        state.routes.reset();
        for at in 0..pairs {
            self.load_scripts(&mut state, at);
        }
        // Once per run: what a Redis restart would lose is its settings'.
        if state.counters.redis_connects == 1 {
            for pipe in &mut state.pipes {
                resp::command(&mut pipe.out, &[b"CONFIG", b"GET", b"appendonly"]);
                pipe.expect(Expect::Persistence);
            }
        }
        wake(&mut state.routes_waker);
    }

    /// Loads the streams' scripts on command connection `at`, ahead of
    /// whatever `EVALSHA` comes next on it.
    fn load_scripts(&self, state: &mut State, at: usize) {
        let Some(pipe) = state.pipes.get_mut(at) else {
            return;
        };
        self.scripts.load(&mut pipe.out);
        for _ in 0..2 {
            pipe.expect(Expect::Script);
        }
        pipe.wake();
    }

    /// The link is gone, and every answer still to come with it.
    fn link_down(&self) {
        let mut state = self.state.borrow_mut();
        let State {
            up,
            pipes,
            subscribers,
            shards,
            gathers,
            answers,
            held,
            ready_waiters,
            reads,
            calls,
            counters,
            ..
        } = &mut *state;
        *up = false;
        counters.redis_disconnects += 1;
        pipes.clear();
        subscribers.clear();
        *shards = None;
        answers.clear();
        held.clear();
        gathers.give_up_all();
        for waker in ready_waiters.drain(..) {
            waker.wake();
        }
        // What Redis did not say stays unknown.
        for read in reads.values_mut() {
            read.remaining = 0;
            wake(&mut read.waker);
        }
        for call in calls.values_mut() {
            call.reply.get_or_insert(None);
            wake(&mut call.waker);
        }
    }

    /// Appends a batch of route changes to the subscriber connections
    /// they belong to: routes as sharded (un)subscriptions of their
    /// shard's with a Redis Cluster (one command per slot, which
    /// `SSUBSCRIBE` requires), the rest with the URL's.
    fn encode_batch(&self, state: &mut State, subscribe: bool, channels: &[Box<[u8]>]) {
        let sharded = state.shards.is_some();
        let mut groups: HashMap<(usize, Option<u16>), Vec<&[u8]>> = HashMap::new();
        for channel in channels {
            let route = sharded && self.names.is_route(channel);
            let slot = route.then(|| slots::slot(channel));
            let at = state.index_of(channel, route);
            groups.entry((at, slot)).or_default().push(channel);
        }
        for ((at, slot), channels) in groups {
            let command: &[u8] = match (subscribe, slot.is_some()) {
                (true, true) => b"SSUBSCRIBE",
                (false, true) => b"SUNSUBSCRIBE",
                (true, false) => b"SUBSCRIBE",
                (false, false) => b"UNSUBSCRIBE",
            };
            let Some(outbox) = state.subscribers.get_mut(at) else {
                continue;
            };
            for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
                let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
                args.push(command);
                args.extend_from_slice(chunk);
                resp::command(&mut outbox.out, &args);
            }
            wake(&mut outbox.waker);
        }
    }

    /// A reply on command connection `at`.
    fn on_reply(&self, at: usize, frame: Frame) -> Result<(), String> {
        let mut state = self.state.borrow_mut();
        let expect = state.pipes.get_mut(at).and_then(|p| p.expected.pop_front());
        let Some((_, expect)) = expect else {
            return Err(format!("a reply to no command: {frame:?}"));
        };
        // A slot that moved (or is moving): the command was not run, and
        // stands unconfirmed; the map is read again (`watch`).
        let redirect = match &frame {
            Frame::Error(e) => slots::redirect(e.as_bytes()),
            _ => None,
        };
        let moved = redirect.is_some();
        if matches!(redirect, Some(slots::Redirect::Moved { .. })) && state.map == MapState::Fresh {
            state.map = MapState::Stale;
        }
        match (expect, frame) {
            (Expect::Count(id, part), Frame::Integer(n)) => {
                let n = u32::try_from(n).unwrap_or(0);
                state.gathers.expect(id, part, n);
            }
            (Expect::Count(id, part), other) => {
                if !moved {
                    warn!("redis: PUBLISH refused: {other:?}");
                }
                self.reload_if_needed(&mut state, at, &other);
                state.gathers.give_up(id, part);
            }
            (Expect::Batch(parts), Frame::Array(replies)) if replies.len() == parts.len() => {
                for ((id, part), reply) in parts.into_iter().zip(&replies) {
                    match super::streams::published(reply) {
                        Some((n, _)) => state.gathers.expect(id, part, n),
                        None => {
                            warn!("redis: unexpected reply to a message: {reply:?}");
                            state.gathers.give_up(id, part);
                        }
                    }
                }
            }
            (Expect::Batch(parts), other) => {
                if !moved {
                    warn!("redis: the messages' script was refused: {other:?}");
                }
                self.reload_if_needed(&mut state, at, &other);
                for (id, part) in parts {
                    state.gathers.give_up(id, part);
                }
            }
            (Expect::Read(number, i), reply) => {
                self.reload_if_needed(&mut state, at, &reply);
                let history = &self.config.history;
                let Some(read) = state.reads.get_mut(&number) else {
                    return Ok(());
                };
                let since = read.since.get(i).copied().flatten();
                let result =
                    super::streams::read_reply(reply, since, history, super::streams::now_ms());
                let known = result.is_some();
                if let Some(slot) = read.results.get_mut(i) {
                    *slot = result;
                }
                // Messages of the stream published before the read may still
                // be on their way on the subscriber connection: the read is
                // complete once a ping sent after it comes back there.
                let outbox = state.subscribers.get_mut(at).filter(|_| known);
                match outbox {
                    Some(outbox) => {
                        resp::command(&mut outbox.out, &[b"PING"]);
                        outbox.pongs.push_back(number);
                        wake(&mut outbox.waker);
                    }
                    None => self.read_done(&mut state, number),
                }
            }
            (Expect::Call(number), reply) => {
                if let Some(call) = state.calls.get_mut(&number) {
                    call.reply = Some(Some(reply));
                    wake(&mut call.waker);
                }
            }
            (Expect::Cast(what), Frame::Error(e)) => warn!("redis: cannot {what}: {e}"),
            (Expect::Cast(_), _) => {}
            (Expect::Persistence, Frame::Array(pair)) => {
                if pair
                    .get(1)
                    .and_then(resp::bytes)
                    .is_some_and(|v| &v[..] == b"no")
                {
                    warn!(
                        "redis: appendonly is off on a server of the cluster: a restart of \
                         Redis loses what came after its last snapshot (device \
                         registrations, positions); set appendonly yes (README, \
                         \"Running several hubs\")"
                    );
                }
            }
            // CONFIG renamed or denied (a managed Redis): nothing to say.
            (Expect::Persistence, _) => {}
            (Expect::Script, Frame::BulkString(_)) => {}
            (Expect::Script, other) => warn!("redis: SCRIPT LOAD refused: {other:?}"),
            (Expect::ListenerHubs, reply) => {
                drop(state);
                self.on_listener_hubs(&reply);
            }
            (Expect::Events(n), Frame::Integer(0)) => {
                state.counters.cluster_events_lost += u64::from(n)
            }
            (Expect::ShardMap, reply) => return self.on_shard_map(&mut state, &reply),
            (Expect::Ping, Frame::SimpleString(_))
            | (Expect::Ignore | Expect::Events(_), Frame::Integer(_)) => {}
            (_, other) => debug!("redis: unexpected reply {other:?}"),
        }
        Ok(())
    }

    /// A fresh shard map, asked for because slots moved. With the same
    /// masters, the hub follows it in place: routes the old masters
    /// dropped are subscribed where their slots are now. New masters, or
    /// the hubs' own slot moved, make the link anew.
    fn on_shard_map(&self, state: &mut State, reply: &Frame) -> Result<(), String> {
        state.map = MapState::Fresh;
        let map = SlotMap::from_shards(reply).map_err(|e| format!("CLUSTER SHARDS: {e}"))?;
        let by_slot = by_slot(&map, &state.seeds)?;
        let home_slot = usize::from(slots::slot(&self.names.home));
        let Some(shards) = &mut state.shards else {
            return Ok(());
        };
        if by_slot[home_slot] != shards.by_slot[home_slot] {
            return Err("the hubs' own slot moved to another shard".into());
        }
        shards.by_slot = by_slot;
        for channel in std::mem::take(&mut state.dropped) {
            state.routes.requeue(&channel);
        }
        wake(&mut state.routes_waker);
        Ok(())
    }

    /// One more of a read's answers is in.
    fn read_done(&self, state: &mut State, number: u64) {
        if let Some(read) = state.reads.get_mut(&number) {
            read.remaining = read.remaining.saturating_sub(1);
            if read.remaining == 0 {
                wake(&mut read.waker);
            }
        }
    }

    /// Loads the scripts again if Redis lost them (`SCRIPT FLUSH`): what
    /// ran into that is unconfirmed, what follows works.
    fn reload_if_needed(&self, state: &mut State, at: usize, reply: &Frame) {
        if let Frame::Error(e) = reply
            && e.starts_with("NOSCRIPT")
        {
            self.load_scripts(state, at);
        }
    }

    /// Something on the subscriber connection: a message on a route or
    /// the inbox, or the confirmation of a (un)subscription.
    fn on_push(&self, shared: &Shared, at: usize, frame: Frame) -> Result<(), String> {
        if let Frame::Error(e) = &frame
            && let Some(redirect) = slots::redirect(e.as_bytes())
        {
            // An `SSUBSCRIBE` that reached a master no longer (or not yet)
            // serving its slot: its routes wait for the fresh map.
            let slot = redirect.slot();
            let mut state = self.state.borrow_mut();
            let lost = state
                .routes
                .drop_subscribing(|channel| slots::slot(channel) == slot);
            state.dropped.extend(lost);
            if state.map == MapState::Fresh {
                state.map = MapState::Stale;
            }
            return Ok(());
        }
        let Frame::Array(items) = frame else {
            return Err(format!("unexpected {frame:?} on the subscriber connection"));
        };
        let kind = items.first().and_then(resp::bytes).map(|b| &b[..]);
        match (kind, items.get(1).and_then(resp::bytes), items.get(2)) {
            (Some(b"message" | b"smessage"), Some(channel), Some(payload)) => {
                let Some(payload) = resp::bytes(payload) else {
                    return Err("a message without a payload".into());
                };
                self.on_message(shared, channel, payload);
            }
            // Redis Cluster says so when a slot moves away: the route waits
            // for the fresh map.
            (Some(b"sunsubscribe"), Some(channel), _)
                if !self.state.borrow().routes.leaving(channel) =>
            {
                let mut state = self.state.borrow_mut();
                if state.routes.drop_subscribed(channel) {
                    state.dropped.push(channel.to_vec().into());
                }
                if state.map == MapState::Fresh {
                    state.map = MapState::Stale;
                }
            }
            (Some(b"subscribe" | b"ssubscribe"), Some(channel), _) => {
                let mut state = self.state.borrow_mut();
                state.routes.confirmed(channel, true);
                if state.routes.has_batch() {
                    wake(&mut state.routes_waker);
                }
                for waker in state.ready_waiters.drain(..) {
                    waker.wake();
                }
                self.release_held(&mut state);
            }
            (Some(b"unsubscribe" | b"sunsubscribe"), Some(channel), _) => {
                let mut state = self.state.borrow_mut();
                state.routes.confirmed(channel, false);
                if state.routes.has_batch() {
                    wake(&mut state.routes_waker);
                }
                self.release_held(&mut state);
            }
            (Some(b"pong"), _, _) => {
                let mut state = self.state.borrow_mut();
                let number = state
                    .subscribers
                    .get_mut(at)
                    .and_then(|o| o.pongs.pop_front());
                match number {
                    Some(number) => self.read_done(&mut state, number),
                    None => return Err("a pong for no ping".into()),
                }
            }
            _ => {
                self.state.borrow_mut().counters.cluster_bad_messages += 1;
                debug!("redis: unexpected push {items:?}");
            }
        }
        Ok(())
    }

    fn on_message(&self, shared: &Shared, channel: &[u8], payload: &[u8]) {
        if let Some(rest) = channel.strip_prefix(&self.names.listen[..]) {
            let me = self.config.node.as_bytes();
            if rest
                .strip_suffix(me)
                .is_some_and(|kinds| kinds.ends_with(b":"))
            {
                self.on_events(shared, payload);
            }
            return;
        }
        if channel == self.names.inbox {
            let mut state = self.state.borrow_mut();
            for (request, part, partial) in wire::parse_answers(payload) {
                match partial {
                    wire::Partial::Acked => Cluster::on_acked(&mut state, request),
                    partial => state
                        .gathers
                        .answer(GatherId::from_wire(request), part, partial),
                }
            }
            return;
        }
        let parsed = self.names.target(channel).zip(wire::parse_request(payload));
        let Some((target, (header, line))) = parsed else {
            self.state.borrow_mut().counters.cluster_bad_messages += 1;
            return;
        };
        let (partial, taken) = {
            let mut hub = shared.hub.borrow_mut();
            let partial = (self.execute)(&mut hub, self, target, Some(&header), line);
            // A subscription is answered once other hubs' publications
            // reach it: the channels it made this hub take wait for Redis.
            let taken = match &partial {
                Some(wire::Partial::Subscribed(added, _)) if *added > 0 => hub.drain_routes(),
                _ => Vec::new(),
            };
            (partial, taken)
        };
        let waits = self.absorb(taken);
        let mut state = self.state.borrow_mut();
        state.counters.cluster_messages_in += 1;
        // A line this hub cannot act on gets no answer: its origin then
        // says unconfirmed, which is the truth.
        let Some(partial) = partial else {
            state.counters.cluster_bad_messages += 1;
            return;
        };
        let answer = Answer {
            origin: header.origin.to_owned(),
            request: header.request,
            part: header.part,
            partial,
        };
        match waits.is_empty() {
            true => self.answer(&mut state, answer),
            false => state.held.push((answer, waits)),
        }
    }

    /// Answers another hub's request, or one of this hub's own.
    pub(super) fn answer(&self, state: &mut State, answer: Answer) {
        let Answer {
            origin,
            request,
            part,
            partial,
        } = answer;
        if origin == self.config.node {
            match partial {
                wire::Partial::Acked => Cluster::on_acked(state, request),
                partial => state
                    .gathers
                    .answer(GatherId::from_wire(request), part, partial),
            }
            return;
        }
        // One origin's answers share one batch.
        let batch = state.answers.entry(origin).or_default();
        wire::answer(batch, request, part, &partial);
    }

    /// Answers the held requests whose routes Redis has now confirmed (or
    /// that this hub no longer holds).
    fn release_held(&self, state: &mut State) {
        if state.held.is_empty() {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.held)
            .into_iter()
            .partition(|(_, waits)| waits.iter().all(|r| !state.routes.pending(r)));
        state.held = waiting;
        for (answer, _) in ready {
            self.answer(state, answer);
        }
    }

    /// Publishes the answers gathered for other hubs, one message per hub.
    pub(super) fn send_answers(&self) {
        let mut state = self.state.borrow_mut();
        if state.answers.is_empty() {
            return;
        }
        let answers = std::mem::take(&mut state.answers);
        let Some(home) = state.home() else {
            return;
        };
        for (origin, batch) in answers {
            let inbox = [&self.names.node[..], origin.as_bytes()].concat();
            resp::command(&mut home.out, &[b"PUBLISH", &inbox, &batch]);
            home.expect(Expect::Ignore);
        }
        home.wake();
    }
}
