//! The FCM sender against a fake Google (real TLS + HTTP/2 for both the OAuth
//! token endpoint and FCM's send endpoint): what a send carries, the access
//! token fetched once for everyone and renewed before it expires or when FCM
//! revokes it, a service account Google refuses, what each of FCM's answers
//! leads to (accepted, token gone, rejected, retried), and lost connections.

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::fcm::{FakeFcm, FcmAnswer, FcmScript};
use common::{STEP, within};
use pushhub::push::fcm::credentials::ServiceAccount;
use pushhub::push::fcm::reason::Reason;
use pushhub::push::fcm::sender::{Endpoints, Fcm, Message, Outcome, Pending, Sender};
use pushhub::push::registry::FcmToken;
use pushhub::push::sender::{Config, Failure, Origin};
use pushhub::time::unix_now;
use serde_json::json;

/// The `message` object a backend gives, without the token.
const OBJECT: &str = r#"{"data":{"text":"hello"},"android":{"priority":"high"}}"#;

/// Short backoffs, so that retries take milliseconds.
fn config() -> Config {
    Config {
        max_streams: 4,
        max_attempts: 3,
        backoff_first: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..Config::default()
    }
}

/// The fake's send endpoint, connected to by address.
fn send_origin(addr: SocketAddr) -> Origin {
    Origin {
        addr: Some(addr),
        ..Origin::new("localhost", addr.port())
    }
}

/// FCM as `fake` plays it, sending to `send`, with the system clock.
fn fcm_to(fake: &FakeFcm, send: Origin) -> Fcm {
    let account = ServiceAccount::from_json(fake.service_account().as_bytes()).unwrap();
    let endpoints = Endpoints {
        send,
        token: fake.token_url(),
    };
    let http1 = async_native_tls::TlsConnector::new()
        .add_root_certificate(fake.cert.certificate())
        .request_alpns(&["http/1.1"]);
    Fcm::new(account, endpoints, fake.connector(), http1).unwrap()
}

fn fcm(fake: &FakeFcm) -> Fcm {
    fcm_to(fake, send_origin(fake.addr))
}

/// The registration tokens the gone hook was called with.
type Gone = Rc<RefCell<Vec<String>>>;

fn sender_with(fake: &FakeFcm, config: Config, fcm: Fcm) -> (Rc<Sender>, Gone) {
    let gone: Gone = Rc::default();
    let noted = Rc::clone(&gone);
    let sender = Sender::for_service(config, fcm, fake.connector(), None, move |m: &Message| {
        noted.borrow_mut().push(m.token.as_str().to_string())
    });
    (Rc::new(sender), gone)
}

fn sender(fake: &FakeFcm, config: Config) -> (Rc<Sender>, Gone) {
    sender_with(fake, config, fcm(fake))
}

fn message(token: &str) -> Message {
    Message::new(FcmToken::parse(token).unwrap(), Rc::from(OBJECT))
}

/// Runs `body` while the sender runs, bounded by the whole-test limit.
fn with_running<T>(sender: &Rc<Sender>, body: impl Future<Output = T>) -> T {
    let running = Rc::clone(sender);
    common::run(smol::future::or(body, async move {
        running.run().await;
        unreachable!("the sender runs until dropped")
    }))
}

async fn outcome(pending: Pending) -> Outcome {
    within(STEP, "the outcome", pending.outcome()).await
}

fn ok() -> FcmScript {
    Arc::new(|_| FcmAnswer::Ok)
}

/// Answers the sends in turn from `answers`, then 200.
fn in_turn(answers: Vec<FcmAnswer>) -> FcmScript {
    let n = AtomicUsize::new(0);
    Arc::new(move |_| {
        answers
            .get(n.fetch_add(1, Ordering::SeqCst))
            .cloned()
            .unwrap_or(FcmAnswer::Ok)
    })
}

fn accepted(n: u32) -> Outcome {
    Outcome::Accepted {
        id: Some(format!("projects/test-project/messages/0:{n}")),
    }
}

fn error(status: u16, grpc_status: &'static str, error_code: Option<&'static str>) -> FcmAnswer {
    FcmAnswer::Error {
        status,
        grpc_status,
        error_code,
        retry_after: None,
    }
}

fn assert_no_refusals(fake: &FakeFcm) {
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
}

#[test]
fn a_message_is_accepted_with_the_token_google_issued() {
    let fake = FakeFcm::start(ok());
    let (sender, gone) = sender(&fake, config());
    let pending = sender.send(message("device-1:APA91b_x")).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted(1));
    });
    assert_no_refusals(&fake);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    // `{"message":{"token":T, ...the object...}}`, the object as given.
    assert_eq!(
        seen[0].message,
        json!({
            "token": "device-1:APA91b_x",
            "data": {"text": "hello"},
            "android": {"priority": "high"},
        })
    );
    assert_eq!(seen[0].token, "device-1:APA91b_x");
    assert_eq!(fake.issued(), ["fake-token-1"]);
    assert_eq!(seen[0].access_token, "fake-token-1");
    assert_eq!(seen[0].headers["authorization"], "Bearer fake-token-1");
    assert_eq!(
        seen[0].headers["content-type"],
        "application/json; charset=UTF-8"
    );
    assert_eq!(fake.token_requests(), 1);
    assert!(gone.borrow().is_empty());
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.accepted, stats.retried), (1, 1, 0));
    assert_eq!((stats.failed, stats.devices_gone, stats.queued), (0, 0, 0));
    assert_eq!(stats.connections, 1);
    assert!(stats.rejected.is_empty());
}

#[test]
fn one_token_fetch_serves_many_concurrent_messages() {
    let fake = FakeFcm::start(ok());
    let mut config = config();
    config.max_streams = 8;
    let (sender, _) = sender(&fake, config);
    let pending: Vec<Pending> = (0..40)
        .map(|i| sender.send(message(&format!("device-{i}"))).unwrap())
        .collect();
    with_running(&sender, async {
        for p in pending {
            assert!(matches!(
                outcome(p).await,
                Outcome::Accepted { id: Some(_) }
            ));
        }
    });
    assert_no_refusals(&fake);
    assert_eq!(fake.token_requests(), 1);
    let seen = fake.seen();
    assert_eq!(seen.len(), 40);
    assert!(seen.iter().all(|s| s.access_token == "fake-token-1"));
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.accepted, stats.retried), (40, 40, 0));
    assert_eq!(stats.connections, 1);
}

#[test]
fn the_token_is_renewed_before_it_expires() {
    // Tokens of 400 s. The sender's clock is 120 s behind at first: by it,
    // the first token expires at now + 280, less than the 300 s margin once
    // the clock has caught up; Google would still take it for 400 s.
    let fake = FakeFcm::start(ok());
    fake.set_expires_in(400);
    let behind = Rc::new(Cell::new(120));
    let clock = Rc::clone(&behind);
    let fcm = fcm(&fake).with_clock(move || unix_now() - clock.get());
    let (sender, _) = sender_with(&fake, config(), fcm);
    let first = sender.send(message("device-1")).unwrap();
    let again = sender.send(message("device-2")).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(first).await, accepted(1));
        assert_eq!(outcome(again).await, accepted(2));
    });
    assert_eq!(fake.token_requests(), 1);
    behind.set(0);
    let renewed = sender.send(message("device-3")).unwrap();
    let also = sender.send(message("device-4")).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(renewed).await, accepted(3));
        assert_eq!(outcome(also).await, accepted(4));
    });
    assert_no_refusals(&fake);
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.unauthorized(), 0);
    let used: Vec<String> = fake.seen().into_iter().map(|s| s.access_token).collect();
    assert_eq!(
        used,
        [
            "fake-token-1",
            "fake-token-1",
            "fake-token-2",
            "fake-token-2"
        ]
    );
    assert_eq!(sender.stats().retried, 0);
}

#[test]
fn a_revoked_token_costs_one_fetch_and_the_messages_are_delivered() {
    let fake = FakeFcm::start(ok());
    let (sender, gone) = sender(&fake, config());
    let first = sender.send(message("device-0")).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(first).await, accepted(1));
    });
    fake.revoke_tokens();
    // Four in flight at once with the revoked token (four streams).
    let pending: Vec<Pending> = (1..=4)
        .map(|i| sender.send(message(&format!("device-{i}"))).unwrap())
        .collect();
    with_running(&sender, async {
        for p in pending {
            assert!(matches!(
                outcome(p).await,
                Outcome::Accepted { id: Some(_) }
            ));
        }
    });
    assert_eq!(fake.token_requests(), 2, "{:?}", fake.refusals());
    assert_eq!(fake.issued(), ["fake-token-1", "fake-token-2"]);
    let refused = fake.unauthorized();
    assert!((1..=4).contains(&refused), "{refused} sends refused");
    let seen = fake.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen[1..].iter().all(|s| s.access_token == "fake-token-2"));
    assert!(gone.borrow().is_empty());
    let stats = sender.stats();
    assert_eq!(stats.accepted, 5);
    assert_eq!(stats.sent, 5 + refused as u64);
    assert_eq!(stats.retried, refused as u64);
    assert!(stats.rejected.is_empty(), "{:?}", stats.rejected);
}

#[test]
fn a_service_account_google_refuses_fails_without_a_send() {
    let fake = FakeFcm::start(ok());
    // The account's key was replaced (rotated, deleted): Google refuses
    // assertions signed with the old one.
    let mut file: serde_json::Value = serde_json::from_str(&fake.service_account()).unwrap();
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    file["private_key"] =
        json!(String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap());
    let account = ServiceAccount::from_json(file.to_string().as_bytes()).unwrap();
    let endpoints = Endpoints {
        send: send_origin(fake.addr),
        token: fake.token_url(),
    };
    let http1 = async_native_tls::TlsConnector::new()
        .add_root_certificate(fake.cert.certificate())
        .request_alpns(&["http/1.1"]);
    let fcm = Fcm::new(account, endpoints, fake.connector(), http1).unwrap();
    let (sender, gone) = sender_with(&fake, config(), fcm);
    let pending: Vec<Pending> = (1..=3)
        .map(|i| sender.send(message(&format!("device-{i}"))).unwrap())
        .collect();
    with_running(&sender, async {
        for p in pending {
            match outcome(p).await {
                Outcome::Failed {
                    why: Failure::Credentials(why),
                } => {
                    assert!(
                        why.contains("refused the service account")
                            && why.contains("invalid_grant")
                            && why.contains("Invalid JWT Signature"),
                        "{why}"
                    );
                    let shown = Failure::<Reason>::Credentials(why).to_string();
                    assert!(shown.starts_with("credentials refused: "), "{shown}");
                }
                other => panic!("{other:?}"),
            }
        }
    });
    // Asked once for the three messages waiting together, and never retried.
    assert_eq!(fake.token_requests(), 1);
    assert!(fake.seen().is_empty());
    assert_eq!(fake.unauthorized(), 0);
    assert!(gone.borrow().is_empty());
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.failed, stats.retried), (0, 3, 0));
}

#[test]
fn tokens_fcm_says_are_gone_call_the_hook() {
    let fake = FakeFcm::start(Arc::new(|seen| match seen.token.as_str() {
        "unregistered" => FcmAnswer::UNREGISTERED,
        "invalid" => FcmAnswer::InvalidToken,
        "foreign" => FcmAnswer::SENDER_ID_MISMATCH,
        _ => FcmAnswer::Ok,
    }));
    let (sender, gone) = sender(&fake, config());
    let unregistered = sender.send(message("unregistered")).unwrap();
    let invalid = sender.send(message("invalid")).unwrap();
    let foreign = sender.send(message("foreign")).unwrap();
    let fine = sender.send(message("fine")).unwrap();
    with_running(&sender, async {
        assert_eq!(
            outcome(unregistered).await,
            Outcome::Gone {
                status: 404,
                reason: Reason::Unregistered
            }
        );
        assert_eq!(
            outcome(invalid).await,
            Outcome::Gone {
                status: 400,
                reason: Reason::InvalidToken
            }
        );
        assert_eq!(
            outcome(foreign).await,
            Outcome::Gone {
                status: 403,
                reason: Reason::SenderIdMismatch
            }
        );
        assert!(matches!(outcome(fine).await, Outcome::Accepted { .. }));
    });
    let mut gone = gone.borrow().clone();
    gone.sort();
    assert_eq!(gone, ["foreign", "invalid", "unregistered"]);
    let stats = sender.stats();
    assert_eq!(stats.devices_gone, 3);
    assert_eq!(stats.rejected["UNREGISTERED"], 1);
    assert_eq!(stats.rejected["INVALID_TOKEN"], 1);
    assert_eq!(stats.rejected["SENDER_ID_MISMATCH"], 1);
    assert_eq!((stats.sent, stats.accepted, stats.retried), (4, 1, 0));
    assert_eq!(fake.seen().len(), 4);
}

#[test]
fn a_bad_message_is_rejected_and_its_token_kept() {
    let fake = FakeFcm::start(Arc::new(|_| {
        error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"))
    }));
    let (sender, gone) = sender(&fake, config());
    let pending = sender.send(message("device-1")).unwrap();
    with_running(&sender, async {
        assert_eq!(
            outcome(pending).await,
            Outcome::Rejected {
                status: 400,
                reason: Reason::InvalidArgument
            }
        );
    });
    assert!(gone.borrow().is_empty());
    assert_eq!(fake.seen().len(), 1);
    let stats = sender.stats();
    assert_eq!(stats.rejected["INVALID_ARGUMENT"], 1);
    assert_eq!((stats.devices_gone, stats.retried, stats.failed), (0, 0, 0));
}

#[test]
fn quota_exceeded_waits_for_retry_after_then_delivers() {
    let fake = FakeFcm::start(in_turn(vec![FcmAnswer::quota_exceeded(Some(1))]));
    let mut config = config();
    // Room for a Retry-After of a second.
    config.backoff_max = Duration::from_secs(2);
    let (sender, _) = sender(&fake, config);
    let started = Instant::now();
    let pending = sender.send(message("device-1")).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted(1));
    });
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert_eq!(fake.seen().len(), 2);
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.accepted), (2, 1, 1));
    assert!(stats.rejected.is_empty());
    assert_eq!(fake.token_requests(), 1);
}

#[test]
fn a_retry_after_longer_than_the_longest_backoff_gives_up_at_once() {
    let fake = FakeFcm::start(Arc::new(|_| FcmAnswer::quota_exceeded(Some(60))));
    let (sender, _) = sender(&fake, config());
    let pending = sender.send(message("device-1")).unwrap();
    with_running(&sender, async {
        assert_eq!(
            outcome(pending).await,
            Outcome::Failed {
                why: Failure::GaveUp {
                    status: 429,
                    reason: Reason::QuotaExceeded
                }
            }
        );
    });
    assert_eq!(fake.seen().len(), 1);
    assert_eq!(sender.stats().failed, 1);
}

#[test]
fn unavailable_and_internal_are_retried_then_given_up() {
    for (answer, status, reason) in [
        (FcmAnswer::UNAVAILABLE, 503, Reason::Unavailable),
        (
            error(500, "INTERNAL", Some("INTERNAL")),
            500,
            Reason::Internal,
        ),
    ] {
        let fake = FakeFcm::start(Arc::new(move |_| answer.clone()));
        let mut config = config();
        config.max_attempts = 4;
        let (sender, gone) = sender(&fake, config);
        let pending = sender.send(message("device-1")).unwrap();
        with_running(&sender, async {
            assert_eq!(
                outcome(pending).await,
                Outcome::Failed {
                    why: Failure::GaveUp {
                        status,
                        reason: reason.clone()
                    }
                }
            );
        });
        assert_eq!(fake.seen().len(), 4, "{reason}");
        assert!(gone.borrow().is_empty());
        let stats = sender.stats();
        assert_eq!((stats.sent, stats.retried, stats.failed), (4, 3, 1));
        assert!(stats.rejected.is_empty());
        // The token was good all along: fetched once.
        assert_eq!(fake.token_requests(), 1);
    }
}

#[test]
fn unavailable_once_then_delivered() {
    let fake = FakeFcm::start(in_turn(vec![FcmAnswer::UNAVAILABLE]));
    let (sender, _) = sender(&fake, config());
    let pending = sender.send(message("device-1")).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted(1));
    });
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.accepted), (2, 1, 1));
}

#[test]
fn third_party_auth_errors_and_permission_denied_are_rejected_never_gone() {
    let fake = FakeFcm::start(Arc::new(|seen| match seen.token.as_str() {
        // Apple or the browser's push service refused the app's credentials.
        "ios-device" => error(401, "UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR")),
        _ => error(403, "PERMISSION_DENIED", None),
    }));
    let (sender, gone) = sender(&fake, config());
    let third_party = sender.send(message("ios-device")).unwrap();
    with_running(&sender, async {
        assert_eq!(
            outcome(third_party).await,
            Outcome::Rejected {
                status: 401,
                reason: Reason::ThirdPartyAuthError
            }
        );
    });
    let denied = sender.send(message("android-device")).unwrap();
    with_running(&sender, async {
        assert_eq!(
            outcome(denied).await,
            Outcome::Rejected {
                status: 403,
                reason: Reason::PermissionDenied
            }
        );
    });
    assert!(gone.borrow().is_empty());
    // Neither is about our access token: no new one, no second try.
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(fake.seen().len(), 2);
    let stats = sender.stats();
    assert_eq!(stats.rejected["THIRD_PARTY_AUTH_ERROR"], 1);
    assert_eq!(stats.rejected["PERMISSION_DENIED"], 1);
    assert_eq!((stats.devices_gone, stats.retried, stats.sent), (0, 0, 2));
}

#[test]
fn a_dead_endpoint_is_unreachable_after_the_attempts() {
    let fake = FakeFcm::start(ok());
    // A port that was just free: connecting is refused.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (sender, _) = sender_with(&fake, config(), fcm_to(&fake, send_origin(dead)));
    let pending = sender.send(message("device-1")).unwrap();
    with_running(&sender, async {
        let outcome = outcome(pending).await;
        assert!(
            matches!(&outcome, Outcome::Failed { why: Failure::Unreachable(why) } if why.contains("connect")),
            "{outcome:?}"
        );
    });
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.failed, stats.connections), (0, 1, 0));
    // No connection, so no request to make: no token asked for.
    assert_eq!(fake.token_requests(), 0);
}

#[test]
fn a_request_without_answer_replaces_the_connection() {
    let fake = FakeFcm::start(in_turn(vec![FcmAnswer::NoAnswer]));
    let mut config = config();
    config.request_timeout = Duration::from_millis(200);
    let (sender, _) = sender(&fake, config);
    let pending = sender.send(message("device-1")).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted(1));
    });
    assert_eq!(fake.seen().len(), 2);
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.connections), (2, 1, 2));
    // The token endpoint's connection aside, two to the send endpoint.
    assert_eq!(fake.connections.load(Ordering::SeqCst), 2 + 1);
    assert_eq!(fake.token_requests(), 1);
}

#[test]
fn a_request_never_answered_fails_after_the_attempts() {
    let fake = FakeFcm::start(Arc::new(|_| FcmAnswer::NoAnswer));
    let mut config = config();
    config.request_timeout = Duration::from_millis(100);
    config.max_attempts = 2;
    let (sender, _) = sender(&fake, config);
    let pending = sender.send(message("device-1")).unwrap();
    with_running(&sender, async {
        let outcome = outcome(pending).await;
        assert!(
            matches!(&outcome, Outcome::Failed { why: Failure::Unreachable(why) } if why.contains("no answer within")),
            "{outcome:?}"
        );
    });
    assert_eq!(fake.seen().len(), 2);
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.failed), (2, 1, 1));
}

#[test]
fn a_dropped_connection_is_replaced_and_the_message_retried() {
    let fake = FakeFcm::start(in_turn(vec![FcmAnswer::Drop]));
    let (sender, _) = sender(&fake, config());
    let pending = sender.send(message("device-1")).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted(1));
    });
    assert_eq!(fake.seen().len(), 2);
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.connections), (2, 1, 2));
    assert_eq!((stats.accepted, stats.failed), (1, 0));
    assert_eq!(fake.connections.load(Ordering::SeqCst), 2 + 1);
}

#[test]
fn a_message_over_the_limit_is_refused_without_a_request() {
    let fake = FakeFcm::start(ok());
    let (sender, _) = sender(&fake, config());
    let big = format!(r#"{{"data":{{"text":"{}"}}}}"#, "x".repeat(5200));
    let size = big.len();
    let refused = sender
        .send(Message::new(
            FcmToken::parse("device-1").unwrap(),
            Rc::from(big),
        ))
        .unwrap();
    assert_eq!(
        refused.try_outcome(),
        Some(Outcome::Failed {
            why: Failure::TooLong {
                what: "message",
                size,
                limit: pushhub::push::fcm::sender::MAX_MESSAGE
            }
        })
    );
    assert_eq!(sender.stats().failed, 1);
    assert_eq!(fake.token_requests(), 0);
}
