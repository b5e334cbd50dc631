//! A backend connection's replies, written in request order although some of
//! them (pushes that also go to APNs) wait for Apple's answers.
//!
//! While nothing waits, replies go straight to the output buffer, with no
//! allocation per reply. Once a reply waits, the ones after it queue behind
//! it; the requests themselves go on being handled (pushes still reach
//! WebSocket clients at once), only their replies are held.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use serde_json::value::RawValue;

use crate::apns::route::InFlight;
use crate::protocol::{Reply, write_reply};

enum Slot {
    Ready(Vec<u8>),
    Apns {
        id: Option<Box<RawValue>>,
        delivered: usize,
        flight: InFlight,
    },
}

#[derive(Default)]
pub struct Replies {
    out: Vec<u8>,
    waiting: VecDeque<Slot>,
}

impl Replies {
    /// Where the next reply that is ready now must be written.
    pub fn ready(&mut self) -> &mut Vec<u8> {
        if self.waiting.is_empty() {
            &mut self.out
        } else {
            self.waiting.push_back(Slot::Ready(Vec::new()));
            match self.waiting.back_mut() {
                Some(Slot::Ready(bytes)) => bytes,
                _ => unreachable!("a ready slot was just pushed"),
            }
        }
    }

    /// Queues the reply of a push whose APNs part is under way.
    pub fn wait(&mut self, id: Option<&RawValue>, delivered: usize, flight: InFlight) {
        self.waiting.push_back(Slot::Apns {
            id: id.map(RawValue::to_owned),
            delivered,
            flight,
        });
    }

    /// Whether a reply is waiting for APNs.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Moves every reply that is complete, in order, to the output. Ready when
    /// nothing waits any more.
    pub fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Some(front) = self.waiting.front_mut() {
            match front {
                Slot::Ready(bytes) => self.out.append(bytes),
                Slot::Apns { flight, .. } => {
                    if flight.poll_done(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let Some(Slot::Apns {
                        id,
                        delivered,
                        flight,
                    }) = self.waiting.pop_front()
                    else {
                        unreachable!("the front slot was just matched");
                    };
                    let reply = Reply::DeliveredApns(delivered, flight.into_summary());
                    write_reply(&mut self.out, id.as_deref(), &reply);
                    continue;
                }
            }
            self.waiting.pop_front();
        }
        Poll::Ready(())
    }

    /// The replies ready to be written, in order.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
}
