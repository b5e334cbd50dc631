//! Pushes to devices that have no WebSocket open: the device registry
//! (`register`, `unregister`, `devices`), the route from a `push` to a uid's
//! devices, the HTTP/2 client connection, and the services themselves (APNs).
//! `es256` is the JWT signature push services ask for.
//! Only this folder talks to a push service.

pub mod apns;
pub mod es256;
pub mod http2;
pub mod registry;
pub mod route;

pub use registry::{DeviceToken, Registry, RegistryError};
