//! A push's APNs part: which of its uids go to APNs (by `apns_when`), their
//! devices from the registry, one notification each, and the summary that goes
//! in the push's reply once Apple has answered them all.

use std::borrow::Cow;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;

use super::apns::sender::{Notification, Outcome, Pending, Priority, PushType, Sender};
use crate::push::registry::{self, Answer, Device, DeviceToken, Op, Registry};

/// A push's APNs part: the payload for Apple and how to send it.
#[derive(Debug, PartialEq)]
pub struct ApnsPush<'a> {
    /// The JSON object sent to Apple as is.
    pub payload: Cow<'a, str>,
    pub when: ApnsWhen,
    pub push_type: PushType,
    pub priority: Priority,
    pub expiration: u64,
    pub collapse_id: Option<Cow<'a, str>>,
}

impl ApnsPush<'_> {
    /// A copy that outlives the request line, for a push that waits for an
    /// acknowledgement (or for other hubs) before it goes to APNs.
    pub fn into_owned(self) -> ApnsPush<'static> {
        ApnsPush {
            payload: Cow::Owned(self.payload.into_owned()),
            collapse_id: self.collapse_id.map(|id| Cow::Owned(id.into_owned())),
            ..self
        }
    }

    pub fn to_static(&self) -> ApnsPush<'static> {
        ApnsPush {
            payload: Cow::Owned(self.payload.to_string()),
            collapse_id: self
                .collapse_id
                .as_ref()
                .map(|id| Cow::Owned(id.to_string())),
            ..*self
        }
    }
}

/// `apns_when`: when a push also goes to the uid's iPhones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsWhen {
    /// Only when the uid has no WebSocket connection (the default).
    Offline,
    Always,
    Never,
    /// When no connection of the uid acknowledged the push within its
    /// `ack_timeout` (the default with one).
    Unacked,
}

/// What became of a push's APNs part, in its reply.
#[derive(Debug, Default, Serialize)]
pub struct ApnsSummary {
    /// The devices of the uids it went to.
    pub devices: usize,
    pub accepted: usize,
    pub refused: Vec<Refusal>,
    /// Why some uids' devices could not be read, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One device that did not get the notification.
#[derive(Debug, Serialize)]
pub struct Refusal {
    pub apns: String,
    /// Apple's status; absent when Apple never answered for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Apple's reason, or ours.
    pub reason: String,
    /// The token was removed from the registry (Apple says it is gone).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// Notifications under way for one push.
#[derive(Default)]
pub struct InFlight {
    summary: ApnsSummary,
    /// While the registry (in Redis) has not said which devices the uids
    /// have: what to send them then.
    lookup: Option<(registry::Pending, ApnsPush<'static>)>,
    pending: Vec<(DeviceToken, Pending)>,
    /// How many of `pending`, from the front, have their outcome recorded.
    settled: usize,
}

impl InFlight {
    /// Sends `apns` to every device of `uids`, once the registry has said
    /// which they are.
    pub fn start(registry: &Registry, sender: &Sender, uids: &[&str], apns: &ApnsPush) -> InFlight {
        let mut flight = InFlight::default();
        match registry.devices(uids) {
            Op::Done(answer) => flight.send(sender, answer, apns),
            Op::Pending(lookup) => flight.lookup = Some((lookup, apns.to_static())),
        }
        flight
    }

    /// Sends `apns` to the devices the registry answered.
    fn send(
        &mut self,
        sender: &Sender,
        answer: Result<Answer, registry::RegistryError>,
        apns: &ApnsPush,
    ) {
        let devices = match answer {
            Ok(Answer::Devices(devices)) => devices,
            Ok(other) => {
                self.summary.error = Some(format!("device registry: answered {other:?}"));
                return;
            }
            Err(e) => {
                self.summary.error = Some(e.to_string());
                return;
            }
        };
        // One copy of the payload, shared by every device's request.
        let payload = Bytes::copy_from_slice(apns.payload.as_bytes());
        // APNs' part: the uids' iPhones (their other devices are other
        // services').
        let iphones = devices
            .into_iter()
            .flatten()
            .filter_map(|device| match device {
                Device::Apns(token) => Some(token),
                _ => None,
            });
        for device in iphones {
            self.summary.devices += 1;
            let notification = Notification {
                push_type: apns.push_type,
                priority: apns.priority,
                expiration: apns.expiration,
                collapse_id: apns.collapse_id.as_ref().map(|id| id.to_string()),
                ..Notification::new(device.clone(), payload.clone())
            };
            match sender.send(notification) {
                Ok(pending) => self.pending.push((device, pending)),
                Err(full) => self.summary.refused.push(Refusal {
                    apns: device.as_str().to_string(),
                    status: None,
                    reason: full.to_string(),
                    removed: false,
                }),
            }
        }
    }

    /// Ready once Apple has answered for every device (polling again after
    /// Ready is harmless).
    ///
    /// Outcomes are taken in order, and only the first one not yet known
    /// holds a waker: the others wait in their channels. So a push to many
    /// devices costs one poll per outcome and one per wake-up, not one per
    /// device at every wake-up.
    pub fn poll_done(&mut self, cx: &mut Context<'_>, sender: &Sender) -> Poll<()> {
        if let Some((lookup, _)) = &mut self.lookup {
            let answer = std::task::ready!(lookup.poll(cx));
            if let Some((_, apns)) = self.lookup.take() {
                self.send(sender, answer, &apns);
            }
        }
        while let Some((device, pending)) = self.pending.get_mut(self.settled) {
            let outcome = std::task::ready!(pending.poll_outcome(cx));
            record(&mut self.summary, device, outcome);
            self.settled += 1;
        }
        Poll::Ready(())
    }

    /// The summary for the reply; call once `poll_done` is Ready.
    pub fn into_summary(self) -> ApnsSummary {
        self.summary
    }
}

fn record(summary: &mut ApnsSummary, device: &DeviceToken, outcome: Outcome) {
    let refusal = |status, reason: String, removed| Refusal {
        apns: device.as_str().to_string(),
        status,
        reason,
        removed,
    };
    match outcome {
        Outcome::Accepted { .. } => summary.accepted += 1,
        Outcome::DeviceGone { status, reason } => {
            summary
                .refused
                .push(refusal(Some(status), reason.to_string(), true));
        }
        Outcome::Rejected { status, reason } => {
            summary
                .refused
                .push(refusal(Some(status), reason.to_string(), false));
        }
        Outcome::Failed { why } => summary.refused.push(refusal(None, why.to_string(), false)),
    }
}
