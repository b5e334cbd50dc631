//! A v1 client's requests, carried out: `auth` binds the connection and is
//! answered `welcome`; `sub` and `unsub` change its channels under its
//! grants; `pub` publishes; `ping` is answered `pong`. Every refusal is an
//! `error` frame and a counter, and the connection stays open; only a frame
//! that no v1 client sends ends it.
//!
//! The token's `subs` are joined at bind time, for raw clients too: the
//! backend signed them.

use std::borrow::Cow;

use log::debug;
use serde_json::value::RawValue;

use super::frame::Frame;
use super::v1::{self, Credential, Op, V1Error};
use super::{Ending, Session};
use crate::auth::{self, Grants, Identity, may_publish, may_subscribe};
use crate::hub::{Fanout, SubscribeError};
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
            Op::Auth(_) if self.authenticated => {
                self.refuse(V1Error::AlreadyAuthenticated, id, None);
            }
            Op::Auth(credential) => {
                let config = &self.shared.config.auth;
                let identity = match credential {
                    Credential::Token(token) => auth::token(config, &token, unix_now()),
                    Credential::Uid(uid) => auth::plain_uid(config, &uid),
                };
                if let Err(e) = self.bind(identity, id) {
                    return Some(Ending::Unauthorized(e));
                }
            }
            op if !self.authenticated => {
                let ch = match &op {
                    Op::Sub { ch } | Op::Unsub { ch } | Op::Pub { ch, .. } => Some(ch.as_ref()),
                    Op::Auth(_) | Op::Ping => None,
                };
                self.refuse(V1Error::Unauthenticated, id, ch);
            }
            Op::Sub { ch } => self.sub(&ch, id),
            Op::Unsub { ch } => self.unsub(&ch, id),
            Op::Pub { ch, d } => self.publish(&ch, d, id),
        }
        None
    }

    /// After a bind: joins the channels of the token's `subs`, and welcomes a
    /// v1 client with its uid and channels. A v1 session takes the grants
    /// over (all but the `subs`, used up here).
    pub(super) fn join_granted(&mut self, identity: &mut Identity, id: Option<&RawValue>) {
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
        let subs = hub.subscriptions_of(self.id);
        let subs: Vec<&str> = subs.iter().map(|ch| &**ch).collect();
        hub.send(self.id, &v1::welcome(&identity.uid, &subs, id));
    }

    fn sub(&mut self, ch: &str, id: Option<&RawValue>) {
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
        let subscribed = self.shared.hub.borrow_mut().subscribe(self.id, ch);
        match subscribed {
            // Already in it: the client gets what it asked for all the same.
            Ok(_) => self.answer(&v1::subbed(ch, id)),
            Err(e) => self.refuse(e.into(), id, Some(ch)),
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
        let message = Fanout::new(|v1| match v1 {
            true => v1::msg_channel(ch, d),
            false => Frame::text(&text),
        });
        let delivered = {
            let mut hub = self.shared.hub.borrow_mut();
            hub.counters.publications += 1;
            hub.publish(ch, &message)
        };
        if let Some(id) = id {
            self.answer(&v1::pubbed(ch, delivered, id));
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
