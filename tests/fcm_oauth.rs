//! FCM's OAuth grant and error answers against a fake Google over real TLS
//! and HTTP/2: a service account's signed assertion buys an access token, the
//! token sends a message, a tampered assertion is refused, and a revoked
//! token's 401 reads as UNAUTHENTICATED and costs one new token.

mod common;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use common::fcm::{FakeFcm, FcmAnswer, SEND_PATH};
use common::{STEP, run, within};
use data_encoding::BASE64URL_NOPAD;
use pushhub::push::fcm::credentials::ServiceAccount;
use pushhub::push::fcm::oauth::{self, AccessToken, TokenCache, TokenError};
use pushhub::push::fcm::reason::{Kind, Reason};
use pushhub::push::http2::{self, Http2};
use pushhub::time::unix_now;
use serde_json::json;

fn ok_script() -> common::fcm::FcmScript {
    Arc::new(|_| FcmAnswer::Ok)
}

/// Runs `work` while the connection's `driver` is polled; the connection
/// ending first fails the test.
async fn driven<T>(
    driver: impl Future<Output = Result<(), h2::Error>>,
    work: impl Future<Output = T>,
) -> T {
    let outcome = smol::future::or(async { Ok(work.await) }, async { Err(driver.await) });
    within(STEP, "requests to the fake FCM", outcome)
        .await
        .unwrap_or_else(|end| panic!("the connection ended first: {end:?}"))
}

/// The path of the service account's `token_uri`, checked to point at `fake`.
fn token_path(sa: &ServiceAccount, fake: &FakeFcm) -> String {
    let uri: http::Uri = sa.token_uri.parse().unwrap();
    assert_eq!(uri.host(), Some("localhost"));
    assert_eq!(uri.port_u16(), Some(fake.addr.port()));
    uri.path().to_string()
}

/// POSTs `assertion` to the token endpoint and parses the answer.
async fn exchange(
    http: &mut Http2,
    path: &str,
    assertion: &str,
    now: u64,
) -> Result<AccessToken, TokenError> {
    let response = http
        .post(
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(oauth::token_request_body(assertion)),
        )
        .await
        .unwrap();
    oauth::parse_token_response(response.status.as_u16(), &response.body, now)
}

async fn send(http: &mut Http2, bearer: &str, device: &str) -> http2::Response {
    let body = json!({"message": {"token": device, "data": {"text": "hello"}}});
    http.post(
        SEND_PATH,
        &[
            ("authorization", bearer),
            ("content-type", "application/json"),
        ],
        Bytes::from(body.to_string()),
    )
    .await
    .unwrap()
}

#[test]
fn a_token_from_google_sends_a_message() {
    let fake = FakeFcm::start(ok_script());
    let sa = ServiceAccount::from_json(fake.service_account().as_bytes()).unwrap();
    assert_eq!(sa.project_id, "test-project");
    let path = token_path(&sa, &fake);
    let tls = fake.connector();
    run(async {
        let (mut http, driver) = within(
            STEP,
            "connecting",
            http2::connect(fake.addr, "localhost", &tls),
        )
        .await
        .unwrap();
        driven(driver, async {
            let now = unix_now();
            let mut cache = TokenCache::new();
            let assertion = oauth::assertion(&sa, now).unwrap();
            let token = exchange(&mut http, &path, &assertion, now).await.unwrap();
            assert_eq!(token.value(), "fake-token-1");
            assert_eq!(token.expires_at(), now + 3600);
            cache.store(token);
            let bearer = cache.bearer(now).unwrap();
            assert_eq!(bearer, "Bearer fake-token-1");

            let response = send(&mut http, &bearer, "device-1").await;
            assert_eq!(response.status, 200);
            let name: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
            assert_eq!(name["name"], "projects/test-project/messages/0:1");

            // The lifetime is the server's to say.
            fake.set_expires_in(1800);
            let token = exchange(&mut http, &path, &assertion, now).await.unwrap();
            assert_eq!(token.value(), "fake-token-2");
            assert_eq!(token.expires_at(), now + 1800);
        })
        .await;
    });
    assert_eq!(fake.token_requests(), 2);
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].token, "device-1");
    assert_eq!(seen[0].message["data"]["text"], "hello");
    assert_eq!(seen[0].access_token, "fake-token-1");
    assert_eq!(seen[0].headers["content-type"], "application/json");
}

/// `jwt` with its `index`th part replaced by `part`.
fn replace_part(jwt: &str, index: usize, part: &str) -> String {
    let mut parts: Vec<&str> = jwt.split('.').collect();
    parts[index] = part;
    parts.join(".")
}

#[test]
fn a_tampered_assertion_is_refused() {
    let fake = FakeFcm::start(ok_script());
    let sa = ServiceAccount::from_json(fake.service_account().as_bytes()).unwrap();
    let path = token_path(&sa, &fake);
    // The same account with another key, as after the key was rotated.
    let mut other: serde_json::Value = serde_json::from_str(&fake.service_account()).unwrap();
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    other["private_key"] =
        json!(String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap());
    let other = ServiceAccount::from_json(other.to_string().as_bytes()).unwrap();
    let tls = fake.connector();
    run(async {
        let (mut http, driver) = within(
            STEP,
            "connecting",
            http2::connect(fake.addr, "localhost", &tls),
        )
        .await
        .unwrap();
        driven(driver, async {
            let now = unix_now();
            let genuine = oauth::assertion(&sa, now).unwrap();

            let mut signature = BASE64URL_NOPAD
                .decode(genuine.split('.').nth(2).unwrap().as_bytes())
                .unwrap();
            signature[100] ^= 1;
            let flipped = replace_part(&genuine, 2, &BASE64URL_NOPAD.encode(&signature));

            // Claims a forger would want, under the genuine signature.
            let claims = json!({
                "iss": sa.client_email,
                "scope": oauth::SCOPE,
                "aud": sa.token_uri,
                "iat": now,
                "exp": now + 3600,
                "sub": "someone-else@example.com",
            });
            let forged = replace_part(
                &genuine,
                1,
                &BASE64URL_NOPAD.encode(claims.to_string().as_bytes()),
            );

            let rotated = oauth::assertion(&other, now).unwrap();

            for tampered in [&flipped, &forged, &rotated] {
                let err = exchange(&mut http, &path, tampered, now).await.unwrap_err();
                assert_eq!(
                    err,
                    TokenError::Refused {
                        status: 400,
                        error: "invalid_grant".into(),
                        description: Some("Invalid JWT Signature.".into()),
                    }
                );
                assert!(!err.retry_may_help());
            }
            // The refusals were for the signature: the genuine one passes.
            let token = exchange(&mut http, &path, &genuine, now).await.unwrap();
            assert_eq!(token.value(), "fake-token-1");
        })
        .await;
    });
    assert_eq!(fake.token_requests(), 4);
    assert_eq!(fake.issued(), ["fake-token-1"]);
    let refusals = fake.refusals();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(
        refusals.iter().all(|r| r.contains("Signature")),
        "{refusals:?}"
    );
}

#[test]
fn a_revoked_token_is_unauthenticated_and_replaced_once() {
    let fake = FakeFcm::start(ok_script());
    let sa = ServiceAccount::from_json(fake.service_account().as_bytes()).unwrap();
    let path = token_path(&sa, &fake);
    let tls = fake.connector();
    run(async {
        let (mut http, driver) = within(
            STEP,
            "connecting",
            http2::connect(fake.addr, "localhost", &tls),
        )
        .await
        .unwrap();
        driven(driver, async {
            let now = unix_now();
            let mut cache = TokenCache::new();
            let assertion = oauth::assertion(&sa, now).unwrap();
            cache.store(exchange(&mut http, &path, &assertion, now).await.unwrap());
            let first = cache.current(now).unwrap().to_string();
            let bearer = cache.bearer(now).unwrap();
            assert_eq!(send(&mut http, &bearer, "device-1").await.status, 200);

            fake.revoke_tokens();
            // Two requests in flight with the revoked token.
            let mut second = http.clone();
            let (a, b) = smol::future::zip(
                send(&mut http, &bearer, "device-2"),
                send(&mut second, &bearer, "device-3"),
            )
            .await;
            for refused in [a, b] {
                assert_eq!(refused.status, 401);
                let reason = Reason::from_response(refused.status.as_u16(), &refused.body);
                assert_eq!(reason, Reason::Unauthenticated);
                assert_eq!(reason.kind(), Kind::Credentials);
            }
            // The first refusal drops the token, the second finds it gone.
            assert!(cache.invalidate(&first));
            assert_eq!(cache.current(now), None);
            cache.store(exchange(&mut http, &path, &assertion, now).await.unwrap());
            assert!(!cache.invalidate(&first));
            let bearer = cache.bearer(now).unwrap();
            assert_eq!(bearer, "Bearer fake-token-2");
            assert_eq!(send(&mut http, &bearer, "device-2").await.status, 200);
        })
        .await;
    });
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.unauthorized(), 2);
    let tokens: Vec<String> = fake.seen().into_iter().map(|s| s.token).collect();
    assert_eq!(tokens, ["device-1", "device-2"]);
}

#[test]
fn fcm_errors_read_as_their_reasons() {
    let fake = FakeFcm::start(Arc::new(|seen| match seen.token.as_str() {
        "gone" => FcmAnswer::UNREGISTERED,
        "bad" => FcmAnswer::InvalidToken,
        "foreign" => FcmAnswer::SENDER_ID_MISMATCH,
        "busy" => FcmAnswer::quota_exceeded(Some(30)),
        "down" => FcmAnswer::UNAVAILABLE,
        "apns" => FcmAnswer::Error {
            status: 401,
            grpc_status: "UNAUTHENTICATED",
            error_code: Some("THIRD_PARTY_AUTH_ERROR"),
            retry_after: None,
        },
        _ => FcmAnswer::Ok,
    }));
    let sa = ServiceAccount::from_json(fake.service_account().as_bytes()).unwrap();
    let path = token_path(&sa, &fake);
    let tls = fake.connector();
    run(async {
        let (mut http, driver) = within(
            STEP,
            "connecting",
            http2::connect(fake.addr, "localhost", &tls),
        )
        .await
        .unwrap();
        driven(driver, async {
            let now = unix_now();
            let token = exchange(&mut http, &path, &oauth::assertion(&sa, now).unwrap(), now)
                .await
                .unwrap();
            let bearer = format!("Bearer {}", token.value());
            for (device, reason, kind) in [
                ("gone", Reason::Unregistered, Kind::Gone),
                ("bad", Reason::InvalidToken, Kind::Gone),
                ("foreign", Reason::SenderIdMismatch, Kind::Gone),
                ("busy", Reason::QuotaExceeded, Kind::Retry),
                ("down", Reason::Unavailable, Kind::Retry),
                ("apns", Reason::ThirdPartyAuthError, Kind::Credentials),
            ] {
                let response = send(&mut http, &bearer, device).await;
                let got = Reason::from_response(response.status.as_u16(), &response.body);
                assert_eq!(got, reason, "{device}");
                assert_eq!(got.kind(), kind, "{device}");
                if device == "busy" {
                    assert_eq!(response.status, 429);
                    assert_eq!(response.headers["retry-after"], "30");
                }
            }
            assert_eq!(send(&mut http, &bearer, "fine").await.status, 200);
        })
        .await;
    });
    assert_eq!(fake.seen().len(), 7);
}
