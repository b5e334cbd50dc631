//! A Google service-account key file: the JSON that Firebase console →
//! Project settings → Service accounts → "Generate new private key" downloads.
//! Owns reading and checking it; what the key signs is `oauth`'s business.
//!
//! Of its fields we use `type` (must be `service_account`), `project_id` (the
//! FCM send URL names it), `client_email` (the JWT's issuer), `token_uri`
//! (where the JWT is exchanged for an access token), `private_key` (a PKCS#8
//! PEM RSA key) and `private_key_id` (the JWT's `kid`, optional); the others
//! (`client_id`, `auth_uri`, certificate URLs) are ignored.
//!
//! The only I/O is reading the file in [`ServiceAccount::load`]. The private
//! key never leaves this module but to sign, and neither `Debug` nor any
//! error shows it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::sign::Signer;
use serde_json::{Map, Value};

/// RS256 keys shorter than this are refused (RFC 7518 §3.3 asks for 2048
/// bits or more; Google's are 2048).
const MIN_RSA_BITS: u32 = 2048;

/// Longest project id accepted: Google's are at most 30 characters, and a
/// domain-scoped one (`example.com:project`) adds the domain.
const MAX_PROJECT_ID: usize = 100;

/// A service account that can sign for Firebase Cloud Messaging.
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    /// An `https://` URL, checked when the file was read.
    pub token_uri: String,
    /// The key's id, sent as the JWT's `kid`; `None` when the file has none.
    pub private_key_id: Option<String>,
    key: PKey<Private>,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

/// Why a service-account key file cannot be used. Each message ends with
/// what to do about it.
#[derive(Debug)]
pub enum CredentialsError {
    Read {
        path: PathBuf,
        error: io::Error,
    },
    /// Not a JSON object; why (serde_json's position, or what it is instead).
    NotJson(String),
    /// A JSON key, but not a service account's: the `type` found (e.g.
    /// `authorized_user`, what `gcloud auth application-default login` writes).
    NotServiceAccount(String),
    /// A required field is absent, empty or not a string.
    MissingField(&'static str),
    /// The `project_id` holds characters a project id cannot have.
    BadProjectId(String),
    /// The `private_key` is not a usable RSA key: what it is instead.
    BadKey(String),
    /// The `token_uri` is not an `https://` URL.
    BadTokenUri(String),
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FIX: &str = "give the JSON key that Firebase console → Project settings → \
                           Service accounts → \"Generate new private key\" downloads";
        match self {
            CredentialsError::Read { path, error } => write!(
                f,
                "{}: cannot read the service-account key file ({error}); \
                 check the path and that pushhub may read it",
                path.display()
            ),
            CredentialsError::NotJson(why) => {
                write!(
                    f,
                    "the service-account key file is not a JSON object ({why}); {FIX}"
                )
            }
            CredentialsError::NotServiceAccount(found) => write!(
                f,
                "the key file is of type {found:?}, not \"service_account\"; {FIX}"
            ),
            CredentialsError::MissingField(field) => write!(
                f,
                "the service-account key file has no {field:?} (a non-empty string); {FIX}"
            ),
            CredentialsError::BadProjectId(id) => write!(
                f,
                "the service-account key file's project_id {id:?} is not a Google Cloud \
                 project id (letters, digits, '-', '.', ':'); {FIX}"
            ),
            CredentialsError::BadKey(why) => write!(
                f,
                "the service-account key file's private_key is not usable: {why}; {FIX}"
            ),
            CredentialsError::BadTokenUri(uri) => write!(
                f,
                "the service-account key file's token_uri {uri:?} is not an https:// URL \
                 (Google's is https://oauth2.googleapis.com/token); {FIX}"
            ),
        }
    }
}

impl std::error::Error for CredentialsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CredentialsError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl ServiceAccount {
    /// Reads the key file at `path`; see [`ServiceAccount::from_json`]. Only
    /// [`CredentialsError::Read`] names the path: the caller names it for the
    /// others, with the flag it came from.
    pub fn load(path: &Path) -> Result<ServiceAccount, CredentialsError> {
        let json = std::fs::read(path).map_err(|error| CredentialsError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        ServiceAccount::from_json(&json)
    }

    /// The service account of a key file's contents.
    pub fn from_json(json: &[u8]) -> Result<ServiceAccount, CredentialsError> {
        // Read as a map rather than into a struct: serde's messages for a
        // value of the wrong type quote the value, and one of them is a key.
        let value: Value =
            serde_json::from_slice(json).map_err(|e| CredentialsError::NotJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(CredentialsError::NotJson(format!(
                "{} instead",
                json_kind(&value)
            )));
        };
        match fields.get("type") {
            Some(Value::String(t)) if t == "service_account" => {}
            Some(Value::String(t)) => return Err(CredentialsError::NotServiceAccount(t.clone())),
            Some(other) => {
                return Err(CredentialsError::NotServiceAccount(
                    json_kind(other).to_string(),
                ));
            }
            None => return Err(CredentialsError::MissingField("type")),
        }
        let project_id = required(&fields, "project_id")?;
        if !is_project_id(&project_id) {
            return Err(CredentialsError::BadProjectId(project_id));
        }
        let client_email = required(&fields, "client_email")?;
        let token_uri = required(&fields, "token_uri")?;
        if !is_https_url(&token_uri) {
            return Err(CredentialsError::BadTokenUri(token_uri));
        }
        let private_key_id = match fields.get("private_key_id") {
            Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
            _ => None,
        };
        let key = rsa_key(required(&fields, "private_key")?.as_bytes())?;
        Ok(ServiceAccount {
            project_id,
            client_email,
            token_uri,
            private_key_id,
            key,
        })
    }

    /// The key, for `oauth` to sign with.
    pub(crate) fn key(&self) -> &PKey<Private> {
        &self.key
    }
}

fn required(fields: &Map<String, Value>, name: &'static str) -> Result<String, CredentialsError> {
    match fields.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(CredentialsError::MissingField(name)),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The id goes into the send URL's path, so nothing that would end or
/// escape a path segment is let through.
fn is_project_id(id: &str) -> bool {
    id.len() <= MAX_PROJECT_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
}

/// An `https://` URL with a host. The assertion is a credential for an
/// hour, so it is never sent in the clear.
fn is_https_url(uri: &str) -> bool {
    match uri.parse::<http::Uri>() {
        Ok(parsed) => {
            parsed.scheme() == Some(&http::uri::Scheme::HTTPS)
                && parsed.host().is_some_and(|h| !h.is_empty())
        }
        Err(_) => false,
    }
}

fn rsa_key(pem: &[u8]) -> Result<PKey<Private>, CredentialsError> {
    // Through a callback that refuses: Google's keys are never encrypted, and
    // without a callback OpenSSL would prompt for a password on the terminal.
    let key =
        PKey::private_key_from_pem_callback(pem, |_| Err(ErrorStack::get())).map_err(|_| {
            CredentialsError::BadKey(
                "not a PEM private key (-----BEGIN PRIVATE KEY-----), or an encrypted one"
                    .to_string(),
            )
        })?;
    match key.id() {
        Id::RSA => {}
        Id::EC => return Err(CredentialsError::BadKey("an EC key, not RSA".to_string())),
        Id::ED25519 => {
            return Err(CredentialsError::BadKey(
                "an Ed25519 key, not RSA".to_string(),
            ));
        }
        _ => {
            return Err(CredentialsError::BadKey(
                "a key of another type, not RSA".to_string(),
            ));
        }
    }
    if key.bits() < MIN_RSA_BITS {
        return Err(CredentialsError::BadKey(format!(
            "an RSA key of {} bits; RS256 needs {MIN_RSA_BITS} or more",
            key.bits()
        )));
    }
    // Sign once now, so that a key OpenSSL cannot sign with is refused at
    // start rather than when the first push is due.
    let probe = Signer::new(MessageDigest::sha256(), &key)
        .and_then(|mut signer| signer.sign_oneshot_to_vec(b"probe"));
    if let Err(e) = probe {
        return Err(CredentialsError::BadKey(format!(
            "OpenSSL cannot sign with it ({e})"
        )));
    }
    Ok(key)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::rsa::Rsa;
    use openssl::symm::Cipher;
    use serde_json::json;

    pub(crate) fn rsa(bits: u32) -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
    }

    /// A key file as Google writes it, for `key`.
    pub(crate) fn key_file(key: &PKey<Private>) -> Value {
        let pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": pem,
            "client_email": "firebase-adminsdk-abcde@test-project.iam.gserviceaccount.com",
            "client_id": "123456789012345678901",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": "https://oauth2.googleapis.com/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/x",
            "universe_domain": "googleapis.com"
        })
    }

    fn with(key: &PKey<Private>, field: &str, value: Value) -> Vec<u8> {
        let mut file = key_file(key);
        file[field] = value;
        serde_json::to_vec(&file).unwrap()
    }

    fn without(key: &PKey<Private>, field: &str) -> Vec<u8> {
        let mut file = key_file(key);
        file.as_object_mut().unwrap().remove(field);
        serde_json::to_vec(&file).unwrap()
    }

    #[test]
    fn reads_a_key_file_as_google_writes_it() {
        let key = rsa(2048);
        let text = serde_json::to_vec_pretty(&key_file(&key)).unwrap();
        // The PEM's line breaks are `\n` escapes inside the JSON string.
        assert!(text.windows(2).any(|w| w == b"\\n"));
        let sa = ServiceAccount::from_json(&text).unwrap();
        assert_eq!(sa.project_id, "test-project");
        assert_eq!(
            sa.client_email,
            "firebase-adminsdk-abcde@test-project.iam.gserviceaccount.com"
        );
        assert_eq!(sa.token_uri, "https://oauth2.googleapis.com/token");
        assert_eq!(
            sa.private_key_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert!(sa.key().public_eq(&key));

        let shown = format!("{sa:?}");
        assert!(shown.contains("test-project"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(!shown.contains("key:"), "{shown}");
    }

    #[test]
    fn private_key_id_is_optional() {
        let key = rsa(2048);
        let sa = ServiceAccount::from_json(&without(&key, "private_key_id")).unwrap();
        assert_eq!(sa.private_key_id, None);
        let sa = ServiceAccount::from_json(&with(&key, "private_key_id", json!(""))).unwrap();
        assert_eq!(sa.private_key_id, None);
    }

    #[test]
    fn refuses_what_is_not_a_json_object() {
        for text in [
            &b""[..],
            b"not json",
            b"{\"type\": \"service_account\",",
            b"\xff\xfe",
        ] {
            let err = ServiceAccount::from_json(text).unwrap_err();
            assert!(matches!(err, CredentialsError::NotJson(_)), "{err:?}");
        }
        for (text, kind) in [
            ("[]", "an array"),
            ("[{\"type\":\"service_account\"}]", "an array"),
            ("\"service_account\"", "a string"),
            ("42", "a number"),
            ("null", "null"),
        ] {
            let err = ServiceAccount::from_json(text.as_bytes()).unwrap_err();
            assert!(matches!(err, CredentialsError::NotJson(_)), "{err:?}");
            assert!(err.to_string().contains(kind), "{err}");
        }
    }

    #[test]
    fn refuses_other_kinds_of_key_file() {
        let key = rsa(2048);
        let err =
            ServiceAccount::from_json(&with(&key, "type", json!("authorized_user"))).unwrap_err();
        assert!(
            matches!(&err, CredentialsError::NotServiceAccount(t) if t == "authorized_user"),
            "{err:?}"
        );
        assert!(err.to_string().contains("authorized_user"), "{err}");
        let err = ServiceAccount::from_json(&with(&key, "type", json!(1))).unwrap_err();
        assert!(
            matches!(err, CredentialsError::NotServiceAccount(_)),
            "{err:?}"
        );
        let err = ServiceAccount::from_json(&without(&key, "type")).unwrap_err();
        assert!(
            matches!(err, CredentialsError::MissingField("type")),
            "{err:?}"
        );
        // An empty object is a key file with nothing in it.
        let err = ServiceAccount::from_json(b"{}").unwrap_err();
        assert!(
            matches!(err, CredentialsError::MissingField("type")),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_missing_empty_or_mistyped_fields() {
        let key = rsa(2048);
        for field in ["project_id", "client_email", "token_uri", "private_key"] {
            for text in [
                without(&key, field),
                with(&key, field, json!("")),
                with(&key, field, json!(null)),
                with(&key, field, json!(12)),
                with(&key, field, json!(["a"])),
            ] {
                let err = ServiceAccount::from_json(&text).unwrap_err();
                assert!(
                    matches!(err, CredentialsError::MissingField(f) if f == field),
                    "{field}: {err:?}"
                );
                assert!(err.to_string().contains(field), "{err}");
            }
        }
    }

    #[test]
    fn refuses_project_ids_that_would_change_the_url() {
        let key = rsa(2048);
        for bad in [
            "a/b",
            "a?b",
            "a b",
            "a%2Fb",
            "a\nb",
            "projét",
            &"a".repeat(101),
        ] {
            let err = ServiceAccount::from_json(&with(&key, "project_id", json!(bad))).unwrap_err();
            assert!(
                matches!(err, CredentialsError::BadProjectId(_)),
                "{bad:?}: {err:?}"
            );
        }
        let sa = ServiceAccount::from_json(&with(&key, "project_id", json!("example.com:app-1")))
            .unwrap();
        assert_eq!(sa.project_id, "example.com:app-1");
    }

    #[test]
    fn refuses_token_uris_that_are_not_https() {
        let key = rsa(2048);
        for bad in [
            "http://oauth2.googleapis.com/token",
            "oauth2.googleapis.com/token",
            "/token",
            "https://",
            "https:///token",
            "ftp://oauth2.googleapis.com/token",
            "https://oauth2.googleapis.com/to ken",
        ] {
            let err = ServiceAccount::from_json(&with(&key, "token_uri", json!(bad))).unwrap_err();
            assert!(
                matches!(err, CredentialsError::BadTokenUri(_)),
                "{bad:?}: {err:?}"
            );
            assert!(err.to_string().contains("https://"), "{err}");
        }
        let sa = ServiceAccount::from_json(&with(
            &key,
            "token_uri",
            json!("https://localhost:8443/token"),
        ))
        .unwrap();
        assert_eq!(sa.token_uri, "https://localhost:8443/token");
    }

    fn key_refusal(pem: &str) -> String {
        let key = rsa(2048);
        match ServiceAccount::from_json(&with(&key, "private_key", json!(pem))) {
            Err(CredentialsError::BadKey(why)) => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_keys_that_are_not_rsa_private_keys() {
        for garbage in [
            "not a key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            // The PEM with its escapes doubled, as a hand-edited file may have it.
            &String::from_utf8(rsa(2048).private_key_to_pem_pkcs8().unwrap())
                .unwrap()
                .replace('\n', "\\n"),
        ] {
            assert!(key_refusal(garbage).contains("not a PEM"), "{garbage:?}");
        }
        let public = String::from_utf8(rsa(2048).public_key_to_pem().unwrap()).unwrap();
        assert!(key_refusal(&public).contains("not a PEM"));

        let ec = EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap());
        let ec = PKey::from_ec_key(ec.unwrap()).unwrap();
        let ec = String::from_utf8(ec.private_key_to_pem_pkcs8().unwrap()).unwrap();
        assert!(key_refusal(&ec).contains("EC key"));

        let ed = PKey::generate_ed25519().unwrap();
        let ed = String::from_utf8(ed.private_key_to_pem_pkcs8().unwrap()).unwrap();
        assert!(key_refusal(&ed).contains("Ed25519"));

        let short = String::from_utf8(rsa(1024).private_key_to_pem_pkcs8().unwrap()).unwrap();
        assert!(key_refusal(&short).contains("1024 bits"));

        // An encrypted key is refused, not prompted for on the terminal.
        let encrypted = rsa(2048)
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"secret")
            .unwrap();
        assert!(key_refusal(&String::from_utf8(encrypted).unwrap()).contains("encrypted"));
    }

    #[test]
    fn errors_never_show_the_key() {
        let key = rsa(2048);
        let pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let body: String = pem.lines().nth(1).unwrap().to_string();
        let mut file = key_file(&key);
        file["type"] = json!("authorized_user");
        let err = ServiceAccount::from_json(&serde_json::to_vec(&file).unwrap()).unwrap_err();
        assert!(!err.to_string().contains(&body));
        assert!(!format!("{err:?}").contains(&body));
        // A JSON syntax error after the key: serde_json gives a position only.
        let mut text = serde_json::to_string(&key_file(&key)).unwrap();
        text.push(',');
        let err = ServiceAccount::from_json(text.as_bytes()).unwrap_err();
        assert!(!err.to_string().contains(&body));
    }

    #[test]
    fn load_names_the_file() {
        let path = std::env::temp_dir().join(format!(
            "pushhub-fcm-credentials-missing-{}.json",
            std::process::id()
        ));
        let err = ServiceAccount::load(&path).unwrap_err();
        assert!(matches!(err, CredentialsError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().contains("pushhub-fcm-credentials-missing"),
            "{err}"
        );

        let key = rsa(2048);
        let path = std::env::temp_dir().join(format!(
            "pushhub-fcm-credentials-{}.json",
            std::process::id()
        ));
        std::fs::write(&path, serde_json::to_vec(&key_file(&key)).unwrap()).unwrap();
        let loaded = ServiceAccount::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.unwrap().project_id, "test-project");
    }
}
