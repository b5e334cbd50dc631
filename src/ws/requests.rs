//! A v1 client's requests, carried out: `auth` binds the connection and is
//! answered `welcome`; `sub` and `unsub` change its channels under its
//! grants; `pub` publishes; `ping` is answered `pong`; `ack` acknowledges
//! a position; `send` goes up to a listening backend. Every refusal is an
//! `error` frame and a counter, and the connection stays open; only a frame
//! that no v1 client sends ends it.
//!
//! Recovery (`since` in `auth` and `sub`) is answered first, then the
//! missed messages follow, all queued in one turn: nothing sent later can
//! come between them.
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
use crate::hub::listeners::Payload;
use crate::hub::{AckError, Fanout, Hub, Pos, StreamKey, SubscribeError, Target, UpstreamError};
use crate::metrics::Counters;
use crate::time::unix_now;

/// What a v1 session keeps: who the client is and what its token grants.
/// Empty until `auth`.
#[derive(Debug, Default)]
pub(super) struct V1Client {
    uid: String,
    grants: Grants,
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
        welcome(&mut hub, self.id, Some(&identity.uid), since, id);
    }

    /// An anonymous v1 client's welcome, as it connects (`--allow-anonymous`
    /// alone: it will send no `auth`).
    pub(super) fn welcome_anonymous(&mut self) {
        let mut hub = self.shared.hub.borrow_mut();
        welcome(&mut hub, self.id, None, &Since::default(), None);
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
        self.routing = self.shared.cluster.is_some();
        let stream = StreamKey::Channel(ch);
        let pos = hub.position(stream);
        let mut budget = hub.replay_budget(self.id);
        if since.is_some() {
            // The answer goes first and takes room in the queue too: at its
            // longest, unrecovered.
            let longest = v1::subbed(ch, pos, Some(false), id);
            budget.bytes = budget.bytes.saturating_sub(longest.len());
        }
        let replay = since.map(|since| hub.recover(stream, since, &mut budget));
        let recovered = replay.as_ref().map(Option::is_some);
        hub.send(self.id, &v1::subbed(ch, pos, recovered, id));
        for frame in replay.into_iter().flatten().flatten() {
            hub.send(self.id, &frame);
        }
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
            self.answer(&v1::pubbed(ch, delivered, id));
        }
    }

    fn ack(&mut self, ch: Option<&str>, pos: Pos, id: Option<&RawValue>) {
        let acked = self.shared.hub.borrow_mut().ack(self.id, ch, pos);
        match (acked, id) {
            (Ok(()), Some(id)) => self.answer(&v1::acked(id)),
            (Ok(()), None) => {}
            (Err(e), _) => self.refuse(e.into(), id, ch),
        }
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

/// Welcomes a v1 client that just became live (as `uid`, or anonymous):
/// where each of its streams stands, and what `since` asked to recover,
/// then the recovered messages, in order. One replay budget for them all,
/// less the room the welcome itself takes in the queue.
fn welcome(
    hub: &mut Hub,
    conn: crate::hub::ConnId,
    uid: Option<&str>,
    since: &Since,
    id: Option<&RawValue>,
) {
    let subs = hub.subscriptions_of(conn);
    let subs: Vec<&str> = subs.iter().map(|ch| &**ch).collect();
    let mut pos = PerStream::default();
    if let Some(uid) = uid {
        pos.uid = hub.position(StreamKey::Uid(uid));
    }
    pos.all = hub.position(StreamKey::All);
    for &ch in &subs {
        if let Some(p) = hub.position(StreamKey::Channel(ch)) {
            pos.chs.push((ch, p));
        }
    }
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
    let mut welcome = Welcome {
        uid,
        conn: conn.wire(),
        subs: &subs,
        pos,
        // At its longest, every stream asked unrecovered, to measure it.
        recovered: asked.then(|| PerStream {
            uid: asked_uid.map(|_| false),
            all: since.all.map(|_| false),
            chs: asked_chs.iter().map(|&(ch, _)| (ch, false)).collect(),
        }),
    };
    let mut budget = hub.replay_budget(conn);
    if asked {
        let longest = v1::welcome(&welcome, id).len();
        budget.bytes = budget.bytes.saturating_sub(longest);
    }
    let mut replay = Vec::new();
    let mut recover = |hub: &mut Hub, stream: StreamKey, since: Pos| {
        let frames = hub.recover(stream, since, &mut budget);
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
    welcome.recovered = asked.then_some(recovered);
    hub.send(conn, &v1::welcome(&welcome, id));
    for frame in &replay {
        hub.send(conn, frame);
    }
}
