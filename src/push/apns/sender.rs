//! The APNs sender: Apple's provider API as a [`Service`] of the shared
//! sender (`push::sender`: queue, HTTP/2 streams, retries, counters). Each
//! response is sorted by Apple's reason into accepted, device gone, retry,
//! new provider token, or rejected.
//!
//! This module knows APNs semantics; it must not speak HTTP/2 itself nor
//! touch the device registry (the `on_device_gone` hook given at
//! construction does).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use async_native_tls::TlsConnector;
use bytes::Bytes;

use super::provider_token::ProviderToken;
use super::reason::{Kind, Reason};
use crate::push::http2::Response;
use crate::push::registry::DeviceToken;
use crate::push::sender::{self, Origin, Request, Service, Verdict};

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
pub type Outcome = sender::Outcome<Reason>;
/// Why a notification was not delivered without Apple refusing it for good.
pub type Failure = sender::Failure<Reason>;
/// The outcome to come of a notification taken by [`Sender::send`].
pub type Pending = sender::Pending<Reason>;
pub use sender::{QueueFull, Stats};

/// The APNs sender: [`Apns`] on the shared machinery.
pub type Sender = sender::Sender<Apns>;

/// What APNs means by requests and answers.
pub struct Apns {
    origin: Origin,
    topic: String,
    token: Option<RefCell<ProviderToken>>,
    /// Unix seconds, by which the provider token is minted and refreshed.
    clock: RefCell<Box<dyn Fn() -> u64>>,
    bad_device_token_is_gone: bool,
}

impl sender::Sender<Apns> {
    /// `tls` must request ALPN `h2`, and for [`Auth::Certificate`] carry the
    /// identity (see `credentials::load_identity`). `on_device_gone` is called
    /// once for each token Apple reports gone.
    pub fn new(
        config: Config,
        auth: Auth,
        tls: TlsConnector,
        on_device_gone: impl Fn(&DeviceToken) + 'static,
    ) -> Sender {
        let apns = Apns {
            origin: Origin {
                addr: Some(config.addr),
                ..Origin::new(&config.host, config.addr.port())
            },
            topic: config.topic,
            token: match auth {
                Auth::Token(token) => Some(RefCell::new(token)),
                Auth::Certificate => None,
            },
            clock: RefCell::new(Box::new(crate::time::unix_now)),
            bad_device_token_is_gone: config.bad_device_token_is_gone,
        };
        let limits = sender::Config {
            max_streams: config.max_streams,
            max_queue: config.max_queue,
            max_attempts: config.max_attempts,
            backoff_first: config.backoff_first,
            backoff_max: config.backoff_max,
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            ..sender::Config::default()
        };
        let gone = move |n: &Notification| on_device_gone(&n.device);
        Sender::for_service(limits, apns, tls, None, gone)
    }

    /// Replaces the clock (Unix seconds) the provider token is minted and
    /// refreshed by.
    pub fn with_clock(self, clock: impl Fn() -> u64 + 'static) -> Sender {
        *self.service().clock.borrow_mut() = Box::new(clock);
        self
    }
}

impl Service for Apns {
    type Message = Notification;
    type Reason = Reason;
    const NAME: &'static str = "APNs";

    fn origin<'m>(&'m self, _: &'m Notification) -> &'m Origin {
        &self.origin
    }

    fn home(&self) -> Option<&Origin> {
        Some(&self.origin)
    }

    fn check(&self, n: &Notification) -> Result<(), Failure> {
        let limit = n.push_type.max_payload();
        if n.payload.len() > limit {
            return Err(Failure::TooLong {
                what: "payload",
                size: n.payload.len(),
                limit,
            });
        }
        match &n.collapse_id {
            Some(id) if id.len() > MAX_COLLAPSE_ID => Err(Failure::TooLong {
                what: "collapse id",
                size: id.len(),
                limit: MAX_COLLAPSE_ID,
            }),
            _ => Ok(()),
        }
    }

    async fn request(&self, n: &Notification) -> Result<Request, Failure> {
        let mut headers = vec![
            ("apns-topic", n.push_type.topic(&self.topic)),
            ("apns-push-type", n.push_type.as_str().to_string()),
            ("apns-priority", n.priority.as_str().to_string()),
            ("apns-expiration", n.expiration.to_string()),
        ];
        if let Some(id) = &n.collapse_id {
            headers.push(("apns-collapse-id", id.clone()));
        }
        if let Some(id) = &n.apns_id {
            headers.push(("apns-id", id.clone()));
        }
        if let Some(token) = &self.token {
            let now = (self.clock.borrow())();
            headers.push((
                "authorization",
                format!("bearer {}", token.borrow_mut().bearer(now)),
            ));
        }
        Ok(Request {
            path: format!("/3/device/{}", n.device.as_str()),
            headers,
            body: n.payload.clone(),
        })
    }

    fn judge(&self, response: &Response, request: &Request, served: bool) -> Verdict<Reason> {
        let status = response.status.as_u16();
        if status == 200 {
            let id = response
                .headers
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Verdict::Accepted(id);
        }
        let reason = Reason::from_response(status, &response.body);
        match reason.kind() {
            Kind::DeviceGone
                if reason != Reason::BadDeviceToken || self.bad_device_token_is_gone || served =>
            {
                Verdict::Gone { status, reason }
            }
            Kind::Retry => Verdict::Retry {
                status,
                reason,
                after: sender::retry_after(response),
            },
            _ if status == 403 && reason.wants_new_provider_token() => {
                let sent = request
                    .headers
                    .iter()
                    .find(|(name, _)| *name == "authorization");
                let (Some(token), Some((_, sent))) = (&self.token, sent) else {
                    return Verdict::Rejected { status, reason };
                };
                let now = (self.clock.borrow())();
                let mut token = token.borrow_mut();
                // Another worker may have replaced the refused token already.
                let replaced = format!("bearer {}", token.bearer(now)) != *sent;
                if replaced || token.invalidate(now) {
                    Verdict::Renew { status, reason }
                } else {
                    Verdict::Rejected { status, reason }
                }
            }
            _ => Verdict::Rejected { status, reason },
        }
    }

    fn reason_name(reason: &Reason) -> String {
        reason.name().to_string()
    }
}
