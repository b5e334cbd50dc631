//! Pushes to devices that have no WebSocket open: the device registry
//! (`register`, `unregister`, `devices`), the route from a `push` to a uid's
//! devices on each platform (`route`), the sender every service shares
//! (`sender`: queue, one lane per origin, retries, counters), its HTTP/2 and
//! HTTP/1.1 client connections (`http2`, `http1`), and the services
//! themselves: APNs, FCM, and for browsers Web Push. `es256` is the JWT
//! signature APNs and Web Push ask for; FCM's OAuth grant signs RS256.
//! Only this folder talks to a push service.

pub mod apns;
pub mod es256;
pub mod fcm;
pub mod http1;
pub mod http2;
pub mod registry;
pub mod route;
pub mod sender;
pub mod webpush;

pub use registry::{DeviceToken, Registry, RegistryError};
