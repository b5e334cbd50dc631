//! A backend connection's replies, written in request order although some of
//! them (pushes that also go to APNs) wait for Apple's answers.
//!
//! While nothing waits, replies go straight to the output buffer, with no
//! allocation per reply. Once a reply waits, the ready replies after it are
//! kept with it and follow it out; the requests themselves go on being handled
//! (pushes still reach WebSocket clients at once), only their replies are held.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use serde_json::value::RawValue;

use crate::apns::route::InFlight;
use crate::protocol::{Reply, write_reply};

/// A push's reply waiting for APNs, and the ready replies that came after it.
struct Waiting {
    id: Option<Box<RawValue>>,
    delivered: usize,
    flight: InFlight,
    after: Vec<u8>,
}

#[derive(Default)]
pub struct Replies {
    out: Vec<u8>,
    waiting: VecDeque<Waiting>,
}

impl Replies {
    /// Where a reply that is ready now must be written: the output, or behind
    /// the last reply that waits.
    pub fn ready(&mut self) -> &mut Vec<u8> {
        match self.waiting.back_mut() {
            Some(last) => &mut last.after,
            None => &mut self.out,
        }
    }

    /// Queues the reply of a push whose APNs part is under way.
    pub fn wait(&mut self, id: Option<&RawValue>, delivered: usize, flight: InFlight) {
        self.waiting.push_back(Waiting {
            id: id.map(RawValue::to_owned),
            delivered,
            flight,
            after: Vec::new(),
        });
    }

    /// Whether a reply is waiting for APNs.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Moves every reply that is complete, in order, to the output. Ready when
    /// nothing waits any more.
    pub fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Some(first) = self.waiting.front_mut() {
            if first.flight.poll_done(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(done) = self.waiting.pop_front() {
                let reply = Reply::DeliveredApns(done.delivered, done.flight.into_summary());
                write_reply(&mut self.out, done.id.as_deref(), &reply);
                self.out.extend_from_slice(&done.after);
            }
        }
        Poll::Ready(())
    }

    /// The replies ready to be written, in order.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
}
