//! ES256 JWTs (RFC 7515, RFC 7518 §3.4): the signature both push services
//! ask of us, APNs for its provider token and Web Push for VAPID. Owns the
//! P-256 key check and the JOSE form of an ECDSA signature; what the claims
//! say is each service's business.

use data_encoding::BASE64URL_NOPAD;
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::sign::Signer;
use serde::Serialize;

/// Bytes of each of r and s in an ES256 signature.
const P256_SCALAR_BYTES: i32 = 32;

/// `Ok` for an EC key on P-256; otherwise what the key is ("an RSA key",
/// "an EC key on curve secp384r1"), for the caller's error.
pub(crate) fn check_p256(key: &PKey<Private>) -> Result<(), String> {
    match key.id() {
        Id::EC => {
            let curve = key.ec_key().ok().and_then(|ec| ec.group().curve_name());
            match curve {
                Some(Nid::X9_62_PRIME256V1) => Ok(()),
                Some(nid) => Err(format!(
                    "an EC key on curve {}",
                    nid.short_name().unwrap_or("(unnamed)")
                )),
                None => Err("an EC key on an unnamed curve".to_string()),
            }
        }
        Id::RSA => Err("an RSA key".to_string()),
        Id::ED25519 => Err("an Ed25519 key".to_string()),
        _ => Err("a key of another type".to_string()),
    }
}

/// `header.claims.signature`, each part base64url without padding.
pub(crate) fn jwt(
    key: &PKey<Private>,
    header: &impl Serialize,
    claims: &impl Serialize,
) -> Result<String, ErrorStack> {
    let header = serde_json::to_vec(header).expect("a JWT header of strings serializes");
    let claims = serde_json::to_vec(claims).expect("JWT claims of strings and numbers serialize");
    let mut token = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(&header),
        BASE64URL_NOPAD.encode(&claims)
    );
    let signature = sign(key, token.as_bytes())?;
    token.push('.');
    token.push_str(&BASE64URL_NOPAD.encode(&signature));
    Ok(token)
}

/// ECDSA P-256 over SHA-256, as JWS wants it: r and s, each left-padded to 32
/// bytes, end to end (OpenSSL gives a DER sequence of two integers, which
/// drops leading zero bytes).
pub(crate) fn sign(key: &PKey<Private>, data: &[u8]) -> Result<Vec<u8>, ErrorStack> {
    let mut signer = Signer::new(MessageDigest::sha256(), key)?;
    signer.update(data)?;
    let der = signer.sign_to_vec()?;
    let signature = EcdsaSig::from_der(&der)?;
    let mut jws = signature.r().to_vec_padded(P256_SCALAR_BYTES)?;
    jws.extend(signature.s().to_vec_padded(P256_SCALAR_BYTES)?);
    Ok(jws)
}
