//! The text-port commands: push, broadcast, publish, subscribe, unsubscribe,
//! channels, members, online, kick and stats. Each one's
//! request is a serde type, sent through [`client::exchange`]; its reply is
//! read back with serde into the lines to print (or the line as it came, with
//! `--json`) and whether the command failed.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::args::{self, TextPort};
use super::client;
use super::{Failure, Outcome};

/// A command as the text port reads it: `{"cmd":"push","uid":...}`.
#[derive(Serialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
enum Request<'a> {
    Push { uid: &'a str, data: &'a RawValue },
    Broadcast { data: &'a RawValue },
    Online(Targets<'a>),
    Kick { uid: &'a str },
    Publish { ch: &'a str, data: &'a RawValue },
    Subscribe { uid: &'a str, chs: &'a [String] },
    Unsubscribe { uid: &'a str, chs: &'a [String] },
    Channels { prefix: &'a str },
    Members { ch: &'a str },
    Stats,
}

/// `uid` for one, `uids` for several: the reply to `online` then has one
/// flat answer, or one per uid.
#[derive(Serialize)]
enum Targets<'a> {
    #[serde(rename = "uid")]
    One(&'a str),
    #[serde(rename = "uids")]
    Many(&'a [String]),
}

/// What every command's reply says first.
#[derive(Deserialize)]
struct Status {
    ok: bool,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delivered {
    delivered: u64,
}

#[derive(Deserialize)]
struct Presence {
    online: bool,
    connections: u64,
}

#[derive(Deserialize)]
struct PresenceMany {
    results: Vec<UidPresence>,
}

#[derive(Deserialize)]
struct UidPresence {
    uid: String,
    online: bool,
    connections: u64,
}

#[derive(Deserialize)]
struct Kicked {
    kicked: u64,
}

#[derive(Deserialize)]
struct Subscribed {
    subscribed: u64,
}

#[derive(Deserialize)]
struct Unsubscribed {
    unsubscribed: u64,
}

#[derive(Deserialize)]
struct ChannelList {
    channels: Vec<ChannelEntry>,
}

#[derive(Deserialize)]
struct ChannelEntry {
    ch: String,
    connections: u64,
}

#[derive(Deserialize)]
struct MemberList {
    uids: Vec<String>,
    connections: u64,
}

/// The `stats` figures printed without `--json`: the connection counts and
/// the flat counters, by their names in the reply. The rest (counts by
/// reason, APNs) is in `--json`.
#[derive(Deserialize)]
struct StatsReply {
    connections: u64,
    authenticated: u64,
    uids: u64,
    channels: u64,
    subscriptions: u64,
    pushes: u64,
    broadcasts: u64,
    publications: u64,
    delivered: u64,
    dropped: u64,
    rejected: u64,
    rejected_per_ip: u64,
    rejected_origin: u64,
    auth_failures: u64,
    handshakes: u64,
    kicked: u64,
    idle_closed: u64,
    uptime_secs: u64,
    rss_bytes: u64,
}

pub fn push(command: &args::Push) -> Outcome {
    let port = command.text_port();
    match (&command.raw, command.args.as_slice()) {
        (Some(line), []) => raw(port, line),
        (Some(_), _) => Outcome::failed(Failure::Usage(
            "--raw sends LINE as it is: give no UID or DATA with it".to_string(),
        )),
        (None, [uid, data]) => {
            let data = json_or_string(data);
            port.ask(&Request::Push { uid, data: &data }, |reply: Delivered| {
                Outcome::with(
                    vec![delivered(reply.delivered)],
                    (reply.delivered == 0)
                        .then(|| Failure::Answer(format!("{uid} is offline: nobody took it"))),
                )
            })
        }
        (None, []) => usage("give UID and DATA, or --raw LINE"),
        (None, [_]) => usage("give DATA after the uid"),
        (None, _) => usage("push takes UID and DATA only: quote DATA if it has spaces"),
    }
}

pub fn broadcast(command: &args::Broadcast) -> Outcome {
    let data = json_or_string(&command.data);
    command
        .text_port()
        .ask(&Request::Broadcast { data: &data }, |reply: Delivered| {
            Outcome::with(
                vec![delivered(reply.delivered)],
                (reply.delivered == 0).then(|| {
                    Failure::Answer("nobody took it: no connection is authenticated".to_string())
                }),
            )
        })
}

pub fn online(command: &args::Online) -> Outcome {
    let port = command.text_port();
    match command.uids.as_slice() {
        [] => usage("give one uid or more"),
        [uid] => port.ask(&Request::Online(Targets::One(uid)), |reply: Presence| {
            Outcome::with(
                vec![presence(uid, reply.online, reply.connections)],
                (!reply.online).then(|| Failure::Answer(format!("{uid} is offline"))),
            )
        }),
        uids => port.ask(
            &Request::Online(Targets::Many(uids)),
            |reply: PresenceMany| {
                let lines = reply
                    .results
                    .iter()
                    .map(|r| presence(&r.uid, r.online, r.connections))
                    .collect();
                let offline: Vec<&str> = reply
                    .results
                    .iter()
                    .filter(|r| !r.online)
                    .map(|r| r.uid.as_str())
                    .collect();
                let failure = (!offline.is_empty()).then(|| {
                    Failure::Answer(format!(
                        "{} of {} uids offline: {}",
                        offline.len(),
                        reply.results.len(),
                        offline.join(", ")
                    ))
                });
                Outcome::with(lines, failure)
            },
        ),
    }
}

pub fn kick(command: &args::Kick) -> Outcome {
    let uid = command.uid.as_str();
    command
        .text_port()
        .ask(&Request::Kick { uid }, |reply: Kicked| {
            Outcome::with(
                vec![format!("kicked {}", connections(reply.kicked))],
                (reply.kicked == 0)
                    .then(|| Failure::Answer(format!("{uid} is offline: nobody to kick"))),
            )
        })
}

pub fn publish(command: &args::Publish) -> Outcome {
    let data = json_or_string(&command.data);
    let ch = command.ch.as_str();
    command
        .text_port()
        .ask(&Request::Publish { ch, data: &data }, |reply: Delivered| {
            Outcome::with(
                vec![delivered(reply.delivered)],
                (reply.delivered == 0)
                    .then(|| Failure::Answer(format!("nobody took it: {ch} has no subscriber"))),
            )
        })
}

/// `subscribe` (`join`) or `unsubscribe`: the uid, then its channels.
pub fn subscribe(port: TextPort, args: &[String], join: bool) -> Outcome {
    let Some((uid, chs)) = args.split_first().filter(|(_, chs)| !chs.is_empty()) else {
        return usage("give the uid, then one channel or more");
    };
    let none = |what: &str| Failure::Answer(format!("no connection of {uid} was {what}"));
    if join {
        port.ask(&Request::Subscribe { uid, chs }, |reply: Subscribed| {
            Outcome::with(
                vec![format!("subscribed {}", connections(reply.subscribed))],
                (reply.subscribed == 0).then(|| none("newly subscribed")),
            )
        })
    } else {
        port.ask(&Request::Unsubscribe { uid, chs }, |reply: Unsubscribed| {
            Outcome::with(
                vec![format!("unsubscribed {}", connections(reply.unsubscribed))],
                (reply.unsubscribed == 0).then(|| none("subscribed")),
            )
        })
    }
}

pub fn channels(command: &args::Channels) -> Outcome {
    let prefix = command.prefix.as_str();
    command
        .text_port()
        .ask(&Request::Channels { prefix }, |reply: ChannelList| {
            let lines = reply
                .channels
                .iter()
                .map(|c| format!("{}: {}", c.ch, connections(c.connections)))
                .collect();
            Outcome::with(lines, None)
        })
}

pub fn members(command: &args::Members) -> Outcome {
    let ch = command.ch.as_str();
    command
        .text_port()
        .ask(&Request::Members { ch }, |reply: MemberList| {
            let mut lines = vec![format!("{ch}: {}", connections(reply.connections))];
            lines.extend(reply.uids);
            Outcome::with(
                lines,
                (reply.connections == 0)
                    .then(|| Failure::Answer(format!("{ch} has no subscriber"))),
            )
        })
}

pub fn stats(command: &args::Stats) -> Outcome {
    command.text_port().ask(&Request::Stats, |s: StatsReply| {
        let figures = [
            ("connections", s.connections),
            ("authenticated", s.authenticated),
            ("uids", s.uids),
            ("channels", s.channels),
            ("subscriptions", s.subscriptions),
            ("pushes", s.pushes),
            ("broadcasts", s.broadcasts),
            ("publications", s.publications),
            ("delivered", s.delivered),
            ("dropped", s.dropped),
            ("rejected", s.rejected),
            ("rejected_per_ip", s.rejected_per_ip),
            ("rejected_origin", s.rejected_origin),
            ("auth_failures", s.auth_failures),
            ("handshakes", s.handshakes),
            ("kicked", s.kicked),
            ("idle_closed", s.idle_closed),
            ("uptime_secs", s.uptime_secs),
            ("rss_bytes", s.rss_bytes),
        ];
        Outcome::with(
            figures
                .iter()
                .map(|(name, value)| format!("{name:<16}{value}"))
                .collect(),
            None,
        )
    })
}

/// `push --raw`: the line goes out as it is, and its reply is printed as it
/// came, since a raw line may be any request.
fn raw(port: TextPort, line: &str) -> Outcome {
    if line.contains(['\n', '\r']) {
        return usage("--raw takes one line: LINE has a line break");
    }
    let reply = match port.exchange(line.as_bytes()) {
        Ok(reply) => reply,
        Err(failure) => return Outcome::failed(failure),
    };
    let failure = match reply.as_str() {
        "ok" => None,
        "fail" => Some(Failure::Answer(
            "the hub answered fail: the uid is offline, or the line names no uid".to_string(),
        )),
        json => match serde_json::from_str::<Status>(json) {
            Ok(Status { ok: true, .. }) => None,
            Ok(Status { ok: false, error }) => Some(refused(error)),
            Err(_) => Some(unexpected(json)),
        },
    };
    Outcome::with(vec![reply], failure)
}

impl TextPort {
    /// Sends `request`, reads the reply's body as `B` once it says
    /// `"ok":true`, and lets `read` turn that into lines and a verdict. With
    /// `--json` the reply line itself is printed instead of those lines.
    fn ask<B: DeserializeOwned>(
        self,
        request: &Request,
        read: impl FnOnce(B) -> Outcome,
    ) -> Outcome {
        let line = serde_json::to_vec(request).expect("requests always serialize");
        let reply = match self.exchange(&line) {
            Ok(reply) => reply,
            Err(failure) => return Outcome::failed(failure),
        };
        let outcome = match body::<B>(&reply) {
            Ok(body) => read(body),
            Err(failure) => Outcome::failed(failure),
        };
        if self.json {
            Outcome::with(vec![reply], outcome.failure)
        } else {
            outcome
        }
    }

    /// One request line out, its reply line back, as text.
    fn exchange(self, request: &[u8]) -> Result<String, Failure> {
        let reply = client::exchange(self.addr, request, self.timeout)
            .map_err(|e| Failure::Connection(e.to_string()))?;
        String::from_utf8(reply).map_err(|e| unexpected(&String::from_utf8_lossy(e.as_bytes())))
    }
}

/// A command reply's body, or why there is none: an error reply (exit 1), or
/// a line that is not a reply to this command (exit 2).
fn body<B: DeserializeOwned>(reply: &str) -> Result<B, Failure> {
    let status: Status = serde_json::from_str(reply).map_err(|_| unexpected(reply))?;
    if !status.ok {
        return Err(refused(status.error));
    }
    serde_json::from_str(reply).map_err(|_| unexpected(reply))
}

/// DATA as the request's `data`: the argument itself when it is JSON (so
/// `{"a": [1, 2]}` reaches clients exactly as written), a JSON string of it
/// otherwise.
fn json_or_string(arg: &str) -> Box<RawValue> {
    match serde_json::from_str::<&RawValue>(arg) {
        // In JSON, a line break can only be spacing between tokens: as a
        // space it cannot split the request line, and the value is the same.
        Ok(_) => RawValue::from_string(arg.replace(['\n', '\r'], " "))
            .expect("JSON with spaces for its line breaks is the same JSON"),
        Err(_) => serde_json::value::to_raw_value(arg).expect("a string always serializes"),
    }
}

fn usage(message: &str) -> Outcome {
    Outcome::failed(Failure::Usage(message.to_string()))
}

fn refused(error: Option<String>) -> Failure {
    Failure::Answer(format!(
        "the hub answered an error: {}",
        error.as_deref().unwrap_or("(no error text)")
    ))
}

fn unexpected(reply: &str) -> Failure {
    const SHOWN: usize = 200;
    let shown: String = reply.chars().take(SHOWN).collect();
    let more = if shown.len() < reply.len() { "..." } else { "" };
    Failure::Connection(format!(
        "the reply is not what a pushhub text port answers: {shown:?}{more}"
    ))
}

fn connections(n: u64) -> String {
    match n {
        1 => "1 connection".to_string(),
        n => format!("{n} connections"),
    }
}

fn delivered(n: u64) -> String {
    format!("delivered to {}", connections(n))
}

fn presence(uid: &str, online: bool, n: u64) -> String {
    if online {
        format!("{uid}: online, {}", connections(n))
    } else {
        format!("{uid}: offline")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(request: &Request) -> String {
        serde_json::to_string(request).unwrap()
    }

    #[test]
    fn requests_are_the_text_ports_commands() {
        let data = json_or_string("hello");
        assert_eq!(
            line(&Request::Push {
                uid: "u\"1",
                data: &data
            }),
            r#"{"cmd":"push","uid":"u\"1","data":"hello"}"#
        );
        let data = json_or_string(r#"{"a": [1, 2]}"#);
        assert_eq!(
            line(&Request::Broadcast { data: &data }),
            r#"{"cmd":"broadcast","data":{"a": [1, 2]}}"#
        );
        assert_eq!(
            line(&Request::Online(Targets::One("u1"))),
            r#"{"cmd":"online","uid":"u1"}"#
        );
        let uids = ["u1".to_string(), "42".to_string()];
        assert_eq!(
            line(&Request::Online(Targets::Many(&uids))),
            r#"{"cmd":"online","uids":["u1","42"]}"#
        );
        assert_eq!(
            line(&Request::Kick { uid: "u1" }),
            r#"{"cmd":"kick","uid":"u1"}"#
        );
        assert_eq!(line(&Request::Stats), r#"{"cmd":"stats"}"#);
    }

    #[test]
    fn data_is_json_when_it_parses_and_a_string_otherwise() {
        for (arg, sent) in [
            ("hello", r#""hello""#),
            ("42", "42"),
            (r#""quoted""#, r#""quoted""#),
            ("null", "null"),
            ("", r#""""#),
            ("{oops", r#""{oops""#),
            ("two\nlines", r#""two\nlines""#),
            ("{\"a\":\n 1}", r#"{"a":  1}"#),
            ("\"a\nb\"", r#""\"a\nb\"""#),
        ] {
            assert_eq!(json_or_string(arg).get(), sent, "{arg:?}");
        }
    }

    #[test]
    fn replies_are_read_with_their_status_first() {
        let ok: Delivered = body(r#"{"ok":true,"id":1,"delivered":2}"#).unwrap();
        assert_eq!(ok.delivered, 2);
        let error = body::<Delivered>(r#"{"ok":false,"error":"missing field `data`"}"#);
        assert!(
            matches!(&error, Err(Failure::Answer(m)) if m.ends_with("missing field `data`")),
            "{error:?}"
        );
        for garbage in ["ok", "{}", r#"{"ok":true}"#, "hello"] {
            assert!(
                matches!(body::<Delivered>(garbage), Err(Failure::Connection(_))),
                "{garbage}"
            );
        }
    }
}
