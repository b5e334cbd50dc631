//! A backend connection's replies, written in request order although some of
//! them wait: pushes that also go to APNs wait for Apple's answers, pushes
//! with `ack_timeout` for a client's acknowledgement (then, unacknowledged,
//! perhaps for APNs), requests routed through a cluster for the other hubs,
//! device commands for the registry in Redis.
//!
//! While nothing waits, replies go straight to the output buffer, with no
//! allocation per reply. Once a reply waits, the ready replies after it are
//! kept with it and follow it out; the requests themselves go on being handled
//! (pushes still reach WebSocket clients at once), only their replies are held.
//! Up to a bound: past [`MAX_WAITING`] waiting replies or [`MAX_HELD_BYTES`] of
//! replies held behind them, the connection stops reading until some settle.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use serde_json::value::RawValue;
use smol::Timer;

use super::Services;
use super::routed::{self, Shape};
use crate::cluster::GatherId;
use crate::hub::AckWatch;
use crate::push::registry::Pending;
use crate::push::route::{DevicePush, InFlight};
use crate::text_port::protocol::{Reply, write_reply};

/// Replies waiting for APNs on one backend connection before it stops reading.
pub const MAX_WAITING: usize = 1024;

/// Bytes of ready replies held behind waiting ones before it stops reading.
pub const MAX_HELD_BYTES: usize = 1 << 20;

/// What a waiting reply waits for.
pub enum Wait {
    /// The push services' answers for a push's messages to devices.
    Devices(InFlight),
    /// The registry's answer to a device command.
    Device(Pending),
    /// A client's acknowledgement, until the timer; then, unacknowledged,
    /// the uid's devices get `fallback` (its `*_when` "unacked" parts).
    Ack {
        watch: AckWatch,
        deadline: Instant,
        timer: Timer,
        fallback: Option<Fallback>,
    },
    /// Unacknowledged, and gone to the uid's devices.
    Unacked(Option<InFlight>),
    /// The other hubs' answers, until the timer (`--cluster-timeout`).
    Cluster {
        gather: GatherId,
        shape: Shape,
        timer: Timer,
    },
    /// In a cluster, the word of the hub whose connection took a push with
    /// `ack_timeout` that it was acknowledged, until the timer; then, as
    /// `Ack`, `fallback`.
    ClusterAck {
        gather: GatherId,
        deadline: Instant,
        timer: Timer,
        fallback: Option<Fallback>,
    },
}

/// The parts for devices of an unacknowledged push, for its uid.
pub struct Fallback {
    pub uid: String,
    pub push: DevicePush<'static>,
}

/// A push's reply waiting, and the ready replies that came after it.
struct Waiting {
    id: Option<Box<RawValue>>,
    delivered: usize,
    /// Some hub did not confirm its share (of a routed push with `apns`).
    unconfirmed: bool,
    wait: Wait,
    after: Vec<u8>,
}

impl Waiting {
    /// `reply`, marked unconfirmed if some hub did not confirm its share.
    fn confirmed_or_not(&self, reply: Reply<'static>) -> Reply<'static> {
        match self.unconfirmed {
            true => Reply::Unconfirmed(Box::new(reply)),
            false => reply,
        }
    }

    /// Ready with the reply once what it waits for is done.
    fn poll_reply(&mut self, cx: &mut Context<'_>, services: Services) -> Poll<Reply<'static>> {
        loop {
            match &mut self.wait {
                Wait::Devices(flight) => {
                    std::task::ready!(flight.poll_done(cx, services.senders));
                    let summaries = std::mem::take(flight).into_summaries();
                    let reply = Reply::DeliveredDevices(self.delivered, summaries);
                    return Poll::Ready(self.confirmed_or_not(reply));
                }
                Wait::Device(op) => {
                    let answer = std::task::ready!(op.poll(cx));
                    return Poll::Ready(super::device_reply(answer));
                }
                Wait::Ack {
                    watch,
                    deadline,
                    timer,
                    fallback,
                } => {
                    // Replies settle in order, so this one may be looked at
                    // after its deadline: an acknowledgement counts if it
                    // came in time, whenever it is seen.
                    let in_time = match watch.poll_acked(cx) {
                        Poll::Ready(at) => at <= *deadline,
                        Poll::Pending => {
                            std::task::ready!(Pin::new(timer).poll(cx));
                            false
                        }
                    };
                    if in_time {
                        return Poll::Ready(Reply::DeliveredAcked(self.delivered, true, None));
                    }
                    let flight = fallback.take().and_then(|f| f.start(services));
                    self.wait = Wait::Unacked(flight);
                }
                Wait::Cluster {
                    gather,
                    shape,
                    timer,
                } => {
                    // Only routed requests wait here, and only a hub in a
                    // cluster routes them.
                    let cluster = services.cluster.expect("a routed request's cluster");
                    let gathered = match cluster.poll_gather(*gather, cx) {
                        Poll::Ready(gathered) => gathered,
                        Poll::Pending => {
                            std::task::ready!(Pin::new(timer).poll(cx));
                            cluster.finish(*gather)
                        }
                    };
                    if let Shape::DeliveredAcked {
                        uid,
                        deadline,
                        fallback,
                    } = shape
                    {
                        let (delivered, deadline, gather) =
                            (routed::reply_delivered(&gathered), *deadline, *gather);
                        let fallback = fallback.take().map(|push| Fallback {
                            uid: uid.clone(),
                            push,
                        });
                        self.delivered = delivered;
                        self.unconfirmed = gathered.unconfirmed;
                        self.wait = match delivered {
                            0 => {
                                cluster.forget_ack(gather);
                                Wait::Unacked(fallback.and_then(|f| f.start(services)))
                            }
                            _ => Wait::ClusterAck {
                                gather,
                                deadline,
                                timer: Timer::at(deadline),
                                fallback,
                            },
                        };
                        continue;
                    }
                    let Shape::DeliveredDevices(uids, push) = shape else {
                        return Poll::Ready(routed::reply(shape, gathered));
                    };
                    // The hubs have answered: devices now, from this hub only.
                    let (delivered, chosen) = routed::device_uids(uids, push, &gathered);
                    let chosen: Vec<_> = chosen.iter().map(|(uid, w)| (uid.as_str(), *w)).collect();
                    let flight = match services.registry {
                        Some(registry) => {
                            InFlight::start(registry, services.senders, &chosen, push)
                        }
                        // Checked when the push came; the services do not change.
                        None => InFlight::default(),
                    };
                    self.delivered = delivered;
                    self.unconfirmed = gathered.unconfirmed;
                    self.wait = Wait::Devices(flight);
                }
                Wait::ClusterAck {
                    gather,
                    deadline,
                    timer,
                    fallback,
                } => {
                    let cluster = services.cluster.expect("a routed request's cluster");
                    let in_time = match cluster.poll_acked(*gather, cx) {
                        Poll::Ready(at) => at <= *deadline,
                        Poll::Pending => {
                            std::task::ready!(Pin::new(timer).poll(cx));
                            false
                        }
                    };
                    cluster.forget_ack(*gather);
                    if in_time {
                        let reply = Reply::DeliveredAcked(self.delivered, true, None);
                        return Poll::Ready(self.confirmed_or_not(reply));
                    }
                    let flight = fallback.take().and_then(|f| f.start(services));
                    self.wait = Wait::Unacked(flight);
                }
                Wait::Unacked(flight) => {
                    let summary = match flight {
                        Some(flight) => {
                            std::task::ready!(flight.poll_done(cx, services.senders));
                            Some(std::mem::take(flight).into_summaries())
                        }
                        None => None,
                    };
                    let reply = Reply::DeliveredAcked(self.delivered, false, summary);
                    return Poll::Ready(self.confirmed_or_not(reply));
                }
            }
        }
    }
}

impl Fallback {
    /// The fallback of a push with `ack_timeout`, if it has parts for
    /// devices once unacknowledged.
    pub fn of(uid: &str, push: &DevicePush) -> Option<Fallback> {
        Some(Fallback {
            uid: uid.to_string(),
            push: push.unacked()?,
        })
    }

    /// Sends the parts, if the hub has a registry (checked when the push
    /// came, with the senders: the services do not change).
    pub fn start(self, services: Services) -> Option<InFlight> {
        let registry = services.registry?;
        let uids = [(self.uid.as_str(), self.push.all())];
        Some(InFlight::start(
            registry,
            services.senders,
            &uids,
            &self.push,
        ))
    }
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

    /// Queues the reply of a push that waits.
    pub fn wait(&mut self, id: Option<&RawValue>, delivered: usize, wait: Wait) {
        if let Wait::Ack {
            watch, deadline, ..
        } = &wait
        {
            // Its reply may be looked at long after the deadline, behind
            // others: an ack after it must not count, there or in the stats.
            watch.set_deadline(*deadline);
        }
        self.waiting.push_back(Waiting {
            id: id.map(RawValue::to_owned),
            delivered,
            unconfirmed: false,
            wait,
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
    pub fn poll_settle(&mut self, cx: &mut Context<'_>, services: Services) -> Poll<()> {
        while let Some(first) = self.waiting.front_mut() {
            let Poll::Ready(reply) = first.poll_reply(cx, services) else {
                return Poll::Pending;
            };
            if let Some(done) = self.waiting.pop_front() {
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
