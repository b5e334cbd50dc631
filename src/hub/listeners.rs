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

pub struct Listeners {
    slab: Slab<Listener>,
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
            order: Vec::new(),
            max_bytes,
            sent: 0,
            dropped: 0,
        }
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

    /// Whether some listener takes events of this kind.
    pub fn any_for(&self, event: Event) -> bool {
        self.slab.iter().any(|(_, l)| wants(l.interests, event))
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
        let n = self.order.len();
        if n == 0 {
            return false;
        }
        let start = (conn.0 as u32 as usize) % n;
        let max = self.max_bytes;
        let chosen = (0..n).map(|i| self.order[(start + i) % n]).find(|&key| {
            let l = &self.slab[key as usize];
            // An empty buffer takes any event, so that one larger than the
            // bound is not refused by every listener.
            wants(l.interests, event) && (l.out.is_empty() || l.out.len() < max)
        });
        let Some(key) = chosen else {
            if self.any_for(event) {
                self.dropped += 1;
            }
            return false;
        };
        let (name, d, binary) = match event {
            Event::Message(p) => ("message", Some(Data(p)), matches!(p, Payload::Binary(_))),
            Event::Connect => ("connect", None, false),
            Event::Disconnect => ("disconnect", None, false),
        };
        let l = &mut self.slab[key as usize];
        let line = Line {
            event: name,
            uid,
            conn,
            d,
            binary,
        };
        serde_json::to_writer(&mut l.out, &line).expect("event lines always serialize");
        l.out.push(b'\n');
        if let Some(waker) = &l.waker {
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
