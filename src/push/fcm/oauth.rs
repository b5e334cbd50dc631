//! The OAuth 2.0 access token FCM asks for, as Google issues it to service
//! accounts: the JWT-bearer grant of RFC 7523. We sign an RS256 JWT (the
//! assertion) with the service account's key, POST it to the key file's
//! `token_uri`, and get an access token good for about an hour, sent with
//! every FCM request as `authorization: Bearer <token>`.
//!
//! [`TokenCache`] says when to fetch one: a token is used until
//! [`REFRESH_MARGIN`] before it expires, so that a request never leaves with
//! a token about to lapse, and a token FCM refused is dropped once, however
//! many requests saw the refusal.
//!
//! Computation over a clock value (Unix seconds) given by the caller; no I/O.
//! Assertions and access tokens are credentials: nothing here logs them, and
//! `Debug` does not show them.

use std::fmt;

use data_encoding::BASE64URL_NOPAD;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::rsa::Padding;
use openssl::sign::Signer;
use serde_json::{Value, json};

use super::credentials::ServiceAccount;

/// The one scope FCM's send endpoint needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The grant type of RFC 7523 §2.1.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long an assertion is valid (seconds): Google refuses longer.
pub const ASSERTION_LIFETIME: u64 = 3600;

/// A cached token with this little left (seconds) is not used: a request may
/// wait in a queue for a while, and our clock may lag Google's.
pub const REFRESH_MARGIN: u64 = 300;

/// An `expires_in` above this (seconds) is taken as this: Google's tokens
/// last an hour, 12 at most under an organisation policy, and a token that
/// expires sooner than we thought costs one 401 and one refresh.
pub const MAX_LIFETIME: u64 = 12 * 3600;

/// The longest `error_description` kept from a refusal, for the log.
const MAX_DESCRIPTION: usize = 300;

/// The JWT to exchange for an access token at `now`: RS256 (RSASSA-PKCS1-v1_5
/// with SHA-256) over `{"alg","typ","kid"}` and the claims Google documents
/// for service accounts. Fails only if OpenSSL cannot sign with a key that
/// signed when it was loaded.
pub fn assertion(sa: &ServiceAccount, now: u64) -> Result<String, ErrorStack> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &sa.private_key_id {
        header["kid"] = json!(kid);
    }
    let claims = json!({
        "iss": sa.client_email,
        "scope": SCOPE,
        "aud": sa.token_uri,
        "iat": now,
        "exp": now.saturating_add(ASSERTION_LIFETIME),
    });
    let mut jwt = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let mut signer = Signer::new(MessageDigest::sha256(), sa.key())?;
    signer.set_rsa_padding(Padding::PKCS1)?;
    let signature = signer.sign_oneshot_to_vec(jwt.as_bytes())?;
    jwt.push('.');
    jwt.push_str(&BASE64URL_NOPAD.encode(&signature));
    Ok(jwt)
}

/// The `application/x-www-form-urlencoded` body that trades `assertion` for
/// an access token.
pub fn token_request_body(assertion: &str) -> String {
    let mut body = String::from("grant_type=");
    form_encode(GRANT_TYPE, &mut body);
    body.push_str("&assertion=");
    form_encode(assertion, &mut body);
    body
}

/// Percent-encodes all but RFC 3986's unreserved characters. A JWT has
/// none to encode; the URN's colons are encoded as forms do.
fn form_encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// An access token and when it expires (Unix seconds).
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    value: String,
    expires_at: u64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// Why the token endpoint gave no usable token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// An OAuth error (RFC 6749 §5.2), e.g. 400 `invalid_grant`: the key was
    /// deleted or disabled, the account is gone, or our clock is off.
    Refused {
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// A status other than 200 without an OAuth error in the body (a proxy's
    /// 502, a 503 page).
    Status(u16),
    /// A 200 whose body is not a token we can use: why.
    Malformed(String),
}

impl TokenError {
    /// Whether asking again later may succeed: the endpoint was busy or
    /// failing (429, 5xx). A refused grant stays refused until someone fixes
    /// the key file or the clock.
    pub fn retry_may_help(&self) -> bool {
        let status = match self {
            TokenError::Refused { status, .. } | TokenError::Status(status) => *status,
            TokenError::Malformed(_) => return false,
        };
        status == 429 || (500..=599).contains(&status)
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Refused {
                status,
                error,
                description,
            } => {
                write!(
                    f,
                    "the OAuth token endpoint refused the service account (HTTP {status} {error}"
                )?;
                if let Some(description) = description {
                    write!(f, ": {description}")?;
                }
                f.write_str(
                    "); check that the key file's key still exists in the Google Cloud \
                     console (Service accounts → Keys) and that this machine's clock is right",
                )
            }
            TokenError::Status(status) => write!(
                f,
                "the OAuth token endpoint answered HTTP {status} without an OAuth error"
            ),
            TokenError::Malformed(why) => {
                write!(f, "the OAuth token endpoint's answer is not usable: {why}")
            }
        }
    }
}

impl std::error::Error for TokenError {}

/// The token in the token endpoint's response (`status` and `body`) received
/// at `now`. Its lifetime must be more than [`REFRESH_MARGIN`] (one we would
/// never use is an error, not a loop of refreshes) and is capped at
/// [`MAX_LIFETIME`].
pub fn parse_token_response(status: u16, body: &[u8], now: u64) -> Result<AccessToken, TokenError> {
    // Read as a map rather than into a struct: serde's messages for a value
    // of the wrong type quote the value, and one of them is the token.
    let fields = serde_json::from_slice::<Value>(body).ok();
    if status != 200 {
        let error = fields
            .as_ref()
            .and_then(|f| f.get("error"))
            .and_then(Value::as_str);
        return match error {
            Some(error) => Err(TokenError::Refused {
                status,
                error: truncate(error, MAX_DESCRIPTION),
                description: fields
                    .as_ref()
                    .and_then(|f| f.get("error_description"))
                    .and_then(Value::as_str)
                    .map(|d| truncate(d, MAX_DESCRIPTION)),
            }),
            None => Err(TokenError::Status(status)),
        };
    }
    let malformed = |why: &str| TokenError::Malformed(why.to_string());
    let fields = fields.ok_or_else(|| malformed("not JSON"))?;
    let value = match fields.get("access_token") {
        Some(Value::String(token)) if !token.is_empty() => token,
        _ => return Err(malformed("no access_token (a non-empty string)")),
    };
    // It goes into a header as it is.
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed(
            "the access_token has characters an HTTP header cannot carry",
        ));
    }
    match fields.get("token_type").and_then(Value::as_str) {
        Some(kind) if kind.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err(malformed("the token_type is not Bearer")),
        None => return Err(malformed("no token_type")),
    }
    let lifetime = fields
        .get("expires_in")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed("no expires_in (a whole number of seconds)"))?;
    if lifetime <= REFRESH_MARGIN {
        return Err(TokenError::Malformed(format!(
            "expires_in is {lifetime} s, no more than the {REFRESH_MARGIN} s before expiry \
             at which a token is replaced"
        )));
    }
    Ok(AccessToken {
        value: value.clone(),
        expires_at: now.saturating_add(lifetime.min(MAX_LIFETIME)),
    })
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The access token in use, shared by every request, and when to fetch the
/// next. Fetching is the caller's: this only says whether one is needed.
#[derive(Default)]
pub struct TokenCache {
    token: Option<AccessToken>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("expires_at", &self.token.as_ref().map(|t| t.expires_at))
            .finish()
    }
}

impl TokenCache {
    pub fn new() -> TokenCache {
        TokenCache::default()
    }

    /// The token to send at `now`, while it has more than [`REFRESH_MARGIN`]
    /// left; `None` means fetch one.
    pub fn current(&self, now: u64) -> Option<&str> {
        self.token
            .as_ref()
            .filter(|t| now.saturating_add(REFRESH_MARGIN) < t.expires_at)
            .map(|t| t.value.as_str())
    }

    /// The `authorization` header's value at `now`: `Bearer <token>`.
    pub fn bearer(&self, now: u64) -> Option<String> {
        self.current(now).map(|token| format!("Bearer {token}"))
    }

    /// Keeps a freshly fetched token, in place of the one before.
    pub fn store(&mut self, token: AccessToken) {
        self.token = Some(token);
    }

    /// FCM refused the token `refused` (401): drops it if it is still the
    /// cached one and says whether it was. Requests that left with the same
    /// token and are refused after a new one was stored leave the new one
    /// alone, so one refusal seen by many requests costs one fetch.
    pub fn invalidate(&mut self, refused: &str) -> bool {
        match &self.token {
            Some(token) if token.value == refused => {
                self.token = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use openssl::pkey::{PKey, Private};
    use openssl::sign::Verifier;

    use crate::push::fcm::credentials::tests::{key_file, rsa};

    const T0: u64 = 1_800_000_000;

    fn account(key: &PKey<Private>) -> ServiceAccount {
        ServiceAccount::from_json(&serde_json::to_vec(&key_file(key)).unwrap()).unwrap()
    }

    fn decode_json(part: &str) -> Value {
        serde_json::from_slice(&BASE64URL_NOPAD.decode(part.as_bytes()).unwrap()).unwrap()
    }

    /// Checks the signature with the public key alone, the way Google would.
    fn verifies(jwt: &str, key: &PKey<Private>) -> bool {
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).unwrap();
        let public = PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
        let mut verifier = Verifier::new(MessageDigest::sha256(), &public).unwrap();
        verifier.set_rsa_padding(Padding::PKCS1).unwrap();
        verifier
            .verify_oneshot(&signature, signed.as_bytes())
            .unwrap()
    }

    #[test]
    fn assertion_is_an_rs256_jwt_for_google() {
        let key = rsa(2048);
        let sa = account(&key);
        let jwt = assertion(&sa, T0).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode_json(parts[0]),
            json!({"alg": "RS256", "typ": "JWT", "kid": sa.private_key_id.as_deref().unwrap()})
        );
        assert_eq!(
            decode_json(parts[1]),
            json!({
                "iss": sa.client_email,
                "scope": "https://www.googleapis.com/auth/firebase.messaging",
                "aud": "https://oauth2.googleapis.com/token",
                "iat": T0,
                "exp": T0 + 3600,
            })
        );
        // 2048 bits of RSA signature.
        assert_eq!(
            BASE64URL_NOPAD.decode(parts[2].as_bytes()).unwrap().len(),
            256
        );
        assert!(verifies(&jwt, &key));
        // Another key's signature does not verify: the check above means something.
        assert!(!verifies(&jwt, &rsa(2048)));
        // Nor does a changed claim.
        let other = assertion(&sa, T0 + 1).unwrap();
        let (_, other_signature) = other.rsplit_once('.').unwrap();
        let (signed, _) = jwt.rsplit_once('.').unwrap();
        assert!(!verifies(&format!("{signed}.{other_signature}"), &key));
    }

    #[test]
    fn assertion_without_a_key_id_has_no_kid() {
        let key = rsa(2048);
        let mut file = key_file(&key);
        file.as_object_mut().unwrap().remove("private_key_id");
        let sa = ServiceAccount::from_json(&serde_json::to_vec(&file).unwrap()).unwrap();
        let jwt = assertion(&sa, T0).unwrap();
        assert_eq!(
            decode_json(jwt.split('.').next().unwrap()),
            json!({"alg": "RS256", "typ": "JWT"})
        );
    }

    #[test]
    fn token_request_body_is_a_form() {
        let body = token_request_body("aaa.bbb-_.ccc");
        assert_eq!(
            body,
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer\
             &assertion=aaa.bbb-_.ccc"
        );
        // Not a JWT, but encoded rather than let through.
        assert_eq!(
            token_request_body("a+b/c=&é"),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer\
             &assertion=a%2Bb%2Fc%3D%26%C3%A9"
        );
        // A real assertion goes through unchanged.
        let jwt = assertion(&account(&rsa(2048)), T0).unwrap();
        assert!(token_request_body(&jwt).ends_with(&format!("&assertion={jwt}")));
    }

    #[test]
    fn parses_googles_token_response() {
        let body =
            br#"{"access_token":"ya29.c.b0Aaekm1K","expires_in":3599,"token_type":"Bearer"}"#;
        let token = parse_token_response(200, body, T0).unwrap();
        assert_eq!(token.value(), "ya29.c.b0Aaekm1K");
        assert_eq!(token.expires_at(), T0 + 3599);
        assert!(!format!("{token:?}").contains("ya29"));
        // Token types are case-insensitive (RFC 6749 §5.1), extra fields ignored.
        let body =
            br#"{"access_token":"t","expires_in":3600,"token_type":"bearer","id_token":"x"}"#;
        assert!(parse_token_response(200, body, T0).is_ok());
        // A lifetime past Google's longest is capped.
        let body = br#"{"access_token":"t","expires_in":99999999999,"token_type":"Bearer"}"#;
        let token = parse_token_response(200, body, T0).unwrap();
        assert_eq!(token.expires_at(), T0 + MAX_LIFETIME);
    }

    #[test]
    fn refusals_keep_googles_error() {
        let body = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        let err = parse_token_response(400, body, T0).unwrap_err();
        assert_eq!(
            err,
            TokenError::Refused {
                status: 400,
                error: "invalid_grant".into(),
                description: Some("Invalid JWT Signature.".into()),
            }
        );
        assert!(!err.retry_may_help());
        let text = err.to_string();
        assert!(
            text.contains("invalid_grant") && text.contains("Invalid JWT Signature."),
            "{text}"
        );
        assert!(text.contains("clock"), "{text}");

        let err = parse_token_response(401, br#"{"error":"invalid_client"}"#, T0).unwrap_err();
        assert!(matches!(
            err,
            TokenError::Refused {
                status: 401,
                description: None,
                ..
            }
        ));

        let long = format!(
            r#"{{"error":"invalid_grant","error_description":"{}"}}"#,
            "é".repeat(5000)
        );
        let Err(TokenError::Refused {
            description: Some(d),
            ..
        }) = parse_token_response(400, long.as_bytes(), T0)
        else {
            panic!()
        };
        assert!(d.chars().count() <= MAX_DESCRIPTION + 1);

        for (status, body) in [(503, &b"<html>busy</html>"[..]), (502, b""), (429, b"{}")] {
            let err = parse_token_response(status, body, T0).unwrap_err();
            assert_eq!(err, TokenError::Status(status));
            assert!(err.retry_may_help());
        }
        let body = br#"{"error":"internal_failure"}"#;
        assert!(
            parse_token_response(500, body, T0)
                .unwrap_err()
                .retry_may_help()
        );
        assert!(
            !parse_token_response(404, b"", T0)
                .unwrap_err()
                .retry_may_help()
        );
    }

    #[test]
    fn unusable_tokens_are_malformed() {
        for body in [
            &b""[..],
            b"not json",
            b"[]",
            b"{}",
            br#"{"access_token":"","expires_in":3600,"token_type":"Bearer"}"#,
            br#"{"access_token":7,"expires_in":3600,"token_type":"Bearer"}"#,
            br#"{"access_token":"a b","expires_in":3600,"token_type":"Bearer"}"#,
            br#"{"access_token":"a\r\nx: y","expires_in":3600,"token_type":"Bearer"}"#,
            br#"{"access_token":"t","expires_in":3600}"#,
            br#"{"access_token":"t","expires_in":3600,"token_type":"MAC"}"#,
            br#"{"access_token":"t","token_type":"Bearer"}"#,
            br#"{"access_token":"t","expires_in":"3600","token_type":"Bearer"}"#,
            br#"{"access_token":"t","expires_in":-1,"token_type":"Bearer"}"#,
            br#"{"access_token":"t","expires_in":3599.5,"token_type":"Bearer"}"#,
            br#"{"access_token":"t","expires_in":0,"token_type":"Bearer"}"#,
            br#"{"access_token":"t","expires_in":300,"token_type":"Bearer"}"#,
        ] {
            let err = parse_token_response(200, body, T0).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed(_)),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(!err.retry_may_help());
        }
        let body = br#"{"access_token":"t","expires_in":301,"token_type":"Bearer"}"#;
        assert!(parse_token_response(200, body, T0).is_ok());
        // The token's value is never in the message, even when it is the problem.
        let body = br#"{"access_token":"secret value","expires_in":3600,"token_type":"Bearer"}"#;
        let err = parse_token_response(200, body, T0).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    fn token(value: &str, expires_at: u64) -> AccessToken {
        AccessToken {
            value: value.into(),
            expires_at,
        }
    }

    #[test]
    fn cache_replaces_a_token_before_it_expires() {
        let mut cache = TokenCache::new();
        assert_eq!(cache.current(T0), None);
        assert_eq!(cache.bearer(T0), None);
        cache.store(token("one", T0 + 3600));
        assert_eq!(cache.current(T0), Some("one"));
        assert_eq!(cache.bearer(T0).as_deref(), Some("Bearer one"));
        assert_eq!(cache.current(T0 + 3600 - REFRESH_MARGIN - 1), Some("one"));
        // With the margin or less left it is not used.
        assert_eq!(cache.current(T0 + 3600 - REFRESH_MARGIN), None);
        assert_eq!(cache.current(T0 + 3600), None);
        assert_eq!(cache.current(u64::MAX), None);
        cache.store(token("two", T0 + 7200));
        assert_eq!(cache.current(T0 + 3600), Some("two"));
        assert!(!format!("{cache:?}").contains("two"));
    }

    #[test]
    fn invalidate_drops_only_the_refused_token() {
        let mut cache = TokenCache::new();
        assert!(!cache.invalidate("one"));
        cache.store(token("one", T0 + 3600));
        // Two requests refused with the same token: the first drops it...
        assert!(cache.invalidate("one"));
        assert_eq!(cache.current(T0), None);
        cache.store(token("two", T0 + 3600));
        // ...the second, seen after the refresh, leaves the new one alone.
        assert!(!cache.invalidate("one"));
        assert_eq!(cache.current(T0), Some("two"));
        assert!(cache.invalidate("two"));
        assert!(!cache.invalidate("two"));
    }
}
