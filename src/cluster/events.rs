//! Clients' events for listeners on other hubs. A hub whose backends
//! listen subscribes to `PREFIX:l:KINDS:NODE` (KINDS: `m` for messages,
//! `p` for connects and disconnects, `mp` for both) and, once Redis
//! confirmed it, names that channel in the sorted set
//! `PREFIX:{hubs}:listeners`, scored with when the entry lapses (every
//! second, for three); every hub reads the live entries once a second, and
//! one with no listener of its own publishes its events to one of those
//! hubs, chosen by connection so that a connection's events stay in order.
//! Not `PUBSUB CHANNELS`: it walks every channel Redis has, a route per uid
//! and channel, and blocked Redis for a millisecond or more at 20,000. An event
//! sent to a hub that is gone (`PUBLISH` reached nobody) is counted lost:
//! events are at most once, as they are to a local listener that goes.

use std::task::Poll;

use serde::Deserialize;

use super::redis::resp::{self, Frame};
use super::{Cluster, Expect, streams, wake};
use crate::hub::listeners::{Event, Interests, Payload, WireId};
use crate::shared::Shared;

/// Another hub with listeners, and what they take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListenerHub {
    node: String,
    takes: Interests,
}

/// The channel a hub whose listeners take `takes` subscribes to; `None`
/// if it has none.
pub(super) fn channel(prefix: &[u8], node: &str, takes: Interests) -> Option<Vec<u8>> {
    let kinds = match (takes.messages, takes.presence) {
        (true, true) => "mp",
        (true, false) => "m",
        (false, true) => "p",
        (false, false) => return None,
    };
    Some([prefix, kinds.as_bytes(), b":", node.as_bytes()].concat())
}

/// How long a hub's entry among the listener hubs lasts unless renewed
/// (each second): a hub that died is dropped within it.
const ADVERTISED_MS: u64 = 3000;

/// The hubs in a reply listing listener channels, but `me`.
fn parse_hubs(prefix: &[u8], me: &str, reply: &Frame) -> Vec<ListenerHub> {
    let Frame::Array(channels) = reply else {
        return Vec::new();
    };
    let mut hubs: Vec<ListenerHub> = channels
        .iter()
        .filter_map(|c| {
            let rest = std::str::from_utf8(resp::bytes(c)?.strip_prefix(prefix)?).ok()?;
            let (kinds, node) = rest.split_once(':')?;
            let takes = Interests {
                messages: kinds.contains('m'),
                presence: kinds.contains('p'),
            };
            (node != me).then(|| ListenerHub {
                node: node.to_string(),
                takes,
            })
        })
        .collect();
    hubs.sort_by(|a, b| a.node.cmp(&b.node));
    hubs
}

/// What an event line says of itself, to choose its listener.
#[derive(Deserialize, Clone, Copy)]
struct Head<'a> {
    event: &'a str,
    #[serde(default)]
    node: &'a str,
    conn: &'a str,
}

impl Cluster {
    /// Tells Redis this hub has listeners (if it has, and their channel is
    /// subscribed), and asks which hubs have.
    pub(super) fn ask_for_listeners(&self) {
        let mut state = self.state.borrow_mut();
        let listening = state
            .listening
            .clone()
            .filter(|channel| state.routes.ready(channel));
        let Some(home) = state.home() else {
            return;
        };
        let key = &self.names.listeners;
        let now = streams::now_ms();
        if let Some(channel) = listening {
            let until = (now + ADVERTISED_MS).to_string();
            resp::command(&mut home.out, &[b"ZADD", key, until.as_bytes(), &channel]);
            home.expect(Expect::Ignore);
        }
        let lapsed = format!("({now}");
        resp::command(
            &mut home.out,
            &[b"ZREMRANGEBYSCORE", key, b"-inf", lapsed.as_bytes()],
        );
        home.expect(Expect::Ignore);
        let now = now.to_string();
        resp::command(
            &mut home.out,
            &[b"ZRANGEBYSCORE", key, now.as_bytes(), b"+inf"],
        );
        home.expect(Expect::ListenerHubs);
        home.wake();
    }

    /// Redis's answer to [`ask_for_listeners`](Cluster::ask_for_listeners).
    pub(super) fn on_listener_hubs(&self, reply: &Frame) {
        let hubs = parse_hubs(&self.names.listen, &self.config.node, reply);
        let mut state = self.state.borrow_mut();
        if state.listener_hubs != hubs {
            state.listener_hubs = hubs;
            wake(&mut state.events_waker);
        }
    }

    /// This hub's own listener channel, kept to what its listeners take.
    pub(super) fn track_listeners(&self, shared: &Shared) {
        let takes = shared.hub.borrow().listeners.interests();
        let wanted = channel(&self.names.listen, &self.config.node, takes);
        let mut state = self.state.borrow_mut();
        if state.listening != wanted {
            if let Some(old) = state.listening.take() {
                state.routes.want(&old, false);
                // Other hubs stop sending at once rather than within
                // seconds.
                if let Some(home) = state.home() {
                    resp::command(&mut home.out, &[b"ZREM", &self.names.listeners, &old]);
                    home.expect(Expect::Ignore);
                    home.wake();
                }
            }
            if let Some(new) = &wanted {
                state.routes.want(new, true);
            }
            state.listening = wanted;
        }
    }

    /// Event lines from another hub, for this hub's listeners.
    pub(super) fn on_events(&self, shared: &Shared, lines: &[u8]) {
        let mut hub = shared.hub.borrow_mut();
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let head = serde_json::from_slice::<Head>(line).ok();
            let Some((head, conn)) = head.and_then(|h| Some((h, WireId(h.conn.parse().ok()?))))
            else {
                self.state.borrow_mut().counters.cluster_bad_messages += 1;
                continue;
            };
            // The kind is all `emit_line` looks at.
            let event = match head.event {
                "message" => Event::Message(Payload::Text("")),
                "connect" => Event::Connect,
                _ => Event::Disconnect,
            };
            hub.listeners.emit_line(head.node, conn, event, line);
        }
    }

    /// The link is down: no other hub's listener can be reached.
    pub(super) fn forget_listener_hubs(&self, shared: &Shared) {
        self.state.borrow_mut().listener_hubs.clear();
        shared
            .hub
            .borrow_mut()
            .listeners
            .set_remote(Interests::default());
    }
}

/// Forwards this hub's events to other hubs' listeners, for the life of
/// the link.
pub(super) async fn forward(shared: &Shared, cluster: &Cluster) -> String {
    loop {
        std::future::poll_fn(|cx| {
            let mut hub = shared.hub.borrow_mut();
            let mut state = cluster.state.borrow_mut();
            state.events_waker = Some(cx.waker().clone());
            let takes = state
                .listener_hubs
                .iter()
                .fold(Interests::default(), |all, h| Interests {
                    messages: all.messages || h.takes.messages,
                    presence: all.presence || h.takes.presence,
                });
            hub.listeners.set_remote(takes);
            let events = hub.listeners.take_remote(cx.waker());
            if events.is_empty() {
                return Poll::Pending;
            }
            let hubs = std::mem::take(&mut state.listener_hubs);
            let mut batches: Vec<(usize, Vec<u8>, u32)> = Vec::new();
            for event in events {
                let takers: Vec<usize> = (0..hubs.len())
                    .filter(|&i| match event.message {
                        true => hubs[i].takes.messages,
                        false => hubs[i].takes.presence,
                    })
                    .collect();
                if takers.is_empty() {
                    state.counters.cluster_events_lost += 1;
                    continue;
                }
                let to = takers[(event.conn.0 as u32 as usize) % takers.len()];
                match batches.iter_mut().find(|b| b.0 == to) {
                    Some(batch) => {
                        batch.1.extend_from_slice(&event.line);
                        batch.2 += 1;
                    }
                    None => batches.push((to, event.line, 1)),
                }
            }
            if let Some(home) = state.home() {
                for (to, lines, n) in batches {
                    let hub = &hubs[to];
                    let Some(channel) = channel(&cluster.names.listen, &hub.node, hub.takes) else {
                        continue;
                    };
                    resp::command(&mut home.out, &[b"PUBLISH", &channel, &lines]);
                    home.expect(Expect::Events(n));
                }
                home.wake();
            }
            state.listener_hubs = hubs;
            Poll::Ready(())
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn listener_channels_name_what_they_take() {
        let all = Interests {
            messages: true,
            presence: true,
        };
        assert_eq!(channel(b"p:l:", "a", all).unwrap(), b"p:l:mp:a");
        assert_eq!(channel(b"p:l:", "a", Interests::default()), None);
        let reply = Frame::Array(vec![
            Frame::BulkString(Bytes::from_static(b"p:l:mp:a")),
            Frame::BulkString(Bytes::from_static(b"p:l:m:c")),
            Frame::BulkString(Bytes::from_static(b"p:l:p:b")),
            Frame::BulkString(Bytes::from_static(b"p:l:junk")),
            Frame::Integer(3),
        ]);
        let hubs = parse_hubs(b"p:l:", "a", &reply);
        let names: Vec<(&str, bool, bool)> = hubs
            .iter()
            .map(|h| (h.node.as_str(), h.takes.messages, h.takes.presence))
            .collect();
        assert_eq!(names, [("b", false, true), ("c", true, false)]);
    }
}
