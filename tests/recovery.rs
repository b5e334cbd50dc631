//! Positions, history and recovery over real sockets, with real v1 clients:
//! a client that drops and comes back with `since` gets what it missed of
//! each stream (its uid's, its channels', the broadcasts), in order, once,
//! then the live messages; every gap the hub cannot fill (a restart,
//! eviction, expiry, the window, the replay bounds, the room in the queue) is
//! said with `recovered:false`, and the client stays connected; history off
//! means no positions; history's memory stays within its cap and empties
//! once nobody is left to receive it.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use common::*;
use pushhub::auth::{Grants, mint_with_grants};
use pushhub::channel::Pattern;
use pushhub::config::HistoryLimits;
use pushhub::hub::Pos;
use pushhub::time::unix_now;
use serde_json::{Value, json};
use smol::{Async, Timer};

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
    assert_eq!(
        response.headers()["Sec-WebSocket-Protocol"],
        "pushhub.v1",
        "the hub chose v1"
    );
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

/// Connects and sends `auth` (a whole frame); returns the client and its
/// `welcome`.
async fn login(ws: SocketAddr, auth: Value) -> (Client, Value) {
    let mut client = v1_connect(ws).await;
    let welcome = ask(&mut client, auth).await;
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

/// A position as the hub wrote it.
fn pos(value: &Value) -> Pos {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a position"));
    Pos::parse(text).unwrap_or_else(|| panic!("{text:?} is not a position"))
}

fn at(epoch: u64, offset: u64) -> Value {
    json!(Pos { epoch, offset }.to_string())
}

/// The stream a `msg` belongs to: `uid`, `all`, or the channel's name.
fn stream_of(msg: &Value) -> String {
    assert_eq!(msg["op"], "msg", "{msg}");
    match (msg["all"].as_bool(), msg["ch"].as_str()) {
        (Some(true), _) => "all".into(),
        (_, Some(ch)) => ch.into(),
        _ => "uid".into(),
    }
}

/// A token for `uid` that joins `subs` at `auth`.
fn token_with_subs(uid: &str, subs: &[&str]) -> String {
    let grants = Grants {
        channels: Vec::new(),
        publish: Vec::new(),
        subs: subs.iter().map(|s| s.to_string()).collect(),
    };
    mint_with_grants(&secret(), uid, unix_now() + 3600, &grants)
}

// ---------------------------------------------------------------------------
// Configurations.

/// Plain uids, every channel public, and `history`.
fn config_with(history: HistoryLimits) -> pushhub::Config {
    let mut config = plain_config();
    config.public_channels = vec![Pattern::parse("*").unwrap()];
    config.history = history;
    config
}

fn push(uid: &str, data: impl Into<Value>) -> Value {
    json!({"cmd":"push","uid":uid,"data":data.into()})
}

fn publish(ch: &str, data: impl Into<Value>) -> Value {
    json!({"cmd":"publish","ch":ch,"data":data.into()})
}

/// Sends `request` and checks it was carried out; returns `delivered`.
async fn delivered(backend: &mut Backend, request: Value) -> u64 {
    let reply = backend.json(request.clone()).await;
    assert_eq!(reply["ok"], true, "{request}: {reply}");
    reply["delivered"].as_u64().unwrap()
}

/// Waits until the hub no longer counts `uid` online: its dropped
/// connection is gone.
async fn wait_offline(backend: &mut Backend, uid: &str) {
    wait_connections(backend, uid, 0).await;
}

/// Waits until `stats` says `field` is `value`.
async fn wait_stat(backend: &mut Backend, field: &str, value: u64, limit: Duration) {
    let deadline = Deadline::new(limit, format!("stats {field} = {value}"));
    while backend.stats().await[field] != value {
        deadline.tick().await;
    }
}

// ---------------------------------------------------------------------------
// Recovery across a drop.

/// Where a client left each stream, and what it received of each.
#[derive(Default)]
struct Received {
    last: BTreeMap<String, Pos>,
    /// Per stream: (offset, data) in arrival order.
    got: BTreeMap<String, Vec<(u64, Value)>>,
}

impl Received {
    fn from_welcome(welcome: &Value) -> Received {
        let mut r = Received::default();
        r.last.insert("uid".into(), pos(&welcome["pos"]["uid"]));
        r.last.insert("all".into(), pos(&welcome["pos"]["all"]));
        for (ch, p) in welcome["pos"]["chs"].as_object().unwrap() {
            r.last.insert(ch.clone(), pos(p));
        }
        r
    }

    fn record(&mut self, msg: &Value) {
        let stream = stream_of(msg);
        let p = pos(&msg["pos"]);
        let last = self.last[&stream];
        assert_eq!(p.epoch, last.epoch, "{stream}: same epoch all along: {msg}");
        assert_eq!(
            p.offset,
            last.offset + 1,
            "{stream}: the next offset, with nothing lost or repeated: {msg}"
        );
        self.last.insert(stream.clone(), p);
        self.got
            .entry(stream)
            .or_default()
            .push((p.offset, msg["d"].clone()));
    }

    fn since(&self) -> Value {
        json!({
            "uid": self.last["uid"].to_string(),
            "all": self.last["all"].to_string(),
            "chs": {"news": self.last["news"].to_string()},
        })
    }
}

#[test]
fn a_client_that_drops_mid_stream_recovers_every_stream_at_the_seam() {
    let mut config = token_config();
    config.max_queue_messages = 50_000;
    config.max_queue_bytes = 64 << 20;
    config.history = HistoryLimits {
        size_uid: 5000,
        size_channel: 5000,
        size_broadcast: 5000,
        memory: 256 << 20,
        replay_messages: 20_000,
        replay_bytes: 64 << 20,
        ..HistoryLimits::default()
    };
    let server = Server::start(config);
    let token = token_with_subs("u1", &["news"]);
    // 0: connected; 1: dropped; 2: back.
    let phase = Rc::new(Cell::new(0u8));
    let pushed_while_away = Rc::new(Cell::new(0u64));
    run(async {
        let (mut client, welcome) = login(server.ws, json!({"op":"auth","token":token})).await;
        assert_eq!(welcome["subs"], json!(["news"]), "{welcome}");
        assert!(welcome.get("recovered").is_none(), "not asked: {welcome}");
        let mut received = Received::from_welcome(&welcome);
        for stream in ["uid", "all", "news"] {
            assert_eq!(received.last[stream].offset, 0, "a new hub: {welcome}");
        }

        // The backend pushes, publishes and broadcasts in turn, each data
        // the message's count in its stream, all along: before the drop,
        // while the client is away, around and after its return.
        let text = server.text;
        let producer = {
            let (phase, away) = (Rc::clone(&phase), Rc::clone(&pushed_while_away));
            async move {
                let mut backend = Backend::connect(text).await;
                let mut sent = [0u64; 3];
                let mut after_return = 0;
                let mut i = 0;
                while after_return < 300 {
                    if phase.get() == 1 && away.get() >= 600 {
                        // Enough missed: slower until the client is back,
                        // but still pushing as it comes back.
                        Timer::after(Duration::from_millis(1)).await;
                    }
                    let k = i % 3;
                    i += 1;
                    let n = sent[k] + 1;
                    let request = match k {
                        0 => push("u1", n),
                        1 => publish("news", n),
                        _ => json!({"cmd":"broadcast","data":n}),
                    };
                    delivered(&mut backend, request).await;
                    sent[k] = n;
                    match phase.get() {
                        1 => away.set(away.get() + 1),
                        2 => after_return += 1,
                        _ => {}
                    }
                }
                // The end, as the last message of the uid's stream.
                delivered(&mut backend, push("u1", json!({"end": true}))).await;
                sent
            }
        };
        let consumer = async {
            for _ in 0..90 {
                received.record(&frame(&mut client).await);
            }
            reset(client);
            phase.set(1);
            let mut probe = Backend::connect(server.text).await;
            wait_offline(&mut probe, "u1").await;
            let deadline = Deadline::new(STEP, "pushes while the client is away");
            while pushed_while_away.get() < 60 {
                deadline.tick().await;
            }
            let (mut client, welcome) = login(
                server.ws,
                json!({"op":"auth","token":token,"since":received.since()}),
            )
            .await;
            phase.set(2);
            assert_eq!(
                welcome["recovered"],
                json!({"uid":true,"all":true,"chs":{"news":true}}),
                "{welcome}"
            );
            for stream in ["uid", "all", "news"] {
                let now = match stream {
                    "uid" | "all" => pos(&welcome["pos"][stream]),
                    ch => pos(&welcome["pos"]["chs"][ch]),
                };
                assert_eq!(now.epoch, received.last[stream].epoch, "{welcome}");
                assert!(now.offset >= received.last[stream].offset, "{welcome}");
            }
            loop {
                let msg = frame(&mut client).await;
                received.record(&msg);
                if msg["d"] == json!({"end": true}) {
                    break;
                }
            }
            nothing_more(&mut client).await;
        };
        let (sent, ()) = smol::future::zip(producer, consumer).await;

        // Every message of every stream exactly once, in order: the ones
        // before the drop, the replayed, then the live ones.
        for (stream, n) in [("uid", sent[0]), ("news", sent[1]), ("all", sent[2])] {
            let got = &received.got[stream];
            let offsets: Vec<u64> = got.iter().map(|(offset, _)| *offset).collect();
            let expected_len = n + u64::from(stream == "uid");
            assert_eq!(offsets, (1..=expected_len).collect::<Vec<_>>(), "{stream}");
            for (offset, d) in got.iter().take(n as usize) {
                assert_eq!(d, &json!(offset), "{stream}: the message at its offset");
            }
        }
        let mut backend = Backend::connect(server.text).await;
        let stats = backend.stats().await;
        assert_eq!(stats["recoveries"], 3, "{stats}");
        assert_eq!(stats["recoveries_failed"], 0, "{stats}");
        assert!(stats["replayed"].as_u64().unwrap() >= 60, "{stats}");
    });
}

#[test]
fn a_channel_whose_only_subscriber_left_keeps_its_publications() {
    let server = Server::start(config_with(HistoryLimits::default()));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, _) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        let subbed = ask(&mut client, json!({"op":"sub","ch":"room"})).await;
        assert_eq!(subbed["op"], "subbed", "{subbed}");
        assert!(subbed.get("recovered").is_none(), "not asked: {subbed}");
        let start = pos(&subbed["pos"]);
        assert_eq!(start.offset, 0);
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;

        // Nobody is subscribed: nobody takes them, history keeps them.
        let channels = backend.json(json!({"cmd":"channels"})).await;
        assert_eq!(channels["channels"], json!([]), "{channels}");
        for n in 1..=3 {
            assert_eq!(
                delivered(&mut backend, publish("room", format!("m{n}"))).await,
                0
            );
        }
        let stats = backend.stats().await;
        assert_eq!(stats["history_messages"], 3, "{stats}");

        let (mut client, _) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        let since = start.to_string();
        assert_eq!(
            ask(
                &mut client,
                json!({"op":"sub","ch":"room","since":since,"id":1})
            )
            .await,
            json!({"op":"subbed","ch":"room","pos":at(start.epoch, 3),"recovered":true,"id":1})
        );
        for n in 1..=3 {
            assert_eq!(
                frame(&mut client).await,
                json!({"op":"msg","ch":"room","pos":at(start.epoch, n),"d":format!("m{n}")})
            );
        }
        assert_eq!(delivered(&mut backend, publish("room", "live")).await, 1);
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","ch":"room","pos":at(start.epoch, 4),"d":"live"})
        );

        // Subscribing again with where it stands: recovered, nothing replayed.
        let again = ask(
            &mut client,
            json!({"op":"sub","ch":"room","since":at(start.epoch, 4)}),
        )
        .await;
        assert_eq!(again["recovered"], true, "{again}");
        nothing_more(&mut client).await;
        let stats = backend.stats().await;
        assert_eq!(
            (&stats["recoveries"], &stats["replayed"]),
            (&json!(2), &json!(3)),
            "{stats}"
        );
        let metrics = http(server.metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        for (name, value) in [
            ("pushhub_recoveries_total{result=\"recovered\"}", 2.0),
            ("pushhub_recoveries_total{result=\"gap\"}", 0.0),
            ("pushhub_replayed_total", 3.0),
            ("pushhub_history_messages", 4.0),
        ] {
            assert_eq!(sample(&metrics, name), Some(value), "{name}: {metrics}");
        }
    });
}

// ---------------------------------------------------------------------------
// Gaps the hub cannot fill.

/// Logs in as `uid`, subscribes to `news`, and returns the client and where
/// it stands: `uid`, `all` and `news`.
async fn start_streams(ws: SocketAddr, uid: &str) -> (Client, [Pos; 3]) {
    let (mut client, welcome) = login(ws, json!({"op":"auth","uid":uid})).await;
    let subbed = ask(&mut client, json!({"op":"sub","ch":"news"})).await;
    let streams = [
        pos(&welcome["pos"]["uid"]),
        pos(&welcome["pos"]["all"]),
        pos(&subbed["pos"]),
    ];
    (client, streams)
}

/// Pushes, broadcasts and publishes one message each, and reads them.
async fn one_of_each(backend: &mut Backend, client: &mut Client, uid: &str) -> [Pos; 3] {
    delivered(backend, push(uid, "p")).await;
    delivered(backend, json!({"cmd":"broadcast","data":"b"})).await;
    delivered(backend, publish("news", "n")).await;
    let mut positions = [Pos {
        epoch: 0,
        offset: 0,
    }; 3];
    for (i, stream) in ["uid", "all", "news"].into_iter().enumerate() {
        let msg = frame(client).await;
        assert_eq!(stream_of(&msg), stream, "{msg}");
        positions[i] = pos(&msg["pos"]);
    }
    positions
}

/// Comes back as `uid` with `since` for every stream; expects none
/// recovered and nothing replayed, and returns the welcome and the `subbed`.
async fn come_back_unrecovered(ws: SocketAddr, uid: &str, since: [Pos; 3]) -> (Client, Value) {
    let (mut client, welcome) = login(
        ws,
        json!({"op":"auth","uid":uid,"since":{"uid":since[0].to_string(),"all":since[1].to_string()}}),
    )
    .await;
    assert_eq!(
        welcome["recovered"],
        json!({"uid":false,"all":false}),
        "{welcome}"
    );
    let subbed = ask(
        &mut client,
        json!({"op":"sub","ch":"news","since":since[2].to_string()}),
    )
    .await;
    assert_eq!(subbed["recovered"], false, "{subbed}");
    nothing_more(&mut client).await;
    (client, welcome)
}

#[test]
fn a_restarted_hub_recovers_nothing_of_its_predecessor() {
    let args = [
        "--ws",
        "127.0.0.1:0",
        "--text",
        "127.0.0.1:0",
        "--allow-plain-uid",
        "--public-channel",
        "*",
    ];
    let hub = Binary::start(&args, &[]);
    let before = run(async {
        let mut backend = Backend::connect(hub.text).await;
        let (mut client, _) = start_streams(hub.ws, "u1").await;
        let seen = one_of_each(&mut backend, &mut client, "u1").await;
        assert!(seen.iter().all(|p| p.offset == 1), "{seen:?}");
        seen
    });
    drop(hub);

    let hub = Binary::start(&args, &[]);
    run(async {
        let mut backend = Backend::connect(hub.text).await;
        // The new hub has messages at the same offsets (u1's stream taken
        // by another tab of it): another epoch all the same, so nothing is
        // mistaken for what the client missed.
        let (_tab, _) = login(hub.ws, json!({"op":"auth","uid":"u1"})).await;
        delivered(&mut backend, push("u1", "new 1")).await;
        delivered(&mut backend, push("u1", "new 2")).await;
        delivered(&mut backend, publish("news", "new")).await;
        let (mut client, welcome) = come_back_unrecovered(hub.ws, "u1", before).await;
        let now = pos(&welcome["pos"]["uid"]);
        assert_ne!(now.epoch, before[0].epoch, "{welcome}");
        assert_eq!(now.offset, 2, "{welcome}");
        assert_ne!(pos(&welcome["pos"]["all"]).epoch, before[1].epoch);
        // Live messages go on from the new position.
        delivered(&mut backend, push("u1", "live")).await;
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","pos":at(now.epoch, 3),"d":"live"})
        );
        let stats = backend.stats().await;
        assert_eq!(stats["recoveries_failed"], 3, "{stats}");
        assert_eq!(stats["recoveries"], 0, "{stats}");
    });

    // Two hubs in one process have different epochs too.
    let first = Server::start(config_with(HistoryLimits::default()));
    let seen = run(async {
        let mut backend = Backend::connect(first.text).await;
        let (mut client, _) = start_streams(first.ws, "u1").await;
        one_of_each(&mut backend, &mut client, "u1").await
    });
    let second = Server::start(config_with(HistoryLimits::default()));
    run(async {
        let mut backend = Backend::connect(second.text).await;
        delivered(&mut backend, push("u1", "other")).await;
        come_back_unrecovered(second.ws, "u1", seen).await;
    });
}

/// A uid whose clients have never been given a position keeps nothing: no
/// client could recover it. Once a v1 client is welcomed, its pushes are
/// kept while it is away, and recovered.
#[test]
fn a_uid_keeps_history_once_a_v1_client_has_a_position() {
    let server = Server::start(config_with(HistoryLimits::default()));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut raw = connect(server.ws, "/").await;
        send_text(&mut raw, "u1").await;
        logged_in(&mut raw).await;
        delivered(&mut backend, push("u1", "to the original's client")).await;
        let stats = backend.stats().await;
        assert_eq!(stats["history_messages"], 0, "{stats}");
        assert_eq!(stats["history_streams"], 0, "{stats}");

        let (mut client, welcome) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        let start = pos(&welcome["pos"]["uid"]);
        assert_eq!(start.offset, 0, "{welcome}");
        close_client(&mut client).await;
        delivered(&mut backend, push("u1", "missed")).await;
        let stats = backend.stats().await;
        assert_eq!(stats["history_messages"], 1, "{stats}");
        let (mut client, welcome) = login(
            server.ws,
            json!({"op":"auth","uid":"u1","since":{"uid":start.to_string()}}),
        )
        .await;
        assert_eq!(welcome["recovered"], json!({"uid":true}), "{welcome}");
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","pos":at(start.epoch, 1),"d":"missed"})
        );
    });
}

#[test]
fn messages_evicted_by_the_memory_cap_are_not_recovered() {
    // Room for a few 1 KiB messages in all.
    let server = Server::start(config_with(HistoryLimits {
        memory: 6 * 1024,
        ..HistoryLimits::default()
    }));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, welcome) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        let start = pos(&welcome["pos"]["uid"]);
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;
        delivered(&mut backend, push("u1", "x".repeat(1000))).await;
        // Another uid's messages (its stream taken by its client, gone
        // since) push u1's out: the oldest go first.
        let (mut other, _) = login(server.ws, json!({"op":"auth","uid":"u2"})).await;
        close_client(&mut other).await;
        for _ in 0..10 {
            delivered(&mut backend, push("u2", "y".repeat(1000))).await;
            let stats = backend.stats().await;
            assert!(
                stats["history_bytes"].as_u64().unwrap() <= 6 * 1024,
                "{stats}"
            );
        }
        let (mut client, welcome) = login(
            server.ws,
            json!({"op":"auth","uid":"u1","since":{"uid":start.to_string()}}),
        )
        .await;
        assert_eq!(welcome["recovered"], json!({"uid":false}), "{welcome}");
        nothing_more(&mut client).await;
    });
}

#[test]
fn more_missed_than_the_window_is_not_recovered() {
    let server = Server::start(config_with(HistoryLimits {
        size_uid: 3,
        ..HistoryLimits::default()
    }));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, welcome) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        let start = pos(&welcome["pos"]["uid"]);
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;
        for n in 1..=5 {
            delivered(&mut backend, push("u1", n)).await;
        }
        // Five missed, three kept: a gap.
        let since = json!({"uid": start.to_string()});
        let (mut client, welcome) =
            login(server.ws, json!({"op":"auth","uid":"u1","since":since})).await;
        assert_eq!(welcome["recovered"], json!({"uid":false}), "{welcome}");
        assert_eq!(welcome["pos"]["uid"], at(start.epoch, 5), "{welcome}");
        nothing_more(&mut client).await;
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;
        // Three missed, three kept: all of them.
        let since = json!({"uid": at(start.epoch, 2)});
        let (mut client, welcome) =
            login(server.ws, json!({"op":"auth","uid":"u1","since":since})).await;
        assert_eq!(welcome["recovered"], json!({"uid":true}), "{welcome}");
        for n in 3..=5 {
            assert_eq!(
                frame(&mut client).await,
                json!({"op":"msg","pos":at(start.epoch, n),"d":n})
            );
        }
        nothing_more(&mut client).await;
    });
}

#[test]
fn expired_messages_are_not_recovered_but_a_received_stream_keeps_its_position() {
    let server = Server::start(config_with(HistoryLimits {
        ttl: Duration::from_secs(1),
        ..HistoryLimits::default()
    }));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        // A keeps `room` received all along; B leaves it.
        let (mut a, _) = login(server.ws, json!({"op":"auth","uid":"a"})).await;
        assert_eq!(
            ask(&mut a, json!({"op":"sub","ch":"room"})).await["op"],
            "subbed"
        );
        let (mut b, welcome) = login(server.ws, json!({"op":"auth","uid":"b"})).await;
        let b_start = pos(&welcome["pos"]["uid"]);
        assert_eq!(
            ask(&mut b, json!({"op":"sub","ch":"room"})).await["op"],
            "subbed"
        );
        assert_eq!(delivered(&mut backend, publish("room", "seen")).await, 2);
        let seen = pos(&frame(&mut b).await["pos"]);
        assert_eq!(pos(&frame(&mut a).await["pos"]), seen);
        close_client(&mut b).await;
        wait_offline(&mut backend, "b").await;
        delivered(&mut backend, push("b", "missed")).await;

        // Once the sweeper has expired every message (the TTL, and a
        // second or so of sweeping):
        wait_stat(&mut backend, "history_messages", 0, Duration::from_secs(5)).await;
        let since = json!({"uid": b_start.to_string()});
        let (mut b, welcome) = login(server.ws, json!({"op":"auth","uid":"b","since":since})).await;
        // The missed push expired: a gap.
        assert_eq!(welcome["recovered"], json!({"uid":false}), "{welcome}");
        // The channel missed nothing since `seen`, and is still received by
        // A: its position is kept, so B is told it is recovered.
        assert_eq!(
            ask(
                &mut b,
                json!({"op":"sub","ch":"room","since":seen.to_string()})
            )
            .await,
            json!({"op":"subbed","ch":"room","pos":seen.to_string(),"recovered":true})
        );
        nothing_more(&mut b).await;
        nothing_more(&mut a).await;
    });
}

// ---------------------------------------------------------------------------
// Replay bounds.

#[test]
fn more_missed_than_one_replay_carries_is_a_gap_and_the_client_stays() {
    let server = Server::start(config_with(HistoryLimits {
        replay_messages: 5,
        replay_bytes: 2000,
        ..HistoryLimits::default()
    }));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, welcome) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        let (uid0, all0) = (pos(&welcome["pos"]["uid"]), pos(&welcome["pos"]["all"]));
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;
        for n in 1..=6 {
            delivered(&mut backend, push("u1", n)).await;
        }
        // Six missed, five at most per replay.
        let since = json!({"uid": uid0.to_string()});
        let (mut client, welcome) =
            login(server.ws, json!({"op":"auth","uid":"u1","since":since})).await;
        assert_eq!(welcome["recovered"], json!({"uid":false}), "{welcome}");
        nothing_more(&mut client).await;
        // Still connected and served.
        delivered(&mut backend, push("u1", 7)).await;
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","pos":at(uid0.epoch, 7),"d":7})
        );
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;

        // The bound is over every stream of one auth: three of the uid's
        // fit, then three broadcasts do not (with a v1 client of another uid
        // there to receive them).
        let (_other, _) = login(server.ws, json!({"op":"auth","uid":"u2"})).await;
        for n in 1..=3 {
            delivered(&mut backend, json!({"cmd":"broadcast","data":n})).await;
        }
        let since = json!({"uid": at(uid0.epoch, 4), "all": all0.to_string()});
        let (mut client, welcome) =
            login(server.ws, json!({"op":"auth","uid":"u1","since":since})).await;
        assert_eq!(
            welcome["recovered"],
            json!({"uid":true,"all":false}),
            "{welcome}"
        );
        for n in 5..=7 {
            assert_eq!(
                frame(&mut client).await,
                json!({"op":"msg","pos":at(uid0.epoch, n),"d":n})
            );
        }
        nothing_more(&mut client).await;
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;

        // The byte bound: three messages of 1000 bytes are over 2000.
        let base = 7;
        for _ in 0..3 {
            delivered(&mut backend, push("u1", "z".repeat(1000))).await;
        }
        let since = json!({"uid": at(uid0.epoch, base)});
        let (mut client, welcome) =
            login(server.ws, json!({"op":"auth","uid":"u1","since":since})).await;
        assert_eq!(welcome["recovered"], json!({"uid":false}), "{welcome}");
        nothing_more(&mut client).await;
        let stats = backend.stats().await;
        assert_eq!(stats["dropped"], 0, "{stats}");
        assert_eq!(stats["recoveries_failed"], 3, "{stats}");
    });
}

#[test]
fn more_missed_than_the_queue_has_room_for_is_a_gap_not_a_slow_consumer() {
    let mut config = config_with(HistoryLimits::default());
    config.max_queue_messages = 20;
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, welcome) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        let start = pos(&welcome["pos"]["uid"]);
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;
        for n in 1..=30 {
            delivered(&mut backend, push("u1", n)).await;
        }
        // 30 missed, within the replay bounds but not the queue's 20.
        let since = json!({"uid": start.to_string()});
        let (mut client, welcome) =
            login(server.ws, json!({"op":"auth","uid":"u1","since":since})).await;
        assert_eq!(welcome["recovered"], json!({"uid":false}), "{welcome}");
        nothing_more(&mut client).await;
        delivered(&mut backend, push("u1", 31)).await;
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","pos":at(start.epoch, 31),"d":31})
        );
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;

        // Exactly as many as fit with the welcome: recovered.
        let since = json!({"uid": at(start.epoch, 31 - 19)});
        let (mut client, welcome) =
            login(server.ws, json!({"op":"auth","uid":"u1","since":since})).await;
        assert_eq!(welcome["recovered"], json!({"uid":true}), "{welcome}");
        for n in 13..=31 {
            assert_eq!(frame(&mut client).await["d"], n);
        }
        nothing_more(&mut client).await;
        let stats = backend.stats().await;
        assert_eq!(stats["dropped"], 0, "{stats}");
    });
}

/// Data for a `msg` whose frame takes all but 10 of `bytes`: `empty` is the
/// frame's text with an empty `d`, and the frame has 4 bytes of header.
fn filling(bytes: usize, empty: &str) -> String {
    "x".repeat(bytes - 10 - 4 - empty.len())
}

/// The answer that comes before the replay takes room in the queue too: a
/// replay that fits the queue's bytes only without it is a gap, not a
/// reason to drop the client.
#[test]
fn the_answer_and_the_replay_fit_the_queue_bytes_together() {
    const QUEUE: usize = 4096;
    let mut config = config_with(HistoryLimits::default());
    config.max_queue_bytes = QUEUE;
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;

        // The personal stream, through `auth`.
        let (mut client, welcome) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        let start = pos(&welcome["pos"]["uid"]);
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;
        let first = Pos { offset: 1, ..start };
        let data = filling(QUEUE, &format!(r#"{{"op":"msg","pos":"{first}","d":""}}"#));
        delivered(&mut backend, push("u1", data.as_str())).await;
        let since = json!({"uid": start.to_string()});
        let (mut client, welcome) =
            login(server.ws, json!({"op":"auth","uid":"u1","since":since})).await;
        assert_eq!(welcome["recovered"], json!({"uid":false}), "{welcome}");
        nothing_more(&mut client).await;

        // A channel, through `sub`.
        let subbed = ask(&mut client, json!({"op":"sub","ch":"room"})).await;
        let room = pos(&subbed["pos"]);
        let leave = json!({"op":"unsub","ch":"room"});
        assert_eq!(ask(&mut client, leave.clone()).await["op"], "unsubbed");
        let first = Pos { offset: 1, ..room };
        let empty = format!(r#"{{"op":"msg","ch":"room","pos":"{first}","d":""}}"#);
        delivered(&mut backend, publish("room", filling(QUEUE, &empty))).await;
        let subbed = ask(
            &mut client,
            json!({"op":"sub","ch":"room","since":room.to_string()}),
        )
        .await;
        assert_eq!(subbed["recovered"], false, "{subbed}");
        nothing_more(&mut client).await;

        // What does fit with its answer is replayed.
        assert_eq!(ask(&mut client, leave).await["op"], "unsubbed");
        delivered(&mut backend, publish("room", filling(QUEUE / 2, &empty))).await;
        let subbed = ask(
            &mut client,
            json!({"op":"sub","ch":"room","since":at(room.epoch, 1)}),
        )
        .await;
        assert_eq!(subbed["recovered"], true, "{subbed}");
        assert_eq!(frame(&mut client).await["pos"], at(room.epoch, 2));
        nothing_more(&mut client).await;
        let stats = backend.stats().await;
        assert_eq!(stats["dropped"], 0, "{stats}");
    });
}

// ---------------------------------------------------------------------------
// History off.

#[test]
fn without_history_frames_carry_no_positions() {
    let server = Server::start(config_with(HistoryLimits {
        size_uid: 0,
        size_channel: 0,
        size_broadcast: 0,
        ..HistoryLimits::default()
    }));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, welcome) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        assert!(welcome.get("pos").is_none(), "{welcome}");
        assert_eq!(
            ask(&mut client, json!({"op":"sub","ch":"room"})).await,
            json!({"op":"subbed","ch":"room"})
        );
        let mut raw = login_plain(&server, "u1").await;
        delivered(&mut backend, push("u1", "p")).await;
        delivered(&mut backend, publish("room", "c")).await;
        delivered(&mut backend, json!({"cmd":"broadcast","data":"b"})).await;
        assert_eq!(frame(&mut client).await, json!({"op":"msg","d":"p"}));
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","ch":"room","d":"c"})
        );
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","all":true,"d":"b"})
        );
        assert_eq!(next_text(&mut raw).await, "p");
        assert_eq!(next_text(&mut raw).await, "b");
        // Asked to recover, it cannot.
        let subbed = ask(&mut client, json!({"op":"sub","ch":"room","since":"abc:1"})).await;
        assert_eq!(subbed, json!({"op":"subbed","ch":"room","recovered":false}));
        let stats = backend.stats().await;
        assert_eq!(
            (&stats["history_streams"], &stats["history_messages"]),
            (&json!(0), &json!(0)),
            "{stats}"
        );
    });

    // Off for one kind only: channels; uids and broadcasts keep theirs.
    let server = Server::start(config_with(HistoryLimits {
        size_channel: 0,
        ..HistoryLimits::default()
    }));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, welcome) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        let uid = pos(&welcome["pos"]["uid"]);
        assert_eq!(
            ask(&mut client, json!({"op":"sub","ch":"room"})).await,
            json!({"op":"subbed","ch":"room"})
        );
        let mut raw = login_plain(&server, "u1").await;
        delivered(&mut backend, publish("room", "c")).await;
        delivered(&mut backend, push("u1", "p")).await;
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","ch":"room","d":"c"})
        );
        assert_eq!(
            frame(&mut client).await,
            json!({"op":"msg","pos":at(uid.epoch, 1),"d":"p"})
        );
        // Raw clients get exactly the data, as ever.
        assert_eq!(next_text(&mut raw).await, "p");
    });
}

// ---------------------------------------------------------------------------
// Memory.

/// Checks that `stats` has history within `cap`.
async fn within_cap(backend: &mut Backend, cap: u64, after: &str) {
    let stats = backend.stats().await;
    let bytes = stats["history_bytes"].as_u64().unwrap();
    assert!(bytes <= cap, "{bytes} > {cap} after {after}: {stats}");
}

#[test]
fn history_stays_within_its_memory_under_churn_and_its_messages_expire() {
    const CAP: u64 = 32 * 1024;
    let server = Server::start(config_with(HistoryLimits {
        memory: CAP as usize,
        ttl: Duration::from_secs(1),
        ..HistoryLimits::default()
    }));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        // A receiver meanwhile, which reads nothing (its socket takes it).
        let (mut client, _) = login(server.ws, json!({"op":"auth","uid":"u0"})).await;
        assert_eq!(
            ask(&mut client, json!({"op":"sub","ch":"ch0"})).await["op"],
            "subbed"
        );
        let mut x: u64 = 0x9e37_79b9;
        for i in 0..1500u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let data = "d".repeat(10 + (x % 300) as usize);
            let request = match x % 4 {
                0 => publish(&format!("ch{}", x % 23), data),
                1 => {
                    json!({"cmd":"push","uids":[format!("u{}", x % 41), format!("u{}", x % 7)],"data":data})
                }
                2 => push(&format!("u{}", x % 101), data),
                _ => json!({"cmd":"broadcast","data":data}),
            };
            delivered(&mut backend, request).await;
            if i % 25 == 0 {
                within_cap(&mut backend, CAP, &format!("{i} messages")).await;
            }
            // Now and then, one larger than the whole cap, to a new stream.
            if i % 300 == 299 {
                let big = format!("big{i}");
                delivered(&mut backend, push(&big, "B".repeat(40_000))).await;
                within_cap(&mut backend, CAP, &format!("a push to {big} over the cap")).await;
            }
        }
        let stats = backend.stats().await;
        assert!(stats["history_bytes"].as_u64().unwrap() <= CAP, "{stats}");
        assert!(stats["history_messages"].as_u64().unwrap() > 0, "{stats}");
        assert_eq!(stats["dropped"], 0, "{stats}");

        // A TTL later (and the sweeper's second or so), no message is left.
        wait_stat(&mut backend, "history_messages", 0, Duration::from_secs(5)).await;
        within_cap(&mut backend, CAP, "the TTL").await;
        drop(client);
    });
}

#[test]
fn history_empties_once_nobody_is_left_to_receive_it() {
    let server = Server::start(config_with(HistoryLimits {
        ttl: Duration::from_secs(1),
        ..HistoryLimits::default()
    }));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let (mut client, _) = login(server.ws, json!({"op":"auth","uid":"u1"})).await;
        assert_eq!(
            ask(&mut client, json!({"op":"sub","ch":"room"})).await["op"],
            "subbed"
        );
        delivered(&mut backend, push("u1", "p")).await;
        delivered(&mut backend, publish("room", "c")).await;
        delivered(&mut backend, json!({"cmd":"broadcast","data":"b"})).await;
        for _ in 0..3 {
            frame(&mut client).await;
        }
        let stats = backend.stats().await;
        assert_eq!(
            (&stats["history_streams"], &stats["history_messages"]),
            (&json!(3), &json!(3)),
            "{stats}"
        );
        close_client(&mut client).await;
        wait_offline(&mut backend, "u1").await;

        // Nobody is left to receive any stream: a TTL for the messages,
        // a TTL for the emptied streams, with the sweeper's second or so
        // for each.
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let stats = backend.stats().await;
            if stats["history_messages"] == 0 && stats["history_streams"] == 0 {
                assert_eq!(stats["history_bytes"], 0, "{stats}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "history did not empty within 8 s: {stats}"
            );
            Timer::after(Duration::from_millis(20)).await;
        }
    });
}
