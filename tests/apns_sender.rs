//! The APNs sender against a fake APNs (real TLS + HTTP/2): what each request
//! carries, what each answer leads to (accepted, device gone, retries, a new
//! provider token, rejection), lost connections, the queue bound, and many
//! notifications in flight on one connection.

mod common;

use std::cell::RefCell;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::apns::{DROP_CONNECTION, FakeApns, GO_AWAY, NO_ANSWER, Script};
use common::{STEP, within};
use data_encoding::BASE64URL_NOPAD;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use pushhub::push::DeviceToken;
use pushhub::push::apns::provider_token::ProviderToken;
use pushhub::push::apns::reason::Reason;
use pushhub::push::apns::sender::{
    Auth, Config, Failure, Notification, Outcome, Pending, Priority, PushType, QueueFull, Sender,
};

const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "DEF123GHIJ";
const T0: u64 = 1_800_000_000;
const PAYLOAD: &[u8] = br#"{"aps":{"alert":"Hi"}}"#;

fn device(n: u8) -> DeviceToken {
    DeviceToken::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

/// Short backoffs, so that retries take milliseconds.
fn config(server: &FakeApns) -> Config {
    let mut config = Config::new(server.addr, "localhost", "com.example.app");
    config.max_streams = 4;
    config.max_attempts = 3;
    config.backoff_first = Duration::from_millis(5);
    config.backoff_max = Duration::from_millis(20);
    config
}

fn sender(server: &FakeApns, config: Config) -> Rc<Sender> {
    Rc::new(Sender::new(
        config,
        Auth::Certificate,
        server.connector(),
        |_: &DeviceToken| {},
    ))
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

/// A script that answers the requests in turn from `answers`, then 200.
fn in_turn(answers: &'static [(u16, Option<&'static str>)]) -> Script {
    let n = AtomicUsize::new(0);
    Arc::new(move |_| {
        answers
            .get(n.fetch_add(1, Ordering::SeqCst))
            .copied()
            .unwrap_or((200, None))
    })
}

fn ok() -> Script {
    Arc::new(|_| (200, None))
}

/// A fresh P-256 key, written as a `.p8` file in a directory of its own.
struct P8 {
    key: PKey<Private>,
    dir: PathBuf,
}

impl P8 {
    fn new(name: &str) -> P8 {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let dir =
            std::env::temp_dir().join(format!("pushhub-sender-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key.p8"), key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        P8 { key, dir }
    }

    fn provider_token(&self) -> ProviderToken {
        ProviderToken::load(&self.dir.join("key.p8"), KEY_ID, TEAM_ID).unwrap()
    }

    /// The JWT of an `authorization` header, checked with the public key
    /// alone; its claims.
    fn verify(&self, authorization: &str) -> serde_json::Value {
        let token = authorization.strip_prefix("bearer ").unwrap();
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).unwrap();
        let (r, s) = signature.split_at(32);
        let der = EcdsaSig::from_private_components(
            BigNum::from_slice(r).unwrap(),
            BigNum::from_slice(s).unwrap(),
        )
        .unwrap()
        .to_der()
        .unwrap();
        let public = PKey::public_key_from_pem(&self.key.public_key_to_pem().unwrap()).unwrap();
        let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &public).unwrap();
        verifier.update(signed.as_bytes()).unwrap();
        assert!(verifier.verify(&der).unwrap(), "signature of {token}");
        let mut parts = token.split('.');
        let header = decode_json(parts.next().unwrap());
        assert_eq!(header, serde_json::json!({"alg": "ES256", "kid": KEY_ID}));
        decode_json(parts.next().unwrap())
    }
}

impl Drop for P8 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn decode_json(part: &str) -> serde_json::Value {
    serde_json::from_slice(&BASE64URL_NOPAD.decode(part.as_bytes()).unwrap()).unwrap()
}

fn accepted() -> Outcome {
    Outcome::Accepted {
        id: Some("00000000-0000-0000-0000-000000000001".into()),
    }
}

#[test]
fn accepted_with_path_headers_body_and_a_verifiable_token() {
    let server = FakeApns::start(ok());
    let p8 = P8::new("accepted");
    let sender = Rc::new(
        Sender::new(
            config(&server),
            Auth::Token(p8.provider_token()),
            server.connector(),
            |_: &DeviceToken| {},
        )
        .with_clock(|| T0),
    );
    let mut notification = Notification::new(device(0xab), PAYLOAD);
    notification.priority = Priority::Conserve;
    notification.expiration = T0 + 3600;
    notification.collapse_id = Some("score".into());
    notification.apns_id = Some("123e4567-e89b-12d3-a456-426614174000".into());
    let pending = sender.send(notification).unwrap();
    let plain = sender
        .send(Notification::new(device(0xcd), PAYLOAD))
        .unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted());
        assert_eq!(outcome(plain).await, accepted());
    });

    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let first = seen.iter().find(|s| s.path.contains("abab")).unwrap();
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, format!("/3/device/{}", "ab".repeat(32)));
    assert_eq!(&first.body[..], PAYLOAD);
    let header = |name: &str| first.headers[name].to_str().unwrap().to_string();
    assert_eq!(header("apns-topic"), "com.example.app");
    assert_eq!(header("apns-push-type"), "alert");
    assert_eq!(header("apns-priority"), "5");
    assert_eq!(header("apns-expiration"), (T0 + 3600).to_string());
    assert_eq!(header("apns-collapse-id"), "score");
    assert_eq!(header("apns-id"), "123e4567-e89b-12d3-a456-426614174000");
    let claims = p8.verify(&header("authorization"));
    assert_eq!(claims, serde_json::json!({"iss": TEAM_ID, "iat": T0}));

    let second = seen.iter().find(|s| s.path.contains("cdcd")).unwrap();
    assert_eq!(second.headers["apns-priority"], "10");
    assert_eq!(second.headers["apns-expiration"], "0");
    assert!(!second.headers.contains_key("apns-collapse-id"));
    assert!(!second.headers.contains_key("apns-id"));
    // One token, shared by every request.
    assert_eq!(
        second.headers["authorization"],
        first.headers["authorization"]
    );

    let stats = sender.stats();
    assert_eq!((stats.sent, stats.accepted, stats.retried), (2, 2, 0));
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.queued, 0);
}

/// Each push type goes to the topic Apple wants for it: the bundle id, with
/// `.voip`, `.push-type.liveactivity`, ... appended.
#[test]
fn the_topic_follows_the_push_type() {
    let server = FakeApns::start(ok());
    let sender = sender(&server, config(&server));
    let types = [
        (PushType::Background, "com.example.app"),
        (PushType::Voip, "com.example.app.voip"),
        (PushType::Complication, "com.example.app.complication"),
        (
            PushType::FileProvider,
            "com.example.app.pushkit.fileprovider",
        ),
        (PushType::Location, "com.example.app.location-query"),
        (
            PushType::LiveActivity,
            "com.example.app.push-type.liveactivity",
        ),
        (PushType::PushToTalk, "com.example.app.voip-ptt"),
        (PushType::Widgets, "com.example.app.push-type.widgets"),
    ];
    let pending: Vec<_> = types
        .iter()
        .enumerate()
        .map(|(i, (push_type, _))| {
            let mut notification = Notification::new(device(i as u8 + 1), PAYLOAD);
            notification.push_type = *push_type;
            sender.send(notification).unwrap()
        })
        .collect();
    with_running(&sender, async {
        for p in pending {
            assert_eq!(outcome(p).await, accepted());
        }
    });
    let seen = server.seen.lock().unwrap();
    for (i, (push_type, topic)) in types.iter().enumerate() {
        let path = format!("/3/device/{}", format!("{:02x}", i + 1).repeat(32));
        let request = seen.iter().find(|s| s.path == path).unwrap();
        assert_eq!(request.headers["apns-push-type"], push_type.as_str());
        assert_eq!(request.headers["apns-topic"], *topic, "{push_type:?}");
    }
    // A topic given with its suffix already is not suffixed twice.
    assert_eq!(
        PushType::Voip.topic("com.example.app.voip"),
        "com.example.app.voip"
    );
}

#[test]
fn certificate_auth_sends_no_authorization_header() {
    let server = FakeApns::start(ok());
    let sender = sender(&server, config(&server));
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted());
    });
    let seen = server.seen.lock().unwrap();
    assert!(!seen[0].headers.contains_key("authorization"));
}

#[test]
fn unregistered_device_is_reported_gone() {
    let server = FakeApns::start(Arc::new(|seen| {
        if seen.path.ends_with("0101") {
            (410, Some("Unregistered"))
        } else {
            (400, Some("BadDeviceToken"))
        }
    }));
    for authoritative in [false, true] {
        let gone = Rc::new(RefCell::new(Vec::new()));
        let mut config = config(&server);
        config.bad_device_token_is_gone = authoritative;
        let noted = Rc::clone(&gone);
        let sender = Rc::new(Sender::new(
            config,
            Auth::Certificate,
            server.connector(),
            move |token: &DeviceToken| noted.borrow_mut().push(token.clone()),
        ));
        let unregistered = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
        let bad = sender.send(Notification::new(device(2), PAYLOAD)).unwrap();
        with_running(&sender, async {
            assert_eq!(
                outcome(unregistered).await,
                Outcome::Gone {
                    status: 410,
                    reason: Reason::Unregistered
                }
            );
            let bad = outcome(bad).await;
            if authoritative {
                assert_eq!(
                    bad,
                    Outcome::Gone {
                        status: 400,
                        reason: Reason::BadDeviceToken
                    }
                );
            } else {
                assert_eq!(
                    bad,
                    Outcome::Rejected {
                        status: 400,
                        reason: Reason::BadDeviceToken
                    }
                );
            }
        });
        let mut expected = vec![device(1)];
        if authoritative {
            expected.push(device(2));
        }
        let mut gone = gone.borrow().clone();
        gone.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(gone, expected);
        let stats = sender.stats();
        assert_eq!(stats.devices_gone, expected.len() as u64);
        assert_eq!(stats.rejected["Unregistered"], 1);
        assert_eq!(stats.rejected["BadDeviceToken"], 1);
        assert_eq!(stats.retried, 0);
    }
}

/// Once the endpoint has accepted a notification, the hub is known to talk to
/// the environment its tokens come from: a token it calls bad is gone.
#[test]
fn a_bad_device_token_is_gone_once_the_endpoint_has_accepted_one() {
    let server = FakeApns::start(Arc::new(|seen| {
        if seen.path.ends_with("0202") {
            (400, Some("BadDeviceToken"))
        } else {
            (200, None)
        }
    }));
    let gone = Rc::new(RefCell::new(Vec::new()));
    let noted = Rc::clone(&gone);
    let sender = Rc::new(Sender::new(
        config(&server),
        Auth::Certificate,
        server.connector(),
        move |token: &DeviceToken| noted.borrow_mut().push(token.clone()),
    ));
    let good = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(good).await, accepted());
    });
    let bad = sender.send(Notification::new(device(2), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(
            outcome(bad).await,
            Outcome::Gone {
                status: 400,
                reason: Reason::BadDeviceToken
            }
        );
    });
    assert_eq!(*gone.borrow(), [device(2)]);
}

#[test]
fn too_many_requests_then_accepted_after_one_retry() {
    let server = FakeApns::start(in_turn(&[(429, Some("TooManyRequests"))]));
    let sender = sender(&server, config(&server));
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted());
    });
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.accepted), (2, 1, 1));
    assert!(stats.rejected.is_empty());
}

#[test]
fn unavailable_twice_then_accepted() {
    let server = FakeApns::start(in_turn(&[(503, None), (503, Some("ServiceUnavailable"))]));
    let sender = sender(&server, config(&server));
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted());
    });
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.accepted), (3, 2, 1));
    assert_eq!(server.seen.lock().unwrap().len(), 3);
}

#[test]
fn internal_errors_forever_fail_after_the_configured_attempts() {
    let server = FakeApns::start(Arc::new(|_| (500, Some("InternalServerError"))));
    let mut config = config(&server);
    config.max_attempts = 4;
    let sender = sender(&server, config);
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(
            outcome(pending).await,
            Outcome::Failed {
                why: Failure::GaveUp {
                    status: 500,
                    reason: Reason::InternalServerError
                }
            }
        );
    });
    assert_eq!(server.seen.lock().unwrap().len(), 4);
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.failed), (4, 3, 1));
}

#[test]
fn expired_provider_token_is_replaced_once_old_enough() {
    // The fake clock moves 30 minutes when APNs refuses the first token, as
    // if it had been in use that long.
    let clock = Arc::new(AtomicU64::new(T0));
    let moved = Arc::clone(&clock);
    let n = AtomicUsize::new(0);
    let server = FakeApns::start(Arc::new(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            moved.fetch_add(30 * 60, Ordering::SeqCst);
            (403, Some("ExpiredProviderToken"))
        } else {
            (200, None)
        }
    }));
    let p8 = P8::new("expired");
    let now = Arc::clone(&clock);
    let sender = Rc::new(
        Sender::new(
            config(&server),
            Auth::Token(p8.provider_token()),
            server.connector(),
            |_: &DeviceToken| {},
        )
        .with_clock(move || now.load(Ordering::SeqCst)),
    );
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted());
    });
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let bearer = |i: usize| seen[i].headers["authorization"].to_str().unwrap();
    assert_ne!(bearer(0), bearer(1));
    assert_eq!(p8.verify(bearer(0))["iat"], T0);
    assert_eq!(p8.verify(bearer(1))["iat"], T0 + 30 * 60);
    assert_eq!(sender.stats().retried, 1);
}

#[test]
fn a_young_provider_token_refused_is_a_rejection() {
    // Refusing a token minted a minute ago: a new one would earn a 429, and
    // the ids or the key are what is wrong.
    let server = FakeApns::start(Arc::new(|_| (403, Some("InvalidProviderToken"))));
    let p8 = P8::new("young");
    let sender = Rc::new(
        Sender::new(
            config(&server),
            Auth::Token(p8.provider_token()),
            server.connector(),
            |_: &DeviceToken| {},
        )
        .with_clock(|| T0),
    );
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(
            outcome(pending).await,
            Outcome::Rejected {
                status: 403,
                reason: Reason::InvalidProviderToken
            }
        );
    });
    assert_eq!(server.seen.lock().unwrap().len(), 1);
    assert_eq!(sender.stats().rejected["InvalidProviderToken"], 1);
}

#[test]
fn payload_over_the_limit_is_refused_without_a_request() {
    let server = FakeApns::start(ok());
    let sender = sender(&server, config(&server));
    let big = vec![b'x'; 4097];
    let refused = sender
        .send(Notification::new(device(1), big.clone()))
        .unwrap();
    assert_eq!(
        refused.try_outcome(),
        Some(Outcome::Failed {
            why: Failure::TooLong {
                what: "payload",
                size: 4097,
                limit: 4096
            }
        })
    );
    let mut voip = Notification::new(device(2), vec![b'x'; 5121]);
    voip.push_type = PushType::Voip;
    let voip_refused = sender.send(voip.clone()).unwrap();
    assert!(matches!(
        voip_refused.try_outcome(),
        Some(Outcome::Failed {
            why: Failure::TooLong { limit: 5120, .. }
        })
    ));
    let mut collapse = Notification::new(device(3), PAYLOAD);
    collapse.collapse_id = Some("c".repeat(65));
    assert_eq!(
        sender.send(collapse).unwrap().try_outcome(),
        Some(Outcome::Failed {
            why: Failure::TooLong {
                what: "collapse id",
                size: 65,
                limit: 64
            }
        })
    );
    // 4097 bytes are fine for voip; sent as the marker that the others were not.
    voip.payload = big.into();
    let sent = sender.send(voip).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(sent).await, accepted());
    });
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), 4097);
    assert_eq!(seen[0].headers["apns-push-type"], "voip");
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.failed, stats.accepted), (1, 3, 1));
}

#[test]
fn a_dropped_connection_is_replaced_and_the_notification_retried() {
    let server = FakeApns::start(in_turn(&[(DROP_CONNECTION, None)]));
    let sender = sender(&server, config(&server));
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted());
    });
    assert_eq!(server.seen.lock().unwrap().len(), 2);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.connections), (2, 1, 2));
}

#[test]
fn goaway_is_followed_by_a_new_connection() {
    let server = FakeApns::start(in_turn(&[(GO_AWAY, None)]));
    let sender = sender(&server, config(&server));
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted());
    });
    assert_eq!(server.seen.lock().unwrap().len(), 2);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    assert_eq!(sender.stats().retried, 1);
}

#[test]
fn a_request_without_answer_replaces_the_connection() {
    let server = FakeApns::start(in_turn(&[(NO_ANSWER, None)]));
    let mut config = config(&server);
    config.request_timeout = Duration::from_millis(200);
    let sender = sender(&server, config);
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        assert_eq!(outcome(pending).await, accepted());
    });
    assert_eq!(server.seen.lock().unwrap().len(), 2);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.retried, stats.connections), (2, 1, 2));
}

#[test]
fn no_server_fails_after_the_configured_attempts() {
    // A port that was just free: connecting is refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = FakeApns::start(ok());
    let mut config = config(&server);
    config.addr = addr;
    let sender = sender(&server, config);
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        let outcome = outcome(pending).await;
        assert!(
            matches!(&outcome, Outcome::Failed { why: Failure::Unreachable(why) } if why.contains("connect")),
            "{outcome:?}"
        );
    });
    assert_eq!(sender.stats().sent, 0);
}

#[test]
fn a_stalled_connect_fails_after_the_configured_attempts() {
    // Accepts TCP connections and never answers the TLS handshake.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = FakeApns::start(ok());
    let mut config = config(&server);
    config.addr = silent.local_addr().unwrap();
    config.connect_timeout = Duration::from_millis(100);
    let sender = sender(&server, config);
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    with_running(&sender, async {
        let outcome = outcome(pending).await;
        assert!(
            matches!(&outcome, Outcome::Failed { why: Failure::Unreachable(why) } if why.contains("no connection within")),
            "{outcome:?}"
        );
    });
    assert_eq!(sender.stats().sent, 0);
}

#[test]
fn a_full_queue_refuses() {
    let server = FakeApns::start(ok());
    let mut config = config(&server);
    config.max_queue = 2;
    let sender = sender(&server, config);
    // Not running yet: nothing leaves the queue.
    let first = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    let second = sender.send(Notification::new(device(2), PAYLOAD)).unwrap();
    assert!(matches!(
        sender.send(Notification::new(device(3), PAYLOAD)),
        Err(QueueFull("APNs"))
    ));
    assert_eq!(sender.stats().queued, 2);
    // Refused for want of room: counted as failed.
    assert_eq!(sender.stats().failed, 1);
    with_running(&sender, async {
        assert_eq!(outcome(first).await, accepted());
        assert_eq!(outcome(second).await, accepted());
    });
    assert_eq!(sender.stats().queued, 0);
}

#[test]
fn dropping_the_sender_reports_stopped() {
    let server = FakeApns::start(ok());
    let sender = sender(&server, config(&server));
    let pending = sender.send(Notification::new(device(1), PAYLOAD)).unwrap();
    drop(sender);
    assert_eq!(
        pending.try_outcome(),
        Some(Outcome::Failed {
            why: Failure::Stopped
        })
    );
}

#[test]
fn many_notifications_share_one_connection_with_streams_in_flight() {
    // The server answers only once 8 requests wait on the connection: a
    // sender with fewer streams in flight would get no answer at all.
    const STREAMS: usize = 8;
    let server = FakeApns::start_batched(ok(), STREAMS);
    let mut config = config(&server);
    config.max_streams = STREAMS;
    config.max_queue = 200;
    let sender = sender(&server, config);
    let pending: Vec<Pending> = (0..200)
        .map(|i| {
            sender
                .send(Notification::new(device(i as u8), PAYLOAD))
                .unwrap()
        })
        .collect();
    with_running(&sender, async {
        for p in pending {
            assert_eq!(outcome(p).await, accepted());
        }
    });
    assert_eq!(server.seen.lock().unwrap().len(), 200);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    let stats = sender.stats();
    assert_eq!((stats.sent, stats.accepted, stats.retried), (200, 200, 0));
}
