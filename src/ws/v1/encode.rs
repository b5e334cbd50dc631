//! The hub's frames to a v1 client, serialized by serde into a [`Frame`].

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::V1Error;
use crate::hub::Pos;
use crate::hub::listeners::WireId;
use crate::ws::frame::Frame;

/// Something per stream a connection receives: its uid's, the broadcasts,
/// its channels. Written as an object of the streams that have one.
#[derive(Debug)]
pub struct PerStream<'a, T> {
    pub uid: Option<T>,
    pub all: Option<T>,
    pub chs: Vec<(&'a str, T)>,
}

impl<T> Default for PerStream<'_, T> {
    fn default() -> Self {
        PerStream {
            uid: None,
            all: None,
            chs: Vec::new(),
        }
    }
}

impl<T> PerStream<'_, T> {
    fn is_empty(&self) -> bool {
        self.uid.is_none() && self.all.is_none() && self.chs.is_empty()
    }
}

impl<T: Serialize> Serialize for PerStream<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Chs<'b, T>(&'b [(&'b str, T)]);
        impl<T: Serialize> Serialize for Chs<'_, T> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(ch, v)| (ch, v)))
            }
        }
        let mut map = s.serialize_map(None)?;
        if let Some(v) = &self.uid {
            map.serialize_entry("uid", v)?;
        }
        if let Some(v) = &self.all {
            map.serialize_entry("all", v)?;
        }
        if !self.chs.is_empty() {
            map.serialize_entry("chs", &Chs(&self.chs))?;
        }
        map.end()
    }
}

/// What a `welcome` says: who the client is (no uid if anonymous), its
/// connection id, its channels, where each of its streams stands, and, if
/// it asked to recover (`since`), whether each stream was.
#[derive(Debug)]
pub struct Welcome<'a> {
    pub uid: Option<&'a str>,
    pub conn: WireId,
    pub subs: &'a [&'a str],
    pub pos: PerStream<'a, Pos>,
    pub recovered: Option<PerStream<'a, bool>>,
}

/// The hub's frames. `id` comes last and only when the request had one.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Out<'a> {
    Welcome {
        #[serde(skip_serializing_if = "Option::is_none")]
        uid: Option<&'a str>,
        conn: WireId,
        subs: &'a [&'a str],
        #[serde(skip_serializing_if = "PerStream::is_empty")]
        pos: &'a PerStream<'a, Pos>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<&'a PerStream<'a, bool>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    Subbed {
        ch: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pos: Option<Pos>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    Sent {
        id: &'a RawValue,
    },
    Acked {
        id: &'a RawValue,
    },
    Unsubbed {
        ch: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    Error {
        code: u16,
        #[serde(serialize_with = "display")]
        reason: &'a V1Error,
        #[serde(skip_serializing_if = "Option::is_none")]
        ch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    Pubbed {
        ch: &'a str,
        delivered: usize,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        unconfirmed: bool,
        id: &'a RawValue,
    },
    Msg {
        #[serde(skip_serializing_if = "Option::is_none")]
        ch: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        all: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pos: Option<Pos>,
        d: &'a RawValue,
    },
}

fn display<S: Serializer>(error: &&V1Error, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(error)
}

fn encode(out: &Out) -> Frame {
    let text = serde_json::to_string(out).expect("strings, numbers and JSON values serialize");
    Frame::text(&text)
}

/// `{"op":"welcome","uid":U,"conn":C,"subs":[CH,…],"pos":{…}}`: the client
/// is live, as `uid` (or anonymous), and subscribed to `subs`.
pub fn welcome(w: &Welcome, id: Option<&RawValue>) -> Frame {
    encode(&Out::Welcome {
        uid: w.uid,
        conn: w.conn,
        subs: w.subs,
        pos: &w.pos,
        recovered: w.recovered.as_ref(),
        id,
    })
}

/// `{"op":"subbed","ch":C,"pos":P}`: the connection is subscribed to `ch`,
/// whose last message is at `pos`; `recovered` answers a `since`.
pub fn subbed(ch: &str, pos: Option<Pos>, recovered: Option<bool>, id: Option<&RawValue>) -> Frame {
    encode(&Out::Subbed {
        ch,
        pos,
        recovered,
        id,
    })
}

/// `{"op":"sent","id":X}`: the answer to a `send` that carried an id: a
/// listening backend has it in its buffer.
pub fn sent(id: &RawValue) -> Frame {
    encode(&Out::Sent { id })
}

/// `{"op":"acked","id":X}`: the answer to an `ack` that carried an id.
pub fn acked(id: &RawValue) -> Frame {
    encode(&Out::Acked { id })
}

/// `{"op":"unsubbed","ch":C}`: the connection is no longer subscribed to
/// `ch`, at its request or, without an id, a backend's.
pub fn unsubbed(ch: &str, id: Option<&RawValue>) -> Frame {
    encode(&Out::Unsubbed { ch, id })
}

/// `{"op":"pong"}`: the answer to a `ping`.
pub fn pong(id: Option<&RawValue>) -> Frame {
    encode(&Out::Pong { id })
}

/// `{"op":"error","code":N,"reason":R}`, with the `ch` and `id` it answers
/// when they are known.
pub fn error(error: &V1Error, id: Option<&RawValue>, ch: Option<&str>) -> Frame {
    encode(&Out::Error {
        code: error.code(),
        reason: error,
        ch,
        id,
    })
}

/// `{"op":"pubbed","ch":C,"delivered":N,"id":X}`: the answer to a `pub` that
/// carried an id (one without is answered only if it fails). In a cluster,
/// `"unconfirmed":true` says some hub did not answer in time: `delivered`
/// is then a lower bound.
pub fn pubbed(ch: &str, delivered: usize, unconfirmed: bool, id: &RawValue) -> Frame {
    encode(&Out::Pubbed {
        ch,
        delivered,
        unconfirmed,
        id,
    })
}

/// `{"op":"msg","pos":P,"d":D}`: a push to the client's uid (`pos` in its
/// stream, when it keeps history; none for a push to one connection).
pub fn msg(d: &RawValue, pos: Option<Pos>) -> Frame {
    encode(&Out::Msg {
        ch: None,
        all: false,
        pos,
        d,
    })
}

/// `{"op":"msg","ch":C,"pos":P,"d":D}`: a publication to the channel `ch`.
pub fn msg_channel(ch: &str, d: &RawValue, pos: Option<Pos>) -> Frame {
    encode(&Out::Msg {
        ch: Some(ch),
        all: false,
        pos,
        d,
    })
}

/// `{"op":"msg","all":true,"pos":P,"d":D}`: a broadcast, marked so that a
/// client can tell it from a push to its uid.
pub fn msg_broadcast(d: &RawValue, pos: Option<Pos>) -> Frame {
    encode(&Out::Msg {
        ch: None,
        all: true,
        pos,
        d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::BadName;

    fn json(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[track_caller]
    fn is(frame: Frame, text: &str) {
        assert_eq!(frame, Frame::text(text), "{text}");
    }

    #[test]
    fn answers() {
        let id = json(r#""r-1""#);
        let id = Some(&*id);
        let plain = Welcome {
            uid: Some("u1"),
            conn: WireId(1 << 32 | 5),
            subs: &[],
            pos: PerStream::default(),
            recovered: None,
        };
        is(
            welcome(&plain, None),
            r#"{"op":"welcome","uid":"u1","conn":"4294967301","subs":[]}"#,
        );
        let p = |text| Pos::parse(text).unwrap();
        let full = Welcome {
            subs: &["news", "room:1"],
            pos: PerStream {
                uid: Some(p("a:3")),
                all: Some(p("b:0")),
                chs: vec![("news", p("c:7"))],
            },
            recovered: Some(PerStream {
                uid: Some(true),
                all: None,
                chs: vec![("news", false)],
            }),
            ..plain
        };
        is(
            welcome(&full, id),
            r#"{"op":"welcome","uid":"u1","conn":"4294967301","subs":["news","room:1"],"pos":{"uid":"a:3","all":"b:0","chs":{"news":"c:7"}},"recovered":{"uid":true,"chs":{"news":false}},"id":"r-1"}"#,
        );
        let anonymous = Welcome {
            uid: None,
            conn: WireId(9),
            subs: &[],
            pos: PerStream {
                all: Some(p("b:0")),
                ..PerStream::default()
            },
            recovered: None,
        };
        is(
            welcome(&anonymous, None),
            r#"{"op":"welcome","conn":"9","subs":[],"pos":{"all":"b:0"}}"#,
        );
        is(
            subbed("room:1", None, None, None),
            r#"{"op":"subbed","ch":"room:1"}"#,
        );
        is(
            subbed("room:1", Some(p("c:7")), Some(false), id),
            r#"{"op":"subbed","ch":"room:1","pos":"c:7","recovered":false,"id":"r-1"}"#,
        );
        is(sent(&json("1")), r#"{"op":"sent","id":1}"#);
        is(acked(&json(r#""a""#)), r#"{"op":"acked","id":"a"}"#);
        is(
            unsubbed("room:1", None),
            r#"{"op":"unsubbed","ch":"room:1"}"#,
        );
        is(
            unsubbed("room:1", id),
            r#"{"op":"unsubbed","ch":"room:1","id":"r-1"}"#,
        );
        is(pong(None), r#"{"op":"pong"}"#);
        is(pong(id), r#"{"op":"pong","id":"r-1"}"#);
        is(
            pubbed("room:1", 3, false, &json("7")),
            r#"{"op":"pubbed","ch":"room:1","delivered":3,"id":7}"#,
        );
    }

    #[test]
    fn errors_with_what_they_answer() {
        is(
            error(&V1Error::Unauthenticated, None, None),
            r#"{"op":"error","code":401,"reason":"authenticate first: send an auth op"}"#,
        );
        is(
            error(&V1Error::Forbidden, Some(&json("[1]")), Some("room:1")),
            r#"{"op":"error","code":403,"reason":"no grant allows this channel","ch":"room:1","id":[1]}"#,
        );
        is(
            error(&V1Error::UnknownOp, Some(&json("null")), None),
            r#"{"op":"error","code":400,"reason":"unknown op: expected auth, sub, unsub, pub, ping, ack or send","id":null}"#,
        );
        // A bad name is echoed as it came, escaped as JSON needs.
        is(
            error(
                &V1Error::BadChannel(BadName::NotPrintable),
                None,
                Some("a\tb"),
            ),
            r#"{"op":"error","code":422,"reason":"bad channel name: a channel name is printable ASCII without spaces or control characters","ch":"a\tb"}"#,
        );
        is(
            error(&V1Error::MissingField("op"), None, None),
            r#"{"op":"error","code":400,"reason":"missing field `op`"}"#,
        );
    }

    #[test]
    fn messages_carry_the_data_as_written() {
        let object = json(r#"{"a": [1, 2.50]}"#);
        is(msg(&object, None), r#"{"op":"msg","d":{"a": [1, 2.50]}}"#);
        is(
            msg(&json(r#""hello""#), None),
            r#"{"op":"msg","d":"hello"}"#,
        );
        let pos = Some(Pos {
            epoch: 0xab,
            offset: 2,
        });
        is(
            msg(&json(r#""hello""#), pos),
            r#"{"op":"msg","pos":"ab:2","d":"hello"}"#,
        );
        is(
            msg_channel("room:1", &json("42"), pos),
            r#"{"op":"msg","ch":"room:1","pos":"ab:2","d":42}"#,
        );
        is(
            msg_broadcast(&json("null"), None),
            r#"{"op":"msg","all":true,"d":null}"#,
        );
    }

    #[test]
    fn quotes_and_backslashes_in_names_are_escaped() {
        let ch = "a\"b\\c";
        is(
            subbed(ch, None, None, None),
            r#"{"op":"subbed","ch":"a\"b\\c"}"#,
        );
        is(
            msg_channel(ch, &json("1"), None),
            r#"{"op":"msg","ch":"a\"b\\c","d":1}"#,
        );
        let w = Welcome {
            uid: Some("u\"1"),
            conn: WireId(0),
            subs: &[ch],
            pos: PerStream {
                chs: vec![(
                    ch,
                    Pos {
                        epoch: 1,
                        offset: 0,
                    },
                )],
                ..PerStream::default()
            },
            recovered: None,
        };
        is(
            welcome(&w, None),
            r#"{"op":"welcome","uid":"u\"1","conn":"0","subs":["a\"b\\c"],"pos":{"chs":{"a\"b\\c":"1:0"}}}"#,
        );
    }
}
