//! Which Redis channels this hub is subscribed to, against which it
//! should be: one per uid it holds a connection of, one per channel it
//! holds a member of, plus its own inbox and the one every hub shares.
//!
//! The hub notes each change (`hub::Routes`); here they become
//! `SUBSCRIBE` and `UNSUBSCRIBE` commands, batched per turn: a uid that
//! leaves and comes back within a turn costs nothing. A channel has at
//! most one command in flight: a change that comes while one is waits for
//! its confirmation, so the state here is always the server's or on its
//! way there. A route is *ready* once Redis confirmed it: from then on,
//! every request for it reaches this hub.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    No,
    Subscribing,
    Subscribed,
    Unsubscribing,
}

struct Route {
    wanted: bool,
    sent: Sent,
}

#[derive(Default)]
pub struct Routes {
    table: HashMap<Box<[u8]>, Route>,
    /// Channels whose wanted state differs from the server's and that have
    /// nothing in flight: the next batch.
    dirty: Vec<Box<[u8]>>,
}

/// One batch of commands: channels to subscribe to, and to leave.
#[derive(Default, Debug)]
pub struct Batch {
    pub subscribe: Vec<Box<[u8]>>,
    pub unsubscribe: Vec<Box<[u8]>>,
}

impl Routes {
    /// This hub now holds (`wanted`) or no longer holds the route `channel`.
    pub fn want(&mut self, channel: &[u8], wanted: bool) {
        match self.table.get_mut(channel) {
            Some(route) => {
                let was_settled = route.settled();
                route.wanted = wanted;
                if was_settled && !route.settled() && !route.in_flight() {
                    self.dirty.push(channel.into());
                }
            }
            None if wanted => {
                self.table.insert(
                    channel.into(),
                    Route {
                        wanted,
                        sent: Sent::No,
                    },
                );
                self.dirty.push(channel.into());
            }
            None => {}
        }
    }

    /// The commands to send now. Each channel in them is in flight until
    /// its confirmation.
    pub fn batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        for channel in std::mem::take(&mut self.dirty) {
            let Some(route) = self.table.get_mut(&channel) else {
                continue;
            };
            match (route.wanted, route.sent) {
                (true, Sent::No) => {
                    route.sent = Sent::Subscribing;
                    batch.subscribe.push(channel);
                }
                (false, Sent::Subscribed) => {
                    route.sent = Sent::Unsubscribing;
                    batch.unsubscribe.push(channel);
                }
                (false, Sent::No) => {
                    self.table.remove(&channel);
                }
                // Settled since it was noted, or in flight.
                _ => {}
            }
        }
        batch
    }

    /// Whether a batch is waiting.
    pub fn has_batch(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Redis confirmed a `subscribe` (`true`) or `unsubscribe` of `channel`.
    pub fn confirmed(&mut self, channel: &[u8], subscribed: bool) {
        let Some(route) = self.table.get_mut(channel) else {
            return;
        };
        route.sent = match subscribed {
            true => Sent::Subscribed,
            false => Sent::No,
        };
        if !route.settled() {
            self.dirty.push(channel.into());
        } else if !route.wanted {
            self.table.remove(channel);
        }
    }

    /// Whether requests for `channel` reach this hub now.
    pub fn ready(&self, channel: &[u8]) -> bool {
        self.table
            .get(channel)
            .is_some_and(|r| r.sent == Sent::Subscribed)
    }

    /// Whether an unsubscription of `channel` is on its way.
    pub fn leaving(&self, channel: &[u8]) -> bool {
        self.table
            .get(channel)
            .is_some_and(|r| r.sent == Sent::Unsubscribing)
    }

    /// Whether this hub holds `channel` and Redis has yet to confirm it.
    pub fn pending(&self, channel: &[u8]) -> bool {
        self.table
            .get(channel)
            .is_some_and(|r| r.wanted && r.sent != Sent::Subscribed)
    }

    /// Redis dropped `channel` (its slot moved away): it is no longer
    /// subscribed, and waits for [`requeue`](Routes::requeue). False if it
    /// was not subscribed.
    pub fn drop_subscribed(&mut self, channel: &[u8]) -> bool {
        match self.table.get_mut(channel) {
            Some(route) if route.sent == Sent::Subscribed => {
                route.sent = Sent::No;
                true
            }
            _ => false,
        }
    }

    /// Redis refused the subscriptions in flight to the channels that
    /// `which` picks (their slot is elsewhere): they wait for
    /// [`requeue`](Routes::requeue). Returns them.
    pub fn drop_subscribing(&mut self, which: impl Fn(&[u8]) -> bool) -> Vec<Box<[u8]>> {
        let mut dropped = Vec::new();
        for (channel, route) in &mut self.table {
            if route.sent == Sent::Subscribing && which(channel) {
                route.sent = Sent::No;
                dropped.push(channel.clone());
            }
        }
        dropped
    }

    /// A dropped route goes into the next batch: subscribed again if it is
    /// still wanted, forgotten if not.
    pub fn requeue(&mut self, channel: &[u8]) {
        if self.table.get(channel).is_some_and(|r| r.sent == Sent::No) {
            self.dirty.push(channel.into());
        }
    }

    /// A new connection to Redis holds no subscription: everything wanted
    /// goes into the next batch, and the rest is forgotten.
    pub fn reset(&mut self) {
        self.table.retain(|_, route| route.wanted);
        self.dirty.clear();
        for (channel, route) in &mut self.table {
            route.sent = Sent::No;
            self.dirty.push(channel.clone());
        }
    }

    /// Channels subscribed or on their way.
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

impl Route {
    fn settled(&self) -> bool {
        matches!(
            (self.wanted, self.sent),
            (true, Sent::Subscribed) | (false, Sent::No)
        )
    }

    fn in_flight(&self) -> bool {
        matches!(self.sent, Sent::Subscribing | Sent::Unsubscribing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[Box<[u8]>]) -> Vec<&[u8]> {
        list.iter().map(|c| &**c).collect()
    }

    #[test]
    fn changes_within_a_turn_cancel_out() {
        let mut r = Routes::default();
        r.want(b"u:a", true);
        r.want(b"u:b", true);
        r.want(b"u:b", false);
        let batch = r.batch();
        assert_eq!(names(&batch.subscribe), [&b"u:a"[..]]);
        assert!(batch.unsubscribe.is_empty());
        assert!(!r.ready(b"u:a"));
        r.confirmed(b"u:a", true);
        assert!(r.ready(b"u:a"));
        // Leaving and coming back before the next batch sends nothing.
        r.want(b"u:a", false);
        r.want(b"u:a", true);
        let batch = r.batch();
        assert!(batch.subscribe.is_empty() && batch.unsubscribe.is_empty());
        assert!(r.ready(b"u:a"));
    }

    #[test]
    fn one_command_in_flight_per_channel() {
        let mut r = Routes::default();
        r.want(b"c:x", true);
        assert_eq!(r.batch().subscribe.len(), 1);
        // Gone and back while the subscribe is in flight: nothing more yet.
        r.want(b"c:x", false);
        assert!(r.batch().unsubscribe.is_empty());
        r.confirmed(b"c:x", true);
        let batch = r.batch();
        assert_eq!(names(&batch.unsubscribe), [&b"c:x"[..]]);
        r.confirmed(b"c:x", false);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_route_is_pending_while_held_and_unconfirmed() {
        let mut r = Routes::default();
        assert!(!r.pending(b"c:x"));
        r.want(b"c:x", true);
        assert!(r.pending(b"c:x"));
        let _ = r.batch();
        assert!(r.pending(b"c:x"));
        // Let go before Redis answered: nothing to wait for any more.
        r.want(b"c:x", false);
        assert!(!r.pending(b"c:x"));
        r.want(b"c:x", true);
        r.confirmed(b"c:x", true);
        assert!(!r.pending(b"c:x") && r.ready(b"c:x"));
    }

    #[test]
    fn a_new_connection_subscribes_everything_wanted_again() {
        let mut r = Routes::default();
        r.want(b"u:a", true);
        r.want(b"u:b", true);
        let _ = r.batch();
        r.confirmed(b"u:a", true);
        r.reset();
        assert!(!r.ready(b"u:a"));
        let mut again = names(&r.batch().subscribe)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>();
        again.sort();
        assert_eq!(again, [b"u:a".to_vec(), b"u:b".to_vec()]);
    }

    #[test]
    fn a_route_redis_dropped_is_subscribed_again_once_requeued() {
        let mut r = Routes::default();
        r.want(b"u:a", true);
        r.want(b"u:b", true);
        r.want(b"u:c", true);
        let _ = r.batch();
        r.confirmed(b"u:a", true);
        // a's slot moved away; b's subscription was refused (redirected).
        assert!(r.drop_subscribed(b"u:a"));
        assert!(!r.drop_subscribed(b"u:b"), "not subscribed yet");
        assert_eq!(names(&r.drop_subscribing(|c| c == b"u:b")), [&b"u:b"[..]]);
        assert!(!r.ready(b"u:a") && r.pending(b"u:a"));
        // Nothing is sent before the fresh map says where.
        assert!(r.batch().subscribe.is_empty());
        r.want(b"u:b", false);
        r.requeue(b"u:a");
        r.requeue(b"u:b");
        assert_eq!(names(&r.batch().subscribe), [&b"u:a"[..]]);
        assert_eq!(
            r.len(),
            2,
            "b, let go meanwhile, is forgotten; c still in flight"
        );
    }
}
