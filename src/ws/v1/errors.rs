//! Why a v1 request was refused: a code, a kind to count by, a reason to show.

use std::fmt;

use crate::channel::BadName;

/// Every refusal of a v1 request, each with its `code` (HTTP's numbers, which
/// readers know) and a stable [`kind`](V1Error::kind) that `stats` and
/// `/metrics` count it by. The parser makes those up to `BadChannel`; the
/// session makes the others, from `Unauthenticated` on. All are answered with
/// an error frame and the connection is kept, except those that [break the
/// protocol](V1Error::breaks_protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Error {
    /// The text is not JSON at all: not a v1 client, or a broken one.
    NotJson,
    /// JSON, but not an object.
    NotObject,
    /// A field given twice.
    DuplicateField,
    MissingField(&'static str),
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    /// An `auth` with both a `token` and a `uid`.
    TokenAndUid,
    /// An `op` this hub does not know: a newer client's, perhaps.
    UnknownOp,
    /// One kind, `bad_channel`, for every bad name; the reason says which.
    BadChannel(BadName),
    /// Anything but `auth` (or `ping`) before `auth`.
    Unauthenticated,
    /// An `auth` on a connection already authenticated.
    AlreadyAuthenticated,
    /// No grant allows this `sub` or `pub`.
    Forbidden,
    /// An `unsub` of a channel the connection is not subscribed to.
    NotSubscribed,
    /// The connection is at `--max-subscriptions-per-connection`.
    TooManySubscriptions,
    /// The hub is at `--max-channels`, and this would be a new one.
    TooManyChannels,
    /// An `ack` of a stream that keeps no positions, or no longer exists.
    NoStream,
    /// An `ack` of a position of another epoch: the stream was lost since.
    OtherEpoch,
    /// An `ack` past the stream's last message.
    AheadOfStream,
    /// A `send`, but no backend listens.
    NoListener,
    /// A `send`, but every listening backend is full: it was dropped.
    ListenersFull,
}

impl V1Error {
    pub fn code(self) -> u16 {
        match self {
            V1Error::NotJson
            | V1Error::NotObject
            | V1Error::DuplicateField
            | V1Error::MissingField(_)
            | V1Error::WrongType { .. }
            | V1Error::TokenAndUid
            | V1Error::UnknownOp
            | V1Error::AheadOfStream => 400,
            V1Error::Unauthenticated => 401,
            V1Error::Forbidden => 403,
            V1Error::NotSubscribed | V1Error::NoStream => 404,
            V1Error::AlreadyAuthenticated | V1Error::OtherEpoch => 409,
            V1Error::BadChannel(_) => 422,
            V1Error::TooManySubscriptions => 429,
            V1Error::TooManyChannels | V1Error::NoListener | V1Error::ListenersFull => 503,
        }
    }

    /// A short name for counting errors by reason.
    pub fn kind(self) -> &'static str {
        match self {
            V1Error::NotJson => "invalid_json",
            V1Error::NotObject
            | V1Error::DuplicateField
            | V1Error::MissingField(_)
            | V1Error::WrongType { .. }
            | V1Error::TokenAndUid => "bad_request",
            V1Error::UnknownOp => "unknown_op",
            V1Error::BadChannel(_) => "bad_channel",
            V1Error::Unauthenticated => "unauthenticated",
            V1Error::AlreadyAuthenticated => "already_authenticated",
            V1Error::Forbidden => "forbidden",
            V1Error::NotSubscribed => "not_subscribed",
            V1Error::TooManySubscriptions => "too_many_subscriptions",
            V1Error::TooManyChannels => "too_many_channels",
            V1Error::NoStream => "no_stream",
            V1Error::OtherEpoch => "other_epoch",
            V1Error::AheadOfStream => "ahead_of_stream",
            V1Error::NoListener => "no_listener",
            V1Error::ListenersFull => "listeners_full",
        }
    }

    /// Whether the client broke the protocol, so the session closes the
    /// connection instead of answering: a text that is not JSON cannot come
    /// from a v1 client. Everything else is a request refused, answered with
    /// an error frame, so that one mistake (or a newer client's op) costs
    /// the client nothing but that request.
    pub fn breaks_protocol(self) -> bool {
        matches!(self, V1Error::NotJson)
    }
}

impl fmt::Display for V1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            V1Error::NotJson => f.write_str("a v1 frame must be JSON"),
            V1Error::NotObject => f.write_str("a v1 frame must be a JSON object"),
            V1Error::DuplicateField => f.write_str("a field is given twice"),
            V1Error::MissingField(field) => write!(f, "missing field `{field}`"),
            V1Error::WrongType { field, expected } => write!(f, "`{field}` must be {expected}"),
            V1Error::TokenAndUid => f.write_str("give `token` or `uid`, not both"),
            V1Error::UnknownOp => {
                f.write_str("unknown op: expected auth, sub, unsub, pub, ping, ack or send")
            }
            V1Error::BadChannel(e) => write!(f, "bad channel name: {e}"),
            V1Error::Unauthenticated => f.write_str("authenticate first: send an auth op"),
            V1Error::AlreadyAuthenticated => {
                f.write_str("this connection is already authenticated")
            }
            V1Error::Forbidden => f.write_str("no grant allows this channel"),
            V1Error::NotSubscribed => f.write_str("not subscribed to this channel"),
            V1Error::TooManySubscriptions => f.write_str(
                "too many subscriptions on this connection (--max-subscriptions-per-connection)",
            ),
            V1Error::TooManyChannels => {
                f.write_str("too many channels on this hub (--max-channels)")
            }
            V1Error::NoStream => f.write_str("no such stream: nothing to acknowledge"),
            V1Error::OtherEpoch => {
                f.write_str("position of another epoch: the stream's history was lost")
            }
            V1Error::AheadOfStream => f.write_str("position past the stream's last message"),
            V1Error::NoListener => f.write_str("no backend listens for messages"),
            V1Error::ListenersFull => {
                f.write_str("every listening backend is full: the message was dropped")
            }
        }
    }
}

impl std::error::Error for V1Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_code_kind_and_reason() {
        let wrong = V1Error::WrongType {
            field: "ch",
            expected: "a string",
        };
        for (error, code, kind, reason) in [
            (
                V1Error::NotJson,
                400,
                "invalid_json",
                "a v1 frame must be JSON",
            ),
            (
                V1Error::NotObject,
                400,
                "bad_request",
                "a v1 frame must be a JSON object",
            ),
            (
                V1Error::DuplicateField,
                400,
                "bad_request",
                "a field is given twice",
            ),
            (
                V1Error::MissingField("op"),
                400,
                "bad_request",
                "missing field `op`",
            ),
            (wrong, 400, "bad_request", "`ch` must be a string"),
            (
                V1Error::TokenAndUid,
                400,
                "bad_request",
                "give `token` or `uid`, not both",
            ),
            (
                V1Error::UnknownOp,
                400,
                "unknown_op",
                "unknown op: expected auth, sub, unsub, pub, ping, ack or send",
            ),
            (
                V1Error::BadChannel(BadName::Star),
                422,
                "bad_channel",
                "bad channel name: `*` is reserved: it may only end a pattern, as in room:*",
            ),
            (
                V1Error::BadChannel(BadName::Empty),
                422,
                "bad_channel",
                "bad channel name: a channel name must not be empty",
            ),
            (
                V1Error::Unauthenticated,
                401,
                "unauthenticated",
                "authenticate first: send an auth op",
            ),
            (
                V1Error::AlreadyAuthenticated,
                409,
                "already_authenticated",
                "this connection is already authenticated",
            ),
            (
                V1Error::Forbidden,
                403,
                "forbidden",
                "no grant allows this channel",
            ),
            (
                V1Error::NotSubscribed,
                404,
                "not_subscribed",
                "not subscribed to this channel",
            ),
            (
                V1Error::TooManySubscriptions,
                429,
                "too_many_subscriptions",
                "too many subscriptions on this connection (--max-subscriptions-per-connection)",
            ),
            (
                V1Error::TooManyChannels,
                503,
                "too_many_channels",
                "too many channels on this hub (--max-channels)",
            ),
            (
                V1Error::NoStream,
                404,
                "no_stream",
                "no such stream: nothing to acknowledge",
            ),
            (
                V1Error::OtherEpoch,
                409,
                "other_epoch",
                "position of another epoch: the stream's history was lost",
            ),
            (
                V1Error::AheadOfStream,
                400,
                "ahead_of_stream",
                "position past the stream's last message",
            ),
            (
                V1Error::NoListener,
                503,
                "no_listener",
                "no backend listens for messages",
            ),
            (
                V1Error::ListenersFull,
                503,
                "listeners_full",
                "every listening backend is full: the message was dropped",
            ),
        ] {
            assert_eq!(
                (error.code(), error.kind(), error.to_string().as_str()),
                (code, kind, reason),
                "{error:?}"
            );
            assert_eq!(
                error.breaks_protocol(),
                error == V1Error::NotJson,
                "{error:?}"
            );
        }
    }
}
