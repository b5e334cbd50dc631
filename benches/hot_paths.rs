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
