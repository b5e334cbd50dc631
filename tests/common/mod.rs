//! Shared helpers for the integration tests: a real hub on its own thread (or the
//! real binary as a child process), WebSocket clients and text-port backends over
//! real sockets on 127.0.0.1, and deadlines around every wait.
//!
//! Nothing here sleeps to synchronise: waits are either on a socket (bounded by
//! [`within`]) or polls of a condition until a [`Deadline`].

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

pub mod apns;
pub mod cluster;
pub mod devices;
pub mod fcm;
pub mod redis;
pub mod tls;
pub mod webpush;

use std::future::Future;
use std::io::{self, BufRead, BufReader as StdBufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use pushhub::auth::{Secret, mint};
use pushhub::time::unix_now;
use pushhub::{Config, Listeners};
use serde_json::Value;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::stream::StreamExt;
use smol::{Async, Timer};

/// The default bound on any single wait for the network.
pub const STEP: Duration = Duration::from_secs(5);

/// The bound on a whole test body.
pub const TEST: Duration = Duration::from_secs(20);

/// The token secret of the in-process hubs.
pub const SECRET: &[u8] = b"integration-test-secret-0123456789abcdef";

pub type Client = WebSocketStream<Async<TcpStream>>;

/// What a WebSocket client may run over: a plain socket ([`Client`]), or TLS
/// over one (wss). The helpers below take either.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport for S {}

// ---------------------------------------------------------------------------
// Deadlines.

/// Runs `fut` for at most `limit`, panicking with `what` if it takes longer.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    // Boxed: nested test futures are large in debug builds, and test threads' stacks small.
    smol::future::or(Box::pin(fut), async {
        Timer::after(limit).await;
        panic!("timed out after {limit:?}: {what}")
    })
    .await
}

/// Runs a test body on this thread, bounded by [`TEST`].
pub fn run<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(within(TEST, "the whole test", fut))
}

/// Runs a test body that does a lot of work (thousands of connections),
/// bounded by `limit` instead: its bound is there to stop a hang, not to
/// measure, and a busy machine may take several times as long as an idle one.
pub fn run_long<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    smol::block_on(within(limit, "the whole test", fut))
}

/// A deadline for polling a condition:
/// `while !cond().await { deadline.tick().await }`.
pub struct Deadline {
    at: Instant,
    limit: Duration,
    what: String,
}

impl Deadline {
    pub fn new(limit: Duration, what: impl Into<String>) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
            what: what.into(),
        }
    }

    /// Waits a few milliseconds before the next poll; panics once the deadline has passed.
    pub async fn tick(&self) {
        assert!(
            Instant::now() < self.at,
            "condition not met within {:?}: {}",
            self.limit,
            self.what
        );
        Timer::after(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// Configurations.

pub fn secret() -> Secret {
    Secret::from_file_contents(SECRET).unwrap()
}

/// A token for `uid` signed with [`SECRET`], valid for an hour.
pub fn token(uid: &str) -> String {
    mint(&secret(), uid, unix_now() + 3600)
}

/// The defaults, with a short shutdown timeout and no way to authenticate yet.
pub fn base_config() -> Config {
    Config {
        shutdown_timeout: Duration::from_secs(1),
        ..Config::default()
    }
}

/// Plain-uid mode, as the Workerman original.
pub fn plain_config() -> Config {
    let mut config = base_config();
    config.auth.allow_plain_uid = true;
    config
}

/// Token mode only.
pub fn token_config() -> Config {
    let mut config = base_config();
    config.auth.secret = Some(secret());
    config
}

// ---------------------------------------------------------------------------
// The hub, in process.

/// A hub running on its own thread on two fresh 127.0.0.1 ports. Dropping it
/// triggers shutdown and joins the thread.
pub struct Server {
    pub ws: SocketAddr,
    pub text: SocketAddr,
    /// The `/metrics` and `/healthz` endpoint.
    pub metrics: SocketAddr,
    shutdown: Option<smol::channel::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    pub fn start(config: Config) -> Server {
        let ws = TcpListener::bind("127.0.0.1:0").unwrap();
        let text = TcpListener::bind("127.0.0.1:0").unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").unwrap();
        let (ws_addr, text_addr) = (ws.local_addr().unwrap(), text.local_addr().unwrap());
        let metrics_addr = metrics.local_addr().unwrap();
        let (tx, rx) = smol::channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("pushhub".into())
            .spawn(move || {
                smol::block_on(pushhub::run(
                    config,
                    Listeners {
                        ws,
                        text,
                        metrics: Some(metrics),
                    },
                    async move {
                        rx.recv().await.ok();
                    },
                    // SIGHUP is tested on the binary: a handler here would
                    // catch signals meant for the whole test process.
                    smol::stream::pending(),
                ))
            })
            .unwrap();
        Server {
            ws: ws_addr,
            text: text_addr,
            metrics: metrics_addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.close();
        }
    }

    /// Triggers shutdown and waits (at most `limit`) for `run` to return.
    pub fn stop(mut self, limit: Duration) -> io::Result<()> {
        self.trigger_shutdown();
        self.join(limit)
    }

    fn join(&mut self, limit: Duration) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + limit;
        while !thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the hub did not stop within {limit:?} of shutdown"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.trigger_shutdown();
        if std::thread::panicking() {
            // Do not hide the test's own panic behind a second one.
            if let Some(thread) = self.thread.take() {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !thread.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            return;
        }
        if let Err(e) = self.join(Duration::from_secs(10)) {
            panic!("pushhub::run failed: {e}");
        }
    }
}

// ---------------------------------------------------------------------------
// WebSocket clients.

/// Connects and completes the WebSocket handshake on `path` (which may carry a query).
pub async fn try_connect(ws: SocketAddr, path: &str) -> Result<Client, WsError> {
    let stream = Async::<TcpStream>::connect(ws).await.map_err(WsError::Io)?;
    let url = format!("ws://{ws}{path}");
    let (client, _response) = async_tungstenite::client_async(url, stream).await?;
    Ok(client)
}

pub async fn connect(ws: SocketAddr, path: &str) -> Client {
    within(STEP, "WebSocket handshake", try_connect(ws, path))
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake on {path} failed: {e}"))
}

pub async fn send_text(client: &mut WebSocketStream<impl Transport>, text: &str) {
    within(STEP, "sending a message", client.send(Message::text(text)))
        .await
        .unwrap_or_else(|e| panic!("sending {text:?} failed: {e}"));
}

/// Connects in plain-uid mode and returns once the hub has bound the uid. The
/// hub answers nothing to a login, but it handles a client's frames in order:
/// the pong to a ping sent after the uid proves the uid was taken.
pub async fn login_plain(server: &Server, uid: &str) -> Client {
    let mut client = connect(server.ws, "/").await;
    send_text(&mut client, uid).await;
    logged_in(&mut client).await;
    client
}

/// Sends a ping and waits for its pong, failing on any other message first:
/// everything sent before the ping has been handled once this returns.
pub async fn logged_in(client: &mut WebSocketStream<impl Transport>) {
    const PROBE: &[u8] = b"logged in?";
    within(
        STEP,
        "sending a ping",
        client.send(Message::Ping(PROBE.into())),
    )
    .await
    .unwrap_or_else(|e| panic!("sending a ping failed: {e}"));
    loop {
        match next_message(client).await {
            Some(Ok(Message::Pong(payload))) if payload.as_ref() == PROBE => return,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected nothing but the pong after a login, got {other:?}"),
        }
    }
}

/// Connects with a token as the first message and waits until the hub has bound
/// the uid to one more connection than it had (token logins get no reply).
pub async fn login_token(server: &Server, backend: &mut Backend, uid: &str) -> Client {
    let before = backend.connections(uid).await;
    let mut client = connect(server.ws, "/").await;
    send_text(&mut client, &token(uid)).await;
    wait_connections(backend, uid, before + 1).await;
    client
}

/// Waits until `uid` has exactly `n` connections.
pub async fn wait_connections(backend: &mut Backend, uid: &str, n: u64) {
    let deadline = Deadline::new(STEP, format!("{uid} has {n} connections"));
    while backend.connections(uid).await != n {
        deadline.tick().await;
    }
}

/// The next message, whatever it is; `None` once the stream has ended.
pub async fn next_message(
    client: &mut WebSocketStream<impl Transport>,
) -> Option<Result<Message, WsError>> {
    within(STEP, "the next WebSocket message", client.next()).await
}

/// The next text message, skipping pings and pongs; panics on anything else.
pub async fn next_text(client: &mut WebSocketStream<impl Transport>) -> String {
    loop {
        match next_message(client).await {
            Some(Ok(Message::Text(text))) => return text.as_str().to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                panic!("expected a text message, got close {frame:?}")
            }
            Some(Ok(other)) => panic!("expected a text message, got {other:?}"),
            Some(Err(e)) => panic!("expected a text message, got error {e}"),
            None => panic!("expected a text message, but the stream ended"),
        }
    }
}

/// Reads until the hub's close frame, skipping pings and pongs (and answering
/// them, as tungstenite does on read); returns its code and reason. The
/// client's reply to the close frame goes out at its next read: follow with
/// [`expect_end`], or the hub waits out its close grace (2 s).
pub async fn expect_close(client: &mut WebSocketStream<impl Transport>) -> (u16, String) {
    loop {
        match next_message(client).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.as_str().to_string());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => panic!("expected a close frame, got {other:?}"),
            Some(Err(e)) => panic!("expected a close frame, got error {e}"),
            None => panic!("expected a close frame, but the stream ended"),
        }
    }
}

/// Reads until the stream ends, expecting nothing but the end of the close handshake.
pub async fn expect_end(client: &mut WebSocketStream<impl Transport>) {
    loop {
        match next_message(client).await {
            None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(other) => panic!("expected the end of the stream, got {other:?}"),
        }
    }
}

/// Closes from the client side and waits for the hub's reply.
pub async fn close_client(client: &mut WebSocketStream<impl Transport>) {
    within(STEP, "sending a close frame", client.close(None))
        .await
        .unwrap();
    loop {
        match next_message(client).await {
            None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return,
            Some(Ok(Message::Close(_) | Message::Ping(_) | Message::Pong(_))) => {}
            Some(other) => panic!("expected the close reply, got {other:?}"),
        }
    }
}

/// A `/proc/PID/status` figure (the number before its unit), e.g. `VmRSS:`.
pub fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The file descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Drops a client's socket with a TCP reset instead of a close frame or a FIN.
pub fn reset(client: Client) {
    let stream = client.into_inner();
    rustix::net::sockopt::set_socket_linger(stream.get_ref(), Some(Duration::ZERO)).unwrap();
    drop(stream);
}

// ---------------------------------------------------------------------------
// Raw sockets and the monitoring endpoint.

/// Waits until a raw socket is closed by the hub; returns when that was seen.
pub fn wait_closed(mut socket: TcpStream, limit: Duration) -> Instant {
    use std::io::Read;
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return Instant::now(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Instant::now(),
            Err(e) => panic!("the hub did not close the socket within {limit:?}: {e}"),
        }
    }
}

/// Sends `request` and returns the whole response (the server closes).
pub fn http(addr: SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The value of the sample `name` (with its labels) in a Prometheus exposition.
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

// ---------------------------------------------------------------------------
// Text-port backends.

/// A backend connection to the text port: lines out, reply lines in.
pub struct Backend {
    pub stream: Async<TcpStream>,
    /// Bytes read but not yet returned as lines.
    pub buf: Vec<u8>,
}

impl Backend {
    pub async fn connect(text: SocketAddr) -> Backend {
        let stream = within(
            STEP,
            "connecting to the text port",
            Async::<TcpStream>::connect(text),
        )
        .await
        .unwrap();
        Backend {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes.
    pub async fn send(&self, bytes: &[u8]) {
        within(
            STEP,
            "writing to the text port",
            (&self.stream).write_all(bytes),
        )
        .await
        .unwrap();
    }

    /// The next reply line, without its newline; `None` at end of stream.
    pub async fn try_line(&mut self) -> Option<String> {
        within(STEP, "a reply line", read_line(&self.stream, &mut self.buf)).await
    }

    pub async fn line(&mut self) -> String {
        self.try_line()
            .await
            .expect("the text port closed the connection instead of replying")
    }

    /// Sends one line and returns its reply line.
    pub async fn request(&mut self, line: &str) -> String {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.send(&bytes).await;
        self.line().await
    }

    /// Sends one JSON request and parses its reply.
    pub async fn json(&mut self, request: Value) -> Value {
        let reply = self.request(&request.to_string()).await;
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?} is not JSON: {e}"))
    }

    pub async fn connections(&mut self, uid: &str) -> u64 {
        let reply = self
            .json(serde_json::json!({"cmd": "online", "uid": uid}))
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        let n = reply["connections"].as_u64().unwrap();
        assert_eq!(reply["online"], n > 0, "{reply}");
        n
    }

    pub async fn stats(&mut self) -> Value {
        let reply = self.json(serde_json::json!({"cmd": "stats"})).await;
        assert_eq!(reply["ok"], true, "{reply}");
        reply
    }

    /// Pushes `data` (a string) to `uid` and returns how many connections took it.
    pub async fn push(&mut self, uid: &str, data: &str) -> u64 {
        let reply = self
            .json(serde_json::json!({"cmd": "push", "uid": uid, "data": data}))
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        reply["delivered"].as_u64().unwrap()
    }

    pub async fn broadcast(&mut self, data: &str) -> u64 {
        let reply = self
            .json(serde_json::json!({"cmd": "broadcast", "data": data}))
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        reply["delivered"].as_u64().unwrap()
    }

    /// Expects the hub to have closed this connection (after any lines already read).
    pub async fn expect_eof(&mut self) {
        if let Some(line) = self.try_line().await {
            panic!("expected the text port to close the connection, got {line:?}");
        }
    }
}

/// Reads one line from `stream`, buffering in `buf`. `None` at end of stream (a
/// reset after the last line counts as its end).
pub async fn read_line(stream: &Async<TcpStream>, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8(line[..pos].to_vec()).expect("reply lines are UTF-8");
            return Some(line);
        }
        let mut chunk = vec![0u8; 64 * 1024];
        let n = match (&*stream).read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("reading the text port failed: {e}"),
        };
        if n == 0 {
            assert!(
                buf.is_empty(),
                "the text port closed mid-line: {:?}",
                String::from_utf8_lossy(buf)
            );
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

// ---------------------------------------------------------------------------
// The binary.

/// The `pushhub` binary as a child process, with its stderr collected.
pub struct Binary {
    pub child: Child,
    pub ws: SocketAddr,
    pub text: SocketAddr,
    lines: mpsc::Receiver<String>,
    /// Every stderr line seen so far.
    pub stderr: Vec<String>,
}

impl Binary {
    /// Starts the binary on two fresh ports with `args` and `env` (the secrets'
    /// variables are removed unless given), and waits for it to log its addresses.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut child = binary_command(args, env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in StdBufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut binary = Binary {
            child,
            ws: "0.0.0.0:0".parse().unwrap(),
            text: "0.0.0.0:0".parse().unwrap(),
            lines,
            stderr: Vec::new(),
        };
        // "WebSocket on ws://ADDR, text port on ADDR[, metrics on http://ADDR/metrics]",
        // with `wss://` under the --tls-* flags.
        let line = binary.wait_for_line("WebSocket on ");
        let parse = |line: &str| -> Option<(SocketAddr, SocketAddr)> {
            let rest = &line[line.find("WebSocket on ")? + "WebSocket on ".len()..];
            let rest = rest
                .strip_prefix("ws://")
                .or_else(|| rest.strip_prefix("wss://"))?;
            let (ws, rest) = rest.split_once(", text port on ")?;
            let text = rest.split(',').next()?;
            Some((ws.trim().parse().ok()?, text.trim().parse().ok()?))
        };
        (binary.ws, binary.text) =
            parse(&line).unwrap_or_else(|| panic!("unexpected address line {line:?}"));
        binary
    }

    /// Waits (at most [`STEP`]) for a stderr line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.stderr.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = wait_child(&mut self.child, STEP);
                    panic!(
                        "pushhub ended ({status}) without logging {needle:?}; stderr: {:#?}",
                        self.stderr
                    )
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "pushhub never logged {needle:?}; stderr so far: {:#?}",
                    self.stderr
                ),
            }
        }
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), signal)
            .unwrap();
    }

    /// Waits (at most `limit`) for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = wait_child(&mut self.child, limit);
        // Collect the rest of stderr: the reader thread ends at its end of file.
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stderr.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr stayed open after exit"),
            }
        }
        status
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The binary's command line, with the environment variables that carry
/// secrets (PUSHHUB_SECRET, PUSHHUB_TLS_PASSWORD, ...) removed unless `env`
/// sets them.
pub fn binary_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pushhub"));
    command
        .args(args)
        .env_remove("PUSHHUB_SECRET")
        .env_remove("PUSHHUB_TLS_PASSWORD")
        .env_remove("PUSHHUB_APNS_CERT_PASSWORD")
        .stdin(Stdio::null());
    // The metrics endpoint's default port is fixed; tests run side by side.
    if !args.contains(&"--metrics") && !args.contains(&"--help") {
        command.args(["--metrics", "127.0.0.1:0"]);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Waits (at most `limit`) for `child` to exit, killing it and panicking if it does not.
pub fn wait_child(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pushhub did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the binary to completion (at most [`STEP`]) and returns its status, stdout and stderr.
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    run_to_end(binary_command(args, env))
}

/// [`run_binary`] for one of the binary's commands (`pushhub vapid-keygen
/// ...`): those take none of the hub's flags, so none is added.
pub fn run_command(args: &[&str]) -> (ExitStatus, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pushhub"));
    command.args(args).stdin(Stdio::null());
    run_to_end(command)
}

fn run_to_end(mut command: Command) -> (ExitStatus, String, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let status = wait_child(&mut child, STEP);
    (status, out.join().unwrap(), err.join().unwrap())
}

// ---------------------------------------------------------------------------
// Files.

/// A fresh directory in the system's temporary directory, removed when dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "pushhub-test-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The path of `name` in the directory.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
