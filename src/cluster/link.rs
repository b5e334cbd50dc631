//! The cluster's two connections to Redis, as tasks of the hub's executor:
//! the command connection (`PUBLISH`es, pipelined, their replies in order)
//! and the subscriber connection (the routes, and the requests and
//! answers that arrive on them). Both are made together, and lost
//! together: when either fails or stalls past `--cluster-timeout`, both
//! are dropped, every waiting request settles unconfirmed, and the link
//! is made again with backoff, its routes subscribed anew.

use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use log::{debug, info, warn};
use smol::Timer;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::redis::conn::{self, ConnectError, Stream};
use super::redis::resp::{self, Frame, Input};
use super::{Answer, Cluster, Expect, GatherId, State, wake, wire};
use crate::hub::RouteChange;
use crate::shared::Shared;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Channels per `SUBSCRIBE` or `UNSUBSCRIBE`: a reconnection subscribes
/// every route again, and one command per route would be one reply each.
const CHANNELS_PER_COMMAND: usize = 1024;

/// Messages acted on before the subscriber's reader lets other tasks run.
const MESSAGE_BUDGET: usize = 256;

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
                cluster.link_up();
                info!("redis: connected to {url} as node {}", cluster.node());
                let why = serve(&shared, &cluster, link).await;
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

struct Link {
    commands: (Stream, Input),
    subscriber: (Stream, Input),
}

async fn connect(cluster: &Cluster) -> Result<Link, ConnectError> {
    let config = &cluster.config;
    let limit = config.timeout.max(Duration::from_secs(1));
    let password = config.password.as_ref();
    let name = |role: &str| format!("pushhub-{}-{role}", config.node);
    let max = config.max_frame;
    let commands = conn::connect(&config.url, password, &name("cmd"), limit, max).await?;
    let subscriber = conn::connect(&config.url, password, &name("sub"), limit, max).await?;
    Ok(Link {
        commands,
        subscriber,
    })
}

/// Between the 50% and 100% of `delay`, so that hubs that lost Redis
/// together do not all come back in the same millisecond.
fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    delay / 2 + delay.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// Runs the link until it fails; says why.
async fn serve(shared: &Shared, cluster: &Cluster, link: Link) -> String {
    let Link {
        commands: (commands, command_input),
        subscriber: (subscriber, subscriber_input),
    } = link;
    let write_commands = write_commands(cluster, &commands);
    let read_replies = read_replies(cluster, &commands, command_input);
    let write_routes = write_routes(shared, cluster, &subscriber);
    let read_messages = read_messages(shared, cluster, &subscriber, subscriber_input);
    let watch = watch(cluster);
    let forward = super::events::forward(shared, cluster);
    smol::future::or(
        smol::future::or(write_commands, smol::future::or(read_replies, forward)),
        smol::future::or(write_routes, smol::future::or(read_messages, watch)),
    )
    .await
}

async fn write_commands(cluster: &Cluster, stream: &Stream) -> String {
    loop {
        let out = std::future::poll_fn(|cx| {
            let mut state = cluster.state.borrow_mut();
            if state.out.is_empty() {
                state.out_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(std::mem::take(&mut state.out))
        })
        .await;
        if let Err(e) = write_all(stream, &out).await {
            return format!("write failed: {e}");
        }
    }
}

async fn read_replies(cluster: &Cluster, stream: &Stream, mut input: Input) -> String {
    loop {
        loop {
            match input.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(e) = cluster.on_reply(frame) {
                        return e;
                    }
                }
                Ok(None) => break,
                Err(e) => return format!("bad reply: {e}"),
            }
        }
        if let Err(e) = read(stream, &mut input).await {
            return e;
        }
    }
}

async fn write_routes(shared: &Shared, cluster: &Cluster, stream: &Stream) -> String {
    loop {
        let out = std::future::poll_fn(|cx| {
            cluster.absorb_routes(shared, cx.waker());
            let mut state = cluster.state.borrow_mut();
            if !state.routes.has_batch() {
                state.routes_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let batch = state.routes.batch();
            let mut out = BytesMut::new();
            encode_batch(&mut out, b"SUBSCRIBE", &batch.subscribe);
            encode_batch(&mut out, b"UNSUBSCRIBE", &batch.unsubscribe);
            Poll::Ready(out)
        })
        .await;
        if out.is_empty() {
            continue;
        }
        if let Err(e) = write_all(stream, &out).await {
            return format!("write failed: {e}");
        }
    }
}

fn encode_batch(out: &mut BytesMut, command: &[u8], channels: &[Box<[u8]>]) {
    for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
        let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
        args.push(command);
        args.extend(chunk.iter().map(|c| &**c));
        resp::command(out, &args);
    }
}

async fn read_messages(
    shared: &Shared,
    cluster: &Cluster,
    stream: &Stream,
    mut input: Input,
) -> String {
    loop {
        let mut budget = MESSAGE_BUDGET;
        loop {
            match input.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(e) = cluster.on_push(shared, frame) {
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
        if let Err(e) = read(stream, &mut input).await {
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
        if let Some((since, _)) = state.expected.front()
            && since.elapsed() > limit
        {
            return format!("no reply from Redis in {limit:?}");
        }
        if last_ping.elapsed() >= Duration::from_secs(1) && state.expected.is_empty() {
            last_ping = Instant::now();
            resp::command(&mut state.out, &[b"PING"]);
            state.expected.push_back((Instant::now(), Expect::Ping));
            wake(&mut state.out_waker);
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

    /// A new link: nothing is subscribed on it yet.
    fn link_up(&self) {
        let mut state = self.state.borrow_mut();
        state.up = true;
        state.counters.redis_connects += 1;
        state.routes.reset();
        self.load_scripts(&mut state);
        wake(&mut state.routes_waker);
    }

    /// Loads the streams' scripts, ahead of whatever `EVALSHA` comes next
    /// on the command connection.
    fn load_scripts(&self, state: &mut State) {
        self.scripts.load(&mut state.out);
        for _ in 0..2 {
            state.expected.push_back((Instant::now(), Expect::Script));
        }
        wake(&mut state.out_waker);
    }

    /// The link is gone, and every answer still to come with it.
    fn link_down(&self) {
        let mut state = self.state.borrow_mut();
        let State {
            up,
            out,
            expected,
            gathers,
            answers,
            held,
            ready_waiters,
            reads,
            counters,
            ..
        } = &mut *state;
        *up = false;
        counters.redis_disconnects += 1;
        out.clear();
        expected.clear();
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
    }

    /// A reply on the command connection.
    fn on_reply(&self, frame: Frame) -> Result<(), String> {
        let mut state = self.state.borrow_mut();
        let Some((_, expect)) = state.expected.pop_front() else {
            return Err(format!("a reply to no command: {frame:?}"));
        };
        match (expect, frame) {
            (Expect::Count(id, part), Frame::Integer(n)) => {
                let n = u32::try_from(n).unwrap_or(0);
                state.gathers.expect(id, part, n);
            }
            (Expect::Count(id, part), reply @ Frame::Array(_)) => {
                match super::streams::published(&reply) {
                    Some((n, _)) => state.gathers.expect(id, part, n),
                    None => {
                        warn!("redis: unexpected reply to a message: {reply:?}");
                        state.gathers.give_up(id, part);
                    }
                }
            }
            (Expect::Count(id, part), other) => {
                warn!("redis: PUBLISH refused: {other:?}");
                self.reload_if_needed(&mut state, &other);
                state.gathers.give_up(id, part);
            }
            (Expect::Read(number, i), reply) => {
                self.reload_if_needed(&mut state, &reply);
                let history = &self.config.history;
                if let Some(read) = state.reads.get_mut(&number) {
                    let since = read.since.get(i).copied().flatten();
                    let result = super::streams::read_reply(reply, since, history);
                    if let Some(slot) = read.results.get_mut(i) {
                        *slot = result;
                    }
                    read.remaining = read.remaining.saturating_sub(1);
                    if read.remaining == 0 {
                        wake(&mut read.waker);
                    }
                }
            }
            (Expect::Script, Frame::BulkString(_)) => {}
            (Expect::Script, other) => warn!("redis: SCRIPT LOAD refused: {other:?}"),
            (Expect::ListenerHubs, reply) => {
                drop(state);
                self.on_listener_hubs(&reply);
            }
            (Expect::Events(n), Frame::Integer(0)) => {
                state.counters.cluster_events_lost += u64::from(n)
            }
            (Expect::Ping, Frame::SimpleString(_))
            | (Expect::Ignore | Expect::Events(_), Frame::Integer(_)) => {}
            (_, other) => debug!("redis: unexpected reply {other:?}"),
        }
        Ok(())
    }

    /// Loads the scripts again if Redis lost them (`SCRIPT FLUSH`): what
    /// ran into that is unconfirmed, what follows works.
    fn reload_if_needed(&self, state: &mut State, reply: &Frame) {
        if let Frame::Error(e) = reply
            && e.starts_with("NOSCRIPT")
        {
            self.load_scripts(state);
        }
    }

    /// Something on the subscriber connection: a message on a route or
    /// the inbox, or the confirmation of a (un)subscription.
    fn on_push(&self, shared: &Shared, frame: Frame) -> Result<(), String> {
        let Frame::Array(items) = frame else {
            return Err(format!("unexpected {frame:?} on the subscriber connection"));
        };
        let kind = items.first().and_then(resp::bytes).map(|b| &b[..]);
        match (kind, items.get(1).and_then(resp::bytes), items.get(2)) {
            (Some(b"message"), Some(channel), Some(payload)) => {
                let Some(payload) = resp::bytes(payload) else {
                    return Err("a message without a payload".into());
                };
                self.on_message(shared, channel, payload);
            }
            (Some(b"subscribe"), Some(channel), _) => {
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
            (Some(b"unsubscribe"), Some(channel), _) => {
                let mut state = self.state.borrow_mut();
                state.routes.confirmed(channel, false);
                if state.routes.has_batch() {
                    wake(&mut state.routes_waker);
                }
                self.release_held(&mut state);
            }
            (Some(b"pong"), _, _) => {}
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
                state
                    .gathers
                    .answer(GatherId::from_wire(request), part, partial);
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
            let partial = (self.execute)(&mut hub, self, target, header.pos, line);
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
    fn answer(&self, state: &mut State, answer: Answer) {
        let Answer {
            origin,
            request,
            part,
            partial,
        } = answer;
        if origin == self.config.node {
            state
                .gathers
                .answer(GatherId::from_wire(request), part, partial);
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
    fn send_answers(&self) {
        let mut state = self.state.borrow_mut();
        if state.answers.is_empty() {
            return;
        }
        let answers = std::mem::take(&mut state.answers);
        for (origin, batch) in answers {
            let inbox = [&self.names.node[..], origin.as_bytes()].concat();
            resp::command(&mut state.out, &[b"PUBLISH", &inbox, &batch]);
            state.expected.push_back((Instant::now(), Expect::Ignore));
        }
        wake(&mut state.out_waker);
    }
}
