//! A push's parts for devices: which of its uids go to each platform (by
//! `apns_when`, `fcm_when`, `webpush_when`), their devices from the registry,
//! one message per device on its platform's sender, and the summaries that
//! go in the push's reply once every service has answered.

use std::borrow::Cow;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use serde::ser::SerializeMap;

use super::apns::sender::{Notification, Priority, PushType};
use super::sender::Outcome;
use super::webpush::sender::Urgency;
use super::{apns, fcm, webpush};
use crate::push::registry::{self, Answer, Device, Op, Registry};

/// When a push also goes to a uid's devices of one platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Only when the uid has no WebSocket connection (the default).
    Offline,
    Always,
    Never,
    /// When no connection of the uid acknowledged the push within its
    /// `ack_timeout` (the default with one).
    Unacked,
}

impl When {
    /// Whether a uid that is `online` (or not) gets it now; `unacked` is
    /// decided later, by the acknowledgement.
    pub fn now(self, online: bool) -> bool {
        match self {
            When::Always => true,
            When::Offline => !online,
            When::Never | When::Unacked => false,
        }
    }
}

/// A push's APNs part: the payload for Apple and how to send it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApnsPush<'a> {
    /// The JSON object sent to Apple as is.
    pub payload: Cow<'a, str>,
    pub when: When,
    pub push_type: PushType,
    pub priority: Priority,
    pub expiration: u64,
    pub collapse_id: Option<Cow<'a, str>>,
}

/// A push's FCM part: FCM v1's `message` object without its `token`.
#[derive(Debug, Clone, PartialEq)]
pub struct FcmPush<'a> {
    /// The object's JSON, `{...}`.
    pub message: Cow<'a, str>,
    pub when: When,
}

/// A push's Web Push part.
#[derive(Debug, Clone, PartialEq)]
pub struct WebPushPush<'a> {
    /// The text the service worker's `event.data.text()` gives.
    pub data: Cow<'a, str>,
    pub ttl: u32,
    pub urgency: Option<Urgency>,
    pub topic: Option<Cow<'a, str>>,
    pub when: When,
}

/// The platforms a push goes to besides WebSocket connections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DevicePush<'a> {
    pub apns: Option<ApnsPush<'a>>,
    pub fcm: Option<FcmPush<'a>>,
    pub webpush: Option<WebPushPush<'a>>,
}

fn owned(text: &str) -> Cow<'static, str> {
    Cow::Owned(text.to_string())
}

impl DevicePush<'_> {
    pub fn is_empty(&self) -> bool {
        self.apns.is_none() && self.fcm.is_none() && self.webpush.is_none()
    }

    /// Each platform's `when`, for those the push has.
    pub fn whens(&self) -> impl Iterator<Item = When> {
        [
            self.apns.as_ref().map(|p| p.when),
            self.fcm.as_ref().map(|p| p.when),
            self.webpush.as_ref().map(|p| p.when),
        ]
        .into_iter()
        .flatten()
    }

    /// Every `when` set to `when` (a push with `ack_timeout` and no `*_when`).
    pub fn set_whens(&mut self, when: When) {
        if let Some(p) = &mut self.apns {
            p.when = when;
        }
        if let Some(p) = &mut self.fcm {
            p.when = when;
        }
        if let Some(p) = &mut self.webpush {
            p.when = when;
        }
    }

    /// Which platforms a uid that is `online` (or not) gets now.
    pub fn now(&self, online: bool) -> Wants {
        Wants {
            apns: self.apns.as_ref().is_some_and(|p| p.when.now(online)),
            fcm: self.fcm.as_ref().is_some_and(|p| p.when.now(online)),
            webpush: self.webpush.as_ref().is_some_and(|p| p.when.now(online)),
        }
    }

    /// Every platform of the push, whatever its `when` (an unacknowledged push).
    pub fn all(&self) -> Wants {
        Wants {
            apns: self.apns.is_some(),
            fcm: self.fcm.is_some(),
            webpush: self.webpush.is_some(),
        }
    }

    /// The parts whose `when` is "unacked", for once the acknowledgement
    /// did not come; `None` if there are none.
    pub fn unacked(&self) -> Option<DevicePush<'static>> {
        let mut parts = self.to_static();
        parts.apns = parts.apns.filter(|p| p.when == When::Unacked);
        parts.fcm = parts.fcm.filter(|p| p.when == When::Unacked);
        parts.webpush = parts.webpush.filter(|p| p.when == When::Unacked);
        (!parts.is_empty()).then_some(parts)
    }

    /// A copy that outlives the request line, for a push that waits for an
    /// acknowledgement (or for other hubs) before it goes to devices.
    pub fn to_static(&self) -> DevicePush<'static> {
        DevicePush {
            apns: self.apns.as_ref().map(|p| ApnsPush {
                payload: owned(&p.payload),
                collapse_id: p.collapse_id.as_deref().map(owned),
                ..*p
            }),
            fcm: self.fcm.as_ref().map(|p| FcmPush {
                message: owned(&p.message),
                when: p.when,
            }),
            webpush: self.webpush.as_ref().map(|p| WebPushPush {
                data: owned(&p.data),
                topic: p.topic.as_deref().map(owned),
                ..*p
            }),
        }
    }
}

/// Which platforms a uid's devices get a push on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    pub apns: bool,
    pub fcm: bool,
    pub webpush: bool,
}

impl Wants {
    pub fn any(self) -> bool {
        self.apns || self.fcm || self.webpush
    }

    fn of(self, device: &Device) -> bool {
        match device {
            Device::Apns(_) => self.apns,
            Device::Fcm(_) => self.fcm,
            Device::WebPush(_) => self.webpush,
        }
    }

    /// Both sets together (two parts of one uid still make one message per device).
    pub fn or(self, other: Wants) -> Wants {
        Wants {
            apns: self.apns || other.apns,
            fcm: self.fcm || other.fcm,
            webpush: self.webpush || other.webpush,
        }
    }
}

/// The senders a hub has.
#[derive(Clone, Copy, Default)]
pub struct Senders<'s> {
    pub apns: Option<&'s apns::sender::Sender>,
    pub fcm: Option<&'s fcm::sender::Sender>,
    pub webpush: Option<&'s webpush::sender::Sender>,
}

/// The platforms of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Apns,
    Fcm,
    WebPush,
}

impl Platform {
    /// Its name in requests and replies.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::WebPush => "webpush",
        }
    }
}

/// What became of a push's part for one platform, in its reply.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The devices of the uids it went to.
    pub devices: usize,
    pub accepted: usize,
    pub refused: Vec<Refusal>,
    /// Why some uids' devices could not be read, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Each platform's summary, for the platforms the push has.
#[derive(Debug, Default, Serialize)]
pub struct Summaries {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webpush: Option<Summary>,
}

impl Summaries {
    fn of(&mut self, platform: Platform) -> &mut Summary {
        let slot = match platform {
            Platform::Apns => &mut self.apns,
            Platform::Fcm => &mut self.fcm,
            Platform::WebPush => &mut self.webpush,
        };
        slot.get_or_insert_with(Summary::default)
    }

    fn each(&mut self) -> impl Iterator<Item = &mut Summary> {
        [&mut self.apns, &mut self.fcm, &mut self.webpush]
            .into_iter()
            .flatten()
    }
}

/// One device that did not get the message: named by its platform
/// (`"apns":TOKEN`, `"fcm":TOKEN`, `"webpush":ENDPOINT`).
#[derive(Debug)]
pub struct Refusal {
    pub platform: Platform,
    pub device: String,
    /// The service's status; absent when it never answered for good.
    pub status: Option<u16>,
    /// The service's reason, or ours.
    pub reason: String,
    /// The device was removed from the registry (the service says it is gone).
    pub removed: bool,
}

impl Serialize for Refusal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry(self.platform.as_str(), &self.device)?;
        if let Some(status) = self.status {
            map.serialize_entry("status", &status)?;
        }
        map.serialize_entry("reason", &self.reason)?;
        if self.removed {
            map.serialize_entry("removed", &true)?;
        }
        map.end()
    }
}

/// One message under way, on its platform's sender.
enum Sent {
    Apns(apns::sender::Pending),
    Fcm(fcm::sender::Pending),
    WebPush(webpush::sender::Pending),
}

/// The push's parts, kept while the registry (in Redis) has not said which
/// devices the uids have.
struct Lookup {
    pending: registry::Pending,
    wants: Vec<Wants>,
    push: DevicePush<'static>,
}

/// Messages under way for one push.
#[derive(Default)]
pub struct InFlight {
    summaries: Summaries,
    lookup: Option<Lookup>,
    pending: Vec<(Platform, String, Sent)>,
    /// How many of `pending`, from the front, have their outcome recorded.
    settled: usize,
}

impl InFlight {
    /// Sends `push` to the devices of each uid on the platforms it wants,
    /// once the registry has said which they are.
    pub fn start(
        registry: &Registry,
        senders: Senders,
        uids: &[(&str, Wants)],
        push: &DevicePush,
    ) -> InFlight {
        let mut flight = InFlight::default();
        if push.apns.is_some() {
            flight.summaries.of(Platform::Apns);
        }
        if push.fcm.is_some() {
            flight.summaries.of(Platform::Fcm);
        }
        if push.webpush.is_some() {
            flight.summaries.of(Platform::WebPush);
        }
        let (names, wants): (Vec<&str>, Vec<Wants>) = uids
            .iter()
            .filter(|(_, wants)| wants.any())
            .copied()
            .unzip();
        if names.is_empty() {
            return flight;
        }
        match registry.devices(&names) {
            Op::Done(answer) => flight.send(senders, answer, &wants, push),
            Op::Pending(pending) => {
                flight.lookup = Some(Lookup {
                    pending,
                    wants,
                    push: push.to_static(),
                });
            }
        }
        flight
    }

    /// Sends the push to the devices the registry answered.
    fn send(
        &mut self,
        senders: Senders,
        answer: Result<Answer, registry::RegistryError>,
        wants: &[Wants],
        push: &DevicePush,
    ) {
        let devices = match answer {
            Ok(Answer::Devices(devices)) => devices,
            Ok(other) => return self.fail(format!("device registry: answered {other:?}")),
            Err(e) => return self.fail(e.to_string()),
        };
        // One copy of each payload, shared by every device's message.
        let apns_payload = push
            .apns
            .as_ref()
            .map(|p| Bytes::copy_from_slice(p.payload.as_bytes()));
        let fcm_message: Option<Rc<str>> = push.fcm.as_ref().map(|p| Rc::from(&*p.message));
        let webpush_options = push.webpush.as_ref().map(|p| {
            Rc::new(webpush::sender::Options {
                payload: Bytes::copy_from_slice(p.data.as_bytes()),
                ttl: p.ttl,
                urgency: p.urgency,
                topic: p.topic.as_ref().map(|t| t.to_string()),
            })
        });
        let chosen = devices
            .into_iter()
            .zip(wants)
            .flat_map(|(devices, wants)| devices.into_iter().filter(move |d| wants.of(d)));
        for device in chosen {
            match device {
                Device::Apns(token) => {
                    let (Some(sender), Some(apns), Some(payload)) =
                        (senders.apns, &push.apns, &apns_payload)
                    else {
                        continue;
                    };
                    let notification = Notification {
                        push_type: apns.push_type,
                        priority: apns.priority,
                        expiration: apns.expiration,
                        collapse_id: apns.collapse_id.as_ref().map(|id| id.to_string()),
                        ..Notification::new(token.clone(), payload.clone())
                    };
                    let name = token.as_str().to_string();
                    let sent = sender.send(notification).map(Sent::Apns);
                    self.track(Platform::Apns, name, sent);
                }
                Device::Fcm(token) => {
                    let (Some(sender), Some(message)) = (senders.fcm, &fcm_message) else {
                        continue;
                    };
                    let name = token.as_str().to_string();
                    let message = fcm::sender::Message::new(token, Rc::clone(message));
                    self.track(Platform::Fcm, name, sender.send(message).map(Sent::Fcm));
                }
                Device::WebPush(subscription) => {
                    let (Some(sender), Some(options)) = (senders.webpush, &webpush_options) else {
                        continue;
                    };
                    let name = subscription.endpoint.clone();
                    match webpush::sender::Message::new(subscription, Rc::clone(options)) {
                        Ok(message) => {
                            let sent = sender.send(message).map(Sent::WebPush);
                            self.track(Platform::WebPush, name, sent);
                        }
                        Err(why) => {
                            let summary = self.summaries.of(Platform::WebPush);
                            summary.devices += 1;
                            summary
                                .refused
                                .push(refusal(Platform::WebPush, name, None, why));
                        }
                    }
                }
            }
        }
    }

    fn track(
        &mut self,
        platform: Platform,
        device: String,
        sent: Result<Sent, super::sender::QueueFull>,
    ) {
        let summary = self.summaries.of(platform);
        summary.devices += 1;
        match sent {
            Ok(sent) => self.pending.push((platform, device, sent)),
            Err(full) => summary
                .refused
                .push(refusal(platform, device, None, full.to_string())),
        }
    }

    /// The registry could not say which devices the uids have.
    fn fail(&mut self, why: String) {
        for summary in self.summaries.each() {
            summary.error = Some(why.clone());
        }
    }

    /// Ready once every service has answered for every device (polling again
    /// after Ready is harmless).
    ///
    /// Outcomes are taken in order, and only the first one not yet known
    /// holds a waker: the others wait in their channels. So a push to many
    /// devices costs one poll per outcome and one per wake-up, not one per
    /// device at every wake-up.
    pub fn poll_done(&mut self, cx: &mut Context<'_>, senders: Senders) -> Poll<()> {
        if let Some(lookup) = &mut self.lookup {
            let answer = std::task::ready!(lookup.pending.poll(cx));
            if let Some(lookup) = self.lookup.take() {
                self.send(senders, answer, &lookup.wants, &lookup.push);
            }
        }
        while let Some((platform, device, sent)) = self.pending.get_mut(self.settled) {
            let (platform, summary) = (*platform, self.summaries.of(*platform));
            match sent {
                Sent::Apns(p) => record(
                    summary,
                    platform,
                    device,
                    std::task::ready!(p.poll_outcome(cx)),
                ),
                Sent::Fcm(p) => record(
                    summary,
                    platform,
                    device,
                    std::task::ready!(p.poll_outcome(cx)),
                ),
                Sent::WebPush(p) => record(
                    summary,
                    platform,
                    device,
                    std::task::ready!(p.poll_outcome(cx)),
                ),
            }
            self.settled += 1;
        }
        Poll::Ready(())
    }

    /// The summaries for the reply; call once `poll_done` is Ready.
    pub fn into_summaries(self) -> Summaries {
        self.summaries
    }
}

fn refusal(platform: Platform, device: String, status: Option<u16>, reason: String) -> Refusal {
    Refusal {
        platform,
        device,
        status,
        reason,
        removed: false,
    }
}

fn record<R: std::fmt::Display>(
    summary: &mut Summary,
    platform: Platform,
    device: &str,
    outcome: Outcome<R>,
) {
    let device = device.to_string();
    let refused = match outcome {
        Outcome::Accepted { .. } => {
            summary.accepted += 1;
            return;
        }
        Outcome::Gone { status, reason } => Refusal {
            removed: true,
            ..refusal(platform, device, Some(status), reason.to_string())
        },
        Outcome::Rejected { status, reason } => {
            refusal(platform, device, Some(status), reason.to_string())
        }
        Outcome::Failed { why } => refusal(platform, device, None, why.to_string()),
    };
    summary.refused.push(refused);
}
