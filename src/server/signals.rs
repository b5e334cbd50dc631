//! The signals the hub acts on: SIGINT and SIGTERM start a graceful shutdown,
//! SIGHUP reloads the wss certificate.
//!
//! The binary installs them as early as it can: a signal's default action
//! ends the process, so one arriving between start-up and the first poll
//! would otherwise kill the hub instead of being handled (SIGHUP from an
//! early `systemctl reload`, say).

use std::io;

use async_signal::{Signal, Signals};
use log::info;
use smol::stream::{Stream, StreamExt};

/// A future that completes at the first SIGINT or SIGTERM.
pub fn on_shutdown() -> io::Result<impl Future<Output = ()>> {
    let mut signals = Signals::new([Signal::Int, Signal::Term])?;
    Ok(async move {
        if let Some(Ok(signal)) = signals.next().await {
            info!("received {signal:?}");
        }
    })
}

/// One item per SIGHUP.
pub fn hangups() -> io::Result<impl Stream<Item = ()> + Unpin> {
    Ok(Signals::new([Signal::Hup])?.map(drop))
}
