//! Pushes to devices that have no WebSocket open: the device registry
//! (`register`, `unregister`, `devices`), the route from a `push` to a uid's
//! devices, the HTTP/2 client connection, and the services themselves (APNs).
//! Only this folder talks to a push service.

pub mod apns;
pub mod http2;
pub mod registry;
pub mod route;

pub use registry::{DeviceToken, Registry, RegistryError};
