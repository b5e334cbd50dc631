//! The backends that listen (`{"cmd":"listen"}` on the text port): clients'
//! messages going up, and their connects and disconnects if asked, each
//! written as one event line to one listener.
//!
//! Several listeners share the load. A connection's events go to the same
//! listener while the set of listeners does not change, so that a backend
//! sees one connection's events in order; only a listener that is full
//! passes them on to the next. A listener that does not read holds at most
//! `--max-listener-buffer` bytes of events: past that, and when every
//! listener is full, an event is dropped and counted, never held.
//!
//! In a cluster, a hub with no listener of its own hands its events to the
//! cluster (`Remote`), which forwards them to a hub that has one; event
//! lines then name the hub (`node`) of their connection.

use std::fmt;
use std::task::{Context, Poll, Waker};

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use slab::Slab;

/// Which events a listener asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interests {
    pub messages: bool,
    /// `connect` and `disconnect`.
    pub presence: bool,
}

/// What a client sent up.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A v1 `send`'s `d`, as the client wrote it.
    Json(&'a RawValue),
    /// A raw client's text message.
    Text(&'a str),
    /// A raw client's binary message, sent as base64.
    Binary(&'a [u8]),
}

/// An event, as its line says it.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Message(Payload<'a>),
    Connect,
    Disconnect,
}

/// A connection's id on the wire: a decimal string (a JSON number could not
/// carry 64 bits to JavaScript).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireId(pub u64);

impl fmt::Display for WireId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for WireId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Serialize)]
struct Line<'a> {
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    conn: WireId,
    #[serde(skip_serializing_if = "Option::is_none")]
    d: Option<Data<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    binary: bool,
}

struct Data<'a>(Payload<'a>);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            // JSON may break lines between its tokens, and an event is one
            // line: each such break becomes a space. (Inside a string a
            // line break is always escaped, so nothing else can change.)
            Payload::Json(raw) if raw.get().contains(['\n', '\r']) => {
                let one_line = raw.get().replace(['\n', '\r'], " ");
                RawValue::from_string(one_line)
                    .map_err(serde::ser::Error::custom)?
                    .serialize(s)
            }
            Payload::Json(raw) => raw.serialize(s),
            Payload::Text(text) => s.serialize_str(text),
            Payload::Binary(bytes) => s.serialize_str(&data_encoding::BASE64.encode(bytes)),
        }
    }
}

struct Listener {
    interests: Interests,
    out: Vec<u8>,
    waker: Option<Waker>,
}

/// An event for another hub's listener.
pub struct RemoteEvent {
    /// Its connection: a connection's events stay on one hub.
    pub conn: WireId,
    /// A message (else a connect or disconnect).
    pub message: bool,
    /// Its line, newline included.
    pub line: Vec<u8>,
}

/// Events for the listeners of other hubs, while this one has none.
#[derive(Default)]
struct Remote {
    /// Which events some other hub's listeners take.
    takes: Interests,
    out: Vec<RemoteEvent>,
    bytes: usize,
    waker: Option<Waker>,
}

pub struct Listeners {
    slab: Slab<Listener>,
    /// Cluster mode: this hub's node id, and the way to other hubs'
    /// listeners.
    node: Option<std::rc::Rc<str>>,
    remote: Option<Remote>,
    /// The listeners' keys, in the order they came: an event's listener is
    /// chosen by its connection among them.
    order: Vec<u32>,
    max_bytes: usize,
    /// Events written to a listener, and events dropped (no listener had room).
    pub sent: u64,
    pub dropped: u64,
}

impl Listeners {
    pub fn new(max_bytes: usize) -> Listeners {
        Listeners {
            slab: Slab::new(),
            node: None,
            remote: None,
            order: Vec::new(),
            max_bytes,
            sent: 0,
            dropped: 0,
        }
    }

    /// Cluster mode: event lines name this hub, and events no local
    /// listener takes may go to other hubs'.
    pub fn join_cluster(&mut self, node: &str) {
        self.node = Some(node.into());
        self.remote = Some(Remote::default());
    }

    /// Which events other hubs' listeners take (the cluster's latest view).
    pub fn set_remote(&mut self, takes: Interests) {
        if let Some(remote) = &mut self.remote {
            remote.takes = takes;
        }
    }

    /// What this hub's own listeners take, together.
    pub fn interests(&self) -> Interests {
        self.slab.iter().fold(NONE, |all, (_, l)| Interests {
            messages: all.messages || l.interests.messages,
            presence: all.presence || l.interests.presence,
        })
    }

    /// The events waiting for other hubs' listeners, taken; `waker` is
    /// woken when the next one comes.
    pub fn take_remote(&mut self, waker: &Waker) -> Vec<RemoteEvent> {
        let Some(remote) = &mut self.remote else {
            return Vec::new();
        };
        match &remote.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => remote.waker = Some(waker.clone()),
        }
        remote.bytes = 0;
        std::mem::take(&mut remote.out)
    }

    /// An event line from another hub: to a local listener that takes its
    /// kind and has room, chosen by its connection (`conn`, on `node`) as a
    /// local event's would be. False if none could take it (counted).
    pub fn emit_line(&mut self, node: &str, conn: WireId, event: Event, line: &[u8]) -> bool {
        let Some(key) = self.choose(hash(node, conn), event) else {
            self.dropped += 1;
            return false;
        };
        let l = &mut self.slab[key as usize];
        l.out.extend_from_slice(line);
        l.out.push(b'\n');
        if let Some(waker) = &l.waker {
            waker.wake_by_ref();
        }
        self.sent += 1;
        true
    }

    /// The listener that takes an event of the connection hashed to `at`:
    /// its own, or the next with room.
    fn choose(&self, at: usize, event: Event) -> Option<u32> {
        let n = self.order.len();
        if n == 0 {
            return None;
        }
        let max = self.max_bytes;
        (0..n).map(|i| self.order[(at + i) % n]).find(|&key| {
            let l = &self.slab[key as usize];
            // An empty buffer takes any event, so that one larger than the
            // bound is not refused by every listener.
            wants(l.interests, event) && (l.out.is_empty() || l.out.len() < max)
        })
    }

    /// Adds a listener; its key is its backend connection's until `remove`.
    pub fn add(&mut self, interests: Interests) -> u32 {
        let key = self.slab.insert(Listener {
            interests,
            out: Vec::new(),
            waker: None,
        });
        let key = u32::try_from(key).expect("listeners within u32 keys");
        self.order.push(key);
        key
    }

    /// Changes what a listener asked for (a second `listen`).
    pub fn set_interests(&mut self, key: u32, interests: Interests) {
        if let Some(l) = self.slab.get_mut(key as usize) {
            l.interests = interests;
        }
    }

    /// Forgets a listener and the events it had not taken.
    pub fn remove(&mut self, key: u32) {
        if self.slab.try_remove(key as usize).is_some() {
            self.order.retain(|&k| k != key);
        }
    }

    /// Whether some listener of this hub takes events of this kind.
    pub fn any_for(&self, event: Event) -> bool {
        self.slab.iter().any(|(_, l)| wants(l.interests, event))
    }

    /// Whether some listener, here or (in a cluster) on another hub, takes
    /// events of this kind.
    pub fn anywhere_for(&self, event: Event) -> bool {
        self.any_for(event) || self.remote.as_ref().is_some_and(|r| wants(r.takes, event))
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Writes one event line to a listener that wants it and has room:
    /// the connection's own (chosen by `conn`) or, if that one is full, the
    /// next. False if none could take it (then it is counted as dropped).
    pub fn emit(&mut self, conn: WireId, uid: Option<&str>, event: Event) -> bool {
        let node = self.node.clone();
        let node = node.as_deref();
        let chosen = self.choose(hash(node.unwrap_or(""), conn), event);
        let (name, d, binary) = match event {
            Event::Message(p) => ("message", Some(Data(p)), matches!(p, Payload::Binary(_))),
            Event::Connect => ("connect", None, false),
            Event::Disconnect => ("disconnect", None, false),
        };
        let line = Line {
            event: name,
            uid,
            node,
            conn,
            d,
            binary,
        };
        let Some(key) = chosen else {
            return self.emit_remote(conn, event, &line);
        };
        let l = &mut self.slab[key as usize];
        serde_json::to_writer(&mut l.out, &line).expect("event lines always serialize");
        l.out.push(b'\n');
        if let Some(waker) = &l.waker {
            waker.wake_by_ref();
        }
        self.sent += 1;
        true
    }

    /// An event no local listener took, for other hubs' listeners: while
    /// this hub has none of its own that take it, and some other hub has.
    fn emit_remote(&mut self, conn: WireId, event: Event, line: &Line) -> bool {
        let local = self.any_for(event);
        let max = self.max_bytes;
        let Some(remote) = self
            .remote
            .as_mut()
            .filter(|r| !local && wants(r.takes, event))
        else {
            if local {
                self.dropped += 1;
            }
            return false;
        };
        if remote.bytes >= max {
            self.dropped += 1;
            return false;
        }
        let mut out = serde_json::to_vec(line).expect("event lines always serialize");
        out.push(b'\n');
        remote.bytes += out.len();
        remote.out.push(RemoteEvent {
            conn,
            message: matches!(event, Event::Message(_)),
            line: out,
        });
        if remote.out.len() == 1
            && let Some(waker) = &remote.waker
        {
            waker.wake_by_ref();
        }
        self.sent += 1;
        true
    }

    /// The event lines waiting for listener `key`, taken; pending (with the
    /// waker kept) while there are none.
    pub fn poll_take(&mut self, key: u32, cx: &mut Context<'_>) -> Poll<Vec<u8>> {
        let Some(l) = self.slab.get_mut(key as usize) else {
            return Poll::Pending;
        };
        if l.out.is_empty() {
            match &l.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => l.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        Poll::Ready(std::mem::take(&mut l.out))
    }

    /// Moves the event lines waiting for listener `key` to the end of `out`.
    pub fn take_into(&mut self, key: u32, out: &mut Vec<u8>) {
        if let Some(l) = self.slab.get_mut(key as usize) {
            out.append(&mut l.out);
        }
    }

    /// Bytes of events waiting in every listener's buffer (for metrics).
    pub fn queued_bytes(&self) -> usize {
        self.slab.iter().map(|(_, l)| l.out.len()).sum()
    }
}

const NONE: Interests = Interests {
    messages: false,
    presence: false,
};

impl Default for Interests {
    fn default() -> Interests {
        NONE
    }
}

/// Where a connection's events start looking for a listener: the same
/// place every time, so that they stay on one listener.
fn hash(node: &str, conn: WireId) -> usize {
    let mut h = conn.0 as u32 as usize;
    for b in node.bytes() {
        h = h.wrapping_mul(31).wrapping_add(usize::from(b));
    }
    h
}

fn wants(interests: Interests, event: Event) -> bool {
    match event {
        Event::Message(_) => interests.messages,
        Event::Connect | Event::Disconnect => interests.presence,
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    const ALL: Interests = Interests {
        messages: true,
        presence: true,
    };

    fn take(l: &mut Listeners, key: u32) -> String {
        let mut cx = Context::from_waker(Waker::noop());
        match l.poll_take(key, &mut cx) {
            Poll::Ready(out) => String::from_utf8(out).unwrap(),
            Poll::Pending => String::new(),
        }
    }

    #[test]
    fn event_lines() {
        let mut l = Listeners::new(1 << 20);
        let key = l.add(ALL);
        let d = RawValue::from_string(r#"{"a": [1, 2.50]}"#.into()).unwrap();
        assert!(l.emit(WireId(7), Some("u1"), Event::Message(Payload::Json(&d))));
        assert!(l.emit(WireId(8), None, Event::Message(Payload::Text("hé \"x\"\n"))));
        assert!(l.emit(
            WireId(9),
            Some("u2"),
            Event::Message(Payload::Binary(&[0, 255, 1]))
        ));
        assert!(l.emit(WireId(u64::MAX), Some("u1"), Event::Connect));
        assert!(l.emit(WireId(7), Some("u1"), Event::Disconnect));
        assert_eq!(
            take(&mut l, key),
            concat!(
                r#"{"event":"message","uid":"u1","conn":"7","d":{"a": [1, 2.50]}}"#,
                "\n",
                r#"{"event":"message","conn":"8","d":"hé \"x\"\n"}"#,
                "\n",
                r#"{"event":"message","uid":"u2","conn":"9","d":"AP8B","binary":true}"#,
                "\n",
                r#"{"event":"connect","uid":"u1","conn":"18446744073709551615"}"#,
                "\n",
                r#"{"event":"disconnect","uid":"u1","conn":"7"}"#,
                "\n",
            )
        );
        assert_eq!(take(&mut l, key), "");
        assert_eq!((l.sent, l.dropped), (5, 0));
    }

    #[test]
    fn json_broken_over_lines_is_one_event_line() {
        let mut l = Listeners::new(1 << 20);
        let key = l.add(ALL);
        let d = RawValue::from_string("{\"a\":\r\n[1,\n2], \"b\\n\":\"\\r\"\n}".into()).unwrap();
        assert!(l.emit(WireId(1), None, Event::Message(Payload::Json(&d))));
        assert_eq!(
            take(&mut l, key),
            "{\"event\":\"message\",\"conn\":\"1\",\"d\":{\"a\":  [1, 2], \"b\\n\":\"\\r\" }}\n"
        );
    }

    #[test]
    fn listeners_share_connections_and_keep_each_one_s_order() {
        let mut l = Listeners::new(1 << 20);
        let a = l.add(ALL);
        let b = l.add(ALL);
        for i in 0..4 {
            for conn in [10, 11] {
                l.emit(
                    WireId(conn),
                    None,
                    Event::Message(Payload::Text(&i.to_string())),
                );
            }
        }
        let (got_a, got_b) = (take(&mut l, a), take(&mut l, b));
        assert_eq!(got_a.lines().count(), 4);
        assert_eq!(got_b.lines().count(), 4);
        assert!(got_a.lines().all(|line| line.contains(r#""conn":"10""#)));
        assert!(got_b.lines().all(|line| line.contains(r#""conn":"11""#)));
    }

    #[test]
    fn a_full_listener_passes_events_on_then_they_are_dropped() {
        let mut l = Listeners::new(100);
        let a = l.add(ALL);
        let big = "x".repeat(200);
        // An empty buffer takes even an event over the bound.
        assert!(l.emit(WireId(0), None, Event::Message(Payload::Text(&big))));
        let b = l.add(ALL);
        assert!(l.emit(WireId(0), None, Event::Message(Payload::Text("to b"))));
        assert!(l.emit(WireId(0), None, Event::Message(Payload::Text(&big))));
        assert!(!l.emit(WireId(0), None, Event::Message(Payload::Text("nobody"))));
        assert_eq!((l.sent, l.dropped), (3, 1));
        let line = r#"{"event":"message","conn":"0","d":""}"#.len() + 1;
        assert_eq!(take(&mut l, a).len(), line + 200);
        assert_eq!(take(&mut l, b).len(), 2 * line + 4 + 200);
        l.remove(a);
        l.remove(b);
        assert!(!l.emit(WireId(0), None, Event::Message(Payload::Text("none"))));
        // With no listener at all the event is not counted as dropped: the
        // sender is told instead.
        assert_eq!(l.dropped, 1);
    }

    #[test]
    fn interests_choose_the_listener() {
        let mut l = Listeners::new(1 << 20);
        let messages = l.add(Interests {
            messages: true,
            presence: false,
        });
        let presence = l.add(Interests {
            messages: false,
            presence: true,
        });
        for conn in 0..4 {
            l.emit(WireId(conn), None, Event::Connect);
            l.emit(WireId(conn), None, Event::Message(Payload::Text("m")));
        }
        assert!(
            take(&mut l, messages)
                .lines()
                .all(|x| x.contains("message"))
        );
        assert_eq!(take(&mut l, presence).lines().count(), 4);
        assert!(l.any_for(Event::Disconnect));
    }
}
