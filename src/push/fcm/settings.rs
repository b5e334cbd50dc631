//! The FCM settings the `--fcm-*` flags make, and the [`Sender`] they build.
//!
//! The service-account file is read when the hub starts (`config.rs` calls
//! [`from_flags`]), so that a bad one stops the start with a message that
//! names it; it is read again when the sender is built.

use std::path::PathBuf;

use super::credentials::ServiceAccount;
use super::sender::{Endpoints, Fcm, Message, PRODUCTION_ENDPOINT, Sender};
use crate::push::registry::FcmToken;
use crate::push::sender;
use crate::push::sender::origin::{Origin, tls_connector};

/// Everything the FCM flags say.
#[derive(Debug, Clone)]
pub struct FcmSettings {
    /// The service account's JSON key file.
    pub credentials_file: PathBuf,
    /// Read from the file, for the logs.
    pub project_id: String,
    pub endpoint: Origin,
    /// The OAuth token endpoint, if not the file's `token_uri`.
    pub token_endpoint: Option<String>,
    /// A CA to trust besides the system's (for the two endpoints).
    pub ca_file: Option<PathBuf>,
}

/// The FCM flags, as given.
#[derive(Debug, Default)]
pub struct FcmFlags {
    pub credentials_file: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// The settings the flags make, or `None` without `--fcm-credentials-file`.
pub fn from_flags(flags: FcmFlags) -> Result<Option<FcmSettings>, String> {
    let Some(credentials_file) = flags.credentials_file else {
        for (given, flag) in [
            (flags.endpoint.is_some(), "--fcm-endpoint"),
            (flags.token_endpoint.is_some(), "--fcm-token-endpoint"),
            (flags.ca_file.is_some(), "--fcm-ca-file"),
        ] {
            if given {
                return Err(format!(
                    "{flag} needs --fcm-credentials-file: the service account's JSON key"
                ));
            }
        }
        return Ok(None);
    };
    let account = ServiceAccount::load(&credentials_file).map_err(|e| format!("FCM: {e}"))?;
    let endpoint = Origin::parse(flags.endpoint.as_deref().unwrap_or(PRODUCTION_ENDPOINT))
        .map_err(|e| format!("--fcm-endpoint {e}"))?;
    if let Some(url) = &flags.token_endpoint {
        Origin::split_url(url).map_err(|e| format!("--fcm-token-endpoint {e}"))?;
    }
    Ok(Some(FcmSettings {
        credentials_file,
        project_id: account.project_id,
        endpoint,
        token_endpoint: flags.token_endpoint,
        ca_file: flags.ca_file,
    }))
}

/// Builds the sender. `on_token_gone` is called for each registration token
/// FCM says is no longer valid.
pub fn build_sender(
    settings: &FcmSettings,
    on_token_gone: impl Fn(&FcmToken) + 'static,
) -> Result<Sender, String> {
    let account =
        ServiceAccount::load(&settings.credentials_file).map_err(|e| format!("FCM: {e}"))?;
    let ca = settings.ca_file.as_deref();
    let tls = tls_connector(&["h2"], ca)?;
    let tls_http1 = tls_connector(&["http/1.1"], ca)?;
    let endpoints = Endpoints {
        send: settings.endpoint.clone(),
        token: settings
            .token_endpoint
            .clone()
            .unwrap_or_else(|| account.token_uri.clone()),
    };
    // Its own connectors for the token endpoint: a connector is a builder.
    let fcm = Fcm::new(account, endpoints, tls_connector(&["h2"], ca)?, tls_http1)?;
    let gone = move |message: &Message| on_token_gone(&message.token);
    Ok(sender::Sender::for_service(
        sender::Config::default(),
        fcm,
        tls,
        None,
        gone,
    ))
}
