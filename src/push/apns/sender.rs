//! The APNs sender: a bounded queue of notifications, delivered over one
//! HTTP/2 connection with several streams in flight, each response sorted by
//! Apple's reason into accepted, device gone, retry, new provider token, or
//! rejected.
//!
//! [`Sender::send`] never awaits (the text port calls it from `handle_line`):
//! it checks the notification, puts it in the queue and returns a [`Pending`]
//! for its [`Outcome`]. [`Sender::run`] is one future that the hub spawns: a
//! task that keeps the connection (connects, drives it, reconnects with
//! backoff) and `max_streams` workers, each taking the next notification and
//! seeing it through its retries. They share state through `RefCell`s and
//! `Cell`s, one thread, no borrow held across an await.
//!
//! This module knows APNs semantics; it must not speak HTTP/2 itself
//! (`http2.rs` does) nor touch the device registry (the `on_device_gone` hook
//! given at construction does).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use async_native_tls::TlsConnector;
use bytes::Bytes;
use smol::channel;
use smol::{LocalExecutor, Timer};

use super::provider_token::ProviderToken;
use super::reason::{Kind, Reason};
use crate::push::http2::{self, Http2, PostError};
use crate::push::registry::DeviceToken;

/// Apple's limit on a payload (bytes); a larger one is answered 413.
pub const MAX_PAYLOAD: usize = 4096;
/// The limit for `voip` notifications.
pub const MAX_VOIP_PAYLOAD: usize = 5120;
/// Apple's limit on `apns-collapse-id` (bytes).
pub const MAX_COLLAPSE_ID: usize = 64;

/// Where and how to send, and how hard to try.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address of the APNs endpoint (`api.push.apple.com:443`, or the
    /// sandbox), already resolved.
    pub addr: SocketAddr,
    /// The host name the server's certificate must carry.
    pub host: String,
    /// The app's bundle id, sent as `apns-topic`.
    pub topic: String,
    /// Workers, and so requests in flight on the connection at most.
    pub max_streams: usize,
    /// Notifications waiting for a worker at most; more are refused.
    pub max_queue: usize,
    /// Requests per notification at most (the first one included). A failed
    /// connection attempt while the notification waits counts as one.
    pub max_attempts: u32,
    /// The first wait before a retry or a reconnection; doubled each time.
    pub backoff_first: Duration,
    /// The longest wait.
    pub backoff_max: Duration,
    /// How long a request may wait for its answer. Past it, the connection
    /// is taken for dead (one that died silently, behind a NAT, looks alive
    /// to HTTP/2) and replaced, and the notification retried.
    pub request_timeout: Duration,
    /// How long connecting may take: TCP, TLS and the HTTP/2 handshake. A
    /// stalled attempt counts as a failed one.
    pub connect_timeout: Duration,
    /// Whether 400 `BadDeviceToken` means the token is gone from the start.
    /// A sandbox token sent to production is refused the same way, so by
    /// default a bad token counts as gone only once this endpoint has accepted
    /// a notification: that proves the hub talks to the environment its
    /// tokens come from, and a token this endpoint calls bad can never be
    /// delivered by this hub. Until then, a wrong `--apns-sandbox` would
    /// otherwise empty the registry at the first push.
    pub bad_device_token_is_gone: bool,
}

impl Config {
    /// A configuration with the default limits.
    pub fn new(addr: SocketAddr, host: &str, topic: &str) -> Config {
        Config {
            addr,
            host: host.to_string(),
            topic: topic.to_string(),
            max_streams: 16,
            max_queue: 10_000,
            max_attempts: 5,
            backoff_first: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            bad_device_token_is_gone: false,
        }
    }

    /// The wait before retry number `n` (1 for the first).
    fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff_first
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// How requests are authenticated.
pub enum Auth {
    /// A provider token in each request's `authorization` header.
    Token(ProviderToken),
    /// A client certificate, already in the TLS connector: nothing per request.
    Certificate,
}

/// `apns-push-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushType {
    #[default]
    Alert,
    Background,
    Voip,
    Complication,
    FileProvider,
    Mdm,
    Location,
    LiveActivity,
    PushToTalk,
    Widgets,
}

impl PushType {
    pub fn as_str(self) -> &'static str {
        match self {
            PushType::Alert => "alert",
            PushType::Background => "background",
            PushType::Voip => "voip",
            PushType::Complication => "complication",
            PushType::FileProvider => "fileprovider",
            PushType::Mdm => "mdm",
            PushType::Location => "location",
            PushType::LiveActivity => "liveactivity",
            PushType::PushToTalk => "pushtotalk",
            PushType::Widgets => "widgets",
        }
    }

    /// The push type named `name` (`alert`, `background`, `voip`, ...).
    pub fn parse(name: &str) -> Option<PushType> {
        const ALL: [PushType; 10] = [
            PushType::Alert,
            PushType::Background,
            PushType::Voip,
            PushType::Complication,
            PushType::FileProvider,
            PushType::Mdm,
            PushType::Location,
            PushType::LiveActivity,
            PushType::PushToTalk,
            PushType::Widgets,
        ];
        ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// What Apple wants after the bundle id in `apns-topic` for this type
    /// (for `mdm`, the topic is the MDM certificate's own: give it as the topic).
    pub fn topic_suffix(self) -> &'static str {
        match self {
            PushType::Alert | PushType::Background | PushType::Mdm => "",
            PushType::Voip => ".voip",
            PushType::Complication => ".complication",
            PushType::FileProvider => ".pushkit.fileprovider",
            PushType::Location => ".location-query",
            PushType::LiveActivity => ".push-type.liveactivity",
            PushType::PushToTalk => ".voip-ptt",
            PushType::Widgets => ".push-type.widgets",
        }
    }

    /// `apns-topic` for this type, given the app's bundle id. A topic given
    /// with the suffix already (a hub for VoIP only, say) is kept as it is.
    pub fn topic(self, bundle: &str) -> String {
        let suffix = self.topic_suffix();
        if bundle.ends_with(suffix) {
            bundle.to_string()
        } else {
            format!("{bundle}{suffix}")
        }
    }

    /// The largest payload Apple takes for this type.
    pub fn max_payload(self) -> usize {
        match self {
            PushType::Voip => MAX_VOIP_PAYLOAD,
            _ => MAX_PAYLOAD,
        }
    }
}

/// `apns-priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// 10: deliver now.
    #[default]
    Immediate,
    /// 5: when the device's power allows.
    Conserve,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Priority::Immediate => "10",
            Priority::Conserve => "5",
        }
    }
}

/// One notification for one device.
#[derive(Debug, Clone)]
pub struct Notification {
    pub device: DeviceToken,
    /// The JSON payload, sent as it is.
    pub payload: Bytes,
    pub push_type: PushType,
    pub priority: Priority,
    /// Unix seconds until which Apple keeps trying; 0: deliver once or drop.
    pub expiration: u64,
    pub collapse_id: Option<String>,
    /// `apns-id`, a UUID; Apple makes one when it is absent.
    pub apns_id: Option<String>,
}

impl Notification {
    /// An alert at priority 10 that Apple does not store.
    pub fn new(device: DeviceToken, payload: impl Into<Bytes>) -> Notification {
        Notification {
            device,
            payload: payload.into(),
            push_type: PushType::Alert,
            priority: Priority::Immediate,
            expiration: 0,
            collapse_id: None,
            apns_id: None,
        }
    }
}

/// What became of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200; the `apns-id` Apple answered with.
    Accepted { apns_id: Option<String> },
    /// The device token is no longer valid (410, or 400 `BadDeviceToken` when
    /// configured so); `on_device_gone` was called.
    DeviceGone { status: u16, reason: Reason },
    /// Apple refused it, and trying again would not help.
    Rejected { status: u16, reason: Reason },
    /// It was not delivered, for a reason of ours or the network's.
    Failed { why: Failure },
}

/// Why a notification was not delivered without Apple refusing it for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Refused before sending: Apple would answer 413.
    PayloadTooLarge { size: usize, limit: usize },
    /// Refused before sending: Apple would answer 400 `BadCollapseId`.
    CollapseIdTooLong { size: usize },
    /// Every attempt got a passing refusal (429, 500, 503); the last one.
    GaveUp { status: u16, reason: Reason },
    /// The last attempt got no answer: no connection, or it was lost.
    Unreachable(String),
    /// A header value could not be sent (a collapse or apns id that is not
    /// valid header text).
    Invalid(String),
    /// The sender stopped before the notification was done.
    Stopped,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::PayloadTooLarge { size, limit } => {
                write!(f, "payload of {size} bytes is over APNs' {limit}")
            }
            Failure::CollapseIdTooLong { size } => write!(
                f,
                "collapse id of {size} bytes is over APNs' {MAX_COLLAPSE_ID}"
            ),
            Failure::GaveUp { status, reason } => {
                write!(f, "APNs still refused after retries: {status} {reason}")
            }
            Failure::Unreachable(why) => write!(f, "APNs unreachable: {why}"),
            Failure::Invalid(why) => write!(f, "invalid request: {why}"),
            Failure::Stopped => f.write_str("the APNs sender stopped"),
        }
    }
}

/// The queue is full: the notification was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFull;

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("APNs queue full")
    }
}

impl std::error::Error for QueueFull {}

/// The outcome to come of a notification taken by [`Sender::send`].
///
/// A one-slot channel: it wakes the waiter, and a worker or queue dropped
/// with the notification (the sender stopped) closes it, which reads as
/// [`Failure::Stopped`] without any bookkeeping of ours.
pub struct Pending(std::pin::Pin<Box<channel::Receiver<Outcome>>>);

impl Pending {
    /// Waits for the outcome.
    pub async fn outcome(self) -> Outcome {
        self.0.recv().await.unwrap_or(Outcome::Failed {
            why: Failure::Stopped,
        })
    }

    /// Polls for the outcome without consuming the handle: for a caller that
    /// waits on several things at once and must not lose this one.
    pub fn poll_outcome(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Outcome> {
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
    pub fn try_outcome(&self) -> Option<Outcome> {
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
    /// Final refusals by Apple's reason name, device-gone ones included.
    pub rejected: BTreeMap<String, u64>,
    /// Requests sent again (after a 429/5xx, a new provider token, or a lost
    /// connection).
    pub retried: u64,
    pub devices_gone: u64,
    /// Notifications that ended in [`Outcome::Failed`].
    pub failed: u64,
    /// Connections made.
    pub connections: u64,
    /// Notifications waiting for a worker now.
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

struct Job {
    notification: Notification,
    reply: channel::Sender<Outcome>,
}

/// The connection as the workers see it.
#[derive(Default)]
struct Link {
    /// Counts connection attempts, successful or not: a worker waiting for a
    /// connection wakes when it changes.
    generation: u64,
    /// The sending half while the connection is up.
    http2: Option<Http2>,
    /// Why the last connection attempt failed, or the last connection ended.
    last_error: String,
    /// A worker found the connection dead: [`Sender::keep_connected`] drops it.
    abandoned: bool,
}

/// Wakes every task waiting for a condition on shared state, when told the
/// state changed.
#[derive(Default)]
struct Watch {
    wakers: RefCell<Vec<Waker>>,
}

impl Watch {
    fn notify(&self) {
        for waker in self.wakers.take() {
            waker.wake();
        }
    }

    async fn until(&self, mut condition: impl FnMut() -> bool) {
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

/// What to do after a response.
enum Next {
    Done(Outcome),
    /// Retry after the backoff, keeping the reason in case it was the last try.
    Backoff {
        status: u16,
        reason: Reason,
    },
    /// Retry at once with a new provider token.
    NewToken,
}

/// The APNs sender. Build it, put it in an `Rc`, spawn [`Sender::run`], and
/// [`Sender::send`] from anywhere on the thread.
pub struct Sender {
    config: Config,
    tls: TlsConnector,
    token: Option<RefCell<ProviderToken>>,
    clock: Box<dyn Fn() -> u64>,
    on_device_gone: Box<dyn Fn(&DeviceToken)>,
    queue: channel::Sender<Job>,
    taken: channel::Receiver<Job>,
    link: RefCell<Link>,
    link_changed: Watch,
    counters: Counters,
}

impl Sender {
    /// `tls` must request ALPN `h2`, and for [`Auth::Certificate`] carry the
    /// identity (see `credentials::load_identity`). `on_device_gone` is called
    /// once for each token Apple reports gone.
    pub fn new(
        config: Config,
        auth: Auth,
        tls: TlsConnector,
        on_device_gone: impl Fn(&DeviceToken) + 'static,
    ) -> Sender {
        let (queue, taken) = channel::bounded(config.max_queue.max(1));
        Sender {
            config,
            tls,
            token: match auth {
                Auth::Token(token) => Some(RefCell::new(token)),
                Auth::Certificate => None,
            },
            clock: Box::new(crate::time::unix_now),
            on_device_gone: Box::new(on_device_gone),
            queue,
            taken,
            link: RefCell::default(),
            link_changed: Watch::default(),
            counters: Counters::default(),
        }
    }

    /// Replaces the clock (Unix seconds) the provider token is minted and
    /// refreshed by.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + 'static) -> Sender {
        self.clock = Box::new(clock);
        self
    }

    /// Takes a notification. One that Apple would refuse for its size is
    /// answered at once, without a request; a full queue refuses it.
    pub fn send(&self, notification: Notification) -> Result<Pending, QueueFull> {
        let (reply, outcome) = channel::bounded(1);
        let limit = notification.push_type.max_payload();
        let refusal = if notification.payload.len() > limit {
            Some(Failure::PayloadTooLarge {
                size: notification.payload.len(),
                limit,
            })
        } else {
            match &notification.collapse_id {
                Some(id) if id.len() > MAX_COLLAPSE_ID => {
                    Some(Failure::CollapseIdTooLong { size: id.len() })
                }
                _ => None,
            }
        };
        if let Some(why) = refusal {
            bump(&self.counters.failed);
            let _ = reply.try_send(Outcome::Failed { why });
            return Ok(Pending(Box::pin(outcome)));
        }
        self.queue
            .try_send(Job {
                notification,
                reply,
            })
            .map_err(|_| {
                // Not sent, not refused by Apple: a failure like the others.
                bump(&self.counters.failed);
                QueueFull
            })?;
        Ok(Pending(Box::pin(outcome)))
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            sent: c.sent.get(),
            accepted: c.accepted.get(),
            rejected: c.rejected.borrow().clone(),
            retried: c.retried.get(),
            devices_gone: c.devices_gone.get(),
            failed: c.failed.get(),
            connections: c.connections.get(),
            queued: self.queue.len(),
        }
    }

    /// Delivers notifications until dropped. Dropping it cancels what is in
    /// flight: those notifications end as [`Failure::Stopped`].
    pub async fn run(self: Rc<Self>) {
        let tasks = LocalExecutor::new();
        for _ in 0..self.config.max_streams.max(1) {
            tasks.spawn(Rc::clone(&self).worker()).detach();
        }
        tasks.run(self.keep_connected()).await;
    }

    /// Connects, drives the connection until it ends, and again; waits
    /// before a new attempt once an attempt failed, or a connection ended
    /// soon without answering anything.
    async fn keep_connected(&self) {
        let mut failures = 0;
        loop {
            if failures > 0 {
                Timer::after(self.config.backoff(failures)).await;
            }
            let connecting = http2::connect(self.config.addr, &self.config.host, &self.tls);
            let limit = self.config.connect_timeout;
            let connected = crate::time::timeout(limit, connecting)
                .await
                .unwrap_or(Err(http2::ConnectError::TimedOut(limit)));
            let driver = match connected {
                Ok((http2, driver)) => {
                    bump(&self.counters.connections);
                    let mut link = self.link.borrow_mut();
                    link.generation += 1;
                    link.http2 = Some(http2);
                    link.abandoned = false;
                    driver
                }
                Err(e) => {
                    log::warn!("APNs: {e}");
                    failures += 1;
                    let mut link = self.link.borrow_mut();
                    link.generation += 1;
                    link.http2 = None;
                    link.last_error = e.to_string();
                    drop(link);
                    self.link_changed.notify();
                    continue;
                }
            };
            self.link_changed.notify();
            let answered_before = self.counters.answers.get();
            let since = Instant::now();
            let ended = async {
                match driver.await {
                    Ok(()) => "connection closed by APNs".to_string(),
                    Err(e) => format!("connection lost: {e}"),
                }
            };
            let abandoned = async {
                self.link_changed
                    .until(|| self.link.borrow().abandoned)
                    .await;
                "connection dropped: a request got no answer in time".to_string()
            };
            // Dropping the driver ends the connection's streams with errors.
            let ended = smol::future::or(ended, abandoned).await;
            log::info!("APNs: {ended}");
            {
                let mut link = self.link.borrow_mut();
                link.http2 = None;
                link.last_error = ended;
            }
            // A connection that served, or lived long (APNs closes idle
            // ones), worked: the next attempt is at once.
            let worked = self.counters.answers.get() != answered_before
                || since.elapsed() >= self.config.backoff_max;
            if worked {
                failures = 0;
            } else {
                failures += 1;
            }
        }
    }

    async fn worker(self: Rc<Self>) {
        while let Ok(job) = self.taken.recv().await {
            let outcome = self.deliver(&job.notification).await;
            match &outcome {
                Outcome::Accepted { .. } => bump(&self.counters.accepted),
                Outcome::DeviceGone { reason, .. } | Outcome::Rejected { reason, .. } => {
                    *self
                        .counters
                        .rejected
                        .borrow_mut()
                        .entry(reason.name().to_string())
                        .or_default() += 1;
                }
                Outcome::Failed { .. } => bump(&self.counters.failed),
            }
            if let Outcome::DeviceGone { .. } = outcome {
                bump(&self.counters.devices_gone);
                (self.on_device_gone)(&job.notification.device);
            }
            let _ = job.reply.try_send(outcome);
        }
    }

    /// Sees one notification through its attempts.
    async fn deliver(&self, n: &Notification) -> Outcome {
        let path = format!("/3/device/{}", n.device.as_str());
        let expiration = n.expiration.to_string();
        let max_attempts = self.config.max_attempts.max(1);
        let mut attempts = 0;
        let mut token_renewed = false;
        // The connection a request failed on: not to be used again.
        let mut failed_on = None;
        loop {
            let (mut http2, generation) = match self.connection(failed_on, &mut attempts).await {
                Ok(connection) => connection,
                Err(why) => {
                    return Outcome::Failed {
                        why: Failure::Unreachable(why),
                    };
                }
            };
            if attempts > 0 {
                bump(&self.counters.retried);
            }
            attempts += 1;
            let bearer = self
                .token
                .as_ref()
                .map(|token| format!("bearer {}", token.borrow_mut().bearer((self.clock)())));
            let topic = n.push_type.topic(&self.config.topic);
            let mut headers = vec![
                ("apns-topic", topic.as_str()),
                ("apns-push-type", n.push_type.as_str()),
                ("apns-priority", n.priority.as_str()),
                ("apns-expiration", expiration.as_str()),
            ];
            if let Some(id) = &n.collapse_id {
                headers.push(("apns-collapse-id", id));
            }
            if let Some(id) = &n.apns_id {
                headers.push(("apns-id", id));
            }
            if let Some(bearer) = &bearer {
                headers.push(("authorization", bearer));
            }
            bump(&self.counters.sent);
            let posted = smol::future::or(
                async { Some(http2.post(&path, &headers, n.payload.clone()).await) },
                async {
                    Timer::after(self.config.request_timeout).await;
                    None
                },
            )
            .await;
            let Some(posted) = posted else {
                let waited = self.config.request_timeout;
                log::warn!("APNs: no answer within {waited:?}; reconnecting");
                self.abandon(generation);
                if attempts >= max_attempts {
                    return Outcome::Failed {
                        why: Failure::Unreachable(format!("no answer within {waited:?}")),
                    };
                }
                failed_on = Some(generation);
                continue;
            };
            let response = match posted {
                Ok(response) => response,
                Err(PostError::Invalid(e)) => {
                    return Outcome::Failed {
                        why: Failure::Invalid(e.to_string()),
                    };
                }
                Err(PostError::Http2(e)) => {
                    log::debug!("APNs: request failed: {e}");
                    if attempts >= max_attempts {
                        return Outcome::Failed {
                            why: Failure::Unreachable(e.to_string()),
                        };
                    }
                    if e.is_reset() && !e.is_go_away() {
                        // The stream alone was reset: the connection still serves.
                        Timer::after(self.config.backoff(attempts)).await;
                        failed_on = None;
                    } else {
                        failed_on = Some(generation);
                    }
                    continue;
                }
            };
            bump(&self.counters.answers);
            match self.judge(&response, bearer.as_deref(), &mut token_renewed) {
                Next::Done(outcome) => return outcome,
                Next::NewToken => {}
                Next::Backoff { status, reason } => {
                    if attempts >= max_attempts {
                        return Outcome::Failed {
                            why: Failure::GaveUp { status, reason },
                        };
                    }
                    Timer::after(self.config.backoff(attempts)).await;
                }
            }
            failed_on = None;
        }
    }

    /// What a response calls for.
    fn judge(&self, response: &http2::Response, sent: Option<&str>, renewed: &mut bool) -> Next {
        let status = response.status.as_u16();
        if status == 200 {
            let apns_id = response
                .headers
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Next::Done(Outcome::Accepted { apns_id });
        }
        let reason = Reason::from_response(status, &response.body);
        match reason.kind() {
            Kind::DeviceGone
                if reason != Reason::BadDeviceToken
                    || self.config.bad_device_token_is_gone
                    || self.counters.accepted.get() > 0 =>
            {
                Next::Done(Outcome::DeviceGone { status, reason })
            }
            Kind::Retry => Next::Backoff { status, reason },
            _ if status == 403 && reason.wants_new_provider_token() && !*renewed => {
                let (Some(token), Some(sent)) = (&self.token, sent) else {
                    return Next::Done(Outcome::Rejected { status, reason });
                };
                let now = (self.clock)();
                let mut token = token.borrow_mut();
                // Another worker may have replaced the refused token already.
                let replaced = format!("bearer {}", token.bearer(now)) != sent;
                if replaced || token.invalidate(now) {
                    *renewed = true;
                    Next::NewToken
                } else {
                    Next::Done(Outcome::Rejected { status, reason })
                }
            }
            _ => Next::Done(Outcome::Rejected { status, reason }),
        }
    }

    /// Has the connection of `generation` dropped, if it is still the current one.
    fn abandon(&self, generation: u64) {
        let mut link = self.link.borrow_mut();
        if link.generation == generation && link.http2.is_some() && !link.abandoned {
            link.abandoned = true;
            drop(link);
            self.link_changed.notify();
        }
    }

    /// The current connection, once there is one other than `not`. Each
    /// failed connection attempt meanwhile counts as one of `attempts`; past
    /// the limit, the last attempt's error.
    async fn connection(
        &self,
        not: Option<u64>,
        attempts: &mut u32,
    ) -> Result<(Http2, u64), String> {
        loop {
            let seen = {
                let link = self.link.borrow();
                match &link.http2 {
                    Some(http2) if Some(link.generation) != not => {
                        return Ok((http2.clone(), link.generation));
                    }
                    _ => link.generation,
                }
            };
            self.link_changed
                .until(|| self.link.borrow().generation != seen)
                .await;
            let link = self.link.borrow();
            if link.http2.is_none() {
                *attempts += 1;
                if *attempts >= self.config.max_attempts.max(1) {
                    return Err(link.last_error.clone());
                }
            }
        }
    }
}
