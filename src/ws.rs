//! One WebSocket client, from accepted socket to closed socket: handshake,
//! authentication, then a single task that both drains the connection's hub
//! queue into the socket and reads what the client sends.
//!
//! One task per connection, not a reader and a writer: half the task memory, no
//! channel between them, and no lock around the WebSocket. The task never holds
//! a hub borrow across an await.
//!
//! tungstenite does the handshake, reads and parses client frames, answers pings
//! and runs the close handshake. Data frames do not go through it: they are
//! encoded once per push ([`Frame`]) and written from the shared buffer with
//! vectored writes, so a broadcast costs no copy and no buffer per connection.
//! The two writers never interleave inside a frame: tungstenite's bytes are
//! flushed before ours, and the client is not read (so no pong is produced)
//! while one of our frames is half written.

use std::future::Future;
use std::io::IoSlice;
use std::net::TcpStream;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use futures_sink::Sink;
use log::debug;
use smol::Async;
use smol::Timer;
use smol::io::AsyncWrite;
use smol::stream::StreamExt;

use crate::auth::{self, AuthError, Identity};
use crate::frame::Frame;
use crate::hub::{CloseReason, ConnId, Outbound};
use crate::queue::Queue;
use crate::server::{Shared, SocketSlot};

type Ws = WebSocketStream<Async<TcpStream>>;

/// Inbound read size. Clients send little (a token, pongs), and tungstenite keeps
/// this buffer for the life of the connection, so it is kept small.
const READ_BUFFER_BYTES: usize = 256;

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

/// Why this side ends a connection; each becomes a close frame.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Hub(CloseReason),
    Unauthorized(AuthError),
    TooBig,
    Protocol,
    BadUtf8,
}

impl Ending {
    fn frame(self) -> CloseFrame {
        let (code, reason): (CloseCode, &str) = match self {
            Ending::Hub(CloseReason::Kicked) => (CODE_KICKED.into(), "kicked"),
            Ending::Hub(CloseReason::SlowConsumer) => {
                (CloseCode::Policy, "slow consumer: outbound queue full")
            }
            Ending::Hub(CloseReason::AuthTimeout) => {
                (CODE_AUTH_TIMEOUT.into(), "authentication timeout")
            }
            Ending::Hub(CloseReason::IdleTimeout) => (CODE_IDLE_TIMEOUT.into(), "idle timeout"),
            Ending::Hub(CloseReason::Shutdown) => (CloseCode::Away, "server shutting down"),
            Ending::Unauthorized(e) => {
                return CloseFrame {
                    code: CODE_UNAUTHORIZED.into(),
                    reason: Utf8Bytes::from(format!("unauthorized: {e}")),
                };
            }
            Ending::TooBig => (CloseCode::Size, "message too big"),
            Ending::Protocol => (CloseCode::Protocol, "protocol error"),
            Ending::BadUtf8 => (CloseCode::Invalid, "invalid UTF-8"),
        };
        CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }
    }
}

/// The tungstenite settings that keep an idle connection small.
fn ws_config(max_message_size: usize) -> WebSocketConfig {
    let mut config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // tungstenite writes only control frames (pongs, close); data frames
        // bypass it (see `write_queue`), so it needs no write buffering.
        .write_buffer_size(0);
    config.max_message_size = Some(max_message_size);
    config.max_frame_size = Some(max_message_size);
    config
}

/// Serves one accepted socket until it closes. `slot` counts it against
/// `--max-connections` until this returns.
// The handshake callback's error type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
pub(crate) async fn serve(shared: Rc<Shared>, stream: Async<TcpStream>, slot: SocketSlot) {
    let _slot = slot;
    let mut query_token = None;
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        query_token = token_from_query(request.uri().query());
        Ok(response)
    };
    // Boxed: the handshake's state is large and short-lived, and inline it would
    // set the size of this task for the connection's whole life.
    let handshake = Box::pin(async_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(ws_config(shared.config.max_message_size)),
    ));
    let ws = match timeout(shared.config.handshake_timeout, handshake).await {
        Some(Ok(ws)) => ws,
        Some(Err(e)) => {
            debug!("handshake failed: {e}");
            return;
        }
        None => {
            debug!("handshake timed out");
            return;
        }
    };
    let id = {
        let mut hub = shared.hub.borrow_mut();
        let now = hub.now_ms();
        hub.open(now)
    };
    let mut session = Session {
        shared: Rc::clone(&shared),
        id,
        ws,
        tungstenite_dirty: false,
        authenticated: false,
    };
    // With the token in the URL, the client is bound before it can see the
    // handshake's answer, so a push sent after it connects cannot miss it.
    // A `token` in the URL is always a signed token, never a plain uid.
    let from_query = match (query_token, &shared.config.auth.secret) {
        (Some(token), Some(secret)) => Some(
            auth::verify(&token, secret, auth::unix_now())
                .map(|uid| Identity { uid, plain: false })
                .map_err(AuthError::Token),
        ),
        _ => None,
    };
    let ending = match from_query.map(|identity| session.bind(identity)) {
        Some(Err(e)) => Some(Ending::Unauthorized(e)),
        Some(Ok(_)) | None => session.run().await,
    };
    if let Some(ending) = ending {
        // Boxed for the same reason as the handshake: closing happens once.
        Box::pin(session.close(ending)).await;
    }
}

fn token_from_query(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(|value| value.to_string())
}

/// Runs `future` for at most `limit`.
async fn timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(future.await) }, async {
        Timer::after(limit).await;
        None
    })
    .await
}

struct Session {
    shared: Rc<Shared>,
    id: ConnId,
    ws: Ws,
    /// tungstenite may hold unwritten bytes of its own (a pong, a close reply).
    tungstenite_dirty: bool,
    authenticated: bool,
}

/// What ended a turn of the connection loop.
enum Turn {
    Credential(Utf8Bytes),
    /// The client sent a close frame; tungstenite has queued the reply.
    PeerClosed,
    End(Option<Ending>),
}

/// Where the writer stands after a turn.
enum Write {
    /// The queue is empty, or the socket is full between two frames.
    Between,
    /// The socket is full in the middle of a frame.
    MidFrame,
    End(Option<Ending>),
}

impl Drop for Session {
    fn drop(&mut self) {
        // The hub may be mid-borrow only if a task were dropped from inside a hub
        // method, which never happens; try_borrow keeps a drop from ever panicking.
        if let Ok(mut hub) = self.shared.hub.try_borrow_mut() {
            hub.remove(self.id);
        }
    }
}

impl Session {
    /// Binds the connection to the uid that `identity` proves, or says why not.
    fn bind(&mut self, identity: Result<Identity, AuthError>) -> Result<Identity, AuthError> {
        let mut hub = self.shared.hub.borrow_mut();
        match identity {
            Ok(identity) => {
                hub.bind(self.id, &identity.uid);
                self.authenticated = true;
                debug!("{} authenticated", identity.uid);
                Ok(identity)
            }
            Err(e) => {
                debug!("authentication failed: {e}");
                Err(e)
            }
        }
    }

    /// The connection's life after the handshake. Returns how to close, or `None`
    /// if the connection is already finished.
    async fn run(&mut self) -> Option<Ending> {
        loop {
            match std::future::poll_fn(|cx| self.poll_turn(cx)).await {
                Turn::Credential(text) => match self.bind(auth::authenticate(
                    &self.shared.config.auth,
                    &text,
                    auth::unix_now(),
                )) {
                    Err(e) => return Some(Ending::Unauthorized(e)),
                    Ok(Identity { uid, plain: true }) => {
                        // The Workerman original greets a plain-uid login; its
                        // clients may wait for this line.
                        let greeting = format!("login success, your uid is {uid}");
                        self.shared
                            .hub
                            .borrow_mut()
                            .send(self.id, &Frame::text(&greeting));
                    }
                    Ok(_) => {}
                },
                Turn::PeerClosed => {
                    // Send tungstenite's queued close reply (boxed: it happens once).
                    let flush = std::future::poll_fn(|cx| Pin::new(&mut self.ws).poll_flush(cx));
                    Box::pin(timeout(CLOSE_GRACE, flush)).await;
                    return None;
                }
                Turn::End(ending) => return ending,
            }
        }
    }

    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<Turn> {
        for _ in 0..READ_BUDGET {
            match self.poll_write(cx) {
                Write::End(ending) => return Poll::Ready(Turn::End(ending)),
                // Reading could make tungstenite write a pong into the middle of
                // one of our frames; the client is not reading anyway.
                Write::MidFrame => return self.pending(cx),
                Write::Between => {}
            }
            let message = match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => return self.pending(cx),
                Poll::Ready(None) => return Poll::Ready(Turn::End(None)),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Turn::End(ending_for(&e))),
                Poll::Ready(Some(Ok(message))) => message,
            };
            self.tungstenite_dirty = true;
            {
                let mut hub = self.shared.hub.borrow_mut();
                let now = hub.now_ms();
                hub.touch(self.id, now);
            }
            match message {
                Message::Text(text) if !self.authenticated => {
                    return Poll::Ready(Turn::Credential(text));
                }
                Message::Binary(_) if !self.authenticated => {
                    return Poll::Ready(Turn::End(Some(Ending::Unauthorized(AuthError::NotText))));
                }
                Message::Close(_) => return Poll::Ready(Turn::PeerClosed),
                // Pings are answered by tungstenite; messages after authentication
                // are accepted and ignored.
                _ => {}
            }
        }
        // A flooding client has had its budget: let the other tasks run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn pending(&self, cx: &mut Context<'_>) -> Poll<Turn> {
        self.shared.hub.borrow_mut().set_waker(self.id, cx.waker());
        Poll::Pending
    }

    /// Writes queued frames straight from their shared buffers, several per
    /// system call, until the queue is empty or the socket is full.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Write {
        if self.tungstenite_dirty {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.tungstenite_dirty = false,
                Poll::Ready(Err(e)) => return Write::End(ending_for(&e)),
                // Its bytes go first; ours wait (tungstenite never stops mid-frame
                // of ours, because it only writes while we are between frames).
                Poll::Pending => return Write::Between,
            }
        }
        let mut hub = self.shared.hub.borrow_mut();
        match hub.outbound(self.id) {
            Outbound::Gone => Write::End(None),
            Outbound::Close(reason) => Write::End(Some(Ending::Hub(reason))),
            Outbound::Write(queue) => write_queue(&mut self.ws, queue, cx),
        }
    }

    /// Closes the connection: finishes what must still be written (a
    /// half-written frame; everything queued, on shutdown), sends the close
    /// frame, then waits for the client's reply so that the frame is not lost
    /// to a reset. All within [`CLOSE_GRACE`].
    async fn close(&mut self, ending: Ending) {
        let frame = ending.frame();
        debug!(
            "closing connection: {} {}",
            u16::from(frame.code),
            frame.reason
        );
        let mut leftover = {
            let mut hub = self.shared.hub.borrow_mut();
            if let Ending::Unauthorized(_) = ending {
                hub.counters.auth_failures += 1;
            }
            hub.remove(self.id).unwrap_or_default()
        };
        let handshake = async {
            let drained = std::future::poll_fn(|cx| {
                if self.tungstenite_dirty {
                    match Pin::new(&mut self.ws).poll_flush(cx) {
                        Poll::Ready(Ok(())) => self.tungstenite_dirty = false,
                        Poll::Ready(Err(_)) => return Poll::Ready(false),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                match write_queue(&mut self.ws, &mut leftover, cx) {
                    Write::End(_) => Poll::Ready(false),
                    Write::Between if leftover.is_empty() => Poll::Ready(true),
                    _ => Poll::Pending,
                }
            })
            .await;
            if !drained {
                return;
            }
            if Pin::new(&mut self.ws)
                .start_send(Message::Close(Some(frame)))
                .is_err()
            {
                return;
            }
            let flushed = std::future::poll_fn(|cx| Pin::new(&mut self.ws).poll_flush(cx));
            if flushed.await.is_err() {
                return;
            }
            while let Some(Ok(_)) = self.ws.next().await {}
        };
        timeout(CLOSE_GRACE, handshake).await;
    }
}

/// Frames handed to the kernel in one vectored write, at most.
const MAX_IOVECS: usize = 64;

/// Writes `queue` to the socket under `ws` until it is empty or the socket is full.
fn write_queue(ws: &mut Ws, queue: &mut Queue, cx: &mut Context<'_>) -> Write {
    let socket = ws.get_mut();
    while !queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = queue.slices(&mut slices);
        match Pin::new(&mut *socket).poll_write_vectored(cx, &slices[..n]) {
            Poll::Ready(Ok(0)) => return Write::End(None),
            Poll::Ready(Ok(written)) => queue.advance(written),
            Poll::Ready(Err(e)) => {
                debug!("write failed: {e}");
                return Write::End(None);
            }
            Poll::Pending if queue.mid_frame() => return Write::MidFrame,
            Poll::Pending => return Write::Between,
        }
    }
    Write::Between
}

/// How to close after a WebSocket error; `None` when the socket is beyond a close frame.
fn ending_for(e: &WsError) -> Option<Ending> {
    debug!("connection error: {e}");
    match e {
        WsError::Capacity(_) => Some(Ending::TooBig),
        WsError::Protocol(_) => Some(Ending::Protocol),
        WsError::Utf8(_) => Some(Ending::BadUtf8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::server::Shared;

    /// The task of an idle connection is this future; its size is paid once per
    /// connection for the connection's whole life.
    #[test]
    fn connection_task_stays_small() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let shared = Rc::new(Shared::new(Config::default()));
        let slot = shared.claim_slot().unwrap();
        let task = serve(Rc::clone(&shared), Async::new(stream).unwrap(), slot);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 768, "connection future grew to {size} bytes");
    }

    #[test]
    fn token_from_the_query_string() {
        assert_eq!(
            token_from_query(Some("a=1&token=x.y.z")),
            Some("x.y.z".into())
        );
        assert_eq!(token_from_query(Some("token=")), Some(String::new()));
        assert_eq!(token_from_query(Some("tokens=1")), None);
        assert_eq!(token_from_query(None), None);
    }
}
