//! Apple Push Notification service: the sender that delivers notifications
//! over Apple's HTTP/2 provider API, Apple's refusal reasons, the provider
//! token, and the settings the `--apns-*` flags make. Only this folder knows
//! Apple's API.

pub mod provider_token;
pub mod reason;
pub mod sender;
pub mod settings;
