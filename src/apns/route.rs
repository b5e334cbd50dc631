//! A push's APNs part: which of its uids go to APNs (by `apns_when`), their
//! devices from the registry, one notification each, and the summary that goes
//! in the push's reply once Apple has answered them all.

use std::task::{Context, Poll};

use bytes::Bytes;

use super::registry::{DeviceToken, Registry};
use super::sender::{Notification, Outcome, Pending, Sender};
use crate::protocol::{ApnsPush, ApnsSummary, Refusal};

/// Notifications under way for one push.
pub struct InFlight {
    summary: ApnsSummary,
    pending: Vec<(DeviceToken, Pending)>,
    /// How many of `pending`, from the front, have their outcome recorded.
    settled: usize,
}

impl InFlight {
    /// Sends `apns` to every device of `uids`.
    pub fn start(registry: &Registry, sender: &Sender, uids: &[&str], apns: &ApnsPush) -> InFlight {
        let mut flight = InFlight {
            summary: ApnsSummary::default(),
            pending: Vec::new(),
            settled: 0,
        };
        // One copy of the payload, shared by every device's request.
        let payload = Bytes::copy_from_slice(apns.payload.as_bytes());
        for uid in uids {
            let devices = match registry.devices(uid) {
                Ok(devices) => devices,
                Err(e) => {
                    flight.summary.error = Some(e.to_string());
                    continue;
                }
            };
            for device in devices {
                flight.summary.devices += 1;
                let notification = Notification {
                    push_type: apns.push_type,
                    priority: apns.priority,
                    expiration: apns.expiration,
                    collapse_id: apns.collapse_id.as_ref().map(|id| id.to_string()),
                    ..Notification::new(device.clone(), payload.clone())
                };
                match sender.send(notification) {
                    Ok(pending) => flight.pending.push((device, pending)),
                    Err(full) => flight.summary.refused.push(Refusal {
                        apns: device.as_str().to_string(),
                        status: None,
                        reason: full.to_string(),
                        removed: false,
                    }),
                }
            }
        }
        flight
    }

    /// Ready once Apple has answered for every device (polling again after
    /// Ready is harmless).
    ///
    /// Outcomes are taken in order, and only the first one not yet known
    /// holds a waker: the others wait in their channels. So a push to many
    /// devices costs one poll per outcome and one per wake-up, not one per
    /// device at every wake-up.
    pub fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
