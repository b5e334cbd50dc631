//! Web Push, the browsers' push service: the sender that POSTs to
//! subscriptions' endpoints (`sender`), the cryptography it needs, and its
//! settings.
//!
//! A page subscribes with `pushManager.subscribe` and hands its backend a
//! `PushSubscription`: an endpoint URL at the browser's push service and two
//! keys. Sending to it takes three RFCs:
//! - RFC 8030 (the push protocol): a POST of the message to the endpoint, with
//!   a `TTL`; the push service stores it until the browser comes online.
//! - RFC 8291 (message encryption, `encrypt`): the body is encrypted to the
//!   subscription's keys, so the push service carries it without reading it.
//! - RFC 8292 (VAPID, `vapid`): each POST is signed with our own P-256 key,
//!   whose public half the page gave `pushManager.subscribe`; the push
//!   service delivers only what that key signed.
//!
//! Only `sender` talks to the network (through the shared sender), and only
//! `settings` reads a file (the key); nothing here logs keys, secrets or
//! payloads.

pub mod encrypt;
pub mod sender;
pub mod settings;
pub mod vapid;
