//! Apple Push Notification service support.
//!
//! Built so far: the device registry (wired to the text port), and the sender
//! with its parts: the TLS + HTTP/2 connection, Apple's refusal reasons, the
//! ES256 provider token and certificate credentials. Not yet: the flags that
//! configure the sender, and the routing of `push` to it. Only this module
//! talks to Apple.

pub mod credentials;
pub mod http2;
pub mod provider_token;
pub mod reason;
pub mod registry;
pub mod sender;

pub use registry::{DeviceToken, Registry, RegistryError};
