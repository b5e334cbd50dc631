//! A push's way to a uid's browsers: through the text port, the registry and
//! the Web Push sender, to the fake push service (real TLS, HTTP/2 or
//! HTTP/1.1), which decrypts each message with `ece` and checks its VAPID
//! JWT with openssl. Covers what `webpush.data` becomes, the `webpush_when`
//! policies, a subscription the service says is gone, `vapid_key`, refusals
//! before sending, stats and metrics, two push services for one uid, and
//! `pushhub --webpush-test`.

mod common;

use std::sync::Arc;

use common::webpush::{FakePushService, Protocol, PushAnswer, accept_all, hub_config, register};
use common::*;
use serde_json::{Value, json};

fn push(uid: &str, webpush: Value) -> Value {
    json!({"cmd": "push", "uid": uid, "data": "hello", "webpush": webpush})
}

/// The reply of a push that reached no connection and `accepted` browsers.
fn accepted(devices: usize, accepted: usize) -> Value {
    json!({"ok": true, "delivered": 0,
           "webpush": {"devices": devices, "accepted": accepted, "refused": []}})
}

fn texts(service: &FakePushService) -> Vec<Option<String>> {
    service.delivered().into_iter().map(|s| s.text).collect()
}

#[test]
fn offline_uids_get_the_data_decrypted_as_sent() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let scratch = Scratch::new("webpush-data");
    let server = Server::start(hub_config(&service, &scratch));
    let object = json!({"title": "Hi", "n": 1, "tags": ["a", "b"]});
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &service.subscribe("alice")).await;
        // A string: its text.
        let reply = backend.json(push("u1", json!({"data": "héllo"}))).await;
        assert_eq!(reply, accepted(1, 1));
        // Any other JSON: its JSON text, as written.
        let reply = backend.json(push("u1", json!({"data": object}))).await;
        assert_eq!(reply, accepted(1, 1));
        let reply = backend.json(push("u1", json!({"data": 42}))).await;
        assert_eq!(reply, accepted(1, 1));
        // None: the push's own data, a string or not.
        let reply = backend.json(push("u1", json!({}))).await;
        assert_eq!(reply, accepted(1, 1));
        let request = json!({"cmd": "push", "uid": "u1", "data": {"a": [1, 2]}, "webpush": {}});
        assert_eq!(backend.json(request).await, accepted(1, 1));
        let request = json!({"cmd": "push", "uid": "u1", "data": "hello",
                             "webpush": {"ttl": 60, "urgency": "high", "topic": "news_1"}});
        assert_eq!(backend.json(request).await, accepted(1, 1));
    });
    assert!(service.refusals().is_empty(), "{:?}", service.refusals());
    let expected = [
        "héllo".to_string(),
        serde_json::to_string(&object).unwrap(),
        "42".into(),
        "hello".into(),
        r#"{"a":[1,2]}"#.into(),
        "hello".into(),
    ];
    assert_eq!(texts(&service), expected.map(Some));
    let delivered = service.delivered();
    assert!(delivered.iter().all(|s| s.id == "alice"));
    // A day without `ttl`.
    assert_eq!(delivered[0].ttl, 86400);
    assert_eq!(
        (delivered[0].urgency.as_ref(), delivered[0].topic.as_ref()),
        (None, None)
    );
    let last = &delivered[5];
    assert_eq!(last.ttl, 60);
    assert_eq!(last.urgency.as_deref(), Some("high"));
    assert_eq!(last.topic.as_deref(), Some("news_1"));
}

#[test]
fn online_uids_get_it_only_when_always() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let scratch = Scratch::new("webpush-online");
    let server = Server::start(hub_config(&service, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &service.subscribe("alice")).await;
        let mut client = login_plain(&server, "u1").await;
        // Online: the WebSocket gets it, the browser's push service does not.
        let reply = backend.json(push("u1", json!({"data": "default"}))).await;
        assert_eq!(
            reply,
            json!({"ok": true, "delivered": 1,
                   "webpush": {"devices": 0, "accepted": 0, "refused": []}})
        );
        assert_eq!(next_text(&mut client).await, "hello");
        let mut always = push("u1", json!({"data": "always"}));
        always["webpush_when"] = json!("always");
        let reply = backend.json(always).await;
        assert_eq!(reply["delivered"], 1, "{reply}");
        assert_eq!(reply["webpush"]["accepted"], 1, "{reply}");
        assert_eq!(next_text(&mut client).await, "hello");
        let mut never = push("u1", json!({"data": "never"}));
        never["webpush_when"] = json!("never");
        let reply = backend.json(never).await;
        assert_eq!(reply["webpush"]["devices"], 0, "{reply}");
        assert_eq!(next_text(&mut client).await, "hello");
        close_client(&mut client).await;
        wait_connections(&mut backend, "u1", 0).await;
        let reply = backend.json(push("u1", json!({"data": "offline"}))).await;
        assert_eq!(reply, accepted(1, 1));
    });
    assert_eq!(
        texts(&service),
        [Some("always".to_string()), Some("offline".to_string())]
    );
}

#[test]
fn a_gone_subscription_is_removed_a_too_large_one_kept() {
    let service = FakePushService::start(
        Protocol::Http2,
        Arc::new(|seen| match seen.id.as_str() {
            "gone" => PushAnswer::Status {
                status: 410,
                retry_after: None,
            },
            "large" => PushAnswer::Status {
                status: 413,
                retry_after: None,
            },
            _ => PushAnswer::Created,
        }),
    );
    let scratch = Scratch::new("webpush-gone");
    let server = Server::start(hub_config(&service, &scratch));
    let (fine, gone, large) = (
        service.subscribe("fine"),
        service.subscribe("gone"),
        service.subscribe("large"),
    );
    run(async {
        let mut backend = Backend::connect(server.text).await;
        for subscription in [&fine, &gone, &large] {
            register(&mut backend, "u1", subscription).await;
        }
        let reply = backend.json(push("u1", json!({}))).await;
        assert_eq!(reply["webpush"]["devices"], 3, "{reply}");
        assert_eq!(reply["webpush"]["accepted"], 1, "{reply}");
        let refused = reply["webpush"]["refused"].as_array().unwrap();
        let of = |subscription: &Value| {
            refused
                .iter()
                .find(|r| r["webpush"] == subscription["endpoint"])
                .unwrap_or_else(|| panic!("{reply}"))
                .clone()
        };
        assert_eq!(
            of(&gone),
            json!({"webpush": gone["endpoint"], "status": 410,
                   "reason": "Gone: the subscription expired or was unsubscribed",
                   "removed": true})
        );
        assert_eq!(
            of(&large),
            json!({"webpush": large["endpoint"], "status": 413, "reason": "PayloadTooLarge"})
        );
        let devices = backend.json(json!({"cmd": "devices", "uid": "u1"})).await;
        let endpoints: Vec<&Value> = devices["webpush"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["endpoint"])
            .collect();
        assert_eq!(endpoints.len(), 2, "{devices}");
        assert!(endpoints.contains(&&fine["endpoint"]), "{devices}");
        assert!(endpoints.contains(&&large["endpoint"]), "{devices}");
        // Kept with its keys, as registered.
        let kept = devices["webpush"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["endpoint"] == large["endpoint"])
            .unwrap();
        assert_eq!(kept["keys"], large["keys"]);

        // The next push goes to the two left.
        let reply = backend.json(push("u1", json!({}))).await;
        assert_eq!(reply["webpush"]["devices"], 2, "{reply}");
        let stats = backend.stats().await;
        let webpush = &stats["webpush"];
        assert_eq!(webpush["devices_gone"], 1, "{stats}");
        assert_eq!(
            webpush["rejected"],
            json!({"Gone": 1, "PayloadTooLarge": 2}),
            "{stats}"
        );
        assert_eq!(webpush["accepted"], 2, "{stats}");
    });
}

#[test]
fn vapid_key_answers_the_key_the_service_verifies() {
    let service = FakePushService::start(Protocol::Http1, accept_all());
    let scratch = Scratch::new("webpush-vapid-key");
    let config = hub_config(&service, &scratch);
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let reply = backend.json(json!({"cmd": "vapid_key"})).await;
        assert_eq!(reply["ok"], true, "{reply}");
        let key = reply["key"].as_str().unwrap().to_string();
        assert_eq!(reply, json!({"ok": true, "key": key}));
        // The page subscribes with it: the service refuses any other.
        service.expect_vapid_key(&key);
        register(&mut backend, "u1", &service.subscribe("alice")).await;
        let reply = backend.json(push("u1", json!({"data": "signed"}))).await;
        assert_eq!(reply, accepted(1, 1));
        let seen = &service.delivered()[0];
        let authorization = seen.headers["authorization"].to_str().unwrap();
        assert!(
            authorization.ends_with(&format!("k={key}")),
            "{authorization}"
        );
    });
    assert!(service.refusals().is_empty(), "{:?}", service.refusals());
}

#[test]
fn without_a_vapid_key_webpush_is_refused() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let scratch = Scratch::new("webpush-no-key");
    let mut config = plain_config();
    config.apns_db = Some(scratch.path("devices.sqlite3"));
    let server = Server::start(config);
    run(async {
        let mut backend = Backend::connect(server.text).await;
        // The registry keeps subscriptions all the same.
        register(&mut backend, "u1", &service.subscribe("alice")).await;
        let reply = backend.json(push("u1", json!({}))).await;
        assert_eq!(reply["ok"], false, "{reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains("--vapid-key-file"), "{reply}");
        let reply = backend.json(json!({"cmd": "vapid_key"})).await;
        assert_eq!(reply["ok"], false, "{reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("vapid-keygen"),
            "{reply}"
        );
        // A push without `webpush` still goes to connections.
        assert_eq!(backend.push("u1", "x").await, 0);
        let stats = backend.stats().await;
        assert_eq!(
            stats["text_errors"],
            json!({"no_webpush": 1, "no_vapid_key": 1}),
            "{stats}"
        );
        assert!(stats.get("webpush").is_none_or(Value::is_null), "{stats}");
    });
    assert_eq!(service.requests(), 0);
}

#[test]
fn bad_webpush_objects_are_refused_naming_the_field() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let scratch = Scratch::new("webpush-bad");
    let server = Server::start(hub_config(&service, &scratch));
    let cases = [
        (json!({"ttl": -1}), "`webpush.ttl`"),
        (json!({"ttl": 2_419_201}), "`webpush.ttl`"),
        (json!({"ttl": "60"}), "`webpush.ttl`"),
        (json!({"urgency": "now"}), "`webpush.urgency`"),
        (json!({"topic": "a".repeat(33)}), "`webpush.topic`"),
        (json!({"topic": "a b"}), "`webpush.topic`"),
        (json!("hi"), "`webpush`"),
    ];
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &service.subscribe("alice")).await;
        for (webpush, field) in &cases {
            let reply = backend.json(push("u1", webpush.clone())).await;
            assert_eq!(reply["ok"], false, "{webpush}: {reply}");
            let error = reply["error"].as_str().unwrap();
            assert!(error.starts_with(field), "{webpush}: {reply}");
        }
        let mut when = push("u1", json!({}));
        when["webpush_when"] = json!("sometimes");
        let reply = backend.json(when).await;
        assert!(
            reply["error"].as_str().unwrap().contains("`webpush_when`"),
            "{reply}"
        );
        // The longest topic and ttl pass.
        let fine = json!({"ttl": 2_419_200, "topic": "a".repeat(32)});
        assert_eq!(backend.json(push("u1", fine)).await, accepted(1, 1));
        let stats = backend.stats().await;
        assert_eq!(
            stats["text_errors"]["wrong_type"],
            cases.len() + 1,
            "{stats}"
        );
    });
    assert_eq!(service.requests(), 1);
}

#[test]
fn stats_and_metrics_count_web_push() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let scratch = Scratch::new("webpush-metrics");
    let server = Server::start(hub_config(&service, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &service.subscribe("a")).await;
        register(&mut backend, "u1", &service.subscribe("b")).await;
        for _ in 0..3 {
            assert_eq!(backend.json(push("u1", json!({}))).await, accepted(2, 2));
        }
        let stats = backend.stats().await;
        let webpush = &stats["webpush"];
        assert_eq!(webpush["sent"], 6, "{stats}");
        assert_eq!(webpush["accepted"], 6, "{stats}");
        assert_eq!(webpush["retried"], 0, "{stats}");
        assert_eq!(webpush["failed"], 0, "{stats}");
        assert_eq!(webpush["connections"], 1, "{stats}");
        assert_eq!(webpush["queued"], 0, "{stats}");
    });
    let response = http(server.metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(
        sample(body, "pushhub_webpush_sent_total"),
        Some(6.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "pushhub_webpush_accepted_total"),
        Some(6.0),
        "{body}"
    );
    assert_eq!(service.delivered().len(), 6);
}

#[test]
fn a_uid_on_two_push_services_gets_it_on_both() {
    let first = FakePushService::start(Protocol::Http2, accept_all());
    // One CA file for the hub: the second service shows the first's certificate.
    let second =
        FakePushService::start_with_cert(Protocol::Http1, accept_all(), first.cert.clone());
    let scratch = Scratch::new("webpush-two");
    let server = Server::start(hub_config(&first, &scratch));
    run(async {
        let mut backend = Backend::connect(server.text).await;
        register(&mut backend, "u1", &first.subscribe("phone")).await;
        register(&mut backend, "u1", &second.subscribe("laptop")).await;
        let reply = backend.json(push("u1", json!({"data": "both"}))).await;
        assert_eq!(reply, accepted(2, 2));
    });
    for service in [&first, &second] {
        assert_eq!(texts(service), [Some("both".to_string())]);
    }
    assert_eq!(first.delivered()[0].id, "phone");
    assert_eq!(second.delivered()[0].id, "laptop");
}

/// `pushhub --webpush-test FILE` sends one message to the subscription in
/// FILE with the VAPID flags, and says what the push service answered.
#[test]
fn the_test_command_sends_one_message() {
    let service = FakePushService::start(Protocol::Http2, accept_all());
    let scratch = Scratch::new("webpush-test-command");
    let config = hub_config(&service, &scratch);
    let vapid = config.vapid.unwrap();
    service.expect_vapid_key(&vapid.public_key);
    let file = scratch.path("subscription.json");
    std::fs::write(&file, service.subscribe("cli").to_string()).unwrap();
    let key_file = vapid.key_file.display().to_string();
    let ca_file = vapid.ca_file.unwrap().display().to_string();
    let args = |file: &std::path::Path| {
        vec![
            "--webpush-test".to_string(),
            file.display().to_string(),
            "--vapid-key-file".into(),
            key_file.clone(),
            "--vapid-subject".into(),
            "mailto:ops@example.com".into(),
            "--webpush-ca-file".into(),
            ca_file.clone(),
        ]
    };
    let accepted = args(&file);
    let accepted: Vec<&str> = accepted.iter().map(String::as_str).collect();
    let (status, stdout, stderr) = run_binary(&accepted, &[]);
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("accepted"), "{stdout}");
    let delivered = service.delivered();
    assert_eq!(delivered.len(), 1, "{:?}", service.refusals());
    let message: Value = serde_json::from_str(delivered[0].text.as_deref().unwrap()).unwrap();
    assert_eq!(
        message,
        json!({"title": "pushhub", "body": "pushhub test message"})
    );

    let garbage = scratch.path("garbage.json");
    std::fs::write(&garbage, "this is not a subscription").unwrap();
    let refused = args(&garbage);
    let refused: Vec<&str> = refused.iter().map(String::as_str).collect();
    let (status, stdout, stderr) = run_binary(&refused, &[]);
    assert_eq!(status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains(&garbage.display().to_string()), "{stderr}");
    assert_eq!(service.requests(), 1);
}
