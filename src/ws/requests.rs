//! A v1 client's requests, carried out: `auth` binds the connection and is
//! answered `welcome`; `sub` and `unsub` change its channels under its
//! grants; `pub` publishes; `ping` is answered `pong`; `ack` acknowledges
//! a position; `send` goes up to a listening backend. Every refusal is an
//! `error` frame and a counter, and the connection stays open; only a frame
//! that no v1 client sends ends it.
//!
//! Recovery (`since` in `auth` and `sub`) is answered first, then the
//! missed messages follow, all queued in one turn: nothing sent later can
//! come between them. In a cluster, where the streams' history is in
//! Redis, the answer waits for Redis to say where each stream stands
//! (`Pending`); the connection's live messages of those streams are held
//! meanwhile, and follow the answer without those it already covers.
//!
//! The token's `subs` are joined at bind time, for raw clients too: the
//! backend signed them.

use std::borrow::Cow;

use log::debug;
use serde_json::value::RawValue;

use super::frame::Frame;
use super::v1::{self, Credential, Op, PerStream, Since, V1Error, Welcome};
use super::{Ending, Session};
use crate::auth::{self, Grants, Identity, may_publish, may_subscribe};
use crate::cluster::streams::StreamRead;
use crate::cluster::{Cluster, GatherId, ReadId, Route};
use crate::hub::listeners::Payload;
use crate::hub::{
    AckError, ConnId, Fanout, Hub, Pos, ReplayBudget, StreamKey, StreamName, SubscribeError,
    Target, UpstreamError,
};
use crate::metrics::Counters;
use crate::time::unix_now;

/// What a v1 session keeps: who the client is and what its token grants.
/// Empty until `auth`.
#[derive(Debug, Default)]
pub(super) struct V1Client {
    uid: String,
    grants: Grants,
    /// In a cluster: the answer that waits for Redis.
    pending: Option<Box<Pending>>,
}

/// An answer that says where streams stand, waiting (in a cluster) for
/// Redis to say it: the streams, what the client asked of each, and the
/// read once it is sent.
#[derive(Debug)]
pub(super) struct Pending {
    answer: Answer,
    streams: Vec<(StreamName, Option<Pos>)>,
    read: Option<ReadId>,
}

#[derive(Debug)]
enum Answer {
    Welcome {
        uid: Option<String>,
        since: Since<'static>,
        id: Option<Box<RawValue>>,
    },
    Subbed {
        ch: String,
        since: Option<Pos>,
        id: Option<Box<RawValue>>,
    },
    /// A publication through the cluster, answered once every hub that
    /// holds the channel has, or at the deadline.
    Pubbed {
        ch: String,
        id: Box<RawValue>,
        gather: GatherId,
        timer: smol::Timer,
    },
}

impl From<SubscribeError> for V1Error {
    fn from(e: SubscribeError) -> V1Error {
        match e {
            SubscribeError::TooManySubscriptions => V1Error::TooManySubscriptions,
            SubscribeError::TooManyChannels => V1Error::TooManyChannels,
        }
    }
}

impl From<AckError> for V1Error {
    fn from(e: AckError) -> V1Error {
        match e {
            AckError::NoStream => V1Error::NoStream,
            AckError::OtherEpoch => V1Error::OtherEpoch,
            AckError::Ahead => V1Error::AheadOfStream,
        }
    }
}

impl From<UpstreamError> for V1Error {
    fn from(e: UpstreamError) -> V1Error {
        match e {
            UpstreamError::NoListener => V1Error::NoListener,
            UpstreamError::Full => V1Error::ListenersFull,
        }
    }
}

/// Whether a refusal is about a channel (counted in `channel_errors`) rather
/// than about the request itself (`v1_errors`).
fn about_a_channel(e: V1Error) -> bool {
    matches!(
        e,
        V1Error::BadChannel(_)
            | V1Error::Forbidden
            | V1Error::NotSubscribed
            | V1Error::TooManySubscriptions
            | V1Error::TooManyChannels
    )
}

impl Session {
    /// Handles one text frame of a v1 client. `Some` ends the connection.
    pub(super) fn on_v1_frame(&mut self, text: &str) -> Option<Ending> {
        let request = match v1::parse(text) {
            Ok(request) => request,
            Err(e) if e.error.breaks_protocol() => {
                debug!("v1 client sent a frame that is not JSON");
                return Some(Ending::NotV1("a v1 frame must be JSON"));
            }
            Err(e) => {
                self.refuse(e.error, e.id, e.ch.as_deref());
                return None;
            }
        };
        let id = request.id;
        match request.op {
            Op::Ping => self.answer(&v1::pong(id)),
            Op::Auth { .. } if self.authenticated => {
                self.refuse(V1Error::AlreadyAuthenticated, id, None);
            }
            Op::Auth { credential, since } => {
                let config = &self.shared.config.auth;
                let identity = match credential {
                    Credential::Token(token) => auth::token(config, &token, unix_now()),
                    Credential::Uid(uid) => auth::plain_uid(config, &uid),
                };
                if let Err(e) = self.bind(identity, id, &since) {
                    return Some(Ending::Unauthorized(e));
                }
            }
            op if !self.is_live() => {
                let ch = match &op {
                    Op::Sub { ch, .. } | Op::Unsub { ch } | Op::Pub { ch, .. } => Some(ch.as_ref()),
                    Op::Ack { ch, .. } => ch.as_deref(),
                    Op::Auth { .. } | Op::Ping | Op::Send { .. } => None,
                };
                self.refuse(V1Error::Unauthenticated, id, ch);
            }
            Op::Sub { ch, since } => self.sub(&ch, since, id),
            Op::Unsub { ch } => self.unsub(&ch, id),
            Op::Pub { ch, d } => self.publish(&ch, d, id),
            Op::Ack { ch, pos } => self.ack(ch.as_deref(), pos, id),
            Op::Send { d } => self.send_up(d, id),
        }
        None
    }

    /// Whether the connection receives and may act: authenticated, or
    /// anonymous (`--allow-anonymous`, where every connection is live).
    fn is_live(&self) -> bool {
        self.authenticated || self.shared.config.allow_anonymous
    }

    /// After a bind: joins the channels of the token's `subs`, and welcomes a
    /// v1 client with its uid, channels and positions, recovering what
    /// `since` asks. A v1 session takes the grants over (all but the
    /// `subs`, used up here).
    pub(super) fn join_granted(
        &mut self,
        identity: &mut Identity,
        id: Option<&RawValue>,
        since: &Since,
    ) {
        let mut hub = self.shared.hub.borrow_mut();
        for ch in &identity.grants.subs {
            if let Err(e) = hub.subscribe(self.id, ch) {
                debug!("{}: token sub {ch} refused: {e}", identity.uid);
                Counters::bump(&mut hub.counters.channel_errors, e.kind());
            }
        }
        let Some(client) = self.v1.as_deref_mut() else {
            return;
        };
        client.uid.clone_from(&identity.uid);
        client.grants = std::mem::take(&mut identity.grants);
        client.grants.subs = Vec::new();
        drop(hub);
        self.welcome(Some(&identity.uid), since, id);
    }

    /// An anonymous v1 client's welcome, as it connects (`--allow-anonymous`
    /// alone: it will send no `auth`).
    pub(super) fn welcome_anonymous(&mut self) {
        self.welcome(None, &Since::default(), None);
    }

    /// Welcomes a v1 client that just became live: at once on a hub alone,
    /// once Redis has said where its streams stand in a cluster.
    fn welcome(&mut self, uid: Option<&str>, since: &Since, id: Option<&RawValue>) {
        let shared = std::rc::Rc::clone(&self.shared);
        let mut hub = shared.hub.borrow_mut();
        let Some(cluster) = &shared.cluster else {
            return welcome(&mut hub, self.id, uid, since, id, &mut Local);
        };
        let mut streams = Vec::new();
        if let Some(uid) = uid {
            streams.push((StreamKey::Uid(uid), since.uid));
        }
        streams.push((StreamKey::All, since.all));
        let subs = hub.subscriptions_of(self.id);
        for ch in &subs {
            let asked = since.chs.iter().find(|(c, _)| c == &**ch).map(|(_, p)| *p);
            streams.push((StreamKey::Channel(ch), asked));
        }
        streams.retain(|(stream, _)| cluster.keeps_history(*stream));
        for (stream, _) in &streams {
            hub.hold(self.id, *stream);
        }
        let answer = Answer::Welcome {
            uid: uid.map(str::to_string),
            since: Since {
                uid: since.uid,
                all: since.all,
                chs: since
                    .chs
                    .iter()
                    .map(|(ch, p)| (Cow::Owned(ch.to_string()), *p))
                    .collect(),
            },
            id: id.map(RawValue::to_owned),
        };
        let streams = streams
            .into_iter()
            .map(|(stream, since)| (StreamName::new(stream), since))
            .collect();
        drop(hub);
        self.pend(answer, streams);
    }

    /// Leaves `answer` to wait for Redis, the session's next message with it.
    fn pend(&mut self, answer: Answer, streams: Vec<(StreamName, Option<Pos>)>) {
        self.routing = true;
        if let Some(client) = self.v1.as_deref_mut() {
            client.pending = Some(Box::new(Pending {
                answer,
                streams,
                read: None,
            }));
        }
    }

    /// Ready once no answer waits for Redis: reads where the streams stand
    /// (the routes are ready by now) or gathers a publication's count,
    /// then answers.
    pub(super) fn poll_pending(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        let (Some(cluster), Some(client)) = (&self.shared.cluster, self.v1.as_deref_mut()) else {
            return Poll::Ready(());
        };
        let Some(pending) = client.pending.as_deref_mut() else {
            return Poll::Ready(());
        };
        if let Answer::Pubbed {
            ch,
            id,
            gather,
            timer,
        } = &mut pending.answer
        {
            let gathered = match cluster.poll_gather(*gather, cx) {
                Poll::Ready(gathered) => gathered,
                Poll::Pending => {
                    std::task::ready!(std::pin::Pin::new(timer).poll(cx));
                    cluster.finish(*gather)
                }
            };
            let delivered = gathered
                .parts
                .iter()
                .map(|p| match p {
                    Some(crate::cluster::wire::Partial::Delivered(n)) => *n,
                    _ => 0,
                })
                .sum();
            let frame = v1::pubbed(ch, delivered, gathered.unconfirmed, id);
            client.pending = None;
            self.shared.hub.borrow_mut().send(self.id, &frame);
            return Poll::Ready(());
        }
        let read = *pending.read.get_or_insert_with(|| {
            let streams: Vec<_> = pending.streams.iter().map(|(s, p)| (s.key(), *p)).collect();
            cluster.read(&streams)
        });
        let results = std::task::ready!(cluster.poll_read(read, cx));
        let Some(pending) = client.pending.take() else {
            return Poll::Ready(());
        };
        let Pending {
            answer, streams, ..
        } = *pending;
        let mut read = FromRedis {
            conn: self.id,
            streams: streams.into_iter().map(|(s, _)| s).zip(results).collect(),
        };
        let mut hub = self.shared.hub.borrow_mut();
        match answer {
            Answer::Welcome { uid, since, id } => welcome(
                &mut hub,
                self.id,
                uid.as_deref(),
                &since,
                id.as_deref(),
                &mut read,
            ),
            Answer::Subbed { ch, since, id } => {
                subbed(&mut hub, self.id, &ch, since, id.as_deref(), &mut read)
            }
            Answer::Pubbed { .. } => {}
        }
        Poll::Ready(())
    }

    /// The read a pending answer waits for, if it was sent.
    pub(super) fn pending_read(&self) -> Option<ReadId> {
        self.v1.as_deref()?.pending.as_deref()?.read
    }

    /// The publication a pending answer waits for.
    pub(super) fn pending_gather(&self) -> Option<GatherId> {
        match &self.v1.as_deref()?.pending.as_deref()?.answer {
            Answer::Pubbed { gather, .. } => Some(*gather),
            _ => None,
        }
    }

    fn sub(&mut self, ch: &str, since: Option<Pos>, id: Option<&RawValue>) {
        let Some(client) = self.v1.as_deref() else {
            return;
        };
        if !may_subscribe(
            &client.grants,
            &self.shared.config.public_channels,
            &client.uid,
            ch,
        ) {
            return self.refuse(V1Error::Forbidden, id, Some(ch));
        }
        let mut hub = self.shared.hub.borrow_mut();
        // Already in it: the client gets what it asked for all the same.
        if let Err(e) = hub.subscribe(self.id, ch) {
            drop(hub);
            return self.refuse(e.into(), id, Some(ch));
        }
        let Some(cluster) = &self.shared.cluster else {
            return subbed(&mut hub, self.id, ch, since, id, &mut Local);
        };
        self.routing = true;
        let stream = StreamKey::Channel(ch);
        if !cluster.keeps_history(stream) {
            return subbed(&mut hub, self.id, ch, since, id, &mut Local);
        }
        hub.hold(self.id, stream);
        drop(hub);
        let answer = Answer::Subbed {
            ch: ch.to_string(),
            since,
            id: id.map(RawValue::to_owned),
        };
        self.pend(answer, vec![(StreamName::new(stream), since)]);
    }

    fn unsub(&mut self, ch: &str, id: Option<&RawValue>) {
        let left = self.shared.hub.borrow_mut().unsubscribe(self.id, ch);
        match left {
            true => self.answer(&v1::unsubbed(ch, id)),
            false => self.refuse(V1Error::NotSubscribed, id, Some(ch)),
        }
    }

    fn publish(&mut self, ch: &str, d: &RawValue, id: Option<&RawValue>) {
        let Some(client) = self.v1.as_deref() else {
            return;
        };
        if !may_publish(&client.grants, ch) {
            return self.refuse(V1Error::Forbidden, id, Some(ch));
        }
        if let Some(cluster) = self.shared.cluster.clone() {
            return self.publish_in_cluster(&cluster, ch, d, id);
        }
        // Raw subscribers get the data as a push's: a string's contents, or
        // the JSON as written.
        let text: Cow<str> = match serde_json::from_str::<Cow<str>>(d.get()) {
            Ok(text) if d.get().starts_with('"') => text,
            _ => Cow::Borrowed(d.get()),
        };
        let delivered = {
            let mut hub = self.shared.hub.borrow_mut();
            hub.counters.publications += 1;
            hub.deliver(Target::Channel(ch), |pos| {
                Fanout::new(move |v1| match v1 {
                    true => v1::msg_channel(ch, d, pos),
                    false => Frame::text(&text),
                })
            })
        };
        if let Some(id) = id {
            self.answer(&v1::pubbed(ch, delivered, false, id));
        }
    }

    /// A client's publication in a cluster goes through Redis as a
    /// backend's `publish` would, so every hub's subscribers get it, with
    /// its position; its answer waits for their count.
    fn publish_in_cluster(
        &mut self,
        cluster: &Cluster,
        ch: &str,
        d: &RawValue,
        id: Option<&RawValue>,
    ) {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            cmd: &'static str,
            ch: &'a str,
            data: &'a RawValue,
        }
        let line = Line {
            cmd: "publish",
            ch,
            data: d,
        };
        // A string and a JSON value: it always serializes.
        let line = serde_json::to_vec(&line).expect("a publish line serializes");
        let gather = {
            let mut hub = self.shared.hub.borrow_mut();
            hub.counters.publications += 1;
            let target = [Route::To(Target::Channel(ch))];
            cluster.request(&mut hub, &line, &target, true)
        };
        let Some(id) = id else {
            cluster.forget(gather);
            return;
        };
        let deadline = std::time::Instant::now() + cluster.timeout();
        let answer = Answer::Pubbed {
            ch: ch.to_string(),
            id: id.to_owned(),
            gather,
            timer: smol::Timer::at(deadline),
        };
        self.pend(answer, Vec::new());
    }

    fn ack(&mut self, ch: Option<&str>, pos: Pos, id: Option<&RawValue>) {
        let acked = match &self.shared.cluster {
            Some(cluster) => self.ack_in_cluster(cluster, ch, pos),
            None => self.shared.hub.borrow_mut().ack(self.id, ch, pos),
        };
        match (acked, id) {
            (Ok(()), Some(id)) => self.answer(&v1::acked(id)),
            (Ok(()), None) => {}
            (Err(e), _) => self.refuse(e.into(), id, ch),
        }
    }

    /// An ack in a cluster is taken for a stream the client receives: its
    /// position lives in Redis, and checking it would take a round trip.
    /// One of its uid's stream settles the pushes with `ack_timeout` it
    /// covers, whichever hub they entered.
    fn ack_in_cluster(
        &self,
        cluster: &Cluster,
        ch: Option<&str>,
        pos: Pos,
    ) -> Result<(), AckError> {
        let uid = self
            .v1
            .as_deref()
            .map(|c| c.uid.as_str())
            .filter(|u| !u.is_empty());
        let mut hub = self.shared.hub.borrow_mut();
        let stream = match (ch, uid) {
            (Some(ch), _) if hub.subscriptions_of(self.id).iter().any(|c| **c == *ch) => {
                StreamKey::Channel(ch)
            }
            (None, Some(uid)) => StreamKey::Uid(uid),
            _ => return Err(AckError::NoStream),
        };
        if !cluster.keeps_history(stream) {
            return Err(AckError::NoStream);
        }
        hub.counters.acks += 1;
        drop(hub);
        if let StreamKey::Uid(uid) = stream {
            cluster.client_acked(uid, pos);
        }
        Ok(())
    }

    fn send_up(&mut self, d: &RawValue, id: Option<&RawValue>) {
        let sent = self
            .shared
            .hub
            .borrow_mut()
            .upstream(self.id, Payload::Json(d));
        match (sent, id) {
            (Ok(()), Some(id)) => self.answer(&v1::sent(id)),
            (Ok(()), None) => {}
            (Err(e), _) => self.refuse(e.into(), id, None),
        }
    }

    /// Answers the client with an `error` frame, and counts the refusal.
    fn refuse(&mut self, e: V1Error, id: Option<&RawValue>, ch: Option<&str>) {
        let mut hub = self.shared.hub.borrow_mut();
        let counter = match about_a_channel(e) {
            true => &mut hub.counters.channel_errors,
            false => &mut hub.counters.v1_errors,
        };
        Counters::bump(counter, e.kind());
        hub.send(self.id, &v1::error(&e, id, ch));
    }

    fn answer(&mut self, frame: &Frame) {
        self.shared.hub.borrow_mut().send(self.id, frame);
    }
}

/// Where a client's streams stand and what it missed since its positions:
/// this hub's history, or (in a cluster) what Redis said.
trait Positions {
    /// What the client missed of `stream` since `since`, within `budget`;
    /// `None` for a gap.
    fn recover(
        &mut self,
        hub: &mut Hub,
        stream: StreamKey,
        since: Pos,
        budget: &mut ReplayBudget,
    ) -> Option<Vec<Frame>>;

    /// Where `stream` stands for the client, once what it asked is
    /// `recovered` (or `None` if it asked nothing).
    fn position(
        &mut self,
        hub: &mut Hub,
        stream: StreamKey,
        recovered: Option<bool>,
    ) -> Option<Pos>;

    /// The answer and its replay are queued: what was held of `stream`
    /// past `pos` follows them.
    fn release(&mut self, _hub: &mut Hub, _stream: StreamKey, _pos: Option<Pos>) {}
}

/// This hub's own history.
struct Local;

impl Positions for Local {
    fn recover(
        &mut self,
        hub: &mut Hub,
        stream: StreamKey,
        since: Pos,
        budget: &mut ReplayBudget,
    ) -> Option<Vec<Frame>> {
        hub.recover(stream, since, budget)
    }

    fn position(&mut self, hub: &mut Hub, stream: StreamKey, _: Option<bool>) -> Option<Pos> {
        hub.position(stream)
    }
}

/// What Redis said of each stream (`None`: it could not say).
struct FromRedis {
    conn: ConnId,
    streams: Vec<(StreamName, Option<StreamRead>)>,
}

impl FromRedis {
    fn read(&self, stream: StreamKey) -> Option<&StreamRead> {
        self.streams
            .iter()
            .find(|(s, _)| s.key() == stream)
            .and_then(|(_, read)| read.as_ref())
    }
}

impl Positions for FromRedis {
    fn recover(
        &mut self,
        hub: &mut Hub,
        stream: StreamKey,
        _since: Pos,
        budget: &mut ReplayBudget,
    ) -> Option<Vec<Frame>> {
        let frames = self.read(stream).and_then(|read| {
            let missed = read.missed.as_ref()?;
            missed
                .iter()
                .map(|(offset, line)| {
                    let pos = Pos {
                        epoch: read.pos.epoch,
                        offset: *offset,
                    };
                    crate::text_port::routed::replay(stream, pos, line)
                })
                .collect::<Option<Vec<Frame>>>()
        });
        hub.replay(frames, budget)
    }

    fn position(
        &mut self,
        hub: &mut Hub,
        stream: StreamKey,
        recovered: Option<bool>,
    ) -> Option<Pos> {
        let pos = self.read(stream)?.pos;
        if recovered == Some(true) {
            return Some(pos);
        }
        // Messages that came between the subscription and the read were
        // held, and are the client's (they counted as delivered to it): it
        // starts just before those that lead up to where the stream stands.
        match hub.held_run_to(self.conn, stream, pos) {
            Some(first) => Some(Pos {
                epoch: pos.epoch,
                offset: first.offset - 1,
            }),
            None => Some(pos),
        }
    }

    fn release(&mut self, hub: &mut Hub, stream: StreamKey, pos: Option<Pos>) {
        hub.release(self.conn, stream, pos);
    }
}

/// The longest position there is: what an answer's room in the queue is
/// measured with before its positions are known.
const LONGEST: Pos = Pos {
    epoch: u64::MAX,
    offset: u64::MAX,
};

/// Welcomes a v1 client that just became live (as `uid`, or anonymous):
/// where each of its streams stands, and what `since` asked to recover,
/// then the recovered messages, in order. One replay budget for them all,
/// less the room the welcome itself takes in the queue.
fn welcome(
    hub: &mut Hub,
    conn: ConnId,
    uid: Option<&str>,
    since: &Since,
    id: Option<&RawValue>,
    streams: &mut impl Positions,
) {
    let subs = hub.subscriptions_of(conn);
    let subs: Vec<&str> = subs.iter().map(|ch| &**ch).collect();
    // What `since` asks of each stream the connection receives.
    let asked_uid = uid.zip(since.uid);
    let asked_chs: Vec<(&str, Pos)> = subs
        .iter()
        .filter_map(|&ch| {
            since
                .chs
                .iter()
                .find(|(c, _)| c == ch)
                .map(|(_, p)| (ch, *p))
        })
        .collect();
    let asked = since.uid.is_some() || since.all.is_some() || !since.chs.is_empty();
    let mut budget = hub.replay_budget(conn);
    if asked {
        // At its longest: every stream at the longest position, every one
        // asked unrecovered.
        let longest = Welcome {
            uid,
            conn: conn.wire(),
            subs: &subs,
            pos: PerStream {
                uid: uid.map(|_| LONGEST),
                all: Some(LONGEST),
                chs: subs.iter().map(|&ch| (ch, LONGEST)).collect(),
            },
            recovered: Some(PerStream {
                uid: asked_uid.map(|_| false),
                all: since.all.map(|_| false),
                chs: asked_chs.iter().map(|&(ch, _)| (ch, false)).collect(),
            }),
        };
        let longest = v1::welcome(&longest, id).len();
        budget.bytes = budget.bytes.saturating_sub(longest);
    }
    let mut replay = Vec::new();
    let mut recover = |hub: &mut Hub, stream: StreamKey, since: Pos| {
        let frames = streams.recover(hub, stream, since, &mut budget);
        let ok = frames.is_some();
        replay.extend(frames.into_iter().flatten());
        ok
    };
    let mut recovered = PerStream::default();
    if let Some((uid, since)) = asked_uid {
        recovered.uid = Some(recover(hub, StreamKey::Uid(uid), since));
    }
    if let Some(since) = since.all {
        recovered.all = Some(recover(hub, StreamKey::All, since));
    }
    for &(ch, since) in &asked_chs {
        recovered
            .chs
            .push((ch, recover(hub, StreamKey::Channel(ch), since)));
    }
    let mut pos = PerStream::default();
    if let Some(uid) = uid {
        pos.uid = streams.position(hub, StreamKey::Uid(uid), recovered.uid);
    }
    pos.all = streams.position(hub, StreamKey::All, recovered.all);
    for &ch in &subs {
        let asked = recovered
            .chs
            .iter()
            .find(|(c, _)| *c == ch)
            .map(|(_, r)| *r);
        if let Some(p) = streams.position(hub, StreamKey::Channel(ch), asked) {
            pos.chs.push((ch, p));
        }
    }
    let welcome = Welcome {
        uid,
        conn: conn.wire(),
        subs: &subs,
        pos,
        recovered: asked.then_some(recovered),
    };
    hub.send(conn, &v1::welcome(&welcome, id));
    for frame in &replay {
        hub.send(conn, frame);
    }
    if let Some(uid) = uid {
        streams.release(hub, StreamKey::Uid(uid), welcome.pos.uid);
    }
    streams.release(hub, StreamKey::All, welcome.pos.all);
    for &ch in &subs {
        let at = welcome
            .pos
            .chs
            .iter()
            .find(|(c, _)| *c == ch)
            .map(|(_, p)| *p);
        streams.release(hub, StreamKey::Channel(ch), at);
    }
}

/// Answers a `sub` of `ch`: where the channel stands, then what `since`
/// asked to recover of it.
fn subbed(
    hub: &mut Hub,
    conn: ConnId,
    ch: &str,
    since: Option<Pos>,
    id: Option<&RawValue>,
    streams: &mut impl Positions,
) {
    let stream = StreamKey::Channel(ch);
    let mut budget = hub.replay_budget(conn);
    if since.is_some() {
        // The answer goes first and takes room in the queue too: at its
        // longest, unrecovered.
        let longest = v1::subbed(ch, Some(LONGEST), Some(false), id);
        budget.bytes = budget.bytes.saturating_sub(longest.len());
    }
    let replay = since.map(|since| streams.recover(hub, stream, since, &mut budget));
    let recovered = replay.as_ref().map(Option::is_some);
    let pos = streams.position(hub, stream, recovered);
    hub.send(conn, &v1::subbed(ch, pos, recovered, id));
    for frame in replay.into_iter().flatten().flatten() {
        hub.send(conn, &frame);
    }
    streams.release(hub, stream, pos);
}
