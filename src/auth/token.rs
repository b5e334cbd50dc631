//! HS256 JSON Web Tokens whose `sub` is the uid, and whose optional
//! `channels`, `publish` and `subs` claims are its [`Grants`]: verified for
//! clients, minted for backends, the CLI, the load generator and the tests.
//!
//! Pure functions over bytes and a clock value: no I/O, no state. The signature is
//! checked before the claims are parsed, so an unsigned payload never reaches serde.

use std::fmt;

use data_encoding::BASE64URL_NOPAD;
use hmac::Mac;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{Grants, Secret, valid_uid};
use crate::channel::{Pattern, check_name};

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
    /// This grant claim (`channels`, `publish` or `subs`) is not a list of
    /// channel patterns (of channel names, for `subs`). Refused rather than
    /// ignored: a backend that meant to grant something must hear it did not.
    BadGrant(&'static str),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed => f.write_str("malformed token"),
            TokenError::UnsupportedAlgorithm => f.write_str("token algorithm must be HS256"),
            TokenError::BadSignature => f.write_str("bad token signature"),
            TokenError::MissingExpiry => f.write_str("token has no exp claim"),
            TokenError::Expired => f.write_str("token expired"),
            TokenError::NotYetValid => f.write_str("token not yet valid (nbf)"),
            TokenError::BadSubject => f.write_str("token sub must be a uid of 1 to 256 bytes"),
            TokenError::BadGrant("subs") => {
                f.write_str("token subs must be a list of channel names")
            }
            TokenError::BadGrant(claim) => {
                write!(f, "token {claim} must be a list of channel patterns")
            }
        }
    }
}

impl std::error::Error for TokenError {}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: &'a str,
}

#[derive(Deserialize)]
struct Claims<'a> {
    sub: Option<serde_json::Value>,
    exp: Option<f64>,
    nbf: Option<f64>,
    // Kept raw until the token is known to be valid otherwise, and so that a
    // grant of the wrong type is refused as a bad grant, not as malformed.
    #[serde(borrow)]
    channels: Option<&'a RawValue>,
    #[serde(borrow)]
    publish: Option<&'a RawValue>,
    #[serde(borrow)]
    subs: Option<&'a RawValue>,
}

/// What a valid token proves: who the client is, and what it may do with channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub uid: String,
    pub grants: Grants,
}

/// Checks an HS256 token against `secret` at time `now` (Unix seconds) and
/// returns its uid and grants.
pub fn verify(token: &str, secret: &Secret, now: u64) -> Result<Verified, TokenError> {
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

    let payload = decode(payload)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    let now = now as f64;
    match claims.exp {
        None => return Err(TokenError::MissingExpiry),
        Some(exp) if exp <= now => return Err(TokenError::Expired),
        Some(_) => {}
    }
    if claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(TokenError::NotYetValid);
    }
    let uid = match claims.sub {
        Some(serde_json::Value::String(uid)) if valid_uid(&uid) => uid,
        _ => return Err(TokenError::BadSubject),
    };
    let grants = Grants {
        channels: grant(claims.channels, "channels", Pattern::parse)?,
        publish: grant(claims.publish, "publish", Pattern::parse)?,
        subs: grant(claims.subs, "subs", |name| {
            check_name(name).map(|()| name.to_string())
        })?,
    };
    Ok(Verified { uid, grants })
}

/// One grant claim: absent (or `null`) grants nothing; otherwise a list of
/// strings, each accepted by `parse`.
fn grant<T, E>(
    raw: Option<&RawValue>,
    claim: &'static str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>, TokenError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let items: Vec<String> =
        serde_json::from_str(raw.get()).map_err(|_| TokenError::BadGrant(claim))?;
    items
        .iter()
        .map(|item| parse(item).map_err(|_| TokenError::BadGrant(claim)))
        .collect()
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
    #[serde(skip_serializing_if = "<[_]>::is_empty", serialize_with = "patterns")]
    channels: &'a [Pattern],
    #[serde(skip_serializing_if = "<[_]>::is_empty", serialize_with = "patterns")]
    publish: &'a [Pattern],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    subs: &'a [String],
}

fn patterns<S: Serializer>(patterns: &&[Pattern], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(patterns.iter().map(Pattern::to_string))
}

/// Makes an HS256 token for `uid` that expires at `exp` (Unix seconds), with
/// no grants: what a backend does, offered here for the examples, the load
/// generator and the tests.
pub fn mint(secret: &Secret, uid: &str, exp: u64) -> String {
    mint_with_grants(secret, uid, exp, &Grants::default())
}

/// [`mint`] with `grants` as the `channels`, `publish` and `subs` claims. An
/// empty grant is left out, so a token without grants is exactly [`mint`]'s.
pub fn mint_with_grants(secret: &Secret, uid: &str, exp: u64, grants: &Grants) -> String {
    let header = BASE64URL_NOPAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = MintClaims {
        sub: uid,
        exp,
        channels: &grants.channels,
        publish: &grants.publish,
        subs: &grants.subs,
    };
    let claims =
        serde_json::to_vec(&claims).expect("claims of strings and a number always serialize");
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

    fn uid(verified: Result<Verified, TokenError>) -> Result<String, TokenError> {
        verified.map(|v| v.uid)
    }

    fn patterns(texts: &[&str]) -> Vec<Pattern> {
        texts.iter().map(|t| Pattern::parse(t).unwrap()).collect()
    }

    #[test]
    fn minted_token_verifies() {
        let token = mint(&secret(), "u1", NOW + 60);
        assert_eq!(
            verify(&token, &secret(), NOW),
            Ok(Verified {
                uid: "u1".to_string(),
                grants: Grants::default(),
            })
        );
    }

    #[test]
    fn a_token_without_grants_is_minted_as_before() {
        let token = mint_with_grants(&secret(), "u1", 1234, &Grants::default());
        assert_eq!(token, mint(&secret(), "u1", 1234));
        let payload = token.split('.').nth(1).unwrap();
        let claims = BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap();
        assert_eq!(claims, br#"{"sub":"u1","exp":1234}"#);
    }

    #[test]
    fn grants_round_trip() {
        let grants = Grants {
            channels: patterns(&["news", "room:*", "*"]),
            publish: patterns(&["chat:*"]),
            subs: vec!["news".to_string(), "a\"b\\c".to_string()],
        };
        let token = mint_with_grants(&secret(), "u1", NOW + 60, &grants);
        let payload = token.split('.').nth(1).unwrap();
        let claims = BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&claims).unwrap(),
            format!(
                r#"{{"sub":"u1","exp":{},"channels":["news","room:*","*"],"publish":["chat:*"],"subs":["news","a\"b\\c"]}}"#,
                NOW + 60
            )
        );
        let verified = verify(&token, &secret(), NOW).unwrap();
        assert_eq!(verified.grants, grants);
    }

    #[test]
    fn grants_are_read_from_any_issuer_and_null_is_none() {
        let s = secret();
        let claims = format!(
            r#"{{"sub":"u1","exp":{},"channels":["room:*"],"publish":null,"subs":[],"role":"x"}}"#,
            NOW + 60
        );
        let verified = verify(&sign(r#"{"alg":"HS256"}"#, &claims, &s), &s, NOW).unwrap();
        assert_eq!(
            verified.grants,
            Grants {
                channels: patterns(&["room:*"]),
                ..Grants::default()
            }
        );
    }

    #[test]
    fn refuses_bad_grants() {
        let s = secret();
        for (claim, value) in [
            ("channels", r#""room:*""#),
            ("channels", r#"["a b"]"#),
            ("channels", r#"["a*b"]"#),
            ("channels", r#"[""]"#),
            ("channels", "[1]"),
            ("publish", r#"["ok","**"]"#),
            ("publish", "{}"),
            ("subs", r#"["room:*"]"#),
            ("subs", r#"["caf\u00e9"]"#),
            ("subs", "true"),
        ] {
            let claims = format!(r#"{{"sub":"u1","exp":{},"{claim}":{value}}}"#, NOW + 60);
            let token = sign(r#"{"alg":"HS256"}"#, &claims, &s);
            assert_eq!(
                verify(&token, &s, NOW),
                Err(TokenError::BadGrant(claim)),
                "{claims}"
            );
        }
        // The other claims are checked first: a bad grant in an expired token
        // is an expired token.
        let expired = format!(r#"{{"sub":"u1","exp":{},"subs":1}}"#, NOW - 1);
        assert_eq!(
            verify(&sign(r#"{"alg":"HS256"}"#, &expired, &s), &s, NOW),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn known_vector_from_another_implementation() {
        // Signed with secret "secret" by Python's hmac module, independently of this code.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                     eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoyMDAwMDAwMDAwfQ.\
                     NKv2RjM6KhZtJXi_Ohrn7K9b1Bab071FkGdP8ojz4sQ";
        let secret = Secret::from_file_contents(b"secret").unwrap();
        assert_eq!(uid(verify(token, &secret, NOW)), Ok("user-42".to_string()));
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
            TokenError::BadGrant("channels"),
            TokenError::BadGrant("publish"),
            TokenError::BadGrant("subs"),
        ] {
            assert!(e.to_string().len() < 100);
        }
    }
}
