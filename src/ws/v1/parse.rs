//! Client frames: a text in, a [`Request`] or a [`ParseError`] out.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Credential, Op, Request, Since, V1Error};
use crate::channel::check_name;
use crate::hub::Pos;

/// Why a client frame was refused, with what the error frame echoes: the
/// request's `id`, and its `ch` when that was a string.
#[derive(Debug, Clone)]
pub struct ParseError<'a> {
    pub error: V1Error,
    pub id: Option<&'a RawValue>,
    pub ch: Option<Cow<'a, str>>,
}

/// Every field any op may carry, still as raw JSON, so that each is checked
/// for its type with an error that names it. Unknown fields are ignored.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    op: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    uid: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    ch: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    d: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pos: Option<&'a RawValue>,
}

/// An `auth`'s `since`, each part still raw.
#[derive(Deserialize)]
struct SinceFields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    uid: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    all: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    chs: Option<&'a RawValue>,
}

const A_POSITION: &str = "a position such as \"3f2a9c:17\", as the hub sent it";
const A_SINCE: &str = "an object of positions: {\"uid\":P,\"all\":P,\"chs\":{CH:P}}";

/// A field that is present, even as `null`: `"d": null` is data to deliver,
/// and `"id": null` an id to echo.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses one client text frame.
pub fn parse(text: &str) -> Result<Request<'_>, ParseError<'_>> {
    // serde reads a struct from an array too: only an object is one.
    let object = text.trim_start().starts_with('{');
    let fields = object.then(|| serde_json::from_str::<Fields>(text).ok());
    let Some(Some(fields)) = fields else {
        // Only a failure is parsed again, to say what it was: every field is
        // taken as any JSON value, so an object fails only by a repeat.
        let error = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Err(_) => V1Error::NotJson,
            Ok(_) if object => V1Error::DuplicateField,
            Ok(_) => V1Error::NotObject,
        };
        return Err(ParseError {
            error,
            id: None,
            ch: None,
        });
    };
    op(&fields)
        .map(|op| Request { id: fields.id, op })
        .map_err(|error| ParseError {
            error,
            id: fields.id,
            // Read again rather than kept from `op`: errors are the rare case.
            ch: fields.ch.and_then(|raw| string(raw, "ch").ok()),
        })
}

fn op<'a>(fields: &Fields<'a>) -> Result<Op<'a>, V1Error> {
    let name = fields.op.ok_or(V1Error::MissingField("op"))?;
    let channel = || -> Result<Cow<'a, str>, V1Error> {
        let name = string(fields.ch.ok_or(V1Error::MissingField("ch"))?, "ch")?;
        check_name(&name).map_err(V1Error::BadChannel)?;
        Ok(name)
    };
    match string(name, "op")?.as_ref() {
        "auth" => {
            let credential = match (fields.token, fields.uid) {
                (Some(token), None) => Credential::Token(string(token, "token")?),
                (None, Some(uid)) => Credential::Uid(plain_uid(uid)?),
                (Some(_), Some(_)) => return Err(V1Error::TokenAndUid),
                (None, None) => return Err(V1Error::MissingField("token")),
            };
            let since = fields.since.map(since).transpose()?.unwrap_or_default();
            Ok(Op::Auth { credential, since })
        }
        "sub" => Ok(Op::Sub {
            ch: channel()?,
            since: fields.since.map(|raw| position(raw, "since")).transpose()?,
        }),
        "unsub" => Ok(Op::Unsub { ch: channel()? }),
        "pub" => {
            let ch = channel()?;
            let d = fields.d.ok_or(V1Error::MissingField("d"))?;
            Ok(Op::Pub { ch, d })
        }
        "ping" => Ok(Op::Ping),
        "ack" => {
            let ch = match fields.ch {
                Some(_) => Some(channel()?),
                None => None,
            };
            let pos = position(fields.pos.ok_or(V1Error::MissingField("pos"))?, "pos")?;
            Ok(Op::Ack { ch, pos })
        }
        "send" => Ok(Op::Send {
            d: fields.d.ok_or(V1Error::MissingField("d"))?,
        }),
        _ => Err(V1Error::UnknownOp),
    }
}

/// A position, as the hub writes it in `pos`.
fn position(raw: &RawValue, field: &'static str) -> Result<Pos, V1Error> {
    let wrong = V1Error::WrongType {
        field,
        expected: A_POSITION,
    };
    let text = string(raw, field).map_err(|_| wrong)?;
    Pos::parse(&text).ok_or(wrong)
}

/// An `auth`'s `since`.
fn since(raw: &RawValue) -> Result<Since<'_>, V1Error> {
    let wrong = |field| V1Error::WrongType {
        field,
        expected: A_SINCE,
    };
    if !raw.get().starts_with('{') {
        return Err(wrong("since"));
    }
    let fields: SinceFields = serde_json::from_str(raw.get()).map_err(|_| wrong("since"))?;
    let chs = match fields.chs {
        None => Vec::new(),
        Some(raw) => {
            if !raw.get().starts_with('{') {
                return Err(wrong("since.chs"));
            }
            let map: Vec<(Cow<str>, &RawValue)> =
                serde_json::from_str::<std::collections::BTreeMap<Cow<str>, &RawValue>>(raw.get())
                    .map_err(|_| wrong("since.chs"))?
                    .into_iter()
                    .collect();
            map.into_iter()
                .map(|(ch, pos)| {
                    check_name(&ch).map_err(V1Error::BadChannel)?;
                    Ok((ch, position(pos, "since.chs")?))
                })
                .collect::<Result<_, V1Error>>()?
        }
    };
    Ok(Since {
        uid: fields.uid.map(|p| position(p, "since.uid")).transpose()?,
        all: fields.all.map(|p| position(p, "since.all")).transpose()?,
        chs,
    })
}

/// A JSON string, borrowed from the frame unless it has escapes.
fn string<'a>(raw: &'a RawValue, field: &'static str) -> Result<Cow<'a, str>, V1Error> {
    let wrong = V1Error::WrongType {
        field,
        expected: "a string",
    };
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => Ok(Cow::Borrowed(text)),
        Err(_) => serde_json::from_str::<String>(raw.get())
            .map(Cow::Owned)
            .map_err(|_| wrong),
    }
}

/// A uid is a JSON string, or a number taken as its text, as the text port
/// takes it, so that a client and its backend name the same uid.
fn plain_uid(raw: &RawValue) -> Result<Cow<'_, str>, V1Error> {
    match raw.get().as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => Ok(Cow::Borrowed(raw.get())),
        _ => string(raw, "uid").map_err(|_| V1Error::WrongType {
            field: "uid",
            expected: "a string or a number",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::BadName;

    #[track_caller]
    fn ok(text: &str) -> Request<'_> {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    /// The error, and the `id` (as JSON text) and `ch` an error frame echoes.
    #[track_caller]
    fn refused(text: &str) -> (V1Error, Option<&str>, Option<String>) {
        match parse(text) {
            Ok(request) => panic!("{text} parsed: {request:?}"),
            Err(e) => (e.error, e.id.map(RawValue::get), e.ch.map(Cow::into_owned)),
        }
    }

    #[test]
    fn auth() {
        let token = |text| match ok(text).op {
            Op::Auth {
                credential: Credential::Token(t),
                since,
            } if since == Since::default() => t.into_owned(),
            other => panic!("{other:?}"),
        };
        let uid = |text| match ok(text).op {
            Op::Auth {
                credential: Credential::Uid(u),
                ..
            } => u.into_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(token(r#"{"op":"auth","token":"a.b.c"}"#), "a.b.c");
        assert_eq!(uid(r#"{"op":"auth","uid":"u1"}"#), "u1");
        assert_eq!(uid(r#"{"op":"auth","uid":42}"#), "42");
        assert_eq!(uid(r#"{"op":"auth","uid":"\u7528\u6237"}"#), "用户");
        let missing = V1Error::MissingField("token");
        assert_eq!(refused(r#"{"op":"auth"}"#), (missing, None, None));
        assert_eq!(
            refused(r#"{"op":"auth","token":"t","uid":"u","id":1}"#),
            (V1Error::TokenAndUid, Some("1"), None)
        );
        let not_a_string = V1Error::WrongType {
            field: "token",
            expected: "a string",
        };
        assert_eq!(refused(r#"{"op":"auth","token":7}"#).0, not_a_string);
        let not_a_uid = V1Error::WrongType {
            field: "uid",
            expected: "a string or a number",
        };
        assert_eq!(refused(r#"{"op":"auth","uid":true}"#).0, not_a_uid);
        assert_eq!(refused(r#"{"op":"auth","uid":["u"]}"#).0, not_a_uid);
    }

    #[test]
    fn sub_unsub_and_ping() {
        match ok(r#"{"op":"sub","ch":"room:1"}"#).op {
            Op::Sub {
                ch: Cow::Borrowed("room:1"),
                since: None,
            } => {}
            other => panic!("{other:?}"),
        }
        match ok(r#"{"ch":"room:1","op":"unsub"}"#).op {
            Op::Unsub { ch } => assert_eq!(ch, "room:1"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(ok(r#"{"op":"ping"}"#).op, Op::Ping));
        assert!(matches!(ok(" {\"op\" : \"ping\"}\n").op, Op::Ping));
    }

    #[test]
    fn positions_since_ack_and_send() {
        let p = |text| Pos::parse(text).unwrap();
        match ok(
            r#"{"op":"auth","uid":"u","since":{"uid":"a1:3","all":"b2:0","chs":{"news":"c3:9"}}}"#,
        )
        .op
        {
            Op::Auth { since, .. } => assert_eq!(
                since,
                Since {
                    uid: Some(p("a1:3")),
                    all: Some(p("b2:0")),
                    chs: vec![(Cow::Borrowed("news"), p("c3:9"))],
                }
            ),
            other => panic!("{other:?}"),
        }
        match ok(r#"{"op":"sub","ch":"news","since":"ff:12"}"#).op {
            Op::Sub { since, .. } => assert_eq!(since, Some(p("ff:12"))),
            other => panic!("{other:?}"),
        }
        match ok(r#"{"op":"ack","pos":"ff:12"}"#).op {
            Op::Ack { ch: None, pos } => assert_eq!(pos, p("ff:12")),
            other => panic!("{other:?}"),
        }
        match ok(r#"{"op":"ack","ch":"news","pos":"ff:12","id":1}"#).op {
            Op::Ack { ch: Some(ch), .. } => assert_eq!(ch, "news"),
            other => panic!("{other:?}"),
        }
        match ok(r#"{"op":"send","d":{"x":[1, "é"]}}"#).op {
            Op::Send { d } => assert_eq!(d.get(), r#"{"x":[1, "é"]}"#),
            other => panic!("{other:?}"),
        }
        let wrong = |field| V1Error::WrongType {
            field,
            expected: A_POSITION,
        };
        for bad in [
            "12",
            "\"12\"",
            "\"x:1\"",
            "\"1:-1\"",
            "null",
            "[1]",
            "\"1:1:1\"",
        ] {
            let ack = format!(r#"{{"op":"ack","pos":{bad}}}"#);
            assert_eq!(refused(&ack).0, wrong("pos"), "{ack}");
            let sub = format!(r#"{{"op":"sub","ch":"a","since":{bad}}}"#);
            assert_eq!(refused(&sub).0, wrong("since"), "{sub}");
            let auth = format!(r#"{{"op":"auth","uid":"u","since":{{"all":{bad}}}}}"#);
            assert_eq!(refused(&auth).0, wrong("since.all"), "{auth}");
        }
        let not_since = V1Error::WrongType {
            field: "since",
            expected: A_SINCE,
        };
        for bad in ["\"a:1\"", "1", "[]", "null", r#"{"uid":"a:1","uid":"a:2"}"#] {
            let auth = format!(r#"{{"op":"auth","uid":"u","since":{bad}}}"#);
            assert_eq!(refused(&auth).0, not_since, "{auth}");
        }
        assert_eq!(
            refused(r#"{"op":"auth","uid":"u","since":{"chs":["news"]}}"#).0,
            V1Error::WrongType {
                field: "since.chs",
                expected: A_SINCE
            }
        );
        assert_eq!(
            refused(r#"{"op":"auth","uid":"u","since":{"chs":{"a b":"1:1"}}}"#).0,
            V1Error::BadChannel(crate::channel::BadName::NotPrintable)
        );
        assert_eq!(refused(r#"{"op":"ack"}"#).0, V1Error::MissingField("pos"));
        assert_eq!(refused(r#"{"op":"send"}"#).0, V1Error::MissingField("d"));
        assert_eq!(
            refused(r#"{"op":"ack","ch":"*","pos":"1:1"}"#).0,
            V1Error::BadChannel(crate::channel::BadName::Star)
        );
    }

    #[test]
    fn pub_keeps_the_data_as_written() {
        for d in [
            r#""text""#,
            r#"{"a": [1, 2.50, "\u00e9"]}"#,
            "null",
            "-0",
            "[]",
            "true",
        ] {
            let text = format!(r#"{{"op":"pub","ch":"news","d":{d},"id":"p1"}}"#);
            match ok(&text) {
                Request {
                    id: Some(id),
                    op: Op::Pub { ch, d: got },
                } => {
                    assert_eq!((id.get(), ch.as_ref(), got.get()), (r#""p1""#, "news", d));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            refused(r#"{"op":"pub","ch":"news"}"#),
            (V1Error::MissingField("d"), None, Some("news".to_string()))
        );
    }

    #[test]
    fn any_json_id_is_kept_as_written() {
        for id in [
            r#""r-1""#,
            "7",
            "1.5e3",
            "null",
            "false",
            "[1,{}]",
            r#"{"n": 1}"#,
        ] {
            let text = format!(r#"{{"id":{id},"op":"ping"}}"#);
            assert_eq!(ok(&text).id.map(RawValue::get), Some(id));
            let unknown = format!(r#"{{"id":{id},"op":"nope"}}"#);
            assert_eq!(refused(&unknown), (V1Error::UnknownOp, Some(id), None));
        }
        assert!(ok(r#"{"op":"ping"}"#).id.is_none());
    }

    #[test]
    fn deep_data_is_data() {
        // Taken as raw text, `d` is not held to serde_json's nesting limit.
        let deep = format!(
            r#"{{"op":"pub","ch":"a","d":{}{}}}"#,
            "[".repeat(500),
            "]".repeat(500)
        );
        assert!(matches!(ok(&deep).op, Op::Pub { d, .. } if d.get().len() == 1000));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let request = ok(r#"{"op":"sub","ch":"a","v":2,"d":{"x":1},"token":5,"extra":[1]}"#);
        assert!(matches!(request.op, Op::Sub { ch, .. } if ch == "a"));
        assert!(matches!(
            ok(r#"{"op":"ping","ch":"a b","uid":null}"#).op,
            Op::Ping
        ));
    }

    #[test]
    fn channel_names_are_checked_and_echoed() {
        for (ch, bad) in [
            ("a b", BadName::NotPrintable),
            ("room:*", BadName::Star),
            ("", BadName::Empty),
            ("caf\\u00e9", BadName::NotPrintable),
        ] {
            for op in ["sub", "unsub", "pub"] {
                let text = format!(r#"{{"op":"{op}","ch":"{ch}","d":1,"id":9}}"#);
                let (error, id, echoed) = refused(&text);
                assert_eq!((error, id), (V1Error::BadChannel(bad), Some("9")), "{text}");
                let expected: String = serde_json::from_str(&format!(r#""{ch}""#)).unwrap();
                assert_eq!(echoed, Some(expected), "{text}");
            }
        }
        let long = format!(r#"{{"op":"sub","ch":"{}"}}"#, "x".repeat(256));
        assert_eq!(refused(&long).0, V1Error::BadChannel(BadName::TooLong));
        // Not a string: nothing to echo.
        let not_a_string = V1Error::WrongType {
            field: "ch",
            expected: "a string",
        };
        assert_eq!(
            refused(r#"{"op":"sub","ch":5}"#),
            (not_a_string, None, None)
        );
        let missing = V1Error::MissingField("ch");
        assert_eq!(refused(r#"{"op":"unsub"}"#), (missing, None, None));
    }

    #[test]
    fn quotes_and_backslashes_in_names_are_unescaped() {
        match ok(r#"{"op":"sub","ch":"a\"b\\c"}"#).op {
            Op::Sub {
                ch: Cow::Owned(ch), ..
            } => assert_eq!(ch, "a\"b\\c"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_requests() {
        let missing = (V1Error::MissingField("op"), None, None);
        assert_eq!(refused("{}"), missing);
        assert_eq!(refused(r#"{"id":"x"}"#).1, Some(r#""x""#));
        let not_a_string = V1Error::WrongType {
            field: "op",
            expected: "a string",
        };
        assert_eq!(
            refused(r#"{"op":1,"id":2}"#),
            (not_a_string, Some("2"), None)
        );
        assert_eq!(refused(r#"{"op":null}"#).0, not_a_string);
        assert_eq!(refused(r#"{"op":"PING"}"#).0, V1Error::UnknownOp);
        for json in ["[1]", r#""ping""#, "42", "null", " [] "] {
            assert_eq!(refused(json), (V1Error::NotObject, None, None), "{json}");
        }
        let twice = r#"{"op":"ping","op":"sub","id":1}"#;
        assert_eq!(refused(twice), (V1Error::DuplicateField, None, None));
    }

    #[test]
    fn what_is_not_json_breaks_the_protocol() {
        for text in ["", "hello", "{", r#"{"op":"ping"} x"#, "{op:ping}", "[1,]"] {
            let (error, id, ch) = refused(text);
            assert_eq!((error, id, ch), (V1Error::NotJson, None, None), "{text}");
            assert!(error.breaks_protocol());
        }
    }
}
