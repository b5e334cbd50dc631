//! Client authentication: who a connection is. A signed token ([`token`]) or,
//! in plain-uid mode, the first message itself, as in the Workerman original.
//!
//! Pure functions: no I/O, no state.

mod secret;
pub mod token;

use std::fmt;

pub use secret::Secret;
pub use token::{TokenError, mint, verify};

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
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Token(e) => e.fmt(f),
            AuthError::InvalidUid => {
                f.write_str("uid must be 1 to 256 bytes without control characters")
            }
            AuthError::NotText => f.write_str("send the uid or token as a text message"),
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
            AuthError::InvalidUid => "bad_uid",
            AuthError::NotText => "not_text",
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
        Some(secret) if looks_like_jwt || !config.allow_plain_uid => {
            verify(credential, secret, now)
                .map(|uid| Identity { uid, plain: false })
                .map_err(AuthError::Token)
        }
        _ if config.allow_plain_uid && valid_uid(credential) => Ok(Identity {
            uid: credential.to_string(),
            plain: true,
        }),
        _ => Err(AuthError::InvalidUid),
    }
}

/// Who a client proved to be, and whether by a bare uid (plain-uid mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: String,
    pub plain: bool,
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
}
