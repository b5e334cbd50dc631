//! One WebSocket client, from accepted socket to closed socket: handshake,
//! authentication, then a single task that both drains the connection's hub
//! queue into the socket and reads what the client sends.
//!
//! One task per connection, not a reader and a writer: half the task memory, no
//! channel between them, and no lock. The task never holds a hub borrow across
//! an await.
//!
//! After the handshake ([`crate::ws::handshake`]) the socket is ours alone: frames
//! out are [`Frame`]s written from their shared buffers with vectored writes
//! (control frames go through the same queue, so nothing ever interleaves), and
//! frames in go through [`Decoder`], which holds no buffer between messages.

pub mod frame;
pub mod handshake;
pub mod inbound;
mod link;
mod requests;
pub mod tls;
pub mod v1;
pub mod writer;

use std::future::Future;
use std::net::TcpStream;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use log::debug;
use serde_json::value::RawValue;
use smol::Async;

use frame::Frame;
use handshake::Failure;
use inbound::{Decoder, FrameError, Incoming};
use link::Link;
use tls::TlsStream;

use crate::auth::{self, AuthError, Identity};
use crate::hub::listeners::Payload;
use crate::hub::{CloseReason, ConnId, Outbound};
use crate::metrics::Counters;
use crate::shared::{Shared, SocketSlot};
use crate::time::{timeout, unix_now};

/// Bytes read from a client per system call, into a stack buffer; only a
/// partial frame is kept between reads.
const READ_CHUNK: usize = 4096;

/// Inbound messages handled per turn before yielding, so that a flooding client
/// cannot starve the rest of the executor.
const READ_BUDGET: usize = 32;

/// How long a close handshake may take before the socket is dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Close codes of our own (RFC 6455 leaves 4000-4999 to applications).
const CODE_KICKED: u16 = 4000;
const CODE_UNAUTHORIZED: u16 = 4001;
const CODE_AUTH_TIMEOUT: u16 = 4002;
const CODE_IDLE_TIMEOUT: u16 = 4003;
const CODE_NOT_V1: u16 = 4004;

/// How a connection ends; each but `Gone` sends a close frame.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Hub(CloseReason),
    Unauthorized(AuthError),
    Broken(FrameError),
    /// A v1 client sent what no v1 client sends (a binary frame, text that
    /// is not JSON): it does not speak the protocol it asked for.
    NotV1(&'static str),
    /// The client sent a close frame (with this code): we answer it.
    PeerClosed(Option<u16>),
    /// The socket is finished (EOF, reset, write error): nothing more to send.
    Gone,
}

impl Ending {
    fn close_frame(self) -> Option<Frame> {
        let (code, reason) = match self {
            Ending::Hub(CloseReason::Kicked) => (CODE_KICKED, "kicked"),
            Ending::Hub(CloseReason::SlowConsumer) => (1008, "slow consumer: outbound queue full"),
            Ending::Hub(CloseReason::AuthTimeout) => (CODE_AUTH_TIMEOUT, "authentication timeout"),
            Ending::Hub(CloseReason::IdleTimeout) => (CODE_IDLE_TIMEOUT, "idle timeout"),
            Ending::Hub(CloseReason::Shutdown) => (1001, "server shutting down"),
            Ending::Unauthorized(e) => {
                return Some(Frame::close(
                    CODE_UNAUTHORIZED,
                    &format!("unauthorized: {e}"),
                ));
            }
            Ending::Broken(FrameError::TooBig) => (1009, "message too big"),
            Ending::Broken(FrameError::BadUtf8) => (1007, "invalid UTF-8"),
            Ending::Broken(FrameError::Protocol(_)) => (1002, "protocol error"),
            Ending::NotV1(reason) => (CODE_NOT_V1, reason),
            Ending::PeerClosed(code) => (code.unwrap_or(1000), ""),
            Ending::Gone => return None,
        };
        Some(Frame::close(code, reason))
    }

    /// Whether what was accepted for the client is still written before the
    /// close frame: yes when the client is fine and we are the ones leaving.
    fn delivers_backlog(self) -> bool {
        matches!(
            self,
            Ending::Hub(CloseReason::Kicked | CloseReason::Shutdown)
        )
    }

    /// Whether to wait for the client's close frame after sending ours.
    fn awaits_reply(self) -> bool {
        !matches!(self, Ending::PeerClosed(_) | Ending::Gone)
    }
}

/// What the handshakes hand over: the client's link, the `token` of its
/// request's URL, whatever it sent after the request, and whether it speaks v1.
type Opened = (Link, Option<String>, Vec<u8>, bool);

/// Serves one accepted socket until it closes. `slot` counts it against
/// `--max-connections` until then.
///
/// The task's size is paid by every connection for its whole life, so it is
/// kept to what a connection keeps: the handshakes (with their deadline's
/// timer) and the close are boxed, the arguments are captured by an `async`
/// block rather than copied into an `async fn`'s locals, and the handshakes'
/// results live in a block that ends before the session's first await.
pub(crate) fn serve(
    shared: Rc<Shared>,
    stream: Async<TcpStream>,
    slot: SocketSlot,
) -> impl Future<Output = ()> {
    let limit = shared.config.handshake_timeout;
    let handshake = Box::pin(timeout(limit, open(Rc::clone(&shared), stream)));
    async move {
        let (mut session, refused) = {
            let (link, token, tail, v1) = match handshake.await {
                Some(Ok(opened)) => opened,
                Some(Err(e)) => {
                    let mut hub = shared.hub.borrow_mut();
                    if let Failure::Rejected(handshake::Rejection::ForbiddenOrigin) = e {
                        hub.counters.rejected_origin += 1;
                    }
                    Counters::bump(&mut hub.counters.handshake_failures, e.kind());
                    debug!("handshake failed: {e:?}");
                    return;
                }
                None => {
                    let mut hub = shared.hub.borrow_mut();
                    Counters::bump(&mut hub.counters.handshake_failures, "timeout");
                    debug!("handshake timed out");
                    return;
                }
            };
            let config = &shared.config;
            let id = {
                let mut hub = shared.hub.borrow_mut();
                let now = hub.now_ms();
                hub.counters.handshakes += 1;
                let id = hub.open(now, link.flusher_socket(), v1);
                if config.allow_anonymous {
                    hub.bind_anonymous(id);
                }
                id
            };
            // With no credential to take, an anonymous connection is
            // complete at once: nothing it sends is a credential.
            let anonymous_only = config.allow_anonymous
                && config.auth.secret.is_none()
                && !config.auth.allow_plain_uid;
            let mut session = Session {
                decoder: Decoder::new(shared.config.max_message_size),
                shared: Rc::clone(&shared),
                id,
                link,
                pending: tail,
                authenticated: anonymous_only,
                routing: false,
                v1: v1.then(Box::default),
            };
            if anonymous_only && v1 {
                session.welcome_anonymous();
            }
            // A `token` in the URL is always a signed token, never a plain
            // uid. The client is bound before it can act on the handshake's
            // answer, so a push sent once it is connected cannot miss it.
            let refused = match token {
                Some(token) if shared.config.auth.secret.is_some() => {
                    let verified = auth::token(&shared.config.auth, &token, unix_now());
                    session.bind(verified, None, &v1::Since::default()).err()
                }
                _ => None,
            };
            (session, refused)
        };
        let ending = match refused {
            Some(e) => Ending::Unauthorized(e),
            None => std::future::poll_fn(|cx| session.poll_run(cx)).await,
        };
        Box::pin(session.close(ending)).await;
        drop(slot);
    }
}

/// The TLS handshake (wss only), then the WebSocket handshake. The rest of
/// the request is dropped here, not kept in the task.
async fn open(shared: Rc<Shared>, stream: Async<TcpStream>) -> Result<Opened, Failure> {
    let origins = &shared.config.allow_origins;
    // A clone (a reference count) of the acceptor of the moment: a reload
    // during this handshake does not affect it.
    let acceptor = shared.tls.borrow().clone();
    match acceptor {
        None => {
            let mut stream = stream;
            let (upgrade, tail) = handshake::accept(&mut stream, origins).await?;
            Ok((Link::plain(stream), upgrade.token, tail, upgrade.v1))
        }
        Some(acceptor) => {
            let mut tls = TlsStream::accept(acceptor, stream)
                .await
                .map_err(Failure::Tls)?;
            let (upgrade, tail) = handshake::accept(&mut tls, origins).await?;
            Ok((Link::Tls(Box::new(tls)), upgrade.token, tail, upgrade.v1))
        }
    }
}

struct Session {
    shared: Rc<Shared>,
    id: ConnId,
    link: Link,
    decoder: Decoder,
    /// Bytes read but not yet decoded: a partial frame (usually empty, and then
    /// holding no allocation).
    pending: Vec<u8>,
    authenticated: bool,
    /// In a cluster: the uid or a channel was just taken, and the next
    /// message waits until other hubs can reach this connection through it
    /// (and Redis has said where its streams stand).
    routing: bool,
    /// A v1 client's uid and grants (once authenticated); `None` for a raw
    /// client, which costs no allocation.
    v1: Option<Box<requests::V1Client>>,
}

/// What a turn of the connection loop produced.
enum Turn {
    /// A text message to act on: a raw client's credential, any v1 frame,
    /// or (with `--upstream`) a raw client's message.
    Text(String),
    /// A raw client's binary message, with `--upstream`.
    Binary(Vec<u8>),
    End(Ending),
}

impl Drop for Session {
    fn drop(&mut self) {
        // The hub may be mid-borrow only if a task were dropped from inside a hub
        // method, which never happens; try_borrow keeps a drop from ever panicking.
        if let Ok(mut hub) = self.shared.hub.try_borrow_mut() {
            hub.remove(self.id);
        }
        if let Some(cluster) = &self.shared.cluster {
            if let Some(read) = self.pending_read() {
                cluster.cancel_read(read);
            }
            if let Some(gather) = self.pending_gather() {
                cluster.forget(gather);
            }
        }
    }
}

impl Session {
    /// Binds the connection to the uid that `identity` proves, or says why
    /// not; subscribes it to its token's `subs`, and welcomes a v1 client
    /// (answering the `auth` request `id`, if it sent one).
    fn bind(
        &mut self,
        identity: Result<Identity, AuthError>,
        id: Option<&RawValue>,
        since: &v1::Since,
    ) -> Result<Identity, AuthError> {
        let mut identity = identity?;
        self.shared.hub.borrow_mut().bind(self.id, &identity.uid);
        self.authenticated = true;
        self.routing = self.shared.cluster.is_some();
        debug!("{} authenticated", identity.uid);
        self.join_granted(&mut identity, id, since);
        Ok(identity)
    }

    /// The connection's life after the handshake, until it must close. A poll
    /// function rather than an `async fn`, so that it adds nothing to the
    /// task's size.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        // One budget for the whole poll: a message that is acted on here
        // (a v1 frame, a message going up) spends it as one ignored in
        // `poll_turn` does, or a client that sends fast enough would keep
        // the thread from every other task, the listeners among them.
        let mut budget = READ_BUDGET;
        loop {
            match std::task::ready!(self.poll_turn(cx, &mut budget)) {
                Turn::Text(text) if self.v1.is_some() => {
                    if let Some(ending) = self.on_v1_frame(&text) {
                        return Poll::Ready(ending);
                    }
                }
                Turn::Text(text) if self.authenticated => {
                    let mut hub = self.shared.hub.borrow_mut();
                    let _ = hub.upstream(self.id, Payload::Text(&text));
                }
                Turn::Binary(data) => {
                    let mut hub = self.shared.hub.borrow_mut();
                    let _ = hub.upstream(self.id, Payload::Binary(&data));
                }
                Turn::Text(text) => {
                    let now = unix_now();
                    let identity = auth::authenticate(&self.shared.config.auth, &text, now);
                    match self.bind(identity, None, &v1::Since::default()) {
                        Err(e) => return Poll::Ready(Ending::Unauthorized(e)),
                        // The original's push.php sends nothing on login, so
                        // its pages read every message as a push; the greeting
                        // of the Workerman manual is for clients that wait for it.
                        Ok(Identity {
                            uid, plain: true, ..
                        }) if self.shared.config.login_reply => {
                            let greeting = format!("login success, your uid is {uid}");
                            let mut hub = self.shared.hub.borrow_mut();
                            hub.send(self.id, &Frame::text(&greeting));
                        }
                        Ok(_) => {}
                    }
                }
                Turn::End(ending) => return Poll::Ready(ending),
            }
        }
    }

    /// The next message to act on, spending `budget` (messages handled
    /// this poll) on each message read.
    fn poll_turn(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> Poll<Turn> {
        while *budget > 0 {
            *budget -= 1;
            let routed = self.poll_routed(cx).is_ready();
            if let Some(ending) = self.poll_write(cx, routed) {
                return Poll::Ready(Turn::End(ending));
            }
            if !routed {
                self.shared.hub.borrow_mut().set_waker(self.id, cx.waker());
                return Poll::Pending;
            }
            let message = match self.poll_message(cx) {
                Poll::Pending => {
                    self.shared.hub.borrow_mut().set_waker(self.id, cx.waker());
                    return Poll::Pending;
                }
                Poll::Ready(Err(ending)) => return Poll::Ready(Turn::End(ending)),
                Poll::Ready(Ok(message)) => message,
            };
            {
                let mut hub = self.shared.hub.borrow_mut();
                let now = hub.now_ms();
                hub.touch(self.id, now);
                if let Incoming::Ping(payload) = &message {
                    hub.send(self.id, &Frame::pong(payload));
                }
            }
            let upstream = self.shared.config.upstream;
            match message {
                Incoming::Text(text) if !self.authenticated || self.v1.is_some() || upstream => {
                    return Poll::Ready(Turn::Text(text));
                }
                Incoming::Binary(_) if self.v1.is_some() => {
                    return Poll::Ready(Turn::End(Ending::NotV1("v1 frames are text frames")));
                }
                Incoming::Binary(_) if !self.authenticated => {
                    return Poll::Ready(Turn::End(Ending::Unauthorized(AuthError::NotText)));
                }
                Incoming::Binary(data) if upstream => return Poll::Ready(Turn::Binary(data)),
                Incoming::Close(code) => return Poll::Ready(Turn::End(Ending::PeerClosed(code))),
                // Without --upstream, a raw client's messages after
                // authentication are accepted and ignored, as the original's are.
                _ => {}
            }
        }
        // A flooding client has had its budget: let the other tasks run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Ready once the cluster routes to this connection everything it
    /// took (at once on a hub alone). Until then nothing is written to its
    /// client and its next message waits: a client that saw its login or
    /// subscription answered (`welcome`, `subbed`, or the pong to a ping
    /// sent after it) can then be reached from any hub.
    fn poll_routed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.routing {
            return Poll::Ready(());
        }
        if let Some(cluster) = &self.shared.cluster {
            let hub = self.shared.hub.borrow();
            std::task::ready!(cluster.poll_ready(&hub, self.id, cx));
        }
        std::task::ready!(self.poll_pending(cx));
        self.routing = false;
        Poll::Ready(())
    }

    /// Writes what the hub has queued, if `routed` (otherwise it stays
    /// queued, its answers not yet true for the cluster). `Some` ends the
    /// connection.
    fn poll_write(&mut self, cx: &mut Context<'_>, routed: bool) -> Option<Ending> {
        let mut hub = self.shared.hub.borrow_mut();
        match hub.outbound(self.id) {
            Outbound::Gone => Some(Ending::Gone),
            Outbound::Close(reason) => Some(Ending::Hub(reason)),
            Outbound::Write(_) if !routed => None,
            Outbound::Write(queue) => match self.link.poll_write(queue, cx) {
                Poll::Ready(Err(e)) => {
                    debug!("write failed: {e}");
                    Some(Ending::Gone)
                }
                _ => None,
            },
        }
    }

    /// The next message from the client. `Err` ends the connection.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, Ending>> {
        loop {
            if let Some(message) = self.decode()? {
                return Poll::Ready(Ok(message));
            }
            let mut chunk = [0u8; READ_CHUNK];
            match self.link.poll_read(cx, &mut chunk) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Err(Ending::Gone)),
                Poll::Ready(Ok(n)) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Decodes one message from what has been read, if a whole one is there.
    fn decode(&mut self) -> Result<Option<Incoming>, Ending> {
        let mut at = 0;
        let mut message = None;
        while message.is_none() {
            match self.decoder.decode(&mut self.pending[at..]) {
                Ok(Some((used, complete))) => {
                    at += used;
                    message = complete;
                }
                Ok(None) => break,
                Err(e) => {
                    debug!("client broke the protocol: {e}");
                    return Err(Ending::Broken(e));
                }
            }
        }
        self.pending.drain(..at);
        if self.pending.is_empty() {
            // Nothing partial left: hold no buffer while idle.
            self.pending = Vec::new();
        }
        Ok(message)
    }

    /// Ends the connection: writes what must still go out (everything queued
    /// after a kick or on shutdown, otherwise at most a half-written frame), then
    /// the close frame, then waits for the client's own close frame so that ours
    /// is not lost to a reset. All within [`CLOSE_GRACE`].
    async fn close(&mut self, ending: Ending) {
        let Some(frame) = ending.close_frame() else {
            return;
        };
        debug!("closing connection: {ending:?}");
        let mut leftover = {
            let mut hub = self.shared.hub.borrow_mut();
            if let Ending::Unauthorized(e) = ending {
                hub.counters.auth_failures += 1;
                Counters::bump(&mut hub.counters.auth_failure_reasons, e.kind());
            }
            hub.remove(self.id).unwrap_or_default()
        };
        if !ending.delivers_backlog() {
            leftover.clear_unstarted();
        }
        leftover.push(frame);
        let handshake = async {
            let written = std::future::poll_fn(|cx| {
                self.link.poll_write(&mut leftover, cx).map(|r| r.is_ok())
            });
            if !written.await || !ending.awaits_reply() {
                return;
            }
            // Read until the client's close frame, EOF or an error.
            std::future::poll_fn(|cx| match self.poll_message(cx) {
                Poll::Ready(Ok(Incoming::Close(_)) | Err(_)) => Poll::Ready(()),
                Poll::Ready(Ok(_)) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            })
            .await;
        };
        timeout(CLOSE_GRACE, handshake).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The task of an idle connection is this future; its size is paid once per
    /// connection for the connection's whole life.
    #[test]
    fn connection_task_stays_small() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let shared = Rc::new(Shared::new(
            Config::default(),
            None,
            Default::default(),
            None,
        ));
        let slot = shared.claim_slot([127, 0, 0, 1].into()).unwrap();
        let task = serve(Rc::clone(&shared), Async::new(stream).unwrap(), slot);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 192, "connection future grew to {size} bytes");
    }
}
