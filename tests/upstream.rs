//! Clients' messages going up to listening backends (`{"cmd":"listen"}`),
//! and a backend's answers coming back down to one connection (`push` with
//! `conn`): how listeners share the events and what happens when one stops
//! reading or leaves, the connect and disconnect events, anonymous
//! connections (`--allow-anonymous`), text and binary round trips byte for
//! byte, the v1 `send`, and every bad `push` to a connection.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{SocketAddr, TcpStream};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use common::*;
use data_encoding::BASE64;
use pushhub::Config;
use pushhub::channel::Pattern;
use serde_json::{Value, json};
use smol::Async;

/// Anonymous connections only: nothing a client sends is a credential.
fn anonymous_config() -> Config {
    let mut config = base_config();
    config.allow_anonymous = true;
    config
}

/// Anonymous connections whose messages go up.
fn upstream_config() -> Config {
    let mut config = anonymous_config();
    config.upstream = true;
    config
}

// ---------------------------------------------------------------------------
// Listeners.

/// A backend that listens: event lines, with the replies to its own
/// requests among them.
struct Listener {
    backend: Backend,
    /// Event lines read while waiting for a reply.
    events: VecDeque<String>,
}

impl Listener {
    /// Connects and listens for `events` (the default, messages, if `None`).
    async fn start(text: SocketAddr, events: Option<Value>) -> Listener {
        let mut backend = Backend::connect(text).await;
        let mut listen = json!({"cmd":"listen"});
        if let Some(events) = events {
            listen["events"] = events;
        }
        let reply = backend.json(listen).await;
        assert_eq!(reply, json!({"ok":true,"listening":true}));
        Listener {
            backend,
            events: VecDeque::new(),
        }
    }

    /// The next event line, exactly as the hub wrote it.
    async fn event_line(&mut self) -> String {
        if let Some(line) = self.events.pop_front() {
            return line;
        }
        let line = self.backend.line().await;
        assert!(
            line.starts_with(r#"{"event":"#),
            "expected an event, got {line:?}"
        );
        line
    }

    async fn event(&mut self) -> Value {
        let line = self.event_line().await;
        parse(&line)
    }

    /// The next event, waiting as long as the whole test may: for an event
    /// that comes only once another listener has filled, which takes as
    /// long as the machine needs to send that much.
    async fn eventually(&mut self) -> Value {
        if let Some(line) = self.events.pop_front() {
            return parse(&line);
        }
        let line = read_line(&self.backend.stream, &mut self.backend.buf)
            .await
            .expect("the text port closed the listener's connection");
        parse(&line)
    }

    /// Sends a request on the listening connection and returns its reply;
    /// the events that come before it are kept for [`Listener::event`].
    async fn request(&mut self, request: Value) -> Value {
        self.backend.send(format!("{request}\n").as_bytes()).await;
        loop {
            let line = self.backend.line().await;
            if line.starts_with(r#"{"event":"#) {
                self.events.push_back(line);
            } else {
                return parse(&line);
            }
        }
    }
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:.200?} is not JSON: {e}"))
}

/// The next event of either listener, with which one (0 or 1) it came from.
async fn next_of(listeners: &mut [Listener; 2]) -> (usize, Value) {
    let [a, b] = listeners;
    for (i, l) in [&mut *a, &mut *b].into_iter().enumerate() {
        if let Some(line) = l.events.pop_front() {
            return (i, parse(&line));
        }
    }
    // Reading a line is cancel-safe: what the losing side read stays in its buffer.
    smol::future::or(async { (0, a.event().await) }, async {
        (1, b.event().await)
    })
    .await
}

/// A message event's `conn`.
fn conn_of(event: &Value) -> String {
    event["conn"]
        .as_str()
        .unwrap_or_else(|| panic!("an event's conn is a string: {event}"))
        .to_string()
}

// ---------------------------------------------------------------------------
// Clients.

/// A client for sending many messages: with Nagle's algorithm on, each
/// message would wait for the hub's delayed acknowledgement of the last.
async fn flooder(ws: SocketAddr) -> Client {
    let client = connect(ws, "/").await;
    client.get_ref().get_ref().set_nodelay(true).unwrap();
    client
}

async fn send_binary(client: &mut Client, bytes: &[u8]) {
    within(
        STEP,
        "sending a binary message",
        client.send(Message::binary(bytes.to_vec())),
    )
    .await
    .unwrap_or_else(|e| panic!("sending {} bytes failed: {e}", bytes.len()));
}

/// The next binary message, skipping pings and pongs.
async fn next_binary(client: &mut Client) -> Vec<u8> {
    loop {
        match next_message(client).await {
            Some(Ok(Message::Binary(bytes))) => return bytes.to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

/// A client that offers `pushhub.v1`.
async fn v1_connect(ws: SocketAddr) -> Client {
    let stream = Async::<TcpStream>::connect(ws).await.unwrap();
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
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "pushhub.v1"
    );
    client
}

/// The next v1 frame, as JSON.
async fn frame(client: &mut Client) -> Value {
    parse(&next_text(client).await)
}

async fn ask(client: &mut Client, request: Value) -> Value {
    send_text(client, &request.to_string()).await;
    frame(client).await
}

/// Sends a v1 ping and expects its pong as the next frame: nothing was
/// queued for the client before it.
async fn nothing_before_pong(client: &mut Client) {
    assert_eq!(
        ask(client, json!({"op":"ping","id":"probe"})).await,
        json!({"op":"pong","id":"probe"})
    );
}

/// A v1 client authenticated as `uid` (plain-uid mode), and its connection id.
async fn v1_login(server: &Server, uid: &str) -> (Client, String) {
    let mut client = v1_connect(server.ws).await;
    let welcome = ask(&mut client, json!({"op":"auth","uid":uid})).await;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    assert_eq!(welcome["uid"], uid, "{welcome}");
    let conn = conn_of(&welcome);
    (client, conn)
}

/// A message of `len` bytes whose first eight say `k`.
fn numbered(k: usize, len: usize) -> String {
    let mut text = format!("{k:08}");
    text.push_str(&"x".repeat(len - 8));
    text
}

fn number_of(event: &Value) -> usize {
    event["d"].as_str().unwrap()[..8].parse().unwrap()
}

// ---------------------------------------------------------------------------
// Sharing.

#[test]
fn listeners_share_the_connections_and_each_one_s_events_stay_in_order() {
    let server = Server::start(upstream_config());
    run(async {
        let mut listeners = [
            Listener::start(server.text, None).await,
            Listener::start(server.text, None).await,
        ];
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(connect(server.ws, "/").await);
        }
        // Round after round, so that the connections' messages interleave.
        const ROUNDS: usize = 20;
        for round in 0..ROUNDS {
            for (i, client) in clients.iter_mut().enumerate() {
                send_text(client, &format!("c{i} r{round}")).await;
            }
        }
        // conn -> (listener, client, rounds in the order they came)
        let mut seen: HashMap<String, (usize, usize, Vec<usize>)> = HashMap::new();
        for _ in 0..6 * ROUNDS {
            let (listener, event) = next_of(&mut listeners).await;
            assert_eq!(event["event"], "message", "{event}");
            assert!(event.get("uid").is_none(), "anonymous: {event}");
            assert!(event.get("binary").is_none(), "{event}");
            let text = event["d"].as_str().unwrap();
            let (client, round) = text.split_once(' ').unwrap();
            let client: usize = client[1..].parse().unwrap();
            let round: usize = round[1..].parse().unwrap();
            let entry = seen
                .entry(conn_of(&event))
                .or_insert((listener, client, Vec::new()));
            assert_eq!(
                (entry.0, entry.1),
                (listener, client),
                "a connection's events all go to one listener, from one client: {event}"
            );
            entry.2.push(round);
        }
        assert_eq!(seen.len(), 6, "one connection id per client");
        let clients_seen: BTreeSet<usize> = seen.values().map(|(_, c, _)| *c).collect();
        assert_eq!(clients_seen, (0..6).collect());
        for (conn, (_, client, rounds)) in &seen {
            assert_eq!(
                rounds,
                &(0..ROUNDS).collect::<Vec<_>>(),
                "client {client} (conn {conn}): every message once, in order"
            );
        }
        let per_listener: BTreeSet<usize> = seen.values().map(|(l, _, _)| *l).collect();
        assert_eq!(per_listener.len(), 2, "both listeners take a share");

        let mut backend = Backend::connect(server.text).await;
        let stats = backend.stats().await;
        assert_eq!(stats["upstream"], 6 * ROUNDS as u64, "{stats}");
        assert_eq!(stats["upstream_dropped"], 0, "{stats}");
        assert_eq!(stats["listeners"], 2, "{stats}");
        assert_eq!(stats["anonymous"], 6, "{stats}");
        assert_eq!(stats["authenticated"], 0, "{stats}");
        let response = http(server.metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        for (name, value) in [
            ("pushhub_upstream_total{result=\"sent\"}", 6 * ROUNDS),
            ("pushhub_upstream_total{result=\"dropped\"}", 0),
            ("pushhub_listeners", 2),
            ("pushhub_anonymous_connections", 6),
        ] {
            assert_eq!(sample(body, name), Some(value as f64), "{name}: {body}");
        }
    });
}

/// A client that sends as fast as it can gets its turn, and so does the
/// listener: each turn of the client's connection hands the listener at
/// most a read budget of events, well within its buffer, so a listener
/// that reads loses none.
#[test]
fn a_flooding_client_leaves_a_reading_listener_its_turn() {
    let mut config = upstream_config();
    config.max_listener_buffer = 512 * 1024;
    let server = Server::start(config);
    run(async {
        let mut listener = Listener::start(server.text, None).await;
        let mut raw = flooder(server.ws).await;
        let mut v1 = v1_connect(server.ws).await;
        v1.get_ref().get_ref().set_nodelay(true).unwrap();
        assert_eq!(frame(&mut v1).await["op"], "welcome");
        let mut backend = Backend::connect(server.text).await;
        const N: usize = 320;
        const SIZE: usize = 8 * 1024;
        for v1_client in [false, true] {
            let flood = async {
                for k in 0..N {
                    let text = numbered(k, SIZE);
                    if v1_client {
                        send_text(&mut v1, &format!(r#"{{"op":"send","d":"{text}"}}"#)).await;
                    } else {
                        send_text(&mut raw, &text).await;
                    }
                    // Sending may not wait at all: let the listener read.
                    if k % 16 == 15 {
                        smol::future::yield_now().await;
                    }
                }
                match v1_client {
                    true => nothing_before_pong(&mut v1).await,
                    false => logged_in(&mut raw).await,
                }
                let stats = backend.stats().await;
                assert_eq!(
                    stats["upstream_dropped"], 0,
                    "v1: {v1_client}: events dropped while the listener read: {stats}"
                );
            };
            let drain = async {
                for k in 0..N {
                    // Read cheaply, to keep up: the number opens `d`.
                    let line = listener.event_line().await;
                    let at = line.find(r#""d":""#).unwrap() + 5;
                    assert_eq!(line[at..at + 8].parse::<usize>().unwrap(), k);
                }
            };
            smol::future::zip(flood, drain).await;
        }
        let stats = backend.stats().await;
        assert_eq!(stats["upstream"], 2 * N as u64, "{stats}");
    });
}

/// Each client says hello; returns which listener each one's events go to,
/// and each one's connection id.
async fn assignments(
    clients: &mut [Client],
    listeners: &mut [Listener; 2],
) -> (Vec<usize>, Vec<String>) {
    for (i, client) in clients.iter_mut().enumerate() {
        send_text(client, &format!("hello {i}")).await;
    }
    let mut found = vec![None; clients.len()];
    for _ in 0..clients.len() {
        let (listener, event) = next_of(listeners).await;
        let i: usize = event["d"].as_str().unwrap()[6..].parse().unwrap();
        assert!(found[i].is_none(), "hello {i} came twice");
        found[i] = Some((listener, conn_of(&event)));
    }
    found.into_iter().map(Option::unwrap).unzip()
}

#[test]
fn a_full_listener_passes_events_on_and_catches_up_when_it_reads_again() {
    let mut config = upstream_config();
    // Room for a few turns of the flooding client's connection (a read
    // budget of 32 messages each), so that the listener that reads never
    // fills.
    config.max_listener_buffer = 512 * 1024;
    let server = Server::start(config);
    run(async {
        let mut listeners = [
            Listener::start(server.text, None).await,
            Listener::start(server.text, None).await,
        ];
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(flooder(server.ws).await);
        }
        let (assigned, conns) = assignments(&mut clients, &mut listeners).await;
        // Listener 0 stops reading.
        let a = assigned
            .iter()
            .position(|&l| l == 0)
            .expect("a client on listener 0");
        let b = assigned
            .iter()
            .position(|&l| l == 1)
            .expect("a client on listener 1");
        let (conn_a, conn_b) = (conns[a].clone(), conns[b].clone());
        let mut clients: Vec<Option<Client>> = clients.into_iter().map(Some).collect();
        let mut client_a = clients[a].take().unwrap();
        let mut client_b = clients[b].take().unwrap();

        // Client a floods until its messages reach listener 1: listener 0
        // is full. Listener 1 reads all along.
        const SIZE: usize = 8 * 1024;
        const MAX_SENT: usize = 64 << 20;
        let overflowed = Cell::new(false);
        let [stuck, live] = &mut listeners;
        let flood = async {
            let mut k = 0;
            while !overflowed.get() {
                for _ in 0..16 {
                    send_text(&mut client_a, &numbered(k, SIZE)).await;
                    k += 1;
                }
                if k * SIZE >= MAX_SENT {
                    let mut b = Backend::connect(server.text).await;
                    panic!(
                        "listener 0 took {MAX_SENT} bytes without filling {}",
                        b.stats().await
                    );
                }
                // Sending may never wait: let listener 1 read.
                smol::future::yield_now().await;
            }
            send_text(&mut client_a, "end a").await;
            send_text(&mut client_b, "end b").await;
            k
        };
        let drain = async {
            let mut got = Vec::new();
            let mut ends = 0;
            while ends < 2 {
                let event = live.eventually().await;
                if conn_of(&event) == conn_a {
                    overflowed.set(true);
                }
                if event["d"].as_str().unwrap().starts_with("end") {
                    ends += 1;
                }
                got.push(event);
            }
            got
        };
        let (sent, on_live) = smol::future::zip(flood, drain).await;

        // Nothing was dropped, and the hub kept serving meanwhile.
        let mut backend = Backend::connect(server.text).await;
        let stats = backend.stats().await;
        assert_eq!(stats["upstream_dropped"], 0, "{stats}");
        let upstream = stats["upstream"].as_u64().unwrap() as usize;
        assert_eq!(upstream, 4 + sent + 2, "{stats}");
        let reply = backend
            .json(json!({"cmd":"push","conn":conn_b,"data":"still served"}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":1}));
        assert_eq!(next_text(&mut client_b).await, "still served");
        // (Two connections' events keep no order between them.)
        let ends: BTreeSet<(String, &str)> = on_live
            .iter()
            .filter(|e| e["d"].as_str().unwrap().starts_with("end"))
            .map(|e| (conn_of(e), e["d"].as_str().unwrap()))
            .collect();
        assert_eq!(
            ends,
            BTreeSet::from([(conn_a.clone(), "end a"), (conn_b.clone(), "end b")]),
            "a full listener's connections go on to the next"
        );

        // Listener 0 reads again: it has every event it accepted, and
        // between the two listeners every message came once.
        let mut on_stuck = Vec::new();
        while on_live.len() + on_stuck.len() < upstream - 4 {
            on_stuck.push(stuck.event().await);
        }
        let mut numbers = Vec::new();
        for events in [&on_stuck, &on_live] {
            let mine: Vec<usize> = events
                .iter()
                .filter(|e| conn_of(e) == conn_a && !e["d"].as_str().unwrap().starts_with("end"))
                .map(number_of)
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "one connection's events keep their order on each listener"
            );
            numbers.extend(mine);
        }
        assert!(on_stuck.iter().all(|e| conn_of(e) == conn_a));
        numbers.sort_unstable();
        assert_eq!(numbers, (0..sent).collect::<Vec<_>>());
        assert!(
            !on_stuck.is_empty(),
            "listener 0 took events before it filled"
        );

        // Once drained, listener 0 takes its connections' events again.
        send_text(&mut client_a, "back").await;
        let event = stuck.event().await;
        assert_eq!((conn_of(&event), &event["d"]), (conn_a, &json!("back")));
    });
}

#[test]
fn a_listener_that_stops_reading_loses_events_not_memory() {
    let mut hub = Binary::start(
        &[
            "--ws",
            "127.0.0.1:0",
            "--text",
            "127.0.0.1:0",
            "--allow-anonymous",
            "--upstream",
            "--max-listener-buffer",
            "256KiB",
        ],
        &[],
    );
    let pid = hub.child.id();
    let (ws, text) = (hub.ws, hub.text);
    run(async {
        let mut stuck = Listener::start(text, None).await;
        let mut backend = Backend::connect(text).await;
        let mut flooder = flooder(ws).await;
        let mut v1 = v1_connect(ws).await;
        assert_eq!(frame(&mut v1).await["op"], "welcome");

        // Flood until events are dropped and no more are taken: the
        // listener's socket and its buffer in the hub are full.
        const SIZE: usize = 32 * 1024;
        let mut sent = 0;
        let mut taken = None;
        loop {
            for _ in 0..32 {
                send_text(&mut flooder, &numbered(sent, SIZE)).await;
                sent += 1;
            }
            logged_in(&mut flooder).await;
            let stats = backend.stats().await;
            let upstream = stats["upstream"].as_u64().unwrap();
            if stats["upstream_dropped"] != 0 && taken == Some(upstream) {
                break;
            }
            taken = Some(upstream);
            assert!(sent * SIZE < 64 << 20, "still taking events after {sent}");
        }
        // A v1 client is told.
        assert_eq!(
            ask(&mut v1, json!({"op":"send","d":"hi","id":1})).await,
            json!({"op":"error","code":503,"reason":"every listening backend is full: the message was dropped","id":1})
        );
        let rss_full = proc_status(pid, "VmRSS:");

        // Another 16 MiB: all dropped and counted, none kept.
        let before = backend.stats().await;
        const MORE: usize = 16 * 32;
        for k in 0..MORE {
            send_text(&mut flooder, &numbered(sent + k, SIZE)).await;
        }
        logged_in(&mut flooder).await;
        let after = backend.stats().await;
        assert_eq!(after["upstream"], before["upstream"], "{after}");
        assert_eq!(
            after["upstream_dropped"].as_u64().unwrap(),
            before["upstream_dropped"].as_u64().unwrap() + MORE as u64,
            "{after}"
        );
        let rss = proc_status(pid, "VmRSS:");
        assert!(
            rss < rss_full + 4 * 1024,
            "RSS grew from {rss_full} kB to {rss} kB while 16 MiB of events were dropped"
        );

        // The hub is still responsive, and every client served.
        assert_eq!(backend.broadcast("to all").await, 2);
        assert_eq!(next_text(&mut flooder).await, "to all");
        let msg = frame(&mut v1).await;
        assert_eq!(
            (&msg["op"], &msg["all"], &msg["d"]),
            (&json!("msg"), &json!(true), &json!("to all"))
        );

        // Reading again, the listener gets what was accepted (in order),
        // then new events; what was dropped is gone.
        let accepted = after["upstream"].as_u64().unwrap() as usize;
        let mut last = None;
        for _ in 0..accepted {
            let k = number_of(&stuck.event().await);
            assert!(last < Some(k), "event {k} after {last:?}");
            last = Some(k);
        }
        send_text(&mut flooder, "after").await;
        assert_eq!(stuck.event().await["d"], "after");
        assert_eq!(
            ask(&mut v1, json!({"op":"send","d":"again","id":2})).await,
            json!({"op":"sent","id":2})
        );
        assert_eq!(stuck.event().await["d"], "again");
    });
    hub.signal(rustix::process::Signal::TERM);
    assert!(hub.wait(STEP).success());
}

#[test]
fn a_listener_that_leaves_gets_no_more_events() {
    let server = Server::start(upstream_config());
    run(async {
        let mut listeners = [
            Listener::start(server.text, None).await,
            Listener::start(server.text, None).await,
        ];
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect(server.ws, "/").await);
        }
        let (assigned, conns) = assignments(&mut clients, &mut listeners).await;
        assert!(
            assigned.contains(&0) && assigned.contains(&1),
            "{assigned:?}"
        );
        let [first, mut second] = listeners;
        drop(first);
        let mut backend = Backend::connect(server.text).await;
        let deadline = Deadline::new(STEP, "the hub forgets the listener that left");
        while backend.stats().await["listeners"] != 1 {
            deadline.tick().await;
        }
        // Every connection's events now go to the one left, in order.
        for round in 0..3 {
            for (i, client) in clients.iter_mut().enumerate() {
                send_text(client, &format!("again {i} {round}")).await;
            }
        }
        let mut rounds: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for _ in 0..12 {
            let event = second.event().await;
            rounds
                .entry(conn_of(&event))
                .or_default()
                .push(event["d"].as_str().unwrap().to_string());
        }
        for (i, conn) in conns.iter().enumerate() {
            let expected: Vec<String> = (0..3).map(|r| format!("again {i} {r}")).collect();
            assert_eq!(rounds[conn], expected, "conn {conn}");
        }

        // With no listener left, a message goes nowhere, and a v1 client is told.
        drop(second);
        let deadline = Deadline::new(STEP, "the hub forgets the last listener");
        while backend.stats().await["listeners"] != 0 {
            deadline.tick().await;
        }
        send_text(&mut clients[0], "to nobody").await;
        logged_in(&mut clients[0]).await;
        let mut v1 = v1_connect(server.ws).await;
        assert_eq!(frame(&mut v1).await["op"], "welcome");
        assert_eq!(
            ask(&mut v1, json!({"op":"send","d":1,"id":"x"})).await,
            json!({"op":"error","code":503,"reason":"no backend listens for messages","id":"x"})
        );
        let stats = backend.stats().await;
        assert_eq!(stats["upstream"], 4 + 12, "{stats}");
        assert_eq!(stats["upstream_dropped"], 2, "{stats}");
        assert_eq!(stats["v1_errors"]["no_listener"], 1, "{stats}");

        // A new listener gets what is sent from then on.
        let mut third = Listener::start(server.text, None).await;
        send_text(&mut clients[3], "hello again").await;
        let event = third.event().await;
        assert_eq!(
            event,
            json!({"event":"message","conn":conns[3],"d":"hello again"})
        );
    });
}

#[test]
fn a_stuck_listener_that_closes_is_forgotten_and_the_other_takes_over() {
    let mut config = upstream_config();
    config.max_listener_buffer = 512 * 1024;
    let server = Server::start(config);
    run(async {
        let mut listeners = [
            Listener::start(server.text, None).await,
            Listener::start(server.text, None).await,
        ];
        let mut clients = Vec::new();
        for _ in 0..2 {
            clients.push(flooder(server.ws).await);
        }
        let (assigned, conns) = assignments(&mut clients, &mut listeners).await;
        let [first, second] = listeners;
        let (stuck, mut live) = match assigned[0] {
            0 => (first, second),
            _ => (second, first),
        };
        // Client 0's listener stops reading; client 0 floods until its
        // messages come to the other one, so the stuck one is full (and the
        // hub waits to write to it).
        let overflowed = Cell::new(false);
        let flood = async {
            let mut k = 0;
            while !overflowed.get() {
                for _ in 0..16 {
                    send_text(&mut clients[0], &numbered(k, 8 * 1024)).await;
                    k += 1;
                }
                assert!(k < 8192, "the stuck listener never filled");
                smol::future::yield_now().await;
            }
        };
        let drain = async {
            while conn_of(&live.eventually().await) != conns[0] {}
            overflowed.set(true);
        };
        smol::future::zip(flood, drain).await;

        // It goes away without reading what it was sent.
        reset_listener(stuck);
        let mut backend = Backend::connect(server.text).await;
        let deadline = Deadline::new(STEP, "the hub forgets the stuck listener");
        while backend.stats().await["listeners"] != 1 {
            deadline.tick().await;
        }
        // What it had not taken is gone with it; what comes next goes to
        // the other, from both clients.
        send_text(&mut clients[0], "after 0").await;
        send_text(&mut clients[1], "after 1").await;
        let mut after = BTreeSet::new();
        while after.len() < 2 {
            let event = live.event().await;
            let d = event["d"].as_str().unwrap();
            if d.starts_with("after") {
                after.insert((conn_of(&event), d.to_string()));
            }
        }
        assert_eq!(
            after,
            BTreeSet::from([
                (conns[0].clone(), "after 0".to_string()),
                (conns[1].clone(), "after 1".to_string())
            ])
        );
        let stats = backend.stats().await;
        assert_eq!(stats["upstream_dropped"], 0, "{stats}");
    });
}

/// Closes a listener's socket with unread data in it: the hub sees a reset.
fn reset_listener(listener: Listener) {
    let stream = listener.backend.stream;
    rustix::net::sockopt::set_socket_linger(stream.get_ref(), Some(std::time::Duration::ZERO))
        .unwrap();
    drop(stream);
}

#[test]
fn an_event_larger_than_the_listener_buffer_still_goes_up() {
    let mut config = upstream_config();
    config.max_listener_buffer = 1;
    let server = Server::start(config);
    run(async {
        let mut listener = Listener::start(server.text, None).await;
        let mut client = connect(server.ws, "/").await;
        // An empty buffer takes any one event; each is read before the next.
        for k in 0..3 {
            let text = numbered(k, 40 * 1024);
            send_text(&mut client, &text).await;
            assert!(listener.event().await["d"] == text.as_str(), "message {k}");
        }
        let mut backend = Backend::connect(server.text).await;
        let stats = backend.stats().await;
        assert_eq!(stats["upstream"], 3, "{stats}");
        assert_eq!(stats["upstream_dropped"], 0, "{stats}");
    });
}

// ---------------------------------------------------------------------------
// Connects and disconnects.

#[test]
fn connect_and_disconnect_events_frame_each_connection_s_messages() {
    let mut config = plain_config();
    config.upstream = true;
    let server = Server::start(config);
    run(async {
        let mut listener = Listener::start(
            server.text,
            Some(json!(["message", "connect", "disconnect"])),
        )
        .await;
        let mut backend = Backend::connect(server.text).await;

        // A uid that JSON must escape.
        let alice_uid = r#"al"ice\ é"#;
        let mut alice = login_plain(&server, alice_uid).await;
        let connected = listener.event().await;
        let alice_conn = conn_of(&connected);
        assert_eq!(
            connected,
            json!({"event":"connect","uid":alice_uid,"conn":alice_conn})
        );
        // Its login was not a message; what it sends next is.
        send_text(&mut alice, "hi").await;
        assert_eq!(
            listener.event().await,
            json!({"event":"message","uid":alice_uid,"conn":alice_conn,"d":"hi"})
        );
        send_binary(&mut alice, &[1, 2, 3]).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"message","uid":alice_uid,"conn":alice_conn,"d":"AQID","binary":true})
        );

        let (mut bob, bob_conn) = v1_login(&server, "bob").await;
        assert_ne!(bob_conn, alice_conn);
        assert_eq!(
            listener.event().await,
            json!({"event":"connect","uid":"bob","conn":bob_conn})
        );

        // A connection that never authenticates makes no event.
        let mut silent = connect(server.ws, "/").await;
        close_client(&mut silent).await;

        assert_eq!(
            backend.json(json!({"cmd":"kick","uid":alice_uid})).await["kicked"],
            1
        );
        assert_eq!(
            listener.event().await,
            json!({"event":"disconnect","uid":alice_uid,"conn":alice_conn})
        );
        // Kicked, it is gone for a push to its connection too.
        let reply = backend
            .json(json!({"cmd":"push","conn":alice_conn,"data":"late"}))
            .await;
        assert_eq!(reply["delivered"], 0, "{reply}");
        assert_eq!(expect_close(&mut alice).await.0, 4000);
        expect_end(&mut alice).await;
        close_client(&mut bob).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"disconnect","uid":"bob","conn":bob_conn})
        );

        // Presence only: messages go to no one, and a v1 client is told.
        let reply = listener
            .request(json!({"cmd":"listen","events":["connect","disconnect"],"id":2}))
            .await;
        assert_eq!(reply, json!({"ok":true,"id":2,"listening":true}));
        let (mut carol, carol_conn) = v1_login(&server, "carol").await;
        assert_eq!(
            listener.event().await,
            json!({"event":"connect","uid":"carol","conn":carol_conn})
        );
        assert_eq!(
            ask(&mut carol, json!({"op":"send","d":1,"id":1})).await,
            json!({"op":"error","code":503,"reason":"no backend listens for messages","id":1})
        );
        // Messages only, again.
        let reply = listener
            .request(json!({"cmd":"listen","events":["message"]}))
            .await;
        assert_eq!(reply, json!({"ok":true,"listening":true}));
        assert_eq!(
            ask(&mut carol, json!({"op":"send","d":2,"id":2})).await,
            json!({"op":"sent","id":2})
        );
        assert_eq!(
            listener.event().await,
            json!({"event":"message","uid":"carol","conn":carol_conn,"d":2})
        );
        // Neither carol's disconnect nor dave's connect is asked for now:
        // dave's message is the next event.
        close_client(&mut carol).await;
        wait_connections(&mut backend, "carol", 0).await;
        let (mut dave, dave_conn) = v1_login(&server, "dave").await;
        send_text(&mut dave, r#"{"op":"send","d":3}"#).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"message","uid":"dave","conn":dave_conn,"d":3})
        );
        let stats = backend.stats().await;
        assert_eq!(stats["listeners"], 1, "{stats}");
        assert_eq!(stats["upstream"], 4, "{stats}");

        // What `events` may say.
        for events in [
            json!(["bogus"]),
            json!([]),
            json!("message"),
            json!([1]),
            json!(null),
            json!(["message", "Connect"]),
        ] {
            let reply = backend
                .json(json!({"cmd":"listen","events":events,"id":"e"}))
                .await;
            assert_eq!(reply["ok"], false, "{events}: {reply}");
            assert_eq!(reply["id"], "e", "{events}: {reply}");
            assert_eq!(
                reply["error"],
                r#"`events` must be an array of "message", "connect" and "disconnect""#,
                "{events}"
            );
        }
        // A refused listen leaves the connection a plain backend.
        assert_eq!(backend.stats().await["listeners"], 1);
    });
}

// ---------------------------------------------------------------------------
// Anonymous connections.

#[test]
fn anonymous_connections_get_broadcasts_and_public_channels_but_no_pushes() {
    let mut config = anonymous_config();
    config.public_channels = vec![
        Pattern::parse("news").unwrap(),
        Pattern::parse("ticker:*").unwrap(),
    ];
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut raw = connect(server.ws, "/").await;
        // Welcomed at once, with a connection id and no uid.
        let mut v1 = v1_connect(server.ws).await;
        let welcome = frame(&mut v1).await;
        let conn = conn_of(&welcome);
        assert!(conn.parse::<u64>().is_ok(), "{welcome}");
        let all = welcome["pos"]["all"].clone();
        assert!(all.is_string(), "{welcome}");
        assert_eq!(
            welcome,
            json!({"op":"welcome","conn":conn,"subs":[],"pos":{"all":all}})
        );
        let stats = backend.stats().await;
        assert_eq!(stats["anonymous"], 2, "{stats}");
        assert_eq!(stats["authenticated"], 0, "{stats}");
        assert_eq!(stats["uids"], 0, "{stats}");

        // Nothing they send is a credential.
        send_text(&mut raw, "alice").await;
        logged_in(&mut raw).await;
        assert_eq!(
            ask(&mut v1, json!({"op":"auth","uid":"bob","id":1})).await,
            json!({"op":"error","code":409,"reason":"this connection is already authenticated","id":1})
        );
        for uid in ["alice", "bob"] {
            assert_eq!(backend.connections(uid).await, 0);
            assert_eq!(backend.push(uid, "not for you").await, 0);
        }
        let reply = backend
            .json(json!({"cmd":"push","uids":["alice","bob",""],"data":1}))
            .await;
        assert_eq!(reply["delivered"], 0, "{reply}");
        // A binary message from a raw client is taken and ignored too.
        send_binary(&mut raw, &[0xff, 0]).await;
        logged_in(&mut raw).await;

        // Broadcasts reach both.
        assert_eq!(backend.broadcast("to all").await, 2);
        assert_eq!(next_text(&mut raw).await, "to all");
        let msg = frame(&mut v1).await;
        assert_eq!(
            (&msg["op"], &msg["all"], &msg["d"]),
            (&json!("msg"), &json!(true), &json!("to all")),
            "{msg}"
        );

        // Public channels only: no user channel, no other.
        for ch in ["news", "ticker:EURUSD"] {
            let subbed = ask(&mut v1, json!({"op":"sub","ch":ch})).await;
            assert_eq!(
                (&subbed["op"], &subbed["ch"]),
                (&json!("subbed"), &json!(ch))
            );
        }
        for ch in ["inbox#alice", "inbox#", "#", "private", "ticker"] {
            assert_eq!(
                ask(&mut v1, json!({"op":"sub","ch":ch})).await,
                json!({"op":"error","code":403,"reason":"no grant allows this channel","ch":ch}),
                "{ch}"
            );
        }
        let reply = backend
            .json(json!({"cmd":"publish","ch":"news","data":{"t":1}}))
            .await;
        assert_eq!(reply["delivered"], 1, "{reply}");
        let msg = frame(&mut v1).await;
        assert_eq!((&msg["ch"], &msg["d"]), (&json!("news"), &json!({"t":1})));
        // Publishing needs a grant an anonymous client has not.
        assert_eq!(
            ask(&mut v1, json!({"op":"pub","ch":"news","d":1})).await["code"],
            403
        );
        // A member without a uid.
        let reply = backend.json(json!({"cmd":"members","ch":"news"})).await;
        assert_eq!(reply["connections"], 1, "{reply}");
        assert_eq!(reply["uids"], json!([]), "{reply}");

        // Without --upstream, the raw client's messages went nowhere.
        let stats = backend.stats().await;
        assert_eq!(stats["upstream"], 0, "{stats}");
        assert_eq!(stats["upstream_dropped"], 0, "{stats}");
        assert_eq!(stats["anonymous"], 2, "{stats}");
        close_client(&mut raw).await;
        let deadline = Deadline::new(STEP, "the raw client leaves");
        while backend.stats().await["anonymous"] != 1 {
            deadline.tick().await;
        }
    });
}

#[test]
fn anonymous_only_a_raw_client_s_first_message_goes_up() {
    let server = Server::start(upstream_config());
    run(async {
        let mut listener = Listener::start(
            server.text,
            Some(json!(["message", "connect", "disconnect"])),
        )
        .await;
        let mut backend = Backend::connect(server.text).await;
        let mut raw = connect(server.ws, "/").await;
        let connected = listener.event().await;
        let conn = conn_of(&connected);
        assert_eq!(connected, json!({"event":"connect","conn":conn}));
        send_text(&mut raw, "alice").await;
        send_binary(&mut raw, b"bob").await;
        assert_eq!(
            listener.event().await,
            json!({"event":"message","conn":conn,"d":"alice"})
        );
        assert_eq!(
            listener.event().await,
            json!({"event":"message","conn":conn,"d":BASE64.encode(b"bob"),"binary":true})
        );
        assert_eq!(backend.connections("alice").await, 0);
        close_client(&mut raw).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"disconnect","conn":conn})
        );
    });
}

#[test]
fn mixed_mode_anonymous_until_a_login() {
    let mut config = upstream_config();
    config.auth.allow_plain_uid = true;
    let server = Server::start(config);
    run(async {
        let mut listener = Listener::start(
            server.text,
            Some(json!(["message", "connect", "disconnect"])),
        )
        .await;
        let mut backend = Backend::connect(server.text).await;

        // A raw client is live at once, and anonymous until it sends a uid.
        let mut raw = connect(server.ws, "/").await;
        let connected = listener.event().await;
        let conn = conn_of(&connected);
        assert_eq!(connected, json!({"event":"connect","conn":conn}));
        assert_eq!(backend.broadcast("before").await, 1);
        assert_eq!(next_text(&mut raw).await, "before");
        assert_eq!(backend.push("alice", "not yet").await, 0);
        let stats = backend.stats().await;
        assert_eq!(
            (&stats["anonymous"], &stats["authenticated"]),
            (&json!(1), &json!(0))
        );

        // Its first message is its uid, as in plain-uid mode: the anonymous
        // connection ends and one with the uid begins, for the listener.
        send_text(&mut raw, "alice").await;
        logged_in(&mut raw).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"disconnect","conn":conn})
        );
        assert_eq!(
            listener.event().await,
            json!({"event":"connect","uid":"alice","conn":conn})
        );
        assert_eq!(backend.connections("alice").await, 1);
        assert_eq!(backend.push("alice", "now").await, 1);
        assert_eq!(next_text(&mut raw).await, "now");
        let stats = backend.stats().await;
        assert_eq!(
            (&stats["anonymous"], &stats["authenticated"]),
            (&json!(0), &json!(1))
        );
        send_text(&mut raw, "hello").await;
        assert_eq!(
            listener.event().await,
            json!({"event":"message","uid":"alice","conn":conn,"d":"hello"})
        );

        // A v1 client is live without a welcome, may send up anonymously,
        // then authenticate.
        let mut v1 = v1_connect(server.ws).await;
        let connected = listener.event().await;
        let v1_conn = conn_of(&connected);
        assert_eq!(connected, json!({"event":"connect","conn":v1_conn}));
        nothing_before_pong(&mut v1).await;
        assert_eq!(
            ask(&mut v1, json!({"op":"send","d":"anon","id":1})).await,
            json!({"op":"sent","id":1})
        );
        assert_eq!(
            listener.event().await,
            json!({"event":"message","conn":v1_conn,"d":"anon"})
        );
        let welcome = ask(&mut v1, json!({"op":"auth","uid":"bob"})).await;
        assert_eq!(
            (&welcome["op"], &welcome["uid"], &welcome["conn"]),
            (&json!("welcome"), &json!("bob"), &json!(v1_conn))
        );
        assert_eq!(
            listener.event().await,
            json!({"event":"disconnect","conn":v1_conn})
        );
        assert_eq!(
            listener.event().await,
            json!({"event":"connect","uid":"bob","conn":v1_conn})
        );
        send_text(&mut v1, r#"{"op":"send","d":"named"}"#).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"message","uid":"bob","conn":v1_conn,"d":"named"})
        );

        // A raw client's first message must still be a uid.
        let mut bad = connect(server.ws, "/").await;
        let connected = listener.event().await;
        send_binary(&mut bad, b"\x00").await;
        let (code, _) = expect_close(&mut bad).await;
        assert_eq!(code, 4001);
        expect_end(&mut bad).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"disconnect","conn":conn_of(&connected)})
        );
    });
}

#[test]
fn mixed_mode_with_tokens_a_token_makes_an_anonymous_connection_a_uid() {
    let mut config = upstream_config();
    config.auth.secret = Some(secret());
    let server = Server::start(config);
    run(async {
        let mut listener = Listener::start(
            server.text,
            Some(json!(["message", "connect", "disconnect"])),
        )
        .await;
        let mut backend = Backend::connect(server.text).await;
        let mut raw = connect(server.ws, "/").await;
        let conn = conn_of(&listener.event().await);
        send_text(&mut raw, &token("t1")).await;
        // The anonymous connection ends, and one with the uid begins.
        assert_eq!(
            listener.event().await,
            json!({"event":"disconnect","conn":conn})
        );
        assert_eq!(
            listener.event().await,
            json!({"event":"connect","uid":"t1","conn":conn})
        );
        assert_eq!(backend.push("t1", "yours").await, 1);
        assert_eq!(next_text(&mut raw).await, "yours");

        let mut v1 = v1_connect(server.ws).await;
        let v1_conn = conn_of(&listener.event().await);
        let welcome = ask(&mut v1, json!({"op":"auth","token":token("t2")})).await;
        assert_eq!(
            (&welcome["uid"], &welcome["conn"]),
            (&json!("t2"), &json!(v1_conn))
        );
        assert_eq!(
            listener.event().await,
            json!({"event":"disconnect","conn":v1_conn})
        );
        assert_eq!(
            listener.event().await,
            json!({"event":"connect","uid":"t2","conn":v1_conn})
        );
        // A plain uid is still no credential here.
        let mut bad = connect(server.ws, "/").await;
        let bad_conn = conn_of(&listener.event().await);
        send_text(&mut bad, "t3").await;
        assert_eq!(expect_close(&mut bad).await.0, 4001);
        expect_end(&mut bad).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"disconnect","conn":bad_conn})
        );
        let stats = backend.stats().await;
        assert_eq!(
            (&stats["anonymous"], &stats["authenticated"]),
            (&json!(0), &json!(2)),
            "{stats}"
        );
    });
}

// ---------------------------------------------------------------------------
// Round trips.

/// Answers a message event through the listener's own connection: its `d`
/// pushed back to its connection as it came (text, or base64 bytes).
async fn echo(listener: &mut Listener, event: &Value) -> Value {
    let mut push = json!({"cmd":"push","conn":event["conn"],"data":event["d"]});
    if event.get("binary").is_some() {
        push["binary"] = event["binary"].clone();
    }
    listener.request(push).await
}

#[test]
fn binary_messages_go_up_as_base64_and_come_back_as_the_same_bytes() {
    const MAX: usize = 256 * 1024;
    let mut config = upstream_config();
    config.max_message_size = MAX;
    config.max_line_length = 1 << 20;
    let server = Server::start(config);
    run(async {
        let mut listener = Listener::start(server.text, None).await;
        let mut client = connect(server.ws, "/").await;
        let large: Vec<u8> = (0..MAX).map(|i| (i * 31 % 251) as u8).collect();
        let payloads: Vec<Vec<u8>> = vec![
            vec![0x00, 0xff, 0x01, 0x80, 0xfe, 0xc3],
            b"\xed\xa0\x80 not UTF-8".to_vec(),
            Vec::new(),
            b"plain ASCII, sent as binary".to_vec(),
            vec![0; 1],
            large,
        ];
        for bytes in &payloads {
            send_binary(&mut client, bytes).await;
            let event = listener.event().await;
            assert_eq!(event["event"], "message");
            assert_eq!(event["binary"], true);
            let d = event["d"].as_str().unwrap();
            assert_eq!(d, BASE64.encode(bytes));
            assert_eq!(
                echo(&mut listener, &event).await,
                json!({"ok":true,"delivered":1})
            );
            assert!(
                next_binary(&mut client).await == *bytes,
                "{} bytes",
                bytes.len()
            );
        }
        // One byte over the limit closes the client, and nothing goes up.
        send_binary(&mut client, &vec![7; MAX + 1]).await;
        assert_eq!(expect_close(&mut client).await.0, 1009);
        let mut other = connect(server.ws, "/").await;
        send_binary(&mut other, b"next").await;
        assert_eq!(listener.event().await["d"], BASE64.encode(b"next"));
    });
}

#[test]
fn text_messages_go_up_and_come_back_exactly() {
    const MAX: usize = 256 * 1024;
    let mut config = upstream_config();
    config.max_message_size = MAX;
    config.max_line_length = 2 << 20;
    let server = Server::start(config);
    run(async {
        let mut listener = Listener::start(server.text, None).await;
        let mut client = connect(server.ws, "/").await;
        // 3-byte characters up to the limit.
        let large = "€".repeat(MAX / 3);
        let texts = [
            "plain",
            "",
            " ",
            "say \"hi\" and \\n isn't a newline",
            "line one\nline two\r\nline three\n",
            "tab\there, nul \u{0} here, bell \u{7}",
            "café, naïve, 日本語, עברית, 🎉👩‍👩‍👧",
            "\u{2028}\u{2029}\u{feff}\u{fffd}",
            r#"{"uid":"u1","looks":"like JSON"}"#,
            "[1, 2.50]",
            "\"quoted\"",
            "42",
            "null",
            large.as_str(),
        ];
        for text in texts {
            send_text(&mut client, text).await;
            let line = listener.event_line().await;
            let event = parse(&line);
            assert_eq!(event["d"], json!(text), "{line:.200}");
            assert!(event.get("binary").is_none(), "{line:.200}");
            assert_eq!(
                echo(&mut listener, &event).await,
                json!({"ok":true,"delivered":1})
            );
            assert!(next_text(&mut client).await == text, "{text:.50}");
        }
    });
}

#[test]
fn v1_send_goes_up_as_written_and_is_answered_only_with_an_id() {
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        // Before auth, a v1 client may not send.
        let mut early = v1_connect(server.ws).await;
        assert_eq!(
            ask(&mut early, json!({"op":"send","d":1,"id":0})).await,
            json!({"op":"error","code":401,"reason":"authenticate first: send an auth op","id":0})
        );
        let (mut client, conn) = v1_login(&server, "u").await;
        // No listener: an error frame, with or without an id.
        assert_eq!(
            ask(&mut client, json!({"op":"send","d":1,"id":1})).await,
            json!({"op":"error","code":503,"reason":"no backend listens for messages","id":1})
        );
        assert_eq!(
            ask(&mut client, json!({"op":"send","d":1})).await,
            json!({"op":"error","code":503,"reason":"no backend listens for messages"})
        );

        let mut listener = Listener::start(server.text, None).await;
        let sent = r#"{"op":"send","d":{"x": [1, "é", 2.50, "\"q\""]},"id":"a"}"#;
        send_text(&mut client, sent).await;
        assert_eq!(frame(&mut client).await, json!({"op":"sent","id":"a"}));
        assert_eq!(
            listener.event_line().await,
            format!(
                r#"{{"event":"message","uid":"u","conn":"{conn}","d":{{"x": [1, "é", 2.50, "\"q\""]}}}}"#
            ),
            "d exactly as the client wrote it"
        );
        // JSON may have line breaks between its tokens; an event is one
        // line all the same, with each of them a space.
        send_text(
            &mut client,
            "{\"op\":\"send\",\"d\":{\"a\":\n[1,\r\n2],\t\"b\\n\":\"\\n\"\n}}",
        )
        .await;
        let line = listener.event_line().await;
        assert_eq!(
            line,
            format!(
                "{{\"event\":\"message\",\"uid\":\"u\",\"conn\":\"{conn}\",\
                 \"d\":{{\"a\": [1,  2],\t\"b\\n\":\"\\n\" }}}}"
            )
        );
        assert_eq!(parse(&line)["d"], json!({"a":[1,2],"b\n":"\n"}));
        // Without an id, nothing is answered.
        send_text(&mut client, r#"{"op":"send","d":"quiet"}"#).await;
        nothing_before_pong(&mut client).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"message","uid":"u","conn":conn,"d":"quiet"})
        );
        // `d` is required; null is data.
        assert_eq!(
            ask(&mut client, json!({"op":"send","id":3})).await,
            json!({"op":"error","code":400,"reason":"missing field `d`","id":3})
        );
        assert_eq!(
            ask(&mut client, json!({"op":"send","d":null,"id":4})).await,
            json!({"op":"sent","id":4})
        );
        assert_eq!(listener.event().await["d"], Value::Null);

        // The answer, to this connection only: a msg without a position.
        let (mut twin, _) = v1_login(&server, "u").await;
        let reply = backend
            .request(&format!(
                r#"{{"cmd":"push","conn":"{conn}","data":{{"a": [1, 2.50]}},"id":"r"}}"#
            ))
            .await;
        assert_eq!(reply, r#"{"ok":true,"id":"r","delivered":1}"#);
        assert_eq!(
            next_text(&mut client).await,
            r#"{"op":"msg","d":{"a": [1, 2.50]}}"#
        );
        nothing_before_pong(&mut twin).await;
        // Bytes come as a binary frame, to a v1 client too.
        let reply = backend
            .json(json!({"cmd":"push","conn":conn,"data":"AAEC","binary":true}))
            .await;
        assert_eq!(reply["delivered"], 1, "{reply}");
        assert_eq!(next_binary(&mut client).await, [0, 1, 2]);
        let mut raw = login_plain(&server, "r").await;
        let stats = backend.stats().await;
        assert_eq!(stats["upstream"], 4, "{stats}");
        assert_eq!(stats["upstream_dropped"], 2, "{stats}");
        assert_eq!(stats["v1_errors"]["no_listener"], 2, "{stats}");
        // A raw client's message does not go up without --upstream.
        send_text(&mut raw, "stays here").await;
        logged_in(&mut raw).await;
        send_text(&mut client, r#"{"op":"send","d":"barrier"}"#).await;
        assert_eq!(listener.event().await["d"], "barrier");
    });
}

#[test]
fn without_upstream_raw_clients_messages_stay_with_the_hub() {
    let server = Server::start(plain_config());
    run(async {
        let mut listener = Listener::start(
            server.text,
            Some(json!(["message", "connect", "disconnect"])),
        )
        .await;
        let mut alice = login_plain(&server, "alice").await;
        let alice_conn = conn_of(&listener.event().await);
        for text in ["one", "two", "{\"op\":\"send\",\"d\":1}"] {
            send_text(&mut alice, text).await;
        }
        send_binary(&mut alice, b"three").await;
        logged_in(&mut alice).await;
        // The next event is a v1 client's: none of alice's went up.
        let (mut bob, bob_conn) = v1_login(&server, "bob").await;
        assert_eq!(
            listener.event().await,
            json!({"event":"connect","uid":"bob","conn":bob_conn})
        );
        send_text(&mut bob, r#"{"op":"send","d":"up"}"#).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"message","uid":"bob","conn":bob_conn,"d":"up"})
        );
        // Alice is served as always.
        let reply = listener
            .request(json!({"cmd":"push","conn":alice_conn,"data":"down"}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":1}));
        assert_eq!(next_text(&mut alice).await, "down");
        let mut backend = Backend::connect(server.text).await;
        let stats = backend.stats().await;
        assert_eq!(stats["upstream"], 1, "{stats}");
        assert_eq!(stats["upstream_dropped"], 0, "{stats}");
    });
}

// ---------------------------------------------------------------------------
// Pushes to one connection.

#[test]
fn a_push_to_a_gone_connection_reaches_nobody() {
    let server = Server::start(upstream_config());
    run(async {
        let mut listener = Listener::start(
            server.text,
            Some(json!(["message", "connect", "disconnect"])),
        )
        .await;
        let mut backend = Backend::connect(server.text).await;
        let mut first = connect(server.ws, "/").await;
        let gone = conn_of(&listener.event().await);
        close_client(&mut first).await;
        assert_eq!(
            listener.event().await,
            json!({"event":"disconnect","conn":gone})
        );
        let push = |conn: &str, data: &str| json!({"cmd":"push","conn":conn,"data":data});
        assert_eq!(
            backend.json(push(&gone, "late")).await,
            json!({"ok":true,"delivered":0})
        );
        // The next connection may take the same slot in the hub's table,
        // but not the id: a late answer does not reach it.
        let mut next = connect(server.ws, "/").await;
        let now = conn_of(&listener.event().await);
        assert_ne!(now, gone);
        assert_eq!(
            backend.json(push(&gone, "late")).await,
            json!({"ok":true,"delivered":0})
        );
        // Only these two connections were ever opened, so any other id is
        // nobody's.
        for conn in ["1", "123456", "4294967296000", "18446744073709551615"] {
            assert!(conn != gone && conn != now, "{conn}");
            assert_eq!(
                backend.json(push(conn, "nobody")).await["delivered"],
                0,
                "{conn}"
            );
        }
        assert_eq!(
            backend.json(push(&now, "yours")).await,
            json!({"ok":true,"delivered":1})
        );
        assert_eq!(next_text(&mut next).await, "yours");
        let reply = backend
            .json(json!({"cmd":"push","conn":now,"data":"AP8=","binary":true}))
            .await;
        assert_eq!(reply["delivered"], 1);
        assert_eq!(next_binary(&mut next).await, [0, 0xff]);
    });
}

#[test]
fn bad_pushes_to_a_connection_get_typed_errors() {
    let server = Server::start(upstream_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let mut listener = Listener::start(server.text, None).await;
        let mut client = connect(server.ws, "/").await;
        send_text(&mut client, "hi").await;
        let conn = conn_of(&listener.event().await);
        let conn_field = format!(r#""conn":"{conn}""#);
        let not_two = "give `conn`, `uid` or `uids`, not two";
        let bad_conn = "`conn` must be a connection id, as its events give it";
        let bad_binary = "`binary` must be true or false";
        let bad_base64 = "`data` must be a base64 string, with \"binary\":true";
        let cases: Vec<(String, String)> = [
            (format!(r#"{conn_field},"uid":"u","data":1"#), not_two),
            (format!(r#"{conn_field},"uids":["u"],"data":1"#), not_two),
            (r#""conn":"abc","data":1"#.into(), bad_conn),
            (format!(r#""conn":{conn},"data":1"#), bad_conn),
            (r#""conn":"-1","data":1"#.into(), bad_conn),
            (r#""conn":"","data":1"#.into(), bad_conn),
            (r#""conn":"1.5","data":1"#.into(), bad_conn),
            (r#""conn":" 1","data":1"#.into(), bad_conn),
            // Only the id as events write it: no sign, no leading zero.
            (r#""conn":"+1","data":1"#.into(), bad_conn),
            (r#""conn":"01","data":1"#.into(), bad_conn),
            (r#""conn":"18446744073709551616","data":1"#.into(), bad_conn),
            (r#""conn":null,"data":1"#.into(), bad_conn),
            (r#""conn":["1"],"data":1"#.into(), bad_conn),
            (
                format!(r#"{conn_field},"data":"AA==","binary":"yes""#),
                bad_binary,
            ),
            (
                format!(r#"{conn_field},"data":"AA==","binary":1"#),
                bad_binary,
            ),
            (
                format!(r#"{conn_field},"data":"AA==","binary":null"#),
                bad_binary,
            ),
            (
                format!(r#"{conn_field},"data":"not base64!","binary":true"#),
                bad_base64,
            ),
            (
                format!(r#"{conn_field},"data":"AP8","binary":true"#),
                bad_base64,
            ),
            (
                format!(r#"{conn_field},"data":"AP8B\n","binary":true"#),
                bad_base64,
            ),
            (
                format!(r#"{conn_field},"data":"-_8=","binary":true"#),
                bad_base64,
            ),
            (
                format!(r#"{conn_field},"data":5,"binary":true"#),
                bad_base64,
            ),
            (
                format!(r#"{conn_field},"data":["AA=="],"binary":true"#),
                bad_base64,
            ),
            (
                format!(r#"{conn_field},"data":null,"binary":true"#),
                bad_base64,
            ),
            (
                format!(r#"{conn_field},"data":1,"apns":{{"aps":{{}}}}"#),
                "`apns` must be absent in a push to one connection",
            ),
            (
                format!(r#"{conn_field},"data":1,"ack_timeout":"5s""#),
                "`ack_timeout` must be absent in a push to one connection",
            ),
            (conn_field.clone(), "missing field `data`"),
            (
                format!(r#"{conn_field},"binary":true"#),
                "missing field `data`",
            ),
        ]
        .into_iter()
        .map(|(fields, error)| (fields, error.to_string()))
        .collect();
        for (n, (fields, error)) in cases.iter().enumerate() {
            let line = format!(r#"{{"cmd":"push",{fields},"id":{n}}}"#);
            let reply = parse(&backend.request(&line).await);
            assert_eq!(reply, json!({"ok":false,"id":n,"error":error}), "{line}");
        }
        // Nothing reached the client, and the backend still works.
        let reply = backend
            .json(json!({"cmd":"push","conn":conn,"data":"fine","binary":false}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":1}));
        assert_eq!(next_text(&mut client).await, "fine");
        let stats = backend.stats().await;
        assert_eq!(stats["pushes"], 1, "{stats}");
        let errors = &stats["text_errors"];
        assert_eq!(errors["conn_and_uid"], 2, "{stats}");
        assert_eq!(errors["missing_field"], 2, "{stats}");
        assert_eq!(errors["wrong_type"], cases.len() as u64 - 4, "{stats}");
    });
}
