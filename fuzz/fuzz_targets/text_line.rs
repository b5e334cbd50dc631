//! The text port's whole request path on arbitrary bytes: line splitting,
//! parsing, dispatch against a hub with a few connections, reply encoding.
//! Every line must get exactly one reply line, and nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushhub::hub::{Hub, Limits};
use pushhub::text_port::protocol::split_line;

use pushhub::text_port::{Backend, Services, handle_line};

fuzz_target!(|data: &[u8]| {
    let mut hub = Hub::new(Limits {
        max_queue_messages: 8,
        max_queue_bytes: 4096,
        auth_timeout_ms: 1000,
        ping_interval_ms: 1000,
        idle_timeout_ms: 2000,
        max_subscriptions: 128,
        max_channels: 1000,
        max_listener_buffer: 1 << 20,
        history: Default::default(),
    });
    for uid in ["u1", "u2", "42"] {
        let id = hub.open(0, None, false);
        hub.bind(id, uid);
    }
    let mut backend = Backend::default();
    let mut rest = data;
    let mut lines = 0;
    while let Ok(Some((line, used))) = split_line(rest, 1024) {
        handle_line(&mut hub, Services::default(), line, &mut backend);
        rest = &rest[used..];
        lines += 1;
    }
    let out = backend.replies.output();
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), lines);
    assert!(std::str::from_utf8(out).is_ok());
});
