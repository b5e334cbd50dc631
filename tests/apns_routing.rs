//! A push's way to a uid's iPhones: through the text port, the registry and the
//! sender, to a real TLS + HTTP/2 server playing APNs. Covers the `apns_when`
//! policies, the reply that waits for Apple in request order, a device Apple
//! says is gone, refusals before sending, and stats.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::apns::{FakeApns, TestCert, device, hub_config, register};
use common::*;
use serde_json::{Value, json};
use smol::Timer;

fn push(uid: &str, when: Option<&str>) -> Value {
    let mut request = json!({
        "cmd": "push", "uid": uid, "data": "hello",
        "apns": {"aps": {"alert": "Hi", "sound": "default"}},
    });
    if let Some(when) = when {
        request["apns_when"] = json!(when);
    }
    request
}

#[test]
fn offline_uids_get_a_notification_online_ones_do_not() {
    let apns = FakeApns::start(Arc::new(|_| (200, None)));
    let scratch = Scratch::new("offline");
    let server = Server::start(hub_config(&apns, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &device(1)).await;
        register(&mut backend, "u1", &device(2)).await;

        let reply = backend.json(push("u1", None)).await;
        assert_eq!(
            reply,
            json!({"ok": true, "delivered": 0, "apns": {"devices": 2, "accepted": 2, "refused": []}})
        );

        // Online: the WebSocket gets it, the iPhones do not (default policy).
        let mut client = login_plain(&server, "u1").await;
        let reply = backend.json(push("u1", None)).await;
        assert_eq!(reply["delivered"], 1, "{reply}");
        assert_eq!(reply["apns"]["devices"], 0, "{reply}");
        assert_eq!(next_text(&mut client).await, "hello");

        let reply = backend.json(push("u1", Some("always"))).await;
        assert_eq!(reply["delivered"], 1, "{reply}");
        assert_eq!(reply["apns"]["accepted"], 2, "{reply}");
        assert_eq!(next_text(&mut client).await, "hello");
        close_client(&mut client).await;
        wait_connections(&mut backend, "u1", 0).await;
        let reply = backend.json(push("u1", Some("never"))).await;
        assert_eq!(reply["apns"]["devices"], 0, "{reply}");

        let stats = backend.stats().await;
        assert_eq!(stats["apns"]["accepted"], 4, "{stats}");
    });
    let seen = apns.seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].path, format!("/3/device/{}", device(1)));
    assert_eq!(seen[0].headers["apns-topic"], "com.example.app");
    assert_eq!(seen[0].headers["apns-push-type"], "alert");
    // The payload goes to Apple exactly as the backend wrote it.
    assert_eq!(
        &seen[0].body[..],
        br#"{"aps":{"alert":"Hi","sound":"default"}}"#
    );
}

#[test]
fn a_device_apple_says_is_gone_is_removed() {
    let gone = device(9);
    let apns = FakeApns::start(Arc::new(move |seen| {
        if seen.path.ends_with(&device(9)) {
            (410, Some("Unregistered"))
        } else {
            (200, None)
        }
    }));
    let scratch = Scratch::new("gone");
    let server = Server::start(hub_config(&apns, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &device(1)).await;
        register(&mut backend, "u1", &gone).await;
        let reply = backend.json(push("u1", None)).await;
        assert_eq!(reply["apns"]["accepted"], 1, "{reply}");
        assert_eq!(
            reply["apns"]["refused"],
            json!([{"apns": gone, "status": 410, "reason": "Unregistered", "removed": true}])
        );
        assert_eq!(
            backend.json(json!({"cmd": "devices", "uid": "u1"})).await,
            json!({"ok": true, "apns": [device(1)], "fcm": [], "webpush": []})
        );
    });
}

#[test]
fn replies_wait_for_apple_in_request_order() {
    let apns = FakeApns::start(Arc::new(|_| (200, None)));
    let scratch = Scratch::new("order");
    let server = Server::start(hub_config(&apns, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &device(1)).await;
        let mut client = login_plain(&server, "u2").await;
        // Pipelined: a push to APNs, then requests whose replies are ready at
        // once; they must come after it.
        let mut burst = String::new();
        burst.push_str(&format!(
            "{}\n",
            json!({"id": 1, "cmd": "push", "uid": "u1", "data": "x", "apns": {"aps": {}}})
        ));
        burst.push_str("{\"uid\":\"u2\",\"n\":2}\n");
        burst.push_str(&format!(
            "{}\n",
            json!({"id": 3, "cmd": "online", "uid": "u2"})
        ));
        backend.send(burst.as_bytes()).await;
        let first: Value = serde_json::from_str(&backend.line().await).unwrap();
        assert_eq!(first["id"], 1, "{first}");
        assert_eq!(first["apns"]["accepted"], 1, "{first}");
        assert_eq!(backend.line().await, "ok");
        let third: Value = serde_json::from_str(&backend.line().await).unwrap();
        assert_eq!(third["id"], 3, "{third}");
        // The WebSocket push behind the waiting reply was delivered all the same.
        assert_eq!(next_text(&mut client).await, "{\"uid\":\"u2\",\"n\":2}");
    });
}

#[test]
fn refusals_before_sending_and_without_apns() {
    let apns = FakeApns::start(Arc::new(|_| (200, None)));
    let scratch = Scratch::new("refusals");
    let server = Server::start(hub_config(&apns, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &device(1)).await;
        let big = "x".repeat(5000);
        let reply = backend
            .json(json!({"cmd": "push", "uid": "u1", "data": 1, "apns": {"aps": {"alert": big}}}))
            .await;
        let refused = &reply["apns"]["refused"][0];
        assert!(
            refused["reason"].as_str().unwrap().contains("4096"),
            "{reply}"
        );
        assert!(refused.get("status").is_none(), "{reply}");
    });
    assert!(apns.seen.lock().unwrap().is_empty());

    // A hub without APNs says so, and delivers nothing.
    let server = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let reply = backend.json(push("u1", None)).await;
        assert_eq!(reply["ok"], false, "{reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("--apns-topic"),
            "{reply}"
        );
    });
}

/// `pushhub --apns-test` sends one notification with the APNs flags and says
/// what Apple answered.
#[test]
fn the_test_command_sends_one_notification() {
    let apns = FakeApns::start(Arc::new(|seen| {
        if seen.path.ends_with(&device(2)) {
            (410, Some("Unregistered"))
        } else {
            (200, None)
        }
    }));
    let scratch = Scratch::new("test-command");
    let ca = scratch.path("ca.pem");
    std::fs::write(&ca, &apns.cert.cert_pem).unwrap();
    let client = TestCert::new();
    let identity = scratch.path("ck.pem");
    std::fs::write(&identity, [client.cert_pem, client.key_pem].concat()).unwrap();
    let endpoint = format!("https://localhost:{}", apns.addr.port());
    let args = |token: String| {
        vec![
            "--apns-test".to_string(),
            token,
            "--apns-topic".into(),
            "com.example.app".into(),
            "--apns-cert-file".into(),
            identity.display().to_string(),
            "--apns-endpoint".into(),
            endpoint.clone(),
            "--apns-ca-file".into(),
            ca.display().to_string(),
        ]
    };
    let accepted = args(device(1));
    let accepted: Vec<&str> = accepted.iter().map(String::as_str).collect();
    let (status, stdout, stderr) = run_binary(&accepted, &[]);
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("accepted"), "{stdout}");
    // The test certificate ends within two days: the log warns of it.
    assert!(
        stderr.contains("WARN  the APNs certificate expires in"),
        "{stderr}"
    );

    let refused = args(device(2));
    let refused: Vec<&str> = refused.iter().map(String::as_str).collect();
    let (status, stdout, _) = run_binary(&refused, &[]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout.trim(), "refused: 410 Unregistered");

    let (status, _, stderr) = run_binary(&["--apns-test", "nothex", "--apns-topic", "x"], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(apns.seen.lock().unwrap().len(), 2);
}

/// An APNs that does not answer holds only the replies of the backend
/// connection that asked for it.
#[test]
fn a_slow_apns_does_not_hold_up_other_backends() {
    let apns = FakeApns::start(Arc::new(|_| (common::apns::NO_ANSWER, None)));
    let scratch = Scratch::new("slow-apns");
    let server = Server::start(hub_config(&apns, &scratch));
    run(async {
        let mut waiting = Backend::connect(server.text).await;
        register(&mut waiting, "offline", &device(5)).await;
        let mut client = login_plain(&server, "u1").await;
        waiting
            .send(format!("{}\n", push("offline", None)).as_bytes())
            .await;
        // The notification has reached Apple, which keeps it unanswered.
        let deadline = Deadline::new(STEP, "the notification to reach the fake APNs");
        while apns.seen.lock().unwrap().is_empty() {
            deadline.tick().await;
        }
        let mut other = Backend::connect(server.text).await;
        assert_eq!(other.push("u1", "not held up").await, 1);
        assert_eq!(next_text(&mut client).await, "not held up");
        let stats = other.stats().await;
        assert_eq!(stats["apns"]["sent"], 1, "{stats}");
    });
}

/// While an APNs that does not answer holds the replies of a backend
/// connection, that connection stops reading once the bound of waiting
/// replies is reached: its requests stay in the socket, not in the hub.
#[test]
fn waiting_replies_are_bounded() {
    let apns = FakeApns::start(Arc::new(|_| (common::apns::NO_ANSWER, None)));
    let scratch = Scratch::new("held-replies");
    let server = Server::start(hub_config(&apns, &scratch));
    run(async {
        let mut other = Backend::connect(server.text).await;
        register(&mut other, "offline", &device(6)).await;
        let sent = 3 * pushhub::text_port::replies::MAX_WAITING;
        let lines: String = (0..sent)
            .map(|_| format!("{}\n", push("offline", None)))
            .collect();
        // From a thread: once the hub stops reading, this write blocks (until
        // the hub is stopped at the end of the test).
        let text = server.text;
        std::thread::spawn(move || {
            let mut backend = std::net::TcpStream::connect(text).unwrap();
            let _ = std::io::Write::write_all(&mut backend, lines.as_bytes());
            let _ = std::io::Read::read_to_end(&mut backend, &mut Vec::new());
        });
        // Wait until the count stops moving, then check where it stopped.
        let mut last = -1;
        loop {
            Timer::after(Duration::from_millis(200)).await;
            let pushes = other.stats().await["pushes"].as_i64().unwrap();
            if pushes == last {
                break;
            }
            last = pushes;
        }
        let limit = pushhub::text_port::replies::MAX_WAITING as i64;
        assert!(
            last >= limit && last < 2 * limit,
            "{last} pushes handled with {sent} sent and a bound of {limit}"
        );
    });
}

/// A push to a uid with many devices settles every one of them, and the
/// reply lists the refusals in the order of the devices.
#[test]
fn a_push_to_many_devices_settles_them_all() {
    const DEVICES: u32 = 2000;
    // Apple refuses every 500th device as unregistered.
    let apns = FakeApns::start(Arc::new(|request| {
        let last = request.path.rsplit('/').next().unwrap_or_default();
        let n = u32::from_str_radix(&last[..8], 16).unwrap_or(1);
        if n % 500 == 0 {
            (410, Some(r#"{"reason":"Unregistered"}"#))
        } else {
            (200, None)
        }
    }));
    let scratch = Scratch::new("many-devices");
    let server = Server::start(hub_config(&apns, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let lines: String = (1..=DEVICES)
            .map(|n| {
                let request = json!({"cmd": "register", "uid": "many", "apns": device(n)});
                format!("{request}\n")
            })
            .collect();
        backend.send(lines.as_bytes()).await;
        for _ in 1..=DEVICES {
            let reply: Value = serde_json::from_str(&backend.line().await).unwrap();
            assert_eq!(reply["ok"], true, "{reply}");
        }
        let reply = backend.json(push("many", None)).await;
        let summary = &reply["apns"];
        assert_eq!(summary["devices"], DEVICES, "{reply}");
        assert_eq!(summary["accepted"], DEVICES - 4, "{reply}");
        let refused: Vec<&str> = summary["refused"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["apns"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = [500, 1000, 1500, 2000].map(device).to_vec();
        assert_eq!(refused, expected, "{reply}");
    });
}
