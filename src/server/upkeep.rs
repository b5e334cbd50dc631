//! The server's background tasks: the flusher that writes each turn's pushes,
//! the deadline sweeper, wss certificate reloads on SIGHUP, and the daily
//! reminder of the certificate's expiry.

use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use log::{error, info};
use smol::Timer;
use smol::stream::{Stream, StreamExt};

use crate::credentials::log_expiry;
use crate::shared::Shared;
use crate::ws::writer;

/// Writes what each turn of pushes queued, in one pass (see `Hub::flush`).
/// Woken by the hub when a queue goes from empty to not empty.
pub(super) async fn flush(shared: Rc<Shared>) {
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
pub(super) async fn reload_on_hangup(
    shared: Rc<Shared>,
    mut hangups: impl Stream<Item = ()> + Unpin,
) {
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
pub(super) async fn remind_expiry(shared: Rc<Shared>) {
    loop {
        Timer::after(Duration::from_secs(24 * 3600)).await;
        let expires_at = shared.hub.borrow().counters.tls_certificate_expires_at;
        if let Some(at) = expires_at {
            log_expiry("the wss certificate", at);
        }
    }
}

/// Applies the hub's deadlines on a tick fine enough for the shortest of them.
pub(super) async fn sweep(shared: Rc<Shared>) {
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
