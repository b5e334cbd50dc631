//! The raw WebSocket client, by the thousand: connect from a chosen source
//! address (with `--tls`, then do a TLS handshake: see [`crate::stream`]), send
//! the HTTP upgrade with a fixed key (only the `101` status line is checked),
//! send the credential as one masked text frame, then read: answer pings,
//! answer a close, and hand every text message to the bench's [`Listener`].
//!
//! Not tungstenite: at 18,000 connections its state and buffers per connection
//! would weigh more than the hub being measured. Here a connection is one task
//! (a few hundred bytes), its socket, and a [`Decoder`] that keeps no buffer
//! between frames. Bytes are read into one scratch buffer shared by every
//! connection of the thread and decoded before the next read, so no read
//! buffer lives per connection at all.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddrV4, TcpStream};
use std::ops::Range;
use std::rc::Rc;

use native_tls::TlsConnector;
use pushhub::auth::{Secret, mint};
use smol::lock::Semaphore;
use smol::{Async, LocalExecutor};

use crate::clock::now_ns;
use crate::codec::{self, Decoder, Event, FrameError, MASK, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use crate::net;
use crate::notify::Notify;
use crate::stream::{Stream, Tls, Wire};

/// Shared read buffer: big enough that a 64 KiB frame takes one or two reads.
const SCRATCH_BYTES: usize = 128 * 1024;

/// Reads in a row before a connection yields to the others.
const READ_STREAK: u32 = 16;

/// Longest HTTP response head accepted from the hub.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Error messages kept for the report; the rest are only counted.
const MAX_ERRORS_KEPT: usize = 8;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// How a client proves its uid.
#[derive(Clone)]
pub enum Credential {
    /// The uid itself, as the first message, followed by a ping: the hub
    /// answers the login with nothing, and the pong proves it was handled.
    Plain,
    /// An HS256 token for the uid, as the first message; ready once sent.
    Token { secret: Secret, exp: u64 },
}

impl Credential {
    fn for_uid(&self, uid: &str) -> String {
        match self {
            Credential::Plain => uid.to_string(),
            Credential::Token { secret, exp } => mint(secret, uid, *exp),
        }
    }

    /// The token for `uid` in token mode; `None` in plain-uid mode, where the
    /// uid itself is the credential.
    pub fn token_for(&self, uid: &str) -> Option<String> {
        match self {
            Credential::Plain => None,
            Credential::Token { secret, exp } => Some(mint(secret, uid, *exp)),
        }
    }

    /// Whether a login is confirmed by a ping's pong before the client is
    /// ready (plain-uid mode, where a push could otherwise outrun the login).
    fn confirms(&self) -> bool {
        matches!(self, Credential::Plain)
    }
}

/// What a bench does with the messages its clients receive. Connection `conn`
/// is the client of uid `u<conn>`.
pub trait Listener {
    /// A text message reached `conn` at `now_ns`: its first bytes (at most
    /// [`codec::KEEP`]) and its length.
    fn on_text(&self, conn: u32, prefix: &[u8], len: u64, now_ns: u64);

    /// `conn` ended after it was ready: a close frame (with its code, if any),
    /// EOF or an error.
    fn on_close(&self, _conn: u32, _code: Option<u16>) {}

    /// Asked before every read; `false` stops reading this connection. Its
    /// socket stays open and goes to [`Listener::park`].
    fn keep_reading(&self, _conn: u32) -> bool {
        true
    }

    fn park(&self, _parked: Parked) {}
}

/// A listener for benches that only hold connections.
pub struct Ignore;

impl Listener for Ignore {
    fn on_text(&self, _: u32, _: &[u8], _: u64, _: u64) {}
}

/// A connection that stopped reading, socket open; [`Pool::resume`] reads it again.
pub struct Parked {
    stream: Stream,
    state: ConnState,
}

pub struct ClientConfig {
    pub ws: SocketAddrV4,
    pub sources: u8,
    pub concurrency: usize,
    pub credential: Credential,
    /// SO_RCVBUF for the connections in the range (default: the kernel's).
    pub rcvbuf: Option<(Range<u32>, usize)>,
    /// wss: the TLS handshake's settings, shared by every connection.
    pub tls: Option<TlsConnector>,
}

/// What every connection task of a pool shares.
struct Ctx {
    ws: SocketAddrV4,
    sources: u8,
    credential: Credential,
    rcvbuf: Option<(Range<u32>, usize)>,
    tls: Option<TlsConnector>,
    /// The upgrade request, the same for every connection.
    request: String,
    opening: Semaphore,
    listener: Rc<dyn Listener>,
    ready: Cell<u32>,
    failed: Cell<u32>,
    closed: Cell<u32>,
    changed: Notify,
    errors: RefCell<Vec<String>>,
}

impl Ctx {
    /// Keeps `message` for the report if it is among the first few.
    fn note(&self, message: String) {
        let mut errors = self.errors.borrow_mut();
        if errors.len() < MAX_ERRORS_KEPT {
            errors.push(message);
        }
    }

    fn fail(&self, message: String) {
        self.failed.set(self.failed.get() + 1);
        self.note(message);
        self.changed.notify();
    }
}

/// A set of clients opened at bounded concurrency on this thread's executor.
#[derive(Clone)]
pub struct Pool {
    ctx: Rc<Ctx>,
    ex: Rc<LocalExecutor<'static>>,
}

impl Pool {
    pub fn new(
        ex: Rc<LocalExecutor<'static>>,
        config: ClientConfig,
        listener: Rc<dyn Listener>,
    ) -> Pool {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            config.ws
        );
        Pool {
            ctx: Rc::new(Ctx {
                ws: config.ws,
                sources: config.sources,
                credential: config.credential,
                rcvbuf: config.rcvbuf,
                tls: config.tls,
                request,
                opening: Semaphore::new(config.concurrency.max(1)),
                listener,
                ready: Cell::new(0),
                failed: Cell::new(0),
                closed: Cell::new(0),
                changed: Notify::default(),
                errors: RefCell::new(Vec::new()),
            }),
            ex,
        }
    }

    /// Starts the clients of uids `u<i>` for `i` in `range`.
    pub fn spawn(&self, range: Range<u32>) {
        for idx in range {
            let ctx = Rc::clone(&self.ctx);
            let task = match self.ctx.tls {
                None => self.ex.spawn(conn_task::<Async<TcpStream>>(ctx, idx)),
                Some(_) => self.ex.spawn(conn_task::<Tls>(ctx, idx)),
            };
            task.detach();
        }
    }

    /// Connections that completed their login (plain mode: the pong to the
    /// ping after the uid came back; token mode: credential sent).
    pub fn ready(&self) -> u32 {
        self.ctx.ready.get()
    }

    pub fn failed(&self) -> u32 {
        self.ctx.failed.get()
    }

    /// Ready connections that have ended since.
    pub fn closed(&self) -> u32 {
        self.ctx.closed.get()
    }

    /// The first few failure messages.
    pub fn errors(&self) -> Vec<String> {
        self.ctx.errors.borrow().clone()
    }

    /// Waits until `target` connections are ready or failed.
    pub async fn settled(&self, target: u32) {
        let ctx = &self.ctx;
        ctx.changed
            .until(|| ctx.ready.get() + ctx.failed.get() >= target)
            .await;
    }

    /// Reads a parked connection again.
    pub fn resume(&self, parked: Parked) {
        let ctx = Rc::clone(&self.ctx);
        let task = match parked.stream {
            Stream::Plain(socket) => self.ex.spawn(read_loop(ctx, socket, parked.state)),
            Stream::Tls(tls) => self.ex.spawn(read_loop(ctx, tls, parked.state)),
        };
        task.detach();
    }
}

/// One client's life. Kept small: it is paid once per connection.
async fn conn_task<W: Wire>(ctx: Rc<Ctx>, idx: u32) {
    let opened = {
        let _permit = ctx.opening.acquire().await;
        // Boxed: the opening's state (buffers, the credential) is short-lived
        // and would otherwise set the size of every task for its whole life.
        Box::pin(open::<W>(&ctx, idx)).await
    };
    match opened {
        Ok((stream, state)) => {
            ctx.ready.set(ctx.ready.get() + 1);
            ctx.changed.notify();
            read_loop(ctx, stream, state).await;
        }
        Err(e) => ctx.fail(format!("u{idx}: {e}")),
    }
}

/// Connects (with --tls, then does the TLS handshake), upgrades and logs in;
/// in plain mode, until the pong that confirms the login.
async fn open<W: Wire>(ctx: &Ctx, idx: u32) -> Result<(W, ConnState), String> {
    let src = net::source(idx, ctx.sources);
    let rcvbuf = match &ctx.rcvbuf {
        Some((range, bytes)) if range.contains(&idx) => Some(*bytes),
        _ => None,
    };
    let socket = net::connect_from(src, ctx.ws, rcvbuf)
        .await
        .map_err(|e| format!("connect from {src} to {}: {e}", ctx.ws))?;
    let mut stream = W::start(socket, ctx.tls.as_ref()).await?;
    stream
        .write_all(ctx.request.as_bytes())
        .await
        .map_err(|e| format!("sending the upgrade request: {e}"))?;

    let mut head = Vec::with_capacity(256);
    let head_end = loop {
        let mut chunk = [0u8; 512];
        let n = stream
            .read_with(|s| s.read(&mut chunk))
            .await
            .map_err(|e| format!("reading the upgrade response: {e}"))?;
        if n == 0 {
            return Err("the hub closed the connection during the handshake".into());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err("upgrade response head over 8 KiB".into());
        }
    };
    if !head.starts_with(b"HTTP/1.1 101 ") {
        let status = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(format!(
            "upgrade refused: {}",
            String::from_utf8_lossy(status)
        ));
    }

    let uid = format!("u{idx}");
    let confirms = ctx.credential.confirms();
    let mut state = ConnState::new(idx, confirms);
    let credential = ctx.credential.for_uid(&uid);
    let mut frame = Vec::with_capacity(credential.len() + 20);
    codec::encode(&mut frame, OP_TEXT, credential.as_bytes(), Some(MASK));
    if confirms {
        // A server handles a client's frames in order, so this ping's pong
        // comes after the login. Any server answers pings; not every one
        // greets a login (the original does not), so no greeting is awaited.
        codec::encode(&mut frame, OP_PING, b"", Some(MASK));
    }
    stream
        .write_all(&frame)
        .await
        .map_err(|e| format!("sending the credential: {e}"))?;
    // Whatever followed the response head is already frames.
    state
        .ingest(&head[head_end..], now_ns(), &*ctx.listener)
        .map_err(|e| e.to_string())?;

    loop {
        if !state.awaiting_login {
            break;
        }
        state
            .flush(&mut stream)
            .await
            .map_err(|e| format!("writing: {e}"))?;
        if let Some(code) = state.closed {
            return Err(format!(
                "the hub closed the connection before the login was confirmed (code {code:?})"
            ));
        }
        let mut chunk = [0u8; 512];
        let n = stream
            .read_with(|s| s.read(&mut chunk))
            .await
            .map_err(|e| format!("waiting for the login's pong: {e}"))?;
        if n == 0 {
            return Err("EOF before the login's pong".into());
        }
        state
            .ingest(&chunk[..n], now_ns(), &*ctx.listener)
            .map_err(|e| e.to_string())?;
    }
    Ok((stream, state))
}

/// How a read turn ended.
enum Turn {
    Data,
    Eof,
    Broken(FrameError),
}

/// Reads until the connection ends or the listener parks it.
async fn read_loop<W: Wire>(ctx: Rc<Ctx>, mut stream: W, mut state: ConnState) {
    let mut streak = 0u32;
    let code = loop {
        if let Err(e) = state.flush(&mut stream).await {
            ctx.note(format!("u{}: writing: {e}", state.idx));
            break None;
        }
        if let Some(code) = state.closed {
            ctx.note(format!("u{}: closed by the hub (code {code:?})", state.idx));
            break code;
        }
        if !ctx.listener.keep_reading(state.idx) {
            ctx.listener.park(Parked {
                stream: stream.into_stream(),
                state,
            });
            return;
        }
        let turn = stream
            .read_with(|s| {
                SCRATCH.with(|scratch| {
                    let mut buf = scratch.borrow_mut();
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        return Ok(Turn::Eof);
                    }
                    Ok(match state.ingest(&buf[..n], now_ns(), &*ctx.listener) {
                        Ok(()) => Turn::Data,
                        Err(e) => Turn::Broken(e),
                    })
                })
            })
            .await;
        match turn {
            Ok(Turn::Data) => {}
            Ok(Turn::Eof) => {
                ctx.note(format!("u{}: the hub closed the connection", state.idx));
                break None;
            }
            Err(e) => {
                ctx.note(format!("u{}: reading: {e}", state.idx));
                break None;
            }
            Ok(Turn::Broken(e)) => {
                ctx.note(format!("u{}: {e}", state.idx));
                break None;
            }
        }
        streak += 1;
        if streak.is_multiple_of(READ_STREAK) {
            smol::future::yield_now().await;
        }
    };
    ctx.closed.set(ctx.closed.get() + 1);
    ctx.listener.on_close(state.idx, code);
    ctx.changed.notify();
}

/// A connection's state between reads.
struct ConnState {
    idx: u32,
    decoder: Decoder,
    /// Plain mode, until the pong that confirms the login. Text before it (a
    /// greeting, from servers that send one) is not a push and is not counted.
    awaiting_login: bool,
    /// Pongs and the close reply, not yet written.
    out: Vec<u8>,
    /// Set once a close frame arrived: its code, if any.
    closed: Option<Option<u16>>,
}

impl ConnState {
    fn new(idx: u32, awaiting_login: bool) -> ConnState {
        ConnState {
            idx,
            decoder: Decoder::default(),
            awaiting_login,
            out: Vec::new(),
            closed: None,
        }
    }

    fn ingest(&mut self, data: &[u8], now: u64, listener: &dyn Listener) -> Result<(), FrameError> {
        let ConnState {
            idx,
            decoder,
            awaiting_login,
            out,
            closed,
        } = self;
        if closed.is_some() {
            return Ok(());
        }
        decoder.feed(data, &mut |event| match event {
            Event::Text { prefix, len } if !*awaiting_login && closed.is_none() => {
                listener.on_text(*idx, prefix, len, now);
            }
            Event::Pong => *awaiting_login = false,
            Event::Ping(payload) if closed.is_none() => {
                codec::encode(out, OP_PONG, payload, Some(MASK));
            }
            Event::Close(code) if closed.is_none() => {
                *closed = Some(code);
                let echo = code.map(u16::to_be_bytes);
                codec::encode(
                    out,
                    OP_CLOSE,
                    echo.as_ref().map_or(&[], |c| &c[..]),
                    Some(MASK),
                );
            }
            _ => {}
        })
    }

    /// Writes pending pongs or the close reply.
    async fn flush(&mut self, stream: &mut impl Wire) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        stream.write_all(&self.out).await.map(|()| {
            // Hold no memory while idle.
            self.out = Vec::new();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_state_answers_pings_and_close() {
        struct Count(Cell<u32>);
        impl Listener for Count {
            fn on_text(&self, conn: u32, prefix: &[u8], len: u64, _: u64) {
                assert_eq!((conn, prefix, len), (3, &b"hi"[..], 2));
                self.0.set(self.0.get() + 1);
            }
        }
        let listener = Count(Cell::new(0));
        let mut state = ConnState::new(3, true);
        let mut bytes = Vec::new();
        for frame in [
            // A greeting, from a server that sends one: not a push.
            pushhub::ws::frame::Frame::text("login success, your uid is u3"),
            pushhub::ws::frame::Frame::pong(b""),
            pushhub::ws::frame::Frame::text("hi"),
            pushhub::ws::frame::Frame::ping(),
            pushhub::ws::frame::Frame::close(1001, "bye"),
            pushhub::ws::frame::Frame::text("hi"),
        ] {
            bytes.extend_from_slice(frame.as_bytes());
        }
        state.ingest(&bytes, 0, &listener).unwrap();
        assert!(!state.awaiting_login);
        assert_eq!(listener.0.get(), 1, "nothing after the close frame counts");
        assert_eq!(state.closed, Some(Some(1001)));
        // A masked pong (empty) then a masked close echoing 1001.
        let mut expected = Vec::new();
        codec::encode(&mut expected, OP_PONG, &[], Some(MASK));
        codec::encode(&mut expected, OP_CLOSE, &1001u16.to_be_bytes(), Some(MASK));
        assert_eq!(state.out, expected);
    }

    #[test]
    fn nothing_counts_before_the_login_is_confirmed() {
        struct Never;
        impl Listener for Never {
            fn on_text(&self, _: u32, prefix: &[u8], _: u64, _: u64) {
                panic!("counted {prefix:?} before the pong");
            }
        }
        let mut state = ConnState::new(3, true);
        let frame = pushhub::ws::frame::Frame::text("hello");
        state.ingest(frame.as_bytes(), 0, &Never).unwrap();
        assert!(state.awaiting_login);
    }

    #[test]
    fn a_connection_task_stays_small() {
        let ex = Rc::new(LocalExecutor::new());
        let config = ClientConfig {
            ws: "127.0.0.1:1".parse().unwrap(),
            sources: 1,
            concurrency: 1,
            credential: Credential::Plain,
            rcvbuf: None,
            tls: None,
        };
        let pool = Pool::new(ex, config, Rc::new(Ignore));
        let size = std::mem::size_of_val(&conn_task::<Async<TcpStream>>(Rc::clone(&pool.ctx), 0));
        // 784 bytes when written (and still with --tls added: a plain
        // connection's task is its own type); with the socket's reactor entry
        // and the executor's task header, a connection costs this side about
        // 1.2 KiB.
        assert!(size <= 1024, "connection task grew to {size} bytes");
        // A TLS one adds OpenSSL's state, behind the box.
        let size = std::mem::size_of_val(&conn_task::<Tls>(Rc::clone(&pool.ctx), 0));
        assert!(size <= 1024, "TLS connection task grew to {size} bytes");
    }
}
