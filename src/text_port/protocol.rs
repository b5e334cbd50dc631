//! The text port's wire format: newline-delimited requests in, one reply line out
//! per request. No I/O here: the codec works on byte slices, so the server, the
//! benches and the tests share it.
//!
//! Two request forms live side by side:
//! - the Workerman original, a JSON object with `uid` and no `cmd`, answered `ok` or `fail`;
//! - commands, a JSON object with `cmd`, answered by a JSON object with `"ok"`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::{BadName, check_name};
use crate::config::parse_duration;
use crate::hub::listeners::{Interests, WireId};
use crate::metrics::Stats;
use crate::push::apns::sender::{Priority, PushType};
use crate::push::registry::{
    BadDeviceToken, BadFcmToken, BadSubscription, Device, DeviceToken, FcmToken, Registered,
    Subscription, SubscriptionKeys,
};
use crate::push::route::{ApnsPush, DevicePush, FcmPush, Summaries, WebPushPush, When};
use crate::push::webpush::sender::{Urgency, valid_topic};

/// Finds the next complete line at the start of `buf`.
///
/// Returns `Ok(Some((line, consumed)))` with the line stripped of its `\n` and of
/// every `\r` before it (as Workerman's Text protocol trims them, so the
/// original's clients get the same bytes), `Ok(None)` when more bytes are
/// needed, and `Err` once the line is known to be longer than `max_len` bytes.
pub fn split_line(buf: &[u8], max_len: usize) -> Result<Option<(&[u8], usize)>, LineTooLong> {
    let window = &buf[..buf.len().min(max_len.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let kept = buf[..end]
                .iter()
                .rposition(|&b| b != b'\r')
                .map_or(0, |i| i + 1);
            let line = &buf[..kept];
            if line.len() > max_len {
                Err(LineTooLong { max_len })
            } else {
                Ok(Some((line, end + 1)))
            }
        }
        None if buf.len() > max_len + 1 => Err(LineTooLong { max_len }),
        None => Ok(None),
    }
}

/// A line grew past the configured maximum without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong {
    pub max_len: usize,
}

/// A parsed request line.
// Parsed per line on the stack and never stored: boxing a push's parts for
// devices would cost an allocation per push.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Request<'a> {
    /// The original form: deliver `line`, verbatim, to every connection of `uid`.
    Legacy { uid: Cow<'a, str>, line: &'a str },
    /// The original form with a `uid` that is missing or of the wrong type: answered `fail`.
    LegacyInvalid(RequestError),
    /// A command; `id` is echoed in the reply whether or not the command was valid.
    Command {
        id: Option<&'a RawValue>,
        command: Result<Command<'a>, RequestError>,
    },
    /// A line that is not a JSON object at all.
    Invalid(RequestError),
}

#[derive(Debug, PartialEq)]
pub enum Command<'a> {
    Push {
        to: Targets<'a>,
        data: Data<'a>,
        /// Its parts for devices without a WebSocket: APNs, FCM, Web Push.
        devices: DevicePush<'a>,
        /// Wait this long for a connection of the (one) uid to acknowledge
        /// it; the reply says whether one did.
        ack_timeout: Option<Duration>,
    },
    /// A message to one connection, by its id (a listener's answer).
    PushConn {
        conn: WireId,
        /// In a cluster, the hub the connection is on (its events say).
        node: Option<Cow<'a, str>>,
        data: ConnData<'a>,
    },
    /// Turns the connection into a listener of the clients' events.
    Listen {
        interests: Interests,
    },
    Broadcast {
        data: Data<'a>,
    },
    /// Sends `data` to every subscriber of each channel.
    Publish {
        chs: Vec<Cow<'a, str>>,
        data: Data<'a>,
    },
    /// Subscribes the uids' current connections to the channels.
    Subscribe {
        who: Targets<'a>,
        chs: Vec<Cow<'a, str>>,
    },
    Unsubscribe {
        who: Targets<'a>,
        chs: Vec<Cow<'a, str>>,
    },
    /// The channels (whose names start with `prefix`) and their subscribers.
    Channels {
        prefix: Cow<'a, str>,
    },
    /// A channel's uids and connections.
    Members {
        ch: Cow<'a, str>,
    },
    Online {
        who: Targets<'a>,
    },
    Kick {
        who: Targets<'a>,
    },
    /// This hub's stats, or (`cluster`) every hub's.
    Stats {
        cluster: bool,
    },
    /// Records a device (an iPhone's APNs token, an FCM token, a browser's
    /// Web Push subscription) for a uid.
    Register {
        uid: Cow<'a, str>,
        device: Device,
    },
    /// Forgets one device of a uid, or all of them.
    Unregister {
        uid: Cow<'a, str>,
        device: Option<Device>,
    },
    /// The public key pages subscribe to Web Push with.
    VapidKey,
    /// Lists a uid's devices, by kind.
    Devices {
        uid: Cow<'a, str>,
    },
}

/// A command's `data`: the text raw clients receive (a JSON string's contents,
/// or any other value's JSON text as written) and the JSON value itself, as
/// written, for v1 clients.
#[derive(Debug)]
pub struct Data<'a> {
    pub text: Cow<'a, str>,
    pub json: &'a RawValue,
}

impl PartialEq for Data<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.json.get() == other.json.get()
    }
}

/// What a push to one connection carries.
#[derive(Debug, PartialEq)]
pub enum ConnData<'a> {
    Text(Data<'a>),
    /// `"binary":true`: the bytes of `data`, a base64 string.
    Binary(Vec<u8>),
}

/// The uids a command names: `uid` for one, `uids` for several.
#[derive(Debug, PartialEq)]
pub enum Targets<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl<'a> Targets<'a> {
    pub fn as_slice(&self) -> &[Cow<'a, str>] {
        match self {
            Targets::One(uid) => std::slice::from_ref(uid),
            Targets::Many(uids) => uids,
        }
    }
}

/// Why a request line was refused; the `Display` text is the reply's `error`.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    Empty,
    NotUtf8,
    InvalidJson(String),
    NotAnObject,
    UnknownCmd(String),
    MissingField(&'static str),
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    UidAndUids,
    ChAndChs,
    /// A push names `conn` and `uid` or `uids`.
    ConnAndUid,
    /// A push with `ack_timeout` names several uids.
    AckOneUid,
    /// A `*_when` "unacked" without `ack_timeout`, or `ack_timeout` with
    /// a `*_when` it cannot follow.
    AckAndWhen,
    /// A push with `ack_timeout`, but uid streams keep no history (and so
    /// carry no position to acknowledge).
    NoUidHistory,
    BadChannel(BadName),
    LineTooLong(usize),
    BadDeviceToken(BadDeviceToken),
    BadFcmToken(BadFcmToken),
    BadSubscription(BadSubscription),
    /// A device command naming more than one device.
    OneDevice,
    /// A `register` naming no device.
    NoDevice,
    /// `vapid_key`, but the hub runs without `--vapid-key-file`.
    NoVapidKey,
    /// A push with `apns`, but the hub runs without APNs credentials.
    NoApns,
    /// A push with `fcm`, but the hub runs without `--fcm-credentials-file`.
    NoFcm,
    /// A push with `webpush`, but the hub runs without a VAPID key.
    NoWebPush,
    /// A device command, but the hub runs without `--apns-db` (or
    /// `--redis`, which keeps the registry in Redis).
    NoRegistry,
    /// The registry failed; its message says whether anything changed.
    Registry(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Empty => f.write_str("empty line: send one JSON object per line"),
            RequestError::NotUtf8 => f.write_str("line is not valid UTF-8"),
            RequestError::InvalidJson(e) => write!(f, "invalid JSON: {e}"),
            RequestError::NotAnObject => f.write_str("a request must be a JSON object"),
            RequestError::UnknownCmd(cmd) => write!(
                f,
                "unknown cmd `{cmd}`: expected push, broadcast, publish, subscribe, \
                 unsubscribe, channels, members, online, kick, stats, listen, register, \
                 unregister, devices or vapid_key"
            ),
            RequestError::MissingField(field) => write!(f, "missing field `{field}`"),
            RequestError::WrongType { field, expected } => {
                write!(f, "`{field}` must be {expected}")
            }
            RequestError::UidAndUids => f.write_str("give `uid` or `uids`, not both"),
            RequestError::ChAndChs => f.write_str("give `ch` or `chs`, not both"),
            RequestError::ConnAndUid => f.write_str("give `conn`, `uid` or `uids`, not two"),
            RequestError::AckOneUid => {
                f.write_str("`ack_timeout` waits for one uid: give `uid`, not `uids`")
            }
            RequestError::AckAndWhen => f.write_str(
                "`apns_when`, `fcm_when` or `webpush_when` \"unacked\" needs `ack_timeout`; \
                 with `ack_timeout`, each is \"unacked\" (the default) or \"never\"",
            ),
            RequestError::NoUidHistory => f.write_str(
                "`ack_timeout` needs positions in uid streams: this hub runs with \
                 --history-size-uid 0",
            ),
            RequestError::BadChannel(e) => write!(f, "bad channel name: {e}"),
            RequestError::LineTooLong(max) => {
                write!(f, "line longer than {max} bytes; closing the connection")
            }
            RequestError::BadDeviceToken(e) => write!(f, "`apns`: {e}"),
            RequestError::BadFcmToken(e) => write!(f, "`fcm`: {e}"),
            RequestError::BadSubscription(e) => write!(f, "`webpush`: {e}"),
            RequestError::OneDevice => {
                f.write_str("give one device: `apns`, `fcm` or `webpush`, not several")
            }
            RequestError::NoVapidKey => f.write_str(
                "no VAPID key: start pushhub with --vapid-key-file and --vapid-subject \
                 (pushhub vapid-keygen PATH makes a key)",
            ),
            RequestError::NoDevice => {
                f.write_str("missing field `apns`, `fcm` or `webpush`: the device to register")
            }
            RequestError::NoApns => f.write_str(
                "`apns` given, but this hub sends nothing to APNs: start it with \
                 --apns-topic and --apns-key-file or --apns-cert-file",
            ),
            RequestError::NoFcm => f.write_str(
                "`fcm` given, but this hub sends nothing to FCM: start it with \
                 --fcm-credentials-file",
            ),
            RequestError::NoWebPush => f.write_str(
                "`webpush` given, but this hub sends no Web Push: start it with \
                 --vapid-key-file and --vapid-subject",
            ),
            RequestError::NoRegistry => f.write_str(
                "no device registry: start pushhub with --devices-db PATH (or in a cluster, \
                 with --redis) to register devices",
            ),
            RequestError::Registry(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for RequestError {}

impl RequestError {
    /// A short name for counting errors by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::Empty => "empty",
            RequestError::NotUtf8 => "not_utf8",
            RequestError::InvalidJson(_) => "invalid_json",
            RequestError::NotAnObject => "not_an_object",
            RequestError::UnknownCmd(_) => "unknown_cmd",
            RequestError::MissingField(_) => "missing_field",
            RequestError::WrongType { .. } => "wrong_type",
            RequestError::UidAndUids => "uid_and_uids",
            RequestError::ChAndChs => "ch_and_chs",
            RequestError::ConnAndUid => "conn_and_uid",
            RequestError::AckOneUid => "ack_one_uid",
            RequestError::AckAndWhen => "ack_and_when",
            RequestError::NoUidHistory => "no_uid_history",
            RequestError::BadChannel(_) => "bad_channel",
            RequestError::LineTooLong(_) => "line_too_long",
            RequestError::BadDeviceToken(_) => "bad_device_token",
            RequestError::BadFcmToken(_) => "bad_fcm_token",
            RequestError::BadSubscription(_) => "bad_subscription",
            RequestError::OneDevice => "one_device",
            RequestError::NoDevice => "missing_field",
            RequestError::NoVapidKey => "no_vapid_key",
            RequestError::NoApns => "no_apns",
            RequestError::NoFcm => "no_fcm",
            RequestError::NoWebPush => "no_webpush",
            RequestError::NoRegistry => "no_registry",
            RequestError::Registry(_) => "registry",
        }
    }
}

/// Every field any request may carry, still as raw JSON, so that each is checked
/// for its type with an error that names it. Unknown fields are ignored.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    cmd: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    uid: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    uids: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    ch: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    chs: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    prefix: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    apns: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    fcm: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    webpush: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    apns_when: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    fcm_when: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    webpush_when: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    apns_push_type: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    apns_priority: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    apns_expiration: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    apns_collapse_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    ack_timeout: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    conn: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    binary: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    events: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    cluster: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    node: Option<&'a RawValue>,
}

/// The longest `ack_timeout`: a reply held longer would hold every reply
/// after it on that connection.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(300);

/// A field that is present, even as `null`: serde's `Option` would read `null`
/// as absent, and `"data": null` is a value to deliver, not a missing field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Request<'_> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Request::Invalid(RequestError::NotUtf8);
    };
    if text.trim().is_empty() {
        return Request::Invalid(RequestError::Empty);
    }
    if !text.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Request::Invalid(RequestError::NotAnObject),
            Err(e) => Request::Invalid(RequestError::InvalidJson(e.to_string())),
        };
    }
    let fields: Fields = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(e) => return Request::Invalid(RequestError::InvalidJson(e.to_string())),
    };
    match fields.cmd {
        None => match fields.uid.map(|raw| uid(raw, "uid")) {
            Some(Ok(uid)) => Request::Legacy { uid, line: text },
            Some(Err(e)) => Request::LegacyInvalid(e),
            None => Request::LegacyInvalid(RequestError::MissingField("uid")),
        },
        Some(cmd) => Request::Command {
            id: fields.id,
            command: command(cmd, &fields),
        },
    }
}

fn command<'a>(cmd: &'a RawValue, fields: &Fields<'a>) -> Result<Command<'a>, RequestError> {
    let cmd: Cow<str> = serde_json::from_str(cmd.get()).map_err(|_| RequestError::WrongType {
        field: "cmd",
        expected: "a string",
    })?;
    match cmd.as_ref() {
        "push" if fields.conn.is_some() => push_conn(fields),
        "push" => push(fields),
        "listen" => Ok(Command::Listen {
            interests: interests(fields)?,
        }),
        "broadcast" => Ok(Command::Broadcast {
            data: data(fields)?,
        }),
        "publish" => Ok(Command::Publish {
            chs: channels(fields)?,
            data: data(fields)?,
        }),
        "subscribe" => Ok(Command::Subscribe {
            who: targets(fields)?,
            chs: channels(fields)?,
        }),
        "unsubscribe" => Ok(Command::Unsubscribe {
            who: targets(fields)?,
            chs: channels(fields)?,
        }),
        "channels" => Ok(Command::Channels {
            prefix: match fields.prefix {
                Some(raw) => string(raw, "prefix")?,
                None => Cow::Borrowed(""),
            },
        }),
        "members" => Ok(Command::Members {
            ch: channel(fields.ch.ok_or(RequestError::MissingField("ch"))?, "ch")?,
        }),
        "online" => Ok(Command::Online {
            who: targets(fields)?,
        }),
        "kick" => Ok(Command::Kick {
            who: targets(fields)?,
        }),
        "stats" => Ok(Command::Stats {
            cluster: match fields.cluster.map(RawValue::get) {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => {
                    return Err(RequestError::WrongType {
                        field: "cluster",
                        expected: "true or false",
                    });
                }
            },
        }),
        "register" => Ok(Command::Register {
            uid: one_uid(fields)?,
            device: device(fields)?.ok_or(RequestError::NoDevice)?,
        }),
        "unregister" => Ok(Command::Unregister {
            uid: one_uid(fields)?,
            device: device(fields)?,
        }),
        "vapid_key" => Ok(Command::VapidKey),
        "devices" => Ok(Command::Devices {
            uid: one_uid(fields)?,
        }),
        _ => Err(RequestError::UnknownCmd(cmd.into_owned())),
    }
}

fn push<'a>(fields: &Fields<'a>) -> Result<Command<'a>, RequestError> {
    let to = targets(fields)?;
    let ack_timeout = fields.ack_timeout.map(ack_timeout).transpose()?;
    let data = data(fields)?;
    let mut devices = DevicePush {
        apns: apns_push(fields)?,
        fcm: fcm_push(fields)?,
        webpush: webpush_push(fields, &data)?,
    };
    let whens_given = [fields.apns_when, fields.fcm_when, fields.webpush_when]
        .iter()
        .any(Option::is_some);
    match ack_timeout {
        Some(_) if matches!(to, Targets::Many(_)) => return Err(RequestError::AckOneUid),
        // With an acknowledgement to wait for, devices get what was not acknowledged.
        Some(_) if !whens_given => devices.set_whens(When::Unacked),
        Some(_)
            if devices
                .whens()
                .any(|when| !matches!(when, When::Unacked | When::Never)) =>
        {
            return Err(RequestError::AckAndWhen);
        }
        Some(_) => {}
        None if devices.whens().any(|when| when == When::Unacked) => {
            return Err(RequestError::AckAndWhen);
        }
        None => {}
    }
    Ok(Command::Push {
        to,
        data,
        devices,
        ack_timeout,
    })
}

/// `ack_timeout`: a duration (`"5s"`, `"500ms"`) or a number of seconds.
fn ack_timeout(raw: &RawValue) -> Result<Duration, RequestError> {
    let wrong = RequestError::WrongType {
        field: "ack_timeout",
        expected: "a duration from 1ms to 5m, such as \"5s\" or 5",
    };
    let text = raw.get();
    let parsed = match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Cow<str>>(text)
            .ok()
            .and_then(|d| parse_duration(&d).ok()),
        Some(b'0'..=b'9') => text.parse::<u64>().ok().map(Duration::from_secs),
        _ => None,
    };
    match parsed {
        Some(d) if !d.is_zero() && d <= MAX_ACK_TIMEOUT => Ok(d),
        _ => Err(wrong),
    }
}

/// A push to one connection: `conn`, and `data` (text, or base64 with
/// `"binary":true`).
fn push_conn<'a>(fields: &Fields<'a>) -> Result<Command<'a>, RequestError> {
    if fields.uid.is_some() || fields.uids.is_some() {
        return Err(RequestError::ConnAndUid);
    }
    let wrong = |field, expected| RequestError::WrongType { field, expected };
    let raw = fields.conn.ok_or(RequestError::MissingField("conn"))?;
    // Exactly as events write it: `u64`'s parser would also take a sign
    // and leading zeros.
    let conn = serde_json::from_str::<Cow<str>>(raw.get())
        .ok()
        .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))
        .filter(|id| *id == "0" || !id.starts_with('0'))
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or(wrong("conn", "a connection id, as its events give it"))?;
    for field in [
        ("apns", fields.apns.is_some()),
        ("fcm", fields.fcm.is_some()),
        ("webpush", fields.webpush.is_some()),
        ("ack_timeout", fields.ack_timeout.is_some()),
    ] {
        if field.1 {
            return Err(wrong(field.0, "absent in a push to one connection"));
        }
    }
    let binary = match fields.binary.map(RawValue::get) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(wrong("binary", "true or false")),
    };
    let data = data(fields)?;
    let data = match binary {
        false => ConnData::Text(data),
        true => {
            let bytes = data
                .json
                .get()
                .starts_with('"')
                .then(|| data_encoding::BASE64.decode(data.text.as_bytes()).ok())
                .flatten()
                .ok_or(wrong("data", "a base64 string, with \"binary\":true"))?;
            ConnData::Binary(bytes)
        }
    };
    let node = fields.node.map(|raw| string(raw, "node")).transpose()?;
    Ok(Command::PushConn {
        conn: WireId(conn),
        node,
        data,
    })
}

/// A `listen`'s `events`: which events it wants (messages by default).
fn interests(fields: &Fields) -> Result<Interests, RequestError> {
    let wrong = RequestError::WrongType {
        field: "events",
        expected: "an array of \"message\", \"connect\" and \"disconnect\"",
    };
    let Some(raw) = fields.events else {
        return Ok(Interests {
            messages: true,
            presence: false,
        });
    };
    let names: Vec<Cow<str>> = serde_json::from_str(raw.get()).map_err(|_| wrong.clone())?;
    let mut interests = Interests {
        messages: false,
        presence: false,
    };
    for name in &names {
        match name.as_ref() {
            "message" => interests.messages = true,
            // One switch for both: a backend that tracks presence needs both.
            "connect" | "disconnect" => interests.presence = true,
            _ => return Err(wrong),
        }
    }
    if !interests.messages && !interests.presence {
        return Err(wrong);
    }
    Ok(interests)
}

fn targets<'a>(fields: &Fields<'a>) -> Result<Targets<'a>, RequestError> {
    match (fields.uid, fields.uids) {
        (Some(_), Some(_)) => Err(RequestError::UidAndUids),
        (Some(raw), None) => Ok(Targets::One(uid(raw, "uid")?)),
        (None, Some(raw)) => {
            let items: Vec<&RawValue> =
                serde_json::from_str(raw.get()).map_err(|_| RequestError::WrongType {
                    field: "uids",
                    expected: "an array of strings or numbers",
                })?;
            let uids = items
                .into_iter()
                .map(|item| uid(item, "uids"))
                .collect::<Result<_, _>>()?;
            Ok(Targets::Many(uids))
        }
        (None, None) => Err(RequestError::MissingField("uid")),
    }
}

/// A push's `apns` payload and options, if it has one.
fn apns_push<'a>(fields: &Fields<'a>) -> Result<Option<ApnsPush<'a>>, RequestError> {
    let Some(payload) = fields.apns else {
        return Ok(None);
    };
    let wrong = |field, expected| RequestError::WrongType { field, expected };
    if !payload.get().starts_with('{') {
        return Err(wrong("apns", "a JSON object: the payload for Apple"));
    }
    let text = |raw: Option<&'a RawValue>, field, expected| -> Result<Option<Cow<'a, str>>, _> {
        raw.map(|raw| serde_json::from_str(raw.get()).map_err(|_| wrong(field, expected)))
            .transpose()
    };
    let when = when(fields.apns_when, "apns_when")?;
    let push_types = "alert, background, voip, complication, fileprovider, mdm, location, \
                      liveactivity, pushtotalk or widgets";
    let push_type = match text(fields.apns_push_type, "apns_push_type", push_types)? {
        None => PushType::Alert,
        Some(name) => PushType::parse(&name).ok_or(wrong("apns_push_type", push_types))?,
    };
    let priority = match fields.apns_priority.map(RawValue::get) {
        None | Some("10") => Priority::Immediate,
        Some("5") => Priority::Conserve,
        Some(_) => return Err(wrong("apns_priority", "10 or 5")),
    };
    let expiration = fields
        .apns_expiration
        .map(|raw| serde_json::from_str::<u64>(raw.get()))
        .transpose()
        .map_err(|_| wrong("apns_expiration", "a Unix time in seconds"))?
        .unwrap_or(0);
    let collapse_id = text(fields.apns_collapse_id, "apns_collapse_id", "a string")?;
    Ok(Some(ApnsPush {
        payload: Cow::Borrowed(payload.get()),
        when,
        push_type,
        priority,
        expiration,
        collapse_id,
    }))
}

/// A `*_when`: when a push's part for a platform goes to the uid's devices.
fn when(raw: Option<&RawValue>, field: &'static str) -> Result<When, RequestError> {
    let whens = "\"offline\", \"always\", \"never\" or \"unacked\"";
    let wrong = RequestError::WrongType {
        field,
        expected: whens,
    };
    let Some(raw) = raw else {
        return Ok(When::Offline);
    };
    let text: Cow<str> = serde_json::from_str(raw.get()).map_err(|_| wrong.clone())?;
    match text.as_ref() {
        "offline" => Ok(When::Offline),
        "always" => Ok(When::Always),
        "never" => Ok(When::Never),
        "unacked" => Ok(When::Unacked),
        _ => Err(wrong),
    }
}

/// A push's `fcm`: FCM v1's `message` object, which the hub gives each
/// device's `token`.
fn fcm_push<'a>(fields: &Fields<'a>) -> Result<Option<FcmPush<'a>>, RequestError> {
    let Some(raw) = fields.fcm else {
        return Ok(None);
    };
    let wrong = RequestError::WrongType {
        field: "fcm",
        expected: "an FCM v1 message object, without `token`, `topic` or `condition` \
                   (the hub sends it to each of the uid's tokens)",
    };
    let object: BTreeMap<Cow<str>, &RawValue> =
        serde_json::from_str(raw.get()).map_err(|_| wrong.clone())?;
    if ["token", "topic", "condition"]
        .iter()
        .any(|key| object.contains_key(*key))
    {
        return Err(wrong);
    }
    Ok(Some(FcmPush {
        message: Cow::Borrowed(raw.get()),
        when: when(fields.fcm_when, "fcm_when")?,
    }))
}

/// The longest `ttl` of a Web Push message: four weeks, what push services
/// keep at most.
pub const MAX_WEBPUSH_TTL: u32 = 28 * 24 * 3600;

/// The `ttl` of a Web Push message without one: a day.
pub const DEFAULT_WEBPUSH_TTL: u32 = 24 * 3600;

/// A push's `webpush`: `{"data":X,"ttl":S,"urgency":U,"topic":T}`, every
/// field optional; without `data`, the push's own `data`.
fn webpush_push<'a>(
    fields: &Fields<'a>,
    push_data: &Data<'a>,
) -> Result<Option<WebPushPush<'a>>, RequestError> {
    let Some(raw) = fields.webpush else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Part<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        data: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "present")]
        ttl: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "present")]
        urgency: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "present")]
        topic: Option<&'a RawValue>,
    }
    let wrong = |field, expected| RequestError::WrongType { field, expected };
    let part: Part = serde_json::from_str(raw.get()).map_err(|_| {
        wrong(
            "webpush",
            "an object: {\"data\":..., \"ttl\":SECONDS, \"urgency\":..., \"topic\":...}",
        )
    })?;
    let data = match part.data {
        None => push_data.text.clone(),
        Some(raw) => match serde_json::from_str::<Cow<str>>(raw.get()) {
            Ok(text) => text,
            Err(_) => Cow::Borrowed(raw.get()),
        },
    };
    let ttl = match part.ttl {
        None => DEFAULT_WEBPUSH_TTL,
        Some(raw) => raw
            .get()
            .parse::<u32>()
            .ok()
            .filter(|&ttl| ttl <= MAX_WEBPUSH_TTL)
            .ok_or(wrong(
                "webpush.ttl",
                "a number of seconds, at most 2419200 (4 weeks)",
            ))?,
    };
    let urgency = part
        .urgency
        .map(|raw| {
            serde_json::from_str::<Cow<str>>(raw.get())
                .ok()
                .and_then(|u| Urgency::parse(&u))
                .ok_or(wrong(
                    "webpush.urgency",
                    "\"very-low\", \"low\", \"normal\" or \"high\"",
                ))
        })
        .transpose()?;
    let topic = part
        .topic
        .map(|raw| {
            serde_json::from_str::<Cow<str>>(raw.get())
                .ok()
                .filter(|t| valid_topic(t))
                .ok_or(wrong(
                    "webpush.topic",
                    "up to 32 letters, digits, `-` or `_`",
                ))
        })
        .transpose()?;
    Ok(Some(WebPushPush {
        data,
        ttl,
        urgency,
        topic,
        when: when(fields.webpush_when, "webpush_when")?,
    }))
}

/// The single `uid` of a device command.
fn one_uid<'a>(fields: &Fields<'a>) -> Result<Cow<'a, str>, RequestError> {
    match (fields.uid, fields.uids) {
        (Some(raw), None) => uid(raw, "uid"),
        (_, Some(_)) => Err(RequestError::WrongType {
            field: "uids",
            expected: "absent: device commands take one `uid`",
        }),
        (None, None) => Err(RequestError::MissingField("uid")),
    }
}

/// The device a device command names, if it names one: `apns` (a token),
/// `fcm` (a token) or `webpush` (a subscription object).
fn device(fields: &Fields) -> Result<Option<Device>, RequestError> {
    let given = [fields.apns, fields.fcm, fields.webpush];
    if given.iter().flatten().count() > 1 {
        return Err(RequestError::OneDevice);
    }
    if let Some(raw) = fields.apns {
        let text: Cow<str> = typed(raw, "apns", "a string of hexadecimal digits")?;
        return DeviceToken::parse(&text)
            .map(|t| Some(Device::Apns(t)))
            .map_err(RequestError::BadDeviceToken);
    }
    if let Some(raw) = fields.fcm {
        let text: Cow<str> = typed(raw, "fcm", "a string: the app's FCM registration token")?;
        return FcmToken::parse(&text)
            .map(|t| Some(Device::Fcm(t)))
            .map_err(RequestError::BadFcmToken);
    }
    if let Some(raw) = fields.webpush {
        // Other members (`expirationTime`) are ignored, as browsers add them.
        #[derive(Deserialize)]
        struct Given<'a> {
            #[serde(borrow)]
            endpoint: Cow<'a, str>,
            keys: SubscriptionKeys,
        }
        let given: Given = typed(
            raw,
            "webpush",
            "a subscription: {\"endpoint\":URL,\"keys\":{\"p256dh\":…,\"auth\":…}}",
        )?;
        return Subscription::new(&given.endpoint, given.keys)
            .map(|s| Some(Device::WebPush(s)))
            .map_err(RequestError::BadSubscription);
    }
    Ok(None)
}

/// A uid is a JSON string, or a number taken as its text (PHP backends send both).
fn uid<'a>(raw: &'a RawValue, field: &'static str) -> Result<Cow<'a, str>, RequestError> {
    let text = raw.get();
    let wrong = RequestError::WrongType {
        field,
        expected: if field == "uids" {
            "an array of strings or numbers"
        } else {
            "a string or a number"
        },
    };
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str(text).map_err(|_| wrong),
        Some(b'-' | b'0'..=b'9') => Ok(Cow::Borrowed(text)),
        _ => Err(wrong),
    }
}

/// What a push delivers: for raw clients a JSON string's contents, or any
/// other value's JSON text; for v1 clients the value as written.
fn data<'a>(fields: &Fields<'a>) -> Result<Data<'a>, RequestError> {
    let json = fields.data.ok_or(RequestError::MissingField("data"))?;
    let text = json.get();
    let text = if text.starts_with('"') {
        serde_json::from_str(text).map_err(|e| RequestError::InvalidJson(e.to_string()))?
    } else {
        Cow::Borrowed(text)
    };
    Ok(Data { text, json })
}

/// The channels a command names: `ch` for one, `chs` for several.
fn channels<'a>(fields: &Fields<'a>) -> Result<Vec<Cow<'a, str>>, RequestError> {
    match (fields.ch, fields.chs) {
        (Some(_), Some(_)) => Err(RequestError::ChAndChs),
        (Some(raw), None) => Ok(vec![channel(raw, "ch")?]),
        (None, Some(raw)) => {
            let items: Vec<&RawValue> =
                serde_json::from_str(raw.get()).map_err(|_| RequestError::WrongType {
                    field: "chs",
                    expected: "an array of channel names",
                })?;
            items.into_iter().map(|item| channel(item, "chs")).collect()
        }
        (None, None) => Err(RequestError::MissingField("ch")),
    }
}

/// One channel name, checked.
fn channel<'a>(raw: &'a RawValue, field: &'static str) -> Result<Cow<'a, str>, RequestError> {
    let name = string(raw, field)?;
    check_name(&name).map_err(RequestError::BadChannel)?;
    Ok(name)
}

fn string<'a>(raw: &'a RawValue, field: &'static str) -> Result<Cow<'a, str>, RequestError> {
    typed(raw, field, "a string")
}

/// `field` as a `T`, or an error saying it must be `expected`.
fn typed<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    field: &'static str,
    expected: &'static str,
) -> Result<T, RequestError> {
    serde_json::from_str(raw.get()).map_err(|_| RequestError::WrongType { field, expected })
}

/// One uid's presence, in a reply to `online` with `uids`.
#[derive(Debug, Serialize)]
pub struct Presence<'a> {
    pub uid: Cow<'a, str>,
    pub online: bool,
    pub connections: usize,
}

/// A reply line's content, before encoding.
#[derive(Debug)]
pub enum Reply<'a> {
    /// `ok` or `fail`, for the original form.
    Legacy(bool),
    Delivered(usize),
    /// `online` for one uid: how many connections it has.
    Online(usize),
    OnlineMany(Vec<Presence<'a>>),
    Kicked(usize),
    Stats(Box<Stats>),
    Registered(Registered),
    Removed(usize),
    Devices(Vec<Device>),
    /// The VAPID public key, base64url.
    VapidKey(String),
    /// A push that also went to devices: connections reached, and the
    /// services' answers.
    DeliveredDevices(usize, Summaries),
    /// A push that waited for an acknowledgement: connections reached,
    /// whether one acknowledged in time, and, if not, the services' answers.
    DeliveredAcked(usize, bool, Option<Summaries>),
    /// `listen`: events follow on this connection.
    Listening,
    /// Connections newly subscribed, and the refusals by reason.
    Subscribed(usize, BTreeMap<&'static str, usize>),
    Unsubscribed(usize),
    Channels(Vec<(Rc<str>, usize)>),
    /// A channel's uids and connections.
    Members(Vec<Rc<str>>, usize),
    /// `stats` of every hub of a cluster.
    Nodes(Vec<Box<RawValue>>),
    /// A cluster's answer that some hub did not confirm: the reply says
    /// so, with what was confirmed.
    Unconfirmed(Box<Reply<'a>>),
    Error(RequestError),
}

#[derive(Serialize)]
struct Envelope<'a, B> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    #[serde(flatten)]
    body: B,
}

#[derive(Serialize)]
struct NodesBody<'a> {
    nodes: &'a [Box<RawValue>],
}

#[derive(Serialize)]
struct DeliveredBody {
    delivered: usize,
}

#[derive(Serialize)]
struct OnlineBody {
    online: bool,
    connections: usize,
}

#[derive(Serialize)]
struct ManyBody<'a, 'b> {
    results: &'b [Presence<'a>],
}

#[derive(Serialize)]
struct KickedBody {
    kicked: usize,
}

#[derive(Serialize)]
struct RegisteredBody<'a> {
    registered: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
}

#[derive(Serialize)]
struct DeliveredAckedBody<'a> {
    delivered: usize,
    acked: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    devices: Option<&'a Summaries>,
}

#[derive(Serialize)]
struct ListeningBody {
    listening: bool,
}

#[derive(Serialize)]
struct DeliveredDevicesBody<'a> {
    delivered: usize,
    #[serde(flatten)]
    devices: &'a Summaries,
}

#[derive(Serialize)]
struct SubscribedBody<'a> {
    subscribed: usize,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    refused: &'a BTreeMap<&'static str, usize>,
}

#[derive(Serialize)]
struct UnsubscribedBody {
    unsubscribed: usize,
}

#[derive(Serialize)]
struct ChannelsBody<'a> {
    channels: Vec<ChannelEntry<'a>>,
}

#[derive(Serialize)]
struct ChannelEntry<'a> {
    ch: &'a str,
    connections: usize,
}

#[derive(Serialize)]
struct MembersBody<'a> {
    uids: Vec<&'a str>,
    connections: usize,
}

#[derive(Serialize)]
struct RemovedBody {
    removed: usize,
}

#[derive(Serialize)]
struct VapidKeyBody<'a> {
    key: &'a str,
}

#[derive(Serialize)]
struct DevicesBody<'a> {
    apns: Vec<&'a str>,
    fcm: Vec<&'a str>,
    webpush: Vec<&'a Subscription>,
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

/// Appends the reply line, newline included, to `out`.
pub fn write_reply(out: &mut Vec<u8>, id: Option<&RawValue>, reply: &Reply) {
    fn put<B: Serialize>(out: &mut Vec<u8>, ok: bool, id: Option<&RawValue>, body: B) {
        // Serializing into a Vec fails only on a non-string map key; ours have none.
        serde_json::to_writer(&mut *out, &Envelope { ok, id, body })
            .expect("reply types always serialize");
    }
    match reply {
        Reply::Legacy(true) => out.extend_from_slice(b"ok"),
        Reply::Legacy(false) => out.extend_from_slice(b"fail"),
        Reply::Delivered(delivered) => put(
            out,
            true,
            id,
            DeliveredBody {
                delivered: *delivered,
            },
        ),
        Reply::Online(connections) => put(
            out,
            true,
            id,
            OnlineBody {
                online: *connections > 0,
                connections: *connections,
            },
        ),
        Reply::OnlineMany(results) => put(out, true, id, ManyBody { results }),
        Reply::Kicked(kicked) => put(out, true, id, KickedBody { kicked: *kicked }),
        Reply::Stats(stats) => put(out, true, id, &**stats),
        Reply::Registered(registered) => {
            let (registered, from) = match registered {
                Registered::New => ("new", None),
                Registered::Unchanged => ("unchanged", None),
                Registered::Moved { from } => ("moved", Some(from.as_str())),
            };
            put(out, true, id, RegisteredBody { registered, from })
        }
        Reply::Removed(removed) => put(out, true, id, RemovedBody { removed: *removed }),
        Reply::Subscribed(subscribed, refused) => put(
            out,
            true,
            id,
            SubscribedBody {
                subscribed: *subscribed,
                refused,
            },
        ),
        Reply::Unsubscribed(n) => put(out, true, id, UnsubscribedBody { unsubscribed: *n }),
        Reply::Channels(list) => put(
            out,
            true,
            id,
            ChannelsBody {
                channels: list
                    .iter()
                    .map(|(ch, connections)| ChannelEntry {
                        ch,
                        connections: *connections,
                    })
                    .collect(),
            },
        ),
        Reply::Members(uids, connections) => put(
            out,
            true,
            id,
            MembersBody {
                uids: uids.iter().map(|u| &**u).collect(),
                connections: *connections,
            },
        ),
        Reply::DeliveredAcked(delivered, acked, devices) => put(
            out,
            true,
            id,
            DeliveredAckedBody {
                delivered: *delivered,
                acked: *acked,
                devices: devices.as_ref(),
            },
        ),
        Reply::Listening => put(out, true, id, ListeningBody { listening: true }),
        Reply::DeliveredDevices(delivered, devices) => put(
            out,
            true,
            id,
            DeliveredDevicesBody {
                delivered: *delivered,
                devices,
            },
        ),
        Reply::VapidKey(key) => put(out, true, id, VapidKeyBody { key }),
        Reply::Devices(devices) => {
            let mut body = DevicesBody {
                apns: Vec::new(),
                fcm: Vec::new(),
                webpush: Vec::new(),
            };
            for device in devices {
                match device {
                    Device::Apns(token) => body.apns.push(token.as_str()),
                    Device::Fcm(token) => body.fcm.push(token.as_str()),
                    Device::WebPush(subscription) => body.webpush.push(subscription),
                }
            }
            put(out, true, id, body)
        }
        Reply::Nodes(nodes) => put(out, true, id, NodesBody { nodes }),
        Reply::Unconfirmed(inner) => {
            let start = out.len();
            write_reply(out, id, inner);
            // Every reply a cluster gathers is one JSON object on one line:
            // the flag goes in before its closing brace.
            if out[start..].ends_with(b"}\n") {
                out.truncate(out.len() - 2);
                out.extend_from_slice(b",\"unconfirmed\":true}");
            } else {
                out.pop();
            }
        }
        Reply::Error(e) => put(
            out,
            false,
            id,
            ErrorBody {
                error: e.to_string(),
            },
        ),
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Result<Command<'_>, RequestError> {
        match parse_request(line.as_bytes()) {
            Request::Command { command, .. } => command,
            other => panic!("not a command: {other:?}"),
        }
    }

    fn legacy(line: &str) -> Result<String, RequestError> {
        match parse_request(line.as_bytes()) {
            Request::Legacy { uid, line: echoed } => {
                assert_eq!(echoed, line);
                Ok(uid.into_owned())
            }
            Request::LegacyInvalid(e) => Err(e),
            other => panic!("not the original form: {other:?}"),
        }
    }

    fn invalid(line: &[u8]) -> RequestError {
        match parse_request(line) {
            Request::Invalid(e) => e,
            other => panic!("not invalid: {other:?}"),
        }
    }

    fn reply(id: Option<&str>, r: Reply) -> String {
        let raw = id.map(|id| serde_json::from_str::<&RawValue>(id).unwrap());
        let mut out = Vec::new();
        write_reply(&mut out, raw, &r);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn splits_lines() {
        assert_eq!(split_line(b"abc\ndef", 10), Ok(Some((&b"abc"[..], 4))));
        assert_eq!(split_line(b"abc\r\n", 10), Ok(Some((&b"abc"[..], 5))));
        assert_eq!(split_line(b"abc\r\r\n", 10), Ok(Some((&b"abc"[..], 6))));
        assert_eq!(split_line(b"a\rb\n", 10), Ok(Some((&b"a\rb"[..], 4))));
        assert_eq!(split_line(b"\r\n", 10), Ok(Some((&b""[..], 2))));
        assert_eq!(split_line(b"\n", 10), Ok(Some((&b""[..], 1))));
        assert_eq!(split_line(b"abc", 10), Ok(None));
        assert_eq!(split_line(b"", 10), Ok(None));
        assert_eq!(
            split_line(b"0123456789\n", 10),
            Ok(Some((&b"0123456789"[..], 11)))
        );
        assert_eq!(
            split_line(b"0123456789\r\n", 10),
            Ok(Some((&b"0123456789"[..], 12)))
        );
        assert_eq!(
            split_line(b"0123456789A\n", 10),
            Err(LineTooLong { max_len: 10 })
        );
        assert_eq!(
            split_line(b"0123456789AB", 10),
            Err(LineTooLong { max_len: 10 })
        );
        assert_eq!(split_line(b"0123456789A", 10), Ok(None));
    }

    #[test]
    fn legacy_form() {
        assert_eq!(
            legacy(r#"{"uid":"uid1","percent":"88%"}"#),
            Ok("uid1".into())
        );
        assert_eq!(legacy(r#"{"uid":42,"x":1}"#), Ok("42".into()));
        assert_eq!(legacy(r#"{"uid":"caf\u00e9"}"#), Ok("café".into()));
        assert!(legacy(r#"{"uid":true}"#).is_err());
        assert!(legacy(r#"{"uid":null}"#).is_err());
        assert!(matches!(
            parse_request(br#"{"cmd":null}"#),
            Request::Command {
                command: Err(_),
                ..
            }
        ));
        assert_eq!(
            legacy(r#"{"percent":"1"}"#),
            Err(RequestError::MissingField("uid"))
        );
    }

    /// A command's data as the parser makes it from `json`.
    fn data(json: &str) -> Data<'_> {
        let line = format!(r#"{{"data":{json}}}"#);
        let fields: Fields = serde_json::from_str(&line).unwrap();
        let data = super::data(&fields).unwrap();
        Data {
            text: Cow::Owned(data.text.into_owned()),
            json: Box::leak(data.json.to_owned()),
        }
    }

    #[test]
    fn pushes_with_parts_for_each_platform() {
        let line = r#"{"cmd":"push","uid":"u","data":{"n":1},"fcm":{"notification":{"title":"Hi"}},"fcm_when":"always","webpush":{"data":{"title":"Hi"},"ttl":60,"urgency":"high","topic":"t-1"}}"#;
        let Ok(Command::Push { devices, .. }) = cmd(line) else {
            panic!("{line}");
        };
        let fcm = devices.fcm.unwrap();
        assert_eq!(fcm.message, r#"{"notification":{"title":"Hi"}}"#);
        assert_eq!(fcm.when, When::Always);
        let webpush = devices.webpush.unwrap();
        assert_eq!(webpush.data, r#"{"title":"Hi"}"#);
        assert_eq!(
            (webpush.ttl, webpush.urgency, webpush.topic.as_deref()),
            (60, Some(Urgency::High), Some("t-1"))
        );
        assert_eq!(webpush.when, When::Offline);
        // Without its own `data`, the push's; a string is its text.
        let line = r#"{"cmd":"push","uid":"u","data":"hello","webpush":{}}"#;
        let Ok(Command::Push { devices, .. }) = cmd(line) else {
            panic!("{line}");
        };
        let webpush = devices.webpush.unwrap();
        assert_eq!(
            (webpush.data.as_ref(), webpush.ttl),
            ("hello", DEFAULT_WEBPUSH_TTL)
        );
        // With `ack_timeout`, every part goes once unacknowledged.
        let line = r#"{"cmd":"push","uid":"u","data":1,"fcm":{},"webpush":{},"ack_timeout":"1s"}"#;
        let Ok(Command::Push { devices, .. }) = cmd(line) else {
            panic!("{line}");
        };
        assert!(devices.whens().all(|w| w == When::Unacked));
        for bad in [
            r#"{"cmd":"push","uid":"u","data":1,"fcm":{},"fcm_when":"unacked"}"#,
            r#"{"cmd":"push","uid":"u","data":1,"webpush":{},"webpush_when":"always","ack_timeout":"1s"}"#,
        ] {
            assert_eq!(cmd(bad), Err(RequestError::AckAndWhen), "{bad}");
        }
    }

    #[test]
    fn commands() {
        assert_eq!(
            cmd(r#"{"cmd":"push","uid":"u1","data":"hi \"you\""}"#),
            Ok(Command::Push {
                to: Targets::One("u1".into()),
                data: data(r#""hi \"you\"""#),
                devices: DevicePush::default(),
                ack_timeout: None,
            })
        );
        assert_eq!(
            cmd(r#"{"cmd":"push","uids":["u1",2],"data":{"a": [1, 2]}}"#),
            Ok(Command::Push {
                to: Targets::Many(vec!["u1".into(), "2".into()]),
                data: data(r#"{"a": [1, 2]}"#),
                devices: DevicePush::default(),
                ack_timeout: None,
            })
        );
        match cmd(
            r#"{"cmd":"push","uid":"u","data":1,"apns":{"aps":{"alert":"Hi"}},"apns_when":"always","apns_push_type":"background","apns_priority":5,"apns_expiration":1800000000,"apns_collapse_id":"c1"}"#,
        ) {
            Ok(Command::Push { devices, .. }) => {
                let apns = devices.apns.unwrap();
                assert_eq!(apns.payload, r#"{"aps":{"alert":"Hi"}}"#);
                assert_eq!(apns.when, When::Always);
                assert_eq!(apns.push_type, PushType::Background);
                assert_eq!(apns.priority, Priority::Conserve);
                assert_eq!(apns.expiration, 1_800_000_000);
                assert_eq!(apns.collapse_id.as_deref(), Some("c1"));
            }
            other => panic!("{other:?}"),
        }
        for (bad, field) in [
            (r#""apns":"hi""#, "apns"),
            (r#""apns":{},"apns_when":"sometimes""#, "apns_when"),
            (
                r#""apns":{},"apns_push_type":"telepathy""#,
                "apns_push_type",
            ),
            (r#""apns":{},"apns_priority":7"#, "apns_priority"),
            (r#""apns":{},"apns_expiration":-1"#, "apns_expiration"),
            (r#""fcm":"token""#, "fcm"),
            (r#""fcm":{"token":"t","data":{}}"#, "fcm"),
            (r#""fcm":{"topic":"news"}"#, "fcm"),
            (r#""fcm":{},"fcm_when":"later""#, "fcm_when"),
            (r#""webpush":"hi""#, "webpush"),
            (r#""webpush":{"ttl":-1}"#, "webpush.ttl"),
            (r#""webpush":{"ttl":2419201}"#, "webpush.ttl"),
            (r#""webpush":{"urgency":"now"}"#, "webpush.urgency"),
            (r#""webpush":{"topic":"a b"}"#, "webpush.topic"),
            (
                r#""webpush":{"topic":"123456789012345678901234567890123"}"#,
                "webpush.topic",
            ),
            (r#""webpush":{},"webpush_when":1"#, "webpush_when"),
        ] {
            let line = format!(r#"{{"cmd":"push","uid":"u","data":1,{bad}}}"#);
            match cmd(&line) {
                Err(RequestError::WrongType { field: f, .. }) => assert_eq!(f, field, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        assert_eq!(
            cmd(r#"{"cmd":"broadcast","data":7}"#),
            Ok(Command::Broadcast { data: data("7") })
        );
        assert_eq!(
            cmd(r#"{"cmd":"online","uids":[]}"#),
            Ok(Command::Online {
                who: Targets::Many(vec![])
            })
        );
        assert_eq!(
            cmd(r#"{"cmd":"kick","uid":"u9"}"#),
            Ok(Command::Kick {
                who: Targets::One("u9".into())
            })
        );
        assert_eq!(
            cmd(r#"{"cmd":"stats","extra":[1]}"#),
            Ok(Command::Stats { cluster: false })
        );
        assert_eq!(
            cmd(r#"{"cmd":"stats","cluster":true}"#),
            Ok(Command::Stats { cluster: true })
        );
        assert!(cmd(r#"{"cmd":"stats","cluster":1}"#).is_err());
        assert_eq!(
            cmd(r#"{"cmd":"broadcast","data":null}"#),
            Ok(Command::Broadcast { data: data("null") })
        );
        match parse_request(br#"{"cmd":"stats","id":null}"#) {
            Request::Command { id, .. } => assert_eq!(id.unwrap().get(), "null"),
            other => panic!("{other:?}"),
        }
        match parse_request(br#"{"cmd":"stats","id":{"n":1}}"#) {
            Request::Command { id, .. } => assert_eq!(id.unwrap().get(), r#"{"n":1}"#),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_commands_say_why() {
        assert_eq!(
            cmd(r#"{"cmd":"explode"}"#),
            Err(RequestError::UnknownCmd("explode".into()))
        );
        assert!(matches!(
            cmd(r#"{"cmd":5}"#),
            Err(RequestError::WrongType { field: "cmd", .. })
        ));
        assert_eq!(
            cmd(r#"{"cmd":"push","uid":"u"}"#),
            Err(RequestError::MissingField("data"))
        );
        assert_eq!(
            cmd(r#"{"cmd":"push","data":1}"#),
            Err(RequestError::MissingField("uid"))
        );
        assert_eq!(
            cmd(r#"{"cmd":"push","uid":"a","uids":["b"],"data":1}"#),
            Err(RequestError::UidAndUids)
        );
        assert!(matches!(
            cmd(r#"{"cmd":"push","uid":[1],"data":1}"#),
            Err(RequestError::WrongType { field: "uid", .. })
        ));
        assert!(matches!(
            cmd(r#"{"cmd":"online","uids":"u1"}"#),
            Err(RequestError::WrongType { field: "uids", .. })
        ));
        assert!(matches!(
            cmd(r#"{"cmd":"online","uids":[{}]}"#),
            Err(RequestError::WrongType { field: "uids", .. })
        ));
    }

    #[test]
    fn bad_lines_say_why() {
        assert_eq!(invalid(b""), RequestError::Empty);
        assert_eq!(invalid(b"  \t"), RequestError::Empty);
        assert_eq!(invalid(b"\xff\xfe{}"), RequestError::NotUtf8);
        assert_eq!(invalid(b"[1,2]"), RequestError::NotAnObject);
        assert_eq!(invalid(b"\"u1\""), RequestError::NotAnObject);
        for garbage in [
            "{",
            "{\"uid\":",
            "hello",
            "{\"uid\":\"a\"} trailing",
            "{\"uid\":\"a\",\"uid\":\"b\"}",
        ] {
            assert!(
                matches!(invalid(garbage.as_bytes()), RequestError::InvalidJson(_)),
                "{garbage}"
            );
        }
    }

    #[test]
    fn replies() {
        assert_eq!(reply(None, Reply::Legacy(true)), "ok\n");
        assert_eq!(reply(None, Reply::Legacy(false)), "fail\n");
        assert_eq!(
            reply(None, Reply::Delivered(3)),
            "{\"ok\":true,\"delivered\":3}\n"
        );
        assert_eq!(
            reply(Some("\"a-1\""), Reply::Delivered(0)),
            "{\"ok\":true,\"id\":\"a-1\",\"delivered\":0}\n"
        );
        assert_eq!(
            reply(None, Reply::Online(2)),
            "{\"ok\":true,\"online\":true,\"connections\":2}\n"
        );
        assert_eq!(
            reply(
                Some("7"),
                Reply::OnlineMany(vec![Presence {
                    uid: "u".into(),
                    online: false,
                    connections: 0
                }])
            ),
            "{\"ok\":true,\"id\":7,\"results\":[{\"uid\":\"u\",\"online\":false,\"connections\":0}]}\n"
        );
        assert_eq!(
            reply(None, Reply::Kicked(1)),
            "{\"ok\":true,\"kicked\":1}\n"
        );
        let err = reply(
            Some("1"),
            Reply::Error(RequestError::UnknownCmd("x\"y".into())),
        );
        let v: serde_json::Value = serde_json::from_str(&err).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["id"], 1);
        assert!(v["error"].as_str().unwrap().contains("x\"y"));
    }
}
