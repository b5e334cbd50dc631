//! The FCM sender: FCM HTTP v1's `messages:send`, one request per
//! registration token, as a [`Service`] of the shared sender (one HTTP/2
//! connection, several streams, retries). Its bearer token comes from the
//! OAuth token endpoint (`oauth.rs`), fetched once for every request that
//! needs it and again before it expires or when FCM refuses it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use async_native_tls::TlsConnector;
use bytes::Bytes;

use super::credentials::ServiceAccount;
use super::oauth::{self, TokenCache, TokenError};
use super::reason::{Kind, Reason};
use crate::push::http2::Response;
use crate::push::registry::FcmToken;
use crate::push::sender::origin::{self, ConnectError, Origin};
use crate::push::sender::{self, Failure, Request, Service, Verdict, Watch};

pub const PRODUCTION_ENDPOINT: &str = "https://fcm.googleapis.com";

/// FCM's limit on a message's payload (bytes): its `data` and
/// `notification`. The whole message is allowed a little more.
pub const MAX_MESSAGE: usize = 4096 + 1024;

/// The FCM sender: [`Fcm`] on the shared machinery.
pub type Sender = sender::Sender<Fcm>;
pub type Outcome = sender::Outcome<Reason>;
pub type Pending = sender::Pending<Reason>;

/// One message for one registration token.
#[derive(Debug)]
pub struct Message {
    pub token: FcmToken,
    /// FCM v1's `message` object without `token`, shared by every device
    /// of one push.
    pub message: Rc<str>,
}

impl Message {
    pub fn new(token: FcmToken, message: Rc<str>) -> Message {
        Message { token, message }
    }

    /// `{"message":{"token":T, ...}}`.
    fn body(&self) -> String {
        let object = self.message.trim();
        let inner = object
            .strip_prefix('{')
            .and_then(|o| o.strip_suffix('}'))
            .unwrap_or("")
            .trim();
        let token = serde_json::to_string(self.token.as_str()).unwrap_or_default();
        match inner.is_empty() {
            true => format!(r#"{{"message":{{"token":{token}}}}}"#),
            false => format!(r#"{{"message":{{"token":{token},{inner}}}}}"#),
        }
    }
}

/// Where FCM and its token endpoint are.
pub struct Endpoints {
    /// `messages:send` is under it.
    pub send: Origin,
    /// The OAuth token endpoint's URL: the service account's `token_uri`,
    /// or `--fcm-token-endpoint`.
    pub token: String,
}

/// What FCM means by requests and answers.
pub struct Fcm {
    origin: Origin,
    path: String,
    token_origin: Origin,
    token_path: String,
    account: ServiceAccount,
    tls: TlsConnector,
    tls_http1: TlsConnector,
    cache: RefCell<TokenCache>,
    /// A fetch of a new token is under way: the others wait for it.
    fetching: Cell<bool>,
    fetched: Watch,
    /// Why the last fetch failed, for those that waited for it.
    last_error: RefCell<Option<Failure<Reason>>>,
    /// How long a fetch may take.
    fetch_timeout: Duration,
    /// Unix seconds, by which tokens are asked for and expire.
    clock: Box<dyn Fn() -> u64>,
}

impl Fcm {
    /// `tls` asks for ALPN `h2`, `tls_http1` for `http/1.1` (for a token
    /// endpoint that turns HTTP/2 down).
    pub fn new(
        account: ServiceAccount,
        endpoints: Endpoints,
        tls: TlsConnector,
        tls_http1: TlsConnector,
    ) -> Result<Fcm, String> {
        let (token_origin, token_path) = Origin::split_url(&endpoints.token)
            .map(|(origin, path)| (origin, path.to_string()))
            .map_err(|e| format!("the FCM token endpoint {e}"))?;
        Ok(Fcm {
            path: format!("/v1/projects/{}/messages:send", account.project_id),
            origin: endpoints.send,
            token_origin,
            token_path,
            account,
            tls,
            tls_http1,
            cache: RefCell::default(),
            fetching: Cell::new(false),
            fetched: Watch::default(),
            last_error: RefCell::new(None),
            fetch_timeout: Duration::from_secs(30),
            clock: Box::new(crate::time::unix_now),
        })
    }

    /// Replaces the clock (Unix seconds).
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + 'static) -> Fcm {
        self.clock = Box::new(clock);
        self
    }

    pub fn project_id(&self) -> &str {
        &self.account.project_id
    }

    /// The `authorization` value to send: the cached token's, or a new one's.
    async fn bearer(&self) -> Result<String, Failure<Reason>> {
        loop {
            if let Some(bearer) = self.cache.borrow().bearer((self.clock)()) {
                return Ok(bearer);
            }
            if self.fetching.get() {
                self.fetched.until(|| !self.fetching.get()).await;
                if let Some(failed) = self.last_error.borrow().clone() {
                    return Err(failed);
                }
                continue;
            }
            self.fetching.set(true);
            let fetched = crate::time::timeout(self.fetch_timeout, self.fetch())
                .await
                .unwrap_or_else(|| {
                    Err(Failure::Unreachable(format!(
                        "the OAuth token endpoint gave no token within {:?}",
                        self.fetch_timeout
                    )))
                });
            self.fetching.set(false);
            let failed = match fetched {
                Ok(token) => {
                    self.cache.borrow_mut().store(token);
                    None
                }
                Err(why) => {
                    log::warn!("FCM: no access token: {why}");
                    Some(why)
                }
            };
            *self.last_error.borrow_mut() = failed.clone();
            self.fetched.notify();
            if let Some(why) = failed {
                return Err(why);
            }
        }
    }

    /// Asks the token endpoint for a token (RFC 7523's JWT-bearer grant), on
    /// a connection of its own: once an hour does not need one kept.
    async fn fetch(&self) -> Result<oauth::AccessToken, Failure<Reason>> {
        let now = (self.clock)();
        let assertion = oauth::assertion(&self.account, now)
            .map_err(|e| Failure::Credentials(format!("cannot sign the OAuth assertion: {e}")))?;
        let body = Bytes::from(oauth::token_request_body(&assertion));
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        let unreachable =
            |e: String| Failure::Unreachable(format!("the OAuth token endpoint: {e}"));
        let response = match origin::connect_h2(&self.token_origin, &self.tls).await {
            Ok((mut http2, driver)) => {
                let post = async {
                    let posted = http2.post(&self.token_path, &headers, body).await;
                    posted.map_err(|e| e.to_string())
                };
                let drive = async {
                    Err(match driver.await {
                        Ok(()) => "connection closed".to_string(),
                        Err(e) => e.to_string(),
                    })
                };
                smol::future::or(post, drive).await.map_err(unreachable)?
            }
            Err(ConnectError::Http2(_) | ConnectError::Http2Closed) => {
                let mut http1 = origin::connect_h1(&self.token_origin, &self.tls_http1)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                http1
                    .post(&self.token_path, &headers, body)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?
            }
            Err(e) => return Err(unreachable(e.to_string())),
        };
        oauth::parse_token_response(response.status.as_u16(), &response.body, (self.clock)())
            .map_err(|e| match e.retry_may_help() {
                true => unreachable(e.to_string()),
                false => token_refused(e),
            })
    }
}

fn token_refused(e: TokenError) -> Failure<Reason> {
    Failure::Credentials(e.to_string())
}

impl Service for Fcm {
    type Message = Message;
    type Reason = Reason;
    const NAME: &'static str = "FCM";

    fn origin<'m>(&'m self, _: &'m Message) -> &'m Origin {
        &self.origin
    }

    fn home(&self) -> Option<&Origin> {
        Some(&self.origin)
    }

    fn check(&self, message: &Message) -> Result<(), Failure<Reason>> {
        let size = message.message.len();
        if size > MAX_MESSAGE {
            return Err(Failure::TooLong {
                what: "message",
                size,
                limit: MAX_MESSAGE,
            });
        }
        Ok(())
    }

    async fn request(&self, message: &Message) -> Result<Request, Failure<Reason>> {
        let bearer = self.bearer().await?;
        Ok(Request {
            path: self.path.clone(),
            headers: vec![
                ("authorization", bearer),
                (
                    "content-type",
                    "application/json; charset=UTF-8".to_string(),
                ),
            ],
            body: Bytes::from(message.body()),
        })
    }

    fn judge(&self, response: &Response, request: &Request, _: bool) -> Verdict<Reason> {
        let status = response.status.as_u16();
        if status == 200 {
            let id = serde_json::from_slice::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|v| v.get("name")?.as_str().map(str::to_string));
            return Verdict::Accepted(id);
        }
        let reason = Reason::from_response(status, &response.body);
        match reason.kind() {
            Kind::Gone => Verdict::Gone { status, reason },
            Kind::Retry => Verdict::Retry {
                status,
                reason,
                after: sender::retry_after(response),
            },
            // Our access token refused. A 401 THIRD_PARTY_AUTH_ERROR is
            // Apple's or the browser's refusal of the app's credentials:
            // a new token of ours would not help.
            Kind::Credentials if status == 401 && reason == Reason::Unauthenticated => {
                let sent = request
                    .headers
                    .iter()
                    .find(|(name, _)| *name == "authorization")
                    .and_then(|(_, v)| v.strip_prefix("Bearer "));
                let now = (self.clock)();
                let mut cache = self.cache.borrow_mut();
                // Another request may have replaced the refused token already.
                let replaced = sent.is_some_and(|sent| cache.current(now) != Some(sent));
                if replaced || sent.is_some_and(|sent| cache.invalidate(sent)) {
                    Verdict::Renew { status, reason }
                } else {
                    log::warn!("FCM refused our credentials: {reason}");
                    Verdict::Rejected { status, reason }
                }
            }
            Kind::Credentials => {
                log::warn!("FCM refused our credentials: {reason}");
                Verdict::Rejected { status, reason }
            }
            Kind::Rejected => Verdict::Rejected { status, reason },
        }
    }

    fn reason_name(reason: &Reason) -> String {
        reason.name().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(object: &str) -> Message {
        Message::new(FcmToken::parse("abc:DEF-123_x").unwrap(), Rc::from(object))
    }

    #[test]
    fn the_token_goes_first_in_the_message() {
        let body = message(r#"{"notification":{"title":"Hi"}}"#).body();
        assert_eq!(
            body,
            r#"{"message":{"token":"abc:DEF-123_x","notification":{"title":"Hi"}}}"#
        );
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["message"]["notification"]["title"], "Hi");
        assert_eq!(
            message(" { } ").body(),
            r#"{"message":{"token":"abc:DEF-123_x"}}"#
        );
    }
}
