//! The backend port: newline-delimited JSON requests, each answered by one line,
//! in order. `handle_line` is the whole request → hub → reply path with no I/O;
//! `serve` feeds it from a socket.

pub mod protocol;
pub mod replies;
pub mod routed;

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

use crate::cluster::Cluster;
use crate::hub::listeners::WireId;
use crate::hub::{Fanout, Hub, Pos, Target};
use crate::metrics::Counters;
use crate::push::Registry;
use crate::push::registry::{Answer, Op, RegistryError};
use crate::push::route::{DevicePush, InFlight, Senders};
use crate::shared::Shared;
use crate::ws::frame::Frame;
use crate::ws::v1;
use protocol::{
    Command, ConnData, Data, Presence, Reply, Request, RequestError, Targets, parse_request,
    split_line, write_reply,
};
use replies::{Fallback, Replies, Wait};
use std::time::Instant;

/// Bytes read from a backend at a time; lines longer than this grow the buffer
/// up to `--max-line-length`.
const READ_CHUNK: usize = 64 * 1024;

/// Most requests handled before yielding to the connection tasks, so that a
/// pipelined burst to one uid is written out between turns instead of
/// overflowing that uid's queue.
const LINE_BUDGET: usize = 128;

/// What the text port may use besides the hub: the APNs registry and sender,
/// and the cluster, when configured.
#[derive(Clone, Copy, Default)]
pub struct Services<'s> {
    pub registry: Option<&'s Registry>,
    pub senders: Senders<'s>,
    pub cluster: Option<&'s Cluster>,
    /// The VAPID public key, with `--vapid-key-file`.
    pub vapid_key: Option<&'s str>,
}

/// One backend connection's state: its replies in order, and whether it
/// listens for the clients' events (its key among the listeners).
#[derive(Default)]
pub struct Backend {
    pub replies: Replies,
    pub listening: Option<u32>,
}

/// Handles one request line and queues its reply in `backend.replies`.
pub fn handle_line(hub: &mut Hub, services: Services, line: &[u8], backend: &mut Backend) {
    let replies = &mut backend.replies;
    let mut request = parse_request(line);
    if let Some(cluster) = services.cluster {
        request = match routed::route(hub, cluster, services, line, request) {
            routed::Routed::Waiting(id, wait) => return replies.wait(id, 0, wait),
            routed::Routed::Refused(id, e) => {
                return write_reply(replies.ready(), id, &refuse(hub, e));
            }
            routed::Routed::Local(request) => request,
        };
    }
    match request {
        Request::Legacy { uid, line } => {
            hub.counters.pushes += 1;
            let delivered = hub.deliver(Target::Uid(&uid), |pos| original(line, pos));
            write_reply(replies.ready(), None, &Reply::Legacy(delivered > 0));
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
                Ok(
                    command @ (Command::Register { .. }
                    | Command::Unregister { .. }
                    | Command::Devices { .. }),
                ),
        } => match device_command(services.registry, command) {
            Some(Op::Pending(op)) => replies.wait(id, 0, Wait::Device(op)),
            Some(Op::Done(answer)) => {
                let reply = match device_reply(answer) {
                    Reply::Error(e) => refuse(hub, e),
                    reply => reply,
                };
                write_reply(replies.ready(), id, &reply);
            }
            None => write_reply(replies.ready(), id, &refuse(hub, RequestError::NoRegistry)),
        },
        Request::Command {
            id,
            command:
                Ok(Command::Push {
                    to,
                    data,
                    devices,
                    ack_timeout: Some(timeout),
                }),
        } => match push_awaiting_ack(hub, services, &to, &data, devices, timeout) {
            Ok((delivered, wait)) => replies.wait(id, delivered, wait),
            Err(e) => write_reply(replies.ready(), id, &refuse(hub, e)),
        },
        Request::Command {
            id,
            command:
                Ok(Command::Push {
                    to,
                    data,
                    devices,
                    ack_timeout: None,
                }),
        } if !devices.is_empty() => match (unavailable(services, &devices), services.registry) {
            (None, Some(registry)) => {
                let (delivered, flight) =
                    push_with_devices(hub, registry, services.senders, &to, &data, &devices);
                replies.wait(id, delivered, Wait::Devices(flight));
            }
            (e, _) => {
                let e = e.unwrap_or(RequestError::NoRegistry);
                write_reply(replies.ready(), id, &refuse(hub, e));
            }
        },
        Request::Command {
            id,
            command: Ok(Command::Listen { interests }),
        } => {
            match backend.listening {
                Some(key) => hub.listeners.set_interests(key, interests),
                None => backend.listening = Some(hub.listen(interests)),
            }
            write_reply(replies.ready(), id, &Reply::Listening);
        }
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

/// Pushes `data` to each uid of `to`, each as the next message of its own
/// stream; raw clients of every uid share one frame. Returns the
/// connections reached, and each uid with whether it was online.
fn push_each<'t>(hub: &mut Hub, to: &'t Targets, data: &Data) -> (usize, Vec<(&'t str, bool)>) {
    hub.counters.pushes += 1;
    let raw = OnceCell::new();
    let mut delivered = 0;
    let mut uids = Vec::new();
    for uid in each_uid(to) {
        let online = hub.is_online(uid);
        delivered += hub.deliver(Target::Uid(uid), |pos| to_uid(data, pos, &raw));
        uids.push((uid, online));
    }
    (delivered, uids)
}

/// Why a push's parts for devices cannot go out from this hub: a platform
/// it has no sender (or no registry) for.
pub fn unavailable(services: Services, push: &DevicePush) -> Option<RequestError> {
    let senders = services.senders;
    let registry = services.registry.is_some();
    if push.apns.is_some() && !(registry && senders.apns.is_some()) {
        return Some(RequestError::NoApns);
    }
    if push.fcm.is_some() && !(registry && senders.fcm.is_some()) {
        return Some(RequestError::NoFcm);
    }
    if push.webpush.is_some() && !(registry && senders.webpush.is_some()) {
        return Some(RequestError::NoWebPush);
    }
    None
}

/// A push that may also go to devices: the WebSocket connections get it
/// now; the uids chosen by each platform's `*_when` get a message on each
/// of their devices of that platform.
fn push_with_devices(
    hub: &mut Hub,
    registry: &Registry,
    senders: Senders,
    to: &Targets,
    data: &Data,
    devices: &DevicePush,
) -> (usize, InFlight) {
    let (delivered, uids) = push_each(hub, to, data);
    let chosen: Vec<_> = uids
        .into_iter()
        .map(|(uid, online)| (uid, devices.now(online)))
        .collect();
    (
        delivered,
        InFlight::start(registry, senders, &chosen, devices),
    )
}

/// A push whose reply waits until a connection of its uid acknowledges it,
/// or `timeout` passes; then, unacknowledged, its `apns` goes to the uid's
/// devices. A uid with no connection cannot acknowledge: APNs at once.
fn push_awaiting_ack(
    hub: &mut Hub,
    services: Services,
    to: &Targets,
    data: &Data,
    devices: DevicePush,
    timeout: std::time::Duration,
) -> Result<(usize, Wait), RequestError> {
    let Targets::One(uid) = to else {
        return Err(RequestError::AckOneUid);
    };
    if !hub.keeps_history(crate::hub::StreamKey::Uid(uid)) {
        return Err(RequestError::NoUidHistory);
    }
    if let Some(e) = unavailable(services, &devices) {
        return Err(e);
    }
    let fallback = Fallback::of(uid, &devices);
    hub.counters.pushes += 1;
    let raw = OnceCell::new();
    let (delivered, pos) = hub.deliver_at(Target::Uid(uid), |pos| to_uid(data, pos, &raw));
    let wait = match (delivered, pos) {
        (1.., Some(pos)) => {
            let deadline = Instant::now() + timeout;
            Wait::Ack {
                watch: hub.watch_ack(uid, pos),
                deadline,
                timer: smol::Timer::at(deadline),
                fallback,
            }
        }
        _ => {
            hub.counters.unacked_pushes += 1;
            Wait::Unacked(fallback.and_then(|f| f.start(services)))
        }
    };
    Ok((delivered, wait))
}

fn execute<'a>(hub: &mut Hub, services: Services, command: Command<'a>) -> Reply<'a> {
    match command {
        // Handled by `handle_line`, where the reply may wait for the
        // registry; a hub does not act on another's.
        Command::Register { .. } | Command::Unregister { .. } | Command::Devices { .. } => {
            Reply::Error(RequestError::NoRegistry)
        }
        Command::Push { to, data, .. } => Reply::Delivered(push_each(hub, &to, &data).0),
        Command::PushConn { conn, data, .. } => Reply::Delivered(push_conn(hub, conn, &data)),
        // Handled by `handle_line`, which owns the connection's state.
        Command::Listen { .. } => Reply::Listening,
        Command::Broadcast { data } => {
            hub.counters.broadcasts += 1;
            Reply::Delivered(hub.deliver(Target::All, |pos| broadcast_fanout(&data, pos)))
        }
        Command::Publish { chs, data } => {
            hub.counters.publications += 1;
            // Raw clients get the same frame from every channel; v1 clients
            // one per channel, which it names.
            let raw = OnceCell::new();
            let mut delivered = 0;
            for ch in distinct(&chs) {
                delivered += hub.deliver(Target::Channel(ch), |pos| {
                    channel_fanout(ch, &data, pos, &raw)
                });
            }
            Reply::Delivered(delivered)
        }
        Command::Subscribe { who, chs } => {
            let (mut added, mut refused) = (0, BTreeMap::new());
            for uid in each_uid(&who) {
                let (n, errors) = subscribe_uid(hub, uid, &chs);
                added += n;
                for (kind, n) in errors {
                    *refused.entry(kind).or_insert(0) += n;
                }
            }
            Reply::Subscribed(added, refused)
        }
        Command::Unsubscribe { who, chs } => Reply::Unsubscribed(
            each_uid(&who)
                .map(|uid| unsubscribe_uid(hub, uid, &chs))
                .sum(),
        ),
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
        Command::VapidKey => match services.vapid_key {
            Some(key) => Reply::VapidKey(key.to_string()),
            None => Reply::Error(RequestError::NoVapidKey),
        },
        Command::Kick { who } => Reply::Kicked(each_uid(&who).map(|uid| hub.kick(uid)).sum()),
        // `cluster` asks the other hubs too; a hub alone is the whole cluster.
        Command::Stats { .. } => {
            let mut stats = hub.stats();
            stats.apns = services.senders.apns.map(|s| s.stats());
            stats.fcm = services.senders.fcm.map(|s| s.stats());
            stats.webpush = services.senders.webpush.map(|s| s.stats());
            stats.cluster = services.cluster.map(Cluster::stats);
            Reply::Stats(Box::new(stats))
        }
    }
}

/// A push to one connection by its wire id: 1 if it took it.
fn push_conn(hub: &mut Hub, conn: WireId, data: &ConnData) -> usize {
    hub.counters.pushes += 1;
    let sent = hub.send_to(conn, |v1| match (data, v1) {
        (ConnData::Text(data), true) => v1::msg(data.json, None),
        (ConnData::Text(data), false) => Frame::text(&data.text),
        (ConnData::Binary(bytes), _) => Frame::binary(bytes),
    });
    usize::from(sent)
}

/// Subscribes every connection of `uid` to each of `chs`: how many were
/// newly subscribed, and the refusals by reason (counted).
fn subscribe_uid(
    hub: &mut Hub,
    uid: &str,
    chs: &[Cow<str>],
) -> (usize, BTreeMap<&'static str, usize>) {
    let (mut added, mut refused) = (0, BTreeMap::new());
    for ch in distinct(chs) {
        let pos = hub.position(crate::hub::StreamKey::Channel(ch));
        let notice = v1::subbed(ch, pos, None, None);
        let (n, errors) = hub.subscribe_uid(uid, ch, &notice);
        added += n;
        for e in errors {
            Counters::bump(&mut hub.counters.channel_errors, e.kind());
            *refused.entry(e.kind()).or_insert(0) += 1;
        }
    }
    (added, refused)
}

/// Unsubscribes every connection of `uid` from each of `chs`; how many.
fn unsubscribe_uid(hub: &mut Hub, uid: &str, chs: &[Cow<str>]) -> usize {
    distinct(chs)
        .map(|ch| hub.unsubscribe_uid(uid, ch, &v1::unsubbed(ch, None)))
        .sum()
}

/// A broadcast: `"all":true` for v1 clients, the data for raw ones.
fn broadcast_fanout<'d>(data: &'d Data, pos: Option<Pos>) -> Fanout<impl Fn(bool) -> Frame + 'd> {
    Fanout::new(move |v1| match v1 {
        true => v1::msg_broadcast(data.json, pos),
        false => Frame::text(&data.text),
    })
}

/// A publication to `ch`; the raw frame is `raw`'s, shared by every
/// channel of the command.
fn channel_fanout<'d>(
    ch: &'d str,
    data: &'d Data,
    pos: Option<Pos>,
    raw: &'d OnceCell<Frame>,
) -> Fanout<impl Fn(bool) -> Frame + 'd> {
    Fanout::new(move |v1| match v1 {
        true => v1::msg_channel(ch, data.json, pos),
        false => raw.get_or_init(|| Frame::text(&data.text)).clone(),
    })
}

/// The original form's line as a push: raw clients get the line as it was
/// sent; v1 clients get it as the `d` of a `msg`.
fn original(line: &str, pos: Option<Pos>) -> Fanout<impl Fn(bool) -> Frame + '_> {
    Fanout::new(move |v1| match v1 {
        // The parser read `line` as one JSON object, so it is a JSON value.
        true => match RawValue::from_string(line.to_owned()) {
            Ok(json) => v1::msg(&json, pos),
            Err(_) => Frame::text(line),
        },
        false => Frame::text(line),
    })
}

/// A command's data as a push to a uid; the raw frame is `raw`'s, shared
/// by every uid of the command.
fn to_uid<'d>(
    data: &'d Data,
    pos: Option<Pos>,
    raw: &'d OnceCell<Frame>,
) -> Fanout<impl Fn(bool) -> Frame + 'd> {
    Fanout::new(move |v1| match v1 {
        true => v1::msg(data.json, pos),
        false => raw.get_or_init(|| Frame::text(&data.text)).clone(),
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

/// Starts a device command on the registry; `None` without one. Its reply
/// is written only once the registry has the change (committed to the
/// file, or in Redis), so an acknowledged registration is not lost.
fn device_command(registry: Option<&Registry>, command: Command) -> Option<Op> {
    let registry = registry?;
    Some(match command {
        Command::Register { uid, device } => registry.register(&uid, &device),
        Command::Unregister { uid, device } => registry.unregister(&uid, device.as_ref()),
        Command::Devices { uid } => registry.devices(&[&uid]),
        // Only device commands come here.
        _ => Op::Done(Err(RegistryError::Malformed("not a device command".into()))),
    })
}

/// A device command's reply, from the registry's answer.
pub(crate) fn device_reply(answer: Result<Answer, RegistryError>) -> Reply<'static> {
    match answer {
        Ok(Answer::Registered(registered)) => Reply::Registered(registered),
        Ok(Answer::Removed(removed)) => Reply::Removed(removed),
        // One uid was asked.
        Ok(Answer::Devices(mut devices)) => Reply::Devices(devices.pop().unwrap_or_default()),
        Err(e) => {
            warn!("{e}");
            Reply::Error(RequestError::Registry(e.to_string()))
        }
    }
}

/// The distinct uids of a command.
fn each_uid<'t>(targets: &'t Targets) -> impl Iterator<Item = &'t str> {
    distinct(targets.as_slice())
}

/// Serves one backend connection until it closes or sends an over-long line;
/// a listener stops listening with it.
pub(crate) async fn serve(shared: Rc<Shared>, stream: Async<TcpStream>) {
    let mut backend = Backend::default();
    serve_lines(&shared, stream, &mut backend).await;
    if let Some(key) = backend.listening {
        shared.hub.borrow_mut().listeners.remove(key);
    }
}

async fn serve_lines(shared: &Shared, mut stream: Async<TcpStream>, backend: &mut Backend) {
    let max_len = shared.config.max_line_length;
    // Half the queue bound, so that one turn of pushes to one uid cannot fill it.
    let line_budget = (shared.config.max_queue_messages / 2).clamp(1, LINE_BUDGET);
    let services = Services {
        registry: shared.registry.as_deref(),
        senders: shared.senders(),
        cluster: shared.cluster.as_deref(),
        vapid_key: shared.config.vapid.as_ref().map(|v| v.public_key.as_str()),
    };
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut start, mut end) = (0, 0);
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
                        handle_line(&mut hub, services, line, backend);
                        start += used;
                        handled += 1;
                    }
                    Ok(None) if eof && start < end => {
                        // A last request without its newline is still a request.
                        handle_line(&mut hub, services, &buf[start..end], backend);
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
            write_reply(backend.replies.ready(), None, &reply);
        }
        let replies = &mut backend.replies;
        let finished = too_long.is_some() || (eof && start == end);
        if finished {
            // Every request read gets its reply before the connection ends.
            std::future::poll_fn(|cx| replies.poll_settle(cx, services)).await;
        } else {
            let _ = std::future::poll_fn(|cx| Poll::Ready(replies.poll_settle(cx, services))).await;
        }
        let out = replies.output();
        if let Some(key) = backend.listening {
            // Events ride along with the replies: whole lines either way.
            shared.hub.borrow_mut().listeners.take_into(key, out);
        }
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
        let replies = &mut backend.replies;
        let full = replies.is_full();
        let read = async {
            if full {
                std::future::pending::<()>().await;
            }
            Woke::Read(stream.read(&mut buf[end..]).await)
        };
        let settled = async {
            if !replies.is_waiting() {
                std::future::pending::<()>().await;
            }
            std::future::poll_fn(|cx| replies.poll_settle(cx, services)).await;
            Woke::Settled
        };
        let listening = backend.listening;
        let events = async {
            let Some(key) = listening else {
                return std::future::pending().await;
            };
            let lines =
                std::future::poll_fn(|cx| shared.hub.borrow_mut().listeners.poll_take(key, cx));
            Woke::Events(lines.await)
        };
        match smol::future::or(read, smol::future::or(settled, events)).await {
            Woke::Settled => {}
            Woke::Events(lines) => {
                if stream.write_all(&lines).await.is_err() {
                    return;
                }
            }
            Woke::Read(Ok(0)) => eof = true,
            Woke::Read(Ok(n)) => end += n,
            Woke::Read(Err(e)) => {
                debug!("text port: read failed: {e}");
                return;
            }
        }
    }
}

/// What a backend connection's wait ended with.
enum Woke {
    Read(std::io::Result<usize>),
    /// A waiting reply is complete.
    Settled,
    /// Event lines for this listener.
    Events(Vec<u8>),
}
