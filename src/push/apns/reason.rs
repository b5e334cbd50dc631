//! Apple's reasons for refusing a notification, and what each means for us.
//!
//! Every reason is sorted once into what to do about it, so that the sender
//! decides by kind, never by matching strings: drop the device token, retry
//! later, fix our credentials, or report a bad request.

use std::fmt;

/// What a refusal calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The device token is no longer valid: remove it from the registry.
    DeviceGone,
    /// A passing condition at Apple: retry later, with backoff.
    Retry,
    /// Our provider token or certificate is refused.
    Credentials,
    /// The notification itself is wrong (topic, payload, headers): retrying
    /// the same request cannot help.
    BadRequest,
}

/// A reason Apple gives in the JSON body of an error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    BadCollapseId,
    BadDeviceToken,
    BadExpirationDate,
    BadMessageId,
    BadPriority,
    BadTopic,
    DeviceTokenNotForTopic,
    DuplicateHeaders,
    IdleTimeout,
    InvalidPushType,
    MissingDeviceToken,
    MissingTopic,
    PayloadEmpty,
    TopicDisallowed,
    BadCertificate,
    BadCertificateEnvironment,
    ExpiredProviderToken,
    Forbidden,
    InvalidProviderToken,
    MissingProviderToken,
    UnrelatedKeyIdInToken,
    BadEnvironmentKeyIdInToken,
    BadPath,
    MethodNotAllowed,
    ExpiredToken,
    Unregistered,
    PayloadTooLarge,
    TooManyProviderTokenUpdates,
    TooManyRequests,
    InternalServerError,
    ServiceUnavailable,
    Shutdown,
    /// A reason this version does not know; kept verbatim for the report.
    Other(String),
}

/// Every known reason with its name on the wire.
const NAMES: [(&str, Reason); 32] = [
    ("BadCollapseId", Reason::BadCollapseId),
    ("BadDeviceToken", Reason::BadDeviceToken),
    ("BadExpirationDate", Reason::BadExpirationDate),
    ("BadMessageId", Reason::BadMessageId),
    ("BadPriority", Reason::BadPriority),
    ("BadTopic", Reason::BadTopic),
    ("DeviceTokenNotForTopic", Reason::DeviceTokenNotForTopic),
    ("DuplicateHeaders", Reason::DuplicateHeaders),
    ("IdleTimeout", Reason::IdleTimeout),
    ("InvalidPushType", Reason::InvalidPushType),
    ("MissingDeviceToken", Reason::MissingDeviceToken),
    ("MissingTopic", Reason::MissingTopic),
    ("PayloadEmpty", Reason::PayloadEmpty),
    ("TopicDisallowed", Reason::TopicDisallowed),
    ("BadCertificate", Reason::BadCertificate),
    (
        "BadCertificateEnvironment",
        Reason::BadCertificateEnvironment,
    ),
    ("ExpiredProviderToken", Reason::ExpiredProviderToken),
    ("Forbidden", Reason::Forbidden),
    ("InvalidProviderToken", Reason::InvalidProviderToken),
    ("MissingProviderToken", Reason::MissingProviderToken),
    ("UnrelatedKeyIdInToken", Reason::UnrelatedKeyIdInToken),
    (
        "BadEnvironmentKeyIdInToken",
        Reason::BadEnvironmentKeyIdInToken,
    ),
    ("BadPath", Reason::BadPath),
    ("MethodNotAllowed", Reason::MethodNotAllowed),
    ("ExpiredToken", Reason::ExpiredToken),
    ("Unregistered", Reason::Unregistered),
    ("PayloadTooLarge", Reason::PayloadTooLarge),
    (
        "TooManyProviderTokenUpdates",
        Reason::TooManyProviderTokenUpdates,
    ),
    ("TooManyRequests", Reason::TooManyRequests),
    ("InternalServerError", Reason::InternalServerError),
    ("ServiceUnavailable", Reason::ServiceUnavailable),
    ("Shutdown", Reason::Shutdown),
];

impl Reason {
    /// The reason in an error response's body (`{"reason":"..."}`), or one
    /// made from the status when the body has none.
    pub fn from_response(status: u16, body: &[u8]) -> Reason {
        #[derive(serde::Deserialize)]
        struct Body {
            reason: String,
        }
        match serde_json::from_slice::<Body>(body) {
            Ok(Body { reason }) => Reason::parse(&reason),
            Err(_) => match status {
                410 => Reason::Unregistered,
                413 => Reason::PayloadTooLarge,
                429 => Reason::TooManyRequests,
                503 => Reason::ServiceUnavailable,
                500..=599 => Reason::InternalServerError,
                _ => Reason::Other(format!("HTTP status {status} without a reason")),
            },
        }
    }

    pub fn parse(name: &str) -> Reason {
        NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map_or_else(|| Reason::Other(name.to_string()), |(_, r)| r.clone())
    }

    pub fn name(&self) -> &str {
        match self {
            Reason::Other(name) => name,
            known => NAMES
                .iter()
                .find(|(_, r)| r == known)
                .map_or("Unknown", |(name, _)| name),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            // 410: the app was uninstalled, or the token expired.
            Reason::Unregistered | Reason::ExpiredToken => Kind::DeviceGone,
            // On the endpoint the token was made for, a bad token is gone for
            // good; the caller checks the endpoint before acting on this.
            Reason::BadDeviceToken => Kind::DeviceGone,
            Reason::TooManyRequests
            | Reason::TooManyProviderTokenUpdates
            | Reason::InternalServerError
            | Reason::ServiceUnavailable
            | Reason::Shutdown
            | Reason::IdleTimeout => Kind::Retry,
            Reason::BadCertificate
            | Reason::BadCertificateEnvironment
            | Reason::ExpiredProviderToken
            | Reason::Forbidden
            | Reason::InvalidProviderToken
            | Reason::MissingProviderToken
            | Reason::UnrelatedKeyIdInToken
            | Reason::BadEnvironmentKeyIdInToken
            | Reason::TopicDisallowed => Kind::Credentials,
            Reason::BadCollapseId
            | Reason::BadExpirationDate
            | Reason::BadMessageId
            | Reason::BadPriority
            | Reason::BadTopic
            | Reason::DeviceTokenNotForTopic
            | Reason::DuplicateHeaders
            | Reason::InvalidPushType
            | Reason::MissingDeviceToken
            | Reason::MissingTopic
            | Reason::PayloadEmpty
            | Reason::BadPath
            | Reason::MethodNotAllowed
            | Reason::PayloadTooLarge
            | Reason::Other(_) => Kind::BadRequest,
        }
    }

    /// Whether a fresh provider token may cure it (403 with a token reason).
    pub fn wants_new_provider_token(&self) -> bool {
        matches!(
            self,
            Reason::ExpiredProviderToken | Reason::InvalidProviderToken
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for (name, reason) in &NAMES {
            assert_eq!(&Reason::parse(name), reason);
            assert_eq!(reason.name(), *name);
        }
        assert_eq!(
            Reason::parse("SomethingNew"),
            Reason::Other("SomethingNew".into())
        );
        assert_eq!(Reason::parse("SomethingNew").name(), "SomethingNew");
        assert_eq!(Reason::parse("SomethingNew").kind(), Kind::BadRequest);
    }

    #[test]
    fn reasons_from_responses() {
        assert_eq!(
            Reason::from_response(
                410,
                br#"{"reason":"Unregistered","timestamp":1700000000000}"#
            ),
            Reason::Unregistered
        );
        assert_eq!(
            Reason::from_response(403, br#"{"reason":"ExpiredProviderToken"}"#),
            Reason::ExpiredProviderToken
        );
        assert_eq!(Reason::from_response(503, b""), Reason::ServiceUnavailable);
        assert_eq!(
            Reason::from_response(502, b"<html>"),
            Reason::InternalServerError
        );
        assert_eq!(Reason::from_response(429, b""), Reason::TooManyRequests);
        assert!(matches!(Reason::from_response(418, b""), Reason::Other(_)));
    }

    #[test]
    fn what_each_kind_calls_for() {
        assert_eq!(Reason::Unregistered.kind(), Kind::DeviceGone);
        assert_eq!(Reason::TooManyRequests.kind(), Kind::Retry);
        assert_eq!(Reason::ServiceUnavailable.kind(), Kind::Retry);
        assert_eq!(Reason::InvalidProviderToken.kind(), Kind::Credentials);
        assert_eq!(Reason::PayloadTooLarge.kind(), Kind::BadRequest);
        assert!(Reason::ExpiredProviderToken.wants_new_provider_token());
        assert!(!Reason::BadCertificate.wants_new_provider_token());
    }
}
