//! The Web Push sender: RFC 8030's POST of an encrypted message to a
//! subscription's endpoint, signed with VAPID, as a [`Service`] of the shared
//! sender (one lane per push service's origin, HTTP/2 or HTTP/1.1).
//!
//! The message is encrypted at each attempt (a fresh salt and key pair each
//! time, as RFC 8291 wants), so a queued message holds the plaintext once for
//! all the devices of a push, not a ciphertext per device.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use bytes::Bytes;

use super::encrypt::{self, SubscriptionKeys};
use super::vapid::{Audience, VapidSigner};
use crate::push::http2::Response;
use crate::push::registry::Subscription;
use crate::push::sender::{self, Failure, Origin, Request, Service, Verdict};

/// RFC 8030's `Urgency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

impl Urgency {
    pub fn parse(text: &str) -> Option<Urgency> {
        match text {
            "very-low" => Some(Urgency::VeryLow),
            "low" => Some(Urgency::Low),
            "normal" => Some(Urgency::Normal),
            "high" => Some(Urgency::High),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// RFC 8030's longest `Topic`: 32 characters of the base64url alphabet.
pub const MAX_TOPIC: usize = 32;

/// Whether `topic` is one RFC 8030 allows.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What every device of one push gets: shared by their messages.
#[derive(Debug)]
pub struct Options {
    /// The plaintext: what the service worker's `event.data.text()` gives.
    pub payload: Bytes,
    /// Seconds the push service keeps it for an offline browser.
    pub ttl: u32,
    pub urgency: Option<Urgency>,
    pub topic: Option<String>,
}

/// One message for one subscription.
#[derive(Debug)]
pub struct Message {
    pub subscription: Subscription,
    origin: Origin,
    pub options: Rc<Options>,
}

impl Message {
    /// A message to `subscription` (whose endpoint the registry checked is
    /// an https URL).
    pub fn new(subscription: Subscription, options: Rc<Options>) -> Result<Message, String> {
        let (origin, _) = Origin::split_url(&subscription.endpoint)?;
        Ok(Message {
            subscription,
            origin,
            options,
        })
    }

    fn path(&self) -> &str {
        Origin::split_url(&self.subscription.endpoint)
            .map(|(_, path)| path)
            .unwrap_or("/")
    }
}

/// Why a push service refused a message, by its status (RFC 8030 defines no
/// body; services' bodies differ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// 404: the subscription does not exist.
    NotFound,
    /// 410: the subscription expired or was unsubscribed.
    Gone,
    /// 413: the message is too large for the service.
    PayloadTooLarge,
    /// 400: the request is malformed (a header, the encryption).
    BadRequest,
    /// 401, 403: the VAPID signature or key is refused.
    VapidRefused(u16),
    /// 429.
    TooManyRequests,
    /// 5xx.
    ServerError(u16),
    Other(u16),
}

impl Reason {
    pub fn from_status(status: u16) -> Reason {
        match status {
            404 => Reason::NotFound,
            410 => Reason::Gone,
            413 => Reason::PayloadTooLarge,
            400 => Reason::BadRequest,
            401 | 403 => Reason::VapidRefused(status),
            429 => Reason::TooManyRequests,
            500..=599 => Reason::ServerError(status),
            _ => Reason::Other(status),
        }
    }

    /// The name it is counted under.
    pub fn name(&self) -> String {
        match self {
            Reason::NotFound => "NotFound".into(),
            Reason::Gone => "Gone".into(),
            Reason::PayloadTooLarge => "PayloadTooLarge".into(),
            Reason::BadRequest => "BadRequest".into(),
            Reason::VapidRefused(_) => "VapidRefused".into(),
            Reason::TooManyRequests => "TooManyRequests".into(),
            Reason::ServerError(_) => "ServerError".into(),
            Reason::Other(status) => format!("Status{status}"),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotFound => f.write_str("NotFound: no such subscription"),
            Reason::Gone => f.write_str("Gone: the subscription expired or was unsubscribed"),
            Reason::PayloadTooLarge => f.write_str("PayloadTooLarge"),
            Reason::BadRequest => f.write_str("BadRequest"),
            Reason::VapidRefused(status) => {
                write!(
                    f,
                    "VapidRefused: the push service refused our VAPID key ({status})"
                )
            }
            Reason::TooManyRequests => f.write_str("TooManyRequests"),
            Reason::ServerError(status) => write!(f, "ServerError {status}"),
            Reason::Other(status) => write!(f, "status {status}"),
        }
    }
}

/// The Web Push sender: [`WebPush`] on the shared machinery.
pub type Sender = sender::Sender<WebPush>;
pub type Outcome = sender::Outcome<Reason>;
pub type Pending = sender::Pending<Reason>;

/// What Web Push means by requests and answers.
pub struct WebPush {
    signer: RefCell<VapidSigner>,
    /// Unix seconds, by which VAPID tokens are signed.
    clock: Box<dyn Fn() -> u64>,
}

impl WebPush {
    pub fn new(signer: VapidSigner) -> WebPush {
        WebPush {
            signer: RefCell::new(signer),
            clock: Box::new(crate::time::unix_now),
        }
    }
}

impl Service for WebPush {
    type Message = Message;
    type Reason = Reason;
    const NAME: &'static str = "Web Push";

    fn origin<'m>(&'m self, message: &'m Message) -> &'m Origin {
        &message.origin
    }

    fn home(&self) -> Option<&Origin> {
        None
    }

    fn check(&self, message: &Message) -> Result<(), Failure<Reason>> {
        let size = message.options.payload.len();
        if size > encrypt::MAX_PAYLOAD {
            return Err(Failure::TooLong {
                what: "payload",
                size,
                limit: encrypt::MAX_PAYLOAD,
            });
        }
        Ok(())
    }

    async fn request(&self, message: &Message) -> Result<Request, Failure<Reason>> {
        let invalid = |why: String| Failure::Invalid(why);
        let keys = &message.subscription.keys;
        let keys = SubscriptionKeys::from_base64url(&keys.p256dh, &keys.auth)
            .map_err(|e| invalid(e.to_string()))?;
        let body = encrypt::encrypt(&keys, &message.options.payload)
            .map_err(|e| invalid(format!("cannot encrypt: {e}")))?;
        let audience = Audience::of_endpoint(&message.subscription.endpoint)
            .map_err(|e| invalid(e.to_string()))?;
        let authorization = self
            .signer
            .borrow_mut()
            .authorization(&audience, (self.clock)())
            .map(str::to_string)
            .map_err(|e| invalid(format!("cannot sign the VAPID token: {e}")))?;
        let options = &message.options;
        let mut headers = vec![
            ("ttl", options.ttl.to_string()),
            ("content-encoding", "aes128gcm".to_string()),
            ("content-type", "application/octet-stream".to_string()),
            ("authorization", authorization),
        ];
        if let Some(urgency) = options.urgency {
            headers.push(("urgency", urgency.as_str().to_string()));
        }
        if let Some(topic) = &options.topic {
            headers.push(("topic", topic.clone()));
        }
        Ok(Request {
            path: message.path().to_string(),
            headers,
            body: body.into(),
        })
    }

    fn judge(&self, response: &Response, _: &Request, _: bool) -> Verdict<Reason> {
        let status = response.status.as_u16();
        if response.status.is_success() {
            let id = response
                .headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Verdict::Accepted(id);
        }
        let reason = Reason::from_status(status);
        match reason {
            Reason::NotFound | Reason::Gone => Verdict::Gone { status, reason },
            Reason::TooManyRequests | Reason::ServerError(_) => Verdict::Retry {
                status,
                reason,
                after: sender::retry_after(response),
            },
            Reason::VapidRefused(_) => {
                log::warn!(
                    "Web Push: the push service answered {status}: our VAPID key or \
                     --vapid-subject is refused"
                );
                Verdict::Rejected { status, reason }
            }
            _ => Verdict::Rejected { status, reason },
        }
    }

    fn reason_name(reason: &Reason) -> String {
        reason.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sorted_once() {
        let judge = |status: u16| {
            let service = WebPush::new(VapidSigner::new(
                super::super::vapid::VapidKey::generate().unwrap(),
                super::super::vapid::Subject::parse("mailto:ops@example.com").unwrap(),
            ));
            let response = Response {
                status: http::StatusCode::from_u16(status).unwrap(),
                headers: http::HeaderMap::new(),
                body: Bytes::new(),
            };
            let request = Request {
                path: "/".into(),
                headers: Vec::new(),
                body: Bytes::new(),
            };
            service.judge(&response, &request, false)
        };
        assert_eq!(judge(201), Verdict::Accepted(None));
        assert!(matches!(judge(404), Verdict::Gone { .. }));
        assert!(matches!(judge(410), Verdict::Gone { .. }));
        assert!(matches!(judge(429), Verdict::Retry { .. }));
        assert!(matches!(judge(503), Verdict::Retry { .. }));
        assert!(matches!(judge(500), Verdict::Retry { .. }));
        assert!(matches!(judge(413), Verdict::Rejected { .. }));
        assert!(matches!(judge(400), Verdict::Rejected { .. }));
        assert!(matches!(judge(403), Verdict::Rejected { .. }));
    }

    #[test]
    fn topics_and_urgencies() {
        assert!(valid_topic("new-mail_1"));
        assert!(!valid_topic(""));
        assert!(!valid_topic(&"a".repeat(33)));
        assert!(!valid_topic("a b"));
        assert!(!valid_topic("a=b"));
        for u in ["very-low", "low", "normal", "high"] {
            assert_eq!(Urgency::parse(u).unwrap().as_str(), u);
        }
        assert_eq!(Urgency::parse("urgent"), None);
    }
}
