//! Apple Push Notification service support.
//!
//! So far: the device registry, where backends record which APNs device tokens
//! belong to which uid. Sending through Apple's HTTP/2 provider API is the next
//! part; only this module will talk to Apple.

pub mod registry;

pub use registry::{DeviceToken, Registry, RegistryError};
