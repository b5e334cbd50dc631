//! The v1 client protocol (subprotocol `pushhub.v1`): every frame, both
//! ways, is a text frame of one JSON object with an `op`.
//!
//! Pure, no I/O: [`parse()`] turns a client's text into a [`Request`] or a
//! [`ParseError`]; the encoders turn the hub's answers and messages into
//! [`Frame`](crate::ws::frame::Frame)s, built with serde, never by formatting. Which request is
//! allowed when (authentication, grants, limits) is the session's to decide;
//! the errors it answers with are typed here too, in [`V1Error`].
//!
//! A message (`msg`) is encoded once per publication and shared by every
//! receiver; its `d` is the data as JSON text, exactly as written.
//!
//! - `parse`: client frames → [`Request`], or a [`ParseError`].
//! - `errors`: [`V1Error`], every refusal with its code and kind.
//! - `encode`: the hub's frames (`welcome`, `subbed`, `msg`, `error`, ...).

mod encode;
mod errors;
mod parse;

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::hub::Pos;

pub use encode::{
    PerStream, Welcome, acked, error, msg, msg_broadcast, msg_channel, pong, pubbed, sent, subbed,
    unsubbed, welcome,
};
pub use errors::V1Error;
pub use parse::{ParseError, parse};

/// The subprotocol a client offers to speak v1.
pub const SUBPROTOCOL: &str = "pushhub.v1";

/// One client frame: its `op`, and the `id` to echo in the answer.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub id: Option<&'a RawValue>,
    pub op: Op<'a>,
}

/// What a client asks. Channel names are checked ([`crate::channel::check_name`]).
#[derive(Debug, Clone)]
pub enum Op<'a> {
    Auth {
        credential: Credential<'a>,
        since: Since<'a>,
    },
    /// `since`: the last position the client saw of the channel.
    Sub {
        ch: Cow<'a, str>,
        since: Option<Pos>,
    },
    Unsub {
        ch: Cow<'a, str>,
    },
    /// `d` is any JSON value, as the client wrote it.
    Pub {
        ch: Cow<'a, str>,
        d: &'a RawValue,
    },
    Ping,
    /// Everything up to `pos` was received: of the uid's stream, or of `ch`.
    Ack {
        ch: Option<Cow<'a, str>>,
        pos: Pos,
    },
    /// `d`, any JSON value, for a listening backend.
    Send {
        d: &'a RawValue,
    },
}

/// Where a reconnecting client left off (`since` in `auth`): its uid's
/// stream, the broadcasts, and channels its token joins it to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Since<'a> {
    pub uid: Option<Pos>,
    pub all: Option<Pos>,
    pub chs: Vec<(Cow<'a, str>, Pos)>,
}

/// The credential of an `auth`, not yet checked: that is `auth::authenticate`'s job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    Token(Cow<'a, str>),
    /// A plain uid: a string, or a number taken as its text, as on the text port.
    Uid(Cow<'a, str>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::Frame;

    /// The text of a frame the hub sends (short and unmasked, as the hub's are).
    fn text(frame: &Frame) -> &str {
        let bytes = frame.as_bytes();
        let start = match bytes[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        std::str::from_utf8(&bytes[start..]).unwrap()
    }

    #[test]
    fn round_trip() {
        let request = r#"{"op":"pub","ch":"chat:\"q\"","d":{"t": "hi\n"},"id":{"n":1}}"#;
        let Request {
            id: Some(id),
            op: Op::Pub { ch, d },
        } = parse(request).unwrap()
        else {
            panic!("{request}");
        };
        let published: serde_json::Value =
            serde_json::from_str(text(&msg_channel(&ch, d, None))).unwrap();
        assert_eq!(
            published,
            serde_json::json!({"op": "msg", "ch": "chat:\"q\"", "d": {"t": "hi\n"}})
        );
        assert_eq!(
            text(&pubbed(&ch, 2, false, id)),
            r#"{"op":"pubbed","ch":"chat:\"q\"","delivered":2,"id":{"n":1}}"#
        );
        let refused = parse(r#"{"op":"sub","ch":"a\\*","id":"s"}"#).unwrap_err();
        assert_eq!(
            text(&error(&refused.error, refused.id, refused.ch.as_deref())),
            r#"{"op":"error","code":422,"reason":"bad channel name: `*` is reserved: it may only end a pattern, as in room:*","ch":"a\\*","id":"s"}"#
        );
        let pong = pong(parse(r#"{"op":"ping","id":3}"#).unwrap().id);
        assert_eq!(text(&pong), r#"{"op":"pong","id":3}"#);
    }
}
