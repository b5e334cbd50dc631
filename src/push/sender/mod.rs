//! The machinery every push service's sender shares: a bounded queue of
//! messages, one lane per service origin with its connection and workers,
//! retries with backoff that honour `Retry-After`, one renewal of refused
//! credentials, counters, and the hook that forgets a device the service
//! says is gone. What each service means by its requests and answers is a
//! [`Service`]: APNs, FCM and Web Push each implement it.
//!
//! [`Sender::send`] never awaits (the text port calls it from `handle_line`):
//! it checks the message, queues it on its origin's lane and returns a
//! [`Pending`] for its [`Outcome`]. [`Sender::run`] is one future that the hub
//! spawns; lanes' tasks run inside it. They share state through `RefCell`s
//! and `Cell`s, one thread, no borrow held across an await.
//!
//! A lane per origin keeps a slow or dead push service from holding up the
//! others: each has its own connection and workers, and only its own
//! messages wait for it.

pub mod lane;
pub mod origin;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use async_native_tls::TlsConnector;
use bytes::Bytes;
use smol::channel;
use smol::{LocalExecutor, Timer};

use crate::push::http2::Response;
use lane::{Lane, PostError};
pub use origin::Origin;

/// What one push service means by its requests and answers.
#[allow(async_fn_in_trait)] // one thread: no future here is ever sent
pub trait Service: 'static {
    /// One message for one device.
    type Message;
    /// The service's refusal reasons, sorted by the service.
    type Reason: Clone + fmt::Debug + fmt::Display + PartialEq;
    /// For logs: "APNs", "FCM", "Web Push".
    const NAME: &'static str;

    /// Where `message` goes.
    fn origin<'m>(&'m self, message: &'m Self::Message) -> &'m Origin;

    /// The origin connected from the start and kept (APNs' and FCM's one);
    /// `None` when origins come with the messages (Web Push).
    fn home(&self) -> Option<&Origin>;

    /// Refuses, before it is queued, what the service would refuse for sure.
    fn check(&self, message: &Self::Message) -> Result<(), Failure<Self::Reason>>;

    /// The request of one attempt, credentials included (fetched if needed).
    async fn request(&self, message: &Self::Message) -> Result<Request, Failure<Self::Reason>>;

    /// What the response to `request` means. `served`: this sender has had a
    /// message accepted, so its endpoint and credentials are the right ones.
    fn judge(&self, response: &Response, request: &Request, served: bool) -> Verdict<Self::Reason>;

    /// The name a reason is counted under.
    fn reason_name(reason: &Self::Reason) -> String;
}

/// One HTTP request to a service.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// What a response means, as the service judges it.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict<R> {
    /// Delivered; the service's id for the message, if it gave one.
    Accepted(Option<String>),
    /// The device is no longer valid: forget it.
    Gone { status: u16, reason: R },
    /// Refused; trying again would not help.
    Rejected { status: u16, reason: R },
    /// A passing condition: again later, after `after` if the service said.
    Retry {
        status: u16,
        reason: R,
        after: Option<Duration>,
    },
    /// The credential sent was refused and the service dropped it: once more
    /// with a new one (a second refusal for the same message is final).
    Renew { status: u16, reason: R },
}

/// Limits and timings shared by every lane.
#[derive(Debug, Clone)]
pub struct Config {
    /// Workers per lane, and so requests in flight on its connection at most.
    pub max_streams: usize,
    /// HTTP/1.1 connections per origin at most (one request each at a time).
    pub max_http1_connections: usize,
    /// Messages waiting for a worker, over all lanes, at most; more are refused.
    pub max_queue: usize,
    /// Messages waiting in one lane at most: a stalled push service's backlog
    /// leaves room for the others' (Web Push).
    pub max_lane_queue: usize,
    /// Origins with a lane at once, at most (Web Push).
    pub max_lanes: usize,
    /// Requests per message at most (the first one included). A failed
    /// connection attempt while the message waits counts as one.
    pub max_attempts: u32,
    /// The first wait before a retry or a reconnection; doubled each time.
    pub backoff_first: Duration,
    /// The longest wait; a `Retry-After` longer than this ends the message's
    /// tries (it would hold a worker that long).
    pub backoff_max: Duration,
    /// How long a request may wait for its answer. Past it, the connection
    /// is taken for dead (one that died silently, behind a NAT, looks alive
    /// to HTTP/2) and replaced, and the message retried.
    pub request_timeout: Duration,
    /// How long connecting may take: TCP, TLS and the HTTP/2 handshake.
    pub connect_timeout: Duration,
    /// A lane of an origin other than the home one, idle this long, is closed.
    pub idle_lane: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_streams: 16,
            max_http1_connections: 4,
            max_queue: 10_000,
            max_lane_queue: 10_000,
            max_lanes: 64,
            max_attempts: 5,
            backoff_first: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            idle_lane: Duration::from_secs(300),
        }
    }
}

impl Config {
    /// The wait before retry number `n` (1 for the first).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff_first
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R> {
    /// Accepted; the id the service answered with, if any.
    Accepted { id: Option<String> },
    /// The device is no longer valid; the gone hook was called.
    Gone { status: u16, reason: R },
    /// The service refused it, and trying again would not help.
    Rejected { status: u16, reason: R },
    /// It was not delivered, for a reason of ours or the network's.
    Failed { why: Failure<R> },
}

/// Why a message was not delivered without the service refusing it for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<R> {
    /// Refused before sending: the service would refuse it for its size.
    TooLong {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// Every attempt got a passing refusal (429, 5xx); the last one.
    GaveUp { status: u16, reason: R },
    /// The last attempt got no answer: no connection, or it was lost.
    Unreachable(String),
    /// The request could not be made: a header value that is not valid
    /// header text, or credentials that could not be had.
    Invalid(String),
    /// The service's credentials could not be had (FCM's token endpoint
    /// refused our service account), or the service refused them.
    Credentials(String),
    /// Too many origins have a lane already (Web Push).
    TooManyOrigins(usize),
    /// The sender stopped before the message was done.
    Stopped,
}

impl<R: fmt::Display> fmt::Display for Failure<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::TooLong { what, size, limit } => {
                write!(f, "{what} of {size} bytes is over the limit of {limit}")
            }
            Failure::GaveUp { status, reason } => {
                write!(f, "still refused after retries: {status} {reason}")
            }
            Failure::Unreachable(why) => write!(f, "unreachable: {why}"),
            Failure::Invalid(why) => write!(f, "invalid request: {why}"),
            Failure::Credentials(why) => write!(f, "credentials refused: {why}"),
            Failure::TooManyOrigins(limit) => {
                write!(f, "push services at once over the limit of {limit}")
            }
            Failure::Stopped => f.write_str("the sender stopped"),
        }
    }
}

/// The queue is full: the message was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFull(pub &'static str);

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} queue full", self.0)
    }
}

impl std::error::Error for QueueFull {}

/// The outcome to come of a message taken by [`Sender::send`].
///
/// A one-slot channel: it wakes the waiter, and a worker or queue dropped
/// with the message (the sender stopped) closes it, which reads as
/// [`Failure::Stopped`] without any bookkeeping of ours.
pub struct Pending<R>(std::pin::Pin<Box<channel::Receiver<Outcome<R>>>>);

impl<R> Pending<R> {
    fn ready(outcome: Outcome<R>) -> Pending<R> {
        let (reply, pending) = channel::bounded(1);
        let _ = reply.try_send(outcome);
        Pending(Box::pin(pending))
    }

    /// Waits for the outcome.
    pub async fn outcome(self) -> Outcome<R> {
        self.0.recv().await.unwrap_or(Outcome::Failed {
            why: Failure::Stopped,
        })
    }

    /// Polls for the outcome without consuming the handle: for a caller that
    /// waits on several things at once and must not lose this one.
    pub fn poll_outcome(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Outcome<R>> {
        use smol::stream::Stream;
        match self.0.as_mut().poll_next(cx) {
            Poll::Ready(Some(outcome)) => Poll::Ready(outcome),
            Poll::Ready(None) => Poll::Ready(Outcome::Failed {
                why: Failure::Stopped,
            }),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The outcome if it is known already.
    pub fn try_outcome(&self) -> Option<Outcome<R>> {
        match self.0.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(channel::TryRecvError::Empty) => None,
            Err(channel::TryRecvError::Closed) => Some(Outcome::Failed {
                why: Failure::Stopped,
            }),
        }
    }
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Requests sent, retries included.
    pub sent: u64,
    pub accepted: u64,
    /// Final refusals by the service's reason name, device-gone ones included.
    pub rejected: BTreeMap<String, u64>,
    /// Requests sent again (after a 429/5xx, a renewed credential, or a lost
    /// connection).
    pub retried: u64,
    /// Devices the service said are gone (and were forgotten).
    pub devices_gone: u64,
    /// Messages that ended in [`Outcome::Failed`].
    pub failed: u64,
    /// Connections made.
    pub connections: u64,
    /// Messages waiting for a worker now.
    pub queued: usize,
}

#[derive(Default)]
struct Counters {
    sent: Cell<u64>,
    accepted: Cell<u64>,
    rejected: RefCell<BTreeMap<String, u64>>,
    retried: Cell<u64>,
    devices_gone: Cell<u64>,
    failed: Cell<u64>,
    connections: Cell<u64>,
    /// Responses of any status: a connection that got none does not count
    /// as having worked.
    answers: Cell<u64>,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

struct Job<S: Service> {
    message: S::Message,
    reply: channel::Sender<Outcome<S::Reason>>,
}

/// Wakes every task waiting for a condition on shared state, when told the
/// state changed.
#[derive(Default)]
pub(crate) struct Watch {
    wakers: RefCell<Vec<Waker>>,
}

impl Watch {
    pub(crate) fn notify(&self) {
        for waker in self.wakers.take() {
            waker.wake();
        }
    }

    pub(crate) async fn until(&self, mut condition: impl FnMut() -> bool) {
        std::future::poll_fn(|cx| {
            if condition() {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// Called with each message whose device the service says is gone.
type GoneHook<S> = Box<dyn Fn(&<S as Service>::Message)>;

/// What the lanes' tasks share.
struct Shared<S: Service> {
    config: Config,
    service: S,
    /// ALPN `h2`; and for a service that may speak HTTP/1.1 only, the
    /// connector that asks for it.
    tls: TlsConnector,
    tls_http1: Option<TlsConnector>,
    on_gone: GoneHook<S>,
    lanes: RefCell<HashMap<Origin, Rc<Lane<Job<S>>>>>,
    /// Messages queued over all lanes.
    queued: Cell<usize>,
    counters: Counters,
}

/// A push service's sender. Build it, put it in an `Rc`, spawn
/// [`Sender::run`], and [`Sender::send`] from anywhere on the thread.
pub struct Sender<S: Service> {
    shared: Rc<Shared<S>>,
    tasks: LocalExecutor<'static>,
}

impl<S: Service> Sender<S> {
    /// `tls` must request ALPN `h2`; `tls_http1`, if given, `http/1.1`, for
    /// origins whose servers turn HTTP/2 down. `on_gone` is called once for
    /// each message whose device the service reports gone.
    pub fn for_service(
        config: Config,
        service: S,
        tls: TlsConnector,
        tls_http1: Option<TlsConnector>,
        on_gone: impl Fn(&S::Message) + 'static,
    ) -> Sender<S> {
        let sender = Sender {
            shared: Rc::new(Shared {
                config,
                service,
                tls,
                tls_http1,
                on_gone: Box::new(on_gone),
                lanes: RefCell::default(),
                queued: Cell::new(0),
                counters: Counters::default(),
            }),
            tasks: LocalExecutor::new(),
        };
        if let Some(home) = sender.shared.service.home().cloned() {
            sender.open_lane(home);
        }
        sender
    }

    pub fn service(&self) -> &S {
        &self.shared.service
    }

    /// Takes a message. One the service would refuse for sure is answered at
    /// once, without a request; a full queue refuses it.
    pub fn send(&self, message: S::Message) -> Result<Pending<S::Reason>, QueueFull> {
        let shared = &self.shared;
        if let Err(why) = shared.service.check(&message) {
            bump(&shared.counters.failed);
            return Ok(Pending::ready(Outcome::Failed { why }));
        }
        if shared.queued.get() >= shared.config.max_queue.max(1) {
            // Not sent, not refused by the service: a failure like the others.
            bump(&shared.counters.failed);
            return Err(QueueFull(S::NAME));
        }
        let origin = shared.service.origin(&message);
        let known = shared.lanes.borrow().get(origin).cloned();
        let lane = match known {
            Some(lane) => lane,
            None if shared.lanes.borrow().len() >= shared.config.max_lanes => {
                bump(&shared.counters.failed);
                let why = Failure::TooManyOrigins(shared.config.max_lanes);
                return Ok(Pending::ready(Outcome::Failed { why }));
            }
            None => self.open_lane(origin.clone()),
        };
        if lane.waiting() >= shared.config.max_lane_queue.max(1) {
            bump(&shared.counters.failed);
            return Err(QueueFull(S::NAME));
        }
        let (reply, outcome) = channel::bounded(1);
        lane.push(Job { message, reply });
        shared.queued.set(shared.queued.get() + 1);
        Ok(Pending(Box::pin(outcome)))
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            sent: c.sent.get(),
            accepted: c.accepted.get(),
            rejected: c.rejected.borrow().clone(),
            retried: c.retried.get(),
            devices_gone: c.devices_gone.get(),
            failed: c.failed.get(),
            connections: c.connections.get(),
            queued: self.shared.queued.get(),
        }
    }

    /// Delivers messages until dropped. Dropping it cancels what is in
    /// flight: those messages end as [`Failure::Stopped`].
    pub async fn run(self: Rc<Self>) {
        self.tasks.run(std::future::pending::<()>()).await;
    }

    /// A lane for `origin`: its connection keeper and its workers.
    fn open_lane(&self, origin: Origin) -> Rc<Lane<Job<S>>> {
        let shared = &self.shared;
        let home = shared.service.home() == Some(&origin);
        let lane = Rc::new(Lane::new(origin.clone(), shared.tls_http1.is_some()));
        shared.lanes.borrow_mut().insert(origin, Rc::clone(&lane));
        for _ in 0..shared.config.max_streams.max(1) {
            let (shared, lane) = (Rc::clone(shared), Rc::clone(&lane));
            self.tasks.spawn(worker(shared, lane)).detach();
        }
        let keeper = keep(Rc::clone(shared), Rc::clone(&lane), home);
        self.tasks.spawn(keeper).detach();
        lane
    }
}

/// Keeps the lane's connection; for a lane other than the home one, closes
/// it once idle (its workers end with its queue).
async fn keep<S: Service>(shared: Rc<Shared<S>>, lane: Rc<Lane<Job<S>>>, home: bool) {
    let connected = lane.keep_connected(
        &shared.config,
        &shared.tls,
        &shared.counters.connections,
        &shared.counters.answers,
        S::NAME,
    );
    if home {
        return connected.await;
    }
    let idle = async {
        loop {
            Timer::after(shared.config.idle_lane / 2).await;
            if lane.idle_for() >= shared.config.idle_lane {
                let mut lanes = shared.lanes.borrow_mut();
                lanes.remove(&lane.origin);
                lane.close();
                return;
            }
        }
    };
    smol::future::or(connected, idle).await;
}

async fn worker<S: Service>(shared: Rc<Shared<S>>, lane: Rc<Lane<Job<S>>>) {
    while let Some(job) = lane.next().await {
        shared.queued.set(shared.queued.get().saturating_sub(1));
        let outcome = deliver(&shared, &lane, &job.message).await;
        lane.done();
        let c = &shared.counters;
        match &outcome {
            Outcome::Accepted { .. } => bump(&c.accepted),
            Outcome::Gone { reason, .. } | Outcome::Rejected { reason, .. } => {
                *c.rejected
                    .borrow_mut()
                    .entry(S::reason_name(reason))
                    .or_default() += 1;
            }
            Outcome::Failed { .. } => bump(&c.failed),
        }
        if let Outcome::Gone { .. } = outcome {
            bump(&c.devices_gone);
            (shared.on_gone)(&job.message);
        }
        let _ = job.reply.try_send(outcome);
    }
}

/// Sees one message through its attempts.
async fn deliver<S: Service>(
    shared: &Shared<S>,
    lane: &Lane<Job<S>>,
    message: &S::Message,
) -> Outcome<S::Reason> {
    let config = &shared.config;
    let counters = &shared.counters;
    let max_attempts = config.max_attempts.max(1);
    let mut attempts = 0;
    // Requests of this message sent so far (attempts also count connections
    // and credentials that could not be had).
    let mut sent = 0;
    let mut renewed = false;
    // The connection a request failed on: not to be used again.
    let mut failed_on = None;
    loop {
        lane.unpaused().await;
        let tls_http1 = shared.tls_http1.as_ref();
        let mut conn = match lane
            .connection(
                config,
                tls_http1,
                &counters.connections,
                failed_on,
                &mut attempts,
            )
            .await
        {
            Ok(conn) => conn,
            Err(why) => {
                return Outcome::Failed {
                    why: Failure::Unreachable(why),
                };
            }
        };
        attempts += 1;
        let request = match shared.service.request(message).await {
            Ok(request) => request,
            // Credentials that could not be fetched now may be later.
            Err(Failure::Unreachable(why)) if attempts < max_attempts => {
                lane.release(conn, true);
                log::debug!("{}: {why}", S::NAME);
                Timer::after(config.backoff(attempts)).await;
                failed_on = None;
                continue;
            }
            Err(why) => {
                lane.release(conn, true);
                return Outcome::Failed { why };
            }
        };
        if sent > 0 {
            bump(&counters.retried);
        }
        sent += 1;
        bump(&counters.sent);
        let posted = smol::future::or(async { Some(conn.post(&request).await) }, async {
            Timer::after(config.request_timeout).await;
            None
        })
        .await;
        let generation = conn.generation();
        let response = match posted {
            None => {
                let waited = config.request_timeout;
                log::warn!("{}: no answer within {waited:?}; reconnecting", S::NAME);
                lane.abandon(conn);
                if attempts >= max_attempts {
                    return Outcome::Failed {
                        why: Failure::Unreachable(format!("no answer within {waited:?}")),
                    };
                }
                failed_on = generation;
                continue;
            }
            Some(Err(PostError::Invalid(why))) => {
                lane.release(conn, true);
                return Outcome::Failed {
                    why: Failure::Invalid(why),
                };
            }
            Some(Err(PostError::Stream(why))) => {
                // The stream alone was reset: the connection still serves.
                log::debug!("{}: request failed: {why}", S::NAME);
                lane.release(conn, true);
                if attempts >= max_attempts {
                    return Outcome::Failed {
                        why: Failure::Unreachable(why),
                    };
                }
                Timer::after(config.backoff(attempts)).await;
                failed_on = None;
                continue;
            }
            Some(Err(PostError::Connection(why))) => {
                log::debug!("{}: request failed: {why}", S::NAME);
                lane.release(conn, false);
                if attempts >= max_attempts {
                    return Outcome::Failed {
                        why: Failure::Unreachable(why),
                    };
                }
                failed_on = generation;
                continue;
            }
            Some(Ok(response)) => {
                lane.release(conn, true);
                response
            }
        };
        bump(&counters.answers);
        let served = counters.accepted.get() > 0;
        match shared.service.judge(&response, &request, served) {
            Verdict::Accepted(id) => return Outcome::Accepted { id },
            Verdict::Gone { status, reason } => return Outcome::Gone { status, reason },
            Verdict::Rejected { status, reason } => return Outcome::Rejected { status, reason },
            Verdict::Renew { status, reason } if renewed => {
                return Outcome::Rejected { status, reason };
            }
            Verdict::Renew { .. } => renewed = true,
            Verdict::Retry {
                status,
                reason,
                after,
            } => {
                let gave_up = Outcome::Failed {
                    why: Failure::GaveUp { status, reason },
                };
                if attempts >= max_attempts {
                    return gave_up;
                }
                match after {
                    // Said of the service, not of this message: the whole
                    // lane waits.
                    Some(after) if after > config.backoff_max => return gave_up,
                    Some(after) => {
                        lane.pause(after);
                    }
                    None => {
                        Timer::after(config.backoff(attempts)).await;
                    }
                }
            }
        }
        failed_on = None;
    }
}

/// A `Retry-After` header in seconds (the HTTP-date form is not used by push
/// services, and reads as absent).
pub fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers.get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let config = Config {
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..Config::default()
        };
        assert_eq!(config.backoff(1), Duration::from_millis(100));
        assert_eq!(config.backoff(2), Duration::from_millis(200));
        assert_eq!(config.backoff(4), Duration::from_millis(800));
        assert_eq!(config.backoff(5), Duration::from_secs(1));
        assert_eq!(config.backoff(200), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_in_seconds() {
        let response = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("retry-after", value.parse().unwrap());
            Response {
                status: http::StatusCode::TOO_MANY_REQUESTS,
                headers,
                body: Bytes::new(),
            }
        };
        assert_eq!(retry_after(&response("7")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&response(" 0 ")), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&response("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(retry_after(&response("-1")), None);
    }
}
