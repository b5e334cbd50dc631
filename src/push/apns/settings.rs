//! The APNs settings the flags make, and the [`Sender`] they build: endpoint,
//! credentials, the CA to trust.
//!
//! Flags are checked when the hub starts (`config.rs` calls [`from_flags`]);
//! files are read and the endpoint resolved when the sender is built, so that
//! a mistake stops the start with a message that names the file.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use super::provider_token::ProviderToken;
use super::sender::{self, Auth, Sender};
use crate::auth::Secret;
use crate::credentials::{load_identity, log_expiry};
use crate::push::registry::DeviceToken;
use crate::push::sender::origin::{Origin, tls_connector};

pub const PRODUCTION_HOST: &str = "api.push.apple.com";
pub const SANDBOX_HOST: &str = "api.sandbox.push.apple.com";

/// How pushhub proves to Apple that it may push for the app.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A `.p8` auth key, its id and the team id (token-based authentication).
    Token {
        key_file: PathBuf,
        key_id: String,
        team_id: String,
    },
    /// A client certificate: PKCS#12, or PEM with its key.
    Certificate {
        file: PathBuf,
        password: Option<Secret>,
    },
}

/// Where APNs is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `https://host[:port]`, port 443 by default.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let origin = Origin::parse(url).map_err(|e| format!("--apns-endpoint {e}"))?;
        Ok(Endpoint {
            host: origin.host,
            port: origin.port,
        })
    }
}

/// Everything the APNs flags say.
#[derive(Debug, Clone)]
pub struct ApnsSettings {
    /// The app's bundle id, sent as `apns-topic`.
    pub topic: String,
    pub credentials: Credentials,
    pub endpoint: Endpoint,
    /// A CA to trust besides the system's (for `--apns-endpoint`).
    pub ca_file: Option<PathBuf>,
}

/// The APNs flags, as given.
#[derive(Debug, Default)]
pub struct ApnsFlags {
    pub key_file: Option<PathBuf>,
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub topic: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub cert_password_file: Option<PathBuf>,
    pub sandbox: bool,
    pub endpoint: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// Checks the APNs flags. `None` when none is given (no APNs);
/// `env_password` is `PUSHHUB_APNS_CERT_PASSWORD`.
pub fn from_flags(
    flags: ApnsFlags,
    env_password: Option<String>,
) -> Result<Option<ApnsSettings>, String> {
    let any = flags.key_file.is_some()
        || flags.key_id.is_some()
        || flags.team_id.is_some()
        || flags.topic.is_some()
        || flags.cert_file.is_some()
        || flags.cert_password_file.is_some()
        || flags.sandbox
        || flags.endpoint.is_some()
        || flags.ca_file.is_some();
    if !any {
        return Ok(None);
    }
    let topic = flags
        .topic
        .ok_or("APNs needs --apns-topic: the app's bundle id, e.g. com.example.app")?;
    let credentials = match (flags.key_file, flags.cert_file) {
        (Some(_), Some(_)) => {
            return Err("give --apns-key-file (token auth) or --apns-cert-file \
                        (certificate auth), not both"
                .into());
        }
        (None, None) => {
            return Err(
                "APNs needs credentials: --apns-key-file with --apns-key-id and \
                        --apns-team-id, or --apns-cert-file"
                    .into(),
            );
        }
        (Some(key_file), None) => Credentials::Token {
            key_file,
            key_id: flags
                .key_id
                .ok_or("--apns-key-file needs --apns-key-id (the key's 10-character id)")?,
            team_id: flags
                .team_id
                .ok_or("--apns-key-file needs --apns-team-id (your 10-character team id)")?,
        },
        (None, Some(file)) => {
            let password = Secret::password(flags.cert_password_file.as_deref(), env_password)?;
            Credentials::Certificate { file, password }
        }
    };
    let endpoint = match (flags.endpoint, flags.sandbox) {
        (Some(_), true) => return Err("give --apns-endpoint or --apns-sandbox, not both".into()),
        (Some(url), false) => Endpoint::parse(&url)?,
        (None, sandbox) => Endpoint {
            host: if sandbox {
                SANDBOX_HOST
            } else {
                PRODUCTION_HOST
            }
            .to_string(),
            port: 443,
        },
    };
    Ok(Some(ApnsSettings {
        topic,
        credentials,
        endpoint,
        ca_file: flags.ca_file,
    }))
}

/// Loads the credentials once, to find a bad key, certificate or password
/// before the hub starts listening (building the whole sender would also set
/// up TLS, which costs memory for nothing at that point).
pub fn check_credentials(settings: &ApnsSettings) -> Result<(), String> {
    match &settings.credentials {
        Credentials::Token {
            key_file,
            key_id,
            team_id,
        } => ProviderToken::load(key_file, key_id, team_id).map(drop),
        Credentials::Certificate { file, password } => {
            load_identity(&[file], password.as_ref().map(Secret::expose)).map(drop)
        }
    }
    .map_err(|e| format!("APNs credential {e}"))
}

/// Builds the sender: reads the credentials and the CA, resolves the endpoint.
/// `on_device_gone` is called for each token Apple says is no longer valid.
pub fn build_sender(
    settings: &ApnsSettings,
    on_device_gone: impl Fn(&DeviceToken) + 'static,
) -> Result<Sender, String> {
    let addr = (settings.endpoint.host.as_str(), settings.endpoint.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", settings.endpoint.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", settings.endpoint.host))?;
    let mut tls = tls_connector(&["h2"], settings.ca_file.as_deref())?;
    let auth = match &settings.credentials {
        Credentials::Token {
            key_file,
            key_id,
            team_id,
        } => {
            let token = ProviderToken::load(key_file, key_id, team_id);
            Auth::Token(token.map_err(|e| format!("APNs credential {e}"))?)
        }
        Credentials::Certificate { file, password } => {
            let password = password.as_ref().map(Secret::expose);
            let loaded =
                load_identity(&[file], password).map_err(|e| format!("APNs credential {e}"))?;
            log_expiry("the APNs certificate", loaded.expires_at);
            let identity = loaded
                .native_identity()
                .map_err(|e| format!("APNs credential {}: {e}", file.display()))?;
            tls = tls.identity(identity);
            Auth::Certificate
        }
    };
    let config = sender::Config::new(addr, &settings.endpoint.host, &settings.topic);
    Ok(Sender::new(config, auth, tls, on_device_gone))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_flags() -> ApnsFlags {
        ApnsFlags {
            key_file: Some("AuthKey.p8".into()),
            key_id: Some("ABC123DEFG".into()),
            team_id: Some("DEF123GHIJ".into()),
            topic: Some("com.example.app".into()),
            ..ApnsFlags::default()
        }
    }

    #[test]
    fn no_flags_no_apns() {
        assert!(from_flags(ApnsFlags::default(), None).unwrap().is_none());
    }

    #[test]
    fn token_auth_and_endpoints() {
        let s = from_flags(token_flags(), None).unwrap().unwrap();
        assert_eq!(
            s.endpoint,
            Endpoint {
                host: PRODUCTION_HOST.into(),
                port: 443
            }
        );
        let s = from_flags(
            ApnsFlags {
                sandbox: true,
                ..token_flags()
            },
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint.host, SANDBOX_HOST);
        let s = from_flags(
            ApnsFlags {
                endpoint: Some("https://127.0.0.1:8443".into()),
                ..token_flags()
            },
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s.endpoint,
            Endpoint {
                host: "127.0.0.1".into(),
                port: 8443
            }
        );
    }

    #[test]
    fn mistakes_are_explained() {
        let cases = [
            (
                ApnsFlags {
                    topic: None,
                    ..token_flags()
                },
                "--apns-topic",
            ),
            (
                ApnsFlags {
                    key_id: None,
                    ..token_flags()
                },
                "--apns-key-id",
            ),
            (
                ApnsFlags {
                    team_id: None,
                    ..token_flags()
                },
                "--apns-team-id",
            ),
            (
                ApnsFlags {
                    cert_file: Some("ck.pem".into()),
                    ..token_flags()
                },
                "not both",
            ),
            (
                ApnsFlags {
                    topic: Some("com.example.app".into()),
                    ..ApnsFlags::default()
                },
                "credentials",
            ),
            (
                ApnsFlags {
                    sandbox: true,
                    endpoint: Some("https://x".into()),
                    ..token_flags()
                },
                "not both",
            ),
            (
                ApnsFlags {
                    endpoint: Some("http://x".into()),
                    ..token_flags()
                },
                "https://",
            ),
            (
                ApnsFlags {
                    endpoint: Some("https://x:port".into()),
                    ..token_flags()
                },
                "https://",
            ),
        ];
        for (flags, expected) in cases {
            let err = from_flags(flags, None).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn certificate_password_from_the_environment() {
        let flags = ApnsFlags {
            cert_file: Some("ck.pem".into()),
            topic: Some("com.example.app".into()),
            ..ApnsFlags::default()
        };
        let s = from_flags(flags, Some("s3cret\n".into())).unwrap().unwrap();
        match s.credentials {
            Credentials::Certificate {
                password: Some(p), ..
            } => assert_eq!(p.expose(), b"s3cret"),
            other => panic!("{other:?}"),
        }
    }
}
