//! wss: TLS on the WebSocket port, on rustls. The settings the `--tls-*`
//! flags make, the rustls configuration they build (from files the openssl
//! crate parses, see [`crate::credentials`]), and the stream a connection
//! reads and writes ([`stream`]).
//!
//! The acceptor is built once at start and again on SIGHUP: each connection
//! keeps the configuration it was accepted with, so a new certificate reaches
//! new connections while open ones stay as they are.

mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::{self, cipher_suite, kx_group};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::NoServerSessionStorage;
use rustls::{ServerConfig, version};

use crate::auth::Secret;
use crate::credentials::{Loaded, load_identity};

pub use stream::TlsStream;

/// Where the WebSocket port's certificate and key are.
#[derive(Debug, Clone)]
pub enum TlsFiles {
    /// A PEM certificate chain, leaf first, and its key (in its own file, or
    /// `None`: in the certificate's file).
    Pem { cert: PathBuf, key: Option<PathBuf> },
    /// A PKCS#12 archive holding the certificate, its chain and its key.
    Pkcs12(PathBuf),
}

/// A built acceptor, and when its certificate expires (Unix seconds).
pub struct Acceptor {
    pub acceptor: Arc<ServerConfig>,
    pub expires_at: i64,
}

/// Everything the `--tls-*` flags say.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub files: TlsFiles,
    /// Decrypts the archive or an encrypted key.
    pub password: Option<Secret>,
}

impl TlsSettings {
    /// Reads the files and builds the acceptor. The error names the files and
    /// says what is wrong with them, never the password.
    pub fn acceptor(&self) -> Result<Acceptor, String> {
        let paths: Vec<&Path> = match &self.files {
            TlsFiles::Pem { cert, key } => std::iter::once(cert.as_path())
                .chain(key.as_deref())
                .collect(),
            TlsFiles::Pkcs12(archive) => vec![archive.as_path()],
        };
        let password = self.password.as_ref().map(Secret::expose);
        let loaded = load_identity(&paths, password).map_err(|e| format!("TLS certificate {e}"))?;
        let acceptor = build(&loaded)
            .map_err(|e| format!("TLS: the library refused the certificate and key: {e}"))?;
        Ok(Acceptor {
            acceptor,
            expires_at: loaded.expires_at,
        })
    }

    /// The files, for the log.
    pub fn describe(&self) -> String {
        match &self.files {
            TlsFiles::Pem { cert, key: None } => cert.display().to_string(),
            TlsFiles::Pem {
                cert,
                key: Some(key),
            } => format!("{} + {}", cert.display(), key.display()),
            TlsFiles::Pkcs12(archive) => archive.display().to_string(),
        }
    }
}

/// The acceptor's settings: TLS 1.3 and 1.2 (older versions are deprecated,
/// RFC 8996), AEAD suites with forward secrecy only, the fastest first, and
/// nothing kept in the hub per session.
fn build(loaded: &Loaded) -> Result<Arc<ServerConfig>, String> {
    // rustls deprecates its ring provider for having no post-quantum key
    // exchange (X25519MLKEM768 is in aws-lc-rs only, a far larger C build).
    // Browsers that offer it also send an X25519 share, so they are served
    // X25519 without a retry.
    #[allow(deprecated)]
    let provider = CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..ring::default_provider()
    };
    let mut chain = Vec::with_capacity(loaded.chain.len());
    for cert in &loaded.chain {
        chain.push(CertificateDer::from(
            cert.to_der().map_err(|e| e.to_string())?,
        ));
    }
    let key = loaded
        .key
        .private_key_to_pkcs8()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "{e} (keys rustls takes: ECDSA P-256 or P-384, RSA of 2048 bits or more, Ed25519)"
            )
        })?;
    // Resumption by stateless tickets only: a session cache would keep every
    // session in the hub's memory for as long as it lasts. One TLS 1.3 ticket
    // per connection, not rustls's default 2: a page reconnects over one
    // connection at a time.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.ticketer = ring::Ticketer::new().map_err(|e| e.to_string())?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}
