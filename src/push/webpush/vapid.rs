//! RFC 8292 VAPID: the application server's P-256 key ([`VapidKey`]), the
//! ES256 JWT that proves a request comes from its holder, and the
//! `Authorization: vapid t=<jwt>, k=<public key>` header that carries both.
//!
//! The JWT's `aud` is the origin of the push service ([`Audience`], from a
//! subscription's endpoint), its `sub` a contact for the push service's
//! operators ([`Subject`]), its `exp` 12 hours away (RFC 8292 §2 allows at
//! most 24). [`VapidSigner`] keeps one JWT per audience and signs again
//! within an hour of its expiry, so a busy push service costs one signature
//! every 11 hours rather than one per message.
//!
//! Computation over a clock value given by the caller; no I/O. The private
//! key never leaves this module but through [`VapidKey::to_pem`], and `Debug`
//! shows only the public key.

use std::collections::HashMap;
use std::fmt;

use data_encoding::BASE64URL_NOPAD;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use serde::Serialize;

use crate::push::es256;

/// How long a JWT is valid (seconds): half of RFC 8292's 24-hour maximum, so
/// that a clock ahead of the push service's by hours is still accepted.
pub const TOKEN_LIFETIME: u64 = 12 * 3600;

/// A cached JWT this close to its `exp` (seconds) is replaced: a request
/// signed with it may wait in a queue, and clocks disagree.
pub const RESIGN_BEFORE: u64 = 3600;

/// Audiences whose JWT is kept: one per push service, and there are a
/// handful (Mozilla's, Google's, Apple's, Microsoft's), so 64 is room for
/// all of them and bounds what odd endpoints can make us keep.
pub const CACHE_ENTRIES: usize = 64;

/// The longest subject accepted: a contact address, not a document.
const MAX_SUBJECT: usize = 256;

/// The application server's key: a P-256 private key.
pub struct VapidKey {
    key: PKey<Private>,
    /// The uncompressed public point, as pages and push services take it.
    public: [u8; 65],
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public_key_base64url())
            .finish_non_exhaustive()
    }
}

/// A VAPID key file that cannot be used.
#[derive(Debug)]
pub enum VapidKeyError {
    /// Not an unencrypted private key in PEM, or a damaged one.
    Malformed(String),
    /// A key, but not a P-256 one: what it is.
    NotP256 { found: String },
}

impl fmt::Display for VapidKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VapidKeyError::Malformed(detail) => write!(
                f,
                "the VAPID key is not an unencrypted PEM private key ({detail}); give the file \
                 `pushhub vapid-keygen` wrote, or one from \
                 `openssl ecparam -genkey -name prime256v1`"
            ),
            VapidKeyError::NotP256 { found } => write!(
                f,
                "the VAPID key is {found}, not an EC P-256 key, which is all VAPID signs with; \
                 make one with `pushhub vapid-keygen`"
            ),
        }
    }
}

impl std::error::Error for VapidKeyError {}

impl VapidKey {
    /// A P-256 private key in PEM: SEC1 (`EC PRIVATE KEY`, what `openssl
    /// ecparam -genkey -name prime256v1` writes, with or without the `EC
    /// PARAMETERS` block it puts first) or PKCS#8 (`PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<VapidKey, VapidKeyError> {
        // Through a callback that refuses: without one, OpenSSL would prompt
        // for the password of an encrypted key on the terminal.
        let key = PKey::private_key_from_pem_callback(pem, |_| Err(ErrorStack::get()))
            .map_err(|e| VapidKeyError::Malformed(e.to_string()))?;
        es256::check_p256(&key).map_err(|found| VapidKeyError::NotP256 { found })?;
        // Sign once now, so that a key OpenSSL cannot sign with is refused
        // when it is loaded rather than at the first push.
        es256::sign(&key, b"probe").map_err(|e| VapidKeyError::Malformed(e.to_string()))?;
        VapidKey::new(key).map_err(|e| VapidKeyError::Malformed(e.to_string()))
    }

    /// A new random key.
    pub fn generate() -> Result<VapidKey, ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        VapidKey::new(PKey::from_ec_key(EcKey::generate(&group)?)?)
    }

    fn new(key: PKey<Private>) -> Result<VapidKey, ErrorStack> {
        let ec = key.ec_key()?;
        let mut ctx = BigNumContext::new()?;
        let point =
            ec.public_key()
                .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)?;
        // A P-256 point in uncompressed form is always 65 bytes.
        let public = <[u8; 65]>::try_from(point.as_slice()).map_err(|_| ErrorStack::get())?;
        Ok(VapidKey { key, public })
    }

    /// The key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), which
    /// [`VapidKey::from_pem`] and `openssl pkey` read.
    pub fn to_pem(&self) -> Result<Vec<u8>, ErrorStack> {
        self.key.private_key_to_pem_pkcs8()
    }

    /// The public key, uncompressed, base64url without padding: what a page
    /// gives `pushManager.subscribe` as `applicationServerKey`, and the `k`
    /// of the `Authorization` header.
    pub fn public_key_base64url(&self) -> String {
        BASE64URL_NOPAD.encode(&self.public)
    }

    /// The VAPID JWT for `audience`, from `subject`, expiring at `exp`.
    pub fn jwt(
        &self,
        audience: &Audience,
        subject: &Subject,
        exp: u64,
    ) -> Result<String, ErrorStack> {
        let claims = Claims {
            aud: &audience.0,
            exp,
            sub: &subject.0,
        };
        es256::jwt(
            &self.key,
            &Header {
                typ: "JWT",
                alg: "ES256",
            },
            &claims,
        )
    }

    /// The `Authorization` header's value for a JWT this key signed.
    pub fn authorization(&self, jwt: &str) -> String {
        format!("vapid t={jwt}, k={}", self.public_key_base64url())
    }
}

#[derive(Serialize)]
struct Header {
    typ: &'static str,
    alg: &'static str,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

/// The origin of a push service, `https://host[:port]` (the port only when
/// it is not 443, as RFC 6454 serializes an origin): a JWT's `aud`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Audience(String);

/// Why an endpoint has no audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// Not a URL with a host.
    NotUrl,
    /// A URL, but not `https://`: push services are reached over TLS only,
    /// and a subscription that says otherwise is not a browser's.
    NotHttps,
    /// `user:password@` in the URL, which no push service gives.
    UserInfo,
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointError::NotUrl => "the endpoint is not a URL with a host",
            EndpointError::NotHttps => "the endpoint is not an https:// URL",
            EndpointError::UserInfo => "the endpoint has a user name or password in it",
        })
    }
}

impl std::error::Error for EndpointError {}

impl Audience {
    /// The audience of a subscription's endpoint URL. Only `https://` is
    /// accepted, tests included: a test push service speaks TLS with its own
    /// CA, as the APNs tests do.
    pub fn of_endpoint(endpoint: &str) -> Result<Audience, EndpointError> {
        let uri = http::Uri::try_from(endpoint).map_err(|_| EndpointError::NotUrl)?;
        match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => {}
            Some(_) => return Err(EndpointError::NotHttps),
            None => return Err(EndpointError::NotUrl),
        }
        let authority = uri.authority().ok_or(EndpointError::NotUrl)?;
        if authority.as_str().contains('@') {
            return Err(EndpointError::UserInfo);
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(EndpointError::NotUrl);
        }
        Ok(Audience(match authority.port_u16() {
            None | Some(443) => format!("https://{host}"),
            Some(port) => format!("https://{host}:{port}"),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A JWT's `sub`: how the push service's operators reach whoever sends, a
/// `mailto:` address or an `https:` URL (RFC 8292 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(String);

/// Why a subject is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSubject;

impl fmt::Display for BadSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the VAPID subject must be a contact: mailto:someone@example.com or an https:// \
             URL, without spaces, at most {MAX_SUBJECT} bytes"
        )
    }
}

impl std::error::Error for BadSubject {}

impl Subject {
    pub fn parse(s: &str) -> Result<Subject, BadSubject> {
        if s.len() > MAX_SUBJECT || s.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(BadSubject);
        }
        let valid = if let Some(address) = s.strip_prefix("mailto:") {
            matches!(address.split_once('@'), Some((user, domain)) if !user.is_empty() && !domain.is_empty())
        } else if s.starts_with("https://") {
            Audience::of_endpoint(s).is_ok()
        } else {
            false
        };
        if valid {
            Ok(Subject(s.to_string()))
        } else {
            Err(BadSubject)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Signs VAPID `Authorization` headers with one key and subject, and keeps
/// each audience's header until it is due for replacement.
#[derive(Debug)]
pub struct VapidSigner {
    key: VapidKey,
    subject: Subject,
    /// Each audience's header and its JWT's `exp`.
    cache: HashMap<Audience, (String, u64)>,
}

impl VapidSigner {
    pub fn new(key: VapidKey, subject: Subject) -> VapidSigner {
        VapidSigner {
            key,
            subject,
            cache: HashMap::new(),
        }
    }

    pub fn key(&self) -> &VapidKey {
        &self.key
    }

    /// The `Authorization` header for a request to `audience` at `now` (Unix
    /// seconds): the cached one while its JWT has more than
    /// [`RESIGN_BEFORE`] to live, a new one otherwise.
    pub fn authorization(&mut self, audience: &Audience, now: u64) -> Result<&str, ErrorStack> {
        let fresh = matches!(
            self.cache.get(audience),
            // The second bound catches a clock that stepped back: a JWT
            // whose exp is then more than 24 hours away would be refused.
            Some(&(_, exp)) if now.saturating_add(RESIGN_BEFORE) < exp
                && exp <= now.saturating_add(TOKEN_LIFETIME)
        );
        if !fresh {
            let exp = now.saturating_add(TOKEN_LIFETIME);
            let jwt = self.key.jwt(audience, &self.subject, exp)?;
            let header = self.key.authorization(&jwt);
            if !self.cache.contains_key(audience) && self.cache.len() >= CACHE_ENTRIES {
                self.evict_soonest();
            }
            self.cache.insert(audience.clone(), (header, exp));
        }
        Ok(self
            .cache
            .get(audience)
            .map(|(header, _)| header.as_str())
            .expect("the audience's header was just checked or inserted"))
    }

    /// Drops the entry that expires first: the least recently signed, which
    /// would be signed again soonest anyway.
    fn evict_soonest(&mut self) {
        let soonest = self
            .cache
            .iter()
            .min_by_key(|(_, (_, exp))| *exp)
            .map(|(audience, _)| audience.clone());
        if let Some(audience) = soonest {
            self.cache.remove(&audience);
        }
    }

    /// How many audiences have a header kept.
    pub fn n_cached(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use openssl::bn::BigNum;
    use openssl::ecdsa::EcdsaSig;
    use openssl::hash::MessageDigest;
    use openssl::rsa::Rsa;
    use openssl::sign::Verifier;
    use openssl::symm::Cipher;

    const T0: u64 = 1_800_000_000;
    const HOUR: u64 = 3600;
    const ENDPOINT: &str = "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABc";

    fn subject() -> Subject {
        Subject::parse("mailto:ops@example.com").unwrap()
    }

    fn p256() -> EcKey<Private> {
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap()
    }

    fn decode_json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&BASE64URL_NOPAD.decode(part.as_bytes()).unwrap()).unwrap()
    }

    /// Verifies a JWT as a push service does: with the public key of the
    /// header's `k` alone, the signature turned back from r||s into DER.
    fn push_service_verifies(header: &str) -> serde_json::Value {
        let rest = header.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).unwrap();
        assert_eq!(signature.len(), 64);
        let der = EcdsaSig::from_private_components(
            BigNum::from_slice(&signature[..32]).unwrap(),
            BigNum::from_slice(&signature[32..]).unwrap(),
        )
        .unwrap()
        .to_der()
        .unwrap();

        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let point = BASE64URL_NOPAD.decode(k.as_bytes()).unwrap();
        let point = openssl::ec::EcPoint::from_bytes(&group, &point, &mut ctx).unwrap();
        let public = PKey::from_ec_key(EcKey::from_public_key(&group, &point).unwrap()).unwrap();
        let mut verifier = Verifier::new(MessageDigest::sha256(), &public).unwrap();
        verifier.update(signed.as_bytes()).unwrap();
        assert!(verifier.verify(&der).unwrap(), "the signature verifies");

        let (head, claims) = signed.split_once('.').unwrap();
        assert_eq!(
            decode_json(head),
            serde_json::json!({"typ": "JWT", "alg": "ES256"})
        );
        decode_json(claims)
    }

    #[test]
    fn signs_a_jwt_a_push_service_verifies() {
        let key = VapidKey::generate().unwrap();
        let public = key.public_key_base64url();
        let mut signer = VapidSigner::new(key, subject());
        let audience = Audience::of_endpoint(ENDPOINT).unwrap();
        let header = signer.authorization(&audience, T0).unwrap().to_string();
        assert!(header.ends_with(&format!(", k={public}")), "{header}");
        assert_eq!(
            push_service_verifies(&header),
            serde_json::json!({
                "aud": "https://updates.push.services.mozilla.com",
                "exp": T0 + 12 * HOUR,
                "sub": "mailto:ops@example.com",
            })
        );
        assert_eq!(BASE64URL_NOPAD.decode(public.as_bytes()).unwrap().len(), 65);
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }

    #[test]
    fn signatures_verify_when_r_or_s_is_short() {
        // About 1 in 128 signatures has an r or s with a leading zero byte.
        let key = VapidKey::generate().unwrap();
        let audience = Audience::of_endpoint(ENDPOINT).unwrap();
        for i in 0..300 {
            let jwt = key.jwt(&audience, &subject(), T0 + i).unwrap();
            push_service_verifies(&key.authorization(&jwt));
        }
    }

    #[test]
    fn a_header_is_reused_until_an_hour_before_expiry() {
        let mut signer = VapidSigner::new(VapidKey::generate().unwrap(), subject());
        let mozilla = Audience::of_endpoint(ENDPOINT).unwrap();
        let google = Audience::of_endpoint("https://fcm.googleapis.com/fcm/send/abc").unwrap();
        let first = signer.authorization(&mozilla, T0).unwrap().to_string();
        assert_eq!(
            signer.authorization(&mozilla, T0 + 10 * HOUR).unwrap(),
            first
        );
        assert_eq!(
            signer.authorization(&mozilla, T0 + 11 * HOUR - 1).unwrap(),
            first
        );
        let other = signer.authorization(&google, T0).unwrap().to_string();
        assert_ne!(other, first);
        assert_eq!(
            push_service_verifies(&other)["aud"],
            "https://fcm.googleapis.com"
        );

        let second = signer
            .authorization(&mozilla, T0 + 11 * HOUR)
            .unwrap()
            .to_string();
        assert_ne!(second, first);
        assert_eq!(push_service_verifies(&second)["exp"], T0 + 23 * HOUR);
        // A clock stepped back by more than 12 hours: signed again, since the
        // kept exp would be too far away.
        let stepped = signer.authorization(&mozilla, T0).unwrap().to_string();
        assert_eq!(push_service_verifies(&stepped)["exp"], T0 + 12 * HOUR);
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut signer = VapidSigner::new(VapidKey::generate().unwrap(), subject());
        for i in 0..CACHE_ENTRIES as u64 + 10 {
            let audience = Audience::of_endpoint(&format!("https://push{i}.example/x")).unwrap();
            signer.authorization(&audience, T0 + i).unwrap();
        }
        assert_eq!(signer.n_cached(), CACHE_ENTRIES);
    }

    #[test]
    fn audience_is_the_endpoints_https_origin() {
        for (endpoint, audience) in [
            (ENDPOINT, "https://updates.push.services.mozilla.com"),
            (
                "https://FCM.googleapis.com:443/fcm/send/x",
                "https://fcm.googleapis.com",
            ),
            (
                "HTTPS://web.push.apple.com/QGuQ?x=1",
                "https://web.push.apple.com",
            ),
            ("https://127.0.0.1:8443/push", "https://127.0.0.1:8443"),
            ("https://[::1]:8443/push", "https://[::1]:8443"),
        ] {
            assert_eq!(Audience::of_endpoint(endpoint).unwrap().as_str(), audience);
        }
        for (endpoint, err) in [
            ("http://127.0.0.1/push", EndpointError::NotHttps),
            ("http://localhost:8080/push", EndpointError::NotHttps),
            ("wss://push.example/", EndpointError::NotHttps),
            ("https://user:pw@push.example/", EndpointError::UserInfo),
            ("/wpush/v2/abc", EndpointError::NotUrl),
            ("", EndpointError::NotUrl),
            ("https://", EndpointError::NotUrl),
            ("not a url", EndpointError::NotUrl),
        ] {
            assert_eq!(Audience::of_endpoint(endpoint), Err(err), "{endpoint}");
        }
    }

    #[test]
    fn subject_is_a_mailto_or_https_contact() {
        for good in ["mailto:ops@example.com", "https://example.com/contact"] {
            assert_eq!(Subject::parse(good).unwrap().as_str(), good);
        }
        let long = format!("mailto:{}@example.com", "a".repeat(256));
        for bad in [
            "",
            "ops@example.com",
            "mailto:",
            "mailto:@example.com",
            "mailto:ops@",
            "mailto:ops @example.com",
            "http://example.com",
            "https://",
            "mailto:ops@example.com\n",
            &long,
        ] {
            assert_eq!(Subject::parse(bad), Err(BadSubject), "{bad:?}");
        }
    }

    /// The block `openssl ecparam -name prime256v1` writes before the key:
    /// the DER of the curve's OID, 1.2.840.10045.3.1.7.
    fn ec_parameters() -> Vec<u8> {
        let oid = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        format!(
            "-----BEGIN EC PARAMETERS-----\n{}\n-----END EC PARAMETERS-----\n",
            data_encoding::BASE64.encode(&oid)
        )
        .into_bytes()
    }

    /// What `openssl ecparam -genkey -name prime256v1` writes: the curve's
    /// parameters, then the SEC1 key.
    fn ecparam_genkey(key: &EcKey<Private>) -> Vec<u8> {
        let mut pem = ec_parameters();
        pem.extend(key.private_key_to_pem().unwrap());
        pem
    }

    #[test]
    fn reads_sec1_and_pkcs8_pem() {
        let ec = p256();
        let expected = VapidKey::new(PKey::from_ec_key(ec.clone()).unwrap())
            .unwrap()
            .public_key_base64url();

        let sec1 = ec.private_key_to_pem().unwrap();
        assert!(sec1.starts_with(b"-----BEGIN EC PRIVATE KEY-----"));
        let with_params = ecparam_genkey(&ec);
        let pkcs8 = PKey::from_ec_key(ec)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        assert!(pkcs8.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        for pem in [&sec1, &with_params, &pkcs8] {
            let key = VapidKey::from_pem(pem).unwrap();
            assert_eq!(key.public_key_base64url(), expected);
        }

        // to_pem writes PKCS#8 that reads back as the same key.
        let key = VapidKey::generate().unwrap();
        let pem = key.to_pem().unwrap();
        assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        let again = VapidKey::from_pem(&pem).unwrap();
        assert_eq!(again.public_key_base64url(), key.public_key_base64url());
    }

    #[test]
    fn refuses_other_keys_and_garbage() {
        let p384 = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        for (pem, found) in [
            (p384.private_key_to_pem().unwrap(), "secp384r1"),
            (rsa.private_key_to_pem_pkcs8().unwrap(), "an RSA key"),
        ] {
            let err = VapidKey::from_pem(&pem).unwrap_err();
            assert!(
                matches!(&err, VapidKeyError::NotP256 { found: f } if f.contains(found)),
                "{err}"
            );
            assert!(err.to_string().contains("P-256"), "{err}");
        }

        let encrypted = PKey::from_ec_key(p256())
            .unwrap()
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"secret")
            .unwrap();
        let public_only = PKey::from_ec_key(p256())
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        for garbage in [
            &b""[..],
            b"not a key",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            &ec_parameters(),
            &encrypted,
            &public_only,
        ] {
            let err = VapidKey::from_pem(garbage).unwrap_err();
            assert!(matches!(err, VapidKeyError::Malformed(_)), "{err}");
            assert!(err.to_string().contains("vapid-keygen"), "{err}");
        }
    }
}
