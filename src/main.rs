//! The `pushhub` binary: flags → validated config → raised open-files limit →
//! bound listeners → the hub on this thread until SIGINT/SIGTERM.

use std::process::ExitCode;

use log::{error, info, warn};
use pushhub::config::{self, Flags, RESERVED_FDS, SECRET_ENV};
use pushhub::{Listeners, fd_limit, logger, shutdown};

fn main() -> ExitCode {
    let flags: Flags = match config::from_command_line() {
        Ok(flags) => flags,
        Err(code) => return code,
    };
    logger::init(flags.log_level);
    let (ws, text) = (flags.ws, flags.text);
    let fd_limit = fd_limit::raise();
    let config = match flags.into_config(std::env::var(SECRET_ENV).ok(), fd_limit) {
        Ok(config) => config,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    if config.auth.allow_plain_uid {
        warn!(
            "plain-uid mode: any client can claim any uid by sending it; give a token \
             secret and drop --allow-plain-uid for production"
        );
    }
    if let Some(secret) = &config.auth.secret {
        info!(
            "token mode: HS256 tokens with a {}-byte secret",
            secret.len()
        );
        if secret.len() < 32 {
            warn!("the token secret is shorter than 32 bytes; use a longer random one");
        }
    }
    info!(
        "capacity: {} WebSocket connections (open-files limit {fd_limit})",
        config.max_connections
    );
    if config.max_connections as u64 > fd_limit.saturating_sub(RESERVED_FDS) {
        warn!(
            "--max-connections {} is above what the open-files limit {fd_limit} allows; \
             accepts will fail once descriptors run out (raise LimitNOFILE)",
            config.max_connections
        );
    }
    let listeners = match Listeners::bind(ws, text) {
        Ok(listeners) => listeners,
        Err(e) => {
            error!("cannot listen on {ws} (WebSocket) and {text} (text port): {e}");
            return ExitCode::from(1);
        }
    };
    let (ws_addr, text_addr) = match (listeners.ws.local_addr(), listeners.text.local_addr()) {
        (Ok(w), Ok(t)) => (w, t),
        (Err(e), _) | (_, Err(e)) => {
            error!("cannot read the bound addresses: {e}");
            return ExitCode::from(1);
        }
    };
    let shutdown = match shutdown::on_signal() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    info!("WebSocket on ws://{ws_addr}, text port on {text_addr}");
    match smol::block_on(pushhub::run(config, listeners, shutdown)) {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}
