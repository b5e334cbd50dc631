//! A backend connection's replies, written in request order although some of
//! them (pushes that also go to APNs) wait for Apple's answers.
//!
//! While nothing waits, replies go straight to the output buffer, with no
//! allocation per reply. Once a reply waits, the ready replies after it are
//! kept with it and follow it out; the requests themselves go on being handled
//! (pushes still reach WebSocket clients at once), only their replies are held.
//! Up to a bound: past [`MAX_WAITING`] waiting replies or [`MAX_HELD_BYTES`] of
//! replies held behind them, the connection stops reading until some settle.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use serde_json::value::RawValue;

use crate::push::route::InFlight;
use crate::text_port::protocol::{Reply, write_reply};

/// Replies waiting for APNs on one backend connection before it stops reading.
pub const MAX_WAITING: usize = 1024;

/// Bytes of ready replies held behind waiting ones before it stops reading.
pub const MAX_HELD_BYTES: usize = 1 << 20;

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

    /// Whether so much waits that the connection should read no more requests
    /// until some of it is settled.
    pub fn is_full(&self) -> bool {
        self.waiting.len() >= MAX_WAITING
            || self.waiting.iter().map(|w| w.after.len()).sum::<usize>() >= MAX_HELD_BYTES
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
