//! Apple Push Notification service support.
//!
//! Built so far: the device registry (wired to the text port), and the pieces of
//! the sender: the TLS + HTTP/2 connection, Apple's refusal reasons, the ES256
//! provider token and certificate credentials. The sender that puts them
//! together, and its routing from `push`, are not written yet. Only this
//! module talks to Apple.

pub mod credentials;
pub mod http2;
pub mod provider_token;
pub mod reason;
pub mod registry;

pub use registry::{DeviceToken, Registry, RegistryError};
