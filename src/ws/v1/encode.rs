//! The hub's frames to a v1 client, serialized by serde into a [`Frame`].

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::V1Error;
use crate::ws::frame::Frame;

/// The hub's frames. `id` comes last and only when the request had one.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Out<'a> {
    Welcome {
        uid: &'a str,
        subs: &'a [&'a str],
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    Subbed {
        ch: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
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
        id: &'a RawValue,
    },
    Msg {
        #[serde(skip_serializing_if = "Option::is_none")]
        ch: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        all: bool,
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

/// `{"op":"welcome","uid":U,"subs":[C,…]}`: the client is authenticated, as
/// `uid`, and subscribed to `subs`.
pub fn welcome(uid: &str, subs: &[&str], id: Option<&RawValue>) -> Frame {
    encode(&Out::Welcome { uid, subs, id })
}

/// `{"op":"subbed","ch":C}`: the connection is subscribed to `ch`.
pub fn subbed(ch: &str, id: Option<&RawValue>) -> Frame {
    encode(&Out::Subbed { ch, id })
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
/// carried an id (one without is answered only if it fails).
pub fn pubbed(ch: &str, delivered: usize, id: &RawValue) -> Frame {
    encode(&Out::Pubbed { ch, delivered, id })
}

/// `{"op":"msg","d":D}`: a push to the client's uid.
pub fn msg(d: &RawValue) -> Frame {
    encode(&Out::Msg {
        ch: None,
        all: false,
        d,
    })
}

/// `{"op":"msg","ch":C,"d":D}`: a publication to the channel `ch`.
pub fn msg_channel(ch: &str, d: &RawValue) -> Frame {
    encode(&Out::Msg {
        ch: Some(ch),
        all: false,
        d,
    })
}

/// `{"op":"msg","all":true,"d":D}`: a broadcast, marked so that a client
/// can tell it from a push to its uid.
pub fn msg_broadcast(d: &RawValue) -> Frame {
    encode(&Out::Msg {
        ch: None,
        all: true,
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
        is(
            welcome("u1", &[], None),
            r#"{"op":"welcome","uid":"u1","subs":[]}"#,
        );
        is(
            welcome("u1", &["news", "room:1"], id),
            r#"{"op":"welcome","uid":"u1","subs":["news","room:1"],"id":"r-1"}"#,
        );
        is(subbed("room:1", None), r#"{"op":"subbed","ch":"room:1"}"#);
        is(
            subbed("room:1", id),
            r#"{"op":"subbed","ch":"room:1","id":"r-1"}"#,
        );
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
            pubbed("room:1", 3, &json("7")),
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
            r#"{"op":"error","code":400,"reason":"unknown op: expected auth, sub, unsub, pub or ping","id":null}"#,
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
        is(msg(&object), r#"{"op":"msg","d":{"a": [1, 2.50]}}"#);
        is(msg(&json(r#""hello""#)), r#"{"op":"msg","d":"hello"}"#);
        is(
            msg_channel("room:1", &json("42")),
            r#"{"op":"msg","ch":"room:1","d":42}"#,
        );
        is(
            msg_broadcast(&json("null")),
            r#"{"op":"msg","all":true,"d":null}"#,
        );
    }

    #[test]
    fn quotes_and_backslashes_in_names_are_escaped() {
        let ch = "a\"b\\c";
        is(subbed(ch, None), r#"{"op":"subbed","ch":"a\"b\\c"}"#);
        is(
            msg_channel(ch, &json("1")),
            r#"{"op":"msg","ch":"a\"b\\c","d":1}"#,
        );
        is(
            welcome("u\"1", &[ch], None),
            r#"{"op":"welcome","uid":"u\"1","subs":["a\"b\\c"]}"#,
        );
    }
}
