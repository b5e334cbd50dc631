//! FCM's reasons for refusing a message, and what each means for us.
//!
//! FCM answers an error with a `google.rpc.Status` in JSON:
//! `{"error":{"code":404,"message":"...","status":"NOT_FOUND","details":[...]}}`,
//! whose details may hold an `FcmError` (`errorCode`, FCM's own list:
//! UNSPECIFIED_ERROR, INVALID_ARGUMENT, UNREGISTERED, SENDER_ID_MISMATCH,
//! QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL, THIRD_PARTY_AUTH_ERROR) and a
//! `google.rpc.BadRequest` (the fields at fault). The reason is read once,
//! most specific first: the `errorCode`, then the `status`, then the HTTP
//! status. Every reason is then sorted into a [`Kind`], so that the sender
//! decides by kind and never matches strings.
//!
//! A device token is removed only on FCM's explicit word (UNREGISTERED,
//! SENDER_ID_MISMATCH, or INVALID_ARGUMENT about `message.token`): a bare 404
//! or a body we cannot read may be a proxy's or a wrong project's, and never
//! costs a device.

use std::fmt;

use serde_json::Value;

/// What a refusal calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The registration token is dead or not ours: remove it.
    Gone,
    /// A passing condition at FCM: retry later, with backoff (and after any
    /// `retry-after` it gave).
    Retry,
    /// Our access token or the project's setup is refused. Never a token
    /// removal; on [`Reason::Unauthenticated`] the sender fetches a new access
    /// token once.
    Credentials,
    /// The message itself is wrong: retrying it unchanged cannot help.
    Rejected,
}

/// Why FCM refused a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `UNREGISTERED` (404): the app was uninstalled, or the token expired.
    Unregistered,
    /// `INVALID_ARGUMENT` about the registration token (400): not a token
    /// FCM ever issued, or a truncated one.
    InvalidToken,
    /// `INVALID_ARGUMENT` about another part of the message (400).
    InvalidArgument,
    /// `SENDER_ID_MISMATCH` (403): the token belongs to another project.
    SenderIdMismatch,
    /// `QUOTA_EXCEEDED` (429): the project's or the device's rate.
    QuotaExceeded,
    /// `UNAVAILABLE` (503).
    Unavailable,
    /// `INTERNAL` (500).
    Internal,
    /// `THIRD_PARTY_AUTH_ERROR` (401): the APNs certificate or Web Push key
    /// in the Firebase project is refused by Apple or the browser.
    ThirdPartyAuthError,
    /// `UNAUTHENTICATED` (401): our access token is missing, expired or revoked.
    Unauthenticated,
    /// `PERMISSION_DENIED` (403): the service account may not send for the
    /// project, or the FCM API is not enabled in it.
    PermissionDenied,
    /// Anything else: the HTTP status, and the most specific code given
    /// (`errorCode`, else `status`, else `HTTP_<status>`).
    Other { status: u16, code: String },
}

/// The longest code kept verbatim in [`Reason::Other`]: codes become counter
/// names, so what a peer sends must stay a short upper-case word.
const MAX_CODE: usize = 64;

impl Reason {
    /// The reason in an error response (`status` and `body`).
    pub fn from_response(status: u16, body: &[u8]) -> Reason {
        let error = Error::parse(body);
        let by_code = error.error_code.as_deref().and_then(|code| match code {
            "UNREGISTERED" => Some(Reason::Unregistered),
            "INVALID_ARGUMENT" => Some(error.invalid_argument()),
            "SENDER_ID_MISMATCH" => Some(Reason::SenderIdMismatch),
            "QUOTA_EXCEEDED" => Some(Reason::QuotaExceeded),
            "UNAVAILABLE" => Some(Reason::Unavailable),
            "INTERNAL" => Some(Reason::Internal),
            "THIRD_PARTY_AUTH_ERROR" => Some(Reason::ThirdPartyAuthError),
            // UNSPECIFIED_ERROR and codes added after this was written say
            // less than the status does.
            _ => None,
        });
        let by_status = || {
            error.status.as_deref().and_then(|s| match s {
                "INVALID_ARGUMENT" => Some(error.invalid_argument()),
                "UNAUTHENTICATED" => Some(Reason::Unauthenticated),
                "PERMISSION_DENIED" => Some(Reason::PermissionDenied),
                "RESOURCE_EXHAUSTED" => Some(Reason::QuotaExceeded),
                "UNAVAILABLE" => Some(Reason::Unavailable),
                "INTERNAL" => Some(Reason::Internal),
                _ => None,
            })
        };
        let by_http = || match status {
            400 => Some(Reason::InvalidArgument),
            401 => Some(Reason::Unauthenticated),
            403 => Some(Reason::PermissionDenied),
            429 => Some(Reason::QuotaExceeded),
            500 => Some(Reason::Internal),
            503 => Some(Reason::Unavailable),
            _ => None,
        };
        by_code
            .or_else(by_status)
            .or_else(by_http)
            .unwrap_or_else(|| Reason::Other {
                status,
                code: error
                    .error_code
                    .or(error.status)
                    .filter(|code| is_code(code))
                    .unwrap_or_else(|| format!("HTTP_{status}")),
            })
    }

    /// A stable name, for counters and logs: FCM's own code where it has one
    /// (`UNREGISTERED`, `INVALID_ARGUMENT`, `SENDER_ID_MISMATCH`,
    /// `QUOTA_EXCEEDED`, `UNAVAILABLE`, `INTERNAL`, `THIRD_PARTY_AUTH_ERROR`),
    /// the `google.rpc` status for `UNAUTHENTICATED` and `PERMISSION_DENIED`,
    /// `INVALID_TOKEN` for an INVALID_ARGUMENT about the registration token,
    /// and [`Reason::Other`]'s code.
    pub fn name(&self) -> &str {
        match self {
            Reason::Unregistered => "UNREGISTERED",
            Reason::InvalidToken => "INVALID_TOKEN",
            Reason::InvalidArgument => "INVALID_ARGUMENT",
            Reason::SenderIdMismatch => "SENDER_ID_MISMATCH",
            Reason::QuotaExceeded => "QUOTA_EXCEEDED",
            Reason::Unavailable => "UNAVAILABLE",
            Reason::Internal => "INTERNAL",
            Reason::ThirdPartyAuthError => "THIRD_PARTY_AUTH_ERROR",
            Reason::Unauthenticated => "UNAUTHENTICATED",
            Reason::PermissionDenied => "PERMISSION_DENIED",
            Reason::Other { code, .. } => code,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Reason::Unregistered | Reason::InvalidToken | Reason::SenderIdMismatch => Kind::Gone,
            Reason::QuotaExceeded | Reason::Unavailable | Reason::Internal => Kind::Retry,
            Reason::ThirdPartyAuthError | Reason::Unauthenticated | Reason::PermissionDenied => {
                Kind::Credentials
            }
            Reason::InvalidArgument => Kind::Rejected,
            Reason::Other { status, .. } if *status == 429 || (500..=599).contains(status) => {
                Kind::Retry
            }
            Reason::Other { .. } => Kind::Rejected,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An upper-case word, as Google's codes are.
fn is_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_CODE
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// What an error body says, as far as we read it; all empty for a body that
/// is not Google's JSON.
#[derive(Default)]
struct Error {
    message: Option<String>,
    status: Option<String>,
    error_code: Option<String>,
    /// The fields a `google.rpc.BadRequest` names.
    fields: Vec<String>,
}

impl Error {
    fn parse(body: &[u8]) -> Error {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Error::default();
        };
        let Some(error) = value.get("error") else {
            return Error::default();
        };
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        let mut parsed = Error {
            message: text(error, "message"),
            status: text(error, "status"),
            ..Error::default()
        };
        let details = error.get("details").and_then(Value::as_array);
        for detail in details.into_iter().flatten() {
            let kind = detail.get("@type").and_then(Value::as_str).unwrap_or("");
            if kind.ends_with("/google.firebase.fcm.v1.FcmError") {
                parsed.error_code = parsed.error_code.or_else(|| text(detail, "errorCode"));
            } else if kind.ends_with("/google.rpc.BadRequest") {
                let violations = detail.get("fieldViolations").and_then(Value::as_array);
                parsed.fields.extend(
                    violations
                        .into_iter()
                        .flatten()
                        .filter_map(|v| text(v, "field")),
                );
            }
        }
        parsed
    }

    /// INVALID_ARGUMENT is about the token when a field violation names
    /// `message.token`, or, since Google's documented answer to a bad token
    /// carries only an FcmError, when the message says so.
    fn invalid_argument(&self) -> Reason {
        let names_token = self.fields.iter().any(|f| f == "message.token");
        let says_token = self.message.as_deref().is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            m.contains("registration token") && m.contains("not a valid")
        });
        if names_token || says_token {
            Reason::InvalidToken
        } else {
            Reason::InvalidArgument
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FCM_ERROR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
    const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";

    fn body(code: u16, message: &str, status: &str, details: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error": {"code": code, "message": message, "status": status, "details": details}
        }))
        .unwrap()
    }

    fn fcm(code: u16, message: &str, status: &str, error_code: &str) -> Vec<u8> {
        body(
            code,
            message,
            status,
            serde_json::json!([{"@type": FCM_ERROR, "errorCode": error_code}]),
        )
    }

    fn reason(status: u16, body: &[u8]) -> Reason {
        Reason::from_response(status, body)
    }

    #[test]
    fn gone_tokens() {
        let unregistered = fcm(
            404,
            "Requested entity was not found.",
            "NOT_FOUND",
            "UNREGISTERED",
        );
        assert_eq!(reason(404, &unregistered), Reason::Unregistered);

        // Google's documented answer to a bad token: an FcmError only.
        let invalid = fcm(
            400,
            "The registration token is not a valid FCM registration token",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        );
        assert_eq!(reason(400, &invalid), Reason::InvalidToken);
        // And as it is often seen: with a BadRequest naming message.token.
        let invalid = body(
            400,
            "The registration token is not a valid FCM registration token",
            "INVALID_ARGUMENT",
            serde_json::json!([
                {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"},
                {"@type": BAD_REQUEST, "fieldViolations": [
                    {"field": "message.token", "description": "Invalid registration token"}
                ]}
            ]),
        );
        assert_eq!(reason(400, &invalid), Reason::InvalidToken);
        // The field alone, without FcmError or that message.
        let invalid = body(
            400,
            "Request contains an invalid argument.",
            "INVALID_ARGUMENT",
            serde_json::json!([{"@type": BAD_REQUEST, "fieldViolations": [
                {"field": "message.token", "description": "Invalid registration token"}
            ]}]),
        );
        assert_eq!(reason(400, &invalid), Reason::InvalidToken);

        let mismatch = fcm(
            403,
            "SenderId mismatch",
            "PERMISSION_DENIED",
            "SENDER_ID_MISMATCH",
        );
        assert_eq!(reason(403, &mismatch), Reason::SenderIdMismatch);

        for r in [
            Reason::Unregistered,
            Reason::InvalidToken,
            Reason::SenderIdMismatch,
        ] {
            assert_eq!(r.kind(), Kind::Gone, "{r}");
        }
    }

    #[test]
    fn rejected_messages() {
        let bad_data = body(
            400,
            "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
            "INVALID_ARGUMENT",
            serde_json::json!([{"@type": BAD_REQUEST, "fieldViolations": [{
                "field": "message.data[0].value",
                "description": "Invalid value at 'message.data[0].value' (TYPE_STRING), 12"
            }]}]),
        );
        assert_eq!(reason(400, &bad_data), Reason::InvalidArgument);
        let too_big = fcm(
            400,
            "Message is too big",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        );
        assert_eq!(reason(400, &too_big), Reason::InvalidArgument);
        assert_eq!(Reason::InvalidArgument.kind(), Kind::Rejected);

        let other = body(
            404,
            "Requested entity was not found.",
            "NOT_FOUND",
            serde_json::json!([]),
        );
        let other = reason(404, &other);
        assert_eq!(
            other,
            Reason::Other {
                status: 404,
                code: "NOT_FOUND".into()
            }
        );
        assert_eq!(other.kind(), Kind::Rejected);
        assert_eq!(other.name(), "NOT_FOUND");
    }

    #[test]
    fn passing_conditions() {
        let quota = fcm(
            429,
            "Quota exceeded for quota metric 'Send requests'",
            "RESOURCE_EXHAUSTED",
            "QUOTA_EXCEEDED",
        );
        assert_eq!(reason(429, &quota), Reason::QuotaExceeded);
        let unavailable = fcm(
            503,
            "The service is currently unavailable.",
            "UNAVAILABLE",
            "UNAVAILABLE",
        );
        assert_eq!(reason(503, &unavailable), Reason::Unavailable);
        let internal = fcm(500, "Internal error encountered.", "INTERNAL", "INTERNAL");
        assert_eq!(reason(500, &internal), Reason::Internal);
        // Without an FcmError, the status says as much.
        let exhausted = body(
            429,
            "Quota exceeded",
            "RESOURCE_EXHAUSTED",
            serde_json::json!([]),
        );
        assert_eq!(reason(429, &exhausted), Reason::QuotaExceeded);
        for r in [Reason::QuotaExceeded, Reason::Unavailable, Reason::Internal] {
            assert_eq!(r.kind(), Kind::Retry, "{r}");
        }
        // Other 5xx: a gateway's timeout.
        let deadline = body(
            504,
            "Deadline exceeded",
            "DEADLINE_EXCEEDED",
            serde_json::json!([]),
        );
        let r = reason(504, &deadline);
        assert_eq!(r.name(), "DEADLINE_EXCEEDED");
        assert_eq!(r.kind(), Kind::Retry);
    }

    #[test]
    fn credential_problems() {
        let unauthenticated = body(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential. \
             See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "UNAUTHENTICATED",
            serde_json::json!(null),
        );
        assert_eq!(reason(401, &unauthenticated), Reason::Unauthenticated);
        let denied = body(
            403,
            "Permission 'cloudmessaging.messages.create' denied on resource \
             '//cloudresourcemanager.googleapis.com/projects/test-project' (or it may not exist).",
            "PERMISSION_DENIED",
            serde_json::json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "cloudresourcemanager.googleapis.com"
            }]),
        );
        assert_eq!(reason(403, &denied), Reason::PermissionDenied);
        // A 401 that is Apple's or the browser's refusal, not ours.
        let third = fcm(
            401,
            "Auth error from APNS or Web Push Service",
            "UNAUTHENTICATED",
            "THIRD_PARTY_AUTH_ERROR",
        );
        assert_eq!(reason(401, &third), Reason::ThirdPartyAuthError);
        for r in [
            Reason::ThirdPartyAuthError,
            Reason::Unauthenticated,
            Reason::PermissionDenied,
        ] {
            assert_eq!(r.kind(), Kind::Credentials, "{r}");
        }
    }

    #[test]
    fn error_code_comes_first_and_unspecified_falls_through() {
        // UNREGISTERED wins over a status that says something else.
        let mixed = fcm(400, "x", "INVALID_ARGUMENT", "UNREGISTERED");
        assert_eq!(reason(400, &mixed), Reason::Unregistered);
        let unspecified = fcm(503, "x", "UNAVAILABLE", "UNSPECIFIED_ERROR");
        assert_eq!(reason(503, &unspecified), Reason::Unavailable);
        let unspecified = fcm(418, "x", "", "UNSPECIFIED_ERROR");
        assert_eq!(
            reason(418, &unspecified),
            Reason::Other {
                status: 418,
                code: "UNSPECIFIED_ERROR".into()
            }
        );
        let newer = fcm(409, "x", "ABORTED", "SOMETHING_NEW");
        assert_eq!(reason(409, &newer).name(), "SOMETHING_NEW");
    }

    #[test]
    fn bodies_that_are_not_googles_json() {
        let garbage: [&[u8]; 9] = [
            b"",
            b"<html><body>502 Bad Gateway</body></html>",
            b"\xff\xfe\x00",
            b"[]",
            b"null",
            br#"{"error":"invalid"}"#,
            br#"{"error":{"details":"not a list","status":7}}"#,
            br#"{"error":{"details":[null, 1, {"@type": 5}, {"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":{"field":"message.token"}}]}}"#,
            br#"{"error":{"code":404,"message":"Not Found","status":"NOT_FOUND"#,
        ];
        for body in garbage {
            assert_eq!(reason(401, body), Reason::Unauthenticated);
            assert_eq!(reason(403, body), Reason::PermissionDenied);
            assert_eq!(reason(429, body), Reason::QuotaExceeded);
            assert_eq!(reason(500, body), Reason::Internal);
            assert_eq!(reason(503, body), Reason::Unavailable);
            // Never a token removal without FCM's word.
            assert_eq!(reason(400, body), Reason::InvalidArgument);
            let r = reason(404, body);
            assert_eq!(
                r.kind(),
                Kind::Rejected,
                "{}",
                String::from_utf8_lossy(body)
            );
            let r = reason(502, body);
            assert_eq!(r.kind(), Kind::Retry);
            assert_eq!(r.name(), "HTTP_502");
        }
        // A code fit for no counter is replaced by the HTTP status.
        let odd = fcm(409, "x", "", "not a code {}");
        assert_eq!(reason(409, &odd).name(), "HTTP_409");
        let long = fcm(409, "x", "", &"A".repeat(65));
        assert_eq!(reason(409, &long).name(), "HTTP_409");
    }

    #[test]
    fn names_are_stable() {
        let all = [
            (Reason::Unregistered, "UNREGISTERED"),
            (Reason::InvalidToken, "INVALID_TOKEN"),
            (Reason::InvalidArgument, "INVALID_ARGUMENT"),
            (Reason::SenderIdMismatch, "SENDER_ID_MISMATCH"),
            (Reason::QuotaExceeded, "QUOTA_EXCEEDED"),
            (Reason::Unavailable, "UNAVAILABLE"),
            (Reason::Internal, "INTERNAL"),
            (Reason::ThirdPartyAuthError, "THIRD_PARTY_AUTH_ERROR"),
            (Reason::Unauthenticated, "UNAUTHENTICATED"),
            (Reason::PermissionDenied, "PERMISSION_DENIED"),
        ];
        for (reason, name) in all {
            assert_eq!(reason.name(), name);
            assert_eq!(reason.to_string(), name);
        }
    }
}
