//! The backend port: newline-delimited JSON requests, each answered by one line,
//! in order. `handle_line` is the whole request → hub → reply path with no I/O;
//! `serve` feeds it from a socket.

pub mod protocol;
pub mod replies;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashSet};
use std::net::TcpStream;
use std::rc::Rc;
use std::task::Poll;

use log::{debug, warn};
use serde_json::value::RawValue;
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::hub::{Fanout, Hub};
use crate::metrics::Counters;
use crate::push::apns::sender::Sender;
use crate::push::route::InFlight;
use crate::push::route::{ApnsPush, ApnsWhen};
use crate::push::{Registry, RegistryError};
use crate::shared::Shared;
use crate::ws::frame::Frame;
use crate::ws::v1;
use protocol::{
    Command, Data, Presence, Reply, Request, RequestError, Targets, parse_request, split_line,
    write_reply,
};
use replies::Replies;

/// Bytes read from a backend at a time; lines longer than this grow the buffer
/// up to `--max-line-length`.
const READ_CHUNK: usize = 64 * 1024;

/// Most requests handled before yielding to the connection tasks, so that a
/// pipelined burst to one uid is written out between turns instead of
/// overflowing that uid's queue.
const LINE_BUDGET: usize = 128;

/// What the text port may use besides the hub: the APNs registry and sender,
/// when configured.
#[derive(Clone, Copy, Default)]
pub struct Services<'s> {
    pub registry: Option<&'s Registry>,
    pub apns: Option<&'s Sender>,
}

/// Handles one request line and queues its reply in `replies`.
pub fn handle_line(hub: &mut Hub, services: Services, line: &[u8], replies: &mut Replies) {
    match parse_request(line) {
        Request::Legacy { uid, line } => {
            hub.counters.pushes += 1;
            // Offline uids, the common `fail`, cost no frame.
            let delivered = hub.is_online(&uid) && hub.push(&uid, &original(line)) > 0;
            write_reply(replies.ready(), None, &Reply::Legacy(delivered));
        }
        Request::LegacyInvalid(e) => {
            debug!("text port: answering fail: {e}");
            Counters::bump(&mut hub.counters.text_errors, e.kind());
            write_reply(replies.ready(), None, &Reply::Legacy(false));
        }
        Request::Invalid(e) => write_reply(replies.ready(), None, &refuse(hub, e)),
        Request::Command {
            id,
            command:
                Ok(Command::Push {
                    to,
                    data,
                    apns: Some(apns),
                }),
        } => match (services.registry, services.apns) {
            (Some(registry), Some(sender)) => {
                let (delivered, flight) = push_with_apns(hub, registry, sender, &to, &data, &apns);
                replies.wait(id, delivered, flight);
            }
            _ => write_reply(replies.ready(), id, &refuse(hub, RequestError::NoApns)),
        },
        Request::Command { id, command } => {
            let reply = match command.map(|command| execute(hub, services, command)) {
                Ok(Reply::Error(e)) | Err(e) => refuse(hub, e),
                Ok(reply) => reply,
            };
            write_reply(replies.ready(), id, &reply);
        }
    }
}

/// The error reply for `e`, counted by kind.
fn refuse<'a>(hub: &mut Hub, e: RequestError) -> Reply<'a> {
    Counters::bump(&mut hub.counters.text_errors, e.kind());
    Reply::Error(e)
}

/// A push that may also go to APNs: the WebSocket connections get it now; the
/// uids chosen by `apns_when` get a notification on each of their devices.
fn push_with_apns(
    hub: &mut Hub,
    registry: &Registry,
    sender: &Sender,
    to: &Targets,
    data: &Data,
    apns: &ApnsPush,
) -> (usize, InFlight) {
    hub.counters.pushes += 1;
    let message = to_uid(data);
    let mut delivered = 0;
    let mut to_apns = Vec::new();
    for uid in each_uid(to) {
        let online = hub.is_online(uid);
        delivered += hub.push(uid, &message);
        let wanted = match apns.when {
            ApnsWhen::Always => true,
            ApnsWhen::Offline => !online,
            ApnsWhen::Never => false,
        };
        if wanted {
            to_apns.push(uid);
        }
    }
    (delivered, InFlight::start(registry, sender, &to_apns, apns))
}

fn execute<'a>(hub: &mut Hub, services: Services, command: Command<'a>) -> Reply<'a> {
    let registry = services.registry;
    match command {
        Command::Register { uid, token } => with_registry(registry, |r| {
            r.register(&uid, &token).map(Reply::Registered)
        }),
        Command::Unregister { uid, token } => with_registry(registry, |r| {
            r.unregister(&uid, token.as_ref()).map(Reply::Removed)
        }),
        Command::Devices { uid } => {
            with_registry(registry, |r| r.devices(&uid).map(Reply::Devices))
        }
        Command::Push { to, data, .. } => {
            hub.counters.pushes += 1;
            let message = to_uid(&data);
            Reply::Delivered(each_uid(&to).map(|uid| hub.push(uid, &message)).sum())
        }
        Command::Broadcast { data } => {
            hub.counters.broadcasts += 1;
            let message = Fanout::new(|v1| match v1 {
                true => v1::msg_broadcast(data.json),
                false => Frame::text(&data.text),
            });
            Reply::Delivered(hub.broadcast(&message))
        }
        Command::Publish { chs, data } => {
            hub.counters.publications += 1;
            // Raw clients get the same frame from every channel; v1 clients
            // one per channel, which it names.
            let raw = OnceCell::new();
            let mut delivered = 0;
            for ch in distinct(&chs) {
                let message = Fanout::new(|v1| match v1 {
                    true => v1::msg_channel(ch, data.json),
                    false => raw.get_or_init(|| Frame::text(&data.text)).clone(),
                });
                delivered += hub.publish(ch, &message);
            }
            Reply::Delivered(delivered)
        }
        Command::Subscribe { who, chs } => {
            let (mut added, mut refused) = (0, BTreeMap::new());
            for ch in distinct(&chs) {
                let notice = v1::subbed(ch, None);
                for uid in each_uid(&who) {
                    let (n, errors) = hub.subscribe_uid(uid, ch, &notice);
                    added += n;
                    for e in errors {
                        Counters::bump(&mut hub.counters.channel_errors, e.kind());
                        *refused.entry(e.kind()).or_insert(0) += 1;
                    }
                }
            }
            Reply::Subscribed(added, refused)
        }
        Command::Unsubscribe { who, chs } => {
            let mut removed = 0;
            for ch in distinct(&chs) {
                let notice = v1::unsubbed(ch, None);
                for uid in each_uid(&who) {
                    removed += hub.unsubscribe_uid(uid, ch, &notice);
                }
            }
            Reply::Unsubscribed(removed)
        }
        Command::Channels { prefix } => Reply::Channels(hub.channel_list(&prefix)),
        Command::Members { ch } => {
            let (uids, connections) = hub.members(&ch);
            Reply::Members(uids, connections)
        }
        Command::Online {
            who: Targets::One(uid),
        } => Reply::Online(hub.connections_of(&uid)),
        Command::Online {
            who: Targets::Many(uids),
        } => Reply::OnlineMany(
            uids.into_iter()
                .map(|uid| {
                    let connections = hub.connections_of(&uid);
                    Presence {
                        uid,
                        online: connections > 0,
                        connections,
                    }
                })
                .collect(),
        ),
        Command::Kick { who } => Reply::Kicked(each_uid(&who).map(|uid| hub.kick(uid)).sum()),
        Command::Stats => {
            let mut stats = hub.stats();
            stats.apns = services.apns.map(Sender::stats);
            Reply::Stats(Box::new(stats))
        }
    }
}

/// The original form's line as a push: raw clients get the line as it was
/// sent; v1 clients get it as the `d` of a `msg`.
fn original(line: &str) -> Fanout<impl Fn(bool) -> Frame + '_> {
    Fanout::new(move |v1| match v1 {
        // The parser read `line` as one JSON object, so it is a JSON value.
        true => match RawValue::from_string(line.to_owned()) {
            Ok(json) => v1::msg(&json),
            Err(_) => Frame::text(line),
        },
        false => Frame::text(line),
    })
}

/// A command's data as a push to a uid.
fn to_uid<'d>(data: &'d Data) -> Fanout<impl Fn(bool) -> Frame + 'd> {
    Fanout::new(move |v1| match v1 {
        true => v1::msg(data.json),
        false => Frame::text(&data.text),
    })
}

/// The distinct names of a command (uids or channels), in order, so that a
/// name listed twice is served once.
fn distinct<'c>(names: &'c [Cow<'c, str>]) -> impl Iterator<Item = &'c str> {
    let mut seen = HashSet::new();
    names
        .iter()
        .map(|name| name.as_ref())
        .filter(move |name| names.len() == 1 || seen.insert(*name))
}

/// Runs a device command against the registry. Its reply is written only once
/// the change has committed, so an acknowledged registration is never lost.
fn with_registry<'a>(
    registry: Option<&Registry>,
    command: impl FnOnce(&Registry) -> Result<Reply<'a>, RegistryError>,
) -> Reply<'a> {
    let Some(registry) = registry else {
        return Reply::Error(RequestError::NoRegistry);
    };
    command(registry).unwrap_or_else(|e| {
        warn!("{e}");
        Reply::Error(RequestError::Registry(e.to_string()))
    })
}

/// The distinct uids of a command.
fn each_uid<'t>(targets: &'t Targets) -> impl Iterator<Item = &'t str> {
    distinct(targets.as_slice())
}

/// Serves one backend connection until it closes or sends an over-long line.
pub(crate) async fn serve(shared: Rc<Shared>, mut stream: Async<TcpStream>) {
    let max_len = shared.config.max_line_length;
    // Half the queue bound, so that one turn of pushes to one uid cannot fill it.
    let line_budget = (shared.config.max_queue_messages / 2).clamp(1, LINE_BUDGET);
    let services = Services {
        registry: shared.registry.as_deref(),
        apns: shared.apns.as_deref(),
    };
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut start, mut end) = (0, 0);
    let mut replies = Replies::default();
    let mut eof = false;
    loop {
        // Handle what is buffered, a budget at a time.
        let mut handled = 0;
        let mut too_long = None;
        {
            let mut hub = shared.hub.borrow_mut();
            while handled < line_budget {
                match split_line(&buf[start..end], max_len) {
                    Ok(Some((line, used))) => {
                        handle_line(&mut hub, services, line, &mut replies);
                        start += used;
                        handled += 1;
                    }
                    Ok(None) if eof && start < end => {
                        // A last request without its newline is still a request.
                        handle_line(&mut hub, services, &buf[start..end], &mut replies);
                        start = end;
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        too_long = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = too_long {
            debug!(
                "text port: closing a connection that sent a line over {} bytes",
                e.max_len
            );
            let reply = refuse(
                &mut shared.hub.borrow_mut(),
                RequestError::LineTooLong(e.max_len),
            );
            write_reply(replies.ready(), None, &reply);
        }
        let finished = too_long.is_some() || (eof && start == end);
        if finished {
            // Every request read gets its reply before the connection ends.
            std::future::poll_fn(|cx| replies.poll_settle(cx)).await;
        } else {
            let _ = std::future::poll_fn(|cx| Poll::Ready(replies.poll_settle(cx))).await;
        }
        let out = replies.output();
        if !out.is_empty() {
            if stream.write_all(out).await.is_err() {
                return;
            }
            out.clear();
            out.shrink_to(READ_CHUNK);
        }
        if finished {
            return;
        }
        // Let the connection tasks write what this turn queued before taking
        // more: a turn is at most one read or one line budget.
        smol::future::yield_now().await;
        if handled == line_budget {
            continue;
        }

        // Make room, then read more.
        if start == end {
            (start, end) = (0, 0);
            if buf.len() > READ_CHUNK {
                buf = vec![0u8; READ_CHUNK];
            }
        } else if end == buf.len() {
            if start > 0 {
                buf.copy_within(start..end, 0);
                (start, end) = (0, end - start);
            } else {
                // One partial line fills the buffer: grow it, up to the line limit
                // (split_line refuses the line beyond that).
                let grown = (buf.len() * 2)
                    .min(max_len.saturating_add(2))
                    .max(buf.len() + 1);
                buf.resize(grown, 0);
            }
        }
        // While a reply waits for APNs, its arrival is as good a reason to go
        // round again as new input. While too many wait, it is the only one:
        // the backend's requests stay in the socket.
        let full = replies.is_full();
        let read = async {
            if full {
                std::future::pending::<()>().await;
            }
            Some(stream.read(&mut buf[end..]).await)
        };
        let settled = async {
            if !replies.is_waiting() {
                std::future::pending::<()>().await;
            }
            std::future::poll_fn(|cx| replies.poll_settle(cx)).await;
            None
        };
        match smol::future::or(read, settled).await {
            None => {}
            Some(Ok(0)) => eof = true,
            Some(Ok(n)) => end += n,
            Some(Err(e)) => {
                debug!("text port: read failed: {e}");
                return;
            }
        }
    }
}
