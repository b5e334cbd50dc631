//! Turns SIGINT and SIGTERM into the future that starts a graceful shutdown.

use std::io;

use async_signal::{Signal, Signals};
use log::info;
use smol::stream::StreamExt;

/// Registers the handlers now, so that a signal arriving before the first poll
/// is not lost, and returns a future that completes at the first of them.
pub fn on_signal() -> io::Result<impl std::future::Future<Output = ()>> {
    let mut signals = Signals::new([Signal::Int, Signal::Term])?;
    Ok(async move {
        if let Some(Ok(signal)) = signals.next().await {
            info!("received {signal:?}");
        }
    })
}
