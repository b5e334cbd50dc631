//! Cluster helpers: hub processes that share a real Redis (see `redis.rs`),
//! started on fresh ports and waited for until their Redis link is up; logins
//! to a hub process; a hub's later log lines, its counters and its monitoring
//! endpoint; guards that undo a stall; and a "Redis" that speaks garbage.
//!
//! Nothing here sleeps to synchronise: every wait is on a socket, a log line or
//! a polled condition, each bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::{Value, json};

use super::redis::Redis;
use super::*;

/// What a hub logs each time its Redis link comes up.
pub const CONNECTED: &str = "redis: connected";

/// The flags of a hub on fresh ports in the cluster on `url`, as `node` (a
/// random id when `None`), followed by `extra`.
pub fn hub_args(url: &str, node: Option<&str>, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--ws",
        "127.0.0.1:0",
        "--text",
        "127.0.0.1:0",
        "--redis",
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(node) = node {
        args.extend(["--node-id".to_string(), node.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts a hub without waiting for its Redis link.
pub fn spawn_hub(url: &str, node: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Binary {
    let args = hub_args(url, node, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Binary::start(&args, env)
}

/// Starts a hub and waits until it logs that its Redis link is up.
pub fn start_hub(url: &str, node: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Binary {
    let mut hub = spawn_hub(url, node, extra, env);
    hub.wait_for_line(CONNECTED);
    hub
}

/// One Redis and hubs on it, each with its Redis link up. Dropping it kills
/// the hubs, then Redis.
pub struct Cluster {
    pub hubs: Vec<Binary>,
    pub redis: Redis,
}

impl Cluster {
    /// A fresh Redis and plain-uid hubs named `nodes`.
    pub fn start(nodes: &[&str]) -> Cluster {
        Cluster::with(Redis::start(), nodes, &["--allow-plain-uid"], &[])
    }

    /// Plain-uid hubs with `extra` flags on a fresh Redis.
    pub fn start_with(nodes: &[&str], extra: &[&str]) -> Cluster {
        let mut flags = vec!["--allow-plain-uid"];
        flags.extend_from_slice(extra);
        Cluster::with(Redis::start(), nodes, &flags, &[])
    }

    /// Hubs named `nodes` on `redis`, each with `flags` and `env`. They start
    /// side by side, then each is waited for.
    pub fn with(redis: Redis, nodes: &[&str], flags: &[&str], env: &[(&str, &str)]) -> Cluster {
        let url = redis.url();
        let mut hubs: Vec<Binary> = nodes
            .iter()
            .map(|node| spawn_hub(&url, Some(node), flags, env))
            .collect();
        for hub in &mut hubs {
            hub.wait_for_line(CONNECTED);
        }
        Cluster { hubs, redis }
    }

    pub fn ws(&self, i: usize) -> SocketAddr {
        self.hubs[i].ws
    }

    pub fn text(&self, i: usize) -> SocketAddr {
        self.hubs[i].text
    }

    /// A backend connection to each hub's text port, in order.
    pub async fn backends<const N: usize>(&self) -> [Backend; N] {
        assert_eq!(N, self.hubs.len(), "one backend per hub");
        let mut backends = Vec::new();
        for hub in &self.hubs {
            backends.push(Backend::connect(hub.text).await);
        }
        match backends.try_into() {
            Ok(backends) => backends,
            Err(_) => unreachable!("as many backends as hubs"),
        }
    }
}

/// `ask!(backend, {request} => {reply})`: sends the request (JSON, as for
/// `json!`) and asserts that the reply is exactly the other.
#[allow(unused_macros)]
macro_rules! ask {
    ($backend:expr, $request:tt => $reply:tt) => {{
        let request = serde_json::json!($request);
        let reply = $backend.json(request.clone()).await;
        assert_eq!(reply, serde_json::json!($reply), "the reply to {request}");
    }};
}
#[allow(unused_imports)]
pub(crate) use ask;

impl Drop for Cluster {
    /// A failed test shows what each hub logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for hub in &mut self.hubs {
                log_mark(hub);
                eprintln!("--- a hub's stderr ---\n{}", hub.stderr.join("\n"));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Logins to a hub process.

/// Connects to `ws`, sends `first` (a uid in plain-uid mode, or a token) and
/// returns once the hub has answered a ping sent after it: the login is then
/// complete, for the whole cluster.
pub async fn login_with(ws: SocketAddr, first: &str) -> Client {
    let mut client = connect(ws, "/").await;
    send_text(&mut client, first).await;
    logged_in(&mut client).await;
    client
}

/// [`login_plain`] for a hub process: a plain-uid login at `ws`.
pub async fn login_at(ws: SocketAddr, uid: &str) -> Client {
    login_with(ws, uid).await
}

/// A v1 client (`pushhub.v1`) at `ws`, authenticated as `uid` in plain-uid
/// mode; returns once its `welcome` came.
pub async fn v1_login_at(ws: SocketAddr, uid: &str) -> Client {
    let mut client = v1_connect(ws).await;
    v1_auth(&mut client, uid, Value::Null).await;
    client
}

/// A v1 client (`pushhub.v1`) at `ws`, not yet authenticated.
pub async fn v1_connect(ws: SocketAddr) -> Client {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    use async_tungstenite::tungstenite::http::HeaderValue;
    let stream = within(STEP, "connecting", smol::Async::<TcpStream>::connect(ws))
        .await
        .unwrap();
    let mut request = format!("ws://{ws}/").into_client_request().unwrap();
    let protocol = HeaderValue::from_static("pushhub.v1");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol);
    let handshake = async_tungstenite::client_async(request, stream);
    within(STEP, "v1 handshake", handshake).await.unwrap().0
}

/// Authenticates as `uid` in plain-uid mode, with `since` unless it is
/// null, and returns the welcome.
pub async fn v1_auth(client: &mut Client, uid: &str, since: Value) -> Value {
    let mut auth = json!({"op":"auth","uid":uid});
    if !since.is_null() {
        auth["since"] = since;
    }
    send_text(client, &auth.to_string()).await;
    let welcome = v1_frame(client).await;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    welcome
}

/// Waits (at most 5 s) until no hub counts a connection of `uid`.
#[allow(dead_code)]
pub async fn wait_offline(backend: &mut Backend, uid: &str) {
    let deadline = Deadline::new(Duration::from_secs(5), format!("{uid} offline"));
    while backend.json(json!({"cmd":"online","uid":uid})).await["online"] != json!(false) {
        deadline.tick().await;
    }
}

/// The next v1 frame, as JSON.
pub async fn v1_frame(client: &mut Client) -> Value {
    let text = next_text(client).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"))
}

// ---------------------------------------------------------------------------
// Log lines.

/// Takes in every stderr line the hub has written so far and returns how many
/// there are: lines logged later have at least this index.
pub fn log_mark(hub: &mut Binary) -> usize {
    while let Ok(line) = hub.lines.try_recv() {
        hub.stderr.push(line);
    }
    hub.stderr.len()
}

/// Waits until `until` for a stderr line from index `since` on that `matches`.
pub fn wait_for_line_since(
    hub: &mut Binary,
    since: usize,
    until: Instant,
    what: &str,
    matches: impl Fn(&str) -> bool,
) -> String {
    let mut seen = since;
    loop {
        if let Some(line) = hub.stderr[seen..].iter().find(|l| matches(l)) {
            return line.clone();
        }
        seen = hub.stderr.len();
        let left = until.saturating_duration_since(Instant::now());
        match hub.lines.recv_timeout(left) {
            Ok(line) => hub.stderr.push(line),
            Err(RecvTimeoutError::Timeout) => panic!(
                "pushhub never logged {what}; stderr since: {:#?}",
                &hub.stderr[since..]
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "pushhub ended without logging {what}; stderr since: {:#?}",
                &hub.stderr[since..]
            ),
        }
    }
}

/// Waits until `until` for a [`CONNECTED`] line from index `since` on.
pub fn wait_connected_since(hub: &mut Binary, since: usize, until: Instant) -> String {
    wait_for_line_since(hub, since, until, CONNECTED, |l| l.contains(CONNECTED))
}

/// Panics if the hub has exited, or has logged a panic.
pub fn assert_alive(hub: &mut Binary) {
    log_mark(hub);
    let status = hub.child.try_wait().unwrap();
    assert!(
        status.is_none(),
        "the hub exited ({status:?}): {:#?}",
        hub.stderr
    );
    assert!(
        !hub.stderr.iter().any(|l| l.contains("panicked")),
        "the hub panicked: {:#?}",
        hub.stderr
    );
}

// ---------------------------------------------------------------------------
// Counters and the monitoring endpoint.

/// The hub's local `stats` counter `name`.
pub async fn counter(backend: &mut Backend, name: &str) -> u64 {
    let stats = backend.stats().await;
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name:?} in {stats}"))
}

/// The `redis` field of the hub's local `stats`: "up" or "down".
pub async fn redis_state(backend: &mut Backend) -> String {
    let stats = backend.stats().await;
    stats["redis"]
        .as_str()
        .unwrap_or_else(|| panic!("no \"redis\" in {stats}"))
        .to_string()
}

/// Polls the hub's `stats` until its Redis link is `state` ("up" or "down").
pub async fn wait_redis_state(backend: &mut Backend, state: &str, limit: Duration) {
    let deadline = Deadline::new(limit, format!("stats says \"redis\":\"{state}\""));
    while redis_state(backend).await != state {
        deadline.tick().await;
    }
}

/// `{"cmd":"stats","cluster":true}`: the `nodes` entries sorted by `node`,
/// and the whole reply.
pub async fn cluster_stats(backend: &mut Backend) -> (Vec<Value>, Value) {
    let reply = backend.json(json!({"cmd":"stats","cluster":true})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let mut nodes = reply["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes array: {reply}"))
        .clone();
    nodes.sort_by(|x, y| x["node"].as_str().cmp(&y["node"].as_str()));
    (nodes, reply)
}

/// The node ids of [`cluster_stats`], sorted.
pub async fn cluster_nodes(backend: &mut Backend) -> Vec<String> {
    let (nodes, reply) = cluster_stats(backend).await;
    nodes
        .iter()
        .map(|n| {
            n["node"]
                .as_str()
                .unwrap_or_else(|| panic!("an entry without node: {reply}"))
                .to_string()
        })
        .collect()
}

/// The address of the hub's `/metrics` and `/healthz`, from its address line.
pub fn metrics_addr(hub: &Binary) -> SocketAddr {
    let line = hub
        .stderr
        .iter()
        .find(|l| l.contains("metrics on http://"))
        .unwrap_or_else(|| panic!("no metrics address logged: {:#?}", hub.stderr));
    let rest = &line[line.find("metrics on http://").unwrap() + "metrics on http://".len()..];
    let addr = rest.split('/').next().unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("bad metrics address in {line:?}: {e}"))
}

/// The body of the hub's `/metrics`.
pub fn metrics_body(hub: &Binary) -> String {
    let response = http(
        metrics_addr(hub),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// A sample of the hub's `/metrics`, which must be there.
pub fn metric(hub: &Binary, name: &str) -> f64 {
    let body = metrics_body(hub);
    sample(&body, name).unwrap_or_else(|| panic!("no sample {name}: {body}"))
}

/// The status code of the hub's `/healthz`.
pub fn healthz(hub: &Binary) -> u16 {
    let response = http(
        metrics_addr(hub),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// Runs `fut` and says how long it took.
pub async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let value = fut.await;
    (value, start.elapsed())
}

// ---------------------------------------------------------------------------
// Stalls, undone even when a test fails.

/// Redis stopped with SIGSTOP until this is dropped.
pub struct RedisPaused<'a>(&'a Redis);

impl<'a> RedisPaused<'a> {
    pub fn new(redis: &'a Redis) -> RedisPaused<'a> {
        redis.pause();
        RedisPaused(redis)
    }
}

impl Drop for RedisPaused<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// A hub stopped with SIGSTOP until this is dropped.
pub struct HubStopped(Pid);

impl HubStopped {
    pub fn new(hub: &Binary) -> HubStopped {
        let pid = Pid::from_child(&hub.child);
        kill_process(pid, Signal::STOP).unwrap();
        HubStopped(pid)
    }
}

impl Drop for HubStopped {
    fn drop(&mut self) {
        let _ = kill_process(self.0, Signal::CONT);
    }
}

// ---------------------------------------------------------------------------
// A "Redis" that is not one.

/// A listener that answers each connection with the next of its answers, in
/// turn: `Some(bytes)` writes them, then reads (and drops) what comes until
/// the peer closes or a short while passes; `None` closes at once.
pub struct FakeRedis {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRedis {
    pub fn start(answers: Vec<Option<&'static [u8]>>) -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (accepted, stop) = (accepted.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((socket, _)) => {
                            let n = accepted.fetch_add(1, Ordering::Relaxed);
                            answer(socket, answers[n % answers.len()]);
                        }
                        // The poll interval of an accept loop, not a synchronisation.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        FakeRedis {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// How many connections it has taken.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

fn answer(mut socket: TcpStream, bytes: Option<&[u8]>) {
    let Some(bytes) = bytes else { return };
    socket.set_nonblocking(false).unwrap();
    let _ = socket.write_all(bytes);
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Scenarios every kind of Redis deployment must pass.

/// A backend listening on the hub of `text` hears a raw client of another
/// hub (`ws`, started with `--upstream`) and answers it through `push`
/// with the event's `conn` and `node`.
#[allow(dead_code)]
pub async fn a_listener_hears_another_hubs_client(text: SocketAddr, ws: SocketAddr, uid: &str) {
    let mut listener = Backend::connect(text).await;
    let reply = listener.json(json!({"cmd":"listen"})).await;
    assert_eq!(reply, json!({"ok":true,"listening":true}));
    let mut client = login_at(ws, uid).await;
    // The other hub finds the listener within a second or so: until then
    // what the client says reaches no listener.
    let deadline = Deadline::new(Duration::from_secs(5), "an event from the other hub");
    let event = loop {
        send_text(&mut client, "hello").await;
        let heard = smol::future::or(async { Some(listener.line().await) }, async {
            smol::Timer::after(Duration::from_millis(200)).await;
            None
        });
        if let Some(line) = heard.await {
            break serde_json::from_str::<Value>(&line).unwrap();
        }
        deadline.tick().await;
    };
    assert_eq!(
        (&event["event"], &event["uid"]),
        (&json!("message"), &json!(uid))
    );
    assert_eq!(event["d"], "hello", "{event}");
    let node = event["node"]
        .as_str()
        .unwrap_or_else(|| panic!("no node in {event}"));
    let answer = json!({"cmd":"push","conn":event["conn"],"node":node,"data":"heard you"});
    listener.send(format!("{answer}\n").as_bytes()).await;
    // More of the client's hellos may come first.
    let reply = loop {
        let line = listener.line().await;
        if !line.starts_with(r#"{"event":"#) {
            break serde_json::from_str::<Value>(&line).unwrap();
        }
    };
    assert_eq!(reply, json!({"ok":true,"delivered":1}));
    assert_eq!(next_text(&mut client).await, "heard you");
}
