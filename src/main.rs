//! The `pushhub` binary: flags → validated config → raised open-files limit →
//! bound listeners → the hub on this thread until SIGINT/SIGTERM. A command
//! first on the line (`pushhub push ...`) runs instead, in `pushhub::cli`.

use std::process::ExitCode;

use log::{error, info, warn};
use pushhub::config::{Env, Flags, RESERVED_FDS};
use pushhub::push::apns::settings;
use pushhub::push::registry::FileRegistry;
use pushhub::server::{fd_limit, signals};
use pushhub::{Listeners, cli, logger};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let flags: Flags = match cli::dispatch(&args) {
        Ok(flags) => flags,
        Err(code) => return code,
    };
    logger::init(flags.log_level);
    // Before anything slow (reading certificates, opening the registry): from
    // here on, these signals are handled instead of ending the process.
    let (shutdown, hangups) = match (signals::on_shutdown(), signals::hangups()) {
        (Ok(shutdown), Ok(hangups)) => (shutdown, hangups),
        (Err(e), _) | (_, Err(e)) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let (ws, text, metrics) = (flags.ws, flags.text, flags.metrics);
    let fd_limit = fd_limit::raise();
    let config = match flags.into_config(Env::from_process(), fd_limit) {
        Ok(config) => config,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(test) = &config.push_test {
        return cli::push_test::run(&config, test);
    }
    // Credentials are checked before anything listens, so that a bad key is a
    // configuration error (exit 2, which systemd does not restart on).
    if let Some(apns) = &config.apns
        && let Err(e) = settings::check_credentials(apns)
    {
        error!("{e}");
        return ExitCode::from(2);
    }
    if let Some(tls) = &config.tls
        && let Err(e) = tls.acceptor()
    {
        error!("{e}");
        return ExitCode::from(2);
    }
    // So is a registry that cannot be opened (a directory that does not
    // exist, a file that is not SQLite): exit 2, before listening.
    if let Some(path) = &config.apns_db
        && let Err(e) = FileRegistry::open(path)
    {
        error!("cannot open the device registry {}: {e}", path.display());
        return ExitCode::from(2);
    }
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
    let listeners = match Listeners::bind(ws, text, metrics, config.reuse_port) {
        Ok(listeners) => listeners,
        Err(e) => {
            let metrics = metrics.map_or(String::new(), |m| format!(" and {m} (metrics)"));
            error!("cannot listen on {ws} (WebSocket), {text} (text port){metrics}: {e}");
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
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    let metrics = match listeners.metrics.as_ref().map(|l| l.local_addr()) {
        Some(Ok(addr)) => format!(", metrics on http://{addr}/metrics"),
        _ => String::new(),
    };
    info!("WebSocket on {scheme}://{ws_addr}, text port on {text_addr}{metrics}");
    match smol::block_on(pushhub::run(config, listeners, shutdown, hangups)) {
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
