//! Pushes to devices that have no WebSocket open: the device registry
//! (`register`, `unregister`, `devices`), the route from a `push` to a uid's
//! devices, the HTTP/2 client connection and the HTTP/1.1 one (`http1`, for
//! push services that speak nothing newer), and the services themselves: APNs,
//! and for browsers Web Push (so far its cryptography: message encryption and
//! VAPID, for the sender to come). `es256` is the JWT signature both ask for.
//! Only this folder talks to a push service.

pub mod apns;
pub mod es256;
pub mod http1;
pub mod http2;
pub mod registry;
pub mod route;
pub mod webpush;

pub use registry::{DeviceToken, Registry, RegistryError};
