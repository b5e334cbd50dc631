//! The test Web Push service (`common::webpush`) against pushhub's own Web
//! Push pieces: a message encrypted by `push::webpush::encrypt` and signed by
//! `push::webpush::vapid` reaches it over HTTP/2 (`push::http2`) and over
//! HTTP/1.1 (`push::http1`), is decrypted by an independent implementation,
//! and what a real push service would refuse is refused.

mod common;

use std::net::TcpStream;
use std::sync::Arc;

use bytes::Bytes;
use common::webpush::{FakePushService, Protocol, PushAnswer, PushScript, Refused, accept_all};
use common::{Deadline, STEP, run, within};
use http::HeaderMap;
use pushhub::push::http1::{Http1, Http1Error};
use pushhub::push::webpush::encrypt::{SubscriptionKeys, encrypt};
use pushhub::push::webpush::vapid::{Audience, Subject, TOKEN_LIFETIME, VapidKey, VapidSigner};
use pushhub::time::unix_now;
use serde_json::Value;
use smol::Async;

const BOTH: [Protocol; 2] = [Protocol::Http2, Protocol::Http1];

fn signer() -> VapidSigner {
    VapidSigner::new(
        VapidKey::generate().unwrap(),
        Subject::parse("mailto:ops@example.com").unwrap(),
    )
}

/// A push to `subscription` as pushhub would make it: the body encrypted to
/// its keys, the `Authorization` signed for its endpoint's origin now.
struct Push {
    path: String,
    authorization: String,
    body: Vec<u8>,
    ttl: &'static str,
    extra: Vec<(&'static str, String)>,
}

impl Push {
    fn new(subscription: &Value, signer: &mut VapidSigner, text: &str) -> Push {
        let endpoint = subscription["endpoint"].as_str().unwrap();
        let keys = SubscriptionKeys::from_base64url(
            subscription["keys"]["p256dh"].as_str().unwrap(),
            subscription["keys"]["auth"].as_str().unwrap(),
        )
        .unwrap();
        let audience = Audience::of_endpoint(endpoint).unwrap();
        let authorization = signer
            .authorization(&audience, unix_now())
            .unwrap()
            .to_string();
        let path = endpoint.split_once("/push/").unwrap().1;
        Push {
            path: format!("/push/{path}"),
            authorization,
            body: encrypt(&keys, text.as_bytes()).unwrap(),
            ttl: "60",
            extra: Vec::new(),
        }
    }

    fn headers(&self) -> Vec<(&'static str, &str)> {
        let mut headers = vec![
            ("authorization", self.authorization.as_str()),
            ("content-encoding", "aes128gcm"),
            ("ttl", self.ttl),
        ];
        headers.extend(
            self.extra
                .iter()
                .map(|(name, value)| (*name, value.as_str())),
        );
        headers
    }
}

/// The response's status and headers.
struct Answer {
    status: u16,
    headers: HeaderMap,
}

/// Sends `push` on a connection of its own, in the service's protocol.
async fn send(service: &FakePushService, push: &Push) -> Answer {
    let body = Bytes::from(push.body.clone());
    let headers = push.headers();
    let response = match service.protocol {
        Protocol::Http2 => {
            let (mut conn, driver) =
                pushhub::push::http2::connect(service.addr, "localhost", &service.connector())
                    .await
                    .unwrap();
            let post = async { Some(conn.post(&push.path, &headers, body).await.unwrap()) };
            let drive = async {
                let _ = driver.await;
                None
            };
            within(STEP, "an HTTP/2 POST", smol::future::or(post, drive))
                .await
                .expect("the HTTP/2 connection ended before the response")
        }
        Protocol::Http1 => {
            let mut conn = http1_connect(service).await;
            within(
                STEP,
                "an HTTP/1.1 POST",
                conn.post(&push.path, &headers, body),
            )
            .await
            .unwrap()
        }
    };
    Answer {
        status: response.status.as_u16(),
        headers: response.headers,
    }
}

type TlsStream = async_native_tls::TlsStream<Async<TcpStream>>;

async fn http1_connect(service: &FakePushService) -> Http1<TlsStream> {
    let tcp = Async::<TcpStream>::connect(service.addr).await.unwrap();
    let tls = within(
        STEP,
        "the TLS handshake",
        service.connector().connect("localhost", tcp),
    )
    .await
    .unwrap();
    Http1::new(tls, format!("localhost:{}", service.addr.port()))
}

#[test]
fn a_push_is_decrypted_over_either_protocol() {
    for protocol in BOTH {
        let service = FakePushService::start(protocol, accept_all());
        let subscription = service.subscribe("alice");
        let mut signer = signer();
        service.expect_vapid_key(&signer.key().public_key_base64url());
        let mut push = Push::new(&subscription, &mut signer, "héllo from pushhub");
        push.extra = vec![("urgency", "high".into()), ("topic", "news_1".into())];
        let answer = run(send(&service, &push));
        assert_eq!(answer.status, 201, "{protocol:?}: {:?}", service.refusals());
        let location = answer.headers["location"].to_str().unwrap();
        assert!(location.starts_with(service.origin()), "{location}");
        let delivered = service.delivered();
        assert_eq!(delivered.len(), 1, "{protocol:?}");
        let seen = &delivered[0];
        assert_eq!(seen.id, "alice");
        assert_eq!(seen.text.as_deref(), Some("héllo from pushhub"));
        assert_eq!(seen.ttl, 60);
        assert_eq!(seen.urgency.as_deref(), Some("high"));
        assert_eq!(seen.topic.as_deref(), Some("news_1"));
        assert!(service.refusals().is_empty());
        assert_eq!((service.requests(), service.connections()), (1, 1));
    }
}

#[test]
fn a_subscription_looks_like_a_browsers() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let subscription = service.subscribe("bob");
    assert_eq!(subscription["endpoint"], service.endpoint("bob"));
    assert_eq!(subscription["expirationTime"], Value::Null);
    // pushhub's own check of a subscription's keys takes them.
    let keys = SubscriptionKeys::from_base64url(
        subscription["keys"]["p256dh"].as_str().unwrap(),
        subscription["keys"]["auth"].as_str().unwrap(),
    );
    assert!(keys.is_ok(), "{keys:?}");
}

#[test]
fn http1_keeps_the_connection_for_the_next_push() {
    let service = FakePushService::start(Protocol::Http1, accept_all());
    let subscription = service.subscribe("carol");
    let mut signer = signer();
    run(async {
        let mut conn = http1_connect(&service).await;
        for text in ["one", "two"] {
            let push = Push::new(&subscription, &mut signer, text);
            let response = within(
                STEP,
                "a POST",
                conn.post(&push.path, &push.headers(), Bytes::from(push.body.clone())),
            )
            .await
            .unwrap();
            assert_eq!(response.status, 201, "{:?}", service.refusals());
            assert!(conn.reusable());
        }
    });
    let texts: Vec<_> = service.delivered().into_iter().map(|s| s.text).collect();
    assert_eq!(texts, [Some("one".into()), Some("two".into())]);
    assert_eq!(service.connections(), 1);
}

#[test]
fn the_script_answers_what_passed() {
    for protocol in BOTH {
        let script: PushScript = Arc::new(|seen| match seen.text.as_deref() {
            Some("gone") => PushAnswer::Status {
                status: 410,
                retry_after: None,
            },
            Some("slow down") => PushAnswer::Status {
                status: 429,
                retry_after: Some(30),
            },
            _ => PushAnswer::Created,
        });
        let service = FakePushService::start(protocol, script);
        let subscription = service.subscribe("dave");
        let mut signer = signer();
        let gone = run(send(
            &service,
            &Push::new(&subscription, &mut signer, "gone"),
        ));
        assert_eq!(gone.status, 410, "{protocol:?}");
        let slow = run(send(
            &service,
            &Push::new(&subscription, &mut signer, "slow down"),
        ));
        assert_eq!(slow.status, 429, "{protocol:?}");
        assert_eq!(slow.headers["retry-after"], "30");
        assert!(service.delivered().is_empty());
        assert_eq!(service.seen().len(), 2);
    }
}

#[test]
fn drop_and_no_answer() {
    let script: PushScript = Arc::new(|seen| match seen.text.as_deref() {
        Some("drop") => PushAnswer::Drop,
        _ => PushAnswer::NoAnswer,
    });
    let service = FakePushService::start(Protocol::Http1, script);
    let subscription = service.subscribe("erin");
    let mut signer = signer();
    run(async {
        let push = Push::new(&subscription, &mut signer, "drop");
        let mut conn = http1_connect(&service).await;
        let dropped = within(
            STEP,
            "a dropped POST",
            conn.post(&push.path, &push.headers(), push.body.clone().into()),
        )
        .await;
        assert!(matches!(dropped, Err(Http1Error::Closed)), "{dropped:?}");

        // A held request gets no answer: the service has seen it (and so
        // decided what to answer) while the POST is still waiting.
        let push = Push::new(&subscription, &mut signer, "hold");
        let mut conn = http1_connect(&service).await;
        let deadline = Deadline::new(STEP, "the held request to be seen");
        let held = smol::future::or(
            async {
                let _ = conn
                    .post(&push.path, &push.headers(), push.body.clone().into())
                    .await;
                false
            },
            async {
                while service.seen().len() < 2 {
                    deadline.tick().await;
                }
                true
            },
        )
        .await;
        assert!(held, "a held request was answered");
    });
    assert_eq!(service.seen().len(), 2);
}

/// Sends `push` to a fresh service of each protocol and checks it is refused
/// with `status` for `reason`.
fn assert_refused(
    status: u16,
    matches: impl Fn(&Refused) -> bool,
    make: impl Fn(&FakePushService, &Value, &mut VapidSigner) -> Push,
) {
    for protocol in BOTH {
        let service = FakePushService::start(protocol, accept_all());
        let subscription = service.subscribe("frank");
        let mut signer = signer();
        let push = make(&service, &subscription, &mut signer);
        let answer = run(send(&service, &push));
        let refusals = service.refusals();
        assert_eq!(answer.status, status, "{protocol:?}: {refusals:?}");
        assert_eq!(refusals.len(), 1, "{protocol:?}");
        assert!(matches(&refusals[0].reason), "{protocol:?}: {refusals:?}");
        assert_eq!(refusals[0].status, status);
        assert!(service.seen().is_empty());
    }
}

#[test]
fn a_tampered_body_does_not_decrypt() {
    assert_refused(
        400,
        |r| matches!(r, Refused::Undecryptable(_)),
        |_, subscription, signer| {
            let mut push = Push::new(subscription, signer, "hello");
            let last = push.body.len() - 1;
            push.body[last] ^= 1;
            push
        },
    );
}

#[test]
fn a_body_for_another_subscription_does_not_decrypt() {
    assert_refused(
        400,
        |r| matches!(r, Refused::Undecryptable(_)),
        |service, subscription, signer| {
            let other = service.subscribe("someone-else");
            let mut push = Push::new(subscription, signer, "hello");
            push.body = Push::new(&other, signer, "hello").body;
            push
        },
    );
}

#[test]
fn a_jwt_signed_by_another_key_is_refused() {
    assert_refused(
        401,
        |r| *r == Refused::BadSignature,
        |_, subscription, signer| {
            let mut push = Push::new(subscription, signer, "hello");
            // The JWT of one key with the public key of another.
            let other = VapidKey::generate().unwrap();
            let (jwt, _) = push.authorization.split_once(", k=").unwrap();
            push.authorization = format!("{jwt}, k={}", other.public_key_base64url());
            push
        },
    );
}

#[test]
fn a_wrong_audience_is_refused() {
    assert_refused(
        401,
        |r| matches!(r, Refused::WrongAudience(aud) if aud == "\"https://localhost\""),
        |_, subscription, signer| {
            let mut push = Push::new(subscription, signer, "hello");
            // The port is part of the origin.
            let audience = Audience::of_endpoint("https://localhost/push/frank").unwrap();
            push.authorization = signer.authorization(&audience, unix_now()).unwrap().into();
            push
        },
    );
}

#[test]
fn an_expired_jwt_is_refused() {
    assert_refused(
        401,
        |r| matches!(r, Refused::BadExpiry(_)),
        |service, subscription, signer| {
            let mut push = Push::new(subscription, signer, "hello");
            let audience = Audience::of_endpoint(&service.endpoint("frank")).unwrap();
            let long_ago = unix_now() - TOKEN_LIFETIME - 60;
            push.authorization = signer.authorization(&audience, long_ago).unwrap().into();
            push
        },
    );
}

#[test]
fn a_jwt_expiring_beyond_a_day_is_refused() {
    assert_refused(
        401,
        |r| matches!(r, Refused::BadExpiry(_)),
        |service, subscription, signer| {
            let mut push = Push::new(subscription, signer, "hello");
            let audience = Audience::of_endpoint(&service.endpoint("frank")).unwrap();
            let subject = Subject::parse("mailto:ops@example.com").unwrap();
            let jwt = signer
                .key()
                .jwt(&audience, &subject, unix_now() + 25 * 3600)
                .unwrap();
            push.authorization = signer.key().authorization(&jwt);
            push
        },
    );
}

#[test]
fn a_key_other_than_the_subscriptions_is_forbidden() {
    assert_refused(
        403,
        |r| *r == Refused::WrongKey,
        |service, subscription, signer| {
            service.expect_vapid_key(&VapidKey::generate().unwrap().public_key_base64url());
            Push::new(subscription, signer, "hello")
        },
    );
}

#[test]
fn a_non_vapid_authorization_is_unauthorized() {
    assert_refused(
        401,
        |r| matches!(r, Refused::BadAuthorization(_)),
        |_, subscription, signer| {
            let mut push = Push::new(subscription, signer, "hello");
            push.authorization = "WebPush abc".into();
            push
        },
    );
}

#[test]
fn headers_are_checked() {
    assert_refused(
        400,
        |r| matches!(r, Refused::BadTtl(ttl) if ttl == "soon"),
        |_, subscription, signer| {
            let mut push = Push::new(subscription, signer, "hello");
            push.ttl = "soon";
            push
        },
    );
    assert_refused(
        400,
        |r| matches!(r, Refused::BadUrgency(_)),
        |_, subscription, signer| {
            let mut push = Push::new(subscription, signer, "hello");
            push.extra = vec![("urgency", "urgent".into())];
            push
        },
    );
    assert_refused(
        400,
        |r| matches!(r, Refused::BadTopic(_)),
        |_, subscription, signer| {
            let mut push = Push::new(subscription, signer, "hello");
            push.extra = vec![("topic", "a".repeat(33))];
            push
        },
    );
}

#[test]
fn an_unknown_subscription_is_not_found() {
    assert_refused(
        404,
        |r| *r == Refused::UnknownSubscription,
        |_, subscription, signer| {
            let mut push = Push::new(subscription, signer, "hello");
            push.path = "/push/nobody".into();
            push
        },
    );
}
