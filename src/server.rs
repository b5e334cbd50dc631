//! The server's life: the three listeners (WebSocket, text port, metrics), the
//! flusher, the deadline sweeper, certificate reloads and reminders, and
//! graceful shutdown, all as tasks of one `LocalExecutor` on the calling
//! thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use async_native_tls::TlsAcceptor;
use log::{debug, error, info, warn};
use smol::channel::Sender;
use smol::stream::{Stream, StreamExt};
use smol::{Async, LocalExecutor, Timer};

use crate::apns::sender::Sender as ApnsSender;
use crate::apns::{self, DeviceToken, Registry};
use crate::config::Config;
use crate::credentials::log_expiry;
use crate::hub::{CloseReason, Hub, Limits};
use crate::tls::Acceptor;
use crate::{metrics_http, text_port, timeout, writer, ws};

/// State every task of the server shares. Single-threaded: `Rc` and `RefCell`,
/// and no borrow is ever held across an await.
pub(crate) struct Shared {
    pub config: Config,
    pub hub: RefCell<Hub>,
    /// The APNs device registry, with `--apns-db`.
    pub registry: Option<Rc<Registry>>,
    /// The APNs sender, with the APNs flags.
    pub apns: Option<Rc<ApnsSender>>,
    /// wss: the acceptor new connections get (replaced on SIGHUP).
    pub tls: RefCell<Option<TlsAcceptor>>,
    /// WebSocket sockets open, including those still in their handshake.
    sockets: Cell<usize>,
    /// The same, per client address, when `--max-connections-per-ip` is set.
    per_ip: RefCell<HashMap<IpAddr, usize>>,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        registry: Option<Rc<Registry>>,
        apns: Option<Rc<ApnsSender>>,
    ) -> Shared {
        Shared {
            hub: RefCell::new(Hub::new(Limits::from_config(&config))),
            registry,
            apns,
            tls: RefCell::new(None),
            config,
            sockets: Cell::new(0),
            per_ip: RefCell::new(HashMap::new()),
        }
    }

    /// Puts `built` in use for new wss connections (at start and on SIGHUP),
    /// and publishes and logs when its certificate expires.
    fn install(&self, built: Acceptor) {
        *self.tls.borrow_mut() = Some(built.acceptor);
        self.hub.borrow_mut().counters.tls_certificate_expires_at = Some(built.expires_at);
        log_expiry("the wss certificate", built.expires_at);
    }

    /// Counts one more WebSocket socket from `ip`, or says which limit it hits.
    pub(crate) fn claim_slot(self: &Rc<Self>, ip: IpAddr) -> Result<SocketSlot, Refusal> {
        if self.sockets.get() >= self.config.max_connections {
            return Err(Refusal::Full);
        }
        let counted = match self.config.max_connections_per_ip {
            Some(limit) => {
                let mut per_ip = self.per_ip.borrow_mut();
                let n = per_ip.entry(ip).or_insert(0);
                if *n >= limit {
                    return Err(Refusal::PerIp);
                }
                *n += 1;
                Some(ip)
            }
            None => None,
        };
        self.sockets.set(self.sockets.get() + 1);
        Ok(SocketSlot {
            shared: Rc::clone(self),
            ip: counted,
        })
    }
}

/// Why an accepted socket is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// At `--max-connections`.
    Full,
    /// At `--max-connections-per-ip` for its address.
    PerIp,
}

/// A WebSocket socket counted against `--max-connections` while it lives.
pub(crate) struct SocketSlot {
    shared: Rc<Shared>,
    /// The address it counts against, when addresses are counted.
    ip: Option<IpAddr>,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.sockets.set(shared.sockets.get() - 1);
        if let Some(ip) = self.ip
            && let Ok(mut per_ip) = shared.per_ip.try_borrow_mut()
            && let Some(n) = per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// The two listening sockets, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub ws: TcpListener,
    pub text: TcpListener,
    /// The monitoring endpoint (`/metrics`, `/healthz`), if any.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds both addresses with a listen backlog of [`BACKLOG`].
    pub fn bind(
        ws: SocketAddr,
        text: SocketAddr,
        metrics: Option<SocketAddr>,
    ) -> io::Result<Listeners> {
        Ok(Listeners {
            ws: listen(ws)?,
            text: listen(text)?,
            metrics: metrics.map(listen).transpose()?,
        })
    }
}

/// Connections the kernel holds for us before we accept them. std's listeners
/// use 128, and a burst of reconnecting clients (after a restart, say) then
/// overflows it: the dropped SYNs are retried only a second later. The kernel
/// caps this at `net.core.somaxconn`.
pub const BACKLOG: i32 = 4096;

/// A listening TCP socket with [`BACKLOG`] and `SO_REUSEADDR` (so that a
/// restart does not wait for the previous run's connections in TIME_WAIT).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, BACKLOG)?;
    Ok(TcpListener::from(fd))
}

/// What the accept tasks and the signal hand to the main loop.
enum Event {
    Ws(Async<TcpStream>, SocketSlot),
    Text(Async<TcpStream>),
    Metrics(Async<TcpStream>),
    Shutdown,
}

/// Runs the hub until `shutdown` completes, then closes every connection with a
/// "going away" frame and returns once they are closed or the shutdown timeout
/// has passed. Each item of `hangups` reloads the wss certificate.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    hangups: impl Stream<Item = ()> + Unpin,
) -> io::Result<()> {
    let ws_listener = Async::new(listeners.ws)?;
    let text_listener = Async::new(listeners.text)?;
    let metrics_listener = listeners.metrics.map(Async::new).transpose()?;
    let registry = match &config.apns_db {
        Some(path) => {
            let registry = Registry::open(path).map_err(io::Error::other)?;
            info!("device registry: {}", path.display());
            Some(Rc::new(registry))
        }
        None => None,
    };
    let apns = match (&config.apns, &registry) {
        (Some(settings), Some(registry)) => {
            let registry = Rc::clone(registry);
            // Apple says the token is gone (the app was removed): forget it.
            let forget = move |token: &DeviceToken| match registry.forget(token) {
                Ok(_) => info!("APNs: device {} is gone; removed", token.as_str()),
                Err(e) => warn!("APNs: device {} is gone, but {e}", token.as_str()),
            };
            let sender =
                apns::settings::build_sender(settings, forget).map_err(io::Error::other)?;
            info!(
                "APNs: {}:{} for {}",
                settings.endpoint.host, settings.endpoint.port, settings.topic
            );
            Some(Rc::new(sender))
        }
        _ => None,
    };
    let tls = match &config.tls {
        Some(settings) => {
            let built = settings.acceptor().map_err(io::Error::other)?;
            info!("wss: certificate from {}", settings.describe());
            Some(built)
        }
        None => None,
    };
    let shared = Rc::new(Shared::new(config, registry, apns.clone()));
    if let Some(built) = tls {
        shared.install(built);
    }
    let (events, incoming) = smol::channel::unbounded();
    let ex = LocalExecutor::new();
    ex.run(async {
        // Everything that waits on a socket or a signal is a task of its own.
        // The future given to `run` is polled whenever the executor wakes, so
        // it only waits on this channel, which costs no system call to poll.
        let sweeper = ex.spawn(sweep(Rc::clone(&shared)));
        let flusher = ex.spawn(flush(Rc::clone(&shared)));
        let apns_sender = apns.map(|sender| ex.spawn(sender.run()));
        let reloader = ex.spawn(reload_on_hangup(Rc::clone(&shared), hangups));
        let reminder = ex.spawn(remind_expiry(Rc::clone(&shared)));
        let accept_ws = ex.spawn(accept_ws(Rc::clone(&shared), ws_listener, events.clone()));
        let accept_text = ex.spawn(accept_text(text_listener, events.clone()));
        let accept_metrics =
            metrics_listener.map(|listener| ex.spawn(accept_metrics(listener, events.clone())));
        let signal = ex.spawn(async move {
            shutdown.await;
            let _ = events.send(Event::Shutdown).await;
        });
        while let Ok(event) = incoming.recv().await {
            match event {
                Event::Ws(stream, slot) => {
                    ex.spawn(ws::serve(Rc::clone(&shared), stream, slot))
                        .detach();
                }
                Event::Text(stream) => {
                    ex.spawn(text_port::serve(Rc::clone(&shared), stream))
                        .detach();
                }
                Event::Metrics(stream) => {
                    ex.spawn(metrics_http::serve(Rc::clone(&shared), stream))
                        .detach();
                }
                Event::Shutdown => break,
            }
        }

        // Dropping the accept tasks closes both listeners.
        drop((accept_ws, accept_text, accept_metrics, signal));
        // Sockets accepted but not yet served are closed here.
        while let Ok(event) = incoming.try_recv() {
            drop(event);
        }
        let n = shared.hub.borrow().len();
        info!("shutting down: closing {n} connections");
        shared.hub.borrow_mut().close_all(CloseReason::Shutdown);
        // Wait for the connection tasks themselves, not the hub entries: a task
        // leaves the hub before it writes its backlog and its close frame.
        let drained = async {
            while shared.sockets.get() > 0 {
                Timer::after(Duration::from_millis(10)).await;
            }
        };
        if timeout(shared.config.shutdown_timeout, drained)
            .await
            .is_none()
        {
            let left = shared.sockets.get();
            warn!("shutdown timeout: dropping {left} connections that did not close in time");
        }
        drop((sweeper, flusher, apns_sender, reloader, reminder));
    })
    .await;
    Ok(())
}

async fn accept_ws(shared: Rc<Shared>, listener: Async<TcpListener>, events: Sender<Event>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        let slot = match shared.claim_slot(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                let mut hub = shared.hub.borrow_mut();
                match refusal {
                    Refusal::Full => hub.counters.rejected += 1,
                    Refusal::PerIp => hub.counters.rejected_per_ip += 1,
                }
                debug!("refused {peer}: {refusal:?}");
                continue;
            }
        };
        // Pushes are small and latency matters; batching is done by the writer.
        if let Err(e) = stream.get_ref().set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        if events.send(Event::Ws(stream, slot)).await.is_err() {
            return;
        }
    }
}

async fn accept_text(listener: Async<TcpListener>, events: Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                debug!("backend connected from {peer}");
                let _ = stream.get_ref().set_nodelay(true);
                if events.send(Event::Text(stream)).await.is_err() {
                    return;
                }
            }
            Err(e) => accept_failed(&e).await,
        }
    }
}

async fn accept_metrics(listener: Async<TcpListener>, events: Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if events.send(Event::Metrics(stream)).await.is_err() {
                    return;
                }
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

/// Writes what each turn of pushes queued, in one pass (see `Hub::flush`).
/// Woken by the hub when a queue goes from empty to not empty.
async fn flush(shared: Rc<Shared>) {
    std::future::poll_fn(|cx| {
        let mut hub = shared.hub.borrow_mut();
        hub.flush(|socket, queue| writer::write_now(socket.get_ref(), queue).unwrap_or(false));
        hub.set_flusher(cx.waker());
        Poll::<()>::Pending
    })
    .await
}

/// A SIGHUP re-reads the wss certificate and key. New connections get the new
/// ones; open connections keep theirs. If the files are bad, the old ones stay.
/// (The files are read and parsed on this thread: a few milliseconds, once.)
async fn reload_on_hangup(shared: Rc<Shared>, mut hangups: impl Stream<Item = ()> + Unpin) {
    while hangups.next().await.is_some() {
        let Some(settings) = &shared.config.tls else {
            info!("SIGHUP: nothing to reload (no --tls-cert or --tls-pkcs12)");
            continue;
        };
        match settings.acceptor() {
            Ok(built) => {
                shared.hub.borrow_mut().counters.tls_reloads += 1;
                info!(
                    "SIGHUP: reloaded the certificate from {}",
                    settings.describe()
                );
                shared.install(built);
            }
            Err(e) => {
                shared.hub.borrow_mut().counters.tls_reload_failures += 1;
                error!("SIGHUP: {e}; still serving the previous certificate");
            }
        }
    }
}

/// Once a day, says in the log how long the wss certificate has left: a hub
/// runs for months, and a renewal that silently failed shows here first.
async fn remind_expiry(shared: Rc<Shared>) {
    loop {
        Timer::after(Duration::from_secs(24 * 3600)).await;
        let expires_at = shared.hub.borrow().counters.tls_certificate_expires_at;
        if let Some(at) = expires_at {
            log_expiry("the wss certificate", at);
        }
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
