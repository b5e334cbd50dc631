//! Acknowledgements over real sockets: a push with `ack_timeout` waits for a
//! v1 client's `ack` of its position (cumulative, from any connection of the
//! uid), or for its timeout; with `apns`, an unacknowledged push goes to the
//! uid's iPhones (a real TLS + HTTP/2 server playing APNs), an acknowledged
//! one does not, and a uid with no connection gets them at once. Every bad
//! input is refused with its reason, on the text port and in v1 `error`
//! frames.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use common::apns::{FakeApns, device, hub_config, register};
use common::*;
use pushhub::channel::Pattern;
use pushhub::config::HistoryLimits;
use pushhub::hub::Pos;
use serde_json::{Value, json};
use smol::Async;

// ---------------------------------------------------------------------------
// A v1 client.

/// Connects offering `pushhub.v1`, and checks that the hub chose it.
async fn v1_connect(ws: SocketAddr) -> Client {
    let stream = within(STEP, "connecting", Async::<TcpStream>::connect(ws))
        .await
        .unwrap();
    let mut request = format!("ws://{ws}/").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("pushhub.v1"),
    );
    let (client, response) = within(
        STEP,
        "v1 handshake",
        async_tungstenite::client_async(request, stream),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "pushhub.v1");
    client
}

async fn send(client: &mut Client, frame: Value) {
    send_text(client, &frame.to_string()).await;
}

/// The next v1 frame, as JSON.
async fn frame(client: &mut Client) -> Value {
    let text = next_text(client).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"))
}

async fn ask(client: &mut Client, request: Value) -> Value {
    send(client, request).await;
    frame(client).await
}

/// A v1 client logged in as plain uid `uid`, past its `welcome`.
async fn login(ws: SocketAddr, uid: &str) -> (Client, Value) {
    let mut client = v1_connect(ws).await;
    let welcome = ask(&mut client, json!({"op":"auth","uid":uid})).await;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    (client, welcome)
}

/// Proves that nothing is queued for the client: the answer to a ping is
/// the next frame.
async fn nothing_more(client: &mut Client) {
    assert_eq!(
        ask(client, json!({"op":"ping","id":"probe"})).await,
        json!({"op":"pong","id":"probe"}),
        "nothing was queued before the pong"
    );
}

fn pos(value: &Value) -> Pos {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a position"));
    Pos::parse(text).unwrap_or_else(|| panic!("{text:?} is not a position"))
}

/// Reads the next `msg` and returns its position, as the client would ack it.
async fn next_pos(client: &mut Client) -> String {
    let msg = frame(client).await;
    assert_eq!(msg["op"], "msg", "{msg}");
    msg["pos"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------
// Requests and configurations.

fn push_acked(uid: &str, data: &str, timeout: impl Into<Value>) -> Value {
    json!({"cmd":"push","uid":uid,"data":data,"ack_timeout":timeout.into()})
}

fn push_acked_apns(uid: &str, timeout: &str) -> Value {
    let mut request = push_acked(uid, "hello", timeout);
    request["apns"] = json!({"aps": {"alert": "Hi"}});
    request
}

/// Sends one request line without waiting for its reply.
async fn send_line(backend: &Backend, request: &Value) {
    backend.send(format!("{request}\n").as_bytes()).await;
}

/// The next reply line, as JSON.
async fn reply(backend: &mut Backend) -> Value {
    let line = backend.line().await;
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
}

/// The paths the fake APNs server was asked for, in order.
fn seen_paths(apns: &FakeApns) -> Vec<String> {
    apns.seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// Acknowledged, or not.

#[test]
fn an_acknowledged_push_is_answered_as_soon_as_it_is_acked() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, _) = login(server.ws, "u1").await;
        // A timeout far longer than any wait here: the reply comes with
        // the ack, not at the deadline (each read is bounded by STEP).
        send_line(&backend, &push_acked("u1", "hello", "60s")).await;
        let msg = frame(&mut client).await;
        assert_eq!(msg["d"], "hello", "{msg}");
        // Asked on a connection of its own: replies on this one wait their turn.
        let mut other = Backend::connect(server.text).await;
        let stats = other.stats().await;
        assert_eq!(stats["acks_waiting"], 1, "{stats}");
        send(&mut client, json!({"op":"ack","pos":msg["pos"]})).await;
        assert_eq!(
            reply(&mut backend).await,
            json!({"ok":true,"delivered":1,"acked":true})
        );

        // Cumulative: an ack covers every earlier position, and any
        // connection of the uid may send it. The timeout as a number of
        // seconds, and an id, copied.
        let (mut second, _) = login(server.ws, "u1").await;
        let mut first = push_acked("u1", "one", 60);
        first["id"] = json!("a");
        send_line(&backend, &first).await;
        send_line(&backend, &push_acked("u1", "two", "1m")).await;
        let one = next_pos(&mut client).await;
        let two = next_pos(&mut client).await;
        assert_eq!(next_pos(&mut second).await, one);
        assert_eq!(next_pos(&mut second).await, two);
        assert_eq!(pos(&json!(two)).offset, pos(&json!(one)).offset + 1);
        // With an id, the ack is answered.
        assert_eq!(
            ask(&mut second, json!({"op":"ack","pos":two,"id":7})).await,
            json!({"op":"acked","id":7})
        );
        assert_eq!(
            reply(&mut backend).await,
            json!({"ok":true,"id":"a","delivered":2,"acked":true})
        );
        assert_eq!(
            reply(&mut backend).await,
            json!({"ok":true,"delivered":2,"acked":true})
        );
        // Acking again, or an earlier position, is no error.
        assert_eq!(
            ask(&mut client, json!({"op":"ack","pos":one,"id":"again"})).await,
            json!({"op":"acked","id":"again"})
        );
        let stats = backend.stats().await;
        assert_eq!(stats["acks"], 3, "{stats}");
        assert_eq!(stats["acked_pushes"], 3, "{stats}");
        assert_eq!(stats["acks_waiting"], 0, "{stats}");
        assert_eq!(stats["unacked_pushes"], 0, "{stats}");
        let metrics = http(server.metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        for (name, value) in [
            ("pushhub_acks_total", 3.0),
            ("pushhub_ack_pushes_total{result=\"acked\"}", 3.0),
            ("pushhub_ack_pushes_total{result=\"unacked\"}", 0.0),
            ("pushhub_acks_waiting", 0.0),
        ] {
            assert_eq!(sample(&metrics, name), Some(value), "{name}: {metrics}");
        }
    });
}

#[test]
fn an_unacknowledged_push_is_answered_after_its_timeout() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, _) = login(server.ws, "u1").await;
        let started = Instant::now();
        send_line(&backend, &push_acked("u1", "ignored", "500ms")).await;
        // Behind it on the same connection, a reply that is ready at once:
        // it waits its turn.
        send_line(&backend, &json!({"cmd":"online","uid":"u1","id":2})).await;
        let p = next_pos(&mut client).await;
        assert_eq!(
            reply(&mut backend).await,
            json!({"ok":true,"delivered":1,"acked":false})
        );
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "answered unacknowledged before its timeout: {:?}",
            started.elapsed()
        );
        assert_eq!(
            reply(&mut backend).await,
            json!({"ok":true,"id":2,"online":true,"connections":1})
        );
        // A late ack is accepted (the position exists) but changes nothing.
        assert_eq!(
            ask(&mut client, json!({"op":"ack","pos":p,"id":1})).await,
            json!({"op":"acked","id":1})
        );

        // A raw client never acknowledges.
        let _raw = login_plain(&server, "raw").await;
        let reply = backend.json(push_acked("raw", "x", "200ms")).await;
        assert_eq!(reply, json!({"ok":true,"delivered":1,"acked":false}));

        // A uid with no connection: answered at once.
        let reply = backend.json(push_acked("nobody", "x", "5m")).await;
        assert_eq!(reply, json!({"ok":true,"delivered":0,"acked":false}));

        // The sweeper forgets the watches whose wait ended.
        let deadline = Instant::now() + STEP;
        loop {
            let stats = backend.stats().await;
            if stats["unacked_pushes"] == 3 && stats["acks_waiting"] == 0 {
                assert_eq!(stats["acked_pushes"], 0, "{stats}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the unacknowledged pushes not counted: {stats}"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    });
}

// ---------------------------------------------------------------------------
// The APNs fallback.

#[test]
fn an_unacknowledged_push_goes_to_the_uids_devices() {
    let apns = FakeApns::start(Arc::new(|_| (200, None)));
    let scratch = Scratch::new("ack-unacked");
    let server = Server::start(hub_config(&apns, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &device(1)).await;
        let (mut client, _) = login(server.ws, "u1").await;
        send_line(&backend, &push_acked_apns("u1", "300ms")).await;
        assert_eq!(frame(&mut client).await["d"], "hello");
        assert_eq!(
            reply(&mut backend).await,
            json!({"ok":true,"delivered":1,"acked":false,
                   "apns":{"devices":1,"accepted":1,"refused":[]}})
        );
        let stats = backend.stats().await;
        assert_eq!(stats["apns"]["accepted"], 1, "{stats}");
    });
    let seen = apns.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/3/device/{}", device(1)));
    assert_eq!(&seen[0].body[..], br#"{"aps":{"alert":"Hi"}}"#);
}

#[test]
fn an_acknowledged_push_goes_to_no_device() {
    let apns = FakeApns::start(Arc::new(|_| (200, None)));
    let scratch = Scratch::new("ack-acked");
    let server = Server::start(hub_config(&apns, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &device(1)).await;
        register(&mut backend, "u2", &device(2)).await;
        let (mut client, _) = login(server.ws, "u1").await;
        send_line(&backend, &push_acked_apns("u1", "60s")).await;
        let p = next_pos(&mut client).await;
        send(&mut client, json!({"op":"ack","pos":p})).await;
        assert_eq!(
            reply(&mut backend).await,
            json!({"ok":true,"delivered":1,"acked":true})
        );
        // `apns_when` "never": unacknowledged, and still no device.
        let mut never = push_acked_apns("u1", "200ms");
        never["apns_when"] = json!("never");
        send_line(&backend, &never).await;
        next_pos(&mut client).await;
        assert_eq!(
            reply(&mut backend).await,
            json!({"ok":true,"delivered":1,"acked":false})
        );
        // A push that does reach Apple, after them: had anything gone
        // before, Apple would have seen it first.
        let reply = backend
            .json(json!({"cmd":"push","uid":"u2","data":"x","apns":{"aps":{}}}))
            .await;
        assert_eq!(reply["apns"]["accepted"], 1, "{reply}");
    });
    assert_eq!(seen_paths(&apns), [format!("/3/device/{}", device(2))]);
}

#[test]
fn a_uid_with_no_connection_goes_to_apns_at_once() {
    let apns = FakeApns::start(Arc::new(|_| (200, None)));
    let scratch = Scratch::new("ack-offline");
    let server = Server::start(hub_config(&apns, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &device(1)).await;
        register(&mut backend, "u1", &device(3)).await;
        // Five minutes of timeout, answered within STEP: nobody could ack.
        let reply = backend.json(push_acked_apns("u1", "5m")).await;
        assert_eq!(
            reply,
            json!({"ok":true,"delivered":0,"acked":false,
                   "apns":{"devices":2,"accepted":2,"refused":[]}})
        );
    });
    assert_eq!(
        seen_paths(&apns),
        [
            format!("/3/device/{}", device(1)),
            format!("/3/device/{}", device(3))
        ]
    );
}

// ---------------------------------------------------------------------------
// Bad inputs.

#[test]
fn bad_ack_timeouts_and_combinations_are_refused() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let refused = |reply: &Value, error: &str| {
            assert_eq!(reply["ok"], false, "{reply}");
            assert_eq!(reply["error"], error, "{reply}");
        };
        let bad_duration = "`ack_timeout` must be a duration from 1ms to 5m, such as \"5s\" or 5";
        for timeout in [
            json!("0s"),
            json!(0),
            json!("0ms"),
            json!("5m1s"),
            json!("301s"),
            json!(301),
            json!("6m"),
            json!("1h"),
            json!("soon"),
            json!(""),
            json!(-1),
            json!(1.5),
            json!(1e3),
            json!(true),
            json!(null),
            json!(["5s"]),
            json!(18_446_744_073_709_551_615u64),
        ] {
            let reply = backend.json(push_acked("u1", "x", timeout.clone())).await;
            refused(&reply, bad_duration);
        }
        // The bounds themselves are fine (nobody is connected: no wait).
        for timeout in [json!("1ms"), json!("5m"), json!(300), json!("300s")] {
            let reply = backend.json(push_acked("u1", "x", timeout)).await;
            assert_eq!(reply, json!({"ok":true,"delivered":0,"acked":false}));
        }

        let reply = backend
            .json(json!({"cmd":"push","uids":["a","b"],"data":1,"ack_timeout":"5s","id":9}))
            .await;
        assert_eq!(
            reply,
            json!({"ok":false,"id":9,"error":"`ack_timeout` waits for one uid: give `uid`, not `uids`"})
        );
        let reply = backend
            .json(json!({"cmd":"push","conn":"1","data":1,"ack_timeout":"5s"}))
            .await;
        refused(
            &reply,
            "`ack_timeout` must be absent in a push to one connection",
        );
        let when = "`apns_when`, `fcm_when` or `webpush_when` \"unacked\" needs \
                    `ack_timeout`; with `ack_timeout`, each is \"unacked\" (the default) \
                    or \"never\"";
        let reply = backend
            .json(json!({"cmd":"push","uid":"u1","data":1,"apns":{"aps":{}},"apns_when":"unacked"}))
            .await;
        refused(&reply, when);
        for other in ["always", "offline"] {
            let mut request = push_acked_apns("u1", "5s");
            request["apns_when"] = json!(other);
            refused(&backend.json(request).await, when);
        }
        // This hub has no APNs: the fallback cannot be, so neither is the push.
        let reply = backend.json(push_acked_apns("u1", "5s")).await;
        assert!(
            reply["error"].as_str().unwrap().contains("--apns-topic"),
            "{reply}"
        );
        let stats = backend.stats().await;
        assert_eq!(
            stats["text_errors"],
            json!({"wrong_type":18,"ack_one_uid":1,"ack_and_when":3,"no_apns":1}),
            "{stats}"
        );
        assert_eq!(stats["pushes"], 4, "only the good ones: {stats}");
    });

    // Without positions in uid streams, there is nothing to acknowledge.
    let mut config = plain_config();
    config.history = HistoryLimits {
        size_uid: 0,
        ..HistoryLimits::default()
    };
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, _) = login(server.ws, "u1").await;
        let reply = backend.json(push_acked("u1", "x", "5s")).await;
        assert_eq!(
            reply,
            json!({"ok":false,"error":"`ack_timeout` needs positions in uid streams: this hub runs with --history-size-uid 0"})
        );
        nothing_more(&mut client).await;
        assert_eq!(
            ask(&mut client, json!({"op":"ack","pos":"1:1"})).await,
            json!({"op":"error","code":404,"reason":"no such stream: nothing to acknowledge"})
        );
    });
}

#[test]
fn bad_acks_get_typed_errors_and_the_connection_stays() {
    let mut config = plain_config();
    config.public_channels = vec![Pattern::parse("*").unwrap()];
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        // Before auth.
        let mut anonymous = v1_connect(server.ws).await;
        assert_eq!(
            ask(&mut anonymous, json!({"op":"ack","pos":"1:1","id":1})).await,
            json!({"op":"error","code":401,"reason":"authenticate first: send an auth op","id":1})
        );

        let (mut client, welcome) = login(server.ws, "u1").await;
        let start = pos(&welcome["pos"]["uid"]);
        assert_eq!(backend.push("u1", "m1").await, 1);
        let p = pos(&json!(next_pos(&mut client).await));
        assert_eq!(p, Pos { offset: 1, ..start });
        let other_epoch = Pos {
            epoch: p.epoch ^ 1,
            ..p
        };
        let ahead = Pos { offset: 2, ..p };
        for (request, expected) in [
            (
                json!({"op":"ack","pos":ahead.to_string(),"id":"x"}),
                json!({"op":"error","code":400,"reason":"position past the stream's last message","id":"x"}),
            ),
            (
                json!({"op":"ack","pos":other_epoch.to_string()}),
                json!({"op":"error","code":409,"reason":"position of another epoch: the stream's history was lost"}),
            ),
            (
                json!({"op":"ack","ch":"nowhere","pos":p.to_string()}),
                json!({"op":"error","code":404,"reason":"no such stream: nothing to acknowledge","ch":"nowhere"}),
            ),
            (
                json!({"op":"ack"}),
                json!({"op":"error","code":400,"reason":"missing field `pos`"}),
            ),
            (
                json!({"op":"ack","ch":"a b","pos":p.to_string()}),
                json!({"op":"error","code":422,"reason":"bad channel name: a channel name is printable ASCII without spaces or control characters","ch":"a b"}),
            ),
        ] {
            assert_eq!(
                ask(&mut client, request.clone()).await,
                expected,
                "{request}"
            );
        }
        let malformed = "`pos` must be a position such as \"3f2a9c:17\", as the hub sent it";
        for bad in [
            json!("nope"),
            json!("1:"),
            json!(":1"),
            json!("x:1"),
            json!("1:-1"),
            json!("1:2:3"),
            json!(12),
            json!(null),
            json!({"epoch":1}),
        ] {
            let answer = ask(&mut client, json!({"op":"ack","pos":bad,"id":5})).await;
            assert_eq!(
                answer,
                json!({"op":"error","code":400,"reason":malformed,"id":5}),
                "{bad}"
            );
        }

        // A channel's position may be acked too.
        let subbed = ask(&mut client, json!({"op":"sub","ch":"room"})).await;
        let room = pos(&subbed["pos"]);
        assert_eq!(
            backend
                .json(json!({"cmd":"publish","ch":"room","data":"c"}))
                .await["delivered"],
            1
        );
        let c = next_pos(&mut client).await;
        assert_eq!(pos(&json!(c)), Pos { offset: 1, ..room });
        assert_eq!(
            ask(
                &mut client,
                json!({"op":"ack","ch":"room","pos":c,"id":[1]})
            )
            .await,
            json!({"op":"acked","id":[1]})
        );
        // Without an id, a good ack is not answered.
        send(&mut client, json!({"op":"ack","pos":p.to_string()})).await;
        nothing_more(&mut client).await;

        // Still connected and served.
        assert_eq!(backend.push("u1", "still here").await, 1);
        assert_eq!(frame(&mut client).await["d"], "still here");
        let stats = backend.stats().await;
        assert_eq!(
            stats["v1_errors"],
            json!({"ahead_of_stream":1,"bad_request":10,"no_stream":1,"other_epoch":1,"unauthenticated":1}),
            "{stats}"
        );
        assert_eq!(stats["channel_errors"], json!({"bad_channel":1}), "{stats}");
        assert_eq!(stats["acks"], 2, "{stats}");
    });
}

/// A reply held behind another one is settled after its deadline: an ack
/// that came after the deadline makes it unacknowledged, in the reply and
/// in the counters alike.
#[test]
fn a_late_ack_behind_a_waiting_reply_counts_as_unacknowledged() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let _raw = login_plain(&server, "raw").await;
        let (mut client, _) = login(server.ws, "u1").await;
        let sent = Instant::now();
        // The first never gets an ack (a raw client); the second waits
        // behind it, its own deadline long past when it is looked at.
        send_line(&backend, &push_acked("raw", "first", "1s")).await;
        send_line(&backend, &push_acked("u1", "second", "100ms")).await;
        let p = next_pos(&mut client).await;
        // Past the second's deadline (taken when the hub read it, after
        // `sent`), well before the first's.
        smol::Timer::at(sent + Duration::from_millis(300)).await;
        send(&mut client, json!({"op":"ack","pos":p})).await;
        for _ in 0..2 {
            assert_eq!(
                reply(&mut backend).await,
                json!({"ok":true,"delivered":1,"acked":false})
            );
        }
        let deadline = Instant::now() + STEP;
        loop {
            let stats = backend.stats().await;
            if stats["acks_waiting"] == 0 && stats["unacked_pushes"] == 2 {
                assert_eq!(stats["acked_pushes"], 0, "{stats}");
                break;
            }
            assert!(Instant::now() < deadline, "{stats}");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    });
}
