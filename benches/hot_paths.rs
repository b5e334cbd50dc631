//! Micro benchmarks of the hub's hot paths, without sockets.
//!
//! Run with `make bench` (or `cargo bench --bench hot_paths`). Each benchmark
//! drains the queues it fills, so that it measures steady-state work.

use divan::Bencher;
use pushhub::hub::{ConnId, Hub, Limits, Outbound, same};
use pushhub::text_port::protocol::parse_request;

use pushhub::text_port::{Backend, Services, handle_line};
use pushhub::ws::frame::Frame;

fn main() {
    divan::main();
}

/// A hub with `n` authenticated connections, uids `u0`..`u{n-1}`.
fn hub_with(n: usize) -> (Hub, Vec<ConnId>) {
    let mut hub = Hub::new(Limits {
        max_queue_messages: 1 << 20,
        max_queue_bytes: 1 << 30,
        auth_timeout_ms: 10_000,
        ping_interval_ms: 25_000,
        idle_timeout_ms: 60_000,
        max_subscriptions: 128,
        max_channels: 1000,
        max_listener_buffer: 1 << 20,
        history: Default::default(),
    });
    let ids = (0..n)
        .map(|i| {
            let id = hub.open(0, None, false);
            hub.bind(id, &format!("u{i}"));
            id
        })
        .collect();
    (hub, ids)
}

/// Empties a connection's queue as if the socket took everything.
fn drain_one(hub: &mut Hub, id: ConnId) {
    if let Outbound::Write(queue) = hub.outbound(id) {
        let bytes = queue.bytes();
        queue.advance(bytes);
    }
}

fn drain(hub: &mut Hub, ids: &[ConnId]) {
    for &id in ids {
        drain_one(hub, id);
    }
}

#[divan::bench]
fn parse_original_form_line() -> usize {
    match parse_request(divan::black_box(br#"{"uid":"uid1","percent":"88%"}"#)) {
        pushhub::text_port::protocol::Request::Legacy { line, .. } => line.len(),
        _ => 0,
    }
}

#[divan::bench]
fn parse_push_command() -> bool {
    let line = br#"{"cmd":"push","uid":"u42","data":{"title":"hi","body":"a message"},"id":17}"#;
    matches!(
        parse_request(divan::black_box(line)),
        pushhub::text_port::protocol::Request::Command { command: Ok(_), .. }
    )
}

/// Parse, route to one online uid, queue, reply: the text port's whole path.
#[divan::bench]
fn handle_push_line_to_online_uid(bencher: Bencher) {
    let (mut hub, ids) = hub_with(10_000);
    let mut backend = Backend::default();
    bencher.bench_local(|| {
        backend.replies.output().clear();
        let line = br#"{"uid":"u4242","percent":"88%"}"#;
        handle_line(&mut hub, Services::default(), line, &mut backend);
        drain_one(&mut hub, ids[4242]);
    });
}

#[divan::bench]
fn push_to_uid(bencher: Bencher) {
    let (mut hub, ids) = hub_with(10_000);
    let message = same(Frame::text("{\"percent\":\"88%\"}"));
    bencher.bench_local(|| {
        hub.push(divan::black_box("u777"), &message);
        drain_one(&mut hub, ids[777]);
    });
}

#[divan::bench(args = [1_000, 10_000])]
fn broadcast(bencher: Bencher, n: usize) {
    let (mut hub, ids) = hub_with(n);
    let message = same(Frame::text("{\"event\":\"tick\"}"));
    bencher.bench_local(|| {
        hub.broadcast(&message);
        drain(&mut hub, &ids);
    });
}

/// Encoding a push's frame: once per push, whatever the number of receivers.
#[divan::bench(args = [20, 1_000, 65_536])]
fn encode_text_frame(bencher: Bencher, n: usize) {
    let text = "x".repeat(n);
    bencher.bench_local(|| Frame::text(divan::black_box(&text)).len());
}

/// A browser's subscription keys, made as a browser makes them: a P-256 key
/// pair's public point and 16 random bytes.
fn browser_keys() -> (String, String) {
    use data_encoding::BASE64URL_NOPAD;
    use openssl::bn::BigNumContext;
    use openssl::ec::{EcGroup, EcKey, PointConversionForm};
    use openssl::nid::Nid;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = EcKey::generate(&group).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let point = key
        .public_key()
        .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
        .unwrap();
    let mut auth = [0u8; 16];
    openssl::rand::rand_bytes(&mut auth).unwrap();
    (
        BASE64URL_NOPAD.encode(&point),
        BASE64URL_NOPAD.encode(&auth),
    )
}

/// What the hub's thread does for each Web Push message it sends: the
/// subscription's keys decoded, the payload encrypted (RFC 8291: an ECDH
/// with a fresh key pair, two HKDFs, AES-128-GCM), and the VAPID header
/// (kept per push service, so signed once in hours: see `vapid_sign`).
#[divan::bench(args = [100, 3993])]
fn webpush_message(bencher: Bencher, n: usize) {
    use pushhub::push::webpush::encrypt::{SubscriptionKeys, encrypt};
    use pushhub::push::webpush::vapid::{Audience, Subject, VapidKey, VapidSigner};
    let (p256dh, auth) = browser_keys();
    let payload = vec![b'x'; n];
    let mut signer = VapidSigner::new(
        VapidKey::generate().unwrap(),
        Subject::parse("mailto:ops@example.com").unwrap(),
    );
    let audience = Audience::of_endpoint("https://push.example.net/send/abc").unwrap();
    bencher.bench_local(|| {
        let keys = SubscriptionKeys::from_base64url(&p256dh, &auth).unwrap();
        let body = encrypt(&keys, divan::black_box(&payload)).unwrap();
        let header = signer
            .authorization(&audience, 1_800_000_000)
            .unwrap()
            .len();
        body.len() + header
    });
}

/// A VAPID JWT signed (ES256): once per push service every 11 hours.
#[divan::bench]
fn vapid_sign(bencher: Bencher) {
    use pushhub::push::webpush::vapid::{Audience, Subject, VapidKey};
    let key = VapidKey::generate().unwrap();
    let subject = Subject::parse("mailto:ops@example.com").unwrap();
    let audience = Audience::of_endpoint("https://push.example.net/send/abc").unwrap();
    bencher.bench_local(|| key.jwt(&audience, &subject, 1_800_000_000).unwrap().len());
}
