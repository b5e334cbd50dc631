//! Client authentication: who a connection is, and what it may do with
//! channels. A signed token ([`token`]) or, in plain-uid mode, the first
//! message itself, as in the Workerman original; a token's [`Grants`] and the
//! rule that applies them ([`grants`]).
//!
//! Pure functions: no I/O, no state.

pub mod grants;
mod secret;
pub mod token;

use std::fmt;

pub use grants::{Grants, may_publish, may_subscribe};
pub use secret::Secret;
pub use token::{TokenError, Verified, mint, mint_with_grants, verify};

/// Longest uid accepted, in bytes. Uids are held in memory for every connection,
/// so they are capped rather than trusted.
pub const MAX_UID_LEN: usize = 256;

/// How clients prove which uid they are.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Accept the first text message as a bare uid.
    pub allow_plain_uid: bool,
    /// Verify HS256 tokens with this secret.
    pub secret: Option<Secret>,
}

/// The uid rule shared by tokens and plain-uid mode: 1 to [`MAX_UID_LEN`] bytes,
/// no control characters (they would corrupt logs and replies).
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= MAX_UID_LEN && !uid.chars().any(char::is_control)
}

/// Why a client's credential (its first message, or the `token` query parameter)
/// was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Token(TokenError),
    /// Plain-uid mode, and the message is not a usable uid.
    InvalidUid,
    /// The first message was binary; credentials are text.
    NotText,
    /// A token, but this hub has no secret to verify tokens with.
    NoTokens,
    /// A bare uid, but this hub runs without `--allow-plain-uid`.
    NoPlainUids,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Token(e) => e.fmt(f),
            AuthError::InvalidUid => {
                f.write_str("uid must be 1 to 256 bytes without control characters")
            }
            AuthError::NotText => f.write_str("send the uid or token as a text message"),
            AuthError::NoTokens => f.write_str("this hub verifies no tokens: send a uid"),
            AuthError::NoPlainUids => f.write_str("this hub takes tokens only: send a token"),
        }
    }
}

impl std::error::Error for AuthError {}

impl AuthError {
    /// A short name for counting refusals by reason.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::Token(TokenError::Malformed) => "malformed",
            AuthError::Token(TokenError::UnsupportedAlgorithm) => "algorithm",
            AuthError::Token(TokenError::BadSignature) => "signature",
            AuthError::Token(TokenError::MissingExpiry) => "no_exp",
            AuthError::Token(TokenError::Expired) => "expired",
            AuthError::Token(TokenError::NotYetValid) => "not_yet_valid",
            AuthError::Token(TokenError::BadSubject) => "bad_sub",
            AuthError::Token(TokenError::BadGrant(_)) => "bad_grant",
            AuthError::InvalidUid => "bad_uid",
            AuthError::NotText => "not_text",
            AuthError::NoTokens => "no_tokens",
            AuthError::NoPlainUids => "no_plain_uids",
        }
    }
}

/// Turns a credential into a uid under the configured modes.
///
/// With a secret, anything shaped like a JWT (two dots) is verified as one, so a
/// forged token is refused even when plain uids are allowed too. Otherwise, in
/// plain-uid mode, the credential itself is the uid, as in the Workerman original.
pub fn authenticate(
    config: &AuthConfig,
    credential: &str,
    now: u64,
) -> Result<Identity, AuthError> {
    let looks_like_jwt = credential.bytes().filter(|&b| b == b'.').count() == 2;
    match &config.secret {
        Some(_) if looks_like_jwt || !config.allow_plain_uid => token(config, credential, now),
        _ => plain_uid(config, credential),
    }
}

/// A credential that says it is a token (a v1 `auth` with `token`): verified,
/// never taken for a uid.
pub fn token(config: &AuthConfig, token: &str, now: u64) -> Result<Identity, AuthError> {
    let secret = config.secret.as_ref().ok_or(AuthError::NoTokens)?;
    verify(token, secret, now)
        .map(Identity::from)
        .map_err(AuthError::Token)
}

/// A credential that says it is a bare uid (a v1 `auth` with `uid`).
pub fn plain_uid(config: &AuthConfig, uid: &str) -> Result<Identity, AuthError> {
    if !config.allow_plain_uid {
        return Err(AuthError::NoPlainUids);
    }
    if !valid_uid(uid) {
        return Err(AuthError::InvalidUid);
    }
    Ok(Identity {
        uid: uid.to_string(),
        plain: true,
        grants: Grants::default(),
    })
}

/// Who a client proved to be, whether by a bare uid (plain-uid mode), and
/// what its token grants (a bare uid is granted nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: String,
    pub plain: bool,
    pub grants: Grants,
}

impl From<Verified> for Identity {
    fn from(Verified { uid, grants }: Verified) -> Identity {
        Identity {
            uid,
            plain: false,
            grants,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn secret() -> Secret {
        Secret::from_file_contents(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }

    #[test]
    fn uid_rule() {
        assert!(valid_uid("u1"));
        assert!(valid_uid("用户"));
        assert!(!valid_uid(""));
        assert!(!valid_uid("a\nb"));
        assert!(!valid_uid(&"x".repeat(MAX_UID_LEN + 1)));
        assert!(Secret::from_file_contents(b" \n\t").is_none());
    }

    #[test]
    fn modes() {
        let s = secret();
        let token = mint(&s, "u1", NOW + 60);
        let plain = AuthConfig {
            allow_plain_uid: true,
            secret: None,
        };
        let tokens = AuthConfig {
            allow_plain_uid: false,
            secret: Some(s.clone()),
        };
        let both = AuthConfig {
            allow_plain_uid: true,
            secret: Some(s.clone()),
        };
        let id = |uid: &str, plain| {
            Ok(Identity {
                uid: uid.into(),
                plain,
                grants: Grants::default(),
            })
        };
        assert_eq!(authenticate(&plain, "uid1", NOW), id("uid1", true));
        assert_eq!(authenticate(&plain, "", NOW), Err(AuthError::InvalidUid));
        assert_eq!(authenticate(&tokens, &token, NOW), id("u1", false));
        assert_eq!(
            authenticate(&tokens, "uid1", NOW),
            Err(AuthError::Token(TokenError::Malformed))
        );
        assert_eq!(authenticate(&both, &token, NOW), id("u1", false));
        assert_eq!(authenticate(&both, "uid1", NOW), id("uid1", true));
        let forged = mint(
            &Secret::from_file_contents(b"guess").unwrap(),
            "admin",
            NOW + 60,
        );
        assert_eq!(
            authenticate(&both, &forged, NOW),
            Err(AuthError::Token(TokenError::BadSignature))
        );
    }

    #[test]
    fn a_token_s_grants_reach_the_identity() {
        let s = secret();
        let grants = Grants {
            channels: vec![crate::channel::Pattern::parse("room:*").unwrap()],
            ..Grants::default()
        };
        let token = mint_with_grants(&s, "u1", NOW + 60, &grants);
        let both = AuthConfig {
            allow_plain_uid: true,
            secret: Some(s),
        };
        let identity = authenticate(&both, &token, NOW).unwrap();
        assert_eq!((identity.plain, identity.grants), (false, grants));
        let plain = authenticate(&both, "u1", NOW).unwrap();
        assert!(plain.plain && plain.grants.is_empty());
        assert_eq!(
            AuthError::Token(TokenError::BadGrant("subs")).kind(),
            "bad_grant"
        );
    }
}
