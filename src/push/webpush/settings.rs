//! The Web Push settings the flags make (`--vapid-key-file`,
//! `--vapid-subject`, `--webpush-ca-file`), and the [`Sender`] they build.
//!
//! The key is read when the hub starts, so that a bad one stops the start
//! (exit 2) with a message that names the file; it is read again when the
//! sender is built.

use std::path::{Path, PathBuf};

use super::sender::{Message, Sender, WebPush};
use super::vapid::{Subject, VapidKey, VapidSigner};
use crate::push::registry::Subscription;
use crate::push::sender::origin::tls_connector;
use crate::push::sender::{self};

#[derive(Debug, Clone)]
pub struct VapidSettings {
    pub key_file: PathBuf,
    /// The public key, base64url, as pages need it.
    pub public_key: String,
    pub subject: Subject,
    /// A CA to trust besides the system's, for push services' endpoints.
    pub ca_file: Option<PathBuf>,
}

/// The settings the flags make, or `None` without a key.
pub fn from_flags(
    key_file: Option<PathBuf>,
    subject: Option<&str>,
    ca_file: Option<PathBuf>,
) -> Result<Option<VapidSettings>, String> {
    let (key_file, subject) = match (key_file, subject) {
        (None, None) if ca_file.is_some() => {
            return Err("--webpush-ca-file needs --vapid-key-file and --vapid-subject".into());
        }
        (None, None) => return Ok(None),
        (Some(file), Some(subject)) => (file, subject),
        (Some(_), None) => {
            return Err(
                "--vapid-key-file needs --vapid-subject mailto:ADDRESS (or an https: URL): \
                 push services want a contact for the messages they carry"
                    .into(),
            );
        }
        (None, Some(_)) => return Err("--vapid-subject needs --vapid-key-file".into()),
    };
    let subject = Subject::parse(subject).map_err(|e| format!("--vapid-subject: {e}"))?;
    let key = load_key(&key_file)?;
    Ok(Some(VapidSettings {
        key_file,
        public_key: key.public_key_base64url(),
        subject,
        ca_file,
    }))
}

fn load_key(path: &Path) -> Result<VapidKey, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("--vapid-key-file {}: {e}", path.display()))?;
    VapidKey::from_pem(&pem).map_err(|e| format!("--vapid-key-file {}: {e}", path.display()))
}

/// Builds the sender. `on_gone` is called for each subscription a push
/// service says is gone (404, 410).
pub fn build_sender(
    settings: &VapidSettings,
    on_gone: impl Fn(&Subscription) + 'static,
) -> Result<Sender, String> {
    let key = load_key(&settings.key_file)?;
    let ca = settings.ca_file.as_deref();
    let tls = tls_connector(&["h2"], ca)?;
    let tls_http1 = tls_connector(&["http/1.1"], ca)?;
    let service = WebPush::new(VapidSigner::new(key, settings.subject.clone()));
    let gone = move |message: &Message| on_gone(&message.subscription);
    let config = sender::Config {
        // A quarter of the queue per push service: one that stalls leaves
        // the rest to the others.
        max_lane_queue: sender::Config::default().max_queue / 4,
        ..sender::Config::default()
    };
    Ok(sender::Sender::for_service(
        config,
        service,
        tls,
        Some(tls_http1),
        gone,
    ))
}
