//! Pushes to devices that have no WebSocket open: the device registry
//! (`register`, `unregister`, `devices`), the route from a `push` to a uid's
//! devices, the HTTP/2 client connection, and the services themselves: APNs,
//! FCM (so far its service account, OAuth access token and error reasons),
//! and for browsers Web Push (so far its cryptography: message encryption and
//! VAPID, for the sender to come). `es256` is the JWT signature APNs and Web
//! Push ask for; FCM's OAuth grant signs RS256.
//! Only this folder talks to a push service.

pub mod apns;
pub mod es256;
pub mod fcm;
pub mod http2;
pub mod registry;
pub mod route;
pub mod webpush;

pub use registry::{DeviceToken, Registry, RegistryError};
