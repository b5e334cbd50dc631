//! wss: TLS on the WebSocket port, through async-native-tls (OpenSSL on
//! Linux). The settings the `--tls-*` flags make, and the acceptor they build.
//!
//! The acceptor is built once at start and again on SIGHUP: each connection
//! keeps the OpenSSL context it was accepted with, so a new certificate reaches
//! new connections while open ones stay as they are.

use std::path::{Path, PathBuf};

use async_native_tls::TlsAcceptor;

use crate::auth::Secret;
use crate::credentials::load_identity;

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
    pub acceptor: TlsAcceptor,
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
        let acceptor = native_tls::TlsAcceptor::builder(loaded.identity)
            // What browsers and every supported client speak; older versions
            // are deprecated (RFC 8996).
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .build()
            .map_err(|e| format!("TLS: the library refused the certificate and key: {e}"))?;
        Ok(Acceptor {
            acceptor: TlsAcceptor::from(acceptor),
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
