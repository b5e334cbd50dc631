//! The text port in cluster mode: which requests concern other hubs, how a
//! hub acts on one that came from another (`execute`, for one target), and
//! the reply built from every hub's share.
//!
//! A request is published as the line the backend sent, so the hubs that
//! act on it parse it as any text port would; the Redis channel it came on
//! names the one uid, channel or "everyone" it is for there.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::protocol::{Command, Presence, Reply, Request, RequestError, Targets, parse_request};
use super::replies::Wait;
use super::{broadcast_fanout, channel_fanout, distinct, each_uid, original, to_uid};
use crate::cluster::wire::Partial;
use crate::cluster::{Cluster, Gathered, Header, Route};
use crate::hub::{Hub, Pos, StreamKey, Target};
use crate::push::route::{DevicePush, Wants};
use crate::ws::frame::Frame;

/// What the reply of a routed request is made of.
pub enum Shape {
    /// The original form: `ok` once some connection took the line.
    Legacy,
    Delivered,
    /// A push with parts for devices to these uids, one part each: once
    /// the hubs have answered, this hub alone sends to the devices of the
    /// uids that each `*_when` picks, so that each device gets it once.
    DeliveredDevices(Vec<String>, DevicePush<'static>),
    /// A push with `ack_timeout` to `uid`: once delivered, it waits for the
    /// hub that holds the connection to say it was acknowledged, until
    /// `deadline`; unacknowledged, `fallback` goes to the uid's devices.
    DeliveredAcked {
        uid: String,
        deadline: Instant,
        fallback: Option<DevicePush<'static>>,
    },
    Online,
    /// `online` for these uids, one part each.
    OnlineMany(Vec<String>),
    Kicked,
    Subscribed,
    Unsubscribed,
    Members,
    Channels,
    Nodes,
}

/// What handling a request in cluster mode came to.
pub enum Routed<'l> {
    /// Published: its reply waits for the hubs' answers.
    Waiting(Option<&'l RawValue>, Wait),
    /// Refused here: it asks what a cluster does not carry yet.
    Refused(Option<&'l RawValue>, RequestError),
    /// Not a cluster matter (devices, `listen`, this hub's `stats`).
    Local(Request<'l>),
}

/// Sends a request that concerns other hubs through the cluster.
pub fn route<'l>(
    hub: &mut Hub,
    cluster: &Cluster,
    services: super::Services,
    line: &'l [u8],
    request: Request<'l>,
) -> Routed<'l> {
    let uid_history = cluster.keeps_history(crate::hub::StreamKey::Uid(""));
    let planned = match plan(&request, cluster.node(), services, uid_history) {
        Ok(Some((id, shape, targets))) => Ok((id, shape, targets)),
        Ok(None) => Err(None),
        Err((id, e)) => Err(Some((id, e))),
    };
    let (id, shape, targets) = match planned {
        Ok(plan) => plan,
        Err(None) => return Routed::Local(request),
        Err(Some((id, e))) => return Routed::Refused(id, e),
    };
    match &request {
        Request::Legacy { .. }
        | Request::Command {
            command: Ok(Command::Push { .. }),
            ..
        } => {
            hub.counters.pushes += 1;
        }
        Request::Command {
            command: Ok(Command::Broadcast { .. }),
            ..
        } => {
            hub.counters.broadcasts += 1;
        }
        Request::Command {
            command: Ok(Command::Publish { .. }),
            ..
        } => {
            hub.counters.publications += 1;
        }
        _ => {}
    }
    // A push, publication or broadcast is a message of each target's stream.
    let message = matches!(
        shape,
        Shape::Legacy
            | Shape::Delivered
            | Shape::DeliveredDevices(..)
            | Shape::DeliveredAcked { .. }
    ) && !targets.iter().any(|t| matches!(t, Route::Node(_)));
    let gather = cluster.request(hub, line, &targets, message);
    if let Shape::DeliveredAcked { deadline, .. } = &shape {
        cluster.await_ack(gather, *deadline);
    }
    let deadline = Instant::now() + cluster.timeout();
    Routed::Waiting(
        id,
        Wait::Cluster {
            gather,
            shape,
            timer: smol::Timer::at(deadline),
        },
    )
}

type Plan<'r, 'l> = (Option<&'l RawValue>, Shape, Vec<Route<'r>>);

/// The reply's shape and the targets, one part each, of a request that
/// concerns other hubs; `None` for one that does not.
fn plan<'r, 'l>(
    request: &'r Request<'l>,
    cluster_node: &str,
    services: super::Services,
    uid_history: bool,
) -> Result<Option<Plan<'r, 'l>>, (Option<&'l RawValue>, RequestError)> {
    let uids = |who: &'r Targets| {
        each_uid(who)
            .map(|uid| Route::To(Target::Uid(uid)))
            .collect::<Vec<_>>()
    };
    let one = |target| vec![Route::To(target)];
    let (id, command) = match request {
        Request::Legacy { uid, .. } => {
            return Ok(Some((None, Shape::Legacy, one(Target::Uid(uid)))));
        }
        Request::Command {
            id,
            command: Ok(command),
        } => (*id, command),
        _ => return Ok(None),
    };
    let (shape, targets) = match command {
        Command::Push {
            to,
            devices,
            ack_timeout: Some(timeout),
            ..
        } => {
            let Targets::One(uid) = to else {
                return Err((id, RequestError::AckOneUid));
            };
            if !uid_history {
                return Err((id, RequestError::NoUidHistory));
            }
            if let Some(e) = super::unavailable(services, devices) {
                return Err((id, e));
            }
            let shape = Shape::DeliveredAcked {
                uid: uid.to_string(),
                deadline: Instant::now() + *timeout,
                fallback: devices.unacked(),
            };
            (shape, uids(to))
        }
        Command::Push { to, devices, .. } if !devices.is_empty() => {
            if let Some(e) = super::unavailable(services, devices) {
                return Err((id, e));
            }
            let targets = uids(to);
            let names = each_uid(to).map(str::to_string).collect();
            (Shape::DeliveredDevices(names, devices.to_static()), targets)
        }
        Command::PushConn {
            node: Some(node), ..
        } if *node != *cluster_node => (Shape::Delivered, vec![Route::Node(node)]),
        Command::PushConn { .. } => return Ok(None),
        Command::Push { to, .. } => (Shape::Delivered, uids(to)),
        Command::Broadcast { .. } => (Shape::Delivered, one(Target::All)),
        Command::Publish { chs, .. } => (
            Shape::Delivered,
            distinct(chs)
                .map(|ch| Route::To(Target::Channel(ch)))
                .collect(),
        ),
        Command::Subscribe { who, .. } => (Shape::Subscribed, uids(who)),
        Command::Unsubscribe { who, .. } => (Shape::Unsubscribed, uids(who)),
        Command::Channels { .. } => (Shape::Channels, one(Target::All)),
        Command::Members { ch } => (Shape::Members, one(Target::Channel(ch))),
        Command::Online {
            who: Targets::One(uid),
        } => (Shape::Online, one(Target::Uid(uid))),
        Command::Online {
            who: Targets::Many(list),
        } => (
            Shape::OnlineMany(list.iter().map(|u| u.to_string()).collect()),
            list.iter().map(|u| Route::To(Target::Uid(u))).collect(),
        ),
        Command::Kick { who } => (Shape::Kicked, uids(who)),
        Command::Stats { cluster: true } => (Shape::Nodes, one(Target::All)),
        Command::Stats { cluster: false }
        | Command::Listen { .. }
        | Command::Register { .. }
        | Command::Unregister { .. }
        | Command::Devices { .. }
        | Command::VapidKey => return Ok(None),
    };
    Ok(Some((id, shape, targets)))
}

/// Acts on a request from another hub (or this one, back through Redis)
/// for `target` alone, and says what this hub's share of the answer is.
pub fn execute(
    hub: &mut Hub,
    cluster: &Cluster,
    route: Route,
    header: Option<&Header>,
    line: &[u8],
) -> Option<Partial> {
    let pos = header.and_then(|h| h.pos);
    let request = parse_request(line);
    let target = match route {
        Route::To(target) => target,
        Route::Node(_) => {
            return match request {
                Request::Command {
                    command: Ok(Command::PushConn { conn, data, .. }),
                    ..
                } => Some(Partial::Delivered(super::push_conn(hub, conn, &data))),
                _ => None,
            };
        }
    };
    let Request::Command { command, .. } = request else {
        return match (request, target) {
            (Request::Legacy { line, .. }, Target::Uid(uid)) => Some(Partial::Delivered(
                hub.deliver_given(Target::Uid(uid), pos, |pos| original(line, pos)),
            )),
            _ => None,
        };
    };
    Some(match (command.ok()?, target) {
        (
            Command::Push {
                data, ack_timeout, ..
            },
            Target::Uid(uid),
        ) => {
            let raw = OnceCell::new();
            let delivered = hub.deliver_given(target, pos, |pos| to_uid(&data, pos, &raw));
            // Its origin waits to hear whether a connection here acks it.
            if let (Some(timeout), Some(header), Some(pos), 1..) =
                (ack_timeout, header, pos, delivered)
            {
                cluster.relay_ack(uid, pos, header, timeout);
            }
            Partial::Delivered(delivered)
        }
        (Command::Broadcast { data }, Target::All) => {
            Partial::Delivered(hub.deliver_given(target, pos, |pos| broadcast_fanout(&data, pos)))
        }
        (Command::Publish { data, .. }, Target::Channel(ch)) => {
            let raw = OnceCell::new();
            Partial::Delivered(
                hub.deliver_given(target, pos, |pos| channel_fanout(ch, &data, pos, &raw)),
            )
        }
        (Command::Subscribe { chs, .. }, Target::Uid(uid)) => {
            let (added, refused) = super::subscribe_uid(hub, uid, &chs);
            let refused = refused
                .into_iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect();
            Partial::Subscribed(added, refused)
        }
        (Command::Unsubscribe { chs, .. }, Target::Uid(uid)) => {
            Partial::Unsubscribed(super::unsubscribe_uid(hub, uid, &chs))
        }
        (Command::Channels { prefix }, Target::All) => Partial::Channels(
            hub.channel_list(&prefix)
                .into_iter()
                .map(|(ch, n)| (ch.to_string(), n))
                .collect(),
        ),
        (Command::Members { .. }, Target::Channel(ch)) => {
            let (uids, connections) = hub.members(ch);
            Partial::Members(uids.iter().map(|u| u.to_string()).collect(), connections)
        }
        (Command::Online { .. }, Target::Uid(uid)) => Partial::Online(hub.connections_of(uid)),
        (Command::Kick { .. }, Target::Uid(uid)) => Partial::Kicked(hub.kick(uid)),
        (Command::Stats { cluster: true }, Target::All) => {
            let mut stats = hub.stats();
            stats.cluster = Some(cluster.stats());
            // Stats are plain numbers and strings: they always serialize.
            let json = serde_json::to_string(&stats).expect("stats serialize");
            Partial::Nodes(vec![RawValue::from_string(json).expect("stats are JSON")])
        }
        _ => return None,
    })
}

/// The frame a v1 client of `stream` gets for a message kept in Redis's
/// history (the backend's `line`) at `pos`; `None` if the line is not a
/// message of that stream.
pub fn replay(stream: StreamKey, pos: Pos, line: &[u8]) -> Option<Frame> {
    let frame = match (parse_request(line), stream) {
        (Request::Legacy { line, .. }, StreamKey::Uid(_)) => {
            original(line, Some(pos)).v1_frame().clone()
        }
        (
            Request::Command {
                command: Ok(command),
                ..
            },
            stream,
        ) => match (command, stream) {
            (Command::Push { data, .. }, StreamKey::Uid(_)) => {
                let raw = OnceCell::new();
                to_uid(&data, Some(pos), &raw).v1_frame().clone()
            }
            (Command::Broadcast { data }, StreamKey::All) => {
                broadcast_fanout(&data, Some(pos)).v1_frame().clone()
            }
            (Command::Publish { data, .. }, StreamKey::Channel(ch)) => {
                let raw = OnceCell::new();
                channel_fanout(ch, &data, Some(pos), &raw)
                    .v1_frame()
                    .clone()
            }
            _ => return None,
        },
        _ => return None,
    };
    Some(frame)
}

/// The connections the hubs said took a push.
pub fn reply_delivered(gathered: &Gathered) -> usize {
    gathered
        .parts
        .iter()
        .map(|p| match p {
            Some(Partial::Delivered(n)) => *n,
            _ => 0,
        })
        .sum()
}

/// The reply of a routed request from what the hubs answered.
pub fn reply(shape: &Shape, gathered: Gathered) -> Reply<'static> {
    let Gathered { parts, unconfirmed } = gathered;
    let sum = |parts: &[Option<Partial>]| -> usize {
        parts
            .iter()
            .map(|p| match p {
                Some(
                    Partial::Delivered(n)
                    | Partial::Online(n)
                    | Partial::Kicked(n)
                    | Partial::Unsubscribed(n)
                    | Partial::Subscribed(n, _),
                ) => *n,
                _ => 0,
            })
            .sum()
    };
    let reply = match shape {
        // `ok` needs a connection that took the line; an unconfirmed hub
        // proves nothing either way.
        Shape::Legacy => return Reply::Legacy(sum(&parts) > 0),
        Shape::Delivered => Reply::Delivered(sum(&parts)),
        // Answered with its devices' summaries (`device_uids`), or once
        // acknowledged, not from here.
        Shape::DeliveredDevices(..) | Shape::DeliveredAcked { .. } => Reply::Delivered(sum(&parts)),
        Shape::Online => Reply::Online(sum(&parts)),
        Shape::Kicked => Reply::Kicked(sum(&parts)),
        Shape::Unsubscribed => Reply::Unsubscribed(sum(&parts)),
        Shape::Subscribed => {
            let mut refused = BTreeMap::new();
            for part in &parts {
                if let Some(Partial::Subscribed(_, reasons)) = part {
                    for (reason, n) in reasons {
                        *refused.entry(refusal_kind(reason)).or_insert(0) += n;
                    }
                }
            }
            Reply::Subscribed(sum(&parts), refused)
        }
        Shape::OnlineMany(uids) => Reply::OnlineMany(
            uids.iter()
                .zip(&parts)
                .map(|(uid, part)| {
                    let connections = sum(std::slice::from_ref(part));
                    Presence {
                        uid: Cow::Owned(uid.clone()),
                        online: connections > 0,
                        connections,
                    }
                })
                .collect(),
        ),
        Shape::Members => match parts.into_iter().flatten().next() {
            Some(Partial::Members(uids, connections)) => {
                Reply::Members(uids.into_iter().map(Rc::from).collect(), connections)
            }
            _ => Reply::Members(Vec::new(), 0),
        },
        Shape::Channels => match parts.into_iter().flatten().next() {
            Some(Partial::Channels(list)) => {
                Reply::Channels(list.into_iter().map(|(ch, n)| (Rc::from(ch), n)).collect())
            }
            _ => Reply::Channels(Vec::new()),
        },
        Shape::Nodes => match parts.into_iter().flatten().next() {
            Some(Partial::Nodes(nodes)) => Reply::Nodes(nodes),
            _ => Reply::Nodes(Vec::new()),
        },
    };
    match unconfirmed {
        true => Reply::Unconfirmed(Box::new(reply)),
        false => reply,
    }
}

/// The connections the hubs said took a push, and which of its uids go to
/// which platforms by their `*_when`. A uid no hub confirmed is not known to
/// be online: its devices get the message (at worst beside a connection that
/// got it too, never not at all).
pub fn device_uids(
    uids: &[String],
    push: &DevicePush,
    gathered: &Gathered,
) -> (usize, Vec<(String, Wants)>) {
    let mut delivered = 0;
    let mut chosen: Vec<(String, Wants)> = Vec::new();
    for (uid, part) in uids.iter().zip(&gathered.parts) {
        let n = match part {
            Some(Partial::Delivered(n)) => *n,
            _ => 0,
        };
        delivered += n;
        let wants = push.now(n > 0);
        // Two parts for one uid still make one message per device.
        match chosen.iter_mut().find(|(known, _)| known == uid) {
            Some((_, known)) => *known = known.or(wants),
            None => chosen.push((uid.clone(), wants)),
        }
    }
    (delivered, chosen)
}

/// A refusal's reason as counted here; another hub's unknown reason is
/// kept under a name of its own rather than dropped.
fn refusal_kind(reason: &str) -> &'static str {
    use crate::hub::SubscribeError::*;
    [TooManySubscriptions, TooManyChannels]
        .into_iter()
        .map(|e| e.kind())
        .find(|kind| *kind == reason)
        .unwrap_or("other")
}
