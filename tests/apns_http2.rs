//! The APNs connection layer against a real TLS + HTTP/2 server: requests go
//! out with their path, headers and body; statuses and Apple's reasons come
//! back; several streams share one connection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::apns::FakeApns;
use common::within;
use pushhub::push::http2;

#[test]
fn posts_over_tls_and_http2() {
    let server = FakeApns::start(Arc::new(|seen| {
        if seen.path.ends_with("/bad") {
            (400, Some("BadDeviceToken"))
        } else {
            (200, None)
        }
    }));
    let tls = server.connector();
    smol::block_on(async {
        let (mut client, driver) = within(
            Duration::from_secs(10),
            "connecting",
            http2::connect(server.addr, "localhost", &tls),
        )
        .await
        .unwrap();
        let requests = async {
            let ok = client
                .post(
                    "/3/device/abcd",
                    &[
                        ("apns-topic", "com.example.app"),
                        ("apns-push-type", "alert"),
                    ],
                    Bytes::from_static(br#"{"aps":{"alert":"Hi"}}"#),
                )
                .await
                .unwrap();
            assert_eq!(ok.status, 200);
            assert!(ok.body.is_empty());
            assert!(ok.headers.contains_key("apns-id"));
            // Several streams at once on the one connection.
            let mut second = client.clone();
            let (a, b) = smol::future::zip(
                client.post("/3/device/bad", &[], Bytes::from_static(b"{}")),
                second.post("/3/device/ok", &[], Bytes::from_static(b"{}")),
            )
            .await;
            let a = a.unwrap();
            assert_eq!(a.status, 400);
            assert_eq!(&a.body[..], br#"{"reason":"BadDeviceToken"}"#);
            assert_eq!(b.unwrap().status, 200);
        };
        let finished = smol::future::or(
            async {
                requests.await;
                true
            },
            async {
                driver.await.unwrap();
                false
            },
        );
        assert!(within(Duration::from_secs(10), "requests", finished).await);
    });
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/3/device/abcd");
    assert_eq!(seen[0].headers["apns-topic"], "com.example.app");
    assert_eq!(seen[0].headers["apns-push-type"], "alert");
    assert_eq!(&seen[0].body[..], br#"{"aps":{"alert":"Hi"}}"#);
}

#[test]
fn an_untrusted_server_is_refused() {
    let server = FakeApns::start(Arc::new(|_| (200, None)));
    // Trusting only the system's roots: the test certificate is self-signed.
    let tls = async_native_tls::TlsConnector::new().request_alpns(&["h2"]);
    let outcome = smol::block_on(within(
        Duration::from_secs(10),
        "connecting",
        http2::connect(server.addr, "localhost", &tls),
    ));
    assert!(matches!(outcome, Err(http2::ConnectError::Tls(_))));
}
