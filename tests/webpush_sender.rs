//! The Web Push sender (`push::webpush::sender` on `push::sender`) against
//! the fake push service of `common::webpush`, over HTTP/2 and HTTP/1.1:
//! what each request carries (decrypted by `ece`, VAPID checked with
//! openssl), what each status leads to (accepted, gone, rejected, retried,
//! given up), the HTTP/1.1 fallback and its connections, lanes that keep a
//! dead or stalled push service from holding up a healthy one, idle lanes
//! closed and reopened, and the counters.

mod common;

use std::cell::RefCell;
use std::future::Future;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::webpush::{FakePushService, Protocol, PushAnswer, PushScript, Refused, accept_all};
use common::{Deadline, STEP, within};
use pushhub::push::registry::{Subscription, SubscriptionKeys};
use pushhub::push::sender::{Config, Failure, QueueFull};
use pushhub::push::webpush::encrypt::MAX_PAYLOAD;
use pushhub::push::webpush::sender::{
    Message, Options, Outcome, Pending, Reason, Sender, Urgency, WebPush,
};
use pushhub::push::webpush::vapid::{Subject, VapidKey, VapidSigner};
use serde_json::Value;
use smol::Timer;

const BOTH: [Protocol; 2] = [Protocol::Http2, Protocol::Http1];

/// Short backoffs, so that retries take milliseconds.
fn config() -> Config {
    Config {
        max_streams: 4,
        max_http1_connections: 2,
        max_attempts: 3,
        backoff_first: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// A sender trusting `services`, the public half of its VAPID key, and the
/// endpoints its gone hook was called for.
struct Hub {
    sender: Rc<Sender>,
    key: String,
    gone: Rc<RefCell<Vec<String>>>,
}

fn connector(alpn: &str, services: &[&FakePushService]) -> async_native_tls::TlsConnector {
    let mut tls = async_native_tls::TlsConnector::new().request_alpns(&[alpn]);
    for service in services {
        tls = tls.add_root_certificate(service.cert.certificate());
    }
    tls
}

fn hub(config: Config, services: &[&FakePushService]) -> Hub {
    let key = VapidKey::generate().unwrap();
    let public = key.public_key_base64url();
    let signer = VapidSigner::new(key, Subject::parse("mailto:ops@example.com").unwrap());
    let gone = Rc::new(RefCell::new(Vec::new()));
    let noted = Rc::clone(&gone);
    let sender = Sender::for_service(
        config,
        WebPush::new(signer),
        connector("h2", services),
        Some(connector("http/1.1", services)),
        move |message: &Message| {
            noted
                .borrow_mut()
                .push(message.subscription.endpoint.clone())
        },
    );
    Hub {
        sender: Rc::new(sender),
        key: public,
        gone,
    }
}

fn options(payload: impl Into<Bytes>) -> Rc<Options> {
    Rc::new(Options {
        payload: payload.into(),
        ttl: 60,
        urgency: None,
        topic: None,
    })
}

/// A browser's subscription JSON as pushhub's registry keeps it.
fn subscription(json: &Value) -> Subscription {
    let keys: SubscriptionKeys = serde_json::from_value(json["keys"].clone()).unwrap();
    Subscription::new(json["endpoint"].as_str().unwrap(), keys).unwrap()
}

/// A message to a new subscription `id` of `service`.
fn message(service: &FakePushService, id: &str, options: &Rc<Options>) -> Message {
    Message::new(subscription(&service.subscribe(id)), Rc::clone(options)).unwrap()
}

impl Hub {
    fn send(&self, message: Message) -> Pending {
        self.sender.send(message).unwrap()
    }

    /// Runs `body` while the sender runs, bounded by the whole-test limit.
    fn run<T>(&self, body: impl Future<Output = T>) -> T {
        let running = Rc::clone(&self.sender);
        common::run(smol::future::or(body, async move {
            running.run().await;
            unreachable!("the sender runs until dropped")
        }))
    }
}

async fn outcome(pending: Pending) -> Outcome {
    within(STEP, "the outcome", pending.outcome()).await
}

fn accepted(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Accepted { id: Some(id) } if id.contains("/message/"))
}

/// A script that answers the pushes in turn from `answers`, then 201.
fn in_turn(answers: Vec<PushAnswer>) -> PushScript {
    let n = AtomicUsize::new(0);
    Arc::new(move |_| {
        answers
            .get(n.fetch_add(1, Ordering::SeqCst))
            .cloned()
            .unwrap_or(PushAnswer::Created)
    })
}

fn status(status: u16) -> PushAnswer {
    PushAnswer::Status {
        status,
        retry_after: None,
    }
}

#[test]
fn a_message_is_decrypted_to_its_plaintext_and_signed_with_our_key() {
    for protocol in BOTH {
        let service = FakePushService::start(protocol, accept_all());
        let hub = hub(config(), &[&service]);
        // Any other key would be refused with 403.
        service.expect_vapid_key(&hub.key);
        let text = options("héllo from pushhub");
        // Not UTF-8, and the largest payload a 4096-byte body holds.
        let binary: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i * 7 % 256) as u8).collect();
        let binary = options(binary);
        let first = hub.send(message(&service, "alice", &text));
        let second = hub.send(message(&service, "bob", &binary));
        hub.run(async {
            let first = outcome(first).await;
            assert!(accepted(&first), "{protocol:?}: {first:?}");
            let second = outcome(second).await;
            assert!(accepted(&second), "{protocol:?}: {second:?}");
        });
        assert!(service.refusals().is_empty(), "{:?}", service.refusals());
        let delivered = service.delivered();
        assert_eq!(delivered.len(), 2, "{protocol:?}");
        let alice = delivered.iter().find(|s| s.id == "alice").unwrap();
        assert_eq!(alice.text.as_deref(), Some("héllo from pushhub"));
        assert_eq!(alice.ttl, 60);
        assert_eq!((alice.urgency.as_ref(), alice.topic.as_ref()), (None, None));
        let authorization = alice.headers["authorization"].to_str().unwrap();
        assert!(
            authorization.ends_with(&format!("k={}", hub.key)),
            "{authorization}"
        );
        let bob = delivered.iter().find(|s| s.id == "bob").unwrap();
        assert_eq!(bob.plaintext, binary.payload);
        assert_eq!(bob.text, None);
        let stats = hub.sender.stats();
        assert_eq!(
            (stats.sent, stats.accepted, stats.retried, stats.failed),
            (2, 2, 0, 0)
        );
        // HTTP/2: one connection for both; HTTP/1.1: one for each (two
        // workers at once, within the limit).
        let connections = match protocol {
            Protocol::Http2 => 1,
            Protocol::Http1 => 2,
        };
        assert_eq!(stats.connections, connections, "{protocol:?}: {stats:?}");
        assert_eq!(stats.queued, 0);
    }
}

#[test]
fn ttl_urgency_and_topic_headers_arrive() {
    for protocol in BOTH {
        let service = FakePushService::start(protocol, accept_all());
        let hub = hub(config(), &[&service]);
        let options = Rc::new(Options {
            payload: Bytes::from_static(b"new mail"),
            ttl: 2_419_200,
            urgency: Some(Urgency::VeryLow),
            topic: Some("mail-box_1".into()),
        });
        let pending = hub.send(message(&service, "carol", &options));
        hub.run(async {
            let outcome = outcome(pending).await;
            assert!(accepted(&outcome), "{protocol:?}: {outcome:?}");
        });
        let seen = &service.delivered()[0];
        assert_eq!(seen.ttl, 2_419_200);
        assert_eq!(seen.urgency.as_deref(), Some("very-low"));
        assert_eq!(seen.topic.as_deref(), Some("mail-box_1"));
        assert_eq!(seen.headers["content-encoding"], "aes128gcm");
        assert_eq!(seen.text.as_deref(), Some("new mail"));
    }
}

#[test]
fn a_vapid_key_the_service_does_not_expect_is_rejected() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let hub = hub(config(), &[&service]);
    service.expect_vapid_key(&VapidKey::generate().unwrap().public_key_base64url());
    let pending = hub.send(message(&service, "dave", &options("x")));
    hub.run(async {
        assert_eq!(
            outcome(pending).await,
            Outcome::Rejected {
                status: 403,
                reason: Reason::VapidRefused(403)
            }
        );
    });
    let refusals = service.refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].reason, Refused::WrongKey);
    assert!(hub.gone.borrow().is_empty());
    let stats = hub.sender.stats();
    assert_eq!((stats.sent, stats.retried), (1, 0));
    assert_eq!(stats.rejected["VapidRefused"], 1);
}

#[test]
fn http1_only_services_get_a_few_reused_connections() {
    const MESSAGES: usize = 20;
    let service = FakePushService::start(Protocol::Http1, accept_all());
    let config = config();
    let limit = config.max_http1_connections;
    let hub = hub(config, &[&service]);
    let shared = options("to everyone");
    let pending: Vec<Pending> = (0..MESSAGES)
        .map(|i| hub.send(message(&service, &format!("s{i}"), &shared)))
        .collect();
    hub.run(async {
        for p in pending {
            let outcome = outcome(p).await;
            assert!(accepted(&outcome), "{outcome:?}");
        }
    });
    let delivered = service.delivered();
    assert_eq!(delivered.len(), MESSAGES);
    assert!(
        delivered
            .iter()
            .all(|s| s.text.as_deref() == Some("to everyone"))
    );
    let stats = hub.sender.stats();
    assert_eq!((stats.sent, stats.accepted, stats.retried), (20, 20, 0));
    // The connection that tried HTTP/2 counts at the service, not ours.
    assert!((1..=limit as u64).contains(&stats.connections), "{stats:?}");
    assert!(
        service.connections() <= limit + 1,
        "{} connections for a limit of {limit}",
        service.connections()
    );
}

#[test]
fn http2_services_get_one_connection() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let hub = hub(config(), &[&service]);
    let shared = options("to everyone");
    let pending: Vec<Pending> = (0..20)
        .map(|i| hub.send(message(&service, &format!("s{i}"), &shared)))
        .collect();
    hub.run(async {
        for p in pending {
            let outcome = outcome(p).await;
            assert!(accepted(&outcome), "{outcome:?}");
        }
    });
    assert_eq!(service.delivered().len(), 20);
    assert_eq!(service.connections(), 1);
    assert_eq!(hub.sender.stats().connections, 1);
}

#[test]
fn not_found_and_gone_call_the_hook_too_large_and_bad_request_do_not() {
    for protocol in BOTH {
        let service = FakePushService::start(
            protocol,
            Arc::new(|seen| match seen.id.as_str() {
                "notfound" => status(404),
                "gone" => status(410),
                "large" => status(413),
                "bad" => status(400),
                _ => PushAnswer::Created,
            }),
        );
        let hub = hub(config(), &[&service]);
        let shared = options("x");
        let ids = ["notfound", "gone", "large", "bad", "fine"];
        let messages: Vec<Message> = ids
            .iter()
            .map(|id| message(&service, id, &shared))
            .collect();
        let endpoints: Vec<String> = messages
            .iter()
            .map(|m| m.subscription.endpoint.clone())
            .collect();
        let pending: Vec<Pending> = messages.into_iter().map(|m| hub.send(m)).collect();
        let outcomes = hub.run(async {
            let mut outcomes = Vec::new();
            for p in pending {
                outcomes.push(outcome(p).await);
            }
            outcomes
        });
        let expected = |status, reason| Some((status, reason));
        let refusals: Vec<Option<(u16, Reason)>> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Gone { status, reason } => Some((*status, reason.clone())),
                Outcome::Rejected { status, reason } => Some((*status, reason.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            refusals,
            [
                expected(404, Reason::NotFound),
                expected(410, Reason::Gone),
                expected(413, Reason::PayloadTooLarge),
                expected(400, Reason::BadRequest),
                None,
            ],
            "{protocol:?}: {outcomes:?}"
        );
        assert!(matches!(outcomes[0], Outcome::Gone { .. }));
        assert!(matches!(outcomes[1], Outcome::Gone { .. }));
        assert!(matches!(outcomes[2], Outcome::Rejected { .. }));
        assert!(matches!(outcomes[3], Outcome::Rejected { .. }));
        assert!(accepted(&outcomes[4]), "{:?}", outcomes[4]);
        let mut gone = hub.gone.borrow().clone();
        gone.sort();
        assert_eq!(gone, [endpoints[1].clone(), endpoints[0].clone()]);
        let stats = hub.sender.stats();
        assert_eq!(
            (stats.sent, stats.accepted, stats.retried, stats.failed),
            (5, 1, 0, 0),
            "{protocol:?}"
        );
        assert_eq!(stats.devices_gone, 2);
        let names: Vec<(&str, u64)> = stats
            .rejected
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            names,
            [
                ("BadRequest", 1),
                ("Gone", 1),
                ("NotFound", 1),
                ("PayloadTooLarge", 1)
            ]
        );
    }
}

#[test]
fn too_many_requests_waits_for_retry_after_then_delivers() {
    for protocol in BOTH {
        let times = Arc::new(Mutex::new(Vec::new()));
        let noted = Arc::clone(&times);
        let n = AtomicUsize::new(0);
        let service = FakePushService::start(
            protocol,
            Arc::new(move |_| {
                noted.lock().unwrap().push(Instant::now());
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    PushAnswer::Status {
                        status: 429,
                        retry_after: Some(1),
                    }
                } else {
                    PushAnswer::Created
                }
            }),
        );
        let mut config = config();
        // Long enough for the service's 1 s.
        config.backoff_max = Duration::from_secs(2);
        let hub = hub(config, &[&service]);
        let pending = hub.send(message(&service, "eve", &options("later")));
        hub.run(async {
            let outcome = outcome(pending).await;
            assert!(accepted(&outcome), "{protocol:?}: {outcome:?}");
        });
        let times = times.lock().unwrap();
        assert_eq!(times.len(), 2);
        let waited = times[1] - times[0];
        assert!(
            waited >= Duration::from_millis(950),
            "{protocol:?}: retried after {waited:?}"
        );
        assert_eq!(service.delivered()[0].text.as_deref(), Some("later"));
        let stats = hub.sender.stats();
        assert_eq!(
            (stats.sent, stats.retried, stats.accepted, stats.failed),
            (2, 1, 1, 0)
        );
        assert!(stats.rejected.is_empty(), "{stats:?}");
    }
}

#[test]
fn a_retry_after_longer_than_the_longest_backoff_gives_up_at_once() {
    let service = FakePushService::start(
        Protocol::Http2,
        Arc::new(|_| PushAnswer::Status {
            status: 429,
            retry_after: Some(3600),
        }),
    );
    let hub = hub(config(), &[&service]);
    let pending = hub.send(message(&service, "frank", &options("x")));
    hub.run(async {
        assert_eq!(
            outcome(pending).await,
            Outcome::Failed {
                why: Failure::GaveUp {
                    status: 429,
                    reason: Reason::TooManyRequests
                }
            }
        );
    });
    assert_eq!(service.seen().len(), 1);
}

#[test]
fn unavailable_is_retried_then_given_up() {
    for protocol in BOTH {
        let service = FakePushService::start(protocol, Arc::new(|_| status(503)));
        let hub = hub(config(), &[&service]);
        let pending = hub.send(message(&service, "grace", &options("x")));
        hub.run(async {
            assert_eq!(
                outcome(pending).await,
                Outcome::Failed {
                    why: Failure::GaveUp {
                        status: 503,
                        reason: Reason::ServerError(503)
                    }
                }
            );
        });
        // max_attempts requests, each decrypted by the service.
        assert_eq!(service.seen().len(), 3, "{protocol:?}");
        assert!(service.delivered().is_empty());
        let stats = hub.sender.stats();
        assert_eq!(
            (stats.sent, stats.retried, stats.failed, stats.accepted),
            (3, 2, 1, 0)
        );
        assert!(stats.rejected.is_empty(), "{stats:?}");
        assert!(hub.gone.borrow().is_empty());
    }
}

#[test]
fn unavailable_then_accepted() {
    let service = FakePushService::start(Protocol::Http1, in_turn(vec![status(500), status(502)]));
    let hub = hub(config(), &[&service]);
    let pending = hub.send(message(&service, "heidi", &options("x")));
    hub.run(async {
        let outcome = outcome(pending).await;
        assert!(accepted(&outcome), "{outcome:?}");
    });
    let stats = hub.sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.accepted), (3, 2, 1));
}

#[test]
fn a_dropped_connection_is_replaced_and_the_message_retried() {
    for protocol in BOTH {
        let service = FakePushService::start(protocol, in_turn(vec![PushAnswer::Drop]));
        let hub = hub(config(), &[&service]);
        let pending = hub.send(message(&service, "ivan", &options("again")));
        hub.run(async {
            let outcome = outcome(pending).await;
            assert!(accepted(&outcome), "{protocol:?}: {outcome:?}");
        });
        assert_eq!(service.seen().len(), 2, "{protocol:?}");
        assert_eq!(service.delivered()[0].text.as_deref(), Some("again"));
        let stats = hub.sender.stats();
        assert_eq!((stats.sent, stats.retried, stats.accepted), (2, 1, 1));
    }
}

#[test]
fn a_payload_over_the_limit_is_refused_without_a_request() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let hub = hub(config(), &[&service]);
    let refused = hub.send(message(
        &service,
        "judy",
        &options(vec![b'x'; MAX_PAYLOAD + 1]),
    ));
    assert_eq!(
        refused.try_outcome(),
        Some(Outcome::Failed {
            why: Failure::TooLong {
                what: "payload",
                size: MAX_PAYLOAD + 1,
                limit: MAX_PAYLOAD
            }
        })
    );
    // Sent as the marker that the other was not.
    let fits = hub.send(message(&service, "judy", &options("fits")));
    hub.run(async {
        let outcome = outcome(fits).await;
        assert!(accepted(&outcome), "{outcome:?}");
    });
    assert_eq!(service.requests(), 1);
    let stats = hub.sender.stats();
    assert_eq!((stats.sent, stats.failed, stats.accepted), (1, 1, 1));
}

/// Waits for `healthy`'s messages, all accepted, then checks that `held`
/// (another push service's, in trouble) is still undecided.
async fn healthy_first(healthy: Vec<Pending>, held: &[Pending], what: &str) {
    let started = Instant::now();
    for p in healthy {
        let outcome = outcome(p).await;
        assert!(accepted(&outcome), "{outcome:?}");
    }
    let took = started.elapsed();
    for p in held {
        assert!(
            p.try_outcome().is_none(),
            "{what}: settled before the healthy service's messages"
        );
    }
    assert!(took < Duration::from_secs(2), "{what}: took {took:?}");
}

#[test]
fn a_dead_push_service_holds_up_nobody_else() {
    // A port that was just free: connecting is refused.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let healthy = FakePushService::start(Protocol::Http2, accept_all());
    let mut config = config();
    // The dead lane's attempts take about 2 s.
    config.max_attempts = 4;
    config.backoff_first = Duration::from_millis(400);
    config.backoff_max = Duration::from_secs(1);
    let hub = hub(config, &[&healthy]);
    let shared = options("still here");
    let keys: SubscriptionKeys =
        serde_json::from_value(healthy.subscribe("unused")["keys"].clone()).unwrap();
    let endpoint = format!("https://localhost:{}/push/nobody", dead.port());
    let dead_sub = || Subscription::new(&endpoint, keys.clone()).unwrap();
    // More than the dead lane's workers.
    let held: Vec<Pending> = (0..6)
        .map(|_| hub.send(Message::new(dead_sub(), Rc::clone(&shared)).unwrap()))
        .collect();
    let fine: Vec<Pending> = (0..6)
        .map(|i| hub.send(message(&healthy, &format!("h{i}"), &shared)))
        .collect();
    hub.run(async {
        healthy_first(fine, &held, "the dead service's messages").await;
        for p in held {
            let outcome = within(Duration::from_secs(10), "the dead lane", p.outcome()).await;
            assert!(
                matches!(&outcome, Outcome::Failed { why: Failure::Unreachable(why) } if why.contains("connect")),
                "{outcome:?}"
            );
        }
    });
    assert_eq!(healthy.delivered().len(), 6);
    let stats = hub.sender.stats();
    assert_eq!((stats.sent, stats.accepted, stats.failed), (6, 6, 6));
}

#[test]
fn a_stalled_push_service_holds_up_nobody_else() {
    for protocol in BOTH {
        let stalled = FakePushService::start(protocol, Arc::new(|_| PushAnswer::NoAnswer));
        let cert = stalled.cert.clone();
        let healthy = FakePushService::start_with_cert(protocol, accept_all(), cert);
        let mut config = config();
        config.max_attempts = 2;
        // The held messages' first outcomes come after 2 s.
        config.request_timeout = Duration::from_secs(1);
        let hub = hub(config, &[&stalled]);
        let shared = options("not held up");
        let held: Vec<Pending> = (0..6)
            .map(|i| hub.send(message(&stalled, &format!("s{i}"), &shared)))
            .collect();
        hub.run(async {
            // The stalled service holds requests before the healthy one is sent any.
            let deadline = Deadline::new(STEP, "requests to reach the stalled service");
            while stalled.seen().is_empty() {
                deadline.tick().await;
            }
            let fine: Vec<Pending> = (0..6)
                .map(|i| hub.send(message(&healthy, &format!("h{i}"), &shared)))
                .collect();
            healthy_first(fine, &held, &format!("{protocol:?} stalled")).await;
            for p in held {
                let outcome =
                    within(Duration::from_secs(15), "the stalled lane", p.outcome()).await;
                // Its own request timed out, or another one's did and the
                // connection they shared was dropped.
                assert!(
                    matches!(
                        &outcome,
                        Outcome::Failed {
                            why: Failure::Unreachable(_)
                        }
                    ),
                    "{protocol:?}: {outcome:?}"
                );
            }
        });
        assert_eq!(healthy.delivered().len(), 6);
        assert!(stalled.delivered().is_empty());
        // Each message sent twice (max_attempts); a request on a connection
        // dropped as it went may not have reached the service.
        assert!((6..=12).contains(&stalled.seen().len()), "{protocol:?}");
        let stats = hub.sender.stats();
        assert_eq!(
            (stats.sent, stats.accepted, stats.failed),
            (18, 6, 6),
            "{protocol:?}: {stats:?}"
        );
    }
}

/// A stalled push service's backlog stops at its lane's share of the
/// queue: past it, its messages are refused, and another service's are
/// still taken.
#[test]
fn a_stalled_push_service_fills_only_its_share_of_the_queue() {
    let stalled = FakePushService::start(Protocol::Http2, Arc::new(|_| PushAnswer::NoAnswer));
    let cert = stalled.cert.clone();
    let healthy = FakePushService::start_with_cert(Protocol::Http2, accept_all(), cert);
    let mut config = config();
    config.max_streams = 1;
    config.max_queue = 10;
    config.max_lane_queue = 3;
    config.request_timeout = Duration::from_secs(10);
    let hub = hub(config, &[&stalled]);
    let shared = options("queued");
    hub.run(async {
        let first = hub.send(message(&stalled, "s0", &shared));
        // Once the only worker holds the first message, three may wait.
        let deadline = Deadline::new(STEP, "the first request to reach the stalled service");
        while stalled.seen().is_empty() {
            deadline.tick().await;
        }
        let waiting: Vec<Pending> = (1..=3)
            .map(|i| hub.send(message(&stalled, &format!("s{i}"), &shared)))
            .collect();
        let refused = hub.sender.send(message(&stalled, "s4", &shared));
        assert!(
            matches!(refused, Err(QueueFull("Web Push"))),
            "a fourth waits"
        );
        let fine = hub.send(message(&healthy, "h0", &shared));
        let outcome = within(STEP, "the healthy service", fine.outcome()).await;
        assert!(accepted(&outcome), "{outcome:?}");
        assert_eq!(hub.sender.stats().queued, 3);
        drop((first, waiting));
    });
}

#[test]
fn an_idle_lane_is_closed_and_opened_again_on_demand() {
    for protocol in BOTH {
        let service = FakePushService::start(protocol, accept_all());
        let mut config = config();
        config.idle_lane = Duration::from_millis(400);
        let hub = hub(config, &[&service]);
        let shared = options("x");
        hub.run(async {
            let first = hub.send(message(&service, "a", &shared));
            assert!(accepted(&outcome(first).await));
            // Busy again within the idle time: the same connection.
            Timer::after(Duration::from_millis(100)).await;
            let second = hub.send(message(&service, "b", &shared));
            assert!(accepted(&outcome(second).await));
            assert_eq!(hub.sender.stats().connections, 1, "{protocol:?}");
            let before = service.connections();
            // Idle past the limit (checked every half of it): closed.
            Timer::after(Duration::from_millis(1000)).await;
            let third = hub.send(message(&service, "c", &shared));
            let outcome = outcome(third).await;
            assert!(accepted(&outcome), "{protocol:?}: {outcome:?}");
            assert_eq!(hub.sender.stats().connections, 2, "{protocol:?}");
            assert!(service.connections() > before, "{protocol:?}");
        });
        assert_eq!(service.delivered().len(), 3);
        let stats = hub.sender.stats();
        assert_eq!((stats.sent, stats.accepted, stats.queued), (3, 3, 0));
    }
}

#[test]
fn dropping_the_sender_reports_stopped() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let hub = hub(config(), &[&service]);
    let pending = hub.send(message(&service, "k", &options("x")));
    drop(hub);
    assert_eq!(
        pending.try_outcome(),
        Some(Outcome::Failed {
            why: Failure::Stopped
        })
    );
}
