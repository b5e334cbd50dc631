//! A push's way to a uid's Android devices: through the text port, the
//! registry and the FCM sender, to a fake Google over real TLS + HTTP/2 (its
//! token endpoint and FCM's send endpoint). Covers the `fcm_when` policies,
//! the reply's summary, a token FCM says is gone, refusals before sending,
//! stats and metrics, and a push to both APNs and FCM.

mod common;

use std::sync::Arc;

use common::apns::FakeApns;
use common::fcm::{FakeFcm, FcmAnswer, hub_config, register, with_fcm};
use common::*;
use serde_json::{Value, json};

fn push(uid: &str, when: Option<&str>) -> Value {
    let mut request = json!({
        "cmd": "push", "uid": uid, "data": "hello",
        "fcm": {"notification": {"title": "Hi"}, "data": {"k": "v"}},
    });
    if let Some(when) = when {
        request["fcm_when"] = json!(when);
    }
    request
}

fn ok() -> common::fcm::FcmScript {
    Arc::new(|_| FcmAnswer::Ok)
}

#[test]
fn offline_uids_get_fcm_online_ones_only_when_asked() {
    let fake = FakeFcm::start(ok());
    let scratch = Scratch::new("fcm-offline");
    let server = Server::start(hub_config(&fake, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", "token-a:APA91b").await;
        register(&mut backend, "u1", "token-b:APA91b").await;

        let reply = backend.json(push("u1", None)).await;
        assert_eq!(
            reply,
            json!({"ok": true, "delivered": 0, "fcm": {"devices": 2, "accepted": 2, "refused": []}})
        );

        // Online: the WebSocket gets it, the devices do not (default policy).
        let mut client = login_plain(&server, "u1").await;
        let reply = backend.json(push("u1", None)).await;
        assert_eq!(reply["delivered"], 1, "{reply}");
        assert_eq!(
            reply["fcm"],
            json!({"devices": 0, "accepted": 0, "refused": []})
        );
        assert_eq!(next_text(&mut client).await, "hello");

        let reply = backend.json(push("u1", Some("always"))).await;
        assert_eq!(reply["delivered"], 1, "{reply}");
        assert_eq!(reply["fcm"]["accepted"], 2, "{reply}");
        assert_eq!(next_text(&mut client).await, "hello");

        let reply = backend.json(push("u1", Some("never"))).await;
        assert_eq!(reply["fcm"]["devices"], 0, "{reply}");
        assert_eq!(next_text(&mut client).await, "hello");
        close_client(&mut client).await;
        wait_connections(&mut backend, "u1", 0).await;

        // Offline again: `never` still sends nothing, `offline` does.
        let reply = backend.json(push("u1", Some("never"))).await;
        assert_eq!(reply["fcm"]["devices"], 0, "{reply}");
        let reply = backend.json(push("u1", Some("offline"))).await;
        assert_eq!(reply["fcm"]["accepted"], 2, "{reply}");

        let stats = backend.stats().await;
        assert_eq!(stats["fcm"]["accepted"], 6, "{stats}");
        assert_eq!(stats["fcm"]["sent"], 6, "{stats}");
    });
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
    let seen = fake.seen();
    assert_eq!(seen.len(), 6);
    let mut first_two: Vec<&str> = seen[..2].iter().map(|s| s.token.as_str()).collect();
    first_two.sort();
    assert_eq!(first_two, ["token-a:APA91b", "token-b:APA91b"]);
    // The object goes to FCM as the backend wrote it, with the token added.
    let a = seen.iter().find(|s| s.token == "token-a:APA91b").unwrap();
    assert_eq!(
        a.message,
        json!({"token": "token-a:APA91b", "notification": {"title": "Hi"}, "data": {"k": "v"}})
    );
    // One access token, from the service account's token_uri, for all.
    assert_eq!(fake.token_requests(), 1);
    assert!(seen.iter().all(|s| s.access_token == "fake-token-1"));
}

#[test]
fn a_token_fcm_says_is_gone_is_removed() {
    let fake = FakeFcm::start(Arc::new(|seen| match seen.token.as_str() {
        "gone-token" => FcmAnswer::UNREGISTERED,
        "never-issued" => FcmAnswer::InvalidToken,
        "bad-message" => FcmAnswer::Error {
            status: 400,
            grpc_status: "INVALID_ARGUMENT",
            error_code: Some("INVALID_ARGUMENT"),
            retry_after: None,
        },
        _ => FcmAnswer::Ok,
    }));
    let scratch = Scratch::new("fcm-gone");
    let server = Server::start(hub_config(&fake, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        for token in ["kept-token", "gone-token", "never-issued", "bad-message"] {
            register(&mut backend, "u1", token).await;
        }
        let reply = backend.json(push("u1", None)).await;
        let fcm = &reply["fcm"];
        assert_eq!(fcm["devices"], 4, "{reply}");
        assert_eq!(fcm["accepted"], 1, "{reply}");
        let mut refused = fcm["refused"].as_array().unwrap().clone();
        refused.sort_by_key(|r| r["fcm"].as_str().unwrap().to_string());
        assert_eq!(
            refused,
            [
                // Refused for its message: the token stays.
                json!({"fcm": "bad-message", "status": 400, "reason": "INVALID_ARGUMENT"}),
                json!({"fcm": "gone-token", "status": 404, "reason": "UNREGISTERED", "removed": true}),
                json!({"fcm": "never-issued", "status": 400, "reason": "INVALID_TOKEN", "removed": true}),
            ]
        );
        let devices = backend.json(json!({"cmd": "devices", "uid": "u1"})).await;
        let mut fcm: Vec<&str> = devices["fcm"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        fcm.sort();
        assert_eq!(fcm, ["bad-message", "kept-token"], "{devices}");
        assert_eq!(devices["apns"], json!([]), "{devices}");

        // The next push goes to the tokens left only.
        let reply = backend.json(push("u1", None)).await;
        assert_eq!(reply["fcm"]["devices"], 2, "{reply}");

        let stats = backend.stats().await;
        let fcm = &stats["fcm"];
        assert_eq!(fcm["devices_gone"], 2, "{stats}");
        assert_eq!(fcm["rejected"]["UNREGISTERED"], 1, "{stats}");
        assert_eq!(fcm["rejected"]["INVALID_TOKEN"], 1, "{stats}");
        assert_eq!(fcm["rejected"]["INVALID_ARGUMENT"], 2, "{stats}");
    });
    assert_eq!(fake.seen().len(), 6);
}

#[test]
fn refusals_before_sending() {
    let fake = FakeFcm::start(ok());
    let scratch = Scratch::new("fcm-refusals");
    let server = Server::start(hub_config(&fake, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", "token-a").await;
        for (fcm, field) in [
            (json!("token-a"), "`fcm`"),
            (json!([1, 2]), "`fcm`"),
            (json!({"token": "token-b", "data": {}}), "`fcm`"),
            (json!({"topic": "news"}), "`fcm`"),
        ] {
            let request = json!({"cmd": "push", "uid": "u1", "data": 1, "fcm": fcm});
            let reply = backend.json(request).await;
            assert_eq!(reply["ok"], false, "{reply}");
            let error = reply["error"].as_str().unwrap();
            assert!(error.starts_with(&format!("{field} must be")), "{reply}");
        }
        let request =
            json!({"cmd": "push", "uid": "u1", "data": 1, "fcm": {}, "fcm_when": "later"});
        let reply = backend.json(request).await;
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .starts_with("`fcm_when` must be"),
            "{reply}"
        );
        // Over FCM's size: refused without a request.
        let big = "x".repeat(6000);
        let request = json!({"cmd": "push", "uid": "u1", "data": 1, "fcm": {"data": {"big": big}}});
        let reply = backend.json(request).await;
        assert_eq!(reply["ok"], true, "{reply}");
        let refused = &reply["fcm"]["refused"][0];
        assert_eq!(refused["fcm"], "token-a", "{reply}");
        assert!(
            refused["reason"].as_str().unwrap().contains("limit"),
            "{reply}"
        );
        assert!(refused.get("status").is_none(), "{reply}");
        assert!(refused.get("removed").is_none(), "{reply}");
        let stats = backend.stats().await;
        assert_eq!(stats["text_errors"]["wrong_type"], 5, "{stats}");
        assert_eq!(stats["fcm"]["failed"], 1, "{stats}");
        assert_eq!(stats["fcm"]["sent"], 0, "{stats}");
        // Still registered.
        let devices = backend.json(json!({"cmd": "devices", "uid": "u1"})).await;
        assert_eq!(devices["fcm"], json!(["token-a"]), "{devices}");
    });
    assert!(fake.seen().is_empty());
}

#[test]
fn a_hub_without_fcm_says_so() {
    // Neither a registry nor FCM; then APNs and a registry, but no FCM.
    let apns = FakeApns::start(Arc::new(|_| (200, None)));
    let scratch = Scratch::new("no-fcm");
    for config in [plain_config(), common::apns::hub_config(&apns, &scratch)] {
        let server = Server::start(config);
        run(async {
            let mut backend = Backend::connect(server.text).await;
            let mut client = login_plain(&server, "u1").await;
            let reply = backend.json(push("u1", Some("always"))).await;
            assert_eq!(reply["ok"], false, "{reply}");
            assert!(
                reply["error"]
                    .as_str()
                    .unwrap()
                    .contains("--fcm-credentials-file"),
                "{reply}"
            );
            let stats = backend.stats().await;
            assert_eq!(stats["text_errors"]["no_fcm"], 1, "{stats}");
            assert!(stats["fcm"].is_null(), "{stats}");
            // Refused as a whole: the WebSocket got nothing either.
            assert_eq!(backend.push("u1", "after").await, 1);
            assert_eq!(next_text(&mut client).await, "after");
        });
    }
    assert!(apns.seen.lock().unwrap().is_empty());
}

#[test]
fn stats_and_metrics_count_fcm() {
    let fake = FakeFcm::start(Arc::new(|seen| match seen.token.as_str() {
        "gone-token" => FcmAnswer::UNREGISTERED,
        _ => FcmAnswer::Ok,
    }));
    let scratch = Scratch::new("fcm-metrics");
    let server = Server::start(hub_config(&fake, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        for token in ["token-1", "token-2", "gone-token"] {
            register(&mut backend, "u1", token).await;
        }
        let reply = backend.json(push("u1", None)).await;
        assert_eq!(reply["fcm"]["accepted"], 2, "{reply}");
        let stats = backend.stats().await;
        assert_eq!(
            stats["fcm"],
            json!({
                "sent": 3, "accepted": 2, "rejected": {"UNREGISTERED": 1}, "retried": 0,
                "devices_gone": 1, "failed": 0, "connections": 1, "queued": 0,
            }),
            "{stats}"
        );
        let response = http(server.metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(
            body.contains("# TYPE pushhub_fcm_sent_total counter"),
            "{body}"
        );
        assert_eq!(sample(body, "pushhub_fcm_sent_total"), Some(3.0), "{body}");
        assert_eq!(sample(body, "pushhub_fcm_accepted_total"), Some(2.0));
        assert_eq!(
            sample(body, "pushhub_fcm_rejected_total{reason=\"UNREGISTERED\"}"),
            Some(1.0),
            "{body}"
        );
        assert_eq!(sample(body, "pushhub_fcm_devices_gone_total"), Some(1.0));
        assert_eq!(sample(body, "pushhub_fcm_connections_total"), Some(1.0));
        // No APNs on this hub: none of its metrics.
        assert!(!body.contains("pushhub_apns_"), "{body}");
    });
}

#[test]
fn a_push_to_apns_and_fcm_reaches_each_device_once() {
    let apns = FakeApns::start(Arc::new(|_| (200, None)));
    let fake = FakeFcm::start(ok());
    let scratch = Scratch::new("apns-and-fcm");
    let config = with_fcm(common::apns::hub_config(&apns, &scratch), &fake, &scratch);
    let server = Server::start(config);
    let iphone = common::apns::device(1);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        common::apns::register(&mut backend, "u1", &iphone).await;
        register(&mut backend, "u1", "android-1").await;
        let devices = backend.json(json!({"cmd": "devices", "uid": "u1"})).await;
        assert_eq!(
            devices,
            json!({"ok": true, "apns": [iphone], "fcm": ["android-1"], "webpush": []})
        );
        let request = json!({
            "cmd": "push", "uid": "u1", "data": "hello",
            "apns": {"aps": {"alert": "Hi"}},
            "fcm": {"notification": {"title": "Hi"}},
        });
        let reply = backend.json(request).await;
        assert_eq!(
            reply,
            json!({
                "ok": true, "delivered": 0,
                "apns": {"devices": 1, "accepted": 1, "refused": []},
                "fcm": {"devices": 1, "accepted": 1, "refused": []},
            })
        );
        // A push with one platform's part goes to that platform only.
        let reply = backend.json(push("u1", None)).await;
        assert_eq!(
            reply,
            json!({"ok": true, "delivered": 0, "fcm": {"devices": 1, "accepted": 1, "refused": []}})
        );
        let stats = backend.stats().await;
        assert_eq!(stats["apns"]["accepted"], 1, "{stats}");
        assert_eq!(stats["fcm"]["accepted"], 2, "{stats}");
    });
    let apns_seen = apns.seen.lock().unwrap();
    assert_eq!(apns_seen.len(), 1);
    assert_eq!(apns_seen[0].path, format!("/3/device/{iphone}"));
    assert_eq!(&apns_seen[0].body[..], br#"{"aps":{"alert":"Hi"}}"#);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.token == "android-1"));
    assert_eq!(
        seen[0].message,
        json!({"token": "android-1", "notification": {"title": "Hi"}})
    );
}

#[test]
fn an_unacknowledged_push_goes_to_fcm() {
    let fake = FakeFcm::start(ok());
    let scratch = Scratch::new("fcm-unacked");
    let server = Server::start(hub_config(&fake, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", "token-1").await;
        // A client that never acknowledges: past the timeout, FCM gets it.
        let mut client = login_plain(&server, "u1").await;
        let mut request = push("u1", None);
        request["ack_timeout"] = json!("300ms");
        let reply = backend.json(request.clone()).await;
        assert_eq!(
            reply,
            json!({"ok": true, "delivered": 1, "acked": false,
                   "fcm": {"devices": 1, "accepted": 1, "refused": []}})
        );
        assert_eq!(next_text(&mut client).await, "hello");
        // "never" holds with `ack_timeout` too.
        request["fcm_when"] = json!("never");
        let reply = backend.json(request.clone()).await;
        assert_eq!(reply, json!({"ok": true, "delivered": 1, "acked": false}));
        assert_eq!(next_text(&mut client).await, "hello");
        close_client(&mut client).await;
        wait_connections(&mut backend, "u1", 0).await;
        // Nobody to acknowledge: FCM at once, long before the timeout.
        let mut offline = push("u1", None);
        offline["ack_timeout"] = json!("5m");
        let reply = backend.json(offline).await;
        assert_eq!(reply["fcm"]["accepted"], 1, "{reply}");
    });
    assert_eq!(fake.seen().len(), 2);
}

/// `pushhub --fcm-test TOKEN` sends one notification with the FCM flags and
/// says what FCM answered: exit 0 when accepted, 1 when refused, 2 for a
/// token that is not one.
#[test]
fn the_test_command_sends_one_message() {
    let fake = FakeFcm::start(Arc::new(|seen| match seen.token.as_str() {
        "gone-token" => FcmAnswer::UNREGISTERED,
        _ => FcmAnswer::Ok,
    }));
    let scratch = Scratch::new("fcm-test-command");
    let config = hub_config(&fake, &scratch);
    let fcm = config.fcm.unwrap();
    let credentials = fcm.credentials_file.display().to_string();
    let ca = fcm.ca_file.unwrap().display().to_string();
    let endpoint = format!("https://localhost:{}", fake.addr.port());
    let run_with = |token: &str| {
        run_binary(
            &[
                "--fcm-test",
                token,
                "--fcm-credentials-file",
                &credentials,
                "--fcm-endpoint",
                &endpoint,
                "--fcm-ca-file",
                &ca,
            ],
            &[],
        )
    };
    let (status, stdout, stderr) = run_with("cli-token");
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("accepted"), "{stdout}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].token, "cli-token");
    assert_eq!(seen[0].message["notification"]["title"], "pushhub");
    let (status, stdout, _) = run_with("gone-token");
    assert_eq!(status.code(), Some(1));
    assert!(stdout.contains("refused: 404 UNREGISTERED"), "{stdout}");
    let (status, _, stderr) = run_with("not a token");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--fcm-test"), "{stderr}");
}
