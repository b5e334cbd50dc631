//! The server's life: accepting on the three listeners (WebSocket, text port,
//! metrics), the background tasks (`upkeep`), and graceful shutdown, all as
//! tasks of one `LocalExecutor` on the calling thread.

pub mod fd_limit;
mod listen;
pub mod signals;
mod upkeep;

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use log::{debug, info, warn};
use smol::channel::Sender;
use smol::stream::Stream;
use smol::{Async, LocalExecutor, Timer};

pub use listen::{BACKLOG, Listeners};

use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::hub::CloseReason;
use crate::push::registry::{Device, FcmToken, FileRegistry, RedisRegistry, Subscription};
use crate::push::{self, DeviceToken, Registry};
use crate::shared::{PushSenders, Refusal, Shared, SocketSlot};
use crate::time::timeout;
use crate::{metrics, text_port, ws};

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
    mut config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    hangups: impl Stream<Item = ()> + Unpin,
) -> io::Result<()> {
    // Pushes are small and latency matters (the writer does the batching):
    // no Nagle. Set on the listeners, as Linux copies it to every socket
    // they accept, which spares a system call per connection.
    for listener in [&listeners.ws, &listeners.text] {
        rustix::net::sockopt::set_tcp_nodelay(listener, true)?;
    }
    let ws_listener = Async::new(listeners.ws)?;
    let text_listener = Async::new(listeners.text)?;
    let metrics_listener = listeners.metrics.map(Async::new).transpose()?;
    let cluster = config.cluster.take().map(|settings| {
        info!(
            "cluster: node {} over Redis at {} (prefix {})",
            settings.node, settings.url, settings.prefix
        );
        Rc::new(Cluster::new(settings, text_port::routed::execute))
    });
    // A cluster shares one registry, in Redis; a hub alone has its file.
    let registry = match (&cluster, &config.apns_db) {
        (Some(cluster), _) => Some(Rc::new(Registry::Redis(RedisRegistry::new(Rc::clone(
            cluster,
        ))))),
        (None, Some(path)) => {
            let file = FileRegistry::open(path).map_err(io::Error::other)?;
            info!("device registry: {}", path.display());
            Some(Rc::new(Registry::File(file)))
        }
        (None, None) => None,
    };
    let push = push_senders(&config, registry.as_ref())?;
    let tls = match &config.tls {
        Some(settings) => {
            let built = settings.acceptor().map_err(io::Error::other)?;
            info!("wss: certificate from {}", settings.describe());
            Some(built)
        }
        None => None,
    };
    let shared = Rc::new(Shared::new(config, registry, push.clone(), cluster));
    if let Some(built) = tls {
        shared.install(built);
    }
    let (events, incoming) = smol::channel::unbounded();
    let ex = LocalExecutor::new();
    ex.run(async {
        // Everything that waits on a socket or a signal is a task of its own.
        // The future given to `run` is polled whenever the executor wakes, so
        // it only waits on this channel, which costs no system call to poll.
        let sweeper = ex.spawn(upkeep::sweep(Rc::clone(&shared)));
        let flusher = ex.spawn(upkeep::flush(Rc::clone(&shared)));
        let senders = (
            push.apns.map(|sender| ex.spawn(sender.run())),
            push.fcm.map(|sender| ex.spawn(sender.run())),
            push.webpush.map(|sender| ex.spawn(sender.run())),
        );
        let reloader = ex.spawn(upkeep::reload_on_hangup(Rc::clone(&shared), hangups));
        let reminder = ex.spawn(upkeep::remind_expiry(Rc::clone(&shared)));
        let redis = ex.spawn(cluster::link::run(Rc::clone(&shared)));
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
                    ex.spawn(metrics::http::serve(Rc::clone(&shared), stream))
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
            while shared.sockets_open() > 0 {
                Timer::after(Duration::from_millis(10)).await;
            }
        };
        if timeout(shared.config.shutdown_timeout, drained)
            .await
            .is_none()
        {
            let left = shared.sockets_open();
            warn!("shutdown timeout: dropping {left} connections that did not close in time");
        }
        drop((sweeper, flusher, senders, reloader, reminder, redis));
    })
    .await;
    Ok(())
}

/// Accepts a connection, non-blocking from the start (`accept4` with
/// `SOCK_NONBLOCK`: async-io's own accept sets it with another system call).
async fn accept(listener: &Async<TcpListener>) -> io::Result<(Async<TcpStream>, SocketAddr)> {
    use rustix::net::{SocketFlags, acceptfrom_with};
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let (fd, peer) = listener
        .read_with(|l| Ok(acceptfrom_with(l, flags)?))
        .await?;
    let peer = peer
        .and_then(|addr| SocketAddr::try_from(addr).ok())
        .ok_or_else(|| io::Error::other("accepted a socket with no IP peer address"))?;
    Ok((Async::new_nonblocking(TcpStream::from(fd))?, peer))
}

async fn accept_ws(shared: Rc<Shared>, listener: Async<TcpListener>, events: Sender<Event>) {
    loop {
        let (stream, peer) = match accept(&listener).await {
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
        if events.send(Event::Ws(stream, slot)).await.is_err() {
            return;
        }
    }
}

async fn accept_text(listener: Async<TcpListener>, events: Sender<Event>) {
    loop {
        match accept(&listener).await {
            Ok((stream, peer)) => {
                debug!("backend connected from {peer}");
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

/// The push services' senders the flags ask for; each forgets in the
/// registry the devices its service says are gone.
fn push_senders(config: &Config, registry: Option<&Rc<Registry>>) -> io::Result<PushSenders> {
    let mut senders = PushSenders::default();
    // Without a registry there are no devices to send to (refused by the
    // flags, but for a one-off test).
    let Some(registry) = registry else {
        return Ok(senders);
    };
    if let Some(settings) = &config.apns {
        let registry = Rc::clone(registry);
        // Apple says the token is gone (the app was removed): forget it.
        let forget = move |token: &DeviceToken| registry.forget(&Device::Apns(token.clone()));
        let sender =
            push::apns::settings::build_sender(settings, forget).map_err(io::Error::other)?;
        info!(
            "APNs: {}:{} for {}",
            settings.endpoint.host, settings.endpoint.port, settings.topic
        );
        senders.apns = Some(Rc::new(sender));
    }
    if let Some(settings) = &config.fcm {
        let registry = Rc::clone(registry);
        let forget = move |token: &FcmToken| registry.forget(&Device::Fcm(token.clone()));
        let sender =
            push::fcm::settings::build_sender(settings, forget).map_err(io::Error::other)?;
        info!(
            "FCM: {} for project {}",
            settings.endpoint, settings.project_id
        );
        senders.fcm = Some(Rc::new(sender));
    }
    if let Some(settings) = &config.vapid {
        let registry = Rc::clone(registry);
        let forget = move |subscription: &Subscription| {
            registry.forget(&Device::WebPush(subscription.clone()));
        };
        let sender =
            push::webpush::settings::build_sender(settings, forget).map_err(io::Error::other)?;
        info!("Web Push: VAPID key {}", settings.public_key);
        senders.webpush = Some(Rc::new(sender));
    }
    Ok(senders)
}
