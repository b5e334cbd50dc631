//! The server's life: both listeners, the deadline sweeper and graceful
//! shutdown, all as tasks of one `LocalExecutor` on the calling thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;

use log::{debug, info, warn};
use smol::{Async, LocalExecutor, Timer};

use crate::config::Config;
use crate::hub::{CloseReason, Hub, Limits};
use crate::{text_port, ws};

/// State every task of the server shares. Single-threaded: `Rc` and `RefCell`,
/// and no borrow is ever held across an await.
pub(crate) struct Shared {
    pub config: Config,
    pub hub: RefCell<Hub>,
    /// WebSocket sockets open, including those still in their handshake.
    sockets: Cell<usize>,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        Shared {
            hub: RefCell::new(Hub::new(Limits::from_config(&config))),
            config,
            sockets: Cell::new(0),
        }
    }

    /// Counts one more WebSocket socket, or `None` at `--max-connections`.
    pub(crate) fn claim_slot(self: &Rc<Self>) -> Option<SocketSlot> {
        if self.sockets.get() >= self.config.max_connections {
            return None;
        }
        self.sockets.set(self.sockets.get() + 1);
        Some(SocketSlot(Rc::clone(self)))
    }
}

/// A WebSocket socket counted against `--max-connections` while it lives.
pub(crate) struct SocketSlot(Rc<Shared>);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.sockets.set(self.0.sockets.get() - 1);
    }
}

/// The two listening sockets, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub ws: TcpListener,
    pub text: TcpListener,
}

impl Listeners {
    pub fn bind(ws: SocketAddr, text: SocketAddr) -> io::Result<Listeners> {
        Ok(Listeners {
            ws: TcpListener::bind(ws)?,
            text: TcpListener::bind(text)?,
        })
    }
}

/// Runs the hub until `shutdown` completes, then closes every connection with a
/// "going away" frame and returns once they are closed or the shutdown timeout
/// has passed.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let ws_listener = Async::new(listeners.ws)?;
    let text_listener = Async::new(listeners.text)?;
    let shared = Rc::new(Shared::new(config));
    let ex = LocalExecutor::new();
    ex.run(async {
        let sweeper = ex.spawn(sweep(Rc::clone(&shared)));
        let accepting = smol::future::or(
            accept_ws(&ex, Rc::clone(&shared), ws_listener),
            accept_text(&ex, Rc::clone(&shared), text_listener),
        );
        // The accept loops never end; when shutdown wins the race they are
        // dropped, and both listeners with them.
        smol::future::or(accepting, shutdown).await;

        let n = shared.hub.borrow().len();
        info!("shutting down: closing {n} connections");
        shared.hub.borrow_mut().close_all(CloseReason::Shutdown);
        // Wait for the connection tasks themselves, not the hub entries: a task
        // leaves the hub before it writes its backlog and its close frame.
        let drained = async {
            while shared.sockets.get() > 0 {
                Timer::after(Duration::from_millis(10)).await;
            }
            true
        };
        let timed_out = async {
            Timer::after(shared.config.shutdown_timeout).await;
            false
        };
        if !smol::future::or(drained, timed_out).await {
            let left = shared.sockets.get();
            warn!("shutdown timeout: dropping {left} connections that did not close in time");
        }
        drop(sweeper);
    })
    .await;
    Ok(())
}

async fn accept_ws(ex: &LocalExecutor<'_>, shared: Rc<Shared>, listener: Async<TcpListener>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        let Some(slot) = shared.claim_slot() else {
            shared.hub.borrow_mut().counters.rejected += 1;
            debug!("refused {peer}: at --max-connections");
            continue;
        };
        // Pushes are small and latency matters; batching is done by the writer.
        if let Err(e) = stream.get_ref().set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        ex.spawn(ws::serve(Rc::clone(&shared), stream, slot))
            .detach();
    }
}

async fn accept_text(ex: &LocalExecutor<'_>, shared: Rc<Shared>, listener: Async<TcpListener>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                debug!("backend connected from {peer}");
                let _ = stream.get_ref().set_nodelay(true);
                ex.spawn(text_port::serve(Rc::clone(&shared), stream))
                    .detach();
            }
            Err(e) => accept_failed(&e).await,
        }
    }
}

/// Keeps an accept loop alive through errors. Running out of file descriptors
/// would make every retry fail at once, so that case waits a little.
async fn accept_failed(e: &io::Error) {
    warn!("accept failed: {e}");
    if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::NFILE.raw_os_error())
    {
        Timer::after(Duration::from_millis(100)).await;
    }
}

/// Applies the hub's deadlines on a tick fine enough for the shortest of them.
async fn sweep(shared: Rc<Shared>) {
    let config = &shared.config;
    let shortest = config.auth_timeout.min(config.ping_interval);
    let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        Timer::after(tick).await;
        let mut hub = shared.hub.borrow_mut();
        let now = hub.now_ms();
        hub.sweep(now);
    }
}
