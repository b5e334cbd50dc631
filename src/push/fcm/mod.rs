//! Firebase Cloud Messaging, HTTP v1 API.
//!
//! Sending takes two HTTPS endpoints. Google's OAuth token endpoint trades a
//! JWT signed with the service account's key for an access token good for an
//! hour; FCM's `POST /v1/projects/<project_id>/messages:send` takes one
//! message to one registration token, with `authorization: Bearer <token>`.
//! - `credentials`: the service-account JSON key file (project, account, key).
//! - `oauth`: the signed JWT, the token request and response, and the cache
//!   that says when to fetch a new access token.
//! - `reason`: FCM's error answers, each sorted once into what to do: remove
//!   the registration token, retry, fix our credentials, or drop the message.
//! - `sender`: FCM as a service of the shared sender, fetching and renewing
//!   its access token; `settings`: the `--fcm-*` flags and the sender they build.
//!
//! Nothing here logs keys, assertions or access tokens.

pub mod credentials;
pub mod oauth;
pub mod reason;
pub mod sender;
pub mod settings;
