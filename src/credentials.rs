//! TLS identities (a certificate, its chain and its private key), loaded from a
//! PKCS#12 archive (`.p12`) or from PEM files: the server's for wss, and the
//! client's for certificate-based APNs (the Workerman original's `ck.pem`).
//! Also [`CredentialError`], shared with the APNs provider token's `.p8` key.
//!
//! Reads files and parses them; no network. A password is borrowed for the
//! call and never stored, logged or put into an error. A decrypted key exists
//! only in memory, long enough to hand it to the TLS library.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::time::unix_now;

/// OpenSSL's codes for "the PKCS#12 MAC does not verify": the password is
/// wrong (`ERR_LIB_PKCS12` and `PKCS12_R_MAC_VERIFY_FAILURE` in its headers).
const ERR_LIB_PKCS12: i32 = 35;
const PKCS12_R_MAC_VERIFY_FAILURE: i32 = 113;
/// `ERR_LIB_EVP`: an algorithm-level failure inside a PKCS#12 whose MAC did
/// verify, which with OpenSSL 3 means a cipher it no longer enables by default.
const ERR_LIB_EVP: i32 = 6;

/// A credential could not be used: which files, and what is wrong with them.
#[derive(Debug)]
pub struct CredentialError {
    files: Vec<PathBuf>,
    problem: CredentialProblem,
}

/// What is wrong with a credential. Each `Display` ends with what to do.
#[derive(Debug)]
pub enum CredentialProblem {
    Unreadable(io::Error),
    /// Neither PEM text nor a DER PKCS#12 archive.
    NotRecognized,
    NoCertificate,
    NoPrivateKey,
    SeveralPrivateKeys,
    /// The private key does not belong to the certificate (to any certificate
    /// in the file).
    KeyMismatch,
    /// The key or archive is encrypted and no password was given.
    PasswordMissing,
    PasswordWrong,
    /// A PKCS#12 password must be UTF-8 text, and no password may hold a NUL
    /// byte: OpenSSL takes them as C strings.
    PasswordUnusable,
    /// The `.p12` is encrypted with RC2 or single DES, which OpenSSL 3 only
    /// loads with its legacy provider.
    LegacyPkcs12(String),
    /// A part of the file is damaged or not what its label says.
    Malformed {
        what: &'static str,
        detail: String,
    },
    /// The provider-token key is not an EC P-256 key.
    NotP256Key {
        found: String,
    },
    BadKeyId(String),
    BadTeamId(String),
}

impl CredentialError {
    pub(crate) fn new(problem: CredentialProblem) -> CredentialError {
        CredentialError {
            files: Vec::new(),
            problem,
        }
    }

    /// The same error, naming the files it came from.
    pub(crate) fn in_files(self, paths: &[&Path]) -> CredentialError {
        CredentialError {
            files: paths.iter().map(|p| p.to_path_buf()).collect(),
            problem: self.problem,
        }
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn problem(&self) -> &CredentialProblem {
        &self.problem
    }
}

impl From<CredentialProblem> for CredentialError {
    fn from(problem: CredentialProblem) -> Self {
        CredentialError::new(problem)
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, path) in self.files.iter().enumerate() {
            let joint = if i == 0 { "" } else { " + " };
            write!(f, "{joint}{}", path.display())?;
        }
        if !self.files.is_empty() {
            f.write_str(": ")?;
        }
        self.problem.fmt(f)
    }
}

impl std::error::Error for CredentialError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            CredentialProblem::Unreadable(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for CredentialProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CredentialProblem::*;
        match self {
            Unreadable(e) => write!(
                f,
                "cannot read the file ({e}); check the path and that pushhub may read it"
            ),
            NotRecognized => f.write_str(
                "neither PEM (certificate and private key) nor a PKCS#12 archive; \
                 give the .p12 exported with the certificate, or PEM files",
            ),
            NoCertificate => f.write_str(
                "no certificate (-----BEGIN CERTIFICATE-----) in the PEM; \
                 give the certificate with its private key",
            ),
            NoPrivateKey => f.write_str(
                "no private key; give the key the certificate was issued for \
                 (wss: --tls-key; APNs: in the same file, e.g. cat cert.pem key.pem > ck.pem)",
            ),
            SeveralPrivateKeys => f.write_str(
                "more than one private key in the PEM file; keep only the certificate's",
            ),
            KeyMismatch => f.write_str(
                "the private key does not belong to the certificate; \
                 pair the certificate with the key it was issued for",
            ),
            PasswordMissing => f.write_str(
                "the private key is encrypted and no password was given; give its password",
            ),
            PasswordWrong => f.write_str(
                "wrong password (or the encrypted key is damaged); give the password \
                 the key was exported with",
            ),
            PasswordUnusable => f.write_str(
                "the password cannot be used: OpenSSL takes passwords without NUL bytes, \
                 and PKCS#12 passwords as UTF-8 text",
            ),
            LegacyPkcs12(detail) => write!(
                f,
                "the .p12 is encrypted with RC2 or DES, which OpenSSL 3 no longer loads \
                 ({detail}); convert it once with \
                 `openssl pkcs12 -legacy -in old.p12 -out ck.pem` and give the PEM file"
            ),
            Malformed { what, detail } => write!(
                f,
                "the {what} cannot be parsed ({detail}); the file may be truncated or \
                 not what its name says"
            ),
            NotP256Key { found } => write!(
                f,
                "the signing key is {found}, not an EC P-256 key; give the .p8 file \
                 Apple issued for APNs (AuthKey_<key id>.p8)"
            ),
            BadKeyId(id) => write!(
                f,
                "key id {id:?} is not Apple's 10 letters or digits; copy the Key ID shown \
                 with the key in the developer account (also in the name AuthKey_<key id>.p8)"
            ),
            BadTeamId(id) => write!(
                f,
                "team id {id:?} is not Apple's 10 letters or digits; copy the Team ID \
                 from the developer account's membership details"
            ),
        }
    }
}

/// A TLS identity from a PKCS#12 archive or PEM (detected from the contents,
/// not the name). Several files are read as one: a PEM certificate chain and
/// its key may come in separate files.
///
/// `password` decrypts the archive or an encrypted PEM key (PKCS#8
/// `ENCRYPTED PRIVATE KEY`, or a legacy `RSA PRIVATE KEY` with `DEK-Info`);
/// it is ignored for an unencrypted key. PEM may hold the key and
/// certificates in any order; the certificate the key belongs to is sent
/// first and any others follow as its chain.
pub fn load_identity(paths: &[&Path], password: Option<&[u8]>) -> Result<Loaded, CredentialError> {
    let mut contents = Vec::new();
    let read = paths.iter().try_for_each(|path| {
        let bytes = std::fs::read(path).map_err(CredentialProblem::Unreadable)?;
        // PEM files joined need a line break between them; a lone archive must
        // stay byte for byte.
        if !contents.is_empty() {
            contents.push(b'\n');
        }
        contents.extend_from_slice(&bytes);
        Ok(())
    });
    let identity = read.and_then(|()| identity_from_bytes(&contents, password));
    wipe(&mut contents);
    identity.map_err(|problem| CredentialError::new(problem).in_files(paths))
}

/// A TLS identity, and when its certificate stops being valid.
pub struct Loaded {
    pub key: PKey<Private>,
    /// The key's certificate first, then the rest of its chain.
    pub chain: Vec<X509>,
    /// The certificate's `notAfter`, in Unix seconds.
    pub expires_at: i64,
}

impl Loaded {
    /// The identity in the form native-tls takes (the push senders' client
    /// TLS). It loads only an unencrypted PKCS#8 key: the copy made here never
    /// leaves memory and is wiped once loaded.
    pub fn native_identity(&self) -> Result<native_tls::Identity, String> {
        let mut chain = Vec::new();
        for cert in &self.chain {
            chain.extend(cert.to_pem().map_err(|e| e.to_string())?);
        }
        let mut pkcs8 = self
            .key
            .private_key_to_pem_pkcs8()
            .map_err(|e| e.to_string())?;
        let identity = native_tls::Identity::from_pkcs8(&chain, &pkcs8)
            .map_err(|e| format!("the TLS library refused the certificate and key ({e})"));
        wipe(&mut pkcs8);
        identity
    }
}

fn identity_from_bytes(bytes: &[u8], password: Option<&[u8]>) -> Result<Loaded, CredentialProblem> {
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        from_pem(&String::from_utf8_lossy(bytes), password)
    } else if bytes.first() == Some(&0x30) {
        // A DER SEQUENCE: what a PKCS#12 archive starts with.
        from_pkcs12(bytes, password)
    } else {
        Err(CredentialProblem::NotRecognized)
    }
}

fn from_pkcs12(der: &[u8], password: Option<&[u8]>) -> Result<Loaded, CredentialProblem> {
    let archive = Pkcs12::from_der(der).map_err(|_| CredentialProblem::NotRecognized)?;
    // An archive without a password is protected by the empty one.
    let pass = match password {
        None => "",
        Some(p) => std::str::from_utf8(p)
            .ok()
            .filter(|p| !p.contains('\0'))
            .ok_or(CredentialProblem::PasswordUnusable)?,
    };
    let parsed = archive.parse2(pass).map_err(|stack| {
        let codes = |lib: i32, reason: Option<i32>| {
            stack
                .errors()
                .iter()
                .any(|e| e.library_code() == lib && reason.is_none_or(|r| e.reason_code() == r))
        };
        if codes(ERR_LIB_PKCS12, Some(PKCS12_R_MAC_VERIFY_FAILURE)) {
            if password.is_none() {
                CredentialProblem::PasswordMissing
            } else {
                CredentialProblem::PasswordWrong
            }
        } else if codes(ERR_LIB_EVP, None) {
            CredentialProblem::LegacyPkcs12(stack.to_string())
        } else {
            malformed("PKCS#12 archive", &stack)
        }
    })?;
    let cert = parsed.cert.ok_or(CredentialProblem::NoCertificate)?;
    let key = parsed.pkey.ok_or(CredentialProblem::NoPrivateKey)?;
    if !belongs_to(&key, &cert) {
        return Err(CredentialProblem::KeyMismatch);
    }
    let expires_at = unix_time(cert.not_after())?;
    let mut chain = vec![cert];
    chain.extend(parsed.ca.into_iter().flatten());
    Ok(Loaded {
        key,
        chain,
        expires_at,
    })
}

fn from_pem(text: &str, password: Option<&[u8]>) -> Result<Loaded, CredentialProblem> {
    let mut certs = Vec::new();
    let mut key_blocks = Vec::new();
    for block in pem_blocks(text)? {
        match block.label {
            "CERTIFICATE" | "X509 CERTIFICATE" => {
                let cert = X509::from_pem(block.text.as_bytes())
                    .map_err(|e| malformed("certificate", &e))?;
                certs.push(cert);
            }
            label if label.ends_with("PRIVATE KEY") => key_blocks.push(block),
            // Anything else (EC PARAMETERS before an EC key, ...) is not ours to use.
            _ => {}
        }
    }
    if key_blocks.len() > 1 {
        return Err(CredentialProblem::SeveralPrivateKeys);
    }
    let key_block = key_blocks.pop().ok_or(CredentialProblem::NoPrivateKey)?;
    let key = decrypt_key(key_block, password)?;
    if certs.is_empty() {
        return Err(CredentialProblem::NoCertificate);
    }
    let leaf = certs
        .iter()
        .position(|cert| belongs_to(&key, cert))
        .ok_or(CredentialProblem::KeyMismatch)?;
    // The key's certificate goes first; the others keep their order as its chain.
    let leaf = certs.remove(leaf);
    certs.insert(0, leaf);
    Ok(Loaded {
        expires_at: unix_time(certs[0].not_after())?,
        key,
        chain: certs,
    })
}

/// Days before a certificate expires from which its expiry is logged as a
/// warning: time for a renewal that failed to be noticed.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// Logs when the certificate of `what` expires: a warning when it is soon, an
/// error once it has. Certificates expire while the hub runs for months.
pub fn log_expiry(what: &str, expires_at: i64) {
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let days = (expires_at - now).div_euclid(86_400);
    let plural = |n: i64| if n == 1 { "day" } else { "days" };
    if expires_at <= now {
        let ago = -days - 1;
        log::error!("{what} has expired ({ago} {} ago); replace it", plural(ago));
    } else if days < EXPIRY_WARNING_DAYS {
        log::warn!("{what} expires in {days} {}; renew it", plural(days));
    } else {
        log::info!("{what} is valid for {days} more {}", plural(days));
    }
}

/// An ASN.1 time as Unix seconds.
fn unix_time(time: &Asn1TimeRef) -> Result<i64, CredentialProblem> {
    let since_epoch = Asn1Time::from_unix(0)
        .and_then(|epoch| epoch.diff(time))
        .map_err(|e| malformed("certificate's validity", &e))?;
    Ok(i64::from(since_epoch.days) * 86_400 + i64::from(since_epoch.secs))
}

/// The private key of a PEM block, decrypted with `password` if it is encrypted.
fn decrypt_key(
    block: PemBlock<'_>,
    password: Option<&[u8]>,
) -> Result<PKey<Private>, CredentialProblem> {
    let mut asked = false;
    // Always through a callback: without one, OpenSSL would prompt for the
    // password on the terminal, and its `_passphrase` variant panics on a NUL.
    let key = PKey::private_key_from_pem_callback(block.text.as_bytes(), |buf| {
        asked = true;
        match password {
            Some(p) if p.len() <= buf.len() => {
                buf[..p.len()].copy_from_slice(p);
                Ok(p.len())
            }
            _ => Err(ErrorStack::get()),
        }
    });
    key.map_err(|e| {
        let encrypted = asked || block.label == "ENCRYPTED PRIVATE KEY";
        match (encrypted, password) {
            (true, None) => CredentialProblem::PasswordMissing,
            (true, Some(_)) => CredentialProblem::PasswordWrong,
            (false, _) => malformed("private key", &e),
        }
    })
}

fn belongs_to(key: &PKey<Private>, cert: &X509) -> bool {
    cert.public_key().is_ok_and(|public| public.public_eq(key))
}

fn malformed(what: &'static str, e: &ErrorStack) -> CredentialProblem {
    CredentialProblem::Malformed {
        what,
        detail: e.to_string(),
    }
}

/// Overwrites a copy of key material before it is freed (best effort:
/// `black_box` keeps the compiler from dropping the writes as dead).
fn wipe(secret: &mut [u8]) {
    secret.fill(0);
    std::hint::black_box(secret);
}

/// One `-----BEGIN label-----` ... `-----END label-----` block, markers included.
struct PemBlock<'a> {
    label: &'a str,
    text: &'a str,
}

/// The PEM blocks of a file, skipping the text around them (such as the
/// "Bag Attributes" that `openssl pkcs12` writes before each block).
fn pem_blocks(text: &str) -> Result<Vec<PemBlock<'_>>, CredentialProblem> {
    const BEGIN: &str = "-----BEGIN ";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let from_begin = &rest[start..];
        let unterminated = || CredentialProblem::Malformed {
            what: "PEM file",
            detail: "a BEGIN line has no matching END line".to_string(),
        };
        let label_len = from_begin[BEGIN.len()..]
            .find("-----")
            .ok_or_else(unterminated)?;
        let label = &from_begin[BEGIN.len()..BEGIN.len() + label_len];
        let end_marker = format!("-----END {label}-----");
        let end = from_begin.find(&end_marker).ok_or_else(unterminated)? + end_marker.len();
        blocks.push(PemBlock {
            label,
            text: &from_begin[..end],
        });
        rest = &from_begin[end..];
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;

    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::rsa::Rsa;
    use openssl::symm::Cipher;
    use openssl::x509::X509NameBuilder;

    const PASSWORD: &[u8] = b"correct horse";

    /// A directory of its own under the system's temporary directory, removed
    /// when dropped (also when the test fails).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("pushhub-credentials-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn rsa_key() -> (Rsa<Private>, PKey<Private>) {
        let rsa = Rsa::generate(2048).unwrap();
        let key = PKey::from_rsa(rsa.clone()).unwrap();
        (rsa, key)
    }

    fn self_signed(key: &PKey<Private>, name: &str) -> X509 {
        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_text("CN", name).unwrap();
        let subject = subject.build();
        let mut cert = X509::builder().unwrap();
        cert.set_version(2).unwrap();
        let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
        cert.set_serial_number(&serial).unwrap();
        cert.set_subject_name(&subject).unwrap();
        cert.set_issuer_name(&subject).unwrap();
        cert.set_pubkey(key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(key, MessageDigest::sha256()).unwrap();
        cert.build()
    }

    fn pkcs12(key: &PKey<Private>, cert: &X509, password: &str) -> Vec<u8> {
        Pkcs12::builder()
            .name("pushhub test")
            .pkey(key)
            .cert(cert)
            .build2(password)
            .unwrap()
            .to_der()
            .unwrap()
    }

    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn problem(result: Result<Loaded, CredentialError>) -> CredentialProblem {
        match result {
            Ok(_) => panic!("the credential was accepted"),
            Err(e) => {
                assert!(!e.files().is_empty(), "{e}");
                let shown = e.to_string();
                assert!(
                    !shown.contains(std::str::from_utf8(PASSWORD).unwrap()),
                    "{shown}"
                );
                e.problem
            }
        }
    }

    #[test]
    fn loads_every_supported_form() {
        let dir = TempDir::new("loads");
        let (rsa, key) = rsa_key();
        let cert = self_signed(&key, "pushhub test");
        let cert_pem = cert.to_pem().unwrap();

        let p12 = dir.write(
            "cert.p12",
            &pkcs12(&key, &cert, std::str::from_utf8(PASSWORD).unwrap()),
        );
        // The certificate is valid for one day from now.
        let tomorrow = unix_now() as i64 + 86_400;
        let expires_tomorrow = |loaded: Loaded| {
            let at = loaded.expires_at;
            assert!((at - tomorrow).abs() < 60, "{at}");
        };
        expires_tomorrow(load_identity(&[&p12], Some(PASSWORD)).unwrap());

        let encrypted_pkcs8 = key
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), PASSWORD)
            .unwrap();
        assert!(encrypted_pkcs8.starts_with(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let path = dir.write("pkcs8.pem", &concat(&[&cert_pem, &encrypted_pkcs8]));
        expires_tomorrow(load_identity(&[&path], Some(PASSWORD)).unwrap());

        // The Workerman original's ck.pem: `openssl pkcs12` output (with its
        // Bag Attributes) and a legacy passphrase-protected RSA key, key first.
        let legacy = rsa
            .private_key_to_pem_passphrase(Cipher::des_ede3_cbc(), PASSWORD)
            .unwrap();
        let legacy_text = String::from_utf8(legacy.clone()).unwrap();
        assert!(legacy_text.contains("Proc-Type: 4,ENCRYPTED"));
        assert!(legacy_text.contains("DEK-Info: DES-EDE3-CBC"));
        let ck = concat(&[
            b"Bag Attributes\n    friendlyName: Apple Push Services\n",
            &legacy,
            b"Bag Attributes\n    localKeyID: 01 02 03\n",
            &cert_pem,
        ]);
        let path = dir.write("ck.pem", &ck);
        load_identity(&[&path], Some(PASSWORD)).unwrap();

        let plain_pkcs8 = key.private_key_to_pem_pkcs8().unwrap();
        let path = dir.write("plain8.pem", &concat(&[&cert_pem, &plain_pkcs8]));
        load_identity(&[&path], None).unwrap();

        let plain_rsa = rsa.private_key_to_pem().unwrap();
        assert!(plain_rsa.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
        let path = dir.write("plainrsa.pem", &concat(&[&cert_pem, &plain_rsa]));
        load_identity(&[&path], None).unwrap();
        // A password given for a key that needs none is not an error.
        load_identity(&[&path], Some(PASSWORD)).unwrap();

        // A chain: the key's certificate need not come first.
        let (_, other_key) = rsa_key();
        let other = self_signed(&other_key, "intermediate").to_pem().unwrap();
        let path = dir.write("chain.pem", &concat(&[&other, &cert_pem, &plain_pkcs8]));
        load_identity(&[&path], None).unwrap();
    }

    #[test]
    fn refuses_wrong_or_missing_passwords() {
        let dir = TempDir::new("passwords");
        let (rsa, key) = rsa_key();
        let cert = self_signed(&key, "pushhub test");
        let cert_pem = cert.to_pem().unwrap();

        let p12 = dir.write(
            "cert.p12",
            &pkcs12(&key, &cert, std::str::from_utf8(PASSWORD).unwrap()),
        );
        assert!(matches!(
            problem(load_identity(&[&p12], Some(b"guess"))),
            CredentialProblem::PasswordWrong
        ));
        assert!(matches!(
            problem(load_identity(&[&p12], None)),
            CredentialProblem::PasswordMissing
        ));
        assert!(matches!(
            problem(load_identity(&[&p12], Some(b"\xff\xfe"))),
            CredentialProblem::PasswordUnusable
        ));
        assert!(matches!(
            problem(load_identity(&[&p12], Some(b"a\0b"))),
            CredentialProblem::PasswordUnusable
        ));

        let pkcs8 = key
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), PASSWORD)
            .unwrap();
        let legacy = rsa
            .private_key_to_pem_passphrase(Cipher::aes_128_cbc(), PASSWORD)
            .unwrap();
        for (name, encrypted_key) in [("pkcs8.pem", pkcs8), ("legacy.pem", legacy)] {
            let path = dir.write(name, &concat(&[&cert_pem, &encrypted_key]));
            assert!(
                matches!(
                    problem(load_identity(&[&path], Some(b"guess"))),
                    CredentialProblem::PasswordWrong
                ),
                "{name}"
            );
            assert!(
                matches!(
                    problem(load_identity(&[&path], None)),
                    CredentialProblem::PasswordMissing
                ),
                "{name}"
            );
            // A NUL in a password is just a wrong byte, not a panic.
            assert!(matches!(
                problem(load_identity(&[&path], Some(b"correct\0horse"))),
                CredentialProblem::PasswordWrong
            ));
        }
    }

    #[test]
    fn refuses_incomplete_or_mismatched_files() {
        let dir = TempDir::new("refusals");
        let (_, key) = rsa_key();
        let cert_pem = self_signed(&key, "pushhub test").to_pem().unwrap();
        let key_pem = key.private_key_to_pem_pkcs8().unwrap();

        let path = dir.write("cert-only.pem", &cert_pem);
        assert!(matches!(
            problem(load_identity(&[&path], None)),
            CredentialProblem::NoPrivateKey
        ));

        let path = dir.write("key-only.pem", &key_pem);
        assert!(matches!(
            problem(load_identity(&[&path], None)),
            CredentialProblem::NoCertificate
        ));

        let path = dir.write("two-keys.pem", &concat(&[&cert_pem, &key_pem, &key_pem]));
        assert!(matches!(
            problem(load_identity(&[&path], None)),
            CredentialProblem::SeveralPrivateKeys
        ));

        let (_, stranger) = rsa_key();
        let stranger_pem = stranger.private_key_to_pem_pkcs8().unwrap();
        let path = dir.write("mismatch.pem", &concat(&[&cert_pem, &stranger_pem]));
        let err = load_identity(&[&path], None).err().unwrap();
        assert!(matches!(err.problem(), CredentialProblem::KeyMismatch));
        let shown = err.to_string();
        assert!(shown.contains("mismatch.pem"), "{shown}");
        assert!(shown.contains("does not belong"), "{shown}");

        let mut truncated = concat(&[&cert_pem, &key_pem]);
        truncated.truncate(truncated.len() - 40);
        let path = dir.write("truncated.pem", &truncated);
        assert!(matches!(
            problem(load_identity(&[&path], None)),
            CredentialProblem::Malformed { .. }
        ));

        // The certificate's outer DER header replaced: its base64 still decodes.
        let mut damaged = concat(&[&cert_pem, &key_pem]);
        let body = b"-----BEGIN CERTIFICATE-----\n".len();
        damaged[body..body + 4].copy_from_slice(b"////");
        let path = dir.write("damaged.pem", &damaged);
        assert!(matches!(
            problem(load_identity(&[&path], None)),
            CredentialProblem::Malformed {
                what: "certificate",
                ..
            }
        ));
    }

    #[test]
    fn refuses_garbage_and_missing_files() {
        let dir = TempDir::new("garbage");
        for (name, contents) in [
            ("empty", &b""[..]),
            ("text", b"not a credential\n"),
            ("binary", b"\x00\x01\x02\xff"),
            ("der-like", b"\x30\x03\x02\x01\x03"),
        ] {
            let path = dir.write(name, contents);
            assert!(
                matches!(
                    problem(load_identity(&[&path], Some(PASSWORD))),
                    CredentialProblem::NotRecognized
                ),
                "{name}"
            );
        }
        let missing = dir.0.join("missing.p12");
        let err = load_identity(&[&missing], None).err().unwrap();
        assert!(matches!(err.problem(), CredentialProblem::Unreadable(_)));
        assert!(err.to_string().contains("missing.p12"), "{err}");
    }
}
