//! RFC 8291 message encryption: one push message for one subscription, in
//! the `aes128gcm` content coding of RFC 8188, as the body of the POST to
//! the subscription's endpoint.
//!
//! The body is a header (a random salt, the record size, and our ephemeral
//! public key as the key id) and one record: a push message is a single
//! record by RFC 8291 §4, so a payload that does not fit one is refused
//! rather than split. Every message gets a new ephemeral key and salt, so no
//! two messages share a content-encryption key.
//!
//! Computation only: no I/O, no logging (the payload and the keys are the
//! user's). Everything that comes from outside (the subscription's keys, the
//! payload's size) is checked and refused with a typed error.

use std::fmt;

use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, KeyInit, Mac};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcGroupRef, EcKey, EcPoint, PointConversionForm};
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::Private;
use openssl::symm::{Cipher, encrypt_aead};
use sha2::Sha256;

/// The most a push service must accept as a message's body (RFC 8030 §7.2);
/// some refuse more.
pub const MAX_BODY: usize = 4096;

/// Bytes of the random salt that starts the header (RFC 8188 §2.1).
pub const SALT_LEN: usize = 16;

/// Bytes of a subscription's `auth` secret (RFC 8291 §3.2).
pub const AUTH_LEN: usize = 16;

/// Bytes of an uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
pub const POINT_LEN: usize = 65;

/// The record size written in the header. One record holds the whole
/// message, so any value of at least the record's length would do; 4096 is
/// what browsers and the RFC's example use, and it bounds the record by the
/// same limit as the body.
const RECORD_SIZE: u32 = 4096;

/// The AES-GCM tag that ends the record.
const TAG_LEN: usize = 16;

/// salt | rs (4) | idlen (1) | keyid (our public key).
const HEADER_LEN: usize = SALT_LEN + 4 + 1 + POINT_LEN;

/// The delimiter after the last (here: only) record's plaintext (RFC 8188 §2).
const LAST_RECORD: u8 = 0x02;

/// The largest payload that fits [`MAX_BODY`]: 4096 - 86 (header) - 1
/// (delimiter) - 16 (tag) = 3993 bytes, as RFC 8291 §4 computes it.
pub const MAX_PAYLOAD: usize = MAX_BODY - HEADER_LEN - 1 - TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

/// A subscription's keys were not what a browser gives: whose fault is the
/// subscription's (the page or the backend that stored it), never ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not base64url (`-` and `_`, as `PushSubscription.toJSON()` writes it).
    NotBase64url { key: &'static str },
    WrongLength {
        key: &'static str,
        expected: usize,
        found: usize,
    },
    /// 65 bytes, but not an uncompressed point (those start with 0x04).
    NotUncompressed,
    /// An uncompressed point that is not on the P-256 curve: ECDH with it
    /// would leak bits of our ephemeral key, so it is refused, not used.
    NotOnCurve,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotBase64url { key } => write!(
                f,
                "the subscription's `{key}` is not base64url; give keys.{key} of \
                 PushSubscription.toJSON() as it is"
            ),
            KeyError::WrongLength {
                key,
                expected,
                found,
            } => write!(
                f,
                "the subscription's `{key}` is {found} bytes, not {expected}; give keys.{key} \
                 of PushSubscription.toJSON() as it is"
            ),
            KeyError::NotUncompressed => f.write_str(
                "the subscription's `p256dh` is not an uncompressed P-256 point (it does not \
                 start with 0x04)",
            ),
            KeyError::NotOnCurve => {
                f.write_str("the subscription's `p256dh` is not a point on the P-256 curve")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// A message could not be encrypted.
#[derive(Debug)]
pub enum EncryptError {
    /// The payload does not fit one record of a body that push services must
    /// accept: the sender's fault, and the same payload would fail again.
    TooLarge { len: usize },
    /// OpenSSL failed on inputs that were checked: ours (or the library's).
    Crypto(ErrorStack),
}

impl fmt::Display for EncryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncryptError::TooLarge { len } => write!(
                f,
                "payload of {len} bytes is over Web Push's {MAX_PAYLOAD} (a body of at most \
                 {MAX_BODY} bytes once encrypted)"
            ),
            EncryptError::Crypto(e) => write!(f, "encryption failed in OpenSSL: {e}"),
        }
    }
}

impl std::error::Error for EncryptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EncryptError::Crypto(e) => Some(e),
            EncryptError::TooLarge { .. } => None,
        }
    }
}

impl From<ErrorStack> for EncryptError {
    fn from(e: ErrorStack) -> Self {
        EncryptError::Crypto(e)
    }
}

/// A subscription's `keys`, checked: the browser's public key (`p256dh`)
/// and the authentication secret (`auth`).
pub struct SubscriptionKeys {
    /// As the browser gave it: the key derivation hashes these very bytes.
    ua_public: [u8; POINT_LEN],
    /// The same, decoded: a point of P-256.
    ua_point: EcPoint,
    auth: [u8; AUTH_LEN],
}

impl fmt::Debug for SubscriptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The auth secret is what keeps a push service from reading the
        // messages: it stays out of logs.
        f.debug_struct("SubscriptionKeys")
            .field("p256dh", &BASE64URL_NOPAD.encode(&self.ua_public))
            .finish_non_exhaustive()
    }
}

impl SubscriptionKeys {
    /// The keys as `PushSubscription.toJSON().keys` gives them: base64url
    /// without padding. Padding is tolerated, since some backends store the
    /// keys padded.
    pub fn from_base64url(p256dh: &str, auth: &str) -> Result<SubscriptionKeys, KeyError> {
        let ua_public = decode_exact::<POINT_LEN>("p256dh", p256dh)?;
        let auth = decode_exact::<AUTH_LEN>("auth", auth)?;
        SubscriptionKeys::from_bytes(ua_public, auth)
    }

    /// The keys as bytes: a 65-byte uncompressed point and a 16-byte secret.
    pub fn from_bytes(
        ua_public: [u8; POINT_LEN],
        auth: [u8; AUTH_LEN],
    ) -> Result<SubscriptionKeys, KeyError> {
        if ua_public[0] != 0x04 {
            return Err(KeyError::NotUncompressed);
        }
        let ua_point = public_point(&ua_public).ok_or(KeyError::NotOnCurve)?;
        Ok(SubscriptionKeys {
            ua_public,
            ua_point,
            auth,
        })
    }

    /// `p256dh`, base64url without padding.
    pub fn p256dh(&self) -> String {
        BASE64URL_NOPAD.encode(&self.ua_public)
    }
}

fn decode_exact<const N: usize>(key: &'static str, text: &str) -> Result<[u8; N], KeyError> {
    let bytes = BASE64URL_NOPAD
        .decode(text.trim_end_matches('=').as_bytes())
        .map_err(|_| KeyError::NotBase64url { key })?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongLength {
        key,
        expected: N,
        found: bytes.len(),
    })
}

thread_local! {
    /// P-256, made once: OpenSSL takes as long to make the group as to
    /// generate a key on it.
    static P256: Option<EcGroup> = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).ok();
}

/// Runs `f` with P-256.
fn with_p256<T>(f: impl FnOnce(&EcGroupRef) -> Result<T, ErrorStack>) -> Result<T, ErrorStack> {
    P256.with(|group| match group {
        Some(group) => f(group),
        None => Err(ErrorStack::get()),
    })
}

/// The P-256 point at `point`, or `None` when it is not one: OpenSSL refuses
/// points off the curve when it decodes them, and an uncompressed encoding
/// cannot be the point at infinity. (P-256's cofactor is 1: every point on
/// the curve but infinity is in the group, so nothing more is to check.)
fn public_point(point: &[u8; POINT_LEN]) -> Option<EcPoint> {
    with_p256(|group| {
        let mut ctx = BigNumContext::new()?;
        let point = EcPoint::from_bytes(group, point, &mut ctx)?;
        match point.is_on_curve(group, &mut ctx)? && !point.is_infinity(group) {
            true => Ok(Some(point)),
            false => Ok(None),
        }
    })
    .ok()
    .flatten()
}

/// The body of one push message of `payload` for the subscription `keys`,
/// with a fresh salt and ephemeral key.
pub fn encrypt(keys: &SubscriptionKeys, payload: &[u8]) -> Result<Vec<u8>, EncryptError> {
    // Checked before anything is generated: a refusal costs nothing.
    if payload.len() > MAX_PAYLOAD {
        return Err(EncryptError::TooLarge { len: payload.len() });
    }
    let mut salt = [0u8; SALT_LEN];
    openssl::rand::rand_bytes(&mut salt)?;
    let ephemeral = with_p256(EcKey::generate)?;
    encrypt_with(keys, payload, &salt, ephemeral)
}

/// [`encrypt`] with the salt and the ephemeral key given, so that a test can
/// reproduce a known body.
fn encrypt_with(
    keys: &SubscriptionKeys,
    payload: &[u8],
    salt: &[u8; SALT_LEN],
    ephemeral: EcKey<Private>,
) -> Result<Vec<u8>, EncryptError> {
    let mut ctx = BigNumContext::new()?;
    let as_public = ephemeral.public_key().to_bytes(
        ephemeral.group(),
        PointConversionForm::UNCOMPRESSED,
        &mut ctx,
    )?;
    // ECDH: the x coordinate of the browser's point times our secret, as
    // OpenSSL's own ECDH computes it (a constant-time ladder), without the
    // EVP key objects that cost more than the multiplication.
    let ecdh_secret = with_p256(|group| {
        let mut shared = EcPoint::new(group)?;
        shared.mul2(group, &keys.ua_point, ephemeral.private_key(), &mut ctx)?;
        let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
        shared.affine_coordinates(group, &mut x, &mut y, &mut ctx)?;
        x.to_vec_padded(32)
    })?;

    let (cek, nonce) = content_keys(&ecdh_secret, keys, &as_public, salt);

    let mut record = Vec::with_capacity(payload.len() + 1);
    record.extend_from_slice(payload);
    record.push(LAST_RECORD);
    let mut tag = [0u8; TAG_LEN];
    let sealed = encrypt_aead(
        Cipher::aes_128_gcm(),
        &cek,
        Some(&nonce),
        &[],
        &record,
        &mut tag,
    )?;

    let mut body = Vec::with_capacity(HEADER_LEN + sealed.len() + TAG_LEN);
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    // Our public key is the key id, so its length fits the one-byte idlen.
    body.push(POINT_LEN as u8);
    body.extend_from_slice(&as_public);
    body.extend_from_slice(&sealed);
    body.extend_from_slice(&tag);
    Ok(body)
}

/// The content-encryption key and the nonce of RFC 8291 §3.4 and RFC 8188
/// §2.2–2.3. Each HKDF here wants at most 32 bytes, one block of SHA-256,
/// so HKDF-Expand is a single HMAC over `info || 0x01`.
fn content_keys(
    ecdh_secret: &[u8],
    keys: &SubscriptionKeys,
    as_public: &[u8],
    salt: &[u8; SALT_LEN],
) -> ([u8; 16], [u8; 12]) {
    let prk_key = hmac(&keys.auth, &[ecdh_secret]);
    let ikm = hmac(
        &prk_key,
        &[b"WebPush: info\0", &keys.ua_public, as_public, &[1]],
    );
    let prk = hmac(salt, &[&ikm]);
    let cek = hmac(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]]);
    let nonce = hmac(&prk, &[b"Content-Encoding: nonce\0", &[1]]);
    let mut key = [0u8; 16];
    key.copy_from_slice(&cek[..16]);
    let mut iv = [0u8; 12];
    iv.copy_from_slice(&nonce[..12]);
    (key, iv)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    use openssl::derive::Deriver;
    use openssl::pkey::PKey;
    use openssl::symm::decrypt_aead;

    // RFC 8291 Appendix A, "Intermediate Values for Encryption".
    const PLAINTEXT: &[u8] = b"When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn b64(text: &str) -> Vec<u8> {
        BASE64URL_NOPAD.decode(text.as_bytes()).unwrap()
    }

    /// The P-256 key with private scalar `d` (base64url), its public point
    /// computed from it.
    fn key_from_scalar(d: &str) -> EcKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let d = BigNum::from_slice(&b64(d)).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let mut point = EcPoint::new(&group).unwrap();
        point.mul_generator2(&group, &d, &mut ctx).unwrap();
        EcKey::from_private_components(&group, &d, &point).unwrap()
    }

    fn rfc_keys() -> SubscriptionKeys {
        SubscriptionKeys::from_base64url(UA_PUBLIC, AUTH).unwrap()
    }

    fn rfc_salt() -> [u8; SALT_LEN] {
        b64(SALT).try_into().unwrap()
    }

    fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// HKDF (RFC 5869) for outputs of at most one block, written from the
    /// RFCs for the receiving side, apart from the code under test.
    fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
        let prk = hmac_sha256(salt, ikm);
        let mut t = info.to_vec();
        t.push(1);
        hmac_sha256(&prk, &t)[..len].to_vec()
    }

    /// What a browser does with a body (RFC 8188 §2, RFC 8291 §3.4 from the
    /// receiver's side): reads the header, derives the keys from its own
    /// private key, opens the record and strips the delimiter.
    fn browser_decrypts(body: &[u8], ua_private: &EcKey<Private>, auth: &[u8]) -> Vec<u8> {
        let salt = &body[..16];
        let rs = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
        let idlen = body[20] as usize;
        let as_public = &body[21..21 + idlen];
        let record = &body[21 + idlen..];
        assert!(record.len() <= rs, "one record of at most rs bytes");

        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let sender = EcPoint::from_bytes(&group, as_public, &mut ctx).unwrap();
        let sender = PKey::from_ec_key(EcKey::from_public_key(&group, &sender).unwrap()).unwrap();
        let ua_public = ua_private
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        let me = PKey::from_ec_key(ua_private.clone()).unwrap();
        let mut deriver = Deriver::new(&me).unwrap();
        deriver.set_peer(&sender).unwrap();
        let shared = deriver.derive_to_vec().unwrap();

        let info = [&b"WebPush: info\0"[..], &ua_public, as_public].concat();
        let ikm = hkdf(auth, &shared, &info, 32);
        let cek = hkdf(salt, &ikm, b"Content-Encoding: aes128gcm\0", 16);
        let nonce = hkdf(salt, &ikm, b"Content-Encoding: nonce\0", 12);

        let (sealed, tag) = record.split_at(record.len() - 16);
        let mut plain =
            decrypt_aead(Cipher::aes_128_gcm(), &cek, Some(&nonce), &[], sealed, tag).unwrap();
        assert_eq!(plain.pop(), Some(0x02), "the last record's delimiter");
        plain
    }

    #[test]
    fn reproduces_rfc_8291_appendix_a_byte_for_byte() {
        let body = encrypt_with(
            &rfc_keys(),
            PLAINTEXT,
            &rfc_salt(),
            key_from_scalar(AS_PRIVATE),
        )
        .unwrap();
        assert_eq!(BASE64URL_NOPAD.encode(&body), BODY);
        // The key id is the sender's public key of the vector.
        assert_eq!(&body[21..86], &b64(AS_PUBLIC)[..]);
    }

    #[test]
    fn a_browser_decrypts_the_rfc_vector_and_a_random_message() {
        let ua = key_from_scalar(UA_PRIVATE);
        let auth = b64(AUTH);
        assert_eq!(browser_decrypts(&b64(BODY), &ua, &auth), PLAINTEXT);

        let message = b"{\"title\":\"hi\",\"body\":\"\xc3\xa9t\xc3\xa9\"}";
        let body = encrypt(&rfc_keys(), message).unwrap();
        assert_eq!(body.len(), HEADER_LEN + message.len() + 1 + TAG_LEN);
        assert_eq!(&body[16..21], &[0, 0, 0x10, 0, 65]);
        assert_eq!(browser_decrypts(&body, &ua, &auth), message);

        // A fresh salt and key each time: two bodies of the same message differ.
        let again = encrypt(&rfc_keys(), message).unwrap();
        assert_ne!(again[..86], body[..86]);
        assert_eq!(browser_decrypts(&again, &ua, &auth), message);
    }

    #[test]
    fn the_largest_payload_fits_4096_bytes_and_one_more_is_refused() {
        let ua = key_from_scalar(UA_PRIVATE);
        let largest = vec![b'x'; MAX_PAYLOAD];
        let body = encrypt(&rfc_keys(), &largest).unwrap();
        assert_eq!(body.len(), MAX_BODY);
        assert_eq!(browser_decrypts(&body, &ua, &b64(AUTH)), largest);

        let err = encrypt(&rfc_keys(), &vec![0; MAX_PAYLOAD + 1]).unwrap_err();
        assert!(matches!(err, EncryptError::TooLarge { len: 3994 }), "{err}");
        assert!(err.to_string().contains("3993"), "{err}");
        assert!(encrypt(&rfc_keys(), b"").is_ok());
    }

    #[test]
    fn refuses_keys_a_browser_would_not_give() {
        let mut off_curve = b64(UA_PUBLIC);
        off_curve[64] ^= 1;
        let mut compressed_tag = b64(UA_PUBLIC);
        compressed_tag[0] = 0x02;
        let zeros = [&[4u8][..], &[0; 64]].concat();
        let cases: [(String, &str, KeyError); 8] = [
            (
                BASE64URL_NOPAD.encode(&off_curve),
                AUTH,
                KeyError::NotOnCurve,
            ),
            (BASE64URL_NOPAD.encode(&zeros), AUTH, KeyError::NotOnCurve),
            (
                BASE64URL_NOPAD.encode(&compressed_tag),
                AUTH,
                KeyError::NotUncompressed,
            ),
            (
                BASE64URL_NOPAD.encode(&b64(UA_PUBLIC)[..33]),
                AUTH,
                KeyError::WrongLength {
                    key: "p256dh",
                    expected: 65,
                    found: 33,
                },
            ),
            (
                UA_PUBLIC.to_string(),
                "BTBZMqHH6r4Tts7J_aSI",
                KeyError::WrongLength {
                    key: "auth",
                    expected: 16,
                    found: 15,
                },
            ),
            (
                UA_PUBLIC.replace('-', "+").replace('_', "/"),
                AUTH,
                KeyError::NotBase64url { key: "p256dh" },
            ),
            (
                UA_PUBLIC.to_string(),
                "BTBZMqHH6r4Tts7J aSIgg",
                KeyError::NotBase64url { key: "auth" },
            ),
            (
                String::new(),
                AUTH,
                KeyError::WrongLength {
                    key: "p256dh",
                    expected: 65,
                    found: 0,
                },
            ),
        ];
        for (p256dh, auth, expected) in cases {
            let err = SubscriptionKeys::from_base64url(&p256dh, auth).unwrap_err();
            assert_eq!(err, expected, "{p256dh} {auth}");
            assert!(!err.to_string().is_empty());
        }
        // Padded keys are the same keys.
        let padded =
            SubscriptionKeys::from_base64url(&format!("{UA_PUBLIC}="), "BTBZMqHH6r4Tts7J_aSIgg==")
                .unwrap();
        assert_eq!(padded.p256dh(), UA_PUBLIC);
    }

    #[test]
    fn debug_hides_the_auth_secret() {
        let shown = format!("{:?}", rfc_keys());
        assert!(shown.contains(UA_PUBLIC), "{shown}");
        assert!(!shown.contains(AUTH), "{shown}");
    }
}
