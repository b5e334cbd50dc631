//! pushhub: a single-threaded WebSocket push hub.
//!
//! Clients connect over WebSocket and authenticate as a uid; backends write one
//! JSON request per line to the text port, and the hub delivers each push to
//! every connection of the uid. Everything runs as tasks of one `LocalExecutor`
//! on one thread.
//!
//! Map of the crate:
//! - [`config`]: flags → validated [`Config`].
//! - [`server`]: listeners, deadline sweeper, SIGHUP reloads and shutdown ([`run`]).
//! - `ws`: one WebSocket connection's task: handshakes, authentication, reading, writing, closing.
//! - `link`: a connection's byte stream after the handshake, plain or TLS.
//! - [`tls`]: wss settings and the acceptor (rebuilt on SIGHUP).
//! - [`credentials`]: TLS identities from PEM or PKCS#12 files (wss, APNs).
//! - [`handshake`]: the HTTP upgrade (parsing is pure; `accept` does the I/O).
//! - [`inbound`]: the decoder of client frames (no I/O).
//! - [`text_port`]: one backend connection, and [`text_port::handle_line`].
//! - [`protocol`]: the text port's line codec, requests and replies (no I/O).
//! - [`replies`]: a backend connection's replies in order, some waiting for APNs.
//! - [`hub`]: the connection table, uid index and outbound queues (never awaits).
//! - [`queue`]: one connection's queue of shared frames.
//! - [`writer`]: writing a queue to its socket, from the flusher or the connection's task.
//! - [`frame`]: server frames, encoded once per push and shared by every receiver.
//! - [`apns`]: APNs: the device registry, the sender, the settings, the route of a push.
//! - [`auth`]: HS256 tokens and plain uids.
//! - [`metrics`]: counters, the `stats` snapshot and its Prometheus form.
//! - [`metrics_http`]: the `/metrics` and `/healthz` endpoint.
//! - [`logger`]: leveled logging to stderr.
//! - [`signals`]: SIGINT/SIGTERM → the shutdown future; SIGHUP → reloads.
//! - [`fd_limit`]: raising the open-files limit.
#![forbid(unsafe_code)]

pub mod apns;
pub mod auth;
pub mod config;
pub mod credentials;
pub mod fd_limit;
pub mod frame;
pub mod handshake;
pub mod hub;
pub mod inbound;
mod link;
pub mod logger;
pub mod metrics;
pub mod metrics_http;
pub mod protocol;
pub mod queue;
pub mod replies;
pub mod server;
pub mod signals;
pub mod text_port;
pub mod tls;
pub mod writer;
mod ws;

pub use config::Config;
pub use server::{Listeners, run};

/// Runs `future` for at most `limit`: `None` if the time ran out first.
pub async fn timeout<T>(
    limit: std::time::Duration,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    smol::future::or(async { Some(future.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}
