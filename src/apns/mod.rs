//! Apple Push Notification service support.
//!
//! The device registry (`register`, `unregister`, `devices`), the sender that
//! delivers notifications over Apple's HTTP/2 provider API, the settings the
//! `--apns-*` flags make, and the route from a `push` to a uid's devices.
//! Only this module talks to Apple.

pub mod http2;
pub mod provider_token;
pub mod reason;
pub mod registry;
pub mod route;
pub mod sender;
pub mod settings;

pub use registry::{DeviceToken, Registry, RegistryError};
