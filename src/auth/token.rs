//! HS256 JSON Web Tokens whose `sub` is the uid: verified for clients,
//! minted for backends, the CLI, the load generator and the tests.
//!
//! Pure functions over bytes and a clock value: no I/O, no state. The signature is
//! checked before the claims are parsed, so an unsigned payload never reaches serde.

use std::fmt;

use data_encoding::BASE64URL_NOPAD;
use hmac::Mac;
use serde::{Deserialize, Serialize};

use super::{Secret, valid_uid};

/// Longest token looked at, so a huge first message costs no decoding work.
const MAX_TOKEN_LEN: usize = 4096;

/// Why a token was refused. The `Display` text becomes the WebSocket close reason,
/// so it stays short (a close reason holds at most 123 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts, or a part is not the JSON it should be.
    Malformed,
    /// The header names an algorithm other than HS256 (including `none`).
    UnsupportedAlgorithm,
    /// The signature does not match: wrong secret or a tampered token.
    BadSignature,
    /// `exp` is missing: tokens that never expire are not accepted.
    MissingExpiry,
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `sub` is missing, empty, not a string, or longer than [`super::MAX_UID_LEN`].
    BadSubject,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::UnsupportedAlgorithm => "token algorithm must be HS256",
            TokenError::BadSignature => "bad token signature",
            TokenError::MissingExpiry => "token has no exp claim",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid (nbf)",
            TokenError::BadSubject => "token sub must be a uid of 1 to 256 bytes",
        })
    }
}

impl std::error::Error for TokenError {}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: &'a str,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// Checks an HS256 token against `secret` at time `now` (Unix seconds) and returns its uid.
pub fn verify(token: &str, secret: &Secret, now: u64) -> Result<String, TokenError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_part), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_json = decode(header_part)?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    let signature = decode(signature)?;
    let signed = &token[..header_part.len() + 1 + payload.len()];
    let mut mac = secret.mac();
    mac.update(signed.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;

    let claims: Claims =
        serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
    let now = now as f64;
    match claims.exp {
        None => return Err(TokenError::MissingExpiry),
        Some(exp) if exp <= now => return Err(TokenError::Expired),
        Some(_) => {}
    }
    if claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(TokenError::NotYetValid);
    }
    match claims.sub {
        Some(serde_json::Value::String(uid)) if valid_uid(&uid) => Ok(uid),
        _ => Err(TokenError::BadSubject),
    }
}

fn decode(part: &str) -> Result<Vec<u8>, TokenError> {
    BASE64URL_NOPAD
        .decode(part.as_bytes())
        .map_err(|_| TokenError::Malformed)
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    exp: u64,
}

/// Makes an HS256 token for `uid` that expires at `exp` (Unix seconds): what a
/// backend does, offered here for the examples, the load generator and the tests.
pub fn mint(secret: &Secret, uid: &str, exp: u64) -> String {
    let header = BASE64URL_NOPAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::to_vec(&MintClaims { sub: uid, exp })
        .expect("claims of a string and a number always serialize");
    let mut token = format!("{header}.{}", BASE64URL_NOPAD.encode(&claims));
    let mut mac = secret.mac();
    mac.update(token.as_bytes());
    let signature = mac.finalize().into_bytes();
    token.push('.');
    token.push_str(&BASE64URL_NOPAD.encode(&signature));
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn secret() -> Secret {
        Secret::from_file_contents(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }

    fn sign(header: &str, claims: &str, secret: &Secret) -> String {
        let mut token = format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(header.as_bytes()),
            BASE64URL_NOPAD.encode(claims.as_bytes())
        );
        let mut mac = secret.mac();
        mac.update(token.as_bytes());
        token.push('.');
        token.push_str(&BASE64URL_NOPAD.encode(&mac.finalize().into_bytes()));
        token
    }

    #[test]
    fn minted_token_verifies() {
        let token = mint(&secret(), "u1", NOW + 60);
        assert_eq!(verify(&token, &secret(), NOW), Ok("u1".to_string()));
    }

    #[test]
    fn known_vector_from_another_implementation() {
        // Signed with secret "secret" by Python's hmac module, independently of this code.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                     eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoyMDAwMDAwMDAwfQ.\
                     NKv2RjM6KhZtJXi_Ohrn7K9b1Bab071FkGdP8ojz4sQ";
        let secret = Secret::from_file_contents(b"secret").unwrap();
        assert_eq!(verify(token, &secret, NOW), Ok("user-42".to_string()));
    }

    #[test]
    fn refuses_bad_tokens() {
        let s = secret();
        let other = Secret::from_file_contents(b"another secret entirely").unwrap();
        let hs = r#"{"alg":"HS256"}"#;
        assert_eq!(
            verify(&mint(&other, "u1", NOW + 60), &s, NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&mint(&s, "u1", NOW - 1), &s, NOW),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&sign(hs, r#"{"sub":"u1"}"#, &s), &s, NOW),
            Err(TokenError::MissingExpiry)
        );
        assert_eq!(
            verify(
                &sign(
                    hs,
                    &format!(r#"{{"sub":"u1","exp":{},"nbf":{}}}"#, NOW + 60, NOW + 30),
                    &s
                ),
                &s,
                NOW
            ),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            verify(
                &sign(hs, &format!(r#"{{"sub":7,"exp":{}}}"#, NOW + 60), &s),
                &s,
                NOW
            ),
            Err(TokenError::BadSubject)
        );
        assert_eq!(
            verify(
                &sign(hs, &format!(r#"{{"sub":"","exp":{}}}"#, NOW + 60), &s),
                &s,
                NOW
            ),
            Err(TokenError::BadSubject)
        );
        assert_eq!(
            verify(
                &sign(r#"{"alg":"none"}"#, r#"{"sub":"u1","exp":9999999999}"#, &s),
                &s,
                NOW
            ),
            Err(TokenError::UnsupportedAlgorithm)
        );
        assert_eq!(
            verify(
                &sign(r#"{"alg":"HS512"}"#, r#"{"sub":"u1","exp":9999999999}"#, &s),
                &s,
                NOW
            ),
            Err(TokenError::UnsupportedAlgorithm)
        );
        for garbage in [
            "",
            "u1",
            "a.b",
            "a.b.c.d",
            "!!.??.##",
            "e30.e30.",
            &"x".repeat(5000),
        ] {
            assert_eq!(
                verify(garbage, &s, NOW),
                Err(TokenError::Malformed),
                "{garbage:?}"
            );
        }
        // A valid signature over a payload that is not JSON.
        let mut token = BASE64URL_NOPAD.encode(hs.as_bytes());
        token.push_str(".bm90IGpzb24");
        let mut mac = s.mac();
        mac.update(token.as_bytes());
        token.push('.');
        token.push_str(&BASE64URL_NOPAD.encode(&mac.finalize().into_bytes()));
        assert_eq!(verify(&token, &s, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let s = secret();
        let token = mint(&s, "u1", NOW + 60);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged =
            BASE64URL_NOPAD.encode(format!(r#"{{"sub":"admin","exp":{}}}"#, NOW + 60).as_bytes());
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), &s, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn every_reason_fits_a_close_frame() {
        for e in [
            TokenError::Malformed,
            TokenError::UnsupportedAlgorithm,
            TokenError::BadSignature,
            TokenError::MissingExpiry,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::BadSubject,
        ] {
            assert!(e.to_string().len() < 100);
        }
    }
}
