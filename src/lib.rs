//! pushhub: a single-threaded WebSocket push hub.
//!
//! Clients connect over WebSocket and authenticate as a uid; backends write one
//! JSON request per line to the text port, and the hub delivers each push to
//! every connection of the uid. Everything runs as tasks of one `LocalExecutor`
//! on one thread.
//!
//! Map of the crate, in the order a message travels:
//! - [`cli`]: `pushhub push|broadcast|online|kick|stats|token|vapid-keygen`: a
//!   backend on the command line, reaching the text port over a socket; a
//!   token minter; a maker of Web Push keys. Anything else is the hub's flags.
//! - [`config`]: flags → validated [`Config`].
//! - [`server`]: listeners, accept loops, the flusher, the deadline sweeper,
//!   SIGHUP reloads, signals and shutdown ([`run`]).
//! - `shared`: the state every task shares (config, hub, push services, socket slots).
//! - [`text_port`]: one backend connection: line codec, requests, replies in order.
//! - [`hub`]: the connection table, uid index and outbound queues (never awaits).
//! - [`ws`]: one WebSocket client: handshakes, frames in and out, TLS, writing its queue.
//! - [`push`]: devices without a WebSocket: the registry, the route of a push,
//!   APNs, and Web Push's cryptography (the sender is to come).
//! - [`auth`]: HS256 tokens, plain uids, secrets.
//! - [`channel`]: channel names and the patterns that grant them.
//! - [`metrics`]: counters, the `stats` snapshot, Prometheus and `/healthz`.
//! - [`credentials`]: TLS identities from PEM or PKCS#12 files (wss, APNs).
//! - [`time`], [`logger`]: deadlines and clocks; leveled logging to stderr.
#![forbid(unsafe_code)]

pub mod auth;
pub mod channel;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod hub;
pub mod logger;
pub mod metrics;
pub mod push;
pub mod server;
pub(crate) mod shared;
pub mod text_port;
pub mod time;
pub mod ws;

pub use config::Config;
pub use server::{Listeners, run};
