//! APNs token-based authentication: the provider token (an ES256 JWT signed
//! with the team's `.p8` key) sent as `authorization: bearer <token>`, and
//! when to mint a new one.
//!
//! Apple's rules ("Establishing a token-based connection to APNs"): a token
//! whose `iat` is more than an hour old is refused (403 ExpiredProviderToken),
//! and re-minting more often than every 20 minutes is answered with
//! 429 TooManyProviderTokenUpdates. So one token is shared by every request and
//! replaced once it is [`REFRESH_AGE`] old, which leaves 20 minutes of margin
//! on either side for a clock that disagrees with Apple's.
//!
//! Computation over a clock value given by the caller; the only I/O is reading
//! the key file in [`ProviderToken::load`]. The token is a credential: nothing
//! here logs it, and `Debug` does not show it.

use std::fmt;
use std::path::Path;

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use serde::Serialize;

use crate::credentials::{CredentialError, CredentialProblem};
use crate::push::es256::{self, sign};

/// A token this old (seconds) is replaced by the next [`ProviderToken::bearer`].
pub const REFRESH_AGE: u64 = 40 * 60;

/// A token younger than this (seconds) is never replaced: Apple would answer
/// the new one with 429 TooManyProviderTokenUpdates.
pub const MIN_REPLACE_AGE: u64 = 20 * 60;

/// Apple's key ids and team ids are 10 characters, letters and digits.
const APPLE_ID_LEN: usize = 10;

/// The signer of APNs provider tokens, and the token currently in use.
pub struct ProviderToken {
    key: PKey<Private>,
    key_id: String,
    team_id: String,
    /// The token in use and its `iat`; `None` before the first request and
    /// after [`ProviderToken::invalidate`].
    current: Option<(String, u64)>,
}

impl fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderToken")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("issued_at", &self.current.as_ref().map(|(_, iat)| iat))
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

impl ProviderToken {
    /// Reads the `.p8` file at `path`; see [`ProviderToken::from_p8`].
    pub fn load(
        path: &Path,
        key_id: &str,
        team_id: &str,
    ) -> Result<ProviderToken, CredentialError> {
        let pem = std::fs::read(path).map_err(|e| {
            CredentialError::new(CredentialProblem::Unreadable(e)).in_files(&[path])
        })?;
        ProviderToken::from_p8(&pem, key_id, team_id).map_err(|e| e.in_files(&[path]))
    }

    /// The signer for the key of a `.p8` file (a PKCS#8 PEM EC P-256 private
    /// key), its 10-character key id and the team's 10-character id.
    pub fn from_p8(
        pem: &[u8],
        key_id: &str,
        team_id: &str,
    ) -> Result<ProviderToken, CredentialError> {
        if !is_apple_id(key_id) {
            return Err(CredentialProblem::BadKeyId(key_id.to_string()).into());
        }
        if !is_apple_id(team_id) {
            return Err(CredentialProblem::BadTeamId(team_id.to_string()).into());
        }
        // Through a callback that refuses: a .p8 key is never encrypted, and
        // without a callback OpenSSL would prompt for a password on the terminal.
        let key =
            PKey::private_key_from_pem_callback(pem, |_| Err(ErrorStack::get())).map_err(|e| {
                CredentialProblem::Malformed {
                    what: "APNs signing key (.p8)",
                    detail: e.to_string(),
                }
            })?;
        check_p256(&key)?;
        // Sign once now, so that a key OpenSSL cannot sign with is refused here
        // rather than when the first push is due.
        sign(&key, b"probe").map_err(|e| CredentialProblem::Malformed {
            what: "APNs signing key (.p8)",
            detail: e.to_string(),
        })?;
        Ok(ProviderToken {
            key,
            key_id: key_id.to_string(),
            team_id: team_id.to_string(),
            current: None,
        })
    }

    /// The token to send at `now` (Unix seconds): minted once and shared by
    /// every request, re-minted when it is [`REFRESH_AGE`] old or more, or
    /// after an accepted [`ProviderToken::invalidate`].
    pub fn bearer(&mut self, now: u64) -> &str {
        let fresh = matches!(self.current, Some((_, iat)) if now.saturating_sub(iat) < REFRESH_AGE);
        if !fresh {
            self.current = None;
        }
        let (token, _) = self.current.get_or_insert_with(|| {
            let token = mint(&self.key, &self.key_id, &self.team_id, now)
                .expect("a key that signed when loaded signs again");
            (token, now)
        });
        token
    }

    /// Apple refused the token (403 ExpiredProviderToken or
    /// InvalidProviderToken): the next [`ProviderToken::bearer`] mints a new
    /// one, unless the current token is younger than [`MIN_REPLACE_AGE`]. Then
    /// this returns false and keeps it: a new token would only earn a 429, and
    /// a young token refused means wrong ids or a revoked key (or the refusal
    /// was for an older token, and a retry with the current one may pass).
    pub fn invalidate(&mut self, now: u64) -> bool {
        match self.current {
            Some((_, iat)) if now.saturating_sub(iat) < MIN_REPLACE_AGE => false,
            _ => {
                self.current = None;
                true
            }
        }
    }
}

fn is_apple_id(id: &str) -> bool {
    id.len() == APPLE_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn check_p256(key: &PKey<Private>) -> Result<(), CredentialProblem> {
    es256::check_p256(key).map_err(|found| CredentialProblem::NotP256Key { found })
}

fn mint(key: &PKey<Private>, key_id: &str, team_id: &str, iat: u64) -> Result<String, ErrorStack> {
    let header = Header {
        alg: "ES256",
        kid: key_id,
    };
    es256::jwt(key, &header, &Claims { iss: team_id, iat })
}

#[cfg(test)]
mod tests {
    use super::*;

    use data_encoding::BASE64URL_NOPAD;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::ecdsa::EcdsaSig;
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::rsa::Rsa;
    use openssl::symm::Cipher;

    const KEY_ID: &str = "ABC123DEFG";
    const TEAM_ID: &str = "DEF123GHIJ";
    const T0: u64 = 1_800_000_000;
    const MINUTE: u64 = 60;

    fn ec_key(curve: Nid) -> PKey<Private> {
        let group = EcGroup::from_curve_name(curve).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    fn p8(key: &PKey<Private>) -> Vec<u8> {
        let pem = key.private_key_to_pem_pkcs8().unwrap();
        assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        pem
    }

    fn decode_json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&BASE64URL_NOPAD.decode(part.as_bytes()).unwrap()).unwrap()
    }

    /// Checks the JWS signature with the public key alone, the way Apple would.
    fn signature_verifies(token: &str, key: &PKey<Private>) -> bool {
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).unwrap();
        assert_eq!(signature.len(), 64);
        let (r, s) = signature.split_at(32);
        let der = EcdsaSig::from_private_components(
            BigNum::from_slice(r).unwrap(),
            BigNum::from_slice(s).unwrap(),
        )
        .unwrap()
        .to_der()
        .unwrap();
        let public = PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
        let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &public).unwrap();
        verifier.update(signed.as_bytes()).unwrap();
        verifier.verify(&der).unwrap()
    }

    #[test]
    fn minted_token_is_an_es256_jwt_for_apple() {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let mut signer = ProviderToken::from_p8(&p8(&key), KEY_ID, TEAM_ID).unwrap();
        let token = signer.bearer(T0).to_string();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode_json(parts[0]),
            serde_json::json!({"alg": "ES256", "kid": KEY_ID})
        );
        assert_eq!(
            decode_json(parts[1]),
            serde_json::json!({"iss": TEAM_ID, "iat": T0})
        );
        assert!(signature_verifies(&token, &key));
        // Another key's signature does not verify: the check above means something.
        assert!(!signature_verifies(&token, &ec_key(Nid::X9_62_PRIME256V1)));
        assert!(!format!("{signer:?}").contains(&token));
    }

    #[test]
    fn signatures_stay_64_bytes_when_r_or_s_is_short() {
        // About 1 in 128 signatures has an r or s with a leading zero byte,
        // which DER drops and JWS must put back.
        let key = ec_key(Nid::X9_62_PRIME256V1);
        for i in 0..512 {
            let token = mint(&key, KEY_ID, TEAM_ID, T0 + i).unwrap();
            assert!(signature_verifies(&token, &key), "{token}");
        }
    }

    #[test]
    fn token_is_shared_then_refreshed_at_40_minutes() {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let mut signer = ProviderToken::from_p8(&p8(&key), KEY_ID, TEAM_ID).unwrap();
        let first = signer.bearer(T0).to_string();
        assert_eq!(signer.bearer(T0 + 1), first);
        assert_eq!(signer.bearer(T0 + 39 * MINUTE), first);
        assert_eq!(signer.bearer(T0 + 40 * MINUTE - 1), first);
        let second = signer.bearer(T0 + 40 * MINUTE).to_string();
        assert_ne!(second, first);
        assert_eq!(
            decode_json(second.split('.').nth(1).unwrap())["iat"],
            T0 + 40 * MINUTE
        );
        assert_eq!(signer.bearer(T0 + 79 * MINUTE), second);
        // A clock that steps back keeps the token rather than minting one.
        assert_eq!(signer.bearer(T0), second);
    }

    #[test]
    fn invalidate_refreshes_only_tokens_older_than_20_minutes() {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let mut signer = ProviderToken::from_p8(&p8(&key), KEY_ID, TEAM_ID).unwrap();
        let first = signer.bearer(T0).to_string();

        assert!(!signer.invalidate(T0 + 5 * MINUTE));
        assert_eq!(signer.bearer(T0 + 5 * MINUTE), first);
        assert!(!signer.invalidate(T0 + 20 * MINUTE - 1));
        assert_eq!(signer.bearer(T0 + 20 * MINUTE - 1), first);

        assert!(signer.invalidate(T0 + 25 * MINUTE));
        let second = signer.bearer(T0 + 25 * MINUTE).to_string();
        assert_ne!(second, first);
        // The new token is young: refused again at once, it is kept.
        assert!(!signer.invalidate(T0 + 26 * MINUTE));
        assert_eq!(signer.bearer(T0 + 26 * MINUTE), second);
        // And its 40 minutes count from its own iat.
        assert_eq!(signer.bearer(T0 + 64 * MINUTE), second);
        assert_ne!(signer.bearer(T0 + 65 * MINUTE), second);

        // Before any token, there is nothing to keep.
        let mut fresh = ProviderToken::from_p8(&p8(&key), KEY_ID, TEAM_ID).unwrap();
        assert!(fresh.invalidate(T0));
    }

    fn refusal(pem: &[u8], key_id: &str, team_id: &str) -> CredentialError {
        ProviderToken::from_p8(pem, key_id, team_id).unwrap_err()
    }

    #[test]
    fn refuses_keys_that_are_not_p256() {
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let err = refusal(&p8(&rsa), KEY_ID, TEAM_ID);
        assert!(matches!(
            err.problem(),
            CredentialProblem::NotP256Key { .. }
        ));
        assert!(err.to_string().contains("an RSA key"), "{err}");

        let p384 = ec_key(Nid::SECP384R1);
        let err = refusal(&p8(&p384), KEY_ID, TEAM_ID);
        assert!(matches!(
            err.problem(),
            CredentialProblem::NotP256Key { .. }
        ));
        assert!(err.to_string().contains("secp384r1"), "{err}");

        for garbage in [
            &b""[..],
            b"not a key",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let err = refusal(garbage, KEY_ID, TEAM_ID);
            assert!(
                matches!(err.problem(), CredentialProblem::Malformed { .. }),
                "{err}"
            );
            assert!(err.to_string().contains(".p8"), "{err}");
        }

        // An encrypted key is refused, not prompted for on the terminal.
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let encrypted = key
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"secret")
            .unwrap();
        let err = refusal(&encrypted, KEY_ID, TEAM_ID);
        assert!(matches!(err.problem(), CredentialProblem::Malformed { .. }));
    }

    #[test]
    fn refuses_ids_that_are_not_apples() {
        let pem = p8(&ec_key(Nid::X9_62_PRIME256V1));
        for bad in [
            "",
            "ABC123DEF",
            "ABC123DEFGH",
            "ABC123DEF!",
            "ABC123DEF\n",
            "ÄBC123DEF",
        ] {
            let err = refusal(&pem, bad, TEAM_ID);
            assert!(
                matches!(err.problem(), CredentialProblem::BadKeyId(_)),
                "{bad:?}"
            );
            assert!(err.to_string().contains("key id"), "{err}");
            let err = refusal(&pem, KEY_ID, bad);
            assert!(
                matches!(err.problem(), CredentialProblem::BadTeamId(_)),
                "{bad:?}"
            );
            assert!(err.to_string().contains("team id"), "{err}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let path = std::env::temp_dir().join(format!(
            "pushhub-provider-token-missing-{}.p8",
            std::process::id()
        ));
        let err = ProviderToken::load(&path, KEY_ID, TEAM_ID).unwrap_err();
        assert!(matches!(err.problem(), CredentialProblem::Unreadable(_)));
        assert_eq!(err.files(), std::slice::from_ref(&path));
        assert!(
            err.to_string().contains("pushhub-provider-token-missing"),
            "{err}"
        );
    }
}
